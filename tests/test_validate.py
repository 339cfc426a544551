"""Metrics against a hand computation, predictions against the ASE calculator, parity plot."""

from __future__ import annotations

import numpy as np
import pytest

from mlpjax import data
from mlpjax.config import TrainConfig
from mlpjax.validate import metrics, metrics_from_predictions, parity_plot, predict_dataset


def _fake_configs(rng):
    """Two periodic structures with stress, one molecule, one periodic structure without forces."""
    configs = []
    for i, (n, periodic, forces) in enumerate([(3, True, True), (5, True, True), (2, False, True), (4, True, False)]):
        cell = np.eye(3) * (4.0 + i) if periodic else np.zeros((3, 3))
        c = data.Configuration(
            positions=rng.uniform(0, 3, (n, 3)),
            numbers=np.full(n, 29),
            cell=cell,
            pbc=np.full(3, periodic),
            energy=float(rng.normal(-3.5 * n, 0.3)),
            forces=rng.normal(0, 1, (n, 3)) if forces else None,
            stress=rng.normal(0, 0.01, (3, 3)) if periodic else None,
            source="fake.xyz",
            frame=i,
        )
        configs.append(c)
    return configs


def _fake_predictions(configs, rng):
    n = np.array([c.n_atoms for c in configs])
    return {
        "energy": np.array([c.energy for c in configs]) + rng.normal(0, 0.05, len(configs)),
        "n_atoms": n,
        "forces": rng.normal(0, 1, (n.sum(), 3)),
        "stress": rng.normal(0, 0.01, (len(configs), 3, 3)),
    }


def test_metrics_match_numpy():
    rng = np.random.default_rng(1)
    configs = _fake_configs(rng)
    pred = _fake_predictions(configs, rng)
    m = metrics_from_predictions(pred, configs)

    n = np.array([c.n_atoms for c in configs], float)
    e_ref = np.array([c.energy for c in configs]) / n
    e_pred = pred["energy"] / n
    de = e_pred - e_ref
    assert np.isclose(m["energy_mae_meV_per_atom"], 1000 * np.mean(np.abs(de)))
    assert np.isclose(m["energy_rmse_meV_per_atom"], 1000 * np.sqrt(np.mean(de**2)))
    assert np.isclose(m["energy_r2"], 1 - np.sum(de**2) / np.sum((e_ref - e_ref.mean()) ** 2))

    # forces: structures 0, 1, 2 have labels (3 + 5 + 2 = 10 atoms), the last 4 atoms none
    f_ref = np.concatenate([configs[i].forces for i in range(3)])
    f_pred = pred["forces"][:10]
    df = f_pred - f_ref
    assert np.isclose(m["force_mae_meV_per_A"], 1000 * np.mean(np.abs(df)))
    assert np.isclose(m["force_rmse_meV_per_A"], 1000 * np.sqrt(np.mean(df**2)))
    assert np.isclose(m["force_r2"], 1 - np.sum(df**2) / np.sum((f_ref - f_ref.mean()) ** 2))

    # stress: periodic structures 0, 1, 3
    ds = np.stack([pred["stress"][i] - configs[i].stress for i in (0, 1, 3)])
    assert np.isclose(m["stress_mae_meV_per_A3"], 1000 * np.mean(np.abs(ds)))
    assert np.isclose(m["stress_rmse_meV_per_A3"], 1000 * np.sqrt(np.mean(ds**2)))
    assert m["n_structures"] == 4 and m["n_atoms"] == 14

    # molecules only: no stress keys
    m2 = metrics_from_predictions({k: v[2:3] if k != "forces" else v[8:10] for k, v in pred.items()}, configs[2:3])
    assert "stress_mae_meV_per_A3" not in m2


def test_missing_labels_name_the_frame():
    rng = np.random.default_rng(2)
    configs = _fake_configs(rng)
    configs[1].energy = None
    with pytest.raises(data.DataError, match=r"fake\.xyz.*frame 1.*energy"):
        metrics_from_predictions(_fake_predictions(configs[:1], rng), configs)


def test_parity_plot_from_predictions(tmp_path):
    rng = np.random.default_rng(3)
    configs = _fake_configs(rng)
    path = tmp_path / "parity.png"
    m = parity_plot(_fake_predictions(configs, rng), configs, path)
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 5000
    assert "energy_mae_meV_per_atom" in m


def test_predict_dataset_matches_calculator(tmp_path):
    from ase.build import bulk

    from mlpjax.training import prepare_potential

    atoms_list = [bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1)), bulk("Cu", "fcc", a=3.7, cubic=True)]
    atoms_list[0].rattle(0.05, seed=1)
    configs = []
    for i, a in enumerate(atoms_list):
        c = data.Configuration.from_atoms(a, source="mem", frame=i)
        c.energy, c.forces = -3.5 * len(a), np.zeros((len(a), 3))
        configs.append(c)
    cfg = TrainConfig(model_config=dict(features=8, interactions=1, num_rbf=8, filter_hidden=8), cutoff=4.0)
    pot = prepare_potential(cfg, configs)
    pred = predict_dataset(pot, configs, batch_size=2)
    assert pred["energy"].shape == (2,) and pred["forces"].shape == (12, 3) and pred["stress"].shape == (2, 3, 3)
    offset = 0
    for i, a in enumerate(atoms_list):
        a.calc = pot.calculator()
        assert np.isclose(a.get_potential_energy(), pred["energy"][i], rtol=1e-5)
        np.testing.assert_allclose(a.get_forces(), pred["forces"][offset : offset + len(a)], atol=1e-5)
        s = pred["stress"][i]
        np.testing.assert_allclose(a.get_stress(), [s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]], atol=1e-6)
        offset += len(a)
    m = metrics(pot, configs, predictions=pred)
    assert np.isclose(m["energy_mae_meV_per_atom"], 1000 * np.mean(np.abs(pred["energy"] / [4 * 2, 4] + 3.5)))
    path = tmp_path / "p.png"
    parity_plot(pot, configs, path)
    assert path.stat().st_size > 0
