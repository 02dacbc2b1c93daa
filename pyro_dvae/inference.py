"""ELBO estimators, which KL each latent site gets, and ELBO evaluation with its parts."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.infer import (
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
    config_enumerate,
)
from pyro.infer.util import torch_item, zero_grads
from pyro.poutine.util import prune_subsample_sites

from .compiled_elbo import CompiledELBO
from .iwae_objective import IWAEELBO, STLTraceELBO
from .pyro_internals import PerImageELBO, ScaledPerImageELBO
from .score_function import NVILELBO, VIMCOELBO, BaselineNet, DisARMELBO

ANALYTIC, MONTE_CARLO = "analytic", "monte-carlo"

#: the seed of the test set's scoring during training: evaluation draws its own samples and
#: leaves training's random streams alone
EVAL_SEED = 12345


@contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Draws from their own ``seed``, validation off; the caller's random state (and the
    CUDA generator of ``device``) is as it was afterwards, so scoring never moves training."""
    devices = [device] if device is not None and torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices), pyro.validation_enabled(False):
        torch.manual_seed(seed)
        yield


class MeanTraceELBO(CompiledELBO, PerImageELBO, Trace_ELBO):
    """``Trace_ELBO``: KL estimated by Monte Carlo, ``log q(z) − log p(z)`` at the sample."""


class MeanTraceMeanFieldELBO(CompiledELBO, PerImageELBO, TraceMeanField_ELBO):
    """``TraceMeanField_ELBO``: analytic KL where one is registered, else Monte Carlo."""

    analytic_kl = True


class MeanTraceEnumELBO(ScaledPerImageELBO, TraceEnum_ELBO):
    """``TraceEnum_ELBO`` over a guide whose discrete sites are enumerated in parallel: the
    exact ELBO and its exact gradient, a sum over every code (no sampling)."""

    #: its loss is the exact sum (:mod:`pyro_dvae.families.enumeration` scores it)
    exact = True

    def prepare_guide(self, guide):
        return config_enumerate(guide, "parallel")


_baselines = itertools.count()


class MeanTraceGraphELBO(ScaledPerImageELBO, TraceGraph_ELBO):
    """``TraceGraph_ELBO``: score-function gradients for non-reparameterised sites, each
    with only its downstream costs and a baseline subtracted; reparameterised sites as in
    ``Trace_ELBO``.

    Baselines (``baseline``): ``decaying``, a decaying average of the per-image ELBO over
    steps, b ← β b + (1 − β) ELBO (Pyro's own decaying baseline averages per position in
    the batch, which breaks on a smaller last batch); ``neural``, that average plus a learned
    residual r(x) (centred as in Mnih & Gregor, 2014; an MLP whose output starts at zero,
    trained by Pyro on the squared error to the downstream cost); ``none``. Their state
    (``state_dict``) is saved in a run's checkpoint.
    """

    def __init__(self, *args, baseline: str = "decaying", **kwargs):
        super().__init__(*args, **kwargs)
        self.baseline = baseline
        self.average: float | None = None  # per-image ELBO, for the decaying baseline
        self.net: torch.nn.Module | None = None  # b(x), for the neural baseline
        self.net_name = f"baseline{next(_baselines)}"  # its own params in Pyro's store

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = super().loss_and_grads(model, guide, *args, **kwargs)
        if self.baseline != "none" and math.isfinite(loss):
            elbo = -float(loss)
            beta = BASELINE_BETA
            self.average = elbo if self.average is None else beta * self.average + (1 - beta) * elbo
        return loss

    def prepare_guide(self, guide):
        if self.baseline == "none":
            return guide

        def with_baseline(x, *args, **kwargs):
            scale = 1.0 / x.shape[0]
            if self.baseline == "neural":
                net = self.baseline_net(x)
                pyro.module(self.net_name, net)
                centre = self.average or 0.0  # b(x) = average + a learned residual

                def baseline(inp):
                    return scale * (centre + net(inp))

                options = {"nn_baseline": baseline, "nn_baseline_input": x}
            elif self.average is None:
                return guide(x, *args, **kwargs)
            else:
                options = {"baseline_value": x.new_full(x.shape[:1], scale * self.average)}

            def config(site):
                if site["type"] != "sample" or site["is_observed"] or site["fn"].has_rsample:
                    return {}
                return {"baseline": options}

            return poutine.infer_config(guide, config)(x, *args, **kwargs)

        return with_baseline

    def baseline_net(self, x: torch.Tensor) -> torch.nn.Module:
        if self.net is None:
            self.net = BaselineNet(x.shape[-1]).to(device=x.device, dtype=x.dtype)
        return self.net

    def state_dict(self) -> dict[str, Any]:
        """The baseline's state, for a checkpoint (plain floats and tensors)."""
        state: dict[str, Any] = {"average": self.average}
        if self.net is not None:
            state["net"] = self.net.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], like: torch.Tensor) -> None:
        self.average = state.get("average")
        if "net" in state:
            with torch.random.fork_rng(devices=[]):  # its random init draws from no one's stream
                net = self.baseline_net(like)
            net.load_state_dict(state["net"])


#: the decaying baseline's memory: b ← β b + (1 − β) (the last step's per-image ELBO)
BASELINE_BETA = 0.95
#: the score-function baselines ``--baseline`` chooses from
BASELINES = ("decaying", "neural", "none")

#: ``--elbo`` name → (ELBO class, whether it uses analytic KLs where it can)
ELBOS: dict[str, tuple[type, bool]] = {
    "trace": (MeanTraceELBO, False),
    "analytic": (MeanTraceMeanFieldELBO, True),
    "enum": (MeanTraceEnumELBO, True),
    "tracegraph": (MeanTraceGraphELBO, False),
    "nvil": (NVILELBO, False),
    "vimco": (VIMCOELBO, False),
    "disarm": (DisARMELBO, True),  # the entropy of q is analytic
    "iwae": (IWAEELBO, False),
}

#: ``--gradient``: the ELBOs that take one other than ``standard`` → (their class then, those)
GRADIENT_ELBOS: dict[str, tuple[type, tuple[str, ...]]] = {
    "trace": (STLTraceELBO, STLTraceELBO.gradients()),
    "iwae": (IWAEELBO, tuple(g for g in IWAEELBO.gradients() if g != "standard")),
}


class SVI(pyro.infer.SVI):
    """``pyro.infer.SVI`` whose step asks a pyro-dvae ELBO for the parameters it reached.

    Same update as ``pyro.infer.SVI.step``; with a compiled ELBO it skips the
    per-step param-capturing trace. Any other ELBO takes ``pyro.infer.SVI.step``.

    ``model`` and ``guide``: the Pyro callables; ``optim``: a Pyro optimiser (such as
    :class:`~pyro_dvae.optim.FusedClippedAdam`); ``loss``: the ELBO (:func:`make_elbo`);
    ``kwargs`` go to ``pyro.infer.SVI``.
    """

    def __init__(self, model, guide, optim, loss, **kwargs):
        super().__init__(model, guide, optim, loss, **kwargs)
        self.elbo = loss  # pyro's SVI keeps only the bound methods of ``loss``

    def step(self, *args, **kwargs) -> float:
        if not isinstance(self.elbo, CompiledELBO):
            return super().step(*args, **kwargs)
        loss, params = self.elbo.loss_and_params(self.model, self.guide, *args, **kwargs)
        self.optim(params)
        zero_grads(params)
        return torch_item(loss)


def make_elbo(
    name: str,
    num_particles: int = 1,
    compile: bool = False,
    step_inputs: Any = None,
    plates: int = 1,
    objective: Any = None,
    **options: Any,
):
    """The ``--elbo`` estimator; ``step_inputs`` feeds per-step values to a compiled graph;
    ``plates`` is the plate nesting (2 for a group: members and data); ``objective``: a
    :class:`~pyro_dvae.schedules.KLObjective` (trace and analytic only); ``options`` go to
    the estimator that takes them (``baseline`` for ``tracegraph``, ``gradient`` for
    ``iwae`` and ``trace``).

    ``name``: a key of :data:`ELBOS`; ``num_particles``: samples per image in each estimate;
    ``compile``: compile the step with ``torch.compile`` (``trace``, ``analytic`` and
    ``iwae``, which step eagerly, with a warning, where they cannot compile; the
    score-function ELBOs always step eagerly); ``step_inputs``: where the values that
    change from step to step come from (an annealed temperature), an object with methods
    ``step_inputs`` and ``use_step_inputs``, such as a latent family. Returns a
    ``pyro.infer.ELBO`` whose loss is the mean −ELBO per image (VIMCO's: its K-sample bound;
    IWAE's: the importance-weighted bound).
    """
    cls, _ = ELBOS[name]
    if cls is not MeanTraceGraphELBO:
        options.pop("baseline", None)
    gradient = options.pop("gradient", "standard")
    if gradient != "standard":
        cls = GRADIENT_ELBOS[name][0]
        options["gradient"] = gradient
    if objective is not None:
        from .schedules import StepInputs

        step_inputs = StepInputs(step_inputs, objective)
    elbo = cls(
        num_particles=num_particles,
        max_plate_nesting=plates,
        compile=compile,
        step_inputs=step_inputs,
        **options,
    )
    if objective is not None:
        elbo.objective = objective
    return elbo


def fully_reparameterized(model: Callable, guide: Callable, *args, **kwargs) -> bool:
    """Whether every latent site of the guide has ``rsample``."""
    _, guide_tr = _traces(model, guide, *args, **kwargs)
    return all(
        site["fn"].has_rsample
        for site in guide_tr.nodes.values()
        if site["type"] == "sample" and not site["is_observed"]
    )


def _traces(model: Callable, guide: Callable, *args, **kwargs):
    guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args, **kwargs)
    return prune_subsample_sites(model_tr), prune_subsample_sites(guide_tr)


def _has_analytic_kl(q, p) -> bool:
    try:
        kl_divergence(q, p)
    except NotImplementedError:
        return False
    return True


def kl_kinds(model: Callable, guide: Callable, *args, analytic: bool = True, **kwargs) -> dict:
    """For each latent site, the KL an estimator gets: ``analytic`` or ``monte-carlo``.

    With ``analytic=False`` (``Trace_ELBO``) every site is Monte Carlo. With
    ``analytic=True`` (``TraceMeanField_ELBO``) a site is analytic when a KL is
    registered for its (guide, prior) pair; Pyro silently falls back otherwise.
    ``model`` and ``guide`` are traced once on ``args`` and ``kwargs`` (a batch). Returns
    ``{site name: "analytic" or "monte-carlo"}``.
    """
    model_tr, guide_tr = _traces(model, guide, *args, **kwargs)
    kinds = {}
    for name, site in model_tr.nodes.items():
        if site["type"] == "sample" and not site["is_observed"]:
            q = guide_tr.nodes[name]["fn"]
            kinds[name] = ANALYTIC if analytic and _has_analytic_kl(q, site["fn"]) else MONTE_CARLO
    return kinds


@torch.no_grad()
def elbo_parts(
    model: Callable, guide: Callable, x: torch.Tensor, analytic: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image reconstruction ``−log p(x|z)`` and KL, each of shape ``(batch,)``.

    One posterior sample per image. The KL is analytic where ``analytic`` and a
    KL is registered, else ``log q(z|x) − log p(z)`` at the sample. ``model`` and
    ``guide``: Pyro callables of a batch with one ``data`` plate (a VAE's); ``x``: the
    images (batch, D). Returns the pair ``(recon, kl)``, without gradients.
    """
    model_tr, guide_tr = _traces(model, guide, x)
    recon = x.new_zeros(x.shape[0])
    kl = x.new_zeros(x.shape[0])
    for name, site in model_tr.nodes.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            recon = recon - site["fn"].log_prob(site["value"])
            continue
        q, p, z = guide_tr.nodes[name]["fn"], site["fn"], site["value"]
        if analytic and _has_analytic_kl(q, p):
            kl = kl + kl_divergence(q, p)
        else:
            kl = kl + q.log_prob(z) - p.log_prob(z)
    return recon, kl


def evaluate_elbo(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    analytic: bool = False,
    batch_size: int = 1000,
    num_samples: int = 1,
) -> dict[str, float]:
    """Mean −ELBO per image over ``x`` with its reconstruction and KL parts.

    ``model``, ``guide`` and ``analytic``: as for :func:`elbo_parts`; ``x``: the images
    (N, D); ``batch_size``: images per pass; ``num_samples``: posterior samples per image,
    averaged. Draws come from torch's global stream. Returns ``{"loss", "recon", "kl"}``
    as floats, in nats per image.
    """
    recon_total = kl_total = 0.0
    for _ in range(num_samples):
        for start in range(0, x.shape[0], batch_size):
            recon, kl = elbo_parts(model, guide, x[start : start + batch_size], analytic)
            recon_total += float(recon.sum())
            kl_total += float(kl.sum())
    n = x.shape[0] * num_samples
    return {"loss": (recon_total + kl_total) / n, "recon": recon_total / n, "kl": kl_total / n}
