"""HTTP plumbing shared by the remote backends (sglang, openai): their lifecycle, JSON codec, SSE events,
retries, routing, status probes.

Nothing here knows a server's schema; `sglang_client` and `openai_compat` do.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import json
import random
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp

from engine.generation.base import BackendUnavailable, GenerationError

try:  # orjson is optional: it parses the long cumulative chunks SGLang streams faster than json.
    import orjson

    def loads(data: bytes | str) -> Any:
        return orjson.loads(data)

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

except ImportError:  # pragma: no cover - exercised only where orjson is missing

    def loads(data: bytes | str) -> Any:
        return json.loads(data)

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj).encode()


JSON_HEADERS = {"Content-Type": "application/json"}
SSE_DONE = b"[DONE]"


class RetryableHTTPError(Exception):
    """A failure worth retrying on the same or another server: connection refused/reset, 5xx, 429, timeout."""


class FatalHTTPError(Exception):
    """A failure retries cannot fix: 4xx (bad request, auth), an error object in the stream."""


@dataclass(frozen=True, kw_only=True)
class HTTPOptions:
    """Timeouts and retries, the options every remote backend's config starts with."""

    connect_timeout_s: float = 10.0
    # Longest silence allowed before the first chunk and between two chunks of one stream.
    read_timeout_s: float = 300.0
    # Retries per request after the first attempt (connection errors, timeouts, 5xx, 429 only).
    max_retries: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    # A server whose connection failed (killed, restarting) gets no requests until it answers its health check
    # again (and serves the current weights). When every server is down, requests wait this long from the
    # moment the last one went down, then generation fails with BackendUnavailable.
    server_down_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if not self.server_down_timeout_s > 0:
            raise ValueError(f"server_down_timeout_s must be > 0, got {self.server_down_timeout_s}")

    @property
    def backoff(self) -> Backoff:
        return Backoff(base_s=self.backoff_base_s, max_s=self.backoff_max_s)

    def stream_timeout(self) -> aiohttp.ClientTimeout:
        """No total limit (a long completion streams for minutes); limits on connecting and on silence."""
        return aiohttp.ClientTimeout(total=None, connect=self.connect_timeout_s, sock_read=self.read_timeout_s)


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Exponential backoff with full jitter: attempt k waits uniform(0, min(max_s, base_s * 2**k))."""

    base_s: float = 0.5
    max_s: float = 8.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0.0, min(self.max_s, self.base_s * (2**attempt)))


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The `data:` payloads of a server-sent-event stream, `[DONE]` included.

    Splits the byte stream itself: aiohttp's line reader refuses lines over its buffer size, and a
    cumulative SGLang chunk for a long completion with log-probs runs to hundreds of KiB.
    """
    buffer = b""
    async for piece in response.content.iter_any():
        buffer += piece
        while True:
            cut = _event_end(buffer)
            if cut is None:
                break
            event, buffer = buffer[: cut[0]], buffer[cut[1] :]
            data = _event_data(event)
            if data is not None:
                yield data
    data = _event_data(buffer)
    if data is not None:
        yield data


def _event_end(buffer: bytes) -> tuple[int, int] | None:
    for sep in (b"\n\n", b"\r\n\r\n"):
        at = buffer.find(sep)
        if at != -1:
            return at, at + len(sep)
    return None


def _event_data(event: bytes) -> bytes | None:
    lines = [line[5:].lstrip() for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


async def raise_for_status(response: aiohttp.ClientResponse, url: str) -> None:
    """Turn an HTTP error status into Retryable/Fatal with the server's own message."""
    if response.status < 400:
        return
    body = (await response.text())[:500]
    message = f"HTTP {response.status} from {url}: {body}"
    if response.status >= 500 or response.status == 429:
        raise RetryableHTTPError(message)
    raise FatalHTTPError(message)


def unreachable(exc: BaseException) -> bool:
    """A failure of the connection itself: refused, reset, closed mid-reply (the server died or restarts), as
    opposed to an HTTP error or a timeout, which a live server gives."""
    return isinstance(exc, aiohttp.ClientOSError | aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError)


def classify(exc: BaseException, url: str) -> RetryableHTTPError | FatalHTTPError | None:
    """Map transport exceptions to our two kinds; None for anything that is not a transport failure."""
    if isinstance(exc, RetryableHTTPError | FatalHTTPError):
        return exc
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return RetryableHTTPError(f"timed out waiting for {url} ({type(exc).__name__})")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return RetryableHTTPError(f"cannot connect to {url}: {exc.os_error or exc}")
    if isinstance(exc, aiohttp.ClientError):
        return RetryableHTTPError(f"connection to {url} failed: {type(exc).__name__}: {exc}")
    return None


class Endpoint:
    """One server, its in-flight count (the load the router balances) and whether it is down."""

    def __init__(self, url: str, index: int) -> None:
        self.url = url.rstrip("/")
        self.index = index
        self.inflight = 0
        self.failures = 0
        self.down: str | None = None  # why the router skips it (unreachable, stale weights); None: usable
        self.down_since = 0.0
        self.downs = 0  # times it went down


class LeastLoadedRouter:
    """Picks the endpoint with the fewest in-flight requests; ties go round-robin.

    A server that just failed is avoided by the next attempt of the same sample when another exists.
    """

    def __init__(self, urls: tuple[str, ...]) -> None:
        if not urls:
            raise ValueError("at least one server URL is required")
        self.endpoints = [Endpoint(u, i) for i, u in enumerate(urls)]
        self._turn = itertools.count()
        self._up = asyncio.Event()  # replaced after each set: set once per server coming back

    def pick(self, avoid: Endpoint | None = None) -> Endpoint | None:
        """The least loaded usable endpoint (not `avoid` when another is usable); None when every one is down."""
        usable = [e for e in self.endpoints if e.down is None]
        if not usable:
            return None
        pool = [e for e in usable if e is not avoid] or usable
        low = min(e.inflight for e in pool)
        tied = [e for e in pool if e.inflight == low]
        return tied[next(self._turn) % len(tied)]

    def mark_down(self, endpoint: Endpoint, reason: str) -> bool:
        """Take `endpoint` out of routing; True when it was usable until now."""
        was_up = endpoint.down is None
        endpoint.down = reason
        if was_up:
            endpoint.down_since = time.monotonic()
            endpoint.downs += 1
        return was_up

    def mark_up(self, endpoint: Endpoint) -> None:
        endpoint.down = None
        self._up.set()
        self._up = asyncio.Event()

    async def wait_usable(self, timeout_s: float, *, what: str) -> None:
        """Return once some endpoint is usable; raise BackendUnavailable when every one has been down for
        `timeout_s` (counted from the moment the last of them went down)."""
        while all(e.down is not None for e in self.endpoints):
            left = max(e.down_since for e in self.endpoints) + timeout_s - time.monotonic()
            if left <= 0:
                down = "; ".join(f"{e.url}: {e.down}" for e in self.endpoints)
                raise BackendUnavailable(
                    f"no {what} server has been usable for {timeout_s:g} s (server_down_timeout_s): {down}; "
                    "restart the server(s) or raise server_down_timeout_s"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._up.wait(), left)


async def get_status(session: aiohttp.ClientSession, url: str, *, timeout_s: float) -> int | None:
    """GET `url`: the HTTP status it answers with, or None when no answer came (refused, reset, timed out)."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


class HTTPBackend(abc.ABC):
    """The lifecycle of a remote backend: `async with` (or `start()`) opens one aiohttp session, `close()` ends
    it for good (a closed backend refuses to reopen: build a new one), and the tasks it runs in the background
    are awaited on close. Subclasses add their servers in `_on_start` and release them in `_on_close`."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._background: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Any:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the session and run `_on_start`; a start that fails closes what it opened (no leaked servers)."""
        if self._closed:
            raise GenerationError(f"this {self.name} backend was closed; create a new one")
        if self._session is not None:
            return
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), headers=self._headers())
        try:
            await self._on_start()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        self._closed = True
        try:
            await self.abort()
        finally:
            if self._background:
                await asyncio.gather(*self._background, return_exceptions=True)
            session, self._session = self._session, None
            if session is not None:
                await session.close()
            await self._on_close()

    @abc.abstractmethod
    async def abort(self) -> None:
        """Abort every in-flight request (the session is still open when `close` calls this)."""

    def _headers(self) -> Mapping[str, str]:
        """Headers of every request (authentication)."""
        return {}

    async def _on_start(self) -> None:  # noqa: B027 (an optional hook: most backends have nothing to add)
        """Runs once the session is open."""

    async def _on_close(self) -> None:  # noqa: B027 (an optional hook)
        """Runs once the session is closed."""

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise GenerationError(f"the {self.name} backend is not started: use `async with` or `await start()`")
        return self._session

    @contextlib.asynccontextmanager
    async def _probe_session(self) -> AsyncIterator[aiohttp.ClientSession]:
        """The open session, or a short-lived one: health checks also run before `start` (nothing launched)."""
        if self._session is not None:
            yield self._session
            return
        async with aiohttp.ClientSession(headers=self._headers()) as session:
            yield session

    def _in_background(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
