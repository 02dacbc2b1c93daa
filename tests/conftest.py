import os
from pathlib import Path

import pyro
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def mnist_root() -> Path | None:
    """Where the MNIST raw files are: $PYRO_DVAE_DATA, else ../shared/data beside the repo."""
    for root in (os.environ.get("PYRO_DVAE_DATA"), SHARED_DATA):
        if root and (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
            return Path(root)
    return None


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    with pyro.validation_enabled(True):
        yield
    pyro.clear_param_store()
