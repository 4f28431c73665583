"""Market limits: how many of each product to sell when each product's market takes only so many, maximizing
profit. The smallest word problem there is: each product's profit and market limit are read from the text.

    max sum_j profit_j x_j   s.t.   0 <= x_j <= limit_j   (a contract minimum x_j >= min_j when infeasible)

Intro only (2 products, two market limits, small whole numbers); the families with a resource to share
(production) take over from easy on. Infeasible: one product, with a contract minimum above its market limit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from engine.data import text
from engine.data.families.base import INTRO, Instance
from engine.data.families.production import THEMES, _amount, _each
from engine.data.lp import LinearModel


def build_intro(rng: random.Random, infeasible: bool) -> Instance:
    theme = rng.choice(THEMES)
    n = 1 if infeasible else 2  # at most two constraints: an infeasible problem's contract takes the second
    products = rng.sample(list(theme.products), n)
    profit = [rng.randint(2, 12) * 5 for _ in products]
    limit = [rng.randint(2, 15) for _ in products]
    short = 0  # the product a contract asks too much of, when infeasible
    contract = limit[short] + rng.randint(1, 5) if infeasible else None

    m = LinearModel(sense="max")
    xs = [m.var(f"x{k}", integer=theme.discrete) for k in range(n)]
    for x, cap in zip(xs, limit, strict=True):
        m.add({x: 1}, "<=", cap)
    if contract is not None:
        m.add({xs[short]: 1}, ">=", contract)
    m.objective(dict(zip(xs, profit, strict=True)))

    cur = text.currency(rng)
    company = rng.choice(text.COMPANY)
    names = [p[1] if theme.discrete else p[0] for p in products]

    earns = " ".join(f"{_each(theme, products[k]).capitalize()} earns {cur(profit[k])} profit." for k in range(n))
    most = text.join([f"at most {_amount(theme, products[k], limit[k])}" for k in range(n)])
    rules = [f"The market can absorb {most} per {theme.period}."]
    if contract is not None:
        rules.append(f"A contract requires at least {_amount(theme, products[short], contract)} per {theme.period}.")
    rules.append(text.integrality(theme.discrete, "sales quantities"))
    style = rng.randrange(3)
    if style == 0:
        q = f"{company} runs {text.a(theme.business)} that sells {text.join(names)}. {earns} {' '.join(rules)}"
    elif style == 1:
        rows = [f"{names[k]}: profit {cur(profit[k])}, market limit {limit[k]}" for k in range(n)]
        q = (
            f"{text.capital(text.a(theme.business))} ({company}) plans its sales for the coming {theme.period}."
            f"\n{text.bullets(rows)}\n{' '.join(rules[1:])}".rstrip()
        )
    else:
        q = f"The manager of {text.a(theme.business)} sells {text.join(names)}. {' '.join(rules)} {earns}"
    sep = "\n" if style == 1 else " "
    q += f"{sep}What is the maximum total profit per {theme.period}?"
    data = {
        "products": names,
        "profit": profit,
        "max": dict(zip(names, limit, strict=True)),
        "min": {names[short]: contract} if contract is not None else {},
        "integer": theme.discrete,
    }
    return Instance(question=q, model=m, data=data, template=f"intro/{theme.business}/{style}")


@dataclass(frozen=True, kw_only=True)
class MarketFamily:
    """Intro only: the other levels would be production problems."""

    name: str = "market"
    summary: str = "sell within market limits (max profit); intro only"

    @property
    def difficulties(self) -> tuple[str, ...]:
        return ("intro",)

    def build(self, rng: random.Random, level: int, *, infeasible: bool) -> Instance:
        if level != INTRO:
            raise ValueError(f"family {self.name!r} has no level {level}; it has {list(self.difficulties)}")
        return build_intro(rng, infeasible)


FAMILY = MarketFamily()
