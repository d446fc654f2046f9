"""Progress on long work: a tqdm bar in a terminal, a plain line every ~10 % anywhere else.

A bar redraws itself with carriage returns; written to a file (a SLURM job's log, nohup, CI) that is hundreds of
kilobytes of redraws per run. Where stderr is not a terminal, `progress` prints one line per tenth of the work
instead: `sst2 v s0: 40% (16/40), epoch=1, loss=0.512, 3.1 s`.
"""
from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm


def progress(iterable=None, total: int | None = None, desc: str = "", enabled: bool = True, stream=None):
    """A tqdm bar (in a terminal) or a LineProgress (elsewhere) over `iterable` or `total` steps; disabled: silent."""
    stream = stream or sys.stderr
    if not enabled or stream.isatty():
        return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True,
                    file=stream)
    return LineProgress(iterable, total, desc, stream)


class LineProgress:
    """The part of tqdm's interface beft uses (iteration, update, set_postfix, close), as lines at each tenth."""

    def __init__(self, iterable=None, total: int | None = None, desc: str = "", stream=None, parts: int = 10):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.stream = iterable, total, desc, stream or sys.stderr
        self.n, self.parts, self.shown, self.postfix = 0, parts, 0, {}
        self.start = time.perf_counter()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def set_postfix(self, **values) -> None:
        self.postfix = values

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.total:
            return
        part = min(self.parts, self.n * self.parts // self.total)
        if part > self.shown:
            self.shown = part
            self._line()

    def _line(self) -> None:
        done = f"{100 * self.n // self.total}% ({self.n}/{self.total})" if self.total else f"{self.n}"
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {done}{extra}, {time.perf_counter() - self.start:.1f} s", file=self.stream, flush=True)

    def close(self) -> None:
        if self.total is None and self.n:   # an unknown length: one line at the end
            self._line()
        self.total = 0   # closed: further updates print nothing
