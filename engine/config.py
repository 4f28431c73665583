"""Typed run configuration: dataclass sections, YAML files, `section.key=value` overrides, validation.

    cfg = load_config("configs/default.yaml", ["rollout.group_size=8", "run.name=try1"])
    write_config(cfg, run_dir / "config.yaml")

Defaults live on the dataclass fields below and nowhere else. Every error raised here is a
`ConfigError` whose message is one line that says what was wrong, where, and what to do.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from engine.generation import SamplingParams
from engine.generation.local_config import LocalConfig
from engine.prompts import DEFAULT_TEMPLATE, ExampleConfig, prompt_settings
from learner.config import AlgorithmConfig, LearnerConfig
from sandbox import Isolation, Limits
from solvers import ExtractConfig, RewardConfig


class ConfigError(ValueError):
    """Bad configuration input (file, key, or value); the message is meant for the user as is."""


@dataclass(kw_only=True)
class ModelConfig:
    path: str = "smollm2-135m"  # HF directory, hub name, or the embedded alias


@dataclass(kw_only=True)
class DataConfig:
    train: str = "generated"  # "generated" (the project's own problems), a JSONL path/name, or a HF dataset
    eval: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)  # generated problem families; empty = all
    difficulty: Literal["intro", "easy", "medium", "hard"] = "easy"  # engine.data DIFFICULTIES; intro: some families
    num_problems: int = 256
    infeasible_rate: float = 0.05  # share of generated problems with no optimum (answer null)
    benchmarks_dir: str | None = None  # where short benchmark names are looked up ($EVOM_BENCHMARKS otherwise)
    hf_split: str = "test"  # split of a Hugging Face dataset
    max_prompt_tokens: int = 1024
    prompt_overlong: Literal["skip", "truncate"] = "skip"  # a prompt over max_prompt_tokens: skip it, or cut it
    # The prompt (engine/prompts.py): a user turn `prompt_template` over the solver's instructions and the question,
    # after an optional system message and an optional worked example on another problem ({question, answer}: a
    # previous user turn under the same template, then the assistant's full answer); `answer_prefix` is appended
    # after the chat template's generation prompt, the same opening of every answer. engine.eval --config uses
    # the same prompts.
    prompt_template: str = DEFAULT_TEMPLATE  # placeholders {instructions} and {question}
    system_prompt: str | None = None  # a system message, for chat templates that take one
    example: ExampleConfig | None = None
    answer_prefix: str = ""  # e.g. "```python\nimport pulp\n": prompt tokens, not trained on; scored with the answer
    seed: int = 0

    def __post_init__(self) -> None:
        # The prompt options are checked when the config is read, not when the first prompt is built after the
        # model has loaded; the message names this section's keys.
        try:
            prompt_settings(self)
        except ValueError as exc:
            message = str(exc)
            for setting, key in (("template", "prompt_template"), ("overlong", "prompt_overlong"), ("", "")):
                message = message.replace(f"PromptSettings.{setting}", key)
            raise ValueError(message) from None


@dataclass(kw_only=True)
class SolverConfig:
    name: str = "gurobipy"
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)


@dataclass(kw_only=True)
class SandboxConfig:
    isolation: Isolation = "nsjail"  # process = no jail, development only
    workers: int = 2
    recycle_after: int = 200  # runs per warm worker before it is replaced
    limits: Limits = field(default_factory=Limits)


@dataclass(kw_only=True)
class GenerationConfig:
    backend: Literal["local", "sglang", "openai"] = "local"
    sampling: SamplingParams = field(default_factory=SamplingParams)
    local: LocalConfig = field(default_factory=LocalConfig)
    # Options of the remote backends, checked when the backend is built: see SGLangConfig (urls, retries,
    # launch, ...) in engine/generation/sglang_client.py and OpenAIConfig in engine/generation/openai_compat.py.
    sglang: dict[str, Any] = field(default_factory=dict)
    openai: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class RolloutConfig:
    group_size: int = 4  # G samples per problem
    prompts_per_step: int = 4  # groups in one training batch
    dynamic_sampling: bool = False  # DAPO: drop zero-variance groups and generate replacements
    max_gen_batches: int = 3  # give up refilling the batch after this many generation rounds
    max_staleness: int = 0  # 0 = strictly on-policy
    # Partial rollouts (engine/rollout/partial.py): a weight update cuts the samples still decoding short and each
    # resumes from prompt + its tokens on the new weights. Needs max_staleness >= 1 and generation.backend=sglang.
    partial_rollouts: bool = False
    queue_size: int = 64
    filters: list[str] = field(default_factory=list)  # extra group filters (engine.filters), e.g. overlong
    verify_timeout_s: float = 600.0  # a verification taking longer is an infrastructure failure, not a 0
    overlong_buffer: int = 0  # DAPO soft overlong punishment over the last tokens of max_new_tokens; 0 = off
    overlong_factor: float = 1.0


@dataclass(kw_only=True)
class RunConfig:
    name: str = "default"
    output_dir: str = "runs"
    steps: int = 10
    seed: int = 0
    save_every: int = 5
    keep_checkpoints: int = 2  # newest complete checkpoints kept; older ones are deleted (0 keeps all)


@dataclass(kw_only=True)
class Config:
    """The whole run. `algorithm` and `learner` are the learner's own dataclasses (`learner.config`),
    `solver.reward`/`solver.extract` the solvers', `sandbox.limits` the sandbox's, `generation.sampling` and
    `generation.local` the generation backends': their defaults live there."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        # The generator reports log_softmax(logits / T) at its sampling temperature T (1 when greedy), so the
        # learner divides its logits by the same T: algorithm.temperature follows the sampling temperature.
        sampling = self.generation.sampling
        sampled_at = 1.0 if sampling.greedy else sampling.temperature
        if self.algorithm.temperature is None:
            self.algorithm = dataclasses.replace(self.algorithm, temperature=sampled_at)
        elif self.algorithm.temperature != sampled_at:
            raise ValueError(
                f"algorithm.temperature={self.algorithm.temperature} but generation.sampling.temperature="
                f"{sampling.temperature}: the learner must score tokens at the temperature they were sampled at "
                f"({sampled_at}); drop algorithm.temperature (it follows the sampling temperature)"
            )
        # The learner's config nests the algorithm; the run config keeps it as its own section.
        self.learner = dataclasses.replace(self.learner, algorithm=self.algorithm)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file (if any), then `section.key=value` overrides, all validated."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_layered(Path(path))
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


def read_layered(path: Path, *, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config whose optional top-level `base: FILE` (relative to it) is read first and overlaid."""
    if path.resolve() in seen:
        raise ConfigError(f"config file {path} includes itself through `base:`")
    raw = read_yaml(path)
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"config file {path}: base must be a file name, got {_show(base)}")
    return _merge(read_layered(path.parent / base, seen=(*seen, path.resolve())), raw)


def _merge(under: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(under)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


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
    if cls is LearnerConfig and "algorithm" in raw:
        raise ConfigError(f"{_join(where, 'algorithm')}: set the top-level algorithm section instead")
    values = {key: _coerce(hints[key], value, where=_join(where, key)) for key, value in raw.items()}
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _coerce(hint: Any, value: Any, *, where: str) -> Any:
    if hint is Any:
        return value
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
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {_show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {_show(value)}")
        return tuple(_coerce(a, v, where=f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_show(value)}")
        return {_coerce(args[0], k, where=where): _coerce(args[1], v, where=f"{where}.{k}") for k, v in value.items()}
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
    """Plain YAML-safe data: tuples become lists, mappings dicts; the learner's nested algorithm is omitted
    because it is the top-level `algorithm` section."""
    data = _plain(dataclasses.asdict(cfg))
    if isinstance(cfg, Config):
        del data["learner"]["algorithm"]
    return data


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def write_config(cfg: Config, path: Path) -> None:
    """Write the resolved config atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    tmp.replace(path)
