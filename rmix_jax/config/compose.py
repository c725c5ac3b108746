"""Composing a config: ``configs/default.yaml``, then presets, then ``key=value`` overrides.

A config is ``configs/default.yaml`` merged with ``configs/env/<env>.yaml`` (the
environment and its training budget), that preset's ``maps.<env.map>`` section if
it has one (per-map values, e.g. M for SMAX 5m_vs_6m), ``configs/method/<method>.yaml``
(what defines the method wins, e.g. QMIX's single atom), and then command-line overrides
(``key=value``, dotted for nested keys). The result is validated (``schema.validate``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import yaml

from rmix_jax.config.schema import KEY_ALIASES, Config, _build, flatten, validate
from rmix_jax.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else "parse error"
        raise ConfigError(f"config error: {path} is not valid YAML ({first}); fix or restore the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config error: {path} must hold a mapping of keys; fix or restore the file")
    return data


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def preset_names(group: str, config_dir: Path | str = CONFIG_DIR) -> list[str]:
    """The presets of a group ("env" or "method"): the names of ``configs/<group>/*.yaml``."""
    return sorted(p.stem for p in (Path(config_dir) / group).glob("*.yaml"))


def _preset(group: str, name: str, config_dir: Path) -> dict[str, Any]:
    path = config_dir / group / f"{name}.yaml"
    if not path.is_file():
        known = preset_names(group, config_dir)
        raise ConfigError(f"config error: {group}={name!r} is unknown; choose one of {', '.join(known)}")
    return _read_yaml(path)


def _yaml11_number(value: str) -> Any:
    """YAML 1.1 reads 5e-05 or 1e30 (no dot) as a string; a number was meant (nan and inf stay strings)."""
    if value.strip().lower() in ("nan", "inf", "-inf", "infinity"):
        return value
    try:
        return float(value)
    except ValueError:
        return value


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"config error: override {text!r} is not key=value; write e.g. train.t_max=20000")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        raise ConfigError(f"config error: override {text!r} has a value YAML cannot read; quote or fix it") from None
    if isinstance(value, str) and raw.strip()[:1] not in ("'", '"'):  # a quoted value stays a string
        value = _yaml11_number(value)
    elif isinstance(value, list):  # a sweep list: [1e-3, 1e30]
        value = [_yaml11_number(v) if isinstance(v, str) else v for v in value]
    key = key.strip()
    key = KEY_ALIASES.get(key, key)
    return key.split("."), value


def load_config(overrides: Sequence[str] = (), config_dir: Path | str = CONFIG_DIR) -> Config:
    """Compose default + method preset + env preset + overrides; validate; return it."""
    config_dir = Path(config_dir)
    parsed = [_parse_override(o) for o in overrides]
    choices = {"method": "rmix", "env": "macn_7x4"}
    data = _read_yaml(config_dir / "default.yaml")
    choices.update({k: data.pop(k) for k in ("method", "env") if k in data and not isinstance(data[k], dict)})
    for path, value in parsed:
        if len(path) == 1 and path[0] in choices and not isinstance(value, dict):
            choices[path[0]] = str(value)
    env_preset = _preset("env", choices["env"], config_dir)
    per_map = env_preset.pop("maps", None) or {}
    data = _merge(data, env_preset)
    map_name = next((v for p, v in parsed if p == ["env", "map"]), data.get("env", {}).get("map"))
    if isinstance(per_map, dict) and map_name in per_map:
        data = _merge(data, per_map[map_name])
    # The method preset comes after the env: what defines a method (QMIX's single
    # atom, its static alpha) wins over per-map values such as M = 100.
    data = _merge(data, _preset("method", choices["method"], config_dir))
    data["method"] = choices["method"]
    data["env_preset"] = choices["env"]
    for path, value in parsed:
        if len(path) == 1 and path[0] in choices:
            continue
        cursor = data
        for part in path[:-1]:
            child = cursor.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"config error: {'.'.join(path)} is unknown; {part} is not a group of keys")
            cursor = child
        cursor[path[-1]] = value
    return validate(_build(Config, _normalise_sweep(data)))


def _normalise_sweep(data: dict[str, Any]) -> dict[str, Any]:
    """``sweep`` as written (nested or dotted) -> a flat {dotted key: list} in a copy of ``data``."""
    if "sweep" not in data or not isinstance(data["sweep"], dict):
        return data
    flat = flatten(data["sweep"])
    return {**data, "sweep": {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in flat.items()}}


def with_overrides(saved: Config, overrides: Sequence[str]) -> Config:
    """A saved config with more ``key=value`` overrides on top, validated.

    ``method=``/``env=`` among them pick other presets; a new environment preset
    replaces the saved env.* values (the preset's own apply), everything else is kept.
    """
    if not overrides:
        return saved
    values = flatten({k: v for k, v in saved.to_dict().items() if k not in ("method", "env_preset", "sweep")})
    choices = {"method": saved.method, "env": saved.env_preset}
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if key in choices:
            choices[key] = text.split("=", 1)[1]
    if choices["env"] != saved.env_preset:
        values = {k: v for k, v in values.items() if not k.startswith("env.")}
    kept = [f"{k}={json.dumps(v)}" for k, v in values.items()]
    if saved.sweep:
        kept.append(f"sweep={json.dumps(saved.sweep)}")
    return load_config([f"method={choices['method']}", f"env={choices['env']}", *kept,
                        *[o for o in overrides if o.split("=", 1)[0].strip() not in choices]])


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a config saved with ``Config.to_dict`` (validated)."""
    agent = data.get("agent")
    if isinstance(agent, dict) and "risk_scores" not in agent:
        # Runs saved before agent.risk_scores existed were trained with the paper's scores.
        data = {**data, "agent": {**agent, "risk_scores": "paper"}}
    return validate(_build(Config, _normalise_sweep(data)))
