import os
from pathlib import Path

import pyro
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def mnist_root() -> Path | None:
    """Where the MNIST raw files are: $PYRO_DVAE_DATA, else ../shared/data beside the repo."""
    for root in (os.environ.get("PYRO_DVAE_DATA"), SHARED_DATA):
        if root and (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
            return Path(root)
    return None


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The test models are tiny: one thread is faster, and it does not stall on a busy
    machine, where OpenMP threads competing for cores slow torch down many times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    with pyro.validation_enabled(True):
        yield
    pyro.clear_param_store()


@pytest.fixture(autouse=True, scope="session")
def _auto_means_the_cpu():
    """``--device auto`` (every command's default) means the CPU here, as on CI, so a machine
    with CUDA runs the same suite; the CUDA tests name their device. Session-wide, so that
    module fixtures (runs trained once for many tests) see it too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYRO_DVAE_DEVICE", "cpu")
        yield


@pytest.fixture(autouse=True, scope="session")
def _compile_without_inductor():
    """Compiled steps run on the ``aot_eager`` backend: the captured graph and its
    AOTAutograd backward, without Inductor's minutes of code generation per graph;
    tests/test_compile.py compiles with Inductor itself."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYRO_DVAE_COMPILE_BACKEND", "aot_eager")
        yield


@pytest.fixture(autouse=True)
def _signal_handlers_restored():
    """A test that runs Ray Tune in this process leaves Tune's SIGINT handler installed
    (it swallows an interrupt with a warning); each test gets the handlers it started with."""
    import signal

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in before.items():
        if signal.getsignal(s) is not handler and handler is not None:
            signal.signal(s, handler)
