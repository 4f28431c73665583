"""A small linear/integer model, built by the generator's families and solved exactly with HiGHS.

    m = LinearModel(sense="max")
    x = m.var("x", integer=True)
    y = m.var("y", ub=40)
    m.add({x: 2, y: 3}, "<=", 120)
    m.objective({x: 30, y: 50})
    sol = solve(m)          # Solution(status="optimal", objective=..., values={...})

HiGHS runs single-threaded with a zero MIP gap, so a reported optimum is proven, not within the default
1e-4 gap, and the same model always gives the same number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import highspy

Sense = Literal["min", "max"]
Status = Literal["optimal", "infeasible", "unbounded", "error"]
_OPS = ("<=", ">=", "==")
_MAX_DENOMINATOR = 1000


@dataclass(frozen=True, kw_only=True)
class Var:
    name: str
    lb: float = 0.0
    ub: float = math.inf
    integer: bool = False


@dataclass(frozen=True, kw_only=True)
class Row:
    coefs: tuple[tuple[str, float], ...]
    lo: float
    hi: float


@dataclass(kw_only=True)
class LinearModel:
    """Variables, linear rows `lo <= a.x <= hi` and a linear objective; names key everything."""

    sense: Sense
    variables: dict[str, Var] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    cost: dict[str, float] = field(default_factory=dict)

    def var(self, name: str, *, lb: float = 0.0, ub: float = math.inf, integer: bool = False) -> str:
        if name in self.variables:
            raise ValueError(f"variable {name!r} defined twice")
        self.variables[name] = Var(name=name, lb=lb, ub=ub, integer=integer)
        return name

    def add(self, coefs: Mapping[str, float], op: str, rhs: float) -> None:
        if op not in _OPS:
            raise ValueError(f"unknown constraint operator {op!r}; valid: {list(_OPS)}")
        unknown = [v for v in coefs if v not in self.variables]
        if unknown:
            raise ValueError(f"constraint uses undefined variables {unknown}")
        lo = rhs if op in (">=", "==") else -math.inf
        hi = rhs if op in ("<=", "==") else math.inf
        self.rows.append(Row(coefs=tuple((v, float(a)) for v, a in coefs.items() if a != 0), lo=lo, hi=hi))

    def objective(self, coefs: Mapping[str, float]) -> None:
        self.cost = {v: float(a) for v, a in coefs.items()}

    @property
    def is_integer(self) -> bool:
        return any(v.integer for v in self.variables.values())


@dataclass(frozen=True, kw_only=True)
class Solution:
    status: Status
    objective: float | None
    values: dict[str, float] = field(default_factory=dict, hash=False)


_STATUS = {
    highspy.HighsModelStatus.kOptimal: "optimal",
    highspy.HighsModelStatus.kInfeasible: "infeasible",
    highspy.HighsModelStatus.kUnbounded: "unbounded",
}


def solve(model: LinearModel) -> Solution:
    """Solve exactly (MIP gap 0); an objective within float noise of an integer is snapped to it."""
    names = list(model.variables)
    index = {n: i for i, n in enumerate(names)}
    h = _highs()
    for n in names:
        v = model.variables[n]
        h.addVar(_finite(v.lb), _finite(v.ub))
        h.changeColCost(index[n], model.cost.get(n, 0.0))
        if v.integer:
            h.changeColIntegrality(index[n], highspy.HighsVarType.kInteger)
    for row in model.rows:
        idx = [index[v] for v, _ in row.coefs]
        vals = [a for _, a in row.coefs]
        h.addRow(_finite(row.lo), _finite(row.hi), len(idx), idx, vals)
    sense = highspy.ObjSense.kMaximize if model.sense == "max" else highspy.ObjSense.kMinimize
    h.changeObjectiveSense(sense)
    h.run()
    status = h.getModelStatus()
    if status == highspy.HighsModelStatus.kUnboundedOrInfeasible:
        # Presolve can stop before telling the two apart; the simplex without it decides.
        h.setOptionValue("presolve", "off")
        h.run()
        status = h.getModelStatus()
    name = _STATUS.get(status, "error")
    if name != "optimal":
        return Solution(status=name, objective=None)
    values = dict(zip(names, h.getSolution().col_value, strict=True))
    return Solution(status="optimal", objective=snap(h.getInfo().objective_function_value), values=values)


def snap(x: float) -> float:
    """Round away solver noise: 7.499999999999998 -> 7.5, 1200.0000000000002 -> 1200.0.

    With integer data an LP optimum is a ratio of integers; when a fraction with a small denominator lies
    within float noise of x, its correctly rounded float is the exact answer. Otherwise x stays as is.
    """
    near = Fraction(x).limit_denominator(_MAX_DENOMINATOR)
    if abs(float(near) - x) <= 1e-11 * max(1.0, abs(x)):
        return float(near)
    return float(x)


def _highs() -> highspy.Highs:
    h = highspy.Highs()
    for key, value in (
        ("output_flag", False),
        ("threads", 1),
        ("mip_rel_gap", 0.0),
        ("mip_abs_gap", 0.0),
        ("random_seed", 0),
    ):
        h.setOptionValue(key, value)
    return h


def _finite(x: float) -> float:
    return highspy.kHighsInf if x == math.inf else -highspy.kHighsInf if x == -math.inf else x
