"""Client CPU per long sample for each way the sglang client can receive it, against the protocol peer.

The peer (tests/engine/sglang_server.py) runs in its own process, so only the client's parsing and
book-keeping is timed: the client process's CPU time (user + system, `time.process_time`) around one
`generate` of `--samples` samples of exactly `--tokens` tokens each (the peer's EOS is rare and no stop ids
are sent), and the bytes the server sent. Modes:

- cumulative: SGLang's default stream, each chunk repeats every id, log-prob and the text so far (O(T^2) bytes);
- cumulative, stream_interval k: the same, a chunk every k tokens (O(T^2 / k));
- incremental: the server's --incremental-streaming-output, deltas only (O(T) bytes, T chunks);
- non-streaming: `stream: false`, one JSON reply when the sample ends (O(T) bytes, one parse).

Run: .venv/bin/python bench/sglang_stream_bench.py [--tokens 8192] [--samples 2]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.generation import SamplingParams, sglang_client  # noqa: E402
from engine.generation.sglang_client import SGLangBackend, SGLangConfig  # noqa: E402

PEER = ROOT / "tests" / "engine" / "sglang_server.py"
SSE_EVENTS = sglang_client.sse_events
MODES = [
    ("cumulative", False, {}),
    ("cumulative, stream_interval 8", False, {"stream_interval": 8}),
    ("cumulative, stream_interval 64", False, {"stream_interval": 64}),
    ("incremental", True, {}),
    ("non-streaming", False, {"stream": False}),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_up(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(f"{url}/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"peer at {url} did not start")


class ByteCounter(aiohttp.TraceConfig):
    """Bytes of replies read whole (trace hook) and of event streams (the client's `sse_events`, wrapped)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0
        self.on_response_chunk_received.append(self._chunk)
        counter = self

        class Content:
            def __init__(self, content) -> None:
                self.content = content

            async def iter_any(self):
                async for piece in self.content.iter_any():
                    counter.bytes += len(piece)
                    yield piece

        class Response:
            def __init__(self, response) -> None:
                self.content = Content(response.content)

        sglang_client.sse_events = lambda response: SSE_EVENTS(Response(response))

    async def _chunk(self, session, ctx, params) -> None:
        self.bytes += len(params.chunk)


async def measure(url: str, options: dict, tokens: int, samples: int) -> tuple[float, float, int]:
    counter = ByteCounter()
    backend = SGLangBackend(SGLangConfig(urls=(url,), read_timeout_s=600, **options))
    await backend.start()
    # Count the bytes on the backend's own session.
    backend._session._trace_configs.append(counter)  # type: ignore[union-attr]
    counter.freeze()
    params = SamplingParams(max_new_tokens=tokens, temperature=1.0, seed=0)
    prompts = [[7, 8, 9, i] for i in range(samples)]
    cpu0, wall0 = time.process_time(), time.monotonic()
    got = [c async for c in backend.generate(prompts, params)]
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    await backend.close()
    if any(len(c.token_ids) != tokens or c.failed for c in got):
        raise RuntimeError(f"a sample ended early or failed: {[(len(c.token_ids), c.error) for c in got]}")
    return cpu / samples, wall, counter.bytes // samples


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--samples", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for name, incremental, options in MODES:
        port = free_port()
        cmd = [sys.executable, str(PEER), "--port", str(port)] + (
            ["--incremental-streaming-output"] if incremental else []
        )
        server = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            await wait_up(url)
            cpu, wall, nbytes = await measure(url, options, args.tokens, args.samples)
        finally:
            server.terminate()
            server.wait()
        rows.append((name, cpu, wall, nbytes))
        print(f"{name:32s} client CPU {cpu * 1000:9.1f} ms/sample  wall {wall:6.2f} s  {nbytes / 1e6:9.2f} MB/sample")
    print(f"\n| mode ({args.tokens} tokens, {args.samples} samples) | client CPU per sample | bytes per sample |")
    print("|---|---:|---:|")
    for name, cpu, _, nbytes in rows:
        print(f"| {name} | {cpu * 1000:.1f} ms | {nbytes / 1e6:.2f} MB |")


if __name__ == "__main__":
    asyncio.run(main())
