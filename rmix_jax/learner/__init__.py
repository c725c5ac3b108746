"""One learner for RMIX and its baselines: ``make_train(config)`` -> pure ``train(rng)``.

RMIX, static-alpha RMIX, reference (frozen-predictor) RMIX, RDN, QMIX, VDN and IQL
differ only in configuration: the number of atoms M, how alpha is chosen, the
mixer, and whether the quantile-regression update runs.

Per iteration each seed runs ``num_envs`` whole episodes (PyMARL's episode
runner, padded to the episode limit and masked), stores them in a whole-episode
replay (flashbax item buffer), and makes ``updates_per_iteration`` updates.

The modules, one job each, are pure functions of a frozen ``Setup``:

- ``types``: stored episodes, parameters, traced hyperparameters, train state, statistics;
- ``setup``: the networks, env, optimisers, replay and flags of one config;
- ``acting``: agent inputs, risk-sensitive values, one policy step, rollouts, the step record;
- ``losses``: the unroll over stored episodes, the TD(lambda) and quantile-regression losses;
- ``packing``: sampled episodes laid end to end in fewer rows, for the losses;
- ``update``: one gradient update and one iteration's learning;
- ``chunk``: init, iterations, chunks with their greedy test, and ``train``.

``make_learner`` binds them to one setup (``Learner``), for drivers and analysis code.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import chex

from rmix_jax.config import Config
from rmix_jax.envs import ArrayEnv, EnvSpec
from rmix_jax.learner import acting, chunk, losses, update
from rmix_jax.learner.acting import Actor, agent_input_dim, build_inputs, padding_record, stack_timesteps, step_record
from rmix_jax.learner.setup import Setup, make_setup
from rmix_jax.learner.types import (
    INT_HYPER,
    LEARNED_ALPHA,
    RUN_AXIS,
    Episode,
    EpisodeStats,
    Hyper,
    Iteration,
    Params,
    Policy,
    TrainState,
    UpdateStats,
    hyper_from_config,
    tree_select,
)
from rmix_jax.networks import AgentNetwork

__all__ = [
    "INT_HYPER", "LEARNED_ALPHA", "RUN_AXIS", "Actor", "Episode", "EpisodeStats", "Hyper", "Iteration", "Learner",
    "Params", "Policy", "Setup", "TrainState", "UpdateStats", "agent_input_dim", "build_inputs", "hyper_from_config",
    "make_learner", "make_setup", "make_train", "padding_record", "stack_timesteps", "step_record", "tree_select",
]


class Learner(NamedTuple):
    """The learner's pure functions bound to one ``Setup`` (each is the module function of that name)."""

    setup: Setup
    init: Callable[..., TrainState]  # chunk.init(rng, hyper=None)
    run_chunk: Callable[[TrainState], tuple[TrainState, dict]]
    train: Callable[..., dict]  # chunk.train(rng, hyper=None)
    rollout: Callable[..., Any]  # acting.rollout(params, key, epsilon, num_episodes, hyper=None, keep_env_states=False, over_runs=False)
    unroll: Callable[[Any, Episode], tuple[chex.Array, chex.Array]]
    loss: Callable[..., tuple[chex.Array, dict]]  # losses.loss(params, target_params, batch, is_qr, hyper, with_qr)
    values_and_alpha: Callable[..., tuple[chex.Array, chex.Array]]
    learns_alpha: Callable[[Hyper], chex.Array]  # whether a run acts on the predictor's alpha
    # The pieces of ``run_chunk``, for a host-side env loop (``rmix_jax.host``):
    start_actor: Callable[[], Actor]
    act: Callable[..., tuple[Actor, chex.Array, chex.Array]]  # acting.act(policy, actor, obs, avail, first, key)
    iteration_start: Callable[[TrainState], Iteration]
    learn: Callable[..., tuple[TrainState, dict]]
    finish_chunk: Callable[..., tuple[TrainState, chex.PRNGKey, dict]]
    test_metrics: Callable[[EpisodeStats], dict]
    episode_stats: Callable[[Episode], EpisodeStats]
    empty_episode: Callable[[], Episode]

    @property
    def config(self) -> Config:
        return self.setup.config

    @property
    def env(self) -> ArrayEnv:
        return self.setup.env

    @property
    def spec(self) -> EnvSpec:
        return self.setup.spec

    @property
    def agent(self) -> AgentNetwork:
        return self.setup.agent

    @property
    def mixer(self) -> Any:
        return self.setup.mixer

    @property
    def max_chunks(self) -> int:
        return self.setup.max_chunks

    @property
    def mixed_alpha(self) -> bool:
        return self.setup.mixed_alpha

    def default_hyper(self) -> Hyper:
        return self.setup.default_hyper()


def make_learner(config: Config, env: ArrayEnv | None = None, run_axis: str | None = None) -> Learner:
    """The learner of a config. ``run_axis``: the name of the ``jax.vmap`` axis over runs that the
    caller vmaps ``run_chunk`` / ``learn`` with (``RUN_AXIS``), or None when it vmaps without a name
    or not at all. With a name, an update skips the quantile-regression loss unless some run makes a
    QR update then (a real ``lax.cond`` on a predicate reduced over the runs), and runs its networks
    on the smallest layout that holds every run's sampled episodes (``train.pack_episodes``' rows, or
    ``train.time_windows``' windows); without one, a vmapped update computes every branch and selects
    per run, as a per-run ``cond`` becomes a ``select`` (so keep ``time_windows`` at 1 and
    ``pack_episodes`` off there).
    """
    setup = make_setup(config, env, run_axis)
    bind = functools.partial
    return Learner(
        setup=setup,
        init=bind(chunk.init, setup),
        run_chunk=bind(chunk.run_chunk, setup),
        train=bind(chunk.train, setup),
        rollout=bind(acting.rollout, setup),
        unroll=bind(losses.unroll, setup),
        loss=bind(losses.loss, setup),
        values_and_alpha=bind(acting.values_and_alpha, setup),
        learns_alpha=bind(acting.learns_alpha, setup),
        start_actor=bind(acting.start_actor, setup),
        act=bind(acting.act, setup),
        iteration_start=bind(chunk.iteration_start, setup),
        learn=bind(update.learn, setup),
        finish_chunk=bind(chunk.finish_chunk, setup),
        test_metrics=chunk.test_metrics,
        episode_stats=bind(acting.episode_stats, setup),
        empty_episode=bind(acting.empty_episode, setup),
    )


def make_train(config: Config) -> Callable[[chex.PRNGKey], dict]:
    """Pure ``train(rng)``; ``jax.jit(jax.vmap(make_train(config)))(keys)`` runs many seeds."""
    return make_learner(config).train
