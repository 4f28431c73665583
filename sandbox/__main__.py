"""Command line: run one Python file in the sandbox and print its Result as JSON.

    python -m sandbox run prog.py [--stdin-file IN] [--wall-s 10] [--memory-mb 1024] [--isolation nsjail]
        [--preload numpy ...] [--no-channel]

Exit status: 0 when the run happened (whatever the program did; read "status"), 2 for bad input,
3 when the sandbox could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from sandbox.pool import ISOLATIONS, SandboxPool
from sandbox.types import Limits, Result, SandboxUnavailable


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one file and print its Result as JSON")
    run.add_argument("file", type=Path)
    run.add_argument("--stdin-file", type=Path, default=None, help="file whose text is the program's stdin")
    defaults = Limits()
    run.add_argument("--wall-s", type=float, default=defaults.wall_s)
    run.add_argument("--cpu-s", type=float, default=defaults.cpu_s)
    run.add_argument("--memory-mb", type=int, default=defaults.memory_mb)
    run.add_argument("--max-procs", type=int, default=defaults.max_procs)
    run.add_argument("--output-bytes", type=int, default=defaults.output_bytes)
    run.add_argument("--tmp-mb", type=int, default=defaults.tmp_mb)
    run.add_argument("--isolation", choices=ISOLATIONS, default="nsjail")
    run.add_argument("--preload", nargs="*", default=[], help="modules the worker imports first")
    run.add_argument("--no-channel", action="store_true", help="leave fd 3's bytes out of the JSON")
    return parser


async def _run_once(code: str, stdin: str, limits: Limits, args: argparse.Namespace) -> Result:
    async with SandboxPool(workers=1, limits=limits, preload=tuple(args.preload), isolation=args.isolation) as pool:
        return await pool.run(code, stdin)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code = args.file.read_text()
        stdin = args.stdin_file.read_text() if args.stdin_file else ""
        limits = Limits(
            wall_s=args.wall_s,
            cpu_s=args.cpu_s,
            memory_mb=args.memory_mb,
            max_procs=args.max_procs,
            output_bytes=args.output_bytes,
            tmp_mb=args.tmp_mb,
        )
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        print(f"sandbox: bad input: {exc}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(_run_once(code, stdin, limits, args))
    except SandboxUnavailable as exc:
        print(f"sandbox: cannot start: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(result.to_json_dict(channel=not args.no_channel), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
