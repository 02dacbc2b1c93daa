"""Distributions written for pyro-dvae."""

from .binary_concrete import BinaryConcrete, StraightThroughBinaryConcrete, bernoulli_kl
from .exp_relaxed_categorical import (
    ExpRelaxedCategorical,
    ExpRelaxedCategoricalDiscreteKL,
    StraightThroughCategorical,
    log_simplex,
)
from .logit_normal import LogitNormal, LogitNormalDiscreteKL
from .multivariate_logit_normal import MultivariateLogitNormal

__all__ = [
    "BinaryConcrete",
    "StraightThroughBinaryConcrete",
    "StraightThroughCategorical",
    "bernoulli_kl",
    "ExpRelaxedCategorical",
    "ExpRelaxedCategoricalDiscreteKL",
    "LogitNormal",
    "LogitNormalDiscreteKL",
    "MultivariateLogitNormal",
    "log_simplex",
]
