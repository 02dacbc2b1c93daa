"""Datasets as in-memory tensors, dynamic binarisation, and where the files live."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ConfigError, DataError

ENV_DATA = "PYRO_DVAE_DATA"
TEST_BINARIZE_SEED = 20170101  # one fixed binarisation of the test set for every run


@dataclass
class Dataset:
    """Grey-level training images in [0, 1] and a test set binarised once, as (N, D) tensors.

    ``name``: the dataset's name (``mnist``, ``digits``, ...); ``train``: (N, D) float grey
    levels, binarised afresh by the trainer every epoch; ``train_labels``: (N,) int64 class
    labels; ``test``: (N_test, D) floats, 0 or 1, binarised once with a fixed seed so that
    every run is scored on the same images; ``test_labels``: (N_test,) int64;
    ``image_shape``: (height, width) of an image, whose product is D. :func:`load_dataset`
    makes one.
    """

    name: str
    train: torch.Tensor
    train_labels: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor
    image_shape: tuple[int, int]

    @property
    def input_dim(self) -> int:
        """Pixels per image, D."""
        return self.train.shape[1]

    def head(self, n: int) -> Dataset:
        """The first ``n`` images of each split (what a config's ``subset`` keeps)."""
        if n > len(self.train):
            raise ConfigError(f"--subset {n} is more than {self.name}'s {len(self.train)} images")
        return Dataset(
            self.name,
            self.train[:n],
            self.train_labels[:n],
            self.test[:n],
            self.test_labels[:n],
            self.image_shape,
        )

    def to(self, device: torch.device | str) -> Dataset:
        """The same data on ``device``."""
        return Dataset(
            self.name,
            self.train.to(device),
            self.train_labels.to(device),
            self.test.to(device),
            self.test_labels.to(device),
            self.image_shape,
        )


def binarize(grey: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One Bernoulli draw per pixel with the grey level as probability.

    ``grey``: grey levels in [0, 1], of any shape; ``generator``: the torch generator to draw
    from (on ``grey``'s device); ``None``: torch's global one. Returns 0s and 1s in a tensor of
    ``grey``'s shape and dtype.
    """
    return torch.bernoulli(grey, generator=generator)


def default_data_dir() -> Path:
    """``$PYRO_DVAE_DATA`` if set, else a per-user cache folder."""
    env = os.environ.get(ENV_DATA)
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "pyro-dvae"


# --------------------------------------------------------------------------- loaders

Loader = Callable[[Path], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
DATASETS: dict[str, Loader] = {}
IMAGE_SHAPES: dict[str, tuple[int, int]] = {}


def register_dataset(name: str, image_shape: tuple[int, int]):
    """Register ``fn(root) -> (train_x, train_y, test_x, test_y)`` with grey levels in [0, 1]."""

    def deco(fn: Loader) -> Loader:
        DATASETS[name] = fn
        IMAGE_SHAPES[name] = image_shape
        return fn

    return deco


def _download(cls, root: Path) -> None:
    """Fetch a torchvision dataset into ``root`` (kept separate so tests can stand in for it)."""
    cls(root=str(root), train=True, download=True)
    cls(root=str(root), train=False, download=True)


def _download_into(cls, root: Path, raw: Path) -> None:
    """Download into a private folder beside ``raw``, then move the files into ``raw``.

    A failed or interrupted download removes only its own folder (and ``root`` or the
    dataset's folders if it made them and they are empty): nothing that was there before,
    nothing another process wrote meanwhile. A successful one replaces the files of the
    same names in ``raw`` (torchvision checked the archives' MD5: a damaged file is repaired).
    """
    made = [p for p in (root, raw.parent, raw) if not os.path.lexists(p)]
    staging, done = None, False
    try:
        raw.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=raw.parent))
        _download(cls, staging)
        raw.mkdir(parents=True, exist_ok=True)  # a failing neighbour may have removed it
        for f in (staging / raw.parent.name / "raw").iterdir():
            f.replace(raw / f.name)
        done = True
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for folder in [] if done else reversed(made):  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: never a file, never what someone filled


def _raw_names(cls) -> list[str]:
    """The uncompressed raw file names torchvision looks for, e.g. train-images-idx3-ubyte."""
    return [os.path.splitext(os.path.basename(url))[0] for url, _ in cls.resources]


def _torchvision_loader(name: str, class_name: str):
    def load(root: Path):
        import torchvision.datasets as tvd

        cls = getattr(tvd, class_name)
        raw = root / class_name / "raw"
        try:
            cls(root=str(root), train=True, download=False)
            cls(root=str(root), train=False, download=False)
        except RuntimeError as err:
            if all((raw / f).is_file() for f in _raw_names(cls)):
                raise DataError(
                    f"{name} files in {raw} are damaged ({_short(err)}); "
                    f"delete them to download them again"
                ) from None
            missing = [f for f in _raw_names(cls) if not (raw / f).is_file()]
            try:
                _download_into(cls, root, raw)
            except Exception as err:  # no network, mirror down, disk full...
                raise DataError(
                    f"{name} is not in {raw} (missing {', '.join(missing)}) and could not be "
                    f"downloaded ({_short(err)}); copy those files there, point --data-dir or "
                    f"${ENV_DATA} at the folder that holds {raw.parent.name}/raw, or use "
                    "--dataset digits, which needs no download"
                ) from None
        except Exception as err:
            raise DataError(f"cannot read {name} from {raw}: {_short(err)}") from None
        parts = []
        for train in (True, False):
            try:
                ds = cls(root=str(root), train=train, download=False)
                x, y = ds.data, ds.targets
            except Exception as err:
                raise DataError(f"cannot read {name} from {raw}: {_short(err)}") from None
            if (
                x.dim() != 3
                or x.shape[1:] != (28, 28)
                or x.dtype != torch.uint8
                or len(y) != len(x)
            ):
                raise DataError(
                    f"{name} files in {raw} are damaged: images of shape {tuple(x.shape)}"
                )
            parts += [x.reshape(len(x), -1).float().div_(255.0), y.long()]
        return tuple(parts)

    return load


register_dataset("mnist", (28, 28))(_torchvision_loader("mnist", "MNIST"))
register_dataset("fashion-mnist", (28, 28))(_torchvision_loader("fashion-mnist", "FashionMNIST"))
register_dataset("kmnist", (28, 28))(_torchvision_loader("kmnist", "KMNIST"))


def digits_arrays():
    """scikit-learn's 8x8 digits as (1797, 64) grey levels 0..16 and (1797,) labels.

    Read straight from the file scikit-learn ships (its ``load_digits`` reads the same file),
    so that a digits run does not pay the seconds of importing scikit-learn; through
    ``load_digits`` where that file is not where this scikit-learn keeps it.
    """
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    folders = spec.submodule_search_locations if spec is not None else None
    path = Path(folders[0]) / "datasets" / "data" / "digits.csv.gz" if folders else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.data, bunch.target
    table = np.loadtxt(path, delimiter=",")  # numpy reads .gz itself
    return table[:, :-1], table[:, -1].astype(int)


@register_dataset("digits", (8, 8))
def _load_digits(root: Path):
    """scikit-learn's 8x8 digits (shipped with it): 1497 training and 300 test images."""
    pixels, labels = digits_arrays()
    x = torch.as_tensor(pixels, dtype=torch.float32) / 16.0
    y = torch.as_tensor(labels, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return x[300:], y[300:], x[:300], y[:300]


def load_dataset(name: str, data_dir: str | Path | None = None, subset: int = 0) -> Dataset:
    """Load ``name`` into memory; ``subset > 0`` keeps the first ``subset`` images of each split.

    ``name``: ``mnist``, ``fashion-mnist``, ``kmnist`` (torchvision's, downloaded into
    ``data_dir`` when missing) or ``digits`` (scikit-learn's 8x8 digits, no download);
    ``data_dir``: the folder holding them; ``None``: ``$PYRO_DVAE_DATA``, else
    ``~/.cache/pyro-dvae`` (under ``$XDG_CACHE_HOME`` if set). Returns a :class:`Dataset` on
    the CPU; data that cannot be read or fetched raises :class:`~pyro_dvae.errors.DataError`.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(sorted(DATASETS))}")
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    train_x, train_y, test_x, test_y = DATASETS[name](root)
    gen = torch.Generator().manual_seed(TEST_BINARIZE_SEED)
    test_bin = binarize(test_x, gen)  # a subset's test images are binarised as in the whole set
    data = Dataset(name, train_x.contiguous(), train_y, test_bin, test_y, IMAGE_SHAPES[name])
    return data.head(subset) if subset else data


def _short(err: BaseException) -> str:
    """An error in one line: its first, and where that only introduces the rest (as
    torchvision's ``Error downloading x.gz:`` before each mirror's failure), the last."""
    text = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not text:
        return type(err).__name__
    if len(text) > 1 and text[0].endswith(":"):
        return f"{text[0]} {text[-1]}"
    return text[0]
