"""Partial rollouts (engine/rollout/partial.py): a weight update cuts the samples still decoding short, each resumes
from prompt + its tokens on the new weights, and every token keeps the version (and log-prob) of the weights that
generated it.

The scheduling runs on the scripted backend (tests/engine/scripted.py: abort() hands back what a sample has
decoded so far, `progress`); the SGLang client against the protocol peer (tests/engine/sglang_server.py, which
answers aborts as SGLang 0.5.23 does); the learner's per-token correction on a tiny real model; the config
refusals on the real backends.
Run: .venv/bin/pytest tests/engine/test_partial_rollouts.py
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import scripted
import sglang_server as peer_mod

from engine.generation import SamplingParams, backend_class
from engine.generation.base import Completion, Timings, can_resume, row_seed
from engine.generation.sglang_client import SGLangBackend, SGLangConfig
from engine.records import RunRecorder, read_jsonl
from engine.rollout import Rollout
from engine.rollout.partial import Resumer, joined


def _load(name: str, alias: str):
    if alias not in sys.modules:  # tests/ is no package: loaded by path, once
        spec = importlib.util.spec_from_file_location(alias, Path(__file__).with_name(f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[alias] = module
        spec.loader.exec_module(module)
    return sys.modules[alias]


Reply = scripted.Reply
PROMPTS = scripted.prompt_builder()
SAMPLING = SamplingParams(max_new_tokens=16, seed=7)
LONG = "correct "  # what the long sample has decoded when the update cuts it (8 tokens, one per character)


def encode(text: str) -> tuple[int, ...]:
    return tuple(PROMPTS.tokenizer(text, add_special_tokens=False)["input_ids"])


class LongSample:
    """A script: sample 0 of `pid` decodes LONG and then hangs until aborted (each time it is sent, up to `cuts`
    times, it decodes 8 more characters); its last resumption ends it. The others end at once."""

    def __init__(self, pid: str, *, cuts: int = 1, hang: tuple[str, ...] = ()) -> None:
        self.pid, self.cuts, self.hang = pid, cuts, hang
        self.backend = scripted.ScriptedBackend(self.script, tokenizer=PROMPTS.tokenizer)
        self.requests: list = []  # the long sample's requests

    async def script(self, req) -> Reply:
        pid = scripted.problem_id(req.prompt_text)
        resumed = self.backend.calls[req.call].n == 1  # a resumption: one prompt, its sample index 0
        continues = req.prompt_text.endswith((LONG, "bcdefgh"))  # what the long sample decoded before a cut
        if not (pid == self.pid and (continues if resumed else req.sample_index == 0)):
            if pid in self.hang and not resumed:  # `hang`: the first request waits until an update cuts it
                await asyncio.Event().wait()
            return Reply(text=f"wrong ({pid} #{req.sample_index})")
        self.requests.append(req)
        if len(self.requests) <= self.cuts:
            piece = LONG if len(self.requests) == 1 else f"{len(self.requests)}bcdefgh"
            lp = -0.1 * len(self.requests)  # each version's own log-probs
            self.backend.progress[(req.call, req.prompt_index, req.sample_index)] = Reply(
                text=piece, logprobs=(lp,) * len(piece)
            )
            await asyncio.Event().wait()  # decoding until the update aborts it
        return Reply(text="!", logprobs=(-0.9,))


def make_rollout(backend, *, staleness: int, recorder=None, sampling=SAMPLING, **overrides) -> Rollout:
    settings = scripted.rollout_settings(max_staleness=staleness, partial_rollouts=True, **overrides)
    return Rollout(
        backend=backend,
        verifier=scripted.ScriptedVerifier(),
        prompts=PROMPTS,
        problems=scripted.problems(4),
        settings=settings,
        sampling=sampling,
        recorder=recorder,
    )


async def until(predicate) -> None:
    async with asyncio.timeout(10):  # turns a broken test into a failure, not a hang; nothing is timed
        while not predicate():
            await asyncio.sleep(0.005)


def sample_of(result, pid: str, index: int = 0):
    return next(s for s in result.samples if s.problem_id == pid and s.sample_index == index)


# ----- scheduling on the scripted backend ---------------------------------------------------------------------


async def test_an_update_cuts_the_long_sample_and_it_resumes_on_the_new_weights(tmp_path):
    # Data order with seed 0 over 4 problems: batch 0 takes the first two, batch 1 (generated ahead) the others.
    order = [f"p{i}" for i in scripted_order(4)]
    script = LongSample(order[2])
    with RunRecorder(tmp_path) as recorder:
        async with script.backend as backend, make_rollout(backend, staleness=1, recorder=recorder) as rollout:
            first = await rollout.next_batch()
            assert {g.problem_id for g in first.groups} == set(order[:2])
            await until(lambda: script.backend.progress)  # batch 1 is decoding; its long sample has 8 tokens
            assert rollout.batches_ready == 0
            assert await rollout.update_weights({"step": 1}) == 1
            second = await rollout.next_batch()
    s = sample_of(second, order[2])
    prompt = PROMPTS.build(f"Find the optimum of [{order[2]}].").ids
    # The resumed request: prompt + the 8 tokens so far, the remaining budget, after the update.
    resumed = script.requests[1]
    assert resumed.prompt_ids == (*prompt, *encode(LONG)) and resumed.params.max_new_tokens == 16 - 8
    assert resumed.weight_version == 1 and script.requests[0].weight_version == 0
    assert s.response_ids == encode(LONG + "!") and s.text == LONG + "!" and s.finish_reason == "stop"
    assert s.token_versions == (0,) * 8 + (1,) and s.versions == s.token_versions
    assert s.logprobs == pytest.approx((-0.1,) * 8 + (-0.9,))
    assert s.weight_version == 0 and s.status == "correct"  # the oldest token's version
    assert second.token_versions[second.samples.index(s)] == s.token_versions
    # The learner's batch carries the per-token behaviour log-probs in the same order.
    batch = second.learner_batch()
    assert list(batch.old_logprobs[second.samples.index(s)]) == pytest.approx([-0.1] * 8 + [-0.9])
    m = second.metrics
    assert m["partial/cuts"] == 1 and m["partial/resumed"] == 1 and m["partial/mixed_versions"] == 1
    assert m["staleness_max"] == 1 and m["filtered/stale"] == 0 and m["gen_tokens"] == 9 + 3 * len("wrong (pX #0)")
    rows = {(r["problem_id"], r["sample_index"]): r for r in read_jsonl(tmp_path / "samples.jsonl")}
    assert rows[(order[2], 0)]["version_spans"] == [[0, 0, 8], [1, 8, 9]]
    assert rows[(order[2], 1)]["version_spans"] is None and rows[(order[2], 1)]["weight_version"] == 0


def scripted_order(n: int) -> list[int]:
    from engine.data import epoch_order

    return epoch_order(n, seed=0, epoch=0)


async def test_a_sample_cut_twice_has_three_versions_and_its_staleness_is_its_oldest_tokens():
    order = [f"p{i}" for i in scripted_order(4)]
    for staleness in (2, 1):
        # The other samples of batch 1 hang without a token until the first update, then start again on version 1.
        script = LongSample(order[2], cuts=2, hang=(order[2], order[3]))
        sampling = SamplingParams(max_new_tokens=32, seed=7)
        async with script.backend as backend, make_rollout(backend, staleness=staleness, sampling=sampling) as rollout:
            await rollout.next_batch()
            await until(lambda script=script: len(script.backend.progress) == 1)
            await rollout.update_weights({}, version=1)
            await until(lambda script=script: len(script.backend.progress) == 2)
            await rollout.update_weights({}, version=2)
            second = await rollout.next_batch()
        assert [r.params.max_new_tokens for r in script.requests] == [32, 24, 16]
        assert [r.weight_version for r in script.requests] == [0, 1, 2]
        # Cut: the long sample twice, the 3 hung samples once each (no token yet: they start again on version 1).
        assert second.metrics["partial/cuts"] == 5 and second.metrics["partial/resumed"] == 4
        assert second.metrics["partial/mixed_versions"] == 1
        if staleness == 2:
            s = sample_of(second, order[2])
            assert s.response_ids == encode(LONG + "2bcdefgh!") and s.finish_reason == "stop"
            assert s.token_versions == (0,) * 8 + (1,) * 8 + (2,) and s.weight_version == 0
            assert s.logprobs == pytest.approx((-0.1,) * 8 + (-0.2,) * 8 + (-0.9,))
            assert second.metrics["staleness_max"] == 2 and second.metrics["filtered/stale"] == 0
            assert {s.weight_version for s in second.samples} == {0, 1}
        else:  # the oldest token is 2 versions old: over the bound of 1, although its newest token is current
            assert second.metrics["filtered/stale"] == 1
            assert [g.problem_id for g in second.groups] == [order[3]]
            assert {s.versions for s in second.samples} == {(1,) * len("wrong (pX #0)")}


async def test_a_resumption_the_budget_does_not_allow_ends_at_the_length_limit():
    """Cut exactly at max_new_tokens: no request is sent, the sample ends as "length"."""
    order = [f"p{i}" for i in scripted_order(4)]
    script = LongSample(order[2], cuts=2)
    async with script.backend as backend, make_rollout(backend, staleness=2) as rollout:
        await rollout.next_batch()
        await until(lambda: len(script.backend.progress) == 1)
        await rollout.update_weights({}, version=1)
        await until(lambda: len(script.backend.progress) == 2)
        await rollout.update_weights({}, version=2)
        second = await rollout.next_batch()
    assert len(script.requests) == 2  # 8 + 8 tokens = the budget of 16: nothing left to ask for
    s = sample_of(second, order[2])
    assert s.finish_reason == "length" and s.response_ids == encode(LONG + "2bcdefgh")
    assert s.token_versions == (0,) * 8 + (1,) * 8 and s.logprobs == pytest.approx((-0.1,) * 8 + (-0.2,) * 8)
    assert second.metrics["partial/cuts"] == 2 and second.metrics["staleness_max"] == 2


async def test_a_resumption_the_backend_fails_is_a_backend_error_with_its_tokens_so_far():
    order = [f"p{i}" for i in scripted_order(4)]
    script = LongSample(order[2])
    original = script.script

    async def failing(req) -> Reply:
        if req.prompt_text.endswith(LONG):  # the resumed request
            return Reply(finish_reason="abort", error="HTTP 500 after 3 attempts")
        return await original(req)

    script.backend.script = failing
    async with script.backend as backend, make_rollout(backend, staleness=1) as rollout:
        await rollout.next_batch()
        await until(lambda: script.backend.progress)
        await rollout.update_weights({})
        second = await rollout.next_batch()
    # The group lost a sample to the backend: it is left out of training, counted, never scored 0.
    assert second.metrics["status/backend_error"] == 1 and second.metrics["partial/cuts"] == 1
    assert all(s.problem_id != order[2] or s.sample_index != 0 for s in second.samples)


def test_the_run_config_reaches_the_rollout_settings():
    from engine.config import Config
    from engine.train import rollout_settings

    cfg = Config()
    assert rollout_settings(cfg).partial_rollouts is False
    cfg.rollout.partial_rollouts, cfg.rollout.max_staleness = True, 1
    assert rollout_settings(cfg).partial_rollouts is True


def test_joining_pieces_keeps_every_tokens_version():
    def piece(ids, version, reason, *, lp):
        timings = Timings(submitted_s=1.0, first_token_s=None, finished_s=2.0)
        return Completion(
            prompt_index=1, sample_index=3, token_ids=ids, logprobs=(lp,) * len(ids), finish_reason=reason,
            weight_version=version, timings=timings, text="x",
        )  # fmt: skip

    whole = joined([piece((4, 5), 2, "abort", lp=-1.0), piece((), 3, "abort", lp=0), piece((6,), 4, "stop", lp=-2.0)])
    assert whole.token_ids == (4, 5, 6) and whole.logprobs == (-1.0, -1.0, -2.0) and whole.finish_reason == "stop"
    assert whole.token_versions == (2, 2, 4) and whole.weight_version == 2 and whole.text is None
    assert (whole.prompt_index, whole.sample_index) == (1, 3)
    same = joined([piece((4,), 5, "abort", lp=-1.0), piece((6,), 5, "length", lp=-1.0)])
    assert same.token_versions == () and same.versions == (5, 5)
    with pytest.raises(ValueError, match="token_versions has 1 entries for 2 token"):
        Completion(**{**vars(piece((1, 2), 0, "stop", lp=0)), "token_versions": (0,)})


# ----- the SGLang client against the protocol peer --------------------------------------------------------------


@pytest.fixture
async def peer():
    server = peer_mod.SGLangPeer()
    await server.start()
    yield server
    await server.stop()


async def cut_and_resume(backend: SGLangBackend, peer, tmp_path: Path, prompts, params: SamplingParams, *, n: int):
    """Start `prompts`, cut every sample by a weight update once each has decoded 3 tokens, resume them all."""
    resumer = Resumer(backend)
    sent = await resumer.ready()
    peer.token_delay_s = 0.01
    stream = backend.generate(prompts, params, n=n)
    first = asyncio.ensure_future(stream.__anext__())
    await until(lambda: len(peer.decoded) == len(prompts) * n and min(peer.decoded.values()) >= 3)
    update = asyncio.create_task(resumer.update_weights(tmp_path, version=1))
    cut = [await first] + [c async for c in stream]
    assert await update == 1 and all(resumer.cut_by_update(c, sent) for c in cut)
    peer.token_delay_s = 0.0
    whole = await asyncio.gather(*(resumer.finish(prompts[c.prompt_index], c, params) for c in cut))
    return cut, whole


@pytest.mark.parametrize(("stream", "incremental"), [(False, False), (True, True)], ids=["json", "incremental"])
async def test_the_sglang_client_resumes_cut_samples_on_the_new_weights(peer, tmp_path, stream, incremental):
    peer.incremental = incremental
    prompts = [[5, 6, 7], [8, 9]]
    params = SamplingParams(max_new_tokens=300, seed=5, temperature=0.9)
    async with SGLangBackend(SGLangConfig(urls=(peer.url,), stream=stream)) as backend:
        cut, whole = await cut_and_resume(backend, peer, tmp_path, prompts, params, n=2)
    assert len(cut) == 4
    for c, w in zip(cut, whole, strict=True):
        i, j, k = c.prompt_index, c.sample_index, len(c.token_ids)
        ids, lps, _ = peer_mod.expected_tokens(prompts[i], max_new_tokens=300, seed=row_seed(5, i, j), temperature=0.9)
        assert 3 <= k < 300 and list(c.token_ids) == ids[:k] and list(c.logprobs) == pytest.approx(lps[:k])
        assert c.finish_reason == "abort" and c.error is None and c.weight_version == 0
        # The rest: what the new weights ("1") decode after prompt + the partial tokens, with the resumed seed.
        seed = row_seed(row_seed(5, i, j + k), 0, 0)
        rest, rest_lps, reason = peer_mod.expected_tokens(
            prompts[i] + ids[:k], max_new_tokens=300 - k, seed=seed, version="1", temperature=0.9
        )
        assert list(w.token_ids) == ids[:k] + rest and list(w.logprobs) == pytest.approx(lps[:k] + rest_lps)
        assert w.finish_reason == reason and not w.failed and w.text is None
        assert w.versions == (0,) * k + (1,) * len(rest) and w.weight_version == 0
    paths = [path for path, _ in peer.requests]
    # Every sample was aborted before the update (which therefore did not wait for 300 tokens each).
    assert paths.index("/update_weights_from_disk") > max(k for k, p in enumerate(paths) if p == "/abort_request")
    assert paths.count("/abort_request") == 4
    resumed = {tuple(b["input_ids"]): b for b in peer.generate_requests if b["input_ids"] not in prompts}
    assert len(resumed) == 4
    for c in cut:  # input_ids = prompt + the partial tokens, max_new_tokens = what is left of the budget
        body = resumed[(*prompts[c.prompt_index], *c.token_ids)]
        assert body["sampling_params"]["max_new_tokens"] == 300 - len(c.token_ids)


async def test_a_rollout_on_the_peer_resumes_the_batch_generated_ahead(peer, tmp_path):
    """The whole path: Rollout -> SGLang client -> peer. Batch 1 is decoding when the learner's update comes; every
    sample of it is cut, resumed on the new weights, verified, and handed over with the versions of its tokens."""
    params = SamplingParams(max_new_tokens=120, seed=11)
    async with SGLangBackend(SGLangConfig(urls=(peer.url,))) as backend:
        rollout = Rollout(
            backend=backend,
            verifier=scripted.ScriptedVerifier(),
            prompts=PROMPTS,
            problems=scripted.problems(4),
            settings=scripted.rollout_settings(max_staleness=1, partial_rollouts=True),
            sampling=params,
        )
        async with rollout:
            await rollout.next_batch()  # batch 0, whole on version 0
            peer.token_delay_s = 0.01  # batch 1 decodes slowly: 1.2 s a sample at least
            await until(lambda: peer.inflight == 4)
            rids = [b["rid"] for b in peer.generate_requests[-4:]]
            await until(lambda: all(peer.decoded.get(r, 0) >= 3 for r in rids))
            await rollout.update_weights(tmp_path)
            peer.token_delay_s = 0.0
            second = await rollout.next_batch()
    assert len(second) == 4 and second.metrics["partial/cuts"] == 4 and second.metrics["partial/resumed"] == 4
    assert second.metrics["staleness_max"] == 1 and second.metrics["filtered/stale"] == 0
    for s in second.samples:
        k = s.versions.count(0)
        assert 3 <= k < 120 and s.versions == (0,) * k + (1,) * (len(s.versions) - k) and s.weight_version == 0
        # Its first k tokens are what version 0 decodes for the prompt, the rest what version 1 decodes after them.
        # (Of the group's two first requests, the one with this sample's seed: the other's tokens differ.)
        seeds = [
            b["sampling_params"]["sampling_seed"] for b in peer.generate_requests if b["input_ids"] == [*s.prompt_ids]
        ]
        decoded = [peer_mod.expected_tokens(list(s.prompt_ids), max_new_tokens=120, seed=seed) for seed in seeds]
        ids, lps, _ = next(d for d in decoded if d[0][:k] == list(s.response_ids[:k]))
        resumed = next(b for b in peer.generate_requests if b["input_ids"] == [*s.prompt_ids, *ids[:k]])
        rest, rest_lps, reason = peer_mod.expected_tokens(
            resumed["input_ids"], max_new_tokens=120 - k, seed=resumed["sampling_params"]["sampling_seed"], version="1"
        )
        assert list(s.response_ids) == ids[:k] + rest and list(s.logprobs) == pytest.approx(lps[:k] + rest_lps)
        assert s.finish_reason == reason and not s.infra_failure


@pytest.mark.slow
def test_engine_run_with_partial_rollouts_on_a_slow_peer(tiny_model, tmp_path):
    """engine.run, one process, against a peer in its own process that decodes 0.2 s a token: with max_staleness
    1, batch 1 (8 s of decoding) is still decoding when the learner's first update comes (a step takes ~3 s), so
    the update cuts its samples, which resume."""
    import subprocess

    import orjson

    torchrun_test = _load("test_sglang_torchrun", "sglang_torchrun_test")
    port, record = torchrun_test.free_port(), tmp_path / "server.jsonl"
    cmd = [sys.executable, str(Path(__file__).with_name("sglang_server.py")), "--port", str(port)]
    server = subprocess.Popen([*cmd, "--record", str(record), "--token-delay-s", "0.2"], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        torchrun_test.wait_up(url, server)
        args = [sys.executable, "-m", "engine.run", "--quiet",
                f"model.path={tiny_model}", f"run.output_dir={tmp_path}", "run.name=t", "run.steps=2",
                "run.save_every=2", "rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_staleness=1",
                "rollout.partial_rollouts=true", "algorithm.use_generator_logprobs=false",
                "algorithm.rollout_correction=decoupled", "generation.sampling.max_new_tokens=40",
                "sandbox.workers=1", "data.num_problems=16",
                "generation.backend=sglang", f"generation.sglang={{urls: [{url}]}}"]  # fmt: skip
        done = subprocess.run(args, cwd=torchrun_test.REPO, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        server.terminate()
        server.wait()
    rows = [orjson.loads(line) for line in record.read_bytes().splitlines()]
    paths = [r["path"] for r in rows]
    updates = [k for k, p in enumerate(paths) if p == "/update_weights_from_disk"]
    assert len(updates) == 2  # one per step
    # The first update found batch 1 decoding: it aborted its samples first.
    assert paths[updates[0] - 1] == "/abort_request"
    metrics = [orjson.loads(line) for line in (tmp_path / "t" / "metrics.jsonl").read_bytes().splitlines()]
    cuts = sum(m.get("partial/cuts", 0) for m in metrics)
    assert 0 < sum(m.get("partial/resumed", 0) for m in metrics) <= cuts
    samples = [orjson.loads(line) for line in (tmp_path / "t" / "samples.jsonl").read_bytes().splitlines()]
    spans = [s["version_spans"] for s in samples if s["version_spans"]]
    assert spans and all(len(v) >= 2 and v[0][0] < v[-1][0] for v in spans)
    assert all("train/mismatch_kl" in m for m in metrics if "train/loss" in m)


# ----- who may turn it on -------------------------------------------------------------------------------------


def test_only_backends_that_can_resume_take_the_option():
    assert can_resume(backend_class("sglang")) and can_resume(scripted.ScriptedBackend)
    assert not can_resume(backend_class("local")) and not can_resume(backend_class("openai"))
    with pytest.raises(ValueError, match=r"needs rollout\.max_staleness >= 1"):
        scripted.rollout_settings(max_staleness=0, partial_rollouts=True)


@pytest.mark.parametrize(
    ("backend", "staleness", "message"),
    [
        ("local", 1, "generation.backend=local cannot resume an aborted sample from its partial tokens; use sglang"),
        ("openai", 1, "generation.backend=openai serves a fixed model"),  # cannot train at all (nor resume)
        ("sglang", 0, "rollout.partial_rollouts needs rollout.max_staleness >= 1"),
    ],
)
async def test_the_run_config_refuses_partial_rollouts_it_cannot_honour(backend, staleness, message):
    from engine.config import Config
    from engine.train import RunError, check_generation

    cfg = Config()
    cfg.generation.backend = backend
    cfg.rollout.partial_rollouts, cfg.rollout.max_staleness = True, staleness
    with pytest.raises(RunError, match=re.escape(message)):
        await check_generation(cfg)


async def test_a_rollout_refuses_a_backend_that_cannot_resume():
    class Fixed(scripted.ScriptedBackend):
        resumable = False

    backend = Fixed(scripted.plan({}), tokenizer=PROMPTS.tokenizer)
    with pytest.raises(ValueError, match="the scripted backend cannot resume an aborted sample"):
        make_rollout(backend, staleness=1)
