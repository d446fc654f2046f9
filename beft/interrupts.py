"""Signals a scheduler sends take the path Ctrl-C takes.

SLURM cancels or preempts a job with SIGTERM and warns of its time limit with SIGUSR2 (submitit's choice; SIGUSR1
elsewhere); `timeout` and `kill` send SIGTERM. While a job runs, `interrupt_on_signals` turns each of these into
`Interrupted`, a KeyboardInterrupt that names the signal, so the run writes an `interrupted` record with the
reason, the sweep counts the job, and the process exits 128 + the signal's number, as it does for Ctrl-C (130).
Only the first signal interrupts: a second one while the record is being written is logged, not raised.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
log = logging.getLogger("beft")
# The signal that interrupted the last job of this process (None: none did): the SLURM launcher reads it to
# requeue a job that its time-limit warning stopped.
last_signal: int | None = None


class Interrupted(KeyboardInterrupt):
    """A job stopped by a signal other than SIGINT; str() is `SIGTERM (reason)`."""

    def __init__(self, signum: int, reason: str = ""):
        self.signum = signum
        super().__init__(signal.Signals(signum).name + (f" ({reason})" if reason else ""))


def exit_code(err: BaseException) -> int:
    """128 + the signal's number, as a shell reports a process the signal ended: 130 for Ctrl-C, 143 for SIGTERM."""
    return 128 + int(getattr(err, "signum", signal.SIGINT))


def describe(err: KeyboardInterrupt) -> str:
    """What a record's `error` says about an interruption."""
    if isinstance(err, Interrupted):
        return f"Interrupted: {err}"
    return "KeyboardInterrupt: interrupted by the user (Ctrl-C)"


@contextlib.contextmanager
def interrupt_on_signals(reason: Callable[[int], str] = lambda signum: ""):
    """While the block runs, SIGTERM, SIGUSR1 and SIGUSR2 raise `Interrupted(signum, reason(signum))`; the
    handlers that were there before come back afterwards. A no-op outside the main thread (Python delivers
    signals there only)."""
    global last_signal
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    last_signal = None

    def handler(signum, frame):
        global last_signal
        if last_signal is not None:
            log.warning("%s received while stopping; ignored", signal.Signals(signum).name)
            return
        last_signal = signum
        raise Interrupted(signum, reason(signum))

    previous = {signum: signal.signal(signum, handler) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
