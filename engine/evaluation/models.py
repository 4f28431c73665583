"""What `--model` names for `python -m engine.eval`, and the generation backend that serves it.

    spec = parse_model("smollm2-135m")                         # kind "local": alias, HF directory, hub name
    spec = parse_model("runs/x/checkpoints/step_000010")       # kind "checkpoint": its weights + run config
    spec = parse_model("runs/x")                               # the run's newest complete checkpoint
    spec = parse_model("sglang:http://gpu0:30000")             # kind "sglang" (several URLs: comma-separated)
    spec = parse_model("openai:http://localhost:8000/v1", api_model="qwen")   # kind "openai"
    async with open_model(spec, tokenizer="...") as served: served.backend, served.tokenizer

Every backend is health-checked (`GenerationBackend.health`) before anything else runs, so an unreachable URL
fails in seconds with the URL in the message. An OpenAI-compatible server's model list (GET /models) is read
only when --api-model is not given (`transformers serve` answers it with 500 when it has no hub cache). A
checkpoint's weights are read by `learner.checkpoint.load_model_weights`, the one reader of the checkpoint
format.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from engine.generation import GenerationBackend

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
    backend: GenerationBackend  # entered
    tokenizer: Any | None  # None: the openai chat endpoint takes messages and returns text


@contextlib.asynccontextmanager
async def open_model(
    spec: ModelSpec, *, tokenizer: str | None = None, batch_size: int = 64
) -> AsyncIterator[ServedModel]:
    """Load or connect to the model; its servers are health-checked first (ModelError when one is down)."""
    from engine.generation import create_backend

    name, options, model = await _backend_for(spec, batch_size)
    async with create_backend(name, options, model=model) as backend:
        down = [server for server, ok in (await backend.health()).items() if not ok]
        if down:
            raise ModelError(backend.explain_down(down))
        yield ServedModel(backend=backend, tokenizer=await _tokenizer(spec, backend, tokenizer))


async def _backend_for(spec: ModelSpec, batch_size: int) -> tuple[str, dict[str, Any], Any]:
    """(backend name, its options, the in-process model or None) that serve `spec`."""
    if spec.kind == "sglang":
        return "sglang", {"urls": [u.strip() for u in spec.location.split(",") if u.strip()]}, None
    if spec.kind == "openai":
        served = spec.api_model or await _served_model_name(spec.location)
        return "openai", {"base_url": spec.location, "model": served, "endpoint": "chat"}, None
    from learner.models import ModelNotFoundError, load_model

    try:
        model = load_model(_model_name(spec))
    except ModelNotFoundError as exc:
        raise ModelError(str(exc).splitlines()[0]) from None
    if spec.kind == "checkpoint":
        _load_checkpoint(model, spec.location)
    return "local", {"max_batch_size": batch_size}, model


def _model_name(spec: ModelSpec) -> str:
    return spec.base_model if spec.kind == "checkpoint" and spec.base_model else spec.location


async def _tokenizer(spec: ModelSpec, backend: Any, tokenizer: str | None) -> Any | None:
    """The tokenizer that turns prompts into the token ids the backend takes; None for chat messages."""
    if spec.kind == "openai":
        return None
    from learner.models import load_tokenizer

    if spec.kind == "sglang":
        return await _sglang_tokenizer(backend, tokenizer)
    return load_tokenizer(tokenizer or _model_name(spec))


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


async def _served_model_name(base_url: str) -> str:
    """GET {base}/models, needed only without --api-model: the served name when the server lists exactly one."""
    import aiohttp

    url = f"{base_url}/models"
    try:
        async with aiohttp.ClientSession() as session:
            timeout = aiohttp.ClientTimeout(total=_HEALTH_TIMEOUT_S)
            async with session.get(url, timeout=timeout) as response:
                status, raw = response.status, await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ModelError(f"OpenAI-compatible server at {base_url} is unreachable ({type(exc).__name__})") from None
    unknown = "so the served model's name is unknown; pass --api-model"
    if status != 200:
        raise ModelError(f"the OpenAI-compatible server answered GET {url} with HTTP {status}, {unknown}")
    try:
        body = json.loads(raw)
    except ValueError:
        raise ModelError(f"GET {url} did not answer JSON, {unknown}") from None
    names = [m.get("id") for m in (body or {}).get("data", []) if isinstance(m, dict)]
    if len(names) == 1:
        return str(names[0])
    raise ModelError(f"pass --api-model: the server at {base_url} serves {names or 'no listed models'}")
