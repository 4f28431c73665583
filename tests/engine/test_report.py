"""engine.report: plots and summary of a run directory made by the real training loop, summary arithmetic on
hand-written metrics rows, and the errors for directories that hold no run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from engine.report import ERROR_COLORS, error_counts, load_run, main, status_counts, summary_markdown

REPO = Path(__file__).resolve().parents[2]
PLOTS = ("reward.png", "status_mix.png", "errors.png", "time_split.png")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_model) -> Path:
    """Two real training steps of the tiny random Llama (tests/engine/conftest.py)."""
    from engine.config import load_config
    from engine.train import train

    root = tmp_path_factory.mktemp("report")
    overrides = [
        f"model.path={tiny_model}",
        f"run.output_dir={root}",
        "run.name=t",
        "run.steps=2",
        "run.save_every=2",
        "rollout.prompts_per_step=2",
        "rollout.group_size=2",
        "generation.sampling.max_new_tokens=8",
        "sandbox.workers=1",
        "data.num_problems=8",
    ]
    return asyncio.run(train(load_config(REPO / "configs" / "default.yaml", overrides), progress=False))


def _pixels(path: Path):
    import matplotlib.image

    return matplotlib.image.imread(path)


@pytest.mark.slow
def test_report_on_a_real_run_writes_its_plots_and_a_summary(trained_run, capsys):
    assert main([str(trained_run)]) == 0
    out = trained_run / "report"
    for name in PLOTS:
        image = _pixels(out / name)
        assert image.shape[0] > 300 and image.shape[1] > 600, name
        assert image[..., :3].std() > 0.05, f"{name} is blank"
    text = (out / "report.md").read_text()
    assert text == capsys.readouterr().out.split("wrote ")[0]
    assert "- steps: 2 (step 0 to 1)" in text
    assert "- samples trained: 8" in text  # 2 prompts x 2 samples, two steps
    assert "- verification statuses: 8 samples (" in text
    assert "- samples.jsonl: 8 rows" in text
    samples = load_run(trained_run).samples
    kinds = [row["error_kind"] for row in samples]
    assert all((kind is None) == row["correct"] for kind, row in zip(kinds, samples, strict=True)), kinds
    failing = sum(kind is not None for kind in kinds)
    assert f"- failures by kind: {failing} samples" in text, "the metrics' errors/<kind> counts match samples.jsonl"
    assert all(f"]({name})" in text for name in PLOTS)


def write_run(run_dir: Path, rows: list[dict], samples: list[dict] | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if samples is not None:
        (run_dir / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    return run_dir


ROWS = [
    {"step": 0, "reward_mean": 0.2, "accuracy": 0.25, "gen_tokens": 100, "gen_tokens_per_s": 50.0,
     "time_generating_s": 2.0, "time_waiting_verify_s": 1.0, "time_train_s": 1.0, "samples_trained": 4,
     "status/correct": 1, "status/error": 3, "filtered/zero_variance": 2, "filtered/stale": 0,
     "errors/runtime": 2, "errors/syntax": 1},
    {"step": 1, "reward_mean": 0.6, "accuracy": 0.75, "gen_tokens": 300, "gen_tokens_per_s": 100.0,
     "time_generating_s": 3.0, "time_waiting_verify_s": 0.0, "time_train_s": 3.0, "samples_trained": 8,
     "status/correct": 3, "status/wrong": 1, "filtered/zero_variance": 1, "errors/wrong_objective": 1},
    {"step": 2, "reward_mean": 0.4, "accuracy": None, "gen_tokens": 0, "time_generating_s": 0.0,
     "time_waiting_verify_s": 0.0, "time_train_s": 0.0, "samples_trained": 0, "filtered/zero_variance": 4},
]  # fmt: skip


def test_summary_numbers_match_the_metrics_rows(tmp_path):
    records = load_run(write_run(tmp_path / "r", ROWS))
    text = summary_markdown(records, [])
    assert "- steps: 3 (step 0 to 2)" in text
    assert "- reward: final 0.400, peak 0.600 at step 1" in text
    assert "- accuracy: final 0.750, peak 0.750 at step 1" in text, "a step without judged samples is skipped"
    assert "- generation: 400 tokens; 80.0 tokens/s overall, 100.0 at the last step" in text  # 400 / 5 s
    assert "- time: generate 5.0 s (50%), verify wait 1.0 s (10%), train 4.0 s (40%)" in text
    assert "- samples trained: 12" in text
    assert "- filtered groups: 7 (zero_variance 7)" in text
    assert "- verification statuses: 8 samples (correct 4, error 3, wrong 1)" in text
    assert "- failures by kind: 4 samples (runtime 2, syntax 1, wrong_objective 1)" in text


def test_failure_kinds_come_in_the_order_a_program_meets_them_and_fall_back_to_samples(tmp_path):
    assert error_counts(load_run(write_run(tmp_path / "r", ROWS))) == {
        "syntax": [1.0, 0.0, 0.0],
        "runtime": [2.0, 0.0, 0.0],
        "wrong_objective": [0.0, 1.0, 0.0],
    }
    samples = [
        {"step": 0, "status": "correct", "error_kind": None},
        {"step": 0, "status": "error", "error_kind": "solver_api"},
        {"step": 1, "status": "no_code", "error_kind": "no_code"},
    ]
    records = load_run(write_run(tmp_path / "s", [{"step": 0}, {"step": 1}], samples))
    assert error_counts(records) == {"no_code": [0.0, 1.0], "solver_api": [1.0, 0.0]}


def test_the_failure_plot_stacks_each_kind_in_its_colour(tmp_path):
    import matplotlib.colors

    rows = [{"step": 0, "status/error": 4, "errors/solver_api": 4}, {"step": 1, "status/correct": 4}]
    run_dir = write_run(tmp_path / "r", rows)
    assert main([str(run_dir), "--output", str(tmp_path / "plots")]) == 0
    pixels = _pixels(tmp_path / "plots" / "errors.png")[..., :3]

    def share(colour: str) -> float:
        rgb = matplotlib.colors.to_rgb(colour)
        return float((abs(pixels - rgb).sum(axis=-1) < 0.02).mean())

    assert share(ERROR_COLORS["solver_api"]) > 0.05 and share(ERROR_COLORS["correct"]) > 0.05
    assert share(ERROR_COLORS["syntax"]) == 0.0


def test_status_mix_falls_back_to_samples_when_metrics_lack_counters(tmp_path):
    rows = [{"step": 0}, {"step": 1}]
    samples = [{"step": 0, "status": "correct"}, {"step": 0, "status": "no_code"}, {"step": 1, "status": "no_code"}]
    counts = status_counts(load_run(write_run(tmp_path / "r", rows, samples)))
    assert counts == {"correct": [1.0, 0.0], "no_code": [1.0, 1.0]}


def test_plots_of_hand_written_rows_are_not_blank(tmp_path):
    run_dir = write_run(tmp_path / "r", ROWS)
    assert main([str(run_dir), "--output", str(tmp_path / "plots")]) == 0
    for name in PLOTS:
        assert _pixels(tmp_path / "plots" / name)[..., :3].std() > 0.05, name


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "does not exist"),
        (lambda d: d.mkdir(), "has no metrics.jsonl"),
        (lambda d: write_run(d, []), "holds no step rows yet"),
        (lambda d: (write_run(d, ROWS[:1]), (d / "metrics.jsonl").open("a").write("{not json\n")), "metrics.jsonl:2"),
    ],
)
def test_a_directory_without_a_run_exits_2_with_one_line(tmp_path, capsys, setup, message):
    run_dir = tmp_path / "run"
    setup(run_dir)
    assert main([str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (run_dir / "report").exists()
