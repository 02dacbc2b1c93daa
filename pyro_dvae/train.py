"""Training: SVI over in-memory batches, metrics, checkpoints, resume."""

from __future__ import annotations

import functools
import hashlib
import math
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import torch
from torch import nn
from tqdm.auto import tqdm

from .callbacks import Callback, CallbackList, EpochLog, ProgressBar, RunDirWriter
from .collapse import count_active, last_verdict
from .compiled_elbo import compile_pays
from .config import FitConfig
from .data import Dataset, binarize
from .devices import resolve_device
from .errors import ConfigError, RunDirError, StorageError, TrainingError
from .families import make_family
from .families.enumeration import enumerated_parts
from .fileio import first_line
from .guides import build_guide, check_guide
from .inference import (
    ELBOS,
    EVAL_SEED,
    SVI,
    evaluate_elbo,
    fully_reparameterized,
    kl_kinds,
    make_elbo,
    seeded,
)
from .optim import FusedClippedAdam
from .rundir import RunDir, runtime_versions, summary_numbers
from .schedules import Schedules, check_reparameterized
from .signals import deferred_stop, raise_if_stopped, signal_of, stop_on_signals
from .stored_run import guide_refusal
from .tracking import trackers
from .vae import VAE

#: the line a run that compiles its step prints before its first epoch
COMPILE_NOTE = (
    "compiling the training step with torch.compile before the first step (seconds; torch "
    "caches it for later runs; --compile off steps eagerly)"
)


class TrainingInterrupted(Exception):
    """A stop signal (Ctrl-C, SIGTERM, SIGHUP) during training; the last checkpoint is kept."""

    def __init__(self, epoch: int, signum: int = signal.SIGINT):
        super().__init__(f"interrupted after epoch {epoch}")
        self.epoch = epoch
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Trainer:
    """Trains one VAE with ``SVI``; writes a :class:`RunDir` when one is given.

    ``config``: the run (validated here); ``dataset``: its data, the one ``config.dataset``
    names (cut here to ``config.subset``); ``device``: ``auto`` (``$PYRO_DVAE_DEVICE`` if set,
    else CUDA when available, else the CPU) or a torch device; ``run_dir``: where the
    checkpoint, metrics and summary go (``None``: nothing is written); ``progress``: a
    progress bar of the steps; ``log``: a function that takes each message line (``None``:
    printed through tqdm); ``guide``: a module replacing the family's guide, or the import
    spec that builds one (needed when ``config.guide`` names one); ``callbacks``: told of the
    run's events after the trainer's own (progress bar, epoch lines, run files) and the
    trackers ``config.log`` asks for.
    """

    def __init__(
        self,
        config: FitConfig,
        dataset: Dataset,
        device: str | torch.device = "auto",
        run_dir: RunDir | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        guide: nn.Module | str | None = None,
        callbacks: Sequence[Callback] = (),
    ):
        self.config = config.validate()
        if dataset.name != config.dataset:
            raise ConfigError(f"the config names {config.dataset}; the data is {dataset.name}")
        if config.subset:
            dataset = dataset.head(config.subset)
        self.device = resolve_device(device)
        self.data = dataset.to(self.device)
        self.run_dir = run_dir
        self.progress = progress
        self.log = log or (lambda msg: tqdm.write(msg))

        pyro.set_rng_seed(config.seed)
        self.family = make_family(config)
        if guide is None and config.guide:
            raise RunDirError(guide_refusal(config.guide, "resume it"))
        if isinstance(guide, str):  # an import spec the caller named
            guide = build_guide(guide, self.family, self.data.input_dim, config.hidden)
        self.vae = VAE(self.family, self.data.input_dim, config.hidden, guide_module=guide)
        self.vae.to(self.device)
        self.optim = FusedClippedAdam(lr=config.lr, clip_norm=config.clip_norm)
        self.schedules = Schedules(config, self.steps_per_epoch())
        self.analytic = ELBOS[config.elbo][1]
        self.data_gen = torch.Generator(device=self.device).manual_seed(config.seed)
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.extra_summary: dict[str, Any] = {}  # what a group adds to a member's summary
        # One validated pass: shapes and supports are checked here, not in the hot loop.
        probe = self.data.test[:2]
        with pyro.validation_enabled(True):
            if guide is not None:
                check_guide(self.vae.model, self.vae.guide, probe)
            self.kl = kl_kinds(self.vae.model, self.vae.guide, probe, analytic=self.analytic)
            reparameterized = fully_reparameterized(self.vae.model, self.vae.guide, probe)
        if not reparameterized and (config.elbo == "iwae" or config.gradient != "standard"):
            raise ConfigError(f"--elbo {config.elbo} needs a guide whose sites have rsample")
        self.compilable = check_reparameterized(config, reparameterized)
        self.elbo = make_elbo(
            config.elbo,
            config.num_particles,
            compile=False,  # decided by begin(), when the steps left are known
            step_inputs=self.family,
            baseline=config.baseline,
            objective=self.schedules.objective,
            gradient=config.gradient,
        )
        self.svi = SVI(self.vae.model, self.vae.guide, self.optim, self.elbo)
        self.epochs_planned = config.epochs
        own = [RunDirWriter(), EpochLog(lambda msg: self.log(msg))]
        if progress:
            own.append(ProgressBar(self.family.describe()))
        self.callbacks = CallbackList([*own, *trackers(config), *callbacks])

    # ------------------------------------------------------------------ state
    def _new_streams(self, trained_on: str, note: bool = True) -> None:
        """A checkpoint from another kind of device: a CPU generator's state does not load
        into a CUDA one, nor back. Every stream starts anew, seeded by a hash of the run's
        seed and epoch (no other run's seed), so the same resume gives the same run, though
        not the one it would have been on its own device."""
        digest = hashlib.sha256(f"pyro-dvae:{self.config.seed}:{self.epoch}".encode()).digest()
        seed = int.from_bytes(digest[:8], "little") >> 1
        self.data_gen.manual_seed(seed)
        torch.manual_seed(seed)  # the CPU's and every CUDA device's
        if note:
            self.log(
                f"note: the checkpoint was trained on {trained_on} and continues on "
                f"{self.device}; random streams do not carry over between kinds of device, so "
                f"they start anew from the seed and epoch (--device {trained_on} continues it "
                "as it was)"
            )

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds: config, weights, optimiser, random streams, epoch, history."""
        state = {
            "format": 1,
            "device": self.device.type,  # whose generator states these are
            "epoch": self.epoch,
            "step": self.step,
            "config": self.config.to_dict(),
            "model": self.vae.state_dict(),
            "optim": self.optim.get_state(),
            "rng_torch": torch.get_rng_state(),
            "rng_data": self.data_gen.get_state(),
            **self.family.state(),
            "history": self.history,  # the metrics of every epoch this checkpoint covers
        }
        if hasattr(self.elbo, "state_dict"):  # a score-function baseline's running state
            state["estimator"] = self.elbo.state_dict()
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict[str, Any], note: bool = True) -> None:
        """Restore a checkpoint; ``note``: say so when it is of another kind of device."""
        self.vae.load_state_dict(state["model"])
        self.optim.set_state(state["optim"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        trained_on = state.get("device") or ("cuda" if "rng_cuda" in state else "cpu")
        if trained_on == self.device.type:
            torch.set_rng_state(state["rng_torch"].cpu())
            self.data_gen.set_state(state["rng_data"].cpu())
            if "rng_cuda" in state and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["rng_cuda"].cpu(), self.device)
        else:
            self._new_streams(trained_on, note)
        self.family.set_step(self.step)
        if "estimator" in state and hasattr(self.elbo, "load_state_dict"):
            self.elbo.load_state_dict(state["estimator"], self.data.test[:1])
        if "history" in state:
            self.history = [r for r in state["history"] if r.get("epoch", 0) <= self.epoch]

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, x: torch.Tensor | None = None) -> dict[str, float]:
        """Mean test −ELBO and parts with the training estimator's KL, one sample per image
        (``--elbo enum``: exact, summed over every code); for a relaxed latent, also the
        −ELBO of the discrete model it stands for (``discrete_loss``: hard codes, analytic KL);
        and ``active_units`` of ``latent_units``, which tell a collapsed posterior
        (:mod:`.collapse`)."""
        x = self.data.test if x is None else x
        active = count_active(self.vae, x, EVAL_SEED, self.device)
        if getattr(self.elbo, "exact", False):  # the exact sum the run trains on
            return enumerated_parts(self.vae, x) | active
        with seeded(EVAL_SEED, self.device):
            parts = evaluate_elbo(self.vae.model, self.vae.guide, x, analytic=self.analytic)
        if self.discrete_vae is not None:
            with seeded(EVAL_SEED, self.device):
                hard = evaluate_elbo(self.discrete_vae.model, self.discrete_vae.guide, x, True)
            parts["discrete_loss"] = hard["loss"]
        return parts | active

    @functools.cached_property
    def discrete_vae(self) -> VAE | None:
        """The networks scoring the discrete model a relaxed family stands for, if any."""
        if not self.family.relaxed or self.vae.guide_module is not None:
            return None
        return self.vae.with_family(self.family.discrete())

    # ------------------------------------------------------------------ training
    def steps_per_epoch(self) -> int:
        """Steps in an epoch: the training images over the batch size, rounded up."""
        return math.ceil(self.data.train.shape[0] / self.config.batch_size)

    def train_epoch(self) -> dict[str, float]:
        """One pass over the training images, binarised afresh and shuffled: mean −ELBO parts."""
        cfg, x_grey = self.config, self.data.train
        n = x_grey.shape[0]
        x_bin = binarize(x_grey, self.data_gen)  # fresh binarisation every epoch
        perm = torch.randperm(n, generator=self.data_gen, device=self.device)
        loss_sum = 0.0
        recon_sum = torch.zeros((), device=self.device)
        for start in range(0, n, cfg.batch_size):
            raise_if_stopped()
            idx = perm[start : start + cfg.batch_size]
            self.family.set_step(self.step)
            self.schedules.set_step(self.step, self.optim)
            loss = self.svi.step(x_bin[idx])
            if not math.isfinite(loss):
                raise TrainingError(
                    f"the loss became {loss} at epoch {self.epoch + 1}, step {self.step + 1}; "
                    f"training stopped and the checkpoint of epoch {self.epoch} is kept"
                )
            loss_sum += loss * len(idx)
            recon_sum += self.elbo.last_recon * len(idx)
            self.step += 1
            self.callbacks.step(self, loss)
        return train_parts(self.elbo, loss_sum / n, float(recon_sum) / n)

    def fit(self, epochs: int | None = None) -> dict[str, Any]:
        """Train up to ``epochs`` (default: the config's) and return the summary."""
        self.begin(epochs)
        if self.elbo.compile:
            self.log(COMPILE_NOTE)

        def epoch() -> None:
            t0 = time.perf_counter()
            parts = self.train_epoch()
            record = self.epoch_record(parts, time.perf_counter() - t0)
            with deferred_stop():
                self.commit_epoch(record)

        more = lambda: self.epoch < self.epochs_planned  # noqa: E731
        return train_epochs(epoch, more, self.finish, lambda: self.epoch)

    def begin(self, epochs: int | None = None) -> None:
        """Plan ``epochs`` (default: the config's), write a new run's epoch-0 checkpoint (so
        that a kill in its first epoch is resumable) and tell the callbacks training starts."""
        self.epochs_planned = epochs or self.config.epochs
        steps_left = (self.epochs_planned - self.epoch) * self.steps_per_epoch()
        self.elbo.compile = self.compilable and compile_pays(self.config.compile, steps_left)
        if self.run_dir is not None and self.epoch == 0:
            if not self.run_dir.checkpoint_path.exists():
                self.run_dir.save_checkpoint(self.state_dict())
        self.callbacks.fit_start(self)

    def epoch_record(self, parts: dict[str, float], seconds: float) -> dict[str, Any]:
        """The metrics row of the epoch just trained: ``parts`` of the training loss, the
        seconds it took, the test scores when an evaluation is due, the family's state."""
        record = {"epoch": self.epoch + 1, **parts, "seconds": seconds}
        if record["epoch"] % self.config.eval_every == 0 or record["epoch"] == self.epochs_planned:
            metrics = self.evaluate()
            self.callbacks.evaluation(self, metrics)
            record.update({f"test_{k}": v for k, v in metrics.items()})
        record.update(self.family.state())
        record.update(self.schedules.state())
        return record

    def commit_epoch(self, record: dict[str, Any]) -> None:
        """An epoch counts once its checkpoint has landed; the callbacks (metrics, summary,
        loggers) follow it.

        A kill between these writes leaves the checkpoint ahead, and the run directory's
        readers trust it (see :mod:`pyro_dvae.rundir`). A write that fails (disk full)
        leaves the previous checkpoint and the trainer at the previous epoch.
        """
        self.history.append(record)
        epoch, self.epoch = self.epoch, record["epoch"]
        if self.run_dir is not None:
            try:
                self.run_dir.save_checkpoint(self.state_dict())
            except BaseException:
                self.history.pop()
                self.epoch = epoch
                raise
            self.callbacks.checkpoint(self, self.run_dir.checkpoint_path)
        self.callbacks.epoch_end(self, record)

    def summary(self, status: str) -> dict[str, Any]:
        """The run's ``summary.json`` as of now, with ``status``."""
        return {
            "status": status,
            "epochs_completed": self.epoch,
            "epochs_planned": self.epochs_planned,
            "steps": self.step,
            "family": self.family.describe(),
            "guide": self.config.guide or None,
            "elbo": self.config.elbo,
            "kl": self.kl,
            "compiled": self.elbo.compile,
            "compile_seconds": round(getattr(self.elbo, "compile_seconds", 0.0), 2),
            **summary_numbers(self.history),
            "collapse": last_verdict(self.history, self.config),
            "device": str(self.device),
            "versions": runtime_versions(),
            **self.extra_summary,
        }

    def finish(self, status: str, reason: str | None = None) -> dict[str, Any] | None:
        """Tell the callbacks training stopped (``reason``: the signal or the error) and
        return the summary; a storage error is raised unless the run failed already (then
        the error that stopped it is the news, and None is returned)."""
        if reason is not None:
            key = "stopped_by" if status == "interrupted" else "error"
            self.extra_summary.setdefault(key, reason)
        summary = self.summary(status)
        try:
            self.callbacks.fit_end(self, status, summary)
        except StorageError:
            if status != "failed":
                raise
            return None
        return summary


def train_epochs(
    epoch: Callable[[], None],
    more: Callable[[], bool],
    finish: Callable[[str, str | None], Any],
    reached: Callable[[], int],
) -> Any:
    """``epoch()`` while ``more()``, under stop signals; then ``finish(status, reason)`` on
    every path (finished; interrupted, with the signal's name; failed, with the error's first
    line), with signals held back, and its result. A stop signal raises
    :class:`TrainingInterrupted` at epoch ``reached()`` once ``finish`` has run."""
    status, stop, reason = "running", None, None
    try:
        with stop_on_signals(), pyro.validation_enabled(False):
            while more():
                epoch()
        status = "finished"
    except KeyboardInterrupt as err:
        status, stop = "interrupted", err
        reason = signal.Signals(signal_of(err)).name
    except Exception as err:
        status, reason = "failed", first_line(err)
        raise
    finally:
        # a second signal (a supervisor signals every process) must not cut this short
        with deferred_stop(ignore=True):
            result = finish(status, reason)
    if stop is not None:
        raise TrainingInterrupted(reached(), signal_of(stop)) from None
    return result


def train_parts(elbo, loss: float, recon: float) -> dict[str, float]:
    """An epoch's mean training loss and reconstruction, and the KL where the loss is an
    ELBO (recon + KL). A K > 1 importance-weighted bound (``--elbo iwae``, VIMCO) is tighter
    than the ELBO, its loss under recon + KL, so loss − recon is no KL (it can be negative):
    such a record has none."""
    parts = {"train_loss": loss, "train_recon": recon}
    if not (getattr(elbo, "importance_weighted", False) and elbo.num_particles > 1):
        parts["train_kl"] = loss - recon
    return parts
