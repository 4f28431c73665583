"""EVOM learner: GRPO/DAPO losses, the packed policy, the FSDP2 training step, checkpoints and weight export.

Knows torch (and transformers for the model); never imports ``engine``, ``solvers``, ``sandbox`` or HTTP.
The pure RL maths is in ``learner.losses``; ``python -m pytest tests/learner`` runs the tests.

    from learner import Learner, LearnerConfig, AlgorithmConfig, RolloutBatch
    learner = Learner.from_pretrained("smollm2-135m", LearnerConfig(lr=1e-6))
    metrics = learner.step(RolloutBatch(prompts=..., responses=..., rewards=..., group_ids=...))
"""

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
