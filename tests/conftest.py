"""Test-session set-up: one persistent XLA compilation cache for the session.

Many tests compile the same programs (the same tiny config trained, saved and
resumed, or run again in a subprocess); the cache makes every compile after the
first a disk read. The directory is fresh per session, so tests stay hermetic.
"""

import os
import tempfile

import pytest

_CACHE = tempfile.mkdtemp(prefix="rmix_jax_xla_cache_")
# Environment first, so subprocesses started by tests share the cache.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The suite compiles ~70 small programs and runs each for a moment: XLA's CPU backend at
# -O0 compiles them about 40% faster (a tiny RMIX chunk: 16 s -> 9.5 s) and runs them ~3x
# slower, which for these programs is a net win (pytest 772 s -> 586 s on 2 cores). The
# long learning runs ask for full optimisation per jit (compiler_options). Set before
# any backend starts; subprocesses inherit it.
# --xla_llvm_disable_expensive_passes: LLVM's costliest passes off too (a tiny chunk: 22.9 s -> 20.2 s).
# --xla_cpu_use_fusion_emitters=false: XLA:CPU's older fusion code generator, which compiles these
# -O0 programs faster (a tiny RMIX chunk: 8.2-9.3 s -> 5.0-6.7 s; at -O3 it is slower, so only here).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
                               + " --xla_cpu_use_fusion_emitters=false").strip()

# jaxmarl's first import swaps sys.stderr back; imported here, before any test captures
# output, it cannot hide a CLI's one-line error from capsys.
import rmix_jax.envs.smax  # noqa: E402,F401

# A tiny RMIX run (2 seeds, QR updates from the start) shared by the tooling tests, so
# the same program is traced and compiled once per session.
TINY_RUN = ["num_seeds=2", "train.t_max=200", "train.iterations_per_eval=2", "train.buffer_size=16",
            "train.batch_size=4", "agent.hidden_dim=8", "train.start_to_update_qr=0", "train.qr_interval=100",
            "checkpoint.every_chunks=1", "wandb.mode=disabled"]


@pytest.fixture(scope="session")
def tiny_finished_run(tmp_path_factory):
    """(run dir, metric rows) of TINY_RUN trained to the end, checkpointed every chunk. Read-only for tests."""
    from rmix_jax.config import load_config
    from rmix_jax.train import run

    root = tmp_path_factory.mktemp("tiny_finished")
    run_dir, rows = run(load_config(TINY_RUN + [f"results_dir={root}", "run_name=full"]), progress=False)
    assert max(r["chunk"] for r in rows) >= 3  # enough chunks that stopping at 2 is mid-run
    return run_dir, rows


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config, items):
    """Tests reading the shared tiny run go to one xdist worker (``--dist loadgroup``), so the
    run is trained once per session rather than once per worker; the longest work goes first."""
    for item in items:
        if "tiny_finished_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("tiny_run"))
    # The longest work first (the tiny-run group, then tests marked slow), so that no
    # worker is left with a long test while the other one idles at the end.
    def order(item):
        return 0 if item.get_closest_marker("xdist_group") else 1 if item.get_closest_marker("slow") else 2
    items.sort(key=order)
