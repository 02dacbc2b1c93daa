"""A run folder opened to read or continue: its config, the checkpoint's match to that config,
and the permission a guide from a file needs. Resume, groups, evaluation and ``show`` open
runs here, so each rule is written once.

A run folder never makes this process import code by itself: a run trained with a guide
from a file is loaded only when the caller names that guide again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .config import FitConfig
from .errors import ConfigError, RunDirError
from .rundir import RunDir
from .schedules import check_resume


@dataclass(frozen=True)
class StoredRun:
    """A run folder's ``config`` and checkpoint ``state`` (None: no checkpoint yet), checked
    to belong together. ``run_dir``: the folder (lock it first to continue the run)."""

    run_dir: RunDir
    config: FitConfig
    state: dict[str, Any] | None

    @classmethod
    def read(cls, run_dir: RunDir, device="cpu") -> StoredRun:
        """Read ``run_dir``'s config and checkpoint, if any (its tensors onto ``device``); a
        checkpoint of another configuration than ``config.json`` is refused
        (:class:`RunDirError`). Returns the stored run."""
        config = run_dir.read_config()
        has_state = run_dir.checkpoint_path.is_file()
        state = run_dir.load_checkpoint(map_location=device) if has_state else None
        stored = state.get("config") if state is not None else None
        if isinstance(stored, dict):
            try:
                diff = FitConfig.from_dict(stored).differences(config)
            except (ConfigError, TypeError) as err:
                raise RunDirError(f"checkpoint in {run_dir.path} is damaged: {err}") from None
            if diff:
                raise RunDirError(
                    f"checkpoint in {run_dir.path} was trained with another configuration than "
                    f"its config.json ({', '.join(diff)} differ)"
                )
        return cls(run_dir, config, state)

    @property
    def epoch(self) -> int:
        """Epochs the checkpoint holds (0 without one)."""
        return int(self.state["epoch"]) if self.state is not None else 0

    def continued(self, changes: dict[str, Any]) -> FitConfig:
        """The config to continue the run with, ``changes`` (resumable fields) applied; an
        ``epochs`` below those already trained is refused. Returns the validated config."""
        if changes.get("epochs", self.config.epochs) < self.epoch:
            raise ConfigError(
                f"--epochs {changes['epochs']} is below the {self.epoch} epochs "
                f"{self.run_dir.path} has already completed"
            )
        check_resume(self.config, changes)
        return dataclasses.replace(self.config, **changes).validate()

    def check_guide(self, guide: Any, action: str, call: str) -> None:
        """Refuse (:class:`RunDirError`) to ``action`` a run trained with its own guide unless
        ``guide`` is given: the spec of a guide from a file, or (a guide given in Python, named
        nowhere in the config) the module passed again to ``call``."""
        if guide is not None:
            return
        if self.config.guide:
            raise RunDirError(f"{self.run_dir.path}: {guide_refusal(self.config.guide, action)}")
        if why := python_guide_refusal(self.state, call):
            raise RunDirError(f"{self.run_dir.path} {why}")


def guide_refusal(spec: str, to: str) -> str:
    """Why a run trained with a guide from a file is not loaded without being told to."""
    return (
        f"the run was trained with the guide {spec!r}; loading it imports and runs that "
        f"code, so {to} only with --guide {spec} (or a guide of the same shape)"
    )


def python_guide_refusal(state: dict[str, Any] | None, call: str) -> str | None:
    """Why a checkpoint whose guide was given in Python (no spec in its config) needs that
    guide passed again (to ``call``, or as ``--guide``); None for the family's own guide."""
    model = state.get("model") if isinstance(state, dict) else None
    if isinstance(model, dict) and any(str(k).startswith("guide_module.") for k in model):
        return (
            f"was trained with a guide given in Python; pass the same guide to {call} "
            "(or name its factory with --guide package.module:factory)"
        )
    return None
