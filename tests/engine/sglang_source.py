"""SGLang 0.5.23's own request parsers, loaded from the installed wheel for contract tests.

The wheel is installed without its dependencies (`pip install --no-deps sglang==0.5.23`, see the Makefile),
so `import sglang` (whose __init__ pulls in torch kernels, zmq, pybase64, ...) cannot run here. What the HTTP
server applies to a request body lives in modules that need only msgspec and pydantic; they are imported
with the heavy package __init__ files bypassed:

- `sglang.api.v1.api_types.GenerateRequest.from_json_value`: the contract gate `/generate` runs on every body
  (`srt/entrypoints/api_contract.py`); it refuses unknown `sampling_params` keys and wrong types;
- `sglang.srt.sampling.sampling_params.SamplingParams(**sampling_params)` then `.normalize(None)` and
  `.verify(vocab_size)`: what the tokenizer manager does to a request's sampling options;
- the weight and abort endpoints' request classes (`UpdateWeightFromDiskReqInput`, ... in
  `srt/managers/io_struct.py`): msgspec Structs whose pydantic schema (`msgspec_struct_pydantic_core_schema`)
  FastAPI uses to parse the body. io_struct.py itself imports torch and zmq, so the class definitions are
  taken from its source text (ast) and executed against SGLang's own msgspec_utils.

The server *ignores* unknown top-level keys of these bodies; `validate_*` here refuse them, because for a
client an ignored key is an option that silently does nothing (a misspelt field).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any

SGLANG_VERSION = "0.5.23"
# The request classes of the endpoints the client calls, by path.
ENDPOINT_CLASSES = {
    "/update_weights_from_disk": "UpdateWeightFromDiskReqInput",
    "/update_weights_from_tensor": "UpdateWeightsFromTensorReqInput",
    "/update_weights_from_distributed": "UpdateWeightsFromDistributedReqInput",
    "/init_weights_update_group": "InitWeightsUpdateGroupReqInput",
    "/destroy_weights_update_group": "DestroyWeightsUpdateGroupReqInput",
    "/begin_weight_update": "BeginWeightUpdateReqInput",
    "/end_weight_update": "EndWeightUpdateReqInput",
    "/update_weight_version": "UpdateWeightVersionReqInput",
    "/abort_request": "AbortReq",
}
# Bare packages standing in for those whose __init__ imports the GPU stack.
_BARE_PACKAGES = ("sglang", "sglang.srt", "sglang.srt.utils", "sglang.srt.managers")


class ContractError(ValueError):
    """A request body SGLang 0.5.23 would refuse (or silently ignore part of)."""


def sglang_root() -> Path | None:
    """The installed wheel's package directory, or None when sglang 0.5.23 or msgspec is missing."""
    spec = importlib.util.find_spec("sglang") if "sglang" not in sys.modules else None
    if "sglang" in sys.modules:
        paths = list(getattr(sys.modules["sglang"], "__path__", []))
    else:
        paths = list(spec.submodule_search_locations or []) if spec is not None else []
    if not paths or importlib.util.find_spec("msgspec") is None:
        return None
    root = Path(paths[0])
    dist = list(root.parent.glob("sglang-*.dist-info"))
    if not dist or not dist[0].name.startswith(f"sglang-{SGLANG_VERSION}."):
        return None
    return root


def _module(name: str) -> types.ModuleType:
    root = sglang_root()
    if root is None:
        raise RuntimeError(f"sglang=={SGLANG_VERSION} (installed --no-deps) and msgspec are needed")
    for package in _BARE_PACKAGES:
        if package not in sys.modules:
            bare = types.ModuleType(package)
            bare.__path__ = [str(root.joinpath(*package.split(".")[1:]))]
            sys.modules[package] = bare
    return importlib.import_module(name)


def api_types() -> types.ModuleType:
    return _module("sglang.api.v1.api_types")


def auth() -> types.ModuleType:
    """srt/utils/auth.py: `decide_request_auth`, the server's API-key rule per endpoint level."""
    return _module("sglang.srt.utils.auth")


@cache
def io_struct_classes() -> dict[str, type]:
    """The request classes of ENDPOINT_CLASSES (and BaseReq), defined from io_struct.py's own source."""
    msgspec_utils = _module("sglang.srt.utils.msgspec_utils")
    weight_versions = _module("sglang.srt.utils.weight_versions")
    import msgspec

    source = (sglang_root() / "srt" / "managers" / "io_struct.py").read_text()  # type: ignore[operator]
    wanted = {"BaseReq", "FinishReasonDict", *ENDPOINT_CLASSES.values()}
    nodes = []
    for node in ast.parse(source).body:
        name = getattr(node, "name", None)
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
        if name in wanted:
            nodes.append(node)
    missing = wanted - {getattr(n, "name", None) or n.targets[0].id for n in nodes}
    if missing:
        raise RuntimeError(f"io_struct.py of sglang {SGLANG_VERSION} has no {sorted(missing)}")
    # A module of its own, registered, so msgspec and pydantic can resolve the classes' annotations.
    module = types.ModuleType("sglang_io_struct_requests")
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    namespace |= {name: getattr(typing, name) for name in typing.__all__}
    namespace |= {
        "msgspec": msgspec,
        "Base64Bytes": msgspec_utils.Base64Bytes,
        "msgspec_struct_pydantic_core_schema": msgspec_utils.msgspec_struct_pydantic_core_schema,
        "WeightVersionSpans": weight_versions.WeightVersionSpans,
    }
    exec(compile(ast.Module(body=nodes, type_ignores=[]), "io_struct.py", "exec"), namespace)
    return {name: namespace[name] for name in wanted if isinstance(namespace[name], type)}


@cache
def generate_req_input_fields() -> frozenset[str]:
    """The field names of io_struct.GenerateReqInput (the dataclass FastAPI parses a /generate body into)."""
    source = (sglang_root() / "srt" / "managers" / "io_struct.py").read_text()  # type: ignore[operator]
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name == "GenerateReqInput":
            return frozenset(
                s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
            )
    raise RuntimeError("io_struct.py has no GenerateReqInput")


def validate_generate(body: dict[str, Any], *, vocab_size: int = 1 << 20) -> Any:
    """Check a /generate body as SGLang 0.5.23 does; returns the normalised SamplingParams."""
    unknown = set(body) - generate_req_input_fields()
    if unknown:
        raise ContractError(f"/generate: GenerateReqInput has no field(s) {sorted(unknown)}")
    types_ = api_types()
    try:
        types_.GenerateRequest.from_json_value(body)
    except types_.JsonContractError as exc:
        raise ContractError(f"/generate: {exc}") from None
    sampling_params = _module("sglang.srt.sampling.sampling_params")
    try:
        params = sampling_params.SamplingParams(**(body.get("sampling_params") or {}))
        params.normalize(None)
        params.verify(vocab_size)
    except (TypeError, ValueError) as exc:
        raise ContractError(f"/generate sampling_params: {exc}") from None
    return params


def validate_body(path: str, body: dict[str, Any]) -> Any:
    """Parse a weight/abort endpoint's body with its io_struct class's own pydantic schema (as FastAPI does);
    returns the request object."""
    import pydantic

    cls = io_struct_classes()[ENDPOINT_CLASSES[path]]
    import msgspec

    unknown = set(body) - {f.name for f in msgspec.structs.fields(cls)}
    if unknown:
        raise ContractError(f"{path}: {cls.__name__} has no field(s) {sorted(unknown)}")
    try:
        return pydantic.TypeAdapter(cls).validate_python(body)
    except (pydantic.ValidationError, TypeError, ValueError) as exc:
        raise ContractError(f"{path}: {exc}") from None


def validate_request(path: str, body: dict[str, Any]) -> Any:
    """Either of the above, by endpoint."""
    return validate_generate(body) if path == "/generate" else validate_body(path, body)
