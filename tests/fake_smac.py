"""A stand-in for SMAC's ``StarCraft2Env`` with its exact API, for machines without StarCraft II.

It honours what the bridge relies on: the constructor's keyword arguments
(``map_name``, ``difficulty``, ``seed``, ``continuing_episode``, ``replay_dir``, ...),
``get_env_info()`` keys, ``reset() -> (obs, state)``, ``step(actions) -> (reward,
terminated, info)`` with ``info["battle_won"]`` only on SMAC's normal path (a lost SC2
connection returns ``(0, True, {})``, simulated every ``drop_every``-th episode), the
``episode_limit`` flag only with ``continuing_episode``, SMAC's action layout (0 no-op
for dead units only, 1 stop, 2 N, 3 S, 4 E, 5 W, 6 + j attack), SMAC's assertion that
every action is available, observation and state sizes as SMAC computes them for
marine maps, unit protos (``agents``/``enemies`` with health, shield, pos, type,
cooldown), ``map_x``/``map_y``, ``save_replay()`` and ``close()``.

The battle is a toy: marines on a 32 x 32 map, the enemy walks to the nearest ally
and shoots in range. Every instance is kept in ``FakeStarCraft2Env.instances`` with the
actions it received, so tests can check what the bridge sent.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

MAPS = {  # n_agents, n_enemies, episode limit (SMAC's values)
    "3m": (3, 3, 60),
    "8m": (8, 8, 120),
    "5m_vs_6m": (5, 6, 70),
    "8m_vs_9m": (8, 9, 120),
}
MARINE_HEALTH, SHOOT_RANGE, SIGHT_RANGE, DAMAGE, COOLDOWN = 45.0, 6.0, 9.0, 6.0, 15.0
ALLY_MARINE_TYPE, ENEMY_MARINE_TYPE = 1970, 48  # SMAC maps give allies custom unit types


class FakeStarCraft2Env:
    instances: list["FakeStarCraft2Env"] = []
    drop_every = 5  # every 5th episode loses the "connection" at step 2: (0, True, {})

    def __init__(self, map_name="8m", step_mul=None, move_amount=2, difficulty="7", game_version=None, seed=None,
                 continuing_episode=False, obs_all_health=True, obs_own_health=True, obs_last_action=False,
                 obs_pathing_grid=False, obs_terrain_height=False, obs_instead_of_state=False,
                 state_last_action=True, reward_sparse=False, reward_only_positive=True, reward_death_value=10,
                 reward_win=200, reward_defeat=0, reward_negative_scale=0.5, reward_scale=True,
                 reward_scale_rate=20, replay_dir="", replay_prefix="", window_size_x=1920, window_size_y=1200,
                 debug=False):
        if map_name not in MAPS:
            raise ValueError(f"fake SMAC has no map {map_name}")
        self.map_name = map_name
        self.n_agents, self.n_enemies, self.episode_limit = MAPS[map_name]
        self.n_actions = 6 + self.n_enemies
        self.difficulty = difficulty
        self.continuing_episode = continuing_episode
        self.replay_dir, self.replay_prefix = replay_dir, replay_prefix
        self._move_amount = move_amount
        self._rng = np.random.default_rng(seed)
        self.reward_death_value, self.reward_win, self.reward_scale_rate = reward_death_value, reward_win, reward_scale_rate
        self.max_reward = self.n_enemies * reward_death_value + reward_win + self.n_enemies * MARINE_HEALTH
        self.map_x = self.map_y = 32
        self.max_distance_x = self.max_distance_y = 32
        self.agents: dict = {}
        self.enemies: dict = {}
        self.last_action = np.zeros((self.n_agents, self.n_actions))
        self._episode_count = 0
        self._episode_steps = 0
        self.launched = False
        self.closed = False
        self.received: list[list[int]] = []  # every action list step() got
        self.episode_results: list[dict] = []
        FakeStarCraft2Env.instances.append(self)

    # --- SMAC API ---------------------------------------------------------------------
    def get_env_info(self):
        return {"state_shape": self.get_state_size(), "obs_shape": self.get_obs_size(),
                "n_actions": self.n_actions, "n_agents": self.n_agents, "episode_limit": self.episode_limit}

    def reset(self):
        self.launched = True
        self._episode_steps = 0
        self.last_action = np.zeros((self.n_agents, self.n_actions))
        self.agents = {i: self._unit(ALLY_MARINE_TYPE, 10.0 + self._rng.uniform(-1, 1), 14.0 + 1.5 * i, i)
                       for i in range(self.n_agents)}
        self.enemies = {j: self._unit(ENEMY_MARINE_TYPE, 20.0 + self._rng.uniform(-1, 1), 14.0 + 1.5 * j, 100 + j)
                        for j in range(self.n_enemies)}
        return self.get_obs(), self.get_state()

    def step(self, actions):
        actions = [int(a) for a in actions]
        self.received.append(actions)
        avail = self.get_avail_actions()
        for a_id, action in enumerate(actions):
            assert avail[a_id][action] == 1, f"Agent {a_id} cannot perform action {action}"
        self.last_action = np.eye(self.n_actions)[np.array(actions)]
        self._episode_steps += 1
        if self._episode_count % self.drop_every == self.drop_every - 1 and self._episode_steps == 2:
            self._episode_count += 1  # SMAC after a ProtocolError: full restart, no battle_won
            self.episode_results.append({"dropped": True})
            return 0, True, {}
        enemy_health_before = sum(u.health for u in self.enemies.values())
        kills_before = sum(u.health == 0 for u in self.enemies.values())
        for a_id, action in enumerate(actions):
            self._act(self.agents[a_id], action, self.enemies)
        for unit in self.enemies.values():
            self._enemy_act(unit)
        for unit in [*self.agents.values(), *self.enemies.values()]:
            unit.weapon_cooldown = max(0.0, unit.weapon_cooldown - 8.0)
        damage = enemy_health_before - sum(u.health for u in self.enemies.values())
        kills = sum(u.health == 0 for u in self.enemies.values()) - kills_before
        reward = damage + self.reward_death_value * kills
        allies_alive = any(u.health > 0 for u in self.agents.values())
        enemies_alive = any(u.health > 0 for u in self.enemies.values())
        terminated, info = False, {"battle_won": False}
        if not allies_alive or not enemies_alive:
            terminated = True
            if allies_alive:
                info["battle_won"] = True
                reward += self.reward_win
        elif self._episode_steps >= self.episode_limit:
            terminated = True
            if self.continuing_episode:
                info["episode_limit"] = True
        if terminated:
            self._episode_count += 1
            self.episode_results.append(dict(info))
        return reward / (self.max_reward / self.reward_scale_rate), terminated, info

    def get_obs(self):
        return [self.get_obs_agent(i) for i in range(self.n_agents)]

    def get_obs_agent(self, agent_id):
        unit = self.agents[agent_id]
        move = np.zeros(4, np.float32)
        enemy_feats = np.zeros((self.n_enemies, 5), np.float32)
        ally_feats = np.zeros((self.n_agents - 1, 5), np.float32)
        own = np.zeros(1, np.float32)
        if unit.health > 0:
            avail = self.get_avail_agent_actions(agent_id)
            move[:] = avail[2:6]
            for e_id, e in self.enemies.items():
                dist = math.hypot(e.pos.x - unit.pos.x, e.pos.y - unit.pos.y)
                if dist < SIGHT_RANGE and e.health > 0:
                    enemy_feats[e_id] = [avail[6 + e_id], dist / SIGHT_RANGE, (e.pos.x - unit.pos.x) / SIGHT_RANGE,
                                         (e.pos.y - unit.pos.y) / SIGHT_RANGE, e.health / e.health_max]
            for k, al_id in enumerate(i for i in range(self.n_agents) if i != agent_id):
                al = self.agents[al_id]
                dist = math.hypot(al.pos.x - unit.pos.x, al.pos.y - unit.pos.y)
                if dist < SIGHT_RANGE and al.health > 0:
                    ally_feats[k] = [1, dist / SIGHT_RANGE, (al.pos.x - unit.pos.x) / SIGHT_RANGE,
                                     (al.pos.y - unit.pos.y) / SIGHT_RANGE, al.health / al.health_max]
            own[0] = unit.health / unit.health_max
        return np.concatenate([move, enemy_feats.ravel(), ally_feats.ravel(), own])

    def get_obs_size(self):
        return 4 + 5 * self.n_enemies + 5 * (self.n_agents - 1) + 1

    def get_state(self):
        allies = np.zeros((self.n_agents, 4))
        enemies = np.zeros((self.n_enemies, 3))
        for i, u in self.agents.items():
            if u.health > 0:
                allies[i] = [u.health / u.health_max, u.weapon_cooldown / COOLDOWN, (u.pos.x - 16) / 32, (u.pos.y - 16) / 32]
        for j, u in self.enemies.items():
            if u.health > 0:
                enemies[j] = [u.health / u.health_max, (u.pos.x - 16) / 32, (u.pos.y - 16) / 32]
        return np.concatenate([allies.ravel(), enemies.ravel(), self.last_action.ravel()]).astype(np.float32)

    def get_state_size(self):
        return 4 * self.n_agents + 3 * self.n_enemies + self.n_agents * self.n_actions

    def get_avail_agent_actions(self, agent_id):
        unit = self.agents[agent_id]
        if unit.health <= 0:
            return [1] + [0] * (self.n_actions - 1)
        avail = [0, 1] + [0] * (self.n_actions - 2)
        m = self._move_amount / 2
        for index, (dx, dy) in zip((2, 3, 4, 5), ((0, m), (0, -m), (m, 0), (-m, 0))):
            avail[index] = int(0 <= unit.pos.x + dx < self.map_x and 0 <= unit.pos.y + dy < self.map_y)
        for e_id, e in self.enemies.items():
            if e.health > 0 and math.hypot(e.pos.x - unit.pos.x, e.pos.y - unit.pos.y) <= SHOOT_RANGE:
                avail[6 + e_id] = 1
        return avail

    def get_avail_actions(self):
        return [self.get_avail_agent_actions(i) for i in range(self.n_agents)]

    def get_total_actions(self):
        return self.n_actions

    def save_replay(self):
        path = Path(self.replay_dir or ".") / f"{self.replay_prefix or self.map_name}_{time.time_ns()}.SC2Replay"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"fake replay of {self._episode_count} episodes\n")
        return path

    def close(self):
        self.closed = True

    # --- the toy battle -----------------------------------------------------------------
    @staticmethod
    def _unit(unit_type, x, y, tag):
        return SimpleNamespace(unit_type=unit_type, tag=tag, health=MARINE_HEALTH, health_max=MARINE_HEALTH,
                               shield=0.0, shield_max=0.0, weapon_cooldown=0.0, pos=SimpleNamespace(x=x, y=y))

    def _act(self, unit, action, targets):
        if unit.health <= 0 or action <= 1:
            return
        if action <= 5:
            dx, dy = {2: (0, 1), 3: (0, -1), 4: (1, 0), 5: (-1, 0)}[action]
            unit.pos.x = float(np.clip(unit.pos.x + dx * self._move_amount / 2, 0, self.map_x - 1e-3))
            unit.pos.y = float(np.clip(unit.pos.y + dy * self._move_amount / 2, 0, self.map_y - 1e-3))
            return
        target = targets[action - 6]
        if unit.weapon_cooldown <= 0 and target.health > 0:
            target.health = max(0.0, target.health - DAMAGE)
            unit.weapon_cooldown = COOLDOWN

    def _enemy_act(self, unit):
        if unit.health <= 0:
            return
        alive = [a for a in self.agents.values() if a.health > 0]
        if not alive:
            return
        nearest = min(alive, key=lambda a: math.hypot(a.pos.x - unit.pos.x, a.pos.y - unit.pos.y))
        dist = math.hypot(nearest.pos.x - unit.pos.x, nearest.pos.y - unit.pos.y)
        if dist <= SHOOT_RANGE:
            if unit.weapon_cooldown <= 0 and self._rng.random() < 0.5:
                nearest.health = max(0.0, nearest.health - DAMAGE)
                unit.weapon_cooldown = COOLDOWN
        else:
            unit.pos.x += (nearest.pos.x - unit.pos.x) / dist
            unit.pos.y += (nearest.pos.y - unit.pos.y) / dist
