"""The generator of EVOM's own word problems: procedural families, difficulty levels, exact ground truth.

    from engine.data.generator import generate_problems
    problems = generate_problems(100, families=["production", "knapsack"], difficulty="easy", seed=0)

Or from the shell: `python -m engine.data generate --family knapsack --difficulty hard --n 50 --seed 1
--output knap.jsonl`.

Difficulties, easiest first: intro (one or two variables, one or two constraints, small whole numbers; only
the families whose `difficulties` list it), easy, medium, hard. `python -m engine.data families` lists them.

Each problem has its own random stream, seeded by (seed, family, difficulty, per-family index), so the
same arguments give byte-identical problems and the first k problems of a run do not depend on n. The
ground truth is the optimum HiGHS proves at generation time (zero MIP gap); an instance drawn to be
infeasible is kept only if HiGHS proves it infeasible, and a feasible one only if it has a nonzero optimum.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from engine.data.benchmarks import DataError
from engine.data.families import FAMILIES
from engine.data.families.base import LEVELS, Family, Instance
from engine.data.lp import Solution, solve
from engine.data.problem import DIFFICULTIES, Problem

MAX_ATTEMPTS = 200


class GeneratorError(RuntimeError):
    """A family could not produce an instance with the asked-for status (a bug in that family)."""


def available_families() -> list[str]:
    return sorted(FAMILIES)


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise DataError(f"unknown problem family {name!r}; valid: {available_families()}") from None


def families_for(difficulty: str) -> list[str]:
    """The families that have `difficulty` (every family has easy, medium and hard; some have intro)."""
    _level(difficulty)
    return [name for name in available_families() if difficulty in FAMILIES[name].difficulties]


def register_family(family: Family) -> None:
    """Add a family (anything with `name`, `summary`, `difficulties` and `build(rng, level, *, infeasible)`)."""
    if family.name in FAMILIES:
        raise ValueError(f"problem family {family.name!r} is already registered")
    FAMILIES[family.name] = family


def generate_problem(family: str, difficulty: str, *, seed: int, index: int, infeasible_rate: float = 0.05) -> Problem:
    """Problem number `index` of `family` at `difficulty` for `seed`; a pure function of its arguments."""
    fam = get_family(family)
    level = _level(difficulty)
    _check_has(fam, difficulty)
    rng = random.Random(f"evom/{seed}/{family}/{difficulty}/{index}")
    infeasible = rng.random() < infeasible_rate
    instance, solution = _draw(fam, rng, level, infeasible)
    model = instance.model
    meta = {
        "generator": "evom",
        "seed": seed,
        "index": index,
        "template": instance.template,
        "status": solution.status,
        "sense": model.sense,
        "num_vars": len(model.variables),
        "num_integer_vars": sum(v.integer for v in model.variables.values()),
        "num_constraints": len(model.rows),
        "data": instance.data,
    }
    return Problem(
        id=f"gen-{family}-{difficulty}-s{seed}-{index}",
        question=instance.question,
        answer=solution.objective,
        source="generated",
        benchmark="generated",
        family=family,
        difficulty=difficulty,
        meta=meta,
    )


def generate_problems(
    n: int, *, families: Sequence[str] = (), difficulty: str = "easy", seed: int = 0, infeasible_rate: float = 0.05
) -> list[Problem]:
    """n problems, families taken in turn (all that have `difficulty` when `families` is empty)."""
    return list(iter_generated(n, families=families, difficulty=difficulty, seed=seed, infeasible_rate=infeasible_rate))


def iter_generated(
    n: int, *, families: Sequence[str] = (), difficulty: str = "easy", seed: int = 0, infeasible_rate: float = 0.05
) -> Iterator[Problem]:
    if n < 0:
        raise DataError(f"the number of problems must be >= 0, got {n}")
    if not 0.0 <= infeasible_rate <= 1.0:
        raise DataError(f"infeasible_rate must be in [0, 1], got {infeasible_rate}")
    _level(difficulty)
    names = list(dict.fromkeys(families)) or families_for(difficulty)  # a repeated name would repeat problems
    for name in names:
        _check_has(get_family(name), difficulty)
    for i in range(n):
        yield generate_problem(
            names[i % len(names)], difficulty, seed=seed, index=i // len(names), infeasible_rate=infeasible_rate
        )


def _draw(fam: Family, rng: random.Random, level: int, infeasible: bool) -> tuple[Instance, Solution]:
    # Redraws continue the same stream, so a rejected draw still leaves the result deterministic.
    for _ in range(MAX_ATTEMPTS):
        instance = fam.build(rng, level, infeasible=infeasible)
        solution = solve(instance.model)
        if infeasible and solution.status == "infeasible":
            return instance, solution
        if not infeasible and solution.status == "optimal" and abs(solution.objective or 0.0) > 1e-9:
            return instance, solution
    want = "infeasible instance" if infeasible else "feasible instance with a nonzero optimum"
    raise GeneratorError(f"family {fam.name!r} gave no {want} in {MAX_ATTEMPTS} draws at level {level}")


def _level(difficulty: str) -> int:
    if difficulty not in LEVELS:
        raise DataError(f"unknown difficulty {difficulty!r}; valid: {list(DIFFICULTIES)}")
    return LEVELS[difficulty]


def _check_has(fam: Family, difficulty: str) -> None:
    if difficulty not in fam.difficulties:
        raise DataError(
            f"problem family {fam.name!r} has no {difficulty!r} level (it has {list(fam.difficulties)}); "
            f"families with {difficulty!r}: {families_for(difficulty)}"
        )
