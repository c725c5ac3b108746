"""The learner's data: stored episodes, parameters, traced hyperparameters, train state, statistics.

Shape legend: T episode limit (an episode holds T + 1 steps: the last holds the final
observation), N agents, A actions, O obs, S state, E parallel envs, K risk levels.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
from flax import struct

from rmix_jax.config import Config


@struct.dataclass
class Episode:
    """One stored episode, time axis first, T + 1 steps."""

    obs: chex.Array  # (T+1, N, O)
    state: chex.Array  # (T+1, S)
    avail: chex.Array  # (T+1, N, A) bool
    actions: chex.Array  # (T+1, N) int32, last step padding
    reward: chex.Array  # (T+1,) reward of the transition from t
    terminated: chex.Array  # (T+1,) post-step true terminal of the transition from t
    filled: chex.Array  # (T+1,) transition t is real (not padding after the end)
    won: chex.Array  # (T+1,) post-step: the transition from t won the episode
    reset: chex.Array  # (T+1,) pre-step: step t starts an episode
    alpha: chex.Array  # (T+1, N) risk level the agent acted on (analysis only)


@struct.dataclass
class Params:
    agent: Any
    mixer: Any


@struct.dataclass
class Hyper:
    """Hyperparameters carried as traced scalars, so ``vmap`` sweeps them in one program.

    Each field is the config key of the same name (``config.SWEEPABLE``: train.lr -> lr).
    ``alpha`` is the static risk level; 0 marks a run of a mixed sweep that learns
    alpha instead (only meaningful when the learner was built for such a sweep).
    The schedule's step counts are int32 and traced too: configs that differ only in
    them (the tests' t_max, a resume with a longer t_max) share one compiled program.
    """

    lr: chex.Array
    qr_lr: chex.Array
    gamma: chex.Array
    td_lambda: chex.Array
    epsilon_finish: chex.Array
    epsilon_anneal_steps: chex.Array
    alpha: chex.Array
    t_max: chex.Array  # env steps per run
    start_to_update_qr: chex.Array  # env steps
    qr_interval: chex.Array  # env steps between QR updates
    target_update_interval: chex.Array  # gradient updates between hard target copies


LEARNED_ALPHA = 0.0  # Hyper.alpha of a sweep point that learns alpha
INT_HYPER = ("t_max", "start_to_update_qr", "qr_interval", "target_update_interval")  # int32 fields
RUN_AXIS = "vmapped_runs"  # the axis name drivers give ``jax.vmap`` over runs (``make_learner``'s run_axis)


def hyper_from_config(config: Config, **values: float) -> Hyper:
    """The config's hyperparameters as scalars (step counts int32, the rest float32);
    ``values`` (Hyper field names) override."""
    t = config.train
    fields = {
        "lr": t.lr, "qr_lr": t.qr_lr, "gamma": t.gamma, "td_lambda": t.td_lambda,
        "epsilon_finish": t.epsilon_finish,
        "epsilon_anneal_steps": t.epsilon_anneal_steps, "alpha": config.agent.alpha,
        **{name: getattr(t, name) for name in INT_HYPER},
    }
    fields.update(values)
    return Hyper(**{k: jnp.asarray(v, jnp.int32 if k in INT_HYPER else jnp.float32) for k, v in fields.items()})


@struct.dataclass
class TrainState:
    hyper: Hyper
    params: Params
    target_params: Params
    td_opt_state: Any
    qr_opt_state: Any
    buffer_state: Any
    key: chex.PRNGKey
    t_env: chex.Array  # env steps taken
    episodes: chex.Array  # episodes collected
    updates: chex.Array  # gradient updates made (TD and QR)
    last_target_update: chex.Array  # updates at the last target copy
    last_qr_t_env: chex.Array  # t_env at the last QR update
    chunks: chex.Array  # chunks run


class EpisodeStats(NamedTuple):
    returns: chex.Array  # (E,)
    won: chex.Array  # (E,)
    lengths: chex.Array  # (E,)
    alpha_hist: chex.Array  # (N, K) chosen-alpha counts per agent over filled steps


class UpdateStats(NamedTuple):
    td_loss_sum: chex.Array
    td_count: chex.Array
    qr_loss_sum: chex.Array
    qr_count: chex.Array
    grad_norm_sum: chex.Array
    window_sum: chex.Array  # entries the update's loss ran over per sampled episode (rows x entries / B; 0 without)
    alpha_entropy_sum: chex.Array  # mean entropy of P(alpha) over the batch's filled agent-steps (nats)
    risk_grad_norm_sum: chex.Array  # norm of the TD loss's gradient reaching the predictor (TD updates)


class Policy(NamedTuple):
    """What acting needs of a run besides its observations: parameters, exploration, static risk level."""

    params: Params
    epsilon: chex.Array  # ()
    static_alpha: chex.Array  # () the run's Hyper.alpha


class Iteration(NamedTuple):
    """The start of one iteration: the state with its next key, and the iteration's keys and epsilon."""

    state: TrainState
    rollout_key: chex.PRNGKey
    update_key: chex.PRNGKey
    epsilon: chex.Array


def tree_select(flag: chex.Array, on_true: Any, on_false: Any) -> Any:
    """Leafwise ``where(flag, on_true, on_false)``: a branch that stays a select under vmap."""
    return jax.tree.map(lambda x, y: jnp.where(flag, x, y), on_true, on_false)
