"""Comparing ELBO estimators at fixed parameters: loss spread, gradient variance and SNR, time."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from .families import FAMILIES, make_family
from .inference import ELBOS, kl_kinds
from .iwae_bound import effective_sample_size
from .iwae_objective import GRADIENTS, IWAEELBO
from .vae import VAE


@dataclass
class Estimator:
    """One way of estimating the −ELBO (or a bound) of a batch, per image."""

    name: str
    description: str
    make: Callable[[], Any]  # an object with ``differentiable_loss(model, guide, x)``
    vae_for: Callable[[VAE], VAE] = lambda vae: vae  # the model/guide it scores


def variant_vae(vae: VAE, changes: dict[str, Any]) -> VAE:
    """The same networks under one of the family's variants (its config changed so)."""
    family = make_family(replace(vae.family.config, **changes))
    return vae.with_family(family)


class IWAE:
    """The importance-weighted bound with ``k`` samples, as a loss: ``−log (1/k) Σ w_i``."""

    def __init__(self, k: int):
        self.k = k

    def differentiable_loss(self, model: Callable, guide: Callable, x: torch.Tensor):
        """Summed over the images, as ``Trace_ELBO``'s (``IWAEELBO`` gives their mean)."""
        return IWAEELBO(num_particles=self.k).differentiable_loss(model, guide, x) * x.shape[0]


def default_estimators(vae: VAE, num_particles: int = 10, iwae_k=(5, 50)) -> list[Estimator]:
    ests = [
        Estimator("trace", "Trace_ELBO, 1 sample: Monte Carlo KL", lambda: Trace_ELBO()),
        Estimator(
            f"trace-{num_particles}",
            f"Trace_ELBO, {num_particles} samples (vectorised)",
            lambda: Trace_ELBO(
                num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1
            ),
        ),
        Estimator(
            "analytic",
            "TraceMeanField_ELBO, 1 sample: analytic KL where registered",
            lambda: TraceMeanField_ELBO(),
        ),
    ]
    variants = vae.family.variants if vae.guide_module is None else {}
    for name, changes in variants.items():
        analytic = ELBOS[changes.get("elbo", "trace")][1]
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in changes.items())
        ests.append(
            Estimator(
                name,
                f"the family's variant {flags}",
                TraceMeanField_ELBO if analytic else Trace_ELBO,
                lambda vae, changes=changes: variant_vae(vae, changes),
            )
        )
    for k in iwae_k:
        ests.append(
            Estimator(
                f"iwae-{k}",
                f"IWAE bound, k = {k} samples",
                lambda k=k: IWAE(k),
            )
        )
    return ests


def clock(like: torch.Tensor) -> float:
    """``time.perf_counter()`` once the work queued on ``like``'s device has run (CUDA is async)."""
    if like.is_cuda:
        torch.cuda.synchronize(like.device)
    return time.perf_counter()


def estimate_bar(total: int, progress: bool):
    """A tqdm bar of ``total`` estimates, named by the estimator at work (``set_description``),
    gone once closed, as ``fit``'s bar of steps."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="estimate", disable=not progress, leave=False, dynamic_ncols=True)


def _flat_grads(
    loss: torch.Tensor, groups: dict[str, list[torch.Tensor]]
) -> dict[str, torch.Tensor]:
    params = [p for ps in groups.values() for p in ps]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    out, i = {}, 0
    for name, ps in groups.items():
        parts = []
        for p in ps:
            g = grads[i]
            parts.append((torch.zeros_like(p) if g is None else g).reshape(-1))
            i += 1
        out[name] = torch.cat(parts)
    return out


def compare(
    vae: VAE,
    x: torch.Tensor,
    estimators: list[Estimator] | None = None,
    repeats: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """For each estimator, ``repeats`` estimates on the same batch ``x`` at fixed parameters.

    ``vae``: the model whose gradients are measured (its weights are not changed); ``x``: a
    batch of binary images (batch, D) on its device; ``estimators``: what to compare
    (``None``: :func:`default_estimators`: Trace_ELBO with 1 and 10 samples,
    TraceMeanField_ELBO, the family's variants, IWAE with k = 5 and 50); ``seed``: torch's
    global seed, set before each estimator's repeats; ``progress``: a bar of the estimates.

    Returns a dict per estimator (``estimator``, ``description``, ``kl``: each latent site's
    KL kind, ``repeats``): mean and standard deviation of the per-image loss
    (``loss_mean``, ``loss_sd``); the gradient variance summed over parameters
    (``grad_var_all``, ``grad_var_encoder``, ``grad_var_decoder``); the mean gradient
    signal-to-noise ratio |E g| / sd(g) over parameters (``grad_snr_*``); and ``seconds``
    per estimate.
    """
    estimators = estimators or default_estimators(vae)
    groups = {
        "encoder": vae.encoder_parameters(),
        "decoder": list(vae.decoder.parameters()),
    }
    rows = []
    with estimate_bar(len(estimators) * repeats, progress) as bar:
        for est in estimators:
            bar.set_description(est.name)
            rows.append(_compare_one(vae, x, est, groups, repeats, seed, bar))
    return rows


def _compare_one(vae, x, est: Estimator, groups, repeats: int, seed: int, bar) -> dict[str, Any]:
    """:func:`compare`'s row of one estimator."""
    target = est.vae_for(vae)
    elbo = est.make()
    analytic = isinstance(elbo, TraceMeanField_ELBO)
    with pyro.validation_enabled(False):
        kinds = kl_kinds(target.model, target.guide, x[:2], analytic=analytic)
    torch.manual_seed(seed)
    losses, grads = [], {k: [] for k in (*groups, "all")}
    elapsed = 0.0
    for _ in range(repeats):
        t0 = clock(x)
        with pyro.validation_enabled(False):
            loss = elbo.differentiable_loss(target.model, target.guide, x) / x.shape[0]
        g = _flat_grads(loss, groups)
        elapsed += clock(x) - t0
        losses.append(float(loss.detach()))
        for k, v in g.items():
            grads[k].append(v)
        grads["all"].append(torch.cat([g[k] for k in groups]))
        bar.update(1)
    row = {
        "estimator": est.name,
        "description": est.description,
        "kl": kinds,
        "repeats": repeats,
        "loss_mean": float(torch.tensor(losses).mean()),
        "loss_sd": float(torch.tensor(losses).std()),
        "seconds": elapsed / repeats,
    }
    for k, vs in grads.items():
        stack = torch.stack(vs).double()
        row[f"grad_var_{k}"] = float((stack.std(0) ** 2).sum())
        row[f"grad_snr_{k}"] = gradient_snr(stack)
    return row


def gradient_snr(stack: torch.Tensor) -> float:
    """The mean over parameters of |E g| / sd(g), from estimates ``stack`` (repeats, params);
    parameters whose estimates do not vary are left out (NaN if none vary)."""
    mean, sd = stack.mean(0), stack.std(0)
    nonzero = sd > 0
    return float((mean.abs()[nonzero] / sd[nonzero]).mean()) if nonzero.any() else math.nan


#: the particle counts of Rainforth et al.'s Figure 1 that ``compare-estimators`` measures
SNR_K = (1, 5, 50, 500)


def iwae_gradient_snr(
    vae: VAE,
    x: torch.Tensor,
    ks: tuple[int, ...] = SNR_K,
    gradients: tuple[str, ...] = GRADIENTS,
    repeats: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """The encoder's and the decoder's gradient SNR (:func:`gradient_snr`) of the IWAE bound
    with each of ``gradients`` and K particles, on the batch ``x`` at fixed parameters
    (Rainforth et al., 2018, Figure 1): one row per (gradient, K), with seconds per estimate
    and ``ess``, the images' mean effective sample size of the K weights (one more draw):
    DReG's SNR rises with K only once the weights are spread over many draws. ``progress``:
    a bar of the estimates."""
    groups = {"encoder": vae.encoder_parameters(), "decoder": list(vae.decoder.parameters())}
    ess = {}  # how degenerate the weights are at each K: the same draws for every gradient
    for k in ks:
        torch.manual_seed(seed)
        with pyro.validation_enabled(False):
            ess[k] = float(effective_sample_size(vae.model, vae.guide, x, k).mean())
    rows = []
    with estimate_bar(len(gradients) * len(ks) * repeats, progress) as bar:
        for gradient in gradients:
            for k in ks:
                bar.set_description(f"IWAE {gradient}, K={k}")
                elbo = IWAEELBO(num_particles=k, gradient=gradient)
                torch.manual_seed(seed)
                estimates: dict[str, list[torch.Tensor]] = {name: [] for name in groups}
                elapsed = 0.0
                for _ in range(repeats):
                    for p in (p for ps in groups.values() for p in ps):
                        p.grad = None
                    t0 = clock(x)
                    with pyro.validation_enabled(False):
                        elbo.loss_and_grads(vae.model, vae.guide, x)
                    elapsed += clock(x) - t0
                    for name, ps in groups.items():
                        flat = [torch.zeros_like(p) if p.grad is None else p.grad for p in ps]
                        estimates[name].append(torch.cat([g.reshape(-1) for g in flat]))
                    bar.update(1)
                row: dict[str, Any] = {"gradient": gradient, "k": k, "repeats": repeats}
                for name, vs in estimates.items():
                    row[f"snr_{name}"] = gradient_snr(torch.stack(vs).double())
                row["seconds"] = elapsed / repeats
                row["ess"] = ess[k]
                rows.append(row)
    for p in (p for ps in groups.values() for p in ps):
        p.grad = None
    return rows


__all__ = [
    "IWAE",
    "Estimator",
    "clock",
    "compare",
    "default_estimators",
    "estimate_bar",
    "gradient_snr",
    "iwae_gradient_snr",
]


#: training objectives a run can use: name → FitConfig changes
TRAINABLE = {
    "trace": {"elbo": "trace", "num_particles": 1},
    "trace-N": {"elbo": "trace"},  # num_particles given by the caller
    "analytic": {"elbo": "analytic", "num_particles": 1},
}  # and each family's variants (Concrete: discrete-kl)


def train_side_by_side(
    config,
    dataset,
    epochs: int,
    num_particles: int = 10,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
    guide: str | None = None,
    progress: bool = False,
) -> dict[str, list[float]]:
    """Train one model per training objective from the same seed; the test −ELBO per epoch.

    ``guide`` is the import spec of the guide to train (the caller named it); a
    config that holds one from a run folder is not imported by itself.

    Every model is scored with the same estimator (one-sample Monte Carlo −ELBO with the
    relaxed densities, the paper's), so the curves compare what each objective learns.
    ``progress``: each model's bar of training steps, as ``fit``'s.
    """
    from .inference import EVAL_SEED, evaluate_elbo, seeded
    from .train import Trainer

    objectives = {**TRAINABLE, **FAMILIES[config.family].variants}
    curves: dict[str, list[float]] = {}
    for name, changes in objectives.items():
        changes = {"num_particles": 1, **changes}
        if name == "trace-N":
            changes["num_particles"] = num_particles
        cfg = replace(config, epochs=epochs, eval_every=epochs, guide=guide or "", **changes)
        label = f"trace-{num_particles}" if name == "trace-N" else name
        trainer = Trainer(cfg, dataset, device, progress=progress, log=lambda m: None, guide=guide)
        curve = []
        for epoch in range(1, epochs + 1):
            trainer.fit(epochs=epoch)
            with seeded(EVAL_SEED, trainer.device):
                x = trainer.data.test
                score = evaluate_elbo(trainer.vae.model, trainer.vae.guide, x, analytic=False)
            curve.append(score["loss"])
            if log:
                log(f"{label}: epoch {epoch}/{epochs}, test -ELBO {score['loss']:.2f}")
        curves[label] = curve
    return curves
