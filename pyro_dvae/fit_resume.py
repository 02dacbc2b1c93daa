"""Training into a run directory: a new run (``fit``) or a stopped one continued (``resume``).

Both hold the run directory's lock while they train; a resumed run goes through its
checkpoint (the truth) and brings the metrics and summary back in line with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from numbers import Integral
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .callbacks import Callback
from .config import RESUMABLE_FIELDS, FitConfig
from .data import load_dataset
from .errors import ConfigError, RunDirError
from .fileio import first_line
from .inference import MONTE_CARLO
from .rundir import RunDir
from .stored_run import StoredRun
from .train import Trainer


def fit(
    config: FitConfig,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    guide: nn.Module | None = None,
    threads: int | None = None,
    callbacks: Sequence[Callback] = (),
) -> dict[str, Any]:
    """Train a new run; the run directory is created only once the data and model are ready.

    ``guide`` replaces the family's guide (see :mod:`pyro_dvae.guides`); one given
    here as an object must be given again to :func:`resume`. The run directory is
    locked while training: a second writer gets :class:`~pyro_dvae.errors.LockError`.
    ``threads``: CPU threads for torch while this call runs (the CLI's ``--threads``);
    ``None`` leaves torch's setting alone. ``callbacks`` watch the run
    (:mod:`pyro_dvae.callbacks`).

    ``config``: the run, checked as a new one; ``out``: the run folder to create (absent or
    empty); ``None``: train without writing anything; ``data_dir``: as for
    :func:`~pyro_dvae.data.load_dataset`; ``device``: ``auto`` (``$PYRO_DVAE_DEVICE`` if set,
    else CUDA when available, else the CPU), ``cpu``, ``cuda`` or another torch device;
    ``progress``: a progress bar of the steps; ``log``: a function that takes each message
    line (``None``: printed through tqdm). Returns the run's summary, what ``summary.json``
    holds (``status``, ``epochs_completed``, ``final``, ``final_test``, ...). A stop signal
    (Ctrl-C, SIGTERM, SIGHUP) raises :class:`~pyro_dvae.train.TrainingInterrupted` once the
    summary is written, the last checkpoint kept.
    """
    config.validate(new=True)
    with cpu_threads(threads):
        dataset = load_dataset(config.dataset, data_dir, subset=config.subset)
        # a guide named in the config is imported because the caller named it there
        trainer = Trainer(
            config,
            dataset,
            device,
            None,
            progress,
            log,
            guide=guide or config.guide or None,
            callbacks=callbacks,
        )
        if out is None:
            return _train(trainer)
        with RunDir.create(out, config) as run_dir:
            trainer.run_dir = run_dir
            trainer.log(f"run directory: {run_dir.path}")
            return _train(trainer)


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``threads`` inside, as they were after; ``None``: unchanged."""
    if threads is None:
        yield
        return
    if isinstance(threads, bool) or not isinstance(threads, Integral) or threads < 1:
        raise ConfigError(f"threads must be a whole number >= 1, not {threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resume(
    run_path: str | Path,
    data_dir: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    guide: nn.Module | str | None = None,
    callbacks: Sequence[Callback] = (),
    **changes: Any,
) -> dict[str, Any]:
    """Continue a run from its checkpoint, to the same result as an uninterrupted run.

    ``changes`` may set the fields in :data:`RESUMABLE_FIELDS` (``epochs``,
    ``eval_every``, ``compile``, ``log``); ``None`` leaves a field as stored. A run killed before
    its first checkpoint starts again from epoch 0. A run trained with a guide from
    a file is resumed only when ``guide`` names it (a module, or its import spec):
    a run folder never runs code on its own.

    ``run_path``: the run folder, locked while it trains; ``data_dir``, ``device``,
    ``progress``, ``log`` and ``callbacks``: as for :func:`fit`. Returns the run's summary,
    as :func:`fit` does.
    """
    changes = _resumable(changes)
    with RunDir.open(run_path, need_checkpoint=False).lock() as run_dir:
        stored = StoredRun.read(run_dir)
        config, state = stored.continued(changes), stored.state
        if not config.guide:  # a guide from a file: Trainer says so
            stored.check_guide(guide, "resume it", "pd.resume(..., guide=...)")
        dataset = load_dataset(config.dataset, data_dir, subset=config.subset)
        try:
            trainer = Trainer(
                config, dataset, device, run_dir, progress, log, guide=guide, callbacks=callbacks
            )
        except RunDirError as err:
            raise RunDirError(f"{run_dir.path}: {err}") from None
        if state is not None:
            with _fitting(run_dir):
                trainer.load_state_dict(state)
            trainer.log(f"resuming {run_dir.path} from epoch {trainer.epoch}")
        else:
            trainer.log(f"{run_dir.path} has no checkpoint yet: starting it from epoch 0")
        trainer.history = run_dir.reconcile(trainer.epoch, state and state.get("history"))
        if changes:
            config.save(run_dir.config_path)
        return _train(trainer)


def resume_group(
    run_paths: list[str | Path],
    data_dir: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    callbacks: Sequence[Callback] = (),
    **changes: Any,
) -> list[dict[str, Any]]:
    """Continue several runs of one shape as one group (:mod:`pyro_dvae.group`), each from
    its checkpoint; all must be at the same epoch. Returns the members' summaries.

    ``run_paths``: the run folders, each locked while the group trains; ``data_dir``,
    ``device``, ``progress``, ``log``, ``callbacks`` and ``changes``: as for :func:`resume`,
    ``changes`` applied to every run.
    """
    from .group import GroupTrainer, check_group

    changes = _resumable(changes)
    if len({Path(p).resolve() for p in run_paths}) < len(run_paths):
        raise ConfigError("a run appears twice in the group")
    with ExitStack() as stack:
        run_dirs, configs, states = [], [], []
        for path in run_paths:
            run_dir = stack.enter_context(RunDir.open(path, need_checkpoint=False).lock())
            config, state = _read_for_resume(run_dir, changes)
            run_dirs.append(run_dir)
            configs.append(config)
            states.append(state)
        check_group(configs)
        dataset = load_dataset(configs[0].dataset, data_dir, subset=configs[0].subset)
        group = GroupTrainer(configs, dataset, device, run_dirs, progress, log, callbacks)
        if any(s is not None for s in states):
            fresh = [s or t.state_dict() for s, t in zip(states, group.members, strict=True)]
            group.load_states(fresh)
        group.log(
            f"training {len(run_dirs)} runs as one group from epoch {group.epoch}: "
            + ", ".join(d.path.name for d in run_dirs)
        )
        members = zip(run_dirs, group.members, states, configs, strict=True)
        for run_dir, trainer, state, config in members:
            trainer.history = run_dir.reconcile(trainer.epoch, state and state.get("history"))
            if changes:
                config.save(run_dir.config_path)
            for note in _kl_notes(trainer):
                trainer.log(note)
        return group.fit()


def _resumable(changes: dict[str, Any]) -> dict[str, Any]:
    changes = {k: v for k, v in changes.items() if v is not None}
    fixed = sorted(set(changes) - RESUMABLE_FIELDS)
    if fixed:
        raise ConfigError(f"a resumed run cannot change {', '.join(fixed)}")
    return changes


def _read_for_resume(run_dir: RunDir, changes: dict[str, Any]):
    """A locked run's config (with ``changes`` applied) and its checkpoint (None: none yet)."""
    stored = StoredRun.read(run_dir)
    return stored.continued(changes), stored.state


@contextmanager
def _fitting(run_dir: RunDir) -> Iterator[None]:
    """A checkpoint that does not load into the model is one error line naming the run."""
    try:
        yield
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        raise RunDirError(
            f"checkpoint in {run_dir.path} does not fit this model: {first_line(err)}"
        ) from None


def _train(trainer: Trainer) -> dict[str, Any]:
    for note in _kl_notes(trainer):
        trainer.log(note)
    return trainer.fit()


def _kl_notes(trainer: Trainer) -> list[str]:
    if not trainer.analytic:
        return []
    return [
        f"note: no analytic KL is registered for site '{site}' ({trainer.family.describe()}); "
        f"TraceMeanField_ELBO falls back to a Monte Carlo estimate there"
        for site, kind in trainer.kl.items()
        if kind == MONTE_CARLO
    ]
