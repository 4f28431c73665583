"""The `sglang` generation backend: an aiohttp client of SGLang's native HTTP server.

The protocol (SGLang 0.5.23's native HTTP server) and its request bodies are in
engine/generation/sglang_protocol.py; weight updates and the other admin calls in engine/generation/sglang_control.py.
Each sample is its own `POST /generate` with our rid; all samples of a prompt go to one server (its radix cache
holds the prompt once).

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
import itertools
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
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
from engine.generation.sglang_control import SGLangControl
from engine.generation.sglang_launch import LaunchConfig, LaunchedServers, check_health, launch_servers, wait_healthy
from engine.generation.sglang_protocol import (
    ReplyStream,
    generate_body,
    request_id,
    sampling_params,
    token_versions,
    version_of,
)

log = logging.getLogger("engine.generation.sglang")


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
        self._router: LeastLoadedRouter | None = None
        self._slots: asyncio.Semaphore | None = None
        self._calls: set[_Call] = set()
        self._launched: LaunchedServers | None = None
        self._backoff = self.config.backoff
        self._watchers: dict[Endpoint, asyncio.Task[None]] = {}  # one per server that is down
        self._counted = (0, 0)  # (downs, failures) over all servers when the metrics were last taken
        self._control = SGLangControl(
            self.config, session=self._require_session, endpoints=lambda: self.endpoints, mark_down=self._mark_down
        )

    @property
    def weight_version(self) -> int:
        return self._control.version

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
                sampling = sampling_params(params, None if seed is None else row_seed(seed, i, j))
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
                    yield call.cut_short(i, j, self._control.version)
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
                await self._control.abort_rids(live)

    async def _sample(self, call: _Call, i: int, j: int, prompt: list[int], sampling: dict[str, Any]) -> Completion:
        """One sample with retries; always returns a Completion (failures carry `error`)."""
        router, slots = self._require_router(), self._slots
        assert slots is not None
        avoid: Endpoint | None = None
        error = "aborted before it was sent"
        stream = ReplyStream()
        call.streams[(i, j)] = stream
        for attempt in range(self.config.max_retries + 1):
            if call.aborted:
                return call.completion(i, j, stream, "abort", self._control.version, error=None)
            await router.wait_usable(self.config.server_down_timeout_s, what="SGLang")
            async with slots:
                if call.aborted:
                    return call.completion(i, j, stream, "abort", self._control.version, error=None)
                # All samples of a prompt go to one server (its radix cache holds the prompt once); only a
                # retry after a failure, or a server going down, sends them elsewhere.
                endpoint = call.servers.get(i) if avoid is None else None
                if endpoint is None or endpoint.down is not None:
                    endpoint = router.pick(avoid)
                    if endpoint is None:  # every server went down meanwhile: wait for one (bounded) again
                        error = "every server went down"
                        continue
                    call.servers[i] = endpoint
                rid = request_id(call.prefix, i, j, attempt)
                body = generate_body(rid, prompt, sampling, stream=self.config.stream)
                endpoint.inflight += 1
                call.live[rid] = endpoint
                try:
                    await self._stream(endpoint, body, stream, sent_version=self._control.version)
                    return self._finished(call, i, j, stream)
                except Exception as exc:
                    kind = classify(exc, endpoint.url)
                    if kind is None:
                        raise
                    endpoint.failures += 1
                    error = str(kind)
                    if isinstance(exc, _StaleServer):  # nothing of its reply is used: start the sample afresh
                        stream = call.streams[(i, j)] = ReplyStream()
                        self._mark_down(endpoint, str(exc))
                    elif unreachable(exc):
                        self._mark_down(endpoint, f"unreachable: {kind}")
                    if stream.chunks or isinstance(kind, FatalHTTPError):
                        where = f" after {len(stream.token_ids)} streamed token(s)" if stream.chunks else ""
                        return call.completion(i, j, stream, "abort", self._control.version, error=f"{error}{where}")
                    if isinstance(exc, TimeoutError):
                        # The server may still be decoding it: free its slot while we back off.
                        self._in_background(self._control.abort_rids([(rid, endpoint)]))
                finally:
                    endpoint.inflight -= 1
                    call.live.pop(rid, None)
            avoid = endpoint
            if attempt < self.config.max_retries:
                await asyncio.sleep(self._backoff.delay(attempt))
        attempts = self.config.max_retries + 1
        return call.completion(i, j, stream, "abort", self._control.version, error=f"{error} ({attempts} attempt(s))")

    async def _stream(
        self, endpoint: Endpoint, body: dict[str, Any], stream: ReplyStream, *, sent_version: int
    ) -> None:
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

    def _finished(self, call: _Call, i: int, j: int, stream: ReplyStream) -> Completion:
        finish = dict(stream.finish or {})
        kind = finish.get("type")
        if kind in ("stop", "length"):
            return call.completion(i, j, stream, kind, self._control.version, error=None)
        if kind == "abort" and call.aborted:
            return call.completion(i, j, stream, "abort", self._control.version, error=None)
        reason = finish.get("message") or finish
        return call.completion(
            i, j, stream, "abort", self._control.version, error=f"server aborted the sample: {reason}"
        )

    async def abort(self) -> None:
        """Abort every in-flight sample of every call; streams end with finish_reason "abort"."""
        live: list[tuple[str, Endpoint]] = []
        for call in list(self._calls):
            call.aborted = True
            live += list(call.live.items())
            call.arm_cutoff(self.config.abort_grace_s)
        await self._control.abort_rids(live)

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
                reported = await self._control.catch_up(endpoint)
            except (aiohttp.ClientError, TimeoutError, GenerationError, RetryableHTTPError, FatalHTTPError) as exc:
                endpoint.down = f"back, but not yet at weight version {self._control.version}: {exc}"
                continue
            if reported == self._control.version:
                log.info("SGLang server %s is back (weight version %d)", endpoint.url, reported)
                router.mark_up(endpoint)
                return
            endpoint.down = f"back at weight version {reported}, not the client's {self._control.version}"

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
    def control(self) -> SGLangControl:
        """Weight updates and the other admin calls: `control.weight_update_session()` holds one session open
        across several updates; `control.init_weights_update_group(...)` and
        `control.update_weights_from_distributed(...)` sync weights by broadcast."""
        return self._control

    async def update_weights(self, source: WeightSource, *, version: int | None = None) -> int:
        """A directory (HF layout) or a state dict into every server this process controls; see SGLangControl."""
        return await self._control.update_weights(source, version=version)

    def take_step_metrics(self) -> dict[str, float | int | None]:
        """The servers' health since the last call (the rollout takes it once per step): `generation/server_downs`,
        times a server was taken out of routing; `generation/failed_attempts`, request attempts that failed (each
        retried or reported); `generation/servers_down`, servers out of routing now. {} before `start`."""
        if self._router is None:
            return {}
        endpoints = self._router.endpoints
        downs, failures = sum(e.downs for e in endpoints), sum(e.failures for e in endpoints)
        taken, self._counted = self._counted, (downs, failures)
        return {
            "generation/server_downs": downs - taken[0],
            "generation/failed_attempts": failures - taken[1],
            "generation/servers_down": sum(e.down is not None for e in endpoints),
        }

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
    streams: dict[tuple[int, int], ReplyStream] = field(default_factory=dict)
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
        return self.completion(i, j, self.streams.get((i, j), ReplyStream()), "abort", version, error=None)

    def completion(self, i: int, j: int, s: ReplyStream, reason: str, version: int, *, error: str | None) -> Completion:
        label = version_of(s.weight_version, version)
        per_token = token_versions(s.spans, len(s.token_ids), label)
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


def _check_version(url: str, chunk: Mapping[str, Any], sent_version: int) -> None:
    reported = (chunk.get("meta_info") or {}).get("weight_version")
    if reported is not None and version_of(reported, 0) < sent_version:
        raise _StaleServer(
            f"{url} answered at weight version {reported!r}, older than the client's {sent_version} (restarted?)"
        )
