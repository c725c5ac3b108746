"""Figures of runs and traced episodes (matplotlib), each function returning its figure.

Scripts and tests draw off-screen (Agg); in a notebook the figures show inline.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from rmix_jax.stats import alpha_over_training, cvar_cutoff, iqm_curve, predictor_diagnostics, sorted_atoms

if TYPE_CHECKING:
    from rmix_jax.analysis import EpisodeTrace


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
