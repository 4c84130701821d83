"""Progress of long loops inside the library (a held-out likelihood over many batches), shown by the
command that asked for it.

A model's batched loop iterates ``chunks(x, size)`` instead of ``torch.split(x, size)``; it yields
the same chunks. Inside ``with reporting("eval: likelihood"):`` (which ``genlab eval`` opens around
its likelihood stage) each pass over ``x`` prints ``eval: likelihood: 128/500 rows, ETA 00:00:31``
on stderr, at most every ``every`` seconds and not for a pass that ends before the first line
is due; outside one it prints nothing, so the library stays quiet when used from Python.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

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
        self.lines = 0

    def start(self) -> tuple[float, float]:
        now = time.perf_counter()
        return now, now

    def update(self, done: int, total: int, t0: float, last: float) -> float:
        now = time.perf_counter()
        if now - last < self.every or done >= total:
            return last
        left = (now - t0) / done * (total - done)
        print(f"{self.what}: {done}/{total} rows, ETA {eta(left)}", file=sys.stderr, flush=True)
        self.lines += 1
        return now


@contextmanager
def reporting(what: str, every: float = 10.0) -> Iterator[None]:
    """Show the progress of the :func:`chunks` loops run inside, as ``what: done/total rows, ETA``
    lines on stderr every ``every`` seconds."""
    token = _ACTIVE.set(_Reporter(what, every))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def chunks(x: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    """``torch.split(x, size)`` along the first dimension, reporting each pass's progress to the
    enclosing :func:`reporting`, if any."""
    reporter = _ACTIVE.get()
    if reporter is None:
        yield from torch.split(x, size)
        return
    t0, last = reporter.start()
    done = 0
    for part in torch.split(x, size):
        yield part
        done += len(part)
        last = reporter.update(done, len(x), t0, last)
