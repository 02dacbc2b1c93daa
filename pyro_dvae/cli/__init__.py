"""The ``pyro-dvae`` command line: one module per command."""

from . import (  # noqa: F401  (importing a module registers its commands)
    estimators,
    evaluate,
    fit,
    leaderboard,
    plot,
    report,
    show,
    sweep,
)
from .group import cli


def main() -> None:
    cli()


__all__ = ["cli", "main"]
