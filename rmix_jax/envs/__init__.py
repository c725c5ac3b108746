"""Environments: MACN (jittable grid), SMAX (JaxMARL), and the array interface the learner uses."""

from rmix_jax.envs.base import ArrayEnv, EnvSpec, JaxMARLAdapter, RewardNoise, TimeStep
from rmix_jax.envs.macn import MACN, SCENARIOS

__all__ = ["ArrayEnv", "EnvSpec", "JaxMARLAdapter", "RewardNoise", "TimeStep", "MACN", "SCENARIOS", "make_env"]


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

        env = SMAXAdapter(env_config.map, env_config.reward_scale)
    else:  # config validation has already rejected other names
        raise ValueError(f"unknown env {env_config.name!r}")
    if env_config.reward_noise_std > 0:
        env = RewardNoise(env, env_config.reward_noise_std)
    return env
