"""Bad input through the CLIs, table-driven: for each case ``rmix-train`` or ``rmix-eval`` exits
non-zero with exactly one line on stderr that names the key or file and the fix, and nothing under
the results directory is created or changed (a listing and checksums before and after).

The same table is in docs/usage.md ("Bad input").
"""

import hashlib
import shutil
import sys
import types
from pathlib import Path

import pytest

from rmix_jax import checkpoint, evaluate, results, train
from rmix_jax.envs.smac import ENV_HOOK

# (id, CLI, arguments ({r}: the results directory, {run}: a finished run, {nockpt}, {truncated},
#  {othermap}, {corrupt}: broken copies of it), a piece of the expected line)
CASES = [
    ("unknown method", "train", ["method=dqn"], "method='dqn' is unknown; choose one of"),
    ("unknown env", "train", ["env=atari"], "env='atari' is unknown; choose one of"),
    ("unknown map", "train", ["env=smax", "env.map=9z_vs_1m"], "env.map"),
    ("unknown key", "train", ["train.speed=2"], "train.speed=2 is not allowed; unknown key"),
    ("unknown group", "train", ["trainer.lr=2"], "trainer"),
    ("alpha 0", "train", ["method=rmix_static", "agent.alpha=0"], "alpha must lie in (0, 1]"),
    ("alpha 1.5", "train", ["method=rmix_static", "agent.alpha=1.5"], "alpha must lie in (0, 1]"),
    ("alpha -1", "train", ["method=rmix_static", "agent.alpha=-1"], "alpha must lie in (0, 1]"),
    ("M = 0", "train", ["agent.num_atoms=0"], "agent.num_atoms=0 is not allowed; use M >= 1"),
    ("seeds 0", "train", ["seeds=0"], "num_seeds=0 is not allowed; use num_seeds >= 1"),
    ("seeds -1", "train", ["seeds=-1"], "num_seeds=-1 is not allowed; use num_seeds >= 1"),
    ("non-numeric lr", "train", ["train.lr=fast"], "train.lr='fast' is not allowed; use a finite number"),
    ("non-numeric seeds", "train", ["seeds=many"], "num_seeds='many' is not allowed; use a whole number"),
    ("no key=value", "train", ["t_max"], "override 't_max' is not key=value"),
    ("unbalanced sweep list", "train", ["sweep.agent.alpha=[0.1,0.5"], "has a value YAML cannot read"),
    ("sweep of a structural key", "train", ["sweep.agent.num_atoms=[5,10]"], "not sweepable; sweep one of"),
    ("numeric alpha sweep without static method", "train", ["sweep.agent.alpha=[0.1,0.5]"], "method=rmix_static"),
    ("bad on_nonfinite", "train", ["train.on_nonfinite=ignore"], "choose one of stop, freeze"),
    ("resume missing dir", "train", ["resume={r}/gone"], "gone does not exist; pass a run directory"),
    ("resume without checkpoints", "train", ["resume={nockpt}"], "has no checkpoints/"),
    ("resume truncated checkpoint", "train", ["resume={truncated}"], "resume error"),
    ("resume checkpoint of another map", "train", ["resume={othermap}"], "written for env_spec"),
    ("resume with a changed structural key", "train", ["resume={run}", "agent.num_atoms=5"],
     "different agent.num_atoms"),
    ("results_dir under a file", "train", ["results_dir={r}/notes.txt/runs"], "write error: cannot write"),
    ("full disk", "train", ["results_dir={r}", "run_name=full_disk"], "No space left on device"),
    ("SMAC missing", "train", ["env=smac"], "SMAC is not installed; run pip install 'rmix_jax[smac]'"),
    ("SC2PATH missing", "train", ["env=smac"], "SC2PATH="),
    ("eval missing run", "eval", ["{r}/gone"], "gone"),
    ("eval corrupt params", "eval", ["{corrupt}"], "params"),
    ("eval incompatible env", "eval", ["{run}", "env=macn_12x4"], "state"),
    ("eval bad episodes", "eval", ["{run}", "episodes=0"], "episodes='0'; use a whole number >= 1"),
]


def digest(root: Path) -> dict:
    """Every path under root, with a checksum for files."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def workspace(tiny_finished_run, tmp_path_factory):
    """results/ holding a finished tiny run and broken copies of it; and a plain file for results_dir."""
    root = tmp_path_factory.mktemp("bad_input") / "results"
    root.mkdir()
    run = root / "run"
    shutil.copytree(tiny_finished_run[0], run)
    nockpt = root / "nockpt"
    shutil.copytree(run, nockpt, ignore=shutil.ignore_patterns(checkpoint.CHECKPOINT_DIR))
    truncated = root / "truncated"
    shutil.copytree(run, truncated)
    step = truncated / checkpoint.CHECKPOINT_DIR / str(checkpoint.latest_step(truncated))
    for f in sorted(p for p in step.rglob("*") if p.is_file() and p.stat().st_size > 64):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    othermap = root / "othermap"
    shutil.copytree(run, othermap)
    text = (othermap / results.CONFIG_FILE).read_text().replace("env_preset: macn_7x4", "env_preset: macn_12x4")
    (othermap / results.CONFIG_FILE).write_text(text.replace("width: 7", "width: 12"))
    corrupt = root / "corrupt"
    shutil.copytree(run, corrupt)
    for f in (p for p in (corrupt / results.PARAMS_DIR).rglob("*") if p.is_file()):
        f.write_bytes(b"not a checkpoint")
    (root / "notes.txt").write_text("a file where a directory is asked for\n")
    return {"r": root, "run": run, "nockpt": nockpt, "truncated": truncated, "othermap": othermap,
            "corrupt": corrupt}


def test_the_table_covers_what_docs_promise():
    assert len(CASES) >= 25 and len({c[0] for c in CASES}) == len(CASES)
    listed = (Path(__file__).resolve().parents[1] / "docs" / "usage.md").read_text()
    missing = [c[0] for c in CASES if f"| {c[0]} |" not in listed]
    assert not missing, f"docs/usage.md's bad-input table lacks {missing}"


@pytest.mark.parametrize("name, cli, args, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(workspace, monkeypatch, capsys, name, cli, args, expected):
    root = workspace["r"]
    args = [a.format(**workspace) for a in args]
    if name == "full disk":  # the disk fills as the run directory's first file is written
        class Full:
            def __init__(self, *a, **k):
                pass

            def write(self, _):
                raise OSError(28, "No space left on device", str(root / "full_disk" / "config.yaml"))

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False
        monkeypatch.setattr(results.os, "fdopen", Full)
    if name == "SMAC missing":
        monkeypatch.delenv(ENV_HOOK, raising=False)
        monkeypatch.setitem(sys.modules, "smac", None)  # import smac fails
    if name == "SC2PATH missing":
        package, module = types.ModuleType("smac"), types.ModuleType("smac.env")
        module.StarCraft2Env = type("StarCraft2Env", (), {})
        package.env = module
        monkeypatch.setitem(sys.modules, "smac", package)
        monkeypatch.setitem(sys.modules, "smac.env", module)
        monkeypatch.delenv(ENV_HOOK, raising=False)
        monkeypatch.setenv("SC2PATH", str(root.parent / "no_game_here"))
    if cli == "train" and not any(a.startswith(("results_dir=", "resume=")) for a in args):
        args = args + [f"results_dir={root}"]
    if cli == "train":
        args = args + ["wandb.mode=disabled"] if not any(a.startswith("resume=") for a in args) else args
    before = digest(root)
    capsys.readouterr()
    status = (train.main if cli == "train" else evaluate.main)(args)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "ubmoduled" not in line]
    assert status != 0
    assert len(err) == 1, err
    assert expected in err[0], err[0]
    assert digest(root) == before
