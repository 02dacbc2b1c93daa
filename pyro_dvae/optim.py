"""ClippedAdam's update rule applied to all parameters in one fused Adam call, and a group's
optimiser state split member by member and stacked back."""

from __future__ import annotations

import math
from typing import Any

import pyro
import torch
from pyro.optim import PyroOptim

from .errors import TrainingError


class FusedClippedAdam(PyroOptim):
    """Pyro's :class:`~pyro.optim.ClippedAdam`, but one optimiser for every parameter.

    ``pyro.optim.ClippedAdam`` keeps one ``torch.optim`` object per parameter and
    updates them in a Python loop. This class keeps a single ``torch.optim.Adam``
    (fused kernel where the device supports it, else foreach) and reproduces
    ClippedAdam's rule exactly:

    * each gradient element is clamped to ``[-clip_norm, clip_norm]``;
    * ``lr`` is multiplied by ``lrd`` before every step;
    * ClippedAdam divides by ``sqrt(v) + eps`` where Adam divides by
      ``sqrt(v / (1 - β₂ᵗ)) + eps``; the two agree when Adam is given
      ``eps / sqrt(1 - β₂ᵗ)``, which is set before each step.

    One difference: the step count ``t`` is shared by all parameters, where
    ClippedAdam counts per parameter. They differ only for a parameter that
    receives no gradient on some step, which does not happen in these VAEs.

    ``lr``: the learning rate; ``betas``: Adam's decay rates (β₁, β₂) of the gradient's
    first and second moments; ``eps``: added to ClippedAdam's denominator; ``clip_norm``
    and ``lrd`` as above (``lrd`` = 1: a constant rate); ``weight_decay``: an L2 penalty
    added to each gradient after clipping, as ClippedAdam adds it.
    """

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        clip_norm: float = 10.0,
        lrd: float = 1.0,
        weight_decay: float = 0.0,
    ):
        super().__init__(torch.optim.Adam, {"lr": lr})
        self.lr, self.betas, self.eps = lr, tuple(betas), eps
        self.clip_norm, self.lrd, self.weight_decay = clip_norm, lrd, weight_decay
        self.step_count = 0
        self.params: list[torch.Tensor] = []
        self.names: list[str] = []
        self.optimizer: torch.optim.Adam | None = None
        self._known: set[int] = set()
        self._pending_state: dict[str, Any] | None = None
        self._scheduled = False  # whether set_lr has set the rate

    def _add(self, params: list[torch.Tensor]) -> None:
        store = pyro.get_param_store()
        named = sorted(((store.param_name(p) or "", p) for p in params), key=lambda t: t[0])
        new = [p for _, p in named]
        group = dict(lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay)
        if self.optimizer is None:
            fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in new)
            self.optimizer = torch.optim.Adam(
                new, fused=fused, foreach=None if fused else True, **group
            )
        else:
            self.optimizer.add_param_group({"params": new, **group})
        self.params += new
        self.names += [n for n, _ in named]
        self._known.update(id(p) for p in new)
        if self._pending_state is not None:
            self._load(self._pending_state)

    def __call__(self, params, *args, **kwargs) -> None:
        new = [p for p in params if id(p) not in self._known]
        if new:
            self._add(new)
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return
        if grads[0].device.type == "cpu":
            for g in grads:  # one pass per tensor; CPU foreach would loop twice
                g.clamp_(-self.clip_norm, self.clip_norm)
        else:  # one fused launch per bound
            torch.nn.utils.clip_grad_value_(self.params, self.clip_norm, foreach=True)
        self.step_count += 1
        eps_t = self.eps / math.sqrt(1.0 - self.betas[1] ** self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] *= self.lrd
            group["eps"] = eps_t
        self.optimizer.step()
        # Leave grads unset; Pyro's zero_grads then has nothing to allocate.
        self.optimizer.zero_grad(set_to_none=True)

    def set_lr(self, lr: float) -> None:
        """The learning rate of the next step (a schedule's; ``lrd`` still multiplies it),
        also over the rate a checkpoint's state restores when the parameters become known."""
        self.lr, self._scheduled = lr, True
        for group in self.optimizer.param_groups if self.optimizer is not None else ():
            group["lr"] = lr

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, Any]:
        """A plain dict (tensors, numbers, strings) that ``torch.load(weights_only=True)`` reads."""
        if self.optimizer is None:
            return self._pending_state or {"step_count": 0, "names": [], "optimizer": None}
        return {
            "step_count": self.step_count,
            "names": list(self.names),
            "shapes": [list(p.shape) for p in self.params],
            "optimizer": self.optimizer.state_dict(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state`; applied as soon as the parameters are known."""
        if self.optimizer is None:
            self._pending_state = state
            self.step_count = int(state["step_count"])
        else:
            self._load(state)

    def _load(self, state: dict[str, Any]) -> None:
        if state.get("optimizer") is None:
            self._pending_state = None
            return
        # Names carry the model's instance prefix, so a restored model matches by
        # the order (sorted by name) and shapes of its parameters.
        shapes = [list(p.shape) for p in self.params]
        if state.get("shapes", shapes) != shapes or len(state["names"]) != len(self.names):
            raise ValueError(
                f"optimiser state is for parameters {state['names']}, not {self.names}"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        if self._scheduled:
            self.set_lr(self.lr)
        self.step_count = int(state["step_count"])
        self._pending_state = None


# ------------------------------------------------------- a group's state, member by member
_MOMENTS = ("exp_avg", "exp_avg_sq")


def member_optim_state(state: dict[str, Any], m: int) -> dict[str, Any]:
    """Member ``m``'s slice of a group's :meth:`FusedClippedAdam.get_state`, in the form a
    solo run's optimiser saves (its parameters in the same, name-sorted order)."""
    if state.get("optimizer") is None:
        return {"step_count": state["step_count"], "names": [], "optimizer": None}
    inner = state["optimizer"]
    per_param = {
        i: {k: (v[m].clone() if k in _MOMENTS else v.clone()) for k, v in s.items()}
        for i, s in inner["state"].items()
    }
    return {
        "step_count": state["step_count"],
        "names": list(state["names"]),
        "shapes": [shape[1:] for shape in state["shapes"]],
        "optimizer": {"state": per_param, "param_groups": inner["param_groups"]},
    }


def stack_optim_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """The group's optimiser state from its members' (the inverse of
    :func:`member_optim_state`); all members must be at the same step."""
    counts = {int(s["step_count"]) for s in states}
    if len(counts) > 1:
        raise TrainingError(f"the members' optimisers are at different steps ({sorted(counts)})")
    first = states[0]
    if first.get("optimizer") is None:
        return {"step_count": first["step_count"], "names": [], "optimizer": None}
    per_param = {}
    for i, s in first["optimizer"]["state"].items():
        inner = [t["optimizer"]["state"][i] for t in states]
        moments = {k: torch.stack([t[k] for t in inner]) for k in _MOMENTS}
        per_param[i] = {**s, **moments}
    return {
        "step_count": first["step_count"],
        "names": list(first["names"]),
        "shapes": [[len(states), *shape] for shape in first["shapes"]],
        "optimizer": {"state": per_param, "param_groups": first["optimizer"]["param_groups"]},
    }
