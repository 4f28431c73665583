"""bench/exec_cache_bench.py on a hand-made run directory (generated problems, real nsjail and gurobipy): the
replay's counts per step and its bad-input exit; no timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from engine.config import DataConfig, build
from engine.data import load_train
from sandbox import SandboxUnavailable

BENCH = Path(__file__).resolve().parents[2] / "bench"
spec = importlib.util.spec_from_file_location("bench_exec_cache_bench", BENCH / "exec_cache_bench.py")
bench = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

CONFIG = {
    "data": {"train": "generated", "families": ["market"], "difficulty": "intro", "num_problems": 4, "seed": 0},
    "solver": {"name": "gurobipy"},
    "sandbox": {"workers": 1, "limits": {"wall_s": 30.0}},
    # a section the replay does not read, with a value today's config would refuse
    "algorithm": {"no_such_key": 1},
}
PROGRAM = "import gurobipy as gp\nm = gp.Model()\nx = m.addVar(ub={ub})\nm.setObjective(x, gp.GRB.MAXIMIZE)\n"


def text(ub: int, comment: str = "") -> str:
    return f"```python\n{comment}{PROGRAM.format(ub=ub)}m.optimize()\n```"


def test_replay_counts_shared_runs_per_step(tmp_path):
    a, b = (p.id for p in load_train(build(DataConfig, CONFIG["data"], where="data")).problems[:2])
    samples = [  # (step, problem, text, t_verify_start_s)
        (0, a, text(3), 0.1),
        (0, a, text(3, "# the same model\n"), 0.2),
        (0, a, text(4), 0.3),
        (0, b, text(3), 0.4),
        (0, b, "no program", 0.5),
        (1, a, text(3), 1.0),
        (1, a, text(3), 1.1),
        (1, b, text(3), None),  # never verified (a closed group): not replayed
    ]
    with open(tmp_path / "samples.jsonl", "w") as f:
        for step, pid, t, start in samples:
            row = {"step": step, "problem_id": pid, "text": t, "t_verify_start_s": start, "status": "?"}
            f.write(json.dumps(row) + "\n")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    try:
        report = bench.asyncio.run(bench.run(bench.parse_args([str(tmp_path)])))
    except SandboxUnavailable as exc:
        pytest.skip(f"nsjail sandbox unavailable on this machine: {exc}")
    steps = {s["step"]: s for s in report["steps"]}
    assert (steps[0]["completions"], steps[0]["distinct_texts"], steps[0]["distinct_programs"]) == (5, 4, 3)
    assert (steps[0]["cache_runs"], steps[0]["cache_hits"], steps[0]["cache_hit_rate"]) == (3, 1, 0.25)
    assert (steps[1]["completions"], steps[1]["cache_runs"], steps[1]["cache_hits"]) == (2, 1, 1)  # a new step
    total = report["total"]
    assert total["outcomes_match"] and (total["cache_hits"], total["cache_runs"], total["with_program"]) == (2, 4, 6)
    assert total["cache_saved_s"] > 0


def test_a_directory_without_a_run_is_refused(tmp_path, capsys):
    assert bench.main([str(tmp_path)]) == 2
    assert "has no samples.jsonl and config.yaml" in capsys.readouterr().err
