"""``pyro-dvae show`` and ``pyro-dvae curves``: what the pictures hold, not only that they exist.

Expectations come from outside the drawing code: the prior's own statistics (logit z ~ N(0, α),
uniform categories), the test set as ``load_dataset`` gives it, Φ⁻¹ from scipy, the rows of
``metrics.jsonl`` parsed here, and the figure's own image and line data.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from scipy import stats

from pyro_dvae.config import FitConfig
from pyro_dvae.data import IMAGE_SHAPES, load_dataset
from pyro_dvae.evaluation import active_units, load_run, posterior_means
from pyro_dvae.families import make_family
from pyro_dvae.run_pictures import (
    Panel,
    draw_panels,
    most_active_units,
    pick_test_images,
    prior_samples,
    reconstructions,
    tiled,
    traversals,
)
from pyro_dvae.training_curves import draw_curves

from .helpers import assert_one_error_line, fit_args, invoke, run_ok, stderr_lines

SHAPE = IMAGE_SHAPES["digits"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two-epoch digits runs: a Logit-normal (α = 1.78) and an annealed Concrete 3×4."""
    root = tmp_path_factory.mktemp("pictures")
    run_ok(fit_args(root / "ln", family="logitnormal", alpha=1.78, latent_dim=3))
    run_ok(
        fit_args(
            root / "cc",
            family="concrete",
            latent_dim=3,
            categories=4,
            temperature=1.0,
            anneal_rate=1e-3,
            min_temperature=0.5,
        )
    )
    return {"ln": root / "ln", "cc": root / "cc"}


def test_prior_samples_decode_the_draws_they_name(runs):
    vae = load_run(runs["ln"]).vae
    z, images = prior_samples(vae, 2000, seed=3)
    torch.testing.assert_close(images, vae.decode(z))
    z2, images2 = prior_samples(vae, 2000, seed=3)
    assert torch.equal(z, z2) and torch.equal(images, images2)  # same seed, same array
    assert not torch.equal(prior_samples(vae, 2000, seed=4)[0], z)
    # the draws are the prior's: logit z ~ N(0, 1.78) per unit
    logit = (z.log() - (-z).log1p()).double()
    se = (1.78 / 2000) ** 0.5
    assert (logit.mean(0).abs() < 5 * se).all()
    assert ((logit.var(0) - 1.78).abs() < 5 * 1.78 * (2 / 1999) ** 0.5).all()
    _, binary = prior_samples(vae, 50, seed=3, binary=True)
    assert set(binary.unique().tolist()) <= {0.0, 1.0}


def test_concrete_samples_come_from_both_priors(runs):
    vae = load_run(runs["cc"]).vae
    z, images = prior_samples(vae, 3000, seed=0, discrete=True)
    assert z.shape == (3000, 3, 4) and ((z == 0) | (z == 1)).all() and (z.sum(-1) == 1).all()
    freq = z.double().mean(0)  # uniform categorical prior: each category 1/4
    assert ((freq - 0.25).abs() < 5 * (0.25 * 0.75 / 3000) ** 0.5).all()
    onehot = vae.with_family(vae.family.discrete())
    torch.testing.assert_close(images, onehot.decode(z))
    y, relaxed = prior_samples(vae, 10, seed=0)
    torch.testing.assert_close(y.logsumexp(-1), torch.zeros(10, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(relaxed, vae.decode(y))


def test_the_sample_figure_holds_the_images_in_order_with_gaps_between(runs):
    vae = load_run(runs["ln"]).vae
    _, images = prior_samples(vae, 10, seed=1)
    grid = images.reshape(10, *SHAPE).numpy()
    padded = np.concatenate([grid, np.zeros((2, *SHAPE), dtype=grid.dtype)])
    panel = Panel("prior", padded.reshape(3, 4, *SHAPE))
    fig = draw_panels([panel], "t")
    image = fig.axes[0].images[0]
    shown = np.ma.filled(image.get_array().astype(float), np.nan)
    h, w = SHAPE
    gap = 1  # 8×8 digits: one pixel between images
    assert shown.shape == (3 * h + 2 * gap, 4 * w + 3 * gap)
    blank = np.ones(shown.shape, dtype=bool)
    for i in range(12):
        r, c = divmod(i, 4)
        top, left = r * (h + gap), c * (w + gap)
        np.testing.assert_array_equal(shown[top : top + h, left : left + w], padded[i])
        blank[top : top + h, left : left + w] = False
    # every pixel outside the images is a gap, drawn in the figure's background colour
    assert blank.sum() == shown.size - 12 * h * w and np.isnan(shown[blank]).all()
    assert image.cmap.get_bad().tolist() == [1.0, 1.0, 1.0, 1.0]
    assert not np.isnan(shown[~blank]).any()


def test_a_grid_fills_its_last_row_with_background_and_mnist_images_get_wider_gaps():
    images = torch.rand(5, 8 * 8)
    grid = tiled(images, 3, SHAPE)
    assert grid.shape == (2, 3, *SHAPE)
    np.testing.assert_array_equal(grid.reshape(6, -1)[:5], images.numpy())
    assert np.isnan(grid[1, 2]).all()
    assert Panel("digits", grid).gap == 1
    assert Panel("mnist", np.zeros((2, 2, 28, 28))).gap == 2
    assert Panel("mnist", np.zeros((2, 2, 28, 28))).canvas().shape == (58, 58)


def test_reconstruction_panel_holds_the_test_images_it_names(runs):
    indices, x = pick_test_images("digits", None, 6, seed=2)
    assert indices == sorted(set(indices)) and len(indices) == 6
    test = load_dataset("digits").test
    torch.testing.assert_close(x, test[indices])
    assert pick_test_images("digits", None, 6, seed=3)[0] != indices
    vae = load_run(runs["ln"]).vae
    recon = reconstructions(vae, x)
    # the Logit-normal's mean code by Monte Carlo (independent of its quadrature mean)
    with torch.no_grad():
        q = vae.encode(x)
        torch.manual_seed(0)
        mc_code = q.sample((20000,)).mean(0)
        torch.testing.assert_close(recon, torch.sigmoid(vae.decoder(mc_code)), atol=2e-3, rtol=0)


@pytest.mark.parametrize("family", ["gaussian", "logitnormal", "beta"])
def test_a_continuous_traversal_varies_exactly_one_unit(family):
    fam = make_family(FitConfig(family=family, latent_dim=5))
    z, labels = fam.traversal(2, 7, torch.zeros(1))
    assert z.shape == (7, 5) and len(labels) == 7
    others = z[:, [0, 1, 3, 4]]
    median = 0.0 if family == "gaussian" else 0.5  # the prior's median, every family
    assert (others == median).all()
    u = (np.arange(7) + 0.5) / 7
    want = stats.norm.ppf(u) if family == "gaussian" else u
    np.testing.assert_allclose(z[:, 2].numpy(), want, rtol=1e-5, atol=1e-6)


def test_a_concrete_traversal_sets_each_category_of_one_variable():
    fam = make_family(FitConfig(family="concrete", latent_dim=3, categories=4))
    z, labels = fam.traversal(1, 99, torch.zeros(1))
    assert z.shape == (4, 3, 4) and labels == ["k=1", "k=2", "k=3", "k=4"]
    probs = z.exp()
    torch.testing.assert_close(probs[:, 1, :], torch.eye(4))
    assert torch.allclose(probs[:, [0, 2], :], torch.full((4, 2, 4), 0.25))


def test_traversal_images_are_the_decoded_codes_of_the_active_units(runs):
    vae = load_run(runs["ln"]).vae
    _, x = pick_test_images("digits", None, 300, seed=0)
    units, activity = most_active_units(vae, x, 2)
    # the same statistic as the evaluation's active units (Burda et al.)
    variances = active_units(posterior_means(vae, x))[1]
    np.testing.assert_allclose(activity.numpy(), variances, rtol=1e-6)
    assert units == list(np.argsort(variances)[::-1][:2])
    z, images, _ = traversals(vae, units, 5)
    torch.testing.assert_close(images, vae.decode(z.flatten(0, 1)).reshape(2, 5, -1))


def _metrics(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_the_curve_figure_draws_metrics_jsonl(runs):
    records = _metrics(runs["cc"])
    fig = draw_curves([("cc", records)], "t")
    axes = fig.axes
    assert len(axes) == 4  # the annealed temperature gets its panel
    for ax, part in zip(axes[:3], ["loss", "recon", "kl"], strict=True):
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        for split in ("train", "test"):
            line = lines[f"cc, {split}"]
            assert list(line.get_xdata()) == [r["epoch"] for r in records]
            assert list(line.get_ydata()) == [r[f"{split}_{part}"] for r in records]
    assert list(axes[3].get_lines()[0].get_ydata()) == [r["temperature"] for r in records]
    assert len(draw_curves([("ln", _metrics(runs["ln"]))], "t").axes) == 3  # no temperature


@pytest.mark.parametrize("epochs, marked", [(1, True), (3, True), (40, False)])
def test_a_short_curve_has_markers_a_long_one_a_line(epochs, marked):
    """One point draws no line, so it would be invisible: few points are drawn as markers
    (the temperature's too); a long curve stays a plain line."""
    records = [
        {"epoch": e, "train_loss": 30.0 - e / 10, "test_loss": 29.0, "temperature": 1 / e}
        for e in range(1, epochs + 1)
    ]
    fig = draw_curves([("r", records)], "t")
    lines = [ln for ax in fig.axes for ln in ax.get_lines()]
    assert len(lines) == 2 + (epochs > 1)  # train and test -ELBO; a temperature that changes
    for line in lines:
        assert len(line.get_xdata()) == epochs
        assert (line.get_marker() not in (None, "None", "")) == marked


def test_show_writes_the_pictures_and_the_readme(runs, tmp_path):
    out = tmp_path / "pics"
    result = run_ok(
        ["show", str(runs["cc"]), "--out", str(out), "--binary", "--reconstructions", "4"]
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "README.md",
        "curves.png",
        "reconstructions.png",
        "samples.png",
        "traversals.png",
    ]
    readme = (out / "README.md").read_text()
    assert "concrete(3x4" in readme and "12 units" in readme and "digits" in readme
    assert "epoch 2" in readme and "pyro-dvae show" in readme
    # a relaxed run's samples have two priors' panels, and the README names both
    samples = next(line for line in readme.splitlines() if line.startswith("- `samples.png`"))
    assert "relaxed prior" in samples and "discrete prior (hard codes" in samples
    lines = stderr_lines(result)
    notes = [line for line in lines if not line.startswith("written: ")]
    # the 2-epoch fixture run has not left the prior yet, and show says so (docs/collapse.md)
    assert all(line.startswith("note: posterior collapse (test KL") for line in notes)
    said = json.loads((runs["cc"] / "summary.json").read_text())["collapse"]
    assert (said is not None) == bool(notes)
    assert said is None or said in readme


@pytest.mark.parametrize(
    "run, axis", [("ln", "the swept unit's value z"), ("cc", "the swept variable's category")]
)
def test_the_traversal_picture_names_its_x_axis(runs, tmp_path, monkeypatch, run, axis):
    """The column labels are values of z (0.071 ... 0.93) or categories (k=1 ... k=4): the x
    axis says which, under the labels the picture draws."""
    import pyro_dvae.run_pictures as run_pictures

    drawn = {}
    save = run_pictures.save_figure

    def capture(fig, path):
        drawn[path.name] = fig
        return save(fig, path)

    monkeypatch.setattr(run_pictures, "save_figure", capture)
    run_ok(["show", str(runs[run]), "--out", str(tmp_path / "pics"), "--steps", "7"])
    (ax,) = drawn["traversals.png"].axes
    assert ax.get_xlabel().startswith(axis)
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    if run == "ln":  # the sweep's seven values of z, as the family's traversal gives them
        assert ticks == [f"{v:.2g}" for v in (np.arange(7) + 0.5) / 7]
    else:
        assert ticks == ["k=1", "k=2", "k=3", "k=4"]


def test_show_without_weights_draws_the_curves_and_says_so(runs, tmp_path):
    bare = tmp_path / "committed"
    bare.mkdir()
    for name in ("config.json", "metrics.jsonl", "summary.json"):
        shutil.copy(runs["ln"] / name, bare / name)
    out = tmp_path / "pics"
    result = run_ok(["show", str(bare), "--out", str(out)])
    notes = [line for line in stderr_lines(result) if line.startswith("note: ")]
    assert len(notes) == 1 and "no checkpoint.pt" in notes[0]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "curves.png"]


def test_show_refuses_what_is_not_a_run_in_one_line(tmp_path):
    out = tmp_path / "pics"
    result = invoke(["show", str(tmp_path / "nothing"), "--out", str(out)])
    assert result.exit_code != 0
    assert_one_error_line(result)
    assert not out.exists()  # nothing half-written
    result = invoke(["show", str(tmp_path), "--samples", "0"])
    assert result.exit_code != 0 and "--samples" in result.stderr


def test_curves_of_several_runs_with_labels(runs, tmp_path):
    out = tmp_path / "c.png"
    run_ok(
        [
            "curves",
            str(runs["ln"]),
            str(runs["cc"]),
            "--file",
            str(out),
            "--label",
            "a",
            "--label",
            "b",
        ]
    )
    assert out.stat().st_size > 0
    result = invoke(["curves", str(runs["ln"]), str(runs["cc"]), "--label", "a"])
    assert result.exit_code != 0
    assert_one_error_line(result)


def test_show_leaves_out_as_it_was_when_drawing_fails(runs, tmp_path, monkeypatch):
    import pyro_dvae.run_pictures as pictures
    from pyro_dvae.errors import DataError

    out = tmp_path / "pics"
    run_ok(["show", str(runs["ln"]), "--out", str(out)])
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def no_data(*args, **kwargs):
        raise DataError("the test set is gone")

    monkeypatch.setattr(pictures, "load_dataset", no_data)
    result = invoke(["show", str(runs["ln"]), "--out", str(out)])
    assert result.exit_code != 0
    assert_one_error_line(result)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["pics"]  # no scratch left


def test_bad_out_paths_and_empty_runs_are_one_error_line(runs, tmp_path):
    a_file = tmp_path / "f.png"
    a_file.write_bytes(b"x")
    for args in (
        ["show", str(runs["ln"]), "--out", str(a_file)],
        ["curves", str(runs["ln"]), "--out", str(tmp_path)],
    ):
        result = invoke(args)
        assert result.exit_code != 0
        assert_one_error_line(result)
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(runs["ln"] / "config.json", empty / "config.json")
    result = invoke(["show", str(empty), "--out", str(tmp_path / "p")])
    assert result.exit_code != 0 and "nothing to show" in result.stderr
    assert not (tmp_path / "p").exists()
    run_ok(["curves", str(runs["ln"]), "--out", str(tmp_path / "c.pdf")])
    assert (tmp_path / "c.pdf").read_bytes()[:4] == b"%PDF"
