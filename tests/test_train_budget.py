"""The training time budget holds inside an epoch, and a cut epoch resumes where it stopped.

An expensive model is imitated by a training step that sleeps: the step's compiled
code is the real one (tiny SchNet), so the time limit, the evaluation after the stop,
the checkpoint and the model file are exercised as in a real run, in a few seconds.
"""

import time

import jax
import numpy as np
import pytest

import mlpjax
import mlpjax.training.loop as train_mod
from mlpjax.config import TrainConfig
from mlpjax.training import load_checkpoint, train

from conftest import emt_cu_frames

TINY = {"features": 8, "interactions": 1, "num_rbf": 8, "filter_hidden": 8}
STEP_DELAY_S = 0.25  # s added to every training step: 48 steps per epoch ≈ 12 s


@pytest.fixture(scope="module")
def cu(tmp_path_factory):
    """54 EMT Cu structures (conftest.emt_cu_frames): 49 training steps per epoch at batch size 1."""
    from ase.io import write

    from mlpjax import data

    path = tmp_path_factory.mktemp("cu") / "cu.xyz"
    write(path, emt_cu_frames(36, 18))
    return data.read(path)


def _config(**kw):
    base = dict(model="schnet", model_config=TINY, cutoff=4.0, batch_size=1, epochs=2, learning_rate=3e-3,
                warmup_epochs=1, valid_fraction=0.1, seed=3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def whole(cu, tmp_path_factory):
    """One uninterrupted run; it also compiles the step that the other tests reuse (same architecture,
    schedule and data), so their time limits measure training, not compilation."""
    return train(_config(), cu, output_dir=tmp_path_factory.mktemp("whole"), progress=False)


@pytest.fixture
def slow_steps(monkeypatch):
    """Training steps that take STEP_DELAY_S longer (the model's compiled step is unchanged)."""
    original = train_mod.make_step_fns

    def make(*args, **kwargs):
        fns = original(*args, **kwargs)

        def step(state, batch):
            time.sleep(STEP_DELAY_S)
            return fns.train_step(state, batch)

        return fns._replace(train_step=step)

    monkeypatch.setattr(train_mod, "make_step_fns", make)


def test_time_limit_stops_inside_the_first_epoch_and_writes_the_model(cu, whole, tmp_path, slow_steps, capsys):
    limit_min = 0.1  # 6 s, while one epoch takes ≥ 48 × 0.25 s = 12 s
    t0 = time.monotonic()
    with pytest.warns(UserWarning, match="will not fit the remaining time budget"):
        res = train(_config(max_time_minutes=limit_min), cu, output_dir=tmp_path, progress=True)
    wall = time.monotonic() - t0
    out = capsys.readouterr()
    assert res.stop_reason == "max_time"
    assert res.epochs_completed == 0 and 0.0 < res.partial_epoch_fraction < 1.0
    assert 1 <= res.steps < 49
    assert res.step_time_s is not None and res.step_time_s >= STEP_DELAY_S
    assert wall < 60 * limit_min + 5.0, wall  # the budget holds up to the final evaluation and file writing
    assert "time per step" in out.out + out.err and "into epoch 1" in out.out + out.err
    pot = mlpjax.load(tmp_path / "model.mlpjax")
    assert pot.metadata["stop_reason"] == "max_time"
    rec = res.history[-1]
    assert rec["epoch"] == 1 and rec["epoch_fraction"] < 1 and np.isfinite(rec["valid_force_mae_meV_per_A"])
    ck = load_checkpoint(tmp_path / "checkpoint.ckpt")
    assert int(ck["epoch"]) == 0 and int(ck["epoch_step"]) == res.steps


def test_cut_epoch_resumes_where_it_stopped(cu, whole, tmp_path, monkeypatch):
    """Cut after 7 steps of epoch 1, then resume: the same parameters as one uninterrupted run."""
    cfg = _config()

    original = train_mod._StepClock.over_budget
    calls = {"n": 0}

    def cut_after_seven(self):
        if self.deadline is None:
            return original(self)
        calls["n"] += 1
        return calls["n"] > 8  # checks: one before the epoch, then one before each step

    monkeypatch.setattr(train_mod._StepClock, "over_budget", cut_after_seven)
    first = train(cfg.replace(max_time_minutes=10.0), cu, output_dir=tmp_path / "cut", progress=False)
    assert first.stop_reason == "max_time" and first.steps == 7 and first.epochs_completed == 0
    monkeypatch.setattr(train_mod._StepClock, "over_budget", original)
    resumed = train(cfg, cu, output_dir=tmp_path / "cut", resume=True, progress=False)
    assert resumed.stop_reason == "epochs" and resumed.epochs_completed == 2 and resumed.steps == whole.steps
    for a, b in zip(jax.tree_util.tree_leaves(whole.state.params), jax.tree_util.tree_leaves(resumed.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [r["epoch"] for r in resumed.history] == [1, 2]  # the cut epoch's record was replaced


def test_learning_rate_is_shown_with_three_digits(cu, tmp_path, capsys):
    """Warm-up learning rates are readable in the progress bar (not '0' as with two significant digits)."""
    train(_config(epochs=1, warmup_epochs=1), cu[:12], output_dir=tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "lr=" in err
    shown = [s.split("lr=")[1][:8] for s in err.split("\r") if "lr=" in s]
    assert any(float(v.rstrip("]").rstrip(",")) > 0 for v in shown), shown
    assert all("e-" in v for v in shown), shown
