"""Distributions written for pyro-dvae."""

from .exp_relaxed_categorical import (
    ExpRelaxedCategorical,
    ExpRelaxedCategoricalDiscreteKL,
    log_simplex,
)
from .logit_normal import LogitNormal

__all__ = [
    "ExpRelaxedCategorical",
    "ExpRelaxedCategoricalDiscreteKL",
    "LogitNormal",
    "log_simplex",
]
