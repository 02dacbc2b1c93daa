"""Sampling in one call (``VAE.sample``, ``pd.sample``, ``pyro-dvae sample``) and ``pd.fit``'s
``threads``.

Expectations come from outside the sampling code: a Gaussian prior's draws are torch's standard
normals from the same seed, decoded here through the decoder by hand; the files are read back
with ``torch.load(weights_only=True)`` and matplotlib's PNG reader.
"""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
import torch

import pyro_dvae as pd
from pyro_dvae.config import FitConfig
from pyro_dvae.errors import ConfigError
from pyro_dvae.run_pictures import prior_samples

from .helpers import assert_one_error_line, fit_args, invoke, run_ok

LATENT = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A two-epoch digits run with a Gaussian latent of size 3."""
    path = tmp_path_factory.mktemp("api") / "g"
    run_ok(fit_args(path, family="gaussian", latent_dim=LATENT))
    return path


def _by_hand(vae, n: int, seed: int, dtype=torch.float32):
    """The draws of a standard normal prior from ``seed``, decoded, and one binary draw each."""
    torch.manual_seed(seed)
    with torch.no_grad():
        z = torch.randn(n, LATENT, dtype=dtype)
        probs = torch.sigmoid(vae.decoder(z))
        return z, probs, torch.bernoulli(probs)


@pytest.mark.slow
def test_vae_sample_decodes_draws_of_the_prior(run):
    vae = pd.load_run(run).vae
    _, probs, binary = _by_hand(vae, 40, seed=7)
    images = vae.sample(40, seed=7)
    assert images.shape == (40, 64) and images.dtype == torch.float32
    assert ((images > 0) & (images < 1)).all()
    torch.testing.assert_close(images, probs)
    torch.testing.assert_close(vae.sample(40, binary=True, seed=7), binary)
    assert set(vae.sample(40, binary=True, seed=7).unique().tolist()) <= {0.0, 1.0}
    # the same seed gives the same images, another seed others
    assert torch.equal(vae.sample(40, seed=7), images)
    assert not torch.equal(vae.sample(40, seed=8), images)
    z, again = vae.sample(40, seed=7, return_z=True)
    torch.testing.assert_close(z, _by_hand(vae, 40, seed=7)[0])
    assert torch.equal(again, images)
    # show's prior_samples are these draws
    z2, shown = prior_samples(vae, 40, seed=7)
    assert torch.equal(z2, z) and torch.equal(shown, images)


def test_vae_sample_keeps_the_callers_random_state_and_follows_the_decoder(run):
    vae = pd.load_run(run).vae
    torch.manual_seed(123)
    state = torch.get_rng_state()
    vae.sample(10, seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # a seed of its own moves nothing
    unseeded = vae.sample(10)  # without a seed: torch's global stream
    torch.manual_seed(123)
    assert torch.equal(vae.sample(10), unseeded)
    vae = vae.double()
    z, images = vae.sample(5, seed=2, return_z=True)
    assert z.dtype == images.dtype == torch.float64
    torch.testing.assert_close(images, _by_hand(vae, 5, seed=2, dtype=torch.float64)[1])


@pytest.mark.parametrize("n", [0, -1, 2.0, True])
def test_vae_sample_refuses_a_count_that_is_not_positive(run, n):
    vae = pd.load_run(run).vae
    with pytest.raises(ValueError, match="whole number >= 1"):
        vae.sample(n)


def test_vae_sample_takes_numpy_counts_and_refuses_groups(run):
    vae = pd.load_run(run).vae
    assert vae.sample(np.int64(3), seed=0).shape == (3, 64)
    vae.members = 2  # a group's stacked networks: its members sample, not the group
    with pytest.raises(ValueError, match="group"):
        vae.sample(3)


def test_pd_sample_gives_images_of_the_datasets_shape(run):
    loaded = pd.load_run(run)
    images = pd.sample(run, 12, seed=4)
    assert images.shape == (12, 8, 8)
    torch.testing.assert_close(images.flatten(1), _by_hand(loaded.vae, 12, seed=4)[1])
    assert torch.equal(pd.sample(loaded, 12, seed=4), images)  # a loaded run as well
    binary = pd.sample(run, 12, binary=True, seed=4)
    torch.testing.assert_close(binary.flatten(1), _by_hand(loaded.vae, 12, seed=4)[2])
    with pytest.raises(ConfigError, match="whole number >= 1"):
        pd.sample(run, 0)


def test_the_sample_command_writes_a_tensor_file(run, tmp_path):
    out = tmp_path / "samples.pt"
    result = run_ok(["sample", str(run), "-n", "20", "--seed", "3", "--file", str(out)])
    assert f"written: {out}" in result.stderr
    saved = torch.load(out, weights_only=True)
    assert saved.shape == (20, 8, 8) and saved.dtype == torch.float32
    assert ((saved >= 0) & (saved <= 1)).all()
    torch.testing.assert_close(saved.flatten(1), _by_hand(pd.load_run(run).vae, 20, seed=3)[1])
    run_ok(["sample", str(run), "-n", "20", "--seed", "3", "--binary", "--file", str(out)])
    binary = torch.load(out, weights_only=True)
    assert set(binary.unique().tolist()) == {0.0, 1.0}


def test_the_sample_command_draws_a_grid(run, tmp_path):
    out = tmp_path / "grid.png"
    run_ok(["sample", str(run), "-n", "10", "--cols", "4", "--file", str(out)])
    picture = matplotlib.image.imread(out)
    assert picture.ndim == 3 and min(picture.shape[:2]) > 100


@pytest.mark.parametrize(
    "args",
    [
        ["--file", "{tmp}/grid.jpg"],
        ["--file", "{tmp}/samples"],
        ["--file", "{tmp}/grid.png", "-n", "0"],
        ["--file", "{tmp}/grid.png", "--cols", "0"],
        ["--file", "{tmp}/folder.png"],
    ],
)
def test_bad_sample_arguments_are_one_error_line_and_write_nothing(run, tmp_path, args):
    (tmp_path / "folder.png").mkdir()
    before = sorted(tmp_path.rglob("*"))
    result = invoke(["sample", str(run), *(a.format(tmp=tmp_path) for a in args)])
    assert result.exit_code != 0
    assert_one_error_line(result)
    assert sorted(tmp_path.rglob("*")) == before


def test_a_missing_run_is_one_error_line(tmp_path):
    result = invoke(["sample", str(tmp_path / "nothing"), "--file", str(tmp_path / "g.png")])
    assert result.exit_code != 0
    assert_one_error_line(result)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- pd.fit's threads


def test_fit_trains_with_the_threads_it_is_given_and_gives_them_back(tmp_path):
    config = FitConfig(dataset="digits", hidden=16, latent_dim=2, epochs=1)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen = []
    try:
        summary = pd.fit(
            config,
            tmp_path / "r",
            device="cpu",
            progress=False,
            threads=1,
            log=lambda msg: seen.append(torch.get_num_threads()),
        )
        assert summary["epochs_completed"] == 1
        assert seen and set(seen) == {1}  # every line it logged, it logged on one thread
        assert torch.get_num_threads() == 2  # the caller's setting, back
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [0, -2, 1.5])
def test_fit_refuses_threads_below_one_and_writes_nothing(tmp_path, threads):
    config = FitConfig(dataset="digits", hidden=16, latent_dim=2, epochs=1)
    with pytest.raises(ConfigError, match="threads"):
        pd.fit(config, tmp_path / "r", device="cpu", progress=False, threads=threads)
    assert list(tmp_path.iterdir()) == []
