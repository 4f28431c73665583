"""Wording helpers shared by the problem families: names, currencies, lists, number formatting.

Every helper draws from the `random.Random` it is given, never from the global generator, so a problem's
text is a pure function of its seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

COMPANY = (
    "Northwind",
    "Bluebird",
    "Oakridge",
    "Silverline",
    "Redwood",
    "Summit",
    "Riverside",
    "Maple Leaf",
    "Harbor",
    "Evergreen",
    "Cedar Point",
    "Golden Gate",
    "Lakeshore",
    "Ironworks",
    "Sunrise",
    "Highland",
    "Crescent",
    "Pinecrest",
    "Westfield",
    "Brightwater",
)
PEOPLE = (
    "Alice",
    "Bob",
    "Carmen",
    "Dmitri",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jamal",
    "Keiko",
    "Liam",
    "Maya",
    "Noah",
    "Olga",
    "Pedro",
    "Quinn",
    "Rosa",
    "Sven",
    "Tara",
    "Umar",
    "Vera",
    "Wen",
    "Yusuf",
    "Zoe",
)
CITIES = (
    "Springfield",
    "Riverton",
    "Lakeview",
    "Fairmont",
    "Brookside",
    "Hillcrest",
    "Ashford",
    "Kingsport",
    "Millbrook",
    "Easton",
    "Westbury",
    "Clearwater",
    "Stonebridge",
    "Greenville",
    "Oakdale",
    "Bayside",
    "Marlow",
    "Denton",
    "Northgate",
    "Elmwood",
)
LETTERS = "ABCDEFGHIJKLMNOP"


@dataclass(frozen=True, kw_only=True)
class Currency:
    symbol: str
    word: str

    def __call__(self, amount: int | float) -> str:
        return f"{self.symbol}{fmt(amount)}"


CURRENCIES = (
    Currency(symbol="$", word="dollars"),
    Currency(symbol="€", word="euros"),
    Currency(symbol="£", word="pounds"),
)


def currency(rng: random.Random) -> Currency:
    # Dollars most of the time, as in the public benchmarks; the others keep the unit from being a constant.
    return CURRENCIES[0] if rng.random() < 0.6 else rng.choice(CURRENCIES[1:])


def fmt(x: int | float) -> str:
    """Integers without a decimal point; other values with at most 2 decimals."""
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.2f}".rstrip("0").rstrip(".")


def join(items: Sequence[str], word: str = "and") -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {word} " + items[-1]


def plural(n: int | float, noun: str, nouns: str | None = None) -> str:
    return f"{fmt(n)} {noun if n == 1 else (nouns or noun + 's')}"


def sample(rng: random.Random, pool: Sequence[str], k: int) -> list[str]:
    if k > len(pool):
        raise ValueError(f"asked for {k} names from a pool of {len(pool)}")
    return rng.sample(list(pool), k)


def a(noun: str) -> str:
    """'a hotel', 'an airport': the indefinite article that goes with noun."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def capital(s: str) -> str:
    return s[:1].upper() + s[1:]


def bullets(lines: Sequence[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def integrality(integer: bool, noun: str) -> str:
    """The sentence that settles whether decisions are whole numbers, so the model never has to guess."""
    return f"{noun[0].upper()}{noun[1:]} {'must be whole numbers' if integer else 'may be fractional'}."


_SINGULAR = {
    "hours": "hour",
    "liters": "liter",
    "minutes": "minute",
    "seconds": "second",
    "units": "unit",
    "board feet": "board foot",
    "grams": "gram",
    "milligrams": "milligram",
    "servings": "serving",
    "days": "day",
    "acres": "acre",
    "tons": "ton",
    "points": "point",
    "calories": "calorie",
    "boxes": "box",
    "crates": "crate",
    "pallets": "pallet",
    "workers": "worker",
    "orders": "order",
    "kegs": "keg",
    "trays": "tray",
    "parcels": "parcel",
    "supply boxes": "supply box",
    "square meters": "square meter",
    "weeks": "week",
    "bags": "bag",
    "tablets": "tablet",
}


def singular(unit: str) -> str:
    return _SINGULAR.get(unit, unit)


def qty(n: int | float, unit: str) -> str:
    """'1 hour', '3 hours', '2 kg': the unit in the number that goes with n."""
    return f"{fmt(n)} {_SINGULAR.get(unit, unit) if n == 1 else unit}"
