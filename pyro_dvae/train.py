"""Training: SVI over in-memory batches, metrics, checkpoints, resume."""

from __future__ import annotations

import functools
import hashlib
import math
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pyro
import torch
from torch import nn
from tqdm.auto import tqdm

from .config import FitConfig
from .data import Dataset, binarize
from .errors import ConfigError, RunDirError, StorageError, TrainingError
from .families import make_family
from .fileio import first_line
from .guides import build_guide, check_guide
from .inference import (
    ELBOS,
    SVI,
    enumerated_parts,
    evaluate_elbo,
    fully_reparameterized,
    kl_kinds,
    make_elbo,
    seeded,
)
from .optim import FusedClippedAdam
from .rundir import RunDir, runtime_versions, summary_numbers
from .signals import deferred_stop, signal_of, stop_on_signals
from .vae import VAE

EVAL_SEED = 12345  # evaluation draws its own samples and leaves training's RNG alone


#: the device ``auto`` stands for, where set (a cluster job's, a CPU-only test run's)
ENV_DEVICE = "PYRO_DVAE_DEVICE"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` is ``$PYRO_DVAE_DEVICE`` if set, else CUDA when available, else the CPU."""
    asked = f"--device {device}"
    env = os.environ.get(ENV_DEVICE, "auto") or "auto"
    if str(device) == "auto" and env != "auto":
        device, asked = env, f"{ENV_DEVICE}={env}"
    elif str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ConfigError(
            f"{asked}: give auto, cpu, cuda, cuda:N (or another torch device)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"{asked} was asked for, but no CUDA device is available")
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:  # e.g. mps on a build without it
        why = first_line(err).split(". ")[0]  # torch goes on to list every backend it has
        raise TrainingError(f"{asked} is not available here: {why}") from None
    return device


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
    """Trains one VAE with ``SVI``; writes a :class:`RunDir` when one is given."""

    def __init__(
        self,
        config: FitConfig,
        dataset: Dataset,
        device: str | torch.device = "auto",
        run_dir: RunDir | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        guide: nn.Module | str | None = None,
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
        self.jit = config.jit and reparameterized
        self.elbo = make_elbo(
            config.elbo,
            config.num_particles,
            jit=self.jit,
            state=self.family,
            baseline=config.baseline,
            gradient=config.gradient,
        )
        self.svi = SVI(self.vae.model, self.vae.guide, self.optim, self.elbo)

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
        −ELBO of the discrete model it stands for (``discrete_loss``: hard codes, analytic KL)."""
        x = self.data.test if x is None else x
        if self.config.elbo == "enum":  # the exact sum the run trains on
            return enumerated_parts(self.vae, x)
        with seeded(EVAL_SEED, self.device):
            parts = evaluate_elbo(self.vae.model, self.vae.guide, x, analytic=self.analytic)
        if self.discrete_vae is not None:
            with seeded(EVAL_SEED, self.device):
                hard = evaluate_elbo(self.discrete_vae.model, self.discrete_vae.guide, x, True)
            parts["discrete_loss"] = hard["loss"]
        return parts

    @functools.cached_property
    def discrete_vae(self) -> VAE | None:
        """The networks scoring the discrete model a relaxed family stands for, if any."""
        if not self.family.relaxed or self.vae.guide_module is not None:
            return None
        return self.vae.with_family(self.family.discrete())

    # ------------------------------------------------------------------ training
    def steps_per_epoch(self) -> int:
        return math.ceil(self.data.train.shape[0] / self.config.batch_size)

    def train_epoch(self, bar=None) -> dict[str, float]:
        cfg, x_grey = self.config, self.data.train
        n = x_grey.shape[0]
        x_bin = binarize(x_grey, self.data_gen)  # fresh binarisation every epoch
        perm = torch.randperm(n, generator=self.data_gen, device=self.device)
        loss_sum = 0.0
        recon_sum = torch.zeros((), device=self.device)
        for start in range(0, n, cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            self.family.set_step(self.step)
            loss = self.svi.step(x_bin[idx])
            if not math.isfinite(loss):
                raise TrainingError(
                    f"the loss became {loss} at epoch {self.epoch + 1}, step {self.step + 1}; "
                    f"training stopped and the checkpoint of epoch {self.epoch} is kept"
                )
            loss_sum += loss * len(idx)
            recon_sum += self.elbo.last_recon * len(idx)
            self.step += 1
            if bar is not None:
                bar.update(1)
                if self.step % 50 == 0:
                    bar.set_postfix(loss=f"{loss:.2f}", epoch=self.epoch + 1, refresh=False)
        recon = float(recon_sum) / n
        return {"train_loss": loss_sum / n, "train_recon": recon, "train_kl": loss_sum / n - recon}

    def fit(self, epochs: int | None = None) -> dict[str, Any]:
        """Train up to ``epochs`` (default: the config's) and return the summary."""
        epochs = epochs or self.config.epochs
        self.save_start()
        total = epochs * self.steps_per_epoch()
        bar = step_bar(total, self.step, self.family.describe(), self.progress)

        def epoch() -> None:
            t0 = time.perf_counter()
            record = {"epoch": self.epoch + 1, **self.train_epoch(bar)}
            record["seconds"] = time.perf_counter() - t0
            if record["epoch"] % self.config.eval_every == 0 or record["epoch"] == epochs:
                record.update({f"test_{k}": v for k, v in self.evaluate().items()})
            record.update(self.family.state())
            self._log_epoch(record, epochs)
            with deferred_stop():
                self._commit_epoch(record, epochs)

        def finish(status: str) -> dict[str, Any] | None:
            try:
                return self._write_summary(status, epochs)
            except StorageError:
                if status != "failed":  # else the error that stopped training is the news
                    raise
                return None

        return train_epochs(epoch, lambda: self.epoch < epochs, finish, bar, lambda: self.epoch)

    def save_start(self) -> None:
        """A new run's checkpoint at epoch 0, so that a kill in its first epoch is resumable."""
        if self.run_dir is not None and self.epoch == 0:
            if not self.run_dir.checkpoint_path.exists():
                self.run_dir.save_checkpoint(self.state_dict())

    def _commit_epoch(self, record: dict[str, Any], epochs: int) -> None:
        """An epoch counts once its checkpoint has landed; metrics and summary follow it.

        A kill between these writes leaves the checkpoint ahead, and the run directory's
        readers trust it (see :mod:`pyro_dvae.rundir`). A write that fails (disk full)
        leaves the previous checkpoint and the trainer at the previous epoch.
        """
        self.history.append(record)
        epoch, self.epoch = self.epoch, record["epoch"]
        if self.run_dir is None:
            return
        try:
            self.run_dir.save_checkpoint(self.state_dict())
        except BaseException:
            self.history.pop()
            self.epoch = epoch
            raise
        self.run_dir.append_metrics(record)
        self._write_summary("running", epochs)

    def _log_epoch(self, r: dict[str, Any], epochs: int) -> None:
        msg = (
            f"epoch {r['epoch']}/{epochs}  train -ELBO {r['train_loss']:.2f} "
            f"(recon {r['train_recon']:.2f}, KL {r['train_kl']:.2f})"
        )
        if "test_loss" in r:
            msg += f"  test -ELBO {r['test_loss']:.2f}"
        if "test_discrete_loss" in r:
            msg += f" (hard codes {r['test_discrete_loss']:.2f})"
        self.log(msg + f"  {r['seconds']:.1f}s")

    def _write_summary(self, status: str, epochs: int) -> dict[str, Any]:
        summary = {
            "status": status,
            "epochs_completed": self.epoch,
            "epochs_planned": epochs,
            "steps": self.step,
            "family": self.family.describe(),
            "guide": self.config.guide or None,
            "elbo": self.config.elbo,
            "kl": self.kl,
            "jit": self.elbo.jit,
            **summary_numbers(self.history),
            "device": str(self.device),
            "versions": runtime_versions(),
            **self.extra_summary,
        }
        if self.run_dir is not None:  # the last summary gets through a full disk
            self.run_dir.write_summary(summary, final=status != "running")
        return summary


def train_epochs(
    epoch: Callable[[], None],
    more: Callable[[], bool],
    finish: Callable[[str], Any],
    bar: tqdm,
    reached: Callable[[], int],
) -> Any:
    """``epoch()`` while ``more()``, under stop signals; then ``finish(status)`` on every path
    (finished, interrupted or failed), with signals held back, and its result. A stop signal
    raises :class:`TrainingInterrupted` at epoch ``reached()`` once ``finish`` has run."""
    status, stop = "running", None
    try:
        with stop_on_signals(), pyro.validation_enabled(False):
            while more():
                epoch()
        status = "finished"
    except KeyboardInterrupt as err:
        status, stop = "interrupted", err
    except Exception:
        status = "failed"
        raise
    finally:
        # a second signal (a supervisor signals every process) must not cut this short
        with deferred_stop(ignore=True):
            bar.close()
            result = finish(status)
    if stop is not None:
        raise TrainingInterrupted(reached(), signal_of(stop)) from None
    return result


def step_bar(total: int, done: int, desc: str, enabled: bool) -> tqdm:
    """The progress bar of a training loop, in steps."""
    return tqdm(
        total=total,
        initial=min(done, total),
        unit="step",
        dynamic_ncols=True,
        disable=not enabled,
        desc=desc,
        leave=False,
    )


def guide_refusal(spec: str, to: str) -> str:
    """Why a run trained with a guide from a file is not loaded without being told to."""
    return (
        f"the run was trained with the guide {spec!r}; loading it imports and runs that "
        f"code, so {to} only with --guide {spec} (or a guide of the same shape)"
    )


def python_guide_refusal(state: dict[str, Any] | None, call: str) -> str | None:
    """Why a checkpoint whose guide was given in Python (no spec in its config) needs that
    guide passed again (to ``call``, or as ``--guide``); None for the family's own guide."""
    model = state.get("model") if isinstance(state, dict) else None
    if isinstance(model, dict) and any(str(k).startswith("guide_module.") for k in model):
        return (
            f"was trained with a guide given in Python; pass the same guide to {call} "
            "(or name its factory with --guide package.module:factory)"
        )
    return None
