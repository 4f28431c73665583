"""Tiny models and batches for the learner tests, and the entry points of their subprocesses (not collected).

conftest.py loads this file by path for the in-process tests; subprocesses run it directly:

    torchrun --nproc-per-node 2 tests/learner/worker.py dist OUT_DIR
    python tests/learner/worker.py train CKPT_DIR --steps 40 --save-at 2 [--resume]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from learner.checkpoint import export_hf, full_state_dict, latest_checkpoint, load_checkpoint, save_checkpoint
from learner.config import AlgorithmConfig, LearnerConfig, RolloutBatch
from learner.distributed import exit_rank, shutdown_distributed
from learner.trainer import Learner

VOCAB = 48


def tiny_llama(seed: int = 0, *, layers: int = 2, hidden: int = 64, vocab: int = VOCAB) -> LlamaForCausalLM:
    """A 2-layer, 64-wide Llama in fp32 with deterministic weights (seeded)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config).float()


def random_sequences(n: int, seed: int = 0, *, vocab: int = VOCAB) -> tuple[list[list[int]], list[list[int]]]:
    """n (prompt, response) token lists of varied lengths (prompt 2-9 tokens, response 1-12)."""
    g = torch.Generator().manual_seed(seed)
    prompts, responses = [], []
    for _ in range(n):
        p = int(torch.randint(2, 10, (1,), generator=g))
        r = int(torch.randint(1, 13, (1,), generator=g))
        prompts.append(torch.randint(0, vocab, (p,), generator=g).tolist())
        responses.append(torch.randint(0, vocab, (r,), generator=g).tolist())
    return prompts, responses


DIST_BATCH = 10


def dist_batch() -> RolloutBatch:
    """Pairs of samples share a prompt, so ranks and micro-batches pack shared prompt units."""
    prompts, responses = random_sequences(DIST_BATCH, seed=11)
    prompts = [prompts[i - i % 2] for i in range(DIST_BATCH)]
    return RolloutBatch(
        prompts=prompts, responses=responses, advantages=[(-1.0) ** i * (0.5 + i / 7) for i in range(DIST_BATCH)]
    )


def dist_config(micro_batch_tokens: int) -> LearnerConfig:
    return LearnerConfig(lr=1e-3, micro_batch_tokens=micro_batch_tokens, ppo_epochs=1, mini_batches=1)


def uneven_batch() -> RolloutBatch:
    """7 sequences, one 5x longer prompt: with 2 ranks and 14-token micro-batches one rank has fewer micro-batches.
    Generator log-probs around the tiny model's (-log 48 = -3.87), so the rollout correction weighs and caps."""
    prompts, responses = random_sequences(7, seed=21)
    prompts[0] = prompts[0] * 5
    rewards = [1.0, 0.0, 0.5, 0.2, 0.9, 0.1, 0.3]
    g = torch.Generator().manual_seed(22)
    behaviour = [(-4.6 + 1.4 * torch.rand(len(r), generator=g, dtype=torch.float64)).tolist() for r in responses]
    return RolloutBatch(
        prompts=prompts, responses=responses, rewards=rewards, group_ids=[0, 0, 0, 1, 1, 1, 1], old_logprobs=behaviour
    )


def uneven_config() -> LearnerConfig:
    algo = AlgorithmConfig(
        kl_coef=0.1,
        dual_clip=3.0,
        loss_agg="seq-mean-token-mean",
        clip_high=0.28,
        rollout_correction="tis",
        tis_cap=1.5,
    )
    return LearnerConfig(lr=1e-3, ppo_epochs=2, mini_batches=2, micro_batch_tokens=14, algorithm=algo)


def run_uneven(steps: int = 2) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    """KL against a reference, 2 epochs x 2 mini-batches, and (under 2 ranks) zero-weight passes to pair FSDP."""
    learner = Learner(tiny_llama(seed=0), uneven_config(), ref_model=tiny_llama(seed=1))
    metrics = [learner.step(uneven_batch()) for _ in range(steps)]
    return metrics, full_state_dict(learner)


def _full_grads(learner: Learner, sink: list[dict[str, torch.Tensor]]) -> None:
    def hook(opt, args, kwargs):
        sink.append(
            {n: getattr(p.grad, "full_tensor", lambda g=p.grad: g)() for n, p in learner.model.named_parameters()}
        )

    learner.optimizer.register_step_pre_hook(hook)


def run_dist(out: Path) -> None:
    """One step at two micro-batch sizes, a checkpoint round trip, and an HF export, under torchrun."""
    results: dict[str, object] = {}
    results["uneven_metrics"], results["uneven_weights"] = run_uneven()
    for tokens in (12, 10_000):
        learner = Learner(tiny_llama(seed=0), dist_config(tokens))
        grads: list[dict[str, torch.Tensor]] = []
        _full_grads(learner, grads)
        results[f"metrics_{tokens}"] = learner.step(dist_batch())
        results[f"grads_{tokens}"] = grads[0]
        results[f"weights_{tokens}"] = full_state_dict(learner)
    save_checkpoint(learner, out / "ckpt" / "step_1", loop_state={"next": 1})
    results["step2_uninterrupted"] = learner.step(dist_batch())
    export_hf(learner, out / "hf")
    resumed = Learner(tiny_llama(seed=5), dist_config(10_000))
    results["loop_state"] = load_checkpoint(resumed, latest_checkpoint(out / "ckpt"))
    results["step2_resumed"] = resumed.step(dist_batch())
    results["weights_resumed"] = full_state_dict(resumed)
    results["weights_uninterrupted"] = full_state_dict(learner)
    # rank 0 reads the exported weights, rank 1 starts on the meta device and receives its shards
    loaded = Learner.from_pretrained(str(out / "hf"), dist_config(12))
    results["loaded_step"] = loaded.step(dist_batch())
    results["weights_loaded"] = full_state_dict(loaded)
    if learner.ctx.rank == 0:
        torch.save(results, out / "results.pt")


TRAIN_CONFIG = LearnerConfig(
    lr=3e-3, warmup_steps=2, ppo_epochs=2, mini_batches=2, algorithm=AlgorithmConfig(clip_high=0.28)
)


def sampled_batch() -> RolloutBatch:
    """Responses drawn from torch's global RNG, so a resume that forgets the RNG state would diverge."""
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9]] * 2
    responses = [torch.randint(0, 48, (int(torch.randint(2, 8, (1,))),)).tolist() for _ in prompts]
    rewards = [sum(t < 24 for t in r) / len(r) for r in responses]
    return RolloutBatch(prompts=prompts, responses=responses, rewards=rewards, group_ids=[0, 1, 2] * 2)


def run_train(ckpt: Path, steps: int, save_at: int, resume: bool) -> None:
    learner = Learner(tiny_llama(seed=0 if not resume else 9), TRAIN_CONFIG)
    start = 0
    if resume:
        start = load_checkpoint(learner, latest_checkpoint(ckpt))["next_step"]
    else:
        torch.manual_seed(1234)
    for step in range(start, steps):
        metrics = learner.step(sampled_batch())
        fingerprint = sum(float(p.double().square().sum()) for p in learner.model.parameters())
        print(json.dumps({"step": step, "fingerprint": fingerprint, **metrics}), flush=True)
        if step + 1 == save_at and not resume:
            save_checkpoint(learner, ckpt / f"step_{step + 1:08d}", loop_state={"next_step": step + 1})
            print("saved", flush=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dist")
    d.add_argument("out", type=Path)
    t = sub.add_parser("train")
    t.add_argument("ckpt", type=Path)
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--save-at", type=int, required=True)
    t.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.cmd == "dist":
        run_dist(args.out)
    else:
        run_train(args.ckpt, args.steps, args.save_at, args.resume)
    if shutdown_distributed():
        exit_rank(0)


if __name__ == "__main__":
    main(sys.argv[1:])
