"""A test peer in its own process, so that a chaos test can SIGKILL it and start it again on the same port.

    python tests/engine/peer_process.py sglang --port 30000 [--token-delay-s 0.02] [--record requests.jsonl]
    python tests/engine/peer_process.py openai --port 8000 [--token-delay-s 0.02]

`sglang` serves tests/engine/sglang_server.py's SGLangPeer (the SGLang 0.5.23 protocol peer; `--record` appends a
JSON line per request: path, rid, weight version); `openai` serves the OpenAI-compatible peer of
tests/engine/test_generation_openai.py (streamed completions and chat, n choices). Both start with their base
weights, as a restarted server does. Loaded by path like the other helpers here (tests/ is no package).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

HERE = Path(__file__).resolve().parent


def load(filename: str) -> Any:
    name = Path(filename).stem
    spec = importlib.util.spec_from_file_location(name, HERE / filename)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def app(kind: str, *, token_delay_s: float, record: Path | None) -> web.Application:
    if kind == "sglang":
        module = load("sglang_server.py")
        warm_up(module)
        peer = module.SGLangPeer()
        peer.token_delay_s, peer.record = token_delay_s, record
        return peer.app()
    peer = load("test_generation_openai.py").OpenAIPeer()
    peer.token_delay_s = token_delay_s
    served = web.Application()
    served.router.add_post("/v1/completions", peer.handle)
    served.router.add_post("/v1/chat/completions", peer.handle)
    served.router.add_get("/health", peer.health)
    served.router.add_get("/v1/models", peer.models)
    return served


def warm_up(module: Any) -> None:
    """Load SGLang's request parsers before listening (their first use imports them), as a real server warms up
    before it answers /health: a restarted peer is then as fast on its first requests as on later ones."""
    if module.SOURCE is None:
        return
    generate = {"rid": "warm-up", "input_ids": [1], "sampling_params": {"max_new_tokens": 1}, "return_logprob": True}
    for path, body in (("/generate", generate), ("/update_weights_from_disk", {"model_path": "."})):
        with contextlib.suppress(module.SOURCE.ContractError):
            module.SOURCE.validate_request(path, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("sglang", "openai"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-delay-s", type=float, default=0.0)
    parser.add_argument("--record", type=Path, default=None)
    args = parser.parse_args()
    served = app(args.kind, token_delay_s=args.token_delay_s, record=args.record)
    web.run_app(served, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
