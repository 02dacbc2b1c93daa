"""KL warm-up, free bits and learning-rate schedules (pyro_dvae.schedules), each against a
formula computed independently, their refusals, resume, the report's mark; and the
collapse sentence (pyro_dvae.collapse)."""

import math

import pyro
import pytest
import torch
from pyro.distributions import Normal

from pyro_dvae import FitConfig, Trainer, load_dataset
from pyro_dvae.collapse import COLLAPSE_KL, verdict
from pyro_dvae.inference import elbo_parts
from pyro_dvae.schedules import free_bits_kl, group_kl, kl_weight, lr_factor

from .helpers import assert_one_error_line, fit_args, invoke, read_json, run_ok

SMALL = {"dataset": "digits", "hidden": 32, "latent_dim": 3, "subset": 200, "seed": 3}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def trainer(digits, **options) -> Trainer:
    config = FitConfig(**{**SMALL, **options})
    return Trainer(config, digits, "cpu", progress=False, log=lambda msg: None)


#: the other reparameterised families, with their own options (the remedies apply to each)
FAMILIES = {
    "logitnormal": {"family": "logitnormal", "alpha": 1.78},
    "beta": {"family": "beta"},
    "concrete": {"family": "concrete", "categories": 4},
}


@pytest.mark.parametrize(
    "elbo, family",
    [("trace", "gaussian"), ("analytic", "gaussian")] + [("trace", f) for f in FAMILIES],
)
@pytest.mark.parametrize("compile", ["off", "on"], ids=["eager", "compiled"])
def test_the_warmup_loss_is_reconstruction_plus_beta_times_kl(digits, elbo, family, compile):
    own = FAMILIES.get(family, {})
    t = trainer(digits, kl_warmup=2, elbo=elbo, compile=compile, **own)
    t.begin()
    assert t.elbo.compile == (compile == "on")  # (the Beta falls back to eager at its 1st step)
    steps = t.steps_per_epoch()  # 4: β = step / 8
    x = t.data.test[:50]
    for step in (0, 3, 6, 8, 20):
        beta = min(1.0, step / (2 * steps))
        assert kl_weight(step, 2 * steps) == beta
        t.schedules.set_step(step, t.optim)
        pyro.set_rng_seed(7)
        loss = t.elbo.loss_and_grads(t.vae.model, t.vae.guide, x)
        pyro.set_rng_seed(7)  # the same draw of z, scored by plain Pyro traces
        recon, kl = elbo_parts(t.vae.model, t.vae.guide, x, analytic=elbo == "analytic")
        assert loss == pytest.approx(float(recon.mean() + beta * kl.mean()), rel=1e-5)
        assert float(kl.mean()) > 0.01  # the weight is seen: β moves the loss
        for p in t.vae.parameters():
            p.grad = None


def test_free_bits_clamp_each_units_batch_mean_kl_and_stop_its_gradient():
    loc = torch.tensor([[2.0, 0.1, 0.3], [1.5, -0.2, 0.0], [2.5, 0.05, -0.1], [1.0, 0.0, 0.2]])
    loc.requires_grad_(True)
    scale = torch.full_like(loc, 0.8)
    q, p = Normal(loc, scale).to_event(1), Normal(torch.zeros(4, 3), torch.ones(4, 3)).to_event(1)
    per_unit = group_kl(q, p, q.rsample(), analytic=True)
    closed = 0.5 * (scale**2 + loc**2 - 1 - torch.log(scale**2))  # KL(N(μ, σ²) ‖ N(0, 1))
    assert torch.allclose(per_unit, closed)
    means = closed.detach().mean(0)
    assert means[0] > 0.5 > means[1] and means[2] < 0.5  # unit 0 above λ, 1 and 2 under
    term = free_bits_kl(per_unit, 1, 0.5)
    assert float(term.detach()) == pytest.approx(4 * float(means.clamp_min(0.5).sum()))
    term.backward()
    assert torch.all(loc.grad[:, 1:] == 0)  # under the threshold: no gradient from its KL
    assert torch.allclose(loc.grad[:, 0], loc.detach()[:, 0])  # d/dμ Σ_b KL_b = μ_b
    assert float(free_bits_kl(per_unit.detach(), 1, 0.0)) == pytest.approx(
        float(closed.detach().sum())
    )


@pytest.mark.parametrize("family", ["gaussian", *FAMILIES])
def test_free_bits_over_every_unit_leave_the_reconstructions_gradient(digits, family):
    """λ far above every unit's KL: the gradient is that of the reconstruction alone (β = 0)."""
    grads = []
    for options in ({"free_bits": 1000.0}, {"kl_warmup": 1}):
        t = trainer(digits, **options, **FAMILIES.get(family, {}))
        t.schedules.set_step(0, t.optim)  # warm-up at step 0: β = 0
        pyro.set_rng_seed(11)
        t.elbo.loss_and_grads(t.vae.model, t.vae.guide, t.data.test[:50])
        grads.append([p.grad.clone() for p in t.vae.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert any(float(g.abs().max()) > 0 for g in grads[0])


def _expected_lr(schedule: str, k: int, total: int, lr: float) -> float:
    if schedule == "step":
        return lr if k < total / 2 else lr / 10 if k < 3 * total / 4 else lr / 100
    return lr * (1 + math.cos(math.pi * k / total)) / 2


@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_the_learning_rate_of_each_step_follows_the_schedule(digits, schedule):
    t = trainer(digits, lr_schedule=schedule, epochs=4, lr=0.002)
    total = 4 * t.steps_per_epoch()
    assert [lr_factor(schedule, k, total) * 0.002 for k in range(total)] == pytest.approx(
        [_expected_lr(schedule, k, total, 0.002) for k in range(total)]
    )
    seen = []
    step = t.svi.step

    def recording(x):
        loss = step(x)
        seen.append(t.optim.optimizer.param_groups[0]["lr"])  # the rate this step used
        return loss

    t.svi.step = recording
    t.fit()
    assert seen == pytest.approx([_expected_lr(schedule, k, total, 0.002) for k in range(total)])
    assert [r["lr"] for r in t.history] == pytest.approx(
        [_expected_lr(schedule, e * total // 4 - 1, total, 0.002) for e in (1, 2, 3, 4)]
    )


def test_a_resumed_run_with_every_remedy_is_the_uninterrupted_one_bit_for_bit(digits):
    options = {"kl_warmup": 2, "free_bits": 0.2, "lr_schedule": "cosine", "epochs": 3}
    whole = trainer(digits, **options)
    whole.fit()
    first = trainer(digits, **options)
    first.fit(1)
    state = first.state_dict()
    rest = trainer(digits, **options)
    rest.load_state_dict(state)
    rest.fit()
    pairs = zip(whole.vae.state_dict().items(), rest.vae.state_dict().values(), strict=True)
    for (name, a), b in pairs:
        assert torch.equal(a, b), name
    assert [r["train_loss"] for r in whole.history] == [r["train_loss"] for r in rest.history]
    assert whole.history[-1]["kl_weight"] == 1.0 and whole.history[0]["kl_weight"] < 1.0


@pytest.mark.parametrize(
    "options, words",
    [
        ({"kl_warmup": -1}, "--kl-warmup must be an integer >= 0"),
        ({"free_bits": -0.5}, "--free-bits must be a number >= 0"),
        ({"free_bits": 0.5, "family": "categorical", "elbo": "enum"}, "--elbo enum has no"),
        ({"kl_warmup": 2, "family": "bernoulli", "estimator": "nvil"}, "--elbo nvil has no"),
    ],
)
def test_bad_values_and_objectives_they_cannot_apply_to_are_one_error_line(
    tmp_path, options, words
):
    out = tmp_path / "run"
    result = invoke(fit_args(out, **options))
    assert result.exit_code != 0
    assert_one_error_line(result)
    assert words in result.stderr and not out.exists()


def test_an_unknown_schedule_is_refused_by_the_config():
    from pyro_dvae.errors import ConfigError

    with pytest.raises(ConfigError, match="choose from constant, cosine, step"):
        FitConfig(dataset="digits", lr_schedule="linear").validate(new=True)


def test_a_schedule_is_recorded_marked_and_not_stretched_on_resume(tmp_path):
    from pyro_dvae.report import runs_table
    from pyro_dvae.results import collect

    out, plain = tmp_path / "runs" / "warm", tmp_path / "runs" / "plain"
    run_ok(fit_args(out, epochs=1, kl_warmup=1, lr_schedule="step"))
    run_ok(fit_args(plain, epochs=1))
    config = read_json(out / "config.json")
    assert (config["kl_warmup"], config["free_bits"], config["lr_schedule"]) == (1, 0.0, "step")
    table = runs_table(collect(tmp_path))
    names = [name for name, _ in table.rows]
    assert sorted(names) == ["plain", "warm †"]
    assert "†: trained with --kl-warmup 1, --lr-schedule step" in table.note
    result = invoke(["fit", "--no-progress", "--resume", str(out), "--epochs", "2"])
    assert result.exit_code != 0
    assert_one_error_line(result)
    assert "--lr-schedule step spans the run's 1 epochs" in result.stderr


def test_the_collapse_sentence_names_the_facts_and_the_remedies():
    said = verdict({"test_kl": 0.01, "test_active_units": 0})
    assert "test KL 0.01 nats" in said and "0 active units" in said
    assert "--kl-warmup" in said and "--free-bits" in said
    assert verdict({"test_kl": 2.9, "test_active_units": 12}) is None
    assert verdict({"test_kl": 2.9, "test_active_units": 0}) is not None  # no unit active
    # a KL well above the floor with no unit active: q moved off the prior, the same for all x
    paid = verdict({"test_kl": 21.87, "test_active_units": 0})
    assert "same for every image" in paid and "decoder ignores z" not in paid
    assert "decoder ignores z" in said
    assert verdict({"test_kl": COLLAPSE_KL / 2}) is not None  # a run from before the count
    assert verdict({"train_loss": 3.0}) is None  # an epoch without evaluation
    # a run with a remedy on already is not told to turn it on
    with_free_bits = FitConfig(dataset="digits", free_bits=0.5)
    already = verdict({"test_kl": 3.4, "test_active_units": 0}, with_free_bits)
    assert "train longer" in already and "--free-bits 0.5" not in already
    assert "--free-bits 0.5" in verdict({"test_kl": 3.4, "test_active_units": 0}, FitConfig())


def test_a_run_with_a_remedy_trains_alone_and_the_group_refusal_names_it():
    from pyro_dvae.errors import ConfigError
    from pyro_dvae.group import check_group, group_key

    plain = FitConfig(dataset="digits")
    warm = FitConfig(dataset="digits", free_bits=0.5)
    assert group_key(plain) is not None and group_key(warm) is None
    with pytest.raises(ConfigError, match="--free-bits 0.5 trains alone"):
        check_group([warm, warm])
