"""Options of the `local` backend, apart from the backend so that reading a config never imports torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

CacheKind = Literal["shared", "dynamic", "static"]
CACHE_KINDS: tuple[str, ...] = get_args(CacheKind)
FinishedRows = Literal["compact", "mask"]


@dataclass(frozen=True, kw_only=True)
class LocalConfig:
    """Options of the local backend (the `generation.local` config section)."""

    # Rows (prompt x sample) decoded together; larger calls are split into consecutive batches.
    max_batch_size: int = 64
    # "shared" keeps each prompt's KV cache once for all of its samples and each row's response positions in a
    # buffer filled in place (engine/generation/shared_prefix.py; models it cannot reproduce fall back to
    # "dynamic"), so a decode step reads each prompt once instead of once per sample. "dynamic" gives every row
    # its own copy of the prompt's cache in such a buffer; "static" (a transformers StaticCache) attends over all
    # of prompt + max_new_tokens every step, which pays only for short max_new_tokens. Measurements:
    # bench/NOTES.md, "Local generation".
    cache: CacheKind = "shared"
    # "compact" drops finished rows from the batch and KV cache; "mask" keeps computing them, so compact is
    # faster whenever lengths vary (bench/NOTES.md, "Local generation").
    finished_rows: FinishedRows = "compact"
    # Stop on the model's EOS id(s) from its generation config, as SGLang and vLLM do by default.
    stop_at_eos: bool = True
    # torch intra-op threads for the decode thread; 0 leaves torch's setting alone (all cores). When the sandbox
    # verifies on the same cores while this decodes (the rollout overlaps them), leave it cores - workers: a
    # thread that shares its core with a sandbox worker is preempted, and every kernel waits for it, which costs
    # more than the overlap gains (bench/NOTES.md, `torch_threads`; bench/rollout_bench.py --torch-threads N).
    torch_threads: int = 0
    # On CPU, run the linear layers on weights reordered once into oneDNN's blocked layout (packed_linear.py),
    # repacked whenever a weight changes: decoding on CPU is bound by the linear layers, and the packed kernel
    # runs them faster, for a second copy of the linear weights in memory and a repack per weight update
    # (bench/NOTES.md, `prepack_weights`).
    prepack_weights: bool = True
    # Decode steps of Llama-family models (llama, mistral, qwen2, qwen3) through a flat function over the model's
    # weights and modules (decode_step.py) instead of the model's forward: the same logits up to float rounding,
    # without transformers' per-module overhead, which on CPU is a large part of a small model's step. Other
    # models, the static cache and the prefill always run the model's forward (bench/NOTES.md, `fast_decode`).
    fast_decode: bool = True

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"LocalConfig.max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.cache not in CACHE_KINDS:
            raise ValueError(f"LocalConfig.cache must be one of {list(CACHE_KINDS)}, got {self.cache!r}")
        if self.finished_rows not in ("compact", "mask"):
            raise ValueError(
                f"LocalConfig.finished_rows must be one of ['compact', 'mask'], got {self.finished_rows!r}"
            )
