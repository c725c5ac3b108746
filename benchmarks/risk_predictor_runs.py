"""Train variants of one method side by side and report how the risk predictor kept learning.

    .venv/bin/python benchmarks/risk_predictor_runs.py --name rdn_20k method=rdn seeds=2 train.t_max=20000 \
        --variants agent.risk_scores=standardized agent.risk_scores=paper
    .venv/bin/python benchmarks/risk_predictor_runs.py --name rdn_7x4 method=rdn seeds=8 \
        --variants agent.risk_scores=standardized agent.risk_scores=paper

Each variant (a set of overrides on top of the shared ones) is one ``rmix-train`` program over
its seeds, run one after another in this process. Per variant and seed: the lowest and the final
``alpha_entropy`` (nats) and ``risk_grad_norm`` over the chunks that made TD updates, the final
greedy return and mean alpha; per variant the IQM of the final returns with a 95% bootstrap
interval. Writes benchmarks/results/risk_predictor_<name>.{json,png} (the png: entropy and
gradient norm over env steps, every seed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rmix_jax import analysis
from rmix_jax.config import load_config
from rmix_jax.train import run

OUT = Path(__file__).parent / "results"


def seed_figures(rows: list[dict]) -> dict:
    trained = [r for r in rows if r["active"] and r["td_loss"] is not None and r["alpha_entropy"] is not None]
    entropy = [r["alpha_entropy"] for r in trained]
    grad = [r["risk_grad_norm"] for r in trained if r["risk_grad_norm"] is not None]
    return {
        "min_alpha_entropy": min(entropy), "final_alpha_entropy": entropy[-1],
        "min_risk_grad_norm": min(grad), "final_risk_grad_norm": grad[-1],
        "t_env": [r["t_env"] for r in trained], "alpha_entropy": entropy,
        "risk_grad_norm": [r["risk_grad_norm"] for r in trained],
    }


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_h, ax_g) = plt.subplots(1, 2, figsize=(11, 3.8))
    for index, variant in enumerate(record["variants"]):
        for s, seed in enumerate(variant["seeds"]):
            label = variant["label"] if s == 0 else None
            ax_h.plot(seed["t_env"], seed["alpha_entropy"], color=f"C{index}", alpha=0.7, label=label)
            ax_g.semilogy(seed["t_env"], np.maximum(seed["risk_grad_norm"], 1e-30), color=f"C{index}", alpha=0.7)
    ax_h.axhline(np.log(10), color="grey", lw=0.8, ls=":")
    ax_h.set(xlabel="env steps", ylabel="entropy of P(alpha) (nats)", title="alpha_entropy (ln 10 dotted)")
    ax_g.set(xlabel="env steps", ylabel="norm", title="TD gradient on the predictor (risk_grad_norm)")
    ax_h.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*", help="shared overrides, e.g. method=rdn seeds=8")
    parser.add_argument("--variants", nargs="+", required=True, help="one quoted override set per variant")
    parser.add_argument("--name", required=True, help="suffix of the result files")
    args = parser.parse_args()
    record = {"shared": args.overrides, "variants": []}
    for index, variant in enumerate(args.variants):
        overrides = [*args.overrides, *variant.split()]
        config = load_config([*overrides, "results_dir=results/bench", "wandb.mode=disabled",
                              "checkpoint.every_chunks=0", f"run_name=predictor_{args.name}_{index}"])
        run_dir, rows = run(config)
        summary = json.loads((run_dir / "summary.json").read_text())
        finals = np.asarray([s["final_test_return"] for s in summary["seeds"]])
        iqm, lower, upper = analysis.iqm_interval(finals)
        seeds = [{"seed": s["seed"], "final_test_return": s["final_test_return"],
                  "steps_to_optimum": s["steps_to_optimum"], "final_mean_alpha": s["final_mean_alpha"],
                  **seed_figures([r for r in rows if r["seed"] == s["seed"]])} for s in summary["seeds"]]
        record["variants"].append({
            "label": variant, "command": "rmix-train " + " ".join(overrides), "run_dir": str(run_dir),
            "env": config.env_preset, "t_max": config.train.t_max, "wall_seconds": summary["wall_seconds"],
            "final_return_mean": float(finals.mean()), "final_return_iqm": iqm, "final_return_iqm_ci": [lower, upper],
            "seeds_reaching_optimum": summary["seeds_reaching_optimum"],
            "seeds_at_optimum_finally": summary["seeds_at_optimum_finally"], "seeds": seeds,
        })
    OUT.mkdir(parents=True, exist_ok=True)
    stem = OUT / f"risk_predictor_{args.name}"
    plot(record, stem.with_suffix(".png"))
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2))
    print(f"\n{'variant':<32} {'seed':>4} {'final ret':>9} {'alpha':>5} {'min H':>6} {'final H':>7} "
          f"{'min grad':>9} {'final grad':>10}")
    for v in record["variants"]:
        for s in v["seeds"]:
            print(f"{v['label']:<32} {s['seed']:>4} {s['final_test_return']:>9.2f} {s['final_mean_alpha']:>5.2f} "
                  f"{s['min_alpha_entropy']:>6.3f} {s['final_alpha_entropy']:>7.3f} {s['min_risk_grad_norm']:>9.2e} "
                  f"{s['final_risk_grad_norm']:>10.2e}")
        lo, hi = v["final_return_iqm_ci"]
        print(f"{v['label']:<32} IQM final return {v['final_return_iqm']:.2f} [{lo:.2f}, {hi:.2f}], "
              f"{v['seeds_reaching_optimum']}/{len(v['seeds'])} reached the optimum, "
              f"{v['seeds_at_optimum_finally']} there at the end, {v['wall_seconds']:.0f} s")
    print(f"written: {stem}.json, {stem}.png")


if __name__ == "__main__":
    main()
