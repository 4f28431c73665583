"""HTTP plumbing of the remote backends: SSE splitting, backoff bounds, least-loaded routing.

Run: .venv/bin/pytest tests/engine/test_generation_http.py
"""

from __future__ import annotations

import random

import pytest

from engine.generation.http import Backoff, LeastLoadedRouter, dumps, loads, sse_events


class _Content:
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def iter_any(self):
        for piece in self.pieces:
            yield piece


class _Response:
    def __init__(self, pieces: list[bytes]) -> None:
        self.content = _Content(pieces)


def _split_randomly(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), 40))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


async def test_sse_events_survive_any_split_and_huge_events():
    big = {"output_ids": list(range(60_000)), "meta_info": {"finish_reason": None}}  # ~400 KB on one line
    events = [{"output_ids": [1]}, big, {"meta_info": {"finish_reason": {"type": "length", "length": 2}}}]
    stream = b"".join(b"data: " + dumps(e) + b"\n\n" for e in events) + b": keep-alive comment\n\ndata: [DONE]\n\n"
    rng = random.Random(0)
    for _ in range(5):
        got = [data async for data in sse_events(_Response(_split_randomly(stream, rng)))]
        assert [loads(d) for d in got[:-1]] == events and got[-1] == b"[DONE]"
    crlf = stream.replace(b"\n\n", b"\r\n\r\n")
    got = [data async for data in sse_events(_Response(_split_randomly(crlf, rng)))]
    assert len(got) == 4 and loads(got[1]) == big


def test_backoff_is_bounded_exponential_with_jitter():
    backoff = Backoff(base_s=0.5, max_s=4.0)
    random.seed(0)
    for attempt, cap in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0)]:
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in delays) and max(delays) > cap * 0.8


def test_least_loaded_router_balances_and_avoids_the_failed_server():
    router = LeastLoadedRouter(("http://a/", "http://b", "http://c"))
    assert [e.url for e in router.endpoints] == ["http://a", "http://b", "http://c"]
    picked = []
    for _ in range(6):
        endpoint = router.pick()
        endpoint.inflight += 1
        picked.append(endpoint.url)
    assert sorted(picked) == ["http://a"] * 2 + ["http://b"] * 2 + ["http://c"] * 2
    a, b, c = router.endpoints
    b.inflight -= 2
    assert router.pick() is b
    assert router.pick(avoid=b) in (a, c)
    only = LeastLoadedRouter(("http://solo",))
    assert only.pick(avoid=only.endpoints[0]) is only.endpoints[0]
    with pytest.raises(ValueError, match="at least one"):
        LeastLoadedRouter(())
