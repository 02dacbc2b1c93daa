"""The callback seam: a user callback sees every event of a run, a resumed run and a group
member, in order, with the numbers the run folder holds."""

from __future__ import annotations

import json
import math
import signal

import pytest

import pyro_dvae as pd
from pyro_dvae.callbacks import CallbackList
from pyro_dvae.train import TrainingInterrupted

SMALL = dict(dataset="digits", hidden=16, latent_dim=2, epochs=3, subset=200, batch_size=50)
STEPS_PER_EPOCH = 4  # 200 images, batch 50


class Recorder(pd.Callback):
    """Every event it is told of, as (event, member, detail)."""

    def __init__(self, every_n_steps: int = 1):
        self.every_n_steps = every_n_steps
        self.events: list[tuple] = []

    def _who(self, trainer) -> str:
        return trainer.run_dir.path.name if trainer.run_dir is not None else "-"

    def on_fit_start(self, trainer):
        self.events.append(("start", self._who(trainer), trainer.epoch))

    def on_step(self, trainer, loss):
        self.events.append(("step", self._who(trainer), trainer.step, loss))

    def on_evaluation(self, trainer, metrics):
        self.events.append(("evaluation", self._who(trainer), dict(metrics)))

    def on_checkpoint(self, trainer, path):
        self.events.append(("checkpoint", self._who(trainer), trainer.epoch, path.name))

    def on_epoch_end(self, trainer, record):
        self.events.append(("epoch", self._who(trainer), dict(record)))

    def on_fit_end(self, trainer, status, summary):
        self.events.append(("end", self._who(trainer), status, dict(summary)))

    def of(self, kind: str, who: str | None = None) -> list[tuple]:
        return [e for e in self.events if e[0] == kind and (who is None or e[1] == who)]


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def _config(**changes) -> pd.FitConfig:
    return pd.FitConfig(**{**SMALL, **changes})


def test_a_callback_sees_every_event_of_a_run_in_order(tmp_path):
    rec = Recorder(every_n_steps=3)
    out = tmp_path / "run"
    summary = pd.fit(_config(eval_every=2), out, device="cpu", progress=False, callbacks=[rec])
    kinds = [e[0] for e in rec.events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("end") == 1
    # steps 3, 6, 9, 12 of 12; each after the step it names, before its epoch ends
    assert [e[2] for e in rec.of("step")] == [3, 6, 9, 12]
    assert all(math.isfinite(e[3]) for e in rec.of("step"))
    # evaluated at epochs 2 and 3 (every 2nd and the last), each before its epoch's checkpoint
    assert [e[2] for e in rec.of("checkpoint")] == [1, 2, 3]
    evaluated = [e[2] for e in rec.of("evaluation")]
    rows = _rows(out)
    assert evaluated == [
        {k[len("test_") :]: v for k, v in r.items() if k.startswith("test_")} for r in rows[1:]
    ]
    # the order within an epoch: evaluation, checkpoint, epoch end
    for epoch in (2, 3):
        i = next(i for i, e in enumerate(rec.events) if e[0] == "epoch" and e[2]["epoch"] == epoch)
        assert [e[0] for e in rec.events[i - 2 : i + 1]] == ["evaluation", "checkpoint", "epoch"]
    assert [e[2] for e in rec.of("epoch")] == rows  # the rows of metrics.jsonl, as written
    end = rec.of("end")[0]
    assert end[2] == "finished" and end[3] == summary
    assert summary == json.loads((out / "summary.json").read_text())


def test_a_resumed_run_tells_its_callbacks_where_it_goes_on(tmp_path):
    out = tmp_path / "run"
    pd.fit(_config(epochs=1), out, device="cpu", progress=False)
    rec = Recorder(every_n_steps=STEPS_PER_EPOCH)
    pd.resume(out, device="cpu", progress=False, epochs=3, callbacks=[rec])
    assert rec.of("start") == [("start", "run", 1)]
    assert [e[2] for e in rec.of("step")] == [8, 12]  # the global step goes on
    assert [e[2]["epoch"] for e in rec.of("epoch")] == [2, 3]
    assert [e[2] for e in rec.of("epoch")] == _rows(out)[1:]
    assert rec.of("end")[0][2] == "finished"


def test_each_group_member_tells_the_callbacks_its_own_events(tmp_path):
    paths = []
    for seed in (0, 1):
        path = tmp_path / f"seed{seed}"
        pd.fit(_config(epochs=1, seed=seed), path, device="cpu", progress=False)
        paths.append(path)
    rec = Recorder(every_n_steps=2)
    pd.resume_group(paths, device="cpu", progress=False, epochs=2, callbacks=[rec])
    for path in paths:
        name = path.name
        assert rec.of("start", name) == [("start", name, 1)]
        assert [e[2] for e in rec.of("step", name)] == [6, 8]
        assert [e[2] for e in rec.of("epoch", name)] == _rows(path)[1:]
        assert [e[2] for e in rec.of("checkpoint", name)] == [2]
        end = rec.of("end", name)
        assert len(end) == 1 and end[0][2] == "finished"
        assert end[0][3] == json.loads((path / "summary.json").read_text())
    # each member's step loss is its own
    a, b = (rec.of("step", p.name) for p in paths)
    assert [e[3] for e in a] != [e[3] for e in b]


def test_a_stop_signal_is_told_as_interrupted_with_the_signal(tmp_path):
    class StopAfterFirstEpoch(Recorder):
        def on_epoch_end(self, trainer, record):
            super().on_epoch_end(trainer, record)
            if record["epoch"] == 1:
                signal.raise_signal(signal.SIGTERM)

    rec = StopAfterFirstEpoch()
    with pytest.raises(TrainingInterrupted):
        pd.fit(_config(), tmp_path / "run", device="cpu", progress=False, callbacks=[rec])
    (end,) = rec.of("end")
    assert end[2] == "interrupted" and end[3]["stopped_by"] == "SIGTERM"
    assert end[3]["epochs_completed"] == 1  # the epoch counted before the signal was raised


def test_a_stop_signal_whose_handler_runs_in_a_finalizer_still_stops_the_run(tmp_path, monkeypatch):
    """Python runs a signal's handler wherever the main thread is, in a weakref callback or a
    ``__del__`` too (torch's compiler makes many), and drops what it raises there. The run
    stops at its next step all the same (before, the signal was lost: the run trained on,
    and a stopped sweep's run was killed at the end of the grace, its summary 'running')."""
    import weakref

    class Thing:
        pass

    class SignalInAFinalizer(Recorder):
        def on_step(self, trainer, loss):
            super().on_step(trainer, loss)
            if trainer.step == 2:
                thing = Thing()
                ref = weakref.ref(thing, lambda _: signal.raise_signal(signal.SIGTERM))
                del thing  # the callback runs here, and the handler's Stopped is dropped
                assert ref() is None

    rec = SignalInAFinalizer()
    with pytest.raises(TrainingInterrupted):
        pd.fit(_config(), tmp_path / "run", device="cpu", progress=False, callbacks=[rec])
    assert [e[2] for e in rec.of("step")] == [1, 2]  # no step after the signal's
    (end,) = rec.of("end")
    assert end[2] == "interrupted" and end[3]["stopped_by"] == "SIGTERM"


def test_an_error_is_told_as_failed_with_its_reason(tmp_path):
    class Fails(Recorder):
        def on_step(self, trainer, loss):
            super().on_step(trainer, loss)
            if trainer.step == 5:
                raise RuntimeError("the logger lost its connection")

    rec = Fails()
    with pytest.raises(RuntimeError, match="lost its connection"):
        pd.fit(_config(), tmp_path / "run", device="cpu", progress=False, callbacks=[rec])
    (end,) = rec.of("end")
    assert end[2] == "failed" and end[3]["error"] == "the logger lost its connection"
    assert end[3]["epochs_completed"] == 1
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["status"] == "failed" and written["error"] == end[3]["error"]


def test_every_callback_hears_of_the_end_even_when_one_fails():
    told = []

    class Loud(pd.Callback):
        def on_fit_end(self, trainer, status, summary):
            told.append("loud")
            raise ValueError("first")

    class Quiet(pd.Callback):
        def on_fit_end(self, trainer, status, summary):
            told.append("quiet")

    with pytest.raises(ValueError, match="first"):
        CallbackList([Loud(), Quiet()]).fit_end(None, "finished", {})
    assert told == ["loud", "quiet"]


def test_a_callback_must_be_a_callback():
    with pytest.raises(TypeError, match="pyro_dvae.Callback"):
        CallbackList([print])
