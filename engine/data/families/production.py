"""Production mix: choose how much of each product to make under limited resources, maximizing profit.

    max sum_j profit_j x_j   s.t.  sum_j use_ij x_j <= capacity_i,  min_j <= x_j <= max_j
Intro: 1-2 products, one resource, sometimes a market limit on one product (one product always has
it), small numbers, stated as rows; whole units only where the LP optimum is already whole. Easy: 2
products, 2 resources. Medium: 3 products, 2-3 resources, one demand bound. Hard: 4-5 products,
3-4 resources, several demand bounds, whole units. Infeasible: a contract minimum that one resource
alone cannot cover (intro: more of one product than the resource allows).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from engine.data import text
from engine.data.families.base import FunctionFamily, Instance, integer_share, whole_at_intro
from engine.data.lp import LinearModel


@dataclass(frozen=True, kw_only=True)
class Theme:
    business: str
    products: tuple[tuple[str, str], ...]  # (singular, plural) for whole units; (name, unit) otherwise
    resources: tuple[tuple[str, str], ...]  # (resource, unit)
    discrete: bool
    period: str


THEMES = (
    Theme(
        business="furniture workshop",
        discrete=True,
        period="week",
        products=(
            ("chair", "chairs"),
            ("table", "tables"),
            ("desk", "desks"),
            ("bookshelf", "bookshelves"),
            ("cabinet", "cabinets"),
            ("stool", "stools"),
        ),
        resources=(
            ("carpentry time", "hours"),
            ("finishing time", "hours"),
            ("oak wood", "board feet"),
            ("varnish", "liters"),
        ),
    ),
    Theme(
        business="bakery",
        discrete=True,
        period="day",
        products=(
            ("loaf of bread", "loaves of bread"),
            ("cake", "cakes"),
            ("tray of muffins", "trays of muffins"),
            ("pie", "pies"),
            ("box of cookies", "boxes of cookies"),
        ),
        resources=(("flour", "kg"), ("oven time", "minutes"), ("baker labor", "minutes"), ("sugar", "kg")),
    ),
    Theme(
        business="electronics plant",
        discrete=True,
        period="week",
        products=(
            ("smartphone", "smartphones"),
            ("tablet", "tablets"),
            ("laptop", "laptops"),
            ("smartwatch", "smartwatches"),
            ("router", "routers"),
        ),
        resources=(
            ("assembly time", "hours"),
            ("testing time", "hours"),
            ("circuit board capacity", "units"),
            ("packaging time", "minutes"),
        ),
    ),
    Theme(
        business="chemical plant",
        discrete=False,
        period="day",
        products=(
            ("industrial cleaner", "liter"),
            ("paint thinner", "liter"),
            ("degreaser", "liter"),
            ("floor polish", "liter"),
            ("sealant", "liter"),
        ),
        resources=(
            ("reactor time", "minutes"),
            ("base solvent", "liters"),
            ("mixing time", "minutes"),
            ("bottling time", "seconds"),
        ),
    ),
    Theme(
        business="farm",
        discrete=False,
        period="season",
        products=(("wheat", "acre"), ("corn", "acre"), ("soybeans", "acre"), ("barley", "acre"), ("oats", "acre")),
        resources=(("water", "thousand gallons"), ("labor", "hours"), ("fertilizer", "kg"), ("machine time", "hours")),
    ),
    Theme(
        business="coffee roastery",
        discrete=False,
        period="week",
        products=(
            ("house blend", "kg"),
            ("espresso roast", "kg"),
            ("decaf blend", "kg"),
            ("single origin", "kg"),
            ("cold brew mix", "kg"),
        ),
        resources=(
            ("roaster time", "minutes"),
            ("green beans", "kg"),
            ("packing time", "minutes"),
            ("grinder time", "minutes"),
        ),
    ),
)


def _units(unit: str) -> str:
    return unit if unit == "kg" else unit + "s"


def _amount(theme: Theme, product: tuple[str, str], n: int) -> str:
    if theme.discrete:
        return f"{n} {product[0] if n == 1 else product[1]}"
    return f"{n} {product[1] if n == 1 else _units(product[1])} of {product[0]}"


def _each(theme: Theme, product: tuple[str, str]) -> str:
    return f"each {product[0]}" if theme.discrete else f"each {product[1]} of {product[0]}"


def build(rng: random.Random, level: int, infeasible: bool) -> Instance:
    integer = rng.random() < integer_share(level)
    theme = rng.choice([t for t in THEMES if t.discrete == integer] or THEMES)
    n_prod = (2, 3, rng.randint(4, 5))[level]
    n_res = (2, rng.randint(2, 3), rng.randint(3, 4))[level]
    products = rng.sample(list(theme.products), n_prod)
    resources = rng.sample(list(theme.resources), n_res)
    profit = [rng.randint(3, 12) * 5 for _ in products]
    use = [[rng.randint(1, 9) for _ in products] for _ in resources]
    plan = [rng.randint(5, 40) for _ in products]  # a feasible point the capacities are built around
    cap = [sum(a * x for a, x in zip(row, plan, strict=True)) + rng.randint(0, 9) for row in use]
    n_bounds = (0, 1, rng.randint(2, 3))[level]
    min_qty: dict[int, int] = {}
    max_qty: dict[int, int] = {}
    for j in rng.sample(range(n_prod), n_bounds):
        if rng.random() < 0.5:
            min_qty[j] = max(1, plan[j] // 2)
        else:
            max_qty[j] = plan[j] + rng.randint(0, 10)
    if infeasible:
        j, i = rng.randrange(n_prod), rng.randrange(n_res)
        min_qty[j] = cap[i] // use[i][j] + rng.randint(1, 10)
        max_qty.pop(j, None)

    m = LinearModel(sense="max")
    xs = [m.var(f"x{j}", integer=integer, lb=min_qty.get(j, 0), ub=max_qty.get(j, float("inf"))) for j in range(n_prod)]
    for row, b in zip(use, cap, strict=True):
        m.add(dict(zip(xs, row, strict=True)), "<=", b)
    m.objective(dict(zip(xs, profit, strict=True)))

    style = rng.randrange(3)
    names = [p[1] if theme.discrete else p[0] for p in products]
    q = _words(rng, style, theme, products, resources, profit, use, cap, min_qty, max_qty, integer)
    data = {
        "products": names,
        "resources": [r[0] for r in resources],
        "profit": profit,
        "use": use,
        "capacity": cap,
        "min": {names[j]: v for j, v in sorted(min_qty.items())},
        "max": {names[j]: v for j, v in sorted(max_qty.items())},
        "integer": integer,
    }
    return Instance(question=q, model=m, data=data, template=f"{theme.business}/{style}")


def _words(
    rng: random.Random,
    style: int,
    theme: Theme,
    products: list[tuple[str, str]],
    resources: list[tuple[str, str]],
    profit: list[int],
    use: list[list[int]],
    cap: list[int],
    min_qty: dict[int, int],
    max_qty: dict[int, int],
    integer: bool,
) -> str:
    cur = text.currency(rng)
    company = rng.choice(text.COMPANY)
    n_prod = len(products)
    usage = [
        text.join([f"{text.qty(use[i][j], r[1])} of {r[0]}" for i, r in enumerate(resources)]) for j in range(n_prod)
    ]
    avail = text.join([f"{text.qty(b, r[1])} of {r[0]}" for b, r in zip(cap, resources, strict=True)])
    bounds = []
    for j in sorted(min_qty):
        bounds.append(f"A contract requires at least {_amount(theme, products[j], min_qty[j])} per {theme.period}.")
    for j in sorted(max_qty):
        bounds.append(f"The market can absorb at most {_amount(theme, products[j], max_qty[j])} per {theme.period}.")
    tail = " ".join([*bounds, text.integrality(integer, "production quantities")])
    names = [p[1] if theme.discrete else p[0] for p in products]
    if style == 0:
        per = " ".join(
            f"{_each(theme, p).capitalize()} needs {usage[j]} and earns a profit of {cur(profit[j])}."
            for j, p in enumerate(products)
        )
        return (
            f"{company} runs {text.a(theme.business)} that makes {text.join(names)}. {per} Each "
            f"{theme.period}, {avail} are available. {tail} How much of each product should be made to maximize "
            f"total profit? What is the maximum total profit?"
        )
    if style == 1:
        rows = [
            f"{names[j]}: profit {cur(profit[j])} per {products[j][0] if theme.discrete else products[j][1]}; "
            f"uses {usage[j]}"
            for j in range(n_prod)
        ]
        return (
            f"{text.capital(text.a(theme.business))} ({company}) plans its production for the coming "
            f"{theme.period}.\n{text.bullets(rows)}\nAvailable per {theme.period}: {avail}.\n{tail}\n"
            f"Maximize the total profit and report the optimal profit."
        )
    per = " ".join(
        f"Producing {_each(theme, p)} uses {usage[j]}, and it brings in {cur(profit[j])} of profit."
        for j, p in enumerate(products)
    )
    return (
        f"The manager of the {company} {theme.business} has {avail} available per {theme.period}. {per} "
        f"{tail} The manager wants the production plan with the highest total profit. "
        f"What is the largest total profit that can be achieved?"
    )


def build_intro(rng: random.Random, infeasible: bool) -> Instance:
    return whole_at_intro(rng, lambda r: _intro(r, infeasible))


def _intro(rng: random.Random, infeasible: bool) -> Instance:
    theme = rng.choice(THEMES)
    n_prod = 1 if rng.random() < 0.25 else 2
    products = rng.sample(list(theme.products), n_prod)
    resource = rng.choice(theme.resources)
    profit = [rng.randint(2, 12) * 5 for _ in products]
    use = [rng.randint(1, 6) for _ in products]
    cap = rng.randint(10, 60)
    limit: dict[str, int] = {}  # "min" (a contract, only when infeasible) or "max" (the market)
    j = rng.randrange(n_prod)
    if infeasible:
        limit["min"] = cap // use[j] + rng.randint(1, 5)
    elif n_prod == 1 or rng.random() < 0.5:
        limit["max"] = rng.randint(2, max(2, cap // use[j] - 1))  # below what the resource allows alone

    m = LinearModel(sense="max")
    xs = [m.var(f"x{k}", integer=theme.discrete) for k in range(n_prod)]
    m.add(dict(zip(xs, use, strict=True)), "<=", cap)
    if "min" in limit:
        m.add({xs[j]: 1}, ">=", limit["min"])
    if "max" in limit:
        m.add({xs[j]: 1}, "<=", limit["max"])
    m.objective(dict(zip(xs, profit, strict=True)))

    cur = text.currency(rng)
    company = rng.choice(text.COMPANY)
    names = [p[1] if theme.discrete else p[0] for p in products]
    res, unit = resource
    per = " ".join(
        f"{_each(theme, p).capitalize()} uses {text.qty(use[k], unit)} of {res} and earns {cur(profit[k])} profit."
        for k, p in enumerate(products)
    )
    rules = [f"{text.capital(text.qty(cap, unit))} of {res} are available per {theme.period}."]
    if "min" in limit:
        rules.append(f"A contract requires at least {_amount(theme, products[j], limit['min'])} per {theme.period}.")
    if "max" in limit:
        rules.append(f"The market can absorb at most {_amount(theme, products[j], limit['max'])} per {theme.period}.")
    rules.append(text.integrality(theme.discrete, "production quantities"))
    style = rng.randrange(3)
    if style == 0:
        q = f"{company} runs {text.a(theme.business)} that makes {text.join(names)}. {per} {' '.join(rules)}"
    elif style == 1:
        rows = [
            f"{names[k]}: profit {cur(profit[k])} per {p[0] if theme.discrete else p[1]}, "
            f"uses {text.qty(use[k], unit)} of {res}"
            for k, p in enumerate(products)
        ]
        q = (
            f"{text.capital(text.a(theme.business))} ({company}) plans its production for the coming {theme.period}."
            f"\n{text.bullets(rows)}\n{' '.join(rules)}"
        )
    else:
        plans = f"The manager of {text.a(theme.business)} plans the production of {text.join(names)}."
        q = f"{plans} {' '.join(rules)} {per}"
    sep = "\n" if style == 1 else " "  # the bullet-list style asks on its own line
    q += f"{sep}What is the maximum total profit per {theme.period}?"
    data = {
        "products": names,
        "resources": [res],
        "profit": profit,
        "use": [use],
        "capacity": [cap],
        "min": {names[j]: limit["min"]} if "min" in limit else {},
        "max": {names[j]: limit["max"]} if "max" in limit else {},
        "integer": theme.discrete,
    }
    return Instance(question=q, model=m, data=data, template=f"intro/{theme.business}/{style}")


FAMILY = FunctionFamily(
    name="production",
    summary="product mix under resource limits (max profit)",
    builder=build,
    intro=build_intro,
)
