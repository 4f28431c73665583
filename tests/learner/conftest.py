"""Fixtures of the learner tests: tiny random-initialised Llamas and token batches (defined in worker.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest


def _load_worker() -> ModuleType:
    # pytest runs with --import-mode=importlib, so sibling files are loaded by path under a unique name
    spec = importlib.util.spec_from_file_location("_evom_learner_test_worker", Path(__file__).with_name("worker.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WORKER = _load_worker()


@pytest.fixture
def worker() -> ModuleType:
    return WORKER


@pytest.fixture
def model():
    return WORKER.tiny_llama()


@pytest.fixture
def make_model():
    return WORKER.tiny_llama


@pytest.fixture
def make_sequences():
    return WORKER.random_sequences
