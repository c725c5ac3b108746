"""Where an iteration's time goes, per method: the pieces of one training iteration
timed one by one on the same batch, for RMIX, static-alpha RMIX and QMIX.

    .venv/bin/python benchmarks/update_profile.py                              # MACN 7x4, 8 seeds
    .venv/bin/python benchmarks/update_profile.py env=smax env.map=5m_vs_6m --seeds 1 16 \
        --out benchmarks/results/update_profile_smax_5m_vs_6m.json

Pieces (each jitted and vmapped over the seeds, as in training; milliseconds per call):
``rollout`` collects ``train.num_envs`` episodes; ``recurrence`` is the agent network
over a batch of whole episodes, forward and backward (torsos, both GRUs, heads);
``loss fwd`` is the whole loss forward (online and target networks, CVaR, mixer,
TD and QR losses); ``loss+grad`` adds the backward pass, which is what an update
computes before the optimiser step when some run makes a QR update; ``TD only`` is
loss+grad without the QR loss, what every other update computes (the QR loss is skipped
by a ``lax.cond`` over the runs, ``make_learner``'s ``run_axis``). The batch is
``train.batch_size`` episodes collected by the untrained policy, padded to the episode
limit as stored, or with ``--window W`` their first W entries (the time window an update
runs over with ``train.time_windows``), or with ``--pack`` laid end to end in the fewest of
the update's row counts that holds them (``train.pack_episodes``, the SMAX preset).
Prints a table and writes JSON; all rows run in one process, one after another.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from rmix_jax.config import load_config
from rmix_jax.learner import make_learner
from rmix_jax.learner.packing import pack, rows_needed

METHODS = {"rmix": ["method=rmix"], "rmix_static": ["method=rmix_static", "agent.alpha=0.5"], "qmix": ["method=qmix"]}


def mean_ms(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile and warm up
    started = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - started) / repeats * 1e3


def profile(overrides: list[str], num_seeds: int, repeats: int, window: int | None = None, pack_rows: bool = False) -> dict:
    config = load_config(overrides + [f"num_seeds={num_seeds}"])
    learner = make_learner(config)
    tc = config.train
    keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
    state = jax.jit(jax.vmap(learner.init))(keys)
    epsilon = jnp.ones((num_seeds,), jnp.float32)

    def collect(params, key, eps, count):
        return learner.rollout(params, key, eps, count)[0]

    rollout = jax.jit(jax.vmap(lambda p, k, e: collect(p, k, e, tc.num_envs)))
    batch = jax.jit(jax.vmap(lambda p, k, e: collect(p, k, e, tc.batch_size)))(state.params, keys, epsilon)
    stored = batch.filled.shape[-1]
    if pack_rows:  # laid end to end, in the fewest of the update's row counts that holds every seed's batch
        needed = int(jnp.max(jax.vmap(rows_needed)(batch)))
        rows = min(r for r, _ in learner.setup.layouts if r >= needed) if learner.setup.packs else needed
        batch = jax.jit(jax.vmap(lambda b: pack(b, rows)))(batch)
    if window is not None:  # the first ``window`` entries of each episode, as an update's time window takes them
        if not 2 <= window <= stored:
            raise SystemExit(f"--window {window}: must be between 2 and the {stored} entries an episode is stored "
                             f"with (the update's layouts are {list(learner.setup.layouts)})")
        batch = jax.tree.map(lambda v: v[:, :, :window], batch)

    def recurrence(agent_params, episodes):
        atoms, scores = learner.unroll(agent_params, episodes)
        return jnp.sum(atoms) + jnp.sum(scores)

    def loss(params, target_params, episodes, is_qr, with_qr=config.train.use_qr):
        return learner.loss(params, target_params, episodes, is_qr, None, with_qr)[0]

    def td_only(params, target_params, episodes, is_qr):
        return loss(params, target_params, episodes, is_qr, False)

    is_qr = jnp.zeros((num_seeds,), bool)
    row = {"method": config.method, "seeds": num_seeds, "num_atoms": config.agent.num_atoms,
           "episode_steps": int(batch.filled.shape[-1]), "batch_episodes": tc.batch_size,
           "batch_rows": int(batch.filled.shape[-2])}
    row["rollout_ms"] = mean_ms(rollout, state.params, keys, epsilon, repeats=repeats)
    row["recurrence_ms"] = mean_ms(jax.jit(jax.vmap(jax.grad(recurrence))), state.params.agent, batch, repeats=repeats)
    row["loss_fwd_ms"] = mean_ms(jax.jit(jax.vmap(loss)), state.params, state.target_params, batch, is_qr,
                                 repeats=repeats)
    row["loss_grad_ms"] = mean_ms(jax.jit(jax.vmap(jax.grad(loss))), state.params, state.target_params, batch,
                                  is_qr, repeats=repeats)
    row["loss_grad_td_ms"] = mean_ms(jax.jit(jax.vmap(jax.grad(td_only))), state.params, state.target_params, batch,
                                     is_qr, repeats=repeats)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*", default=["env=macn_7x4"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[8])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--window", type=int, default=None,
                        help="time steps of each episode the update runs over (train.time_windows' sizes, e.g. 26 "
                             "or 51 on SMAX); default: the whole stored episode")
    parser.add_argument("--pack", action="store_true",
                        help="the batch's episodes laid end to end in the fewest rows that hold them (train.pack_episodes)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "update_profile.json"))
    args = parser.parse_args()
    if args.pack and args.window is not None:
        raise SystemExit("--pack and --window: choose one (packed rows already hold only the stored entries)")
    rows = []
    for seeds in args.seeds:
        for method in args.methods:
            rows.append(profile(args.overrides + METHODS[method], seeds, args.repeats, args.window, args.pack))
            rows[-1]["method"] = method
            print(f"done: {rows[-1]}", flush=True)
    device = f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind})"
    print(f"\nms per call, {' '.join(args.overrides)}, device {device}, jax {jax.__version__}")
    print(f"{'method':<12} {'seeds':>5} {'M':>4} {'rollout':>9} {'recurrence':>11} {'loss fwd':>9} {'loss+grad':>10} {'TD only':>8}")
    for r in rows:
        print(f"{r['method']:<12} {r['seeds']:>5} {r['num_atoms']:>4} {r['rollout_ms']:>9.1f} {r['recurrence_ms']:>11.1f} "
              f"{r['loss_fwd_ms']:>9.1f} {r['loss_grad_ms']:>10.1f} {r['loss_grad_td_ms']:>8.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"device": device, "machine": platform.machine(), "jax": jax.__version__,
                                          "overrides": args.overrides, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
