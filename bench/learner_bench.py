"""Learner.step against the floor: a plain forward + backward + AdamW over exactly the same response tokens.

Both sides start from the same weights and train on the same batch (random prompts and responses of varied
lengths, advantages +-1): the floor right-pads the batch, runs one forward with an attention mask and full
logits, takes the advantage-weighted token-mean of the response log-probs, backward, gradient clipping, AdamW.
The learner runs its real step (on-policy GRPO, one update: packing, response-only logits, clipped loss,
entropy metric, clipping, AdamW, schedule). With ``--group-size G`` the batch is GRPO-shaped (G responses per
prompt) and the learner packs each group on one copy of its prompt, which neither floor does. A third arm, the
packed floor, runs the learner's packed forward with a bare loss, to isolate the learner's own overhead. Runs
alternate between the arms, so drift on a shared machine hits them alike; the report gives wall and CPU-time
medians, min/max and the ratios of medians (target: learner <= 1.15x the floor). On a machine shared with
other jobs, use --threads 1 and read the CPU-time ratio. The floors step torch's default AdamW (the plain way;
on CPU the per-tensor loop), the learner torch's fused AdamW: that is part of its margin, and
--compare-optimizer adds the learner on the default AdamW to show how much. The report also gives Learner.step's
own phases (its time_<phase>_s metrics: prepare, forward_backward, optimizer).

    python bench/learner_bench.py                        # the embedded SmolLM2-135M (learner.models)
    python bench/learner_bench.py --model tiny --repeats 5
    python bench/learner_bench.py --json bench/out/learner.json
    python bench/learner_bench.py --group-size 4 --sequences 8 --prompt-len 400 600 --response-len 32 160
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from learner.config import LearnerConfig, RolloutBatch
from learner.policy import pack
from learner.trainer import PHASES, Learner, make_optimizer, make_scheduler


def with_loop_adamw(learner: Learner) -> Learner:
    """`learner` with torch's default AdamW (on CPU the per-tensor loop) and a fresh schedule over it: the
    optimizer Learner used before it chose the fused kernel."""
    params = [p for p in learner.model.parameters() if p.requires_grad]
    learner.optimizer = make_optimizer(params, learner.config, fused=False)
    learner.scheduler = make_scheduler(learner.optimizer, learner.config)
    return learner


def make_batch(
    vocab: int,
    *,
    sequences: int,
    prompt_len: tuple[int, int],
    response_len: tuple[int, int],
    seed: int,
    group_size: int = 1,
) -> RolloutBatch:
    """Random prompts and responses; each run of ``group_size`` consecutive sequences shares one prompt."""
    g = torch.Generator().manual_seed(seed)

    def draw(lo_hi: tuple[int, int]) -> list[int]:
        n = int(torch.randint(lo_hi[0], lo_hi[1] + 1, (1,), generator=g))
        return torch.randint(0, vocab, (n,), generator=g).tolist()

    heads = [draw(prompt_len) for _ in range(-(-sequences // group_size))]
    prompts = [heads[i // group_size] for i in range(sequences)]
    responses = [draw(response_len) for _ in range(sequences)]
    advantages = [1.0 if i % 2 == 0 else -1.0 for i in range(sequences)]
    return RolloutBatch(prompts=prompts, responses=responses, advantages=advantages)


def floor_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: RolloutBatch, grad_clip: float) -> None:
    """The plain way: padded batch, one forward, full logits, masked advantage-weighted log-probs, AdamW."""
    width = max(len(p) + len(r) for p, r in zip(batch.prompts, batch.responses, strict=True))
    n = len(batch)
    ids = torch.zeros(n, width, dtype=torch.long)
    attention = torch.zeros(n, width, dtype=torch.long)
    weights = torch.zeros(n, width)
    assert batch.advantages is not None
    for i, (p, r, a) in enumerate(zip(batch.prompts, batch.responses, batch.advantages, strict=True)):
        ids[i, : len(p) + len(r)] = torch.tensor([*p, *r])
        attention[i, : len(p) + len(r)] = 1
        weights[i, len(p) : len(p) + len(r)] = a
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    tokens = sum(len(r) for r in batch.responses)
    loss = -(logprobs * weights[:, 1:]).sum() / tokens
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def packed_floor_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch: RolloutBatch, grad_clip: float
) -> None:
    """The same packed row and response-only logits as the learner, with none of its RL machinery.

    Measures what the learner adds on top of the forward/backward it runs (loss, clipping metrics, entropy,
    bookkeeping); the padded floor above is what a plain implementation costs.
    """
    ids, pos, keep, targets, weights = [], [], [], [], []
    assert batch.advantages is not None
    for p, r, a in zip(batch.prompts, batch.responses, batch.advantages, strict=True):
        seq = [*p, *r[:-1]]
        ids += seq
        pos += range(len(seq))
        keep += [False] * (len(p) - 1) + [True] * len(r)
        targets += r
        weights += [a] * len(r)
    logits = model(
        input_ids=torch.tensor([ids]), position_ids=torch.tensor([pos]), logits_to_keep=torch.tensor([keep])
    ).logits.reshape(len(targets), -1)
    logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, torch.tensor(targets)[:, None]).squeeze(-1)
    loss = -(logprobs * torch.tensor(weights)).sum() / len(targets)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def load(name: str) -> nn.Module:
    if name == "tiny":
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(
            vocab_size=4096,
            hidden_size=256,
            intermediate_size=768,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            attn_implementation="sdpa",
        )
        return LlamaForCausalLM(config)
    from learner.models import load_model

    return load_model(name, dtype="float32")


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds of one call. On a shared machine CPU time is the steadier measure of the work."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="a learner.models name, or 'tiny' (random Llama)")
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, nargs=2, default=(24, 64))
    parser.add_argument("--response-len", type=int, nargs=2, default=(16, 96))
    parser.add_argument(
        "--group-size",
        type=int,
        default=1,
        help="sequences per prompt: 1 measures the learner's overhead on unrelated sequences; "
        "a GRPO group (e.g. 4) lets the learner pack the group on one copy of its prompt",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--compare-optimizer",
        action="store_true",
        help="add an arm: the same Learner with torch's default AdamW (the per-tensor loop on CPU) instead of its "
        "fused one, to measure that choice in this run",
    )
    parser.add_argument("--json", default=None, help="also write the report here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    base = load(args.model)
    vocab = base.config.vocab_size
    batch = make_batch(
        vocab,
        sequences=args.sequences,
        prompt_len=tuple(args.prompt_len),
        response_len=tuple(args.response_len),
        seed=0,
        group_size=args.group_size,
    )
    config = LearnerConfig(lr=1e-6, micro_batch_tokens=1 << 20, device="cpu")
    floor_model, packed_model = copy.deepcopy(base), copy.deepcopy(base)
    floor_opt = torch.optim.AdamW(floor_model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    packed_opt = torch.optim.AdamW(packed_model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loop_model = copy.deepcopy(base) if args.compare_optimizer else None
    learner = Learner(base, config)
    learners = {"learner": learner}
    if loop_model is not None:
        learners["learner_loop_adamw"] = with_loop_adamw(Learner(loop_model, config))

    phases: dict[str, list[dict[str, float]]] = {name: [] for name in learners}

    def learner_arm(name: str) -> Callable[[], object]:
        def step() -> None:
            metrics = learners[name].step(batch)
            phases[name].append({p: metrics[f"time_{p}_s"] for p in PHASES} | {"step": metrics["step_s"]})

        return step

    arms: dict[str, Callable[[], object]] = {
        "floor": lambda: floor_step(floor_model, floor_opt, batch, config.grad_clip),
        "packed_floor": lambda: packed_floor_step(packed_model, packed_opt, batch, config.grad_clip),
        **{name: learner_arm(name) for name in learners},
    }
    for fn in arms.values():  # warm-up: allocator, optimizer state
        fn()
    for rows in phases.values():  # the warm-up step is not timed
        rows.clear()
    wall: dict[str, list[float]] = {name: [] for name in arms}
    cpu: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.repeats):
        for name, fn in arms.items():
            w, c = timed(fn)
            wall[name].append(w)
            cpu[name].append(c)
    medians = {name: statistics.median(t) for name, t in wall.items()}
    cpu_medians = {name: statistics.median(t) for name, t in cpu.items()}
    response_tokens = sum(len(r) for r in batch.responses)
    report = {
        "model": args.model,
        "sequences": len(batch),
        "group_size": args.group_size,
        "learner_packed_tokens": sum(
            mb.num_tokens
            for mb in pack(batch.prompts, batch.responses, max_tokens=config.micro_batch_tokens, share_prompts=True)
        ),
        "response_tokens": response_tokens,
        "input_tokens": sum(len(p) + len(r) for p, r in zip(batch.prompts, batch.responses, strict=True)),
        "padded_tokens": len(batch) * max(len(p) + len(r) for p, r in zip(batch.prompts, batch.responses, strict=True)),
        "threads": torch.get_num_threads(),
        "wall_s": {name: {"median": medians[name], "min": min(t), "max": max(t)} for name, t in wall.items()},
        "cpu_s": {name: {"median": cpu_medians[name], "min": min(t), "max": max(t)} for name, t in cpu.items()},
        "response_tokens_per_s": {name: response_tokens / m for name, m in medians.items()},
        "ratio_learner_to_floor_wall": medians["learner"] / medians["floor"],
        "ratio_learner_to_floor_cpu": cpu_medians["learner"] / cpu_medians["floor"],
        "ratio_learner_to_packed_floor_wall": medians["learner"] / medians["packed_floor"],
        "ratio_learner_to_packed_floor_cpu": cpu_medians["learner"] / cpu_medians["packed_floor"],
        # Learner.step's own phases (its time_<phase>_s metrics), median over the timed steps, per learner arm
        "phases_s": {
            name: {k: statistics.median(row[k] for row in rows) for k in (*PHASES, "step")}
            for name, rows in phases.items()
        },
    }
    if "learner_loop_adamw" in medians:
        report["ratio_learner_to_loop_adamw_wall"] = medians["learner"] / medians["learner_loop_adamw"]
        optimizer = {name: report["phases_s"][name]["optimizer"] for name in learners}
        report["ratio_optimizer_fused_to_loop"] = optimizer["learner"] / optimizer["learner_loop_adamw"]
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
