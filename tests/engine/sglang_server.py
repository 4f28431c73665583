"""A protocol peer of SGLang 0.5.23's native HTTP server, for testing `engine.generation.sglang_client`.

It is not a language model, but it has a distribution: the logits at each output position are drawn from a
hash of (input_ids, weights, position), so a test can predict every token and log-prob (`expected_tokens`).
What follows SGLang 0.5.23 (http_server.py, io_struct.py, tokenizer_manager.py, tokenizer_control_mixin.py,
scheduler_components/weight_updater.py, layers/sampler.py, utils/auth.py, utils/aio_rwlock.py of the wheel):

- Request bodies are checked with SGLang's own parsers when the wheel is installed (tests/engine/
  sglang_source.py: the /generate contract gate, SamplingParams normalize/verify, the io_struct request
  classes of the weight and abort endpoints), and with the peer's field lists otherwise. A refused /generate
  body answers 400 {"error"}, a refused weight body 422, as FastAPI does. Unknown top-level keys, which SGLang
  ignores, are refused too (see sglang_source). Every request is recorded in `requests` as (path, body).
- Log-probs are SGLang's default `output_token_logprobs`: log_softmax(logits / T) at the sampling
  temperature T, before top-k/top-p truncation (the sampled token is drawn from the truncated distribution);
  at T = 0 (greedy) log_softmax(logits). `SGLANG_RETURN_ORIGINAL_LOGPROB` in the peer's environment switches
  to log_softmax(logits), as it does in SGLang.
- A writer/reader lock (SGLang's model_update_lock): every /generate holds a reader lock for its whole stream;
  weight updates and /begin_weight_update, /end_weight_update take the writer lock, so an update waits for the
  requests in flight and new requests wait for the update (writer-preferring). /health answers 503 while the
  writer lock is held (SGLang's health check generates one token, which cannot run then; it answers 503 after
  its 20 s probe, the peer at once).
- /update_weights_from_tensor and /update_weights_from_distributed outside a begin/end session: 400
  {"success": false, "message": "... must run between begin_weight_update() and end_weight_update()"}.
- Cache flush after an update (flush_cache defaults to true): when refused (`refuse_flush` knob, or requests
  running) the update answers 400 success: false with "Weights were updated, but the cache was not flushed
  ...": the weights did change, the version label (`weight_version`) did not. /update_weight_version sets
  the label; /flush_cache answers 200, or 400 while requests run or `refuse_flush` > 0.
- Chunks: `data: {"text", "output_ids", "meta_info"}` then `data: [DONE]`; cumulative ids and
  `output_token_logprobs` ([logprob, id, null]) by default, deltas with `incremental=True`
  (--incremental-streaming-output), one chunk per `sampling_params.stream_interval` tokens; `stream: false`
  answers one JSON object. finish_reason {"type": "stop", "matched": id} with the stop id kept in output_ids,
  {"type": "length", "length": n}. Finished replies carry `meta_info.weight_versions`, the spans
  [{"version", "start", "end"}] of output tokens per weight version (utils/weight_versions.py; one span here,
  since the writer lock keeps a request on one version).
- Aborts (/abort_request {"rid"} or {"abort_all"}), as the scheduler answers them: every request whose rid starts
  with the given rid (the scheduler matches by prefix; here the rid also stays aborted for later requests); a
  request that has not decoded a token yet is still in the waiting queue and ends through the tokenizer's abort
  handler with
  {"type": "abort", "message": "Abort in waiting queue"}, no prompt_tokens, and -- in an incremental stream --
  the last token id again with the whole text and all log-probs; a running request ends through the normal
  output path with FINISH_ABORT's {"type": "abort", "message": "Aborted", "status_code": null, "err_type":
  null} and the tokens and log-probs decoded so far (a delta in an incremental stream). `abort_as_queued`
  answers every abort the first way (a request the scheduler had retracted to the waiting queue, which keeps
  its output so far). The partial output continues by a new request whose input_ids are prompt + those tokens.
- Auth (utils/auth.py decide_request_auth): `api_key` guards /generate; weight, flush and abort endpoints take
  `admin_api_key` when set, else `api_key`; /health never needs a key.
Not followed: batched input_ids, n > 1 in one request, text prompts, top-logprobs, tensor loading into a
model (the tensor update unpickles and records names and shapes; the distributed one receives nothing).

Knobs (attributes, changeable while running): token_delay_s, first_chunk_delay_s, fail_next (that many
/generate requests answer HTTP 500), break_after_chunks (drop the connection mid-stream), incremental,
abort_as_queued,
starting (/health answers 503), refuse_flush (that many flushes refused), update_delay_s (a weight load's
duration), api_key, admin_api_key, record (a file: one JSON line per request, `--record` standalone).

Run standalone (used by the launcher test): python tests/engine/sglang_server.py --port 30000 --model-path X
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import importlib.util
import math
import os
import pickle
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiohttp import web

SGLANG_VERSION = "0.5.23"
EOS_TOKEN_ID = 2
VOCAB_SIZE = 1000
LOGIT_SCALE = 3.0
WEIGHTS_CHANGED_NOT_FLUSHED = (
    "Weights were updated, but the cache was not flushed because requests are still running or queued. "
    "Retract or finish them, then call /flush_cache."
)
ADMIN_PATHS = {
    "/update_weights_from_disk",
    "/update_weights_from_tensor",
    "/init_weights_update_group",
    "/update_weights_from_distributed",
    "/destroy_weights_update_group",
    "/begin_weight_update",
    "/end_weight_update",
    "/update_weight_version",
    "/flush_cache",
    "/abort_request",
}


def _load_source() -> Any:
    """tests/engine/sglang_source.py (SGLang's own parsers), or None without the sglang wheel."""
    name = "sglang_source"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("sglang_source.py"))
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    module = sys.modules[name]
    return module if module.sglang_root() is not None else None


SOURCE = _load_source()

# Fallback field lists (GenerateReqInput and SamplingParams of 0.5.23) when the wheel is not installed.
GENERATE_FIELDS = {
    "rid", "text", "input_ids", "sampling_params", "return_logprob", "logprob_start_len", "top_logprobs_num",
    "token_ids_logprob", "return_text_in_logprobs", "stream", "log_metrics", "lora_path", "custom_logit_processor",
    "routed_dp_rank", "priority", "extra_key", "custom_labels", "session_params", "bootstrap_host",
    "bootstrap_port", "bootstrap_room", "return_hidden_states", "image_data", "data_parallel_rank",
}  # fmt: skip
SAMPLING_FIELDS = {
    "max_new_tokens", "stop", "stop_token_ids", "stop_regex", "temperature", "top_p", "top_k", "min_p",
    "frequency_penalty", "presence_penalty", "repetition_penalty", "min_new_tokens", "n", "beam_width",
    "json_schema", "regex", "ebnf", "structural_tag", "ignore_eos", "skip_special_tokens",
    "spaces_between_special_tokens", "no_stop_trim", "stream_interval", "logit_bias", "sampling_seed",
    "custom_params", "watermark", "choice",
}  # fmt: skip


def _digest(*parts: Any) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


def logits_at(input_ids: list[int], weights: str, position: int) -> np.ndarray:
    """The peer's logits at one output position (float64); EOS is made rare so long samples run long."""
    logits = np.random.default_rng(_digest(input_ids, weights, position)).standard_normal(VOCAB_SIZE) * LOGIT_SCALE
    logits[EOS_TOKEN_ID] -= 12.0
    return logits


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max()
    return shifted - math.log(float(np.exp(shifted).sum()))


def token_at(
    input_ids: list[int],
    seed: int | None,
    weights: str,
    position: int,
    *,
    temperature: float = 1.0,
    top_k: int = -1,
    top_p: float = 1.0,
    original_logprob: bool = False,
    logits: np.ndarray | None = None,
) -> tuple[int, float]:
    """(token id, reported log-prob) at one position: greedy at T = 0, else drawn from softmax(logits / T)
    restricted to top-k/top-p; the log-prob is of the untruncated distribution, as SGLang reports it. `logits`
    replaces the hashed ones (the peer's model mode)."""
    logits = logits_at(input_ids, weights, position) if logits is None else logits
    if temperature <= 0:
        token = int(np.argmax(logits))
        return token, float(log_softmax(logits)[token])
    scaled = log_softmax(logits / temperature)
    order = np.argsort(-scaled, kind="stable")
    probs = np.exp(scaled[order])
    keep = len(order) if top_k is None or top_k < 1 else min(top_k, len(order))
    if top_p < 1.0:
        keep = min(keep, int(np.searchsorted(np.cumsum(probs), top_p) + 1))
    kept = probs[:keep] / probs[:keep].sum()
    u = (_digest(input_ids, seed, weights, position, "u") >> 11) / float(1 << 53)
    token = int(order[min(int(np.searchsorted(np.cumsum(kept), u, side="right")), keep - 1)])
    logprob = log_softmax(logits)[token] if original_logprob else scaled[token]
    return token, float(logprob)


def expected_tokens(
    input_ids: list[int],
    *,
    max_new_tokens: int,
    seed: int | None = None,
    version: str = "default",
    stop_token_ids: tuple[int, ...] = (),
    ignore_eos: bool = False,
    temperature: float = 1.0,
    top_k: int = -1,
    top_p: float = 1.0,
    original_logprob: bool = False,
) -> tuple[list[int], list[float], str]:
    """What the peer will stream for a request: token ids, log-probs and the finish type. `version` names the
    weights (the weight_version of the update that loaded them)."""
    stops = set() if ignore_eos else set(stop_token_ids) | {EOS_TOKEN_ID}  # 0.5.23 skips the whole check
    ids, lps = [], []
    for t in range(max_new_tokens):
        token, lp = token_at(
            input_ids,
            seed,
            version,
            t,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            original_logprob=original_logprob,
        )
        ids.append(token)
        lps.append(lp)
        if token in stops:
            return ids, lps, "stop"
    return ids, lps, "length"


class RWLock:
    """Many readers or one writer; a waiting writer holds off new readers (as SGLang's aio_rwlock.RWLock)."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self.readers = 0
        self.writer = False
        self.waiting_writers = 0

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self.writer and not self.waiting_writers)
            self.readers += 1
        try:
            yield
        finally:
            async with self._cond:
                self.readers -= 1
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        async with self._cond:
            self.waiting_writers += 1
            try:
                await self._cond.wait_for(lambda: not self.writer and not self.readers)
            finally:
                self.waiting_writers -= 1
            self.writer = True
        try:
            yield
        finally:
            async with self._cond:
                self.writer = False
                self._cond.notify_all()


class SGLangPeer:
    """The aiohttp app plus its knobs and a record of what clients asked for."""

    def __init__(self) -> None:
        self.token_delay_s = 0.0
        self.first_chunk_delay_s = 0.0
        self.update_delay_s = 0.0
        self.fail_next = 0
        self.refuse_flush = 0
        self.break_after_chunks: int | None = None
        self.incremental = False
        self.abort_as_queued = False
        self.starting = False
        self.api_key: str | None = None
        self.admin_api_key: str | None = None
        self.original_logprob = bool(os.environ.get("SGLANG_RETURN_ORIGINAL_LOGPROB"))
        self.weight_version = "default"  # the label replies carry
        self.weights = "default"  # what the tokens are computed from
        self.model_path = "evom/test-peer"
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.generate_requests: list[dict[str, Any]] = []
        self.chunks: list[dict[str, Any]] = []
        self.aborted: list[str] = []
        self.decoded: dict[str, int] = {}  # rid -> tokens decoded so far
        self.weight_updates: list[tuple[str, dict[str, Any]]] = []
        self.health_statuses: list[int] = []
        self.record: Path | None = None  # a JSON line per request (path, rid, versions) when set
        # Model mode: a causal LM (transformers) whose next-token logits replace the hashed ones, recomputed over
        # prompt + tokens so far at each step, so a learner's recomputation can be checked against the peer.
        self.model: Any = None
        self.session_open = False
        self.inflight = 0
        self.max_inflight = 0
        self.lock = RWLock()
        self._abort: list[str] = []  # every aborted rid, in order: a request reads the ones it has not seen
        self._abort_all_at = 0.0
        self.runner: web.AppRunner | None = None
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_route("*", "/generate", self.generate)
        app.router.add_post("/abort_request", self.abort_request)
        app.router.add_get("/health", self.health)
        app.router.add_get("/health_generate", self.health)
        app.router.add_get("/model_info", self.model_info)
        app.router.add_get("/get_model_info", self.model_info)
        app.router.add_route("*", "/flush_cache", self.flush_cache)
        app.router.add_post("/update_weight_version", self.update_weight_version)
        for path in ADMIN_PATHS - {"/flush_cache", "/abort_request", "/update_weight_version"}:
            app.router.add_post(path, self.weights_endpoint)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self.runner = web.AppRunner(self.app())
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{host}:{bound}"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # ----- auth and validation ------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path, header = request.path, request.headers.get("Authorization")
        if SOURCE is not None:  # SGLang's own rule; the weight, flush and abort endpoints are ADMIN_OPTIONAL
            rules = SOURCE.auth()
            level = rules.AuthLevel.ADMIN_OPTIONAL if path in ADMIN_PATHS else rules.AuthLevel.NORMAL
            decision = rules.decide_request_auth(
                method=request.method,
                path=path,
                authorization_header=header,
                api_key=self.api_key,
                admin_api_key=self.admin_api_key,
                auth_level=level,
            )
            if not decision.allowed:
                return web.json_response({"error": "Unauthorized"}, status=decision.error_status_code)
            return await handler(request)
        if path.startswith("/health"):
            return await handler(request)
        expected = (self.admin_api_key or self.api_key) if path in ADMIN_PATHS else self.api_key
        if expected and header != f"Bearer {expected}":
            return web.json_response({"error": "Unauthorized"}, status=401)
        return await handler(request)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        body = orjson.loads(raw) if raw else {}
        self.requests.append((request.path, body))
        if self.record is not None:
            brief = {k: body[k] for k in ("rid", "model_path", "weight_version", "new_version") if k in body}
            with self.record.open("ab") as sink:
                sink.write(orjson.dumps({"path": request.path, **brief}) + b"\n")
        return body

    def _refusal(self, path: str, body: dict[str, Any]) -> web.Response | None:
        """The error reply SGLang gives a body it refuses (400 for /generate, 422 from FastAPI otherwise)."""
        if SOURCE is not None:
            try:
                SOURCE.validate_request(path, body)
            except SOURCE.ContractError as exc:
                return web.json_response({"error": str(exc)}, status=400 if path == "/generate" else 422)
        if path == "/generate":
            error = _fallback_generate_error(body)
            if error is None and not (isinstance(body.get("rid"), str) and isinstance(body.get("input_ids"), list)):
                error = "this peer serves single requests with a rid and a flat input_ids list"
            return None if error is None else web.json_response({"error": error}, status=400)
        return None

    # ----- generation ---------------------------------------------------------------------------------

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        self.generate_requests.append(body)
        refused = self._refusal("/generate", body)
        if refused is not None:
            return refused
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.json_response({"object": "error", "message": "injected failure", "code": 500}, status=500)
        async with self.lock.read():
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            try:
                return await self._respond(request, body)
            finally:
                self.inflight -= 1

    async def _respond(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if self.first_chunk_delay_s:
            await asyncio.sleep(self.first_chunk_delay_s)
        rid, sp = body["rid"], body.get("sampling_params") or {}
        weights, started = self.weights, time.monotonic()
        temperature = float(sp.get("temperature", 1.0))
        stops = set() if sp.get("ignore_eos") else set(sp.get("stop_token_ids") or ()) | {EOS_TOKEN_ID}
        interval = int(sp.get("stream_interval") or 1)
        stream = bool(body.get("stream"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        if stream:
            await response.prepare(request)
        ids: list[int] = []
        entries: list[list[Any]] = []  # output_token_logprobs: [logprob, token id, text]
        sent = 0  # tokens already streamed
        reason: dict[str, Any] | None = None
        seen, hit = 0, False  # aborted rids checked against this request so far, and whether one matched
        for t in range(int(sp.get("max_new_tokens", 128))):
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            if stream and self.break_after_chunks is not None and t >= self.break_after_chunks:
                request.transport.close()  # type: ignore[union-attr]
                return response
            # By prefix, as 0.5.23's scheduler; each aborted rid is checked once per request, not once per token.
            hit = hit or any(rid.startswith(a) for a in self._abort[seen:])
            seen = len(self._abort)
            if hit or started < self._abort_all_at:
                if t == 0 or self.abort_as_queued:  # the scheduler's waiting queue: the tokenizer answers
                    reason = {"type": "abort", "message": "Abort in waiting queue"}
                    chunk = self._chunk(body, rid, ids, entries, reason, started, start=0, abort=True)
                    return await self._send(response, chunk, stream)
                # A running request: the scheduler finishes it with FINISH_ABORT() through the normal output path.
                reason = {"type": "abort", "message": "Aborted", "status_code": None, "err_type": None}
                if not stream:
                    return web.json_response(self._chunk(body, rid, ids, entries, reason, started, start=0))
                chunk = self._chunk(body, rid, ids, entries, reason, started, start=sent if self.incremental else 0)
                return await self._send(response, chunk, stream)
            token, lp = token_at(
                body["input_ids"],
                sp.get("sampling_seed"),
                weights,
                t,
                temperature=temperature,
                top_k=int(sp.get("top_k", -1)),
                top_p=float(sp.get("top_p", 1.0)),
                original_logprob=self.original_logprob or temperature <= 0,
                logits=None if self.model is None else self._model_logits(body["input_ids"] + ids),
            )
            ids.append(token)
            entries.append([lp, token, None])
            self.decoded[rid] = len(ids)
            reason = None
            if token in stops:
                reason = {"type": "stop", "matched": token}
            elif t == int(sp.get("max_new_tokens", 128)) - 1:
                reason = {"type": "length", "length": t + 1}
            if stream and (reason is not None or len(ids) - sent >= interval):
                chunk = self._chunk(body, rid, ids, entries, reason, started, start=sent if self.incremental else 0)
                await self._write(response, chunk)
                sent = len(ids)
            if reason is not None:
                break
        if not stream:
            return web.json_response(self._chunk(body, rid, ids, entries, reason, started, start=0))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _model_logits(self, tokens: list[int]) -> np.ndarray:
        import torch

        with torch.no_grad():
            logits = self.model(torch.tensor([tokens])).logits[0, -1]
        return logits.double().numpy()

    def _chunk(
        self,
        body: dict[str, Any],
        rid: str,
        ids: list[int],
        entries: list[list[Any]],
        reason: dict[str, Any] | None,
        started: float,
        *,
        start: int,
        abort: bool = False,
    ) -> dict[str, Any]:
        out_ids = ids[start:]
        if abort and self.incremental and body.get("stream"):
            out_ids = ids[-1:]  # SGLang's abort chunk in incremental mode: the last token again
        meta: dict[str, Any] = {
            "id": rid,
            "finish_reason": reason,
            "weight_version": self.weight_version,
            "completion_tokens": len(ids),
        }
        if not abort:
            meta |= {"prompt_tokens": len(body["input_ids"]), "cached_tokens": 0, "reasoning_tokens": 0}
        if body.get("return_logprob"):
            first = 0 if abort else start
            meta["input_token_logprobs"] = []
            meta["output_token_logprobs"] = entries[first:]
            meta["output_token_logprobs_length"] = len(ids)
        if reason is not None:
            meta["e2e_latency"] = time.monotonic() - started
            # Finished outputs carry the spans of output tokens per weight version (utils/weight_versions.py); the
            # peer's writer lock keeps a request on one version.
            meta["weight_versions"] = [{"version": self.weight_version, "start": 0, "end": len(ids)}]
        text_from = 0 if abort else start
        return {"text": "".join(f"<{k}>" for k in ids[text_from:]), "output_ids": out_ids, "meta_info": meta}

    async def _write(self, response: web.StreamResponse, chunk: dict[str, Any]) -> None:
        self.chunks.append(chunk)
        await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")

    async def _send(self, response: web.StreamResponse, chunk: dict[str, Any], stream: bool) -> web.StreamResponse:
        if not stream:
            return web.json_response(chunk)
        await self._write(response, chunk)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def abort_request(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        refused = self._refusal("/abort_request", body)
        if refused is not None:
            return refused
        if body.get("abort_all"):
            self._abort_all_at = time.monotonic()
        elif body.get("rid"):
            self._abort.append(body["rid"])
            self.aborted.append(body["rid"])
        return web.Response(status=200)

    # ----- status -------------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        status = 503 if self.starting or self.lock.writer else 200
        self.health_statuses.append(status)
        return web.Response(status=status)

    async def model_info(self, request: web.Request) -> web.Response:
        info = {"model_path": self.model_path, "is_generation": True, "weight_version": self.weight_version}
        return web.json_response(info)

    # ----- weights ------------------------------------------------------------------------------------

    async def flush_cache(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, {}))
        if not self._try_flush():
            return web.Response(text="Flush cache failed.\n", status=400)
        return web.Response(text="Cache flushed.\n", status=200)

    def _try_flush(self) -> bool:
        if self.refuse_flush > 0:
            self.refuse_flush -= 1
            return False
        return self.inflight == 0

    async def update_weight_version(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        refused = self._refusal(request.path, body)
        if refused is not None:
            return refused
        if not isinstance(body.get("new_version"), str):
            return web.json_response({"error": "new_version: a string is required"}, status=422)
        self.weight_version = body["new_version"]
        self.weight_updates.append((request.path, body))
        message = f"Weight version updated to {body['new_version']}"
        return web.json_response({"success": True, "message": message, "new_version": body["new_version"]})

    async def weights_endpoint(self, request: web.Request) -> web.Response:
        path, body = request.path, await self._body(request)
        refused = self._refusal(path, body)
        if refused is not None:
            return refused
        async with self.lock.write():
            if self.update_delay_s:
                await asyncio.sleep(self.update_delay_s)
            success, message = self._apply(path, body)
        reply: dict[str, Any] = {"success": success, "message": message}
        if path == "/update_weights_from_disk":
            reply["num_paused_requests"] = 0
        return web.json_response(reply, status=200 if success else 400)

    def _apply(self, path: str, body: dict[str, Any]) -> tuple[bool, str]:
        failure = _weights_failure(path, body)
        if failure:
            return False, failure
        if path == "/begin_weight_update":
            if self.session_open:
                return False, "a weight-update session is already open; call end_weight_update() first"
            self.session_open = True
        elif path == "/end_weight_update":
            if not self.session_open:
                return False, "no weight-update session is open; call begin_weight_update() first"
            self.session_open = False
        elif path in ("/update_weights_from_tensor", "/update_weights_from_distributed") and not self.session_open:
            return False, f"{path[1:]} must run between begin_weight_update() and end_weight_update()"
        if path == "/update_weights_from_tensor":
            named = [pickle.loads(base64.b64decode(s)) for s in body["serialized_named_tensors"]]
            body = body | {"decoded": [[(name, tuple(t.shape)) for name, t in rank] for rank in named]}
        self.weight_updates.append((path, body))
        if not path.startswith("/update_weights_from"):
            return True, "Success"
        new = body.get("weight_version")
        self.weights = new if new is not None else f"{self.weights}+"
        if path == "/update_weights_from_disk":
            self.model_path = body["model_path"]
        if body.get("flush_cache", True) and not self._try_flush():
            return False, WEIGHTS_CHANGED_NOT_FLUSHED
        if new is not None:
            self.weight_version = new
        return True, "Succeeded to update model weights." + (f" Weight version updated to {new}." if new else "")


def _fallback_generate_error(body: dict[str, Any]) -> str | None:
    unknown = set(body) - GENERATE_FIELDS
    if unknown:
        return f"unknown field(s) {sorted(unknown)}"
    if not isinstance(body.get("input_ids"), list) or not all(isinstance(t, int) for t in body["input_ids"]):
        return "this peer serves single requests with input_ids: a flat list of ints"
    unknown = set(body.get("sampling_params") or {}) - SAMPLING_FIELDS
    if unknown:
        return f"unknown sampling_params field(s) {sorted(unknown)}"
    return None


def _weights_failure(path: str, body: dict[str, Any]) -> str | None:
    required = {
        "/update_weights_from_disk": {"model_path"},
        "/update_weights_from_tensor": {"serialized_named_tensors"},
        "/init_weights_update_group": {"master_address", "master_port", "rank_offset", "world_size"},
        "/update_weights_from_distributed": {"names", "dtypes", "shapes"},
    }.get(path, set())
    missing = required - set(body)
    if missing:
        return f"missing field(s) {sorted(missing)}"
    if path == "/update_weights_from_disk" and not Path(body["model_path"]).is_dir():
        return f"Failed to get weights iterator: {body['model_path']} is not a directory."
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description="SGLang 0.5.23 protocol peer (tests only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--model-path", default="evom/test-peer")
    parser.add_argument("--random-seed", type=int, default=None)
    parser.add_argument("--incremental-streaming-output", action="store_true")
    parser.add_argument("--record", type=Path, default=None, help="append a JSON line per request to this file")
    parser.add_argument("--token-delay-s", type=float, default=0.0, help="seconds per decoded token (tests only)")
    args, _ = parser.parse_known_args()  # the launcher passes SGLang's other flags too
    peer = SGLangPeer()
    peer.model_path = args.model_path
    peer.record = args.record
    peer.incremental = args.incremental_streaming_output
    peer.token_delay_s = args.token_delay_s
    web.run_app(peer.app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
