"""Command-line training: ``python -m rmix_jax.train [key=value ...]`` (``rmix-train``).

Runs ``num_seeds`` seeds as one vmapped, jitted program, in chunks of
``train.iterations_per_eval`` iterations each ending with a greedy evaluation;
between chunks Python only shows progress and appends metrics. Writes
``results/<run>/``: config.yaml, metrics.jsonl, learning_curve.png, params/
(orbax), summary.json, and prints a summary table.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from rmix_jax import results
from rmix_jax.config import Config, ConfigError, load_config
from rmix_jax.learner import make_learner

USAGE = """usage: rmix-train [key=value ...]
  method=rmix|rmix_static|rmix_frozen|qmix|vdn|iql|rdn   env=macn_7x4|macn_12x4|macn_7x4_low_risk|smax
  env=smax env.map=3m|5m_vs_6m|8m_vs_9m|...  (any SMAX map; an unknown one lists them all)
  num_seeds=8 seed=0 train.t_max=50000 agent.num_atoms=10 agent.alpha=0.3 ...  (see configs/default.yaml)"""


def run(config: Config, progress: bool = True) -> tuple[Path, list[dict[str, Any]]]:
    """Train every seed of ``config``; return the run directory and its metric rows."""
    from tqdm import tqdm

    run_dir = results.new_run_dir(config, time.strftime("%Y%m%d-%H%M%S"))
    results.write_config(run_dir, config)
    learner = make_learner(config)
    keys = jax.random.split(jax.random.PRNGKey(config.seed), config.num_seeds)
    started = time.time()
    state = jax.jit(jax.vmap(learner.init))(keys)
    run_chunk = jax.jit(jax.vmap(learner.run_chunk), donate_argnums=0)

    rows: list[dict[str, Any]] = []
    t_max = config.train.t_max
    bar = tqdm(total=t_max, unit="step", disable=not progress, desc=f"{config.method} x{config.num_seeds}")
    chunk = 0
    while True:
        state, metrics = run_chunk(state)
        metrics = jax.device_get(metrics)
        new_rows = results.metric_rows(metrics, chunk)
        results.append_metrics(run_dir, new_rows)
        rows.extend(new_rows)
        chunk += 1
        done_steps = int(np.min(metrics["t_env"]))
        bar.update(min(done_steps, t_max) - bar.n)
        bar.set_postfix(test_return=f"{np.mean(metrics['test_return']):.1f}", eps=f"{np.mean(metrics['epsilon']):.2f}")
        if done_steps >= t_max:
            break
    bar.close()
    wall = time.time() - started

    results.save_params(run_dir, jax.device_get(state.params))
    optimum = results.optimal_return(config)
    results.plot_learning_curves(
        {config.method: rows}, run_dir / "learning_curve.png",
        title=f"{config.method} on {config.env_preset}", optimum=optimum,
    )
    summary = summarize(config, rows, wall)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print_summary(summary, run_dir)
    return run_dir, rows


def summarize(config: Config, rows: Sequence[dict[str, Any]], wall_seconds: float) -> dict[str, Any]:
    optimum = results.optimal_return(config)
    per_seed = []
    test = results.curves(rows, "test_return")
    for seed, (xs, ys) in sorted(test.items()):
        last = [r for r in rows if r["seed"] == seed and r["active"]][-1]
        hist = np.asarray(last["test_alpha_hist"], float)
        levels = (np.arange(len(hist)) + 1) / len(hist)
        per_seed.append({
            "seed": seed,
            "env_steps": last["t_env"],
            "final_test_return": float(ys[-1]),
            "best_test_return": float(ys.max()),
            "final_test_won": last["test_won"],
            "steps_to_optimum": None if optimum is None else results.steps_to_reach(xs, ys, optimum),
            "final_mean_alpha": float((hist * levels).sum() / max(hist.sum(), 1.0)),
        })
    reached = [s for s in per_seed if s["steps_to_optimum"] is not None]
    return {
        "method": config.method,
        "env": config.env_preset,
        "num_seeds": config.num_seeds,
        "optimal_return": optimum,
        "seeds_at_optimum_finally": sum(optimum is not None and abs(s["final_test_return"] - optimum) < 1e-3 for s in per_seed),
        "seeds_reaching_optimum": len(reached),
        "median_steps_to_optimum": float(np.median([s["steps_to_optimum"] for s in reached])) if reached else None,
        "wall_seconds": round(wall_seconds, 1),
        "seeds": per_seed,
    }


def print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    print(f"\n{summary['method']} on {summary['env']}: {summary['num_seeds']} seeds, {summary['wall_seconds']} s")
    print(f"{'seed':>4} {'env steps':>10} {'final return':>13} {'best return':>12} {'won':>5} {'steps to opt':>13} {'mean alpha':>11}")
    for s in summary["seeds"]:
        steps = "-" if s["steps_to_optimum"] is None else f"{s['steps_to_optimum']:.0f}"
        print(f"{s['seed']:>4} {s['env_steps']:>10} {s['final_test_return']:>13.2f} {s['best_test_return']:>12.2f} "
              f"{s['final_test_won']:>5.2f} {steps:>13} {s['final_mean_alpha']:>11.2f}")
    if summary["optimal_return"] is not None:
        print(f"optimum {summary['optimal_return']:g}: {summary['seeds_at_optimum_finally']}/{summary['num_seeds']} seeds "
              f"there at the end, {summary['seeds_reaching_optimum']} reached it; median steps to it "
              f"{summary['median_steps_to_optimum']}")
    print(f"results: {run_dir}")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    try:
        config = load_config(args)
    except ConfigError as err:
        print(str(err), file=sys.stderr)
        return 2
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
