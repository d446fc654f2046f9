"""One exclusive lock file, held for a block: how parallel jobs on one machine (or a shared disk) take turns.

Used for a GPU per job (beft.launch), a sweep's jobs file (beft.sweep), and "one job computes a missing cache
entry, the others wait and reuse it" (beft.cache). `flock` locks belong to the open file, so two jobs, two
processes or two threads that each open the path exclude each other, and a job that dies releases its locks
with its files.

The lock file may sit on a disk other users write (a shared cache): it is opened without following a symlink and
never truncated on open (beft.files.open_lock), so a planted link cannot make beft empty someone's file. The holder
writes its PID, host and start into it and touches it every few seconds while it holds the lock (a heartbeat);
a waiter names the holder, and gives up with one line when the holder shows no sign of life for `timeout`
seconds (a stopped process, a hung NFS client), instead of waiting forever.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from beft.errors import BeftError
from beft.files import UnsafePath, open_lock

log = logging.getLogger("beft")
DEFAULT_TIMEOUT = 600.0   # seconds a waiter waits for a holder that shows no progress (config: lock_timeout)
HEARTBEAT = 10.0          # seconds between a holder's signs of life (at most a quarter of the timeout)
_HOLDER_BYTES = 4096      # a lock file holds one short line; beft never writes into a larger file


class LockError(BeftError):
    """A lock that cannot be used: not a plain file (UnsafeLock), or a holder that makes no progress."""


class UnsafeLock(LockError):
    """The lock's name is a symlink, a FIFO or a folder: beft will not open it."""


@contextlib.contextmanager
def exclusive(path: Path, waiting: str | None = None, timeout: float | None = None):
    """Yields True while holding `path`'s lock. If another holder has it: with `waiting` None, yields False at
    once (nothing held); otherwise logs `waiting` with the holder and waits until the lock is free, or raises
    LockError once the holder has shown no progress for `timeout` seconds (default DEFAULT_TIMEOUT)."""
    timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd, writable = open_lock(path)
        except UnsafePath as err:
            raise UnsafeLock(f"lock file {err}: beft opens only a plain file there; remove it") from None
        try:
            if not _try_lock(fd):
                if waiting is None:
                    yield False
                    return
                _wait(fd, path, waiting, timeout)
            if not _still_at(fd, path):   # the file was removed (a stale lock cleared) while we waited: retry
                continue
            if writable:
                _announce(fd)
            beat = _Heartbeat(fd, min(HEARTBEAT, timeout / 4)) if writable else None
            try:
                yield True
            finally:
                if beat is not None:
                    beat.stop()
                fcntl.flock(fd, fcntl.LOCK_UN)
            return
        finally:
            os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _still_at(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


def holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it: 'pid 123 on host node7 since 2026-01-01T10:00:00+00:00'."""
    try:
        info = json.loads(os.pread(fd, _HOLDER_BYTES, 0).decode())
        return f"pid {int(info['pid'])} on host {str(info['host'])[:100]} since {str(info['since'])[:40]}"
    except (OSError, ValueError, KeyError, TypeError):
        return "an unknown holder"


def _announce(fd: int) -> None:
    """Write who holds the lock, into a small single-link regular file only (never into anything else)."""
    st = os.fstat(fd)
    if st.st_nlink != 1 or st.st_size > _HOLDER_BYTES:
        return
    line = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}) + "\n"
    try:
        os.pwrite(fd, line.encode(), 0)
        os.ftruncate(fd, len(line.encode()))
    except OSError:
        pass   # a full or read-only disk: the lock still holds, a waiter just cannot name us


def _wait(fd: int, path: Path, waiting: str, timeout: float) -> None:
    """Block until the lock is ours; LockError when the holder shows no progress for `timeout` seconds."""
    log.info("%s (lock %s held by %s)", waiting, path, holder(fd))
    poll = min(1.0, max(0.05, timeout / 20))
    last, progress = _signs(fd), time.monotonic()
    while not _try_lock(fd):
        time.sleep(poll)
        now = _signs(fd)
        if now != last:
            last, progress = now, time.monotonic()
        elif time.monotonic() - progress > timeout:
            raise LockError(f"gave up waiting for {path}: held by {holder(fd)}, which has shown no progress for "
                            f"{timeout:.0f} s (stopped or hung?); if that job is gone, delete the lock file, or "
                            f"wait longer with lock_timeout=SECONDS")


def _signs(fd: int) -> tuple:
    """What changes while a holder lives: its heartbeat (the file's mtime) and the holder it names."""
    st = os.fstat(fd)
    try:
        content = os.pread(fd, _HOLDER_BYTES, 0)
    except OSError:
        content = b""
    return st.st_mtime_ns, content


class _Heartbeat:
    """Touches the lock file every `interval` seconds while the lock is held: the holder's sign of life."""

    def __init__(self, fd: int, interval: float):
        self.fd, self.interval, self.done = fd, max(0.05, interval), threading.Event()
        self.thread = threading.Thread(target=self._run, name="beft-lock-heartbeat", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(self.interval):
            try:
                os.utime(self.fd)
            except OSError:
                return

    def stop(self) -> None:
        self.done.set()
        self.thread.join()
