"""The `openai` generation backend: any OpenAI-compatible endpoint (vLLM, SGLang's /v1, hosted APIs).

For evaluating API models and vLLM servers; it cannot train (a served model's weights are not ours to
swap: `update_weights` refuses). One streamed request per prompt asks for the n samples (`n`), and each
choice is handed over the moment its `finish_reason` arrives.

- `endpoint: completions` posts /completions with `prompt` = the token ids (a string prompt also works);
  `endpoint: chat` posts /chat/completions with `messages` (pass each prompt as a list of
  {"role", "content"} dicts).
- Log-probs: `logprobs: 1` (completions) or `logprobs: true` (chat) when `logprobs` is on. Token ids come
  from `token_ids` in a choice (vLLM's `return_token_ids`), from the `id` of each `logprobs.content` entry
  (llama.cpp's server, which gives completions the chat shape `{"content": [{"id", "token", "bytes",
  "logprob", "top_logprobs"}]}`), or from log-prob tokens spelled "token_id:123" (vLLM's
  `return_tokens_as_token_ids`); switch vLLM's on through `extra_body`. Without any of them a completion
  carries `text` and empty `token_ids`.
- `health()` asks GET /health at the server's root (the base URL without `/v1`): any answer but a 5xx
  counts as up. The served model's list (GET /models) is never needed when `model` is given, so a server
  whose /models fails (`transformers serve` answers 500 there without a hub cache) still serves.
- `stop_token_ids`, `top_k` and `ignore_eos` are not OpenAI parameters: they are sent only when set (vLLM and
  SGLang accept them; api.openai.com rejects them).

Retries: connection errors, timeouts, 5xx and 429 are retried with backoff while no choice has streamed;
a request that breaks later delivers its unfinished choices as failed (finish_reason "abort", `error`). When the
connection itself fails (the server died or restarts), the retry waits until GET /health answers again instead
of backing off; once the server has been unreachable for `server_down_timeout_s`, generate raises
BackendUnavailable (the unfinished choices are delivered as failed first).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from engine.generation.base import (
    BackendUnavailable,
    Completion,
    GenerationError,
    SamplingParams,
    Timings,
    WeightFormat,
    WeightSource,
)
from engine.generation.http import (
    JSON_HEADERS,
    SSE_DONE,
    FatalHTTPError,
    HTTPBackend,
    HTTPOptions,
    RetryableHTTPError,
    classify,
    dumps,
    get_status,
    loads,
    raise_for_status,
    sse_events,
    unreachable,
)

_TOKEN_ID = re.compile(r"^token_id:(\d+)$")
Prompt = Sequence[int] | str | Sequence[Mapping[str, Any]]


@dataclass(frozen=True, kw_only=True)
class OpenAIConfig(HTTPOptions):
    """Options of the openai backend (the `generation.openai` config section)."""

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = ""
    endpoint: Literal["completions", "chat"] = "completions"
    # The key is read from this environment variable at start (never stored in configs).
    api_key_env: str = "OPENAI_API_KEY"
    logprobs: bool = True
    # Extra request fields, e.g. {"return_token_ids": true} for vLLM.
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    max_concurrency: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if not self.model:
            raise ValueError("OpenAIConfig.model is required: the served model's name (GET {base_url}/models)")
        if self.endpoint not in ("completions", "chat"):
            raise ValueError(f"OpenAIConfig.endpoint must be 'completions' or 'chat', got {self.endpoint!r}")


@dataclass(kw_only=True)
class _Choice:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    first_token_s: float | None = None
    finish: str | None = None


class OpenAIBackend(HTTPBackend):
    """Streams n samples per prompt from an OpenAI-compatible server; see the module docstring."""

    name: ClassVar[str] = "openai"
    config_class: ClassVar[type] = OpenAIConfig
    weight_format: ClassVar[WeightFormat | None] = None
    needs_model: ClassVar[bool] = False

    def __init__(self, config: OpenAIConfig) -> None:
        super().__init__()
        self.config = config
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._requests: set[asyncio.Task[Any]] = set()
        self._backoff = config.backoff
        self._down_since: float | None = None  # when a connection to the server last failed, until it answers
        self._back: asyncio.Task[None] | None = None  # the health poll every request waiting for the server shares

    @property
    def weight_version(self) -> int:
        return 0

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.config.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def abort(self) -> None:
        """Cancel in-flight requests; closing the connection is how these servers learn of an abort."""
        for task in list(self._requests):
            task.cancel()
        if self._back is not None:
            self._back.cancel()

    async def health(self) -> dict[str, bool]:
        """{base_url: reachable}: GET /health at the server's root (vLLM, SGLang, llama.cpp and `transformers
        serve` have one) answers with anything but a 5xx. A server without that route still answers (404), so
        this checks that the server is up, not that it serves the model: the first request tells that."""
        root = self.config.base_url.removesuffix("/v1")
        async with self._probe_session() as session:
            status = await get_status(session, f"{root}/health", timeout_s=self.config.connect_timeout_s)
        return {self.config.base_url: status is not None and status < 500}

    def explain_down(self, down: Sequence[str]) -> str:
        where = ", ".join(down)
        return f"OpenAI-compatible server at {where} is unreachable (no answer to GET /health); start it or fix the URL"

    async def update_weights(self, source: WeightSource, *, version: int | None = None) -> int:
        raise GenerationError("the openai backend serves a fixed model and cannot load weights")

    async def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, *, n: int = 1
    ) -> AsyncIterator[Completion]:
        await self.start()
        if n < 1:
            raise ValueError(f"group size n must be >= 1, got {n}")
        queue: asyncio.Queue[Completion] = asyncio.Queue()
        submitted = time.monotonic()
        tasks = [asyncio.create_task(self._prompt(i, p, params, n, submitted, queue)) for i, p in enumerate(prompts)]
        self._requests.update(tasks)
        try:
            for _ in range(len(tasks) * n):
                yield await queue.get()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, BackendUnavailable):
                    raise result
                if isinstance(result, Exception):
                    raise GenerationError(f"openai backend failed: {result!r}") from result
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._requests.difference_update(tasks)

    async def _prompt(
        self, i: int, prompt: Prompt, params: SamplingParams, n: int, submitted: float, out: asyncio.Queue[Completion]
    ) -> None:
        """All n choices of one prompt, with retries while nothing has streamed; puts exactly n completions."""
        choices = [_Choice() for _ in range(n)]
        sent: set[int] = set()

        def emit(j: int, reason: str, error: str | None) -> None:
            c = choices[j]
            sent.add(j)
            out.put_nowait(
                Completion(
                    prompt_index=i,
                    sample_index=j,
                    token_ids=tuple(c.token_ids),
                    logprobs=tuple(c.logprobs),
                    finish_reason=reason,  # type: ignore[arg-type]
                    weight_version=0,
                    text=c.text,
                    error=error,
                    timings=Timings(submitted_s=submitted, first_token_s=c.first_token_s, finished_s=time.monotonic()),
                )
            )

        error = "not attempted"
        try:
            for attempt in range(self.config.max_retries + 1):
                try:
                    async with self._slots:
                        await self._stream(self._body(prompt, params, n), choices, emit)
                    return
                except Exception as exc:
                    kind = classify(exc, self._url)
                    if kind is None:
                        raise
                    error = str(kind)
                    streamed = any(c.text or c.token_ids for c in choices)
                    if streamed or isinstance(kind, FatalHTTPError) or attempt == self.config.max_retries:
                        break
                    if unreachable(exc):
                        try:
                            await self._server_back()
                        except BackendUnavailable as down:
                            for j in range(n):
                                if j not in sent:
                                    emit(j, "abort", f"{down} (request for prompt {i})")
                            raise
                        continue
                await asyncio.sleep(self._backoff.delay(attempt))
            for j in range(n):
                if j not in sent:
                    emit(j, "abort", f"{error} (request for prompt {i})")
        except BaseException as exc:
            # Keep the caller's count whole: every choice is delivered, cancelled or broken ones as "abort".
            unexpected = None if isinstance(exc, asyncio.CancelledError) else f"unexpected failure: {exc!r}"
            for j in range(n):
                if j not in sent:
                    emit(j, "abort", unexpected)
            raise

    async def _server_back(self) -> None:
        """Wait until the server answers its health check again (one poll shared by every waiting request);
        BackendUnavailable once it has been unreachable for server_down_timeout_s."""
        if self._down_since is None:
            self._down_since = time.monotonic()
        if self._back is None or self._back.done():
            self._back = asyncio.create_task(self._poll_health(self._down_since))
        await asyncio.shield(self._back)

    async def _poll_health(self, since: float) -> None:
        bound = self.config.server_down_timeout_s
        for attempt in itertools.count():
            if (await self.health())[self.config.base_url]:
                self._down_since = None
                return
            if time.monotonic() >= since + bound:
                raise BackendUnavailable(
                    f"the OpenAI-compatible server at {self.config.base_url} has been unreachable for {bound:g} s "
                    "(server_down_timeout_s); restart it or raise server_down_timeout_s"
                )
            await asyncio.sleep(min(1.0, 0.05 * 2**attempt, max(0.0, since + bound - time.monotonic())))

    @property
    def _url(self) -> str:
        path = "/chat/completions" if self.config.endpoint == "chat" else "/completions"
        return f"{self.config.base_url}{path}"

    def _body(self, prompt: Prompt, params: SamplingParams, n: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.config.model,
            "n": n,
            "stream": True,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if self.config.endpoint == "chat":
            if isinstance(prompt, str) or not all(isinstance(m, Mapping) for m in prompt):
                raise GenerationError("endpoint 'chat' takes each prompt as a list of {'role', 'content'} messages")
            body["messages"] = [dict(m) for m in prompt]
            if self.config.logprobs:
                body["logprobs"] = True
        else:
            body["prompt"] = prompt if isinstance(prompt, str) else [int(t) for t in prompt]  # type: ignore[arg-type]
            if self.config.logprobs:
                body["logprobs"] = 1
        if params.seed is not None:
            body["seed"] = params.seed
        if params.top_k != -1:
            body["top_k"] = params.top_k
        if params.stop_token_ids:
            body["stop_token_ids"] = list(params.stop_token_ids)
        if params.ignore_eos:
            body["ignore_eos"] = True
        return body | dict(self.config.extra_body)

    async def _stream(self, body: dict[str, Any], choices: list[_Choice], emit: Any) -> None:
        session = self._require_session()
        timeout = self.config.stream_timeout()
        async with session.post(self._url, data=dumps(body), headers=JSON_HEADERS, timeout=timeout) as response:
            await raise_for_status(response, self._url)
            async for data in sse_events(response):
                if data == SSE_DONE:
                    break
                chunk = loads(data)
                if "error" in chunk:
                    raise FatalHTTPError(f"{self._url} streamed an error: {chunk['error']}")
                for raw in chunk.get("choices") or []:
                    j = int(raw.get("index", 0))
                    _absorb(choices[j], raw)
                    if choices[j].finish is not None:
                        reason, error = _finish(choices[j].finish)
                        emit(j, reason, error)
        unfinished = [j for j, c in enumerate(choices) if c.finish is None]
        if unfinished:
            raise RetryableHTTPError(f"{self._url} ended the stream before choices {unfinished} finished")


def _absorb(choice: _Choice, raw: Mapping[str, Any]) -> None:
    """Fold one streamed choice delta (completions or chat shape) into its running state."""
    text = raw.get("text")
    if text is None:
        text = (raw.get("delta") or {}).get("content")
    choice.text += text or ""
    logprobs = raw.get("logprobs") or {}
    ids: list[Any] = []
    if "content" in logprobs:  # chat, and llama.cpp's completions: [{"token", "logprob", "id"?, ...}]
        entries = logprobs.get("content") or []
        tokens = [e.get("token", "") for e in entries]
        values = [e.get("logprob") for e in entries]
        ids = [e.get("id") for e in entries]  # llama.cpp names each entry's token id "id"
    else:  # completions: {"tokens": [...], "token_logprobs": [...]}
        tokens, values = logprobs.get("tokens") or [], logprobs.get("token_logprobs") or []
    choice.logprobs += [float("nan") if v is None else float(v) for v in values]
    spelled = [_TOKEN_ID.match(str(t)) for t in tokens]
    if raw.get("token_ids") is not None:
        choice.token_ids += [int(t) for t in raw["token_ids"]]
    elif ids and all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
        choice.token_ids += ids
    elif spelled and all(spelled):
        choice.token_ids += [int(m.group(1)) for m in spelled if m]
    if choice.first_token_s is None and (text or tokens or raw.get("token_ids")):
        choice.first_token_s = time.monotonic()
    if raw.get("finish_reason") is not None:
        choice.finish = str(raw["finish_reason"])


def _finish(reason: str) -> tuple[str, str | None]:
    if reason in ("stop", "tool_calls", "function_call", "eos"):
        return "stop", None
    if reason == "length":
        return "length", None
    return "abort", f"the server ended the choice with finish_reason {reason!r}"
