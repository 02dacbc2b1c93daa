"""Ray Tune: one pyro-dvae run as a function trainable (``pip install "pyro-dvae[ray]"``).

``trainable(config)`` trains the run whose :class:`~pyro_dvae.config.FitConfig` fields
are the keys of ``config`` (every other field at its default), and reports each
epoch's metrics (train and test −ELBO and their parts, the epoch) with a checkpoint
through ``ray.tune.report``; a scheduler such as ASHA stops the trials that fall behind.
A trial started again (``Tuner.restore`` after an interrupted search, a retried trial, a
pausing scheduler such as PBT) resumes from ``ray.tune.get_checkpoint()``, where an
uninterrupted trial would be. Three more keys set where it runs: ``data_dir``,
``device`` (default: ``cuda`` if Ray gave the trial a GPU, else ``cpu``) and ``threads``.

    from ray import tune
    from pyro_dvae.tune import trainable

    tuner = tune.Tuner(
        trainable,
        param_space={"alpha": tune.loguniform(0.05, 20), "latent_dim": 20, "epochs": 10},
        tune_config=tune.TuneConfig(metric="test_loss", mode="min", num_samples=16),
    )
    best = tuner.fit().get_best_result()

``scripts/tune_alpha.py`` is a whole example with ASHA.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import torch

from .callbacks import Callback
from .config import FitConfig
from .data import load_dataset
from .train import Trainer

#: what ``config`` may hold besides FitConfig fields
SETTINGS = ("data_dir", "device", "threads")
CHECKPOINT = "checkpoint.pt"


class _TuneReport(Callback):
    """Each committed epoch to Ray Tune, with a checkpoint of the training state."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        from ray import tune

        with tempfile.TemporaryDirectory() as folder:
            torch.save(trainer.state_dict(), Path(folder) / CHECKPOINT)
            tune.report(record, checkpoint=tune.Checkpoint.from_directory(folder))


def trainable(config: dict[str, Any]) -> None:
    """Train one run, reporting every epoch to Ray Tune with a checkpoint."""
    import ray
    from ray import tune

    settings = {k: config[k] for k in SETTINGS if k in config}
    fit_config = FitConfig.from_dict({k: v for k, v in config.items() if k not in SETTINGS})
    # a scheduler compares trials on every epoch's test score
    fit_config = dataclasses.replace(fit_config.validate(new=True), eval_every=1)
    if settings.get("threads"):
        torch.set_num_threads(int(settings["threads"]))
    data = load_dataset(fit_config.dataset, settings.get("data_dir"), subset=fit_config.subset)
    device = settings.get("device") or ("cuda" if ray.get_gpu_ids() else "cpu")
    trainer = Trainer(
        fit_config, data, device, progress=False, log=lambda msg: None, callbacks=[_TuneReport()]
    )
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / CHECKPOINT, map_location="cpu", weights_only=True)
        trainer.load_state_dict(state)
    trainer.fit()


def load_state(checkpoint) -> dict[str, Any]:
    """The training state in a trial's checkpoint (a ``ray.tune.Checkpoint``), as a run's
    ``checkpoint.pt`` holds it (``config``, ``model``, ``epoch``, ``history``, ...)."""
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / CHECKPOINT, map_location="cpu", weights_only=True)
