"""Benchmark loading (counts against PROVENANCE.md, bad rows with line numbers, missing files, the hub error
path, the hub split), the training order, and the `python -m engine.data` command line."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from pathlib import Path

import pytest

from engine.config import DataConfig
from engine.data import (
    BenchmarkNotFound,
    DataError,
    batch_at,
    epoch_order,
    generate_problems,
    iter_batches,
    known_benchmarks,
    load_benchmark,
    load_eval,
    load_hf_dataset,
    load_train,
    read_benchmark,
)
from engine.data.__main__ import main, write_atomic
from engine.data.benchmarks import _pick_file, parse_text
from engine.data.stream import ProblemStream

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / ".." / "shared" / "data" / "benchmarks"
needs_benchmarks = pytest.mark.skipif(
    not (BENCHMARKS / "PROVENANCE.md").is_file(),
    reason=f"benchmark folder {BENCHMARKS} is absent (it lives beside the repo)",
)


def _provenance_counts() -> dict[str, tuple[int, int]]:
    """file -> (items, numeric) from the table in PROVENANCE.md."""
    counts = {}
    for line in (BENCHMARKS / "PROVENANCE.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| (\S+\.jsonl) \| (\d+) (?:\((\d+) / (\d+)\)|\(all with answers)", line)
        if m:
            items = int(m.group(2))
            counts[m.group(1)] = (items, int(m.group(3)) if m.group(3) else items)
    return counts


@needs_benchmarks
def test_every_benchmark_file_loads_with_the_counts_provenance_states():
    counts = _provenance_counts()
    assert len(counts) == 23
    assert sorted(counts) == sorted(p.name for p in BENCHMARKS.glob("*.jsonl"))
    for name, (items, numeric) in counts.items():
        bench = read_benchmark(BENCHMARKS / name)
        assert bench.report.ok, bench.report.bad_lines()
        assert (bench.report.loaded, bench.report.numeric) == (items, numeric), name
        assert all(p.question.strip() for p in bench.problems)


@needs_benchmarks
def test_short_names_resolve_against_the_benchmark_dir_and_keep_extra_fields():
    bench = load_benchmark("nl4opt_clean_llmopt", benchmarks_dir=BENCHMARKS)
    assert bench.name == "nl4opt_clean_llmopt" and len(bench.problems) == 230
    assert bench.problems[0].benchmark == "NL4OPT" and bench.problems[0].id == "nl4opt_clean_llmopt-0"
    refs = load_benchmark("reference_programs", benchmarks_dir=BENCHMARKS)
    assert "import gurobipy" in refs.problems[0].meta["code"]
    assert "nl4opt_clean_sirl" in known_benchmarks(BENCHMARKS)


def test_bad_rows_are_skipped_and_reported_with_their_line_numbers(tmp_path: Path):
    rows = [
        '{"id": "a", "question": "max x s.t. x <= 3", "answer": 3}',
        '{"id": "b", "question": "broken", "answer": 1',
        "",
        '{"id": "c", "answer": 2}',
        '{"id": "d", "question": "   ", "answer": 2}',
        '{"id": "e", "question": "q", "answer": "twelve"}',
        '{"id": "f", "question": "q", "answer": true}',
        '{"id": "a", "question": "again", "answer": 4}',
        '{"id": "g", "question": "infeasible one", "answer": null}',
        '{"id": "h", "question": "string number", "answer": "2.5"}',
        '{"id": "i", "question": "no answer field"}',
        "[1, 2]",
        '{"id": "j", "question": "q", "answer": NaN}',
        '{"id": "k", "en_question": "hub-style fields", "en_answer": "No Best Solution"}',
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    bench = read_benchmark(path)
    assert [(p.id, p.answer) for p in bench.problems] == [("a", 3.0), ("g", None), ("h", 2.5), ("k", None)]
    assert [b.line for b in bench.report.bad] == [2, 4, 5, 6, 7, 8, 11, 12, 13]
    reasons = dict((b.line, b.reason) for b in bench.report.bad)
    assert reasons[2].startswith("not valid JSON")
    assert reasons[4] == reasons[5] == "missing or empty 'question'"
    assert "'twelve' is not a number" in reasons[6]
    assert reasons[8] == "duplicate id 'a'"
    assert "no 'answer' field" in reasons[11]
    assert "'answer' must be a finite number" in reasons[7] and reasons[13].endswith("got nan")
    assert bench.report.rows == 13 and bench.report.null == 2
    assert bench.report.bad_lines()[0] == f"{path}:2: {reasons[2]}"


def test_missing_files_and_unknown_names_say_what_was_looked_for(tmp_path: Path, monkeypatch):
    with pytest.raises(BenchmarkNotFound, match=re.escape(str(tmp_path / "nope.jsonl"))):
        load_benchmark(str(tmp_path / "nope.jsonl"))
    (tmp_path / "alpha.jsonl").write_text('{"id": "1", "question": "q", "answer": 1}\n', encoding="utf-8")
    (tmp_path / "beta.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(BenchmarkNotFound, match=r"no benchmark named 'gamma'.*known names: \['alpha', 'beta'\]"):
        load_benchmark("gamma", benchmarks_dir=tmp_path)
    monkeypatch.setenv("EVOM_BENCHMARKS", str(tmp_path))
    assert load_benchmark("alpha").problems[0].answer == 1.0
    assert load_benchmark("alpha.jsonl").problems[0].id == "1"  # a bare file name also resolves in the folder
    with pytest.raises(BenchmarkNotFound, match=r"benchmark file not found: sub/alpha\.jsonl"):
        load_benchmark("sub/alpha.jsonl")
    assert load_benchmark("beta").report.loaded == 0


def test_an_unreachable_hub_is_a_clear_error_that_says_to_pass_a_path():
    with pytest.raises(DataError, match=r"could not read Hugging Face dataset 'org/set' .*local JSONL path"):
        load_hf_dataset("org/set", endpoint="http://127.0.0.1:9")


def test_a_json_array_file_parses_like_jsonl_with_item_numbers():
    content = json.dumps(
        [
            {"id": 1, "en_question": "q1", "en_answer": "12.5"},
            {"id": 2, "en_question": "", "en_answer": "3"},
            {"id": 3, "en_question": "q3", "en_answer": "No Best Solution"},
        ]
    )
    bench = parse_text(content, source="hf:o/d/test.json", name="o/d")
    assert [(p.id, p.answer) for p in bench.problems] == [("1", 12.5), ("3", None)]
    assert bench.report.bad_lines() == ["hf:o/d/test.json:2: missing or empty 'question'"]
    with pytest.raises(DataError, match="is not valid JSON"):
        parse_text("[{", source="x.json", name="x")


def test_hub_file_choice_prefers_the_split_and_refuses_parquet():
    assert _pick_file("o/d", ["README.md", "train.jsonl", "test.jsonl"], "test") == "test.jsonl"
    assert _pick_file("o/d", ["data/all.json"], "test") == "data/all.json"
    with pytest.raises(DataError, match="parquet, which needs pyarrow"):
        _pick_file("o/d", ["data/test-00000.parquet"], "test")
    with pytest.raises(DataError, match="several JSON files"):
        _pick_file("o/d", ["a.jsonl", "b.jsonl"], "test")


def test_load_train_and_eval_follow_the_data_config(tmp_path: Path):
    gen = load_train(DataConfig(num_problems=9, families=["knapsack", "diet"], difficulty="easy", seed=3))
    assert gen.report.loaded == 9 and {p.family for p in gen.problems} == {"knapsack", "diet"}
    path = tmp_path / "train.jsonl"
    write_atomic(path, (p.to_json() for p in gen.problems))
    from_file = load_train(DataConfig(train=str(path), eval=[str(path)]))
    assert [p.to_row() for p in from_file.problems] == [
        {**p.to_row(), "meta": {**p.meta, "answer_raw": p.to_row()["answer_raw"]}} for p in gen.problems
    ]
    assert [b.report.loaded for b in load_eval(DataConfig(eval=[str(path), str(path)]))] == [9, 9]


HUB_REPO, HUB_SHA = "evom-test/tiny", "a" * 40
HUB_FILES = {
    "train.jsonl": b'{"id": "t1", "question": "Minimise x with x >= 1.", "answer": 1}\n',
    "validation.jsonl": b'{"id": "v1", "question": "Minimise x with x >= 2.", "answer": 2}\n',
}


class _Hub(BaseHTTPRequestHandler):
    """The two Hugging Face hub routes `load_hf_dataset` reads (dataset info, file resolve) for HUB_REPO: the hub
    cannot be reached from the test machine, and its client runs for real against this."""

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        resolve = f"/datasets/{HUB_REPO}/resolve/main/"
        if path == f"/api/datasets/{HUB_REPO}":
            siblings = [{"rfilename": name} for name in HUB_FILES]
            self._send(json.dumps({"id": HUB_REPO, "sha": HUB_SHA, "siblings": siblings}).encode())
        elif path.startswith(resolve) and path.removeprefix(resolve) in HUB_FILES:
            body = HUB_FILES[path.removeprefix(resolve)]
            self._send(body, {"X-Repo-Commit": HUB_SHA, "ETag": f'"{hashlib.sha256(body).hexdigest()}"'})
        else:
            self.send_error(404)

    do_HEAD = do_GET

    def _send(self, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_data_hf_split_picks_the_hub_file_for_training_and_eval(tmp_path: Path):
    """`data.hf_split` reaches the hub loader: the default split ("test") matches neither file, so an ignored
    split fails with "several JSON files"."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code = (
        "from engine.config import DataConfig; from engine.data import load_eval, load_train\n"
        "train = load_train(DataConfig(train='hf:evom-test/tiny', hf_split='validation'))\n"
        "evals = load_eval(DataConfig(eval=['evom-test/tiny'], hf_split='train'))\n"
        "print([p.id for p in train.problems], [p.id for b in evals for p in b.problems])"
    )
    # The hub client reads its endpoint and cache folder from the environment when it is imported.
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_HUB_CACHE": str(tmp_path)}
    env.pop("HF_HUB_OFFLINE", None)
    try:
        run = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
        )
    finally:
        server.shutdown()
        server.server_close()
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[0] == "['v1'] ['t1']"


def test_batches_are_a_pure_function_of_seed_and_step_and_cover_each_epoch():
    items = list(range(10))
    first = list(islice(iter_batches(items, 5, seed=1), 4))
    assert first == list(islice(iter_batches(items, 5, seed=1), 4))
    assert sorted(first[0] + first[1]) == items and sorted(first[2] + first[3]) == items
    assert first[0] + first[1] != first[2] + first[3]  # a new shuffle each epoch
    assert list(islice(iter_batches(items, 5, seed=1, start_step=2), 2)) == first[2:]
    assert first[0] + first[1] != [items[i] for i in epoch_order(10, seed=2, epoch=0)]
    threes = list(islice(iter_batches(items, 3, seed=1), 4))  # 4 steps per epoch, the last one wraps around
    assert sorted({x for b in threes for x in b}) == items and all(len(set(b)) == 3 for b in threes)
    ranks = [batch_at(items, 2, 3, seed=1, rank=r, world_size=3) for r in range(3)]
    assert len({x for b in ranks for x in b}) == 6  # the ranks of one step share nothing
    with pytest.raises(ValueError, match="rank must be in"):
        batch_at(items, 2, 0, seed=1, rank=3, world_size=3)
    with pytest.raises(DataError, match="empty"):
        next(iter_batches([], 2, seed=0))


def test_an_empty_training_set_is_a_data_error_that_names_data_train(tmp_path: Path):
    """DataError, so `engine.run data.train=<an empty file>` ends in one line and exit 2, not a traceback."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"id": "x", "answer": 1.0}\n')  # its one row has no question
    with pytest.raises(DataError, match=rf"no usable problems \({re.escape(str(empty))}: 0 problems .* 1 bad rows"):
        load_train(DataConfig(train=str(empty)))
    with pytest.raises(DataError, match=r"no usable problems \(generated: 0 problems"):
        load_train(DataConfig(num_problems=0))
    with pytest.raises(DataError, match=r"at least one problem; check data\.train"):
        ProblemStream([], seed=0)


def test_cli_generate_is_atomic_and_reproducible_and_check_reports(tmp_path: Path, capsys):
    out1, out2 = tmp_path / "a.jsonl", tmp_path / "sub" / "b.jsonl"
    args = [
        "generate",
        "--family",
        "knapsack,staffing",
        "--family",
        "facility",
        "--difficulty",
        "medium",
        "--n",
        "6",
        "--seed",
        "4",
    ]
    assert main([*args, "--output", str(out1)]) == 0
    assert main([*args, "--output", str(out2)]) == 0
    assert out1.read_bytes() == out2.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "sub"]  # no temporary file left
    rows = [json.loads(line) for line in out1.read_text(encoding="utf-8").splitlines()]
    assert [r["family"] for r in rows] == ["knapsack", "staffing", "facility"] * 2
    assert [r["question"] for r in rows] == [
        p.question
        for p in generate_problems(6, families=["knapsack", "staffing", "facility"], difficulty="medium", seed=4)
    ]
    capsys.readouterr()
    assert main(["check", str(out1)]) == 0
    assert "6 problems" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text(out1.read_text(encoding="utf-8") + '{"id": "x", "answer": 1}\n', encoding="utf-8")
    assert main(["check", str(bad)]) == 1
    assert f"bad row: {bad}:7: missing or empty 'question'" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "missing.jsonl")]) == 2
    assert "benchmark file not found" in capsys.readouterr().err
    assert main(["show", "--family", "knapsack", "--n", "2", "--seed", "4"]) == 0
    shown = capsys.readouterr().out
    assert shown.count("== gen-knapsack-easy-s4-") == 2 and "answer: " in shown
    assert main(["generate", "--family", "nope", "--n", "1", "--output", str(tmp_path / "c.jsonl")]) == 2
    assert "unknown problem family 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "c.jsonl").exists()


def test_write_atomic_leaves_nothing_when_writing_fails(tmp_path: Path):
    def lines():
        yield "one"
        raise RuntimeError("generation failed")

    target = tmp_path / "out.jsonl"
    target.write_text("old\n", encoding="utf-8")
    with pytest.raises(RuntimeError):
        write_atomic(target, lines())
    assert target.read_text(encoding="utf-8") == "old\n"  # the previous file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_module_entry_point_matches_in_process_bytes_under_another_hash_seed(tmp_path: Path):
    out = tmp_path / "sub.jsonl"
    cmd = [sys.executable, "-m", "engine.data", "generate", "--n", "7", "--seed", "9", "--difficulty", "hard",
           "--infeasible-rate", "0.3", "--output", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # set and dict order must not leak into the problems
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    here = "".join(p.to_json() + "\n" for p in generate_problems(7, difficulty="hard", seed=9, infeasible_rate=0.3))
    assert out.read_text(encoding="utf-8") == here
    missing = subprocess.run(
        [sys.executable, "-m", "engine.data", "check", str(tmp_path / "none.jsonl")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "error: benchmark file not found" in missing.stderr
    assert "Traceback" not in missing.stderr
