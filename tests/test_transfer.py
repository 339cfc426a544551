"""Transfer learning (issue 15): ``init_from`` starts from a trained model's exact parameters with its
species table, E0 re-fitted on the new data, frozen parameter paths stay bit for bit, and the errors
for new elements and for a config that changes the architecture (tiny SchNet on EMT Cu/Ag)."""

from __future__ import annotations


import jax
import numpy as np
import pytest

from mlpjax import data, load
from mlpjax.cli import main
from mlpjax.config import ConfigError, TrainConfig
from mlpjax.training import (
    file_sha256,
    parameter_paths,
    refit_reference_energies,
    resolve_init_from,
    train,
)
from mlpjax.validate import predict_dataset

TINY = dict(features=8, interactions=1, num_rbf=8, filter_hidden=8)
CU, AG, AU = 29, 47, 79


def _emt_configs(n, symbols, seed, *, tag="emt"):
    """``n`` fcc cells (8 or 16 atoms) with random occupancy by ``symbols``, rattled, EMT-labelled."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        atoms = bulk("Cu", "fcc", a=3.75 * (1 + 0.01 * rng.standard_normal()), cubic=True).repeat([(2, 1, 1), (2, 2, 1)][i % 2])
        atoms.set_chemical_symbols(list(rng.choice(symbols, len(atoms))))
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        c = data.Configuration.from_atoms(atoms, source=tag, frame=i)
        c.energy = float(atoms.get_potential_energy())
        c.forces = np.array(atoms.get_forces())
        c.stress = np.array(atoms.get_stress(voigt=False))
        out.append(c)
    return out


def _config(**kw):
    base = dict(model_config=TINY, cutoff=4.0, batch_size=4, epochs=3, learning_rate=5e-3, schedule="constant",
                ema_decay=0.5, valid_fraction=0.25, patience=None)
    return TrainConfig(**{**base, **kw})


def _fine(model_file, **kw):
    """A fine-tuning config: only the training settings, the architecture comes from the model file."""
    base = dict(init_from=str(model_file), batch_size=4, epochs=0, learning_rate=1e-3, schedule="constant", ema_decay=0.5,
                valid_fraction=0.25, patience=None)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A Cu/Ag model (species table (Cu, Ag)) and its file."""
    out = tmp_path_factory.mktemp("source")
    result = train(_config(), _emt_configs(16, ["Cu", "Ag"], seed=0), output_dir=out, progress=False)
    return result.paths["model"], load(result.paths["model"])


def _relabel(potential, configs, shift: dict):
    """``configs`` labelled by ``potential`` itself, energies shifted by ``shift[Z]`` eV per atom of Z."""
    pred = predict_dataset(potential, configs)
    ends = np.cumsum(pred["n_atoms"])
    out = []
    for c, e, f in zip(configs, pred["energy"], np.split(pred["forces"], ends[:-1])):
        c = data.Configuration(positions=c.positions, numbers=c.numbers, cell=c.cell, pbc=c.pbc, source=c.source,
                               frame=c.frame, energy=float(e) + sum(shift.get(int(z), 0.0) for z in c.numbers),
                               forces=np.array(f))
        out.append(c)
    return out


def _leaves(tree):
    return dict(zip(parameter_paths(tree), jax.tree_util.tree_leaves(tree)))


# ----------------------------------------------------------------- the exact starting point
def test_zero_epochs_give_the_source_model_on_data_with_fewer_elements(source, tmp_path):
    path, src = source
    ag = _emt_configs(8, ["Ag"], seed=1)  # Ag only: index 1 of the model's table, index 0 of the data's own
    result = train(_fine(path, refit_reference_energies=False), ag, output_dir=tmp_path, progress=False)
    pot = result.potential
    assert pot.species == src.species == (CU, AG)
    assert (pot.model, pot.cutoff, pot.model_config) == (src.model, src.cutoff, src.model_config)
    assert (pot.energy_scale, pot.energy_shift, pot.avg_num_neighbors, pot.reference_energies) == (
        src.energy_scale, src.energy_shift, src.avg_num_neighbors, src.reference_energies)
    for k, leaf in _leaves(pot.params).items():
        np.testing.assert_array_equal(leaf, _leaves(src.params)[k], err_msg=k)
    a, b = predict_dataset(pot, ag), predict_dataset(src, ag)
    np.testing.assert_array_equal(a["energy"], b["energy"])
    np.testing.assert_array_equal(a["forces"], b["forces"])
    # the saved model says where it came from
    meta = load(result.paths["model"]).metadata
    assert meta["init_from"]["sha256"] == file_sha256(path) and meta["init_from"]["path"] == str(path)
    assert meta["init_from"]["source"]["n_train"] == src.metadata["n_train"]
    assert meta["train_config"]["model_config"]["features"] == TINY["features"]


def test_refit_recovers_a_per_element_shift_and_keeps_absent_elements(source, tmp_path):
    path, src = source
    shift = {CU: 0.37, AG: -0.21}  # eV per atom
    mixed = _relabel(src, _emt_configs(10, ["Cu", "Ag"], seed=2), shift)
    refit = refit_reference_energies(src, mixed)
    np.testing.assert_allclose(np.subtract(refit.reference_energies, src.reference_energies), [shift[CU], shift[AG]],
                               atol=2e-5)
    assert (refit.energy_scale, refit.energy_shift) == (src.energy_scale, src.energy_shift)
    ag_only = refit_reference_energies(src, _relabel(src, _emt_configs(6, ["Ag"], seed=3), shift))
    assert ag_only.reference_energies[0] == src.reference_energies[0]  # no Cu in the data: Cu's E0 is kept exactly
    assert ag_only.reference_energies[1] == pytest.approx(src.reference_energies[1] + shift[AG], abs=2e-5)
    # through train() with 0 epochs: the energy moves by the shift, the forces not at all
    result = train(_fine(path), mixed, output_dir=tmp_path, progress=False)
    a, b = predict_dataset(result.potential, mixed), predict_dataset(src, mixed)
    n_cu = np.array([np.sum(c.numbers == CU) for c in mixed])
    n_ag = np.array([np.sum(c.numbers == AG) for c in mixed])
    np.testing.assert_allclose(a["energy"] - b["energy"], n_cu * shift[CU] + n_ag * shift[AG], atol=2e-4)
    np.testing.assert_array_equal(a["forces"], b["forces"])
    info = result.potential.metadata["init_from"]
    assert info["refit_reference_energies"] is True
    np.testing.assert_allclose(np.subtract(info["reference_energies_after"], info["reference_energies_before"]),
                               [shift[CU], shift[AG]], atol=2e-5)


# ----------------------------------------------------------------- freezing
def test_frozen_leaves_stay_bit_identical_while_the_others_train(source, tmp_path):
    path, src = source
    freeze = ("params/embedding/*", "params/filter_*")
    cfg = _fine(path, epochs=2, learning_rate=1e-2, optimizer="adamw", weight_decay=0.1, ema_decay=0.9, freeze=freeze)
    result = train(cfg, _emt_configs(8, ["Cu", "Ag"], seed=4), output_dir=tmp_path, progress=False)
    assert result.steps > 0
    before = _leaves(src.params)
    frozen = [k for k in before if k.startswith(("params/embedding/", "params/filter_"))]
    trained = [k for k in before if k not in frozen]
    assert frozen and trained
    for tree in (result.potential.params, result.state.params, result.state.ema_params):
        after = _leaves(tree)
        for k in frozen:  # no Adam step, no weight decay, no EMA drift
            np.testing.assert_array_equal(after[k], before[k], err_msg=k)
        assert all(not np.array_equal(after[k], before[k]) for k in trained)
    assert load(result.paths["model"]).metadata["init_from"]["freeze"] == list(freeze)


def test_a_freeze_pattern_matching_nothing_lists_real_paths(source, tmp_path):
    path, _ = source
    with pytest.raises(ConfigError, match=r"'params/embeding/\*' matches no parameter.*params/embedding/embedding"):
        train(_fine(path, epochs=1, freeze=("params/embeding/*",)), _emt_configs(4, ["Cu"], seed=5),
              output_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="nothing would train"):
        train(_fine(path, epochs=1, freeze=("*",)), _emt_configs(4, ["Cu"], seed=5), output_dir=tmp_path / "b",
              progress=False)


# ----------------------------------------------------------------- errors
def test_new_element_is_an_error_naming_it_and_the_model(source, tmp_path):
    path, _ = source
    with pytest.raises(data.DataError, match=rf"Au \(Z=79\).*{path}.*Cu, Ag"):
        train(_fine(path), _emt_configs(4, ["Cu", "Au"], seed=6, tag="cuau.xyz"), output_dir=tmp_path, progress=False)


def test_a_config_that_changes_the_architecture_is_an_error_naming_both_values(source):
    path, src = source
    for changes, needles in (({"cutoff": 5.5}, ("5.5", "4")), ({"model": "painn"}, ("painn", "schnet")),
                             ({"model_config": {**TINY, "features": 16}}, ("features = 16", "features = 8"))):
        with pytest.raises(ConfigError) as err:
            resolve_init_from(_fine(path, **changes), source=src)
        assert all(n in str(err.value) for n in needles) and str(path) in str(err.value), str(err.value)
        assert "\n" not in str(err.value)
    same = resolve_init_from(_fine(path, cutoff=4.0, model_config={"features": 8}), source=src)
    assert (same.model, same.cutoff, same.model_config["features"], same.model_config["num_rbf"]) == ("schnet", 4.0, 8, 8)
    unset = resolve_init_from(_fine(path), source=src)  # defaults (cutoff 5) are not "set": the file wins
    assert unset.cutoff == 4.0 and unset.model_config == same.model_config


# ----------------------------------------------------------------- command line
def test_cli_fine_tunes_lists_parameters_and_reports_errors_in_one_line(source, tmp_path, capsys):
    path, src = source
    ag_file = tmp_path / "ag.xyz"
    data.write_extxyz(ag_file, _emt_configs(8, ["Ag"], seed=7, tag=str(tmp_path / "ag.xyz")))
    assert main(["train", "--init-from", str(path), "--list-params"]) == 0
    listing = capsys.readouterr().out
    assert "params/readout_0/kernel" in listing and "(8, 4)" in listing
    out = tmp_path / "run"
    assert main(["train", "--init-from", str(path), "--train", str(ag_file), "--output", str(out), "--epochs", "2",
                 "--freeze", "params/embedding/*", "--freeze", "params/readout_1/*", "--lr", "3e-4", "--quiet"]) == 0
    capsys.readouterr()
    tuned = load(out / "model.mlpjax")
    assert tuned.species == (CU, AG) and tuned.cutoff == 4.0
    meta = tuned.metadata
    assert meta["init_from"]["sha256"] == file_sha256(path)
    assert meta["init_from"]["freeze"] == ["params/embedding/*", "params/readout_1/*"]
    assert meta["train_config"]["learning_rate"] == 3e-4 and meta["train_config"]["refit_reference_energies"] is True
    for k in ("params/embedding/embedding", "params/readout_1/kernel", "params/readout_1/bias"):
        np.testing.assert_array_equal(_leaves(tuned.params)[k], _leaves(src.params)[k])
    assert not np.array_equal(_leaves(tuned.params)["params/readout_0/kernel"], _leaves(src.params)["params/readout_0/kernel"])
    assert tuned.reference_energies[0] == src.reference_energies[0] and tuned.reference_energies[1] != src.reference_energies[1]

    au_file = tmp_path / "au.xyz"
    data.write_extxyz(au_file, _emt_configs(4, ["Au"], seed=8))
    for extra, needles in ((["--train", str(au_file)], ("Au (Z=79)", str(path))),
                           (["--train", str(ag_file), "--cutoff", "5"], ("--cutoff sets cutoff 5", "4 Å")),
                           (["--train", str(ag_file), "--model", "painn"], ("--model sets model 'painn'",)),
                           (["--train", str(ag_file), "--freeze", "nothing/*"], ("matches no parameter", "params/")),
                           (["--train", str(ag_file), "--preset", "small"], ("--preset small sets", str(path), "instead of --preset"))):
        code = main(["train", "--init-from", str(path), "--output", str(tmp_path / "bad"), "--quiet", *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("mlpjax train: error: "), err
        assert all(n in err[0] for n in needles), err
    code = main(["train", "--list-params"])
    assert code == 2 and "--list-params needs --init-from" in capsys.readouterr().err


def test_cli_ensemble_flags_map_onto_the_config(tmp_path, monkeypatch, capsys):
    import mlpjax.training

    seen = {}

    class Stop(Exception):
        pass

    def fake_train(cfg, *args, **kwargs):
        seen["cfg"] = cfg
        raise Stop

    monkeypatch.setattr(mlpjax.training, "train", fake_train)
    f = tmp_path / "cu.xyz"
    data.write_extxyz(f, _emt_configs(2, ["Cu"], seed=9))
    with pytest.raises(Stop):
        main(["train", "--train", str(f), "--output", str(tmp_path / "o"), "--ensemble", "4", "--ensemble-kind", "shallow",
              "--bootstrap", "--keep-reference-energies"])
    cfg = seen["cfg"]
    assert (cfg.ensemble_size, cfg.ensemble_kind, cfg.bootstrap, cfg.refit_reference_energies) == (4, "shallow", True, False)
    with pytest.raises(Stop):
        main(["train", "--train", str(f), "--output", str(tmp_path / "o")])
    cfg = seen["cfg"]
    assert (cfg.ensemble_size, cfg.ensemble_kind, cfg.bootstrap, cfg.refit_reference_energies) == (1, "full", False, True)
    capsys.readouterr()
    code = main(["train", "--train", str(f), "--output", str(tmp_path / "o"), "--bootstrap"])
    err = capsys.readouterr().err
    assert code == 2 and "--bootstrap" in err and "ensemble_size >= 2" in err, err
