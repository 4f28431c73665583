"""The `sglang` generation backend: an aiohttp client of SGLang's native HTTP server.

Written against SGLang 0.5.23 (`srt/entrypoints/http_server.py`, `srt/managers/io_struct.py`,
`tokenizer_manager.py`, `tokenizer_control_mixin.py`, `scheduler_components/weight_updater.py`,
`layers/sampler.py`, `utils/auth.py` of the 0.5.23 wheel). What this client relies on:

- `POST /generate` with `input_ids`, `sampling_params`, `stream`, `return_logprob: true` and our own `rid`,
  one request per sample. Without `stream` the reply is one JSON object when the sample ends (the default:
  bench/NOTES.md); with it, server-sent events `data: {json}` ending with `data: [DONE]`. Each carries
  `output_ids`, `meta_info.output_token_logprobs` ([logprob, token_id, text|null] per token),
  `meta_info.completion_tokens`, `meta_info.weight_version` and `meta_info.finish_reason`: null while
  decoding, then {"type": "stop", "matched": id}, {"type": "length", "length": n} or {"type": "abort",
  "message": ...}. Streamed ids and log-probs are cumulative by default, deltas with
  `--incremental-streaming-output` except in the abort chunk (the last id again, every log-prob); the
  client tells them apart by `completion_tokens`, the running total in both modes. `output_ids` keep the
  matched stop token (only `text` is trimmed). An error mid-stream is a chunk `{"error": {...}}`.
- Log-probs are log_softmax(logits / T) at the sampling temperature, before top-k/top-p, unless the server
  runs with SGLANG_RETURN_ORIGINAL_LOGPROB, which it must not (README).
- `sampling_params.sampling_seed` (our per-sample seed) is honoured only by servers started with
  `--enable-deterministic-inference`; other servers ignore it, so seeded runs are reproducible only there.
- `POST /abort_request` {"rid"}; the aborted request ends with finish type "abort" and its partial output
  (tokens and log-probs), which a new request with input_ids = prompt + those tokens continues: the rollout's
  partial rollouts (`resumable`). Finished replies carry `meta_info.weight_versions`, spans of output tokens by
  weight version, read into `Completion.token_versions`.
- `GET /health` (200 when up; 503 while starting and while a weight update holds the writer lock),
  `GET /model_info` (`/get_model_info` is deprecated in 0.5.23).
- Weight sync, under the server's writer lock (it waits for every request in flight):
  `POST /update_weights_from_disk` {"model_path", "weight_version"}; inside `POST /begin_weight_update` ...
  `POST /end_weight_update`: `/update_weights_from_tensor` {"serialized_named_tensors": [base64 of a
  ForkingPickler dump of [(name, tensor)], one per TP rank], "weight_version", "flush_cache"} -- only for a
  server on the learner's machine, since the pickle carries shared-memory / CUDA-IPC handles -- and
  `/update_weights_from_distributed` {"names", "dtypes", "shapes", "group_name", "weight_version"} after
  `POST /init_weights_update_group`; the learner must broadcast in that group concurrently. An update whose
  cache flush was refused answers success: false although the weights changed; the client then sets the
  label with `/update_weight_version` and retries `/flush_cache`. Weight, flush and abort endpoints take the
  admin key when the server has one.

Retries: connection errors, timeouts, HTTP 5xx and 429 are retried with exponential backoff on the least
loaded other server, but only while nothing of the sample has been received. A sample that breaks after its
first chunk is never re-sent behind the caller's back: it is delivered as finish_reason "abort" with its
partial tokens and `error` saying where it broke, so the rollout counts it as a backend failure.

A server that died (its connection refused, reset or closed mid-reply) is taken out of routing at once; a sample
with nothing received goes to another server, or waits while every server is down. A watcher polls the server's
/health, then its weight version (GET /model_info): a server that restarted has its base weights, so the client
first loads the weights of its last update from a directory into it (/update_weights_from_disk with that
version label), or, after a state-dict update, keeps it out until the next update reaches it. A reply from a
server at an older weight version than the client's when the request was sent is discarded the same way (the
sample is re-sent elsewhere). Weight updates skip unreachable servers (the watcher brings them up to date).
When every server has been down for `server_down_timeout_s`, generation raises BackendUnavailable.

Checked against SGLang's own request parsers (tests/engine/test_sglang_contract.py) and exercised against
tests/engine/sglang_server.py, a protocol peer that behaves as 0.5.23 does; never against a real server
(see the README).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import itertools
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike, fspath
from typing import Any, ClassVar

import aiohttp

from engine.generation.base import (
    BackendUnavailable,
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
    unreachable,
)
from engine.generation.sglang_launch import LaunchConfig, LaunchedServers, check_health, launch_servers, wait_healthy

SGLANG_VERSION = "0.5.23"
# How SGLang 0.5.23 begins the message of an update whose weights changed but whose cache flush was refused
# (scheduler_components/weight_updater.py, flush_cache_after_weight_update); the reply says success: false.
WEIGHTS_CHANGED_NOT_FLUSHED = "Weights were updated, but the cache was not flushed"
log = logging.getLogger("engine.generation.sglang")


class _NotFlushed(GenerationError):
    """New weights are in, but the server kept refusing to flush the cache the old ones produced."""


class _StaleServer(RetryableHTTPError):
    """A server answered with weights older than the client's when the request was sent (it restarted with its
    base weights): nothing of its reply is used."""


@dataclass(frozen=True, kw_only=True)
class SGLangConfig(HTTPOptions):
    """Options of the sglang backend (the `generation.sglang` config section)."""

    # Running SGLang servers (or one sglang-router URL); requests go to the least loaded. Unset: the
    # launched servers if `launch` is given, else http://127.0.0.1:30000.
    urls: tuple[str, ...] | None = None
    # Sent as `Authorization: Bearer` when the servers run with --api-key.
    api_key: str | None = None
    # The servers' --admin-api-key, if they have one: weight, flush and abort endpoints then take only it.
    admin_api_key: str | None = None
    # Take each sample as one JSON reply when it ends (the default: each sample is its own request, so it is
    # still handed on the moment it finishes, at a small fraction of a stream's client CPU: bench/NOTES.md),
    # or stream it (server-sent events; needed only to watch a sample while it decodes).
    stream: bool = False
    # With `stream`: SGLang's sampling_params.stream_interval, a chunk every that many tokens (unset: the
    # server's --stream-interval).
    stream_interval: int | None = None
    # Without `stream`: the longest wait for a sample's reply (connect aside).
    request_timeout_s: float = 3600.0
    # Requests in flight per server on average (a prompt's samples all go to one server); more wait client-side.
    max_inflight_per_server: int = 256
    # On start, poll /health on every server for up to this long (0: do not wait).
    wait_healthy_s: float = 0.0
    # After abort(), how long servers get to end the aborted streams before the client cuts them.
    abort_grace_s: float = 5.0
    # Tensor-parallel ranks per server: /update_weights_from_tensor sends one payload per rank.
    tp_size: int = 1
    # Servers to launch and supervise locally (see engine.generation.sglang_launch.LaunchConfig).
    launch: Mapping[str, Any] | None = None
    # A state dict goes to /update_weights_from_tensor in buckets of at most this many MiB (a larger tensor
    # alone), all inside one weight-update session: the payload each server deserializes stays bounded.
    tensor_bucket_mb: float = 512.0
    # A weight update first waits for every request in flight on the server (its writer lock), then loads the
    # weights; this bounds the whole call, per server.
    weight_update_timeout_s: float = 1800.0
    # After an update whose cache flush was refused (requests still queued), keep retrying /flush_cache this long.
    flush_retry_s: float = 60.0
    # Under torchrun several processes share the servers; each server takes weight updates, flushes and session
    # calls from one of them only: server k from control rank k % control_world. Unset: from torchrun's
    # environment (RANK/WORLD_SIZE; LOCAL_RANK/LOCAL_WORLD_SIZE when servers are launched, as they are then
    # local to a node), else 0 of 1. Launching is done by control rank 0; the others wait for its servers. An
    # update returns on every process once every server reports the new weight_version (GET /model_info).
    control_rank: int | None = None
    control_world: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        urls = self.urls if self.urls is not None else (() if self.launch else ("http://127.0.0.1:30000",))
        object.__setattr__(self, "urls", tuple(str(u).rstrip("/") for u in urls))
        if not self.urls and not self.launch:
            raise ValueError("SGLangConfig: give `urls` of running servers or a `launch` section")
        if self.max_retries < 0 or self.max_inflight_per_server < 1:
            raise ValueError("SGLangConfig: max_retries must be >= 0 and max_inflight_per_server >= 1")
        if self.tensor_bucket_mb <= 0:
            raise ValueError("SGLangConfig: tensor_bucket_mb must be > 0")
        if self.weight_update_timeout_s <= 0 or self.flush_retry_s < 0:
            raise ValueError("SGLangConfig: weight_update_timeout_s must be > 0 and flush_retry_s >= 0")
        local = bool(self.launch)
        rank_var, world_var = ("LOCAL_RANK", "LOCAL_WORLD_SIZE") if local else ("RANK", "WORLD_SIZE")
        if self.control_rank is None:
            object.__setattr__(self, "control_rank", int(os.environ.get(rank_var, 0)))
        if self.control_world is None:
            object.__setattr__(self, "control_world", int(os.environ.get(world_var, 1)))
        if not 0 <= self.control_rank < self.control_world:  # type: ignore[operator]
            raise ValueError(
                f"SGLangConfig: control_rank must be in [0, control_world), got {self.control_rank} "
                f"of {self.control_world}"
            )


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
    # meta_info.weight_versions of the finished reply: [{"version", "start", "end"}] spans of output tokens by the
    # weights that generated them (one span unless the weights changed while the request ran).
    spans: list[Mapping[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, chunk: Mapping[str, Any]) -> None:
        meta = chunk.get("meta_info") or {}
        ids = [int(t) for t in chunk.get("output_ids") or []]
        lps = [float(x[0]) if x[0] is not None else float("nan") for x in meta.get("output_token_logprobs") or []]
        total = int(meta["completion_tokens"]) if meta.get("completion_tokens") is not None else len(ids)
        # completion_tokens is the running total in both modes. Cumulative chunks repeat everything so far;
        # incremental ones carry only the new tokens, except the abort chunk of an incremental stream, which
        # repeats the last token id, the whole text and every log-prob (tokenizer_manager's abort handler).
        new = total - len(self.token_ids)
        if len(ids) == total:
            self.token_ids = ids
        elif len(ids) == new:
            self.token_ids += ids
        elif new != 0:
            raise FatalHTTPError(
                f"chunk of {len(ids)} token(s) at completion_tokens={total} after {len(self.token_ids)} received"
            )
        if len(lps) == total:
            self.logprobs = lps
        elif len(lps) == new:
            self.logprobs += lps
        text = chunk.get("text")
        if text is not None:
            whole = len(ids) == total or (new == 0 and bool(ids))
            self.text = text if whole else self.text + text
        self.chunks += 1
        if self.first_token_s is None and self.token_ids:
            self.first_token_s = time.monotonic()
        self.finish = meta.get("finish_reason")
        self.weight_version = meta.get("weight_version", self.weight_version)
        if meta.get("weight_versions") is not None:
            self.spans = list(meta["weight_versions"])
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
    # abort() leaves each cut sample with its tokens and log-probs so far, and input_ids = prompt + those tokens
    # continues it (the rollout's partial rollouts).
    resumable: ClassVar[bool] = True

    def __init__(self, config: SGLangConfig | None = None) -> None:
        super().__init__()
        self.config = config or SGLangConfig()
        self._version = 0
        self._router: LeastLoadedRouter | None = None
        self._slots: asyncio.Semaphore | None = None
        self._calls: set[_Call] = set()
        self._launched: LaunchedServers | None = None
        self._backoff = self.config.backoff
        self._in_session = False
        self._watchers: dict[Endpoint, asyncio.Task[None]] = {}  # one per server that is down
        self._resync: tuple[str, int] | None = None  # (directory, version) of the last update from disk
        self._weights_lock = asyncio.Lock()  # an update and a watcher's reload of a restarted server: one at a time
        self._skip: set[Endpoint] = set()  # servers the open weight-update session left out (unreachable)

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
            if self.config.control_rank == 0:
                self._launched = await launch_servers(launch)
                urls = urls + tuple(self._launched.urls)
            else:  # another process of this node launches them: wait for them as long as it would
                launched_urls = LaunchedServers(launch).urls
                await wait_healthy(self._require_session(), launched_urls, timeout_s=launch.startup_timeout_s)
                urls = urls + tuple(launched_urls)
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
                if self.config.stream and self.config.stream_interval is not None:
                    sampling["stream_interval"] = self.config.stream_interval
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
                elif isinstance(task.exception(), BackendUnavailable):
                    raise task.exception()  # type: ignore[misc]
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
            await router.wait_usable(self.config.server_down_timeout_s, what="SGLang")
            async with slots:
                if call.aborted:
                    return call.completion(i, j, stream, "abort", self._version, error=None)
                # All samples of a prompt go to one server (its radix cache holds the prompt once); only a
                # retry after a failure, or a server going down, sends them elsewhere.
                endpoint = call.servers.get(i) if avoid is None else None
                if endpoint is None or endpoint.down is not None:
                    endpoint = router.pick(avoid)
                    if endpoint is None:  # every server went down meanwhile: wait for one (bounded) again
                        error = "every server went down"
                        continue
                    call.servers[i] = endpoint
                rid = f"{call.prefix}-{i}-{j}-{attempt}"
                body = {"rid": rid, "input_ids": prompt, "sampling_params": sampling, "stream": self.config.stream}
                body |= {"return_logprob": True, "logprob_start_len": -1}
                endpoint.inflight += 1
                call.live[rid] = endpoint
                try:
                    await self._stream(endpoint, body, stream, sent_version=self._version)
                    return self._finished(call, i, j, stream)
                except Exception as exc:
                    kind = classify(exc, endpoint.url)
                    if kind is None:
                        raise
                    endpoint.failures += 1
                    error = str(kind)
                    if isinstance(exc, _StaleServer):  # nothing of its reply is used: start the sample afresh
                        stream = call.streams[(i, j)] = _Stream()
                        self._mark_down(endpoint, str(exc))
                    elif unreachable(exc):
                        self._mark_down(endpoint, f"unreachable: {kind}")
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

    async def _stream(self, endpoint: Endpoint, body: dict[str, Any], stream: _Stream, *, sent_version: int) -> None:
        """POST /generate and fold its reply into `stream`; a reply at weights older than `sent_version` (the
        client's when the request was sent: SGLang's writer lock makes a later request see the new weights)
        raises _StaleServer before anything of it is kept."""
        session = self._require_session()
        url = f"{endpoint.url}/generate"
        if not body["stream"]:  # one JSON reply when the sample ends: a silence as long as the whole sample
            timeout = aiohttp.ClientTimeout(
                total=None, connect=self.config.connect_timeout_s, sock_read=self.config.request_timeout_s
            )
            async with session.post(url, data=dumps(body), headers=JSON_HEADERS, timeout=timeout) as response:
                await raise_for_status(response, url)
                reply = loads(await response.read())
            if "error" in reply:
                raise FatalHTTPError(f"{url} answered an error: {reply['error']}")
            _check_version(url, reply, sent_version)
            stream.add(reply)
            stream.first_token_s = None  # not observable without streaming
            if stream.finish is None:
                raise RetryableHTTPError(f"{url} answered without a finish_reason")
            return
        timeout = self.config.stream_timeout()
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
                if not stream.chunks:
                    _check_version(url, chunk, sent_version)
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

    def _mark_down(self, endpoint: Endpoint, reason: str) -> None:
        """Route around `endpoint` until its watcher sees it healthy and at the current weights."""
        if self._require_router().mark_down(endpoint, reason):
            log.warning("SGLang server %s is down (%s); routing around it", endpoint.url, reason)
        watcher = self._watchers.get(endpoint)
        if (watcher is None or watcher.done()) and not self._closed:
            self._watchers[endpoint] = asyncio.create_task(self._watch(endpoint), name=f"sglang-watch-{endpoint.url}")

    async def _watch(self, endpoint: Endpoint) -> None:
        """Poll a down server until it answers /health at the client's weight version, reloading the last weights
        from disk into it when it came back without them (this process controls it), then route to it again."""
        session, router = self._require_session(), self._require_router()
        for attempt in itertools.count():
            await asyncio.sleep(min(1.0, 0.05 * 2**attempt))
            healthy = await check_health(session, [endpoint.url], timeout_s=self.config.connect_timeout_s)
            if not healthy[endpoint.url]:
                continue
            try:
                reported = await self._server_version(endpoint)
                if reported != self._version and endpoint in self.controlled and self._resync is not None:
                    await self._reload(endpoint)
                    reported = await self._server_version(endpoint)
            except (aiohttp.ClientError, TimeoutError, GenerationError, RetryableHTTPError, FatalHTTPError) as exc:
                endpoint.down = f"back, but not yet at weight version {self._version}: {exc}"
                continue
            if reported == self._version:
                log.info("SGLang server %s is back (weight version %d)", endpoint.url, reported)
                router.mark_up(endpoint)
                return
            endpoint.down = f"back at weight version {reported}, not the client's {self._version}"

    async def _reload(self, endpoint: Endpoint) -> None:
        """Load the last update's directory into one server, labelled with its version."""
        async with self._weights_lock:
            if self._resync is None or self._resync[1] != self._version:
                return  # a state-dict update came meanwhile: the next update reaches this server
            path, version = self._resync
            body = {"model_path": path, "weight_version": str(version)}
            result = (await self._on_each([endpoint], "/update_weights_from_disk", body, recover=version))[endpoint]
            if isinstance(result, BaseException):
                raise result
        log.info("SGLang server %s: reloaded weight version %d from %s", endpoint.url, version, path)

    async def _server_version(self, endpoint: Endpoint) -> int:
        """The server's weight version (GET /model_info); its base weights ("default") count as version 0."""
        session, url = self._require_session(), f"{endpoint.url}/model_info"
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=self.config.connect_timeout_s)) as response:
            await raise_for_status(response, url)
            return _version_of(loads(await response.read()).get("weight_version"), 0)

    async def close(self) -> None:
        watchers = list(self._watchers.values())
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await super().close()

    async def model_info(self) -> dict[str, Any]:
        """GET /model_info of the first server (model_path, weight_version, ...)."""
        session = self._require_session()
        url = f"{self.endpoints[0].url}/model_info"
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=self.config.connect_timeout_s)) as response:
            await raise_for_status(response, url)
            return loads(await response.read())

    @property
    def controlled(self) -> list[Endpoint]:
        """The servers this process sends weight updates, flushes and session calls to (see `control_rank`)."""
        rank, world = self.config.control_rank, self.config.control_world
        return [e for k, e in enumerate(self.endpoints) if k % world == rank]  # type: ignore[operator]

    @property
    def _targets(self) -> list[Endpoint]:
        """The controlled servers a weight update posts to: all but those the open session left out."""
        return [e for e in self.controlled if e not in self._skip]

    @contextlib.asynccontextmanager
    async def weight_update_session(self) -> AsyncIterator[None]:
        """`POST /begin_weight_update` ... `/end_weight_update` on the controlled servers, around tensor or
        distributed updates (SGLang 0.5.23 refuses those outside a session: 400, and a distributed update then
        leaves the learner's broadcast waiting). Several updates (buckets) may run inside one session; nested
        calls join the open one."""
        if self._in_session:
            yield
            return
        opened = await self._on_each(self.controlled, "/begin_weight_update", {})
        try:
            # A server that cannot be reached sits this session out (down; its watcher waits for the next update).
            lost = {e for e, r in opened.items() if isinstance(r, BaseException) and unreachable(r)}
            failed = {e: r for e, r in opened.items() if isinstance(r, BaseException) and e not in lost}
            if failed or len(lost) == len(opened):
                raise GenerationError(f"/begin_weight_update failed: {self._failures(opened)}")
            for e in lost:
                self._mark_down(e, f"unreachable at /begin_weight_update: {opened[e]!r}")
            self._skip = lost
            self._in_session = True
            yield
        finally:
            self._in_session = False
            self._skip = set()
            ok = [e for e, r in opened.items() if not isinstance(r, BaseException)]
            closed = await self._on_each(ok, "/end_weight_update", {})
            if any(isinstance(r, BaseException) for r in closed.values()):
                raise GenerationError(f"/end_weight_update failed: {self._failures(closed)}")

    async def update_weights(self, source: WeightSource, *, version: int | None = None) -> int:
        """A directory (HF layout, exported by the learner) -> /update_weights_from_disk on every controlled
        server; a state dict -> /update_weights_from_tensor in buckets inside one weight-update session (servers
        on this machine only). Every process sharing the servers calls this; only the controlling one posts.

        Each update call holds the server's writer lock, but the session does not hold it between buckets: a
        request sent meanwhile decodes with some new tensors; its log-probs are those of the weights that made
        it, and its version label the old one."""
        new_version = self._version + 1 if version is None else int(version)
        if isinstance(source, str | PathLike):
            body: dict[str, Any] = {"model_path": fspath(source), "weight_version": str(new_version)}
            await self._update("/update_weights_from_disk", body, new_version)
            self._resync = (fspath(source), new_version)  # what a server that restarts meanwhile gets reloaded with
            return new_version
        self._resync = None  # a state dict is not kept: a restarted server waits for the next update
        buckets = tensor_buckets(list(source.items()), int(self.config.tensor_bucket_mb * 2**20))

        def body(bucket: list[tuple[str, Any]], last: bool) -> Callable[[Endpoint], dict[str, Any]]:
            def for_one_server(_: Endpoint) -> dict[str, Any]:
                # Each rank of each server unpickles its own entry: a shared-memory handle is consumed once.
                payloads = [serialize_named_tensors(bucket) for _ in range(self.config.tp_size)]
                # The version label and the cache flush come with the last bucket, once every weight is in.
                out: dict[str, Any] = {"serialized_named_tensors": payloads, "flush_cache": last}
                return out | ({"weight_version": str(new_version)} if last else {})

            return for_one_server

        async with self.weight_update_session():
            for bucket in buckets[:-1]:
                results = await self._on_each(self._targets, "/update_weights_from_tensor", body(bucket, False))
                if any(isinstance(r, BaseException) for r in results.values()):
                    raise GenerationError(f"/update_weights_from_tensor failed: {self._failures(results)}")
            await self._update("/update_weights_from_tensor", body(buckets[-1], True), new_version)
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
        """Join every controlled server's ranks to the learner's broadcast group; server k (its index among
        all servers) takes ranks 1 + k * tp_size onwards."""
        index = {id(e): k for k, e in enumerate(self.endpoints)}

        def body(e: Endpoint) -> dict[str, Any]:
            return {
                "master_address": master_address,
                "master_port": master_port,
                "rank_offset": 1 + index[id(e)] * tp_size,
                "world_size": world_size,
                "group_name": group_name,
                "backend": backend,
            }

        results = await self._on_each(self.controlled, "/init_weights_update_group", body)
        if any(isinstance(r, BaseException) for r in results.values()):
            raise GenerationError(f"/init_weights_update_group failed: {self._failures(results)}")

    async def update_weights_from_distributed(
        self,
        *,
        names: Sequence[str],
        dtypes: Sequence[str],
        shapes: Sequence[Sequence[int]],
        group_name: str = "weight_update_group",
        version: int | None = None,
    ) -> int:
        """Tell every controlled server to receive these tensors by broadcast, inside a weight-update session;
        the learner must broadcast concurrently."""
        new_version = self._version + 1 if version is None else int(version)
        body = {
            "names": list(names),
            "dtypes": list(dtypes),
            "shapes": [list(s) for s in shapes],
            "group_name": group_name,
            "weight_version": str(new_version),
            "flush_cache": True,
        }
        self._resync = None
        async with self.weight_update_session():
            await self._update("/update_weights_from_distributed", body, new_version)
        return new_version

    async def destroy_weights_update_group(self, group_name: str = "weight_update_group") -> None:
        results = await self._on_each(self.controlled, "/destroy_weights_update_group", {"group_name": group_name})
        if any(isinstance(r, BaseException) for r in results.values()):
            raise GenerationError(f"/destroy_weights_update_group failed: {self._failures(results)}")

    async def _update(self, path: str, body: Any, new_version: int) -> None:
        """One weight update on every controlled server. The version label moves once the weights changed
        everywhere, even when a server could not flush its cache afterwards (then this still raises)."""
        others = [e for e in self.endpoints if e not in self.controlled]
        async with self._weights_lock:
            results = await self._on_each(self._targets, path, body, recover=new_version)
            # A server that cannot be reached is down: its watcher brings it to the current weights when it is back.
            lost = {e for e, r in results.items() if isinstance(r, BaseException) and unreachable(r)}
            hard = {
                e: r
                for e, r in results.items()
                if isinstance(r, BaseException) and not isinstance(r, _NotFlushed) and e not in lost
            }
            if hard or (lost and len(lost) == len(results)):
                failed = hard or {e: results[e] for e in lost}
                raise GenerationError(
                    f"{path} failed on {len(failed)} of {len(results)} server(s): {self._failures(failed)}"
                )
            for e in lost:
                self._mark_down(e, f"unreachable during {path}: {results[e]!r}")
            # The servers other processes update: wait until they serve the new version, so that this process's
            # next requests are not decoded with the old weights (an update only waits for requests already sent).
            await asyncio.gather(*(self._await_version(e, new_version) for e in others))
            self._version = new_version
        if any(isinstance(r, _NotFlushed) for r in results.values()):
            raise GenerationError(f"{path}: weights updated, but {self._failures(results)}")

    async def _on_each(
        self, endpoints: Sequence[Endpoint], path: str, body: Any, *, recover: int | None = None
    ) -> dict[Endpoint, Any]:
        """POST to each endpoint at once; `body` may be a factory called per server. {endpoint: reply or error}.
        With `recover` (a new weight version), a refused cache flush after the weights changed is repaired:
        the server's version label is set (SGLang leaves it at the old one) and the flush retried."""

        async def one(e: Endpoint) -> Any:
            payload = body(e) if callable(body) else body
            reply = await self._post(e.url, path, payload, weights=True)
            if reply.get("success") is not False:
                return reply
            message = str(reply.get("message"))
            if recover is None or not message.startswith(WEIGHTS_CHANGED_NOT_FLUSHED):
                raise GenerationError(f"{e.url}{path} refused: {message}")
            await self._checked(
                e.url, "/update_weight_version", {"new_version": str(recover), "abort_all_requests": False}
            )
            await self._flush(e)
            return reply

        results = await asyncio.gather(*(one(e) for e in endpoints), return_exceptions=True)
        return dict(zip(endpoints, results, strict=True))

    async def _await_version(self, endpoint: Endpoint, version: int) -> None:
        """Poll GET /model_info until the server's weight_version is `version` (its controlling process updated it)."""
        deadline = time.monotonic() + self.config.weight_update_timeout_s
        session, url = self._require_session(), f"{endpoint.url}/model_info"
        timeout = aiohttp.ClientTimeout(total=self.config.connect_timeout_s)
        for attempt in itertools.count():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url, timeout=timeout) as response:
                    if response.status == 200 and str(loads(await response.read()).get("weight_version")) == str(
                        version
                    ):
                        return
            if time.monotonic() >= deadline:
                raise GenerationError(
                    f"{endpoint.url} is not at weight version {version} after {self.config.weight_update_timeout_s:.0f}"
                    " s; the process that controls it (control_rank) did not update it"
                )
            await asyncio.sleep(min(0.05 * 2 ** min(attempt, 4), max(0.0, deadline - time.monotonic())))

    async def _flush(self, endpoint: Endpoint) -> None:
        """POST /flush_cache until it is done (SGLang refuses it while requests are queued or running)."""
        deadline = time.monotonic() + self.config.flush_retry_s
        for attempt in itertools.count():
            session = self._require_session()
            url = f"{endpoint.url}/flush_cache"
            timeout = aiohttp.ClientTimeout(total=self.config.weight_update_timeout_s)
            async with session.post(url, headers=self._admin_headers(), timeout=timeout) as response:
                text = (await response.text())[:300]
                if response.status == 200:
                    return
            if time.monotonic() >= deadline:
                raise _NotFlushed(f"{endpoint.url} refused /flush_cache for {self.config.flush_retry_s:.0f} s: {text}")
            await asyncio.sleep(min(self._backoff.delay(attempt), max(0.0, deadline - time.monotonic())))

    @staticmethod
    def _failures(results: Mapping[Endpoint, Any]) -> list[str]:
        return [f"{e.url}: {r}" for e, r in results.items() if isinstance(r, BaseException)]

    async def _checked(self, url: str, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        reply = await self._post(url, path, body, weights=True)
        if reply.get("success") is False:
            raise GenerationError(f"{url}{path} refused: {reply.get('message')}")
        return reply

    def _admin_headers(self) -> dict[str, str]:
        """SGLang's weight, flush and abort endpoints take the admin key when the server has one."""
        key = self.config.admin_api_key or self.config.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def _post(self, url: str, path: str, body: Mapping[str, Any], *, weights: bool = False) -> dict[str, Any]:
        """POST an admin endpoint; its JSON reply ({} when none). A 400 carrying {"success": false, ...} is
        returned for the caller to read; other HTTP errors raise."""
        session = self._require_session()
        total = self.config.weight_update_timeout_s if weights else self.config.read_timeout_s
        timeout = aiohttp.ClientTimeout(total=total, connect=self.config.connect_timeout_s)
        headers = JSON_HEADERS | self._admin_headers()
        async with session.post(f"{url}{path}", data=dumps(body), headers=headers, timeout=timeout) as response:
            raw = await response.read()
            reply = loads(raw) if raw and response.content_type == "application/json" else {}
            if response.status >= 400 and not (isinstance(reply, dict) and "success" in reply):
                raise GenerationError(f"HTTP {response.status} from {url}{path}: {raw[:500].decode(errors='replace')}")
            return reply if isinstance(reply, dict) else {}

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
    servers: dict[int, Endpoint] = field(default_factory=dict)  # prompt index -> its server
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
        label = _version_of(s.weight_version, version)
        per_token = _token_versions(s.spans, len(s.token_ids), label)
        return Completion(
            prompt_index=i,
            sample_index=j,
            token_ids=tuple(s.token_ids),
            logprobs=tuple(s.logprobs),
            finish_reason=reason,  # type: ignore[arg-type]
            weight_version=min(per_token, default=label),
            token_versions=per_token if len(set(per_token)) > 1 else (),
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


def _check_version(url: str, chunk: Mapping[str, Any], sent_version: int) -> None:
    reported = (chunk.get("meta_info") or {}).get("weight_version")
    if reported is not None and _version_of(reported, 0) < sent_version:
        raise _StaleServer(
            f"{url} answered at weight version {reported!r}, older than the client's {sent_version} (restarted?)"
        )


def _version_of(reported: Any, fallback: int) -> int:
    """SGLang reports weight_version as a string ("default" until the first update); ours are ints."""
    try:
        return int(reported)
    except (TypeError, ValueError):
        return fallback


def _token_versions(spans: Sequence[Mapping[str, Any]], n: int, label: int) -> tuple[int, ...]:
    """Each output token's weight version from SGLang's weight_versions spans; `label` for every token when the
    spans are missing or do not cover the tokens exactly."""
    out: list[int] = []
    for span in spans:
        try:
            start, end, version = int(span["start"]), int(span["end"]), _version_of(span["version"], label)
        except (KeyError, TypeError, ValueError):
            return (label,) * n
        if start != len(out) or end < start:
            return (label,) * n
        out += [version] * (end - start)
    return tuple(out) if len(out) == n else (label,) * n


def tensor_buckets(named: list[tuple[str, Any]], bucket_bytes: int) -> list[list[tuple[str, Any]]]:
    """Consecutive groups of (name, tensor) of at most `bucket_bytes` each (a larger tensor alone); at least one."""
    buckets: list[list[tuple[str, Any]]] = [[]]
    size = 0
    for name, tensor in named:
        nbytes = tensor.numel() * tensor.element_size()
        if buckets[-1] and size + nbytes > bucket_bytes:
            buckets.append([])
            size = 0
        buckets[-1].append((name, tensor))
        size += nbytes
    return buckets


def serialize_named_tensors(named: list[tuple[str, Any]]) -> str:
    """One `serialized_named_tensors` entry: base64 of a ForkingPickler dump of [(name, tensor)], as
    SGLang's MultiprocessingSerializer(output_str=True) writes it. Tensors travel as handles: CUDA tensors as
    CUDA IPC handles; CPU tensors as named shared-memory files (torch's "file_system" sharing strategy, set for
    the dump only). The default "file_descriptor" strategy hands file descriptors over multiprocessing's
    resource sharer, which only a process holding this process's authkey (a multiprocessing child) may
    reach: an independently started server fails with "digest sent was rejected"."""
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # registers torch's reductions with ForkingPickler

    buffer = io.BytesIO()
    before = torch.multiprocessing.get_sharing_strategy()
    torch.multiprocessing.set_sharing_strategy("file_system")
    try:
        ForkingPickler(buffer).dump(named)
    finally:
        torch.multiprocessing.set_sharing_strategy(before)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
