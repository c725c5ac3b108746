"""Hand-written SMAX policies as reference points for learned win rates: how often simple
scripts beat JaxMARL's heuristic enemy on a map, through the same adapter the learner uses.

    .venv/bin/python benchmarks/smax_scripted.py --map 3m --episodes 1024

Policies (allies only; the enemy is JaxMARL's heuristic, as in training):
``random``: a uniformly random available action.
``closest``: each ally attacks its closest living enemy when it is in range, else walks
towards it (no coordination).
``focus_fire``: every ally picks the same target, the living enemy with the least health
(ties to the one closest to the allies' centre), attacks it when in range, else walks
towards it; an ally with no target in range but another enemy in range fires at that one.

Episodes run jitted, vmapped over episodes; prints win rate (with a 95% Wilson interval),
return and length per policy, and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rmix_jax import analysis
from rmix_jax.config import load_config
from rmix_jax.envs import make_env

POLICIES = ("random", "closest", "focus_fire")


def move_vectors(num_moves: int) -> jnp.ndarray:
    """The unit vectors SMAX's discrete move actions 0..num_moves-1 walk along (its own decoding)."""
    a = np.arange(num_moves)
    raw = np.stack([(-1.0) ** (a // 2), (-1.0) ** (a // 2 + a % 2)], axis=-1) / math.sqrt(2)
    rotation = np.array([[1.0, -1.0], [1.0, 1.0]]) / math.sqrt(2)
    return jnp.asarray(raw @ rotation.T, jnp.float32)


def make_policy(name: str, num_allies: int, num_moves: int):
    """(key, env_state, avail (N, A)) -> (N,) actions."""
    moves = move_vectors(num_moves)
    first_attack = num_moves + 1  # moves, then stop, then one attack per enemy (SMAXActions)

    def uniform(key, avail):
        return jax.random.categorical(key, jnp.where(avail > 0, 0.0, -jnp.inf))

    def towards(avail, ally_pos, target_pos):
        """The available move that best points from each ally to its target."""
        score = (target_pos - ally_pos) @ moves.T  # (N, moves)
        score = jnp.where(avail[:, :num_moves] > 0, score, -jnp.inf)
        return jnp.argmax(score, axis=-1)

    def act(key, env_state, avail):
        if name == "random":
            return uniform(key, avail)
        state = env_state.state
        pos, alive, health = state.unit_positions, state.unit_alive, state.unit_health
        ally_pos, enemy_pos = pos[:num_allies], pos[num_allies:]
        enemy_alive = alive[num_allies:]
        in_range = avail[:, first_attack:] > 0  # (N, enemies)
        if name == "closest":
            dist = jnp.linalg.norm(ally_pos[:, None] - enemy_pos[None], axis=-1)
            target = jnp.argmin(jnp.where(enemy_alive[None], dist, jnp.inf), axis=-1)  # (N,)
        else:
            centre = jnp.sum(ally_pos * alive[:num_allies, None], 0) / jnp.maximum(jnp.sum(alive[:num_allies]), 1)
            spread = jnp.linalg.norm(enemy_pos - centre, axis=-1)
            score = health[num_allies:] + 1e-3 * spread
            target = jnp.broadcast_to(jnp.argmin(jnp.where(enemy_alive, score, jnp.inf)), (num_allies,))
        can_hit_target = jnp.take_along_axis(in_range, target[:, None], axis=1)[:, 0]
        other = jnp.argmax(in_range, axis=-1)  # some enemy in range, if any
        attack = jnp.where(can_hit_target, target, other) + first_attack
        walk = towards(avail, ally_pos, enemy_pos[target])
        # focus fire shoots whatever is in range while walking to its target; closest only its target
        fire = jnp.any(in_range, axis=-1) if name == "focus_fire" else can_hit_target
        action = jnp.where(fire, attack, walk)
        dead = avail[:, :num_moves].sum(-1) == 0  # a dead unit may only stop
        return jnp.where(dead, uniform(key, avail), action)

    return act


def evaluate(map_name: str, policy: str, episodes: int, seed: int) -> dict:
    config = load_config(["env=smax", f"env.map={map_name}"])
    env = make_env(config.env)
    act = make_policy(policy, env.num_allies, env.actions.num_moves)
    limit = env.spec.episode_limit

    def episode(key):
        reset_key, key = jax.random.split(key)
        env_state, ts = env.reset(reset_key)

        def step(carry, key):
            env_state, ts, done, ret, length, won = carry
            act_key, env_key = jax.random.split(key)
            actions = act(act_key, env_state, ts.avail)
            env_state, ts = env.step(env_key, env_state, actions)
            live = ~done
            ret = ret + jnp.where(live, ts.reward, 0.0)
            length = length + live.astype(jnp.int32)
            won = won | (live & ts.won)
            return (env_state, ts, done | ts.terminated | ts.truncated, ret, length, won), None

        init = (env_state, ts, jnp.bool_(False), jnp.float32(0.0), jnp.int32(0), jnp.bool_(False))
        (_, _, _, ret, length, won), _ = jax.lax.scan(step, init, jax.random.split(key, limit))
        return ret, length, won

    ret, length, won = jax.jit(jax.vmap(episode))(jax.random.split(jax.random.PRNGKey(seed), episodes))
    ret, length, won = map(np.asarray, (ret, length, won))
    low, high = analysis.win_rate_interval(int(won.sum()), episodes)
    return {"map": map_name, "policy": policy, "episodes": episodes, "win_rate": float(won.mean()),
            "win_rate_95": [low, high], "return_mean": float(ret.mean()), "length_mean": float(length.mean())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--map", default="3m")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--episodes", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="default: benchmarks/results/smax_scripted_<map>.json")
    args = parser.parse_args()
    rows = [evaluate(args.map, p, args.episodes, args.seed) for p in args.policies]
    print(f"\nscripted policies against JaxMARL's heuristic enemy, SMAX {args.map}, {args.episodes} episodes each")
    print(f"{'policy':<12} {'win rate':>9} {'95% CI':>15} {'return (x10)':>13} {'length':>7}")
    for r in rows:
        lo, hi = r["win_rate_95"]
        print(f"{r['policy']:<12} {r['win_rate']:>9.3f} {f'[{lo:.3f}, {hi:.3f}]':>15} {r['return_mean']:>13.2f} {r['length_mean']:>7.1f}")
    out = Path(args.out or Path(__file__).parent / "results" / f"smax_scripted_{args.map}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": platform.machine(), "jax": jax.__version__, "rows": rows,
                               "command": f"python benchmarks/smax_scripted.py --map {args.map} --episodes {args.episodes}"},
                              indent=2))


if __name__ == "__main__":
    main()
