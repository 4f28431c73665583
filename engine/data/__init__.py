"""Problems for training and evaluation: benchmark files, Hugging Face datasets, and EVOM's own generator.

    from engine.data import load_benchmark, generate_problems, iter_batches, load_train
    bench = load_benchmark("nl4opt_clean_llmopt")          # Benchmark(name, problems, report)
    problems = generate_problems(64, families=["knapsack"], difficulty="easy", seed=0)
    batch = next(iter_batches(problems, 4, seed=0))

Shell: `python -m engine.data generate ...`, `python -m engine.data check FILE.jsonl`,
`python -m engine.data families` (see `engine/data/__main__.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine.data.benchmarks import (
    Benchmark,
    BenchmarkNotFound,
    DataError,
    LoadReport,
    find_benchmarks_dir,
    known_benchmarks,
    load_benchmark,
    load_hf_dataset,
    read_benchmark,
    resolve_benchmark,
)
from engine.data.generator import (
    GeneratorError,
    available_families,
    generate_problem,
    generate_problems,
    get_family,
    iter_generated,
    register_family,
)
from engine.data.problem import DIFFICULTIES, Problem
from engine.data.stream import batch_at, epoch_order, iter_batches, iter_epoch
from solvers.rows import BadRow

if TYPE_CHECKING:
    from engine.config import DataConfig

__all__ = [
    "DIFFICULTIES",
    "BadRow",
    "Benchmark",
    "BenchmarkNotFound",
    "DataError",
    "GeneratorError",
    "LoadReport",
    "Problem",
    "assign_solvers",
    "available_families",
    "batch_at",
    "epoch_order",
    "find_benchmarks_dir",
    "generate_problem",
    "generate_problems",
    "get_family",
    "iter_batches",
    "iter_epoch",
    "iter_generated",
    "known_benchmarks",
    "load_benchmark",
    "load_eval",
    "load_hf_dataset",
    "load_train",
    "read_benchmark",
    "register_family",
    "resolve_benchmark",
]

GENERATED = "generated"


def load_train(cfg: DataConfig) -> Benchmark:
    """The training set of a `data` config section: generated problems, or every valid row of a file/dataset.

    `num_problems`, `families` and `difficulty` apply to generated problems only; a file is used whole. A set
    with no usable problem is a DataError here, before a run loads its model.
    """
    bench = _generated(cfg) if cfg.train == GENERATED else _load(cfg.train, cfg)
    if not bench.problems:
        raise DataError(f"no usable problems ({bench.report.summary()}); check data.train")
    return bench


def load_eval(cfg: DataConfig) -> list[Benchmark]:
    return [_load(spec, cfg) for spec in cfg.eval]


def _load(spec: str, cfg: DataConfig) -> Benchmark:
    return load_benchmark(spec, benchmarks_dir=cfg.benchmarks_dir, split=cfg.hf_split)


def _generated(cfg: DataConfig) -> Benchmark:
    problems = generate_problems(
        cfg.num_problems,
        families=cfg.families,
        difficulty=cfg.difficulty,
        seed=cfg.seed,
        infeasible_rate=cfg.infeasible_rate,
    )
    numeric = sum(p.answer is not None for p in problems)
    report = LoadReport(source=GENERATED, rows=len(problems), loaded=len(problems), numeric=numeric, bad=())
    return Benchmark(name=GENERATED, problems=tuple(problems), report=report)


def assign_solvers(problems: Sequence[Problem], default: str) -> Sequence[Problem]:
    """`problems` unchanged when none names a solver (a single-solver run); otherwise each one that names none
    takes `default` (the run's solver.name), so that every problem is verified and counted under its solver."""
    if not any(p.solver for p in problems):
        return problems
    return [p if p.solver else dataclasses.replace(p, solver=default) for p in problems]
