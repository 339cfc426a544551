"""GAP (SOAP + sparse GP): the closed-form fit is consistent with the potential's own
forces, it learns EMT Cu, round-trips through the model file, and its predictive standard
deviation is larger outside the training distribution (hotter and compressed cells)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from mlpjax import potential
from mlpjax.models.gap import fitting as gap
from mlpjax.config import TrainConfig
from mlpjax.data import Configuration
from mlpjax.graph import batches, make_budget, to_graphs
from mlpjax.training import train

MODEL = {"n_max": 4, "l_max": 3, "sigma": 0.5, "n_sparse": 60, "zeta": 4}
CUTOFF = 4.0


def _emt_cells(n, rattle, strain=1.0, seed=0, stress=False):
    """n rattled 32-atom fcc Cu cells labelled by EMT; ``strain`` scales the lattice (a float,
    or a (low, high) range drawn per cell); ``stress`` adds EMT's stress (eV/Å³, Voigt → 3×3)."""
    out = []
    rng = np.random.default_rng(seed)
    for k in range(n):
        s = float(rng.uniform(*strain)) if isinstance(strain, tuple) else strain
        a = bulk("Cu", "fcc", a=3.61 * s, cubic=True).repeat((2, 2, 2))
        a.rattle(rattle, seed=int(rng.integers(1 << 30)))
        a.calc = EMT()
        out.append(Configuration(positions=a.get_positions(), numbers=a.numbers, cell=np.asarray(a.cell[:]), pbc=a.pbc,
                                 energy=float(a.get_potential_energy()), forces=a.get_forces(),
                                 stress=a.get_stress(voigt=False) if stress else None, source="emt", frame=k))
    return out


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    train_set = _emt_cells(24, 0.08, seed=1)
    test_set = _emt_cells(6, 0.08, seed=2)
    cfg = TrainConfig(model="gap", model_config=MODEL, cutoff=CUTOFF, valid_fraction=0.0, dtype="float64")
    res = train(cfg, train_set, output_dir=tmp_path_factory.mktemp("gap"), test_configs=test_set, progress=False)
    return res, train_set, test_set


def test_gap_fits_emt_copper(fitted):
    res, _, _ = fitted
    m = res.test_metrics
    assert res.stop_reason == "fit"
    assert m["energy_mae_meV_per_atom"] < 3.0
    assert m["force_mae_meV_per_A"] < 80.0


def _linear_model_and_prediction(pot, configs, compute_stress):
    """(y₀ + Φ α from the fit's design rows, Potential.predict) on one batch of ``configs``."""
    graphs = to_graphs(configs, pot.species, pot.cutoff)
    batch = next(batches(graphs, make_budget(graphs, len(configs))))
    phi, y0 = gap._design_fn(pot, compute_stress, 32)(pot.params, batch)
    lin = np.asarray(y0) + np.asarray(phi) @ np.asarray(pot.params["params"]["alpha"]).reshape(-1)
    return lin, _jit_predict(pot, compute_stress)(pot.params, batch), batch


def _jit_predict(pot, compute_stress):
    """Potential.predict jitted (params an argument), as the calculator and MD run it; op by op
    with NaN checking the SOAP prediction took 5-10 s per call."""
    return jax.jit(lambda params, batch: pot.predict(params, batch, compute_stress=compute_stress))


def test_design_matrix_matches_the_potentials_forces(fitted):
    """y₀ + Φ α (the linear model the fit solves) equals Potential.predict (the single
    jax.grad path used in MD) for the fitted α: energies and forces."""
    res, train_set, _ = fitted
    lin, out, _ = _linear_model_and_prediction(res.potential, train_set[:3], False)
    ref = np.concatenate([np.asarray(out.energy), np.asarray(out.forces).reshape(-1)])
    np.testing.assert_allclose(lin, ref, rtol=1e-9, atol=1e-9)


def test_gap_model_file_round_trip(fitted):
    res, _, test_set = fitted
    loaded = potential.load(res.paths["model"])
    graphs = to_graphs(test_set[:2], loaded.species, loaded.cutoff)
    batch = next(batches(graphs, make_budget(graphs, 2)))
    a = _jit_predict(res.potential, False)(res.potential.params, batch)
    b = _jit_predict(loaded, False)(loaded.params, batch)
    np.testing.assert_allclose(np.asarray(a.forces), np.asarray(b.forces), rtol=1e-12, atol=1e-12)


def test_predictive_std_grows_outside_the_training_distribution(fitted):
    """Structures like the training ones (rattle 0.08 Å) have a smaller predictive std per
    atom than hotter (rattle 0.25 Å) or compressed (−6 % lattice) cells."""
    res, _, test_set = fitted
    inside = gap.predict_with_std(res.potential, test_set)["energy_std_per_atom"]
    hot = gap.predict_with_std(res.potential, _emt_cells(4, 0.25, seed=3))["energy_std_per_atom"]
    compressed = gap.predict_with_std(res.potential, _emt_cells(4, 0.08, strain=0.94, seed=4))["energy_std_per_atom"]
    assert np.all(np.isfinite(inside)) and np.all(inside > 0)
    assert np.mean(hot) > 2.0 * np.mean(inside), (inside, hot)
    assert np.mean(compressed) > 2.0 * np.mean(inside), (inside, compressed)


def test_stress_rows_are_fitted_and_match_the_potentials_stress(tmp_path):
    """With stress_sigma > 0 the design matrix gains (s/V)∂g/∂ε rows: y₀ + Φα equals the
    potential's own stress (the strain derivative in compute_properties) at the fitted α, and
    they are fitted: adding the stress term to the least-squares objective can only lower the
    stress residual on the training set (g(α₂) ≤ g(α₁) for α₁ = argmin f, α₂ = argmin f + g)."""
    from mlpjax.validate import metrics

    train_set = _emt_cells(12, 0.05, strain=(0.96, 1.04), seed=5, stress=True)
    test_set = _emt_cells(6, 0.05, strain=(0.96, 1.04), seed=6, stress=True)
    small = {**MODEL, "n_sparse": 40}
    errs = {}
    for name, sig in (("with", 0.0001), ("without", 0.0)):
        cfg = TrainConfig(model="gap", model_config={**small, "stress_sigma": sig}, cutoff=CUTOFF, valid_fraction=0.0,
                          dtype="float64")
        res = train(cfg, train_set, output_dir=tmp_path / name, test_configs=test_set, progress=False)
        errs[name] = (metrics(res.potential, train_set)["stress_rmse_meV_per_A3"], res.test_metrics["stress_mae_meV_per_A3"])
        if name == "with":
            lin, out, batch = _linear_model_and_prediction(res.potential, train_set[:2], True)
            n_g, n_n = batch.graph_mask.shape[0], batch.positions.shape[0]
            stress_rows = lin[n_g + 3 * n_n:].reshape(n_g, 3, 3)
            np.testing.assert_allclose(stress_rows, np.asarray(out.stress), rtol=1e-9, atol=1e-12)
    print("stress (train RMSE, test MAE) meV/Å³:", errs)
    assert errs["with"][0] < 0.8 * errs["without"][0], errs  # measured 0.21 vs 1.15
    assert errs["with"][1] < 0.7 * errs["without"][1], errs  # unseen cells: measured 0.16 vs 0.33
