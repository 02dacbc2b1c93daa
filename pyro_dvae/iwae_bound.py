"""Importance-weighted scoring: per-draw parts, the IWAE bound, and resuming a stopped pass.

Burda et al.'s protocol (k = 5000 draws for each of the 10,000 test images) is about
half an hour of one CPU core for one MNIST run, long enough to be stopped by a session's
end or a scheduler. :func:`importance_weighted` therefore hands its state to a ``save``
callback between batches of images — the per-image bounds so far, the running sums and
the random generator's state — and takes such a state back as ``resume``: the draws
continue the same random stream, so a stopped and resumed pass gives the numbers of an
uninterrupted one. :class:`PartialScores` keeps those states in one file of the run
directory, keyed by everything that must match for them to be reused.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import prune_subsample_sites
from tqdm.auto import tqdm

from .errors import StorageError
from .fileio import atomic_write
from .signals import deferred_stop

PARTIAL = "evaluation.partial.pt"
BATCH = 100  # images per batch
RESUMABLE_DEVICES = ("cpu", "cuda")  # whose random state a saved pass carries


def chunk_rows(device: torch.device) -> int:
    """Rows (images × draws) scored at a time. On a CPU the chunk's logits (rows × 784
    floats) must stay in cache for the elementwise passes of the decoder and the Bernoulli
    log-likelihood: 2000 rows score 1.3–1.5× faster than 20,000 (docs/speed.md).
    A GPU wants large chunks to fill it: on an H200, 100,000 rows score 2–3× faster than
    20,000 and take about 1.5 GB; larger ones gain little more (docs/speed.md)."""
    return 2_000 if device.type == "cpu" else 100_000


def kernel_tip(device: torch.device, draws: int) -> str | None:
    """A one-line tip for a long pass on a CPU where ATen runs its AVX-512 kernels, whose
    ``log1p``, ``log`` and log-sigmoid are scalar code; the AVX2 ones are vectorised."""
    if device.type != "cpu" or draws < 10_000_000 or os.environ.get("ATEN_CPU_CAPABILITY"):
        return None
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return None
    return (
        "tip: on this CPU, ATEN_CPU_CAPABILITY=avx2 in the environment makes the IWAE pass "
        "about 1.2-1.45x faster (docs/speed.md)"
    )


def vectorized(fn: Callable, num_particles: int) -> Callable:
    """``fn`` inside an outer ``pyro.plate`` of ``num_particles`` draws (dim −2)."""

    def wrapped(*args, **kwargs):
        with pyro.plate("iw_particles", num_particles, dim=-2):
            return fn(*args, **kwargs)

    return wrapped


@torch.no_grad()
def sample_parts(
    model: Callable, guide: Callable, x: torch.Tensor, num_samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``−log p(x|z)`` and ``log q(z|x) − log p(z)`` for ``num_samples`` draws per image.

    Both have shape ``(num_samples, batch)``; the draws are vectorised with an
    outer ``pyro.plate``, so the encoder runs once per image.
    """
    return differentiable_parts(model, guide, x, num_samples)


def differentiable_parts(
    model: Callable, guide: Callable, x: torch.Tensor, num_samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sample_parts` with the autograd graph kept (for gradient estimators)."""
    log_px, log_pz, log_qz = particle_log_densities(model, guide, x, num_samples)
    return -log_px, log_qz - log_pz


def particle_log_densities(
    model: Callable, guide: Callable, x: torch.Tensor, num_samples: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``log p(x | z)``, ``log p(z)`` and ``log q(z | x)`` of ``num_samples`` draws per image,
    each ``(num_samples, batch)``, the draws vectorised with an outer ``pyro.plate`` and the
    autograd graph kept."""
    model_tr, guide_tr = vectorized_traces(model, guide, x, num_samples)
    return log_densities(model_tr, guide_tr, (num_samples, x.shape[0]))


def vectorized_traces(model: Callable, guide: Callable, x: torch.Tensor, num_samples: int):
    """The (model, guide) traces of ``num_samples`` draws per image in one vectorised pass
    (the model replays the guide's draws), without the plates' own sites."""
    guide_tr = poutine.trace(vectorized(guide, num_samples)).get_trace(x)
    model_tr = poutine.trace(
        poutine.replay(vectorized(model, num_samples), trace=guide_tr)
    ).get_trace(x)
    # the plates' own sites score 0 on the default device (the CPU), not x's
    return prune_subsample_sites(model_tr), prune_subsample_sites(guide_tr)


def log_densities(model_tr, guide_tr, shape: tuple[int, int]):
    """``log p(x | z)``, ``log p(z)`` and ``log q(z | x)`` of :func:`vectorized_traces`, each
    summed per (draw, image) to ``shape``."""
    samples = [s for s in model_tr.nodes.values() if s["type"] == "sample"]
    like = next((s["value"] for s in samples if s["is_observed"]), samples[0]["value"])
    log_px, log_pz, log_qz = like.new_zeros(shape), like.new_zeros(shape), like.new_zeros(shape)
    for name, site in model_tr.nodes.items():
        if site["type"] != "sample":
            continue
        log_p = scaled_log_prob(site).expand(shape)
        if site["is_observed"]:
            log_px = log_px + log_p
        else:
            log_pz = log_pz + log_p
            log_qz = log_qz + scaled_log_prob(guide_tr.nodes[name]).expand(shape)
    return log_px, log_pz, log_qz


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``log (1/K) Σ_k exp(log_w_k)`` along ``dim`` (of size K): the importance-weighted bound
    of K log-weights."""
    return log_w.logsumexp(dim) - math.log(log_w.shape[dim])


@torch.no_grad()
def effective_sample_size(
    model: Callable, guide: Callable, x: torch.Tensor, k: int
) -> torch.Tensor:
    """Each image's effective sample size 1 / Σ_k w̃_k² of ``k`` importance weights (w̃ the
    normalised p(x, z_k) / q(z_k | x)): K when every draw weighs the same (q the exact
    posterior), 1 when one draw takes all the weight; ``(batch,)``."""
    log_px, log_pz, log_qz = particle_log_densities(model, guide, x, k)
    w = torch.softmax((log_px + log_pz - log_qz).double(), 0)
    return 1.0 / (w * w).sum(0)


def scaled_log_prob(site: dict) -> torch.Tensor:
    """A trace site's log-density with its ``poutine.scale`` and mask applied."""
    return scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"])


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


@torch.no_grad()
def importance_weighted(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    k: int = 5000,
    batch_size: int = BATCH,
    max_draws: int | None = None,
    progress: bool = False,
    resume: dict[str, Any] | None = None,
    save: Callable[[dict[str, Any]], None] | None = None,
    save_every: float = 30.0,
    label: str = "IWAE",
) -> dict[str, Any]:
    """IWAE bound ``log (1/k) Σ p(x, z_i) / q(z_i | x)`` per image, and the ELBO of the same draws.

    Returns per-image ``log_likelihood`` (the IWAE estimate), and the mean
    ``recon`` and ``kl`` over all ``k`` draws per image (their sum is the
    −ELBO averaged over ``k`` samples). Draws go in chunks of at most
    ``max_draws`` rows (images × samples) at a time (default: :func:`chunk_rows`).

    ``save`` gets the state after a batch of images at most every ``save_every``
    seconds, when the pass is stopped (``KeyboardInterrupt``) and at its end;
    ``resume`` continues from such a state, for the same arguments. ``label`` names the
    progress bar.
    """
    n = x.shape[0]
    max_draws = chunk_rows(x.device) if max_draws is None else max_draws
    batch_size = max(1, min(batch_size, n))
    chunk = max(1, min(k, max_draws // batch_size))
    if resume is None:
        state = {"done": 0, "log_likelihood": torch.empty(n, dtype=torch.float64)}
        state.update(recon_sum=0.0, kl_sum=0.0)
    else:
        state = dict(resume, log_likelihood=resume["log_likelihood"].clone())
        _set_rng_state(resume["rng"], x.device)
    start_done, before = state["done"], state.get("seconds", 0.0)  # spent before a stop
    started = last_save = time.perf_counter()
    bar = tqdm(
        total=n * k,
        initial=start_done * k,
        disable=not progress,
        unit="draw",
        unit_scale=True,
        desc=label,
    )
    try:
        for start in range(start_done, n, batch_size):
            xb = x[start : start + batch_size]
            acc = torch.full((xb.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
            recon_sum = kl_sum = 0.0
            for done in range(0, k, chunk):
                s = min(chunk, k - done)
                recon, kl = sample_parts(model, guide, xb, s)
                acc = torch.logaddexp(acc, (-(recon + kl)).double().logsumexp(0))
                recon_sum += float(recon.double().sum())
                kl_sum += float(kl.double().sum())
                bar.update(s * xb.shape[0])
            ll = state["log_likelihood"]
            ll[start : start + xb.shape[0]] = (acc - math.log(k)).cpu()
            state = {
                "done": start + xb.shape[0],
                "log_likelihood": ll,
                "recon_sum": state["recon_sum"] + recon_sum,
                "kl_sum": state["kl_sum"] + kl_sum,
                "rng": _rng_state(x.device),
                "seconds": before + time.perf_counter() - started,
            }
            if save is not None and time.perf_counter() - last_save >= save_every:
                save(state)
                last_save = time.perf_counter()
    except KeyboardInterrupt:
        if save is not None and state["done"] > start_done:
            with deferred_stop(ignore=True):
                save(state)
        raise
    finally:
        bar.close()
    if save is not None and state["done"] > start_done:
        save(state)
    draws = n * k
    return {
        "log_likelihood": state["log_likelihood"],
        "recon": state["recon_sum"] / draws,
        "kl": state["kl_sum"] / draws,
    }


def fingerprint(module: torch.nn.Module) -> str:
    """A hash of the weights: tells a retrained checkpoint from its predecessor of the
    same epoch."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def resume_key(module: torch.nn.Module, epoch: int, **options: Any) -> dict[str, Any]:
    """What a saved pass must share with the one that takes it up: the weights, the code
    and libraries that draw (versions), the images per batch, and ``options`` (k, the
    images, the seed, the device type, the rows per chunk). The numbers are bit-identical
    when the machine and thread count are the same too."""
    import pyro_dvae

    return {
        "format": 1,
        "epoch": epoch,
        "weights": fingerprint(module),
        "versions": [pyro_dvae.__version__, pyro.__version__, str(torch.__version__)],
        "batch": BATCH,
        **options,
    }


class PartialScores:
    """The states of stopped importance-weighted passes, one per named stage, in one file.

    ``key`` holds whatever must match for a saved state to be reused (see
    :func:`resume_key`); a file with another key, or one that cannot be read, is ignored
    and later overwritten. A failed save warns once and the pass goes on.
    """

    def __init__(self, path: str | Path, key: dict[str, Any]):
        self.path = Path(path)
        self.key = key
        self.stages = self._read()
        self.warned = False

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # missing, or damaged by a kill mid-write of another program
            return {}
        if not isinstance(saved, dict) or saved.get("key") != self.key:
            return {}
        return dict(saved.get("stages", {}))

    def seconds(self) -> float:
        """The time the saved passes had spent before they were stopped."""
        return sum(state.get("seconds", 0.0) for state in self.stages.values())

    def progress(self, n: int) -> str:
        """How far the saved passes had got, for a log line (``""``: nothing saved)."""
        return ", ".join(
            f"{st['done']} of {n} images in its {name} pass" for name, st in self.stages.items()
        )

    def resume(self, stage: str) -> dict[str, Any] | None:
        """The saved state of ``stage``, or ``None`` to start it afresh."""
        return self.stages.get(stage)

    def saver(self, stage: str) -> Callable[[dict[str, Any]], None]:
        """A ``save`` callback for :func:`importance_weighted` that records ``stage``."""

        def save(state: dict[str, Any]) -> None:
            self.stages[stage] = state
            payload = {"key": self.key, "stages": self.stages}
            try:
                atomic_write(self.path, lambda fh: torch.save(payload, fh))
            except StorageError as err:  # progress is a convenience: the pass goes on
                if not self.warned:
                    why = f"{err}; the evaluation goes on without saving its progress"
                    warnings.warn(why, stacklevel=2)
                self.warned = True

        return save
