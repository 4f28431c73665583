"""The one thread that runs a process's CPU tensor work: the local backend's decoding and weight updates, the
learner's steps and checkpoints.

torch's CPU kernels run their parallel regions on OpenMP (libgomp in torch's wheels), which keeps a team of worker
threads for every OS thread that has run a parallel region, for as long as that thread lives. Once a process holds
more OpenMP threads than it has cores, libgomp stops spinning between regions: every region then puts its workers
to sleep and wakes them again, which halves the throughput of the many small kernels of decoding (tokens/s at half
the cores' time; measured in bench/NOTES.md, "One thread for CPU tensor work"). So the CPU tensor work of an EVOM
process runs on this one thread, and whoever hands work to it first hands back the OpenMP workers its own thread
picked up (loading a model, gathering a batch on the event loop's thread): `release_thread_team`, OpenMP 5's
omp_pause_resource_all, which in libgomp frees the calling thread's workers only (they come back on its next
parallel region, for the cost of starting a thread).

    metrics = await on_compute_thread(learner.step, batch)   # on a CUDA device the work takes a thread of its own
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

T = TypeVar("T")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def compute_executor() -> ThreadPoolExecutor:
    """The process's CPU tensor thread (started on first use, kept for the process's life)."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(1, thread_name_prefix="evom-compute")
        return _executor


def is_cpu(device: torch.device | str) -> bool:
    return torch.device(device).type == "cpu"


def submit_compute(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """`fn(*args)` on the compute thread, from the running event loop; the calling thread's OpenMP workers are
    handed back first."""
    release_thread_team()
    return asyncio.get_running_loop().run_in_executor(compute_executor(), fn, *args)


async def on_compute_thread(fn: Callable[..., T], *args: Any, device: torch.device | str = "cpu", **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` off the event loop: on the compute thread when `device` is the CPU, otherwise on a
    thread of the loop's default executor (a CUDA device's kernels do not run on OpenMP)."""
    call = functools.partial(fn, *args, **kwargs)
    if is_cpu(device):
        return await submit_compute(call)
    return await asyncio.get_running_loop().run_in_executor(None, call)


@functools.cache
def _libgomp() -> ctypes.CDLL | None:
    """The libgomp loaded into this process (torch's), or None: another OpenMP runtime, whose pause may act on the
    whole process rather than on the calling thread, is left alone."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libgomp" in line and "/" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(lib, "omp_pause_resource_all"):
            return lib
    return None


def release_thread_team() -> bool:
    """Let the calling thread's OpenMP workers exit; False when there is no libgomp with omp_pause_resource_all,
    or it refused (called inside a parallel region)."""
    lib = _libgomp()
    if lib is None:
        return False
    omp_pause_soft = 1
    return lib.omp_pause_resource_all(omp_pause_soft) == 0
