"""The run directory's JSONL records: `samples.jsonl` (every completion) and `metrics.jsonl` (one row per step).

    with RunRecorder(run_dir) as recorder:
        recorder.sample({"problem_id": "p1", "text": "...", "status": "correct", "reward": 1.0, ...})
        recorder.metrics({"step": 0, "reward_mean": 0.4, ...})      # writes the row and flushes both files

Rows are appended (a resumed run continues its files). Samples are buffered and reach the disk with the
step's metrics row, or on `flush()` / `close()`, so a killed step loses at most its own samples. orjson
serialises when it is installed (several times faster on large rows), the standard json module otherwise;
either way non-finite floats are written as null, so every line is strict JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

try:
    import orjson
except ImportError:  # optional speed-up
    orjson = None

SAMPLES_FILE = "samples.jsonl"
METRICS_FILE = "metrics.jsonl"


def dumps(row: Mapping[str, Any]) -> bytes:
    """One JSON line (with its newline). Non-finite floats become null; unknown objects their str()."""
    if orjson is not None:
        return orjson.dumps(row, default=str, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS)
    return (json.dumps(_finite(row), default=str, ensure_ascii=False, allow_nan=False) + "\n").encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every row of a JSONL file (for reports and tests)."""
    with open(path, "rb") as f:
        return [json.loads(line) for line in f if line.strip()]


class RunRecorder:
    """Appends sample and metrics rows under `run_dir`. Close it (or use `with`) to flush what is buffered."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.samples_path = self.run_dir / SAMPLES_FILE
        self.metrics_path = self.run_dir / METRICS_FILE
        self._samples: IO[bytes] | None = open(self.samples_path, "ab")  # noqa: SIM115 (closed in close())
        self._metrics: IO[bytes] | None = open(self.metrics_path, "ab")  # noqa: SIM115

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._samples is None

    def sample(self, row: Mapping[str, Any]) -> None:
        self._file(self._samples).write(dumps(row))

    def metrics(self, row: Mapping[str, Any]) -> None:
        """Append a step's row, then flush both files so the step is on disk as a whole."""
        self._file(self._metrics).write(dumps(row))
        self.flush()

    def flush(self) -> None:
        for f in (self._samples, self._metrics):
            if f is not None:
                f.flush()

    def close(self) -> None:
        files, (self._samples, self._metrics) = (self._samples, self._metrics), (None, None)
        for f in files:
            if f is not None:
                f.close()

    def _file(self, f: IO[bytes] | None) -> IO[bytes]:
        if f is None:
            raise RuntimeError(f"RunRecorder for {self.run_dir} is closed; open a new one to write more rows")
        return f
