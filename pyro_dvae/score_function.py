"""NVIL, VIMCO and DisARM: unbiased gradient estimators for discrete latents, as Pyro ELBOs.

Each is a ``pyro.infer.ELBO`` for a model and guide over one ``data`` plate: its
``loss_and_grads(model, guide, x)`` backpropagates a surrogate whose gradient is the
estimator's (divided by the batch size, as the project's losses are) and returns the mean
loss per image; ``last_recon`` is the mean −log p(x | z) of the step. Running state
(baselines) is in ``state_dict`` for a run's checkpoint, so a resumed run is bit-identical.

- :class:`NVILELBO` (Mnih & Gregor, 2014): the score function of ``log p(x, z) − log q(z|x)``
  centred by an input-dependent baseline b(x) (an MLP trained on the squared error) and a
  running mean, divided by a running standard deviation s ≥ 1: the encoder's gradient is the
  ELBO's divided by s (a step size that adapts), the decoder's is the ELBO's.
- :class:`VIMCOELBO` (Mnih & Rezende, 2016): the K-sample bound, each sample's score
  function weighted by the bound minus the bound with that sample replaced by the others'
  geometric mean (leave-one-out); the K samples in one vectorised pass.
- :class:`DisARMELBO` (Dong, Mnih & Tucker, 2020), one Bernoulli site: antithetic pairs
  b = 1[u < σ(θ)], b̃ = 1[1 − u < σ(θ)] and the gradient
  ½ (f(b) − f(b̃)) (−1)^b̃ 1[b ≠ b̃] σ(|θ|) of E_q[f] with f = log p(x, b); the entropy of q
  is analytic.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from .errors import ConfigError
from .iwae_bound import log_mean_exp, particle_log_densities, scaled_log_prob, vectorized
from .pyro_internals import SurrogateELBO

_baselines = itertools.count()


class NVILELBO(SurrogateELBO):
    """Neural variational inference and learning (Mnih & Gregor, 2014); ``decay`` is their
    α of the running mean and variance of the centred signal."""

    def __init__(self, *args, decay: float = 0.8, **kwargs):
        super().__init__(*args, **kwargs)
        self.decay = decay
        self.mean: float | None = None
        self.var: float | None = None
        self.net: BaselineNet | None = None
        self.net_name = f"nvil_baseline{next(_baselines)}"  # its own params in Pyro's store

    def baseline_net(self, x: torch.Tensor) -> BaselineNet:
        if self.net is None:
            with torch.random.fork_rng(devices=[]):  # its init moves no one's stream
                self.net = BaselineNet(x.shape[-1]).to(device=x.device, dtype=x.dtype)
        return self.net

    def surrogate(self, model, guide, x, training):
        log_px, log_pz, log_qz = particle_log_densities(model, guide, x, self.num_particles)
        signal = log_px + log_pz - log_qz  # (K, batch)
        net = self.baseline_net(x)
        pyro.module(self.net_name, net)
        b = net(x)
        centred = signal.detach() - b.detach()
        mean = float(centred.mean()) if self.mean is None else self.mean
        var = float(centred.var()) if self.var is None and centred.numel() > 1 else self.var
        scale = max(1.0, math.sqrt(var)) if var is not None else 1.0
        advantage = (centred - mean) / scale
        # Mnih & Gregor's update: the model's terms pathwise, the encoder's by the centred,
        # normalised signal alone (log q's own gradient has mean zero and only adds noise)
        objective = (log_px + log_pz).sum() + (advantage * log_qz).sum()
        baseline_loss = ((signal.detach() - mean - b) ** 2).sum()
        n = signal.numel()
        if training:
            a = self.decay
            self.mean = a * mean + (1 - a) * float(centred.mean())
            batch_var = float(centred.var()) if centred.numel() > 1 else 0.0
            self.var = a * (var if var is not None else batch_var) + (1 - a) * batch_var
        self.last_recon = -log_px.detach().mean()
        return (baseline_loss - objective) / n, -signal.detach().mean()

    def state_dict(self):
        state: dict[str, Any] = {"mean": self.mean, "var": self.var}
        if self.net is not None:
            state["net"] = self.net.state_dict()
        return state

    def load_state_dict(self, state, like):
        self.mean, self.var = state.get("mean"), state.get("var")
        if "net" in state:
            self.baseline_net(like).load_state_dict(state["net"])


class VIMCOELBO(SurrogateELBO):
    """Variational inference for Monte Carlo objectives (Mnih & Rezende, 2016); its loss is
    the K-sample bound −log (1/K) Σ_k p(x, z_k) / q(z_k | x), K = ``num_particles`` ≥ 2."""

    #: for K > 1 the bound is tighter than the ELBO: loss − recon is no KL
    importance_weighted = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.num_particles < 2:
            raise ConfigError("VIMCO needs 2 or more particles (--num-particles)")

    def surrogate(self, model, guide, x, training):
        k = self.num_particles
        log_px, log_pz, log_qz = particle_log_densities(model, guide, x, k)
        log_w = log_px + log_pz - log_qz  # (K, batch)
        bound = log_mean_exp(log_w)
        with torch.no_grad():
            lw = log_w.detach()
            others = (lw.sum(0, keepdim=True) - lw) / (k - 1)  # the others' mean log-weight
            loo = lw.unsqueeze(0).repeat(k, 1, 1)  # loo[j]: the weights with the j-th replaced
            every = torch.arange(k, device=x.device)
            loo[every, every] = others
            signal = bound.unsqueeze(0) - log_mean_exp(loo, 1)
        objective = bound.sum() + (signal * log_qz).sum()
        self.last_recon = -log_px.detach().mean()
        return -objective / x.shape[0], -bound.detach().mean()


class DisARMELBO(SurrogateELBO):
    """DisARM (Dong, Mnih & Tucker, 2020) for guides whose latent sites are Bernoulli;
    ``num_particles`` antithetic pairs per image."""

    def surrogate(self, model, guide, x, training):
        k = self.num_particles
        guide_tr = prune_subsample_sites(poutine.trace(guide).get_trace(x))
        pairs, logits, entropy = {}, {}, 0.0
        latent = [
            n for n, s in guide_tr.nodes.items() if s["type"] == "sample" and not s["is_observed"]
        ]
        if len(latent) != 1:  # a later site's θ would depend on the first site's own draw
            raise ConfigError(
                f"DisARM here takes a guide with one Bernoulli site; this one has {len(latent)}"
            )
        for name, site in guide_tr.nodes.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            theta = bernoulli_logits(name, site["fn"])
            u = torch.rand((k, *theta.shape), dtype=theta.dtype, device=theta.device)
            p = torch.sigmoid(theta.detach())
            b, b_anti = (u < p).to(theta.dtype), (1 - u < p).to(theta.dtype)
            pairs[name] = torch.cat([b, b_anti])  # (2K, batch, M)
            logits[name] = theta
            entropy = entropy + site["fn"].entropy()
        conditioned = poutine.condition(vectorized(model, 2 * k), data=pairs)
        model_tr = prune_subsample_sites(poutine.trace(conditioned).get_trace(x))
        shape = (2 * k, x.shape[0])
        log_joint, log_px = x.new_zeros(shape), x.new_zeros(shape)
        for name, site in model_tr.nodes.items():
            if site["type"] == "sample":
                log_p = scaled_log_prob(site).expand(shape)
                log_joint = log_joint + log_p
                if site["is_observed"] and name not in pairs:  # the data, not a conditioned code
                    log_px = log_px + log_p
        objective = log_joint.sum() / 2 + k * entropy.sum()
        with torch.no_grad():
            half_diff = (log_joint[:k] - log_joint[k:]) / 2  # (K, batch)
        for name, theta in logits.items():
            b, b_anti = pairs[name][:k], pairs[name][k:]
            sign = 1 - 2 * b_anti  # (−1)^b̃
            weight = half_diff.unsqueeze(-1) * sign * (b != b_anti) * torch.sigmoid(theta.abs())
            objective = objective + (weight.detach().sum(0) * theta).sum()
        self.last_recon = -log_px.detach().mean()
        value = -(log_joint.detach().mean(0) + entropy.detach())
        return -objective / (k * x.shape[0]), value.mean()


def bernoulli_logits(name: str, fn: dist.Distribution) -> torch.Tensor:
    """The logits of a Bernoulli guide site (possibly ``.to_event``), or a one-line refusal."""
    base = fn
    while isinstance(base, dist.Independent):
        base = base.base_dist
    if not isinstance(base, torch.distributions.Bernoulli):
        raise ConfigError(
            f"DisARM needs Bernoulli latent sites; site {name!r} is {type(base).__name__}"
        )
    return base.logits


class BaselineNet(torch.nn.Module):
    """An input-dependent baseline r(x): one tanh hidden layer of 100 units (Mnih & Gregor's
    size); its output layer starts at zero, so the baseline starts at the running mean."""

    def __init__(self, input_dim: int, hidden: int = 100):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(input_dim, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)
        )
        with torch.no_grad():
            self.net[2].weight.zero_()
            self.net[2].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)
