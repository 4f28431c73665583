"""Model weights of a checkpoint saved by one process, loaded into a policy sharded over 2 ranks (torchrun, gloo).

The test saves the checkpoint in-process, then runs this file under torchrun (the ``__main__`` block): each rank
builds an FSDP2 Learner from other random weights, calls ``load_model_weights`` and rank 0 writes the gathered weights.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from learner.checkpoint import full_state_dict, load_model_weights, save_checkpoint
from learner.config import LearnerConfig, RolloutBatch
from learner.distributed import exit_rank, shutdown_distributed
from learner.trainer import Learner

REPO = Path(__file__).resolve().parents[2]
CONFIG = LearnerConfig(lr=1e-2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_load_the_weights_of_a_one_process_checkpoint(tmp_path, make_model, make_sequences):
    learner = Learner(make_model(seed=1), CONFIG)
    prompts, responses = make_sequences(4, seed=0)
    learner.step(RolloutBatch(prompts=prompts, responses=responses, rewards=[0.0, 1.0] * 2, group_ids=[0, 0, 1, 1]))
    save_checkpoint(learner, tmp_path / "step_1")
    expected = full_state_dict(learner)

    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*cmd, __file__, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    loaded = torch.load(tmp_path / "loaded.pt", weights_only=True)
    assert loaded.keys() == expected.keys()
    for name, value in loaded.items():
        assert torch.equal(value, expected[name]), name
    assert not torch.equal(make_model(seed=2).lm_head.weight, expected["lm_head.weight"]), "the ranks started elsewhere"


def _load_on_ranks(out: Path) -> None:
    from worker import tiny_llama  # tests/learner/worker.py, beside this file (sys.path[0] when run as a script)

    torch.set_num_threads(1)
    learner = Learner(tiny_llama(seed=2), CONFIG)
    assert learner.ctx.distributed and learner.ctx.world_size == 2
    load_model_weights(learner.model, out / "step_1", distributed=True)
    state = full_state_dict(learner)
    if learner.ctx.rank == 0:
        torch.save(state, out / "loaded.pt")
    if shutdown_distributed():
        exit_rank(0)


if __name__ == "__main__":
    _load_on_ranks(Path(sys.argv[1]))
