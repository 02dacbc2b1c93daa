"""Sweeps: a grid of runs in one folder, run in parallel (processes here, or Ray tasks
on a cluster: :mod:`.launchers`), resumable.

A sweep folder holds ``sweep.json`` (its grids and runs), ``runs/<name>/`` (one run
directory per configuration) and ``logs/<name>.log``. Running the same sweep
again skips finished runs, resumes unfinished ones from their checkpoints and
starts missing ones; one failing run is reported and leaves the others alone.
"""

from ..naming import grid, named_grid, run_name, with_seeds
from .folder import SWEEP
from .plan import PlannedRun, Task, make_run_dir, plan, tasks_for
from .presets import PAPER_ALPHAS, PAPER_SIZES, PRESETS, paper_grid, register_preset
from .scheduler import run_sweep
from .settings import SweepSettings, available_cores

__all__ = [
    "PAPER_ALPHAS",
    "PAPER_SIZES",
    "PRESETS",
    "SWEEP",
    "PlannedRun",
    "SweepSettings",
    "Task",
    "available_cores",
    "grid",
    "make_run_dir",
    "named_grid",
    "paper_grid",
    "plan",
    "register_preset",
    "run_name",
    "run_sweep",
    "tasks_for",
    "with_seeds",
]
