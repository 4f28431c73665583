"""In-process checkpoint round trip, model weights only (into a Learner or a plain model), HF export (tied and
untied embeddings), and the in-process state dict."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from learner.checkpoint import (
    IncompatibleCheckpointError,
    export_hf,
    full_state_dict,
    latest_checkpoint,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
)
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
    save_checkpoint(learner, tmp_path / "step_00000001", loop_state={"cursor": 6})
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


def _tie(model):
    model.config.tie_word_embeddings = True
    model.lm_head.weight = model.model.embed_tokens.weight
    return model


def test_model_weights_load_into_a_plain_model_and_into_a_learner(tmp_path, make_model, make_sequences):
    trained = Learner(_tie(make_model(seed=1)), CONFIG)
    trained.step(_batch(make_sequences, 3))
    save_checkpoint(trained, tmp_path / "step_1", loop_state={"cursor": 6})
    expected = {name: value.detach().clone() for name, value in trained.model.state_dict().items()}

    plain = _tie(make_model(seed=2))
    assert not torch.equal(plain.model.embed_tokens.weight, expected["model.embed_tokens.weight"])
    load_model_weights(plain, tmp_path / "step_1")
    learner = Learner(_tie(make_model(seed=3)), CONFIG)
    load_model_weights(learner.model, tmp_path / "step_1")
    for model in (plain, learner.model):
        assert model.state_dict().keys() == expected.keys()
        for name, value in model.state_dict().items():
            assert torch.equal(value, expected[name]), name
        assert model.lm_head.weight is model.model.embed_tokens.weight, "still tied"
    assert learner.global_step == 0 and learner.scheduler.last_epoch == 0, "only the weights were read"


def test_model_weights_refuse_a_missing_incomplete_or_foreign_checkpoint(tmp_path, make_model):
    save_checkpoint(Learner(make_model(seed=1), CONFIG), tmp_path / "step_1")
    (tmp_path / "step_2" / "dcp").mkdir(parents=True)
    model = make_model(seed=2)
    with pytest.raises(FileNotFoundError, match=r"checkpoint directory .*step_9 does not exist"):
        load_model_weights(model, tmp_path / "step_9")
    with pytest.raises(FileNotFoundError, match=r"step_2 is not a complete checkpoint \(no COMPLETE marker"):
        load_model_weights(model, tmp_path / "step_2")

    wider = make_model(seed=2, hidden=32)
    before = {name: value.clone() for name, value in wider.state_dict().items()}
    with pytest.raises(IncompatibleCheckpointError, match=r"other shapes for 21 .*saved \(48, 64\), model \(48, 32\)"):
        load_model_weights(wider, tmp_path / "step_1")
    assert all(torch.equal(value, before[name]) for name, value in wider.state_dict().items()), "nothing was read"
    with pytest.raises(IncompatibleCheckpointError, match=r"lacks 9 of the model's parameters, e.g. \['model.layers.2"):
        load_model_weights(make_model(layers=3), tmp_path / "step_1")
    with pytest.raises(IncompatibleCheckpointError, match="holds none of the model's 2 parameters"):
        load_model_weights(torch.nn.Linear(4, 4), tmp_path / "step_1")


@pytest.mark.parametrize("tied", [False, True])
def test_export_hf_round_trip(tmp_path, make_model, make_sequences, tied):
    learner = Learner(_tie(make_model(seed=1)) if tied else make_model(seed=1), CONFIG)
    learner.step(_batch(make_sequences, 2))
    export_hf(learner, tmp_path / "hf")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    state = full_state_dict(learner)
    assert state.keys() == learner.full_weights().keys()
    assert set(loaded.state_dict()) == set(state)
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, state[name]), name
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, learner.model(input_ids=ids).logits)
