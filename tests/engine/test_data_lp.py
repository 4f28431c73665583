"""The generator's HiGHS wrapper: statuses, a proven MIP optimum, and the float-noise snap (hand-derived values)."""

from __future__ import annotations

import pytest

from engine.data.lp import LinearModel, _highs, snap, solve


def test_a_small_mip_reaches_the_hand_computed_optimum():
    # max 30x + 50y, 2x + 3y <= 121, y <= 40, x integer. y = 40 leaves x = 0 (2000); x = 1 allows
    # y = 119/3 (30 + 5950/3 = 6040/3); x = 2 allows y = 39 (2010); larger x only loses.
    m = LinearModel(sense="max")
    x, y = m.var("x", integer=True), m.var("y", ub=40)
    m.add({x: 2, y: 3}, "<=", 121)
    m.objective({x: 30, y: 50})
    sol = solve(m)
    assert sol.status == "optimal"
    assert sol.objective == 6040 / 3
    assert sol.values == pytest.approx({"x": 1.0, "y": 119 / 3})


def test_a_binary_knapsack_matches_brute_force_and_runs_with_a_zero_gap():
    m = LinearModel(sense="max")
    weights = [3001, 2999, 4001, 3999, 5003, 4997]
    xs = [m.var(f"x{i}", integer=True, ub=1) for i in range(len(weights))]
    m.add(dict(zip(xs, weights, strict=True)), "<=", 10000)
    m.objective({v: w * 10 for v, w in zip(xs, weights, strict=True)})
    loads = [sum(w for i, w in enumerate(weights) if (k >> i) & 1) for k in range(64)]
    assert solve(m).objective == max(load for load in loads if load <= 10000) * 10
    # HiGHS stops at a 1e-4 relative gap by default; a ground truth must be proven optimal.
    h = _highs()
    assert h.getOptionValue("mip_rel_gap")[1] == 0.0 and h.getOptionValue("mip_abs_gap")[1] == 0.0


def test_infeasible_and_unbounded_are_told_apart():
    m = LinearModel(sense="min")
    a = m.var("a")
    m.add({a: 1}, ">=", 5)
    m.add({a: 1}, "<=", 4)
    assert solve(m).status == "infeasible" and solve(m).objective is None
    u = LinearModel(sense="max")
    b = u.var("b", integer=True)
    u.add({b: 1}, ">=", 1)
    u.objective({b: 2})
    assert solve(u).status == "unbounded"


def test_model_errors_name_the_problem():
    m = LinearModel(sense="min")
    m.var("a")
    with pytest.raises(ValueError, match="defined twice"):
        m.var("a")
    with pytest.raises(ValueError, match=r"undefined variables \['z'\]"):
        m.add({"z": 1}, "<=", 1)
    with pytest.raises(ValueError, match="unknown constraint operator '<'"):
        m.add({"a": 1}, "<", 1)


def test_snap_removes_float_noise_only():
    assert snap(7.499999999999998) == 7.5
    assert snap(1200.0000000000002) == 1200.0
    assert snap(1851.4285714285716) == 12960 / 7
    assert snap(3.14159265358979) == 3.14159265358979  # no small-denominator fraction that close
    assert snap(-2.5000000000000004) == -2.5
