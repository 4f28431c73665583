"""FSDP2 under torchrun (2 CPU ranks, gloo) against one process, and kill/resume from a checkpoint."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from learner.config import LearnerConfig, RolloutBatch
from learner.distributed import split_across_ranks
from learner.policy import pack
from learner.trainer import Learner

WORKER = Path(__file__).with_name("worker.py")
REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _single_process_step(model, batch: RolloutBatch, config: LearnerConfig):
    learner = Learner(model, config)
    grads: list[dict[str, torch.Tensor]] = []
    learner.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: grads.append({n: p.grad.clone() for n, p in learner.model.named_parameters()})
    )
    metrics = learner.step(batch)
    return metrics, grads[0], {k: v.detach().clone() for k, v in learner.model.state_dict().items()}


@pytest.mark.slow
def test_two_ranks_match_one_process(tmp_path, worker):
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    proc = subprocess.run(
        [*cmd, str(WORKER), "dist", str(tmp_path)], env=_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = torch.load(tmp_path / "results.pt", weights_only=False)

    metrics, grads, weights = _single_process_step(
        worker.tiny_llama(seed=0), worker.dist_batch(), worker.dist_config(10_000)
    )
    for tokens in (12, 10_000):  # two micro-batch splits per rank, both against one process with one micro-batch
        assert _max_diff(results[f"grads_{tokens}"], grads) < 1e-6
        assert _max_diff(results[f"weights_{tokens}"], weights) < 1e-5
        assert results[f"metrics_{tokens}"]["grad_norm"] == pytest.approx(metrics["grad_norm"], rel=1e-6)
        assert results[f"metrics_{tokens}"]["entropy"] == pytest.approx(metrics["entropy"], rel=1e-6)
    # ranks with unequal micro-batch counts, KL against a reference, 2 epochs x 2 mini-batches, 2 steps
    batch = worker.uneven_batch()
    second_mini_batch = {i: len(batch.prompts[i]) + len(batch.responses[i]) - 1 for i in range(4, 7)}
    counts = [
        len(pack(batch.prompts, batch.responses, max_tokens=14, indices=share))
        for share in split_across_ranks(second_mini_batch, 2)
    ]
    assert counts[0] != counts[1]  # so one rank runs a zero-weight pass
    metrics, weights = worker.run_uneven()
    assert _max_diff(results["uneven_weights"], weights) < 1e-5
    for got, expected in zip(results["uneven_metrics"], metrics, strict=True):
        for key in ("loss", "kl", "grad_norm", "entropy", "clip_frac_high", "clip_frac_low"):
            assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-7), key
        # the rollout-correction metrics cover both ranks' tokens, the quantiles included
        assert {k: v for k, v in got.items() if k.startswith("mismatch_")} == pytest.approx(
            {k: v for k, v in expected.items() if k.startswith("mismatch_")}, rel=1e-5, abs=1e-7
        )
    assert 0 < metrics[0]["mismatch_ratio_p05"] < 1 < metrics[0]["mismatch_ratio_max"]
    assert metrics[0]["mismatch_weight_mean"] < 1.0 < metrics[0]["mismatch_ratio_p95"]  # some weights capped at 1.5
    # checkpoint round trip across 2 ranks: the resumed step equals the uninterrupted one
    assert results["loop_state"] == {"next": 1}
    assert _max_diff(results["weights_resumed"], results["weights_uninterrupted"]) == 0.0
    assert results["step2_resumed"]["grad_norm"] == results["step2_uninterrupted"]["grad_norm"]
    # the HF export gathered from the shards loads with transformers and holds the trained weights
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").state_dict()
    assert _max_diff(exported, results["weights_uninterrupted"]) == 0.0
    # from_pretrained under torchrun: rank 1 starts on the meta device and gets rank 0's weights and buffers
    single = Learner.from_pretrained(str(tmp_path / "hf"), worker.dist_config(12))  # as the ranks loaded it
    loaded_metrics = single.step(worker.dist_batch())
    assert _max_diff(results["weights_loaded"], single.full_weights()) < 1e-5
    assert results["loaded_step"]["grad_norm"] == pytest.approx(loaded_metrics["grad_norm"], rel=1e-6)
    assert results["loaded_step"]["entropy"] == pytest.approx(loaded_metrics["entropy"], rel=1e-6)


def _train(ckpt: Path, steps: int, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(WORKER), "train", str(ckpt), "--steps", str(steps), "--save-at", "2", *extra]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_next_step(tmp_path):
    first = _train(tmp_path, 40)
    rows: list[dict] = []
    assert first.stdout is not None
    for line in first.stdout:
        if line.startswith("{"):
            rows.append(json.loads(line))
        if len(rows) == 3:  # the step after the checkpoint is done: kill in the middle of the next ones
            first.send_signal(signal.SIGKILL)
            break
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL, first.stderr.read() if first.stderr else ""
    resumed = _train(tmp_path, 3, "--resume")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-4000:]
    after = json.loads(out.splitlines()[0])
    assert after["step"] == 2
    for key in ("fingerprint", "loss", "grad_norm", "entropy", "clip_frac_high", "lr"):
        assert after[key] == rows[2][key], key
