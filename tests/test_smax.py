"""The SMAX adapter: shapes, masks, reward scale, won / terminal / truncation flags, per-map
configs, and a few learner updates on 3m."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmix_jax.config import ConfigError, load_config
from rmix_jax.envs.smax import SMAXAdapter, map_names
from rmix_jax.learner import make_learner

KEY = jax.random.PRNGKey(0)


@pytest.fixture(scope="module")
def env3m():
    return SMAXAdapter("3m", reward_scale=10.0)


def set_units(env_state, alive, step=None):
    """Replace which units are alive (dead units get zero health)."""
    inner = env_state.state
    alive = jnp.asarray(alive)
    inner = inner.replace(unit_alive=alive, unit_health=jnp.where(alive, inner.unit_health, 0.0))
    if step is not None:
        inner = inner.replace(step=jnp.asarray(step, inner.step.dtype))
    return env_state.replace(state=inner)


def test_specs_for_registered_and_extra_maps():
    for name, agents, actions, units in [("3m", 3, 8, 6), ("5m_vs_6m", 5, 11, 11), ("8m_vs_9m", 8, 14, 17),
                                         ("corridor", 6, 29, 30)]:
        env = SMAXAdapter(name)
        spec = env.spec
        assert (spec.num_agents, spec.num_actions, spec.episode_limit) == (agents, actions, 100), name
        assert spec.state_dim == units * env.num_unit_features
        _, ts = env.reset(KEY)
        assert ts.obs.shape == (agents, spec.obs_dim) and ts.avail.shape == (agents, actions)
    for name in ("3m", "2s3z", "5m_vs_6m", "3s5z", "10m_vs_11m", "27m_vs_30m", "3s5z_vs_3s6z", "6h_vs_8z",
                 "smacv2_5_units", "8m_vs_9m"):
        assert name in map_names()


def test_unknown_map_is_one_line_error():
    with pytest.raises(ValueError, match="unknown SMAX map '4m'; choose one of .*5m_vs_6m"):
        SMAXAdapter("4m")
    with pytest.raises(ConfigError) as err:
        load_config(["env=smax", "env.map=4m"])
    assert "env.map" in str(err.value) and "3m" in str(err.value) and "\n" not in str(err.value)


def test_reset_state_is_normalised_and_moves_available(env3m):
    env_state, ts = env3m.reset(KEY)
    assert float(ts.state.min()) >= 0.0 and float(ts.state.max()) <= 1.0
    units = ts.state.reshape(6, -1)
    np.testing.assert_allclose(units[:, 0], 1.0)  # full health
    raw = env_state.state.unit_positions
    np.testing.assert_allclose(units[:, 1], raw[:, 0] / 32.0, rtol=1e-6)
    # the teams start ~16 apart, beyond marine range 5: only the 5 moves are available
    np.testing.assert_array_equal(ts.avail, np.tile([1, 1, 1, 1, 1, 0, 0, 0], (3, 1)))
    assert not bool(ts.terminated | ts.truncated | ts.won)


def test_state_stays_normalised_through_random_episodes():
    """Cooldowns in the state are clipped fractions of each unit's type cooldown (SMAX's raw
    world state lets an idle unit's cooldown fall far below zero), on a two-type map."""
    env = SMAXAdapter("2s3z")
    type_cooldowns = np.asarray(env.env._env.unit_type_weapon_cooldowns, np.float64)

    def one_step(carry, key):
        env_state, ts = carry
        k_act, k_env = jax.random.split(key)
        actions = jax.random.categorical(k_act, jnp.where(ts.avail > 0, 0.0, -jnp.inf))
        env_state, ts = env.step(k_env, env_state, actions)
        inner = env_state.state
        return (env_state, ts), (ts.state, inner.unit_weapon_cooldowns, inner.unit_types, inner.unit_alive)

    carry = env.reset(KEY)
    _, (states, raw, types, alive) = jax.jit(lambda c: jax.lax.scan(one_step, c, jax.random.split(KEY, 60)))(carry)
    states, raw, types, alive = (np.asarray(x) for x in (states, raw, types, alive))
    assert raw.min() < -5 * type_cooldowns.max()  # the raw feature really does run away
    assert states.min() >= 0.0 and states.max() <= 1.0
    cooldown = states.reshape(60, 10, -1)[:, :, 3]
    expected = np.where(alive, np.clip(raw / type_cooldowns[types], 0.0, 1.0), 0.0)
    np.testing.assert_allclose(cooldown, expected, atol=1e-6)
    assert (expected > 0).any() and (expected == 0).any()


def test_dead_noop_is_a_dead_units_only_action_and_plays_as_stop(env3m):
    env = SMAXAdapter("3m", reward_scale=10.0, dead_noop=True)
    assert env.spec.num_actions == env3m.spec.num_actions + 1 == 9
    env_state, ts = env.reset(KEY)
    plain_state, plain_ts = env3m.reset(KEY)
    np.testing.assert_array_equal(ts.avail, np.pad(plain_ts.avail, ((0, 0), (0, 1))))  # all alive: no no-op
    alive = np.ones(6, bool)
    alive[1] = False
    env_state, plain_state = set_units(env_state, alive), set_units(plain_state, alive)
    avail = np.asarray(env.available_actions(env_state))
    np.testing.assert_array_equal(avail[1], [0] * 8 + [1])  # the dead ally: only the no-op
    plain_avail = np.asarray(env3m.available_actions(plain_state))
    np.testing.assert_array_equal(avail[[0, 2]], np.pad(plain_avail[[0, 2]], ((0, 0), (0, 1))))
    # The no-op is sent to SMAX as stop (SMAX itself ignores a dead unit's action).
    np.testing.assert_array_equal(env.env_actions(jnp.array([0, 8, 7])), [0, 4, 7])
    np.testing.assert_array_equal(env3m.env_actions(jnp.array([0, 4, 7])), [0, 4, 7])
    step = jax.jit(env.step)
    _, ts_noop = step(KEY, env_state, jnp.array([0, 8, 2]))
    _, ts_stop = step(KEY, env_state, jnp.array([0, 4, 2]))
    np.testing.assert_array_equal(ts_noop.obs, ts_stop.obs)
    np.testing.assert_array_equal(ts_noop.state, ts_stop.state)
    assert float(ts_noop.reward) == float(ts_stop.reward)
    assert load_config(["env=smax", "env.dead_noop=true"]).env.dead_noop


def test_reward_scale_multiplies_the_team_reward():
    env1, env10 = SMAXAdapter("3m", reward_scale=1.0), SMAXAdapter("3m", reward_scale=10.0)
    state1, _ = env1.reset(KEY)
    state10, _ = env10.reset(KEY)
    # put enemies in range so that attacks deal damage
    near = state1.state.unit_positions.at[3:].set(state1.state.unit_positions[:3] + jnp.array([2.0, 0.0]))
    state1 = state1.replace(state=state1.state.replace(unit_positions=near))
    state10 = state10.replace(state=state10.state.replace(unit_positions=near))
    actions = jnp.array([5, 6, 7])  # each ally attacks a different enemy
    _, ts1 = env1.step(KEY, state1, actions)
    _, ts10 = env10.step(KEY, state10, actions)
    assert float(ts1.reward) > 0
    np.testing.assert_allclose(float(ts10.reward), 10.0 * float(ts1.reward), rtol=1e-6)


def test_win_loss_and_time_limit_flags(env3m):
    env_state, _ = env3m.reset(KEY)
    stop = jnp.full((3,), 4)
    # every enemy dead: a won terminal, with the win bonus (1 x scale 10)
    _, ts = env3m.step(KEY, set_units(env_state, [True] * 3 + [False] * 3), stop)
    assert bool(ts.won) and bool(ts.terminated) and not bool(ts.truncated)
    np.testing.assert_allclose(float(ts.reward), 10.0)
    # every ally dead: a lost terminal
    _, ts = env3m.step(KEY, set_units(env_state, [False] * 3 + [True] * 3), stop)
    assert not bool(ts.won) and bool(ts.terminated) and not bool(ts.truncated)
    # the 100-step limit with both teams alive: a truncation (bootstrap), not a terminal
    new_state, ts = env3m.step(KEY, set_units(env_state, [True] * 6, step=99), stop)
    assert bool(ts.truncated) and not bool(ts.terminated) and not bool(ts.won)
    assert int(new_state.state.step) == 100  # no auto-reset: the real final state is kept


def test_dead_ally_may_only_stop(env3m):
    env_state, _ = env3m.reset(KEY)
    _, ts = env3m.step(KEY, set_units(env_state, [False, True, True, True, True, True]), jnp.full((3,), 4))
    np.testing.assert_array_equal(ts.avail[0], [0, 0, 0, 0, 1, 0, 0, 0])
    assert int(ts.avail[1, :4].sum()) == 4


def test_per_map_values_and_overrides():
    config = load_config(["env=smax", "env.map=5m_vs_6m"])
    assert config.agent.num_atoms == 100 and config.train.start_to_update_qr == 500_000
    assert config.env.reward_scale == 10.0 and config.train.test_episodes >= 32
    assert load_config(["env=smax", "env.map=5m_vs_6m", "agent.num_atoms=8"]).agent.num_atoms == 8
    assert load_config(["env=smax"]).agent.num_atoms == 10  # 3m: the default M
    # a method's own definition wins over per-map values: QMIX keeps one atom
    qmix = load_config(["env=smax", "env.map=5m_vs_6m", "method=qmix"])
    assert qmix.agent.num_atoms == 1 and not qmix.train.use_qr


@pytest.mark.slow
def test_learner_updates_on_3m(method="rmix"):
    # QMIX runs the same code path (M = 1, static alpha); RMIX also exercises the QR update, here with the
    # ascending atom head (free atoms train on MACN throughout the suite).
    config = load_config([
        "env=smax", "env.map=3m", f"method={method}", "agent.atom_head=ascending", "train.num_envs=2", "train.batch_size=2",
        "train.buffer_size=8", "train.iterations_per_eval=3", "train.test_episodes=2",
        "agent.hidden_dim=16", "train.start_to_update_qr=0", "train.qr_interval=1",
        "train.time_windows=1",  # unvmapped, a switch over windows computes every branch: one window here
    ])
    learner = make_learner(config)
    state = learner.init(jax.random.PRNGKey(1))
    state, metrics = jax.jit(learner.run_chunk)(state)
    assert int(state.updates) == 3
    assert np.isfinite(float(metrics["td_loss"])) or np.isfinite(float(metrics["qr_loss"]))
    if method == "rmix":
        assert float(metrics["qr_updates"]) >= 1 and np.isfinite(float(metrics["qr_loss"]))
    assert np.isfinite(float(metrics["test_return"])) and 0.0 <= float(metrics["test_won"]) <= 1.0
    # the episodes in the replay (3 iterations x 2 envs), of different lengths: a filled
    # prefix, reset only at step 0, terminated at most at the last filled step, padding masked
    assert int(state.buffer_state.current_index) == 6
    episodes = jax.tree.map(lambda x: np.asarray(x)[0, :6], state.buffer_state.experience)
    lengths = episodes.filled.sum(1)
    assert lengths.min() >= 1 and len(set(lengths.tolist())) > 1
    for e in range(6):
        assert episodes.filled[e, : lengths[e]].all() and not episodes.filled[e, lengths[e]:].any()
        assert episodes.reset[e].tolist() == [True] + [False] * 100
        term = np.nonzero(episodes.terminated[e])[0]
        assert term.size == 0 or term.tolist() == [lengths[e] - 1]
        assert episodes.reward[e, lengths[e]:].sum() == 0.0
