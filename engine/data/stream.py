"""Training order: every epoch is a fresh shuffle, a pure function of (seed, epoch), sharded by rank.

    stream = ProblemStream(problems, seed=0)   # one problem at a time (the rollout's order); stream.state resumes
    epoch, problem = stream.next()
    for step, batch in enumerate(iter_batches(problems, 4, seed=0, start_step=resume_step), resume_step):
        ...                                    # batch: list of 4 problems, same on every rerun

With B the per-rank batch size and W the world size, each epoch is cut into ceil(n / (B*W)) global
batches of B*W consecutive positions of that epoch's order; the last one wraps around to the epoch's
start to fill up. Rank r takes every W-th position of a global batch starting at r. So a resumed run sees
exactly the batches it would have seen, every epoch shows every problem, and the ranks of one step never
share a problem while B*W <= n.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Generic, TypeVar

from engine.data.benchmarks import DataError

T = TypeVar("T")


def epoch_order(n: int, *, seed: int, epoch: int) -> tuple[int, ...]:
    """The permutation of range(n) used in `epoch`."""
    return _order(n, seed, epoch)


@lru_cache(maxsize=8)
def _order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(f"evom-order/{seed}/{epoch}").shuffle(order)
    return tuple(order)


def iter_epoch(items: Sequence[T], *, seed: int, epoch: int) -> Iterator[T]:
    for i in epoch_order(len(items), seed=seed, epoch=epoch):
        yield items[i]


def batch_at(
    items: Sequence[T], batch_size: int, step: int, *, seed: int, rank: int = 0, world_size: int = 1
) -> list[T]:
    """This rank's batch for `step`."""
    _check(items, batch_size, rank, world_size)
    n = len(items)
    size = batch_size * world_size
    epoch, k = divmod(step, -(-n // size))
    order = epoch_order(n, seed=seed, epoch=epoch)
    return [items[order[(k * size + pos) % n]] for pos in range(rank, size, world_size)]


def iter_batches(
    items: Sequence[T], batch_size: int, *, seed: int, start_step: int = 0, rank: int = 0, world_size: int = 1
) -> Iterator[list[T]]:
    """Endless batches from `start_step` on; stop with `itertools.islice` or the training loop."""
    _check(items, batch_size, rank, world_size)
    step = start_step
    while True:
        yield batch_at(items, batch_size, step, seed=seed, rank=rank, world_size=world_size)
        step += 1


def _check(items: Sequence[object], batch_size: int, rank: int, world_size: int) -> None:
    if not items:
        raise DataError("no problems to iterate over (the data set is empty)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")


class ProblemStream(Generic[T]):
    """Items one at a time in training order: a fresh permutation per (seed, epoch).

    One at a time because dynamic sampling takes as many problems as it needs; `state` (epoch, position)
    resumes a run exactly where it stopped.
    """

    def __init__(self, items: Sequence[T], *, seed: int, epoch: int = 0, position: int = 0) -> None:
        if not items:
            raise DataError("the problem stream needs at least one problem; check data.train")
        self.items, self.seed = items, seed
        self.epoch, self.position = epoch, position
        self._order = epoch_order(len(items), seed=seed, epoch=epoch)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def state(self) -> tuple[int, int]:
        return self.epoch, self.position

    def next(self) -> tuple[int, T]:
        """(epoch, item) of the next position; the epoch after the last position starts a new permutation."""
        if self.position >= len(self._order):
            self.epoch, self.position = self.epoch + 1, 0
            self._order = epoch_order(len(self.items), seed=self.seed, epoch=self.epoch)
        epoch, item = self.epoch, self.items[self._order[self.position]]
        self.position += 1
        return epoch, item
