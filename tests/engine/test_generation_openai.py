"""The openai backend against a small in-test OpenAI-compatible server (completions and chat, streamed, n choices).

The server follows the OpenAI streaming shapes as vLLM serves them (`choices[].text` / `delta.content`,
`logprobs.tokens` + `token_logprobs` / `logprobs.content`, `finish_reason` on a choice's last chunk,
`return_tokens_as_token_ids` spelling tokens "token_id:N"), or as llama.cpp's server does (`llamacpp`: completions
log-probs in the chat shape, each entry with the token's `id`). GET /health and GET /v1/models answer with the
statuses a test sets (`transformers serve` answers /v1/models with 500 when it has no hub cache).
Run: .venv/bin/pytest tests/engine/test_generation_openai.py
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket

import pytest
from aiohttp import web

from engine.generation import GenerationError, SamplingParams, create_backend
from engine.generation.openai_compat import OpenAIBackend, OpenAIConfig


def token(prompt: object, seed: object, j: int, t: int) -> tuple[int, float]:
    value = int.from_bytes(hashlib.blake2b(repr((prompt, seed, j, t)).encode(), digest_size=8).digest(), "little")
    return value % 5000, -((value >> 16) % 500) / 100.0


def choice_length(j: int) -> int:
    """Choice j stops after 2 + 3j tokens, so choices of one request finish at different times."""
    return 2 + 3 * j


class OpenAIPeer:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.fail_next = 0
        self.token_delay_s = 0.0
        self.llamacpp = False
        self.health_status = 200
        self.models_status = 200
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/completions", self.handle)
        app.router.add_post("/v1/chat/completions", self.handle)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"
        return self.url

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({}, status=self.health_status)

    async def models(self, request: web.Request) -> web.Response:
        if self.models_status != 200:
            return web.Response(text="Internal Server Error", status=self.models_status)
        return web.json_response({"object": "list", "data": [{"id": "tiny", "object": "model"}]})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        if self.fail_next:
            self.fail_next -= 1
            return web.json_response({"error": {"message": "overloaded", "code": 503}}, status=503)
        chat = request.path.endswith("/chat/completions")
        prompt = json.dumps(body["messages"]) if chat else body["prompt"]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        lengths = [min(choice_length(j), body["max_tokens"]) for j in range(body["n"])]
        for t in range(max(lengths)):
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            for j, length in enumerate(lengths):
                if t >= length:
                    continue
                tok, lp = token(prompt, body.get("seed"), j, t)
                finish = None if t < length - 1 else ("stop" if length == choice_length(j) else "length")
                spelled = f"token_id:{tok}" if body.get("return_tokens_as_token_ids") else f"<{tok}>"
                choice = {"index": j, "finish_reason": finish}
                if chat or self.llamacpp:
                    entry = {"token": spelled, "logprob": lp, "top_logprobs": []}
                    if self.llamacpp:
                        entry |= {"id": tok, "bytes": list(f"<{tok}>".encode())}
                    choice["logprobs"] = {"content": [entry]}
                if chat:
                    choice["delta"] = {"content": f"<{tok}>"}
                elif self.llamacpp:
                    choice["text"] = f"<{tok}>"
                else:
                    choice["text"] = f"<{tok}>"
                    choice["logprobs"] = {"tokens": [spelled], "token_logprobs": [lp], "top_logprobs": None}
                chunk = {"id": "cmpl-1", "object": "text_completion", "model": body["model"], "choices": [choice]}
                await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response


@pytest.fixture
async def peer():
    server = OpenAIPeer()
    await server.start()
    yield server
    await server.runner.cleanup()


def backend_for(peer: OpenAIPeer, **options) -> OpenAIBackend:
    return OpenAIBackend(OpenAIConfig(base_url=peer.url, model="tiny", backoff_base_s=0.01, **options))


async def test_completions_with_token_ids_stream_each_choice_when_done(peer):
    params = SamplingParams(max_new_tokens=6, temperature=0.7, seed=3)
    prompts = [[1, 2, 3], [4, 5]]
    async with backend_for(peer, extra_body={"return_tokens_as_token_ids": True}) as backend:
        got = [c async for c in backend.generate(prompts, params, n=3)]
    assert len(got) == 6
    # Per prompt, the short choices finish first.
    for i in range(2):
        assert [c.sample_index for c in got if c.prompt_index == i] == [0, 1, 2]
    for c in got:
        length = min(choice_length(c.sample_index), 6)
        expected = [token(prompts[c.prompt_index], 3, c.sample_index, t) for t in range(length)]
        assert list(c.token_ids) == [tok for tok, _ in expected]
        assert list(c.logprobs) == pytest.approx([lp for _, lp in expected])
        assert c.finish_reason == ("stop" if choice_length(c.sample_index) <= 6 else "length")
        assert c.text == "".join(f"<{tok}>" for tok, _ in expected)
    sent = peer.requests[0]
    assert sent["prompt"] == [1, 2, 3] and sent["n"] == 3 and sent["stream"] is True and sent["logprobs"] == 1
    assert sent["seed"] == 3 and "top_k" not in sent and "stop_token_ids" not in sent and "ignore_eos" not in sent


async def test_non_openai_parameters_are_sent_only_when_set(peer):
    params = SamplingParams(max_new_tokens=2, temperature=0.0, top_k=5, stop_token_ids=(7,), ignore_eos=True)
    async with backend_for(peer) as backend:
        [c async for c in backend.generate([[1, 2]], params)]
    sent = peer.requests[0]
    assert (sent["top_k"], sent["stop_token_ids"], sent["ignore_eos"]) == (5, [7], True)


async def test_chat_messages_text_and_logprobs(peer):
    messages = [{"role": "user", "content": "Minimise x subject to x >= 1."}]
    async with backend_for(peer, endpoint="chat") as backend:
        got = [c async for c in backend.generate([messages], SamplingParams(max_new_tokens=10, top_k=20), n=2)]
        with pytest.raises(GenerationError, match="messages"):
            [c async for c in backend.generate([[1, 2]], SamplingParams())]
    assert [c.sample_index for c in got] == [0, 1]
    for c in got:
        expected = [token(json.dumps(messages), None, c.sample_index, t) for t in range(choice_length(c.sample_index))]
        assert c.text == "".join(f"<{tok}>" for tok, _ in expected) and c.token_ids == ()
        assert list(c.logprobs) == pytest.approx([lp for _, lp in expected])
    assert peer.requests[0]["messages"] == messages and peer.requests[0]["top_k"] == 20


async def test_retries_then_reports_failure(peer):
    peer.fail_next = 2
    async with backend_for(peer, max_retries=2) as backend:
        ok = [c async for c in backend.generate(["x"], SamplingParams(max_new_tokens=2), n=2)]
        peer.fail_next = 10
        bad = [c async for c in backend.generate(["x"], SamplingParams(max_new_tokens=2), n=2)]
    assert all(c.error is None for c in ok) and len(peer.requests) == 3 + 3
    assert [c.failed for c in bad] == [True, True] and "HTTP 503" in bad[0].error


async def test_abort_and_no_weight_updates(peer):
    peer.token_delay_s = 0.2
    async with backend_for(peer) as backend:
        stream = backend.generate([[1], [2]], SamplingParams(max_new_tokens=50), n=2)
        first = await stream.__anext__()
        await backend.abort()
        got = [first] + [c async for c in stream]
        with pytest.raises(GenerationError, match="cannot load weights"):
            await backend.update_weights({})
    assert len(got) == 4 and got[0].finish_reason == "stop"
    # Choice 1 needs 5 tokens at 200 ms each: still streaming when the abort lands.
    assert [c.finish_reason for c in got if c.sample_index == 1] == ["abort", "abort"]
    assert all(c.error is None for c in got)


async def test_llamacpp_token_ids_come_from_each_logprob_entry(peer):
    peer.llamacpp = True
    async with backend_for(peer) as backend:
        got = [c async for c in backend.generate([[7, 8]], SamplingParams(max_new_tokens=4, seed=1), n=2)]
    for c in got:
        expected = [token([7, 8], 1, c.sample_index, t) for t in range(min(choice_length(c.sample_index), 4))]
        assert list(c.token_ids) == [tok for tok, _ in expected]
        assert list(c.logprobs) == pytest.approx([lp for _, lp in expected])


async def test_health_is_reachability_at_the_server_root(peer):
    backend = backend_for(peer)
    assert await backend.health() == {peer.url: True}  # before start: a short-lived session
    async with backend:
        for status, up in ((404, True), (503, False), (200, True)):
            peer.health_status = status
            assert await backend.health() == {peer.url: up}, status
    dead = OpenAIBackend(OpenAIConfig(base_url=f"{closed_port_url()}/v1", model="m", connect_timeout_s=1.0))
    assert await dead.health() == {dead.config.base_url: False}
    assert dead.explain_down([dead.config.base_url]).startswith(
        f"OpenAI-compatible server at {dead.config.base_url} is unreachable"
    )


async def test_eval_uses_api_model_without_listing_models(peer):
    """`transformers serve` answers GET /v1/models with 500 without a hub cache: --api-model must not need it."""
    from engine.evaluation.models import ModelError, open_model, parse_model

    peer.models_status = 500
    async with open_model(parse_model(f"openai:{peer.url}", api_model="tiny")) as served:
        messages = [{"role": "user", "content": "x"}]
        got = [c async for c in served.backend.generate([messages], SamplingParams(max_new_tokens=3))]
    assert served.tokenizer is None and len(got) == 1 and got[0].error is None
    with pytest.raises(ModelError, match=r"HTTP 500, so the served model's name is unknown; pass --api-model"):
        async with open_model(parse_model(f"openai:{peer.url}")):
            pass
    peer.models_status = 200
    async with open_model(parse_model(f"openai:{peer.url}")) as served:
        assert served.backend.config.model == "tiny"
    with pytest.raises(ModelError, match="is unreachable"):
        async with open_model(parse_model(f"openai:{closed_port_url()}/v1", api_model="tiny")):
            pass


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_registry_builds_openai_backend():
    backend = create_backend("openai", {"base_url": "http://h/v1/", "model": "m", "endpoint": "chat"})
    assert isinstance(backend, OpenAIBackend) and backend.config.base_url == "http://h/v1"
    with pytest.raises(ValueError, match="model is required"):
        create_backend("openai", {})


@pytest.mark.slow
def test_transformers_serve_is_a_real_openai_compatible_peer(tiny_model, tmp_path):
    """`transformers serve` (the `dev` extra's fastapi/uvicorn/openai/rich) serving the tiny random model, offline
    and with an empty hub cache, so its GET /v1/models fails: health, chat streaming, and engine.eval with
    --api-model all work against it. It ignores `n` (one choice per request), so only n=1 is asked."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from engine.eval import main
    from engine.records import read_jsonl

    port = int(closed_port_url().rsplit(":", 1)[1])
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TRANSFORMERS_OFFLINE": "1"}
    serve = "from transformers.cli.transformers import main; main()"
    cmd = [sys.executable, "-c", serve, "serve", str(tiny_model), "--port", str(port), "--device", "cpu"]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "transformers serve did not start"
                time.sleep(0.2)
        url = f"http://127.0.0.1:{port}/v1"

        async def chat() -> list:
            config = OpenAIConfig(base_url=url, model=str(tiny_model), endpoint="chat", max_retries=0)
            async with OpenAIBackend(config) as backend:
                assert await backend.health() == {url: True}
                prompts = [[{"role": "user", "content": f"Minimise {k}x subject to x >= 1."}] for k in (2, 3)]
                return [c async for c in backend.generate(prompts, SamplingParams(max_new_tokens=4, seed=0))]

        got = asyncio.run(chat())
        assert sorted(c.prompt_index for c in got) == [0, 1]
        assert all(c.error is None and c.finish_reason in ("stop", "length") and c.text is not None for c in got)

        bench = tmp_path / "bench.jsonl"
        bench.write_text(json.dumps({"id": "p1", "question": "Minimise x subject to x >= 1.", "answer": 1.0}) + "\n")
        out = tmp_path / "out"
        args = ["--model", f"openai:{url}", "--api-model", str(tiny_model), "--benchmark", str(bench)]
        assert main([*args, "--solver", "gurobipy", "--max-new-tokens", "4", "--output", str(out), "--quiet"]) == 0
        items = read_jsonl(out / "items.jsonl")
        assert [i["id"] for i in items] == ["p1"] and items[0]["finish_reason"] in ("stop", "length")
    finally:
        server.terminate()
        server.wait(timeout=30)
