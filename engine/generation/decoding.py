"""The batched decoding loop behind the `local` backend: plain torch over a transformers causal LM.

Synchronous on purpose: `engine.generation.local` runs it on a dedicated thread so the event loop keeps
verifying finished samples while this decodes. Every row (one sample of one prompt) is emitted through
`on_finish` the moment it stops, not at the end of the batch.

Shapes: B rows, L = longest prompt (prompts are left-padded), V = vocabulary size.
Sampling per row uses the exponential-race form of categorical sampling (argmax of p / E, E ~ Exp(1))
with one torch.Generator per row, so a seeded sample does not depend on its batch neighbours, on whether
finished rows are dropped or masked, or on the batch size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers import DynamicCache, StaticCache

from engine.generation.base import SamplingParams

CacheKind = Literal["dynamic", "static"]
FinishedRows = Literal["compact", "mask"]
_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


@dataclass(kw_only=True)
class Row:
    """One sample being decoded. Mutable working state of the loop, not a value."""

    prompt_index: int
    sample_index: int
    prompt: list[int]
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    first_token_s: float | None = None


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """A stable 63-bit seed for one (prompt, sample) of a seeded call."""
    return (seed * _MIX[0] + (prompt_index + 1) * _MIX[1] + (sample_index + 1) * _MIX[2]) % (1 << 63)


def make_rows(prompts: Sequence[list[int]], n: int, params: SamplingParams, device: torch.device) -> list[Row]:
    """Rows in (prompt, sample) order; greedy rows need no generator."""
    base = params.seed if params.seed is not None else int(torch.randint(0, 1 << 62, ()).item())
    rows = []
    for i, prompt in enumerate(prompts):
        for j in range(n):
            gen = None
            if not params.greedy:
                gen = torch.Generator(device=device)
                gen.manual_seed(row_seed(base, i, j))
            rows.append(Row(prompt_index=i, sample_index=j, prompt=prompt, generator=gen))
    return rows


def candidates(logits: torch.Tensor, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The tokens a row may sample and their probabilities, after temperature, top-k and top-p.

    logits: (B, V) float. Returns probs (B, K) with removed candidates at 0 and ids (B, K) mapping candidate
    columns to token ids (None when K = V in vocabulary order). With top-k the work shrinks to K columns.
    """
    scaled = logits / params.temperature
    ids = None
    if params.top_k != -1 and params.top_k < scaled.shape[-1]:
        scaled, ids = torch.topk(scaled, params.top_k, dim=-1)  # sorted, largest first
    elif params.top_p < 1.0:
        scaled, ids = torch.sort(scaled, dim=-1, descending=True)
    probs = torch.softmax(scaled, dim=-1)
    if params.top_p < 1.0:
        # Drop a candidate when the mass strictly before it already reaches top_p; the top one always stays.
        probs = probs.masked_fill((probs.cumsum(dim=-1) - probs) >= params.top_p, 0.0)
    return probs, ids


def sample_tokens(logits: torch.Tensor, rows: Sequence[Row | None], params: SamplingParams) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids. `None` rows (finished, masked) get a token nobody reads."""
    if params.greedy:
        return logits.argmax(dim=-1)
    probs, ids = candidates(logits, params)
    race = torch.ones_like(probs)
    for b, row in enumerate(rows):
        if row is not None:
            u = torch.rand(probs.shape[-1], generator=row.generator, device=probs.device, dtype=probs.dtype)
            race[b] = -torch.log(u.clamp_min(1e-20))
    choice = (probs / race).argmax(dim=-1)
    return choice if ids is None else ids.gather(-1, choice[:, None])[:, 0]


def left_pad(prompts: Sequence[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, L) left-padded with 0 and the attention mask (B, L) marking real tokens with 1."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[b, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


def prefill(
    model: torch.nn.Module, rows: list[Row], cache: CacheKind, max_new_tokens: int
) -> tuple[torch.Tensor, DynamicCache | StaticCache, torch.Tensor, torch.Tensor]:
    """Run each distinct prompt once and give every row a copy of its prompt's KV cache.

    GRPO sends each prompt G times; the G rows of a prompt are adjacent (make_rows order), so the prompt is
    prefilled once and its cache rows repeated. Returns last-position logits (B, V), the cache, the
    attention mask (B, L) and the position of each row's last prompt token (B,).
    """
    device = next(model.parameters()).device
    starts = [b for b, r in enumerate(rows) if b == 0 or r.prompt_index != rows[b - 1].prompt_index]
    owner = torch.tensor([len([s for s in starts if s <= b]) - 1 for b in range(len(rows))], device=device)
    ids, mask = left_pad([rows[b].prompt for b in starts], device)
    width = ids.shape[1]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    shared = DynamicCache(config=model.config)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=shared,
        cache_position=torch.arange(width, device=device),
        use_cache=True,
        logits_to_keep=1,
    )
    shared.batch_select_indices(owner)
    kv: DynamicCache | StaticCache = shared
    if cache == "static":
        kv = StaticCache(config=model.config, max_cache_len=width + max_new_tokens)
        for layer, source in zip(kv.layers, shared.layers, strict=True):
            layer.update(source.keys, source.values)
    elif cache != "dynamic":
        raise ValueError(f"unknown cache kind {cache!r}; valid: ['dynamic', 'static']")
    return out.logits[owner, -1, :], kv, mask[owner], positions[owner, -1]


def select_rows(
    model: torch.nn.Module, kv: DynamicCache | StaticCache, keep: torch.Tensor, max_len: int
) -> DynamicCache | StaticCache:
    """Keep only the batch rows `keep` (B',) of a KV cache."""
    if not isinstance(kv, StaticCache):
        kv.batch_select_indices(keep)
        return kv
    smaller = StaticCache(config=model.config, max_cache_len=max_len)
    for target, source in zip(smaller.layers, kv.layers, strict=True):
        used = int(source.cumulative_length)
        target.update(source.keys[keep, :, :used], source.values[keep, :, :used])
    return smaller


@torch.inference_mode()
def decode_batch(
    model: torch.nn.Module,
    rows: list[Row],
    params: SamplingParams,
    *,
    stop_ids: frozenset[int],
    on_finish: Callable[[Row, str], None],
    should_abort: Callable[[], bool],
    cache: CacheKind = "dynamic",
    finished: FinishedRows = "compact",
) -> None:
    """Decode `rows` together until each stops; call on_finish(row, "stop" | "length" | "abort") per row.

    finished="compact" drops finished rows from the batch (and the KV cache); "mask" keeps computing them
    and ignores their output. A static cache has a fixed batch size, so compacting one copies the live rows
    into a smaller static cache; a dynamic cache copies itself every step anyway (torch.cat).
    """
    device = next(model.parameters()).device
    logits, kv, mask, last_pos = prefill(model, rows, cache, params.max_new_tokens)
    width = mask.shape[1]
    live: list[Row | None] = list(rows)
    for step in range(params.max_new_tokens):
        logits = logits.float()
        tokens = sample_tokens(logits, live, params)
        chosen = logits.gather(-1, tokens[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)
        done = _record_step(live, tokens.tolist(), chosen.tolist(), stop_ids, params.max_new_tokens, on_finish)
        if all(r is None for r in live):
            return
        if should_abort():
            for row in live:
                if row is not None:
                    on_finish(row, "abort")
            return
        if done and finished == "compact":
            keep = [b for b, r in enumerate(live) if r is not None]
            kv = select_rows(model, kv, torch.tensor(keep, device=device), width + params.max_new_tokens)
            live, tokens, mask, last_pos = [live[b] for b in keep], tokens[keep], mask[keep], last_pos[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        last_pos = last_pos + 1
        out = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=last_pos[:, None],
            past_key_values=kv,
            cache_position=torch.tensor([width + step], device=device),
            use_cache=True,
        )
        logits = out.logits[:, -1, :]


def _record_step(
    live: list[Row | None],
    tokens: list[int],
    logprobs: list[float],
    stop_ids: frozenset[int],
    max_new_tokens: int,
    on_finish: Callable[[Row, str], None],
) -> bool:
    """Append one token per live row; finish and blank out rows that stopped. Returns whether any did."""
    now = time.monotonic()
    any_done = False
    for b, row in enumerate(live):
        if row is None:
            continue
        row.tokens.append(tokens[b])
        row.logprobs.append(logprobs[b])
        if row.first_token_s is None:
            row.first_token_s = now
        reason = "stop" if tokens[b] in stop_ids else "length" if len(row.tokens) >= max_new_tokens else None
        if reason is not None:
            on_finish(row, reason)
            live[b] = None
            any_done = True
    return any_done
