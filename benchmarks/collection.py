"""Episode collection alone: milliseconds per rollout of ``train.num_envs`` episodes per seed and
real env steps per second, per method, with the fraction of computed env steps that are real.

    .venv/bin/python benchmarks/collection.py env=smax env.map=3m --seeds 2
    .venv/bin/python benchmarks/collection.py env=smax env.map=5m_vs_6m --seeds 1 4 --epsilon 1.0 0.0 \
        --out benchmarks/results/collection_smax_5m_vs_6m.json

Each row jits and vmaps ``learner.rollout`` over the seeds with the named run axis (as
``run_chunk`` collects), from the
untrained networks, with the same key at every repeat, so every call collects the same
episodes: ``real steps`` is their summed length (the env steps training counts). Two
fractions of real to computed steps: ``full`` if every env is stepped to the episode limit
(S x E x T computed steps), ``stop`` if the step loop ends at the longest episode of the
program (S x E x the longest length; the rollout since issue 27 does this). The script uses
only ``make_learner``, ``learner.init`` and ``learner.rollout``, so it also runs against an
older checkout's package (run it with that checkout's interpreter) for a comparison between
commits on one machine.
Prints a table and writes JSON; all rows run in one process, one after another.
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rmix_jax.config import load_config
from rmix_jax.learner import RUN_AXIS, make_learner

METHODS = {"qmix": ["method=qmix"], "rmix": ["method=rmix"]}


def collect_row(overrides: list[str], method: str, num_seeds: int, epsilon: float, repeats: int) -> dict:
    config = load_config(overrides + METHODS[method] + [f"num_seeds={num_seeds}"])
    # As training collects: vmapped over the seeds with the named run axis, so that the step loop
    # stops for all seeds at once (a rollout without ``over_runs``, an older one, steps to the limit).
    learner = make_learner(config, run_axis=RUN_AXIS)
    named = {"over_runs": True} if "over_runs" in inspect.signature(learner.rollout).parameters else {}
    num_envs, limit = config.train.num_envs, learner.spec.episode_limit
    keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
    params = jax.jit(jax.vmap(lambda k: learner.init(k).params))(keys)
    eps = jnp.full((num_seeds,), epsilon, jnp.float32)
    rollout = jax.jit(jax.vmap(lambda p, k, e: learner.rollout(p, k, e, num_envs, **named)[1].lengths,
                               axis_name=RUN_AXIS))
    started = time.perf_counter()
    lengths = np.asarray(jax.block_until_ready(rollout(params, keys, eps)))  # (S, E)
    compile_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(repeats):
        out = rollout(params, keys, eps)
    jax.block_until_ready(out)
    ms = (time.perf_counter() - started) / repeats * 1e3
    real = float(lengths.sum())
    return {
        "method": method, "seeds": num_seeds, "epsilon": epsilon, "num_envs": num_envs, "episode_limit": limit,
        "num_atoms": config.agent.num_atoms, "rollout_ms": ms, "first_call_s": compile_s,
        "real_steps": real, "mean_length": float(lengths.mean()), "longest": int(lengths.max()),
        "real_steps_per_s": real / (ms / 1e3),
        "real_fraction_full": real / (num_seeds * num_envs * limit),
        "real_fraction_stop": real / (num_seeds * num_envs * int(lengths.max())),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*", default=["env=smax", "env.map=3m"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--epsilon", type=float, nargs="+", default=[1.0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "collection.json"))
    args = parser.parse_args()
    rows = []
    header = (f"{'method':<6} {'seeds':>5} {'eps':>4} {'ms/rollout':>10} {'real steps':>10} {'longest':>7} "
              f"{'real steps/s':>12} {'real/full':>9} {'real/stop':>9}")
    print(header)
    for method in args.methods:
        for seeds in args.seeds:
            for epsilon in args.epsilon:
                r = collect_row(args.overrides, method, seeds, epsilon, args.repeats)
                rows.append(r)
                print(f"{r['method']:<6} {r['seeds']:>5} {r['epsilon']:>4.1f} {r['rollout_ms']:>10.1f} "
                      f"{r['real_steps']:>10.0f} {r['longest']:>7} {r['real_steps_per_s']:>12.0f} "
                      f"{r['real_fraction_full']:>9.3f} {r['real_fraction_stop']:>9.3f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"overrides": args.overrides, "machine": platform.machine(),
                               "devices": [str(d) for d in jax.devices()], "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
