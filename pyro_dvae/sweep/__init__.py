"""Sweeps: a grid of runs in one folder, run in parallel (processes here, or Ray tasks
on a cluster: :mod:`.launchers`), resumable.

A sweep folder holds ``sweep.json`` (its grids and runs), ``runs/<name>/`` (one run
directory per configuration) and ``logs/<name>.log``. Running the same sweep
again skips finished runs, resumes unfinished ones from their checkpoints and
starts missing ones; one failing run is reported and leaves the others alone.
"""

from ..naming import grid, named_grid, run_name, with_seeds
from .plan import PlannedRun, commands_for, make_run_dir, plan
from .presets import PAPER_ALPHAS, PAPER_SIZES, PRESETS, paper_grid, register_preset
from .run import SWEEP, available_cores, run_sweep

__all__ = [
    "PAPER_ALPHAS",
    "PAPER_SIZES",
    "PRESETS",
    "SWEEP",
    "PlannedRun",
    "available_cores",
    "commands_for",
    "grid",
    "make_run_dir",
    "named_grid",
    "paper_grid",
    "plan",
    "register_preset",
    "run_name",
    "run_sweep",
    "with_seeds",
]
