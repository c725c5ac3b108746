"""Where does a learned risk level change within an episode? RMIX on MACN with slippery moves.

    .venv/bin/python benchmarks/macn_slip_alpha.py [--slip 0.1] [--seeds 8] [override ...]
    .venv/bin/python benchmarks/macn_slip_alpha.py --run results/bench/<run>   # a finished run
    .venv/bin/python benchmarks/macn_slip_alpha.py --run <learned run> --static <static sweep run>

With ``env.slip_prob`` an agent's move is replaced by a random one, so walking next to the
cliff risks falling in at test time too: caution pays near the cliff and costs steps away from
it. Trains ``rmix-train env=macn_7x4 env.slip_prob=<slip> seeds=<seeds>`` (unless --run is
given), then plays each seed's final policy greedily (the slips stay) for --episodes episodes
and tabulates the mean alpha acted on by the agents' Manhattan distance to the nearest cliff
cell (agents at the goal left out). Writes benchmarks/results/macn_slip_alpha_<slip>.json and
docs/figures/macn_slip_episode_alpha_<slip>.png (one episode's reward and alphas, the paper's Fig. 11).

``--static`` takes a finished ``rmix-train method=rmix_static 'sweep.agent.alpha=[...]'`` run on
the same slippery map and plays every point's final policies the same way, so the learned
risk level's greedy return (IQM over seeds, 95% bootstrap interval) stands beside each static
level's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from rmix_jax import analysis
from rmix_jax.config import load_config
from rmix_jax.train import run

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--slip", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--run", type=Path, default=None, help="a finished run to analyse instead of training")
    parser.add_argument("--static", type=Path, default=None, help="a finished static-alpha sweep run to compare")
    args = parser.parse_args()
    overrides = ["env=macn_7x4", f"env.slip_prob={args.slip}", f"num_seeds={args.seeds}", *args.overrides]
    if args.run is None:
        config = load_config([*overrides, "results_dir=results/bench", "wandb.mode=disabled",
                              "checkpoint.every_chunks=0", f"run_name=macn_slip_{args.slip}"])
        run_dir, _ = run(config)
    else:
        run_dir = args.run
    loaded = analysis.load_run(run_dir)
    per_seed, pooled = [], {}
    for seed in range(loaded.num_seeds):
        trace = analysis.trace_episodes(loaded.learner, loaded.seed_params(seed), jax.random.PRNGKey(100 + seed),
                                        num_episodes=args.episodes)
        table = analysis.alpha_by_cliff_distance(loaded.config, trace)
        for d, (mean, count) in table.items():
            total, n = pooled.get(d, (0.0, 0))
            pooled[d] = (total + mean * count, n + count)
        per_seed.append({"seed": seed, "return_mean": float(trace.returns.mean()),
                         "both_at_goal": float(np.mean(trace.won)),
                         "alpha_by_distance": {str(d): v for d, v in table.items()}, "trace": trace})
    arms = [returns_row("learned", [s["return_mean"] for s in per_seed], [s["both_at_goal"] for s in per_seed])]
    if args.static is not None:
        arms += static_rows(args.static, args.episodes)
    best = max(per_seed, key=lambda s: s["return_mean"])
    figure = ROOT / "docs" / "figures" / f"macn_slip_episode_alpha_{args.slip}.png"
    analysis.save_figure(analysis.plot_episode_alpha(
        best["trace"], title=f"MACN 7x4, slip {args.slip}: seed {best['seed']}, one greedy episode"), figure)
    for s in per_seed:
        del s["trace"]
    record = {"command": "rmix-train " + " ".join(overrides), "run_dir": str(run_dir), "episodes": args.episodes,
              "pooled_alpha_by_distance": {str(d): [t / n, n] for d, (t, n) in sorted(pooled.items())},
              "seeds": per_seed, "figure_seed": best["seed"], "greedy_returns": arms,
              "static_run_dir": None if args.static is None else str(args.static)}
    out = ROOT / "benchmarks" / "results" / f"macn_slip_alpha_{args.slip}.json"
    out.write_text(json.dumps(record, indent=2))
    distances = sorted(pooled)
    print(f"\nmean alpha by distance to the cliff, {args.episodes} greedy episodes per seed, slip {args.slip}")
    print(f"{'seed':>4} {'return':>7} " + " ".join(f"{'d=' + str(d):>6}" for d in distances))
    for s in per_seed:
        cells = [s["alpha_by_distance"].get(str(d)) for d in distances]
        print(f"{s['seed']:>4} {s['return_mean']:>7.1f} " + " ".join("     -" if c is None else f"{c[0]:>6.2f}" for c in cells))
    print(f"{'all':>4} {'':>7} " + " ".join(f"{pooled[d][0] / pooled[d][1]:>6.2f}" for d in distances))
    print(f"{'n':>4} {'':>7} " + " ".join(f"{pooled[d][1]:>6}" for d in distances))
    print(f"\ngreedy return of the final policies, {args.episodes} episodes per seed (slips included)")
    print(f"{'alpha':<10} {'mean':>7} {'IQM [95% CI]':>24} {'both at goal':>12}")
    for a in arms:
        lo, hi = a["iqm_ci"]
        print(f"{a['alpha']:<10} {a['mean']:>7.1f} {a['iqm']:>8.1f} [{lo:>6.1f}, {hi:>6.1f}] {a['both_at_goal']:>12.2f}")
    print(f"written: {out}, {figure}")


def returns_row(alpha: str, returns: list[float], at_goal: list[float]) -> dict:
    iqm, lower, upper = analysis.iqm_interval(np.asarray(returns))
    return {"alpha": alpha, "returns_per_seed": returns, "mean": float(np.mean(returns)), "iqm": iqm,
            "iqm_ci": [lower, upper], "both_at_goal": float(np.mean(at_goal))}


def static_rows(run_dir: Path, episodes: int) -> list[dict]:
    """Every static point's final policies played greedily, one row per point."""
    loaded = analysis.load_run(run_dir)
    rows = []
    for point, values in enumerate(loaded.config.sweep_points()):
        returns, at_goal = [], []
        for seed in range(loaded.num_seeds):
            trace = analysis.trace_episodes(loaded.learner, loaded.seed_params(seed, point=point),
                                            jax.random.PRNGKey(100 + seed), num_episodes=episodes,
                                            hyper=loaded.point_hyper(point))
            returns.append(float(trace.returns.mean()))
            at_goal.append(float(np.mean(trace.won)))
        rows.append(returns_row(f"static {values['agent.alpha']}", returns, at_goal))
    return rows


if __name__ == "__main__":
    main()
