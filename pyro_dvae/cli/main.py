"""The click group of ``pyro-dvae`` and what its commands share."""

from __future__ import annotations

import signal
import sys
import warnings
from pathlib import Path

import click

from ..data import ENV_DATA
from ..errors import PyroDvaeError
from ..signals import signal_of, stop_on_signals


class _OneLineErrors(click.Group):
    """Every error a user can act on is printed as one ``Error: ...`` line."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        warnings.formatwarning = _one_line_warning
        try:
            with stop_on_signals():  # SIGTERM and SIGHUP stop a command as Ctrl-C does
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
        except (click.Abort, KeyboardInterrupt) as err:
            signum = signal_of(err)
            click.echo(
                "Aborted." if signum == signal.SIGINT else f"Stopped by {_name(signum)}.", err=True
            )
            sys.exit(128 + signum)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pyro-dvae")
def cli() -> None:
    """VAEs with Gaussian, Logit-normal, Beta, Concrete or categorical latents, in Pyro."""


GUIDE_HELP = (
    "Your own guide: the one the run was trained with (fit --guide, package.module:factory "
    "or file.py:factory), named again, as a run folder's own config is never imported."
)
#: ``--progress``, the same in every command that draws a bar
PROGRESS_HELP = "Show a progress bar."
#: ``--seed`` of the commands that read runs: the random seed, and what it picks there
SEED_HELP = "Random seed: {}."


def _name(signum: int) -> str:
    return signal.Signals(signum).name


def interrupted_line(signum: int, what: str) -> str:
    """``Interrupted after ...`` for Ctrl-C, ``Stopped by SIGTERM after ...`` otherwise."""
    head = "Interrupted" if signum == signal.SIGINT else f"Stopped by {_name(signum)}"
    return f"{head}{what}" if what.startswith(";") else f"{head} {what}"


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def log_line(msg: str) -> None:
    """A message on stderr that does not break a tqdm bar."""
    from tqdm.auto import tqdm

    tqdm.write(msg, file=sys.stderr)


# options several commands share: declared once here
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help=f"Dataset root [default: ${ENV_DATA}, else $XDG_CACHE_HOME/pyro-dvae, else "
    "~/.cache/pyro-dvae].",
)
PICTURES_ON_CPU = "cpu by default here: drawing needs little compute"
THREADS_HELP = "CPU threads for torch"
threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None, help=f"{THREADS_HELP}."
)


def device_option(default: str = "auto", why: str = ""):
    """``--device``; ``why`` says why a command defaults to other than ``auto``."""
    help = (
        "auto ($PYRO_DVAE_DEVICE if set, else CUDA when available), cpu, cuda or cuda:N"
        + (f"; {why}" if why else "")
        + "."
    )
    return click.option("--device", default=default, show_default=True, help=help)


def set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
