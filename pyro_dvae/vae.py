"""The VAE as a Pyro model and guide over one latent site ``z``."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from numbers import Integral

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import nn

from .families import LatentFamily
from .inference import seeded
from .networks import Decoder, Encoder, MemberMLP

_instances = itertools.count()


class VAE(nn.Module):
    """``model`` and ``guide`` as methods, following Pyro's ``examples/vae/vae.py``.

    Both sum over the batch (one ``pyro.plate("data")``); training divides by the
    batch size so the loss is the mean −ELBO per image, as in the paper. The
    networks are registered in Pyro's global param store as ``<name>.encoder`` and
    ``<name>.decoder``; each instance gets its own ``name`` so that several models
    can live in one process.

    ``guide_module`` replaces the family's amortised guide: an ``nn.Module`` (or
    ``PyroModule``) whose ``forward(x)`` samples site ``z`` inside
    ``pyro.plate("data", x.shape[0])``. It is a submodule, so its weights are
    saved with the model's.

    :meth:`group` stacks M such models into one whose inputs are (M, batch, pixels)
    and whose ``z`` is sampled inside ``pyro.plate("members", M)`` as well.

    ``family``: the latent family (:func:`~pyro_dvae.families.make_family`); ``input_dim``:
    pixels per image; ``hidden``: the width of the encoder's and the decoder's two hidden
    layers; ``name``: the prefix of its networks in the param store (``None``: ``vae0``,
    ``vae1``, ... in order of creation); ``networks``: an (encoder, decoder) pair to share
    rather than new ones, the encoder ``None`` beside a ``guide_module`` (as
    :meth:`with_family` and :meth:`group` pass them).
    """

    #: 0 for one model; M for a group of M (see :mod:`pyro_dvae.group`)
    members: int = 0

    def __init__(
        self,
        family: LatentFamily,
        input_dim: int,
        hidden: int = 500,
        name: str | None = None,
        guide_module: nn.Module | None = None,
        networks: tuple[nn.Module | None, nn.Module] | None = None,
    ):
        super().__init__()
        self.name = name or f"vae{next(_instances)}"
        self.family = family
        self.input_dim = input_dim
        self.guide_module = guide_module
        if networks is None:  # new networks; given ones are shared (see with_family)
            encoder = Encoder(input_dim, hidden, family.head_size) if guide_module is None else None
            networks = (encoder, Decoder(family.code_size, hidden, input_dim))
        self.encoder, self.decoder = networks

    def model(self, x: torch.Tensor) -> None:
        """p(x, z): ``z`` from the prior; the images ``x`` observed as Bernoulli pixels."""
        pyro.module(f"{self.name}.decoder", self.decoder)
        with self._plates(x):
            z = pyro.sample("z", self.family.prior(x))
            logits = self.decoder(self.family.decoder_input(z))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """q(z | x): the family's posterior from the encoder, or ``guide_module``'s."""
        if self.guide_module is not None:
            if not isinstance(self.guide_module, PyroModule):
                pyro.module(f"{self.name}.guide", self.guide_module)
            return self.guide_module(x)
        pyro.module(f"{self.name}.encoder", self.encoder)
        with self._plates(x):
            pyro.sample("z", self.family.posterior(self.encoder(x)))

    @contextmanager
    def _plates(self, x: torch.Tensor) -> Iterator[None]:
        with ExitStack() as stack:
            if self.members:
                stack.enter_context(pyro.plate("members", self.members, dim=-2))
            stack.enter_context(pyro.plate("data", x.shape[-2], dim=-1))
            yield

    @classmethod
    def group(cls, family: LatentFamily, vaes: list[VAE], name: str | None = None) -> VAE:
        """M models of one shape trained as one: each network's weights stacked along a
        leading member axis (copies of theirs); ``family`` holds the members' values
        (:meth:`~pyro_dvae.families.LatentFamily.for_members`)."""
        if any(v.guide_module is not None for v in vaes):
            raise ValueError("a group trains the families' own guides, not custom ones")
        nets = (MemberMLP([v.encoder for v in vaes]), MemberMLP([v.decoder for v in vaes]))
        vae = cls(family, vaes[0].input_dim, name=name, networks=nets)
        vae.members = len(vaes)
        return vae

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> dist.TorchDistribution:
        """The posterior q(z | x) for a batch."""
        if self.guide_module is None:
            return self.family.posterior(self.encoder(x))
        return poutine.trace(self.guide).get_trace(x).nodes["z"]["fn"]

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities for latent values ``z``."""
        return torch.sigmoid(self.decoder(self.family.decoder_input(z)))

    @torch.no_grad()
    def sample(
        self, n: int, binary: bool = False, seed: int | None = None, return_z: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``n`` images from the model: z drawn from the prior on the decoder's device and
        dtype, decoded to pixel probabilities (n, pixels), or with ``binary`` one Bernoulli
        draw per pixel (0 or 1). ``seed``: drawn from a stream of its own, the caller's
        random state left as it was; ``None``: from torch's global stream. ``return_z``:
        ``(z, images)``."""
        if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
            raise ValueError(f"n must be a whole number >= 1, not {n!r}")
        if self.members:
            raise ValueError("a group samples through its members' own models")
        like = next(self.decoder.parameters()).new_zeros(n, 1)
        with seeded(seed, like.device) if seed is not None else nullcontext():
            z = self.family.prior(like).sample()
            probs = self.decode(z)
            images = torch.bernoulli(probs) if binary else probs
        return (z, images) if return_z else images

    def with_family(self, family: LatentFamily) -> VAE:
        """A twin sharing these networks but scoring ``family`` (same head and code sizes)."""
        if (family.head_size, family.code_size) != (self.family.head_size, self.family.code_size):
            raise ValueError("with_family needs the same encoder head and decoder input sizes")
        return VAE(
            family,
            self.input_dim,
            name=f"{self.name}-{family.name}",
            guide_module=self.guide_module,
            networks=(self.encoder, self.decoder),
        )

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The guide's parameters: the encoder's, or the custom guide's."""
        net = self.encoder if self.guide_module is None else self.guide_module
        return list(net.parameters())
