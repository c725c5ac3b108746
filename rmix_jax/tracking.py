"""wandb logging of a training run: one wandb run per invocation, a series per seed.

What is logged at every chunk (wandb step = chunks done; ``env_steps`` rides along):

- ``<prefix>mean/<metric>``, ``min/``, ``max/``: over the seeds of each sweep point
  (``<prefix>`` is empty without a sweep, else ``agent.alpha=0.1/`` and so on);
- with ``wandb.per_seed``, ``<prefix>seed<i>/<metric>`` for every seed;
- ``<prefix>alpha/agent<i>/share_<alpha>`` and ``.../mean``: the distribution of the
  chosen risk levels of each agent in the training episodes of the chunk (all seeds);
- the learning rate (``lr``) and epsilon among the metrics, and the risk predictor's
  diagnostics: ``alpha_entropy`` (mean entropy of P(alpha) in nats over the sampled
  batches' filled agent-steps) and ``risk_grad_norm`` (norm of the TD loss's gradient
  on the predictor's parameters); both are absent for a static alpha.

The config is the wandb config, the run name its group (so a sweep over invocations
shows as one group). Mode ``auto`` is online when ``WANDB_API_KEY`` is set and
offline otherwise; ``disabled`` logs nothing. wandb failing (no network, no
login) never stops training: the tracker prints one line and turns itself off.

``read_offline_run`` reads a run's history back from its ``.wandb`` file, without
syncing (for tests and for machines with no network).
"""

from __future__ import annotations

import glob
import json
import os
import struct
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from rmix_jax.config import Config

# Metrics logged as series (scalars per run); the rest (histograms, counters) are summarised separately.
SERIES = ("test_return", "test_won", "test_length", "return_mean", "won_rate", "length_mean",
          "td_loss", "qr_loss", "grad_norm", "update_window", "alpha_entropy", "risk_grad_norm", "epsilon", "lr",
          "t_env")
WANDB_DIR = "wandb"


def resolve_mode(mode: str) -> str:
    if mode == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return mode


class Tracker:
    """Logs chunk metrics (arrays with a leading run axis) of an experiment to wandb."""

    def __init__(self, config: Config, run_dir: Path, point_labels: list[str], resume_id: str | None = None):
        self.config = config
        self.point_labels = point_labels
        self.num_seeds = config.num_seeds
        self.run = None
        self.mode = resolve_mode(config.wandb.mode)
        if self.mode == "disabled":
            return
        try:
            import wandb

            wc = config.wandb
            self.run = wandb.init(
                project=wc.project,
                entity=wc.entity or None,
                group=wc.group or run_dir.name,
                name=run_dir.name,
                id=resume_id,
                resume="allow" if resume_id else None,
                dir=str(run_dir),
                config=config.to_dict(),
                mode=self.mode,
                settings=wandb.Settings(silent=True, init_timeout=60, console="off"),
            )
            self.run.define_metric("*", step_metric="chunk")
        except Exception as err:  # noqa: BLE001 - logging must never stop training
            print(f"wandb: not logging ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                  "set wandb.mode=offline or disabled to silence this", file=sys.stderr)
            self.run = None

    @property
    def run_id(self) -> str | None:
        return None if self.run is None else self.run.id

    def log_chunk(self, metrics: dict[str, np.ndarray], chunk: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log(chunk_record(metrics, chunk, self.point_labels, self.num_seeds,
                                      self.config.wandb.per_seed, self.config.agent.num_risk_levels))
        except Exception as err:  # noqa: BLE001
            print(f"wandb: logging stopped ({type(err).__name__})", file=sys.stderr)
            self.run = None

    def finish(self, summary: dict[str, Any] | None = None) -> None:
        if self.run is None:
            return
        try:
            if summary:
                self.run.summary.update({k: v for k, v in summary.items() if not isinstance(v, (list, dict))})
            offline = self.mode == "offline"
            path = Path(self.run.dir).parent if offline else None  # <run>/wandb/offline-run-*/
            self.run.finish()
            if offline:
                _wait_until_closed(path)
        except Exception as err:  # noqa: BLE001
            print(f"wandb: finish failed ({type(err).__name__})", file=sys.stderr)
        self.run = None


def _wait_until_closed(run_path: Path, timeout: float = 30.0) -> bool:
    """Wait until wandb's service has written an offline run's exit record.

    ``run.finish()`` can return while wandb's service is still writing the ``.wandb`` file
    (seen as a file holding 4 of 8 chunks' history when read at once); a run that stops
    for a scheduler should leave the whole file on disk."""
    import time

    from wandb.proto import wandb_internal_pb2

    deadline = time.time() + timeout
    while time.time() < deadline:
        for path in run_path.glob("run-*.wandb"):
            try:
                for raw in _raw_records(path.read_bytes()):
                    record = wandb_internal_pb2.Record()
                    record.ParseFromString(raw)
                    if record.WhichOneof("record_type") == "exit":
                        return True
            except ValueError:  # the header not written yet
                pass
        time.sleep(0.05)
    return False


def chunk_record(
    metrics: dict[str, np.ndarray], chunk: int, point_labels: list[str], num_seeds: int,
    per_seed: bool, num_levels: int,
) -> dict[str, float]:
    """The flat dict logged for one chunk (see the module docstring for the keys)."""
    record: dict[str, float] = {"chunk": chunk, "env_steps": float(np.min(metrics["t_env"]))}
    active = np.asarray(metrics["active"], bool)
    levels = (np.arange(num_levels) + 1) / num_levels
    for point, label in enumerate(point_labels):
        prefix = f"{label}/" if label else ""
        runs = slice(point * num_seeds, (point + 1) * num_seeds)
        for key in SERIES:
            if key not in metrics:
                continue
            values = np.asarray(metrics[key], float)[runs]
            keep = active[runs] & np.isfinite(values)
            if keep.any():
                record[f"{prefix}mean/{key}"] = float(values[keep].mean())
                record[f"{prefix}min/{key}"] = float(values[keep].min())
                record[f"{prefix}max/{key}"] = float(values[keep].max())
            if per_seed:
                for seed in np.nonzero(keep)[0]:
                    record[f"{prefix}seed{seed}/{key}"] = float(values[seed])
        hist = np.asarray(metrics["alpha_hist"], float)[runs][active[runs]].sum(axis=0)  # (N, K)
        for agent, counts in enumerate(hist.reshape(-1, num_levels)):
            total = counts.sum()
            if total <= 0:
                continue
            for level, count in zip(levels, counts):
                record[f"{prefix}alpha/agent{agent}/share_{level:.2g}"] = float(count / total)
            record[f"{prefix}alpha/agent{agent}/mean"] = float((counts * levels).sum() / total)
    return record


# --- reading an offline run back ----------------------------------------------------------

_BLOCK = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of checksummed records
_HEADER = 7  # per record: crc32 (4), length (2), type (1)
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _raw_records(data: bytes) -> Iterator[bytes]:
    if data[:4] != b":W&B":
        raise ValueError("not a .wandb transaction log (no :W&B header)")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # the rest of a block too small for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if kind == 0 and length == 0:
            pos += left  # zero padding to the block end
            continue
        body = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind == _FULL:
            yield body
        elif kind == _FIRST:
            pending = body
        elif kind == _MIDDLE:
            pending += body
        elif kind == _LAST:
            yield pending + body
            pending = b""


def read_offline_run(run_dir: Path | str) -> dict[str, Any]:
    """History rows and config of the (single) wandb run under ``<run_dir>/wandb/``.

    Returns ``{"history": [{key: value, ...} per logged step], "config": {...}, "path": str}``.
    """
    from wandb.proto import wandb_internal_pb2

    files = sorted(glob.glob(str(Path(run_dir) / WANDB_DIR / "*run-*" / "run-*.wandb")))
    if not files:
        raise FileNotFoundError(f"no wandb run under {Path(run_dir) / WANDB_DIR}; was wandb.mode disabled?")
    history: list[dict[str, Any]] = []
    config: dict[str, Any] = {}
    for path in files:
        for raw in _raw_records(Path(path).read_bytes()):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(raw)
            kind = record.WhichOneof("record_type")
            if kind == "history":
                history.append({
                    item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item
                })
            elif kind in ("run", "config"):
                updates = record.run.config.update if kind == "run" else record.config.update
                for item in updates:
                    config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return {"history": history, "config": config, "path": files[-1]}
