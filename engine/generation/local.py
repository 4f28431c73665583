"""The `local` generation backend: the embedded default, decoding with a transformers model in-process.

Decoding runs on one dedicated worker thread (torch releases the GIL inside its kernels), so the event
loop keeps running verification tasks while a batch decodes; each sample is handed to the event loop the
moment it stops. Weight updates run on the same thread, so they land between generate calls, never in
the middle of one: every sample of a call carries the one weight version it was decoded with.

    backend = LocalBackend(model, LocalConfig(max_batch_size=32))
    async with backend:
        async for c in backend.generate(prompt_ids, SamplingParams(temperature=1.0, seed=0), n=8): ...
        await backend.update_weights(learner_model.state_dict())   # in-place copy, version + 1

Measured choices (bench/generation_bench.py, numbers in engine/generation/README.md): see LocalConfig.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.generation import packed_linear
from engine.generation.base import (
    Completion,
    GenerationError,
    SamplingParams,
    Timings,
    WeightSource,
    check_prompts,
)
from engine.generation.decoding import CACHE_KINDS, CacheKind, FinishedRows, Row, decode_batch, make_rows


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


class LocalBackend:
    """Batched decoding of a transformers causal LM on a worker thread. See the module docstring."""

    name = "local"

    def __init__(self, model: torch.nn.Module, config: LocalConfig | None = None) -> None:
        self.model = model.eval()
        self.config = config or LocalConfig()
        self._version = 0
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(1, thread_name_prefix="evom-local-decode")
        self._aborts: set[threading.Event] = set()
        self._eos = frozenset(_eos_ids(model)) if self.config.stop_at_eos else frozenset()
        prepack = self.config.prepack_weights and packed_linear.available()
        self._packed = packed_linear.PackedLinears() if prepack else None

    @property
    def weight_version(self) -> int:
        return self._version

    async def __aenter__(self) -> LocalBackend:
        self._require_open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.abort()
        executor, self._executor = self._executor, None
        if executor is not None:
            # Waiting on the thread off-loop: an in-flight call sees the abort flag within one decode step.
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)
        if self._packed is not None:
            self._packed.clear()

    async def abort(self) -> None:
        for flag in list(self._aborts):
            flag.set()

    async def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, *, n: int = 1
    ) -> AsyncIterator[Completion]:
        executor = self._require_open()
        token_prompts = check_prompts(prompts, n)
        total = len(token_prompts) * n
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Completion | BaseException | None] = asyncio.Queue()
        abort_flag = threading.Event()
        self._aborts.add(abort_flag)
        submitted = time.monotonic()

        def put(item: Completion | BaseException | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        job = loop.run_in_executor(executor, self._run, token_prompts, n, params, submitted, abort_flag, put)
        received = 0
        try:
            while received < total:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise GenerationError(f"local decoding failed: {item!r}") from item
                if item is None:
                    break
                received += 1
                yield item
            await job
        finally:
            abort_flag.set()
            self._aborts.discard(abort_flag)
            if not job.done():
                # Let the thread notice the abort so the next call starts on a quiet thread.
                await asyncio.shield(job)

    def _run(
        self,
        prompts: list[list[int]],
        n: int,
        params: SamplingParams,
        submitted: float,
        abort_flag: threading.Event,
        put: Any,
    ) -> None:
        """Worker-thread body of one generate call: decode every batch, hand each finished row over."""
        # torch's thread count is not private to this thread (OpenMP's default count and torch's are process
        # wide): set it for the call and put it back after, so the learner does not train on the decode's count.
        previous = torch.get_num_threads()
        if self.config.torch_threads:
            torch.set_num_threads(self.config.torch_threads)
        stop_ids = frozenset(params.stop_token_ids) | self._eos
        version = self._version
        device = next(self.model.parameters()).device

        def on_finish(row: Row, reason: str) -> None:
            put(_completion(row, reason, version, submitted))

        packing: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        try:
            if self._packed is not None and device.type == "cpu":
                self._packed.refresh(self.model)  # repacks only the weights written since the last call
                packing = self._packed.active(self.model)
            rows = make_rows(prompts, n, params, device)
            size = self.config.max_batch_size
            with packing:
                for start in range(0, len(rows), size):
                    chunk = rows[start : start + size]
                    if abort_flag.is_set():
                        for row in chunk:
                            on_finish(row, "abort")
                        continue
                    decode_batch(
                        self.model,
                        chunk,
                        params,
                        stop_ids=stop_ids,
                        on_finish=on_finish,
                        should_abort=abort_flag.is_set,
                        cache=self.config.cache,
                        finished=self.config.finished_rows,
                    )
        except BaseException as exc:  # handed to the event loop, which raises it in the caller
            put(exc)
        finally:
            if self.config.torch_threads:
                torch.set_num_threads(previous)
            put(None)

    async def update_weights(self, source: WeightSource, *, version: int | None = None) -> int:
        """Copy new weights into the model in place (a state dict, or a directory of *.safetensors)."""
        executor = self._require_open()
        new_version = self._version + 1 if version is None else int(version)
        await asyncio.get_running_loop().run_in_executor(executor, self._load, source, new_version)
        return new_version

    def _load(self, source: WeightSource, version: int) -> None:
        """Worker-thread body of update_weights. The version moves here, on the decode thread, so a generate
        call queued right behind the update already reports the new version."""
        state = source if isinstance(source, Mapping) else _read_safetensors_dir(Path(source))
        # keep_vars: the live Parameters, tied names (lm_head / embed_tokens) included, so copy_ lands in place.
        params = self.model.state_dict(keep_vars=True)
        unknown = sorted(set(state) - set(params))
        if unknown:
            raise GenerationError(
                f"update_weights: {len(unknown)} name(s) not in the generation model, e.g. {unknown[:3]}; "
                "export the learner's state dict with the same module names (unwrap FSDP/compile prefixes)"
            )
        with torch.no_grad():
            for name, tensor in state.items():
                params[name].copy_(tensor.to(device=params[name].device, dtype=params[name].dtype))
        self._version = version

    def _require_open(self) -> ThreadPoolExecutor:
        if self._executor is None:
            raise GenerationError("the local backend is closed; create a new one")
        return self._executor


def _completion(row: Row, reason: str, version: int, submitted: float) -> Completion:
    return Completion(
        prompt_index=row.prompt_index,
        sample_index=row.sample_index,
        token_ids=tuple(row.tokens),
        logprobs=tuple(row.logprobs),
        finish_reason=reason,  # type: ignore[arg-type]
        weight_version=version,
        timings=Timings(submitted_s=submitted, first_token_s=row.first_token_s, finished_s=time.monotonic()),
    )


def _eos_ids(model: torch.nn.Module) -> list[int]:
    config = getattr(model, "generation_config", None) or model.config
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, list | tuple) else [eos])]


def _read_safetensors_dir(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise GenerationError(f"update_weights: no *.safetensors under {path}; export the learner's weights there")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state
