"""Where does a learned risk level change within an episode? RMIX on MACN with slippery moves.

    .venv/bin/python benchmarks/macn_slip_alpha.py [--slip 0.1] [--seeds 8] [override ...]
    .venv/bin/python benchmarks/macn_slip_alpha.py --run results/bench/<run>   # a finished run
    .venv/bin/python benchmarks/macn_slip_alpha.py --run <learned run> --static <static sweep run>

With ``env.slip_prob`` an agent's move is replaced by a random one, so walking next to the
cliff risks falling in at test time too: caution pays near the cliff and costs steps away from
it. Trains ``rmix-train env=macn_7x4 env.slip_prob=<slip> seeds=<seeds>`` (unless --run is
given), then plays each seed's final policy greedily (the slips stay) for --episodes episodes
and tabulates the mean alpha acted on by the agents' Manhattan distance to the nearest cliff
cell (agents at the goal left out). Writes benchmarks/results/macn_slip_alpha_<slip>.{json,png} (the png:
mean alpha by distance per seed, and each arm's greedy return per seed with its IQM and 95% interval) and
docs/figures/macn_slip_episode_alpha_<slip>.png (one episode's reward and alphas, the paper's Fig. 11).
``--replot`` redraws the results png from the JSON alone.

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
    parser.add_argument("--replot", action="store_true", help="redraw the results png from the JSON and stop")
    args = parser.parse_args()
    out = ROOT / "benchmarks" / "results" / f"macn_slip_alpha_{args.slip}.json"
    if args.replot:
        plot_record(json.loads(out.read_text()), out.with_suffix(".png"), args.slip)
        print(f"written: {out.with_suffix('.png')}")
        return
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
    out.write_text(json.dumps(record, indent=2))
    plot_record(record, out.with_suffix(".png"), args.slip)
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
    print(f"written: {out}, {out.with_suffix('.png')}, {figure}")


def plot_record(record: dict, path: Path, slip: float) -> None:
    """Mean alpha by distance to the cliff per seed (solid: seeds whose policy reaches the goal), and each
    arm's greedy return per seed with its IQM and 95% bootstrap interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_a, ax_r) = plt.subplots(1, 2, figsize=(11, 3.8))
    for s in record["seeds"]:
        cells = sorted((int(d), v[0]) for d, v in s["alpha_by_distance"].items())
        reached = s["both_at_goal"] > 0.5
        ax_a.plot([d for d, _ in cells], [a for _, a in cells], marker="o", alpha=0.8,
                  linestyle="-" if reached else ":", label=f"seed {s['seed']} ({s['return_mean']:.0f})")
    ax_a.set(xlabel="Manhattan distance to the nearest cliff cell", ylabel="mean alpha acted on", ylim=(0, 1.05),
             title="learned alpha by distance (dotted: never at the goal)")
    ax_a.set_xticks(sorted({int(d) for s in record["seeds"] for d in s["alpha_by_distance"]}))
    ax_a.legend(fontsize=7, ncol=2)
    for index, arm in enumerate(record["greedy_returns"]):
        returns = arm["returns_per_seed"]
        ax_r.scatter(np.full(len(returns), index) + np.linspace(-0.15, 0.15, len(returns)), returns, s=12, alpha=0.7)
        lo, hi = arm["iqm_ci"]
        ax_r.errorbar(index + 0.3, arm["iqm"], yerr=[[arm["iqm"] - lo], [hi - arm["iqm"]]], fmt="s", color="k",
                      capsize=3)
    ax_r.set_xticks(range(len(record["greedy_returns"])), [a["alpha"] for a in record["greedy_returns"]],
                    rotation=30, fontsize=8)
    ax_r.set(ylabel=f"greedy return ({record['episodes']} episodes per seed)",
             title="per seed (dots); IQM and 95% interval (black)")
    fig.suptitle(f"MACN 7x4, slip {slip}")
    fig.tight_layout()
    analysis.save_figure(fig, path)


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
