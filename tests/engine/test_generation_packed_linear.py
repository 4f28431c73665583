"""Linear layers on prepacked oneDNN weights (engine/generation/packed_linear.py): equal to F.linear, never
stale, thread-local, out of autograd's way; and the local backend with and without them.
Run: .venv/bin/pytest tests/engine/test_generation_packed_linear.py"""

from __future__ import annotations

import threading

import pytest
import torch

from engine.generation import SamplingParams
from engine.generation import local as local_module
from engine.generation.local import LocalBackend, LocalConfig
from engine.generation.packed_linear import PackedLinears, available
from tests.engine.test_generation_local import PROMPTS, by_key, collect, tiny_model

pytestmark = pytest.mark.skipif(not available(), reason="this torch build has no oneDNN linear kernels")


def layers(bias: bool = True) -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 24, bias=bias), torch.nn.ReLU(), torch.nn.Linear(24, 7, bias=bias))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 16), (5, 16), (2, 3, 16), (16,)])
def test_packed_equals_plain_linear(bias, shape):
    model = layers(bias)
    packed = PackedLinears()
    assert packed.refresh(model) == 2 and len(packed) == 2
    x = torch.randn(*shape)
    with torch.inference_mode():
        plain = model(x)
        with packed.active(model):
            fast = model(x)
    assert packed.hits == 2
    assert fast.shape == plain.shape
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def test_bfloat16_weights_pack_or_stay_plain():
    model = layers().to(torch.bfloat16)
    packed = PackedLinears()
    packed.refresh(model)  # a CPU without bf16 support leaves them plain; the output is right either way
    x = torch.randn(4, 16, dtype=torch.bfloat16)
    with torch.inference_mode(), packed.active(model):
        fast = model(x)
    assert packed.hits == (2 if len(packed) == 2 else 0)
    with torch.inference_mode():
        plain = model(x)
    torch.testing.assert_close(fast.float(), plain.float(), rtol=2e-2, atol=2e-2)


def test_a_written_weight_is_never_served_stale_and_is_repacked_alone():
    model = layers()
    packed = PackedLinears()
    packed.refresh(model)
    x = torch.randn(3, 16)
    with torch.no_grad():
        model[0].weight.mul_(-2.0)  # in place, as an optimizer step or update_weights' copy_ writes it
        plain = model(x)
        with packed.active(model):
            stale_guarded = model(x)
    assert packed.hits == 1  # only the untouched second layer was served packed
    torch.testing.assert_close(stale_guarded, plain, rtol=1e-5, atol=1e-5)
    assert packed.refresh(model) == 1
    assert packed.refresh(model) == 0
    with torch.no_grad(), packed.active(model):
        torch.testing.assert_close(model(x), plain, rtol=1e-5, atol=1e-5)
    assert packed.hits == 3


def test_tied_weights_pack_once_and_dropped_modules_are_forgotten():
    tied = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    tied[1].weight = tied[0].weight
    packed = PackedLinears()
    assert packed.refresh(tied) == 1 and len(packed) == 1
    tied[1] = torch.nn.Linear(8, 8)
    assert packed.refresh(tied) == 1 and len(packed) == 2
    tied[0] = torch.nn.Identity()
    assert packed.refresh(tied) == 0 and len(packed) == 1


class ScaledLinear(torch.nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def test_only_plain_linears_are_served_and_every_patch_is_removed():
    """A subclass with its own forward (as LoRA or quantized layers have) keeps it; so does a module whose forward
    was already replaced on the instance (accelerate's hooks); nothing stays patched after exit, error or not."""
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), ScaledLinear(16, 16), torch.nn.Linear(16, 4))
    hooked = model[2].forward
    model[2].forward = hooked
    packed = PackedLinears()
    assert packed.refresh(model) == 1
    x = torch.randn(2, 16)
    with torch.no_grad():
        plain = model(x)
        with pytest.raises(RuntimeError, match="boom"), packed.active(model):
            torch.testing.assert_close(model(x), plain, rtol=1e-5, atol=1e-5)
            assert packed.hits == 1
            raise RuntimeError("boom")
    assert "forward" not in model[0].__dict__ and "forward" not in model[1].__dict__
    assert model[2].__dict__["forward"] is hooked


def test_calls_needing_autograd_take_the_plain_kernel():
    model = layers()
    packed = PackedLinears()
    packed.refresh(model)
    x = torch.randn(3, 16)
    with packed.active(model):
        model(x).sum().backward()
    assert packed.hits == 0
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).sum().backward()
    for got, expected in zip(grads, [p.grad for p in model.parameters()], strict=True):
        torch.testing.assert_close(got, expected)


def test_other_threads_are_not_affected():
    """Torch function modes are per thread: a learner sharing the model on another thread keeps plain kernels."""
    model = layers()
    packed = PackedLinears()
    packed.refresh(model)
    x = torch.randn(3, 16)
    inside = threading.Event()
    release = threading.Event()

    def decode_thread() -> None:
        with torch.no_grad(), packed.active(model):
            model(x)
            inside.set()
            release.wait(timeout=30)

    thread = threading.Thread(target=decode_thread)
    thread.start()
    try:
        assert inside.wait(timeout=30)
        assert packed.hits == 2
        with torch.no_grad():
            model(x)  # this thread, while the other one holds the mode
        assert packed.hits == 2
    finally:
        release.set()
        thread.join()


async def test_local_backend_with_and_without_packing_agree():
    model = tiny_model()
    stops = tuple(range(3, 128, 4))
    params = SamplingParams(max_new_tokens=16, temperature=0.0, stop_token_ids=stops)
    results = {}
    for prepack in (True, False):
        config = LocalConfig(prepack_weights=prepack, stop_at_eos=False)
        async with LocalBackend(model, config) as backend:
            results[prepack] = by_key(await collect(backend, PROMPTS, params, n=2))
            assert (backend._packed is not None) == prepack
            if prepack:
                assert backend._packed.hits > 0
    for key, plain in results[False].items():
        fast = results[True][key]
        assert fast.token_ids == plain.token_ids
        assert fast.logprobs == pytest.approx(plain.logprobs, abs=1e-5)


async def test_local_backend_decodes_with_the_updated_weights():
    model, other = tiny_model(0), tiny_model(1)
    params = SamplingParams(max_new_tokens=10, temperature=0.0)
    async with LocalBackend(other, LocalConfig(prepack_weights=False)) as reference:
        expected = by_key(await collect(reference, PROMPTS, params))
    async with LocalBackend(model) as backend:
        await collect(backend, PROMPTS, params)  # packs the first weights
        packed_before = len(backend._packed)
        await backend.update_weights(other.state_dict())
        got = by_key(await collect(backend, PROMPTS, params))
        assert len(backend._packed) == packed_before
        assert backend._packed.refresh(model) == 0  # the call repacked every written weight before decoding
    for key, plain in expected.items():
        assert got[key].token_ids == plain.token_ids
        assert got[key].logprobs == pytest.approx(plain.logprobs, abs=1e-5)


async def test_update_weights_repacks_before_the_next_call_and_times_it():
    model, other = tiny_model(0), tiny_model(1)
    async with LocalBackend(model) as backend:
        await collect(backend, PROMPTS, SamplingParams(max_new_tokens=2, temperature=0.0))
        await backend.update_weights(other.state_dict())
        # every written weight was repacked by the update itself: nothing is left for the next generate call
        assert backend._packed.refresh(model) == 0
        assert backend.last_sync_s["copy"] > 0 and backend.last_sync_s["repack"] > 0


def tied_model(seed: int) -> torch.nn.Module:
    model = tiny_model(seed)
    model.config.tie_word_embeddings = True
    model.lm_head.weight = model.model.embed_tokens.weight
    return model


async def test_a_tied_weight_is_written_once_and_the_generator_sees_the_update():
    model, other = tied_model(0), tied_model(1)
    state = other.state_dict()
    assert state["lm_head.weight"] is state["model.embed_tokens.weight"] or (
        state["lm_head.weight"].data_ptr() == state["model.embed_tokens.weight"].data_ptr()
    )
    writes = local_module._writes(state, model.state_dict(keep_vars=True))
    tied = model.model.embed_tokens.weight
    assert sum(dst is tied for dst, _ in writes) == 1, "the tied weight is copied once, not once per name"
    assert len(writes) == len(state) - 1
    # a tied weight given as two different tensors (read from files, say) is still written under both names
    split = {**state, "lm_head.weight": state["lm_head.weight"].clone()}
    assert len(local_module._writes(split, model.state_dict(keep_vars=True))) == len(state)
    params = SamplingParams(max_new_tokens=8, temperature=0.0)
    async with LocalBackend(tied_model(1), LocalConfig(prepack_weights=False)) as reference:
        expected = by_key(await collect(reference, PROMPTS, params))
    async with LocalBackend(model) as backend:
        await backend.update_weights(state)
        got = by_key(await collect(backend, PROMPTS, params))
    assert torch.equal(model.lm_head.weight, other.lm_head.weight) and model.lm_head.weight is tied
    for key, plain in expected.items():
        assert got[key].token_ids == plain.token_ids
