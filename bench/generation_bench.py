"""Tokens/s of the local generation backend against `model.generate` on the same batch and settings.

Both sides get the same left-padded prompts (each repeated n times), the same sampling (temperature, top-p,
top-k), the same stop ids and max_new_tokens; tokens/s counts the tokens each sample really produced (up to
and including its stop token). Runs alternate between the variants, so drift on a shared machine hits all of
them alike; the report gives the median, min and max over repeats and the ratio of medians to generate.
Variants: the local backend with finished rows dropped from the batch (compact) or masked, dynamic or
static KV cache.

    python bench/generation_bench.py                          # tiny random Llama, stop ids so lengths vary
    python bench/generation_bench.py --model smollm2-135m     # the embedded model (learner.models)
    python bench/generation_bench.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from engine.generation import SamplingParams
from engine.generation.local import LocalBackend, LocalConfig


@dataclass(frozen=True, kw_only=True)
class Workload:
    prompts: list[list[int]]
    n: int
    params: SamplingParams


def tiny_model(vocab: int, hidden: int, layers: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 11 // 4, num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 128),
        max_position_embeddings=2048, eos_token_id=None, bos_token_id=1, pad_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


QUESTIONS = (
    "A bakery makes bread and cake earning 3 and 5 dollars each; flour limits output to 40 units. Maximise profit.",
    "Minimise the cost of a diet with two foods costing 2 and 3 that must supply at least 10 units of protein.",
    "A factory ships goods from two plants to three stores. Formulate the transportation problem.",
    "Choose projects with costs 4, 6, 3 and values 7, 9, 5 under a budget of 10 to maximise total value.",
    "Schedule three jobs on one machine to minimise total completion time given times 3, 1 and 2.",
    "Write a linear program that maximises x + 2y subject to x + y <= 4 and x, y >= 0.",
    "A farmer has 100 acres for wheat and corn with a labour limit of 120 hours. Maximise revenue.",
    "Assign four workers to four tasks at minimum total cost, given a cost matrix.",
)


def workload(model: torch.nn.Module, args: argparse.Namespace) -> Workload:
    """Tiny model: random prompts of mixed lengths, and stop ids that a near-uniform model hits at about
    1/stop_every per token. A real model: chat prompts from its tokenizer; it stops at its own EOS."""
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(1)
    if args.model == "tiny":
        lengths = torch.randint(args.prompt_len // 2, args.prompt_len + 1, (args.batch,), generator=gen)
        prompts = [torch.randint(3, vocab, (int(n),), generator=gen).tolist() for n in lengths]
    else:
        from learner.models import load_tokenizer

        tokenizer = load_tokenizer(args.model)
        chats = [[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}] for i in range(args.batch)]
        encoded = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True) for c in chats]
        prompts = [list(e["input_ids"]) if isinstance(e, Mapping) else list(e) for e in encoded]
    stops = tuple(range(3, 3 + max(1, vocab // args.stop_every))) if args.stop_every else ()
    eos = model.generation_config.eos_token_id
    stops += tuple(eos if isinstance(eos, list) else [eos]) if eos is not None else ()
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=1.0, top_p=0.95, top_k=50, stop_token_ids=stops, seed=0
    )
    return Workload(prompts=prompts, n=args.n, params=params)


def useful_tokens(rows: list[list[int]], stops: set[int]) -> int:
    total = 0
    for row in rows:
        cut = next((k + 1 for k, t in enumerate(row) if t in stops), len(row))
        total += cut
    return total


def run_generate(model: torch.nn.Module, w: Workload) -> int:
    rows = [p for p in w.prompts for _ in range(w.n)]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in rows])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in rows])
    p = w.params
    out = model.generate(
        input_ids=ids, attention_mask=mask, do_sample=True, temperature=p.temperature, top_p=p.top_p, top_k=p.top_k,
        max_new_tokens=p.max_new_tokens, eos_token_id=list(p.stop_token_ids) or None, pad_token_id=0,
    )  # fmt: skip
    return useful_tokens(out[:, width:].tolist(), set(p.stop_token_ids))


def run_local(model: torch.nn.Module, w: Workload, config: LocalConfig) -> int:
    async def go() -> int:
        async with LocalBackend(model, config) as backend:
            return sum([len(c.token_ids) async for c in backend.generate(w.prompts, w.params, n=w.n)])

    return asyncio.run(go())


def measure(variants: dict[str, Callable[[], int]], repeats: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            start = time.perf_counter()
            tokens = variants[name]()
            rates[name].append(tokens / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", help="'tiny' (random Llama) or a name for learner.models.load_model")
    parser.add_argument("--vocab", type=int, default=4096, help="tiny model: vocabulary size")
    parser.add_argument("--hidden", type=int, default=256, help="tiny model: hidden size")
    parser.add_argument("--layers", type=int, default=4, help="tiny model: decoder layers")
    parser.add_argument("--batch", type=int, default=4, help="prompts per call")
    parser.add_argument("--n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--stop-every", type=int, default=32, help="tiny model: stop ids cover vocab/this (0: none)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: leave torch's default)")
    parser.add_argument("--json", default="", help="also write the results here")
    parser.add_argument(
        "--variants",
        default="local_compact,local_mask,local_static_mask,local_static_compact",
        help="local variants to run besides generate",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == "tiny":
        model = tiny_model(args.vocab, args.hidden, args.layers)
    else:
        from learner.models import load_model

        model = load_model(args.model).eval()
        args.stop_every = 0
    w = workload(model, args)
    variants = {
        "hf_generate": lambda: run_generate(model, w),
        "local_compact": lambda: run_local(model, w, LocalConfig(finished_rows="compact")),
        "local_mask": lambda: run_local(model, w, LocalConfig(finished_rows="mask")),
        "local_static_mask": lambda: run_local(model, w, LocalConfig(cache="static", finished_rows="mask")),
        "local_static_compact": lambda: run_local(model, w, LocalConfig(cache="static", finished_rows="compact")),
    }
    unknown = set(args.variants.split(",")) - set(variants)
    if unknown:
        raise SystemExit(f"unknown variant(s) {sorted(unknown)}; valid: {sorted(variants)}")
    variants = {k: v for k, v in variants.items() if k == "hf_generate" or k in args.variants.split(",")}
    run_generate(model, w)  # warm-up: first-call allocations and lazy imports
    rates = measure(variants, args.repeats)
    base = statistics.median(rates["hf_generate"])
    shape = f"hidden={model.config.hidden_size} layers={model.config.num_hidden_layers} vocab={model.config.vocab_size}"
    print(f"model={args.model} {shape} rows={args.batch}x{args.n} max_new_tokens={args.max_new_tokens} "
          f"threads={torch.get_num_threads()} repeats={args.repeats}")  # fmt: skip
    report = {}
    for name, values in rates.items():
        med = statistics.median(values)
        report[name] = {"median_tok_s": med, "min": min(values), "max": max(values), "vs_generate": med / base}
        print(f"{name:>18}: {med:8.1f} tok/s  [{min(values):.1f} .. {max(values):.1f}]  x{med / base:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": report}, f, indent=2)


if __name__ == "__main__":
    main()
