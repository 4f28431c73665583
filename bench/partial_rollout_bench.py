"""How long a weight update holds the learner when long samples are decoding, with and without partial rollouts.

Against the SGLang protocol peer (tests/engine/sglang_server.py, in this process, `--token-delay-s` per token):
G samples of N tokens start, and once each has decoded a quarter of them the learner's update comes. Without
partial rollouts the update waits for every sample (the server's writer lock); with them
(`engine.rollout.partial.Resumer`) it aborts them, loads, and the samples resume on the new weights. Reported per
arm: the update's wall time and the time until every sample is whole. Arms alternate, `--repeats` times each.

    .venv/bin/python bench/partial_rollout_bench.py --samples 8 --tokens 400 --token-delay-s 0.01
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.generation import SamplingParams  # noqa: E402
from engine.generation.sglang_client import SGLangBackend, SGLangConfig  # noqa: E402
from engine.rollout.partial import Resumer  # noqa: E402


def _peer_module():
    spec = importlib.util.spec_from_file_location("sglang_server", REPO / "tests/engine/sglang_server.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["sglang_server"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


async def one(partial: bool, args: argparse.Namespace, weights: Path, version: int) -> tuple[float, float]:
    peer = _peer_module().SGLangPeer()
    await peer.start()
    peer.token_delay_s = args.token_delay_s
    try:
        async with SGLangBackend(SGLangConfig(urls=(peer.url,))) as backend:
            resumer = Resumer(backend)
            params = SamplingParams(max_new_tokens=args.tokens, seed=version, stop_token_ids=())
            started = time.monotonic()
            stream = backend.generate([[5, 6, 7]], params, n=args.samples)
            first = asyncio.ensure_future(stream.__anext__())
            while len(peer.decoded) < args.samples or min(peer.decoded.values()) < args.tokens // 4:
                await asyncio.sleep(0.005)
            t0 = time.monotonic()
            if partial:
                update = asyncio.create_task(resumer.update_weights(weights, version=version))
            else:
                update = asyncio.create_task(backend.update_weights(weights, version=version))
            got = [await first] + [c async for c in stream]
            await update
            update_s = time.monotonic() - t0
            if partial:
                got = await asyncio.gather(*(resumer.finish([5, 6, 7], c, params) for c in got))
            assert all(not c.failed for c in got), [c.error for c in got]
            return update_s, time.monotonic() - started
    finally:
        await peer.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--token-delay-s", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as weights:
        for r in range(args.repeats):
            for partial in (False, True):  # alternating: both arms see the same load
                results[partial].append(await one(partial, args, Path(weights), r + 1))
    for partial, runs in results.items():
        update = statistics.median(u for u, _ in runs)
        whole = statistics.median(w for _, w in runs)
        name = "partial rollouts" if partial else "wait (default)  "
        print(f"{name}: update holds the learner {update:.3f} s, all samples whole after {whole:.2f} s (medians)")


if __name__ == "__main__":
    asyncio.run(main())
