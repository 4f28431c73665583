"""Faults of the run directory and of the training process (#19 classes 3 and 4).

A full disk (a small tmpfs mounted as the run directory; needs root, skipped otherwise) while a checkpoint or the
records are written: the run stops with one line and exit 1, the records end at a whole row, the last complete
checkpoint loads, and `--resume` continues once there is room. SIGTERM and SIGINT at random points of the steps:
the run exits 143 / 130 with one line, leaves no process behind, its records end at a whole row, and the resumed
run writes the same samples and metrics as an uninterrupted one. The random delays come from EVOM_CHAOS_SEED
when set (a failure names the seed it used).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.records import RunRecorder, StorageError, cut_partial_line, read_jsonl
from engine.run import main
from engine.train import truncate_records
from learner.checkpoint import CheckpointWriteError, latest_checkpoint, load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.chaos  # make test-chaos


# ----- a small disk ------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Callable[[int], Path]]:
    """`small_disk(size_bytes)`: a fresh tmpfs of that size, unmounted when the test ends."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], check=False)


def fill(disk: Path, *, leave: int) -> Path:
    """Take all but about `leave` bytes of `disk`'s free space with a new file; returns it (delete it to free)."""
    filler = disk / f"filler{len(list(disk.glob('filler*')))}"
    free = shutil.disk_usage(disk).free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def assert_whole_rows(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path} ends in an unfinished row: {data[-80:]!r}"
    return [json.loads(line) for line in data.splitlines()]


def test_a_full_disk_leaves_the_records_at_their_last_whole_row(small_disk):
    disk = small_disk(256 * 1024)
    recorder = RunRecorder(disk / "run")
    recorder.sample({"step": 0, "text": "short"})
    recorder.metrics({"step": 0})
    before = {name: (disk / "run" / name).read_bytes() for name in ("samples.jsonl", "metrics.jsonl")}
    fill(disk, leave=8192)
    for i in range(8):  # 8 x 3 KB of samples do not fit in the 8 KB left
        recorder.sample({"step": 1, "i": i, "text": "x" * 3000})
    with pytest.raises(StorageError, match=r"cannot write .*samples\.jsonl: No space left on device"):
        recorder.metrics({"step": 1})
    recorder.sample({"step": 2})  # after a failed write the recorder takes no more rows
    recorder.metrics({"step": 2})
    recorder.close()
    for name, content in before.items():
        assert (disk / "run" / name).read_bytes() == content, f"{name} changed by the failed step"


def test_a_row_a_killed_writer_left_unfinished_is_cut_when_the_run_resumes(tmp_path):
    (tmp_path / "metrics.jsonl").write_bytes(b'{"step": 0}\n{"step": 1}\n{"step": 2, "rew')
    (tmp_path / "samples.jsonl").write_bytes(b'{"step": 0}\n{"step": 1, "text": "par')
    truncate_records(tmp_path, keep_before_step=2)  # was: JSONDecodeError on the unfinished row
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 0}, {"step": 1}]
    assert read_jsonl(tmp_path / "samples.jsonl") == [{"step": 0}]
    (tmp_path / "samples.jsonl").write_bytes(b'{"step": 0}\n{"ste')
    with RunRecorder(tmp_path) as recorder:  # a recorder opening the file cuts it too, then appends
        recorder.sample({"step": 1})
        recorder.metrics({"step": 1})
    assert read_jsonl(tmp_path / "samples.jsonl") == [{"step": 0}, {"step": 1}]
    (tmp_path / "no_newline.jsonl").write_bytes(b'{"step"')
    assert cut_partial_line(tmp_path / "no_newline.jsonl") == 7 and (tmp_path / "no_newline.jsonl").read_bytes() == b""
    assert cut_partial_line(tmp_path / "missing.jsonl") == 0


def test_a_checkpoint_that_does_not_fit_leaves_nothing_and_the_last_one_loads(tiny_model, small_disk):
    from learner.config import LearnerConfig
    from learner.trainer import Learner

    learner = Learner.from_pretrained(str(tiny_model), LearnerConfig(device="cpu"))
    probe = small_disk(64 << 20)
    size = sum(p.stat().st_size for p in save_checkpoint(learner, probe / "c").rglob("*") if p.is_file())
    disk = small_disk(int(size * 1.6))  # room for one checkpoint, not two
    root = disk / "checkpoints"
    save_checkpoint(learner, root / "step_000001", loop_state={"step": 1})
    free = shutil.disk_usage(disk).free
    with pytest.raises(CheckpointWriteError, match=r"cannot write checkpoint .*step_000002: no space left"):
        save_checkpoint(learner, root / "step_000002", loop_state={"step": 2})
    assert sorted(p.name for p in root.iterdir()) == ["step_000001"], "no half checkpoint left behind"
    assert shutil.disk_usage(disk).free == free, "the failed save gave its space back"
    assert latest_checkpoint(root) == root / "step_000001"
    assert load_checkpoint(learner, root / "step_000001") == {"step": 1}
    shutil.rmtree(root / "step_000001")  # room again: the same save goes through
    save_checkpoint(learner, root / "step_000002", loop_state={"step": 2})
    assert load_checkpoint(learner, latest_checkpoint(root)) == {"step": 2}


def test_a_weight_export_that_does_not_fit_stops_the_run_as_a_storage_error(tiny_model, small_disk):
    """The SGLang path exports HF weights each step (generation.backend=sglang: weight_format hf_dir)."""
    from engine.config import load_config
    from engine.train import generator_weights
    from learner.config import LearnerConfig
    from learner.trainer import Learner

    learner = Learner.from_pretrained(str(tiny_model), LearnerConfig(device="cpu"))
    cfg = load_config(None, [f"model.path={tiny_model}", "generation.backend=sglang"])
    disk = small_disk(1 << 20)  # the tiny model's weights take about 6 MB
    with pytest.raises(StorageError, match=r"cannot write weights .*latest: no space left on its file system"):
        generator_weights(cfg, learner, disk / "t")


def overrides(model: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"model.path={model}",
        f"run.output_dir={out}",
        "run.name=t",
        "run.save_every=1",
        "run.keep_checkpoints=0",
        "rollout.prompts_per_step=2",
        "rollout.group_size=2",
        "generation.sampling.max_new_tokens=12",
        "sandbox.workers=1",
        "data.num_problems=8",
        "learner.lr=1e-3",
        *extra,
    ]


@pytest.mark.slow
def test_a_run_whose_checkpoint_fills_the_disk_stops_in_one_line_and_resumes_once_there_is_room(
    tiny_model, small_disk, capsys
):
    disk = small_disk(96 << 20)
    run_dir = disk / "t"
    assert main(["--quiet", *overrides(tiny_model, disk, "run.steps=1")]) == 0
    capsys.readouterr()
    first = run_dir / "checkpoints" / "step_000001"
    size = sum(p.stat().st_size for p in first.rglob("*") if p.is_file())
    fill(disk, leave=size // 2)  # step 1's rows fit, its checkpoint does not

    assert main(["--quiet", "--resume", *overrides(tiny_model, disk, "run.steps=3")]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        f"error: cannot write checkpoint {run_dir / 'checkpoints' / 'step_000002'}: no space left on its file "
        "system; the run stopped and its newest complete checkpoint is step_000001: free space, then continue "
        "with --resume"
    ), err[-2000:]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_000001"]
    # Step 2's batch had started generating: its unfinished rows are marked, and dropped by --resume.
    metrics = assert_whole_rows(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics if not m.get("interrupted")] == [0, 1]
    assert {s["step"] for s in assert_whole_rows(run_dir / "samples.jsonl")} <= {0, 1, 2}
    from learner.checkpoint import load_model_weights
    from learner.models import load_model

    load_model_weights(load_model(str(tiny_model)), first)  # the last complete checkpoint still loads

    fill(disk, leave=0)  # resuming on a full disk stops at once, in one line, and changes nothing
    records = {name: (run_dir / name).read_bytes() for name in ("metrics.jsonl", "samples.jsonl", "config.yaml")}
    assert main(["--quiet", "--resume", *overrides(tiny_model, disk, "run.steps=3")]) == 1
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: cannot ")
    assert {name: (run_dir / name).read_bytes() for name in records} == records

    for path in disk.glob("filler*"):
        path.unlink()
    assert main(["--quiet", "--resume", *overrides(tiny_model, disk, "run.steps=3")]) == 0, capsys.readouterr().err
    assert [m["step"] for m in assert_whole_rows(run_dir / "metrics.jsonl")] == [0, 1, 2]
    samples = assert_whole_rows(run_dir / "samples.jsonl")
    assert sorted(s["step"] for s in samples) == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2], "step 1 redone, not doubled"


# ----- SIGTERM and SIGINT ---------------------------------------------------------------------------------


# What a step's records depend on besides the clock: equal in a resumed and an uninterrupted run.
SAMPLE_KEYS = ("step", "problem_id", "group_id", "sample_index", "text", "status", "reward", "weight_version")
METRIC_KEYS = ("step", "reward_mean", "accuracy", "groups_kept", "samples_trained", "train/loss", "train/grad_norm")


def _records(run_dir: Path) -> tuple[list[tuple], list[tuple]]:
    samples = sorted(tuple(s[k] for k in SAMPLE_KEYS) for s in assert_whole_rows(run_dir / "samples.jsonl"))
    metrics = [tuple(m.get(k) for k in METRIC_KEYS) for m in assert_whole_rows(run_dir / "metrics.jsonl")]
    return samples, metrics


def _session_processes(sid: int) -> list[int]:
    """Live processes of session `sid` (the run was started in a session of its own)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(entry))
    return pids


def _checkpoints(run_dir: Path) -> int:
    root = run_dir / "checkpoints"
    return sum((p / "COMPLETE").is_file() for p in root.iterdir()) if root.is_dir() else 0


@pytest.mark.slow
def test_sigterm_and_sigint_at_random_points_then_resume_give_the_uninterrupted_run(tiny_model, tmp_path):
    seed = int(os.environ.get("EVOM_CHAOS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    # Sampling at T = 1 with a seed and weight decay moving the weights every step: each step's texts depend on
    # the weights, the optimizer state and the round seeds before it.
    extra = ("run.steps=4", "learner.weight_decay=1.0", "generation.sampling.temperature=1.0", "run.seed=3")
    base = [sys.executable, "-m", "engine.run", "--quiet"]
    whole = subprocess.run(
        [*base, *overrides(tiny_model, tmp_path, *extra, "run.name=whole")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert whole.returncode == 0, whole.stderr[-2000:]
    marks = [(tmp_path / "whole" / "checkpoints" / f"step_{k:06d}" / "COMPLETE").stat().st_mtime for k in (1, 4)]
    step_s = (marks[1] - marks[0]) / 3

    run_dir, args = tmp_path / "t", [*base, *overrides(tiny_model, tmp_path, *extra)]
    stops = []
    for i, sig in enumerate((signal.SIGTERM, signal.SIGINT)):
        proc = subprocess.Popen(
            [*args, *(["--resume"] if i else [])],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            # Signal at a random moment of the step after the next checkpoint: anywhere in generation,
            # verification, the update, the weight sync, the records or the next save.
            wait_for, deadline = _checkpoints(run_dir) + 1, time.monotonic() + 300
            while _checkpoints(run_dir) < wait_for and proc.poll() is None:
                assert time.monotonic() < deadline, f"no checkpoint within 300 s (seed {seed})"
                time.sleep(0.02)
            delay = rng.uniform(0, step_s)
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(sig)
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        stops.append((sig.name, round(delay, 2), proc.returncode))
        context = f"seed {seed}, stops {stops}: {err[-2000:]}"
        if proc.returncode == 0:  # the run finished before the signal came
            break
        code, word = (143, "terminated") if sig == signal.SIGTERM else (130, "interrupted")
        assert proc.returncode == code, context
        assert err.splitlines()[-1] == f"{word}: the run directory keeps every finished step; continue with --resume"
        assert _session_processes(proc.pid) == [], f"processes left behind ({context})"
        for name in ("metrics.jsonl", "samples.jsonl"):
            assert_whole_rows(run_dir / name)
        assert latest_checkpoint(run_dir / "checkpoints") is not None
    if stops[-1][2] != 0:
        done = subprocess.run([*args, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]

    print(f"seed {seed}: (signal, delay after a checkpoint in s, exit code) {stops}, a step takes about {step_s:.2f} s")
    samples, metrics = _records(run_dir)
    expected_samples, expected_metrics = _records(tmp_path / "whole")
    assert [m[0] for m in metrics] == [0, 1, 2, 3], f"seed {seed}, stops {stops}"
    assert samples == expected_samples, f"seed {seed}, stops {stops}"
    assert metrics == expected_metrics, f"seed {seed}, stops {stops}"


def test_sigterm_unwinds_a_coroutine_like_ctrl_c(tmp_path):
    """engine.cli.terminable: SIGTERM cancels the awaited work, its `finally` runs, and Terminated is raised."""
    from engine.cli import EXIT_TERMINATED, Terminated, exit_code, terminable

    cleaned = tmp_path / "cleaned"

    async def work() -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(30)
            return 0
        finally:
            cleaned.touch()

    with pytest.raises(Terminated):
        asyncio.run(terminable(work()))
    assert cleaned.exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, "the handler is removed afterwards"
    assert exit_code(lambda: asyncio.run(terminable(work())), interrupted="nothing") == EXIT_TERMINATED
