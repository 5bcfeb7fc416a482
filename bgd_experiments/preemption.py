"""Stopping cleanly when a scheduler or a user asks: SIGTERM and SIGINT (Ctrl-C) become an
exception in the main thread.

SLURM (preemption, ``scancel``, the end of the time limit), ``kill`` and this project's local
launcher all send SIGTERM before SIGKILL. Python's default is to die at once. That is already
safe for a run folder (checkpoints, summaries and metrics are written through a temporary
file and a rename, and a resumed run rewrites ``metrics.jsonl`` from its checkpoint), but it
leaves temporary files and an unflushed TensorBoard file behind and says nothing. Raised as an
exception instead, SIGTERM unwinds the training loop through its ``finally`` blocks (a
checkpoint write in progress removes its temporary file; the previous checkpoint stays), and
the process exits with 128 + 15 after one line saying that a rerun resumes. The epoch in
flight is lost, never a finished one.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Terminated(SystemExit):
    """SIGTERM arrived. A SystemExit, so that no ``except Exception`` of a task or of Hydra
    records it as a failed job and carries on: the whole process stops."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signal_name = signal.Signals(signum).name


# The handler each signal must still have for ours to take over: nobody else's.
_DEFAULT_HANDLERS = {
    signal.SIGTERM: signal.SIG_DFL,
    # Ctrl-C: Python's own handler raises KeyboardInterrupt, an 80-line traceback from
    # wherever the training loop was; stopped like SIGTERM it is one line and exit 130.
    signal.SIGINT: signal.default_int_handler,
}


@contextmanager
def stop_on_termination() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise :class:`Terminated` in the main thread (once:
    a second signal while the first unwinds is ignored; SIGKILL stays the hard stop).

    A handler that someone else installed is left alone, e.g. submitit's on SLURM, which
    ignores SIGTERM and checkpoints-and-requeues on its own signal (USR2) instead; so is
    everything outside the main thread, where Python cannot install handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    ours = [
        signum
        for signum, default in _DEFAULT_HANDLERS.items()
        if signal.getsignal(signum) is default
    ]

    def raise_terminated(signum: int, frame: FrameType | None) -> None:
        for other in ours:
            signal.signal(other, signal.SIG_IGN)
        raise Terminated(signum)

    for signum in ours:
        signal.signal(signum, raise_terminated)
    try:
        yield
    finally:
        for signum in ours:
            signal.signal(signum, _DEFAULT_HANDLERS[signum])
