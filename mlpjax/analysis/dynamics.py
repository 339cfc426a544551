"""Dynamics of a trajectory: unwrapping, mean squared displacement and diffusion
coefficients (Einstein, with block errors), velocity autocorrelation and Green–Kubo diffusion.

Units: Å, ps, amu (velocities in Å/ps unless stated); diffusion coefficients in Å²/ps and
cm²/s (1 Å²/ps = 10⁻⁴ cm²/s).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "A2_PER_PS_TO_CM2_PER_S", "unwrap", "remove_com_drift", "msd", "Diffusion", "diffusion_coefficient", "vacf",
    "green_kubo_diffusion",
]

A2_PER_PS_TO_CM2_PER_S = 1e-4  # 1 Å²/ps = 1e-16 cm² / 1e-12 s


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
