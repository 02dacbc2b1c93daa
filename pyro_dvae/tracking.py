"""Experiment tracking: TensorBoard and MLflow as callbacks (``--log tensorboard,mlflow``).

Each is an optional extra (``pip install "pyro-dvae[tensorboard]"``, ``"[mlflow]"``); a run
that asks for a missing one is refused before it starts. Both log every row of
``metrics.jsonl`` (step = epoch), the training loss every ``every_n_steps`` steps, the run's
config as hyperparameters or parameters, and, when the run has a folder, the pictures of
``pyro-dvae show`` at the end (drawn into the run's ``pictures/``, as ``show`` draws them).
A resumed run goes on where it stopped: TensorBoard in the same log folder, MLflow in the
same MLflow run (its id is kept in the run folder's ``mlflow.json``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .callbacks import Callback
from .errors import ConfigError
from .fileio import atomic_write_text

if TYPE_CHECKING:
    from .train import Trainer

#: the tracker names ``--log`` takes, with the module each needs and the extra that brings it
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}
#: the training loss is logged every this many steps
STEP_EVERY = 50
TENSORBOARD_FOLDER = "tensorboard"
MLFLOW_FILE = "mlflow.json"
EXPERIMENT = "pyro-dvae"


def tracker_names(spec: str) -> list[str]:
    """``"tensorboard,mlflow"`` → its names, checked: known, and their package installed."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(
                f"unknown tracker {name!r} for --log; choose from {', '.join(TRACKERS)} "
                "(several: comma-separated)"
            )
        module, extra = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                f'--log {name} needs the {module} package: pip install "pyro-dvae[{extra}]"'
            )
    return list(dict.fromkeys(names))


def trackers(config) -> list[Callback]:
    """The tracking callbacks a config's ``log`` field asks for."""
    made = {"tensorboard": TensorBoardLogger, "mlflow": MLflowLogger}
    return [made[name]() for name in tracker_names(config.log)]


def numbers(record: dict[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a metrics row (the epoch aside)."""
    return {
        k: float(v)
        for k, v in record.items()
        if k != "epoch"
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
    }


def hyperparameters(trainer: Trainer) -> dict[str, Any]:
    """The run's config, values as TensorBoard and MLflow take them."""
    kinds = int | float | str | bool
    return {k: v if isinstance(v, kinds) else str(v) for k, v in trainer.config.to_dict().items()}


def draw_pictures(trainer: Trainer) -> list[Path]:
    """``pyro-dvae show``'s pictures of the trainer's run, in its ``pictures/`` folder."""
    from .run_pictures import SHOW_DEFAULTS, show_run

    if trainer.run_dir is None or not trainer.run_dir.checkpoint_path.is_file():
        return []
    out = trainer.run_dir.path / "pictures"
    options = {**SHOW_DEFAULTS, "test": trainer.data.test.cpu()}
    written, _ = show_run(trainer.run_dir.path, out, options, ["pyro-dvae", "show", "RUN"])
    return [p for p in written if p.suffix == ".png"]


class TensorBoardLogger(Callback):
    """Scalars per epoch (tags as in ``metrics.jsonl``) and per step (``step/train_loss``),
    the config as hyperparameters, the pictures at the end. ``log_dir``: default the run
    folder's ``tensorboard/``, else TensorBoard's own default (``runs/...``); one given here
    holds a folder per run (named as the run folder), so one logger can watch a group.
    ``pictures``: when a run with a folder finishes, draw ``pyro-dvae show``'s pictures into
    its ``pictures/`` and log them as images."""

    every_n_steps = STEP_EVERY

    def __init__(self, log_dir: str | Path | None = None, pictures: bool = True):
        self.log_dir, self.pictures = log_dir, pictures
        self.writers: dict[int, Any] = {}  # per trainer watched (a group's members)

    def _folder(self, trainer: Trainer) -> str | None:
        if self.log_dir is not None:
            name = trainer.run_dir.path.name if trainer.run_dir is not None else ""
            return str(Path(self.log_dir) / name)
        if trainer.run_dir is not None:
            return str(trainer.run_dir.path / TENSORBOARD_FOLDER)
        return None

    def on_fit_start(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        writer = self.writers[id(trainer)] = SummaryWriter(log_dir=self._folder(trainer))
        metrics = {"train_loss": math.nan, "test_loss": math.nan}
        for summary in hparams(hyperparameters(trainer), metrics):
            writer.file_writer.add_summary(summary)
        # a resumed run: its epochs so far (trained without this logger, or cut off by a
        # kill between a checkpoint and its log; a value logged twice is the same value)
        for record in trainer.history:
            self.on_epoch_end(trainer, record)

    def on_step(self, trainer: Trainer, loss: float) -> None:
        writer = self.writers.get(id(trainer))
        if writer is not None and math.isfinite(loss):
            writer.add_scalar("step/train_loss", loss, trainer.step)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        writer = self.writers.get(id(trainer))
        if writer is None:
            return
        for key, value in numbers(record).items():
            writer.add_scalar(key, value, record["epoch"])
        writer.flush()

    def on_fit_end(self, trainer: Trainer, status: str, summary: dict[str, Any]) -> None:
        writer = self.writers.pop(id(trainer), None)
        if writer is None:
            return
        try:
            if self.pictures and status == "finished":
                from matplotlib.image import imread

                for path in draw_pictures(trainer):
                    image = imread(path)[..., :3]
                    writer.add_image(path.stem, image, trainer.epoch, dataformats="HWC")
        finally:
            writer.close()


class MLflowLogger(Callback):
    """One MLflow run per pyro-dvae run: the config as parameters, every metrics row
    (step = epoch), the training loss per step (``step_train_loss``), and at the end the run
    folder's JSON files and pictures as artifacts. ``tracking_uri``: default
    ``$MLFLOW_TRACKING_URI``, else MLflow's local default (``mlflow.db`` and ``mlruns/`` in
    the working folder). ``experiment``: the MLflow experiment's name, made if missing;
    ``pictures``: when a run with a folder finishes, draw ``pyro-dvae show``'s pictures into
    its ``pictures/`` and log them as artifacts."""

    every_n_steps = STEP_EVERY

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = EXPERIMENT,
        pictures: bool = True,
    ):
        self.tracking_uri, self.experiment, self.pictures = tracking_uri, experiment, pictures
        self.client = None
        self.runs: dict[int, str] = {}  # the MLflow run of each trainer watched

    def on_fit_start(self, trainer: Trainer) -> None:
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # its database set-up notes
        self.client = self.client or MlflowClient(self.tracking_uri)
        run_id = self._stored_run(trainer)
        if run_id is None:
            run_id = self._new_run(trainer)
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.runs[id(trainer)] = run_id
        # what the MLflow run lacks: epochs trained before --log mlflow was asked for, or
        # one a kill cut off between its checkpoint and this log
        logged = self.client.get_metric_history(run_id, "train_loss")
        last = max((m.step for m in logged), default=0)
        for record in trainer.history:
            if record["epoch"] > last:
                self.on_epoch_end(trainer, record)

    def _stored_run(self, trainer: Trainer) -> str | None:
        """The MLflow run this run folder logged to before, if it is in this store."""
        if trainer.run_dir is None:
            return None
        path = trainer.run_dir.path / MLFLOW_FILE
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            run = self.client.get_run(stored["run_id"])
        except Exception:  # none yet, another store, or a damaged file: a new MLflow run
            return None
        return run.info.run_id

    def _new_run(self, trainer: Trainer) -> str:
        from mlflow.entities import Param

        experiment = self.client.get_experiment_by_name(self.experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(self.experiment)
        )
        name = trainer.run_dir.path.name if trainer.run_dir is not None else None
        tags = {"pyro_dvae.run_dir": str(trainer.run_dir.path)} if trainer.run_dir else {}
        run_id = self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        params = [Param(k, str(v)) for k, v in hyperparameters(trainer).items()]
        self.client.log_batch(run_id, params=params)
        if trainer.run_dir is not None:
            stored = {"tracking_uri": self.client.tracking_uri, "run_id": run_id}
            atomic_write_text(trainer.run_dir.path / MLFLOW_FILE, json.dumps(stored) + "\n")
        return run_id

    def on_step(self, trainer: Trainer, loss: float) -> None:
        run_id = self.runs.get(id(trainer))
        if run_id is not None and math.isfinite(loss):
            self.client.log_metric(run_id, "step_train_loss", loss, step=trainer.step)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        run_id = self.runs.get(id(trainer))
        if run_id is None:
            return
        from mlflow.entities import Metric

        stamp = int(1000 * time.time())
        metrics = [Metric(k, v, stamp, record["epoch"]) for k, v in numbers(record).items()]
        self.client.log_batch(run_id, metrics=metrics)

    def on_fit_end(self, trainer: Trainer, status: str, summary: dict[str, Any]) -> None:
        run_id = self.runs.pop(id(trainer), None)
        if run_id is None:
            return
        try:
            if trainer.run_dir is not None:
                for name in ("config.json", "summary.json", "metrics.jsonl", "evaluation.json"):
                    if (trainer.run_dir.path / name).is_file():
                        self.client.log_artifact(run_id, str(trainer.run_dir.path / name))
                if self.pictures and status == "finished":
                    for path in draw_pictures(trainer):
                        self.client.log_artifact(run_id, str(path), "pictures")
        finally:
            mlflow_status = {"finished": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
            self.client.set_terminated(run_id, status=mlflow_status)
