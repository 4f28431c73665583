"""Linear layers on prepacked oneDNN weights for CPU decoding.

A decode step multiplies a handful of rows (the live samples) by every weight matrix of the model, and on
CPU that is where the time goes. The plain `F.linear` runs MKL's sgemm on the row-major weight; oneDNN runs
the same product faster on a weight reordered once into its blocked layout, and the reorder pays for itself
within a few decode steps (per-call timings and the whole-decode gain: bench/NOTES.md, `prepack_weights`).

`PackedLinears` keeps those reordered copies, keyed by weight tensor. `refresh(model)` packs what changed:
every in-place write to a weight (an optimizer step, `copy_` in `update_weights`, `load_state_dict`) bumps
the tensor's version counter, which is part of the key, so a stale copy is never used. While `active(model)`
is entered, each plain `nn.Linear` of the model (one that does not override `forward`, e.g. not a LoRA or
quantized layer) carries an instance `forward` that runs the oneDNN kernel when called from the entering
thread on a current packed copy; the instance attribute is removed on exit. Calls from other threads (a
learner sharing the model), calls that need autograd, other dtypes or devices, and weights changed since the
last refresh take the plain `F.linear`.

Why patch the modules rather than intercept `F.linear` with a torch function mode, which would be
thread-local by construction: a mode sees every torch call of the step, not only the linear ones, and on a
small model that overhead ate the gain (bench/NOTES.md, "Prepacked linear weights").

The result equals `F.linear` up to float rounding (the kernels sum in a different order: about 1e-6 on
unit-scale outputs in float32).

    packed = PackedLinears()
    packed.refresh(model)          # on the decode thread, before each call
    with packed.active(model):
        model(...)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Weight dtypes packed. Others (float16, quantized) keep the plain kernel.
PACKED_DTYPES = frozenset({torch.float32, torch.bfloat16})


def available() -> bool:
    """Whether this torch build has the oneDNN linear kernels used here."""
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


@dataclass(frozen=True)
class _Packed:
    weight: torch.Tensor  # the model's weight; held so its id is not reused while this entry exists
    version: int  # weight._version when packed
    data_ptr: int
    packed: torch.Tensor


class PackedLinears:
    """oneDNN-packed copies of a CPU model's `nn.Linear` weights (see the module docstring).

    batch_hint: the row count oneDNN picks its layout for. The default, 8, suits decode steps of 1-64 rows
    without slowing prefills of hundreds of tokens below the plain kernel (bench/NOTES.md, `prepack_weights`).
    """

    def __init__(self, batch_hint: int = 8) -> None:
        if batch_hint < 1:
            raise ValueError(f"batch_hint must be >= 1, got {batch_hint}")
        self.batch_hint = batch_hint
        self._entries: dict[int, _Packed] = {}
        self._unsupported: set[torch.dtype] = set()  # dtypes this CPU's oneDNN refused to pack
        self.hits = 0  # F.linear calls served by a packed weight (for logs and tests)

    def __len__(self) -> int:
        return len(self._entries)

    def refresh(self, model: torch.nn.Module) -> int:
        """Pack every CPU `nn.Linear` weight of `model` not packed at its current version; forget weights the
        model no longer has. Returns how many weights were packed."""
        current: dict[int, torch.Tensor] = {}
        for module in _plain_linears(model):
            weight = module.weight
            if _packable(weight) and weight.dtype not in self._unsupported:
                current[id(weight)] = weight  # tied weights (lm_head / embeddings) appear once
        packed = 0
        for key, weight in current.items():
            entry = self._entries.get(key)
            if entry is not None and _fresh(entry, weight):
                continue
            try:
                with torch.no_grad():
                    reordered = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), self.batch_hint)
            except RuntimeError:  # e.g. bfloat16 on a CPU without bf16 support: that dtype stays plain
                self._unsupported.add(weight.dtype)
                self._entries.pop(key, None)
                continue
            self._entries[key] = _Packed(weight, weight._version, weight.data_ptr(), reordered)
            packed += 1
        for key in set(self._entries) - set(current):
            del self._entries[key]
        return packed

    def clear(self) -> None:
        self._entries.clear()

    @contextlib.contextmanager
    def active(self, model: torch.nn.Module) -> Iterator[None]:
        """Serve the calling thread's linear layers of `model` from the packed weights while entered."""
        owner = threading.get_ident()
        patched: list[tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]] = []

        def packed_forward(module: torch.nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
            def forward(x: torch.Tensor) -> torch.Tensor:
                if threading.get_ident() == owner:
                    out = self.linear(x, module.weight, module.bias)
                    if out is not None:
                        return out
                return F.linear(x, module.weight, module.bias)

            return forward

        try:
            for module in _plain_linears(model):
                if id(module.weight) in self._entries:
                    forward = packed_forward(module)
                    module.forward = forward
                    patched.append((module, forward))
            yield
        finally:
            for module, forward in patched:
                if module.__dict__.get("forward") is forward:
                    del module.forward

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
        """`F.linear(x, weight, bias)` on the packed weight, or None when this call must take the plain one."""
        entry = self._entries.get(id(weight))
        if (
            entry is None
            or not _fresh(entry, weight)
            or x.dtype != weight.dtype
            or x.device.type != "cpu"
            or x.dim() == 0
            or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            or (bias is not None and (bias.dtype != weight.dtype or bias.device.type != "cpu"))
        ):
            return None
        self.hits += 1
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(flat, entry.packed, bias, "none", [], "")
        return out.reshape(*x.shape[:-1], weight.shape[0])


def _plain_linears(model: torch.nn.Module) -> Iterator[torch.nn.Linear]:
    """The model's `nn.Linear` modules that compute exactly `F.linear(x, weight, bias)`: no subclass forward
    (LoRA, quantized layers) and no forward already replaced on the instance (accelerate's hooks)."""
    for module in model.modules():
        if (
            isinstance(module, torch.nn.Linear)
            and type(module).forward is torch.nn.Linear.forward
            and "forward" not in module.__dict__
            and isinstance(module.weight, torch.Tensor)
        ):
            yield module


def _packable(weight: torch.Tensor) -> bool:
    return weight.device.type == "cpu" and weight.dim() == 2 and weight.dtype in PACKED_DTYPES and weight.numel() > 0


def _fresh(entry: _Packed, weight: torch.Tensor) -> bool:
    """Entries are found by id(weight); the entry holds its weight, so that id names no other tensor."""
    return entry.version == weight._version and entry.data_ptr == weight.data_ptr()
