"""EVOM learner: GRPO/DAPO losses, the packed policy, the FSDP2 training step, checkpoints and weight export.

Knows torch (and transformers for the model); never imports ``engine``, ``solvers``, ``sandbox`` or HTTP.
The pure RL maths is in ``learner.losses``; ``python -m pytest tests/learner`` runs the tests.
"""
