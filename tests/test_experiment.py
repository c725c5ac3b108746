"""Many runs as one program: sweeps of traced hyperparameters, wandb offline logging, device sharding."""

import os
from pathlib import Path

import jax
import numpy as np
import pytest

from rmix_jax import analysis, experiment, results, tracking
from rmix_jax.config import ConfigError, load_config
from rmix_jax.train import run

from conftest import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]
TINY = ["train.iterations_per_eval=2", "train.buffer_size=16", "train.batch_size=4", "agent.hidden_dim=8",
        "train.test_episodes=2", "wandb.mode=disabled"]


def test_sweep_grid_and_run_layout():
    config = load_config(TINY + ["method=rmix_static", "num_seeds=3", "sweep.agent.alpha=[0.2,learned]",
                                 "sweep.train.lr=[0,0.001]"])
    assert config.sweep_points() == [
        {"agent.alpha": 0.2, "train.lr": 0}, {"agent.alpha": 0.2, "train.lr": 0.001},
        {"agent.alpha": "learned", "train.lr": 0}, {"agent.alpha": "learned", "train.lr": 0.001},
    ]
    exp = experiment.make_experiment(config)
    assert exp.num_runs == 12 and exp.learner.mixed_alpha
    keys, hyper = experiment.run_inputs(exp)
    # run r = seed r % 3 of point r // 3; every point uses the same three seed keys
    np.testing.assert_array_equal(keys[:3], keys[9:])
    assert len({tuple(k) for k in keys}) == 3
    np.testing.assert_allclose(hyper.alpha, [0.2] * 6 + [0.0] * 6)
    np.testing.assert_allclose(hyper.lr, ([0.0] * 3 + [0.001] * 3) * 2, rtol=1e-6)
    np.testing.assert_allclose(hyper.epsilon_anneal_steps, config.train.epsilon_anneal_steps)
    with pytest.raises(ConfigError, match="sweep.agent.alpha"):
        load_config(["method=rmix", "sweep.agent.alpha=[0.3]"])  # a numeric alpha needs rmix_static
    with pytest.raises(ConfigError, match="sweep.train.lr"):
        load_config(["sweep.train.lr=0.001"])  # not a list
    with pytest.raises(ConfigError, match="sweep.train.qr_interval=1.5.*whole number"):
        load_config(["sweep.train.qr_interval=[100,1.5]"])
    # the schedule's step counts are traced (int32): sweepable in one program
    schedule = experiment.make_experiment(load_config(TINY + [
        "num_seeds=2", "sweep.train.target_update_interval=[50,200]", "sweep.train.start_to_update_qr=[0,1000]"]))
    _, hyper = experiment.run_inputs(schedule)
    assert hyper.target_update_interval.dtype == np.int32
    np.testing.assert_array_equal(hyper.target_update_interval, [50, 50, 50, 50, 200, 200, 200, 200])
    np.testing.assert_array_equal(hyper.start_to_update_qr, [0, 0, 1000, 1000] * 2)
    np.testing.assert_array_equal(hyper.t_max, schedule.config.train.t_max)


@pytest.mark.slow
def test_swept_values_act_in_one_program(tmp_path):
    """One program of 2 x 2 points: lr = 0 leaves the TD-trained parameters at their init, a
    static alpha is the only level acted on, and epsilon follows each point's anneal length."""
    config = load_config(TINY + [
        "method=rmix_static", "num_seeds=1", "train.t_max=150", "train.use_qr=false",
        "sweep.agent.alpha=[0.2,learned]", "sweep.train.lr=[0,0.001]", f"results_dir={tmp_path}", "run_name=sweep",
        "train.epsilon_anneal_steps=100",
    ])
    run_dir, rows = run(config, progress=False)
    by_point = results.rows_by_point(rows)
    assert sorted(by_point) == [0, 1, 2, 3]
    assert by_point[2][0]["sweep"] == {"agent.alpha": "learned", "train.lr": 0}
    params = results.load_params(run_dir)
    exp = experiment.make_experiment(config)
    initial = experiment.to_host(experiment.init_state(exp).params)
    for run_index, lr in enumerate([0, 0.001, 0, 0.001]):
        same = all(np.array_equal(a[run_index], b[run_index])
                   for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(initial)))
        assert same == (lr == 0), (run_index, lr)
    for row in by_point[0] + by_point[1]:  # static alpha 0.2: level index 1 of K = 10
        hist = np.asarray(row["alpha_hist"]).sum(axis=0)
        assert hist.sum() > 0 and hist[1] == hist.sum()
    learned_levels = np.asarray([r["test_alpha_hist"] for r in by_point[2] + by_point[3]]).sum(axis=(0, 1))
    assert np.count_nonzero(learned_levels) >= 2  # the predictor picks among levels
    # predictor diagnostics: none for a static alpha; for the learned point with lr > 0 the TD
    # gradient reaches the predictor and P(alpha) is neither one-hot nor beyond uniform
    assert all(r["alpha_entropy"] is None and r["risk_grad_norm"] is None for r in by_point[0] + by_point[1])
    trained = [r for r in by_point[3] if r["td_loss"] is not None]
    assert trained and all(0.1 < r["alpha_entropy"] <= np.log(10) + 1e-5 and r["risk_grad_norm"] > 0 for r in trained)
    summary = (run_dir / "summary.json").read_text()
    assert '"points"' in summary and "learned" in summary
    # analysis of one sweep point: the static point acts on alpha 0.2 with one-hot P(alpha),
    # the learned point on the predictor's softmax
    loaded = analysis.load_run(run_dir)
    static = analysis.trace_episodes(loaded.learner, loaded.seed_params(0, point=1), jax.random.PRNGKey(1),
                                     hyper=loaded.point_hyper(1))
    learned = analysis.trace_episodes(loaded.learner, loaded.seed_params(0, point=3), jax.random.PRNGKey(1),
                                      hyper=loaded.point_hyper(3))
    filled = static.filled[0]
    np.testing.assert_allclose(static.alpha[0][filled], 0.2)
    assert set(np.unique(static.level_probs[0][filled])) <= {0.0, 1.0}
    probs = learned.level_probs[0][learned.filled[0]]
    assert np.all(probs < 1.0) and np.allclose(probs.sum(-1), 1.0, atol=1e-5)


@pytest.mark.xdist_group("tiny_run")  # the program of conftest's TINY_RUN: compiled once on that worker
def test_wandb_offline_run_logs_every_chunk(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    config = load_config(TINY_RUN + ["wandb.mode=auto", "checkpoint.every_chunks=0", f"results_dir={tmp_path}",
                                     "run_name=logged"])
    assert tracking.resolve_mode("auto") == "offline"
    run_dir, rows = run(config, progress=False)
    logged = tracking.read_offline_run(run_dir)
    history = logged["history"]
    chunks = sorted({r["chunk"] for r in rows})
    assert [h["chunk"] for h in history] == chunks  # one record per chunk, in order
    for h, chunk in zip(history, chunks):
        chunk_rows = [r for r in rows if r["chunk"] == chunk]
        assert h["env_steps"] == min(r["t_env"] for r in chunk_rows)
        active = [r for r in chunk_rows if r["active"]]
        assert h["mean/test_return"] == pytest.approx(np.mean([r["test_return"] for r in active]))
        for r in active:
            assert h[f"seed{r['seed']}/test_return"] == pytest.approx(r["test_return"])
            assert h[f"seed{r['seed']}/epsilon"] == pytest.approx(r["epsilon"])
        assert h["mean/lr"] == pytest.approx(config.train.lr)
        for agent in (0, 1):
            shares = [v for k, v in h.items() if k.startswith(f"alpha/agent{agent}/share_")]
            assert len(shares) == config.agent.num_risk_levels and sum(shares) == pytest.approx(1.0)
    assert logged["config"]["method"] == "rmix"
    assert logged["config"]["train"]["t_max"] == 200


def test_wandb_failure_never_stops_training(tmp_path, monkeypatch, capsys):
    import wandb

    def refuse(*args, **kwargs):
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(wandb, "init", refuse)
    config = load_config(TINY + ["num_seeds=2", "train.t_max=120", "wandb.mode=online", f"results_dir={tmp_path}"])
    tracker = tracking.Tracker(config, tmp_path, [""])
    assert tracker.run is None and "wandb: not logging (ConnectionError" in capsys.readouterr().err
    tracker.log_chunk({}, 0)  # a no-op, not an error
    tracker.finish()


def test_run_devices_divide_the_runs():
    devices = list(range(4))
    assert experiment.run_devices(8, devices) == devices
    assert experiment.run_devices(6, devices) == [0, 1, 2]
    assert experiment.run_devices(5, devices) == [0]


def test_train_command_asks_for_cpu_devices(monkeypatch):
    from rmix_jax.train import use_cpu_devices

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv("RMIX_JAX_CPU_DEVICES", raising=False)
    use_cpu_devices()
    assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count={len(os.sched_getaffinity(0))}"
    monkeypatch.delenv("XLA_FLAGS")
    use_cpu_devices(5)
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=5"
    # Other flags are kept, and the count can be chosen.
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    monkeypatch.setenv("RMIX_JAX_CPU_DEVICES", "3")
    use_cpu_devices()
    assert os.environ["XLA_FLAGS"] == "--xla_backend_optimization_level=0 --xla_force_host_platform_device_count=3"
    # A count the user already set wins.
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    use_cpu_devices()
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4"
    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.setenv("RMIX_JAX_CPU_DEVICES", "two")
    with pytest.raises(ConfigError, match="RMIX_JAX_CPU_DEVICES='two': give a whole number"):
        use_cpu_devices()
