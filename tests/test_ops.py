"""The math of docs/algorithm.md against NumPy float64 references, under jit and without."""

import math
from fractions import Fraction

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmix_jax import ops

ATOM_COUNTS = [1, 5, 55, 100]
NUM_LEVELS = 10


def np_cvar(atoms: np.ndarray, alpha: Fraction | float) -> float:
    """Reference: exact k = ceil(alpha * M) via fractions, mean of the k lowest atoms."""
    m = len(atoms)
    k = max(1, math.ceil(Fraction(alpha).limit_denominator(10_000) * m))
    return float(np.sort(atoms.astype(np.float64))[:k].mean())


def buggy_reference_cvar(atoms: np.ndarray, alpha: float) -> float:
    """The reference code: float32 ceil and a sum of k atoms divided by k - 1."""
    k = int(np.ceil(np.float32(alpha) * np.float32(len(atoms))))
    return float(np.sort(atoms)[:k].sum() / max(k - 1, 1))


@pytest.mark.parametrize("num_atoms", ATOM_COUNTS)
@pytest.mark.parametrize("level", range(1, NUM_LEVELS + 1))
@pytest.mark.parametrize("jit", [False, True])
def test_cvar_matches_float64_at_every_level(num_atoms, level, jit):
    rng = np.random.default_rng(num_atoms * 100 + level)
    atoms = rng.normal(size=num_atoms) * 10
    alpha = Fraction(level, NUM_LEVELS)
    fn = jax.jit(ops.cvar) if jit else ops.cvar
    got = float(fn(jnp.asarray(atoms, jnp.float32), float(alpha)))
    np.testing.assert_allclose(got, np_cvar(atoms, alpha), rtol=1e-5, atol=1e-4)
    all_levels = jax.jit(ops.cvar_all_levels, static_argnums=1) if jit else ops.cvar_all_levels
    np.testing.assert_allclose(
        float(all_levels(jnp.asarray(atoms, jnp.float32), NUM_LEVELS)[level - 1]),
        np_cvar(atoms, alpha), rtol=1e-5, atol=1e-4,
    )


@pytest.mark.parametrize("num_atoms", ATOM_COUNTS)
def test_cvar_alpha_one_is_mean_and_small_alpha_is_min(num_atoms):
    atoms = np.random.default_rng(num_atoms).normal(size=num_atoms).astype(np.float32)
    np.testing.assert_allclose(float(ops.cvar(jnp.asarray(atoms), 1.0)), atoms.astype(np.float64).mean(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(ops.cvar(jnp.asarray(atoms), 1e-6)), atoms.min(), rtol=1e-6)


def test_level_tail_counts_are_exact_integers():
    for m in ATOM_COUNTS + [3, 7, 65]:
        counts = np.asarray(ops.level_tail_counts(NUM_LEVELS, m))
        expected = [max(1, math.ceil(Fraction(j, NUM_LEVELS) * m)) for j in range(1, NUM_LEVELS + 1)]
        assert counts.tolist() == expected


def test_reference_bug_divide_by_k_minus_one_is_fixed():
    # k = 3 lowest atoms (1, 2, 3): right answer 2; the reference divides 6 by 2 -> 3.
    atoms = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 7.0, 8.0, 9.0, 10.0], np.float32)
    assert buggy_reference_cvar(atoms, 0.3) != pytest.approx(2.0)
    assert float(ops.cvar(jnp.asarray(atoms), 0.3)) == pytest.approx(2.0)


def test_reference_bug_uneven_float_ceil_is_fixed():
    # Find grid levels where the float product lands just above an integer, so a plain
    # ceil takes one atom too many; our count must still be the exact integer.
    uneven = []
    for m in range(1, 201):
        for j in range(1, NUM_LEVELS + 1):
            exact = math.ceil(Fraction(j, NUM_LEVELS) * m)
            if int(np.ceil(np.float32(j / NUM_LEVELS) * np.float32(m))) != exact:
                uneven.append((m, j, exact))
    assert uneven, "float32 ceil should be uneven for some (M, alpha)"
    for m, j, exact in uneven:
        assert int(ops.tail_count(j / NUM_LEVELS, m)) == exact
        assert int(ops.level_tail_counts(NUM_LEVELS, m)[j - 1]) == exact


def np_quantile_huber(pred: np.ndarray, target: np.ndarray) -> float:
    m = len(pred)
    tau = (2 * np.arange(m) + 1) / (2 * m)
    total = 0.0
    for i in range(m):
        for j in range(len(target)):
            u = target[j] - pred[i]
            huber = 0.5 * u * u if abs(u) <= 1 else abs(u) - 0.5
            total += abs(tau[i] - (u < 0)) * huber / len(target)
    return total


@pytest.mark.parametrize("num_atoms", [1, 5, 55])
@pytest.mark.parametrize("jit", [False, True])
def test_quantile_huber_loss_matches_float64(num_atoms, jit):
    rng = np.random.default_rng(num_atoms)
    pred, target = rng.normal(size=num_atoms) * 2, rng.normal(size=num_atoms) * 2
    fn = jax.jit(ops.quantile_huber_loss) if jit else ops.quantile_huber_loss
    got = float(fn(jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32)))
    np.testing.assert_allclose(got, np_quantile_huber(pred, target), rtol=1e-4)


def test_quantile_huber_loss_hand_example():
    # M = 2: tau = (1/4, 3/4). pred (0, 0), target (1, -3):
    # atom 0: u=1 -> 0.25*0.5 ; u=-3 -> 0.75*2.5 ; mean = (0.125 + 1.875)/2 = 1.0
    # atom 1: u=1 -> 0.75*0.5 ; u=-3 -> 0.25*2.5 ; mean = (0.375 + 0.625)/2 = 0.5
    got = ops.quantile_huber_loss(jnp.zeros(2), jnp.array([1.0, -3.0]))
    assert float(got) == pytest.approx(1.5)


def test_reference_bug_tau_indexed_by_target_is_fixed():
    # Indexing tau by the predicted atom gives each atom its own gradient, so trained
    # atoms spread into ordered quantiles. The reference (tau by target atom) gives
    # every predicted atom the same gradient: they would stay identical.
    pred = jnp.zeros(4)
    target = jnp.array([-3.0, -1.0, 1.0, 3.0])
    grads = np.asarray(jax.grad(ops.quantile_huber_loss)(pred, target))
    assert np.all(np.diff(grads) < 0), grads  # higher tau -> pushed further up

    def reference_loss(p):
        m = p.shape[0]
        tau = (2 * jnp.arange(m) + 1) / (2 * m)
        u = target[None, :] - p[:, None]
        huber = jnp.where(jnp.abs(u) <= 1, 0.5 * u**2, jnp.abs(u) - 0.5)
        return jnp.sum(jnp.mean(jnp.abs(tau[None, :] - (u < 0)) * huber, axis=-1))

    ref_grads = np.asarray(jax.grad(reference_loss)(pred))
    np.testing.assert_allclose(ref_grads, ref_grads[0])


@pytest.mark.parametrize("num_atoms", [1, 5, 55, 100])
@pytest.mark.parametrize("jit", [False, True])
def test_risk_sensitive_values_forward_and_straight_through_gradient(num_atoms, jit):
    rng = np.random.default_rng(num_atoms + 7)
    atoms = jnp.asarray(rng.normal(size=(4, num_atoms)), jnp.float32)
    scores = jnp.asarray(rng.normal(size=NUM_LEVELS), jnp.float32)
    fn = jax.jit(ops.risk_sensitive_values, static_argnums=2) if jit else ops.risk_sensitive_values
    values, level, probs = fn(atoms, scores, True)
    j = int(np.argmax(np.asarray(scores)))
    assert int(level) == j
    expected = [np_cvar(np.asarray(a, np.float64), Fraction(j + 1, NUM_LEVELS)) for a in np.asarray(atoms)]
    np.testing.assert_allclose(np.asarray(values), expected, rtol=1e-5, atol=1e-5)

    # Backward w.r.t. the scores: d/ds sum_u w_u sum_k softmax(s)_k CVaR_k(Z_u), in float64.
    weights = jnp.arange(1.0, 5.0)
    grad = jax.grad(lambda s: jnp.sum(weights * ops.risk_sensitive_values(atoms, s, True)[0]))(scores)
    s64 = np.asarray(scores, np.float64)
    p = np.exp(s64 - s64.max()); p /= p.sum()
    cv = np.array([[np_cvar(np.asarray(a, np.float64), Fraction(k + 1, NUM_LEVELS)) for k in range(NUM_LEVELS)]
                   for a in np.asarray(atoms)])  # (A, K)
    g = (np.asarray(weights)[:, None] * cv).sum(0)  # d/dp
    expected_grad = p * (g - (p * g).sum())
    np.testing.assert_allclose(np.asarray(grad), expected_grad, rtol=1e-4, atol=1e-5)
    # Atoms get the gradient of the chosen level only.
    atom_grad = jax.grad(lambda z: jnp.sum(ops.risk_sensitive_values(z, scores, True)[0]))(atoms)
    hard_grad = jax.grad(lambda z: jnp.sum(jax.vmap(ops.cvar, in_axes=(0, None))(z, (j + 1) / NUM_LEVELS)))(atoms)
    np.testing.assert_allclose(np.asarray(atom_grad), np.asarray(hard_grad), atol=1e-6)


def test_frozen_risk_values_give_scores_no_gradient():
    atoms = jnp.asarray(np.random.default_rng(0).normal(size=(3, 8)), jnp.float32)
    scores = jnp.arange(NUM_LEVELS, dtype=jnp.float32) / 3.0
    grad = jax.grad(lambda s: jnp.sum(ops.risk_sensitive_values(atoms, s, False)[0]))(scores)
    np.testing.assert_array_equal(np.asarray(grad), 0.0)


def test_td_target_and_truncation_bootstraps():
    assert float(ops.td_target(1.0, 0.0, 0.9, 10.0)) == pytest.approx(10.0)
    assert float(ops.td_target(1.0, 1.0, 0.9, 10.0)) == pytest.approx(1.0)
    rng = np.random.default_rng(3)
    r, d, v = rng.normal(size=20), rng.integers(0, 2, 20), rng.normal(size=20)
    np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(ops.td_target, in_axes=(0, 0, None, 0)))(r, d.astype(np.float32), 0.99, v)),
                               r + 0.99 * (1 - d) * v, rtol=1e-5)


def _lambda_returns_f64(r, term, gamma, v, lam, cont):
    """Backward recursion in float64, straight from the definition."""
    out = np.zeros(len(r))
    following = 0.0
    for t in reversed(range(len(r))):
        lt = lam * cont[t]
        out[t] = r[t] + gamma * (1 - term[t]) * ((1 - lt) * v[t] + lt * following)
        following = out[t]
    return out


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.6, 1.0])
def test_td_lambda_target_matches_float64_recursion(lam):
    rng = np.random.default_rng(int(lam * 10))
    t_len = 12
    r, v = rng.normal(size=t_len), rng.normal(size=t_len)
    term = np.zeros(t_len)
    term[7] = 1.0  # an episode ends at step 7; steps 8.. are padding
    cont = np.r_[np.ones(7), np.zeros(t_len - 7)]  # step t+1 is a real step of the episode
    expected = _lambda_returns_f64(r, term, 0.99, v, lam, cont)
    r32, term32, v32, cont32 = (np.asarray(a, np.float32) for a in (r, term, v, cont))
    for fn in (ops.td_lambda_target, jax.jit(ops.td_lambda_target)):
        np.testing.assert_allclose(np.asarray(fn(r32, term32, 0.99, v32, lam, cont32)), expected, rtol=1e-5, atol=1e-5)
    g = np.asarray(ops.td_lambda_target(r32, term32, 0.99, v32, lam, cont32))
    # the terminal step ignores what follows; lambda 0 is the one-step target everywhere
    assert float(g[7]) == pytest.approx(r[7], abs=1e-6)
    if lam == 0.0:
        np.testing.assert_allclose(g, r + 0.99 * (1 - term) * v, rtol=1e-5, atol=1e-6)


def test_td_lambda_target_bootstraps_at_the_time_limit():
    # three steps, none terminal, the last one hits the time limit (no real successor)
    r, v = np.array([-1.0, -1.0, -1.0], np.float32), np.array([5.0, 7.0, 11.0], np.float32)
    term, cont = np.zeros(3, np.float32), np.array([1.0, 1.0, 0.0], np.float32)
    g = np.asarray(ops.td_lambda_target(r, term, 0.5, v, 1.0, cont))
    # lambda = 1: Monte Carlo to the end, then the bootstrap of the last step
    np.testing.assert_allclose(g, [-1 - 0.5 - 0.25 + 0.125 * 11, -1 - 0.5 + 0.25 * 11, -1 + 0.5 * 11], rtol=1e-6)


def test_masked_argmax_ignores_unavailable():
    values = jnp.array([5.0, 1.0, 3.0, -2.0])
    assert int(ops.masked_argmax(values, jnp.array([0, 1, 1, 1]))) == 2
    assert int(ops.masked_argmax(values, jnp.array([0, 0, 0, 1]))) == 3


@pytest.mark.parametrize("jit", [False, True])
def test_epsilon_greedy_frequencies(jit):
    values = jnp.array([0.0, 9.0, 1.0, 2.0, 3.0])
    avail = jnp.array([1, 0, 1, 1, 0])
    fn = jax.vmap(ops.epsilon_greedy, in_axes=(0, None, None, None))
    fn = jax.jit(fn) if jit else fn
    n = 20000
    actions = np.asarray(fn(jax.random.split(jax.random.PRNGKey(0), n), values, avail, 0.3))
    counts = np.bincount(actions, minlength=5) / n
    # greedy among available is action 3; each available action gets 0.3 / 3 at random
    np.testing.assert_allclose(counts, [0.1, 0.0, 0.1, 0.8, 0.0], atol=0.015)
    greedy = np.asarray(fn(jax.random.split(jax.random.PRNGKey(1), 100), values, avail, 0.0))
    assert np.all(greedy == 3)


def test_linear_schedule():
    assert float(ops.linear_schedule(1.0, 0.05, 100, 0)) == pytest.approx(1.0)
    assert float(ops.linear_schedule(1.0, 0.05, 100, 50)) == pytest.approx(0.525)
    assert float(ops.linear_schedule(1.0, 0.05, 100, 1000)) == pytest.approx(0.05)


def test_shapes_are_asserted():
    with pytest.raises(AssertionError):
        ops.cvar(jnp.zeros((2, 3)), 0.5)
    chex.assert_shape(ops.cvar_all_levels(jnp.zeros(7), 4), (4,))


def sort_cases(num_atoms: int) -> np.ndarray:
    values = np.random.default_rng(num_atoms).normal(size=(7, num_atoms)).astype(np.float32)
    values[0, : num_atoms // 2] = 0.5  # ties
    return values


@pytest.mark.parametrize("num_atoms", [1, 2, 5, 10, 55, 100, 128])
def test_bitonic_sort_matches_numpy(num_atoms):
    values = sort_cases(num_atoms)
    np.testing.assert_array_equal(np.asarray(jax.jit(ops.bitonic_sort)(values)), np.sort(values, axis=-1))


@pytest.mark.parametrize("num_atoms", [5, 100])
def test_platform_sort_matches_numpy_under_vmap(num_atoms):
    """``sort_ascending`` as the CVaR calls it (one distribution, vmapped); the CPU takes the bitonic branch."""
    values = sort_cases(num_atoms)
    np.testing.assert_array_equal(np.asarray(jax.jit(jax.vmap(ops.sort_ascending))(values)),
                                  np.sort(values, axis=-1))


@pytest.mark.parametrize("num_atoms", [10, 100])
def test_cvar_gradient_is_one_over_k_on_the_tail(num_atoms):
    atoms = np.random.default_rng(3).normal(size=num_atoms).astype(np.float32)
    for alpha in (0.1, 0.55, 1.0):
        k = int(np.ceil(round(alpha * num_atoms, 6)))
        grad = np.asarray(jax.grad(ops.cvar)(jnp.asarray(atoms), alpha))
        expected = np.zeros(num_atoms)
        expected[np.argsort(atoms)[:k]] = 1.0 / k
        np.testing.assert_allclose(grad, expected, atol=1e-7)


@pytest.mark.parametrize("num_levels", [1, 7, 10])
def test_alpha_to_level_inverts_level_to_alpha(num_levels):
    levels = jnp.arange(num_levels)
    np.testing.assert_array_equal(ops.alpha_to_level(ops.level_to_alpha(levels, num_levels), num_levels), levels)


@pytest.mark.parametrize("jit", [False, True])
def test_softmax_entropy_matches_float64(jit):
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(6, NUM_LEVELS)) * np.array([0.0, 0.5, 1, 3, 30, 300])[:, None]
    fn = jax.jit(ops.softmax_entropy) if jit else ops.softmax_entropy
    got = np.asarray(fn(jnp.asarray(scores, jnp.float32)))
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    expected = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got[0] == pytest.approx(np.log(NUM_LEVELS), rel=1e-6)  # equal scores: uniform
    assert got[-1] < 1e-6  # scores 300 apart: one-hot


def np_ascending_atoms(raw: np.ndarray) -> np.ndarray:
    """Reference in float64: the first output, then softplus steps of 1 / M at zero, summed one by one."""
    raw = np.asarray(raw, np.float64)
    m = raw.shape[-1]
    out = raw.copy()
    shift = np.log(np.expm1(1.0 / m))
    for i in range(1, m):
        out[..., i] = out[..., i - 1] + np.logaddexp(0.0, raw[..., i] + shift)
    return out


def np_ascending_cvar_grad(raw: np.ndarray, counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """d/d raw of sum_j w_j CVaR_j(ascending_atoms(raw)), by hand in float64: CVaR_j's gradient is 1 / k_j on
    the first k_j atoms; atom i depends on raw_0 (slope 1) and on raw_l, 1 <= l <= i (slope sigmoid(raw_l + c))."""
    m = len(raw)
    g = np.zeros(m)
    for w, k in zip(weights, counts):
        g[:k] += w / k  # d/d atoms
    tail = np.cumsum(g[::-1])[::-1]  # sum over atoms i >= l
    sig = 1.0 / (1.0 + np.exp(-(np.asarray(raw, np.float64) + np.log(np.expm1(1.0 / m)))))
    return np.concatenate([[tail[0]], sig[1:] * tail[1:]])


@pytest.mark.parametrize("num_atoms", ATOM_COUNTS)
def test_ascending_atoms_match_float64_and_ascend(num_atoms):
    raw = np.random.default_rng(num_atoms).normal(size=(6, num_atoms)) * 3
    atoms = np.asarray(jax.jit(ops.ascending_atoms)(jnp.asarray(raw, jnp.float32)), np.float64)
    np.testing.assert_allclose(atoms, np_ascending_atoms(raw), rtol=1e-5, atol=1e-4)
    assert np.all(np.diff(atoms, axis=-1) >= 0)
    zero = np.asarray(ops.ascending_atoms(jnp.zeros(num_atoms)))  # steps of 1 / M at initialisation's zero
    np.testing.assert_allclose(np.diff(zero), 1.0 / num_atoms, rtol=1e-5)


@pytest.mark.parametrize("num_atoms", ATOM_COUNTS)
def test_prefix_cvar_of_ascending_atoms_equals_the_sorted_cvar_gradients_included(num_atoms):
    """CVaR as prefix means (no sort) of ascending atoms: the values of the sorting CVaR and of NumPy, and
    the gradient through the head's construction of both and of the hand-derived float64 one."""
    rng = np.random.default_rng(num_atoms + 11)
    raw = rng.normal(size=num_atoms) * 2
    weights = rng.uniform(0.5, 2.0, size=NUM_LEVELS)
    counts = np.asarray(ops.level_tail_counts(NUM_LEVELS, num_atoms))
    atoms64 = np_ascending_atoms(raw)
    expected = [np_cvar(atoms64, Fraction(j + 1, NUM_LEVELS)) for j in range(NUM_LEVELS)]

    def weighted(r, ascending):
        return jnp.sum(jnp.asarray(weights, jnp.float32) * ops.cvar_all_levels(ops.ascending_atoms(r), NUM_LEVELS,
                                                                                ascending))

    raw32 = jnp.asarray(raw, jnp.float32)
    for ascending in (True, False):
        values = ops.cvar_all_levels(ops.ascending_atoms(raw32), NUM_LEVELS, ascending)
        np.testing.assert_allclose(np.asarray(values), expected, rtol=1e-5, atol=1e-4)
    prefix = np.asarray(jax.jit(jax.grad(weighted), static_argnums=1)(raw32, True))
    np.testing.assert_allclose(prefix, np_ascending_cvar_grad(raw, counts, weights), rtol=1e-4, atol=1e-5)
    if num_atoms > 1:  # where atoms tie (M = 1: none) the sorting CVaR's tail set is the same
        np.testing.assert_allclose(prefix, np.asarray(jax.grad(weighted)(raw32, False)), rtol=1e-4, atol=1e-5)
    single = float(ops.cvar(ops.ascending_atoms(raw32), 0.3, ascending=True))
    np.testing.assert_allclose(single, np_cvar(atoms64, Fraction(3, 10)), rtol=1e-5, atol=1e-4)


def test_risk_sensitive_values_on_ascending_atoms_need_no_sort():
    """The same values, chosen level and straight-through score gradient with and without the sort."""
    rng = np.random.default_rng(5)
    atoms = ops.ascending_atoms(jnp.asarray(rng.normal(size=(4, 20)) * 2, jnp.float32))
    scores = jnp.asarray(rng.normal(size=NUM_LEVELS), jnp.float32)
    out = [ops.risk_sensitive_values(atoms, scores, True, ascending) for ascending in (True, False)]
    for a, b in zip(*out):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    grads = [jax.grad(lambda s, asc=asc: jnp.sum(ops.risk_sensitive_values(atoms, s, True, asc)[0]))(scores)
             for asc in (True, False)]
    np.testing.assert_allclose(np.asarray(grads[0]), np.asarray(grads[1]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_atoms", [5, 100])
def test_cvar_all_levels_of_many_distributions_in_one_call(num_atoms):
    """Leading axes (one sort for all distributions): every (row, action) equals the float64 reference,
    and the gradient of a weighted sum of all levels is sum_j w_j / k_j on the atoms of tail j (ties included)."""
    rng = np.random.default_rng(num_atoms)
    atoms = (rng.normal(size=(3, 4, num_atoms)) * 10).astype(np.float32)
    atoms[0, 0, : num_atoms // 2] = 1.5  # ties
    weights = rng.normal(size=(3, 4, NUM_LEVELS))
    got = np.asarray(jax.jit(ops.cvar_all_levels, static_argnums=1)(jnp.asarray(atoms), NUM_LEVELS))
    chex.assert_shape(got, (3, 4, NUM_LEVELS))
    expected = np.asarray([[[np_cvar(row, Fraction(j + 1, NUM_LEVELS)) for j in range(NUM_LEVELS)]
                            for row in rows] for rows in atoms])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    grad = np.asarray(jax.grad(lambda z: jnp.sum(jnp.asarray(weights, jnp.float32)
                                                 * ops.cvar_all_levels(z, NUM_LEVELS)))(jnp.asarray(atoms)))
    counts = np.asarray(ops.level_tail_counts(NUM_LEVELS, num_atoms))
    for index in np.ndindex(3, 4):
        row = atoms[index]
        expected_grad = np.zeros(num_atoms)
        for w, k in zip(weights[index], counts):
            if num_atoms <= 32:  # ranks, ties broken by index: exactly k atoms
                expected_grad[np.argsort(row, kind="stable")[:k]] += w / k
            else:  # every atom at or below the k-th smallest (more than k only where atoms tie there)
                expected_grad[row <= np.sort(row)[k - 1]] += w / k
        np.testing.assert_allclose(grad[index], expected_grad, rtol=1e-4, atol=1e-5)


def test_prefix_means_match_float64():
    rng = np.random.default_rng(7)
    values = rng.normal(size=(6, 100))
    counts = np.asarray([1, 7, 50, 100])
    got = np.asarray(ops.prefix_means(jnp.asarray(values, jnp.float32), jnp.asarray(counts)))
    expected = np.stack([values[:, :k].mean(axis=1) for k in counts], axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_chosen_affine_matches_float64_gradients_included(jit):
    """One action's block of an affine layer: its values and its gradients (inputs, kernel, bias) against
    NumPy float64, where the loss is a weighted sum of the chosen outputs (d loss / d out = weights)."""
    rng = np.random.default_rng(5)
    rows, hidden, actions, atoms = 13, 6, 4, 7
    x, kernel = rng.normal(size=(rows, hidden)), rng.normal(size=(hidden, actions * atoms))
    bias, weights = rng.normal(size=actions * atoms), rng.normal(size=(rows, atoms))
    chosen = rng.integers(0, actions, size=rows)
    onehot = np.eye(actions)[chosen]
    full = (x @ kernel + bias).reshape(rows, actions, atoms)
    expected = full[np.arange(rows), chosen]  # (R, M)
    d_full = np.zeros((rows, actions, atoms))
    d_full[np.arange(rows), chosen] = weights
    d_full = d_full.reshape(rows, -1)
    expected_grads = (d_full @ kernel.T, x.T @ d_full, d_full.sum(0))

    def weighted(x, kernel, bias):
        return jnp.sum(jnp.asarray(weights, jnp.float32) * ops.chosen_affine(x, kernel, bias, jnp.asarray(onehot, jnp.float32)))

    f32 = [jnp.asarray(v, jnp.float32) for v in (x, kernel, bias)]
    value = ops.chosen_affine(*f32, jnp.asarray(onehot, jnp.float32))
    grads = (jax.jit(jax.grad(weighted, argnums=(0, 1, 2))) if jit else jax.grad(weighted, argnums=(0, 1, 2)))(*f32)
    np.testing.assert_allclose(np.asarray(value), expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, expected_grads):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
