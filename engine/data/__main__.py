"""Command line for the data package.

    python -m engine.data generate --family knapsack --family diet --difficulty easy --n 100 --seed 0 \\
        --output problems.jsonl              # atomic: written to a temporary file, then renamed
    python -m engine.data check FILE.jsonl   # or a short benchmark name; exit 1: bad rows, 2: missing file
    python -m engine.data show --family diet --difficulty medium --n 3   # print problems and answers
    python -m engine.data families           # the generator's families and the difficulties each has
    python -m engine.data generate --difficulty intro --n 20 --output intro.jsonl   # the families with intro
    python -m engine.data generate --n 40 --solver gurobipy,pulp --output mixed.jsonl   # rows name their solver

Exit codes: 0 success, 1 bad rows found (check), 2 bad input (missing file, unknown family, bad argument).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from engine.data.benchmarks import BenchmarkNotFound, DataError, load_benchmark
from engine.data.generator import available_families, get_family, iter_generated
from engine.data.problem import DIFFICULTIES, Problem


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except BenchmarkNotFound as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (DataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.data", description="EVOM problems: generate, check, list.")
    sub = p.add_subparsers(required=True, metavar="COMMAND")
    g = sub.add_parser("generate", help="write generated problems to a JSONL file")
    g.add_argument(
        "--family",
        action="append",
        default=[],
        help=f"family (repeatable or comma-separated; default: all that have the difficulty): "
        f"{', '.join(available_families())}",
    )
    g.add_argument(
        "--difficulty", default="easy", choices=DIFFICULTIES, help="intro exists for some families only (see families)"
    )
    g.add_argument("--n", type=int, required=True, help="number of problems")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--infeasible-rate", type=float, default=0.05, help="share of problems without an optimum")
    g.add_argument("--output", required=True, type=Path, help="JSONL file to write")
    g.add_argument(
        "--solver",
        action="append",
        default=[],
        help="write a solver column: problem i names the (i mod k)-th of these k solvers (repeatable or "
        "comma-separated; default: no column, the run's solver.name applies)",
    )
    g.set_defaults(run=_generate)
    c = sub.add_parser("check", help="load a benchmark file, print counts and bad rows")
    c.add_argument("benchmark", help="a JSONL path or a short benchmark name")
    c.add_argument("--benchmarks-dir", default=None, help="folder short names resolve against")
    c.set_defaults(run=_check)
    s = sub.add_parser("show", help="print generated problems with their answers (nothing written)")
    s.add_argument("--family", action="append", default=[], help="family (repeatable or comma-separated)")
    s.add_argument("--difficulty", default="easy", choices=DIFFICULTIES)
    s.add_argument("--n", type=int, default=1)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--infeasible-rate", type=float, default=0.05)
    s.set_defaults(run=_show)
    f = sub.add_parser("families", help="list the generator's problem families and their difficulties")
    f.set_defaults(run=_families)
    return p


def _families_arg(values: list[str]) -> list[str]:
    families = [name.strip() for item in values for name in item.split(",") if name.strip()]
    for name in families:
        get_family(name)  # fail on a typo before writing anything
    return families


def _solvers_arg(values: list[str]) -> list[str]:
    from solvers.registry import solver_names

    names = [name.strip() for item in values for name in item.split(",") if name.strip()]
    unknown = [name for name in names if name not in solver_names()]
    if unknown:
        raise DataError(f"unknown solver {unknown[0]!r}; valid solvers: {', '.join(solver_names())}")
    return names


def _show(args: argparse.Namespace) -> int:
    for p in iter_generated(
        args.n,
        families=_families_arg(args.family),
        difficulty=args.difficulty,
        seed=args.seed,
        infeasible_rate=args.infeasible_rate,
    ):
        answer = "no optimum (infeasible)" if p.answer is None else repr(p.answer)
        print(f"== {p.id}  [{p.meta['template']}, {p.meta['num_vars']} variables]\n{p.question}\nanswer: {answer}\n")
    return 0


def _generate(args: argparse.Namespace) -> int:
    families = _families_arg(args.family)
    solvers = _solvers_arg(args.solver)
    start = time.monotonic()
    problems: list[Problem] = []
    generated = iter_generated(
        args.n, families=families, difficulty=args.difficulty, seed=args.seed, infeasible_rate=args.infeasible_rate
    )
    lines = (
        _remember(problems, replace(p, solver=solvers[i % len(solvers)]) if solvers else p).to_json()
        for i, p in enumerate(generated)
    )
    write_atomic(args.output, lines)
    by_family = Counter(p.family for p in problems)
    no_opt = sum(p.answer is None for p in problems)
    by_solver = f"; per solver: {dict(sorted(Counter(p.solver for p in problems).items()))}" if solvers else ""
    print(
        f"wrote {len(problems)} {args.difficulty} problems ({no_opt} without an optimum) to {args.output} in "
        f"{time.monotonic() - start:.1f} s; per family: {dict(sorted(by_family.items()))}{by_solver}"
    )
    return 0


def _remember(sink: list[Problem], p: Problem) -> Problem:
    sink.append(p)
    return p


def write_atomic(path: Path, lines: Iterable[str]) -> None:
    """Write lines to a temporary file beside `path`, then rename: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the result is an ordinary data file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _check(args: argparse.Namespace) -> int:
    bench = load_benchmark(args.benchmark, benchmarks_dir=args.benchmarks_dir)
    report = bench.report
    print(report.summary())
    families = Counter(p.family for p in bench.problems if p.family)
    if families:
        print(f"families: {dict(sorted(families.items()))}")
    solvers = Counter(p.solver or "(run's solver.name)" for p in bench.problems)
    if any(p.solver for p in bench.problems):
        print(f"solvers: {dict(sorted(solvers.items()))}")
    for line in report.bad_lines():
        print(f"  bad row: {line}")
    return 0 if report.ok else 1


def _families(args: argparse.Namespace) -> int:
    for name in available_families():
        family = get_family(name)
        print(f"{name:16s} {','.join(family.difficulties):24s} {family.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
