"""rmix-eval: greedy episodes of saved policies, quantiles, saved alphas, GIF, compatible envs and errors."""

import json

import numpy as np
import pytest

from rmix_jax import results
from rmix_jax.evaluate import evaluate, main


@pytest.fixture(scope="module")
def finished(tiny_finished_run):
    return tiny_finished_run


def test_eval_reproduces_the_last_greedy_test_and_writes_everything(finished, tmp_path):
    run_dir, rows = finished
    report = evaluate(run_dir, episodes=4, gif=True, out=tmp_path / "out")
    assert len(report["runs"]) == 2
    for r in report["runs"]:
        # MACN is deterministic and the policy greedy: every episode returns the same, and that
        # is what the training run's last greedy test saw with the same final parameters.
        last = [row for row in rows if row["seed"] == r["seed"] and row["active"]][-1]
        assert r["return_std"] == 0.0 and r["return_mean"] == pytest.approx(last["test_return"])
        q = r["return_quantiles"]
        assert q["0.05"] <= q["0.5"] <= q["0.95"]
    saved = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert saved["runs"] == report["runs"]
    arrays = np.load(tmp_path / "out" / "alphas.npz")
    runs, episodes, steps, agents = arrays["alpha"].shape
    assert (runs, episodes, agents) == (2, 4, 2) and steps == 56
    filled = arrays["filled"]
    alphas = arrays["alpha"][filled]
    assert alphas.size and np.all((alphas > 0) & (alphas <= 1.0))
    np.testing.assert_allclose((arrays["reward"] * filled).sum(-1), arrays["returns"])
    gif = tmp_path / "out" / "episode.gif"
    assert gif.stat().st_size > 1000 and gif.read_bytes()[:6] in (b"GIF89a", b"GIF87a")


def test_eval_on_a_compatible_environment_and_from_a_checkpoint(finished, tmp_path):
    run_dir, _ = finished
    slippery = evaluate(run_dir, ["env.slip_prob=0.5"], episodes=8, out=tmp_path / "slip")
    assert slippery["eval_env"]["slip_prob"] == 0.5 and slippery["trained_env"]["slip_prob"] == 0.0
    # with moves replaced at random the returns of one policy now differ between episodes
    assert any(r["return_std"] > 0 for r in slippery["runs"])
    step_dir = sorted((run_dir / "checkpoints").iterdir(), key=lambda p: int(p.name))[-1]
    from_checkpoint = evaluate(step_dir, episodes=2, out=tmp_path / "ckpt")
    from_params = evaluate(run_dir, episodes=2, out=tmp_path / "params")
    assert from_checkpoint["checkpoint_step"] == int(step_dir.name)
    assert [r["return_mean"] for r in from_checkpoint["runs"]] == [r["return_mean"] for r in from_params["runs"]]


def test_eval_errors_are_one_line(finished, tmp_path, capsys):
    run_dir, _ = finished
    before = sorted(p for p in run_dir.rglob("*"))
    cases = [
        ([str(tmp_path / "missing")], "does not exist"),
        ([str(run_dir), "env=macn_12x4"], "same sizes"),
        ([str(run_dir), "train.lr=0.1"], "not an environment override"),
        ([str(run_dir), "episodes=0"], "episodes="),
        ([str(run_dir), "env.map=nope", "env=smax"], "env.map="),
    ]
    for args, message in cases:
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert sorted(p for p in run_dir.rglob("*")) == before
    assert results.load_metrics(run_dir)
