"""A scripted in-memory generation backend and verifier, for fast tests of the rollout's scheduling.

httpx's MockTransport pattern: the test hands each fake a function that decides what comes back, and when.

    async def script(req: Request) -> Reply | None:     # called once per (prompt, sample) of each generate call
        if problem_id(req.prompt_text) == "p3" and req.sample_index == 1:
            await gate.wait()                           # this sample finishes when the test sets `gate`
        return Reply(text="correct")                    # token ids: the text through the tokenizer
    backend = ScriptedBackend(script, tokenizer=tokenizer)

    async def judge(problem, text) -> Outcome:          # sync or async; may raise, may wait on an event
        return outcome_of(text)
    verifier = ScriptedVerifier(judge)

`ScriptedBackend` implements `engine.generation.GenerationBackend`: each generate call runs one task per sample,
and a completion is yielded when its script call returns, so the finish order is the order the test releases its
gates in (samples whose script does not wait finish in (prompt, sample) order). A script returning None leaves
its sample out of the stream; `Reply(error=...)` is a failed sample, `Reply(finish_reason="abort")` an aborted
one, `Reply(raise_error=...)` makes the stream raise GenerationError when that sample is due. Closing the stream
early (the rollout aborting a round) cancels what is still decoding and records it in `Call.unfinished`.

`ScriptedVerifier` implements the rollout's `Verifier` protocol and records what it started, finished and had
cancelled. Most tests script by table: `plan({"p3": ["correct", Held(gate, "wrong")]})` (a status per sample,
optionally gated) with `held_judge({("p3", 0): gate})` (verification of sample 0 of p3 waits for `gate`).
`tokenizer()` is a real Hugging Face tokenizer, one token per character with a chat template, so the
real `engine.prompts.PromptBuilder` renders prompts and decodes completions (ASCII text round-trips exactly).
The tests import it by name (tests/engine/conftest.py puts this folder on sys.path), like tests/engine/sglang_server.py.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from engine.data import Problem
from engine.generation import Completion, GenerationError, SamplingParams, Timings, WeightFormat, WeightSource
from engine.prompts import PromptBuilder, PromptSettings
from engine.rollout import RolloutSettings
from solvers.failures import error_kind

_SPECIALS = ("<unk>", "</s>", "<|user|>", "<|assistant|>", "<|end|>")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
INSTRUCTIONS = "Write a model and solve it."


def tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer (printable ASCII and newline) with a chat template."""
    vocab = {tok: i for i, tok in enumerate(_SPECIALS)}
    for ch in [chr(b) for b in range(32, 127)] + ["\n"]:
        vocab[ch] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        eos_token="</s>",
        additional_special_tokens=list(_SPECIALS[2:]),
        chat_template=CHAT_TEMPLATE,
    )


def prompt_builder(*, max_prompt_tokens: int = 4096) -> PromptBuilder:
    return PromptBuilder(
        tokenizer(), instructions=INSTRUCTIONS, settings=PromptSettings(max_prompt_tokens=max_prompt_tokens)
    )


def rollout_settings(**overrides: Any) -> RolloutSettings:
    """Small rollout settings for scripted tests: 2 prompts x 2 samples, one round, on-policy."""
    base: dict[str, Any] = dict(
        group_size=2,
        prompts_per_step=2,
        dynamic_sampling=False,
        max_gen_batches=1,
        max_staleness=0,
        queue_size=8,
        verify_concurrency=2,
        seed=0,
    )
    return RolloutSettings(**{**base, **overrides})


def problems(n: int, *, answer: float = 3.0) -> list[Problem]:
    """Problems p0..p{n-1}; `problem_id` reads the id back from a rendered prompt."""
    return [Problem(id=f"p{i}", question=f"Find the optimum of [p{i}].", answer=answer) for i in range(n)]


def problem_id(prompt_text: str) -> str:
    found = re.findall(r"\[(\w+)\]", prompt_text)
    if len(found) != 1:
        raise ValueError(f"expected one [problem id] in the prompt, found {found} in {prompt_text!r}")
    return found[0]


class _Watched:
    """`until(predicate)`: wait for a state the fake reaches, instead of sleeping and hoping."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        self._changed.set()

    async def until(self, predicate: Callable[[], bool], *, timeout_s: float = 10.0) -> None:
        # The timeout only turns a broken test into a failure instead of a hang; nothing is timed.
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


# ----- generation ----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Request:
    """One sample the backend was asked for: sample `sample_index` of prompt `prompt_index` of call `call`."""

    call: int
    prompt_index: int
    sample_index: int
    prompt_ids: tuple[int, ...]
    prompt_text: str  # the prompt decoded by the backend's tokenizer ("" without one)
    params: SamplingParams
    weight_version: int  # the backend's version when the call started


@dataclass(frozen=True, kw_only=True)
class Reply:
    """What the backend returns for one sample.

    token_ids: given, the completion carries them and `text` as its text (as HTTP backends do); left out, the
    ids are `text` through the tokenizer and the completion has no text (the rollout decodes it, as for local).
    """

    text: str = ""
    token_ids: tuple[int, ...] | None = None
    finish_reason: str = "stop"
    error: str | None = None  # a failed sample (finish reason "abort" with this error)
    raise_error: str | None = None  # the stream raises GenerationError(raise_error) when this sample is due
    logprobs: tuple[float, ...] | None = None  # per token; None: -0.5 each


@dataclass(kw_only=True)
class Call:
    """The record of one generate call."""

    index: int
    prompts: tuple[tuple[int, ...], ...]
    params: SamplingParams
    n: int
    weight_version: int  # at the start of the call
    yielded: list[tuple[int, int]] = field(default_factory=list)  # (prompt, sample) in the order yielded
    unfinished: list[tuple[int, int]] = field(default_factory=list)  # still decoding when the stream was closed
    closed: bool = False


Script = Callable[[Request], Awaitable[Reply | None]]
_Done = tuple[int, int, Reply | Exception | None]  # (prompt, sample, what the script returned or raised)


@dataclass(frozen=True, kw_only=True)
class ScriptedConfig:
    """The scripted backend has no options; the protocol asks every backend for its options class."""


class ScriptedBackend(_Watched):
    """An in-memory `GenerationBackend` whose samples are decided by `script`; see the module docstring."""

    name: ClassVar[str] = "scripted"
    config_class: ClassVar[type] = ScriptedConfig
    weight_format: ClassVar[WeightFormat | None] = "state_dict"  # update_weights records what it is given
    needs_model: ClassVar[bool] = False
    resumable: ClassVar[bool] = True  # abort() hands back `progress`; a prompt + those tokens is just a prompt

    def __init__(self, script: Script, *, tokenizer: Any | None = None, weight_version: int = 0) -> None:
        super().__init__()
        self.script, self.tokenizer = script, tokenizer
        self.calls: list[Call] = []
        self.updates: list[WeightSource] = []
        # What a sample still decoding has decoded so far, by (call, prompt, sample): abort() returns it.
        self.progress: dict[tuple[int, int, int], Reply] = {}
        self._version = weight_version
        # Per open call: its samples' tasks and the queue their replies land on.
        self._running: dict[int, tuple[dict[tuple[int, int], asyncio.Task[None]], asyncio.Queue[_Done]]] = {}
        self._state = "new"

    @property
    def weight_version(self) -> int:
        return self._version

    @property
    def yielded(self) -> int:
        """Completions handed to the caller so far, over all calls."""
        return sum(len(c.yielded) for c in self.calls)

    async def __aenter__(self) -> ScriptedBackend:
        if self._state != "new":
            raise RuntimeError(f"ScriptedBackend is {self._state}; make a new one")
        self._state = "open"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._state = "closed"
        await self.abort()

    async def health(self) -> dict[str, bool]:
        return {"in-memory": self._state != "closed"}

    def explain_down(self, down: Sequence[str]) -> str:
        return "the scripted backend is closed; create a new one"

    async def update_weights(self, source: WeightSource, *, version: int | None = None) -> int:
        self.updates.append(source)
        self._version = self._version + 1 if version is None else version
        self._notify()
        return self._version

    async def abort(self) -> None:
        """Every sample still decoding finishes now with finish_reason "abort" and its `progress` (none: empty)."""
        for index, (tasks, done) in self._running.items():
            for (i, j), task in tasks.items():
                if not task.done():  # a finished task has put its reply already
                    task.cancel()
                    partial = self.progress.get((index, i, j), Reply())
                    done.put_nowait((i, j, replace(partial, finish_reason="abort", error=None)))

    async def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, *, n: int = 1
    ) -> AsyncIterator[Completion]:
        if self._state == "closed":
            raise GenerationError("the scripted backend is closed")
        call = Call(
            index=len(self.calls),
            prompts=tuple(tuple(int(t) for t in p) for p in prompts),
            params=params,
            n=n,
            weight_version=self._version,
        )
        self.calls.append(call)
        self._notify()
        submitted = time.monotonic()
        done: asyncio.Queue[_Done] = asyncio.Queue()
        tasks = {
            (i, j): asyncio.create_task(self._run(self._request(call, i, j), done))
            for i in range(len(call.prompts))
            for j in range(n)
        }
        self._running[call.index] = (tasks, done)
        try:
            for _ in range(len(tasks)):
                i, j, reply = await done.get()
                if reply is None:
                    continue
                if isinstance(reply, Exception):
                    raise reply  # a script raising is a backend with a bug: the stream raises it
                if reply.raise_error is not None:
                    raise GenerationError(reply.raise_error)
                completion = self._completion(call, i, j, reply, submitted)
                call.yielded.append((i, j))
                self._notify()
                yield completion
        finally:
            del self._running[call.index]
            call.unfinished = sorted(k for k, t in tasks.items() if not t.done())
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            call.closed = True
            self._notify()

    def _request(self, call: Call, i: int, j: int) -> Request:
        ids = call.prompts[i]
        text = self.tokenizer.decode(list(ids), skip_special_tokens=True) if self.tokenizer is not None else ""
        return Request(
            call=call.index,
            prompt_index=i,
            sample_index=j,
            prompt_ids=ids,
            prompt_text=text,
            params=call.params,
            weight_version=call.weight_version,
        )

    async def _run(self, req: Request, done: asyncio.Queue[_Done]) -> None:
        reply: Reply | Exception | None
        try:
            reply = await self.script(req)
        except Exception as exc:
            reply = exc
        done.put_nowait((req.prompt_index, req.sample_index, reply))

    def _completion(self, call: Call, i: int, j: int, reply: Reply, submitted: float) -> Completion:
        if reply.token_ids is not None:
            ids, text = reply.token_ids, reply.text
        else:
            if self.tokenizer is None:
                raise ValueError("Reply without token_ids needs ScriptedBackend(tokenizer=...) to encode its text")
            ids, text = tuple(self.tokenizer(reply.text, add_special_tokens=False)["input_ids"]), None
        return Completion(
            prompt_index=i,
            sample_index=j,
            token_ids=ids,
            logprobs=reply.logprobs if reply.logprobs is not None else tuple(-0.5 for _ in ids),
            finish_reason=reply.finish_reason,  # type: ignore[arg-type]  (Completion validates it)
            weight_version=call.weight_version,
            timings=Timings(submitted_s=submitted, first_token_s=None, finished_s=time.monotonic()),
            text=text,
            error=reply.error,
        )


# ----- verification --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """A verification result with the fields the rollout reads (`solvers.Outcome` has the same)."""

    status: str
    reward: float
    correct: bool = False
    objective: float | None = None
    reason: str = ""
    error_kind: str | None = None


def outcome_of(text: str) -> Outcome:
    """The default judgement: the completion's first word is its status; "correct" earns reward 1; the failure
    kind is what `solvers.failures` gives that status without a run (an "error" is a runtime error)."""
    status = text.split()[0] if text.strip() else "no_code"
    correct = status == "correct"
    return Outcome(
        status=status,
        reward=1.0 if correct else 0.0,
        correct=correct,
        objective=3.0 if correct else None,
        reason=f"scripted: {text}",
        error_kind=error_kind(status, answer=3.0),
    )


Judge = Callable[[Any, str], Outcome | Awaitable[Outcome]]


class ScriptedVerifier(_Watched):
    """The rollout's `Verifier` protocol over a `judge(problem, text)` function; records every verification."""

    def __init__(self, judge: Judge | None = None) -> None:
        super().__init__()
        self.judge = judge if judge is not None else (lambda problem, text: outcome_of(text))
        self.started: list[tuple[str, str]] = []  # (problem id, text)
        self.finished: list[tuple[str, str]] = []
        self.cancelled: list[tuple[str, str]] = []

    async def verify(self, problem: Any, text: str) -> Outcome:
        key = (problem.id, text)
        self.started.append(key)
        self._notify()
        try:
            result = self.judge(problem, text)
            if inspect.isawaitable(result):
                result = await result
        except asyncio.CancelledError:
            self.cancelled.append(key)
            self._notify()
            raise
        self.finished.append(key)
        self._notify()
        return result


# ----- scripting by table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Held:
    """A sample that finishes decoding only once `gate` is set (never, if the test does not set it)."""

    gate: asyncio.Event
    reply: str | Reply | None


Item = str | Reply | Held | None


def plan(table: dict[str, Sequence[Item]]) -> Script:
    """A backend script from problem id -> one item per sample index. A string is the status the verifier will
    read; the text gets a "(p3 #1)" tag so every completion is unique and can be found in samples.jsonl."""

    async def script(req: Request) -> Reply | None:
        pid = problem_id(req.prompt_text)
        item = table[pid][req.sample_index]
        if isinstance(item, Held):
            await item.gate.wait()
            item = item.reply
        if isinstance(item, str):
            return Reply(text=f"{item} ({pid} #{req.sample_index})")
        return item

    return script


def held_judge(holds: dict[tuple[str, int], asyncio.Event]) -> Judge:
    """`outcome_of` for `plan`'s tagged texts, after waiting on `holds[(problem id, sample index)]` where the
    test put a gate there."""

    async def judge(problem: Any, text: str) -> Outcome:
        tag = re.search(r"#(\d+)\)$", text)
        gate = holds.get((problem.id, int(tag.group(1)))) if tag else None
        if gate is not None:
            await gate.wait()
        return outcome_of(text)

    return judge


async def settle() -> None:
    """Let every ready task run to its next real wait. Used only to show that something does NOT happen."""
    for _ in range(200):
        await asyncio.sleep(0)
