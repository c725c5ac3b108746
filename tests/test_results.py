"""Run output: the CLI writes every promised file; helpers compute what the summary reports."""

import json

import jax
import numpy as np
import pytest
import yaml

from rmix_jax import results
from rmix_jax.config import config_from_dict, load_config
from rmix_jax.train import run

from conftest import TINY_RUN


def test_steps_to_reach_and_grid():
    xs, ys = np.array([10.0, 20.0, 30.0]), np.array([-56.0, -7.0, -9.0])
    assert results.steps_to_reach(xs, ys, -7.0) == 20.0
    assert results.steps_to_reach(xs, ys, -5.0) is None
    grid = results.on_grid({0: (xs, ys)}, np.array([5.0, 10.0, 25.0, 40.0]))
    np.testing.assert_array_equal(grid[0, 1:], [-56.0, -7.0, -9.0])
    assert np.isnan(grid[0, 0])


def test_optimal_return_only_when_deterministic():
    assert results.optimal_return(load_config([])) == -7.0
    assert results.optimal_return(load_config(["env=macn_12x4"])) == -12.0
    assert results.optimal_return(load_config(["env.slip_prob=0.1"])) is None


@pytest.mark.xdist_group("tiny_run")  # the program of conftest's TINY_RUN: compiled once on that worker
def test_run_writes_everything_and_never_overwrites(tmp_path):
    config = load_config(TINY_RUN + [f"results_dir={tmp_path}", "run_name=tiny", "checkpoint.every_chunks=0"])
    run_dir, rows = run(config, progress=False)
    assert run_dir == tmp_path / "tiny"
    for name in ("config.yaml", "metrics.jsonl", "learning_curve.png", "summary.json"):
        assert (run_dir / name).stat().st_size > 0
    assert config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text())) == config
    assert {r["seed"] for r in results.load_metrics(run_dir)} == {0, 1} and len(rows) >= 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [s["seed"] for s in summary["seeds"]] == [0, 1]
    params = results.load_params(run_dir)
    assert all(leaf.shape[0] == 2 for leaf in jax.tree.leaves(params))  # leading seed axis
    again, _ = run(config, progress=False)
    assert again == tmp_path / "tiny-1" and (run_dir / "summary.json").exists()
