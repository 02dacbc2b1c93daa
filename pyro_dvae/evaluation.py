"""Evaluating a trained run: multi-sample ELBO, IWAE log-likelihood, active units, kNN accuracy."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pyro.distributions.kl import kl_divergence

from .config import FitConfig
from .data import Dataset, load_dataset
from .errors import ConfigError, RunDirError
from .families import LatentFamily, make_family
from .families.enumeration import enumerated_parts
from .fileio import first_line
from .inference import seeded
from .iwae_bound import (
    PARTIAL,
    RESUMABLE_DEVICES,
    PartialScores,
    chunk_rows,
    importance_weighted,
    kernel_tip,
    resume_key,
)
from .rundir import RunDir, atomic_write_text, runtime_versions
from .stored_run import StoredRun
from .vae import VAE
from .wording import capped

EVALUATION = "evaluation.json"
ACTIVE_THRESHOLD = 0.01  # Burda et al. (2016)
#: IWAE draws per image for the discrete model behind a relaxed run (``discrete`` block),
#: unless ``k`` is smaller (a quick evaluation stays quick)
DISCRETE_K = 1000


@dataclass
class LoadedRun:
    """A trained model read back from its run directory."""

    run_dir: RunDir
    config: FitConfig
    vae: VAE
    epoch: int

    @property
    def family(self) -> LatentFamily:
        return self.vae.family


def load_run(
    run_path: str | Path,
    device: str | torch.device = "cpu",
    guide: torch.nn.Module | str | None = None,
) -> LoadedRun:
    """Rebuild the VAE of a run and load its checkpoint.

    ``run_path``: the run folder; ``device``: where the weights go (``cpu``, ``cuda``, a
    ``torch.device``). A run trained with its own guide needs ``guide`` (the module, or the
    import spec that builds it): a run folder never makes this process import code by itself.
    Returns a ``LoadedRun``: its ``config``, its ``vae`` (weights loaded, in eval mode), the
    ``epoch`` of its checkpoint and its ``run_dir``.
    """
    run_dir = RunDir.open(run_path)
    stored = StoredRun.read(run_dir, device)
    config, state = stored.config, stored.state
    family = make_family(config)
    family.load_state(state)
    input_dim = _input_dim(state, run_dir)
    stored.check_guide(guide, "load it", "load_run(..., guide=...)")
    if isinstance(guide, str):
        from .guides import build_guide

        guide = build_guide(guide, family, input_dim, config.hidden)
    try:
        vae = VAE(family, input_dim, config.hidden, guide_module=guide).to(device)
        vae.load_state_dict(state["model"])
    except (KeyError, AttributeError, RuntimeError, TypeError) as err:
        raise RunDirError(
            f"checkpoint in {run_dir.path} does not fit its config: {first_line(err)}"
        ) from None
    vae.eval()
    return LoadedRun(run_dir, config, vae, int(state["epoch"]))


def _input_dim(state: dict[str, Any], run_dir: RunDir) -> int:
    """Pixels per image: the size of the decoder's output layer."""
    try:
        biases = [v for k, v in state["model"].items() if k.startswith("decoder.") and "bias" in k]
        return int(biases[-1].shape[0])
    except (AttributeError, IndexError, KeyError, TypeError):
        raise RunDirError(f"checkpoint in {run_dir.path} holds no decoder") from None


# --------------------------------------------------------------------------- estimates


@torch.no_grad()
def posterior_means(
    vae: VAE, x: torch.Tensor, batch_size: int = 1000, num_samples: int = 200
) -> torch.Tensor:
    """E_q[decoder input] for each image: what the decoder sees, averaged over q(z | x).

    ``num_samples`` draws per image where the mean has no closed form (Concrete).
    """
    parts = [
        vae.family.code_mean(vae.encode(x[s : s + batch_size]), num_samples)
        for s in range(0, x.shape[0], batch_size)
    ]
    return torch.cat(parts).flatten(1)


def active_units(means: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> tuple[int, list]:
    """Burda et al.: unit u is active when Var_x(E_q[z_u | x]) > ``threshold``."""
    variances = means.double().var(0, unbiased=True)
    return int((variances > threshold).sum()), [float(v) for v in variances]


def knn_accuracy(
    train_codes: torch.Tensor,
    train_labels: torch.Tensor,
    test_codes: torch.Tensor,
    test_labels: torch.Tensor,
    n_neighbors: int = 5,
) -> float:
    """Test accuracy of a k-nearest-neighbour classifier fitted on training codes."""
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(n_neighbors=n_neighbors)
    clf.fit(train_codes.cpu().numpy(), train_labels.cpu().numpy())
    return float(clf.score(test_codes.cpu().numpy(), test_labels.cpu().numpy()))


# --------------------------------------------------------------------------- a run


def check_options(k: int, images: int, n_neighbors: int) -> None:
    if k < 1:
        raise ConfigError(f"--k must be >= 1, got {k}")
    if images < 0:
        raise ConfigError(f"--images must be >= 0, got {images}")
    if n_neighbors < 1:
        raise ConfigError(f"--neighbors must be >= 1, got {n_neighbors}")


def discrete_draws(k: int, discrete_k: int | None) -> int:
    """The IWAE draws of the hard codes' pass: ``discrete_k``, by default the smaller of
    ``k`` and :data:`DISCRETE_K`."""
    return min(k, DISCRETE_K) if discrete_k is None else discrete_k


def evaluate(
    run: LoadedRun,
    data: Dataset,
    k: int = 5000,
    images: int = 0,
    n_neighbors: int = 5,
    seed: int = 0,
    progress: bool = True,
    partial: Path | None = None,
    log: Callable[[str], None] | None = None,
    discrete_k: int | None = None,
) -> dict[str, Any]:
    """All evaluation numbers of a loaded run on ``data`` (already on the run's device).

    ``partial``: a file where the IWAE passes keep their progress (on a CPU or CUDA
    device), so that a stopped evaluation with the same arguments takes them up where
    they stopped; the caller deletes it once the result is stored.
    """
    check_options(k, images, n_neighbors)
    discrete_k = discrete_draws(k, discrete_k)
    x_test = data.test if images == 0 else data.test[:images]
    t0 = time.perf_counter()
    device, n = x_test.device, int(x_test.shape[0])
    whose = f"the {run.config.dataset} test set's"
    if log is not None and images and (note := capped("--images", images, n, whose, "image")):
        log(note)
    rows = chunk_rows(device)  # how the draws are split: a saved pass must share it
    scores = None
    if partial is not None and device.type in RESUMABLE_DEVICES:
        options = dict(k=k, images=n, seed=seed, device=device.type, max_draws=rows)
        if _discrete_view(run.vae) is not None:
            options["discrete_k"] = discrete_k
        scores = PartialScores(partial, resume_key(run.vae, run.epoch, **options))
        t0 -= scores.seconds()  # the scoring before a stop counts too
        if (done := scores.progress(n)) and log is not None:
            log(f"{run.run_dir.path}: continuing its stopped evaluation: {done}")

    if log is not None and (tip := kernel_tip(device, k * n)):
        log(tip)

    def iwae(vae: VAE, stage: str, draws: int = k) -> dict[str, Any]:
        resume = scores.resume(stage) if scores else None
        save = scores.saver(stage) if scores else None
        return importance_weighted(
            vae.model,
            vae.guide,
            x_test,
            k=draws,
            max_draws=rows,
            progress=progress,
            resume=resume,
            save=save,
            label=f"IWAE{', hard codes' if stage == 'discrete' else ''}, k={draws}",
        )

    with seeded(seed, device):
        iw = iwae(run.vae, "iwae")
        test_means = posterior_means(run.vae, data.test)
        # the training images as the model saw them: one fixed binarisation
        gen = torch.Generator(device=data.train.device).manual_seed(seed)
        train_means = posterior_means(run.vae, torch.bernoulli(data.train, generator=gen))
    ll = iw["log_likelihood"]
    n_active, variances = active_units(test_means)
    result = {
        "run": run.run_dir.path.name,
        "epoch": run.epoch,
        "family": run.family.describe(),
        "test_images": n,
        "images_requested": images,
        "k": k,
        "test_loss": iw["recon"] + iw["kl"],
        "test_recon": iw["recon"],
        "test_kl": iw["kl"],
        "elbo_samples": k,
        "test_log_likelihood": float(ll.mean()),
        "test_log_likelihood_se": float(ll.std() / math.sqrt(len(ll))) if len(ll) > 1 else None,
        "active_units": n_active,
        "latent_units": len(variances),
        "active_threshold": ACTIVE_THRESHOLD,
        "posterior_mean_variance": variances,
        "knn_accuracy": knn_accuracy(
            train_means, data.train_labels, test_means, data.test_labels, n_neighbors
        ),
        "knn_neighbors": n_neighbors,
        "seed": seed,
    }
    if run.family.enumerable and not run.family.relaxed and run.vae.guide_module is None:
        if run.family.summable:  # the exact −ELBO, summed over every code
            result["exact"] = {f"test_{k}": v for k, v in enumerated_parts(run.vae, x_test).items()}
    discrete = _discrete_view(run.vae)
    if discrete is not None:
        # a latent trained as discrete codes is its own discrete model: with the same seed
        # and k, the first pass is the very pass a second one would repeat
        if run.family.relaxed or discrete_k != k:
            with seeded(seed, device):
                iw = iwae(discrete, "discrete", discrete_k)
        relaxed_loss = relaxed_objective(run, x_test, result) if run.family.relaxed else None
        result["discrete"] = discrete_scores(discrete, x_test, iw, relaxed_loss, discrete_k)
    result["seconds"] = time.perf_counter() - t0
    result["device"] = str(device)
    result["versions"] = runtime_versions()
    return result


def relaxed_objective(run: LoadedRun, x: torch.Tensor, result: dict[str, Any]) -> float:
    """The test −ELBO of the objective a relaxed run trains: its reconstruction, and its KL as
    its estimator takes it (analytic where it trains with one: Jang et al.'s discrete KL)."""
    from .inference import ELBOS

    kl = analytic_kl(run.vae, x) if ELBOS[run.config.elbo][1] else None
    return result["test_recon"] + kl if kl is not None else result["test_loss"]


def discrete_scores(
    discrete: VAE,
    x: torch.Tensor,
    iw: dict[str, Any],
    relaxed_loss: float | None,
    k: int,
) -> dict[str, Any]:
    """The discrete model behind a run (hard codes), from its IWAE pass ``iw`` of ``k``
    draws: its −ELBO with the analytic KL of q(b | x) to the uniform prior, its IWAE bound,
    and beside them the relaxed objective's test −ELBO (``relaxed_loss``: the run's own; None
    where the run's latent is itself discrete) and the relaxation gap."""
    kl = analytic_kl(discrete, x)
    ll = iw["log_likelihood"]
    loss = iw["recon"] + (kl if kl is not None else iw["kl"])
    return {
        "family": discrete.family.describe(),
        "k": k,
        "test_images": int(x.shape[0]),
        "test_loss": loss,
        "test_recon": iw["recon"],
        "test_kl": kl if kl is not None else iw["kl"],
        "kl": "analytic" if kl is not None else "monte-carlo",
        "test_log_likelihood": float(ll.mean()),
        "test_log_likelihood_se": float(ll.std() / math.sqrt(len(ll))) if len(ll) > 1 else None,
        "relaxed_test_loss": relaxed_loss,
        "relaxation_gap": loss - relaxed_loss if relaxed_loss is not None else None,
    }


@torch.no_grad()
def analytic_kl(vae: VAE, x: torch.Tensor, batch_size: int = 1000) -> float | None:
    """Mean KL(q(z | x) ‖ p(z)) per image where one is registered, else None."""
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        try:
            kl = kl_divergence(vae.encode(xb), vae.family.prior(xb))
        except NotImplementedError:
            return None
        total += float(kl.double().sum())
    return total / x.shape[0]


def _discrete_view(vae: VAE) -> VAE | None:
    """The run's networks scoring the discrete model its relaxed family stands for, if any."""
    family = vae.family.discrete()
    if family is None or vae.guide_module is not None:
        return None
    return vae.with_family(family)


def evaluate_run(
    run_path: str | Path,
    data_dir: str | Path | None = None,
    device: str = "auto",
    k: int = 5000,
    images: int = 0,
    n_neighbors: int = 5,
    seed: int = 0,
    progress: bool = True,
    guide: torch.nn.Module | str | None = None,
    log: Callable[[str], None] | None = None,
    discrete_k: int | None = None,
) -> dict[str, Any]:
    """Evaluate the checkpoint in ``run_path`` and write ``evaluation.json`` beside it.

    The run directory is locked meanwhile, so training cannot move it on under the
    evaluation; options are checked against the data before any sampling. The IWAE
    passes keep their progress in ``evaluation.partial.pt`` until ``evaluation.json`` is
    written: a stopped evaluation, started again with the same options, continues.

    ``run_path``: the run folder; ``data_dir``: where its dataset lives (as for
    :func:`load_dataset`); ``device``: ``auto`` (``$PYRO_DVAE_DEVICE`` if set, else CUDA when
    available, else the CPU), ``cpu``, ``cuda`` or another torch device; ``k``: importance
    samples per image of the IWAE bound on log p(x); ``images``: score the first this many
    test images (0: all); ``n_neighbors``: the k of the k-nearest-neighbour classifier fitted
    on the training images' posterior means; ``seed``: the draws' seed (the caller's random
    state is left as it was); ``progress``: show progress bars; ``guide``: the run's own guide,
    if it was trained with one (as for :func:`load_run`); ``log``: a function that takes each
    note (a line), or ``None`` for none; ``discrete_k``: importance samples for the model with
    hard codes behind a relaxed latent (``None``: the smaller of ``k`` and 1000).

    Returns what ``evaluation.json`` holds: the test −ELBO and its parts (``test_loss``,
    ``test_recon``, ``test_kl``), the IWAE ``test_log_likelihood`` and its standard error,
    ``active_units`` of ``latent_units``, ``knn_accuracy``, the options and versions, and
    where they apply ``exact`` (a discrete latent's exact −ELBO, summed over its codes) and
    ``discrete`` (the hard-code model of a relaxed latent).
    """
    from .devices import resolve_device

    check_options(k, images, n_neighbors)
    dev = resolve_device(device)
    with RunDir.open(run_path).lock("run directory"):
        run = load_run(run_path, dev, guide)
        data = load_dataset(run.config.dataset, data_dir, subset=run.config.subset).to(dev)
        if n_neighbors > data.train.shape[0]:
            raise ConfigError(
                f"--neighbors {n_neighbors} is more than the {data.train.shape[0]} training "
                "images the kNN classifier is fitted on"
            )
        partial = run.run_dir.path / PARTIAL
        result = evaluate(
            run, data, k, images, n_neighbors, seed, progress, partial, log, discrete_k
        )
        atomic_write_text(run.run_dir.path / EVALUATION, json.dumps(result, indent=2) + "\n")
        partial.unlink(missing_ok=True)
    return result


def evaluation_is_current(
    run_path: str | Path, k: int, images: int, discrete_k: int | None = None
) -> bool:
    """Whether ``evaluation.json`` scores the run's latest epoch at least this thoroughly:
    with ``k`` or more samples, on ``images`` or more test images (0: all), and its
    ``discrete`` block, where it has one, with ``discrete_k`` or more (None: the default
    the same ``k`` gives)."""
    ev = read_evaluation(run_path)
    if not ev or ev.get("epoch") != RunDir(run_path).epochs_completed():
        return False
    done_k, done_images = ev.get("k", 0), ev.get("images_requested", -1)
    covers = done_images == 0 or (images != 0 and done_images >= images)
    if "discrete" in ev:
        covers = covers and ev["discrete"].get("k", 0) >= discrete_draws(k, discrete_k)
    return done_k >= k and covers


def read_evaluation(run_path: str | Path) -> dict[str, Any]:
    try:
        return json.loads((Path(run_path) / EVALUATION).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, not UTF-8, or not JSON: no evaluation
        return {}
