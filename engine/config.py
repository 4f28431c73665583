"""Typed run configuration: dataclass sections, YAML files, `section.key=value` overrides, validation.

    cfg = load_config("configs/default.yaml", ["rollout.group_size=8", "run.name=try1"])
    write_config(cfg, run_dir / "config.yaml")

Defaults live on the dataclass fields below and nowhere else. Every error raised here is a
`ConfigError` whose message is one line that says what was wrong, where, and what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """Bad configuration input (file, key, or value); the message is meant for the user as is."""


@dataclass(kw_only=True)
class ModelConfig:
    path: str = "smollm2-135m"  # HF directory, hub name, or the embedded alias
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    gradient_checkpointing: bool = False


@dataclass(kw_only=True)
class DataConfig:
    train: str = "generated"  # "generated" (the project's own problems), a JSONL path, or a HF dataset name
    eval: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)  # generated problem families; empty = all
    difficulty: Literal["easy", "medium", "hard"] = "easy"
    num_problems: int = 256
    max_prompt_tokens: int = 1024
    seed: int = 0


@dataclass(kw_only=True)
class SolverConfig:
    name: str = "gurobipy"
    extract: Literal["last", "first", "concat"] = "last"
    compare: Literal["rel", "orlm"] = "rel"  # |pred-gt|/(|gt|+1) < tol, or ORLM's round-then-5%
    tolerance: float = 1e-6


@dataclass(kw_only=True)
class SandboxConfig:
    isolation: Literal["nsjail", "process"] = "nsjail"
    workers: int = 2
    wall_s: float = 30.0
    cpu_s: float = 30.0
    memory_mb: int = 2048
    max_procs: int = 32
    output_bytes: int = 1 << 20
    tmp_mb: int = 64
    recycle_after: int = 200


@dataclass(kw_only=True)
class GenerationConfig:
    backend: Literal["local", "sglang", "openai"] = "local"
    urls: list[str] = field(default_factory=list)  # sglang / openai servers (or one router URL)
    max_new_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    timeout_s: float = 600.0


@dataclass(kw_only=True)
class RolloutConfig:
    group_size: int = 4  # G samples per problem
    prompts_per_step: int = 4  # groups in one training batch
    dynamic_sampling: bool = False  # DAPO: drop zero-variance groups and generate replacements
    max_gen_batches: int = 3  # give up refilling the batch after this many generation rounds
    max_staleness: int = 0  # 0 = strictly on-policy
    queue_size: int = 64


@dataclass(kw_only=True)
class AlgorithmConfig:
    name: Literal["grpo", "dapo"] = "grpo"
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"] = (
        "token-mean"
    )
    advantage_scale: Literal["group", "none"] = "group"
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float | None = None
    kl_coef: float = 0.0
    kl_kind: Literal["k1", "k2", "k3"] = "k3"
    overlong_buffer: int = 0  # DAPO soft overlong punishment; 0 = off
    overlong_factor: float = 1.0


@dataclass(kw_only=True)
class LearnerConfig:
    lr: float = 1e-6
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0
    ppo_epochs: int = 1
    mini_batches: int = 1
    micro_batch_tokens: int = 4096
    device: str = "auto"  # auto: cuda when available, else cpu


@dataclass(kw_only=True)
class RunConfig:
    name: str = "default"
    output_dir: str = "runs"
    steps: int = 10
    seed: int = 0
    save_every: int = 5
    log_every: int = 1


@dataclass(kw_only=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    run: RunConfig = field(default_factory=RunConfig)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file (if any), then `section.key=value` overrides, all validated."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml(Path(path))
    for item in overrides:
        dotted, value = parse_override(item)
        _set_dotted(raw, dotted, value)
    return build(Config, raw, where="config")


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key or "." not in key:
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. rollout.group_size=8)")
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text  # not YAML: keep the raw string and let type validation judge it
    return key, value


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted}: {part} is a value, not a section")
        node = child
    node[last] = value


def build(cls: type, raw: Any, *, where: str) -> Any:
    """Construct dataclass `cls` from a mapping, checking every key and value against its type hints."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {_join(where, close[0])}?" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown key {_join(where, key)}{hint}")
    values = {key: _coerce(hints[key], value, where=_join(where, key)) for key, value in raw.items()}
    return cls(**values)


def _coerce(hint: Any, value: Any, *, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where=where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(option, value, where=where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {', '.join(map(str, args))}, got {_show(value)}")
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {_show(value)}")
        return [_coerce(args[0], v, where=f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-6" (no dot) as a string
            with contextlib.suppress(ValueError):
                return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is bool or hint is str:
        if isinstance(value, hint):
            return value
    else:
        raise TypeError(f"{where}: unsupported config type {hint!r}")
    raise ConfigError(f"{where}: expected {hint.__name__}, got {_show(value)}")


def _join(where: str, key: Any) -> str:
    return str(key) if where == "config" else f"{where}.{key}"


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def write_config(cfg: Config, path: Path) -> None:
    """Write the resolved config atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    tmp.replace(path)
