"""Knapsack: pick items (binary) of greatest total value within a capacity.

    max sum_j value_j x_j   s.t.  sum_j weight_j x_j <= capacity  (+ a second resource),  x binary
Intro: 2 items, one capacity (stated as a row); the answer needs the binary choice. Easy: 3-4 items.
Medium: 5-7 items, sometimes a second limit. Hard: 8-12 items, two limits, a conflict (at most one of two
items) and a dependency (one item requires another). Infeasible: items that must be taken weigh more
than the capacity (intro: one item that must be taken, stated as a row).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from engine.data import text
from engine.data.families.base import FunctionFamily, Instance
from engine.data.lp import LinearModel


@dataclass(frozen=True, kw_only=True)
class Theme:
    intro: str
    items: tuple[str, ...]
    value: str  # what is maximized
    value_unit: str  # "{cur}" for money
    weight: tuple[str, str]  # (resource, unit)
    second: tuple[str, str]
    holder: str


THEMES = (
    Theme(
        intro="A hiker is packing for a trip",
        holder="backpack",
        value="usefulness",
        value_unit="points",
        weight=("weight", "kg"),
        second=("volume", "liters"),
        items=(
            "a tent",
            "a stove",
            "a camera",
            "a water filter",
            "a first-aid kit",
            "a sleeping bag",
            "a rain jacket",
            "a book",
            "binoculars",
            "a lantern",
            "a fishing rod",
            "a hammock",
        ),
    ),
    Theme(
        intro="A city council is choosing projects for next year",
        holder="budget",
        value="expected benefit",
        value_unit="{cur}k",
        weight=("cost", "{cur}k"),
        second=("staff time", "weeks"),
        items=(
            "a bike lane",
            "a park renovation",
            "new street lights",
            "a library upgrade",
            "a playground",
            "a bus shelter program",
            "a recycling center",
            "a sports field",
            "a community garden",
            "a clinic extension",
            "a bridge repair",
            "a solar roof",
        ),
    ),
    Theme(
        intro="A cargo plane is being loaded",
        holder="plane",
        value="revenue",
        value_unit="{cur}",
        weight=("weight", "tons"),
        second=("floor space", "square meters"),
        items=(
            "container A",
            "container B",
            "container C",
            "container D",
            "container E",
            "container F",
            "container G",
            "container H",
            "container I",
            "container J",
            "container K",
            "container L",
        ),
    ),
    Theme(
        intro="A marketing team is choosing ad campaigns",
        holder="budget",
        value="expected reach",
        value_unit="thousand people",
        weight=("cost", "{cur}k"),
        second=("design hours", "hours"),
        items=(
            "a TV spot",
            "a radio ad",
            "a billboard",
            "a podcast sponsorship",
            "a newspaper ad",
            "a social media push",
            "an email campaign",
            "a magazine ad",
            "a cinema ad",
            "a bus wrap",
            "a search ad",
            "a trade show booth",
        ),
    ),
)


def build(rng: random.Random, level: int, infeasible: bool) -> Instance:
    theme = rng.choice(THEMES)
    n = (rng.randint(3, 4), rng.randint(5, 7), rng.randint(8, 12))[level]
    items = rng.sample(list(theme.items), n)
    weight = [rng.randint(2, 20) for _ in items]
    value = [rng.randint(5, 60) for _ in items]
    cap = max(max(weight), round(sum(weight) * rng.uniform(0.4, 0.65)))
    second = level == 2 or (level == 1 and rng.random() < 0.5)
    weight2 = [rng.randint(1, 12) for _ in items] if second else []
    cap2 = max(max(weight2), round(sum(weight2) * rng.uniform(0.45, 0.7))) if second else 0
    conflict, requires = ((), ())
    if level == 2:
        a, b, c, d = rng.sample(range(n), 4)
        conflict, requires = (a, b), (c, d)  # not both a and b; c only together with d
    must: list[int] = []
    if infeasible:
        order = sorted(range(n), key=lambda j: -weight[j])
        while sum(weight[j] for j in must) <= cap:
            must.append(order[len(must)])
        must.sort()

    m = LinearModel(sense="max")
    x = [m.var(f"x{j}", integer=True, ub=1, lb=1 if j in must else 0) for j in range(n)]
    m.add(dict(zip(x, weight, strict=True)), "<=", cap)
    if second:
        m.add(dict(zip(x, weight2, strict=True)), "<=", cap2)
    if conflict:
        m.add({x[conflict[0]]: 1, x[conflict[1]]: 1}, "<=", 1)
        m.add({x[requires[0]]: 1, x[requires[1]]: -1}, "<=", 0)
    m.objective(dict(zip(x, value, strict=True)))

    style = rng.randrange(3)
    q = _words(rng, style, theme, items, weight, value, cap, weight2, cap2, conflict, requires, must)
    data = {
        "items": items,
        "weight": weight,
        "value": value,
        "capacity": cap,
        "weight2": weight2,
        "capacity2": cap2,
        "conflict": list(conflict),
        "requires": list(requires),
        "must": must,
    }
    return Instance(question=q, model=m, data=data, template=f"{theme.holder}/{style}")


def _words(
    rng: random.Random,
    style: int,
    theme: Theme,
    items: list[str],
    weight: list[int],
    value: list[int],
    cap: int,
    weight2: list[int],
    cap2: int,
    conflict: tuple,
    requires: tuple,
    must: list[int],
) -> str:
    cur = text.currency(rng)

    def unit(u: str, v: int) -> str:
        return f"{cur(v)}k" if u == "{cur}k" else cur(v) if u == "{cur}" else text.qty(v, u)

    def has(j: int) -> str:
        parts = [f"{theme.weight[0]} {unit(theme.weight[1], weight[j])}"]
        if weight2:
            parts.append(f"{theme.second[0]} {unit(theme.second[1], weight2[j])}")
        return ", ".join([*parts, f"{theme.value} {unit(theme.value_unit, value[j])}"])

    limits = [f"The total {theme.weight[0]} may not exceed {unit(theme.weight[1], cap)}."]
    if weight2:
        limits.append(f"The total {theme.second[0]} may not exceed {unit(theme.second[1], cap2)}.")
    if conflict:
        limits.append(f"At most one of {items[conflict[0]]} and {items[conflict[1]]} can be chosen.")
        limits.append(
            f"{items[requires[0]][0].upper()}{items[requires[0]][1:]} can only be chosen if "
            f"{items[requires[1]]} is chosen too."
        )
    if must:
        limits.append(f"{text.capital(text.join([items[j] for j in must]))} must be included.")
    limits.append("Each option is either taken once or not at all.")
    table = text.bullets([f"{it}: {has(j)}" for j, it in enumerate(items)])
    if style == 0:
        return (
            f"{theme.intro}. The options are:\n{table}\n{' '.join(limits)}\n"
            f"Which options should be chosen to maximize the total {theme.value}? Give the maximum total."
        )
    if style == 1:
        per = " ".join(f"Choosing {it} gives {has(j)}." for j, it in enumerate(items))
        return (
            f"{theme.intro}, with {len(items)} candidates. {per} {' '.join(limits)} "
            f"What is the largest total {theme.value} that can be achieved?"
        )
    return (
        f"Select a subset of the following options to maximize total {theme.value} ({theme.intro.lower()}).\n"
        f"{table}\nConstraints: {' '.join(limits)}\nWhat is the optimal total {theme.value}?"
    )


def build_intro(rng: random.Random, infeasible: bool) -> Instance:
    theme = rng.choice(THEMES)
    items = rng.sample(list(theme.items), 2)
    weight = [rng.randint(2, 20) for _ in items]
    value = [rng.randint(5, 60) for _ in items]
    cap = rng.randint(min(weight), sum(weight) - 1)  # something fits, not everything
    must: list[int] = []
    if infeasible:
        j = rng.randrange(2)
        weight[j] = cap + rng.randint(1, 8)
        must = [j]

    m = LinearModel(sense="max")
    x = [m.var(f"x{j}", integer=True, ub=1) for j in range(2)]
    m.add(dict(zip(x, weight, strict=True)), "<=", cap)
    for j in must:
        m.add({x[j]: 1}, ">=", 1)
    m.objective(dict(zip(x, value, strict=True)))

    cur = text.currency(rng)

    def amount(u: str, v: int) -> str:
        return f"{cur(v)}k" if u == "{cur}k" else cur(v) if u == "{cur}" else text.qty(v, u)

    what, unit = theme.weight
    per = [
        f"{it}: {what} {amount(unit, weight[j])}, {theme.value} {amount(theme.value_unit, value[j])}"
        for j, it in enumerate(items)
    ]
    rules = [f"The total {what} may not exceed {amount(unit, cap)}."]
    if must:
        rules.append(f"{text.capital(items[must[0]])} must be included.")
    rules.append("Each option is either taken once or not at all.")
    in_units = {
        "{cur}k": f", in thousands of {cur.word}",
        "{cur}": f", in {cur.word}",
        "thousand people": ", in thousands of people",
    }.get(theme.value_unit, "")
    question = f"What is the maximum total {theme.value}{in_units}?"
    style = rng.randrange(3)
    if style == 0:
        q = f"{theme.intro}. The options are:\n{text.bullets(per)}\n{' '.join(rules)}\n{question}"
    elif style == 1:
        chosen = " ".join(f"Choosing {line.replace(':', ' gives', 1)}." for line in per)
        q = f"{theme.intro}, with 2 candidates. {chosen} {' '.join(rules)} {question}"
    else:
        q = f"{theme.intro}: {text.join(items)} are the two options.\n{text.bullets(per)}\n{' '.join(rules)} {question}"
    data = {
        "items": items,
        "weight": weight,
        "value": value,
        "capacity": cap,
        "weight2": [],
        "capacity2": 0,
        "conflict": [],
        "requires": [],
        "must": must,
    }
    return Instance(question=q, model=m, data=data, template=f"intro/{theme.holder}/{style}")


FAMILY = FunctionFamily(
    name="knapsack",
    summary="choose items (binary) of most value within capacities",
    builder=build,
    intro=build_intro,
)
