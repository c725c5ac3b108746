"""Acting: agent inputs, risk-sensitive values, one policy step, and whole-episode rollouts.

The jitted rollout (``run_episodes``) and the host-side runner (``rmix_jax.host``) act through
the same ``act`` and store their steps through the same ``step_record`` / ``padding_record``.

Shape legend: E episodes, T episode limit, N agents, A actions, M atoms, K risk levels,
O obs, I agent input.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from rmix_jax import ops
from rmix_jax.envs import EnvSpec, TimeStep
from rmix_jax.learner.setup import Setup, max_over_runs
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
    # Every distribution's tail means in one call (one sort of all of them, ops.bitonic_sort).

    def static() -> tuple[chex.Array, chex.Array]:
        counts = ops.tail_count(static_alpha, atoms.shape[-1])[None]
        values = ops.tail_means(flat_atoms, counts, ascending)[..., 0]
        return values.reshape(*lead, num_values), jnp.full(lead, static_alpha, jnp.float32)

    if setup.mode == "static":
        return static()
    chex.assert_shape(scores, (*lead, num_levels))
    flat_scores = scores.reshape(-1, num_levels)
    all_levels = ops.cvar_all_levels(flat_atoms, num_levels, ascending)  # (R, A, K)
    values, _, _ = jax.vmap(ops.risk_sensitive_choice, in_axes=(0, 0, None))(
        all_levels, flat_scores, setup.mode == "straight_through"
    )
    values, alpha = values.reshape(*lead, num_values), acted_alpha(setup, scores, static_alpha)
    if not setup.mixed_alpha:
        return values, alpha
    return jnp.where(static_alpha != LEARNED_ALPHA, static()[0], values), alpha


def acted_alpha(setup: Setup, scores: chex.Array, static_alpha: chex.Array | None = None) -> chex.Array:
    """The alpha acted on, from the scores (..., K) alone: (...): the level the predictor scores highest,
    or the static alpha (per run in a mixed sweep). ``values_and_alpha`` returns it too."""
    static_alpha = jnp.float32(setup.config.agent.alpha) if static_alpha is None else static_alpha
    static = jnp.full(scores.shape[:-1], static_alpha, jnp.float32)
    if setup.mode == "static":
        return static
    learned = ops.level_to_alpha(jnp.argmax(scores, axis=-1), setup.num_levels)
    return jnp.where(static_alpha != LEARNED_ALPHA, static, learned) if setup.mixed_alpha else learned


# Choosing greedy actions sorts every action's atoms (M > 32); it is done only for the rows
# that need a choice, packed into the smallest of these fractions of all rows that holds them.
_CHOICE_FRACTIONS = (8, 4, 2)


def greedy_actions(setup: Setup, atoms: chex.Array, scores: chex.Array, avail: chex.Array,
                   needed: chex.Array, static_alpha: chex.Array, pack: bool = True) -> chex.Array:
    """Greedy available actions (...) from atoms (..., A, M), scores (..., K) and avail (..., A), exact
    where ``needed`` (...) and the agent has more than one available action; elsewhere the first
    available action (a dead agent's only action, its no-op, whatever the values).

    Where the CVaR sorts the atoms, only the rows that need a choice are computed, gathered into
    the smallest of a few fixed sizes that holds them (chosen once for all runs under the setup's
    run axis); otherwise, when most rows need one, or without ``pack`` (where the caller is vmapped
    without the run axis, as ``act`` under the host runner is), every row is computed. The training
    loss's double-Q argmax and both kinds of acting choose through this.
    """
    lead, (num_actions, num_atoms) = avail.shape[:-1], atoms.shape[-2:]
    flat_atoms, flat_scores = atoms.reshape(-1, num_actions, num_atoms), scores.reshape(-1, scores.shape[-1])
    flat_avail = avail.reshape(-1, num_actions)

    def greedy(rows_atoms: chex.Array, rows_scores: chex.Array, rows_avail: chex.Array) -> chex.Array:
        values = values_and_alpha(setup, rows_atoms, rows_scores, static_alpha)[0]
        return jax.vmap(ops.masked_argmax)(values, rows_avail)

    def all_rows() -> chex.Array:
        return greedy(flat_atoms, flat_scores, flat_avail)

    if not (pack and ops.tail_means_sort(num_atoms, setup.config.agent.atom_head == "ascending")):
        return all_rows().reshape(lead)
    rows = flat_avail.shape[0]
    choose = needed.reshape(-1) & (jnp.sum(flat_avail.astype(jnp.int32), axis=-1) > 1)
    first_available = jnp.argmax(flat_avail, axis=-1).astype(jnp.int32)

    def packed(size: int) -> chex.Array:
        index = jnp.nonzero(choose, size=size, fill_value=rows)[0]  # past the end where unused
        chosen = greedy(*(x.at[index].get(mode="clip") for x in (flat_atoms, flat_scores, flat_avail)))
        return first_available.at[index].set(chosen, mode="drop")

    sizes = sorted({math.ceil(rows / f) for f in _CHOICE_FRACTIONS})
    branch = jnp.sum(max_over_runs(setup, jnp.sum(choose)) > jnp.asarray(sizes))  # len(sizes): every row
    return jax.lax.switch(branch, [functools.partial(packed, size) for size in sizes] + [all_rows]).reshape(lead)


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


def _policy_outputs(setup: Setup, policy: Policy, actor: Actor, obs: chex.Array, avail: chex.Array,
                    first: chex.Array, key: chex.PRNGKey):
    """One env's step up to the greedy choice: inputs, carry, network outputs, the alphas acted on,
    and epsilon-greedy's exploration flags and random actions (N,)."""
    n, a_dim = setup.spec.num_agents, setup.spec.num_actions
    chex.assert_shape(obs, (n, setup.spec.obs_dim))
    chex.assert_shape(avail, (n, a_dim))
    inputs = build_inputs(obs, actor.last_actions, first, a_dim)
    agent_carry, out = setup.agent.apply(policy.params.agent, actor.agent_carry, inputs, actor.prev_inputs,
                                         jnp.full((n,), first))
    alpha = acted_alpha(setup, out.scores, policy.static_alpha)
    explore, random_action = jax.vmap(ops.exploration, in_axes=(0, 0, None))(jax.random.split(key, n), avail,
                                                                           policy.epsilon)
    return inputs, agent_carry, out, alpha, explore, random_action


def act(setup: Setup, policy: Policy, actor: Actor, obs: chex.Array, avail: chex.Array, first: chex.Array,
        key: chex.PRNGKey) -> tuple[Actor, chex.Array, chex.Array]:
    """One policy step of one env's N agents (obs (N, O), avail (N, A)); ``first``: the episode's first step.

    Returns the next carry, the epsilon-greedy actions (N,) and the alphas acted on (N,). The jitted
    rollout makes the same choices for all its envs at once (``act_all``).
    """
    inputs, agent_carry, out, alpha, explore, random_action = _policy_outputs(setup, policy, actor, obs, avail,
                                                                              first, key)
    greedy = greedy_actions(setup, out.atoms, out.scores, avail, ~explore, policy.static_alpha, pack=False)
    actions = jnp.where(explore, random_action, greedy)
    return Actor(agent_carry, actions, inputs), actions, alpha


def act_all(setup: Setup, policy: Policy, actors: Actor, obs: chex.Array, avail: chex.Array, first: chex.Array,
            keys: chex.PRNGKey, done: chex.Array) -> tuple[Actor, chex.Array, chex.Array]:
    """``act`` for E envs at once (obs (E, N, O), avail (E, N, A), keys (E, 2), ``done`` (E,) the envs whose
    episode has ended): the same actions, but the greedy choice is computed (``greedy_actions``) only
    for the agents that neither explore nor have a single available action, in envs still running."""
    inputs, agent_carry, out, alpha, explore, random_action = jax.vmap(
        functools.partial(_policy_outputs, setup, policy), in_axes=(0, 0, 0, None, 0)
    )(actors, obs, avail, first, keys)
    greedy = greedy_actions(setup, out.atoms, out.scores, avail, ~explore & ~done[:, None], policy.static_alpha)
    actions = jnp.where(explore, random_action, greedy)
    return Actor(agent_carry, actions, inputs), actions, alpha


def step_record(before: TimeStep, actions: Any, alpha: Any, after: TimeStep, done: Any, first: Any) -> Episode:
    """Stored step t: what the agents saw (``before``), did and chose, and the outcome (``after``).

    ``done``: the episode had ended before this step (the env is frozen, ``after`` is ``before``
    again, and the step is padding: actions and alpha zero, as in ``padding_record``). Takes one
    env's arrays or a stack of envs', jax or NumPy.
    """
    live = ~done
    return Episode(
        obs=before.obs,
        state=before.state,
        avail=before.avail > 0,
        actions=actions * live[..., None],
        reward=after.reward * ~done,
        terminated=after.terminated & ~done,
        filled=~done,
        won=after.won & ~done,
        reset=first,
        alpha=alpha * live[..., None],
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
    """One episode's carry between steps."""

    env_state: Any
    timestep: TimeStep
    actor: Actor
    done: chex.Array  # () the episode has ended (its env is frozen)
    key: chex.PRNGKey


def _episode_step(setup: Setup, policy: Policy, c: _EpisodeCarry, t: chex.Array
                  ) -> tuple[_EpisodeCarry, Episode, tuple[Any, chex.PRNGKey]]:
    """Step ``t`` of E episodes (carry (E, ...)): the next carry, the stored steps, and (env states,
    step keys) before them."""
    keys = jax.vmap(lambda k: jax.random.split(k, 3))(c.key)
    key, act_key, env_key = keys[:, 0], keys[:, 1], keys[:, 2]
    first = t == 0
    actor, actions, alpha = act_all(setup, policy, c.actor, c.timestep.obs, c.timestep.avail, first, act_key,
                                    c.done)
    env_state, next_ts = jax.vmap(setup.env.step)(env_key, c.env_state, actions)
    # After the end the env is frozen, and the step is stored as padding.
    env_state = jax.vmap(tree_select)(c.done, c.env_state, env_state)
    next_ts = jax.vmap(tree_select)(c.done, c.timestep, next_ts)
    record = step_record(c.timestep, actions, alpha, next_ts, c.done, jnp.full(c.done.shape, first))
    done = c.done | next_ts.terminated | next_ts.truncated
    return _EpisodeCarry(env_state, next_ts, actor, done, key), record, (c.env_state, env_key)


class _RolloutCarry(NamedTuple):
    t: chex.Array  # () the next step's index, shared by the E episodes (and the runs, under a named axis)
    episodes: _EpisodeCarry  # (E, ...)
    records: Episode  # (T+1, E, ...) steps 0..t-1 written
    env_trace: Any  # (env states (T, E, ...), step keys (T, E, 2)) with keep_env_states, else None


def _write(buffer: Any, values: Any, t: chex.Array) -> Any:
    """Write step ``t`` of E episodes into time-major (T(+1), E, ...) buffers."""
    return jax.tree.map(lambda b, v: jax.lax.dynamic_update_index_in_dim(b, v, t, axis=0), buffer, values)


def _fill_from(buffer: Any, values: Any, t: chex.Array) -> Any:
    """Time-major (L, E, ...) buffers -> (E, L, ...), entries ``t`` and later set to each episode's
    ``values`` (E, ...)."""
    def fill(b: chex.Array, v: chex.Array) -> chex.Array:
        later = (jnp.arange(b.shape[0]) >= t).reshape(-1, *([1] * (b.ndim - 1)))
        return jnp.swapaxes(jnp.where(later, v[None], b), 0, 1)
    return jax.tree.map(fill, buffer, values)


def run_episodes(setup: Setup, policy: Policy, keys: chex.PRNGKey, keep_env_states: bool = False,
                 over_runs: bool = False) -> Episode | tuple[Episode, Any]:
    """E whole episodes (keys (E, 2)), stepped together until every one has ended.

    The step loop is a ``while_loop`` that stops once all E episodes have ended (with ``over_runs``,
    once every run's have: the runs are the setup's named vmap axis, and the stop is one predicate
    for all of them; vmapped without it, the loop runs until the last run's episodes have ended and
    the ended runs' steps are selected away), instead of stepping to the episode limit:
    only the steps up to the longest episode are computed. An episode that ends earlier stays
    frozen and stores padding; entries after the loop stop are the final step, masked
    (``padding_record``), as are all entries after an episode's end. Each episode consumes its
    key as a fixed-length scan would, so the result does not depend on when the loop stops.
    With ``keep_env_states`` also the env state and step key before each step, (E, T, ...);
    after the loop stops they are the frozen final state and zero keys.
    """
    t_len = setup.spec.episode_limit
    split = jax.vmap(jax.random.split)(keys)  # (E, 2, 2)
    env_states, timesteps = jax.vmap(setup.env.reset)(split[:, 0])
    num = keys.shape[0]
    actors = jax.vmap(lambda _: start_actor(setup))(jnp.arange(num))
    episodes = _EpisodeCarry(env_states, timesteps, actors, jnp.zeros((num,), bool), split[:, 1])
    step = functools.partial(_episode_step, setup, policy)
    # Shapes of one step's outputs, for the preallocated buffers.
    _, record_shape, trace_shape = jax.eval_shape(step, episodes, jnp.int32(0))

    def buffers(shapes: Any, length: int) -> Any:
        return jax.tree.map(lambda x: jnp.zeros((length, *x.shape), x.dtype), shapes)

    carry = _RolloutCarry(jnp.int32(0), episodes, buffers(record_shape, t_len + 1),
                          buffers(trace_shape, t_len) if keep_env_states else None)

    def cond(c: _RolloutCarry) -> chex.Array:
        running = jnp.any(~c.episodes.done).astype(jnp.int32)
        running = (max_over_runs(setup, running) if over_runs else running) > 0
        return (c.t < t_len) & running

    def body(c: _RolloutCarry) -> _RolloutCarry:
        new, record, trace = step(c.episodes, c.t)
        env_trace = None if c.env_trace is None else _write(c.env_trace, trace, c.t)
        return _RolloutCarry(c.t + 1, new, _write(c.records, record, c.t), env_trace)

    final = jax.lax.while_loop(cond, body, carry)
    episodes_out = _fill_from(final.records, padding_record(final.episodes.timestep), final.t)
    if not keep_env_states:
        return episodes_out
    frozen = (final.episodes.env_state, jnp.zeros_like(final.episodes.key))
    return episodes_out, _fill_from(final.env_trace, frozen, final.t)


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
            hyper: Hyper | None = None, keep_env_states: bool = False, over_runs: bool = False):
    """E episodes -> (episodes, stats), plus (env states, step keys) per step with ``keep_env_states``.

    ``over_runs``: the caller vmaps over runs with the setup's ``run_axis`` name (as ``run_chunk``
    is), so the step loop stops for all runs at once (see ``run_episodes``)."""
    hyper = setup.default_hyper() if hyper is None else hyper
    policy = Policy(params, epsilon, hyper.alpha)
    over_runs = over_runs and setup.run_axis is not None
    keys = jax.random.split(key, num_episodes)
    out = run_episodes(setup, policy, keys, keep_env_states, over_runs)  # (E, T+1, ...)
    episodes, env_trace = out if keep_env_states else (out, None)
    stats = episode_stats(setup, episodes)
    return (episodes, stats, env_trace) if keep_env_states else (episodes, stats)


def stack_timesteps(timesteps: list[Any]) -> TimeStep:
    """Host time steps of several envs -> one TimeStep of NumPy arrays with a leading env axis."""
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *timesteps)
