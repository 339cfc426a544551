"""Training loop, checkpoints/resume, model file and config (tiny SchNet on EMT copper)."""

from __future__ import annotations

import json
import os
import shutil
import warnings

import jax
import numpy as np
import pytest

from mlpjax import data, load
from mlpjax.files import CorruptFileError
from mlpjax.config import TrainConfig, config_from_dict, dump_config, load_config, override
from mlpjax.training import load_checkpoint, potential_from_checkpoint, prepare_potential, train
from mlpjax.validate import predict_dataset

TINY = dict(features=8, interactions=1, num_rbf=8, filter_hidden=8)


def _cu_configs(n=24, seed=0):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        reps = [(2, 1, 1), (2, 2, 1), (2, 2, 2)][i % 3]  # 8, 16, 32 atoms
        atoms = bulk("Cu", "fcc", a=3.61 * (1.0 + 0.015 * rng.standard_normal()), cubic=True).repeat(reps)
        atoms.rattle(0.03 + 0.07 * rng.random(), seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        c = data.Configuration.from_atoms(atoms, source="emt-cu", frame=i)
        c.energy = float(atoms.get_potential_energy())
        c.forces = np.array(atoms.get_forces())
        c.stress = np.array(atoms.get_stress(voigt=False))
        out.append(c)
    return out


@pytest.fixture(scope="module")
def cu():
    return _cu_configs()


def _config(**kw):
    base = dict(
        model_config=TINY, cutoff=4.0, batch_size=4, epochs=6, learning_rate=5e-3, schedule="constant",
        ema_decay=0.5, valid_fraction=0.15, test_fraction=0.1, patience=None,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def trained(cu, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = train(_config(), cu, output_dir=out, progress=False)
    return result, out


# ------------------------------------------------------------------ training
def test_training_reduces_validation_loss_with_stress(trained):
    result, out = trained
    hist = result.history
    assert [h["epoch"] for h in hist] == list(range(1, 7))
    losses = [h["valid_loss"] for h in hist]
    assert all(np.isfinite(losses))
    assert min(losses[1:]) < losses[0]
    assert losses[-1] < losses[0]
    # the stress term was active (periodic data with stress labels)
    assert all(np.isfinite(h["valid_stress_mae_meV_per_A3"]) for h in hist)
    assert result.stop_reason == "epochs" and result.epochs_completed == 6
    for name in ("model.mlpjax", "checkpoint.ckpt", "checkpoint.prev.ckpt", "log.csv", "log.json", "config.yaml", "parity.png"):
        assert os.path.getsize(out / name) > 0, name
    lines = (out / "log.csv").read_text().strip().splitlines()
    assert lines[0].startswith("epoch,time_s") and len(lines) == 7
    assert len(json.loads((out / "log.json").read_text())) == 6
    assert set(result.test_metrics) >= {"energy_mae_meV_per_atom", "force_mae_meV_per_A", "stress_mae_meV_per_A3"}


def test_model_file_round_trip(trained, cu):
    result, out = trained
    pot = load(out / "model.mlpjax")
    a = predict_dataset(result.potential, cu[:5])
    b = predict_dataset(pot, cu[:5])
    for k in ("energy", "forces", "stress"):
        np.testing.assert_array_equal(a[k], b[k])
    md = pot.metadata
    assert md["units"] == "eV" and md["internal_units"]["energy"] == "eV"
    split = md["split"]
    assert split["seed"] == 0 and split["n"] == 24
    assert sorted(split["train"] + split["valid"] + split["test"]) == list(range(24))
    assert md["data_files"]["train"] == ["emt-cu"]
    assert md["train_config"]["model_config"] == TINY
    assert md["test_metrics"]["n_structures"] == len(split["test"])
    assert md["species"] == [29]
    # the best EMA parameters of the run are what was saved
    best = result.best_epoch
    assert md["best_epoch"] == best
    assert np.isclose(min(h["valid_loss"] for h in result.history), result.history[best - 1]["valid_loss"])


def test_prepare_potential_normalisation(cu):
    cfg = _config()
    pot = prepare_potential(cfg, cu)
    refs = data.fit_reference_energies(cu, (29,))
    stats = data.statistics(cu, refs)
    f = np.concatenate([c.forces for c in cu])
    assert pot.species == (29,)
    assert np.isclose(pot.reference_energies[0], refs[29])
    assert np.isclose(pot.energy_scale, np.sqrt(np.mean(f**2)))
    assert np.isclose(pot.energy_shift, stats.energy_per_atom_mean)
    from mlpjax.graph.neighbors import neighbor_list

    edges = sum(len(neighbor_list(c.positions, c.cell, c.pbc, 4.0).senders) for c in cu)
    assert np.isclose(pot.avg_num_neighbors, edges / sum(c.n_atoms for c in cu))
    assert pot.params is not None


# ------------------------------------------------------------------ resume
class _Kill(RuntimeError):
    pass


def _params_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def killed_and_resumed(cu, tmp_path_factory):
    cfg = _config(epochs=4)
    full = train(cfg, cu, output_dir=tmp_path_factory.mktemp("full"), progress=False)
    out = tmp_path_factory.mktemp("killed")

    def kill_at_2(info):
        if info["event"] == "epoch" and info["epoch"] == 2:
            raise _Kill("simulated kill")

    with pytest.raises(_Kill):
        train(cfg, cu, output_dir=out, progress=False, callbacks=[kill_at_2])
    killed_copy = tmp_path_factory.mktemp("killed_copy")
    shutil.copytree(out, killed_copy, dirs_exist_ok=True)
    ck = load_checkpoint(out / "checkpoint.ckpt")
    seen = {}

    def on_resume(info):
        if info["event"] == "resume":
            seen["epoch"] = info["epoch"]
            seen["state"] = info["state"]

    resumed = train(cfg, cu, output_dir=out, progress=False, resume=True, callbacks=[on_resume])
    return full, ck, seen, resumed, killed_copy


def test_resume_continues_exactly(killed_and_resumed):
    full, ck, seen, resumed, _ = killed_and_resumed
    assert ck["epoch"] == 2
    assert seen["epoch"] == 2 and resumed.start_epoch == 3
    # the state at resume is the checkpointed one
    assert _params_equal(seen["state"].params, ck["state"]["params"])
    assert _params_equal(seen["state"].ema_params, ck["state"]["ema_params"])
    assert int(seen["state"].step) == int(ck["state"]["step"])
    # no gaps, no duplicates, and the same trajectory as the uninterrupted run
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    for h_full, h_res in zip(full.history, resumed.history):
        assert np.isclose(h_full["valid_loss"], h_res["valid_loss"], rtol=1e-5)
    np.testing.assert_allclose(
        np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(full.state.params)]),
        np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(resumed.state.params)]),
        rtol=1e-5,
        atol=1e-7,
    )


def test_truncated_checkpoint_falls_back_to_prev(killed_and_resumed, tmp_path):
    *_, killed = killed_and_resumed
    shutil.copytree(killed, tmp_path, dirs_exist_ok=True)
    killed = tmp_path
    path = killed / "checkpoint.ckpt"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.warns(UserWarning, match="falling back"):
        ck = load_checkpoint(path)
    assert ck["epoch"] == 1 and ck["path"].endswith("checkpoint.prev.ckpt")
    prev = killed / "checkpoint.prev.ckpt"
    prev_raw = prev.read_bytes()
    prev.write_bytes(prev_raw[:100])
    with pytest.raises(CorruptFileError, match="truncated or corrupted"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_checkpoint(path)
    os.remove(prev)
    with pytest.raises(CorruptFileError, match="checkpoint.ckpt"):
        load_checkpoint(path)


def test_resume_from_corrupt_latest_uses_prev(killed_and_resumed, cu, tmp_path):
    *_, killed = killed_and_resumed
    shutil.copytree(killed, tmp_path, dirs_exist_ok=True)
    raw = (tmp_path / "checkpoint.ckpt").read_bytes()
    (tmp_path / "checkpoint.ckpt").write_bytes(raw[:-10])
    with pytest.warns(UserWarning, match="falling back"):
        res = train(_config(epochs=2), cu, output_dir=tmp_path, progress=False, resume=True)
    assert res.start_epoch == 2 and [h["epoch"] for h in res.history] == [1, 2]
    assert (tmp_path / "checkpoint.corrupt.ckpt").exists()
    assert potential_from_checkpoint(tmp_path / "checkpoint.ckpt").params is not None


def test_resume_without_checkpoint_starts_fresh(cu, tmp_path):
    with pytest.warns(UserWarning, match="no checkpoint"):
        res = train(_config(epochs=1), cu, output_dir=tmp_path, progress=False, resume=True)
    assert res.start_epoch == 1 and res.epochs_completed == 1


def test_resume_with_changed_architecture_is_refused(killed_and_resumed, cu, tmp_path):
    *_, killed = killed_and_resumed
    shutil.copytree(killed, tmp_path, dirs_exist_ok=True)
    with pytest.raises(ValueError, match="cutoff"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(_config(epochs=4, cutoff=3.5), cu, output_dir=tmp_path, progress=False, resume=True)


# ------------------------------------------------------------------ stopping
def test_early_stopping_and_time_limit(cu, tmp_path):
    # a learning rate far below float32 resolution: the validation loss cannot improve after epoch 1
    res = train(_config(epochs=20, patience=2, learning_rate=1e-30), cu, output_dir=tmp_path / "es", progress=False)
    assert res.stop_reason == "early_stopping" and res.epochs_completed == 3 and res.best_epoch == 1
    res = train(_config(epochs=50, max_time_minutes=1e-6), cu, output_dir=tmp_path / "mt", progress=False)
    assert res.stop_reason == "max_time" and res.epochs_completed < 50
    assert os.path.exists(res.paths["model"])


# ------------------------------------------------------------------ config
def test_config_yaml_round_trip(tmp_path):
    cfg = TrainConfig(model_config={"features": 16}, cutoff=4.5, epochs=3, max_time_minutes=30.0, schedule="plateau",
                      optimizer="adamw", weight_decay=1e-4, clip_grad_norm=None, patience=None, dtype="float64")
    dump_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    (tmp_path / "d.yaml").write_text("epochs: 7\nlearning_rate: 1e-3\nmodel_config:\n  features: 32\n")
    d = load_config(tmp_path / "d.yaml")
    assert d.epochs == 7 and d.learning_rate == 1e-3 and d.model_config == {"features": 32}
    assert d.cutoff == TrainConfig().cutoff


def test_config_unknown_keys(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("epochs: 3\nlearning_rat: 0.01\n")
    with pytest.raises(ValueError, match=r"learning_rat.*bad\.yaml"):
        load_config(p)
    p.write_text("model_config: {featurez: 3}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*featurez"):
        load_config(p)
    with pytest.raises(ValueError, match="optimizer"):
        config_from_dict({"optimizer": "sgd"})


def test_override():
    cfg = TrainConfig(model_config={"features": 16, "interactions": 2})
    new = override(cfg, epochs=5, learning_rate=None, model_config={"features": 32}, max_time_minutes=10)
    assert new.epochs == 5 and new.learning_rate == cfg.learning_rate and new.max_time_minutes == 10.0
    assert new.model_config == {"features": 32, "interactions": 2}
    assert override(cfg) == cfg
    with pytest.raises(ValueError, match="epoch"):
        override(cfg, epoch=3)
