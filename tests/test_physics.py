"""The physics contract, for every registered model × {float32, float64}.

Symmetries (O(3) incl. reflections, translations, permutations), forces and stress
as derivatives of the energy (finite differences, ASE's numerical stress), batch
independence (no gradient leakage), smoothness at the cutoff, size consistency
through jax-md on a 16,384-atom cell (SchNet, compiled at XLA's default optimisation level; an
864-atom one for the other models), agreement of jax-md / ASE / batched prediction, the isolated-atom limit,
and NVE energy conservation through mlpjax.md.simulate for an equivariant model (PaiNN; SchNet's
is in test_md.py).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import warnings

import ase
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax_md import space

from conftest import (
    CUTOFF,
    ENERGY_SHIFT,
    DTYPES,
    REFERENCE_ENERGIES,
    SPECIES,
    config,
    cu_atoms,
    cu108_triclinic_rotated,
    cu_triclinic_atoms,
    ethanol_atoms,
    get_model,
    random_orthogonal,
)
from mlpjax.graph import Budget

# Two fixed budgets for all batched tests: few compilations per model × dtype.
BUDGET = Budget(n_nodes=256, n_edges=12288, n_graphs=8)  # up to 7 crystals / molecules
SMALL = Budget(n_nodes=512, n_edges=2048, n_graphs=160)  # many small clusters, or one 32-atom cell


def _check_nontrivial(res):
    """Guard against vacuous passes: the tiny model must give non-zero forces."""
    assert np.max(np.abs(res["forces"])) > 1e-3, "forces vanish: symmetry test would be vacuous"


def _assert_same(model, a, b, what=""):
    tol = model.tol
    n = a["n_atoms"]
    assert b["n_atoms"] == n
    e_tol = tol["energy"] + tol["rtol"] * abs(a["energy"]) / n
    assert abs(a["energy"] - b["energy"]) / n <= e_tol, f"{what}: energy/atom {a['energy'] / n} vs {b['energy'] / n}"
    np.testing.assert_allclose(b["forces"], a["forces"], atol=tol["forces"], rtol=tol["rtol"], err_msg=f"{what}: forces")
    np.testing.assert_allclose(b["stress"], a["stress"], atol=tol["stress"], rtol=tol["rtol"], err_msg=f"{what}: stress")


# ---------------------------------------------------------------------------
# Symmetries
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("reflect", [False, True], ids=["SO3", "reflection"])
def test_rotation_invariance_and_force_equivariance(model, structure, reflect, rng):
    name, atoms = structure
    Q = random_orthogonal(rng, reflect=reflect)
    rot = atoms.copy()
    rot.set_cell(atoms.cell.array @ Q.T, scale_atoms=False)  # rows are lattice vectors
    rot.positions = atoms.positions @ Q.T
    a, b = model.run([config(atoms), config(rot)], BUDGET)
    _check_nontrivial(a)
    expected = dict(a, forces=a["forces"] @ Q.T, stress=Q @ a["stress"] @ Q.T)
    _assert_same(model, expected, b, f"{name} rotated")
    if atoms.pbc.any():
        assert np.max(np.abs(a["stress"])) > 1e-5, "stress vanishes: test would be vacuous"


def test_translation_invariance(model, structure, rng):
    name, atoms = structure
    moved = atoms.copy()
    moved.positions = atoms.positions + rng.normal(size=3) * 3.0
    a, b = model.run([config(atoms), config(moved)], BUDGET)
    _check_nontrivial(a)
    _assert_same(model, a, b, f"{name} translated")


def test_permutation_invariance(model, structure, rng):
    """Permuting atoms (numbers along with positions, so same-element atoms swap among
    themselves and with others) leaves E and σ unchanged and permutes the forces."""
    name, atoms = structure
    perm = rng.permutation(len(atoms))
    shuffled = atoms[perm]
    # also a permutation among same-element atoms only (numbers unchanged)
    same = np.arange(len(atoms))
    for z in np.unique(atoms.numbers):
        idx = np.flatnonzero(atoms.numbers == z)
        same[idx] = rng.permutation(idx)
    swapped = atoms.copy()
    swapped.positions = atoms.positions[same]
    a, b, c = model.run([config(atoms), config(shuffled), config(swapped)], BUDGET)
    _check_nontrivial(a)
    _assert_same(model, dict(a, forces=a["forces"][perm]), b, f"{name} permuted")
    _assert_same(model, dict(a, forces=a["forces"][same]), c, f"{name} same-element permuted")


# ---------------------------------------------------------------------------
# Forces and stress are derivatives of the energy (float64)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["cu_triclinic", "ethanol"])
def test_forces_equal_finite_differences(model64, which, rng):
    atoms = {"cu_triclinic": cu_triclinic_atoms, "ethanol": ethanol_atoms}[which]()
    batch = model64.pack([config(atoms)], BUDGET)
    out = model64.predict(model64.pot.params, batch)
    h = 1e-5
    atoms_idx = rng.choice(len(atoms), size=4, replace=False)
    displaced = []
    for i in atoms_idx:
        for c in range(3):
            for sign in (1.0, -1.0):
                pos = np.array(batch.positions)
                pos[i, c] += sign * h
                displaced.append(pos)
    e = np.asarray(model64.energies_of_positions(model64.pot.params, batch, np.stack(displaced)))[:, 0]
    fd = -(e[0::2] - e[1::2]) / (2 * h)
    predicted = np.asarray(out.forces)[atoms_idx].reshape(-1)
    assert np.max(np.abs(predicted)) > 1e-3
    np.testing.assert_allclose(predicted, fd, atol=1e-6, rtol=1e-6)


def test_stress_equals_strain_derivative(model64):
    """σ_ij = (1/V) ∂E/∂ε_ij by central differences of a homogeneous deformation of
    positions and cell (all 9 components of a general, non-symmetric deformation:
    a rotation-invariant energy only sees the symmetric part)."""
    atoms = cu_triclinic_atoms()
    batch = model64.pack([config(atoms)], BUDGET)
    out = model64.predict(model64.pot.params, batch)
    h = 1e-5
    defs = []
    for i in range(3):
        for j in range(3):
            for sign in (1.0, -1.0):
                F = np.eye(3)
                F[i, j] += sign * h
                defs.append(F)
    e = np.asarray(model64.energies_of_strain(model64.pot.params, batch, np.stack(defs)))[:, 0]
    volume = abs(np.linalg.det(atoms.cell.array))
    fd = ((e[0::2] - e[1::2]) / (2 * h * volume)).reshape(3, 3)
    stress = np.asarray(out.stress[0])
    assert np.max(np.abs(stress)) > 1e-4
    np.testing.assert_allclose(stress, stress.T, atol=1e-12)
    np.testing.assert_allclose(stress, fd, atol=1e-8, rtol=1e-6)


def test_stress_matches_ase_numerical_stress(model64):
    atoms = cu_triclinic_atoms()
    atoms.calc = model64.calculator
    analytic = atoms.get_stress(voigt=True)
    with warnings.catch_warnings():  # ASE suggests FiniteDifferenceCalculator; same numbers
        warnings.simplefilter("ignore", FutureWarning)
        numeric = atoms.calc.calculate_numerical_stress(atoms, d=1e-5, voigt=True)
    assert np.max(np.abs(analytic)) > 1e-4
    np.testing.assert_allclose(analytic, numeric, atol=1e-8, rtol=1e-6)


# ---------------------------------------------------------------------------
# Batches: same results as alone, no leakage between structures
# ---------------------------------------------------------------------------


def test_batch_equals_individual(model):
    structures = [cu_atoms(), ethanol_atoms(), cu_triclinic_atoms(), ethanol_atoms(seed=7)]
    together = model.run([config(a) for a in structures], BUDGET)
    for k, atoms in enumerate(structures):
        (alone,) = model.run([config(atoms)], SMALL)  # another budget, alone
        _assert_same(model, alone, together[k], f"structure {k} in a batch")
        if not atoms.pbc.any():
            assert np.all(together[k]["stress"] == 0.0)


def test_no_gradient_leakage_between_structures(model):
    """∂E_A/∂R_B is exactly zero for structures A ≠ B in one batch (and for padding)."""
    structures = [cu_atoms(), ethanol_atoms(), cu_triclinic_atoms()]
    budget = Budget(n_nodes=128, n_edges=4096, n_graphs=4)
    batch = model.pack([config(a) for a in structures], budget)
    pot, params = model.pot, model.pot.params

    def energies(pos):
        return pot.predict(params, batch._replace(positions=pos), compute_stress=False).energy

    J = np.asarray(jax.jit(jax.jacrev(energies))(jnp.asarray(batch.positions)))  # [G, N, 3]
    node_graph = np.asarray(batch.node_graph)
    node_mask = np.asarray(batch.node_mask)
    for g in range(len(structures)):
        own = (node_graph == g) & node_mask
        assert np.max(np.abs(J[g][own])) > 1e-3, "own gradient must be non-zero"
        assert np.all(J[g][~own] == 0.0), f"structure {g}'s energy depends on other structures' positions"

    # Cross blocks of the Hessian (forces of A w.r.t. positions of B) vanish too:
    # a random displacement of structure B's atoms only changes B's forces.
    def forces(pos):
        return pot.predict(params, batch._replace(positions=pos), compute_stress=False).forces

    forces_jvp = jax.jit(lambda pos, v: jax.jvp(forces, (pos,), (v,))[1])
    rng = np.random.default_rng(0)
    for g in range(len(structures)):
        own = (node_graph == g) & node_mask
        v = np.where(own[:, None], rng.normal(size=batch.positions.shape), 0.0).astype(batch.positions.dtype)
        dF = np.asarray(forces_jvp(jnp.asarray(batch.positions), jnp.asarray(v)))
        assert np.all(dF[~own] == 0.0), f"forces of other structures depend on structure {g}'s positions"
        assert np.max(np.abs(dF[own])) > 1e-3


# ---------------------------------------------------------------------------
# Smoothness at the cutoff
# ---------------------------------------------------------------------------


def _dimer(r):
    return ase.Atoms("Cu2", positions=[[0.0, 0.0, 0.0], [r, 0.0, 0.0]])


_TRIMER_HALF = 0.7  # Å, half the fixed A-B distance


def _trimer(r):
    """H and O fixed, C on their perpendicular bisector at distance r from both."""
    y = np.sqrt(r**2 - _TRIMER_HALF**2)
    return ase.Atoms("HOC", positions=[[-_TRIMER_HALF, 0, 0], [_TRIMER_HALF, 0, 0], [0, y, 0]])


def _trimer_beyond(model):
    """Energy of the trimer once C is beyond the cutoff: H-O dimer + isolated C."""
    ho = ase.Atoms("HO", positions=[[-_TRIMER_HALF, 0, 0], [_TRIMER_HALF, 0, 0]])
    c = ase.Atoms("C", positions=[[0, 0, 0]])
    a, b = model.run([config(ho), config(c)], SMALL)
    return a["energy"] + b["energy"]


@pytest.mark.parametrize("system", ["dimer", "trimer"])
def test_energy_smooth_across_cutoff(model, system):
    build = {"dimer": _dimer, "trimer": _trimer}[system]
    moving = {"dimer": 1, "trimer": 2}[system]
    h = 2e-3
    radii = CUTOFF + np.arange(-125, 26) * h  # from r_c - 0.25 Å to r_c + 0.05 Å
    res = model.run([config(build(r)) for r in radii], SMALL)
    e = np.array([x["energy"] for x in res])
    f = np.array([np.linalg.norm(x["forces"][moving]) for x in res])
    tol = model.tol
    n = len(build(CUTOFF))
    slack = 2 * n * (tol["energy"] + tol["rtol"] * np.max(np.abs(e)) / n)
    assert np.max(f[radii < CUTOFF - 0.1]) > 1e-4, "no interaction: test would be vacuous"
    # continuity: each step changes E by at most ~ h |F| (+ curvature and rounding)
    jumps = np.abs(np.diff(e))
    bound = 1.2 * h * np.maximum(f[:-1], f[1:]) + 50.0 * h**2 + slack
    assert np.all(jumps <= bound), f"energy jumps {jumps[jumps > bound]} at r = {radii[:-1][jumps > bound]}"
    # beyond the cutoff: separated energy, zero force on the moving atom
    beyond = radii >= CUTOFF + 1e-9
    if system == "trimer":
        e_sep = _trimer_beyond(model)
    else:
        e_sep = 2 * model.run([config(ase.Atoms("Cu", positions=[[0, 0, 0]]))], SMALL)[0]["energy"]
    np.testing.assert_allclose(e[beyond], e_sep, atol=slack)
    assert np.all(f[beyond] <= tol["forces"])
    # forces vanish continuously at the cutoff
    just_inside = (radii < CUTOFF) & (radii > CUTOFF - 3 * h)
    assert np.all(f[just_inside] <= 0.05 * np.max(f) + tol["forces"])


@pytest.mark.parametrize("system", ["dimer", "trimer"])
def test_cutoff_energy_difference_is_second_order(model64, system):
    """E(r_c - δ) - E(separated) = O(δ²) and |F(r_c - δ)| = O(δ)."""
    build = {"dimer": _dimer, "trimer": _trimer}[system]
    moving = {"dimer": 1, "trimer": 2}[system]
    deltas = np.array([0.04, 0.02, 0.01, 0.005])
    res = model64.run([config(build(CUTOFF - d)) for d in deltas] + [config(build(CUTOFF + 0.01))], SMALL)
    e = np.array([x["energy"] for x in res])
    de = np.abs(e[:-1] - e[-1])
    f = np.array([np.linalg.norm(x["forces"][moving]) for x in res[:-1]])
    assert de[0] > 1e-9 and f[0] > 1e-8, "no interaction near the cutoff: test would be vacuous"
    ratios_e = de[1:] / de[:-1]  # 1/4 for O(δ²)
    ratios_f = f[1:] / f[:-1]  # 1/2 for O(δ)
    assert np.all(ratios_e < 0.32), f"energy not O(δ²) at the cutoff: ratios {ratios_e}"
    assert np.all(ratios_f < 0.6), f"force not O(δ) at the cutoff: ratios {ratios_f}"


# ---------------------------------------------------------------------------
# Isolated atoms
# ---------------------------------------------------------------------------


def test_isolated_atom_gives_reference_energy_plus_shift(model):
    structures = []
    for z in SPECIES:
        structures.append(ase.Atoms(numbers=[z], positions=[[0.1, 0.2, 0.3]]))  # molecule
        structures.append(ase.Atoms(numbers=[z], positions=[[0.1, 0.2, 0.3]], cell=np.eye(3) * 2.5 * CUTOFF / 2, pbc=True))
    res = model.run([config(a) for a in structures], SMALL)
    for k, z in enumerate(np.repeat(SPECIES, 2)):
        expected = REFERENCE_ENERGIES[SPECIES.index(z)] + ENERGY_SHIFT
        np.testing.assert_allclose(res[k]["energy"], expected, atol=model.tol["energy"], err_msg=f"isolated Z={z}")
        assert np.all(res[k]["forces"] == 0.0)
        assert np.all(res[k]["stress"] == 0.0)


# ---------------------------------------------------------------------------
# jax-md, ASE and the batched forward pass agree
# ---------------------------------------------------------------------------


def _jaxmd_setup(kind):
    """(atoms, displacement, box, R for jax-md, neighbor_fn kwargs)."""
    if kind == "cu_cubic":
        atoms = cu_atoms(repeat=3, seed=5)  # side 10.83 Å > 2 (r_c + skin)
        atoms.wrap()
        side = atoms.cell.array[0, 0]
        disp, _ = space.periodic(side)
        return atoms, disp, side, atoms.positions, {"disable_cell_list": True}, {}
    if kind == "cu_triclinic":
        atoms = cu_triclinic_atoms(repeat=3, seed=6)
        atoms.wrap()
        box = atoms.cell.array.T  # jax-md: columns are lattice vectors
        disp, _ = space.periodic_general(box, fractional_coordinates=True)
        return atoms, disp, box, atoms.get_scaled_positions(), {"fractional_coordinates": True, "disable_cell_list": True}, {}
    if kind == "ethanol":
        atoms = ethanol_atoms()
        disp, _ = space.free()
        return atoms, disp, 100.0, atoms.positions, {"disable_cell_list": True}, {}
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["cu_cubic", "cu_triclinic", "ethanol"])
def test_jaxmd_ase_and_predict_agree(model, kind):
    atoms, disp, box, R, nkw, _ = _jaxmd_setup(kind)
    pot = model.pot
    R = jnp.asarray(R, model.dtype)
    nbr_fn = pot.neighbor_fn(disp, box, **nkw)
    nbrs = nbr_fn.allocate(R)
    assert not bool(nbrs.did_buffer_overflow)
    energy_fn = pot.energy_fn(disp, atoms.numbers)
    force_fn = pot.force_fn(disp, atoms.numbers)

    @jax.jit
    def md(r, nb):
        e, g = jax.value_and_grad(lambda x: energy_fn(x, neighbor=nb))(r)
        return e, force_fn(r, neighbor=nb), -g

    e_md, f_md, f_grad = md(R, nbrs)
    e_md, f_md, f_grad = float(e_md), np.asarray(f_md, np.float64), np.asarray(f_grad, np.float64)
    # (with fractional coordinates, jax-md's periodic_general displacement has a custom
    # derivative that makes gradients w.r.t. fractional positions real-space forces)
    (pred,) = model.run([config(atoms)], BUDGET)
    atoms.calc = model.calculator
    e_ase = atoms.get_potential_energy()
    f_ase = atoms.get_forces()
    tol = model.tol
    n = len(atoms)
    e_tol = n * tol["energy"] + tol["rtol"] * abs(pred["energy"])
    assert np.max(np.abs(pred["forces"])) > 1e-3
    assert abs(e_md - pred["energy"]) <= e_tol, (e_md, pred["energy"])
    assert abs(e_ase - pred["energy"]) <= e_tol, (e_ase, pred["energy"])
    for what, f in (("jax-md force_fn", f_md), ("jax-md -grad(energy_fn)", f_grad), ("ASE", f_ase)):
        np.testing.assert_allclose(f, pred["forces"], atol=tol["forces"], rtol=tol["rtol"], err_msg=what)


# ---------------------------------------------------------------------------
# NVE energy conservation through mlpjax.md.simulate (the MD engine)
# ---------------------------------------------------------------------------

# SchNet's NVE contract (with the output files) is tests/test_md.py::test_nve_energy_conservation_float64;
# here the same run and bounds for an equivariant model (vector features, their gradients through the
# MD engine's parameters and neighbour list). PaiNN is the cheapest equivariant model (~30 s on one
# core; the tiny NequIP costs the same but heats the cell to ~250 K, drifting 1.6e-6 eV/atom).
NVE_MODELS = ("painn",)


@pytest.mark.parametrize("name", NVE_MODELS)
def test_nve_energy_conservation_float64(name):
    """Velocity Verlet with forces that are the exact gradient of a smooth energy: E_tot
    oscillates by O((ω dt)^2) × E_kin and does not drift. Same cell, start and bounds as SchNet's
    case (~50 K, dt = 1 fs; max |E_tot(t) - E_tot(0)|/N < 1e-5 eV/atom, measured 9e-8 for the tiny
    PaiNN, while E_kin/N swings by > 1e-3 eV/atom, measured 2.3e-3: the size of the error that
    forces inconsistent with the energy or a stale neighbour list produce), over 200 steps in two
    chunks instead of 500 (the largest excursion of E_tot, 9e-8, is the same over 100, 200 and 500
    steps; the state still carries across a chunk boundary)."""
    from mlpjax.md import MDConfig, simulate

    model = get_model(name, "float64")
    atoms = cu108_triclinic_rotated()
    n = len(atoms)
    cfg = MDConfig(ensemble="nve", temperature_K=50.0, timestep_fs=1.0, steps=200, chunk_steps=100,
                   log_every=10, traj_every=100, dtype="float64", seed=0)
    atoms.calc = model.calculator
    e_ase = atoms.get_potential_energy()
    result = simulate(model.pot, atoms, cfg, progress=False)
    etot = result.thermo["E_tot_eV"]
    assert len(etot) == 21
    assert abs(result.thermo["E_pot_eV"][0] - e_ase) < 1e-6 * max(1.0, abs(e_ase))
    drift = np.abs(etot - etot[0]).max() / n
    assert drift < 1e-5, f"{name}: E_tot changed by {drift:.2e} eV/atom"
    # the dynamics actually moved energy around (the check is not vacuous)
    assert np.ptp(result.thermo["E_kin_eV"]) / n > 1e-3


# ---------------------------------------------------------------------------
# Size consistency through jax-md on a large cell
# ---------------------------------------------------------------------------


# The 16,384-atom cell runs for SchNet (the cheapest model) in both dtypes: it checks the
# model-independent path that every model shares (jax-md's cell list and Sparse neighbour
# list, the segment sums and the single gradient of mlpjax.potential.compute_properties) at
# the size where jax 0.10.2 miscompiles large vmapped reductions (jax-ml/jax#39103). Every
# other model checks the same per-atom identity (supercell = cell, energy per atom and every
# atom's force) on a 108-atom cell (3x3x3 fcc, side 10.83 Å > 2 (r_c + skin) = 10 Å, so the
# cell alone is a valid minimum image) and its 2x2x2 supercell (864 atoms, side 21.7 Å: jax-md's
# cell list with 4 cells a side): the model-specific code is the same at any size, and the
# smaller pair costs ~1/3 of the 256/2,048-atom one (the default suite's CI budget).
LARGE_REPEAT = {"schnet": 4}  # 4**3 * 256 = 16,384 atoms; default 2**3 * 108 = 864
CELL_REPEAT = {"schnet": 4}  # the cell: CELL_REPEAT**3 cubic fcc cells (4 atoms each); default 3 (108 atoms)

# The suite compiles at XLA optimisation level 0 (tests/conftest.py), which may not run the
# optimisation passes that produced jax-ml/jax#39103. The 16,384-atom cases therefore run in a
# subprocess with XLA's default optimisation level (the two level-0 flags stripped from
# XLA_FLAGS, MLPJAX_TEST_XLA_OPTIMIZE=1 so conftest adds none), on the same tiny model and with
# the same assertions (_check_size_consistency, imported by the subprocess). The 864-atom
# cases of the other models stay in this process.
LEVEL0_XLA_FLAGS = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
_RESULT_TAG = "SIZE-CONSISTENCY-RESULT "
# argv: tests directory, model name, k, cell repeat, dtype names. One interpreter checks every dtype (one jax
# import and one model set-up); each dtype's outcome (values or traceback) is one tagged JSON line.
_DEFAULT_XLA_SCRIPT = """
import json, os, sys, traceback
sys.path.insert(0, sys.argv[1])
import conftest  # float64 enabled, NaN debugging; with MLPJAX_TEST_XLA_OPTIMIZE=1 no XLA flags added
from test_physics import _RESULT_TAG, LEVEL0_XLA_FLAGS, _check_size_consistency
flags = os.environ.get("XLA_FLAGS", "")
assert not any(f.split("=")[0] in flags for f in LEVEL0_XLA_FLAGS), f"level-0 XLA flags in the subprocess: {flags!r}"
name, k, cell_repeat, failed = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), False
for dtype in sys.argv[5:]:
    try:
        e_small, e_big, n_big = _check_size_consistency(conftest.get_model(name, dtype), k, cell_repeat)
        out = {"ok": True, "e_small": e_small, "e_big": e_big, "n_big": n_big}
    except BaseException:  # also pytest.fail (a BaseException) from conftest
        out, failed = {"ok": False, "traceback": traceback.format_exc()}, True
    print(_RESULT_TAG + json.dumps({"dtype": dtype, "xla_flags": flags, **out}), flush=True)
sys.exit(1 if failed else 0)
"""


def _default_xla_env() -> dict:
    """This process's environment with the level-0 XLA flags removed (other flags kept)."""
    env = dict(os.environ)
    level0 = {f.split("=")[0] for f in LEVEL0_XLA_FLAGS}
    kept = [f for f in env.get("XLA_FLAGS", "").split() if f.split("=")[0] not in level0]
    if kept:
        env["XLA_FLAGS"] = " ".join(kept)
    else:
        env.pop("XLA_FLAGS", None)
    env["MLPJAX_TEST_XLA_OPTIMIZE"] = "1"
    return env


def _tail(text, n: int = 6000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    # drop the FutureWarning that jax-md's scatter prints on every call; keep everything else
    lines = [ln for ln in (text or "").splitlines() if "FutureWarning: scatter inputs" not in ln and ln.strip() != "warnings.warn("]
    text = "\n".join(lines)
    return text if len(text) <= n else "...\n" + text[-n:]


@functools.lru_cache(maxsize=None)
def _size_consistency_at_default_xla(name: str, k: int, cell_repeat: int = 4,
                                     timeout: float = 900.0) -> tuple[int, dict, str]:
    """_check_size_consistency(get_model(name, dtype), k, cell_repeat) for every dtype, in one fresh
    interpreter compiled at XLA's default optimisation level: (exit status, {dtype: result}, output
    for errors)."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    cmd = [sys.executable, "-c", _DEFAULT_XLA_SCRIPT, tests_dir, name, str(k), str(cell_repeat), *DTYPES]
    try:
        proc = subprocess.run(cmd, env=_default_xla_env(), cwd=os.path.dirname(tests_dir), capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        return -1, {}, f"timed out after {timeout:.0f} s\n--- stderr (tail) ---\n{_tail(err.stderr)}"
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith(_RESULT_TAG):
            res = json.loads(line[len(_RESULT_TAG):])
            results[res["dtype"]] = res
    output = f"--- stderr (tail) ---\n{_tail(proc.stderr)}\n--- stdout (tail) ---\n{_tail(proc.stdout)}"
    return proc.returncode, results, output


def _run_at_default_xla_optimization(model, k: int, cell_repeat: int = 4) -> dict:
    """This model's result of _size_consistency_at_default_xla; a clear failure when it has none or failed."""
    rc, results, output = _size_consistency_at_default_xla(model.name, k, cell_repeat)
    n_big = 4 * cell_repeat**3 * k**3
    what = f"size-consistency subprocess ({model.name}, {model.dtype_name}, {n_big} atoms, default XLA optimisation)"
    res = results.get(model.dtype_name)
    if res is None:
        pytest.fail(f"{what} gave no result (exit status {rc})\n{output}", pytrace=False)
    if not res["ok"]:
        pytest.fail(f"{what} failed:\n{res['traceback']}", pytrace=False)
    return res


def _check_size_consistency(model, k: int, cell_repeat: int = 4, one_trace: bool = False):
    """The assertions of test_size_consistency_jaxmd_large_supercell for a supercell of k**3 cells
    of 4 cell_repeat**3 atoms (cell_repeat 4: 256 atoms, side 14.44 Å; 3: 108 atoms, side 10.83 Å);
    returns (E/atom of the cell, E/atom of the supercell, atoms in the supercell).

    Energy and forces come from the potential's energy_fn and force_fn jitted together, or with
    ``one_trace`` from the one jaxmd_properties call that both wrap (the same energy and single
    gradient, the network traced and compiled once instead of twice: ~40 % less compile time;
    that energy_fn and force_fn equal it is test_jaxmd_ase_and_predict_agree's check)."""
    pot = model.pot
    small = cu_atoms(repeat=cell_repeat, rattle=0.08, seed=11)
    small.wrap()
    n_cell = len(small)
    assert n_cell == 4 * cell_repeat**3 and small.cell.array[0, 0] > 2 * (pot.cutoff + 0.5)  # a valid minimum image
    big = small.repeat(k)  # atom j is a copy of atom j % n_cell
    results = {}
    for label, atoms, nkw in (("small", small, {"disable_cell_list": True}), ("big", big, {})):
        side = float(atoms.cell.array[0, 0])
        disp, _ = space.periodic(side)
        R = jnp.asarray(atoms.positions, model.dtype)
        nbrs = pot.neighbor_fn(disp, side, **nkw).allocate(R)
        assert not bool(nbrs.did_buffer_overflow)
        if one_trace:
            species = np.asarray(pot.species_indices(atoms.numbers), np.int32)  # as energy_fn: static
            props = jax.jit(lambda r, nb: pot.definition.jaxmd_properties(pot.variables, disp, species, r, nb))(R, nbrs)
            e, f = props.energy[0], props.forces
        else:
            energy_fn = pot.energy_fn(disp, atoms.numbers)
            force_fn = pot.force_fn(disp, atoms.numbers)
            e, f = jax.jit(lambda r, nb: (energy_fn(r, neighbor=nb), force_fn(r, neighbor=nb)))(R, nbrs)
        results[label] = (float(e) / len(atoms), np.asarray(f, np.float64))
    (e_small, f_small), (e_big, f_big) = results["small"], results["big"]
    assert np.max(np.abs(f_small)) > 1e-3
    assert np.std(f_small) > 1e-2  # rattled: forces differ from atom to atom
    tol = model.tol
    assert abs(e_big - e_small) <= tol["energy"] + tol["rtol"] * abs(e_small), (e_small, e_big)
    assert len(big) == n_cell * k**3
    # float32 rounding of the force sums is relative to the largest force (tiny untrained
    # models can reach tens of eV/Å on a rattled cell)
    f_scale = max(1.0, float(np.max(np.abs(f_small))))
    np.testing.assert_allclose(f_big, np.tile(f_small, (k**3, 1)), atol=tol["forces"] * f_scale, rtol=tol["rtol"])
    return e_small, e_big, len(big)


def test_size_consistency_jaxmd_large_supercell(model):
    """fcc Cu cell vs its supercell (SchNet: a 256-atom cell and its 16,384-atom 4x4x4
    supercell; the other models: a 108-atom cell and its 864-atom 2x2x2 supercell):
    identical per-atom energy and forces through jax-md's periodic space and Sparse
    neighbour list. Catches miscompiled large reductions (jax-ml/jax#39103) and
    neighbour-list truncation or overflow. The 16,384-atom cases compile at XLA's default
    optimisation level (in a subprocess; the suite itself compiles at level 0)."""
    k = LARGE_REPEAT.get(model.name, 2)
    cell_repeat = CELL_REPEAT.get(model.name, 3)
    if model.name in LARGE_REPEAT:
        out = _run_at_default_xla_optimization(model, k, cell_repeat)
        assert out["n_big"] == 4 * cell_repeat**3 * k**3 == 16384
        assert not any(f.split("=")[0] in out["xla_flags"] for f in LEVEL0_XLA_FLAGS), out["xla_flags"]
    else:
        _check_size_consistency(model, k, cell_repeat, one_trace=True)
