"""RMIX against QMIX on a SMAX map at equal env steps: final greedy win rate, table and curves.

Train both and tabulate (one command):

    .venv/bin/python benchmarks/smax_rmix_vs_qmix.py --map 3m --seeds 4 train.t_max=300000

or tabulate runs already made with the CLI (``rmix-train env=smax env.map=3m method=rmix ...``),
optionally each at its first evaluation from ``--up-to`` env steps on:

    .venv/bin/python benchmarks/smax_rmix_vs_qmix.py --map 3m --runs rmix=results/bench/smax3m_rmix qmix=...

Writes benchmarks/results/smax_<map>_rmix_vs_qmix.{json,png} (win rate) and
smax_<map>_rmix_vs_qmix_return.png (``--name X``: smax_<map>_X_rmix_vs_qmix...), and prints, per method,
the final greedy test win rate (last evaluation, ``train.test_episodes`` episodes per
seed): mean, std and IQM over seeds with a 95% stratified-bootstrap interval, plus
the final test return. With ``--final-episodes N`` it also plays each seed's last saved
policy for N greedy episodes (``rmix-eval``'s code; written under each run's ``eval/``) and
tabulates that win rate with a 95% Wilson interval: the last evaluation's 32 episodes put
about +-0.08 (one std) on a win rate near 0.75.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rmix_jax import analysis, results
from rmix_jax.config import METHODS, load_config
from rmix_jax.train import run

OUT = Path(__file__).parent / "results"


def final_values(rows: list[dict], key: str, last: int = 1) -> np.ndarray:
    """Each seed's value at its last evaluation (the mean over its ``last`` evaluations)."""
    return np.asarray([np.mean(ys[-last:]) for _, (_, ys) in sorted(results.curves(rows, key).items())])


def up_to(rows: list[dict], steps: int) -> list[dict]:
    """Each run's rows through its first evaluation at ``steps`` env steps or later (a run
    continued past the others' budget is compared at equal env steps)."""
    kept, done = [], set()
    for row in rows:
        if row["run"] in done:
            continue
        kept.append(row)
        if row.get("active", True) and row.get("test_won") is not None and row["t_env"] >= steps:
            done.add(row["run"])
    return kept


def final_policy(run_dir: Path, episodes: int) -> dict:
    """Each seed's last saved policy over ``episodes`` greedy episodes: win rates with 95% Wilson intervals."""
    from rmix_jax.evaluate import evaluate

    report = evaluate(run_dir, episodes=episodes)
    rates = np.asarray([r["won_rate"] for r in report["runs"]])
    return {
        "final_policy_episodes": episodes,
        "final_policy_eval": report["out_dir"],
        "final_policy_win_rate_per_seed": rates.round(4).tolist(),
        "final_policy_win_rate_ci95_per_seed": [
            [round(v, 4) for v in analysis.win_rate_interval(round(rate * episodes), episodes)] for rate in rates],
        "final_policy_win_rate_mean": float(rates.mean()),
        "final_policy_seeds_above_0_8": int((rates > 0.8).sum()),
    }


def summarise(method: str, run_dir: Path, steps: int | None = None) -> tuple[dict, list[dict]]:
    rows = results.load_metrics(run_dir)
    rows = rows if steps is None else up_to(rows, steps)
    config = results.load_run_config(run_dir)
    won, ret = final_values(rows, "test_won"), final_values(rows, "test_return")
    iqm, lower, upper = analysis.iqm_interval(won)
    steps = [r["t_env"] for r in rows if r["active"]]
    return {
        "method": method,
        "run_dir": str(run_dir),
        "seeds": int(len(won)),
        "env_steps_per_seed": int(max(steps)),
        "t_max": config.train.t_max,
        "test_episodes": config.train.test_episodes,
        "final_win_rate_per_seed": won.round(4).tolist(),
        "final_win_rate_mean": float(won.mean()),
        "final_win_rate_std": float(won.std()),
        "final_win_rate_iqm": iqm,
        "final_win_rate_iqm_ci95": [lower, upper],
        "seeds_above_0_8": int((won > 0.8).sum()),
        # one evaluation's 32 episodes put about +-0.08 (1 std) on a win rate near 0.75
        "win_rate_last_10_evals_per_seed": final_values(rows, "test_won", last=10).round(4).tolist(),
        "final_return_mean": float(ret.mean()),
        **predictor_diagnostics(rows),
    }, rows


def predictor_diagnostics(rows: list[dict]) -> dict:
    """Each seed's risk-level diagnostics at its last chunk: the entropy of P(alpha), the TD gradient
    reaching the predictor and the mean alpha its greedy test episodes acted on (absent for QMIX)."""
    last = {}
    for row in rows:
        if row.get("active", True) and "alpha_entropy" in row:
            last[row["run"]] = row
    if not last:
        return {}
    ordered = [last[run] for run in sorted(last)]

    def mean_alpha(hist: list) -> float:
        counts = np.asarray(hist, np.float64).sum(axis=0)  # over agents: (K,)
        levels = np.arange(1, counts.shape[0] + 1) / counts.shape[0]
        return float((counts * levels).sum() / max(counts.sum(), 1.0))

    return {
        "final_alpha_entropy_per_seed": [round(float(r["alpha_entropy"]), 4) for r in ordered],
        "final_risk_grad_norm_per_seed": [round(float(r["risk_grad_norm"]), 5) for r in ordered],
        "final_test_mean_alpha_per_seed": [round(mean_alpha(r["test_alpha_hist"]), 3) for r in ordered
                                           if r.get("test_alpha_hist") is not None],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--map", default="3m")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--methods", nargs="+", default=None, choices=METHODS,
                        help="methods to train (default rmix qmix; none when --runs is given)")  # overrides go first
    parser.add_argument("--runs", nargs="*", default=[], help="method=run_dir pairs to tabulate instead of training")
    parser.add_argument("--command", default="", help="the command that made --runs, recorded in the JSON")
    parser.add_argument("--name", default="", help="a variant name in the output file names")
    parser.add_argument("--stem", default="", help="the output files' whole name (default smax_<map>_<name>_rmix_vs_qmix)")
    parser.add_argument("--up-to", type=int, default=None,
                        help="tabulate each run at its first evaluation at or after this many env steps")
    parser.add_argument("--final-episodes", type=int, default=0,
                        help="also play each seed's last saved policy for this many greedy episodes")
    args = parser.parse_args()
    if args.final_episodes and args.up_to:
        parser.error("--final-episodes plays each run's last saved policy, which --up-to may not tabulate; "
                     "use one of them")
    stem = args.stem or f"smax_{args.map}_{args.name + '_' if args.name else ''}rmix_vs_qmix"
    run_dirs = dict(pair.split("=", 1) for pair in args.runs)
    methods = args.methods if args.methods is not None else ([] if args.runs else ["rmix", "qmix"])
    for method in methods:
        if method not in run_dirs:
            config = load_config(["env=smax", f"env.map={args.map}", f"method={method}",
                                  f"num_seeds={args.seeds}", "results_dir=results/bench"] + args.overrides)
            run_dirs[method] = str(run(config, progress=True)[0])
    table, curves = [], {}
    for method, run_dir in run_dirs.items():
        entry, rows = summarise(method, Path(run_dir), args.up_to)
        if args.final_episodes:
            entry.update(final_policy(Path(run_dir), args.final_episodes))
        table.append(entry)
        curves[method] = rows
    OUT.mkdir(parents=True, exist_ok=True)
    fig = analysis.plot_iqm_curves(curves, key="test_won", title=f"SMAX {args.map}: greedy test win rate")
    analysis.save_figure(fig, OUT / f"{stem}.png")
    fig = analysis.plot_iqm_curves(curves, key="test_return", title=f"SMAX {args.map}: greedy test return")
    analysis.save_figure(fig, OUT / f"{stem}_return.png")
    command = args.command or "python benchmarks/smax_rmix_vs_qmix.py " + " ".join(
        [f"--map {args.map}", f"--seeds {args.seeds}", *([f"--name {args.name}"] if args.name else []),
         *([f"--up-to {args.up_to}"] if args.up_to else []),
         *([f"--final-episodes {args.final_episodes}"] if args.final_episodes else []), *args.overrides])
    (OUT / f"{stem}.json").write_text(
        json.dumps({"map": args.map, "command": command, "rows": table}, indent=2))
    print(f"\nSMAX {args.map}: final greedy test win rate (last evaluation per seed)")
    print(f"{'method':<8} {'seeds':>5} {'env steps':>10} {'mean':>6} {'std':>6} {'IQM':>6} {'IQM 95% CI':>14} "
          f"{'seeds>0.8':>9} {'return':>7}  mean of the last 10 evaluations per seed")
    for r in table:
        lo, hi = r["final_win_rate_iqm_ci95"]
        print(f"{r['method']:<8} {r['seeds']:>5} {r['env_steps_per_seed']:>10} {r['final_win_rate_mean']:>6.2f} "
              f"{r['final_win_rate_std']:>6.2f} {r['final_win_rate_iqm']:>6.2f} {f'[{lo:.2f}, {hi:.2f}]':>14} "
              f"{r['seeds_above_0_8']:>6}/{r['seeds']:<2} {r['final_return_mean']:>7.2f}  "
              + ", ".join(f"{w:.2f}" for w in r["win_rate_last_10_evals_per_seed"]))
    for r in table:
        if "final_alpha_entropy_per_seed" in r:
            print(f"{r['method']}: final alpha entropy per seed {r['final_alpha_entropy_per_seed']} nats, "
                  f"predictor gradient {r['final_risk_grad_norm_per_seed']}, "
                  f"greedy test mean alpha {r['final_test_mean_alpha_per_seed']}")
    for r in table:
        if "final_policy_episodes" in r:
            per_seed = ", ".join(f"{w:.2f} [{lo:.2f}, {hi:.2f}]" for w, (lo, hi) in zip(
                r["final_policy_win_rate_per_seed"], r["final_policy_win_rate_ci95_per_seed"]))
            print(f"{r['method']}: last saved policy, {r['final_policy_episodes']} greedy episodes per seed: "
                  f"win rate {per_seed}; mean {r['final_policy_win_rate_mean']:.2f}, "
                  f"{r['final_policy_seeds_above_0_8']}/{r['seeds']} above 0.8")


if __name__ == "__main__":
    main()
