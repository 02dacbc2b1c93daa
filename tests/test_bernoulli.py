"""The Bernoulli family and its gradient estimators: the binary Concrete against its formulas,
the discrete model behind each relaxation, every unbiased estimator's mean gradient against
the exact one (enumerated), the relaxations' bias seen by the same test, and the refusals."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, kl_divergence

from pyro_dvae.config import FitConfig
from pyro_dvae.distributions import (
    BinaryConcrete,
    LogitNormal,
    LogitNormalDiscreteKL,
    StraightThroughBinaryConcrete,
)
from pyro_dvae.errors import ConfigError
from pyro_dvae.families import BitsFamily, make_family

from .helpers import fit_args, load_checkpoint, read_metrics, run_ok

# ---------------------------------------------------------------------------- distributions


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.5])
@pytest.mark.parametrize("logit", [-2.0, 0.0, 1.5])
def test_binary_concrete_density_integrates_to_one_and_matches_samples(tau, logit):
    d = BinaryConcrete(torch.tensor(tau, dtype=torch.float64), torch.tensor(logit).double())
    # in the chart y = logit(z) the density is smooth; integrate there (dz = z(1 - z) dy)
    y = torch.linspace(-36, 36, 200_001, dtype=torch.float64)  # z = σ(y) < 1 in float64
    z = torch.sigmoid(y)
    dens = (d.log_prob(z) + F.logsigmoid(y) + F.logsigmoid(-y)).exp()
    assert torch.trapezoid(dens, y).item() == pytest.approx(1.0, abs=1e-5)
    # P(z <= 0.3) by the density and by samples
    torch.manual_seed(0)
    samples = d.rsample((200_000,))
    below = torch.trapezoid(dens * (z <= 0.3), y).item()
    se = math.sqrt(below * (1 - below) / len(samples))
    assert (samples <= 0.3).double().mean().item() == pytest.approx(below, abs=5 * se + 1e-4)
    # its zero-temperature limit is Bernoulli(σ(logit)): P(z > ½) = σ(logit) at any τ
    p = torch.sigmoid(torch.tensor(logit)).item()
    assert (samples > 0.5).double().mean().item() == pytest.approx(p, abs=5 * math.sqrt(p / 2e5))


def test_straight_through_is_hard_forward_and_relaxed_backward():
    logits = torch.randn(5, 7, requires_grad=True)
    tau = torch.tensor(0.7)
    torch.manual_seed(1)
    hard = StraightThroughBinaryConcrete(tau, logits).rsample()
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    (hard * torch.arange(7.0)).sum().backward()
    g_hard = logits.grad.clone()
    logits.grad = None
    torch.manual_seed(1)
    soft = BinaryConcrete(tau, logits).rsample()
    assert torch.equal(hard, (soft > 0.5).float())
    (soft * torch.arange(7.0)).sum().backward()
    assert torch.allclose(g_hard, logits.grad)
    # its log_prob is the Bernoulli's, the distribution of the forward values
    d = StraightThroughBinaryConcrete(tau, logits.detach())
    assert torch.allclose(d.log_prob(hard), Bernoulli(logits=logits.detach()).log_prob(hard))


def test_registered_kl_is_the_underlying_bernoullis():
    q_logits, p_logits = torch.randn(100) * 4, torch.randn(100)
    q = BinaryConcrete(torch.tensor(0.5), q_logits)
    p = StraightThroughBinaryConcrete(torch.tensor(1.0), p_logits)
    expected = kl_divergence(Bernoulli(logits=q_logits), Bernoulli(logits=p_logits))
    assert torch.allclose(kl_divergence(q, p), expected, atol=1e-6)
    # and stays finite where the probabilities saturate
    far = BinaryConcrete(torch.tensor(1.0), torch.tensor([60.0, -60.0]))
    kl = kl_divergence(far, BinaryConcrete(torch.tensor(1.0), torch.zeros(2)))
    assert torch.allclose(kl, torch.full((2,), math.log(2)), atol=1e-5)


def test_the_logit_normals_binary_code_is_the_sign_of_y():
    """b = 1[y > 0] with y ~ N(μ, σ²): q(b = 1) = Φ(μ / σ), checked by sampling z = σ(y)."""
    loc = torch.tensor([[-3.0, -0.5, 0.0, 0.4, 2.0, 9.0]])
    log_var = torch.tensor([[0.0, 1.0, -2.0, 0.5, 3.0, 0.0]])
    bits = BitsFamily(6, probit=True)
    q = bits.posterior(torch.cat([loc, log_var], -1)).base_dist
    torch.manual_seed(2)
    z = LogitNormal(loc, torch.exp(0.5 * log_var)).sample((100_000,))
    observed = (z > 0.5).double().mean(0)
    se = (q.probs * (1 - q.probs) / 1e5).sqrt().double() + 1e-6
    assert ((observed - q.probs.double()).abs() <= 5 * se).all()
    # far out the logit stays finite: log Φ(9) − log Φ(−9) ≈ 43.6, where Φ(9) rounds to 1
    assert 43 < q.logits[0, -1].item() < 44


# ---------------------------------------------------------------------------- the config


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"estimator": "vimco"}, "--num-particles K of 2 or more"),
        ({"estimator": "concrete", "elbo": "tracegraph"}, "contradicts"),
        ({"estimator": "enum", "latent_dim": 11}, r"2\^11 codes"),
        ({"estimator": "nvil", "tau": 0.5}, "--tau sets the relaxation"),
        ({"estimator": "disarm", "alpha": 4.0}, "--alpha is the Logit-normal"),
        ({"estimator": "concrete", "tau": 0.0}, "--tau must be a positive number"),
        ({"estimator": "concrete", "tau": 0.3, "anneal_rate": 1e-4}, "below --min-temperature"),
        ({"family": "gaussian", "estimator": "nvil"}, "--estimator applies to --family"),
    ],
)
def test_contradictions_are_refused_in_one_line(fields, message):
    config = FitConfig(**{"family": "bernoulli", **fields})
    with pytest.raises(ConfigError, match=message) as err:
        config.validate(new=True)
    assert "\n" not in str(err.value)


def test_an_estimator_names_its_objective_and_an_elbo_its_estimator():
    assert FitConfig(family="bernoulli", estimator="concrete").elbo == "analytic"
    assert FitConfig(family="bernoulli", estimator="reinforce").elbo == "tracegraph"
    assert FitConfig(family="bernoulli", elbo="disarm").estimator == "disarm"
    # the existing spelling keeps working: --elbo tracegraph is REINFORCE with its baseline
    config = FitConfig(family="bernoulli", elbo="tracegraph").validate(new=True)
    assert make_family(config).estimator == "reinforce"


# ---------------------------------------------------------------------------- runs


@pytest.mark.parametrize(
    "options",
    [
        {"estimator": "nvil"},
        {"estimator": "vimco", "num_particles": 2},
        {"estimator": "disarm"},
        {"estimator": "concrete", "anneal_rate": 1e-2},
        {"estimator": "logitnormal", "anneal_rate": 1e-2},
    ],
    ids=lambda o: o["estimator"],
)
def test_a_resumed_run_is_the_uninterrupted_one_bit_for_bit(tmp_path, options):
    """Baselines' running state, the network of NVIL's baseline and its Adam moments, and
    the annealed temperature are in the checkpoint: 1 + 1 epochs give 2 epochs' numbers."""
    a, b = tmp_path / "a", tmp_path / "b"
    common = {"family": "bernoulli", "latent_dim": 12, **options}
    run_ok(fit_args(a, epochs=2, **common))
    run_ok(fit_args(b, epochs=1, **common))
    run_ok(["fit", "--no-progress", "--resume", str(b), "--epochs", "2"])
    ckpt_a, ckpt_b = load_checkpoint(a), load_checkpoint(b)
    for name, tensor in ckpt_a["model"].items():
        assert torch.equal(tensor, ckpt_b["model"][name]), name
    state_a, state_b = ckpt_a.get("estimator", {}), ckpt_b.get("estimator", {})
    assert {k: v for k, v in state_a.items() if k != "net"} == {
        k: v for k, v in state_b.items() if k != "net"
    }
    for name, tensor in state_a.get("net", {}).items():
        assert torch.equal(tensor, state_b["net"][name]), name
    assert ckpt_a.get("temperature") == ckpt_b.get("temperature")
    assert read_metrics(a)[-1]["train_loss"] == read_metrics(b)[-1]["train_loss"]


@pytest.mark.parametrize("name", ["NVILELBO", "VIMCOELBO", "DisARMELBO"])
def test_the_elbos_train_a_plain_pyro_model_with_pyros_svi(name):
    """docs/discrete.md's use from Python: any model and guide over a ``data`` plate, in
    ``pyro.infer.SVI``; the loss falls on a toy problem whose best code is known."""
    import pyro.distributions as dist
    from pyro.infer import SVI
    from pyro.optim import Adam

    from pyro_dvae import score_function

    pyro.clear_param_store()
    torch.manual_seed(5)
    x = torch.cat([torch.ones(20, 4), torch.zeros(20, 4)])  # two kinds of image
    decoder = torch.nn.Linear(2, 4)
    encoder = torch.nn.Linear(4, 2)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            b = pyro.sample("b", dist.Bernoulli(x.new_full((x.shape[0], 2), 0.5)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(b)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("b", dist.Bernoulli(logits=encoder(x)).to_event(1))

    elbo = getattr(score_function, name)(num_particles=3 if name == "VIMCOELBO" else 1)
    svi = SVI(model, guide, Adam({"lr": 0.05}), elbo)
    first = svi.step(x)
    for _ in range(300):
        svi.step(x)
    last = sum(svi.step(x) for _ in range(20)) / 20
    # about 4 pixels' worth of coin flips at the start (4 log 2 = 2.8 nats); the best code
    # tells the two images apart with one sure bit: no reconstruction error, KL log 2 = 0.69
    assert first > 2.0 and last < 1.0, (first, last)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"estimator": "disarm"}, "does not apply to --family categorical"),
        ({"estimator": "logitnormal"}, "does not apply to --family categorical"),
        ({"estimator": "nvil", "anneal_rate": 1e-4}, "--anneal-rate sets the relaxation"),
        ({"estimator": "enum", "latent_dim": 20}, "at most 1024 codes"),
    ],
)
def test_categorical_estimators_refuse_what_does_not_apply(fields, message):
    config = FitConfig(**{"family": "categorical", "categories": 10, **fields})
    with pytest.raises(ConfigError, match=message):
        config.validate(new=True)


def test_categorical_straight_through_reads_one_hot_codes_with_the_categoricals_kl():
    from torch.distributions import Categorical

    from pyro_dvae.distributions import ExpRelaxedCategoricalDiscreteKL, StraightThroughCategorical

    logits = torch.randn(6, 4, 5, requires_grad=True)
    torch.manual_seed(7)
    hard = StraightThroughCategorical(torch.tensor(0.5), logits=logits).rsample()
    assert torch.equal(hard.sum(-1), torch.ones(6, 4)) and set(hard.unique().tolist()) <= {0, 1}
    torch.manual_seed(7)
    soft = ExpRelaxedCategoricalDiscreteKL(torch.tensor(0.5), logits=logits).rsample().exp()
    assert torch.equal(hard.argmax(-1), soft.argmax(-1))
    (hard * torch.arange(5.0)).sum().backward()
    g_hard = logits.grad.clone()
    logits.grad = None
    (soft * torch.arange(5.0)).sum().backward()
    assert torch.allclose(g_hard, logits.grad)
    q = StraightThroughCategorical(torch.tensor(0.5), logits=logits.detach())
    p = ExpRelaxedCategoricalDiscreteKL(torch.tensor(1.0), logits=torch.zeros(6, 4, 5))
    expected = kl_divergence(
        Categorical(logits=logits.detach()), Categorical(logits=torch.zeros(6, 4, 5))
    )
    assert torch.allclose(kl_divergence(q, p), expected, atol=1e-6)


@pytest.mark.slow
def test_compare_estimators_on_bernoulli_runs(tmp_path):
    """Small: every estimator against the exact gradient (bias² + variance = MSE); 11 bits
    (2048 codes, past enumeration): their spread, with the unbiased ones' SNR below the
    relaxations'."""
    from .helpers import invoke, read_json

    for bits in (3, 11):
        run = tmp_path / f"b{bits}"
        run_ok(fit_args(run, family="bernoulli", latent_dim=bits, estimator="disarm", epochs=1))
        out = tmp_path / f"est{bits}"
        args = ["compare-estimators", str(run), "--repeats", "20", "--batch-size", "5"]
        result = invoke([*args, "--temperatures", "0.5,2", "--out", str(out)])
        assert result.exit_code == 0, result.output
        rows = {r["estimator"]: r for r in read_json(out / "estimators.json")}
        expected = {"score-function", "reinforce", "nvil", "vimco-5", "disarm"}
        expected |= {f"{n}-{t}" for n in ("concrete", "straight-through") for t in ("0.5", "2")}
        if bits == 3:
            assert set(rows) == expected | {"enum (exact)"}
            for r in rows.values():
                assert r["mse_all"] == pytest.approx(r["bias2_all"] + r["var_all"], rel=1e-9)
        else:
            assert set(rows) == expected
            assert rows["concrete-2"]["snr_encoder"] > rows["reinforce"]["snr_encoder"]


def test_a_logit_normal_run_is_scored_as_the_bits_it_stands_for(tmp_path):
    """The paper's continuous Logit-normal, read as b = 1[y > 0]: evaluate's discrete block has
    the analytic KL of Bernoulli(Φ(μ/σ)) to Bernoulli(½) (recomputed here from the encoder),
    its IWAE, and the gap to the relaxed −ELBO."""
    from pyro_dvae.data import load_dataset
    from pyro_dvae.evaluation import load_run

    from .helpers import read_json

    run = tmp_path / "ln"
    run_ok(fit_args(run, family="logitnormal", latent_dim=4, epochs=1))
    run_ok(["evaluate", str(run), "--k", "10", "--discrete-k", "10", "--no-progress"])
    ev = read_json(run / "evaluation.json")
    block = ev["discrete"]
    assert block["kl"] == "analytic" and block["k"] == 10 and block["test_images"] == 300
    assert block["relaxed_test_loss"] == ev["test_loss"]
    assert block["relaxation_gap"] == pytest.approx(block["test_loss"] - ev["test_loss"])
    assert block["test_loss"] == pytest.approx(block["test_recon"] + block["test_kl"])
    loaded = load_run(run)
    x = load_dataset("digits").test.to(torch.float32)
    with torch.no_grad():
        loc, log_var = loaded.vae.encoder(x).chunk(2, -1)
    q1 = torch.special.ndtr(loc / torch.exp(0.5 * log_var)).double()
    half = torch.full_like(q1, 0.5)
    kl = kl_divergence(Bernoulli(probs=q1), Bernoulli(probs=half)).sum(-1).mean()
    assert block["test_kl"] == pytest.approx(kl.item(), rel=1e-4)


def test_the_bernoulli_logit_normal_relaxation_is_sigma_of_y_over_tau():
    """q(z) = LN(μ/τ, σ/τ) and p(z) = LN(0, √α/τ): z = σ(y/τ) with y ~ N(μ, σ²) and, under the
    prior, y ~ N(0, α)."""
    from pyro_dvae.families import make_family

    config = FitConfig(
        family="bernoulli", latent_dim=3, estimator="logitnormal", alpha=4.0, tau=0.5
    )
    family = make_family(config)
    head = torch.tensor([[0.3, -1.0, 2.0, 0.0, -0.7, 0.4]])
    q, p = family.posterior(head).base_dist, family.prior(head).base_dist
    loc, scale = head[:, :3], torch.exp(0.5 * head[:, 3:])
    assert torch.allclose(q.base_dist.loc, loc / 0.5) and torch.allclose(
        q.base_dist.scale, scale / 0.5
    )
    assert torch.allclose(p.base_dist.scale, torch.full((1, 3), 2.0 / 0.5))
    assert torch.equal(family.discrete().posterior(head).base_dist.logits > 0, loc > 0)


def test_estimator_only_objectives_and_disarm_refuse_what_they_cannot_do():
    for family in ("gaussian", "logitnormal", "concrete"):
        with pytest.raises(ConfigError, match="is an estimator of discrete latents"):
            FitConfig(family=family, elbo="nvil").validate(new=True)
    import pyro.distributions as dist

    from pyro_dvae.score_function import DisARMELBO

    def model(x):
        with pyro.plate("data", x.shape[0]):
            a = pyro.sample("a", dist.Bernoulli(x.new_full((x.shape[0], 2), 0.5)).to_event(1))
            pyro.sample("b", dist.Bernoulli(a).to_event(1))

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("a", dist.Bernoulli(x.new_full((x.shape[0], 2), 0.3)).to_event(1))
            pyro.sample("b", dist.Bernoulli(x.new_full((x.shape[0], 2), 0.6)).to_event(1))

    with pytest.raises(ConfigError, match="one Bernoulli site; this one has 2"):
        DisARMELBO().loss(model, guide, torch.zeros(3, 4))


def test_the_discrete_kl_logit_normal_has_the_kl_of_its_bits():
    """KL(LogitNormalDiscreteKL(μ, σ) ‖ LogitNormalDiscreteKL(0, s)) is that of Bernoulli(Φ(μ/σ))
    to Bernoulli(½) (Φ from math.erf, float64), unchanged by a temperature dividing μ and σ."""
    torch.manual_seed(0)
    loc, scale = torch.randn(50).double() * 3, torch.rand(50).double() * 2 + 0.1
    phi = [0.5 * (1 + math.erf(u / math.sqrt(2))) for u in (loc / scale).tolist()]
    q1 = torch.tensor(phi, dtype=torch.float64)
    xlogy = torch.special.xlogy  # 0 log 0 = 0 where Φ rounds to 1
    expected = xlogy(q1, 2 * q1) + xlogy(1 - q1, 2 * (1 - q1))
    prior = LogitNormalDiscreteKL(torch.zeros(50).double(), torch.full((50,), 1.3).double())
    for tau in (1.0, 0.1):
        kl = kl_divergence(LogitNormalDiscreteKL(loc / tau, scale / tau), prior)
        assert torch.allclose(kl, expected, rtol=1e-9, atol=1e-12)
    expanded = LogitNormalDiscreteKL(loc[:3], scale[:3]).expand((4, 3))
    assert isinstance(expanded, LogitNormalDiscreteKL)
    small_prior = LogitNormalDiscreteKL(torch.zeros(3).double(), torch.ones(3).double())
    assert torch.allclose(kl_divergence(expanded, small_prior.expand((4, 3)))[2], expected[:3])
    unit = LogitNormalDiscreteKL(torch.tensor(0.0), torch.tensor(1.0))
    far = kl_divergence(LogitNormalDiscreteKL(torch.tensor(60.0), torch.tensor(1.0)), unit)
    assert far.item() == pytest.approx(math.log(2))


def test_with_the_bits_kl_a_cold_logit_normal_relaxation_is_the_discrete_elbo():
    """``logitnormal-discrete-kl`` trains the discrete model's own KL, and as τ → 0 its codes
    become the hard codes b = 1[y > 0]: its objective tends to the discrete ELBO. The paper's
    ``logitnormal`` keeps the Logit-normals' KL, a different number at any τ."""
    head = torch.tensor([[0.3, -1.0, 2.0, 0.0, -0.7, 0.4]])
    bits = make_family(FitConfig(family="bernoulli", latent_dim=3, estimator="logitnormal"))
    discrete_kl = kl_divergence(bits.discrete().posterior(head), bits.discrete().prior(head))
    for tau in (1.0, 0.02):
        config = FitConfig(
            family="bernoulli", latent_dim=3, estimator="logitnormal-discrete-kl", tau=tau
        )
        family = make_family(config)
        q, p = family.posterior(head), family.prior(head)
        assert torch.allclose(kl_divergence(q, p), discrete_kl)
        assert not torch.allclose(
            kl_divergence(bits.posterior(head), bits.prior(head)), discrete_kl
        )
    torch.manual_seed(1)
    z = q.rsample((2000,))  # τ = 0.02: all but the draws within 0.1 σ of y = 0 are hard
    hard = (z > 0.5).to(z.dtype)
    assert (z - hard).abs().lt(0.01).double().mean() > 0.95


def test_the_bits_kl_relaxation_compiles_to_its_eager_step():
    """``logitnormal-discrete-kl`` steps compiled as eagerly (its KL, log Φ, in the graph): the
    same loss, reconstruction and gradients for the same draws, float64."""
    from pyro_dvae.inference import make_elbo
    from pyro_dvae.vae import VAE

    from .helpers import assert_steps_agree

    config = FitConfig(family="bernoulli", latent_dim=3, estimator="logitnormal-discrete-kl")
    vae = VAE(make_family(config), input_dim=12, hidden=8).to(torch.float64)
    results = []
    for compile in (False, True):
        elbo = make_elbo(config.elbo, compile=compile)
        for seed in (1, 2):
            pyro.set_rng_seed(seed)
            x = torch.bernoulli(torch.full((6, 12), 0.4, dtype=torch.float64))
            loss = elbo.loss_and_grads(vae.model, vae.guide, x)
            results.append(
                (loss, float(elbo.last_recon), [p.grad.clone() for p in vae.parameters()])
            )
            vae.zero_grad(set_to_none=True)
        assert elbo.graphs == compile  # compiled, not fallen back to the eager step
    assert_steps_agree(results[:2], results[2:])


def test_the_posterior_noise_script_reads_the_bits_certainty(tmp_path):
    """scripts/posterior_noise.py's |μ / σ| of a Logit-normal relaxation's units is the
    certainty of the bits the run is scored as: Φ⁻¹ of q(b = 1 | x) from the run's discrete
    view (its bits' logits); its quantiles are in order; a Gaussian run is one error line."""
    import subprocess
    import sys
    from pathlib import Path

    from pyro_dvae.data import load_dataset
    from pyro_dvae.evaluation import load_run

    run = tmp_path / "ln"
    run_ok(fit_args(run, family="bernoulli", latent_dim=3, estimator="logitnormal", epochs=1))
    script = [sys.executable, str(Path(__file__).parents[1] / "scripts" / "posterior_noise.py")]
    out = subprocess.run([*script, str(run), "--images", "40"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    row = out.stdout.splitlines()[2].strip("| ").split(" | ")
    assert row[:2] == ["ln", "1"]
    scale, ratio = [float(v) for v in row[2:7]], [float(v) for v in row[7:12]]
    assert scale == sorted(scale) and ratio == sorted(ratio)
    loaded = load_run(run, device="cpu")
    x = load_dataset("digits", None).test[:40]
    with torch.no_grad():
        bits = loaded.vae.family.discrete().posterior(loaded.vae.encoder(x)).base_dist
        certainty = torch.special.ndtri(bits.probs.double()).abs()
    median = torch.quantile(certainty.flatten(), 0.5)  # the middle two averaged
    assert ratio[2] == pytest.approx(float(median), rel=6e-3)  # printed to 3 digits
    gauss = tmp_path / "g"
    run_ok(fit_args(gauss, family="gaussian", epochs=1))
    out = subprocess.run([*script, str(gauss)], capture_output=True, text=True)
    assert (
        out.returncode == 1
        and out.stderr.strip() == f"Error: {gauss} has no Logit-normal posterior"
    )
