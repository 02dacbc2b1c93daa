"""Why the Logit-normal collapses on the 8x8 digits and the Gaussian does not: the numbers of
docs/collapse.md.

Usage: ``python scripts/collapse_study.py [--epochs 20] [--variants a,b] [fit options...]``.
Trains each variant on digits (seed 0, CPU) and prints, after each epoch: the test KL (nats),
the KL of each unit in y-space (analytic: KL(LN(μ, σ²) ‖ LN(0, α)) = KL(N(μ, σ²) ‖ N(0, α))),
the active units (Burda et al.: Var_x E_q[z_u | x] > 0.01, of what the decoder reads), and
the decoder's gain from z: the test reconstruction −log p(x | z) with each image's own z
against a z drawn from q(z | x') of another test image (nats per image; 0: it ignores z).

Variants: ``gaussian``, ``logitnormal``; ``ln-slope1``: the Logit-normal whose decoder reads
4·(sigmoid(y) − ½) (slope 1 at y = 0, still bounded); ``gauss-slope4``: the Gaussian whose
decoder reads y / 4 (the sigmoid's slope at 0, unbounded). Extra arguments are fit options
(``--kl-warmup 10``, ``--free-bits 0.5``, ``--lr 3e-3``, ``--alpha 1.78``).
"""

from __future__ import annotations

import argparse
import math

import torch

from pyro_dvae import FitConfig, Trainer, load_dataset
from pyro_dvae.evaluation import active_units, posterior_means
from pyro_dvae.inference import seeded

VARIANTS = {
    "gaussian": ("gaussian", None),
    "logitnormal": ("logitnormal", None),
    "ln-slope1": ("logitnormal", lambda z: 4 * (z - 0.5)),
    "gauss-slope4": ("gaussian", lambda z: z / 4),
}


def unit_kl(trainer: Trainer, x: torch.Tensor) -> torch.Tensor:
    """Mean KL per unit over ``x`` in y-space (equal to z-space's: KL is invariant)."""
    loc, log_var = trainer.vae.encoder(x).chunk(2, dim=-1)
    prior_var = getattr(trainer.family, "alpha", 1.0)
    var = log_var.exp()
    kl = 0.5 * (var / prior_var + loc**2 / prior_var - 1 - log_var + math.log(prior_var))
    return kl.mean(0)


def decoder_gain(trainer: Trainer, x: torch.Tensor) -> float:
    """−log p(x | z of another image) − (−log p(x | own z)), mean over ``x`` (nats)."""
    vae = trainer.vae
    z = vae.encode(x).sample()
    other = z[torch.randperm(x.shape[0])]

    def nll(codes):
        logits = vae.decoder(vae.family.decoder_input(codes))
        return torch.nn.functional.binary_cross_entropy_with_logits(
            logits, x, reduction="none"
        ).sum(-1)

    return float((nll(other) - nll(z)).mean())


def study(name: str, epochs: int, options: dict) -> None:
    family, read = VARIANTS[name]
    config = FitConfig(dataset="digits", family=family, epochs=epochs, **options)
    trainer = Trainer(config, load_dataset("digits"), "cpu", progress=False, log=lambda m: None)
    if read is not None:
        plain = trainer.family.decoder_input
        trainer.family.decoder_input = lambda z: read(plain(z))
    x = trainer.data.test
    print(f"\n{name} {options}")
    print("epoch  test-KL  active  gain(nats)  per-unit KL (largest 5)")
    for epoch in range(1, epochs + 1):
        trainer.fit(epoch)
        with torch.no_grad(), seeded(1, trainer.device):
            kl = unit_kl(trainer, x)
            active, _ = active_units(posterior_means(trainer.vae, x))
            gain = decoder_gain(trainer, x)
        test_kl = trainer.history[-1]["test_kl"]
        top = ", ".join(f"{v:.2f}" for v in kl.sort(descending=True).values[:5].tolist())
        if epoch in (1, 2, 3, 5) or epoch % 5 == 0:
            print(f"{epoch:5d}  {test_kl:7.2f}  {active:6d}  {gain:10.2f}  {top}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--variants", default="gaussian,logitnormal,ln-slope1,gauss-slope4")
    args, rest = parser.parse_known_args()
    options = {}
    for flag, value in zip(rest[::2], rest[1::2], strict=True):
        name = flag.lstrip("-").replace("-", "_")
        kind = type(FitConfig.__dataclass_fields__[name].default)
        options[name] = kind(value)
    torch.set_num_threads(1)
    for name in args.variants.split(","):
        study(name, args.epochs, options)


if __name__ == "__main__":
    main()
