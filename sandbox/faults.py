"""Fault injection for the chaos tests and bench/chaos.py: SIGKILL random sandbox processes from outside.

    with Killer(interval=(0.02, 0.1), seed=1) as killer:   # kills processes of this process's pools
        ...                                                  # run a batch
    killer.kills            # {"worker": 3, "child": 4}
    killer.events           # [(time.monotonic() of the kill, role, pid), ...]: one clock for every process
    killer.seen             # every sandbox process it saw (pid, start time, role): check none is left

A sandbox process is one whose command line is the worker's and that descends from `root` (the process that
owns the pools, by default the caller): "worker" is a jail's pid 1, "child" a run's main process (prepared and
waiting, or running a program), "jail" the nsjail process supervising a worker (a target only when asked
for: its death takes the jail with it). Processes the program forks are not targets: their deaths are the program's
to handle, and no one could tell them from its own bugs. The killer runs as a separate process (`python -m
sandbox.faults`), so it keeps its pace while the caller's event loop is busy, as an operator would.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sandbox.jail import WORKER_PATH_IN_JAIL
from sandbox.pool import WORKER_FILE

ROLES = ("worker", "child", "jail")
DEFAULT_ROLES = ("worker", "child")


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, start time, state) of a process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), fields[19], fields[0]


def _is_worker_image(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return len(argv) > 2 and argv[2].decode(errors="replace") in (WORKER_PATH_IN_JAIL, WORKER_FILE)


def _descends_from(pid: int, root: int) -> bool:
    while pid > 1:
        info = _stat(pid)
        if info is None:
            return False
        pid = info[0]
        if pid == root:
            return True
    return False


@dataclass(frozen=True)
class Proc:
    pid: int
    start: str  # /proc/PID/stat start time: a recycled pid is another process
    role: str  # "worker" (a jail's pid 1), "child" (a run's main process, prepared or running) or "jail" (nsjail)

    def exists(self) -> bool:
        """Running, or a zombie not yet reaped."""
        info = _stat(self.pid)
        return info is not None and info[1] == self.start

    def alive(self) -> bool:
        info = _stat(self.pid)
        return info is not None and info[1] == self.start and info[2] != "Z"


def _is_nsjail(pid: int) -> bool:
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return os.path.basename(argv0) == b"nsjail"


def sandbox_processes(root: int | None = None) -> list[Proc]:
    """The live workers, runs' main processes and nsjail supervisors of the sandbox pools below `root` (default:
    this process)."""
    root = os.getpid() if root is None else root
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or not _is_worker_image(pid := int(name)) or not _descends_from(pid, root):
            continue
        info = _stat(pid)
        if info is None or info[2] == "Z":
            continue
        if not _is_worker_image(info[0]):
            found.append(Proc(pid, info[1], "worker"))
            if _is_nsjail(info[0]) and (jail := _stat(info[0])) is not None and jail[2] != "Z":
                found.append(Proc(info[0], jail[1], "jail"))
        elif (parent := _stat(info[0])) is not None and not _is_worker_image(parent[0]):
            found.append(Proc(pid, info[1], "child"))
    return found


class Killer:
    """Runs `python -m sandbox.faults` for the duration of a `with` block; its report is read at the end."""

    def __init__(
        self,
        *,
        interval: tuple[float, float],
        seed: int = 0,
        roles: Sequence[str] = DEFAULT_ROLES,
        root: int | None = None,
        max_kills: int | None = None,
    ) -> None:
        if not 0 < interval[0] <= interval[1]:
            raise ValueError(f"interval must be 0 < low <= high seconds, got {interval}")
        unknown = set(roles) - set(ROLES)
        if unknown or not roles:
            raise ValueError(f"roles must be a non-empty subset of {ROLES}, got {list(roles)}")
        self.argv = [
            sys.executable,
            "-m",
            "sandbox.faults",
            f"--root={os.getpid() if root is None else root}",
            f"--seed={seed}",
            f"--interval={interval[0]},{interval[1]}",
            f"--roles={','.join(roles)}",
            *([f"--max-kills={max_kills}"] if max_kills is not None else []),
        ]
        self.kills: dict[str, int] = dict.fromkeys(ROLES, 0)
        self.events: list[tuple[float, str, int]] = []
        self.seen: set[Proc] = set()
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Killer:
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
        self._proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        ready = self._proc.stdout.readline() if self._proc.stdout else ""
        if ready.strip() != "ready":
            self._proc.kill()
            raise RuntimeError(f"the fault injector did not start: {ready!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """False once stopped, or once it made `max_kills` kills and left."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Stop killing and read the report. Idempotent."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        out, _ = proc.communicate(timeout=30)  # closing stdin tells it to stop
        report = json.loads(out)
        self.kills = report["kills"]
        self.events = [tuple(e) for e in report["events"]]
        self.seen = {Proc(*p) for p in report["seen"]}


def _serve(root: int, seed: int, interval: tuple[float, float], roles: Sequence[str], max_kills: int | None) -> dict:
    rng = random.Random(seed)
    kills = dict.fromkeys(ROLES, 0)
    events: list[tuple[float, str, int]] = []
    seen: set[Proc] = set()
    print("ready", flush=True)
    while (max_kills is None or sum(kills.values()) < max_kills) and not select.select(
        [sys.stdin], [], [], rng.uniform(*interval)
    )[0]:
        procs = sandbox_processes(root)
        seen.update(procs)
        targets = [p for p in procs if p.role in roles]
        if not targets:
            continue
        victim = rng.choice(targets)
        try:
            os.kill(victim.pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        kills[victim.role] += 1
        events.append((time.monotonic(), victim.role, victim.pid))
    seen.update(sandbox_processes(root))
    return {"kills": kills, "events": events, "seen": [[p.pid, p.start, p.role] for p in seen]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.faults", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=int, required=True, help="pid of the process that owns the pools")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interval", required=True, help="LOW,HIGH: seconds between kills, drawn uniformly")
    parser.add_argument("--roles", default=",".join(DEFAULT_ROLES), help=f"comma-separated subset of {','.join(ROLES)}")
    parser.add_argument("--max-kills", type=int, help="leave after this many kills (default: when stdin closes)")
    args = parser.parse_args(argv)
    try:
        low, high = (float(x) for x in args.interval.split(","))
    except ValueError:
        parser.error(f"--interval must be LOW,HIGH seconds, got {args.interval!r}")
    roles = args.roles.split(",")
    if not 0 < low <= high or set(roles) - set(ROLES):
        parser.error(f"need 0 < LOW <= HIGH and roles in {ROLES}; got {args.interval!r}, {args.roles!r}")
    if args.max_kills is not None and args.max_kills < 1:
        parser.error(f"--max-kills must be >= 1, got {args.max_kills}")
    json.dump(_serve(args.root, args.seed, (low, high), roles, args.max_kills), sys.stdout)


if __name__ == "__main__":
    main()
