"""Train a model with execution-verified RL: `python -m engine.run [--config FILE] [section.key=value ...]`.

    python -m engine.run --dry-run                        # print the resolved config, check model/solver/data/sandbox
    python -m engine.run rollout.group_size=8 run.name=x  # overrides, validated against engine/config.py
    torchrun --nproc-per-node 2 -m engine.run --config configs/...yaml

Bad input (a missing config file, an unknown key, a wrong type, a missing data file) is reported in one line with
exit code 2, an unusable environment (no sandbox, a solver package missing, a full disk) with exit code 1; Ctrl-C
and SIGTERM stop the run between writes (exit 130 and 143) and `--resume` continues it (engine/cli.py). Under
torchrun rank 0 alone checks the run directory (an existing run without --resume, a --resume with nothing to
continue or another number of ranks): on an error every rank exits with its code and rank 0 alone reports it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from engine.cli import exit_code, launch_rank, node_reports, terminable
from engine.config import Config, ConfigError, load_config, to_dict

if TYPE_CHECKING:
    from engine.data import Benchmark

T = TypeVar("T")

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


@dataclass(frozen=True, kw_only=True)
class Check:
    name: str
    ok: bool
    detail: str


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m engine.run",
        description="Execution-verified RL for optimization modeling: generate programs, verify them in the "
        "sandbox with a real solver, and update the model with GRPO/DAPO.",
        epilog="Overrides: section.key=value, e.g. rollout.group_size=8 solver.name=ortools learner.lr=1e-6. "
        "Sections: " + ", ".join(f.name for f in dataclasses.fields(Config)),
    )
    parser.add_argument("--config", type=Path, default=None, help=f"YAML config (default: {DEFAULT_CONFIG.name})")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and check the setup")
    parser.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        metavar="CHECKPOINT",
        help="start from the weights of another run's checkpoint (e.g. adapt a policy to another solver.name)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar (the per-step lines stay)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    return parser.parse_intermixed_args(argv)


def check_model(cfg: Config) -> Check:
    from learner.models import EMBEDDED, ModelNotFoundError, cache_dir, gguf_location, resolve_model_path

    path = cfg.model.path
    try:
        if path in EMBEDDED:
            spec = EMBEDDED[path]
            cached = cache_dir() / spec.cache_name
            if (cached / "config.json").is_file():
                return Check(name="model", ok=True, detail=f"{path}: cached at {cached}")
            detail = f"{path}: GGUF at {gguf_location(spec)} (converted on first use)"
            return Check(name="model", ok=True, detail=detail)
        from transformers import AutoConfig

        resolved = resolve_model_path(path)
        arch = AutoConfig.from_pretrained(resolved).model_type
        return Check(name="model", ok=True, detail=f"{path}: {arch}")
    except (ModelNotFoundError, OSError, ValueError) as exc:
        return Check(name="model", ok=False, detail=str(exc).splitlines()[0])


def check_solver(cfg: Config) -> Check:
    from solvers import SolverUnavailableError, UnknownSolverError, get_solver

    try:
        solver = get_solver(cfg.solver.name)
    except (UnknownSolverError, SolverUnavailableError) as exc:
        return Check(name="solver", ok=False, detail=str(exc))
    return Check(name="solver", ok=True, detail=f"{solver.name}: {solver.package} importable")


def _data_detail(bench: Benchmark) -> str:
    report = bench.report
    detail = f"{report.loaded} problems ({report.numeric} with an optimum, {report.null} without)"
    if report.bad:
        detail += f", {len(report.bad)} bad rows skipped (python -m engine.data check {report.source} lists them)"
    return detail


def check_train_data(cfg: Config) -> Check:
    """Load the training set as the run does: a file is read whole, generated problems are generated."""
    from engine.data import DataError, load_train
    from solvers import SolverUnavailableError, get_solver

    try:
        bench = load_train(cfg.data)  # refuses a set without a usable problem (or naming an unknown solver)
    except DataError as exc:
        return Check(name="train", ok=False, detail=f"data.train={cfg.data.train}: {exc}")
    detail = f"{bench.report.source}: {_data_detail(bench)}"
    if any(p.solver for p in bench.problems):  # rows naming their solver: the rest take solver.name
        counts = Counter(p.solver or cfg.solver.name for p in bench.problems)
        detail += "; solvers: " + ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
        for name in sorted(counts):
            try:
                get_solver(name)
            except SolverUnavailableError as exc:
                return Check(name="train", ok=False, detail=f"data.train={cfg.data.train}: {exc}")
    return Check(name="train", ok=True, detail=detail)


def check_eval_data(cfg: Config) -> Check:
    """Load each eval set as the run does (`engine.data.load_eval`: benchmarks_dir and hf_split apply)."""
    from engine.data import DataError, load_eval

    if not cfg.data.eval:
        return Check(name="eval", ok=True, detail="none (data.eval is empty)")
    details = []
    for spec in cfg.data.eval:
        try:
            (bench,) = load_eval(dataclasses.replace(cfg.data, eval=[spec]))
        except DataError as exc:
            return Check(name="eval", ok=False, detail=f"data.eval {spec}: {exc}")
        if not bench.problems:
            detail = f"data.eval {spec}: no usable problems ({bench.report.summary()})"
            return Check(name="eval", ok=False, detail=detail)
        details.append(f"{bench.report.source}: {_data_detail(bench)}")
    return Check(name="eval", ok=True, detail="; ".join(details))


def check_sandbox(cfg: Config) -> Check:
    """Start a one-worker pool with the solver's preload and run a trivial program in it."""
    from sandbox import SandboxPool, SandboxUnavailable
    from solvers import SolverUnavailableError, UnknownSolverError, get_solver

    try:
        preload = get_solver(cfg.solver.name).preload
    except (UnknownSolverError, SolverUnavailableError):
        preload = ()

    async def probe() -> str:
        limits = dataclasses.replace(cfg.sandbox.limits, wall_s=min(cfg.sandbox.limits.wall_s, 10.0))
        async with SandboxPool(workers=1, limits=limits, preload=preload, isolation=cfg.sandbox.isolation) as pool:
            result = await pool.run("print(6 * 7)")
        return result.stdout.strip() if result.status == "ok" else f"{result.status}: {result.stderr.strip()[-200:]}"

    try:
        answer = asyncio.run(probe())
    except SandboxUnavailable as exc:
        return Check(name="sandbox", ok=False, detail=str(exc))
    label = "nsjail" if cfg.sandbox.isolation == "nsjail" else "process (UNSAFE: no jail; development only)"
    if answer != "42":
        return Check(name="sandbox", ok=False, detail=f"isolation={label}: a test program failed ({answer})")
    return Check(name="sandbox", ok=True, detail=f"isolation={label}, preload {', '.join(preload) or 'none'}: ran")


# Cheap checks of everything a run reads before its first step (the sandbox, the slowest, last).
CHECKS: tuple[Callable[[Config], Check], ...] = (
    check_model,
    check_solver,
    check_train_data,
    check_eval_data,
    check_sandbox,
)


def dry_run(cfg: Config) -> int:
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    checks = [check(cfg) for check in CHECKS]
    for c in checks:
        print(f"check {c.name:8s} {'ok  ' if c.ok else 'FAIL'} {c.detail}")
    return 0 if all(c.ok for c in checks) else 1


def main(argv: list[str] | None = None) -> int:
    """Bad input -> exit 2, unusable environment -> exit 1, one line each (see engine/cli.py)."""
    args = parse_args(argv)
    return exit_code(lambda: command(args), bad_input=(ConfigError,), interrupted="nothing was started")


def command(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config or DEFAULT_CONFIG, args.overrides)
    except ConfigError as exc:
        raise node_reports(exc) from None
    if args.dry_run:
        return dry_run(cfg)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return train_cli(cfg, resume=args.resume, init_from=args.init_from, progress=not args.quiet)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on uvloop when it is installed (faster streams and subprocess pipes), asyncio's loop otherwise.
    SIGTERM unwinds it as Ctrl-C does (`engine.cli.terminable`)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(terminable(coro))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(terminable(coro))


def train_cli(cfg: Config, *, resume: bool, init_from: Path | None, progress: bool) -> int:
    """Train and write the report; the project's errors become one line on stderr (exit 2 and 1), any other
    exception (a bug) keeps its traceback.

    RunError and ModelNotFoundError are imported here, not by main: their modules import torch."""
    from engine.records import StorageError
    from engine.train import RunError
    from learner.models import ModelNotFoundError

    return exit_code(
        lambda: _train(cfg, resume=resume, init_from=init_from, progress=progress),
        bad_input=(RunError, ModelNotFoundError),
        environment=(StorageError,),
        interrupted="the run directory keeps every finished step; continue with --resume",
    )


def _train(cfg: Config, *, resume: bool, init_from: Path | None, progress: bool) -> int:
    from engine.report import write_report
    from engine.train import train
    from learner.distributed import exit_rank, shutdown_distributed

    run_dir = run_async(train(cfg, resume=resume, init_from=init_from, progress=progress))
    left = shutdown_distributed()  # under torchrun: every rank is done, so they leave the process group together
    if launch_rank() == 0:
        report = write_report(run_dir)
        print(f"done: {run_dir} (metrics.jsonl, samples.jsonl, checkpoints/, plots in {report})")
    if left:
        exit_rank(0)  # past the process group's teardown at interpreter exit (see exit_rank)
    return 0


if __name__ == "__main__":
    sys.exit(main())
