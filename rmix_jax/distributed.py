"""One experiment over several processes (hosts): ``jax.distributed`` set-up and who writes what.

``rmix-train`` joins a multi-process run when ``RMIX_JAX_DISTRIBUTED`` is set, before
JAX starts its backend:

- ``RMIX_JAX_DISTRIBUTED=auto``: ``jax.distributed.initialize()`` finds its peers itself
  (SLURM, Open MPI, Cloud TPU, Kubernetes);
- ``RMIX_JAX_DISTRIBUTED=<host>:<port>`` with ``RMIX_JAX_NUM_PROCESSES=<n>`` and
  ``RMIX_JAX_PROCESS_ID=<i>``: process ``i`` of ``n``, with process 0's host as the
  coordinator.

CPU collectives go through gloo. Every process then sees all processes' devices, the
run axis is sharded over them, each chunk's metrics are gathered to every process,
and the checkpoints are saved and restored collectively (``results_dir`` must be one
filesystem that every process sees). Only process 0, the primary, writes the run's
own files: config.yaml, metrics.jsonl, summary.json, learning_curve.png, params/ and
the wandb run; it also makes the run directory and tells the others its name. A stop
signal that reaches any process stops all of them after the same chunk.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from rmix_jax.errors import ConfigError

ENV = "RMIX_JAX_DISTRIBUTED"
NUM_PROCESSES_ENV = "RMIX_JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "RMIX_JAX_PROCESS_ID"
_PATH_BYTES = 4096  # the longest run directory name process 0 can hand on


def initialize_from_env() -> bool:
    """Join the multi-process run that ``RMIX_JAX_DISTRIBUTED`` describes; False (nothing done) when unset."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return False
    kwargs: dict[str, Any] = {}
    if value != "auto":
        if ":" not in value:
            raise ConfigError(f"{ENV}={value!r}: give the coordinator as host:port (process 0's host), or 'auto'")
        numbers = {}
        for name in (NUM_PROCESSES_ENV, PROCESS_ID_ENV):
            text = os.environ.get(name, "")
            if not text.isdigit():
                raise ConfigError(f"{name}={text!r}: with {ENV}=host:port set {NUM_PROCESSES_ENV} (the number "
                                  f"of processes) and {PROCESS_ID_ENV} (this one's, from 0) to whole numbers")
            numbers[name] = int(text)
        if not 0 <= numbers[PROCESS_ID_ENV] < numbers[NUM_PROCESSES_ENV]:
            raise ConfigError(f"{PROCESS_ID_ENV}={numbers[PROCESS_ID_ENV]} is not below {NUM_PROCESSES_ENV}="
                              f"{numbers[NUM_PROCESSES_ENV]}; number the processes 0 .. n-1")
        kwargs = {"coordinator_address": value, "num_processes": numbers[NUM_PROCESSES_ENV],
                  "process_id": numbers[PROCESS_ID_ENV]}
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    return True


def process_count() -> int:
    import jax

    return jax.process_count()


def is_primary() -> bool:
    """Whether this process writes the run's files (process 0; always true in a single process)."""
    import jax

    return jax.process_index() == 0


def max_over_processes(value: int) -> int:
    """The largest of every process's ``value`` (a collective: every process must call it at the same point)."""
    if process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils

    return int(np.max(multihost_utils.process_allgather(np.asarray([value], np.int32))))


def from_primary(make: Callable[[], str]) -> str:
    """``make()`` called on process 0 only, its string result handed to every process.

    If ``make`` fails on process 0, the others raise too (an empty result) instead of
    waiting for it forever.
    """
    if process_count() == 1:
        return make()
    from jax.experimental import multihost_utils

    value, failure = "", None
    if is_primary():
        try:
            value = make()
        except BaseException as err:  # noqa: BLE001 - re-raised below, once the others know
            failure = err
    data = np.zeros(_PATH_BYTES, np.uint8)
    encoded = value.encode()[:_PATH_BYTES]
    data[: len(encoded)] = np.frombuffer(encoded, np.uint8)
    data = np.asarray(multihost_utils.broadcast_one_to_all(data))
    if failure is not None:
        raise failure
    value = bytes(data[data != 0]).decode()
    if not value:
        raise OSError("process 0 could not make the run directory (its error says why)")
    return value
