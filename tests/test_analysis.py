"""rmix_jax.analysis: traces agree with the CVaR definition, statistics with hand computation,
the notebook runs top to bottom on a run made here and writes every figure."""

from pathlib import Path

import jax
import numpy as np
import pytest

from rmix_jax import analysis
from rmix_jax.config import load_config
from rmix_jax.learner import make_learner

ROOT = Path(__file__).resolve().parents[1]
TINY = ["env=macn_7x4", "train.batch_size=4", "train.num_envs=4", "train.buffer_size=16",
        "train.iterations_per_eval=2", "train.test_episodes=2", "agent.hidden_dim=16"]


def numpy_cvar(atoms: np.ndarray, alpha: float) -> np.ndarray:
    """Reference CVaR in float64: mean of the lowest ceil(alpha * M) sorted atoms."""
    k = max(1, int(np.ceil(round(alpha * atoms.shape[-1], 6))))
    return np.sort(atoms.astype(np.float64), axis=-1)[..., :k].mean(axis=-1)


@pytest.mark.parametrize("method", ["rmix", "rmix_static"])
def test_trace_matches_cvar_and_greedy_choice(method):
    overrides = TINY + [f"method={method}", "agent.alpha=0.3"]
    learner = make_learner(load_config(overrides))
    params = learner.init(jax.random.PRNGKey(4)).params
    trace = analysis.trace_episodes(learner, params, jax.random.PRNGKey(5), num_episodes=3, epsilon=0.0)
    e, t = trace.reward.shape
    n, a, m = trace.atoms.shape[2:]
    assert (e, n, a, m) == (3, 2, 4, 10) and t == learner.spec.episode_limit
    assert trace.level_probs.shape == (e, t, n, 10)
    np.testing.assert_allclose(trace.level_probs.sum(-1), 1.0, rtol=1e-5)
    filled = trace.filled
    # every recorded value is the CVaR of that action's atoms at the agent's alpha
    for ei, ti, ni in zip(*np.nonzero(np.broadcast_to(filled[..., None], trace.alpha.shape))):
        alpha = float(trace.alpha[ei, ti, ni])
        np.testing.assert_allclose(
            trace.values[ei, ti, ni], numpy_cvar(trace.atoms[ei, ti, ni], alpha), rtol=1e-5, atol=1e-6
        )
        # greedy: the action taken has the highest CVaR among the available ones
        masked = np.where(trace.avail[ei, ti, ni], trace.values[ei, ti, ni], -np.inf)
        assert trace.actions[ei, ti, ni] == np.argmax(masked)
    if method == "rmix_static":
        np.testing.assert_allclose(trace.alpha[filled], 0.3, rtol=1e-6)
        assert np.all(trace.level_probs[filled][..., 2] == 1.0)  # one-hot at level 3 of 10
    else:  # the acted-on alpha is the argmax of the predictor's probabilities
        levels = (np.argmax(trace.level_probs, axis=-1) + 1) / 10
        np.testing.assert_allclose(trace.alpha[filled], levels[filled], rtol=1e-6)
    # the trace's returns are the env's: replaying the actions reproduces the rewards
    np.testing.assert_allclose(trace.returns, (trace.reward * filled).sum(1))
    one = trace.episode(1)
    assert one.reward.shape == (1, int(trace.lengths[1])) and one.won.shape == (1,)


def test_win_rate_interval_is_wilsons():
    # 8 wins of 10 by hand: centre (0.8 + z^2/20) / (1 + z^2/10), half-width z sqrt(0.016 + z^2/400) / (1 + z^2/10)
    np.testing.assert_allclose(analysis.win_rate_interval(8, 10), (0.49016, 0.94332), atol=1e-5)
    for wins, n in [(0, 512), (347, 512), (32, 32), (5, 7)]:
        p, z = wins / n, 1.959963984540054
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        np.testing.assert_allclose(analysis.win_rate_interval(wins, n), (centre - half, centre + half), atol=1e-9)


def test_iqm_and_bootstrap_interval():
    np.testing.assert_allclose(analysis.iqm(np.arange(1.0, 9.0)), 4.5)  # mean of 3, 4, 5, 6
    rows = []
    for seed, offset in enumerate([0.0, 1.0, 2.0, 3.0, 100.0]):
        for chunk, t in enumerate([10, 20, 30]):
            rows.append({"seed": seed, "chunk": chunk, "active": True, "t_env": t, "test_return": offset + chunk})
    curve = analysis.iqm_curve(rows, num_points=3, reps=500)
    np.testing.assert_allclose(curve["env_steps"], [10, 20, 30])
    # trim 25% of 5 seeds: scipy trims int(0.25 * 5) = 1 from each end -> mean of 1, 2, 3
    np.testing.assert_allclose(curve["iqm"], [2.0, 3.0, 4.0])
    np.testing.assert_allclose(curve["mean"], [21.2, 22.2, 23.2])
    assert np.all(curve["lower"] <= curve["iqm"]) and np.all(curve["iqm"] <= curve["upper"])
    assert np.all(curve["upper"] - curve["lower"] > 0)
    same = [dict(r, test_return=-7.0) for r in rows]
    flat = analysis.iqm_curve(same, num_points=3, reps=200)
    np.testing.assert_allclose([flat["lower"], flat["upper"]], -7.0)


def test_alpha_over_training_by_hand():
    rows = [
        {"seed": 0, "chunk": 0, "active": True, "t_env": 10, "alpha_hist": [3, 1]},
        {"seed": 1, "chunk": 0, "active": True, "t_env": 12, "alpha_hist": [0, 4]},
        {"seed": 0, "chunk": 1, "active": True, "t_env": 40, "alpha_hist": [0, 2]},
        {"seed": 1, "chunk": 1, "active": False, "t_env": 40, "alpha_hist": [9, 9]},  # stopped: ignored
    ]
    stats = analysis.alpha_over_training(rows, num_bins=2)  # bins [0, 20), [20, 40]
    np.testing.assert_allclose(stats["env_steps"], [10, 30])
    np.testing.assert_allclose(stats["levels"], [0.5, 1.0])
    np.testing.assert_allclose(stats["share"], [[3 / 8, 5 / 8], [0.0, 1.0]])
    # seed 0: (3*0.5 + 1*1) / 4 then 1.0; seed 1: 1.0 then nothing
    np.testing.assert_allclose(stats["mean_alpha"][0], [0.625, 1.0])
    assert stats["mean_alpha"][1, 0] == 1.0 and np.isnan(stats["mean_alpha"][1, 1])
    with pytest.raises(ValueError, match="no rows"):
        analysis.alpha_over_training(rows, key="missing")


def test_cvar_cutoff_and_action_names():
    assert analysis.cvar_cutoff(0.3, 10) == 3
    assert analysis.cvar_cutoff(0.1, 1) == 1
    assert analysis.cvar_cutoff(1.0, 55) == 55
    assert analysis.action_names(load_config([]), 4) == ["up", "down", "left", "right"]


@pytest.fixture(scope="module")
def tiny_run(tiny_finished_run):
    """The session's finished 2-seed run (conftest.TINY_RUN): one program compiled for many tests."""
    return tiny_finished_run[0]


def test_load_run_and_plots(tiny_run, tmp_path):
    loaded = analysis.load_run(tiny_run)
    assert loaded.num_seeds == 2 and loaded.config.train.t_max == 200 and loaded.config.agent.hidden_dim == 8
    assert analysis.latest_run(tiny_run.parent) == tiny_run
    with pytest.raises(FileNotFoundError, match="make train"):
        analysis.latest_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        analysis.load_run(tmp_path)
    with pytest.raises(IndexError, match="0..1"):
        loaded.seed_params(2)
    params = loaded.seed_params(1)
    trace = analysis.trace_episodes(loaded.learner, params, jax.random.PRNGKey(0), num_episodes=2)
    assert trace.values.shape[:2] == (2, loaded.learner.spec.episode_limit)
    figures = {
        "episode.png": analysis.plot_episode_alpha(trace),
        "heat.png": analysis.plot_atoms_heatmap(trace, step=0, names=analysis.MACN_ACTIONS),
        "curves.png": analysis.plot_iqm_curves({"a": loaded.rows, "b": loaded.rows}, optimum=-7, reps=100),
        "alpha.png": analysis.plot_alpha_over_training(loaded.rows),
    }
    for name, fig in figures.items():
        assert analysis.save_figure(fig, tmp_path / name).stat().st_size > 1000
    with pytest.raises(IndexError, match="outside the episode"):
        analysis.plot_atoms_heatmap(trace, step=10_000)


def test_notebook_runs_top_to_bottom(tiny_run, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(ROOT / "notebooks" / "alpha_analysis.ipynb", as_version=4)
    fig_dir = tmp_path / "figures"
    monkeypatch.setenv("RMIX_RUN", str(tiny_run))  # the kernel inherits the environment
    monkeypatch.setenv("RMIX_FIG_DIR", str(fig_dir))
    nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    ).execute()
    expected = ["learning_curve_iqm.png", "alpha_over_training.png", "episode_alpha.png",
                "atoms_heatmap.png", "test_alpha_over_training.png"]
    for name in expected:
        path = fig_dir / name
        assert path.is_file() and path.stat().st_size > 1000, name


def test_iqm_interval_is_the_trimmed_mean_with_a_reproducible_bootstrap():
    values = np.array([-90.0, -12.0, -12.0, -14.0, -16.0, -12.0, -30.0, -7.0])
    iqm, lower, upper = analysis.iqm_interval(values)
    # sorted: -90, -30 | -16, -14, -12, -12 | -12, -7: the IQM is the mean of the middle four
    assert iqm == pytest.approx((-16 - 14 - 12 - 12) / 4)
    assert values.min() <= lower <= iqm <= upper <= values.max() and lower < upper
    state = np.random.get_state()
    assert analysis.iqm_interval(values) == (iqm, lower, upper)  # seeded: the same interval again
    assert np.array_equal(np.random.get_state()[1], state[1])  # and NumPy's global stream untouched
    assert analysis.iqm_interval(values, seed=1) != (iqm, lower, upper)


def test_predictor_diagnostics_per_seed_skip_static_and_inactive_rows():
    rows = [
        {"seed": 0, "active": True, "t_env": 10, "alpha_entropy": 2.0, "risk_grad_norm": None},
        {"seed": 0, "active": True, "t_env": 20, "alpha_entropy": 1.5, "risk_grad_norm": 0.3},
        {"seed": 0, "active": False, "t_env": 20, "alpha_entropy": 9.0, "risk_grad_norm": 9.0},  # stopped
        {"seed": 1, "active": True, "t_env": 12, "alpha_entropy": None, "risk_grad_norm": None},  # static
    ]
    out = analysis.predictor_diagnostics(rows)
    assert list(out) == [0]
    np.testing.assert_array_equal(out[0]["t_env"], [10, 20])
    np.testing.assert_array_equal(out[0]["alpha_entropy"], [2.0, 1.5])
    np.testing.assert_array_equal(out[0]["risk_grad_norm"], [np.nan, 0.3])
    assert analysis.predictor_diagnostics([{"seed": 0, "active": True, "t_env": 1}]) == {}  # an older run


def test_alpha_by_cliff_distance_reads_positions_from_the_macn_state():
    from rmix_jax.envs.macn import MACN

    config = load_config(["env=macn_7x4"])
    env = MACN(width=7, height=4)
    _, state = env.reset(jax.random.PRNGKey(0))
    # agent 0 at (3, 2): 2 rows above the cliff; agent 1 at (6, 1): one right of and one above the last cliff cell
    state = state.replace(positions=jax.numpy.array([[3, 2], [6, 1]], jax.numpy.int32))
    s = np.asarray(env.get_state(state))
    np.testing.assert_array_equal(analysis.macn_positions(config, s[None]), [[[3, 2], [6, 1]]])
    assert analysis.macn_cliff_distance(config, np.array([[3, 2], [6, 1], [0, 0], [6, 0], [5, 3]])).tolist() == \
        [2, 2, 1, 1, 3]
    # two steps of one episode: alphas 0.1/0.5 at distances 2/2, then 0.3 at distance 2 and agent 1 at the goal
    goal_state = state.replace(positions=jax.numpy.array([[3, 2], [6, 0]], jax.numpy.int32))
    states = np.stack([s, np.asarray(env.get_state(goal_state))])[None]  # (E=1, T=2, S)
    trace = analysis.EpisodeTrace(
        reward=np.zeros((1, 2)), filled=np.ones((1, 2), bool), alpha=np.array([[[0.1, 0.5], [0.3, 0.9]]]),
        level_probs=np.zeros((1, 2, 2, 10)), atoms=np.zeros((1, 2, 2, 4, 1)), values=np.zeros((1, 2, 2, 4)),
        actions=np.zeros((1, 2, 2), int), avail=np.ones((1, 2, 2, 4), bool), state=states, won=np.zeros(1, bool))
    table = analysis.alpha_by_cliff_distance(config, trace)
    assert list(table) == [2] and table[2][1] == 3 and table[2][0] == pytest.approx((0.1 + 0.5 + 0.3) / 3)
