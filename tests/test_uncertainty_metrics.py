"""Uncertainty quality and calibration (mlpjax.validate.uncertainty) on synthetic Gaussian
errors with known σ, and GAP's predict_uncertain (energy, force and stress σ from the weight
posterior plus the DTC novelty term) against explicit Jacobians and finite differences.

Statistical tolerances are derived from the sample sizes in each test (seeded data, so the
tests are deterministic; the bounds say how far a correct implementation may be)."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
import scipy.linalg
from scipy import integrate, special, stats

from mlpjax.config import TrainConfig
from mlpjax.data import Configuration
from mlpjax.graph import batches, make_budget, to_graphs
from mlpjax.models.gap import fitting as gap
from mlpjax.training import train
from mlpjax.uncertainty import UncertainPrediction
from mlpjax.validate import uncertainty as unc


def _gaussian(n, k, seed):
    """n errors ~ N(0, σ_true²) with σ_true log-uniform over two decades; reported σ = σ_true / k."""
    rng = np.random.default_rng(seed)
    sigma_true = 10 ** rng.uniform(-3, -1, n)
    return rng.normal(size=n) * sigma_true, sigma_true / k


def _expected_area(k):
    """∫₀¹ |P(|Z| ≤ z_p / k) − p| dp for errors k× larger than σ (z_p = Φ⁻¹((1+p)/2))."""
    f = lambda p: abs(special.erf(special.erfinv(p) / k) - p)  # noqa: E731  (erf(z/√2) = 2Φ(z)−1)
    return integrate.quad(f, 0, 1, limit=200)[0]


# ----------------------------------------------------------------------------------- array functions
def test_calibration_factor_recovers_a_known_mis_scaling():
    """σ reported 2× too small → s = 2·sqrt(⟨z²⟩); ⟨z²⟩ of n normals has sd √(2/n), so s has sd √(2/n)."""
    n = 20000
    e, s = _gaussian(n, 2.0, seed=0)
    tol = 5 * math.sqrt(2.0 / n)
    assert abs(unc.calibration_factor(e, s) - 2.0) < tol
    e, s = _gaussian(n, 0.5, seed=1)  # σ 2× too large → 0.5 (sd √(2/n)/4)
    assert abs(unc.calibration_factor(e, s) - 0.5) < tol / 4
    e, s = _gaussian(n, 1.0, seed=2)
    assert abs(unc.calibration_factor(e, s) - 1.0) < tol / 2


def test_zero_and_missing_sigmas_are_left_out():
    e, s = _gaussian(1000, 1.0, seed=3)
    ref = unc.calibration_factor(e, s)
    e2 = np.concatenate([e, [0.1, np.nan, 0.2]])
    s2 = np.concatenate([s, [0.0, 0.1, np.nan]])
    assert unc.calibration_factor(e2, s2) == pytest.approx(ref, rel=1e-12)
    assert unc.gaussian_nll(e2, s2) == pytest.approx(unc.gaussian_nll(e, s), rel=1e-12)
    assert math.isnan(unc.calibration_factor([0.1, 0.2], [0.0, 0.0]))
    assert math.isnan(unc.miscalibration_area([], []))


def test_miscalibration_area_zero_when_calibrated_and_matches_theory_when_mis_scaled():
    """Calibrated: the expected area of n uniform coverages is √(π/(32n)) (≈0.0022 for n=20000);
    errors 2× their σ: the area of the population, _expected_area(2) (≈0.19), within sampling noise."""
    n = 20000
    e, s = _gaussian(n, 1.0, seed=4)
    assert unc.miscalibration_area(e, s) < 5 * math.sqrt(math.pi / (32 * n))
    e, s = _gaussian(n, 2.0, seed=5)
    area, expected = unc.miscalibration_area(e, s), _expected_area(2.0)
    assert expected > 0.1
    assert abs(area - expected) < 0.01
    assert unc.miscalibration_area(e, s, scale=2.0) < 5 * math.sqrt(math.pi / (32 * n))  # calibrated by s


def test_miscalibration_area_is_the_integral_of_the_calibration_curve():
    """The exact step-function integral equals a fine trapezoid of |observed − expected|; one
    error at coverage ½ gives ∫₀^½ p dp + ∫_½^1 (1 − p) dp = ¼."""
    e, s = _gaussian(300, 1.5, seed=6)
    p, obs = unc.calibration_curve(e, s, levels=np.linspace(0, 1, 200001))
    assert unc.miscalibration_area(e, s) == pytest.approx(np.trapezoid(np.abs(obs - p), p), abs=1e-4)
    z_half = special.erfinv(0.5) * math.sqrt(2)  # |e|/σ with 2Φ(|e|/σ) − 1 = ½
    assert unc.miscalibration_area([z_half], [1.0]) == pytest.approx(0.25, abs=1e-12)
    p, obs = unc.calibration_curve(e, s)
    assert np.all(np.diff(obs) >= 0) and obs[0] == 0.0 and obs[-1] == 1.0


def test_spearman():
    rng = np.random.default_rng(7)
    x = rng.normal(size=500)
    assert unc.spearman(x, np.exp(3 * x)) == pytest.approx(1.0, abs=1e-12)  # any monotone map
    assert unc.spearman(x, -x**3) == pytest.approx(-1.0, abs=1e-12)
    n = 4000
    rho = unc.spearman(rng.normal(size=n), rng.normal(size=n))
    assert abs(rho) < 4 / math.sqrt(n - 1)  # standard error under independence
    ties_x, ties_y = rng.integers(0, 5, 200), rng.integers(0, 5, 200) + rng.integers(0, 3, 200)
    assert unc.spearman(ties_x, ties_y) == pytest.approx(stats.spearmanr(ties_x, ties_y).statistic, abs=1e-12)
    y = np.exp(x)
    y[::7] = np.nan
    assert unc.spearman(x, y) == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(unc.spearman([1.0, 2.0], [3.0, 4.0]))


def test_nll_is_lowest_at_the_calibration_factor():
    e, s = _gaussian(5000, 3.0, seed=8)
    k = unc.calibration_factor(e, s)
    before, after = unc.gaussian_nll(e, s), unc.gaussian_nll(e, s, k)
    assert after < before
    for f in (0.9, 1.1):
        assert unc.gaussian_nll(e, s, k * f) > after
    # calibrated errors: ⟨NLL⟩ = ⟨½ log 2πσ²⟩ + ½ (the z² term has mean ½, sd 1/√(2n))
    e, s = _gaussian(5000, 1.0, seed=9)
    assert unc.gaussian_nll(e, s) - np.mean(0.5 * np.log(2 * np.pi * s * s)) == pytest.approx(0.5, abs=5 / math.sqrt(2 * 5000))


# ------------------------------------------------------------------------------ predictions
def _synthetic(n_structures, k_e, k_f, k_s, seed, n_atoms=8):
    """Configurations with labels and UncertainPredictions whose errors are k× their reported σ:
    σ varies per structure (a factor) and per atom, so σ and |error| are rank-correlated."""
    rng = np.random.default_rng(seed)
    configs, preds = [], []
    for g in range(n_structures):
        level = 10 ** rng.uniform(-2, 0)
        f_std = level * 10 ** rng.uniform(-0.5, 0.5, n_atoms) * 0.05  # eV/Å, per atom
        e_std = level * 0.01 * n_atoms  # eV
        s_std = level * 1e-3 * np.ones((3, 3))  # eV/Å³
        forces = rng.normal(size=(n_atoms, 3))
        stress = rng.normal(size=(3, 3)) * 1e-2
        stress = 0.5 * (stress + stress.T)
        ds = rng.normal(size=(3, 3)) * k_s * s_std
        ds = np.triu(ds) + np.triu(ds, 1).T
        energy = float(rng.normal())
        configs.append(Configuration(positions=rng.uniform(0, 5, (n_atoms, 3)), numbers=np.full(n_atoms, 29),
                                     cell=5 * np.eye(3), pbc=np.ones(3, bool), energy=energy, forces=forces,
                                     stress=stress, source="synthetic", frame=g))
        preds.append(UncertainPrediction(
            energy=energy + k_e * e_std * rng.normal(), energy_std=e_std,
            forces=forces + k_f * (f_std / math.sqrt(3))[:, None] * rng.normal(size=(n_atoms, 3)),
            forces_std=f_std, stress=stress + ds, stress_std=s_std))
    return preds, configs


def test_fit_calibration_recovers_the_factors_and_calibrates_held_out_data():
    n = 600
    preds, configs = _synthetic(n, 3.0, 2.0, 1.5, seed=10)
    cal = unc.fit_calibration(preds, configs)
    # s has relative sd ≈ 1/√(2 n_samples): n energies, 3·8·n force components, 6n stress components
    assert abs(cal.energy / 3.0 - 1) < 5 / math.sqrt(2 * n)
    assert abs(cal.forces / 2.0 - 1) < 5 / math.sqrt(2 * 24 * n)
    assert abs(cal.stress / 1.5 - 1) < 5 / math.sqrt(2 * 6 * n)
    test_preds, test_configs = _synthetic(400, 3.0, 2.0, 1.5, seed=11)
    m = unc.uncertainty_metrics(test_preds, test_configs, cal)
    assert m["calibration_source"] == "given" and m["calibration_forces"] == cal.forces
    for q in ("energy", "force", "stress"):
        assert m[f"{q}_miscalibration_area"] > 0.05, q
        assert m[f"{q}_miscalibration_area_calibrated"] < 0.03, q
        assert m[f"{q}_nll_calibrated"] < m[f"{q}_nll"], q
    assert m["energy_per_atom_nll_calibrated"] < m["energy_per_atom_nll"]
    # σ and |error| are rank-correlated through the per-structure level and per-atom spread
    assert m["force_spearman_per_atom"] > 0.3
    assert m["force_spearman_per_structure_max"] > 0.8 and m["force_spearman_per_structure_mean"] > 0.8
    assert m["energy_spearman_per_structure"] > 0.3 and m["stress_spearman_per_structure"] > 0.5
    assert m["force_rms_std_meV_per_A_calibrated"] == pytest.approx(2.0 * m["force_rms_std_meV_per_A"], rel=0.05)
    assert m["force_rms_std_meV_per_A_calibrated"] == pytest.approx(m["force_rmse_meV_per_A"], rel=0.05)
    # applying the factors is the same as passing them
    scaled = unc.apply_calibration(test_preds, cal)
    m2 = unc.uncertainty_metrics(scaled, test_configs, unc.Calibration())
    assert m2["force_miscalibration_area"] == pytest.approx(m["force_miscalibration_area_calibrated"], abs=1e-12)
    assert m2["energy_nll"] == pytest.approx(m["energy_nll_calibrated"], abs=1e-12)
    assert scaled[0].forces_std == pytest.approx(cal.forces * test_preds[0].forces_std)


def test_metrics_are_nan_safe_for_missing_labels():
    preds, configs = _synthetic(20, 1.0, 1.0, 1.0, seed=12)
    configs = [c.__class__(**{**c.__dict__, "forces": None, "stress": None}) for c in configs]
    configs[0] = configs[0].__class__(**{**configs[0].__dict__, "energy": None})
    m = unc.uncertainty_metrics(preds, configs)
    assert m["n_energy"] == 19 and m["n_force_atoms"] == 0 and m["n_stress"] == 0
    assert np.isfinite(m["energy_nll"]) and np.isfinite(m["energy_spearman_per_structure"])
    for key in ("force_nll", "force_spearman_per_atom", "force_spearman_per_structure_max", "stress_nll"):
        assert math.isnan(m[key]), key
    assert unc.fit_calibration(preds, configs).forces == 1.0  # nothing to fit: identity
    with pytest.raises(ValueError, match="predictions must be in the order"):
        unc.uncertainty_metrics(preds[::-1][:1] + preds[1:], [configs[0].__class__(
            **{**configs[0].__dict__, "positions": np.zeros((3, 3)), "numbers": np.full(3, 29)})] + configs[1:])


def test_report_writes_json_and_a_png(tmp_path):
    preds, configs = _synthetic(30, 2.0, 2.0, 2.0, seed=13)
    configs[1] = configs[1].__class__(**{**configs[1].__dict__, "stress": None})
    paths = unc.write_uncertainty_report(preds, configs, tmp_path / "unc")
    with open(paths["calibration_png"], "rb") as fh:
        head = fh.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert width > 500 and height > 300
    with open(paths["uncertainty_json"]) as fh:
        doc = json.load(fh)
    m = unc.uncertainty_metrics(preds, configs)
    assert doc["metrics"]["force_miscalibration_area"] == pytest.approx(m["force_miscalibration_area"])
    assert doc["calibration"]["forces"] == pytest.approx(m["calibration_forces"])
    assert unc.Calibration.from_dict(doc["calibration"]) == unc.fit_calibration(preds, configs)
    assert doc["metrics"]["n_stress"] == 29


# ---------------------------------------------------------------------------------------- GAP
MODEL = {"n_max": 3, "l_max": 2, "sigma": 0.5, "n_sparse": 24, "zeta": 2, "fit_chunk": 32}
CUTOFF = 3.8


def _emt_cells(n, rattle, strain=1.0, seed=0):
    out = []
    rng = np.random.default_rng(seed)
    for k in range(n):
        a = bulk("Cu", "fcc", a=3.61 * strain, cubic=True).repeat((2, 1, 1))  # 8 atoms
        a.rattle(rattle, seed=int(rng.integers(1 << 30)))
        a.calc = EMT()
        out.append(Configuration(positions=a.get_positions(), numbers=a.numbers, cell=np.asarray(a.cell[:]), pbc=a.pbc,
                                 energy=float(a.get_potential_energy()), forces=a.get_forces(),
                                 stress=a.get_stress(voigt=False), source="emt", frame=k))
    return out


@pytest.fixture(scope="module")
def gap_fit(tmp_path_factory):
    """A tiny GAP on 10 EMT Cu cells and its predictions (one predict_uncertain call, so one
    compilation) on training-like, hot (rattle 0.3 Å) and compressed (−7 % lattice) cells,
    with and without the novelty term."""
    train_set = _emt_cells(10, 0.06, seed=1)
    cfg = TrainConfig(model="gap", model_config=MODEL, cutoff=CUTOFF, valid_fraction=0.0, dtype="float64")
    pot = train(cfg, train_set, output_dir=tmp_path_factory.mktemp("gap_unc"), test_configs=_emt_cells(2, 0.06, seed=2),
                progress=False).potential
    sets = {"inside": _emt_cells(3, 0.06, seed=3), "hot": _emt_cells(3, 0.3, seed=5),
            "compressed": _emt_cells(3, 0.06, strain=0.93, seed=6)}
    configs = [c for v in sets.values() for c in v]
    full, weights = gap.predict_uncertain(pot, configs), gap.predict_uncertain(pot, configs, novelty=False)
    split = {}
    for k, name in enumerate(sets):
        split[name] = (sets[name], full[3 * k:3 * k + 3], weights[3 * k:3 * k + 3])
    return pot, split


def _one_batch(pot, configs):
    graphs = to_graphs(configs, pot.species, pot.cutoff)
    return next(batches(graphs, make_budget(graphs, len(configs))))


def test_gap_means_equal_predict_and_energy_std_equals_predict_with_std(gap_fit):
    pot, split = gap_fit
    configs, preds, _ = split["inside"]
    out = jax.jit(lambda p, b: pot.predict(p, b, compute_stress=True))(pot.params, _one_batch(pot, configs))
    ref = gap.predict_with_std(pot, configs)
    start = 0
    for g, (p, c) in enumerate(zip(preds, configs)):
        assert p.members is None
        assert p.energy == pytest.approx(float(out.energy[g]), abs=1e-10)
        np.testing.assert_allclose(p.forces, np.asarray(out.forces)[start:start + c.n_atoms], atol=1e-10)
        np.testing.assert_allclose(p.stress, np.asarray(out.stress)[g], atol=1e-12)
        start += c.n_atoms
        assert p.forces_std.shape == (c.n_atoms,) and np.all(p.forces_std > 0)
        assert p.stress_std.shape == (3, 3) and np.all(p.stress_std > 0)
    np.testing.assert_allclose([p.energy_std for p in preds], ref["energy_std"], rtol=1e-8)


def test_gap_force_std_grows_outside_the_training_distribution(gap_fit):
    _, split = gap_fit

    def mean_std(name, which):
        return float(np.mean([p.forces_std.mean() for p in split[name][which]]))

    for which in (1, 2):  # with the novelty term, and the weights term alone
        assert mean_std("hot", which) > 2.0 * mean_std("inside", which)
        assert mean_std("compressed", which) > 2.0 * mean_std("inside", which)
    # the novelty term adds variance, never removes it
    for name in split:
        for full, weights in zip(split[name][1], split[name][2]):
            assert np.all(full.forces_std >= weights.forces_std) and full.energy_std >= weights.energy_std


def test_gap_force_variance_is_j_sigma_jt_plus_the_novelty_term(gap_fit):
    """Weights term: J = ∂F/∂α by jax.jacfwd of the potential's own forces, Σ_α from the fit's
    Cholesky factor (and, loosely, inverted explicitly). Novelty term: δ²(s² ∂²K/∂x∂x' − J K_MM⁻¹ Jᵀ)
    with the kernel's mixed derivative by central finite differences of K(R + h e, R + h' e).
    Then the same for the stress component xx (s/V for s, a strain for the displacement)."""
    pot, split = gap_fit
    configs, full_preds, weight_preds = split["hot"]
    config, full, weights_only = configs[0], full_preds[0], weight_preds[0]
    batch = _one_batch(pot, [config])
    params = pot.params
    s_count, m = np.asarray(params["gap"]["sparse_mask"]).shape

    def forces(alpha):
        p = {**params, "params": {**params["params"], "alpha": alpha.reshape(s_count, m)}}
        return pot.predict(p, batch, compute_stress=False).forces[:config.n_atoms]

    jac = np.asarray(jax.jit(jax.jacfwd(forces))(jnp.asarray(params["params"]["alpha"]).reshape(-1)))  # [n, 3, S·M]
    chol = np.asarray(params["gap"]["posterior_chol"])
    atom = 3
    # Σ_α = L⁻ᵀ L⁻¹ applied through the fit's Cholesky factor: J Σ Jᵀ = |L⁻¹ Jᵀ|²
    v = scipy.linalg.solve_triangular(chol, jac[atom].T, lower=True)
    assert weights_only.forces_std[atom] ** 2 == pytest.approx(np.sum(v * v), rel=1e-10)
    # and with Σ_α inverted explicitly: the posterior precision of this tiny GAP has a condition
    # number ~1e15 (near-duplicate sparse environments), so the two agree only to ~cond·ε
    var_w = np.einsum("ck,kl,cl->c", jac[atom], np.linalg.inv(chol @ chol.T), jac[atom])
    assert weights_only.forces_std[atom] ** 2 == pytest.approx(np.sum(var_w), rel=2e-2)

    kmm_chol = np.asarray(params["gap"]["kmm_chol"])
    zeta, h = int(pot.model_config.zeta), 3e-4
    delta2, s2 = float(pot.model_config.delta) ** 2, float(pot.energy_scale) ** 2

    def moved(dx):
        c = config.__class__(**{**config.__dict__, "positions": config.positions.copy()})
        c.positions[atom] += dx
        return c

    moves = [moved(sign * h * np.eye(3)[c]) for c in range(3) for sign in (1, -1)]
    x, _, gi = gap.atom_features(pot, to_graphs(moves, pot.species, pot.cutoff))

    def kern(a, b):
        return np.sum((x[gi == a] @ x[gi == b].T) ** zeta)  # one element: every pair of atoms

    expected = prior = 0.0
    for c in range(3):
        p, q = 2 * c, 2 * c + 1  # +h, −h along component c
        d2k = (kern(p, p) - kern(p, q) - kern(q, p) + kern(q, q)) / (4 * h * h)
        u = scipy.linalg.solve_triangular(kmm_chol, jac[atom, c], lower=True)
        prior += delta2 * s2 * d2k
        expected += delta2 * (s2 * d2k - u @ u)
    novelty = full.forces_std[atom] ** 2 - weights_only.forces_std[atom] ** 2
    # the novelty is a Schur complement, ~10⁻³ of the prior term here; central differences of
    # K err by ~h² (truncation) + ε·K/h² (round-off), both ~10⁻⁷ of the prior at h = 3·10⁻⁴ Å
    assert expected > 100 * 1e-6 * prior
    assert novelty == pytest.approx(expected, abs=1e-6 * prior)

    # the same two terms for the stress component xx: J_σ = ∂σ_xx/∂α through the potential's
    # stress, ∂²K by finite differences of a strain ε_xx applied to positions and cell
    def stress_xx(alpha):
        p = {**params, "params": {**params["params"], "alpha": alpha.reshape(s_count, m)}}
        return pot.predict(p, batch, compute_stress=True).stress[0, 0, 0]

    j_s = np.asarray(jax.jit(jax.grad(stress_xx))(jnp.asarray(params["params"]["alpha"]).reshape(-1)))  # [S·M]
    v = scipy.linalg.solve_triangular(chol, j_s, lower=True)
    assert weights_only.stress_std[0, 0] ** 2 == pytest.approx(v @ v, rel=1e-10)

    def strained(eps):
        f = np.eye(3) + np.diag([eps, 0.0, 0.0])
        return config.__class__(**{**config.__dict__, "positions": config.positions @ f, "cell": config.cell @ f})

    x, _, gi = gap.atom_features(pot, to_graphs([strained(h), strained(-h)], pot.species, pot.cutoff))
    d2k = (kern(0, 0) - kern(0, 1) - kern(1, 0) + kern(1, 1)) / (4 * h * h)
    vol = abs(np.linalg.det(config.cell))
    u = scipy.linalg.solve_triangular(kmm_chol, j_s, lower=True)
    prior = delta2 * s2 * d2k / vol**2
    novelty = full.stress_std[0, 0] ** 2 - weights_only.stress_std[0, 0] ** 2
    assert prior - delta2 * u @ u > 100 * 1e-6 * prior
    assert novelty == pytest.approx(prior - delta2 * u @ u, abs=1e-6 * prior)
