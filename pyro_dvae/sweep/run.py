"""Running a planned sweep: runs as child processes, N at a time, stopped cleanly."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..config import FitConfig
from ..errors import ConfigError, PyroDvaeError, RunDirError
from ..evaluation import read_evaluation
from ..fileio import FolderLock, atomic_write_text
from ..naming import named_grid
from ..rundir import CONFIG, RunDir
from ..signals import deferred_stop, stop_on_signals
from ..wording import plural
from .launchers import STOP_GRACE, Launcher, LocalLauncher
from .plan import PlannedRun, commands_for, group_command, grouped, make_run_dir, plan

SWEEP = "sweep.json"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


#: how long a run locked by another process (a killed sweep's child still saving) is waited for
LOCKED_RUN_WAIT = 60.0
#: seconds between two progress lines of a running sweep (and one when a run ends)
PROGRESS_EVERY = 600.0


@dataclass
class _Job:
    run: PlannedRun
    commands: list[list[str]]
    log_path: Path
    handle: Any = None  # the launcher's, for the command now running
    started: float = 0.0
    waiting_since: float | None = None
    done: list[list[str]] = field(default_factory=list)
    log_offset: int = 0  # where this command's output starts in the (appended) log
    members: list[PlannedRun] = field(default_factory=list)  # a group's runs (run: the first)

    def again(self) -> _Job:
        """The job once more from its last command, waiting for the run's lock to free."""
        self.commands.insert(0, self.done.pop())
        self.waiting_since = time.perf_counter()
        return self

    def start_next(self, launcher: Launcher) -> None:
        cmd = self.commands.pop(0)
        self.done.append(cmd)
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


def run_sweep(
    sweep_dir: str | Path,
    configs: list[FitConfig],
    jobs: int | None = 1,
    threads: int | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    evaluate_k: int = 0,
    images: int = 0,
    description: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    poll: float = 0.5,
    group_size: int = 1,
    launcher: Launcher | None = None,
) -> dict[str, Any]:
    """Bring every configuration of the grid up to date; return what happened to each.

    ``jobs=None`` runs as many at once as the launcher has room for (:meth:`Launcher.slots`).
    With ``group_size`` > 1, runs that can train together (:mod:`pyro_dvae.group`) do, up
    to that many per process; each is still its own run directory.

    The sweep folder is locked while it runs (a second sweep on it gets
    :class:`~pyro_dvae.errors.LockError`). SIGINT, SIGTERM or SIGHUP stop every
    run at a resumable checkpoint before this returns (by raising :class:`Stopped`).
    """
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if group_size < 1:
        raise ConfigError(f"--group-size must be >= 1, got {group_size}")
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
        return _run_locked(
            sweep_dir,
            named,
            jobs,
            threads,
            data_dir,
            device,
            evaluate_k,
            images,
            description,
            log,
            poll,
            group_size,
            launcher,
        )


def _run_locked(
    sweep_dir,
    named,
    jobs,
    threads,
    data_dir,
    device,
    evaluate_k,
    images,
    description,
    log,
    poll,
    group_size,
    launcher,
) -> dict[str, Any]:
    launcher.open()
    jobs = jobs or launcher.slots() or 1
    threads = threads or max(1, available_cores() // jobs)
    data_dir = Path(data_dir).resolve() if data_dir is not None else None
    planned = plan(sweep_dir, named, evaluate_k, images)
    _write_sweep_json(sweep_dir, named, description)

    outcome: dict[str, str] = {}
    queue: list[_Job] = []
    (sweep_dir / "logs").mkdir(parents=True, exist_ok=True)
    runnable = []
    for run in planned:
        if run.state == "conflict":
            outcome[run.name] = f"failed: {run.reason}"
            log(f"[skip] {run.name}: {run.reason}")
        else:
            runnable.append(run)

    def job_of(run: PlannedRun) -> _Job | None:
        cmds = commands_for(run, threads, data_dir, device, evaluate_k, images)
        return _Job(run, cmds, sweep_dir / "logs" / f"{run.name}.log") if cmds else None

    for members in grouped(runnable, group_size):
        if len(members) > 1:
            cmd = group_command(members, threads, data_dir, device)
            queue.append(_Job(members[0], [cmd], _group_log(sweep_dir, members), members=members))
        elif (job := job_of(members[0])) is not None:
            queue.append(job)
        else:
            outcome[members[0].name] = "finished"
    done_before = sum(1 for v in outcome.values() if v == "finished")
    total = sum(len(job.members) or 1 for job in queue)
    groups = sum(1 for job in queue if job.members)
    log(
        f"sweep {sweep_dir}: {plural(len(named), 'run')}, {done_before} already finished, "
        f"{total} to run ({jobs} at a time, {plural(threads, 'thread')} each"
        + (f"; {groups} groups of up to {group_size}" if groups else "")
        + ")"
    )

    running: list[_Job] = []
    started: set[str] = set()  # a run requeued after waiting for its lock is counted once
    progress = _Progress(planned)
    try:
        if queue:
            launcher.check_storage(sweep_dir)
        while queue or running:
            for job in _startable(queue, jobs - len(running), outcome, log):
                what = {"new": "start", "resume": f"resume from epoch {job.run.epochs_done}"}.get(
                    job.run.state, "evaluate"
                )
                if job.members:
                    what += f" as a group of {len(job.members)} (log {job.log_path.name})"
                try:
                    for run in job.members or [job.run]:
                        started.add(run.name)
                        log(f"[{len(started)}/{total}] {run.name}: {what}")
                        make_run_dir(run)
                except PyroDvaeError as err:
                    for run in job.members or [job.run]:
                        outcome[run.name] = f"failed: {err}"
                    log(f"[FAILED] {job.run.name}: {err}")
                    continue
                job.started = time.perf_counter()
                with deferred_stop():  # a started run is always in `running` to be stopped
                    job.start_next(launcher)
                    running.append(job)
            time.sleep(poll)
            for job in list(running):
                rc = launcher.poll(job.handle)
                if rc is None:
                    continue
                if rc == 0 and job.commands:
                    with deferred_stop():
                        job.start_next(launcher)
                    continue
                running.remove(job)
                seconds = time.perf_counter() - job.started
                error = _last_error(job.log_path, job.log_offset) if rc != 0 else ""
                if "is in use by" in error:
                    if job.waiting_since is None:  # another process took the run: wait for it
                        queue.insert(0, job.again())
                        continue
                if job.members:  # each member's outcome is in its run directory
                    for run in job.members:
                        evaluation = _member_outcome(run, job, error, outcome, log, seconds)
                        if evaluation and (follow := job_of(replace(run, state="evaluate"))):
                            queue.insert(0, follow)
                    progress.log(outcome, running, log)
                    continue
                if rc == 0:
                    outcome[job.run.name] = "finished"
                    where = ", ".join(filter(None, [f"{seconds:.0f}s", launcher.where(job.handle)]))
                    log(f"[done] {job.run.name} ({where}){_result_text(job.run.path)}")
                else:
                    outcome[job.run.name] = f"failed: {error}"
                    log(f"[FAILED] {job.run.name}: {error} (see {job.log_path})")
                progress.log(outcome, running, log)
            progress.log(outcome, running, log, every=PROGRESS_EVERY)
    except KeyboardInterrupt:
        launcher.stop([job.handle for job in running])
        _wait_until_let_go([run for job in running for run in job.members or [job.run]], log)
        for job in running:
            for run in job.members or [job.run]:
                outcome[run.name] = "interrupted"
        for job in queue:
            for run in job.members or [job.run]:
                outcome[run.name] = "not started"
        raise
    return outcome


def _wait_until_let_go(runs: list[PlannedRun], log, grace: float = STOP_GRACE) -> None:
    """Wait until no process holds a stopped run's lock (it has written its last summary and
    exited), for up to ``grace``: a launcher's command can end before the run it started
    (a Ray task whose worker or node is lost, while its run stops on the SIGTERM it got)."""
    deadline = time.monotonic() + grace
    with deferred_stop(ignore=True):  # a second signal changes nothing
        while runs := [r for r in runs if RunDir(r.path).holder() is not None]:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
    for run in runs:
        log(f"[stop] {run.name}: still in use by {RunDir(run.path).holder() or 'a process'}")


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


def _write_sweep_json(
    sweep_dir: Path, named: dict[str, FitConfig], description: dict[str, Any] | None
) -> None:
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
