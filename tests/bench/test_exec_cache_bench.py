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


PULP = "import pulp\np = pulp.LpProblem('p', pulp.LpMaximize)\ny = pulp.LpVariable('y', 0, 3)\np += y\n"


def test_a_mixed_solver_run_replays_each_problem_with_its_solver_and_writes_the_json(tmp_path):
    rows = [
        {"id": "g", "question": "Maximise x, x <= 3.", "answer": 3.0},  # no solver named: the run's (gurobipy)
        {"id": "p", "question": "Maximise y, y <= 3.", "answer": 3.0, "solver": "pulp"},
    ]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {**CONFIG, "data": {"train": str(tmp_path / "data.jsonl")}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    pulp_text = f"```python\n{PULP}p.solve(pulp.PULP_CBC_CMD(msg=0))\n```"
    samples = [("g", text(3), 0.1), ("p", pulp_text, 0.2), ("p", pulp_text, 0.3), ("g", pulp_text, 0.4)]
    with open(tmp_path / "samples.jsonl", "w") as f:
        for pid, t, start in samples:
            f.write(json.dumps({"step": 0, "problem_id": pid, "text": t, "t_verify_start_s": start}) + "\n")
    out = tmp_path / "out" / "exec-cache.json"
    try:
        code = bench.main([str(tmp_path), "--json", str(out)])
    except SandboxUnavailable as exc:
        pytest.skip(f"nsjail sandbox unavailable on this machine: {exc}")
    report = json.loads(out.read_text())
    assert code == 0 and report["schema"] == "exec_cache_bench/1"
    assert report["solver"] == "gurobipy" and report["solvers"] == ["gurobipy", "pulp"]
    total = report["total"]
    # The PuLP program is correct for p under PuLP; for g it is verified with gurobipy, which it never calls, so
    # it is another execution (another problem and solver), not a hit.
    assert (total["cache_hits"], total["cache_runs"], total["outcomes_match"]) == (1, 3, True)
    assert total["cache_hit_rate"] == 0.25 and total["cache_saved_s"] > 0
    assert set(total) >= {"wall_no_cache_s", "wall_cache_s", "wall_ratio_no_cache_over_cache", "status_as_recorded"}
    assert {"load_avg_before", "load_avg_after", "workers", "isolation", "run_dir"} <= set(report)


def test_a_run_without_a_verified_sample_is_refused(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    (tmp_path / "samples.jsonl").write_text(json.dumps({"step": 0, "problem_id": "x", "text": "t"}) + "\n")
    assert bench.main([str(tmp_path)]) == 2
    assert "holds no verified sample to replay" in capsys.readouterr().err
