"""The frozen setup every learner function takes: networks, env, optimisers, replay and flags.

Built once per experiment by ``make_setup``; nothing in it is traced, so it is what the
pure functions of ``acting``, ``losses``, ``update`` and ``chunk`` close over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import chex
import flashbax as fbx
import jax
import optax

from rmix_jax.config import Config, TrainConfig
from rmix_jax.envs import ArrayEnv, EnvSpec, make_env
from rmix_jax.learner.types import Hyper, hyper_from_config
from rmix_jax.networks import AgentNetwork, make_mixer


@dataclass(frozen=True, eq=False)
class Setup:
    config: Config
    env: ArrayEnv
    spec: EnvSpec
    agent: AgentNetwork
    mixer: Any  # a flax mixer module (QMIX, VDN sum or IQL identity)
    buffer: Any  # flashbax item buffer of whole episodes
    td_tx: optax.GradientTransformation  # Adam without its learning-rate step (the rate is in Hyper)
    qr_tx: optax.GradientTransformation
    # How alpha is chosen: "static", "straight_through" (learned) or "frozen" (the reference
    # code's predictor, never trained); a mixed static/learned sweep is straight-through.
    mode: str
    mixed_alpha: bool  # built for a sweep mixing static and learned alpha (chosen per run by Hyper.alpha)
    use_qr: bool  # the quantile-regression update runs
    # The (rows, entries) shapes an update's loss can run on, ascending, the last the whole sampled
    # batch: (B, w) for each time window w, or with ``packs`` (B', T + 1) for each row count B'.
    layouts: tuple[tuple[int, int], ...]
    packs: bool  # the layouts hold the sampled episodes laid end to end (``packing.pack``)
    run_axis: str | None  # the name of the vmap axis over runs, or None
    max_chunks: int  # chunks the config's t_max needs (the length of ``train``'s metrics history)

    @property
    def num_levels(self) -> int:
        return self.config.agent.num_risk_levels

    def default_hyper(self) -> Hyper:
        return hyper_from_config(self.config)


def make_setup(config: Config, env: ArrayEnv | None = None, run_axis: str | None = None) -> Setup:
    env = env if env is not None else make_env(config.env)
    spec = env.spec
    ac, tc = config.agent, config.train
    # A sweep over alpha that includes "learned" runs static and learned points in one
    # program: the network keeps its predictor and each run selects by Hyper.alpha.
    mixed_alpha = "learned" in config.sweep.get("agent.alpha", ())
    agent = AgentNetwork(
        num_actions=spec.num_actions,
        num_atoms=ac.num_atoms,
        hidden_dim=ac.hidden_dim,
        num_risk_levels=ac.num_risk_levels,
        risk_embed_dim=ac.risk_embed_dim or spec.num_agents,
        use_risk_predictor=config.uses_risk_predictor or mixed_alpha,
        risk_scores=ac.risk_scores,
        risk_temperature=ac.risk_temperature,
        atom_head=ac.atom_head,
    )
    t_len = spec.episode_limit
    return Setup(
        config=config,
        env=env,
        spec=spec,
        agent=agent,
        mixer=make_mixer(config.mixer.kind, config.mixer.embed_dim, config.mixer.hypernet_hidden),
        buffer=fbx.make_item_buffer(
            max_length=tc.buffer_size, min_length=tc.batch_size, sample_batch_size=tc.batch_size,
            add_sequences=True,
        ),
        # -lr * update is what optax.adam's final scale computes; the rate comes from Hyper.
        # optax.flatten: clipping and Adam on one vector of all parameters, not leaf by leaf
        # (a few dozen small arrays): fewer operations to trace, compile and run.
        td_tx=optax.flatten(optax.chain(optax.clip_by_global_norm(tc.grad_clip), optax.scale_by_adam())),
        qr_tx=optax.flatten(optax.chain(optax.clip_by_global_norm(tc.grad_clip), optax.scale_by_adam(eps=tc.qr_eps))),
        mode="straight_through" if mixed_alpha and ac.risk_predictor == "static" else ac.risk_predictor,
        mixed_alpha=mixed_alpha,
        use_qr=tc.use_qr,
        layouts=loss_layouts(tc, t_len + 1),
        packs=tc.pack_episodes,
        run_axis=run_axis,
        max_chunks=math.ceil(tc.t_max / (tc.iterations_per_eval * tc.num_envs)) + 1,
    )


def loss_layouts(tc: TrainConfig, length: int) -> tuple[tuple[int, int], ...]:
    """The shapes an update's loss runs on: with ``train.pack_episodes``, rows of all ``length``
    entries, B/8, B/4, 3B/8, B/2 or B of them; else all B episodes over ``train.time_windows``
    evenly spaced windows, the last all ``length`` entries."""
    batch = tc.batch_size
    if tc.pack_episodes:
        return tuple((rows, length) for rows in sorted({math.ceil(k * batch / 8) for k in (1, 2, 3, 4, 8)}))
    windows = sorted({math.ceil(k * (length - 1) / tc.time_windows) + 1 for k in range(1, tc.time_windows + 1)})
    return tuple((batch, window) for window in windows)


def max_over_runs(setup: Setup, value: chex.Array) -> chex.Array:
    """The maximum of ``value`` over the runs when they are a named axis (else the run's own)."""
    return value if setup.run_axis is None else jax.lax.pmax(value, setup.run_axis)
