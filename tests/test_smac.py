"""The SMAC bridge against a fake StarCraft2Env with SMAC's API (tests/fake_smac.py).

Native training and evaluation, the SMAX-to-SMAC transfer adapter (observations
checked against JaxMARL's own, actions index by index), replays, and the one-line
errors. tests/test_smac_real.py runs the real game where SC2PATH has one.
"""

import os
import subprocess
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmix_jax import experiment, results
from rmix_jax.config import ConfigError, load_config
from rmix_jax.envs.smac import (
    ENV_HOOK,
    SMACEnv,
    SMACError,
    SMAXLayout,
    UnitTable,
    smac_to_smax_avail,
    smax_observation,
    smax_to_smac_actions,
    snap_to_direction,
)
from rmix_jax.envs.smax import SMAXAdapter

import fake_smac

TESTS = Path(__file__).resolve().parent
FAKE = "fake_smac:FakeStarCraft2Env"
# SMAC on the fake 3m: 2 seeds x 2 envs, a test every 150 steps, TD and QR updates.
NATIVE = ["env=smac", "env.map=3m", "num_seeds=2", "train.num_envs=2", "train.t_max=300", "train.batch_size=4",
          "train.buffer_size=32", "train.test_interval=150", "train.test_episodes=3", "agent.hidden_dim=16",
          "agent.num_atoms=5", "train.start_to_update_qr=0", "train.qr_interval=120", "wandb.mode=disabled"]


@pytest.fixture
def fake_sc2(monkeypatch):
    monkeypatch.setenv(ENV_HOOK, FAKE)
    fake_smac.FakeStarCraft2Env.instances.clear()
    return fake_smac.FakeStarCraft2Env


# --- native env ------------------------------------------------------------------------


def test_smac_env_spec_and_flags(fake_sc2, monkeypatch):
    env = SMACEnv("3m", seed=1)
    game = env.sc2
    info = game.get_env_info()
    assert set(info) == {"state_shape", "obs_shape", "n_actions", "n_agents", "episode_limit"}
    assert (env.spec.num_agents, env.spec.num_actions, env.spec.obs_dim, env.spec.state_dim) == (
        3, 9, info["obs_shape"], info["state_shape"])
    assert game.continuing_episode  # so that a time-limit end is flagged
    _, ts = env.reset()
    assert ts.obs.shape == (3, info["obs_shape"]) and ts.avail.shape == (3, 9)
    assert ts.avail[:, 0].sum() == 0 and ts.avail[:, 1].all()  # alive: no no-op, stop allowed

    # The time limit: a truncation (bootstrapped), not a terminal.
    monkeypatch.setattr(game, "episode_limit", 2)
    game._episode_count = 0
    env.reset()
    _, ts = env.step(None, None, np.ones(3, int))
    assert not ts.terminated and not ts.truncated
    _, ts = env.step(None, None, np.ones(3, int))
    assert ts.truncated and not ts.terminated and not ts.won

    # SMAC's lost-connection path returns (0, True, {}): a terminal without battle_won.
    game._episode_count = fake_sc2.drop_every - 1
    env.reset()
    env.step(None, None, np.ones(3, int))
    _, ts = env.step(None, None, np.ones(3, int))
    assert ts.terminated and not ts.truncated and not ts.won and ts.reward == 0

    # A won battle: every enemy dead.
    monkeypatch.setattr(game, "episode_limit", 60)
    game._episode_count = 0
    env.reset()
    for enemy in game.enemies.values():
        enemy.health = 6.0
        enemy.pos.x, enemy.pos.y = game.agents[0].pos.x + 1, game.agents[0].pos.y
    _, ts = env.step(None, None, np.array([6, 7, 8]))
    assert ts.terminated and ts.won and not ts.truncated and ts.reward > 0


@pytest.mark.slow
def test_native_training_runs_and_logs_finite_losses(fake_sc2, tmp_path):
    from rmix_jax.train import run

    config = load_config(NATIVE + [f"results_dir={tmp_path}", "run_name=native", "wandb.mode=offline"])
    run_dir, first = run(config, progress=False, stop_after=1)  # a checkpoint after chunk 1, then resume
    assert not (run_dir / "params").exists() and (run_dir / "checkpoints").is_dir()
    _, rows = run(config, progress=False, resume_dir=run_dir)
    assert rows[: len(first)] == first and len(rows) > len(first)
    assert any((run_dir / "wandb").glob("offline-run-*"))
    games = [g for g in fake_sc2.instances if g.launched]
    assert len(games) == 4  # 2 seeds x 2 envs, one game each (kept by the process's experiment)
    assert all(len(g.received) > 0 for g in games)  # every action was available (the fake asserts)
    assert any(r.get("dropped") for g in games for r in g.episode_results)  # info without battle_won happened
    td = [r["td_loss"] for r in rows if r["td_loss"] is not None]
    qr = [r["qr_loss"] for r in rows if r["qr_loss"] is not None]
    assert td and qr and np.all(np.isfinite(td)) and np.all(np.isfinite(qr))
    last = [r for r in rows if r["chunk"] == max(x["chunk"] for x in rows)]
    assert all(r["t_env"] >= 300 for r in last) and all(r["updates"] > 0 for r in last)
    assert all(np.isfinite(r["test_return"]) for r in rows)
    # Chunks end at the test interval: every run took >= 150 steps in the first one.
    assert all(r["t_env"] >= 150 for r in rows if r["chunk"] == 0)
    assert (run_dir / "params").is_dir() and (run_dir / "summary.json").is_file()
    assert (run_dir / "checkpoints").is_dir()

    # Native evaluation of that run, with replays of the evaluation games.
    from rmix_jax.evaluate import evaluate

    report = evaluate(run_dir, episodes=2, replay=True, out=tmp_path / "eval")
    assert report["mode"] == "native" and len(report["runs"]) == 2
    assert len(report["replays"]) == 2 and all(Path(p).is_file() for p in report["replays"])
    data = np.load(tmp_path / "eval" / "alphas.npz")
    assert data["actions"].shape[:2] == (2, 2)
    from rmix_jax.evaluate import EvalError

    with pytest.raises(EvalError, match="the policy has 3 agents, 9 actions.*SMAC map 5m_vs_6m has 5 agents, 12 actions"):
        evaluate(run_dir, ["env.map=5m_vs_6m"], episodes=1, out=tmp_path / "eval2")


# --- transfer: SMAX policies in SC2 -----------------------------------------------------


def _smax_state_table(adapter, state):
    """A JaxMARL SMAX state's units as the adapter's UnitTable."""
    inner = adapter.env._env
    s = jax.device_get(state.state)
    types = np.asarray(s.unit_types)
    return UnitTable(
        pos=np.asarray(s.unit_positions, np.float64),
        health=np.asarray(s.unit_health) / np.asarray(inner.unit_type_health)[types],
        alive=np.asarray(s.unit_alive), types=types,
        cooldown=np.clip(np.asarray(s.unit_weapon_cooldowns) / np.asarray(inner.unit_type_weapon_cooldowns)[types], 0, 1),
        prev_move=np.asarray(s.prev_movement_actions, np.float64), prev_attack=np.asarray(s.prev_attack_actions),
        map_size=np.array([inner.map_width, inner.map_height], np.float64),
    )


@pytest.mark.parametrize("map_name", ["3m", "2s3z"])  # marines; stalkers and zealots
def test_smax_observation_rebuilt_from_units_equals_jaxmarl(map_name):
    adapter = SMAXAdapter(map_name)
    layout = SMAXLayout.of(adapter)
    inner = adapter.env._env
    key = jax.random.PRNGKey(3)
    env_state, _ = adapter.reset(key)
    step = jax.jit(adapter.step)
    checked = 0
    for t in range(40):
        key, act_key, step_key = jax.random.split(key, 3)
        all_avail = inner.get_avail_actions(env_state.state)
        avail = jnp.stack([all_avail[a] for a in inner.agents[: layout.num_allies]])
        actions = jax.random.categorical(act_key, jnp.log(avail.astype(jnp.float32) + 1e-9))
        env_state, ts = step(step_key, env_state, actions)
        expected = inner.get_obs(env_state.state)
        expected = np.stack([np.asarray(expected[a]) for a in inner.agents[: layout.num_allies]])
        ours = smax_observation(_smax_state_table(adapter, env_state), layout)
        np.testing.assert_allclose(ours, expected, atol=1e-5, err_msg=f"{map_name} step {t}")
        checked += int(np.abs(expected).sum() > 0)
        if bool(ts.terminated | ts.truncated):
            break
    assert checked > 3


def test_action_and_availability_maps_index_by_index():
    m = 3
    smax_actions = np.array([0, 1, 2, 3, 4, 5, 6, 7])  # N E S W stop attack0..2
    alive = np.ones((8, 6 + m), int)
    alive[:, 0] = 0
    np.testing.assert_array_equal(smax_to_smac_actions(smax_actions, alive), [2, 4, 3, 5, 1, 6, 7, 8])
    dead = np.zeros((8, 6 + m), int)
    dead[:, 0] = 1
    np.testing.assert_array_equal(smax_to_smac_actions(smax_actions, dead), np.zeros(8))
    # SMAC availability (no-op, stop, N, S, E, W, attacks) -> SMAX's (N, E, S, W, stop, attacks).
    smac = np.array([[0, 1, 1, 0, 0, 1, 0, 1, 0],   # alive: stop, N, W, attack 1
                     [1, 0, 0, 0, 0, 0, 0, 0, 0]])  # dead
    np.testing.assert_array_equal(smac_to_smax_avail(smac), [[1, 0, 0, 1, 1, 0, 1, 0], [0, 0, 0, 0, 1, 0, 0, 0]])
    # A policy with the dead units' no-op (env.dead_noop) has it as its last action.
    np.testing.assert_array_equal(smac_to_smax_avail(smac, dead_noop=True),
                                  [[1, 0, 0, 1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0, 1]])
    # Enemy movement from displacement: N/E/S/W unit vectors, 0 below 0.1.
    np.testing.assert_array_equal(snap_to_direction(np.array([[0.0, 0.5], [-2.0, 0.3], [0.01, 0.0]])),
                                  [[0, 1], [-1, 0], [0, 0]])


def _smax_run(tmp_path, map_name="3m", extra=()):
    """A SMAX run directory holding freshly initialised policies (2 seeds)."""
    config = load_config(["env=smax", f"env.map={map_name}", "num_seeds=2", "agent.hidden_dim=16",
                          f"results_dir={tmp_path}", "run_name=smax", "wandb.mode=disabled", *extra])
    exp = experiment.make_experiment(config)
    state = experiment.init_state(exp)
    run_dir = tmp_path / "smax"
    run_dir.mkdir()
    results.write_config(run_dir, config)
    results.save_params(run_dir, experiment.to_host(state.params))
    return run_dir


@pytest.mark.parametrize("dead_noop", [False, True])
def test_transfer_evaluation_maps_every_action(fake_sc2, tmp_path, dead_noop):
    from rmix_jax.evaluate import evaluate

    run_dir = _smax_run(tmp_path, extra=[f"env.dead_noop={dead_noop}"])
    dead_action = 8 if dead_noop else 4  # the policy's no-op (its last action), else SMAX's stop
    report = evaluate(run_dir, ["env=smac"], episodes=3, out=tmp_path / "eval")
    assert report["mode"] == "transfer" and report["eval_env"]["map"] == "3m"
    data = np.load(tmp_path / "eval" / "alphas.npz")
    games = [g for g in fake_sc2.instances if g.launched]
    assert len(games) == 2
    mapped = {"move": 0, "stop": 0, "attack": 0, "noop": 0}
    for run, game in enumerate(games):
        filled = data["filled"][run].astype(bool)  # (episodes, T)
        smax_actions = data["actions"][run][filled]  # steps of every episode, in order
        sent = np.asarray(game.received)
        assert sent.shape == smax_actions.shape
        for smax_step, smac_step in zip(smax_actions, sent):
            for a, b in zip(smax_step, smac_step):
                if b == 0:
                    mapped["noop"] += 1  # a dead unit: SMAX's stop or the no-op becomes SMAC's no-op
                    assert a == dead_action
                elif a < 4:
                    mapped["move"] += 1
                    assert b == [2, 4, 3, 5][a]
                elif a == 4:
                    mapped["stop"] += 1
                    assert b == 1
                else:
                    mapped["attack"] += 1
                    assert b == a + 1 and a != 8
    assert mapped["noop"] > 0  # dead units occurred
    assert sum(mapped.values()) > 0


def test_transfer_refuses_a_map_with_other_units(fake_sc2, tmp_path):
    from rmix_jax.evaluate import EvalError, evaluate

    run_dir = _smax_run(tmp_path)
    with pytest.raises(EvalError, match="controls 3 agents with 8 SMAX actions; SMAC map 5m_vs_6m has 5 agents"):
        evaluate(run_dir, ["env=smac", "env.map=5m_vs_6m"], episodes=1, out=tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


# --- errors ----------------------------------------------------------------------------


def test_smac_not_installed_is_one_line(monkeypatch):
    monkeypatch.delenv(ENV_HOOK, raising=False)
    monkeypatch.setitem(sys.modules, "smac", None)  # import smac -> ImportError
    with pytest.raises(SMACError, match=r"SMAC is not installed; run pip install 'rmix_jax\[smac\]'"):
        SMACEnv("3m")


def test_old_sc2_protocol_buffers_name_the_fix(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_HOOK, raising=False)
    (tmp_path / "smac").mkdir()
    (tmp_path / "smac" / "__init__.py").write_text("")
    (tmp_path / "smac" / "env.py").write_text(  # what importing pysc2 raises under protobuf >= 4
        "raise TypeError('Descriptors cannot be created directly.\\nIf this call came from a _pb2.py file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("smac", "smac.env"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(SMACError, match="export PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python"):
        SMACEnv("3m")


def _fake_smac_package(monkeypatch):
    """A ``smac.env`` module whose StarCraft2Env is the fake: the bridge then runs SMAC's own checks."""
    package, module = types.ModuleType("smac"), types.ModuleType("smac.env")
    module.StarCraft2Env = fake_smac.FakeStarCraft2Env
    package.env = module
    monkeypatch.setitem(sys.modules, "smac", package)
    monkeypatch.setitem(sys.modules, "smac.env", module)
    monkeypatch.delenv(ENV_HOOK, raising=False)


def test_missing_game_and_map_are_one_line(monkeypatch, tmp_path):
    _fake_smac_package(monkeypatch)
    monkeypatch.setenv("SC2PATH", str(tmp_path / "nowhere"))
    with pytest.raises(SMACError, match="SC2PATH=.*nowhere does not exist; point SC2PATH"):
        SMACEnv("3m")
    monkeypatch.delenv("SC2PATH")
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(SMACError, match="SC2PATH is not set and ~/StarCraftII does not exist"):
        SMACEnv("3m")
    game = tmp_path / "StarCraftII"
    (game / "Maps" / "SMAC_Maps").mkdir(parents=True)
    monkeypatch.setenv("SC2PATH", str(game))
    with pytest.raises(SMACError, match=r"map file .*SMAC_Maps/3m.SC2Map is missing; unzip SMAC_Maps.zip"):
        SMACEnv("3m")
    (game / "Maps" / "SMAC_Maps" / "3m.SC2Map").write_text("map")
    assert SMACEnv("3m").spec.num_agents == 3  # everything in place: SMAC's class is built


def test_bad_smac_config_values_are_one_line():
    with pytest.raises(ConfigError, match="env.map='4m' is not allowed; unknown SMAC map; choose one of 3m, 8m"):
        load_config(["env=smac", "env.map=4m"])
    with pytest.raises(ConfigError, match="env.difficulty='11'"):
        load_config(["env=smac", "env.difficulty=11"])
    with pytest.raises(ConfigError, match="train.test_interval=100 .*only host-stepped envs"):
        load_config(["train.test_interval=100"])
    assert load_config(["env=smac", "env.difficulty=7"]).env.difficulty == "7"
    from rmix_jax.config import with_overrides  # a saved config's quoted "7" stays a string

    assert with_overrides(load_config(["env=smac"]), ["env.map=3m"]).env.difficulty == "7"


def test_cli_without_smac_prints_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in (ENV_HOOK, "TF_CPP_MIN_LOG_LEVEL")}  # the CLI's default
    env["PYTHONPATH"] = str(tmp_path)  # a "smac" that cannot be imported shadows any installed one
    (tmp_path / "smac.py").write_text("raise ImportError('no smac here')\n")
    proc = subprocess.run([sys.executable, "-m", "rmix_jax.train", "env=smac", f"results_dir={tmp_path}",
                           "wandb.mode=disabled"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "ubmoduled" not in line]
    assert lines == ["smac error: SMAC is not installed; run pip install 'rmix_jax[smac]' "
                     "(docs/starcraft.md, 'StarCraft II (SMAC)')"]
    assert not any(tmp_path.glob("rmix_*"))  # no run directory written
