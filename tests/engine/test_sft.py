"""engine.sft: the SFT loss by hand, the learner's SFT step as masked cross-entropy, the three input kinds, a run
on a tiny random Llama that resumes exactly and whose checkpoint engine.eval and --init-from load, a run stopped by
SIGTERM that resumes exactly, a 2-rank torchrun that trains as one process does, and bad input (under torchrun too)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from signalled import sigterm_when

from engine.config import load_config
from engine.records import read_jsonl
from engine.sft import SftSettings, learner_config, main, read_pairs, tokenize
from learner import losses
from learner.checkpoint import latest_checkpoint

REPO = Path(__file__).resolve().parents[2]

QUESTIONS = [
    "Maximise 3x with 0 <= x <= 2.",
    "Maximise 2y with 0 <= y <= 5.",
    "Minimise x + y with x >= 1 and y >= 2.",
    "Maximise 4z with 0 <= z <= 1.",
]
PROGRAM = "```python\nimport pulp\nprob = pulp.LpProblem('p', pulp.LpMaximize)\n```"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    rows = [{"question": q, "completion": f"{PROGRAM}\n# {i}", "solver": "pulp"} for i, q in enumerate(QUESTIONS)]
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


# ----------------------------------------------------------------------------------------------- the loss


def test_sft_loss_is_the_token_mean_negative_log_likelihood_of_the_completion_tokens():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -4.0, -7.0]], requires_grad=True)
    mask = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # the first token of row 0 is prompt, of row 1 padding
    loss, metrics = losses.sft_loss(logprobs, logprobs.detach(), torch.ones(2), mask)
    assert loss.item() == pytest.approx((2 + 3 + 0.5 + 4) / 4)
    loss.backward()
    assert torch.allclose(logprobs.grad, -mask / 4)
    assert metrics["approx_kl"].item() == 0.0
    # per-sequence weights scale each sequence's tokens; a global token count replaces the local one
    weighted, _ = losses.sft_loss(logprobs, logprobs, torch.tensor([2.0, 1.0]), mask, global_tokens=8.0)
    assert weighted.item() == pytest.approx((2 * 2 + 2 * 3 + 0.5 + 4) / 8)
    assert losses.get_policy_loss("sft") is losses.sft_loss


def test_the_learners_sft_step_is_cross_entropy_over_completion_tokens_only(tiny_model):
    from learner.config import RolloutBatch
    from learner.models import load_model
    from learner.trainer import Learner

    cfg = load_config(None, [f"model.path={tiny_model}", "learner.micro_batch_tokens=64"])
    settings = SftSettings(epochs=1, batch_size=3, lr=1e-3, warmup_steps=0, save_every=1, seed=0)
    prompts = [[5, 6, 7, 8], [9, 10], [5, 6, 7, 8]]  # the first and last share their prompt (packed once)
    completions = [[11, 12, 13], [14, 15, 16, 17, 18], [19]]
    model = load_model(str(tiny_model), dtype="float32")
    with torch.no_grad():
        total, count = 0.0, 0
        for prompt, completion in zip(prompts, completions, strict=True):
            ids = torch.tensor([prompt + completion])
            logits = model(input_ids=ids).logits[0]
            # position t predicts token t + 1: only the completion's tokens are targets
            start = len(prompt) - 1
            targets = ids[0, len(prompt) :]
            total += F.cross_entropy(logits[start : start + len(completion)], targets, reduction="sum").item()
            count += len(completion)
    learner = Learner(model, learner_config(cfg, settings))
    out = learner.step(RolloutBatch(prompts=prompts, responses=completions, advantages=[1.0] * 3))
    assert out["loss"] == pytest.approx(total / count, rel=1e-5)
    assert out["response_tokens"] == count


# ----------------------------------------------------------------------------------------------- input rows


def test_eval_items_run_samples_and_plain_rows_are_read_and_only_correct_ones_kept(tmp_path):
    bench = write_jsonl(tmp_path / "bench.jsonl", [{"id": f"q{i}", "question": q, "answer": 1.0} for i, q in
                                                    enumerate(QUESTIONS)])  # fmt: skip
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    (eval_dir / "summary.json").write_text(json.dumps({"benchmarks": [str(bench)]}))
    item = {"benchmark": "bench", "solver": "pulp", "completion": PROGRAM}
    items = write_jsonl(
        eval_dir / "items.jsonl",
        [{**item, "id": "q0", "correct": True}, {**item, "id": "q1", "correct": False},
         {**item, "id": "nope", "correct": True}],
    )  # fmt: skip
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(f"data:\n  train: {bench}\nsolver:\n  name: highspy\n")
    samples = write_jsonl(
        run_dir / "samples.jsonl",
        [{"problem_id": "q2", "text": PROGRAM, "correct": True}, {"problem_id": "q3", "text": PROGRAM,
          "correct": False}],
    )  # fmt: skip
    plain = write_jsonl(
        tmp_path / "plain.jsonl",
        [{"prompt": "Say 1", "completion": "1"}, {"question": QUESTIONS[3], "completion": PROGRAM},
         {"question": QUESTIONS[3]}, {"completion": PROGRAM}],
    )  # fmt: skip
    (tmp_path / "plain.jsonl").write_text(plain.read_text() + "not json\n")
    pairs, skipped = read_pairs([items, samples, plain])
    assert [(p.question, p.prompt, p.solver) for p in pairs] == [
        (QUESTIONS[0], None, "pulp"),
        (QUESTIONS[2], None, "highspy"),  # the run's solver
        (None, "Say 1", None),
        (QUESTIONS[3], None, None),
    ]
    assert skipped["not correct"] == 2
    assert skipped["id 'nope' of benchmark 'bench' is in none of the benchmarks read"] == 1
    assert skipped["not a JSON line"] == 1 and len(skipped) == 5  # + a row without completion, one without a prompt


def test_a_mixed_solver_runs_samples_get_the_instructions_of_the_solver_that_verified_them(tmp_path):
    rows = [
        {"id": "q0", "question": QUESTIONS[0], "answer": 1.0, "solver": "pulp"},
        {"id": "q1", "question": QUESTIONS[1], "answer": 1.0},
    ]
    bench = write_jsonl(tmp_path / "mixed.jsonl", rows)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(f"data:\n  train: {bench}\nsolver:\n  name: highspy\n")
    sample = {"text": PROGRAM, "correct": True}
    named = [{**sample, "problem_id": "q0", "solver": "pulp"}, {**sample, "problem_id": "q1", "solver": "highspy"}]
    older = [{**sample, "problem_id": "q0"}, {**sample, "problem_id": "q1"}]  # rows of a run before rows named it
    samples = write_jsonl(run_dir / "samples.jsonl", [*named, *older])
    pairs, _ = read_pairs([samples])
    assert [(p.question, p.solver) for p in pairs] == [
        (QUESTIONS[0], "pulp"),
        (QUESTIONS[1], "highspy"),
        (QUESTIONS[0], "pulp"),  # the problem names its solver
        (QUESTIONS[1], "highspy"),  # names none: the run's solver.name
    ]


def test_eval_items_without_a_summary_need_a_benchmark(tmp_path):
    items = write_jsonl(tmp_path / "items.jsonl", [{"benchmark": "b", "id": "q0", "completion": PROGRAM,
                                                     "correct": True}])  # fmt: skip
    pairs, skipped = read_pairs([items])
    assert not pairs and "pass --benchmark" in next(iter(skipped))
    bench = write_jsonl(tmp_path / "b.jsonl", [{"id": "q0", "question": QUESTIONS[0], "answer": 6.0}])
    pairs, _ = read_pairs([items], benchmarks=[str(bench)])
    assert [p.question for p in pairs] == [QUESTIONS[0]]


def test_prompts_follow_the_config_and_the_answer_prefix_is_not_trained_on(tiny_model, tmp_path):
    from learner.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model))
    prefix = "```python\nimport pulp\n"
    cfg = load_config(None, [f"model.path={tiny_model}", f"data.answer_prefix={json.dumps(prefix)}"])
    rows = [{"question": QUESTIONS[0], "completion": PROGRAM, "solver": "pulp"},
            {"question": QUESTIONS[1], "completion": "no prefix here"},
            {"question": QUESTIONS[0], "completion": PROGRAM, "solver": "pulp"}]  # fmt: skip
    pairs, _ = read_pairs([write_jsonl(tmp_path / "p.jsonl", rows)])
    examples, skipped = tokenize(pairs, cfg, tokenizer)
    assert skipped == {"completion does not start with data.answer_prefix": 1, "duplicate pair": 1}
    (ex,) = examples
    prompt_text = tokenizer.decode(list(ex.prompt_ids))
    assert prompt_text.endswith(prefix) and "Use PuLP" in prompt_text and QUESTIONS[0] in prompt_text
    assert ex.completion_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(list(ex.completion_ids[:-1])) == PROGRAM.removeprefix(prefix)


# ----------------------------------------------------------------------------------------------- runs


def sft(tiny_model: Path, out: Path, data: Path, name: str, *extra: str) -> int:
    overrides = [f"model.path={tiny_model}", f"run.output_dir={out}", "learner.micro_batch_tokens=512"]
    return main(["--data", str(data), "--name", name, "--batch-size", "2", "--lr", "1e-3", *extra, *overrides])


def untimed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("tokens_per_s", "time_train_s")} for row in rows]


def weights(checkpoint: Path, tiny_model: Path) -> dict[str, torch.Tensor]:
    from learner.checkpoint import load_model_weights
    from learner.models import load_model

    model = load_model(str(tiny_model), dtype="float32")
    load_model_weights(model, checkpoint)
    return {k: v.clone() for k, v in model.state_dict().items()}


def weights_of(tiny_model: Path) -> dict[str, torch.Tensor]:
    from learner.models import load_model

    return {k: v.clone() for k, v in load_model(str(tiny_model), dtype="float32").state_dict().items()}


@pytest.mark.slow
def test_a_resumed_run_continues_exactly_and_its_checkpoint_loads_in_eval_and_init_from(
    tiny_model, pairs_file, tmp_path, capsys
):
    out = tmp_path / "runs"
    assert sft(tiny_model, out, pairs_file, "straight", "--epochs", "2", "--save-every", "2") == 0
    straight = read_jsonl(out / "straight" / "metrics.jsonl")
    assert [r["step"] for r in straight] == [0, 1, 2, 3] and [r["epoch"] for r in straight] == [0, 0, 1, 1]
    assert straight[-1]["loss"] < straight[0]["loss"], "the pairs are learned"

    # killed after step 4's metrics row, before its checkpoint: the resumed run redoes step 4 from step 2's
    assert sft(tiny_model, out, pairs_file, "killed", "--epochs", "2", "--save-every", "2") == 0
    shutil.rmtree(out / "killed" / "checkpoints" / "step_000004")
    assert sft(tiny_model, out, pairs_file, "killed", "--epochs", "2", "--save-every", "2", "--resume") == 0
    assert untimed(read_jsonl(out / "killed" / "metrics.jsonl")) == untimed(straight)
    # a shorter run extended by --resume with more epochs
    assert sft(tiny_model, out, pairs_file, "extended", "--epochs", "1", "--save-every", "2") == 0
    assert sft(tiny_model, out, pairs_file, "extended", "--epochs", "2", "--save-every", "2", "--resume") == 0
    final = weights(out / "straight" / "checkpoints" / "step_000004", tiny_model)
    for name in ("killed", "extended"):
        other = weights(out / name / "checkpoints" / "step_000004", tiny_model)
        assert all(torch.equal(final[k], other[k]) for k in final), name
    capsys.readouterr()

    # engine.eval takes the run (its newest checkpoint in the run's model.path architecture)
    from engine.eval import main as eval_main

    bench = write_jsonl(tmp_path / "bench.jsonl", [{"id": "q0", "question": QUESTIONS[0], "answer": 6.0}])
    result = tmp_path / "eval"
    args = ["--model", str(out / "straight"), "--benchmark", str(bench), "--solver", "pulp", "--quiet"]
    assert eval_main([*args, "--max-new-tokens", "4", "--output", str(result)]) == 0
    assert json.loads((result / "summary.json").read_text())["model"].endswith("step_000004")

    # engine.run --init-from fills a Learner's policy with the same call
    from learner.checkpoint import load_model_weights
    from learner.config import LearnerConfig
    from learner.trainer import Learner

    learner = Learner.from_pretrained(str(tiny_model), LearnerConfig())
    load_model_weights(learner.model, out / "straight" / "checkpoints" / "step_000004")
    assert all(torch.equal(final[k], v) for k, v in learner.model.state_dict().items())


@pytest.mark.slow
def test_sigterm_stops_the_command_with_one_line_and_exit_143_and_resume_continues_exactly(
    tiny_model, pairs_file, tmp_path
):
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "engine.sft", "--data", str(pairs_file), "--name", "stopped", "--batch-size", "2"]
    command += ["--lr", "1e-3", "--save-every", "1", f"model.path={tiny_model}", f"run.output_dir={out}"]
    # 1000 steps: the run is still training when its first checkpoint appears and the signal comes.
    code, err = sigterm_when(
        [*command, "learner.micro_batch_tokens=512", "--epochs", "500"],
        lambda _: latest_checkpoint(out / "stopped" / "checkpoints") is not None,
        what="checkpoint",
        cwd=REPO,
    )
    assert code == 143, err[-2000:]
    assert err.splitlines()[-1] == "terminated: the run keeps its complete checkpoints; continue with --resume"
    assert "Traceback" not in err
    stopped = latest_checkpoint(out / "stopped" / "checkpoints")
    assert stopped is not None and int(stopped.name.removeprefix("step_")) < 10, stopped

    # --resume continues from the newest complete checkpoint, as a run never stopped would have trained
    assert sft(tiny_model, out, pairs_file, "stopped", "--epochs", "5", "--save-every", "1", "--resume") == 0
    assert sft(tiny_model, out, pairs_file, "straight", "--epochs", "5", "--save-every", "1") == 0
    resumed = untimed(read_jsonl(out / "stopped" / "metrics.jsonl"))
    assert [r["step"] for r in resumed] == list(range(10))
    assert resumed == untimed(read_jsonl(out / "straight" / "metrics.jsonl"))


def torchrun(tiny_model: Path, out: Path, data: Path, name: str, *extra: str) -> tuple[int, str, str]:
    """`python -m engine.sft` on 2 CPU ranks (gloo): (exit code, stdout, stderr). A rank left waiting in a
    collective fails the test at the timeout instead of hanging it."""
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = [str(Path(sys.executable).parent / "torchrun"), "--nproc-per-node", "2", "--master-addr", "127.0.0.1"]
    overrides = [f"model.path={tiny_model}", f"run.output_dir={out}", "learner.micro_batch_tokens=512"]
    args = [*launcher, "--master-port", str(port), "-m", "engine.sft", "--data", str(data), "--name", name]
    args += ["--batch-size", "2", "--lr", "1e-3", *extra, *overrides]
    proc = subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, stdout, stderr


@pytest.mark.slow
def test_torchrun_two_ranks_train_and_resume_as_one_process_does_and_rank_0_alone_writes_the_run(
    tiny_model, pairs_file, tmp_path, capsys
):
    out = tmp_path / "runs"
    code, stdout, stderr = torchrun(tiny_model, out, pairs_file, "two", "--epochs", "1", "--save-every", "2")
    assert code == 0, stderr[-3000:]
    # extended by a second epoch: the ranks load their FSDP2 shards and per-rank state from step 2's checkpoint
    code, resumed, stderr = torchrun(
        tiny_model, out, pairs_file, "two", "--epochs", "2", "--save-every", "2", "--resume"
    )
    assert code == 0, stderr[-3000:]
    assert stderr.count("resumed from ") == 1 and "step_000002 at step 2" in stderr, stderr[-3000:]
    lines = stdout.splitlines() + resumed.splitlines()
    steps = [line.split(" |")[0] for line in lines if line.startswith("step ")]
    assert steps == ["step 1/2", "step 2/2", "step 3/4", "step 4/4"]
    assert sum(line.startswith(("pairs: ", "done: ")) for line in lines) == 4, "rank 0 alone reports"
    run = out / "two"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml", "metrics.jsonl", "sft.json"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000002", "step_000004"]
    for r in (0, 1):  # every rank took all 4 optimizer steps
        extra = torch.load(run / "checkpoints" / "step_000004" / f"extra_rank{r}.pt", weights_only=False)
        assert (extra["global_step"], extra["loop_state"], extra["world_size"]) == (4, {"step": 4}, 2)

    # One process on the same pairs, not stopped: the same global batches, so the same steps up to fp32 rounding.
    # The ranks pack their halves apart and sum the gradients in another order; the observed differences (loss
    # ~1e-15, grad norm ~2e-5 relative, weights ~1e-7) are far below the bounds, and the bounds far below what
    # one step moves (loss -0.07 per step, weights 4e-3). AdamW divides each gradient by its own running scale,
    # so an element whose gradient nearly cancels carries its rounding into the weight at up to lr (1e-3) times
    # its relative error: a few such elements may differ by more than 1e-6, never the bulk of a tensor.
    assert sft(tiny_model, out, pairs_file, "one", "--epochs", "2", "--save-every", "2") == 0
    capsys.readouterr()
    two, one = read_jsonl(run / "metrics.jsonl"), read_jsonl(out / "one" / "metrics.jsonl")
    exact = ("step", "epoch", "lr", "pairs", "completion_tokens")
    assert [{k: r[k] for k in exact} for r in two] == [{k: r[k] for k in exact} for r in one]
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=1e-6)
    assert [r["grad_norm"] for r in two] == pytest.approx([r["grad_norm"] for r in one], rel=1e-4)
    final_two = weights(run / "checkpoints" / "step_000004", tiny_model)
    final_one = weights(out / "one" / "checkpoints" / "step_000004", tiny_model)
    initial = weights_of(tiny_model)
    for k in final_one:
        diff = (final_two[k] - final_one[k]).abs()
        assert diff.max().item() <= 2e-5, (k, diff.max().item())
        assert (diff > 1e-6).float().mean().item() <= 1e-3, (k, (diff > 1e-6).sum().item(), diff.numel())
    assert min((final_one[k] - initial[k]).abs().max().item() for k in initial) > 1e-3, "every tensor trained"


# ----------------------------------------------------------------------------------------------- bad input


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_bad_input_is_one_line_and_exit_2_before_anything_is_written(tiny_model, tmp_path, capsys):
    out = tmp_path / "runs"
    assert sft(tiny_model, out, tmp_path / "missing.jsonl", "a") == 2
    assert "missing.jsonl: file not found" in one_error_line(capsys)
    no_fields = write_jsonl(tmp_path / "nofields.jsonl", [{"id": 1}, {"text": "x"}])
    assert sft(tiny_model, out, no_fields, "a") == 2
    assert "no usable (prompt, completion) pair" in one_error_line(capsys)
    wrong = write_jsonl(tmp_path / "wrong.jsonl", [{"question": "q", "completion": PROGRAM, "correct": False}])
    assert sft(tiny_model, out, wrong, "a") == 2
    assert "1 not correct" in one_error_line(capsys)
    # every prompt over the limit: nothing left after filtering
    long = write_jsonl(tmp_path / "long.jsonl", [{"question": QUESTIONS[0], "completion": PROGRAM}])
    assert sft(tiny_model, out, long, "a", "data.max_prompt_tokens=5") == 2
    assert "left after filtering" in one_error_line(capsys)
    assert sft(tiny_model, out, long, "a", "--epochs", "0") == 2
    assert "--epochs must be >= 1" in one_error_line(capsys)
    assert not out.exists()


@pytest.mark.slow
def test_an_existing_run_is_never_overwritten_and_resume_refuses_other_data(tiny_model, pairs_file, tmp_path, capsys):
    out = tmp_path / "runs"
    assert sft(tiny_model, out, pairs_file, "r", "--epochs", "1") == 0
    run = out / "r"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert sft(tiny_model, out, pairs_file, "r", "--epochs", "1") == 2
    assert "already holds a run; pass --resume" in one_error_line(capsys)
    fewer = write_jsonl(tmp_path / "fewer.jsonl", read_jsonl(pairs_file)[:2])
    assert sft(tiny_model, out, fewer, "r", "--epochs", "2", "--resume") == 2
    assert "pairs_digest" in one_error_line(capsys)
    assert sft(tiny_model, out, pairs_file, "never", "--resume") == 2
    assert "holds no SFT run" in one_error_line(capsys)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def one_error_of_all_ranks(code: int, stderr: str) -> str:
    """The one line the ranks of a failed torchrun reported: no traceback of a rank (torchrun's own summary of
    the failure follows), and the first failed rank ended with exit 2, not killed by torchrun."""
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert code != 0 and len(errors) == 1, stderr[-3000:]
    assert not [line for line in stderr.splitlines() if line.startswith("[rank")], stderr[-3000:]
    assert "exitcode  : 2 " in stderr.split("Root Cause")[-1], stderr[-3000:]
    return errors[0]


@pytest.mark.slow
def test_bad_input_under_torchrun_ends_every_rank_with_one_line(tiny_model, pairs_file, tmp_path, capsys):
    out = tmp_path / "runs"
    no_fields = write_jsonl(tmp_path / "nofields.jsonl", [{"id": 1}])
    # every rank reads the data itself, before the process group forms
    code, _, stderr = torchrun(tiny_model, out, no_fields, "a")
    assert "no usable (prompt, completion) pair" in one_error_of_all_ranks(code, stderr)
    assert not out.exists()
    # rank 0 alone looks at the run directory: the other rank must not wait for it in a collective
    assert sft(tiny_model, out, pairs_file, "r", "--epochs", "1") == 0
    capsys.readouterr()
    before = {p: p.read_bytes() for p in (out / "r").rglob("*") if p.is_file()}
    code, _, stderr = torchrun(tiny_model, out, pairs_file, "r", "--epochs", "1")
    assert "already holds a run; pass --resume" in one_error_of_all_ranks(code, stderr)
    # a run of 1 rank resumed by 2: its checkpoints hold per-rank state
    code, _, stderr = torchrun(tiny_model, out, pairs_file, "r", "--epochs", "2", "--resume")
    assert "trained by 1 rank(s), this run has 2" in one_error_of_all_ranks(code, stderr)
    assert {p: p.read_bytes() for p in (out / "r").rglob("*") if p.is_file()} == before
