"""Execution-verified translation of programs between solver APIs: `python -m engine.translate --from-solver A
--to-solver B --programs F --model M`, the data of a solver cold start.

    python -m engine.translate --from-solver gurobipy --to-solver pulp \\
        --programs ../shared/data/benchmarks/reference_programs.jsonl --model smollm2-135m --attempts 4 --limit 8
    python -m engine.translate --from-solver pulp --to-solver highspy --programs runs/eval/x/items.jsonl \\
        --model openai:http://localhost:8000/v1 --api-model qwen --output runs/translate/pulp-highspy.jsonl
    python -m engine.sft --data runs/translate/pulp-highspy.jsonl --config configs/...yaml solver.name=highspy

Each program is first run under A in the sandbox and kept only when A verifies it correct against its known
answer (the source check). The model (--model: anything engine.eval takes: the embedded alias, a HF directory, a
training checkpoint or run, sglang:URL, openai:URL) then gets --attempts samples of a prompt that shows the
problem, the program, and B's instructions from its adapter (solvers/adapters.py), and asks for the same model
written for B. Each rewrite is extracted and verified under B against the same answer; only rewrites B verifies
correct are kept (distinct programs, at most --keep per source program).

Programs file (JSONL): "code" (a program) or "completion" (model output with a fenced program), "answer" (the
known optimum; null: no optimum), and "question" (needed for training; engine.eval items.jsonl and engine.run
samples.jsonl rows take theirs from the benchmark or run, as in engine.sft). Optional "id", "solver" or
"solver_api" (rows written for another solver than A are skipped), "correct" (false: skipped).

Writes OUT (default runs/translate/<A>-to-<B>.jsonl): one row per kept rewrite, {"id", "source_id", "question",
"completion" (the program in a ```python fence), "solver": B, "source_solver": A, "answer", "objective",
"correct": true, "attempt", "model"}, which engine.sft reads as is; OUT.progress.jsonl: one row per finished
program (attempts, verified, kept, the statuses under B); OUT.summary.json: the yields. A stopped run continues
when started again with the same OUT: programs already in the progress file are skipped (rewrites of a program
whose progress row was not written are dropped and redone). Yields: per program attempts / verified / kept;
overall, the share of attempted programs with a kept rewrite and the share of verified attempts.

Bad input (a missing or unusable programs file, an unknown solver, an output of another translation) is one line on
stderr and exit 2; an unusable environment (solver package missing, no sandbox, a server down) exit 1. Ctrl-C and
SIGTERM stop it with one line (exit 130 and 143, engine/cli.py); the same command then continues.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.cli import exit_code, terminable
from engine.evaluation.models import ModelError
from sandbox import ISOLATIONS

PROGRESS_SUFFIX, SUMMARY_SUFFIX = ".progress.jsonl", ".summary.json"


class TranslateInputError(ValueError):
    """Bad input to engine.translate (exit 2)."""


@dataclass(frozen=True, kw_only=True)
class Program:
    id: str
    code: str
    answer: float | None
    question: str


@dataclass(kw_only=True)
class Tally:
    """One program's attempts under B."""

    program: Program
    source_status: str = "correct"
    attempts: int = 0
    verified: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    kept: list[dict[str, Any]] = field(default_factory=list)
    seen_code: set[str] = field(default_factory=set)

    def row(self, source: str, target: str) -> dict[str, Any]:
        return {
            "id": self.program.id,
            "from_solver": source,
            "to_solver": target,
            "source_status": self.source_status,
            "attempts": self.attempts,
            "verified": self.verified,
            "kept": len(self.kept),
            "statuses": dict(self.statuses),
        }


# ----------------------------------------------------------------------------------------------- reading


def read_programs(path: Path, source: str, *, benchmarks: Sequence[str] = ()) -> tuple[list[Program], Counter[str]]:
    """The usable programs of `path` and the count of skipped rows per reason."""
    from engine.sft import _Lookup, _Skip
    from solvers.extract import extract_code
    from solvers.rows import RowError, check_answer

    if not path.is_file():
        raise TranslateInputError(f"--programs {path}: file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise TranslateInputError(f"--programs {path} is not UTF-8 text ({exc.reason}); give a JSONL file") from None
    lookup = _Lookup(benchmarks)
    programs: list[Program] = []
    skipped: Counter[str] = Counter()
    ids: Counter[str] = Counter()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise _Skip("not a JSON object")
            if row.get("correct") is False:
                raise _Skip("not correct")
            written_for = row.get("solver", row.get("solver_api"))
            if isinstance(written_for, str) and written_for != source:
                raise _Skip(f"written for {written_for}, not {source}")
            question, answer_given = row.get("question"), "answer" in row
            answer = row.get("answer")
            if "problem_id" in row and "text" in row:  # engine.run samples.jsonl
                if row.get("correct") is not True:
                    raise _Skip("not correct")
                problem, run_solver = lookup.run_problem(path, str(row["problem_id"]))
                if run_solver != source:
                    raise _Skip(f"written for {run_solver}, not {source}")
                row = {**row, "id": row["problem_id"], "completion": row["text"]}
                question, answer, answer_given = problem.question, problem.answer, True
            elif not isinstance(question, str) and "benchmark" in row and "id" in row:  # engine.eval items.jsonl
                if row.get("correct") is not True:
                    raise _Skip("not correct")
                question = lookup.eval_problem(path, str(row["benchmark"]), str(row["id"])).question
            if not isinstance(question, str) or not question.strip():
                raise _Skip("no 'question' (the translated pair needs it to train on)")
            if not answer_given:
                raise _Skip("no 'answer' (null: no optimum)")
            try:
                answer = check_answer(answer)
            except (RowError, ValueError) as exc:
                raise _Skip(f"bad 'answer': {exc}") from None
            code = row.get("code")
            if not isinstance(code, str):
                text = row.get("completion")
                code = extract_code(text) if isinstance(text, str) else None
            if not code or not code.strip():
                raise _Skip("no 'code' or 'completion' with a program")
        except json.JSONDecodeError:
            skipped["not a JSON line"] += 1
            continue
        except _Skip as exc:
            skipped[str(exc)] += 1
            continue
        base = str(row.get("id", f"{path.stem}-{number}"))
        ids[base] += 1
        program_id = base if ids[base] == 1 else f"{base}#{ids[base]}"
        programs.append(Program(id=program_id, code=code, answer=answer, question=question))
    return programs, skipped


# ----------------------------------------------------------------------------------------------- prompting


def translation_request(program: Program, source: Any, target: Any) -> str:
    """The user message asking for `program` (written for `source`) rewritten for `target`."""
    return (
        f"Rewrite the {source.name} program below for {target.name}: build the same optimization model (the same "
        f"data, variables, constraints and objective) and solve it with {target.name} instead of {source.name}.\n\n"
        f"{target.instructions}\n\nProblem:\n{program.question}\n\n"
        f"The {source.name} program:\n```python\n{program.code.rstrip()}\n```\n\n"
        f"Answer with the complete {target.name} program in one ```python code block."
    )


def fenced(code: str) -> str:
    return f"```python\n{code.strip()}\n```"


def _normalised(code: str) -> str:
    return "\n".join(line.rstrip() for line in code.strip().splitlines() if line.strip())


# ----------------------------------------------------------------------------------------------- running


@dataclass(frozen=True, kw_only=True)
class Settings:
    attempts: int = 4
    keep: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 1024
    max_prompt_tokens: int = 4096
    seed: int = 0
    workers: int = 2
    wall_s: float = 30.0
    memory_mb: int = 2048
    isolation: str = "nsjail"
    model_label: str = ""


class Writer:
    """Appends kept rows to OUT and progress rows to OUT.progress.jsonl, a program's kept rows before its progress
    row, each flushed at once (a killed run loses at most the program in flight)."""

    def __init__(self, output: Path) -> None:
        from engine.records import JsonlAppender

        output.parent.mkdir(parents=True, exist_ok=True)
        self.kept = JsonlAppender(output)
        self.progress = JsonlAppender(progress_path(output))

    def finish(self, tally: Tally, source: str, target: str) -> None:
        for row in tally.kept:
            self.kept.append(row)
        self.kept.flush()
        self.progress.append(tally.row(source, target))
        self.progress.flush()

    def close(self) -> None:
        self.kept.close()
        self.progress.close()


async def translate(
    served: Any, programs: Sequence[Program], source: Any, target: Any, settings: Settings, writer: Writer
) -> list[Tally]:
    """Source check under `source`, `settings.attempts` rewrites per program, each verified under `target`; each
    program's result is written as soon as its last attempt is judged."""
    from sandbox import Limits, SandboxPool

    limits = Limits(wall_s=settings.wall_s, cpu_s=settings.wall_s, memory_mb=settings.memory_mb)

    def pool(solver: Any) -> SandboxPool:
        return SandboxPool(
            workers=settings.workers, limits=limits, preload=solver.preload, isolation=settings.isolation
        )

    async with pool(source) as source_pool:
        checked = await _source_check(source_pool, programs, source)
    tallies = [Tally(program=p, source_status=status) for p, status in zip(programs, checked, strict=True)]
    for tally in tallies:
        if tally.source_status != "correct":
            writer.finish(tally, source.name, target.name)
    todo = [t for t in tallies if t.source_status == "correct"]
    prompts, ready = _prompts(served, todo, source, target, settings)
    for tally, prompt in zip(todo, prompts, strict=True):
        if prompt is None:
            tally.source_status = "prompt_too_long"
            writer.finish(tally, source.name, target.name)
    if ready:
        async with pool(target) as target_pool:
            await _rewrite(served, target_pool, ready, target, settings, writer, source.name)
    return tallies


async def _source_check(pool: Any, programs: Sequence[Program], source: Any) -> list[str]:
    from solvers import verify_code

    async def one(program: Program) -> str:
        outcome = await verify_code(pool, program.code, source, program.answer)
        return outcome.status

    return list(await asyncio.gather(*(one(p) for p in programs)))


def _prompts(
    served: Any, todo: Sequence[Tally], source: Any, target: Any, settings: Settings
) -> tuple[list[Any], list[tuple[Tally, Any]]]:
    """Each program's prompt (token ids through the chat template, or chat messages for an openai server; None when
    over max_prompt_tokens) and the (tally, prompt) pairs to generate for."""
    prompts: list[Any] = []
    for tally in todo:
        messages = [{"role": "user", "content": translation_request(tally.program, source, target)}]
        if served.tokenizer is None:
            prompts.append(messages)
            continue
        text = served.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = list(served.tokenizer(text, add_special_tokens=False)["input_ids"])
        prompts.append(ids if len(ids) <= settings.max_prompt_tokens else None)
    ready = [(t, p) for t, p in zip(todo, prompts, strict=True) if p is not None]
    return prompts, ready


async def _rewrite(
    served: Any,
    pool: Any,
    ready: Sequence[tuple[Tally, Any]],
    target: Any,
    settings: Settings,
    writer: Writer,
    source_name: str,
) -> None:
    from engine.generation import SamplingParams
    from solvers import verify
    from solvers.extract import extract_code

    stops = set()
    if served.tokenizer is not None and served.tokenizer.eos_token_id is not None:
        stops.add(int(served.tokenizer.eos_token_id))
    params = SamplingParams(
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        stop_token_ids=tuple(sorted(stops)),
        seed=settings.seed,
    )

    async def judge(tally: Tally, completion: Any) -> None:
        text = completion.text
        if text is None:
            text = served.tokenizer.decode(list(completion.token_ids), skip_special_tokens=True)
        if completion.failed:
            status = "generation_error"
        else:
            outcome = await verify(pool, text, target, tally.program.answer)
            status = outcome.status
            code = extract_code(text)
            if outcome.correct and code is not None:
                tally.verified += 1
                key = _normalised(code)
                if key not in tally.seen_code and len(tally.kept) < settings.keep:
                    tally.seen_code.add(key)
                    tally.kept.append(_kept_row(tally, code, target.name, source_name, completion, outcome, settings))
        tally.attempts += 1
        tally.statuses[status] += 1
        if tally.attempts == settings.attempts:
            writer.finish(tally, source_name, target.name)
            _report(tally)

    tasks: list[asyncio.Task[None]] = []
    try:
        async for completion in served.backend.generate([p for _, p in ready], params, n=settings.attempts):
            tasks.append(asyncio.create_task(judge(ready[completion.prompt_index][0], completion)))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    for tally, _ in ready:  # a program the backend returned fewer samples for is finished with what came
        if tally.attempts < settings.attempts:
            writer.finish(tally, source_name, target.name)
            _report(tally)


def _kept_row(
    tally: Tally, code: str, target: str, source: str, completion: Any, outcome: Any, settings: Settings
) -> dict[str, Any]:
    program = tally.program
    return {
        "id": f"{program.id}:{target}:{completion.sample_index}",
        "source_id": program.id,
        "question": program.question,
        "completion": fenced(code),
        "solver": target,
        "source_solver": source,
        "answer": program.answer,
        "objective": outcome.objective,
        "correct": True,
        "attempt": completion.sample_index,
        "model": settings.model_label,
    }


def _report(tally: Tally) -> None:
    statuses = ", ".join(f"{k} {v}" for k, v in tally.statuses.most_common())
    print(
        f"{tally.program.id}: {tally.attempts} attempts, {tally.verified} verified, {len(tally.kept)} kept "
        f"({statuses})",
        flush=True,
    )


# ----------------------------------------------------------------------------------------------- files


def progress_path(output: Path) -> Path:
    return output.with_name(output.name + PROGRESS_SUFFIX)


def summary_path(output: Path) -> Path:
    return output.with_name(output.name + SUMMARY_SUFFIX)


def previous_progress(output: Path, source: str, target: str) -> dict[str, dict[str, Any]]:
    """The finished programs of an earlier run on the same OUT (by id); rewrites of unfinished programs are dropped
    from OUT. An OUT of another translation (other solvers) is refused."""
    from engine.records import cut_partial_line, read_jsonl

    progress = progress_path(output)
    if not progress.exists():
        if output.exists() and output.stat().st_size > 0:
            raise TranslateInputError(
                f"--output {output} already holds rows but no {progress.name}: not a translation's output; pick "
                "another --output"
            )
        return {}
    cut_partial_line(progress)
    rows = read_jsonl(progress)
    other = [r for r in rows if (r.get("from_solver"), r.get("to_solver")) != (source, target)]
    if other:
        raise TranslateInputError(
            f"--output {output} continues a translation {other[0].get('from_solver')} -> "
            f"{other[0].get('to_solver')}, not {source} -> {target}; pick another --output"
        )
    done = {str(r["id"]): r for r in rows}
    if output.exists():
        cut_partial_line(output)
        kept = read_jsonl(output)
        finished = [r for r in kept if str(r.get("source_id")) in done]
        if len(finished) < len(kept):
            tmp = output.with_name(output.name + ".tmp")
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in finished), encoding="utf-8")
            tmp.replace(output)
    return done


def summarize(rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """The yields over every finished program (this run's and an earlier one's)."""
    attempted = [r for r in rows if r["source_status"] == "correct"]
    attempts = sum(r["attempts"] for r in attempted)
    verified = sum(r["verified"] for r in attempted)
    with_kept = sum(1 for r in attempted if r["kept"] > 0)
    statuses: Counter[str] = Counter()
    for r in attempted:
        statuses.update(r["statuses"])
    return {
        **meta,
        "programs": len(rows),
        # why a program got no attempt: its source check's status under A, or prompt_too_long (it passed the check)
        "not_attempted": dict(Counter(r["source_status"] for r in rows if r["source_status"] != "correct")),
        "programs_attempted": len(attempted),
        "attempts": attempts,
        "attempts_verified": verified,
        "programs_with_kept": with_kept,
        "kept_rows": sum(r["kept"] for r in attempted),
        "yield_programs": with_kept / len(attempted) if attempted else 0.0,
        "yield_attempts": verified / attempts if attempts else 0.0,
        "target_statuses": dict(statuses.most_common()),
        "per_program": [{k: r[k] for k in ("id", "source_status", "attempts", "verified", "kept")} for r in rows],
    }


def summary_line(summary: dict[str, Any]) -> str:
    not_attempted = ", ".join(f"{n} {why}" for why, n in summary["not_attempted"].items()) or "none"
    return (
        f"{summary['from_solver']} -> {summary['to_solver']}: {summary['programs']} programs, "
        f"{summary['programs_attempted']} attempted (not: {not_attempted}); {summary['attempts']} attempts, "
        f"{summary['attempts_verified']} verified ({summary['yield_attempts']:.1%}); "
        f"{summary['programs_with_kept']} programs with a kept rewrite ({summary['yield_programs']:.1%}), "
        f"{summary['kept_rows']} rows kept"
    )


# ----------------------------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.translate", description=__doc__.split("\n\n")[0])
    p.add_argument("--from-solver", required=True, metavar="A", help="the solver the programs are written for")
    p.add_argument("--to-solver", required=True, metavar="B", help="the solver to rewrite them for")
    p.add_argument("--programs", type=Path, required=True, metavar="F", help="JSONL of verified programs")
    p.add_argument("--model", required=True, help="alias, HF directory, checkpoint or run, sglang:URL, openai:URL")
    p.add_argument("--output", type=Path, help="kept rewrites (default runs/translate/<A>-to-<B>.jsonl)")
    p.add_argument("--benchmark", nargs="+", default=[], metavar="B", help="benchmarks eval items' ids are in")
    p.add_argument("--attempts", type=int, default=4, help="rewrites sampled per program (default 4)")
    p.add_argument("--keep", type=int, default=1, help="distinct verified rewrites kept per program (default 1)")
    p.add_argument("--temperature", type=float, help="default 0.7 (0, greedy, when --attempts is 1)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--max-prompt-tokens", type=int, default=4096, help="longer prompts: the program is skipped")
    p.add_argument("--limit", type=int, help="first N usable programs")
    p.add_argument("--api-model", help="openai: the served model name")
    p.add_argument("--tokenizer", help="local/sglang: tokenizer for the prompts (default: the model's own)")
    p.add_argument("--batch-size", type=int, default=64, help="local backend: rows decoded together")
    p.add_argument("--workers", type=int, default=2, help="sandbox workers per pool")
    p.add_argument("--wall-s", type=float, default=30.0)
    p.add_argument("--memory-mb", type=int, default=2048)
    p.add_argument("--isolation", choices=ISOLATIONS, default="nsjail")
    p.add_argument("--seed", type=int, default=0)
    return p


def check_args(args: argparse.Namespace) -> None:
    for flag in ("attempts", "keep", "max_new_tokens", "max_prompt_tokens", "batch_size", "workers"):
        if getattr(args, flag) < 1:
            raise TranslateInputError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.limit is not None and args.limit < 1:
        raise TranslateInputError(f"--limit must be >= 1, got {args.limit}")
    if args.temperature is not None and not args.temperature >= 0:
        raise TranslateInputError(f"--temperature must be >= 0, got {args.temperature}")
    if args.output is not None and args.output.is_dir():
        raise TranslateInputError(f"--output {args.output} is a directory; give a .jsonl file path")


async def _run(args: argparse.Namespace, programs: list[Program], settings: Settings, output: Path) -> None:
    from engine.eval import load_solvers
    from engine.evaluation.models import open_model, parse_model

    source, target = load_solvers([args.from_solver])[0], load_solvers([args.to_solver])[0]
    spec = parse_model(args.model, api_model=args.api_model)
    async with open_model(spec, tokenizer=args.tokenizer, batch_size=args.batch_size) as served:
        writer = Writer(output)
        try:
            await translate(served, programs, source, target, settings, writer)
        finally:
            writer.close()


def run(args: argparse.Namespace) -> int:
    from engine.records import read_jsonl
    from solvers import get_solver

    check_args(args)
    for name in (args.from_solver, args.to_solver):
        get_solver(name, require_installed=False)  # UnknownSolverError (exit 2) lists the names
    output = args.output or Path("runs") / "translate" / f"{args.from_solver}-to-{args.to_solver}.jsonl"
    programs, skipped = read_programs(args.programs, args.from_solver, benchmarks=args.benchmark)
    reasons = ", ".join(f"{n} {r}" for r, n in skipped.most_common()) or "none"
    if not programs:
        raise TranslateInputError(f"no usable program in {args.programs} (skipped: {reasons})")
    programs = programs[: args.limit]
    done = previous_progress(output, args.from_solver, args.to_solver)
    todo = [p for p in programs if p.id not in done]
    print(
        f"programs: {len(programs)} from {args.programs} (skipped rows: {reasons}); {len(programs) - len(todo)} "
        f"already done in {output}, {len(todo)} to translate",
        flush=True,
    )
    temperature = args.temperature if args.temperature is not None else (0.0 if args.attempts == 1 else 0.7)
    settings = Settings(
        attempts=args.attempts,
        keep=args.keep,
        temperature=temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        max_prompt_tokens=args.max_prompt_tokens,
        seed=args.seed,
        workers=args.workers,
        wall_s=args.wall_s,
        memory_mb=args.memory_mb,
        isolation=args.isolation,
        model_label=args.model,
    )
    started = time.monotonic()
    if todo:
        asyncio.run(terminable(_run(args, todo, settings, output)))
    wanted = {p.id for p in programs}
    rows = [r for r in read_jsonl(progress_path(output)) if str(r["id"]) in wanted]
    meta = {
        "from_solver": args.from_solver,
        "to_solver": args.to_solver,
        "model": args.model,
        "programs_file": str(args.programs),
        "output": str(output),
        "attempts_per_program": args.attempts,
        "temperature": temperature,
        "max_new_tokens": args.max_new_tokens,
        "wall_s_this_run": round(time.monotonic() - started, 1),
    }
    summary = summarize(rows, meta)
    path = summary_path(output)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    print(summary_line(summary))
    print(f"wrote {output} (for python -m engine.sft --data {output}), {progress_path(output).name}, {path.name}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Bad input -> exit 2, an unusable environment -> exit 1, one line each (engine/cli.py)."""
    args = build_parser().parse_args(argv)
    from engine.records import StorageError

    return exit_code(
        lambda: run(args),
        bad_input=(TranslateInputError, ModelError),
        environment=(StorageError,),
        interrupted="finished programs are kept; run the same command again to continue",
    )


if __name__ == "__main__":
    sys.exit(main())
