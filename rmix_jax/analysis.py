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

The statistics live in ``rmix_jax.stats`` and the figures in ``rmix_jax.plots``; both are
importable from here too.

Shape legend: E episodes, T episode limit, N agents, A actions, M atoms, K risk levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rmix_jax import ops, results
from rmix_jax.config import Config
from rmix_jax.envs.smax_actions import SMAXActions
from rmix_jax.learner import Hyper, Learner, Params
from rmix_jax.plots import (  # noqa: F401  (re-exported: the notebook's one import)
    plot_alpha_over_training,
    plot_atoms_heatmap,
    plot_episode_alpha,
    plot_iqm_curves,
    save_figure,
)
from rmix_jax.stats import (  # noqa: F401  (re-exported)
    alpha_over_training,
    cvar_cutoff,
    iqm,
    iqm_curve,
    iqm_interval,
    predictor_diagnostics,
    seed_matrix,
    sorted_atoms,
    win_rate_interval,
)

MACN_ACTIONS = ("up", "down", "left", "right")


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
        return SMAXActions.for_num_actions(num_actions, config.env.dead_noop).names()
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
