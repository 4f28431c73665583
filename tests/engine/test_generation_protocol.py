"""The generation registry and the capabilities callers read instead of backend names; the remote backends'
shared lifecycle (tests/engine/test_generation_{local,sglang,openai}.py cover each backend's own behaviour).

Run: .venv/bin/pytest tests/engine/test_generation_protocol.py
"""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys

import pytest

from engine.config import GenerationConfig
from engine.generation import (
    GenerationBackend,
    GenerationError,
    available_backends,
    backend_class,
    backend_options,
    create_backend,
)
from engine.generation.local_config import LocalConfig


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_every_backend_declares_its_capabilities():
    got = {name: (backend_class(name).weight_format, backend_class(name).needs_model) for name in available_backends()}
    assert got == {"local": ("state_dict", True), "openai": (None, False), "sglang": ("hf_dir", False)}
    for name in available_backends():
        cls = backend_class(name)
        assert cls.name == name and dataclasses.is_dataclass(cls.config_class)
        for method in ("generate", "update_weights", "abort", "health", "explain_down", "close", "__aenter__"):
            assert callable(getattr(cls, method)), (name, method)
    with pytest.raises(ValueError, match=r"unknown generation backend 'vllm'; valid: \['local', 'openai', 'sglang'\]"):
        backend_class("vllm")


def test_options_come_from_the_section_named_after_the_backend():
    gen = GenerationConfig(backend="sglang", sglang={"urls": ["http://a:1"]}, local=LocalConfig(max_batch_size=3))
    assert backend_options(gen) == {"urls": ["http://a:1"]}
    assert backend_options(dataclasses.replace(gen, backend="local")) == LocalConfig(max_batch_size=3)
    backend = create_backend("sglang", backend_options(gen))
    assert isinstance(backend, GenerationBackend) and backend.config.urls == ("http://a:1",)
    # An options dataclass already built is taken as is; a mapping is checked against it.
    config = backend_class("openai").config_class(base_url="http://h/v1", model="m")
    assert create_backend("openai", config).config is config
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['url'\] for generation backend 'openai'"):
        create_backend("openai", {"url": "http://h/v1", "model": "m"})


@pytest.mark.parametrize("name", ["sglang", "openai"])
async def test_remote_backends_share_one_lifecycle(name):
    url = closed_port_url()
    options = {"urls": [url]} if name == "sglang" else {"base_url": f"{url}/v1", "model": "m"}
    backend = create_backend(name, options | {"connect_timeout_s": 1.0})
    # Health works before start (nothing launched, a short-lived session), and names what is down.
    status = await backend.health()
    assert list(status.values()) == [False]
    assert url in backend.explain_down(list(status))
    with pytest.raises(GenerationError, match=f"the {name} backend is not started"):
        backend._require_session()
    async with backend:
        assert backend._session is not None
    assert backend._session is None
    with pytest.raises(GenerationError, match=f"this {name} backend was closed; create a new one"):
        await backend.start()


async def test_a_failed_start_closes_what_it_opened():
    backend = create_backend("sglang", {"urls": [closed_port_url()], "wait_healthy_s": 0.3, "connect_timeout_s": 0.5})
    with pytest.raises(GenerationError, match="not healthy after"):
        async with backend:
            pass
    assert backend._session is None
    with pytest.raises(GenerationError, match="was closed"):
        await backend.start()


def test_naming_backends_and_their_options_imports_neither_torch_nor_aiohttp():
    code = (
        "import sys; import engine.generation as g; from engine.generation.local_config import LocalConfig; "
        "LocalConfig(); g.available_backends(); print(sorted({'torch', 'aiohttp', 'transformers'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
