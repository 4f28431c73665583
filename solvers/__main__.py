"""`python -m solvers verify ...` / `python -m solvers list`; see solvers/cli.py."""

from __future__ import annotations

import sys

from solvers.cli import main

if __name__ == "__main__":
    sys.exit(main())
