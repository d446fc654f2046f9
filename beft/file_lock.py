"""One exclusive lock file, held for a block: how parallel jobs on one machine (or a shared disk) take turns.

Used for a GPU per job (beft.launch) and for "one job computes a missing cache entry, the others wait and reuse
it" (beft.cache). `flock` locks belong to the open file, so two jobs, two processes or two threads that each open
the path exclude each other, and a job that dies releases its locks with its files.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
from pathlib import Path

log = logging.getLogger("beft")


@contextlib.contextmanager
def exclusive(path: Path, waiting: str | None = None):
    """Yields True while holding `path`'s lock. If another holder has it: with `waiting` None, yields False at
    once (nothing held); otherwise logs `waiting` and blocks until the lock is free."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is None:
                yield False
                return
            log.info(waiting)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
