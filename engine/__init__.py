"""EVOM engine: configuration, data, prompts, generation backends, the rollout pipeline and the CLIs.

Entry points: `python -m engine.run` (training), `python -m engine.eval` (benchmarks), `python -m engine.report`.
"""
