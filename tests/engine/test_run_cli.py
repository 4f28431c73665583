"""engine.run's command line: the dry run's data checks, and which errors (and signals) become one line with an exit
code."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

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


def test_project_errors_map_to_one_line_and_their_exit_codes(capsys):
    from engine.cli import exit_code
    from engine.data import DataError
    from sandbox import SandboxUnavailable

    def raising(exc: BaseException):
        def body() -> int:
            raise exc

        return body

    assert exit_code(raising(DataError("data.train: no such file")), interrupted="-") == 2
    assert capsys.readouterr().err == "error: data.train: no such file\n"
    assert exit_code(raising(SandboxUnavailable("nsjail not found")), interrupted="-") == 1
    assert capsys.readouterr().err == "error: nsjail not found\n"
    assert exit_code(raising(KeyboardInterrupt()), interrupted="nothing was written") == 130
    assert capsys.readouterr().err == "interrupted: nothing was written\n"
    assert exit_code(raising(LookupError("own")), bad_input=(LookupError,), interrupted="-") == 2
    assert exit_code(lambda: 0, interrupted="-") == 0


def test_sigterm_raises_terminated_in_plain_code_like_ctrl_c_and_the_handler_is_restored(tmp_path):
    from engine.cli import EXIT_TERMINATED, Terminated, exit_code, sigterm_raises

    cleaned = tmp_path / "cleaned"

    def work() -> int:
        with sigterm_raises():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)  # the handler raises in here
                return 0
            finally:
                cleaned.touch()

    with pytest.raises(Terminated):
        work()
    assert cleaned.exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, "the handler is removed afterwards"
    assert exit_code(work, interrupted="nothing") == EXIT_TERMINATED


def test_a_key_error_from_a_bug_is_not_mapped():
    from engine.cli import exit_code

    with pytest.raises(KeyError, match="missing"):
        exit_code(lambda: {}["missing"], interrupted="-")


def test_an_unknown_solver_stops_training_with_one_line_and_exit_2(tmp_path, capsys):
    assert main(["solver.name=not_a_solver", f"run.output_dir={tmp_path}", "sandbox.isolation=process"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown solver 'not_a_solver'; valid solvers: ") and err.count("\n") == 1
    assert not any(tmp_path.iterdir()), "nothing was started"


def test_a_key_error_raised_inside_train_keeps_its_traceback(tmp_path, capsys, monkeypatch):
    """A KeyError from a bug (a missing key) must reach the user as a traceback, not as 'error: ...' with exit 2."""
    import engine.train

    async def buggy_check(cfg):  # train() calls this right after looking up the solver
        return {}["learner_lr"]

    monkeypatch.setattr(engine.train, "check_generation", buggy_check)
    with pytest.raises(KeyError, match="learner_lr"):
        main([f"run.output_dir={tmp_path}", "sandbox.isolation=process"])
    assert "error:" not in capsys.readouterr().err
