"""The channel format: only lines tagged with the run's key, in sequence, ending with one exit record."""

from __future__ import annotations

import ast
import hashlib
import hmac
import json

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
