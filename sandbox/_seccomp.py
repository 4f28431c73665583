"""seccomp-bpf deny list for isolation="process" children (x86_64), built with ctypes: no libseccomp needed.

In a jail nsjail installs the equivalent kafel policy (`jail.seccomp_policy()`) for the whole jail; this
module is the process-mode fallback and is loaded by `_worker.py` from beside itself. Standard library only.
"""

from __future__ import annotations

import ctypes
import errno
import os

# x86_64 numbers of the calls jail.DENIED_SYSCALLS names (kept in step with it; a test checks the names)
X86_64_DENIED = {
    "ptrace": 101,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "pidfd_getfd": 438,
    "mount": 165,
    "umount": 166,
    "pivot_root": 155,
    "chroot": 161,
    "move_mount": 429,
    "open_tree": 428,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
    "unshare": 272,
    "setns": 308,
    "bpf": 321,
    "perf_event_open": 298,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "kexec_load": 246,
    "kexec_file_load": 320,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "open_by_handle_at": 304,
    "name_to_handle_at": 303,
    "fanotify_init": 300,
    "lookup_dcookie": 212,
    "acct": 163,
    "quotactl": 179,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "syslog": 103,
    "iopl": 172,
    "ioperm": 173,
    "personality": 135,
    "vhangup": 153,
    "settimeofday": 164,
    "clock_settime": 227,
    "adjtimex": 159,
    "clock_adjtime": 305,
}
SYS_CLONE, SYS_CLONE3, SYS_SOCKET, X32_BIT = 56, 435, 41, 0x40000000
AUDIT_ARCH_X86_64 = 0xC000003E
CLONE_NAMESPACE_FLAGS = 0x7E020000
LD_ABS, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
ALLOW, KILL = 0x7FFF0000, 0x80000000


def _errno(code: int) -> int:
    return 0x00050000 | code


def seccomp_program() -> list[tuple[int, int, int, int]]:
    """The deny-list filter as classic BPF (code, jt, jf, k) over struct seccomp_data (nr @0, arch @4, args @16)."""
    prog = [
        (LD_ABS, 0, 0, 4),
        (JEQ, 1, 0, AUDIT_ARCH_X86_64),
        (RET, 0, 0, KILL),
        (LD_ABS, 0, 0, 0),
        (JGE, 0, 1, X32_BIT),
        (RET, 0, 0, _errno(errno.EPERM)),
    ]
    for nr in X86_64_DENIED.values():
        prog += [(JEQ, 0, 1, nr), (RET, 0, 0, _errno(errno.EPERM))]
    prog += [(JEQ, 0, 1, SYS_CLONE3), (RET, 0, 0, _errno(errno.ENOSYS))]
    prog += [
        (JEQ, 0, 4, SYS_CLONE),
        (LD_ABS, 0, 0, 16),
        (JSET, 0, 1, CLONE_NAMESPACE_FLAGS),
        (RET, 0, 0, _errno(errno.EPERM)),
        (RET, 0, 0, ALLOW),
    ]
    prog += [
        (JEQ, 0, 4, SYS_SOCKET),
        (LD_ABS, 0, 0, 16),
        (JEQ, 1, 0, 1),
        (RET, 0, 0, _errno(errno.EAFNOSUPPORT)),
        (RET, 0, 0, ALLOW),
    ]
    return [*prog, (RET, 0, 0, ALLOW)]


def install() -> None:
    """no_new_privs + the filter above, on x86_64 (elsewhere the process-mode child runs without one)."""
    if os.uname().machine != "x86_64":
        return

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

    insns = seccomp_program()
    table = (Filter * len(insns))(*(Filter(*i) for i in insns))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    prog = Program(len(insns), table)
    if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
