"""Ending runs early without losing work: SIGTERM at several points, then an exact resume; a second
signal during a save, which exits at once (as a kill would) and leaves the last complete checkpoint;
a sweep with one absurd learning rate (stop, or freeze that run)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from rmix_jax import checkpoint, results, stopping
from rmix_jax.config import load_config
from rmix_jax.train import main, resume_config, run

from conftest import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]

# rmix-train's main() in a subprocess, optionally signalling itself while checkpoint 2 is being
# written (after its files, before orbax commits it by renaming): once, or twice.
SIGNALLED = textwrap.dedent("""
    import os, signal, sys, time
    from rmix_jax.train import main  # first: it sets XLA's log level before jax is imported
    from orbax.checkpoint._src.path import atomicity

    mode = os.environ.get("RMIX_TEST_SIGNAL_DURING_SAVE", "")
    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize_signalled(self, *args, **kwargs):
        if os.path.basename(str(self._final_path)) == "2":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)
            if mode == "twice":
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the second signal's handler exits before the save can finish
        return await finalize(self, *args, **kwargs)

    if mode:
        atomicity.AtomicRenameTemporaryPath.finalize = finalize_signalled
    sys.exit(main(sys.argv[1:]))
""")


class Run:
    """rmix-train in a subprocess, its output in files (a pipe nobody reads could fill and block it)."""

    def __init__(self, tmp_path: Path, name: str, mode: str = "") -> None:
        self.out_path, self.err_path = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        env = {**os.environ, "RMIX_TEST_SIGNAL_DURING_SAVE": mode}
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", SIGNALLED, *TINY_RUN, f"results_dir={tmp_path}",
                                          f"run_name={name}"], cwd=ROOT, env=env, stdout=out, stderr=err)

    def wait(self, timeout: float = 300.0) -> tuple[int, str, str]:
        self.proc.wait(timeout=timeout)
        return self.proc.returncode, self.out_path.read_text(), self.err_path.read_text()

    def wait_for(self, predicate, timeout: float = 300.0) -> None:
        deadline = time.time() + timeout
        while not predicate():
            assert self.proc.poll() is None, f"exited early ({self.proc.returncode}): {self.err_path.read_text()[-2000:]}"
            assert time.time() < deadline, "timed out waiting"
            time.sleep(0.05)


def chunks_written(run_dir: Path) -> int:
    path = run_dir / results.METRICS_FILE
    return len({json.loads(line)["chunk"] for line in path.read_text().splitlines()}) if path.exists() else 0


def assert_resumes_to(run_dir: Path, uninterrupted: Path) -> None:
    run(resume_config(str(run_dir), []), progress=False, resume_dir=run_dir)
    assert results.load_metrics(run_dir) == results.load_metrics(uninterrupted)  # bit for bit
    assert (run_dir / results.METRICS_FILE).read_bytes() == (uninterrupted / results.METRICS_FILE).read_bytes()


@pytest.fixture(scope="module")
def uninterrupted(tiny_finished_run):
    return tiny_finished_run[0]


@pytest.mark.slow
@pytest.mark.parametrize("when", ["compile", "mid_run"])
def test_sigterm_stops_after_the_chunk_saves_and_resumes_exactly(tmp_path, uninterrupted, when):
    job = Run(tmp_path, when)
    run_dir = tmp_path / when
    if when == "compile":  # the run directory exists before the first chunk is compiled and run
        job.wait_for(lambda: (run_dir / "config.yaml").exists())
    else:
        job.wait_for(lambda: chunks_written(run_dir) >= 2)
    sent = time.time()
    job.proc.send_signal(signal.SIGTERM)
    status, out, err = job.wait()
    assert status == 128 + signal.SIGTERM, err[-2000:]
    assert "SIGTERM: stopping after this chunk" in err
    stopped = chunks_written(run_dir)
    assert f"stopped after chunk {stopped}; continue with: rmix-train resume={run_dir}" in out
    assert checkpoint.latest_step(run_dir) == stopped  # the stop saved the chunks it had
    assert stopped < chunks_written(uninterrupted) and time.time() - sent < 120
    assert not (run_dir / results.PARAMS_DIR).exists()
    assert_resumes_to(run_dir, uninterrupted)


@pytest.mark.slow
def test_signal_during_a_save_finishes_the_save_and_a_second_exits_at_once(tmp_path, uninterrupted):
    once, twice = Run(tmp_path, "once", "once"), Run(tmp_path, "twice", "twice")
    status, _, err = once.wait()
    assert status == 128 + signal.SIGTERM, err[-2000:]
    assert checkpoint.latest_step(tmp_path / "once") == 2  # the save in progress completed
    status, _, err = twice.wait()
    assert status == 128 + signal.SIGTERM, err[-2000:]
    assert "SIGTERM again: exiting now" in err
    assert checkpoint.latest_step(tmp_path / "twice") == 1  # the unfinished save of 2 left 1 intact
    ckpts = tmp_path / "twice" / checkpoint.CHECKPOINT_DIR
    assert [p for p in ckpts.iterdir() if "tmp" in p.name], "the cut save should leave its temporary directory"
    assert_resumes_to(tmp_path / "once", uninterrupted)
    assert_resumes_to(tmp_path / "twice", uninterrupted)
    assert not [p for p in ckpts.iterdir() if "tmp" in p.name]  # the resume cleaned it up


ABSURD = TINY_RUN + ["train.t_max=100", "sweep.train.lr=[0.001,1e30]"]


def test_a_diverging_run_stops_the_sweep_or_is_frozen_while_the_others_go_on(tmp_path, capsys):
    # train.on_nonfinite=stop (the default): one line naming the run, the chunk and the quantity
    status = main(ABSURD + [f"results_dir={tmp_path}", "run_name=div"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("divergence")]
    assert status == stopping.DIVERGED_STATUS and len(err) == 1
    assert "run 2 (seed 0, point 1: train.lr=1e+30)" in err[0] and "non-finite" in err[0] and "chunk 0" in err[0]
    assert "train.on_nonfinite=freeze" in err[0]
    assert not (tmp_path / "div" / results.PARAMS_DIR).exists()  # nothing written as if finished
    # train.on_nonfinite=freeze (the same compiled program): the other runs train on
    run_dir, rows = run(load_config(ABSURD + [f"results_dir={tmp_path}", "run_name=frozen",
                                              "train.on_nonfinite=freeze"]), progress=False)
    bad = [r for r in rows if r["point"] == 1]
    assert {r["run"] for r in bad if r["nonfinite"]} == {2, 3}
    first = min(r["chunk"] for r in bad if r["nonfinite"])
    later = [r for r in bad if r["chunk"] > first]
    assert later and all(r["diverged"] and not r["active"] and r["nonfinite"] == 0 for r in later)
    # frozen at its last finite state: the same parameters chunk after chunk, all finite
    norms = {r["run"]: {r2["param_norm"] for r2 in later if r2["run"] == r["run"]} for r in later}
    assert all(len(v) == 1 and np.isfinite(next(iter(v))) for v in norms.values())
    good = [r for r in rows if r["point"] == 0]
    assert all(r["nonfinite"] == 0 and "diverged" not in r for r in good)
    assert max(r["t_env"] for r in good) >= 100  # the good runs trained to t_max
    summary = json.loads((run_dir / "summary.json").read_text())
    seeds = summary["points"][1]["seeds"]
    assert all(s["diverged_at_chunk"] == first and "loss" in s["diverged_in"] for s in seeds)
    assert all(s["diverged_at_chunk"] is None for s in summary["points"][0]["seeds"])
