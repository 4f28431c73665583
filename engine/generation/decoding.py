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

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, StaticCache
from transformers.cache_utils import DynamicLayer

from engine.generation.base import SamplingParams, row_seed
from engine.generation.decode_step import DecodeStep
from engine.generation.local_config import CACHE_KINDS, CacheKind, FinishedRows
from engine.generation.shared_prefix import SharedPrefix, decoding_attention, supports_shared_prefix


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


class GrowingLayer(DynamicLayer):
    """A KV cache layer that grows in place: one buffer of `capacity` positions per layer, written step by step.

    transformers' DynamicLayer concatenates the whole cache with the new token every step, a full copy of the
    KV cache per layer per step (for a 135M model with 16 rows of ~450 tokens, ~0.5 GB of copying per step).
    This layer writes the new positions into a preallocated buffer and hands attention a view of the used
    prefix, so attention still covers only the positions filled so far (a StaticCache attends over all of
    its capacity). Dropping rows (`batch_select_indices`) copies only the used positions of the kept rows.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0
        self._keys = self._values = torch.empty(0)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object):
        if not self.is_initialized:
            self.dtype, self.device = key_states.dtype, key_states.device
            self._keys = key_states.new_empty((*key_states.shape[:2], self.capacity, key_states.shape[3]))
            self._values = value_states.new_empty((*value_states.shape[:2], self.capacity, value_states.shape[3]))
            self.is_initialized = True
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise ValueError(f"GrowingLayer holds {self.capacity} positions; {end} requested")
        self._keys[:, :, self.length : end].copy_(key_states)
        self._values[:, :, self.length : end].copy_(value_states)
        self.length = end
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if not self.is_initialized:
            return
        for name in ("_keys", "_values"):
            old = getattr(self, name)
            new = old.new_empty((len(indices), *old.shape[1:]))
            new[:, :, : self.length].copy_(old[indices, :, : self.length])
            setattr(self, name, new)
        self.keys, self.values = self._keys[:, :, : self.length], self._values[:, :, : self.length]


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


class Workspace:
    """Reusable (B, V)-sized float buffers for sampling, so a decode step allocates no fresh vocabulary-wide
    tensors: on CPU each fresh multi-MB tensor costs page faults every step (bench/NOTES.md, "Local generation")."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, like: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """A contiguous (rows, cols) tensor with like's dtype and device; its contents are garbage."""
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < rows * cols or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._buffers[name] = like.new_empty(rows * cols)
        return buf[: rows * cols].view(rows, cols)


def sample_tokens(
    logits: torch.Tensor, rows: Sequence[Row | None], params: SamplingParams, workspace: Workspace | None = None
) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids. `None` rows (finished, masked) get a token nobody reads.

    Without top-k/top-p the race runs on unnormalised weights exp(logits / T - max): dividing a row by its sum
    would not move its argmax, and skipping it saves a pass over the vocabulary.
    """
    if params.greedy:
        return logits.argmax(dim=-1)
    ws = workspace or Workspace()
    batch, vocab = logits.shape
    ids = None
    if (params.top_k == -1 or params.top_k >= vocab) and params.top_p >= 1.0:
        weights = torch.div(logits, params.temperature, out=ws.take("weights", logits, batch, vocab))
        weights.sub_(weights.amax(dim=-1, keepdim=True)).exp_()
    else:
        weights, ids = candidates(logits, params)
    race = ws.take("race", weights, *weights.shape)
    for b, row in enumerate(rows):
        if row is None:
            race[b].fill_(1.0)
        else:
            torch.rand(weights.shape[-1], generator=row.generator, out=race[b])
    choice = weights.div_(race.clamp_min_(1e-20).log_().neg_()).argmax(dim=-1)
    return choice if ids is None else ids.gather(-1, choice[:, None])[:, 0]


def token_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, params: SamplingParams, workspace: Workspace | None = None
) -> torch.Tensor:
    """(B, V) logits, (B,) chosen ids -> (B,) log-probs of the chosen tokens under log_softmax(logits / T).

    The rule every backend follows (SGLang's default `output_token_logprobs`): T is the sampling temperature,
    1 for greedy decoding, and there is no top-k/top-p truncation, so a learner that divides its logits by the
    same T (`algorithm.temperature`) recomputes these values.
    """
    scaled = logits
    if not params.greedy and params.temperature != 1.0:
        ws = workspace or Workspace()
        scaled = torch.div(logits, params.temperature, out=ws.take("logprobs", logits, *logits.shape))
    return scaled.gather(-1, tokens[:, None])[:, 0] - torch.logsumexp(scaled, dim=-1)


def left_pad(prompts: Sequence[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, L) left-padded with 0 and the attention mask (B, L) marking real tokens with 1."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[b, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


@dataclass(kw_only=True)
class Prefilled:
    """What the prefill hands the decode loop. For the shared cache, `kv` holds only the response positions and
    `shared` the prompts; for the others `kv` holds each row's copy of its prompt and `mask` its padding."""

    logits: torch.Tensor  # (B, V) at each row's last prompt token
    kv: DynamicCache | StaticCache
    mask: torch.Tensor  # (B, L) 1 on real prompt tokens
    last_pos: torch.Tensor  # (B,) position of each row's last prompt token
    shared: SharedPrefix | None = None


def prefill(model: torch.nn.Module, rows: list[Row], cache: CacheKind, max_new_tokens: int) -> Prefilled:
    """Run each distinct prompt once; the shared cache keeps that one copy, the others give every row its own.

    GRPO sends each prompt G times; the G rows of a prompt are adjacent (make_rows order), so the prompt is
    prefilled once for all of them.
    """
    if cache not in CACHE_KINDS:
        raise ValueError(f"unknown cache kind {cache!r}; valid: {list(CACHE_KINDS)}")
    device = next(model.parameters()).device
    starts = [b for b, r in enumerate(rows) if b == 0 or r.prompt_index != rows[b - 1].prompt_index]
    owner_list = [len([s for s in starts if s <= b]) - 1 for b in range(len(rows))]
    owner = torch.tensor(owner_list, device=device)
    ids, mask = left_pad([rows[b].prompt for b in starts], device)
    width = ids.shape[1]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    prompts = DynamicCache(config=model.config)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=prompts,
        cache_position=torch.arange(width, device=device),
        use_cache=True,
        logits_to_keep=1,
    )
    logits, last_pos = out.logits[owner, -1, :], positions[owner, -1]
    if cache == "shared":
        kv = DynamicCache(config=model.config)
        kv.layers = [GrowingLayer(max_new_tokens) for _ in prompts.layers]
        shared = SharedPrefix.build(
            [layer.keys for layer in prompts.layers], [layer.values for layer in prompts.layers], mask, owner_list
        )
        return Prefilled(logits=logits, kv=kv, mask=mask[owner], last_pos=last_pos, shared=shared)
    if cache == "static":
        kv = StaticCache(config=model.config, max_cache_len=width + max_new_tokens)
    else:
        kv = DynamicCache(config=model.config)
        kv.layers = [GrowingLayer(width + max_new_tokens) for _ in prompts.layers]
    for layer, source in zip(kv.layers, prompts.layers, strict=True):
        layer.update(source.keys[owner], source.values[owner])
    return Prefilled(logits=logits, kv=kv, mask=mask[owner], last_pos=last_pos)


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
    fast_step: bool = True,
) -> None:
    """Decode `rows` together until each stops; call on_finish(row, "stop" | "length" | "abort") per row.

    finished="compact" drops finished rows from the batch (and the KV cache); "mask" keeps computing them
    and ignores their output. A static cache has a fixed batch size, so compacting one copies the live rows
    into a smaller static cache; the dynamic cache (GrowingLayer) copies the used positions of the kept rows.
    fast_step=True runs the decode steps through `DecodeStep` (decode_step.py) when it reproduces the model and the
    cache is shared or dynamic; otherwise, and for the prefill, the model's own forward.
    """
    device = next(model.parameters()).device
    if cache == "shared" and not supports_shared_prefix(model):
        cache = "dynamic"
    step_fn = DecodeStep.build(model) if fast_step and cache != "static" else None
    state = prefill(model, rows, cache, params.max_new_tokens)
    logits, kv, mask, last_pos, shared = state.logits, state.kv, state.mask, state.last_pos, state.shared
    width = mask.shape[1]
    live: list[Row | None] = list(rows)
    workspace = Workspace()
    attention = decoding_attention(model) if shared is not None else contextlib.nullcontext()
    with attention:
        for step in range(params.max_new_tokens):
            logits = logits.float()
            tokens = sample_tokens(logits, live, params, workspace)
            chosen = token_logprobs(logits, tokens, params, workspace)
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
                shared = shared.select(keep) if shared is not None else None
                live, tokens, mask, last_pos = [live[b] for b in keep], tokens[keep], mask[keep], last_pos[keep]
            last_pos = last_pos + 1
            if step_fn is not None:
                if shared is None:
                    mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
                logits = step_fn(tokens, last_pos, kv, shared=shared, mask=None if shared is not None else mask)
                continue
            if shared is not None:  # the attention reads the prompts from `shared`; kv holds responses only
                extra, attention_mask, position = {"shared_prefix": shared}, None, step
            else:
                mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
                extra, attention_mask, position = {}, mask, width + step
            out = model(
                input_ids=tokens[:, None],
                attention_mask=attention_mask,
                position_ids=last_pos[:, None],
                past_key_values=kv,
                cache_position=torch.tensor([position], device=device),
                use_cache=True,
                **extra,
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
