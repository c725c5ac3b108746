"""What a SMAX run's living units do in greedy episodes, per seed: the share of stop, move
and attack actions, how often an attack is available, the distance to the nearest living
enemy, and how many agent steps belong to dead units (SMAX makes them take stop).

    .venv/bin/python benchmarks/smax_unit_behaviour.py results/<smax run> --episodes 16

Prints a table and writes JSON (default: ``<run>/unit_behaviour.json``). Actions are read
off the episodes, alive flags and positions off the env states before each step. How
battles end: the focus-fire share (of the steps where two or more living allies attack,
those where all attack one enemy), and the allies and enemies alive before the final
step of lost and of won episodes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rmix_jax.analysis import load_run


def seed_behaviour(run, seed: int, episodes: int, key: jax.Array) -> dict:
    learner = run.learner
    num_allies = learner.env.num_allies
    layout = learner.env.actions  # the adapter's SMAX action layout
    num_enemies, STOP, FIRST_ATTACK = layout.num_enemies, layout.stop, layout.first_attack
    roll = jax.jit(lambda p, k: learner.rollout(p, k, jnp.float32(0.0), episodes, keep_env_states=True))
    eps, stats, (env_states, _) = jax.device_get(roll(run.seed_params(seed), key))
    units = env_states.state  # per step, before it: (E, T, U, ...)
    alive = np.asarray(units.unit_alive)
    positions = np.asarray(units.unit_positions)
    steps = alive.shape[1]
    filled = np.asarray(eps.filled)[:, :steps]
    actions = np.asarray(eps.actions)[:, :steps]
    # (an env.dead_noop run has its no-op after the attacks; living units never have it)
    can_attack = np.asarray(eps.avail)[:, :steps, :, FIRST_ATTACK:FIRST_ATTACK + num_enemies].any(-1)
    living = alive[:, :, :num_allies] & filled[..., None]
    taken = actions[living]
    gaps = np.linalg.norm(positions[:, :, :num_allies, None] - positions[:, :, None, num_allies:], axis=-1)
    nearest = np.where(alive[:, :, None, num_allies:], gaps, np.inf).min(-1)[living]
    dead_steps = int((filled[..., None] & ~alive[:, :, :num_allies]).sum())
    # focus fire: of the steps where two or more living allies attack, the share where all pick one enemy
    attacking = living & (actions >= FIRST_ATTACK) & (actions < FIRST_ATTACK + num_enemies)
    targets = (actions[..., None] == FIRST_ATTACK + np.arange(num_enemies)) & attacking[..., None]
    counts, attackers = targets.sum(2), attacking.sum(-1)  # (E, T, enemies), (E, T)
    several = attackers >= 2
    # how battles end: units alive before each episode's final step, for lost and for won episodes
    last = filled.sum(1) - 1
    before_last = alive[np.arange(alive.shape[0]), last]  # (E, units)
    won = np.asarray(stats.won).astype(bool)

    def left(mask, team):
        return float(before_last[mask][:, team].sum(-1).mean()) if mask.any() else None

    return {
        "seed": seed,
        "win_rate": float(np.mean(won)),
        "return": float(np.mean(stats.returns)),
        "length": float(np.mean(stats.lengths)),
        "stop": float(np.mean(taken == STOP)),
        "move": float(np.mean(taken < STOP)),
        "attack": float(np.mean(taken >= FIRST_ATTACK)),
        "attack_available": float(np.mean(can_attack[living])),
        "nearest_enemy_median": float(np.median(nearest[np.isfinite(nearest)])) if np.isfinite(nearest).any() else None,
        "dead_share": dead_steps / max(dead_steps + int(living.sum()), 1),
        "focus_fire": float(np.mean(counts.max(-1)[several] == attackers[several])) if several.any() else None,
        "lost_final_step_allies": left(~won, slice(0, num_allies)),
        "lost_final_step_enemies": left(~won, slice(num_allies, None)),
        "won_final_step_allies": left(won, slice(0, num_allies)),
    }


def fmt(value: float | None, width: int) -> str:
    """``value`` to 2 decimals right-aligned in ``width``; ``-`` where there is none."""
    return f"{'-' if value is None else f'{value:.2f}':>{width}}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--seed", type=int, default=123, help="key of the greedy episodes")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    run = load_run(args.run_dir)
    if run.config.env.name != "smax":
        raise SystemExit(f"{args.run_dir} is a {run.config.env.name} run; this script reads SMAX runs")
    rows = [seed_behaviour(run, s, args.episodes, jax.random.PRNGKey(args.seed)) for s in range(run.num_seeds)]
    print(f"{run.config.method} on SMAX {run.config.env.map}, {args.episodes} greedy episodes per seed")
    print(f"{'seed':>4} {'win':>5} {'return':>7} {'stop':>5} {'move':>5} {'attack':>6} {'atk avail':>9} "
          f"{'enemy dist':>10} {'dead share':>10} {'focus':>5} {'lost: allies/enemies left':>25} "
          f"{'won: allies left':>16}")

    for r in rows:
        lost = f"{fmt(r['lost_final_step_allies'], 0)} / {fmt(r['lost_final_step_enemies'], 0)}"
        print(f"{r['seed']:>4} {r['win_rate']:>5.2f} {r['return']:>7.2f} {r['stop']:>5.2f} {r['move']:>5.2f} "
              f"{r['attack']:>6.2f} {r['attack_available']:>9.2f} {fmt(r['nearest_enemy_median'], 10)} "
              f"{r['dead_share']:>10.2f} {fmt(r['focus_fire'], 5)} {lost:>25} {fmt(r['won_final_step_allies'], 16)}")
    out = Path(args.out) if args.out else Path(args.run_dir) / "unit_behaviour.json"
    out.write_text(json.dumps({"run": str(args.run_dir), "episodes": args.episodes, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
