"""One iteration's learning: store the collected episodes, make the TD / QR updates, copy the target.

A TD update (Eqns. 5-6) and, once every ``qr_interval`` env steps after ``start_to_update_qr``,
a quantile-regression update (Eqn. 7), each with its own Adam; learning rates come from the
traced ``Hyper`` so that a vmapped sweep varies them.
"""

from __future__ import annotations

import functools
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax

from rmix_jax.learner.losses import loss
from rmix_jax.learner.packing import entries_per_episode, pack, rows_needed
from rmix_jax.learner.setup import Setup, max_over_runs
from rmix_jax.learner.types import Episode, EpisodeStats, Params, TrainState, UpdateStats, tree_select
from rmix_jax.networks import predictor_norm


def step_params(params: Params, updates: Any, lr: chex.Array) -> Params:
    return optax.apply_updates(params, jax.tree.map(lambda u: -lr * u, updates))


def update(setup: Setup, state: TrainState, key: chex.PRNGKey) -> tuple[TrainState, UpdateStats]:
    """One gradient update of one run from a batch sampled from its replay (none before it can sample)."""
    buffer, use_qr, layouts = setup.buffer, setup.use_qr, setup.layouts
    batch = buffer.sample(state.buffer_state, key).experience
    can_learn = buffer.can_sample(state.buffer_state)
    is_qr = (
        jnp.bool_(use_qr)
        & (state.t_env >= state.hyper.start_to_update_qr)
        & (state.t_env - state.last_qr_t_env >= state.hyper.qr_interval)
    )

    def loss_and_grads(with_qr: bool, rows: int, entries: int) -> tuple[tuple[chex.Array, dict], Params]:
        if rows < batch.filled.shape[0]:  # the episodes laid end to end in ``rows`` rows
            laid_out = pack(batch, rows)
        else:  # the first ``entries`` entries of each episode
            laid_out = jax.tree.map(lambda v: v[:, :entries], batch)
        return jax.value_and_grad(functools.partial(loss, setup), has_aux=True)(
            state.params, state.target_params, laid_out, is_qr, state.hyper, with_qr
        )

    # One branch per (QR loss or not, layout); the branch is chosen once for all runs
    # (reduced over the run axis), so a vmapped update computes only that one.
    with_qr_options = (False, True) if use_qr else (False,)
    branches = [lambda q=q, r=r, e=e: loss_and_grads(q, r, e) for q in with_qr_options for r, e in layouts]
    # The QR loss (M x M atom pairs per agent and step) only where some run needs it.
    any_qr = max_over_runs(setup, is_qr.astype(jnp.int32)) > 0
    # The smallest layout that holds every run's sampled episodes: the fewest rows that hold them
    # end to end, or the shortest window that holds each episode and the entry after its last step.
    if setup.packs:
        needed, sizes = rows_needed(batch), [rows for rows, _ in layouts]
    else:
        needed, sizes = jnp.max(entries_per_episode(batch)), [entries for _, entries in layouts]
    layout_index = jnp.sum(max_over_runs(setup, needed) > jnp.asarray(sizes[:-1]))
    branch = layout_index + len(layouts) * any_qr.astype(jnp.int32) if use_qr else layout_index
    (_, aux), grads = jax.lax.switch(branch, branches)  # a single branch is simply called
    do_td = can_learn & ~is_qr
    do_qr = can_learn & is_qr

    td_updates, td_opt_state = setup.td_tx.update(grads, state.td_opt_state)
    params = tree_select(do_td, step_params(state.params, td_updates, state.hyper.lr), state.params)
    qr_opt_state = state.qr_opt_state
    if use_qr:
        qr_updates, new_qr_opt_state = setup.qr_tx.update(grads, state.qr_opt_state)
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
        window_sum=jnp.where(can_learn, jnp.asarray([r * e / batch.filled.shape[0] for r, e in layouts])[layout_index],
                             0.0).astype(jnp.float32),
        alpha_entropy_sum=jnp.where(can_learn, aux["alpha_entropy"], 0.0),
        risk_grad_norm_sum=jnp.where(do_td, predictor_norm(grads.agent), 0.0),
    )
    return state, stats


def learn(setup: Setup, state: TrainState, episodes: Episode, ep_stats: EpisodeStats, epsilon: chex.Array,
          update_key: chex.PRNGKey) -> tuple[TrainState, dict]:
    """Store E collected episodes, make the iteration's updates, copy the target when due."""
    state = state.replace(
        buffer_state=setup.buffer.add(state.buffer_state, episodes),
        t_env=state.t_env + jnp.sum(ep_stats.lengths).astype(jnp.int32),
        episodes=state.episodes + episodes.filled.shape[0],
    )
    state, upd = jax.lax.scan(lambda s, k: update(setup, s, k), state,
                              jax.random.split(update_key, setup.config.train.updates_per_iteration))
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
