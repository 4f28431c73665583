"""solvers.integrations: the verifier as TRL's GRPOTrainer reward and verl's compute_score, with real programs in
the real nsjail sandbox (gurobipy, PuLP), and TRL's real GRPOTrainer for one step on a tiny random model."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sandbox import SandboxUnavailable
from solvers import UnknownSolverError, integrations
from solvers.integrations import compute_score, compute_score_batch, parse_answer, shared_verifier, trl_reward

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent


def _load(name: str, path: Path):
    module = sys.modules.get(name)
    if module is None:  # tests/ is no package: loaded by path, once
        spec = importlib.util.spec_from_file_location(name, path)
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


spoofing = _load("solvers_spoofing", TESTS / "solvers" / "test_spoofing.py")

HEAD = "import gurobipy as gp\nm = gp.Model()\nm.Params.OutputFlag = 0\n"
MAX_X_3 = HEAD + "x = m.addVar(ub=3)\nm.setObjective(x, gp.GRB.MAXIMIZE)\nm.optimize()\n"
INFEASIBLE = HEAD + "x = m.addVar()\nm.addConstr(x >= 5)\nm.addConstr(x <= 3)\nm.setObjective(x)\nm.optimize()\n"
PULP_MAX_3 = (
    "import pulp\np = pulp.LpProblem('p', pulp.LpMaximize)\nx = pulp.LpVariable('x', 0, 3)\np += x\n"
    "p.solve(pulp.PULP_CBC_CMD(msg=0))\n"
)


def fenced(code: str) -> str:
    return f"The model:\n```python\n{code}```\n"


@pytest.fixture(scope="module", autouse=True)
def verifier_pool():
    """One process-wide pool for the module (as in a trainer), closed at the end; skips without nsjail."""
    integrations.configure(workers=2)
    try:
        trl_reward("gurobipy")(completions=[fenced(MAX_X_3)], answer=[3.0])
    except SandboxUnavailable as exc:
        pytest.skip(f"nsjail sandbox unavailable on this machine: {exc}")
    yield
    integrations.close()


# ----- TRL -------------------------------------------------------------------------------------------------------


def test_trl_reward_scores_strings_and_chat_messages_and_ignores_trl_keywords():
    reward = trl_reward("gurobipy")
    metrics, extra = {}, {}
    rewards = reward(
        prompts=["q"] * 6,
        completions=[
            fenced(MAX_X_3),
            [{"role": "assistant", "content": fenced(MAX_X_3)}],
            [{"role": "assistant", "content": [{"type": "text", "text": fenced(MAX_X_3)}]}],
            fenced(MAX_X_3),
            "no program here",
            fenced(INFEASIBLE),
        ],
        answer=[3.0, 3.0, 3.0, 2.0, 3.0, None],
        completion_ids=[[1, 2]] * 6,
        trainer_state=object(),
        log_metric=lambda name, value: metrics.__setitem__(name, value),
        log_extra=lambda column, values: extra.__setitem__(column, values),
    )
    assert reward.__name__ == "evom_gurobipy" and callable(reward)
    assert rewards == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0] and all(type(r) is float for r in rewards)
    statuses = ["correct", "correct", "correct", "wrong", "no_code", "correct"]
    assert [o.status for o in reward.last_outcomes] == statuses and extra == {"evom_gurobipy_status": statuses}
    assert metrics["evom_gurobipy/correct"] == 4 / 6 and metrics["evom_gurobipy/wrong"] == 1 / 6
    assert sum(metrics.values()) == pytest.approx(1.0)


def test_reward_options_shape_the_reward():
    shaped = trl_reward("gurobipy", comparison="orlm", executed_reward=0.25)
    assert shaped(completions=[fenced(MAX_X_3), fenced(MAX_X_3)], answer=[3.1, 9.0]) == [1.25, 0.25]


def test_bad_input_says_what_is_wrong():
    with pytest.raises(UnknownSolverError):
        trl_reward("no-such-solver")
    with pytest.raises(TypeError, match="unknown reward options \\['tolerence'\\]"):
        trl_reward("gurobipy", tolerence=0.1)
    reward = trl_reward("gurobipy")
    with pytest.raises(ValueError, match="needs an 'answer' column"):
        reward(prompts=["q"], completions=["x"])
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        reward(completions=["x", "y"], answer=[1.0])
    with pytest.raises(ValueError, match="neither a number nor null"):
        reward(completions=["x"], answer=["twelve"])


def test_answers_in_the_forms_datasets_hand_over():
    assert [parse_answer(v) for v in (3, 2.5, "4.5", " -1e3 ")] == [3.0, 2.5, 4.5, -1000.0]
    assert [parse_answer(v) for v in (None, math.nan, "", "null", "None", "NaN")] == [None] * 6
    for bad in (math.inf, "inf", True, [1.0]):
        with pytest.raises(ValueError):
            parse_answer(bad)


def test_works_from_other_threads_at_once():
    reward = trl_reward("gurobipy")
    results: dict[int, list[float | None]] = {}
    services = set()

    def call(i: int) -> None:
        services.add(id(shared_verifier()))
        results[i] = reward(completions=[fenced(MAX_X_3), fenced(INFEASIBLE)], answer=[3.0, 3.0])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == {i: [1.0, 0.0] for i in range(4)} and len(services) == 1


async def test_works_while_an_event_loop_runs_in_the_calling_thread():
    asyncio.get_running_loop()  # an async test: this thread's loop is running
    reward = trl_reward("gurobipy")
    assert reward(completions=[fenced(MAX_X_3)], answer=[3.0]) == [1.0]
    # and from a worker thread the running loop hands work to
    assert await asyncio.to_thread(reward, completions=[fenced(MAX_X_3)], answer=[2.0]) == [0.0]


def test_close_stops_the_pool_and_the_thread_and_the_next_call_starts_afresh():
    reward = trl_reward("gurobipy")
    service = shared_verifier()
    integrations.close()
    assert service.closed and not service.alive
    with pytest.raises(RuntimeError, match="closed"):
        service.verify([("x", 1.0)], reward.solver, reward=reward.reward)
    assert reward(completions=[fenced(MAX_X_3)], answer=[3.0]) == [1.0]
    assert shared_verifier() is not service and shared_verifier().alive


def _reward_in_child(queue) -> None:
    from solvers import integrations as child_integrations

    rewards = trl_reward("gurobipy")(completions=[fenced(MAX_X_3)], answer=[3.0])
    queue.put((rewards, child_integrations.shared_verifier().pid == os.getpid()))
    child_integrations.close()


def test_a_forked_child_starts_its_own_pool():
    parent = shared_verifier()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_reward_in_child, args=(queue,))
    child.start()
    rewards, own = queue.get(timeout=120)
    child.join(timeout=60)
    assert (rewards, own, child.exitcode) == ([1.0], True, 0)
    assert shared_verifier() is parent and parent.alive  # the parent's pool is untouched


def test_the_pool_is_closed_at_interpreter_exit():
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
        "from solvers.integrations import trl_reward\n"
        "code = 'import gurobipy as gp\\nm = gp.Model()\\nx = m.addVar(ub=3)\\n"
        "m.setObjective(x, gp.GRB.MAXIMIZE)\\nm.optimize()\\n'\n"
        "print(trl_reward('gurobipy')(completions=['```python\\n' + code + '```'], answer=[3.0]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1.0]" and "closed the verifier's sandbox pools (1)" in done.stderr


# ----- verl ------------------------------------------------------------------------------------------------------

KEYS = {"score", "acc", "status", "objective", "reason"}


@pytest.mark.parametrize(
    ("code", "ground_truth", "status", "score", "objective"),
    [
        (MAX_X_3, "3", "correct", 1.0, 3.0),
        (MAX_X_3, 3.0, "correct", 1.0, 3.0),
        (MAX_X_3, "4.0", "wrong", 0.0, 3.0),
        (INFEASIBLE, 3.0, "infeasible", 0.0, None),  # claims no optimum on a problem that has one
        (INFEASIBLE, None, "correct", 1.0, None),  # a problem with no optimum, proved
        (MAX_X_3, "null", "wrong", 0.0, 3.0),
    ],
    ids=["correct-str", "correct-float", "wrong", "infeasible-claim", "infeasible-proved", "optimum-on-none"],
)
def test_compute_score_judges_correct_wrong_and_infeasible_programs(code, ground_truth, status, score, objective):
    result = compute_score("evom/test", fenced(code), ground_truth, {"index": 0})
    assert set(result) == KEYS and (result["status"], result["score"], result["acc"]) == (status, score, score)
    assert math.isnan(result["objective"]) if objective is None else result["objective"] == objective


@pytest.mark.parametrize("name", sorted(spoofing.SPOOFS))
def test_compute_score_gives_spoofing_programs_nothing(name):
    code, expected = spoofing.SPOOFS[name]
    result = compute_score("evom/test", fenced(code + "\n"), spoofing.ANSWER)
    assert (result["status"], result["score"], result["acc"]) == (expected, 0.0, 0.0), result


def test_compute_score_takes_the_solver_from_extra_info_or_the_reward_kwargs():
    assert compute_score(None, fenced(PULP_MAX_3), 3.0, {"solver": "pulp"})["status"] == "correct"
    assert compute_score(None, fenced(PULP_MAX_3), 3.0, None, solver="pulp")["status"] == "correct"
    # a PuLP program under gurobipy's harness never calls gurobipy's solve
    assert compute_score(None, fenced(PULP_MAX_3), 3.0)["status"] == "no_solve"
    # RewardConfig fields among verl's keywords shape the reward; the other keywords are ignored
    result = compute_score(None, fenced(MAX_X_3), 3.1, comparison="orlm", reward_router_address=None)
    assert (result["status"], result["score"]) == ("correct", 1.0)


def test_compute_score_batch_matches_compute_score_one_by_one():
    responses = [fenced(MAX_X_3), fenced(INFEASIBLE), fenced(PULP_MAX_3), "no code", fenced(MAX_X_3)]
    truths = ["3", 3.0, 3.0, 3.0, None]
    infos = [None, {"index": 1}, {"solver": "pulp"}, {}, {"solver": "gurobipy"}]
    batch = compute_score_batch(["evom/test"] * 5, responses, truths, infos, executed_reward=0.5)
    rows = zip(responses, truths, infos, strict=True)
    single = [compute_score("evom/test", r, t, i, executed_reward=0.5) for r, t, i in rows]
    assert [b["status"] for b in batch] == ["correct", "infeasible", "correct", "no_code", "wrong"]
    assert [b["score"] for b in batch] == [1.5, 0.5, 1.5, 0.0, 0.5]
    assert [{**b, "objective": repr(b["objective"])} for b in batch] == [
        {**x, "objective": repr(x["objective"])} for x in single
    ]
    with pytest.raises(ValueError, match="one of each per response"):
        compute_score_batch(["a"], ["x", "y"], [1.0, 2.0])


def test_compute_score_works_loaded_from_its_file_as_verl_loads_it():
    # verl's custom_reward_function.path: the file is loaded as a module "custom_module" of its own (registered in
    # sys.modules, then executed), then its function is called by keyword
    spec = importlib.util.spec_from_file_location("custom_module", integrations.__file__)
    module = sys.modules["custom_module"] = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        result = module.compute_score(
            data_source="evom/test", solution_str=fenced(MAX_X_3), ground_truth="3.0", extra_info={"split": "train"}
        )
    finally:
        module.close()
        del sys.modules["custom_module"]
    assert (result["score"], result["status"]) == (1.0, "correct")


# ----- TRL's real GRPOTrainer ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_one_grpo_trainer_step_with_trl_reward(tmp_path):
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    toy = _load("rollout_toy", TESTS / "engine" / "test_rollout_toy.py")
    policy = toy.toy_policy(seed=0)
    rows = [{"prompt": [{"role": "user", "content": f"problem {i}"}], "answer": toy.ANSWER} for i in range(2)]
    reward = trl_reward("gurobipy")
    config = trl.GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        seed=0,
        max_steps=1,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=8,
        learning_rate=1e-3,
        beta=0.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        activation_checkpointing=False,
    )
    before = {k: v.detach().clone() for k, v in policy.model.state_dict().items()}
    trainer = trl.GRPOTrainer(
        model=policy.model,
        reward_funcs=[reward],
        args=config,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=policy.tokenizer,
    )
    trainer.train()
    assert trainer.state.global_step == 1
    statuses = [o.status for o in reward.last_outcomes]
    assert len(statuses) == 8 and set(statuses) <= {"correct", "wrong", "infeasible", "error", "no_code"}
    logged = trainer.state.log_history[0]
    rewards = [o.reward for o in reward.last_outcomes]
    assert logged["rewards/evom_gurobipy/mean"] == pytest.approx(sum(rewards) / 8)
    assert logged["evom_gurobipy/correct"] == pytest.approx(statuses.count("correct") / 8)
    assert math.isfinite(logged["loss"])
    if len(set(rewards)) > 1:  # an advantage somewhere (so with seed 0 here): the update moved the weights
        assert any((policy.model.state_dict()[k] - v).abs().max() > 0 for k, v in before.items())
