"""What the decode-path tests share: the tiny random decoders' shape, and the samples decode_batch makes, keyed
for comparison between decode paths."""

from __future__ import annotations

import torch

from engine.generation import SamplingParams
from engine.generation.decoding import decode_batch, make_rows

# The shape of the tiny random decoders these tests build: grouped-query attention (6 heads, 2 KV heads).
TINY_SHAPE = dict(
    vocab_size=96,
    hidden_size=48,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=6,
    num_key_value_heads=2,
    max_position_embeddings=256,
)


def decode_samples(
    model, prompts, params: SamplingParams, *, cache: str, n: int = 3, fast_step: bool = True, finished: str = "compact"
) -> dict:
    """(prompt index, sample index) -> (tokens, log-probs, finish reason) of each of the n samples per prompt."""
    got = {}
    rows = make_rows(prompts, n, params, torch.device("cpu"))

    def on_finish(row, reason):
        got[(row.prompt_index, row.sample_index)] = (row.tokens, row.logprobs, reason)

    decode_batch(
        model,
        rows,
        params,
        stop_ids=frozenset(params.stop_token_ids),
        on_finish=on_finish,
        should_abort=lambda: False,
        cache=cache,
        finished=finished,
        fast_step=fast_step,
    )
    return got
