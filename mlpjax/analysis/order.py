"""Bond-orientational order of periodic frames: Steinhardt q_l per atom and ten Wolde's
solid-like atoms (crystal vs liquid, nucleation along a trajectory)."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from mlpjax.analysis.trajectory import _frame_arrays

__all__ = ["BondOrder", "bond_order", "solid_fraction"]


class BondOrder(NamedTuple):
    q: np.ndarray  # [N] Steinhardt q_l of each atom (dimensionless, 0..1)
    n_neighbours: np.ndarray  # [N] int, neighbours within the cutoff
    solid_bonds: np.ndarray  # [N] int, neighbours j with d_l(i, j) > bond_threshold
    solid: np.ndarray  # [N] bool, solid-like atoms (solid_bonds >= min_solid_bonds)


def bond_order(
    frame, *, cutoff: float, l: int = 6, bond_threshold: float = 0.7, min_solid_bonds: int = 7
) -> BondOrder:
    """Steinhardt bond-orientational order of one periodic frame and ten Wolde's solid-like atoms.

    q_lm(i) = (1/n_i) Σ_j Y_lm(r̂_ij) over the n_i neighbours within ``cutoff`` (Å), and
    q_l(i) = sqrt(4π/(2l+1) Σ_m |q_lm(i)|²) (Steinhardt, Nelson & Ronchetti, PRB 28, 784
    (1983)): perfect fcc (12 neighbours) has q_4 = 0.1909, q_6 = 0.5745; a liquid's q_6 is
    ≈ 0.3–0.4 per atom. A bond i–j is solid-like when the normalised
    d_l(i, j) = q_l(i)·q_l(j)* / (|q_l(i)| |q_l(j)|) exceeds ``bond_threshold``, and an atom is
    solid-like with at least ``min_solid_bonds`` such bonds (ten Wolde, Ruiz-Montero & Frenkel,
    J. Chem. Phys. 104, 9932 (1996); l = 6, 0.7 and 7 are their values for fcc nucleation).
    A crystal (fcc, hcp or bcc, thermally rattled) has almost every atom solid-like; a liquid
    a few per cent. The cutoff should sit at the first minimum of g(r) (``cutoff_from_rdf``).

    The real spherical harmonics (e3nn-jax, "integral" normalisation: orthonormal on the
    sphere) span the same space as the complex Y_lm by a unitary change of basis, so every
    sum over m above (norms and dot products) is the same in either basis.
    """
    if l < 0:
        raise ValueError(f"need l >= 0, got l={l}")
    return _bond_order_of_pairs(_bond_vectors(frame, cutoff), l, bond_threshold, min_solid_bonds)


def _bond_vectors(frame, cutoff: float):
    """(i, j, D [n_pairs, 3] Å, N): every neighbour pair within ``cutoff`` of a periodic frame."""
    import vesin

    pos, cell, pbc, _ = _frame_arrays(frame)
    if not pbc.all():
        raise ValueError(f"bond_order needs a fully periodic frame, got pbc={pbc.tolist()}")
    if cutoff <= 0:
        raise ValueError(f"need cutoff > 0, got cutoff={cutoff}")
    i, j, d = vesin.NeighborList(cutoff=cutoff, full_list=True).compute(pos, cell, True, "ijD")
    return i, j, d, len(pos)


def _bond_order_of_pairs(pairs, l: int, bond_threshold: float = 0.7, min_solid_bonds: int = 7) -> BondOrder:
    import e3nn_jax as e3nn

    i, j, d, n = pairs
    ylm = np.asarray(e3nn.spherical_harmonics(f"{l}e", d, normalize=True, normalization="integral").array,
                     dtype=np.float64)  # [n_pairs, 2l+1]
    counts = np.bincount(i, minlength=n)  # [N]
    qlm = np.zeros((n, 2 * l + 1))
    np.add.at(qlm, i, ylm)
    qlm /= np.maximum(counts, 1)[:, None]  # [N, 2l+1]
    norm = np.linalg.norm(qlm, axis=1)  # [N]
    q = np.sqrt(4.0 * np.pi / (2 * l + 1)) * norm
    unit = qlm / np.where(norm > 0, norm, 1.0)[:, None]
    dij = np.einsum("pm,pm->p", unit[i], unit[j])  # [n_pairs] normalised d_l(i, j)
    bonds = np.bincount(i, weights=(dij > bond_threshold).astype(float), minlength=n).astype(np.int64)
    return BondOrder(q=q, n_neighbours=counts, solid_bonds=bonds, solid=bonds >= min_solid_bonds)


def solid_fraction(frames: Sequence, *, cutoff: float, **kwargs) -> np.ndarray:
    """[n_frames] fraction of solid-like atoms per frame (``bond_order``; kwargs go there):
    ≈ 1 for a crystal, a few per cent for a liquid; a supercooled liquid that nucleates shows
    it as a rise of this number along the trajectory."""
    return np.array([bond_order(f, cutoff=cutoff, **kwargs).solid.mean() for f in frames])
