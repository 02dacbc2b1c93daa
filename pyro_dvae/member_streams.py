"""A group member's own random stream, and the mode that draws a group's noise member by
member from those streams, so that a member's noise is its solo run's in any group
(:mod:`pyro_dvae.group`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch.overrides import TorchFunctionMode

from .errors import TrainingError


class MemberStream:
    """One member's torch random stream, apart from torch's global one.

    A solo run draws its posterior noise from torch's global generator (the device's),
    seeded by its seed and then stepped by its initial weights and first checks; its
    checkpoint saves that generator's state. A member draws the same noise from ``gen``,
    which takes over the global stream where the member's solo :class:`Trainer` leaves
    it (when it is built, or has loaded a checkpoint), and its checkpoint saves ``gen``'s
    state where a solo run saves torch's. So a member's noise is its solo run's, step for
    step, in any group and alone, and a member resumes its own stream wherever it goes.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.gen = torch.Generator(device=device)
        self.take_global()

    def take_global(self) -> None:
        """Continue the stream torch's global generator is at now (its copy: they part)."""
        self._cpu = torch.get_rng_state()  # a CUDA run's CPU stream: kept for its checkpoint
        if self.device.type == "cuda":
            self.gen.set_state(torch.cuda.get_rng_state(self.device))
        elif self.device.type == "cpu":
            self.gen.set_state(self._cpu)
        else:  # a device whose global state is not read here (mps...): a stream of its own
            digest = hashlib.sha256(self._cpu.numpy().tobytes()).digest()
            self.gen.manual_seed(int.from_bytes(digest[:8], "little") >> 1)

    @contextmanager
    def as_global(self) -> Iterator[None]:
        """torch's global generator(s) at this stream within; torch's own stream afterwards."""
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            torch.set_rng_state(self.gen.get_state() if self.device.type == "cpu" else self._cpu)
            if cuda:
                torch.cuda.set_rng_state(self.gen.get_state(), self.device)
            yield


class MemberDraws(TorchFunctionMode):
    """Within it, a draw from torch's global stream whose result has a leading member axis
    (a group's posterior noise) is drawn member by member: member ``m``'s slice is the
    same call on its own slice, from its own stream, so it is the draw its solo run makes.

    A group's eager step runs its guide under it (:meth:`around`); its compiled step makes
    its noise draws under it (:meth:`~pyro_dvae.loss_graph.LossGraph.draw_noise`). Calls
    that give their own ``generator`` are left alone; other random calls are refused (they
    would draw every member's values from one stream).
    """

    def __init__(self, streams: list[MemberStream]):
        super().__init__()
        self.streams = streams
        self.entered = False

    def __enter__(self):
        self.entered = True
        return super().__enter__()

    def __exit__(self, *exc):
        self.entered = False
        return super().__exit__(*exc)

    def around(self, fn: Callable) -> Callable:
        """``fn`` run under this mode (as it is when the mode is on already)."""

        def drawing(*args, **kwargs):
            if self.entered:
                return fn(*args, **kwargs)
            with self:
                return fn(*args, **kwargs)

        return drawing

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if kwargs.get("generator") is None:
            if func in _SPLIT:
                return self._draw(func, args, kwargs)
            if func in _REFUSED:
                raise TrainingError(
                    f"a group cannot draw {_name(func)} from each member's own stream; "
                    "train these runs alone (--group-size 1)"
                )
        return func(*args, **kwargs)

    def _draw(self, func, args: tuple, kwargs: dict) -> torch.Tensor:
        draw, tensors, shape, target = _SPLIT[func](func, args, kwargs)
        if not shape or shape[0] != len(self.streams):
            raise TrainingError(
                f"{_name(func)} of shape {tuple(shape)} inside a group of {len(self.streams)}: "
                "a group draws noise with a leading member axis only"
            )
        out = draw([s.gen for s in self.streams], tensors)
        return out if target is None else target.copy_(out)


def _name(func) -> str:
    return f"torch.{getattr(func, '__name__', func)}"


# Each ``_split_*`` takes a random call and gives (draw, tensors, shape, target): ``draw(gens,
# tensors)`` makes the result of shape ``shape`` member by member, member m's slice as the call
# makes it on its own shape, from ``gens[m]``; ``tensors`` are the call's tensor inputs, and
# ``target`` the tensor an in-place call fills (None: the call returns a new one).
def filled(shape, dtype, device, fill) -> Callable:
    """A draw that fills each member's slice of a new tensor in place: ``fill(slice, gen)``."""

    def draw(gens, tensors):
        out = torch.empty(shape, dtype=dtype, device=device)
        for m, gen in enumerate(gens):
            fill(out[m], gen)
        return out

    return draw


def _split_fill(func, args, kwargs):
    """``t.normal_(mean, std)``, ``t.uniform_(a, b)``: each slice filled alike."""
    target, rest = args[0], args[1:]
    kw = {k: v for k, v in kwargs.items() if k != "generator"}
    shape = _ints(target.shape)

    def fill(part, gen):
        func(part, *rest, generator=gen, **kw)

    return filled(shape, target.dtype, target.device, fill), (), shape, target


def _split_factory(func, args, kwargs):
    """``torch.rand(size)``, ``torch.randn(size)``: ``empty(size).uniform_()`` (``normal_()``),
    which is what they are."""
    kw = {k: v for k, v in kwargs.items() if k != "generator"}
    if "out" in kw or kw.pop("requires_grad", False):
        raise TrainingError(f"a group cannot draw {_name(func)} with out= or requires_grad")
    shape = _ints(args[0] if len(args) == 1 and not isinstance(args[0], int) else args)
    probe = torch.empty(0, **kw)
    method = torch.Tensor.uniform_ if func is torch.rand else torch.Tensor.normal_

    def fill(part, gen):
        method(part, generator=gen)

    return filled(shape, probe.dtype, probe.device, fill), (), shape, None


def _split_normal(func, args, kwargs):
    """``torch.normal(mean, std[, size])``: of two tensors, ``normal_()`` then ``* std + mean``
    as torch computes it; otherwise member by member on each tensor's slice, stacked."""
    params = dict(zip(("mean", "std", "size"), args, strict=False))
    params.update({k: v for k, v in kwargs.items() if k != "generator"})
    if "out" in params:
        raise TrainingError("a group cannot draw torch.normal into out=")
    mean, std = params.pop("mean", 0.0), params.pop("std", 1.0)
    if "size" in params:  # two numbers and a size
        size = _ints(params.pop("size"))

        def numbers(gens, tensors):
            return torch.stack([func(mean, std, size[1:], generator=g, **params) for g in gens])

        return numbers, (), size, None
    tensors = tuple(v for v in (mean, std) if torch.is_tensor(v))
    shape = _ints(torch.broadcast_shapes(*(t.shape for t in tensors)))
    if len(tensors) == 2 and not params:
        standard_normal = filled(
            shape, torch.result_type(mean, std), mean.device, lambda p, g: p.normal_(generator=g)
        )

        def standard(gens, tensors):
            loc, scale = tensors
            return standard_normal(gens, ()).mul_(scale).add_(loc)

        return standard, tensors, shape, None

    def slices(gens, t):
        it = iter(torch.broadcast_tensors(*t))
        mine = [next(it) if torch.is_tensor(v) else v for v in (mean, std)]
        return torch.stack(
            [
                func(*(v[m] if torch.is_tensor(v) else v for v in mine), generator=gen, **params)
                for m, gen in enumerate(gens)
            ]
        )

    return slices, tensors, shape, None


def _split_sampler(func, args, kwargs):
    """``torch._sample_dirichlet(c)``, ``torch._standard_gamma(c)``: each member's slice of c."""

    def draw(gens, tensors):
        return torch.stack([func(tensors[0][m], generator=g) for m, g in enumerate(gens)])

    return draw, (args[0],), _ints(args[0].shape), None


def _ints(size) -> tuple[int, ...]:
    """A size as plain numbers: one a tracer follows must not reach into a traced draw."""
    return tuple(int(s) for s in size)


#: random calls a group draws member by member, and how to split each
_SPLIT: dict[Callable, Callable] = {
    torch.Tensor.normal_: _split_fill,
    torch.Tensor.uniform_: _split_fill,
    torch.rand: _split_factory,
    torch.randn: _split_factory,
    torch.normal: _split_normal,
    torch._sample_dirichlet: _split_sampler,
    torch._standard_gamma: _split_sampler,
}
#: random calls from torch's global stream a group cannot split by member
_REFUSED = frozenset(
    [
        torch.bernoulli,
        torch.multinomial,
        torch.poisson,
        torch.binomial,
        torch.randint,
        torch.randperm,
        torch.rand_like,
        torch.randn_like,
        torch.randint_like,
        torch.Tensor.bernoulli,
        torch.Tensor.bernoulli_,
        torch.Tensor.multinomial,
        torch.Tensor.exponential_,
        torch.Tensor.geometric_,
        torch.Tensor.log_normal_,
        torch.Tensor.cauchy_,
        torch.Tensor.random_,
    ]
)
