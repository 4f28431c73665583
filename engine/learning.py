"""Does it learn? Greedy pass@1 of the base model and of a run's final checkpoint on held-out problems.

    python -m engine.learning --config configs/learn-cpu.yaml [section.key=value ...]   # train, then measure
    python -m engine.learning runs/learn-cpu [--heldout-n 60] [--heldout-seed S]       # measure a finished run
    python -m engine.learning runs/learn-cpu --heldout-seed 2000 --output runs/learn-cpu/seed2000   # a cross-check
    make learn ARGS="run.seed=2 run.name=learn-cpu-s2"                                  # the first form

With `--config`, the run is trained first through `engine.run` (its directory is run.output_dir/run.name; a
directory that already holds the same run is resumed, or skipped when it is finished; one that holds a run of
another config is refused). Then, in RUN_DIR (or --output DIR):

- heldout.jsonl: `--heldout-n` problems (default 60) from the training distribution (the config's data.families,
  data.difficulty, data.infeasible_rate) with another generator seed (default data.seed + 1000; the training
  seed itself is refused); a problem whose question equals a training question, or an earlier held-out one, is
  dropped and replaced by the next draw. A run trained on a file needs `--heldout FILE` (checked disjoint from
  the training set by id and question).
- eval-before/, eval-after/: `engine.eval --config RUN_DIR/config.yaml` (the run's prompt, solver, extraction,
  answer rule and sampling length), one greedy sample per problem, of model.path and of the newest complete
  checkpoint. A complete directory of the same model and problems is reused, so a rerun repeats no finished work.
- learning.json, learning.md, learning.png: pass@1 before and after (binary correctness at the run's tolerance
  rule; shaping rewards never count), the gain with a paired-bootstrap 95% interval, the status mix of each side,
  wall times; the plot shows training reward and accuracy per step and the before/after status mix.

The last line printed is the verdict: LEARNED when the interval's lower bound is above zero and the gain is at
least 15 points (the target of issue #15); GAIN BELOW TARGET when the interval is above zero but the gain is
smaller; NO CLEAR GAIN otherwise. Bad input exits 2 and an unusable environment 1, each with one line on stderr
(engine/cli.py); files already written are never removed (an eval directory that cannot be reused is renamed
aside, not deleted).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.cli import exit_code
from engine.config import Config, ConfigError, load_config, to_dict
from engine.report import STATUS_COLORS, ReportError, integer_steps, load_run, plot_line, save_figure, write_atomic

if TYPE_CHECKING:
    from engine.data import Problem

HELDOUT_FILE, EVAL_BEFORE, EVAL_AFTER = "heldout.jsonl", "eval-before", "eval-after"
LEARNING_JSON, LEARNING_MD, LEARNING_PNG = "learning.json", "learning.md", "learning.png"
HELDOUT_SEED_OFFSET = 1000  # default held-out generator seed: data.seed + this
HELDOUT_DRAWS_PER_PROBLEM = 20  # give up when this many draws per wanted problem gave too few new questions
BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED = 10_000, 0
TARGET_GAIN_POINTS = 15.0
# Problems whose sample hit an infrastructure failure (not the model's doing) leave the comparison; above this
# share of the held-out set the measurement says more about the machine than the model and is refused.
MAX_INFRASTRUCTURE_SHARE = 0.1

# The status mix of the report, worst first, and where each verifier/eval status goes. Claims of infeasible or
# unbounded where the problem has an optimum are wrong answers; a timeout or a license limit is the program's
# failure to run; a prompt over the length limit got no program. Infrastructure statuses are counted apart.
MIX = ("no_code", "error", "no_solve", "wrong", "correct")
CATEGORY = {
    "no_code": "no_code",
    "prompt_too_long": "no_code",
    "error": "error",
    "timeout": "error",
    "license_limit": "error",
    "no_solve": "no_solve",
    "wrong": "wrong",
    "infeasible": "wrong",
    "unbounded": "wrong",
    "correct": "correct",
}
INFRASTRUCTURE = frozenset({"sandbox_error", "generation_error"})


class LearningError(ValueError):
    """Bad input (no run directory, no checkpoint, a held-out set that overlaps training); exit 2."""


class InfrastructureError(RuntimeError):
    """Too many samples failed for reasons outside the model (sandbox, generation backend); exit 1."""


# ----------------------------------------------------------------------------------------------- statistics


def paired_bootstrap(
    before: Sequence[bool], after: Sequence[bool], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """95% percentile interval of mean(after) - mean(before), resampling problems (pairs) with replacement.

    Efron & Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13 (percentile interval). Shares, not
    points; `before[i]` and `after[i]` are the same problem."""
    import numpy as np

    if len(before) != len(after) or not before:
        raise ValueError(f"paired_bootstrap needs two equally long, non-empty lists, got {len(before)}, {len(after)}")
    diffs = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // len(diffs))  # bounds the index matrix of one draw (n x chunk)
    means = np.concatenate(
        [
            diffs[rng.integers(0, len(diffs), size=(min(chunk, resamples - start), len(diffs)))].mean(axis=1)
            for start in range(0, resamples, chunk)
        ]
    )
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def category(status: str) -> str:
    """The mix category of an eval status (MIX); a status this module does not know counts as an error."""
    return CATEGORY.get(status, "error")


def verdict(gain_points: float, ci_low_points: float) -> str:
    if ci_low_points > 0 and gain_points >= TARGET_GAIN_POINTS:
        return "LEARNED"
    if ci_low_points > 0:
        return "GAIN BELOW TARGET"
    return "NO CLEAR GAIN"


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """The two evaluations paired by problem id, infrastructure failures left out."""

    ids: list[str]
    before: list[bool]
    after: list[bool]
    statuses: dict[str, Counter[str]]  # "before" / "after" -> raw eval status counts over `ids`
    excluded: list[str] = field(default_factory=list)  # ids with an infrastructure failure on either side

    @property
    def n(self) -> int:
        return len(self.ids)

    def mix(self, side: str) -> dict[str, int]:
        counts = Counter({name: 0 for name in MIX})
        for status, count in self.statuses[side].items():
            counts[category(status)] += count
        return {name: counts[name] for name in MIX}


def compare(before_items: Sequence[dict[str, Any]], after_items: Sequence[dict[str, Any]]) -> Comparison:
    """Pair two items.jsonl row lists (one sample per problem) by id."""
    sides = {"before": _by_id(before_items, "before"), "after": _by_id(after_items, "after")}
    if set(sides["before"]) != set(sides["after"]):
        only = sorted(set(sides["before"]) ^ set(sides["after"]))
        raise LearningError(f"the two evaluations cover different problems ({len(only)} differ, e.g. {only[:3]})")
    ids, excluded = [], []
    for pid in sides["before"]:
        bad = any(sides[side][pid]["status"] in INFRASTRUCTURE for side in sides)
        (excluded if bad else ids).append(pid)
    return Comparison(
        ids=ids,
        before=[bool(sides["before"][pid]["correct"]) for pid in ids],
        after=[bool(sides["after"][pid]["correct"]) for pid in ids],
        statuses={side: Counter(rows[pid]["status"] for pid in ids) for side, rows in sides.items()},
        excluded=excluded,
    )


def _by_id(items: Sequence[dict[str, Any]], side: str) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for item in items:
        if item["id"] in rows:
            raise LearningError(
                f"eval {side} has two samples of problem {item['id']!r}; pass@1 here is one greedy each"
            )
        rows[item["id"]] = item
    return rows


# ----------------------------------------------------------------------------------------------- held-out set


@dataclass(frozen=True, kw_only=True)
class HeldOut:
    problems: list[Problem]
    seed: int | None  # None: read from a file
    source: str
    dropped_train: int = 0  # draws whose question is a training question
    dropped_duplicate: int = 0  # draws whose question an earlier held-out problem already has


def generated_heldout(cfg: Config, *, n: int, seed: int) -> HeldOut:
    """`n` generated problems of the training distribution at `seed`, none with a training question."""
    from engine.data import iter_generated, load_train

    data = cfg.data
    if seed == data.seed:
        raise LearningError(f"--heldout-seed {seed} is the training seed (data.seed); pick another")
    draws = iter_generated(
        HELDOUT_DRAWS_PER_PROBLEM * n,
        families=data.families,
        difficulty=data.difficulty,
        seed=seed,
        infeasible_rate=data.infeasible_rate,
    )
    picked = pick_unseen(draws, {p.question for p in load_train(data).problems}, n=n)
    if len(picked.problems) < n:
        raise LearningError(
            f"only {len(picked.problems)} of {HELDOUT_DRAWS_PER_PROBLEM * n} generated problems (seed {seed}) have "
            "a question not in training or earlier in the held-out set; lower --heldout-n or vary data.*"
        )
    return dataclasses.replace(picked, seed=seed, source=f"generated, seed {seed}")


def pick_unseen(draws: Iterable[Problem], train_questions: Set[str], *, n: int) -> HeldOut:
    """The first `n` draws whose question is neither a training question nor an earlier draw's (fewer when the
    draws run out)."""
    kept: list[Problem] = []
    seen: set[str] = set()
    dropped_train = dropped_duplicate = 0
    for problem in draws:
        if problem.question in train_questions:
            dropped_train += 1
        elif problem.question in seen:
            dropped_duplicate += 1
        else:
            kept.append(problem)
            seen.add(problem.question)
            if len(kept) == n:  # stop before the next draw: each one costs a solve
                break
    return HeldOut(
        problems=kept, seed=None, source="draws", dropped_train=dropped_train, dropped_duplicate=dropped_duplicate
    )


def file_heldout(cfg: Config, path: Path, *, n: int) -> HeldOut:
    """The problems of `path`, refused when one shares an id or a question with the training set."""
    from engine.data import load_benchmark, load_train

    bench = load_benchmark(str(path))
    problems = list(bench.problems)
    if len(problems) < n:
        raise LearningError(f"--heldout {path} has {len(problems)} usable problems, fewer than --heldout-n {n}")
    train = load_train(cfg.data).problems
    train_ids, train_questions = {p.id for p in train}, {p.question for p in train}
    shared = [p.id for p in problems if p.id in train_ids or p.question in train_questions]
    if shared:
        raise LearningError(
            f"--heldout {path}: {len(shared)} problems share an id or a question with the training set "
            f"(e.g. {shared[:3]}); held-out problems must be unseen"
        )
    return HeldOut(problems=problems, seed=None, source=str(path))


def write_heldout(heldout: HeldOut, path: Path) -> None:
    text = "".join(p.to_json() + "\n" for p in heldout.problems)
    if not (path.is_file() and path.read_text(encoding="utf-8") == text):  # unchanged: keep it as it is
        write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


# ----------------------------------------------------------------------------------------------- evaluation


def eval_argv(run: Run, out: Path, model: str, output: Path, *, quiet: bool) -> list[str]:
    """engine.eval's command line for one side: the run's config decides prompt, solver, extraction, answer rule
    and sampling length (engine.eval --config); the sandbox flags give it the run's sandbox too."""
    sandbox = run.config.sandbox
    flags = {
        "--config": str(run.run_dir / "config.yaml"),
        "--model": model,
        "--benchmark": str(out / HELDOUT_FILE),
        "--output": str(output),
        "--samples": "1",
        "--temperature": "0",
        "--isolation": sandbox.isolation,
        "--workers": str(sandbox.workers),
        "--wall-s": f"{sandbox.limits.wall_s:g}",
        "--memory-mb": str(sandbox.limits.memory_mb),
    }
    argv = [part for flag, value in flags.items() for part in (flag, value)]
    return [*argv, "--quiet"] if quiet else argv


def reusable(output: Path, model: str, heldout: HeldOut) -> bool:
    """A finished evaluation of `model` on exactly these problems (engine.eval writes its directory whole)."""
    from engine.eval import ITEMS_FILE, SUMMARY_JSON
    from engine.records import read_jsonl

    if not (output / ITEMS_FILE).is_file() or not (output / SUMMARY_JSON).is_file():
        return False
    summary = json.loads((output / SUMMARY_JSON).read_text(encoding="utf-8"))
    if summary.get("model") != model or summary.get("samples") != 1 or summary.get("temperature") != 0:
        return False
    items = read_jsonl(output / ITEMS_FILE)
    expected = {(p.id, p.answer) for p in heldout.problems}
    if len(items) != len(expected) or {(i["id"], i["answer"]) for i in items} != expected:
        return False
    failed = sum(i["status"] in INFRASTRUCTURE for i in items)
    return failed <= MAX_INFRASTRUCTURE_SHARE * len(items)


def evaluate(run: Run, out: Path, side: str, model: str, heldout: HeldOut, *, quiet: bool) -> Path:
    """Run engine.eval for one side into out/side, or reuse that finished directory; returns the directory."""
    from engine.eval import main as eval_main

    output = out / side
    if reusable(output, model, heldout):
        print(f"learning: {side}: reusing the finished evaluation in {output}")
        return output
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        aside = output.with_name(f"{side}.replaced-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
        output.rename(aside)
        print(f"learning: {side}: {output} was for another model or problem set; moved to {aside}")
    print(f"learning: {side}: evaluating {model} on {len(heldout.problems)} held-out problems (greedy, 1 sample)")
    argv = eval_argv(run, out, model, output, quiet=quiet)
    code = eval_main(argv)
    if code != 0:
        raise EvalFailed(code)
    return output


class EvalFailed(Exception):
    """engine.eval exited non-zero after printing its own one-line error; its code is ours."""

    def __init__(self, code: int) -> None:
        super().__init__(f"engine.eval exited with {code}")
        self.code = code


# ----------------------------------------------------------------------------------------------- the run


@dataclass(frozen=True, kw_only=True)
class Run:
    run_dir: Path
    config: Config
    checkpoint: Path
    steps: int  # training steps in the checkpoint
    train_s: float  # sum of the steps' rollout and update times (metrics.jsonl)
    reward: list[tuple[int, float | None, float | None]]  # (step, reward_mean, accuracy) per metrics row


def open_run(run_dir: Path) -> Run:
    """The run's resolved config, newest complete checkpoint and metrics; LearningError when one is missing."""
    from learner.checkpoint import latest_checkpoint

    if not run_dir.is_dir():
        raise LearningError(f"run directory {run_dir} does not exist; pass runs/<name> of a training run")
    if not (run_dir / "config.yaml").is_file():
        raise LearningError(f"{run_dir} has no config.yaml: not a run directory (engine.run writes one)")
    try:
        config = load_config(run_dir / "config.yaml")
    except ConfigError as exc:
        raise LearningError(f"{run_dir}/config.yaml: {exc}") from None
    checkpoint = latest_checkpoint(run_dir / "checkpoints")
    if checkpoint is None:
        raise LearningError(f"{run_dir} has no complete checkpoint; train it to the end (engine.run --resume)")
    try:
        records = load_run(run_dir)
    except ReportError as exc:
        raise LearningError(str(exc)) from None
    steps = int(checkpoint.name.removeprefix("step_"))
    rows = [row for row in records.metrics if row["step"] < steps]
    return Run(
        run_dir=run_dir,
        config=config,
        checkpoint=checkpoint,
        steps=steps,
        train_s=sum((row.get("time_rollout_s") or 0.0) + (row.get("time_train_s") or 0.0) for row in rows),
        reward=[(row["step"], _number(row.get("reward_mean")), _number(row.get("accuracy"))) for row in rows],
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def train_first(config: Path, overrides: Sequence[str], *, quiet: bool) -> tuple[Path, int]:
    """Train (or resume, or skip a finished) run of `config` + `overrides`; (run directory, engine.run's code)."""
    from engine.run import main as run_main

    cfg = load_config(config, list(overrides))
    run_dir = Path(cfg.run.output_dir) / cfg.run.name
    argv = ["--config", str(config), *overrides, *(["--quiet"] if quiet else [])]
    holds_run = (run_dir / "metrics.jsonl").exists() or (run_dir / "checkpoints").exists()
    if holds_run and (run_dir / "config.yaml").is_file():
        differ = _differences(to_dict(load_config(run_dir / "config.yaml")), to_dict(cfg))
        if differ:
            raise LearningError(
                f"{run_dir} holds a run of another config ({'; '.join(differ[:3])}); "
                "pass run.name=<new name> to train this one, or measure that run with python -m engine.learning "
                f"{run_dir}"
            )
        print(f"learning: {run_dir} holds this run; resuming it (a finished run is not trained again)")
        argv.append("--resume")
    return run_dir, run_main(argv)


def _differences(saved: dict[str, Any], wanted: dict[str, Any], where: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(wanted)):
        a, b, name = saved.get(key), wanted.get(key), f"{where}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{name}.")
        elif a != b:
            out.append(f"{name}: {a!r} there, {b!r} here")
    return out


# ----------------------------------------------------------------------------------------------- results


def tolerance_rule(cfg: Config) -> dict[str, Any]:
    reward = cfg.solver.reward
    if reward.comparison == "orlm":
        text = f"round both to integers, then |pred - answer| / |answer| <= {reward.orlm_tolerance:g}"
        return {"comparison": "orlm", "tolerance": reward.orlm_tolerance, "text": text}
    text = f"|pred - answer| / (|answer| + 1) < {reward.tolerance:g}"
    return {"comparison": "relative", "tolerance": reward.tolerance, "text": text}


def results(run: Run, heldout: HeldOut, comparison: Comparison, eval_s: dict[str, float]) -> dict[str, Any]:
    """learning.json: shares in percent, the gain and its interval in percentage points."""
    cfg, n = run.config, comparison.n
    if n == 0:
        raise InfrastructureError("every held-out problem hit an infrastructure failure; nothing was measured")
    before, after = 100 * sum(comparison.before) / n, 100 * sum(comparison.after) / n
    lo, hi = paired_bootstrap(comparison.before, comparison.after)
    pairs = Counter(zip(comparison.before, comparison.after, strict=True))
    return {
        "run": run.run_dir.name,
        "units": "before, after: greedy pass@1 in percent; gain, gain_ci95: percentage points",
        "before": round(before, 2),
        "after": round(after, 2),
        "gain": round(after - before, 2),
        "gain_ci95": [round(100 * lo, 2), round(100 * hi, 2)],
        "n": n,
        "verdict": verdict(after - before, 100 * lo),
        "target": f"gain >= {TARGET_GAIN_POINTS:g} points and gain_ci95[0] > 0",
        "pairs": {
            "gained": pairs[(False, True)],
            "lost": pairs[(True, False)],
            "both_correct": pairs[(True, True)],
            "neither": pairs[(False, False)],
        },
        "solver": cfg.solver.name,
        "tolerance_rule": tolerance_rule(cfg),
        "base_model": cfg.model.path,
        "checkpoint": str(run.checkpoint),
        "steps": run.steps,
        "train_seed": cfg.data.seed,
        "heldout_seed": heldout.seed,
        "heldout": {
            "file": HELDOUT_FILE,
            "source": heldout.source,
            "problems": len(heldout.problems),
            "dropped_as_training_question": heldout.dropped_train,
            "dropped_as_duplicate": heldout.dropped_duplicate,
            "families": list(cfg.data.families) or "all with data.difficulty",
            "difficulty": cfg.data.difficulty,
            "infeasible_rate": cfg.data.infeasible_rate,
        },
        "status_mix": {"before": comparison.mix("before"), "after": comparison.mix("after")},
        "statuses": {side: dict(comparison.statuses[side].most_common()) for side in ("before", "after")},
        "excluded_infrastructure": {"count": len(comparison.excluded), "ids": comparison.excluded},
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "interval": "percentile, paired"},
        "wall_s": {"train": round(run.train_s, 1), **{k: round(v, 1) for k, v in eval_s.items()}},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def verdict_line(res: dict[str, Any]) -> str:
    lo, hi = res["gain_ci95"]
    return (
        f"learning: greedy pass@1 {res['before']:.1f}% -> {res['after']:.1f}% ({res['gain']:+.1f} points, "
        f"95% CI {lo:+.1f}..{hi:+.1f}) on {res['n']} held-out problems: {res['verdict']}"
    )


def markdown(res: dict[str, Any], eval_commands: dict[str, list[str]]) -> str:
    pairs, held, rule = res["pairs"], res["heldout"], res["tolerance_rule"]
    n, lo, hi = res["n"], *res["gain_ci95"]
    correct = {side: res["status_mix"][side]["correct"] for side in ("before", "after")}
    lines = [
        f"# Does it learn? run `{res['run']}`",
        "",
        f"**{verdict_line(res).removeprefix('learning: ')}**",
        "",
        "| | greedy pass@1 | correct / n |",
        "|---|---|---|",
        f"| before: base model `{res['base_model']}` | {res['before']:.1f}% | {correct['before']} / {n} |",
        f"| after: `{res['checkpoint']}` ({res['steps']} steps) | {res['after']:.1f}% | {correct['after']} / {n} |",
        f"| gain | {res['gain']:+.1f} points (95% CI {lo:+.1f}..{hi:+.1f}) "
        f"| {pairs['gained']} gained, {pairs['lost']} lost |",
        "",
        "Status mix (problems):",
        "",
        "| | " + " | ".join(MIX) + " |",
        "|---|" + "---|" * len(MIX),
        *(f"| {side} | " + " | ".join(str(res["status_mix"][side][m]) for m in MIX) + " |" for side in res["statuses"]),
        "",
        f"![before and after]({LEARNING_PNG})",
        "",
        "## What the numbers mean",
        "",
        f"- pass@1: the share of the {n} held-out problems whose one greedy completion the sandbox ran and the "
        f"verifier judged correct with `{res['solver']}`: binary, at the run's answer rule ({rule['text']}). "
        "Shaping rewards of training never count here.",
        f"- The gain's interval: a paired bootstrap over problems ({BOOTSTRAP_RESAMPLES} resamples with "
        f"replacement, seed {BOOTSTRAP_SEED}, percentile 2.5..97.5). Verdict: LEARNED when the lower bound is "
        f"above zero and the gain is at least {TARGET_GAIN_POINTS:g} points; GAIN BELOW TARGET when only the "
        "first holds; NO CLEAR GAIN otherwise.",
        "- Status mix: infeasible or unbounded claims on a problem with an optimum count as wrong; timeouts and "
        "license limits as errors; a prompt over the length limit as no_code. Sandbox and generation failures "
        f"(infrastructure) leave the comparison: {res['excluded_infrastructure']['count']} problems here.",
        "",
        "## How it was made",
        "",
        f"- Training: {res['steps']} steps, {res['wall_s']['train']:.0f} s of rollout and update "
        f"(metrics.jsonl), data.seed {res['train_seed']}.",
        f"- Held-out set: {held['problems']} problems in `{held['file']}` ({held['source']}; difficulty "
        f"{held['difficulty']}, families {held['families']}, infeasible_rate {held['infeasible_rate']:g}); "
        f"{held['dropped_as_training_question']} draws dropped as training questions, "
        f"{held['dropped_as_duplicate']} as repeats.",
        f"- Evaluation: {res['wall_s'].get('eval', 0.0):.0f} s in all, with",
        *(f"  `python -m engine.eval {' '.join(argv)}`" for argv in eval_commands.values()),
        f"- Written {res['created']} by `python -m engine.learning`.",
        "",
    ]
    return "\n".join(lines)


def plot(run: Run, res: dict[str, Any], path: Path) -> Path:
    steps = [s for s, _, _ in run.reward]
    series = {"reward (shaped)": [r for _, r, _ in run.reward], "accuracy": [a for _, _, a in run.reward]}

    def draw(fig: Any) -> None:
        left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
        for (label, values), color in zip(series.items(), ("tab:blue", "tab:green"), strict=True):
            smooth = _smoothed(values)
            plot_line(left, steps, values, label, color=color, alpha=0.35 if smooth else 1.0)
            if smooth:
                plot_line(left, steps, smooth, f"{label}, mean of {_window(len(values))}", color=color)
        left.set(title="Training", xlabel="step", ylabel="mean over judged samples")
        left.grid(alpha=0.3)
        integer_steps(left)
        if left.get_legend_handles_labels()[0]:
            left.legend(fontsize=8)
        sides = ("before", "after")
        bottom = [0.0, 0.0]
        for name in reversed(MIX):  # correct at the bottom: its height is pass@1
            shares = [res["status_mix"][side][name] / res["n"] for side in sides]
            right.bar(sides, shares, bottom=bottom, width=0.6, label=name, color=STATUS_COLORS.get(name))
            bottom = [b + s for b, s in zip(bottom, shares, strict=True)]
        for x, side in enumerate(sides):
            right.text(x, 1.02, f"pass@1 {res[side]:.1f}%", ha="center", va="bottom", fontsize=9)
        right.set(title=f"Held-out, greedy (n={res['n']})", ylabel="share of problems", ylim=(0, 1.12))
        handles, labels = right.get_legend_handles_labels()
        right.legend(handles[::-1], labels[::-1], fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.suptitle(verdict_line(res).removeprefix("learning: "), fontsize=9)

    return save_figure(draw, path, size=(11.0, 4.2))


def _window(count: int) -> int:
    return max(3, count // 8)


def _smoothed(values: list[float | None]) -> list[float | None] | None:
    """A trailing mean over `_window` steps when there are enough steps for it to say more than the points."""
    if len(values) < 12:
        return None
    window = _window(len(values))
    out: list[float | None] = []
    for i in range(len(values)):
        recent = [v for v in values[max(0, i - window + 1) : i + 1] if v is not None]
        out.append(sum(recent) / len(recent) if recent else None)
    return out


# ----------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.learning", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "target",
        nargs="*",
        metavar="RUN_DIR | section.key=value",
        help="a run directory, or with --config the overrides of the run to train first",
    )
    p.add_argument("--config", type=Path, help="train this config (+ overrides) with engine.run first")
    p.add_argument("--heldout-n", type=int, default=60, help="held-out problems (default 60)")
    p.add_argument("--heldout-seed", type=int, help=f"generator seed (default data.seed + {HELDOUT_SEED_OFFSET})")
    p.add_argument("--heldout", type=Path, help="a held-out JSONL file instead of generated problems")
    p.add_argument("--output", type=Path, help="where heldout.jsonl, eval-*/ and learning.* go (default RUN_DIR)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def command(args: argparse.Namespace) -> int:
    if args.heldout_n < 1:
        raise LearningError(f"--heldout-n must be >= 1, got {args.heldout_n}")
    if args.config is not None:
        run_dir, code = train_first(args.config, args.target, quiet=args.quiet)
        if code != 0:
            return code
    elif len(args.target) == 1 and "=" not in args.target[0]:
        run_dir = Path(args.target[0])
    else:
        raise LearningError("give one run directory (runs/<name>), or --config FILE [section.key=value ...]")
    return measure(open_run(run_dir), args)


def measure(run: Run, args: argparse.Namespace) -> int:
    from engine.eval import ITEMS_FILE, SUMMARY_JSON
    from engine.records import read_jsonl

    cfg = run.config
    if args.heldout is not None:
        heldout = file_heldout(cfg, args.heldout, n=args.heldout_n)
    elif cfg.data.train != "generated":
        raise LearningError(f"data.train is {cfg.data.train!r}, not generated: pass --heldout FILE of unseen problems")
    else:
        seed = args.heldout_seed if args.heldout_seed is not None else cfg.data.seed + HELDOUT_SEED_OFFSET
        heldout = generated_heldout(cfg, n=args.heldout_n, seed=seed)
    out = args.output or run.run_dir
    out.mkdir(parents=True, exist_ok=True)
    write_heldout(heldout, out / HELDOUT_FILE)
    print(
        f"learning: {len(heldout.problems)} held-out problems ({heldout.source}; {heldout.dropped_train} dropped as "
        f"training questions, {heldout.dropped_duplicate} as repeats) in {out / HELDOUT_FILE}"
    )
    models = {EVAL_BEFORE: cfg.model.path, EVAL_AFTER: str(run.checkpoint)}
    outputs = {side: evaluate(run, out, side, model, heldout, quiet=args.quiet) for side, model in models.items()}
    items = {side: read_jsonl(out / ITEMS_FILE) for side, out in outputs.items()}
    comparison = compare(items[EVAL_BEFORE], items[EVAL_AFTER])
    if len(comparison.excluded) > MAX_INFRASTRUCTURE_SHARE * len(heldout.problems):
        raise InfrastructureError(
            f"{len(comparison.excluded)} of {len(heldout.problems)} held-out problems hit a sandbox or generation "
            "failure; fix the environment (python -m engine.run --dry-run checks it) and rerun"
        )
    walls = {
        side: json.loads((out / SUMMARY_JSON).read_text(encoding="utf-8"))["wall_s"] for side, out in outputs.items()
    }
    eval_s = {f"eval_{side.removeprefix('eval-')}": wall for side, wall in walls.items()}
    res = results(run, heldout, comparison, {**eval_s, "eval": sum(walls.values())})
    commands = {side: eval_argv(run, out, models[side], output, quiet=False) for side, output in outputs.items()}
    as_json = json.dumps(res, indent=2) + "\n"
    write_atomic(out / LEARNING_JSON, lambda tmp: Path(tmp).write_text(as_json, encoding="utf-8"))
    write_atomic(out / LEARNING_MD, lambda tmp: Path(tmp).write_text(markdown(res, commands), encoding="utf-8"))
    plot(run, res, out / LEARNING_PNG)
    print(f"learning: wrote {out / LEARNING_JSON}, {LEARNING_MD}, {LEARNING_PNG}")
    print(verdict_line(res))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Bad input -> exit 2, unusable environment -> exit 1, one line each (engine/cli.py); a failing training or
    evaluation step has printed its own line and its exit code is returned."""
    args = build_parser().parse_intermixed_args(argv)

    def body() -> int:
        try:
            return command(args)
        except EvalFailed as failed:
            return failed.code

    return exit_code(
        body,
        bad_input=(LearningError, ConfigError),
        environment=(InfrastructureError,),
        interrupted="finished evaluations are kept and reused on a rerun",
    )


if __name__ == "__main__":
    sys.exit(main())
