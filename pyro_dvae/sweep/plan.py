"""What each run of a grid needs (new, resume, finished, evaluate, conflict), and the tasks
(train, evaluate) that bring it up to date."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..config import RESUMABLE_FIELDS, FitConfig
from ..errors import RunDirError
from ..evaluation import evaluation_is_current
from ..fileio import is_scratch
from ..rundir import CHECKPOINT, CONFIG, RunDir
from .settings import SweepSettings


@dataclass
class PlannedRun:
    name: str
    config: FitConfig
    path: Path
    state: str  # new | resume | finished | evaluate | conflict
    epochs_done: int = 0
    reason: str = ""


def plan(
    sweep_dir: Path,
    configs: dict[str, FitConfig],
    evaluate_k: int = 0,
    images: int = 0,
    discrete_k: int | None = None,
) -> list[PlannedRun]:
    """What each configuration needs: a new run, a resume, nothing, or (a conflict) a report."""
    planned = []
    for name, config in configs.items():
        path = sweep_dir / "runs" / name
        run = PlannedRun(name, config, path, "new")
        if path.exists():
            run_dir = RunDir(path)
            try:
                stored = run_dir.read_config() if run_dir.config_path.is_file() else None
            except RunDirError as err:
                run.state, run.reason = "conflict", str(err)
                planned.append(run)
                continue
            if stored is None:
                leftovers = {p.name for p in path.iterdir() if not is_scratch(p.name)}
                if leftovers:
                    run.state = "conflict"
                    run.reason = f"{path} has no {CONFIG} but holds {', '.join(sorted(leftovers))}"
                # else: a start killed before it wrote its config; it is started again
            else:
                diff = [k for k in config.differences(stored) if k not in RESUMABLE_FIELDS]
                if diff:
                    run.state = "conflict"
                    run.reason = (
                        f"{path} was made with another configuration ({', '.join(diff)} differ)"
                    )
                else:  # a start killed before its first checkpoint resumes from epoch 0
                    run.epochs_done = run_dir.epochs_completed()
                    finished = run.epochs_done >= config.epochs
                    run.state = "finished" if finished else "resume"
        if run.state == "finished" and evaluate_k:
            if not evaluation_is_current(path, evaluate_k, images, discrete_k):
                run.state = "evaluate"
        planned.append(run)
    return planned


def plan_summary(runs: list[PlannedRun], where: Path, jobs: int | None = None) -> str:
    """One line: the runs in each state, the epochs to train and, given ``jobs`` (runs at a
    time, each in its own process), the hours that takes at the seconds per epoch the
    trained runs measured on this machine."""
    states = Counter(run.state for run in runs)
    left = [r.config.epochs - r.epochs_done for r in runs if r.state in ("new", "resume")]
    counts = ", ".join(f"{n} {state}" for state, n in states.items())
    noun = "run" if len(runs) == 1 else "runs"
    line = f"{len(runs)} {noun} in {where}: {counts}; {sum(left)} epochs to train"
    measured = [
        s
        for r in runs
        if r.epochs_done and (s := RunDir(r.path).read_summary().get("seconds_per_epoch"))
    ]
    if jobs is not None and sum(left) and measured:
        rate = sum(measured) / len(measured)
        at_once = min(jobs, len(left))
        hours = max(sum(left) / at_once, max(left)) * rate / 3600
        line += f", about {hours:.1f} h at {at_once} at a time ({rate:.1f} s per epoch so far)"
    return line


@dataclass(frozen=True)
class Task:
    """One command a sweep gives a child process: ``train`` its runs (one, or a group, new
    or resumed: a new run's folder holds its config, so it trains as a resume from epoch 0,
    see :func:`make_run_dir`) or ``evaluate`` its one run."""

    action: str  # train | evaluate
    runs: tuple[PlannedRun, ...]

    def argv(self, settings: SweepSettings) -> list[str]:
        """The ``pyro-dvae`` command line that does it (built when it starts)."""
        cmd = [sys.executable, "-m", "pyro_dvae"]
        if self.action == "train":
            config = self.runs[0].config
            cmd.append("fit")
            for run in self.runs:
                cmd += ["--resume", str(run.path)]
            cmd += ["--epochs", str(config.epochs), "--eval-every", str(config.eval_every)]
            if config.guide:  # a guide this sweep's grid names (so the person at the keyboard did)
                cmd += ["--guide", config.guide]
        else:
            (run,) = self.runs
            cmd += ["evaluate", str(run.path), "--k", str(settings.evaluate_k)]
            cmd += ["--images", str(settings.evaluate_images), "--skip-done"]
            if settings.evaluate_discrete_k is not None:
                cmd += ["--discrete-k", str(settings.evaluate_discrete_k)]
        cmd += ["--threads", str(settings.threads), "--device", settings.device, "--no-progress"]
        if settings.data_dir is not None:
            cmd += ["--data-dir", str(settings.data_dir)]
        return cmd


def tasks_for(runs: list[PlannedRun], evaluate_k: int) -> list[Task]:
    """What brings ``runs`` (one, or a group) up to date: training, unless finished, then
    (one run, ``evaluate_k`` > 0) its evaluation; a group's members are evaluated once they
    are trained, each on its own (see the scheduler)."""
    tasks = []
    if runs[0].state in ("new", "resume"):
        tasks.append(Task("train", tuple(runs)))
    if evaluate_k and len(runs) == 1 and runs[0].state in ("new", "resume", "evaluate"):
        tasks.append(Task("evaluate", tuple(runs)))
    return tasks


def grouped(runs: list[PlannedRun], size: int) -> list[list[PlannedRun]]:
    """The runs in plan order, those that can train together (same group key, same epoch)
    in groups of up to ``size``, split evenly; a run no group takes is a group of one (so
    is one whose checkpoint does not read: it fails alone). The groups depend on the grid
    and ``size`` only (not on ``--jobs``), so a sweep's numbers do not either."""
    from ..group import group_key

    slots: list[list[PlannedRun]] = []  # a run alone, or all runs of one key (split below)
    by_key: dict[tuple, list[PlannedRun]] = {}
    for run in runs:
        key = group_key(run.config) if size > 1 and run.state in ("new", "resume") else None
        if key is not None and (run.path / CHECKPOINT).exists():
            key = key if RunDir(run.path).checkpoint_epoch() is not None else None
        if key is None:
            slots.append([run])
        elif (key, run.epochs_done) in by_key:
            by_key[(key, run.epochs_done)].append(run)
        else:
            slots.append(by_key.setdefault((key, run.epochs_done), [run]))
    groups = []
    for slot in slots:
        count = -(-len(slot) // size)
        bounds = [round(i * len(slot) / count) for i in range(count + 1)]
        groups += [slot[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    return groups


def work(runs: list[PlannedRun]) -> int:
    """Epochs left to train × particles per image, summed over ``runs``: a job's size
    against the other jobs of its sweep (a K = 50 IWAE run is the costliest of its grid)."""
    return sum(
        (r.config.epochs - r.epochs_done) * r.config.num_particles
        for r in runs
        if r.state in ("new", "resume")
    )


def costliest_first(jobs: list[list[PlannedRun]]) -> list[list[PlannedRun]]:
    """``jobs`` (runs or groups) in the order a sweep starts them: trained runs that only
    wait for their evaluation (short, and their scores are then safe); then seed by seed
    (every configuration's first seed before any one's second, so that a sweep stopped
    early has whole rows), and within a seed the most :func:`work` first, so that runs side
    by side end near together and a sweep's last hours are not one long run on one core
    while the others sit idle; plan order among equals."""

    def key(runs: list[PlannedRun]) -> tuple:
        return (work(runs) > 0, min(r.config.seed for r in runs), -work(runs))

    return sorted(jobs, key=key)


def make_run_dir(run: PlannedRun) -> None:
    """The folder of a new run, holding its ``config.json`` (training resumes it from 0)."""
    if run.state == "new":
        with RunDir.create(run.path, run.config):
            run.state = "resume"
