"""Adversarial programs: one test per property, each asserting containment AND that the next run works.

The session runs inside capped cgroups (conftest.py), so a containment bug fails here instead of taking
the machine down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from sandbox import Limits, SandboxPool

LIMITS = Limits(wall_s=5, cpu_s=5, memory_mb=256, max_procs=16, output_bytes=1 << 16, tmp_mb=8)
SHORT = dataclasses.replace(LIMITS, wall_s=1.0)
ONLY_ME = "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"


@pytest_asyncio.fixture
async def pool() -> AsyncIterator[SandboxPool]:
    async with SandboxPool(workers=1, limits=LIMITS, preload=()) as p:
        yield p


async def next_run_works(pool: SandboxPool) -> None:
    """The next run is healthy, alone in its jail (the worker is pid 1, this run the only other process)."""
    r = await pool.run(ONLY_ME)
    assert r.status == "ok", r
    pids = json.loads(r.stdout)
    assert len(pids) == 2 and pids[0] == 1, pids
    r = await pool.run("print(6 * 7)")
    assert (r.status, r.stdout) == ("ok", "42\n"), r


async def test_infinite_loop_times_out(pool: SandboxPool) -> None:
    r = await pool.run("while True:\n    pass", limits=SHORT)
    assert r.status == "timeout" and r.signal == 9 and r.wall_s < 3, r
    await next_run_works(pool)


async def test_sleep_times_out(pool: SandboxPool) -> None:
    r = await pool.run("import time\ntime.sleep(1000)", limits=SHORT)
    assert r.status == "timeout" and r.wall_s < 3, r
    await next_run_works(pool)


async def test_sigterm_ignoring_loop_is_killed(pool: SandboxPool) -> None:
    code = """import signal, time
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
while True:
    time.sleep(0.01)
"""
    r = await pool.run(code, limits=SHORT)
    assert r.status == "timeout", r
    await next_run_works(pool)


async def test_fork_bomb_is_capped_by_max_procs(pool: SandboxPool) -> None:
    code = """import os, time
n = 0
for _ in range(10000):
    try:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        n += 1
    except OSError:
        break
print(n, flush=True)
time.sleep(60)
"""
    r = await pool.run(code, limits=SHORT)
    assert r.status == "timeout", r
    assert 0 < int(r.stdout) < LIMITS.max_procs, r.stdout  # fork failed at the pids limit
    await next_run_works(pool)


async def test_exponential_fork_bomb_is_contained(pool: SandboxPool) -> None:
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    r = await pool.run(code, limits=SHORT)
    assert r.status == "timeout", r
    await next_run_works(pool)


async def test_thread_bomb_is_capped(pool: SandboxPool) -> None:
    code = (
        "import threading, time\nn = 0\ntry:\n    while True:\n"
        "        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n        n += 1\n"
        "except RuntimeError as e:\n    print(n, e)"
    )
    r = await pool.run(code, limits=SHORT)
    assert r.status == "ok" and "can't start new thread" in r.stdout, r
    assert int(r.stdout.split()[0]) < LIMITS.max_procs
    await next_run_works(pool)


async def test_memory_bomb_in_one_process(pool: SandboxPool) -> None:
    r = await pool.run("chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))")
    assert r.status == "memory", r
    r = await pool.run("x = bytearray(8 << 30)")
    assert r.status == "memory", r
    await next_run_works(pool)


@pytest.mark.slow
async def test_memory_bomb_across_processes_hits_the_cgroup(pool: SandboxPool) -> None:
    # every process stays under its own address-space limit; together they pass the cgroup's memory limit
    code = (
        "import os, time\nkids = []\nfor _ in range(6):\n    pid = os.fork()\n    if pid == 0:\n"
        "        b = b'x' * (200 << 20)\n        time.sleep(2)\n        os._exit(0)\n    kids.append(pid)\n"
        "print([os.waitpid(k, 0)[1] & 0x7F for k in kids], flush=True)"
    )
    r = await pool.run(code, limits=dataclasses.replace(LIMITS, wall_s=10))
    assert r.status == "memory" or "9" in r.stdout, r  # the main process or its children were OOM-killed
    assert r.status != "timeout"
    await next_run_works(pool)


async def test_output_bomb_is_cut_and_flagged(pool: SandboxPool) -> None:
    r = await pool.run("while True:\n    print('x' * 1000)")
    assert r.status == "output_limit" and r.truncated and len(r.stdout) <= LIMITS.output_bytes, r.status
    r = await pool.run("import sys\nsys.stderr.write('e' * (10 << 20))")
    assert r.status == "output_limit" and r.truncated and len(r.stderr) <= LIMITS.output_bytes
    r = await pool.run("import os\nwhile True:\n    os.write(3, b'c' * 65536)", limits=SHORT)
    assert r.status == "timeout" and r.channel_truncated and len(r.channel) == LIMITS.channel_bytes
    await next_run_works(pool)


async def test_tmp_disk_fill_is_capped_and_wiped(pool: SandboxPool) -> None:
    code = (
        "import os\nn = 0\nfor path in ('/tmp/fill-a', '/tmp/run/fill-b', 'fill-c'):\n    try:\n"
        "        with open(path, 'wb') as f:\n            while True:\n                f.write(b'\\0' * (1 << 20))\n"
        "                f.flush()\n                n += 1\n    except OSError as e:\n        pass\nprint(n)"
    )
    r = await pool.run(code)
    assert r.status in ("ok", "error") and "File size limit" not in r.stderr, r
    if r.status == "ok":
        assert int(r.stdout) <= LIMITS.tmp_mb + 1
    r = await pool.run("import os\nprint(os.listdir('/tmp'), os.listdir('.'))")
    assert r.stdout == "['run'] ['main.py']\n", r
    await next_run_works(pool)


async def test_stdin_reads_only_what_was_given(pool: SandboxPool) -> None:
    r = await pool.run("import sys\nprint(repr(sys.stdin.read()))", limits=SHORT)
    assert (r.status, r.stdout) == ("ok", "''\n")  # end of file at once: neither the host's stdin nor the protocol
    r = await pool.run("a = input()\nb = input()", stdin="one line\n", limits=SHORT)
    assert r.status == "error" and "EOFError" in r.stderr
    await next_run_works(pool)


async def test_no_network_to_the_hosts_loopback(pool: SandboxPool) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    port = server.getsockname()[1]
    code = f"""import socket
out = []
for name, attempt in [
    ("tcp", lambda: socket.create_connection(("127.0.0.1", {port}), timeout=1)),
    ("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", {port}))),
    ("tcp6", lambda: socket.create_connection(("::1", {port}), timeout=1)),
    ("dns", lambda: socket.getaddrinfo("example.com", 80)),
    ("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)),
]:
    try:
        attempt()
        out.append(name + ":open")
    except OSError as e:
        out.append(name + ":blocked")
print(" ".join(out))
"""
    try:
        r = await pool.run(code)
        assert r.stdout.split() == ["tcp:blocked", "udp:blocked", "tcp6:blocked", "dns:blocked", "netlink:blocked"], r
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()
    await next_run_works(pool)


async def test_host_files_and_environment_are_invisible(pool: SandboxPool, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t")
    os.environ["EVOM_SANDBOX_SECRET"] = "s3cr3t-env"
    repo = Path(__file__).resolve().parents[2]
    targets = [
        str(secret),
        "/etc/passwd",
        "/etc/shadow",
        "/root/.bashrc",
        "/root/.ssh",
        str(repo / "pyproject.toml"),
        str(repo / "sandbox"),
        "/work/shared",
        "/home",
        "/proc/1/environ",
        "/sys/fs/cgroup",
    ]
    code = f"""import os
seen = []
for path in {targets!r}:
    try:
        seen.append(path + ":" + (str(os.listdir(path)) if os.path.isdir(path) else open(path).read()[:20]))
    except OSError:
        pass
print(seen, [k for k in os.environ if "SECRET" in k or "PYTEST" in k])
"""
    try:
        r = await pool.run(code)
    finally:
        del os.environ["EVOM_SANDBOX_SECRET"]
    assert (r.status, r.stdout) == ("ok", "[] []\n"), r
    await next_run_works(pool)


async def test_host_paths_and_site_packages_are_read_only(pool: SandboxPool, tmp_path: Path) -> None:
    import site

    marker = tmp_path / "written-by-sandbox"
    code = f"""import os, sys, sysconfig
wrote = []
for path in [{str(marker)!r}, os.path.join({site.getsitepackages()[0]!r}, "evil.pth"),
             os.path.join(sysconfig.get_paths()["stdlib"], "evil.py"), "/usr/lib/evil", "/evil", sys.executable]:
    try:
        with open(path, "a") as f:
            f.write("pwned")
        wrote.append(path)
    except OSError:
        pass
print(wrote)
"""
    r = await pool.run(code)
    assert (r.status, r.stdout) == ("ok", "[]\n"), r
    assert not marker.exists()
    await next_run_works(pool)


async def test_ptrace_and_parent_memory_are_denied(pool: SandboxPool) -> None:
    code = """import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
out = [libc.ptrace(16, os.getppid(), 0, 0), ctypes.get_errno()]  # PTRACE_ATTACH
for path in ("/proc/1/mem", "/proc/1/fd/0", "/proc/1/fd/64"):
    try:
        open(path, "rb").read(1)
        out.append(path)
    except OSError:
        pass
try:
    os.listdir("/proc/1/fd")
    out.append("fd-listed")
except OSError:
    pass
print(out)
"""
    r = await pool.run(code)
    assert (r.status, r.stdout) == ("ok", "[-1, 1]\n"), r
    await next_run_works(pool)


async def test_killing_the_parent_and_kill_minus_one_leave_the_worker_alive(pool: SandboxPool) -> None:
    code = """import os, signal
for target in (os.getppid(), 1, -1):
    for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGSTOP):
        try:
            os.kill(target, sig)
        except OSError:
            pass
print("still here", os.getppid())
"""
    r = await pool.run(code)
    assert (r.status, r.stdout) == ("ok", "still here 1\n"), r
    await next_run_works(pool)
    assert pool.stats["workers_replaced"] == 0


async def test_garbage_on_every_fd_does_not_reach_the_protocol(pool: SandboxPool) -> None:
    code = """import os
for fd in range(1024):
    try:
        os.write(fd, os.urandom(4096))
    except OSError:
        pass
"""
    r = await pool.run(code)
    assert r.status == "ok" and r.stdout and r.stderr and len(r.channel) == 4096, r
    await next_run_works(pool)
    assert pool.stats["workers_replaced"] == 0


async def test_detached_daemon_does_not_survive_into_the_next_run(pool: SandboxPool) -> None:
    code = """import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.close(1); os.close(2)
        while True:
            with open("/tmp/daemon-was-here", "a") as f:
                f.write("x")
            time.sleep(0.05)
    os._exit(0)
time.sleep(0.2)
print(os.path.exists("/tmp/daemon-was-here"))
"""
    r = await pool.run(code)
    assert (r.status, r.stdout) == ("ok", "True\n"), r
    r = await pool.run("import os, time\ntime.sleep(0.3)\nprint(os.path.exists('/tmp/daemon-was-here'))")
    assert (r.status, r.stdout) == ("ok", "False\n"), r
    await next_run_works(pool)


@pytest.mark.slow
async def test_forty_benign_runs_mixed_with_bombs_are_all_correct() -> None:
    bombs = [
        ("while True:\n    pass", "timeout"),
        ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", "timeout"),
        ("x = bytearray(8 << 30)", "memory"),
        ("while True:\n    print('y' * 4096)", "output_limit"),
        (
            "import os\nif os.fork() == 0:\n    os.kill(-1, 9)\nelse:\n    os.kill(os.getppid(), 9)\n    os.wait()",
            "killed",
        ),
    ]
    rng = random.Random(7)
    jobs = [("benign", i) for i in range(40)] + [("bomb", i % len(bombs)) for i in range(10)]
    rng.shuffle(jobs)
    async with SandboxPool(workers=2, limits=dataclasses.replace(LIMITS, wall_s=1.5), preload=()) as pool:

        async def one(kind: str, i: int) -> None:
            if kind == "benign":
                r = await pool.run("import sys\nn = int(sys.stdin.read())\nprint(n * n)", stdin=str(i))
                assert (r.status, r.stdout) == ("ok", f"{i * i}\n"), r
            else:
                code, status = bombs[i]
                r = await pool.run(code)
                assert r.status == status, (code, r)

        await asyncio.gather(*(one(kind, i) for kind, i in jobs))
        await next_run_works(pool)


async def test_no_processes_or_cgroups_left_after_close() -> None:
    pool = SandboxPool(workers=2, limits=LIMITS, preload=())
    await pool.start()
    workers = list(pool._live)
    cgroup_dirs = [d for w in workers if w.cgroup for d in w.cgroup.dirs.values()]
    host_pids = {w.proc.pid for w in workers} | {p for w in workers if w.cgroup for p in w.cgroup.pids()}
    daemon = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\ntime.sleep(60)"
    task = asyncio.create_task(pool.run(daemon))
    await asyncio.sleep(0.5)
    host_pids |= {p for w in workers if w.cgroup for p in w.cgroup.pids()}
    await pool.close()
    r = await task
    assert r.status == "sandbox_error" and "closed" in r.reason
    assert not [p for p in host_pids if Path(f"/proc/{p}").exists()]
    assert not [d for d in cgroup_dirs if d.exists()]
    if pool._cgroups is not None:
        assert not [d for d in pool._cgroups.dirs.values() if d.exists()]


async def test_concurrent_runs_in_different_workers_cannot_see_each_other() -> None:
    code = """import os, sys, time
open("/tmp/mine-" + sys.stdin.read(), "w").write("x")
time.sleep(0.5)
print(sorted(os.listdir("/tmp")), len([p for p in os.listdir("/proc") if p.isdigit()]))
"""
    async with SandboxPool(workers=2, limits=LIMITS, preload=()) as pool:
        a, b = await asyncio.gather(pool.run(code, stdin="a"), pool.run(code, stdin="b"))
        assert (a.stdout, b.stdout) == ("['mine-a', 'run'] 2\n", "['mine-b', 'run'] 2\n"), (a, b)
        await next_run_works(pool)
