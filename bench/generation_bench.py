"""Tokens/s of the local generation backend against `model.generate` on the same batch and settings.

Both sides get the same prompts (each repeated n times; generate gets them left-padded), the same sampling
(temperature, top-p, top-k; top-k -1 is passed to generate as 0, since generate otherwise applies its default
top-k of 50), the same stop ids and max_new_tokens. Tokens/s counts the tokens each sample really produced
(up to and including its stop token): generate keeps decoding finished rows until the last one stops, the
local backend drops them, and that is part of what is measured. Runs alternate between the variants, so drift
on a shared machine hits all of them alike; the report gives the median, min and max over repeats and the
ratio of medians to generate, plus the prompt lengths and how many samples stopped before max_new_tokens.
Variants: the local backend with finished rows dropped from the batch (compact) or masked; with each prompt's
KV cache kept once for its samples (the default, shared), repeated per row in a cache that grows in place
(dynamic), or a static one; and the default with the linear layers on plain weights instead of prepacked oneDNN
ones (unpacked).

A real model gets EVOM rollout prompts: generated easy problems with the coptpy instructions in the model's
chat template (what `make run` sends, ~290-350 tokens for SmolLM2), sampled as the default config does
(T=0.8, no top-k/top-p), stopping at the model's EOS. The tiny random model gets random prompts and extra stop
ids that a near-uniform model hits at about 1/stop_every per token, so lengths vary.

    python bench/generation_bench.py                          # tiny random Llama
    python bench/generation_bench.py --model smollm2-135m --batch 4 --n 4 --max-new-tokens 160
    python bench/generation_bench.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

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
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 11 // 4,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 128),
        max_position_embeddings=2048,
        eos_token_id=None,
        bos_token_id=1,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def workload(model: torch.nn.Module, args: argparse.Namespace) -> Workload:
    """Prompts, n and sampling for both sides (see the module docstring)."""
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(1)
    if args.model == "tiny":
        lengths = torch.randint(args.prompt_len // 2, args.prompt_len + 1, (args.batch,), generator=gen)
        prompts = [torch.randint(3, vocab, (int(n),), generator=gen).tolist() for n in lengths]
    else:
        prompts = rollout_prompts(args.model, args.batch, args.solver)
    stops = tuple(range(3, 3 + max(1, vocab // args.stop_every))) if args.stop_every else ()
    eos = model.generation_config.eos_token_id
    stops += tuple(eos if isinstance(eos, list) else [eos]) if eos is not None else ()
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        stop_token_ids=stops,
        seed=0,
    )
    return Workload(prompts=prompts, n=args.n, params=params)


def rollout_prompts(model_name: str, count: int, solver: str) -> list[list[int]]:
    """The prompts a rollout sends: generated easy problems rendered with the solver's instructions."""
    from engine.data import generate_problems
    from engine.prompts import PromptBuilder, PromptSettings
    from learner.models import load_tokenizer
    from solvers import get_solver

    builder = PromptBuilder(
        load_tokenizer(model_name),
        instructions=get_solver(solver).instructions,
        settings=PromptSettings(max_prompt_tokens=1 << 20),
    )
    return [builder.render(p.question) for p in generate_problems(count, difficulty="easy", seed=0)]


def useful_lengths(rows: list[list[int]], stops: set[int]) -> list[int]:
    """Tokens per row up to and including its first stop token (all of them when it never stopped)."""
    return [next((k + 1 for k, t in enumerate(row) if t in stops), len(row)) for row in rows]


def run_generate(model: torch.nn.Module, w: Workload, seed: int = 0) -> list[int]:
    rows = [p for p in w.prompts for _ in range(w.n)]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in rows])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in rows])
    p = w.params
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=not p.greedy,
            temperature=p.temperature or None,
            top_p=p.top_p,
            top_k=max(p.top_k, 0),
            max_new_tokens=p.max_new_tokens,
            eos_token_id=list(p.stop_token_ids) or None,
            pad_token_id=0,
        )
    return useful_lengths(out[:, width:].tolist(), set(p.stop_token_ids))


class LocalRunner:
    """One LocalBackend kept open across calls, on one event loop, as engine.run keeps its backend: a timed call
    decodes; it does not pack the weights again (the weights do not change between calls here)."""

    def __init__(self, model: torch.nn.Module, config: LocalConfig) -> None:
        self._loop = asyncio.Runner()
        self._backend = LocalBackend(model, config)

    def __call__(self, w: Workload, seed: int = 0) -> list[int]:
        params = replace(w.params, seed=seed)

        async def go() -> list[int]:
            return [len(c.token_ids) async for c in self._backend.generate(w.prompts, params, n=w.n)]

        return self._loop.run(go())

    def close(self) -> None:
        self._loop.run(self._backend.close())
        self._loop.close()


def measure(
    variants: dict[str, Callable[[int], list[int]]], repeats: int, calls: int = 1
) -> tuple[dict[str, list[float]], dict]:
    """Alternating runs; tokens/s per run and, per variant, the sample lengths of every run. A run is `calls`
    back-to-back calls (seeds r * calls .. r * calls + calls - 1 in repeat r), timed together, so one timing spans
    seconds rather than one short call; every variant gets the same seeds, so the samples (and their lengths)
    change between repeats the same way for every variant."""
    rates: dict[str, list[float]] = {name: [] for name in variants}
    lengths: dict[str, list[list[int]]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            start = time.perf_counter()
            got = [n for seed in range(r * calls, (r + 1) * calls) for n in variants[name](seed)]
            rates[name].append(sum(got) / (time.perf_counter() - start))
            lengths[name].append(got)
    return rates, lengths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", help="'tiny' (random Llama) or a name for learner.models.load_model")
    parser.add_argument("--vocab", type=int, default=4096, help="tiny model: vocabulary size")
    parser.add_argument("--hidden", type=int, default=256, help="tiny model: hidden size")
    parser.add_argument("--layers", type=int, default=4, help="tiny model: decoder layers")
    parser.add_argument("--batch", type=int, default=4, help="prompts per call")
    parser.add_argument("--n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--prompt-len", type=int, default=64, help="tiny model: longest random prompt")
    parser.add_argument("--solver", default="coptpy", help="real model: whose instructions the prompts carry")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.8, help="0: greedy (default: the default config's)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=-1, help="-1: off")
    parser.add_argument("--stop-every", type=int, default=32, help="tiny model: stop ids cover vocab/this (0: none)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=1, help="generate calls timed together in each repeat")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: leave torch's default)")
    parser.add_argument("--json", default="", help="also write the results here")
    parser.add_argument(
        "--variants",
        default="local_compact,local_unpacked,local_mask,local_static_mask,local_static_compact",
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
    configs = {
        "local_compact": LocalConfig(finished_rows="compact"),
        "local_mask": LocalConfig(finished_rows="mask"),
        "local_unpacked": LocalConfig(prepack_weights=False),
        "local_model_forward": LocalConfig(fast_decode=False),
        "local_dynamic_compact": LocalConfig(cache="dynamic", finished_rows="compact"),
        "local_static_mask": LocalConfig(cache="static", finished_rows="mask"),
        "local_static_compact": LocalConfig(cache="static", finished_rows="compact"),
    }
    chosen = args.variants.split(",")
    unknown = set(chosen) - set(configs)
    if unknown:
        raise SystemExit(f"unknown variant(s) {sorted(unknown)}; valid: {sorted(configs)}")
    runners = {name: LocalRunner(model, configs[name]) for name in chosen}
    variants: dict[str, Callable[[int], list[int]]] = {"hf_generate": lambda seed: run_generate(model, w, seed)}
    for name, runner in runners.items():
        variants[name] = lambda seed, runner=runner: runner(w, seed)
    # Warm-up of every path (first-call allocations, lazy imports, packing) on a short call, so it costs seconds.
    short = Workload(prompts=w.prompts[:1], n=1, params=replace(w.params, max_new_tokens=2))
    run_generate(model, short)
    for runner in runners.values():
        runner(short)
    rates, lengths = measure(variants, args.repeats, args.calls)
    for runner in runners.values():
        runner.close()
    base = statistics.median(rates["hf_generate"])
    shape = f"hidden={model.config.hidden_size} layers={model.config.num_hidden_layers} vocab={model.config.vocab_size}"
    p = w.params
    print(
        f"model={args.model} {shape} rows={args.batch}x{args.n} max_new_tokens={p.max_new_tokens} "
        f"T={p.temperature} top_p={p.top_p} top_k={p.top_k} threads={torch.get_num_threads()} "
        f"repeats={args.repeats} calls={args.calls}"
    )
    prompt_lens = sorted(map(len, w.prompts))
    print(f"prompt tokens: {prompt_lens}")
    report = {}
    for name, values in rates.items():
        med = statistics.median(values)
        runs = lengths[name]
        per_sample = sum(map(sum, runs)) / sum(map(len, runs))
        early = sum(n < p.max_new_tokens for run in runs for n in run) / sum(map(len, runs))
        report[name] = {
            "median_tok_s": med,
            "min": min(values),
            "max": max(values),
            "vs_generate": med / base,
            "mean_sample_tokens": per_sample,
            "stopped_early": early,
        }
        print(
            f"{name:>20}: {med:8.1f} tok/s  [{min(values):.1f} .. {max(values):.1f}]  x{med / base:.2f}   "
            f"{per_sample:.0f} tokens/sample, {early:.0%} stopped before max_new_tokens"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "prompt_tokens": prompt_lens, "results": report}, f, indent=2)


if __name__ == "__main__":
    main()
