"""Trajectory analysis: radial distribution function and coordination numbers.

Pair distances come from the same O(N) host neighbour list as training (vesin),
so a frame of 10⁴ atoms costs milliseconds and cells smaller than 2·r_max are
handled correctly (every periodic image is counted).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np


class RDF(NamedTuple):
    r: np.ndarray  # [n_bins] Å, bin centres
    g: np.ndarray  # [n_bins] dimensionless g(r)
    density: float  # atoms/Å^3 (mean over frames)


def rdf(frames: Sequence, *, r_max: float = 6.0, n_bins: int = 120) -> RDF:
    """g(r) averaged over periodic frames (ASE Atoms or mlpjax Configurations).

    g(r) = ⟨n(r)⟩ / (ρ · 4π r² dr), with n(r) the number of neighbours per atom in the
    shell [r, r+dr) and ρ = N/V, normalised with the exact shell volume.
    """
    import vesin

    edges = np.linspace(0.0, r_max, n_bins + 1)
    counts = np.zeros(n_bins)
    n_atoms_total = 0
    densities = []
    for f in frames:
        pos = np.asarray(f.positions, dtype=np.float64)
        cell = np.asarray(getattr(f.cell, "array", f.cell), dtype=np.float64)
        pbc = np.asarray(f.pbc, dtype=bool)
        if not pbc.all():
            raise ValueError("rdf needs fully periodic frames (the density of a finite cluster is ill-defined)")
        volume = abs(np.linalg.det(cell))
        d = vesin.NeighborList(cutoff=r_max, full_list=True).compute(pos, cell, True, "d")[0]
        h, _ = np.histogram(d, bins=edges)
        # weight each frame's counts by its own density so frames of different volume average correctly
        rho = len(pos) / volume
        counts += h / rho
        densities.append(rho)
        n_atoms_total += len(pos)
    if not densities:
        raise ValueError("rdf of an empty trajectory")
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    g = counts / (n_atoms_total * shell)
    return RDF(r=0.5 * (edges[1:] + edges[:-1]), g=g, density=float(np.mean(densities)))


def first_minimum(result: RDF, *, after_peak: bool = True) -> float:
    """Position (Å) of the first minimum of g(r) after its first peak."""
    g = result.g
    i_peak = int(np.argmax(g))
    if not after_peak:
        i_peak = 0
    tail = g[i_peak:]
    # first local minimum after the peak (smallest index where g stops decreasing)
    for k in range(1, len(tail) - 1):
        if tail[k] <= tail[k - 1] and tail[k] < tail[k + 1]:
            return float(result.r[i_peak + k])
    return float(result.r[i_peak + int(np.argmin(tail))])


def coordination_number(result: RDF, r_cut: float | None = None) -> float:
    """n_c = 4π ρ ∫₀^{r_cut} g(r) r² dr, with r_cut the first minimum by default."""
    if r_cut is None:
        r_cut = first_minimum(result)
    dr = result.r[1] - result.r[0]
    sel = result.r < r_cut
    return float(4.0 * np.pi * result.density * np.sum(result.g[sel] * result.r[sel] ** 2) * dr)
