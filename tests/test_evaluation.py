"""Evaluation: IWAE against exact likelihoods, its ordering with the ELBO, active units, kNN."""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from pyro_dvae.config import FitConfig
from pyro_dvae.data import load_dataset
from pyro_dvae.evaluation import active_units, knn_accuracy, load_run, posterior_means
from pyro_dvae.families import make_family
from pyro_dvae.inference import elbo_parts
from pyro_dvae.iwae_bound import importance_weighted, sample_parts
from pyro_dvae.train import Trainer
from pyro_dvae.vae import VAE

from .helpers import assert_one_error_line, fit_args, invoke, read_json, run_ok


def _exact_log_likelihood(vae: VAE, x: torch.Tensor, family: str, alpha: float = 1.0):
    """log ∫ p(x|z) p(z) dz for a 1-D latent, by quadrature over the base Normal's space."""
    y = torch.linspace(-12.0, 12.0, 8001, dtype=torch.float64)
    dy = y[1] - y[0]
    prior_sd = 1.0 if family == "gaussian" else math.sqrt(alpha)
    log_prior = torch.distributions.Normal(0.0, prior_sd).log_prob(y)
    z = y if family == "gaussian" else torch.sigmoid(y)
    logits = vae.decoder(z.unsqueeze(-1))  # (grid, D)
    log_lik = torch.distributions.Bernoulli(logits=logits.unsqueeze(1)).log_prob(x).sum(-1)
    # (grid, batch); the Logit-normal density in z-space cancels its Jacobian here
    return torch.logsumexp(log_lik + log_prior.unsqueeze(-1), 0) + dy.log()


@pytest.mark.parametrize("family", ["gaussian", "logitnormal"])
def test_iwae_converges_to_the_exact_log_likelihood_in_one_dimension(family):
    torch.manual_seed(0)
    cfg = FitConfig(family=family, latent_dim=1, alpha=1.78)
    vae = VAE(make_family(cfg), input_dim=10, hidden=6).double()
    x = torch.bernoulli(torch.full((4, 10), 0.5, dtype=torch.float64))
    with torch.no_grad():
        exact = _exact_log_likelihood(vae, x, family, alpha=1.78)
        iw = importance_weighted(vae.model, vae.guide, x, k=40000, max_draws=40000)
        recon, kl = sample_parts(vae.model, vae.guide, x, 20000)
    assert torch.allclose(iw["log_likelihood"], exact, atol=0.02), (iw["log_likelihood"], exact)
    # the ELBO lies below log p(x): the gap is the KL from q(z|x) to the true posterior
    assert ((-(recon + kl)).mean(0) < exact).all()


@pytest.mark.parametrize("family", ["gaussian", "logitnormal", "concrete"])
def test_the_importance_weights_score_the_latent_and_observed_sites_only(family, monkeypatch):
    """A plate is a trace site too; its score is a 0 on the default device (the CPU), which
    broke the IWAE on CUDA (regression of a bug seen on a GPU). Its parts must be the
    sites' own: -log p(x|z) and log q(z|x) - log p(z) at the same draws."""
    from pyro.poutine.subsample_messenger import _Subsample

    def refuse(self, value):
        raise AssertionError("a plate's site was scored")

    monkeypatch.setattr(_Subsample, "log_prob", refuse)
    torch.manual_seed(0)
    vae = VAE(make_family(FitConfig(family=family, latent_dim=2)), input_dim=10, hidden=6)
    x = torch.bernoulli(torch.full((3, 10), 0.5))
    pyro.set_rng_seed(1)
    recon, kl = sample_parts(vae.model, vae.guide, x, 4)
    with torch.no_grad():  # the same draws by hand: one (4, 3) batch of z
        pyro.set_rng_seed(1)
        q = vae.family.posterior(vae.encoder(x)).expand((4, 3))
        z = q.rsample()
        p = vae.family.prior(x).expand((4, 3))
        logits = vae.decoder(vae.family.decoder_input(z))
        want_recon = -torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)
        want_kl = q.log_prob(z) - p.log_prob(z)
    assert torch.allclose(recon, want_recon, atol=1e-5)
    assert torch.allclose(kl, want_kl, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("family", ["gaussian", "logitnormal", "concrete", "beta"])
def test_the_iwae_bound_on_cuda_agrees_with_the_cpus(family):
    """The same model and images on both devices: the GPU's estimate lies within the spread
    of the CPU's over seeds. The Concrete at τ = 1, 3 classes: at the paper's τq = 0.5 its
    weights are so heavy-tailed that six seeds do not measure their spread (0.3-1.1 nats)."""
    torch.manual_seed(0)
    own = dict(categories=3, temperature=1.0) if family == "concrete" else {}
    vae = VAE(make_family(FitConfig(family=family, latent_dim=2, **own)), input_dim=10, hidden=6)
    x = torch.bernoulli(torch.full((5, 10), 0.5))
    cpu = []
    for seed in range(6):
        pyro.set_rng_seed(seed)
        cpu.append(importance_weighted(vae.model, vae.guide, x, k=4000))
    nll = torch.stack([c["log_likelihood"] for c in cpu])
    kl = torch.tensor([c["kl"] for c in cpu])
    gpu = importance_weighted(vae.to("cuda").model, vae.guide, x.cuda(), k=4000)
    assert ((gpu["log_likelihood"].cpu() - nll.mean(0)).abs() <= 4 * nll.std(0) + 0.05).all()
    assert abs(gpu["kl"] - kl.mean()) <= 4 * kl.std() + 0.05


def test_one_hot_view_of_a_concrete_vae_is_the_categorical_model():
    """One K-way variable: log p(x) of the discrete model is a sum over the K one-hot codes."""
    torch.manual_seed(0)
    cfg = FitConfig(family="concrete", latent_dim=1, categories=5)
    vae = VAE(make_family(cfg), input_dim=10, hidden=6).double()
    hard = vae.with_family(vae.family.discrete())
    x = torch.bernoulli(torch.full((4, 10), 0.5, dtype=torch.float64))
    with torch.no_grad():
        codes = torch.eye(5, dtype=torch.float64)  # (K, K): every value of z
        log_lik = torch.distributions.Bernoulli(logits=vae.decoder(codes).unsqueeze(1))
        exact = (log_lik.log_prob(x).sum(-1) - math.log(5)).logsumexp(0)  # uniform prior
        iw = importance_weighted(hard.model, hard.guide, x, k=20000, max_draws=80000)
        logits = vae.encoder(x).log_softmax(-1)
        kl = (logits.exp() * (logits + math.log(5))).sum(-1).mean()  # KL(q || uniform)
    # k draws over K = 5 codes cover them all: the IWAE equals log p(x) up to MC noise
    assert torch.allclose(iw["log_likelihood"], exact, atol=0.02), (iw["log_likelihood"], exact)
    assert iw["kl"] == pytest.approx(float(kl), abs=0.01)
    assert hard.encode(x).mean.shape == (4, 1, 5)  # E[one-hot] = q's class probabilities
    assert torch.allclose(hard.encode(x).mean.squeeze(1), logits.exp())


@pytest.fixture(scope="module")
def trained():
    """A small Gaussian VAE trained on digits until its latents carry a few nats."""
    pyro.clear_param_store()
    cfg = FitConfig(
        family="gaussian",
        latent_dim=4,
        dataset="digits",
        hidden=64,
        epochs=40,
        eval_every=40,
        lr=3e-3,
    )
    trainer = Trainer(cfg, load_dataset("digits"), "cpu", progress=False, log=lambda m: None)
    trainer.fit()
    assert trainer.history[-1]["train_kl"] > 1.0  # otherwise IWAE and ELBO coincide
    return trainer


@pytest.mark.slow
def test_iwae_is_above_the_elbo_and_rises_with_k(trained):
    vae, x = trained.vae, trained.data.test
    torch.manual_seed(1)
    bounds = {}
    for k in (1, 10, 100, 1000):
        iw = importance_weighted(vae.model, vae.guide, x, k=k)
        bounds[k] = float(iw["log_likelihood"].mean())
        elbo = -(iw["recon"] + iw["kl"])
        if k > 1:
            assert bounds[k] > elbo + 0.1
    # k = 1 is the one-sample ELBO: compare with the estimator used in training
    torch.manual_seed(2)
    recon, kl = elbo_parts(vae.model, vae.guide, x)
    assert bounds[1] == pytest.approx(-float((recon + kl).mean()), abs=0.5)
    assert bounds[1] < bounds[10] < bounds[100] < bounds[1000]


def test_chunking_does_not_change_the_estimate(trained):
    vae, x = trained.vae, trained.data.test[:30]
    results = []
    for batch_size, max_draws in [(30, 100000), (7, 50)]:
        torch.manual_seed(3)
        iw = importance_weighted(
            vae.model, vae.guide, x, k=200, batch_size=batch_size, max_draws=max_draws
        )
        results.append(iw)
    # different chunks draw different samples; the estimates agree to Monte Carlo error
    a, b = (r["log_likelihood"] for r in results)
    assert torch.allclose(a, b, atol=0.5)
    assert results[0]["kl"] == pytest.approx(results[1]["kl"], rel=0.05)


def test_a_stopped_iwae_pass_resumes_to_the_numbers_of_an_uninterrupted_one(trained):
    vae, x = trained.vae, trained.data.test[:30]
    torch.manual_seed(5)
    whole = importance_weighted(vae.model, vae.guide, x, k=50, batch_size=7)
    calls, saved = [], []

    def guide(*args):  # stopped (as by Ctrl-C) in the third batch of images
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return vae.guide(*args)

    torch.manual_seed(5)
    with pytest.raises(KeyboardInterrupt):
        importance_weighted(vae.model, guide, x, k=50, batch_size=7, save=saved.append)
    assert saved[-1]["done"] == 14  # two batches of 7 images finished and kept
    torch.manual_seed(123)  # the resumed pass continues the saved stream, not the caller's
    resumed = importance_weighted(vae.model, vae.guide, x, k=50, batch_size=7, resume=saved[-1])
    assert torch.equal(resumed["log_likelihood"], whole["log_likelihood"])
    assert (resumed["recon"], resumed["kl"]) == (whole["recon"], whole["kl"])


def test_progress_that_cannot_be_saved_warns_once_and_the_pass_goes_on(trained, tmp_path):
    from pyro_dvae.iwae_bound import PartialScores, fingerprint

    vae, x = trained.vae, trained.data.test[:30]
    torch.manual_seed(6)
    whole = importance_weighted(vae.model, vae.guide, x, k=20, batch_size=7)
    blocker = tmp_path / "a file"
    blocker.write_text("")
    scores = PartialScores(blocker / "evaluation.partial.pt", {"k": 20})
    torch.manual_seed(6)
    with pytest.warns(UserWarning, match="without saving its progress") as caught:
        kept = importance_weighted(
            vae.model, vae.guide, x, k=20, batch_size=7, save=scores.saver("iwae"), save_every=0
        )
    assert len(caught) == 1  # five batches, one warning
    assert torch.equal(kept["log_likelihood"], whole["log_likelihood"])
    # the weights' hash tells apart a checkpoint whose weights differ only in a sign
    scalar = torch.nn.Module()
    scalar.register_parameter("t", torch.nn.Parameter(torch.tensor(0.5)))  # 0-dim, as a guide's
    first = fingerprint(scalar)
    with torch.no_grad():
        scalar.t.fill_(-0.5)
    assert fingerprint(scalar) != first
    before = fingerprint(vae)
    with torch.no_grad():
        vae.decoder.net[0].weight[0, 0].neg_()
    assert fingerprint(vae) != before
    with torch.no_grad():
        vae.decoder.net[0].weight[0, 0].neg_()
    assert fingerprint(vae) == before


def test_active_units_against_a_hand_made_case():
    n = 1000
    sign = torch.tensor([1.0, -1.0]).repeat(n // 2)  # ±1: sample variance n/(n-1)
    means = torch.stack(
        [
            torch.full((n,), 0.3),  # constant: inactive
            0.05 * sign,  # variance 0.0025: inactive
            0.099 * sign,  # variance 0.0098: inactive, just under 0.01
            0.101 * sign,  # variance 0.0102: active
            2.0 * sign,  # active
        ],
        1,
    )
    count, variances = active_units(means)
    assert count == 2
    assert variances[1] == pytest.approx(0.0025 * n / (n - 1))
    assert active_units(means, threshold=0.001)[0] == 4


def test_knn_accuracy_is_one_for_separated_codes_and_chance_for_noise():
    torch.manual_seed(0)
    labels = torch.arange(10).repeat(50)
    centres = 10.0 * torch.eye(10)
    codes = centres[labels] + 0.1 * torch.randn(500, 10)
    assert knn_accuracy(codes, labels, codes[:100] + 0.01, labels[:100]) == 1.0
    noise = torch.randn(500, 10)
    acc = knn_accuracy(noise[:400], labels[:400], noise[400:], labels[400:])
    assert acc < 0.3


@pytest.mark.parametrize(
    "cfg",
    [
        FitConfig(family="logitnormal", latent_dim=3),
        FitConfig(family="gaussian", latent_dim=3),
        FitConfig(family="concrete", latent_dim=2, categories=4),
    ],
    ids=["logitnormal", "gaussian", "concrete"],
)
def test_posterior_means_are_the_mean_decoder_input(cfg):
    torch.manual_seed(0)
    vae = VAE(make_family(cfg), input_dim=12, hidden=8).double()
    x = torch.bernoulli(torch.full((5, 12), 0.5, dtype=torch.float64))
    means = posterior_means(vae, x, num_samples=1000)
    assert means.shape == (5, vae.family.code_size)
    q = vae.encode(x)
    mc = vae.family.decoder_input(q.sample((200000,))).mean(0)
    # Gaussian and Logit-normal means are exact; Concrete's are 1000-draw Monte Carlo (SE ≲ 0.016)
    assert torch.allclose(means, mc, atol=0.01 if cfg.family != "concrete" else 0.06)
    if cfg.family == "concrete":  # every variable's mean lies on the simplex
        assert torch.allclose(means.reshape(5, 2, 4).sum(-1), torch.ones(5, 2, dtype=means.dtype))


# --------------------------------------------------------------------------- the command


@pytest.fixture
def _cli_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_evaluate_command_writes_evaluation_json(tmp_path, _cli_env):
    run = tmp_path / "run"
    run_ok(fit_args(run, family="gaussian"))
    args = ["evaluate", str(run), "--k", "20", "--no-progress", "--threads", "1", "--device", "cpu"]
    result = run_ok(args)
    ev = read_json(run / "evaluation.json")
    assert ev["k"] == 20 and ev["epoch"] == 2 and ev["test_images"] == 300
    assert ev["test_log_likelihood"] > -(ev["test_loss"])  # IWAE(k=20) above the ELBO
    assert ev["latent_units"] == 2 and 0 <= ev["active_units"] <= 2
    assert 0.0 <= ev["knn_accuracy"] <= 1.0
    assert ev["test_loss"] == pytest.approx(ev["test_recon"] + ev["test_kl"])
    assert "run" in result.stdout and f"{ev['test_log_likelihood']:.2f}" in result.stdout
    # where and with what it was scored, as a run's summary.json says of its training
    assert ev["device"] == "cpu" and ev["versions"]["torch"] == torch.__version__
    assert ev["versions"]["pyro"] == pyro.__version__
    # a second pass with --skip-done reads the file back instead of recomputing
    before = (run / "evaluation.json").read_bytes()
    again = run_ok(["evaluate", str(tmp_path), "--k", "20", "--skip-done", "--no-progress"])
    assert "up to date" in again.stderr
    assert (run / "evaluation.json").read_bytes() == before
    # a more thorough evaluation covers a lighter one (k = 5000 on all covers 1000 on 1000) ...
    lighter = ["evaluate", str(run), "--k", "5", "--images", "100", "--skip-done"]
    assert "up to date" in run_ok([*lighter, "--no-progress"]).stderr
    # ... and a lighter one never stands in for a more thorough one
    run_ok(["evaluate", str(run), "--k", "30", "--images", "100", "--skip-done", "--no-progress"])
    assert read_json(run / "evaluation.json")["k"] == 30
    # the loaded model is the checkpoint's
    assert load_run(run).epoch == 2
    assert "discrete" not in ev  # only relaxed families have a discrete model behind them


def test_evaluate_scores_the_discrete_model_behind_a_concrete_run(tmp_path, _cli_env):
    run = tmp_path / "run"
    run_ok(fit_args(run, family="concrete", latent_dim=3, categories=4))
    result = run_ok(["evaluate", str(run), "--k", "20", "--no-progress", "--threads", "1"])
    hard = read_json(run / "evaluation.json")["discrete"]
    assert "one-hot" in hard["family"]
    assert hard["test_log_likelihood"] > -hard["test_loss"]  # IWAE(k=20) above its ELBO
    assert hard["test_loss"] == pytest.approx(hard["test_recon"] + hard["test_kl"])
    assert 0.0 <= hard["test_kl"] <= 3 * math.log(4) + 1e-6  # KL to uniform ≤ log K per variable
    assert "hard codes" in result.stdout


def test_evaluate_shows_the_objective_a_relaxed_run_trained(tmp_path, _cli_env):
    """A binary Concrete run trains with the bits' analytic KL (Jang et al.), not the relaxed
    densities' Monte Carlo KL of the run's own row: the table shows that objective too."""
    run = tmp_path / "run"
    run_ok(fit_args(run, family="bernoulli", latent_dim=6, estimator="concrete"))
    result = run_ok(["evaluate", str(run), "--k", "5", "--no-progress", "--threads", "1"])
    ev = read_json(run / "evaluation.json")
    hard, trained = ev["discrete"], ev["discrete"]["relaxed_test_loss"]
    # the codes' KL is the hard codes' analytic KL to Bernoulli(1/2), the same q(b | x)
    assert trained == pytest.approx(ev["test_recon"] + hard["test_kl"])
    row = next(line for line in result.stdout.splitlines() if "as trained" in line)
    assert row.split()[2:5] == [f"{v:.2f}" for v in (trained, ev["test_recon"], hard["test_kl"])]
    assert "as trained: the test -ELBO of the objective the run minimised" in result.stdout


@pytest.mark.parametrize("discrete_k", [10, 7, None])
def test_a_run_trained_on_discrete_codes_is_scored_once(
    tmp_path, _cli_env, monkeypatch, discrete_k
):
    """A score-function Bernoulli run is its own discrete model: with the same k its discrete
    block is the first pass's numbers (one pass, not two); with another k, a second pass.
    Either way the block equals a pass of the discrete view scored on its own. Without
    --discrete-k it is the smaller of --k and 1000: a quick evaluation stays quick."""
    import pyro_dvae.evaluation as evaluation

    run = tmp_path / "run"
    run_ok(fit_args(run, family="bernoulli", latent_dim=3, estimator="reinforce"))
    passes = []
    real = evaluation.importance_weighted
    monkeypatch.setattr(
        evaluation,
        "importance_weighted",
        lambda *a, **kw: passes.append(kw["k"]) or real(*a, **kw),
    )
    asked = [] if discrete_k is None else ["--discrete-k", str(discrete_k)]
    run_ok(["evaluate", str(run), "--k", "10", *asked, "--no-progress"])
    discrete_k = discrete_k or 10
    assert passes == ([10] if discrete_k == 10 else [10, discrete_k])
    ev = read_json(run / "evaluation.json")
    loaded = load_run(run)
    view = loaded.vae.with_family(loaded.family.discrete())
    x = load_dataset("digits").test
    pyro.set_rng_seed(0)  # evaluate's seed
    alone = real(view.model, view.guide, x, k=discrete_k)
    block = ev["discrete"]
    assert block["test_log_likelihood"] == pytest.approx(float(alone["log_likelihood"].mean()))
    assert block["test_recon"] == pytest.approx(alone["recon"])
    if discrete_k == 10:
        assert block["test_log_likelihood"] == ev["test_log_likelihood"]


def test_a_stopped_evaluation_continues_where_it_stopped(tmp_path, _cli_env, monkeypatch):
    """Both IWAE passes of a Concrete run (relaxed, then one-hot) keep their progress."""
    import pyro_dvae.iwae_bound as iwae_bound

    run = tmp_path / "run"
    run_ok(fit_args(run, family="concrete", latent_dim=3, categories=4))
    evaluate = [
        "evaluate",
        str(run),
        "--k",
        "20",
        "--discrete-k",
        "20",
        "--no-progress",
        "--threads",
        "1",
    ]
    run_ok(evaluate)
    whole = read_json(run / "evaluation.json")
    (run / "evaluation.json").unlink()

    draws, calls = iwae_bound.sample_parts, []

    def stopped_in_the_second_pass(*args):  # 3 batches of 100 test images per pass
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return draws(*args)

    monkeypatch.setattr(iwae_bound, "sample_parts", stopped_in_the_second_pass)
    assert invoke(evaluate).exit_code != 0
    assert not (run / "evaluation.json").exists()
    assert (run / iwae_bound.PARTIAL).is_file()
    calls.clear()
    monkeypatch.setattr(iwae_bound, "sample_parts", lambda *a: (calls.append(1), draws(*a))[1])
    saved = torch.load(run / iwae_bound.PARTIAL, weights_only=True)
    saved["stages"]["iwae"]["seconds"] = 1000.0  # as if the first pass had taken that long
    torch.save(saved, run / iwae_bound.PARTIAL)
    again = run_ok(evaluate)
    assert len(calls) == 2  # only the one-hot pass's last two batches were drawn again
    assert (
        "continuing its stopped evaluation: 300 of 300 images in its iwae pass, "
        "100 of 300 images in its discrete pass" in again.stderr
    )
    resumed = read_json(run / "evaluation.json")
    assert not (run / iwae_bound.PARTIAL).exists()
    assert resumed["seconds"] > 1000.0  # the time before the stop counts
    for part in (resumed, resumed["discrete"]):
        part.pop("seconds", None)
    whole.pop("seconds")
    assert resumed == whole
    # another k does not take up progress saved for this one
    iwae_bound.PartialScores(run / iwae_bound.PARTIAL, {"k": 20}).saver("iwae")({"done": 300})
    run_ok([*evaluate[:2], "--k", "10", *evaluate[4:]])
    assert read_json(run / "evaluation.json")["k"] == 10


def test_progress_saved_with_other_chunking_is_not_taken_up(tmp_path, _cli_env, monkeypatch):
    """The draws of a chunk come from one random call: another split draws other numbers,
    so a pass saved under one split must not be continued under another."""
    import pyro_dvae.evaluation as evaluation
    import pyro_dvae.iwae_bound as iwae_bound

    run = tmp_path / "run"
    run_ok(fit_args(run, epochs=1))
    evaluate = [
        "evaluate",
        str(run),
        "--k",
        "40",
        "--discrete-k",
        "40",
        "--no-progress",
        "--threads",
        "1",
    ]
    draws, calls = iwae_bound.sample_parts, []

    def stopped_in_the_second_batch(*args):  # 2 chunks of 20 draws per batch of images
        calls.append(args[3])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return draws(*args)

    monkeypatch.setattr(evaluation, "chunk_rows", lambda device: 2000)
    monkeypatch.setattr(iwae_bound, "sample_parts", stopped_in_the_second_batch)
    assert invoke(evaluate).exit_code != 0
    assert calls == [20, 20, 20] and (run / iwae_bound.PARTIAL).is_file()
    calls.clear()
    monkeypatch.setattr(iwae_bound, "sample_parts", lambda *a: (calls.append(a[3]), draws(*a))[1])
    monkeypatch.setattr(evaluation, "chunk_rows", lambda device: 4000)  # 40 draws at once
    again = run_ok(evaluate)
    assert "continuing" not in again.stderr
    # every batch of the 300 test images drawn afresh, in both passes (the Logit-normal's
    # and its binary codes')
    assert calls == [40] * 6
    assert not (run / iwae_bound.PARTIAL).exists()


def test_a_long_pass_on_avx512_kernels_gets_one_tip(tmp_path, _cli_env, monkeypatch):
    import pyro_dvae.evaluation as evaluation
    from pyro_dvae.iwae_bound import kernel_tip

    cpu, long = torch.device("cpu"), 5000 * 10_000
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    tip = kernel_tip(cpu, long)
    assert "ATEN_CPU_CAPABILITY=avx2" in tip
    assert kernel_tip(cpu, 1000 * 1000) is None  # a short pass: no tip
    assert kernel_tip(torch.device("meta"), long) is None  # not a CPU
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert kernel_tip(cpu, long) is None
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert kernel_tip(cpu, long) is None  # already chosen
    # the command says it once, however many runs it scores, and only where it scores
    run = tmp_path / "run"
    run_ok(fit_args(run, epochs=1))
    draws = []
    monkeypatch.setattr(evaluation, "kernel_tip", lambda dev, n: draws.append(n) or tip)
    args = ["evaluate", str(run), str(run), "--k", "20", "--no-progress", "--threads", "1"]
    assert run_ok(args).stderr.count(tip) == 1
    assert draws == [20 * 300] * 2  # k × the test images, for each run
    assert tip not in run_ok([*args, "--skip-done"]).stderr  # nothing to score


@pytest.mark.parametrize(
    "args",
    [["--k", "0"], ["--images", "-1"], ["--neighbors", "0"]],
)
def test_evaluate_bad_options_are_one_error_line(tmp_path, _cli_env, args):
    run = tmp_path / "run"
    run_ok(fit_args(run, epochs=1))
    result = invoke(["evaluate", str(run), "--no-progress", *args])
    assert result.exit_code == 2
    assert_one_error_line(result)
    assert not (run / "evaluation.json").exists()


def test_evaluate_a_folder_without_runs_is_one_error_line(tmp_path, _cli_env):
    result = invoke(["evaluate", str(tmp_path)])
    assert result.exit_code != 0
    assert_one_error_line(result)
