"""Command line of the solvers package.

    python -m solvers verify --solver gurobipy --input IN.jsonl --output OUT.jsonl [--workers 2] [--wall-s 30]
    python -m solvers list

`verify` reads rows `{"id", "completion" | "code", "answer"}` (answer: a number, or null for "no optimum";
`completion` is model output to extract code from, `code` is a program used as is), runs every program in a
sandbox pool under the solver's harness, and writes `{"id", "status", "objective", "correct", "reward",
"reason"}` in input order. A progress bar goes to stderr, a table of statuses to stdout. Bad rows are
reported as `IN.jsonl:LINE: what is wrong` and skipped; the exit code is then 1 (0 when every row was
verified, 2 when nothing could run). The output appears atomically: a run that fails leaves no partial file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from solvers.base import SolverUnavailableError, UnknownSolverError
from solvers.extract import FORMATS, ExtractConfig
from solvers.registry import available_solvers, get_solver, solver_names
from solvers.reward import COMPARISONS, OUTCOME_STATUSES, Outcome, RewardConfig
from solvers.rows import RowError, check_answer, read_rows
from solvers.verify import verify, verify_code


@dataclass(frozen=True, kw_only=True)
class Row:
    line: int
    id: Any
    text: str
    is_code: bool
    answer: float | None


def parse_row(obj: dict[str, Any], line: int) -> Row:
    """One input object -> Row; raises RowError saying what is wrong."""
    missing = [name for name in ("id", "answer") if name not in obj]
    if missing:
        raise RowError(f"missing field {', '.join(repr(m) for m in missing)}")
    if "completion" not in obj and "code" not in obj:
        raise RowError("missing field 'completion' (or 'code')")
    if "completion" in obj and "code" in obj:
        raise RowError("has both 'completion' and 'code'; give one")
    text = obj.get("completion", obj.get("code"))
    if not isinstance(text, str):
        raise RowError(f"'completion'/'code' must be a string, got {type(text).__name__}")
    return Row(line=line, id=obj["id"], text=text, is_code="code" in obj, answer=check_answer(obj["answer"]))


def read_input(path: Path) -> tuple[list[Row], list[str]]:
    """Good rows and `path:line: problem` messages for the bad ones; blank lines are skipped."""
    with path.open(encoding="utf-8") as f:
        rows, bad = read_rows(enumerate(f, start=1), parse_row)
    return rows, [f"{path}:{b.line}: {b.reason}" for b in bad]


def write_jsonl_atomic(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Write records to a temporary file beside `path`, then rename it over `path`; nothing on failure."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def summary_table(outcomes: Sequence[Outcome], bad_rows: int) -> str:
    counts = Counter(outcome.status for outcome in outcomes)
    total = max(len(outcomes), 1)
    lines = [f"{'status':<14}{'count':>7}{'share':>9}"]
    lines += [f"{s:<14}{counts[s]:>7}{counts[s] / total:>9.1%}" for s in OUTCOME_STATUSES if counts[s]]
    mean_reward = sum(outcome.reward for outcome in outcomes) / total
    lines.append(f"{'verified':<14}{len(outcomes):>7}   mean reward {mean_reward:.4f}")
    if bad_rows:
        lines.append(f"{'bad rows':<14}{bad_rows:>7}   (skipped, see stderr)")
    return "\n".join(lines)


async def verify_rows(rows: Sequence[Row], args: argparse.Namespace) -> list[Outcome]:
    from tqdm import tqdm

    from sandbox import Limits, SandboxPool

    solver = get_solver(args.solver)
    limits = Limits(wall_s=args.wall_s, cpu_s=args.wall_s, memory_mb=args.memory_mb)
    reward = RewardConfig(comparison=args.comparison, tolerance=args.tolerance)
    extract = ExtractConfig(which=args.extract, format=args.format)
    pool = SandboxPool(workers=args.workers, limits=limits, preload=solver.preload, isolation=args.isolation)
    async with pool:
        with tqdm(total=len(rows), file=sys.stderr, desc=f"verify[{solver.name}]", unit="row") as bar:

            async def one(row: Row) -> Outcome:
                if row.is_code:
                    outcome = await verify_code(pool, row.text, solver, row.answer, reward=reward)
                else:
                    outcome = await verify(pool, row.text, solver, row.answer, reward=reward, extract=extract)
                bar.update(1)
                return outcome

            return list(await asyncio.gather(*(one(row) for row in rows)))


def cmd_verify(args: argparse.Namespace) -> int:
    source, target = Path(args.input), Path(args.output)
    if not source.is_file():
        print(f"error: input file {source} does not exist", file=sys.stderr)
        return 2
    if not target.parent.is_dir():
        print(f"error: output directory {target.parent} does not exist", file=sys.stderr)
        return 2
    try:
        get_solver(args.solver)
        RewardConfig(comparison=args.comparison, tolerance=args.tolerance)
    except (UnknownSolverError, SolverUnavailableError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        rows, bad = read_input(source)
    except UnicodeDecodeError as exc:
        print(f"error: {source} is not UTF-8 text ({exc.reason}); the input must be JSONL", file=sys.stderr)
        return 2
    for message in bad:
        print(message, file=sys.stderr)
    outcomes = asyncio.run(verify_rows(rows, args)) if rows else []
    write_jsonl_atomic(
        target,
        (
            {
                "id": row.id,
                "status": o.status,
                "error_kind": o.error_kind,
                "objective": o.objective,
                "correct": o.correct,
                "reward": o.reward,
                "reason": o.reason,
            }
            for row, o in zip(rows, outcomes, strict=True)
        ),
    )
    print(summary_table(outcomes, len(bad)))
    return 1 if bad else 0


def cmd_list(args: argparse.Namespace) -> int:
    installed = set(available_solvers())
    for name in solver_names():
        solver = get_solver(name, require_installed=False)
        where = "installed" if name in installed else f"missing: pip install '{solver.pip_requirement}'"
        print(f"{name:<10} {where}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m solvers", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("verify", help="verify a JSONL of completions or programs")
    run.add_argument("--solver", required=True, help=f"one of: {', '.join(solver_names())}")
    run.add_argument("--input", required=True, help="JSONL rows {id, completion|code, answer}")
    run.add_argument(
        "--output", required=True, help="JSONL rows {id, status, error_kind, objective, correct, reward, reason}"
    )
    run.add_argument("--workers", type=int, default=2, help="sandbox workers (default 2)")
    run.add_argument("--wall-s", type=float, default=30.0, help="wall and CPU seconds per program (default 30)")
    run.add_argument("--memory-mb", type=int, default=2048, help="memory per program (default 2048)")
    run.add_argument("--isolation", choices=("nsjail", "process"), default="nsjail")
    run.add_argument("--comparison", choices=COMPARISONS, default="relative", help="answer rule (solvers/reward.py)")
    run.add_argument("--tolerance", type=float, default=1e-6, help="tolerance of the rule (default 1e-6)")
    run.add_argument("--extract", choices=("last", "first", "concatenate"), default="last")
    run.add_argument("--format", choices=FORMATS, default="markdown", help="answer format (solvers/extract.py)")
    run.set_defaults(handler=cmd_verify)
    commands.add_parser("list", help="list solvers and whether they are installed").set_defaults(handler=cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))
