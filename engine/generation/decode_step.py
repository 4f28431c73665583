"""One decode step of a Llama-family model computed from its weights, without transformers' module machinery.

A decode step feeds one token per row through the model. On CPU with a small model most of the step is not
arithmetic but the framework around it: each module call, the causal-mask builder, the output dataclasses,
the cache bookkeeping. `DecodeStep` does the same arithmetic in one flat function per step: the model's own
linear layers (whatever serves them, prepacked oneDNN weights included: packed_linear.py), its rotary module,
RMSNorm as transformers writes it, the KV cache in `GrowingLayer` buffers, and attention through
`shared_prefix_attention` (shared cache) or scaled dot-product attention over the row's padded prompt and
responses (dynamic cache). It gives the same logits as the model's forward up to float rounding; tests check
that token for token against the model's own forward (tests/engine/test_generation_decode_step.py).

Only models it reproduces take it (`DecodeStep.build` returns None otherwise, and the caller runs the model's
forward): the model types in SUPPORTED_MODEL_TYPES with full causal attention, plain `nn.Linear` projections,
RMSNorm, no module hooks (a hook would be skipped here), no sliding windows. The prefill always runs the
model's forward.

Shapes: B rows, H query heads, K key/value heads, D head size, E hidden size, S cached positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from engine.generation.shared_prefix import SharedPrefix, shared_prefix_attention, supports_shared_prefix

# The decoder families whose layers are exactly: RMSNorm, q/k/v projections (Qwen3: RMSNorm per head on q and
# k), rotary embedding, attention, o projection, residual, RMSNorm, gated MLP, residual; final RMSNorm, lm_head.
SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


@dataclass(frozen=True)
class _Norm:
    weight: torch.Tensor
    eps: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """transformers' RMSNorm: the mean of squares in float32, scaled in the input's dtype."""
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


@dataclass(frozen=True)
class _Layer:
    attention: torch.nn.Module  # the layer's attention module (layer_idx, scaling)
    input_norm: _Norm
    q: torch.nn.Linear
    k: torch.nn.Linear
    v: torch.nn.Linear
    o: torch.nn.Linear
    q_norm: _Norm | None
    k_norm: _Norm | None
    post_norm: _Norm
    gate: torch.nn.Linear
    up: torch.nn.Linear
    down: torch.nn.Linear
    act: Callable[[torch.Tensor], torch.Tensor]


def _linear(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The module's forward without `nn.Module.__call__`: an instance forward (prepacked weights) when set."""
    return module.forward(x)


class DecodeStep:
    """Logits for one new token per row, reading and extending the decode loop's KV cache (see module docstring)."""

    def __init__(self, model: torch.nn.Module, layers: list[_Layer]) -> None:
        inner = model.model
        self.embed = inner.embed_tokens
        self.rotary = inner.rotary_emb
        self.norm = _Norm(inner.norm.weight, inner.norm.variance_epsilon)
        self.lm_head = model.lm_head
        self.layers = layers
        config = model.config
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    @classmethod
    def build(cls, model: torch.nn.Module) -> DecodeStep | None:
        """The step for `model`, or None when `model` is not one this module reproduces."""
        if getattr(model.config, "model_type", None) not in SUPPORTED_MODEL_TYPES or not supports_shared_prefix(model):
            return None
        if any(_hooked(m) for m in model.modules()) or _global_hooks():
            return None
        inner = getattr(model, "model", None)
        needed = ("embed_tokens", "rotary_emb", "norm", "layers")
        if inner is None or not all(hasattr(inner, name) for name in needed) or not _plain(model.lm_head):
            return None
        if type(inner.embed_tokens) is not torch.nn.Embedding or _norm(inner.norm) is None:
            return None
        layers = []
        for block in inner.layers:
            layer = _layer(block)
            if layer is None:
                return None
            layers.append(layer)
        return cls(model, layers)

    def __call__(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        kv: DynamicCache,
        *,
        shared: SharedPrefix | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tokens (B,) at positions (B,) -> logits (B, V).

        With `shared`, kv holds only the response positions and the prompts come from `shared`. Without it, kv
        holds each row's prompt and responses and mask (B, S) marks the real positions (1) among them, the new
        token's included.
        """
        rows = tokens.shape[0]
        hidden = F.embedding(tokens, self.embed.weight)  # (B, E)
        cos, sin = self.rotary(hidden, positions[:, None])  # (B, 1, D)
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, 1, D) against (B, heads, 1, D)
        blocked = None if mask is None else (mask == 0)[:, None, None, :]
        for layer, cache in zip(self.layers, kv.layers, strict=True):
            x = layer.input_norm(hidden)
            q = _linear(layer.q, x).view(rows, self.heads, 1, self.head_dim)
            k = _linear(layer.k, x).view(rows, self.kv_heads, 1, self.head_dim)
            v = _linear(layer.v, x).view(rows, self.kv_heads, 1, self.head_dim)
            if layer.q_norm is not None and layer.k_norm is not None:
                q, k = layer.q_norm(q), layer.k_norm(k)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            keys, values = cache.update(k, v)  # (B, K, S, D)
            scale = layer.attention.scaling
            if shared is not None:
                out, _ = shared_prefix_attention(layer.attention, q, keys, values, None, scale, shared_prefix=shared)
            else:
                out = _padded_attention(q, keys, values, blocked, scale)
            hidden = hidden + _linear(layer.o, out.reshape(rows, -1))
            x = layer.post_norm(hidden)
            hidden = hidden + _linear(layer.down, layer.act(_linear(layer.gate, x)) * _linear(layer.up, x))
        return _linear(self.lm_head, self.norm(hidden))


def _padded_attention(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, blocked: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """query (B, H, 1, D) over keys/values (B, K, S, D), skipping positions where blocked (B, 1, 1, S) is True.

    Returns (B, K, R, D) with R = H // K: query head h reads key head h // R (grouped-query attention), without
    repeating the keys. Scores and softmax in float32, as transformers' eager attention.
    """
    rows, heads, _, dim = query.shape
    kv_heads = keys.shape[1]
    q = query.reshape(rows, kv_heads, heads // kv_heads, dim)
    scores = torch.matmul(q, keys.transpose(-1, -2)).float().mul_(scale)  # (B, K, R, S)
    if blocked is not None:
        scores.masked_fill_(blocked, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1).to(values.dtype), values)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _layer(block: torch.nn.Module) -> _Layer | None:
    attention, mlp = getattr(block, "self_attn", None), getattr(block, "mlp", None)
    if attention is None or mlp is None or not hasattr(attention, "scaling"):
        return None
    projections = [getattr(attention, n, None) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
    projections += [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
    if not all(_plain(p) for p in projections):
        return None
    input_norm, post_norm = (
        _norm(getattr(block, "input_layernorm", None)),
        _norm(getattr(block, "post_attention_layernorm", None)),
    )
    if input_norm is None or post_norm is None or not callable(getattr(mlp, "act_fn", None)):
        return None
    q_norm, k_norm = _norm(getattr(attention, "q_norm", None)), _norm(getattr(attention, "k_norm", None))
    if (hasattr(attention, "q_norm") or hasattr(attention, "k_norm")) and (q_norm is None or k_norm is None):
        return None  # per-head norms this module does not recognise
    q, k, v, o, gate, up, down = projections
    return _Layer(attention, input_norm, q, k, v, o, q_norm, k_norm, post_norm, gate, up, down, mlp.act_fn)


def _plain(module: object) -> bool:
    """An nn.Linear computing exactly F.linear (no subclass forward); an instance forward set by PackedLinears is
    allowed, since it is installed and removed around the decode and computes the same product."""
    return isinstance(module, torch.nn.Linear) and type(module).forward is torch.nn.Linear.forward


def _norm(module: object) -> _Norm | None:
    """The weight and epsilon of a transformers RMSNorm of the supported families (`LlamaRMSNorm`, `Qwen3RMSNorm`,
    ...: known by class name and attributes, its class forward unreplaced), else None."""
    if module is None or not type(module).__name__.endswith("RMSNorm"):
        return None
    weight, eps = getattr(module, "weight", None), getattr(module, "variance_epsilon", None)
    if not isinstance(weight, torch.Tensor) or not isinstance(eps, float) or "forward" in vars(module):
        return None
    return _Norm(weight, eps)


def _hooked(module: torch.nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _global_hooks() -> bool:
    hooks = torch.nn.modules.module
    return bool(hooks._global_forward_hooks or hooks._global_forward_pre_hooks)
