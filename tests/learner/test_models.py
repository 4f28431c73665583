"""The embedded default model: GGUF -> fp32 HF directory -> reload, and model-path resolution."""

from __future__ import annotations

import pytest
import torch

from learner.models import (
    EMBEDDED,
    ModelNotFoundError,
    gguf_location,
    load_gguf,
    load_model,
    load_tokenizer,
    resolve_model_path,
)


@pytest.mark.slow
def test_embedded_alias_converts_once_and_reloads_with_the_gguf_logits(tmp_path, monkeypatch):
    monkeypatch.setenv("EVOM_CACHE", str(tmp_path))
    cached = tmp_path / "models" / "smollm2-135m-instruct"
    assert resolve_model_path("smollm2-135m") == str(cached)
    stamp = (cached / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_path("smollm2-135m") == str(cached)
    assert (cached / "model.safetensors").stat().st_mtime_ns == stamp, "second use must not convert again"
    assert not list(cached.parent.glob(".smollm2-135m-instruct-*")), "no half-written temp dirs left"

    reloaded = load_model("smollm2-135m")
    assert reloaded.dtype == torch.float32
    assert not hasattr(reloaded.config, "quantization_config")
    original, tokenizer = load_gguf(gguf_location(EMBEDDED["smollm2-135m"]))
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Maximize 3x + 2y subject to x + y <= 4."}],
        add_generation_prompt=True,
        tokenize=False,
    )
    ids = load_tokenizer("smollm2-135m")(text, return_tensors="pt").input_ids
    assert ids.tolist() == tokenizer(text, return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        expected = original(ids).logits
        got = reloaded(ids).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)

    out = reloaded.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert out.shape[1] > ids.shape[1]
    assert tokenizer.decode(out[0, ids.shape[1] :]).strip()


def test_local_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        resolve_model_path(tmp_path)


def test_missing_local_path_names_the_alternatives(tmp_path):
    with pytest.raises(ModelNotFoundError, match="smollm2-135m"):
        resolve_model_path(tmp_path / "absent")


def test_hub_names_pass_through():
    assert resolve_model_path("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"


def test_offline_hub_name_fails_with_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="cannot load"):
        load_model("evom-tests/definitely-not-a-cached-model")
