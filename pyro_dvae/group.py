"""Many runs of one shape trained as one model: a plate over members.

A sweep's runs often share every shape (the four Logit-normal priors at one latent
size, the seeds of one model). :class:`GroupTrainer` trains M of them in one SVI
step: the networks' weights are stacked along a leading member axis
(:class:`~pyro_dvae.networks.MemberMLP`), the model and guide sample ``z`` inside
``pyro.plate("members", M)`` around the data plate, and the members' own values of
the family's :attr:`~pyro_dvae.families.LatentFamily.member_params` (α, b₀, the
Concrete temperatures) are tensors along that axis. The loss is the sum of the members'
losses, so each member's gradient is its own, and the same compiled ELBO and clipped
Adam (both elementwise per member) train it.

Each member is an ordinary run: a solo :class:`~pyro_dvae.train.Trainer` built from
its config and seed (its initial weights, binarisation and data order are the solo
run's), into which the group copies the member's weights and optimiser state before
evaluating it and writing its checkpoint, so every run command reads it as any
other run. Each member draws its latent noise from a random stream of its own
(:mod:`pyro_dvae.member_streams`), started, stepped and saved as its solo run's torch
stream is: a member follows its solo run's trajectory (to the last bits of batched
arithmetic), whichever group it trains in, and a group of one is the solo run, step
for step. A member whose loss stops being finite is stopped alone, its last good
checkpoint kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

import torch
from pyro import poutine
from tqdm.auto import tqdm

from .callbacks import Callback, CallbackList, ProgressBar
from .config import PARAMS, FitConfig
from .data import Dataset, binarize
from .devices import resolve_device
from .errors import ConfigError, RunDirError, TrainingError
from .families import FAMILIES
from .fileio import first_line
from .inference import SVI, make_elbo
from .member_streams import MemberDraws, MemberStream
from .optim import FusedClippedAdam, member_optim_state, stack_optim_states
from .rundir import RunDir
from .schedules import is_standard, remedies
from .signals import deferred_stop, raise_if_stopped
from .train import COMPILE_NOTE, Trainer, train_epochs, train_parts
from .vae import VAE

#: the ELBOs a group trains with (their per-image particle loss; see :mod:`.pyro_internals`)
GROUP_ELBOS = ("trace", "analytic")
#: fields every member may set for itself, besides its family's ``member_params``
FREE_FIELDS = ("seed",)


def group_key(config: FitConfig) -> tuple | None:
    """Runs with equal keys can train as one group; None: this one trains alone."""
    family = FAMILIES[config.family]
    if not family.groupable or config.guide or config.elbo not in GROUP_ELBOS:
        return None
    if not is_standard(config) or config.gradient != "standard":  # each trains alone
        return None
    free = {*FREE_FIELDS, *family.member_params}
    return tuple((f.name, getattr(config, f.name)) for f in fields(config) if f.name not in free)


def check_group(configs: list[FitConfig]) -> None:
    """Raise :class:`ConfigError` unless ``configs`` can train as one group."""
    if not configs:
        raise ConfigError("a group needs at least one run")
    keys = [group_key(c) for c in configs]
    if keys[0] is None:
        c, why = configs[0], remedies(configs[0])
        raise ConfigError(
            f"a {c.family} run with --elbo {c.elbo}"
            + (" and its own guide" if c.guide else "")
            + "".join(f" and {flag}" for flag in why)
            + (f" and --gradient {c.gradient}" if c.gradient != "standard" else "")
            + f" trains alone (groups take families with {', '.join(GROUP_ELBOS)} ELBOs"
            + (", and no warm-up, free bits or learning-rate schedule)" if why else ")")
        )
    free = {*FREE_FIELDS, *FAMILIES[configs[0].family].member_params}
    for config in configs[1:]:
        differ = [f.name for f in fields(config) if f.name not in free]
        differ = [PARAMS[n].flag for n in differ if getattr(config, n) != getattr(configs[0], n)]
        if differ:  # the fields that may differ, per family, as docs/groups.md lists them
            own = [
                f"{', '.join(PARAMS[n].flag for n in f.member_params)} ({f.name})"
                for f in FAMILIES.values()
                if f.groupable and f.member_params
            ]
            raise ConfigError(
                "the runs of a group are of one family and may differ only in --seed and a "
                f"family's own: {'; '.join(own)}; these differ in {', '.join(differ)}"
            )


def weighted(fn: Callable) -> Callable:
    """``fn(x)`` with every log-density scaled by ``weights`` (M, 1), a unit weight per
    member: the gradient of the loss with respect to them is each member's loss."""

    def run(weights: torch.Tensor, x: torch.Tensor):
        with poutine.scale(scale=weights):
            return fn(x)

    return run


class GroupTrainer:
    """Trains M runs of one shape (see :func:`check_group`) as one model.

    ``configs``: the M runs, which may differ only in ``seed`` and the family's
    ``member_params``; ``dataset``: their data (each member keeps its config's ``subset``);
    ``device``: as for :class:`~pyro_dvae.train.Trainer`; ``run_dirs``: a
    :class:`~pyro_dvae.rundir.RunDir` per config, in order, each written as its solo run's
    would be (``None``: nothing is written); ``progress``: one progress bar of the group's
    steps; ``log``: a function that takes each message line, prefixed with the member's run
    name (``None``: printed through tqdm); ``callbacks``: told of every member's events, with
    that member's trainer as ``trainer``.
    """

    def __init__(
        self,
        configs: list[FitConfig],
        dataset: Dataset,
        device: str | torch.device = "auto",
        run_dirs: list[RunDir] | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        callbacks: Sequence[Callback] = (),
    ):
        for c in configs:
            c.validate()
        check_group(configs)
        self.configs, self.config = configs, configs[0]
        self.device = resolve_device(device)
        self.data = dataset.to(self.device)
        self.progress = progress
        self.log = log or (lambda msg: tqdm.write(msg))
        dirs = run_dirs or [None] * len(configs)
        self.members = [
            Member(c, self.data, self.device, d, progress=False, log=self.log, callbacks=callbacks)
            for c, d in zip(configs, dirs, strict=True)
        ]
        self.data = self.members[0].data  # cut to the configs' subset, as each member's is
        self._draws = MemberDraws([t.stream for t in self.members])
        for m, trainer in enumerate(self.members):
            trainer.log = _prefixed(self.log, self._name(m))
            trainer.extra_summary["group"] = len(configs)
        self.alive = [True] * len(configs)
        self._failed: dict[int, dict[str, Any]] = {}  # a failed member's last summary
        self.epoch = self.step = 0
        self.epochs_planned = self.config.epochs
        self.callbacks = CallbackList([ProgressBar(f"group of {len(configs)}", progress)])
        self._build()

    def _build(self) -> None:
        """The group's model, ELBO and optimiser from the members' current weights."""
        first = self.members[0]
        with torch.random.fork_rng(devices=self._cuda()):
            self.family = type(first.family).for_members(self.configs)
            self.vae = VAE.group(self.family, [t.vae for t in self.members])
            self.vae.to(self.device)
        self.optim = FusedClippedAdam(lr=self.config.lr, clip_norm=self.config.clip_norm)
        self.elbo = make_elbo(
            self.config.elbo,
            self.config.num_particles,
            compile=False,  # fit() decides, as the members' trainers do
            step_inputs=self.family,
            plates=2,
        )
        # Each member's noise from its own stream: the eager step runs the guide under
        # MemberDraws, the compiled step draws its noise under it.
        self.elbo.noise_mode = self._draws
        guide = self.vae.guide
        m = len(self.members)
        if m == 1:  # its loss is the total: the solo step's arithmetic, exactly
            self.weights = None
            self.svi = SVI(self.vae.model, guide, self.optim, self.elbo)
            return
        self.weights = torch.ones(m, 1, device=self.device, dtype=self.data.train.dtype)
        self.weights.requires_grad_(True)
        self.svi = SVI(weighted(self.vae.model), weighted(guide), self.optim, self.elbo)

    def _step(self, x: torch.Tensor) -> torch.Tensor:
        """One SVI step of every member; their losses (mean −ELBO per image). Each member's
        noise comes from its own stream (:class:`MemberDraws`)."""
        if self.weights is None:
            loss = self.svi.step(x)
            return torch.tensor([loss], dtype=torch.float64, device=self.device)
        self.weights.grad = None
        self.svi.step(self.weights, x)
        return self.weights.grad.detach().reshape(-1)

    def _cuda(self) -> list:
        return [self.device] if self.device.type == "cuda" else []

    # ------------------------------------------------------------------ state
    def load_states(self, states: list[dict[str, Any]]) -> None:
        """Resume every member from its checkpoint (all at one epoch)."""
        epochs = {int(s["epoch"]) for s in states}
        if len(epochs) > 1:
            raise TrainingError(
                f"the members' checkpoints are at different epochs ({sorted(epochs)}); "
                "resume them in groups of one epoch"
            )
        for m in range(len(states)):  # each member's noise stream is its own
            try:
                self.members[m].load_state_dict(states[m], note=m == 0)  # one note a group
            except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
                where = self.members[m].run_dir
                raise RunDirError(
                    f"checkpoint in {where.path if where else f'member {m}'} does not fit "
                    f"this model: {first_line(e)}"
                ) from None
        self.epoch, self.step = self.members[0].epoch, self.members[0].step
        self._build()
        self.optim.set_state(stack_optim_states([s["optim"] for s in states]))

    def _sync_member(self, m: int) -> None:
        """Copy member ``m``'s weights and optimiser state into its solo trainer."""
        trainer = self.members[m]
        self.vae.encoder.copy_member_to(m, trainer.vae.encoder)
        self.vae.decoder.copy_member_to(m, trainer.vae.decoder)
        trainer.optim.set_state(member_optim_state(self.optim.get_state(), m))
        trainer.step = self.step
        trainer.family.set_step(max(self.step - 1, 0))  # as a solo run's, after its last step

    # ------------------------------------------------------------------ training
    def steps_per_epoch(self) -> int:
        """Steps in an epoch: the training images over the batch size, rounded up."""
        return self.members[0].steps_per_epoch()

    def train_epoch(self) -> list[dict[str, float]]:
        """One epoch of every member; each gets its own binarisation and order."""
        x_grey, size = self.data.train, self.config.batch_size
        n, m = x_grey.shape[0], len(self.members)
        x_bin = torch.stack([binarize(x_grey, t.data_gen) for t in self.members])
        perms = [torch.randperm(n, generator=t.data_gen, device=self.device) for t in self.members]
        perm = torch.stack(perms)
        rows = torch.arange(m, device=self.device).unsqueeze(1)
        loss_sum = torch.zeros(m, device=self.device, dtype=torch.float64)
        recon_sum = torch.zeros(m, device=self.device)  # as a solo run sums it
        bad_step = torch.full((m,), -1, device=self.device, dtype=torch.long)
        for start in range(0, n, size):
            raise_if_stopped()
            idx = perm[:, start : start + size]
            self.family.set_step(self.step)
            losses = self._step(x_bin[rows, idx])
            bad = ~torch.isfinite(losses) & (bad_step < 0)
            bad_step = torch.where(bad, self.step, bad_step)
            loss_sum += losses * idx.shape[1]
            recon_sum += self.elbo.last_recon * idx.shape[1]
            self.step += 1
            self._tell_step(losses)
        loss, recon = [v / n for v in loss_sum.tolist()], [v / n for v in recon_sum.tolist()]
        self._stop_failed(bad_step.tolist())
        return [train_parts(self.elbo, lo, r) for lo, r in zip(loss, recon, strict=True)]

    def _tell_step(self, losses: torch.Tensor) -> None:
        """The step's callbacks: the group's (its progress bar) and each live member's."""
        self.callbacks.step(self, lambda: float(losses.mean()))
        for m, trainer in enumerate(self.members):
            if self.alive[m] and trainer.callbacks.stepping:
                trainer.step = self.step
                trainer.callbacks.step(trainer, lambda m=m: float(losses[m]))

    def _stop_failed(self, bad_step: list[int]) -> None:
        for m, step in enumerate(bad_step):
            if step >= 0 and self.alive[m]:
                self.alive[m] = False
                trainer = self.members[m]
                error = (
                    f"the loss became nan at epoch {self.epoch + 1}, step {step + 1}; "
                    f"training stopped and the checkpoint of epoch {trainer.epoch} is kept"
                )
                self.log(f"{self._name(m)}: {error} (the other members go on)")
                with deferred_stop(ignore=True):
                    self._failed[m] = trainer.finish("failed", error)
        if not any(self.alive):
            raise TrainingError("every member of the group failed (see each run's summary)")

    def _name(self, m: int) -> str:
        run_dir = self.members[m].run_dir
        return run_dir.path.name if run_dir is not None else f"member {m}"

    def fit(self, epochs: int | None = None) -> list[dict[str, Any]]:
        """Train every member up to ``epochs`` (default: the config's); their summaries."""
        self.epochs_planned = epochs or self.config.epochs
        for trainer in self.members:
            trainer.begin(self.epochs_planned)
        self.elbo.compile = all(t.elbo.compile for t in self.members)
        if self.elbo.compile:
            self.log(COMPILE_NOTE)
        self.callbacks.fit_start(self)

        def epoch() -> None:
            t0 = time.perf_counter()
            records = self.train_epoch()
            self._commit(records, time.perf_counter() - t0)

        def finish(status: str, reason: str | None) -> list[dict[str, Any]]:
            try:
                return self._summaries(status, reason)
            finally:
                self.callbacks.fit_end(self, status, {"status": status})

        more = lambda: self.epoch < self.epochs_planned  # noqa: E731
        return train_epochs(epoch, more, finish, lambda: self.epoch)

    def _commit(self, records: list[dict[str, float]], seconds: float) -> None:
        """Each live member's epoch, evaluated and checkpointed as a solo run's is. The
        checkpoints are written together, after every evaluation, with stop signals held
        back, so that a signal leaves every member at the same epoch."""
        ready = []
        for m, (trainer, parts) in enumerate(zip(self.members, records, strict=True)):
            if not self.alive[m]:
                continue
            self._sync_member(m)
            ready.append((trainer, trainer.epoch_record(parts, seconds)))
        with deferred_stop():  # a signal held back here is raised after the epoch counts
            for trainer, record in ready:
                trainer.commit_epoch(record)
            self.epoch += 1

    def _summaries(self, status: str, reason: str | None) -> list[dict[str, Any]]:
        out = []
        for m, trainer in enumerate(self.members):
            if not self.alive[m]:
                out.append(self._failed[m])
                continue
            summary = trainer.finish(status, reason)
            if summary is not None:
                out.append(summary)
        return out


def _prefixed(log: Callable[[str], None], name: str) -> Callable[[str], None]:
    return lambda msg: log(f"{name}: {msg}")


class Member(Trainer):
    """A group's member: a solo :class:`Trainer` whose torch noise stream is its own
    :class:`MemberStream`, saved in and restored from its checkpoint where a solo run's
    (torch's global one) is, so that its run directory resumes alone or in any group."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stream = MemberStream(self.device)

    def state_dict(self) -> dict[str, Any]:
        with self.stream.as_global():
            return super().state_dict()

    def load_state_dict(self, state: dict[str, Any], note: bool = True) -> None:
        with self.stream.as_global():
            super().load_state_dict(state, note)
            self.stream.take_global()
