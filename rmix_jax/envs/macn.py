"""MACN: Multi-Agent Cliff Navigation (paper Fig. 4), jittable, JaxMARL interface.

Coordinates are (x, y) with y = 0 the bottom row. Two agents start at (0, 0); the
goal is (W-1, 0) and the cliff is (1..W-2, 0). The rules are in docs/algorithm.md ("MACN").
"""

from __future__ import annotations

from functools import partial

import chex
import jax
import jax.numpy as jnp
from flax import struct
from jaxmarl.environments import spaces
from jaxmarl.environments.multi_agent_env import MultiAgentEnv

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
ACTION_NAMES = ("UP", "DOWN", "LEFT", "RIGHT")
_MOVES = jnp.array([[0, 1], [0, -1], [-1, 0], [1, 0]], dtype=jnp.int32)  # (A, 2) dx, dy

# Cell categories of the 3 x 3 observation window, one-hot in this order.
FREE, OUTSIDE, CLIFF, GOAL, TEAMMATE = range(5)
NUM_CELL_KINDS = 5
NUM_AGENTS = 2

SCENARIOS = {"7x4": (7, 4), "12x4": (12, 4)}


@struct.dataclass
class MACNState:
    positions: chex.Array  # (N, 2) int32 (x, y)
    at_goal: chex.Array  # (N,) bool
    step: chex.Array  # int32 steps taken in this episode
    done: chex.Array  # bool, the episode ended (terminated or truncated)


class MACN(MultiAgentEnv):
    """Two agents cross a grid to a goal past a cliff; any agent in the cliff costs the team.

    Team reward per step, first rule that applies: an agent entered a cliff cell:
    ``cliff_reward`` and the episode terminates; both agents at the goal: 0 and the
    episode terminates; exactly one at the goal: -0.5; otherwise -1. The episode is
    truncated (not terminated) after ``2 * W * H`` steps.

    Observations are dicts keyed by agent name (45 floats: the 3 x 3 window around
    the agent, each cell one-hot over free / outside / cliff / goal / teammate,
    teammate taking precedence over the terrain) plus ``"world_state"``.
    ``info`` carries ``terminated``, ``truncated`` and ``won`` (both agents home).
    """

    def __init__(
        self,
        width: int = 7,
        height: int = 4,
        cliff_reward: float = -100.0,
        slip_prob: float = 0.0,
        episode_limit: int | None = None,
    ) -> None:
        if width < 3 or height < 2:
            raise ValueError(f"MACN needs width >= 3 and height >= 2, got {width} x {height}")
        super().__init__(num_agents=NUM_AGENTS)
        self.width = width
        self.height = height
        self.cliff_reward = float(cliff_reward)
        self.slip_prob = float(slip_prob)
        self.episode_limit = int(episode_limit or 2 * width * height)
        self.num_actions = len(_MOVES)
        self.obs_dim = 9 * NUM_CELL_KINDS
        self.state_dim = NUM_AGENTS * width * height + NUM_AGENTS + 1
        self.observation_spaces = {a: spaces.Box(0.0, 1.0, (self.obs_dim,)) for a in self.agents}
        self.action_spaces = {a: spaces.Discrete(self.num_actions) for a in self.agents}

    # --- terrain -----------------------------------------------------------------
    def is_cliff(self, xy: chex.Array) -> chex.Array:
        x, y = xy[..., 0], xy[..., 1]
        return (y == 0) & (x >= 1) & (x <= self.width - 2)

    def is_goal(self, xy: chex.Array) -> chex.Array:
        return (xy[..., 0] == self.width - 1) & (xy[..., 1] == 0)

    def is_inside(self, xy: chex.Array) -> chex.Array:
        x, y = xy[..., 0], xy[..., 1]
        return (x >= 0) & (x < self.width) & (y >= 0) & (y < self.height)

    # --- interface ---------------------------------------------------------------
    @partial(jax.jit, static_argnums=(0,))
    def reset(self, key: chex.PRNGKey) -> tuple[dict, MACNState]:
        del key
        state = MACNState(
            positions=jnp.zeros((NUM_AGENTS, 2), jnp.int32),
            at_goal=jnp.zeros((NUM_AGENTS,), bool),
            step=jnp.int32(0),
            done=jnp.bool_(False),
        )
        return self.get_obs(state), state

    def step_env(self, key: chex.PRNGKey, state: MACNState, actions: dict):
        action_array = jnp.stack([actions[a] for a in self.agents]).astype(jnp.int32)
        slip_key, random_key = jax.random.split(key)
        slipped = jax.random.uniform(slip_key, (NUM_AGENTS,)) < self.slip_prob
        random_actions = jax.random.randint(random_key, (NUM_AGENTS,), 0, self.num_actions)
        action_array = jnp.where(slipped, random_actions, action_array)

        moved = state.positions + _MOVES[action_array]
        moved = jnp.where(self.is_inside(moved)[:, None], moved, state.positions)
        positions = jnp.where(state.at_goal[:, None], state.positions, moved)
        at_goal = self.is_goal(positions)

        any_cliff = jnp.any(self.is_cliff(positions))
        both_home = jnp.all(at_goal)
        one_home = jnp.any(at_goal)
        reward = jnp.where(
            any_cliff,
            self.cliff_reward,
            jnp.where(both_home, 0.0, jnp.where(one_home, -0.5, -1.0)),
        ).astype(jnp.float32)
        terminated = any_cliff | both_home
        step = state.step + 1
        truncated = (step >= self.episode_limit) & ~terminated
        done = terminated | truncated
        new_state = MACNState(positions=positions, at_goal=at_goal, step=step, done=done)

        rewards = {a: reward for a in self.agents}
        dones = {a: done for a in self.agents}
        dones["__all__"] = done
        info = {"terminated": terminated, "truncated": truncated, "won": both_home & ~any_cliff}
        return self.get_obs(new_state), new_state, rewards, dones, info

    @partial(jax.jit, static_argnums=(0,))
    def get_obs(self, state: MACNState) -> dict:
        offsets = jnp.array(
            [[dx, dy] for dy in (1, 0, -1) for dx in (-1, 0, 1)], dtype=jnp.int32
        )  # (9, 2), rows top to bottom, columns left to right

        def window(agent: int) -> chex.Array:
            cells = state.positions[agent] + offsets  # (9, 2)
            teammate = jnp.all(cells == state.positions[1 - agent], axis=-1)
            kind = jnp.where(
                ~self.is_inside(cells),
                OUTSIDE,
                jnp.where(
                    teammate,
                    TEAMMATE,
                    jnp.where(self.is_goal(cells), GOAL, jnp.where(self.is_cliff(cells), CLIFF, FREE)),
                ),
            )
            return jax.nn.one_hot(kind, NUM_CELL_KINDS).reshape(-1)

        obs = {a: window(i) for i, a in enumerate(self.agents)}
        obs["world_state"] = self.get_state(state)
        return obs

    def get_state(self, state: MACNState) -> chex.Array:
        cell_index = state.positions[:, 1] * self.width + state.positions[:, 0]
        position_one_hot = jax.nn.one_hot(cell_index, self.width * self.height).reshape(-1)
        time_fraction = jnp.asarray(state.step, jnp.float32)[None] / self.episode_limit
        return jnp.concatenate([position_one_hot, state.at_goal.astype(jnp.float32), time_fraction])

    def get_avail_actions(self, state: MACNState) -> dict:
        del state
        return {a: jnp.ones((self.num_actions,), jnp.int32) for a in self.agents}

    @property
    def name(self) -> str:
        return f"MACN-{self.width}x{self.height}"

    @property
    def agent_classes(self) -> dict:
        return {"agent": list(self.agents)}

    # --- debugging -----------------------------------------------------------------
    def render_text(self, state: MACNState) -> str:
        """Plain-text picture: ``.`` free, ``C`` cliff, ``G`` goal, ``1``/``2`` agents, ``*`` both."""
        positions = [tuple(int(v) for v in p) for p in jax.device_get(state.positions)]
        rows = []
        for y in reversed(range(self.height)):
            row = []
            for x in range(self.width):
                here = [i + 1 for i, p in enumerate(positions) if p == (x, y)]
                if len(here) == 2:
                    row.append("*")
                elif here:
                    row.append(str(here[0]))
                elif y == 0 and x == self.width - 1:
                    row.append("G")
                elif y == 0 and 1 <= x <= self.width - 2:
                    row.append("C")
                else:
                    row.append(".")
            rows.append("".join(row))
        return "\n".join(rows) + f"\nstep {int(state.step)}/{self.episode_limit}"
