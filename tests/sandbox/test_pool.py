"""SandboxPool behaviour: results, exit codes, stdin, the fd 3 channel, limits per run, queueing,
cancellation, recycling, replacement of dead workers, close(), and the CLI."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import Limits, Result, SandboxPool, SandboxUnavailable

REPO = Path(__file__).resolve().parents[2]
FAST = Limits(wall_s=10, cpu_s=10, memory_mb=512, max_procs=16, output_bytes=1 << 16, tmp_mb=16)
PIDS = "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"


async def ok42(pool: SandboxPool) -> None:
    r = await pool.run("print(6 * 7)")
    assert (r.status, r.stdout) == ("ok", "42\n"), r


def test_limits_are_frozen_keyword_only_and_validated() -> None:
    limits = Limits()
    assert (limits.wall_s, limits.memory_mb, limits.channel_bytes) == (30.0, 2048, 1 << 20)
    assert dataclasses.replace(limits, wall_s=5).wall_s == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.wall_s = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        Limits(5)  # type: ignore[misc]
    with pytest.raises(ValueError, match="wall_s"):
        Limits(wall_s=0)
    data = Result(status="ok", channel=b"\x00\xff").to_json_dict()
    assert base64.b64decode(data["channel_b64"]) == b"\x00\xff"


def test_unknown_isolation_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="nsjail, process"):
        SandboxPool(isolation="docker")  # type: ignore[arg-type]


def test_options_are_keyword_only_and_preload_nothing_by_default() -> None:
    with pytest.raises(TypeError):
        SandboxPool(2)  # type: ignore[misc]
    assert SandboxPool().preload == ()


async def test_missing_nsjail_fails_at_start_saying_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVOM_NSJAIL", "/nonexistent/nsjail")
    with pytest.raises(SandboxUnavailable, match="isolation='process'"):
        async with SandboxPool(workers=1, preload=()):
            pass


async def test_runs_as_main_with_exit_codes_and_tracebacks() -> None:
    async with SandboxPool(workers=1, limits=FAST, preload=()) as pool:
        r = await pool.run("import sys\nif __name__ == '__main__':\n    print(sys.argv[0], __file__ == sys.argv[0])")
        assert r.status == "ok" and r.exit_code == 0 and r.stdout.endswith("main.py True\n")
        r = await pool.run("import sys\nsys.exit(3)")
        assert (r.status, r.exit_code) == ("error", 3)
        r = await pool.run("import sys\nsys.exit('bad input')")
        assert (r.status, r.exit_code, r.stderr) == ("error", 1, "bad input\n")
        r = await pool.run("def f():\n    raise KeyError('k')\nf()")
        assert r.status == "error" and "KeyError: 'k'" in r.stderr and 'main.py", line 2' in r.stderr
        r = await pool.run("x = (")
        assert r.status == "error" and "SyntaxError" in r.stderr
        r = await pool.run("import os, sys\nprint('flushed?')\nsys.stdout.flush()\nos._exit(0)")
        assert (r.status, r.stdout) == ("ok", "flushed?\n")
        r = await pool.run(
            "import threading, time\nthreading.Thread(target=lambda: (time.sleep(0.2), print('t'))).start()"
        )
        assert (r.status, r.stdout) == ("ok", "t\n")
        await ok42(pool)


async def test_a_run_reports_where_its_time_went() -> None:
    async with SandboxPool(workers=1, limits=FAST, preload=()) as pool:
        r = await pool.run("import time\ntime.sleep(0.2)")
        steps = {"refill", "idle", "take", "to_program", "program", "exit", "run", "reap", "cleanup", "worker", "host"}
        assert r.status == "ok" and set(r.phases) == steps, r.phases
        assert r.phases["program"] >= 0.2 and r.phases["run"] >= r.phases["program"]
        assert r.phases["worker"] >= r.phases["run"] and all(v >= 0 for v in r.phases.values())
        r = await pool.run("import os\nos._exit(4)")  # never returns to the child: no clocks of its own
        assert r.exit_code == 4 and "program" not in r.phases and r.phases["run"] > 0


async def test_stdin_is_delivered_even_beyond_a_pipe_buffer() -> None:
    async with SandboxPool(workers=1, limits=FAST, preload=()) as pool:
        r = await pool.run("import sys\nprint(sys.stdin.read().upper())", stdin="abc")
        assert r.stdout == "ABC\n"
        big = "x" * (1 << 20)
        r = await pool.run("import sys\nprint(len(sys.stdin.read()))", stdin=big)
        assert r.stdout == f"{len(big)}\n"
        r = await pool.run("print('no read')", stdin=big)  # the program never reads: must not block
        assert (r.status, r.stdout) == ("ok", "no read\n")


async def test_channel_on_fd3_is_separate_from_stdout_and_capped() -> None:
    limits = dataclasses.replace(FAST, channel_bytes=10)
    async with SandboxPool(workers=1, limits=limits, preload=()) as pool:
        r = await pool.run("import os\nprint('stdout')\nos.write(3, b'\\x00reward')")
        assert (r.stdout, r.channel, r.channel_truncated) == ("stdout\n", b"\x00reward", False)
        r = await pool.run("import os\nos.write(3, b'y' * 100000)\nprint('done')")
        assert (r.status, r.channel, r.channel_truncated, r.stdout) == ("ok", b"y" * 10, True, "done\n")
        r = await pool.run("print('forged')")
        assert r.channel == b""


async def test_only_fds_0_to_3_are_open_in_the_program() -> None:
    code = "import os\nprint(sorted(int(f) for f in os.listdir('/proc/self/fd')))"
    async with SandboxPool(workers=1, limits=FAST, preload=()) as pool:
        r = await pool.run(code)
        # the listing itself opens one directory descriptor (4)
        assert r.stdout == "[0, 1, 2, 3, 4]\n", r


async def test_per_run_limits_override_the_pool_limits() -> None:
    async with SandboxPool(workers=1, limits=FAST, preload=()) as pool:
        r = await pool.run("import time\ntime.sleep(2)\nprint('late')", limits=dataclasses.replace(FAST, wall_s=0.3))
        assert r.status == "timeout" and r.stdout == ""
        r = await pool.run("import time\ntime.sleep(0.5)\nprint('in time')")
        assert (r.status, r.stdout) == ("ok", "in time\n")


async def test_cpu_limit_kills_a_busy_loop() -> None:
    async with SandboxPool(workers=1, limits=dataclasses.replace(FAST, cpu_s=1), preload=()) as pool:
        r = await pool.run("while True:\n    pass")
        assert r.status == "timeout" and "CPU" in r.reason, r
        await ok42(pool)


async def test_waiters_are_served_first_in_first_out() -> None:
    async with SandboxPool(workers=1, limits=FAST, preload=()) as pool:
        order: list[int] = []

        async def one(i: int) -> None:
            r = await pool.run(f"print({i})")
            order.append(int(r.stdout))

        tasks = []
        for i in range(8):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(0)  # enqueue in a known order
        await asyncio.gather(*tasks)
        assert order == list(range(8))


async def test_concurrency_is_bounded_by_workers() -> None:
    code = "import os, time\ntime.sleep(0.3)\nprint(os.getpid())"
    async with SandboxPool(workers=2, limits=FAST, preload=()) as pool:
        results = await asyncio.gather(*(pool.run(code) for _ in range(4)))
        assert all(r.status == "ok" for r in results)
        assert pool.stats["runs"] == 4 and pool.stats["workers_started"] == 2


async def test_cancelled_run_kills_its_child_and_the_worker_is_reused() -> None:
    async with SandboxPool(workers=1, limits=FAST, preload=()) as pool:
        task = asyncio.create_task(pool.run("import time\nprint('started', flush=True)\ntime.sleep(60)"))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        r = await asyncio.wait_for(pool.run(PIDS), 10)
        assert r.status == "ok" and len(json.loads(r.stdout)) == 2, r  # the worker (1) and this run only
        assert pool.stats["workers_replaced"] == 0


async def test_cancelled_waiter_does_not_lose_a_worker() -> None:
    async with SandboxPool(workers=1, limits=FAST, preload=()) as pool:
        busy = asyncio.create_task(pool.run("import time\ntime.sleep(0.5)"))
        await asyncio.sleep(0.1)
        waiting = asyncio.create_task(pool.run("print('never')"))
        await asyncio.sleep(0.1)
        waiting.cancel()
        assert (await busy).status == "ok"
        await ok42(pool)


async def test_workers_are_recycled_after_n_runs() -> None:
    async with SandboxPool(workers=1, limits=FAST, preload=(), recycle_after=2) as pool:
        for _ in range(5):
            await ok42(pool)
        assert pool.stats["workers_replaced"] == 2


async def test_a_dead_worker_is_replaced_transparently() -> None:
    async with SandboxPool(workers=1, limits=FAST, preload=()) as pool:
        await ok42(pool)
        (worker,) = pool._live
        worker.proc.kill()
        await worker.proc.wait()
        await ok42(pool)
        assert pool.stats["workers_replaced"] == 1


async def test_close_is_final_and_idempotent() -> None:
    pool = SandboxPool(workers=1, limits=FAST, preload=())
    async with pool:
        await ok42(pool)
    await pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        await pool.run("print(1)")
    with pytest.raises(RuntimeError, match="new pool"):
        await pool.start()


async def test_preloaded_gurobipy_solves_in_a_warm_worker() -> None:
    pytest.importorskip("gurobipy")
    code = (
        "import sys, gurobipy as gp\nm = gp.Model()\nm.Params.OutputFlag = 0\nx = m.addVar(ub=4)\n"
        "m.setObjective(2 * x, gp.GRB.MAXIMIZE)\nm.optimize()\nprint(m.ObjVal)\n"
        "print('already imported:', 'gurobipy' in sys.modules)"
    )
    async with SandboxPool(workers=1, limits=FAST, preload=("gurobipy",)) as pool:
        r = await pool.run(code)
        assert r.status == "ok", r
        assert "8.0\n" in r.stdout


async def test_a_failing_preload_refuses_to_start() -> None:
    with pytest.raises(SandboxUnavailable, match="no_such_module_xyz"):
        async with SandboxPool(workers=1, preload=("no_such_module_xyz",)):
            pass


async def test_process_isolation_runs_but_is_labelled_unsafe(caplog: pytest.LogCaptureFixture) -> None:
    code = (
        "import os, subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'], start_new_session=True)\n"
        "print(os.getuid(), p.pid)"
    )
    blocked = (
        "import ctypes, os, socket\ntry:\n    socket.socket(socket.AF_INET)\nexcept OSError as e:\n    print(e.errno)\n"
        "libc = ctypes.CDLL(None, use_errno=True)\nprint(libc.ptrace(16, os.getppid(), 0, 0), ctypes.get_errno())"
    )
    async with SandboxPool(workers=1, limits=FAST, preload=(), isolation="process") as pool:
        r = await pool.run(code)
        assert r.status == "ok", r
        _uid, daemon = map(int, r.stdout.split())
        assert not Path(f"/proc/{daemon}").exists()  # the setsid child was killed and reaped
        r = await pool.run(blocked)
        assert (r.status, r.stdout) == ("ok", "97\n-1 1\n"), r  # seccomp: AF_INET refused, ptrace denied
        await ok42(pool)
    assert "NOT a sandbox" in caplog.text


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "sandbox", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False)


def test_cli_prints_the_result_as_json(tmp_path: Path) -> None:
    prog = tmp_path / "prog.py"
    prog.write_text("import os\nprint('hello')\nos.write(3, b'ch')\nraise SystemExit(4)")
    done = _cli("run", str(prog), "--wall-s", "5")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["status"], data["exit_code"], data["stdout"]) == ("error", 4, "hello\n")
    assert base64.b64decode(data["channel_b64"]) == b"ch"


def test_cli_missing_file_is_a_one_line_error_with_exit_2(tmp_path: Path) -> None:
    done = _cli("run", str(tmp_path / "missing.py"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "missing.py" in done.stderr and "Traceback" not in done.stderr


def test_process_mode_seccomp_numbers_cover_the_jail_policy() -> None:
    from sandbox import _seccomp
    from sandbox.jail import DENIED_SYSCALLS, seccomp_policy

    assert set(_seccomp.X86_64_DENIED) == set(DENIED_SYSCALLS)
    assert "clone3" in seccomp_policy() and "domain != 1" in seccomp_policy()


def test_the_package_imports_nothing_heavy_and_nothing_else_of_the_project() -> None:
    probe = (
        "import sys, sandbox, sandbox.__main__\n"
        "bad = {'torch', 'transformers', 'numpy', 'engine', 'solvers', 'learner', 'gurobipy', 'ortools'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bad))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout == "[]\n"
