"""engine.learning: the paired bootstrap, the status mix, the held-out set, the report files, and `make learn`'s
pipeline end to end on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import load_config, write_config
from engine.data import generate_problems, load_train
from engine.learning import (
    CATEGORY,
    INFRASTRUCTURE,
    MIX,
    LearningError,
    compare,
    file_heldout,
    generated_heldout,
    main,
    paired_bootstrap,
    pick_unseen,
    reusable,
    verdict,
)
from engine.records import read_jsonl
from solvers.reward import OUTCOME_STATUSES

REPO = Path(__file__).resolve().parents[1].parent
DEFAULT = REPO / "configs" / "default.yaml"


# ----------------------------------------------------------------------------------------------- bootstrap


def test_identical_pairs_give_a_zero_interval():
    outcomes = [True, False, True, True, False]
    assert paired_bootstrap(outcomes, outcomes) == (0.0, 0.0)


def test_pairs_that_all_gain_give_an_interval_above_zero():
    assert paired_bootstrap([False] * 20, [True] * 20) == (1.0, 1.0)
    lo, hi = paired_bootstrap([False] * 20, [True] * 15 + [False] * 5)
    assert 0.0 < lo < 0.75 < hi <= 1.0


def test_small_examples_match_their_exact_resampling_distribution():
    # Differences (1, 0): a resample's mean is 0, 1/2 or 1 with chances 1/4, 1/2, 1/4, so 2.5% of the resamples
    # sit far inside each end: the percentile interval is exactly [0, 1].
    assert paired_bootstrap([False, False], [True, False]) == (0.0, 1.0)
    # Differences (1, 1, 1, 0): P(mean = 0) = (1/4)^4 = 0.4% < 2.5% <= P(mean <= 1/4) = 5.1%, P(mean = 1) = 31.6%.
    assert paired_bootstrap([False] * 4, [True, True, True, False]) == (0.25, 1.0)
    # A loss counts against the gain: differences (-1, 1) are symmetric around 0.
    assert paired_bootstrap([True, False], [False, True]) == (-1.0, 1.0)


def test_the_bootstrap_is_seeded_and_checks_its_input():
    before, after = [False, True, False, False, True] * 4, [True, True, False, True, False] * 4
    assert paired_bootstrap(before, after) == paired_bootstrap(before, after)
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap([True], [True, False])
    with pytest.raises(ValueError, match="non-empty"):
        paired_bootstrap([], [])


def test_verdict_needs_the_interval_above_zero_and_15_points():
    assert verdict(15.0, 0.1) == "LEARNED"
    assert verdict(14.9, 5.0) == "GAIN BELOW TARGET"
    assert verdict(30.0, 0.0) == "NO CLEAR GAIN"
    assert verdict(-5.0, -12.0) == "NO CLEAR GAIN"


# ----------------------------------------------------------------------------------------------- status mix


def test_every_verifier_and_eval_status_has_a_place_in_the_mix():
    for status in (*OUTCOME_STATUSES, "prompt_too_long", "generation_error"):
        assert (status in CATEGORY) != (status in INFRASTRUCTURE), status
    assert set(CATEGORY.values()) == set(MIX)
    assert {s: CATEGORY[s] for s in ("infeasible", "unbounded", "timeout", "license_limit", "prompt_too_long")} == {
        "infeasible": "wrong",
        "unbounded": "wrong",
        "timeout": "error",
        "license_limit": "error",
        "prompt_too_long": "no_code",
    }


def item(pid: str, status: str, answer: float | None = 1.0) -> dict:
    return {"id": pid, "status": status, "correct": status == "correct", "answer": answer}


def test_compare_pairs_by_id_and_leaves_infrastructure_failures_out():
    before = [item("a", "no_code"), item("b", "correct"), item("c", "sandbox_error"), item("d", "infeasible")]
    after = [item("d", "correct"), item("c", "correct"), item("b", "timeout"), item("a", "correct")]
    comparison = compare(before, after)
    assert comparison.ids == ["a", "b", "d"] and comparison.excluded == ["c"]
    assert comparison.before == [False, True, False] and comparison.after == [True, False, True]
    assert comparison.mix("before") == {"no_code": 1, "error": 0, "no_solve": 0, "wrong": 1, "correct": 1}
    assert comparison.mix("after") == {"no_code": 0, "error": 1, "no_solve": 0, "wrong": 0, "correct": 2}
    with pytest.raises(LearningError, match="different problems"):
        compare(before, after[:3])
    with pytest.raises(LearningError, match="two samples of problem 'a'"):
        compare([*before, item("a", "wrong")], after)


# ----------------------------------------------------------------------------------------------- held-out set


def intro_config(tmp_path: Path, *extra: str):
    return load_config(
        DEFAULT,
        [f"run.output_dir={tmp_path}", "run.name=r", "data.difficulty=intro", "data.num_problems=32", *extra],
    )


def test_draws_with_a_training_or_repeated_question_are_dropped_and_replaced():
    draws = generate_problems(12, difficulty="intro", seed=7)
    train = {p.question for p in draws[1:6:2]}  # draws 1, 3 and 5 were "seen in training"
    picked = pick_unseen([*draws[:4], draws[0], *draws[4:]], train, n=6)
    assert [p.id for p in picked.problems] == [draws[i].id for i in (0, 2, 4, 6, 7, 8)]
    assert (picked.dropped_train, picked.dropped_duplicate) == (3, 1)
    assert len(pick_unseen(draws[:3], set(), n=6).problems) == 3, "runs out: the caller decides"


def test_the_generated_heldout_set_never_repeats_a_training_question(tmp_path):
    cfg = intro_config(tmp_path)
    heldout = generated_heldout(cfg, n=40, seed=1000)
    assert len(heldout.problems) == 40 and heldout.seed == 1000
    assert {p.difficulty for p in heldout.problems} == {"intro"}
    train = load_train(cfg.data).problems
    assert not {p.question for p in heldout.problems} & {p.question for p in train}
    assert not {p.id for p in heldout.problems} & {p.id for p in train}
    assert len({p.question for p in heldout.problems}) == 40
    with pytest.raises(LearningError, match="is the training seed"):
        generated_heldout(cfg, n=4, seed=cfg.data.seed)


def test_a_heldout_file_sharing_a_training_question_is_refused(tmp_path):
    cfg = intro_config(tmp_path)
    train = load_train(cfg.data).problems
    unseen = generate_problems(3, difficulty="intro", seed=99)
    path = tmp_path / "heldout.jsonl"
    path.write_text("".join(p.to_json() + "\n" for p in unseen))
    assert [p.id for p in file_heldout(cfg, path, n=3).problems] == [p.id for p in unseen]
    with pytest.raises(LearningError, match="fewer than --heldout-n 4"):
        file_heldout(cfg, path, n=4)
    copied = {**train[5].to_row(), "id": "renamed"}
    path.write_text(path.read_text() + json.dumps(copied) + "\n")
    with pytest.raises(LearningError, match=r"1 problems share an id or a question .*\['renamed'\]"):
        file_heldout(cfg, path, n=3)


# ----------------------------------------------------------------------------------------------- report files


def fake_run(tmp_path: Path, *extra: str) -> Path:
    """A run directory as engine.run leaves it, minus the weights: config, three metrics rows, a checkpoint marker."""
    cfg = intro_config(tmp_path, *extra)
    run_dir = tmp_path / "r"
    write_config(cfg, run_dir / "config.yaml")
    rows = [
        {"step": s, "reward_mean": 0.1 * s, "accuracy": 0.05 * s, "time_rollout_s": 10.0, "time_train_s": 2.5}
        for s in range(3)
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run_dir / "checkpoints" / "step_000003").mkdir(parents=True)
    (run_dir / "checkpoints" / "step_000003" / "COMPLETE").write_text("")
    return run_dir


def write_eval(directory: Path, model: str, rows: list[dict], wall_s: float) -> None:
    """An engine.eval output directory (items.jsonl, summary.json) as it writes one."""
    directory.mkdir()
    (directory / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"model": model, "samples": 1, "temperature": 0.0, "wall_s": wall_s}
    (directory / "summary.json").write_text(json.dumps(summary))


def test_learning_json_md_and_png_from_two_finished_evaluations(tmp_path, capsys):
    run_dir = fake_run(tmp_path)
    cfg = load_config(run_dir / "config.yaml")
    problems = generated_heldout(cfg, n=4, seed=1000).problems
    before = ["no_code", "error", "correct", "wrong"]
    after = ["correct", "correct", "correct", "infeasible"]
    for side, model, statuses in (("eval-before", cfg.model.path, before), ("eval-after", None, after)):
        model = model or str(run_dir / "checkpoints" / "step_000003")
        write_eval(
            run_dir / side, model, [item(p.id, s, p.answer) for p, s in zip(problems, statuses, strict=True)], 30.0
        )

    assert main([str(run_dir), "--heldout-n", "4", "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "reusing the finished evaluation" in out[1] and "reusing the finished evaluation" in out[2]
    assert out[-1] == (
        "learning: greedy pass@1 25.0% -> 75.0% (+50.0 points, 95% CI +0.0..+100.0) on 4 held-out problems: "
        "NO CLEAR GAIN"
    )
    assert [r["id"] for r in read_jsonl(run_dir / "heldout.jsonl")] == [p.id for p in problems]
    res = json.loads((run_dir / "learning.json").read_text())
    assert (res["before"], res["after"], res["gain"], res["n"]) == (25.0, 75.0, 50.0, 4)
    assert res["gain_ci95"] == [0.0, 100.0]  # differences (1, 1, 0, 0): P(mean = 0) = 1/16 > 2.5%
    assert res["verdict"] == "NO CLEAR GAIN"
    assert res["pairs"] == {"gained": 2, "lost": 0, "both_correct": 1, "neither": 1}
    assert res["status_mix"] == {
        "before": {"no_code": 1, "error": 1, "no_solve": 0, "wrong": 1, "correct": 1},
        "after": {"no_code": 0, "error": 0, "no_solve": 0, "wrong": 1, "correct": 3},
    }
    assert res["solver"] == cfg.solver.name and res["tolerance_rule"]["comparison"] == "relative"
    assert (res["heldout_seed"], res["train_seed"], res["steps"]) == (1000, 0, 3)
    assert res["wall_s"] == {"train": 37.5, "eval_before": 30.0, "eval_after": 30.0, "eval": 60.0}
    text = (run_dir / "learning.md").read_text()
    assert "| before | 1 | 1 | 0 | 1 | 1 |" in text and "| gain | +50.0 points (95% CI +0.0..+100.0)" in text
    assert "python -m engine.eval" in text and "![before and after](learning.png)" in text
    assert (run_dir / "learning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_evaluation_of_other_problems_or_another_model_is_not_reused(tmp_path):
    run_dir = fake_run(tmp_path)
    heldout = generated_heldout(load_config(run_dir / "config.yaml"), n=3, seed=1000)
    rows = [item(p.id, "wrong", p.answer) for p in heldout.problems]
    write_eval(run_dir / "e", "m", rows, 1.0)
    assert reusable(run_dir / "e", "m", heldout)
    assert not reusable(run_dir / "e", "other", heldout)
    assert not reusable(run_dir / "e", "m", generated_heldout(load_config(run_dir / "config.yaml"), n=3, seed=5))
    write_eval(run_dir / "f", "m", rows[:2], 1.0)
    assert not reusable(run_dir / "f", "m", heldout)
    write_eval(run_dir / "g", "m", [{**rows[0], "status": "sandbox_error"}, *rows[1:]], 1.0)
    assert not reusable(run_dir / "g", "m", heldout), "a third of it failed for the machine's reasons"


# ----------------------------------------------------------------------------------------------- bad input


def test_bad_input_is_one_line_and_exit_2_and_writes_nothing(tmp_path, capsys):
    assert main([str(tmp_path / "none")]) == 2
    assert (
        capsys.readouterr().err
        == f"error: run directory {tmp_path / 'none'} does not exist; pass runs/<name> of a training run\n"
    )
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "has no config.yaml" in capsys.readouterr().err
    run_dir = fake_run(tmp_path)
    (run_dir / "checkpoints" / "step_000003" / "COMPLETE").unlink()
    assert main([str(run_dir)]) == 2
    assert "has no complete checkpoint" in capsys.readouterr().err
    (run_dir / "checkpoints" / "step_000003" / "COMPLETE").write_text("")
    assert main([str(run_dir), "--heldout-seed", "0"]) == 2
    assert "is the training seed" in capsys.readouterr().err
    assert main([str(run_dir), "--heldout-n", "0"]) == 2
    assert main([str(run_dir), "extra"]) == 2
    assert "give one run directory" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "config.yaml", "metrics.jsonl"]


def test_a_run_trained_on_a_file_needs_a_heldout_file(tmp_path, capsys):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(p.to_json() + "\n" for p in generate_problems(4, difficulty="intro", seed=3)))
    run_dir = fake_run(tmp_path, f"data.train={train}")
    assert main([str(run_dir)]) == 2
    assert "pass --heldout FILE" in capsys.readouterr().err


def test_config_mode_refuses_a_run_directory_that_holds_another_config(tmp_path, capsys):
    run_dir = fake_run(tmp_path)
    overrides = [f"run.output_dir={tmp_path}", "run.name=r", "data.difficulty=intro", "data.num_problems=32"]
    assert main(["--config", str(DEFAULT), *overrides, "run.seed=5"]) == 2
    err = capsys.readouterr().err
    assert f"{run_dir} holds a run of another config (run.seed: 0 there, 5 here)" in err and "run.name=" in err
    assert main(["--config", str(DEFAULT), *overrides, "not-an-override"]) == 2
    assert "section.key=value" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_make_learn_pipeline_trains_evaluates_and_reports_on_a_tiny_model(tiny_model, tmp_path, capsys):
    overrides = [
        f"model.path={tiny_model}",
        f"run.output_dir={tmp_path}",
        "run.name=t",
        "run.steps=2",
        "run.save_every=1",
        "rollout.prompts_per_step=2",
        "rollout.group_size=2",
        "generation.sampling.max_new_tokens=12",
        "sandbox.workers=1",
        "data.num_problems=8",
        "learner.lr=1e-3",
    ]
    argv = ["--config", str(DEFAULT), *overrides, "--heldout-n", "4", "--quiet"]
    assert main(argv) == 0
    run_dir = tmp_path / "t"
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("learning: greedy pass@1 ") and last.endswith(" on 4 held-out problems: NO CLEAR GAIN")
    res = json.loads((run_dir / "learning.json").read_text())
    assert {
        "before",
        "after",
        "gain",
        "gain_ci95",
        "n",
        "solver",
        "tolerance_rule",
        "heldout_seed",
        "train_seed",
    } <= set(res)
    assert {"status_mix", "wall_s", "steps"} <= set(res) and set(res["wall_s"]) >= {"train", "eval"}
    assert res["n"] == 4 and res["steps"] == 2 and res["checkpoint"].endswith("step_000002")
    for side in ("eval-before", "eval-after"):
        assert len(read_jsonl(run_dir / side / "items.jsonl")) == 4
    assert (run_dir / "learning.md").is_file() and (run_dir / "learning.png").is_file()

    assert main(argv) == 0, "a rerun resumes the finished run (no new step) and reuses both evaluations"
    out = capsys.readouterr().out
    assert out.count("reusing the finished evaluation") == 2
    assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")] == [0, 1]

    check = tmp_path / "check"
    assert main([str(run_dir), "--heldout-n", "3", "--heldout-seed", "7", "--output", str(check), "--quiet"]) == 0
    assert json.loads((check / "learning.json").read_text())["heldout_seed"] == 7
    assert json.loads((run_dir / "learning.json").read_text())["heldout_seed"] == 1000, "the run's own is kept"
    assert main([str(run_dir), "--heldout-n", "3", "--heldout-seed", "8", "--output", str(check), "--quiet"]) == 0
    assert capsys.readouterr().out.count("was for another model or problem set; moved to") == 2
    assert len(list(check.glob("eval-before.replaced-*"))) == 1, "the old evaluation is kept aside, not deleted"
