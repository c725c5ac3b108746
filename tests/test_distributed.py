"""Several hosts, run for real: two rmix-train processes on a localhost coordinator (jax.distributed,
gloo CPU collectives) with one CPU device each (2 runs per device) and with two each (one run per
device) train 4 runs sharded over all their devices. The metrics equal one process's run of the same 4 runs on one device, only process 0 writes
the run's files (an audit hook in each process records what it opens for writing), and the
checkpoint, written by both, restores here in one process on one device."""

import glob
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from rmix_jax import checkpoint, distributed, experiment, results, tracking
from rmix_jax.config import ConfigError, load_config
from rmix_jax.train import checkpoint_meta, run

from conftest import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]
RUNS = TINY_RUN + ["num_seeds=4", "train.t_max=100", "checkpoint.every_chunks=0"]  # saved once, at the end

# Loaded by each process at start-up (PYTHONPATH): every path under RMIX_TEST_WATCH that the process
# opens for writing, creates, renames or replaces, one per line, in writes.<process id>.
AUDIT = textwrap.dedent("""
    import os, sys
    _root = os.environ.get("RMIX_TEST_WATCH")
    if _root:
        _log = open(os.path.join(os.environ["RMIX_TEST_WRITES"], "writes." + os.environ["RMIX_JAX_PROCESS_ID"]),
                    "a", buffering=1)
        _writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND

        def _note(path):
            if isinstance(path, (str, bytes, os.PathLike)):
                path = os.path.abspath(os.fsdecode(path))
                if path.startswith(_root):
                    _log.write(path + "\\n")

        def _hook(event, args):
            if event == "open":
                path, mode, flags = args
                if (mode and any(c in mode for c in "wax+")) or (mode is None and flags & _writing):
                    _note(path)
            elif event in ("os.rename", "os.replace"):
                _note(args[1])
            elif event == "os.mkdir":
                _note(args[0])

        sys.addaudithook(_hook)
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("devices_per_process", ["1", "2"])
def test_two_processes_train_the_runs_of_one_process(tmp_path, devices_per_process):
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(AUDIT)
    shared = tmp_path / "shared"
    args = RUNS + ["wandb.mode=offline", f"results_dir={shared}"]  # process 0 names the run directory
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'hook'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "RMIX_TEST_WATCH": str(shared), "RMIX_TEST_WRITES": str(tmp_path), "WANDB_API_KEY": "",
           "RMIX_JAX_CPU_DEVICES": devices_per_process, distributed.ENV: f"localhost:{free_port()}",
           distributed.NUM_PROCESSES_ENV: "2"}
    procs = []
    for i in (0, 1):
        with open(tmp_path / f"p{i}.out", "w") as out, open(tmp_path / f"p{i}.err", "w") as err:
            procs.append(subprocess.Popen([sys.executable, "-m", "rmix_jax.train", *args], cwd=ROOT, stdout=out,
                                          stderr=err, env={**env, distributed.PROCESS_ID_ENV: str(i)}))
    # Meanwhile, here: the same 4 runs in one process on one device.
    ref_dir, ref_rows = run(load_config(RUNS + [f"results_dir={tmp_path / 'ref'}", "run_name=one"]), progress=False)
    for i, proc in enumerate(procs):
        try:
            proc.wait(timeout=420)
        finally:
            proc.kill()
        assert proc.returncode == 0, (tmp_path / f"p{i}.err").read_text()[-3000:]
    [run_dir] = list(shared.iterdir())  # one directory, named by process 0 for both

    # The same metrics, row for row (up to the order of float sums: XLA may order a reduction
    # differently for another number of runs per device).
    rows = results.load_metrics(run_dir)
    assert len(rows) == len(ref_rows) and {r["run"] for r in rows} == {0, 1, 2, 3}
    for got, want in zip(rows, ref_rows, strict=True):
        assert got.keys() == want.keys()
        for key in got:
            if isinstance(want[key], (float, list)):
                np.testing.assert_allclose(np.asarray(got[key], float), np.asarray(want[key], float),
                                           rtol=1e-4, atol=1e-5, err_msg=key)
            else:
                assert got[key] == want[key], key

    # Only process 0 wrote the run's own files; both wrote their share of each checkpoint.
    writes = [set((tmp_path / f"writes.{i}").read_text().split()) for i in (0, 1)]
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "learning_curve.png", "params"):
        assert str(run_dir / name) in writes[0], name
    outside = [p for p in writes[1] if not p.startswith(str(run_dir / checkpoint.CHECKPOINT_DIR))]
    assert not outside, f"process 1 wrote {outside[:5]}"
    newest = run_dir / checkpoint.CHECKPOINT_DIR / str(checkpoint.latest_step(run_dir))
    assert {p.name for p in (newest / "state").glob("ocdbt.process_*")} == {"ocdbt.process_0", "ocdbt.process_1"}
    outputs = [(tmp_path / f"p{i}.out").read_text() for i in (0, 1)]
    assert f"results: {run_dir}" in outputs[0] and "results:" not in outputs[1]

    # One wandb run, with one record per chunk.
    assert len(glob.glob(str(run_dir / tracking.WANDB_DIR / "offline-run-*" / "*.wandb"))) == 1
    chunks = sorted({r["chunk"] for r in rows})
    assert [h["chunk"] for h in tracking.read_offline_run(run_dir)["history"]] == chunks

    # The collective checkpoint restores here, in one process on one device: it holds the final
    # parameters that process 0 saved, and those of the one-process run up to float rounding.
    exp = experiment.make_experiment(load_config(RUNS))
    assert len(jax.devices()) == 1 and exp.sharding is None
    state, meta = checkpoint.restore(run_dir, experiment.abstract_state(exp), checkpoint_meta(exp))
    assert meta["chunks"] == len(chunks)
    for a, b, c in zip(jax.tree.leaves(state.params), jax.tree.leaves(results.load_params(run_dir)),
                       jax.tree.leaves(results.load_params(ref_dir)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("settings, message", [
    ({distributed.ENV: "localhost"}, "host:port"),
    ({distributed.ENV: "localhost:1234"}, distributed.NUM_PROCESSES_ENV),
    ({distributed.ENV: "localhost:1234", distributed.NUM_PROCESSES_ENV: "2", distributed.PROCESS_ID_ENV: "x"},
     distributed.PROCESS_ID_ENV),
    ({distributed.ENV: "localhost:1234", distributed.NUM_PROCESSES_ENV: "2", distributed.PROCESS_ID_ENV: "2"},
     "0 .. n-1"),
])
def test_bad_distributed_settings_name_the_variable(monkeypatch, settings, message):
    for name in (distributed.ENV, distributed.NUM_PROCESSES_ENV, distributed.PROCESS_ID_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        distributed.initialize_from_env()


def test_one_process_is_the_primary_and_decides_alone(monkeypatch):
    monkeypatch.delenv(distributed.ENV, raising=False)
    assert distributed.initialize_from_env() is False  # unset: nothing to join, JAX untouched
    assert distributed.is_primary() and distributed.max_over_processes(15) == 15
    assert distributed.from_primary(lambda: "results/x") == "results/x"
