"""Writing a run to disk: config, per-seed metrics (JSONL), curves (PNG), parameters (orbax)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from rmix_jax.config import Config, config_from_dict

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
PARAMS_DIR = "params"


def optimal_return(config: Config) -> float | None:
    """Best achievable return on deterministic MACN: up, (W-1) x right, down, together: -W."""
    e = config.env
    if e.name == "macn" and e.slip_prob == 0.0 and e.reward_noise_std == 0.0:
        return -float(e.width) * e.reward_scale
    return None


def new_run_dir(config: Config, stamp: str) -> Path:
    """A fresh directory: an existing run is never overwritten (a suffix is added)."""
    name = config.run_name or f"{config.method}_{config.env_preset}_{stamp}"
    base = Path(config.results_dir) / name
    path, suffix = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}-{suffix}")
        suffix += 1
    path.mkdir(parents=True)
    return path


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file: the old file stays whole if writing fails."""
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_config(run_dir: Path, config: Config) -> None:
    _atomic_write(run_dir / CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))


def metric_rows(
    chunk_metrics: dict[str, np.ndarray], chunk: int, num_seeds: int | None = None,
    points: Sequence[dict[str, Any]] = ({},),
) -> list[dict[str, Any]]:
    """One row per run from a chunk's metrics (arrays with a leading run axis).

    Run ``r`` is seed ``r % num_seeds`` of sweep point ``r // num_seeds``; a row holds
    ``run``, ``seed``, ``point`` and, in a sweep, that point's values under ``sweep``.
    """
    num_runs = len(chunk_metrics["t_env"])
    num_seeds = num_runs if num_seeds is None else num_seeds
    rows = []
    for run in range(num_runs):
        point = run // num_seeds
        row: dict[str, Any] = {"run": run, "seed": run % num_seeds, "point": point, "chunk": chunk}
        if points[point]:
            row["sweep"] = dict(points[point])
        for key, value in chunk_metrics.items():
            v = np.asarray(value[run])
            row[key] = v.tolist() if v.ndim else (None if np.isnan(v) else v.item())
        rows.append(row)
    return rows


def rows_by_point(rows: Sequence[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Metric rows grouped by sweep point (one group, point 0, without a sweep)."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row.get("point", 0), []).append(row)
    return dict(sorted(groups.items()))


def append_metrics(run_dir: Path, rows: Sequence[dict[str, Any]]) -> None:
    with open(run_dir / METRICS_FILE, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def rewrite_metrics(run_dir: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Replace metrics.jsonl by ``rows`` in one atomic step (used when a resume drops rows past its checkpoint)."""
    _atomic_write(run_dir / METRICS_FILE, "".join(json.dumps(row) + "\n" for row in rows))


def load_metrics(run_dir: Path | str) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {METRICS_FILE} in {run_dir}; pass the directory a training run wrote")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def curves(rows: Sequence[dict[str, Any]], key: str = "test_return") -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """seed -> (env steps, values) for the chunks in which that seed trained."""
    out: dict[int, tuple[list, list]] = {}
    for row in rows:
        if row.get("active", True) and row.get(key) is not None:
            xs, ys = out.setdefault(row["seed"], ([], []))
            xs.append(row["t_env"])
            ys.append(row[key])
    return {s: (np.asarray(x, float), np.asarray(y, float)) for s, (x, y) in out.items()}


def on_grid(seed_curves: dict[int, tuple[np.ndarray, np.ndarray]], grid: np.ndarray) -> np.ndarray:
    """(seeds, len(grid)): each seed's curve held at its last value before each grid point."""
    values = []
    for xs, ys in seed_curves.values():
        index = np.searchsorted(xs, grid, side="right") - 1
        values.append(np.where(index >= 0, ys[np.clip(index, 0, None)], np.nan))
    return np.asarray(values)


def common_grid(
    seed_curves: dict[int, tuple[np.ndarray, np.ndarray]], num_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """(grid, values (seeds, points)) over the env steps where every seed has a value."""
    start = max(xs[0] for xs, _ in seed_curves.values())
    end = min(xs[-1] for xs, _ in seed_curves.values())
    grid = np.linspace(start, max(start, end), num_points)
    return grid, on_grid(seed_curves, grid)


def load_run_config(run_dir: Path | str) -> Config:
    """The validated config a run was trained with."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {run_dir}; pass a directory written by rmix-train")
    return config_from_dict(yaml.safe_load(path.read_text()))


def steps_to_reach(xs: np.ndarray, ys: np.ndarray, target: float, tol: float = 1e-3) -> float | None:
    """First env step at which the curve reaches ``target`` (None if never)."""
    hit = np.nonzero(ys >= target - tol)[0]
    return float(xs[hit[0]]) if hit.size else None


def plot_learning_curves(
    runs: dict[str, Sequence[dict[str, Any]]], path: Path, key: str = "test_return",
    title: str = "", optimum: float | None = None,
) -> None:
    """Mean and min-max band over seeds for each labelled run, on one axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, rows in runs.items():
        seed_curves = curves(rows, key)
        if not seed_curves:
            continue
        grid, values = common_grid(seed_curves, 200)
        ax.plot(grid, np.nanmean(values, axis=0), label=f"{label} (mean of {len(values)} seeds)")
        ax.fill_between(grid, np.nanmin(values, axis=0), np.nanmax(values, axis=0), alpha=0.2)
    if optimum is not None:
        ax.axhline(optimum, color="k", linestyle=":", linewidth=1, label=f"optimum {optimum:g}")
    ax.set_xlabel("env steps per seed")
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_params(run_dir: Path, params: Any) -> Path:
    """Final parameters of every run (leading run axis) with orbax; replaces older ones only when complete."""
    import shutil

    import orbax.checkpoint as ocp

    path = (run_dir / PARAMS_DIR).resolve()
    fresh = path.with_name(f".{PARAMS_DIR}.new")
    shutil.rmtree(fresh, ignore_errors=True)
    import jax

    # Host arrays written by this process alone: in a multi-process run only process 0
    # saves them, and orbax must not wait for the others.
    only_me = ocp.options.MultiprocessingOptions(primary_host=jax.process_index(),
                                                 active_processes={jax.process_index()})
    with ocp.StandardCheckpointer(multiprocessing_options=only_me) as checkpointer:
        checkpointer.save(fresh, params)
    if path.exists():
        old = path.with_name(f".{PARAMS_DIR}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(fresh, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(fresh, path)
    return path


def load_params(run_dir: Path | str, like: Any | None = None) -> Any:
    import orbax.checkpoint as ocp

    path = (Path(run_dir) / PARAMS_DIR).resolve()
    if not path.exists():
        raise FileNotFoundError(f"no saved parameters at {path}; train first or pass a finished run's directory")
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(path, like) if like is not None else checkpointer.restore(path)
