"""Transportation: ship from sources to destinations at least cost, within supplies, meeting demands.

    min sum_ij cost_ij x_ij   s.t.  sum_j x_ij <= supply_i,  sum_i x_ij >= demand_j,  x_ij <= route cap
No intro level: the smallest problem that is still a transportation problem has 2 x 2 routes and 4
constraints. Easy: 2 sources x 2 destinations. Medium: 2-3 x 3 with a route capacity. Hard: 3-4 x 4 with
whole truckloads (cost per truck, x_ij <= truck_size * trucks_ij, trucks integer) and route capacities.
Infeasible: total demand above total supply.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from engine.data import text
from engine.data.families.base import FunctionFamily, Instance, integer_share
from engine.data.lp import LinearModel


@dataclass(frozen=True, kw_only=True)
class Theme:
    company: str
    sources: str  # plural noun
    dests: str
    unit: str  # plural unit of goods
    goods: str
    named_by_city: bool


THEMES = (
    Theme(
        company="A retail chain",
        sources="warehouses",
        dests="stores",
        unit="boxes",
        goods="merchandise",
        named_by_city=True,
    ),
    Theme(
        company="A cement producer",
        sources="plants",
        dests="construction sites",
        unit="tons",
        goods="cement",
        named_by_city=False,
    ),
    Theme(
        company="A farming cooperative",
        sources="farms",
        dests="markets",
        unit="crates",
        goods="produce",
        named_by_city=True,
    ),
    Theme(
        company="A fuel distributor",
        sources="depots",
        dests="gas stations",
        unit="thousand liters",
        goods="fuel",
        named_by_city=False,
    ),
)


def build(rng: random.Random, level: int, infeasible: bool) -> Instance:
    theme = rng.choice(THEMES)
    m_src, n_dst = ((2, 2), (rng.randint(2, 3), 3), (rng.randint(3, 4), 4))[level]
    trucks = level == 2
    integer = trucks or rng.random() < integer_share(level)
    if theme.named_by_city:
        cities = text.sample(rng, text.CITIES, m_src + n_dst)
        src, dst = cities[:m_src], cities[m_src:]
    else:
        src = [f"{theme.sources[:-1].capitalize()} {c}" for c in "ABCD"[:m_src]]
        dst = [f"{theme.dests[:-1].capitalize()} {k}" for k in range(1, n_dst + 1)]
    demand = [rng.randint(4, 16) * 5 for _ in dst]
    supply = _split(rng, math.ceil(sum(demand) * rng.uniform(1.05, 1.4)), m_src)
    cost = [[rng.randint(2, 20) for _ in dst] for _ in src]
    route_cap: dict[tuple[int, int], int] = {}
    for _ in range((0, 1, 2)[level]):
        i, j = rng.randrange(m_src), rng.randrange(n_dst)
        route_cap[(i, j)] = max(5, demand[j] // 2 - rng.randint(0, 3) * 5)
    truck_size = rng.choice((10, 15, 20, 25)) if trucks else 0
    if infeasible:
        short = sum(supply) - sum(demand) + rng.randint(1, 4) * 5
        demand[rng.randrange(n_dst)] += short

    m = LinearModel(sense="min")
    x = [
        [m.var(f"x{i}_{j}", integer=integer, ub=route_cap.get((i, j), float("inf"))) for j in range(n_dst)]
        for i in range(m_src)
    ]
    for i in range(m_src):
        m.add({x[i][j]: 1 for j in range(n_dst)}, "<=", supply[i])
    for j in range(n_dst):
        m.add({x[i][j]: 1 for i in range(m_src)}, ">=", demand[j])
    if trucks:
        t = [[m.var(f"t{i}_{j}", integer=True) for j in range(n_dst)] for i in range(m_src)]
        for i in range(m_src):
            for j in range(n_dst):
                m.add({x[i][j]: 1, t[i][j]: -truck_size}, "<=", 0)
        m.objective({t[i][j]: cost[i][j] for i in range(m_src) for j in range(n_dst)})
    else:
        m.objective({x[i][j]: cost[i][j] for i in range(m_src) for j in range(n_dst)})

    style = rng.randrange(3) if m_src * n_dst <= 4 else rng.randrange(1, 3)  # sentences only for 4 routes
    q = _words(rng, style, theme, src, dst, supply, demand, cost, route_cap, truck_size, integer)
    data = {
        "sources": src,
        "destinations": dst,
        "supply": supply,
        "demand": demand,
        "cost": cost,
        "route_cap": [[i, j, c] for (i, j), c in sorted(route_cap.items())],
        "truck_size": truck_size,
        "integer": integer,
    }
    return Instance(question=q, model=m, data=data, template=f"{theme.sources}/{style}")


def _words(
    rng: random.Random,
    style: int,
    theme: Theme,
    src: list[str],
    dst: list[str],
    supply: list[int],
    demand: list[int],
    cost: list[list[int]],
    route_cap: dict[tuple[int, int], int],
    truck_size: int,
    integer: bool,
) -> str:
    cur = text.currency(rng)
    u = theme.unit
    what = "per truck sent from" if truck_size else f"per {text.singular(u)} shipped from"
    avail = text.join([f"{s} has {text.qty(a, u)}" for s, a in zip(src, supply, strict=True)])
    need = text.join([f"{d} needs {text.qty(b, u)}" for d, b in zip(dst, demand, strict=True)])
    rules = []
    for (i, j), c in sorted(route_cap.items()):
        rules.append(f"The route from {src[i]} to {dst[j]} can carry at most {text.qty(c, u)}.")
    if truck_size:
        rules.append(
            f"Goods travel in trucks that each carry at most {text.qty(truck_size, u)}; the cost is paid "
            f"per truck, and the number of trucks on each route must be a whole number."
        )
    rules.append(text.integrality(integer, f"the amounts shipped (in {u})"))
    if style == 0:
        costs = " ".join(
            f"Shipping from {s} to {d} costs {cur(cost[i][j])} {what.split(' from')[0]}."
            for i, s in enumerate(src)
            for j, d in enumerate(dst)
        )
        return (
            f"{theme.company} moves {theme.goods} from its {theme.sources} to its {theme.dests}. This week "
            f"{avail}, while {need}. {costs} {' '.join(rules)} How should the {theme.goods} be shipped to "
            f"meet every demand at minimum total shipping cost? What is that minimum cost?"
        )
    table = text.bullets(
        [f"from {s}: " + ", ".join(f"to {d} {cur(cost[i][j])}" for j, d in enumerate(dst)) for i, s in enumerate(src)]
    )
    if style == 1:
        return (
            f"{theme.company} supplies {len(dst)} {theme.dests} from {len(src)} {theme.sources}. "
            f"Supplies: {avail}. Demands: {need}. The cost {what} a {theme.sources[:-1]} to a "
            f"{theme.dests[:-1]} is:\n{table}\n{' '.join(rules)}\n"
            f"Every demand must be met and no {theme.sources[:-1]} may ship more than it has. "
            f"Minimize the total transportation cost and give its optimal value."
        )
    return (
        f"Plan the distribution of {theme.goods} for {theme.company[0].lower()}{theme.company[1:]}. "
        f"{avail}; {need}. Costs {what} each {theme.sources[:-1]} to each {theme.dests[:-1]}:\n{table}\n"
        f"{' '.join(rules)}\nWhat is the lowest total cost at which all demands can be satisfied?"
    )


def _split(rng: random.Random, total: int, parts: int) -> list[int]:
    """`parts` positive integers summing to about `total`, none tiny, rounded up to multiples of 5."""
    weights = [rng.uniform(0.7, 1.3) for _ in range(parts)]
    scale = total / sum(weights)
    return [5 * math.ceil(w * scale / 5) for w in weights]


FAMILY = FunctionFamily(name="transportation", summary="ship supplies to demands at least cost", builder=build)
