"""Training throughput: env steps per second with learning, RMIX vs QMIX, at several seed
counts, next to random-policy env stepping alone (the ceiling), with compile time and memory.

    .venv/bin/python benchmarks/throughput.py                       # MACN 7x4, 1 and 8 seeds
    .venv/bin/python benchmarks/throughput.py env=smax env.map=5m_vs_6m --seeds 1 4 16 \
        --out benchmarks/results/throughput_smax_5m_vs_6m.json
    .venv/bin/python benchmarks/throughput.py --seeds 8 --devices 1 2    # runs sharded over 1, then 2 devices
    .venv/bin/python benchmarks/throughput.py env=smax env.map=3m --seeds 4 \
        --variants train.time_windows=1 train.time_windows=4     # two settings side by side
    .venv/bin/python benchmarks/throughput.py env=smax env.map=3m --seeds 2 --jaxmarl ~/JaxMARL
        # and JaxMARL's own QMIX script (baselines/QLearning/qmix_rnn.py of that checkout) at the same sizes

``--devices`` times the training rows with the runs sharded over that many devices, as
``rmix-train`` does; on a CPU the script first makes the largest count of host devices
(XLA's ``--xla_force_host_platform_device_count``), so the counts compare in one process.

Prints a table and writes JSON. All rows run in one process, one after another, so
their ratios are comparable. ``replay`` is each system's replay ratio: time steps its
updates sample (padding included) per env step collected.

``--jaxmarl PATH`` adds JaxMARL's QMIX baseline (a hydra app, so its own process; it needs
the ``bench`` extra) on the same SMAX map with the same agent and mixer sizes, run twice,
to ``TOTAL_TIMESTEPS`` T and 3T: its rate is the difference in env steps over the
difference in wall time, so compilation and start-up drop out (T is past its learning
start). Its replay ratio is ``NUM_EPOCHS x BUFFER_BATCH_SIZE / NUM_ENVS`` (it samples
stored 128-step segments). Its in-training tests are turned off. Memory: ``state MB/seed`` is the training state
(parameters, optimiser states and the replay buffer, which dominates) per seed;
``peak RSS MB`` is the process's peak resident memory so far (it only grows).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*", default=["env=macn_7x4"])
    parser.add_argument("--chunks", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--devices", type=int, nargs="+", default=[1],
                        help="shard the training rows' runs over this many devices (each count in turn)")
    parser.add_argument("--random-iterations", type=int, default=200)
    parser.add_argument("--variants", nargs="+", default=[""],
                        help="time the training rows once per override (space-separated in one string), in turn")
    parser.add_argument("--jaxmarl", default=None,
                        help="a JaxMARL checkout: also time its baselines/QLearning/qmix_rnn.py (SMAX only)")
    parser.add_argument("--jaxmarl-steps", type=float, default=200000,
                        help="T: JaxMARL's script runs to T and to 3T env steps per seed")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "throughput.json"))
    return parser


if __name__ == "__main__":
    # The CPU devices must exist before JAX starts its backend, which importing
    # rmix_jax.experiment does (rmix_jax.train does not); harmless on accelerators.
    from rmix_jax.train import use_cpu_devices

    use_cpu_devices(max(_parser().parse_known_args()[0].devices))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from rmix_jax import experiment  # noqa: E402
from rmix_jax.config import load_config  # noqa: E402
from rmix_jax.learner import make_learner  # noqa: E402


def time_training(overrides: list[str], num_seeds: int, chunks: int, num_devices: int | None = None) -> dict:
    """The training program ``rmix-train`` runs, sharded over the first ``num_devices`` devices (default: 1)."""
    config = load_config(overrides + [f"num_seeds={num_seeds}", "train.t_max=100000000"])
    exp = experiment.make_experiment(config, devices=jax.devices()[: num_devices or 1])
    started = time.perf_counter()
    state = experiment.init_state(exp)
    run_chunk = exp.chunk_fn
    state, _ = run_chunk(state)  # compile, and fill the buffer past one batch
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - started
    steps_before, updates_before = int(np.sum(state.t_env)), int(np.sum(state.updates))
    windows = []
    started = time.perf_counter()
    for _ in range(chunks):
        state, metrics = run_chunk(state)
        windows.append(metrics["update_window"])
    jax.block_until_ready(state)
    wall = time.perf_counter() - started
    steps = int(np.sum(state.t_env)) - steps_before
    # time steps the updates sampled: updates x batch x the loss's window (padding included)
    sampled = (int(np.sum(state.updates)) - updates_before) * config.train.batch_size * float(np.nanmean(windows))
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
    used = 1 if exp.sharding is None else len(exp.sharding.device_set)
    return {"method": config.method, "seeds": num_seeds, "devices": used, "env_steps": steps, "seconds": wall,
            "steps_per_s": steps / wall, "first_chunk_s": compile_s, "replay_ratio": sampled / max(steps, 1),
            "state_mb_per_seed": state_bytes / num_seeds / 2**20, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def time_random_policy(overrides: list[str], num_seeds: int, iterations: int = 200) -> dict:
    """Random valid actions, env stepping alone, num_envs episodes per seed per iteration."""
    config = load_config(overrides)
    env = make_learner(config).env
    num_envs, limit = config.train.num_envs, env.spec.episode_limit

    def episode(key):
        env_state, ts = env.reset(key)

        def step(carry, key):
            env_state, ts, done, steps = carry
            act_key, env_key = jax.random.split(key)
            logits = jnp.where(ts.avail > 0, 0.0, -jnp.inf)
            actions = jax.random.categorical(act_key, logits)
            env_state, ts = env.step(env_key, env_state, actions)
            steps = steps + (~done).astype(jnp.int32)
            return (env_state, ts, done | ts.terminated | ts.truncated, steps), None

        (_, _, _, steps), _ = jax.lax.scan(step, (env_state, ts, jnp.bool_(False), jnp.int32(0)),
                                           jax.random.split(key, limit))
        return steps

    run = jax.jit(jax.vmap(jax.vmap(episode)))
    def keys_for(i: int) -> jax.Array:
        keys = jax.random.split(jax.random.PRNGKey(i), num_seeds * num_envs)
        return keys.reshape(num_seeds, num_envs, *keys.shape[1:])

    jax.block_until_ready(run(keys_for(0)))
    started = time.perf_counter()
    total = 0
    for i in range(iterations):
        total += int(np.sum(run(keys_for(i + 1))))
    wall = time.perf_counter() - started
    return {"method": "random policy (env only)", "seeds": num_seeds, "env_steps": total, "seconds": wall,
            "steps_per_s": total / wall, "first_chunk_s": None, "state_mb_per_seed": None,
            "peak_rss_mb": peak_rss_mb()}


def time_jaxmarl_qmix(path: str, overrides: list[str], num_seeds: int, total: float) -> dict:
    """JaxMARL's own QMIX script on the same SMAX map and sizes, timed by difference of two lengths."""
    import subprocess
    import tempfile

    import yaml

    config = load_config(overrides)
    if config.env.name != "smax":
        sys.exit("--jaxmarl: JaxMARL's QMIX baseline runs on SMAX; pass env=smax env.map=<map>")
    script = Path(path).expanduser().resolve() / "baselines" / "QLearning" / "qmix_rnn.py"
    if not script.is_file():
        sys.exit(f"--jaxmarl {path}: no baselines/QLearning/qmix_rnn.py there; pass a JaxMARL checkout")
    alg = yaml.safe_load((script.parent / "config" / "alg" / "ql_rnn_smax.yaml").read_text())
    sizes = [f"alg.MAP_NAME={config.env.map}", f"alg.HIDDEN_SIZE={config.agent.hidden_dim}",
             f"alg.MIXER_EMBEDDING_DIM={config.mixer.embed_dim}",
             f"alg.MIXER_HYPERNET_HIDDEN_DIM={config.mixer.hypernet_hidden}"]
    if total <= alg["LEARNING_STARTS"]:
        sys.exit(f"--jaxmarl-steps {total:g}: use more than its LEARNING_STARTS ({alg['LEARNING_STARTS']:g})")
    walls = []
    with tempfile.TemporaryDirectory() as cwd:  # hydra writes its outputs/ under the working directory
        for steps in (total, 3 * total):
            command = [sys.executable, str(script), "+alg=ql_rnn_smax", *sizes, f"alg.TOTAL_TIMESTEPS={steps:g}",
                       "alg.TEST_DURING_TRAINING=False", f"NUM_SEEDS={num_seeds}", "WANDB_MODE=disabled",
                       "SAVE_PATH=null"]
            started = time.perf_counter()
            done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
            walls.append(time.perf_counter() - started)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                sys.exit(f"--jaxmarl: {script.name} failed ({done.returncode}): {tail[0][:200]}")
    # each run takes TOTAL_TIMESTEPS // (NUM_STEPS * NUM_ENVS) updates of NUM_STEPS * NUM_ENVS env steps
    per_update = alg["NUM_STEPS"] * alg["NUM_ENVS"]
    steps = [int(t // per_update) * per_update for t in (total, 3 * total)]
    if walls[1] <= walls[0]:  # start-up noise larger than the extra training: nothing to measure
        sys.exit(f"--jaxmarl: the run to 3T took {walls[1]:.0f} s, to T {walls[0]:.0f} s; raise --jaxmarl-steps")
    rate = num_seeds * (steps[1] - steps[0]) / (walls[1] - walls[0])
    return {"method": "jaxmarl qmix_rnn.py", "seeds": num_seeds, "devices": 1, "env_steps": num_seeds * steps[1],
            "seconds": walls[1] - walls[0], "steps_per_s": rate, "first_chunk_s": None,
            "replay_ratio": alg["NUM_EPOCHS"] * alg["BUFFER_BATCH_SIZE"] / alg["NUM_ENVS"],
            "state_mb_per_seed": None, "peak_rss_mb": None, "walls_s": walls, "command_sizes": sizes}


def main() -> None:
    args = _parser().parse_args()
    if max(args.devices) > len(jax.devices()):
        sys.exit(f"--devices {max(args.devices)}: only {len(jax.devices())} devices here; ask for fewer")
    rows = []
    for seeds in args.seeds:
        rows.append(time_random_policy(args.overrides, seeds, args.random_iterations))
        for devices in args.devices:
            for method in ("rmix", "qmix"):
                for variant in args.variants:
                    label = f"{method} {variant}".strip()
                    overrides = args.overrides + [f"method={method}"] + variant.split()
                    try:
                        rows.append({**time_training(overrides, seeds, args.chunks, devices), "method": label})
                    except jax.errors.JaxRuntimeError as err:  # e.g. RESOURCE_EXHAUSTED: report it as a row
                        reason = str(err).splitlines()[0][:120]
                        rows.append({"method": label, "seeds": seeds, "devices": devices, "env_steps": 0, "seconds": None,
                                     "steps_per_s": None, "first_chunk_s": None, "state_mb_per_seed": None,
                                     "peak_rss_mb": peak_rss_mb(), "error": reason})
                    print(f"done: {rows[-1]}", flush=True)
        if args.jaxmarl:
            rows.append(time_jaxmarl_qmix(args.jaxmarl, args.overrides, seeds, args.jaxmarl_steps))
            print(f"done: {rows[-1]}", flush=True)
    device = f"{jax.devices()[0].platform} x{len(jax.devices())} ({platform.processor() or platform.machine()})"
    config = load_config(args.overrides)
    where = config.env_preset + (f" {config.env.map}" if config.env.name == "smax" else "")
    print(f"\nthroughput on {where} ({' '.join(args.overrides)}), device {device}, jax {jax.__version__}")
    width = max(26, *(len(r["method"]) for r in rows))
    print(f"{'method':<{width}} {'seeds':>5} {'devices':>7} {'env steps/s':>12} {'per seed':>9} {'replay':>7} "
          f"{'first chunk s':>14} {'state MB/seed':>14} {'peak RSS MB':>12}")
    for r in rows:
        used = r.get("devices", "-")
        if r["steps_per_s"] is None:
            print(f"{r['method']:<{width}} {r['seeds']:>5} {used:>7}  failed: {r['error']}")
            continue
        first = "-" if r["first_chunk_s"] is None else f"{r['first_chunk_s']:.1f}"
        state_mb = "-" if r["state_mb_per_seed"] is None else f"{r['state_mb_per_seed']:.1f}"
        replay = "-" if r.get("replay_ratio") is None else f"{r['replay_ratio']:.2f}"
        rss = "-" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f}"
        print(f"{r['method']:<{width}} {r['seeds']:>5} {used:>7} {r['steps_per_s']:>12.0f} "
              f"{r['steps_per_s'] / r['seeds']:>9.0f} {replay:>7} {first:>14} {state_mb:>14} {rss:>12}")
    for seeds in args.seeds:
        for devices in args.devices:
            by = {r["method"]: r["steps_per_s"] for r in rows if r["seeds"] == seeds and r.get("devices") == devices}
            for variant in args.variants:
                rmix, qmix = by.get(f"rmix {variant}".strip()), by.get(f"qmix {variant}".strip())
                if rmix and qmix:
                    print(f"{seeds} seed(s), {devices} device(s){' ' + variant if variant else ''}: "
                          f"RMIX / QMIX throughput = {rmix / qmix:.2f}")
        first = f"rmix {args.variants[0]}".strip()
        rmix = {r["devices"]: r["steps_per_s"] for r in rows
                if r["seeds"] == seeds and r["method"] == first and r.get("steps_per_s")}
        if len(rmix) > 1:
            base = rmix[min(rmix)]
            print(f"{seeds} seed(s), RMIX against {min(rmix)} device(s): "
                  + ", ".join(f"{d} devices {v / base:.2f}x" for d, v in sorted(rmix.items()) if d != min(rmix)))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"device": device, "jax": jax.__version__, "overrides": args.overrides,
                                           "variants": args.variants, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
