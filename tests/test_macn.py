"""MACN rules (docs/algorithm.md, "MACN"), the array adapter and the reward-noise wrapper."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmix_jax.envs import MACN, JaxMARLAdapter, RewardNoise
from rmix_jax.envs.macn import CLIFF, DOWN, FREE, GOAL, LEFT, OUTSIDE, RIGHT, TEAMMATE, UP, MACNState

KEY = jax.random.PRNGKey(0)


def make(width=7, height=4, **kw):
    env = MACN(width, height, **kw)
    return env, JaxMARLAdapter(env, env.episode_limit)


def at(positions, step=0):
    p = jnp.asarray(positions, jnp.int32)
    return MACNState(positions=p, at_goal=(p[:, 0] == 6) & (p[:, 1] == 0), step=jnp.int32(step), done=jnp.bool_(False))


def step(adapter, state, a0, a1, key=KEY):
    return adapter.step(key, state, jnp.array([a0, a1]))


def test_optimal_sequence_returns_minus_seven_on_7x4():
    _, adapter = make()
    state, ts = adapter.reset(KEY)
    plan = [UP] + [RIGHT] * 6 + [DOWN]
    rewards = []
    for t, a in enumerate(plan):
        state, ts = step(adapter, state, a, a)
        rewards.append(float(ts.reward))
        assert bool(ts.terminated) == (t == len(plan) - 1)
    assert rewards == [-1.0] * 7 + [0.0]
    assert sum(rewards) == -7.0 and bool(ts.won) and not bool(ts.truncated)


def test_cliff_costs_minus_100_and_terminates_and_takes_precedence():
    _, adapter = make()
    state, ts = step(adapter, at([[0, 0], [0, 0]]), RIGHT, UP)
    assert float(ts.reward) == -100.0 and bool(ts.terminated) and not bool(ts.won)
    # one agent reaches the goal while the other falls: the cliff rule comes first
    state, ts = step(adapter, at([[6, 1], [2, 1]]), DOWN, DOWN)
    assert float(ts.reward) == -100.0 and bool(ts.terminated)


def test_low_risk_variant_cliff_reward():
    _, adapter = make(cliff_reward=-50.0)
    _, ts = step(adapter, at([[0, 0], [0, 0]]), RIGHT, UP)
    assert float(ts.reward) == -50.0


def test_one_agent_home_costs_half_and_stays_put():
    _, adapter = make()
    state, ts = step(adapter, at([[6, 1], [0, 1]]), DOWN, RIGHT)
    assert float(ts.reward) == -0.5 and not bool(ts.terminated)
    # the agent at the goal ignores its actions
    state, ts = step(adapter, state, UP, RIGHT)
    assert np.asarray(state.positions).tolist() == [[6, 0], [2, 1]]
    assert float(ts.reward) == -0.5


def test_plain_step_costs_one_and_walls_block():
    _, adapter = make()
    state, ts = step(adapter, at([[0, 0], [0, 3]]), LEFT, UP)
    assert np.asarray(state.positions).tolist() == [[0, 0], [0, 3]]
    assert float(ts.reward) == -1.0 and not bool(ts.terminated)


def test_episode_limit_is_truncation_not_termination():
    env, adapter = make()
    assert env.episode_limit == 2 * 7 * 4
    state, ts = adapter.reset(KEY)
    for t in range(env.episode_limit):
        state, ts = step(adapter, state, UP, UP)
        assert bool(ts.truncated) == (t == env.episode_limit - 1)
        assert not bool(ts.terminated)


def test_observation_window():
    env, adapter = make()
    _, ts = adapter.reset(KEY)
    obs = np.asarray(ts.obs).reshape(2, 9, 5).argmax(-1)  # rows top to bottom, left to right
    # agent at (0, 0) with its teammate on the same cell
    assert obs[0].tolist() == [OUTSIDE, FREE, FREE, OUTSIDE, TEAMMATE, CLIFF, OUTSIDE, OUTSIDE, OUTSIDE]
    state, ts = step(adapter, at([[5, 1], [0, 3]]), UP, UP)
    obs = np.asarray(ts.obs).reshape(2, 9, 5).argmax(-1)
    # agent 0 moved to (5, 2): nothing special around; agent 1 at (0, 3): top-left corner
    assert obs[0].tolist() == [FREE] * 9
    assert obs[1].tolist() == [OUTSIDE] * 4 + [FREE, FREE, OUTSIDE, FREE, FREE]
    _, ts = step(adapter, at([[5, 1], [0, 3]]), DOWN, UP)  # agent 0 into the cliff at (5, 0)
    obs = np.asarray(ts.obs).reshape(2, 9, 5).argmax(-1)
    assert obs[0].tolist() == [FREE, FREE, FREE, CLIFF, CLIFF, GOAL, OUTSIDE, OUTSIDE, OUTSIDE]
    assert ts.obs.shape == (2, 45) and np.all(np.asarray(ts.obs).reshape(2, 9, 5).sum(-1) == 1)


def test_global_state_layout():
    env, adapter = make()
    state, ts = step(adapter, at([[6, 1], [2, 3]], step=4), DOWN, RIGHT)
    s = np.asarray(ts.state)
    assert s.shape == (2 * 28 + 3,) and env.state_dim == s.shape[0]
    assert s[:28].argmax() == 0 * 7 + 6 and s[28:56].argmax() == 3 * 7 + 3
    assert s[56:58].tolist() == [1.0, 0.0] and s[58] == pytest.approx(5 / 56)


def test_any_size_and_12x4_optimum():
    _, adapter = make(12, 4)
    state, _ = adapter.reset(KEY)
    total = 0.0
    for a in [UP] + [RIGHT] * 11 + [DOWN]:
        state, ts = step(adapter, state, a, a)
        total += float(ts.reward)
    assert total == -12.0 and bool(ts.won)
    env, _ = make(5, 3)
    assert env.obs_dim == 45 and env.episode_limit == 30


def test_slip_replaces_moves():
    _, adapter = make(slip_prob=1.0)
    moved = set()
    for i in range(40):
        state, _ = step(adapter, at([[3, 2], [0, 3]]), UP, UP, key=jax.random.PRNGKey(i))
        moved.add(tuple(np.asarray(state.positions[0]).tolist()))
    assert moved == {(3, 3), (3, 1), (2, 2), (4, 2)}


def test_jit_and_vmap_agree_with_eager():
    _, adapter = make(slip_prob=0.3)
    keys = jax.random.split(KEY, 16)
    actions = jax.random.randint(KEY, (16, 2), 0, 4)
    start = jax.tree.map(lambda x: jnp.stack([x] * 16), at([[0, 1], [3, 2]]))
    batched = jax.jit(jax.vmap(adapter.step))(keys, start, actions)
    for i in range(16):
        single = adapter.step(keys[i], jax.tree.map(lambda x: x[i], start), actions[i])
        for got, want in zip(jax.tree.leaves(jax.tree.map(lambda x: x[i], batched)), jax.tree.leaves(single)):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_jaxmarl_step_auto_resets():
    env, _ = make()
    obs, state = env.reset(KEY)
    obs, state, rewards, dones, info = env.step(KEY, at([[0, 0], [0, 0]]), {"agent_0": RIGHT, "agent_1": UP})
    assert bool(dones["__all__"]) and float(rewards["agent_0"]) == -100.0
    assert np.asarray(state.positions).tolist() == [[0, 0], [0, 0]] and int(state.step) == 0
    assert set(env.get_avail_actions(state)) == {"agent_0", "agent_1"}


def test_render_text():
    env, _ = make()
    text = env.render_text(at([[0, 0], [6, 0]]))
    assert text.splitlines()[:4] == [".......", ".......", ".......", "1CCCCC2"]


def test_reward_noise_wrapper():
    _, adapter = make()
    noisy = RewardNoise(adapter, sigma=2.0)
    rewards = []
    for i in range(400):
        _, ts = noisy.step(jax.random.PRNGKey(i), at([[0, 1], [0, 1]]), jnp.array([UP, UP]))
        rewards.append(float(ts.reward))
    rewards = np.asarray(rewards)
    assert abs(rewards.mean() + 1.0) < 0.3 and abs(rewards.std() - 2.0) < 0.3
