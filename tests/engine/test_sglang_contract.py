"""Every request body the sglang client sends, checked with SGLang 0.5.23's own parsers (tests/engine/
sglang_source.py loads them from the installed wheel), and the peer's replies with SGLang's own response types.

Needs `pip install --no-deps sglang==0.5.23` and msgspec (`make setup` installs both).
Run: .venv/bin/pytest tests/engine/test_sglang_contract.py
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
import sglang_server as peer_mod
import sglang_source as source
import torch

from engine.generation import SamplingParams
from engine.generation.sglang_client import SGLangBackend, SGLangConfig, _Call
from engine.generation.sglang_protocol import WEIGHTS_CHANGED_NOT_FLUSHED, ReplyStream
from engine.rollout.partial import Resumer

pytestmark = pytest.mark.skipif(
    source.sglang_root() is None, reason="needs sglang==0.5.23 installed --no-deps and msgspec (make setup)"
)

# Every endpoint the client can call.
CLIENT_ENDPOINTS = {
    "/generate",
    "/abort_request",
    "/update_weights_from_disk",
    "/begin_weight_update",
    "/update_weights_from_tensor",
    "/end_weight_update",
    "/init_weights_update_group",
    "/update_weights_from_distributed",
    "/destroy_weights_update_group",
    "/update_weight_version",
    "/flush_cache",
}
# Every sampling option SamplingParams and the config can turn into a request field.
SAMPLING_KEYS = {
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop_token_ids",
    "ignore_eos",
    "sampling_seed",
    "stream_interval",
}


@pytest.fixture
async def peers():
    servers = [peer_mod.SGLangPeer(), peer_mod.SGLangPeer()]
    for s in servers:
        await s.start()
    yield servers
    for s in servers:
        await s.stop()


async def drive_every_request(backend: SGLangBackend, peers, tmp_path: Path) -> None:
    """Each kind of request the client makes, at least once."""
    prompts = [[5, 6, 7], [8, 9]]
    variants = [
        SamplingParams(max_new_tokens=4, temperature=0.0),
        SamplingParams(max_new_tokens=4, temperature=0.7, top_p=0.9, top_k=20, seed=3),
        SamplingParams(max_new_tokens=4, temperature=1.0, seed=0, stop_token_ids=(1, 2)),
        SamplingParams(max_new_tokens=4, temperature=0.5, seed=1, stop_token_ids=(1, 2), ignore_eos=True),
    ]
    for params in variants:
        got = [c async for c in backend.generate(prompts, params, n=2)]
        assert len(got) == 4 and not any(c.failed for c in got)
    for s in peers:  # an abort per rid while samples decode
        s.token_delay_s = 0.01
    stream = backend.generate(prompts, SamplingParams(max_new_tokens=200, seed=1))
    first = asyncio.ensure_future(stream.__anext__())
    while sum(s.inflight for s in peers) < 2:
        await asyncio.sleep(0.01)
    await backend.abort()
    [await first] + [c async for c in stream]
    for s in peers:
        s.token_delay_s = 0.0
    await cut_and_resume(backend, peers, tmp_path)  # version 1: the bodies of resumed samples
    await backend.update_weights({"w": torch.ones(2, 2)}, version=2)
    await backend.control.init_weights_update_group(master_address="127.0.0.1", master_port=29500, world_size=3)
    await backend.control.update_weights_from_distributed(names=["w"], dtypes=["float32"], shapes=[[2, 2]], version=3)
    await backend.control.destroy_weights_update_group()
    peers[0].refuse_flush = 1  # the recovery path: /update_weight_version, then /flush_cache
    await backend.update_weights(tmp_path, version=4)


async def cut_and_resume(backend: SGLangBackend, peers, tmp_path: Path) -> None:
    """A partial rollout: a weight update (version 1) cuts the samples decoding, each resumes from prompt + its
    tokens."""
    resumer = Resumer(backend)
    params = SamplingParams(max_new_tokens=200, temperature=0.8, seed=4)
    for s in peers:
        s.token_delay_s = 0.01
        s.decoded.clear()
    stream = backend.generate([[5, 6, 7], [8, 9]], params, n=2)
    first = asyncio.ensure_future(stream.__anext__())
    while len([n for s in peers for n in s.decoded.values() if n >= 2]) < 4:
        await asyncio.sleep(0.01)
    update = asyncio.create_task(resumer.update_weights(tmp_path, version=1))
    cut = [await first] + [c async for c in stream]
    await update
    for s in peers:
        s.token_delay_s = 0.0
    prompts = [[5, 6, 7], [8, 9]]
    whole = await asyncio.gather(*(resumer.finish(prompts[c.prompt_index], c, params) for c in cut))
    assert [(len(set(w.versions)), w.failed) for w in whole] == [(2, False)] * 4


async def test_every_client_request_passes_sglangs_own_parsers(peers, tmp_path):
    urls = tuple(p.url for p in peers)
    async with SGLangBackend(SGLangConfig(urls=urls, backoff_base_s=0.01)) as backend:
        await drive_every_request(backend, peers, tmp_path)
    async with SGLangBackend(SGLangConfig(urls=urls, stream=True, stream_interval=4)) as backend:
        [c async for c in backend.generate([[1, 2]], SamplingParams(max_new_tokens=9, seed=0), n=2)]
    requests = [r for p in peers for r in p.requests]
    assert {path for path, _ in requests} == CLIENT_ENDPOINTS
    sampling_keys, streamed = set(), set()
    for path, body in requests:
        if path == "/flush_cache":
            assert body == {}  # its only parameter is the `timeout` query, left at 0
            continue
        parsed = source.validate_request(path, body)  # raises ContractError on anything SGLang would refuse
        if path == "/generate":
            sampling_keys |= set(body["sampling_params"])
            streamed.add(body["stream"])
            assert body["return_logprob"] is True and body["logprob_start_len"] == -1
            assert parsed.n == 1
    assert sampling_keys == SAMPLING_KEYS and streamed == {True, False}
    resumed = [b for path, b in requests if path == "/generate" and len(b["input_ids"]) > 3]
    assert len(resumed) == 4  # the partial rollout's resumed samples were among the bodies checked


def test_the_client_reads_sglangs_weight_version_spans():
    """A request whose weights changed while it ran: SGLang's own span code writes meta_info.weight_versions, the
    client turns it into each token's version (the oldest is the sample's)."""
    wv = source._module("sglang.srt.utils.weight_versions")
    events = [wv.WeightVersionEvent(old_version="3", num_output_tokens=2)]
    spans = wv.compute_weight_version_spans(events, current_version="4", num_output_tokens=5)
    meta: dict = {}
    wv.add_weight_versions_to_meta_info(meta, spans, num_output_tokens=5)
    reply = {"text": "", "output_ids": [7, 8, 9, 10, 11], "meta_info": {**meta, "completion_tokens": 5}}
    reply["meta_info"]["finish_reason"] = {"type": "length", "length": 5}
    stream = ReplyStream()
    stream.add(orjson.loads(orjson.dumps(reply)))  # as it comes over the wire
    got = _Call(prefix="x", submitted=0.0).completion(0, 0, stream, "length", 0, error=None)
    assert got.token_versions == (3, 3, 4, 4, 4) and got.weight_version == 3


BAD_BODIES = [
    ("/generate", {"rid": "a", "input_ids": [1], "sampling_params": {"seed": 1}}, "unknown field `seed`"),
    ("/generate", {"rid": "a", "input_ids": [1], "sampling_params": {"max_new_tokens": "5"}}, "expected i64"),
    ("/generate", {"rid": "a", "input_ids": [1], "sampling_params": {"top_k": 0}}, "top_k must be"),
    ("/generate", {"rid": "a", "input_ids": [1], "sampling_params": {"temperature": -1.0}}, "temperature"),
    ("/generate", {"rid": "a", "input_ids": [1], "stream_interval": 4}, "no field(s) ['stream_interval']"),
    ("/generate", {"rid": 7, "input_ids": [1]}, "invalid type"),
    ("/update_weights_from_disk", {"model_path": "/x", "weight_version": 3}, "weight_version"),
    ("/update_weights_from_disk", {"model_path": "/x", "version": "3"}, "no field(s) ['version']"),
    ("/update_weights_from_disk", {"weight_version": "3"}, "model_path"),
    ("/update_weights_from_tensor", {"serialized_named_tensors": ["not base64!"]}, "base64"),
    ("/update_weights_from_distributed", {"names": ["w"], "dtypes": ["f"], "shapes": [["a"]]}, "shapes"),
    ("/init_weights_update_group", {"master_address": "h", "master_port": "p", "rank_offset": 1}, "master_port"),
    ("/begin_weight_update", {"selector": "everything"}, "selector"),
    ("/update_weight_version", {"new_version": 5}, "new_version"),
    ("/abort_request", {"rid": "a", "all": True}, "no field(s) ['all']"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "message"), BAD_BODIES, ids=[f"{p}-{i}" for i, (p, _, _) in enumerate(BAD_BODIES)]
)
def test_sglangs_parsers_refuse_unknown_and_mistyped_fields(path, body, message):
    with pytest.raises(source.ContractError) as refused:
        source.validate_request(path, body)
    assert message in str(refused.value)


async def test_streamed_chunks_and_replies_decode_with_sglangs_response_types(peers):
    api = source.api_types()
    peer = peers[0]
    for incremental in (False, True):
        peer.incremental = incremental
        async with SGLangBackend(SGLangConfig(urls=(peer.url,), stream=True)) as backend:
            [c async for c in backend.generate([[1, 2, 3]], SamplingParams(max_new_tokens=6, seed=0), n=2)]
            for queued in (False, True):  # the abort chunks of a running request and of a queued one
                peer.abort_as_queued, peer.token_delay_s = queued, 0.01
                peer.decoded.clear()
                stream = backend.generate([[4, 5]], SamplingParams(max_new_tokens=300, seed=0))
                first = asyncio.ensure_future(stream.__anext__())
                while not any(n >= 2 for n in peer.decoded.values()):
                    await asyncio.sleep(0.01)
                await backend.abort()
                assert (await first).finish_reason == "abort"
    peer.token_delay_s = 0.0
    assert peer.chunks
    assert sum(c["meta_info"]["finish_reason"] is not None and c["meta_info"]["finish_reason"]["type"] == "abort"
               for c in peer.chunks) == 4  # fmt: skip
    for chunk in peer.chunks:
        decoded = api.GenerateResponse.from_json_value(chunk)
        assert decoded.meta_info.completion_tokens >= len(decoded.output_ids)
        queued_abort = (chunk["meta_info"]["finish_reason"] or {}).get("message") == "Abort in waiting queue"
        # The tokenizer's abort handler sends every log-prob, in an incremental stream with the last id only.
        expected = decoded.meta_info.completion_tokens if queued_abort else len(decoded.output_ids)
        assert len(decoded.meta_info.output_token_logprobs) == expected


def test_peer_messages_are_sglangs():
    """The peer's refusals quote SGLang's own text, which the client matches on."""
    text = (source.sglang_root() / "srt/managers/scheduler_components/weight_updater.py").read_text()
    flat = " ".join(text.split())
    assert WEIGHTS_CHANGED_NOT_FLUSHED in flat
    assert '"Weights were updated, but the cache was not flushed because " "requests are still running' in flat
    for endpoint in ("update_weights_from_tensor", "update_weights_from_distributed"):
        assert f'"{endpoint} must run between " "begin_weight_update() and end_weight_update()"' in flat


def test_the_endpoints_taking_the_admin_key_are_sglangs():
    """The client sends the admin key to, and the peer demands it on, exactly the routes SGLang's http_server.py
    marks ADMIN_OPTIONAL among those the client calls."""
    lines = (source.sglang_root() / "srt/entrypoints/http_server.py").read_text().splitlines()
    admin = set()
    for k, line in enumerate(lines):
        for path in CLIENT_ENDPOINTS:
            route = line.startswith(("@app.post(", "@app.api_route(")) and f'"{path}"' in line
            if route and "@auth_level(AuthLevel.ADMIN_OPTIONAL)" in lines[k + 1 : k + 3]:
                admin.add(path)
    assert admin == peer_mod.ADMIN_PATHS & CLIENT_ENDPOINTS == CLIENT_ENDPOINTS - {"/generate"}
