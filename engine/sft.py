"""Supervised fine-tuning on verified (prompt, completion) pairs: the cold start before RL under a new solver.

    python -m engine.sft --data runs/eval/x/items.jsonl --config configs/learn-cpu.yaml --epochs 3
    python -m engine.sft --data runs/learn-cpu/samples.jsonl translated.jsonl --name cold --lr 1e-5
    python -m engine.sft --data translated.jsonl --name cold --resume --epochs 5     # continue (or extend) the run
    python -m engine.eval --model runs/cold --config runs/cold/config.yaml --benchmark B     # its newest checkpoint
    python -m engine.run --config runs/cold/config.yaml --init-from runs/cold/checkpoints/step_000012 run.name=rl

Input rows (JSONL; every --data file may be of any of these kinds, row by row):

- engine.eval's items.jsonl: {"benchmark", "id", "completion", "correct"}. The question comes from the
  benchmarks its summary.json lists (or --benchmark); the row's "solver" gives the instructions.
- engine.run's samples.jsonl: {"problem_id", "solver", "text", "correct"}. The question comes from the run's
  training set (its config.yaml beside the file), the instructions from the row's solver (rows of older runs have
  none: the problem's own solver, else the run's solver.name).
- any JSONL (engine.translate writes these): "completion" (the assistant's full answer, e.g. a fenced program)
  with "question" (a problem, rendered as engine.run and engine.eval render it: the solver's instructions in
  the config's template, system message, worked example and answer prefix, through the chat template) or
  "prompt" (a user message sent through the chat template as is). Optional: "solver" (whose instructions a
  "question" row gets; default the config's solver.name), "correct" (rows with false are skipped).

Only correct rows are used; identical pairs count once. A completion must start with the config's answer prefix
when there is one (the prefix is part of the prompt, as in RL; the rest is trained on). The end-of-turn token
ends every completion, so the model learns to stop.

Loss: token-mean cross-entropy over the completion tokens of each optimizer step's batch (the prompt is masked),
through the RL learner (`learner.Learner` with `algorithm.policy_loss: sft`): the same packing (pairs of one
prompt share it), FSDP2 under torchrun, and checkpoints. The run directory runs/<name>/ holds config.yaml (the
run config: model, prompt, solver; what engine.eval --config and engine.run --config take), sft.json (these
settings and a digest of the pairs), metrics.jsonl (one row per step) and checkpoints/step_N. `--resume`
continues from the newest complete checkpoint exactly as an uninterrupted run (batches are a function of seed
and step); --epochs may grow on resume, the pairs, batch size, learning rate and seed may not change.

Under torchrun (`torchrun --nproc-per-node N -m engine.sft ...`) every rank steps through the same batches, the
learner splitting each between them, so the steps are those of one process up to float rounding; rank 0 alone
writes the run directory and prints. A resume needs the run's number of ranks (checkpoints hold per-rank state).

Bad input (a missing file, rows without the fields, no usable pair, a resume that does not fit) is one line on
stderr and exit 2, under torchrun too (every rank exits 2, one reports); a full disk exit 1; nothing already
written is removed. Ctrl-C and SIGTERM stop the run with
one line (exit 130 and 143, engine/cli.py), leaving whole metrics rows and complete checkpoints: `--resume`
continues it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.cli import exit_code, launch_rank, node_reports, rank0_decides, sigterm_raises
from engine.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from engine.data import Problem
    from engine.prompts import PromptBuilder
    from learner.distributed import DistContext

log = logging.getLogger("evom.sft")

SFT_FILE = "sft.json"
METRICS = "metrics.jsonl"
# Settings a resumed run must share with the run it continues (the batches and the schedule depend on them).
FIXED_ON_RESUME = ("pairs_digest", "batch_size", "lr", "warmup_steps", "seed")


class SftInputError(ValueError):
    """Bad input to engine.sft (exit 2); the message says what and what to do."""


@dataclass(frozen=True, kw_only=True)
class Pair:
    """One training pair before tokenization: where it came from, and either a question (rendered with a solver's
    instructions) or a literal user prompt."""

    where: str  # file:line
    completion: str
    question: str | None = None
    prompt: str | None = None
    solver: str | None = None


@dataclass(frozen=True, kw_only=True)
class Example:
    """A tokenized pair: the prompt's ids (not trained on) and the completion's, ending with end-of-turn."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]


# ----------------------------------------------------------------------------------------------- reading rows


class _Lookup:
    """The problems (question, answer) of rows that carry only an id: eval items and run samples, read once per
    source file."""

    def __init__(self, benchmarks: Sequence[str]) -> None:
        self.extra = list(benchmarks)
        self._eval: dict[Path, dict[tuple[str, str], Problem] | str] = {}
        self._runs: dict[Path, tuple[dict[str, Problem], str] | str] = {}

    def eval_problem(self, items_path: Path, benchmark: str, row_id: str) -> Problem:
        table = self._eval.get(items_path)
        if table is None:
            table = self._eval[items_path] = self._load_eval(items_path)
        if isinstance(table, str):
            raise _Skip(table)
        if (benchmark, row_id) in table:
            return table[(benchmark, row_id)]
        raise _Skip(f"id {row_id!r} of benchmark {benchmark!r} is in none of the benchmarks read")

    def _load_eval(self, items_path: Path) -> dict[tuple[str, str], Problem] | str:
        from engine.data import DataError, load_benchmark

        specs = list(self.extra)
        summary = items_path.parent / "summary.json"
        if summary.is_file():
            with contextlib.suppress(ValueError, AttributeError):
                specs += [str(s) for s in json.loads(summary.read_text(encoding="utf-8")).get("benchmarks", [])]
        if not specs:
            return f"eval items need their questions: no summary.json beside {items_path}; pass --benchmark"
        table: dict[tuple[str, str], Problem] = {}
        problems: list[str] = []
        for spec in dict.fromkeys(specs):
            try:
                bench = load_benchmark(_beside(spec, items_path))
            except DataError as exc:
                problems.append(f"{spec}: {exc}")
                continue
            table.update({(bench.name, p.id): p for p in bench.problems})
        if not table:
            return f"no benchmark of {items_path} could be read ({'; '.join(problems)}); pass --benchmark"
        return table

    def run_problem(self, samples_path: Path, problem_id: str) -> tuple[Problem, str]:
        """The problem of a run's sample and the solver it was verified with: the problem's own (a training row
        naming its solver), else the run's solver.name. Rows that record their `solver` say the same."""
        entry = self._runs.get(samples_path)
        if entry is None:
            entry = self._runs[samples_path] = self._load_run(samples_path)
        if isinstance(entry, str):
            raise _Skip(entry)
        problems, solver = entry
        if problem_id not in problems:
            raise _Skip(f"problem {problem_id!r} is not in the run's training set")
        problem = problems[problem_id]
        return problem, problem.solver or solver

    @staticmethod
    def _load_run(samples_path: Path) -> tuple[dict[str, Problem], str] | str:
        from engine.data import DataError, load_train

        here = samples_path.parent
        config = next((d / "config.yaml" for d in (here, here.parent) if (d / "config.yaml").is_file()), None)
        if config is None:
            return f"run samples need their run's config.yaml (beside {samples_path} or one level up)"
        try:
            cfg = load_config(config)
            bench = load_train(cfg.data)
        except (ConfigError, DataError) as exc:
            return f"the run config {config} cannot give the questions: {exc}"
        return {p.id: p for p in bench.problems}, cfg.solver.name


def _beside(spec: str, items_path: Path) -> str:
    """A relative benchmark path of an eval's summary.json is relative to where engine.eval ran: when it is not
    a file from here, the directories above the items file are tried."""
    path = Path(spec)
    if path.is_absolute() or path.exists() or len(path.parts) < 2:
        return spec
    for above in items_path.resolve().parents:
        if (above / path).is_file():
            return str(above / path)
    return spec


class _Skip(Exception):
    """A row that is read correctly but is not used (not correct, no question found...)."""


def _text(row: dict[str, Any], key: str) -> str | None:
    value = row.get(key)
    return value if isinstance(value, str) else None


def row_pair(row: dict[str, Any], where: str, path: Path, lookup: _Lookup) -> Pair:
    """One JSONL row as a Pair; _Skip (with the reason) for a row that is not used."""
    if row.get("correct") is False:
        raise _Skip("not correct")
    solver = _text(row, "solver")
    if "problem_id" in row and "text" in row:  # engine.run samples.jsonl
        if row.get("correct") is not True:
            raise _Skip("not correct")
        completion = _text(row, "text")
        if not completion:
            raise _Skip("empty 'text'")
        problem, run_solver = lookup.run_problem(path, str(row["problem_id"]))
        return Pair(where=where, completion=completion, question=problem.question, solver=solver or run_solver)
    completion = _text(row, "completion")
    if not completion or not completion.strip():
        raise _Skip("no 'completion' text (rows need 'completion' with 'question' or 'prompt')")
    if _text(row, "question"):
        return Pair(where=where, completion=completion, question=row["question"], solver=solver)
    if _text(row, "prompt"):
        return Pair(where=where, completion=completion, prompt=row["prompt"], solver=solver)
    if "benchmark" in row and "id" in row:  # engine.eval items.jsonl
        if row.get("correct") is not True:
            raise _Skip("not correct")
        problem = lookup.eval_problem(path, str(row["benchmark"]), str(row["id"]))
        return Pair(where=where, completion=completion, question=problem.question, solver=solver)
    raise _Skip("no 'question' or 'prompt' (nor an eval item's benchmark and id) to build the prompt from")


def read_pairs(paths: Sequence[Path], *, benchmarks: Sequence[str] = ()) -> tuple[list[Pair], Counter[str]]:
    """Every usable pair of the files, in file and line order, and the count of skipped rows per reason."""
    lookup = _Lookup(benchmarks)
    pairs: list[Pair] = []
    skipped: Counter[str] = Counter()
    for path in paths:
        if not path.is_file():
            raise SftInputError(f"--data {path}: file not found")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise SftInputError(f"--data {path} is not UTF-8 text ({exc.reason}); give a JSONL file") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                skipped["not a JSON line"] += 1
                continue
            if not isinstance(row, dict):
                skipped["not a JSON object"] += 1
                continue
            try:
                pairs.append(row_pair(row, f"{path}:{number}", path, lookup))
            except _Skip as exc:
                skipped[str(exc)] += 1
    return pairs, skipped


# ----------------------------------------------------------------------------------------------- tokenizing


def tokenize(pairs: Sequence[Pair], cfg: Config, tokenizer: Any) -> tuple[list[Example], Counter[str]]:
    """Token ids of each pair under the config's prompt settings; duplicates and pairs that do not fit are
    counted by reason and left out."""
    from engine.prompts import prompt_settings
    from solvers import UnknownSolverError, get_solver

    settings = prompt_settings(cfg.data, answer_format=cfg.solver.extract.format)
    builders: dict[str, PromptBuilder | str] = {}
    examples: list[Example] = []
    seen: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
    skipped: Counter[str] = Counter()
    end = tokenizer.eos_token_id
    if end is None:
        raise SftInputError(f"the tokenizer of {cfg.model.path} has no end-of-turn (eos) token to end completions")
    for pair in pairs:
        if pair.question is not None:
            name = pair.solver or cfg.solver.name
            builder = builders.get(name)
            if builder is None:
                try:
                    builder = builders[name] = _builder(tokenizer, get_solver(name, require_installed=False), settings)
                except UnknownSolverError:
                    builder = builders[name] = f"unknown solver {name!r}"
            if isinstance(builder, str):
                skipped[builder] += 1
                continue
            prompt = builder.build(pair.question).ids
            if prompt is None:
                skipped[f"prompt over data.max_prompt_tokens={settings.max_prompt_tokens}"] += 1
                continue
            prefix = settings.answer_prefix
        else:
            messages = [{"role": "user", "content": pair.prompt}]
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            prompt = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
            prefix = ""
        completion = pair.completion
        if prefix:
            if not completion.startswith(prefix):
                skipped["completion does not start with data.answer_prefix"] += 1
                continue
            completion = completion[len(prefix) :]
        ids = (*tokenizer(completion, add_special_tokens=False)["input_ids"], int(end))
        key = (tuple(prompt), ids)
        if key in seen:
            skipped["duplicate pair"] += 1
            continue
        seen.add(key)
        examples.append(Example(prompt_ids=tuple(prompt), completion_ids=ids))
    return examples, skipped


def _builder(tokenizer: Any, solver: Any, settings: Any) -> PromptBuilder:
    from engine.prompts import PromptBuilder

    return PromptBuilder(tokenizer, instructions=solver.instructions, settings=settings)


def digest(examples: Sequence[Example]) -> str:
    """A fingerprint of the tokenized pairs, in order: a resumed run must train on the same ones."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.prompt_ids, ex.completion_ids]).encode())
    return h.hexdigest()[:16]


def skip_summary(skipped: Counter[str]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in skipped.most_common()) or "none"


# ----------------------------------------------------------------------------------------------- training


@dataclass(frozen=True, kw_only=True)
class SftSettings:
    epochs: int
    batch_size: int
    lr: float
    warmup_steps: int
    save_every: int
    seed: int

    def check(self) -> None:
        for name in ("epochs", "batch_size", "save_every"):
            if getattr(self, name) < 1:
                raise SftInputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.warmup_steps < 0:
            raise SftInputError(f"need --lr > 0 and --warmup-steps >= 0, got {self.lr} and {self.warmup_steps}")


def learner_config(cfg: Config, settings: SftSettings) -> Any:
    """The run's learner settings (packing, micro-batch size, device, dtype) with the SFT objective: one optimizer
    step per batch, token-mean negative log-likelihood at temperature 1, no KL, no rollout correction."""
    from learner.config import AlgorithmConfig

    algorithm = AlgorithmConfig(policy_loss="sft", loss_agg="token-mean", temperature=1.0)
    return dataclasses.replace(
        cfg.learner,
        lr=settings.lr,
        warmup_steps=settings.warmup_steps,
        ppo_epochs=1,
        mini_batches=1,
        algorithm=algorithm,
    )


def steps_for(n: int, settings: SftSettings) -> int:
    return settings.epochs * -(-n // settings.batch_size)


def check_resume(run_dir: Path, record: dict[str, Any]) -> None:
    """A resumed run must train on the same pairs with the same batches and schedule."""
    path = run_dir / SFT_FILE
    if not path.is_file():
        raise SftInputError(f"--resume: {run_dir} holds no SFT run ({SFT_FILE} missing); drop --resume")
    saved = json.loads(path.read_text(encoding="utf-8"))
    ranks = saved.get("world_size", record["world_size"])  # sft.json of runs before it was recorded: not checked
    if ranks != record["world_size"]:
        raise SftInputError(
            f"--resume: {run_dir} was trained by {ranks} rank(s), this run has {record['world_size']}; its "
            f"checkpoints hold per-rank state: resume with torchrun --nproc-per-node {ranks}"
        )
    changed = [f"{k}: {saved.get(k)!r} -> {record[k]!r}" for k in FIXED_ON_RESUME if saved.get(k) != record[k]]
    if changed:
        raise SftInputError(
            f"--resume: {run_dir} was trained with other settings ({'; '.join(changed)}); use the same data and "
            "flags (only --epochs may change), or start a new run with --name"
        )


def train(cfg: Config, examples: Sequence[Example], settings: SftSettings, *, resume: bool, record: dict) -> Path:
    """Train and checkpoint; returns the run directory. Every rank (under torchrun) calls this."""
    from engine.data.stream import batch_at
    from engine.records import JsonlAppender, StorageError
    from engine.train import CHECKPOINTS, prune_checkpoints, truncate_records
    from learner.checkpoint import CheckpointWriteError, latest_checkpoint, load_checkpoint, save_checkpoint
    from learner.config import RolloutBatch
    from learner.distributed import init_distributed
    from learner.trainer import Learner

    run_dir = Path(cfg.run.output_dir) / cfg.run.name
    lcfg = learner_config(cfg, settings)
    ctx = init_distributed(lcfg.device)
    start_run(cfg, ctx, resume=resume, record=record)
    learner = Learner.from_pretrained(cfg.model.path, lcfg, ctx=ctx)
    start = 0
    checkpoint = latest_checkpoint(run_dir / CHECKPOINTS) if resume else None
    if checkpoint is not None:
        start = int(load_checkpoint(learner, checkpoint)["step"])
        if ctx.rank == 0:
            log.info("resumed from %s at step %d", checkpoint, start)
    total = steps_for(len(examples), settings)
    per_epoch = -(-len(examples) // settings.batch_size)
    if ctx.rank == 0:
        truncate_records(run_dir, keep_before_step=start)
    metrics = JsonlAppender(run_dir / METRICS) if ctx.rank == 0 else None
    try:
        for step in range(start, total):
            batch = batch_at(list(examples), settings.batch_size, step, seed=settings.seed)
            started = time.monotonic()
            out = learner.step(
                RolloutBatch(
                    prompts=[ex.prompt_ids for ex in batch],
                    responses=[ex.completion_ids for ex in batch],
                    advantages=[1.0] * len(batch),
                )
            )
            row = {
                "step": step,
                "epoch": step // per_epoch,
                "loss": out["loss"],
                "grad_norm": out["grad_norm"],
                "lr": out["lr"],
                "pairs": len(batch),
                "completion_tokens": out["response_tokens"],
                "tokens_per_s": out["tokens_per_s"],
                "time_train_s": time.monotonic() - started,
            }
            if metrics is not None:
                metrics.append(row)
                metrics.flush()
                print(
                    f"step {step + 1}/{total} | epoch {row['epoch'] + 1} | loss {row['loss']:.4f} | "
                    f"grad {row['grad_norm']:.3f} | {row['time_train_s']:.1f}s",
                    flush=True,
                )
            if (step + 1) % settings.save_every == 0 or step + 1 == total:
                directory = run_dir / CHECKPOINTS / f"step_{step + 1:06d}"
                try:
                    save_checkpoint(learner, directory, loop_state={"step": step + 1})
                except CheckpointWriteError as exc:
                    raise StorageError(str(exc)) from exc
                if ctx.rank == 0:
                    prune_checkpoints(run_dir / CHECKPOINTS, keep=cfg.run.keep_checkpoints)
    finally:
        if metrics is not None:
            metrics.close()
    if start >= total:
        log.info("run %s already has %d steps (%d asked): nothing to do", run_dir, start, total)
    return run_dir


def start_run(cfg: Config, ctx: DistContext, *, resume: bool, record: dict[str, Any]) -> None:
    """Rank 0 creates (or, resuming, checks) the run directory and writes sft.json. Its verdict reaches every rank
    before any waits on another: on an error every rank ends with its exit code, rank 0 alone reporting it
    (`engine.cli.rank0_decides`)."""
    from engine.records import StorageError
    from engine.train import prepare_run_dir

    def decide() -> None:
        try:
            prepare_run_dir(cfg, resume=resume)
            _write_json(Path(cfg.run.output_dir) / cfg.run.name / SFT_FILE, record)
        except StorageError:
            raise
        except RuntimeError as exc:  # RunError: a run is there (no --resume) or none is (with --resume)
            raise SftInputError(str(exc)) from None
        except OSError as exc:
            raise StorageError(f"cannot write {SFT_FILE} in {cfg.run.output_dir}/{cfg.run.name}: {exc}") from exc

    rank0_decides(ctx, decide, bad_input=(SftInputError,))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


# ----------------------------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m engine.sft",
        description="Fine-tune a model on verified (prompt, completion) pairs with the RL learner (cold start).",
        epilog="Rows: engine.eval items.jsonl ({benchmark, id, completion, correct}; questions from its "
        "summary.json's benchmarks or --benchmark), engine.run samples.jsonl ({problem_id, text, correct}; "
        "questions from the run's config.yaml), or any JSONL with 'completion' and 'question' (rendered with the "
        "solver's instructions and the config's prompt) or 'prompt' (a user message, as is); optional 'solver' "
        "and 'correct' (false: skipped). Overrides: section.key=value of the run config (engine/config.py), e.g. "
        "model.path=... learner.micro_batch_tokens=2048.",
    )
    p.add_argument("--data", type=Path, nargs="+", required=True, metavar="FILE", help="JSONL files of pairs")
    p.add_argument("--config", type=Path, help="run config: model, prompt, solver, learner (default: the defaults)")
    p.add_argument("--name", help="run name: runs/<name>/ (default: the config's run.name + '-sft')")
    p.add_argument("--benchmark", nargs="+", default=[], metavar="B", help="benchmarks the eval items' ids are in")
    p.add_argument("--epochs", type=int, default=3, help="passes over the pairs (default 3)")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per optimizer step (default 8)")
    p.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate (default 1e-5)")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--save-every", type=int, help="steps between checkpoints (default: the config's run.save_every)")
    p.add_argument("--resume", action="store_true", help="continue the run from its newest complete checkpoint")
    p.add_argument("overrides", nargs="*", metavar="section.key=value")
    return p


def prepare(args: argparse.Namespace) -> tuple[Config, list[Example], SftSettings, dict[str, Any]]:
    """The config, the tokenized pairs and the settings; every input error is raised here, before a model loads."""
    from learner.models import load_tokenizer

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        raise SftInputError(str(exc)) from None
    name = args.name or f"{cfg.run.name}-sft"
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=name))
    settings = SftSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        save_every=args.save_every or cfg.run.save_every,
        seed=cfg.run.seed,
    )
    settings.check()
    pairs, skipped = read_pairs(args.data, benchmarks=args.benchmark)
    files = ", ".join(str(p) for p in args.data)
    if not pairs:
        raise SftInputError(f"no usable (prompt, completion) pair in {files} (skipped: {skip_summary(skipped)})")
    examples, dropped = tokenize(pairs, cfg, load_tokenizer(cfg.model.path))
    skipped.update(dropped)
    if not examples:
        raise SftInputError(f"no pair of {files} is left after filtering (skipped: {skip_summary(skipped)})")
    record = {
        "data": [str(p) for p in args.data],
        "pairs": len(examples),
        "pairs_digest": digest(examples),
        "skipped": dict(skipped),
        **dataclasses.asdict(settings),
        "steps": steps_for(len(examples), settings),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
    }
    if args.resume:
        check_resume(Path(cfg.run.output_dir) / name, record)
    if launch_rank() == 0:
        print(f"pairs: {len(examples)} from {files} (skipped: {skip_summary(skipped)})", flush=True)
    return cfg, examples, settings, record


def run(args: argparse.Namespace) -> int:
    from engine.records import StorageError
    from learner.models import ModelNotFoundError

    try:
        cfg, examples, settings, record = prepare(args)
    except (SftInputError, ModelNotFoundError) as exc:
        raise node_reports(exc) from None
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def body() -> int:
        from learner.distributed import exit_rank, shutdown_distributed

        run_dir = train(cfg, examples, settings, resume=args.resume, record=record)
        left = shutdown_distributed()
        from learner.checkpoint import latest_checkpoint

        newest = latest_checkpoint(run_dir / "checkpoints")
        if launch_rank() == 0:
            print(
                f"done: {run_dir} (newest checkpoint {newest}); evaluate with python -m engine.eval --model "
                f"{run_dir} --config {run_dir / 'config.yaml'}, start RL with python -m engine.run --config "
                f"{run_dir / 'config.yaml'} --init-from {newest} run.name=<new name>"
            )
        if left:
            exit_rank(0)
        return 0

    return exit_code(
        body,
        bad_input=(SftInputError,),
        environment=(StorageError,),
        interrupted="the run keeps its complete checkpoints; continue with --resume",
    )


def _is_override(text: str) -> bool:
    key = text.split("=", 1)[0]
    return "=" in text and "." in key and "/" not in key


def main(argv: Sequence[str] | None = None) -> int:
    """Bad input -> exit 2 (one line), an unusable environment or a full disk -> exit 1 (engine/cli.py)."""
    args = build_parser().parse_args(argv)
    # `--data a.jsonl model.path=x`: the overrides after the files end up among them
    overrides = [str(p) for p in args.data if _is_override(str(p)) and not p.exists()]
    args.data = [p for p in args.data if str(p) not in overrides]
    args.overrides = [*overrides, *args.overrides]
    if not args.data:
        print("error: --data needs at least one JSONL file", file=sys.stderr)
        return 2
    from learner.models import ModelNotFoundError

    def body() -> int:
        with sigterm_raises():  # SIGTERM stops the run as Ctrl-C does: between whole rows and checkpoints
            return run(args)

    return exit_code(body, bad_input=(SftInputError, ModelNotFoundError), interrupted="nothing was trained yet")


if __name__ == "__main__":
    sys.exit(main())
