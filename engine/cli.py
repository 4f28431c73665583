"""How the command lines end: one mapping from the project's errors to exit codes, for `engine.run`, `engine.eval`,
`engine.sft` and `engine.translate`.

    def main(argv=None) -> int:
        args = parser.parse_args(argv)
        return exit_code(lambda: run(args), bad_input=(EvalInputError,), interrupted="nothing was written")

Bad input (a missing data file, an unknown solver, a bad option) exits 2 and an unusable environment (a solver
package not installed, no sandbox, a generation server failing, a full disk) exits 1, each with one line on
stderr; Ctrl-C exits 130 and SIGTERM 143, each with the command's own note. A command whose work is a coroutine
awaits it through `terminable`, and one whose work is plain code runs it under `sigterm_raises`, so that SIGTERM
unwinds it as Ctrl-C does (every `finally` and `async with` closes what it opened) instead of killing the process
mid-write. Any other exception is a bug and propagates with its traceback: only the project's own error types are
mapped, never a builtin such as KeyError.

Under torchrun, what rank 0 alone does before the ranks work together (create the run directory) goes through
`rank0_decides`: every rank learns its verdict before any waits on another, and on an error every rank ends with
the same exit code, rank 0 alone reporting it (the others raise `ReportedElsewhere`, which `exit_code` ends silently).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from learner.distributed import DistContext

EXIT_ENVIRONMENT = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM

ErrorTypes = tuple[type[Exception], ...]
T = TypeVar("T")


class ReportedElsewhere(Exception):
    """An error another rank of this torchrun reports: this rank ends with the same exit code and no line."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Terminated(Exception):
    """SIGTERM stopped the command (an operator, a scheduler's preemption, torchrun stopping its ranks)."""


async def terminable(coro: Coroutine[Any, Any, T]) -> T:
    """Await `coro`; a SIGTERM meanwhile cancels it (each further one cancels its cleanup too) and, once it has
    unwound, raises Terminated. Outside the main thread, where no signal handler can be set, just awaits it."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    received: list[int] = []

    def stop() -> None:
        received.append(signal.SIGTERM)
        if task is not None:
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, stop)
    except (ValueError, RuntimeError, NotImplementedError):
        return await coro
    try:
        return await coro
    except asyncio.CancelledError:
        if received:
            raise Terminated() from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises Terminated in the main thread, wherever it is, as Ctrl-C raises
    KeyboardInterrupt: `terminable` for work that is not a coroutine (a training loop). A further SIGTERM raises
    again, in the cleanup. The previous handler is back after the block; outside the main thread, where no signal
    handler can be set, the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def launch_rank(name: str = "RANK") -> int:
    """This process's RANK or LOCAL_RANK under torchrun (0 in a plain process), known before the group forms."""
    return int(os.environ.get(name, "0"))


def node_reports(error: Exception) -> Exception:
    """The exception to raise for `error`, bad input every rank of a node meets alike (its files, its arguments)
    before the process group forms: the node's local rank 0 reports it, the other ranks end with the same exit
    code and no line."""
    return ReportedElsewhere(EXIT_BAD_INPUT) if launch_rank("LOCAL_RANK") > 0 else error


def project_errors() -> tuple[ErrorTypes, ErrorTypes]:
    """The (bad input, unusable environment) error types every command line maps.

    Imported on call, not with this module: `--help` and a bad option answer before these packages load."""
    from engine.data import DataError
    from engine.generation import GenerationError
    from sandbox import SandboxUnavailable
    from solvers import SolverUnavailableError, UnknownSolverError

    return (DataError, UnknownSolverError), (SolverUnavailableError, SandboxUnavailable, GenerationError)


def exit_code(
    body: Callable[[], int], *, bad_input: ErrorTypes = (), environment: ErrorTypes = (), interrupted: str
) -> int:
    """`body()`'s exit code, or the code of the project error it raised, reported as one line on stderr.

    `bad_input` and `environment` add the command's own error types to `project_errors()`; `interrupted` says
    what a Ctrl-C or SIGTERM left behind."""
    common_input, common_environment = project_errors()
    try:
        return body()
    except ReportedElsewhere as exc:
        return exc.code
    except KeyboardInterrupt:
        print(f"interrupted: {interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"terminated: {interrupted}", file=sys.stderr)
        return EXIT_TERMINATED
    except (*common_input, *bad_input) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (*common_environment, *environment) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ENVIRONMENT


def rank0_decides(ctx: DistContext, decide: Callable[[], None], *, bad_input: ErrorTypes = ()) -> None:
    """Run `decide` on rank 0 alone and, under torchrun, tell every rank how it went before any waits on another.

    On an error every rank leaves the process group (call this before a model is sharded: the processes then end
    normally); rank 0 raises the error (one line through `exit_code`, or a bug's traceback) and the others
    `ReportedElsewhere` with its exit code: 2 for `bad_input` and `project_errors()`' bad input, 1 for anything
    else (an unusable environment, a bug). Every rank must call this."""
    error: Exception | None = None
    if ctx.rank == 0:
        try:
            decide()
        except Exception as exc:
            error = exc
    if ctx.distributed:
        import torch.distributed as dist

        from learner.distributed import shutdown_distributed

        code: list[int | None] = [None]
        if error is not None:
            common_input, _ = project_errors()
            code = [EXIT_BAD_INPUT if isinstance(error, (*common_input, *bad_input)) else EXIT_ENVIRONMENT]
        dist.broadcast_object_list(code, src=0)
        if code[0] is not None:
            shutdown_distributed()
            if error is None:
                raise ReportedElsewhere(code[0])
    if error is not None:
        raise error
