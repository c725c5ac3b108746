"""Checkpoints: exact resume and resume errors that change nothing on disk (a process ended during a
save: tests/test_stopping.py)."""

import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from rmix_jax import checkpoint, results
from rmix_jax.config import load_config
from rmix_jax.train import checkpoint_meta, main, resume_config, run

from conftest import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]
TINY = TINY_RUN


def snapshot(root: Path) -> dict:
    """Every file under root with its size and modification time."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def assert_same_runs(dir_a: Path, dir_b: Path) -> None:
    rows_a, rows_b = results.load_metrics(dir_a), results.load_metrics(dir_b)
    assert len(rows_a) == len(rows_b) > 0
    assert rows_a == rows_b  # every metric of every chunk, bit for bit
    params_a, params_b = results.load_params(dir_a), results.load_params(dir_b)
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(scope="module")
def uninterrupted(tiny_finished_run):
    return tiny_finished_run[0]


def test_resume_equals_uninterrupted_run_bit_for_bit(tmp_path, uninterrupted):
    config = load_config(TINY + [f"results_dir={tmp_path}", "run_name=part"])
    run_dir, rows = run(config, progress=False, stop_after=2)
    assert max(r["chunk"] for r in rows) == 1 and not (run_dir / results.PARAMS_DIR).exists()
    assert checkpoint.latest_step(run_dir) == 2
    run(resume_config(str(run_dir), []), progress=False, resume_dir=run_dir)
    assert_same_runs(uninterrupted, run_dir)


def test_resume_with_a_longer_t_max_trains_on(tmp_path, uninterrupted):
    """t_max is traced in the state: a resume raising it continues every seed (same program)."""
    run_dir = tmp_path / "longer"
    shutil.copytree(uninterrupted, run_dir)
    chunks = len({r["chunk"] for r in results.load_metrics(run_dir)})
    # stop_after bounds the session should the runs not move on
    _, rows = run(resume_config(str(run_dir), ["train.t_max=300"]), progress=False, resume_dir=run_dir,
                  stop_after=chunks + 10)
    last = max(r["chunk"] for r in rows)
    assert last >= chunks  # new chunks were trained
    assert min(r["t_env"] for r in rows if r["chunk"] == last) >= 300
    assert results.load_run_config(run_dir).train.t_max == 300


def test_resume_drops_metrics_written_after_the_checkpoint(tmp_path, uninterrupted):
    config = load_config(TINY + [f"results_dir={tmp_path}", "run_name=part", "checkpoint.every_chunks=2"])
    run_dir, _ = run(config, progress=False, stop_after=3)  # saves at 2 (schedule) and 3 (stop)
    shutil.rmtree(run_dir / checkpoint.CHECKPOINT_DIR / "3")  # as if killed before the stop's save
    assert max(r["chunk"] for r in results.load_metrics(run_dir)) == 2  # a row past the checkpoint
    run(resume_config(str(run_dir), []), progress=False, resume_dir=run_dir)
    assert_same_runs(uninterrupted, run_dir)


@pytest.mark.parametrize("extra, message", [
    (["env.map=5m_vs_6m"], "different env.map"),
    (["env=macn_12x4"], "different env"),
    (["train.lr=0.002"], "different train.lr"),  # the preset: 0.001
    (["method=qmix"], "different"),
])
def test_resume_with_a_changed_run_is_refused_and_changes_nothing(uninterrupted, capsys, extra, message):
    before = snapshot(uninterrupted)
    assert main([f"resume={uninterrupted}", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert snapshot(uninterrupted) == before


def test_resume_errors_are_one_line_and_change_nothing(tmp_path, uninterrupted, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(uninterrupted, copy)
    # a corrupt checkpoint: the newest step's array data replaced by garbage
    newest = copy / checkpoint.CHECKPOINT_DIR / str(checkpoint.latest_step(copy))
    for path in (newest / "state").rglob("*"):
        if path.is_file() and path.suffix not in (".json",) and "metadata" not in path.name:
            path.write_bytes(b"not a checkpoint")
    older = tmp_path / "older"  # written by an earlier rmix_jax, whose state had other fields
    shutil.copytree(uninterrupted, older)
    meta_file = older / checkpoint.CHECKPOINT_DIR / str(checkpoint.latest_step(older)) / "meta" / "metadata"
    meta_file.write_text(meta_file.read_text().replace(f'"format": {checkpoint.FORMAT}', '"format": 1'))
    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    shutil.copy(uninterrupted / results.CONFIG_FILE, no_ckpt / results.CONFIG_FILE)
    cases = [
        (tmp_path / "missing", "does not exist"),
        (no_ckpt, "no checkpoints/"),
        (copy, "cannot be read"),
        (older, f"not a rmix_jax checkpoint of format {checkpoint.FORMAT} (it has format 1)"),
    ]
    for target, message in cases:
        before = snapshot(tmp_path)
        assert main([f"resume={target}", "train.t_max=2000"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert snapshot(tmp_path) == before


def test_checkpoint_of_another_config_is_refused(tmp_path, uninterrupted):
    """A checkpoint copied into a run of another environment is caught by what it was written for."""
    other = load_config(TINY + [f"results_dir={tmp_path}", "run_name=other", "env=macn_12x4"])
    run_dir = results.new_run_dir(other, "")
    results.write_config(run_dir, other)
    shutil.copytree(uninterrupted / checkpoint.CHECKPOINT_DIR, run_dir / checkpoint.CHECKPOINT_DIR)
    before = snapshot(run_dir)
    with pytest.raises(checkpoint.ResumeError, match="written for env_spec"):
        run(resume_config(str(run_dir), []), progress=False, resume_dir=run_dir)
    assert snapshot(run_dir) == before


def test_bad_values_give_one_line_errors_and_write_nothing(tmp_path, capsys):
    cases = [
        (["method=dqn"], "method="),
        (["env=smax", "env.map=9z_vs_1m"], "env.map="),
        (["agent.alpha=0"], "agent.alpha="),
        (["agent.alpha=1.5"], "agent.alpha="),
        (["agent.num_atoms=0"], "agent.num_atoms="),
        (["seeds=-1"], "num_seeds="),
        (["seed=-3"], "seed="),
        (["sweep.agent.alpha=[0.1,2.0]"], "sweep.agent.alpha"),
        (["sweep.agent.num_atoms=[1,5]"], "not sweepable"),
    ]
    for overrides, message in cases:
        assert main([*overrides, f"results_dir={tmp_path}"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not any(tmp_path.iterdir())


def test_restored_state_has_the_fresh_states_types_and_placement(uninterrupted):
    # Same dtypes, weak types, shardings and commitment: a resume then runs the program
    # the fresh run compiled (jit and the persistent cache key on all of these).
    from rmix_jax import experiment

    config = results.load_run_config(uninterrupted)
    exp = experiment.make_experiment(config)
    fresh = experiment.init_state(exp)
    restored, _ = checkpoint.restore(uninterrupted, experiment.abstract_state(exp), checkpoint_meta(exp))
    assert jax.tree.structure(fresh) == jax.tree.structure(restored)

    def signature(x):
        return x.shape, x.dtype, x.weak_type, x.sharding, x.committed

    for a, b in zip(jax.tree.leaves(fresh), jax.tree.leaves(restored), strict=True):
        assert signature(a) == signature(b)
