"""The built-in problem families, by name (see `engine.data.generator`)."""

from __future__ import annotations

from engine.data.families import assignment, diet, facility, knapsack, market, production, staffing, transport
from engine.data.families.base import Family

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        production.FAMILY,
        diet.FAMILY,
        transport.FAMILY,
        assignment.FAMILY,
        knapsack.FAMILY,
        staffing.FAMILY,
        facility.FAMILY,
        market.FAMILY,
    )
}
