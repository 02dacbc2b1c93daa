"""pyro-dvae: VAEs with Gaussian, Logit-normal, Beta, Concrete or categorical latents, in Pyro."""

from .callbacks import Callback
from .config import FitConfig
from .data import Dataset, binarize, load_dataset
from .distributions import (
    ExpRelaxedCategorical,
    ExpRelaxedCategoricalDiscreteKL,
    LogitNormal,
    MultivariateLogitNormal,
)
from .estimator_comparison import compare as compare_estimators
from .evaluation import evaluate_run, load_run
from .families import FAMILIES, LatentFamily, make_family, register_family
from .fit_resume import fit, resume, resume_group
from .group import GroupTrainer
from .guides import check_guide
from .inference import ELBOS, SVI, elbo_parts, evaluate_elbo, kl_kinds, make_elbo
from .iwae_objective import IWAEELBO, STLTraceELBO
from .optim import FusedClippedAdam
from .rundir import RunDir
from .sampling import sample_run as sample
from .tracking import MLflowLogger, TensorBoardLogger
from .train import Trainer
from .vae import VAE

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "ELBOS",
    "FAMILIES",
    "Dataset",
    "ExpRelaxedCategorical",
    "ExpRelaxedCategoricalDiscreteKL",
    "MultivariateLogitNormal",
    "check_guide",
    "compare_estimators",
    "evaluate_run",
    "load_run",
    "make_elbo",
    "FitConfig",
    "FusedClippedAdam",
    "GroupTrainer",
    "IWAEELBO",
    "LatentFamily",
    "LogitNormal",
    "MLflowLogger",
    "RunDir",
    "SVI",
    "STLTraceELBO",
    "TensorBoardLogger",
    "Trainer",
    "VAE",
    "elbo_parts",
    "evaluate_elbo",
    "fit",
    "kl_kinds",
    "binarize",
    "load_dataset",
    "make_family",
    "register_family",
    "resume",
    "resume_group",
    "sample",
]
