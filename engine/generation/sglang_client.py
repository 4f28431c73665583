"""The `sglang` generation backend: an aiohttp client of SGLang's native HTTP server.

Written against SGLang 0.5.23 (`sglang/srt/entrypoints/http_server.py`, `sglang/srt/managers/io_struct.py`,
`tokenizer_manager.py`, `detokenizer_manager.py` of the 0.5.23 wheel). What this client relies on:

- `POST /generate` with `input_ids`, `sampling_params`, `stream: true`, `return_logprob: true` and our own
  `rid`. The reply is server-sent events `data: {json}` ending with `data: [DONE]`. Each chunk carries
  `output_ids`, `meta_info.output_token_logprobs` ([logprob, token_id, text|null] per token),
  `meta_info.completion_tokens`, `meta_info.weight_version` and `meta_info.finish_reason`: null while
  decoding, then {"type": "stop", "matched": id}, {"type": "length", "length": n} or {"type": "abort",
  "message": ...}. By default the ids and log-probs are cumulative; with `--incremental-streaming-output`
  they are deltas. The client tells them apart by `completion_tokens` (the running total in both modes).
  `output_ids` keep the matched stop token (only `text` is trimmed). An error mid-stream is a chunk
  `{"error": {"message", "code", "retryable"}}`.
- `sampling_params.sampling_seed` (our per-sample seed) is honoured only by servers started with
  `--enable-deterministic-inference`; other servers ignore it, so seeded runs are reproducible only there.
- `POST /abort_request` {"rid"} (or {"abort_all": true}); the aborted stream ends with finish type "abort".
- `GET /health` (200 when up, 503 while starting), `GET /model_info` (`/get_model_info` is deprecated in
  0.5.23).
- Weight sync: `POST /update_weights_from_disk` {"model_path", "weight_version", ...};
  `POST /update_weights_from_tensor` {"serialized_named_tensors": [base64 of a ForkingPickler dump of
  [(name, tensor)], one per TP rank], "weight_version"} -- only for a server on the learner's machine,
  since the pickle carries shared-memory / CUDA-IPC handles; `POST /init_weights_update_group`,
  `/update_weights_from_distributed` {"names", "dtypes", "shapes", "group_name", "weight_version"} and
  `/destroy_weights_update_group` -- the learner must broadcast the tensors in that group concurrently.

Retries: connection errors, timeouts, HTTP 5xx and 429 are retried with exponential backoff on the least
loaded other server, but only while nothing of the sample has streamed. A sample that breaks after its
first chunk is never re-sent behind the caller's back: it is delivered as finish_reason "abort" with its
partial tokens and `error` saying where it broke, so the rollout counts it as a backend failure.

Exercised here only against tests/engine/sglang_server.py (a protocol peer written from the same source);
see the README for what has and has not met a real SGLang server.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike, fspath
from typing import Any, ClassVar

import aiohttp

from engine.generation.base import (
    Completion,
    GenerationError,
    SamplingParams,
    Timings,
    WeightFormat,
    WeightSource,
    check_prompts,
    config_from_options,
    row_seed,
)
from engine.generation.http import (
    JSON_HEADERS,
    SSE_DONE,
    Endpoint,
    FatalHTTPError,
    HTTPBackend,
    HTTPOptions,
    LeastLoadedRouter,
    RetryableHTTPError,
    classify,
    dumps,
    loads,
    raise_for_status,
    sse_events,
)
from engine.generation.sglang_launch import LaunchConfig, LaunchedServers, check_health, launch_servers, wait_healthy

SGLANG_VERSION = "0.5.23"


@dataclass(frozen=True, kw_only=True)
class SGLangConfig(HTTPOptions):
    """Options of the sglang backend (the `generation.sglang` config section)."""

    # Running SGLang servers (or one sglang-router URL); requests go to the least loaded. Unset: the
    # launched servers if `launch` is given, else http://127.0.0.1:30000.
    urls: tuple[str, ...] | None = None
    # Sent as `Authorization: Bearer` when the servers run with --api-key.
    api_key: str | None = None
    # Requests in flight per server; more samples wait client-side.
    max_inflight_per_server: int = 256
    # On start, poll /health on every server for up to this long (0: do not wait).
    wait_healthy_s: float = 0.0
    # After abort(), how long servers get to end the aborted streams before the client cuts them.
    abort_grace_s: float = 5.0
    # Tensor-parallel ranks per server: /update_weights_from_tensor sends one payload per rank.
    tp_size: int = 1
    # Servers to launch and supervise locally (see engine.generation.sglang_launch.LaunchConfig).
    launch: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        urls = self.urls if self.urls is not None else (() if self.launch else ("http://127.0.0.1:30000",))
        object.__setattr__(self, "urls", tuple(str(u).rstrip("/") for u in urls))
        if not self.urls and not self.launch:
            raise ValueError("SGLangConfig: give `urls` of running servers or a `launch` section")
        if self.max_retries < 0 or self.max_inflight_per_server < 1:
            raise ValueError("SGLangConfig: max_retries must be >= 0 and max_inflight_per_server >= 1")


@dataclass(kw_only=True)
class _Stream:
    """What one sample has received so far."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""
    chunks: int = 0
    first_token_s: float | None = None
    finish: Mapping[str, Any] | None = None
    weight_version: Any = None
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, chunk: Mapping[str, Any]) -> None:
        meta = chunk.get("meta_info") or {}
        ids = [int(t) for t in chunk.get("output_ids") or []]
        lps = [float(x[0]) if x[0] is not None else float("nan") for x in meta.get("output_token_logprobs") or []]
        total = meta.get("completion_tokens")
        # Cumulative chunks repeat everything so far; incremental ones carry only the new tokens.
        if total is None or len(ids) == int(total):
            self.token_ids, self.logprobs = ids, lps
            self.text = chunk.get("text") or self.text
        else:
            self.token_ids += ids
            self.logprobs += lps
            self.text += chunk.get("text") or ""
        self.chunks += 1
        if self.first_token_s is None and self.token_ids:
            self.first_token_s = time.monotonic()
        self.finish = meta.get("finish_reason")
        self.weight_version = meta.get("weight_version", self.weight_version)
        for key in ("prompt_tokens", "cached_tokens", "e2e_latency", "id"):
            if key in meta:
                self.meta[key] = meta[key]


class SGLangBackend(HTTPBackend):
    """Streams samples from SGLang servers; see the module docstring for the protocol and retry rules."""

    name: ClassVar[str] = "sglang"
    config_class: ClassVar[type] = SGLangConfig
    # Servers on other machines read the learner's export; a state dict also works for servers on this machine.
    weight_format: ClassVar[WeightFormat | None] = "hf_dir"
    needs_model: ClassVar[bool] = False

    def __init__(self, config: SGLangConfig | None = None) -> None:
        super().__init__()
        self.config = config or SGLangConfig()
        self._version = 0
        self._router: LeastLoadedRouter | None = None
        self._slots: asyncio.Semaphore | None = None
        self._calls: set[_Call] = set()
        self._launched: LaunchedServers | None = None
        self._backoff = self.config.backoff

    @property
    def weight_version(self) -> int:
        return self._version

    @property
    def endpoints(self) -> list[Endpoint]:
        return self._require_router().endpoints

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}

    async def _on_start(self) -> None:
        """Launch the configured servers, route over them and the given ones, wait for health if asked."""
        urls = tuple(self.config.urls or ())
        if self.config.launch:
            launch = config_from_options(LaunchConfig, self.config.launch, where="generation.sglang.launch")
            self._launched = await launch_servers(launch)
            urls = urls + tuple(self._launched.urls)
        self._router = LeastLoadedRouter(urls)
        self._slots = asyncio.Semaphore(self.config.max_inflight_per_server * len(urls))
        if self.config.wait_healthy_s > 0:
            await self.wait_healthy(self.config.wait_healthy_s)

    async def _on_close(self) -> None:
        launched, self._launched = self._launched, None
        if launched is not None:
            await launched.stop()

    # ----- generation -------------------------------------------------------------------------------

    async def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, *, n: int = 1
    ) -> AsyncIterator[Completion]:
        await self.start()
        token_prompts = check_prompts(prompts, n)
        call = _Call(prefix=uuid.uuid4().hex[:12], submitted=time.monotonic())
        self._calls.add(call)
        seed = params.seed
        tasks: dict[asyncio.Task[Completion], tuple[int, int]] = {}
        for i, prompt in enumerate(token_prompts):
            for j in range(n):
                sampling = _sampling_params(params, None if seed is None else row_seed(seed, i, j))
                coro = self._sample(call, i, j, prompt, sampling)
                tasks[asyncio.create_task(coro, name=f"sglang-{call.prefix}-{i}-{j}")] = (i, j)
        call.tasks = set(tasks)
        # Done-callbacks into a queue, not asyncio.wait in a loop: that re-arms every pending task per
        # completion, quadratic in the thousands of samples one RL step sends.
        finished: asyncio.Queue[asyncio.Task[Completion]] = asyncio.Queue()
        for task in tasks:
            task.add_done_callback(finished.put_nowait)
        pending = set(tasks)
        try:
            while pending:
                task = await finished.get()
                pending.discard(task)
                if task.cancelled():
                    i, j = tasks[task]
                    yield call.cut_short(i, j, self._version)
                elif task.exception() is not None:
                    raise GenerationError(
                        f"sglang sample failed unexpectedly: {task.exception()!r}"
                    ) from task.exception()
                else:
                    yield task.result()
        finally:
            self._calls.discard(call)
            if call.cutoff is not None:
                call.cutoff.cancel()
            if pending:
                # The caller stopped listening: tell the servers before the tasks drop their rids.
                call.aborted = True
                live = list(call.live.items())
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                await self._abort_rids(live)

    async def _sample(self, call: _Call, i: int, j: int, prompt: list[int], sampling: dict[str, Any]) -> Completion:
        """One sample with retries; always returns a Completion (failures carry `error`)."""
        router, slots = self._require_router(), self._slots
        assert slots is not None
        avoid: Endpoint | None = None
        error = "aborted before it was sent"
        stream = _Stream()
        call.streams[(i, j)] = stream
        for attempt in range(self.config.max_retries + 1):
            if call.aborted:
                return call.completion(i, j, stream, "abort", self._version, error=None)
            async with slots:
                if call.aborted:
                    return call.completion(i, j, stream, "abort", self._version, error=None)
                endpoint = router.pick(avoid)
                rid = f"{call.prefix}-{i}-{j}-{attempt}"
                body = {"rid": rid, "input_ids": prompt, "sampling_params": sampling, "stream": True}
                body |= {"return_logprob": True, "logprob_start_len": -1}
                endpoint.inflight += 1
                call.live[rid] = endpoint
                try:
                    await self._stream(endpoint, body, stream)
                    return self._finished(call, i, j, stream)
                except Exception as exc:
                    kind = classify(exc, endpoint.url)
                    if kind is None:
                        raise
                    endpoint.failures += 1
                    error = str(kind)
                    if stream.chunks or isinstance(kind, FatalHTTPError):
                        where = f" after {len(stream.token_ids)} streamed token(s)" if stream.chunks else ""
                        return call.completion(i, j, stream, "abort", self._version, error=f"{error}{where}")
                    if isinstance(exc, TimeoutError):
                        # The server may still be decoding it: free its slot while we back off.
                        self._in_background(self._abort_rids([(rid, endpoint)]))
                finally:
                    endpoint.inflight -= 1
                    call.live.pop(rid, None)
            avoid = endpoint
            if attempt < self.config.max_retries:
                await asyncio.sleep(self._backoff.delay(attempt))
        attempts = self.config.max_retries + 1
        return call.completion(i, j, stream, "abort", self._version, error=f"{error} ({attempts} attempt(s))")

    async def _stream(self, endpoint: Endpoint, body: dict[str, Any], stream: _Stream) -> None:
        session = self._require_session()
        timeout = self.config.stream_timeout()
        url = f"{endpoint.url}/generate"
        async with session.post(url, data=dumps(body), headers=JSON_HEADERS, timeout=timeout) as response:
            await raise_for_status(response, url)
            async for data in sse_events(response):
                if data == SSE_DONE:
                    break
                chunk = loads(data)
                if "error" in chunk:
                    err = chunk["error"]
                    message = f"{url} streamed an error: {err.get('message', err)}"
                    retryable = bool(err.get("retryable")) and not stream.chunks
                    raise RetryableHTTPError(message) if retryable else FatalHTTPError(message)
                stream.add(chunk)
                if stream.finish is not None:
                    return
        if stream.finish is None:
            raise RetryableHTTPError(f"{url} ended the stream without a finish_reason")

    def _finished(self, call: _Call, i: int, j: int, stream: _Stream) -> Completion:
        finish = dict(stream.finish or {})
        kind = finish.get("type")
        if kind in ("stop", "length"):
            return call.completion(i, j, stream, kind, self._version, error=None)
        if kind == "abort" and call.aborted:
            return call.completion(i, j, stream, "abort", self._version, error=None)
        reason = finish.get("message") or finish
        return call.completion(i, j, stream, "abort", self._version, error=f"server aborted the sample: {reason}")

    async def abort(self) -> None:
        """Abort every in-flight sample of every call; streams end with finish_reason "abort"."""
        live: list[tuple[str, Endpoint]] = []
        for call in list(self._calls):
            call.aborted = True
            live += list(call.live.items())
            call.arm_cutoff(self.config.abort_grace_s)
        await self._abort_rids(live)

    async def _abort_rids(self, live: list[tuple[str, Endpoint]]) -> None:
        if not live or self._session is None:
            return
        await asyncio.gather(
            *(self._post(e.url, "/abort_request", {"rid": rid}) for rid, e in live), return_exceptions=True
        )

    # ----- health and weights -----------------------------------------------------------------------

    async def health(self) -> dict[str, bool]:
        """GET /health on every server: {url: healthy}. Before `start`, only the configured `urls` (servers
        to be launched are not up yet)."""
        urls = [e.url for e in self.endpoints] if self._router is not None else list(self.config.urls or ())
        async with self._probe_session() as session:
            return await check_health(session, urls, timeout_s=self.config.connect_timeout_s)

    def explain_down(self, down: Sequence[str]) -> str:
        return (
            f"SGLang server(s) {list(down)} did not answer GET /health; start them "
            "(python -m sglang.launch_server ...) or fix the URLs"
        )

    async def wait_healthy(self, timeout_s: float) -> None:
        await wait_healthy(self._require_session(), [e.url for e in self.endpoints], timeout_s=timeout_s)

    async def model_info(self) -> dict[str, Any]:
        """GET /model_info of the first server (model_path, weight_version, ...)."""
        session = self._require_session()
        url = f"{self.endpoints[0].url}/model_info"
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=self.config.connect_timeout_s)) as response:
            await raise_for_status(response, url)
            return loads(await response.read())

    async def update_weights(self, source: WeightSource, *, version: int | None = None) -> int:
        """A directory (HF layout, exported by the learner) -> /update_weights_from_disk on every server;
        a state dict -> /update_weights_from_tensor (servers on this machine only)."""
        new_version = self._version + 1 if version is None else int(version)
        if isinstance(source, str | PathLike):
            body: dict[str, Any] = {"model_path": fspath(source), "weight_version": str(new_version)}
            await self._broadcast("/update_weights_from_disk", body)
        else:
            named = list(source.items())

            def body_for_one_server() -> dict[str, Any]:
                # Each rank of each server unpickles its own entry: a shared-memory handle is consumed once.
                payloads = [serialize_named_tensors(named) for _ in range(self.config.tp_size)]
                return {"serialized_named_tensors": payloads, "weight_version": str(new_version), "flush_cache": True}

            await self._broadcast("/update_weights_from_tensor", body_for_one_server)
        self._version = new_version
        return new_version

    async def init_weights_update_group(
        self,
        *,
        master_address: str,
        master_port: int,
        world_size: int,
        group_name: str = "weight_update_group",
        backend: str = "nccl",
        tp_size: int = 1,
    ) -> None:
        """Join every server's ranks to the learner's broadcast group; server k takes ranks 1 + k * tp_size."""
        await asyncio.gather(
            *(
                self._checked(
                    e.url,
                    "/init_weights_update_group",
                    {
                        "master_address": master_address,
                        "master_port": master_port,
                        "rank_offset": 1 + k * tp_size,
                        "world_size": world_size,
                        "group_name": group_name,
                        "backend": backend,
                    },
                )
                for k, e in enumerate(self.endpoints)
            )
        )

    async def update_weights_from_distributed(
        self,
        *,
        names: Sequence[str],
        dtypes: Sequence[str],
        shapes: Sequence[Sequence[int]],
        group_name: str = "weight_update_group",
        version: int | None = None,
    ) -> int:
        """Tell every server to receive these tensors by broadcast; the learner must broadcast concurrently."""
        new_version = self._version + 1 if version is None else int(version)
        body = {
            "names": list(names),
            "dtypes": list(dtypes),
            "shapes": [list(s) for s in shapes],
            "group_name": group_name,
            "weight_version": str(new_version),
            "flush_cache": True,
        }
        await self._broadcast("/update_weights_from_distributed", body)
        self._version = new_version
        return new_version

    async def destroy_weights_update_group(self, group_name: str = "weight_update_group") -> None:
        await self._broadcast("/destroy_weights_update_group", {"group_name": group_name})

    async def _broadcast(self, path: str, body: Mapping[str, Any] | Callable[[], Mapping[str, Any]]) -> None:
        """POST to every server at once; `body` may be a factory called once per server."""
        results = await asyncio.gather(
            *(self._checked(e.url, path, body() if callable(body) else body) for e in self.endpoints),
            return_exceptions=True,
        )
        failed = [f"{e.url}: {r}" for e, r in zip(self.endpoints, results, strict=True) if isinstance(r, BaseException)]
        if failed:
            raise GenerationError(f"{path} failed on {len(failed)} of {len(results)} server(s): {failed}")

    async def _checked(self, url: str, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        reply = await self._post(url, path, body)
        if isinstance(reply, dict) and reply.get("success") is False:
            raise GenerationError(f"{url}{path} refused: {reply.get('message')}")
        return reply

    async def _post(self, url: str, path: str, body: Mapping[str, Any]) -> Any:
        session = self._require_session()
        async with session.post(f"{url}{path}", data=dumps(body), headers=JSON_HEADERS) as response:
            raw = await response.read()
            reply = loads(raw) if raw and response.content_type == "application/json" else {}
            if response.status >= 400:
                raise GenerationError(f"HTTP {response.status} from {url}{path}: {raw[:500].decode(errors='replace')}")
            return reply

    def _require_router(self) -> LeastLoadedRouter:
        if self._router is None:
            raise GenerationError("the sglang backend is not started; use `async with` or `await backend.start()`")
        return self._router


@dataclass(kw_only=True, eq=False)
class _Call:
    """Book-keeping of one generate call: live rids per server, partial streams, abort state."""

    prefix: str
    submitted: float
    aborted: bool = False
    live: dict[str, Endpoint] = field(default_factory=dict)
    streams: dict[tuple[int, int], _Stream] = field(default_factory=dict)
    cutoff: asyncio.TimerHandle | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def arm_cutoff(self, grace_s: float) -> None:
        if self.cutoff is None:
            self.cutoff = asyncio.get_running_loop().call_later(grace_s, self._cut)

    def _cut(self) -> None:
        for task in self.tasks:
            if not task.done():
                task.cancel()

    def cut_short(self, i: int, j: int, version: int) -> Completion:
        return self.completion(i, j, self.streams.get((i, j), _Stream()), "abort", version, error=None)

    def completion(self, i: int, j: int, s: _Stream, reason: str, version: int, *, error: str | None) -> Completion:
        return Completion(
            prompt_index=i,
            sample_index=j,
            token_ids=tuple(s.token_ids),
            logprobs=tuple(s.logprobs),
            finish_reason=reason,  # type: ignore[arg-type]
            weight_version=_version_of(s.weight_version, version),
            timings=Timings(submitted_s=self.submitted, first_token_s=s.first_token_s, finished_s=time.monotonic()),
            text=s.text or None,
            error=error,
            meta=dict(s.meta),
        )


def _sampling_params(params: SamplingParams, seed: int | None) -> dict[str, Any]:
    """SGLang's sampling_params for one sample (n stays 1: the client sends each sample on its own)."""
    out: dict[str, Any] = {
        "max_new_tokens": params.max_new_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
    }
    if params.stop_token_ids:
        out["stop_token_ids"] = list(params.stop_token_ids)
    if seed is not None:
        out["sampling_seed"] = seed
    return out


def _version_of(reported: Any, fallback: int) -> int:
    """SGLang reports weight_version as a string ("default" until the first update); ours are ints."""
    try:
        return int(reported)
    except (TypeError, ValueError):
        return fallback


def serialize_named_tensors(named: list[tuple[str, Any]]) -> str:
    """One `serialized_named_tensors` entry: base64 of a ForkingPickler dump of [(name, tensor)], as
    SGLang's MultiprocessingSerializer(output_str=True) writes it. Tensors travel as shared-memory handles."""
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # noqa: F401  (registers torch's reductions with ForkingPickler)

    buffer = io.BytesIO()
    ForkingPickler(buffer).dump(named)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
