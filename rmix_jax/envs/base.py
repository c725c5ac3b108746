"""The array interface the learner steps: stacked agents, no auto-reset.

A JaxMARL ``MultiAgentEnv`` speaks in per-agent dicts and resets itself when an
episode ends. The learner runs whole episodes (PyMARL's episode runner), so it
wants arrays with the agent axis first and the real final observation kept:
``JaxMARLAdapter`` calls ``step_env`` (no auto-reset) and stacks the dicts.

Shape legend: N agents, O observation size, S state size, A actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import chex
import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class TimeStep:
    obs: chex.Array  # (N, O)
    state: chex.Array  # (S,)
    avail: chex.Array  # (N, A) 0/1
    reward: chex.Array  # () team reward of the step that led here (0 after reset)
    terminated: chex.Array  # () bool: a true terminal, no bootstrap
    truncated: chex.Array  # () bool: the episode limit, bootstrap
    won: chex.Array  # () bool


@dataclass(frozen=True)
class EnvSpec:
    num_agents: int
    num_actions: int
    obs_dim: int
    state_dim: int
    episode_limit: int


class ArrayEnv(Protocol):
    spec: EnvSpec

    def reset(self, key: chex.PRNGKey) -> tuple[Any, TimeStep]: ...

    def step(self, key: chex.PRNGKey, env_state: Any, actions: chex.Array) -> tuple[Any, TimeStep]: ...


class JaxMARLAdapter:
    """Array view of a JaxMARL env whose ``step_env`` info has terminated/truncated/won."""

    def __init__(self, env: Any, episode_limit: int, reward_scale: float = 1.0) -> None:
        self.env = env
        self.reward_scale = float(reward_scale)
        obs, _ = env.reset(jax.random.PRNGKey(0))
        agent = env.agents[0]
        self.spec = EnvSpec(
            num_agents=env.num_agents,
            num_actions=int(env.action_space(agent).n),
            obs_dim=int(obs[agent].shape[-1]),
            state_dim=int(self.global_state(obs).shape[-1]),
            episode_limit=int(episode_limit),
        )

    def global_state(self, obs: dict) -> chex.Array:
        """The mixer's state from an observation dict; subclasses may normalise it."""
        return obs["world_state"]

    def available_actions(self, env_state: Any) -> chex.Array:
        """(N, A) 0/1 from the env's per-agent dict; subclasses may add actions."""
        avail = self.env.get_avail_actions(env_state)
        return jnp.stack([avail[a] for a in self.env.agents]).astype(jnp.int32)

    def _timestep(self, obs: dict, env_state: Any, reward, terminated, truncated, won) -> TimeStep:
        return TimeStep(
            obs=jnp.stack([obs[a] for a in self.env.agents]).astype(jnp.float32),
            state=self.global_state(obs).astype(jnp.float32),
            avail=self.available_actions(env_state),
            reward=jnp.asarray(reward, jnp.float32) * self.reward_scale,
            terminated=jnp.asarray(terminated, bool),
            truncated=jnp.asarray(truncated, bool),
            won=jnp.asarray(won, bool),
        )

    def reset(self, key: chex.PRNGKey) -> tuple[Any, TimeStep]:
        obs, env_state = self.env.reset(key)
        false = jnp.bool_(False)
        return env_state, self._timestep(obs, env_state, 0.0, false, false, false)

    def step(self, key: chex.PRNGKey, env_state: Any, actions: chex.Array) -> tuple[Any, TimeStep]:
        action_dict = {a: actions[i] for i, a in enumerate(self.env.agents)}
        obs, env_state, rewards, _, info = self.env.step_env(key, env_state, action_dict)
        reward = rewards[self.env.agents[0]]
        return env_state, self._timestep(
            obs, env_state, reward, info["terminated"], info["truncated"], info["won"]
        )


class RewardNoise:
    """Adds N(0, sigma) to the team reward of any ``ArrayEnv`` (ablation Q4)."""

    def __init__(self, env: ArrayEnv, sigma: float) -> None:
        self.env = env
        self.sigma = float(sigma)
        self.spec = env.spec

    def reset(self, key: chex.PRNGKey) -> tuple[Any, TimeStep]:
        return self.env.reset(key)

    def step(self, key: chex.PRNGKey, env_state: Any, actions: chex.Array) -> tuple[Any, TimeStep]:
        step_key, noise_key = jax.random.split(key)
        env_state, timestep = self.env.step(step_key, env_state, actions)
        noise = self.sigma * jax.random.normal(noise_key, ())
        return env_state, timestep.replace(reward=timestep.reward + noise)
