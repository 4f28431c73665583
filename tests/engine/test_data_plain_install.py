"""A plain `pip install .` (no extras) runs the generator and the command lines.

Each command runs in a fresh interpreter where the packages of pyproject.toml's optional extras are made
unimportable (those the base dependencies require themselves stay), as in an install without extras: a
module-level import of an extra's package anywhere on these paths fails here as it would for a user.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _extra_modules() -> list[str]:
    """Top-level modules of the extras' packages that the base dependencies do not pull in themselves."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {_name(r) for group in project["optional-dependencies"].values() for r in group}
    return sorted(extras - _closure([_name(r) for r in project["dependencies"]]) - {"evom"})


def _closure(names: list[str]) -> set[str]:
    """`names` and everything their installed distributions require, extras' requirements left out."""
    seen: set[str] = set()
    while names:
        name = names.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        names += [_name(r) for r in requires if not re.search(r"\bextra\s*==", r)]
    return seen


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;(]", requirement.strip(), maxsplit=1)[0].lower().replace("-", "_")


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
