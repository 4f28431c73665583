"""engine/compute.py: CPU tensor work on one thread, and the OpenMP workers of other threads handed back."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from engine.compute import compute_executor, on_compute_thread, release_thread_team, submit_compute
from engine.generation import SamplingParams
from engine.generation.local import LocalBackend
from tests.engine.test_generation_local import tiny_model

needs_two_threads = pytest.mark.skipif(torch.get_num_threads() < 2, reason="an OpenMP team needs 2 threads")


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def parallel_region() -> None:
    """A kernel large enough for torch to run it on every intra-op thread."""
    a = torch.ones(512, 512)
    (a @ a).sum()


def thread_name() -> str:
    return threading.current_thread().name


async def test_cpu_work_runs_on_the_one_compute_thread_and_cuda_work_does_not():
    names = {await on_compute_thread(thread_name), await on_compute_thread(thread_name, device="cpu")}
    assert len(names) == 1 and names.pop().startswith("evom-compute")
    assert not (await on_compute_thread(thread_name, device="meta")).startswith("evom-compute")
    assert await on_compute_thread(lambda a, *, b: a + b, 1, b=2) == 3


@needs_two_threads
def test_release_thread_team_lets_that_threads_openmp_workers_exit():
    with ThreadPoolExecutor(1) as other:
        other.submit(parallel_region).result()
        with_team = os_threads()
        assert other.submit(release_thread_team).result() is True
        assert os_threads() < with_team
        other.submit(parallel_region).result()  # the workers come back on the next parallel region
        assert os_threads() == with_team


@needs_two_threads
async def test_handing_work_to_the_compute_thread_releases_the_callers_workers():
    await submit_compute(parallel_region)  # the compute thread's own team, kept
    parallel_region()  # this thread (the event loop's) picks up a team
    with_team = os_threads()
    await submit_compute(thread_name)
    assert os_threads() < with_team


async def test_a_cpu_local_backend_decodes_on_the_compute_thread_which_outlives_it():
    model = tiny_model()
    seen: list[str] = []
    for _ in range(2):  # closing the first backend leaves the shared thread running for the second
        async with LocalBackend(model) as backend:
            original = backend._run

            def recording(*args, _run=original):
                seen.append(thread_name())
                return _run(*args)

            backend._run = recording
            got = [c async for c in backend.generate([[1, 2, 3]], SamplingParams(max_new_tokens=3, seed=0), n=2)]
            assert len(got) == 2 and not any(c.failed for c in got)
    assert len(seen) == 2 and all(name.startswith("evom-compute") for name in seen)
    assert compute_executor().submit(thread_name).result().startswith("evom-compute")
