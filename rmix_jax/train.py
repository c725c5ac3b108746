"""Command-line training: ``python -m rmix_jax.train [key=value ...]`` (``rmix-train``).

Runs ``num_seeds`` seeds (times the sweep grid, if any) as one vmapped, jitted
program sharded over the local devices, in chunks of ``train.iterations_per_eval``
iterations each ending with a greedy evaluation; between chunks Python only shows
progress, appends metrics, logs to wandb and saves checkpoints. Writes
``results/<run>/``: config.yaml, metrics.jsonl, checkpoints/ (the whole training
state, for ``resume=<run dir>``), learning_curve.png, params/ (orbax),
summary.json, wandb/ (unless disabled), and prints a summary table.
"""

from __future__ import annotations

import os

import rmix_jax.cli_logging  # noqa: E402,F401  (sets XLA's log level before jax is imported)

# isort: split

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rmix_jax import checkpoint, distributed, results, stopping
from rmix_jax.checkpoint import Checkpointer, ResumeError, check_resume_changes, restore
from rmix_jax.config import Config, ConfigError, config_from_dict, load_config, with_overrides

USAGE = """usage: rmix-train [key=value ...]          rmix-train resume=<run dir> [train.t_max=...]
  method=rmix|rmix_static|rmix_frozen|qmix|vdn|iql|rdn   env=macn_7x4|macn_12x4|macn_7x4_low_risk|smax|smac
  env=smax env.map=3m|5m_vs_6m|8m_vs_9m|...  (any SMAX map; an unknown one lists them all)
  env=smac env.map=5m_vs_6m env.difficulty=7  (StarCraft II through SMAC; docs/starcraft.md)
  seeds=8 seed=0 train.t_max=50000 agent.num_atoms=10 agent.alpha=0.3 ...  (see configs/default.yaml)
  sweep.agent.alpha=[0.1,0.3,0.5,0.7,1.0,learned] sweep.train.lr=[1e-4,5e-4]  (grid x seeds, one program)
  wandb.mode=auto|online|offline|disabled   checkpoint.every_chunks=25
  RMIX_JAX_CPU_DEVICES=N rmix-train ...  (on a CPU the runs are sharded over N devices; default one per core)
  train.on_nonfinite=stop|freeze  (a run turning NaN/inf: stop with an error, or freeze it and go on)
  RMIX_JAX_DISTRIBUTED=host:port RMIX_JAX_NUM_PROCESSES=n RMIX_JAX_PROCESS_ID=i rmix-train ...  (one of n
  processes, the runs sharded over all; RMIX_JAX_DISTRIBUTED=auto on SLURM; docs/usage.md)
exit status: 0 finished; 2 bad input; 3 a run diverged; 128+signal (143 SIGTERM, 130 Ctrl-C) stopped with
  a checkpoint after the current chunk (a second signal exits at once)"""

WANDB_ID_FILE = "wandb_id"
CPU_DEVICE_FLAG = "--xla_force_host_platform_device_count"


def use_cpu_devices(count: int | None = None) -> None:
    """Make XLA show ``count`` CPU devices: by default ``RMIX_JAX_CPU_DEVICES``, else one per core.

    The run axis is sharded over the devices, so on a CPU each core then steps its own
    share of the seeds in parallel: 1.38x RMIX's env steps per second on one device
    with 2 cores for the ``make train`` program (``benchmarks/throughput.py --seeds 8
    --devices 1 2``). Its per-seed results were the same bit for bit on that program; in
    general they agree up to float rounding (XLA may order a reduction differently for
    another number of runs per device). Must run before JAX starts its backend; an
    ``XLA_FLAGS`` that already sets the count wins. Accelerator hosts are unaffected:
    JAX's default devices there are the accelerators.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if CPU_DEVICE_FLAG in flags:
        return
    if count is None:
        chosen = os.environ.get("RMIX_JAX_CPU_DEVICES") or str(len(os.sched_getaffinity(0)))
        if not chosen.isdigit() or int(chosen) < 1:
            raise ConfigError(
                f"RMIX_JAX_CPU_DEVICES={chosen!r}: give a whole number of CPU devices (1 or more), or unset it"
            )
        count = int(chosen)
    os.environ["XLA_FLAGS"] = f"{flags} {CPU_DEVICE_FLAG}={count}".strip()


def run(
    config: Config, progress: bool = True, resume_dir: Path | str | None = None, stop_after: int | None = None,
) -> tuple[Path, list[dict[str, Any]]]:
    """Train every run of ``config`` (or continue ``resume_dir``); return the run directory and metric rows.

    ``stop_after`` ends the session after that many chunks (a checkpoint is saved
    there, so ``resume`` continues it); the run is then unfinished: no params/ or summary.
    A SIGTERM or SIGINT does the same after the chunk it arrives in, then raises
    ``stopping.StoppedBySignal`` (``rmix_jax.stopping``). A run turning non-finite raises
    ``stopping.DivergedError``, or with ``train.on_nonfinite=freeze`` is frozen.
    """
    with stopping.GracefulStop() as stop:  # from the start: a signal during set-up or compile waits too
        return _run(config, progress, resume_dir, stop_after, stop)


def _run(config: Config, progress: bool, resume_dir: Path | str | None, stop_after: int | None,
         stop: stopping.GracefulStop) -> tuple[Path, list[dict[str, Any]]]:
    from tqdm import tqdm

    from rmix_jax import experiment
    from rmix_jax.tracking import Tracker

    exp = experiment.make_experiment(config)
    meta = checkpoint_meta(exp)
    primary = distributed.is_primary()  # only process 0 writes the run's files (one process: always)
    started = time.time()
    if resume_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path(distributed.from_primary(lambda: str(_new_run_dir(config, stamp))))
        state = experiment.init_state(exp)
        rows: list[dict[str, Any]] = []
        chunk, wandb_id = 0, None
    else:
        run_dir = Path(resume_dir)
        state, saved = restore(run_dir, experiment.abstract_state(exp), meta)
        check_resume_changes(config_from_dict(saved["config"]), config)
        state = experiment.with_config_hyper(exp, state)  # the new t_max, traced in the state
        chunk = int(saved["chunks"])
        # Only now that the checkpoint is known good is anything on disk changed.
        rows = [r for r in results.load_metrics(run_dir) if r["chunk"] < chunk]
        if primary:
            results.rewrite_metrics(run_dir, rows)
            results.write_config(run_dir, config)
        wandb_id = saved.get("wandb_id")
        if primary:
            print(f"resumed {run_dir} at chunk {chunk} ({int(np.min(experiment.to_host(state.t_env)))} env steps per run)")

    tracker = Tracker(config if primary else with_overrides(config, ["wandb.mode=disabled"]), run_dir,
                      [exp.point_label(p) for p in range(len(exp.points))], wandb_id)
    meta = {**meta, "config": config.to_dict(), "wandb_id": tracker.run_id}
    checkpointer = Checkpointer(run_dir, config)
    run_chunk = exp.chunk_fn
    t_max = config.train.t_max
    frozen: dict[int, dict[str, Any]] = {}  # run -> the row of the chunk it diverged in (on_nonfinite=freeze)
    done_steps = int(np.min(experiment.to_host(state.t_env)))
    bar = tqdm(total=t_max, initial=min(done_steps, t_max), unit="step", disable=not (progress and primary),
               desc=f"{config.method} x{exp.num_runs}")
    try:
        while done_steps < t_max:
            state, metrics = run_chunk(state)
            metrics = experiment.to_host(metrics)
            new_rows = results.metric_rows(metrics, chunk, exp.num_seeds, exp.points)
            for r in new_rows:
                if r["run"] in frozen:
                    r["diverged"] = True
            if primary:
                results.append_metrics(run_dir, new_rows)
            rows.extend(new_rows)
            tracker.log_chunk(metrics, chunk)
            chunk += 1
            diverged = stopping.diverged_rows(new_rows)
            if diverged:
                _on_divergence(config, diverged, frozen, run_dir, checkpointer, tracker)
            running = [t for r, t in enumerate(metrics["t_env"]) if r not in frozen]
            done_steps = int(np.min(running)) if running else t_max
            stopping_now = (stop_after is not None and chunk >= stop_after) or _agree_stop(stop)
            if checkpointer.due(chunk) or done_steps >= t_max or stopping_now:
                checkpointer.save(chunk, state, meta)
            if (stopping_now or _agree_stop(stop)) and done_steps < t_max:  # a signal during the save too
                break
            bar.update(min(done_steps, t_max) - bar.n)
            bar.set_postfix(test_return=f"{np.mean(metrics['test_return']):.1f}",
                            eps=f"{np.mean(metrics['epsilon']):.2f}")
    finally:
        bar.close()
        checkpointer.close()
    wall = time.time() - started
    if done_steps < t_max:
        tracker.finish()
        if primary:
            print(f"stopped after chunk {chunk}; continue with: rmix-train resume={run_dir}", flush=True)
        if stop.requested:
            raise stopping.StoppedBySignal(stop.signum, f"stopped by signal after chunk {chunk}")
        return run_dir, rows
    return _finish(config, exp, state, rows, wall, run_dir, tracker), rows


def _new_run_dir(config: Config, stamp: str) -> Path:
    """A fresh run directory with the config in it; nothing half-made is left if writing fails."""
    run_dir = results.new_run_dir(config, stamp)
    try:
        results.write_config(run_dir, config)
    except OSError:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir


def _agree_stop(stop: stopping.GracefulStop) -> bool:
    """Whether a stop signal reached any process; all then stop after the same chunk (one process: its own)."""
    signum = distributed.max_over_processes(stop.signum or 0)
    if signum and stop.signum is None:
        stop.signum = signum
    return stop.requested


def _on_divergence(config: Config, diverged: list[dict[str, Any]], frozen: dict[int, dict[str, Any]],
                   run_dir: Path, checkpointer: Checkpointer, tracker: Any) -> None:
    """A chunk in which runs turned non-finite: stop with a one-line error, or freeze them and go on."""
    first = diverged[0]
    what = ", ".join(stopping.nonfinite_quantities(first["nonfinite"]))
    where = f"{stopping.describe(first)} has a non-finite {what} in chunk {first['chunk']}"
    others = f" (and {len(diverged) - 1} more runs)" if len(diverged) > 1 else ""
    if config.train.on_nonfinite == "freeze":
        for r in diverged:
            frozen[r["run"]] = r
            print(f"divergence: {stopping.describe(r)} has a non-finite "
                  f"{', '.join(stopping.nonfinite_quantities(r['nonfinite']))} in chunk {r['chunk']}; "
                  f"frozen at its last finite state, the other runs go on", file=sys.stderr, flush=True)
        return
    tracker.finish()
    try:
        kept = f"the last good checkpoint is {run_dir / checkpoint.CHECKPOINT_DIR / str(checkpoint.latest_step(run_dir))}"
    except ResumeError:
        kept = "no checkpoint was saved before it"
    raise stopping.DivergedError(
        f"divergence: {where}{others}; stopped, {kept}; lower train.lr (or train.qr_lr), or pass "
        f"train.on_nonfinite=freeze to keep the other runs going"
    )


def _finish(config: Config, exp: Any, state: Any, rows: list[dict[str, Any]], wall: float, run_dir: Path,
            tracker: Any) -> Path:
    """A finished run: final parameters, summary, learning curves, the printed table."""
    from rmix_jax import experiment

    params = experiment.to_host(state.params)  # a collective: every process gathers
    summary = summarize(config, rows, wall, exp.points)
    if distributed.is_primary():
        results.save_params(run_dir, params)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        labels = {p: exp.point_label(p) or config.method for p in range(len(exp.points))}
        results.plot_learning_curves(
            {labels[p]: point_rows for p, point_rows in results.rows_by_point(rows).items()},
            run_dir / "learning_curve.png", title=f"{config.method} on {config.env_preset}",
            optimum=results.optimal_return(config),
        )
    tracker.finish({"wall_seconds": summary["wall_seconds"]})
    if distributed.is_primary():
        print_summary(summary, run_dir)
    return run_dir


def summarize_point(config: Config, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-seed and aggregate figures of one sweep point (the whole run without a sweep)."""
    optimum = results.optimal_return(config)
    per_seed = []
    test = results.curves(rows, "test_return")
    for seed, (xs, ys) in sorted(test.items()):
        last = [r for r in rows if r["seed"] == seed and r["active"]][-1]
        bad = [r for r in rows if r["seed"] == seed and r.get("nonfinite")]
        hist = np.asarray(last["test_alpha_hist"], float)
        hist = hist.reshape(-1, hist.shape[-1]).sum(axis=0)  # over agents
        levels = (np.arange(len(hist)) + 1) / len(hist)
        per_seed.append({
            "seed": seed,
            "env_steps": last["t_env"],
            "final_test_return": float(ys[-1]),
            "best_test_return": float(ys.max()),
            "final_test_won": last["test_won"],
            "steps_to_optimum": None if optimum is None else results.steps_to_reach(xs, ys, optimum),
            "final_mean_alpha": float((hist * levels).sum() / max(hist.sum(), 1.0)),
            # The predictor's last chunk: entropy of P(alpha) (nats) and its TD gradient's norm (None: static alpha).
            "final_alpha_entropy": last.get("alpha_entropy"),
            "final_risk_grad_norm": last.get("risk_grad_norm"),
            # train.on_nonfinite=freeze: the chunk the run diverged in and what was not finite (else None).
            "diverged_at_chunk": bad[0]["chunk"] if bad else None,
            "diverged_in": stopping.nonfinite_quantities(bad[0]["nonfinite"]) if bad else None,
        })
    reached = [s for s in per_seed if s["steps_to_optimum"] is not None]
    finals = np.asarray([s["final_test_return"] for s in per_seed])
    return {
        "final_test_return_mean": float(finals.mean()),
        "final_test_return_std": float(finals.std()),
        "final_test_won_mean": float(np.mean([s["final_test_won"] for s in per_seed])),
        "seeds_at_optimum_finally": sum(optimum is not None and abs(s["final_test_return"] - optimum) < 1e-3 for s in per_seed),
        "seeds_reaching_optimum": len(reached),
        "median_steps_to_optimum": float(np.median([s["steps_to_optimum"] for s in reached])) if reached else None,
        "seeds": per_seed,
    }


def summarize(config: Config, rows: Sequence[dict[str, Any]], wall_seconds: float,
              points: Sequence[dict[str, Any]] = ({},)) -> dict[str, Any]:
    """The run's summary: per point (a sweep) or, without a sweep, the single point's figures at top level."""
    by_point = results.rows_by_point(rows)
    per_point = [{"point": p, "values": dict(points[p]), **summarize_point(config, by_point[p])} for p in by_point]
    summary: dict[str, Any] = {
        "method": config.method,
        "env": config.env_preset,
        "num_seeds": config.num_seeds,
        "optimal_return": results.optimal_return(config),
        "wall_seconds": round(wall_seconds, 1),
    }
    if len(points) == 1 and not points[0]:
        return {**summary, **{k: v for k, v in per_point[0].items() if k not in ("point", "values")}}
    return {**summary, "points": per_point}


def print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    print(f"\n{summary['method']} on {summary['env']}: {summary['num_seeds']} seeds, {summary['wall_seconds']} s")
    if "points" in summary:
        print_sweep_table(summary)
    else:
        print(f"{'seed':>4} {'env steps':>10} {'final return':>13} {'best return':>12} {'won':>5} {'steps to opt':>13} "
              f"{'mean alpha':>11} {'H(alpha)':>9} {'risk grad':>10}")
        for s in summary["seeds"]:
            steps = "-" if s["steps_to_optimum"] is None else f"{s['steps_to_optimum']:.0f}"
            print(f"{s['seed']:>4} {s['env_steps']:>10} {s['final_test_return']:>13.2f} {s['best_test_return']:>12.2f} "
                  f"{s['final_test_won']:>5.2f} {steps:>13} {s['final_mean_alpha']:>11.2f} "
                  f"{_maybe(s.get('final_alpha_entropy'), '9.3f')} {_maybe(s.get('final_risk_grad_norm'), '10.2e')}")
        if summary["optimal_return"] is not None:
            print(f"optimum {summary['optimal_return']:g}: {summary['seeds_at_optimum_finally']}/{summary['num_seeds']} seeds "
                  f"there at the end, {summary['seeds_reaching_optimum']} reached it; median steps to it "
                  f"{summary['median_steps_to_optimum']}")
    for p in summary.get("points") or [summary]:
        for s in p["seeds"]:
            if s.get("diverged_at_chunk") is not None:
                point = f", point {p['point']}" if "point" in p else ""
                print(f"diverged: seed {s['seed']}{point} in chunk {s['diverged_at_chunk']} "
                      f"({', '.join(s['diverged_in'])}); its figures are those of its last finite state")
    print(f"results: {run_dir}")


def _maybe(value: float | None, spec: str) -> str:
    """``value`` formatted, or a dash in the same width where there is none (a static alpha)."""
    width = int(spec.split(".")[0])
    return "-".rjust(width) if value is None else format(value, spec)


def print_sweep_table(summary: dict[str, Any]) -> None:
    """One line per sweep point: final greedy return and win rate over seeds, steps to the optimum."""
    header = f"{'point':<40} {'final return':>16} {'won':>5} {'reached opt':>11} {'median steps':>12} {'mean alpha':>10}"
    print(header)
    for p in summary["points"]:
        label = ",".join(f"{k}={v}" for k, v in p["values"].items())
        steps = "-" if p["median_steps_to_optimum"] is None else f"{p['median_steps_to_optimum']:.0f}"
        alpha = np.mean([s["final_mean_alpha"] for s in p["seeds"]])
        print(f"{label:<40} {p['final_test_return_mean']:>8.2f} +- {p['final_test_return_std']:<5.2f} "
              f"{p['final_test_won_mean']:>5.2f} {p['seeds_reaching_optimum']:>5}/{len(p['seeds']):<5} {steps:>12} {alpha:>10.2f}")


def split_resume(args: Sequence[str]) -> tuple[str | None, list[str]]:
    """``resume=<dir>`` out of the arguments, and the rest."""
    resume = [a.split("=", 1)[1] for a in args if a.startswith("resume=")]
    if len(resume) > 1:
        raise ConfigError("config error: resume= given more than once; pass one run directory")
    return (resume[0] if resume else None), [a for a in args if not a.startswith("resume=")]


def resume_config(run_dir: str, overrides: Sequence[str]) -> Config:
    """The saved config of ``run_dir`` with ``overrides`` on top (only budget/logging keys may change)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ResumeError(f"resume error: {path} does not exist; pass a run directory written by rmix-train")
    try:
        saved = results.load_run_config(path)
    except FileNotFoundError as err:
        raise ResumeError(f"resume error: {err}") from None
    config = with_overrides(saved, overrides)
    check_resume_changes(saved, config)
    return config


def checkpoint_meta(exp: Any) -> dict[str, Any]:
    """What a checkpoint must match to be restored into ``exp``: run count and env spec."""
    return {"num_runs": exp.num_runs, "env_spec": dataclasses.asdict(exp.learner.spec)}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    try:
        if argv is None:  # the command itself, not a call from Python that has JAX running already
            use_cpu_devices()
            distributed.initialize_from_env()  # RMIX_JAX_DISTRIBUTED: one of several processes
        resume, overrides = split_resume(args)
        config = resume_config(resume, overrides) if resume else load_config(overrides)
        from rmix_jax.experiment import enable_compilation_cache

        enable_compilation_cache()
        run(config, resume_dir=resume)
    except (ConfigError, ResumeError) as err:
        print(str(err), file=sys.stderr)
        return 2
    except OSError as err:  # the results directory cannot be written (permissions, a full disk, a file in the way)
        where = f" {err.filename}" if err.filename else ""
        print(f"write error: cannot write{where}: {err.strerror or err}; pass a results_dir that is writable and "
              f"has free space (runs already saved are untouched)", file=sys.stderr)
        return 1
    except stopping.DivergedError as err:
        print(str(err), file=sys.stderr)
        return stopping.DIVERGED_STATUS
    except stopping.StoppedBySignal as stopped:
        return stopped.exit_status
    return 0


if __name__ == "__main__":
    sys.exit(main())
