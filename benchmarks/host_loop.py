"""What stepping envs from the host costs: the SMAC bridge's loop against the jitted chunk.

StarCraft II cannot be jitted, so on SMAC the learner's policy runs once per env
step as a jitted call from Python (rmix_jax.host). This script runs the same MACN
training chunks both ways, in one process, and prints env steps per second with
learning, the per-step cost of the host loop's policy call, and, for scale, the
fake SC2 game's step (tests/fake_smac.py; the real game's step is tens of ms).

    .venv/bin/python benchmarks/host_loop.py [--seeds 1 4] [--chunks 3] [key=value ...]

Writes benchmarks/results/host_loop.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

from rmix_jax import experiment
from rmix_jax.config import load_config
from rmix_jax.host import HostRunner, StepFromHost

OUT = Path(__file__).parent / "results"



def timed_chunks(chunk_fn, state, chunks: int) -> tuple[float, int, float]:
    """(seconds for ``chunks`` chunks after a first, env steps they took, first-chunk seconds)."""
    started = time.perf_counter()
    state, _ = chunk_fn(state)
    jax.block_until_ready(state)
    first = time.perf_counter() - started
    before = int(np.sum(jax.device_get(state.t_env)))
    started = time.perf_counter()
    for _ in range(chunks):
        state, _ = chunk_fn(state)
    jax.block_until_ready(state)
    return time.perf_counter() - started, int(np.sum(jax.device_get(state.t_env))) - before, first


def policy_call_ms(runner: HostRunner, state, repeats: int = 200) -> float:
    """Mean wall time of one per-step policy call for all runs and envs (host loop only)."""
    import jax.numpy as jnp

    r, e, n = runner.num_runs, runner.envs_per_run, runner.spec.num_agents
    obs = np.zeros((r, e, n, runner.spec.obs_dim), np.float32)
    avail = np.ones((r, e, n, runner.spec.num_actions), np.int32)
    args = (state.params, state.hyper.alpha, jnp.zeros((r,)), runner._zero_carry(), obs, avail,
            jnp.zeros((r, e, n), jnp.int32), jnp.zeros((r, e, n, runner._input_dim())), jnp.bool_(False),
            jax.random.split(jax.random.PRNGKey(0), r * e).reshape(r, e, -1))
    jax.block_until_ready(runner._policy_step(*args))
    started = time.perf_counter()
    for _ in range(repeats):
        out = runner._policy_step(*args)
        np.asarray(out[1])  # the actions come back to the host every step
    return (time.perf_counter() - started) / repeats * 1e3


def fake_sc2_step_ms(repeats: int = 500) -> float:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from fake_smac import FakeStarCraft2Env

    game = FakeStarCraft2Env("3m", seed=0)
    game.reset()
    rng = np.random.default_rng(0)
    avail = game.get_avail_actions()
    started = time.perf_counter()
    for _ in range(repeats):  # random available actions, as SMACEnv reads a step
        _, terminated, _ = game.step([rng.choice(np.flatnonzero(row)) for row in avail])
        game.get_obs(), game.get_state()
        avail = game.get_avail_actions()
        if terminated:
            game.reset()
            avail = game.get_avail_actions()
    return (time.perf_counter() - started) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--chunks", type=int, default=3)
    parser.add_argument("--out", default=str(OUT / "host_loop.json"))
    args, overrides = parser.parse_known_args()
    overrides = overrides or ["train.iterations_per_eval=5"]
    rows = []
    for seeds in args.seeds:
        config = load_config(overrides + [f"num_seeds={seeds}", "train.t_max=100000000", "wandb.mode=disabled"])
        exp = experiment.make_experiment(config)
        jit_s, jit_steps, jit_first = timed_chunks(exp.chunk_fn, experiment.init_state(exp), args.chunks)
        env = StepFromHost(exp.learner.env)
        runner = HostRunner(exp.learner, [env] * (exp.num_runs * config.train.num_envs), exp.num_runs)
        state = experiment.init_state(exp)
        host_s, host_steps, host_first = timed_chunks(runner.run_chunk, state, args.chunks)
        call_ms = policy_call_ms(runner, state)
        runner.close()
        rows.append({"seeds": seeds, "jitted_steps_per_s": jit_steps / jit_s, "host_steps_per_s": host_steps / host_s,
                     "host_over_jitted": (host_steps / host_s) / (jit_steps / jit_s),
                     "policy_call_ms": call_ms, "jitted_first_chunk_s": jit_first, "host_first_chunk_s": host_first})
    fake_ms = fake_sc2_step_ms()
    print(f"{'seeds':>5} {'jitted steps/s':>15} {'host steps/s':>13} {'host/jitted':>12} {'policy call ms':>15}")
    for r in rows:
        print(f"{r['seeds']:>5} {r['jitted_steps_per_s']:>15.0f} {r['host_steps_per_s']:>13.0f} "
              f"{r['host_over_jitted']:>12.2f} {r['policy_call_ms']:>15.2f}")
    print(f"fake SC2 3m step (tests/fake_smac.py): {fake_ms:.2f} ms")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "device": f"{jax.devices()[0].platform} x{len(jax.devices())} ({platform.machine()})",
        "overrides": overrides, "chunks": args.chunks, "rows": rows, "fake_sc2_step_ms": fake_ms,
    }, indent=1))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
