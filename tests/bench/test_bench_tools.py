"""bench/run_all.py (running benches, recording failures, the report), bench/headlines.py (each bench's row),
bench/gpu_check.py (peak table, MFU, the no-CUDA error) and trl_bench's reward-signal check; no timing is
asserted."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_all, headlines, gpu_check = load("run_all"), load("headlines"), load("gpu_check")


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake_bench.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_failing_bench_is_recorded_with_its_error(tmp_path: Path) -> None:
    bench = run_all.Bench(
        name="broken",
        script=script(tmp_path, "import sys; sys.exit('no solver here')"),
        args=(),
        what="a bench that fails",
    )
    (tmp_path / "broken.json").write_text('{"left": "by an earlier run"}')
    outcome = run_all.run_bench(bench, tmp_path, timeout_s=60)
    assert outcome.rc == 1 and "no solver here" in outcome.error and outcome.result is None
    row = run_all.Row(bench=bench, runs=[outcome])
    text = "\n".join(run_all.section(row) + run_all.summary_table([row]))
    assert "failed (exit 1)" in text and "no solver here" in text and not row.met


def test_timeout_is_recorded(tmp_path: Path) -> None:
    bench = run_all.Bench(name="slow", script=script(tmp_path, "import time; time.sleep(30)"), args=(), what="slow")
    outcome = run_all.run_bench(bench, tmp_path, timeout_s=0.5)
    assert outcome.rc is None and "timed out" in outcome.error
    assert "timed out" in "\n".join(run_all.summary_table([run_all.Row(bench=bench, runs=[outcome])]))


def test_json_result_gives_the_headline(tmp_path: Path) -> None:
    body = """
        import json, sys
        report = {"ratio_trl_over_evom": 2.6, "trl_step": {"median_s": 5.0, "min_s": 4.0, "max_s": 6.0},
                  "evom_step": {"median_s": 2.0, "min_s": 1.5, "max_s": 2.5}}
        open(sys.argv[sys.argv.index("--json") + 1], "w").write(json.dumps(report))
    """
    bench = run_all.Bench(name="trl", script=script(tmp_path, body), args=(), what="x", headline=headlines.trl_headline)
    outcome = run_all.run_bench(bench, tmp_path, timeout_s=60)
    assert outcome.rc == 0 and outcome.headline.ratio == 2.6 and outcome.headline.met
    row = run_all.summary_table([run_all.Row(bench=bench, runs=[outcome])])[-1]
    assert "2.60x" in row and "2 s [1.5 .. 2.5]" in row and "5 s [4 .. 6]" in row


def test_stdout_json_bench(tmp_path: Path) -> None:
    report = {"ratio_pipelined_over_synchronous": 0.9, "pipelined_s": [3.0, 1.0, 2.0], "synchronous_s": [2.0]}
    body = f"print('warming up'); print({json.dumps(json.dumps(report))})"
    bench = run_all.Bench(
        name="rollout",
        script=script(tmp_path, body),
        args=(),
        what="x",
        json_arg=None,
        headline=headlines.rollout_headline,
    )
    outcome = run_all.run_bench(bench, tmp_path, timeout_s=60)
    assert outcome.result == report and outcome.headline.met is False
    assert outcome.headline.evom == "2 s [1 .. 3]"


def test_unknown_bench_name_lists_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_all.main(["--only", "trl,nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "sandbox" in err and "trl" in err


def test_peak_table_and_mfu() -> None:
    assert gpu_check.peak_flops("NVIDIA H200") == 989e12
    assert gpu_check.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert gpu_check.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu_check.peak_flops("Some New Accelerator") is None
    # 6 * 1e8 params * 1e4 tokens/s = 6e12 FLOP/s, a hundredth of a 600 TFLOP/s peak.
    assert gpu_check.mfu(100_000_000, 10_000.0, 600e12) == pytest.approx(0.01)
    assert gpu_check.mfu(100, 1.0, None) is None


def test_summary_leaves_out_the_warm_up_step() -> None:
    rows = [
        {"time_rollout_s": 50.0, "time_train_s": 50.0, "train/tokens_per_s": 1.0, "train/loss": 0.1},
        {"time_rollout_s": 2.0, "time_train_s": 1.0, "train/tokens_per_s": 100.0, "train/loss": 0.2},
        {"time_rollout_s": 4.0, "time_train_s": 1.0, "train/tokens_per_s": 300.0, "train/loss": 0.3},
    ]
    s = gpu_check.summarise(rows, params=10, peak=12_000.0)
    assert s["steps_timed"] == 2 and s["step_s"] == {"median": 4.0, "min": 3.0, "max": 5.0}
    assert s["train_tokens_per_s"] == 200.0 and s["mfu"] == pytest.approx(6 * 10 * 200.0 / 12_000.0)
    assert s["loss"] == [0.1, 0.2, 0.3]


@pytest.mark.slow  # imports torch (tens of seconds on a loaded 2-core box)
def test_cuda_missing_fails_clearly() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(gpu_check.NoDevice, match=r"no CUDA device.*--device cpu"):
        gpu_check.describe_device("cuda")


@pytest.mark.slow  # imports the engine, torch and the config machinery
def test_reward_signal_check() -> None:
    trl_bench = load("trl_bench")
    assert not trl_bench.has_signal([[0.0, 0.0, 0.1, 0.1]], group_size=2)
    assert trl_bench.has_signal([[0.0, 0.0, 0.1, 0.1], [0.0, 0.3, 0.1, 0.1]], group_size=2)


@pytest.mark.slow  # imports the engine, torch and the config machinery
def test_trl_bench_phases_split_a_step_and_leave_out_the_warm_up() -> None:
    trl_bench = load("trl_bench")
    rollout = {"time_generating_s": 3.0, "time_waiting_verify_s": 0.5}
    train = {"time_forward_backward_s": 4.0, "time_optimizer_s": 1.0}
    phases = trl_bench.evom_phases(
        rollout, train, rollout_s=3.75, gather_s=0.05, learner_s=5.2, export_s=0.1, update_s=0.7,
        synced={"copy": 0.2, "repack": 0.4}, records_s=0.01,
    )  # fmt: skip
    assert list(phases) == list(trl_bench.PHASES)
    assert phases["batch_prep"] == pytest.approx(0.25 + 0.05 + 0.2) and phases["other"] == pytest.approx(0.1)
    assert sum(phases.values()) == pytest.approx(3.75 + 0.05 + 5.2 + 0.1 + 0.7 + 0.01)
    steps = [{"generation": 100.0, "step": 100.0}, {"generation": 1.0, "step": 2.0}, {"generation": 3.0, "step": 4.0}]
    table = trl_bench.phase_table(steps, 1)
    assert table["generation"] == {"median_s": 2.0, "min_s": 1.0, "max_s": 3.0} and table["step"]["max_s"] == 4.0


def test_sandbox_headline_from_its_markdown() -> None:
    report = """
        | mode | median ms/program | IQR ms | programs/s |
        |---|---:|---:|---:|
        | warm pool | 20.0 | 15.0-30.0 | 50.0 |
        | cold nsjail | 160.0 | 140.0-190.0 | 6.2 |

        | suite | cold nsjail / warm pool | warm pool / bare warm fork |
        |---|---:|---:|
        | gurobipy reference programs | 8.0x (target >= 3x) | 1.1x (target <= 1.15x) |
    """
    h = headlines.sandbox_headline(textwrap.dedent(report))
    assert (h.ratio, h.target, h.met) == (8.0, ">= 3", True)
    assert h.evom == "20.0 ms [IQR 15.0-30.0]" and h.alternative == "160.0 ms [IQR 140.0-190.0]"
    with pytest.raises(ValueError, match="gurobipy"):
        headlines.sandbox_headline("no tables here")


RATIO_BENCH = """
    import json, os, sys
    ratios = [float(x) for x in os.environ["RATIOS"].split(",")]
    count = os.environ["COUNTER"]
    n = len(open(count).read()) if os.path.exists(count) else 0
    open(count, "a").write("x")  # each run is a fresh process: the file counts them
    ratio = ratios[n % len(ratios)]
    if ratio < 0:
        sys.exit("this run broke")
    report = {"ratio_trl_over_evom": ratio, "trl_step": {"median_s": 5.0, "min_s": 4.0, "max_s": 6.0},
              "evom_step": {"median_s": 2.0, "min_s": 1.5, "max_s": 2.5},
              "phase_table": {"evom": {"generation": {"median_s": ratio}}, "trl": {"generation": {"median_s": 1.0}}}}
    open(sys.argv[sys.argv.index("--json") + 1], "w").write(json.dumps(report))
"""


def repeated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ratios: str, repeats: int = 3) -> tuple[int, str]:
    monkeypatch.setenv("RATIOS", ratios)
    monkeypatch.setenv("COUNTER", str(tmp_path / "count"))
    bench = run_all.Bench(
        name="trl",
        script=script(tmp_path, RATIO_BENCH),
        args=(),
        what="x",
        headline=headlines.trl_headline,
        details=headlines.trl_phase_details,
    )
    monkeypatch.setitem(run_all.BENCHES, "trl", bench)
    out = tmp_path / "RESULTS.md"
    argv = ["--only", "trl", "--repeats", str(repeats), "--out", str(out), "--raw-dir", str(tmp_path / "raw")]
    rc = run_all.main(argv)
    return rc, out.read_text()


def test_repeats_report_median_worst_and_range_and_the_worst_run_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rc, text = repeated(tmp_path, monkeypatch, "3.0,2.4,2.8")
    assert rc == 0 and (tmp_path / "count").read_text() == "xxx", "three fresh processes"
    row = next(line for line in text.splitlines() if line.startswith("| trl |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # target | met | median | worst | range | runs ok
    assert cells[2:8] == [">= 2.5", "no", "2.80x", "2.40x", "2.40-3.00x", "3/3"]
    assert {p.name for p in (tmp_path / "raw").iterdir()} == {"trl.json", "trl.r1.json", "trl.r2.json"}
    assert "| generation | 2.80 | 1.00 |" in text, "the phase table is the median over the runs"
    (tmp_path / "again").mkdir()
    rc, text = repeated(tmp_path / "again", monkeypatch, "3.0,2.6,2.8")
    row = next(line for line in text.splitlines() if line.startswith("| trl |"))
    assert "| yes |" in row and "2.60x" in row


def test_results_are_written_after_each_run_of_several_benches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATIOS", "3.0")
    monkeypatch.setenv("COUNTER", str(tmp_path / "count"))
    for name in ("trl", "rollout"):
        bench = run_all.Bench(name=name, script=script(tmp_path, RATIO_BENCH), args=(), what=name,
                              headline=headlines.trl_headline)  # fmt: skip
        monkeypatch.setitem(run_all.BENCHES, name, bench)
    out = tmp_path / "RESULTS.md"
    assert run_all.main(["--only", "trl,rollout", "--repeats", "2", "--out", str(out), "--raw-dir", str(tmp_path)]) == 0
    text = out.read_text()
    assert "| trl |" in text and "| rollout |" in text and (tmp_path / "count").read_text() == "xxxx"
    assert "Partial" not in text
    first = run_all.Row(
        bench=run_all.BENCHES["trl"],
        runs=[run_all.Outcome(bench=run_all.BENCHES["trl"], command=["x"], rc=0, wall_s=1.0)],
    )
    started = run_all.datetime.datetime.now(run_all.datetime.UTC)
    stopped = run_all.render(
        [first], started=started, wall_s=1.0, argv=[], gpu_log=None, found={}, repeats=2, planned=4
    )
    assert "**Partial: 1 of 4 runs finished" in stopped, "a file left by a stopped invocation says so"
    assert not run_all.section(run_all.Row(bench=run_all.BENCHES["trl"], runs=[]))[-2].startswith("- command")


def test_a_failed_run_fails_the_target_and_the_exit_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rc, text = repeated(tmp_path, monkeypatch, "3.0,-1,3.0")
    row = next(line for line in text.splitlines() if line.startswith("| trl |"))
    assert rc == 1 and "no (1 run(s) failed)" in row and "2/3" in row and "this run broke" in text


def test_lower_is_better_rows_take_the_highest_ratio_as_worst() -> None:
    bench = run_all.BENCHES["rollout"]
    runs = []
    for k, ratio in enumerate((0.7, 0.79, 0.5)):
        report = {"ratio_pipelined_over_synchronous": ratio, "pipelined_s": [1.0], "synchronous_s": [2.0]}
        runs.append(run_all.Outcome(bench=bench, command=[], run=k, rc=0, headline=headlines.rollout_headline(report)))
    row = run_all.Row(bench=bench, runs=runs)
    assert (row.median, row.worst, row.met) == (0.7, 0.79, True) and row.median_run().run == 0


def test_a_row_without_a_target_says_so_unless_a_run_failed() -> None:
    bench = run_all.BENCHES["sandbox-peers"]

    def outcome(k: int, rc: int) -> run_all.Outcome:
        h = headlines.Headline(comparison="a / b", ratio=0.3, target="none", met=None, evom="a", alternative="b")
        command = [sys.executable, "bench/sandbox_peers.py"]
        return run_all.Outcome(bench=bench, command=command, run=k, rc=rc, headline=h if rc == 0 else None)

    row = run_all.Row(bench=bench, runs=[outcome(0, 0), outcome(1, 0)])
    assert row.met is None
    assert "| none | no target |" in run_all.summary_table([row])[-1]
    assert "(target none: none set)" in "\n".join(run_all.section(row))
    assert run_all.Row(bench=bench, runs=[outcome(0, 0), outcome(1, 1)]).met is False


def test_a_bench_without_its_precondition_is_skipped_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVOM_EXEC_CACHE_RUN", str(tmp_path / "no-run"))
    outcome = run_all.run_bench(run_all.BENCHES["exec-cache"], tmp_path, timeout_s=5)
    row = run_all.Row(bench=outcome.bench, runs=[outcome])
    assert outcome.skipped and "no-run" in outcome.skipped and outcome.rc is None
    assert "skipped: no run to replay" in "\n".join(run_all.summary_table([row]) + run_all.section(row))


def test_chaos_and_exec_cache_headlines() -> None:
    one = {
        "fault": "sandbox",
        "faults_injected": {"total": 40, "worker": 30, "child": 10},
        "samples": {"faults": {"lost": 0, "wrongly_scored": 0}},
        "recovery_s": {"bound": 5.0, "within_bound": True, "median": 0.4, "max": 1.9},
        "throughput": {"ratio": 0.8},
    }
    h = headlines.chaos_headline(one)
    assert h.ratio == 0.8 and h.met and "40 faults, 0 lost, 0 wrongly scored" in h.evom
    headline = {"faults": 55, "samples": 822, "excluded": 1, "lost": 0, "duplicated": 0, "wrongly_scored": 0,
                "recovery_median_s": 0.13, "recovery_max_s": 0.36, "recovery_bound_s": 5.0,
                "throughput_ratio": 0.7, "passed": True}  # fmt: skip
    two = {"sandbox": headline, "generation": {**headline, "lost": 1, "throughput_ratio": 0.6, "passed": False}}
    h = headlines.chaos_headline(two)
    assert h.ratio == 0.6 and not h.met and "generation: 55 faults, 1 lost" in h.evom
    assert headlines.chaos_headline({"sandbox": headline}).met
    with pytest.raises(ValueError, match="fault class"):
        headlines.chaos_headline({"nothing": 1})
    total = {"cache_hit_rate": 0.25, "cache_saved_s": 3.0, "completions": 24, "wall_cache_s": 4.0,
             "wall_no_cache_s": 6.0, "wall_ratio_no_cache_over_cache": 1.5, "outcomes_match": True}  # fmt: skip
    h = headlines.exec_cache_headline({"total": total})
    assert h.ratio == 1.5 and h.met and "hit rate 0.25" in h.evom and "3 sandbox s saved" in h.evom


def test_cuts_headline_and_the_before_after_phase_table() -> None:
    def run(after: float, before: float, optimizer: tuple[float, float]) -> dict:
        steps = {
            "after": {"median_s": after, "min_s": after - 1, "max_s": after + 1},
            "before": {"median_s": before, "min_s": before - 1, "max_s": before + 1},
        }
        copy = {"weight_sync_copy": {"median_s": 0.5}}
        tables = {
            "before": {"generation": {"median_s": 6.0}, "optimizer": {"median_s": optimizer[0]}, **copy},
            "after": {"generation": {"median_s": 6.0}, "optimizer": {"median_s": optimizer[1]}, **copy},
        }
        return {"step": steps, "ratio_after_over_before": after / before, "phase_table": tables}

    h = headlines.cuts_headline(run(12.0, 15.0, (2.0, 0.5)))  # optimizer + copy: (0.5 + 0.5) / (2.0 + 0.5)
    assert h.ratio == pytest.approx(0.4) and h.met and not h.higher_is_better
    assert h.evom == "1 s (whole step 0.80x: 12 s [11 .. 13])" and h.alternative == "2.5 s (step 15 s [14 .. 16])"
    assert not headlines.cuts_headline(run(12.0, 15.0, (2.0, 2.0))).met  # the step alone does not meet it
    lines = headlines.cuts_phase_details([run(12.0, 15.0, (2.0, 0.5)), run(12.0, 15.0, (1.0, 0.7)), {}])
    assert "over 2 run(s)" in lines[1]
    assert "| generation | 6.00 | 6.00 | 1.00x |" in lines
    assert "| optimizer | 1.50 | 0.60 | 0.40x |" in lines  # medians of (2.0, 1.0) and (0.5, 0.7)
    assert "| weight_sync_copy | 0.50 | 0.50 | 1.00x |" in lines
    assert headlines.cuts_phase_details([{}]) == []
