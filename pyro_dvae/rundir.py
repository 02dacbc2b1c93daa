"""A run directory: config.json, metrics.jsonl, checkpoint.pt and summary.json.

The checkpoint is the truth. An epoch is committed in the order checkpoint (an atomic
rename; it also holds the metrics of every epoch it covers), then a row of
``metrics.jsonl``, then ``summary.json``; a process killed in between leaves the
checkpoint ahead of the other two, and readers go through it: metric rows past its
epoch are ignored, a summary that claims another epoch is brought up to it. A writer
(training, evaluation) holds the folder's lock, which also clears the temporaries a
killed writer left.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import pyro
import torch

from .config import FitConfig
from .errors import ConfigError, LockError, RunDirError, StorageError
from .fileio import (
    FolderLock,
    append_text,
    atomic_write,
    atomic_write_text,
    is_scratch,
    overwrite_in_place,
    remove_temporaries,
)

CONFIG, METRICS, CHECKPOINT, SUMMARY = (
    "config.json",
    "metrics.jsonl",
    "checkpoint.pt",
    "summary.json",
)


def find_runs(root: str | Path) -> list[Path]:
    """``root`` itself if it is a run directory, else the runs one or two levels below it."""
    root = Path(root)
    if (root / CONFIG).is_file():
        return [root]
    return sorted({p.parent for p in [*root.glob(f"*/{CONFIG}"), *root.glob(f"*/*/{CONFIG}")]})


def refuse_run_folder(path: str | Path, command: str, instead: str) -> None:
    """:class:`RunDirError` if ``path`` is one run's folder: ``command`` takes a sweep folder,
    whose runs it compares; ``instead`` names the command for one run."""
    if (Path(path) / CONFIG).is_file():
        raise RunDirError(
            f"{path} is a run folder (it holds {CONFIG}); {command} takes a sweep folder "
            f"holding runs (for one run: {instead})"
        )


def runtime_versions() -> dict[str, str]:
    """The libraries that computed a result, stored beside it."""
    return {
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "python": platform.python_version(),
    }


def summary_numbers(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The parts of ``summary.json`` that follow from the metric records."""
    last_test = next((r for r in reversed(records) if "test_loss" in r), {})
    return {
        "final": {k: v for k, v in (records[-1] if records else {}).items() if k != "epoch"},
        "final_test": {k: v for k, v in last_test.items() if k.startswith("test_")},
        "seconds_per_epoch": (sum(r["seconds"] for r in records) / len(records))
        if records
        else None,
    }


class RunDir:
    """The files of one training run.

    ``path``: the run's folder; this names it and touches nothing (:meth:`create` makes a
    new one, :meth:`open` checks an existing one). Used as a context manager, it releases
    the lock taken by :meth:`create` or :meth:`lock`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock: FolderLock | None = None

    @property
    def config_path(self) -> Path:
        """``config.json``: the run's :class:`FitConfig`."""
        return self.path / CONFIG

    @property
    def metrics_path(self) -> Path:
        """``metrics.jsonl``: a row per epoch."""
        return self.path / METRICS

    @property
    def checkpoint_path(self) -> Path:
        """``checkpoint.pt``: the truth (see the module's docstring)."""
        return self.path / CHECKPOINT

    @property
    def summary_path(self) -> Path:
        """``summary.json``: the run's state and last numbers."""
        return self.path / SUMMARY

    @classmethod
    def create(cls, path: str | Path, config: FitConfig) -> RunDir:
        """Make a new run directory holding ``config.json``, locked for this process.

        A folder that holds anything but a lock file is refused: it is somebody's run.
        """
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise RunDirError(f"{run.path} exists and is not a folder; choose another --out")
        if run.path.is_dir() and not run._is_empty():  # somebody's run: add nothing to it
            raise RunDirError(run._not_empty())
        try:
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunDirError(f"cannot create run directory {run.path}: {err}") from None
        run.lock()
        try:
            if not run._is_empty():  # filled between the check above and the lock
                raise RunDirError(run._not_empty(check_holder=False))
            config.save(run.config_path)
        except BaseException:
            run.unlock(discard=True)
            raise
        return run

    def _is_empty(self) -> bool:
        return all(is_scratch(p.name) for p in self.path.iterdir())

    def _not_empty(self, check_holder: bool = True) -> str:
        holder = self.holder() if check_holder else None
        if holder is not None:
            raise LockError(f"run directory {self.path} is in use by {holder}")
        return (
            f"{self.path} already exists and is not empty; continue it with "
            f"--resume {self.path} or choose another --out"
        )

    @classmethod
    def open(cls, path: str | Path, need_checkpoint: bool = True) -> RunDir:
        """An existing run directory, checked to hold a config (and a checkpoint)."""
        run = cls(path)
        if not run.path.is_dir():
            raise RunDirError(f"{run.path} is not a run directory (no such folder)")
        needed = [run.config_path] + ([run.checkpoint_path] if need_checkpoint else [])
        for path_ in needed:
            if not path_.is_file():
                if path_ == run.checkpoint_path:
                    raise RunDirError(f"{run.path} has no checkpoint.pt: no trained weights")
                raise RunDirError(f"{run.path} is not a run directory: no {path_.name}")
        return run

    def read_config(self) -> FitConfig:
        """The run's config, checked (:class:`RunDirError` if it is not valid)."""
        try:
            return FitConfig.load(self.config_path).validate()
        except ConfigError as err:
            raise RunDirError(f"{self.config_path} is not a valid config: {err}") from None

    # ------------------------------------------------------------------ lock
    def lock(self, what: str = "run directory") -> RunDir:
        """Take the folder's lock (:class:`LockError` if another process has it), then
        delete the temporaries a killed writer left behind."""
        if self._lock is None:
            lock = FolderLock(self.path, f"{what} {self.path}")
            lock.acquire()
            self._lock = lock
            remove_temporaries(self.path)
        return self

    def unlock(self, discard: bool = False) -> None:
        """Release the lock; ``discard``: a command that failed also removes the lock file
        if it made it (:meth:`FolderLock.release`), so a refused command leaves nothing."""
        if self._lock is not None:
            self._lock.release(discard)
            self._lock = None

    def holder(self) -> str | None:
        """The process writing this run now, if any."""
        return FolderLock(self.path).holder()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.unlock(discard=exc_type is not None)

    # ------------------------------------------------------------------ metrics
    def append_metrics(self, record: dict[str, Any]) -> None:
        """Add ``record`` as the last row of ``metrics.jsonl``."""
        append_text(self.metrics_path, json.dumps(record) + "\n")

    def read_metrics(self, trusted: bool = True) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl``; ``trusted``: only the epochs the checkpoint holds,
        each once (the last row written for it)."""
        if not self.metrics_path.exists():
            return []
        records = []
        # a damaged byte spoils its line only: the JSON of that line does not parse
        text = self.metrics_path.read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            line = line.strip()
            if line:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut short by a kill: everything before it is good
        return _upto(records, self.checkpoint_epoch()) if trusted else records

    def write_metrics(self, records: list[dict[str, Any]]) -> None:
        """Replace ``metrics.jsonl`` by ``records``, atomically."""
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in records))

    def reconcile(self, epoch: int, history: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        """Make ``metrics.jsonl`` hold exactly the records of epochs 1..``epoch`` (the
        checkpoint's), from ``history`` when the checkpoint carries it; return them."""
        rows = self.read_metrics(trusted=False)
        if history is not None:
            kept = [r for r in history if r.get("epoch", 0) <= epoch]
        else:  # a checkpoint from before the history was stored in it
            by_epoch = {r.get("epoch"): r for r in rows if 0 < r.get("epoch", 0) <= epoch}
            kept = [by_epoch[e] for e in sorted(by_epoch)]
        if rows != kept:
            self.write_metrics(kept)
        return kept

    # ------------------------------------------------------------------ checkpoint
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Write ``state`` as ``checkpoint.pt``, atomically."""
        atomic_write(self.checkpoint_path, lambda fh: torch.save(state, fh))

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """The checkpoint's state, tensors on ``map_location`` (:class:`RunDirError` if damaged)."""
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

    def checkpoint_epoch(self) -> int | None:
        """The epoch the checkpoint holds (``None``: no readable checkpoint). Reads the
        file memory-mapped, so the weights are not loaded."""
        if not self.checkpoint_path.is_file():
            return None
        try:
            state = torch.load(
                self.checkpoint_path, map_location="cpu", weights_only=True, mmap=True
            )
            return int(state["epoch"])
        except Exception:
            return None

    # ------------------------------------------------------------------ summary
    def write_summary(self, summary: dict[str, Any], final: bool = False) -> None:
        """``summary.json``, replaced whole. ``final`` (finished, interrupted, failed): on a
        full disk, where no temporary can be written, the summary is written over the old
        one's bytes instead, as compact JSON, which fits in the indented text it replaces."""
        try:
            atomic_write_text(self.summary_path, json.dumps(summary, indent=2) + "\n")
        except StorageError as err:
            if not final:
                raise
            try:
                overwrite_in_place(self.summary_path, json.dumps(summary) + "\n")
            except StorageError:
                raise err from None

    def epochs_completed(self) -> int:
        """Epochs the checkpoint holds (0 without one)."""
        return self.checkpoint_epoch() or 0

    def read_summary(self) -> dict[str, Any]:
        """``summary.json``, brought up to the checkpoint's epoch if a kill left it behind."""
        try:
            summary = json.loads(self.summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # no file, not JSON, not UTF-8
            return {}
        if not isinstance(summary, dict):
            return {}
        epoch = self.checkpoint_epoch()
        if epoch is not None and summary.get("epochs_completed") != epoch:
            records = _upto(self.read_metrics(trusted=False), epoch)  # one checkpoint read
            summary.update(summary_numbers(records), epochs_completed=epoch)
            if summary.get("status") in ("running", "finished"):
                summary["status"] = "interrupted"
        if summary.get("status") == "running" and self.holder() is None:
            summary["status"] = "interrupted"  # killed outright (SIGKILL): nobody trains it
        return summary

    def settle_summary(self) -> bool:
        """Write down what :meth:`read_summary` makes of a summary that a process killed
        outright left ``running`` (``interrupted``, at the checkpoint's epoch), under the
        run's lock, so that the file says so too; whether it did. A run that another
        process holds, or whose summary is final, is left as it is."""
        try:
            text = self.summary_path.read_text(encoding="utf-8")
            running = json.loads(text).get("status") == "running"
        except (OSError, ValueError, AttributeError):  # none, not JSON, not an object
            return False
        summary = self.read_summary()
        if not running or summary.get("status") != "interrupted":
            return False
        try:
            self.lock()
        except LockError:
            return False
        try:
            if self.summary_path.read_text(encoding="utf-8") != text:
                return False  # a process took the run meanwhile and wrote its own
            self.write_summary(summary, final=True)
            return True
        finally:
            self.unlock()


def _upto(records: list[dict[str, Any]], last: int | None) -> list[dict[str, Any]]:
    """Each epoch's last row, for the epochs up to ``last`` (all if there is no checkpoint)."""
    by_epoch = {r.get("epoch"): r for r in records if last is None or r.get("epoch", 0) <= last}
    return [by_epoch[e] for e in sorted(by_epoch, key=lambda e: (e is None, e))]
