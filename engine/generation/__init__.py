"""Generation backends behind one async protocol (see `engine.generation.base`).

    from engine.generation import create_backend, SamplingParams
    backend = create_backend("sglang", {"urls": ["http://gpu0:30000", "http://gpu1:30000"]})
    backend = create_backend("local", {"max_batch_size": 32}, model=policy_model)
    backend = create_backend("openai", {"base_url": "http://localhost:8000/v1", "model": "qwen"})

`options` is the backend's config section (a mapping); unknown keys and unknown backend names fail with
the valid ones listed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from engine.generation.base import (
    Completion,
    GenerationBackend,
    GenerationError,
    SamplingParams,
    Timings,
    WeightSource,
    config_from_options,
)

__all__ = [
    "Completion",
    "GenerationBackend",
    "GenerationError",
    "SamplingParams",
    "Timings",
    "WeightSource",
    "available_backends",
    "create_backend",
]


def _local(options: Mapping[str, Any], model: Any | None) -> GenerationBackend:
    from engine.generation.local import LocalBackend, LocalConfig

    if model is None:
        raise GenerationError("the 'local' backend decodes with the policy model in-process: pass model=...")
    return LocalBackend(model, config_from_options(LocalConfig, options, where="generation backend 'local'"))


def _sglang(options: Mapping[str, Any], model: Any | None) -> GenerationBackend:
    from engine.generation.sglang_client import SGLangBackend, SGLangConfig

    return SGLangBackend(config_from_options(SGLangConfig, options, where="generation backend 'sglang'"))


def _openai(options: Mapping[str, Any], model: Any | None) -> GenerationBackend:
    from engine.generation.openai_compat import OpenAIBackend, OpenAIConfig

    return OpenAIBackend(config_from_options(OpenAIConfig, options, where="generation backend 'openai'"))


# Factories share one signature (options, model); the remote backends ignore the in-process model.
_BACKENDS: dict[str, Callable[[Mapping[str, Any], Any | None], GenerationBackend]] = {
    "local": _local,
    "openai": _openai,
    "sglang": _sglang,
}


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def create_backend(
    name: str, options: Mapping[str, Any] | None = None, *, model: Any | None = None
) -> GenerationBackend:
    """Build the backend `name` from its config section; `model` is the in-process policy (local only)."""
    try:
        factory = _BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown generation backend {name!r}; valid: {available_backends()}") from None
    return factory(options or {}, model)
