"""Analysis of learned risk levels: load a run, trace greedy episodes, aggregate curves, plot.

Everything the notebook ``notebooks/alpha_analysis.ipynb`` draws comes from here,
so it is tested and usable from any script:

- ``load_run(dir)``: config, per-seed metric rows and final parameters of a run
  written by ``rmix-train``; ``latest_run`` finds the newest one.
- ``trace_episodes``: greedy (or epsilon-greedy) episodes of one seed, recording per
  step the reward, every agent's alpha and probabilities over the K risk levels, the
  atoms of every action, the CVaR values and the chosen actions (paper Figs. 11-12).
- ``iqm_curve``: interquartile mean over seeds with stratified-bootstrap 95% intervals
  (rliable), on a common env-step grid.
- ``alpha_over_training``: the share of each risk level among the chosen alphas
  per evaluation chunk, and the mean alpha per seed.
- ``plot_*``: matplotlib figures of the above, each returning the figure.

Shape legend: E episodes, T episode limit, N agents, A actions, M atoms, K risk levels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rmix_jax import ops, results
from rmix_jax.config import Config
from rmix_jax.learner import Hyper, Learner, Params

MACN_ACTIONS = ("up", "down", "left", "right")
SMAX_MOVES = ("north", "east", "south", "west", "stop")


# --- runs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """A finished training run: its config, metric rows and seed-stacked parameters."""

    run_dir: Path
    config: Config
    rows: list[dict[str, Any]]
    params: Params | None  # leaves have a leading seed axis; None if not saved
    learner: Learner

    @property
    def num_seeds(self) -> int:
        return self.config.num_seeds

    @property
    def num_points(self) -> int:
        return len(self.config.sweep_points())

    def seed_params(self, seed: int, point: int = 0) -> Params:
        """Parameters of one seed (of one sweep point: run ``point * num_seeds + seed``)."""
        if self.params is None:
            raise FileNotFoundError(f"{self.run_dir} has no saved parameters; it did not finish training")
        if not 0 <= seed < self.num_seeds:
            raise IndexError(f"seed {seed} is not in this run; choose 0..{self.num_seeds - 1}")
        if not 0 <= point < self.num_points:
            raise IndexError(f"point {point} is not in this run's sweep; choose 0..{self.num_points - 1}")
        return jax.tree.map(lambda x: x[point * self.num_seeds + seed], self.params)

    def point_hyper(self, point: int = 0) -> Hyper:
        """The traced hyperparameters of one sweep point (pass to ``trace_episodes``)."""
        from rmix_jax import experiment

        _, hyper = experiment.run_inputs(experiment.make_experiment(self.config))
        return jax.tree.map(lambda x: jnp.asarray(x[point * self.num_seeds]), hyper)


def load_run(run_dir: Path | str) -> Run:
    """Read ``config.yaml``, ``metrics.jsonl`` and ``params/`` of a run directory."""
    run_dir = Path(run_dir)
    config = results.load_run_config(run_dir)
    rows = results.load_metrics(run_dir)
    from rmix_jax import experiment

    exp = experiment.make_experiment(config)
    learner = exp.learner
    params = None
    if (run_dir / results.PARAMS_DIR).exists():
        params = results.load_params(run_dir, experiment.abstract_state(exp).params)
    return Run(run_dir=run_dir, config=config, rows=rows, params=params, learner=learner)


def latest_run(results_dir: Path | str = "results", prefix: str = "", with_params: bool = True) -> Path:
    """The most recently written run directory under ``results_dir`` whose name starts with ``prefix``."""
    root = Path(results_dir)
    candidates = [
        p for p in root.glob(f"{prefix}*")
        if (p / results.METRICS_FILE).is_file() and (not with_params or (p / results.PARAMS_DIR).exists())
    ]
    if not candidates:
        raise FileNotFoundError(f"no finished run matching {root}/{prefix}*; run `make train` first")
    return max(candidates, key=lambda p: (p / results.METRICS_FILE).stat().st_mtime)


def action_names(config: Config, num_actions: int) -> list[str]:
    """Readable names of the actions of the run's environment."""
    if config.env.name == "macn":
        return list(MACN_ACTIONS)
    if config.env.name == "smax":
        return [*SMAX_MOVES, *(f"attack {j}" for j in range(num_actions - len(SMAX_MOVES)))]
    return [f"action {a}" for a in range(num_actions)]


# --- episode traces -----------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeTrace:
    """Per-step record of E episodes (NumPy, padded to T; ``filled`` marks real steps)."""

    reward: np.ndarray  # (E, T)
    filled: np.ndarray  # (E, T) bool
    alpha: np.ndarray  # (E, T, N) risk level each agent acted on
    level_probs: np.ndarray  # (E, T, N, K) the predictor's P(alpha_k) (one-hot if alpha is static)
    atoms: np.ndarray  # (E, T, N, A, M) return atoms per action (unsorted, as the network emits)
    values: np.ndarray  # (E, T, N, A) CVaR_alpha of each action's atoms
    actions: np.ndarray  # (E, T, N) actions taken
    avail: np.ndarray  # (E, T, N, A) bool
    state: np.ndarray  # (E, T, S) global state before each step
    won: np.ndarray  # (E,) bool

    @property
    def lengths(self) -> np.ndarray:
        return self.filled.sum(axis=1)

    @property
    def returns(self) -> np.ndarray:
        return (self.reward * self.filled).sum(axis=1)

    def episode(self, index: int) -> "EpisodeTrace":
        """One episode, still with a leading axis of size 1, cut to its length."""
        length = int(self.lengths[index])
        return EpisodeTrace(**{
            name: (value[index : index + 1, :length] if value.ndim > 1 else value[index : index + 1])
            for name, value in self.__dict__.items()
        })


def level_probabilities(config: Config, scores: jax.Array, alpha: jax.Array,
                        static: jax.Array | bool | None = None) -> jax.Array:
    """P(alpha_k) over the K levels: softmax of the predictor's scores, or one-hot for a fixed alpha."""
    num_levels = config.agent.num_risk_levels
    static = not config.uses_risk_predictor if static is None else static
    one_hot = jax.nn.one_hot(ops.alpha_to_level(alpha, num_levels), num_levels)
    return jnp.where(static, one_hot, jax.nn.softmax(scores, axis=-1))


def trace_episodes(
    learner: Learner, params: Params, key: jax.Array, num_episodes: int = 1, epsilon: float = 0.0,
    hyper: Hyper | None = None,
) -> EpisodeTrace:
    """Roll out episodes of one seed's ``params`` and record what every agent saw and chose.

    The agents act as in training (``learner.rollout``); atoms and scores are then
    recomputed over the stored episodes by the training unroll, which gives the same
    values as acting (tested in tests/test_learner.py). ``hyper`` (default: the
    config's) gives a sweep point's static alpha (``Run.point_hyper``).
    """
    hyper = learner.default_hyper() if hyper is None else hyper

    @jax.jit
    def run(params: Params, key: jax.Array, hyper: Hyper):  # hyper traced: one program for every sweep point
        static = ~learner.learns_alpha(hyper)  # per sweep point in a program that also learns alpha
        episodes, stats = learner.rollout(params, key, jnp.float32(epsilon), num_episodes, hyper)
        atoms, scores = learner.unroll(params.agent, episodes)
        values, alpha = learner.values_and_alpha(atoms, scores, hyper.alpha)
        cut = slice(None, -1)  # drop the final-observation step
        return {
            "reward": episodes.reward[:, cut],
            "filled": episodes.filled[:, cut],
            "alpha": alpha[:, cut],
            "level_probs": level_probabilities(learner.config, scores, alpha, static)[:, cut],
            "atoms": atoms[:, cut],
            "values": values[:, cut],
            "actions": episodes.actions[:, cut],
            "avail": episodes.avail[:, cut],
            "state": episodes.state[:, cut],
            "won": stats.won,
        }

    return EpisodeTrace(**{k: np.asarray(v) for k, v in jax.device_get(run(params, key, hyper)).items()})


def macn_positions(config: Config, state: np.ndarray) -> np.ndarray:
    """MACN global states (..., S) -> each agent's cell (..., N, 2) as (x, y), read off the state's
    one-hot position block (``MACN.get_state``: N one-hot grids of W * H cells first)."""
    width = config.env.width
    cells = width * config.env.height
    num_agents = (state.shape[-1] - 1) // (cells + 1)  # N grids, N at-goal flags, t / limit
    grid = np.asarray(state)[..., : num_agents * cells].reshape(*state.shape[:-1], num_agents, cells)
    index = grid.argmax(-1)
    return np.stack([index % width, index // width], axis=-1)


def macn_cliff_distance(config: Config, positions: np.ndarray) -> np.ndarray:
    """Manhattan distance (..., ) from cells (..., 2) to the nearest cliff cell (x in 1..W-2, y = 0)."""
    x, y = positions[..., 0], positions[..., 1]
    dx = np.maximum(0, np.maximum(1 - x, x - (config.env.width - 2)))
    return dx + y


def alpha_by_cliff_distance(config: Config, trace: EpisodeTrace) -> dict[int, tuple[float, int]]:
    """Mean alpha acted on at each distance to the cliff, over the filled agent-steps of MACN episodes
    where the agent is not yet at the goal (there its actions do nothing): {distance: (mean, count)}."""
    if config.env.name != "macn":
        raise ValueError(f"alpha by distance to the cliff needs a MACN run, not {config.env.name!r}")
    positions = macn_positions(config, trace.state)  # (E, T, N, 2)
    distance = macn_cliff_distance(config, positions)
    goal = (positions[..., 0] == config.env.width - 1) & (positions[..., 1] == 0)
    keep = trace.filled[..., None] & ~goal
    out = {}
    for d in np.unique(distance[keep]):
        chosen = keep & (distance == d)
        out[int(d)] = (float(trace.alpha[chosen].mean()), int(chosen.sum()))
    return out


def sorted_atoms(atoms: np.ndarray) -> np.ndarray:
    """Atoms sorted ascending along the last axis (the order CVaR reads them in)."""
    return np.sort(np.asarray(atoms), axis=-1)


def cvar_cutoff(alpha: float, num_atoms: int) -> int:
    """How many of the lowest atoms CVaR_alpha averages: ``ceil(alpha * M)``, exact on the grid."""
    return int(ops.tail_count(jnp.float32(alpha), num_atoms))


# --- aggregate statistics -----------------------------------------------------------


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
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        point, interval = rly.get_interval_estimates(
            {"x": scores}, lambda s: np.array([iqm(s[:, 0])]), reps=reps, confidence_interval_size=confidence
        )
    finally:
        np.random.set_state(saved)
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
    """IQM over seeds with a stratified-bootstrap interval at each grid point (rliable)."""
    from rliable import library as rly

    grid, values = seed_matrix(rows, key, num_points)
    scores = values[:, None, :]  # rliable wants (runs, tasks, ...)

    def statistic(s: np.ndarray) -> np.ndarray:
        return iqm(s.reshape(-1, s.shape[-1]), axis=0)

    np.random.seed(seed)  # rliable's bootstrap draws from NumPy's global generator
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


# --- plots --------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    if not _in_notebook():  # scripts and tests draw off-screen
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        return get_ipython() is not None
    except ImportError:
        return False


def save_figure(fig: Any, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_episode_alpha(trace: EpisodeTrace, index: int = 0, title: str = "") -> Any:
    """Team reward and every agent's alpha at each step of one episode (paper Fig. 11)."""
    plt = _pyplot()
    ep = trace.episode(index)
    steps = np.arange(int(ep.lengths[0]))
    fig, (ax_r, ax_a) = plt.subplots(2, 1, figsize=(6.4, 4.6), sharex=True, height_ratios=(1, 1.4))
    ax_r.bar(steps, ep.reward[0], color="tab:gray", width=0.8)
    ax_r.set_ylabel("team reward")
    ax_r.set_title(title or f"episode return {ep.returns[0]:g}, {len(steps)} steps")
    ax_r.grid(alpha=0.3)
    for agent in range(ep.alpha.shape[-1]):
        ax_a.step(steps, ep.alpha[0, :, agent], where="mid", marker="o", markersize=3, label=f"agent {agent}")
    ax_a.set_ylim(0, 1.05)
    ax_a.set_xlabel("step")
    ax_a.set_ylabel("alpha (risk level)")
    ax_a.legend(fontsize=8, loc="lower right")
    ax_a.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_atoms_heatmap(
    trace: EpisodeTrace, step: int, agent: int = 0, index: int = 0,
    names: Sequence[str] | None = None, title: str = "",
) -> Any:
    """Sorted atoms of each available action at one step, with the CVaR cut-off and the choice (Fig. 12).

    Rows are actions, columns the M atoms in ascending order; the dashed line
    closes the ``ceil(alpha * M)`` lowest atoms that CVaR averages; the chosen
    action's row is outlined and each row is labelled with its CVaR value.
    """
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    ep = trace.episode(index)
    if not 0 <= step < int(ep.lengths[0]):
        raise IndexError(f"step {step} is outside the episode (0..{int(ep.lengths[0]) - 1})")
    atoms = sorted_atoms(ep.atoms[0, step, agent])  # (A, M)
    avail = ep.avail[0, step, agent]
    alpha = float(ep.alpha[0, step, agent])
    chosen = int(ep.actions[0, step, agent])
    rows = np.nonzero(avail)[0]
    names = list(names) if names is not None else [f"action {a}" for a in range(atoms.shape[0])]
    num_atoms = atoms.shape[1]
    k = cvar_cutoff(alpha, num_atoms)

    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * num_atoms + 2.5), 0.55 * len(rows) + 1.6))
    image = ax.imshow(atoms[rows], aspect="auto", cmap="viridis")
    fig.colorbar(image, ax=ax, label="atom value (return)")
    ax.axvline(k - 0.5, color="white", linestyle="--", linewidth=2)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([
        f"{names[a]}  CVaR={ep.values[0, step, agent, a]:.2f}" for a in rows
    ])
    ax.set_xticks(range(num_atoms))
    ax.set_xticklabels([str(i + 1) for i in range(num_atoms)], fontsize=7)
    ax.set_xlabel(f"atoms, ascending (CVaR averages the lowest {k} of {num_atoms})")
    if chosen in rows:
        r = int(np.nonzero(rows == chosen)[0][0])
        ax.add_patch(Rectangle((-0.5, r - 0.5), num_atoms, 1, fill=False, edgecolor="red", linewidth=2.5))
    ax.set_title(title or f"agent {agent}, step {step}: alpha={alpha:.1f}, chose {names[chosen]}")
    fig.tight_layout()
    return fig


def plot_iqm_curves(
    runs: dict[str, Sequence[dict[str, Any]]], key: str = "test_return",
    optimum: float | None = None, title: str = "", reps: int = 2000,
) -> Any:
    """IQM and 95% bootstrap band over seeds for several runs on one axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, rows in runs.items():
        c = iqm_curve(rows, key, reps=reps)
        ax.plot(c["env_steps"], c["iqm"], label=f"{label} (IQM, {int(c['num_seeds'])} seeds)")
        ax.fill_between(c["env_steps"], c["lower"], c["upper"], alpha=0.25)
    if optimum is not None:
        ax.axhline(optimum, color="k", linestyle=":", linewidth=1, label=f"optimum {optimum:g}")
    ax.set_xlabel("env steps per seed")
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title(title or "IQM with 95% stratified-bootstrap intervals")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


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


def plot_alpha_over_training(rows: Sequence[dict[str, Any]], key: str = "alpha_hist", title: str = "") -> Any:
    """Share of each risk level among chosen alphas per chunk (stacked) and mean alpha per seed; below
    them, where the rows have them, the predictor's diagnostics per seed: the entropy of P(alpha) and the
    norm of the TD gradient reaching the predictor (a predictor that has stopped learning shows as an
    entropy near 0 and a vanishing gradient)."""
    plt = _pyplot()
    stats = alpha_over_training(rows, key)
    diagnostics = predictor_diagnostics(rows)
    panels = 4 if diagnostics else 2
    fig, axes = plt.subplots(panels, 1, figsize=(6.4, 2.6 * panels), sharex=True,
                             height_ratios=(1.4, 1, 1, 1)[:panels])
    ax_s, ax_m = axes[0], axes[1]
    colors = plt.get_cmap("viridis")(np.linspace(0, 1, len(stats["levels"])))
    ax_s.stackplot(
        stats["env_steps"], np.nan_to_num(stats["share"]).T, colors=colors,
        labels=[f"{a:.1f}" for a in stats["levels"]],
    )
    ax_s.set_ylim(0, 1)
    ax_s.set_ylabel("share of agent-steps")
    ax_s.legend(title="alpha", fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax_s.set_title(title or f"chosen alpha over training ({key})")
    for seed_curve in stats["mean_alpha"]:
        ax_m.plot(stats["env_steps"], seed_curve, alpha=0.5, linewidth=1)
    with warnings.catch_warnings():  # a bin no seed reached is NaN, not an error
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(stats["mean_alpha"], axis=0)
    ax_m.plot(stats["env_steps"], mean, color="k", linewidth=2, label="mean over seeds")
    ax_m.set_ylim(0, 1.05)
    ax_m.set_ylabel("mean alpha")
    ax_m.legend(fontsize=8)
    ax_m.grid(alpha=0.3)
    if diagnostics:
        ax_h, ax_g = axes[2], axes[3]
        num_levels = len(stats["levels"])
        for seed, d in diagnostics.items():
            ax_h.plot(d["t_env"], d["alpha_entropy"], alpha=0.6, linewidth=1)
            ax_g.semilogy(d["t_env"], np.maximum(d["risk_grad_norm"], 1e-30), alpha=0.6, linewidth=1)
        ax_h.axhline(np.log(num_levels), color="k", linestyle=":", linewidth=1, label=f"uniform (ln {num_levels})")
        ax_h.set_ylabel("entropy of P(alpha)\n(nats)")
        ax_h.legend(fontsize=8)
        ax_h.grid(alpha=0.3)
        ax_g.set_ylabel("TD gradient norm\non the predictor")
        ax_g.grid(alpha=0.3)
    axes[-1].set_xlabel("env steps per seed")
    fig.tight_layout()
    return fig
