"""Sampled episodes laid end to end (rmix_jax.learner.packing) against a plain next fit, and packed
updates in vmapped training (the losses on packed rows: tests/test_learner.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmix_jax.config import load_config
from rmix_jax.learner import RUN_AXIS, hyper_from_config, make_learner
from rmix_jax.learner.packing import pack, rows_needed

TINY = ["env=macn_7x4", "train.batch_size=8", "train.num_envs=4", "train.buffer_size=32",
        "train.iterations_per_eval=3", "train.test_episodes=2", "agent.hidden_dim=16"]


def sampled_batch(learner, n, epsilon, seed):
    params = learner.init(jax.random.PRNGKey(0)).params
    return learner.rollout(params, jax.random.PRNGKey(seed), jnp.float32(epsilon), n)[0]


def numpy_pack(batch, rows):
    """Reference: next fit in plain Python, each episode's steps and the entry after its last copied."""
    fields = {name: np.asarray(value) for name, value in vars(batch).items()}
    num_episodes, length = fields["filled"].shape
    out = {name: np.zeros((rows, *value.shape[1:]), value.dtype) for name, value in fields.items()}
    row, column = 0, 0
    for i in range(num_episodes):
        size = min(int(fields["filled"][i].sum()) + 1, length)
        if column + size > length:
            row, column = row + 1, 0
        for name, value in fields.items():
            out[name][row, column:column + size] = value[i, :size]
        column += size
    return out, row + 1


@pytest.mark.parametrize("epsilon", [1.0, 0.3])
def test_pack_lays_episodes_end_to_end_as_a_plain_next_fit(epsilon):
    learner = make_learner(load_config(TINY))
    batch = sampled_batch(learner, n=16, epsilon=epsilon, seed=3)
    rows = 16
    expected, needed = numpy_pack(batch, rows)
    assert int(rows_needed(batch)) == needed < 16  # short MACN episodes: several per row
    for count in (needed, rows):
        packed = jax.jit(pack, static_argnums=1)(batch, count)
        for name, value in vars(packed).items():
            np.testing.assert_array_equal(np.asarray(value), expected[name][:count], err_msg=name)
    # Every real step is kept once, and each episode restarts its recurrences at its own first entry.
    assert int(np.asarray(packed.filled).sum()) == int(np.asarray(batch.filled).sum())
    assert int(np.asarray(packed.reset).sum()) == batch.filled.shape[0]


@pytest.mark.slow
def test_packed_updates_train_as_padded_ones_over_vmapped_runs():
    """Two runs vmapped over the named run axis, with and without ``train.pack_episodes``: the same
    losses and parameters, while the packed updates run over fewer entries per episode (TD updates
    only, to keep the compile short: the QR loss on packed rows is checked in tests/test_learner.py)."""

    def train(pack_episodes):
        config = load_config(TINY + [f"train.pack_episodes={pack_episodes}", "train.use_qr=false"])
        learner = make_learner(config, run_axis=RUN_AXIS)
        hyper = jax.tree.map(lambda *x: jnp.stack(x), *[hyper_from_config(config, lr=lr) for lr in (1e-3, 5e-4)])
        state = jax.vmap(learner.init)(jax.random.split(jax.random.PRNGKey(3), 2), hyper)
        chunk = jax.jit(jax.vmap(learner.run_chunk, axis_name=RUN_AXIS))
        rows = []
        for _ in range(3):
            state, metrics = chunk(state)
            rows.append({k: np.asarray(metrics[k]) for k in ("td_loss", "updates", "update_window")})
        return state.params, {k: np.stack([r[k] for r in rows]) for k in rows[0]}, learner.spec.episode_limit

    (packed, m_packed, limit), (padded, m_padded, _) = train(True), train(False)
    np.testing.assert_array_equal(m_padded["update_window"], limit + 1)
    assert np.all(m_packed["update_window"] < limit + 1)
    np.testing.assert_array_equal(m_packed["updates"], m_padded["updates"])
    assert m_packed["updates"][-1].min() > 0
    np.testing.assert_allclose(m_packed["td_loss"], m_padded["td_loss"], rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(packed), jax.tree.leaves(padded)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
