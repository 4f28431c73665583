"""Known-correct gurobipy programs (shared/data/benchmarks/reference_programs.jsonl, rows whose
`meta.exec_check.result` is "ok") earn reward 1; the same programs with the optimisation sense flipped by
the harness do not. A handful run in the fast suite; all of them in the `slow` test.

Two facts of the data, asserted rather than hidden:
- LABEL_ROUNDED: labels rounded to 2 decimals, further from the program's optimum than the default
  1e-6 relative tolerance allows; they are correct at the 1e-4 the exec check itself used.
- A flipped program can still match when the objective is constant on the feasible set (all decisions
  forced by the constraints, e.g. ref-optmathstyle-sirl043): then the flipped run must report exactly the
  unflipped objective, which shows min = max rather than a verifier miss.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from sandbox import Limits, SandboxPool
from solvers import Outcome, RewardConfig, verify_code
from solvers.reward import matches

pytestmark = pytest.mark.asyncio(loop_scope="module")

LABEL_ROUNDED = {"ref-industryor-prob_026"}  # labelled 1146.57, optimum 1146.5665...
# Objective constant on the feasible set (measured: the flipped run reports the same optimum).
DEGENERATE = {
    "ref-complexor-prob_002_blend_problem",
    "ref-complexor-prob_012_netasgn",
    "ref-complexor-prob_013_netmcol",
    "ref-industryor-prob_036",
    "ref-industryor-prob_063",
    "ref-industryor-prob_064",
    "ref-logior-prob_075",
    "ref-logior-prob_086",
    "ref-optmathstyle-sirl027",
    "ref-optmathstyle-sirl043",
}
FAST_COUNT = 6


def _rows(benchmarks: Path) -> list[dict[str, Any]]:
    with (benchmarks / "reference_programs.jsonl").open() as f:
        rows = [json.loads(line) for line in f]
    return [row for row in rows if row["meta"]["exec_check"]["result"] == "ok"]


async def _check(pool: Any, rows: list[dict[str, Any]], *, flip_wall_s: float) -> dict[str, Any]:
    flip_limits = dataclasses.replace(pool.limits, wall_s=flip_wall_s, cpu_s=flip_wall_s)

    async def one(row: dict[str, Any]) -> tuple[Outcome, Outcome]:
        straight = await verify_code(pool, row["code"], "gurobipy", row["answer"])
        flipped = await verify_code(pool, row["code"], "gurobipy", row["answer"], limits=flip_limits, flip_sense=True)
        return straight, flipped

    results = await asyncio.gather(*(one(row) for row in rows))
    return {row["id"]: result for row, result in zip(rows, results, strict=True)}


def _assert_outcomes(rows: list[dict[str, Any]], results: dict[str, Any]) -> None:
    problems = []
    for row in rows:
        straight, flipped = results[row["id"]]
        if row["id"] in LABEL_ROUNDED:
            loose = RewardConfig(tolerance=1e-4)
            assert straight.status == "wrong" and matches(straight.objective, row["answer"], loose), straight
        elif (straight.status, straight.reward) != ("correct", 1.0):
            problems.append(f"{row['id']}: not rewarded: {straight}")
        if flipped.correct and flipped.objective != straight.objective:
            problems.append(f"{row['id']}: flipped sense still rewarded with a different objective: {flipped}")
    assert not problems, "\n".join(problems)


async def test_shortest_reference_programs(pools: Any, benchmarks: Path) -> None:
    rows = sorted(_rows(benchmarks), key=lambda row: len(row["code"]))
    rows = [row for row in rows if row["id"] not in DEGENERATE][:FAST_COUNT]
    results = await _check(await pools.get("gurobipy"), rows, flip_wall_s=30.0)
    _assert_outcomes(rows, results)
    assert not any(flipped.correct for _, flipped in results.values())


@pytest.mark.slow
async def test_all_reference_programs(benchmarks: Path) -> None:
    rows = _rows(benchmarks)
    # ref-logior-prob_013 needs ~45 CPU seconds; the wall limit is generous for a loaded shared machine.
    limits = Limits(wall_s=600.0, cpu_s=180.0, memory_mb=2048)
    async with SandboxPool(workers=2, limits=limits, preload=("gurobipy",), isolation="nsjail") as pool:
        results = await _check(pool, rows, flip_wall_s=20.0)
    _assert_outcomes(rows, results)
    degenerate = sorted(row_id for row_id, (_, flipped) in results.items() if flipped.correct)
    assert set(degenerate) <= DEGENERATE, f"newly degenerate under the flip: {set(degenerate) - DEGENERATE}"
