"""Host-side neighbor lists for training batches and the ASE calculator.

Choice of library: `vesin <https://github.com/Luthaf/vesin>`_ (cell list, O(N), C++,
maintained by the lab-cosmo/metatensor people). It handles mixed periodicity and
cells smaller than the cutoff (it returns every periodic image within the cutoff,
so a 1-atom primitive cell gets all its 42 images at 5 Å), and it returns integer
cell shifts, which is what the strain derivative (stress) needs. jax-md's
``partition`` is used for MD instead (see :mod:`mlpjax.md`), where the list must be
updated inside a jitted loop.

Edge convention used everywhere in mlpjax (training, ASE, jax-md): an edge
``(receiver=i, sender=j)`` carries the vector

    vector = R[j] - R[i] + shift @ cell      # [3] Å, from the centre atom i to neighbor j

and messages flow from senders to receivers. The list is *full*: both (i, j) and
(j, i) are present.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class HostEdges(NamedTuple):
    senders: np.ndarray  # [n_edges] int32, neighbor index j
    receivers: np.ndarray  # [n_edges] int32, centre index i
    shifts: np.ndarray  # [n_edges, 3] float64, integer cell shifts S (vector = R[j] - R[i] + S @ cell)


def neighbor_list(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> HostEdges:
    """All pairs closer than ``cutoff`` Å (full list, every periodic image).

    Args:
      positions: [n_atoms, 3] Å.
      cell: [3, 3] Å, rows are lattice vectors (ignored along non-periodic directions).
      pbc: [3] bool.
      cutoff: Å.
    """
    import vesin

    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    box = np.asarray(cell, dtype=np.float64)
    if not pbc.any():
        box = np.zeros((3, 3))
    elif abs(np.linalg.det(box)) < 1e-9:
        raise ValueError("periodic structure with a singular cell: give the lattice vectors or set pbc=False")
    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, s = nl.compute(positions, box, [bool(p) for p in pbc], "ijS")
    return HostEdges(
        senders=np.asarray(j, dtype=np.int32),
        receivers=np.asarray(i, dtype=np.int32),
        shifts=np.asarray(s, dtype=np.float64),
    )
