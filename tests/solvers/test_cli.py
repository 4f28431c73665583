"""`python -m solvers verify` end to end in real subprocesses (nsjail pool), and its atomic writer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from solvers.cli import parse_row, write_jsonl_atomic
from solvers.rows import read_rows

REPO = Path(__file__).resolve().parents[2]
SOLVE = "import gurobipy as gp\nm = gp.Model()\nx = m.addVar(ub=3)\nm.setObjective(x, gp.GRB.MAXIMIZE)\nm.optimize()"
ROWS = [
    {"id": "fenced", "completion": f"Here:\n```python\n{SOLVE}\n```", "answer": 3},
    {"id": "printer", "code": "print(3)", "answer": 3},
    {"id": "prose", "completion": "The answer is 3.", "answer": None},
    "not json",
    {"id": "words", "code": SOLVE, "answer": "three"},
    {"id": "no-program", "answer": 1},
    {"answer": 1, "code": SOLVE},
    {"id": "off", "code": SOLVE, "answer": 2.5},
]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "solvers", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def test_verify_command(tmp_path: Path) -> None:
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("\n".join(row if isinstance(row, str) else json.dumps(row) for row in ROWS) + "\n")
    done = _run("verify", "--solver", "gurobipy", "--input", str(source), "--output", str(target))
    assert done.returncode == 1, done.stderr  # bad rows were skipped
    out = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(r["id"], r["status"], r["error_kind"], r["reward"]) for r in out] == [
        ("fenced", "correct", None, 1.0),
        ("printer", "no_solve", "no_solve", 0.0),
        ("prose", "no_code", "no_code", 0.0),
        ("off", "wrong", "wrong_objective", 0.0),
    ]
    assert out[0]["objective"] == 3.0 and out[0]["correct"] is True
    assert f"{source}:4: not valid JSON" in done.stderr
    assert f"{source}:5: 'answer' must be a finite number, or null (None)" in done.stderr
    assert f"{source}:6: missing field 'completion'" in done.stderr
    assert f"{source}:7: missing field 'id'" in done.stderr
    assert "4/4" in done.stderr  # the progress bar
    assert "correct" in done.stdout and "bad rows" in done.stdout and "mean reward 0.2500" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]


def test_missing_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = _run("verify", "--solver", "gurobipy", "--input", str(tmp_path / "nope.jsonl"), "--output", "o.jsonl")
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: input file {tmp_path / 'nope.jsonl'} does not exist"


def test_input_that_is_not_text_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_bytes(b'{"id": 1}\n\xff\xfe\n')
    done = _run("verify", "--solver", "gurobipy", "--input", str(tmp_path / "in.jsonl"), "--output", "o.jsonl")
    assert done.returncode == 2
    assert done.stderr.strip().startswith(f"error: {tmp_path / 'in.jsonl'} is not UTF-8 text")


def test_a_bad_tolerance_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("")
    args = ["--input", str(tmp_path / "in.jsonl"), "--output", "o.jsonl", "--comparison", "evom", "--tolerance", "0"]
    done = _run("verify", "--solver", "gurobipy", *args)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: RewardConfig.tolerance must be a finite number > 0, got 0.0"


def test_unknown_solver_lists_the_valid_ones(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("")
    done = _run("verify", "--solver", "cplex", "--input", str(tmp_path / "in.jsonl"), "--output", "o.jsonl")
    assert done.returncode == 2
    assert "unknown solver 'cplex'" in done.stderr and "gurobipy" in done.stderr and "pyomo" in done.stderr


def test_parse_row_accepts_null_and_integers() -> None:
    assert parse_row({"id": 1, "code": "x", "answer": None}, 1).answer is None
    assert parse_row({"id": 1, "completion": "x", "answer": 4}, 1).answer == 4


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": 1, "code": "x", "answer": true}', "finite number, or null"),
        ('{"id": 1, "code": "x", "answer": NaN}', "finite number, or null"),
        ('{"id": 1, "code": "x", "answer": "7"}', "finite number, or null"),
        ('{"id": 1, "code": "x", "completion": "y", "answer": 1}', "both"),
        ('{"id": 1, "code": 5, "answer": 1}', "must be a string"),
        ("[1, 2]", "JSON object"),
        ('{"id": 1,', "not valid JSON"),
    ],
)
def test_bad_rows_are_reported_with_their_line(line: str, message: str) -> None:
    good = '{"id": 2, "code": "x", "answer": 1.5}'
    rows, bad = read_rows(enumerate([good, "", line, good], start=1), parse_row)
    assert [(r.line, r.answer) for r in rows] == [(1, 1.5), (4, 1.5)]
    assert [b.line for b in bad] == [3] and message in bad[0].reason


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"

    def records():
        yield {"id": 1}
        raise RuntimeError("verification crashed halfway")

    with pytest.raises(RuntimeError, match="halfway"):
        write_jsonl_atomic(target, records())
    assert list(tmp_path.iterdir()) == []
    write_jsonl_atomic(target, [{"id": 1}, {"id": 2}])
    assert target.read_text() == '{"id": 1}\n{"id": 2}\n' and list(tmp_path.iterdir()) == [target]
