"""Trajectory analysis: structure (g(r), coordination, cutoff estimates, bond-orientational
order and solid-like atoms) and dynamics (unwrapping, MSD and diffusion, VACF and
vibrational spectrum).

Every function is a pure function of host-side NumPy arrays (or of a sequence of frames,
ASE ``Atoms`` or mlpjax ``Configuration``) and returns NumPy arrays or small NamedTuples.
Nothing here is jitted: the work is histogramming and FFTs over whole trajectories, which
NumPy does at memory bandwidth, while a jitted version would recompile for every new
trajectory length and copy the trajectory to the device and back.

Pair distances come from the same O(N) host neighbour list as training (vesin), so a
frame of 10⁴ atoms costs milliseconds and cells smaller than 2·r_max are handled
correctly (every periodic image is counted).

Units: Å, ps, amu (velocities in Å/ps unless stated); diffusion coefficients are
returned in Å²/ps and cm²/s (1 Å²/ps = 10⁻⁴ cm²/s).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

A2_PER_PS_TO_CM2_PER_S = 1e-4  # 1 Å²/ps = 1e-16 cm² / 1e-12 s
THZ_TO_CM1 = 1e12 / 2.99792458e10  # 1 THz = 33.356 cm⁻¹ (ν̃ = ν / c)


# ============================================================================ structure
class RDF(NamedTuple):
    r: np.ndarray  # [n_bins] Å, bin centres
    g: np.ndarray  # [n_bins] dimensionless g(r)
    density: float  # atoms/Å^3 (mean over frames) of the neighbour species (all atoms for the total g(r))


def _frame_arrays(frame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(positions [N,3] Å, cell [3,3] Å (rows = lattice vectors), pbc [3] bool, numbers [N] int) of one frame."""
    pos = np.asarray(frame.positions, dtype=np.float64)
    cell = np.asarray(getattr(frame.cell, "array", frame.cell), dtype=np.float64)
    pbc = np.broadcast_to(np.asarray(frame.pbc, dtype=bool), (3,))
    numbers = np.asarray(frame.numbers, dtype=np.int64)
    return pos, cell, pbc, numbers


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


# ================================================================ bond-orientational order
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


# ============================================================================= dynamics
def unwrap(positions: np.ndarray, cells: np.ndarray | None = None, *, pbc=True) -> np.ndarray:
    """Unwrapped trajectory from positions wrapped into a periodic cell.

    positions: [T, N, 3] Å, wrapped (or not) into the cell of each frame.
    cells: [T, 3, 3] or [3, 3] Å, rows are lattice vectors (may change per frame: NPT);
        None for a free-boundary trajectory.
    pbc: bool or [3] bool, periodic directions.
    Returns [T, N, 3] Å, float64, with frame 0 unchanged.

    Each step's displacement is the minimum image found in fractional coordinates of the
    *new* frame's cell: Δu_t = (w_t − w_{t−1}) − round((w_t − w_{t−1}) · L_t⁻¹) · L_t
    (rounded only along periodic directions). With a constant cell this is exact; with a
    changing cell (NPT) it is the "toroidal-view-preserving" scheme of von Bülow,
    Bullerjahn & Hummer, J. Chem. Phys. 153, 021101 (2020), which keeps the barostat's
    rescaling of wrapped coordinates out of the long-time displacements (converting
    unwrapped fractional coordinates with the current cell would not). Assumes every atom
    moves less than half a cell width between successive frames. Without periodic
    directions (``cells`` None, or pbc all False) the positions are returned as they are.
    """
    from ase.geometry import complete_cell

    x = np.asarray(positions, dtype=np.float64)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"positions must be [T, N, 3], got shape {x.shape}")
    periodic = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if cells is None or not periodic.any():
        return x.copy()
    cells = np.asarray(cells, dtype=np.float64)
    cells = np.broadcast_to(cells, (x.shape[0], 3, 3)) if cells.ndim == 2 else cells
    if cells.shape != (x.shape[0], 3, 3):
        raise ValueError(f"cells must be [3, 3] or [T, 3, 3] with T = {x.shape[0]}, got shape {cells.shape}")
    # non-periodic directions may carry a zero lattice vector (ASE slabs): fill it, it is never rounded
    full = np.stack([complete_cell(c) for c in cells])  # [T, 3, 3] Å
    if np.any(np.abs(np.linalg.det(full[:, :, :])) < 1e-12):
        raise ValueError("a cell of the trajectory is singular along a periodic direction: cannot unwrap")
    step = np.diff(x, axis=0)  # [T-1, N, 3] Å, wrapped displacements
    frac = np.einsum("tnj,tjk->tnk", step, np.linalg.inv(full[1:]))  # [T-1, N, 3] in the new cell
    jump = np.where(periodic, np.round(frac), 0.0)
    step = step - np.einsum("tnj,tjk->tnk", jump, full[1:])
    out = np.empty_like(x)
    out[0] = x[0]
    np.cumsum(step, axis=0, out=out[1:])
    out[1:] += x[0]
    return out


def remove_com_drift(positions: np.ndarray, masses: np.ndarray | None = None) -> np.ndarray:
    """positions [T, N, 3] Å minus the centre of mass of each frame (masses [N] amu; equal if None),
    plus the centre of mass of frame 0, so only the drift is removed. Returns [T, N, 3] Å."""
    x = np.asarray(positions, dtype=np.float64)
    w = np.ones(x.shape[1]) if masses is None else np.asarray(masses, dtype=np.float64)
    com = np.einsum("tnk,n->tk", x, w) / w.sum()  # [T, 3] Å
    return x - (com - com[0])[:, None, :]


def _selected(x: np.ndarray, select) -> np.ndarray:
    """x [T, N, ...] restricted to the atoms in ``select`` ([N] bool mask, integer indices or None)."""
    if select is None:
        return x
    sel = np.asarray(select)
    out = x[:, sel]
    if out.shape[1] == 0:
        raise ValueError("the atom selection is empty")
    return out


def _autocorrelation_sums(x: np.ndarray) -> np.ndarray:
    """Σ_columns Σ_{t=0}^{T−1−m} x(t)·x(t+m) for m = 0..T−1, by zero-padded FFT.

    x: [T, M] (time first; M columns, e.g. atoms × Cartesian components). Returns [T].
    The columns are processed in chunks so memory stays O(T · chunk).
    """
    t = x.shape[0]
    n_fft = 1 << int(np.ceil(np.log2(2 * t)))  # ≥ 2T: no circular wrap-around
    chunk = max(1, (1 << 22) // n_fft)
    total = np.zeros(t)
    for c in range(0, x.shape[1], chunk):
        f = np.fft.rfft(x[:, c : c + chunk], n=n_fft, axis=0)
        total += np.fft.irfft(f.real**2 + f.imag**2, n=n_fft, axis=0)[:t].sum(axis=1)
    return total


def _n_lags(t: int, max_lag: int | None) -> int:
    if t < 2:
        raise ValueError(f"need at least 2 frames, got {t}")
    if max_lag is None:
        return t
    if not 0 <= max_lag < t:
        raise ValueError(f"max_lag must be in [0, {t - 1}] for {t} frames, got {max_lag}")
    return max_lag + 1


def msd(
    positions: np.ndarray,
    *,
    max_lag: int | None = None,
    origins: str | int = "all",
    select=None,
    remove_com: bool = True,
    masses: np.ndarray | None = None,
) -> np.ndarray:
    """Mean squared displacement MSD(m) = ⟨|r_i(t₀ + m) − r_i(t₀)|²⟩ over atoms i and origins t₀.

    positions: [T, N, 3] Å, *unwrapped* (:func:`unwrap`), evenly spaced in time.
    max_lag: largest lag in frames (default T − 1; lags beyond ~T/2 average few origins).
    origins: ``"all"`` — every frame is a time origin, computed by FFT in O(T log T) per
        atom (Calandrini et al., J. Chim. Phys. 2011, the nMOLDYN algorithm:
        MSD(m) = S₁(m) − 2 S₂(m), S₂ the position autocorrelation); or an int stride s —
        origins 0, s, 2s, ... only, computed directly (s = 1 equals ``"all"``).
    select: [N] bool mask or integer indices of the atoms to average over (e.g. one
        species); the centre of mass is still that of all atoms.
    remove_com: subtract the drift of the centre of mass of all atoms first
        (mass-weighted with masses [N] amu, else equal weights).
    Returns [max_lag + 1] Å², MSD at lags 0, 1, ..., max_lag frames.
    """
    x = np.asarray(positions, dtype=np.float64)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"positions must be [T, N, 3], got shape {x.shape}")
    if remove_com:
        x = remove_com_drift(x, masses)
    x = _selected(x, select)
    t, n = x.shape[:2]
    n_lags = _n_lags(t, max_lag)
    x = x - x.mean(axis=0)  # MSD is translation invariant per atom; centring keeps the FFT precise
    if isinstance(origins, str):
        if origins != "all":
            raise ValueError(f"origins must be 'all' or a positive int stride, got {origins!r}")
        d = np.einsum("tnk,tnk->t", x, x)  # [T] Å², Σ_i |r_i(t)|²
        cum = np.concatenate([[0.0], np.cumsum(d)])  # cum[k] = Σ_{t<k} d(t)
        m = np.arange(t)
        # S₁ numerator: Σ_{k=0}^{T−1−m} d(k) + Σ_{k=m}^{T−1} d(k)
        s1 = cum[t - m] + (cum[t] - cum[m])
        s2 = _autocorrelation_sums(x.reshape(t, n * 3))
        out = (s1 - 2.0 * s2) / ((t - m) * n)
        return np.maximum(out[:n_lags], 0.0)  # round-off can make MSD(0) ≈ −1e-16
    stride = int(origins)
    if stride < 1:
        raise ValueError(f"origin stride must be ≥ 1, got {origins}")
    t0 = np.arange(0, t, stride)
    out = np.empty(n_lags)
    for m in range(n_lags):
        o = t0[t0 + m < t]
        disp = x[o + m] - x[o]  # [n_origins, N, 3] Å
        out[m] = np.einsum("onk,onk->", disp, disp) / (len(o) * n)
    return out


class Diffusion(NamedTuple):
    D_A2_per_ps: float  # Å²/ps: mean of the block D's; without blocks slope / (2·dim) of the whole MSD
    D_err_A2_per_ps: float  # Å²/ps, block standard error std(D_blocks)/√(n_blocks − 1) (NaN without blocks)
    D_cm2_per_s: float  # the same D in cm²/s
    D_err_cm2_per_s: float  # its error in cm²/s
    D_blocks_A2_per_ps: np.ndarray  # [n_blocks] D of each independent block, Å²/ps (empty without blocks)
    slope_A2_per_ps: float  # line MSD ≈ slope · t + intercept fitted to the given MSD (in the blocks' lag window), Å²/ps
    intercept_A2: float  # Å²
    fit_start_ps: float  # lag-time window [fit_start_ps, fit_end_ps] of the fits, ps
    fit_end_ps: float


def _fit_slope(times_ps: np.ndarray, msd_A2: np.ndarray, fit_range: tuple[float, float]) -> tuple[float, float, float, float]:
    """(slope Å²/ps, intercept Å², t_start ps, t_end ps) of a least-squares line through the MSD
    at lag times within [start, end] · the longest lag time."""
    start, end = fit_range
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"fit_range must be fractions 0 ≤ start < end ≤ 1, got {fit_range}")
    t_max = times_ps[-1]
    sel = (times_ps >= start * t_max - 1e-12) & (times_ps <= end * t_max + 1e-12)
    if sel.sum() < 2:
        raise ValueError(
            f"the fit range {fit_range} of the {len(times_ps)} MSD lags holds {int(sel.sum())} point(s): "
            "use a longer trajectory, fewer blocks or a wider fit_range"
        )
    slope, intercept = np.polyfit(times_ps[sel], msd_A2[sel], 1)
    return float(slope), float(intercept), float(times_ps[sel][0]), float(times_ps[sel][-1])


def diffusion_coefficient(
    times_ps: np.ndarray,
    msd_A2: np.ndarray,
    *,
    fit_range: tuple[float, float] = (0.1, 0.5),
    n_blocks: int = 5,
    positions: np.ndarray | None = None,
    select=None,
    remove_com: bool = True,
    masses: np.ndarray | None = None,
    dim: int = 3,
) -> Diffusion:
    """Self-diffusion coefficient from the linear (diffusive) part of the MSD (Einstein relation).

    D = slope / (2·dim), with slope the least-squares slope of MSD(t) (Å²) against lag
    time t (ps) over the lags with start·t_max ≤ t ≤ end·t_max, ``fit_range`` = (start,
    end) as fractions of the longest lag t_max; in 3D D = slope / 6. The default (0.1,
    0.5) skips the ballistic start and the poorly averaged long lags.

    times_ps: [n_lags] ps, lag times of ``msd_A2`` (times_ps[0] = 0).
    msd_A2: [n_lags] Å², e.g. from :func:`msd`.
    positions: [T, N, 3] Å, the unwrapped trajectory that gave ``msd_A2``. With it and
        n_blocks ≥ 2 the trajectory is split into n_blocks consecutive, independent blocks
        of T // n_blocks frames; each block's MSD (same ``select``/``remove_com``/``masses``
        as for :func:`msd`, lags up to min(n_lags, T // n_blocks) − 1) is fitted over the
        same fractions of its own lag range, and D is the mean of the block D's with the
        standard error std(D_blocks) / √(n_blocks − 1). The line (slope, intercept) is then
        fitted to ``msd_A2`` over the same lag window as the blocks, so it can be drawn
        over the MSD and compared with D (slope / (2·dim) ≈ D within the error). Each
        block must be long enough to reach the diffusive regime: use fewer blocks if not.
        Without blocks D = slope / (2·dim) of the fit to the whole ``msd_A2`` and the
        error is NaN.
    Returns a :class:`Diffusion` (Å²/ps and cm²/s; 1 Å²/ps = 10⁻⁴ cm²/s).
    """
    times_ps = np.asarray(times_ps, dtype=np.float64)
    msd_A2 = np.asarray(msd_A2, dtype=np.float64)
    if times_ps.shape != msd_A2.shape or times_ps.ndim != 1:
        raise ValueError(f"times_ps and msd_A2 must be 1-D of equal length, got {times_ps.shape} and {msd_A2.shape}")
    blocks = np.zeros(0)
    err = float("nan")
    n_lags = len(msd_A2)
    if positions is not None and n_blocks >= 2:
        x = np.asarray(positions, dtype=np.float64)
        t_block = x.shape[0] // n_blocks
        n_lags = min(n_lags, t_block)
        if n_lags < 4:
            raise ValueError(f"{n_blocks} blocks of a {x.shape[0]}-frame trajectory are too short to fit: use fewer blocks")
        blocks = np.array(
            [
                _fit_slope(
                    times_ps[:n_lags],
                    msd(x[b * t_block : (b + 1) * t_block], max_lag=n_lags - 1, select=select, remove_com=remove_com, masses=masses),
                    fit_range,
                )[0]
                / (2 * dim)
                for b in range(n_blocks)
            ]
        )
        err = float(np.std(blocks) / np.sqrt(n_blocks - 1))
    # the whole-trajectory line is fitted over the same lag window as the blocks
    slope, intercept, t0, t1 = _fit_slope(times_ps[:n_lags], msd_A2[:n_lags], fit_range)
    d = float(np.mean(blocks)) if len(blocks) else slope / (2 * dim)
    return Diffusion(
        D_A2_per_ps=float(d),
        D_err_A2_per_ps=err,
        D_cm2_per_s=float(d * A2_PER_PS_TO_CM2_PER_S),
        D_err_cm2_per_s=err * A2_PER_PS_TO_CM2_PER_S,
        D_blocks_A2_per_ps=blocks,
        slope_A2_per_ps=slope,
        intercept_A2=intercept,
        fit_start_ps=t0,
        fit_end_ps=t1,
    )


def vacf(
    velocities: np.ndarray,
    *,
    max_lag: int | None = None,
    normalize: bool = True,
    masses: np.ndarray | None = None,
    select=None,
) -> np.ndarray:
    """Velocity autocorrelation C(m) = (1/N) Σ_i w_i ⟨v_i(t₀)·v_i(t₀ + m)⟩_{t₀}, every frame an origin (FFT).

    velocities: [T, N, 3], evenly spaced frames, any velocity unit [v] (Å/ps for
        :func:`green_kubo_diffusion`).
    max_lag: largest lag in frames (default T − 1).
    masses: [N] amu; if given w_i = m_i (C(0) = 2⟨E_kin⟩/N, the weighting of the
        vibrational density of states), else w_i = 1.
    select: [N] bool mask or integer indices of the atoms to average over.
    normalize: divide by C(0) (dimensionless, C(0) = 1).
    Returns [max_lag + 1]: dimensionless if normalized, else [v]² (× amu with masses).
    """
    v = np.asarray(velocities, dtype=np.float64)
    if v.ndim != 3 or v.shape[-1] != 3:
        raise ValueError(f"velocities must be [T, N, 3], got shape {v.shape}")
    if masses is not None:
        v = v * np.sqrt(np.asarray(masses, dtype=np.float64))[None, :, None]
    v = _selected(v, select)
    t, n = v.shape[:2]
    n_lags = _n_lags(t, max_lag)
    c = _autocorrelation_sums(v.reshape(t, n * 3))[:n_lags] / ((t - np.arange(n_lags)) * n)
    if normalize:
        if c[0] <= 0:
            raise ValueError("the velocities are all zero: the VACF cannot be normalised")
        c = c / c[0]
    return c


def green_kubo_diffusion(vacf_unnormalised: np.ndarray, dt_ps: float, *, dim: int = 3) -> float:
    """D = (1/dim) ∫₀^{t_max} ⟨v(0)·v(t)⟩ dt in Å²/ps (trapezoid rule over all given lags).

    vacf_unnormalised: [n_lags] Å²/ps², from ``vacf(v, normalize=False)`` with v in Å/ps
    and no masses. dt_ps: time between lags, ps. t_max must reach past the VACF's decay.
    """
    c = np.asarray(vacf_unnormalised, dtype=np.float64)
    return float(np.trapezoid(c, dx=dt_ps) / dim)


class Spectrum(NamedTuple):
    frequency_THz: np.ndarray  # [n_freq] THz (ν ≥ 0)
    wavenumber_cm1: np.ndarray  # [n_freq] cm⁻¹ (ν̃ = ν / c)
    intensity: np.ndarray  # [n_freq] [C]·ps, windowed cosine transform of the VACF


def vibrational_spectrum(c: np.ndarray, dt_fs: float, *, window: str | None = "hann", pad_factor: int = 4) -> Spectrum:
    """Vibrational spectrum (power spectrum of the velocities) from a VACF.

    I(ν) = 2 ∫₀^{t_max} w(t) C(t) cos(2πνt) dt, evaluated as dt·[C₀w₀ + 2 Σ_k w_k C_k cos(2πν k dt)]
    by a real FFT of the even extension of w·C, zero-padded to ≥ ``pad_factor`` times its
    length for a finer frequency grid (padding interpolates, it adds no resolution:
    that is ≈ 1/t_max).

    c: [n_lags] VACF (:func:`vacf`, normalised or not) at lags k·dt.
    dt_fs: time between lags, fs.
    window: ``"hann"`` — the half Hann window w(t) = ½(1 + cos(π t / t_max)), 1 at t = 0
        and 0 at t_max, which suppresses the ringing of the truncated VACF; None — no window.
    Returns :class:`Spectrum`; with an unnormalised VACF in Å²/ps² and no window,
    I(0) = 2·dim·D (D as in :func:`green_kubo_diffusion`).
    """
    c = np.asarray(c, dtype=np.float64)
    n = len(c)
    if n < 2:
        raise ValueError("the VACF needs at least 2 lags for a spectrum")
    if window == "hann":
        w = 0.5 * (1.0 + np.cos(np.pi * np.arange(n) / (n - 1)))
    elif window is None:
        w = np.ones(n)
    else:
        raise ValueError(f"window must be 'hann' or None, got {window!r}")
    cw = c * w
    n_fft = 1 << int(np.ceil(np.log2(max(2, pad_factor) * 2 * (n - 1))))
    x = np.zeros(n_fft)
    x[:n] = cw
    x[n_fft - (n - 1) :] = cw[1:][::-1]  # even extension: x[−k] = x[k]
    dt_ps = dt_fs * 1e-3
    intensity = np.fft.rfft(x).real * dt_ps
    freq = np.fft.rfftfreq(n_fft, d=dt_ps)  # THz = 1/ps
    return Spectrum(frequency_THz=freq, wavenumber_cm1=freq * THZ_TO_CM1, intensity=intensity)


def spectrum_peak(spectrum: Spectrum) -> float | None:
    """Frequency (THz) of the highest local maximum of the spectrum at ν > 0, or None if there is none.

    The ν = 0 value (diffusive motion) is not a peak.
    """
    from scipy.signal import find_peaks

    peaks, _ = find_peaks(spectrum.intensity)
    peaks = peaks[spectrum.frequency_THz[peaks] > 0]
    if len(peaks) == 0:
        return None
    return float(spectrum.frequency_THz[peaks[np.argmax(spectrum.intensity[peaks])]])


# ========================================================================= trajectories
def _frame_interval_ps(frames: Sequence) -> float | None:
    """Time between successive frames (ps) from their ``info['time_ps']``, None if any frame lacks it.

    Raises ValueError if the frames are not evenly spaced in time (MSD/VACF need even spacing).
    """
    times = []
    for f in frames:
        info = getattr(f, "info", None) or {}
        if "time_ps" not in info:
            return None
        times.append(float(info["time_ps"]))
    if len(times) < 2:
        return None
    dt = np.diff(times)
    if dt[0] <= 0 or not np.allclose(dt, dt[0], rtol=1e-6, atol=1e-9):
        raise ValueError(
            f"the frames' info['time_ps'] are not evenly spaced (steps from {dt.min():g} to {dt.max():g} ps): "
            "MSD and VACF need a constant interval between frames"
        )
    return float(dt[0])


def _trajectory_arrays(frames: Sequence) -> dict:
    """positions [T,N,3] Å, cells [T,3,3] Å, pbc [3] bool, numbers [N] int, velocities [T,N,3] Å/ps or None.

    Needs the same atoms in the same order in every frame.
    """
    import ase.units

    pos, cells, vel = [], [], []
    numbers0 = pbc0 = None
    for k, f in enumerate(frames):
        p, c, pbc, numbers = _frame_arrays(f)
        if numbers0 is None:
            numbers0, pbc0 = numbers, pbc
        elif not np.array_equal(numbers, numbers0) or not np.array_equal(pbc, pbc0):
            raise ValueError(f"MSD/VACF need the same atoms and boundary conditions in every frame; frame {k} differs from frame 0")
        pos.append(p)
        cells.append(c)
        has_v = hasattr(f, "has") and f.has("momenta")
        vel.append(np.asarray(f.get_velocities(), np.float64) * (ase.units.fs * 1e3) if has_v else None)
    velocities = None if any(v is None for v in vel) else np.stack(vel)  # ASE velocity unit → Å/ps
    return {"positions": np.stack(pos), "cells": np.stack(cells), "pbc": pbc0, "numbers": numbers0, "velocities": velocities}


def _nan_to_none(x):
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def analyze_trajectory(
    frames: Sequence,
    *,
    what: Sequence[str] = ("rdf", "msd"),
    species: Sequence[str] | None = None,
    r_max: float = 6.0,
    n_bins: int = 120,
    dt_ps: float | None = None,
    fit_range: tuple[float, float] = (0.1, 0.5),
    n_blocks: int = 5,
    order_cutoff: float | None = None,
) -> dict:
    """Numbers and curves of a trajectory: what ⊆ {"rdf", "msd", "vacf", "order"}.

    frames: ASE Atoms (or mlpjax Configurations; those carry no velocities), evenly spaced
        in time for MSD/VACF, the same atoms in every frame.
    species: chemical symbols for partial g(r) of every pair of them and a per-species
        MSD (default: every species present, when there is more than one).
    r_max: Å; dt_ps: time between frames, ps (default: from the frames' info['time_ps']).
    fit_range, n_blocks: as in :func:`diffusion_coefficient` (fewer blocks are used when
        the trajectory is too short for 5 blocks of ≥ 8 frames; none below 16 frames).
    order_cutoff: Å, neighbour cutoff of the bond order ("order": Steinhardt q4/q6 and ten
        Wolde's solid-like atoms per frame, :func:`bond_order`); default: the first minimum of
        the total g(r) of the frames.

    Returns {"numbers": a JSON-ready dict (NaN → None; a cutoff rule that does not apply
    is None with the reason under "notes"), "curves": {name: NumPy array}}.
    """
    from ase.data import atomic_masses, chemical_symbols

    frames = list(frames)
    what = tuple(what)
    unknown = set(what) - {"rdf", "msd", "vacf", "order"}
    if unknown:
        raise ValueError(f"unknown analyses {sorted(unknown)}: choose from rdf, msd, vacf, order")
    if not frames:
        raise ValueError("the trajectory has no frames")
    numbers0 = np.asarray(frames[0].numbers)
    present = [chemical_symbols[z] for z in sorted(set(numbers0.tolist()))]
    if species is None:
        species = present if len(present) > 1 else []
    for s in species:
        if s not in present:
            raise ValueError(f"species {s!r} is not in the trajectory (it holds {', '.join(present)})")
    out: dict = {"n_frames": len(frames), "n_atoms": int(len(numbers0)), "species": present}
    curves: dict = {}

    if "rdf" in what:
        pairs = [(None, None)] + [(a, b) for i, a in enumerate(species) for b in species[i:]]
        results = _rdf_pairs(frames, pairs, r_max=r_max, n_bins=n_bins)
        summary: dict = {"r_max_A": float(r_max), "n_bins": int(n_bins), "notes": [], "partial": {}}
        for (a, b), res in zip(pairs, results):
            entry: dict = {}
            pk = rdf_peaks(res)
            entry["first_peak_A"] = float(pk.r_peaks[0]) if len(pk.r_peaks) else None
            for rule in ("first_minimum", "third_peak"):
                try:
                    entry[f"cutoff_{rule}_A"] = cutoff_from_rdf(res, rule)
                except ValueError as err:
                    entry[f"cutoff_{rule}_A"] = None
                    summary["notes"].append(f"{'total' if a is None else f'{a}-{b}'}: {err}")
            entry["first_minimum_A"] = entry["cutoff_first_minimum_A"]
            r_cut = entry["first_minimum_A"]
            entry["coordination_number"] = coordination_number(res, r_cut) if r_cut is not None else None
            entry["density_per_A3"] = res.density
            if a is None:
                summary.update(entry)
                curves["rdf_r_A"], curves["rdf_g"] = res.r, res.g
            else:
                summary["partial"][f"{a}-{b}"] = entry
                curves[f"rdf_g_{a}-{b}"] = res.g
        out["rdf"] = summary

    if "msd" in what or "vacf" in what:
        traj = _trajectory_arrays(frames)
        if dt_ps is None:
            dt_ps = _frame_interval_ps(frames)
        if dt_ps is None:
            raise ValueError("MSD/VACF need the time between frames: the frames carry no info['time_ps']; give dt_ps (CLI: --timestep-fs)")
        t = traj["positions"].shape[0]
        if t < 4:
            raise ValueError(f"MSD/VACF need at least 4 frames, the trajectory has {t}")
        masses = atomic_masses[traj["numbers"]]

    if "msd" in what:
        x = unwrap(traj["positions"], traj["cells"], pbc=traj["pbc"])
        blocks = min(n_blocks, t // 8)
        lag_t = np.arange(t) * dt_ps
        summary = {"dt_ps": dt_ps, "max_lag_ps": float(lag_t[-1]), "n_blocks": int(blocks) if blocks >= 2 else 0, "per_species": {}}
        selections = [(None, None)] + [(s, traj["numbers"] == chemical_symbols.index(s)) for s in species]
        for name, sel in selections:
            m = msd(x, select=sel, masses=masses)
            dif = diffusion_coefficient(lag_t, m, fit_range=fit_range, n_blocks=blocks, positions=x if blocks >= 2 else None, select=sel, masses=masses)
            entry = {k: getattr(dif, k) for k in ("D_A2_per_ps", "D_err_A2_per_ps", "D_cm2_per_s", "D_err_cm2_per_s", "fit_start_ps", "fit_end_ps", "slope_A2_per_ps", "intercept_A2")}
            if name is None:
                summary.update(entry)
                curves["msd_t_ps"], curves["msd_A2"] = lag_t, m
            else:
                summary["per_species"][name] = entry
                curves[f"msd_A2_{name}"] = m
        out["msd"] = summary

    if "vacf" in what:
        if traj["velocities"] is None:
            raise ValueError("VACF needs velocities: the frames carry no momenta")
        v = traj["velocities"]
        max_lag = max(1, t // 2)
        c_raw = vacf(v, max_lag=max_lag, normalize=False)
        c_mass = vacf(v, max_lag=max_lag, normalize=True, masses=masses)
        spec = vibrational_spectrum(c_mass, dt_ps * 1e3)
        peak = spectrum_peak(spec)
        out["vacf"] = {
            "dt_ps": dt_ps,
            "max_lag_ps": float(max_lag * dt_ps),
            "D_green_kubo_A2_per_ps": green_kubo_diffusion(c_raw, dt_ps),
            "spectrum_peak_THz": peak,
            "spectrum_peak_cm1": None if peak is None else peak * THZ_TO_CM1,
        }
        curves["vacf_t_ps"], curves["vacf_mass_weighted_normalised"] = np.arange(max_lag + 1) * dt_ps, c_mass
        curves["spectrum_THz"], curves["spectrum_intensity_ps"] = spec.frequency_THz, spec.intensity

    if "order" in what:
        source = "given"
        if order_cutoff is None:
            order_cutoff = out["rdf"]["first_minimum_A"] if "rdf" in out else cutoff_from_rdf(rdf(frames, r_max=r_max, n_bins=n_bins))
            source = "first minimum of g(r)"
            if order_cutoff is None:
                raise ValueError("bond order: g(r) has no first minimum within r_max; give order_cutoff")
        pairs = [_bond_vectors(f, order_cutoff) for f in frames]  # one neighbour list per frame for q6 and q4
        q6 = [_bond_order_of_pairs(p, 6) for p in pairs]
        q4 = [_bond_order_of_pairs(p, 4).q for p in pairs]
        solid = np.array([b.solid.mean() for b in q6])  # [n_frames]
        out["order"] = {
            "cutoff_A": float(order_cutoff), "cutoff_source": source,
            "q4_mean": float(np.mean([q.mean() for q in q4])), "q6_mean": float(np.mean([b.q.mean() for b in q6])),
            "mean_neighbours": float(np.mean([b.n_neighbours.mean() for b in q6])),
            "solid_fraction_mean": float(solid.mean()), "solid_fraction_first": float(solid[0]),
            "solid_fraction_last": float(solid[-1]), "solid_fraction_max": float(solid.max()),
        }
        curves["order_frame"] = np.arange(len(frames))
        curves["solid_fraction"], curves["q6_mean_per_frame"] = solid, np.array([b.q.mean() for b in q6])
    return {"numbers": _nan_to_none(out), "curves": curves}


def write_analysis(result: dict, output_dir) -> dict:
    """Write ``analysis.json`` (the numbers), ``analysis.npz`` (the curves) and PNG plots
    (``rdf.png``, ``msd.png``, ``vacf.png``, ``order.png``, those that apply) of :func:`analyze_trajectory`'s
    result into output_dir. Returns {name: path}."""
    import io
    import json
    import os

    from matplotlib.figure import Figure  # no pyplot: Agg canvas, no GUI backend, nothing global

    from mlpjax._io import atomic_write_bytes

    os.makedirs(output_dir, exist_ok=True)
    nums, curves = result["numbers"], result["curves"]
    paths = {}

    def save(fig, name):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120)
        paths[name] = os.path.join(output_dir, f"{name}.png")
        atomic_write_bytes(paths[name], buf.getvalue())

    if "rdf" in nums:
        fig = Figure(figsize=(5.5, 3.8), layout="constrained")
        ax = fig.subplots()
        ax.plot(curves["rdf_r_A"], curves["rdf_g"], "k-", lw=1.5, label="total")
        for pair in nums["rdf"]["partial"]:
            ax.plot(curves["rdf_r_A"], curves[f"rdf_g_{pair}"], lw=1, label=pair)
        for key, style in (("cutoff_first_minimum_A", "--"), ("cutoff_third_peak_A", ":")):
            if nums["rdf"].get(key) is not None:
                ax.axvline(nums["rdf"][key], color="grey", ls=style, lw=1, label=f"{key[7:-2].replace('_', ' ')} {nums['rdf'][key]:.2f} Å")
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.set_xlabel("r [Å]")
        ax.set_ylabel("g(r)")
        ax.legend(fontsize=8)
        save(fig, "rdf")
    if "msd" in nums:
        m = nums["msd"]
        fig = Figure(figsize=(5.5, 3.8), layout="constrained")
        ax = fig.subplots()
        t = curves["msd_t_ps"]
        ax.plot(t, curves["msd_A2"], "k-", lw=1.5, label="all atoms")
        for s in m["per_species"]:
            ax.plot(t, curves[f"msd_A2_{s}"], lw=1, label=s)
        fit_t = np.array([m["fit_start_ps"], m["fit_end_ps"]])
        err = "" if m["D_err_A2_per_ps"] is None else f" ± {m['D_err_A2_per_ps']:.3g}"
        ax.plot(fit_t, m["slope_A2_per_ps"] * fit_t + m["intercept_A2"], "r--", lw=1.2, label="linear fit (all atoms)")
        ax.set_title(f"D = {m['D_A2_per_ps']:.3g}{err} Å²/ps", fontsize=10)
        ax.set_xlabel("lag time [ps]")
        ax.set_ylabel("MSD [Å²]")
        ax.legend(fontsize=8)
        save(fig, "msd")
    if "vacf" in nums:
        fig = Figure(figsize=(9, 3.6), layout="constrained")
        a1, a2 = fig.subplots(1, 2)
        a1.plot(curves["vacf_t_ps"], curves["vacf_mass_weighted_normalised"], "k-", lw=1)
        a1.axhline(0.0, color="grey", lw=0.5)
        a1.set_xlabel("lag time [ps]")
        a1.set_ylabel("VACF (mass-weighted, C(t)/C(0))")
        a2.plot(curves["spectrum_THz"], curves["spectrum_intensity_ps"], "k-", lw=1)
        f, inten = curves["spectrum_THz"], curves["spectrum_intensity_ps"]
        visible = f[np.abs(inten) > 0.01 * np.abs(inten).max()]  # frequencies that carry intensity
        a2.set_xlim(0, min(float(f[-1]), 1.5 * float(visible.max()) if visible.size else float(f[-1])))
        if nums["vacf"]["spectrum_peak_THz"] is not None:
            a2.axvline(nums["vacf"]["spectrum_peak_THz"], color="r", ls="--", lw=0.8, label=f"peak {nums['vacf']['spectrum_peak_THz']:.2f} THz")
            a2.legend(fontsize=8)
        a2.set_xlabel("frequency [THz]")
        a2.set_ylabel("intensity [ps]")
        save(fig, "vacf")
    if "order" in nums:
        fig = Figure(figsize=(5.5, 3.8), layout="constrained")
        ax = fig.subplots()
        ax.plot(curves["order_frame"], curves["solid_fraction"], "k-", lw=1.2, label="solid-like atoms (fraction)")
        ax.plot(curves["order_frame"], curves["q6_mean_per_frame"], "b-", lw=1, label="⟨q6⟩")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("frame")
        ax.set_title(f"bond order, cutoff {nums['order']['cutoff_A']:.2f} Å", fontsize=10)
        ax.legend(fontsize=8)
        save(fig, "order")
    paths["json"] = os.path.join(output_dir, "analysis.json")
    atomic_write_bytes(paths["json"], (json.dumps(nums, indent=2) + "\n").encode())
    buf = io.BytesIO()
    np.savez(buf, **curves)
    paths["npz"] = os.path.join(output_dir, "analysis.npz")
    atomic_write_bytes(paths["npz"], buf.getvalue())
    return paths
