"""Configs compose, validate once, and fail with one clear line."""

import subprocess
import sys

import pytest

from rmix_jax.config import ConfigError, load_config


def test_methods_are_configurations():
    rmix = load_config(["method=rmix"])
    qmix = load_config(["method=qmix"])
    assert (rmix.agent.num_atoms, rmix.agent.risk_predictor, rmix.mixer.kind, rmix.train.use_qr) == (10, "straight_through", "qmix", True)
    assert (qmix.agent.num_atoms, qmix.agent.risk_predictor, qmix.mixer.kind, qmix.train.use_qr) == (1, "static", "qmix", False)
    assert load_config(["method=rdn"]).mixer.kind == "vdn"
    assert load_config(["method=iql"]).mixer.kind == "none"
    assert load_config(["method=rmix_frozen"]).agent.risk_predictor == "frozen"
    static = load_config(["method=rmix_static", "agent.alpha=0.3"])
    assert static.agent.alpha == 0.3 and static.agent.risk_predictor == "static"


def test_env_presets_and_overrides():
    c = load_config(["env=macn_12x4", "train.t_max=123", "num_seeds=2"])
    assert (c.env.width, c.env.height, c.train.t_max, c.num_seeds) == (12, 4, 123, 2)
    assert load_config(["env=macn_7x4_low_risk"]).env.cliff_reward == -50.0


@pytest.mark.parametrize(
    "override, words",
    [
        (["method=dqn"], ["method", "rmix"]),
        (["env=macn_9x9"], ["env", "macn_7x4"]),
        (["agent.alpha=0"], ["agent.alpha", "(0, 1]"]),
        (["agent.alpha=1.5"], ["agent.alpha", "(0, 1]"]),
        (["agent.num_atoms=0"], ["agent.num_atoms", "M >= 1"]),
        (["train.td_lambda=1.5"], ["train.td_lambda", "[0, 1]"]),
        (["num_seeds=-1"], ["num_seeds"]),
        (["agent.risk_predictor=learned"], ["agent.risk_predictor", "straight_through"]),
        (["agent.risk_scores=cosine"], ["agent.risk_scores", "standardized, paper"]),
        (["agent.risk_temperature=0"], ["agent.risk_temperature", "T > 0"]),
        (["train.bogus=1"], ["train.bogus", "unknown key"]),
        (["train.t_max=abc"], ["train.t_max", "whole number"]),
        (["nonsense"], ["key=value"]),
        (["env=smax", "train.time_windows=4"], ["train.time_windows", "train.pack_episodes"]),
    ],
)
def test_bad_values_give_one_line_naming_the_key(override, words):
    with pytest.raises(ConfigError) as err:
        load_config(override)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_corrupt_yaml_is_one_line(tmp_path):
    (tmp_path / "method").mkdir()
    (tmp_path / "env").mkdir()
    (tmp_path / "default.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([], config_dir=tmp_path)


def test_cli_prints_one_line_and_exits_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rmix_jax.train", "agent.alpha=1.5", f"results_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "agent.alpha" in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def test_risk_scores_default_and_older_saved_configs():
    from rmix_jax.config import config_from_dict

    assert load_config([]).agent.risk_scores == "standardized"
    assert load_config(["method=rmix_frozen"]).agent.risk_scores == "paper"  # the reference code's behaviour
    saved = load_config([]).to_dict()
    assert config_from_dict(saved).agent.risk_scores == "standardized"
    del saved["agent"]["risk_scores"]  # a run saved before the key existed trained with the paper's scores
    assert config_from_dict(saved).agent.risk_scores == "paper"
