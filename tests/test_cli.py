"""Tests of the ``pyro-dvae`` command line: run directories, resume, errors, NaN and Ctrl-C.

Every run uses scikit-learn's 8x8 digits (no download), a tiny network and a
few epochs on the CPU, so one CLI run takes well under a second or two.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import pyro_dvae.data
from pyro_dvae.cli import cli  # noqa: F401
from pyro_dvae.inference import SVI  # the step `pyro-dvae fit` runs

from .helpers import (
    assert_one_error_line,
    error_message,
    fit_args,
    invoke,
    load_checkpoint,
    read_json,
    read_metrics,
    run_ok,
    stderr_lines,
)

STEPS_PER_EPOCH = math.ceil(1497 / 50)  # digits: 1497 training images, batch size 50
MNIST_RAW = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
REAL_SVI_STEP = SVI.step


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (hidden temporaries included) with its bytes; an empty
    lock file (a writer's, released) is not part of a run's contents."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not (p.name == ".lock" and not p.read_bytes())
    }


def assert_models_close(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=atol, rtol=0), f"model entry {key} differs"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Nothing lands in the repository or the user's cache, whatever a test does."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYRO_DVAE_DATA", str(tmp_path / "default-data"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # `--resume` runs, which take no --threads, too
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 2-epoch logitnormal run; tests copy it before touching it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    threads = torch.get_num_threads()
    try:
        run_ok(fit_args(out, family="logitnormal"))
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(finished_run, dst)
    return dst


def step_hook(monkeypatch, on_call: int, action):
    """Wrap ``SVI.step``: call ``action(real_loss)`` on the ``on_call``-th step (1-based)."""
    real_step = REAL_SVI_STEP
    calls = {"n": 0}

    def step(self, *args, **kwargs):
        calls["n"] += 1
        loss = real_step(self, *args, **kwargs)
        return action(loss) if calls["n"] == on_call else loss

    monkeypatch.setattr(SVI, "step", step)
    return calls


# --------------------------------------------------------------------------- 1. run directory


@pytest.mark.parametrize(
    "family, extra",
    [
        ("gaussian", {}),
        ("logitnormal", {"alpha": "1.78"}),
        ("concrete", {"categories": "4"}),
    ],
)
def test_fit_writes_run_directory(tmp_path, family, extra):
    out = tmp_path / "run"
    result = run_ok(fit_args(out, family=family, epochs=3, eval_every=2, **extra))
    assert {p.name for p in out.iterdir()} == {
        "config.json",
        "metrics.jsonl",
        "checkpoint.pt",
        "summary.json",
        ".lock",
    }, "unexpected files (temporaries left behind?)"
    assert str(out) in result.stderr

    config = read_json(out / "config.json")
    assert config["family"] == family
    assert config["latent_dim"] == 2
    assert config["hidden"] == 32
    assert config["dataset"] == "digits"
    assert config["epochs"] == 3
    assert config["eval_every"] == 2
    if family == "logitnormal":
        assert config["alpha"] == pytest.approx(1.78)
    if family == "concrete":
        assert config["categories"] == 4

    metrics = read_metrics(out)
    assert [r["epoch"] for r in metrics] == [1, 2, 3]
    for r in metrics:
        for key in ("train_loss", "train_recon", "train_kl", "seconds"):
            assert isinstance(r[key], float) and math.isfinite(r[key]), (key, r)
        assert r["train_recon"] > 0 and r["seconds"] >= 0
        assert r["train_loss"] == pytest.approx(r["train_recon"] + r["train_kl"], rel=1e-6)
    # evaluation every 2nd epoch and after the last
    assert [("test_loss" in r) for r in metrics] == [False, True, True]
    for r in metrics[1:]:
        assert {"test_loss", "test_recon", "test_kl"} <= r.keys()
        assert r["test_loss"] == pytest.approx(r["test_recon"] + r["test_kl"], rel=1e-6)
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"], "training did not lower the loss"

    ckpt = load_checkpoint(out)
    assert ckpt["epoch"] == 3
    assert ckpt["step"] == 3 * STEPS_PER_EPOCH
    assert ckpt["config"] == config
    assert ckpt["model"] and all(torch.is_tensor(v) for v in ckpt["model"].values())
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert ckpt["optim"]["step_count"] == 3 * STEPS_PER_EPOCH
    assert ckpt["optim"]["optimizer"]["state"], "optimiser moments missing"
    assert torch.is_tensor(ckpt["rng_torch"]) and ckpt["rng_torch"].dtype == torch.uint8
    assert torch.is_tensor(ckpt["rng_data"])
    if family == "concrete":
        # the encoder emits latent_dim x categories logits
        head = [
            v for k, v in ckpt["model"].items() if k.startswith("encoder") and k.endswith("weight")
        ][-1]
        assert head.shape[0] == 2 * 4

    summary = read_json(out / "summary.json")
    assert summary["status"] == "finished"
    assert summary["epochs_completed"] == 3 == summary["epochs_planned"]
    assert summary["steps"] == 3 * STEPS_PER_EPOCH
    assert summary["device"] == "cpu"
    assert summary["final_test"] == {k: v for k, v in metrics[-1].items() if k.startswith("test_")}
    assert summary["family"].startswith(family)


# --------------------------------------------------------------------------- 2. resume


def test_auto_is_the_environments_device_and_a_missing_one_is_one_error_line(tmp_path, monkeypatch):
    from pyro_dvae.devices import resolve_device

    assert resolve_device("auto") == torch.device("cpu")  # the suite's PYRO_DVAE_DEVICE=cpu
    monkeypatch.delenv("PYRO_DVAE_DEVICE")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("PYRO_DVAE_DEVICE", "gpu")
    result = invoke(fit_args(tmp_path / "run", device=None))
    assert result.exit_code != 0
    assert_one_error_line(result)
    assert "PYRO_DVAE_DEVICE=gpu: give auto, cpu, cuda" in error_message(result)
    assert not (tmp_path / "run").exists()
    assert resolve_device("cpu") == torch.device("cpu")  # --device outranks the environment


def test_a_checkpoint_of_another_kind_of_device_continues_on_new_streams(tmp_path):
    """A CPU generator's state does not load into a CUDA one (nor back): the resumed run says
    so and draws from streams seeded by its seed and epoch, the same on every such resume."""
    run_ok(fit_args(tmp_path / "cpu", family="logitnormal", epochs=1))
    ckpt = load_checkpoint(tmp_path / "cpu")
    assert ckpt["device"] == "cpu"
    ckpt.update(device="cuda", rng_cuda=torch.zeros(16, dtype=torch.uint8))
    ckpt["rng_data"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state: 16 bytes
    for name, state in (("a", ckpt), ("b", {k: v for k, v in ckpt.items() if k != "device"})):
        shutil.copytree(tmp_path / "cpu", tmp_path / name)  # b: a checkpoint of before "device"
        torch.save(state, tmp_path / name / "checkpoint.pt")
    losses = {}
    for name in ("cpu", "a", "b"):
        result = run_ok(["fit", "--no-progress", "--resume", str(tmp_path / name), "--epochs", "2"])
        moved = "trained on cuda and continues on cpu" in result.stderr
        assert moved == (name != "cpu"), result.stderr
        assert read_json(tmp_path / name / "summary.json")["epochs_completed"] == 2
        losses[name] = read_metrics(tmp_path / name)[1]["train_loss"]
    assert losses["a"] == losses["b"]  # the new streams are the seed's and epoch's
    assert losses["a"] != losses["cpu"]  # and not the checkpoint's own
    assert losses["a"] == pytest.approx(losses["cpu"], rel=0.05)  # the same model goes on


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cpu_run_continues_on_cuda_and_back(tmp_path):
    run = tmp_path / "run"
    run_ok(fit_args(run, family="concrete", latent_dim=2, categories=3, epochs=1))
    for epochs, device, moved in ((2, "cuda", "on cpu and continues on cuda"), (3, "cpu", None)):
        args = ["fit", "--no-progress", "--resume", str(run), "--epochs", str(epochs)]
        result = run_ok([*args, "--device", device])
        assert (moved or "on cuda and continues on cpu") in result.stderr
        assert read_json(run / "summary.json")["epochs_completed"] == epochs
    assert all(math.isfinite(r["train_loss"]) for r in read_metrics(run))


def test_a_group_of_checkpoints_of_another_kind_of_device_says_so_once(tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for run, alpha in zip(runs, (0.32, 1.78), strict=True):
        run_ok(fit_args(run, family="logitnormal", alpha=alpha, epochs=1))
        ckpt = load_checkpoint(run)
        ckpt.update(device="cuda", rng_data=torch.zeros(16, dtype=torch.uint8))
        torch.save(ckpt, run / "checkpoint.pt")
    args = ["fit", "--no-progress", "--resume", str(runs[0]), "--resume", str(runs[1])]
    result = run_ok([*args, "--epochs", "2"])
    assert result.stderr.count("trained on cuda and continues on cpu") == 1
    assert [read_json(r / "summary.json")["epochs_completed"] for r in runs] == [2, 2]


def test_resume_matches_uninterrupted_run(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_ok(fit_args(a, family="logitnormal", epochs=4))
    run_ok(fit_args(b, family="logitnormal", epochs=2))
    assert load_checkpoint(b)["epoch"] == 2

    result = run_ok(
        ["fit", "--no-progress", "--resume", str(b), "--epochs", "4", "--eval-every", "2"]
    )
    assert "resuming" in result.stderr

    ckpt_a, ckpt_b = load_checkpoint(a), load_checkpoint(b)
    assert ckpt_b["epoch"] == 4 and ckpt_b["step"] == ckpt_a["step"]
    assert_models_close(ckpt_a["model"], ckpt_b["model"])
    assert ckpt_b["optim"]["step_count"] == ckpt_a["optim"]["step_count"]

    metrics_a, metrics_b = read_metrics(a), read_metrics(b)
    assert [r["epoch"] for r in metrics_b] == [1, 2, 3, 4]
    for ra, rb in zip(metrics_a, metrics_b, strict=True):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-5, abs=1e-5)
        assert rb["train_recon"] == pytest.approx(ra["train_recon"], rel=1e-5, abs=1e-5)
    # --eval-every 2 applies from the resume on: epoch 3 not evaluated, epoch 4 is
    assert "test_loss" not in metrics_b[2] and "test_loss" in metrics_b[3]
    assert metrics_b[3]["test_loss"] == pytest.approx(metrics_a[3]["test_loss"], rel=1e-5)

    config_b = read_json(b / "config.json")
    assert config_b["epochs"] == 4 and config_b["eval_every"] == 2
    summary = read_json(b / "summary.json")
    assert summary["status"] == "finished" and summary["epochs_completed"] == 4


@pytest.mark.parametrize("extra", [[], ["--epochs", "2"]], ids=["no-epochs", "same-epochs"])
def test_resume_finished_run_changes_nothing(run_copy, extra):
    before = snapshot(run_copy)
    result = run_ok(["fit", "--no-progress", "--resume", str(run_copy), *extra])
    after = snapshot(run_copy)
    assert after.keys() == before.keys(), "files were added or removed"
    assert after["checkpoint.pt"] == before["checkpoint.pt"]
    assert read_metrics(run_copy) == [
        json.loads(x) for x in before["metrics.jsonl"].decode().splitlines()
    ]
    summary = read_json(run_copy / "summary.json")
    assert summary["status"] == "finished" and summary["epochs_completed"] == 2
    assert "done: 2 epochs" in result.stderr


def test_resume_with_fewer_epochs_than_done_keeps_run_consistent(run_copy):
    """--epochs below the epochs already trained must not leave config.json claiming fewer."""
    before = snapshot(run_copy)
    result = invoke(["fit", "--no-progress", "--resume", str(run_copy), "--epochs", "1"])
    assert load_checkpoint(run_copy)["epoch"] == 2
    assert read_json(run_copy / "config.json")["epochs"] >= 2, (
        "config.json now says 1 epoch for a run with 2 done"
    )
    if result.exit_code != 0:  # refusing is fine too, if it names the option and changes nothing
        assert result.exit_code == 2 and "--epochs" in error_message(result)
        assert snapshot(run_copy) == before


def test_run_files_share_one_permission_mode(finished_run):
    """config.json, summary.json and checkpoint.pt are as readable as metrics.jsonl."""
    modes = {p.name: p.stat().st_mode & 0o777 for p in finished_run.iterdir()}
    assert len(set(modes.values())) == 1, (
        f"file modes differ: { {k: oct(v) for k, v in modes.items()} }"
    )


# --------------------------------------------------------------------------- 3. bad options


BAD_OPTIONS = [
    ({"family": "weibull"}, "--family"),
    ({"alpha": "0"}, "--alpha"),
    ({"alpha": "-1"}, "--alpha"),
    ({"latent_dim": "0"}, "--latent-dim"),
    ({"family": "concrete", "categories": "1"}, "--categories"),
    ({"family": "concrete", "temperature": "0"}, "--temperature must"),
    ({"family": "concrete", "prior_temperature": "-1"}, "--prior-temperature"),
    ({"family": "concrete", "min_temperature": "0"}, "--min-temperature"),
    ({"dataset": "cifar"}, "--dataset"),
    ({"epochs": "0"}, "--epochs"),
    ({"lr": "nan"}, "--lr"),
    ({"family": "gaussian", "alpha": "1.0"}, "--alpha applies to"),  # even at its default
    ({"family": "concrete", "temperature": "0.1", "anneal_rate": "1e-3"}, "below --min-temp"),
    ({"device": "gpu"}, "--device gpu"),
    ({"subset": "100000"}, "--subset 100000 is more than"),
]


@pytest.mark.parametrize(
    "options, names",
    [pytest.param(o, n, id=",".join(f"{k}={v}" for k, v in o.items())) for o, n in BAD_OPTIONS],
)
def test_bad_option_is_one_error_line_and_writes_nothing(tmp_path, options, names):
    out = tmp_path / "run"
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke(fit_args(out, **options))
    assert result.exit_code == 2, result.output
    assert names in error_message(result)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert_one_error_line(result)


def test_out_existing_non_empty_directory_is_refused(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("someone else's work\n")
    (out / "sub").mkdir()
    (out / "sub" / "data.bin").write_bytes(b"\x00\x01\x02")
    before = snapshot(out)

    result = invoke(fit_args(out))
    assert result.exit_code == 2, result.output
    msg = error_message(result)
    assert str(out) in msg and "not empty" in msg and "--resume" in msg
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "sub"]
    assert_one_error_line(result)


def test_out_existing_file_is_refused(tmp_path):
    out = tmp_path / "a-file"
    out.write_text("not a folder\n")
    result = invoke(fit_args(out))
    assert result.exit_code == 2, result.output
    assert str(out) in error_message(result)
    assert out.read_text() == "not a folder\n"


def test_resume_and_out_together_are_refused(run_copy, tmp_path):
    result = invoke(["fit", "--resume", str(run_copy), "--out", str(tmp_path / "other")])
    assert result.exit_code == 2
    assert "--resume" in error_message(result) and "--out" in error_message(result)
    assert not (tmp_path / "other").exists()
    assert_one_error_line(result)


# --------------------------------------------------------------------------- 4./5. data


def _no_network(monkeypatch, error: BaseException | None = None) -> list:
    calls = []

    def download(cls, root):  # as torchvision does: folders and a partial archive, then fails
        calls.append(Path(root))
        raw = Path(root) / cls.__name__ / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b partial")
        raise error or OSError("network unreachable")

    monkeypatch.setattr(pyro_dvae.data, "_download", download)
    return calls


@pytest.mark.parametrize("before", ["empty folder", "no folder", "one raw file"])
def test_missing_data_without_network(tmp_path, monkeypatch, before):
    calls = _no_network(monkeypatch)
    data_dir = tmp_path / "data"
    kept = data_dir / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    if before != "no folder":
        data_dir.mkdir()
    if before == "one raw file":
        kept.parent.mkdir(parents=True)
        kept.write_bytes(b"the user's")
    out = tmp_path / "run"

    result = invoke(fit_args(out, dataset="mnist", data_dir=data_dir))
    assert result.exit_code == 1, result.output
    assert [c.parent for c in calls] == [data_dir / "MNIST"], "the download was not attempted"
    msg = error_message(result)
    assert "network unreachable" in msg
    assert "--dataset digits" in msg and "--data-dir" in msg
    assert str(data_dir / "MNIST" / "raw") in msg
    missing = [n for n in MNIST_RAW if before != "one raw file" or n != kept.name]
    assert f"(missing {', '.join(missing)})" in msg  # the files to copy there, by name
    assert not out.exists()
    # the failed download leaves nothing behind, and takes nothing that was there
    if before == "one raw file":
        assert [p for p in data_dir.rglob("*") if p.is_file()] == [kept]
        assert kept.read_bytes() == b"the user's"
    else:
        assert data_dir.exists() == (before == "empty folder")
        assert not data_dir.exists() or list(data_dir.iterdir()) == []
    assert_one_error_line(result)


def test_a_failed_download_says_why_in_the_same_line(tmp_path, monkeypatch):
    """torchvision's error is lines: a heading ending in ':', then each mirror's failure.
    The one error line keeps the heading and the last failure (the cause), not the bare
    heading alone."""
    text = (
        "Error downloading train-images-idx3-ubyte.gz:\n"
        "Tried https://mirror-a/mnist/, got:\n<urlopen error [Errno -2] Name unknown>\n"
        "Tried http://mirror-b/mnist/, got:\n<urlopen error [Errno -3] Temporary failure>\n"
    )
    _no_network(monkeypatch, RuntimeError(text))
    result = invoke(fit_args(tmp_path / "run", dataset="mnist", data_dir=tmp_path / "data"))
    assert result.exit_code == 1
    assert_one_error_line(result)
    heading = "Error downloading train-images-idx3-ubyte.gz:"
    assert f"({heading} <urlopen error [Errno -3] Temporary failure>)" in error_message(result)


def test_a_data_dir_that_is_a_file_is_one_error_line_and_stays(tmp_path, monkeypatch):
    _no_network(monkeypatch)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    result = invoke(fit_args(tmp_path / "run", dataset="mnist", data_dir=notes))
    assert result.exit_code == 1
    assert_one_error_line(result)
    assert notes.read_text() == "mine\n"


def test_an_interrupted_download_leaves_nothing_behind(tmp_path, monkeypatch):
    from pyro_dvae.data import load_dataset

    _no_network(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        load_dataset("mnist", tmp_path / "data")
    assert list(tmp_path.iterdir()) == []


def test_a_download_lands_in_the_raw_folder_and_repairs_a_damaged_file(tmp_path, monkeypatch):
    from pyro_dvae.data import load_dataset

    from .conftest import mnist_root

    if mnist_root() is None:
        pytest.skip("needs the MNIST raw files to stand in for the download")
    source = mnist_root() / "MNIST" / "raw"

    def download(cls, root):  # the network, played by the shared raw files
        raw = Path(root) / cls.__name__ / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for name in MNIST_RAW:
            shutil.copyfile(source / name, raw / name)

    monkeypatch.setattr(pyro_dvae.data, "_download", download)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / MNIST_RAW[0]).write_bytes(b"damaged")  # beside three missing files
    data = load_dataset("mnist", tmp_path)
    assert data.train.shape == (60000, 784) and data.test.shape == (10000, 784)
    assert sorted(p.name for p in raw.iterdir()) == sorted(MNIST_RAW)
    assert (raw / MNIST_RAW[0]).read_bytes() == (source / MNIST_RAW[0]).read_bytes()
    assert [p.name for p in (tmp_path / "MNIST").iterdir()] == ["raw"]  # no staging left


@pytest.mark.parametrize(
    "content",
    [
        b"this is not an idx file, just garbage\x00\xff" * 20,
        b"",
        # a valid idx3 header (10 images of 28x28) followed by far too few pixels
        bytes([0, 0, 8, 3, 0, 0, 0, 10, 0, 0, 0, 28, 0, 0, 0, 28]) + b"\x00" * 100,
    ],
    ids=["garbage", "empty", "truncated"],
)
def test_corrupt_data_files(tmp_path, monkeypatch, content):
    _no_network(monkeypatch)
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_RAW:
        (raw / name).write_bytes(content)
    out = tmp_path / "run"

    result = invoke(fit_args(out, dataset="mnist", data_dir=tmp_path / "data"))
    assert result.exit_code == 1, result.output
    msg = error_message(result)
    assert str(raw) in msg
    # the files are there: the message must say they cannot be read, not that they are missing
    assert "cannot read" in msg or "damaged" in msg, msg
    assert "could not be downloaded" not in msg, msg
    assert not out.exists()
    assert all((raw / name).read_bytes() == content for name in MNIST_RAW)
    assert_one_error_line(result)


# --------------------------------------------------------------------------- 6. resume errors


@pytest.mark.parametrize(
    "option, value, flag",
    [
        ("--alpha", "2.5", "--alpha"),
        ("--family", "gaussian", "--family"),
        ("--latent-dim", "3", "--latent-dim"),
        ("--lr", "0.01", "--lr"),
    ],
)
def test_resume_with_other_configuration_is_refused(run_copy, option, value, flag):
    before = snapshot(run_copy)
    result = invoke(
        ["fit", "--no-progress", "--resume", str(run_copy), option, value, "--epochs", "4"]
    )
    assert result.exit_code == 2, result.output
    msg = error_message(result)
    assert flag in msg and value in msg
    assert snapshot(run_copy) == before, "the run directory was changed"
    assert_one_error_line(result)


def test_resume_with_stored_value_given_again_is_allowed(run_copy):
    """Repeating an option with the value the run was trained with is not a clash."""
    run_ok(
        [
            "fit",
            "--no-progress",
            "--resume",
            str(run_copy),
            "--family",
            "logitnormal",
            "--alpha",
            "1.0",
            "--hidden",
            "32",
            "--epochs",
            "3",
        ]
    )
    assert read_json(run_copy / "summary.json")["epochs_completed"] == 3
    assert [r["epoch"] for r in read_metrics(run_copy)] == [1, 2, 3]


@pytest.mark.parametrize("kind", ["missing", "empty", "not-json"])
def test_resume_of_a_folder_that_is_not_a_run(tmp_path, run_copy, kind):
    target = tmp_path / "target"
    if kind != "missing":
        target.mkdir()
    if kind == "not-json":
        (target / "config.json").write_text("{not json")
        shutil.copy(run_copy / "checkpoint.pt", target / "checkpoint.pt")
    before = snapshot(target) if target.exists() else None

    result = invoke(["fit", "--no-progress", "--resume", str(target), "--epochs", "3"])
    assert result.exit_code == 2, result.output
    msg = error_message(result)
    assert str(target) in msg
    assert "run directory" in msg or "config" in msg
    if before is None:
        assert not target.exists()
    else:
        assert snapshot(target) == before
    assert_one_error_line(result)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x80\x02garbage, not a checkpoint" * 50)


def _model_not_a_dict(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    torch.save({**state, "model": 5}, path)


def _rng_of_wrong_type(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    torch.save({**state, "rng_torch": torch.zeros(3)}, path)


def _missing_entries(path: Path) -> None:
    torch.save({"epoch": 2}, path)


@pytest.mark.parametrize(
    "damage",
    [_truncate, _garbage, _missing_entries, _model_not_a_dict, _rng_of_wrong_type],
    ids=lambda f: f.__name__.strip("_"),
)
@pytest.mark.parametrize(
    "extra", [[], ["--epochs", "4", "--eval-every", "2"]], ids=["plain", "eval-every"]
)
def test_resume_of_damaged_checkpoint(run_copy, damage, extra):
    damage(run_copy / "checkpoint.pt")
    before = snapshot(run_copy)

    result = invoke(["fit", "--no-progress", "--resume", str(run_copy), *extra])
    assert result.exit_code != 0, result.output
    msg = error_message(result)
    assert "checkpoint" in msg and str(run_copy) in msg
    if damage in (_truncate, _garbage, _missing_entries):
        assert "damaged" in msg, msg
    after = snapshot(run_copy)
    assert after.keys() == before.keys(), "files were added or removed"
    assert after["checkpoint.pt"] == before["checkpoint.pt"], "the damaged checkpoint was replaced"
    assert after["metrics.jsonl"] == before["metrics.jsonl"]
    assert after["config.json"] == before["config.json"], "config.json changed though resume failed"
    assert after == before
    assert_one_error_line(result)


# --------------------------------------------------------------------------- 7. NaN


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    nan_step = STEPS_PER_EPOCH + 5  # during epoch 2
    calls = step_hook(monkeypatch, nan_step, lambda loss: float("nan"))

    result = invoke(fit_args(out, epochs=3))
    assert calls["n"] == nan_step, "training went on after the NaN"
    assert result.exit_code == 1, result.output
    msg = error_message(result)
    assert "loss" in msg and "nan" in msg.lower()
    assert "epoch 2" in msg and "epoch 1" in msg

    summary = read_json(out / "summary.json")
    assert summary["status"] == "failed"
    assert summary["epochs_completed"] == 1
    ckpt = load_checkpoint(out)
    assert ckpt["epoch"] == 1 and ckpt["step"] == STEPS_PER_EPOCH
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert [r["epoch"] for r in read_metrics(out)] == [1]
    assert {p.name for p in out.iterdir()} == {  # a failed fit removes the .lock it made
        "config.json",
        "metrics.jsonl",
        "checkpoint.pt",
        "summary.json",
    }

    # the kept checkpoint is a good place to go on from
    monkeypatch.setattr(SVI, "step", REAL_SVI_STEP)
    run_ok(["fit", "--no-progress", "--resume", str(out), "--epochs", "2"])
    assert read_json(out / "summary.json")["status"] == "finished"
    assert [r["epoch"] for r in read_metrics(out)] == [1, 2]


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_real_nan_from_huge_learning_rate(tmp_path):
    out = tmp_path / "run"
    result = invoke(fit_args(out, family="gaussian", lr="1e30", clip_norm="1e30"))
    assert result.exit_code == 1, result.output
    msg = error_message(result)
    assert "loss" in msg and ("nan" in msg.lower() or "inf" in msg.lower())
    summary = read_json(out / "summary.json")
    assert summary["status"] == "failed" and summary["epochs_completed"] == 0
    ckpt = load_checkpoint(out)  # the resumable start, not the blown-up model
    assert ckpt["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert read_metrics(out) == []


# --------------------------------------------------------------------------- 8. Ctrl-C


def test_ctrl_c_keeps_checkpoint_and_resumes_to_same_result(tmp_path, monkeypatch):
    out, ref = tmp_path / "run", tmp_path / "ref"
    run_ok(fit_args(ref, epochs=3))

    def interrupt(loss):
        raise KeyboardInterrupt

    step_hook(monkeypatch, STEPS_PER_EPOCH + 7, interrupt)
    result = invoke(fit_args(out, epochs=3))
    assert result.exit_code == 130, result.output
    assert f"--resume {out}" in result.stderr
    assert "Traceback" not in result.output

    summary = read_json(out / "summary.json")
    assert summary["status"] == "interrupted" and summary["epochs_completed"] == 1
    ckpt = load_checkpoint(out)
    assert ckpt["epoch"] == 1 and ckpt["step"] == STEPS_PER_EPOCH
    assert [r["epoch"] for r in read_metrics(out)] == [1]
    assert {p.name for p in out.iterdir()} == {  # a stopped fit removes the .lock it made
        "config.json",
        "metrics.jsonl",
        "checkpoint.pt",
        "summary.json",
    }, "temporaries left behind"

    monkeypatch.setattr(SVI, "step", REAL_SVI_STEP)
    run_ok(["fit", "--no-progress", "--resume", str(out), "--epochs", "3"])
    summary = read_json(out / "summary.json")
    assert summary["status"] == "finished" and summary["epochs_completed"] == 3
    assert [r["epoch"] for r in read_metrics(out)] == [1, 2, 3]
    # the interrupted-then-resumed run ends where the uninterrupted one does
    assert_models_close(load_checkpoint(ref)["model"], load_checkpoint(out)["model"])
    for r_ref, r_out in zip(read_metrics(ref), read_metrics(out), strict=True):
        assert r_out["train_loss"] == pytest.approx(r_ref["train_loss"], rel=1e-5, abs=1e-5)


def test_ctrl_c_during_the_epoch_end_evaluation_counts_only_saved_epochs(tmp_path, monkeypatch):
    """An interrupt after an epoch's steps but before its files land: that epoch does not count."""
    from pyro_dvae.train import Trainer

    real_evaluate, calls = Trainer.evaluate, []

    def evaluate(self, x=None):
        calls.append(1)
        if len(calls) == 2:  # the test evaluation at the end of epoch 2
            raise KeyboardInterrupt
        return real_evaluate(self, x)

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    out = tmp_path / "run"
    result = invoke(fit_args(out, epochs=3))
    assert result.exit_code == 130, result.output
    summary = read_json(out / "summary.json")
    assert summary["status"] == "interrupted"
    # the summary, the checkpoint and the metrics agree: one epoch saved
    assert summary["epochs_completed"] == load_checkpoint(out)["epoch"] == 1
    assert [r["epoch"] for r in read_metrics(out)] == [1]


# --------------------------------------------------------------------------- 9. help


def test_fit_help():
    result = run_ok(["fit", "--help"])
    for option in ("--family", "--alpha", "--resume", "--out", "--epochs", "--dataset"):
        assert option in result.stdout
    assert "logitnormal" in result.stdout


def test_no_command_shows_usage_not_an_error():
    result = invoke([])
    assert "Usage:" in result.output
    assert not any(line.startswith("Error: Usage") for line in result.output.splitlines()), (
        "the help text is printed as an error:\n" + result.output
    )


def test_unknown_option_is_one_line():
    result = invoke(["fit", "--no-such-option", "1"])
    assert result.exit_code == 2
    assert "--no-such-option" in error_message(result)
    assert_one_error_line(result)


# --------------------------------------------------------------------------- 10. analytic KL


@pytest.mark.parametrize(
    "family, elbo, kind",
    [
        ("concrete", "analytic", "monte-carlo"),
        ("logitnormal", "analytic", "analytic"),
        ("gaussian", "analytic", "analytic"),
        ("logitnormal", "trace", "monte-carlo"),
        ("beta", "analytic", "analytic"),  # torch registers the Beta-Beta KL
    ],
)
def test_kl_kind_and_fallback_note(tmp_path, family, elbo, kind):
    out = tmp_path / "run"
    own = {"categories": 4} if family == "concrete" else {}
    result = run_ok(fit_args(out, family=family, elbo=elbo, **own))
    summary = read_json(out / "summary.json")
    assert summary["kl"] == {"z": kind}
    assert summary["elbo"] == elbo
    notes = [line for line in stderr_lines(result) if line.startswith("note:")]
    if elbo == "analytic" and kind == "monte-carlo":
        assert len(notes) == 1
        assert "'z'" in notes[0] and "Monte Carlo" in notes[0] and "concrete" in notes[0]
    else:
        assert notes == []


def test_the_digits_read_without_scikit_learn_are_its_load_digits():
    """The digits file read directly (no scikit-learn import) holds what ``load_digits``
    returns: the same pixels and labels, in the same order."""
    from sklearn.datasets import load_digits

    from pyro_dvae.data import digits_arrays

    pixels, labels = digits_arrays()
    bunch = load_digits()
    assert pixels.shape == (1797, 64) and pixels.dtype == bunch.data.dtype
    assert (pixels == bunch.data).all() and (labels == bunch.target).all()
