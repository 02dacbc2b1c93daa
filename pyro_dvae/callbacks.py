"""Callbacks: the one seam through which anything watches a training run.

A :class:`Callback` is told of a run's events, in this order:

- ``on_fit_start(trainer)``: training is about to start (or continue, after a resume);
- ``on_step(trainer, loss)``: after every ``every_n_steps`` steps (0, the default: never),
  with that step's loss (mean −ELBO per image); ``trainer.step`` counts the steps done;
- ``on_evaluation(trainer, metrics)``: the test set was scored at the end of an epoch;
- ``on_checkpoint(trainer, path)``: an epoch's checkpoint landed in the run directory;
- ``on_epoch_end(trainer, record)``: the epoch counts (its checkpoint, if any, landed);
  ``record`` is its row of ``metrics.jsonl``;
- ``on_fit_end(trainer, status, summary)``: training stopped; ``status`` is ``finished``,
  ``interrupted`` (a stop signal, named in ``summary["stopped_by"]``) or ``failed``
  (``summary["error"]`` says why); ``summary`` is the run's ``summary.json``.

The trainer's own progress bar, epoch lines and run-directory files (``metrics.jsonl``,
``summary.json``) are callbacks too, and so are the experiment trackers of
:mod:`pyro_dvae.tracking`. Use from Python as ``pd.fit(config, callbacks=[...])``; a group
member's callbacks are told of that member's events. A callback reads the trainer's public
attributes (``config``, ``epoch``, ``step``, ``epochs_planned``, ``vae``, ``run_dir``,
``history``) and does not change them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from .collapse import collapse_note
from .errors import StorageError

if TYPE_CHECKING:
    from .train import Trainer

STATUSES = ("finished", "interrupted", "failed")
#: the summary's keys that say why a run stopped
REASONS = ("stopped_by", "error")


class Callback:
    """Override the events you need; every one does nothing by default."""

    #: ``on_step`` after every this many steps; 0: never
    every_n_steps: int = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        """Training starts, or continues from ``trainer.epoch`` after a resume."""

    def on_step(self, trainer: Trainer, loss: float) -> None:
        """Step ``trainer.step`` is done; ``loss`` is its mean −ELBO per image."""

    def on_evaluation(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        """The test set was scored after epoch ``trainer.epoch + 1`` (not yet committed)."""

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None:
        """The checkpoint of epoch ``trainer.epoch`` was written to ``path``."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """Epoch ``record["epoch"]`` counts; ``record`` holds its metrics."""

    def on_fit_end(self, trainer: Trainer, status: str, summary: dict[str, Any]) -> None:
        """Training stopped with ``status`` (see :data:`STATUSES`); ``summary`` as written."""


class CallbackList:
    """Tells callbacks of events, in order. An error in a callback stops training, except in
    ``on_fit_end``, where every callback is told before the first error is raised."""

    def __init__(self, callbacks: Iterable[Callback] = ()):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"a callback must be a pyro_dvae.Callback, not {type(cb).__name__}")
        self.stepping = [cb for cb in self.callbacks if cb.every_n_steps > 0]

    def __iter__(self):
        return iter(self.callbacks)

    def fit_start(self, trainer: Trainer) -> None:
        for cb in self.callbacks:
            cb.on_fit_start(trainer)

    def step(self, trainer: Trainer, loss: float | Callable[[], float]) -> None:
        """``loss``: the value, or a function computing it (called only if someone asks)."""
        due = [cb for cb in self.stepping if trainer.step % cb.every_n_steps == 0]
        if due:
            value = loss() if callable(loss) else loss
            for cb in due:
                cb.on_step(trainer, value)

    def evaluation(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_evaluation(trainer, metrics)

    def checkpoint(self, trainer: Trainer, path: Path) -> None:
        for cb in self.callbacks:
            cb.on_checkpoint(trainer, path)

    def epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(trainer, record)

    def fit_end(self, trainer: Trainer, status: str, summary: dict[str, Any]) -> None:
        first: BaseException | None = None
        for cb in self.callbacks:
            try:
                cb.on_fit_end(trainer, status, summary)
            except Exception as err:  # the others still hear of the end
                first = first or err
        if first is not None:
            raise first


class RunDirWriter(Callback):
    """``metrics.jsonl`` and ``summary.json`` of the trainer's run directory, if it has one.

    The checkpoint itself is the trainer's commit (see :mod:`pyro_dvae.rundir`); these
    files follow it: a row per committed epoch, the summary after it and at the end.
    """

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if trainer.run_dir is not None:
            trainer.run_dir.append_metrics(record)
            trainer.run_dir.write_summary(trainer.summary("running"))

    def on_fit_end(self, trainer: Trainer, status: str, summary: dict[str, Any]) -> None:
        if trainer.run_dir is None:
            return
        try:  # the last summary gets through a full disk (see RunDir.write_summary)
            trainer.run_dir.write_summary(summary, final=True)
        except StorageError:  # there, without the reason, if only that did not fit
            short = {k: v for k, v in summary.items() if k not in REASONS}
            if short == summary:
                raise
            trainer.run_dir.write_summary(short, final=True)


class EpochLog(Callback):
    """One line per epoch through ``log``: train −ELBO and parts, test −ELBO, seconds."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.log(epoch_line(record, trainer.epochs_planned, trainer.config))


def epoch_line(r: dict[str, Any], epochs: int, config=None) -> str:
    """``epoch 3/20  train -ELBO 101.20 (recon 80.10, KL 21.10)  test -ELBO 99.80  4.1s``, and
    a word when the posterior collapsed (:mod:`pyro_dvae.collapse`). A run that trains an
    importance-weighted bound has no train KL (:func:`~pyro_dvae.train.train_parts`): its
    line says ``train -IWAE bound (K=5) 99.10 (recon 80.10)``; its test -ELBO is one-sample."""
    loss, recon = f"{r['train_loss']:.2f}", f"recon {r['train_recon']:.2f}"
    if "train_kl" in r:
        train = f"-ELBO {loss} ({recon}, KL {r['train_kl']:.2f})"
    else:
        k = f" (K={config.num_particles})" if config is not None else ""
        train = f"-IWAE bound{k} {loss} ({recon})"
    msg = f"epoch {r['epoch']}/{epochs}  train {train}"
    if "test_loss" in r:
        msg += f"  test -ELBO {r['test_loss']:.2f}"
    if "test_discrete_loss" in r:
        msg += f" (hard codes {r['test_discrete_loss']:.2f})"
    return msg + f"  {r['seconds']:.1f}s" + collapse_note(r, r["epoch"] == epochs, config)


class ProgressBar(Callback):
    """A tqdm bar of training steps, closed when training stops."""

    every_n_steps = 1

    def __init__(self, desc: str, enabled: bool = True):
        self.desc, self.enabled, self.bar = desc, enabled, None

    def on_fit_start(self, trainer) -> None:
        total = trainer.epochs_planned * trainer.steps_per_epoch()
        self.bar = tqdm(
            total=total,
            initial=min(trainer.step, total),
            unit="step",
            dynamic_ncols=True,
            disable=not self.enabled,
            desc=self.desc,
            leave=False,
        )

    def on_step(self, trainer, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if trainer.step % 50 == 0:
                self.bar.set_postfix(loss=f"{loss:.2f}", epoch=trainer.epoch + 1, refresh=False)

    def on_fit_end(self, trainer, status: str, summary: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
