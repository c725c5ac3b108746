"""Typed, frozen run configuration, composed from ``configs/`` and validated once.

``schema``: the dataclasses and their validation; ``compose``: presets and overrides
(``load_config``), saved configs (``config_from_dict``, ``with_overrides``).
"""

from rmix_jax.config.compose import CONFIG_DIR, config_from_dict, load_config, preset_names, with_overrides
from rmix_jax.config.schema import (
    ATOM_HEADS,
    ENV_NAMES,
    KEY_ALIASES,
    METHODS,
    MIXERS,
    RISK_PREDICTORS,
    RISK_SCORES,
    SWEEPABLE,
    WANDB_MODES,
    AgentConfig,
    CheckpointConfig,
    Config,
    EnvConfig,
    MixerConfig,
    TrainConfig,
    WandbConfig,
    flatten,
    validate,
)
from rmix_jax.errors import ConfigError

__all__ = [
    "ATOM_HEADS", "CONFIG_DIR", "ENV_NAMES", "KEY_ALIASES", "METHODS", "MIXERS", "RISK_PREDICTORS", "RISK_SCORES",
    "SWEEPABLE", "WANDB_MODES", "AgentConfig", "CheckpointConfig", "Config", "ConfigError",
    "EnvConfig", "MixerConfig", "TrainConfig", "WandbConfig", "config_from_dict", "flatten", "load_config",
    "preset_names", "validate", "with_overrides",
]
