"""Staffing and shift scheduling: hire whole numbers of workers to cover demand at least cost.

Intro: two kinds of staff covering a day's required hours at least wage cost, sometimes a minimum number
of full-time staff (a row); small numbers, and the LP optimum is already whole. Easy: two kinds of staff
(full-time, part-time) with hours and wages; cover required hours, with a minimum share of full-time
staff; min wage bill. Medium: a day cut into 4-6 periods, each shift covering 2 consecutive periods
(wrapping around midnight), per-shift wages; min cost. Hard: a week where each employee works 5
consecutive days then rests 2, daily requirements, weekend-start premium; min cost. Infeasible: a wage
budget (intro, easy) or a head-count cap (medium, hard) below what coverage needs.
"""

from __future__ import annotations

import math
import random

from engine.data import text
from engine.data.families.base import FunctionFamily, Instance, whole_at_intro
from engine.data.lp import LinearModel

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
PLACES = (
    "hospital ward",
    "call center",
    "restaurant",
    "warehouse",
    "airport security checkpoint",
    "hotel",
    "police dispatch center",
    "supermarket",
)


def build(rng: random.Random, level: int, infeasible: bool) -> Instance:
    return (_two_types, _shifts, _week)[level](rng, infeasible)


def _two_types(rng: random.Random, infeasible: bool) -> Instance:
    place = rng.choice(PLACES)
    the_place = text.capital(text.a(place))
    cur = text.currency(rng)
    h_full, h_part = rng.choice((35, 38, 40, 42)), rng.choice((15, 20, 24, 25))
    w_full, w_part = rng.randint(18, 32) * 25, rng.randint(6, 14) * 25
    need = rng.randint(10, 40) * 20
    min_full = rng.randint(2, max(2, need // h_full // 2))
    budget = 0
    if infeasible:
        budget = int(need * min(w_full / h_full, w_part / h_part)) - rng.randint(1, 5) * 50
    m = LinearModel(sense="min")
    f, p = m.var("full", integer=True, lb=min_full), m.var("part", integer=True)
    m.add({f: h_full, p: h_part}, ">=", need)
    if budget:
        m.add({f: w_full, p: w_part}, "<=", budget)
    m.objective({f: w_full, p: w_part})
    style = rng.randrange(3)
    rule = f"At least {min_full} full-time employees must be on staff."
    cap = f" The weekly wage budget is {cur(budget)}." if budget else ""
    if style == 0:
        q = (
            f"{the_place} needs at least {need} staff hours per week. A full-time employee works {h_full} hours a "
            f"week and is paid {cur(w_full)} per week; a part-time employee works {h_part} hours and is paid "
            f"{cur(w_part)}. {rule}{cap} Employees are hired in whole numbers. How many of each should be hired "
            f"to minimize the weekly wage bill, and what is the minimum weekly wage bill?"
        )
    elif style == 1:
        q = (
            f"Staffing plan for {text.a(place)}:\n"
            + text.bullets(
                [
                    f"full-time: {h_full} hours/week, {cur(w_full)}/week",
                    f"part-time: {h_part} hours/week, {cur(w_part)}/week",
                ]
            )
            + f"\nThe {place} must be covered for at least {need} hours each week. {rule}{cap} The numbers of "
            f"employees must be whole numbers.\nMinimize the total weekly wages and report the minimum."
        )
    else:
        q = (
            f"The manager of {text.a(place)} can hire full-time staff ({h_full} h/week at {cur(w_full)}) and "
            f"part-time staff ({h_part} h/week at {cur(w_part)}). Together they must provide {need} or more hours "
            f"of work per week. {rule}{cap} Only whole employees can be hired. What is the smallest possible weekly "
            f"wage cost?"
        )
    data = {
        "kind": "two_types",
        "hours": [h_full, h_part],
        "wage": [w_full, w_part],
        "need": need,
        "min_full": min_full,
        "budget": budget,
    }
    return Instance(question=q, model=m, data=data, template=f"two_types/{style}")


def _shifts(rng: random.Random, infeasible: bool) -> Instance:
    place = rng.choice(PLACES)
    the_place = text.capital(text.a(place))
    cur = text.currency(rng)
    k = rng.choice((4, 6))  # periods must tile the 24 hours
    length = 24 // k
    starts = [f"{(length * t) % 24:02d}:00" for t in range(k)]
    periods = [f"{starts[t]}-{starts[(t + 1) % k]}" for t in range(k)]
    need = [rng.randint(2, 15) for _ in range(k)]
    wage = [rng.randint(8, 20) * 10 for _ in range(k)]
    cap = math.ceil(sum(need) / 2) - 1 - rng.randint(0, 2) if infeasible else 0
    m = LinearModel(sense="min")
    x = [m.var(f"x{t}", integer=True) for t in range(k)]
    for t in range(k):
        m.add({x[t]: 1, x[(t - 1) % k]: 1}, ">=", need[t])  # on duty in t: started in t or in t-1
    if cap:
        m.add({v: 1 for v in x}, "<=", cap)
    m.objective(dict(zip(x, wage, strict=True)))
    style = rng.randrange(3)
    reqs = text.bullets([f"{p}: at least {text.qty(r, 'workers')}" for p, r in zip(periods, need, strict=True)])
    pay = text.join([f"{cur(w)} for a shift starting at {s}" for s, w in zip(starts, wage, strict=True)])
    cap_s = f" No more than {cap} workers are available in total." if cap else ""
    if style == 0:
        q = (
            f"{the_place} operates around the clock. The day is divided into {k} periods of {length} hours, with "
            f"these minimum staffing levels:\n{reqs}\nEach worker works one shift of two consecutive periods "
            f"({2 * length} hours), starting at the beginning of any period; a shift that starts in the last "
            f"period continues into the first period of the next day, and the schedule repeats daily. A shift "
            f"costs {pay}.{cap_s} The numbers of workers must be whole numbers. How many workers should start at "
            f"each time to minimize the daily cost? What is the minimum daily cost?"
        )
    elif style == 1:
        q = (
            f"Shift planning at {text.a(place)}: every worker is on duty for {2 * length} consecutive hours, i.e. "
            f"two consecutive {length}-hour periods (the last period wraps around to the first; the plan repeats "
            f"every day). Required workers on duty per period:\n{reqs}\nWages per shift: {pay}.{cap_s} "
            f"Choose whole numbers of workers starting in each period to cover all periods at least cost, and "
            f"report the minimum total daily wage cost."
        )
    else:
        rows = text.bullets(
            [
                f"start {s}: on duty {periods[t]} and {periods[(t + 1) % k]}, wage {cur(wage[t])}"
                for t, s in enumerate(starts)
            ]
        )
        q = (
            f"{the_place} schedules workers in {2 * length}-hour shifts. The possible shifts are:\n{rows}\n"
            f"Each period needs a minimum number of workers on duty:\n{reqs}\n{cap_s.strip()} Workers are whole "
            f"people. Find the number of workers on each shift that meets every requirement at the lowest total "
            f"wage cost. What is that cost?"
        ).replace("\n Workers", "\nWorkers")
    data = {"kind": "shifts", "need": need, "wage": wage, "span": 2, "cap": cap}
    return Instance(question=q, model=m, data=data, template=f"shifts/{style}")


def _week(rng: random.Random, infeasible: bool) -> Instance:
    place = rng.choice(PLACES)
    the_place = text.capital(text.a(place))
    cur = text.currency(rng)
    need = [rng.randint(8, 25) for _ in DAYS]
    base = rng.randint(12, 20) * 50
    premium = rng.randint(1, 4) * 50
    # The weekly wage grows with the weekend days (Saturday, Sunday) inside the five-day block.
    weekend = [sum((d + s) % 7 >= 5 for s in range(5)) for d in range(7)]
    wage = [base + premium * w for w in weekend]
    cap = math.ceil(sum(need) / 5) - 1 - rng.randint(0, 2) if infeasible else 0
    m = LinearModel(sense="min")
    x = [m.var(f"x{d}", integer=True) for d in range(7)]
    for d in range(7):
        m.add({x[(d - s) % 7]: 1 for s in range(5)}, ">=", need[d])
    if cap:
        m.add({v: 1 for v in x}, "<=", cap)
    m.objective(dict(zip(x, wage, strict=True)))
    style = rng.randrange(3)
    reqs = ", ".join(f"{day} {n}" for day, n in zip(DAYS, need, strict=True))
    cap_s = f" At most {cap} employees can be hired in total." if cap else ""
    by_day = ", ".join(f"{day} {cur(w)}" for day, w in zip(DAYS, wage, strict=True))
    pay = (
        f"The weekly wage is {cur(base)} plus {cur(premium)} for each Saturday or Sunday in the employee's "
        f"five-day block, so by start day it is: {by_day}."
    )
    if style == 0:
        q = (
            f"{the_place} needs the following numbers of employees on duty each day of the week: {reqs}. Every "
            f"employee works five consecutive days and then has two days off, and the same schedule repeats "
            f"every week (a block starting Saturday covers Saturday to Wednesday). {pay}{cap_s} Employees are "
            f"whole people. How many employees should start on each day to minimize the weekly payroll? Give "
            f"the minimum weekly payroll."
        )
    elif style == 1:
        q = (
            f"Weekly rostering for {text.a(place)}. Minimum staff on duty: {reqs}. Each employee is assigned a "
            f"start day and then works 5 days in a row followed by 2 days off, repeating weekly (so the days wrap "
            f"around from Sunday to Monday). {pay}{cap_s} Decide the whole number of employees per start day "
            f"so that every day is covered at minimum total weekly cost, and report that cost."
        )
    else:
        rows = text.bullets(
            [
                f"{day}: at least {n} on duty; an employee starting that day costs {cur(w)} per week"
                for day, n, w in zip(DAYS, need, wage, strict=True)
            ]
        )
        q = (
            f"{the_place} uses a repeating weekly schedule in which every employee works 5 consecutive days, then "
            f"rests 2 (a Friday start works Friday to Tuesday).\n{rows}\n{cap_s.strip()} Only whole employees "
            f"can be hired. What is the minimum total weekly wage cost that covers every day?"
        ).replace("\n Only", "\nOnly")
    data = {"kind": "week", "need": need, "wage": wage, "span": 5, "cap": cap}
    return Instance(question=q, model=m, data=data, template=f"week/{style}")


def build_intro(rng: random.Random, infeasible: bool) -> Instance:
    return whole_at_intro(rng, lambda r: _intro(r, infeasible))


def _intro(rng: random.Random, infeasible: bool) -> Instance:
    place = rng.choice(PLACES)
    cur = text.currency(rng)
    h_full, h_part = rng.randint(6, 10), rng.randint(3, 5)
    w_full, w_part = rng.randint(5, 15) * 10, rng.randint(2, 8) * 10
    need = rng.randint(20, 60)
    min_full = rng.randint(1, need // h_full - 1) if not infeasible and rng.random() < 0.5 else 0
    budget = 0
    if infeasible:
        cheapest = need * min(w_full / h_full, w_part / h_part)  # the LP bound, below any whole plan's cost
        budget = max(10, math.floor(cheapest / 10) * 10 - rng.randint(1, 5) * 10)
    m = LinearModel(sense="min")
    f, p = m.var("full", integer=True), m.var("part", integer=True)
    m.add({f: h_full, p: h_part}, ">=", need)
    if min_full:
        m.add({f: 1}, ">=", min_full)
    if budget:
        m.add({f: w_full, p: w_part}, "<=", budget)
    m.objective({f: w_full, p: w_part})

    rules = [f"At least {text.plural(min_full, 'full-time employee')} must be on staff."] if min_full else []
    if budget:
        rules.append(f"The daily wage budget is {cur(budget)}.")
    rules.append("Employees are hired in whole numbers.")
    style = rng.randrange(3)
    if style == 0:
        q = (
            f"{text.capital(text.a(place))} needs at least {need} staff hours per day. A full-time employee works "
            f"{h_full} hours a day and is paid {cur(w_full)} per day; a part-time employee works {h_part} hours "
            f"and is paid {cur(w_part)} per day."
        )
    elif style == 1:
        rows = [
            f"full-time: {h_full} hours/day, {cur(w_full)}/day",
            f"part-time: {h_part} hours/day, {cur(w_part)}/day",
        ]
        q = f"Staffing plan for {text.a(place)}:\n{text.bullets(rows)}\n"
        q += f"The {place} needs {need} or more staff hours each day."
    else:
        q = (
            f"The manager of {text.a(place)} can hire full-time staff ({h_full} hours a day at {cur(w_full)}) and "
            f"part-time staff ({h_part} hours a day at {cur(w_part)}). Together they must provide at least {need} "
            f"hours of work per day."
        )
    q += f" {' '.join(rules)} What is the minimum total daily wage cost?"
    data = {
        "kind": "two_types",
        "hours": [h_full, h_part],
        "wage": [w_full, w_part],
        "need": need,
        "min_full": min_full,
        "budget": budget,
    }
    return Instance(question=q, model=m, data=data, template=f"intro/{style}")


FAMILY = FunctionFamily(
    name="staffing",
    summary="staffing and cyclic shift scheduling, whole workers (min cost)",
    builder=build,
    intro=build_intro,
)
