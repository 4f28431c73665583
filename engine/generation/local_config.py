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
    # "dynamic"). "dynamic" gives every row its own copy of the prompt's cache in such a buffer; "static" (a
    # transformers StaticCache) attends over all of prompt + max_new_tokens every step. On SmolLM2, 2 prompts x 4
    # samples, attention per layer per step took 0.85 ms shared vs 1.35 ms dynamic (engine/generation/README.md).
    cache: CacheKind = "shared"
    # "compact" drops finished rows from the batch and KV cache; "mask" keeps computing them. Compact
    # measured 1.3-1.4x faster than mask on CPU when lengths vary (engine/generation/README.md).
    finished_rows: FinishedRows = "compact"
    # Stop on the model's EOS id(s) from its generation config, as SGLang and vLLM do by default.
    stop_at_eos: bool = True
    # torch intra-op threads for the decode thread; 0 leaves torch's setting alone (all cores). When the sandbox
    # verifies on the same cores while this decodes (the rollout overlaps them), leave it cores - workers:
    # with 2 threads on 2 cores and one busy sandbox worker, generation ran 2.6x slower (0.34 s -> 0.88 s) as
    # each kernel waited for the preempted thread, and the pipelined step took 1.13x the synchronous one
    # (0.68x with 1 thread; bench/rollout_bench.py --torch-threads 2).
    torch_threads: int = 0
    # On CPU, run the linear layers on weights reordered once into oneDNN's blocked layout (packed_linear.py),
    # repacked whenever a weight changes. SmolLM2-135M, 2 prompts x 4 samples, 1 thread: 1.33-1.39x the tokens/s
    # of the plain kernels, for a second copy of the linear weights in memory and ~0.3 s of packing per update.
    prepack_weights: bool = True

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"LocalConfig.max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.cache not in CACHE_KINDS:
            raise ValueError(f"LocalConfig.cache must be one of {list(CACHE_KINDS)}, got {self.cache!r}")
        if self.finished_rows not in ("compact", "mask"):
            raise ValueError(
                f"LocalConfig.finished_rows must be one of ['compact', 'mask'], got {self.finished_rows!r}"
            )
