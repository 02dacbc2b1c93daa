"""Latent families: what the encoder emits, the posterior, the prior, and the decoder's input.

A family owns everything about itself: its name, its configuration fields (``params``:
type, default, check, help, run-name part, whether a sweep varies it), its run-name
slug and its label in tables and figures, its per-step state (an annealed
temperature), the training variants it supports and its discrete twin. Generic code
asks the family; adding one is adding a class decorated with :func:`register_family`.
"""

from .base import FAMILIES, LatentFamily, estimator_name, make_family, register_family
from .bernoulli import BernoulliFamily, BitsFamily
from .beta import BetaFamily
from .categorical import CategoricalFamily
from .concrete import KL_OBJECTIVES, ConcreteFamily, OneHotFamily
from .continuous import GaussianFamily, LogitNormalFamily

__all__ = [
    "FAMILIES",
    "KL_OBJECTIVES",
    "BernoulliFamily",
    "BetaFamily",
    "BitsFamily",
    "CategoricalFamily",
    "ConcreteFamily",
    "GaussianFamily",
    "LatentFamily",
    "LogitNormalFamily",
    "OneHotFamily",
    "estimator_name",
    "make_family",
    "register_family",
]
