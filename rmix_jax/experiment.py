"""Many runs as one program: seeds times sweep points, vmapped, sharded over devices.

A config with ``num_seeds = S`` and a sweep grid of P points trains ``R = P * S``
runs. Run ``r`` is seed ``r % S`` of point ``r // S``; every point uses the same S
seed keys (common random numbers, so points differ only by their values). The
swept values are traced (``learner.Hyper``), so all R runs are one jitted, vmapped
program whose leading axis is sharded over the local devices (all devices of all
hosts after ``jax.distributed.initialize()``). An env that cannot be jitted (SMAC)
runs the same learner pieces around a host-side episode loop (``rmix_jax.host``),
one game per run and env, on one device.

Shape legend: R runs (leading axis of every state and metric leaf).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rmix_jax.config import Config, ConfigError
from rmix_jax.envs import is_jittable
from rmix_jax.learner import LEARNED_ALPHA, RUN_AXIS, Hyper, Learner, TrainState, hyper_from_config, make_learner


@dataclass(frozen=True)
class Experiment:
    config: Config
    learner: Learner
    points: list[dict[str, Any]]  # sweep points; one empty dict without a sweep
    sharding: NamedSharding | None  # over the run axis; None on one device
    init_fn: Callable[[Any, Hyper], TrainState]  # jitted, vmapped learner.init
    chunk_fn: Callable[[TrainState], tuple[TrainState, dict]]  # jitted, vmapped run_chunk (donates its input)

    @property
    def num_seeds(self) -> int:
        return self.config.num_seeds

    @property
    def num_runs(self) -> int:
        return len(self.points) * self.config.num_seeds

    def point_of(self, run: int) -> int:
        return run // self.num_seeds

    def seed_of(self, run: int) -> int:
        return run % self.num_seeds

    def point_label(self, point: int) -> str:
        """``agent.alpha=0.1,train.lr=0.001`` (empty without a sweep)."""
        return ",".join(f"{k}={v}" for k, v in self.points[point].items())


def enable_compilation_cache() -> None:
    """Persist compiled programs (``RMIX_JAX_XLA_CACHE``, default ~/.cache/rmix_jax/xla; empty disables).

    A resumed or repeated run of the same program then loads it instead of compiling
    again (tens of seconds for the SMAX programs). JAX_COMPILATION_CACHE_DIR, if set, wins.
    """
    import os

    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    path = os.environ.get("RMIX_JAX_XLA_CACHE", os.path.expanduser("~/.cache/rmix_jax/xla"))
    if path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)


def run_devices(num_runs: int, devices: list | None = None) -> list:
    """The most devices (at most all) that divide the runs evenly, so each holds R / D runs."""
    devices = list(jax.devices() if devices is None else devices)
    count = max(d for d in range(1, len(devices) + 1) if num_runs % d == 0)
    return devices[:count]


# Keys that do not change the compiled program: runs differing only in these share
# one Experiment (and so one trace and compile) within a process.
_NOT_IN_PROGRAM = ("run_name", "results_dir", "wandb", "checkpoint")
_CACHE: dict[str, Experiment] = {}
_CACHE_SIZE = 8


def _program_key(config: Config, devices: list) -> str:
    data = {k: v for k, v in config.to_dict().items() if k not in _NOT_IN_PROGRAM}
    data["train"] = {k: v for k, v in data["train"].items() if k != "on_nonfinite"}  # read by the host loop only
    return json.dumps(data, sort_keys=True, default=str) + repr([d.id for d in devices])


def make_experiment(config: Config, devices: list | None = None) -> Experiment:
    """The experiment of a config; built once per distinct program and reused."""
    points = config.sweep_points()
    used = run_devices(len(points) * config.num_seeds, devices)
    key = _program_key(config, used)
    if key in _CACHE:
        return dataclasses.replace(_CACHE[key], config=config)
    learner = make_learner(config, run_axis=RUN_AXIS)
    _check_processes(learner, len(points) * config.num_seeds, used)
    if not is_jittable(learner.env):
        exp = Experiment(config=config, learner=learner, points=points, sharding=None,
                         init_fn=jax.jit(jax.vmap(learner.init)),
                         chunk_fn=_host_chunk_fn(config, learner, len(points) * config.num_seeds))
        _remember(key, exp)
        return exp
    sharding = None
    if len(used) > 1:
        sharding = NamedSharding(Mesh(np.asarray(used), ("runs",)), PartitionSpec("runs"))
    exp = Experiment(
        config=config, learner=learner, points=points, sharding=sharding,
        init_fn=jax.jit(jax.vmap(learner.init), out_shardings=sharding),
        chunk_fn=jax.jit(
            jax.vmap(learner.run_chunk, axis_name=RUN_AXIS),
            in_shardings=None if sharding is None else (sharding,),
            out_shardings=None if sharding is None else (sharding, sharding),
            donate_argnums=0,
        ),
    )
    _remember(key, exp)
    return exp


def _check_processes(learner: Learner, num_runs: int, used: list) -> None:
    """Several processes (``rmix_jax.distributed``) must each hold a share of the runs."""
    if jax.process_count() == 1:
        return
    if not is_jittable(learner.env):
        raise ConfigError(f"env={learner.config.env.name} is stepped from the host and runs in one process; "
                          "unset RMIX_JAX_DISTRIBUTED for it")
    total = len(jax.devices())
    if len(used) != total:
        raise ConfigError(f"{num_runs} runs (seeds x sweep points) do not divide over the {total} devices of "
                          f"{jax.process_count()} processes; make the number of runs a multiple of {total}")


def _remember(key: str, exp: Experiment) -> None:
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = exp


def _host_chunk_fn(config: Config, learner: Learner, num_runs: int) -> Callable[[TrainState], tuple[TrainState, dict]]:
    """``run_chunk`` for an env stepped from the host (SMAC): its games start at the first chunk."""
    from rmix_jax.envs import make_host_envs
    from rmix_jax.host import HostRunner

    runner: list[HostRunner] = []

    def chunk(state: TrainState) -> tuple[TrainState, dict]:
        if not runner:
            envs = make_host_envs(config.env, num_runs * config.train.num_envs, seed=config.seed)
            runner.append(HostRunner(learner, envs, num_runs))
        return runner[0].run_chunk(state)

    return chunk


def _hyper_for(point: dict[str, Any]) -> dict[str, float]:
    """A sweep point's values by Hyper field (the key's last part); a learned alpha is LEARNED_ALPHA."""
    return {key.split(".")[-1]: LEARNED_ALPHA if value == "learned" else float(value) for key, value in point.items()}


def run_inputs(exp: Experiment) -> tuple[np.ndarray, Hyper]:
    """Keys (R, 2) and hyperparameters (R,) of every run, as host arrays."""
    seed_keys = np.asarray(jax.random.split(jax.random.PRNGKey(exp.config.seed), exp.num_seeds))
    keys = np.tile(seed_keys, (len(exp.points), 1))
    per_point = [hyper_from_config(exp.config, **_hyper_for(p)) for p in exp.points]
    hyper = jax.tree.map(lambda *xs: np.repeat(np.stack([np.asarray(x) for x in xs]), exp.num_seeds), *per_point)
    return keys, hyper


def _put(exp: Experiment, tree: Any) -> Any:
    """Host arrays with a leading run axis -> device arrays laid out by the experiment's sharding."""
    if exp.sharding is None:
        # Committed to the device, as a restored checkpoint is: a fresh and a resumed state then
        # compile to the same program (one persistent-cache entry serves both).
        return jax.device_put(tree, jax.devices()[0])
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(x.shape, exp.sharding, lambda index: x[index]), tree
    )


def init_state(exp: Experiment) -> TrainState:
    """Fresh training state of every run (leading axis R)."""
    keys, hyper = run_inputs(exp)
    return exp.init_fn(_put(exp, keys), _put(exp, hyper))


def with_config_hyper(exp: Experiment, state: TrainState) -> TrainState:
    """``state`` carrying the experiment config's hyperparameters (a resume may raise t_max)."""
    _, hyper = run_inputs(exp)
    return state.replace(hyper=_put(exp, hyper))


def abstract_state(exp: Experiment) -> TrainState:
    """Shapes, dtypes and shardings of ``init_state``'s result, without computing it."""
    keys, hyper = run_inputs(exp)
    shapes = jax.eval_shape(jax.vmap(exp.learner.init), keys, hyper)
    # Always a sharding, also on one device: a checkpoint then restores onto this
    # layout whatever device count saved it (orbax refuses another topology otherwise).
    sharding = exp.sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def to_host(tree: Any) -> Any:
    """Device arrays -> NumPy, gathering shards from every host when there are several."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)
