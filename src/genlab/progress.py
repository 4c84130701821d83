"""Progress of long loops inside the library (a held-out likelihood over many batches, a sampler's
steps), shown by the command that asked for it.

A model's batched loop iterates ``chunks(x, size)`` instead of ``torch.split(x, size)`` (the same
chunks), and a sampler's loop ``steps(n)`` instead of ``range(n)``. Inside
``with reporting("eval: likelihood"):`` (which ``genlab eval`` opens around each stage and
``genlab sample`` around its sampling) each loop prints ``eval: likelihood: 128/500 rows, ETA
00:00:31`` on stderr, at most every ``every`` seconds and not for a loop that ends before the
first line is due; outside one it prints nothing, so the library stays quiet when used from
Python.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

import torch

T = TypeVar("T")
_ACTIVE: ContextVar[_Reporter | None] = ContextVar("genlab_progress", default=None)


def eta(seconds: float) -> str:
    """``HH:MM:SS`` (or ``N h`` past a day)."""
    return (
        time.strftime("%H:%M:%S", time.gmtime(seconds))
        if seconds < 86400
        else (f"{seconds / 3600:.0f} h")
    )


class _Reporter:
    def __init__(self, what: str, every: float) -> None:
        self.what, self.every = what, every
        self.busy = False  # a loop is being reported: the loops inside it are not

    def update(self, done: int, total: int, t0: float, last: float, unit: str) -> float:
        now = time.perf_counter()
        if now - last < self.every or done >= total:
            return last
        left = (now - t0) / done * (total - done)
        print(f"{self.what}: {done}/{total} {unit}, ETA {eta(left)}", file=sys.stderr, flush=True)
        return now


@contextmanager
def reporting(what: str, every: float = 10.0) -> Iterator[None]:
    """Show the progress of the :func:`chunks` and :func:`step_range` loops run inside (the
    outermost one at a time), as ``what: done/total unit, ETA`` lines on stderr every ``every``
    seconds."""
    token = _ACTIVE.set(_Reporter(what, every))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def _report(items: Sequence[T], sizes: Sequence[int], unit: str) -> Iterator[T]:
    """Yield ``items``; inside :func:`reporting` (and no other loop being reported) report the
    running sum of ``sizes`` out of their total."""
    reporter = _ACTIVE.get()
    if reporter is None or reporter.busy:
        yield from items
        return
    reporter.busy = True
    try:
        total, done = sum(sizes), 0
        t0 = last = time.perf_counter()
        for item, size in zip(items, sizes, strict=True):
            yield item
            done += size
            last = reporter.update(done, total, t0, last, unit)
    finally:
        reporter.busy = False


def chunks(x: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    """``torch.split(x, size)`` along the first dimension, reporting the rows done to the
    enclosing :func:`reporting`, if any."""
    parts = torch.split(x, size)
    return _report(parts, [len(p) for p in parts], "rows")


def step_range(*args: int, unit: str = "steps") -> Iterator[int]:
    """``range(*args)`` (a sampler's steps), reporting how many are done (in ``unit``) to the
    enclosing :func:`reporting`, if any."""
    r = range(*args)
    return _report(r, [1] * len(r), unit)
