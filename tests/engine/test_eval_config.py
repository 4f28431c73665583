"""engine.eval --config: a run's resolved config decides the prompt, solver, code extraction, answer rule and
sampling length of an evaluation; flags given on the command line win; shaping rewards never enter the score;
a bad --config is one line and exit 2. Real solvers in the real sandbox; the generating test uses the tiny random
Llama (tests/engine/conftest.py).
Run: .venv/bin/pytest tests/engine/test_eval_config.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import load_config, write_config
from engine.eval import build_parser, main, settings_from
from engine.prompts import ExampleConfig, PromptSettings
from engine.records import read_jsonl
from solvers import ExtractConfig, RewardConfig

PREFIX = "```python\nimport gurobipy as gp\n"
RUN = [
    "run.name=learned",
    "solver.name=gurobipy",
    "solver.extract.which=first",
    "solver.reward.tolerance=0.1",
    "solver.reward.format_reward=0.1",
    "solver.reward.executed_reward=0.2",
    "solver.reward.status_rewards={error: -0.5}",
    "data.max_prompt_tokens=900",
    "data.system_prompt=Write gurobipy.",
    "data.example={question: 'Maximise x with x <= 2.', answer: 'the program'}",
    f"data.answer_prefix={json.dumps(PREFIX)}",
    "generation.sampling.max_new_tokens=12",
    "generation.sampling.stop_token_ids=[5]",
]
# Objective 13 against the answer 12: correct at the run's relative tolerance 0.1 (|13 - 12| / 13 = 0.077), wrong
# at the default 1e-6.
NEAR = "import gurobipy as gp\nm = gp.Model()\nx = m.addVar(ub=13)\nm.setObjective(x, gp.GRB.MAXIMIZE)\nm.optimize()\n"
CRASH = "raise SystemExit(3)\n"


def run_config(tmp_path: Path, overrides: list[str] = RUN) -> Path:
    path = tmp_path / "run" / "config.yaml"
    write_config(load_config(None, overrides), path)
    return path


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_the_runs_settings_apply_under_the_flags_given(tmp_path):
    config = run_config(tmp_path)
    run = load_config(config)
    args = build_parser().parse_args(["--model", "m", "--benchmark", "b", "--config", str(config)])
    settings = settings_from(args, run)
    assert settings.prompt == PromptSettings(
        max_prompt_tokens=900,
        system="Write gurobipy.",
        example=ExampleConfig(question="Maximise x with x <= 2.", answer="the program"),
        answer_prefix=PREFIX,
    )
    assert settings.reward == RewardConfig(tolerance=0.1), "the answer rule, without the run's shaping rewards"
    assert settings.extract == ExtractConfig(which="first")
    assert (settings.max_new_tokens, settings.stop_token_ids, settings.temperature) == (12, (5,), 0.0)

    flags = ["--max-new-tokens", "7", "--max-prompt-tokens", "300", "--comparison", "orlm", "--tolerance", "0.01"]
    args = build_parser().parse_args(["--model", "m", "--benchmark", "b", "--config", str(config), *flags])
    settings = settings_from(args, run)
    assert settings.max_new_tokens == 7 and settings.prompt.max_prompt_tokens == 300
    assert settings.prompt.answer_prefix == PREFIX and settings.prompt.example is not None
    assert settings.reward == RewardConfig(comparison="orlm", tolerance=0.01)

    plain = settings_from(build_parser().parse_args(["--model", "m", "--benchmark", "b"]))
    assert (plain.max_new_tokens, plain.prompt, plain.reward, plain.extract, plain.stop_token_ids) == (
        1024,
        PromptSettings(max_prompt_tokens=4096),
        RewardConfig(),
        None,
        (),
    ), "without --config, eval's own defaults"


def test_completions_are_scored_with_the_runs_solver_extraction_and_answer_rule(tmp_path):
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"id": "p1", "question": "Maximise x, x <= 12.", "answer": 12.0}) + "\n")
    two_blocks = f"```python\n{NEAR}```\nor perhaps\n```python\n{CRASH}```\n"
    completions = tmp_path / "c.jsonl"
    completions.write_text(
        "".join(json.dumps(r) + "\n" for r in ({"id": "p1", "completion": two_blocks}, {"id": "p1", "code": CRASH}))
    )
    config = run_config(tmp_path)
    base = ["--completions", str(completions), "--benchmark", str(bench), "--quiet", "--config", str(config)]

    out = tmp_path / "out"
    assert main([*base, "--output", str(out)]) == 0  # no --solver: the run's
    items = read_jsonl(out / "items.jsonl")
    assert [(i["solver"], i["status"], i["correct"], i["reward"]) for i in items] == [
        ("gurobipy", "correct", True, 1.0),  # the first block (the run's extraction), at the run's tolerance
        ("gurobipy", "error", False, 0.0),  # no shaping: neither the run's executed_reward nor its error penalty
    ]
    meta = summary(out)
    assert (meta["config"], meta["comparison"], meta["tolerance"], meta["solvers"]) == (
        str(config),
        "relative",
        0.1,
        ["gurobipy"],
    )
    assert meta["config_applied"]["extract"] == {"which": "first", "drop_think": True, "format": "markdown"}
    assert meta["config_applied"]["reward"]["format_reward"] == 0.0 and meta["config_overridden_by"] == []
    assert "prompt" not in meta["config_applied"], "scoring existing completions builds no prompt"
    assert f"- config: {config}" in (out / "summary.md").read_text()

    out = tmp_path / "flags"
    assert main([*base, "--tolerance", "1e-6", "--output", str(out)]) == 0
    assert [i["status"] for i in read_jsonl(out / "items.jsonl")] == ["wrong", "error"]
    assert summary(out)["config_overridden_by"] == ["--tolerance"]


def test_a_bad_config_is_one_line_exit_2_and_nothing_written(tmp_path, capsys):
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"id": "p1", "question": "Maximise x, x <= 12.", "answer": 12.0}) + "\n")
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("data:\n  example:\n    question: only a question\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [\n")
    cases = {
        tmp_path / "none.yaml": f"error: --config: config file {tmp_path / 'none.yaml'} not found",
        tmp_path: f"error: --config {tmp_path} is a directory; give the run's config file, {tmp_path / 'config.yaml'}",
        invalid: "error: --config: data.example: ExampleConfig.__init__() missing 1 required keyword-only argument",
        broken: f"error: --config: config file {broken} is not valid YAML",
    }
    out = tmp_path / "out"
    for path, message in cases.items():
        args = ["--model", "smollm2-135m", "--benchmark", str(bench), "--config", str(path), "--output", str(out)]
        assert main(args) == 2, path
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1, (path, err)
        assert not out.exists()


@pytest.mark.slow
def test_generation_uses_the_runs_prompt_and_records_the_prefixed_completion(tiny_model, tmp_path):
    from engine.prompts import PromptBuilder, prompt_settings
    from learner.models import load_tokenizer
    from solvers import get_solver

    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"id": "p1", "question": "Maximise x, x <= 12.", "answer": 12.0}) + "\n")
    config = run_config(tmp_path)
    builder = PromptBuilder(
        load_tokenizer(str(tiny_model)),
        instructions=get_solver("gurobipy").instructions,
        settings=prompt_settings(load_config(config).data),
    )
    length = len(builder.build("Maximise x, x <= 12.").ids)
    args = ["--model", str(tiny_model), "--benchmark", str(bench), "--config", str(config), "--quiet"]

    out = tmp_path / "out"
    assert main([*args, "--max-prompt-tokens", str(length), "--output", str(out)]) == 0
    (item,) = read_jsonl(out / "items.jsonl")
    assert item["solver"] == "gurobipy" and item["finish_reason"] in ("stop", "length")
    assert item["completion"].startswith(PREFIX) and len(item["completion"]) > len(PREFIX)
    meta = summary(out)
    applied = meta["config_applied"]
    assert meta["max_new_tokens"] == 12 and applied["stop_token_ids"] == [5]
    assert applied["prompt"]["answer_prefix"] == PREFIX and applied["prompt"]["max_prompt_tokens"] == length
    assert applied["prompt"]["example"] == {"question": "Maximise x with x <= 2.", "answer": "the program"}
    assert meta["config_overridden_by"] == ["--max-prompt-tokens"]

    # One token less and the run's prompt (system message, example turn, prefix) no longer fits: it was that one.
    short = tmp_path / "short"
    assert main([*args, "--max-prompt-tokens", str(length - 1), "--output", str(short)]) == 0
    assert [i["status"] for i in read_jsonl(short / "items.jsonl")] == ["prompt_too_long"]
