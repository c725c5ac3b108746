"""Evaluate saved policies: ``rmix-eval <run dir or checkpoint> [key=value ...]``.

Greedy episodes of every run (seed, and sweep point) of a training run, on the
environment it was trained on or on another compatible one (``env.slip_prob=0.1``,
``env=macn_7x4_low_risk``, ``env.map=...``: same agent, action, observation and
state sizes). Prints per-run return, win rate and return quantiles, and writes
``<run>/eval/<stamp>/``: ``eval.json`` and ``alphas.npz`` (per-step alphas, actions,
rewards and the filled mask of every episode, for analysis), and with ``gif=true``
an animated GIF of run 0's first episode (a matplotlib drawing of the grid for
MACN; JaxMARL's SMAX visualiser for SMAX).

The parameters are the finished run's ``params/`` or, for a run still going or
interrupted, its newest checkpoint (or the checkpoint directory given).
"""

from __future__ import annotations

import rmix_jax.cli_logging  # noqa: E402,F401  (sets XLA's log level before jax is imported)

# isort: split

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rmix_jax import results
from rmix_jax.checkpoint import CHECKPOINT_DIR, ResumeError, latest_step
from rmix_jax.config import Config, ConfigError, with_overrides

USAGE = """usage: rmix-eval <run dir | run dir/checkpoints/<step>> [key=value ...]
  episodes=32  seed=0  gif=false  replay=false (SC2 replays, env=smac)  out=<dir>  (default <run>/eval/<time>)
  env overrides for a compatible environment: env.slip_prob=0.1 env=macn_7x4_low_risk env.map=...
  env=smac [env.map=...]: a SMAC run in StarCraft II, or a SMAX run through the transfer adapter"""
OPTIONS = {"episodes": 32, "seed": 0, "gif": False, "replay": False, "out": ""}
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


class EvalError(ValueError):
    """A run cannot be evaluated as asked; the message is one line naming the fix."""


def locate(target: Path) -> tuple[Path, int | None]:
    """(run dir, checkpoint step or None for the final params/) of a run dir or checkpoint path."""
    if target.parent.name == CHECKPOINT_DIR and target.name.isdigit():
        return target.parent.parent, int(target.name)
    if not target.is_dir():
        raise EvalError(f"eval error: {target} does not exist; pass a run directory written by rmix-train")
    if not (target / results.CONFIG_FILE).is_file():
        raise EvalError(f"eval error: {target} has no {results.CONFIG_FILE}; pass a run directory written by rmix-train")
    if (target / results.PARAMS_DIR).exists():
        return target, None
    try:
        return target, latest_step(target)
    except ResumeError:
        raise EvalError(f"eval error: {target} has neither params/ nor a checkpoint; train it first") from None


def eval_config(trained: Config, overrides: Sequence[str]) -> Config:
    """The trained config with environment overrides (only env keys may change)."""
    if not overrides:
        return trained
    bad = [o for o in overrides if not o.split("=", 1)[0].startswith("env")]
    if bad:
        raise EvalError(f"eval error: {bad[0]!r} is not an environment override; only env=... and env.<key>=... apply")
    return with_overrides(trained, overrides)


def load_policy(run_dir: Path, step: int | None, config: Config) -> Any:
    """Parameters of every run (leading run axis) from params/ or checkpoint ``step``."""
    import orbax.checkpoint as ocp

    from rmix_jax import experiment

    exp = experiment.make_experiment(config)
    like = experiment.abstract_state(exp)
    if step is None:
        try:
            return results.load_params(run_dir, like.params)
        except Exception as err:  # noqa: BLE001  (orbax raises many kinds on a damaged directory)
            raise EvalError(
                f"eval error: {run_dir / results.PARAMS_DIR} cannot be read ({type(err).__name__}); the saved "
                f"parameters are damaged: evaluate a checkpoint instead (rmix-eval {run_dir}/{CHECKPOINT_DIR}/<step>)"
            ) from None
    path = (run_dir / CHECKPOINT_DIR / str(step)).resolve()
    try:
        with ocp.CheckpointManager(path.parent, item_names=("state", "meta"),
                                   options=ocp.CheckpointManagerOptions(read_only=True, create=False)) as manager:
            state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(like)))["state"]
    except Exception as err:  # noqa: BLE001
        raise EvalError(f"eval error: checkpoint {path} cannot be read ({type(err).__name__}); pick another step") from None
    return state.params


def evaluate(run_target: Path | str, overrides: Sequence[str] = (), episodes: int = 32, seed: int = 0,
             gif: bool = False, out: Path | str | None = None, replay: bool = False) -> dict[str, Any]:
    """Greedy episodes of every run; writes eval.json, alphas.npz (and episode.gif or SC2 replays); returns the report.

    On ``env=smac`` the episodes run in StarCraft II from the host: natively for a
    SMAC-trained run, through the SMAX observation/action adapter for a SMAX-trained
    one (``mode: transfer``).
    """
    import jax

    from rmix_jax import experiment

    run_dir, step = locate(Path(run_target))
    trained = results.load_run_config(run_dir)
    config = eval_config(trained, _transfer_map(trained, overrides))
    on_smac = config.env.name == "smac"
    if replay and not on_smac:
        raise EvalError("eval error: replay=true saves StarCraft II replays; it needs env=smac (use gif=true elsewhere)")
    if gif and on_smac:
        raise EvalError("eval error: gif=true draws MACN and SMAX episodes; on env=smac use replay=true")
    if trained.env.name == "smac" and not on_smac:
        raise EvalError("eval error: a SMAC-trained policy evaluates on env=smac only; drop the env override")
    if on_smac and trained.env.name not in ("smac", "smax"):
        raise EvalError(f"eval error: a {trained.env.name}-trained policy cannot play StarCraft II; "
                        "train on env=smax (transfer) or env=smac")
    exp = experiment.make_experiment(trained)
    _, hyper = experiment.run_inputs(exp)
    keys = jax.random.split(jax.random.PRNGKey(seed), exp.num_runs)
    out_dir = Path(out) if out else run_dir / "eval" / time.strftime("%Y%m%d-%H%M%S")
    if on_smac:
        params = load_policy(run_dir, step, trained)
        mode = "native" if trained.env.name == "smac" else "transfer"
        played, stats = _play_smac(trained, config, exp.learner.spec, params, hyper, keys, episodes, mode,
                                   out_dir / "replays" if replay else None)
    else:
        mode = "jax"
        played, stats, learner, params = _play_jax(run_dir, step, trained, config, hyper, keys, episodes)
    returns = np.asarray(stats.returns)  # (R, E)
    won = np.asarray(stats.won, float)
    runs = []
    for r in range(exp.num_runs):
        runs.append({
            "run": r, "seed": exp.seed_of(r), "point": exp.points[exp.point_of(r)],
            "return_mean": float(returns[r].mean()), "return_std": float(returns[r].std()),
            "won_rate": float(won[r].mean()), "length_mean": float(np.mean(stats.lengths[r])),
            "return_quantiles": {str(q): float(np.quantile(returns[r], q)) for q in QUANTILES},
        })
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "run_dir": str(run_dir), "checkpoint_step": step, "trained_env": trained.env.__dict__,
        "eval_env": config.env.__dict__, "mode": mode, "episodes": episodes, "seed": seed, "runs": runs,
        "return_mean": float(returns.mean()), "won_rate": float(won.mean()),
    }
    if replay:
        report["replays"] = sorted(str(p) for p in (out_dir / "replays").glob("*"))
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2))
    np.savez_compressed(
        out_dir / "alphas.npz", alpha=np.asarray(played.alpha)[:, :, :-1], filled=np.asarray(played.filled)[:, :, :-1],
        actions=np.asarray(played.actions)[:, :, :-1], reward=np.asarray(played.reward)[:, :, :-1],
        won=won, returns=returns,
    )
    if gif:
        report["gif"] = str(write_gif(learner, jax.tree.map(lambda x: x[0], params),
                                      jax.tree.map(lambda x: x[0], hyper), keys[0], out_dir / "episode.gif"))
    report["out_dir"] = str(out_dir)
    return report


def _transfer_map(trained: Config, overrides: Sequence[str]) -> list[str]:
    """A SMAX run sent to ``env=smac`` plays the SMAC map of its own SMAX map unless ``env.map`` is given."""
    overrides = list(overrides)
    to_smac = any(o.replace(" ", "") == "env=smac" for o in overrides)
    if to_smac and trained.env.name == "smax" and not any(o.startswith("env.map=") for o in overrides):
        overrides.append(f"env.map={trained.env.map}")
    return overrides


def _play_jax(run_dir: Path, step: int | None, trained: Config, config: Config, hyper: Any, keys: Any,
              episodes: int) -> tuple[Any, Any, Any, Any]:
    """Greedy episodes on a jittable env, all runs in one program."""
    import jax
    import jax.numpy as jnp

    from rmix_jax import experiment
    from rmix_jax.learner import make_learner

    params = load_policy(run_dir, step, trained)
    trained_spec = experiment.make_experiment(trained).learner.spec
    learner = make_learner(config)
    if learner.spec != dataclasses.replace(trained_spec, episode_limit=learner.spec.episode_limit):
        raise EvalError(
            f"eval error: the policy was trained on {trained.env_preset} ({_shape(trained_spec)}); "
            f"{config.env_preset} has {_shape(learner.spec)}; choose an environment with the same sizes"
        )

    def play(params, hyper, key):
        return learner.rollout(params, key, jnp.float32(0.0), episodes, hyper)

    played, stats = jax.device_get(jax.jit(jax.vmap(play))(params, hyper, keys))
    return played, stats, learner, params


def _play_smac(trained: Config, config: Config, trained_spec: Any, params: Any, hyper: Any, keys: Any,
               episodes: int, mode: str, replay_dir: Path | None) -> tuple[Any, Any]:
    """Greedy episodes in StarCraft II, one game per run, stepped from the host."""
    from rmix_jax.envs import make_host_envs
    from rmix_jax.envs.smac import SMACError, SMAXLayout, SMAXTransferEnv
    from rmix_jax.host import HostRunner
    from rmix_jax.learner import make_learner

    num_runs = len(keys)
    try:
        games = make_host_envs(config.env, num_runs, seed=config.seed,
                               replay_dir=str(replay_dir.resolve()) if replay_dir else "")
        if mode == "transfer":
            from rmix_jax.envs.smax import SMAXAdapter

            smax = SMAXAdapter(trained.env.map, trained.env.reward_scale, dead_noop=trained.env.dead_noop)
            layout = SMAXLayout.of(smax)
            envs = [SMAXTransferEnv(game, layout) for game in games]
        else:
            envs = games
            if trained_spec != games[0].spec:
                raise EvalError(f"eval error: the policy has {_shape(trained_spec)}; SMAC map {config.env.map} has "
                                f"{_shape(games[0].spec)}; evaluate on the map it was trained on")
    except SMACError as err:
        raise EvalError(str(err)) from None
    learner = make_learner(trained, env=envs[0])
    runner = HostRunner(learner, envs, num_runs)
    try:
        played, stats = runner.evaluate(params, hyper, keys, episodes)
        if replay_dir is not None:
            replay_dir.mkdir(parents=True, exist_ok=True)
            for env in envs:
                env.save_replay()
    finally:
        runner.close()
    return played, stats


def _shape(spec: Any) -> str:
    return (f"{spec.num_agents} agents, {spec.num_actions} actions, obs {spec.obs_dim}, state {spec.state_dim}")


def write_gif(learner: Any, params: Any, hyper: Any, key: Any, path: Path) -> Path:
    """An animated GIF of one greedy episode of one run."""
    import jax
    import jax.numpy as jnp

    episodes, _, (env_states, env_keys) = jax.jit(
        lambda p, h, k: learner.rollout(p, k, jnp.float32(0.0), 1, h, keep_env_states=True)
    )(params, hyper, key)
    episodes, env_states, env_keys = jax.device_get((episodes, env_states, env_keys))
    length = int(np.asarray(episodes.filled[0]).sum())
    if learner.config.env.name == "smax":
        return _smax_gif(learner, episodes, env_states, env_keys, length, path)
    return _macn_gif(learner, episodes, env_states, length, path)


def _macn_gif(learner: Any, episodes: Any, env_states: Any, length: int, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    width, height = learner.config.env.width, learner.config.env.height
    positions = np.asarray(env_states.positions[0])  # (T, N, 2) before each step
    rewards = np.asarray(episodes.reward[0])
    alphas = np.asarray(episodes.alpha[0])
    fig, ax = plt.subplots(figsize=(0.6 * width + 1, 0.6 * height + 1))

    def draw(t: int) -> None:
        ax.clear()
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(-0.5, height - 0.5)
        ax.set_aspect("equal")
        ax.set_xticks(range(width))
        ax.set_yticks(range(height))
        ax.grid(alpha=0.3)
        for x in range(1, width - 1):
            ax.add_patch(plt.Rectangle((x - 0.5, -0.5), 1, 1, color="tab:red", alpha=0.35))
        ax.add_patch(plt.Rectangle((width - 1.5, -0.5), 1, 1, color="tab:green", alpha=0.35))
        for agent, (x, y) in enumerate(positions[t]):
            offset = 0.15 * (agent * 2 - 1)
            ax.plot(x + offset, y, "o", markersize=14, color=f"C{agent}")
            ax.text(x + offset, y, str(agent + 1), ha="center", va="center", color="white", fontsize=9)
        ret = rewards[:t].sum()
        ax.set_title(f"step {t}/{length}  return {ret:g}  alpha " + " ".join(f"{a:.1f}" for a in alphas[min(t, length - 1)]),
                     fontsize=9)

    # States are recorded before each step and frozen once the episode ends, so the
    # state at index ``length`` is the final one (absent only after a time-limit end).
    frames = list(range(min(length + 1, positions.shape[0])))
    animation = FuncAnimation(fig, draw, frames=frames)
    animation.save(path, writer=PillowWriter(fps=3))
    plt.close(fig)
    return path


def _smax_gif(learner: Any, episodes: Any, env_states: Any, env_keys: Any, length: int, path: Path) -> Path:
    import jax
    import matplotlib

    matplotlib.use("Agg")
    from jaxmarl.viz.visualizer import SMAXVisualizer

    env = learner.env.env  # HeuristicEnemySMAX under the adapter
    agents = env.agents
    actions = np.asarray(episodes.actions[0])
    state_seq = []
    for t in range(length):
        state = jax.tree.map(lambda x: x[0, t], env_states)
        state_seq.append((env_keys[0, t], state, {a: int(actions[t, i]) for i, a in enumerate(agents)}))
    visualizer = SMAXVisualizer(env, state_seq)
    visualizer.animate(save_fname=str(path), view=False)
    return path


def print_report(report: dict[str, Any]) -> None:
    print(f"{report['run_dir']} ({'params' if report['checkpoint_step'] is None else 'checkpoint ' + str(report['checkpoint_step'])}), "
          f"{report['episodes']} greedy episodes per run")
    print(f"{'run':>4} {'seed':>4} {'point':<28} {'return':>14} {'won':>5} {'q05':>8} {'q50':>8} {'q95':>8}")
    for r in report["runs"]:
        q = r["return_quantiles"]
        point = ",".join(f"{k}={v}" for k, v in r["point"].items())
        print(f"{r['run']:>4} {r['seed']:>4} {point:<28} {r['return_mean']:>7.2f} +- {r['return_std']:<4.1f} "
              f"{r['won_rate']:>5.2f} {q['0.05']:>8.2f} {q['0.5']:>8.2f} {q['0.95']:>8.2f}")
    label = "transfer win rate (SMAX policy in SC2)" if report.get("mode") == "transfer" else "win rate"
    print(f"all runs: return {report['return_mean']:.2f}, {label} {report['won_rate']:.2f}; written to {report['out_dir']}")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0 if args else 2
    target, rest = args[0], args[1:]
    options = dict(OPTIONS)
    env_overrides = []
    try:
        for arg in rest:
            key, _, value = arg.partition("=")
            if key in options:
                options[key] = _option(key, value)
            else:
                env_overrides.append(arg)
        from rmix_jax.experiment import enable_compilation_cache

        enable_compilation_cache()
        report = evaluate(target, env_overrides, **options)
    except (EvalError, ConfigError, FileNotFoundError) as err:
        print(str(err).splitlines()[0], file=sys.stderr)
        return 2
    print_report(report)
    return 0


def _option(key: str, value: str) -> Any:
    default = OPTIONS[key]
    if isinstance(default, bool):
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise EvalError(f"eval error: {key}={value!r}; use true or false")
        return value.lower() in ("true", "1", "yes")
    if isinstance(default, int):
        if not value.isdigit() or (key == "episodes" and int(value) < 1):
            raise EvalError(f"eval error: {key}={value!r}; use a whole number" + (" >= 1" if key == "episodes" else ""))
        return int(value)
    return value


if __name__ == "__main__":
    sys.exit(main())
