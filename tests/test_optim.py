"""Tests for ``pyro_dvae.optim.FusedClippedAdam``.

The reference is Pyro's own ``pyro.optim.ClippedAdam`` (one torch optimiser per
parameter, Python loop), driven with the same parameters and the same sequence
of gradients, the way ``pyro.infer.SVI`` drives an optimiser.
"""

from __future__ import annotations

import copy

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from torch.distributions import constraints

from pyro_dvae.optim import FusedClippedAdam


def _make_params(dtype):
    """Two pyro.param sites (one constrained) and a small module; returns leaf tensors."""
    g = torch.Generator().manual_seed(100)
    pyro.param("a", torch.randn(3, 4, generator=g, dtype=dtype))
    pyro.param("b", torch.rand(5, generator=g, dtype=dtype) + 0.5, constraint=constraints.positive)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)).to(
        dtype
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype))
    pyro.module("net", net)
    store = pyro.get_param_store()
    # the leaf tensors SVI hands to the optimiser
    return {name: store[name].unconstrained() for name in sorted(store.keys())}


def _grad_sequence(params, steps, scale, seed):
    """Random gradients; `scale` makes a good share of elements exceed clip_norm."""
    g = torch.Generator().manual_seed(seed)
    return [
        {n: scale * torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in params.items()}
        for _ in range(steps)
    ]


def _run(opt, params, grads):
    plist = list(params.values())
    for step_grads in grads:
        for n, p in params.items():
            p.grad = step_grads[n].clone()  # ClippedAdam clamps in place
        opt(plist)
    return {n: p.detach().clone() for n, p in params.items()}


CASES = [
    dict(lr=1e-2, clip_norm=10.0, lrd=1.0, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0),
    dict(lr=5e-2, clip_norm=0.5, lrd=0.97, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0),
    dict(lr=3e-3, clip_norm=1.0, lrd=0.999, betas=(0.8, 0.95), eps=1e-3, weight_decay=0.0),
    dict(lr=2e-2, clip_norm=2.0, lrd=0.99, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.1),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: f"lr{c['lr']}-clip{c['clip_norm']}-lrd{c['lrd']}"
)
def test_fused_clipped_adam_matches_pyro_clipped_adam(case, dtype):
    steps = 30
    pyro.clear_param_store()
    params = _make_params(dtype)
    init = {n: p.detach().clone() for n, p in params.items()}
    grads = _grad_sequence(params, steps, scale=2.0 * case["clip_norm"], seed=7)
    n_clipped = sum((g.abs() > case["clip_norm"]).sum().item() for s in grads for g in s.values())
    n_total = sum(g.numel() for s in grads for g in s.values())
    assert 0.1 * n_total < n_clipped < 0.9 * n_total  # clipping matters

    ours = _run(FusedClippedAdam(**case), params, grads)
    assert all(p.grad is None for p in params.values())  # grads left unset

    pyro.clear_param_store()
    params_ref = _make_params(dtype)
    for n in params_ref:
        torch.testing.assert_close(params_ref[n], init[n], rtol=0, atol=0)
    ref = _run(pyro.optim.ClippedAdam(dict(case)), params_ref, grads)

    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for n in ours:
        assert not torch.equal(ours[n], init[n])  # parameters actually moved
        torch.testing.assert_close(ours[n], ref[n], **tol)

    # the constrained param in the store follows its unconstrained leaf
    torch.testing.assert_close(pyro.param("b").detach(), ref["b"].exp(), **tol)


def test_fused_clipped_adam_differs_from_unclipped_adam():
    """Sanity check that clipping and lrd are really applied (the test above can fail)."""
    case = CASES[1]
    pyro.clear_param_store()
    params = _make_params(torch.float64)
    grads = _grad_sequence(params, 30, scale=2.0 * case["clip_norm"], seed=7)
    ours = _run(FusedClippedAdam(**case), params, grads)
    pyro.clear_param_store()
    params_ref = _make_params(torch.float64)
    plain = dict(case, clip_norm=1e6, lrd=1.0)
    other = _run(pyro.optim.ClippedAdam(plain), params_ref, grads)
    assert max((ours[n] - other[n]).abs().max().item() for n in ours) > 1e-3


def _fused_case():
    return dict(lr=2e-2, clip_norm=1.0, lrd=0.98, eps=1e-8)


@pytest.mark.parametrize("via_file", [False, True])
def test_get_state_set_state_round_trip(tmp_path, via_file):
    pyro.clear_param_store()
    params = _make_params(torch.float64)
    grads = _grad_sequence(params, 20, scale=2.0, seed=11)
    opt = FusedClippedAdam(**_fused_case())
    mid = _run(opt, params, grads[:10])
    state = opt.get_state()
    if via_file:
        path = tmp_path / "optim.pt"
        torch.save(state, path)
        state = torch.load(path, weights_only=True)
    else:
        state = copy.deepcopy(state)  # torch state dicts hold live references
    assert state["step_count"] == 10
    end = _run(opt, params, grads[10:])

    # fresh param store holding the step-10 values; fresh optimiser loads state
    # before its first call, then continues with the same gradients
    pyro.clear_param_store()
    params2 = _make_params(torch.float64)
    with torch.no_grad():
        for n, p in params2.items():
            p.copy_(mid[n])
    opt2 = FusedClippedAdam(**_fused_case())
    opt2.set_state(state)
    end2 = _run(opt2, params2, grads[10:])
    for n in end:
        torch.testing.assert_close(end2[n], end[n], rtol=0, atol=0)
    assert opt2.step_count == 20
    # learning-rate decay continued from where it was, not restarted
    lr_expected = _fused_case()["lr"] * _fused_case()["lrd"] ** 20
    assert opt2.optimizer.param_groups[0]["lr"] == pytest.approx(lr_expected, rel=1e-12)

    # without the saved state the continuation is different (the check can fail)
    pyro.clear_param_store()
    params3 = _make_params(torch.float64)
    with torch.no_grad():
        for n, p in params3.items():
            p.copy_(mid[n])
    end3 = _run(FusedClippedAdam(**_fused_case()), params3, grads[10:])
    assert max((end3[n] - end[n]).abs().max().item() for n in end) > 1e-4


def test_set_state_on_live_optimizer_rewinds():
    pyro.clear_param_store()
    params = _make_params(torch.float64)
    grads = _grad_sequence(params, 20, scale=2.0, seed=13)
    opt = FusedClippedAdam(**_fused_case())
    mid = _run(opt, params, grads[:10])
    state = copy.deepcopy(opt.get_state())
    end = _run(opt, params, grads[10:])
    # rewind: restore params and optimiser state, replay the same gradients
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(mid[n])
    opt.set_state(state)
    assert opt.step_count == 10
    again = _run(opt, params, grads[10:])
    for n in end:
        torch.testing.assert_close(again[n], end[n], rtol=0, atol=0)


def test_svi_end_to_end_with_fused_clipped_adam():
    """Conjugate model: z ~ N(0, 1), x_i | z ~ N(z, 1). Exact posterior is known."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    N = 20
    data = 1.5 + torch.randn(N)

    def model(x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        loc = pyro.param("q_loc", torch.tensor(-2.0))
        scale = pyro.param("q_scale", torch.tensor(2.0), constraint=constraints.positive)
        pyro.sample("z", dist.Normal(loc, scale))

    elbo = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(model, guide, FusedClippedAdam(lr=0.1, clip_norm=10.0, lrd=0.995), elbo)
    losses = [svi.step(data) for _ in range(250)]
    first = sum(losses[:10]) / 10
    last = sum(losses[-25:]) / 25
    assert last < first - 5.0
    # exact posterior N(Σx / (N+1), 1 / (N+1)); SGD noise allows a loose tolerance
    post_loc = data.sum().item() / (N + 1)
    post_scale = (1.0 / (N + 1)) ** 0.5
    assert pyro.param("q_loc").item() == pytest.approx(post_loc, abs=0.1)
    assert pyro.param("q_scale").item() == pytest.approx(post_scale, rel=0.15)
