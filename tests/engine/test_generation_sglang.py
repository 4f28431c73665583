"""The sglang client against tests/engine/sglang_server.py, a protocol peer of SGLang 0.5.23's HTTP server.

Run: .venv/bin/pytest tests/engine/test_generation_sglang.py
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import sys
from pathlib import Path

import pytest
import sglang_server as peer_mod
import torch

from engine.generation import BackendUnavailable, GenerationError, SamplingParams, create_backend
from engine.generation.base import row_seed
from engine.generation.sglang_client import SGLangBackend, SGLangConfig
from engine.generation.sglang_launch import LaunchConfig, server_command
from engine.generation.sglang_protocol import SGLANG_VERSION, tensor_buckets

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
    async with client(peer.url, stream=True) as backend:
        got = await collect(backend, PROMPTS, params, n=2)
    assert len(got) == 6
    for c in got:
        ids, lps, finish = peer_mod.expected_tokens(
            PROMPTS[c.prompt_index],
            max_new_tokens=40,
            seed=row_seed(5, c.prompt_index, c.sample_index),
            temperature=0.8,
            top_p=0.9,
            top_k=50,
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
    ids, _, _ = peer_mod.expected_tokens(PROMPTS[0], max_new_tokens=30, temperature=0)
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


async def test_no_rid_is_the_prefix_of_another_so_an_abort_hits_one_attempt(peer):
    """SGLang's scheduler aborts every request whose rid starts with the aborted one: attempt 1's rid must not be
    the start of attempt 10's, nor one sample's of another's."""
    peer.fail_next = 10  # one sample's attempts 0-9 fail: attempt 10 gets through
    async with client(peer.url, max_retries=10) as backend:
        got = await collect(backend, PROMPTS[:1], SamplingParams(max_new_tokens=3, seed=0))
        assert got[0].error is None
        await collect(backend, PROMPTS * 4, SamplingParams(max_new_tokens=3, seed=0), n=4)
    rids = sorted(r["rid"] for r in peer.generate_requests)
    assert len(rids) == 11 + 48 and len(set(rids)) == len(rids)
    # In sorted order, a rid that starts others sorts right before one of them.
    assert not [(a, b) for a, b in itertools.pairwise(rids) if b.startswith(a)]


async def test_connection_refused_fails_over_to_another_server(peer):
    dead = closed_port_url()
    # The only server down: requests wait for it server_down_timeout_s, then generation stops (no hang, one line).
    async with client(dead, max_retries=1, server_down_timeout_s=0.3) as backend:
        with pytest.raises(BackendUnavailable, match=r"usable for 0.3 s \(server_down_timeout_s\).*cannot connect"):
            await collect(backend, PROMPTS[:1], SamplingParams(max_new_tokens=4))
    async with client(dead, peer.url, max_retries=2) as backend:
        got = await collect(backend, PROMPTS, SamplingParams(max_new_tokens=4), n=2)
        assert backend.endpoints[0].failures >= 1
    assert all(c.error is None for c in got) and len(peer.generate_requests) == 6


async def test_server_slower_than_timeout(peer):
    peer.first_chunk_delay_s = 1.0
    async with client(peer.url, stream=True, read_timeout_s=0.2, max_retries=1) as backend:
        got = await collect(backend, PROMPTS[:1], SamplingParams(max_new_tokens=4))
    assert got[0].failed and "timed out" in got[0].error
    assert len(peer.generate_requests) == 2
    # Each timed-out attempt was aborted on the server so it stops spending compute on it.
    assert sorted(peer.aborted) == sorted(r["rid"] for r in peer.generate_requests)
    peer.first_chunk_delay_s, peer.token_delay_s = 0.0, 0.05
    async with client(peer.url, stream=True, read_timeout_s=3.0) as backend:
        slow_but_fine = await collect(backend, PROMPTS[:1], SamplingParams(max_new_tokens=4))
    assert slow_but_fine[0].error is None


async def test_partial_stream_is_never_silently_retried(peer):
    peer.break_after_chunks = 3
    async with client(peer.url, stream=True, max_retries=3) as backend:
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
        await backend.control.init_weights_update_group(master_address="10.0.0.1", master_port=29600, world_size=3)
        version = await backend.control.update_weights_from_distributed(
            names=["lm_head.weight"], dtypes=["bfloat16"], shapes=[[4, 2]], version=9
        )
        await backend.control.destroy_weights_update_group()
        info = await backend.model_info()
    assert {c.weight_version for c in before} == {0} and {c.weight_version for c in after} == {1}
    for c in after:
        ids, _, _ = peer_mod.expected_tokens(PROMPTS[c.prompt_index], max_new_tokens=6, version="1", temperature=0)
        assert list(c.token_ids) == ids
    assert [b.token_ids for b in before] != [a.token_ids for a in after]
    for server, rank_offset in ((peer, 1), (peer2, 2)):
        paths = [p for p, _ in server.weight_updates]
        # Tensor and distributed updates sit inside a begin/end session (SGLang 0.5.23 refuses them outside).
        assert paths == [
            "/update_weights_from_disk",
            "/begin_weight_update",
            "/update_weights_from_tensor",
            "/end_weight_update",
            "/init_weights_update_group",
            "/begin_weight_update",
            "/update_weights_from_distributed",
            "/end_weight_update",
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
    backend = create_backend("sglang", {"launch": launch, "control_rank": 0, "control_world": 2})
    # Another process of the node (control rank 1) launches nothing and waits for rank 0's servers.
    other = create_backend("sglang", {"launch": launch, "control_rank": 1, "control_world": 2})
    async with asyncio.timeout(60):
        await asyncio.gather(backend.start(), other.start())
    async with backend, other:
        processes = list(backend._launched.processes)
        assert [e.url for e in backend.endpoints] == [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
        assert other._launched is None and [e.url for e in other.endpoints] == [e.url for e in backend.endpoints]
        got = await collect(backend, PROMPTS, SamplingParams(max_new_tokens=5, seed=0), n=2)
        got += await collect(other, PROMPTS, SamplingParams(max_new_tokens=5, seed=0), n=2)
        assert all(c.error is None for c in got) and len(got) == 12
        assert (await backend.model_info())["model_path"] == "tiny"
    assert all(p.returncode is not None for p in processes)
    crashing = launch | {"entry": ["-c", "import sys; print('bad flag'); sys.exit(3)"], "base_port": free_port_pair()}
    with pytest.raises(GenerationError, match="exited during start-up"):
        async with create_backend("sglang", {"launch": crashing}):
            pass


# ----- SGLang 0.5.23 behaviours the peer follows (issue #16); each test failed on the client before it -----


async def test_refused_flush_after_update_still_moves_the_version(peer, tmp_path):
    """SGLang answers success: false when the weights changed but the cache flush was refused, and leaves its
    version label at the old one. The client sets the label, retries the flush and keeps its own version."""
    peer.refuse_flush = 1
    async with client(peer.url) as backend:
        assert await backend.update_weights(tmp_path, version=1) == 1
        got = await collect(backend, PROMPTS[:1], SamplingParams(max_new_tokens=4, temperature=0))
        assert backend.weight_version == 1 and peer.weight_version == "1"
        assert got[0].weight_version == 1
        ids, _, _ = peer_mod.expected_tokens(PROMPTS[0], max_new_tokens=4, version="1", temperature=0)
        assert list(got[0].token_ids) == ids
        peer.refuse_flush = 10**6
        refusing = SGLangBackend(SGLangConfig(urls=(peer.url,), flush_retry_s=0.2, backoff_base_s=0.01))
        async with refusing:
            with pytest.raises(GenerationError, match=r"weights updated, but .*refused /flush_cache"):
                await refusing.update_weights(tmp_path, version=2)
            assert refusing.weight_version == 2 and peer.weight_version == "2" and peer.weights == "2"


async def test_all_samples_of_a_prompt_go_to_one_server(peer, peer2):
    prompts = [[i, i + 1, i + 2] for i in range(6)]
    async with client(peer.url, peer2.url) as backend:
        got = await collect(backend, prompts, SamplingParams(max_new_tokens=3, seed=0), n=4)
    assert len(got) == 24 and not any(c.failed for c in got)
    servers_of = {}
    for server in (peer, peer2):
        for body in server.generate_requests:
            servers_of.setdefault(body["rid"].split("-")[1], set()).add(server.url)
    assert len(servers_of) == 6 and all(len(s) == 1 for s in servers_of.values())
    assert peer.generate_requests and peer2.generate_requests  # the groups are still spread


def test_each_launched_server_has_its_own_seed():
    config = LaunchConfig(model_path="m", num_servers=3, random_seed=7)
    seeds = [cmd[cmd.index("--random-seed") + 1] for cmd in (server_command(config, k) for k in range(3))]
    assert seeds == ["7", "8", "9"]
    assert "--random-seed" not in server_command(LaunchConfig(model_path="m"), 0)


async def test_incremental_abort_chunk_does_not_repeat_tokens(peer):
    """With --incremental-streaming-output SGLang's abort chunk repeats the last token and every log-prob (the
    tokenizer's abort handler: a request retracted to the waiting queue)."""
    peer.incremental, peer.token_delay_s, peer.abort_as_queued = True, 0.01, True
    async with client(peer.url, stream=True) as backend:
        stream = backend.generate(PROMPTS, SamplingParams(max_new_tokens=400, seed=2, temperature=0.9))
        first = asyncio.ensure_future(stream.__anext__())
        while peer.inflight < 3 or min(len(peer.chunks), 1) == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        await backend.abort()
        got = [await first] + [c async for c in stream]
    assert {c.finish_reason for c in got} == {"abort"}
    for c in got:
        ids, lps, _ = peer_mod.expected_tokens(
            PROMPTS[c.prompt_index], max_new_tokens=400, seed=row_seed(2, c.prompt_index, 0), temperature=0.9
        )
        n = len(c.token_ids)
        assert n > 0 and list(c.token_ids) == ids[:n] and list(c.logprobs) == pytest.approx(lps[:n])
        assert c.text == "".join(f"<{t}>" for t in ids[:n])


async def test_logprobs_are_of_the_temperature_scaled_distribution(peer):
    """SGLang's default output_token_logprobs: log_softmax(logits / T) before top-k/top-p, at T = 0.7."""
    async with client(peer.url) as backend:
        got = await collect(backend, PROMPTS[:1], SamplingParams(max_new_tokens=8, temperature=0.7, top_k=5, seed=1))
    for t, (token, lp) in enumerate(zip(got[0].token_ids, got[0].logprobs, strict=True)):
        logits = peer_mod.logits_at(PROMPTS[0], "default", t)
        assert lp == pytest.approx(float(peer_mod.log_softmax(logits / 0.7)[token]), abs=1e-9)
        assert lp != pytest.approx(float(peer_mod.log_softmax(logits)[token]), abs=1e-3)


def test_launcher_never_passes_return_original_logprob():
    from engine.generation.sglang_launch import server_env

    env = server_env({"PATH": "/bin", "SGLANG_RETURN_ORIGINAL_LOGPROB": "1"})
    assert env == {"PATH": "/bin"}


async def test_admin_key_on_weight_and_abort_endpoints(peer, tmp_path):
    peer.api_key, peer.admin_api_key = "user", "admin"
    async with client(peer.url, api_key="user") as backend:
        assert not (await collect(backend, PROMPTS[:1], SamplingParams(max_new_tokens=3)))[0].failed
        with pytest.raises(GenerationError, match="HTTP 401"):
            await backend.update_weights(tmp_path)
        assert (await backend.health()) == {peer.url: True}  # /health never needs a key
    async with client(peer.url, api_key="user", admin_api_key="admin") as backend:
        assert await backend.update_weights(tmp_path) == 1
        peer.token_delay_s = 0.02
        stream = backend.generate(PROMPTS[:1], SamplingParams(max_new_tokens=300))
        first = asyncio.ensure_future(stream.__anext__())
        while not peer.inflight:
            await asyncio.sleep(0.01)
        await backend.abort()
        assert (await first).finish_reason == "abort" and len(peer.aborted) == 1


async def test_weight_update_waits_for_requests_and_health_is_503_meanwhile(peer, tmp_path):
    """SGLang's writer lock: an update waits for the requests in flight, new requests wait for the update, and
    /health answers 503 while the update holds the lock."""
    peer.token_delay_s, peer.update_delay_s = 0.01, 0.5
    async with client(peer.url, read_timeout_s=5.0) as backend:
        running = asyncio.ensure_future(collect(backend, PROMPTS[:1], SamplingParams(max_new_tokens=30, seed=0)))
        while not peer.inflight:
            await asyncio.sleep(0.005)
        update = asyncio.ensure_future(backend.update_weights(tmp_path, version=1))
        while not peer.lock.writer:
            await asyncio.sleep(0.005)
        before = await running  # the update could only take the lock once this finished
        assert before[0].weight_version == 0 and before[0].finish_reason == "length"
        assert (await backend.health()) == {peer.url: False}
        queued = asyncio.ensure_future(collect(backend, PROMPTS[:1], SamplingParams(max_new_tokens=3, seed=0)))
        await asyncio.sleep(0.1)
        assert not queued.done() and peer.inflight == 0
        await update
        after = await queued
        assert after[0].weight_version == 1 and (await backend.health()) == {peer.url: True}


async def test_weight_update_timeout_is_configurable(peer, tmp_path):
    peer.update_delay_s = 1.0
    async with client(peer.url, weight_update_timeout_s=0.2) as backend:
        with pytest.raises(GenerationError, match="failed"):
            await backend.update_weights(tmp_path)
        assert backend.weight_version == 0
    async with client(peer.url, weight_update_timeout_s=10.0, read_timeout_s=0.2) as backend:
        assert await backend.update_weights(tmp_path) == 1


async def test_one_process_per_server_sends_the_control_calls(peer, peer2, tmp_path):
    """Under torchrun each rank has a backend over the same servers; server k takes weight updates from control
    rank k % control_world only, and every rank's update returns once all servers serve the new version."""
    urls = (peer.url, peer2.url)
    ranks = [client(*urls, control_rank=r, control_world=2) for r in range(2)]
    for backend in ranks:
        await backend.start()
    try:
        for step in (1, 2):
            versions = await asyncio.gather(*(b.update_weights(tmp_path, version=step) for b in ranks))
            assert versions == [step, step]
        state = {"w": torch.ones(2)}
        await asyncio.gather(*(b.update_weights(state, version=3) for b in ranks))
    finally:
        for backend in ranks:
            await backend.close()
    for server in (peer, peer2):
        paths = [p for p, _ in server.weight_updates]
        assert paths == ["/update_weights_from_disk"] * 2 + [
            "/begin_weight_update",
            "/update_weights_from_tensor",
            "/end_weight_update",
        ]
    assert [b.weight_version for b in ranks] == [3, 3]
    # A rank returns only once the servers it does not control serve the new version.
    async with client(*urls, control_rank=1, control_world=2, weight_update_timeout_s=0.5) as alone:
        with pytest.raises(GenerationError, match=f"{peer.url} is not at weight version 4"):
            await alone.update_weights(tmp_path, version=4)
        assert alone.weight_version == 0 and peer2.weight_version == "4" and peer.weight_version == "3"
    with pytest.raises(ValueError, match="control_rank"):
        SGLangConfig(urls=urls, control_rank=2, control_world=2)


@pytest.mark.parametrize(
    ("incremental", "options"),
    [
        (False, {}),
        (False, {"stream": True}),
        (False, {"stream": True, "stream_interval": 7}),
        (True, {"stream": True}),
        (True, {"stream": True, "stream_interval": 5}),
    ],
    ids=["non-streaming", "cumulative", "cumulative-interval-7", "incremental", "incremental-interval-5"],
)
async def test_delivery_modes_give_the_same_samples(peer, incremental, options):
    peer.incremental = incremental
    params = SamplingParams(max_new_tokens=33, temperature=0.9, seed=4)
    async with client(peer.url, **options) as backend:
        got = await collect(backend, PROMPTS, params, n=2)
    for c in got:
        ids, lps, finish = peer_mod.expected_tokens(
            PROMPTS[c.prompt_index],
            max_new_tokens=33,
            seed=row_seed(4, c.prompt_index, c.sample_index),
            temperature=0.9,
        )
        assert list(c.token_ids) == ids and list(c.logprobs) == pytest.approx(lps) and c.finish_reason == finish
        assert c.text == "".join(f"<{t}>" for t in ids)
    sent = peer.generate_requests[0]
    assert sent["stream"] is options.get("stream", False)
    assert sent["sampling_params"].get("stream_interval") == options.get("stream_interval")
    if options.get("stream_interval"):  # ceil(33 / interval) chunks per sample
        assert len(peer.chunks) == 6 * -(-33 // options["stream_interval"])


async def test_non_streaming_abort_keeps_the_partial_sample(peer):
    peer.token_delay_s = 0.01
    async with client(peer.url, stream=False) as backend:
        stream = backend.generate(PROMPTS[:1], SamplingParams(max_new_tokens=400, seed=0))
        first = asyncio.ensure_future(stream.__anext__())
        while not peer.inflight:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        await backend.abort()
        got = await first
    ids, _, _ = peer_mod.expected_tokens(PROMPTS[0], max_new_tokens=400, seed=row_seed(0, 0, 0))
    assert got.finish_reason == "abort" and got.error is None
    assert 0 < len(got.token_ids) < 400 and list(got.token_ids) == ids[: len(got.token_ids)]


def test_tensor_buckets_bound_each_payload():
    named = [("a", torch.zeros(10)), ("b", torch.zeros(10)), ("c", torch.zeros(30)), ("d", torch.zeros(5))]
    sizes = [[name for name, _ in b] for b in tensor_buckets(named, 80)]  # float32: 40, 40, 120, 20 bytes
    assert sizes == [["a", "b"], ["c"], ["d"]]
    assert tensor_buckets([], 80) == [[]]


async def test_state_dict_goes_in_buckets_inside_one_session(peer):
    state = {f"layer{i}.weight": torch.full((64, 64), float(i)) for i in range(5)}  # 16 KiB each
    async with client(peer.url, tensor_bucket_mb=40 / 1024) as backend:  # 40 KiB: two tensors a bucket
        assert await backend.update_weights(state, version=3) == 3
    paths = [p for p, _ in peer.weight_updates]
    assert paths == ["/begin_weight_update"] + ["/update_weights_from_tensor"] * 3 + ["/end_weight_update"]
    tensor_calls = [b for p, b in peer.weight_updates if p == "/update_weights_from_tensor"]
    assert [[name for name, _ in b["decoded"][0]] for b in tensor_calls] == [
        ["layer0.weight", "layer1.weight"],
        ["layer2.weight", "layer3.weight"],
        ["layer4.weight"],
    ]
    # Only the last bucket names the version and flushes the cache: the label moves once every weight is in.
    assert [(b.get("weight_version"), b["flush_cache"]) for b in tensor_calls] == [(None, False)] * 2 + [("3", True)]
    assert peer.weight_version == "3" and not peer.session_open


async def test_cpu_tensors_reach_a_server_started_on_its_own(tmp_path):
    """A server on this machine that is not our multiprocessing child (as a launched SGLang is not) can open the
    CPU tensors of /update_weights_from_tensor: they travel as named shared-memory files, not as descriptors
    behind multiprocessing's authkey."""
    port = free_port_pair()
    peer_script = str(Path(__file__).with_name("sglang_server.py"))
    server = await asyncio.create_subprocess_exec(sys.executable, peer_script, "--port", str(port))
    try:
        async with client(f"http://127.0.0.1:{port}", wait_healthy_s=30) as backend:
            state = {"model.embed_tokens.weight": torch.randn(64, 8), "lm_head.weight": torch.randn(64, 8)}
            async with asyncio.timeout(60):
                assert await backend.update_weights(state, version=5) == 5
                assert (await backend.model_info())["weight_version"] == "5"
    finally:
        server.terminate()
        await server.wait()


@pytest.mark.slow
async def test_learner_recomputes_the_servers_logprobs_at_temperature_0_7(peer):
    """The one log-prob rule end to end: the peer in model mode reports SGLang's log_softmax(logits / 0.7) of a
    tiny fp32 model; the learner, told the sampling temperature, recomputes the same old log-probs (mean
    |difference| under 1e-3), and at T = 1 it would not."""
    import copy

    from transformers import LlamaConfig, LlamaForCausalLM

    from learner.config import AlgorithmConfig, LearnerConfig, RolloutBatch
    from learner.trainer import Learner

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=2,
        attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(config).float().eval()
    peer.model = copy.deepcopy(model)
    prompts = [[5, 17, 33, 9], [1, 40, 41], [7, 8, 9, 10, 11, 12]]
    params = SamplingParams(max_new_tokens=12, temperature=0.7, top_p=0.95, seed=1)
    async with client(peer.url) as backend:
        got = await collect(backend, prompts, params, n=2)
    assert all(c.error is None and c.token_ids for c in got)
    batch = RolloutBatch(
        prompts=[prompts[c.prompt_index] for c in got],
        responses=[list(c.token_ids) for c in got],
        advantages=[(-1.0) ** i for i in range(len(got))],
        old_logprobs=[list(c.logprobs) for c in got],
    )

    def gap(temperature: float) -> float:
        algo = AlgorithmConfig(temperature=temperature, rollout_correction="tis")
        learner = Learner(copy.deepcopy(model), LearnerConfig(lr=1e-6, dtype="float32", algorithm=algo))
        return learner.step(batch)["mismatch_log_ratio_abs"]

    assert gap(0.7) < 1e-3
    assert gap(1.0) > 1e-2
