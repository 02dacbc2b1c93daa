#!/usr/bin/env python
"""Milliseconds per training step: a hand-written PyTorch loop against pyro-dvae's step.

Both train the same model (the paper's MLPs, one-sample Monte Carlo KL, mean
−ELBO over a batch) on the same in-memory data, one epoch over ``--images``
images at a time, with a fresh binarisation and permutation each epoch:

(a) plain PyTorch: reparameterised sample, Bernoulli log-likelihood and KL by
    hand, ``torch.optim.Adam(fused=True)``;
(b) pyro-dvae: ``Trainer.train_epoch`` — ``pyro_dvae.SVI.step`` with the compiled
    ELBO (``--compile off``: Pyro's eager ``Trace_ELBO``) and ``FusedClippedAdam``,
    exactly what ``pyro-dvae fit`` runs;
(c) (a) with its loss (forward and backward) under ``torch.compile``, the honest peer of
    a compiled (b). Each compiled variant's compile time is reported (a second run of the
    script reads torch's on-disk compile cache: the warm time).

The three alternate epoch by epoch in one process. Shared machines drift in speed
over seconds, so each round pairs one epoch of each and the reported ratio is
the median of the per-round ratios.

    python scripts/benchmark.py --data-dir ../shared/data
    python scripts/benchmark.py --data-dir ../shared/data --families gaussian,logitnormal,beta

``--families`` times pyro-dvae's step alone for each family, interleaved epoch by epoch in
one process (no hand-written loop): the families' costs side by side on the same machine. An
entry may set config fields after colons, to time estimators too:

    python scripts/benchmark.py --data-dir ../shared/data --latent-dim 1 \
        --families categorical:elbo=enum:categories=8,concrete:categories=8

Each entry's time is also given as a multiple of the first entry's (the median of the
per-round ratios) and, for K particles, that multiple divided by K: a K-particle IWAE step
against the single-particle step (target: at most 0.4 per particle at K = 50 on a CPU):

    python scripts/benchmark.py --data-dir ../shared/data --rounds 5 --families \
        gaussian,gaussian:elbo=iwae:num_particles=50,gaussian:elbo=iwae:num_particles=50:gradient=dreg

``--members 1,2,4,8`` times groups (``pyro_dvae.group``): for each M, ms per member-step
of (a) a hand-written batched PyTorch loop of M models (stacked weights, ``baddbmm``, fused
Adam: the floor), (b) the group step of M Logit-normal VAEs (α spread over the paper's four
values), and (c) the solo pyro-dvae step, interleaved round by round in one process:

    python scripts/benchmark.py --data-dir ../shared/data --members 1,2,4,8

``--iwae-chunks 2000,20000`` times the IWAE pass of ``pyro-dvae evaluate`` (``--k`` draws for
each of ``--images`` test images, untrained networks of the paper's shape) with each chunk
size (rows of images × draws scored at a time), interleaved round by round; the header names
ATen's CPU kernels (``ATEN_CPU_CAPABILITY``), which a second run can change:

    python scripts/benchmark.py --data-dir ../shared/data --iwae-chunks 2000,20000 --rounds 5

``--count-ops`` counts, instead of timing, the top-level ATen operations per step of (a) and
(b), and which operations (b) has more of. On a GPU a small step is bound by kernel launches,
so these counts explain its time where a CPU's clock does not:

    python scripts/benchmark.py --data-dir ../shared/data --count-ops --images 500 --hidden 64
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from pyro_dvae.compiled_elbo import compile_settings
from pyro_dvae.config import PARAMS, FitConfig
from pyro_dvae.data import binarize, load_dataset
from pyro_dvae.errors import DataError
from pyro_dvae.train import Trainer


def compiled_peer(loss_of, device: torch.device):
    """A hand-written loss under ``torch.compile`` as pyro-dvae compiles its step: the same
    backend and mode (``$PYRO_DVAE_COMPILE_BACKEND``, ``$PYRO_DVAE_COMPILE_MODE``), and on a
    CPU Inductor's vector width pinned to ATen's ISA."""
    return torch.compile(loss_of, dynamic=False, **compile_settings(device.type == "cuda"))


def hand_written(trainer: Trainer, family: str, alpha: float, compiled: bool = False):
    """A copy of the trainer's networks trained by a plain PyTorch loop; ``compiled``: its
    loss (forward and backward) under ``torch.compile``, the noise drawn eagerly as
    pyro-dvae's compiled step draws it. Returns (epoch function, compile seconds)."""
    enc = type(trainer.vae.encoder)(
        trainer.data.input_dim, trainer.config.hidden, trainer.family.head_size
    ).to(trainer.device)
    dec = type(trainer.vae.decoder)(
        trainer.family.code_size, trainer.config.hidden, trainer.data.input_dim
    ).to(trainer.device)
    enc.load_state_dict(trainer.vae.encoder.state_dict())
    dec.load_state_dict(trainer.vae.decoder.state_dict())
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=trainer.config.lr, fused=True)
    gen = torch.Generator(device=trainer.device).manual_seed(1)
    prior_scale = math.sqrt(alpha) if family == "logitnormal" else 1.0

    def loss_of(x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        loc, log_var = enc(x).chunk(2, dim=-1)
        scale = torch.exp(0.5 * log_var)
        y = loc + scale * eps
        z = torch.sigmoid(y) if family == "logitnormal" else y
        recon = F.binary_cross_entropy_with_logits(dec(z), x, reduction="none").sum(-1)
        # log q - log p at the sample; the sigmoid's Jacobian cancels for the Logit-normal
        log_q = (-0.5 * eps**2 - scale.log()).sum(-1)
        log_p = (-0.5 * (y / prior_scale) ** 2 - math.log(prior_scale)).sum(-1)
        return (recon + log_q - log_p).mean()

    loss_fn = compiled_peer(loss_of, trainer.device) if compiled else loss_of
    latent = trainer.family.code_size

    def epoch(x_grey: torch.Tensor, batch: int) -> None:
        x_bin = binarize(x_grey, gen)
        perm = torch.randperm(x_grey.shape[0], generator=gen, device=x_grey.device)
        for start in range(0, x_grey.shape[0], batch):
            x = x_bin[perm[start : start + batch]]
            eps = torch.randn(x.shape[0], latent, device=x.device, dtype=x.dtype)
            loss = loss_fn(x, eps)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss.item()  # the Pyro step also returns a float

    seconds = 0.0
    if compiled:  # compile forward and backward now, on one batch
        t0 = time.perf_counter()
        x = trainer.data.train[: trainer.config.batch_size].round()
        eps = torch.randn(x.shape[0], latent, device=x.device, dtype=x.dtype)
        torch.autograd.grad(loss_fn(x, eps), params)
        seconds = time.perf_counter() - t0
    return epoch, seconds


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--family", default=FitConfig.family, choices=["gaussian", "logitnormal"])
    p.add_argument("--alpha", type=float, default=FitConfig.alpha)
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--images", type=int, default=1000, help="images per timed epoch")
    p.add_argument("--rounds", type=int, default=60, help="timed epochs of each loop")
    p.add_argument("--data-dir", default=None, help="MNIST root (default $PYRO_DVAE_DATA)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--compile",
        default="on",
        choices=["on", "off"],
        help="pyro-dvae's step compiled (on) or eager (off)",
    )
    p.add_argument("--families", default="", help="comma-separated: time these families' steps")
    p.add_argument("--members", default="", help="comma-separated group sizes to time")
    p.add_argument("--iwae-chunks", default="", help="comma-separated IWAE chunk sizes to time")
    p.add_argument("--k", type=int, default=200, help="draws per image of --iwae-chunks")
    p.add_argument("--count-ops", action="store_true", help="count ATen ops per step of (a), (b)")
    p.add_argument(
        "--cpu-time",
        action="store_true",
        help="--families: time by the process's CPU time, not the wall clock (a loaded machine)",
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.families:
        return compare_families(args)
    if args.members:
        return compare_members(args)
    if args.iwae_chunks:
        return compare_iwae_chunks(args)

    cfg = FitConfig(
        family=args.family,
        alpha=args.alpha,
        latent_dim=args.latent_dim,
        batch_size=args.batch_size,
        hidden=args.hidden,
        subset=args.images,
        compile=args.compile,
    )
    try:
        data = load_dataset("mnist", args.data_dir, subset=args.images)
        source = "MNIST"
    except DataError as err:
        print(f"({err}; timing on random images instead)")
        from pyro_dvae.data import Dataset

        g = torch.Generator().manual_seed(0)
        data = Dataset(  # random images in MNIST's place (the config names mnist)
            "mnist",
            torch.rand(args.images, 784, generator=g),
            torch.zeros(args.images),
            torch.rand(100, 784, generator=g).round(),
            torch.zeros(100),
            (28, 28),
        )
        source = "random"
    trainer = Trainer(cfg, data, args.device, progress=False)
    trainer.begin(1)
    hand_epoch, _ = hand_written(trainer, args.family, args.alpha)
    compiled_epoch, hand_compile_s = hand_written(trainer, args.family, args.alpha, True)
    x = trainer.data.train
    steps = math.ceil(x.shape[0] / args.batch_size)

    def pyro_epoch() -> None:
        import pyro

        with pyro.validation_enabled(False):
            trainer.train_epoch()

    def timed(fn) -> float:
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / steps * 1e3

    loops = {
        "a": lambda: hand_epoch(x, args.batch_size),
        "c": lambda: compiled_epoch(x, args.batch_size),
        "b": pyro_epoch,
    }
    for loop in loops.values():  # warm-up (pyro-dvae's compiles here)
        timed(loop)
    if args.count_ops:
        return count_ops({"a": loops["a"], "b": loops["b"]}, steps)
    ms = {k: [] for k in loops}
    for _ in range(args.rounds):
        for k, loop in loops.items():
            ms[k].append(timed(loop))

    def ratio(top: str, bottom: str) -> float:
        return statistics.median(q / p for p, q in zip(ms[bottom], ms[top], strict=True))

    compiled = getattr(trainer.elbo, "compile", False)
    print(
        f"{args.family}, latent {args.latent_dim}, batch {args.batch_size}, hidden {args.hidden}, "
        f"{source}, {trainer.device}, {torch.get_num_threads()} threads, "
        f"{args.rounds} x {steps} steps each, pyro step {'compiled' if compiled else 'eager'}"
    )
    pyro_compile_s = getattr(trainer.elbo, "compile_seconds", 0.0)
    names = {
        "a": "(a) hand-written PyTorch + fused Adam ",
        "c": "(c) (a) with its loss torch.compile'd ",
        "b": "(b) pyro-dvae SVI step                ",
    }
    compile_s = {"a": None, "c": hand_compile_s, "b": pyro_compile_s if compiled else None}
    for k in ("a", "c", "b"):
        took = f", compile {compile_s[k]:.1f} s" if compile_s[k] is not None else ""
        print(f"{names[k]}: {statistics.median(ms[k]):7.3f} ms/step (min {min(ms[k]):.3f}){took}")
    print(f"ratio (b)/(a), median of paired rounds: {ratio('b', 'a'):.3f}  (target <= 0.85)")
    print(f"ratio (b)/(c), median of paired rounds: {ratio('b', 'c'):.3f}  (target <= 1.05)")


def count_ops(epochs: dict, steps: int) -> None:
    """Top-level ATen operations (those not called by another) per step of each epoch."""
    from collections import Counter

    from torch.profiler import ProfilerActivity, profile

    counts = {}
    for name, epoch in epochs.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            epoch()
        counts[name] = Counter(
            e.name
            for e in prof.events()
            if e.name.startswith("aten::")
            and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))
        )
    a, b = counts["a"], counts["b"]
    print(f"top-level ATen ops per step: (a) {a.total() / steps:.1f}, (b) {b.total() / steps:.1f}")
    more = sorted(((b[k] - a[k]) / steps, k) for k in a.keys() | b.keys() if b[k] != a[k])
    print("(b) - (a) per step: " + ", ".join(f"{k[6:]} {d:+.1f}" for d, k in reversed(more)))


def compare_families(args) -> None:
    """Median ms per pyro-dvae step of each family, epochs interleaved round by round."""
    import pyro

    data = load_dataset("mnist", args.data_dir, subset=args.images)
    trainers = {}
    for entry in args.families.split(","):
        family, *fields = entry.split(":")  # e.g. categorical:elbo=enum:latent_dim=1
        own = {"alpha": args.alpha} if family == "logitnormal" else {}
        for item in fields:
            name, _, value = item.partition("=")
            own[name] = PARAMS[name].kind(value)
        cfg = FitConfig(
            **{
                "family": family,
                "latent_dim": args.latent_dim,
                "batch_size": args.batch_size,
                "hidden": args.hidden,
                "subset": args.images,
                "compile": args.compile,
                **own,
            }
        ).validate()
        trainers[entry] = Trainer(cfg, data, args.device, progress=False)
        trainers[entry].begin(1)
    steps = math.ceil(args.images / args.batch_size)
    times: dict[str, list[float]] = {f: [] for f in trainers}
    clock = time.process_time if args.cpu_time else time.perf_counter
    for i in range(args.rounds + 1):
        for family, trainer in trainers.items():
            t0 = clock()
            with pyro.validation_enabled(False):
                trainer.train_epoch()
            if i:  # the first round warms up (and compiles)
                times[family].append((clock() - t0) / steps * 1e3)
    print(
        f"latent {args.latent_dim}, batch {args.batch_size}, hidden {args.hidden}, MNIST, "
        f"{torch.get_num_threads()} threads, {args.rounds} x {steps} steps each"
        + (", CPU time of the process" if args.cpu_time else "")
    )
    first = next(iter(times.values()))
    for family, ms in times.items():
        jit = "compiled" if getattr(trainers[family].elbo, "compile", False) else "eager"
        k = trainers[family].config.num_particles
        ratio = statistics.median(t / f for t, f in zip(ms, first, strict=True))
        per = f", {ratio / k:.3f} per particle" if k > 1 else ""
        print(
            f"{family:40s} {statistics.median(ms):8.3f} ms/step (min {min(ms):.3f}, {jit}); "
            f"{ratio:.2f}x the first entry{per}"
        )


def compare_iwae_chunks(args) -> None:
    """Median µs per importance-weighted draw (one image, one z) of each chunk size."""
    from pyro_dvae.iwae_bound import importance_weighted

    if args.rounds < 1:
        raise SystemExit("--rounds must be >= 1")
    cfg = FitConfig(
        family=args.family,
        alpha=args.alpha,
        latent_dim=args.latent_dim,
        hidden=args.hidden,
        subset=args.images,
    )
    data = load_dataset("mnist", args.data_dir, subset=args.images)
    trainer = Trainer(cfg.validate(), data, args.device, progress=False)
    x = data.test[: args.images].to(trainer.device)  # binarised once, as evaluate scores it
    vae, draws = trainer.vae, x.shape[0] * args.k
    chunks = [int(c) for c in args.iwae_chunks.split(",")]
    times: dict[int, list[float]] = {c: [] for c in chunks}
    for i in range(args.rounds + 1):
        for c in chunks:
            t0 = time.perf_counter()
            importance_weighted(vae.model, vae.guide, x, k=args.k, max_draws=c)
            if i:  # the first round warms up
                times[c].append((time.perf_counter() - t0) / draws * 1e6)
    where = trainer.device.type
    if where == "cpu":
        where += f", {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"
    print(
        f"{args.family}, latent {args.latent_dim}, hidden {args.hidden}, {x.shape[0]} test "
        f"images x k = {args.k}, {where}, {args.rounds} rounds"
    )
    base = statistics.median(times[chunks[-1]])
    for c, us in times.items():
        med = statistics.median(us)
        speed = f"{base / med:.2f}x the speed of {chunks[-1]} rows"
        print(f"chunk {c:>6} rows  {med:7.2f} µs/draw (min {min(us):.2f}); {speed}")


def hand_written_group(group, alpha: torch.Tensor, compiled: bool = False):
    """M copies of the group's networks trained by a plain batched PyTorch loop;
    ``compiled``: its loss under ``torch.compile`` (compiled at the first step)."""
    nets = [group.vae.encoder, group.vae.decoder]
    params = [p.detach().clone().requires_grad_(True) for net in nets for p in net.parameters()]
    opt = torch.optim.Adam(params, lr=group.config.lr, fused=True)
    gen = torch.Generator(device=group.device).manual_seed(1)
    prior_scale = alpha.sqrt().to(params[0])  # (M, 1, 1)
    m = prior_scale.shape[0]
    latent = group.family.code_size

    def mlp(x, w):  # w: weight, bias of three layers
        h = torch.tanh(torch.baddbmm(w[1].unsqueeze(1), x, w[0].transpose(1, 2)))
        h = F.softplus(torch.baddbmm(w[3].unsqueeze(1), h, w[2].transpose(1, 2)))
        return torch.baddbmm(w[5].unsqueeze(1), h, w[4].transpose(1, 2))

    def loss_of(x, eps, w):
        loc, log_var = mlp(x, w[:6]).chunk(2, dim=-1)  # the encoder's six tensors
        scale = torch.exp(0.5 * log_var)
        y = loc + scale * eps
        z = torch.sigmoid(y)
        logits = mlp(z, w[6:])
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        log_q = (-0.5 * eps**2 - scale.log()).sum(-1)
        log_p = (-0.5 * (y / prior_scale) ** 2 - prior_scale.log()).sum(-1)
        return (recon + log_q - log_p).mean(-1)  # (M,)

    loss_fn = compiled_peer(loss_of, group.device) if compiled else loss_of

    def epoch(x_grey: torch.Tensor, batch: int) -> None:
        n = x_grey.shape[0]
        x_bin = torch.stack([binarize(x_grey, gen) for _ in range(m)])
        perm = torch.stack(
            [torch.randperm(n, generator=gen, device=x_grey.device) for _ in range(m)]
        )
        rows = torch.arange(m, device=x_grey.device).unsqueeze(1)
        for start in range(0, n, batch):
            x = x_bin[rows, perm[:, start : start + batch]]
            eps = torch.randn(m, x.shape[1], latent, device=x.device, dtype=x.dtype)
            losses = loss_fn(x, eps, params)
            losses.sum().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.tolist()  # the group step also reads every member's loss

    return epoch


def compare_members(args) -> None:
    """ms per member-step: hand-written batched loop, group step, solo step, for each M."""
    import pyro

    from pyro_dvae.group import GroupTrainer

    data = load_dataset("mnist", args.data_dir, subset=args.images)
    alphas = [0.32, 0.56, 1.0, 1.78]

    def config(i: int) -> FitConfig:
        return FitConfig(
            family="logitnormal",
            alpha=alphas[i % 4],
            seed=i,
            latent_dim=args.latent_dim,
            batch_size=args.batch_size,
            hidden=args.hidden,
            subset=args.images,
            compile=args.compile,
        )

    sizes = [int(v) for v in args.members.split(",")]
    solo = Trainer(config(0), data, args.device, progress=False)
    solo.begin(1)
    groups = {
        m: GroupTrainer([config(i) for i in range(m)], data, args.device, progress=False)
        for m in sizes
    }
    for group in groups.values():
        group.elbo.compile = args.compile == "on"
    hands = {m: hand_written_group(g, g.family.alpha) for m, g in groups.items()}
    compiled_hands = {m: hand_written_group(g, g.family.alpha, True) for m, g in groups.items()}
    steps = math.ceil(args.images / args.batch_size)
    x = solo.data.train

    def timed(fn, members: int = 1) -> float:
        if solo.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with pyro.validation_enabled(False):
            fn()
        if solo.device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / steps / members * 1e3

    solo_ms: list[float] = []
    group_ms = {m: [] for m in sizes}
    hand_ms = {m: [] for m in sizes}
    compiled_ms = {m: [] for m in sizes}
    for i in range(args.rounds + 1):  # the first round warms up (and compiles)
        times = {"solo": timed(solo.train_epoch)}
        for m in sizes:
            times[("hand", m)] = timed(lambda m=m: hands[m](x, args.batch_size), m)
            times[("compiled", m)] = timed(lambda m=m: compiled_hands[m](x, args.batch_size), m)
            times[("group", m)] = timed(groups[m].train_epoch, m)
        if i:
            solo_ms.append(times["solo"])
            for m in sizes:
                hand_ms[m].append(times[("hand", m)])
                compiled_ms[m].append(times[("compiled", m)])
                group_ms[m].append(times[("group", m)])
    compiled = getattr(solo.elbo, "compile", False)
    print(
        f"logitnormal, latent {args.latent_dim}, batch {args.batch_size}, hidden {args.hidden}, "
        f"MNIST, {solo.device}, {torch.get_num_threads()} threads, {args.rounds} x {steps} "
        f"steps each, {'compiled' if compiled else 'eager'}; ms per member-step"
    )
    print(f"solo pyro-dvae step: {statistics.median(solo_ms):.3f} ms/step")
    print(
        " M | hand batched | hand compiled | group step | group/hand | group/compiled | group/solo"
    )

    def paired(top: list[float], bottom: list[float]) -> float:
        return statistics.median(t / b for t, b in zip(top, bottom, strict=True))

    for m in sizes:
        hand, group = statistics.median(hand_ms[m]), statistics.median(group_ms[m])
        comp = statistics.median(compiled_ms[m])
        print(
            f"{m:2d} | {hand:12.3f} | {comp:13.3f} | {group:10.3f} | "
            f"{paired(group_ms[m], hand_ms[m]):10.3f} | {paired(group_ms[m], compiled_ms[m]):14.3f}"
            f" | {paired(group_ms[m], solo_ms):10.3f}"
        )
    print("targets: group/hand <= 0.85, group/compiled <= 1.05; group/solo near 0.75 at M = 4")


if __name__ == "__main__":
    main()
