"""JaxMARL's SMAX (StarCraft-like, jittable) as an ``ArrayEnv`` for the learner.

Any scenario JaxMARL registers works by its SMAC map name, plus the paper's maps
that SMAX's six unit types can express but JaxMARL does not register
(``EXTRA_SCENARIOS``, added through JaxMARL's own ``register_scenario``).

What the adapter fixes on top of ``HeuristicEnemySMAX`` (docs/algorithm.md, "Environments and what the adapters fix"):

- no auto-reset: ``step_env`` keeps the real final observation;
- the 100-step limit comes back as an ordinary done (and one step late): it is
  reported here as a truncation (bootstrap) after exactly 100 steps, a battle
  decided by deaths as a terminal;
- ``won``: every enemy dead while an ally lives (JaxMARL's win bonus condition);
- the global state is normalised: positions by the map size, and each weapon cooldown
  as a fraction of its unit type's cooldown, clipped to [0, 1] as in the agents'
  observations (JaxMARL's world state keeps the raw cooldown, which goes on falling
  below zero, by one step's time per step, while a unit does not fire: about -12
  times the longest cooldown by step 60); JaxMARL's trailing raw team and type ids
  are dropped (the unit order fixes the team, the type is already one-hot in each
  unit's features);
- the team reward (identical for all allies) times ``reward_scale``;
- optionally (``dead_noop``) an extra last action, a no-op that only dead units have
  and only they may take, as in SMAC: SMAX gives a dead unit its stop action, so the
  stop utility of living units is trained on dead units' steps too. The no-op is sent
  to SMAX as stop.

Shape legend: N allies, U all units, F per-unit state features.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import chex
import jax
import jax.numpy as jnp
import jaxmarl
from jaxmarl.environments.smax.smax_env import MAP_NAME_TO_SCENARIO, Scenario, register_scenario

from rmix_jax.envs.base import JaxMARLAdapter, TimeStep
from rmix_jax.envs.smax_actions import SMAXActions

MARINE, MARAUDER, STALKER, ZEALOT, ZERGLING, HYDRALISK = range(6)


def _scenario(allies: list[int], enemies: list[int]) -> Scenario:
    types = jnp.asarray(allies + enemies, dtype=jnp.uint8)
    return Scenario(types, len(allies), len(enemies), False, False)


# SMAC maps from the paper (and SMAC's list) whose units SMAX has; colossi, medivacs,
# banelings and spine crawlers it has not (1c3s5z, MMM2, bane_vs_bane, 2s_vs_1sc).
EXTRA_SCENARIOS: dict[str, Scenario] = {
    "8m_vs_9m": _scenario([MARINE] * 8, [MARINE] * 9),
    "corridor": _scenario([ZEALOT] * 6, [ZERGLING] * 24),
    "2m_vs_1z": _scenario([MARINE] * 2, [ZEALOT]),
    "3s_vs_3z": _scenario([STALKER] * 3, [ZEALOT] * 3),
    "3s_vs_4z": _scenario([STALKER] * 3, [ZEALOT] * 4),
}


def register_extra_scenarios() -> None:
    for name, scenario in EXTRA_SCENARIOS.items():
        if name not in MAP_NAME_TO_SCENARIO:
            register_scenario(name, scenario)


def map_names() -> list[str]:
    register_extra_scenarios()
    return sorted(MAP_NAME_TO_SCENARIO)


class SMAXAdapter(JaxMARLAdapter):
    """Array view of ``HeuristicEnemySMAX`` on one map (see the module docstring)."""

    def __init__(self, map_name: str, reward_scale: float = 1.0, dead_noop: bool = False,
                 **env_kwargs: Any) -> None:
        names = map_names()
        if map_name not in names:
            raise ValueError(f"unknown SMAX map {map_name!r}; choose one of {', '.join(names)}")
        self.map_name = map_name
        scenario = MAP_NAME_TO_SCENARIO[map_name]
        self.scenario_unit_types = scenario.unit_types  # (U,) allies first
        env = jaxmarl.make("HeuristicEnemySMAX", scenario=scenario, **env_kwargs)
        inner = env._env
        self.num_units = inner.num_agents
        self.num_allies = inner.num_allies
        self.num_unit_features = len(inner.own_features)
        self.state_scale = self._state_scale(inner)
        self.type_cooldowns = jnp.asarray(inner.unit_type_weapon_cooldowns, jnp.float32)
        self.dead_noop = bool(dead_noop)
        self.actions = SMAXActions(num_enemies=int(inner.num_enemies), dead_noop=self.dead_noop)
        if int(inner.num_movement_actions) != SMAXActions.stop + 1:
            raise ValueError(f"JaxMARL's SMAX has {inner.num_movement_actions} movement actions; "
                             f"rmix_jax.envs.smax_actions expects {SMAXActions.stop + 1} (moves and stop)")
        self.stop_action = self.actions.stop
        super().__init__(env, int(inner.max_steps), reward_scale)
        self.noop_action = self.spec.num_actions  # the extra action's index, when dead_noop
        if self.dead_noop:
            self.spec = replace(self.spec, num_actions=self.spec.num_actions + 1)
        assert self.spec.num_actions == self.actions.num_actions, (self.spec, self.actions)

    @staticmethod
    def _state_scale(inner: Any) -> jax.Array:
        """Divisors of the per-unit features [health, x, y, cooldown, type bits...]; the
        cooldown's (1 here) is its unit type's cooldown, applied in ``global_state``."""
        scale = jnp.ones((len(inner.own_features),), jnp.float32)
        return scale.at[1].set(inner.map_width).at[2].set(inner.map_height)

    def global_state(self, obs: dict) -> chex.Array:
        """JaxMARL's world state (U*F raw features, U teams, U types) -> (U*F,) in [0, 1]."""
        world_state = obs["world_state"]
        num_features = self.num_units * self.num_unit_features
        units = world_state[:num_features].reshape(self.num_units, -1) / self.state_scale
        types = world_state[num_features + self.num_units:].astype(jnp.int32)  # (U,)
        cooldown = jnp.clip(units[:, 3] / self.type_cooldowns[types], 0.0, 1.0)
        return units.at[:, 3].set(cooldown).reshape(-1)

    def available_actions(self, env_state: Any) -> chex.Array:
        """(N, A) SMAX availability; with ``dead_noop`` (N, A + 1), a dead unit only the no-op."""
        avail = super().available_actions(env_state)
        if not self.dead_noop:
            return avail
        alive = env_state.state.unit_alive[: self.num_allies, None]
        only_noop = (jnp.arange(self.spec.num_actions) == self.noop_action).astype(jnp.int32)
        return jnp.where(alive, jnp.pad(avail, ((0, 0), (0, 1))), only_noop)

    def env_actions(self, actions: chex.Array) -> chex.Array:
        """(N,) policy actions -> SMAX's: the dead units' no-op (``dead_noop``) becomes stop."""
        if not self.dead_noop:
            return actions
        return jnp.where(actions == self.noop_action, self.stop_action, actions)

    def step(self, key: chex.PRNGKey, env_state: Any, actions: chex.Array) -> tuple[Any, TimeStep]:
        actions = self.env_actions(actions)
        action_dict = {a: actions[i] for i, a in enumerate(self.env.agents)}
        obs, env_state, rewards, dones, _ = self.env.step_env(key, env_state, action_dict)
        alive = env_state.state.unit_alive
        allies_dead = ~jnp.any(alive[: self.num_allies])
        enemies_dead = ~jnp.any(alive[self.num_allies :])
        done = dones["__all__"]
        terminated = done & (allies_dead | enemies_dead)
        # JaxMARL checks its limit before counting the step, so it would end after
        # max_steps + 1 steps; end at max_steps, the documented limit.
        out_of_time = env_state.state.step >= self.spec.episode_limit
        truncated = (done | out_of_time) & ~terminated
        won = done & enemies_dead & ~allies_dead
        reward = rewards[self.env.agents[0]]
        return env_state, self._timestep(obs, env_state, reward, terminated, truncated, won)
