"""The `local` generation backend: the embedded default, decoding with a transformers model in-process.

Decoding runs on one worker thread (torch releases the GIL inside its kernels), so the event loop keeps
running verification tasks while a batch decodes; each sample is handed to the event loop the moment it stops.
On the CPU that thread is the process's compute thread (engine/compute.py), shared with the learner, so OpenMP
keeps one team of workers; on a GPU it is the backend's own. Weight updates run on the same thread, so they land
between generate calls, never in the middle of one: every sample of a call carries the one weight version it was
decoded with.

    backend = LocalBackend(model, LocalConfig(max_batch_size=32))
    async with backend:
        async for c in backend.generate(prompt_ids, SamplingParams(temperature=1.0, seed=0), n=8): ...
        await backend.update_weights(learner_model.state_dict())   # in-place copy, version + 1

Each token's log-prob is log_softmax(logits / T) at the sampling temperature T (1 when greedy), before any
top-k/top-p truncation: the rule of every backend (`decoding.token_logprobs`), which the learner recomputes.

Options and the reasons for their defaults: LocalConfig (the measurements: bench/NOTES.md, "Local generation").
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import torch

from engine.compute import compute_executor, is_cpu, submit_compute
from engine.generation import packed_linear
from engine.generation.base import (
    Completion,
    GenerationError,
    SamplingParams,
    Timings,
    WeightFormat,
    WeightSource,
    check_prompts,
)
from engine.generation.decoding import Row, decode_batch, make_rows
from engine.generation.local_config import LocalConfig


class LocalBackend:
    """Batched decoding of a transformers causal LM on a worker thread. See the module docstring."""

    name: ClassVar[str] = "local"
    config_class: ClassVar[type] = LocalConfig
    weight_format: ClassVar[WeightFormat | None] = "state_dict"
    needs_model: ClassVar[bool] = True

    def __init__(self, model: torch.nn.Module, config: LocalConfig | None = None) -> None:
        self.model = model.eval()
        self.config = config or LocalConfig()
        self._version = 0
        device = next(self.model.parameters()).device
        self._own_thread = not is_cpu(device)
        self._executor: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(1, thread_name_prefix="evom-local-decode") if self._own_thread else compute_executor()
        )
        self._jobs: set[asyncio.Future[Any]] = set()  # this backend's calls queued or running on the thread
        self._aborts: set[threading.Event] = set()
        self._eos = frozenset(_eos_ids(model)) if self.config.stop_at_eos else frozenset()
        prepack = self.config.prepack_weights and packed_linear.available()
        self._packed = packed_linear.PackedLinears() if prepack else None
        # Seconds of the last update_weights on the decode thread: copying into the model, repacking its linears.
        self.last_sync_s: dict[str, float] = {"copy": 0.0, "repack": 0.0}

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
        # An in-flight call sees the abort flag within one decode step.
        await asyncio.gather(*self._jobs, return_exceptions=True)
        if executor is not None and self._own_thread:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)
        if self._packed is not None:
            self._packed.clear()

    async def abort(self) -> None:
        for flag in list(self._aborts):
            flag.set()

    async def health(self) -> dict[str, bool]:
        """No server: the in-process model is healthy while the backend is open."""
        return {"in-process": self._executor is not None}

    def explain_down(self, down: Sequence[str]) -> str:
        return "the local backend is closed; create a new one"

    async def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, *, n: int = 1
    ) -> AsyncIterator[Completion]:
        self._require_open()
        token_prompts = check_prompts(prompts, n)
        total = len(token_prompts) * n
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Completion | BaseException | None] = asyncio.Queue()
        abort_flag = threading.Event()
        self._aborts.add(abort_flag)
        submitted = time.monotonic()

        def put(item: Completion | BaseException | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        job = self._submit(self._run, token_prompts, n, params, submitted, abort_flag, put)
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
        stop_ids = frozenset() if params.ignore_eos else frozenset(params.stop_token_ids) | self._eos
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
                        fast_step=self.config.fast_decode,
                    )
        except BaseException as exc:  # handed to the event loop, which raises it in the caller
            put(exc)
        finally:
            if self.config.torch_threads:
                torch.set_num_threads(previous)
            put(None)

    async def update_weights(self, source: WeightSource, *, version: int | None = None) -> int:
        """Copy new weights into the model in place (a state dict, or a directory of *.safetensors)."""
        self._require_open()
        new_version = self._version + 1 if version is None else int(version)
        await self._submit(self._load, source, new_version)
        return new_version

    def _submit(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        """`fn(*args)` on the decode thread (the compute thread on the CPU), tracked until it is done."""
        if self._own_thread:
            job = asyncio.get_running_loop().run_in_executor(self._require_open(), fn, *args)
        else:
            job = submit_compute(fn, *args)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        return job

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
        started = time.perf_counter()
        with torch.no_grad():
            for param, tensor in _writes(state, params):
                param.copy_(tensor.to(device=param.device, dtype=param.dtype))
        copied = time.perf_counter()
        if self._packed is not None and next(self.model.parameters()).device.type == "cpu":
            # Repacked here, not at the next generate call, so a sync's cost is the sync's (and its timings).
            self._packed.refresh(self.model)
        self.last_sync_s = {"copy": copied - started, "repack": time.perf_counter() - copied}
        self._version = version

    def _require_open(self) -> ThreadPoolExecutor:
        if self._executor is None:
            raise GenerationError("the local backend is closed; create a new one")
        return self._executor


def _writes(
    state: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(destination, source) pairs that load `state` into `params`: a tied parameter (lm_head and embed_tokens)
    listed under each of its names with the same source tensor is written once, not once per name."""
    writes: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
    for name, tensor in state.items():
        param = params[name]
        same_source = (id(param), tensor.data_ptr() if tensor.numel() else id(tensor))
        writes[same_source] = (param, tensor)
    return list(writes.values())


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
