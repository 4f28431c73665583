"""The problem generator: determinism, and every answer re-derived by SCIP from the stored data.

The cross-check models each family again from `meta["data"]` with PySCIPOpt, written here independently
of the generator's HiGHS models, so a wrong formulation, a wrong answer or a wrong solver status fails.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyscipopt as scip
import pytest
from pyscipopt import quicksum

from engine.config import load_config
from engine.data import DataError, available_families, generate_problems, get_family, load_train
from engine.data.__main__ import main
from engine.data.generator import families_for, generate_problem
from engine.data.problem import DIFFICULTIES, Problem

FAMILIES = ["production", "diet", "transportation", "assignment", "knapsack", "staffing", "facility"]
INTRO_FAMILIES = ["diet", "knapsack", "market", "production", "staffing"]
# Every (family, difficulty) of the families above: they have easy/medium/hard, four of them intro; "market"
# has intro only (its own test below).
LEVELS = [(f, d) for d in DIFFICULTIES for f in FAMILIES if d != "intro" or f in INTRO_FAMILIES]


def test_all_eight_families_are_registered():
    assert sorted([*FAMILIES, "market"]) == available_families()


def test_same_seed_gives_identical_bytes_and_another_seed_differs():
    a = [p.to_json() for p in generate_problems(14, difficulty="medium", seed=7, infeasible_rate=0.2)]
    b = [p.to_json() for p in generate_problems(14, difficulty="medium", seed=7, infeasible_rate=0.2)]
    c = [p.to_json() for p in generate_problems(14, difficulty="medium", seed=8, infeasible_rate=0.2)]
    assert a == b
    assert sum(x != y for x, y in zip(a, c, strict=True)) == 14
    assert len({p["question"] for p in map(_row, a)}) == 14


def test_a_prefix_does_not_depend_on_n_and_ids_are_unique():
    short = generate_problems(7, seed=3)
    long = generate_problems(21, seed=3)
    assert [p.to_json() for p in short] == [p.to_json() for p in long[:7]]
    assert len({p.id for p in long}) == 21
    twice = generate_problems(4, families=["diet", "diet", "knapsack"], seed=3)
    assert [p.id for p in twice] == [
        f"gen-{f}-easy-s3-{i}" for f, i in [("diet", 0), ("knapsack", 0), ("diet", 1), ("knapsack", 1)]
    ]


@pytest.mark.parametrize(("family", "difficulty"), LEVELS)
def test_answer_matches_an_independent_scip_model(family: str, difficulty: str):
    for problem in generate_problems(3, families=[family], difficulty=difficulty, seed=11, infeasible_rate=0.0):
        assert problem.meta["status"] == "optimal"
        status, value = _scip(problem)
        assert status == "optimal", problem.id
        assert problem.answer == pytest.approx(value, rel=1e-6, abs=1e-6), problem.id


@pytest.mark.parametrize(("family", "difficulty"), LEVELS)
def test_infeasible_instances_are_infeasible_for_scip(family: str, difficulty: str):
    problem = generate_problem(family, difficulty, seed=5, index=0, infeasible_rate=1.0)
    assert problem.answer is None and problem.meta["status"] == "infeasible"
    status, _ = _scip(problem)
    assert status == "infeasible", problem.id


def test_infeasible_rate_zero_and_one_and_default_mix():
    assert all(p.answer is not None for p in generate_problems(14, seed=1, infeasible_rate=0.0))
    assert all(p.answer is None for p in generate_problems(7, seed=1, infeasible_rate=1.0))
    mixed = generate_problems(70, seed=1, infeasible_rate=0.2)
    assert 4 <= sum(p.answer is None for p in mixed) <= 28


def test_difficulty_grows_size_and_integrality_and_easy_stays_small():
    stats = {}
    for d in DIFFICULTIES:
        ps = generate_problems(28, difficulty=d, seed=2, infeasible_rate=0.0)
        stats[d] = (
            sum(p.meta["num_vars"] for p in ps) / len(ps),
            sum(p.meta["num_integer_vars"] / p.meta["num_vars"] for p in ps) / len(ps),
        )
        if d == "easy":
            assert max(p.meta["num_vars"] for p in ps) <= 4
    assert stats["intro"][0] < stats["easy"][0] < stats["medium"][0] < stats["hard"][0]
    assert stats["easy"][1] < stats["hard"][1]


@pytest.mark.parametrize("family", FAMILIES)
def test_wording_varies_and_states_every_number_and_the_sense(family: str):
    problems = generate_problems(24, families=[family], difficulty="medium", seed=4, infeasible_rate=0.1)
    assert len({p.meta["template"] for p in problems}) >= 3
    for p in problems:
        numbers = set(re.findall(r"\d+", p.question))
        missing = [n for n in _stated_numbers(p.meta["data"]) if str(n) not in numbers]
        assert not missing, (p.id, missing)
        sense_words = ("maxim", "larg", "highest") if p.meta["sense"] == "max" else ("minim", "low", "small")
        assert any(w in p.question.lower() for w in sense_words), p.id


def test_unknown_names_fail_listing_the_valid_ones():
    # DataError, so the command lines report it as one line of bad input (exit 2), not a traceback
    with pytest.raises(DataError, match=r"unknown problem family 'nope'; valid: .*knapsack"):
        generate_problems(1, families=["nope"])
    with pytest.raises(DataError, match=r"unknown problem family 'nope'; valid: .*knapsack"):
        get_family("nope")
    with pytest.raises(DataError, match=r"unknown difficulty 'extreme'; valid: \['intro', 'easy', 'medium', 'hard'\]"):
        generate_problems(1, difficulty="extreme")
    with pytest.raises(DataError, match="infeasible_rate"):
        generate_problems(1, infeasible_rate=1.5)
    with pytest.raises(DataError, match="number of problems must be >= 0"):
        generate_problems(-1)
    assert get_family("diet").name == "diet"


# --- the intro tier --------------------------------------------------------------------------------------


def test_intro_exists_for_five_families_and_the_others_refuse_it_naming_those():
    assert families_for("intro") == INTRO_FAMILIES
    assert families_for("easy") == sorted(FAMILIES)
    for name in FAMILIES:
        assert get_family(name).difficulties == (("intro",) if name in INTRO_FAMILIES else ()) + (
            "easy",
            "medium",
            "hard",
        )
    problems = generate_problems(8, difficulty="intro", seed=0)  # default families: the ones with intro
    assert get_family("market").difficulties == ("intro",)
    assert [p.family for p in problems] == (INTRO_FAMILIES * 2)[:8]
    listed = r"families with 'intro': \['diet', 'knapsack', 'market', 'production', 'staffing'\]"
    with pytest.raises(DataError, match=rf"problem family 'transportation' has no 'intro' level .*{listed}"):
        generate_problems(2, families=["production", "transportation"], difficulty="intro")
    with pytest.raises(DataError, match=rf"'facility' has no 'intro' level .*{listed}"):
        generate_problem("facility", "intro", seed=0, index=0)


def test_intro_is_deterministic_with_the_id_scheme_and_a_prefix_independent_of_n():
    a = [p.to_json() for p in generate_problems(12, difficulty="intro", seed=5, infeasible_rate=0.2)]
    b = [p.to_json() for p in generate_problems(12, difficulty="intro", seed=5, infeasible_rate=0.2)]
    c = [p.to_json() for p in generate_problems(12, difficulty="intro", seed=6, infeasible_rate=0.2)]
    assert a == b
    assert sum(x != y for x, y in zip(a, c, strict=True)) == 12
    longer = generate_problems(20, difficulty="intro", seed=5, infeasible_rate=0.2)
    assert [p.to_json() for p in longer[:12]] == a
    assert [p.id for p in longer[:5]] == [
        "gen-diet-intro-s5-0",
        "gen-knapsack-intro-s5-0",
        "gen-market-intro-s5-0",
        "gen-production-intro-s5-0",
        "gen-staffing-intro-s5-0",
    ]
    assert all(p.difficulty == "intro" for p in longer)


def test_intro_problems_are_small_with_small_numbers_and_some_without_optimum():
    problems = generate_problems(200, difficulty="intro", seed=7, infeasible_rate=0.1)
    for p in problems:
        assert 1 <= p.meta["num_vars"] <= 2, p.id
        assert 1 <= p.meta["num_constraints"] <= 2, p.id
        assert p.answer is None or p.answer > 0, p.id
        numbers = sorted(_stated_numbers(p.meta["data"]))
        assert numbers[-1] <= 1000, (p.id, numbers)  # the largest are infeasible wage budgets
    data_numbers = sorted(n for p in problems for n in _stated_numbers(p.meta["data"]))
    assert data_numbers[int(0.9 * len(data_numbers))] <= 100
    assert 5 <= sum(p.answer is None for p in problems) <= 40
    assert {(p.meta["num_vars"], p.meta["num_constraints"]) for p in problems} >= {(1, 2), (2, 1), (2, 2)}


@pytest.mark.parametrize("family", INTRO_FAMILIES)
def test_intro_wording_states_every_number_and_asks_one_question(family: str):
    problems = generate_problems(30, families=[family], difficulty="intro", seed=4, infeasible_rate=0.1)
    assert len({p.meta["template"].rsplit("/", 1)[1] for p in problems}) == 3  # all three styles appear
    for p in problems:
        numbers = set(re.findall(r"\d+", p.question))
        missing = [n for n in _stated_numbers(p.meta["data"]) if str(n) not in numbers]
        assert not missing, (p.id, missing)
        assert p.question.count("?") == 1 and p.question.endswith("?"), p.id
        asked = p.question.rsplit(". ", 1)[-1].rsplit("\n", 1)[-1]
        assert asked.startswith("What is the " + ("maximum" if p.meta["sense"] == "max" else "minimum")), p.id
        assert (
            "1 bags" not in p.question and "1 tablets" not in p.question and " 1 full-time employees" not in p.question
        )


@pytest.mark.parametrize("family", ["diet", "production", "staffing"])
def test_intro_whole_unit_answers_do_not_hinge_on_the_integrality_declaration(family: str):
    # SCIP with every variable continuous gets the same optimum: at intro these families teach stating the model.
    whole = [
        p
        for p in generate_problems(20, families=[family], difficulty="intro", seed=9, infeasible_rate=0.0)
        if p.meta["num_integer_vars"]
    ]
    assert len(whole) >= 5
    for p in whole:
        status, value = _scip(p, relax=True)
        assert status == "optimal" and p.answer == pytest.approx(value, rel=1e-9), p.id


def test_intro_knapsack_answers_need_the_binary_choice():
    problems = generate_problems(20, families=["knapsack"], difficulty="intro", seed=9, infeasible_rate=0.0)
    higher = [p.id for p in problems if _scip(p, relax=True)[1] > p.answer + 1e-6]
    assert len(higher) >= 15, higher  # a relaxation takes a fraction of the item that does not fit


def test_intro_from_the_command_line_and_the_config(tmp_path: Path, capsys):
    out = tmp_path / "intro.jsonl"
    assert main(["generate", "--difficulty", "intro", "--n", "20", "--seed", "3", "--output", str(out)]) == 0
    assert "wrote 20 intro problems" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows[:5]] == [f"gen-{f}-intro-s3-0" for f in INTRO_FAMILIES]
    assert out.read_text(encoding="utf-8") == "".join(
        p.to_json() + "\n" for p in generate_problems(20, difficulty="intro", seed=3)
    )
    bad = tmp_path / "bad.jsonl"
    argv = ["generate", "--difficulty", "intro", "--family", "assignment", "--n", "2", "--output", str(bad)]
    assert main(argv) == 2
    assert "problem family 'assignment' has no 'intro' level" in capsys.readouterr().err
    assert not bad.exists()
    assert main(["families"]) == 0
    listing = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    assert listing["production"] == "intro,easy,medium,hard" and listing["transportation"] == "easy,medium,hard"
    cfg = load_config(None, ["data.difficulty=intro", "data.num_problems=6", "data.families=[knapsack]"])
    train = load_train(cfg.data)
    assert [p.id for p in train.problems] == [f"gen-knapsack-intro-s0-{i}" for i in range(6)]


# --- independent SCIP models, one per family, from meta["data"] ----------------------------------------


def _scip(problem: Problem, *, relax: bool = False) -> tuple[str, float | None]:
    m = scip.Model()
    m.hideOutput()
    m.setParam("limits/gap", 0.0)
    m.setParam("limits/absgap", 0.0)
    objective = _MODELS[problem.family](m, problem.meta["data"])
    for v in m.getVars() if relax else ():
        m.chgVarType(v, "C")
    m.setObjective(objective, sense="maximize" if problem.meta["sense"] == "max" else "minimize")
    m.optimize()
    status = m.getStatus()
    return status, m.getObjVal() if status == "optimal" else None


def _var(m: scip.Model, integer: bool, low: float = 0, up: float | None = None) -> scip.Variable:
    return m.addVar(vtype="I" if integer else "C", lb=low, ub=up)


def _production(m: scip.Model, d: dict):
    x = {p: _var(m, d["integer"], d["min"].get(p, 0), d["max"].get(p)) for p in d["products"]}
    for row, cap in zip(d["use"], d["capacity"], strict=True):
        m.addCons(quicksum(a * x[p] for a, p in zip(row, d["products"], strict=True)) <= cap)
    return quicksum(c * x[p] for c, p in zip(d["profit"], d["products"], strict=True))


def _diet(m: scip.Model, d: dict):
    x = [_var(m, d["integer"], 0, d["max"].get(it)) for it in d["items"]]
    for row, need in zip(d["content"], d["need"], strict=True):
        m.addCons(quicksum(a * v for a, v in zip(row, x, strict=True)) >= need)
    if d["limit_row"]:
        m.addCons(quicksum(a * v for a, v in zip(d["limit_row"], x, strict=True)) <= d["limit_cap"])
    if d.get("max_total"):  # intro only: a cap on the total amount bought
        m.addCons(quicksum(x) <= d["max_total"])
    return quicksum(c * v for c, v in zip(d["cost"], x, strict=True))


def _transportation(m: scip.Model, d: dict):
    ns, nd = len(d["supply"]), len(d["demand"])
    cap = {(i, j): c for i, j, c in d["route_cap"]}
    x = {(i, j): _var(m, d["integer"], 0, cap.get((i, j))) for i in range(ns) for j in range(nd)}
    for i in range(ns):
        m.addCons(quicksum(x[i, j] for j in range(nd)) <= d["supply"][i])
    for j in range(nd):
        m.addCons(quicksum(x[i, j] for i in range(ns)) >= d["demand"][j])
    if not d["truck_size"]:
        return quicksum(d["cost"][i][j] * x[i, j] for i, j in x)
    trucks = {k: _var(m, True) for k in x}
    for k in x:
        m.addCons(x[k] <= d["truck_size"] * trucks[k])
    return quicksum(d["cost"][i][j] * trucks[i, j] for i, j in x)


def _assignment(m: scip.Model, d: dict):
    nw, nt = len(d["workers"]), len(d["tasks"])
    banned = {tuple(b) for b in d["banned"]}
    x = {(i, j): m.addVar(vtype="B") for i in range(nw) for j in range(nt) if (i, j) not in banned}
    for j in range(nt):
        m.addCons(quicksum(x[i, j] for i in range(nw) if (i, j) in x) == 1)
    for i in range(nw):
        load = [(d["hours"][j] if d["budget"] else 1) * x[i, j] for j in range(nt) if (i, j) in x]
        m.addCons(quicksum(load) <= (d["budget"][i] if d["budget"] else 1))
    return quicksum(d["score"][i][j] * v for (i, j), v in x.items())


def _knapsack(m: scip.Model, d: dict):
    x = [m.addVar(vtype="B") for _ in d["items"]]
    m.addCons(quicksum(w * xi for w, xi in zip(d["weight"], x, strict=True)) <= d["capacity"])
    if d["weight2"]:
        m.addCons(quicksum(w * xi for w, xi in zip(d["weight2"], x, strict=True)) <= d["capacity2"])
    if d["conflict"]:
        a, b = d["conflict"]
        m.addCons(x[a] + x[b] <= 1)
        c, e = d["requires"]
        m.addCons(x[c] <= x[e])
    for j in d["must"]:
        m.addCons(x[j] == 1)
    return quicksum(v * xi for v, xi in zip(d["value"], x, strict=True))


def _staffing(m: scip.Model, d: dict):
    if d["kind"] == "two_types":
        full, part = _var(m, True, d["min_full"]), _var(m, True)
        m.addCons(d["hours"][0] * full + d["hours"][1] * part >= d["need"])
        if d["budget"]:
            m.addCons(d["wage"][0] * full + d["wage"][1] * part <= d["budget"])
        return d["wage"][0] * full + d["wage"][1] * part
    k, span = len(d["need"]), d["span"]
    start = [_var(m, True) for _ in range(k)]
    for t in range(k):  # on duty in period t: everyone who started in one of the `span` periods up to t
        m.addCons(quicksum(start[(t - back) % k] for back in range(span)) >= d["need"][t])
    if d["cap"]:
        m.addCons(quicksum(start) <= d["cap"])
    return quicksum(w * s for w, s in zip(d["wage"], start, strict=True))


def _facility(m: scip.Model, d: dict):
    ns, nc = len(d["sites"]), len(d["customers"])
    y = [m.addVar(vtype="B") for _ in range(ns)]
    x = {(i, j): _var(m, d["integer"]) for i in range(ns) for j in range(nc)}
    for j in range(nc):
        m.addCons(quicksum(x[i, j] for i in range(ns)) == d["demand"][j])
    for i in range(ns):
        m.addCons(quicksum(x[i, j] for j in range(nc)) <= d["capacity"][i] * y[i])
    if d["max_open"]:
        m.addCons(quicksum(y) <= d["max_open"])
    return quicksum(f * v for f, v in zip(d["fixed"], y, strict=True)) + quicksum(
        d["cost"][i][j] * v for (i, j), v in x.items()
    )


_MODELS = {
    "production": _production,
    "diet": _diet,
    "transportation": _transportation,
    "assignment": _assignment,
    "knapsack": _knapsack,
    "staffing": _staffing,
    "facility": _facility,
}

# Data keys that hold indices or flags rather than numbers the question states.
_NOT_STATED = {"banned", "conflict", "requires", "must", "integer", "span", "kind", "sense"}


def _stated_numbers(data: dict) -> set[int]:
    out: set[int] = set()

    def walk(v: object) -> None:
        if isinstance(v, bool):
            return
        if isinstance(v, int):
            if v:  # 0 means "absent" for caps and budgets
                out.add(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    for key, value in data.items():
        if key == "route_cap":
            out.update(c for _, _, c in value)
        elif key not in _NOT_STATED:
            walk(value)
    return out


def _row(line: str) -> dict:
    return json.loads(line)


def test_market_problems_ask_for_the_sum_of_profit_times_market_limit_or_state_an_impossible_contract():
    problems = generate_problems(40, families=["market"], difficulty="intro", seed=2, infeasible_rate=0.2)
    assert 3 <= sum(p.answer is None for p in problems) <= 15
    for p in problems:
        data = p.meta["data"]
        if p.answer is None:  # one product whose contract asks for more than its market takes
            (name,) = data["products"]
            assert data["min"][name] > data["max"][name], p.id
        else:
            pairs = zip(data["products"], data["profit"], strict=True)
            expected = sum(profit * data["max"][name] for name, profit in pairs)
            assert p.answer == pytest.approx(expected), p.id
    with pytest.raises(DataError, match=r"'market' has no 'easy' level \(it has \['intro'\]\)"):
        generate_problems(2, families=["market"], difficulty="easy")
