"""Diet and blending: buy the cheapest mix of foods or ingredients that meets nutrient requirements.

    min sum_j cost_j x_j   s.t.  sum_j content_ij x_j >= need_i,  sum_j limit_j x_j <= cap,  x_j <= max_j
Intro: 2 foods, 1 nutrient requirement, sometimes a limit on one food, small numbers, stated as rows;
whole units only where the LP optimum is already whole. Easy: 2 foods, 2 nutrients. Medium: 3-4 foods,
2-3 nutrients, one upper limit on a nutrient. Hard: 5-6 foods, 3-4 nutrients, the upper limit, purchase
caps, whole units. Infeasible: purchase caps too small for one requirement (intro: a cap on the total
amount bought, `max_total`, too small for the requirement).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from engine.data import text
from engine.data.families.base import FunctionFamily, Instance, integer_share, whole_at_intro
from engine.data.lp import LinearModel


@dataclass(frozen=True, kw_only=True)
class Theme:
    who: str
    goal: str
    items: tuple[str, ...]
    unit: tuple[str, str]  # (singular, plural) of what is bought
    nutrients: tuple[tuple[str, str, int], ...]  # (nutrient, unit, scale of the random content)
    limited: tuple[str, str, int]  # a nutrient with an upper bound
    item_word: str


THEMES = (
    Theme(
        who="A student on a budget",
        goal="a daily meal plan",
        item_word="food",
        items=("oatmeal", "milk", "eggs", "brown rice", "lentils", "chicken", "spinach", "yogurt", "peanut butter"),
        unit=("serving", "servings"),
        nutrients=(
            ("protein", "grams", 2),
            ("fiber", "grams", 1),
            ("calcium", "milligrams", 20),
            ("vitamin C", "milligrams", 5),
            ("iron", "milligrams", 1),
        ),
        limited=("sodium", "milligrams", 50),
    ),
    Theme(
        who="A poultry farm",
        goal="a feed blend for its chickens",
        item_word="ingredient",
        items=("corn", "soybean meal", "oats", "fish meal", "alfalfa", "barley", "wheat bran"),
        unit=("kg", "kg"),
        nutrients=(("protein", "units", 3), ("fat", "units", 1), ("fiber", "units", 2), ("minerals", "units", 1)),
        limited=("salt", "grams", 2),
    ),
    Theme(
        who="A pharmacy",
        goal="a daily supplement pack",
        item_word="tablet type",
        items=("Vitamax", "NutriPlus", "DailyCore", "OmegaOne", "ZincBoost", "IronMax"),
        unit=("tablet", "tablets"),
        nutrients=(
            ("vitamin A", "units", 5),
            ("vitamin D", "units", 4),
            ("zinc", "milligrams", 2),
            ("iron", "milligrams", 3),
        ),
        limited=("sugar", "grams", 1),
    ),
    Theme(
        who="A garden center",
        goal="a fertilizer blend for a large lawn",
        item_word="fertilizer",
        items=("GrowFast", "GreenMax", "TurfPro", "RootRich", "LeafPlus", "SoilBoost"),
        unit=("bag", "bags"),
        nutrients=(("nitrogen", "kg", 2), ("phosphate", "kg", 1), ("potash", "kg", 2), ("sulfur", "kg", 1)),
        limited=("chloride", "kg", 1),
    ),
)


def build(rng: random.Random, level: int, infeasible: bool) -> Instance:
    integer = rng.random() < integer_share(level)
    theme = rng.choice(THEMES)
    n_items = (2, rng.randint(3, 4), rng.randint(5, 6))[level]
    n_nutr = (2, rng.randint(2, 3), rng.randint(3, 4))[level]
    items = rng.sample(list(theme.items), n_items)
    nutrients = rng.sample(list(theme.nutrients), n_nutr)
    cost = [rng.randint(1, 12) for _ in items]
    low = 1 if level == 0 else 0
    content = []
    for _, _, scale in nutrients:
        row = [rng.randint(low, 9) * scale for _ in items]
        if not any(row):
            row[rng.randrange(n_items)] = rng.randint(1, 9) * scale
        content.append(row)
    plan = [rng.randint(1, 8) for _ in items]  # a feasible purchase the requirements are built around
    need = [max(1, math.floor(_dot(row, plan) * rng.uniform(0.6, 1.0))) for row in content]
    limit_row: list[int] = []
    limit_cap = 0
    if level >= 1:
        limit_row = [rng.randint(0, 9) * theme.limited[2] for _ in items]
        limit_cap = math.ceil(_dot(limit_row, plan) * rng.uniform(1.0, 1.5)) + 1
    max_buy: dict[int, int] = {}
    if level == 2:
        max_buy = {j: plan[j] + rng.randint(0, 4) for j in rng.sample(range(n_items), rng.randint(2, n_items))}
    if infeasible:
        max_buy = {j: rng.randint(1, 4) for j in range(n_items)}
        i = rng.randrange(n_nutr)
        need[i] = sum(a * max_buy[j] for j, a in enumerate(content[i])) + rng.randint(1, 10)

    m = LinearModel(sense="min")
    xs = [m.var(f"x{j}", integer=integer, ub=max_buy.get(j, float("inf"))) for j in range(n_items)]
    for row, r in zip(content, need, strict=True):
        m.add(dict(zip(xs, row, strict=True)), ">=", r)
    if limit_row:
        m.add(dict(zip(xs, limit_row, strict=True)), "<=", limit_cap)
    m.objective(dict(zip(xs, cost, strict=True)))
    style = rng.randrange(3)
    return Instance(
        question=_words(
            rng, style, theme, items, nutrients, cost, content, need, limit_row, limit_cap, max_buy, integer
        ),
        model=m,
        template=f"{theme.item_word}/{style}",
        data={
            "items": items,
            "nutrients": [n[0] for n in nutrients],
            "cost": cost,
            "content": content,
            "need": need,
            "limited": theme.limited[0] if limit_row else None,
            "limit_row": limit_row,
            "limit_cap": limit_cap,
            "max": {items[j]: v for j, v in sorted(max_buy.items())},
            "integer": integer,
        },
    )


def _words(
    rng: random.Random,
    style: int,
    theme: Theme,
    items: list[str],
    nutrients: list,
    cost: list[int],
    content: list[list[int]],
    need: list[int],
    limit_row: list[int],
    limit_cap: int,
    max_buy: dict[int, int],
    integer: bool,
) -> str:
    cur = text.currency(rng)
    one, many = theme.unit

    def has(j: int) -> str:
        parts = [f"{text.qty(content[i][j], u)} of {n}" for i, (n, u, _) in enumerate(nutrients)]
        if limit_row:
            parts.append(f"{text.qty(limit_row[j], theme.limited[1])} of {theme.limited[0]}")
        return text.join(parts)

    needs = text.join([f"{text.qty(r, u)} of {n}" for r, (n, u, _) in zip(need, nutrients, strict=True)])
    rules = [f"Together, the purchase must provide at least {needs}."]
    if limit_row:
        rules.append(f"It may provide at most {text.qty(limit_cap, theme.limited[1])} of {theme.limited[0]}.")
    for j, v in sorted(max_buy.items()):
        rules.append(f"At most {text.qty(v, many)} of {items[j]} can be used.")
    rules.append(text.integrality(integer, f"the amounts bought (in {many})"))
    if style == 0:
        per = " ".join(f"One {one} of {it} costs {cur(cost[j])} and provides {has(j)}." for j, it in enumerate(items))
        return (
            f"{theme.who} is putting together {theme.goal} from {text.join(items)}. {per} "
            f"{' '.join(rules)} What is the minimum cost of a plan that meets these requirements?"
        )
    if style == 1:
        rows = [f"{it}: {cur(cost[j])} per {one}; {has(j)}" for j, it in enumerate(items)]
        return (
            f"{theme.who} needs {theme.goal}. The available {theme.item_word}s are:\n{text.bullets(rows)}\n"
            f"{' '.join(rules)}\nMinimize the total cost and report the minimum cost."
        )
    per = " ".join(f"Each {one} of {it} contains {has(j)}, at a price of {cur(cost[j])}." for j, it in enumerate(items))
    return (
        f"To prepare {theme.goal}, {theme.who[0].lower()}{theme.who[1:]} can combine {len(items)} "
        f"{theme.item_word}s. {per} {' '.join(rules)} How many {many} of each {theme.item_word} should be "
        f"bought to keep the total cost as low as possible, and what is that minimum total cost?"
    )


def _dot(a: list[int], b: list[int]) -> int:
    return sum(x * y for x, y in zip(a, b, strict=True))


def build_intro(rng: random.Random, infeasible: bool) -> Instance:
    return whole_at_intro(rng, lambda r: _intro(r, infeasible))


def _intro(rng: random.Random, infeasible: bool) -> Instance:
    theme = rng.choice(THEMES)
    integer = rng.random() < 0.5
    items = rng.sample(list(theme.items), 2)
    nutrient, unit, scale = rng.choice(theme.nutrients)
    cost = [rng.randint(1, 12) for _ in items]
    content = [rng.randint(1, 6) * min(scale, 5) for _ in items]  # intro keeps numbers small
    need = round(rng.uniform(2, 6) * sum(content) / 2)
    max_buy: dict[int, int] = {}
    max_total = 0
    if infeasible:
        need = max(need, 2 * max(content))
        max_total = (need - 1) // max(content)  # even the richer item alone falls short
    elif rng.random() < 0.5:
        j = rng.randrange(2)
        max_buy[j] = rng.randint(1, max(1, need // content[j] - 1))

    m = LinearModel(sense="min")
    xs = [m.var(f"x{j}", integer=integer) for j in range(2)]
    m.add(dict(zip(xs, content, strict=True)), ">=", need)
    for j, v in max_buy.items():
        m.add({xs[j]: 1}, "<=", v)
    if max_total:
        m.add(dict.fromkeys(xs, 1), "<=", max_total)
    m.objective(dict(zip(xs, cost, strict=True)))

    cur = text.currency(rng)
    one, many = theme.unit
    rules = [f"Together, the purchase must provide at least {text.qty(need, unit)} of {nutrient}."]
    for j, v in max_buy.items():
        rules.append(f"At most {text.qty(v, many)} of {items[j]} can be used.")
    if max_total:
        rules.append(f"At most {text.qty(max_total, many)} can be used in total.")
    rules.append(text.integrality(integer, f"the amounts bought (in {many})"))
    style = rng.randrange(3)
    if style == 0:
        per = " ".join(
            f"One {one} of {it} costs {cur(cost[j])} and provides {text.qty(content[j], unit)} of {nutrient}."
            for j, it in enumerate(items)
        )
        q = f"{theme.who} is putting together {theme.goal} from {text.join(items)}. {per} {' '.join(rules)}"
    elif style == 1:
        rows = [
            f"{it}: {cur(cost[j])} per {one}, {text.qty(content[j], unit)} of {nutrient}" for j, it in enumerate(items)
        ]
        q = f"{theme.who} needs {theme.goal}. The {theme.item_word}s are:\n{text.bullets(rows)}\n{' '.join(rules)}"
    else:
        per = " ".join(
            f"Each {one} of {it} contains {text.qty(content[j], unit)} of {nutrient}, at a price of {cur(cost[j])}."
            for j, it in enumerate(items)
        )
        q = f"To prepare {theme.goal}, {theme.who[0].lower()}{theme.who[1:]} can buy {text.join(items)}. {per} "
        q += " ".join(rules)
    sep = "\n" if style == 1 else " "  # the bullet-list style asks on its own line
    q += f"{sep}What is the minimum total cost?"
    data = {
        "items": items,
        "nutrients": [nutrient],
        "cost": cost,
        "content": [content],
        "need": [need],
        "limited": None,
        "limit_row": [],
        "limit_cap": 0,
        "max": {items[j]: v for j, v in sorted(max_buy.items())},
        "max_total": max_total,  # 0: no cap on the total amount
        "integer": integer,
    }
    return Instance(question=q, model=m, data=data, template=f"intro/{theme.item_word}/{style}")


FAMILY = FunctionFamily(
    name="diet",
    summary="diet / blending: cheapest mix meeting nutrient bounds (min cost)",
    builder=build,
    intro=build_intro,
)
