"""The unisolated baseline of SIRL-style pipelines, written here from that description: a pool of forked worker
processes that import the solver once, then `exec` each program in their own interpreter, with a timeout per
program that kills the worker (its process group) and forks a replacement. Nothing is isolated: a program
sees the host's files, network and processes, and what it leaves in a module is seen by the next program
the same worker runs.

    pool = ExecPool(workers=2, modules=("gurobipy",), pids_group=None)
    await pool.start()
    raw = await pool.run(code, timeout_s=60)    # Raw(status, stdout, last, detail); last = the last solve
    await pool.close()

The objective is read from the solver objects: the worker wraps the solve entry points (`RECORDER`) and keeps
the last call's status and objective. `RECORDER` is also what bench/sandbox_peers.py prepends to a program
sent to SandboxFusion, where it prints the last solve on stdout at exit. `pids_cgroup` gives the bench a
pids cap for this pool's abuse probes, since the baseline has none.

`fork_per_program=True` is a control rather than a peer: each program runs in a child the worker forks for it
(nothing else changes, still nothing isolated), so no program sees what an earlier one left behind. Against it,
the warm pool's ratio is what its jail costs on top of the fresh process per program both of them pay.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import io
import multiprocessing
import os
import pickle
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "EVOM-PEER-SOLVE "
SOLVER_MODULES = ("gurobipy", "ortools.sat.python.cp_model", "ortools.linear_solver.pywraplp")

RECORDER = (
    r'''
def _evom_peer_record(modules, at_exit=False):
    """Wrap the solve calls of the solver modules among `modules`; return the dict holding the last solve."""
    import atexit, importlib, json
    last = {}

    def wrap(owner, name, read):
        original = getattr(owner, name)

        def solve(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            try:
                state, objective = read(self, result)
            except Exception as exc:
                state, objective = "unreadable: " + type(exc).__name__, None
            last.clear()
            last.update(state=state, objective=objective)
            return result

        setattr(owner, name, solve)

    if "gurobipy" in modules:
        gp = importlib.import_module("gurobipy")
        states = {2: "optimal", 3: "infeasible", 4: "inf_or_unbd", 5: "unbounded"}

        def read_gurobi(model, _):
            state = states.get(model.Status, "status %s" % model.Status)
            return state, model.ObjVal if state == "optimal" else None

        wrap(gp.Model, "optimize", read_gurobi)
    if "ortools.sat.python.cp_model" in modules:
        cp = importlib.import_module("ortools.sat.python.cp_model")

        def read_cp(solver, status):
            state = {cp.OPTIMAL: "optimal", cp.INFEASIBLE: "infeasible"}.get(status, "status %s" % status)
            return state, solver.ObjectiveValue() if state == "optimal" else None

        for name in ("solve", "Solve"):
            if hasattr(cp.CpSolver, name):
                wrap(cp.CpSolver, name, read_cp)
    if "ortools.linear_solver.pywraplp" in modules:
        lp = importlib.import_module("ortools.linear_solver.pywraplp").Solver
        states = {lp.OPTIMAL: "optimal", lp.INFEASIBLE: "infeasible", lp.UNBOUNDED: "unbounded"}

        def read_lp(solver, status):
            state = states.get(status, "status %s" % status)
            return state, solver.Objective().Value() if state == "optimal" else None

        wrap(lp, "Solve", read_lp)
    if at_exit:
        atexit.register(lambda: print("\n'''
    + MARKER
    + r"""" + json.dumps(last), flush=True))
    return last
"""
)


def _exec_program(code: str, last: dict[str, Any]) -> dict[str, Any]:
    """Run one program in this interpreter; its reply: error (None when it ran to the end), last solve, stdout."""
    last.clear()
    out = io.StringIO()
    error = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            exec(compile(code, "<program>", "exec"), {"__name__": "__main__"})
    except SystemExit as exc:
        error = None if exc.code in (0, None) else f"SystemExit({exc.code!r})"
    except BaseException as exc:  # any failure of the program is its result
        error = f"{type(exc).__name__}: {exc}"[:300]
    return {"error": error, "last": dict(last), "stdout": out.getvalue()[-4000:]}


def _exec_in_child(code: str, last: dict[str, Any]) -> dict[str, Any]:
    """Run one program in a child forked for it, so every program starts from the worker's state; the reply comes
    back through a pipe. A child that ends without replying (os._exit, a signal) is an error, not a dead worker."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            with os.fdopen(write_fd, "wb") as f:
                f.write(pickle.dumps(_exec_program(code, last)))
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if data:
        return pickle.loads(data)
    return {"error": f"the program's process ended without a reply (wait status {status})", "last": {}, "stdout": ""}


def _exec_worker(conn: Any, modules: tuple[str, ...], fork_per_program: bool) -> None:
    """A forked worker: import the solver, then exec programs one after the other, in this process or (with
    `fork_per_program`) each in a child forked from it."""
    os.setpgrp()  # so that a timeout kills what the program started too
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # solver logs written by C code go nowhere; Python-level output is captured below
    os.dup2(devnull, 2)
    for name in modules:
        importlib.import_module(name)
    scope: dict[str, Any] = {}
    exec(RECORDER, scope)
    last = scope["_evom_peer_record"](modules)
    if fork_per_program:
        gc.collect()
        gc.freeze()  # as the warm pool's worker does: its children's collections skip the imported heap
    run = _exec_in_child if fork_per_program else _exec_program
    conn.send("ready")
    while True:
        conn.send(run(conn.recv(), last))


@dataclass(frozen=True, kw_only=True)
class Raw:
    """One run as a side reports it: status is ok | error | timeout | sandbox_error."""

    status: str
    stdout: str = ""
    last: dict[str, Any] | None = None
    detail: str = ""


class ExecWorker:
    def __init__(self, modules: tuple[str, ...], pids_group: Path | None, fork_per_program: bool) -> None:
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_exec_worker, args=(child, modules, fork_per_program), daemon=True)
        self.proc.start()
        child.close()
        if pids_group is not None:
            (pids_group / "cgroup.procs").write_text(str(self.proc.pid))

    def ready(self, timeout_s: float) -> None:
        if not self.conn.poll(timeout_s) or self.conn.recv() != "ready":
            raise RuntimeError("an exec pool worker did not start (solver import failed or too slow)")

    def call(self, code: str, timeout_s: float) -> dict[str, Any] | None:
        """The worker's answer, or None when it timed out or died."""
        try:
            self.conn.send(code)
            return self.conn.recv() if self.conn.poll(timeout_s) else None
        except (EOFError, OSError):
            return None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.join(5)
        self.conn.close()


class ExecPool:
    """`workers` forked processes with the solver imported; `run` execs a program in one of them (or, with
    `fork_per_program`, in a child that worker forks for it)."""

    def __init__(
        self,
        *,
        workers: int,
        modules: tuple[str, ...],
        pids_group: Path | None = None,
        fork_per_program: bool = False,
    ) -> None:
        self.workers, self.modules, self.pids_group = workers, modules, pids_group
        self.fork_per_program = fork_per_program
        self.replaced = 0
        self._idle: asyncio.Queue[ExecWorker] = asyncio.Queue()
        self._all: list[ExecWorker] = []

    async def _spawn(self) -> ExecWorker:
        worker = ExecWorker(self.modules, self.pids_group, self.fork_per_program)
        self._all.append(worker)
        await asyncio.to_thread(worker.ready, 120.0)
        return worker

    async def start(self) -> None:
        for _ in range(self.workers):
            self._idle.put_nowait(await self._spawn())

    async def run(self, code: str, timeout_s: float) -> Raw:
        worker = await self._idle.get()
        try:
            reply = await asyncio.to_thread(worker.call, code, timeout_s)
            if reply is None:
                alive = worker.proc.is_alive()
                worker.kill()
                self._all.remove(worker)
                self.replaced += 1
                worker = await self._spawn()
                return Raw(status="timeout" if alive else "error", detail="worker killed and replaced")
            status = "ok" if reply["error"] is None else "error"
            return Raw(status=status, stdout=reply["stdout"], last=reply["last"], detail=reply["error"] or "")
        finally:
            self._idle.put_nowait(worker)

    async def close(self) -> None:
        for worker in self._all:
            worker.kill()
        self._all.clear()


@contextlib.contextmanager
def pids_cgroup(pids_max: int) -> Iterator[Path | None]:
    """A cgroup v1 pids group below this process's own (so caps above still apply), or None where none can be made."""
    lines = Path("/proc/self/cgroup").read_text().splitlines() if Path("/proc/self/cgroup").exists() else []
    own = next((line.split(":", 2)[2] for line in lines if line.split(":")[1:2] == ["pids"]), None)
    group = Path("/sys/fs/cgroup/pids") / (own or "/").lstrip("/") / f"evom-peers-{os.getpid()}"
    try:
        group.mkdir()
        (group / "pids.max").write_text(str(pids_max))
    except OSError:
        yield None
        return
    try:
        yield group
    finally:
        for _ in range(5):
            for pid in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.1)
        with contextlib.suppress(OSError):
            group.rmdir()
