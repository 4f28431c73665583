"""Host side of the result-capturing harness: build the script the sandbox runs, and read its report.

    key = new_key()
    script = build_program(code, solver)                       # runtime + the solver's hook + the program
    result = await pool.run(script, stdin=key + "\\n")          # the key is the first line of stdin
    report = parse_channel(result.channel, key)                 # Report(solves, exit, problem)

What the program sees: it runs as a fresh `__main__` module (so `if __name__ == "__main__": main()` works),
after the prelude has wrapped the API's solve entry points (`solvers/hooks/<api>_hook.py`). Each wrapped
call is recorded from the solver's own objects (status, objective, model size); **the last solve call of the
run is the one that counts** (a program that solves the right model and then a variant is judged on the
variant). Nothing the program prints is read: stdout and stderr are only kept for diagnostics, so solver
banners (Gurobi's restricted-license line, COPT's license search, HiGHS' header) cannot matter.

Forgery. Reports travel only over file descriptor 3, as lines `<HMAC-SHA256(key, payload) hex> <JSON>`, with a
per-run sequence number and a final exit record. The key is random per run and reaches the prelude on stdin,
which the prelude consumes before the program starts; it is not in the script text or the environment.
So: printing a record to stdout does nothing (stdout is never parsed); writing to fd 3 directly, closing it
or replacing it is detected (bad tag, broken sequence, or missing exit record) and the run earns nothing; a
program that raises, calls `sys.exit(1)` or `os._exit()` earns nothing either.
What is NOT defended: the prelude and the program share one interpreter, so a program that deliberately
introspects its own address space (walks `gc.get_objects()` or stack frames to find the `Capture` object and
its key, or re-wraps the hooked methods with `ctypes`) can forge any record. Closing that would need the
capture in another process; the next step would be a trusted parent process that re-solves the last model
from a file the hook exports (every API here can write MPS or its proto), so that a forged record would need
a real model with the right optimum. The sandbox bounds what such a program can do to the host.
Two further limits, by construction: a program that computes the optimum itself (in plain Python, or in
the model's reasoning) and then solves a dummy model whose objective is that constant is rewarded (a model
with no variables is not: `RewardConfig.min_variables`); and solve entry points the hooks do not wrap
(gurobipy's optimizeAsync, Pyomo's appsi/contrib solver classes used without SolverFactory) leave no record,
so such programs earn `no_solve`, never a false reward.
Why the introspection gap matters less than it looks: a forged record must still carry the ground-truth
number (or "infeasible"), so a forger must already know the answer, and then the dummy model above is the
easier route. What the harness guarantees is that the judged number came out of a solver call in the
program's own run, not that the formulation is the intended one.
"""

from __future__ import annotations

import binascii
import hmac
import json
import marshal
import secrets
import sys
from dataclasses import dataclass
from functools import cache
from hashlib import sha256
from pathlib import Path
from typing import Any

from solvers.base import Solver

HOOKS_DIR = Path(__file__).resolve().parent / "hooks"
# The standard-library modules hooks/runtime.py and the script's loader (`_harness_lines`) import; every adapter
# preloads them so that a run does not pay ~25 ms importing hashlib/OpenSSL before the program starts.
RUNTIME_MODULES = (
    *("binascii", "builtins", "contextlib", "hashlib", "hmac", "json", "linecache", "marshal", "threading"),
    *("traceback", "types"),
)
HARNESS_FILENAME = "<evom-harness>"
KEY_BYTES = 32
NO_KEY_EXIT = 97  # the runtime's exit code when stdin did not start with a key (a sandbox plumbing fault)


@cache
def _hook_source(name: str) -> str:
    path = HOOKS_DIR / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"harness hook {path} is missing; the solvers package is incomplete")
    return path.read_text()


def new_key() -> str:
    """A fresh per-run key, as the hex line the prelude expects on stdin."""
    return secrets.token_hex(KEY_BYTES)


@cache
def _harness_lines(hook: str) -> str:
    """The script's lines that load the runtime and `hook`. They travel compiled (marshal, base64) and the script
    executes that code object when the sandbox runs this very interpreter version (the pool's jail runs the host's
    interpreter), so that a run compiles only its program, never the ~11 KB of harness source. Any other
    interpreter compiles the source, which travels too (base64: a plain literal, cheap to parse)."""
    source = f"{_hook_source('runtime')}\n\n{_hook_source(hook)}"
    code = binascii.b2a_base64(marshal.dumps(compile(source, HARNESS_FILENAME, "exec")), newline=False).decode()
    text = binascii.b2a_base64(source.encode(), newline=False).decode()
    return (
        "import binascii as _evom_b64, marshal as _evom_marshal, sys as _evom_sys\n"
        f"if _evom_sys.version == {sys.version!r}:\n"
        f"    exec(_evom_marshal.loads(_evom_b64.a2b_base64({code!r})))\n"
        "else:\n"
        f"    exec(compile(_evom_b64.a2b_base64({text!r}).decode(), {HARNESS_FILENAME!r}, 'exec'))\n"
        "del _evom_b64, _evom_marshal, _evom_sys\n"
    )


def build_program(code: str, solver: Solver, *, flip_sense: bool = False) -> str:
    """The script the sandbox runs: the trusted runtime, `solver`'s hook (see `_harness_lines`), then `code` run as
    `__main__`.

    `flip_sense=True` reverses the optimisation sense of every model just before it is solved; it is a
    control for verifier tests (a correct program must then stop matching its answer), never for training.
    """
    return f"{_harness_lines(solver.hook)}\nmain({code!r}, install, flip_sense={bool(flip_sense)!r})\n"


@dataclass(frozen=True, kw_only=True)
class Report:
    """What the harness reported over the channel. `problem` is set when the channel cannot be trusted or
    is incomplete; then `solves` and `exit` must not be used for a reward."""

    solves: tuple[dict[str, Any], ...] = ()
    exit: dict[str, Any] | None = None
    problem: str | None = None

    @property
    def last_solve(self) -> dict[str, Any] | None:
        """The last solve call of the run: the exit record's copy, which survives the per-run record cap."""
        if self.exit is not None:
            return self.exit.get("last")
        return self.solves[-1] if self.solves else None

    @property
    def solve_count(self) -> int:
        return int(self.exit["solves"]) if self.exit is not None else len(self.solves)


def parse_channel(data: bytes, key: str) -> Report:
    """Verify and decode the channel bytes of one run against its key."""
    if not data:
        return Report(problem="the harness reported nothing (the program was killed or bypassed the harness)")
    secret = bytes.fromhex(key)
    lines = data.split(b"\n")
    if lines[-1]:
        return Report(problem="the channel ends mid-record (truncated, or written to by the program)")
    solves: list[dict[str, Any]] = []
    for seq, line in enumerate(lines[:-1]):
        record, problem = _verify_line(line, secret, seq)
        if problem is not None:
            return Report(solves=tuple(solves), problem=f"channel record {seq}: {problem}")
        if record["kind"] == "exit":
            if seq != len(lines) - 2:
                return Report(solves=tuple(solves), problem=f"channel record {seq}: data after the exit record")
            return Report(solves=tuple(solves), exit=record)
        solves.append(record)
    return Report(solves=tuple(solves), problem="no exit record: the program ended without returning to the harness")


def _verify_line(line: bytes, secret: bytes, seq: int) -> tuple[dict[str, Any], str | None]:
    tag, sep, payload = line.partition(b" ")
    if not sep:
        return {}, "not a harness record"
    expected = hmac.new(secret, payload, sha256).hexdigest().encode()
    if not hmac.compare_digest(tag, expected):
        return {}, "bad authentication tag (not written by the harness)"
    record = json.loads(payload)
    if record.get("seq") != seq:
        return {}, f"sequence number {record.get('seq')!r} where {seq} was expected (replayed record)"
    if record.get("kind") not in ("solve", "exit"):
        return {}, f"unknown record kind {record.get('kind')!r}"
    return record, None
