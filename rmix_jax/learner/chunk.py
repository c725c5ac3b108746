"""The driver: a run's initial state, iterations, chunks (iterations then a greedy test) and ``train``.

A chunk is ``train.iterations_per_eval`` iterations (each: ``num_envs`` episodes collected,
then ``learn``) followed by ``test_episodes`` greedy episodes; ``train`` runs chunks in a
``while_loop`` until the run's ``t_max``. A run already past ``t_max`` (in a vmapped sweep
whose runs take different numbers of env steps per chunk) stays put.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax

from rmix_jax import ops
from rmix_jax.learner.acting import agent_input_dim, empty_episode, learns_alpha, rollout
from rmix_jax.learner.setup import Setup
from rmix_jax.learner.types import EpisodeStats, Hyper, Iteration, Params, TrainState, tree_select
from rmix_jax.learner.update import learn
from rmix_jax.networks import zero_carry
from rmix_jax.stopping import NONFINITE_GRAD, NONFINITE_LOSS, NONFINITE_PARAMS


def init(setup: Setup, rng: chex.PRNGKey, hyper: Hyper | None = None) -> TrainState:
    """A fresh state for one run; ``hyper`` (default: the config's) is carried in it."""
    hyper = setup.default_hyper() if hyper is None else hyper
    spec, ac = setup.spec, setup.config.agent
    n = spec.num_agents
    agent_key, mixer_key, key = jax.random.split(rng, 3)
    input_dim = agent_input_dim(spec)
    agent_params = setup.agent.init(
        agent_key,
        zero_carry((n,), ac.hidden_dim),
        jnp.zeros((n, input_dim)),
        jnp.zeros((n, input_dim)),
        jnp.zeros((n,), bool),
    )
    mixer_params = setup.mixer.init(mixer_key, jnp.zeros((n,)), jnp.zeros((spec.state_dim,)))
    params = Params(agent=agent_params, mixer=mixer_params)
    zero = jnp.int32(0)
    return TrainState(
        hyper=hyper,
        params=params,
        target_params=params,
        td_opt_state=setup.td_tx.init(params),
        qr_opt_state=setup.qr_tx.init(params) if setup.use_qr else None,
        # flashbax starts its index weak-typed; a restored checkpoint's is not, and the
        # two would compile the chunk twice (and miss the persistent compile cache on resume).
        buffer_state=jax.tree.map(
            lambda x: jax.lax.convert_element_type(x, x.dtype), setup.buffer.init(empty_episode(setup))
        ),
        key=key,
        t_env=zero,
        episodes=zero,
        updates=zero,
        last_target_update=zero,
        last_qr_t_env=zero,
        chunks=zero,
    )


def epsilon_at(setup: Setup, hyper: Hyper, t_env: chex.Array) -> chex.Array:
    return ops.linear_schedule(setup.config.train.epsilon_start, hyper.epsilon_finish, hyper.epsilon_anneal_steps,
                               t_env)


def iteration_start(setup: Setup, state: TrainState) -> Iteration:
    """Keys and epsilon of one iteration (the state keeps its next key)."""
    key, rollout_key, update_key = jax.random.split(state.key, 3)
    return Iteration(state.replace(key=key), rollout_key, update_key, epsilon_at(setup, state.hyper, state.t_env))


def iteration(setup: Setup, state: TrainState) -> tuple[TrainState, dict]:
    """Collect ``num_envs`` episodes with the current policy, then learn from the replay."""
    state, rollout_key, update_key, epsilon = iteration_start(setup, state)
    episodes, ep_stats = rollout(setup, state.params, rollout_key, epsilon, setup.config.train.num_envs, state.hyper,
                                over_runs=True)
    return learn(setup, state, episodes, ep_stats, epsilon, update_key)


def test_metrics(stats: EpisodeStats) -> dict:
    return {
        "test_return": jnp.mean(stats.returns),
        "test_won": jnp.mean(stats.won.astype(jnp.float32)),
        "test_length": jnp.mean(stats.lengths),
        "test_alpha_hist": stats.alpha_hist,
    }


def _ratio(total: chex.Array, count: chex.Array) -> chex.Array:
    count_sum = jnp.sum(count)
    return jnp.where(count_sum > 0, jnp.sum(total) / jnp.maximum(count_sum, 1.0), jnp.nan)


def nonfinite_flags(new_state: TrainState, it: dict) -> chex.Array:
    """Which quantities of a chunk are not finite: a TD or QR loss (``NONFINITE_LOSS``), a gradient
    norm (``NONFINITE_GRAD``), the online parameters after it (``NONFINITE_PARAMS``); 0 when all are.

    From the sums the chunk's updates return anyway (0 where no update ran), and one norm of the
    parameters: no pass over anything else."""
    loss = jnp.isfinite(jnp.sum(it["td_loss_sum"]) + jnp.sum(it["qr_loss_sum"]))
    grad = jnp.isfinite(jnp.sum(it["grad_norm_sum"]))
    params = jnp.isfinite(optax.tree.norm(new_state.params))
    return (NONFINITE_LOSS * ~loss + NONFINITE_GRAD * ~grad + NONFINITE_PARAMS * ~params).astype(jnp.int32)


def finish_chunk(setup: Setup, state: TrainState, new_state: TrainState,
                 it: dict) -> tuple[TrainState, chex.PRNGKey, dict]:
    """After a chunk's iterations (``it``: metrics stacked over them): the state kept
    (a run already past t_max, or one whose chunk was not finite, stays put, but for its replay), the
    greedy test's key, and the training metrics; the caller adds ``test_metrics`` of the test episodes."""
    active = state.t_env < state.hyper.t_max
    nonfinite = nonfinite_flags(new_state, it) * active.astype(jnp.int32)
    eval_key, key = jax.random.split(new_state.key)
    new_state = new_state.replace(key=key, chunks=new_state.chunks + 1)
    # A run that diverged in this chunk goes back to its state before it, like a run past t_max.
    # The replay is not selected back: its episodes from past t_max are never learned
    # from, and a select would copy the whole replay of every run at every chunk
    # (a quarter of the chunk's time on MACN 7x4 with 8 seeds).
    kept = tree_select(active & (nonfinite == 0), new_state.replace(buffer_state=None),
                       state.replace(buffer_state=None))
    # ... and stays there: its t_max becomes 0, so every later chunk finds it past t_max.
    kept = kept.replace(hyper=kept.hyper.replace(t_max=jnp.where(nonfinite > 0, 0, kept.hyper.t_max)))
    new_state = kept.replace(buffer_state=new_state.buffer_state)
    episodes = jnp.float32(it["return_sum"].shape[0] * setup.config.train.num_envs)
    learned = learns_alpha(setup, new_state.hyper)
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
        "alpha_entropy": jnp.where(learned, _ratio(it["alpha_entropy_sum"], it["td_count"] + it["qr_count"]), jnp.nan),
        "risk_grad_norm": jnp.where(learned, _ratio(it["risk_grad_norm_sum"], it["td_count"]), jnp.nan),
        "alpha_hist": jnp.sum(it["alpha_hist"], axis=0),
        "lr": new_state.hyper.lr,
        "param_norm": optax.tree.norm(new_state.params),  # the online parameters kept after the chunk
        "nonfinite": nonfinite,
    }
    return new_state, eval_key, metrics


def run_chunk(setup: Setup, state: TrainState) -> tuple[TrainState, dict]:
    """``iterations_per_eval`` iterations then a greedy evaluation; a seed past t_max stays put."""
    tc = setup.config.train
    new_state, it = jax.lax.scan(lambda s, _: iteration(setup, s), state, None, length=tc.iterations_per_eval)
    new_state, eval_key, metrics = finish_chunk(setup, state, new_state, it)
    _, stats = rollout(setup, new_state.params, eval_key, jnp.float32(0.0), tc.test_episodes, new_state.hyper,
                       over_runs=True)
    return new_state, {**metrics, **test_metrics(stats)}


def train(setup: Setup, rng: chex.PRNGKey, hyper: Hyper | None = None) -> dict:
    """Pure: init, then chunks until t_env >= t_max. Metrics rows past ``num_chunks`` are zero.
    The metrics history holds the chunks the config's t_max needs: a ``hyper.t_max`` above
    the config's stops there."""
    max_chunks = setup.max_chunks
    state = init(setup, rng, hyper)
    _, example = jax.eval_shape(lambda s: run_chunk(setup, s), state)
    history = jax.tree.map(lambda s: jnp.zeros((max_chunks, *s.shape), s.dtype), example)

    def body(carry):
        state, history = carry
        index = state.chunks
        state, metrics = run_chunk(setup, state)
        history = jax.tree.map(lambda h, m: h.at[index].set(m), history, metrics)
        return state, history

    def cond(carry):
        state, _ = carry
        return (state.t_env < state.hyper.t_max) & (state.chunks < max_chunks)

    state, history = jax.lax.while_loop(cond, body, (state, history))
    return {"state": state, "metrics": history, "num_chunks": state.chunks}
