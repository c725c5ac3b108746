"""The SMAC bridge on the real StarCraft II: runs only where SC2PATH points at an installed game.

Needs ``pip install 'rmix_jax[smac]'``, the StarCraft II 4.10 Linux binary at
``$SC2PATH`` and the SMAC maps in ``$SC2PATH/Maps/SMAC_Maps`` (docs/starcraft.md, section
"StarCraft II (SMAC)"). Everywhere else it is skipped with that reason.
"""

import os
from pathlib import Path

import numpy as np
import pytest

SC2PATH = os.environ.get("SC2PATH", "")
pytestmark = pytest.mark.skipif(
    not (SC2PATH and (Path(SC2PATH) / "Versions").is_dir() and (Path(SC2PATH) / "Maps" / "SMAC_Maps" / "3m.SC2Map").is_file()),
    reason="needs StarCraft II: set SC2PATH to an installed game with Maps/SMAC_Maps (docs/starcraft.md, 'StarCraft II (SMAC)')",
)


def test_real_game_episode_training_and_replay(tmp_path, monkeypatch):
    pytest.importorskip("smac", reason="needs SMAC: pip install 'rmix_jax[smac]'")
    monkeypatch.delenv("RMIX_JAX_SMAC_ENV", raising=False)
    from rmix_jax.config import load_config
    from rmix_jax.envs.smac import SMACEnv
    from rmix_jax.evaluate import evaluate
    from rmix_jax.train import run

    env = SMACEnv("3m", seed=0)
    rng = np.random.default_rng(0)
    _, ts = env.reset()
    assert ts.obs.shape == (3, env.spec.obs_dim) and ts.avail[:, 1].all()
    for _ in range(env.spec.episode_limit):
        actions = [rng.choice(np.flatnonzero(row)) for row in ts.avail]
        _, ts = env.step(None, None, np.array(actions))
        if ts.terminated or ts.truncated:
            break
    assert ts.terminated or ts.truncated
    env.close()

    config = load_config(["env=smac", "env.map=3m", "train.t_max=300", "train.batch_size=2", "train.buffer_size=16",
                          "train.test_interval=300", "train.test_episodes=2", "wandb.mode=disabled",
                          f"results_dir={tmp_path}", "run_name=real"])
    run_dir, rows = run(config, progress=False)
    assert rows and np.isfinite(rows[-1]["test_return"])
    report = evaluate(run_dir, episodes=2, replay=True, out=tmp_path / "eval")
    assert report["mode"] == "native" and report["replays"]
