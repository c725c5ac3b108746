"""The paper's Table 1 ablation: static alpha against learned alpha, with both score forms and the reference's frozen predictor.

    .venv/bin/python benchmarks/risk_level_ablation.py [--env macn_12x4] [--seeds 8] [override ...]
    .venv/bin/python benchmarks/risk_level_ablation.py --env macn_7x4 --runs sweep=DIR paper=DIR frozen=DIR

Arms, each a vmapped program over the seeds (the first also over its six points):

- ``sweep``: ``method=rmix_static sweep.agent.alpha=[0.1,0.3,0.5,0.7,1.0,learned]`` (static
  alpha 0.1-1.0 and learned alpha with the default, standardized scores);
- ``paper``: ``method=rmix agent.risk_scores=paper`` (learned alpha, the paper's raw-atom scores);
- ``frozen``: ``method=rmix_frozen`` (the reference code: the predictor never trains).

``--runs`` tabulates finished runs instead of training them (an arm not given is trained).
Prints one line per arm (final greedy return mean and std over seeds, IQM with a 95%
bootstrap interval, seeds reaching the optimum, the predictor's final alpha entropy and
gradient norm) and writes benchmarks/results/risk_level_ablation_<env>.{json,png}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rmix_jax import analysis, results
from rmix_jax.config import load_config
from rmix_jax.train import run

OUT = Path(__file__).parent / "results"
ALPHAS = "[0.1,0.3,0.5,0.7,1.0,learned]"
ARMS = {
    "sweep": ["method=rmix_static", f"sweep.agent.alpha={ALPHAS}"],
    "paper": ["method=rmix", "agent.risk_scores=paper"],
    "frozen": ["method=rmix_frozen"],
}


def arm_label(arm: str, values: dict) -> str:
    if arm == "sweep":
        alpha = values.get("agent.alpha")
        return "learned (standardized)" if alpha == "learned" else f"static {alpha}"
    return {"paper": "learned (paper scores)", "frozen": "frozen (reference)"}[arm]


def _mean_of(seeds: list[dict], key: str) -> float | None:
    values = [s[key] for s in seeds if s.get(key) is not None]
    return float(np.mean(values)) if values else None


def arm_rows(arm: str, run_dir: Path) -> list[dict]:
    """One table row per point of the arm's run, and its metric rows for the plot."""
    summary = json.loads((run_dir / "summary.json").read_text())
    points = summary.get("points") or [{"point": 0, "values": {}, **summary}]
    metric_rows = results.rows_by_point(results.load_metrics(run_dir))
    table = []
    for point in points:
        finals = np.asarray([s["final_test_return"] for s in point["seeds"]])
        iqm, lower, upper = analysis.iqm_interval(finals)
        table.append({
            "arm": arm_label(arm, point["values"]),
            "run_dir": str(run_dir),
            "seeds": len(finals),
            "final_return_per_seed": finals.tolist(),
            "final_return_mean": float(finals.mean()),
            "final_return_std": float(finals.std()),
            "final_return_iqm": iqm,
            "final_return_iqm_ci": [lower, upper],
            "final_won_mean": point["final_test_won_mean"],
            "reached_optimum": point["seeds_reaching_optimum"],
            "at_optimum_finally": point["seeds_at_optimum_finally"],
            "median_steps_to_optimum": point["median_steps_to_optimum"],
            "final_mean_alpha": _mean_of(point["seeds"], "final_mean_alpha"),
            "final_alpha_entropy": _mean_of(point["seeds"], "final_alpha_entropy"),
            "final_risk_grad_norm": _mean_of(point["seeds"], "final_risk_grad_norm"),
            "wall_seconds": summary["wall_seconds"],
            "_rows": metric_rows[point["point"]],
        })
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--env", default="macn_12x4")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--runs", nargs="*", default=[], metavar="ARM=DIR", help="finished runs to tabulate")
    parser.add_argument("--name", default="", help="suffix of the result files")
    args = parser.parse_args()
    given = dict(item.split("=", 1) for item in args.runs)
    commands, table = {}, []
    for arm in args.arms:
        overrides = [f"env={args.env}", *ARMS[arm], f"num_seeds={args.seeds}", *args.overrides]
        commands[arm] = "rmix-train " + " ".join(f"'{o}'" if "[" in o else o for o in overrides)
        if arm in given:
            run_dir = Path(given[arm])
        else:
            config = load_config([*overrides, "results_dir=results/bench", "wandb.mode=disabled",
                                  "checkpoint.every_chunks=0", f"run_name=ablation_{args.env}{args.name}_{arm}"])
            run_dir, _ = run(config)
        table += arm_rows(arm, run_dir)
    config = results.load_run_config(Path(table[0]["run_dir"]))
    stem = OUT / f"risk_level_ablation_{args.env}{args.name}"
    OUT.mkdir(parents=True, exist_ok=True)
    results.plot_learning_curves({r["arm"]: r["_rows"] for r in table}, stem.with_suffix(".png"),
                                 title=f"RMIX risk levels on {args.env}, {args.seeds} seeds per arm",
                                 optimum=results.optimal_return(config))
    for r in table:
        del r["_rows"]
    record = {"env": args.env, "t_max": config.train.t_max, "num_seeds": args.seeds,
              "optimal_return": results.optimal_return(config), "commands": commands, "table": table}
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2))
    print(f"\n{args.env}, {args.seeds} seeds per arm, {config.train.t_max} env steps")
    print(f"{'arm':<24} {'final return':>16} {'IQM [95% CI]':>26} {'reached':>7} {'at opt':>6} "
          f"{'alpha':>5} {'H(alpha)':>8} {'risk grad':>9}")
    for r in table:
        lo, hi = r["final_return_iqm_ci"]
        alpha, entropy, grad = (r[k] for k in ("final_mean_alpha", "final_alpha_entropy", "final_risk_grad_norm"))
        print(f"{r['arm']:<24} {r['final_return_mean']:>8.2f} +- {r['final_return_std']:<5.2f} "
              f"{r['final_return_iqm']:>8.2f} [{lo:>7.2f}, {hi:>7.2f}] {r['reached_optimum']:>3}/{r['seeds']:<3} "
              f"{r['at_optimum_finally']:>2}/{r['seeds']:<3} {alpha:>5.2f} "
              f"{'-' if entropy is None else f'{entropy:.3f}':>8} {'-' if grad is None else f'{grad:.2e}':>9}")
    print(f"written: {stem}.json, {stem}.png")


if __name__ == "__main__":
    main()
