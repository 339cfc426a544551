"""Structure of periodic frames: the radial distribution function g(r) (total and partial),
its peaks and minima, coordination numbers and cutoff estimates.

Pair distances come from the same O(N) host neighbour list as training (vesin), so a
frame of 10⁴ atoms costs milliseconds and cells smaller than 2·r_max are handled
correctly (every periodic image is counted). Distances in Å.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from mlpjax.analysis.trajectory import _frame_arrays

__all__ = ["RDF", "rdf", "partial_rdf", "first_minimum", "coordination_number", "RDFPeaks", "rdf_peaks", "cutoff_from_rdf"]


class RDF(NamedTuple):
    r: np.ndarray  # [n_bins] Å, bin centres
    g: np.ndarray  # [n_bins] dimensionless g(r)
    density: float  # atoms/Å^3 (mean over frames) of the neighbour species (all atoms for the total g(r))


def _atomic_number(species) -> int | None:
    """Atomic number of a species given as a chemical symbol or an integer Z (None: every atom)."""
    if species is None:
        return None
    if isinstance(species, str):
        from ase.data import atomic_numbers

        if species not in atomic_numbers:
            raise ValueError(f"unknown chemical symbol {species!r}")
        return int(atomic_numbers[species])
    return int(species)


def _species_mask(numbers: np.ndarray, z: int | None) -> np.ndarray:
    """[N] bool: atoms of atomic number z (every atom when z is None)."""
    return np.ones(len(numbers), dtype=bool) if z is None else numbers == z


def _rdf_pairs(frames: Sequence, pairs: Sequence[tuple], *, r_max: float, n_bins: int) -> list[RDF]:
    """g_ab(r) for every (species_a, species_b) in ``pairs`` from one neighbour-list pass per frame.

    g_ab(r) = ⟨n_ab(r)⟩ / (ρ_b · V_shell(r)), with n_ab(r) the number of b atoms in the shell
    [r, r+dr) around an a atom (averaged over the a atoms), ρ_b = N_b / V and V_shell the
    exact shell volume 4π/3 ((r+dr)³ − r³). Frames of different volume are averaged with
    each frame's own ρ_b, weighted by its number of a atoms.
    """
    import vesin

    if r_max <= 0 or n_bins < 1:
        raise ValueError(f"need r_max > 0 and n_bins ≥ 1, got r_max={r_max}, n_bins={n_bins}")
    zs = [(_atomic_number(a), _atomic_number(b)) for a, b in pairs]
    edges = np.linspace(0.0, r_max, n_bins + 1)  # [n_bins + 1] Å
    counts = np.zeros((len(pairs), n_bins))  # Σ_frames histogram / ρ_b  [Å³]
    n_centres = np.zeros(len(pairs))  # Σ_frames N_a
    densities: list[list[float]] = [[] for _ in pairs]  # ρ_b per frame, atoms/Å³
    n_frames = 0
    for k, f in enumerate(frames):
        pos, cell, pbc, numbers = _frame_arrays(f)
        if not pbc.all():
            raise ValueError(
                f"g(r) needs fully periodic frames (frame {k} has pbc={pbc.tolist()}): "
                "the density of a finite cluster is ill-defined"
            )
        volume = abs(np.linalg.det(cell))
        i, j, d = vesin.NeighborList(cutoff=r_max, full_list=True).compute(pos, cell, True, "ijd")
        for p, (za, zb) in enumerate(zs):
            in_a, in_b = _species_mask(numbers, za), _species_mask(numbers, zb)
            n_a, n_b = int(in_a.sum()), int(in_b.sum())
            if n_a == 0 or n_b == 0:
                missing = pairs[p][0] if n_a == 0 else pairs[p][1]
                raise ValueError(f"frame {k} has no atom of species {missing!r}")
            sel = in_a[i] & in_b[j]
            h, _ = np.histogram(d[sel], bins=edges)
            rho_b = n_b / volume
            counts[p] += h / rho_b
            n_centres[p] += n_a
            densities[p].append(rho_b)
        n_frames += 1
    if n_frames == 0:
        raise ValueError("g(r) of an empty trajectory")
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)  # [n_bins] Å³
    r = 0.5 * (edges[1:] + edges[:-1])
    return [RDF(r=r, g=counts[p] / (n_centres[p] * shell), density=float(np.mean(densities[p]))) for p in range(len(pairs))]


def rdf(frames: Sequence, *, r_max: float = 6.0, n_bins: int = 120) -> RDF:
    """g(r) of all atoms averaged over periodic frames (ASE Atoms or mlpjax Configurations).

    g(r) = ⟨n(r)⟩ / (ρ · 4π r² dr), with n(r) the number of neighbours per atom in the
    shell [r, r+dr) and ρ = N/V, normalised with the exact shell volume. ``r_max`` in Å.
    Same as ``partial_rdf(frames, None, None, ...)``.
    """
    return _rdf_pairs(frames, [(None, None)], r_max=r_max, n_bins=n_bins)[0]


def partial_rdf(frames: Sequence, species_a, species_b, *, r_max: float = 6.0, n_bins: int = 120) -> RDF:
    """Partial g_ab(r): density of b atoms around an a atom, relative to the mean density of b.

    ``species_a`` / ``species_b``: chemical symbol (``"Cu"``), atomic number, or None for
    every atom. ``r_max`` in Å. Normalisation (the convention of LAMMPS ``compute rdf`` and
    of ASE ≥ 3.27 ``ase.geometry.rdf.get_rdf(elements=...)``)::

        g_ab(r) = V / (N_a N_b) · Σ_{i∈a} Σ_{j∈b, j≠i, all images} δ(r − r_ij) / (4π r²)

    for a ≠ b and a = b alike (a full neighbour list: each a–b pair is counted once from
    every a atom, no factor 2 to get wrong). Then g_ab = g_ba and the total
    g(r) = Σ_ab c_a c_b g_ab(r) with c the atom fractions (exactly, for frames of fixed
    composition).
    With ρ_b = N_b/V (not (N_b − 1)/V) an uncorrelated system of N_a atoms gives
    g_aa → 1 − 1/N_a at large r, as for the total g(r) in :func:`rdf`.
    The returned ``density`` is ρ_b (atoms/Å³), so :func:`coordination_number` gives
    the number of b neighbours of an a atom.
    """
    return _rdf_pairs(frames, [(species_a, species_b)], r_max=r_max, n_bins=n_bins)[0]


def first_minimum(result: RDF, *, after_peak: bool = True) -> float:
    """Position (Å) of the first minimum of the raw g(r) after its highest peak.

    No smoothing: for noisy g(r) prefer ``cutoff_from_rdf(result, "first_minimum")``.
    """
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
    """n_c = 4π ρ ∫₀^{r_cut} g(r) r² dr (r_cut in Å; the first minimum of g by default).

    For a partial g_ab (``result.density`` = ρ_b) this is the number of b neighbours of an a atom.
    """
    if r_cut is None:
        r_cut = first_minimum(result)
    dr = result.r[1] - result.r[0]
    sel = result.r < r_cut
    return float(4.0 * np.pi * result.density * np.sum(result.g[sel] * result.r[sel] ** 2) * dr)


class RDFPeaks(NamedTuple):
    r_peaks: np.ndarray  # [n_peaks] Å, positions of the maxima of the smoothed g(r)
    r_minima: np.ndarray  # [n_peaks] Å, minimum following each peak (NaN where g(r) still falls at r_max)
    g_smooth: np.ndarray  # [n_bins] the smoothed g(r) the peaks were found on


def rdf_peaks(result: RDF, *, smooth_sigma_A: float = 0.1, min_prominence: float = 0.05) -> RDFPeaks:
    """Peaks of g(r) and the minimum that follows each, found on a lightly smoothed g(r).

    Smoothing: a Gaussian of standard deviation ``smooth_sigma_A`` (Å; 0 for none) along r,
    with mirrored edges, so single-bin noise cannot make a peak. A peak is a local maximum
    of the smoothed g with topographic prominence ≥ ``min_prominence`` (in units of g,
    scipy.signal.find_peaks). The minimum after peak k is the lowest point of the smoothed
    g between peak k and peak k+1 (or r_max after the last peak); on a flat plateau (a
    crystal's empty gap between shells) it is the centre of the plateau. After the last
    peak the minimum is NaN if g(r) is still falling at r_max (the lowest point is the last bin).
    """
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import find_peaks

    g = np.asarray(result.g, dtype=np.float64)
    r = np.asarray(result.r, dtype=np.float64)
    dr = float(r[1] - r[0]) if len(r) > 1 else 1.0
    gs = gaussian_filter1d(g, smooth_sigma_A / dr, mode="mirror") if smooth_sigma_A > 0 else g.copy()
    peaks, _ = find_peaks(gs, prominence=min_prominence)
    minima = np.full(len(peaks), np.nan)
    scale = float(gs.max()) if gs.size else 1.0
    for k, p in enumerate(peaks):
        end = peaks[k + 1] if k + 1 < len(peaks) else len(gs)
        window = gs[p:end]
        lo = int(np.argmin(window))
        if k + 1 == len(peaks) and lo == len(window) - 1:
            continue  # still decreasing at r_max: no minimum inside the range
        # centre of the plateau of (numerically) equal lowest values around the argmin
        flat = window <= window[lo] + 1e-6 * scale
        a = lo
        while a > 0 and flat[a - 1]:
            a -= 1
        b = lo
        while b + 1 < len(window) and flat[b + 1]:
            b += 1
        minima[k] = 0.5 * (r[p + a] + r[p + b])
    return RDFPeaks(r_peaks=r[peaks], r_minima=minima, g_smooth=gs)


def cutoff_from_rdf(result: RDF, rule: str = "first_minimum", *, smooth_sigma_A: float = 0.1, min_prominence: float = 0.05) -> float:
    """A cutoff radius (Å) estimated from g(r).

    ``rule``:

    - ``"first_minimum"``: the minimum of g(r) following its first peak — the edge of the
      first coordination shell (fcc Cu: ≈ 3.0 Å, between the 2.55 Å and 3.61 Å shells).
    - ``"third_peak"``: the minimum of g(r) following its third peak, i.e. the radius that
      encloses the first three coordination shells completely (fcc Cu: ≈ 4.8 Å, between
      the 3rd shell at 4.42 Å and the 4th at 5.11 Å).

    Peaks and minima come from :func:`rdf_peaks` (Gaussian smoothing of ``smooth_sigma_A``
    Å, peaks of prominence ≥ ``min_prominence``). Raises ValueError, saying what to change,
    when g(r) has fewer peaks than the rule needs or g(r) is still falling at r_max.
    """
    need = {"first_minimum": 1, "third_peak": 3}
    if rule not in need:
        raise ValueError(f"unknown rule {rule!r}: use 'first_minimum' or 'third_peak'")
    pk = rdf_peaks(result, smooth_sigma_A=smooth_sigma_A, min_prominence=min_prominence)
    n = need[rule]
    r_max = float(result.r[-1] + 0.5 * (result.r[1] - result.r[0]))
    if len(pk.r_peaks) < n:
        raise ValueError(
            f"cutoff rule {rule!r} needs {n} peak(s) of g(r) but found {len(pk.r_peaks)} "
            f"(at {np.round(pk.r_peaks, 2).tolist()} Å) below r_max = {r_max:g} Å: "
            "compute g(r) to a larger r_max, average more frames, or lower min_prominence"
        )
    r_min = pk.r_minima[n - 1]
    if not np.isfinite(r_min):
        raise ValueError(
            f"cutoff rule {rule!r}: g(r) is still falling after its peak at {pk.r_peaks[n - 1]:.2f} Å "
            f"when it reaches r_max = {r_max:g} Å: compute g(r) to a larger r_max"
        )
    return float(r_min)
