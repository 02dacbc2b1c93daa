"""Groups (``pyro_dvae.group``): M runs of one shape trained as one model."""

from __future__ import annotations

import json
import math
import shutil
import signal

import pytest
import torch
import torch.distributions.normal

from pyro_dvae.config import FitConfig
from pyro_dvae.data import binarize, load_dataset
from pyro_dvae.errors import ConfigError, TrainingError
from pyro_dvae.fit_resume import resume, resume_group
from pyro_dvae.group import GroupTrainer, check_group, weighted
from pyro_dvae.member_streams import MemberDraws, MemberStream
from pyro_dvae.optim import member_optim_state, stack_optim_states
from pyro_dvae.rundir import RunDir
from pyro_dvae.train import Trainer

from .helpers import invoke, run_ok, stderr_lines

SMALL = dict(dataset="digits", hidden=16, latent_dim=2, epochs=2)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _configs(family="logitnormal", values=(0.32, 1.0, 1.78), **extra):
    field = {"logitnormal": "alpha", "beta": "beta_prior"}.get(family)
    return [
        FitConfig(family=family, seed=i, **SMALL, **extra, **({field: v} if field else {}))
        for i, v in enumerate(values)
    ]


def _quiet(*args, **kwargs):
    return GroupTrainer(*args, device="cpu", progress=False, log=lambda msg: None, **kwargs)


@pytest.mark.parametrize(
    "family, extra",
    [
        ("logitnormal", {"alpha": 1.78}),
        ("logitnormal", {"alpha": 1.78, "compile": "on"}),
        ("gaussian", {}),
        ("concrete", {"categories": 3}),
        ("concrete", {"categories": 3, "temperature": 1.0, "anneal_rate": 0.02}),
        ("beta", {"elbo": "analytic"}),
    ],
)
def test_a_group_of_one_is_the_solo_run_bit_for_bit(digits, family, extra):
    config = FitConfig(family=family, seed=3, **SMALL, **extra)
    solo = Trainer(config, digits, "cpu", progress=False, log=lambda msg: None)
    solo.fit()
    group = _quiet([config], digits)
    group.fit()
    member = group.members[0]
    mine = member.vae.state_dict()
    for name, value in solo.vae.state_dict().items():
        assert torch.equal(value, mine[name]), name
    for a, b in zip(solo.history, member.history, strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == {
            k: v for k, v in b.items() if k != "seconds"
        }
    assert solo.family.state() == member.family.state()  # an annealed temperature too
    solo_optim, member_optim = solo.optim.get_state(), member.optim.get_state()
    for i, state in solo_optim["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, member_optim["optimizer"]["state"][i][key]), key


def _fixed_noise(monkeypatch, noise: torch.Tensor) -> None:
    """Every standard-normal or uniform draw of shape (M, B, ...) is ``noise``; of shape
    (B, ...), the slice of the member whose turn it is (set ``_fixed_noise.member``)."""

    def draw(shape, *args, dtype=None, device=None, **kwargs):
        shape = tuple(shape)
        if shape == tuple(noise.shape):
            return noise.clone()
        assert shape == tuple(noise.shape[1:])
        return noise[_fixed_noise.member].clone()

    monkeypatch.setattr(torch.distributions.normal, "_standard_normal", draw)
    rand = torch.rand
    monkeypatch.setattr(
        torch,
        "rand",
        lambda *a, **k: draw(*a, **k) if tuple(a[0])[-1:] == noise.shape[-1:] else rand(*a, **k),
    )


CONCRETE = [
    FitConfig(family="concrete", categories=3, seed=i, temperature=t, anneal_rate=r,
              prior_temperature=tp, compile="off", **SMALL)
    for i, (t, r, tp) in enumerate([(0.5, 0.0, 1.0), (1.0, 1e-2, 0.8), (0.7, 0.0, 1.0)])
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["trace", "compiled", "analytic", "concrete"])
def test_each_members_loss_and_gradient_are_its_solo_models(digits, monkeypatch, kind):
    elbo, compile = ("trace", "on") if kind == "compiled" else (kind, "off")
    configs = CONCRETE if kind == "concrete" else _configs(elbo=elbo, compile=compile)
    group = _quiet(configs, digits)
    group.fit(1)  # members' weights (and annealed temperatures) no longer at their start
    group.elbo.reset()  # compiled anew (kind "compiled") with the noise fixed below
    m, b = len(configs), 20
    x = torch.stack([binarize(digits.train[i * b : (i + 1) * b]) for i in range(m)])
    shape = (m, b, 2, 3) if kind == "concrete" else (m, b, 2)
    noise = torch.rand(shape).clamp(1e-3, 1 - 1e-3) if kind == "concrete" else torch.randn(shape)
    _fixed_noise(monkeypatch, noise)
    weights = torch.ones(m, 1, requires_grad=True)
    model, guide = weighted(group.vae.model), weighted(group.vae.guide)
    group.family.set_step(group.step)
    group.elbo.loss_and_grads(model, guide, weights, x)
    assert group.elbo.graphs == (2 if kind == "compiled" else 0)  # fit's, and this shape's
    grads = {n: p.grad.clone() for n, p in group.vae.named_parameters()}
    for i, trainer in enumerate(group.members):
        group._sync_member(i)
        trainer.family.set_step(group.step)  # the step the group's family was set to
        _fixed_noise.member = i
        vae = trainer.vae
        loss = trainer.elbo.loss_and_grads(vae.model, vae.guide, x[i])
        assert weights.grad[i, 0].item() == pytest.approx(loss, rel=1e-5)
        for name, p in vae.named_parameters():
            torch.testing.assert_close(grads[name][i], p.grad, rtol=1e-4, atol=1e-6)
            p.grad = None
    if kind == "concrete":  # the annealed member's temperature moved, the others' did not
        temps = [t.family.temperature for t in group.members]
        assert temps[0] == 0.5 and temps[2] == 0.7
        assert temps[1] == pytest.approx(max(0.5, math.exp(-1e-2 * group.step)))


def test_changing_one_member_changes_no_other_members_loss(digits, monkeypatch):
    configs = _configs(compile="off")
    group = _quiet(configs, digits)
    x = torch.stack([binarize(digits.train[:20])] * 3)
    _fixed_noise(monkeypatch, torch.randn(3, 20, 2))

    def losses():
        weights = torch.ones(3, 1, requires_grad=True)
        group.elbo.loss_and_grads(weighted(group.vae.model), weighted(group.vae.guide), weights, x)
        return weights.grad[:, 0].clone()

    before = losses()
    with torch.no_grad():
        for p in group.vae.parameters():
            p[1].add_(0.1 * torch.randn_like(p[1]))
    after = losses()
    assert torch.equal(before[[0, 2]], after[[0, 2]])
    assert before[1] != after[1]


def test_optimiser_states_split_and_stack_back(digits):
    group = _quiet(_configs(), digits)
    group.fit(1)
    state = group.optim.get_state()
    back = stack_optim_states([member_optim_state(state, m) for m in range(3)])
    assert back["shapes"] == state["shapes"] and back["step_count"] == state["step_count"]
    for i, s in state["optimizer"]["state"].items():
        for key, value in s.items():
            assert torch.equal(back["optimizer"]["state"][i][key], value)


def _run_dirs(tmp_path, configs):
    paths = []
    for i, config in enumerate(configs):
        path = tmp_path / f"run{i}"
        with RunDir.create(path, config):
            pass
        paths.append(path)
    return paths


def _quiet_resume(paths, **changes):
    return resume_group(paths, device="cpu", progress=False, log=lambda msg: None, **changes)


def test_a_resumed_group_matches_an_uninterrupted_one(digits, tmp_path):
    configs = _configs(values=(0.56, 1.78))
    straight = _run_dirs(tmp_path / "straight", configs)
    stopped = _run_dirs(tmp_path / "stopped", configs)
    _quiet_resume(straight)
    _quiet_resume(stopped, epochs=1)
    summaries = _quiet_resume(stopped, epochs=2)
    assert [s["epochs_completed"] for s in summaries] == [2, 2]
    for a, b in zip(straight, stopped, strict=True):
        sa = RunDir(a).load_checkpoint()
        sb = RunDir(b).load_checkpoint()
        for name, value in sa["model"].items():
            assert torch.equal(value, sb["model"][name]), name
        assert json.loads((a / "summary.json").read_text())["group"] == 2


def test_a_member_whose_loss_is_nan_stops_alone(digits, tmp_path):
    configs = _configs()
    paths = _run_dirs(tmp_path, configs)
    run_dirs = [RunDir(p) for p in paths]
    group = _quiet(configs, digits, run_dirs=run_dirs)
    with torch.no_grad():
        group.vae.decoder.net[4].bias[1].fill_(math.nan)
    summaries = group.fit()
    assert [s["status"] for s in summaries] == ["finished", "failed", "finished"]
    failed = json.loads((paths[1] / "summary.json").read_text())
    assert failed["status"] == "failed" and "nan" in failed["error"]
    assert RunDir(paths[1]).checkpoint_epoch() == 0  # the last good checkpoint, kept
    for i in (0, 2):
        state = RunDir(paths[i]).load_checkpoint()
        assert state["epoch"] == 2
        assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_check_group_names_what_differs():
    base = FitConfig(**SMALL)
    check_group([base, FitConfig(**SMALL, seed=4, alpha=2.0)])  # seed and alpha may differ
    with pytest.raises(ConfigError, match="hidden"):
        check_group([base, FitConfig(**{**SMALL, "hidden": 8})])
    for elbo in ("enum", "trace"):  # the categorical family trains alone, whatever its ELBO
        with pytest.raises(ConfigError, match="trains alone"):
            check_group([FitConfig(**SMALL, family="categorical", categories=2, elbo=elbo)])
    with pytest.raises(ConfigError, match="categories"):
        check_group(
            [FitConfig(**SMALL, family="concrete"), FitConfig(**SMALL, family="concrete", seed=2)]
            + [FitConfig(**SMALL, family="concrete", categories=4, temperature=1.0)]
        )


def test_fit_resume_twice_trains_a_group_whose_members_are_ordinary_runs(tmp_path):
    configs = _configs(values=(0.32, 1.78))
    paths = _run_dirs(tmp_path, configs)
    args = ["fit", "--no-progress", "--device", "cpu", "--threads", "1"]
    result = run_ok([*args, "--resume", str(paths[0]), "--resume", str(paths[1])])
    assert "as one group" in result.stderr
    for path in paths:
        assert RunDir(path).checkpoint_epoch() == 2
    # a member is evaluated, and continues alone, as any run is
    run_ok(["evaluate", str(paths[0]), "--k", "5", "--images", "50", "--no-progress"])
    assert (paths[0] / "evaluation.json").is_file()
    run_ok([*args, "--resume", str(paths[1]), "--epochs", "3"])
    assert RunDir(paths[1]).checkpoint_epoch() == 3


def test_fit_refuses_a_group_of_different_shapes(tmp_path):
    paths = _run_dirs(tmp_path, [FitConfig(**SMALL), FitConfig(**{**SMALL, "latent_dim": 3})])
    result = invoke(["fit", "--resume", str(paths[0]), "--resume", str(paths[1])])
    assert result.exit_code != 0
    lines = stderr_lines(result)
    assert len(lines) == 1 and lines[0].startswith("Error:") and "--latent-dim" in lines[0]
    assert not (paths[0] / "checkpoint.pt").exists()


def test_an_interrupted_group_leaves_every_member_resumable(digits, tmp_path, monkeypatch):
    from pyro_dvae.train import TrainingInterrupted

    configs = _configs(values=(0.56, 1.78))
    straight = _run_dirs(tmp_path / "straight", configs)
    _quiet_resume(straight)
    stopped = _run_dirs(tmp_path / "stopped", configs)
    real = GroupTrainer.train_epoch

    def second_is_interrupted(self):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return real(self)

    # a stop signal while the members are evaluated: no member's epoch 1 is half committed
    evaluate = Trainer.evaluate

    def first_evaluation_interrupted(self, x=None):
        if self.config.alpha == 1.78 and not self.history:
            raise KeyboardInterrupt
        return evaluate(self, x)

    monkeypatch.setattr(Trainer, "evaluate", first_evaluation_interrupted)
    with pytest.raises(TrainingInterrupted):
        _quiet_resume(stopped)
    assert [RunDir(p).checkpoint_epoch() for p in stopped] == [0, 0]
    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    monkeypatch.setattr(GroupTrainer, "train_epoch", second_is_interrupted)
    with pytest.raises(TrainingInterrupted):
        _quiet_resume(stopped)
    for path in stopped:
        assert json.loads((path / "summary.json").read_text())["status"] == "interrupted"
        assert RunDir(path).checkpoint_epoch() == 1
    monkeypatch.setattr(GroupTrainer, "train_epoch", real)

    # a signal during the checkpoints is held back until the epoch counts: it is reported
    commit = Trainer.commit_epoch

    def commit_then_signal(self, record):
        commit(self, record)
        signal.raise_signal(signal.SIGTERM)

    signalled = _run_dirs(tmp_path / "signalled", configs)
    monkeypatch.setattr(Trainer, "commit_epoch", commit_then_signal)
    with pytest.raises(TrainingInterrupted) as stop:
        _quiet_resume(signalled)
    assert stop.value.epoch == 1 == RunDir(signalled[1]).checkpoint_epoch()
    monkeypatch.setattr(Trainer, "commit_epoch", commit)

    _quiet_resume(stopped)
    for a, b in zip(straight, stopped, strict=True):
        sa, sb = RunDir(a).load_checkpoint(), RunDir(b).load_checkpoint()
        assert all(torch.equal(v, sb["model"][k]) for k, v in sa["model"].items())


def test_a_group_trains_on_its_configs_subset_as_its_members_do(digits):
    group = _quiet(_configs(values=(0.56, 1.78), subset=100), digits)
    assert group.data.train.shape[0] == 100 == group.members[1].data.train.shape[0]
    assert group.steps_per_epoch() == group.members[0].steps_per_epoch()


# ---------------------------------------------------------------------- each member's streams
MEMBERS = {  # family options: three members' configs, as a sweep's grid makes them
    "logitnormal": [{"alpha": a, "compile": "on"} for a in (0.32, 1.0, 1.78)],
    "logitnormal-eager": [{"alpha": a, "compile": "off"} for a in (0.32, 1.0, 1.78)],
    "gaussian-2-particles": [{"family": "gaussian", "num_particles": 2, "compile": "on"}] * 3,
    "concrete-annealed": [
        {"family": "concrete", "categories": 3, "temperature": t, "anneal_rate": r, "compile": "on"}
        for t, r in [(0.5, 0.0), (1.0, 2e-2), (0.7, 0.0)]
    ],
    "beta": [{"family": "beta", "elbo": "analytic", "beta_prior": b} for b in (0.5, 1.0, 2.0)],
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(MEMBERS))
def test_each_member_of_a_group_follows_its_solo_run(digits, kind):
    """A member draws its noise, binarisation and data order from its own streams, seeded
    and stepped as its solo run's: it is its solo run, but for the last bits of the batched
    arithmetic (elementwise kernels round a tensor's tail differently from its body)."""
    configs = [FitConfig(seed=i + 5, **{**SMALL, **c}) for i, c in enumerate(MEMBERS[kind])]
    group = _quiet(configs, digits)
    untouched = torch.get_rng_state()
    group.fit()
    assert torch.equal(torch.get_rng_state(), untouched)  # torch's own stream is no member's
    for config, member in zip(configs, group.members, strict=True):
        solo = Trainer(config, digits, "cpu", progress=False, log=lambda msg: None)
        solo.fit()
        # the same number of draws from the same streams: the states agree exactly
        assert torch.equal(member.stream.gen.get_state(), torch.get_rng_state())
        assert torch.equal(member.data_gen.get_state(), solo.data_gen.get_state())
        for a, b in zip(solo.history, member.history, strict=True):
            for key in ("train_loss", "train_recon", "test_loss"):
                assert b[key] == pytest.approx(a[key], rel=1e-5), key
        mine = member.vae.state_dict()
        for name, value in solo.vae.state_dict().items():
            torch.testing.assert_close(mine[name], value, rtol=1e-4, atol=1e-5)


def test_a_split_and_regrouped_resume_reaches_the_uninterrupted_group(digits, tmp_path):
    """Issue 28: a kill between a group's checkpoint writes leaves one member an epoch
    behind; a sweep then resumes the others as a group of three and that one alone. With
    one noise stream for the group every member left the uninterrupted group's path; with
    each member's own stream (saved in its checkpoint) every member stays on it."""
    configs = [FitConfig(alpha=a, seed=i, **{**SMALL, "epochs": 3}) for i, a in enumerate(
        (0.32, 0.56, 1.0, 1.78))]  # fmt: skip
    straight = _run_dirs(tmp_path / "straight", configs)
    _quiet_resume(straight)
    split = _run_dirs(tmp_path / "split", configs)
    _quiet_resume(split, epochs=1)
    shutil.copytree(split[3], tmp_path / "epoch1")
    _quiet_resume(split, epochs=2)
    shutil.rmtree(split[3])
    shutil.copytree(tmp_path / "epoch1", split[3])  # its epoch-2 checkpoint never landed
    assert [RunDir(p).checkpoint_epoch() for p in split] == [2, 2, 2, 1]
    _quiet_resume(split[:3], epochs=3)
    resume(split[3], device="cpu", progress=False, log=lambda msg: None, epochs=3)
    for a, b in zip(straight, split, strict=True):
        sa, sb = RunDir(a).load_checkpoint(), RunDir(b).load_checkpoint()
        assert sb["epoch"] == 3
        for key in ("rng_torch", "rng_data"):  # each member's streams, drawn alike
            assert torch.equal(sa[key], sb[key]), key
        for name, value in sa["model"].items():
            torch.testing.assert_close(sb["model"][name], value, rtol=1e-4, atol=1e-5)
        for ra, rb in zip(sa["history"], sb["history"], strict=True):
            assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-5)


def test_member_draws_give_each_member_its_solo_draws():
    streams = []
    for seed in (3, 4):
        torch.manual_seed(seed)
        streams.append(MemberStream(torch.device("cpu")))
    untouched = torch.get_rng_state()
    with MemberDraws(streams):
        drawn = [
            torch.randn(2, 4, 5),
            torch.empty(2, 7).normal_(),
            torch.rand((2, 3), dtype=torch.float64),
            torch.normal(torch.zeros(2, 4), torch.ones(2, 4)),
            torch.empty(2, 6).uniform_(),
            torch._sample_dirichlet(torch.full((2, 3, 2), 0.7)),
            torch.normal(torch.full((2, 17), 2.0), torch.full((2, 17), 3.0)),
            torch.normal(torch.zeros(2, 3), 0.5),
            torch.empty(2, 20, dtype=torch.float64).normal_(1.0, 2.0),
        ]
        own = torch.randn(2, generator=torch.Generator().manual_seed(0))  # its own stream
        with pytest.raises(TrainingError, match="bernoulli"):
            torch.bernoulli(torch.full((2, 3), 0.5))
        with pytest.raises(TrainingError, match="member axis"):
            torch.randn(3, 4)  # not one slice per member
    assert torch.equal(torch.get_rng_state(), untouched)
    assert torch.equal(own, torch.randn(2, generator=torch.Generator().manual_seed(0)))
    for m, seed in enumerate((3, 4)):
        torch.manual_seed(seed)  # what a solo run of this seed draws, in this order
        solo = [
            torch.randn(4, 5),
            torch.empty(7).normal_(),
            torch.rand(3, dtype=torch.float64),
            torch.normal(torch.zeros(4), torch.ones(4)),
            torch.empty(6).uniform_(),
            torch._sample_dirichlet(torch.full((3, 2), 0.7)),
            torch.normal(torch.full((17,), 2.0), torch.full((17,), 3.0)),
            torch.normal(torch.zeros(3), 0.5),
            torch.empty(20, dtype=torch.float64).normal_(1.0, 2.0),
        ]
        for got, want in zip(drawn, solo, strict=True):
            assert torch.equal(got[m], want)
        assert torch.equal(streams[m].gen.get_state(), torch.get_rng_state())
