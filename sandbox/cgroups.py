"""cgroup v1 groups per warm worker: memory and pids limits, OOM-kill counting, kill-everything-by-pid.

Groups nest under the calling process's own cgroup (so limits placed on the caller still apply to its
sandboxes): <mount>/<own path>/evom-sandbox-<pid>-<n>/w<slot>-<k>. cgroup v2 is not used (its controllers
are not delegated on the machines this was built on); where v1 controllers are missing or not writable,
`CgroupParent.create` returns a parent with no controllers and the pool falls back to rlimits, saying so.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger("sandbox.cgroups")
CONTROLLERS = ("memory", "pids")
_counter = itertools.count()


def _v1_mounts() -> dict[str, Path]:
    mounts: dict[str, Path] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return mounts
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = right.split()
        if len(fields) < 3 or fields[0] != "cgroup":
            continue
        options = set(fields[2].split(","))
        for controller in CONTROLLERS:
            if controller in options:
                mounts.setdefault(controller, Path(left.split()[4]))
    return mounts


def _own_paths() -> dict[str, str]:
    paths: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            paths[controller] = path
    return paths


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError as exc:
        log.warning("could not write %s to %s: %s", value, path, exc)
        return False


class WorkerCgroup:
    """One worker's groups. `procs_files` are what a launcher writes its pid into before exec."""

    def __init__(self, dirs: dict[str, Path]) -> None:
        self.dirs = dirs

    @property
    def controllers(self) -> tuple[str, ...]:
        return tuple(self.dirs)

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def set_limits(self, *, memory_bytes: int | None, pids: int) -> None:
        if "memory" in self.dirs and memory_bytes is not None:
            _write(self.dirs["memory"] / "memory.limit_in_bytes", str(memory_bytes))
        if "pids" in self.dirs:
            _write(self.dirs["pids"] / "pids.max", str(pids))

    def memory_usage(self) -> int:
        try:
            return int((self.dirs["memory"] / "memory.usage_in_bytes").read_text())
        except (KeyError, OSError, ValueError):
            return 0

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer took in this group so far."""
        try:
            text = (self.dirs["memory"] / "memory.oom_control").read_text()
        except (KeyError, OSError):
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs.values():
            try:
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except OSError:
                continue
        return found

    def destroy(self, *, timeout_s: float = 5.0) -> None:
        """SIGKILL every process in the groups (by pid), wait until they are gone, remove the groups."""
        if "pids" in self.dirs:  # a fork bomb racing the kills cannot grow while pids.max is 1
            _write(self.dirs["pids"] / "pids.max", "1")
        deadline = time.monotonic() + timeout_s
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        for d in self.dirs.values():
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)  # the last exiting tasks leave the group asynchronously
            else:
                log.warning("cgroup %s could not be removed", d)


class CgroupParent:
    """The pool's own group per controller, under the caller's cgroup."""

    def __init__(self, dirs: dict[str, Path]) -> None:
        self.dirs = dirs
        self._children = itertools.count()

    @classmethod
    def create(cls) -> CgroupParent:
        mounts, own = _v1_mounts(), _own_paths()
        name = f"evom-sandbox-{os.getpid()}-{next(_counter)}"
        dirs: dict[str, Path] = {}
        for controller, mount in mounts.items():
            path = mount / own.get(controller, "/").lstrip("/") / name
            try:
                path.mkdir()
            except OSError as exc:
                log.warning("no %s cgroup (mkdir %s: %s); that limit falls back to rlimits", controller, path, exc)
                continue
            dirs[controller] = path
        return cls(dirs)

    @property
    def controllers(self) -> tuple[str, ...]:
        return tuple(self.dirs)

    def worker_group(self, slot: int) -> WorkerCgroup:
        name = f"w{slot}-{next(self._children)}"
        dirs: dict[str, Path] = {}
        for controller, parent in self.dirs.items():
            path = parent / name
            try:
                path.mkdir()
            except OSError as exc:
                log.warning("could not create cgroup %s: %s", path, exc)
                continue
            dirs[controller] = path
        return WorkerCgroup(dirs)

    def remove(self) -> None:
        for controller, d in self.dirs.items():
            for child in d.iterdir() if d.is_dir() else ():
                if child.is_dir():
                    WorkerCgroup({controller: child}).destroy()
            try:
                d.rmdir()
            except OSError as exc:
                log.warning("cgroup %s could not be removed: %s", d, exc)
