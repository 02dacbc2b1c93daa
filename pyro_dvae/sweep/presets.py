"""Named grids: the paper's, the Concrete investigation, and the Concrete VAE that trains."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import FitConfig

PAPER_SIZES = (2, 4, 8, 20, 40)
PAPER_ALPHAS = (0.32, 0.56, 1.0, 1.78)

#: preset name → (grid function, one-line description)
PRESETS: dict[str, tuple[Callable[[], list[FitConfig]], str]] = {}


def register_preset(name: str, description: str):
    def deco(fn: Callable[[], list[FitConfig]]) -> Callable[[], list[FitConfig]]:
        PRESETS[name] = (fn, description)
        return fn

    return deco


@register_preset(
    "paper", "the paper's grid: sizes 2-40; Logit-normal x 4 alphas, Gaussian, Concrete"
)
def paper_grid() -> list[FitConfig]:
    configs = []
    for size in PAPER_SIZES:
        configs += [FitConfig(family="logitnormal", latent_dim=size, alpha=a) for a in PAPER_ALPHAS]
        configs.append(FitConfig(family="gaussian", latent_dim=size))
        # the paper's Concrete "dimension K" is one K-way variable
        configs.append(FitConfig(family="concrete", latent_dim=1, categories=size))
    return configs


#: Jang et al.'s objective and temperature schedule (what made the Concrete VAE train)
JANG = {"kl": "discrete", "elbo": "analytic"}
ANNEAL = {"temperature": 1.0, "anneal_rate": 3e-5, "min_temperature": 0.5}


@register_preset(
    "concrete",
    "the Concrete investigation: 1x20 and 20x10, relaxed vs discrete KL, temperatures, annealing",
)
def concrete_grid() -> list[FitConfig]:
    def c(m: int, k: int, **kw: Any) -> FitConfig:
        return FitConfig(family="concrete", latent_dim=m, categories=k, **kw)

    return [
        c(1, 20),  # the paper's setting: τq = 0.5, τp = 1.0, relaxed KL
        c(1, 20, prior_temperature=0.5),  # the same without the KL floor
        c(1, 20, **JANG),
        c(20, 10),  # Jang et al.'s structure with the paper's temperatures
        c(20, 10, temperature=2 / 3, prior_temperature=0.5),  # Maddison et al.'s temperatures
        c(20, 10, prior_temperature=0.5),
        c(20, 10, prior_temperature=0.5, **ANNEAL),
        c(20, 10, **JANG),
        c(20, 10, **JANG, **ANNEAL),  # Jang et al.: discrete KL, τ annealed from 1 to 0.5
    ]


@register_preset(
    "concrete-working",
    "the Concrete VAE that trains: 20x10, discrete KL, tau annealed 1 -> 0.5; and its relaxed twin",
)
def concrete_working_grid() -> list[FitConfig]:
    return [
        # Jang et al.: relaxed samples to the decoder, analytic KL of the categoricals
        FitConfig(family="concrete", latent_dim=20, categories=10, **JANG, **ANNEAL),
        # all-relaxed (Maddison et al.'s objective) with the prior at the posterior's final τ
        FitConfig(family="concrete", latent_dim=20, categories=10, prior_temperature=0.5, **ANNEAL),
    ]


#: the discrete benchmark's budget: epochs per run, and the seeds of every row
DISCRETE_EPOCHS = 100
DISCRETE_SEEDS = (0, 1, 2)
#: Jang et al.'s schedule for the relaxations of discrete codes: τ from 1 to 0.5
BIT_ANNEAL = {"anneal_rate": 3e-5, "min_temperature": 0.5}
#: the Bernoulli rows: estimator → its settings (published ones; see docs/discrete.md)
BERNOULLI_ROWS: dict[str, dict[str, Any]] = {
    "logitnormal": {"estimator": "logitnormal", "alpha": 1.78},  # the paper's τ = 1, best α
    "logitnormal-annealed": {"estimator": "logitnormal", "alpha": 1.78, **BIT_ANNEAL},
    "logitnormal-bimodal": {
        "estimator": "logitnormal",
        "alpha": 4.0,
    },  # LN(0, 4): mass at the edges
    "concrete": {"estimator": "concrete", **BIT_ANNEAL},
    "straight-through": {"estimator": "straight-through", **BIT_ANNEAL},
    "reinforce": {"estimator": "reinforce"},
    "nvil": {"estimator": "nvil"},
    "vimco": {"estimator": "vimco", "num_particles": 5},
    "disarm": {"estimator": "disarm"},
    # the relaxation with the bits' KL, annealed like the Concrete (added once the gradients
    # had been measured: results/discrete-benchmark/estimators)
    "logitnormal-discrete-kl-annealed": {"estimator": "logitnormal-discrete-kl", **BIT_ANNEAL},
}


#: the categorical rows (Jang et al.'s 20 ten-way variables): every estimator that applies
CATEGORICAL_ROWS: dict[str, dict[str, Any]] = {
    "concrete": {"estimator": "concrete", **BIT_ANNEAL},  # Jang et al.'s Gumbel-softmax
    "straight-through": {"estimator": "straight-through", **BIT_ANNEAL},
    "reinforce": {"estimator": "reinforce"},
    "nvil": {"estimator": "nvil"},
    "vimco": {"estimator": "vimco", "num_particles": 5},
}


@register_preset(
    "discrete-benchmark",
    "200 Bernoulli latents and 20 ten-way categoricals, every estimator (the Logit-normal "
    "relaxation included), 3 seeds, 100 epochs each",
)
def discrete_benchmark_grid() -> list[FitConfig]:
    configs = []
    for seed in DISCRETE_SEEDS:  # every row's first seed before any row's second
        common = {"epochs": DISCRETE_EPOCHS, "seed": seed}
        configs += [
            FitConfig(family="bernoulli", latent_dim=200, **common, **row)
            for row in BERNOULLI_ROWS.values()
        ]
        configs += [
            FitConfig(family="categorical", latent_dim=20, categories=10, **common, **row)
            for row in CATEGORICAL_ROWS.values()
        ]
    return configs


#: the IWAE training runs' budget (issue 29): epochs, and the bound's particle counts
IWAE_EPOCHS = 100
#: the rows of the IWAE training comparison: name → config changes (K = 50 standard: Gaussian)
IWAE_ROWS: dict[str, dict[str, Any]] = {
    "elbo": {},
    "iwae-5": {"elbo": "iwae", "num_particles": 5},
    "iwae-5-dreg": {"elbo": "iwae", "num_particles": 5, "gradient": "dreg"},
    "iwae-50-dreg": {"elbo": "iwae", "num_particles": 50, "gradient": "dreg"},
    "iwae-50": {"elbo": "iwae", "num_particles": 50},
}


@register_preset(
    "iwae-training",
    "size-20 Gaussian and Logit-normal (alpha 1.78), 100 epochs, seed 0: the ELBO, IWAE K=5 "
    "(standard, DReG), K=50 DReG, and the Gaussian's K=50 standard",
)
def iwae_training_grid() -> list[FitConfig]:
    families = {"gaussian": {}, "logitnormal": {"alpha": 1.78}}
    configs = []
    for family, own in families.items():
        for name, row in IWAE_ROWS.items():
            if name == "iwae-50" and family != "gaussian":
                continue  # the costly row, run once
            configs.append(
                FitConfig(family=family, latent_dim=20, epochs=IWAE_EPOCHS, **own, **row)
            )
    return configs
