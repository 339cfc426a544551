"""The classical pair potentials (mlpjax.models.pair, "morse" and "lj") against independent
references, in float64: ASE's MorsePotential (same quintic switch: exact everywhere, switch region
included) and LennardJones (its cutoff shifts every pair's energy: compared on a cell with no pair
in the switch region, the shift added back), a numpy reference for per-species-pair parameters;
parameters are traced data (gradients against finite differences), readable and symmetric; the
physical potential of pair_potential and to_physical; NVE through mlpjax.md.simulate.

The shared physics contract (tests/test_physics.py) runs both models through TINY_CONFIGS.
"""

from __future__ import annotations

import ase
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.lj import LennardJones
from ase.calculators.morse import MorsePotential, fcut
from ase.neighborlist import neighbor_list

from conftest import config
from mlpjax import models
from mlpjax.graph import make_budget, pack, to_graphs
from mlpjax.models.pair import pair_potential, switch, to_physical
from mlpjax.potential import parameter_paths

# Girifalco & Weizer (1959) Morse Cu, Halicioglu & Pound (1975) LJ Cu: the configs' defaults
D, ALPHA, R0 = 0.3429, 1.3588, 2.866  # eV, 1/Å, Å
EPS, SIGMA = 0.4093, 2.338  # eV, Å


def _cu(repeat=3, rattle=0.05, seed=0, shear=False):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    if shear:
        atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.0, 0.0], [0.1, 1.0, 0.0], [-0.05, 0.08, 1.02]]), scale_atoms=True)
    atoms.rattle(rattle, seed=seed)
    return atoms


def _results(pot, atoms):
    atoms = atoms.copy()
    atoms.calc = pot.calculator()
    return {"energy": atoms.get_potential_energy(), "energies": atoms.get_potential_energies(),
            "forces": atoms.get_forces(), "stress": atoms.get_stress() if atoms.pbc.all() else None}


def _predict_fn(pot, structures):
    """(jitted params -> Predictions, batch) for a float64 batch of ``structures``."""
    graphs = to_graphs([config(a) for a in structures], pot.species, pot.cutoff)
    batch = pack(graphs, make_budget(graphs, len(graphs)), dtype=np.float64)
    return jax.jit(lambda params: pot.predict(params, batch)), batch


# ----------------------------------------------------------------------------- references
@pytest.mark.parametrize("shear", [False, True], ids=["cubic", "triclinic"])
def test_morse_equals_ase_morse_potential(shear):
    """ASE's MorsePotential(epsilon=D, rho0=α r0, r0, rcut1=(r_c − w)/r0, rcut2=r_c/r0) is the same
    function, switch included (ase.calculators.morse.fcut): energies, per-atom energies, forces and
    stress agree to rounding on rattled Cu with pairs in the switch region."""
    cutoff, width = 6.0, 1.0
    pot = pair_potential("morse", ["Cu"], cutoff, switch_width_A=width)
    atoms = _cu(shear=shear)
    d = neighbor_list("d", atoms, cutoff)
    assert np.sum((d > cutoff - width) & (d < cutoff)) > 100  # the switch region is exercised
    ref = atoms.copy()
    ref.calc = MorsePotential(epsilon=D, rho0=ALPHA * R0, r0=R0, rcut1=(cutoff - width) / R0, rcut2=cutoff / R0)
    ours = _results(pot, atoms)
    assert np.max(np.abs(ours["forces"])) > 0.3  # eV/Å: a rattled cell, not a vacuous comparison
    assert abs(ours["energy"] - ref.get_potential_energy()) < 1e-10 * len(atoms)
    np.testing.assert_allclose(ours["energies"], ref.get_potential_energies(), atol=1e-11)
    np.testing.assert_allclose(ours["forces"], ref.get_forces(), atol=1e-11)
    np.testing.assert_allclose(ours["stress"], ref.get_stress(), atol=1e-12)


def test_lj_equals_ase_lennard_jones():
    """ASE's LennardJones(smooth=False) subtracts φ(r_c) from every pair within r_c (forces untouched)
    and has a different switch (smooth=True: a C¹ cubic in r²), so the comparison uses a cutoff in
    the gap between fcc shells 4 (5.105 Å) and 5 (5.708 Å): no pair in our switch region, and ASE's
    energy + φ(r_c) per pair is the plain LJ sum."""
    cutoff, width = 5.45, 0.1
    pot = pair_potential("lj", ["Cu"], cutoff, switch_width_A=width)
    atoms = _cu(rattle=0.02, seed=1)
    i, d = neighbor_list("id", atoms, cutoff + 0.2)
    assert not np.any((d > cutoff - width - 0.05) & (d < cutoff + 0.05)), "a pair lies in the switch region"
    inside = d < cutoff
    ref = atoms.copy()
    ref.calc = LennardJones(epsilon=EPS, sigma=SIGMA, rc=cutoff, smooth=False)
    e_rc = 4 * EPS * ((SIGMA / cutoff) ** 12 - (SIGMA / cutoff) ** 6)
    per_atom_pairs = np.bincount(i[inside], minlength=len(atoms))  # ordered pairs j → i within r_c
    ours = _results(pot, atoms)
    assert np.max(np.abs(ours["forces"])) > 0.3
    np.testing.assert_allclose(ours["energies"], ref.get_potential_energies() + 0.5 * per_atom_pairs * e_rc, atol=1e-11)
    assert abs(ours["energy"] - (ref.get_potential_energy() + 0.5 * inside.sum() * e_rc)) < 1e-10 * len(atoms)
    np.testing.assert_allclose(ours["forces"], ref.get_forces(), atol=1e-11)
    np.testing.assert_allclose(ours["stress"], ref.get_stress(), atol=1e-12)


def _numpy_pair_energies(atoms, species, tables, cutoff, width, phi):
    """Reference per-atom energies ½ Σ_j φ_{ab}(r) fcut(r) with ASE's neighbour list and switch."""
    i, j, d = neighbor_list("ijd", atoms, cutoff)
    idx = np.array([species.index(z) for z in atoms.numbers])
    a, b = idx[i], idx[j]
    p = {k: 0.5 * (t + np.swapaxes(t, 0, 1))[a, b] for k, t in tables.items()}
    return np.bincount(i, weights=0.5 * phi(d, p) * fcut(d, cutoff - width, cutoff), minlength=len(atoms))


def _with_tables(pot, tables):
    return pot.replace(params={"params": {k: jnp.asarray(v) for k, v in tables.items()}})


@pytest.mark.parametrize("name", ["morse", "lj", "morse_spline"])
def test_species_pair_parameters_against_numpy(name):
    """Three species, a different (and non-symmetric) table for every parameter: per-atom energies
    match an independent numpy sum over ASE's neighbour list with each pair's symmetrised value,
    and the forces are the energy's central finite differences."""
    rng = np.random.default_rng(7)
    species = [29, 47, 79]  # Cu, Ag, Au
    cutoff, width = 6.0, 1.5
    atoms = _cu(repeat=2, rattle=0.1, seed=3, shear=True)
    atoms.numbers = rng.choice(species, size=len(atoms))
    options = {}
    if name in ("morse", "morse_spline"):
        tables = {"D": rng.uniform(0.2, 0.5, (3, 3)), "alpha": rng.uniform(1.1, 1.6, (3, 3)), "r0": rng.uniform(2.6, 3.0, (3, 3))}
        elements = []
        if name == "morse_spline":  # 7 knots 2.0-4.5 Å (h = 5/12 Å), scipy's B-spline basis elements as the reference
            from scipy.interpolate import BSpline

            options = {"knots": 7, "knot_min_A": 2.0}
            tables["spline"] = rng.normal(0.0, 0.1, (3, 3, 7))
            h = (cutoff - width - 2.0) / 6
            elements = [BSpline.basis_element(2.0 + k * h + h * np.arange(-2, 3), extrapolate=False) for k in range(7)]

        def spline_terms(r, p):  # 0 for plain Morse (no basis elements)
            return sum((p["spline"][..., k] * np.nan_to_num(b(r)) for k, b in enumerate(elements)), 0.0)

        def phi(r, p):
            e = np.exp(-p["alpha"] * (r - p["r0"]))
            return p["D"] * (e * e - 2 * e) + spline_terms(r, p)
    else:
        tables = {"epsilon": rng.uniform(0.3, 0.5, (3, 3)), "sigma": rng.uniform(2.2, 2.5, (3, 3))}

        def phi(r, p):
            x6 = (p["sigma"] / r) ** 6
            return 4 * p["epsilon"] * (x6 * x6 - x6)

    pot = _with_tables(pair_potential(name, species, cutoff, switch_width_A=width, **options), tables)
    ours = _results(pot, atoms)
    expected = _numpy_pair_energies(atoms, species, tables, cutoff, width, phi)
    np.testing.assert_allclose(ours["energies"], expected, atol=1e-11)
    assert np.max(np.abs(ours["forces"])) > 0.1
    h, probe = 1e-5, atoms.copy()
    for k in (0, 5):
        for c in range(3):
            e = []
            for s in (h, -h):
                probe.positions = atoms.positions.copy()
                probe.positions[k, c] += s
                e.append(_numpy_pair_energies(probe, species, tables, cutoff, width, phi).sum())
            assert abs(-(e[0] - e[1]) / (2 * h) - ours["forces"][k, c]) < 1e-7


def test_switch_is_one_then_zero_with_two_vanishing_derivatives():
    cutoff, width = 5.0, 0.8
    s = lambda r: switch(jnp.atleast_1d(r), cutoff, width)[0]  # noqa: E731
    ds, d2s = jax.grad(s), jax.grad(jax.grad(s))
    for r in (cutoff - width, cutoff):
        assert abs(float(ds(r))) < 1e-12 and abs(float(d2s(r))) < 1e-12
    for r in (0.5, cutoff - width - 1e-9):
        assert float(s(r)) == 1.0
    for r in (cutoff, cutoff + 0.3):
        assert float(s(r)) == 0.0
    r = jnp.linspace(cutoff - width, cutoff, 101)
    values = np.asarray(switch(r, cutoff, width))
    assert np.all(np.diff(values) <= 0) and values[50] == pytest.approx(0.5)
    np.testing.assert_allclose(values, fcut(np.asarray(r), cutoff - width, cutoff), atol=1e-15)  # ASE's switch


def test_dimer_minimum_and_isolated_atoms():
    """With scale 1, shift 0, E0 0: a dimer at the minimum has energy −D (−ε) and no force; an
    isolated atom has energy 0."""
    for name, r_min, depth in (("morse", R0, D), ("lj", 2 ** (1 / 6) * SIGMA, EPS)):
        pot = pair_potential(name, ["Cu"], 6.0)
        dimer = _results(pot, ase.Atoms("Cu2", positions=[[0, 0, 0], [r_min, 0, 0]], cell=np.eye(3) * 20))
        assert dimer["energy"] == pytest.approx(-depth, abs=1e-12)
        assert np.max(np.abs(dimer["forces"])) < 1e-12
        single = _results(pot, ase.Atoms("Cu", positions=[[0, 0, 0]], cell=np.eye(3) * 20))
        assert single["energy"] == 0.0


# ----------------------------------------------------------------------------- parameters
def test_parameters_are_named_physically_and_initialised_to_the_config():
    pot = pair_potential("morse", ["Cu", "O"], 5.0, D_eV=0.5)
    assert parameter_paths(pot.params) == ["params/D", "params/alpha", "params/r0"]
    p = pot.params["params"]
    np.testing.assert_array_equal(np.asarray(p["D"]), np.full((2, 2), 0.5))
    np.testing.assert_array_equal(np.asarray(p["alpha"]), np.full((2, 2), ALPHA))
    np.testing.assert_array_equal(np.asarray(p["r0"]), np.full((2, 2), R0))
    assert (pot.energy_scale, pot.energy_shift, pot.reference_energies) == (1.0, 0.0, (0.0, 0.0))
    lj = pair_potential("lj", [29], 5.0)
    assert parameter_paths(lj.params) == ["params/epsilon", "params/sigma"]
    with pytest.raises(ValueError, match="unknown morse option"):
        pair_potential("morse", ["Cu"], 5.0, epsilon_eV=1.0)
    with pytest.raises(ValueError, match="exceeds the cutoff"):
        pair_potential("lj", ["Cu"], 2.0, switch_width_A=2.5)
    with pytest.raises(ValueError, match="must be positive"):
        models.make_config("morse", {"alpha_per_A": -1.0})
    with pytest.raises(ValueError, match="not a pair potential"):
        pair_potential("schnet", ["Cu"], 5.0)


@pytest.mark.parametrize("name", ["morse", "lj"])
def test_parameter_gradients_equal_finite_differences(name):
    """The parameters are traced data: jax.grad of a rattled cell's energy with respect to every
    parameter table (D or ε first) equals central finite differences, and is symmetric."""
    pot = pair_potential(name, ["Cu", "Ag"], 5.5)
    atoms = _cu(repeat=2, rattle=0.1, seed=4)
    atoms.numbers[::3] = 47
    graphs = to_graphs([config(atoms)], pot.species, pot.cutoff)
    batch = pack(graphs, make_budget(graphs, 1), dtype=np.float64)
    energy = jax.jit(lambda params: pot.predict(params, batch, compute_stress=False).energy[0])
    grads = jax.grad(energy)(pot.params)["params"]
    h = 1e-6
    for key, table in pot.params["params"].items():
        g = np.asarray(grads[key])
        assert np.max(np.abs(g)) > 1e-2, key
        np.testing.assert_allclose(g, g.T, atol=1e-12, err_msg=key)
        for a, b in ((0, 0), (0, 1), (1, 1)):
            def shifted(s):
                t = np.asarray(table).copy()
                t[a, b] += s
                return float(energy({"params": {**pot.params["params"], key: jnp.asarray(t)}}))

            fd = (shifted(h) - shifted(-h)) / (2 * h)
            assert abs(fd - g[a, b]) < 1e-6 * max(1.0, abs(fd)), (key, a, b, fd, g[a, b])


def test_morse_spline_correction_gradients_and_core():
    """Morse + spline: starts as the Morse potential (coefficients 0), jax.grad with respect to the
    [S, S, K] coefficients equals central finite differences and is symmetric in the species pair,
    a coefficient changes φ only within 2h of its knot, and to_physical scales the coefficients."""
    atoms = _cu(repeat=2, rattle=0.1, seed=4)
    atoms.numbers[::3] = 47
    spline = pair_potential("morse_spline", ["Cu", "Ag"], 5.5, knots=8)
    morse = pair_potential("morse", ["Cu", "Ag"], 5.5)
    assert parameter_paths(spline.params) == ["params/D", "params/alpha", "params/r0", "params/spline"]
    np.testing.assert_array_equal(np.asarray(spline.params["params"]["spline"]), np.zeros((2, 2, 8)))
    a, b = _results(spline, atoms), _results(morse, atoms)
    np.testing.assert_allclose(a["energies"], b["energies"], atol=1e-12)
    graphs = to_graphs([config(atoms)], spline.species, spline.cutoff)
    batch = pack(graphs, make_budget(graphs, 1), dtype=np.float64)
    energy = jax.jit(lambda params: spline.predict(params, batch, compute_stress=False).energy[0])
    g = np.asarray(jax.grad(energy)(spline.params)["params"]["spline"])  # [2, 2, 8]
    assert np.max(np.abs(g)) > 1e-2
    np.testing.assert_allclose(g, np.swapaxes(g, 0, 1), atol=1e-12)
    h = 1e-6
    for idx in ((0, 0, 0), (0, 1, 3), (1, 1, 7)):
        def shifted(s):
            t = np.asarray(spline.params["params"]["spline"]).copy()
            t[idx] += s
            return float(energy({"params": {**spline.params["params"], "spline": jnp.asarray(t)}}))

        fd = (shifted(h) - shifted(-h)) / (2 * h)
        assert abs(fd - g[idx]) < 1e-6 * max(1.0, abs(fd)), (idx, fd, g[idx])
    # a dimer: coefficient k moves φ(r) only for |r − r_k| < 2h (here r_k = 2 + k h, h = 2.5/7 Å)
    step = 2.5 / 7
    t = np.zeros((2, 2, 8))
    t[0, 0, 4] = 0.3
    bumped = _with_tables(spline, {**{k: np.asarray(v) for k, v in spline.params["params"].items()}, "spline": t})
    for r in (1.6, 2.0 + 4 * step - 2.01 * step, 2.0 + 4 * step + 2.01 * step):
        dimer = ase.Atoms("Cu2", positions=[[0, 0, 0], [r, 0, 0]], cell=np.eye(3) * 20)
        assert _results(bumped, dimer)["energy"] == pytest.approx(_results(spline, dimer)["energy"], abs=1e-12)
    dimer = ase.Atoms("Cu2", positions=[[0, 0, 0], [2.0 + 4 * step, 0, 0]], cell=np.eye(3) * 20)
    assert _results(bumped, dimer)["energy"] - _results(spline, dimer)["energy"] == pytest.approx(0.3 * 2 / 3, abs=1e-12)
    phys = to_physical(bumped.replace(energy_scale=0.5))
    np.testing.assert_allclose(np.asarray(phys.params["params"]["spline"]), 0.5 * t)
    with pytest.raises(ValueError, match="knots must be >= 2"):
        models.make_config("morse_spline", {"knots": 1})
    with pytest.raises(ValueError, match="must exceed knot_min_A"):
        pair_potential("morse_spline", ["Cu"], 3.0, knot_min_A=2.5)


def test_pairs_share_one_value():
    """(a, b) and (b, a) use (P_ab + P_ba)/2: a non-symmetric table gives the energy of its symmetric part."""
    pot = pair_potential("lj", ["Cu", "Ag"], 5.0)
    atoms = _cu(repeat=2, rattle=0.05, seed=5)
    atoms.numbers[::2] = 47
    eps = np.array([[0.4, 0.2], [0.6, 0.3]])
    sym = 0.5 * (eps + eps.T)
    sigma = np.array([[2.3, 2.2], [2.5, 2.4]])
    a = _results(_with_tables(pot, {"epsilon": eps, "sigma": sigma}), atoms)
    b = _results(_with_tables(pot, {"epsilon": sym, "sigma": 0.5 * (sigma + sigma.T)}), atoms)
    assert a["energy"] == pytest.approx(b["energy"], abs=1e-12)
    np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-12)


def test_to_physical_folds_the_normalisation_into_the_parameters():
    """A trained pair potential (E0, shift, scale from the data) and its to_physical form give the
    same energies and forces; the latter has scale 1, shift 0 and D multiplied by the old scale."""
    base = pair_potential("morse", ["Cu", "Ag"], 5.0)
    trained = base.replace(energy_scale=0.7, energy_shift=0.13, reference_energies=(-3.7, -2.9))
    phys = to_physical(trained)
    assert (phys.energy_scale, phys.energy_shift) == (1.0, 0.0)
    assert phys.reference_energies == pytest.approx((-3.57, -2.77))
    np.testing.assert_allclose(np.asarray(phys.params["params"]["D"]), 0.7 * D)
    np.testing.assert_array_equal(np.asarray(phys.params["params"]["r0"]), np.asarray(base.params["params"]["r0"]))
    atoms = _cu(repeat=2, rattle=0.05, seed=6)
    atoms.numbers[1::4] = 47
    a, b = _results(trained, atoms), _results(phys, atoms)
    np.testing.assert_allclose(a["energies"], b["energies"], atol=1e-12)
    np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-12)
    np.testing.assert_allclose(a["stress"], b["stress"], atol=1e-13)


def test_masked_edges_are_nan_safe():
    """Padding edges (masked, pointing anywhere) contribute nothing to energies or to the gradient with
    respect to positions and parameters, under jax_debug_nans (on in conftest)."""
    assert jax.config.jax_debug_nans
    pot = pair_potential("lj", ["Cu"], 5.0)
    atoms = _cu(repeat=2, rattle=0.05, seed=8)
    graphs = to_graphs([config(atoms)], pot.species, pot.cutoff)
    tight = pack(graphs, make_budget(graphs, 1), dtype=np.float64)
    roomy = pack(graphs, make_budget(graphs, 1, multiple=512), dtype=np.float64)
    assert roomy.edge_mask.shape[0] > int(np.sum(roomy.edge_mask))  # there are padding edges

    def energy(params, batch):
        return pot.predict(params, batch).energy[0]

    for batch in (tight, roomy):
        g = jax.grad(energy)(pot.params, batch)["params"]
        assert all(np.all(np.isfinite(np.asarray(v))) for v in g.values())
    assert float(energy(pot.params, tight)) == pytest.approx(float(energy(pot.params, roomy)), abs=1e-10)


# ----------------------------------------------------------------------------- MD
def test_nve_energy_conservation_morse_cu_float64():
    """108-atom Morse Cu (Girifalco-Weizer), ~100 K, dt = 1 fs, 200 steps of velocity Verlet through
    mlpjax.md.simulate: the first potential energy is ASE's MorsePotential's, and max |E_tot(t) −
    E_tot(0)|/N < 1e-5 eV/atom (measured 1e-6 over 400 steps) while E_kin/N swings by more than
    1e-3 eV/atom (measured 4.5e-3)."""
    from mlpjax.md import MDConfig, simulate

    cutoff, width = 4.8, 0.8  # 2 (cutoff + skin) < the 10.83 Å box: no internal supercell
    pot = pair_potential("morse", ["Cu"], cutoff, switch_width_A=width)
    atoms = _cu(repeat=3, rattle=0.02, seed=0)
    n = len(atoms)
    ref = atoms.copy()
    ref.calc = MorsePotential(epsilon=D, rho0=ALPHA * R0, r0=R0, rcut1=(cutoff - width) / R0, rcut2=cutoff / R0)
    cfg = MDConfig(ensemble="nve", temperature_K=100.0, timestep_fs=1.0, steps=200, chunk_steps=100, log_every=10,
                   traj_every=100, dtype="float64", seed=0)
    result = simulate(pot, atoms, cfg, progress=False)
    etot = result.thermo["E_tot_eV"]
    assert len(etot) == 21
    assert abs(result.thermo["E_pot_eV"][0] - ref.get_potential_energy()) < 1e-9 * n
    drift = np.abs(etot - etot[0]).max() / n
    assert drift < 1e-5, f"E_tot changed by {drift:.2e} eV/atom"
    assert np.ptp(result.thermo["E_kin_eV"]) / n > 1e-3


# ----------------------------------------------------------------------------- training
def test_training_fits_forces_and_keeps_parameters_readable(tmp_path):
    """mlpjax.training.train on EMT Cu-Ag (forces only: the trainer's E0 and shift absorb the mean energy
    per atom, so the pair sum's own mean energy would be an offset it cannot fit) lowers the force
    error; the parameters keep their names and stay symmetric under Adam; to_physical gives the
    same forces with the energy scale folded into D."""
    from ase.calculators.emt import EMT

    from mlpjax import data
    from mlpjax.config import TrainConfig
    from mlpjax.training import train

    rng = np.random.default_rng(0)
    configs = []
    for k in range(12):
        atoms = _cu(repeat=2, rattle=0.1, seed=10 + k)
        atoms.numbers[rng.random(len(atoms)) < 0.3] = 47
        atoms.calc = EMT()
        c = data.Configuration.from_atoms(atoms, source="emt-cuag", frame=k)
        c.energy, c.forces = float(atoms.get_potential_energy()), np.array(atoms.get_forces())
        configs.append(c)
    cfg = TrainConfig(model="morse", cutoff=5.0, batch_size=4, epochs=25, learning_rate=0.01, schedule="constant",
                      energy_weight=0.0, forces_weight=1.0, valid_fraction=0.25, patience=None, dtype="float64")
    result = train(cfg, configs, output_dir=tmp_path, progress=False)
    hist = result.history
    assert hist[-1]["valid_force_mae_meV_per_A"] < 0.8 * hist[0]["valid_force_mae_meV_per_A"]
    pot = result.potential
    assert pot.energy_scale != 1.0  # the trainer normalised on the data
    assert parameter_paths(pot.params) == ["params/D", "params/alpha", "params/r0"]
    for key, table in pot.params["params"].items():
        t = np.asarray(table)
        np.testing.assert_allclose(t, t.T, rtol=1e-12, err_msg=key)
    assert not np.allclose(np.asarray(pot.params["params"]["r0"]), R0)  # it learned something
    phys = to_physical(pot)
    atoms = _cu(repeat=2, rattle=0.1, seed=99)
    atoms.numbers[::3] = 47
    np.testing.assert_allclose(_results(phys, atoms)["forces"], _results(pot, atoms)["forces"], atol=1e-10)
