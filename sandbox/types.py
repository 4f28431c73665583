"""Value types of the sandbox: the per-run `Limits` and the typed `Result` of one run.

Both are frozen, keyword-only dataclasses: `dataclasses.replace(limits, wall_s=5)` makes a variant.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "error", "timeout", "memory", "output_limit", "killed", "sandbox_error"]
STATUSES: tuple[str, ...] = ("ok", "error", "timeout", "memory", "output_limit", "killed", "sandbox_error")


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot start on this machine (no nsjail, no namespaces, a preload import failed)."""


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Resource limits of one run. Units are in the names.

    wall_s: wall-clock seconds, enforced by the worker (SIGKILL of every process of the run).
    cpu_s: CPU seconds per process (RLIMIT_CPU).
    memory_mb: memory the run may add on top of the warm worker (cgroup v1 memory when present,
        RLIMIT_AS always).
    max_procs: processes + threads of the run (cgroup v1 pids when present, else RLIMIT_NPROC).
    output_bytes: stdout and stderr each; more kills the run with status "output_limit".
    tmp_mb: size of the jail's tmpfs (fixed per worker, from the pool's limits) and RLIMIT_FSIZE per file.
    channel_bytes: bytes kept from fd 3; the rest is read and dropped, flagged `channel_truncated`.
    """

    wall_s: float = 30.0
    cpu_s: float = 30.0
    memory_mb: int = 2048
    max_procs: int = 32
    output_bytes: int = 1 << 20
    tmp_mb: int = 64
    channel_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        for name in ("wall_s", "cpu_s", "memory_mb", "max_procs", "output_bytes", "tmp_mb", "channel_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be > 0, got {getattr(self, name)!r}")

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class Result:
    """Outcome of one run. `run()` never raises for anything the program does; read `status`.

    status: "ok" (exit 0) | "error" (non-zero exit) | "timeout" (wall or CPU limit) | "memory" (OOM kill or
        MemoryError) | "output_limit" (stdout/stderr over the limit) | "killed" (died of a signal it raised
        itself, or cancelled) | "sandbox_error" (the sandbox failed or lost the run: a worker died, a signal from
        outside the run; `reason` says how). Which deaths are whose: `sandbox/__init__.py`.
    exit_code: the exit status, or None when the program died of a signal (see `signal`).
    channel: everything the program wrote to file descriptor 3, at most `Limits.channel_bytes`.
    phases: seconds per step of the run, for profiling: refill (the worker forking and preparing this run's
        process after its previous run), idle (the worker waiting for this run), take (a fork on the run's path:
        0 unless no prepared process was left), to_program, program, exit, run, reap, cleanup (see
        `Run._phases` in sandbox/_worker.py), worker (the worker's time from reading the run to answering) and
        host (the pool's round trip less `worker`: framing, pipes, the event loop).
    """

    status: Status
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    wall_s: float = 0.0
    truncated: bool = False
    channel: bytes = b""
    channel_truncated: bool = False
    cpu_s: float = 0.0
    max_rss_mb: float = 0.0
    signal: int | None = None
    reason: str = ""
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json_dict(self, *, channel: bool = True) -> dict[str, Any]:
        """A JSON-ready dict; the channel is base64 (or left out with `channel=False`)."""
        data = asdict(self)
        data.pop("channel")
        if channel:
            data["channel_b64"] = base64.b64encode(self.channel).decode("ascii")
        return data
