"""engine.eval end to end: a tiny random Llama generating for a 3-problem benchmark under real solvers in the real
sandbox, scoring existing completions and reference programs, checkpoints as models, bad input, and SIGTERM."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from signalled import sigterm_when

from engine.eval import EvalInputError, main, read_completions
from engine.records import read_jsonl

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / ".." / "shared" / "data" / "benchmarks"

# Three small problems written for these tests, with answers worked out by hand.
PROBLEMS = [
    {"id": "p1", "question": "Bread earns 3 and cake 2 per unit. Oven: bread 1 h, cake 1 h, 4 h in all. Labour: "
     "bread 1 h, cake 3 h, 6 h in all. Quantities may be fractional. Maximise profit.", "answer": 12.0},
    {"id": "p2", "question": "Buy x and y, x + y >= 10, x <= 6, costs 2 and 3 per unit, fractional amounts allowed. "
     "Minimise the cost.", "answer": 24.0},
    {"id": "p3", "question": "Choose x with x >= 5 and x <= 3. Minimise x.", "answer": None},
]  # fmt: skip
P1_CODE = """import gurobipy as gp
from gurobipy import GRB
m = gp.Model()
x, y = m.addVar(), m.addVar()
m.setObjective(3 * x + 2 * y, GRB.MAXIMIZE)
m.addConstr(x + y <= 4)
m.addConstr(x + 3 * y <= 6)
m.optimize()
"""
P2_CODE = """import gurobipy as gp
m = gp.Model()
x, y = m.addVar(ub=6), m.addVar()
m.setObjective(2 * x + 3 * y)
m.addConstr(x + y >= 10)
m.optimize()
"""
P3_WRONG_CODE = """import gurobipy as gp
m = gp.Model()
x = m.addVar(lb=5)
m.setObjective(x)
m.optimize()
"""


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def bench(tmp_path) -> Path:
    """The three problems, then a row without a question (reported and skipped)."""
    return write_jsonl(tmp_path / "three.jsonl", [*PROBLEMS, {"id": "p4", "answer": 1.0}])


@pytest.fixture
def clean_bench(tmp_path) -> Path:
    return write_jsonl(tmp_path / "clean.jsonl", PROBLEMS)


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_generate_prints_the_table_and_writes_every_sample(tiny_model, bench, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--model", str(tiny_model), "--benchmark", str(bench), "--solver", "gurobipy", "ortools"]
    assert main([*args, "--samples", "2", "--max-new-tokens", "8", "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"{bench}:4: missing or empty 'question' (row skipped)" in captured.err
    lines = captured.out.splitlines()
    assert lines[0].split() == ["benchmark", "gurobipy", "ortools"]
    assert lines[2].startswith("three ") and lines[2].count("/") == 4, "pass@1 / pass@k / exec per solver"
    assert "cells: pass@1 / pass@2 / execution rate, in %" in captured.out

    items = read_jsonl(out / "items.jsonl")
    assert [(i["solver"], i["id"], i["sample"]) for i in items] == [
        (s, p, j) for s in ("gurobipy", "ortools") for p in ("p1", "p2", "p3") for j in (0, 1)
    ]
    assert {i["answer"] for i in items if i["id"] == "p1"} == {12.0} and {
        i["answer"] for i in items if i["id"] == "p3"
    } == {None}
    assert all(i["completion"] and i["finish_reason"] in ("stop", "length") for i in items)
    assert all(set(i) >= {"status", "objective", "correct", "reward", "reason"} for i in items)
    cells = summary(out)["cells"]
    assert [(c["solver"], c["problems"], c["samples"], c["k"]) for c in cells] == [
        ("gurobipy", 3, 6, 2),
        ("ortools", 3, 6, 2),
    ]
    for cell in cells:  # a random model writes no program: every sample is counted, none passes
        assert sum(cell["statuses"].values()) == 6 and cell["pass@1"] == 0.0 and cell["exec_rate"] == 0.0
    assert "| three | " in (out / "summary.md").read_text()


@pytest.mark.slow
def test_prompts_over_the_limit_are_counted_not_generated(tiny_model, bench, tmp_path):
    out = tmp_path / "out"
    args = ["--model", str(tiny_model), "--benchmark", str(bench), "--solver", "gurobipy", "--quiet"]
    assert main([*args, "--max-prompt-tokens", "10", "--output", str(out)]) == 0
    assert {i["status"] for i in read_jsonl(out / "items.jsonl")} == {"prompt_too_long"}
    assert summary(out)["cells"][0]["statuses"] == {"prompt_too_long": 3}


def test_completions_are_matched_to_the_benchmark_and_scored(bench, tmp_path, capsys):
    completions = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"id": "p1", "completion": f"Here it is:\n```python\n{P1_CODE}```\n", "answer": 999},  # answer: benchmark's
            {"id": "p1", "completion": "I cannot write code."},
            {"id": "p2", "code": P2_CODE},
            {"id": "p3", "code": P3_WRONG_CODE},
            {"id": "p9", "code": P2_CODE},
        ],
    )
    out = tmp_path / "out"
    inputs = ["--completions", str(completions), "--benchmark", str(bench), "--solver", "gurobipy"]
    assert main([*inputs, "--samples", "2", "--output", str(out), "--quiet"]) == 0
    assert "c.jsonl:5: id 'p9' is not in the given benchmark(s) (row skipped)" in capsys.readouterr().err
    items = read_jsonl(out / "items.jsonl")
    assert [(i["id"], i["sample"], i["status"], i["correct"]) for i in items] == [
        ("p1", 0, "correct", True),
        ("p1", 1, "no_code", False),
        ("p2", 0, "correct", True),
        ("p3", 0, "wrong", False),
    ]
    assert items[0]["objective"] == pytest.approx(12.0) and items[0]["answer"] == 12.0
    (cell,) = summary(out)["cells"]
    assert cell["k"] == 1, "pass@k needs k samples of every problem: p2 and p3 have one"
    assert cell["pass@1"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert cell["exec_rate"] == pytest.approx(3 / 4)
    assert cell["statuses"] == {"correct": 2, "no_code": 1, "wrong": 1}


def test_completion_rows_that_cannot_be_scored_are_skipped_with_their_line_and_reason(tmp_path, capsys):
    path = tmp_path / "c.jsonl"
    lines = [
        json.dumps({"id": "a", "code": "print(1)", "answer": 2}),
        "{not json",
        "[1, 2]",
        json.dumps({"code": "print(1)", "answer": 1}),
        json.dumps({"id": "b", "answer": 1}),
        "",
        json.dumps({"id": "c", "code": "print(1)"}),
        json.dumps({"id": "d", "code": "print(1)", "answer": "12"}),
        '{"id": "e", "code": "print(1)", "answer": NaN}',
        json.dumps({"id": "f", "completion": "no code", "answer": None, "benchmark": "other"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    entries = read_completions(path, [], None)
    assert [(e.benchmark, e.id, e.answer, e.is_code) for e in entries] == [
        ("c", "a", 2.0, True),
        ("other", "f", None, False),
    ]
    must_be = "'answer' must be a finite number, or null (None) for a problem without an optimum; got"
    reasons = [
        (2, "not valid JSON (Expecting property name enclosed in double quotes at column 2)"),
        (3, "expected a JSON object, got list"),
        (4, "no 'id'"),
        (5, "needs a string 'completion' (model output) or 'code' (a program)"),
        (7, "no 'answer' (without --benchmark every row must carry its own; null: no optimum)"),
        (8, f"id 'd': {must_be} '12'"),
        (9, f"id 'e': {must_be} nan"),
    ]
    warnings = [f"warning: {path}:{line}: {reason} (row skipped)" for line, reason in reasons]
    assert capsys.readouterr().err.splitlines() == warnings
    path.write_bytes(b'{"id": "a", "code": "print(1)", "answer": 2}\n\xff\n')
    with pytest.raises(EvalInputError, match=r"c\.jsonl is not UTF-8 text .*completions files are JSONL"):
        read_completions(path, [], None)


def test_reference_programs_score_their_accuracy_without_a_benchmark(tmp_path, capsys):
    source = BENCHMARKS / "reference_programs.jsonl"
    if not source.is_file():
        pytest.skip(f"shared benchmark data not found at {source}")
    rows = [json.loads(line) for line in source.open()]
    known = [r for r in rows if r["meta"]["exec_check"]["result"] == "ok" and r["id"] != "ref-industryor-prob_026"]
    known = sorted(known, key=lambda r: len(r["code"]))[:3]  # the shortest (fastest) programs
    picked = [{"id": r["id"], "code": r["code"], "answer": r["answer"], "benchmark": "known"} for r in known]
    perturbed = {**picked[0], "answer": picked[0]["answer"] + 1.0, "benchmark": "perturbed"}
    completions = write_jsonl(tmp_path / "refs.jsonl", [*picked, perturbed])
    out = tmp_path / "out"
    assert main(["--completions", str(completions), "--solver", "gurobipy", "--output", str(out), "--quiet"]) == 0
    cells = {c["benchmark"]: c for c in summary(out)["cells"]}
    assert cells["known"]["pass@1"] == 1.0 and cells["known"]["statuses"] == {"correct": 3}
    assert cells["perturbed"]["pass@1"] == 0.0 and cells["perturbed"]["statuses"] == {"wrong": 1}
    out_lines = capsys.readouterr().out.splitlines()
    assert "known      100.0 / 100.0" in out_lines, "one sample each: pass@1 / exec, pass@1 printed once"
    assert "cells: pass@1 / execution rate, in %" in out_lines


def test_reference_programs_are_judged_under_every_rule_side_by_side(tmp_path, capsys):
    source = BENCHMARKS / "reference_programs.jsonl"
    if not source.is_file():
        pytest.skip(f"shared benchmark data not found at {source}")
    rows = [json.loads(line) for line in source.open()]
    known = [r for r in rows if r["meta"]["exec_check"]["result"] == "ok" and abs(r["answer"]) >= 100]
    ref = min(known, key=lambda r: len(r["code"]))  # the shortest program whose answer is at least 100 in size
    a = ref["answer"]
    # one program, its answer moved by 0, 0.5%, 3% and 7%: each rule draws its line somewhere else
    shifts = {"exact": 0.0, "half_percent": 0.005, "three_percent": 0.03, "seven_percent": 0.07}
    picked = [{"id": ref["id"], "code": ref["code"], "answer": a * (1 + d), "benchmark": b} for b, d in shifts.items()]
    completions = write_jsonl(tmp_path / "refs.jsonl", picked)
    out = tmp_path / "out"
    assert main(["--completions", str(completions), "--solver", "gurobipy", "--output", str(out), "--quiet"]) == 0
    cells = {c["benchmark"]: c for c in summary(out)["cells"]}
    by_rule = {b: cells[b]["pass@1_by_rule"] for b in shifts}
    rules = ["relative:1e-06", "evom:0.05", "evom:0.0001", "orlm"]
    assert {b: list(r) for b, r in by_rule.items()} == {b: rules for b in shifts}, "the primary rule, then the rest"
    assert {b: [r[k] for k in rules] for b, r in by_rule.items()} == {
        "exact": [1.0, 1.0, 1.0, 1.0],
        "half_percent": [0.0, 1.0, 0.0, 1.0],  # within 5%; ORLM rounds both, then 5%
        "three_percent": [0.0, 1.0, 0.0, 1.0],
        "seven_percent": [0.0, 0.0, 0.0, 0.0],
    }
    assert [cells[b]["pass@1"] for b in shifts] == [1.0, 0.0, 0.0, 0.0], "pass@1 stays the primary rule's"
    assert [cells[b]["error_kinds"] for b in shifts] == [{}, *[{"wrong_objective": 1}] * 3]
    items = read_jsonl(out / "items.jsonl")
    assert [(i["benchmark"], i["error_kind"]) for i in items][:2] == [
        ("exact", None),
        ("half_percent", "wrong_objective"),
    ]
    assert items[1]["correct_by_rule"] == {
        "relative:1e-06": False,
        "evom:0.05": True,
        "evom:0.0001": False,
        "orlm": True,
    }
    printed = capsys.readouterr().out.splitlines()
    start = printed.index("pass@1 by answer rule, in %")
    assert printed[start + 1].split() == ["benchmark", "solver", *rules]
    assert printed[start + 5].split() == ["three_percent", "gurobipy", "0.0", "100.0", "0.0", "100.0"]
    start = printed.index("failures by kind, in samples")
    assert printed[start + 1].split() == ["benchmark", "solver", "wrong_objective"]
    assert printed[start + 3].split() == ["exact", "gurobipy", "0"]


def test_rules_and_the_primary_rule_are_chosen_on_the_command_line(clean_bench, tmp_path, capsys):
    completions = write_jsonl(tmp_path / "c.jsonl", [{"id": "p1", "code": P1_CODE}, {"id": "p2", "code": P2_CODE}])
    out = tmp_path / "out"
    args = ["--completions", str(completions), "--benchmark", str(clean_bench), "--solver", "gurobipy", "--quiet"]
    rules = ["--comparison", "evom", "--tolerance", "0.05", "--rules", "orlm:0.1", "evom:0.05"]
    assert main([*args, *rules, "--output", str(out)]) == 0
    meta = summary(out)
    assert (meta["primary_rule"], meta["rules"]) == ("evom:0.05", ["evom:0.05", "orlm:0.1"]), "a repeat counts once"
    assert meta["cells"][0]["pass@1_by_rule"] == {"evom:0.05": 1.0, "orlm:0.1": 1.0}


def test_think_code_completions_are_read_in_that_format(clean_bench, tmp_path):
    well = f"<think>\nBread and cake share the oven.\n</think>\n<code>\n{P1_CODE}</code>\n"
    unclosed = f"<think>\nBread and cake...\n```python\n{P1_CODE}```\n"
    completions = write_jsonl(tmp_path / "c.jsonl", [{"id": "p1", "completion": c} for c in (well, unclosed)])
    out = tmp_path / "out"
    args = ["--completions", str(completions), "--benchmark", str(clean_bench), "--solver", "gurobipy", "--quiet"]
    assert main([*args, "--format", "think-code", "--output", str(out)]) == 0
    assert [(i["status"], i["error_kind"]) for i in read_jsonl(out / "items.jsonl")] == [
        ("correct", None),
        ("no_code", "no_code"),  # the reasoning never closed: its draft is not the answer
    ]
    assert summary(out)["format"] == "think-code"
    out = tmp_path / "markdown"
    assert main([*args, "--output", str(out)]) == 0
    assert [i["status"] for i in read_jsonl(out / "items.jsonl")] == ["no_code", "correct"]


@pytest.mark.slow
def test_a_training_checkpoint_is_evaluated_with_its_trained_weights(tiny_model, bench, tmp_path):
    import asyncio

    import torch

    from engine.config import load_config
    from engine.evaluation import parse_model
    from engine.train import learner_config, train
    from learner.checkpoint import load_checkpoint, load_model_weights
    from learner.models import load_model
    from learner.trainer import Learner

    overrides = [
        f"model.path={tiny_model}",
        f"run.output_dir={tmp_path}",
        "run.name=r",
        "run.steps=1",
        "learner.lr=1e-2",
        "rollout.prompts_per_step=2",
        "rollout.group_size=2",
        "generation.sampling.max_new_tokens=8",
        "sandbox.workers=1",
        "data.num_problems=4",
        "learner.weight_decay=0.5",  # zero advantages: decay moves weights
    ]
    cfg = load_config(REPO / "configs" / "default.yaml", overrides)
    checkpoint = asyncio.run(train(cfg, progress=False)) / "checkpoints" / "step_000001"
    spec = parse_model(str(checkpoint))
    assert (spec.kind, spec.base_model) == ("checkpoint", str(tiny_model))
    assert parse_model(str(tmp_path / "r")) == spec, "a run directory means its newest complete checkpoint"

    model = load_model(spec.base_model)
    load_model_weights(model, checkpoint)
    learner = Learner.from_pretrained(str(tiny_model), learner_config(cfg))
    load_checkpoint(learner, checkpoint)
    initial = load_model(tiny_model).state_dict()
    trained = learner.model.state_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, trained[name], rtol=0, atol=0)
    assert any(not torch.equal(initial[n], t) for n, t in trained.items()), "the step changed some weights"

    out = tmp_path / "out"
    args = ["--model", str(checkpoint), "--benchmark", str(bench), "--solver", "gurobipy", "--max-new-tokens", "4"]
    assert main([*args, "--output", str(out), "--quiet"]) == 0
    assert summary(out)["model"] == str(checkpoint) and len(read_jsonl(out / "items.jsonl")) == 3


def test_a_checkpoint_that_is_incomplete_or_not_of_its_runs_model_exits_2(tiny_model, clean_bench, tmp_path, capsys):
    from transformers import LlamaConfig, LlamaForCausalLM

    from learner.checkpoint import save_checkpoint
    from learner.config import LearnerConfig
    from learner.trainer import Learner

    narrow = tmp_path / "narrow"  # the run config names a model of another width than the one trained
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    ).save_pretrained(narrow)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text(f"model:\n  path: {narrow}\n")
    checkpoint = tmp_path / "r" / "checkpoints" / "step_000001"
    save_checkpoint(Learner.from_pretrained(str(tiny_model), LearnerConfig(device="cpu")), checkpoint)
    unfinished = tmp_path / "r" / "checkpoints" / "step_000002"
    (unfinished / "dcp").mkdir(parents=True)
    capsys.readouterr()  # the progress bars of saving

    cases = [(checkpoint, "holds other shapes for 21 of the model's parameters"), (unfinished, "no COMPLETE marker")]
    for model, message in cases:
        args = ["--model", str(model), "--benchmark", str(clean_bench), "--solver", "gurobipy", "--quiet"]
        assert main([*args, "--output", str(tmp_path / "out")]) == 2, model
        err = capsys.readouterr().err  # transformers' "Loading weights" bar may come first
        line = err.splitlines()[-1]
        assert line.startswith(f"error: checkpoint {checkpoint}" if model == checkpoint else f"error: {unfinished}")
        assert message in line and err.count("error") == 1, err
    assert not (tmp_path / "out").exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bad_cases(bench: Path, tmp_path: Path) -> list[tuple[list[str], int, str]]:
    url = f"http://127.0.0.1:{_closed_port()}"
    with_model = ["--model", "smollm2-135m", "--benchmark", str(bench)]
    return [
        ([*with_model[:2], "--benchmark", "/nonexistent/b.jsonl", "--solver", "gurobipy"], 2,
         "error: benchmark file not found: /nonexistent/b.jsonl"),
        ([*with_model, "--solver", "gurobipy", "cplex"], 2, "error: unknown solver 'cplex'; valid solvers: coptpy, "),
        (["--model", f"sglang:{url}", "--benchmark", str(bench), "--solver", "gurobipy"], 2,
         f"error: SGLang server(s) ['{url}'] did not answer GET /health"),
        (["--model", f"openai:{url}/v1", "--benchmark", str(bench), "--solver", "gurobipy"], 2,
         f"error: OpenAI-compatible server at {url}/v1 is unreachable"),
        (["--model", url, "--benchmark", str(bench), "--solver", "gurobipy"], 2, "say which protocol"),
        (["--model", str(tmp_path / "nope"), "--benchmark", str(bench), "--solver", "gurobipy"], 2, "does not exist"),
        (["--completions", str(tmp_path / "none.jsonl"), "--solver", "gurobipy"], 2, "completions file not found"),
        ([*with_model], 2, "give at least one --solver"),
        ([*with_model, "--solver", "gurobipy", "--samples", "0"], 2, "--samples must be >= 1"),
        ([*with_model, "--solver", "gurobipy", "--rules", "evom"], 2, "answer rules: answer rule 'evom': evom needs a "
         "tolerance, e.g. evom:1e-6 (relative:TOL, evom:TOL, evom:TOL:delta=D, orlm or orlm:TOL (TOL, D > 0))"),
        ([*with_model, "--solver", "gurobipy", "--rules", "exact:0"], 2, "unknown comparison 'exact'"),
        ([*with_model, "--solver", "gurobipy", "--tolerance", "-1"], 2,
         "RewardConfig.tolerance must be a finite number > 0, got -1.0"),
    ]  # fmt: skip


def test_bad_input_is_one_line_a_nonzero_exit_and_nothing_written(clean_bench, tmp_path, capsys):
    out = tmp_path / "out"
    for args, code, message in _bad_cases(clean_bench, tmp_path):
        assert main([*args, "--output", str(out), "--quiet"]) == code, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, (args, err)
        assert not out.exists(), args
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "no temporary output left behind"


def test_a_solver_whose_package_is_missing_names_the_pip_install(clean_bench, tmp_path, capsys, monkeypatch):
    import importlib.metadata

    monkeypatch.setitem(sys.modules, "pyscipopt", None)  # find_spec now reports the package as not installed
    out = tmp_path / "out"
    assert (
        main(
            ["--model", "smollm2-135m", "--benchmark", str(clean_bench), "--solver", "pyscipopt", "--output", str(out)]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("error: solver 'pyscipopt' needs the Python package 'pyscipopt'") and "pip install" in err
    try:
        importlib.metadata.requires("evom")
    except importlib.metadata.PackageNotFoundError:
        return  # the project is not installed as a distribution here: no extras to name
    assert "pip install 'evom[solvers-extra]'" in err
    assert not out.exists()


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is `pid`."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid = text[text.rindex(")") + 2 :].split()[:2]
        if state != "Z" and int(ppid) == pid:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2 :].split()[0] != "Z"


@pytest.mark.slow
def test_sigterm_stops_the_command_with_one_line_and_exit_143_and_stops_its_sandbox(tmp_path):
    completions = tmp_path / "c.jsonl"
    completions.write_text(json.dumps({"id": "a", "code": "import time\ntime.sleep(120)\n", "answer": 1.0}) + "\n")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "engine.eval", "--completions", str(completions), "--solver", "pulp"]
    command += ["--wall-s", "120", "--output", str(out), "--quiet"]
    workers: list[int] = []

    def under_way(proc: subprocess.Popen[str]) -> bool:
        # The sandbox workers are the command's children: once they are there the evaluation is under way.
        workers[:] = _children(proc.pid)
        return bool(workers)

    code, err = sigterm_when(command, under_way, what="sandbox worker", cwd=REPO, wait_s=120, exit_s=60)
    assert code == 143, err[-2000:]
    assert err.splitlines()[-1] == "terminated: nothing was written"
    assert workers and not any(_alive(pid) for pid in workers), "the sandbox workers are stopped"
    assert not out.exists()


def test_a_nonempty_output_directory_is_refused(bench, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["--completions", str(bench), "--solver", "gurobipy", "--output", str(out)]) == 2
    assert "already exists and is not an empty directory" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.slow
def test_an_sglang_url_is_evaluated_through_the_http_backend(tiny_model, clean_bench, tmp_path):
    """Against the SGLang protocol peer (tests/engine/sglang_server.py, hashed tokens): the tokenizer comes from the
    server's /model_info model_path, every sample streams back and is verified."""
    import subprocess
    import urllib.request

    port = _closed_port()
    peer = [sys.executable, str(Path(__file__).with_name("sglang_server.py")), "--port", str(port)]
    server = subprocess.Popen([*peer, "--model-path", str(tiny_model)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the SGLang peer did not start"
                time.sleep(0.1)
        out = tmp_path / "out"
        args = ["--model", f"sglang:http://127.0.0.1:{port}", "--benchmark", str(clean_bench), "--solver", "gurobipy"]
        assert main([*args, "--samples", "2", "--max-new-tokens", "6", "--output", str(out), "--quiet"]) == 0
    finally:
        server.terminate()
        server.wait(timeout=30)
    items = read_jsonl(out / "items.jsonl")
    assert [(i["id"], i["sample"]) for i in items] == [(p, j) for p in ("p1", "p2", "p3") for j in (0, 1)]
    assert all(i["finish_reason"] in ("stop", "length") and i["status"] == "no_code" for i in items)
    assert summary(out)["model"] == f"sglang:http://127.0.0.1:{port}"
