"""In-process checkpoint round trip, HF export (tied and untied embeddings), and the in-process state dict."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from learner.checkpoint import export_hf, full_state_dict, latest_checkpoint, load_checkpoint, save_checkpoint
from learner.config import AlgorithmConfig, LearnerConfig, RolloutBatch
from learner.trainer import Learner

CONFIG = LearnerConfig(lr=1e-2, warmup_steps=3, ppo_epochs=2, algorithm=AlgorithmConfig(clip_high=0.28))


def _batch(make_sequences, seed):
    prompts, responses = make_sequences(6, seed=seed)
    return RolloutBatch(prompts=prompts, responses=responses, rewards=[0.0, 1.0, 0.5] * 2, group_ids=[0, 0, 0, 1, 1, 1])


def test_resume_matches_uninterrupted(tmp_path, make_model, make_sequences):
    learner = Learner(make_model(seed=0), CONFIG)
    learner.step(_batch(make_sequences, 0))
    torch.manual_seed(5)
    save_checkpoint(learner, tmp_path / "step_00000001", data_state={"cursor": 6})
    draws_after_save = torch.rand(3)
    expected = learner.step(_batch(make_sequences, 1))

    resumed = Learner(make_model(seed=7), CONFIG)
    torch.manual_seed(99)
    assert load_checkpoint(resumed, latest_checkpoint(tmp_path)) == {"cursor": 6}
    assert torch.equal(torch.rand(3), draws_after_save)  # the RNG state came back with the checkpoint
    assert resumed.global_step == 1
    got = resumed.step(_batch(make_sequences, 1))
    for key in ("loss", "grad_norm", "entropy", "clip_frac_high", "clip_frac_low", "lr"):
        assert got[key] == expected[key], key
    for a, b in zip(learner.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_incomplete_checkpoint_is_refused(tmp_path, make_model):
    (tmp_path / "step_00000003" / "dcp").mkdir(parents=True)
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "missing") is None
    with pytest.raises(FileNotFoundError, match="no COMPLETE marker"):
        load_checkpoint(Learner(make_model(), CONFIG), tmp_path / "step_00000003")


@pytest.mark.parametrize("tied", [False, True])
def test_export_hf_round_trip(tmp_path, make_model, make_sequences, tied):
    model = make_model(seed=1)
    if tied:
        model.config.tie_word_embeddings = True
        model.lm_head.weight = model.model.embed_tokens.weight
    learner = Learner(model, CONFIG)
    learner.step(_batch(make_sequences, 2))
    export_hf(learner, tmp_path / "hf")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    state = full_state_dict(learner)
    assert state.keys() == learner.state_dict().keys()
    assert set(loaded.state_dict()) == set(state)
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, state[name]), name
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, learner.model(input_ids=ids).logits)
