"""Bringing your own guide: the two example guides, the full-covariance KL, bad guides."""

from __future__ import annotations

import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import pyro_dvae as pd
from pyro_dvae.distributions import LogitNormal, MultivariateLogitNormal
from pyro_dvae.errors import RunDirError
from pyro_dvae.evaluation import load_run
from pyro_dvae.guides import GuideError
from pyro_dvae.inference import kl_kinds
from pyro_dvae.rundir import RunDir

from .helpers import assert_one_error_line, fit_args, invoke, load_checkpoint, read_json, run_ok

GUIDES = Path(__file__).resolve().parents[1] / "scripts" / "guides"


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "script,kl", [("full_covariance.py", "analytic"), ("flow.py", "monte-carlo")]
)
def test_example_guides_train_on_digits_and_resume(tmp_path, script, kl):
    out = tmp_path / "run"
    spec = f"{GUIDES / script}:make_guide"
    args = fit_args(out, family="logitnormal", alpha=1.78, latent_dim=3, hidden=32, epochs=4)
    run_ok([*args, "--guide", spec, "--elbo", "analytic", "--compile", "on"])
    metrics = [r["train_loss"] for r in pd.RunDir(out).read_metrics()]
    assert metrics[-1] < metrics[0]
    summary = read_json(out / "summary.json")
    assert summary["kl"] == {"z": kl}
    assert summary["compiled"] is True  # both example guides run on the compiled step
    ckpt = load_checkpoint(out)  # weights_only=True
    assert any(k.startswith("guide_module.") for k in ckpt["model"])
    assert not any(k.startswith("encoder.") for k in ckpt["model"])
    assert read_json(out / "config.json")["guide"] == spec
    assert read_json(out / "summary.json")["guide"] == spec
    # resume rebuilds the guide when the command names it (a run folder imports nothing)
    run_ok(["fit", "--resume", str(out), "--epochs", "5", "--no-progress", "--guide", spec])
    assert read_json(out / "summary.json")["epochs_completed"] == 5
    # and evaluation reads the guide's posterior
    loaded = load_run(out, guide=spec)
    q = loaded.vae.encode(torch.rand(4, 64).bernoulli())
    assert q.event_shape == (3,) and q.batch_shape == (4,)


def test_full_covariance_kl_is_analytic_and_matches_monte_carlo():
    torch.manual_seed(0)
    d = 3
    loc = torch.randn(2, d, dtype=torch.float64)
    a = torch.randn(2, d, d, dtype=torch.float64)
    tril = torch.linalg.cholesky(a @ a.transpose(-1, -2) + 0.5 * torch.eye(d, dtype=torch.float64))
    q = MultivariateLogitNormal(loc, tril)
    p = LogitNormal(torch.zeros(2, d, dtype=torch.float64), torch.full((2, d), 1.78**0.5).double())
    p = p.to_event(1)
    kl = pyro.distributions.kl.kl_divergence(q, p)
    z = q.sample((200_000,))
    log_ratio = q.log_prob(z) - p.log_prob(z)
    se = log_ratio.std(0) / math.sqrt(z.shape[0])
    assert (abs(log_ratio.mean(0) - kl) < 4 * se).all()
    # the KL of the base Normals, as torch computes it for two MultivariateNormals
    prior = torch.distributions.MultivariateNormal(
        p.base_dist.loc, scale_tril=torch.diag_embed(p.base_dist.scale)
    )
    expected_kl = torch.distributions.kl_divergence(q.base_dist, prior)
    assert torch.allclose(kl, expected_kl, rtol=1e-12, atol=1e-12)
    # its density: the MultivariateNormal's at logit z, divided by Π z (1 − z)
    y = torch.logit(z[:5])
    base = torch.distributions.MultivariateNormal(loc, scale_tril=tril)
    expected = base.log_prob(y) - (z[:5].log() + (-z[:5]).log1p()).sum(-1)
    assert torch.allclose(q.log_prob(z[:5]), expected, atol=1e-8)


class _NoRsample(LogitNormal):
    has_rsample = False


def _bad_guide(kind: str):
    class Guide(nn.Module):
        def __init__(self, input_dim: int, d: int):
            super().__init__()
            self.net = nn.Linear(input_dim, 2 * d)

        def forward(self, x):
            loc, log_scale = self.net(x).chunk(2, -1)
            scale = log_scale.exp()
            with pyro.plate("data", x.shape[0]):
                if kind == "name":
                    pyro.sample("w", LogitNormal(loc, scale).to_event(1))
                elif kind == "support":
                    pyro.sample("z", dist.Normal(loc, scale).to_event(1))
                elif kind == "rsample":
                    pyro.sample("z", _NoRsample(loc, scale).to_event(1))
                elif kind == "event":
                    pyro.sample("z", LogitNormal(loc, scale))

    return Guide


@pytest.mark.parametrize(
    "kind,message",
    [
        ("name", "has no sample site 'z'"),
        ("support", "outside the prior's support"),
        ("rsample", "has no rsample"),
        ("event", r"Shape mismatch .* \.to_event\(1\)"),
    ],
)
def test_bad_guides_fail_before_training_with_a_message(tmp_path, kind, message):
    cfg = pd.FitConfig(family="logitnormal", latent_dim=3, dataset="digits", hidden=8, epochs=1)
    guide = _bad_guide(kind)(64, 3)
    with pytest.raises(GuideError, match=message):
        pd.fit(cfg, out=tmp_path / "run", guide=guide, progress=False)
    assert not (tmp_path / "run").exists()


def test_bad_guide_from_the_command_line_is_one_error_line(tmp_path):
    module = tmp_path / "my_guides.py"
    module.write_text(
        "import pyro, pyro.distributions as dist, torch\n"
        "from torch import nn\n"
        "class G(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.w = nn.Parameter(torch.zeros(3))\n"
        "    def forward(self, x):\n"
        "        with pyro.plate('data', x.shape[0]):\n"
        "            q = dist.Normal(self.w, 1.0).expand([x.shape[0], 3])\n"
        "            pyro.sample('z', q.to_event(1))\n"
        "def make(family, input_dim, hidden):\n"
        "    return G()\n"
    )
    args = fit_args(tmp_path / "run", family="logitnormal", latent_dim=3)
    result = invoke([*args, "--guide", f"{module}:make"])
    assert result.exit_code == 2
    assert_one_error_line(result)
    assert "support" in result.stderr
    assert not (tmp_path / "run").exists()
    for spec, words in [
        ("no_such_module:make", "cannot import"),
        (f"{module}:nope", "no callable"),
    ]:
        result = invoke([*args, "--guide", spec])
        assert result.exit_code == 2 and words in result.stderr
        assert_one_error_line(result)


def test_python_api_guide_object(tmp_path):
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("fc_guide", GUIDES / "full_covariance.py")
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = pd.FitConfig(family="logitnormal", latent_dim=2, dataset="digits", hidden=16, epochs=2)
    family = pd.make_family(cfg)
    guide = module.make_guide(family, 64, 16)
    pd.fit(cfg, out=tmp_path / "run", guide=guide, progress=False, log=lambda m: None)
    with pytest.raises(RunDirError, match="guide given in Python"):
        load_run(tmp_path / "run")
    resumed = invoke(["fit", "--resume", str(tmp_path / "run"), "--epochs", "3"])
    assert resumed.exit_code != 0 and "pass the same guide to pd.resume" in resumed.stderr
    assert_one_error_line(resumed)
    assert RunDir(tmp_path / "run").checkpoint_epoch() == 2  # nothing was trained or written
    loaded = load_run(tmp_path / "run", guide=module.make_guide(family, 64, 16))
    assert torch.equal(loaded.vae.guide_module.net.net[0].weight, guide.net.net[0].weight.detach())
    vae = loaded.vae
    assert kl_kinds(vae.model, vae.guide, torch.rand(2, 64).bernoulli()) == {"z": "analytic"}
