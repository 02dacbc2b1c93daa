"""Gradient estimators for a categorical latent, measured against the exact gradient.

At fixed parameters and one batch, ``TraceEnum_ELBO`` gives the exact gradient of the mean
ELBO (a sum over all K^M codes). Each estimator then draws its gradient ``repeats`` times;
its mean squared error to the exact one splits into bias² + variance. The estimators: the
score function (``Trace_ELBO``, no baseline), ``TraceGraph_ELBO`` without and with the
decaying-average baseline (unbiased; variance is their cost), and the Concrete relaxation at
several temperatures: the same networks reading relaxed codes, with the categoricals'
analytic KL (Jang et al.) — low variance, but a biased estimate of this model's gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyro
import torch

from .config import FitConfig
from .estimators import clock, variant_vae
from .families import make_family
from .inference import make_elbo
from .table import Table
from .vae import VAE

#: the relaxation's temperatures compared by default
TEMPERATURES = (0.1, 0.2, 0.5, 1.0, 2.0)
#: exact gradients timed (it is deterministic: one computes it)
EXACT_TIMINGS = 5


@dataclass
class GradientEstimator:
    """One estimator of the categorical model's gradient: an ELBO and the twin it runs."""

    name: str
    description: str
    vae: VAE
    elbo: Any  # a pyro-dvae ELBO: ``loss_and_grads(model, guide, x)``
    temperature: float | None = None


def discrete_estimators(vae: VAE, temperatures=TEMPERATURES) -> list[GradientEstimator]:
    """The score-function estimators and the relaxation at each temperature."""
    factorised = variant_vae(vae, {"elbo": "tracegraph"})
    ests = [
        GradientEstimator(
            "score-function", "Trace_ELBO: REINFORCE, no baseline", factorised, make_elbo("trace")
        ),
        GradientEstimator(
            "tracegraph",
            "TraceGraph_ELBO, no baseline",
            factorised,
            make_elbo("tracegraph", baseline="none"),
        ),
        GradientEstimator(
            "tracegraph-decaying",
            "TraceGraph_ELBO, decaying-average baseline",
            factorised,
            make_elbo("tracegraph", baseline="decaying"),
        ),
    ]
    cfg = vae.family.config
    for tau in temperatures:
        relaxed = FitConfig(
            family="concrete",
            latent_dim=cfg.latent_dim,
            categories=cfg.categories,
            temperature=tau,
            kl="discrete",
            elbo="analytic",
        )
        ests.append(
            GradientEstimator(
                f"concrete-{tau:g}",
                f"Concrete relaxation, τ = {tau:g}, analytic categorical KL (Jang et al.)",
                vae.with_family(make_family(relaxed.validate())),
                make_elbo("analytic"),
                tau,
            )
        )
    return ests


def _gradient(vae: VAE, elbo, x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    for p in params:
        p.grad = None
    elbo.loss_and_grads(vae.model, vae.guide, x)
    return torch.cat([p.grad.reshape(-1) for p in params]).double()


def compare_to_exact(
    vae: VAE,
    x: torch.Tensor,
    estimators: list[GradientEstimator],
    repeats: int = 200,
    warmup: int = 20,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Per estimator: MSE of its gradient to the exact one, bias², variance, seconds a draw.

    ``warmup`` draws come first (a decaying baseline needs a few steps to mean anything);
    bias² is ``‖mean − exact‖² − variance / repeats``, an unbiased estimate (it can come
    out slightly below zero when the bias is below the Monte Carlo noise).
    """
    groups = {"encoder": vae.encoder_parameters(), "decoder": list(vae.decoder.parameters())}
    params = [p for ps in groups.values() for p in ps]
    sizes = [sum(p.numel() for p in ps) for ps in groups.values()]
    exact_vae = variant_vae(vae, {"elbo": "enum"})
    with pyro.validation_enabled(False):
        exact = _gradient(exact_vae, make_elbo("enum"), x, params)  # also warms up
        t0 = clock(x)
        for _ in range(EXACT_TIMINGS):
            _gradient(exact_vae, make_elbo("enum"), x, params)
        exact_seconds = (clock(x) - t0) / EXACT_TIMINGS
    norm = float(exact.square().sum())
    rows = [_row("enum (exact)", "TraceEnum_ELBO: the sum over every code", None, exact_seconds)]
    for est in estimators:
        torch.manual_seed(seed)
        draws, elapsed = [], 0.0
        with pyro.validation_enabled(False):
            for i in range(warmup + repeats):
                t0 = clock(x)
                g = _gradient(est.vae, est.elbo, x, params)
                if i >= warmup:
                    elapsed += clock(x) - t0
                    draws.append(g)
        g = torch.stack(draws)
        row = _row(est.name, est.description, est.temperature, elapsed / repeats)
        for name, part in zip(["all", *groups], [slice(None), *_slices(sizes)], strict=True):
            gp, ep = g[:, part], exact[part]
            variance = float(gp.var(0).sum())
            row[f"mse_{name}"] = float((gp - ep).square().sum(1).mean())
            row[f"bias2_{name}"] = float((gp.mean(0) - ep).square().sum()) - variance / repeats
            row[f"var_{name}"] = variance
        row["relative_mse"] = row["mse_all"] / norm
        rows.append(row)
    for row in rows:
        row.update(repeats=repeats, exact_norm2=norm)
    return rows


def _slices(sizes: list[int]) -> list[slice]:
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [slice(s, s + n) for s, n in zip(starts, sizes, strict=True)]


def _row(name: str, description: str, temperature, seconds: float) -> dict[str, Any]:
    zero = {f"{k}_{g}": 0.0 for k in ("mse", "bias2", "var") for g in ("all", "encoder", "decoder")}
    return {
        "estimator": name,
        "description": description,
        "temperature": temperature,
        "seconds": seconds,
        **zero,
        "relative_mse": 0.0,
    }


def exact_table(rows: list[dict[str, Any]], title: str) -> Table:
    """The comparison as a report table (Markdown and CSV)."""
    columns = [
        "MSE to exact",
        "MSE / ‖exact‖²",
        "bias²",
        "variance",
        "MSE encoder",
        "MSE decoder",
        "ms / draw",
    ]
    cells = [
        (
            r["estimator"],
            [
                f"{r['mse_all']:.4g}",
                f"{r['relative_mse']:.3g}",
                f"{r['bias2_all']:.3g}",
                f"{r['var_all']:.4g}",
                f"{r['mse_encoder']:.4g}",
                f"{r['mse_decoder']:.4g}",
                f"{1000 * r['seconds']:.1f}",
            ],
        )
        for r in rows
    ]
    note = (
        f"Gradients of the mean −ELBO per image; {rows[0]['repeats']} draws each after a "
        f"warm-up; ‖exact‖² = {rows[0]['exact_norm2']:.4g}. MSE = bias² + variance; bias² is "
        "corrected for the noise of the mean (≈ 0 within Monte Carlo error)."
    )
    return Table(title, columns, cells, note=note, first="estimator")


def plot_mse(rows: list[dict[str, Any]], path, title: str) -> None:
    """MSE, bias² and variance of the relaxation against τ; the score-function estimators
    as horizontal lines."""
    from .plots import plt, save_figure

    relaxed = [r for r in rows if r["temperature"] is not None]
    taus = [r["temperature"] for r in relaxed]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(taus, [r["mse_all"] for r in relaxed], "o-", label="Concrete: MSE")
    biased = [(t, r["bias2_all"]) for t, r in zip(taus, relaxed, strict=True) if r["bias2_all"] > 0]
    if biased:
        ax.plot(*zip(*biased, strict=True), "s--", label="Concrete: bias² (where > 0)")
    ax.plot(taus, [r["var_all"] for r in relaxed], "^:", label="Concrete: variance")
    for i, r in enumerate(r for r in rows if r["temperature"] is None and r["mse_all"] > 0):
        ax.axhline(r["mse_all"], color=f"C{i + 3}", lw=1, label=f"{r['estimator']}: MSE")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("temperature τ of the relaxation")
    ax.set_ylabel("squared error to the exact gradient (sum over parameters)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)
