"""The click group of ``pyro-dvae`` and what its commands share."""

from __future__ import annotations

import sys
import warnings

import click

from ..errors import PyroDvaeError


class _OneLineErrors(click.Group):
    """Every error a user can act on is printed as one ``Error: ...`` line."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        warnings.formatwarning = _one_line_warning
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except getattr(click.exceptions, "NoArgsIsHelpError", ()) as err:  # click >= 8.2
            click.echo(err.ctx.get_help(), err=True)
            sys.exit(err.exit_code)
        except click.ClickException as err:
            click.echo(f"Error: {err.format_message()}", err=True)
            sys.exit(err.exit_code)
        except PyroDvaeError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(err.exit_code)
        except (click.Abort, KeyboardInterrupt):
            click.echo("Aborted.", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pyro-dvae")
def cli() -> None:
    """VAEs with Gaussian, Logit-normal and Concrete latents, trained with Pyro."""


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def log_line(msg: str) -> None:
    """A message on stderr that does not break a tqdm bar."""
    from tqdm.auto import tqdm

    tqdm.write(msg, file=sys.stderr)


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise click.BadParameter("must be >= 1", param_hint="--threads")
        import torch

        torch.set_num_threads(threads)
