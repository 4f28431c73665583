"""Plots and a summary of a training run: `python -m engine.report RUN_DIR [--output DIR]`.

Reads RUN_DIR/metrics.jsonl (one row per step, see `engine.records.StepStats`) and, when present,
RUN_DIR/samples.jsonl, and writes into RUN_DIR/report/ (or --output):

- reward.png       reward (after shaping) and verifier score, and accuracy (and per solver, in a run that mixes
                   solvers), per step
- status_mix.png   share of each verification status per step, stacked
- errors.png       share of samples per failure kind per step (solvers.failures), stacked over the correct ones
- time_split.png   seconds per step spent generating, waiting for verification, and training, stacked
- report.md        steps, final and peak reward and accuracy (each solver's too), tokens/s, the time split,
                   filtered groups, failures

A missing run directory, or one without metrics rows, exits 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from solvers.failures import ERROR_KINDS

REPORT_DIR = "report"
STATUS_PREFIX, FILTERED_PREFIX, ERRORS_PREFIX, SOLVER_PREFIX = "status/", "filtered/", "errors/", "by_solver/"
# Fixed colours, so a status looks the same in every report (others take matplotlib's cycle).
STATUS_COLORS = {
    "correct": "tab:green",
    "wrong": "tab:orange",
    "infeasible": "tab:olive",
    "unbounded": "tab:pink",
    "no_solve": "tab:purple",
    "error": "tab:red",
    "timeout": "tab:brown",
    "no_code": "tab:gray",
    "license_limit": "tab:cyan",
    "sandbox_error": "black",
}
# One colour per failure kind, stacked in the order a program meets them (solvers.failures.ERROR_KINDS): failures
# to run in warm colours, wrong answers in purples, infrastructure in black.
ERROR_COLORS = {
    "correct": "tab:green",
    "no_code": "tab:gray",
    "syntax": "#8c1c13",
    "import": "#bf4342",
    "solver_api": "tab:red",
    "type_value": "#e76f51",
    "runtime": "tab:orange",
    "solver_error": "#f4a261",
    "memory": "tab:brown",
    "timeout": "#a0522d",
    "license_limit": "tab:cyan",
    "no_solve": "#c5b0d5",
    "wrong_claim": "tab:pink",
    "wrong_objective": "tab:purple",
    "infrastructure": "black",
}
# (metrics key, label) of the three phases of a step, in the order they are stacked.
TIME_SPLIT = (
    ("time_generating_s", "generate"),
    ("time_waiting_verify_s", "verify wait"),
    ("time_train_s", "train"),
)


class ReportError(ValueError):
    """The run directory cannot be reported on; the message says why and what to do (exit 2)."""


@dataclass(frozen=True, kw_only=True)
class RunRecords:
    run_dir: Path
    metrics: list[dict[str, Any]]  # sorted by step
    samples: list[dict[str, Any]]

    @property
    def steps(self) -> list[int]:
        return [int(row["step"]) for row in self.metrics]

    def series(self, key: str) -> list[float | None]:
        return [_number(row.get(key)) for row in self.metrics]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _read_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                # The last line of a run killed mid-write can be cut; anything else is a corrupt file.
                raise ReportError(f"{path}:{number}: not valid JSON ({exc.msg}); fix or remove that line") from None
            if isinstance(row, dict):
                rows.append(row)
    return rows


def load_run(run_dir: Path) -> RunRecords:
    if not run_dir.is_dir():
        raise ReportError(f"run directory {run_dir} does not exist; pass runs/<name> of a training run")
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        raise ReportError(f"{run_dir} has no metrics.jsonl: not a run directory, or the run has not finished a step")
    metrics = sorted((r for r in _read_rows(metrics_path) if isinstance(r.get("step"), int)), key=lambda r: r["step"])
    if not metrics:
        raise ReportError(f"{metrics_path} holds no step rows yet; report once the run has finished a step")
    samples_path = run_dir / "samples.jsonl"
    samples = _read_rows(samples_path) if samples_path.is_file() else []
    return RunRecords(run_dir=run_dir, metrics=metrics, samples=samples)


def status_counts(records: RunRecords) -> dict[str, list[float]]:
    """Per status, its count at each step: the metrics' status/<name> counters, else counted from samples."""
    return _counts(records, STATUS_PREFIX, "status")


def _counts(records: RunRecords, prefix: str, field: str) -> dict[str, list[float]]:
    """Per name, its count at each step: the metrics' <prefix><name> counters, else counted from the samples'
    `field` (a run from before the counter existed)."""
    names = sorted({k.removeprefix(prefix) for row in records.metrics for k in row if k.startswith(prefix)})
    if names:
        return {name: [float(row.get(prefix + name) or 0) for row in records.metrics] for name in names}
    per_step = {step: Counter() for step in records.steps}
    for sample in records.samples:
        if sample.get("step") in per_step and isinstance(sample.get(field), str):
            per_step[sample["step"]][sample[field]] += 1
    names = sorted({name for counts in per_step.values() for name in counts})
    return {name: [float(per_step[step][name]) for step in records.steps] for name in names}


def solver_names(records: RunRecords) -> list[str]:
    """The solvers a mixed-solver run reports metrics for (`by_solver/<name>/...`), sorted."""
    keys = (k.removeprefix(SOLVER_PREFIX) for row in records.metrics for k in row if k.startswith(SOLVER_PREFIX))
    return sorted({key.partition("/")[0] for key in keys})


def error_counts(records: RunRecords) -> dict[str, list[float]]:
    """Per failure kind, its count at each step (errors/<kind> counters, else the samples' error_kind), in the
    order of `solvers.failures.ERROR_KINDS` (unknown kinds after them)."""
    counts = _counts(records, ERRORS_PREFIX, "error_kind")
    order = [k for k in ERROR_KINDS if k in counts] + sorted(set(counts) - set(ERROR_KINDS))
    return {k: counts[k] for k in order}


# ----------------------------------------------------------------------------------------------- plots


def save_figure(plot: Callable[[Any], None], path: Path, *, size: tuple[float, float] = (7.0, 4.0)) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=size, dpi=110)
    try:
        plot(fig)
        fig.tight_layout()
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path


def plot_line(ax: Any, steps: list[int], values: list[float | None], label: str, **style: Any) -> None:
    points = [(s, v) for s, v in zip(steps, values, strict=True) if v is not None]
    if points:
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o" if len(points) < 40 else None, markersize=3, label=label, **style)


def plot_reward(records: RunRecords, path: Path) -> Path:
    steps = records.steps

    def draw(fig: Any) -> None:
        left, right = fig.subplots(1, 2, sharex=True)
        plot_line(left, steps, records.series("reward_mean"), "reward (shaped)")
        plot_line(left, steps, records.series("score_mean"), "verifier score", linestyle="--")
        left.set(title="Reward", xlabel="step", ylabel="mean over judged samples")
        plot_line(right, steps, records.series("accuracy"), "accuracy", color="tab:green")
        for name in solver_names(records):
            plot_line(right, steps, records.series(f"{SOLVER_PREFIX}{name}/accuracy"), name, linestyle=":")
        right.set(title="Accuracy", xlabel="step", ylabel="share correct", ylim=(-0.02, 1.02))
        for ax in (left, right):
            ax.grid(alpha=0.3)
            integer_steps(ax)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)

    return save_figure(draw, path, size=(10.0, 4.0))


def integer_steps(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _stacked_bars(
    ax: Any, steps: list[int], layers: dict[str, list[float]], colors: dict[str, str] | None = None
) -> None:
    bottom = [0.0] * len(steps)
    for label, values in layers.items():
        ax.bar(steps, values, bottom=bottom, width=0.8, label=label, color=(colors or {}).get(label))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    handles, labels = ax.get_legend_handles_labels()  # listed top-down, as the layers are stacked
    ax.legend(handles[::-1], labels[::-1], fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(alpha=0.3, axis="y")
    integer_steps(ax)


def plot_status_mix(records: RunRecords, path: Path) -> Path:
    counts = status_counts(records)
    totals = [sum(values) for values in zip(*counts.values(), strict=True)] if counts else []
    shares = {
        name: [v / t if t else 0.0 for v, t in zip(values, totals, strict=True)] for name, values in counts.items()
    }

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        if shares:
            _stacked_bars(ax, records.steps, shares, STATUS_COLORS)
        ax.set(title="Verification status per step", xlabel="step", ylabel="share of samples", ylim=(0, 1.0))

    return save_figure(draw, path, size=(8.0, 4.0))


def plot_errors(records: RunRecords, path: Path) -> Path:
    """Failure kinds per step as shares of all samples, stacked over the correct share, so a bar is the whole step."""
    kinds = error_counts(records)
    statuses = status_counts(records)
    totals = (
        [sum(values) for values in zip(*statuses.values(), strict=True)] if statuses else [0.0] * len(records.steps)
    )
    layers = {"correct": statuses.get("correct", [0.0] * len(records.steps)), **kinds}
    shares = {
        name: [v / t if t else 0.0 for v, t in zip(values, totals, strict=True)] for name, values in layers.items()
    }

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        if kinds:
            _stacked_bars(ax, records.steps, shares, ERROR_COLORS)
        else:
            ax.text(0.5, 0.5, "no failure kinds recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set(title="Failures by kind per step", xlabel="step", ylabel="share of samples", ylim=(0, 1.0))

    return save_figure(draw, path, size=(8.5, 4.0))


def plot_time_split(records: RunRecords, path: Path) -> Path:
    layers = {label: [v or 0.0 for v in records.series(key)] for key, label in TIME_SPLIT}

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        _stacked_bars(ax, records.steps, layers)
        ax.set(title="Time per step", xlabel="step", ylabel="seconds")

    return save_figure(draw, path, size=(8.0, 4.0))


# ----------------------------------------------------------------------------------------------- summary


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _final_and_peak(records: RunRecords, key: str) -> tuple[float | None, float | None, int | None]:
    points = [(v, s) for s, v in zip(records.steps, records.series(key), strict=True) if v is not None]
    if not points:
        return None, None, None
    peak, at = max(points, key=lambda p: p[0])
    return points[-1][0], peak, at


def summary_markdown(records: RunRecords, plots: Sequence[Path]) -> str:
    steps = records.steps
    lines = [f"# Run report: {records.run_dir.name}", "", f"- steps: {len(steps)} (step {steps[0]} to {steps[-1]})"]
    for key, label in (("reward_mean", "reward"), ("accuracy", "accuracy")):
        final, peak, at = _final_and_peak(records, key)
        lines.append(f"- {label}: final {_fmt(final)}, peak {_fmt(peak)} at step {at if at is not None else '-'}")
    for name in solver_names(records):
        final, peak, at = _final_and_peak(records, f"{SOLVER_PREFIX}{name}/accuracy")
        scored = int(sum(v or 0.0 for v in records.series(f"{SOLVER_PREFIX}{name}/samples_scored")))
        lines.append(
            f"- accuracy, {name}: final {_fmt(final)}, peak {_fmt(peak)} at step {at if at is not None else '-'} "
            f"({scored} samples scored)"
        )
    speeds = [v for v in records.series("gen_tokens_per_s") if v is not None]
    tokens = sum(v or 0.0 for v in records.series("gen_tokens"))
    generating = sum(v or 0.0 for v in records.series("time_generating_s"))
    lines.append(
        f"- generation: {tokens:.0f} tokens; {_fmt(tokens / generating if generating else None, '.1f')} tokens/s "
        f"overall, {_fmt(speeds[-1] if speeds else None, '.1f')} at the last step"
    )
    totals = {label: sum(v or 0.0 for v in records.series(key)) for key, label in TIME_SPLIT}
    whole = sum(totals.values())
    split = ", ".join(
        f"{label} {t:.1f} s ({t / whole:.0%})" if whole else f"{label} {t:.1f} s" for label, t in totals.items()
    )
    lines.append(f"- time: {split}")
    lines.append(f"- samples trained: {sum(int(r.get('samples_trained') or 0) for r in records.metrics)}")
    filtered = Counter()
    for row in records.metrics:
        filtered.update(
            {k.removeprefix(FILTERED_PREFIX): int(v or 0) for k, v in row.items() if k.startswith(FILTERED_PREFIX)}
        )
    lines.append(f"- filtered groups: {sum(filtered.values())}" + _detail(filtered))
    statuses = Counter({name: int(sum(values)) for name, values in status_counts(records).items()})
    lines.append(f"- verification statuses: {sum(statuses.values())} samples" + _detail(statuses))
    errors = Counter({name: int(sum(values)) for name, values in error_counts(records).items()})
    lines.append(f"- failures by kind: {sum(errors.values())} samples" + _detail(errors))
    if records.samples:
        lines.append(f"- samples.jsonl: {len(records.samples)} rows")
    lines += ["", *(f"![{p.stem}]({p.name})" for p in plots), ""]
    return "\n".join(lines)


def _detail(counts: Counter) -> str:
    shown = [f"{name} {n}" for name, n in counts.most_common() if n]
    return f" ({', '.join(shown)})" if shown else ""


# ----------------------------------------------------------------------------------------------- main


def write_atomic(path: Path, write: Callable[[str], None]) -> None:
    """Write through a temporary file beside `path` and rename it over, so a report file is whole or old."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(run_dir: Path, output: Path | None = None) -> Path:
    """Plots and report.md for `run_dir`; returns the report directory."""
    records = load_run(run_dir)
    out = output or run_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    plots = [
        plot_reward(records, out / "reward.png"),
        plot_status_mix(records, out / "status_mix.png"),
        plot_errors(records, out / "errors.png"),
        plot_time_split(records, out / "time_split.png"),
    ]
    text = summary_markdown(records, plots)
    write_atomic(out / "report.md", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a training run directory (runs/<name>)")
    parser.add_argument("--output", type=Path, help="where to write (default RUN_DIR/report)")
    args = parser.parse_args(argv)
    try:
        out = write_report(args.run_dir, args.output)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((out / "report.md").read_text(encoding="utf-8"), end="")
    print(f"wrote {out}/report.md, reward.png, status_mix.png, errors.png, time_split.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
