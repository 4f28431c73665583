"""A plain `pip install .` (no extras) runs the generator and the command lines.

Each command runs in a fresh interpreter where every package of every optional extra in pyproject.toml is
made unimportable, as in an install without extras: a module-level import of an extra's package anywhere on
these paths fails here as it would for a user.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _extra_modules() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [r for group in project["optional-dependencies"].values() for r in group]
    names = {r.split("==")[0].split("[")[0].strip().lower().replace("-", "_") for r in requirements}
    return sorted(names - {"evom"})


def _run_without_extras(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    # A None entry in sys.modules makes `import x` raise ModuleNotFoundError and find_spec("x") return None,
    # which is what an absent package gives.
    script = (
        "import runpy, sys\n"
        f"for name in {_extra_modules()!r}:\n"
        "    sys.modules[name] = None\n"
        f"sys.argv = [{module!r}, *{list(args)!r}]\n"
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_extras_list_holds_the_optional_solvers():
    assert {"pyscipopt", "pulp", "pyomo"} <= set(_extra_modules())


def test_generate_needs_no_extra(tmp_path: Path):
    out = tmp_path / "gen.jsonl"
    done = _run_without_extras("engine.data", "generate", "--n", "7", "--seed", "0", "--output", str(out))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 7 and all(row["id"].startswith("gen-") for row in rows)


@pytest.mark.parametrize(("module", "args"), [("engine.eval", ["--help"]), ("sandbox", ["--help"])])
def test_help_needs_no_extra(module: str, args: list[str]):
    done = _run_without_extras(module, *args)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_solvers_list_names_the_extra_for_missing_solvers():
    done = _run_without_extras("solvers", "list")
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(None, 1) for line in done.stdout.splitlines() if line.strip())
    assert lines["pulp"].startswith("missing: pip install 'evom[solvers-extra]'")
    assert lines["coptpy"] == "installed" and lines["highspy"] == "installed"
