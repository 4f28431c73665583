"""One run, several solvers: problems name their solver (a `solver` column); each is prompted with that solver's
instructions and verified with it, and each step's metrics row reports accuracy and counts per solver."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest
import scripted

from engine.config import load_config
from engine.data import DataError, assign_solvers, load_benchmark
from engine.data.__main__ import main as data_main
from engine.generation import SamplingParams
from engine.prompts import PromptBuilder, PromptSettings
from engine.records import RunRecorder, read_jsonl, reduce_rollout_metrics, reduction_rule
from engine.report import write_report
from engine.rollout import Rollout
from engine.run import main
from engine.train import train

REPO = Path(__file__).resolve().parents[1].parent

# Solves max x, x <= 3 with gurobipy, then max y, y <= 4 with PuLP. The harness judges the last solve of the
# problem's own solver: 3 under gurobipy (correct for answer 3), 4 under PuLP (wrong).
BOTH = (
    "import gurobipy as gp\n"
    "m = gp.Model()\n"
    "m.Params.OutputFlag = 0\n"
    "x = m.addVar(ub=3)\n"
    "m.setObjective(x, gp.GRB.MAXIMIZE)\n"
    "m.optimize()\n"
    "import pulp\n"
    "p = pulp.LpProblem('p', pulp.LpMaximize)\n"
    "y = pulp.LpVariable('y', 0, 4)\n"
    "p += y\n"
    "p.solve(pulp.PULP_CBC_CMD(msg=0))\n"
)


def write_rows(path: Path, solvers: list[str | None]) -> Path:
    rows = []
    for i, solver in enumerate(solvers):
        row = {"id": f"q{i}", "question": f"Maximise x subject to x <= 3 (case {i}).", "answer": 3.0}
        if solver is not None:
            row["solver"] = solver
        rows.append(json.dumps(row))
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.slow
def test_one_run_verifies_each_problem_with_its_own_solver(tiny_model, tmp_path):
    # q0 names no solver: it takes solver.name (gurobipy). Every answer starts with BOTH's program (the answer
    # prefix), so what differs between problems is only the solver each is verified with.
    data = write_rows(tmp_path / "mixed.jsonl", [None, "pulp", "gurobipy", "pulp"])
    cfg = load_config(
        REPO / "configs" / "default.yaml",
        [
            f"model.path={tiny_model}",
            f"run.output_dir={tmp_path}",
            "run.name=mixed",
            "run.steps=1",
            "rollout.prompts_per_step=4",
            "rollout.group_size=2",
            "generation.sampling.max_new_tokens=4",
            "sandbox.workers=2",
            f"data.train={data}",
            "solver.name=gurobipy",
            "solver.extract.which=first",
            f"data.answer_prefix={json.dumps('```python' + chr(10) + BOTH + '```' + chr(10))}",
        ],
    )
    run_dir = asyncio.run(train(cfg, progress=False))
    (row,) = read_jsonl(run_dir / "metrics.jsonl")
    assert row["by_solver/gurobipy/groups"] == 2 and row["by_solver/pulp/groups"] == 2
    assert row["by_solver/gurobipy/samples_scored"] == 4 and row["by_solver/pulp/samples_scored"] == 4
    assert row["by_solver/gurobipy/accuracy"] == 1.0, row
    assert row["by_solver/pulp/accuracy"] == 0.0, row
    assert row["by_solver/gurobipy/samples_correct"] == 4 and row["by_solver/pulp/samples_correct"] == 0
    assert row["accuracy"] == 0.5
    samples = read_jsonl(run_dir / "samples.jsonl")
    by_problem = {s["problem_id"]: (s["solver"], s["status"], s["objective"]) for s in samples}
    assert by_problem == {
        "q0": ("gurobipy", "correct", 3.0),  # names none: the run's solver.name
        "q1": ("pulp", "wrong", 4.0),
        "q2": ("gurobipy", "correct", 3.0),
        "q3": ("pulp", "wrong", 4.0),
    }
    solver_keys = [key for key in row if key.startswith("by_solver/")]
    assert row["by_solver/pulp/errors/wrong_objective"] == 4 and "by_solver/gurobipy/errors/wrong_objective" not in row
    assert len(solver_keys) == 11 and all(reduction_rule(key) is not None for key in solver_keys)
    assert reduce_rollout_metrics([row])["by_solver/pulp/accuracy"] == 0.0
    report = (write_report(run_dir) / "report.md").read_text()
    assert "- accuracy, gurobipy: final 1.000, peak 1.000 at step 0 (4 samples scored)" in report
    assert "- accuracy, pulp: final 0.000, peak 0.000 at step 0 (4 samples scored)" in report


# ----- scripted (fast) ------------------------------------------------------------------------------------


INSTRUCTIONS = {"gurobipy": "Write gurobipy code.", "pulp": "Write PuLP code."}


async def test_a_scripted_step_prompts_and_counts_each_problem_under_its_solver(tmp_path):
    problems = [
        replace(p, solver=solver) for p, solver in zip(scripted.problems(3), ["gurobipy", "pulp", "pulp"], strict=True)
    ]
    seen: dict[str, str] = {}

    async def script(req):
        # The completion is decided by the prompt's instructions: gurobipy prompts get one correct sample of two,
        # PuLP prompts none.
        pid = scripted.problem_id(req.prompt_text)
        solver = next(name for name, text in INSTRUCTIONS.items() if text in req.prompt_text)
        seen[pid] = solver
        status = "correct" if solver == "gurobipy" and req.sample_index == 0 else "wrong"
        return scripted.Reply(text=f"{status} ({pid} #{req.sample_index})")

    async def judge(problem, text):
        outcome = scripted.outcome_of(text)
        return replace(outcome, reward=outcome.reward + (0.5 if problem.solver == "pulp" else 0.0))

    tokenizer = scripted.tokenizer()
    prompts = PromptBuilder(
        tokenizer,
        instructions="default instructions",
        settings=PromptSettings(max_prompt_tokens=4096),
        solver_instructions=INSTRUCTIONS,
    )
    backend = scripted.ScriptedBackend(script, tokenizer=tokenizer)
    with RunRecorder(tmp_path) as recorder:
        rollout = Rollout(
            backend=backend,
            verifier=scripted.ScriptedVerifier(judge),
            prompts=prompts,
            problems=problems,
            settings=scripted.rollout_settings(prompts_per_step=3, group_size=2),
            sampling=SamplingParams(max_new_tokens=16, seed=7),
            recorder=recorder,
            start_step=0,
        )
        async with backend, rollout:
            result = await rollout.next_batch()
    assert seen == {"p0": "gurobipy", "p1": "pulp", "p2": "pulp"}, "each prompt carries its solver's instructions"
    by_solver = {k: v for k, v in result.metrics.items() if k.startswith("by_solver/")}
    assert by_solver == {
        "by_solver/gurobipy/groups": 1,
        "by_solver/gurobipy/samples_scored": 2,
        "by_solver/gurobipy/samples_correct": 1,
        "by_solver/gurobipy/accuracy": 0.5,
        "by_solver/gurobipy/reward_mean": 0.5,
        "by_solver/gurobipy/errors/wrong_objective": 1,
        "by_solver/pulp/groups": 2,
        "by_solver/pulp/samples_scored": 4,
        "by_solver/pulp/samples_correct": 0,
        "by_solver/pulp/accuracy": 0.0,
        "by_solver/pulp/reward_mean": 0.5,
        "by_solver/pulp/errors/wrong_objective": 4,
    }
    assert result.metrics["accuracy"] == 1 / 6

    # Two ranks' rows: counts add up, accuracy and reward_mean are means weighted by each rank's samples scored.
    other = {
        "step": 0,
        "by_solver/pulp/groups": 1,
        "by_solver/pulp/samples_scored": 2,
        "by_solver/pulp/samples_correct": 2,
        "by_solver/pulp/accuracy": 1.0,
        "by_solver/pulp/reward_mean": 1.5,
        "by_solver/pulp/errors/wrong_objective": 0,
    }
    merged = reduce_rollout_metrics([{"step": 0, **by_solver}, other])
    assert merged["by_solver/pulp/samples_scored"] == 6 and merged["by_solver/pulp/samples_correct"] == 2
    assert merged["by_solver/pulp/accuracy"] == 2 / 6
    assert merged["by_solver/pulp/reward_mean"] == (0.5 * 4 + 1.5 * 2) / 6
    assert merged["by_solver/gurobipy/accuracy"] == 0.5, "a solver only one rank saw keeps that rank's value"
    assert merged["by_solver/pulp/errors/wrong_objective"] == 4


async def test_each_samples_row_names_the_solver_its_problem_is_verified_with(tmp_path):
    # p0 names no solver: its rows take the rollout's (the run's solver.name), or none when the rollout has none.
    problems = [replace(p, solver=s) for p, s in zip(scripted.problems(2), [None, "pulp"], strict=True)]
    tokenizer = scripted.tokenizer()
    settings = PromptSettings(max_prompt_tokens=4096)
    prompts = PromptBuilder(tokenizer, instructions="default", settings=settings, solver_instructions=INSTRUCTIONS)
    script = scripted.plan({"p0": ["correct", "wrong"], "p1": ["wrong", "correct"]})
    rows = {}
    for default in ("gurobipy", None):
        backend = scripted.ScriptedBackend(script, tokenizer=tokenizer)
        with RunRecorder(tmp_path / str(default)) as recorder:
            rollout = Rollout(
                backend=backend,
                verifier=scripted.ScriptedVerifier(scripted.held_judge({})),
                prompts=prompts,
                problems=problems,
                settings=scripted.rollout_settings(prompts_per_step=2, group_size=2),
                sampling=SamplingParams(max_new_tokens=16, seed=7),
                recorder=recorder,
                solver=default,
            )
            async with backend, rollout:
                await rollout.next_batch()
        samples = read_jsonl(tmp_path / str(default) / "samples.jsonl")
        rows[default] = sorted((s["problem_id"], s["sample_index"], s["solver"]) for s in samples)
    assert rows["gurobipy"] == [("p0", 0, "gurobipy"), ("p0", 1, "gurobipy"), ("p1", 0, "pulp"), ("p1", 1, "pulp")]
    assert rows[None] == [("p0", 0, None), ("p0", 1, None), ("p1", 0, "pulp"), ("p1", 1, "pulp")]


def test_a_problem_naming_no_solver_is_prompted_with_the_default_instructions():
    prompts = PromptBuilder(
        scripted.tokenizer(),
        instructions="default instructions",
        settings=PromptSettings(max_prompt_tokens=4096),
        solver_instructions=INSTRUCTIONS,
    )
    assert "default instructions" in prompts.text("q")
    assert "Write PuLP code." in prompts.text("q", solver="pulp")
    with pytest.raises(KeyError, match="no prompt instructions for solver 'ortools'"):
        prompts.build("q", solver="ortools")


# ----- data -----------------------------------------------------------------------------------------------


def test_rows_name_their_solver_and_generated_files_round_trip(tmp_path):
    bench = load_benchmark(str(write_rows(tmp_path / "m.jsonl", ["pulp", None, "gurobipy"])))
    assert [p.solver for p in bench.problems] == ["pulp", None, "gurobipy"]
    assert "solver" not in bench.problems[0].meta
    assert bench.problems[0].to_row()["solver"] == "pulp" and "solver" not in bench.problems[1].to_row()
    assert assign_solvers(bench.problems, "ortools")[1].solver == "ortools", "rows naming none take solver.name"
    plain = load_benchmark(str(write_rows(tmp_path / "plain.jsonl", [None, None])))
    assert assign_solvers(plain.problems, "ortools") == plain.problems, "a set naming no solver stays as it is"

    out = tmp_path / "gen.jsonl"
    assert data_main(["generate", "--n", "5", "--solver", "gurobipy,pulp", "--output", str(out)]) == 0
    assert [p.solver for p in load_benchmark(str(out)).problems] == ["gurobipy", "pulp", "gurobipy", "pulp", "gurobipy"]


def test_an_unknown_solver_in_a_row_fails_the_load_with_its_line(tmp_path):
    path = write_rows(tmp_path / "bad.jsonl", ["pulp", "cplex", "gurobi"])
    with pytest.raises(DataError, match=r"bad.jsonl:2: solver 'cplex' is not a known solver \(and 1 more rows\)"):
        load_benchmark(str(path))
    path.write_text('{"id": "a", "question": "q", "answer": 1, "solver": ["pulp"]}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: solver \['pulp'\] is not a known solver; valid solvers: "):
        load_benchmark(str(path))


def test_engine_run_stops_on_an_unknown_solver_in_a_row_dry_run_too(tmp_path, capsys):
    data = write_rows(tmp_path / "bad.jsonl", ["pulp", "cplex"])
    argv = [f"data.train={data}", f"run.output_dir={tmp_path}", "sandbox.isolation=process", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {data}:2: solver 'cplex' is not a known solver; valid solvers: ")
    assert err.count("\n") == 1 and not (tmp_path / "default").exists(), "nothing was started"
    assert main(["--dry-run", *argv]) == 1
    out = capsys.readouterr().out
    assert f"check train    FAIL data.train={data}: {data}:2: solver 'cplex' is not a known solver" in out


def test_the_dry_run_counts_problems_per_solver_and_fails_on_one_not_installed(tmp_path, capsys, monkeypatch):
    import solvers.registry
    from solvers.adapters import PULP

    data = write_rows(tmp_path / "m.jsonl", ["pulp", None, "pulp"])
    argv = ["--dry-run", f"data.train={data}", "solver.name=gurobipy", "sandbox.isolation=process"]
    assert main(argv) == 0
    assert "solvers: gurobipy 1, pulp 2" in capsys.readouterr().out
    # A registered solver whose package is missing here: the load passes (the name is known), the check does not.
    monkeypatch.setitem(solvers.registry._REGISTRY, "pulp", replace(PULP, package="evom_no_such_package"))
    assert main(argv) == 1
    assert "needs the Python package 'evom_no_such_package', which is not installed" in capsys.readouterr().out
    # The run itself stops the same way (exit 1, one line) before a model loads or anything is written.
    assert main([*argv[1:], f"run.output_dir={tmp_path / 'runs'}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: solver 'pulp' needs the Python package 'evom_no_such_package'")
    assert err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


# ----- engine.eval ------------------------------------------------------------------------------------------

GUROBI_3 = (
    "import gurobipy as gp\nm = gp.Model()\nx = m.addVar(ub=3)\nm.setObjective(x, gp.GRB.MAXIMIZE)\nm.optimize()\n"
)
PULP_3 = (
    "import pulp\np = pulp.LpProblem('p', pulp.LpMaximize)\ny = pulp.LpVariable('y', 0, 3)\np += y\n"
    "p.solve(pulp.PULP_CBC_CMD(msg=0))\n"
)


def test_eval_scores_each_row_under_its_own_solver_unless_solvers_are_given(tmp_path, capsys):
    from engine.eval import main as eval_main

    data = write_rows(tmp_path / "mixed.jsonl", ["gurobipy", "pulp", None])
    rows = [{"id": "q0", "code": GUROBI_3}, {"id": "q1", "code": PULP_3}, {"id": "q2", "code": PULP_3}]
    completions = tmp_path / "c.jsonl"
    completions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["--completions", str(completions), "--benchmark", str(data), "--quiet"]

    # Without --solver: q0 under gurobipy, q1 under PuLP; q2 names none and there is no default.
    assert eval_main([*args, "--output", str(tmp_path / "none")]) == 2
    assert "mixed id 'q2' names no solver while other rows do; give --solver" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()

    # A run's config gives q2 its solver (pulp): every program is right under its own solver.
    config = tmp_path / "config.yaml"
    config.write_text("solver:\n  name: pulp\n")
    out = tmp_path / "rows"
    assert eval_main([*args, "--config", str(config), "--output", str(out)]) == 0
    items = read_jsonl(out / "items.jsonl")
    assert sorted((i["id"], i["solver"], i["status"]) for i in items) == [
        ("q0", "gurobipy", "correct"),
        ("q1", "pulp", "correct"),
        ("q2", "pulp", "correct"),
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["solver_per_row"] is True
    assert [(c["solver"], c["problems"]) for c in summary["cells"]] == [("gurobipy", 1), ("pulp", 2)]

    # --solver: every problem under each solver given, whatever its row names (transfer).
    out = tmp_path / "transfer"
    assert eval_main([*args, "--solver", "gurobipy", "--output", str(out)]) == 0
    items = read_jsonl(out / "items.jsonl")
    assert [(i["id"], i["solver"], i["correct"]) for i in items] == [
        ("q0", "gurobipy", True),
        ("q1", "gurobipy", False),
        ("q2", "gurobipy", False),
    ]


def test_eval_reads_a_completions_rows_solver_without_a_benchmark(tmp_path, capsys):
    from engine.eval import main as eval_main

    rows = [
        {"id": "a", "code": GUROBI_3, "answer": 3.0, "solver": "gurobipy"},
        {"id": "b", "code": PULP_3, "answer": 3.0, "solver": "pulp"},
    ]
    completions = tmp_path / "c.jsonl"
    completions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert eval_main(["--completions", str(completions), "--output", str(out), "--quiet"]) == 0
    assert sorted((i["id"], i["solver"], i["correct"]) for i in read_jsonl(out / "items.jsonl")) == [
        ("a", "gurobipy", True),
        ("b", "pulp", True),
    ]
    completions.write_text(json.dumps({**rows[0], "solver": "cplex"}) + "\n")
    assert eval_main(["--completions", str(completions), "--output", str(tmp_path / "x"), "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown solver 'cplex'; valid solvers: ")


@pytest.mark.slow
def test_eval_generates_each_row_under_its_own_solver(tiny_model, tmp_path):
    from engine.eval import main as eval_main

    data = write_rows(tmp_path / "mixed.jsonl", ["pulp", "gurobipy", "pulp"])
    out = tmp_path / "out"
    args = ["--model", str(tiny_model), "--benchmark", str(data), "--max-new-tokens", "4", "--quiet"]
    assert eval_main([*args, "--output", str(out)]) == 0
    items = read_jsonl(out / "items.jsonl")
    assert [(i["solver"], i["id"]) for i in items] == [("pulp", "q0"), ("pulp", "q2"), ("gurobipy", "q1")]


# ----- the verifier's routing and pools -------------------------------------------------------------------


def test_the_verifier_routes_each_problem_to_its_solver_and_refuses_one_it_has_no_sandbox_for():
    from engine.verifier import SolverVerifier, problem_solvers
    from solvers import get_solver

    gurobi_pool, pulp_pool = object(), object()  # routing only: nothing runs
    verifier = SolverVerifier(gurobi_pool, "gurobipy", pools={"pulp": pulp_pool})
    problems = scripted.problems(3)
    assert verifier.route(problems[0]) == (get_solver("gurobipy"), gurobi_pool), "no solver named: the default"
    assert verifier.route(replace(problems[1], solver="pulp")) == (get_solver("pulp"), pulp_pool)
    assert verifier.solver_names == ["gurobipy", "pulp"]
    with pytest.raises(ValueError, match="problem 'p2' names solver 'ortools', which this verifier has no sandbox"):
        verifier.route(replace(problems[2], solver="ortools"))
    named = [replace(problems[0], solver="pulp"), problems[1], replace(problems[2], solver="pulp")]
    assert [s.name for s in problem_solvers(named, get_solver("gurobipy"))] == ["pulp", "gurobipy"]


async def test_solver_pools_share_a_pool_between_solvers_with_the_same_preload_and_close_them():
    from engine.verifier import solver_pools
    from sandbox import SandboxPool
    from solvers.adapters import PULP

    twin = replace(PULP, name="pulp_twin")  # the same modules: the same warm workers serve both
    made: list[SandboxPool] = []

    def make_pool(preload):
        made.append(SandboxPool(workers=1, preload=preload, isolation="process"))
        return made[-1]

    async with solver_pools([PULP, twin], make_pool) as pools:
        assert pools["pulp"] is pools["pulp_twin"] and len(made) == 1
        result = await pools["pulp"].run("import pulp; print(pulp.LpMaximize)")
        assert result.stdout.strip() == "-1"
    with pytest.raises(RuntimeError, match="the pool is closed"):
        await made[0].run("print(1)")  # closed on exit
