"""The pinned jax must not hang a jitted, vmapped multi-seed init of GRU networks (docs/usage.md, "The pinned stack").

jax 0.10.x hung about one run in three on these 2-core CPUs (two attempts catch it 5 times in 9). Each runs in a
fresh interpreter under a timeout, so a hang fails the test instead of stalling CI.
"""

import subprocess
import sys

import pytest

SCRIPT = """
import jax, jax.numpy as jnp
from rmix_jax.config import load_config
from rmix_jax.learner import make_learner
learner = make_learner(load_config(["num_seeds=2", "train.buffer_size=16", "train.batch_size=4"]))
state = jax.jit(jax.vmap(learner.init))(jax.random.split(jax.random.PRNGKey({seed}), 4))
def f(key):
    keys = jax.random.split(key, 4)
    return sum(jnp.linalg.qr(jax.random.normal(k, (16, 16)))[0].sum() for k in keys)
jax.block_until_ready(jax.jit(jax.vmap(f))(jax.random.split(jax.random.PRNGKey({seed}), 2)))
jax.block_until_ready(state)
print("ok")
"""


@pytest.mark.slow
def test_vmapped_multi_seed_init_does_not_hang():
    for seed in range(2):
        proc = subprocess.run([sys.executable, "-c", SCRIPT.format(seed=seed)], capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
