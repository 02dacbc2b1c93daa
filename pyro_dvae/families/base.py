"""The registry of latent families, the base class, and helpers the families share."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import pyro.distributions as dist
import torch

from ..params import Param

if TYPE_CHECKING:
    from ..config import FitConfig

#: ``--family`` name → its :class:`LatentFamily` subclass (filled by :func:`register_family`)
FAMILIES: dict[str, type[LatentFamily]] = {}


ESTIMATOR = Param(
    "estimator",
    str,
    "",
    "bernoulli and categorical: the gradient estimator (docs/discrete.md): logitnormal "
    "and logitnormal-discrete-kl (bernoulli), concrete, straight-through (relaxations); "
    "reinforce, nvil, vimco, disarm (bernoulli) (unbiased); enum (exact).",
    choices=lambda: {"", *(name for f in FAMILIES.values() for name in f.estimators)},
    short=None,
    axis=True,
)


def estimator_name(config: FitConfig) -> str:
    """The one name of a discrete latent's gradient estimator, whichever flags chose it: the
    score function without baseline is ``score-function`` (``--elbo trace``, or ``tracegraph``
    with ``--baseline none``), with the decaying baseline ``reinforce`` (``--estimator
    reinforce`` or ``--elbo tracegraph``); an ``--estimator`` names itself otherwise."""
    name = config.estimator or {"trace": "score-function", "tracegraph": "reinforce"}.get(
        config.elbo, config.elbo
    )
    if name == "reinforce" and config.baseline != "decaying":
        return "score-function" if config.baseline == "none" else "reinforce, neural baseline"
    return name


def register_family(cls: type[LatentFamily]) -> type[LatentFamily]:
    """Class decorator: ``cls`` becomes the ``--family`` named ``cls.name`` in :data:`FAMILIES`.

    Its ``params`` become :class:`~pyro_dvae.config.FitConfig` fields only if it is registered
    before :mod:`pyro_dvae.config` is first imported, as the families of
    :mod:`pyro_dvae.families` are. Returns ``cls``.
    """
    FAMILIES[cls.name] = cls
    return cls


def make_family(config: FitConfig) -> LatentFamily:
    """Returns a new instance of the family ``config.family`` names, reading its fields from
    ``config`` (``latent_dim`` and the family's own); an unknown name raises ``KeyError``."""
    return FAMILIES[config.family](config)


class FamilyDeclaration:
    """What a family declares as a class: its name, its configuration fields, its
    estimators, and how runs of it are named and grouped."""

    name: ClassVar[str]
    #: what tables and figures call it
    title: ClassVar[str] = ""
    #: the configuration fields this family takes (beyond the common ones)
    params: ClassVar[tuple[Param, ...]] = ()
    #: of those, the ones always in a run's name (the others show when off their default)
    slug_params: ClassVar[tuple[str, ...]] = ()
    #: other training objectives of the same model: name → config changes
    variants: ClassVar[dict[str, dict[str, Any]]] = {}
    #: ``--estimator`` name → the ``--elbo`` it trains with (discrete families)
    estimators: ClassVar[dict[str, str]] = {}
    #: event dimensions of ``z`` (1 for a vector, 2 for M categorical variables)
    event_dim: ClassVar[int] = 1
    #: whether ``--elbo enum`` can sum over its values (a discrete latent with few codes)
    enumerable: ClassVar[bool] = False
    #: whether models of this family can be trained as a group (:mod:`pyro_dvae.group`)
    groupable: ClassVar[bool] = True
    #: the fields that may differ between the members of a group; all others must agree
    member_params: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def slug(cls, config: FitConfig) -> str:
        """The start of a run's folder name: ``logitnormal-d20-a1.78``."""
        by_name = {p.name: p for p in cls.params}
        parts = "".join(by_name[n].name_part(getattr(config, n)) for n in cls.slug_params)
        return f"{cls.name}-d{config.latent_dim}{parts}"

    @classmethod
    def slug_fields(cls, config: FitConfig) -> set[str]:
        """The fields :meth:`slug` shows (a run name adds no other part for them)."""
        return {"family", "latent_dim", *cls.slug_params}

    @classmethod
    def label(cls, config: FitConfig) -> str:
        """A run's family in a table or a figure legend: ``Logit-normal α=1.78``."""
        return cls.title or cls.name

    @classmethod
    def validate_config(cls, config: FitConfig, new: bool = False) -> None:
        """Checks across fields (each field's own check has run); raise ConfigError.
        ``new``: a config about to make a run (stored ones are not refused for newer rules)."""


class LatentSite:
    """The latent itself: the encoder's outputs it needs, its posterior and prior, and
    what the decoder reads. ``config``: the run's :class:`~pyro_dvae.config.FitConfig`,
    kept as ``self.config``, its ``latent_dim`` as ``self.latent_dim``."""

    name: ClassVar[str]

    def __init__(self, config: FitConfig):
        self.config = config
        self.latent_dim = config.latent_dim

    @property
    def head_size(self) -> int:
        """Number of encoder outputs the posterior needs."""
        raise NotImplementedError

    @property
    def code_size(self) -> int:
        """Width of the decoder's input."""
        return self.latent_dim

    def posterior(self, head: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x) from the encoder output ``head`` of shape (batch, head_size)."""
        raise NotImplementedError

    def prior(self, like: torch.Tensor) -> dist.TorchDistribution:
        """p(z) for a batch like ``like`` (same batch size, device and dtype)."""
        raise NotImplementedError

    def decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        """What the decoder reads for ``z``: ``z`` itself unless the family says otherwise."""
        return z

    def describe(self) -> str:
        """The family in summaries and logs: its name, unless it says more."""
        return self.name

    def discrete(self) -> LatentFamily | None:
        """The discrete model a relaxed family stands for (scored at evaluation), if any."""
        return None

    @property
    def relaxed(self) -> bool:
        """Whether the decoder reads relaxed codes standing for a discrete model."""
        return self.discrete() is not None

    def code_mean(self, q: dist.Distribution, num_samples: int = 200) -> torch.Tensor:
        """E_q[decoder_input(z)] per image: exact where ``q.mean`` is, else Monte Carlo.

        The Monte Carlo mean of a code in [0, 1] has variance at most 0.25 / num_samples
        (0.00125 at 200), well under the active-unit threshold of 0.01.
        """
        if self.code_is_z:
            try:
                return q.mean
            except NotImplementedError:
                pass
        return self.decoder_input(q.sample((num_samples,))).mean(0)

    #: whether the decoder receives z itself (so E[code] is E[z])
    code_is_z: ClassVar[bool] = True


class PictureHooks:
    """What ``pyro-dvae show`` asks of a family: its units' axes, traversals, activity."""

    latent_dim: int

    #: what a traversal calls the thing it sweeps
    unit_word: ClassVar[str] = "unit"

    def from_unit_interval(self, u: torch.Tensor) -> torch.Tensor:
        """A unit's value at u ∈ (0, 1) along its axis: u itself for latents on the unit
        cube (Logit-normal, Beta); Gaussians map it through Φ⁻¹. Grids and traversals sweep u,
        and u = ½ is the prior's median."""
        return u

    def axis_label(self, name: str) -> str:
        """How a figure names the axis ``from_unit_interval`` sweeps (Gaussians: Φ(z))."""
        return name

    def traversal(self, unit: int, steps: int, like: torch.Tensor) -> tuple[torch.Tensor, list]:
        """Codes z (steps, latent_dim) sweeping ``unit`` along its axis, every other unit at
        the prior's median, and a label per step."""
        u = (torch.arange(steps, dtype=like.dtype, device=like.device) + 0.5) / steps
        z = self.from_unit_interval(torch.full_like(u, 0.5)).unsqueeze(1)
        z = z.repeat(1, self.latent_dim)
        z[:, unit] = self.from_unit_interval(u)
        return z, [f"{v:.2g}" for v in z[:, unit].tolist()]

    def traversal_axis(self) -> str:
        """What a traversal's labels are, for its picture's x axis."""
        return f"the swept {self.unit_word}'s value z"

    def unit_activity(self, codes: torch.Tensor) -> torch.Tensor:
        """Var_x of each unit's mean code (``codes``: one row per image, as ``code_mean``
        gives them): what picks the units a traversal shows."""
        return codes.double().var(0)


class TrainingState:
    """What changes while a family trains besides the weights (an annealed temperature),
    how a compiled step reads it, and a group's family with per-member values."""

    @classmethod
    def for_members(cls, configs: list[FitConfig]) -> LatentFamily:
        """The family of a group: ``configs[0]``'s, with each of :attr:`member_params` a
        float64 tensor of the members' values shaped (M, 1, 1), which broadcasts over
        (members, data, units). Its methods take inputs with a leading member axis."""
        return cls(_MemberValues(configs, cls.member_params))

    def state(self) -> dict[str, float]:
        """What changes during training besides the weights (saved in checkpoints, logged)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` from a checkpoint."""

    def set_step(self, step: int) -> None:
        """Called before every training step with the global step count."""

    def step_inputs(self, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Values that may change per step, as tensors like ``like``, for a compiled ELBO."""
        return ()

    def use_step_inputs(self, inputs: tuple[torch.Tensor, ...] | None) -> None:
        """Read those values from ``inputs`` (a compiled graph's inputs); None: from self."""


class LatentFamily(FamilyDeclaration, LatentSite, PictureHooks, TrainingState):
    """One latent site ``z``; subclasses set ``name`` and the four methods.

    The four: ``head_size`` (the encoder's outputs), ``posterior(head)``, ``prior(like)``
    and, where the decoder does not read ``z`` itself, ``decoder_input(z)`` (see "Adding a
    latent family" in docs/development.md). The members come in four small parts, each with
    defaults a new family rarely changes: :class:`FamilyDeclaration` (name, fields,
    estimators, run names), :class:`LatentSite` (the four, and the codes the decoder
    reads), :class:`PictureHooks` (what ``show`` draws) and :class:`TrainingState`
    (annealed temperatures, compiled-step inputs, groups). ``config``: the run's
    :class:`~pyro_dvae.config.FitConfig`, kept as ``self.config``.
    """


def filled(like: torch.Tensor, *shape: int, value: float | torch.Tensor = 0.0) -> torch.Tensor:
    """A constant on ``like``'s device and dtype; a traced graph folds it and what follows.
    ``value`` may be a group's per-member tensor (see :meth:`LatentFamily.for_members`)."""
    if torch.is_tensor(value):
        return value.to(dtype=like.dtype, device=like.device).expand(shape).contiguous()
    return torch.full(shape, value, dtype=like.dtype, device=like.device)


def member_sqrt(value: float | torch.Tensor) -> float | torch.Tensor:
    """√value of a float or of a group's per-member tensor."""
    return value.sqrt() if torch.is_tensor(value) else math.sqrt(value)


class _MemberValues:
    """A group's configuration as a family reads it: the first member's fields, except
    ``names``, each a float64 tensor (M, 1, 1) of every member's value."""

    def __init__(self, configs: list[FitConfig], names: tuple[str, ...]):
        self._configs, self._names = configs, names

    def __getattr__(self, name: str) -> Any:
        if name in self._names:
            values = [float(getattr(c, name)) for c in self._configs]
            return torch.tensor(values, dtype=torch.float64).reshape(-1, 1, 1)
        return getattr(self._configs[0], name)


def loc_scale(head: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An encoder head's two halves as a location and a scale (the second half is log σ²)."""
    loc, log_var = head.chunk(2, dim=-1)
    return loc, torch.exp(0.5 * log_var)
