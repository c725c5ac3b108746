"""RMIX against QMIX on MACN at equal env steps: env steps to reach the optimum.

    .venv/bin/python benchmarks/macn_sample_efficiency.py [override ...] [--envs macn_7x4 macn_12x4] [--seeds 8]

For each scenario, trains both methods with the same seeds and budget, then writes
benchmarks/results/macn_<env>_rmix_vs_qmix.png (mean and min-max band of the greedy
test return) and macn_sample_efficiency.json, and prints a table: for each method,
the seeds that reached the optimal return and the median env steps to reach it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rmix_jax import results
from rmix_jax.config import METHODS, load_config, preset_names
from rmix_jax.train import run

OUT = Path(__file__).parent / "results"
MACN_PRESETS = [name for name in preset_names("env") if name.startswith("macn")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*")
    # choices: an override written after --envs or --methods (``--envs macn_7x4 train.t_max=1``)
    # would otherwise be taken as a scenario or method name; put overrides first.
    parser.add_argument("--envs", nargs="+", default=["macn_7x4", "macn_12x4"], choices=MACN_PRESETS)
    parser.add_argument("--methods", nargs="+", default=["rmix", "qmix"], choices=METHODS)
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    table = []
    for env in args.envs:
        runs = {}
        for method in args.methods:
            config = load_config([f"env={env}", f"method={method}", f"num_seeds={args.seeds}",
                                  "results_dir=results/benchmarks"] + args.overrides)
            run_dir, rows = run(config, progress=False)
            runs[method] = rows
            summary = json.loads((run_dir / "summary.json").read_text())
            table.append({"env": env, "method": method, "t_max": config.train.t_max, "seeds": args.seeds,
                          "reached": summary["seeds_reaching_optimum"],
                          "at_optimum_at_end": summary["seeds_at_optimum_finally"],
                          "median_steps_to_optimum": summary["median_steps_to_optimum"],
                          "steps_to_optimum": [s["steps_to_optimum"] for s in summary["seeds"]],
                          "wall_seconds": summary["wall_seconds"], "run_dir": str(run_dir)})
        results.plot_learning_curves(runs, OUT / f"{env}_rmix_vs_qmix.png", title=f"MACN {env}: greedy test return",
                                     optimum=results.optimal_return(config))
    # Keep the rows of scenarios not re-run now, so one scenario can be run at a time.
    path = OUT / "macn_sample_efficiency.json"
    fresh = {(r["env"], r["method"]) for r in table}
    kept = [r for r in (json.loads(path.read_text()) if path.exists() else []) if (r["env"], r["method"]) not in fresh]
    table = kept + table
    path.write_text(json.dumps(table, indent=2))
    print(f"\n{'env':<12} {'method':<8} {'t_max':>7} {'reached opt':>12} {'at opt at end':>14} {'median steps to opt':>20} {'wall s':>7}")
    for r in table:
        median = "-" if r["median_steps_to_optimum"] is None else f"{r['median_steps_to_optimum']:.0f}"
        print(f"{r['env']:<12} {r['method']:<8} {r['t_max']:>7} {r['reached']:>8}/{r['seeds']:<3} "
              f"{r['at_optimum_at_end']:>10}/{r['seeds']:<3} {median:>20} {r['wall_seconds']:>7.0f}")


if __name__ == "__main__":
    main()
