"""The control plane of the sglang backend: admin calls to SGLang servers (weight updates, cache flushes,
aborts) and the weight version every server should serve.

Weight updates go to the servers this process controls (`SGLangConfig.control_rank`); a server that cannot be
reached sits an update out and is marked down, and the backend's health watcher brings it back to the current
weights (`catch_up`: the last update's directory is loaded into it again). An update whose cache flush was
refused still moves the version label, since the weights did change (see engine/generation/sglang_protocol.py
for the endpoints and their replies).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from os import PathLike, fspath
from typing import TYPE_CHECKING, Any

import aiohttp

from engine.generation.base import GenerationError, WeightSource
from engine.generation.http import JSON_HEADERS, Endpoint, dumps, loads, raise_for_status, unreachable
from engine.generation.sglang_protocol import (
    WEIGHTS_CHANGED_NOT_FLUSHED,
    serialize_named_tensors,
    tensor_buckets,
    version_of,
)

if TYPE_CHECKING:
    from engine.generation.sglang_client import SGLangConfig

log = logging.getLogger("engine.generation.sglang")


class _NotFlushed(GenerationError):
    """New weights are in, but the server kept refusing to flush the cache the old ones produced."""


class SGLangControl:
    """Admin calls and weight updates for one SGLangBackend. `session` and `endpoints` are the backend's (open
    only while it runs); `mark_down` takes a server out of its routing."""

    def __init__(
        self,
        config: SGLangConfig,
        *,
        session: Callable[[], aiohttp.ClientSession],
        endpoints: Callable[[], list[Endpoint]],
        mark_down: Callable[[Endpoint, str], None],
    ) -> None:
        self.config = config
        self._session = session
        self._endpoints = endpoints
        self._mark_down = mark_down
        self._backoff = config.backoff
        self._version = 0
        self._in_session = False
        self._resync: tuple[str, int] | None = None  # (directory, version) of the last update from disk
        self._weights_lock = asyncio.Lock()  # an update and a reload of a restarted server: one at a time
        self._skip: set[Endpoint] = set()  # servers the open weight-update session left out (unreachable)

    @property
    def version(self) -> int:
        """The weight version of the last update (0: the servers' base weights)."""
        return self._version

    async def catch_up(self, endpoint: Endpoint) -> int:
        """The weight version a server that came back serves, after loading the last update's directory into it
        when it lacks those weights and this process controls it."""
        reported = await self.server_version(endpoint)
        if reported != self._version and endpoint in self.controlled and self._resync is not None:
            await self._reload(endpoint)
            reported = await self.server_version(endpoint)
        return reported

    async def abort_rids(self, live: Sequence[tuple[str, Endpoint]]) -> None:
        """POST /abort_request for each (rid, server); failures are ignored (the sample ends either way)."""
        if not live:
            return
        await asyncio.gather(
            *(self._post(e.url, "/abort_request", {"rid": rid}) for rid, e in live), return_exceptions=True
        )

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

    async def server_version(self, endpoint: Endpoint) -> int:
        """The server's weight version (GET /model_info); its base weights ("default") count as version 0."""
        session, url = self._session(), f"{endpoint.url}/model_info"
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=self.config.connect_timeout_s)) as response:
            await raise_for_status(response, url)
            return version_of(loads(await response.read()).get("weight_version"), 0)

    @property
    def controlled(self) -> list[Endpoint]:
        """The servers this process sends weight updates, flushes and session calls to (see `control_rank`)."""
        rank, world = self.config.control_rank, self.config.control_world
        return [e for k, e in enumerate(self._endpoints()) if k % world == rank]  # type: ignore[operator]

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
        index = {id(e): k for k, e in enumerate(self._endpoints())}

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
        others = [e for e in self._endpoints() if e not in self.controlled]
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
        session, url = self._session(), f"{endpoint.url}/model_info"
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
            session = self._session()
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
        session = self._session()
        total = self.config.weight_update_timeout_s if weights else self.config.read_timeout_s
        timeout = aiohttp.ClientTimeout(total=total, connect=self.config.connect_timeout_s)
        headers = JSON_HEADERS | self._admin_headers()
        async with session.post(f"{url}{path}", data=dumps(body), headers=headers, timeout=timeout) as response:
            raw = await response.read()
            reply = loads(raw) if raw and response.content_type == "application/json" else {}
            if response.status >= 400 and not (isinstance(reply, dict) and "success" in reply):
                raise GenerationError(f"HTTP {response.status} from {url}{path}: {raw[:500].decode(errors='replace')}")
            return reply if isinstance(reply, dict) else {}
