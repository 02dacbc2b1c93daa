"""The remedies for posterior collapse, off by default: KL warm-up, free bits, and a
learning-rate schedule (``--kl-warmup``, ``--free-bits``, ``--lr-schedule``).

With either KL option on, the training loss of one particle is, summed over the B images of
a batch (the ELBO then divides by B as it does the −ELBO),

    Σ_b −log p(x_b | z_b)  +  β · B · Σ_g max(λ, (1/B) Σ_b KL_bg)

where g runs over the latent's groups (a unit of a vector latent, a categorical variable of
the Concrete; a site that is not a product of such parts is one group), KL_bg is the
estimator's KL of group g for image b (analytic with ``--elbo analytic`` where one is
registered, else log q(z) − log p(z) at the sample), β = min(1, step / (warm-up epochs ·
steps per epoch)) (Sønderby et al. 2016) and λ the free bits (Kingma et al. 2016; the
max is taken only when λ > 0). A group under λ nats gets no gradient from its KL. Evaluation
scores the plain −ELBO. Every value follows from the global step, which the checkpoint holds,
so a resumed run repeats the steps an uninterrupted one takes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pyro.distributions.kl import kl_divergence
from torch.distributions import Independent

from .errors import ConfigError

LR_SCHEDULES = ("constant", "step", "cosine")
#: the ELBOs whose particle loss this objective replaces (see :mod:`.pyro_internals`)
KL_OBJECTIVE_ELBOS = ("trace", "analytic")


def uses_kl_objective(config) -> bool:
    return bool(config.kl_warmup or config.free_bits)


def is_standard(config) -> bool:
    """Whether a run trains as the paper's: no warm-up, no free bits, a constant rate."""
    return not uses_kl_objective(config) and config.lr_schedule == "constant"


def remedies(config) -> list[str]:
    """The options of this module a run used, as flags (``--kl-warmup 10``)."""
    given = []
    if config.kl_warmup:
        given.append(f"--kl-warmup {config.kl_warmup}")
    if config.free_bits:
        given.append(f"--free-bits {config.free_bits:g}")
    if config.lr_schedule != "constant":
        given.append(f"--lr-schedule {config.lr_schedule}")
    return given


def check_schedules(config) -> None:
    """Raise :class:`ConfigError` where a KL option cannot apply to the run's ELBO."""
    if uses_kl_objective(config) and config.elbo not in KL_OBJECTIVE_ELBOS:
        flag = "--kl-warmup" if config.kl_warmup else "--free-bits"
        raise ConfigError(
            f"{flag} reweights the KL term of --elbo trace or analytic; --elbo {config.elbo} "
            "has no separate KL term to weight (leave the option out, or train with trace)"
        )


def check_reparameterized(config, reparameterized: bool) -> bool:
    """``reparameterized``, after refusing the KL options for a guide with score-function
    sites (whose surrogate loss is not the loss itself, which this objective computes)."""
    if uses_kl_objective(config) and not reparameterized:
        raise ConfigError(
            "--kl-warmup and --free-bits need a reparameterised latent (the "
            f"{config.family} guide samples without rsample here)"
        )
    return reparameterized


def check_resume(config, changes: dict[str, Any]) -> None:
    """A learning-rate schedule spans the planned epochs: more epochs would reshape it."""
    epochs = changes.get("epochs", config.epochs)
    if config.lr_schedule != "constant" and epochs != config.epochs:
        raise ConfigError(
            f"--lr-schedule {config.lr_schedule} spans the run's {config.epochs} epochs; "
            f"resuming with --epochs {epochs} would change it (resume with the same --epochs)"
        )


def kl_weight(step: int, warmup_steps: int) -> float:
    """β at ``step`` (0-based): rises linearly from 0 to 1 over ``warmup_steps``."""
    return 1.0 if warmup_steps <= 0 else min(1.0, step / warmup_steps)


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """The learning rate of update ``step`` (0-based) as a fraction of ``--lr``."""
    if schedule == "constant" or total_steps <= 0:
        return 1.0
    if schedule == "step":
        return 0.1 ** ((step >= total_steps / 2) + (step >= 3 * total_steps / 4))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")


def group_kl(q, p, z: torch.Tensor, analytic: bool) -> torch.Tensor:
    """The KL of each latent group for each image: shape (images…, groups…), the site's
    batch shape followed by its groups (a vector latent's units, a Concrete's variables)."""
    while isinstance(q, Independent) and isinstance(p, Independent):
        if q.reinterpreted_batch_ndims != p.reinterpreted_batch_ndims:
            break
        q, p = q.base_dist, p.base_dist
    if analytic:
        try:
            return kl_divergence(q, p)
        except NotImplementedError:
            pass
    return q.log_prob(z) - p.log_prob(z)


def free_bits_kl(kl: torch.Tensor, batch_dims: int, free_bits: float) -> torch.Tensor:
    """Σ_g max(λ, mean over the batch of KL_g), times the batch size: the KL term of a
    batch under free bits (``kl``: per image and group, the first ``batch_dims`` dims the
    images'); with λ = 0 the plain sum."""
    if free_bits <= 0:
        return kl.sum()
    images = math.prod(kl.shape[:batch_dims])
    per_group = kl.reshape(images, -1).mean(0)
    return images * per_group.clamp_min(free_bits).sum()


class KLObjective:
    """The training loss with a KL weight β and free bits λ; β enters a compiled ELBO as a
    step input (like an annealed temperature), not a constant frozen at the first step."""

    def __init__(self, warmup_steps: int, free_bits: float, analytic: bool):
        self.warmup_steps, self.free_bits, self.analytic = warmup_steps, free_bits, analytic
        self.beta = kl_weight(0, warmup_steps)
        self._beta_input: torch.Tensor | None = None

    def set_step(self, step: int) -> None:
        self.beta = kl_weight(step, self.warmup_steps)

    def step_inputs(self, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (like.new_tensor(self.beta),)

    def use_step_inputs(self, inputs) -> None:
        self._beta_input = inputs[0] if inputs else None

    def particle_loss(self, model_trace, guide_trace) -> torch.Tensor:
        """The loss of one particle, summed over its images."""
        beta = self._beta_input if self._beta_input is not None else self.beta
        recon = kl = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                recon = recon - site["fn"].log_prob(site["value"]).sum()
                continue
            q = guide_trace.nodes[name]["fn"]
            per_group = group_kl(q, site["fn"], site["value"], self.analytic)
            kl = kl + free_bits_kl(per_group, len(q.batch_shape), self.free_bits)
        return recon + beta * kl


class StepInputs:
    """Several sources of per-step graph inputs (a family's temperature, the KL weight) as
    the one ``step_inputs`` a compiled ELBO reads (see :mod:`.compiled_elbo`)."""

    def __init__(self, *parts: Any):
        self.parts = [p for p in parts if p is not None]
        self._sizes = [0] * len(self.parts)

    def step_inputs(self, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        groups = [tuple(p.step_inputs(like)) for p in self.parts]
        self._sizes = [len(g) for g in groups]
        return tuple(t for g in groups for t in g)

    def use_step_inputs(self, inputs) -> None:
        start = 0
        for part, size in zip(self.parts, self._sizes, strict=True):
            part.use_step_inputs(None if inputs is None else tuple(inputs[start : start + size]))
            start += size


class Schedules:
    """What a run's schedules set before each step: the KL objective's β and the
    optimiser's learning rate, from the global step and the planned epochs."""

    def __init__(self, config, steps_per_epoch: int):
        self.config = config
        self.total_steps = config.epochs * steps_per_epoch
        self.objective = None
        if uses_kl_objective(config):
            from .inference import ELBOS

            analytic = ELBOS[config.elbo][1]
            warmup = config.kl_warmup * steps_per_epoch
            self.objective = KLObjective(warmup, config.free_bits, analytic)
        self.lr = config.lr

    def set_step(self, step: int, optim) -> None:
        if self.objective is not None:
            self.objective.set_step(step)
        if self.config.lr_schedule != "constant":
            self.lr = self.config.lr * lr_factor(self.config.lr_schedule, step, self.total_steps)
            optim.set_lr(self.lr)

    def state(self) -> dict[str, float]:
        """What an epoch's record adds: the KL weight and the rate of its last step."""
        out = {}
        if self.config.kl_warmup:
            out["kl_weight"] = self.objective.beta
        if self.config.lr_schedule != "constant":
            out["lr"] = self.lr
        return out
