"""Trusted prelude of the harness: runs inside the sandbox, before and around the untrusted program.

It reads a per-run key from the first line of stdin, installs one solver hook, executes the program as a
fresh `__main__` module, and reports over file descriptor 3 only:

    <hex HMAC-SHA256(key, payload)> <payload: one JSON object>\n

one `{"kind": "solve"}` record per solve call (the first `MAX_SOLVE_RECORDS`), then one `{"kind": "exit"}`
record carrying the number of solves, the last solve and how the program ended. Every record has a
sequence number `seq`; the host rejects the whole channel if any line fails its tag, a `seq` is out of
order, or the exit record is missing. This file is source text for the sandbox, never imported by the host.
"""

import builtins
import contextlib
import hashlib
import hmac
import json
import linecache
import os
import sys
import threading
import traceback
import types

CHANNEL_FD = 3
MAX_SOLVE_RECORDS = 64
PROGRAM_FILENAME = "program.py"
NO_KEY_EXIT = 97


class Capture:
    """Collects solve records from the hooks and writes authenticated frames to the channel."""

    def __init__(self, key, write=os.write, new_mac=hmac.new, digest=hashlib.sha256, dumps=json.dumps):
        # Bound at construction so a program that later patches os.write or json.dumps cannot alter reports.
        self._key = key
        self._write = write
        self._new_mac = new_mac
        self._digest = digest
        self._dumps = dumps
        self._seq = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self.solves = 0
        self.last = None

    def _emit(self, record):
        with self._lock:
            record["seq"] = self._seq
            self._seq += 1
            payload = self._dumps(record, sort_keys=True, default=repr).encode()
            tag = self._new_mac(self._key, payload, self._digest).hexdigest().encode()
            frame = memoryview(tag + b" " + payload + b"\n")
            while frame:
                frame = frame[self._write(CHANNEL_FD, frame) :]

    def solved(self, record):
        self.solves += 1
        self.last = record
        if self.solves <= MAX_SOLVE_RECORDS:
            self._emit({"kind": "solve", "index": self.solves - 1, **record})

    def finish(self, ending):
        self._emit({"kind": "exit", "solves": self.solves, "last": self.last, **ending})

    def wrap(self, owner, name, describe, *, before=None):
        """Replace `owner.name` by a wrapper that records `describe(args, kwargs, result)` after each call.

        Only the outermost wrapped call on a thread is recorded, so an entry point that calls another
        wrapped one (highspy's solve() calls run()) counts once. `before(args, kwargs)` runs on every call.
        """
        original = getattr(owner, name)
        capture = self

        def wrapper(*args, **kwargs):
            depth = getattr(capture._local, "depth", 0)
            capture._local.depth = depth + 1
            try:
                if before is not None:
                    before(args, kwargs)
                try:
                    result = original(*args, **kwargs)
                except BaseException as exc:
                    if depth == 0:
                        capture.solved({"raised": describe_exception(exc)})
                    raise
                if depth == 0:
                    capture.solved(safe_describe(describe, args, kwargs, result))
                return result
            finally:
                capture._local.depth = depth

        wrapper.__name__ = getattr(original, "__name__", name)
        wrapper.__qualname__ = getattr(original, "__qualname__", name)
        wrapper.__doc__ = getattr(original, "__doc__", None)
        setattr(owner, name, wrapper)


def describe_exception(exc):
    """Type, message and the solver's own error code (gurobipy `errno`, coptpy `retcode`) of an exception; for an
    AttributeError the module of the object that lacked the attribute (`owner`), for an ImportError the module it
    names (`module`): the failure taxonomy (solvers/failures.py) tells solver-API misuse apart by them."""
    info = {"type": type(exc).__module__ + "." + type(exc).__qualname__, "message": str(exc)[:500]}
    for attr in ("errno", "retcode"):
        code = getattr(exc, attr, None)
        if isinstance(code, int):
            info["code"] = code
    try:
        owner = exc.obj if isinstance(exc, AttributeError) else None
        if owner is not None:
            info["owner"] = str(owner.__name__ if isinstance(owner, types.ModuleType) else type(owner).__module__)[:200]
        if isinstance(exc, ImportError) and exc.name:
            info["module"] = str(exc.name)[:200]
    except Exception:  # a program's own object may raise on any access; the type and message still stand
        pass
    return info


def safe_describe(describe, args, kwargs, result):
    try:
        return describe(args, kwargs, result)
    except Exception as exc:
        return {"describe_error": describe_exception(exc)}


def as_float(value):
    return None if value is None else float(value)


def read_key():
    line = sys.stdin.readline().strip()
    if len(line) != 64 or any(c not in "0123456789abcdef" for c in line):
        sys.stderr.write("harness: expected the per-run key on the first line of stdin\n")
        os._exit(NO_KEY_EXIT)
    return bytes.fromhex(line)


def run_program(source, capture):
    """Execute `source` as a fresh `__main__` module; return how it ended (the exit record's fields)."""
    module = types.ModuleType("__main__")
    module.__file__ = PROGRAM_FILENAME
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    sys.argv = [PROGRAM_FILENAME]
    linecache.cache[PROGRAM_FILENAME] = (len(source), None, source.splitlines(True), PROGRAM_FILENAME)
    try:
        exec(compile(source, PROGRAM_FILENAME, "exec"), module.__dict__)
    except SystemExit as exc:
        if exc.code is None or exc.code == 0:
            return {"ending": "ok"}
        return {"ending": "exit", "code": repr(exc.code)[:200]}
    except BaseException as exc:
        traceback.print_exc()
        return {"ending": "exception", "exception": describe_exception(exc)}
    return {"ending": "ok"}


def main(source, install, flip_sense):
    capture = Capture(read_key())
    try:
        install(capture, flip_sense)
    except Exception as exc:
        traceback.print_exc()
        capture.finish({"ending": "harness_error", "exception": describe_exception(exc)})
        sys.exit(1)
    ending = run_program(source, capture)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    capture.finish(ending)
    if ending["ending"] != "ok":
        sys.exit(1)
