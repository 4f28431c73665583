"""Shared fixtures for the solvers tests: one real nsjail SandboxPool per solver, started on first use.

Pools are module-scoped (tests in a module share the event loop, `pytestmark` in each module); ortools and
highspy cannot share a worker (their bundled HiGHS libraries clash), so each solver gets its own pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from sandbox import Limits, SandboxPool, SandboxUnavailable
from solvers import Solver, get_solver

PROGRAMS = Path(__file__).resolve().parent / "programs"
BENCHMARKS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "benchmarks"
TEST_LIMITS = Limits(wall_s=60.0, cpu_s=60.0, memory_mb=2048)


def read_program(name: str) -> str:
    return (PROGRAMS / f"{name}.py").read_text()


class Pools:
    """Starts one pool per solver on first use and closes them all at the end of the module."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._pools: dict[str, SandboxPool] = {}

    async def get(self, solver: Solver | str) -> SandboxPool:
        adapter = get_solver(solver) if isinstance(solver, str) else solver
        if adapter.name not in self._pools:
            pool = SandboxPool(workers=self.workers, limits=TEST_LIMITS, preload=adapter.preload, isolation="nsjail")
            try:
                await pool.start()
            except SandboxUnavailable as exc:
                pytest.skip(f"nsjail sandbox unavailable on this machine: {exc}")
            self._pools[adapter.name] = pool
        return self._pools[adapter.name]

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pools() -> AsyncIterator[Pools]:
    holder = Pools()
    try:
        yield holder
    finally:
        await holder.close()


@pytest.fixture(scope="session")
def program():
    """`program("gurobipy_lp")`: the source of tests/solvers/programs/gurobipy_lp.py."""
    return read_program


@pytest.fixture(scope="session")
def benchmarks() -> Path:
    """The shared benchmark folder (never copied into the repo); skips when it is absent."""
    if not BENCHMARKS.is_dir():
        pytest.skip(f"benchmark data not found at {BENCHMARKS.resolve()} (shared/ must sit beside the repo)")
    return BENCHMARKS
