"""Does the risk predictor's softmax saturate as the returns grow? Both score forms, one MACN batch.

    .venv/bin/python benchmarks/risk_scores_scale.py [--env macn_7x4] [--episodes 32] [override ...]

For each score form (``agent.risk_scores``) an RMIX learner is initialised and a batch of
epsilon = 1 episodes collected. The atom head is then shifted (its bias plus an offset: every
atom, current and history, moves by it, as a return scale of that size does in training) or
scaled (kernel and bias times 10), and over the batch's filled agent-steps the script reports
the mean of max_k P(alpha_k), the mean entropy of P(alpha) and the norm of the TD loss's
gradient on the predictor's parameters. Writes benchmarks/results/risk_scores_scale.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rmix_jax import ops
from rmix_jax.config import load_config
from rmix_jax.learner import make_learner
from rmix_jax.networks import predictor_norm

OUT = Path(__file__).parent / "results"
SCALES = [("offset 0", 0.0, 1.0), ("offset -5", -5.0, 1.0), ("offset -20", -20.0, 1.0),
          ("offset -50", -50.0, 1.0), ("x10", 0.0, 10.0)]


def measure(overrides: list[str], episodes: int) -> list[dict]:
    learner = make_learner(load_config(overrides))
    state = learner.init(jax.random.PRNGKey(0))
    batch, _ = learner.rollout(state.params, jax.random.PRNGKey(1), jnp.float32(1.0), episodes)
    mask = np.asarray(batch.filled[:, :-1], bool)

    @jax.jit
    def figures(params):
        _, scores = learner.unroll(params.agent, batch)
        grads = jax.grad(lambda p: learner.loss(p, params, batch, jnp.bool_(False))[0])(params)
        risk = predictor_norm(grads.agent)
        probs = jax.nn.softmax(scores[:, :-1], axis=-1)
        return probs.max(-1), ops.softmax_entropy(scores[:, :-1]), risk

    rows = []
    for label, offset, factor in SCALES:
        inner = dict(state.params.agent["params"])
        inner["head_kernel"] = inner["head_kernel"] * factor
        inner["head_bias"] = inner["head_bias"] * factor + offset
        params = state.params.replace(agent={"params": inner})
        max_p, entropy, risk = figures(params)
        rows.append({"atoms": label, "mean_max_p": float(np.asarray(max_p)[mask].mean()),
                     "mean_entropy": float(np.asarray(entropy)[mask].mean()), "risk_grad_norm": float(risk)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--env", default="macn_7x4")
    parser.add_argument("--episodes", type=int, default=32)
    args = parser.parse_args()
    record = {"env": args.env, "episodes": args.episodes, "overrides": args.overrides,
              "command": "python benchmarks/risk_scores_scale.py " + " ".join([f"--env {args.env}", *args.overrides]),
              "forms": {}}
    print(f"{'scores':<13} {'atoms':<11} {'mean max P':>10} {'H (nats)':>9} {'TD grad on predictor':>21}")
    for form in ("standardized", "paper"):
        rows = measure([f"env={args.env}", "method=rmix", f"agent.risk_scores={form}", *args.overrides], args.episodes)
        record["forms"][form] = rows
        for r in rows:
            print(f"{form:<13} {r['atoms']:<11} {r['mean_max_p']:>10.3f} {r['mean_entropy']:>9.3f} "
                  f"{r['risk_grad_norm']:>21.3e}")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"risk_scores_scale_{args.env}.json"
    path.write_text(json.dumps(record, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
