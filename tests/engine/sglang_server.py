"""A protocol peer of SGLang 0.5.23's native HTTP server, for testing `engine.generation.sglang_client`.

It is not a model: tokens come from a hash of (input_ids, sampling_seed, weight version, position), so a
test can predict every token (`expected_tokens`). What follows SGLang 0.5.23 (http_server.py, io_struct.py,
tokenizer_manager.py, detokenizer_manager.py, schedule_batch.py of the 0.5.23 wheel):
- endpoints and request fields: /generate (GenerateReqInput; unknown top-level or sampling fields -> 400),
  /abort_request (AbortReq), /health, /model_info, /get_model_info, /update_weights_from_disk,
  /update_weights_from_tensor, /init_weights_update_group, /update_weights_from_distributed,
  /destroy_weights_update_group, with {"success", "message"} replies and 400 on failure;
- streamed chunks: `data: {"text", "output_ids", "meta_info"}` then `data: [DONE]`; cumulative ids and
  `output_token_logprobs` ([logprob, id, null]) by default, deltas with `incremental=True`
  (--incremental-streaming-output); finish_reason {"type": "stop", "matched": id} with the stop id kept
  in output_ids, {"type": "length", "length": n}, {"type": "abort", "message"}; `weight_version` a string,
  "default" until the first update.
Not followed: batched input_ids, n > 1 in one request, text prompts, top-logprobs, tensor loading into a
model (the tensor/distributed updates record names and shapes; the distributed one receives nothing).

Knobs (attributes, changeable while running): token_delay_s, first_chunk_delay_s, fail_next (that many
/generate requests answer HTTP 500), break_after_chunks (drop the connection mid-stream), incremental,
starting (/health answers 503).

Run standalone (used by the launcher test): python tests/engine/sglang_server.py --port 30000 --model-path X
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import pickle
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

SGLANG_VERSION = "0.5.23"
EOS_TOKEN_ID = 2
VOCAB_SIZE = 1000

# GenerateReqInput (io_struct.py) fields the peer accepts; SGLang's schema gate refuses unknown ones.
GENERATE_FIELDS = {
    "rid",
    "text",
    "input_ids",
    "sampling_params",
    "return_logprob",
    "logprob_start_len",
    "top_logprobs_num",
    "token_ids_logprob",
    "return_text_in_logprobs",
    "stream",
    "log_metrics",
    "lora_path",
    "custom_logit_processor",
    "routed_dp_rank",
    "priority",
    "extra_key",
    "no_logs",
    "custom_labels",
    "session_params",
    "bootstrap_host",
    "bootstrap_port",
    "bootstrap_room",
    "return_hidden_states",
    "image_data",
    "data_parallel_rank",
}
# SamplingParams API fields (sampling_params.py).
SAMPLING_FIELDS = {
    "max_new_tokens",
    "stop",
    "stop_token_ids",
    "stop_regex",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "min_new_tokens",
    "n",
    "beam_width",
    "json_schema",
    "regex",
    "ebnf",
    "structural_tag",
    "ignore_eos",
    "skip_special_tokens",
    "spaces_between_special_tokens",
    "no_stop_trim",
    "stream_interval",
    "logit_bias",
    "sampling_seed",
    "custom_params",
    "watermark",
}


def token_at(input_ids: list[int], seed: int | None, version: str, position: int) -> tuple[int, float]:
    """The peer's deterministic (token id, log-prob) at one output position."""
    digest = hashlib.blake2b(repr((input_ids, seed, version, position)).encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % VOCAB_SIZE, -((value >> 20) % 1000) / 100.0 - 0.01


def expected_tokens(
    input_ids: list[int],
    *,
    max_new_tokens: int,
    seed: int | None = None,
    version: str = "default",
    stop_token_ids: tuple[int, ...] = (),
    ignore_eos: bool = False,
) -> tuple[list[int], list[float], str]:
    """What the peer will stream for a request: token ids, log-probs and the finish type."""
    stops = set(stop_token_ids) | (set() if ignore_eos else {EOS_TOKEN_ID})
    ids, lps = [], []
    for t in range(max_new_tokens):
        token, lp = token_at(input_ids, seed, version, t)
        ids.append(token)
        lps.append(lp)
        if token in stops:
            return ids, lps, "stop"
    return ids, lps, "length"


class SGLangPeer:
    """The aiohttp app plus its knobs and a record of what clients asked for."""

    def __init__(self) -> None:
        self.token_delay_s = 0.0
        self.first_chunk_delay_s = 0.0
        self.fail_next = 0
        self.break_after_chunks: int | None = None
        self.incremental = False
        self.starting = False
        self.weight_version = "default"
        self.model_path = "evom/test-peer"
        self.generate_requests: list[dict[str, Any]] = []
        self.aborted: list[str] = []
        self.weight_updates: list[tuple[str, dict[str, Any]]] = []
        self.inflight = 0
        self.max_inflight = 0
        self._abort: set[str] = set()
        self._abort_all_at = 0.0
        self.runner: web.AppRunner | None = None
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/generate", self.generate)
        app.router.add_post("/abort_request", self.abort_request)
        app.router.add_get("/health", self.health)
        app.router.add_get("/health_generate", self.health)
        app.router.add_get("/model_info", self.model_info)
        app.router.add_get("/get_model_info", self.model_info)
        for path in (
            "/update_weights_from_disk",
            "/update_weights_from_tensor",
            "/init_weights_update_group",
            "/update_weights_from_distributed",
            "/destroy_weights_update_group",
        ):
            app.router.add_post(path, self.weights)
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

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.generate_requests.append(body)
        error = _contract_error(body)
        if error:
            return web.json_response({"error": error}, status=400)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.json_response({"object": "error", "message": "injected failure", "code": 500}, status=500)
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            return await self._stream(request, body)
        finally:
            self.inflight -= 1

    async def _stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if self.first_chunk_delay_s:
            await asyncio.sleep(self.first_chunk_delay_s)
        rid, sp = body["rid"], body.get("sampling_params") or {}
        version, started = self.weight_version, time.monotonic()
        ids, lps, finish = expected_tokens(
            body["input_ids"],
            max_new_tokens=int(sp.get("max_new_tokens", 128)),
            seed=sp.get("sampling_seed"),
            version=version,
            stop_token_ids=tuple(sp.get("stop_token_ids") or ()),
            ignore_eos=bool(sp.get("ignore_eos")),
        )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for t in range(len(ids)):
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            if self.break_after_chunks is not None and t >= self.break_after_chunks:
                request.transport.close()  # type: ignore[union-attr]
                return response
            reason: dict[str, Any] | None = None
            if rid in self._abort or started < self._abort_all_at:
                reason = {"type": "abort", "message": "Abort in waiting queue", "status_code": None, "err_type": None}
            elif t == len(ids) - 1:
                reason = (
                    {"type": "stop", "matched": ids[t]} if finish == "stop" else {"type": "length", "length": t + 1}
                )
            end = t + 1
            start = t if self.incremental else 0
            meta = {
                "id": rid,
                "finish_reason": reason,
                "prompt_tokens": len(body["input_ids"]),
                "weight_version": version,
                "num_retractions": 0,
                "completion_tokens": end,
                "cached_tokens": 0,
                "reasoning_tokens": 0,
            }
            if body.get("return_logprob"):
                meta["input_token_logprobs"] = []
                meta["output_token_logprobs"] = [[lps[k], ids[k], None] for k in range(start, end)]
                meta["output_token_logprobs_length"] = end
            if reason is not None:
                meta["e2e_latency"] = time.monotonic() - started
            chunk = {"text": "".join(f"<{k}>" for k in ids[start:end]), "output_ids": ids[start:end], "meta_info": meta}
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            if reason is not None:
                break
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def abort_request(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("abort_all"):
            self._abort_all_at = time.monotonic()
        elif body.get("rid"):
            self._abort.add(body["rid"])
            self.aborted.append(body["rid"])
        return web.Response(status=200)

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=503 if self.starting else 200)

    async def model_info(self, request: web.Request) -> web.Response:
        info = {"model_path": self.model_path, "is_generation": True, "weight_version": self.weight_version}
        return web.json_response(info)

    async def weights(self, request: web.Request) -> web.Response:
        path, body = request.path, await request.json()
        failure = _weights_failure(path, body)
        if failure:
            return web.json_response({"success": False, "message": failure}, status=400)
        if path == "/update_weights_from_tensor":
            named = [pickle.loads(base64.b64decode(s)) for s in body["serialized_named_tensors"]]
            body = body | {"decoded": [[(name, tuple(t.shape)) for name, t in rank] for rank in named]}
        self.weight_updates.append((path, body))
        if path.startswith("/update_weights_from"):
            self.weight_version = body.get("weight_version") or self.weight_version
            if path == "/update_weights_from_disk":
                self.model_path = body["model_path"]
        return web.json_response(
            {"success": True, "message": "Succeeded to update model weights.", "num_paused_requests": 0}
        )


def _contract_error(body: dict[str, Any]) -> str | None:
    unknown = set(body) - GENERATE_FIELDS
    if unknown:
        return f"unknown field(s) {sorted(unknown)}"
    if not isinstance(body.get("input_ids"), list) or not all(isinstance(t, int) for t in body["input_ids"]):
        return "this peer serves single requests with input_ids: a flat list of ints"
    if not isinstance(body.get("rid"), str):
        return "this peer needs a rid"
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
        "/destroy_weights_update_group": set(),
    }[path]
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
    args, _ = parser.parse_known_args()  # the launcher passes SGLang's other flags too
    peer = SGLangPeer()
    peer.model_path = args.model_path
    web.run_app(peer.app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
