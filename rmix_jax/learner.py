"""One learner for RMIX and its baselines: ``make_train(config)`` -> pure ``train(rng)``.

RMIX, static-alpha RMIX, reference (frozen-predictor) RMIX, RDN, QMIX, VDN and IQL
differ only in configuration: the number of atoms M, how alpha is chosen, the
mixer, and whether the quantile-regression update runs.

Per iteration each seed runs ``num_envs`` whole episodes (PyMARL's episode
runner, padded to the episode limit and masked), stores them in a whole-episode
replay (flashbax item buffer), and makes ``updates_per_iteration`` updates. An
update is a TD update (Eqns. 5-6) or, once every ``qr_interval`` env steps after
``start_to_update_qr``, a quantile-regression update (Eqn. 7) with its own Adam.

Shape legend: B batch of episodes, E parallel envs, T episode limit (arrays hold
T + 1 steps: the last holds the final observation), N agents, A actions, M atoms,
K risk levels, G mixer outputs (1, or N for IQL), O obs, S state, I agent input.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import chex
import flashbax as fbx
import jax
import jax.numpy as jnp
import optax
from flax import struct

from rmix_jax import ops
from rmix_jax.config import Config
from rmix_jax.envs import ArrayEnv, EnvSpec, TimeStep, make_env
from rmix_jax.networks import AgentCarry, AgentNetwork, make_mixer, predictor_norm, zero_carry


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
    window_sum: chex.Array  # entries per episode the update's loss ran over (0 without an update)
    alpha_entropy_sum: chex.Array  # mean entropy of P(alpha) over the batch's filled agent-steps (nats)
    risk_grad_norm_sum: chex.Array  # norm of the TD loss's gradient reaching the predictor (TD updates)


class Learner(NamedTuple):
    """The pure pieces of training, for drivers that leave jit between chunks."""

    config: Config
    env: ArrayEnv
    spec: EnvSpec
    agent: AgentNetwork
    mixer: Any
    init: Callable[..., TrainState]
    run_chunk: Callable[[TrainState], tuple[TrainState, dict]]
    loss: Callable[..., tuple[chex.Array, dict]]
    rollout: Callable[..., tuple[Episode, EpisodeStats]]
    train: Callable[[chex.PRNGKey], dict]
    unroll: Callable[[Any, Episode], tuple[chex.Array, chex.Array]]
    values_and_alpha: Callable[..., tuple[chex.Array, chex.Array]]
    learns_alpha: Callable[[Hyper], chex.Array]  # whether a run acts on the predictor's alpha
    max_chunks: int
    default_hyper: Callable[[], Hyper]
    mixed_alpha: bool  # built for a sweep mixing static and learned alpha
    # The pieces of ``run_chunk``, for a host-side env loop (``rmix_jax.host``):
    act: Callable[..., tuple[Any, chex.Array, chex.Array, chex.Array]]
    iteration_start: Callable[[TrainState], tuple[TrainState, chex.PRNGKey, chex.PRNGKey, chex.Array]]
    learn: Callable[..., tuple[TrainState, dict]]
    finish_chunk: Callable[..., tuple[TrainState, chex.PRNGKey, dict]]
    test_metrics: Callable[[EpisodeStats], dict]
    episode_stats: Callable[[Episode], EpisodeStats]
    empty_episode: Callable[[], Episode]


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


RUN_AXIS = "vmapped_runs"  # the axis name drivers give ``jax.vmap`` over runs (``make_learner``'s run_axis)


def make_learner(config: Config, env: ArrayEnv | None = None, run_axis: str | None = None) -> Learner:
    """The learner of a config. ``run_axis``: the name of the ``jax.vmap`` axis over runs that the
    caller vmaps ``run_chunk`` / ``learn`` with (``RUN_AXIS``), or None when it vmaps without a name
    or not at all. With a name, an update skips the quantile-regression loss unless some run makes a
    QR update then (a real ``lax.cond`` on a predicate reduced over the runs), and runs its networks
    over the shortest of ``train.time_windows`` time windows that holds every run's sampled episodes;
    without one, a vmapped update computes every branch and selects per run, as a per-run ``cond``
    becomes a ``select`` (so keep ``time_windows`` at 1 there).
    """
    env = env if env is not None else make_env(config.env)
    spec = env.spec
    n, a_dim, t_len = spec.num_agents, spec.num_actions, spec.episode_limit
    ac, tc = config.agent, config.train
    num_levels = ac.num_risk_levels
    # A sweep over alpha that includes "learned" runs static and learned points in one
    # program: the network keeps its predictor and each run selects by Hyper.alpha.
    mixed_alpha = "learned" in config.sweep.get("agent.alpha", ())
    mode = "straight_through" if mixed_alpha and ac.risk_predictor == "static" else ac.risk_predictor
    use_qr = tc.use_qr
    # Time windows of the loss (``train.time_windows`` evenly spaced lengths, the last the whole
    # stored episode): an update runs the networks over the shortest window that holds its batch.
    window_sizes = tuple(sorted({math.ceil(k * t_len / tc.time_windows) + 1 for k in range(1, tc.time_windows + 1)}))

    def max_over_runs(value: chex.Array) -> chex.Array:
        """The maximum of ``value`` over the runs when they are a named axis (else the run's own)."""
        return value if run_axis is None else jax.lax.pmax(value, run_axis)

    agent = AgentNetwork(
        num_actions=a_dim,
        num_atoms=ac.num_atoms,
        hidden_dim=ac.hidden_dim,
        num_risk_levels=num_levels,
        risk_embed_dim=ac.risk_embed_dim or n,
        use_risk_predictor=config.uses_risk_predictor or mixed_alpha,
        risk_scores=ac.risk_scores,
        risk_temperature=ac.risk_temperature,
    )
    mixer = make_mixer(config.mixer.kind, config.mixer.embed_dim, config.mixer.hypernet_hidden)
    # Adam without its learning-rate step: the rate is applied from Hyper (traced, so
    # sweepable); -lr * update is what optax.adam's final scale computes.
    td_tx = optax.chain(optax.clip_by_global_norm(tc.grad_clip), optax.scale_by_adam())
    qr_tx = optax.chain(optax.clip_by_global_norm(tc.grad_clip), optax.scale_by_adam(eps=tc.qr_eps))

    def default_hyper() -> Hyper:
        return hyper_from_config(config)

    def step_params(params: Params, updates: Any, lr: chex.Array) -> Params:
        return optax.apply_updates(params, jax.tree.map(lambda u: -lr * u, updates))
    buffer = fbx.make_item_buffer(
        max_length=tc.buffer_size,
        min_length=tc.batch_size,
        sample_batch_size=tc.batch_size,
        add_sequences=True,
    )

    # --- acting values ------------------------------------------------------------
    def values_and_alpha(
        atoms: chex.Array, scores: chex.Array, static_alpha: chex.Array | None = None
    ) -> tuple[chex.Array, chex.Array]:
        """(..., A, M), (..., K) -> values (..., A), alpha (...). A may be any count (e.g. 1).

        ``static_alpha`` (a traced scalar, default the config's) is the fixed risk level
        of static-alpha runs; in a mixed sweep, ``LEARNED_ALPHA`` selects the predictor.
        """
        static_alpha = jnp.float32(ac.alpha) if static_alpha is None else static_alpha
        lead, num_values = atoms.shape[:-2], atoms.shape[-2]
        flat_atoms = atoms.reshape(-1, *atoms.shape[-2:])

        def static() -> tuple[chex.Array, chex.Array]:
            values = jax.vmap(jax.vmap(ops.cvar, in_axes=(0, None)), in_axes=(0, None))(flat_atoms, static_alpha)
            return values.reshape(*lead, num_values), jnp.full(lead, static_alpha, jnp.float32)

        if mode == "static":
            return static()
        flat_scores = scores.reshape(-1, num_levels)
        values, level, _ = jax.vmap(ops.risk_sensitive_values, in_axes=(0, 0, None))(
            flat_atoms, flat_scores, mode == "straight_through"
        )
        learned = values.reshape(*lead, num_values), ops.level_to_alpha(level, num_levels).reshape(lead)
        if not mixed_alpha:
            return learned
        use_static = static_alpha != LEARNED_ALPHA
        return tree_select(use_static, static(), learned)

    def alpha_histogram(alpha: chex.Array, weight: chex.Array) -> chex.Array:
        """(..., N) chosen alphas and weights -> (N, K) weighted counts per agent and level."""
        bins = ops.alpha_to_level(alpha, num_levels)
        return jnp.sum(jax.nn.one_hot(bins, num_levels) * weight[..., None], axis=tuple(range(alpha.ndim - 1)))

    # --- acting -------------------------------------------------------------------
    def act(params: Params, agent_carry: AgentCarry, obs: chex.Array, avail: chex.Array, last_actions: chex.Array,
            prev_inputs: chex.Array, first: chex.Array, epsilon: chex.Array, key: chex.PRNGKey,
            static_alpha: chex.Array) -> tuple[AgentCarry, chex.Array, chex.Array, chex.Array]:
        """One policy step of one env's N agents (obs (N, O), avail (N, A), last actions (N,)).

        Returns the new recurrent carry, epsilon-greedy actions (N,), the alphas acted
        on (N,) and the agent inputs (N, I) (the next step's ``prev_inputs``). The jitted
        rollout and the host-side runner (``rmix_jax.host``) both act through this.
        """
        inputs = build_inputs(obs, last_actions, first, a_dim)
        agent_carry, out = agent.apply(params.agent, agent_carry, inputs, prev_inputs, jnp.full((n,), first))
        values, alpha = values_and_alpha(out.atoms, out.scores, static_alpha)
        actions = jax.vmap(ops.epsilon_greedy, in_axes=(0, 0, 0, None))(
            jax.random.split(key, n), values, avail, epsilon
        )
        return agent_carry, actions, alpha, inputs

    # --- rollout ------------------------------------------------------------------
    class _Carry(NamedTuple):
        env_state: Any
        timestep: TimeStep
        agent_carry: AgentCarry
        last_actions: chex.Array  # (N,)
        prev_inputs: chex.Array  # (N, I)
        done: chex.Array  # ()
        key: chex.PRNGKey

    def run_episode(params: Params, key: chex.PRNGKey, epsilon: chex.Array, static_alpha: chex.Array,
                    keep_env_states: bool = False) -> Episode | tuple[Episode, Any]:
        """One whole episode; with ``keep_env_states`` also the env state and step key of each step (for replays)."""
        reset_key, key = jax.random.split(key)
        env_state, timestep = env.reset(reset_key)
        carry = _Carry(
            env_state=env_state,
            timestep=timestep,
            agent_carry=zero_carry((n,), ac.hidden_dim),
            last_actions=jnp.zeros((n,), jnp.int32),
            prev_inputs=jnp.zeros((n, agent_input_dim(spec)), jnp.float32),
            done=jnp.bool_(False),
            key=key,
        )

        def step(c: _Carry, t: chex.Array) -> tuple[_Carry, Episode]:
            key, act_key, env_key = jax.random.split(c.key, 3)
            first = t == 0
            agent_carry, actions, alpha, inputs = act(
                params, c.agent_carry, c.timestep.obs, c.timestep.avail, c.last_actions, c.prev_inputs,
                first, epsilon, act_key, static_alpha,
            )
            env_state, next_ts = env.step(env_key, c.env_state, actions)
            # After the end the env is frozen: the padding steps are masked anyway.
            env_state = tree_select(c.done, c.env_state, env_state)
            next_ts = tree_select(c.done, c.timestep, next_ts)
            record = Episode(
                obs=c.timestep.obs,
                state=c.timestep.state,
                avail=c.timestep.avail > 0,
                actions=actions,
                reward=next_ts.reward * ~c.done,
                terminated=next_ts.terminated & ~c.done,
                filled=~c.done,
                won=next_ts.won & ~c.done,
                reset=first,
                alpha=alpha,
            )
            done = c.done | next_ts.terminated | next_ts.truncated
            new = _Carry(env_state, next_ts, agent_carry, actions, inputs, done, key)
            return new, ((record, (c.env_state, env_key)) if keep_env_states else record)

        final, steps = jax.lax.scan(step, carry, jnp.arange(t_len))
        if keep_env_states:
            steps, env_trace = steps
        last = final.timestep
        tail = Episode(
            obs=last.obs,
            state=last.state,
            avail=last.avail > 0,
            actions=jnp.zeros((n,), jnp.int32),
            reward=jnp.float32(0.0),
            terminated=jnp.bool_(False),
            filled=jnp.bool_(False),
            won=jnp.bool_(False),
            reset=jnp.bool_(False),
            alpha=jnp.zeros((n,), jnp.float32),
        )
        episode = jax.tree.map(lambda xs, x: jnp.concatenate([xs, x[None]], axis=0), steps, tail)
        return (episode, env_trace) if keep_env_states else episode

    def episode_stats(episodes: Episode) -> EpisodeStats:
        """Returns, wins, lengths and chosen-alpha counts of E episodes (E, T+1, ...)."""
        filled = episodes.filled.astype(jnp.float32)
        return EpisodeStats(
            returns=jnp.sum(episodes.reward * filled, axis=1),
            won=jnp.any(episodes.won, axis=1),
            lengths=jnp.sum(filled, axis=1),
            alpha_hist=alpha_histogram(episodes.alpha, jnp.broadcast_to(filled[..., None], episodes.alpha.shape)),
        )

    def empty_episode() -> Episode:
        """Zeros shaped and typed as one stored episode (the replay's item), without running the env."""
        return Episode(
            obs=jnp.zeros((t_len + 1, n, spec.obs_dim), jnp.float32),
            state=jnp.zeros((t_len + 1, spec.state_dim), jnp.float32),
            avail=jnp.zeros((t_len + 1, n, a_dim), bool),
            actions=jnp.zeros((t_len + 1, n), jnp.int32),
            reward=jnp.zeros((t_len + 1,), jnp.float32),
            terminated=jnp.zeros((t_len + 1,), bool),
            filled=jnp.zeros((t_len + 1,), bool),
            won=jnp.zeros((t_len + 1,), bool),
            reset=jnp.zeros((t_len + 1,), bool),
            alpha=jnp.zeros((t_len + 1, n), jnp.float32),
        )

    def rollout(params: Params, key: chex.PRNGKey, epsilon: chex.Array, num_episodes: int,
                hyper: Hyper | None = None, keep_env_states: bool = False):
        """E episodes -> (episodes, stats), plus (env states, step keys) per step with ``keep_env_states``."""
        hyper = default_hyper() if hyper is None else hyper
        out = jax.vmap(run_episode, in_axes=(None, 0, None, None, None))(
            params, jax.random.split(key, num_episodes), epsilon, hyper.alpha, keep_env_states
        )  # (E, T+1, ...)
        episodes, env_trace = out if keep_env_states else (out, None)
        stats = episode_stats(episodes)
        return (episodes, stats, env_trace) if keep_env_states else (episodes, stats)

    # --- learning -----------------------------------------------------------------
    def unroll(agent_params: Any, batch: Episode) -> tuple[chex.Array, chex.Array]:
        """Agent outputs over whole episodes: (B, T+1, N, A, M) atoms, (B, T+1, N, K) scores."""
        prev_actions = jnp.concatenate([jnp.zeros_like(batch.actions[:, :1]), batch.actions[:, :-1]], axis=1)
        inputs = build_inputs(batch.obs, prev_actions, batch.reset, a_dim)  # (B, T+1, N, I)
        prev_inputs = jnp.concatenate([jnp.zeros_like(inputs[:, :1]), inputs[:, :-1]], axis=1)
        prev_inputs = prev_inputs * (1.0 - batch.reset.astype(jnp.float32))[..., None, None]
        reset = jnp.broadcast_to(batch.reset[..., None], batch.actions.shape)  # (B, T+1, N)
        features = agent.apply(agent_params, inputs, prev_inputs, method=AgentNetwork.torsos)

        def step(carry: AgentCarry, xs):
            feature_t, reset_t = xs
            carry = agent.apply(agent_params, carry, feature_t, reset_t, method=AgentNetwork.recur)
            return carry, carry

        # (B, T+1, ...) -> (T+1, B, ...) for the scan over time, and back
        xs = jax.tree.map(lambda v: jnp.swapaxes(v, 0, 1), (features, reset))
        _, hidden = jax.lax.scan(step, zero_carry((reset.shape[0], n), ac.hidden_dim), xs)
        hidden = jax.tree.map(lambda v: jnp.swapaxes(v, 0, 1), hidden)
        out = agent.apply(agent_params, hidden, method=AgentNetwork.heads)
        return out.atoms, out.scores

    def take(values: chex.Array, index: chex.Array) -> chex.Array:
        """values (..., A, *rest), index (...) -> (..., *rest)."""
        expanded = index.reshape(index.shape + (1,) * (values.ndim - index.ndim))
        return jnp.take_along_axis(values, expanded, axis=index.ndim).squeeze(index.ndim)

    def loss_fn(params: Params, target_params: Params, batch: Episode, is_qr: chex.Array,
                hyper: Hyper | None = None, with_qr: bool = use_qr):
        """TD loss, or with ``with_qr`` the QR loss where ``is_qr``; aux holds both (QR 0 without)."""
        hyper = default_hyper() if hyper is None else hyper
        atoms, scores = unroll(params.agent, batch)
        target_atoms, target_scores = unroll(target_params.agent, batch)

        def value_of(chosen_atoms: chex.Array, agent_scores: chex.Array) -> chex.Array:
            """CVaR at the agent's chosen alpha of one action's atoms: (..., M), (..., K) -> (...)."""
            return values_and_alpha(chosen_atoms[..., None, :], agent_scores, hyper.alpha)[0][..., 0]

        # Only the taken action's value carries a gradient and only the greedy next
        # action's target value is used, so CVaR is computed for those alone; every
        # action's value is needed (without gradient) only for the double-Q argmax.
        actions = batch.actions[:, :-1]  # (B, T, N)
        predicted = take(atoms[:, :-1], actions)  # (B, T, N, M)
        taken = value_of(predicted, scores[:, :-1])  # (B, T, N)
        next_values, _ = values_and_alpha(
            jax.lax.stop_gradient(atoms[:, 1:]), jax.lax.stop_gradient(scores[:, 1:]), hyper.alpha
        )  # (B, T, N, A)
        next_greedy = jax.vmap(jax.vmap(jax.vmap(ops.masked_argmax)))(next_values, batch.avail[:, 1:])
        next_atoms = take(target_atoms[:, 1:], next_greedy)  # double Q: online argmax, target atoms
        next_target = value_of(next_atoms, target_scores[:, 1:])  # (B, T, N)

        c_tot = mixer.apply(params.mixer, taken, batch.state[:, :-1])  # (B, T, G)
        c_tot_next = mixer.apply(target_params.mixer, next_target, batch.state[:, 1:])
        reward = batch.reward[:, :-1, None]
        terminated = batch.terminated[:, :-1, None].astype(jnp.float32)
        mask = batch.filled[:, :-1].astype(jnp.float32)  # (B, T)
        # TD(lambda) along each episode (lambda = 0 is Eqn. 5): vmapped over the batch, and over
        # the mixer outputs (axis 1 of an episode's (T, G) values), which share reward and flags.
        per_output = jax.vmap(ops.td_lambda_target, in_axes=(None, None, None, 1, None, None), out_axes=1)
        y = jax.lax.stop_gradient(jax.vmap(per_output, in_axes=(0, 0, None, 0, None, 0))(
            reward[..., 0], terminated[..., 0], hyper.gamma, c_tot_next, hyper.td_lambda,
            batch.filled[:, 1:].astype(jnp.float32),
        ))
        denominator = jnp.maximum(jnp.sum(mask), 1.0)
        td_error = (c_tot - y) * mask[..., None]
        td_loss = jnp.sum(td_error**2) / (denominator * c_tot.shape[-1])
        entropy = ops.softmax_entropy(jax.lax.stop_gradient(scores[:, :-1]))  # (B, T, N)
        alpha_entropy = jnp.sum(entropy * mask[..., None]) / (denominator * n)
        aux = {"td_loss": td_loss, "qr_loss": jnp.float32(0.0), "alpha_entropy": alpha_entropy}
        if not with_qr:
            return td_loss, aux

        qr_target = jax.lax.stop_gradient(
            taken[..., None] + hyper.gamma * (1.0 - terminated[..., None]) * next_atoms
        )
        per_agent = jax.vmap(jax.vmap(jax.vmap(ops.quantile_huber_loss)))(predicted, qr_target)  # (B, T, N)
        qr_loss = jnp.sum(per_agent * mask[..., None]) / (denominator * n)
        aux["qr_loss"] = qr_loss
        return jnp.where(is_qr, qr_loss, td_loss), aux

    def update(state: TrainState, key: chex.PRNGKey) -> tuple[TrainState, UpdateStats]:
        batch = buffer.sample(state.buffer_state, key).experience
        can_learn = buffer.can_sample(state.buffer_state)
        is_qr = (
            jnp.bool_(use_qr)
            & (state.t_env >= state.hyper.start_to_update_qr)
            & (state.t_env - state.last_qr_t_env >= state.hyper.qr_interval)
        )

        def loss_and_grads(with_qr: bool, size: int) -> tuple[tuple[chex.Array, dict], Params]:
            window = jax.tree.map(lambda v: v[:, :size], batch)  # the first ``size`` entries of each episode
            return jax.value_and_grad(loss_fn, has_aux=True)(
                state.params, state.target_params, window, is_qr, state.hyper, with_qr
            )

        # One branch per (QR loss or not, time window); the branch is chosen once for all runs
        # (reduced over run_axis), so a vmapped update computes only that one.
        with_qr_options = (False, True) if use_qr else (False,)
        branches = [lambda q=q, s=s: loss_and_grads(q, s) for q in with_qr_options for s in window_sizes]
        # The QR loss (M x M atom pairs per agent and step) only where some run needs it.
        any_qr = max_over_runs(is_qr.astype(jnp.int32)) > 0
        # The shortest window that holds every sampled episode and the entry after its last step.
        needed = max_over_runs(jnp.max(jnp.sum(batch.filled, axis=1)) + 1)
        window_index = jnp.sum(needed > jnp.asarray(window_sizes[:-1]))
        branch = window_index + len(window_sizes) * any_qr.astype(jnp.int32) if use_qr else window_index
        (_, aux), grads = jax.lax.switch(branch, branches)  # a single branch is simply called
        do_td = can_learn & ~is_qr
        do_qr = can_learn & is_qr

        td_updates, td_opt_state = td_tx.update(grads, state.td_opt_state, state.params)
        params = tree_select(do_td, step_params(state.params, td_updates, state.hyper.lr), state.params)
        qr_opt_state = state.qr_opt_state
        if use_qr:
            qr_updates, new_qr_opt_state = qr_tx.update(grads, state.qr_opt_state, state.params)
            params = tree_select(do_qr, step_params(state.params, qr_updates, state.hyper.qr_lr), params)
            qr_opt_state = tree_select(do_qr, new_qr_opt_state, state.qr_opt_state)
        state = state.replace(
            params=params,
            td_opt_state=tree_select(do_td, td_opt_state, state.td_opt_state),
            qr_opt_state=qr_opt_state,
            updates=state.updates + can_learn.astype(jnp.int32),
            last_qr_t_env=jnp.where(do_qr, state.t_env, state.last_qr_t_env),
        )
        stats = UpdateStats(
            td_loss_sum=jnp.where(do_td, aux["td_loss"], 0.0),
            td_count=do_td.astype(jnp.float32),
            qr_loss_sum=jnp.where(do_qr, aux["qr_loss"], 0.0),
            qr_count=do_qr.astype(jnp.float32),
            grad_norm_sum=jnp.where(can_learn, optax.tree.norm(grads), 0.0),
            window_sum=jnp.where(can_learn, jnp.asarray(window_sizes)[window_index], 0).astype(jnp.float32),
            alpha_entropy_sum=jnp.where(can_learn, aux["alpha_entropy"], 0.0),
            risk_grad_norm_sum=jnp.where(do_td, predictor_norm(grads.agent), 0.0),
        )
        return state, stats

    def learns_alpha(hyper: Hyper) -> chex.Array:
        """Whether a run acts on the predictor's alpha (False for static alpha, per run in a mixed sweep)."""
        if mode == "static":
            return jnp.bool_(False)
        return (hyper.alpha == LEARNED_ALPHA) if mixed_alpha else jnp.bool_(True)

    def epsilon_at(hyper: Hyper, t_env: chex.Array) -> chex.Array:
        return ops.linear_schedule(tc.epsilon_start, hyper.epsilon_finish, hyper.epsilon_anneal_steps, t_env)

    def iteration_start(state: TrainState) -> tuple[TrainState, chex.PRNGKey, chex.PRNGKey, chex.Array]:
        """Keys and epsilon of one iteration: (state with its next key, rollout key, update key, epsilon)."""
        key, rollout_key, update_key = jax.random.split(state.key, 3)
        return state.replace(key=key), rollout_key, update_key, epsilon_at(state.hyper, state.t_env)

    def learn(state: TrainState, episodes: Episode, ep_stats: EpisodeStats, epsilon: chex.Array,
              update_key: chex.PRNGKey) -> tuple[TrainState, dict]:
        """Store E collected episodes, make the iteration's updates, copy the target when due."""
        state = state.replace(
            buffer_state=buffer.add(state.buffer_state, episodes),
            t_env=state.t_env + jnp.sum(ep_stats.lengths).astype(jnp.int32),
            episodes=state.episodes + episodes.filled.shape[0],
        )
        state, upd = jax.lax.scan(update, state, jax.random.split(update_key, tc.updates_per_iteration))
        copy_target = state.updates - state.last_target_update >= state.hyper.target_update_interval
        state = state.replace(
            target_params=tree_select(copy_target, state.params, state.target_params),
            last_target_update=jnp.where(copy_target, state.updates, state.last_target_update),
        )
        metrics = {
            "return_sum": jnp.sum(ep_stats.returns),
            "won_sum": jnp.sum(ep_stats.won.astype(jnp.float32)),
            "length_sum": jnp.sum(ep_stats.lengths),
            "alpha_hist": ep_stats.alpha_hist,
            "epsilon": epsilon,
            **jax.tree.map(jnp.sum, upd)._asdict(),
        }
        return state, metrics

    def iteration(state: TrainState, _: None) -> tuple[TrainState, dict]:
        state, rollout_key, update_key, epsilon = iteration_start(state)
        episodes, ep_stats = rollout(state.params, rollout_key, epsilon, tc.num_envs, state.hyper)
        return learn(state, episodes, ep_stats, epsilon, update_key)

    def init(rng: chex.PRNGKey, hyper: Hyper | None = None) -> TrainState:
        """A fresh state for one run; ``hyper`` (default: the config's) is carried in it."""
        hyper = default_hyper() if hyper is None else hyper
        agent_key, mixer_key, key = jax.random.split(rng, 3)
        input_dim = agent_input_dim(spec)
        agent_params = agent.init(
            agent_key,
            zero_carry((n,), ac.hidden_dim),
            jnp.zeros((n, input_dim)),
            jnp.zeros((n, input_dim)),
            jnp.zeros((n,), bool),
        )
        mixer_params = mixer.init(mixer_key, jnp.zeros((n,)), jnp.zeros((spec.state_dim,)))
        params = Params(agent=agent_params, mixer=mixer_params)
        zero = jnp.int32(0)
        return TrainState(
            hyper=hyper,
            params=params,
            target_params=params,
            td_opt_state=td_tx.init(params),
            qr_opt_state=qr_tx.init(params) if use_qr else None,
            # flashbax starts its index weak-typed; a restored checkpoint's is not, and the
            # two would compile the chunk twice (and miss the persistent compile cache on resume).
            buffer_state=jax.tree.map(
                lambda x: jax.lax.convert_element_type(x, x.dtype), buffer.init(empty_episode())
            ),
            key=key,
            t_env=zero,
            episodes=zero,
            updates=zero,
            last_target_update=zero,
            last_qr_t_env=zero,
            chunks=zero,
        )

    def test_metrics(stats: EpisodeStats) -> dict:
        return {
            "test_return": jnp.mean(stats.returns),
            "test_won": jnp.mean(stats.won.astype(jnp.float32)),
            "test_length": jnp.mean(stats.lengths),
            "test_alpha_hist": stats.alpha_hist,
        }

    def finish_chunk(state: TrainState, new_state: TrainState, it: dict) -> tuple[TrainState, chex.PRNGKey, dict]:
        """After a chunk's iterations (``it``: metrics stacked over them): the state kept
        (a run already past t_max stays put, but for its replay), the greedy test's key, and the training
        metrics; the caller adds ``test_metrics`` of the test episodes."""
        active = state.t_env < state.hyper.t_max
        eval_key, key = jax.random.split(new_state.key)
        new_state = new_state.replace(key=key, chunks=new_state.chunks + 1)
        # The replay is not selected back: its episodes from past t_max are never learned
        # from, and a select would copy the whole replay of every run at every chunk
        # (a quarter of the chunk's time on MACN 7x4 with 8 seeds).
        kept = tree_select(active, new_state.replace(buffer_state=None), state.replace(buffer_state=None))
        new_state = kept.replace(buffer_state=new_state.buffer_state)
        episodes = jnp.float32(it["return_sum"].shape[0] * tc.num_envs)
        metrics = {
            "active": active,
            "t_env": new_state.t_env,
            "episodes": new_state.episodes,
            "updates": new_state.updates,
            "return_mean": jnp.sum(it["return_sum"]) / episodes,
            "won_rate": jnp.sum(it["won_sum"]) / episodes,
            "length_mean": jnp.sum(it["length_sum"]) / episodes,
            "epsilon": it["epsilon"][-1],
            "td_loss": _ratio(it["td_loss_sum"], it["td_count"]),
            "qr_loss": _ratio(it["qr_loss_sum"], it["qr_count"]),
            "qr_updates": jnp.sum(it["qr_count"]),
            "grad_norm": _ratio(it["grad_norm_sum"], it["td_count"] + it["qr_count"]),
            "update_window": _ratio(it["window_sum"], it["td_count"] + it["qr_count"]),
            # Predictor diagnostics; NaN for a run on a static alpha, which has none.
            "alpha_entropy": jnp.where(learns_alpha(new_state.hyper),
                                       _ratio(it["alpha_entropy_sum"], it["td_count"] + it["qr_count"]), jnp.nan),
            "risk_grad_norm": jnp.where(learns_alpha(new_state.hyper),
                                        _ratio(it["risk_grad_norm_sum"], it["td_count"]), jnp.nan),
            "alpha_hist": jnp.sum(it["alpha_hist"], axis=0),
            "lr": new_state.hyper.lr,
        }
        return new_state, eval_key, metrics

    def run_chunk(state: TrainState) -> tuple[TrainState, dict]:
        """``iterations_per_eval`` iterations then a greedy evaluation; a seed past t_max stays put."""
        new_state, it = jax.lax.scan(iteration, state, None, length=tc.iterations_per_eval)
        new_state, eval_key, metrics = finish_chunk(state, new_state, it)
        _, stats = rollout(new_state.params, eval_key, jnp.float32(0.0), tc.test_episodes, new_state.hyper)
        return new_state, {**metrics, **test_metrics(stats)}

    max_chunks = math.ceil(tc.t_max / (tc.iterations_per_eval * tc.num_envs)) + 1

    def train(rng: chex.PRNGKey, hyper: Hyper | None = None) -> dict:
        """Pure: init, then chunks until t_env >= t_max. Metrics rows past ``num_chunks`` are zero.
        The metrics history holds the chunks the config's t_max needs: a ``hyper.t_max`` above
        the config's stops there."""
        state = init(rng, hyper)
        _, example = jax.eval_shape(run_chunk, state)
        history = jax.tree.map(lambda s: jnp.zeros((max_chunks, *s.shape), s.dtype), example)

        def body(carry):
            state, history = carry
            index = state.chunks
            state, metrics = run_chunk(state)
            history = jax.tree.map(lambda h, m: h.at[index].set(m), history, metrics)
            return state, history

        def cond(carry):
            state, _ = carry
            return (state.t_env < state.hyper.t_max) & (state.chunks < max_chunks)

        state, history = jax.lax.while_loop(cond, body, (state, history))
        return {"state": state, "metrics": history, "num_chunks": state.chunks}

    return Learner(
        config=config,
        env=env,
        spec=spec,
        agent=agent,
        mixer=mixer,
        init=init,
        run_chunk=run_chunk,
        loss=loss_fn,
        rollout=rollout,
        train=train,
        unroll=unroll,
        values_and_alpha=values_and_alpha,
        learns_alpha=learns_alpha,
        max_chunks=max_chunks,
        default_hyper=default_hyper,
        mixed_alpha=mixed_alpha,
        act=act,
        iteration_start=iteration_start,
        learn=learn,
        finish_chunk=finish_chunk,
        test_metrics=test_metrics,
        episode_stats=episode_stats,
        empty_episode=empty_episode,
    )



def tree_select(flag: chex.Array, on_true: Any, on_false: Any) -> Any:
    """Leafwise ``where(flag, on_true, on_false)``: a branch that stays a select under vmap."""
    return jax.tree.map(lambda x, y: jnp.where(flag, x, y), on_true, on_false)


def _ratio(total: chex.Array, count: chex.Array) -> chex.Array:
    count_sum = jnp.sum(count)
    return jnp.where(count_sum > 0, jnp.sum(total) / jnp.maximum(count_sum, 1.0), jnp.nan)


def make_train(config: Config) -> Callable[[chex.PRNGKey], dict]:
    """Pure ``train(rng)``; ``jax.jit(jax.vmap(make_train(config)))(keys)`` runs many seeds."""
    return make_learner(config).train
