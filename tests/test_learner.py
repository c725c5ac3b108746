"""The learner: QMIX as a special case of RMIX, episode storage, pure vmapped train."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmix_jax.config import load_config
from rmix_jax.learner import make_learner

TINY = ["env=macn_7x4", "train.batch_size=4", "train.num_envs=4", "train.buffer_size=16",
        "train.iterations_per_eval=2", "train.test_episodes=2", "agent.hidden_dim=16"]

RISK_KEYS = {"risk_torso", "risk_gru", "history_embed", "current_embed"}


def random_batch(learner, n=6, seed=1):
    params = learner.init(jax.random.PRNGKey(0)).params
    episodes, _ = learner.rollout(params, jax.random.PRNGKey(seed), jnp.float32(1.0), n)
    return episodes


def test_rmix_with_one_atom_and_alpha_one_equals_qmix():
    rmix = make_learner(load_config(TINY + ["method=rmix", "agent.num_atoms=1"]))
    qmix = make_learner(load_config(TINY + ["method=qmix"]))
    rmix_state = rmix.init(jax.random.PRNGKey(3))
    shared = {k: v for k, v in rmix_state.params.agent["params"].items() if k not in RISK_KEYS}
    qmix_params = rmix_state.params.replace(agent={"params": shared})
    batch = random_batch(qmix)
    # make targets differ from online values so the loss is not trivial
    target_r = jax.tree.map(lambda x: x * 0.9, rmix_state.params)
    target_q = jax.tree.map(lambda x: x * 0.9, qmix_params)

    def loss_and_grad(learner, params, target):  # jitted: one compile instead of op-by-op dispatch
        value_and_grad = jax.value_and_grad(lambda p, t: learner.loss(p, t, batch, jnp.bool_(False))[0])
        # full optimisation (the suite's -O0 reorders float sums beyond the tolerance below), with the
        # fusion emitters that conftest turns off for -O0 (XLA:CPU crashed at -O3 without them)
        return jax.jit(value_and_grad, compiler_options={"xla_backend_optimization_level": 3,
                                                         "xla_cpu_use_fusion_emitters": True})(params, target)

    loss_r, grads_r = loss_and_grad(rmix, rmix_state.params, target_r)
    loss_q, grads_q = loss_and_grad(qmix, qmix_params, target_q)
    assert float(loss_r) > 0
    np.testing.assert_allclose(float(loss_r), float(loss_q), rtol=1e-6)
    for key, grad in grads_q.agent["params"].items():
        for a, b in zip(jax.tree.leaves(grads_r.agent["params"][key]), jax.tree.leaves(grad)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    # atol 1e-6: the two graphs sum in different orders, and on some CPUs (AVX-512) a mixer
    # gradient near 3e-4 differs by one float32 step at that scale (1.2e-7)
    for a, b in zip(jax.tree.leaves(grads_r.mixer), jax.tree.leaves(grads_q.mixer)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    # with one atom every risk level gives the same value: the predictor gets no gradient
    for key in RISK_KEYS:
        assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads_r.agent["params"][key])) < 1e-6


def test_stored_episodes_keep_reset_done_and_padding_apart():
    learner = make_learner(load_config(TINY))
    episodes = random_batch(learner, n=16)
    t1 = learner.spec.episode_limit + 1
    assert episodes.obs.shape == (16, t1, 2, 45) and episodes.avail.shape == (16, t1, 2, 4)
    for e in range(16):
        filled = np.asarray(episodes.filled[e])
        length = int(filled.sum())
        assert filled[:length].all() and not filled[length:].any()  # a prefix
        assert np.asarray(episodes.reset[e]).tolist() == [True] + [False] * (t1 - 1)
        terminated = np.asarray(episodes.terminated[e])
        reward = np.asarray(episodes.reward[e])
        if length < learner.spec.episode_limit:  # ended early: a real terminal at its last step
            assert terminated[length - 1] and terminated.sum() == 1
            assert reward[length - 1] in (-100.0, 0.0)
        else:  # ran to the limit: truncated, never terminated, so it bootstraps
            assert not terminated.any()
        assert not reward[length:].any()


def test_static_alpha_changes_the_loss():
    base = TINY + ["method=rmix_static"]
    batch = random_batch(make_learner(load_config(base)))
    losses = []
    for alpha in (0.1, 1.0):
        learner = make_learner(load_config(base + [f"agent.alpha={alpha}"]))
        state = learner.init(jax.random.PRNGKey(0))
        loss = jax.jit(lambda p, t: learner.loss(p, t, batch, jnp.bool_(False))[0])
        losses.append(float(loss(state.params, state.target_params)))
    assert losses[0] != pytest.approx(losses[1])


def test_td_lambda_one_on_ended_episodes_is_the_monte_carlo_return():
    # With lambda = 1 and gamma = 1 the TD(lambda) target of an episode that ends in a
    # terminal is its reward-to-go, so the TD loss no longer depends on the target
    # network; with lambda = 0 (the paper's one-step target) it does.
    from rmix_jax.learner import hyper_from_config
    config = load_config(TINY + ["method=qmix"])
    learner = make_learner(config)
    episodes = random_batch(learner, n=16)
    ended = np.flatnonzero(np.asarray(episodes.terminated).any(axis=1))
    assert len(ended) >= 4
    batch = jax.tree.map(lambda x: x[ended], episodes)
    state = learner.init(jax.random.PRNGKey(3))
    other_target = jax.tree.map(lambda x: x * 0.5 + 0.1, state.params)
    loss = jax.jit(lambda p, t, h: learner.loss(p, t, batch, jnp.bool_(False), h)[0])
    for lam, same in ((1.0, True), (0.0, False), (0.6, False)):
        hyper = hyper_from_config(config, td_lambda=lam, gamma=1.0)
        a, b = float(loss(state.params, state.params, hyper)), float(loss(state.params, other_target, hyper))
        assert (a == pytest.approx(b, rel=1e-6)) is same, (lam, a, b)


# qmix trains in tests/test_learning.py (to the probe's optimum) and rmix_static in
# tests/test_experiment.py (a sweep with a learned point); the others here.
@pytest.mark.parametrize("case", ["rmix", "vdn", "iql", "rdn", "rmix_frozen"])  # the ascending head: test_smax.py
def test_every_method_trains_a_chunk_with_finite_losses(case):
    # one iteration per chunk: the rmix case compiles the program the schedule test below reuses
    method, *extra = case.split()
    cfg = load_config(TINY + [f"method={method}", "train.iterations_per_eval=1", "train.start_to_update_qr=0",
                              "train.qr_interval=1", *extra])
    learner = make_learner(cfg)
    state = learner.init(jax.random.PRNGKey(0))
    run_chunk = jax.jit(learner.run_chunk)
    for _ in range(4):
        state, metrics = run_chunk(state)
    assert np.isfinite(float(metrics["td_loss"])) or cfg.train.use_qr
    if cfg.train.use_qr:
        assert float(metrics["qr_updates"]) > 0 and np.isfinite(float(metrics["qr_loss"]))
    assert int(state.updates) > 0 and int(state.t_env) > 0


def test_schedule_is_traced_and_followed_per_run():
    """Runs with different t_max, QR start and interval and target-copy interval in one
    compiled program (the one the rmix case above compiles): each follows its own schedule,
    simulated here from the observed env steps, and stops at its own t_max."""
    from rmix_jax.learner import hyper_from_config

    config = load_config(TINY + ["train.iterations_per_eval=1", "train.start_to_update_qr=0", "train.qr_interval=1"])
    learner = make_learner(config)
    run_chunk = jax.jit(learner.run_chunk)
    points = [dict(t_max=100, start_to_update_qr=0, qr_interval=1, target_update_interval=1),
              dict(t_max=400, start_to_update_qr=150, qr_interval=100, target_update_interval=3)]
    total_updates = []
    for p in points:
        hyper = hyper_from_config(config, **p)
        assert hyper.t_max.dtype == jnp.int32 and hyper.lr.dtype == jnp.float32
        state = learner.init(jax.random.PRNGKey(0), hyper)
        t = updates = last_qr = last_target = 0
        for _ in range(40):
            before = int(state.t_env)
            state, metrics = run_chunk(state)
            active = t < p["t_max"]
            assert bool(metrics["active"]) == active
            if not active:  # a finished run stays put
                assert int(state.t_env) == t and int(state.updates) == updates
                break
            t = int(metrics["t_env"])
            assert t > before
            assert int(metrics["updates"]) - updates == 1  # one update per iteration (the replay holds a batch)
            updates += 1
            is_qr = t >= p["start_to_update_qr"] and t - last_qr >= p["qr_interval"]
            assert int(metrics["qr_updates"]) == int(is_qr), (p, t, last_qr)
            last_qr = t if is_qr else last_qr
            if updates - last_target >= p["target_update_interval"]:
                last_target = updates
            assert int(state.last_target_update) == last_target
            # equal up to float noise (XLA may recompute the update for the copy), or an Adam step apart
            gap = max(float(np.max(np.abs(a - b)))
                      for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(state.target_params)))
            assert (gap < 1e-6) == (last_target == updates), (p, updates, gap)
        assert t >= p["t_max"] and not bool(metrics["active"])
        total_updates.append(updates)
    assert total_updates[0] < total_updates[1]  # the first run stopped earlier
    assert run_chunk._cache_size() == 1  # both schedules ran in one compiled program


def test_qr_loss_skipped_over_runs_changes_nothing():
    """Vmapped with a named run axis, an update computes the QR loss only when some run makes a
    QR update (a real cond on a maximum over the runs); without the name both losses are computed
    and selected per run. The two programs train the same runs to the same parameters, through
    updates where one run, both or neither make a QR update."""
    from rmix_jax.learner import RUN_AXIS, hyper_from_config

    def train(run_axis):
        config = load_config(TINY + ["train.iterations_per_eval=3", "train.td_lambda=0.8"])
        points = [dict(start_to_update_qr=0, qr_interval=60), dict(start_to_update_qr=10**9, qr_interval=1)]
        hyper = jax.tree.map(lambda *x: jnp.stack(x), *[hyper_from_config(config, **p) for p in points])
        learner = make_learner(config, run_axis=run_axis)
        chunk = jax.vmap(learner.run_chunk, axis_name=run_axis)
        state = jax.vmap(learner.init)(jax.random.split(jax.random.PRNGKey(3), len(points)), hyper)
        traced = jax.jit(chunk).trace(state)  # traced once: its jaxpr counted, then compiled
        conds = str(traced.jaxpr).count("cond[")
        compiled = traced.lower().compile()
        rows = []
        for _ in range(4):
            state, metrics = compiled(state)
            rows.append({k: np.asarray(metrics[k]) for k in ("td_loss", "qr_updates", "update_window")})
        return state.params, {k: np.stack([r[k] for r in rows]) for k in rows[0]}, conds

    # (time windows in a vmapped program with the named axis: tests/test_host.py runs one against the
    # host loop, and test_loss_over_a_window_that_holds_the_batch_equals_the_whole_episode checks the math)
    (named, m_named, conds_named), (plain, m_plain, conds_plain) = train(RUN_AXIS), train(None)
    limit = make_learner(load_config(TINY)).spec.episode_limit
    assert 2 <= m_named["qr_updates"][:, 0].sum() < 4 * 3 and m_named["qr_updates"][:, 1].sum() == 0
    np.testing.assert_array_equal(m_named["update_window"], limit + 1)
    for m, params in ((m_plain, plain),):
        np.testing.assert_array_equal(m["qr_updates"], m_named["qr_updates"])
        np.testing.assert_allclose(m["td_loss"], m_named["td_loss"], rtol=1e-4, atol=1e-6)
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(named)):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    assert conds_named == conds_plain + 1  # the QR cond survives vmap only with the named axis


def both_losses_and_grad(learner, params, target):
    """Jitted: episodes -> (gradient of the TD plus the QR loss, the loss's aux), QR on for every run."""
    @jax.jit
    def losses_and_grad(episodes):
        def both(p):
            aux = learner.loss(p, target, episodes, jnp.bool_(True), None, True)[1]
            return aux["td_loss"] + aux["qr_loss"], aux
        return jax.grad(both, has_aux=True)(params)
    return losses_and_grad


def test_loss_over_a_window_that_holds_the_batch_equals_the_whole_episode():
    """The TD(lambda) and QR losses and their gradient over the first L + 1 entries of the stored
    episodes, L the longest episode in the batch, are those over the whole padded episodes."""
    learner = make_learner(load_config(TINY + ["train.td_lambda=0.8"]))
    params = learner.init(jax.random.PRNGKey(0)).params
    target = jax.tree.map(lambda x: x * 0.9, params)
    batch = random_batch(learner, n=8, seed=5)
    longest = int(np.asarray(batch.filled).sum(axis=1).max())
    assert longest + 1 < batch.filled.shape[1]  # the batch leaves padding to cut

    losses_and_grad = both_losses_and_grad(learner, params, target)
    grads_whole, whole = losses_and_grad(batch)
    grads_cut, cut = losses_and_grad(jax.tree.map(lambda v: v[:, :longest + 1], batch))
    short = losses_and_grad(jax.tree.map(lambda v: v[:, :longest], batch))[1]  # drops the last transitions
    for key in ("td_loss", "qr_loss"):
        np.testing.assert_allclose(cut[key], whole[key], rtol=1e-5, err_msg=key)
        assert abs(float(short[key]) - float(whole[key])) > 1e-4 * abs(float(whole[key])), key
    for a, b in zip(jax.tree.leaves(grads_cut), jax.tree.leaves(grads_whole)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_losses_on_packed_episodes_equal_the_padded_batch():
    """TD(lambda) and QR losses, the predictor's entropy and the gradient on the episodes laid end to
    end (rmix_jax.learner.packing) are those on the padded batch (only the summation order differs)."""
    from rmix_jax.learner.packing import pack, rows_needed

    learner = make_learner(load_config(TINY + ["train.batch_size=8", "train.td_lambda=0.8"]))
    params = learner.init(jax.random.PRNGKey(0)).params
    target = jax.tree.map(lambda x: x * 0.9, params)
    batch = learner.rollout(params, jax.random.PRNGKey(5), jnp.float32(0.3), 8)[0]
    needed = int(rows_needed(batch))
    assert needed < 8

    losses_and_grad = both_losses_and_grad(learner, params, target)
    grads_padded, padded = losses_and_grad(batch)
    grads_packed, packed = losses_and_grad(pack(batch, needed))
    for key in ("td_loss", "qr_loss", "alpha_entropy"):
        np.testing.assert_allclose(packed[key], padded[key], rtol=1e-5, err_msg=key)
    assert float(padded["qr_loss"]) > 0 and float(padded["td_loss"]) > 0
    for a, b in zip(jax.tree.leaves(grads_packed), jax.tree.leaves(grads_padded)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("method", ["qmix", "rmix"])
def test_acting_and_training_unrolls_agree(method):
    # The values the learner trains on are the ones the agents acted on: same hidden
    # states, last actions and risk levels at every stored step.
    learner = make_learner(load_config(["env.width=3", "env.height=2", f"method={method}", "agent.hidden_dim=16"]))
    state = learner.init(jax.random.PRNGKey(0))
    episodes, _ = learner.rollout(state.params, jax.random.PRNGKey(1), jnp.float32(0.0), 4)
    atoms, scores = learner.unroll(state.params.agent, episodes)
    values, alpha = learner.values_and_alpha(atoms, scores)
    filled = np.asarray(episodes.filled)
    np.testing.assert_array_equal(np.asarray(jnp.argmax(values, -1))[filled], np.asarray(episodes.actions)[filled])
    np.testing.assert_allclose(np.asarray(alpha)[filled], np.asarray(episodes.alpha)[filled])


def scanned_rollout(learner, params, key, epsilon, num_episodes):
    """Reference: each episode stepped to the episode limit in a fixed-length scan (the rollout
    as it was before the early-stopping loop), frozen and stored as padding after its end."""
    from rmix_jax.learner import Policy, padding_record, step_record, tree_select

    env, limit = learner.env, learner.spec.episode_limit
    policy = Policy(params, epsilon, learner.default_hyper().alpha)

    def one(key):
        reset_key, key = jax.random.split(key)
        env_state, ts = env.reset(reset_key)

        def step(c, t):
            env_state, ts, actor, done, key = c
            key, act_key, env_key = jax.random.split(key, 3)
            actor, actions, alpha = learner.act(policy, actor, ts.obs, ts.avail, t == 0, act_key)
            new_state, new_ts = env.step(env_key, env_state, actions)
            new_state, new_ts = tree_select(done, (env_state, ts), (new_state, new_ts))
            record = step_record(ts, actions, alpha, new_ts, done, t == 0)
            return (new_state, new_ts, actor, done | new_ts.terminated | new_ts.truncated, key), (record, env_state)

        start = (env_state, ts, learner.start_actor(), jnp.bool_(False), key)
        final, (steps, states) = jax.lax.scan(step, start, jnp.arange(limit))
        tail = padding_record(final[1])
        return jax.tree.map(lambda xs, x: jnp.concatenate([xs, x[None]]), steps, tail), states

    return jax.vmap(one)(jax.random.split(key, num_episodes))


@pytest.mark.parametrize("run_axis,atoms", [(None, 10), ("runs", 10), ("runs", 40)])
def test_rollout_stops_at_the_longest_episode_and_equals_a_full_length_scan(run_axis, atoms):
    """Two runs vmapped (the stop shared over a named axis, or per run as a batched loop): the
    stored episodes equal those of a scan to the episode limit that acts env by env through ``act``,
    entry for entry, and the loop computes exactly as many steps as the longest episode (the step
    keys it keeps stop there). With 40 atoms the rollout's greedy choices are packed
    (``greedy_actions``)."""
    learner = make_learner(load_config(TINY + [f"agent.num_atoms={atoms}"]), run_axis=run_axis)
    params = jax.vmap(lambda k: learner.init(k).params)(jax.random.split(jax.random.PRNGKey(0), 2))
    keys = jax.random.split(jax.random.PRNGKey(5), 2)
    epsilon = jnp.asarray([1.0, 0.3])  # random and near-greedy: some episodes end early, some run to the limit

    def ours(p, k, e):
        episodes, stats, (states, step_keys) = learner.rollout(p, k, e, 6, keep_env_states=True, over_runs=True)
        return episodes, stats, states, step_keys

    episodes, stats, states, step_keys = jax.jit(jax.vmap(ours, axis_name=run_axis))(params, keys, epsilon)
    ref, ref_states = jax.jit(jax.vmap(lambda p, k, e: scanned_rollout(learner, p, k, e, 6)))(params, keys, epsilon)
    for field in episodes.__dataclass_fields__:
        np.testing.assert_array_equal(np.asarray(getattr(episodes, field)), np.asarray(getattr(ref, field)),
                                      err_msg=field)
    for a, b in zip(jax.tree.leaves(states), jax.tree.leaves(ref_states)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    lengths = np.asarray(stats.lengths)  # (2 runs, 6 episodes)
    np.testing.assert_array_equal(lengths, np.asarray(ref.filled).sum(axis=-1))
    assert lengths.min() < learner.spec.episode_limit  # the check below sees a real early stop
    steps = np.asarray(step_keys).any(axis=-1).all(axis=1).sum(axis=-1)  # (2,) steps computed per run
    expected = lengths.max(axis=1) if run_axis is None else np.full(2, lengths.max())
    np.testing.assert_array_equal(steps, expected)


@pytest.mark.parametrize("method", ["rmix", "rmix_static"])
def test_packed_greedy_actions_equal_every_rows_argmax(method):
    """Greedy actions computed only for rows that need a choice (packed into a smaller array): every
    needed row's argmax over all rows, whichever packed size the count of such rows picks; rows with
    one available action take it."""
    from rmix_jax.learner.acting import greedy_actions, values_and_alpha
    from rmix_jax.ops import masked_argmax

    setup = make_learner(load_config(TINY + [f"method={method}", "agent.num_atoms=40", "agent.alpha=0.3"])).setup
    b, t, n, a, m, k = 4, 6, 2, 5, 40, setup.num_levels
    rng = np.random.default_rng(0)
    atoms = jnp.asarray(rng.normal(size=(b, t, n, a, m)), jnp.float32)
    scores = jnp.asarray(rng.normal(size=(b, t, n, k)), jnp.float32)
    alpha = jnp.float32(0.3)
    full_values = values_and_alpha(setup, atoms, scores, alpha)[0]
    for fill in (1, 2, 3, 6):  # needed steps per episode: 1/6 .. all of the rows
        needed = jnp.asarray(np.arange(t)[None, :, None] < fill).repeat(b, 0).repeat(n, 2)
        avail = rng.uniform(size=(b, t, n, a)) < 0.6
        avail[..., 0] |= ~avail.any(-1)
        avail[:, :, 1] = np.eye(a, dtype=bool)[2] if fill == 3 else avail[:, :, 1]  # one action: its only choice
        avail = jnp.asarray(avail)
        want = jax.vmap(masked_argmax)(full_values.reshape(-1, a), avail.reshape(-1, a)).reshape(b, t, n)
        got = jax.jit(lambda *x: greedy_actions(setup, *x))(atoms, scores, avail, needed, alpha)
        np.testing.assert_array_equal(np.asarray(got)[np.asarray(needed)], np.asarray(want)[np.asarray(needed)])
        if fill == 3:
            assert np.all(np.asarray(got)[:, :, 1] == 2)
