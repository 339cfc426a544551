"""Physical validation (mlpjax.validate, second half): EOS and elastic constants checked
on EMT itself against independent finite differences of its energy, drift statistics and
warning levels, an NVE drift report of a tiny float64 model, and ``mlpjax validate`` end to
end on a tiny model file (EMT reference and data-file reference)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.units import GPa

from mlpjax import models
from mlpjax.potential import Potential
from mlpjax.validate import (
    DRIFT_FAIL_MEV_PER_ATOM_PS,
    DRIFT_GOOD_MEV_PER_ATOM_PS,
    DriftConfig,
    ElasticConfig,
    bulk_structure,
    classify_drift,
    drift_statistics,
    elastic_constants,
    energy_drift,
    equation_of_state,
    md_supercell,
    strained,
)

TINY = {"features": 8, "interactions": 1, "num_rbf": 8, "filter_hidden": 8}


def _emt_energy_per_atom(atoms) -> float:
    a = atoms.copy()
    a.calc = EMT()
    return a.get_potential_energy() / len(a)


def _at_volume_scale(atoms, s):
    out = atoms.copy()
    out.set_cell(atoms.cell.array * s ** (1.0 / 3.0), scale_atoms=True)
    return out


@pytest.fixture(scope="module")
def emt_cu_eos():
    atoms = bulk_structure("fcc-Cu")  # a = 3.61 Å (ASE reference state), 4 atoms
    return atoms, equation_of_state(EMT(), atoms)


@pytest.fixture(scope="module")
def emt_cu_eq(emt_cu_eos):
    atoms, eos = emt_cu_eos
    return _at_volume_scale(atoms, eos.volume_scale)


# ----------------------------------------------------------------------------- EOS
def test_eos_on_emt_recovers_a0_and_bulk_modulus(emt_cu_eos, emt_cu_eq):
    """The Birch–Murnaghan fit of EMT's E(V) gives EMT's equilibrium: zero pressure at a0
    (stress, independent of the fit) and B = V d²E/dV² from a central difference of the energy."""
    atoms, eos = emt_cu_eos
    assert eos.lattice_constant_A == pytest.approx(3.59, abs=0.01)  # EMT Cu: 3.590 Å
    eq = emt_cu_eq.copy()
    eq.calc = EMT()
    pressure = -np.trace(eq.get_stress(voigt=False)) / 3.0 / GPa
    assert abs(pressure) < 0.01, f"pressure at the fitted a0 is {pressure:.4f} GPa"
    assert eos.v0 == pytest.approx(eq.get_volume() / len(eq), rel=1e-12)
    assert eos.lattice_constant_A == pytest.approx(eq.cell.lengths()[0], rel=1e-12)
    v0, h = eos.v0, 0.002 * eos.v0
    e = [_emt_energy_per_atom(_at_volume_scale(atoms, v * len(atoms) / atoms.get_volume())) for v in (v0 - h, v0, v0 + h)]
    b_fd = v0 * (e[0] - 2 * e[1] + e[2]) / h**2 / GPa
    assert eos.bulk_modulus_GPa == pytest.approx(b_fd, rel=5e-3)
    assert eos.e0 == pytest.approx(e[1], abs=1e-5)
    assert 3.0 < eos.bulk_modulus_derivative < 7.0


def test_eos_recentres_when_the_minimum_is_outside_the_scan():
    atoms = bulk_structure("fcc-Cu:3.80")  # 16 % too large in volume: the first ±6 % scan misses the minimum
    eos = equation_of_state(EMT(), atoms)
    assert eos.lattice_constant_A == pytest.approx(3.59, abs=0.01)


def test_structure_specs():
    a = bulk_structure("fcc-Cu")
    assert len(a) == 4 and a.cell.lengths()[0] == pytest.approx(3.61)
    assert bulk_structure("bcc-Fe:2.9").cell.lengths()[0] == pytest.approx(2.9)
    assert len(bulk_structure(element=29)) == 4
    with pytest.raises(ValueError, match="LATTICE-Symbol"):
        bulk_structure("hcp-Mg")
    with pytest.raises(ValueError, match="not a cubic lattice"):
        bulk_structure(element="Mg")  # hcp reference state
    big = md_supercell(a, 4.5, skin=0.5, min_atoms=64)
    assert len(big) == 108  # 3 × 3.61 Å ≥ 2 × 5 Å


# ----------------------------------------------------------------------------- elastic constants
def _strain_energy_coefficient(atoms, make_strain, deltas):
    """Fit E(δ)/N − E(0)/N = c2 δ² + c4 δ⁴ over ±deltas; returns c2 (eV/atom)."""
    e0 = _emt_energy_per_atom(atoms)
    xs, ys = [], []
    for d in deltas:
        for s in (d, -d):
            xs.append(s)
            ys.append(_emt_energy_per_atom(strained(atoms, make_strain(s))) - e0)
    x = np.asarray(xs)
    coef, *_ = np.linalg.lstsq(np.stack([x**2, x**4], axis=1), np.asarray(ys), rcond=None)
    return coef[0]


def test_elastic_constants_of_emt_match_strain_energy(emt_cu_eos, emt_cu_eq):
    """Stress–strain C11, C12, C44 of EMT Cu against energies of volume-conserving strains:
    orthorhombic ε = (δ, −δ, δ²/(1−δ²)) gives ΔE/V = (C11 − C12) δ², monoclinic γ_xy = δ with
    ε_zz = δ²/(4−δ²) gives ΔE/V = C44 δ²/2; and (C11 + 2 C12)/3 equals the E(V) bulk modulus."""
    _, eos = emt_cu_eos
    res = elastic_constants(EMT(), emt_cu_eq)
    assert res.cubic and not res.relaxed_internal
    assert res.asymmetry < 1e-3
    assert np.abs(res.residual_stress_GPa).max() < 0.01
    v = eos.v0  # Å^3/atom
    deltas = (0.005, 0.01, 0.015)
    c2_ortho = _strain_energy_coefficient(emt_cu_eq, lambda d: [d, -d, d**2 / (1 - d**2), 0, 0, 0], deltas)
    c2_mono = _strain_energy_coefficient(emt_cu_eq, lambda d: [0, 0, d**2 / (4 - d**2), 0, 0, d], deltas)
    c11_minus_c12 = c2_ortho / v / GPa
    c44 = 2.0 * c2_mono / v / GPa
    assert res.C11_GPa - res.C12_GPa == pytest.approx(c11_minus_c12, rel=0.01)
    assert res.C44_GPa == pytest.approx(c44, rel=0.01)
    assert res.bulk_modulus_GPa == pytest.approx(eos.bulk_modulus_GPa, rel=0.01)
    assert (res.C11_GPa + 2 * res.C12_GPa) / 3 == pytest.approx(res.bulk_modulus_GPa, rel=1e-9)


def test_elastic_internal_relaxation_on_a_lattice_with_a_basis():
    """Diamond has two atoms per primitive cell: a shear moves the sublattices against each
    other (Kleinman), so the relaxed-ion C44 is below the clamped-ion one; uniaxial strains
    along the cubic axes need no relaxation (same C11, C12). The relaxed C44 agrees with the
    energy of relaxed monoclinic strains."""
    atoms = bulk_structure("diamond-Cu:5.53")  # EMT "diamond Cu": a test lattice with a basis
    relaxed = elastic_constants(EMT(), atoms)
    clamped = elastic_constants(EMT(), atoms, ElasticConfig(relax_threshold=np.inf))
    assert relaxed.relaxed_internal and not clamped.relaxed_internal
    assert relaxed.C11_GPa == pytest.approx(clamped.C11_GPa, rel=1e-6)
    assert relaxed.C12_GPa == pytest.approx(clamped.C12_GPa, rel=1e-6)
    assert relaxed.C44_GPa < clamped.C44_GPa - 10.0

    from ase.optimize import BFGS

    def relaxed_energy(d):
        a = strained(atoms, [0, 0, d**2 / (4 - d**2), 0, 0, d])
        a.calc = EMT()
        BFGS(a, logfile=None).run(fmax=1e-6, steps=500)
        return a.get_potential_energy() / len(a)

    d, e0 = 0.004, _emt_energy_per_atom(atoms)
    c44_energy = (relaxed_energy(d) + relaxed_energy(-d) - 2 * e0) / d**2 / (atoms.get_volume() / len(atoms)) / GPa
    assert relaxed.C44_GPa == pytest.approx(c44_energy, rel=0.05, abs=1.0)


# ----------------------------------------------------------------------------- drift
def test_drift_levels_classify():
    assert DRIFT_GOOD_MEV_PER_ATOM_PS == 1.0 and DRIFT_FAIL_MEV_PER_ATOM_PS == 10.0
    assert classify_drift(0.3)[0] == "good"
    assert classify_drift(-0.99)[0] == "good"
    assert classify_drift(1.0)[0] == "warn"
    assert classify_drift(-5.0)[0] == "warn"
    assert classify_drift(10.0)[0] == "warn"
    assert classify_drift(10.01)[0] == "fail"
    assert classify_drift(-250.0)[0] == "fail"
    assert classify_drift(float("nan"))[0] == "fail"
    advice = classify_drift(3.0)[1]
    assert "timestep" in advice and "cutoff" in advice and "float64" in advice


def test_drift_statistics_of_a_synthetic_series():
    n, slope = 100, 2.5e-3  # eV/atom/ps
    t = np.linspace(0.0, 2.0, 401)  # ps
    amp = 1e-4  # eV/atom
    e_tot = n * (-3.0 + slope * t + amp * np.sin(2 * np.pi * 7.3 * t))
    s = drift_statistics(t, e_tot, n)
    assert s["drift_eV_per_atom_per_ps"] == pytest.approx(slope, rel=0.01)
    assert s["drift_meV_per_atom_per_ps"] == pytest.approx(1e3 * slope, rel=0.01)
    assert s["fluctuation_meV_per_atom"] == pytest.approx(1e3 * amp / np.sqrt(2), rel=0.05)
    assert s["status"] == "warn"
    flat = drift_statistics(t, np.full_like(t, -300.0), n)
    assert flat["drift_meV_per_atom_per_ps"] == pytest.approx(0.0, abs=1e-12) and flat["status"] == "good"


def _tiny_cu(seed=0, scale=10.0):
    pot = Potential("schnet", models.make_config("schnet", TINY), cutoff=4.0, species=(29,), reference_energies=(-3.7,),
                    energy_scale=scale, avg_num_neighbors=40.0)
    return pot.replace(params=pot.init_params(jax.random.PRNGKey(seed)))


def test_energy_drift_report_of_a_tiny_float64_model():
    """Velocity Verlet on a smooth float64 energy: no drift at the project's levels, and the
    fluctuation of E_tot grows as dt²."""
    pot = _tiny_cu()
    atoms = md_supercell(bulk_structure("fcc-Cu:3.61"), pot.cutoff, min_atoms=64)
    cfg = DriftConfig(timesteps_fs=(1.0, 2.0), duration_ps=0.1, temperature_K=150.0, thermalise_ps=0.0,
                      log_interval_fs=2.0, dtype="float64")
    rep = energy_drift(pot, atoms, cfg)
    assert rep.dtype == "float64" and rep.n_atoms == 108
    assert [r.timestep_fs for r in rep.runs] == [1.0, 2.0]
    assert rep.reference.timestep_fs == 1.0
    for r in rep.runs:
        assert r.status == "good", r
        assert abs(r.drift_meV_per_atom_per_ps) < 0.05 * DRIFT_GOOD_MEV_PER_ATOM_PS
        assert r.time_ps[-1] == pytest.approx(0.1)
        assert r.mean_temperature_K > 50.0  # the atoms moved: the check is not vacuous
    assert 1.5 < rep.fluctuation_exponent < 2.5


# ----------------------------------------------------------------------------- VDOS
def test_vdos_of_harmonic_oscillators_peaks_at_their_frequency():
    """Velocities of independent oscillators at 4 and 7 THz (masses 1 and 4, equal mean kinetic
    energy): the mass-weighted VDOS has its peaks there, half of its weight in each."""
    from mlpjax.validate import vdos_from_velocities

    rng = np.random.default_rng(0)
    dt_fs, n_t = 4.0, 2000
    t = np.arange(n_t) * dt_fs * 1e-3  # ps
    nu = np.array([4.0] * 20 + [7.0] * 20)  # THz
    masses = np.array([1.0] * 20 + [4.0] * 20)
    phase = rng.uniform(0, 2 * np.pi, (40, 3))
    v = np.cos(2 * np.pi * nu[None, :, None] * t[:, None, None] + phase[None]) / np.sqrt(masses)[None, :, None]
    g = vdos_from_velocities(v, masses, dt_fs, max_lag_ps=2.0)
    assert g.peak_THz == pytest.approx(4.0, abs=0.1) or g.peak_THz == pytest.approx(7.0, abs=0.1)
    assert np.trapezoid(g.dos, g.frequency_THz) == pytest.approx(1.0, rel=1e-6)
    low = g.frequency_THz < 5.5
    assert np.trapezoid(g.dos[low], g.frequency_THz[low]) == pytest.approx(0.5, abs=0.05)
    assert g.mean_frequency_THz == pytest.approx(5.5, abs=0.2)


# ----------------------------------------------------------------------------- CLI end to end
@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("validate")
    path = d / "tiny.mlpjax"
    _tiny_cu(seed=3, scale=1.0).save(path)
    return path


def test_cli_validate_against_emt(tiny_model_file, tmp_path, capsys):
    from mlpjax.cli import main

    out = tmp_path / "report"
    rc = main(["validate", str(tiny_model_file), "--reference", "emt", "--quick", "--output", str(out), "--quiet"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    for name in ("report.md", "report.json", "parity.png", "errors.png", "drift.png", "eos.png", "elastic.png",
                 "extrapolation.png", "vibrations.png"):
        assert (out / name).stat().st_size > 0, name
    sec = rep["sections"]
    # the reference side always works: EMT's own a0, B, elastic constants, phonons, VDOS
    assert sec["eos"]["reference"]["lattice_constant_A"] == pytest.approx(3.59, abs=0.01)
    assert sec["elastic"]["reference"]["C44_GPa"] > 0
    assert sec["vdos"]["reference"]["peak_THz"] > 0
    assert len(sec["phonons"]["reference"]["frequencies_THz"]) == 12
    # drift of the (float64) tiny model at the quick timesteps
    assert [r["timestep_fs"] for r in sec["drift"]["runs"]] == [1.0, 2.0]
    assert all(r["status"] == "good" for r in sec["drift"]["runs"])
    assert {r["temperature_K"] for r in sec["extrapolation"]["temperature"]} == {300.0, 900.0, 1500.0}
    assert len(sec["extrapolation"]["strain"]) == 3
    assert sec["parity"]["n_structures"] == 6
    names = [c["name"] for c in rep["checks"]]
    assert any("drift" in n for n in names)
    # an untrained model may not bind Cu: then the EOS section reports why instead of crashing
    if sec["eos"]["model"] is None:
        assert "eos.model" in rep["errors"] and "no minimum" in rep["errors"]["eos.model"]
    else:
        assert "lattice constant a0" in names
    assert "## Energy conservation (NVE)" in md and "## Extrapolation" in md
    printed = capsys.readouterr().out
    assert "NVE dt 1 fs" in printed and "report.md" in printed


def test_cli_validate_against_a_data_file(tiny_model_file, tmp_path):
    from mlpjax.cli import main
    from mlpjax.data import write_extxyz
    from mlpjax.data.emt import emt_cu

    data = tmp_path / "cu.xyz"
    write_extxyz(data, emt_cu(temperatures_K=(300.0,), repeats=(2,), md_frames_per_run=2, n_rattled=2, n_strained=2,
                       liquid_temperatures_K=()))
    out = tmp_path / "report"
    rc = main(["validate", str(tiny_model_file), "--reference", str(data), "--structure", "fcc-Cu:3.59",
               "--skip", "drift,vdos", "--output", str(out), "--quiet"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["reference"]["kind"] == "data" and rep["reference"]["n_structures"] == 6
    sec = rep["sections"]
    assert sec["parity"]["n_structures"] == 6
    assert sec["eos"]["reference"] is None and sec["elastic"]["reference"] is None
    assert "drift" not in sec and "vdos" not in sec
    assert sum(r["n_structures"] for r in sec["extrapolation"]["energy"]) == 6
    assert rep["checks"] == []  # nothing to compare without a reference calculator
    for name in ("report.md", "parity.png", "errors.png", "extrapolation.png"):
        assert (out / name).stat().st_size > 0, name


def test_cli_validate_rejects_unknown_reference(tiny_model_file, tmp_path):
    from mlpjax.cli import main

    assert main(["validate", str(tiny_model_file), "--reference", str(tmp_path / "missing.xyz"), "--quiet"]) == 2


def test_validate_help(capsys):
    from mlpjax.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["validate", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: mlpjax validate" in out and "--reference" in out and "--quick" in out
