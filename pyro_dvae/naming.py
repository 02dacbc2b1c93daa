"""Grids of configurations and the names of their runs: one function names every run.

A run's name is its family's slug (``logitnormal-d20-a1.78``, ``concrete-20x10``), its
dataset unless that is MNIST (``-digits``: MNIST runs keep the names they had before names
carried the dataset, so committed results and sweeps resume), and then, sorted by field, a
part for every field that is off its default and has a short name (``-tq1``,
``-kl-discrete``, ``-seed2``), or that varies between runs of the same slug in a grid.
``fit`` names its default folder and ``sweep`` its runs with it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from .config import FAMILY_PARAMS, PARAMS, RESUMABLE_FIELDS, FitConfig
from .errors import ConfigError
from .families import FAMILIES


def run_name(config: FitConfig, vary: Iterable[str] = ()) -> str:
    """A readable, unique folder name: the family's slug plus the fields in ``vary``."""
    family = FAMILIES[config.family]
    in_slug = family.slug_fields(config) | {"dataset"}
    name = family.slug(config) + _dataset_part(config)
    shown = {p.name for p in PARAMS.values() if p.short and getattr(config, p.name) != p.default}
    for key in sorted((set(vary) | shown) - in_slug - RESUMABLE_FIELDS):
        p = PARAMS[key]
        name += p.name_part(getattr(config, key), p.short or key.replace("_", "-"))
    return name


def _dataset_part(config: FitConfig) -> str:
    return "" if config.dataset == PARAMS["dataset"].default else f"-{config.dataset}"


def older_name(name: str, config: FitConfig) -> str:
    """The name a run had before run names carried the dataset (the same for MNIST)."""
    part = _dataset_part(config)
    slug = FAMILIES[config.family].slug(config)
    return slug + name[len(slug) + len(part) :] if part else name


def grid(axes: dict[str, Sequence[Any]], **common: Any) -> list[FitConfig]:
    """The product over ``axes`` (field → values); a family's own axes vary its runs only.

    ``axes`` must name ``family`` and ``latent_dim``; an axis that no family of the grid
    takes is an error, so a typo does not silently shrink the grid.
    """
    families = axes.get("family") or ()
    dims = axes.get("latent_dim") or ()
    if not families or not dims:
        raise ConfigError("a grid needs at least one --family and one --latent-dim")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        PARAMS["family"].check(unknown[0])
    own = {f: {p.name for p in FAMILIES[f].params} for f in families}
    given = [k for k in axes if k not in ("family", "latent_dim") and axes[k]]
    for key in given:
        if key in FAMILY_PARAMS and not any(key in own[f] for f in families):
            raise ConfigError(f"{PARAMS[key].flag} applies to none of the grid's families")
    configs = []
    for family in families:
        names = [k for k in given if k in own[family] or k not in FAMILY_PARAMS]
        values = [axes[k] for k in names]
        for dim, combo in itertools.product(dims, itertools.product(*values)):
            fields_ = dict(zip(names, combo, strict=True), family=family, latent_dim=dim)
            configs.append(FitConfig(**fields_, **common))
    return configs


def with_seeds(configs: list[FitConfig], seeds: Iterable[int]) -> list[FitConfig]:
    """Each configuration once per seed (the seed axis of a sweep)."""
    return [replace(c, seed=s) for c in configs for s in seeds]


def varying_fields(configs: list[FitConfig]) -> set[str]:
    """Fields whose value differs between configurations of the same base name."""
    by_base: dict[str, list[FitConfig]] = {}
    for c in configs:
        by_base.setdefault(run_name(c), []).append(c)
    vary = set()
    for group in by_base.values():
        for f in fields(FitConfig):
            if len({json.dumps(getattr(c, f.name)) for c in group}) > 1:
                vary.add(f.name)
    return vary


def named_grid(configs: list[FitConfig], sweep_dir: Path | None = None) -> dict[str, FitConfig]:
    """The grid's configurations by run name (a configuration given twice counts once); a
    run of ``sweep_dir`` made before run names carried the dataset keeps its older name."""
    vary = varying_fields(configs)
    named: dict[str, FitConfig] = {}
    for c in configs:
        name = run_name(c, vary)
        older = older_name(name, c)
        if sweep_dir is not None and older != name and not (sweep_dir / "runs" / name).exists():
            name = older if (sweep_dir / "runs" / older).exists() else name
        if name in named:
            if not named[name].differences(c):
                continue
            raise ConfigError(f"two configurations of the grid would share the name {name}")
        named[name] = c
    return named
