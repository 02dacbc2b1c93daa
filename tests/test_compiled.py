"""The compiled ELBO graph: shape specialisation, fresh noise per step, and the SVI step."""

import pyro
import pytest
import torch
from pyro.infer import SVI as PyroSVI

from pyro_dvae.compiled import CompiledGraph, aten_ops, specialise
from pyro_dvae.config import FitConfig
from pyro_dvae.families import make_family
from pyro_dvae.inference import SVI, make_elbo
from pyro_dvae.optim import FusedClippedAdam
from pyro_dvae.vae import VAE

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]

CONFIGS = {
    "gaussian": FitConfig(family="gaussian", latent_dim=3),
    "logitnormal": FitConfig(family="logitnormal", latent_dim=3, alpha=1.78),
    "concrete": FitConfig(family="concrete", latent_dim=2, categories=5),
}


def _vae(name, dtype=torch.float64):
    return VAE(make_family(CONFIGS[name]), input_dim=12, hidden=8).to(dtype)


def _traced(fn, *inputs):
    return torch.jit.trace(fn, inputs, check_trace=False)


def test_specialise_drops_operations_that_do_nothing_at_the_traced_shape():
    def f(x, y):
        n = x.shape[0]
        scale = torch.tensor(1.0) * n / n  # what a Pyro plate does with a traced size
        a, b = torch.broadcast_tensors(x, y)
        zeros = torch.zeros(n, 3)  # a constant once n is
        return (a.reshape(n, -1).expand(n, 3) * scale + 0.0 - zeros).sum() - (b * 1).sum()

    x, y = torch.randn(4, 3), torch.randn(4, 3)
    traced = _traced(f, x, y)
    g = specialise(traced.graph)
    kinds = [n.kind() for n in g.nodes() if n.kind().startswith("aten::")]
    # what is left is the arithmetic itself
    assert sorted(kinds) == ["aten::sub", "aten::sum", "aten::sum"]
    fast = torch._C._create_function_from_graph("f", g)
    x2, y2 = torch.randn(4, 3), torch.randn(4, 3)
    assert torch.equal(fast(x2, y2), f(x2, y2))


def test_specialise_leaves_data_dependent_shapes_alone():
    def f(x):
        kept = x[x > 0]
        return kept.reshape(kept.shape[0]).sum() * 1

    assert specialise(_traced(f, torch.randn(6)).graph) is None


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_compiled_elbo_is_specialised_and_draws_fresh_noise_every_step(name):
    """Two steps without reseeding: the compiled graph matches the eager ELBO on both."""
    vae = _vae(name)
    x = torch.bernoulli(torch.full((6, 12), 0.4, dtype=torch.float64))
    losses = {}
    for jit in (False, True):
        elbo = make_elbo("trace", jit=jit)
        elbo.loss_and_grads(vae.model, vae.guide, x)  # compiles (off the training RNG)
        vae.zero_grad(set_to_none=True)
        pyro.set_rng_seed(3)
        losses[jit] = []
        for _ in range(2):
            losses[jit].append(elbo.loss_and_grads(vae.model, vae.guide, x))
            vae.zero_grad(set_to_none=True)
    (graph,) = elbo._compiled.values()
    assert graph.function is not graph.traced
    assert aten_ops(graph.graph) < 0.7 * aten_ops(graph.traced.graph)
    assert not any(n.kind() == "aten::size" for n in graph.graph.nodes())
    assert losses[True][0] != losses[True][1]  # a new draw each step, not a frozen constant
    assert losses[True] == pytest.approx(losses[False], rel=1e-10)


@pytest.mark.parametrize("jit", [False, True])
def test_svi_step_updates_what_pyros_svi_step_updates(jit):
    """pyro_dvae.SVI (no per-step param trace) and pyro.infer.SVI give the same parameters."""
    x = torch.bernoulli(torch.full((6, 12), 0.4, dtype=torch.float64))
    trained = []
    for svi_class in (PyroSVI, SVI):
        pyro.clear_param_store()
        torch.manual_seed(0)
        vae = _vae("logitnormal")
        init = [p.detach().clone() for p in vae.parameters()]
        svi = svi_class(
            vae.model, vae.guide, FusedClippedAdam(lr=0.01), make_elbo("trace", jit=jit)
        )
        pyro.set_rng_seed(1)
        losses = [svi.step(x) for _ in range(3)]
        trained.append((losses, [p.detach().clone() for p in vae.parameters()]))
    (l0, p0), (l1, p1) = trained
    assert l1 == pytest.approx(l0, rel=1e-10)
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(p0, p1, strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(init, p1, strict=True))  # all were updated


def test_compiled_step_recompiles_when_the_param_store_is_cleared():
    vae = _vae("gaussian")
    elbo = make_elbo("trace", jit=True)
    x = torch.bernoulli(torch.full((5, 12), 0.5, dtype=torch.float64))
    elbo.loss_and_grads(vae.model, vae.guide, x)
    (first,) = elbo._compiled.values()
    pyro.clear_param_store()
    assert not first.is_current()
    vae.zero_grad(set_to_none=True)
    elbo.loss_and_grads(vae.model, vae.guide, x)
    (second,) = elbo._compiled.values()
    assert second is not first and second.is_current()
    assert all(p.grad is not None for p in vae.parameters())


def test_without_torchs_private_passes_the_traced_graph_is_used(monkeypatch):
    monkeypatch.delattr(torch._C, "_jit_pass_constant_propagation")
    vae = _vae("gaussian")
    elbo = make_elbo("trace", jit=True)
    x = torch.bernoulli(torch.full((5, 12), 0.5, dtype=torch.float64))
    pyro.set_rng_seed(0)
    loss = elbo.loss_and_grads(vae.model, vae.guide, x)
    (graph,) = elbo._compiled.values()
    assert elbo.jit and graph.function is graph.traced
    vae.zero_grad(set_to_none=True)
    pyro.set_rng_seed(0)
    assert make_elbo("trace").loss_and_grads(vae.model, vae.guide, x) == pytest.approx(loss)


def test_compiling_leaves_the_callers_random_state_alone():
    vae = _vae("logitnormal")
    elbo = make_elbo("trace")
    x = torch.bernoulli(torch.full((4, 12), 0.5, dtype=torch.float64))

    state = torch.get_rng_state()
    graph = CompiledGraph(lambda x: elbo.differentiable_loss(vae.model, vae.guide, x), (x,))
    assert torch.equal(torch.get_rng_state(), state)
    assert graph.function is not graph.traced
