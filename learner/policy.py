"""Log-probabilities of response tokens under a causal LM, computed on packed sequences.

Sequences (prompt + response) are concatenated into one row per micro-batch, with position ids restarting at
0 for each sequence. Given position ids and no attention mask, transformers (5.x) derives a block-diagonal
causal mask from the position resets (``masking_utils.find_packed_sequence_indices``), and flash-attention
kernels run varlen, so no token attends across a sequence boundary and no compute goes to padding. Only the
positions that predict a response token are projected onto the vocabulary (``logits_to_keep``), which on a
49k-256k vocabulary is most of the lm-head cost saved.

    micro_batches = pack(prompts, responses, max_tokens=4096)
    out = response_logprobs(model, micro_batches[0], with_entropy=True)

Tests: ``python -m pytest tests/learner/test_policy.py`` (packed == unpacked per-sequence log-probs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

ENTROPY_CHUNK = 1024  # response tokens per entropy chunk


@dataclass(frozen=True, kw_only=True)
class PackedMicroBatch:
    """Several (prompt, response) sequences packed into one row.

    input_ids, position_ids: (1, N) with N = sum over sequences of ``len(prompt) + len(response) - 1`` (the
    last response token is only a target). keep: (1, N) bool, True where the logits predict a response token.
    targets, seq_index, token_index: (R,) for the R response tokens, in packed order: the token id, the
    position of its sequence in ``indices``, and its position within that response.
    indices: the caller's indices of the packed sequences, in packed order.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    keep: torch.Tensor
    targets: torch.Tensor
    seq_index: torch.Tensor
    token_index: torch.Tensor
    indices: tuple[int, ...]
    response_lengths: tuple[int, ...]

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def num_response_tokens(self) -> int:
        return int(self.targets.shape[0])

    def to(self, device: torch.device | str) -> PackedMicroBatch:
        moved = {
            name: getattr(self, name).to(device, non_blocking=True)
            for name in ("input_ids", "position_ids", "keep", "targets", "seq_index", "token_index")
        }
        return PackedMicroBatch(**moved, indices=self.indices, response_lengths=self.response_lengths)

    def unpack(self, values: torch.Tensor, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Scatter per-response-token values (R,) into a right-padded (S, T) tensor and its 0/1 mask.

        Differentiable in ``values``; T is ``width`` or the longest response here.
        """
        width = max(self.response_lengths) if width is None else width
        out = values.new_zeros((len(self.indices), width))
        out = out.index_put((self.seq_index, self.token_index), values)
        mask = values.new_zeros((len(self.indices), width))
        mask[self.seq_index, self.token_index] = 1.0
        return out, mask

    def gather(self, per_sequence: torch.Tensor) -> torch.Tensor:
        """Pick rows of a per-sequence (S_total, ...) tensor (indexed by the caller's indices) in packed order."""
        return per_sequence[torch.as_tensor(self.indices, device=per_sequence.device)]


def _pack_one(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], indices: list[int]
) -> PackedMicroBatch:
    ids: list[int] = []
    pos: list[int] = []
    keep: list[bool] = []
    seq_index: list[int] = []
    token_index: list[int] = []
    targets: list[int] = []
    for local, i in enumerate(indices):
        prompt, response = prompts[i], responses[i]
        seq = [*prompt, *response[:-1]]
        ids.extend(seq)
        pos.extend(range(len(seq)))
        # logits at position p predict token p + 1: the first response token is predicted by the last prompt token
        keep.extend([False] * (len(prompt) - 1) + [True] * len(response))
        targets.extend(response)
        seq_index.extend([local] * len(response))
        token_index.extend(range(len(response)))
    return PackedMicroBatch(
        input_ids=torch.tensor([ids], dtype=torch.long),
        position_ids=torch.tensor([pos], dtype=torch.long),
        keep=torch.tensor([keep], dtype=torch.bool),
        targets=torch.tensor(targets, dtype=torch.long),
        seq_index=torch.tensor(seq_index, dtype=torch.long),
        token_index=torch.tensor(token_index, dtype=torch.long),
        indices=tuple(indices),
        response_lengths=tuple(len(responses[i]) for i in indices),
    )


def pack(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    *,
    max_tokens: int,
    indices: Sequence[int] | None = None,
) -> list[PackedMicroBatch]:
    """Pack sequences into micro-batches of at most ``max_tokens`` input tokens each (first-fit decreasing).

    prompts, responses: token id lists (every prompt and response non-empty). ``indices`` restricts packing to
    those sequences (default: all). A sequence longer than ``max_tokens`` gets a micro-batch of its own.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
    chosen = list(range(len(prompts))) if indices is None else list(indices)
    for i in chosen:
        if not prompts[i] or not responses[i]:
            raise ValueError(f"sequence {i} has an empty prompt or response; drop it before the learner")
    length = {i: len(prompts[i]) + len(responses[i]) - 1 for i in chosen}
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(chosen, key=lambda j: -length[j]):
        for b, free in enumerate(room):
            if length[i] <= free:
                bins[b].append(i)
                room[b] -= length[i]
                break
        else:
            bins.append([i])
            room.append(max_tokens - length[i])
    return [_pack_one(prompts, responses, sorted(b)) for b in bins]


@dataclass(frozen=True, kw_only=True)
class TokenOutput:
    """Per-response-token outputs of one packed micro-batch, in packed order: (R,) each."""

    logprobs: torch.Tensor
    entropy: torch.Tensor | None


def response_logprobs(
    model: nn.Module,
    batch: PackedMicroBatch,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> TokenOutput:
    """Log-probabilities (and optionally entropies) of the response tokens of one packed micro-batch.

    Returns fp32 tensors of shape (R,). ``temperature`` divides the logits, as the sampler did, so that
    log-probs match those of the generator. Entropy is a metric only: it is computed without gradient.
    """
    out = model(
        input_ids=batch.input_ids,
        position_ids=batch.position_ids,
        logits_to_keep=batch.keep,
        use_cache=False,
    )
    logits = out.logits.reshape(-1, out.logits.shape[-1]).float()
    if temperature != 1.0:
        logits = logits / temperature
    log_norm = torch.logsumexp(logits, dim=-1)
    logprobs = logits.gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1) - log_norm
    entropy = None
    if with_entropy:
        with torch.no_grad():
            # in row chunks: a (R, V) fp32 softmax on a 150k vocabulary would double the logits' memory
            entropy = torch.cat(
                [
                    norm - (torch.softmax(chunk, dim=-1) * chunk).sum(-1)
                    for chunk, norm in zip(logits.split(ENTROPY_CHUNK), log_norm.split(ENTROPY_CHUNK), strict=True)
                ]
            )
    return TokenOutput(logprobs=logprobs, entropy=entropy)
