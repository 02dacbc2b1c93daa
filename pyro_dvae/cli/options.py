"""Command-line options generated from the configuration fields (:data:`~pyro_dvae.config.PARAMS`).

``fit`` gets one option per field with the field's default; ``sweep`` gets the grid
axes as repeatable options and every other field as an option applied to all runs
when given. Help, choices and defaults come from the field's declaration.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import click
from click.core import ParameterSource

from ..config import FAMILY_PARAMS, PARAMS, FitConfig, check_family_field
from ..params import Param


def _option(p: Param, for_sweep: bool, multiple_axes: bool = True) -> Callable:
    """``for_sweep``: no default (applied only when given), axes repeatable."""
    multiple = for_sweep and p.axis and multiple_axes
    kwargs: dict = {"help": p.help}
    if p.kind is bool:
        flag = f"{p.flag}/--no-{p.name.replace('_', '-')}"
        default = None if for_sweep else p.default
        return click.option(flag, p.name, default=default, show_default=not for_sweep, **kwargs)
    kwargs["type"] = click.Choice(sorted(p.choices())) if p.choices else p.kind
    if multiple:
        return click.option(p.flag, p.name, multiple=True, **kwargs)
    if for_sweep:
        return click.option(p.flag, p.name, default=None, **kwargs)
    return click.option(p.flag, p.name, default=p.default, show_default=True, **kwargs)


def config_options(for_sweep: bool = False) -> Callable:
    """Decorate a command with one option per :class:`FitConfig` field."""

    def deco(command: Callable) -> Callable:
        for p in reversed(PARAMS.values()):
            command = _option(p, for_sweep)(command)
        return command

    return deco


def model_options(command: Callable) -> Callable:
    """The fields that define a model (family, latent size, width, the dataset that sets
    its input size, and each family's own), as options without defaults: for commands
    that build an untrained model to compare its estimators. A field that one of a family's
    variants sets (Concrete's ``--kl``) chooses an estimator, which the comparison covers: it
    is left out."""
    from ..families import FAMILIES

    chosen = {k for f in FAMILIES.values() for v in f.variants.values() for k in v}
    names = [
        "family",
        "latent_dim",
        "hidden",
        "dataset",
        *(n for n in FAMILY_PARAMS if n not in chosen),
    ]
    for name in reversed(names):
        command = _option(PARAMS[name], for_sweep=True, multiple_axes=False)(command)
    return command


def config_from(options: dict) -> FitConfig:
    """The validated config of ``fit``'s options; a family's own option given for another
    family is refused even at its default value (``--family gaussian --alpha 1``)."""
    ctx = click.get_current_context(silent=True)
    for name in FAMILY_PARAMS if ctx is not None else ():
        if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT):
            check_family_field(name, options["family"])
    return FitConfig(**{name: options[name] for name in PARAMS}).validate(new=True)


def renamed(old: str, flag: str, new: str, why: str, **kwargs) -> Callable:
    """Keep ``old``, a flag a command had before it took ``flag`` (whose parameter is
    ``new``), working for scripts: hidden from ``--help``, it sets ``new`` with one warning
    line that says ``why`` the name changed. Decorate below the command's own options."""
    hidden = f"renamed_{new}"

    def deco(command: Callable) -> Callable:
        @functools.wraps(command)
        def run(*args, **params):
            value = params.pop(hidden)
            if value is not None:
                ctx = click.get_current_context()
                if ctx.get_parameter_source(new) == ParameterSource.COMMANDLINE:
                    raise click.UsageError(f"give {flag} (or the old {old}), not both")
                click.echo(f"warning: {old} is now {flag} ({why})", err=True)
                params[new] = value
                ctx.set_parameter_source(new, ParameterSource.COMMANDLINE)  # typed, if as old
            return command(*args, **params)

        return click.option(old, hidden, default=None, hidden=True, **kwargs)(run)

    return deco


def markdown_table() -> str:
    """The configuration fields as a Markdown table (``docs/cli.md`` holds this text)."""
    owners = {name: " or ".join(f.name for f in fams) for name, (_, fams) in FAMILY_PARAMS.items()}
    rows = ["| option | default | family | meaning |", "| --- | --- | --- | --- |"]
    for p in PARAMS.values():
        flag = f"`{p.flag}/--no-{p.flag[2:]}`" if p.kind is bool else f"`{p.flag}`"
        choices = f" ({', '.join(sorted(p.choices()))})" if p.choices else ""
        default = f"`{p.default}`" if p.default != "" else ""
        rows.append(f"| {flag} | {default} | {owners.get(p.name, 'all')} | {p.help}{choices} |")
    return "\n".join(rows) + "\n"
