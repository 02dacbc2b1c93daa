"""Sweeps: a grid of runs in one folder, run in parallel processes, resumable.

A sweep folder holds ``sweep.json`` (the grid), ``runs/<name>/`` (one run
directory per configuration) and ``logs/<name>.log``. Running the same sweep
again skips finished runs, resumes unfinished ones from their checkpoints and
starts missing ones; one failing run is reported and leaves the others alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import RESUMABLE_FIELDS, FitConfig
from .errors import ConfigError, PyroDvaeError, RunDirError
from .evaluation import evaluation_is_current, read_evaluation
from .fileio import LOCK, TMP_SUFFIX, FolderLock, atomic_write_text
from .naming import grid, named_grid, run_name
from .rundir import CONFIG, RunDir
from .signals import Stopped, stop_on_signals

SWEEP = "sweep.json"
PAPER_SIZES = (2, 4, 8, 20, 40)
PAPER_ALPHAS = (0.32, 0.56, 1.0, 1.78)

#: preset name → (grid function, one-line description)
PRESETS: dict[str, tuple[Callable[[], list[FitConfig]], str]] = {}


def register_preset(name: str, description: str):
    def deco(fn: Callable[[], list[FitConfig]]) -> Callable[[], list[FitConfig]]:
        PRESETS[name] = (fn, description)
        return fn

    return deco


@register_preset(
    "paper", "the paper's grid: sizes 2-40; Logit-normal x 4 alphas, Gaussian, Concrete"
)
def paper_grid() -> list[FitConfig]:
    configs = []
    for size in PAPER_SIZES:
        configs += [FitConfig(family="logitnormal", latent_dim=size, alpha=a) for a in PAPER_ALPHAS]
        configs.append(FitConfig(family="gaussian", latent_dim=size))
        # the paper's Concrete "dimension K" is one K-way variable
        configs.append(FitConfig(family="concrete", latent_dim=1, categories=size))
    return configs


#: Jang et al.'s objective and temperature schedule (what made the Concrete VAE train)
JANG = {"kl": "discrete", "elbo": "analytic"}
ANNEAL = {"temperature": 1.0, "anneal_rate": 3e-5, "min_temperature": 0.5}


@register_preset(
    "concrete",
    "the Concrete investigation: 1x20 and 20x10, relaxed vs discrete KL, temperatures, annealing",
)
def concrete_grid() -> list[FitConfig]:
    def c(m: int, k: int, **kw: Any) -> FitConfig:
        return FitConfig(family="concrete", latent_dim=m, categories=k, **kw)

    return [
        c(1, 20),  # the paper's setting: τq = 0.5, τp = 1.0, relaxed KL
        c(1, 20, prior_temperature=0.5),  # the same without the KL floor
        c(1, 20, **JANG),
        c(20, 10),  # Jang et al.'s structure with the paper's temperatures
        c(20, 10, temperature=2 / 3, prior_temperature=0.5),  # Maddison et al.'s temperatures
        c(20, 10, prior_temperature=0.5),
        c(20, 10, prior_temperature=0.5, **ANNEAL),
        c(20, 10, **JANG),
        c(20, 10, **JANG, **ANNEAL),  # Jang et al.: discrete KL, τ annealed from 1 to 0.5
    ]


@register_preset(
    "concrete-working",
    "the Concrete VAE that trains: 20x10, discrete KL, tau annealed 1 -> 0.5; and its relaxed twin",
)
def concrete_working_grid() -> list[FitConfig]:
    return [
        # Jang et al.: relaxed samples to the decoder, analytic KL of the categoricals
        FitConfig(family="concrete", latent_dim=20, categories=10, **JANG, **ANNEAL),
        # all-relaxed (Maddison et al.'s objective) with the prior at the posterior's final τ
        FitConfig(family="concrete", latent_dim=20, categories=10, prior_temperature=0.5, **ANNEAL),
    ]


# --------------------------------------------------------------------------- plan


@dataclass
class PlannedRun:
    name: str
    config: FitConfig
    path: Path
    state: str  # new | resume | finished | evaluate | conflict
    epochs_done: int = 0
    reason: str = ""


def plan(
    sweep_dir: Path, configs: dict[str, FitConfig], evaluate_k: int = 0, images: int = 0
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
                leftovers = {p.name for p in path.iterdir() if not _scratch(p.name)}
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
            if not evaluation_is_current(path, evaluate_k, images):
                run.state = "evaluate"
        planned.append(run)
    return planned


def _scratch(name: str) -> bool:
    """A lock file, or a temporary of an interrupted write: not a run's data."""
    return name == LOCK or (name.startswith(".") and name.endswith(TMP_SUFFIX))


def commands_for(
    run: PlannedRun,
    threads: int,
    data_dir: Path | None,
    device: str,
    evaluate_k: int,
    images: int,
) -> list[list[str]]:
    """The ``pyro-dvae`` commands (as argument lists) that bring ``run`` up to date.

    A new run is trained as a resume from epoch 0 of the folder the sweep made for it
    (see :func:`make_run_dir`): the config travels as its ``config.json``, not as flags.
    """
    exe = [sys.executable, "-m", "pyro_dvae"]
    common = ["--threads", str(threads), "--device", device, "--no-progress"]
    if data_dir is not None:
        common += ["--data-dir", str(data_dir)]
    cmds = []
    if run.state in ("new", "resume"):
        cmds.append(
            [
                *exe,
                "fit",
                "--resume",
                str(run.path),
                "--epochs",
                str(run.config.epochs),
                "--eval-every",
                str(run.config.eval_every),
                *common,
            ]
        )
    if evaluate_k and run.state in ("new", "resume", "evaluate"):
        cmds.append(
            [
                *exe,
                "evaluate",
                str(run.path),
                "--k",
                str(evaluate_k),
                "--images",
                str(images),
                "--skip-done",
                *common,
            ]
        )
    return cmds


def make_run_dir(run: PlannedRun) -> None:
    """The folder of a new run, holding its ``config.json`` (training resumes it from 0)."""
    if run.state == "new":
        with RunDir.create(run.path, run.config):
            run.state = "resume"


# --------------------------------------------------------------------------- run


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


#: how long a run locked by another process (a killed sweep's child still saving) is waited for
LOCKED_RUN_WAIT = 60.0


def _die_with_parent() -> None:
    """In the child, before exec: Linux sends it SIGTERM if the sweep dies (even by SIGKILL)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: a sweep killed by SIGKILL leaves its runs going


@dataclass
class _Job:
    run: PlannedRun
    commands: list[list[str]]
    log_path: Path
    proc: subprocess.Popen | None = None
    started: float = 0.0
    waiting_since: float | None = None

    def start_next(self) -> None:
        cmd = self.commands.pop(0)
        with open(self.log_path, "a") as log:
            log.write(f"\n$ {' '.join(cmd[1:])}\n")
            log.flush()
            # its own session: a terminal's Ctrl-C reaches the sweep, which stops each run once
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )


def _last_error(log_path: Path) -> str:
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error:")]
    return (errors or lines or ["no output"])[-1]


def run_sweep(
    sweep_dir: str | Path,
    configs: list[FitConfig],
    jobs: int = 1,
    threads: int | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    evaluate_k: int = 0,
    images: int = 0,
    description: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    poll: float = 0.5,
) -> dict[str, Any]:
    """Bring every configuration of the grid up to date; return what happened to each.

    The sweep folder is locked while it runs (a second sweep on it gets
    :class:`~pyro_dvae.errors.LockError`). SIGINT, SIGTERM or SIGHUP stop every
    run at a resumable checkpoint before this returns (by raising :class:`Stopped`).
    """
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    for c in configs:
        c.validate()
    named = named_grid(configs)
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with FolderLock(sweep_dir, f"sweep folder {sweep_dir}"), stop_on_signals():
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
        )


def _run_locked(
    sweep_dir, named, jobs, threads, data_dir, device, evaluate_k, images, description, log, poll
) -> dict[str, Any]:
    threads = threads or max(1, available_cores() // jobs)
    data_dir = Path(data_dir).resolve() if data_dir is not None else None
    planned = plan(sweep_dir, named, evaluate_k, images)
    _write_sweep_json(sweep_dir, named, description)

    outcome: dict[str, str] = {}
    queue: list[_Job] = []
    (sweep_dir / "logs").mkdir(parents=True, exist_ok=True)
    for run in planned:
        if run.state == "conflict":
            outcome[run.name] = f"failed: {run.reason}"
            log(f"[skip] {run.name}: {run.reason}")
            continue
        cmds = commands_for(run, threads, data_dir, device, evaluate_k, images)
        if not cmds:
            outcome[run.name] = "finished"
            continue
        queue.append(_Job(run, cmds, sweep_dir / "logs" / f"{run.name}.log"))
    done_before = sum(1 for v in outcome.values() if v == "finished")
    log(
        f"sweep {sweep_dir}: {len(named)} runs, {done_before} already finished, "
        f"{len(queue)} to run ({jobs} at a time, {threads} threads each)"
    )

    running: list[_Job] = []
    total = len(queue)
    started = 0
    try:
        while queue or running:
            for job in _startable(queue, jobs - len(running), outcome, log):
                started += 1
                what = {"new": "start", "resume": f"resume from epoch {job.run.epochs_done}"}.get(
                    job.run.state, "evaluate"
                )
                log(f"[{started}/{total}] {job.run.name}: {what}")
                try:
                    make_run_dir(job.run)
                except PyroDvaeError as err:
                    outcome[job.run.name] = f"failed: {err}"
                    log(f"[FAILED] {job.run.name}: {err}")
                    continue
                job.started = time.perf_counter()
                job.start_next()
                running.append(job)
            time.sleep(poll)
            for job in list(running):
                rc = job.proc.poll()
                if rc is None:
                    continue
                if rc == 0 and job.commands:
                    job.start_next()
                    continue
                running.remove(job)
                seconds = time.perf_counter() - job.started
                if rc == 0:
                    outcome[job.run.name] = "finished"
                    log(f"[done] {job.run.name} ({seconds:.0f}s){_result_text(job.run.path)}")
                else:
                    outcome[job.run.name] = f"failed: {_last_error(job.log_path)}"
                    log(
                        f"[FAILED] {job.run.name}: {_last_error(job.log_path)} (see {job.log_path})"
                    )
    except KeyboardInterrupt:
        _stop(running)
        for job in running:
            outcome[job.run.name] = "interrupted"
        for job in queue:
            outcome[job.run.name] = "not started"
        raise
    return outcome


def _startable(queue: list[_Job], free: int, outcome: dict[str, str], log) -> list[_Job]:
    """Up to ``free`` jobs to start now, taken from ``queue``. A run that another process
    holds (a killed sweep's run still saving its checkpoint) waits its turn, then fails."""
    ready = []
    now = time.perf_counter()
    for job in list(queue):
        if len(ready) >= free:
            break
        holder = RunDir(job.run.path).holder() if job.run.path.exists() else None
        if holder is None:
            queue.remove(job)
            ready.append(job)
        elif job.waiting_since is None:
            job.waiting_since = now
            log(f"[wait] {job.run.name}: in use by {holder}")
        elif now - job.waiting_since > LOCKED_RUN_WAIT:
            queue.remove(job)
            outcome[job.run.name] = f"failed: in use by {holder}"
            log(f"[FAILED] {job.run.name}: in use by {holder}")
    return ready


def _stop(running: list[_Job], grace: float = 120.0) -> None:
    """SIGTERM to every run (each saves a resumable checkpoint and exits), then wait."""
    for job in running:
        if job.proc.poll() is None:
            job.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for job in running:
        while True:
            try:
                job.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                break
            except subprocess.TimeoutExpired:
                job.proc.kill()  # past the grace period: its last checkpoint stands
            except Stopped:
                continue  # a second signal while waiting: keep waiting for the runs


def _result_text(path: Path) -> str:
    summary = RunDir(path).read_summary()
    test = summary.get("final_test", {}).get("test_loss")
    text = f": {summary.get('epochs_completed', '?')} epochs" if summary else ""
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
    try:  # a sweep folder may be filled by several grids: keep the runs of earlier ones
        earlier = json.loads((sweep_dir / SWEEP).read_text()).get("runs", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        earlier = {}
    doc = {
        **(description or {}),
        "runs": {**earlier, **{name: config.to_dict() for name, config in named.items()}},
    }
    atomic_write_text(sweep_dir / SWEEP, json.dumps(doc, indent=2) + "\n")


__all__ = [
    "PRESETS",
    "grid",
    "named_grid",
    "paper_grid",
    "plan",
    "register_preset",
    "run_name",
    "run_sweep",
]
