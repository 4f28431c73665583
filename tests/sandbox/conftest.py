"""Caps the sandbox test session itself, so a containment bug fails a test instead of freezing the machine.

The pytest process moves into fresh cgroup v1 groups (pids 512, memory 6 GiB); the pools it starts nest
their jails under them. At the end every process left in those groups is SIGKILLed by pid and the groups
are removed. Without root or cgroup v1 the session runs uncapped and says so.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path("/sys/fs/cgroup")
CAPS = {"pids": ("pids.max", "512"), "memory": ("memory.limit_in_bytes", str(6 << 30))}


def _own(controller: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return path
    return "/"


def _drain(group: Path, home: Path) -> None:
    procs = group / "cgroup.procs"
    for _ in range(100):
        pids = [int(p) for p in procs.read_text().split()]
        if not pids:
            break
        for pid in pids:
            if pid == os.getpid():
                (home / "cgroup.procs").write_text(str(pid))
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


@pytest.fixture(scope="session", autouse=True)
def capped_session() -> Iterator[None]:
    groups: dict[str, tuple[Path, Path]] = {}
    if os.geteuid() == 0:
        for controller, (knob, value) in CAPS.items():
            mount = ROOT / controller
            if not (mount / "cgroup.procs").exists():
                continue
            group = mount / f"evom-sandbox-tests-{os.getpid()}"
            home = mount / _own(controller).lstrip("/")
            try:
                group.mkdir()
                (group / knob).write_text(value)
                (group / "cgroup.procs").write_text(str(os.getpid()))
            except OSError as exc:
                print(f"sandbox tests: no {controller} cap ({exc})", file=sys.stderr)
                continue
            groups[controller] = (group, home)
    if not groups:
        print("sandbox tests: running uncapped (needs root and cgroup v1)", file=sys.stderr)
    try:
        yield
    finally:
        for _group, home in groups.values():
            (home / "cgroup.procs").write_text(str(os.getpid()))
        if "pids" in groups:
            (groups["pids"][0] / "pids.max").write_text("1")
        for group, home in groups.values():
            _drain(group, home)
            for sub in sorted(group.rglob("*"), key=lambda p: -len(p.parts)):
                if sub.is_dir():
                    _drain(sub, home)
                    sub.rmdir()
            group.rmdir()
