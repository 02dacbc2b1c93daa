"""What every figure of pyro-dvae shares: matplotlib's object API, epoch axes, markers on
short series, atomic writes."""

from __future__ import annotations

from pathlib import Path

from .errors import StorageError


def figure(*args, figsize=None, layout=None, **kwargs):
    """A figure and its axes, as ``Figure.subplots`` makes them: matplotlib's object API,
    so no pyplot state is kept and no backend is chosen (files need none). matplotlib is
    imported here, by the commands that draw, not by every command that starts."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(*args, **kwargs)


def epoch_axis(ax) -> None:
    """An x axis of epochs: labelled so, its ticks whole numbers (epoch 1, 2, never 1.5)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # one epoch: "1"
    ax.set_xlabel("epoch")


#: a series of at most this many points has a marker at each: one point alone draws no line
MARKED_POINTS = 12


def point_marker(n: int) -> str | None:
    """The marker for a series of ``n`` points: ``"o"`` for few, none for a long curve."""
    return "o" if n <= MARKED_POINTS else None


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically (a reader never sees half a figure); the format
    follows the suffix (``.png``, ``.pdf``, ``.svg``)."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix or '.png'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        tmp.replace(path)
    except OSError as err:
        raise StorageError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path
