"""The ``pyro-dvae`` command line: one module per command."""

from . import (  # noqa: F401  (importing a module registers its commands)
    compare_estimators,
    evaluate,
    fit,
    leaderboard,
    plot,
    report,
    show,
    sweep,
)
from .main import cli


def main() -> None:
    cli()


__all__ = ["cli", "main"]
