"""The configuration of one run: a dataclass that saves itself as JSON.

Its fields are declared once, as :class:`~pyro_dvae.params.Param`: the common ones
below, each latent family's own in its class (``alpha`` in the Logit-normal, the
temperatures in the Concrete). ``FitConfig`` is assembled from them, flat, so
``config.json`` and the command-line flags name every field directly.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import field, fields
from pathlib import Path
from typing import Any

from .compiled_elbo import AUTO_COMPILE_STEPS
from .errors import ConfigError
from .families import FAMILIES, LatentFamily
from .fileio import atomic_write_text
from .params import Param
from .schedules import check_schedules
from .tracking import tracker_names

MAX_SEED = 2**32 - 1  # numpy's seed range (pyro.set_rng_seed seeds numpy too)
#: ``--compile``'s values
COMPILE_MODES = ("auto", "on", "off")


def _datasets():
    from .data import DATASETS

    return DATASETS


def _elbos():
    from .inference import ELBOS

    return ELBOS


def _lr_schedules():
    from .schedules import LR_SCHEDULES

    return LR_SCHEDULES


def _gradients():
    from .iwae_objective import GRADIENTS

    return GRADIENTS


def _baselines():
    from .inference import BASELINES

    return BASELINES


#: Fields every run has, whatever its family (family fields come from the families).
COMMON: tuple[Param, ...] = (
    Param(
        "family",
        str,
        "logitnormal",
        "Latent family: posterior and prior.",
        choices=lambda: FAMILIES,
        axis=True,
    ),
    Param(
        "latent_dim",
        int,
        20,
        "Latent size; for concrete and categorical, the number of categorical variables.",
        low=1,
        axis=True,
    ),
    Param(
        "guide",
        str,
        "",
        "Your own guide: package.module:factory or file.py:factory, called "
        "as factory(family, input_dim, hidden) -> nn.Module (docs/guides.md).",
    ),
    Param(
        "hidden",
        int,
        500,
        "Width of the two hidden layers of encoder and decoder (Kingma & Welling's MNIST width).",
        low=1,
    ),
    Param(
        "dataset",
        str,
        "mnist",
        "Dataset: mnist, fashion-mnist, kmnist (torchvision) or digits (scikit-learn's 8x8 "
        "digits, no download).",
        choices=_datasets,
    ),
    Param("subset", int, 0, "Use only the first N training and test images (0: all).", low=0),
    Param("epochs", int, 200, "Epochs to train.", low=1),
    Param("batch_size", int, 50, "Images per batch: one optimiser step's.", low=1),
    Param("lr", float, 1e-3, "ClippedAdam learning rate.", positive=True),
    Param(
        "clip_norm",
        float,
        10.0,
        "ClippedAdam: each gradient element is clipped to [-c, c].",
        positive=True,
    ),
    Param(
        "elbo",
        str,
        "trace",
        "trace: Trace_ELBO, Monte Carlo KL (the paper); analytic: TraceMeanField_ELBO; "
        "enum: TraceEnum_ELBO, exact sum over a discrete latent's codes; tracegraph: "
        "TraceGraph_ELBO, score-function gradients with --baseline (decaying: the estimator "
        "reinforce; none: score-function, as --elbo trace on discrete codes); iwae: the "
        "importance-weighted bound per image with --num-particles K (reparameterised "
        "latents); nvil, vimco, disarm: see --estimator, which names them.",
        choices=_elbos,
        short="elbo-",
    ),
    Param(
        "baseline",
        str,
        "decaying",
        "Score-function baseline of --elbo tracegraph: decaying (an average of the per-image "
        "ELBO over steps; the estimator reinforce), neural (that average plus a learned r(x)) "
        "or none (the estimator score-function).",
        choices=_baselines,
    ),
    Param(
        "gradient",
        str,
        "standard",
        "The gradient estimator of --elbo iwae (standard, dreg, stl) and --elbo trace (stl): "
        "dreg (Tucker et al.) and stl (Roeder et al.) stop the gradient through the guide's "
        "parameters in log q (docs/estimators.md).",
        choices=_gradients,
        short="grad-",
    ),
    Param(
        "num_particles",
        int,
        1,
        "Samples per image in the ELBO estimate (the K of --elbo iwae and vimco).",
        low=1,
        short="particles",
    ),
    Param(
        "seed",
        int,
        0,
        "Random seed: initial weights, noise, binarisation, data order.",
        low=0,
        high=MAX_SEED,
        short="seed",
        axis=True,
    ),
    Param(
        "kl_warmup",
        int,
        0,
        "KL warm-up (Sonderby et al. 2016): the KL's weight rises linearly from 0 to 1, "
        "step by step, over this many epochs; 0: weight 1 from the start (the paper).",
        low=0,
        short="warmup",
    ),
    Param(
        "free_bits",
        float,
        0.0,
        "Free bits (Kingma et al. 2016): the KL of each latent unit (of a Concrete: each "
        "categorical variable), averaged over the batch, counts as at least this many nats; "
        "0: off (the paper).",
        low=0.0,
        short="freebits",
    ),
    Param(
        "lr_schedule",
        str,
        "constant",
        "Learning rate over the planned --epochs: constant (the paper); step: divided by 10 "
        "after half and again after three quarters of the steps; cosine: lr * (1 + "
        "cos(pi * step / steps)) / 2.",
        choices=_lr_schedules,
        short="lr",
    ),
    Param(
        "eval_every", int, 1, "Evaluate the test -ELBO every N epochs (and after the last).", low=1
    ),
    Param(
        "compile",
        str,
        "auto",
        "Compile the training step with torch.compile: on, off, or auto (on when at least "
        f"{AUTO_COMPILE_STEPS:,} training steps are left, which repay the compile time; "
        "docs/speed.md).",
        choices=lambda: COMPILE_MODES,
    ),
    Param(
        "log",
        str,
        "",
        "Experiment tracking: tensorboard, mlflow, or both comma-separated (docs/tracking.md).",
    ),
)

#: objectives that only an ``--estimator`` of a discrete family trains with
ESTIMATOR_ONLY = ("nvil", "vimco", "disarm")

# Fields that may change when a run is resumed; all others define the run.
RESUMABLE_FIELDS = frozenset({"epochs", "eval_every", "compile", "log"})


def _family_params() -> dict[str, tuple[Param, list[type[LatentFamily]]]]:
    """Each family field once, with the families that take it."""
    owned: dict[str, tuple[Param, list[type[LatentFamily]]]] = {}
    for family in FAMILIES.values():
        for p in family.params:
            if p.name in owned and owned[p.name][0] != p:
                raise TypeError(f"two declarations of the config field {p.name!r}")
            owned.setdefault(p.name, (p, []))[1].append(family)
    return owned


FAMILY_PARAMS = _family_params()
PARAMS: dict[str, Param] = {p.name: p for p in COMMON} | {
    name: p for name, (p, _) in FAMILY_PARAMS.items()
}


class _ConfigMethods:
    """The behaviour of :class:`FitConfig`; its fields come from :data:`PARAMS`."""

    def validate(self, new: bool = False) -> FitConfig:
        """Raise :class:`ConfigError` naming the first invalid field.

        ``new``: a configuration about to make a run, where a field of another family
        set off its default is a mistake (``--family gaussian --alpha 2``); configs read
        back from run folders made before that rule are not refused for it.
        """
        for p in PARAMS.values():
            p.check(getattr(self, p.name))
        if new:
            for name, (p, _) in FAMILY_PARAMS.items():
                if getattr(self, name) != p.default:
                    check_family_field(name, self.family)
        family = FAMILIES[self.family]
        changed_baseline = new and self.baseline != PARAMS["baseline"].default
        if changed_baseline and (self.elbo != "tracegraph" or not family.enumerable):
            raise ConfigError(
                "--baseline applies to score-function gradients: --elbo tracegraph "
                "(--estimator reinforce) with --family categorical or bernoulli"
            )
        if self.estimator:
            implied = family.estimators.get(self.estimator)
            if implied is None:
                raise ConfigError(
                    f"--estimator {self.estimator} does not apply to --family {self.family}; "
                    f"its estimators: {', '.join(family.estimators) or 'none'}"
                )
            if self.elbo != implied:
                raise ConfigError(
                    f"--estimator {self.estimator} trains with --elbo {implied}; --elbo "
                    f"{self.elbo} contradicts it (leave --elbo out)"
                )
        if self.elbo in ESTIMATOR_ONLY and self.elbo not in family.estimators:
            raise ConfigError(
                f"--elbo {self.elbo} is an estimator of discrete latents; the {self.family} "
                "latent has none (see --estimator of --family bernoulli or categorical)"
            )
        if self.elbo == "vimco" and self.num_particles < 2:
            raise ConfigError(
                "--estimator vimco is the K-sample bound with leave-one-out baselines: give "
                "--num-particles K of 2 or more (Mnih & Rezende use 5 to 50)"
            )
        self._check_gradient(family)
        if self.elbo == "enum" and not family.enumerable:
            raise ConfigError(
                f"--elbo enum sums over every value of a discrete latent; the {self.family} "
                "latent is continuous or relaxed (use --family categorical)"
            )
        family.validate_config(self, new)
        check_schedules(self)
        tracker_names(self.log)
        return self

    def _check_gradient(self, family: type[LatentFamily]) -> None:
        from .inference import GRADIENT_ELBOS

        if self.elbo == "iwae" and family.enumerable:
            raise ConfigError(
                f"--elbo iwae trains reparameterised latents; the {self.family} latent is "
                "discrete (--estimator vimco is its importance-weighted bound)"
            )
        if self.gradient != "standard":
            takes = [e for e, (_, gs) in GRADIENT_ELBOS.items() if self.gradient in gs]
            if self.elbo not in takes:
                raise ConfigError(
                    f"--gradient {self.gradient} applies to "
                    f"{' and '.join(f'--elbo {e}' for e in takes)}, not --elbo {self.elbo}"
                )

    def __post_init__(self) -> None:
        """An ``--estimator`` names its objective: the default ``--elbo`` becomes the one it
        trains with, and an ``--elbo`` that only an estimator has names that estimator."""
        family = FAMILIES.get(self.family) if isinstance(self.family, str) else None
        estimators = family.estimators if family is not None else {}
        # a frozen dataclass sets its own fields in __post_init__ through object.__setattr__
        if self.estimator and self.elbo == PARAMS["elbo"].default:
            object.__setattr__(self, "elbo", estimators.get(self.estimator, self.elbo))
        elif not self.estimator and self.elbo in ESTIMATOR_ONLY and self.elbo in estimators:
            object.__setattr__(self, "estimator", self.elbo)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (what ``config.json`` holds)."""
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write ``config.json`` atomically."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FitConfig:
        """A config of the fields in ``data``; an unknown one raises :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        if "jit" in data and "compile" not in data:  # a run folder from before --compile
            data = {**data, "compile": "auto" if data["jit"] is True else "off"}
            del data["jit"]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config fields: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> FitConfig:
        """Read a ``config.json``; a file that is not one raises :class:`ConfigError`."""
        try:  # save() writes UTF-8, whatever the locale; anything else is damage
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            byte = err.object[err.start]
            where = f"byte 0x{byte:02x} at position {err.start}"
            raise ConfigError(f"cannot read {path}: not UTF-8 text ({where})") from None
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read {path}: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} does not hold a JSON object")
        return cls.from_dict(data)

    def differences(self, other: FitConfig) -> list[str]:
        """Fields (other than :data:`RESUMABLE_FIELDS`) on which two configs differ."""
        return [
            f.name
            for f in fields(self)
            if f.name not in RESUMABLE_FIELDS and getattr(self, f.name) != getattr(other, f.name)
        ]


FitConfig = dataclasses.make_dataclass(
    "FitConfig",
    [(p.name, p.kind, field(default=p.default)) for p in PARAMS.values()],
    bases=(_ConfigMethods,),
    namespace={"__module__": __name__},
    frozen=True,
)


def _fields_doc() -> str:
    """FitConfig's docstring, written from the field declarations so that it cannot drift."""
    lines = []
    for p in PARAMS.values():
        owners = FAMILY_PARAMS.get(p.name, (None, []))[1]
        where = f"; for {', '.join(f.name for f in owners)}" if owners else ""
        lines.append(
            f"- ``{p.name}`` ({p.kind.__name__}, default ``{p.default!r}``{where}): {p.help}"
        )
    return (
        "Everything that defines a training run; the defaults follow the paper. A frozen\n"
        "value: change it with ``dataclasses.replace``.\n\n"
        "Each field is a keyword here and a flag of ``pyro-dvae fit`` (``latent_dim``:\n"
        "``--latent-dim``); this list is written from their declarations (:data:`PARAMS`).\n"
        "A field marked with families belongs to them. :meth:`validate` checks the values;\n"
        "with ``new`` (a run about to start) it also refuses a family's field set off its\n"
        "default under another family.\n\n" + "\n".join(lines)
    )


FitConfig.__doc__ = _fields_doc()


def check_family_field(name: str, family: str) -> None:
    """Raise :class:`ConfigError` if the field ``name`` of some families is not ``family``'s."""
    if name in FAMILY_PARAMS:
        p, families = FAMILY_PARAMS[name]
        if family not in {f.name for f in families}:
            owners = " or ".join(f"--family {f.name}" for f in families)
            raise ConfigError(f"{p.flag} applies to {owners} only")
