"""Bringing your own guide: loading one by import path, and checking it before training.

A guide factory is called as ``factory(family, input_dim, hidden)`` and returns an
``nn.Module`` (or ``PyroModule``) whose ``forward(x)`` samples the latent site
``z`` inside ``pyro.plate("data", x.shape[0])``, with the prior's support and
event shape and a reparameterised (``rsample``) distribution. ``--guide
package.module:factory`` names one; a file path works too
(``scripts/guides/flow.py:make_guide``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch import nn

from .errors import ConfigError
from .families import LatentFamily
from .fileio import first_line

GuideFactory = Callable[[LatentFamily, int, int], nn.Module]


class GuideError(ConfigError):
    """A user guide that cannot train this model (named before training starts)."""


def load_factory(spec: str) -> GuideFactory:
    """``package.module:factory`` or ``path/to/file.py:factory`` → the factory."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise GuideError(
            f"--guide {spec!r} must look like package.module:factory or file.py:factory"
        )
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise GuideError(f"--guide: no such file {path}")
            name = f"pyro_dvae_user_guide_{path.stem}"
            spec_ = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec_)
            sys.modules[name] = module
            spec_.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except GuideError:
        raise
    except (Exception, SystemExit) as err:  # a module may even call sys.exit at import
        what = f"exited with {err.code}" if isinstance(err, SystemExit) else first_line(err)
        raise GuideError(f"--guide: cannot import {module_name}: {what}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise GuideError(f"--guide: {module_name} has no callable {attr!r}")
    return factory


def build_guide(spec: str, family: LatentFamily, input_dim: int, hidden: int) -> nn.Module:
    factory = load_factory(spec)
    try:
        guide = factory(family, input_dim, hidden)
    except (Exception, SystemExit) as err:
        what = f"exited with {err.code}" if isinstance(err, SystemExit) else first_line(err)
        raise GuideError(
            f"--guide {spec}: calling it as factory(family, input_dim, hidden) failed: "
            f"{type(err).__name__}: {what}"
        ) from None
    if not isinstance(guide, nn.Module):
        raise GuideError(
            f"--guide {spec} returned a {type(guide).__name__}, not an nn.Module "
            "(its weights must be saved in the checkpoint)"
        )
    return guide


def check_guide(model: Callable, guide: Callable, x: torch.Tensor) -> None:
    """Raise :class:`GuideError` naming the first way ``guide`` cannot train ``model``.

    ``model`` and ``guide``: Pyro callables of a batch (a :class:`~pyro_dvae.vae.VAE`'s
    ``model`` and the guide to check); ``x``: a few images (batch, D) to trace both on. The
    guide must run, sample exactly the model's latent sites, each with ``rsample``, in the
    prior's batch and event shapes and inside its support.
    """
    try:
        guide_tr = prune_subsample_sites(poutine.trace(guide).get_trace(x))
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        hint = ""
        if "Shape mismatch" in first:
            hint = " (is the latent site sampled with .to_event(1) inside pyro.plate('data')?)"
        raise GuideError(
            f"the guide failed on a batch of shape {tuple(x.shape)}: {first}{hint}"
        ) from None
    model_tr = prune_subsample_sites(poutine.trace(poutine.block(model, hide=["x"])).get_trace(x))
    latent = {n for n, s in model_tr.nodes.items() if s["type"] == "sample"}
    guided = {
        n for n, s in guide_tr.nodes.items() if s["type"] == "sample" and not s["is_observed"]
    }
    if latent - guided:
        raise GuideError(
            f"the guide has no sample site {', '.join(map(repr, sorted(latent - guided)))}; "
            f"it samples {', '.join(map(repr, sorted(guided))) or 'nothing'}"
        )
    if guided - latent:
        raise GuideError(
            f"the guide samples {', '.join(map(repr, sorted(guided - latent)))}, "
            "which the model does not have"
        )
    for name in sorted(latent):
        q, p = guide_tr.nodes[name]["fn"], model_tr.nodes[name]["fn"]
        if not q.has_rsample:
            raise GuideError(
                f"the guide's {type(q).__name__} at site {name!r} has no rsample; "
                "pyro-dvae trains reparameterised guides"
            )
        if q.event_shape != p.event_shape or q.batch_shape != p.batch_shape:
            raise GuideError(
                f"site {name!r}: the guide's shape (batch {tuple(q.batch_shape)}, event "
                f"{tuple(q.event_shape)}) is not the prior's (batch {tuple(p.batch_shape)}, "
                f"event {tuple(p.event_shape)}); sample it inside pyro.plate('data') with "
                ".to_event"
            )
        value = guide_tr.nodes[name]["value"]
        inside = p.support.check(value)
        if not bool(torch.as_tensor(inside).all()):
            raise GuideError(
                f"site {name!r}: the guide's {type(q).__name__} draws values outside the "
                f"prior's support ({p.support})"
            )
