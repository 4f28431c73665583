"""A toy policy whose samples are real programs: a tiny random Llama over a vocabulary of whole Gurobi programs.

A random-initialised model emits gibberish; to verify its samples for real, this module defines a word-level
tokenizer in which most tokens decode to one complete fenced Python program (a small Gurobi model with a
known outcome). The model samples token ids as any policy does (the local backend's real decoding loop),
the tokenizer decodes them to text, and the real verifier extracts the last program and runs it in the real
sandbox. Against answer 3.0, three programs are correct, three are not (objective 5, infeasible, raises), and a
completion without a program token is "no_code". Nothing in the pipeline is told which is which.

Used by test_rollout.py, test_rollout_sigint.py and bench/rollout_bench.py (loaded by path); the tests here
check that every program token verifies to the outcome it is meant to have.
Run: .venv/bin/pytest tests/engine/test_rollout_toy.py
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ANSWER = 3.0  # the optimum of the "correct" programs
EOS_ID = 2
_HEAD = "import gurobipy as gp\nm = gp.Model()\n"
_PROGRAMS = {  # token name -> (model body, expected status against ANSWER)
    "P_max_x": ("x = m.addVar(ub=3.0)\nm.setObjective(x, gp.GRB.MAXIMIZE)\n", "correct"),
    "P_sum": ("x = m.addVar()\ny = m.addVar()\nm.addConstr(x + y <= 3)\nm.setObjective(x + y, gp.GRB.MAXIMIZE)\n",
              "correct"),
    "P_min": ("x = m.addVar()\nm.addConstr(x >= 3)\nm.setObjective(x, gp.GRB.MINIMIZE)\n", "correct"),
    "P_five": ("x = m.addVar(ub=5.0)\nm.setObjective(x, gp.GRB.MAXIMIZE)\n", "wrong"),
    "P_infeasible": ("x = m.addVar()\nm.addConstr(x >= 5)\nm.addConstr(x <= 3)\nm.setObjective(x)\n", "infeasible"),
    "P_raises": ("x = m.addVar()\nraise ValueError('the model is not finished')\n", "error"),
}  # fmt: skip
_WORDS = ("so", "let", "us", "model", "it")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|> {{ m.content }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def program_text(name: str, *, slow_s: float = 0.0) -> str:
    body, _ = _PROGRAMS[name]
    pause = f"import time\ntime.sleep({slow_s})\n" if slow_s else ""
    return f"\n```python\n{pause}{_HEAD}{body}m.optimize()\n```\n"


def expected_status(name: str) -> str:
    return _PROGRAMS[name][1]


@dataclass(frozen=True, kw_only=True)
class ToyPolicy:
    tokenizer: PreTrainedTokenizerFast
    model: LlamaForCausalLM
    program_ids: dict[str, int]  # program token name -> token id


def toy_tokenizer(*, slow_s: float = 0.0) -> tuple[PreTrainedTokenizerFast, dict[str, int]]:
    specials = ["<unk>", "<s>", "</s>", "<|user|>", "<|system|>", "<|assistant|>", "<|end|>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    program_ids = {}
    for name in _PROGRAMS:
        program_ids[name] = vocab[program_text(name, slow_s=slow_s)] = len(vocab)
    for word in _WORDS:
        vocab[f" {word}"] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.Fuse()  # tokens carry their own spacing and newlines
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=specials[3:],
        chat_template=CHAT_TEMPLATE,
    )
    assert tokenizer.eos_token_id == EOS_ID
    return tokenizer, program_ids


def toy_policy(*, seed: int = 0, slow_s: float = 0.0, hidden: int = 32, layers: int = 2) -> ToyPolicy:
    """The tokenizer above and a random Llama over it (near-uniform next-token distribution)."""
    tokenizer, program_ids = toy_tokenizer(slow_s=slow_s)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=EOS_ID,
        bos_token_id=1,
        pad_token_id=0,
    )
    return ToyPolicy(tokenizer=tokenizer, model=LlamaForCausalLM(config).eval(), program_ids=program_ids)


def test_tokens_decode_to_programs_and_prompts_encode():
    policy = toy_policy()
    ids = policy.program_ids
    so = policy.tokenizer.convert_tokens_to_ids(" so")
    text = policy.tokenizer.decode([ids["P_five"], so, ids["P_max_x"], EOS_ID], skip_special_tokens=True)
    assert text == program_text("P_five") + " so" + program_text("P_max_x")
    rendered = policy.tokenizer.apply_chat_template(
        [{"role": "user", "content": "maximise profit"}], add_generation_prompt=True, tokenize=False
    )
    prompt = policy.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert prompt[0] == policy.tokenizer.convert_tokens_to_ids("<|user|>")
    assert prompt[-1] == policy.tokenizer.convert_tokens_to_ids("<|assistant|>")


async def test_every_program_token_verifies_to_its_outcome():
    from sandbox import Limits, SandboxPool
    from solvers import get_solver, verify

    solver = get_solver("gurobipy")
    async with SandboxPool(workers=2, limits=Limits(wall_s=20), preload=solver.preload) as pool:
        for name in _PROGRAMS:
            # Two programs in one completion: the verifier judges the last one.
            outcome = await verify(pool, program_text("P_raises") + " so" + program_text(name), solver, ANSWER)
            assert outcome.status == expected_status(name), (name, outcome)
            assert outcome.reward == (1.0 if expected_status(name) == "correct" else 0.0)
        assert (await verify(pool, " so let us model it", solver, ANSWER)).status == "no_code"
