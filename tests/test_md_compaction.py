"""The MD engine evaluates the model on the in-cutoff pairs of its Verlet list only
(``MDSystem.pair_fraction``, ``PotentialDef.jaxmd_properties(pair_fraction=...)``): the same
energies and forces as over the whole list, NaN (never a truncated sum) when the pairs inside
do not fit, the overflow flagged at list updates so the engine reallocates, and allocations
sized so that the compacted slots hold the pairs inside with the usual head room.
"""

from __future__ import annotations

import ase
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax_md import space

import mlpjax.md.system as md_system
from conftest import cu_atoms, get_model
from mlpjax.md import MDConfig, build_system, simulate
from mlpjax.potential import compact_capacity, in_cutoff_pairs

SKIN = 1.0  # Å: the list reaches fcc's fourth shell (5.1 Å), the 4.5-Å cutoff its third


def _cu_list(pot):
    atoms = cu_atoms(repeat=3, seed=5)  # 108 atoms, 10.8 Å: no image supercell at 4.5 + 0.5 Å
    atoms.wrap()
    box = jnp.asarray(atoms.cell.array.T)
    disp, _ = space.periodic_general(box, fractional_coordinates=True)
    R = jnp.asarray(atoms.get_scaled_positions())
    nbrs = pot.neighbor_fn(disp, box, skin=SKIN, fractional_coordinates=True, disable_cell_list=True).allocate(R)
    return atoms, disp, R, nbrs


@pytest.mark.parametrize("name", ["schnet", "mace", "dimenet", "bpnn"])
def test_compacted_pairs_give_the_same_energy_and_forces(name):
    """Edge model, equivariant model, triplets (DimeNet++) and a dense-neighbour descriptor (BPNN):
    the compacted pairs change nothing but the work (float64)."""
    model = get_model(name, "float64")
    pot = model.pot
    atoms, disp, R, nbrs = _cu_list(pot)
    recv = nbrs.idx[0]
    d = jax.vmap(disp)
    inside = int(jnp.sum(in_cutoff_pairs(d, R, recv, nbrs.idx[1], pot.cutoff, recv.shape[0])[0] < R.shape[0]))
    frac = (inside + 5) / recv.shape[0]  # 5 spare slots
    assert 0.4 < frac < 0.8  # 42 of 66 neighbours of an fcc atom, in a list with head room
    _, _, over = in_cutoff_pairs(d, R, recv, nbrs.idx[1], pot.cutoff, compact_capacity(recv.shape[0], frac))
    assert not bool(over)
    out = {}
    for f in (1.0, frac):
        e_fn = pot.definition.energy_fn_of_params(disp, atoms.numbers, pair_fraction=f)
        f_fn = pot.definition.force_fn_of_params(disp, atoms.numbers, pair_fraction=f)
        out[f] = jax.jit(lambda v, r, nb: (e_fn(v, r, neighbor=nb), f_fn(v, r, neighbor=nb)))(pot.variables, R, nbrs)
    (e1, f1), (ec, fc) = out[1.0], out[frac]
    assert np.max(np.abs(np.asarray(f1))) > 1e-3
    np.testing.assert_allclose(float(ec), float(e1), rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(np.asarray(fc), np.asarray(f1), atol=1e-10)


def test_in_cutoff_pairs_keep_list_order_and_report_overflow():
    pot = get_model("schnet", "float64").pot
    atoms, disp, R, nbrs = _cu_list(pot)
    d = jax.vmap(disp)
    recv, send = nbrs.idx[0], nbrs.idx[1]
    n = R.shape[0]
    r = np.linalg.norm(np.asarray(d(R[jnp.minimum(send, n - 1)], R[jnp.minimum(recv, n - 1)])), axis=1)
    inside = np.flatnonzero((np.asarray(recv) < n) & (r < pot.cutoff))
    cr, cs, over = in_cutoff_pairs(d, R, recv, send, pot.cutoff, len(inside) + 7)
    assert not bool(over)
    np.testing.assert_array_equal(np.asarray(cr[:len(inside)]), np.asarray(recv)[inside])
    np.testing.assert_array_equal(np.asarray(cs[:len(inside)]), np.asarray(send)[inside])
    assert np.all(np.asarray(cr[len(inside):]) == n) and np.all(np.asarray(cs[len(inside):]) == n)  # padding
    _, _, over = in_cutoff_pairs(d, R, recv, send, pot.cutoff, len(inside) - 1)
    assert bool(over)


def _cluster():
    """A free 201-atom Cu truncated octahedron, rattled (its pair distances spread across the
    cutoff, so compressing it brings listed pairs inside); big enough that its list is far from
    every possible pair (else no compaction, see ``_pair_fraction``)."""
    from ase.cluster import Octahedron

    atoms = Octahedron("Cu", 7, cutoff=2)
    atoms.rattle(0.15, seed=4)
    atoms.center()
    atoms.pbc = False
    return atoms


def test_update_flags_in_cutoff_overflow_and_allocation_makes_room():
    pot = get_model("schnet", "float64").pot
    atoms = _cluster()
    cfg = MDConfig(ensemble="nve", dtype="float64", skin=SKIN, capacity_multiplier=1.0)
    system = build_system(pot, atoms, cfg)
    assert system.pair_fraction < 1.0
    R = system.positions
    nbrs = system.allocate(R)
    inside = system._pairs_inside(nbrs, R)
    assert compact_capacity(nbrs.max_occupancy, system.pair_fraction) >= inside
    # compress by 2 % about the centre: every atom moves < skin / 2 (no rebuild), more pairs come inside
    centre = jnp.mean(R, axis=0)
    R2 = centre + 0.98 * (R - centre)
    assert float(jnp.max(jnp.linalg.norm(R2 - R, axis=1))) < SKIN / 2
    assert system._pairs_inside(nbrs, R2) > compact_capacity(nbrs.max_occupancy, system.pair_fraction)
    updated = system.update_neighbors(nbrs, R2)
    assert bool(updated.did_buffer_overflow)  # the engine's reallocation signal
    assert not bool(system.update_neighbors(nbrs, R).did_buffer_overflow)
    # a list allocated at the compressed positions has room again
    fresh = system.allocate(R2)
    assert compact_capacity(fresh.max_occupancy, system.pair_fraction) >= system._pairs_inside(fresh, R2)
    assert np.isfinite(float(system.energy(pot.variables, R2, neighbor=fresh)))


def test_md_with_compaction_equals_md_without(monkeypatch):
    """NVE of a free Cu cluster, float64: compacted pairs (with a start fraction set far too low, so
    the allocation has to make room) give the trajectory of the full list."""
    pot = get_model("schnet", "float64").pot
    atoms = _cluster()
    cfg = MDConfig(ensemble="nve", temperature_K=600.0, timestep_fs=2.0, steps=40, chunk_steps=20, log_every=10,
                   traj_every=10, dtype="float64", skin=SKIN, seed=3)
    assert build_system(pot, atoms, cfg).pair_fraction < 0.8
    runs = {}
    for name, frac in (("full", lambda *a: 1.0), ("low", lambda *a: 0.3), ("default", md_system._pair_fraction)):
        monkeypatch.setattr(md_system, "_pair_fraction", frac)
        runs[name] = simulate(pot, ase.Atoms(atoms), cfg, progress=False)
    full = runs["full"]
    assert np.ptp(full.thermo["E_pot_eV"]) > 1e-3  # the atoms move
    for name in ("low", "default"):
        np.testing.assert_allclose(runs[name].thermo["E_tot_eV"], full.thermo["E_tot_eV"], atol=1e-9, err_msg=name)
        np.testing.assert_allclose(runs[name].thermo["E_pot_eV"], full.thermo["E_pot_eV"], atol=1e-9, err_msg=name)
