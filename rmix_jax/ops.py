"""The pure math of RMIX, one example per call (batch with ``jax.vmap``).

Shape legend: M atoms, A actions, K risk levels.

Every function here is tested against NumPy float64 in ``tests/test_ops.py``.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import rlax

# A float alpha * M that lies within this distance of an integer is taken as that
# integer, so 0.3 * 10 gives k = 3 whatever float rounding does (the reference
# code's float32 ceil gives 4 for some such products).
_TAIL_COUNT_TOLERANCE = 1e-3


def tail_count(alpha: chex.Numeric, num_atoms: int) -> chex.Array:
    """Number of lowest atoms averaged by CVaR_alpha: ``k = ceil(alpha * M)``, ``1 <= k <= M``.

    Args:
      alpha: risk level in (0, 1], a float scalar (may be traced).
      num_atoms: M, a Python int.

    Returns:
      k as an int32 scalar.
    """
    scaled = jnp.asarray(alpha, jnp.float32) * num_atoms
    k = jnp.ceil(scaled - _TAIL_COUNT_TOLERANCE).astype(jnp.int32)
    return jnp.clip(k, 1, num_atoms)


def level_tail_counts(num_levels: int, num_atoms: int) -> chex.Array:
    """Exact integer ``k = ceil((j + 1) * M / K)`` for the K grid levels alpha_j = (j + 1) / K.

    Returns:
      (K,) int32.
    """
    levels = jnp.arange(1, num_levels + 1, dtype=jnp.int32)
    return (levels * num_atoms + num_levels - 1) // num_levels


# Up to this many atoms, ranks from pairwise comparisons are far cheaper than XLA's
# sort on the CPU (M = 10: 0.6 ms against 8.6 ms for 15k distributions); above
# it the O(M^2) comparisons cost more, and a bitonic network sorts instead.
_PAIRWISE_RANK_MAX_ATOMS = 32


def ascending_ranks(atoms: chex.Array) -> chex.Array:
    """Rank of each atom in ascending order, ties broken by index: a permutation of 0..M-1.

    Args:
      atoms: (..., M); leading axes are free.

    Returns:
      (..., M) int32 ranks.
    """
    m = atoms.shape[-1]
    if m > _PAIRWISE_RANK_MAX_ATOMS:
        return jnp.argsort(jnp.argsort(atoms, axis=-1, stable=True), axis=-1, stable=True).astype(jnp.int32)
    index = jnp.arange(m)
    below = atoms[..., None, :] < atoms[..., :, None]
    tied_before = (atoms[..., None, :] == atoms[..., :, None]) & (index[None, :] < index[:, None])
    return jnp.sum(below | tied_before, axis=-1).astype(jnp.int32)


# The CPU sort runs the network on tiles of rows that stay in cache: about this many
# elements per tile (64 rows of 100 atoms padded to 128). 100 atoms x 192k rows on this
# 2-core CPU: 124 ms in tiles of 64 rows, against 720 ms for the network over all rows
# at once, whose every stage streams the whole array through memory.
_SORT_TILE_ELEMENTS = 8192


def bitonic_sort(values: chex.Array) -> chex.Array:
    """Ascending sort along the last axis by a bitonic network of min/max stages.

    XLA's sort is slow on the CPU (100 atoms x 177k distributions: 2.8 s). This network
    has log2(n)(log2(n)+1)/2 vectorised compare-exchange stages; the axis is padded to a
    power of two n with the largest float, which sorts to the end. Each merge starts with
    a flip (element i of a block against the block's mirror element), so that every stage
    sorts in the same direction: a stage is a plain min and max of two halves, with no
    per-block choice of direction. The network runs with the sorted axis first and the
    rows behind it, so that a stage is a min/max of contiguous rows, and on tiles of rows
    that fit in cache (``jax.lax.map`` over them), so that all stages of a tile run before
    the next tile is read. Sort many distributions in one call rather than vmapping this.
    """
    m, shape = values.shape[-1], values.shape
    n = 1 << max(0, (m - 1).bit_length())
    flat = values.reshape(-1, m)
    rows, tile = flat.shape[0], max(1, _SORT_TILE_ELEMENTS // n)
    if rows <= tile:
        return _bitonic_rows(flat, n).reshape(shape)
    pad = (-rows) % tile
    if pad:
        flat = jnp.concatenate([flat, jnp.zeros((pad, m), flat.dtype)], axis=0)
    tiles = jax.lax.map(lambda block: _bitonic_rows(block, n), flat.reshape(-1, tile, m))
    return tiles.reshape(-1, m)[:rows].reshape(shape)


def _bitonic_rows(flat: chex.Array, n: int) -> chex.Array:
    """The network on (R, M) rows, M padded to n: (R, M) sorted along axis 1."""
    m = flat.shape[1]
    x = flat.T  # (M, R)
    rows = x.shape[1]
    if n != m:
        x = jnp.concatenate([x, jnp.full((n - m, rows), jnp.finfo(flat.dtype).max, flat.dtype)], axis=0)

    def exchange(x: chex.Array, half: int, flip: bool) -> chex.Array:
        """Compare-exchange within blocks of 2 * half: element i against i + half (or its mirror)."""
        pairs = x.reshape(n // (2 * half), 2, half, rows)
        a, b = pairs[:, 0], pairs[:, 1]
        if flip:
            b = b[:, ::-1]
        high = jnp.maximum(a, b)
        return jnp.stack([jnp.minimum(a, b), high[:, ::-1] if flip else high], axis=1).reshape(n, rows)

    k = 2
    while k <= n:
        x = exchange(x, k // 2, flip=True)  # each block of k: two sorted halves -> a bitonic split
        j = k // 4
        while j >= 1:
            x = exchange(x, j, flip=False)
            j //= 2
        k *= 2
    return x[:m].T


def sort_ascending(values: chex.Array) -> chex.Array:
    """Ascending sort along the last axis: the bitonic network on the CPU, XLA's sort elsewhere.

    On a GPU XLA sorts short rows in one kernel, while the network is some thirty
    passes over memory: for RMIX with M = 100 on SMAX 5m_vs_6m (16 seeds, one H100)
    the network made the loss's forward pass 42 ms against QMIX's 4 ms
    (``benchmarks/update_profile.py``). The platform is chosen when the program is lowered.
    """
    return jax.lax.platform_dependent(values, cpu=bitonic_sort, default=lambda v: jnp.sort(v, axis=-1))


def prefix_means(ordered: chex.Array, counts: chex.Array) -> chex.Array:
    """Mean of the first ``counts[j]`` entries for each j: (..., M), (J,) -> (..., J).

    A product with the (M, J) 0/1 matrix of prefixes rather than a cumulative sum, which
    XLA:CPU computes slowly (100 atoms x 192k rows, 10 levels: 11 ms against 150 ms).
    """
    m = ordered.shape[-1]
    prefixes = (jnp.arange(m)[:, None] < counts[None, :]).astype(ordered.dtype)  # (M, J)
    return (ordered @ prefixes) / counts.astype(ordered.dtype)


def tail_means(atoms: chex.Array, counts: chex.Array, ascending: bool = False) -> chex.Array:
    """Mean of the ``counts[j]`` lowest atoms for each j: atoms (..., M), counts (J,) -> (..., J).

    Leading axes are free, and many distributions are best passed in one call (one sort
    for all of them). Gradient: ``1 / k`` to each atom in the tail, as the exact
    piecewise-linear derivative (for M > 32 the tail is the atoms at or below the k-th
    smallest, which is the same set unless atoms tie exactly there). With ``ascending``
    the atoms are taken to be in ascending order already (``ascending_atoms``): the tails
    are prefixes, with no ranks and no sort.
    """
    if ascending:
        return prefix_means(atoms, counts)
    m = atoms.shape[-1]
    if not tail_means_sort(m):
        in_tail = ascending_ranks(atoms)[..., None, :] < counts[:, None]  # (..., J, M)
        return jnp.einsum("...jm,...m->...j", in_tail.astype(atoms.dtype), atoms) / counts.astype(atoms.dtype)
    return _sorted_tail_means(atoms, counts)


def tail_means_sort(num_atoms: int, ascending: bool = False) -> bool:
    """Whether ``tail_means`` of ``num_atoms`` atoms sorts them (the costly case; else ranks or prefixes)."""
    return not ascending and num_atoms > _PAIRWISE_RANK_MAX_ATOMS


@jax.custom_jvp
def _sorted_tail_means(atoms: chex.Array, counts: chex.Array) -> chex.Array:
    return prefix_means(sort_ascending(atoms), counts)


@_sorted_tail_means.defjvp
def _sorted_tail_means_jvp(primals, tangents):
    atoms, counts = primals
    d_atoms = tangents[0]
    ordered = sort_ascending(atoms)
    k = counts.astype(atoms.dtype)
    in_tail = atoms[..., None, :] <= ordered[..., counts - 1][..., :, None]  # (..., J, M)
    tangent = jnp.einsum("...jm,...m->...j", in_tail.astype(atoms.dtype), d_atoms) / k
    return prefix_means(ordered, counts), tangent


def cvar(atoms: chex.Array, alpha: chex.Numeric, ascending: bool = False) -> chex.Array:
    """CVaR of an equally weighted Dirac distribution (paper Eqn. 2).

    Averages the lowest ``k = ceil(alpha * M)`` of the M atoms; alpha = 1 gives
    the mean and alpha -> 0 the minimum.

    Args:
      atoms: (M,) atom locations, in any order (in ascending order if ``ascending``).
      alpha: risk level in (0, 1].
      ascending: the atoms are known to be ascending (the lowest k are the first k).

    Returns:
      scalar CVaR_alpha.
    """
    chex.assert_rank(atoms, 1)
    return tail_means(atoms, tail_count(alpha, atoms.shape[0])[None], ascending)[0]


def cvar_all_levels(atoms: chex.Array, num_levels: int, ascending: bool = False) -> chex.Array:
    """CVaR at every grid level alpha_j = (j + 1) / K, with exact integer tail counts.

    Args:
      atoms: (..., M) atom locations (ascending if ``ascending``); leading axes are free.
      num_levels: K.
      ascending: the atoms are known to be ascending.

    Returns:
      (..., K) CVaR values, index j for alpha = (j + 1) / K.
    """
    return tail_means(atoms, level_tail_counts(num_levels, atoms.shape[-1]), ascending)


def ascending_atoms(raw: chex.Array) -> chex.Array:
    """Head outputs (..., M) -> atoms in ascending order along the last axis.

    ``z_0 = raw_0`` and ``z_i = z_{i-1} + softplus(raw_i + c)`` for i >= 1: a first atom
    and non-negative steps, summed (the non-crossing construction of quantile networks).
    ``c = log(expm1(1 / M))`` makes each step 1 / M where ``raw_i = 0``, so at
    initialisation the atoms span about 1, as free atoms from the same head do,
    whatever M is.
    """
    m = raw.shape[-1]
    if m == 1:
        return raw
    shift = math.log(math.expm1(1.0 / m))
    steps = jax.nn.softplus(raw[..., 1:] + shift)
    # The running sums as a product with an upper-triangular matrix of ones: XLA:CPU's
    # cumulative sum is about 3x slower for 100 atoms (forward and backward alike).
    running = steps @ jnp.triu(jnp.ones((m - 1, m - 1), steps.dtype))
    return jnp.concatenate([raw[..., :1], raw[..., :1] + running], axis=-1)


def _chosen_forward(inputs, kernel, bias, onehot):
    # The bias is added after the choice: the product's (R, A*M) output is read once, by the
    # contraction with the one-hot, rather than copied with the bias added first.
    num_actions = onehot.shape[-1]
    full = (inputs @ kernel).reshape(*inputs.shape[:-1], num_actions, -1)  # (R, A, M)
    return jnp.einsum("ram,ra->rm", full, onehot) + onehot @ bias.reshape(num_actions, -1)


@jax.custom_vjp
def chosen_affine(inputs: chex.Array, kernel: chex.Array, bias: chex.Array, onehot: chex.Array) -> chex.Array:
    """One block of an affine layer's outputs per row: ``(inputs @ kernel + bias)`` split into A blocks
    of M, the block ``onehot`` picks. inputs (R, H), kernel (H, A*M), bias (A*M,), onehot (R, A) -> (R, M).

    The same values as taking the block from the full product, and the same gradients, but the
    backward pass is written out: the full product's cotangent is the chosen blocks' cotangent
    times the one-hot (one broadcast product, zero elsewhere), the bias's is ``onehot.T @ d`` (an
    (A, M) product) and the kernel's ``inputs.T @ dfull``. Differentiating a gather of the full
    product instead costs a scatter into zeros, pads, a transposed copy and a reduction over all
    R x A*M outputs for the bias, which on the CPU took longer than the layer's own products.
    ``onehot`` gets no gradient.
    """
    return _chosen_forward(inputs, kernel, bias, onehot)


def _chosen_affine_fwd(inputs, kernel, bias, onehot):
    return _chosen_forward(inputs, kernel, bias, onehot), (inputs, kernel, onehot)


def _chosen_affine_bwd(residuals, d_out):
    inputs, kernel, onehot = residuals
    d_full = (onehot[:, :, None] * d_out[:, None, :]).reshape(inputs.shape[0], -1)  # (R, A*M)
    d_bias = (onehot.T @ d_out).reshape(-1)
    return d_full @ kernel.T, inputs.T @ d_full, d_bias, jnp.zeros_like(onehot)


chosen_affine.defvjp(_chosen_affine_fwd, _chosen_affine_bwd)


def level_to_alpha(level: chex.Array, num_levels: int) -> chex.Array:
    """Risk level index j -> alpha = (j + 1) / K."""
    return (level + 1).astype(jnp.float32) / num_levels


def alpha_to_level(alpha: chex.Array, num_levels: int) -> chex.Array:
    """alpha -> the nearest grid level index j (inverse of ``level_to_alpha``), clipped to 0..K-1."""
    return jnp.clip(jnp.round(alpha * num_levels).astype(jnp.int32) - 1, 0, num_levels - 1)


def risk_sensitive_values(
    atoms: chex.Array, scores: chex.Array, straight_through: bool, ascending: bool = False
) -> tuple[chex.Array, chex.Array, chex.Array]:
    """Per-action CVaR at the risk level the predictor picks (paper Eqn. 3).

    Forward: alpha = (argmax_k s_k + 1) / K and C(u) = CVaR_alpha(Z(u)). With
    ``straight_through`` the backward pass also carries the gradient of
    ``sum_k softmax(s)_k * CVaR_{alpha_k}(Z(u))`` into the scores (atoms held
    fixed in that term), so the predictor learns; without it the scores get no
    gradient, which is the reference code's behaviour.

    Args:
      atoms: (A, M) atoms per action.
      scores: (K,) predictor scores over risk levels.
      straight_through: whether gradients reach the scores.
      ascending: each action's atoms are known to be ascending (no sort).

    Returns:
      values: (A,) CVaR per action; level: int32 chosen level index;
      probs: (K,) softmax of the scores.
    """
    chex.assert_rank([atoms, scores], [2, 1])
    return risk_sensitive_choice(cvar_all_levels(atoms, scores.shape[0], ascending), scores, straight_through)


def risk_sensitive_choice(
    all_levels: chex.Array, scores: chex.Array, straight_through: bool
) -> tuple[chex.Array, chex.Array, chex.Array]:
    """``risk_sensitive_values`` from every action's CVaR at every level: (A, K), (K,).

    The CVaRs of many distributions come cheapest from one ``cvar_all_levels`` call (one
    sort), which is how the learner calls this, vmapped over agents and steps.
    """
    chex.assert_rank([all_levels, scores], [2, 1])
    probs = jax.nn.softmax(scores)
    level = jnp.argmax(scores).astype(jnp.int32)
    hard = all_levels[:, level]
    if not straight_through:
        return hard, level, jax.lax.stop_gradient(probs)
    # Levels measured from the chosen one: the same gradient (softmax's Jacobian removes a
    # constant), but exactly zero where every level has the same CVaR (e.g. M = 1), instead of
    # float32's rounding of sum_k P(alpha_k) != 1 times the value.
    spread = jax.lax.stop_gradient(all_levels - hard[:, None])
    soft = jnp.sum(probs * spread, axis=-1)
    return hard + soft - jax.lax.stop_gradient(soft), level, probs


def softmax_entropy(scores: chex.Array) -> chex.Array:
    """Entropy in nats of softmax(scores) along the last axis: (..., K) -> (...).

    ln K for equal scores, 0 for a one-hot softmax.
    """
    log_probs = jax.nn.log_softmax(scores, axis=-1)
    return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


def quantile_midpoints(num_atoms: int) -> chex.Array:
    """tau_hat_i = (2i + 1) / (2M), the quantile that predicted atom i learns."""
    return (2.0 * jnp.arange(num_atoms, dtype=jnp.float32) + 1.0) / (2.0 * num_atoms)


def quantile_huber_loss(predicted: chex.Array, target: chex.Array) -> chex.Array:
    """Quantile Huber loss (kappa = 1) of paper Eqn. 7.

    ``tau_hat`` is indexed by the *predicted* atom and every predicted atom is
    compared with every target atom: sum over predicted atoms of the mean over
    target atoms. (The reference code indexes tau by the target atom, so all
    atoms get the same loss and never become ordered quantiles.)

    Args:
      predicted: (M,) predicted atoms.
      target: (M',) target atoms (gradient stopped).

    Returns:
      scalar loss.
    """
    chex.assert_rank([predicted, target], 1)
    return rlax.quantile_regression_loss(
        predicted, quantile_midpoints(predicted.shape[0]), target, huber_param=1.0
    )


def td_target(
    reward: chex.Numeric, terminated: chex.Numeric, gamma: float, next_value: chex.Array
) -> chex.Array:
    """``y = r + gamma * (1 - terminated) * next_value`` (paper Eqn. 5).

    ``next_value`` is the target network's C_tot at the double-Q action; a
    truncated (time-limit) step is not terminated, so it bootstraps.
    """
    return reward + gamma * (1.0 - terminated) * next_value


def td_lambda_target(
    reward: chex.Array, terminated: chex.Array, gamma: chex.Numeric, next_value: chex.Array,
    lambda_: chex.Numeric, continues: chex.Array,
) -> chex.Array:
    """TD(lambda) targets along one episode (pymarl2's and JaxMARL's QMIX option).

    ``G_t = r_t + gamma * (1 - terminated_t) * ((1 - l_t) * next_value_t + l_t * G_{t+1})``
    with ``l_t = lambda_ * continues_t``, where ``continues_t`` says that step t+1 is a
    real step of the same episode. A step with no real successor (the time limit, or the
    last step before padding) therefore bootstraps fully from ``next_value``, and
    ``lambda_ = 0`` is the one-step target of ``td_target`` (paper Eqn. 5) at every step.
    All arrays are (T,); the recursion is rlax's ``lambda_returns``.
    """
    chex.assert_rank([reward, terminated, next_value, continues], 1)
    chex.assert_equal_shape([reward, terminated, next_value, continues])
    discount = gamma * (1.0 - terminated)
    return rlax.lambda_returns(reward, discount, next_value, lambda_ * continues)


def masked_argmax(values: chex.Array, avail: chex.Array) -> chex.Array:
    """argmax over available actions. values: (A,), avail: (A,) bool or 0/1."""
    chex.assert_rank([values, avail], 1)
    return jnp.argmax(jnp.where(avail > 0, values, -jnp.inf)).astype(jnp.int32)


def exploration(key: chex.PRNGKey, avail: chex.Array, epsilon: chex.Numeric) -> tuple[chex.Array, chex.Array]:
    """Whether epsilon-greedy explores (probability epsilon) and the uniform available action it would
    take: (bool, int32) for avail (A,). ``epsilon_greedy`` with the greedy action left to the caller."""
    chex.assert_rank(avail, 1)
    explore_key, choice_key = jax.random.split(key)
    available = (avail > 0).astype(jnp.float32)
    random_action = jax.random.choice(
        choice_key, avail.shape[0], p=available / jnp.sum(available)
    ).astype(jnp.int32)
    return jax.random.uniform(explore_key) < epsilon, random_action


def epsilon_greedy(
    key: chex.PRNGKey, values: chex.Array, avail: chex.Array, epsilon: chex.Numeric
) -> chex.Array:
    """Greedy available action, or with probability epsilon a uniform available one.

    Args:
      key: PRNG key.
      values: (A,) action values.
      avail: (A,) availability mask.
      epsilon: exploration probability.

    Returns:
      int32 action.
    """
    chex.assert_rank([values, avail], 1)
    explore, random_action = exploration(key, avail, epsilon)
    return jnp.where(explore, random_action, masked_argmax(values, avail))


def linear_schedule(start: chex.Numeric, finish: chex.Numeric, duration: chex.Numeric, t: chex.Numeric) -> chex.Array:
    """Linear anneal from ``start`` to ``finish`` over ``duration`` steps, then constant (all may be traced)."""
    fraction = jnp.clip(jnp.asarray(t, jnp.float32) / jnp.maximum(jnp.asarray(duration, jnp.float32), 1.0), 0.0, 1.0)
    return start + fraction * (finish - start)
