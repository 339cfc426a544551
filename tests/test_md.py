"""MD driver (mlpjax.md): jax-md energies = ASE calculator, neighbour-list overflow
handling, NVE energy conservation, Langevin temperature control, blow-up detection,
cell checks and output files.

The potentials are tiny untrained SchNets: smooth (cosine envelope, smooth
activations) but not physical, which is all these checks need.
"""

from __future__ import annotations

import dataclasses

import ase.io
import jax
import numpy as np
import pytest
from ase.build import bulk, molecule

from mlpjax import models
from mlpjax.md import (
    MDConfig,
    MDInstabilityError,
    NeighborListOverflowError,
    build_system,
    run_chunked,
    simulate,
    supercell,
    supercell_repeats,
)
from mlpjax.potential import Potential

from conftest import cu108_triclinic_rotated

SMALL = {"features": 16, "interactions": 2, "num_rbf": 8, "filter_hidden": 16}


def _potential(species, cutoff):
    pot = Potential(
        "schnet",
        models.make_config("schnet", SMALL),
        cutoff=cutoff,
        species=species,
        reference_energies=(0.0,) * len(species),
        avg_num_neighbors=40.0,
    )
    return pot.replace(params=pot.init_params(jax.random.PRNGKey(0)))


@pytest.fixture(scope="module")
def cu_pot():
    # neighbour shells of fcc Cu (a = 3.61 Å): 2.55, 3.61, 4.42 Å; cutoff 4 Å
    return _potential((29,), 4.0)


@pytest.fixture(scope="module")
def mol_pot():
    return _potential((1, 6, 8), 4.0)


def _cu108(rattle=0.05, seed=1):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)  # 108 atoms, 10.83 Å box
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


# ----------------------------------------------------------------------------- energies
def test_jaxmd_energy_matches_ase_triclinic(cu_pot):
    atoms = cu108_triclinic_rotated()
    assert abs(atoms.cell.array[0, 1]) > 0.1  # really not in standard (lower-triangular) form
    system = build_system(cu_pot, atoms, MDConfig())
    assert system.periodic
    e, f = system.energy_and_forces(cu_pot.variables)
    atoms.calc = cu_pot.calculator()
    e_ase, f_ase = atoms.get_potential_energy(), atoms.get_forces()
    assert abs(e - e_ase) < 1e-5 * max(1.0, abs(e_ase))
    assert np.abs(f - f_ase).max() < 1e-4
    # Cartesian round trip of the fractional simulation coordinates (mod lattice vectors)
    d = system.to_cartesian(system.positions) - atoms.positions
    frac = np.linalg.solve(atoms.cell.array.T, d.T).T
    assert np.abs(frac - np.round(frac)).max() < 1e-5


def test_jaxmd_energy_matches_ase_molecule(mol_pot):
    atoms = molecule("CH3CH2OH")
    system = build_system(mol_pot, atoms, MDConfig())
    assert not system.periodic
    e, f = system.energy_and_forces(mol_pot.variables)
    atoms.calc = mol_pot.calculator()
    assert abs(e - atoms.get_potential_energy()) < 1e-5 * max(1.0, abs(e))
    assert np.abs(f - atoms.get_forces()).max() < 1e-4


# ----------------------------------------------------------------------------- cells
def test_cutoff_beyond_half_cell_raises_without_multi_image(cu_pot):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)  # 3.61 Å box < 2 (4 + 0.5) Å
    with pytest.raises(ValueError, match="supercell"):
        build_system(cu_pot, atoms, MDConfig(multi_image=False))
    reps = supercell_repeats(atoms.cell, 4.5)
    assert reps == (3, 3, 3)
    assert build_system(cu_pot, supercell(atoms, reps), MDConfig()).repeats == (1, 1, 1)  # big enough
    assert build_system(cu_pot, atoms, MDConfig()).repeats == (3, 3, 3)  # multi-image path


def test_multi_image_primitive_cell_equals_its_supercell(cu_pot):
    """A 2-atom cell much narrower than the cutoff (cubic bcc cell, 2.9 Å wide vs cutoff + skin
    4.5 Å) through the multi-image path gives the energy per atom and the forces of its 4×4×4
    supercell (plain minimum image), and of the ASE calculator."""
    prim = bulk("Cu", "bcc", a=2.9, cubic=True)
    prim.rattle(0.05, seed=3)
    sys_small = build_system(cu_pot, prim, MDConfig())
    assert sys_small.n_copies > 1 and sys_small.n_atoms == 2
    e_small, f_small = sys_small.energy_and_forces(cu_pot.variables)
    big = prim.repeat((4, 4, 4))
    sys_big = build_system(cu_pot, big, MDConfig())
    assert sys_big.repeats == (1, 1, 1)
    e_big, f_big = sys_big.energy_and_forces(cu_pot.variables)
    assert abs(e_small / 2 - e_big / len(big)) < 1e-6
    np.testing.assert_allclose(f_small, f_big[:2], atol=1e-5)
    prim.calc = cu_pot.calculator()
    assert abs(e_small - prim.get_potential_energy()) < 1e-5
    np.testing.assert_allclose(f_small, prim.get_forces(), atol=1e-5)


def test_mixed_pbc_rejected(cu_pot):
    atoms = _cu108()
    atoms.pbc = (True, True, False)
    with pytest.raises(ValueError, match="periodicity"):
        build_system(cu_pot, atoms, MDConfig())


# ----------------------------------------------------------------------------- chunk driver
class _FakeNbrs:
    def __init__(self, capacity, overflow=False):
        self.max_occupancy, self.overflow = capacity, overflow

    @property
    def did_buffer_overflow(self):
        return self.overflow

    cell_size_too_small = False


def test_run_chunked_reruns_overflowed_chunk_from_start():
    # the "system" needs capacity 3 from step 5 on; each chunk adds its length to the state
    calls, accepted = [], []

    def chunk(state, nbrs, n):
        calls.append((state, nbrs.max_occupancy))
        end = state + n
        return end, _FakeNbrs(nbrs.max_occupancy, overflow=end > 5 and nbrs.max_occupancy < 3), {"end": end}

    def realloc(start, end, old):
        return _FakeNbrs(old.max_occupancy + 1)

    run = run_chunked(chunk, 0, _FakeNbrs(1), realloc, [4, 4, 4], on_chunk=lambda i, s0, a, b, nb, aux: accepted.append((s0, a, b, nb.max_occupancy)))
    assert run.state == 12 and run.n_reallocations == 2
    assert accepted == [(0, 0, 4, 1), (4, 4, 8, 3), (8, 8, 12, 3)]
    assert calls == [(0, 1), (4, 1), (4, 2), (4, 3), (8, 3)]  # reruns start from state 4
    with pytest.raises(NeighborListOverflowError):
        run_chunked(chunk, 0, _FakeNbrs(1), lambda s, e, o: o, [8], max_retries=2)


def test_neighbor_overflow_is_detected_and_handled(cu_pot):
    # capacity_multiplier 1 on a perfect lattice whose 3rd shell (4.42 Å) lies just outside
    # cutoff + skin = 4.3 Å: thermal motion pulls 3rd-shell pairs in and the list overflows
    atoms = _cu108(rattle=0.0)
    cfg = MDConfig(ensemble="nve", temperature_K=800.0, steps=100, chunk_steps=100, log_every=50, traj_every=100,
                   skin=0.3, capacity_multiplier=1.0, seed=2)
    result = simulate(cu_pot, atoms, cfg, progress=False)
    assert result.n_neighbor_reallocations > 0
    assert result.neighbor_capacity > 108 * 18  # grew beyond the perfect-lattice count
    # final forces equal a computation with a freshly allocated list
    system = build_system(cu_pot, result.atoms, cfg)
    _, f_fresh = system.energy_and_forces(cu_pot.variables)
    np.testing.assert_allclose(result.forces, f_fresh, atol=2e-4)
    assert np.all(np.isfinite(result.thermo["E_tot_eV"]))


# ----------------------------------------------------------------------------- dynamics
def test_nve_energy_conservation_float64(cu_pot, tmp_path):
    """Velocity Verlet is symplectic and time-reversible: with forces that are the exact
    gradient of a smooth energy, E_tot oscillates by O((ω dt)^2) × E_kin and does not
    drift. For this potential (energy_scale 10, stiffer than the raw untrained net) at
    ~50 K and dt = 1 fs the measured max |E_tot(t) - E_tot(0)|/N is ~5e-9 eV/atom and
    scales as dt^2 (2e-8 at 2 fs, 9e-8 at 4 fs). The bound 1e-5 eV/atom leaves three
    orders of margin for other platforms, yet is ~200x below the kinetic-energy swing of
    the run (> 2e-3 eV/atom), which is the size of the error that forces inconsistent
    with the energy (wrong sign or factor, a missed pair, a stale neighbour list) or a
    broken integrator produce. Also runs a rotated triclinic cell and checks the output files."""
    pot = cu_pot.replace(energy_scale=10.0)
    atoms = cu108_triclinic_rotated()
    n = len(atoms)
    cfg = MDConfig(ensemble="nve", temperature_K=50.0, timestep_fs=1.0, steps=500, chunk_steps=250,
                   log_every=10, traj_every=100, dtype="float64", seed=0)
    with jax.enable_x64(True):
        atoms.calc = pot.calculator()
        e_ase = atoms.get_potential_energy()
        result = simulate(pot, atoms, cfg, trajectory=tmp_path / "md.extxyz", log=tmp_path / "md.csv", progress=False)
    etot = result.thermo["E_tot_eV"]
    assert len(etot) == 51
    assert abs(result.thermo["E_pot_eV"][0] - e_ase) < 1e-6 * max(1.0, abs(e_ase))
    drift = np.abs(etot - etot[0]).max() / n
    assert drift < 1e-5, f"E_tot changed by {drift:.2e} eV/atom"
    # the dynamics actually moved energy around (the check is not vacuous)
    assert np.ptp(result.thermo["E_kin_eV"]) / n > 1e-3
    # output files: step 0 included
    rows = (tmp_path / "md.csv").read_text().strip().splitlines()
    assert rows[0].split(",") == ["step", "time_ps", "E_pot_eV", "E_kin_eV", "E_tot_eV", "T_K", "P_GPa", "V_A3", "E_cons_eV"]
    assert len(rows) == 1 + 51
    assert float(rows[-1].split(",")[1]) == pytest.approx(0.5)
    frames = ase.io.read(tmp_path / "md.extxyz", ":")
    assert len(frames) == 6
    assert [fr.info["step"] for fr in frames] == [0, 100, 200, 300, 400, 500]
    # frames come back in the input orientation with the input cell
    np.testing.assert_allclose(frames[0].cell.array, atoms.cell.array, atol=1e-10)
    d = frames[0].positions - atoms.positions
    frac = np.linalg.solve(atoms.cell.array.T, d.T).T
    assert np.abs(frac - np.round(frac)).max() < 1e-8
    assert frames[0].get_potential_energy() == pytest.approx(e_ase, abs=1e-6)
    np.testing.assert_allclose(frames[0].get_forces(), atoms.get_forces(), atol=1e-6)


def test_nvt_langevin_reaches_target_temperature(cu_pot):
    atoms = _cu108(rattle=0.0)  # starts at 0 K (initial_velocities="atoms": zero momenta)
    target = 400.0
    cfg = MDConfig(ensemble="nvt", temperature_K=target, timestep_fs=2.0, steps=400, chunk_steps=200, log_every=5,
                   friction_per_ps=20.0, initial_velocities="atoms", seed=4)
    result = simulate(cu_pot, atoms, cfg, progress=False)
    T = result.thermo["T_K"]
    assert T[0] == 0.0
    # 1/γ = 50 fs: the last 400 fs are thermalised; 108 atoms fluctuate ~8 % per sample
    assert abs(T[len(T) // 2:].mean() - target) < 0.12 * target, T[len(T) // 2:].mean()


def test_blow_up_raises_and_writes_last_good_frame(cu_pot, tmp_path):
    # the untrained net is very soft (forces ~1e-3 eV/Å): scale it up and take an absurd
    # 50 fs step; small chunks and a roomy list so the temperature check catches it
    wild = cu_pot.replace(energy_scale=3.0e3)
    atoms = _cu108()
    cfg = MDConfig(ensemble="nve", temperature_K=300.0, timestep_fs=50.0, steps=200, chunk_steps=10, log_every=10,
                   traj_every=50, capacity_multiplier=3.0)
    with pytest.raises(MDInstabilityError) as info:
        simulate(wild, atoms, cfg, trajectory=tmp_path / "md.extxyz", log=tmp_path / "md.csv", progress=False)
    err = info.value
    assert err.step > 0 and "timestep" in str(err) and "training data" in str(err)
    assert err.frame_path == str(tmp_path / "last_good_frame.xyz")
    frame = ase.io.read(err.frame_path)
    assert len(frame) == len(atoms) and np.all(np.isfinite(frame.positions))
    assert frame.info["step"] < err.step
    # logs were flushed up to the last good step
    rows = (tmp_path / "md.csv").read_text().strip().splitlines()
    assert int(rows[-1].split(",")[0]) == frame.info["step"]


def test_config_validation():
    with pytest.raises(ValueError, match="ensemble"):
        MDConfig(ensemble="nph")
    with pytest.raises(ValueError, match="chain_length"):
        MDConfig(ensemble="nvt_nh", chain_length=0)
    with pytest.raises(ValueError, match="timestep"):
        MDConfig(timestep_fs=0.0)
    cfg = MDConfig(temperature_K=300.0, max_temperature_factor=10.0)
    assert cfg.temperature_limit_K == 3000.0
    assert dataclasses.replace(cfg, temperature_K=10.0).temperature_limit_K == cfg.max_temperature_floor_K
