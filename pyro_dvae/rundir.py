"""A run directory: config.json, metrics.jsonl, checkpoint.pt and summary.json."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import FitConfig
from .errors import ConfigError, RunDirError

CONFIG, METRICS, CHECKPOINT, SUMMARY = (
    "config.json",
    "metrics.jsonl",
    "checkpoint.pt",
    "summary.json",
)


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the mode open() would
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda fh: fh.write(text.encode()))


def find_runs(root: str | Path) -> list[Path]:
    """``root`` itself if it is a run directory, else the runs one or two levels below it."""
    root = Path(root)
    if (root / CONFIG).is_file():
        return [root]
    return sorted({p.parent for p in [*root.glob(f"*/{CONFIG}"), *root.glob(f"*/*/{CONFIG}")]})


class RunDir:
    """The files of one training run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY

    @classmethod
    def create(cls, path: str | Path, config: FitConfig) -> RunDir:
        """Make a new run directory holding ``config.json``; refuse to reuse a run's folder."""
        run = cls(path)
        if run.path.exists() and (not run.path.is_dir() or any(run.path.iterdir())):
            raise RunDirError(
                f"{run.path} already exists and is not empty; continue it with "
                f"--resume {run.path} or choose another --out"
            )
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            config.save(run.config_path)
        except OSError as err:
            raise RunDirError(f"cannot create run directory {run.path}: {err}") from None
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory, checked to hold a config and a checkpoint."""
        run = cls(path)
        if not run.path.is_dir():
            raise RunDirError(f"{run.path} is not a run directory (no such folder)")
        for needed in (run.config_path, run.checkpoint_path):
            if not needed.is_file():
                raise RunDirError(f"{run.path} is not a resumable run directory: no {needed.name}")
        return run

    def read_config(self) -> FitConfig:
        try:
            return FitConfig.load(self.config_path).validate()
        except ConfigError as err:
            raise RunDirError(f"{self.config_path} is not a valid config: {err}") from None

    # ------------------------------------------------------------------ metrics
    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        records = []
        for line in self.metrics_path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut short by a kill: everything before it is good
        return records

    def truncate_metrics(self, last_epoch: int) -> None:
        """Keep the records of epochs up to ``last_epoch`` (those the checkpoint covers)."""
        kept = [r for r in self.read_metrics() if r.get("epoch", 0) <= last_epoch]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    # ------------------------------------------------------------------ checkpoint
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        _atomic_write(self.checkpoint_path, lambda fh: torch.save(state, fh))

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        try:
            state = torch.load(self.checkpoint_path, map_location=map_location, weights_only=True)
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            if "weights_only" in str(err):
                first = "it holds objects other than tensors and plain data"
            raise RunDirError(f"checkpoint {self.checkpoint_path} is damaged: {first}") from None
        if not isinstance(state, dict) or not {"epoch", "model", "optim"} <= set(state):
            raise RunDirError(f"checkpoint {self.checkpoint_path} is damaged: missing entries")
        return state

    # ------------------------------------------------------------------ summary
    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.summary_path, json.dumps(summary, indent=2) + "\n")

    def epochs_completed(self) -> int:
        """Epochs the checkpoint holds, as the summary records them (else the metrics)."""
        summary = self.read_summary()
        if "epochs_completed" in summary:
            return int(summary["epochs_completed"])
        return len(self.read_metrics())

    def read_summary(self) -> dict[str, Any]:
        try:
            return json.loads(self.summary_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
