"""engine.run's command line: the dry run's data checks, and which errors become one line with an exit code."""

from __future__ import annotations

import json
from pathlib import Path

from engine.config import load_config
from engine.run import DEFAULT_CONFIG, check_eval_data, check_train_data, main

ROWS = [
    {"id": "a", "question": "Minimise x with x >= 2.", "answer": 2.0},
    {"id": "b", "question": "Maximise x with x <= 3.", "answer": 3.0},
    {"id": "c", "question": "Minimise x with x >= 5 and x <= 3.", "answer": None},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def check_lines(out: str) -> dict[str, str]:
    """'check NAME STATUS DETAIL' lines of a dry run, by NAME."""
    lines = [line.split(maxsplit=2)[1:] for line in out.splitlines() if line.startswith("check ")]
    return {name: rest for name, rest in lines}


def test_dry_run_fails_when_the_training_data_cannot_be_loaded(tmp_path, capsys):
    missing = tmp_path / "nonexistent.jsonl"
    assert main(["--dry-run", f"data.train={missing}", "sandbox.isolation=process"]) == 1
    checks = check_lines(capsys.readouterr().out)
    assert checks["train"] == f"FAIL data.train={missing}: benchmark file not found: {missing}"
    assert checks["solver"].startswith("ok"), "the other checks still run and report"


def test_dry_run_prints_the_counts_of_the_training_and_eval_data(tmp_path, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", [*ROWS, {"id": "d", "answer": 1.0}])  # d: no question
    evals = [write_jsonl(tmp_path / "e1.jsonl", ROWS[:2]), write_jsonl(tmp_path / "e2.jsonl", ROWS[2:])]
    argv = ["--dry-run", f"data.train={train}", f"data.eval=[{evals[0]}, {evals[1]}]", "sandbox.isolation=process"]
    assert main(argv) == 0
    checks = check_lines(capsys.readouterr().out)
    assert checks["train"] == (
        f"ok   {train}: 3 problems (2 with an optimum, 1 without), 1 bad rows skipped "
        f"(python -m engine.data check {train} lists them)"
    )
    assert checks["eval"] == (
        f"ok   {evals[0]}: 2 problems (2 with an optimum, 0 without); "
        f"{evals[1]}: 1 problems (0 with an optimum, 1 without)"
    )


def test_generated_training_problems_are_counted_and_no_eval_set_is_fine():
    cfg = load_config(DEFAULT_CONFIG, ["data.num_problems=8"])
    train = check_train_data(cfg)
    assert train.ok and train.detail.startswith("generated: 8 problems (")
    assert check_eval_data(cfg).ok and check_eval_data(cfg).detail == "none (data.eval is empty)"


def test_data_with_no_usable_problem_fails(tmp_path):
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"id": "x", "answer": 1.0}])
    train = check_train_data(load_config(DEFAULT_CONFIG, [f"data.train={empty}"]))
    assert not train.ok and train.detail.startswith(f"data.train={empty}: no usable problems ({empty}: 0 problems")
    assert not check_train_data(load_config(DEFAULT_CONFIG, ["data.families=[no_such_family]"])).ok


def test_an_eval_set_that_cannot_be_loaded_is_named(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", ROWS)
    cfg = load_config(DEFAULT_CONFIG, [f"data.eval=[{good}, no_such_benchmark]", f"data.benchmarks_dir={tmp_path}"])
    check = check_eval_data(cfg)
    assert not check.ok
    assert check.detail.startswith("data.eval no_such_benchmark: no benchmark named 'no_such_benchmark'")
