"""Graceful stop on SIGTERM / SIGINT: the loop finishes its step, checkpoints and exits 0.

A cluster pre-empts a job with SIGTERM and a user stops one with Ctrl-C; both only set a
flag that the trainer checks between steps, so no checkpoint is ever written mid-step. A
second Ctrl-C while the flag is already set falls back to Python's KeyboardInterrupt.
"""

from __future__ import annotations

import signal
from types import FrameType


class StopRequest:
    """Installs the handlers on `__enter__`, restores the previous ones on `__exit__`."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "StopRequest":
        for s in self.SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
