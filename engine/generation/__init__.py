"""Generation backends behind one async protocol (see `engine.generation.base`).

    from engine.generation import create_backend, SamplingParams
    backend = create_backend("sglang", {"urls": ["http://gpu0:30000", "http://gpu1:30000"]})
    backend = create_backend("local", {"max_batch_size": 32}, model=policy_model)
    backend = create_backend("openai", {"base_url": "http://localhost:8000/v1", "model": "qwen"})

`options` is the backend's config section (a mapping, or its options dataclass already built); unknown keys
and unknown backend names fail with the valid ones listed. Callers never branch on a backend's name: they
read the capabilities of `backend_class(name)` (`weight_format`, `needs_model`, see `GenerationBackend`).
Backend modules are imported on first use, so importing this package (or a config) imports neither torch
nor aiohttp.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Protocol

from engine.generation.base import (
    BackendUnavailable,
    Completion,
    GenerationBackend,
    GenerationError,
    SamplingParams,
    Timings,
    WeightFormat,
    WeightSource,
    config_from_options,
)

__all__ = [
    "BackendUnavailable",
    "Completion",
    "GenerationBackend",
    "GenerationError",
    "SamplingParams",
    "Timings",
    "WeightFormat",
    "WeightSource",
    "available_backends",
    "backend_class",
    "backend_options",
    "create_backend",
]

# name -> "module:class". A new backend is one line here and a section of that name in the run config's
# `generation` (engine/config.py); nothing else names it.
_BACKENDS: dict[str, str] = {
    "local": "engine.generation.local:LocalBackend",
    "openai": "engine.generation.openai_compat:OpenAIBackend",
    "sglang": "engine.generation.sglang_client:SGLangBackend",
}


class GenerationSection(Protocol):
    """The shape of the run config's `generation` section this package reads: the chosen backend's name, and
    one attribute per backend, named after it, holding its options."""

    backend: str


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def backend_class(name: str) -> type[GenerationBackend]:
    """The class registered as `name`, whose class attributes say what it can do (no instance needed)."""
    try:
        module, cls = _BACKENDS[name].split(":")
    except KeyError:
        raise ValueError(f"unknown generation backend {name!r}; valid: {available_backends()}") from None
    return getattr(importlib.import_module(module), cls)


def backend_options(generation: GenerationSection) -> Any:
    """The chosen backend's options in a `generation` config section (`generation.<backend>`)."""
    backend_class(generation.backend)  # an unknown name fails here with the valid ones listed
    return getattr(generation, generation.backend)


def create_backend(
    name: str, options: Mapping[str, Any] | object | None = None, *, model: Any = None
) -> GenerationBackend:
    """Build the backend `name` from its options; `model` is the policy module of a backend that `needs_model`."""
    cls = backend_class(name)
    if isinstance(options, cls.config_class):
        config = options
    else:
        config = config_from_options(cls.config_class, options, where=f"generation backend {name!r}")  # type: ignore[arg-type]
    if not cls.needs_model:
        return cls(config)  # type: ignore[call-arg]
    if model is None:
        raise GenerationError(f"the {name!r} backend decodes with the policy model in-process: pass model=...")
    return cls(model, config)  # type: ignore[call-arg]
