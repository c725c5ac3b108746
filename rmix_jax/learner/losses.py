"""The losses: the agents unrolled over stored episodes, the mixed TD(lambda) loss (Eqns. 5-6)
and the quantile-regression loss (Eqn. 7), with the predictor's diagnostics in the aux.

Shape legend: B batch of episodes, T episode limit (arrays hold T + 1 steps), N agents,
A actions, M atoms, K risk levels, G mixer outputs (1, or N for IQL).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from rmix_jax import ops
from rmix_jax.learner.acting import build_inputs, greedy_actions, values_and_alpha
from rmix_jax.learner.setup import Setup
from rmix_jax.learner.types import Episode, Hyper, Params
from rmix_jax.networks import AgentCarry, AgentNetwork, zero_carry


def recurrent_states(setup: Setup, agent_params, batch: Episode) -> AgentCarry:
    """The agents' hidden states over whole episodes: (B, T+1, N, H) for each branch."""
    agent = setup.agent
    chex.assert_rank(batch.obs, 4)  # (B, T+1, N, O)
    prev_actions = jnp.concatenate([jnp.zeros_like(batch.actions[:, :1]), batch.actions[:, :-1]], axis=1)
    inputs = build_inputs(batch.obs, prev_actions, batch.reset, setup.spec.num_actions)  # (B, T+1, N, I)
    prev_inputs = jnp.concatenate([jnp.zeros_like(inputs[:, :1]), inputs[:, :-1]], axis=1)
    prev_inputs = prev_inputs * (1.0 - batch.reset.astype(jnp.float32))[..., None, None]
    reset = jnp.broadcast_to(batch.reset[..., None], batch.actions.shape)  # (B, T+1, N)
    features = agent.apply(agent_params, inputs, prev_inputs, method=AgentNetwork.torsos)

    def step(carry, xs):
        feature_t, reset_t = xs
        carry = agent.apply(agent_params, carry, feature_t, reset_t, method=AgentNetwork.recur)
        return carry, carry

    # (B, T+1, ...) -> (T+1, B, ...) for the scan over time, and back
    xs = jax.tree.map(lambda v: jnp.swapaxes(v, 0, 1), (features, reset))
    _, hidden = jax.lax.scan(step, zero_carry((reset.shape[0], setup.spec.num_agents),
                                              setup.config.agent.hidden_dim), xs)
    return jax.tree.map(lambda v: jnp.swapaxes(v, 0, 1), hidden)


def unroll(setup: Setup, agent_params, batch: Episode) -> tuple[chex.Array, chex.Array]:
    """Agent outputs over whole episodes: (B, T+1, N, A, M) atoms, (B, T+1, N, K) scores."""
    out = setup.agent.apply(agent_params, recurrent_states(setup, agent_params, batch), method=AgentNetwork.heads)
    return out.atoms, out.scores


def take(values: chex.Array, index: chex.Array) -> chex.Array:
    """values (..., A, *rest), index (...) -> (..., *rest)."""
    expanded = index.reshape(index.shape + (1,) * (values.ndim - index.ndim))
    return jnp.take_along_axis(values, expanded, axis=index.ndim).squeeze(index.ndim)


def loss(setup: Setup, params: Params, target_params: Params, batch: Episode, is_qr: chex.Array,
         hyper: Hyper | None = None, with_qr: bool | None = None) -> tuple[chex.Array, dict]:
    """TD loss, or with ``with_qr`` (default: the config's ``use_qr``) the QR loss where ``is_qr``;
    aux holds both (QR 0 without) and the batch's mean entropy of P(alpha)."""
    hyper = setup.default_hyper() if hyper is None else hyper
    with_qr = setup.use_qr if with_qr is None else with_qr
    n = setup.spec.num_agents
    hidden = recurrent_states(setup, params.agent, batch)
    out = setup.agent.apply(params.agent, hidden, method=AgentNetwork.heads)
    # Every action's atoms without gradient (the double-Q argmax); the taken actions' with it.
    atoms, scores = jax.lax.stop_gradient(out.atoms), out.scores
    target_atoms, target_scores = unroll(setup, target_params.agent, batch)

    def value_of(chosen_atoms: chex.Array, agent_scores: chex.Array) -> chex.Array:
        """CVaR at the agent's chosen alpha of one action's atoms: (..., M), (..., K) -> (...)."""
        return values_and_alpha(setup, chosen_atoms[..., None, :], agent_scores, hyper.alpha)[0][..., 0]

    # Only the taken action's value carries a gradient and only the greedy next
    # action's target value is used, so CVaR is computed for those alone; every
    # action's value is needed (without gradient) only for the double-Q argmax.
    # The taken actions' atoms over all T + 1 entries, so that the head's product is the one
    # ``heads`` computed (XLA computes it once); the last entry is dropped.
    predicted = setup.agent.apply(params.agent, hidden.hidden, batch.actions,
                                  method=AgentNetwork.chosen_atoms)[:, :-1]  # (B, T, N, M)
    taken = value_of(predicted, scores[:, :-1])  # (B, T, N)
    needed = jnp.broadcast_to(batch.filled[:, :-1, None], batch.actions[:, :-1].shape)  # (B, T, N)
    next_greedy = greedy_actions(setup, atoms[:, 1:], jax.lax.stop_gradient(scores[:, 1:]), batch.avail[:, 1:],
                                 needed, hyper.alpha)  # (B, T, N)
    next_atoms = take(target_atoms[:, 1:], next_greedy)  # double Q: online argmax, target atoms
    next_target = value_of(next_atoms, target_scores[:, 1:])  # (B, T, N)

    c_tot = setup.mixer.apply(params.mixer, taken, batch.state[:, :-1])  # (B, T, G)
    c_tot_next = setup.mixer.apply(target_params.mixer, next_target, batch.state[:, 1:])
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
