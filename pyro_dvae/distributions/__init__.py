"""Distributions written for pyro-dvae."""

from .exp_relaxed_categorical import ExpRelaxedCategorical, log_simplex
from .logit_normal import LogitNormal

__all__ = ["ExpRelaxedCategorical", "LogitNormal", "log_simplex"]
