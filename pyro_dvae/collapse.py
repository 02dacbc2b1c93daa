"""Posterior collapse, said out loud: after each evaluation a run whose latent carries
(almost) nothing gets one plain sentence, in the epoch line, ``summary.json`` and ``show``.

A run has collapsed when its test KL is under :data:`COLLAPSE_KL` nats per image or none of
its units is active (Burda et al.: Var_x E_q[code_u | x] > 0.01, of what the decoder reads):
q(z | x) is the prior for every image, the decoder ignores z, and every reconstruction and
sample is the same mean image. docs/collapse.md says why the Logit-normal does so on the 8x8
digits and what the remedies of :mod:`pyro_dvae.schedules` change.
"""

from __future__ import annotations

from typing import Any

import torch

#: nats per image under which the latent counts as unused
COLLAPSE_KL = 0.1
#: what the sentence tells a user to try (the options of :mod:`pyro_dvae.schedules`)
REMEDY = "try --kl-warmup 10 or --free-bits 0.5 (docs/collapse.md)"


#: the test images (the first ones) and draws per image the check counts active units with:
#: enough for a verdict at a small cost per evaluation (a Concrete 20 × 10 mean is Monte Carlo;
#: its noise variance, at most 0.25 / 50 per image, stays under the threshold of 0.01)
ACTIVE_IMAGES, ACTIVE_SAMPLES = 500, 50


def count_active(vae, x: torch.Tensor, seed: int, device: torch.device) -> dict[str, int]:
    """``active_units`` of ``vae`` on the first :data:`ACTIVE_IMAGES` of ``x``, out of its
    ``latent_units`` (what the decoder reads); its draws come from ``seed``, leaving
    training's alone."""
    from .evaluation import active_units, posterior_means  # evaluation reads run folders
    from .inference import seeded

    with seeded(seed, device):
        means = posterior_means(vae, x[:ACTIVE_IMAGES], num_samples=ACTIVE_SAMPLES)
    active, variances = active_units(means)
    return {"active_units": active, "latent_units": len(variances)}


def remedy(config=None) -> str:
    """What to try: the remedies, or, for a run that has one on already, to give it time."""
    if config is not None and (config.free_bits > 0 or config.kl_warmup > 0):
        return "it has --free-bits or --kl-warmup on already: train longer (docs/collapse.md)"
    return REMEDY


def verdict(test: dict[str, Any], config=None) -> str | None:
    """The sentence for an evaluation's ``test_kl`` and ``test_active_units`` (either may be
    missing, as in runs from before this check); None when the latent is in use. ``config``:
    the run's, so that the sentence does not suggest a remedy it already has."""
    kl, active = test.get("test_kl"), test.get("test_active_units")
    if kl is None and active is None:
        return None
    if (kl is None or kl >= COLLAPSE_KL) and (active is None or active > 0):
        return None
    facts = []
    if kl is not None:
        facts.append(f"test KL {kl:.2f} nats")
    if active is not None:
        facts.append(f"{active} active units")
    if kl is not None and kl >= COLLAPSE_KL:  # q pays its KL, but the same for every image
        return (
            f"posterior collapse ({', '.join(facts)}): q(z | x) is the same for every image, "
            f"so z tells the decoder nothing about x; {remedy(config)}"
        )
    return (
        f"posterior collapse ({', '.join(facts)}): the decoder ignores z, so every "
        f"reconstruction and sample is alike; {remedy(config)}"
    )


def collapse_note(record: dict[str, Any], last: bool, config=None) -> str:
    """What an epoch line adds: the whole sentence after the last epoch, a short mark before."""
    said = verdict(record, config)
    if said is None:
        return ""
    if last:
        return f"\n{said}"
    return f"  [posterior collapse: {said.split('(')[1].split(')')[0]}; docs/collapse.md]"


def last_verdict(records: list[dict[str, Any]], config=None) -> str | None:
    """The sentence of a run's last evaluation (``metrics.jsonl``'s records), if any."""
    last = next((r for r in reversed(records) if "test_kl" in r), {})
    return verdict(last, config)
