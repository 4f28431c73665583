"""Benchmark loading: JSONL files (by path or short name) and Hugging Face datasets, bad rows reported.

    bench = load_benchmark("nl4opt_clean_llmopt")            # <benchmarks dir>/nl4opt_clean_llmopt.jsonl
    bench = load_benchmark("data/mine.jsonl")                # a path
    bench = load_benchmark("hf:CardinalOperations/NL4OPT")   # a Hugging Face dataset (JSON/JSONL files only)
    print(bench.report.summary()); bench.problems            # tuple[Problem, ...]

Rows follow the schema of `shared/data/benchmarks/PROVENANCE.md`: `{"id", "question", "answer": float | null,
...}`. A row that is not JSON, has no question, has an answer that is not a finite number or null, or
repeats an id is skipped and recorded in `report.bad` with its line number. Top-level fields beyond the
schema (e.g. `code` in reference_programs.jsonl) are kept in `Problem.meta`. Hugging Face-style field names
`en_question` / `en_answer` are accepted, and so is an answer written as a numeric string or as one of
`NO_OPTIMUM_WORDS` ("No Best Solution", "infeasible", ...), which means null. Numeric sentinels such as
-99999 are kept as numbers: whether they mean "no optimum" depends on the source (see PROVENANCE.md).
The row reading (one JSON object a line, bad rows kept with their line numbers, the answer check) is
`solvers.rows`, which `python -m solvers verify` reads its input with too.

A row may name its solver (`"solver": "pulp"`, a name of `python -m solvers list`; null or absent: the run's
solver). Unlike the row problems above, a solver name that is not registered (or not a string) fails the whole
load with a DataError naming the line: such a file was written for another setup, and skipping its rows would
silently train on a different mix of solvers.

Short names resolve against, in order: the `benchmarks_dir` argument, `$EVOM_BENCHMARKS`, and the
`shared/data/benchmarks/` folder beside the repository checkout.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.data.problem import Problem
from solvers.registry import solver_names
from solvers.rows import BadRow, RowError, check_answer, read_rows

ENV_DIR = "EVOM_BENCHMARKS"
_HUB_TIMEOUT_S = 15.0
# Strings some sources (e.g. the Hugging Face copies of NL4OPT) write instead of null for "no optimum".
NO_OPTIMUM_WORDS = frozenset({"no best solution", "no solution", "infeasible", "unbounded", "none", "null"})
_SHARED_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "benchmarks"
_SCHEMA_KEYS = {
    "id",
    "benchmark",
    "question",
    "en_question",
    "answer",
    "en_answer",
    "meta",
    "family",
    "difficulty",
    "solver",
}


class DataError(ValueError):
    """Bad data input (missing file, unreadable dataset); the message says what and what to do."""


class BenchmarkNotFound(DataError, FileNotFoundError):
    pass


@dataclass(frozen=True, kw_only=True)
class LoadReport:
    source: str
    rows: int  # non-blank lines read
    loaded: int
    numeric: int  # loaded problems with an optimum
    bad: tuple[BadRow, ...]

    @property
    def ok(self) -> bool:
        return not self.bad

    @property
    def null(self) -> int:
        return self.loaded - self.numeric

    def summary(self) -> str:
        return (
            f"{self.source}: {self.loaded} problems ({self.numeric} with an optimum, {self.null} without), "
            f"{len(self.bad)} bad rows skipped"
        )

    def bad_lines(self) -> list[str]:
        return [f"{self.source}:{b.line}: {b.reason}" for b in self.bad]


@dataclass(frozen=True, kw_only=True)
class Benchmark:
    name: str
    problems: tuple[Problem, ...]
    report: LoadReport


def find_benchmarks_dir(explicit: str | Path | None = None) -> Path | None:
    """The folder short names resolve against, or None when there is none."""
    for candidate in (explicit, os.environ.get(ENV_DIR) or None, _SHARED_DIR):
        if candidate is not None and Path(candidate).is_dir():
            return Path(candidate).resolve()
    return None


def known_benchmarks(benchmarks_dir: str | Path | None = None) -> list[str]:
    d = find_benchmarks_dir(benchmarks_dir)
    return sorted(p.stem for p in d.glob("*.jsonl")) if d else []


def resolve_benchmark(spec: str, benchmarks_dir: str | Path | None = None) -> Path:
    """The JSONL file a path or short name (`nl4opt` or `nl4opt.jsonl`) refers to.

    A spec with a directory part is a path; a bare name that is not a file here is looked up in the
    benchmark folder. BenchmarkNotFound says what was looked for.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise BenchmarkNotFound(f"benchmark {spec!r} is a directory; pass a .jsonl file inside it")
    if "/" in spec or os.sep in spec or spec.startswith("~"):
        raise BenchmarkNotFound(f"benchmark file not found: {path}")
    d = find_benchmarks_dir(benchmarks_dir)
    if d is None:
        raise BenchmarkNotFound(
            f"benchmark {spec!r} is neither a file nor a known name: no benchmark folder found; pass a path, "
            f"set ${ENV_DIR}, or give the folder explicitly"
        )
    candidate = d / f"{spec.removesuffix('.jsonl')}.jsonl"
    if not candidate.is_file():
        raise BenchmarkNotFound(
            f"no benchmark named {spec!r} (looked for {candidate}); known names: {known_benchmarks(d)}"
        )
    return candidate


def load_benchmark(spec: str, *, benchmarks_dir: str | Path | None = None, split: str = "test") -> Benchmark:
    """A path, a short name, or a Hugging Face dataset: `hf:owner/name`, or a bare `owner/name` that is not
    a local path (exactly one slash, no .json/.jsonl suffix)."""
    if spec.startswith("hf:"):
        return load_hf_dataset(spec[3:], split=split)
    if _looks_like_hub_name(spec) and not Path(spec).exists():
        return load_hf_dataset(spec, split=split)
    return read_benchmark(resolve_benchmark(spec, benchmarks_dir))


def read_benchmark(path: str | Path) -> Benchmark:
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as f:
            return parse_rows(enumerate(f, 1), source=str(path), name=path.stem)
    except FileNotFoundError:
        raise BenchmarkNotFound(f"benchmark file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e}); benchmark files are JSONL") from None


def parse_rows(lines: Iterable[tuple[int, str]], *, source: str, name: str) -> Benchmark:
    """Problems from numbered JSONL lines; every bad row is skipped and reported with its line. A `solver` value
    that names no registered solver is a DataError (see the module docstring)."""
    seen: set[str] = set()
    known = frozenset(solver_names())
    unknown: list[str] = []

    def parse(row: dict[str, Any], line_no: int) -> Problem:
        problem = _problem(row, line_no=line_no, source=source, name=name)
        if problem.id in seen:
            raise RowError(f"duplicate id {problem.id!r}")
        seen.add(problem.id)
        solver = row.get("solver")
        if solver is not None and (not isinstance(solver, str) or solver not in known):
            unknown.append(f"{source}:{line_no}: solver {solver!r}")
        return problem

    problems, bad = read_rows(lines, parse)
    if unknown:
        more = f" (and {len(unknown) - 1} more rows)" if len(unknown) > 1 else ""
        raise DataError(f"{unknown[0]} is not a known solver{more}; valid solvers: {', '.join(sorted(known))}")
    report = LoadReport(
        source=source,
        rows=len(problems) + len(bad),
        loaded=len(problems),
        numeric=sum(p.answer is not None for p in problems),
        bad=tuple(bad),
    )
    return Benchmark(name=name, problems=tuple(problems), report=report)


def _problem(row: dict[str, Any], *, line_no: int, source: str, name: str) -> Problem:
    question = row.get("question", row.get("en_question"))
    if not isinstance(question, str) or not question.strip():
        raise RowError("missing or empty 'question'")
    if "answer" not in row and "en_answer" not in row:
        raise RowError("no 'answer' field (use null for a problem without an optimum)")
    answer = _answer(row.get("answer", row.get("en_answer")))
    meta = dict(row["meta"]) if isinstance(row.get("meta"), dict) else {}
    for key, value in row.items():
        if key not in _SCHEMA_KEYS:
            meta.setdefault(key, value)
    difficulty = row.get("difficulty", meta.get("difficulty"))
    return Problem(
        id=str(row["id"]) if row.get("id") is not None else f"{name}-line{line_no}",
        question=question,
        answer=answer,
        source=source,
        benchmark=row["benchmark"] if isinstance(row.get("benchmark"), str) else name,
        family=row["family"] if isinstance(row.get("family"), str) else None,
        difficulty=difficulty if isinstance(difficulty, str) else None,
        solver=row["solver"] if isinstance(row.get("solver"), str) else None,
        meta=meta,
    )


def _answer(value: Any) -> float | None:
    """The shared answer check, after the spellings some sources use: numeric strings, and words for null."""
    if isinstance(value, str):
        if value.strip().lower() in NO_OPTIMUM_WORDS:
            return None
        try:
            value = float(value.strip())
        except ValueError:
            raise RowError(f"answer {value!r} is not a number (use null for no optimum)") from None
    return check_answer(value)


def _looks_like_hub_name(spec: str) -> bool:
    return spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not spec.endswith((".jsonl", ".json"))


def load_hf_dataset(
    name: str, *, split: str = "test", endpoint: str | None = None, revision: str | None = None
) -> Benchmark:
    """A Hugging Face dataset made of JSON/JSONL files: picks the file for `split` and parses it as above.

    Only the hub client is used (no `datasets` package): parquet-only datasets need pyarrow, which this
    project does not install, so they fail with a message that says to convert them and pass a path.
    """
    try:
        from huggingface_hub import HfApi, hf_hub_download
    except ImportError:
        raise DataError(
            f"loading {name!r} from Hugging Face needs huggingface_hub (pip install huggingface_hub); "
            f"or download the file and pass its local JSONL path"
        ) from None
    try:
        # dataset_info makes one request (list_repo_files retries for ~25 s when the hub is unreachable).
        info = HfApi(endpoint=endpoint).dataset_info(name, revision=revision, timeout=_HUB_TIMEOUT_S)
        files = [s.rfilename for s in info.siblings or []]
    except Exception as e:  # offline, DNS, HTTP 401/404: all mean "cannot use the hub for this name"
        raise DataError(
            f"could not read Hugging Face dataset {name!r} ({type(e).__name__}: {_first_line(e)}); "
            f"download it and pass a local JSONL path instead"
        ) from None
    filename = _pick_file(name, files, split)
    try:
        local = hf_hub_download(name, filename, repo_type="dataset", revision=revision, endpoint=endpoint)
    except Exception as e:
        raise DataError(
            f"could not download {filename!r} of Hugging Face dataset {name!r} "
            f"({type(e).__name__}: {_first_line(e)}); pass a local JSONL path instead"
        ) from None
    with open(local, encoding="utf-8") as f:
        return parse_text(f.read(), source=f"hf:{name}/{filename}", name=name)


def parse_text(content: str, *, source: str, name: str) -> Benchmark:
    """JSON Lines, or one JSON array of rows (as some hub datasets ship; rows are then numbered from 1)."""
    if content.lstrip().startswith("["):
        try:
            items = json.loads(content)
        except json.JSONDecodeError as e:
            raise DataError(f"{source} is not valid JSON ({e}); pass a local JSONL path instead") from None
        return parse_rows(((i, json.dumps(r)) for i, r in enumerate(items, 1)), source=source, name=name)
    return parse_rows(enumerate(content.splitlines(), 1), source=source, name=name)


def _pick_file(name: str, files: list[str], split: str) -> str:
    data = [f for f in files if f.endswith((".jsonl", ".json")) and not f.endswith("dataset_infos.json")]
    named = sorted(f for f in data if split in Path(f).name)
    if named:
        return named[0]
    if len(data) == 1:
        return data[0]
    if data:
        raise DataError(
            f"Hugging Face dataset {name!r} has several JSON files and none is named for split "
            f"{split!r}: {sorted(data)}; pass split=... or a local path"
        )
    if any(f.endswith(".parquet") for f in files):
        raise DataError(
            f"Hugging Face dataset {name!r} is stored as parquet, which needs pyarrow (not installed); "
            f"convert it to JSONL and pass the local path"
        )
    raise DataError(
        f"Hugging Face dataset {name!r} has no JSON/JSONL data files ({len(files)} files); pass a local JSONL path"
    )


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]
