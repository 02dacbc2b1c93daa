"""The exact sums of an enumerable family (categorical, Bernoulli): over all its codes.

A discrete latent of at most ``ENUM_LIMIT`` joint codes is scored exactly: its −ELBO, and
its mean reconstruction, as sums over every code weighted by q(c | x), with no sampling. What
``--elbo enum`` trains on, what a discrete run's evaluation reports as ``exact``, and the
reference of the discrete gradient check.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F


def exact_config(config):
    """The config of the same discrete model trained by exact enumeration."""
    return replace(config, elbo="enum", estimator="enum", num_particles=1)


def _every_code(vae, like: torch.Tensor):
    """The categorical family in its joint-code form (the one ``--elbo enum`` trains) and
    the decoder's logits for each of its codes, (codes, pixels)."""
    from . import make_family

    family = vae.family
    joint = family if family.joint else make_family(exact_config(family.config))
    codes = torch.eye(joint.codes, dtype=like.dtype, device=like.device)
    return joint, vae.decoder(joint.decoder_input(codes))


@torch.no_grad()
def enumerated_reconstructions(vae, x: torch.Tensor) -> torch.Tensor:
    """A discrete VAE's mean reconstruction Σ_c q(c | x) E[x | c] over its codes; past
    ``ENUM_LIMIT`` codes, the image of the most likely code instead (each variable's most
    likely class, each bit's more likely value)."""
    family = vae.family
    if not family.summable:
        mode = vae.encode(x).mode
        return torch.sigmoid(vae.decoder(family.decoder_input(mode)))
    joint, logits = _every_code(vae, x)
    return joint.posterior(vae.encoder(x)).probs @ torch.sigmoid(logits)


@torch.no_grad()
def enumerated_parts(vae, x: torch.Tensor, batch_size: int = 500) -> dict[str, float]:
    """The exact mean −ELBO, reconstruction and KL per image of a categorical VAE: sums
    over all K^M codes, no sampling (the decoder runs once per code, the encoder per batch)."""
    joint, logits = _every_code(vae, x)
    log_on, log_off = F.logsigmoid(logits), F.logsigmoid(-logits)
    recon = kl = 0.0
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        q = joint.posterior(vae.encoder(xb)).probs  # (batch, codes)
        log_px = xb @ log_on.T + (1 - xb) @ log_off.T
        recon -= float((q * log_px).sum())
        log_q = q.clamp_min(torch.finfo(q.dtype).tiny).log()
        kl += float((q * (log_q + math.log(joint.codes))).sum())  # p(c) = 1 / K^M
    n = x.shape[0]
    return {"loss": (recon + kl) / n, "recon": recon / n, "kl": kl / n}
