"""The channel format: only lines tagged with the run's key, in sequence, ending with one exit record."""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from solvers import get_solver
from solvers.harness import HOOKS_DIR, RUNTIME_MODULES, build_program, new_key, parse_channel


def _frame(key: str, record: dict) -> bytes:
    payload = json.dumps(record).encode()
    return hmac.new(bytes.fromhex(key), payload, hashlib.sha256).hexdigest().encode() + b" " + payload + b"\n"


SOLVE = {"kind": "solve", "seq": 0, "index": 0, "status": 2, "objective": 1.0}
EXIT = {"kind": "exit", "seq": 1, "solves": 1, "ending": "ok", "last": {"status": 2, "objective": 1.0}}


def test_well_formed_channel() -> None:
    key = new_key()
    report = parse_channel(_frame(key, SOLVE) + _frame(key, EXIT), key)
    assert report.problem is None and report.solve_count == 1
    assert report.last_solve == {"status": 2, "objective": 1.0}


def test_another_runs_key_is_rejected() -> None:
    key = new_key()
    report = parse_channel(_frame(new_key(), SOLVE) + _frame(new_key(), EXIT), key)
    assert report.problem is not None and "authentication" in report.problem


def test_replayed_or_reordered_records_are_rejected() -> None:
    key = new_key()
    assert "sequence" in (parse_channel(_frame(key, SOLVE) * 2 + _frame(key, EXIT), key).problem or "")
    assert "sequence" in (parse_channel(_frame(key, EXIT), key).problem or "")


def test_missing_exit_truncation_and_trailing_data() -> None:
    key = new_key()
    assert "no exit record" in (parse_channel(_frame(key, SOLVE), key).problem or "")
    assert "mid-record" in (parse_channel(_frame(key, SOLVE)[:-5], key).problem or "")
    extra = _frame(key, SOLVE) + _frame(key, EXIT) + _frame(key, {**SOLVE, "seq": 2})
    assert "after the exit" in (parse_channel(extra, key).problem or "")
    assert "nothing" in (parse_channel(b"", key).problem or "")


def test_script_holds_no_key_and_embeds_the_program_verbatim() -> None:
    code = "print('''a \\\\ b''')  # \u00e9"
    script = build_program(code, get_solver("gurobipy"))
    assert repr(code) in script and "main(" in script
    compile(script, "harness", "exec")


def test_every_adapter_preloads_what_the_runtime_imports() -> None:
    tree = ast.parse((HOOKS_DIR / "runtime.py").read_text())
    imported = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    assert imported - {"os", "sys"} <= set(RUNTIME_MODULES)  # os and sys are always loaded
    for name in ("gurobipy", "ortools", "coptpy", "pyscipopt", "highspy", "pulp", "pyomo"):
        assert set(RUNTIME_MODULES) <= set(get_solver(name).preload)


# Runs a harness script the way the sandbox's child does (as __main__, key on stdin, channel on fd 3), optionally
# pretending to be another interpreter version.
_RUN_SCRIPT = """import os, sys
os.dup2(int(sys.argv[2]), 3)
if sys.argv[3] == "other":
    sys.version = "another interpreter"
code = compile(open(sys.argv[1]).read(), sys.argv[1], "exec")
exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
"""


@pytest.mark.parametrize("interpreter", ["same", "other"])
def test_script_carries_the_harness_compiled_and_falls_back_to_its_source(tmp_path: Path, interpreter: str) -> None:
    program = (
        "import gurobipy as gp\nm = gp.Model()\nm.Params.OutputFlag = 0\nx = m.addVar(ub=3)\n"
        "m.setObjective(2 * x, gp.GRB.MAXIMIZE)\nm.optimize()\n"
    )
    script = build_program(program, get_solver("gurobipy"))
    assert "class Capture" not in script and "def install" not in script  # no harness source to compile per run
    path, channel = tmp_path / "main.py", tmp_path / "channel"
    path.write_text(script)
    key = new_key()
    with channel.open("wb") as out:
        done = subprocess.run(
            [sys.executable, "-c", _RUN_SCRIPT, str(path), str(out.fileno()), interpreter],
            input=key + "\n",
            capture_output=True,
            text=True,
            pass_fds=(out.fileno(),),
            timeout=120,
            check=False,
            env={**os.environ, "PYTHONPATH": ""},
        )
    assert done.returncode == 0, done.stderr
    report = parse_channel(channel.read_bytes(), key)
    assert report.problem is None and report.exit is not None and report.exit["ending"] == "ok"
    assert report.solve_count == 1 and report.last_solve["objective"] == 6.0
