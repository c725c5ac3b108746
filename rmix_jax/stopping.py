"""Ending a run early without losing work: a stop signal at a chunk boundary, and divergence.

``GracefulStop``: while it is installed, the first SIGTERM or SIGINT (a scheduler's preemption,
Ctrl-C) asks the training loop to stop after the chunk it is in; the loop then saves a
checkpoint, flushes metrics and wandb, prints the resume command, and ``rmix-train`` exits
with 128 + the signal's number (143 for SIGTERM, 130 for SIGINT), the shell's convention
for a process ended by a signal, so that a job script or scheduler sees the run as stopped,
not finished. A second signal exits at once with that status; orbax writes each checkpoint
into a temporary directory and renames it only when complete, so the newest complete
checkpoint survives.

Divergence: the chunk's ``nonfinite`` metric (``rmix_jax.learner.chunk.nonfinite_flags``)
read per run, for the loop to stop with a one-line error or to freeze the run.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, Sequence

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
NONFINITE_LOSS, NONFINITE_GRAD, NONFINITE_PARAMS = 1, 2, 4  # bits of the ``nonfinite`` metric
DIVERGED_STATUS = 3  # rmix-train's exit status when a run diverged (train.on_nonfinite=stop)


class GracefulStop:
    """A context that turns the first SIGTERM/SIGINT into a request to stop at the next chunk boundary."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            os.write(2, f"rmix-train: {name} again: exiting now; the newest complete checkpoint is kept\n".encode())
            os._exit(128 + signum)
        self.signum = signum
        os.write(2, f"rmix-train: {name}: stopping after this chunk with a checkpoint "
                    f"(send it again to exit at once)\n".encode())


class StoppedBySignal(Exception):
    """Raised by ``train.run`` after a stop requested by a signal, once everything is saved."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.exit_status = 128 + signum


class DivergedError(RuntimeError):
    """A run's loss, gradient norm or parameters turned non-finite; the message is one line."""


def nonfinite_quantities(flags: int) -> list[str]:
    """The ``nonfinite`` metric's bits -> the quantities' names."""
    names = {NONFINITE_LOSS: "loss", NONFINITE_GRAD: "gradient norm", NONFINITE_PARAMS: "parameters"}
    return [name for bit, name in names.items() if int(flags) & bit]


def diverged_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The metric rows of one chunk whose run diverged in it."""
    return [r for r in rows if r.get("nonfinite")]


def describe(row: dict[str, Any]) -> str:
    """'run 3 (seed 1, point 1: train.lr=1e+30)' for a metric row."""
    where = f"seed {row['seed']}"
    if row.get("sweep"):
        where += f", point {row['point']}: " + ",".join(f"{k}={v}" for k, v in row["sweep"].items())
    return f"run {row['run']} ({where})"
