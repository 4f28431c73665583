"""Log-probabilities of response tokens under a causal LM, computed on packed sequences.

Sequences (prompt + response) are concatenated into one row per micro-batch, with position ids restarting at
0 for each sequence. Given position ids and no attention mask, transformers (5.x) derives a block-diagonal
causal mask from the position resets (``masking_utils.find_packed_sequence_indices``), and flash-attention
kernels run varlen, so no token attends across a sequence boundary and no compute goes to padding. Only the
positions that predict a response token are projected onto the vocabulary (``logits_to_keep``), which on a
49k-256k vocabulary is most of the lm-head cost saved.

Shared prompts (``share_prompts=True``): the G samples of a GRPO group have the same prompt, and an
optimisation problem's statement is usually longer than the program written for it. The group is then packed
as ONE copy of the prompt followed by its G responses, each response attending to the prompt and to itself
(an explicit 4D mask; positions continue from the prompt's length, as in the sequence alone). Every response
token sees exactly the context it would see alone, so the log-probs and their gradients are those of the
unshared layout (the prompt's activations receive the sum of the G responses' gradients); the forward and
backward cost falls from G * (P + R) to P + G * R tokens. It needs an attention implementation that takes a
custom mask ("sdpa" or "eager"); ``supports_shared_prompts`` tells.

    micro_batches = pack(prompts, responses, max_tokens=4096, share_prompts=True)
    out = response_logprobs(model, micro_batches[0], with_entropy=True)

Tests: ``python -m pytest tests/learner/test_policy.py`` (packed == unpacked per-sequence log-probs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

ENTROPY_CHUNK = 1024  # response tokens per entropy chunk
MASKED_ATTENTION = ("sdpa", "eager")  # attention implementations that take an explicit 4D mask


@dataclass(frozen=True, kw_only=True)
class PackedMicroBatch:
    """Several (prompt, response) sequences packed into one row.

    input_ids, position_ids: (1, N), N = sum over prompt units of ``len(prompt) + sum(len(response) - 1)``
    (the last response token is only a target). keep: (1, N) bool, True where the logits predict at least one
    response token. targets, target_rows, seq_index, token_index: (R,) for the R response tokens, in packed
    order: the token id, the index among the kept positions of the logits that predict it, the position of its
    sequence in ``indices``, and its position within that response. indices: the caller's indices of the
    packed sequences, in packed order. unit_ids, segment_ids: (1, N) when some prompt is shared by several
    responses, else None: the prompt unit of each token and its segment in that unit (0: the prompt, k > 0:
    the k-th response), from which ``attention_mask`` builds the mask.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    keep: torch.Tensor
    targets: torch.Tensor
    target_rows: torch.Tensor
    seq_index: torch.Tensor
    token_index: torch.Tensor
    unit_ids: torch.Tensor | None
    segment_ids: torch.Tensor | None
    indices: tuple[int, ...]
    response_lengths: tuple[int, ...]

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def num_response_tokens(self) -> int:
        return int(self.targets.shape[0])

    @property
    def shares_prompts(self) -> bool:
        return self.unit_ids is not None

    def to(self, device: torch.device | str) -> PackedMicroBatch:
        names = ("input_ids", "position_ids", "keep", "targets", "target_rows", "seq_index", "token_index")
        moved = {name: getattr(self, name).to(device, non_blocking=True) for name in names}
        for name in ("unit_ids", "segment_ids"):
            value = getattr(self, name)
            moved[name] = None if value is None else value.to(device, non_blocking=True)
        return PackedMicroBatch(**moved, indices=self.indices, response_lengths=self.response_lengths)

    def attention_mask(self, implementation: str, dtype: torch.dtype) -> torch.Tensor | None:
        """The (1, 1, N, N) mask of a micro-batch with shared prompts (None otherwise): bool for sdpa, additive
        ``dtype`` for eager. Query q sees key k <= q of its own unit when k is in the prompt or in q's segment."""
        if self.unit_ids is None or self.segment_ids is None:
            return None
        if implementation not in MASKED_ATTENTION:
            raise ValueError(
                f"shared prompts need an attention implementation that takes a mask ({', '.join(MASKED_ATTENTION)}), "
                f"got {implementation!r}: pack with share_prompts=False"
            )
        unit, seg = self.unit_ids[0], self.segment_ids[0]
        n = unit.shape[0]
        causal = torch.ones(n, n, dtype=torch.bool, device=unit.device).tril()
        same_unit = unit[:, None] == unit[None, :]
        visible = (seg[None, :] == 0) | (seg[:, None] == seg[None, :])
        allowed = (causal & same_unit & visible)[None, None]
        if implementation == "sdpa":
            return allowed
        return torch.zeros(allowed.shape, dtype=dtype, device=unit.device).masked_fill(~allowed, torch.finfo(dtype).min)

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


def supports_shared_prompts(model: nn.Module) -> bool:
    """Whether ``model``'s attention takes the explicit mask that shared prompts need (flash kernels do not)."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) in MASKED_ATTENTION


def unit_tokens(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], unit: Sequence[int]) -> int:
    """Input tokens of one prompt unit: its prompt once, then every response but its last token."""
    return len(prompts[unit[0]]) + sum(len(responses[i]) - 1 for i in unit)


def prompt_units(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    indices: Sequence[int],
    *,
    max_tokens: int,
    share_prompts: bool,
) -> list[tuple[int, ...]]:
    """Group ``indices`` into units that are packed together: one sequence each, or with ``share_prompts`` the
    sequences with identical prompts (in order of first appearance), split where a unit would pass ``max_tokens``.
    """
    if not share_prompts:
        return [(i,) for i in indices]
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i in indices:
        by_prompt.setdefault(tuple(prompts[i]), []).append(i)
    units: list[tuple[int, ...]] = []
    for members in by_prompt.values():
        current: list[int] = []
        for i in members:
            if current and unit_tokens(prompts, responses, [*current, i]) > max_tokens:
                units.append(tuple(current))
                current = []
            current.append(i)
        units.append(tuple(current))
    return units


def _pack_one(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], units: Sequence[Sequence[int]]
) -> PackedMicroBatch:
    ids: list[int] = []
    pos: list[int] = []
    keep: list[bool] = []
    unit_ids: list[int] = []
    segment_ids: list[int] = []
    targets: list[int] = []
    target_rows: list[int] = []
    seq_index: list[int] = []
    token_index: list[int] = []
    indices = [i for unit in units for i in unit]
    kept = 0  # kept positions so far = index of the next kept logits row
    local = 0  # position of the current sequence in ``indices``
    for u, unit in enumerate(units):
        prompt = prompts[unit[0]]
        ids.extend(prompt)
        pos.extend(range(len(prompt)))
        unit_ids.extend([u] * len(prompt))
        segment_ids.extend([0] * len(prompt))
        # logits at position p predict token p + 1: the prompt's last token predicts every first response token
        keep.extend([False] * (len(prompt) - 1) + [True])
        prompt_row = kept
        kept += 1
        for k, i in enumerate(unit, start=1):
            response = responses[i]
            body = response[:-1]
            ids.extend(body)
            pos.extend(range(len(prompt), len(prompt) + len(body)))
            unit_ids.extend([u] * len(body))
            segment_ids.extend([k] * len(body))
            keep.extend([True] * len(body))
            target_rows.append(prompt_row)
            target_rows.extend(range(kept, kept + len(body)))
            kept += len(body)
            targets.extend(response)
            seq_index.extend([local] * len(response))
            local += 1
            token_index.extend(range(len(response)))
    shared = any(len(unit) > 1 for unit in units)
    return PackedMicroBatch(
        input_ids=torch.tensor([ids], dtype=torch.long),
        position_ids=torch.tensor([pos], dtype=torch.long),
        keep=torch.tensor([keep], dtype=torch.bool),
        targets=torch.tensor(targets, dtype=torch.long),
        target_rows=torch.tensor(target_rows, dtype=torch.long),
        seq_index=torch.tensor(seq_index, dtype=torch.long),
        token_index=torch.tensor(token_index, dtype=torch.long),
        unit_ids=torch.tensor([unit_ids], dtype=torch.long) if shared else None,
        segment_ids=torch.tensor([segment_ids], dtype=torch.long) if shared else None,
        indices=tuple(indices),
        response_lengths=tuple(len(responses[i]) for i in indices),
    )


def pack(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    *,
    max_tokens: int,
    indices: Sequence[int] | None = None,
    share_prompts: bool = False,
) -> list[PackedMicroBatch]:
    """Pack sequences into micro-batches of at most ``max_tokens`` input tokens each (first-fit decreasing).

    prompts, responses: token id lists (every prompt and response non-empty). ``indices`` restricts packing to
    those sequences (default: all). With ``share_prompts``, sequences with identical prompts are packed as one
    prompt unit (see the module docstring). A unit longer than ``max_tokens`` gets a micro-batch of its own.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
    chosen = list(range(len(prompts))) if indices is None else list(indices)
    for i in chosen:
        if not prompts[i] or not responses[i]:
            raise ValueError(f"sequence {i} has an empty prompt or response; drop it before the learner")
    units = prompt_units(prompts, responses, chosen, max_tokens=max_tokens, share_prompts=share_prompts)
    length = [unit_tokens(prompts, responses, unit) for unit in units]
    bins: list[list[int]] = []
    room: list[int] = []
    for u in sorted(range(len(units)), key=lambda j: (-length[j], units[j][0])):
        for b, free in enumerate(room):
            if length[u] <= free:
                bins[b].append(u)
                room[b] -= length[u]
                break
        else:
            bins.append([u])
            room.append(max_tokens - length[u])
    return [_pack_one(prompts, responses, sorted((units[u] for u in b), key=min)) for b in bins]


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
    mask = None
    if batch.shares_prompts:
        implementation = getattr(model.config, "_attn_implementation", None)
        mask = batch.attention_mask(implementation, next(model.parameters()).dtype)
    out = model(
        input_ids=batch.input_ids,
        position_ids=batch.position_ids,
        attention_mask=mask,
        logits_to_keep=batch.keep,
        use_cache=False,
    )
    rows = out.logits.reshape(-1, out.logits.shape[-1]).float()
    if temperature != 1.0:
        rows = rows / temperature
    row_norm = torch.logsumexp(rows, dim=-1)
    # one row per kept position; a shared prompt's last row predicts the first token of each of its responses
    logprobs = rows[batch.target_rows, batch.targets] - row_norm[batch.target_rows]
    entropy = None
    if with_entropy:
        with torch.no_grad():
            # in row chunks: a (R, V) fp32 softmax on a 150k vocabulary would double the logits' memory
            per_row = torch.cat(
                [
                    norm - (torch.softmax(chunk, dim=-1) * chunk).sum(-1)
                    for chunk, norm in zip(rows.split(ENTROPY_CHUNK), row_norm.split(ENTROPY_CHUNK), strict=True)
                ]
            )
            entropy = per_row[batch.target_rows]
    return TokenOutput(logprobs=logprobs, entropy=entropy)
