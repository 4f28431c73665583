"""Bytes per second of the sglang client's tensor weight sync (/update_weights_from_tensor in buckets inside one
begin/end session) on CPU, against the protocol peer in its own process.

Each update sends a fresh state dict (as the learner hands one over each step), so the time includes moving
the tensors into shared memory, pickling the handles, the HTTP calls, and the peer opening and unpickling
every tensor. Not included: copying the tensors into a model, which a real server does on its GPU.

Run: .venv/bin/python bench/sglang_tensor_sync_bench.py [--mib 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.generation.sglang_client import SGLangBackend, SGLangConfig  # noqa: E402

PEER = ROOT / "tests" / "engine" / "sglang_server.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="state dict size (float32 tensors of 4 MiB)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--buckets-mib", type=float, nargs="+", default=[16, 64, 512])
    args = parser.parse_args()
    port = free_port()
    server = await asyncio.create_subprocess_exec(sys.executable, str(PEER), "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    template = {f"layers.{i}.weight": torch.randn(1024, 1024) for i in range(args.mib // 4)}
    nbytes = sum(t.numel() * t.element_size() for t in template.values())
    rows = []
    try:
        for bucket in args.buckets_mib:
            config = SGLangConfig(urls=(url,), wait_healthy_s=30, tensor_bucket_mb=bucket)
            async with SGLangBackend(config) as backend:
                times = []
                for _ in range(args.repeats):
                    fresh = {name: t.clone() for name, t in template.items()}
                    started = time.monotonic()
                    await backend.update_weights(fresh)
                    times.append(time.monotonic() - started)
                    del fresh
            median = sorted(times)[len(times) // 2]
            rows.append((bucket, median, min(times), max(times)))
            rate = nbytes / median / 2**30
            print(f"bucket {bucket:g} MiB: {nbytes / 2**20:.0f} MiB in {median:.3f} s -> {rate:.2f} GiB/s")
    finally:
        server.terminate()
        await server.wait()
    print(f"\n| bucket | {nbytes / 2**20:.0f} MiB state dict, median of {args.repeats} (min-max) | GiB/s |")
    print("|---:|---:|---:|")
    for bucket, median, low, high in rows:
        print(f"| {bucket:g} MiB | {median:.3f} s ({low:.3f}-{high:.3f}) | {nbytes / median / 2**30:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
