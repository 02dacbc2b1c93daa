"""Running a planned sweep: runs as child processes, N at a time, stopped cleanly."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..config import FitConfig
from ..errors import PyroDvaeError, RunDirError
from ..evaluation import read_evaluation
from ..fileio import FolderLock
from ..naming import named_grid
from ..rundir import RunDir
from ..signals import deferred_stop, raise_if_stopped, stop_on_signals
from ..wording import plural
from .folder import check_sweep_dir, write_sweep_json
from .launchers import STOP_GRACE, Launcher, LocalLauncher
from .plan import PlannedRun, Task, costliest_first, grouped, make_run_dir, plan, tasks_for
from .settings import SweepSettings

#: how long a run locked by another process (a killed sweep's child still saving) is waited for
LOCKED_RUN_WAIT = 60.0
#: seconds between two progress lines of a running sweep (and one when a run ends)
PROGRESS_EVERY = 600.0


@dataclass
class _Job:
    """A run (or a group: ``members``) and the tasks left to bring it up to date."""

    run: PlannedRun
    tasks: list[Task]
    log_path: Path
    handle: Any = None  # the launcher's, for the task now running
    started: float = 0.0
    waiting_since: float | None = None
    done: list[Task] = field(default_factory=list)
    log_offset: int = 0  # where this task's output starts in the (appended) log
    members: list[PlannedRun] = field(default_factory=list)  # a group's runs (run: the first)

    @property
    def runs(self) -> list[PlannedRun]:
        return self.members or [self.run]

    def again(self) -> _Job:
        """The job once more from its last task, waiting for the run's lock to free."""
        self.tasks.insert(0, self.done.pop())
        self.waiting_since = time.perf_counter()
        return self

    def start_next(self, launcher: Launcher, settings: SweepSettings) -> None:
        task = self.tasks.pop(0)
        self.done.append(task)
        cmd = task.argv(settings)
        with open(self.log_path, "a") as log:
            self.log_offset = log.tell()
            log.write(f"\n$ {' '.join(cmd[1:])}\n")
        self.handle = launcher.start(cmd, self.log_path)


def _last_error(log_path: Path, offset: int = 0) -> str:
    """The last ``Error:`` line (else the last line) a command wrote from ``offset`` on."""
    with open(log_path, errors="replace") as fh:
        fh.seek(offset)
        text = fh.read()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error:")]
    return (errors or lines or ["no output"])[-1]


def run_sweep(
    sweep_dir: str | Path,
    configs: list[FitConfig],
    settings: SweepSettings | None = None,
    description: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    launcher: Launcher | None = None,
) -> dict[str, Any]:
    """Bring every configuration of the grid up to date; return what happened to each.

    ``settings`` (:class:`SweepSettings`) say how: runs at a time (``jobs=None``: as many as
    the launcher has room for, :meth:`Launcher.slots`), threads, device, evaluation, and
    ``group_size``: runs that can train together (:mod:`pyro_dvae.group`) do, up to that
    many per process, each still its own run directory. ``description`` (the preset and
    options) is kept in ``sweep.json``.

    The sweep folder is locked while it runs (a second sweep on it gets
    :class:`~pyro_dvae.errors.LockError`). SIGINT, SIGTERM or SIGHUP stop every
    run at a resumable checkpoint before this returns (by raising :class:`Stopped`).
    """
    settings = settings or SweepSettings()
    for c in configs:
        c.validate(new=True)
    sweep_dir = check_sweep_dir(sweep_dir)
    named = named_grid(configs, sweep_dir)
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        why = err.strerror or err
        raise RunDirError(f"cannot create sweep folder {sweep_dir}: {why}") from None
    launcher = launcher or LocalLauncher()
    with (
        contextlib.closing(launcher),
        FolderLock(sweep_dir, f"sweep folder {sweep_dir}"),
        stop_on_signals(),
    ):
        launcher.open()
        settings = settings.resolved(launcher.slots())
        planned = plan(
            sweep_dir,
            named,
            settings.evaluate_k,
            settings.evaluate_images,
            settings.evaluate_discrete_k,
        )
        write_sweep_json(sweep_dir, named, description)
        return _Scheduler(sweep_dir, planned, settings, log, launcher).run()


class _Scheduler:
    """The jobs of a planned sweep, started ``settings.jobs`` at a time as the launcher's
    child processes, watched until each ends, stopped together on a stop signal."""

    def __init__(self, sweep_dir, planned, settings, log, launcher):
        self.sweep_dir, self.settings, self.log, self.launcher = sweep_dir, settings, log, launcher
        self.planned = planned
        self.outcome: dict[str, str] = {}
        self.queue: list[_Job] = []
        self.running: list[_Job] = []
        self.started: set[str] = set()  # a run requeued after waiting for its lock counts once
        (sweep_dir / "logs").mkdir(parents=True, exist_ok=True)
        runnable = []
        for run in planned:
            if run.state == "conflict":
                self.outcome[run.name] = f"failed: {run.reason}"
                log(f"[skip] {run.name}: {run.reason}")
            else:
                runnable.append(run)
        for members in costliest_first(grouped(runnable, settings.group_size)):
            if len(members) > 1:
                path = _group_log(sweep_dir, members)
                tasks = tasks_for(members, 0)
                self.queue.append(_Job(members[0], tasks, path, members=members))
            elif (job := self.job_of(members[0])) is not None:
                self.queue.append(job)
            else:
                self.outcome[members[0].name] = "finished"
        self.total = sum(len(job.runs) for job in self.queue)

    def job_of(self, run: PlannedRun) -> _Job | None:
        tasks = tasks_for([run], self.settings.evaluate_k)
        path = self.sweep_dir / "logs" / f"{run.name}.log"
        return _Job(run, tasks, path) if tasks else None

    def run(self) -> dict[str, str]:
        settings, log = self.settings, self.log
        done_before = sum(1 for v in self.outcome.values() if v == "finished")
        groups = sum(1 for job in self.queue if job.members)
        log(
            f"sweep {self.sweep_dir}: {plural(len(self.planned), 'run')}, {done_before} already "
            f"finished, {self.total} to run ({settings.jobs} at a time, "
            f"{plural(settings.threads, 'thread')} each"
            + (f"; {groups} groups of up to {settings.group_size}" if groups else "")
            + ")"
        )
        progress = _Progress(self.planned)
        try:
            if self.queue:
                self.launcher.check_storage(self.sweep_dir)
            while self.queue or self.running:
                raise_if_stopped()
                self.start_ready()
                time.sleep(settings.poll)
                for job in list(self.running):
                    self.reap(job, progress)
                progress.log(self.outcome, self.running, log, every=PROGRESS_EVERY)
        except KeyboardInterrupt:
            self.stop()
            raise
        return self.outcome

    def start_ready(self) -> None:
        free = self.settings.jobs - len(self.running)
        for job in _startable(self.queue, free, self.outcome, self.log):
            what = {"new": "start", "resume": f"resume from epoch {job.run.epochs_done}"}.get(
                job.run.state, "evaluate"
            )
            if job.members:
                what += f" as a group of {len(job.members)} (log {job.log_path.name})"
            try:
                for run in job.runs:
                    self.started.add(run.name)
                    self.log(f"[{len(self.started)}/{self.total}] {run.name}: {what}")
                    make_run_dir(run)
            except PyroDvaeError as err:
                for run in job.runs:
                    self.outcome[run.name] = f"failed: {err}"
                self.log(f"[FAILED] {job.run.name}: {err}")
                continue
            job.started = time.perf_counter()
            with deferred_stop():  # a started run is always in `running` to be stopped
                job.start_next(self.launcher, self.settings)
                self.running.append(job)

    def reap(self, job: _Job, progress: _Progress) -> None:
        """Look at a running job: start its next task, or record how it ended."""
        rc = self.launcher.poll(job.handle)
        if rc is None:
            return
        if rc == 0 and job.tasks:
            with deferred_stop():
                job.start_next(self.launcher, self.settings)
            return
        self.running.remove(job)
        seconds = time.perf_counter() - job.started
        error = _last_error(job.log_path, job.log_offset) if rc != 0 else ""
        if "is in use by" in error and job.waiting_since is None:
            self.queue.insert(0, job.again())  # another process took the run: wait for it
            return
        if job.members:  # each member's outcome is in its run directory
            for run in job.members:
                evaluation = _member_outcome(run, job, error, self.outcome, self.log, seconds)
                if evaluation and (follow := self.job_of(replace(run, state="evaluate"))):
                    self.queue.insert(0, follow)
        elif rc == 0:
            self.outcome[job.run.name] = "finished"
            where = ", ".join(filter(None, [f"{seconds:.0f}s", self.launcher.where(job.handle)]))
            self.log(f"[done] {job.run.name} ({where}){_result_text(job.run.path)}")
        else:
            self.outcome[job.run.name] = f"failed: {error}"
            self.log(f"[FAILED] {job.run.name}: {error} (see {job.log_path})")
        progress.log(self.outcome, self.running, self.log)

    def stop(self) -> None:
        """Stop every running job at a resumable checkpoint; the queued ones never start."""
        self.launcher.stop([job.handle for job in self.running])
        _wait_until_let_go([run for job in self.running for run in job.runs], self.log)
        for job in self.running:
            for run in job.runs:
                self.outcome[run.name] = "interrupted"
        for job in self.queue:
            for run in job.runs:
                self.outcome[run.name] = "not started"


def _wait_until_let_go(runs: list[PlannedRun], log, grace: float = STOP_GRACE) -> None:
    """Wait until no process holds a stopped run's lock (it has written its last summary and
    exited), for up to ``grace``: a launcher's command can end before the run it started
    (a Ray task whose worker or node is lost, while its run stops on the SIGTERM it got).
    The summary of a run killed before it wrote its last one is written for it."""
    deadline = time.monotonic() + grace
    with deferred_stop(ignore=True):  # a second signal changes nothing
        while any(RunDir(r.path).holder() is not None for r in runs):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for run in runs:
            if (holder := RunDir(run.path).holder()) is not None:
                log(f"[stop] {run.name}: still in use by {holder}")
            elif RunDir(run.path).settle_summary():  # past the grace; or Ray, with its worker
                log(f"[stop] {run.name}: killed before its last summary, written for it")


def _group_log(sweep_dir: Path, members: list[PlannedRun]) -> Path:
    """The group's log (its first run's); the others' logs say where it is."""
    path = sweep_dir / "logs" / f"{members[0].name}.log"
    for run in members[1:]:
        with open(sweep_dir / "logs" / f"{run.name}.log", "a") as fh:
            fh.write(f"\ntrained in a group of {len(members)}: see {path.name}\n")
    return path


def _member_outcome(run: PlannedRun, job: _Job, error: str, outcome, log, seconds) -> bool:
    """Record a group member's outcome from its run directory; whether it needs evaluating."""
    summary = RunDir(run.path).read_summary()
    if summary.get("epochs_completed", 0) >= run.config.epochs:
        log(f"[done] {run.name} ({seconds:.0f}s, in a group){_result_text(run.path)}")
        outcome[run.name] = "finished"
        return True
    why = summary.get("error") or error or "stopped early"
    outcome[run.name] = f"failed: {why}"
    log(f"[FAILED] {run.name}: {why} (see {job.log_path})")
    return False


class _Progress:
    """The sweep's progress line: runs finished / running / failed, the epochs done across
    the sweep (read from the checkpoints) and an ETA from the rate since the sweep started."""

    def __init__(self, planned: list[PlannedRun]):
        self.runs = [(r.path, r.config.epochs) for r in planned if r.state != "conflict"]
        self.t0 = self.last = time.monotonic()
        self.start = self.epochs_done()

    def epochs_done(self) -> int:
        return sum(min(RunDir(path).checkpoint_epoch() or 0, target) for path, target in self.runs)

    def log(self, outcome: dict[str, str], running: list, log, every: float = 0.0) -> None:
        now = time.monotonic()
        if now - self.last < every:
            return
        self.last = now
        done, total = self.epochs_done(), sum(target for _, target in self.runs)
        finished = sum(1 for v in outcome.values() if v == "finished")
        failed = sum(1 for v in outcome.values() if v.startswith("failed"))
        rate = (done - self.start) / max(now - self.t0, 1e-9)
        eta = f"ETA {_duration((total - done) / rate)}" if rate > 0 and done < total else "ETA –"
        log(
            f"[progress] {finished}/{len(self.runs)} runs finished, {len(running)} running, "
            f"{failed} failed; epochs {done}/{total} ({100 * done / max(total, 1):.0f}%); {eta}"
        )


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{max(minutes, 1)}m"


def _startable(queue: list[_Job], free: int, outcome: dict[str, str], log) -> list[_Job]:
    """Up to ``free`` jobs to start now, taken from ``queue``. A run that another process
    holds (a killed sweep's run still saving its checkpoint) waits its turn, then fails."""
    ready = []
    now = time.perf_counter()
    for job in list(queue):
        if len(ready) >= free:
            break
        runs = job.members or [job.run]
        held = [(r, RunDir(r.path).holder()) for r in runs if r.path.exists()]
        run, holder = next(((r, h) for r, h in held if h is not None), (job.run, None))
        if holder is None:
            queue.remove(job)
            ready.append(job)
        elif job.waiting_since is None:
            job.waiting_since = now
            log(f"[wait] {run.name}: in use by {holder}")
        elif now - job.waiting_since > LOCKED_RUN_WAIT:
            queue.remove(job)
            for r in runs:
                outcome[r.name] = f"failed: {run.name} in use by {holder}"
            log(f"[FAILED] {run.name}: in use by {holder}")
    return ready


def _result_text(path: Path) -> str:
    summary = RunDir(path).read_summary()
    test = summary.get("final_test", {}).get("test_loss")
    text = f": {plural(summary.get('epochs_completed', 0), 'epoch')}" if summary else ""
    if test is not None:
        text += f", test -ELBO {test:.2f}"
    ev = read_evaluation(path)
    if "test_log_likelihood" in ev:
        text += f", log p(x) {ev['test_log_likelihood']:.2f} (k={ev['k']})"
    return text
