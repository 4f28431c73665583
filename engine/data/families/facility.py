"""Facility location (capacitated): open sites (binary) and ship from them to customers at least cost.

    min sum_i fixed_i y_i + sum_ij cost_ij x_ij   s.t.  sum_i x_ij = demand_j,  sum_j x_ij <= cap_i y_i
No intro level: opening sites and shipping from them takes at least 4 variables. Easy: 2 sites, one
customer region (4 variables). Medium: 3 sites, 2-3 customers. Hard: 4-5 sites, 4-5 customers, whole
units, at most k sites open. Infeasible: the capacity of all sites (or of the k largest) is below total
demand.
"""

from __future__ import annotations

import random

from engine.data import text
from engine.data.families.base import FunctionFamily, Instance, integer_share
from engine.data.lp import LinearModel

BUSINESS = (
    ("an online retailer", "warehouse", "orders"),
    ("a brewery", "depot", "kegs"),
    ("a hospital network", "supply hub", "supply boxes"),
    ("a bakery chain", "kitchen", "trays"),
    ("a parcel company", "sorting center", "parcels"),
)


def build(rng: random.Random, level: int, infeasible: bool) -> Instance:
    who, site, unit = rng.choice(BUSINESS)
    n_s, n_c = ((2, 1), (3, rng.randint(2, 3)), (rng.randint(4, 5), rng.randint(4, 5)))[level]
    integer = level == 2 or rng.random() < integer_share(level) / 2
    sites = text.sample(rng, text.CITIES, n_s + n_c)
    sites, customers = sites[:n_s], sites[n_s:]
    demand = [rng.randint(6, 30) * 10 for _ in customers]
    total = sum(demand)
    cap = [rng.randint(5, 9) * round(total / max(1, n_s - 1) / 7 / 10) * 10 + 10 for _ in sites]
    fixed = [rng.randint(10, 60) * 100 for _ in sites]
    cost = [[rng.randint(1, 15) for _ in customers] for _ in sites]
    max_open = rng.randint(2, n_s - 1) if level == 2 else 0
    if infeasible:
        if max_open:
            largest = sorted(cap, reverse=True)[:max_open]
            short = sum(largest) - total + rng.randint(1, 5) * 10
        else:
            short = sum(cap) - total + rng.randint(1, 5) * 10
        demand[rng.randrange(n_c)] += short

    m = LinearModel(sense="min")
    y = [m.var(f"open{i}", integer=True, ub=1) for i in range(n_s)]
    x = [[m.var(f"x{i}_{j}", integer=integer) for j in range(n_c)] for i in range(n_s)]
    for j in range(n_c):
        m.add({x[i][j]: 1 for i in range(n_s)}, "==", demand[j])
    for i in range(n_s):
        m.add({**{x[i][j]: 1 for j in range(n_c)}, y[i]: -cap[i]}, "<=", 0)
    if max_open:
        m.add({v: 1 for v in y}, "<=", max_open)
    m.objective({**dict(zip(y, fixed, strict=True)), **{x[i][j]: cost[i][j] for i in range(n_s) for j in range(n_c)}})

    style = rng.randrange(3) if n_c == 1 else rng.randrange(1, 3)  # style 0 describes a single customer
    q = _words(rng, style, who, site, unit, sites, customers, demand, cap, fixed, cost, max_open, integer)
    data = {
        "sites": sites,
        "customers": customers,
        "demand": demand,
        "capacity": cap,
        "fixed": fixed,
        "cost": cost,
        "max_open": max_open,
        "integer": integer,
    }
    return Instance(question=q, model=m, data=data, template=f"{site}/{style}")


def _words(
    rng: random.Random,
    style: int,
    who: str,
    site: str,
    unit: str,
    sites: list[str],
    customers: list[str],
    demand: list[int],
    cap: list[int],
    fixed: list[int],
    cost: list[list[int]],
    max_open: int,
    integer: bool,
) -> str:
    cur = text.currency(rng)
    sites_s = text.bullets(
        [f"{s}: opening cost {cur(fixed[i])}, capacity {text.qty(cap[i], unit)}" for i, s in enumerate(sites)]
    )
    rules = [f"A {site} that is not opened cannot ship anything, and an open {site} ships at most its capacity."]
    if max_open:
        rules.append(f"At most {max_open} {site}s may be opened.")
    rules.append(text.integrality(integer, f"the numbers of {unit} shipped"))
    if style == 0:
        per = " ".join(
            f"Opening a {site} in {s} costs {cur(fixed[i])}; it can handle up to "
            f"{text.qty(cap[i], unit)}, and each of the {unit} it handles costs {cur(cost[i][0])} to "
            f"deliver."
            for i, s in enumerate(sites)
        )
        return (
            f"{text.capital(who)} must deliver {text.qty(demand[0], unit)} to customers in "
            f"{customers[0]} and is deciding where to open a {site}: {text.join(sites, 'or')} (one or both). "
            f"{per} {' '.join(rules)} Which {site}s should be opened, and how much should each handle, to "
            f"minimize the total of opening and delivery costs? What is that minimum total cost?"
        )
    ship = text.bullets(
        [
            f"from {s}: " + ", ".join(f"to {c} {cur(cost[i][j])}" for j, c in enumerate(customers))
            for i, s in enumerate(sites)
        ]
    )
    dem = text.join([f"{c} {text.qty(d, unit)}" for c, d in zip(customers, demand, strict=True)])
    if style == 1:
        return (
            f"{text.capital(who)} is choosing {site} locations. Candidates:\n{sites_s}\nCustomer demand "
            f"(must be met exactly): {dem}. Delivery cost per {text.singular(unit)}:\n{ship}\n{' '.join(rules)}\n"
            f"Minimize the opening costs plus delivery costs, and report the minimum total cost."
        )
    return (
        f"Where should {who} open {site}s? Demands: {dem}; each demand must be fully served. Possible "
        f"{site}s (one-time opening cost and capacity):\n{sites_s}\nDelivery cost per {text.singular(unit)}:\n"
        f"{ship}\n{' '.join(rules)}\nWhat is the minimum total cost of opening and delivery?"
    )


FAMILY = FunctionFamily(
    name="facility", summary="capacitated facility location: open sites, serve demand", builder=build
)
