"""Assignment: give each task to one worker (binary x_wt), each worker at most one task, at best total score.

    opt sum_wt score_wt x_wt   s.t.  sum_w x_wt = 1 (each task),  sum_t x_wt <= 1 (each worker),  x binary
No intro level: two workers and two tasks already need 4 binaries and 4 constraints. Easy: 2 workers x 2
tasks. Medium: 3 workers x 3 tasks, or 4 workers for 3 tasks, with one worker not qualified for one task.
Hard: generalized assignment, 3-4 workers x 5-6 tasks, each worker with an hour budget the tasks assigned
to them must fit in. The sense is min (cost, time) or max (quality) by theme. Infeasible: a task no
worker is qualified for (easy, medium) or hour budgets below the work (hard).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from engine.data import text
from engine.data.families.base import FunctionFamily, Instance
from engine.data.lp import LinearModel


@dataclass(frozen=True, kw_only=True)
class Theme:
    setting: str
    workers: str  # plural
    tasks: tuple[str, ...]
    task_word: str
    score: str  # what the number measures
    unit: str  # "{cur}" for money
    sense: str
    lo: int
    hi: int


THEMES = (
    Theme(
        setting="A consulting firm",
        workers="consultants",
        task_word="project",
        score="cost",
        unit="{cur}",
        sense="min",
        lo=5,
        hi=40,
        tasks=(
            "the audit",
            "the website redesign",
            "the market study",
            "the tax review",
            "the data migration",
            "the training program",
        ),
    ),
    Theme(
        setting="A machine shop",
        workers="machines",
        task_word="job",
        score="processing time",
        unit="minutes",
        sense="min",
        lo=10,
        hi=60,
        tasks=("job J1", "job J2", "job J3", "job J4", "job J5", "job J6"),
    ),
    Theme(
        setting="A translation agency",
        workers="translators",
        task_word="document",
        score="quality score",
        unit="points",
        sense="max",
        lo=40,
        hi=99,
        tasks=(
            "the contract",
            "the user manual",
            "the press release",
            "the brochure",
            "the patent",
            "the annual report",
        ),
    ),
    Theme(
        setting="A delivery company",
        workers="drivers",
        task_word="route",
        score="delivery time",
        unit="minutes",
        sense="min",
        lo=20,
        hi=90,
        tasks=(
            "the north route",
            "the south route",
            "the east route",
            "the west route",
            "the airport route",
            "the harbor route",
        ),
    ),
)


def build(rng: random.Random, level: int, infeasible: bool) -> Instance:
    theme = rng.choice(THEMES)
    n_w, n_t = ((2, 2), (rng.choice((3, 4)), 3), (rng.randint(3, 4), rng.randint(5, 6)))[level]
    workers = (
        text.sample(rng, text.PEOPLE, n_w)
        if theme.workers != "machines"
        else [f"machine M{k}" for k in range(1, n_w + 1)]
    )
    tasks = rng.sample(list(theme.tasks), n_t)
    score = [[rng.randint(theme.lo, theme.hi) for _ in tasks] for _ in workers]
    banned: set[tuple[int, int]] = set()
    if level == 1:
        banned.add((rng.randrange(n_w), rng.randrange(n_t)))
    hours = [rng.randint(2, 8) for _ in tasks]
    budget = []
    if level == 2:
        total = sum(hours)
        budget = [max(max(hours), round(total / n_w * rng.uniform(1.1, 1.5))) for _ in workers]
    if infeasible:
        if level == 2:
            budget = [max(1, (sum(hours) - 1) // n_w - rng.randint(0, 2)) for _ in workers]
        else:
            j = rng.randrange(n_t)
            banned |= {(i, j) for i in range(n_w)}

    m = LinearModel(sense=theme.sense)
    x = {(i, j): m.var(f"x{i}_{j}", integer=True, ub=1) for i in range(n_w) for j in range(n_t) if (i, j) not in banned}
    for j in range(n_t):
        m.add({x[i, j]: 1 for i in range(n_w) if (i, j) in x}, "==", 1)
    for i in range(n_w):
        row = {x[i, j]: (hours[j] if budget else 1) for j in range(n_t) if (i, j) in x}
        if row:
            m.add(row, "<=", budget[i] if budget else 1)
    m.objective({v: score[i][j] for (i, j), v in x.items()})

    style = rng.randrange(3)
    q = _words(rng, style, theme, workers, tasks, score, banned, hours, budget)
    data = {
        "workers": workers,
        "tasks": tasks,
        "score": score,
        "sense": theme.sense,
        "banned": sorted([i, j] for i, j in banned),
        "hours": hours if budget else [],
        "budget": budget,
    }
    return Instance(question=q, model=m, data=data, template=f"{theme.workers}/{style}")


def _words(
    rng: random.Random,
    style: int,
    theme: Theme,
    workers: list[str],
    tasks: list[str],
    score: list[list[int]],
    banned: set[tuple[int, int]],
    hours: list[int],
    budget: list[int],
) -> str:
    cur = text.currency(rng)
    val = (lambda v: cur(v)) if theme.unit == "{cur}" else (lambda v: text.qty(v, theme.unit))
    best = "lowest" if theme.sense == "min" else "highest"
    aim = "minimize" if theme.sense == "min" else "maximize"
    rules = [f"{workers[i][0].upper()}{workers[i][1:]} cannot take {tasks[j]}." for i, j in sorted(banned)]
    if budget:
        one = theme.workers[:-1]
        work = text.join([f"{t} {text.qty(h, 'hours')}" for t, h in zip(tasks, hours, strict=True)])
        avail = text.join([f"{w} {text.qty(b, 'hours')}" for w, b in zip(workers, budget, strict=True)])
        rules.append(
            f"Each {one} may take several {theme.task_word}s, as long as the total workload of the "
            f"{theme.task_word}s given to one {one} fits within that {one}'s available hours. Workload: {work}. "
            f"Available hours: {avail}."
        )
    else:
        rules.append(f"Each of the {theme.workers} can take at most one {theme.task_word}.")
    rules.append(f"Every {theme.task_word} must be given to exactly one of the {theme.workers}.")
    if style == 0:
        per = " ".join(
            f"If {w} takes {t}, the {theme.score} is {val(score[i][j])}."
            for i, w in enumerate(workers)
            for j, t in enumerate(tasks)
        )
        head = f"{theme.setting} must assign {text.join(tasks)} to its {theme.workers} {text.join(workers)}."
        return f"{head} {per} {' '.join(rules)} What is the {best} possible total {theme.score}?"
    table = text.bullets(
        [f"{w}: " + ", ".join(f"{t} {val(score[i][j])}" for j, t in enumerate(tasks)) for i, w in enumerate(workers)]
    )
    if style == 1:
        return (
            f"{theme.setting} has {len(workers)} {theme.workers} and {len(tasks)} {theme.task_word}s. The "
            f"{theme.score} of each pairing is:\n{table}\n{' '.join(rules)}\n"
            f"Find the assignment that {aim}s the total {theme.score}, and report that total."
        )
    return (
        f"Assign {theme.task_word}s to {theme.workers} for {theme.setting[0].lower()}{theme.setting[1:]} so as "
        f"to {aim} the total {theme.score}.\n{table}\n{' '.join(rules)}\nWhat is the optimal total?"
    )


FAMILY = FunctionFamily(
    name="assignment", summary="assign tasks to workers (binary), min cost or max score", builder=build
)
