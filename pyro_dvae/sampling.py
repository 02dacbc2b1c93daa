"""Images of a trained run drawn from its prior: ``pd.sample`` and ``pyro-dvae sample``.

The draws are :meth:`VAE.sample`'s; the grid image is ``pictures``' (its panels, with gaps
between the images), imported only when one is drawn.
"""

from __future__ import annotations

from numbers import Integral
from pathlib import Path

import torch

from .data import IMAGE_SHAPES
from .errors import ConfigError
from .evaluation import LoadedRun, load_run
from .fileio import atomic_write

#: what ``write_samples`` writes, by the suffix of its path
SAMPLE_FORMATS = {".png": "a grid image", ".pt": "a tensor file"}


def sample_run(
    run: str | Path | LoadedRun,
    n: int,
    binary: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    guide: torch.nn.Module | str | None = None,
) -> torch.Tensor:
    """``n`` images of a trained run drawn from its prior (:meth:`VAE.sample`), shaped
    (n, h, w) like its dataset's images: pixel probabilities, or with ``binary`` one 0/1
    draw per pixel. ``run`` is a run directory (loaded with ``device`` and ``guide``, as
    :func:`~pyro_dvae.evaluation.load_run` does) or a run already loaded; ``seed`` makes
    the draws reproducible without moving the caller's random state. Returns the images as
    a float tensor on the model's device."""
    _check_whole(n, "the number of samples")
    loaded = run if isinstance(run, LoadedRun) else load_run(run, device, guide)
    images = loaded.vae.sample(n, binary=binary, seed=seed)
    return images.reshape(n, *IMAGE_SHAPES[loaded.config.dataset])


def write_samples(
    run_path: str | Path,
    out: str | Path,
    n: int,
    binary: bool = False,
    seed: int = 0,
    cols: int = 8,
    device: str | torch.device = "cpu",
    guide: torch.nn.Module | str | None = None,
) -> str:
    """Draw ``n`` samples of a run (:func:`sample_run`) into ``out``: ``.png``, a grid of
    them, ``cols`` to a row; ``.pt``, the (n, h, w) float32 tensor on the CPU
    (``torch.load(out, weights_only=True)`` reads it). Bad input is refused before anything
    is read or written. Returns what was written, in words."""
    out = Path(out)
    kinds = " or ".join(f"{k} ({v})" for k, v in SAMPLE_FORMATS.items())
    if out.suffix.lower() not in SAMPLE_FORMATS:
        raise ConfigError(f"cannot write samples to {out}: write them as {kinds}")
    if out.is_dir():
        raise ConfigError(f"cannot write samples to {out}: it is a folder; name a file ({kinds})")
    _check_whole(n, "the number of samples")
    _check_whole(cols, "the images per row")
    loaded = load_run(run_path, device, guide)
    images = sample_run(loaded, n, binary, seed).float().cpu()
    what = "binary draws" if binary else "Bernoulli means"
    if out.suffix.lower() == ".pt":
        atomic_write(out, lambda fh: torch.save(images, fh))
    else:
        from .plotting import save_figure
        from .run_pictures import Panel, draw_panels, run_title, tiled

        title = f"{n} prior samples, seed {seed} · {run_title(loaded.run_dir, loaded.epoch)}"
        panel = Panel(f"prior: {what}", tiled(images.flatten(1), cols, tuple(images.shape[1:])))
        save_figure(draw_panels([panel], title), out)
    return f"{n} prior samples of {loaded.run_dir.path} (epoch {loaded.epoch}), {what}"


def _check_whole(value, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ConfigError(f"{what} must be a whole number >= 1, not {value!r}")
