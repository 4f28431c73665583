"""The sglang client against tests/engine/sglang_server.py, a protocol peer of SGLang 0.5.23's HTTP server.

Run: .venv/bin/pytest tests/engine/test_generation_sglang.py
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import sys
from pathlib import Path

import pytest
import torch

from engine.generation import GenerationError, SamplingParams, create_backend
from engine.generation.base import row_seed
from engine.generation.sglang_client import SGLANG_VERSION, SGLangBackend, SGLangConfig
from engine.generation.sglang_launch import LaunchConfig, server_command


def _load_peer_module():
    spec = importlib.util.spec_from_file_location("sglang_server", Path(__file__).with_name("sglang_server.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("sglang_server", module)
    spec.loader.exec_module(module)
    return module


peer_mod = _load_peer_module()
PROMPTS = [[11, 12, 13], [21, 22], [31, 32, 33, 34]]


@pytest.fixture
async def peer():
    server = peer_mod.SGLangPeer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def peer2():
    server = peer_mod.SGLangPeer()
    await server.start()
    yield server
    await server.stop()


def client(*urls: str, **options) -> SGLangBackend:
    return SGLangBackend(SGLangConfig(urls=urls, backoff_base_s=0.01, backoff_max_s=0.05, **options))


async def collect(backend, prompts, params, n=1):
    return sorted(
        [c async for c in backend.generate(prompts, params, n=n)], key=lambda c: (c.prompt_index, c.sample_index)
    )


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_pinned_version_matches_peer():
    assert SGLANG_VERSION == peer_mod.SGLANG_VERSION == "0.5.23"


@pytest.mark.parametrize("incremental", [False, True])
async def test_streaming_tokens_logprobs_and_finish_reasons(peer, incremental):
    peer.incremental = incremental
    params = SamplingParams(max_new_tokens=40, temperature=0.8, top_p=0.9, top_k=50, seed=5)
    async with client(peer.url) as backend:
        got = await collect(backend, PROMPTS, params, n=2)
    assert len(got) == 6
    for c in got:
        ids, lps, finish = peer_mod.expected_tokens(
            PROMPTS[c.prompt_index], max_new_tokens=40, seed=row_seed(5, c.prompt_index, c.sample_index)
        )
        assert list(c.token_ids) == ids and list(c.logprobs) == pytest.approx(lps)
        assert c.finish_reason == finish and c.error is None and c.weight_version == 0
        assert c.text == "".join(f"<{t}>" for t in ids)
        assert c.timings.submitted_s <= c.timings.first_token_s <= c.timings.finished_s
    sent = peer.generate_requests[0]
    assert sent["stream"] is True and sent["return_logprob"] is True
    assert sent["sampling_params"] | {"sampling_seed": 0} == {
        "max_new_tokens": 40,
        "temperature": 0.8,
        "top_p": 0.9,
        "top_k": 50,
        "sampling_seed": 0,
    }
    assert len({r["rid"] for r in peer.generate_requests}) == 6


async def test_stop_token_and_length(peer):
    ids, _, _ = peer_mod.expected_tokens(PROMPTS[0], max_new_tokens=30)
    stop = ids[3]
    async with client(peer.url) as backend:
        stopped = await collect(
            backend, [PROMPTS[0]], SamplingParams(max_new_tokens=30, temperature=0, stop_token_ids=(stop,))
        )
        cut = await collect(backend, [PROMPTS[0]], SamplingParams(max_new_tokens=3, temperature=0))
    assert stopped[0].finish_reason == "stop" and stopped[0].token_ids == tuple(ids[: ids.index(stop) + 1])
    assert cut[0].finish_reason == "length" and cut[0].token_ids == tuple(ids[:3])
    assert peer.generate_requests[0]["sampling_params"]["stop_token_ids"] == [stop]


async def test_abort_ends_streams_with_abort(peer):
    peer.token_delay_s = 0.02
    params = SamplingParams(max_new_tokens=500, seed=1)
    async with client(peer.url) as backend:
        stream = backend.generate(PROMPTS, params, n=2)
        first = asyncio.ensure_future(stream.__anext__())
        while peer.inflight < 6:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        await backend.abort()
        got = [await first] + [c async for c in stream]
    assert len(got) == 6 and {c.finish_reason for c in got} == {"abort"}
    assert all(c.error is None and 0 < len(c.token_ids) < 500 for c in got)
    assert sorted(peer.aborted) == sorted(r["rid"] for r in peer.generate_requests)


async def test_leaving_the_stream_aborts_the_rest(peer):
    peer.token_delay_s = 0.05  # the others need ~20 s to finish, so the abort comes first even on a loaded box
    ids, _, _ = peer_mod.expected_tokens(PROMPTS[0], max_new_tokens=400, seed=row_seed(0, 0, 0))
    params = SamplingParams(max_new_tokens=400, seed=0, stop_token_ids=(ids[2],))
    async with client(peer.url) as backend:
        arrived = []
        async for c in backend.generate(PROMPTS, params):
            arrived.append(c)
            break
        assert arrived[0].prompt_index == 0 and arrived[0].finish_reason == "stop"
        while peer.inflight:
            await asyncio.sleep(0.01)
    # The two samples still decoding were aborted on the server when the caller left the loop.
    assert len(peer.aborted) == 2


async def test_http_500_is_retried_then_reported(peer):
    peer.fail_next = 2
    async with client(peer.url, max_retries=3) as backend:
        ok = await collect(backend, [PROMPTS[0]], SamplingParams(max_new_tokens=5, seed=0))
        assert ok[0].error is None and len(peer.generate_requests) == 3
        peer.fail_next = 100
        bad = await collect(backend, [PROMPTS[0]], SamplingParams(max_new_tokens=5, seed=0))
    assert bad[0].failed and bad[0].finish_reason == "abort"
    assert "HTTP 500" in bad[0].error and "4 attempt(s)" in bad[0].error
    assert len(peer.generate_requests) == 3 + 4


async def test_connection_refused_fails_over_to_another_server(peer):
    dead = closed_port_url()
    async with client(dead, max_retries=1) as backend:
        got = await collect(backend, PROMPTS[:1], SamplingParams(max_new_tokens=4))
    assert got[0].failed and "cannot connect" in got[0].error
    async with client(dead, peer.url, max_retries=2) as backend:
        got = await collect(backend, PROMPTS, SamplingParams(max_new_tokens=4), n=2)
        assert backend.endpoints[0].failures >= 1
    assert all(c.error is None for c in got) and len(peer.generate_requests) == 6


async def test_server_slower_than_timeout(peer):
    peer.first_chunk_delay_s = 1.0
    async with client(peer.url, read_timeout_s=0.2, max_retries=1) as backend:
        got = await collect(backend, PROMPTS[:1], SamplingParams(max_new_tokens=4))
    assert got[0].failed and "timed out" in got[0].error
    assert len(peer.generate_requests) == 2
    # Each timed-out attempt was aborted on the server so it stops spending compute on it.
    assert sorted(peer.aborted) == sorted(r["rid"] for r in peer.generate_requests)
    peer.first_chunk_delay_s, peer.token_delay_s = 0.0, 0.05
    async with client(peer.url, read_timeout_s=3.0) as backend:
        slow_but_fine = await collect(backend, PROMPTS[:1], SamplingParams(max_new_tokens=4))
    assert slow_but_fine[0].error is None


async def test_partial_stream_is_never_silently_retried(peer):
    peer.break_after_chunks = 3
    async with client(peer.url, max_retries=3) as backend:
        got = await collect(backend, PROMPTS[:1], SamplingParams(max_new_tokens=20, seed=0))
    assert len(peer.generate_requests) == 1
    assert got[0].failed and got[0].finish_reason == "abort" and len(got[0].token_ids) == 3
    assert "after 3 streamed token(s)" in got[0].error


async def test_weight_updates(peer, peer2, tmp_path):
    params = SamplingParams(max_new_tokens=6, temperature=0)
    async with client(peer.url, peer2.url) as backend:
        before = await collect(backend, PROMPTS, params)
        assert await backend.update_weights(tmp_path) == 1
        after = await collect(backend, PROMPTS, params)
        with pytest.raises(GenerationError, match="not a directory"):
            await backend.update_weights(tmp_path / "missing")
        assert backend.weight_version == 1
        state = {"model.embed_tokens.weight": torch.ones(4, 2), "lm_head.weight": torch.zeros(4, 2)}
        assert await backend.update_weights(state) == 2
        await backend.init_weights_update_group(master_address="10.0.0.1", master_port=29600, world_size=3)
        version = await backend.update_weights_from_distributed(
            names=["lm_head.weight"], dtypes=["bfloat16"], shapes=[[4, 2]], version=9
        )
        await backend.destroy_weights_update_group()
        info = await backend.model_info()
    assert {c.weight_version for c in before} == {0} and {c.weight_version for c in after} == {1}
    for c in after:
        ids, _, _ = peer_mod.expected_tokens(PROMPTS[c.prompt_index], max_new_tokens=6, version="1")
        assert list(c.token_ids) == ids
    assert [b.token_ids for b in before] != [a.token_ids for a in after]
    for server, rank_offset in ((peer, 1), (peer2, 2)):
        paths = [p for p, _ in server.weight_updates]
        assert paths == [
            "/update_weights_from_disk",
            "/update_weights_from_tensor",
            "/init_weights_update_group",
            "/update_weights_from_distributed",
            "/destroy_weights_update_group",
        ]
        bodies = dict(server.weight_updates)
        assert bodies["/update_weights_from_disk"]["model_path"] == str(tmp_path)
        assert bodies["/update_weights_from_tensor"]["decoded"] == [
            [("model.embed_tokens.weight", (4, 2)), ("lm_head.weight", (4, 2))]
        ]
        assert bodies["/init_weights_update_group"]["rank_offset"] == rank_offset
        assert bodies["/update_weights_from_distributed"]["shapes"] == [[4, 2]]
        assert server.weight_version == "9"
    assert version == 9 and info["weight_version"] == "9" and info["model_path"] == str(tmp_path)


async def test_two_servers_least_loaded_routing(peer, peer2):
    peer.token_delay_s, peer2.token_delay_s = 0.002, 0.03
    async with client(peer.url, peer2.url, max_inflight_per_server=2) as backend:
        got = await collect(
            backend, [[i, i + 1] for i in range(24)], SamplingParams(max_new_tokens=10, temperature=1.0)
        )
    assert len(got) == 24 and all(c.error is None for c in got)
    fast, slow = len(peer.generate_requests), len(peer2.generate_requests)
    assert fast + slow == 24 and slow >= 1
    # Round-robin would split 12/12; the least-loaded router sends more to the server that frees up first.
    assert fast > slow
    # Four client slots and least-loaded picks: neither server ever holds more than its share of two.
    assert peer.max_inflight == 2 and peer2.max_inflight == 2


async def test_health_and_registry(peer):
    peer.starting = True
    backend = create_backend("sglang", {"urls": [peer.url, closed_port_url()], "connect_timeout_s": 1.0})
    async with backend:
        assert list((await backend.health()).values()) == [False, False]
        with pytest.raises(GenerationError, match="not healthy after"):
            await backend.wait_healthy(0.3)
        peer.starting = False
        assert list((await backend.health()).values()) == [True, False]
    with pytest.raises(ValueError, match="valid options"):
        create_backend("sglang", {"url": "http://x"})
    with pytest.raises(GenerationError, match="closed"):
        await backend.start()


def free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two consecutive free ports")


def test_launch_command_follows_sglang_flags():
    config = LaunchConfig(
        model_path="/ckpt/step_10",
        num_servers=2,
        base_port=31000,
        tp_size=2,
        base_gpu_id=4,
        mem_fraction_static=0.7,
        extra_args=("--enable-metrics",),
    )
    assert server_command(config, 1)[1:] == [
        "-m", "sglang.launch_server", "--model-path", "/ckpt/step_10", "--host", "127.0.0.1", "--port", "31001",
        "--tp-size", "2", "--base-gpu-id", "6", "--mem-fraction-static", "0.7", "--enable-metrics",
    ]  # fmt: skip


async def test_launched_servers_are_supervised(tmp_path):
    port = free_port_pair()
    peer_script = str(Path(__file__).with_name("sglang_server.py"))
    launch = {
        "model_path": "tiny",
        "num_servers": 2,
        "base_port": port,
        "entry": [peer_script],
        "log_dir": str(tmp_path),
        "startup_timeout_s": 60,
        "stop_grace_s": 5,
    }
    backend = create_backend("sglang", {"launch": launch})
    async with backend:
        processes = list(backend._launched.processes)
        assert [e.url for e in backend.endpoints] == [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
        got = await collect(backend, PROMPTS, SamplingParams(max_new_tokens=5, seed=0), n=2)
        assert all(c.error is None for c in got) and len(got) == 6
        assert (await backend.model_info())["model_path"] == "tiny"
    assert all(p.returncode is not None for p in processes)
    crashing = launch | {"entry": ["-c", "import sys; print('bad flag'); sys.exit(3)"], "base_port": free_port_pair()}
    with pytest.raises(GenerationError, match="exited during start-up"):
        async with create_backend("sglang", {"launch": crashing}):
            pass
