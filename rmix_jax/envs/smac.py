"""The SMAC bridge: StarCraft II through SMAC's ``StarCraft2Env``, stepped from the host.

Two ways in (docs/starcraft.md):

- **Native** (``SMACEnv``): SMAC's own observations, state, actions and reward; the
  learner trains on them through ``rmix_jax.host.HostRunner`` (``rmix-train env=smac``).
  SMAC is built with ``continuing_episode=True`` so that a time-limit end is reported
  (``info["episode_limit"]``) and bootstrapped as a truncation, like every other env
  here; ``info`` may lack ``battle_won`` (after a lost SC2 connection): read as a loss.
- **Transfer** (``SMAXTransferEnv``): a policy trained on SMAX plays SC2. Each step the
  SMAX observation (JaxMARL's ``unit_list`` layout and normalisation) is recomputed from
  SMAC's unit data, the policy's SMAX action is mapped to SMAC's index (dead units take
  SMAC's no-op), and the policy is masked by SMAC's available actions in SMAX terms.

SMAC is not on PyPI and never imported by the core package: only building one of these
envs imports it (``pip install 'rmix_jax[smac]'``, the game at ``$SC2PATH``; docs/starcraft.md).
``RMIX_JAX_SMAC_ENV=module:Class`` substitutes any class with SMAC's API (a SMACv2
build, or the tests' fake game); the game-installation checks apply to SMAC's own class.

Shape legend: N allies (agents), m enemies, U = N + m units, A actions.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rmix_jax.envs.base import EnvSpec, TimeStep
from rmix_jax.envs.smac_maps import SMAC_MAPS
from rmix_jax.envs.smax_actions import SMAXActions
from rmix_jax.errors import ConfigError

ENV_HOOK = "RMIX_JAX_SMAC_ENV"

# SMAX action indices (rmix_jax.envs.smax_actions): 0 N, 1 E, 2 S, 3 W, 4 stop, 5 + j attack enemy j.
# SMAC action indices: 0 no-op (dead units only), 1 stop, 2 N, 3 S, 4 E, 5 W, 6 + j attack enemy j.
SMAX_TO_SMAC_MOVE = np.array([2, 4, 3, 5, 1])  # SMAC's index of each SMAX move and stop
SMAX_STOP, SMAX_FIRST_ATTACK, SMAC_NOOP = SMAXActions.stop, SMAXActions.first_attack, 0
SMAX_MOVE_VECTORS = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, -1.0], [-1.0, 0.0]])
# SMAC's weapon-cooldown divisors (StarCraft2Env.unit_max_cooldown, game loops) by SMAX type:
# marine, marauder, stalker, zealot, zergling, hydralisk.
SMAC_MAX_COOLDOWN = np.array([15.0, 25.0, 35.0, 22.0, 11.0, 10.0])


class SMACError(ConfigError):
    """SMAC cannot run as asked (not installed, no game, no map, a policy that does not fit);
    the message is one line naming the fix. A ``ConfigError``, so the CLIs print it alone."""


# --- finding SMAC and the game -------------------------------------------------------


def starcraft2env_class() -> tuple[type, bool]:
    """(the StarCraft2Env class to use, whether it is SMAC's own)."""
    hook = os.environ.get(ENV_HOOK, "")
    if hook:
        module_name, _, attr = hook.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr or "StarCraft2Env"), False
        except (ImportError, AttributeError) as err:
            raise SMACError(f"smac error: {ENV_HOOK}={hook!r} cannot be loaded ({err}); "
                            "set it to module:Class of an importable StarCraft2Env-like class") from None
    try:
        from smac.env import StarCraft2Env
    except ImportError:
        raise SMACError("smac error: SMAC is not installed; run pip install 'rmix_jax[smac]' "
                        "(docs/starcraft.md, 'StarCraft II (SMAC)')") from None
    except TypeError as err:  # s2clientprotocol's generated code under protobuf >= 4 (what jax/wandb/orbax use)
        if "Descriptors cannot be created directly" not in str(err):
            raise
        raise SMACError("smac error: SC2's protocol buffers are too old for the installed protobuf; "
                        "export PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python and run again") from None
    return StarCraft2Env, True


def check_game(map_name: str) -> Path:
    """The StarCraft II folder, checked to hold the SMAC map; else a one-line SMACError."""
    given = os.environ.get("SC2PATH", "")
    root = Path(given or "~/StarCraftII").expanduser()
    if not given and not root.is_dir():
        raise SMACError("smac error: SC2PATH is not set and ~/StarCraftII does not exist; install StarCraft II "
                        "4.10 and export SC2PATH=<its folder> (docs/starcraft.md, 'StarCraft II (SMAC)')")
    if not root.is_dir():
        raise SMACError(f"smac error: SC2PATH={given} does not exist; point SC2PATH at the StarCraft II folder")
    map_file = root / "Maps" / "SMAC_Maps" / f"{map_name}.SC2Map"
    if not map_file.is_file():
        raise SMACError(f"smac error: map file {map_file} is missing; unzip SMAC_Maps.zip into {root / 'Maps'}")
    return root


def check_map(map_name: str) -> None:
    if map_name not in SMAC_MAPS:
        raise SMACError(f"smac error: unknown SMAC map {map_name!r}; choose one of {', '.join(SMAC_MAPS)}")


def make_starcraft2env(map_name: str, **kwargs: Any) -> Any:
    check_map(map_name)
    cls, is_smac = starcraft2env_class()
    if is_smac:
        check_game(map_name)
    return cls(map_name=map_name, continuing_episode=True, **kwargs)


# --- native -----------------------------------------------------------------------------


class SMACEnv:
    """``ArrayEnv``-shaped host env over one ``StarCraft2Env`` (keys and env state unused).

    SC2 launches at the first ``reset``; ``spec`` comes from ``get_env_info`` without it.
    """

    jittable = False

    def __init__(self, map_name: str, difficulty: str = "7", seed: int | None = None,
                 reward_scale: float = 1.0, replay_dir: str = "", **smac_kwargs: Any) -> None:
        self.map_name = map_name
        self.reward_scale = float(reward_scale)
        self.sc2 = make_starcraft2env(map_name, difficulty=str(difficulty), seed=seed,
                                      replay_dir=replay_dir, **smac_kwargs)
        info = self.sc2.get_env_info()
        self.spec = EnvSpec(
            num_agents=int(info["n_agents"]), num_actions=int(info["n_actions"]),
            obs_dim=int(info["obs_shape"]), state_dim=int(info["state_shape"]),
            episode_limit=int(info["episode_limit"]),
        )

    def reset(self, key: Any = None) -> tuple[None, TimeStep]:
        self.sc2.reset()
        return None, self._timestep(0.0, False, False, False)

    def step(self, key: Any, env_state: Any, actions: Any) -> tuple[None, TimeStep]:
        reward, terminated, info = self.sc2.step([int(a) for a in np.asarray(actions)])
        truncated = bool(terminated) and bool(info.get("episode_limit", False))
        won = bool(info.get("battle_won", False))
        return None, self._timestep(reward, bool(terminated) and not truncated, truncated, won)

    def _timestep(self, reward: float, terminated: bool, truncated: bool, won: bool) -> TimeStep:
        return TimeStep(
            obs=np.asarray(self.sc2.get_obs(), np.float32).reshape(self.spec.num_agents, self.spec.obs_dim),
            state=np.asarray(self.sc2.get_state(), np.float32).reshape(self.spec.state_dim),
            avail=np.asarray(self.sc2.get_avail_actions(), np.int32).reshape(self.spec.num_agents, -1),
            reward=np.float32(reward * self.reward_scale),
            terminated=np.bool_(terminated), truncated=np.bool_(truncated), won=np.bool_(won),
        )

    def save_replay(self) -> None:
        self.sc2.save_replay()

    def close(self) -> None:
        self.sc2.close()


# --- transfer: SMAX observations from SMAC's units -----------------------------------


@dataclass(frozen=True)
class SMAXLayout:
    """What JaxMARL's SMAX observation of one scenario depends on (from its env object)."""

    num_allies: int
    num_enemies: int
    unit_types: np.ndarray  # (U,) the scenario's SMAX unit types
    type_health: np.ndarray  # (6,) max health (+ shield) per SMAX type
    sight_range: np.ndarray  # (6,)
    num_ally_actions: int
    num_enemy_actions: int
    obs_dim: int
    state_dim: int
    dead_noop: bool = False  # the policy has SMAC's no-op for dead units as its last action

    @classmethod
    def of(cls, adapter: Any) -> "SMAXLayout":
        """From a ``rmix_jax.envs.smax.SMAXAdapter``."""
        inner = adapter.env._env
        return cls(
            num_allies=inner.num_allies, num_enemies=inner.num_enemies,
            unit_types=np.asarray(adapter.scenario_unit_types, np.int64),
            type_health=np.asarray(inner.unit_type_health, np.float64),
            sight_range=np.asarray(inner.unit_type_sight_ranges, np.float64),
            num_ally_actions=int(inner.num_ally_actions), num_enemy_actions=int(inner.num_enemy_actions),
            obs_dim=adapter.spec.obs_dim, state_dim=adapter.spec.state_dim, dead_noop=adapter.dead_noop,
        )


@dataclass
class UnitTable:
    """Every unit's SMAX-relevant data, allies first: (U, ...) arrays."""

    pos: np.ndarray  # (U, 2) map coordinates
    health: np.ndarray  # (U,) fraction of max (health + shield)
    alive: np.ndarray  # (U,) bool
    types: np.ndarray  # (U,) SMAX type index
    cooldown: np.ndarray  # (U,) weapon cooldown as a fraction of the type's longest, in [0, 1]
    prev_move: np.ndarray  # (U, 2) last movement direction (unit vector, 0 when not moving)
    prev_attack: np.ndarray  # (U,) last SMAX action index if it was an attack, else 0
    map_size: np.ndarray  # (2,) width and height positions are normalised by


def smax_observation(table: UnitTable, layout: SMAXLayout) -> np.ndarray:
    """(N, O) JaxMARL SMAX ``unit_list`` observations of the allies (SmaxEnv.get_obs_unit_list).

    Per other unit j (the other allies in order, then the enemies), zero unless both
    are alive and j is within i's sight range: [health, dx / sight, dy / sight,
    last move x, y, last attack / (A_j - 1), cooldown, type one-hot]; then i's own
    [health, x / width, y / height, cooldown, type one-hot] (zero when dead).
    """
    num_units = layout.num_allies + layout.num_enemies
    num_types = len(layout.type_health)
    other, own = 7 + num_types, 4 + num_types
    obs = np.zeros((layout.num_allies, (num_units - 1) * other + own), np.float64)
    for i in range(layout.num_allies):
        sight = layout.sight_range[table.types[i]]
        others = [j for j in range(num_units) if j != i]
        for slot, j in enumerate(others):
            rel = table.pos[j] - table.pos[i]
            if not (table.alive[i] and table.alive[j]) or np.linalg.norm(rel) >= sight:
                continue
            max_action = layout.num_ally_actions - 1 if j < layout.num_allies else layout.num_enemy_actions - 1
            f = obs[i, slot * other:(slot + 1) * other]
            f[0] = table.health[j]
            f[1:3] = rel / sight
            f[3:5] = table.prev_move[j]
            f[5] = table.prev_attack[j] / max_action
            f[6] = table.cooldown[j]
            f[7 + table.types[j]] = 1.0
        if table.alive[i]:
            f = obs[i, (num_units - 1) * other:]
            f[0] = table.health[i]
            f[1:3] = table.pos[i] / table.map_size
            f[3] = table.cooldown[i]
            f[4 + table.types[i]] = 1.0
    return obs.astype(np.float32)


def smax_state(table: UnitTable, layout: SMAXLayout) -> np.ndarray:
    """(U * F,) the normalised SMAX global state of ``SMAXAdapter.global_state`` (zero for dead units).

    Cooldowns here are fractions (SMAC reports game loops, SMAX seconds); the mixer is
    not used when acting, so this only fills the episode record.
    """
    num_types = len(layout.type_health)
    units = np.zeros((len(table.types), 4 + num_types), np.float64)
    for u in np.flatnonzero(table.alive):
        units[u, 0] = table.health[u]
        units[u, 1:3] = table.pos[u] / table.map_size
        units[u, 3] = table.cooldown[u]
        units[u, 4 + table.types[u]] = 1.0
    return units.reshape(-1).astype(np.float32)


def smax_type(unit: Any, type_health: np.ndarray) -> int:
    """A SC2 unit's SMAX type, by its max health plus max shield (SMAX's per-type health)."""
    total = float(unit.health_max) + float(getattr(unit, "shield_max", 0.0))
    match = np.flatnonzero(np.abs(type_health - total) < 0.5)
    if len(match) == 0:
        raise SMACError(f"smac error: a unit with {total:g} max health + shield (type {unit.unit_type}) has no SMAX "
                        "counterpart; transfer works on maps of marines, marauders, stalkers, zealots, zerglings, hydralisks")
    return int(match[0])


def smax_to_smac_actions(actions: np.ndarray, smac_avail: np.ndarray) -> np.ndarray:
    """SMAX action indices (N,) -> SMAC's; a dead unit (only no-op available) takes no-op."""
    actions = np.asarray(actions, np.int64)
    mapped = np.where(actions < 5, SMAX_TO_SMAC_MOVE[np.minimum(actions, 4)], actions + 1)
    dead = (smac_avail[:, SMAC_NOOP] > 0) & (smac_avail[:, 1:].sum(axis=1) == 0)
    return np.where(dead, SMAC_NOOP, mapped)


def smac_to_smax_avail(smac_avail: np.ndarray, dead_noop: bool = False) -> np.ndarray:
    """SMAC's (N, 6 + m) availability -> SMAX's (N, 5 + m); dead units may only stop (as in SMAX).

    With ``dead_noop`` (N, 6 + m): the adapter's extra last action, a dead unit's only one."""
    smac_avail = np.asarray(smac_avail, np.int32)
    parts = [smac_avail[:, SMAX_TO_SMAC_MOVE], smac_avail[:, 6:]]
    if dead_noop:
        parts.append(np.zeros((len(smac_avail), 1), np.int32))
    avail = np.concatenate(parts, axis=1)
    dead = (smac_avail[:, SMAC_NOOP] > 0) & (smac_avail[:, 1:].sum(axis=1) == 0)
    avail[dead] = 0
    avail[dead, -1 if dead_noop else SMAX_STOP] = 1
    return avail


def smax_move_vector(actions: np.ndarray) -> np.ndarray:
    """(N,) SMAX actions -> (N, 2) movement directions as SMAX records them (0 for stop and attacks)."""
    actions = np.asarray(actions)
    vectors = np.zeros((len(actions), 2))
    moving = actions < 4
    vectors[moving] = SMAX_MOVE_VECTORS[actions[moving]]
    return vectors


def snap_to_direction(delta: np.ndarray, min_step: float = 0.1) -> np.ndarray:
    """(U, 2) displacements -> the nearest of N/E/S/W as a unit vector, 0 if under ``min_step``."""
    out = np.zeros_like(delta, dtype=np.float64)
    moved = np.linalg.norm(delta, axis=1) >= min_step
    best = np.argmax(delta @ SMAX_MOVE_VECTORS.T, axis=1)
    out[moved] = SMAX_MOVE_VECTORS[best[moved]]
    return out


class SMAXTransferEnv:
    """A SMAX-trained policy's view of SC2: SMAX observations and actions over a ``SMACEnv``.

    Enemy last actions are not in SC2's raw data: their movement is estimated from the
    change in position (snapped to N/E/S/W), their last attack is 0. Relative positions
    are in map units in both games; a unit's own position is divided by SMAC's map
    size (``map_x``, ``map_y``), as SMAX divides by its 32 x 32 map.
    """

    jittable = False

    def __init__(self, smac: SMACEnv, layout: SMAXLayout) -> None:
        self.smac = smac
        self.layout = layout
        sc2_spec = smac.spec
        smax_actions = layout.num_ally_actions
        if sc2_spec.num_agents != layout.num_allies or sc2_spec.num_actions != smax_actions + 1:
            raise SMACError(
                f"smac error: the policy controls {layout.num_allies} agents with {smax_actions} SMAX actions; "
                f"SMAC map {smac.map_name} has {sc2_spec.num_agents} agents with {sc2_spec.num_actions} SMAC actions "
                f"({sc2_spec.num_actions - 1} in SMAX terms); pick a map with the same units"
            )
        self.spec = EnvSpec(num_agents=layout.num_allies, num_actions=smax_actions + int(layout.dead_noop),
                            obs_dim=layout.obs_dim, state_dim=layout.state_dim,
                            episode_limit=sc2_spec.episode_limit)
        self._prev_pos: np.ndarray | None = None
        self._last_actions = np.full(layout.num_allies, SMAX_STOP)
        self.smac_actions: list[np.ndarray] = []  # SMAC actions sent, per step (for checks and analysis)

    def unit_table(self) -> UnitTable:
        sc2, layout = self.smac.sc2, self.layout
        units = [sc2.agents[i] for i in range(layout.num_allies)] + [sc2.enemies[j] for j in range(layout.num_enemies)]
        types = np.array([smax_type(u, layout.type_health) for u in units])
        if not np.array_equal(np.sort(types[: layout.num_allies]), np.sort(layout.unit_types[: layout.num_allies])) or \
                not np.array_equal(np.sort(types[layout.num_allies:]), np.sort(layout.unit_types[layout.num_allies:])):
            raise SMACError(f"smac error: SMAC map {self.smac.map_name}'s unit types {types.tolist()} differ from the "
                            f"policy's SMAX scenario {layout.unit_types.tolist()}; evaluate on the matching map")
        pos = np.array([[u.pos.x, u.pos.y] for u in units], np.float64)
        health = np.array([(u.health + getattr(u, "shield", 0.0)) / (u.health_max + getattr(u, "shield_max", 0.0))
                           for u in units])
        alive = np.array([u.health > 0 for u in units])
        cooldown = np.clip(np.array([u.weapon_cooldown for u in units]) / SMAC_MAX_COOLDOWN[types], 0.0, 1.0)
        prev_move = np.zeros((len(units), 2))
        prev_move[: layout.num_allies] = smax_move_vector(self._last_actions)
        if self._prev_pos is not None:
            prev_move[layout.num_allies:] = snap_to_direction(pos[layout.num_allies:] - self._prev_pos[layout.num_allies:])
        prev_attack = np.zeros(len(units))
        prev_attack[: layout.num_allies] = np.where(self._last_actions >= SMAX_FIRST_ATTACK, self._last_actions, 0)
        self._prev_pos = pos
        return UnitTable(pos=pos, health=np.where(alive, health, 0.0), alive=alive, types=types,
                         cooldown=np.where(alive, cooldown, 0.0), prev_move=prev_move, prev_attack=prev_attack,
                         map_size=np.array([sc2.map_x, sc2.map_y], np.float64))

    def _timestep(self, inner: TimeStep) -> TimeStep:
        table = self.unit_table()
        return inner.replace(
            obs=smax_observation(table, self.layout), state=smax_state(table, self.layout),
            avail=smac_to_smax_avail(inner.avail, self.layout.dead_noop),
        )

    def reset(self, key: Any = None) -> tuple[None, TimeStep]:
        _, inner = self.smac.reset()
        self._prev_pos = None
        self._last_actions = np.full(self.layout.num_allies, SMAX_STOP)
        self._smac_avail = inner.avail
        self.smac_actions = []
        return None, self._timestep(inner)

    def step(self, key: Any, env_state: Any, actions: Any) -> tuple[None, TimeStep]:
        actions = np.asarray(actions, np.int64)
        # The dead units' no-op (dead_noop) is SMAX's stop, as the adapter sends it.
        actions = np.where(actions == self.layout.num_ally_actions, SMAX_STOP, actions)
        smac_actions = smax_to_smac_actions(actions, self._smac_avail)
        self.smac_actions.append(smac_actions)
        _, inner = self.smac.step(key, None, smac_actions)
        self._last_actions = actions
        self._smac_avail = inner.avail
        return None, self._timestep(inner)

    def save_replay(self) -> None:
        self.smac.save_replay()

    def close(self) -> None:
        self.smac.close()
