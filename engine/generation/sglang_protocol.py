"""SGLang 0.5.23's native HTTP protocol as the sglang backend speaks it, without I/O: request bodies, folding a
sample's replies, weight-version labels, and state-dict payloads.

Written against SGLang 0.5.23 (`srt/entrypoints/http_server.py`, `srt/managers/io_struct.py`,
`tokenizer_manager.py`, `tokenizer_control_mixin.py`, `scheduler_components/weight_updater.py`,
`layers/sampler.py`, `utils/auth.py` of the 0.5.23 wheel). What the client relies on:

- `POST /generate` with `input_ids`, `sampling_params`, `stream`, `return_logprob: true` and our own `rid`,
  one request per sample. Without `stream` the reply is one JSON object when the sample ends (the default:
  bench/NOTES.md); with it, server-sent events `data: {json}` ending with `data: [DONE]`. Each carries
  `output_ids`, `meta_info.output_token_logprobs` ([logprob, token_id, text|null] per token),
  `meta_info.completion_tokens`, `meta_info.weight_version` and `meta_info.finish_reason`: null while
  decoding, then {"type": "stop", "matched": id}, {"type": "length", "length": n} or {"type": "abort",
  "message": ...}. Streamed ids and log-probs are cumulative by default, deltas with
  `--incremental-streaming-output` except in the abort chunk (the last id again, every log-prob); the
  client tells them apart by `completion_tokens`, the running total in both modes. `output_ids` keep the
  matched stop token (only `text` is trimmed). An error mid-stream is a chunk `{"error": {...}}`.
- Log-probs are log_softmax(logits / T) at the sampling temperature, before top-k/top-p, unless the server
  runs with SGLANG_RETURN_ORIGINAL_LOGPROB, which it must not (README).
- `sampling_params.sampling_seed` (our per-sample seed) is honoured only by servers started with
  `--enable-deterministic-inference`; other servers ignore it, so seeded runs are reproducible only there.
- `POST /abort_request` {"rid"} aborts every request whose rid starts with that rid (the scheduler's
  abort_request matches by prefix), so no rid of ours is the prefix of another (`request_id`). The aborted
  request ends with finish type "abort" and its partial output (tokens and log-probs), which a new request with
  input_ids = prompt + those tokens continues: the rollout's partial rollouts (`resumable`). Finished replies
  carry `meta_info.weight_versions`, spans of output tokens by weight version, read into
  `Completion.token_versions`.
- `GET /health` (200 when up; 503 while starting and while a weight update holds the writer lock),
  `GET /model_info` (`/get_model_info` is deprecated in 0.5.23).
- Weight sync, under the server's writer lock (it waits for every request in flight):
  `POST /update_weights_from_disk` {"model_path", "weight_version"}; inside `POST /begin_weight_update` ...
  `POST /end_weight_update`: `/update_weights_from_tensor` {"serialized_named_tensors": [base64 of a
  ForkingPickler dump of [(name, tensor)], one per TP rank], "weight_version", "flush_cache"} -- only for a
  server on the learner's machine, since the pickle carries shared-memory / CUDA-IPC handles -- and
  `/update_weights_from_distributed` {"names", "dtypes", "shapes", "group_name", "weight_version"} after
  `POST /init_weights_update_group`; the learner must broadcast in that group concurrently. An update whose
  cache flush was refused answers success: false although the weights changed; the client then sets the
  label with `/update_weight_version` and retries `/flush_cache`. Weight, flush and abort endpoints take the
  admin key when the server has one.

Checked against SGLang's own request parsers (tests/engine/test_sglang_contract.py).
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.generation.base import SamplingParams
from engine.generation.http import FatalHTTPError

SGLANG_VERSION = "0.5.23"
# How SGLang 0.5.23 begins the message of an update whose weights changed but whose cache flush was refused
# (scheduler_components/weight_updater.py, flush_cache_after_weight_update); the reply says success: false.
WEIGHTS_CHANGED_NOT_FLUSHED = "Weights were updated, but the cache was not flushed"


def request_id(call: str, prompt: int, sample: int, attempt: int) -> str:
    """The rid of one attempt at one sample of a generate call (`call`: a fixed-width id of the call). It ends with
    a "." so that no rid is the prefix of another: without it, aborting attempt 1 would also abort attempt 10."""
    return f"{call}-{prompt}-{sample}-{attempt}."


def generate_body(rid: str, input_ids: Sequence[int], sampling: Mapping[str, Any], *, stream: bool) -> dict[str, Any]:
    """The `POST /generate` body of one sample: its own rid, token ids in, log-probs of the output tokens out."""
    return {
        "rid": rid,
        "input_ids": input_ids,
        "sampling_params": sampling,
        "stream": stream,
        "return_logprob": True,
        "logprob_start_len": -1,
    }


@dataclass(kw_only=True)
class ReplyStream:
    """What one sample has received so far: its replies (one JSON object, or streamed chunks) folded together."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""
    chunks: int = 0
    first_token_s: float | None = None
    finish: Mapping[str, Any] | None = None
    weight_version: Any = None
    # meta_info.weight_versions of the finished reply: [{"version", "start", "end"}] spans of output tokens by the
    # weights that generated them (one span unless the weights changed while the request ran).
    spans: list[Mapping[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, chunk: Mapping[str, Any]) -> None:
        meta = chunk.get("meta_info") or {}
        ids = [int(t) for t in chunk.get("output_ids") or []]
        lps = [float(x[0]) if x[0] is not None else float("nan") for x in meta.get("output_token_logprobs") or []]
        total = int(meta["completion_tokens"]) if meta.get("completion_tokens") is not None else len(ids)
        # completion_tokens is the running total in both modes. Cumulative chunks repeat everything so far;
        # incremental ones carry only the new tokens, except the abort chunk of an incremental stream, which
        # repeats the last token id, the whole text and every log-prob (tokenizer_manager's abort handler).
        new = total - len(self.token_ids)
        if len(ids) == total:
            self.token_ids = ids
        elif len(ids) == new:
            self.token_ids += ids
        elif new != 0:
            raise FatalHTTPError(
                f"chunk of {len(ids)} token(s) at completion_tokens={total} after {len(self.token_ids)} received"
            )
        if len(lps) == total:
            self.logprobs = lps
        elif len(lps) == new:
            self.logprobs += lps
        text = chunk.get("text")
        if text is not None:
            whole = len(ids) == total or (new == 0 and bool(ids))
            self.text = text if whole else self.text + text
        self.chunks += 1
        if self.first_token_s is None and self.token_ids:
            self.first_token_s = time.monotonic()
        self.finish = meta.get("finish_reason")
        self.weight_version = meta.get("weight_version", self.weight_version)
        if meta.get("weight_versions") is not None:
            self.spans = list(meta["weight_versions"])
        for key in ("prompt_tokens", "cached_tokens", "e2e_latency", "id"):
            if key in meta:
                self.meta[key] = meta[key]


def sampling_params(params: SamplingParams, seed: int | None) -> dict[str, Any]:
    """SGLang's sampling_params for one sample (n stays 1: the client sends each sample on its own)."""
    out: dict[str, Any] = {
        "max_new_tokens": params.max_new_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
    }
    if params.stop_token_ids:
        out["stop_token_ids"] = list(params.stop_token_ids)
    if params.ignore_eos:
        out["ignore_eos"] = True
    if seed is not None:
        out["sampling_seed"] = seed
    return out


def version_of(reported: Any, fallback: int) -> int:
    """SGLang reports weight_version as a string ("default" until the first update); ours are ints."""
    try:
        return int(reported)
    except (TypeError, ValueError):
        return fallback


def token_versions(spans: Sequence[Mapping[str, Any]], n: int, label: int) -> tuple[int, ...]:
    """Each output token's weight version from SGLang's weight_versions spans; `label` for every token when the
    spans are missing or do not cover the tokens exactly."""
    out: list[int] = []
    for span in spans:
        try:
            start, end, version = int(span["start"]), int(span["end"]), version_of(span["version"], label)
        except (KeyError, TypeError, ValueError):
            return (label,) * n
        if start != len(out) or end < start:
            return (label,) * n
        out += [version] * (end - start)
    return tuple(out) if len(out) == n else (label,) * n


def tensor_buckets(named: list[tuple[str, Any]], bucket_bytes: int) -> list[list[tuple[str, Any]]]:
    """Consecutive groups of (name, tensor) of at most `bucket_bytes` each (a larger tensor alone); at least one."""
    buckets: list[list[tuple[str, Any]]] = [[]]
    size = 0
    for name, tensor in named:
        nbytes = tensor.numel() * tensor.element_size()
        if buckets[-1] and size + nbytes > bucket_bytes:
            buckets.append([])
            size = 0
        buckets[-1].append((name, tensor))
        size += nbytes
    return buckets


def serialize_named_tensors(named: list[tuple[str, Any]]) -> str:
    """One `serialized_named_tensors` entry: base64 of a ForkingPickler dump of [(name, tensor)], as
    SGLang's MultiprocessingSerializer(output_str=True) writes it. Tensors travel as handles: CUDA tensors as
    CUDA IPC handles; CPU tensors as named shared-memory files (torch's "file_system" sharing strategy, set for
    the dump only). The default "file_descriptor" strategy hands file descriptors over multiprocessing's
    resource sharer, which only a process holding this process's authkey (a multiprocessing child) may
    reach: an independently started server fails with "digest sent was rejected"."""
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # registers torch's reductions with ForkingPickler

    buffer = io.BytesIO()
    before = torch.multiprocessing.get_sharing_strategy()
    torch.multiprocessing.set_sharing_strategy("file_system")
    try:
        ForkingPickler(buffer).dump(named)
    finally:
        torch.multiprocessing.set_sharing_strategy(before)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
