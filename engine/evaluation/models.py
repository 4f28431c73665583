"""What `--model` names for `python -m engine.eval`, and the generation backend that serves it.

    spec = parse_model("smollm2-135m")                         # kind "local": alias, HF directory, hub name
    spec = parse_model("runs/x/checkpoints/step_000010")       # kind "checkpoint": its weights + run config
    spec = parse_model("runs/x")                               # the run's newest complete checkpoint
    spec = parse_model("sglang:http://gpu0:30000")             # kind "sglang" (several URLs: comma-separated)
    spec = parse_model("openai:http://localhost:8000/v1", api_model="qwen")   # kind "openai"
    async with open_model(spec, tokenizer="...") as served: served.backend, served.tokenizer

Remote models are health-checked before anything else runs (SGLang: GET /health; OpenAI-compatible:
GET /models), so an unreachable URL fails in seconds with the URL in the message. A checkpoint's weights are
read by `learner.checkpoint.load_model_weights`, the one reader of the checkpoint format.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ModelKind = Literal["local", "checkpoint", "sglang", "openai"]
_SCHEMES = ("sglang:", "openai:")
_HEALTH_TIMEOUT_S = 5.0


class ModelError(ValueError):
    """`--model` names nothing usable (missing directory, incomplete checkpoint, unreachable server)."""


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    kind: ModelKind
    location: str  # alias / directory / hub name, checkpoint directory, or the server URL(s)
    base_model: str | None = None  # checkpoint: the run's model.path, whose architecture the weights fill
    api_model: str | None = None  # openai: the served model's name

    @property
    def label(self) -> str:
        return self.location if self.kind in ("local", "checkpoint") else f"{self.kind}:{self.location}"


def parse_model(text: str, *, api_model: str | None = None) -> ModelSpec:
    """Classify `--model`; a checkpoint's run config is read here, so a broken one fails before any work."""
    for scheme in _SCHEMES:
        if text.startswith(scheme):
            url = text.removeprefix(scheme)
            if not url.startswith(("http://", "https://")):
                raise ModelError(f"--model {text!r}: expected {scheme}http://host:port")
            kind: ModelKind = "sglang" if scheme == "sglang:" else "openai"
            return ModelSpec(kind=kind, location=url.rstrip("/"), api_model=api_model)
    if text.startswith(("http://", "https://")):
        raise ModelError(f"--model {text!r}: say which protocol the server speaks: sglang:{text} or openai:{text}")
    from learner.checkpoint import DCP_DIR

    path = Path(text).expanduser()
    if (path / "checkpoints").is_dir() and (path / "config.yaml").is_file():
        path = _latest(path)  # a run directory: its newest complete checkpoint
    if (path / DCP_DIR).is_dir():
        return ModelSpec(kind="checkpoint", location=str(path), base_model=_run_model_path(path))
    from learner.models import ModelNotFoundError, resolve_model_path

    try:
        resolve_model_path(text)
    except ModelNotFoundError as exc:
        raise ModelError(str(exc)) from None
    return ModelSpec(kind="local", location=text)


def _latest(run_dir: Path) -> Path:
    from learner.checkpoint import latest_checkpoint

    checkpoint = latest_checkpoint(run_dir / "checkpoints")
    if checkpoint is None:
        raise ModelError(f"run {run_dir} has no complete checkpoint yet; pass a HF directory or wait for one")
    return checkpoint


def _run_model_path(checkpoint: Path) -> str:
    """The `model.path` of the run a checkpoint (runs/<name>/checkpoints/step_N) belongs to."""
    from learner.checkpoint import require_complete

    try:
        require_complete(checkpoint)
    except FileNotFoundError as exc:
        raise ModelError(str(exc)) from None
    config = checkpoint.parent.parent / "config.yaml"
    if not config.is_file():
        raise ModelError(
            f"checkpoint {checkpoint} has no run config at {config}: the model architecture is unknown; "
            "export the weights as a HF directory and pass that instead"
        )
    from engine.config import read_yaml

    model_path = (read_yaml(config).get("model") or {}).get("path")
    if not isinstance(model_path, str):
        raise ModelError(f"{config} has no model.path; cannot tell which model the checkpoint holds")
    return model_path


@dataclass(frozen=True, kw_only=True)
class ServedModel:
    backend: Any  # an entered GenerationBackend
    tokenizer: Any | None  # None: the openai chat endpoint takes messages and returns text


@contextlib.asynccontextmanager
async def open_model(
    spec: ModelSpec, *, tokenizer: str | None = None, batch_size: int = 64
) -> AsyncIterator[ServedModel]:
    """Load or connect to the model; remote servers are health-checked first (ModelError when down)."""
    from engine.generation import create_backend

    if spec.kind in ("local", "checkpoint"):
        from learner.models import ModelNotFoundError, load_model, load_tokenizer

        name = spec.location if spec.kind == "local" else spec.base_model
        try:
            model = load_model(name)
        except ModelNotFoundError as exc:
            raise ModelError(str(exc).splitlines()[0]) from None
        if spec.kind == "checkpoint":
            _load_checkpoint(model, spec.location)
        backend = create_backend("local", {"max_batch_size": batch_size}, model=model)
        async with backend:
            yield ServedModel(backend=backend, tokenizer=load_tokenizer(tokenizer or name))
        return
    if spec.kind == "sglang":
        urls = [u.strip() for u in spec.location.split(",") if u.strip()]
        backend = create_backend("sglang", {"urls": urls})
        async with backend:
            down = [url for url, ok in (await backend.health()).items() if not ok]
            if down:
                raise ModelError(f"SGLang server(s) {down} did not answer GET /health; start them or fix the URL")
            yield ServedModel(backend=backend, tokenizer=await _sglang_tokenizer(backend, tokenizer))
        return
    served_name = await _openai_model_name(spec)
    backend = create_backend("openai", {"base_url": spec.location, "model": served_name, "endpoint": "chat"})
    async with backend:
        yield ServedModel(backend=backend, tokenizer=None)


def _load_checkpoint(model: Any, checkpoint: str) -> None:
    """The checkpoint's weights into the run's base model; one that does not fit is a ModelError (exit 2)."""
    from learner.checkpoint import IncompatibleCheckpointError, load_model_weights

    try:
        load_model_weights(model, checkpoint)
    except (FileNotFoundError, IncompatibleCheckpointError) as exc:
        raise ModelError(str(exc)) from None


async def _sglang_tokenizer(backend: Any, tokenizer: str | None) -> Any:
    """SGLang takes token ids, so prompts need the served model's tokenizer: --tokenizer, or its model_path."""
    from learner.models import ModelNotFoundError, load_tokenizer

    name = tokenizer or (await backend.model_info()).get("model_path")
    try:
        return load_tokenizer(name)
    except (ModelNotFoundError, OSError, ValueError) as exc:
        raise ModelError(
            f"cannot load the tokenizer {name!r} of the SGLang model ({str(exc).splitlines()[0]}); "
            "pass --tokenizer with a local HF directory or hub name"
        ) from None


async def _openai_model_name(spec: ModelSpec) -> str:
    """GET {base}/models: the health check, and the served name when --api-model is not given and only one is."""
    import aiohttp

    url = f"{spec.location}/models"
    try:
        async with aiohttp.ClientSession() as session:
            timeout = aiohttp.ClientTimeout(total=_HEALTH_TIMEOUT_S)
            async with session.get(url, timeout=timeout) as response:
                if response.status != 200:
                    raise ModelError(f"OpenAI-compatible server answered GET {url} with HTTP {response.status}")
                body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ModelError(f"OpenAI-compatible server at {spec.location} is unreachable ({type(exc).__name__})") from None
    names = [m.get("id") for m in (body or {}).get("data", []) if isinstance(m, dict)]
    if spec.api_model:
        return spec.api_model
    if len(names) == 1:
        return str(names[0])
    raise ModelError(f"pass --api-model: the server at {spec.location} serves {names or 'no listed models'}")
