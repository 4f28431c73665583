"""The training loop end to end: a tiny random model, the real sandbox and solver, run directory, resume."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.config import load_config
from engine.records import read_jsonl, reduce_rollout_metrics, reduction_rule
from engine.run import main
from engine.train import RunError, train, truncate_records
from learner.checkpoint import latest_checkpoint

REPO = Path(__file__).resolve().parents[1].parent


def overrides(model: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"model.path={model}",
        f"run.output_dir={out}",
        "run.name=t",
        "run.steps=2",
        "run.save_every=1",
        "rollout.prompts_per_step=2",
        "rollout.group_size=2",
        "generation.sampling.max_new_tokens=12",
        "sandbox.workers=1",
        "data.num_problems=8",
        "learner.lr=1e-3",
        *extra,
    ]


def test_two_steps_leave_config_metrics_samples_and_checkpoints(tiny_model, tmp_path):
    cfg = load_config(REPO / "configs" / "default.yaml", overrides(tiny_model, tmp_path))
    run_dir = asyncio.run(train(cfg, progress=False))
    assert run_dir == tmp_path / "t"
    assert load_config(run_dir / "config.yaml") == cfg
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 1]
    assert all(m["samples_trained"] == 4 for m in metrics)
    assert all(m["train/response_tokens"] > 0 for m in metrics), "the learner trained on every step"
    phases = ("train/time_forward_backward_s", "train/time_optimizer_s", "time_weight_sync_s")
    assert all(m[k] > 0 for m in metrics for k in phases), "every step times its phases"
    samples = read_jsonl(run_dir / "samples.jsonl")
    assert len(samples) == 8 and {s["step"] for s in samples} == {0, 1}
    assert {s["weight_version"] for s in samples if s["step"] == 1} == {1}, "step 1 sampled the updated weights"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_000001", "step_000002"]

    with pytest.raises(RunError, match="already holds a run; pass --resume"):
        asyncio.run(train(cfg, progress=False))
    assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")] == [0, 1], "nothing overwritten"


def _checkpoint_weights(model_dir: Path, checkpoint: Path | None) -> dict:
    from learner.checkpoint import load_model_weights
    from learner.config import LearnerConfig
    from learner.trainer import Learner

    learner = Learner.from_pretrained(str(model_dir), LearnerConfig(device="cpu"))
    if checkpoint is not None:
        load_model_weights(learner.model, checkpoint)
    return {k: v.detach().clone() for k, v in learner.model.state_dict().items()}


def test_init_from_starts_another_solver_from_a_trained_policy(tiny_model, tmp_path):
    import torch

    # A random model's rewards are all equal (zero advantage); decoupled weight decay still moves the weights.
    first_cfg = load_config(None, overrides(tiny_model, tmp_path, "run.steps=1", "learner.weight_decay=1.0"))
    first = asyncio.run(train(first_cfg, progress=False))
    trained = first / "checkpoints" / "step_000001"
    cfg = load_config(
        None,
        overrides(tiny_model, tmp_path, "run.name=adapted", "solver.name=ortools", "run.steps=1", "learner.lr=1e-12"),
    )
    adapted = asyncio.run(train(cfg, init_from=trained, progress=False))
    assert [m["step"] for m in read_jsonl(adapted / "metrics.jsonl")] == [0], "a new run, from step 0"

    initial = _checkpoint_weights(tiny_model, None)
    after_first = _checkpoint_weights(tiny_model, trained)
    after_adapted = _checkpoint_weights(tiny_model, adapted / "checkpoints" / "step_000001")
    moved = max((after_first[k] - initial[k]).abs().max().item() for k in initial)
    assert moved > 1e-4, "the first run changed the weights"
    for k in initial:  # lr 1e-12: the adapted run ends where it started, i.e. at the first run's weights
        torch.testing.assert_close(after_adapted[k], after_first[k], rtol=0, atol=1e-8)

    with pytest.raises(RunError, match="not a complete checkpoint"):
        asyncio.run(train(load_config(None, overrides(tiny_model, tmp_path, "run.name=x")), init_from=tmp_path))


def test_truncate_records_keeps_only_steps_before_the_checkpoint(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n{"step": 1}\n{"step": 2}\n')
    (tmp_path / "samples.jsonl").write_text('{"step": 0, "i": 1}\n{"step": 2, "i": 2}\n')
    truncate_records(tmp_path, keep_before_step=2)
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 0}, {"step": 1}]
    assert read_jsonl(tmp_path / "samples.jsonl") == [{"step": 0, "i": 1}]


def test_cli_reports_bad_input_in_one_line(tiny_model, tmp_path, capsys):
    assert main([*overrides(tiny_model, tmp_path), "solver.name=cplex"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown solver 'cplex'; valid solvers: ")
    assert main([*overrides(tiny_model, tmp_path), "data.train=/nonexistent/problems.jsonl"]) == 2
    assert "/nonexistent/problems.jsonl" in capsys.readouterr().err
    assert main([*overrides(tiny_model, tmp_path), "--resume", "run.name=never-started"]) == 2
    assert "holds no run" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed once the block ends: nobody listens there
    argv = [*overrides(tiny_model, tmp_path), "generation.backend=sglang", f"generation.sglang={{urls: [{dead}]}}"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"error: generation.sglang: SGLang server(s) ['{dead}'] did not answer GET /health; start them "
        "(python -m sglang.launch_server ...) or fix the URLs\n"
    )
    assert main([*overrides(tiny_model, tmp_path), "generation.backend=openai"]) == 2
    assert "cannot load new weights" in capsys.readouterr().err
    assert not (tmp_path / "t").exists(), "a failed start leaves no half-made run directory"


# What a step's records depend on besides the clock: equal in a resumed and an uninterrupted run.
SAMPLE_KEYS = ("step", "problem_id", "group_id", "sample_index", "text", "status", "reward", "weight_version")
METRIC_KEYS = ("step", "reward_mean", "accuracy", "groups_kept", "samples_trained", "train/loss", "train/grad_norm")


def _records(run_dir: Path) -> tuple[list[tuple], list[tuple]]:
    samples = sorted(tuple(s[k] for k in SAMPLE_KEYS) for s in read_jsonl(run_dir / "samples.jsonl"))
    metrics = [tuple(m.get(k) for k in METRIC_KEYS) for m in read_jsonl(run_dir / "metrics.jsonl")]
    return samples, metrics


@pytest.mark.slow
def test_killed_run_resumes_exactly_where_it_stopped(tiny_model, tmp_path):
    """SIGKILL after a checkpoint, then --resume: every step's samples (texts, rewards, group ids) and metrics
    equal those of the same run left uninterrupted, so nothing a step depends on is missing from a checkpoint
    (weights, optimizer, RNG, problem order, the rollout's round counter and group ids)."""
    # Sampling at T = 1 with a seed and weight decay moving the weights every step: each step's texts depend
    # on the weights, the optimizer state and the round seeds before it.
    extra = ("run.steps=4", "learner.weight_decay=1.0", "generation.sampling.temperature=1.0", "run.seed=3")
    base = [sys.executable, "-m", "engine.run", "--quiet"]
    whole = subprocess.run(
        [*base, *overrides(tiny_model, tmp_path, *extra, "run.name=whole")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert whole.returncode == 0, whole.stderr[-2000:]

    args = [*base, *overrides(tiny_model, tmp_path, *extra)]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    marker = tmp_path / "t" / "checkpoints" / "step_000002" / "COMPLETE"
    try:
        deadline = time.monotonic() + 600
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no second checkpoint within 10 minutes"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = [m["step"] for m in read_jsonl(tmp_path / "t" / "metrics.jsonl")]
    assert before[:2] == [0, 1] and len(before) < 4
    # The run may have finished step 3's checkpoint between the poll and the kill: resume takes the newest.
    newest = latest_checkpoint(tmp_path / "t" / "checkpoints")
    assert newest is not None and newest.name in ("step_000002", "step_000003")

    done = subprocess.run([*args, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {newest}" in done.stderr, done.stderr[-2000:]
    report = tmp_path / "t" / "report"
    assert {p.name for p in report.iterdir()} >= {"reward.png", "status_mix.png", "time_split.png", "report.md"}

    samples, metrics = _records(tmp_path / "t")
    expected_samples, expected_metrics = _records(tmp_path / "whole")
    assert [m[0] for m in metrics] == [0, 1, 2, 3] and len(samples) == 16
    assert len({s[2] for s in samples}) == 8, "group ids are not reused after the resume"
    assert samples == expected_samples
    assert metrics == expected_metrics


# A torchrun rank: runs `python -m engine.run ...` beyond the reach of torchrun's SIGTERM (which ends the other
# ranks once one has failed) and writes its exit code to $EXITS/<rank>, so each rank's own ending is seen.
RANK_WRAPPER = """
import os, signal, subprocess, sys
child = subprocess.Popen([sys.executable, "-m", "engine.run", *sys.argv[1:]], start_new_session=True)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
try:
    code = child.wait(timeout=300)
except subprocess.TimeoutExpired:
    child.kill()
    code = child.wait()
(__import__("pathlib").Path(os.environ["EXITS"]) / os.environ["RANK"]).write_text(str(code))
sys.exit(code)
"""


def torchrun(exits: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict[int, int]]:
    """`python -m engine.run *args` on 2 CPU ranks (gloo): torchrun's result and each rank's exit code."""
    with socket.socket() as s:  # a free port for the rendezvous (port 0 makes the ranks wait for each other forever)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exits.mkdir(parents=True)
    launcher = [str(Path(sys.executable).parent / "torchrun"), "--nproc-per-node", "2", "--master-addr", "127.0.0.1"]
    command = [*launcher, "--master-port", str(port), "--no-python", sys.executable, "-c", RANK_WRAPPER, *args]
    env = {**os.environ, "EXITS": str(exits)}
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, start_new_session=True
    )
    return done, {int(p.name): int(p.read_text()) for p in exits.iterdir()}


@pytest.mark.slow
def test_torchrun_two_ranks_train_one_model_on_the_global_batch(tiny_model, tmp_path, capsys):
    """Two ranks train one model; rank 0 alone reports, also when they resume it. Started again on the same run
    without --resume, every rank ends with exit 2 and rank 0's one line, the run untouched; so does an unknown key."""
    done, exits = torchrun(tmp_path / "exits", "--quiet", *overrides(tiny_model, tmp_path))
    assert done.returncode == 0 and exits == {0: 0, 1: 0}, done.stderr[-3000:]
    steps = [line.split(" |")[0] for line in done.stdout.splitlines() if line.startswith("step ")]
    assert steps == ["step 1/2", "step 2/2"], done.stdout[-3000:]
    assert sum(line.startswith("done: ") for line in done.stdout.splitlines()) == 1, done.stdout[-3000:]
    run_dir = tmp_path / "t"
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 1]
    rank0, rank1 = read_jsonl(run_dir / "samples.jsonl"), read_jsonl(run_dir / "rank1" / "samples.jsonl")
    assert len(rank0) == len(rank1) == 4, "each rank generated its share: 1 group of 2 per step"
    assert not {s["problem_id"] for s in rank0} & {s["problem_id"] for s in rank1}, "ranks hold disjoint shards"
    for m in metrics:
        tokens = sum(s["response_tokens"] for s in rank0 + rank1 if s["step"] == m["step"])
        assert m["train/response_tokens"] == tokens, "the learner trained on both ranks' samples"
    assert {s["weight_version"] for s in rank1 if s["step"] == 1} == {1}, "rank 1's generator got the update"
    # metrics.jsonl holds the rollout metrics of both ranks; each rank's own are in rank<r>/metrics.jsonl.
    own = [read_jsonl(run_dir / f"rank{r}" / "metrics.jsonl") for r in (0, 1)]
    assert [[m["step"] for m in rows] for rows in own] == [[0, 1], [0, 1]]
    learner_side = {"time_train_s", "time_weight_sync_s"}  # measured after the gather: rank 0's, not reduced
    learner_keys = {k for rows in own for m in rows for k in m if k.startswith("train/")} | learner_side
    rollout_keys = {k for rows in own for m in rows for k in m} - learner_keys
    assert {k for k in rollout_keys if reduction_rule(k) is None} == set(), "a rollout metric without a rule"
    for m, mine, theirs in zip(metrics, *own, strict=True):
        samples = [s for s in rank0 + rank1 if s["step"] == m["step"]]
        assert m["samples_trained"] == 4 and mine["samples_trained"] == theirs["samples_trained"] == 2
        assert (
            m["gen_tokens"] == sum(s["response_tokens"] for s in samples) == mine["gen_tokens"] + theirs["gen_tokens"]
        )
        scored = [s["reward"] for s in samples if not s["infra_failure"]]
        assert m["samples_scored"] == len(scored)
        assert m["reward_mean"] == pytest.approx(sum(scored) / len(scored), abs=1e-12)
        assert m["time_rollout_s"] == max(mine["time_rollout_s"], theirs["time_rollout_s"])
        expected = reduce_rollout_metrics([{k: v for k, v in r.items() if reduction_rule(k)} for r in (mine, theirs)])
        assert {k: m[k] for k in expected} == expected
    assert sorted(p.name for p in (run_dir / "checkpoints" / "step_000002").glob("extra_rank*.pt")) == [
        "extra_rank0.pt",
        "extra_rank1.pt",
    ]

    # Resumed by as many ranks, with no step left: each rank loads its shards and state; rank 0 alone says so.
    done, exits = torchrun(tmp_path / "exits-resumed", "--quiet", "--resume", *overrides(tiny_model, tmp_path))
    assert done.returncode == 0 and exits == {0: 0, 1: 0}, done.stderr[-3000:]
    assert done.stderr.count("resumed from ") == 1 and "step_000002 at step 2" in done.stderr, done.stderr[-3000:]
    assert done.stderr.count("nothing to do") == 1, done.stderr[-3000:]

    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    # Rank 0 finds the run; rank 1, waiting for its verdict, ends as rank 0 does instead of losing its peer.
    done, exits = torchrun(tmp_path / "exits-again", "--quiet", *overrides(tiny_model, tmp_path))
    assert exits == {0: 2, 1: 2}, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "already holds a run; pass --resume" in errors[0], done.stderr[-3000:]
    # torchrun's own traceback (ChildFailedError) is the only one
    assert done.stderr.count("Traceback") == 1 and "ChildFailedError" in done.stderr, done.stderr[-3000:]
    assert not [line for line in done.stderr.splitlines() if line.startswith("[rank")], done.stderr[-3000:]
    # One process resuming the run of 2 ranks (their checkpoints hold per-rank RNG and data position): one line.
    capsys.readouterr()
    assert main(["--quiet", "--resume", *overrides(tiny_model, tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume: ") and "was saved by 2 rank(s), this run has 1" in err, err
    assert err.count("\n") == 1, err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    # Bad input every rank meets before the process group forms (an unknown key): the node's local rank 0 says it.
    done, exits = torchrun(tmp_path / "exits-bad-key", "--quiet", *overrides(tiny_model, tmp_path), "run.no_such_key=1")
    assert exits == {0: 2, 1: 2}, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "unknown key run.no_such_key" in errors[0], done.stderr[-3000:]
