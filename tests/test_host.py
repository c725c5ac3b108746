"""The host-side episode loop (rmix_jax.host) against the jitted run_chunk on MACN."""

import jax
import numpy as np
import pytest

from rmix_jax import experiment
from rmix_jax.config import load_config
from rmix_jax.host import HostRunner, StepFromHost

# A 4 x 2 grid, 2 seeds, 2 envs each, 3 test episodes (not a multiple of the envs:
# the host loop's last batch is partial), QR updates mixed in, the loss over time windows.
CONFIG = ["env.width=4", "env.height=2", "num_seeds=2", "train.num_envs=2", "train.iterations_per_eval=2",
          "train.test_episodes=3", "train.batch_size=4", "train.buffer_size=32", "agent.hidden_dim=16",
          "train.start_to_update_qr=0", "train.qr_interval=40", "train.t_max=400", "wandb.mode=disabled",
          "train.time_windows=2"]



@pytest.mark.slow
def test_host_loop_matches_jitted_chunks():
    config = load_config(CONFIG)
    exp = experiment.make_experiment(config)
    jitted_state = experiment.init_state(exp)
    host_state = experiment.init_state(exp)
    env = StepFromHost(exp.learner.env)
    runner = HostRunner(exp.learner, [env] * (exp.num_runs * config.train.num_envs), exp.num_runs)
    for _ in range(2):
        # States stay on the device: NumPy states would change the inputs' shardings and
        # recompile every jitted piece for the second chunk.
        jitted_state, jitted = exp.chunk_fn(jitted_state)
        host_state, host = runner.run_chunk(host_state)
        jitted, host = jax.device_get((jitted, host))
        assert set(host) == set(jitted)
        # Same keys, same episodes: integer rewards make returns exact.
        for key in ("t_env", "episodes", "updates", "qr_updates", "alpha_hist", "test_alpha_hist", "update_window"):
            np.testing.assert_array_equal(host[key], jitted[key], err_msg=key)
        for key in ("return_mean", "test_return", "test_length", "won_rate"):
            np.testing.assert_array_equal(host[key], jitted[key], err_msg=key)
        for key in ("td_loss", "qr_loss", "grad_norm", "epsilon"):
            np.testing.assert_allclose(host[key], jitted[key], rtol=1e-5, err_msg=key)
        # The replays hold the same episodes, padding included (both store ended steps as padding).
        for a, b in zip(jax.tree.leaves(jax.device_get(host_state.buffer_state)),
                        jax.tree.leaves(jax.device_get(jitted_state.buffer_state))):
            np.testing.assert_array_equal(a, b)
    assert np.all(host["updates"] > 0) and np.all(host["qr_updates"] >= 0)
    for a, b in zip(jax.tree.leaves(jax.device_get(host_state.params)), jax.tree.leaves(jax.device_get(jitted_state.params))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    runner.close()


def test_empty_episode_matches_a_rollout_in_shape_and_type():
    config = load_config(CONFIG)
    learner = experiment.make_experiment(config).learner
    params = jax.eval_shape(learner.init, jax.random.PRNGKey(0)).params
    rolled, _ = jax.eval_shape(lambda p: learner.rollout(p, jax.random.PRNGKey(1), 0.0, 1), params)
    empty = learner.empty_episode()
    for a, b in zip(jax.tree.leaves(empty), jax.tree.leaves(rolled)):
        assert a.shape == b.shape[1:] and a.dtype == b.dtype
