"""The answer prefix in the rollout: it ends every prompt the backend gets, and the verifier, the batch and
samples.jsonl see it in front of each completion's text, whether the backend returned token ids only (local) or
text as well (HTTP backends). Scripted backend and verifier (tests/engine/scripted.py): no model, no sandbox.
Run: .venv/bin/pytest tests/engine/test_rollout_prefix.py
"""

from __future__ import annotations

import scripted

from engine.generation import SamplingParams
from engine.prompts import ExampleConfig, PromptBuilder, PromptSettings
from engine.records import RunRecorder, read_jsonl
from engine.rollout import Rollout

PREFIX = "```python\nimport pulp\n"
EXAMPLE = ExampleConfig(question="Maximise x with x <= 2.", answer="```python\nx = 2\n```")


async def test_the_answer_prefix_ends_each_prompt_and_starts_each_scored_and_recorded_text(tmp_path):
    tokenizer = scripted.tokenizer()
    prompts = PromptBuilder(
        tokenizer,
        instructions=scripted.INSTRUCTIONS,
        settings=PromptSettings(max_prompt_tokens=4096, example=EXAMPLE, answer_prefix=PREFIX),
    )
    replies = {  # p0 as a local backend returns it (ids only), p1 as an HTTP backend does (ids and text)
        "p0": lambda j: scripted.Reply(text=f"correct {j}"),
        "p1": lambda j: scripted.Reply(
            text=f"wrong {j}", token_ids=tuple(tokenizer(f"wrong {j}", add_special_tokens=False)["input_ids"])
        ),
    }

    async def script(req):
        return replies[scripted.problem_id(req.prompt_text)](req.sample_index)

    backend = scripted.ScriptedBackend(script, tokenizer=tokenizer)
    verifier = scripted.ScriptedVerifier(lambda problem, text: scripted.outcome_of(text.removeprefix(PREFIX)))
    with RunRecorder(tmp_path) as recorder:
        rollout = Rollout(
            backend=backend,
            verifier=verifier,
            prompts=prompts,
            problems=scripted.problems(2),
            settings=scripted.rollout_settings(),
            sampling=SamplingParams(max_new_tokens=16, seed=7),
            recorder=recorder,
            start_step=0,
        )
        async with backend, rollout:
            result = await rollout.next_batch()

    prefix_ids = tuple(tokenizer(PREFIX, add_special_tokens=False)["input_ids"])
    for ids in backend.calls[0].prompts:
        text = tokenizer.decode(list(ids))
        assert ids[-len(prefix_ids) :] == prefix_ids and text.endswith(f"<|assistant|>{PREFIX}")
        assert text.index(EXAMPLE.answer) < text.index(scripted.INSTRUCTIONS, text.index(EXAMPLE.answer))
    expected = {
        (pid, j): PREFIX + f"{status} {j}" for pid, status in (("p0", "correct"), ("p1", "wrong")) for j in (0, 1)
    }
    assert sorted(verifier.finished) == sorted((pid, text) for (pid, _), text in expected.items())
    assert {(s.problem_id, s.sample_index): s.text for s in result.samples} == expected
    assert result.rewards.count(1.0) == 2 and result.metrics["accuracy"] == 0.5
    # The prefix is prompt: the learner trains on the generated tokens only.
    assert all(s.response_ids == tuple(tokenizer(s.text[len(PREFIX) :])["input_ids"]) for s in result.samples)
    rows = read_jsonl(tmp_path / "samples.jsonl")
    assert {(r["problem_id"], r["sample_index"]): r["text"] for r in rows} == expected
