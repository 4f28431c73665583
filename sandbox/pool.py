"""SandboxPool: warm, jailed workers behind an asyncio API with fair queueing and cancellation.

    async with SandboxPool(workers=2, limits=Limits(wall_s=10), preload=("numpy",)) as pool:
        result = await pool.run("print(1 + 1)")

Each worker is one nsjail jail (its own pid/mount/net/ipc/uts namespaces, cgroup v1 groups when the
machine has them) running `_worker.py`, which imports `preload` once and forks a child per run. Runs
wait in FIFO order for a free worker; a cancelled `run()` kills its child; a worker that dies, leaves
files behind or reaches `recycle_after` runs is replaced in the background. The worker acknowledges each run
when it reads it: a run whose worker died before that goes to another worker, one whose worker died after is
"sandbox_error" (see "Whose death is it" in `sandbox/__init__.py`). `close()` kills every
process of every jail (by pid, through the cgroups) and removes the groups.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from sandbox import _worker
from sandbox.cgroups import CgroupParent, WorkerCgroup
from sandbox.jail import JailSpec, probe
from sandbox.types import Limits, Result, SandboxUnavailable

log = logging.getLogger("sandbox")
Isolation = Literal["nsjail", "process"]  # process: no jail, development only (see sandbox/__init__.py)
ISOLATIONS: tuple[Isolation, ...] = get_args(Isolation)
WORKER_FILE = str(Path(_worker.__file__).resolve())
_LAUNCH = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 97; shift; n=$((n - 1)); done; exec "$@"'
_MiB = 1 << 20
DELIVERY_ATTEMPTS = 3  # workers a run may be handed to that die before they acknowledge it
REFILL_PATIENCE = 5  # failed starts in a row of a slot, with no worker left, before waiting runs are failed


def _nobody_can_run_python() -> bool:
    """True when we are root and every directory above the interpreter and its packages is world-traversable."""
    if os.geteuid() != 0:
        return False
    for top in {sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))}:
        path = Path(top)
        for folder in (path, *path.parents):
            if not folder.stat().st_mode & 0o001:
                return False
    return True


class WorkerDied(RuntimeError):
    pass


async def _read_msg(reader: asyncio.StreamReader) -> tuple[dict[str, Any], list[bytes]]:
    (size,) = _worker.FRAME.unpack(await reader.readexactly(_worker.FRAME.size))
    header = json.loads(await reader.readexactly(size))
    blobs = [await reader.readexactly(n) if n else b"" for n in header.pop("sizes")]
    return header, blobs


class Worker:
    """Host-side handle of one warm worker: its process, cgroups and protocol."""

    def __init__(self, slot: int, proc: asyncio.subprocess.Process, cgroup: WorkerCgroup | None) -> None:
        self.slot, self.proc, self.cgroup = slot, proc, cgroup
        self.runs = 0
        self.accepted = 0  # runs the worker has acknowledged receiving
        self.baseline_bytes = 0
        self._stopped = False
        self._limits_applied: tuple[int | None, int] | None = None
        self._pending: asyncio.Future[tuple[dict[str, Any], list[bytes]]] | None = None
        self._tasks = [asyncio.create_task(self._read_loop()), asyncio.create_task(self._log_loop())]

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None and not self._tasks[0].done()

    def expect(self) -> asyncio.Future[tuple[dict[str, Any], list[bytes]]]:
        """The future of the next message; fails at once when the worker is already gone."""
        self._pending = asyncio.get_running_loop().create_future()
        if self._tasks[0].done():
            self._pending.set_exception(WorkerDied(f"worker {self.slot} is gone"))
        return self._pending

    async def _read_loop(self) -> None:
        assert self.proc.stdout is not None
        try:
            while True:
                msg = await _read_msg(self.proc.stdout)
                if msg[0].get("op") == "accepted":
                    self.accepted += 1
                    continue
                if self._pending is not None and not self._pending.done():
                    self._pending.set_result(msg)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            if self._pending is not None and not self._pending.done():
                self._pending.set_exception(WorkerDied(f"worker {self.slot} died ({type(exc).__name__})"))

    async def _log_loop(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(4096):
            for line in chunk.decode(errors="replace").splitlines():
                log.info("worker %d: %s", self.slot, line[:500])

    def send(self, header: dict[str, Any], *blobs: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(_worker.encode_msg(header, *blobs))

    def apply_limits(self, limits: Limits) -> None:
        if self.cgroup is None:
            return
        memory = self.baseline_bytes + (limits.memory_mb + limits.tmp_mb) * _MiB if self.baseline_bytes else None
        wanted = (memory, limits.max_procs + 2)  # + nsjail and the worker itself
        if wanted != self._limits_applied:
            self.cgroup.set_limits(memory_bytes=memory, pids=wanted[1])
            self._limits_applied = wanted

    async def stop(self, *, graceful: bool) -> None:
        """End the worker and every process it started; remove its cgroups. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self.proc.returncode is None and self.proc.stdin is not None:
            if graceful:
                self.proc.stdin.close()  # the worker kills its run and exits at end of file
            else:
                # SIGKILL the jail's pid 1 (the kernel then kills the whole pid namespace) and let nsjail reap it
                for pid in _children_of(self.proc.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 2.0)
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.destroy)
        await self.proc.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _children_of(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                found += [int(p) for p in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return found


class SandboxPool:
    """A bounded pool of warm sandbox workers. See the module docstring and `sandbox/__init__.py`.

    Options are keyword-only. `preload` names the modules each worker imports once before any run (a solver
    adapter's `preload`, for instance); it is empty by default, since the sandbox knows nothing of solvers.
    """

    def __init__(
        self,
        *,
        workers: int = 2,
        limits: Limits | None = None,
        preload: Sequence[str] = (),
        isolation: Isolation = "nsjail",
        recycle_after: int = 1000,
        env: Mapping[str, str] | None = None,
        extra_ro_binds: Sequence[str] = (),
        start_timeout_s: float = 120.0,
        grace_s: float = 5.0,
    ) -> None:
        if isolation not in ISOLATIONS:  # a string from a command line or a config file may be anything
            raise ValueError(f"unknown isolation {isolation!r}; valid: {', '.join(ISOLATIONS)}")
        if workers < 1 or recycle_after < 1:
            raise ValueError(f"workers and recycle_after must be >= 1, got {workers} and {recycle_after}")
        self.workers, self.limits = workers, limits or Limits()
        self.preload, self.isolation, self.recycle_after = tuple(preload), isolation, recycle_after
        self.env, self.extra_ro_binds = dict(env or {}), tuple(extra_ro_binds)
        self.start_timeout_s, self.grace_s = start_timeout_s, grace_s
        self.stats = {"runs": 0, "workers_started": 0, "workers_replaced": 0, "runs_redelivered": 0, "children_lost": 0}
        self.enforcement: dict[str, str] = {}
        self._spec: JailSpec | None = None
        self._cgroups: CgroupParent | None = None
        self._tmp_root: str | None = None
        self._live: set[Worker] = set()
        self._idle: deque[Worker] = deque()
        self._waiters: deque[asyncio.Future[Worker | None]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._state = "new"
        self._broken = ""

    # ----- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> SandboxPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"SandboxPool.start(): the pool is {self._state}; make a new pool")
        self._state = "starting"
        try:
            await asyncio.to_thread(self._prepare)
            started = await asyncio.gather(*(self._spawn(slot) for slot in range(self.workers)), return_exceptions=True)
            errors = [w for w in started if isinstance(w, BaseException)]
            for w in started:
                if isinstance(w, Worker):
                    self._idle.append(w)
            if errors:
                raise errors[0]
        except BaseException:
            await self.close()
            raise
        self._state = "open"
        log.info(
            "sandbox pool: %d workers, isolation=%s, limits enforced by %s",
            self.workers,
            self.isolation,
            self.enforcement,
        )

    def _prepare(self) -> None:
        self._cgroups = CgroupParent.create() if os.geteuid() == 0 else CgroupParent({})
        cg = self._cgroups.controllers
        if self.isolation == "nsjail":
            self._spec = JailSpec.for_interpreter(
                tmp_mb=self.limits.tmp_mb, env=self.env, extra_ro_binds=self.extra_ro_binds
            )
            probe(self._spec)
        else:
            log.warning(
                "sandbox isolation='process' is NOT a sandbox: programs see the host filesystem and network and "
                "run as %s; use it for development only",
                "nobody" if _nobody_can_run_python() else f"uid {os.geteuid()} (the interpreter is not world-readable)",
            )
            self._tmp_root = tempfile.mkdtemp(prefix="evom-sandbox-")
            os.chmod(self._tmp_root, 0o711)
        self.enforcement = {
            "wall_s": "worker SIGKILL of all run processes (pool kills the jail after +grace_s)",
            "cpu_s": "RLIMIT_CPU",
            "memory_mb": "cgroup v1 memory + RLIMIT_AS" if "memory" in cg else "RLIMIT_AS only",
            "max_procs": "cgroup v1 pids" if "pids" in cg else "RLIMIT_NPROC (per uid, shared by all workers)",
            "output_bytes": "worker, while streaming",
            "tmp_mb": "tmpfs size + RLIMIT_FSIZE" if self.isolation == "nsjail" else "RLIMIT_FSIZE only",
            "channel_bytes": "worker, while streaming",
        }

    async def close(self) -> None:
        """Stop every worker and every process of every run; idempotent."""
        if self._state == "closed":
            return
        self._state = "closing"
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        graceful = self.isolation == "process"
        await asyncio.gather(*(w.stop(graceful=graceful) for w in list(self._live)), return_exceptions=True)
        self._live.clear()
        self._idle.clear()
        if self._cgroups is not None:
            await asyncio.to_thread(self._cgroups.remove)
        if self._tmp_root is not None:
            shutil.rmtree(self._tmp_root, ignore_errors=True)
        self._state = "closed"

    # ----- workers -----------------------------------------------------------------------------------

    def _worker_argv(self) -> list[str]:
        cg = self._cgroups.controllers if self._cgroups else ()
        config = {
            "mode": "jail" if self.isolation == "nsjail" else "process",
            "preload": list(self.preload),
            "tmp_root": "/tmp" if self.isolation == "nsjail" else self._tmp_root,
            "env": dict(self._spec.env) if self._spec else {"LANG": "C.UTF-8", **self.env},
            "nproc": None if "pids" in cg else self.workers * (self.limits.max_procs + 2) + 16,
            "drop_to_nobody": self.isolation == "process" and _nobody_can_run_python(),
        }
        if self._spec is not None:
            return self._spec.worker_argv(WORKER_FILE, json.dumps(config))
        return [sys.executable, "-I", WORKER_FILE, json.dumps(config)]

    async def _spawn(self, slot: int) -> Worker:
        assert self._cgroups is not None
        cgroup = self._cgroups.worker_group(slot) if self._cgroups.controllers else None
        argv = self._worker_argv()
        if cgroup is not None and cgroup.controllers:
            files = cgroup.procs_files()
            argv = ["/bin/sh", "-c", _LAUNCH, "sh", str(len(files)), *files, *argv]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            env={"LANG": "C.UTF-8", **self.env} if self.isolation == "process" else {},
            cwd=self._tmp_root or "/",
        )
        worker = Worker(slot, proc, cgroup)
        self._live.add(worker)
        try:
            header, _ = await asyncio.wait_for(worker.expect(), self.start_timeout_s)
        except (WorkerDied, TimeoutError) as exc:
            self._live.discard(worker)
            await worker.stop(graceful=False)
            raise SandboxUnavailable(f"sandbox worker {slot} did not start: {exc}; see the 'sandbox' log") from exc
        if header.get("errors"):
            self._live.discard(worker)
            await worker.stop(graceful=False)
            raise SandboxUnavailable(f"preload failed in the sandbox: {header['errors']}")
        if cgroup is not None:
            worker.baseline_bytes = cgroup.memory_usage()
        worker.apply_limits(self.limits)
        self.stats["workers_started"] += 1
        return worker

    async def _replace(self, old: Worker) -> None:
        """Stop `old` and put a fresh worker in its slot. A slot is never given up while the pool is open (a new
        worker killed while it starts is no reason to serve with fewer); but once every slot is empty and this one
        failed REFILL_PATIENCE times in a row, the runs waiting get sandbox_error instead of waiting on."""
        self._live.discard(old)
        await old.stop(graceful=False)
        self.stats["workers_replaced"] += 1
        failures = 0
        while self._state == "open":
            try:
                self._release(await self._spawn(old.slot))
                return
            except SandboxUnavailable as exc:
                failures += 1
                self._broken = str(exc)
                if failures <= REFILL_PATIENCE or failures % 60 == 0:  # a broken sandbox logs once a minute
                    log.error("replacing worker %d failed (attempt %d): %s", old.slot, failures, exc)
            if failures >= REFILL_PATIENCE and not self._live:
                while self._waiters:
                    fut = self._waiters.popleft()
                    if not fut.done():
                        fut.set_result(None)
            await asyncio.sleep(min(0.05 * 2**failures, 1.0))

    def _background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _release(self, worker: Worker) -> None:
        """Give a worker to the longest-waiting run (FIFO), else park it."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(worker)
                return
        self._idle.append(worker)

    async def _acquire(self) -> Worker | None:
        while True:
            if self._idle and not self._waiters:
                worker: Worker | None = self._idle.popleft()
            else:
                if not self._live and not self._tasks:
                    return None
                fut: asyncio.Future[Worker | None] = asyncio.get_running_loop().create_future()
                self._waiters.append(fut)
                try:
                    worker = await fut
                except asyncio.CancelledError:
                    if fut.done() and not fut.cancelled() and fut.result() is not None:
                        self._release(fut.result())
                    elif fut in self._waiters:
                        self._waiters.remove(fut)
                    raise
            if worker is None or worker.alive:
                return worker
            self._background(self._replace(worker))

    # ----- running -----------------------------------------------------------------------------------

    async def run(self, code: str, stdin: str = "", limits: Limits | None = None) -> Result:
        """Run `code` as __main__ in a fresh child of a warm worker. Never raises for what the program does."""
        if self._state != "open":
            raise RuntimeError(f"SandboxPool.run(): the pool is {self._state}; use `async with SandboxPool(...)`")
        limits = limits or self.limits
        self.stats["runs"] += 1
        for _ in range(DELIVERY_ATTEMPTS):
            worker = await self._acquire()
            if worker is None:
                return Result(status="sandbox_error", reason=f"no sandbox worker available: {self._broken or 'closed'}")
            result, delivered = await self._run_on(worker, code, stdin, limits)
            if delivered or self._state != "open":
                return result
            self.stats["runs_redelivered"] += 1
            log.warning("worker %d died before it received a run; the run goes to another worker", worker.slot)
        return result

    async def _run_on(self, worker: Worker, code: str, stdin: str, limits: Limits) -> tuple[Result, bool]:
        """(result, delivered): delivered is False when the worker died before it acknowledged the run."""
        worker.runs += 1
        worker.apply_limits(limits)
        oom_before = worker.cgroup.oom_kills() if worker.cgroup else 0
        accepted_before = worker.accepted
        response = worker.expect()
        sent = time.monotonic()
        worker.send({"op": "run", "limits": limits.to_wire()}, code.encode(), stdin.encode())
        try:
            result, healthy = await self._await_result(worker, response, limits, oom_before)
            if "worker" in result.phases:
                result.phases["host"] = time.monotonic() - sent - result.phases["worker"]
        except asyncio.CancelledError:
            self._background(self._recover_cancelled(worker, response))
            raise
        if self._state == "open":
            if healthy and worker.runs < self.recycle_after:
                self._release(worker)
            else:
                self._background(self._replace(worker))
        return result, worker.accepted > accepted_before

    async def _await_result(
        self, worker: Worker, response: asyncio.Future[Any], limits: Limits, oom_before: int
    ) -> tuple[Result, bool]:
        try:
            header, (out, err, chan) = await asyncio.wait_for(asyncio.shield(response), limits.wall_s + self.grace_s)
        except TimeoutError:
            # The worker enforces wall_s itself and the run cannot signal it: a silent worker is the sandbox's fault,
            # unless the run's memory use brought the cgroup to an OOM kill (the worker may stall reclaiming).
            if worker.cgroup is not None and worker.cgroup.oom_kills() > oom_before:
                return Result(status="memory", reason="out of memory (the worker stalled at the cgroup limit)"), False
            silent = f"the worker did not answer within wall_s + grace_s ({limits.wall_s + self.grace_s:g} s)"
            return Result(status="sandbox_error", wall_s=limits.wall_s, reason=f"{silent}; jail killed"), False
        except WorkerDied as exc:
            oom = worker.cgroup is not None and worker.cgroup.oom_kills() > oom_before
            if oom:
                return Result(status="memory", reason="out of memory (the worker was OOM-killed)"), False
            return Result(status="sandbox_error", reason=str(exc) if self._state == "open" else "pool closed"), False
        status, reason = header["status"], header["reason"]
        self.stats["children_lost"] += header["children_lost"]
        oom = worker.cgroup is not None and worker.cgroup.oom_kills() > oom_before
        if header["signal"] == signal.SIGKILL and header["started"] and status in ("killed", "sandbox_error") and oom:
            status, reason = "memory", f"out of memory (cgroup limit {limits.memory_mb} MiB over the warm worker)"
        result = Result(
            status=status,
            exit_code=header["exit_code"],
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
            wall_s=header["wall_s"],
            truncated=header["truncated"],
            channel=chan,
            channel_truncated=header["channel_truncated"],
            cpu_s=header["cpu_s"],
            max_rss_mb=header["max_rss_mb"],
            signal=header["signal"],
            reason=reason,
            phases=header["phases"],
        )
        return result, not header["leftovers"]

    async def _recover_cancelled(self, worker: Worker, response: asyncio.Future[Any]) -> None:
        """A cancelled run: tell the worker to kill it, then reuse the worker (or replace it if it balks)."""
        try:
            worker.send({"op": "cancel"})
            await asyncio.wait_for(response, self.grace_s)
        except (WorkerDied, TimeoutError, ConnectionError, RuntimeError):
            await self._replace(worker)
            return
        if self._state == "open":
            self._release(worker)
