"""Launch and supervise local SGLang servers (`python -m sglang.launch_server`) for the sglang backend.

Flags follow SGLang 0.5.23, whose CLI flags are its ServerArgs field names with dashes: --model-path,
--host, --port, --tp-size, --base-gpu-id, --mem-fraction-static, --random-seed. Server k listens on
base_port + k, uses GPUs base_gpu_id + k * tp_size onwards and gets --random-seed random_seed + k. Each
process gets its own process group (so stopping it takes its scheduler/detokenizer children too) and a log
file; `stop()` sends SIGTERM, then SIGKILL after `stop_grace_s`. A server that exits during start-up fails
the launch with the tail of its log. The launcher never sets SGLANG_RETURN_ORIGINAL_LOGPROB: the servers
report log-probs of the temperature-scaled distribution, the rule the learner follows.

Set from the config (`generation.sglang.launch`):
    launch: {model_path: Qwen/Qwen2.5-1.5B-Instruct, num_servers: 4, tp_size: 2}

Not run against a real SGLang here (no GPU); the supervision is tested with the protocol peer as `entry`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from engine.generation.base import GenerationError
from engine.generation.http import get_status

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class LaunchConfig:
    """Servers to start on this machine."""

    model_path: str
    num_servers: int = 1
    host: str = "127.0.0.1"
    base_port: int = 30000
    tp_size: int = 1
    base_gpu_id: int = 0
    mem_fraction_static: float | None = None
    # Server k gets --random-seed random_seed + k; unset, SGLang draws one per server.
    random_seed: int | None = None
    # Further SGLang flags, verbatim, e.g. ["--enable-metrics", "--context-length", "8192"].
    extra_args: tuple[str, ...] = ()
    python: str = sys.executable
    # What follows the interpreter: SGLang's entry point (tests substitute a protocol peer script).
    entry: tuple[str, ...] = ("-m", "sglang.launch_server")
    log_dir: str = "sglang_logs"
    startup_timeout_s: float = 900.0
    stop_grace_s: float = 30.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra_args", tuple(str(a) for a in self.extra_args))
        object.__setattr__(self, "entry", tuple(str(a) for a in self.entry))
        if self.num_servers < 1 or self.tp_size < 1:
            raise ValueError("LaunchConfig: num_servers and tp_size must be >= 1")


def server_command(config: LaunchConfig, k: int) -> list[str]:
    """The command line of server k."""
    cmd = [config.python, *config.entry, "--model-path", config.model_path, "--host", config.host]
    cmd += ["--port", str(config.base_port + k), "--tp-size", str(config.tp_size)]
    cmd += ["--base-gpu-id", str(config.base_gpu_id + k * config.tp_size)]
    if config.mem_fraction_static is not None:
        cmd += ["--mem-fraction-static", str(config.mem_fraction_static)]
    if config.random_seed is not None:  # each server its own seed, else they would sample alike
        cmd += ["--random-seed", str(config.random_seed + k)]
    return cmd + list(config.extra_args)


# Makes SGLang report log-probs at temperature 1 instead of the sampling temperature's (layers/sampler.py).
ORIGINAL_LOGPROB_ENV = "SGLANG_RETURN_ORIGINAL_LOGPROB"


def server_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The servers' environment: ours without SGLANG_RETURN_ORIGINAL_LOGPROB (generator log-probs must be of
    the temperature-scaled distribution, as the learner computes them)."""
    env = dict(os.environ if environ is None else environ)
    if env.pop(ORIGINAL_LOGPROB_ENV, None) is not None:
        log.warning("%s is set; the launched SGLang servers run without it", ORIGINAL_LOGPROB_ENV)
    return env


class LaunchedServers:
    """The running server processes; `stop()` ends them and their children."""

    def __init__(self, config: LaunchConfig) -> None:
        self.config = config
        self.processes: list[asyncio.subprocess.Process] = []
        self.logs: list[Path] = []
        self.urls = [f"http://{config.host}:{config.base_port + k}" for k in range(config.num_servers)]

    async def start(self) -> None:
        log_dir = Path(self.config.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for k in range(self.config.num_servers):
                log = log_dir / f"sglang_{self.config.base_port + k}.log"
                with log.open("ab") as sink:
                    process = await asyncio.create_subprocess_exec(
                        *server_command(self.config, k),
                        stdout=sink,
                        stderr=sink,
                        start_new_session=True,
                        env=server_env(),
                    )
                self.processes.append(process)
                self.logs.append(log)
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self) -> None:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, self.urls, timeout_s=self.config.startup_timeout_s, check=self._check_alive)

    def _check_alive(self) -> None:
        for k, process in enumerate(self.processes):
            if process.returncode is not None:
                tail = self.logs[k].read_text(errors="replace")[-2000:]
                raise GenerationError(f"SGLang server {self.urls[k]} exited during start-up; log tail:\n{tail}")

    async def stop(self) -> None:
        for process in self.processes:
            _signal_group(process, signal.SIGTERM)
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), self.config.stop_grace_s)
            except TimeoutError:
                _signal_group(process, signal.SIGKILL)
                await process.wait()
        self.processes = []


async def launch_servers(config: LaunchConfig) -> LaunchedServers:
    servers = LaunchedServers(config)
    await servers.start()
    return servers


async def check_health(session: aiohttp.ClientSession, urls: Sequence[str], *, timeout_s: float) -> dict[str, bool]:
    """SGLang's health check, the one place it is written: {url: GET url/health answered 200}. SGLang answers
    503 while it loads the model."""
    statuses = await asyncio.gather(*(get_status(session, f"{url}/health", timeout_s=timeout_s) for url in urls))
    return {url: status == 200 for url, status in zip(urls, statuses, strict=True)}


async def wait_healthy(
    session: aiohttp.ClientSession,
    urls: Sequence[str],
    *,
    timeout_s: float,
    check: Callable[[], None] | None = None,
    probe_timeout_s: float = 5.0,
) -> None:
    """Poll `check_health` until every server answers; `check` runs first each round and may raise (a launched
    server that died)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check is not None:
            check()
        status = await check_health(session, urls, timeout_s=probe_timeout_s)
        down = [url for url, ok in status.items() if not ok]
        if not down:
            return
        if time.monotonic() >= deadline:
            raise GenerationError(f"SGLang server(s) {down} not healthy after {timeout_s:.0f} s; check their logs")
        await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def _signal_group(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)  # start_new_session made the server its own group leader
