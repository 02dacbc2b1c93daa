"""Real MNIST on a slice of the shared data (found through $PYRO_DVAE_DATA)."""

import math

import pytest
import torch

from pyro_dvae.config import FitConfig
from pyro_dvae.data import load_dataset
from pyro_dvae.train import Trainer

from .conftest import mnist_root

ROOT = mnist_root()
pytestmark = pytest.mark.skipif(
    ROOT is None, reason="MNIST raw files not found (set PYRO_DVAE_DATA)"
)


def test_mnist_tensors():
    data = load_dataset("mnist", ROOT)
    assert data.train.shape == (60000, 784) and data.test.shape == (10000, 784)
    assert data.train.dtype == torch.float32
    assert 0.0 <= float(data.train.min()) and float(data.train.max()) == 1.0
    assert set(data.test.unique().tolist()) == {0.0, 1.0}
    assert sorted(data.train_labels.unique().tolist()) == list(range(10))
    # the test set is binarised with a fixed seed: the same on every load
    assert torch.equal(load_dataset("mnist", ROOT, subset=100).test, data.test[:100])
    # its pixel means follow the grey levels (mean grey level of MNIST is about 0.13)
    assert abs(float(data.test.mean()) - 0.1325) < 0.005


def test_mnist_slice_trains():
    cfg = FitConfig(
        family="logitnormal", alpha=1.78, latent_dim=8, hidden=200, epochs=2, subset=2000
    )
    trainer = Trainer(cfg, load_dataset("mnist", ROOT, subset=cfg.subset), "cpu", progress=False)
    trainer.fit()
    first, last = trainer.history
    assert math.isfinite(last["test_loss"])
    # an untrained decoder scores ~543 nats (784 log 2); two epochs on 2000 images get well below
    assert last["train_loss"] < first["train_loss"] < 784 * math.log(2)
    assert last["test_loss"] < 250
