"""Acting: agent inputs, risk-sensitive values, one policy step, and whole-episode rollouts.

The jitted rollout (``run_episode``) and the host-side runner (``rmix_jax.host``) act through
the same ``act`` and store their steps through the same ``step_record`` / ``padding_record``.

Shape legend: E episodes, T episode limit, N agents, A actions, M atoms, K risk levels,
O obs, I agent input.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from rmix_jax import ops
from rmix_jax.envs import EnvSpec, TimeStep
from rmix_jax.learner.setup import Setup
from rmix_jax.learner.types import LEARNED_ALPHA, Episode, EpisodeStats, Hyper, Params, Policy, tree_select
from rmix_jax.networks import AgentCarry, zero_carry


def agent_input_dim(spec: EnvSpec) -> int:
    return spec.obs_dim + spec.num_actions + spec.num_agents


def build_inputs(obs: chex.Array, last_actions: chex.Array, reset: chex.Array, num_actions: int) -> chex.Array:
    """``[obs_i, one_hot(last_action_i), one_hot(i)]``, last action zeroed at an episode start.

    obs: (..., N, O); last_actions: (..., N) int; reset: (...,) -> (..., N, I).
    """
    num_agents = obs.shape[-2]
    last = jax.nn.one_hot(last_actions, num_actions) * (1.0 - reset.astype(jnp.float32))[..., None, None]
    agent_ids = jnp.broadcast_to(jnp.eye(num_agents), (*obs.shape[:-2], num_agents, num_agents))
    return jnp.concatenate([obs, last, agent_ids], axis=-1)


def values_and_alpha(setup: Setup, atoms: chex.Array, scores: chex.Array,
                     static_alpha: chex.Array | None = None) -> tuple[chex.Array, chex.Array]:
    """(..., A, M), (..., K) -> values (..., A), alpha (...). A may be any count (e.g. 1).

    ``static_alpha`` (a traced scalar, default the config's) is the fixed risk level
    of static-alpha runs; in a mixed sweep, ``LEARNED_ALPHA`` selects the predictor.
    """
    num_levels = setup.num_levels
    ascending = setup.config.agent.atom_head == "ascending"  # sorted by the head: no sort needed
    static_alpha = jnp.float32(setup.config.agent.alpha) if static_alpha is None else static_alpha
    lead, num_values = atoms.shape[:-2], atoms.shape[-2]
    flat_atoms = atoms.reshape(-1, *atoms.shape[-2:])

    def static() -> tuple[chex.Array, chex.Array]:
        cvar = functools.partial(ops.cvar, ascending=ascending)
        values = jax.vmap(jax.vmap(cvar, in_axes=(0, None)), in_axes=(0, None))(flat_atoms, static_alpha)
        return values.reshape(*lead, num_values), jnp.full(lead, static_alpha, jnp.float32)

    if setup.mode == "static":
        return static()
    chex.assert_shape(scores, (*lead, num_levels))
    flat_scores = scores.reshape(-1, num_levels)
    values, level, _ = jax.vmap(ops.risk_sensitive_values, in_axes=(0, 0, None, None))(
        flat_atoms, flat_scores, setup.mode == "straight_through", ascending
    )
    learned = values.reshape(*lead, num_values), ops.level_to_alpha(level, num_levels).reshape(lead)
    if not setup.mixed_alpha:
        return learned
    use_static = static_alpha != LEARNED_ALPHA
    return tree_select(use_static, static(), learned)


def learns_alpha(setup: Setup, hyper: Hyper) -> chex.Array:
    """Whether a run acts on the predictor's alpha (False for static alpha, per run in a mixed sweep)."""
    if setup.mode == "static":
        return jnp.bool_(False)
    return (hyper.alpha == LEARNED_ALPHA) if setup.mixed_alpha else jnp.bool_(True)


def alpha_histogram(num_levels: int, alpha: chex.Array, weight: chex.Array) -> chex.Array:
    """(..., N) chosen alphas and weights -> (N, K) weighted counts per agent and level."""
    bins = ops.alpha_to_level(alpha, num_levels)
    return jnp.sum(jax.nn.one_hot(bins, num_levels) * weight[..., None], axis=tuple(range(alpha.ndim - 1)))


class Actor(NamedTuple):
    """One env's acting carry between steps."""

    agent_carry: AgentCarry  # the agents' recurrent states
    last_actions: chex.Array  # (N,)
    prev_inputs: chex.Array  # (N, I) the previous step's agent inputs (the risk branch's history)


def start_actor(setup: Setup) -> Actor:
    """The carry at an episode start."""
    n = setup.spec.num_agents
    return Actor(
        agent_carry=zero_carry((n,), setup.config.agent.hidden_dim),
        last_actions=jnp.zeros((n,), jnp.int32),
        prev_inputs=jnp.zeros((n, agent_input_dim(setup.spec)), jnp.float32),
    )


def act(setup: Setup, policy: Policy, actor: Actor, obs: chex.Array, avail: chex.Array, first: chex.Array,
        key: chex.PRNGKey) -> tuple[Actor, chex.Array, chex.Array]:
    """One policy step of one env's N agents (obs (N, O), avail (N, A)); ``first``: the episode's first step.

    Returns the next carry, the epsilon-greedy actions (N,) and the alphas acted on (N,).
    """
    n, a_dim = setup.spec.num_agents, setup.spec.num_actions
    chex.assert_shape(obs, (n, setup.spec.obs_dim))
    chex.assert_shape(avail, (n, a_dim))
    inputs = build_inputs(obs, actor.last_actions, first, a_dim)
    agent_carry, out = setup.agent.apply(policy.params.agent, actor.agent_carry, inputs, actor.prev_inputs,
                                         jnp.full((n,), first))
    values, alpha = values_and_alpha(setup, out.atoms, out.scores, policy.static_alpha)
    actions = jax.vmap(ops.epsilon_greedy, in_axes=(0, 0, 0, None))(
        jax.random.split(key, n), values, avail, policy.epsilon
    )
    return Actor(agent_carry, actions, inputs), actions, alpha


def step_record(before: TimeStep, actions: Any, alpha: Any, after: TimeStep, done: Any, first: Any) -> Episode:
    """Stored step t: what the agents saw (``before``), did and chose, and the outcome (``after``).

    ``done``: the episode had ended before this step (the env is frozen, ``after`` is ``before``
    again, and the step is padding). Takes one env's arrays or a stack of envs', jax or NumPy.
    """
    return Episode(
        obs=before.obs,
        state=before.state,
        avail=before.avail > 0,
        actions=actions,
        reward=after.reward * ~done,
        terminated=after.terminated & ~done,
        filled=~done,
        won=after.won & ~done,
        reset=first,
        alpha=alpha,
    )


def padding_record(last: TimeStep, xp: Any = jnp) -> Episode:
    """Stored step T (and every step after the end on the host): the final observation, masked.

    ``last``: one env's final time step or a stack of them; ``xp``: ``jax.numpy`` or ``numpy``.
    """
    lead, n = last.reward.shape, last.obs.shape[-2]
    return Episode(
        obs=last.obs,
        state=last.state,
        avail=last.avail > 0,
        actions=xp.zeros((*lead, n), xp.int32),
        reward=xp.zeros(lead, xp.float32),
        terminated=xp.zeros(lead, bool),
        filled=xp.zeros(lead, bool),
        won=xp.zeros(lead, bool),
        reset=xp.zeros(lead, bool),
        alpha=xp.zeros((*lead, n), xp.float32),
    )


class _EpisodeCarry(NamedTuple):
    env_state: Any
    timestep: TimeStep
    actor: Actor
    done: chex.Array  # ()
    key: chex.PRNGKey


def run_episode(setup: Setup, policy: Policy, key: chex.PRNGKey,
                keep_env_states: bool = False) -> Episode | tuple[Episode, Any]:
    """One whole episode; with ``keep_env_states`` also the env state and step key of each step (for replays)."""
    env = setup.env
    reset_key, key = jax.random.split(key)
    env_state, timestep = env.reset(reset_key)
    carry = _EpisodeCarry(env_state, timestep, start_actor(setup), jnp.bool_(False), key)

    def step(c: _EpisodeCarry, t: chex.Array) -> tuple[_EpisodeCarry, Any]:
        key, act_key, env_key = jax.random.split(c.key, 3)
        first = t == 0
        actor, actions, alpha = act(setup, policy, c.actor, c.timestep.obs, c.timestep.avail, first, act_key)
        env_state, next_ts = env.step(env_key, c.env_state, actions)
        # After the end the env is frozen: the padding steps are masked anyway.
        env_state = tree_select(c.done, c.env_state, env_state)
        next_ts = tree_select(c.done, c.timestep, next_ts)
        record = step_record(c.timestep, actions, alpha, next_ts, c.done, first)
        done = c.done | next_ts.terminated | next_ts.truncated
        new = _EpisodeCarry(env_state, next_ts, actor, done, key)
        return new, ((record, (c.env_state, env_key)) if keep_env_states else record)

    final, steps = jax.lax.scan(step, carry, jnp.arange(setup.spec.episode_limit))
    if keep_env_states:
        steps, env_trace = steps
    tail = padding_record(final.timestep)
    episode = jax.tree.map(lambda xs, x: jnp.concatenate([xs, x[None]], axis=0), steps, tail)
    return (episode, env_trace) if keep_env_states else episode


def episode_stats(setup: Setup, episodes: Episode) -> EpisodeStats:
    """Returns, wins, lengths and chosen-alpha counts of E episodes (E, T+1, ...)."""
    filled = episodes.filled.astype(jnp.float32)
    return EpisodeStats(
        returns=jnp.sum(episodes.reward * filled, axis=1),
        won=jnp.any(episodes.won, axis=1),
        lengths=jnp.sum(filled, axis=1),
        alpha_hist=alpha_histogram(setup.num_levels, episodes.alpha,
                                   jnp.broadcast_to(filled[..., None], episodes.alpha.shape)),
    )


def empty_episode(setup: Setup) -> Episode:
    """Zeros shaped and typed as one stored episode (the replay's item), without running the env."""
    spec = setup.spec
    t_len, n = spec.episode_limit, spec.num_agents
    return Episode(
        obs=jnp.zeros((t_len + 1, n, spec.obs_dim), jnp.float32),
        state=jnp.zeros((t_len + 1, spec.state_dim), jnp.float32),
        avail=jnp.zeros((t_len + 1, n, spec.num_actions), bool),
        actions=jnp.zeros((t_len + 1, n), jnp.int32),
        reward=jnp.zeros((t_len + 1,), jnp.float32),
        terminated=jnp.zeros((t_len + 1,), bool),
        filled=jnp.zeros((t_len + 1,), bool),
        won=jnp.zeros((t_len + 1,), bool),
        reset=jnp.zeros((t_len + 1,), bool),
        alpha=jnp.zeros((t_len + 1, n), jnp.float32),
    )


def rollout(setup: Setup, params: Params, key: chex.PRNGKey, epsilon: chex.Array, num_episodes: int,
            hyper: Hyper | None = None, keep_env_states: bool = False):
    """E episodes -> (episodes, stats), plus (env states, step keys) per step with ``keep_env_states``."""
    hyper = setup.default_hyper() if hyper is None else hyper
    policy = Policy(params, epsilon, hyper.alpha)
    one = functools.partial(run_episode, setup, keep_env_states=keep_env_states)
    out = jax.vmap(one, in_axes=(None, 0))(policy, jax.random.split(key, num_episodes))  # (E, T+1, ...)
    episodes, env_trace = out if keep_env_states else (out, None)
    stats = episode_stats(setup, episodes)
    return (episodes, stats, env_trace) if keep_env_states else (episodes, stats)


def stack_timesteps(timesteps: list[Any]) -> TimeStep:
    """Host time steps of several envs -> one TimeStep of NumPy arrays with a leading env axis."""
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *timesteps)
