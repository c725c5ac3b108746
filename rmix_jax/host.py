"""A host-side episode loop around the jitted policy and the jitted update.

StarCraft II (SMAC) runs in its own process and cannot be traced, so its episodes
are stepped from Python: per step one jitted call acts for every env of every run
(``learner.act``, vmapped over runs and envs), then each env takes its actions (in
threads, as every SC2 env is a separate process). Finished episodes go through the
same ``learner.learn`` (replay, TD/QR updates, target copy) and ``finish_chunk`` as
the jitted ``run_chunk``, with the same random keys, so on a jittable env this loop
gives what ``run_chunk`` gives (tests/test_host.py checks it on MACN).

An env here is anything with the ``ArrayEnv`` methods (``reset(key)``,
``step(key, env_state, actions)``, ``spec``) returning host or device arrays; SMAC's
ignore the keys. Episodes are padded to the episode limit exactly as the jitted
rollout pads them (the frozen final step repeated, masked by ``filled``).

Shape legend: R runs, E envs per run, K episodes per run, T episode limit, N agents.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rmix_jax.learner import (
    RUN_AXIS,
    Actor,
    Episode,
    Learner,
    Policy,
    TrainState,
    padding_record,
    stack_timesteps,
    step_record,
)


class HostRunner:
    """Steps ``envs`` (R * E of them, run-major) for the learner's R runs of one experiment."""

    def __init__(self, learner: Learner, envs: Sequence[Any], num_runs: int) -> None:
        if len(envs) % num_runs:
            raise ValueError(f"{len(envs)} envs cannot be split evenly over {num_runs} runs")
        self.learner = learner
        self.envs = list(envs)
        self.num_runs = num_runs
        self.envs_per_run = len(envs) // num_runs
        self.spec = learner.spec
        self.train_config = learner.config.train
        self._pool = ThreadPoolExecutor(max_workers=min(len(self.envs), 16)) if len(self.envs) > 1 else None

        def policy_step(policy: Policy, actor: Actor, obs, avail, first, key):
            key, act_key, env_key = jax.random.split(key, 3)
            actor, actions, alpha = learner.act(policy, actor, obs, avail, first, act_key)
            return actor, actions, alpha, key, env_key

        # Over a run's envs (the policy shared), then over runs.
        per_env = jax.vmap(policy_step, in_axes=(None, 0, 0, 0, None, 0))
        self._policy_step = jax.jit(jax.vmap(per_env, in_axes=(0, 0, 0, 0, None, 0)))
        self._split_reset = jax.jit(lambda keys: jnp.moveaxis(jax.vmap(jax.vmap(jax.random.split))(keys), 2, 0))
        self._episode_keys = jax.jit(
            lambda keys, count: jax.vmap(lambda k: jax.random.split(k, count))(keys), static_argnums=1
        )
        self._start_actors = lambda: jax.tree.map(
            lambda x: jnp.broadcast_to(x, (num_runs, self.envs_per_run, *x.shape)), learner.start_actor()
        )
        self._iteration_start = jax.jit(jax.vmap(learner.iteration_start))
        self._learn = jax.jit(jax.vmap(learner.learn, axis_name=RUN_AXIS))
        self._stats = jax.jit(jax.vmap(learner.episode_stats))
        self._finish = jax.jit(jax.vmap(learner.finish_chunk))
        self._test_metrics = jax.jit(jax.vmap(learner.test_metrics))

    # --- episodes ---------------------------------------------------------------------
    def collect(self, params: Any, hyper: Any, keys: Any, epsilon: Any) -> Episode:
        """K episodes per run (keys (R, K, 2): one per episode, as the jitted rollout splits
        them), E at a time; ``epsilon`` (R,). Returns host arrays (R, K, T+1, ...)."""
        keys = np.asarray(keys)
        count = keys.shape[1]
        batches = []
        for start in range(0, count, self.envs_per_run):
            batch = keys[:, start:start + self.envs_per_run]
            if batch.shape[1] < self.envs_per_run:  # the last, partial batch: pad, then drop
                pad = np.repeat(batch[:, -1:], self.envs_per_run - batch.shape[1], axis=1)
                episodes = self._run_batch(params, hyper, np.concatenate([batch, pad], axis=1), epsilon)
                episodes = jax.tree.map(lambda x: x[:, : batch.shape[1]], episodes)
            else:
                episodes = self._run_batch(params, hyper, batch, epsilon)
            batches.append(episodes)
        return jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *batches)

    def _map_envs(self, fn, items: Sequence[Any]) -> list[Any]:
        if self._pool is None:
            return [fn(*item) for item in items]
        return list(self._pool.map(lambda item: fn(*item), items))

    def _run_batch(self, params: Any, hyper: Any, keys: np.ndarray, epsilon: Any) -> Episode:
        """One episode on each of the R * E envs; mirrors the jitted ``run_episodes``."""
        r_count, e_count = self.num_runs, self.envs_per_run
        t_len, n = self.spec.episode_limit, self.spec.num_agents
        flat = r_count * e_count
        reset_keys, step_keys = self._split_reset(jnp.asarray(keys))
        reset_keys = np.asarray(reset_keys).reshape(flat, -1)
        started = self._map_envs(lambda env, key: env.reset(key), list(zip(self.envs, reset_keys)))
        env_states = [s for s, _ in started]
        timesteps = [_to_numpy(ts) for _, ts in started]
        done = np.zeros(flat, bool)

        actor = self._start_actors()
        key = step_keys
        records: list[Episode] = []

        def grid(x: np.ndarray) -> np.ndarray:  # (R*E, ...) -> (R, E, ...)
            return x.reshape(r_count, e_count, *x.shape[1:])

        policy = Policy(params, epsilon, hyper.alpha)
        before = stack_timesteps(timesteps)
        for t in range(t_len):
            actor, actions, alpha, key, env_keys = self._policy_step(
                policy, actor, grid(before.obs), grid(before.avail), jnp.bool_(t == 0), key
            )
            actions_np = np.asarray(actions).reshape(flat, n).astype(np.int32)
            env_keys_np = np.asarray(env_keys).reshape(flat, -1)
            live = [i for i in range(flat) if not done[i]]
            stepped = self._map_envs(
                lambda i: self.envs[i].step(env_keys_np[i], env_states[i], actions_np[i]), [(i,) for i in live]
            )
            for i, (env_state, ts) in zip(live, stepped):  # an ended episode's env stays frozen
                env_states[i], timesteps[i] = env_state, _to_numpy(ts)
            after = stack_timesteps(timesteps)
            alpha_np = np.asarray(alpha, np.float32).reshape(flat, n)
            records.append(step_record(before, actions_np, alpha_np, after, done, np.full(flat, t == 0)))
            done = done | after.terminated.astype(bool) | after.truncated.astype(bool)
            before = after  # the next step's observations
            if done.all():
                break
        # Steps after every episode ended, and the tail: the frozen final step, masked.
        final = padding_record(before, xp=np)
        records.extend([final] * (t_len + 1 - len(records)))
        episodes = jax.tree.map(lambda *xs: np.stack(xs, axis=1), *records)  # (R*E, T+1, ...)
        episodes = jax.tree.map(lambda v: v.reshape(r_count, e_count, *v.shape[1:]), episodes)
        return episodes.replace(obs=episodes.obs.astype(np.float32), state=episodes.state.astype(np.float32),
                                reward=episodes.reward.astype(np.float32))

    # --- training ---------------------------------------------------------------------
    def run_chunk(self, state: TrainState) -> tuple[TrainState, dict]:
        """What the jitted ``run_chunk`` does for R runs, stepping the envs from the host.

        A chunk is ``iterations_per_eval`` iterations or, with ``train.test_interval`` > 0,
        as many as it takes every run to take that many env steps (PyMARL's test interval).
        """
        tc = self.train_config
        old = state
        start_steps = int(np.min(jax.device_get(state.t_env)))
        its = []
        while True:
            state, rollout_keys, update_keys, epsilon = self._iteration_start(state)
            keys = self._episode_keys(rollout_keys, self.envs_per_run)
            episodes = self.collect(state.params, state.hyper, keys, epsilon)
            state, it = self._learn(state, episodes, self._stats(episodes), epsilon, update_keys)
            its.append(it)
            if tc.test_interval > 0:
                steps = int(np.min(jax.device_get(state.t_env)))
                if steps - start_steps >= tc.test_interval or steps >= tc.t_max:
                    break
            elif len(its) == tc.iterations_per_eval:
                break
        it = jax.tree.map(lambda *xs: jnp.stack(xs, axis=1), *its)  # (R, iterations, ...)
        state, eval_keys, metrics = self._finish(old, state, it)
        del old
        test = self.collect(state.params, state.hyper, self._episode_keys(eval_keys, tc.test_episodes),
                            jnp.zeros((self.num_runs,), jnp.float32))
        return state, {**metrics, **self._test_metrics(self._stats(test))}

    def evaluate(self, params: Any, hyper: Any, keys: Any, episodes: int) -> tuple[Episode, Any]:
        """``episodes`` greedy episodes per run (keys (R, 2)) -> (episodes, stats), host arrays."""
        played = self.collect(params, hyper, self._episode_keys(jnp.asarray(keys), episodes),
                              jnp.zeros((self.num_runs,), jnp.float32))
        return played, jax.device_get(self._stats(played))

    def close(self) -> None:
        for env in self.envs:
            close = getattr(env, "close", None)
            if close is not None:
                close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)


class StepFromHost:
    """A jittable env stepped from Python one env at a time, as the loop steps SC2 (tests, benchmarks)."""

    jittable = False

    def __init__(self, env: Any) -> None:
        self.spec = env.spec
        self.reset = jax.jit(env.reset)
        self.step = jax.jit(env.step)


def _to_numpy(timestep: Any) -> Any:
    return jax.tree.map(np.asarray, timestep)
