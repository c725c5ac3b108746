"""The whole training state on disk (orbax), for exact resume.

``<run>/checkpoints/<chunk>/`` holds every run's ``TrainState`` (online and target
parameters, both optimiser states, the replay buffer, rng keys, counters and the
swept hyperparameters) and a small JSON of what it belongs to. Orbax writes a step
into a temporary directory and renames it only when complete, so a process killed
mid-save leaves the previous step as the latest one; unfinished temporaries are
ignored and cleaned up.

Every failure to resume is a ``ResumeError`` whose message is one line naming the
problem and the fix; nothing on disk is changed before a resume has succeeded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax

from rmix_jax.config import Config, flatten

CHECKPOINT_DIR = "checkpoints"
FORMAT = 2  # 2: the training state carries train.td_lambda
# A resume may change only these; anything else would make it a different run.
RESUMABLE_CHANGES = ("train.t_max", "train.on_nonfinite", "checkpoint.", "wandb.", "results_dir")


class ResumeError(ValueError):
    """A run cannot be resumed; the message is one line naming the fix."""


def _manager(run_dir: Path, max_to_keep: int = 2, read_only: bool = False):
    import logging

    import orbax.checkpoint as ocp

    # orbax warns (through absl) every time a read-only manager opens a directory
    logging.getLogger("absl").setLevel(logging.ERROR)

    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=not read_only,
        read_only=read_only,
        create=not read_only,
    )
    return ocp.CheckpointManager(
        (Path(run_dir) / CHECKPOINT_DIR).resolve(), options=options, item_names=("state", "meta")
    )


class Checkpointer:
    """Saves the training state of a run directory every ``checkpoint.every_chunks`` chunks."""

    def __init__(self, run_dir: Path, config: Config) -> None:
        self.config = config
        self.manager = _manager(run_dir, config.checkpoint.max_to_keep)

    def due(self, chunk: int) -> bool:
        every = self.config.checkpoint.every_chunks
        return every > 0 and chunk % every == 0

    def save(self, chunk: int, state: Any, meta: dict[str, Any]) -> None:
        """Save after ``chunk`` chunks (the step number); blocks until the step is complete on disk."""
        import orbax.checkpoint as ocp

        if chunk in self.manager.all_steps():
            return
        meta = {"format": FORMAT, "chunks": chunk, **meta}
        self.manager.save(
            chunk, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        )
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def config_changes(saved: Config, new: Config) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    a, b = flatten(saved.to_dict()), flatten(new.to_dict())
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def check_resume_changes(saved: Config, new: Config) -> None:
    """Only the budget, checkpointing, wandb and results location may change on resume."""
    blocked = [k for k in config_changes(saved, new) if not k.startswith(RESUMABLE_CHANGES)]
    if blocked:
        key = blocked[0]
        before, after = flatten(saved.to_dict()).get(key), flatten(new.to_dict()).get(key)
        raise ResumeError(
            f"resume error: the checkpoint was trained with a different {key} "
            f"({before!r}, not {after!r}); drop that override or start a new run"
        )


def latest_step(run_dir: Path) -> int:
    """The newest complete checkpoint step of a run directory (ResumeError if none)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResumeError(f"resume error: {run_dir} does not exist; pass a run directory written by rmix-train")
    if not (run_dir / CHECKPOINT_DIR).is_dir():
        raise ResumeError(
            f"resume error: {run_dir} has no {CHECKPOINT_DIR}/; it was not checkpointed "
            "(checkpoint.every_chunks) or is not a run directory"
        )
    manager = _manager(run_dir, read_only=True)
    try:
        step = manager.latest_step()
    finally:
        manager.close()
    if step is None:
        raise ResumeError(
            f"resume error: {run_dir / CHECKPOINT_DIR} holds no complete checkpoint; start a new run"
        )
    return int(step)


def restore(run_dir: Path, like: Any, expected_meta: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The newest checkpoint's state, laid out like the abstract tree ``like``, and its meta.

    ``expected_meta`` (environment spec, number of runs, ...) must equal what was
    saved, key by key; a mismatch or an unreadable checkpoint raises ResumeError.
    """
    import orbax.checkpoint as ocp

    run_dir = Path(run_dir)
    step = latest_step(run_dir)
    path = run_dir / CHECKPOINT_DIR / str(step)
    manager = _manager(run_dir, read_only=True)
    try:
        try:
            meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as err:  # noqa: BLE001 - any reader failure means an unusable checkpoint
            raise ResumeError(
                f"resume error: checkpoint {path} cannot be read ({type(err).__name__}); "
                "delete that step directory to fall back to an earlier one, or start a new run"
            ) from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ResumeError(
                f"resume error: {path} is not a rmix_jax checkpoint of format {FORMAT} (it has format "
                f"{meta.get('format') if isinstance(meta, dict) else None}); start a new run, or resume it with "
                "the rmix_jax version that wrote it"
            )
        for key, expected in expected_meta.items():
            if meta.get(key) != expected:
                raise ResumeError(
                    f"resume error: checkpoint {path} was written for {key}={meta.get(key)!r}, "
                    f"this config gives {expected!r}; resume with the config it was trained with"
                )
        try:
            state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(like)))["state"]
        except Exception as err:  # noqa: BLE001
            raise ResumeError(
                f"resume error: checkpoint {path} cannot be read as a training state of this config "
                f"({type(err).__name__}); delete that step directory to fall back to an earlier one, or start a new run"
            ) from None
    finally:
        manager.close()
    _check_like(state, like, path)
    return state, meta


def _check_like(state: Any, like: Any, path: Path) -> None:
    got = jax.tree.map(lambda x: (x.shape, x.dtype), state)
    want = jax.tree.map(lambda x: (x.shape, x.dtype), like)
    if jax.tree.structure(got) != jax.tree.structure(want) or jax.tree.leaves(got) != jax.tree.leaves(want):
        raise ResumeError(f"resume error: checkpoint {path} has other shapes than this config's state; start a new run")
