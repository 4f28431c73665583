"""The learner room imports torch and transformers, never engine, solvers, sandbox or an HTTP client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("engine", "solvers", "sandbox", "aiohttp", "httpx", "requests", "urllib3", "uvloop")


@pytest.mark.slow
def test_learner_imports_stay_in_their_room():
    modules = sorted(p.stem for p in (REPO / "learner").glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module('learner.' + name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, check=True
    )
    loaded = set(json.loads(proc.stdout.splitlines()[-1]))
    assert "torch" in loaded
    assert not loaded & set(FORBIDDEN), sorted(loaded & set(FORBIDDEN))
