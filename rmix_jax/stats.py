"""Numbers from runs: IQM with bootstrap intervals, win-rate intervals, curves on a common grid,
chosen-alpha shares over training, the predictor's diagnostics, and the atoms CVaR reads.

Every benchmark and the notebook take their IQM and intervals from here (rliable's stratified
bootstrap, seeded per call with NumPy's global generator restored afterwards).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import jax.numpy as jnp
import numpy as np

from rmix_jax import ops, results


@contextlib.contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    """NumPy's global generator seeded for the block (rliable draws from it), then restored."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


def sorted_atoms(atoms: np.ndarray) -> np.ndarray:
    """Atoms sorted ascending along the last axis (the order CVaR reads them in)."""
    return np.sort(np.asarray(atoms), axis=-1)


def cvar_cutoff(alpha: float, num_atoms: int) -> int:
    """How many of the lowest atoms CVaR_alpha averages: ``ceil(alpha * M)``, exact on the grid."""
    return int(ops.tail_count(jnp.float32(alpha), num_atoms))


def iqm(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Interquartile mean (mean of the middle 50%) along ``axis``, as rliable defines it."""
    import scipy.stats

    return scipy.stats.trim_mean(np.asarray(values, float), 0.25, axis=axis)


def iqm_interval(values: Sequence[float], reps: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """IQM of one value per seed with its stratified-bootstrap interval (rliable): (iqm, lower, upper).

    rliable draws from NumPy's global generator: it is seeded with ``seed`` for the call and
    restored afterwards, so the interval is reproducible and callers' random streams are untouched.
    """
    from rliable import library as rly

    scores = np.asarray(values, float).reshape(-1, 1)  # (seeds, tasks = 1)
    with _numpy_seed(seed):
        point, interval = rly.get_interval_estimates(
            {"x": scores}, lambda s: np.array([iqm(s[:, 0])]), reps=reps, confidence_interval_size=confidence
        )
    return float(point["x"][0]), float(interval["x"][0][0]), float(interval["x"][1][0])


def win_rate_interval(wins: int, episodes: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a win rate from ``wins`` of ``episodes`` (scipy's ``binomtest``)."""
    import scipy.stats

    ci = scipy.stats.binomtest(int(wins), int(episodes)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def seed_matrix(rows: Sequence[dict[str, Any]], key: str = "test_return", num_points: int = 100):
    """(grid, values (seeds, points)): every seed's curve held at its last value on a common grid."""
    seed_curves = results.curves(rows, key)
    if not seed_curves:
        raise ValueError(f"no rows with {key!r}; the metrics hold {sorted(rows[0]) if rows else 'nothing'}")
    return results.common_grid(seed_curves, num_points)


def iqm_curve(
    rows: Sequence[dict[str, Any]], key: str = "test_return", num_points: int = 100,
    reps: int = 2000, confidence: float = 0.95, seed: int = 0,
) -> dict[str, np.ndarray]:
    """IQM over seeds with a stratified-bootstrap interval at each grid point (rliable), seeded as
    ``iqm_interval``."""
    from rliable import library as rly

    grid, values = seed_matrix(rows, key, num_points)
    scores = values[:, None, :]  # rliable wants (runs, tasks, ...)

    def statistic(s: np.ndarray) -> np.ndarray:
        return iqm(s.reshape(-1, s.shape[-1]), axis=0)

    with _numpy_seed(seed):
        point, interval = rly.get_interval_estimates(
            {"run": scores}, statistic, reps=reps, confidence_interval_size=confidence
        )
    return {
        "env_steps": grid,
        "iqm": point["run"],
        "lower": interval["run"][0],
        "upper": interval["run"][1],
        "mean": values.mean(axis=0),
        "num_seeds": np.int64(values.shape[0]),
    }


def alpha_over_training(
    rows: Sequence[dict[str, Any]], key: str = "alpha_hist", num_bins: int = 50
) -> dict[str, np.ndarray]:
    """Chosen-alpha statistics over training, binned by env steps.

    ``key`` is ``alpha_hist`` (training episodes, epsilon-greedy) or
    ``test_alpha_hist`` (greedy test episodes); each metric row holds the count of
    agent-steps at each of the K levels since the previous row. Returns the bin
    centres ``env_steps`` (bins,), ``share`` (bins, K): each level's fraction of the
    agent-steps of all seeds in that bin (NaN for an empty bin), ``levels`` (K,),
    and ``mean_alpha`` (seeds, bins): each seed's average alpha in the bin.
    """
    active = [r for r in rows if r.get("active", True) and r.get(key) is not None]
    if not active:
        raise ValueError(f"no rows with {key!r}")
    seeds = sorted({r["seed"] for r in active})
    num_levels = np.asarray(active[0][key]).shape[-1]  # rows hold (K,) or per agent (N, K)
    levels = (np.arange(num_levels) + 1) / num_levels
    t_env = np.asarray([r["t_env"] for r in active], float)
    edges = np.linspace(0.0, t_env.max(), num_bins + 1)
    bins = np.clip(np.searchsorted(edges, t_env, side="left") - 1, 0, num_bins - 1)
    counts = np.zeros((num_bins, num_levels))
    seed_counts = np.zeros((len(seeds), num_bins, num_levels))
    seed_index = {s: i for i, s in enumerate(seeds)}
    for r, b in zip(active, bins):
        hist = np.asarray(r[key], float).reshape(-1, num_levels).sum(axis=0)
        counts[b] += hist
        seed_counts[seed_index[r["seed"]], b] += hist
    with np.errstate(invalid="ignore", divide="ignore"):
        share = counts / counts.sum(axis=1, keepdims=True)
        mean_alpha = (seed_counts * levels).sum(axis=-1) / seed_counts.sum(axis=-1)
    return {"env_steps": (edges[:-1] + edges[1:]) / 2, "share": share, "levels": levels, "mean_alpha": mean_alpha}


def predictor_diagnostics(rows: Sequence[dict[str, Any]]) -> dict[int, dict[str, np.ndarray]]:
    """Per seed (of a run without a sweep, or one point's rows): ``t_env``, ``alpha_entropy`` and
    ``risk_grad_norm`` of the active chunks that logged them (NaN where a chunk made no TD update).
    Empty for a static alpha, or for a run from before these metrics existed."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for seed in sorted({r["seed"] for r in rows}):
        seed_rows = [r for r in rows if r["seed"] == seed and r["active"] and r.get("alpha_entropy") is not None]
        if seed_rows:
            out[seed] = {
                "t_env": np.asarray([r["t_env"] for r in seed_rows], float),
                "alpha_entropy": np.asarray([r["alpha_entropy"] for r in seed_rows], float),
                "risk_grad_norm": np.asarray([np.nan if r.get("risk_grad_norm") is None else r["risk_grad_norm"]
                                              for r in seed_rows], float),
            }
    return out
