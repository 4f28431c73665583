"""Evaluate a model on benchmarks x solvers: `python -m engine.eval --model M --benchmark B... --solver S...`.

    python -m engine.eval --model smollm2-135m --benchmark nl4opt_clean_llmopt --solver gurobipy --limit 20
    python -m engine.eval --model runs/x/checkpoints/step_000010 --benchmark mamo_easylp --solver gurobipy ortools
    python -m engine.eval --model sglang:http://gpu0:30000 --benchmark nl4opt --solver gurobipy --samples 8
    python -m engine.eval --model openai:http://localhost:8000/v1 --api-model qwen --benchmark nl4opt --solver ortools
    python -m engine.eval --completions outputs.jsonl --benchmark nl4opt --solver gurobipy     # score, no model
    python -m engine.eval --completions shared/data/benchmarks/reference_programs.jsonl --solver gurobipy
    python -m engine.eval --config runs/learn-cpu/config.yaml --model runs/learn-cpu --benchmark heldout.jsonl

--model: the embedded alias, a HF directory or hub name, a training checkpoint (runs/<name>/checkpoints/step_N,
weights loaded into the run's `model.path`; a run directory means its newest one), `sglang:URL[,URL...]`, or
`openai:URL` (+ --api-model; prompts go to its chat endpoint as messages).
Every problem gets k samples under each solver's instructions (greedy by default when k = 1), each is verified
in the sandbox, and the table prints pass@1, pass@k (Chen et al. 2021), the execution rate and the status mix;
zero-shot solver transfer is one more name after --solver.

Answer rules: pass@1 is under the primary rule (--comparison/--tolerance, default SIRL's relative 1e-6); every
sample is also judged under --rules in the same pass, and a second table prints pass@1 under each side by side
(default: relative:1e-6 as SIRL/OptMATH, evom:0.05 and evom:1e-4 as EVOM's main and strict tables, orlm as ORLM;
see solvers/reward.py). A third table counts the failures by kind (solvers/failures.py). --format think-code asks
for and reads EVOM's answer format (<think>...</think> then <code>...</code>).

Benchmark rows that name their solver (a `solver` column, as in training data): without --solver, each problem
is evaluated under its own solver only (rows naming none take the --config's solver; without one they are an
error), so a mixed set gets one cell per (benchmark, solver) it uses. A --solver list evaluates every problem
under each solver given, whatever its row names (zero-shot transfer). The same holds for --completions: a row's
`solver`, or its --benchmark problem's.

--config RUN_DIR/config.yaml evaluates as the run trained: its prompt (system prompt, template, worked example,
answer prefix, max_prompt_tokens, overlong rule), solver (when no --solver is given), code extraction, answer rule
(comparison, tolerances, accept_feasible, min_variables: the binary correctness the run's reward was built on,
without its shaping terms, which never enter an evaluation score), and sampling length and stop tokens. A flag
given here wins over the config. With --completions only the solver, extraction and answer rule apply.

--completions FILE scores rows {"id", "completion" | "code", ["sample"], ["answer"], ["benchmark"]} instead of
generating: with --benchmark the ids are matched to its problems and the answers come from it; without, each row
carries its own answer (null: no optimum).

Writes DIR/items.jsonl (one row per sample, with its error_kind and correct_by_rule), DIR/summary.json (cells with
pass@1, pass@1_by_rule and error_kinds) and DIR/summary.md, all at once at the end (the directory appears whole or
not at all). Bad input exits 2 and a broken environment 1, with one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.cli import exit_code, terminable
from engine.evaluation.metrics import Cell, Item, format_errors, format_markdown, format_rules, format_table, summarize
from engine.evaluation.models import ModelError, ModelSpec, open_model, parse_model
from engine.evaluation.runner import Entry, EvalSettings, generate_and_score, score_completions
from sandbox import ISOLATIONS
from solvers import ExtractConfig, RewardConfig
from solvers.extract import FORMATS
from solvers.reward import COMPARISONS, parse_rule, rule_key
from solvers.rows import RowError, check_answer, read_rows

if TYPE_CHECKING:
    from engine.config import Config
    from engine.data import Benchmark, Problem

ITEMS_FILE, SUMMARY_JSON, SUMMARY_MD = "items.jsonl", "summary.json", "summary.md"
DEFAULT_RULES = ("relative:1e-6", "evom:0.05", "evom:1e-4", "orlm")


class EvalInputError(ValueError):
    """Bad command-line input; the message says what and what to do (exit 2)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="alias, HF directory, checkpoint dir, sglang:URL or openai:URL")
    p.add_argument("--config", type=Path, help="a run's config.yaml: its prompt, solver, extraction, answer rule apply")
    p.add_argument("--benchmark", nargs="+", default=[], metavar="B", help="benchmark paths or short names")
    p.add_argument("--solver", nargs="+", default=[], metavar="S", help="solver names (see python -m solvers list)")
    p.add_argument("--completions", type=Path, help="score this JSONL of completions/programs instead of generating")
    p.add_argument("--samples", type=int, default=1, help="samples per problem, k of pass@k (default 1)")
    p.add_argument("--temperature", type=float, help="default: 0 (greedy) for 1 sample, 1.0 for more")
    p.add_argument("--top-p", type=float, default=1.0)
    # Defaults of None: a flag left out takes the --config's value, else EvalSettings' default.
    p.add_argument("--max-new-tokens", type=int, help="default: the config's, else 1024")
    p.add_argument("--max-prompt-tokens", type=int, help="longer prompts are skipped and counted (default 4096)")
    p.add_argument("--limit", type=int, help="first N problems of each benchmark (or of the completions file)")
    p.add_argument("--output", type=Path, help="results directory, new or empty (default runs/eval/<UTC time>)")
    p.add_argument("--api-model", help="openai: the served model name (default: the only one listed)")
    p.add_argument("--tokenizer", help="local/sglang: tokenizer for the prompts (default: the model's own)")
    p.add_argument("--batch-size", type=int, default=64, help="local backend: rows decoded together")
    p.add_argument("--workers", type=int, default=2, help="sandbox workers per pool (default 2)")
    p.add_argument("--wall-s", type=float, default=30.0, help="wall and CPU seconds per program (default 30)")
    p.add_argument("--memory-mb", type=int, default=2048)
    p.add_argument("--isolation", choices=ISOLATIONS, default="nsjail")
    p.add_argument("--comparison", choices=COMPARISONS, help="primary answer rule (default relative)")
    p.add_argument("--tolerance", type=float, help="tolerance of the primary rule (default 1e-6)")
    p.add_argument(
        "--rules",
        nargs="+",
        default=list(DEFAULT_RULES),
        metavar="RULE",
        help="more answer rules, scored side by side: relative:TOL, evom:TOL[:delta=D], orlm[:TOL] "
        f"(default {' '.join(DEFAULT_RULES)})",
    )
    p.add_argument("--format", choices=FORMATS, help="answer format to ask for and read (default markdown)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def read_run_config(path: Path) -> Config:
    """A run's config (its resolved config.yaml, or any config file engine.run takes), validated."""
    from engine.config import ConfigError, load_config

    if path.is_dir():
        raise EvalInputError(f"--config {path} is a directory; give the run's config file, {path / 'config.yaml'}")
    try:
        return load_config(path)
    except ConfigError as exc:
        raise EvalInputError(f"--config: {exc}") from None


def judging_rule(reward: RewardConfig) -> RewardConfig:
    """The part of a run's reward that decides correctness (comparison, tolerances, accept_feasible,
    min_variables), as a binary reward: shaping terms (format_reward, executed_reward, status_rewards) reward
    training behaviour and never enter an evaluation score."""
    return RewardConfig(
        comparison=reward.comparison,
        tolerance=reward.tolerance,
        orlm_tolerance=reward.orlm_tolerance,
        accept_feasible=reward.accept_feasible,
        min_variables=reward.min_variables,
    )


def from_run(run: Config | None) -> dict[str, Any]:
    """EvalSettings fields taken from a run's config (nothing without one)."""
    from engine.prompts import prompt_settings

    if run is None:
        return {}
    return {
        "prompt": prompt_settings(run.data, answer_format=run.solver.extract.format),
        "reward": judging_rule(run.solver.reward),
        "extract": run.solver.extract,
        "max_new_tokens": run.generation.sampling.max_new_tokens,
        "stop_token_ids": tuple(run.generation.sampling.stop_token_ids),
    }


def settings_from(args: argparse.Namespace, run: Config | None = None) -> EvalSettings:
    """The run's settings (if any) under the flags given: a flag wins over the config, the config over the
    defaults on EvalSettings and RewardConfig."""
    if args.samples < 1:
        raise EvalInputError(f"--samples must be >= 1, got {args.samples}")
    if args.limit is not None and args.limit < 1:
        raise EvalInputError(f"--limit must be >= 1, got {args.limit}")
    for flag, value in (("--max-new-tokens", args.max_new_tokens), ("--max-prompt-tokens", args.max_prompt_tokens)):
        if value is not None and value < 1:
            raise EvalInputError(f"{flag} must be >= 1, got {value}")
    chosen = from_run(run)
    if args.max_new_tokens is not None:
        chosen["max_new_tokens"] = args.max_new_tokens
    if args.max_prompt_tokens is not None:
        prompt = chosen.get("prompt", EvalSettings().prompt)
        chosen["prompt"] = dataclasses.replace(prompt, max_prompt_tokens=args.max_prompt_tokens)
    rule = {"comparison": args.comparison, "tolerance": args.tolerance}
    try:
        chosen["reward"] = dataclasses.replace(
            chosen.get("reward", RewardConfig()), **{k: v for k, v in rule.items() if v is not None}
        )
        chosen["rules"] = tuple(parse_rule(text, chosen["reward"]) for text in args.rules)
    except ValueError as exc:
        raise EvalInputError(f"answer rules: {exc}") from None
    if args.format is not None:
        chosen["extract"] = dataclasses.replace(chosen.get("extract") or ExtractConfig(), format=args.format)
        prompt = chosen.get("prompt", EvalSettings().prompt)
        chosen["prompt"] = dataclasses.replace(prompt, answer_format=args.format)
    temperature = args.temperature if args.temperature is not None else (0.0 if args.samples == 1 else 1.0)
    return EvalSettings(
        samples=args.samples,
        temperature=temperature,
        top_p=args.top_p,
        seed=args.seed,
        workers=args.workers,
        wall_s=args.wall_s,
        memory_mb=args.memory_mb,
        isolation=args.isolation,
        progress=not args.quiet,
        **chosen,
    )


def config_meta(path: Path, args: argparse.Namespace, settings: EvalSettings) -> dict[str, Any]:
    """What summary.json records of --config: the file, the settings as applied (after the flags), and the flags
    that won over the config."""
    prompt = settings.prompt
    applied: dict[str, Any] = {
        "extract": dataclasses.asdict(settings.extract) if settings.extract is not None else None,
        "reward": {key: value for key, value in dataclasses.asdict(settings.reward).items() if key != "status_rewards"},
    }
    if args.completions is None:
        applied.update(
            prompt={
                "system": prompt.system,
                "template": prompt.template,
                "example": dataclasses.asdict(prompt.example) if prompt.example is not None else None,
                "answer_prefix": prompt.answer_prefix,
                "max_prompt_tokens": prompt.max_prompt_tokens,
                "overlong": prompt.overlong,
                "answer_format": prompt.answer_format,
            },
            max_new_tokens=settings.max_new_tokens,
            stop_token_ids=list(settings.stop_token_ids),
        )
    flags = {
        "--solver": args.solver,
        "--max-new-tokens": args.max_new_tokens,
        "--max-prompt-tokens": args.max_prompt_tokens,
        "--comparison": args.comparison,
        "--tolerance": args.tolerance,
        "--format": args.format,
    }
    won = [flag for flag, value in flags.items() if value not in (None, [])]
    return {"config": str(path), "config_applied": applied, "config_overridden_by": won}


def pip_extra(package: str) -> str | None:
    """The optional-dependency group of this project that installs `package`, if any."""
    import importlib.metadata
    import re

    try:
        requirements = importlib.metadata.requires("evom") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for requirement in requirements:
        name = re.split(r"[\s;<>=!~\[]", requirement, maxsplit=1)[0].lower().replace("-", "_")
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
        if extra and name == package.lower().replace("-", "_"):
            return extra.group(1)
    return None


def load_solvers(names: Sequence[str]) -> list[Any]:
    """Adapters for `names`; an unknown name lists the valid ones, a missing package names the pip extra."""
    from solvers import SolverUnavailableError, get_solver

    solvers = []
    for name in dict.fromkeys(names):
        try:
            solvers.append(get_solver(name))  # UnknownSolverError (bad input) lists the valid names
        except SolverUnavailableError as exc:
            extra = pip_extra(get_solver(name, require_installed=False).package)
            hint = f" (or the project's extra: pip install 'evom[{extra}]')" if extra else ""
            raise SolverUnavailableError(f"{exc}{hint}") from None
    return solvers


def row_solvers(benchmarks: Sequence[Benchmark], entries: Sequence[Entry] | None) -> bool:
    """Whether the input names solvers per row: a benchmark problem's `solver`, or a completions row's."""
    if entries is not None:
        return any(e.solver for e in entries)
    return any(p.solver for b in benchmarks for p in b.problems)


def fill_row_solvers(
    benchmarks: Sequence[Benchmark], entries: Sequence[Entry] | None, default: str | None
) -> tuple[list[Benchmark], list[Entry] | None, list[str]]:
    """Every problem (entry) with its solver, `default` for those naming none, and the solvers used in order;
    EvalInputError naming the first row without a solver when there is no default."""
    if entries is not None:
        entries = [e if e.solver else dataclasses.replace(e, solver=default) for e in entries]
        unnamed = next((f"{e.benchmark} id {e.id!r}" for e in entries if e.solver is None), None)
        names = [e.solver for e in entries]
    else:
        from engine.data import assign_solvers

        benchmarks = [dataclasses.replace(b, problems=tuple(assign_solvers(b.problems, default))) for b in benchmarks]
        unnamed = next((f"{b.name} id {p.id!r}" for b in benchmarks for p in b.problems if p.solver is None), None)
        names = [p.solver for b in benchmarks for p in b.problems]
    if unnamed is not None:
        raise EvalInputError(
            f"{unnamed} names no solver while other rows do; give --solver (every problem under it) or a run's "
            "--config (its solver for such rows)"
        )
    return list(benchmarks), entries, list(dict.fromkeys(n for n in names if n is not None))


def load_benchmarks(specs: Sequence[str], limit: int | None) -> list[Benchmark]:
    """Benchmarks by path or short name, first `limit` problems each; bad rows are reported on stderr."""
    from engine.data import load_benchmark

    benchmarks = []
    for spec in specs:
        bench = load_benchmark(spec)
        for line in bench.report.bad_lines():
            print(f"warning: {line} (row skipped)", file=sys.stderr)
        if not bench.problems:
            raise EvalInputError(f"benchmark {spec!r} has no usable problems ({bench.report.summary()})")
        benchmarks.append(dataclasses.replace(bench, problems=bench.problems[:limit]))
    if len({b.name for b in benchmarks}) < len(benchmarks):
        raise EvalInputError(f"two benchmarks share a name: {[b.name for b in benchmarks]}; pass each once")
    return benchmarks


def _answer(value: Any, where: str) -> float | None:
    try:
        return check_answer(value)
    except RowError as exc:
        raise RowError(f"{where}: {exc}") from None


def read_completions(path: Path, benchmarks: Sequence[Benchmark], limit: int | None) -> list[Entry]:
    """Entries of a completions file; rows that cannot be scored are reported on stderr and skipped."""
    if not path.is_file():
        raise EvalInputError(f"completions file not found: {path}")
    problems = {p.id: (b.name, p) for b in benchmarks for p in b.problems}
    seen: Counter[tuple[str, str]] = Counter()

    def parse(row: dict[str, Any], line: int) -> Entry:
        return _entry(row, problems, bool(benchmarks), path.stem, seen)

    try:
        with path.open(encoding="utf-8") as f:
            entries, bad = read_rows(enumerate(f, 1), parse)
    except UnicodeDecodeError as exc:
        raise EvalInputError(f"{path} is not UTF-8 text ({exc.reason}); completions files are JSONL") from None
    for row in bad:
        print(f"warning: {path}:{row.line}: {row.reason} (row skipped)", file=sys.stderr)
    if limit is not None:
        keep = set(list(dict.fromkeys((e.benchmark, e.id) for e in entries))[:limit])
        entries = [e for e in entries if (e.benchmark, e.id) in keep]
    if not entries:
        raise EvalInputError(f"{path} has no row that can be scored (see the warnings above)")
    return entries


def _entry(
    row: dict[str, Any],
    problems: dict[str, tuple[str, Problem]],
    matched: bool,
    default_name: str,
    seen: Counter[tuple[str, str]],
) -> Entry:
    """One completions row as an Entry; RowError says why a row cannot be scored."""
    if row.get("id") is None:
        raise RowError("no 'id'")
    row_id = str(row["id"])
    text = row.get("completion", row.get("code"))
    if not isinstance(text, str):
        raise RowError("needs a string 'completion' (model output) or 'code' (a program)")
    if matched:
        if row_id not in problems:
            raise RowError(f"id {row_id!r} is not in the given benchmark(s)")
        name, problem = problems[row_id]
        answer = problem.answer
    else:
        if "answer" not in row:
            raise RowError("no 'answer' (without --benchmark every row must carry its own; null: no optimum)")
        name = row["benchmark"] if isinstance(row.get("benchmark"), str) else default_name
        answer = _answer(row["answer"], f"id {row_id!r}")
    solver = problems[row_id][1].solver if matched else row.get("solver")
    if solver is not None and not isinstance(solver, str):
        raise RowError(f"'solver' must be a solver name or null, got {solver!r}")
    sample = row.get("sample", row.get("sample_index"))
    if not isinstance(sample, int) or isinstance(sample, bool):
        sample = seen[(name, row_id)]
    seen[(name, row_id)] += 1
    return Entry(
        benchmark=name,
        id=row_id,
        sample=sample,
        text=text,
        is_code="completion" not in row,
        answer=answer,
        solver=solver or None,
    )


def write_results(output: Path, items: Sequence[Item], cells: Sequence[Cell], meta: dict[str, Any]) -> None:
    """items.jsonl, summary.json and summary.md, built in a temporary sibling directory and renamed into place."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        with (tmp / ITEMS_FILE).open("w", encoding="utf-8") as f:
            for item in items:
                f.write(json.dumps(item.row(), ensure_ascii=False, allow_nan=False) + "\n")
        summary = {**meta, "cells": [c.row() for c in cells]}
        (tmp / SUMMARY_JSON).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        notes = [f"- {key}: {value}" for key, value in meta.items() if not isinstance(value, dict | list)]
        (tmp / SUMMARY_MD).write_text(format_markdown(cells, title="EVOM evaluation", notes=notes), encoding="utf-8")
        os.rename(tmp, output)  # also replaces an empty directory
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_output(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise EvalInputError(f"--output {output} already exists and is not an empty directory; pick a new one")


def check_args(args: argparse.Namespace, run: Config | None = None) -> None:
    if args.completions is None and not args.model:
        raise EvalInputError("give --model (to generate) or --completions FILE (to score existing outputs)")
    if args.completions is not None and args.model:
        raise EvalInputError("--model and --completions exclude each other: --completions scores without a model")
    if args.completions is None and not args.benchmark:
        raise EvalInputError("give at least one --benchmark (a path or a short name such as nl4opt_clean_llmopt)")


async def evaluate(args: argparse.Namespace, run: Config | None = None) -> tuple[list[Item], dict[str, Any]]:
    """Everything is validated (solvers, benchmarks, completions, model/server) before the first sample runs.
    `run`: the --config's run config, whose settings apply where no flag is given."""
    settings = settings_from(args, run)
    benchmarks = load_benchmarks(args.benchmark, None if args.completions else args.limit)
    entries = read_completions(args.completions, benchmarks, args.limit) if args.completions is not None else None
    default = run.solver.name if run is not None else None
    by_row = not args.solver and row_solvers(benchmarks, entries)
    if by_row:
        benchmarks, entries, names = fill_row_solvers(benchmarks, entries, default)
    elif not args.solver and run is None:
        raise EvalInputError("give at least one --solver (python -m solvers list shows them) or a run's --config")
    else:
        names = args.solver or [default]
    solvers = load_solvers(names)
    reward = settings.reward or RewardConfig()
    meta: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "solvers": [s.name for s in solvers],
        "solver_per_row": by_row,
        "benchmarks": [b.report.source for b in benchmarks],
        "comparison": reward.comparison,
        "tolerance": reward.tolerance,
        "primary_rule": rule_key(reward),
        "rules": list(settings.judged_rules()),
        "format": (settings.extract or ExtractConfig()).format,
    }
    if run is not None:
        meta.update(config_meta(args.config, args, settings))
    if entries is not None:
        meta.update(mode="completions", completions=str(args.completions))
        return await score_completions(entries, solvers, settings, by_row=by_row), meta
    spec: ModelSpec = parse_model(args.model, api_model=args.api_model)
    meta.update(
        mode="generate",
        model=spec.label,
        samples=settings.samples,
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_new_tokens=settings.max_new_tokens,
        seed=settings.seed,
        limit=args.limit,
    )
    async with open_model(spec, tokenizer=args.tokenizer, batch_size=args.batch_size) as served:
        if served.tokenizer is None and settings.prompt.answer_prefix:
            raise EvalInputError(
                f"{spec.label} takes chat messages, which cannot carry the answer prefix (data.answer_prefix of "
                f"{args.config}); evaluate with a local model or sglang:URL, or give a config without one"
            )
        return await generate_and_score(served, benchmarks, solvers, settings, by_row=by_row), meta


def run(args: argparse.Namespace) -> int:
    config = read_run_config(args.config) if args.config is not None else None
    check_args(args, config)
    output = args.output or Path("runs") / "eval" / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    check_output(output)
    started = time.monotonic()
    items, meta = asyncio.run(terminable(evaluate(args, config)))
    cells = summarize(items, k=args.samples)
    meta["wall_s"] = round(time.monotonic() - started, 1)
    write_results(output, items, cells, meta)
    print(format_table(cells))
    print(format_rules(cells))
    print(format_errors(cells))
    print(f"wrote {output / ITEMS_FILE}, {SUMMARY_JSON}, {SUMMARY_MD}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Bad input -> exit 2, unusable environment (solver missing, sandbox, server error) -> exit 1; one line each
    (see engine/cli.py).

    Nothing here imports torch: scoring completions does not need it (and the import costs seconds)."""
    args = build_parser().parse_args(argv)
    return exit_code(lambda: run(args), bad_input=(EvalInputError, ModelError), interrupted="nothing was written")


if __name__ == "__main__":
    sys.exit(main())
