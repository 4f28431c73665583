"""Warm worker: imports the preload modules once, then forks one child per run and supervises it.

Runs inside the nsjail jail as its pid 1 (isolation="jail") or as a plain subprocess (isolation="process").
It is started by `sandbox.pool` as `python -I _worker.py CONFIG_JSON` and speaks a framed protocol on
fds 0 (requests) and 1 (responses); fd 2 is its log. Standard library only: this file is bind-mounted
alone into the jail.

Per run: the child gets its own session/process group, a fresh empty working directory, the run's
rlimits, stdin/stdout/stderr pipes and fd 3 (the side channel); every other descriptor, including the
protocol, is closed before any program code runs. When the main process exits (or a limit trips) every
process of the run is SIGKILLed and reaped (pid 1 of the jail uses kill(-1); a process-mode worker is a
child subreaper and kills its descendants), then the run's files are deleted.

The worker answers "accepted" as soon as it reads a run, so the pool knows which runs a dead worker took
with it. A page of shared memory per child tells the worker whether the program started and which signals
the run sent to its main process: a child that died before its program started is replaced and the run
handed to a fresh one; a signal death is the program's only when it raised it (see `sandbox/__init__.py`).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import fcntl
import io
import json
import math
import mmap
import os
import resource
import select
import shutil
import signal
import stat
import struct
import sys
import threading
import time
import traceback
import types

FRAME = struct.Struct(">I")
PROTO_MIN_FD = 64  # the protocol lives far above the fds a child is handed (0-3)
SETUP_FAILED = 125  # exit code a child uses when the sandbox itself failed to prepare it
SETUP_MARK = "evom-sandbox setup failed: "
CTL_FD = 4  # a waiting child reads its run (limits, code) here, then closes it
CHUNK = 65536
DRAIN_CHUNKS = 64  # 4 MiB: more than any pipe buffer holds (at most 1 MiB unprivileged)
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
NOBODY = 65534
CHILD_ATTEMPTS = 3  # prepared children that may die before their program starts, per run, before the run is lost
# Deaths by these signals are the program's own doing whatever sent them: faults of its code, abort(), its own
# timers, its CPU and file-size limits. Any other signal kills the program on its own account only when the run
# sent it to its main process (os.kill, os.killpg, signal.pthread_kill, signal.raise_signal); otherwise it came
# from outside the run (an operator, the host's OOM killer) and the run is lost to the infrastructure.
_S = signal.Signals
PROGRAM_SIGNALS = frozenset({_S.SIGSEGV, _S.SIGBUS, _S.SIGILL, _S.SIGFPE, _S.SIGSYS, _S.SIGTRAP, _S.SIGABRT})
PROGRAM_SIGNALS |= {_S.SIGXCPU, _S.SIGXFSZ, _S.SIGPIPE, _S.SIGALRM, _S.SIGVTALRM, _S.SIGPROF}
# A page shared by the worker and one child: byte STARTED is set just before the program's first statement,
# byte n (1-64) once the run sent signal n to its main process; at CLOCKS, the monotonic times (doubles) at which
# the program started and at which it returned to the child (atexit handlers run, streams flushed).
STARTED = 0
CLOCKS = 72
CLOCK = struct.Struct("=dd")
STATE_BYTES = CLOCKS + CLOCK.size


# ----- framing: u32 header length, JSON header {"sizes": [...], ...}, then the blobs -----------------


def encode_msg(header: dict, *blobs: bytes) -> bytes:
    head = json.dumps({**header, "sizes": [len(b) for b in blobs]}).encode()
    return b"".join((FRAME.pack(len(head)), head, *blobs))


def write_msg(fd: int, header: dict, *blobs: bytes) -> None:
    view = memoryview(encode_msg(header, *blobs))
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, n: int) -> bytes | None:
    parts, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read_msg(fd: int) -> tuple[dict, list[bytes]] | None:
    """One message, or None at end of file."""
    raw = _read_exact(fd, FRAME.size)
    if raw is None:
        return None
    head = _read_exact(fd, FRAME.unpack(raw)[0])
    if head is None:
        return None
    header = json.loads(head)
    blobs = []
    for size in header.pop("sizes"):
        blob = _read_exact(fd, size) if size else b""
        if blob is None:
            return None
        blobs.append(blob)
    return header, blobs


# ----- small helpers -----------------------------------------------------------------------------------


LIBC = ctypes.CDLL(None, use_errno=True)
SECCOMP = None  # isolation="process": the sibling _seccomp.py, loaded at start (a jail has nsjail's filter)


def _prctl(option: int, value: int) -> None:
    LIBC.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))


def _high_fd(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, PROTO_MIN_FD)


def _vm_size_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


class Capture:
    """Bytes kept from one pipe, at most `cap`; `over` once more arrived."""

    def __init__(self, cap: int) -> None:
        self.cap, self.parts, self.size, self.over = cap, [], 0, False

    def add(self, data: bytes) -> None:
        room = self.cap - self.size
        if len(data) > room:
            self.over = True
            data = data[: max(room, 0)]
        if data:
            self.parts.append(data)
            self.size += len(data)

    def value(self) -> bytes:
        return b"".join(self.parts)


# ----- the child: becomes the program ----------------------------------------------------------------


def _child_limits(limits: dict, cfg: dict) -> None:
    cpu = max(1, math.ceil(limits["cpu_s"]))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    # the warm image is already mapped; the run may add memory_mb of address space on top of it
    address = _vm_size_bytes() + limits["memory_mb"] * (1 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (address, address))
    fsize = limits["tmp_mb"] * (1 << 20)
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if cfg.get("nproc"):
        resource.setrlimit(resource.RLIMIT_NPROC, (cfg["nproc"], cfg["nproc"]))


def _child_identity(cfg: dict) -> None:
    _prctl(PR_SET_DUMPABLE, 1)  # the worker is not dumpable; its child must be to own /proc/self
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")  # the OOM killer takes the run's processes, never the warm worker
    except OSError:
        pass
    if cfg.get("drop_to_nobody"):
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)


def _child_fds(fds: tuple[int, int, int, int], ctl: int) -> None:
    """0-3 become stdin, stdout, stderr and the channel; 4 the hand-over pipe; every other fd is closed."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (*fds, ctl)]
    for target, fd in enumerate(high):
        os.dup2(fd, target)
    os.closerange(CTL_FD + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[1])


def _child_python(run_dir: str, env: dict) -> str:
    path = os.path.join(run_dir, "main.py")
    os.chdir(run_dir)
    os.environ.clear()
    os.environ.update(env, HOME=run_dir, PWD=run_dir, TMPDIR=run_dir)
    if "tempfile" in sys.modules:
        sys.modules["tempfile"].tempdir = None  # forget a temp dir a preloaded module may have cached
    sys.argv = [path]
    sys.path.insert(0, run_dir)  # as `python main.py` does (the worker runs with -I, so no entry of its own)
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), "utf-8")
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), "utf-8")
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), "utf-8", errors="backslashreplace", line_buffering=True, write_through=True
    )
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    return path


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _watch_own_signals(state: mmap.mmap, main: int) -> None:
    """Record in `state` every signal the run sends to its main process (its process group, or every process)."""

    def mark(sig: object) -> None:
        if isinstance(sig, int) and 0 < sig < CLOCKS:
            state[sig] = 1

    def hook(event: str, args: tuple) -> None:
        if event == "os.kill":
            pid, sig = args
            if pid in (main, -main, -1) or (pid == 0 and os.getpgrp() == main):
                mark(sig)
        elif event == "os.killpg":
            group, sig = args
            if group == main or (group == 0 and os.getpgrp() == main):
                mark(sig)
        elif event == "signal.pthread_kill" and os.getpid() == main:
            mark(args[1])

    sys.addaudithook(hook)  # audit hooks cannot be removed, and forked children of the run inherit this one
    raise_signal = signal.raise_signal  # not an audited call

    def raise_own(signalnum: int) -> None:
        if os.getpid() == main:
            mark(int(signalnum))
        raise_signal(signalnum)

    signal.raise_signal = raise_own


def child_main(cfg: dict, fds: tuple[int, int, int, int], ctl: int, run_dir: str, state: mmap.mmap) -> None:
    """Never returns. Prepared ahead of its run (off the critical path), the child waits for the run's
    limits and code on the hand-over pipe, then runs the program as __main__ and exits like `python main.py`."""
    try:
        os.setsid()
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _child_fds(fds, ctl)
        _child_identity(cfg)
        path = _child_python(run_dir, cfg["env"])
    except BaseException as exc:
        _setup_failed(exc)
    msg = read_msg(CTL_FD)
    if msg is None:  # retired unused
        os._exit(0)
    (header, (code,)) = msg
    try:
        os.close(CTL_FD)
        with open(path, "wb") as f:
            f.write(code)
        _child_limits(header["limits"], cfg)
        if SECCOMP is not None:
            SECCOMP.install()
        _watch_own_signals(state, os.getpid())
    except BaseException as exc:
        _setup_failed(exc)
    state[STARTED] = 1
    began = time.monotonic()
    status = _run_program(code, path, sys.modules["__main__"].__dict__)
    CLOCK.pack_into(state, CLOCKS, began, time.monotonic())
    os._exit(status)


def _setup_failed(exc: BaseException) -> None:
    os.write(2, f"{SETUP_MARK}{exc!r}\n".encode())
    os._exit(SETUP_FAILED)


def _run_program(code: bytes, path: str, namespace: dict) -> int:
    try:
        exec(compile(code, path, "exec"), namespace)
        status = 0
    except SystemExit as exc:
        status = _exit_code(exc)
    except BaseException:
        traceback.print_exc()
        status = 1
    try:
        threading._shutdown()  # join non-daemon threads, as interpreter shutdown does
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    return status


# ----- the worker: supervises one run ------------------------------------------------------------------


class Run:
    """Supervision of one child: pipes, limits on output, deadline, cancellation."""

    def __init__(self, worker: Worker, req: dict, code: bytes, stdin: bytes) -> None:
        self.worker, self.req, self.limits = worker, req, req["limits"]
        self.stdin = memoryview(stdin)
        self.out = Capture(self.limits["output_bytes"])
        self.err = Capture(self.limits["output_bytes"])
        self.chan = Capture(self.limits["channel_bytes"])
        self.code, self.stdin_bytes = code, stdin
        self.status, self.reason = "", ""
        self.in_w = -1
        self.phases: dict[str, float] = {}  # seconds per step of the run, for profiling (see `_phases`)

    def execute(self) -> tuple[dict, bytes, bytes, bytes]:
        """Run the program on the prepared child. A child that died before the program started (killed while it
        waited, say) is not the program's doing: the run goes to a fresh child, up to CHILD_ATTEMPTS in all."""
        leftovers = False
        for attempt in range(1, CHILD_ATTEMPTS + 1):
            t0 = time.monotonic()
            child = self.worker.take_child()
            self.phases["take"] = time.monotonic() - t0
            header = self._attempt(child)
            leftovers = header["leftovers"] = leftovers or header["leftovers"]
            header["children_lost"] = attempt - 1
            if header["started"] or self.status or header["signal"] is None:
                break
            if attempt == CHILD_ATTEMPTS:
                header["status"] = "sandbox_error"
                header["reason"] = (
                    f"the run's process died before the program started ({attempt} times): {header['reason']}"
                )
                break
            self.stdin = memoryview(self.stdin_bytes)
            self.out = Capture(self.limits["output_bytes"])
            self.err = Capture(self.limits["output_bytes"])
            self.chan = Capture(self.limits["channel_bytes"])
        return header, self.out.value(), self.err.value(), self.chan.value()

    def _attempt(self, child: WaitingChild) -> dict:
        readers = {child.out_r: self.out, child.err_r: self.err, child.chan_r: self.chan}
        self.in_w = child.in_w
        start = time.monotonic()
        try:
            with contextlib.suppress(OSError):  # a child that died waiting is reported by the supervision below
                write_msg(child.ctl_w, {"limits": self.limits}, self.code)
            _close(child.ctl_w)
            self._supervise(child.pid, readers, child.in_w, start + self.limits["wall_s"])
            exited = time.monotonic()
            wait_status, usage = self._reap_main(child.pid)
            wall = time.monotonic() - start
            self.worker.kill_all()
            reaped = time.monotonic()
            self._drain(readers)
            started = child.state[STARTED] == 1
            own_signals = {sig for sig in range(1, CLOCKS) if child.state[sig]}
            began, ended = CLOCK.unpack_from(child.state, CLOCKS)
        finally:
            self._close_stdin()
            for fd in readers:
                _close(fd)
            child.state.close()
        leftovers = self.worker.clean_tmp()
        self._phases(start, began, ended, exited, reaped)
        return self._header(wait_status, usage, wall, leftovers, started, own_signals)

    def _phases(self, start: float, began: float, ended: float, exited: float, reaped: float) -> None:
        """Where the run's time went, from the hand-over of the run to the prepared child to the cleanup: to_program
        (the child reads the run, writes main.py, sets limits), program (its first statement to its return, atexit
        and flush included), exit (from there until the worker sees the process gone: the kernel's teardown of
        its memory), reap (wait4 and the kill of every other process), cleanup (pipes drained, files deleted).
        Without the child's clocks (the program never returned: killed, os._exit) only `run` covers the first three."""
        if start <= began <= ended <= exited:
            self.phases.update(to_program=began - start, program=ended - began, exit=exited - ended)
        self.phases.update(run=exited - start, reap=reaped - exited, cleanup=time.monotonic() - reaped)

    def _supervise(self, pid: int, readers: dict[int, Capture], in_w: int, deadline: float) -> None:
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        for fd in (*readers, pidfd, self.worker.proto_in):
            poller.register(fd, select.POLLIN)
        if self.stdin:
            os.set_blocking(in_w, False)
            poller.register(in_w, select.POLLOUT)
        else:
            self._close_stdin()
        try:
            while not self.status:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._stop(pid, "timeout", f"wall time limit of {self.limits['wall_s']} s")
                    break
                for fd, _events in poller.poll(left * 1000):
                    if fd == pidfd:
                        return
                    if fd == self.worker.proto_in:
                        self._control(pid)
                    elif fd == in_w:
                        self._feed(poller, in_w)
                    else:
                        self._pump(fd, readers, poller, pid)
        finally:
            os.close(pidfd)

    def _control(self, pid: int) -> None:
        msg = read_msg(self.worker.proto_in)
        if msg is None:  # the pool is gone: stop everything and leave
            self.worker.kill_all()
            os._exit(0)
        if msg[0].get("op") == "cancel":
            self._stop(pid, "killed", "cancelled")

    def _feed(self, poller: select.poll, in_w: int) -> None:
        try:
            sent = os.write(in_w, self.stdin[:CHUNK])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the program closed stdin
            sent = len(self.stdin)
        self.stdin = self.stdin[sent:]
        if not self.stdin:
            poller.unregister(in_w)
            self._close_stdin()

    def _pump(self, fd: int, readers: dict[int, Capture], poller: select.poll, pid: int) -> None:
        data = os.read(fd, CHUNK)
        if not data:
            poller.unregister(fd)
            return
        capture = readers[fd]
        capture.add(data)
        if capture.over and capture is not self.chan:
            self._stop(pid, "output_limit", f"output over {self.limits['output_bytes']} bytes")

    def _stop(self, pid: int, status: str, reason: str) -> None:
        self.status, self.reason = status, reason
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _close_stdin(self) -> None:
        if self.in_w >= 0:
            _close(self.in_w)
            self.in_w = -1

    def _reap_main(self, pid: int) -> tuple[int, resource.struct_rusage]:
        while True:
            try:
                _pid, wait_status, usage = os.wait4(pid, 0)
                return wait_status, usage
            except InterruptedError:
                continue

    def _drain(self, readers: dict[int, Capture]) -> None:
        """Every writer is dead now: read what is left in the pipes (bounded by the pipe buffers)."""
        for fd, capture in readers.items():
            os.set_blocking(fd, False)
            for _ in range(DRAIN_CHUNKS):  # bounded even if a writer escaped the kill (isolation="process")
                try:
                    data = os.read(fd, CHUNK)
                except OSError:
                    break
                if not data:
                    break
                capture.add(data)
        if not self.status and (self.out.over or self.err.over):
            self.status, self.reason = "output_limit", f"output over {self.limits['output_bytes']} bytes"

    def _header(
        self,
        wait_status: int,
        usage: resource.struct_rusage,
        wall: float,
        leftovers: bool,
        started: bool,
        own_signals: set[int],
    ) -> dict:
        exit_code = os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else None
        sig = os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None
        cpu = usage.ru_utime + usage.ru_stime
        status, reason = self.status, self.reason
        if not status:
            status, reason = _classify(exit_code, sig, self.err.value())
        if status == "killed" and not self.status and sig not in PROGRAM_SIGNALS and sig not in own_signals:
            if sig == signal.SIGKILL and cpu >= max(1, math.ceil(self.limits["cpu_s"])):
                status, reason = "timeout", "CPU time limit (SIGKILL at the hard limit)"
            else:
                name = signal.Signals(sig).name
                where = "while the program ran" if started else "before the program started"
                status = "sandbox_error"
                reason = f"killed by {name} from outside the run {where} (not a limit of the run, not its own signal)"
        return {
            "status": status,
            "reason": reason,
            "exit_code": exit_code,
            "signal": sig,
            "wall_s": wall,
            "cpu_s": cpu,
            "max_rss_mb": usage.ru_maxrss / 1024,
            "truncated": self.out.over or self.err.over,
            "channel_truncated": self.chan.over,
            "leftovers": leftovers,
            "started": started,
            "phases": self.phases,
        }


def _classify(exit_code: int | None, sig: int | None, stderr: bytes) -> tuple[str, str]:
    if sig is not None:
        if sig == signal.SIGXCPU:
            return "timeout", "CPU time limit"
        return "killed", f"killed by signal {signal.Signals(sig).name}"
    tail = stderr.rstrip().rsplit(b"\n", 1)[-1]
    if exit_code == SETUP_FAILED and SETUP_MARK.encode() in stderr:
        return "sandbox_error", stderr.decode(errors="replace").strip()[-500:]
    if exit_code == 0:
        return "ok", ""
    if tail.startswith(b"MemoryError"):
        return "memory", "MemoryError (address-space limit)"
    return "error", f"exit code {exit_code}"


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


class WaitingChild:
    """A forked, prepared child and the parent's ends of its pipes."""

    def __init__(self, pid: int, fds: tuple[int, int, int, int, int], state: mmap.mmap) -> None:
        self.pid, self.state = pid, state
        self.in_w, self.out_r, self.err_r, self.chan_r, self.ctl_w = fds


class Worker:
    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.jail = cfg["mode"] == "jail"
        self.tmp_root = cfg["tmp_root"]
        self.runs = 0
        self.waiting: WaitingChild | None = None
        self.proto_in = _high_fd(0)
        self.proto_out = _high_fd(1)
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)  # library banners printed while preloading must not reach the protocol
        os.close(null)

    def prepare_child(self) -> None:
        """Fork the next run's child now, so fork and setup are paid between runs, not during one."""
        run_dir = self.fresh_run_dir()
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        chan_r, chan_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        state = mmap.mmap(-1, STATE_BYTES, flags=mmap.MAP_SHARED)
        pid = os.fork()
        if pid == 0:
            child_main(self.cfg, (in_r, out_w, err_w, chan_w), ctl_r, run_dir, state)
        for fd in (in_r, out_w, err_w, chan_w, ctl_r):
            os.close(fd)
        self.waiting = WaitingChild(pid, (in_w, out_r, err_r, chan_r, ctl_w), state)

    def take_child(self) -> WaitingChild:
        if self.waiting is None:
            self.prepare_child()
        child, self.waiting = self.waiting, None
        assert child is not None
        return child

    def fresh_run_dir(self) -> str:
        self.runs += 1
        path = os.path.join(self.tmp_root, "run" if self.jail else f"run-{self.runs}")
        os.mkdir(path, 0o700)
        if not self.jail and os.geteuid() == 0:
            os.chown(path, NOBODY, NOBODY)
        return path

    def kill_all(self) -> None:
        """SIGKILL and reap every process of the run, including re-parented, setsid daemons."""
        while True:
            if self.jail:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(-1, signal.SIGKILL)  # pid 1 of the jail's pid namespace: all but itself
            else:
                for pid in _children():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                return
            except InterruptedError:
                continue

    def clean_tmp(self) -> bool:
        """Delete the run's files; True when something could not be deleted (the worker then retires)."""
        for name in os.listdir(self.tmp_root):
            path = os.path.join(self.tmp_root, name)
            if self.jail or name.startswith("run-"):
                _remove(path)
        left = [n for n in os.listdir(self.tmp_root) if self.jail or n.startswith("run-")]
        return bool(left)

    def serve(self) -> None:
        refill = 0.0
        while True:
            t0 = time.monotonic()
            if self.waiting is None:
                self.prepare_child()
            ready = time.monotonic()
            refill += ready - t0
            msg = read_msg(self.proto_in)
            if msg is None:
                self.kill_all()
                return
            header, blobs = msg
            if header.get("op") != "run":
                continue
            received = time.monotonic()
            code, stdin = blobs
            write_msg(self.proto_out, {"op": "accepted"})  # from here on a death of this worker loses the run
            run = Run(self, header, code, stdin)
            # refill: forking and preparing this run's child after the previous response; idle: waiting for the run
            run.phases.update(refill=refill, idle=received - ready)
            head, out, err, chan = run.execute()
            head["phases"]["worker"] = time.monotonic() - received
            write_msg(self.proto_out, head, out, err, chan)
            refill = 0.0


def _children() -> list[int]:
    pids: list[int] = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids.extend(int(p) for p in f.read().split())
        except OSError:
            continue
    return pids


def _remove(path: str) -> None:
    def fix(func, p, _exc) -> None:  # the program may have made its files read-only
        try:
            os.chmod(os.path.dirname(p), stat.S_IRWXU)
            os.chmod(p, stat.S_IRWXU)
            func(p)
        except OSError:
            pass

    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, onerror=fix)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _load_seccomp() -> None:
    global SECCOMP
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_evom_seccomp", os.path.join(os.path.dirname(__file__), "_seccomp.py")
    )
    SECCOMP = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(SECCOMP)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    if cfg["mode"] == "process":
        _load_seccomp()
    worker = Worker(cfg)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _prctl(PR_SET_DUMPABLE, 0)  # keeps /proc/1/fd and /proc/1/mem out of the children's reach
    if not worker.jail:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
    errors = {}
    import importlib

    for name in cfg["preload"]:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
    import gc

    gc.collect()
    gc.freeze()  # keep the warm heap out of the children's collections: fewer copy-on-write faults
    write_msg(worker.proto_out, {"op": "ready", "pid": os.getpid(), "errors": errors, "python": sys.version})
    try:
        worker.serve()
    except OSError as exc:
        if exc.errno not in (errno.EPIPE, errno.EBADF):
            raise


if __name__ == "__main__":
    main()
