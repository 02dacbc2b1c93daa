"""Gradient estimators of a discrete latent (bernoulli or categorical), measured against
the exact gradient.

At fixed parameters and one batch, ``TraceEnum_ELBO`` gives the exact gradient of the mean
ELBO (a sum over every code). Each estimator then draws its gradient ``repeats`` times; its
mean squared error to the exact one splits into bias² + variance. The estimators are the
family's own (``--estimator``): the score function without a baseline (``Trace_ELBO``),
``reinforce``, ``nvil``, ``vimco`` (whose target is its K-sample bound, so its distance to the
ELBO's gradient is partly by design) and ``disarm`` — unbiased, variance is their cost — and
the relaxations at several temperatures: ``concrete`` and ``straight-through`` (the same
networks reading relaxed codes, the discrete KL; Jang et al.), low variance but a biased
estimate of this model's gradient. A run trained with a Logit-normal relaxation has its own
encoder head (μ, σ): both Logit-normal relaxations (the paper's, with the Logit-normals' KL;
and ``logitnormal-discrete-kl``, with the KL of the bits) are compared at each temperature
against the exact gradient of the Bernoulli model it stands for, b = 1[y > 0].
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pyro
import torch

from .estimator_comparison import clock, estimate_bar
from .families import BitsFamily, make_family
from .families.bernoulli import LOGIT_NORMAL
from .families.enumeration import exact_config
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


def discrete_estimators(
    vae: VAE, temperatures=TEMPERATURES, particles: int = 5
) -> list[GradientEstimator]:
    """The family's estimators (``vimco`` with ``particles``), each relaxation at every
    temperature, and the score function without a baseline."""
    family = vae.family
    config = family.config
    if getattr(family, "estimator", "") in LOGIT_NORMAL:  # its own head: its two relaxations
        return [_relaxed(vae, name, tau) for name in LOGIT_NORMAL for tau in temperatures]
    plain = vae.with_family(make_family(replace(config, estimator="", elbo="tracegraph")))
    ests = [
        GradientEstimator("score-function", "Trace_ELBO: no baseline", plain, make_elbo("trace"))
    ]
    for name in family.estimators:
        if name == "enum" or name in LOGIT_NORMAL:
            continue
        if name in ("concrete", "straight-through"):
            ests += [_relaxed(vae, name, tau) for tau in temperatures]
            continue
        k = particles if name == "vimco" else 1
        cfg = replace(config, estimator=name, elbo=family.estimators[name], num_particles=k)
        label = f"vimco-{k}" if name == "vimco" else name
        ests.append(
            GradientEstimator(
                label, DESCRIPTIONS[name], vae.with_family(make_family(cfg)), make_elbo(cfg.elbo, k)
            )
        )
    return ests


DESCRIPTIONS = {
    "reinforce": "TraceGraph_ELBO, decaying-average baseline",
    "nvil": "NVIL: neural baseline, variance normalisation (Mnih & Gregor)",
    "vimco": "VIMCO: leave-one-out baselines; its target is the K-sample bound",
    "disarm": "DisARM: antithetic pairs (Dong et al.)",
    "concrete": "Concrete relaxation, discrete KL (Jang et al.)",
    "straight-through": "straight-through Gumbel-softmax (Jang et al.)",
    "logitnormal": "Logit-normal relaxation (the paper's)",
    "logitnormal-discrete-kl": "Logit-normal relaxation, the KL of the bits it stands for",
}


def _relaxed(vae: VAE, name: str, tau: float) -> GradientEstimator:
    cfg = replace(
        vae.family.config,
        estimator=name,
        elbo=vae.family.estimators[name],
        tau=tau,
        anneal_rate=0.0,
        num_particles=1,
    )
    return GradientEstimator(
        f"{name}-{tau:g}",
        f"{DESCRIPTIONS[name]}, τ = {tau:g}",
        vae.with_family(make_family(cfg)),
        make_elbo(cfg.elbo),
        tau,
    )


def exact_vae(vae: VAE) -> VAE:
    """The networks under the exact, enumerated ELBO of the discrete model (a Logit-normal
    run's: the bits 1[y > 0], q(b = 1) = Φ(μ / σ))."""
    family = vae.family
    if getattr(family, "estimator", "") in LOGIT_NORMAL:
        return vae.with_family(BitsFamily(family.latent_dim, probit=True, joint=True))
    return vae.with_family(make_family(exact_config(family.config)))


def _gradient(vae: VAE, elbo, x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    for p in params:
        p.grad = None
    elbo.loss_and_grads(vae.model, vae.guide, x)
    return torch.cat([p.grad.reshape(-1) for p in params]).double()


def _draws(
    est: GradientEstimator, x: torch.Tensor, params: list, repeats: int, warmup: int, seed: int, bar
) -> tuple[torch.Tensor, float]:
    """``repeats`` gradients of ``est`` after ``warmup`` (repeats, parameters), and the
    seconds one takes; ``bar`` counts each draw."""
    torch.manual_seed(seed)
    draws, elapsed = [], 0.0
    bar.set_description(est.name)
    with pyro.validation_enabled(False):
        for i in range(warmup + repeats):
            t0 = clock(x)
            g = _gradient(est.vae, est.elbo, x, params)
            if i >= warmup:
                elapsed += clock(x) - t0
                draws.append(g)
            bar.update(1)
    return torch.stack(draws), elapsed / repeats


def compare_to_exact(
    vae: VAE,
    x: torch.Tensor,
    estimators: list[GradientEstimator],
    repeats: int = 200,
    warmup: int = 20,
    seed: int = 0,
    progress: bool = False,
    clip: float | None = None,
) -> list[dict[str, Any]]:
    """Per estimator: MSE of its gradient to the exact one, bias², variance, seconds a draw.

    ``warmup`` draws come first (a decaying baseline needs a few steps to mean anything);
    bias² is ``‖mean − exact‖² − variance / repeats``, an unbiased estimate (it can come
    out slightly below zero when the bias is below the Monte Carlo noise). ``progress``: a
    bar of the draws; ``clip``: a run's ``clip_norm``, for :func:`clipped_share`.
    """
    groups = {"encoder": vae.encoder_parameters(), "decoder": list(vae.decoder.parameters())}
    params = [p for ps in groups.values() for p in ps]
    sizes = [sum(p.numel() for p in ps) for ps in groups.values()]
    exact_model = exact_vae(vae)
    with pyro.validation_enabled(False):
        exact = _gradient(exact_model, make_elbo("enum"), x, params)  # also warms up
        t0 = clock(x)
        for _ in range(EXACT_TIMINGS):
            _gradient(exact_model, make_elbo("enum"), x, params)
        exact_seconds = (clock(x) - t0) / EXACT_TIMINGS
    norm = float(exact.square().sum())
    rows = [_row("enum (exact)", "TraceEnum_ELBO: the sum over every code", None, exact_seconds)]
    rows[0].update(clipped_share(exact[None], clip))
    with estimate_bar(len(estimators) * (warmup + repeats), progress) as bar:
        for est in estimators:
            g, seconds = _draws(est, x, params, repeats, warmup, seed, bar)
            row = _row(est.name, est.description, est.temperature, seconds)
            for name, part in zip(["all", *groups], [slice(None), *_slices(sizes)], strict=True):
                gp, ep = g[:, part], exact[part]
                variance = float(gp.var(0).sum())
                row[f"mse_{name}"] = float((gp - ep).square().sum(1).mean())
                row[f"bias2_{name}"] = float((gp.mean(0) - ep).square().sum()) - variance / repeats
                row[f"var_{name}"] = variance
            row["relative_mse"] = row["mse_all"] / norm
            row.update(clipped_share(g, clip))
            rows.append(row)
    for row in rows:
        row.update(repeats=repeats, exact_norm2=norm)
    return rows


def compare_spread(
    vae: VAE,
    x: torch.Tensor,
    estimators: list[GradientEstimator],
    repeats: int = 200,
    warmup: int = 20,
    seed: int = 0,
    progress: bool = False,
    clip: float | None = None,
) -> list[dict[str, Any]]:
    """Where no exact gradient exists (too many codes): per estimator, the variance of its
    gradient (summed over parameters), its signal-to-noise ratio (the mean over parameters
    of |mean| / sd, for the encoder and the decoder) and seconds a draw; ``progress``: a
    bar of the draws; ``clip``: a run's ``clip_norm``, for :func:`clipped_share`."""
    groups = {"encoder": vae.encoder_parameters(), "decoder": list(vae.decoder.parameters())}
    params = [p for ps in groups.values() for p in ps]
    sizes = [sum(p.numel() for p in ps) for ps in groups.values()]
    rows = []
    with estimate_bar(len(estimators) * (warmup + repeats), progress) as bar:
        for est in estimators:
            g, seconds = _draws(est, x, params, repeats, warmup, seed, bar)
            row = {"estimator": est.name, "description": est.description}
            row.update(temperature=est.temperature, seconds=seconds, repeats=repeats)
            for name, part in zip(["all", *groups], [slice(None), *_slices(sizes)], strict=True):
                mean, sd = g[:, part].mean(0), g[:, part].std(0)
                row[f"var_{name}"] = float(sd.square().sum())
                row[f"snr_{name}"] = float((mean.abs() / sd.clamp_min(1e-30)).mean())
            row.update(clipped_share(g, clip))
            rows.append(row)
    return rows


def clipped_share(draws: torch.Tensor, clip: float | None) -> dict[str, float]:
    """``{"clipped": s}``: the share ``s`` of the gradient elements in ``draws`` (draws,
    parameters) beyond ±``clip``, the elements ClippedAdam's clamp would change in
    training; ``{}`` without ``clip``."""
    if clip is None:
        return {}
    return {"clipped": float((draws.abs() > clip).double().mean())}


def _clipped_cell(r: dict[str, Any]) -> list[str]:
    return [f"{100 * r['clipped']:.3g} %"] if "clipped" in r else []


def _clipped_note(rows: list[dict[str, Any]]) -> str:
    if "clipped" not in rows[0]:
        return ""
    return (
        " clipped: the share of gradient elements beyond ± the run's --clip-norm, which "
        "ClippedAdam clamps in training (a clamp the estimator's theory does not have)."
    )


def spread_table(rows: list[dict[str, Any]], title: str) -> Table:
    """:func:`compare_spread` as a report table."""
    columns = ["variance", "variance encoder", "SNR encoder", "SNR decoder", "ms / draw"]
    columns += ["clipped"] if "clipped" in rows[0] else []
    cells = [
        (
            r["estimator"],
            [
                f"{r['var_all']:.4g}",
                f"{r['var_encoder']:.4g}",
                f"{r['snr_encoder']:.3g}",
                f"{r['snr_decoder']:.3g}",
                f"{1000 * r['seconds']:.1f}",
                *_clipped_cell(r),
            ],
        )
        for r in rows
    ]
    note = (
        f"No exact gradient at this size (too many codes to sum): {rows[0]['repeats']} draws "
        "each after a warm-up; variance summed over parameters; SNR = mean over parameters of "
        "|mean| / sd. A relaxation's low variance buys a bias this table cannot show (see the "
        "exact comparison on a small model)." + _clipped_note(rows)
    )
    return Table(title, columns, cells, note=note, first="estimator")


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

    def bias2_cell(r: dict[str, Any]) -> str:
        """bias², or ≈ 0 where it is negative by less than its Monte Carlo error: at zero
        bias, ‖mean − exact‖² over n draws has sd √(2 tr Σ²) / n ≤ √2 tr Σ / n."""
        bias2, noise = r["bias2_all"], 2**0.5 * r["var_all"] / r["repeats"]
        return "≈ 0 (within noise)" if -noise <= bias2 < 0 else f"{bias2:.3g}"

    columns = [
        "MSE to exact",
        "MSE / ‖exact‖²",
        "bias²",
        "variance",
        "MSE encoder",
        "MSE decoder",
        "ms / draw",
    ]
    columns += ["clipped"] if "clipped" in rows[0] else []
    cells = [
        (
            r["estimator"],
            [
                f"{r['mse_all']:.4g}",
                f"{r['relative_mse']:.3g}",
                bias2_cell(r),
                f"{r['var_all']:.4g}",
                f"{r['mse_encoder']:.4g}",
                f"{r['mse_decoder']:.4g}",
                f"{1000 * r['seconds']:.1f}",
                *_clipped_cell(r),
            ],
        )
        for r in rows
    ]
    note = (
        f"Gradients of the mean −ELBO per image; {rows[0]['repeats']} draws each after a "
        f"warm-up; ‖exact‖² = {rows[0]['exact_norm2']:.4g}. MSE = bias² + variance; bias² is "
        "‖mean − exact‖² − variance / draws, corrected for the noise of the mean; a value "
        "below zero within its Monte Carlo error (√2 · variance / draws bounds its sd at "
        "zero bias) is shown as ≈ 0 (within noise)." + _clipped_note(rows)
    )
    return Table(title, columns, cells, note=note, first="estimator")


def plot_mse(rows: list[dict[str, Any]], path, title: str) -> None:
    """MSE and bias² of each relaxation against τ; the unbiased estimators' MSE as
    horizontal lines (estimators whose MSE coincide are drawn once, named together)."""
    from .plotting import figure, save_figure

    fig, ax = figure(figsize=(7, 4.5))
    relaxed: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["temperature"] is not None:
            relaxed.setdefault(r["estimator"].rsplit("-", 1)[0], []).append(r)
    for i, (name, rs) in enumerate(relaxed.items()):
        taus = [r["temperature"] for r in rs]
        ax.plot(taus, [r["mse_all"] for r in rs], "o-", color=f"C{i}", label=f"{name}: MSE")
        biased = [(r["temperature"], r["bias2_all"]) for r in rs if r["bias2_all"] > 0]
        if biased:
            ax.plot(*zip(*biased, strict=True), "s--", color=f"C{i}", lw=1, label=f"{name}: bias²")
    lines: dict[float, list[str]] = {}
    for r in rows:
        if r["temperature"] is None and r["mse_all"] > 0:
            lines.setdefault(round(r["mse_all"], 12), []).append(r["estimator"])
    for j, (mse, names) in enumerate(sorted(lines.items())):
        ax.axhline(mse, color=f"C{j + len(relaxed)}", lw=1, label=f"{' = '.join(names)}: MSE")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("temperature τ of the relaxation")
    ax.set_ylabel("squared error to the exact gradient (sum over parameters)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)
