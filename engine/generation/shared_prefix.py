"""Decode attention over a prompt's KV cache stored once for all of its samples (GRPO's G rows of one prompt).

A GRPO call decodes G samples of each prompt. Repeating the prompt's KV cache G times (what
`model.generate` and the `dynamic`/`static` caches do) costs G copies of memory, and every decode step
reads all G copies. Here each prompt's keys and values stay in one tensor per layer, and each row keeps
only its own response positions. A decode step scores a row's query against its prompt's keys and its own
response keys, takes one softmax over both, and sums the two value products: the same attention as over
the concatenated sequence, reading the prompt once per prompt instead of once per row.

The attention is a transformers attention function (`ATTENTION`), switched on for the decode steps only
(`decoding_attention`); the prefill runs the model's own attention. Rows are laid out by prompt in a padded
(prompts x widest group) grid for the prompt part, so one matmul covers every prompt however many of its rows
are still live.

Shapes: B rows, P prompts, W = most live rows of one prompt, K key/value heads, R = query heads per key head,
Lp = longest prompt (prompts left-padded), S = response positions so far, D = head size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import AttentionInterface

ATTENTION = "evom_shared_prefix"
# Decoder families whose attention is plain scaled dot-product attention over full causal context, called
# through the attention interface with `module.layer_idx` set. Others (sliding windows, soft-capping, sinks)
# decode with the repeated cache instead.
SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


@dataclass(frozen=True, kw_only=True)
class SharedPrefix:
    """The prompts' KV cache and where each row's prompt lives in it. Replaced (not mutated) when rows drop."""

    keys: tuple[torch.Tensor, ...]  # per layer (P, K, Lp, D)
    values: tuple[torch.Tensor, ...]  # per layer (P, K, Lp, D)
    prompt_mask: torch.Tensor  # (P, Lp) 1 on real prompt tokens, 0 on left padding
    bias: torch.Tensor  # (B, 1, 1, Lp) float32: 0 on the row's prompt tokens, -inf on its prompt's left padding
    prompt: torch.Tensor  # (B,) row -> prompt index
    slot: torch.Tensor  # (B,) row -> position among its prompt's live rows
    width: int  # W
    dense: bool  # every prompt has W live rows, in prompt order: the grid is a reshape of the rows

    def to_grid(self, x: torch.Tensor) -> torch.Tensor:
        """Rows (B, K, R, N) -> (P, K, W * R, N), zeros where a prompt has fewer than W live rows."""
        _, kv_heads, per_kv, n = x.shape
        prompts = len(self.prompt_mask)
        if self.dense:
            return x.view(prompts, self.width, kv_heads, per_kv, n).transpose(1, 2).reshape(prompts, kv_heads, -1, n)
        grid = x.new_zeros((prompts, kv_heads, self.width, per_kv, n))
        grid[self.prompt, :, self.slot] = x
        return grid.view(prompts, kv_heads, self.width * per_kv, n)

    def from_grid(self, x: torch.Tensor, per_kv: int) -> torch.Tensor:
        """(P, K, W * R, N) -> rows (B, K, R, N)."""
        prompts, kv_heads, _, n = x.shape
        grid = x.view(prompts, kv_heads, self.width, per_kv, n)
        if self.dense:
            return grid.transpose(1, 2).reshape(-1, kv_heads, per_kv, n)
        return grid[self.prompt, :, self.slot]

    @classmethod
    def build(
        cls,
        keys: Sequence[torch.Tensor],
        values: Sequence[torch.Tensor],
        prompt_mask: torch.Tensor,
        owner: Sequence[int],
    ) -> SharedPrefix:
        """keys/values per layer (P, K, Lp, D); prompt_mask (P, Lp) 1 on real tokens; owner: row -> prompt."""
        if not owner:
            raise ValueError("SharedPrefix needs at least one row")
        slot, seen = [], {}
        for p in owner:
            slot.append(seen.get(p, 0))
            seen[p] = slot[-1] + 1
        device = prompt_mask.device
        width = max(seen.values())
        prompt = torch.tensor(list(owner), device=device)
        padding = torch.zeros(prompt_mask.shape, dtype=torch.float32, device=device)
        padding.masked_fill_(prompt_mask == 0, float("-inf"))
        return cls(
            keys=tuple(keys),
            values=tuple(values),
            prompt_mask=prompt_mask,
            bias=padding[prompt][:, None, None, :],
            prompt=prompt,
            slot=torch.tensor(slot, device=device),
            width=width,
            dense=list(owner) == [p for p in range(len(prompt_mask)) for _ in range(width)],
        )

    def select(self, keep: Sequence[int]) -> SharedPrefix:
        """The rows `keep` (in order). Prompts left without rows leave the cache (which copies the rest once)."""
        owner = self.prompt.tolist()
        kept = [owner[b] for b in keep]
        prompts = sorted(set(kept))
        if prompts == list(range(len(self.prompt_mask))):
            return SharedPrefix.build(self.keys, self.values, self.prompt_mask, kept)
        index = torch.tensor(prompts, device=self.prompt.device)
        renumber = {p: i for i, p in enumerate(prompts)}
        return SharedPrefix.build(
            [k[index] for k in self.keys],
            [v[index] for v in self.values],
            self.prompt_mask[index],
            [renumber[p] for p in kept],
        )


def shared_prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    shared_prefix: SharedPrefix | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """Attention of query (B, H, 1, D) over the row's prompt (shared) and its response keys key/value (B, K, S, D).

    Returns (B, 1, H, D), as transformers' attention functions do. Query head h reads key head h // R.
    """
    if shared_prefix is None:
        raise RuntimeError(f"the {ATTENTION!r} attention needs shared_prefix=SharedPrefix (decode steps only)")
    rows, heads, q_len, dim = query.shape
    if q_len != 1:
        raise RuntimeError(f"the {ATTENTION!r} attention decodes one token per row, got {q_len}")
    kv_heads = key.shape[1]
    per_kv = heads // kv_heads
    sp = shared_prefix
    prefix_keys, prefix_values = sp.keys[module.layer_idx], sp.values[module.layer_idx]
    prompt_len = prefix_keys.shape[2]
    q = query.reshape(rows, kv_heads, per_kv, dim)

    # Prompt part: queries into the (P, K, W * R) grid, one matmul per prompt and key head, then back to rows.
    prefix_scores = sp.from_grid(torch.matmul(sp.to_grid(q), prefix_keys.transpose(-1, -2)), per_kv)
    response_scores = torch.matmul(q, key.transpose(-1, -2))  # (B, K, R, S)
    scores = torch.cat([prefix_scores, response_scores], dim=-1).float().mul_(scaling)
    scores[..., :prompt_len] += sp.bias
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = sp.from_grid(torch.matmul(sp.to_grid(probs[..., :prompt_len]), prefix_values), per_kv)
    out = out + torch.matmul(probs[..., prompt_len:], value)  # (B, K, R, D)
    return out.reshape(rows, 1, heads, dim), None


AttentionInterface.register(ATTENTION, shared_prefix_attention)


def supports_shared_prefix(model: torch.nn.Module) -> bool:
    """Whether `model`'s attention is one this module reproduces (see SUPPORTED_MODEL_TYPES)."""
    config = model.config
    if getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return False
    if config._attn_implementation not in ("sdpa", "eager"):
        return False
    layer_types = getattr(config, "layer_types", None) or ()
    if any(t != "full_attention" for t in layer_types):
        return False
    window = getattr(config, "sliding_window", None)
    return window is None or getattr(config, "use_sliding_window", True) is False


@contextlib.contextmanager
def decoding_attention(model: torch.nn.Module) -> Iterator[None]:
    """Route `model`'s attention through ATTENTION inside the block; restore its own attention after."""
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = previous
