"""Mean, variance and E[log σ(Y) + log σ(−Y)] of σ(Y), Y ~ N(loc, scale²), by quadrature.

A trapezoid sum over Y's standard score on ±9 (mass outside: 2e−19), with a step of at most
``_STEP`` in both y and the score, exact to about e^{−2π²/_STEP} (σ's poles are at ±iπ).
Past a scale of ``_REACH / 9`` the window is cut to |y| ≤ ``_REACH`` and the integrand split
into a smooth asymptote with a closed-form expectation and a remainder that dies as e^{−|y|}.
Where the integrand is tilted (≈ e^{ky} far below 0) the window reaches towards 0, so tiny
means and variances keep their relative precision.
"""

from __future__ import annotations

import math

import torch

_STEP = 0.4
_REACH = 40.0  # past |y| = 40 every remainder below is under 2 e^{-40} ≈ 1e-17
_HALF = 9.0  # half-width of the window in standard deviations
_TAU = 2.0  # the asymptotes are the step and |y| smoothed by N(0, τ²)
_SQRT2 = math.sqrt(2.0)


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.special.erfc(-x / _SQRT2)


def _abs_excess(mu: torch.Tensor) -> torch.Tensor:
    """E|μ + ε| − |μ| for ε ~ N(0, 1), written without cancellation."""
    a = mu.abs()
    return math.sqrt(2 / math.pi) * torch.exp(-0.5 * mu * mu) - a * torch.special.erfc(a / _SQRT2)


def _tilt(loc: torch.Tensor, scale: torch.Tensor, k: int) -> torch.Tensor:
    """Where e^{ky} N(y; loc, scale²), cut off at y = 0, has its mass, in standard deviations
    from loc: min(k scale, −loc / scale), and 0 for a positive loc."""
    return torch.minimum(k * scale, -loc / scale).clamp_min(0.0)


def _nodes(loc: torch.Tensor, scale: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """Nodes y and weights w for the window u ∈ [lo − 9, hi + 9], and the mask of the
    elements whose window is cut to |y| ≤ ``_REACH`` (``None`` if none is)."""
    lo, hi = lo - _HALF, hi + _HALF
    cut = scale > _REACH / _HALF
    if cut.any():
        lo = torch.where(cut, torch.maximum(lo, (-_REACH - loc) / scale), lo)
        hi = torch.where(cut, torch.minimum(hi, (_REACH - loc) / scale), hi)
    else:
        cut = None
    width = (hi - lo).clamp_min(0.0)  # 0: an empty window, no remainder
    # as many nodes as the widest window needs for a step of at most _STEP in u and in y
    need = (width * scale.clamp_min(1.0)).detach().nan_to_num(0.0, 0.0, 0.0)  # NaN in, NaN out
    n = 2 + int(need.max() / _STEP) if need.numel() else 2
    step = (width / (n - 1)).unsqueeze(-1)
    u = lo.unsqueeze(-1) + step * torch.arange(n, dtype=loc.dtype, device=loc.device)
    w = step * torch.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)
    return loc.unsqueeze(-1) + scale.unsqueeze(-1) * u, w, cut


def _split(cut, smooth, rest, plain):
    """Where ``cut``, a closed-form ``smooth()`` plus the remainder's sum ``rest()``; else the
    plain sum ``plain()``. The cut forms are computed only if some element is cut."""
    if cut is None:
        return plain()
    return torch.where(cut, smooth() + rest(), plain())


def _smoothed_scale(scale: torch.Tensor) -> torch.Tensor:
    """v = √(s² + τ²): Y + τε for ε ~ N(0, 1) independent is N(loc, v²)."""
    return (scale.square() + _TAU**2).sqrt()


def sigmoid_mean(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """E[σ(Y)] elementwise."""
    loc, scale = torch.broadcast_tensors(loc, scale)
    tilt = _tilt(loc, scale, 1)  # σ(y) ≈ e^y far below 0: the integrand is e^y N(y)
    y, w, cut = _nodes(loc, scale, tilt, tilt)

    def rest():  # σ(y) − Φ(y/τ) = sign(y) (Φ(−|y|/τ) − σ(−|y|)), both terms small
        a = y.abs()
        return (w * y.sign() * (_normal_cdf(-a / _TAU) - torch.sigmoid(-a))).sum(-1)

    return _split(
        cut,
        lambda: _normal_cdf(loc / _smoothed_scale(scale)),  # E[Φ(Y/τ)]
        rest,
        lambda: (w * torch.sigmoid(y)).sum(-1),
    )


def sigmoid_variance(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Var[σ(Y)] elementwise, as E[(σ(Y) − m)²] on the side where σ is small."""
    loc, scale = torch.broadcast_tensors(loc, scale)
    loc = torch.where(loc > 0, -loc, loc)  # Var σ(Y) = Var σ(−Y)
    m = sigmoid_mean(loc, scale)
    # (σ − m)² is m² far below and e^{2y} above log m: the window spans both
    y, w, cut = _nodes(loc, scale, torch.zeros_like(loc), _tilt(loc, scale, 2))
    # cut: Var = m (1 − m) − E[σ(Y) σ(−Y)], and σ(y) σ(−y) dies as e^{−|y|}
    return _split(
        cut,
        lambda: m * (1 - m),
        lambda: -(w * torch.sigmoid(y) * torch.sigmoid(-y)).sum(-1),
        lambda: (w * (torch.sigmoid(y) - m.unsqueeze(-1)).square()).sum(-1),
    )


def sigmoid_log_jacobian(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """E[log σ(Y) + log σ(−Y)] = −E[|Y| + 2 log(1 + e^{−|Y|})] elementwise."""
    loc, scale = torch.broadcast_tensors(loc, scale)
    zero = torch.zeros_like(loc)
    y, w, cut = _nodes(loc, scale, zero, zero)
    a = y.abs()
    bump = -2.0 * torch.log1p(torch.exp(-a))

    def smooth():  # −|y| smoothed: −E|y + τε|; under Y ~ N(loc, s²) it is −E|loc + vε|
        v = _smoothed_scale(scale)
        return -(loc.abs() + v * _abs_excess(loc / v))

    return _split(
        cut,
        smooth,
        lambda: (w * (bump + _TAU * _abs_excess(y / _TAU))).sum(-1),  # −|y| + E|y + τε|
        lambda: (w * (bump - a)).sum(-1),
    )
