"""The compiled step (``--compile``): torch.compile of a captured loss graph, no TorchScript.

Most tests compile on the ``aot_eager`` backend (conftest): the captured ATen graph and
its AOTAutograd backward, which is where a family or a guide can go wrong; one test
compiles with Inductor itself, as a run does.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyro_dvae.compiled_elbo import AUTO_COMPILE_STEPS, BACKEND_VARIABLE, compile_pays
from pyro_dvae.config import FitConfig
from pyro_dvae.data import load_dataset
from pyro_dvae.loss_graph import LossGraph
from pyro_dvae.train import COMPILE_NOTE, Trainer

from .helpers import fit_args, load_checkpoint, read_json, run_ok

PACKAGE = Path(__file__).resolve().parents[1] / "pyro_dvae"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _trainer(digits, **options) -> Trainer:
    config = FitConfig(dataset="digits", hidden=16, latent_dim=2, **options)
    return Trainer(config, digits, "cpu", progress=False, log=lambda msg: None)


def test_the_package_uses_no_torchscript_and_silences_no_deprecation():
    """Public torch APIs only: no torch.jit, no torch._C, no deprecation warning hidden."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for pattern in (r"torch\.jit\b", r"torch\._C\b", r"simplefilter\(\s*\"ignore\"", "Deprec"):
            found += [f"{path.name}: {pattern}" for _ in re.finditer(pattern, text)]
    assert found == []


#: one process's eager and compiled step of a small VAE: losses, gradients' largest
#: difference, graphs compiled (as JSON)
_STEP_PROBE = """
import json, pyro, torch
from pyro_dvae.config import FitConfig
from pyro_dvae.families import make_family
from pyro_dvae.inference import make_elbo
from pyro_dvae.vae import VAE
torch.manual_seed(0)
vae = VAE(make_family(FitConfig(family="logitnormal", latent_dim=5)), input_dim=72, hidden=40)
out = {}
for compile in (False, True):
    elbo = make_elbo("trace", compile=compile)
    pyro.set_rng_seed(1)
    x = torch.bernoulli(torch.full((20, 72), 0.4))
    out[compile] = elbo.loss_and_grads(vae.model, vae.guide, x), [p.grad for p in vae.parameters()]
    vae.zero_grad(set_to_none=True)
diff = max(((a - b).abs().max() / a.abs().max()).item() for a, b in zip(out[0][1], out[1][1]))
print(json.dumps({"eager": out[0][0], "compiled": out[1][0], "grads": diff, "graphs": elbo.graphs}))
"""


@pytest.mark.slow
def test_inductor_steps_as_the_eager_step_under_each_aten_isa(tmp_path):
    """The real backend: generated kernels give the eager loss and gradients to rounding.

    Inductor writes its C++ for the ISA ``ATEN_CPU_CAPABILITY`` names, so two processes that
    share one compile cache, with and without ``ATEN_CPU_CAPABILITY=avx2``, must each get
    their own graph: on an AVX-512 machine, a 16-wide graph reused 8-wide made the loss NaN
    (and 8-wide reused 16-wide wrote past its buffers)."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path), BACKEND_VARIABLE: "inductor"}
    env.pop("ATEN_CPU_CAPABILITY", None)
    wide = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    for capability in (None, "avx2") if wide else (None,):  # the first fills the cache
        if capability:
            env["ATEN_CPU_CAPABILITY"] = capability
        out = subprocess.run(
            [sys.executable, "-c", _STEP_PROBE], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr[-2000:]
        step = json.loads(out.stdout.splitlines()[-1])
        assert step["compiled"] == pytest.approx(step["eager"], rel=1e-5), capability
        assert step["grads"] < 1e-4 and step["graphs"] == 1, capability


def test_the_noise_is_drawn_eagerly_in_the_order_of_the_loss():
    """A captured loss takes its draws as inputs: draw_noise repeats the calls, so the
    graph sees what the function would have drawn from the same state."""

    def fn(x):
        a = torch.empty(x.shape).normal_()
        b = torch.rand(3)
        return (x * a).sum() + b.sum()

    x = torch.randn(4)
    graph = LossGraph(fn, (x,))
    assert [d.func for d in graph.draws] == [torch.Tensor.normal_, torch.rand]
    torch.manual_seed(5)
    expected = fn(x)
    torch.manual_seed(5)
    assert torch.equal(graph(x), expected)


@pytest.mark.parametrize(
    "objective",
    [{}, {"elbo": "iwae", "num_particles": 3, "gradient": "dreg"}],
    ids=["trace", "iwae-dreg"],
)
def test_an_epoch_compiles_one_graph_and_never_recompiles(digits, objective):
    """The first batch's shape is compiled; the smaller last batch and the test pass step
    eagerly, so the second epoch compiles nothing (Dynamo would raise on a recompile)."""
    # batches of 50, 50 and 20 images
    t = _trainer(digits, epochs=2, batch_size=50, subset=120, compile="on", **objective)
    t.begin()
    t.train_epoch()
    assert t.elbo.graphs == 1
    torch.compiler.set_stance("fail_on_recompile")
    try:
        t.train_epoch()
        t.evaluate()
    finally:
        torch.compiler.set_stance("default")
    assert t.elbo.graphs == 1 and t.elbo.compile


def test_auto_compiles_a_run_long_enough_to_repay_it(digits):
    assert not compile_pays("auto", AUTO_COMPILE_STEPS - 1)
    assert compile_pays("auto", AUTO_COMPILE_STEPS) and compile_pays("on", 1)
    assert not compile_pays("off", 10**9)
    steps = _trainer(digits).steps_per_epoch()
    long = _trainer(digits, epochs=math.ceil(AUTO_COMPILE_STEPS / steps), compile="auto")
    long.begin()
    short = _trainer(digits, epochs=2, compile="auto")
    short.begin()
    assert long.elbo.compile and not short.elbo.compile


@pytest.mark.slow
def test_a_failing_compile_falls_back_with_one_warning_line(tmp_path, monkeypatch):
    """A backend that fails (no C++ compiler, say): one warning line, the eager step, and
    the same run as --compile off (the failed attempt drew from no one's stream)."""
    monkeypatch.setenv("PYRO_DVAE_COMPILE_BACKEND", "no-such-backend")
    args = fit_args(tmp_path / "on", compile="on")
    result = subprocess.run(
        [sys.executable, "-m", "pyro_dvae", *args], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "warn" in line.lower()]
    assert len(warned) == 1 and warned[0].startswith("warning: the ELBO could not be compiled")
    assert "no-such-backend" in warned[0] and "Traceback" not in result.stderr
    run_ok(fit_args(tmp_path / "off", compile="off"))
    on, off = load_checkpoint(tmp_path / "on"), load_checkpoint(tmp_path / "off")
    assert all(torch.equal(v, off["model"][k]) for k, v in on["model"].items())
    assert read_json(tmp_path / "on" / "summary.json")["compiled"] is False


@pytest.mark.slow
@pytest.mark.parametrize(
    "objective",
    [{}, {"elbo": "iwae", "num_particles": 3, "gradient": "dreg"}],
    ids=["trace", "iwae"],
)
def test_a_compiled_run_resumes_bit_for_bit(tmp_path, objective):
    result = run_ok(fit_args(tmp_path / "straight", compile="on", epochs=3, **objective))
    assert result.output.count(COMPILE_NOTE) == 1  # said once, before the pause it explains
    assert read_json(tmp_path / "straight" / "summary.json")["compile_seconds"] > 0
    run_ok(fit_args(tmp_path / "stopped", compile="on", epochs=1, **objective))
    run_ok(["fit", "--no-progress", "--resume", str(tmp_path / "stopped"), "--epochs", "3"])
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "stopped")
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    assert read_json(tmp_path / "stopped" / "summary.json")["compiled"] is True


@pytest.mark.parametrize("jit, mode", [(True, "auto"), (False, "off")])
def test_a_run_folder_written_with_jit_loads_and_resumes(tmp_path, jit, mode):
    out = tmp_path / "run"
    run_ok(fit_args(out, epochs=1))
    config = read_json(out / "config.json")
    del config["compile"]
    config["jit"] = jit  # as pyro-dvae wrote it before --compile
    (out / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert FitConfig.load(out / "config.json").compile == mode
    run_ok(["fit", "--no-progress", "--resume", str(out), "--epochs", "2"])
    assert read_json(out / "summary.json")["epochs_completed"] == 2


@pytest.mark.slow
def test_compile_is_an_option_of_fit_and_sweep():
    for command in ("fit", "sweep"):
        out = subprocess.run(
            [sys.executable, "-m", "pyro_dvae", command, "--help"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "--compile [auto|off|on]" in out and "--jit" not in out
