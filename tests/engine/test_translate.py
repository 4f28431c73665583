"""engine.translate: programs read from the three row kinds, rewrites verified by the real target solver in the real
sandbox (replies scripted, so that correct, wrong and missing rewrites all occur), the yields, resuming on the
same output, a run with a tiny random Llama through the command line (and one stopped by SIGTERM, then continued),
and bad input."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import scripted
from signalled import sigterm_when

from engine.evaluation.models import ServedModel
from engine.records import read_jsonl
from engine.sft import read_pairs
from engine.translate import (
    Settings,
    Writer,
    main,
    previous_progress,
    progress_path,
    read_programs,
    summarize,
    translate,
    translation_request,
)
from solvers import get_solver

REPO = Path(__file__).resolve().parents[2]

PULP = """import pulp
prob = pulp.LpProblem("p", pulp.LpMaximize)
x = pulp.LpVariable("x", lowBound=0, upBound={ub})
prob += {c} * x
prob.solve(pulp.PULP_CBC_CMD(msg=False))
"""
HIGHSPY = """import highspy
h = highspy.Highs()
x = h.addVariable(lb=0, ub={ub})
h.maximize({c} * x)
"""
# (id, question, coefficient, bound, answer): p2's answer is not its program's optimum (fails the source check)
PROBLEMS = [
    ("p0", "Maximise 3x with 0 <= x <= 2.", 3, 2, 6.0),
    ("p1", "Maximise 2y with 0 <= y <= 5.", 2, 5, 10.0),
    ("p2", "Maximise 4z with 0 <= z <= 1.", 4, 1, 99.0),
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def programs_file(tmp_path) -> Path:
    rows = [
        {"id": i, "question": q, "code": PULP.format(c=c, ub=ub), "answer": a, "solver_api": "pulp"}
        for i, q, c, ub, a in PROBLEMS
    ]
    return write_jsonl(tmp_path / "programs.jsonl", rows)


def test_programs_come_from_code_or_completion_rows_eval_items_and_run_samples(tmp_path):
    code = PULP.format(c=3, ub=2)
    bench = write_jsonl(tmp_path / "bench.jsonl", [{"id": "q0", "question": "Q0?", "answer": 6.0}])
    rows = [
        {"id": "a", "question": "A?", "code": code, "answer": 6.0},
        {"id": "b", "question": "B?", "completion": f"Here:\n```python\n{code}```", "answer": None},
        {"id": "c", "question": "C?", "code": code, "answer": 6.0, "solver": "gurobipy"},
        {"id": "d", "question": "D?", "code": code},
        {"id": "e", "code": code, "answer": 6.0},
        {"id": "f", "question": "F?", "completion": "no program", "answer": 1.0},
        {"id": "g", "question": "G?", "code": code, "answer": 6.0, "correct": False},
        {"benchmark": "bench", "id": "q0", "completion": f"```python\n{code}```", "answer": 6.0, "correct": True},
        {"id": "a", "question": "A again?", "code": code, "answer": 6.0},
    ]
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    (eval_dir / "summary.json").write_text(json.dumps({"benchmarks": [str(bench)]}))
    programs, skipped = read_programs(write_jsonl(eval_dir / "items.jsonl", rows), "pulp")
    assert [(p.id, p.question, p.answer) for p in programs] == [
        ("a", "A?", 6.0),
        ("b", "B?", None),
        ("q0", "Q0?", 6.0),
        ("a#2", "A again?", 6.0),
    ]
    assert programs[1].code == code.strip()
    assert skipped == {
        "written for gurobipy, not pulp": 1,
        "no 'answer' (null: no optimum)": 1,
        "no 'question' (the translated pair needs it to train on)": 1,
        "no 'code' or 'completion' with a program": 1,
        "not correct": 1,
    }
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(f"data:\n  train: {bench}\nsolver:\n  name: pulp\n")
    samples = write_jsonl(run_dir / "samples.jsonl", [{"problem_id": "q0", "text": rows[1]["completion"],
                                                        "correct": True}])  # fmt: skip
    (program,) = read_programs(samples, "pulp")[0]
    assert (program.id, program.question, program.answer) == ("q0", "Q0?", 6.0)
    assert read_programs(samples, "highspy")[1] == {"written for pulp, not highspy": 1}
    # A run mixing solvers: a sample is written for its problem's solver (the row's, or the data's for older rows).
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"id": "q0", "question": "Q0?", "answer": 6.0, "solver": "pulp"}])
    (run_dir / "config.yaml").write_text(f"data:\n  train: {mixed}\nsolver:\n  name: highspy\n")
    sample = {"problem_id": "q0", "text": rows[1]["completion"], "correct": True}
    samples = write_jsonl(run_dir / "samples.jsonl", [{**sample, "solver": "pulp"}, sample])
    assert [p.id for p in read_programs(samples, "pulp")[0]] == ["q0", "q0#2"]
    assert read_programs(samples, "highspy")[1] == {"written for pulp, not highspy": 2}


def test_the_request_shows_the_problem_the_program_and_the_targets_instructions():
    (program,) = read_programs_from_rows([{"id": "a", "question": "A?", "code": "import pulp\n", "answer": 1.0}])
    text = translation_request(program, get_solver("pulp"), get_solver("highspy"))
    assert "A?" in text and "```python\nimport pulp\n```" in text
    assert get_solver("highspy").instructions in text and "for highspy" in text


def read_programs_from_rows(rows: list[dict]) -> list:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return read_programs(write_jsonl(Path(d) / "p.jsonl", rows), "pulp")[0]


async def _translate(programs_file: Path, output: Path, replies: dict[str, list[str]]) -> list:
    """Translate with a scripted model whose reply to sample j of problem p is replies[p][j]."""
    ids = {q: i for i, q, *_ in PROBLEMS}

    async def script(req):
        problem = next(pid for q, pid in ids.items() if q in req.prompt_text)
        return scripted.Reply(text=replies[problem][req.sample_index])

    tokenizer = scripted.tokenizer()
    backend = scripted.ScriptedBackend(script, tokenizer=tokenizer)
    programs, _ = read_programs(programs_file, "pulp")
    writer = Writer(output)
    try:
        async with backend:
            served = ServedModel(backend=backend, tokenizer=tokenizer)
            settings = Settings(attempts=2, keep=1, model_label="scripted")
            return await translate(served, programs, get_solver("pulp"), get_solver("highspy"), settings, writer)
    finally:
        writer.close()


@pytest.mark.slow
def test_only_rewrites_the_target_solver_verifies_are_kept_and_the_yields_count_them(programs_file, tmp_path):
    right = f"```python\n{HIGHSPY.format(c=3, ub=2)}```"
    replies = {
        "p0": [right, f"Sure.\n{right}\nDone."],  # both correct, the same program: kept once
        "p1": [f"```python\n{HIGHSPY.format(c=2, ub=4)}```", "I cannot."],  # wrong optimum (8), no code
        "p2": ["never asked"],
    }
    output = tmp_path / "out.jsonl"
    tallies = asyncio.run(_translate(programs_file, output, replies))
    assert [(t.program.id, t.source_status, t.attempts, t.verified, len(t.kept)) for t in tallies] == [
        ("p0", "correct", 2, 2, 1),
        ("p1", "correct", 2, 0, 0),
        ("p2", "wrong", 0, 0, 0),
    ]
    (kept,) = read_jsonl(output)
    assert kept["source_id"] == "p0" and kept["solver"] == "highspy" and kept["source_solver"] == "pulp"
    assert kept["completion"] == f"```python\n{HIGHSPY.format(c=3, ub=2).strip()}\n```"
    assert kept["objective"] == 6.0 and kept["answer"] == 6.0 and kept["question"] == PROBLEMS[0][1]
    progress = read_jsonl(progress_path(output))
    assert {r["id"]: r["statuses"] for r in progress} == {
        "p2": {},
        "p0": {"correct": 2},
        "p1": {"wrong": 1, "no_code": 1},
    }
    summary = summarize(progress, {"from_solver": "pulp", "to_solver": "highspy"})
    assert (summary["programs"], summary["programs_attempted"], summary["attempts"]) == (3, 2, 4)
    assert (summary["attempts_verified"], summary["programs_with_kept"], summary["kept_rows"]) == (2, 1, 1)
    assert summary["yield_programs"] == 0.5 and summary["yield_attempts"] == 0.5
    assert summary["not_attempted"] == {"wrong": 1}
    # the output is engine.sft's input as is
    pairs, skipped = read_pairs([output])
    assert [(p.question, p.solver, p.completion) for p in pairs] == [
        (PROBLEMS[0][1], "highspy", kept["completion"])
    ] and not skipped


def test_a_continued_run_keeps_finished_programs_and_drops_rewrites_of_unfinished_ones(tmp_path):
    output = tmp_path / "out.jsonl"
    row = {"from_solver": "pulp", "to_solver": "highspy", "source_status": "correct", "attempts": 1, "verified": 1}
    write_jsonl(progress_path(output), [{**row, "id": "p0", "kept": 1, "statuses": {"correct": 1}}])
    # p1's rewrite was written, its progress row was not (killed in between); a half line follows
    write_jsonl(output, [{"source_id": "p0", "completion": "a"}, {"source_id": "p1", "completion": "b"}])
    with output.open("a") as f:
        f.write('{"source_id": "p1", "compl')
    assert set(previous_progress(output, "pulp", "highspy")) == {"p0"}
    assert read_jsonl(output) == [{"source_id": "p0", "completion": "a"}]
    with pytest.raises(ValueError, match="continues a translation pulp -> highspy, not pulp -> ortools"):
        previous_progress(output, "pulp", "ortools")


@pytest.mark.slow
def test_the_command_line_translates_with_a_local_model_and_continues_where_it_stopped(
    tiny_model, programs_file, tmp_path, capsys
):
    output = tmp_path / "t" / "out.jsonl"
    args = ["--from-solver", "pulp", "--to-solver", "highspy", "--programs", str(programs_file)]
    args += ["--model", str(tiny_model), "--output", str(output), "--attempts", "2", "--max-new-tokens", "4"]
    assert main([*args, "--limit", "1"]) == 0
    first = capsys.readouterr().out
    assert "0 already done" in first and "p0: 2 attempts, 0 verified, 0 kept" in first
    assert main([*args, "--limit", "3"]) == 0
    second = capsys.readouterr().out
    assert "1 already done" in second and "p0:" not in second.split("to translate", 1)[1]
    assert [r["id"] for r in read_jsonl(progress_path(output))] == ["p0", "p2", "p1"]  # p2 fails its source check
    summary = json.loads(output.with_name("out.jsonl.summary.json").read_text())
    assert (summary["programs"], summary["programs_attempted"], summary["attempts"]) == (3, 2, 4)
    assert summary["attempts_verified"] == 0 and summary["yield_programs"] == 0.0  # a random model writes nothing
    assert "pulp -> highspy: 3 programs, 2 attempted (not: 1 wrong); 4 attempts, 0 verified (0.0%)" in second


@pytest.mark.slow
def test_sigterm_stops_the_command_with_one_line_and_exit_143_and_the_same_command_continues(
    tiny_model, programs_file, tmp_path
):
    output = tmp_path / "t" / "out.jsonl"
    command = [sys.executable, "-m", "engine.translate", "--from-solver", "pulp", "--to-solver", "highspy"]
    command += ["--programs", str(programs_file), "--model", str(tiny_model), "--output", str(output)]
    # p2 fails its source check and is finished first; the signal comes while p0 and p1 are being rewritten.
    command += ["--attempts", "4", "--max-new-tokens", "64"]
    code, err = sigterm_when(
        command,
        lambda _: progress_path(output).is_file() and progress_path(output).stat().st_size > 0,
        what="finished program",
        cwd=REPO,
    )
    assert code == 143, err[-2000:]
    assert err.splitlines()[-1] == "terminated: finished programs are kept; run the same command again to continue"
    assert "Traceback" not in err
    assert [r["id"] for r in read_jsonl(progress_path(output))] == ["p2"]

    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 already done" in done.stdout
    assert sorted(r["id"] for r in read_jsonl(progress_path(output))) == ["p0", "p1", "p2"]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_bad_input_is_one_line_and_exit_2_and_changes_nothing(programs_file, tmp_path, capsys):
    output = tmp_path / "out.jsonl"
    base = ["--from-solver", "pulp", "--to-solver", "highspy", "--model", "smollm2-135m", "--output", str(output)]
    assert main([*base, "--programs", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: file not found" in one_error_line(capsys)
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"id": "x", "question": "q"}, {"id": "y", "answer": 1}])
    assert main([*base, "--programs", str(empty)]) == 2
    assert "no usable program" in one_error_line(capsys)
    assert main([*base, "--programs", str(programs_file), "--attempts", "0"]) == 2
    assert "--attempts must be >= 1" in one_error_line(capsys)
    bad_solver = ["--from-solver", "pulp", "--to-solver", "cplex", "--model", "x", "--programs", str(programs_file)]
    assert main(bad_solver) == 2
    assert "cplex" in one_error_line(capsys)
    assert main([*base, "--programs", str(programs_file), "--output", str(tmp_path)]) == 2
    assert "is a directory" in one_error_line(capsys)
    # an output that is another translation's, or not a translation's at all
    write_jsonl(progress_path(output), [{"id": "p0", "from_solver": "pulp", "to_solver": "ortools"}])
    write_jsonl(output, [{"source_id": "p0"}])
    before = (output.read_bytes(), progress_path(output).read_bytes())
    assert main([*base, "--programs", str(programs_file)]) == 2
    assert "not pulp -> highspy" in one_error_line(capsys)
    assert (output.read_bytes(), progress_path(output).read_bytes()) == before
    progress_path(output).unlink()
    assert main([*base, "--programs", str(programs_file)]) == 2
    assert "not a translation's output" in one_error_line(capsys)
    assert not (tmp_path / "out.jsonl.summary.json").exists()
