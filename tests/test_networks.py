"""Networks: shapes, mixer monotonicity, and where the risk predictor gets gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmix_jax import ops
from rmix_jax.networks import AgentNetwork, NoMixer, QMixer, SumMixer, zero_carry

N, A, M, K, I, S = 3, 5, 7, 10, 12, 9


def agent_and_params(use_risk_predictor=True, seed=0):
    agent = AgentNetwork(num_actions=A, num_atoms=M, num_risk_levels=K, risk_embed_dim=N, use_risk_predictor=use_risk_predictor)
    params = agent.init(jax.random.PRNGKey(seed), zero_carry((N,), 64), jnp.zeros((N, I)), jnp.zeros((N, I)), jnp.zeros((N,), bool))
    return agent, params


def test_agent_shapes_and_reset():
    agent, params = agent_and_params()
    x = jax.random.normal(jax.random.PRNGKey(1), (4, N, I))
    carry = zero_carry((4, N), 64)
    carry, out = agent.apply(params, carry, x, x, jnp.zeros((4, N), bool))
    assert out.atoms.shape == (4, N, A, M) and out.scores.shape == (4, N, K)
    assert carry.hidden.shape == (4, N, 64) and carry.risk_hidden.shape == (4, N, 64)
    # reset restarts from zero hidden states: same output as a fresh carry
    _, from_reset = agent.apply(params, carry, x, x, jnp.ones((4, N), bool))
    _, fresh = agent.apply(params, zero_carry((4, N), 64), x, x, jnp.zeros((4, N), bool))
    np.testing.assert_allclose(np.asarray(from_reset.atoms), np.asarray(fresh.atoms), atol=1e-6)


def test_split_step_equals_whole_step():
    agent, params = agent_and_params()
    x, px = jax.random.normal(jax.random.PRNGKey(2), (2, N, I))
    carry = zero_carry((N,), 64)
    _, whole = agent.apply(params, carry, x, px, jnp.zeros((N,), bool))
    features = agent.apply(params, x, px, method=AgentNetwork.torsos)
    carry2 = agent.apply(params, carry, features, jnp.zeros((N,), bool), method=AgentNetwork.recur)
    split = agent.apply(params, carry2, method=AgentNetwork.heads)
    np.testing.assert_allclose(np.asarray(whole.atoms), np.asarray(split.atoms), atol=1e-6)
    np.testing.assert_allclose(np.asarray(whole.scores), np.asarray(split.scores), atol=1e-6)


def test_qmixer_is_monotone_in_every_agent_value():
    mixer = QMixer(embed_dim=8)
    params = mixer.init(jax.random.PRNGKey(0), jnp.zeros((N,)), jnp.zeros((S,)))
    values = jax.random.normal(jax.random.PRNGKey(1), (64, N)) * 5
    states = jax.random.normal(jax.random.PRNGKey(2), (64, S)) * 3
    grads = jax.vmap(jax.grad(lambda q, s: mixer.apply(params, q, s)[0]))(values, states)
    assert grads.shape == (64, N) and np.all(np.asarray(grads) >= 0)
    assert mixer.apply(params, values, states).shape == (64, 1)


def test_sum_and_no_mixer():
    values = jnp.array([[1.0, 2.0, 3.0]])
    assert float(SumMixer().apply({}, values, jnp.zeros((1, S)))[0, 0]) == 6.0
    np.testing.assert_array_equal(np.asarray(NoMixer().apply({}, values, jnp.zeros((1, S)))), np.asarray(values))


@functools.lru_cache(maxsize=None)  # computed once per mode, read by each parametrized case
def _predictor_grads(straight_through: bool):
    agent, params = agent_and_params()
    x, px = jax.random.normal(jax.random.PRNGKey(3), (2, 8, N, I))

    def loss(p):
        _, out = agent.apply(p, zero_carry((8, N), 64), x, px, jnp.zeros((8, N), bool))
        values, _, _ = jax.vmap(jax.vmap(ops.risk_sensitive_values, in_axes=(0, 0, None)), in_axes=(0, 0, None))(
            out.atoms, out.scores, straight_through
        )
        return jnp.sum(values**2)

    return jax.jit(jax.grad(loss))(params)["params"]


@pytest.mark.parametrize("name", ["risk_torso", "risk_gru", "history_embed", "current_embed"])
def test_predictor_gets_gradient_only_when_straight_through(name):
    trained = _predictor_grads(True)[name]
    frozen = _predictor_grads(False)[name]
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(trained)) > 0
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(frozen))


def test_history_path_does_not_train_the_atom_head():
    # Only the value path may move the atom head: the risk branch uses it under stop-gradient.
    agent, params = agent_and_params()
    x = jax.random.normal(jax.random.PRNGKey(4), (N, I))

    def scores_only(p):
        _, out = agent.apply(p, zero_carry((N,), 64), x, x, jnp.zeros((N,), bool))
        return jnp.sum(out.scores)

    grads = jax.grad(scores_only)(params)["params"]
    assert float(jnp.abs(grads["head_kernel"]).max()) == 0.0
    assert float(jnp.abs(grads["gru"]["hn"]["kernel"]).max()) == 0.0
