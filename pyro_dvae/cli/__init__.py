"""The ``pyro-dvae`` command line: one module per command."""

from . import estimators, evaluate, fit, plot, report, sweep  # noqa: F401  (registers the commands)
from .group import cli


def main() -> None:
    cli()


__all__ = ["cli", "main"]
