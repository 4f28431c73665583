"""Generation servers killed mid-request and restarted (#19 class 2).

Each peer runs in its own process (tests/engine/peer_process.py: the SGLang 0.5.23 protocol peer, and the
project's OpenAI-compatible peer) on a fixed port; the test sends it SIGKILL while requests are in flight, then
starts a new one on the same port, with its base weights as a restarted server has. What must hold:
- a sample that had streamed tokens from the killed server ends as a backend failure (finish_reason "abort",
  `error`; in the rollout status backend_error, infra_failure, excluded from the batch, counted in the metrics);
- a sample that had received nothing goes to another server, or waits for one while every server is down;
- the rollout finishes its batch on the remaining server, and a weight update made while one server is down
  reaches the others;
- the restarted server is used again only once it serves the client's weights: the client reloads the last
  update's directory into it before routing to it;
- every server down for longer than `server_down_timeout_s`: generation stops with BackendUnavailable (one line)
  instead of turning every later sample into a failure, and nothing hangs (each test runs under a time limit);
- no sample twice: (group_id, sample_index) unique in samples.jsonl, each group complete.
Run: .venv/bin/pytest tests/engine/test_chaos_generation.py (make test-chaos)
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
import pytest
import scripted
import sglang_server as sglang_peer

from engine.generation import BackendUnavailable, SamplingParams
from engine.generation.base import row_seed
from engine.generation.openai_compat import OpenAIBackend, OpenAIConfig
from engine.generation.sglang_client import SGLangBackend, SGLangConfig
from engine.records import RunRecorder, read_jsonl
from engine.rollout import Rollout

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.chaos  # make test-chaos


def _load(name: str, filename: str):
    module = sys.modules.get(name)
    if module is None:  # tests/ is no package: loaded by path, once
        spec = importlib.util.spec_from_file_location(name, HERE / filename)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


openai_peer = _load("test_generation_openai", "test_generation_openai.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PeerProcess:
    """A peer in its own process on a fixed port; `kill` is SIGKILL, `start` starts a fresh one (base weights)."""

    def __init__(self, kind: str, tmp: Path, *, token_delay_s: float) -> None:
        self.kind, self.tmp, self.token_delay_s = kind, tmp, token_delay_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.lives = 0

    def record(self, life: int) -> Path:
        return self.tmp / f"{self.kind}-{self.port}-life{life}.jsonl"

    def start(self) -> None:
        self.lives += 1
        cmd = [sys.executable, str(HERE / "peer_process.py"), self.kind, "--port", str(self.port)]
        cmd += ["--token-delay-s", str(self.token_delay_s), "--record", str(self.record(self.lives))]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    async def wait_up(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while True:
                assert self.proc is not None and self.proc.poll() is None, self.proc.stderr.read().decode()[-2000:]
                try:
                    async with session.get(f"{self.url}/health", timeout=aiohttp.ClientTimeout(total=1)) as r:
                        if r.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                assert time.monotonic() < deadline, f"{self.kind} peer on {self.port} did not start"
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()

    def requests(self, life: int) -> list[dict]:
        path = self.record(life)
        return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


@pytest.fixture
def peers(tmp_path):
    started: list[PeerProcess] = []

    def make(kind: str, *, token_delay_s: float = 0.02) -> PeerProcess:
        peer = PeerProcess(kind, tmp_path, token_delay_s=token_delay_s)
        started.append(peer)
        peer.start()
        return peer

    yield make
    for peer in started:
        peer.close()


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def streaming_on(backend: SGLangBackend, url: str) -> bool:
    """A sample on `url` has received chunks and is not finished (rids are <call>-<prompt>-<sample>-<attempt>)."""
    for call in list(backend._calls):
        for rid, endpoint in list(call.live.items()):
            i, j = (int(x) for x in rid.split("-")[1:3])
            stream = call.streams.get((i, j))
            if endpoint.url == url and stream is not None and stream.chunks and stream.finish is None:
                return True
    return False


def usable(backend: SGLangBackend, url: str) -> bool:
    """The client routes to `url` again (on a client without down servers: always)."""
    return all(getattr(e, "down", None) is None for e in backend.endpoints if e.url == url)


def wrong(problem, text):
    return scripted.Outcome(status="wrong", reward=0.0, reason="the peer's text is no program", error_kind="no_code")


def decoded_with(prompt: list[int], c, *, max_new_tokens: int, seed: int, version: str) -> bool:
    """Whether completion `c` is what the peer decodes for it with the weights of `version`."""
    expected, _, _ = sglang_peer.expected_tokens(
        prompt, max_new_tokens=max_new_tokens, seed=row_seed(seed, c.prompt_index, c.sample_index), version=version
    )
    return list(c.token_ids) == expected


# ----- SGLang ------------------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_sglang_server_killed_mid_stream_rollout_goes_on_and_the_restarted_server_gets_the_weights(
    peers, tmp_path
):
    a, b = peers("sglang"), peers("sglang")
    await asyncio.gather(a.wait_up(), b.wait_up())
    weights = tmp_path / "weights"
    weights.mkdir()
    config = SGLangConfig(
        urls=(a.url, b.url), stream=True, backoff_base_s=0.01, backoff_max_s=0.05, server_down_timeout_s=60
    )
    backend = SGLangBackend(config)
    settings = scripted.rollout_settings(group_size=2, prompts_per_step=4, max_staleness=0)
    sampling = SamplingParams(max_new_tokens=40, seed=1)
    async with asyncio.timeout(120), backend:
        await backend.update_weights(weights, version=1)
        with RunRecorder(tmp_path / "run") as recorder:
            rollout = Rollout(
                backend=backend,
                verifier=scripted.ScriptedVerifier(wrong),
                prompts=scripted.prompt_builder(),
                problems=scripted.problems(8),
                settings=settings,
                sampling=sampling,
                recorder=recorder,
                start_step=0,
                end_step=2,
            )
            async with rollout:
                await until(lambda: streaming_on(backend, a.url), "a sample streaming from server A")
                a.kill()
                first = await rollout.next_batch()
                # A is down: the update reaches B, and the next batch is made on B alone.
                await rollout.update_weights(weights, version=2)
                second = await rollout.next_batch()
        # A comes back with its base weights: the client loads version 2 into it before it routes there again.
        a.start()
        await a.wait_up()
        await until(lambda: usable(backend, a.url), "the client to route to the restarted server", timeout_s=60)
        prompts = [[100 + k, 7, 8] for k in range(8)]
        params = SamplingParams(max_new_tokens=8, seed=3)
        after = [c async for c in backend.generate(prompts, params, n=2)]

    rows = read_jsonl(tmp_path / "run" / "samples.jsonl")
    keys = Counter((r["group_id"], r["sample_index"]) for r in rows)
    assert max(keys.values()) == 1, "a sample was recorded twice"
    per_group = Counter(r["group_id"] for r in rows)
    assert set(per_group.values()) == {settings.group_size}, "every group has each of its samples once"
    broken = [r for r in rows if r["step"] == 0 and r["status"] == "backend_error"]
    assert broken, "the kill landed while samples streamed from A: they must be backend failures"
    for r in broken:
        assert r["infra_failure"] and r["error_kind"] == "infrastructure" and r["finish_reason"] == "abort"
        assert r["response_tokens"] > 0 and "streamed token(s)" in r["detail"], r
    assert first.metrics["status/backend_error"] == len(broken)
    # The metrics row says a server went down (once), attempts failed, and it was still down at each batch's end.
    assert first.metrics["generation/server_downs"] == 1 and first.metrics["generation/servers_down"] == 1
    assert first.metrics["generation/failed_attempts"] >= len(broken)
    assert second.metrics["generation/server_downs"] == 0 and second.metrics["generation/servers_down"] == 1
    trained = [s for g in (*first.groups, *second.groups) for s in g.samples]
    assert trained and not any(s.infra_failure for s in trained), "backend failures are excluded from training"
    assert {s.weight_version for g in second.groups for s in g.samples} == {2}
    assert not any(r["status"] == "backend_error" for r in rows if r["step"] == 1), "step 1 ran on B alone"

    # The restarted A took the reload (version 2, from the last update's directory) before any request...
    life2 = a.requests(2)
    paths = [r["path"] for r in life2]
    assert "/generate" in paths, "the client uses the restarted server again"
    reload = paths.index("/update_weights_from_disk")
    assert reload < paths.index("/generate") and life2[reload]["weight_version"] == "2"
    # ...so every sample, wherever it ran, was decoded with version 2's weights.
    assert all(c.error is None and c.weight_version == 2 for c in after)
    assert all(decoded_with(prompts[c.prompt_index], c, max_new_tokens=8, seed=3, version="2") for c in after)


@pytest.mark.slow
async def test_sglang_only_server_killed_mid_request_waits_for_it_and_reloads_the_weights(peers, tmp_path):
    """stream: false (the client's default): a killed request has received nothing, so its sample is sent again
    once the server is back, and decoded with the client's weights, not the restarted server's base ones."""
    a = peers("sglang")
    await a.wait_up()
    weights = tmp_path / "weights"
    weights.mkdir()
    config = SGLangConfig(urls=(a.url,), backoff_base_s=0.01, backoff_max_s=0.05, server_down_timeout_s=60)
    prompts = [[10 + k, 20 + k, 30 + k] for k in range(4)]
    params = SamplingParams(max_new_tokens=30, seed=5)
    async with asyncio.timeout(90), SGLangBackend(config) as backend:
        await backend.update_weights(weights, version=1)
        generating = asyncio.create_task(_collect(backend, prompts, params, n=2))
        await until(lambda: backend.endpoints[0].inflight == 8, "8 requests in flight")
        a.kill()
        await asyncio.sleep(0.5)
        a.start()
        got = await generating
    assert sorted((c.prompt_index, c.sample_index) for c in got) == [(i, j) for i in range(4) for j in range(2)]
    assert all(c.error is None and c.weight_version == 1 for c in got), [c.error for c in got if c.error]
    assert all(decoded_with(prompts[c.prompt_index], c, max_new_tokens=30, seed=5, version="1") for c in got)
    paths = [r["path"] for r in a.requests(2)]
    assert paths.index("/update_weights_from_disk") < paths.index("/generate")


@pytest.mark.slow
async def test_sglang_server_restarted_between_requests_is_not_used_at_its_base_weights(peers, tmp_path):
    """A server killed and restarted while idle: the client saw no failure, but the new server answers at its base
    weights ("default"). Its replies are not kept as the client's version: the samples go to the other server,
    and the restarted one is reloaded with the last update before it is used."""
    a, b = peers("sglang"), peers("sglang")
    await asyncio.gather(a.wait_up(), b.wait_up())
    weights = tmp_path / "weights"
    weights.mkdir()
    config = SGLangConfig(urls=(a.url, b.url), backoff_base_s=0.01, backoff_max_s=0.05, server_down_timeout_s=60)
    prompts = [[50 + k, 1, 2] for k in range(6)]
    params = SamplingParams(max_new_tokens=6, seed=9)
    async with asyncio.timeout(60), SGLangBackend(config) as backend:
        await backend.update_weights(weights, version=1)
        a.kill()
        a.start()
        await a.wait_up()
        got = await _collect(backend, prompts, params, n=2)
        await until(lambda: usable(backend, a.url), "the client to route to the restarted server", timeout_s=30)
        again = await _collect(backend, prompts, params, n=2)
    for c in got + again:
        assert c.error is None and c.weight_version == 1
        assert decoded_with(prompts[c.prompt_index], c, max_new_tokens=6, seed=9, version="1"), c
    paths = [r["path"] for r in a.requests(2)]
    assert "/update_weights_from_disk" in paths and paths.count("/generate") >= 1


async def test_every_sglang_server_down_past_the_bound_stops_the_rollout_with_one_line(peers, tmp_path):
    a = peers("sglang")
    await a.wait_up()
    config = SGLangConfig(urls=(a.url,), stream=True, backoff_base_s=0.01, backoff_max_s=0.05, server_down_timeout_s=1)
    backend = SGLangBackend(config)
    async with asyncio.timeout(60), backend:
        with RunRecorder(tmp_path / "run") as recorder:
            rollout = Rollout(
                backend=backend,
                verifier=scripted.ScriptedVerifier(wrong),
                prompts=scripted.prompt_builder(),
                problems=scripted.problems(4),
                settings=scripted.rollout_settings(group_size=2, prompts_per_step=2, max_gen_batches=3),
                sampling=SamplingParams(max_new_tokens=40, seed=1),
                recorder=recorder,
                start_step=0,
            )
            async with rollout:
                await until(lambda: streaming_on(backend, a.url), "a sample streaming")
                a.kill()
                with pytest.raises(BackendUnavailable, match=r"usable for 1 s \(server_down_timeout_s\)"):
                    await rollout.next_batch()
    rows = read_jsonl(tmp_path / "run" / "samples.jsonl")
    assert max(Counter((r["group_id"], r["sample_index"]) for r in rows).values(), default=1) == 1


async def _collect(backend, prompts, params, n):
    return [c async for c in backend.generate(prompts, params, n=n)]


# ----- OpenAI-compatible -------------------------------------------------------------------------------------


def _openai_config(server, *, server_down_timeout_s: float) -> OpenAIConfig:
    """One request at a time to `server`, with short retry backoffs."""
    return OpenAIConfig(
        base_url=f"{server.url}/v1",
        model="tiny",
        max_concurrency=1,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
        server_down_timeout_s=server_down_timeout_s,
    )


async def test_openai_server_killed_mid_stream_streamed_choices_fail_the_rest_wait_for_the_restart(peers):
    """One request per prompt, one at a time (max_concurrency 1): prompt 0's request streams its 4 choices (2, 5,
    8, 11 tokens) when the server is killed, right after choice 0 finished; prompt 1's request is sent after the
    kill, finds the server down, and must wait for it rather than burn its retries."""
    server = peers("openai", token_delay_s=0.15)
    await server.wait_up()
    config = _openai_config(server, server_down_timeout_s=60)
    prompts = [[1, 2, 3], [4, 5, 6]]
    params = SamplingParams(max_new_tokens=50, seed=2)
    async with asyncio.timeout(60), OpenAIBackend(config) as backend:
        stream = backend.generate(prompts, params, n=4)
        first = await anext(stream)
        server.kill()

        async def restart() -> None:
            await asyncio.sleep(0.5)
            server.start()

        restarting = asyncio.create_task(restart())
        rest = [c async for c in stream]
        await restarting
        again = [c async for c in backend.generate([[9]], SamplingParams(max_new_tokens=3), n=1)]
    got = [first, *rest]
    assert sorted((c.prompt_index, c.sample_index) for c in got) == [(i, j) for i in range(2) for j in range(4)]
    assert (first.prompt_index, first.sample_index, first.error) == (0, 0, None)
    for c in got[1:]:
        if c.prompt_index == 0:  # streaming when the server died: failed, with what it had
            assert c.failed and c.finish_reason == "abort" and c.text, c
        else:  # sent after the kill: waited for the restarted server
            length = openai_peer.choice_length(c.sample_index)
            expected = [openai_peer.token(prompts[1], 2, c.sample_index, t)[0] for t in range(length)]
            assert c.error is None and list(c.token_ids) == [] and c.text, c
            assert c.text == "".join(f"<{tok}>" for tok in expected)
    assert len(again) == 1 and again[0].error is None, "the client uses the restarted server"


async def test_openai_server_down_past_the_bound_raises_one_line(peers):
    server = peers("openai", token_delay_s=0.15)
    await server.wait_up()
    config = _openai_config(server, server_down_timeout_s=1)
    async with asyncio.timeout(30), OpenAIBackend(config) as backend:
        stream = backend.generate([[1, 2, 3], [4, 5, 6]], SamplingParams(max_new_tokens=50), n=2)
        first = await anext(stream)
        server.kill()
        got = [first]
        with pytest.raises(BackendUnavailable, match=r"unreachable for 1 s \(server_down_timeout_s\)"):
            async for c in stream:
                got.append(c)
    # Every choice came out once before the error: prompt 0's second choice cut short, prompt 1's never served.
    assert sorted((c.prompt_index, c.sample_index) for c in got) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [c.failed for c in got] == [False, True, True, True]
    assert all("server_down_timeout_s" in c.error for c in got if c.prompt_index == 1)


# ----- bench/chaos.py --fault generation -----------------------------------------------------------------------


@pytest.mark.slow
def test_bench_chaos_generation_class_loses_and_misscores_nothing_and_writes_its_headline(tmp_path):
    bench = HERE.parents[1] / "bench" / "chaos.py"
    headline = tmp_path / "headline.json"
    headline.write_text('{"sandbox": {"faults": 9, "lost": 0}}\n')  # a class run before: kept
    argv = ["--fault", "generation", "--duration-s", "4", "--after-s", "1", "--interval-s", "0.2,0.5"]
    argv += ["--update-every-s", "1", "--stream", "--out", str(tmp_path / "report.json"), "--json", str(headline)]
    proc = subprocess.run([sys.executable, str(bench), *argv], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = orjson.loads((tmp_path / "report.json").read_bytes())
    faulty = report["samples"]["faults"]
    assert report["faults_injected"]["total"] >= 1 and faulty["returned"] > 0
    assert faulty["lost"] == faulty["duplicated"] == faulty["wrongly_scored"] == 0
    assert report["after_all_as_without_faults"] and report["recovery_s"]["within_bound"]
    table = orjson.loads(headline.read_bytes())
    assert table["sandbox"] == {"faults": 9, "lost": 0}
    assert table["generation"]["passed"] and table["generation"]["faults"] == report["faults_injected"]["total"]
    assert table["generation"]["recovery_bound_s"] == report["recovery_s"]["bound"]
