"""A 2-rank torchrun CPU run against two SGLang protocol peers (tests/engine/sglang_server.py, each in its own
process, recording every request): each server receives exactly one weight update per step, from one rank,
and all samples of a group come from one server.

Run: .venv/bin/pytest tests/engine/test_sglang_torchrun.py -m slow
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

REPO = Path(__file__).resolve().parents[2]
PEER = Path(__file__).with_name("sglang_server.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert server.poll() is None and time.monotonic() < deadline, f"the peer at {url} did not start"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.1)


@pytest.mark.slow
def test_two_ranks_two_servers_one_update_per_server_per_step(tiny_model, tmp_path):
    urls, servers, records = [], [], []
    try:
        for k in range(2):
            port, record = free_port(), tmp_path / f"server{k}.jsonl"
            cmd = [sys.executable, str(PEER), "--port", str(port), "--record", str(record)]
            servers.append(subprocess.Popen(cmd, stderr=subprocess.DEVNULL))
            urls.append(f"http://127.0.0.1:{port}")
            records.append(record)
            wait_up(urls[-1], servers[-1])
        torchrun = Path(sys.executable).parent / "torchrun"
        args = [str(torchrun), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
                "-m", "engine.run", "--quiet",
                f"model.path={tiny_model}", f"run.output_dir={tmp_path}", "run.name=t", "run.steps=2",
                "run.save_every=2", "rollout.prompts_per_step=4", "rollout.group_size=3",
                "generation.sampling.max_new_tokens=8", "sandbox.workers=1", "data.num_problems=16",
                "generation.backend=sglang", f"generation.sglang={{urls: [{urls[0]}, {urls[1]}]}}"]  # fmt: skip
        done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, start_new_session=True)
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        for server in servers:
            server.terminate()
            server.wait()
    requests = [[orjson.loads(line) for line in r.read_bytes().splitlines()] for r in records]
    for k, rows in enumerate(requests):
        updates = [r for r in rows if r["path"] == "/update_weights_from_disk"]
        # One update per step (versions 1 and 2), not one per rank: rank k alone controls server k.
        assert [u["weight_version"] for u in updates] == ["1", "2"], f"server {k}: {updates}"
        assert not [r for r in rows if r["path"] in ("/begin_weight_update", "/flush_cache")]
    servers_of = defaultdict(set)
    for k, rows in enumerate(requests):
        for r in rows:
            if r["path"] == "/generate":
                prefix, prompt, _, _ = r["rid"].split("-")
                servers_of[(prefix, prompt)].add(k)
    # 2 steps x 4 groups of 3, each group's samples on one server.
    assert len(servers_of) == 8 and all(len(s) == 1 for s in servers_of.values())
    assert {k for s in servers_of.values() for k in s} == {0, 1}
