"""An annealed temperature, shared by the relaxed families (Concrete, and the Bernoulli
family's relaxations): τ = max(τ_min, τ_0 · exp(−rate · step)), Jang et al.'s schedule
updated every step; its value is per-step state (checkpointed, logged) and enters a
compiled step as an input rather than as a constant frozen at the first step."""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from ..params import Param

TAU = Param(
    "tau",
    float,
    1.0,
    "bernoulli and categorical: the relaxation's temperature (initial value when annealed): "
    "logitnormal reads z = sigmoid(y / tau) in q and p alike; concrete and straight-through "
    "draw q's Concrete at tau (their KL is the discrete codes', so no prior temperature "
    "enters); 1 is the paper's Logit-normal and Jang et al.'s start. Not --temperature: "
    "that is --family concrete's posterior temperature (its own default), beside its "
    "--prior-temperature.",
    positive=True,
    short="tau",
)
ANNEAL_RATE = Param(
    "anneal_rate",
    float,
    0.0,
    "Relaxations (the initial temperature: concrete's --temperature, bernoulli's and "
    "categorical's --tau): temperature = max(min, initial * exp(-rate * step)); 0 keeps it "
    "fixed.",
    low=0.0,
    short="anneal",
)
MIN_TEMPERATURE = Param(
    "min_temperature",
    float,
    0.5,
    "Relaxations: floor of the annealed temperature (--temperature, --tau).",
    positive=True,
    short="tmin",
)


class AnnealedTemperature:
    """Mixin of a latent family: ``temperature`` follows the schedule of the family's
    ``initial_temperature``, ``anneal_rate`` and ``min_temperature`` (floats, or a group's
    per-member tensors)."""

    initial_temperature: float | torch.Tensor
    anneal_rate: float | torch.Tensor
    min_temperature: float | torch.Tensor
    temperature: float | torch.Tensor
    _temperature_input: torch.Tensor | None = None

    def set_schedule(self, config) -> None:
        """The schedule of a family whose temperature field is ``tau``."""
        self.initial_temperature = config.tau
        self.anneal_rate = config.anneal_rate
        self.min_temperature = config.min_temperature
        self.temperature = self.temperature_at(0)

    def state(self):
        return {"temperature": self.temperature}

    def load_state(self, state):
        temperature = float(state.get("temperature", math.nan))
        if math.isfinite(temperature):
            self.temperature = temperature

    def temperature_at(self, step: int) -> float | torch.Tensor:
        """τ at ``step`` (a group's family: one per member, a tensor)."""
        if torch.is_tensor(self.anneal_rate):
            decayed = self.initial_temperature * torch.exp(-self.anneal_rate * step)
            annealed = torch.maximum(self.min_temperature, decayed)
            return torch.where(self.anneal_rate == 0, self.initial_temperature, annealed)
        if self.anneal_rate == 0.0:
            return self.initial_temperature
        decayed = self.initial_temperature * math.exp(-self.anneal_rate * step)
        return max(self.min_temperature, decayed)

    def set_step(self, step: int) -> None:
        self.temperature = self.temperature_at(step)

    def step_inputs(self, like):
        return (as_tensor_like(like, self.temperature),)

    def use_step_inputs(self, inputs):
        self._temperature_input = inputs[0] if inputs else None

    def temperature_tensor(self, like: torch.Tensor) -> torch.Tensor:
        """τ now, on ``like``'s device and dtype (inside a compiled step: the graph's input)."""
        if self._temperature_input is not None:
            return self._temperature_input
        return as_tensor_like(like, self.temperature)


def check_schedule(config, relaxed: bool, new: bool, estimators: str) -> None:
    """Refuse a schedule given to an estimator without a temperature (``estimators``: the
    ones that have one, for the message), or one that starts below its floor."""
    if new and not relaxed:
        for p in (TAU, ANNEAL_RATE, MIN_TEMPERATURE):
            if getattr(config, p.name) != p.default:
                raise ConfigError(
                    f"{p.flag} sets the relaxation's temperature: use it with --estimator "
                    f"{estimators}"
                )
    if new and config.anneal_rate and config.tau < config.min_temperature:
        raise ConfigError(
            f"--tau {config.tau:g} is below --min-temperature {config.min_temperature:g}: "
            "annealing would hold it at the floor from step 0"
        )


def as_tensor_like(like: torch.Tensor, value: float | torch.Tensor) -> torch.Tensor:
    """A temperature on ``like``'s device and dtype: 0-dim, or a group's (M, 1, 1)."""
    if torch.is_tensor(value):
        return value.to(dtype=like.dtype, device=like.device)
    return like.new_tensor(value)
