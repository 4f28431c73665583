"""How each bench's output becomes one row of bench/RESULTS.md: a `Headline` per run, the ratio of EVOM against
the alternative next to the bench's target, read from the bench's JSON or markdown report (bench/run_all.py)."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Headline:
    """One run's result: `ratio` of EVOM against the alternative, with both sides' timings.

    `higher_is_better` says which way the worst run lies (the lowest ratio for a ">=" target)."""

    comparison: str
    ratio: float | None
    target: str
    met: bool | None
    evom: str
    alternative: str
    higher_is_better: bool = True


def spread(d: dict[str, Any], *, unit: str = "s", median: str = "median", low: str = "min", high: str = "max") -> str:
    return f"{d[median]:.3g} {unit} [{d[low]:.3g} .. {d[high]:.3g}]"


def step_spread(d: dict[str, Any]) -> str:
    """trl_bench's per-arm step summary ({"median_s", "min_s", "max_s"}) as `spread` writes it."""
    return spread(d, median="median_s", low="min_s", high="max_s")


def list_spread(values: list[float], unit: str = "s") -> str:
    ordered = sorted(values)
    return f"{ordered[len(ordered) // 2]:.3g} {unit} [{ordered[0]:.3g} .. {ordered[-1]:.3g}]"


def rollout_headline(r: dict[str, Any]) -> Headline:
    ratio = r["ratio_pipelined_over_synchronous"]
    return Headline(
        comparison="pipelined step / synchronous step (time)",
        ratio=ratio,
        target="<= 0.8",
        met=ratio <= 0.8,
        evom=list_spread(r["pipelined_s"]),
        alternative=list_spread(r["synchronous_s"]),
        higher_is_better=False,
    )


def learner_headline(r: dict[str, Any]) -> Headline:
    ratio = r["ratio_learner_to_floor_wall"]
    shape = "unrelated sequences" if r["group_size"] == 1 else f"GRPO groups of {r['group_size']} sharing a prompt"
    return Headline(
        comparison=f"Learner.step / plain fwd+bwd+AdamW (wall time, {shape})",
        ratio=ratio,
        target="<= 1.15",
        met=ratio <= 1.15,
        evom=spread(r["wall_s"]["learner"]),
        alternative=spread(r["wall_s"]["floor"]),
        higher_is_better=False,
    )


def generation_headline(r: dict[str, Any]) -> Headline:
    res = r["results"]
    ratio = res["local_compact"]["vs_generate"]  # the backend's default (shared cache, compact rows)
    keys = {"median": "median_tok_s", "low": "min", "high": "max", "unit": "tok/s"}
    return Headline(
        comparison=f"local backend tokens/s / model.generate tokens/s ({r['args']['model']} model)",
        ratio=ratio,
        target=">= 1.5",
        met=ratio >= 1.5,
        evom=spread(res["local_compact"], **keys),
        alternative=spread(res["hf_generate"], **keys),
    )


def trl_headline(r: dict[str, Any]) -> Headline:
    ratio = r["ratio_trl_over_evom"]
    tokens = sorted({n for arm in r.get("tokens", {}).values() for n in arm})
    work = f", {tokens[0]} generated tokens a step on both sides" if r.get("fixed_length") and len(tokens) == 1 else ""
    return Headline(
        comparison=f"TRL GRPOTrainer step time / EVOM step time{work}",
        ratio=ratio,
        target=">= 2.5",
        met=ratio >= 2.5,
        evom=step_spread(r["evom_step"]),
        alternative=step_spread(r["trl_step"]),
    )


CUT_PHASES = ("optimizer", "weight_sync_copy")  # what issue 20's cuts changed: the AdamW step, the tied weight's copy


def cuts_headline(r: dict[str, Any]) -> Headline:
    """trl_bench --cuts-ab: the phases the cuts of issue 20 changed, after / before (their summed medians); the
    whole step's times are in the cells (its ratio moves with generation lengths more than with these phases)."""
    tables = r["phase_table"]
    before, after = (sum(tables[side][p]["median_s"] for p in CUT_PHASES) for side in ("before", "after"))
    ratio = after / before
    steps = r["step"]
    whole = f"whole step {r['ratio_after_over_before']:.2f}x: "
    return Headline(
        comparison="optimizer + weight copy time after the cuts / before them (fused AdamW, tied weight copied once)",
        ratio=ratio,
        target="< 1",
        met=ratio < 1,
        evom=f"{after:.3g} s ({whole}{step_spread(steps['after'])})",
        alternative=f"{before:.3g} s (step {step_spread(steps['before'])})",
        higher_is_better=False,
    )


def sandbox_headline(markdown: str) -> Headline:
    """The gurobipy suite: the first targets row and the first results table of sandbox_bench's report."""
    row = re.search(r"^\| gurobipy[^|]*\| ([\d.]+)x \(target >= ([\d.]+)x\)", markdown, re.M)
    warm = re.search(r"^\| warm pool \| ([\d.]+) \| ([\d.-]+) \|", markdown, re.M)
    cold = re.search(r"^\| cold nsjail \| ([\d.]+) \| ([\d.-]+) \|", markdown, re.M)
    if not (row and warm and cold):
        raise ValueError("no gurobipy targets row or results table in the sandbox report")
    ratio, target = float(row[1]), float(row[2])
    return Headline(
        comparison="cold nsjail per program / warm pool (gurobipy programs, median latency)",
        ratio=ratio,
        target=f">= {target:g}",
        met=ratio >= target,
        evom=f"{warm[1]} ms [IQR {warm[2]}]",
        alternative=f"{cold[1]} ms [IQR {cold[2]}]",
    )


def peers_headline(markdown: str) -> Headline:
    """The gurobipy suite of sandbox_peers' report: the first results table's warm pool and exec pool rows, and the
    exec pool that forks per program when the report has it.

    No target: issue 18's (warm pool >= 1x the exec pool) cannot hold while the exec pool reuses one process
    for every program, which isolation between untrusted programs rules out; the issue ended blocked on
    restating it (bench/NOTES.md, "Sandbox peers")."""
    ours = re.search(r"^\| warm pool \| \d+/\d+ \| ([\d.]+) \|", markdown, re.M)
    bare = re.search(r"^\| exec pool \| \d+/\d+ \| ([\d.]+) \|", markdown, re.M)
    forking = re.search(r"^\| exec pool, fork per program \| \d+/\d+ \| ([\d.]+) \|", markdown, re.M)
    if not (ours and bare and "gurobipy" in markdown):
        raise ValueError("no gurobipy results table in the sandbox-peers report")
    alternative = f"{bare[1]} programs/s"
    if forking:
        alternative += f" (forking per program: {forking[1]}, warm pool {float(ours[1]) / float(forking[1]):.2f}x)"
    return Headline(
        comparison="warm pool + harness programs/s / unisolated exec pool programs/s (gurobipy programs, 2 in flight)",
        ratio=float(ours[1]) / float(bare[1]),
        target="none (issue 18 ended blocked on restating it)",
        met=None,
        evom=f"{ours[1]} programs/s",
        alternative=alternative,
    )


def chaos_classes(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per fault class, bench/chaos.py's headline numbers: its --json table ({class: {faults, lost, wrongly_scored,
    recovery_median_s, recovery_max_s, recovery_bound_s, throughput_ratio, passed, ...}}), or the full report of
    one class that its older --out wrote (a `fault` key), reduced to the same fields."""
    if "fault" in r:
        faulty, rec = r["samples"]["faults"], r["recovery_s"]
        faults = r["faults_injected"]
        return {
            r["fault"]: {
                "faults": faults["total"] if isinstance(faults, dict) else faults,
                "lost": faulty["lost"],
                "wrongly_scored": faulty["wrongly_scored"],
                "recovery_median_s": rec["median"],
                "recovery_max_s": rec["max"],
                "recovery_bound_s": rec["bound"],
                "throughput_ratio": r["throughput"]["ratio"],
                "passed": not faulty["lost"] and not faulty["wrongly_scored"] and bool(rec["within_bound"]),
            }
        }
    if r and all(isinstance(c, dict) and "throughput_ratio" in c for c in r.values()):
        return r
    raise ValueError("no fault class in the chaos report (neither its --json table nor a `fault` report)")


def chaos_headline(r: dict[str, Any]) -> Headline:
    """Throughput under faults / without, over every fault class (the lowest); met when every class passed: no
    sample lost, duplicated or wrongly scored, every recovery within its bound."""
    ratios, parts = [], []
    classes = chaos_classes(r)
    for name, c in classes.items():
        ratios.append(float(c["throughput_ratio"]))
        parts.append(
            f"{name}: {c['faults']} faults, {c['lost']} lost, {c['wrongly_scored']} wrongly scored, recovery median "
            f"{_num(c['recovery_median_s'])} s / max {_num(c['recovery_max_s'])} s (bound {c['recovery_bound_s']} s)"
        )
    return Headline(
        comparison="samples/s under faults / without faults, the lowest over the fault classes",
        ratio=min(ratios),
        target="0 lost, 0 wrongly scored, recovery within bound",
        met=all(bool(c["passed"]) for c in classes.values()),
        evom="; ".join(parts),
        alternative="the same load without faults",
    )


def exec_cache_headline(r: dict[str, Any]) -> Headline:
    t = r["total"]
    rate = t["cache_hit_rate"]
    return Headline(
        comparison="replay of a run's verifications: wall time without / with the execution cache",
        ratio=t["wall_ratio_no_cache_over_cache"],
        target="outcomes match",
        met=bool(t["outcomes_match"]),
        evom=f"{t['wall_cache_s']:.3g} s (hit rate {'-' if rate is None else f'{rate:.2f}'}, "
        f"{t['cache_saved_s']:.3g} sandbox s saved, {t['completions']} completions)",
        alternative=f"{t['wall_no_cache_s']:.3g} s",
    )


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:.3g}"


def phase_medians(results: list[dict[str, Any]], sides: tuple[str, str]) -> tuple[int, dict[str, list[float | None]]]:
    """From trl_bench's JSON of each run: how many runs have a phase table, and per phase the median over those
    runs of each run's median for each of `sides` (None where no run has that phase on that side)."""
    tables = [r["phase_table"] for r in results if "phase_table" in r]
    phases = dict.fromkeys(k for t in tables for side in sides for k in t.get(side, {}))

    def median(side: str, phase: str) -> float | None:
        values = [t[side][phase]["median_s"] for t in tables if phase in t.get(side, {})]
        return statistics.median(values) if values else None

    return len(tables), {p: [median(side, p) for side in sides] for p in phases}


def _seconds(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def trl_phase_details(results: list[dict[str, Any]]) -> list[str]:
    """Per phase of a step, the median over the runs of each run's median (EVOM and TRL), from trl_bench's JSON."""
    runs, medians = phase_medians(results, ("evom", "trl"))
    if not runs:
        return []
    lines = [
        "",
        f"Where a step's time goes (seconds; each run's median over its timed steps, then the median over "
        f"{runs} run(s); phases as bench/trl_bench.py's PHASES define them):",
        "",
        "| phase | EVOM | TRL |",
        "|---|---:|---:|",
        *(f"| {p} | {_seconds(evom)} | {_seconds(trl)} |" for p, (evom, trl) in medians.items()),
    ]
    saves = [(r["checkpoint_s"], r.get("save_every")) for r in results if "checkpoint_s" in r]
    if saves:
        seconds = statistics.median(s for s, _ in saves)
        lines += [
            "",
            f"A checkpoint (weights + optimizer state) took {seconds:.2f} s (median over the runs); engine.run saves "
            f"one every run.save_every = {saves[0][1]} steps, not part of the timed step (TRL's arm saves none).",
        ]
    return lines


def cuts_phase_details(results: list[dict[str, Any]]) -> list[str]:
    """Per phase of an EVOM step, before and after the cuts: the median over the runs of each run's median."""
    runs, medians = phase_medians(results, ("before", "after"))
    if not runs:
        return []

    def row(phase: str, before: float | None, after: float | None) -> str:
        ratio = f"{after / before:.2f}x" if before and after is not None else "-"
        return f"| {phase} | {_seconds(before)} | {_seconds(after)} | {ratio} |"

    return [
        "",
        f"An EVOM step phase by phase, before and after the cuts (seconds; each run's median over its timed steps, "
        f"then the median over {runs} run(s); phases as bench/trl_bench.py's PHASES define them):",
        "",
        "| phase | before | after | after / before |",
        "|---|---:|---:|---:|",
        *(row(p, before, after) for p, (before, after) in medians.items()),
    ]
