"""The configuration of one run: a dataclass that saves itself as JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .fileio import atomic_write_text

#: Concrete objectives: relaxed densities (Maddison et al.) or discrete KL (Jang et al.)
KL_OBJECTIVES = {
    "relaxed": "KL of the relaxed ExpConcrete densities, by Monte Carlo",
    "discrete": "KL of the underlying categoricals, analytic",
}

MAX_SEED = 2**32 - 1
_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}

# Fields that may change when a run is resumed; all others define the run.
RESUMABLE_FIELDS = frozenset({"epochs", "eval_every", "jit"})


@dataclass
class FitConfig:
    """Everything that defines a training run. Defaults follow the paper."""

    family: str = "logitnormal"
    latent_dim: int = 20
    alpha: float = 1.0
    categories: int = 10
    temperature: float = 0.5
    prior_temperature: float = 1.0
    anneal_rate: float = 0.0
    min_temperature: float = 0.5
    kl: str = "relaxed"
    guide: str = ""
    hidden: int = 500
    dataset: str = "mnist"
    subset: int = 0
    epochs: int = 200
    batch_size: int = 50
    lr: float = 1e-3
    clip_norm: float = 10.0
    elbo: str = "trace"
    num_particles: int = 1
    seed: int = 0
    eval_every: int = 1
    jit: bool = True

    def validate(self) -> FitConfig:
        """Raise :class:`ConfigError` naming the first invalid field."""
        self._check_types()
        from .data import DATASETS
        from .families import FAMILIES
        from .inference import ELBOS

        _choice("family", self.family, FAMILIES)
        _choice("dataset", self.dataset, DATASETS)
        _choice("elbo", self.elbo, ELBOS)
        _choice("kl", self.kl, KL_OBJECTIVES)
        if self.kl == "discrete" and not ELBOS[self.elbo][1]:
            raise ConfigError(
                "--kl discrete is the analytic KL of the underlying categoricals; "
                "use it with --elbo analytic"
            )
        if self.kl == "discrete" and self.family != "concrete":
            raise ConfigError("--kl discrete applies to --family concrete only")
        _positive("alpha", self.alpha, "the prior variance of the Logit-normal")
        _positive("temperature", self.temperature)
        _positive("prior_temperature", self.prior_temperature)
        _positive("min_temperature", self.min_temperature)
        _positive("lr", self.lr)
        _positive("clip_norm", self.clip_norm)
        if not (math.isfinite(self.anneal_rate) and self.anneal_rate >= 0):
            raise ConfigError(f"--anneal-rate must be >= 0, got {self.anneal_rate}")
        _at_least("latent_dim", self.latent_dim, 1)
        _at_least("categories", self.categories, 2)
        _at_least("hidden", self.hidden, 1)
        _at_least("epochs", self.epochs, 1)
        _at_least("batch_size", self.batch_size, 1)
        _at_least("num_particles", self.num_particles, 1)
        _at_least("eval_every", self.eval_every, 1)
        _at_least("subset", self.subset, 0)
        if not 0 <= self.seed <= MAX_SEED:  # numpy's seed range (pyro.set_rng_seed seeds numpy)
            raise ConfigError(f"--seed must be an integer from 0 to {MAX_SEED}, got {self.seed}")
        return self

    def _check_types(self) -> None:
        """Each field holds its declared type (a JSON ``true`` is not an epoch count)."""
        for f in fields(self):
            value, kind = getattr(self, f.name), type(f.default)
            if kind is float:
                ok = isinstance(value, int | float) and not isinstance(value, bool)
            elif kind is int:
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, kind)
            if not ok:
                raise ConfigError(
                    f"{_flag(f.name)} must be {_KIND_NAMES[kind]}, got {json.dumps(value)}"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write ``config.json`` atomically."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FitConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config fields: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> FitConfig:
        try:
            data = json.loads(Path(path).read_text())
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


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _choice(name: str, value: str, registry) -> None:
    if value not in registry:
        raise ConfigError(
            f"unknown {name} {value!r} for {_flag(name)}; choose from {', '.join(sorted(registry))}"
        )


def _positive(name: str, value: float, what: str = "") -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        extra = f" ({what})" if what else ""
        raise ConfigError(f"{_flag(name)} must be a positive number{extra}, got {value}")


def _at_least(name: str, value: int, low: int) -> None:
    if not (isinstance(value, int) and value >= low):
        raise ConfigError(f"{_flag(name)} must be an integer >= {low}, got {value}")
