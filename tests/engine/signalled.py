"""Run a command in a subprocess and SIGTERM it once it is under way: the SIGTERM tests of engine.sft,
engine.translate and engine.eval."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def sigterm_when(
    command: Sequence[str],
    ready: Callable[[subprocess.Popen[str]], bool],
    *,
    what: str,
    cwd: Path,
    wait_s: float = 300.0,
    exit_s: float = 120.0,
) -> tuple[int, str]:
    """Start `command`, send it SIGTERM once `ready(proc)` holds (or it has ended), and return its exit status and
    stderr. Fails when `what` is not there within `wait_s`; the process is killed if it outlives the test."""
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + wait_s
        while not ready(proc) and proc.poll() is None:
            assert time.monotonic() < deadline, f"no {what} within {wait_s:g} s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=exit_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err
