"""EVOM learner: GRPO/DAPO losses, the packed policy, the FSDP2 training step, checkpoints and weight export.

Knows torch (and transformers for the model); never imports ``engine``, ``solvers``, ``sandbox`` or HTTP.
The pure RL maths is in ``learner.losses``; ``python -m pytest tests/learner`` runs the tests.

    from learner import Learner, LearnerConfig, AlgorithmConfig, RolloutBatch
    learner = Learner.from_pretrained("smollm2-135m", LearnerConfig(lr=1e-6))
    metrics = learner.step(RolloutBatch(prompts=..., responses=..., rewards=..., group_ids=...))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from learner.checkpoint import (
        export_hf,
        full_state_dict,
        latest_checkpoint,
        load_checkpoint,
        load_model_weights,
        save_checkpoint,
    )
    from learner.config import AlgorithmConfig, LearnerConfig, RolloutBatch
    from learner.trainer import Learner

# Exported names -> their module. Loaded on first use, so reading a config (learner.config) never imports torch.
_EXPORTS = {
    "AlgorithmConfig": "learner.config",
    "LearnerConfig": "learner.config",
    "RolloutBatch": "learner.config",
    "Learner": "learner.trainer",
    "export_hf": "learner.checkpoint",
    "full_state_dict": "learner.checkpoint",
    "latest_checkpoint": "learner.checkpoint",
    "load_checkpoint": "learner.checkpoint",
    "load_model_weights": "learner.checkpoint",
    "save_checkpoint": "learner.checkpoint",
}

__all__ = [
    "AlgorithmConfig",
    "Learner",
    "LearnerConfig",
    "RolloutBatch",
    "export_hf",
    "full_state_dict",
    "latest_checkpoint",
    "load_checkpoint",
    "load_model_weights",
    "save_checkpoint",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'learner' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
