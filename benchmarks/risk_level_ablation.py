"""The paper's Table 1 ablation as one program: static alpha in {0.1, 0.3, 0.5, 0.7, 1.0} and learned alpha.

    .venv/bin/python benchmarks/risk_level_ablation.py [--env macn_12x4] [--seeds 4] [override ...]
    .venv/bin/python benchmarks/risk_level_ablation.py --from-run results/bench/<run>   # table of a finished run

Trains ``rmix-train method=rmix_static sweep.agent.alpha=[0.1,0.3,0.5,0.7,1.0,learned]``:
six points times the seeds, vmapped into one jitted program. Prints a table per
point (final greedy return mean and std over seeds, IQM with a 95% bootstrap
interval, win rate, seeds reaching the optimum and the median env steps to it)
and writes benchmarks/results/risk_level_ablation_<env>.{json,png}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rmix_jax import results
from rmix_jax.config import load_config
from rmix_jax.train import run

OUT = Path(__file__).parent / "results"
ALPHAS = "[0.1,0.3,0.5,0.7,1.0,learned]"


def table_rows(run_dir: Path) -> list[dict]:
    from rmix_jax import analysis

    from rliable import library as rly

    summary = json.loads((run_dir / "summary.json").read_text())
    table = []
    for point in summary["points"]:
        finals = np.asarray([s["final_test_return"] for s in point["seeds"]])
        np.random.seed(0)  # rliable's bootstrap draws from NumPy's global generator
        estimate, interval = rly.get_interval_estimates(
            {"final": finals[:, None]}, lambda x: np.array([analysis.iqm(x[:, 0])]), reps=2000
        )
        iqm = {"iqm": estimate["final"], "lower": interval["final"][0], "upper": interval["final"][1]}
        table.append({
            "alpha": point["values"].get("agent.alpha"),
            "seeds": len(finals),
            "final_return_mean": float(finals.mean()),
            "final_return_std": float(finals.std()),
            "final_return_iqm": float(iqm["iqm"][-1]),
            "final_return_iqm_ci": [float(iqm["lower"][-1]), float(iqm["upper"][-1])],
            "final_won_mean": point["final_test_won_mean"],
            "reached_optimum": point["seeds_reaching_optimum"],
            "median_steps_to_optimum": point["median_steps_to_optimum"],
            "best_return_per_seed": [s["best_test_return"] for s in point["seeds"]],
        })
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--env", default="macn_12x4")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--from-run", type=Path, default=None, help="tabulate a finished sweep run instead of training")
    args = parser.parse_args()
    if args.from_run is None:
        config = load_config([f"env={args.env}", "method=rmix_static", f"sweep.agent.alpha={ALPHAS}",
                              f"num_seeds={args.seeds}", "results_dir=results/bench", "wandb.mode=disabled",
                              "checkpoint.every_chunks=0", *args.overrides])
        run_dir, _ = run(config)
    else:
        run_dir = args.from_run
    config = results.load_run_config(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    table = table_rows(run_dir)
    OUT.mkdir(parents=True, exist_ok=True)
    stem = OUT / f"risk_level_ablation_{config.env_preset}"
    record = {"env": config.env_preset, "t_max": config.train.t_max, "num_seeds": config.num_seeds,
              "wall_seconds": summary["wall_seconds"], "optimal_return": summary["optimal_return"],
              "command": f"rmix-train method=rmix_static env={config.env_preset} 'sweep.agent.alpha={ALPHAS}' "
                         f"seeds={config.num_seeds}", "run_dir": str(run_dir), "table": table}
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2))
    import shutil

    shutil.copy(run_dir / "learning_curve.png", stem.with_suffix(".png"))
    print(f"\n{config.env_preset}, {config.num_seeds} seeds per point, {config.train.t_max} env steps, "
          f"one program, {summary['wall_seconds']:.0f} s")
    print(f"{'alpha':>8} {'final return':>16} {'IQM [95% CI]':>26} {'won':>5} {'reached opt':>11} {'median steps':>12}")
    for r in table:
        median = "-" if r["median_steps_to_optimum"] is None else f"{r['median_steps_to_optimum']:.0f}"
        lo, hi = r["final_return_iqm_ci"]
        print(f"{str(r['alpha']):>8} {r['final_return_mean']:>8.2f} +- {r['final_return_std']:<5.2f} "
              f"{r['final_return_iqm']:>8.2f} [{lo:>7.2f}, {hi:>7.2f}] {r['final_won_mean']:>5.2f} "
              f"{r['reached_optimum']:>5}/{r['seeds']:<5} {median:>12}")
    print(f"written: {stem}.json, {stem}.png")


if __name__ == "__main__":
    main()
