"""Networks: shapes, mixer monotonicity, and where the risk predictor gets gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmix_jax import ops
from rmix_jax.networks import RISK_PREDICTOR_PARAMS, AgentNetwork, NoMixer, QMixer, SumMixer, zero_carry

N, A, M, K, I, S = 3, 5, 7, 10, 12, 9


def agent_and_params(use_risk_predictor=True, seed=0, risk_scores="standardized"):
    agent = AgentNetwork(num_actions=A, num_atoms=M, num_risk_levels=K, risk_embed_dim=N,
                         use_risk_predictor=use_risk_predictor, risk_scores=risk_scores)
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


# --- the risk predictor's scores at every return scale ---------------------------------------------
# Shifting the atom head's bias by c shifts every atom (current and history) by c, as a return
# scale of a few tens does in training; "x10" scales the head's kernel and bias, so every atom.
SCALES = {"offset 0": (0.0, 1.0), "offset -5": (-5.0, 1.0), "offset -20": (-20.0, 1.0),
          "offset -50": (-50.0, 1.0), "x10": (0.0, 10.0)}


def rescaled(params, offset, factor):
    inner = dict(params["params"])
    inner["head_kernel"] = inner["head_kernel"] * factor
    inner["head_bias"] = inner["head_bias"] * factor + offset
    return {"params": inner}


def predictor_outputs(risk_scores, offset, factor):
    """Scores (B, N, K) after a few steps of random inputs, and the straight-through loss's
    gradient on the predictor's parameters, for an initialised agent with rescaled atoms."""
    agent, params = agent_and_params(risk_scores=risk_scores)
    params = rescaled(params, offset, factor)
    x = jax.random.normal(jax.random.PRNGKey(7), (3, 16, N, I))
    targets = jax.random.normal(jax.random.PRNGKey(8), (16, N, A)) * factor + offset

    def run(p):
        carry = zero_carry((16, N), 64)
        for t in range(2):  # the second step has a non-zero risk hidden state
            carry, out = agent.apply(p, carry, x[t + 1], x[t], jnp.zeros((16, N), bool))
        return out

    def loss(p):
        out = run(p)
        values, _, _ = jax.vmap(jax.vmap(ops.risk_sensitive_values, in_axes=(0, 0, None)), in_axes=(0, 0, None))(
            out.atoms, out.scores, True
        )
        return jnp.mean((values - targets) ** 2)

    grads = jax.grad(loss)(params)["params"]
    grad_norm = float(jnp.sqrt(sum(jnp.sum(g**2) for name in RISK_PREDICTOR_PARAMS
                                   for g in jax.tree.leaves(grads[name]))))
    return run(params), grad_norm


@pytest.mark.parametrize("scale", list(SCALES))
def test_standardized_scores_do_not_saturate_at_any_return_scale(scale):
    out, grad_norm = predictor_outputs("standardized", *SCALES[scale])
    probs = np.asarray(jax.nn.softmax(out.scores, axis=-1))
    assert probs.max() < 0.99, probs.max()  # P(alpha) is not one-hot at initialisation
    assert np.all(np.abs(np.asarray(out.scores)) <= 3.0 + 1e-5)  # T x a cosine, T = 3
    assert np.isfinite(grad_norm) and grad_norm > 1e-4, grad_norm


def test_paper_scores_saturate_where_standardized_ones_do_not():
    # The failure the default fixes (the paper's Eqn. 3 on raw atoms), measured the same way.
    small, small_grad = predictor_outputs("paper", 0.0, 1.0)
    large, large_grad = predictor_outputs("paper", -50.0, 1.0)
    assert np.asarray(jax.nn.softmax(small.scores, -1)).max() < 0.99 and small_grad > 1e-4
    assert np.asarray(jax.nn.softmax(large.scores, -1)).min(axis=-1).max() < 1e-6  # one-hot everywhere
    assert large_grad < 1e-6 * small_grad


@pytest.mark.parametrize("scale", ["offset -5", "offset -50", "x10"])
def test_standardized_scores_ignore_the_atoms_location_and_spread(scale):
    base, _ = predictor_outputs("standardized", 0.0, 1.0)
    moved, _ = predictor_outputs("standardized", *SCALES[scale])
    np.testing.assert_allclose(np.asarray(moved.scores), np.asarray(base.scores), atol=2e-4)
    offset, factor = SCALES[scale]
    np.testing.assert_allclose(np.asarray(moved.atoms), np.asarray(base.atoms) * factor + offset, rtol=1e-5, atol=1e-4)


def test_straight_through_forward_value_is_the_chosen_levels_cvar():
    # With the default scores the value acted on and trained is still CVaR at alpha = (argmax + 1) / K.
    out, _ = predictor_outputs("standardized", -20.0, 1.0)
    atoms = np.asarray(out.atoms, np.float64).reshape(-1, A, M)
    scores = np.asarray(out.scores).reshape(-1, K)
    values, level, _ = jax.vmap(ops.risk_sensitive_values, in_axes=(0, 0, None))(
        out.atoms.reshape(-1, A, M), out.scores.reshape(-1, K), True
    )
    np.testing.assert_array_equal(np.asarray(level), scores.argmax(-1))
    k = np.ceil((scores.argmax(-1) + 1) * M / K).astype(int)  # exact: (j + 1) * M / K on the grid
    expected = np.array([[np.sort(a)[:kk].mean() for a in row] for row, kk in zip(atoms, k)])
    np.testing.assert_allclose(np.asarray(values), expected, rtol=1e-5, atol=1e-4)
    assert len(np.unique(level)) >= 2  # the scores pick different levels for different inputs


def test_ascending_head_gives_each_actions_atoms_in_order():
    """``atom_head="ascending"``: the same parameters as free atoms, each action's atoms ascending, and the
    predictor's history atoms built the same way (its scores follow the ordered atoms)."""
    free, params = agent_and_params()
    ascending = AgentNetwork(num_actions=A, num_atoms=M, num_risk_levels=K, risk_embed_dim=N, atom_head="ascending")
    x = jax.random.normal(jax.random.PRNGKey(4), (8, N, I))
    carry = zero_carry((8, N), 64)
    _, raw = free.apply(params, carry, x, x, jnp.zeros((8, N), bool))
    _, out = ascending.apply(params, carry, x, x, jnp.zeros((8, N), bool))
    assert out.atoms.shape == (8, N, A, M)
    assert np.all(np.diff(np.asarray(out.atoms), axis=-1) >= 0)
    np.testing.assert_allclose(np.asarray(out.atoms), np.asarray(ops.ascending_atoms(raw.atoms)), atol=1e-6)
    assert not np.allclose(np.asarray(out.scores), np.asarray(raw.scores))


@pytest.mark.parametrize("risk_scores", ["standardized", "paper"])
def test_history_embedding_of_free_atoms_equals_the_embedded_history_atoms(risk_scores):
    """With free atoms the predictor embeds the history atoms as r (K W) + b W (standardized: minus
    mean W 1, over the std) without forming them; in float64 NumPy: the explicit history atoms
    r K + b, standardized by the current atoms' mean and variance, times W. Gradients too (to W
    and to r; none to the head, whose parameters the history path holds fixed)."""
    agent, params = agent_and_params(risk_scores=risk_scores)
    p = params["params"]
    rng = np.random.default_rng(0)
    p = {**p, "head_bias": jnp.asarray(rng.normal(-3.0, 2.0, A * M), jnp.float32)}  # an offset, as trained heads have
    r = jnp.asarray(rng.normal(size=(6, 64)), jnp.float32)
    current = jnp.asarray(rng.normal(-4.0, 3.0, size=(6, A * M)), jnp.float32)
    standardized = risk_scores == "standardized"

    shift = jnp.mean(current, axis=-1, keepdims=True) - jnp.mean(p["head_bias"])
    variance = jnp.var(current, axis=-1, keepdims=True)

    def ours(p, r):
        return agent.apply({"params": p}, r, shift, variance, standardized, method=AgentNetwork.history_scores)

    def explicit(kernel, bias, w, r):  # float64 NumPy
        history = r @ kernel + bias
        if standardized:
            c = np.asarray(current, np.float64)
            history = (history - c.mean(-1, keepdims=True)) / np.sqrt(c.var(-1, keepdims=True) + 1e-6)
        return history @ w

    f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    kernel, bias, w = f64(p["head_kernel"]), f64(p["head_bias"]), f64(p["history_embed"]["kernel"])
    expected = explicit(kernel, bias, w, f64(r))
    np.testing.assert_allclose(np.asarray(ours(p, r)), expected, rtol=2e-5, atol=2e-5 * np.abs(expected).max())
    # gradients of a fixed linear functional g of the output: to W (x^T g) and to r (g (K W)^T ... via x)
    g = rng.normal(size=expected.shape)
    grad_p, grad_r = jax.grad(lambda p, r: jnp.sum(ours(p, r) * jnp.asarray(g, jnp.float32)), argnums=(0, 1))(p, r)
    x = explicit(kernel, bias, np.eye(A * M), f64(r))  # the (standardized) history atoms
    np.testing.assert_allclose(np.asarray(grad_p["history_embed"]["kernel"]), x.T @ g, rtol=1e-4,
                               atol=1e-4 * np.abs(x.T @ g).max())
    scale = 1.0 / np.sqrt(f64(current).var(-1, keepdims=True) + 1e-6) if standardized else 1.0
    expected_r = (g * scale) @ (kernel @ w).T
    np.testing.assert_allclose(np.asarray(grad_r), expected_r, rtol=1e-4, atol=1e-4 * np.abs(expected_r).max())
    assert not np.any(np.asarray(grad_p["head_kernel"])) and not np.any(np.asarray(grad_p["head_bias"]))


@pytest.mark.parametrize("offset, scale", [(0.0, 1.0), (-50.0, 1.0), (-5.0, 10.0)])
def test_atom_statistics_of_free_atoms_equal_the_atoms_mean_and_variance(offset, scale):
    """The current atoms' mean (as a shift from the bias's mean) and variance from the hidden state
    alone (a Gram matrix of the head's kernel), against float64 NumPy on the explicit atoms h K + b,
    at a large common offset and a 10x scale of the head."""
    agent, params = agent_and_params()
    p = params["params"]
    rng = np.random.default_rng(1)
    p = {**p, "head_kernel": p["head_kernel"] * scale,
         "head_bias": jnp.asarray(offset + scale * rng.normal(0.0, 1.0, A * M), jnp.float32)}
    h = jnp.asarray(rng.normal(size=(5, 64)), jnp.float32)
    shift, variance = agent.apply({"params": p}, h, None, method=AgentNetwork.atom_statistics)
    kernel, bias = np.asarray(p["head_kernel"], np.float64), np.asarray(p["head_bias"], np.float64)
    atoms = np.asarray(h, np.float64) @ kernel + bias
    np.testing.assert_allclose(np.asarray(shift)[:, 0], atoms.mean(-1) - bias.mean(), rtol=1e-4,
                               atol=1e-5 * scale)
    np.testing.assert_allclose(np.asarray(variance)[:, 0], atoms.var(-1), rtol=1e-4)


@pytest.mark.parametrize("atom_head", ["free", "ascending"])
def test_chosen_atoms_equal_the_heads_atoms_of_the_action_gradients_included(atom_head):
    """``chosen_atoms``: the taken actions' atoms from ``heads``, and the gradient of a loss on them
    with respect to every parameter and the hidden states is the one through ``heads``."""
    agent = AgentNetwork(num_actions=A, num_atoms=M, num_risk_levels=K, risk_embed_dim=N, atom_head=atom_head)
    params = agent.init(jax.random.PRNGKey(2), zero_carry((N,), 64), jnp.zeros((N, I)), jnp.zeros((N, I)),
                        jnp.zeros((N,), bool))
    rng = np.random.default_rng(3)
    hidden = jnp.asarray(rng.normal(size=(4, N, 64)), jnp.float32)
    carry = zero_carry((4, N), 64).replace(hidden=hidden)
    actions = jnp.asarray(rng.integers(0, A, size=(4, N)))
    weights = jnp.asarray(rng.normal(size=(4, N, M)), jnp.float32)

    def via_heads(p, h):
        atoms = agent.apply(p, carry.replace(hidden=h), method=AgentNetwork.heads).atoms
        return jnp.sum(weights * jnp.take_along_axis(atoms, actions[..., None, None], axis=-2)[..., 0, :])

    def via_chosen(p, h):
        return jnp.sum(weights * agent.apply(p, h, actions, method=AgentNetwork.chosen_atoms))

    chosen = agent.apply(params, hidden, actions, method=AgentNetwork.chosen_atoms)
    atoms = agent.apply(params, carry, method=AgentNetwork.heads).atoms
    np.testing.assert_allclose(np.asarray(chosen), np.asarray(atoms)[np.arange(4)[:, None], np.arange(N), actions],
                               rtol=1e-6, atol=1e-6)
    want, got = jax.grad(via_heads, argnums=(0, 1))(params, hidden), jax.grad(via_chosen, argnums=(0, 1))(params, hidden)
    for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-6)
