"""DimeNet++ specifics: on-device triplets against a brute-force enumeration, loud
(NaN) overflow of the triplet table, and the spherical Bessel basis."""

from __future__ import annotations

import ase
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk

from conftest import CUTOFF, SPECIES, config, cu_atoms, ethanol_atoms
from mlpjax import models
from mlpjax.graph import make_budget, pack, to_graphs
from mlpjax.models.dimenet import (
    _chebyshev_fn,
    _sbf_chebyshev,
    build_triplets,
    required_max_neighbors,
    spherical_bessel_roots,
)
from mlpjax.potential import Potential


def _edges(atoms, n_jaxmd_pad: int = 5):
    """Padded edges as the model sees them: a packed batch (masked padding edges on the
    padding node) followed by jax-md-style padding (sender = receiver = n_nodes)."""
    graphs = to_graphs([config(atoms)], SPECIES, CUTOFF)
    batch = pack(graphs, make_budget(graphs, 1))
    n_nodes = batch.positions.shape[0]
    edge_graph = np.asarray(batch.node_graph)[batch.receivers]
    vec = (
        batch.positions[batch.senders]
        - batch.positions[batch.receivers]
        + np.einsum("ei,eij->ej", batch.shifts, batch.cell[edge_graph])
    )
    pad = np.full(n_jaxmd_pad, n_nodes, np.int32)
    senders = np.concatenate([batch.senders, pad])
    receivers = np.concatenate([batch.receivers, pad])
    vec = np.concatenate([vec, np.ones((n_jaxmd_pad, 3))])
    mask = np.concatenate([np.asarray(batch.edge_mask, bool), np.zeros(n_jaxmd_pad, bool)])
    return vec, senders, receivers, mask, n_nodes


def _brute_force(vec, senders, receivers, mask):
    """{(e1, e2)}: e1 = j → i, e2 = k → j, e2 not the reverse of e1 (geometrically)."""
    out = set()
    idx = np.flatnonzero(mask)
    for e1 in idx:  # (loop over e1, NumPy over e2)
        ok = (receivers[idx] == senders[e1]) & (np.linalg.norm(vec[e1] + vec[idx], axis=-1) > 1e-2)
        out.update((int(e1), int(e2)) for e2 in idx[ok])
    return out


def _one_atom_fcc():
    return bulk("Cu", "fcc", a=3.61)  # 1 atom, every neighbour is a periodic image of itself


@pytest.mark.parametrize(
    "make", [ethanol_atoms, lambda: cu_atoms(repeat=2), _one_atom_fcc], ids=["ethanol", "cu_periodic", "cu_one_atom"]
)
def test_triplets_match_brute_force(make):
    atoms = make()
    vec, senders, receivers, mask, n_nodes = _edges(atoms)
    k = required_max_neighbors(to_graphs([config(atoms)], SPECIES, CUTOFF))
    e2, tmask, overflow = jax.jit(build_triplets, static_argnums=(4, 5))(
        jnp.asarray(vec), jnp.asarray(senders), jnp.asarray(receivers), jnp.asarray(mask), n_nodes, k
    )
    e2, tmask = np.asarray(e2), np.asarray(tmask)
    assert not bool(overflow)
    got = [(int(a), int(b)) for a, b in zip(*np.nonzero(tmask))]
    got = [(a, int(e2[a, s])) for a, s in got]
    assert len(got) == len(set(got)), "a triplet appears twice"
    expected = _brute_force(vec, senders, receivers, mask)
    assert len(expected) > 0
    assert set(got) == expected
    if make is _one_atom_fcc:  # 12 nearest images at 2.55 Å + more: triplets exist despite i == k index
        assert all(senders[a] == receivers[a] for a, _ in got)


def _cu_potential(max_neighbors: int, params=None) -> Potential:
    cfg = models.make_config("dimenet", {"hidden": 8, "out_emb": 8, "int_emb": 4, "basis_emb": 4, "num_blocks": 1,
                                         "num_spherical": 3, "num_radial": 4, "max_neighbors": max_neighbors})
    pot = Potential("dimenet", cfg, cutoff=CUTOFF, species=(29,), reference_energies=(-3.7,), avg_num_neighbors=12.0)
    return pot.replace(params=pot.init_params(jax.random.PRNGKey(0)) if params is None else params)


def test_overflow_gives_nan_energy_and_forces_not_a_silent_drop():
    atoms = cu_atoms(repeat=2)
    graphs = to_graphs([config(atoms)], (29,), CUTOFF)
    need = required_max_neighbors(graphs)
    assert need == 42  # fcc Cu within 4.5 Å: 12 + 6 + 24 neighbours
    assert required_max_neighbors(np.bincount(graphs[0].edges.receivers)) == need
    batch = pack(graphs, make_budget(graphs, 1))
    assert required_max_neighbors(batch) == need
    assert required_max_neighbors(batch, cutoff=3.0) == 12
    ok = _cu_potential(need)
    out = jax.jit(ok.predict)(ok.params, batch)
    assert np.all(np.isfinite(out.energy)) and np.all(np.isfinite(out.forces))
    small = _cu_potential(need - 1, ok.params)  # same parameters, one slot too few
    with jax.debug_nans(False):
        out = jax.jit(small.predict)(small.params, batch)
        assert np.isnan(float(out.energy[0]))
        assert np.all(np.isnan(np.asarray(out.forces)[np.asarray(batch.node_mask)]))


def test_spherical_bessel_basis_matches_scipy():
    from scipy.special import spherical_jn

    L, N = 7, 6
    z = spherical_bessel_roots(L, N)
    for l in range(L):
        np.testing.assert_allclose(spherical_jn(l, z[l]), 0.0, atol=1e-12)
    x = np.linspace(0.0, 1.0, 501)
    f = _chebyshev_fn(_sbf_chebyshev(L, N))
    got = np.asarray(f(jnp.asarray(x)))
    dgot = np.asarray(jax.vmap(jax.jacfwd(lambda t: f(t)))(jnp.asarray(x)))
    for l in range(L):
        norm = np.sqrt(2.0) / np.abs(spherical_jn(l + 1, z[l]))
        np.testing.assert_allclose(got[:, l * N : (l + 1) * N], norm * spherical_jn(l, np.outer(x, z[l])), atol=1e-11)
        deriv = norm * z[l] * spherical_jn(l, np.outer(x, z[l]), derivative=True)
        np.testing.assert_allclose(dgot[:, l * N : (l + 1) * N], deriv, atol=1e-9 * np.max(np.abs(deriv)))


def test_collinear_triplets_have_finite_forces():
    """Three atoms on a line (cos α = ±1), where arccos-based angles have infinite derivatives."""
    pot = _cu_potential(8)
    atoms = ase.Atoms("Cu3", positions=[[0, 0, 0], [2.5, 0, 0], [5.0 - 1.0, 0, 0]])
    graphs = to_graphs([config(atoms)], (29,), CUTOFF)
    out = jax.jit(pot.predict)(pot.params, pack(graphs, make_budget(graphs, 1)))
    assert np.all(np.isfinite(np.asarray(out.forces)))
