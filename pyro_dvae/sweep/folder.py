"""The sweep folder: whether a path can be one, and its ``sweep.json`` (every grid that ran
into it and the configuration of each of its runs)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..config import FitConfig
from ..errors import RunDirError
from ..fileio import atomic_write_text
from ..rundir import CONFIG

SWEEP = "sweep.json"


def check_sweep_dir(sweep_dir: str | Path) -> Path:
    """``sweep_dir`` if it can be a sweep folder (missing, or a folder that is not a run's);
    else :class:`~pyro_dvae.errors.RunDirError`, before anything is written."""
    sweep_dir = Path(sweep_dir)
    try:
        sweep_dir.stat()
    except FileNotFoundError:
        if sweep_dir.is_symlink():  # mkdir cannot make a folder where a link points nowhere
            where = os.readlink(sweep_dir)
            raise RunDirError(
                f"{sweep_dir} is a link to {where}, which does not exist; choose another --out"
            ) from None
        return sweep_dir
    except OSError as err:  # a link loop, a file on the way to it, no permission
        raise RunDirError(
            f"cannot use {sweep_dir} as a sweep folder: {err.strerror or err}; choose another --out"
        ) from None
    if not sweep_dir.is_dir():
        raise RunDirError(f"{sweep_dir} exists and is not a folder; choose another --out")
    if (sweep_dir / CONFIG).is_file():
        raise RunDirError(
            f"{sweep_dir} is a run folder (it holds {CONFIG}), not a sweep folder; "
            "choose another --out"
        )
    return sweep_dir


def write_sweep_json(
    sweep_dir: Path, named: dict[str, FitConfig], description: dict[str, Any] | None
) -> None:
    """Record ``description`` (a grid's preset and options) and the ``named`` runs in the
    folder's ``sweep.json``, keeping the grids and runs of the commands that ran before."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    try:  # a sweep folder may be filled by several grids: keep every grid and its runs
        before = json.loads((sweep_dir / SWEEP).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none, not JSON, not UTF-8
        before = {}
    before = before if isinstance(before, dict) else {}
    earlier = before.get("runs") if isinstance(before.get("runs"), dict) else {}
    grids = before.get("grids") if isinstance(before.get("grids"), list) else []
    if "grids" not in before and "options" in before:  # written before grids were kept
        grids = [{k: before[k] for k in ("preset", "options") if k in before}]
    if description is not None and description not in grids:
        grids.append(description)
    doc = {
        "grids": grids,  # each command that ran into this folder: preset and options
        "runs": {**earlier, **{name: config.to_dict() for name, config in named.items()}},
    }
    atomic_write_text(sweep_dir / SWEEP, json.dumps(doc, indent=2) + "\n")
