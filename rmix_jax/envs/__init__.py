"""Environments: MACN (jittable grid), SMAX (JaxMARL), and the array interface the learner uses."""

from rmix_jax.envs.base import ArrayEnv, EnvSpec, JaxMARLAdapter, RewardNoise, TimeStep
from rmix_jax.envs.macn import MACN, SCENARIOS

__all__ = ["ArrayEnv", "EnvSpec", "JaxMARLAdapter", "RewardNoise", "TimeStep", "MACN", "SCENARIOS", "make_env",
           "make_host_envs", "is_jittable"]


def is_jittable(env) -> bool:
    """Whether the learner can step ``env`` inside jit (SMAC's StarCraft II cannot)."""
    return getattr(env, "jittable", True)


def make_env(env_config) -> ArrayEnv:
    """Build the array env a validated ``EnvConfig`` describes."""
    if env_config.name == "macn":
        macn = MACN(
            width=env_config.width,
            height=env_config.height,
            cliff_reward=env_config.cliff_reward,
            slip_prob=env_config.slip_prob,
        )
        env: ArrayEnv = JaxMARLAdapter(macn, macn.episode_limit, env_config.reward_scale)
    elif env_config.name == "smax":
        from rmix_jax.envs.smax import SMAXAdapter

        env = SMAXAdapter(env_config.map, env_config.reward_scale, dead_noop=env_config.dead_noop)
    elif env_config.name == "smac":
        return make_host_envs(env_config, 1, seed=None)[0]
    else:  # config validation has already rejected other names
        raise ValueError(f"unknown env {env_config.name!r}")
    if env_config.reward_noise_std > 0:
        env = RewardNoise(env, env_config.reward_noise_std)
    return env


def make_host_envs(env_config, count: int, seed: int | None, replay_dir: str = "") -> list:
    """``count`` independent host-stepped envs (one SC2 game each), game seeds ``seed + i``."""
    from rmix_jax.envs.smac import SMACEnv

    return [
        SMACEnv(env_config.map, env_config.difficulty, seed=None if seed is None else seed + i,
                reward_scale=env_config.reward_scale, replay_dir=replay_dir)
        for i in range(count)
    ]
