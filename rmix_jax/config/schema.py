"""The run configuration's schema: typed, frozen dataclasses, their coercion and validation.

Any unknown key or bad value raises ``ConfigError`` whose message is one line naming
the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from rmix_jax.errors import ConfigError

METHODS = ("rmix", "rmix_static", "rmix_frozen", "qmix", "vdn", "iql", "rdn")
ENV_NAMES = ("macn", "smax", "smac")
RISK_PREDICTORS = ("straight_through", "frozen", "static")
RISK_SCORES = ("standardized", "paper")  # rmix_jax.networks.AgentNetwork explains both
ATOM_HEADS = ("free", "ascending")  # free atoms (the paper's) or ascending by construction (no sort)
WANDB_MODES = ("auto", "online", "offline", "disabled")
# Keys a sweep may vary: they are traced values in the learner (rmix_jax.learner.Hyper).
SWEEPABLE = ("agent.alpha", "train.lr", "train.qr_lr", "train.gamma", "train.td_lambda", "train.epsilon_finish",
             "train.epsilon_anneal_steps", "train.start_to_update_qr", "train.qr_interval",
             "train.target_update_interval")
MIXERS = ("qmix", "vdn", "none")
NONFINITE_ACTIONS = ("stop", "freeze")  # train.on_nonfinite


KEY_ALIASES = {"seeds": "num_seeds"}


@dataclass(frozen=True)
class EnvConfig:
    name: str = "macn"
    width: int = 7
    height: int = 4
    cliff_reward: float = -100.0
    slip_prob: float = 0.0
    reward_noise_std: float = 0.0
    reward_scale: float = 1.0
    map: str = "3m"  # SMAX scenario or SMAC map (SMAC map names); unused by MACN
    difficulty: str = "7"  # SMAC's built-in AI level; unused elsewhere
    dead_noop: bool = False  # SMAX: a no-op action only dead units have (SMAC's), instead of stop


@dataclass(frozen=True)
class AgentConfig:
    hidden_dim: int = 64
    num_atoms: int = 10
    num_risk_levels: int = 10
    risk_embed_dim: int = 0  # 0: the number of agents, as the reference does
    risk_predictor: str = "straight_through"
    risk_scores: str = "standardized"  # the predictor's scores: standardized atoms, or the paper's raw ones
    risk_temperature: float = 3.0  # standardized scores lie in [-T, T]
    atom_head: str = "free"  # free atoms (the paper's), or "ascending": sorted by construction, CVaR without a sort
    alpha: float = 1.0  # used when risk_predictor is static


@dataclass(frozen=True)
class MixerConfig:
    kind: str = "qmix"
    embed_dim: int = 32
    hypernet_hidden: int = 64


@dataclass(frozen=True)
class TrainConfig:
    t_max: int = 50_000  # env steps per seed
    num_envs: int = 8  # episodes collected per iteration
    updates_per_iteration: int = 1
    time_windows: int = 1  # an update's loss runs over the shortest of this many time windows that fits its batch
    # Or: the update's loss runs on the sampled episodes laid end to end in the fewest of B/8, B/4, 3B/8,
    # B/2 or B rows of the episode limit that holds them (B the batch size; replaces time_windows).
    pack_episodes: bool = False
    buffer_size: int = 5000  # episodes
    batch_size: int = 32  # episodes
    gamma: float = 0.99
    td_lambda: float = 0.0  # 0: the paper's one-step TD target; > 0: TD(lambda) on C_tot (pymarl2, JaxMARL)
    lr: float = 5e-4
    use_qr: bool = True
    qr_lr: float = 5e-5
    qr_eps: float = 3.125e-4
    qr_interval: int = 1000  # env steps between QR updates
    start_to_update_qr: int = 100_000  # env steps
    grad_clip: float = 10.0
    target_update_interval: int = 200  # gradient updates between hard target copies
    epsilon_start: float = 1.0
    epsilon_finish: float = 0.05
    epsilon_anneal_steps: int = 50_000
    iterations_per_eval: int = 10
    test_interval: int = 0  # env steps between tests for host-stepped envs (SMAC); 0: every iterations_per_eval
    test_episodes: int = 8
    # A run whose loss, gradient norm or parameters turn non-finite: "stop" the whole program with an
    # error (the last good checkpoint is kept), or "freeze" that run at its last finite state and go on.
    on_nonfinite: str = "stop"


@dataclass(frozen=True)
class CheckpointConfig:
    every_chunks: int = 25  # save the whole training state every this many chunks (0: only at the end)
    max_to_keep: int = 2


@dataclass(frozen=True)
class WandbConfig:
    mode: str = "auto"  # auto: online with WANDB_API_KEY set, else offline; or online, offline, disabled
    project: str = "rmix_jax"
    entity: str = ""
    group: str = ""  # empty: the run name
    per_seed: bool = True  # also log every seed's series (seed<i>/...), not only mean/min/max


@dataclass(frozen=True)
class Config:
    method: str = "rmix"
    env_preset: str = "macn_7x4"
    seed: int = 0
    num_seeds: int = 8
    run_name: str = ""
    results_dir: str = "results"
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    mixer: MixerConfig = field(default_factory=MixerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    # Dotted key -> values; the grid (every combination) times num_seeds runs as one program.
    sweep: dict = field(default_factory=dict)

    @property
    def uses_risk_predictor(self) -> bool:
        return self.agent.risk_predictor != "static"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def sweep_points(self) -> list[dict[str, Any]]:
        """Every combination of the sweep's values (one empty point without a sweep), keys in sweep order."""
        points: list[dict[str, Any]] = [{}]
        for key, values in self.sweep.items():
            points = [{**p, key: v} for p in points for v in values]
        return points

    def at_point(self, point: dict[str, Any]) -> "Config":
        """This config with one sweep point's values written in (a learned alpha keeps the method's)."""
        changes: dict[str, dict[str, Any]] = {}
        for key, value in point.items():
            group, name = key.split(".")
            if value == "learned":
                continue
            changes.setdefault(group, {})[name] = value
        groups = {g: dataclasses.replace(getattr(self, g), **v) for g, v in changes.items()}
        return dataclasses.replace(self, **groups)


# --- building ---------------------------------------------------------------------


def _fail(key: str, value: Any, allowed: str) -> typing.NoReturn:
    raise ConfigError(f"config error: {key}={value!r} is not allowed; {allowed}")


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        _fail(key, value, "use true or false")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        _fail(key, value, "use a whole number")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        _fail(key, value, "use a finite number")
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):  # env.difficulty=7
            return str(value)
        _fail(key, value, "use a string")
    if annotation is dict:
        if isinstance(value, dict):
            return value
        _fail(key, value, "expected a mapping, e.g. sweep.agent.alpha=[0.1,0.5]")
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported annotation {annotation}")
    return value


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            _fail(dotted, value, f"unknown key; known keys here: {', '.join(sorted(names))}")
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                _fail(dotted, value, "expected a mapping of sub-keys")
            kwargs[key] = _build(annotation, value, prefix=f"{dotted}.")
        else:
            kwargs[key] = _coerce(dotted, value, annotation)
    return cls(**kwargs)


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        _fail(key, value, allowed)


def validate(config: Config) -> Config:
    """Check every value once; return the config unchanged or raise ConfigError."""
    c, e, a, m, t = config, config.env, config.agent, config.mixer, config.train
    _check(c.method in METHODS, "method", c.method, f"choose one of {', '.join(METHODS)}")
    _check(c.seed >= 0, "seed", c.seed, "use a seed >= 0")
    _check(c.num_seeds >= 1, "num_seeds", c.num_seeds, "use num_seeds >= 1")
    _check(e.name in ENV_NAMES, "env.name", e.name, f"choose one of {', '.join(ENV_NAMES)}")
    if e.name == "smax":
        from rmix_jax.envs.smax import map_names

        names = map_names()
        _check(e.map in names, "env.map", e.map, f"unknown SMAX map; choose one of {', '.join(names)}")
    if e.name == "smac":
        from rmix_jax.envs.smac_maps import SMAC_DIFFICULTIES, SMAC_MAPS  # lazily: the envs package imports jax

        _check(e.map in SMAC_MAPS, "env.map", e.map, f"unknown SMAC map; choose one of {', '.join(SMAC_MAPS)}")
        _check(str(e.difficulty) in SMAC_DIFFICULTIES, "env.difficulty", e.difficulty,
               f"choose one of {', '.join(SMAC_DIFFICULTIES)} (SMAC's 7 is very hard)")
        _check(e.reward_noise_std == 0, "env.reward_noise_std", e.reward_noise_std,
               "the reward-noise wrapper is for jittable envs; use 0 on SMAC")
    _check(e.width >= 3, "env.width", e.width, "MACN needs width >= 3")
    _check(e.height >= 2, "env.height", e.height, "MACN needs height >= 2")
    _check(0.0 <= e.slip_prob <= 1.0, "env.slip_prob", e.slip_prob, "use a probability in [0, 1]")
    _check(e.reward_noise_std >= 0.0, "env.reward_noise_std", e.reward_noise_std, "use a value >= 0")
    _check(a.num_atoms >= 1, "agent.num_atoms", a.num_atoms, "use M >= 1 atoms")
    _check(a.num_risk_levels >= 1, "agent.num_risk_levels", a.num_risk_levels, "use K >= 1")
    _check(a.hidden_dim >= 1, "agent.hidden_dim", a.hidden_dim, "use a size >= 1")
    _check(a.risk_embed_dim >= 0, "agent.risk_embed_dim", a.risk_embed_dim, "use >= 0 (0 means the number of agents)")
    _check(
        a.risk_predictor in RISK_PREDICTORS,
        "agent.risk_predictor",
        a.risk_predictor,
        f"choose one of {', '.join(RISK_PREDICTORS)}",
    )
    _check(a.risk_temperature > 0, "agent.risk_temperature", a.risk_temperature, "use T > 0 (default 3)")
    _check(a.risk_scores in RISK_SCORES, "agent.risk_scores", a.risk_scores, f"choose one of {', '.join(RISK_SCORES)}")
    _check(a.atom_head in ATOM_HEADS, "agent.atom_head", a.atom_head, f"choose one of {', '.join(ATOM_HEADS)}")
    _check(0.0 < a.alpha <= 1.0, "agent.alpha", a.alpha, "alpha must lie in (0, 1]")
    _check(m.kind in MIXERS, "mixer.kind", m.kind, f"choose one of {', '.join(MIXERS)}")
    ck, wb = config.checkpoint, config.wandb
    _check(ck.every_chunks >= 0, "checkpoint.every_chunks", ck.every_chunks, "use >= 0 (0 saves only at the end)")
    _check(ck.max_to_keep >= 1, "checkpoint.max_to_keep", ck.max_to_keep, "use >= 1")
    _check(wb.mode in WANDB_MODES, "wandb.mode", wb.mode, f"choose one of {', '.join(WANDB_MODES)}")
    _validate_sweep(config)
    for name in ("t_max", "num_envs", "updates_per_iteration", "buffer_size", "batch_size",
                 "qr_interval", "target_update_interval", "iterations_per_eval", "test_episodes",
                 "epsilon_anneal_steps", "time_windows"):
        value = getattr(t, name)
        _check(value >= 1, f"train.{name}", value, "use a whole number >= 1")
    _check(not (t.pack_episodes and t.time_windows > 1), "train.time_windows", t.time_windows,
           "train.pack_episodes=true replaces time windows: set train.time_windows=1 (or train.pack_episodes=false)")
    _check(t.on_nonfinite in NONFINITE_ACTIONS, "train.on_nonfinite", t.on_nonfinite,
           f"choose one of {', '.join(NONFINITE_ACTIONS)}")
    _check(t.test_interval >= 0, "train.test_interval", t.test_interval, "use >= 0 (0 tests every iterations_per_eval)")
    _check(t.test_interval == 0 or e.name == "smac", "train.test_interval", t.test_interval,
           "only host-stepped envs (env=smac) use it; jitted envs test every train.iterations_per_eval iterations")
    _check(t.start_to_update_qr >= 0, "train.start_to_update_qr", t.start_to_update_qr, "use >= 0")
    _check(t.batch_size <= t.buffer_size, "train.batch_size", t.batch_size, f"use at most train.buffer_size={t.buffer_size}")
    _check(t.num_envs <= t.buffer_size, "train.num_envs", t.num_envs, f"use at most train.buffer_size={t.buffer_size}")
    _check(0.0 <= t.gamma <= 1.0, "train.gamma", t.gamma, "use gamma in [0, 1]")
    _check(0.0 <= t.td_lambda <= 1.0, "train.td_lambda", t.td_lambda,
           "use lambda in [0, 1] (0: the paper's one-step target)")
    for name in ("lr", "qr_lr"):  # 0 freezes learning: a control point in a sweep
        value = getattr(t, name)
        _check(value >= 0, f"train.{name}", value, "use a learning rate >= 0")
    for name in ("qr_eps", "grad_clip"):
        value = getattr(t, name)
        _check(value > 0, f"train.{name}", value, "use a value > 0")
    for name in ("epsilon_start", "epsilon_finish"):
        value = getattr(t, name)
        _check(0.0 <= value <= 1.0, f"train.{name}", value, "use a probability in [0, 1]")
    return config


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _validate_sweep(config: Config) -> None:
    """Sweep keys must be traced hyperparameters; values are non-empty lists of valid values."""
    for key, values in config.sweep.items():
        name = f"sweep.{key}"
        _check(key in SWEEPABLE, name, values, f"not sweepable; sweep one of {', '.join(SWEEPABLE)}")
        _check(isinstance(values, list) and len(values) > 0, name, values, "use a non-empty list, e.g. [0.1,0.5]")
        for value in values:
            if key == "agent.alpha" and value == "learned":
                _check(config.method in ("rmix", "rmix_static"), name, value,
                       "'learned' alpha mixes static and learned RMIX: use method=rmix_static or rmix")
                continue
            _check(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                   name, value, "use numbers" + (" or learned" if key == "agent.alpha" else ""))
            group, field = key.split(".")  # the key's own type: step counts take whole numbers
            _coerce(name, value, typing.get_type_hints(type(getattr(config, group)))[field])
            try:
                validate(dataclasses.replace(config.at_point({key: value}), sweep={}))
            except ConfigError as err:
                raise ConfigError(f"{err} (in sweep.{key})") from None
    if "agent.alpha" in config.sweep and config.agent.risk_predictor != "static":
        numeric = [v for v in config.sweep["agent.alpha"] if v != "learned"]
        _check(not numeric, "sweep.agent.alpha", config.sweep["agent.alpha"],
               "a numeric alpha needs a static-alpha method: use method=rmix_static")
