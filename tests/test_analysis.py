"""Trajectory analysis against independent references.

Structure: g(r) and partial g(r) against a brute-force all-images NumPy loop and ASE's
``ase.geometry.rdf.get_rdf``; cutoff rules on fcc Cu. Dynamics: unwrapping round trips
(fixed and changing cells), MSD against a naive O(T²) loop and a random walk of known D,
VACF against a naive loop, the spectrum of harmonic oscillators, Green–Kubo against the
Einstein relation on a Langevin (Ornstein–Uhlenbeck) trajectory. CLI: `mlpjax analyze`.
"""

import itertools
import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.geometry.rdf import get_rdf

from mlpjax.analysis import (
    RDF,
    analyze_trajectory,
    bond_order,
    coordination_number,
    cutoff_from_rdf,
    diffusion_coefficient,
    first_minimum,
    green_kubo_diffusion,
    msd,
    partial_rdf,
    rdf,
    rdf_peaks,
    solid_fraction,
    spectrum_peak,
    unwrap,
    vacf,
    vibrational_spectrum,
)


@pytest.fixture(scope="module")
def hot_cu_frames():
    """Three 256-atom fcc Cu frames with 0.1 Å Gaussian displacements (≈ 300 K EMT amplitudes)."""
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(3):
        a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((4, 4, 4))
        a.positions += rng.normal(0, 0.1, a.positions.shape)
        frames.append(a)
    return frames


@pytest.fixture(scope="module")
def nacl_frames():
    """Two rattled (0.08 Å) 216-atom rock-salt NaCl frames (cell 16.9 Å > 2 r_max, as ASE's get_rdf needs)."""
    rng = np.random.default_rng(1)
    frames = []
    for _ in range(2):
        a = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat((3, 3, 3))
        a.positions += rng.normal(0, 0.08, a.positions.shape)
        frames.append(a)
    return frames


# ============================================================================ g(r)
def test_rdf_matches_ase(hot_cu_frames):
    r_max, n_bins = 6.0, 60
    ours = rdf(hot_cu_frames, r_max=r_max, n_bins=n_bins)
    ref = np.mean([get_rdf(a, r_max, n_bins)[0] for a in hot_cu_frames], axis=0)
    # ASE ≥ 3.27 normalises with the exact shell volume too (and bins (r, r+dr] instead of
    # [r, r+dr), which differs only for distances exactly on a bin edge).
    np.testing.assert_allclose(ours.g, ref, rtol=1e-10, atol=1e-12)
    # the older per-image interface (deprecated in ASE 3.28, a wrapper of get_rdf that refuses partial g(r))
    from ase.geometry.analysis import Analysis

    with pytest.warns(FutureWarning, match="get_rdf"):
        per_image = Analysis(hot_cu_frames).get_rdf(r_max, n_bins)
    np.testing.assert_allclose(ours.g, np.mean(per_image, axis=0), rtol=1e-10, atol=1e-12)


def test_fcc_coordination_is_twelve(hot_cu_frames):
    result = rdf(hot_cu_frames, r_max=6.0, n_bins=120)
    r_min = first_minimum(result)
    assert 2.6 < r_min < 3.4  # between the 1st (2.55 Å) and 2nd (3.61 Å) shells
    assert coordination_number(result) == pytest.approx(12.0, abs=0.2)


def test_rdf_handles_small_cells():
    a = bulk("Cu", "fcc", a=3.61)  # 1-atom primitive cell, far smaller than r_max
    big = a.repeat((8, 8, 8))
    small = rdf([a], r_max=5.0, n_bins=50)
    large = rdf([big], r_max=5.0, n_bins=50)
    np.testing.assert_allclose(small.g, large.g, rtol=1e-10, atol=1e-10)


def test_rdf_rejects_clusters():
    from ase.build import molecule

    with pytest.raises(ValueError, match="periodic"):
        rdf([molecule("H2O")])


def _brute_force_rdf(frames, z_a, z_b, r_max, n_bins):
    """g_ab(r) = mean over frames of V/(N_a N_b) · hist/shell, every periodic image by explicit loops."""
    dr = r_max / n_bins
    edges = np.arange(n_bins + 1) * dr
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    gs = []
    for f in frames:
        cell, pos, z = np.asarray(f.cell), f.positions, f.numbers
        volume = abs(np.linalg.det(cell))
        heights = volume / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
        k = int(np.ceil(r_max / heights.min())) + 1
        hist = np.zeros(n_bins)
        a_atoms = [i for i in range(len(f)) if z_a is None or z[i] == z_a]
        b_atoms = [j for j in range(len(f)) if z_b is None or z[j] == z_b]
        for i in a_atoms:
            for j in b_atoms:
                for n in itertools.product(range(-k, k + 1), repeat=3):
                    if i == j and n == (0, 0, 0):
                        continue
                    d = np.linalg.norm(pos[j] + np.array(n) @ cell - pos[i])
                    if d < r_max:
                        hist[int(d // dr)] += 1
        gs.append(volume / (len(a_atoms) * len(b_atoms)) * hist / shell)
    return np.mean(gs, axis=0)


def test_partial_rdf_matches_brute_force_all_images():
    # a small triclinic two-species cell: r_max spans several images in every direction
    rng = np.random.default_rng(2)
    cell = np.array([[4.0, 0.0, 0.0], [1.1, 3.8, 0.0], [0.6, -0.7, 4.3]])
    frac = rng.random((5, 3))
    frames = []
    for _ in range(2):
        a = Atoms("Cu3O2", scaled_positions=frac, cell=cell, pbc=True)
        a.positions += rng.normal(0, 0.2, a.positions.shape)
        frames.append(a)
    r_max, n_bins = 6.5, 27  # bin edges avoid the 4.0 Å self-image distance, which round-off could put either side
    for sa, sb, za, zb in [(None, None, None, None), ("Cu", "O", 29, 8), ("O", "Cu", 8, 29), ("Cu", "Cu", 29, 29), ("O", "O", 8, 8)]:
        ours = partial_rdf(frames, sa, sb, r_max=r_max, n_bins=n_bins)
        ref = _brute_force_rdf(frames, za, zb, r_max, n_bins)
        np.testing.assert_allclose(ours.g, ref, rtol=1e-10, atol=1e-12, err_msg=f"{sa}-{sb}")
    assert partial_rdf(frames, 29, 8, r_max=r_max, n_bins=n_bins).density == pytest.approx(2 / abs(np.linalg.det(cell)))
    np.testing.assert_allclose(rdf(frames, r_max=r_max, n_bins=n_bins).g, partial_rdf(frames, None, None, r_max=r_max, n_bins=n_bins).g)


def test_partial_rdf_matches_ase_and_the_sum_rule(nacl_frames):
    r_max, n_bins = 6.0, 60
    total = rdf(nacl_frames, r_max=r_max, n_bins=n_bins)
    parts = {}
    for a, b in [("Na", "Na"), ("Na", "Cl"), ("Cl", "Na"), ("Cl", "Cl")]:
        parts[a, b] = partial_rdf(nacl_frames, a, b, r_max=r_max, n_bins=n_bins)
        ref = get_rdf(nacl_frames, r_max, n_bins, elements=(a, b), no_dists=True)
        # same convention as ASE ≥ 3.27 (= LAMMPS): ρ_b = N_b / V for a = b and a ≠ b alike
        np.testing.assert_allclose(parts[a, b].g, ref, rtol=1e-10, atol=1e-12, err_msg=f"{a}-{b}")
    np.testing.assert_allclose(parts["Na", "Cl"].g, parts["Cl", "Na"].g, rtol=1e-12)
    # g = Σ_ab c_a c_b g_ab with c_Na = c_Cl = 1/2
    np.testing.assert_allclose(total.g, 0.25 * sum(p.g for p in parts.values()), rtol=1e-12, atol=1e-12)
    # rock salt: 6 unlike nearest neighbours at a/2 = 2.82 Å, 12 like ones at a/√2 = 3.99 Å
    assert coordination_number(parts["Na", "Cl"], 3.4) == pytest.approx(6.0, abs=0.05)
    assert coordination_number(parts["Na", "Na"], 3.4) == pytest.approx(0.0, abs=0.05)
    assert coordination_number(parts["Na", "Na"], 4.9) == pytest.approx(12.0, abs=0.05)


def test_partial_rdf_rejects_absent_species(hot_cu_frames):
    with pytest.raises(ValueError, match="'O'"):
        partial_rdf(hot_cu_frames, "Cu", "O")


# ========================================================================= cutoffs
def test_cutoff_rules_on_fcc_cu(hot_cu_frames):
    result = rdf(hot_cu_frames, r_max=6.0, n_bins=120)
    r1 = cutoff_from_rdf(result, "first_minimum")
    r3 = cutoff_from_rdf(result, "third_peak")
    assert 2.55 + 0.2 < r1 < 3.61 - 0.2  # inside the gap between the 1st and 2nd shells
    assert 4.42 + 0.15 < r3 < 5.11 - 0.15  # between the 3rd (a√1.5) and 4th (a√2) shells
    assert coordination_number(result, r1) == pytest.approx(12.0, abs=0.05)
    assert coordination_number(result, r3) == pytest.approx(12 + 6 + 24, abs=0.5)
    peaks = rdf_peaks(result)
    np.testing.assert_allclose(peaks.r_peaks[:4], 3.61 * np.sqrt([0.5, 1.0, 1.5, 2.0]), atol=0.06)


def test_cutoff_peak_finding_ignores_noise(hot_cu_frames):
    clean = rdf(hot_cu_frames, r_max=6.0, n_bins=120)
    rng = np.random.default_rng(3)
    noisy = clean._replace(g=clean.g + rng.normal(0, 0.02, clean.g.shape) * (clean.r > 2.0))
    assert len(rdf_peaks(noisy).r_peaks) == len(rdf_peaks(clean).r_peaks) == 5
    # without smoothing the same noise makes spurious peaks
    assert len(rdf_peaks(noisy, smooth_sigma_A=0.0, min_prominence=0.01).r_peaks) > 5
    for rule in ("first_minimum", "third_peak"):
        assert cutoff_from_rdf(noisy, rule) == pytest.approx(cutoff_from_rdf(clean, rule), abs=0.15)


def test_cutoff_rules_say_what_is_missing(hot_cu_frames):
    short = rdf(hot_cu_frames, r_max=4.0, n_bins=80)  # only two shells inside r_max
    assert 2.75 < cutoff_from_rdf(short, "first_minimum") < 3.41
    with pytest.raises(ValueError, match="needs 3 peak.*larger r_max"):
        cutoff_from_rdf(short, "third_peak")
    falling = rdf(hot_cu_frames, r_max=4.7, n_bins=94)  # g still falls after the 3rd peak at r_max
    with pytest.raises(ValueError, match="still falling"):
        cutoff_from_rdf(falling, "third_peak")
    with pytest.raises(ValueError, match="unknown rule"):
        cutoff_from_rdf(short, "second_peak")
    flat = RDF(r=np.linspace(0.05, 5.95, 60), g=np.ones(60), density=0.1)  # ideal gas: no peaks at all
    with pytest.raises(ValueError, match="found 0"):
        cutoff_from_rdf(flat, "first_minimum")


# ========================================================== bond-orientational order
def _q_l_by_legendre(atoms, cutoff, l):
    """Independent reference, no spherical harmonics: the addition theorem
    Σ_m Y_lm(a) Y*_lm(b) = (2l+1)/(4π) P_l(a·b) turns Steinhardt's q_l(i)² into
    (1/n_i²) Σ_{j,k ∈ N(i)} P_l(r̂_ij·r̂_ik), summed over every periodic image by brute force."""
    from numpy.polynomial import legendre

    p_l = legendre.Legendre.basis(l)
    pos, cell = atoms.positions, atoms.cell.array
    images = np.array(list(itertools.product(range(-2, 3), repeat=3))) @ cell  # [125, 3] Å
    q = []
    for i in range(len(atoms)):
        d = (pos[None, :, :] + images[:, None, :] - pos[i]).reshape(-1, 3)
        r = np.linalg.norm(d, axis=1)
        u = d[(r > 1e-8) & (r < cutoff)]
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        q.append(np.sqrt(p_l(u @ u.T).sum()) / len(u))
    return np.array(q)


@pytest.mark.parametrize(
    "crystal, cutoff, n_nb, q4, q6",
    [  # perfect lattices, first shell only: Steinhardt et al. 1983; Mickel et al., JCP 138, 044501 (2013)
        (bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2), 3.0, 12, 0.19094, 0.57452),
        (bulk("Fe", "bcc", a=2.87, cubic=True).repeat(3), 2.6, 8, 0.50918, 0.62854),
        (bulk("Mg", "hcp", a=3.2, covera=np.sqrt(8.0 / 3.0)).repeat((3, 3, 2)), 3.4, 12, 0.09722, 0.48476),
    ],
    ids=["fcc", "bcc", "hcp"],
)
def test_bond_order_of_perfect_crystals(crystal, cutoff, n_nb, q4, q6):
    for l, expected in ((4, q4), (6, q6)):
        b = bond_order(crystal, cutoff=cutoff, l=l)
        np.testing.assert_allclose(b.q, expected, atol=2e-5)
        assert np.all(b.solid) and np.all(b.solid_bonds == b.n_neighbours)  # d_l = 1 for identical environments
        np.testing.assert_array_equal(b.n_neighbours, n_nb)


def test_bond_order_matches_legendre_reference_and_is_rotation_invariant():
    rng = np.random.default_rng(3)
    atoms = bulk("Cu", "fcc", a=3.61) * (3, 3, 3)  # triclinic primitive cell: images along skewed vectors
    atoms.positions += rng.normal(0, 0.2, atoms.positions.shape)
    for l in (4, 6):
        np.testing.assert_allclose(bond_order(atoms, cutoff=3.2, l=l).q, _q_l_by_legendre(atoms, 3.2, l), atol=1e-10)
    rotated = atoms.copy()
    rotated.rotate(37.0, (1.0, 2.0, -0.5), rotate_cell=True)
    a, b = bond_order(atoms, cutoff=3.2), bond_order(rotated, cutoff=3.2)
    np.testing.assert_allclose(a.q, b.q, atol=1e-10)
    np.testing.assert_array_equal(a.solid_bonds, b.solid_bonds)


def test_solid_fraction_tells_a_rattled_crystal_from_a_gas(hot_cu_frames):
    np.testing.assert_array_equal(solid_fraction(hot_cu_frames, cutoff=3.1), 1.0)
    rng = np.random.default_rng(0)
    gas = hot_cu_frames[0].copy()
    gas.positions = rng.uniform(0.0, 1.0, gas.positions.shape) @ gas.cell.array
    assert solid_fraction([gas], cutoff=3.3)[0] < 0.05
    with pytest.raises(ValueError, match="fully periodic"):
        bond_order(Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]]), cutoff=3.0)


# ======================================================================== unwrapping
def _wrap(x, cells):
    """Wrap [T,N,3] positions into the cell of each frame ([T,3,3]), fractional coordinates in [0, 1)."""
    frac = np.einsum("tnj,tjk->tnk", x, np.linalg.inv(cells))
    return np.einsum("tnj,tjk->tnk", frac - np.floor(frac), cells)


def test_unwrap_round_trip_fixed_triclinic_cell():
    rng = np.random.default_rng(4)
    cell = np.array([[6.0, 0.0, 0.0], [2.0, 5.5, 0.0], [1.0, 1.5, 7.0]])
    t, n = 400, 9
    x0 = rng.random((n, 3)) @ cell  # start inside the cell, so the unwrapped frame 0 is x0 itself
    x = x0 + np.concatenate([np.zeros((1, n, 3)), np.cumsum(rng.normal(0, 0.4, (t - 1, n, 3)), axis=0)])
    cells = np.broadcast_to(cell, (t, 3, 3))
    w = _wrap(x, cells)
    assert np.abs(w - x).max() > 3 * 5.5  # the walkers crossed the cell several times
    np.testing.assert_allclose(unwrap(w, cells), x, atol=1e-9)
    np.testing.assert_allclose(unwrap(w, cell), x, atol=1e-9)  # one [3,3] cell for all frames


def test_unwrap_changing_cell_keeps_physical_displacements():
    # NPT-like: each step the barostat rescales the wrapped positions with the cell, then atoms
    # move by Δ; the physical unwrapped trajectory accumulates exactly those displacements.
    rng = np.random.default_rng(5)
    t, n = 300, 6
    base = np.array([[5.0, 0.0, 0.0], [0.8, 5.2, 0.0], [0.3, 0.4, 5.6]])
    cells = base * (1 + 0.03 * np.sin(np.arange(t) / 7.0))[:, None, None] + rng.normal(0, 0.01, (t, 3, 3))
    w = np.empty((t, n, 3))
    u = np.empty((t, n, 3))
    w[0] = u[0] = rng.random((n, 3)) @ cells[0]
    for s in range(1, t):
        scaled = w[s - 1] @ np.linalg.inv(cells[s - 1]) @ cells[s]  # affine rescaling by the barostat
        moved = scaled + rng.normal(0, 0.3, (n, 3))
        u[s] = u[s - 1] + (moved - w[s - 1])
        w[s] = _wrap(moved[None], cells[s][None])[0]
    assert np.abs(w - u).max() > 2 * 5.0
    np.testing.assert_allclose(unwrap(w, cells), u, atol=1e-9)


def test_unwrap_free_boundary_and_mixed_pbc():
    rng = np.random.default_rng(6)
    x = np.cumsum(rng.normal(0, 0.5, (50, 4, 3)), axis=0) + 20.0
    np.testing.assert_array_equal(unwrap(x), x)  # no cell: nothing to undo
    np.testing.assert_array_equal(unwrap(x, np.zeros((3, 3)), pbc=False), x)
    # slab: periodic in x and y, z free with a zero third lattice vector (as ASE writes it)
    cell = np.diag([4.0, 4.5, 0.0])
    w = x.copy()
    w[..., :2] = np.mod(x[..., :2], [4.0, 4.5])
    out = unwrap(w, cell, pbc=[True, True, False])
    np.testing.assert_allclose(out - out[0], x - x[0], atol=1e-9)


# ============================================================================== MSD
def _naive_msd(x, stride=1):
    """⟨|x(t0+m) − x(t0)|²⟩ over atoms and origins t0 = 0, stride, ...: explicit O(T²) loops."""
    t = x.shape[0]
    out = np.zeros(t)
    for m in range(t):
        acc, count = 0.0, 0
        for t0 in range(0, t - m, stride):
            acc += np.sum((x[t0 + m] - x[t0]) ** 2) / x.shape[1]
            count += 1
        out[m] = acc / count
    return out


def test_msd_matches_naive_loop():
    rng = np.random.default_rng(7)
    x = np.cumsum(rng.normal(0, 0.3, (61, 7, 3)), axis=0) + 50.0  # far from the origin: tests FFT precision
    ref = _naive_msd(x)
    np.testing.assert_allclose(msd(x, remove_com=False), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(msd(x, origins=1, remove_com=False), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(msd(x, origins=4, remove_com=False), _naive_msd(x, stride=4), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(msd(x, max_lag=20, remove_com=False), ref[:21], rtol=1e-10, atol=1e-12)
    sel = np.array([True, False, True, True, False, False, True])
    np.testing.assert_allclose(msd(x, select=sel, remove_com=False), _naive_msd(x[:, sel]), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(msd(x, select=np.flatnonzero(sel), remove_com=False), _naive_msd(x[:, sel]), rtol=1e-10, atol=1e-12)


def test_msd_removes_centre_of_mass_drift():
    rng = np.random.default_rng(8)
    x = np.cumsum(rng.normal(0, 0.3, (80, 10, 3)), axis=0)
    masses = rng.uniform(1.0, 60.0, 10)
    com = np.einsum("tnk,n->tk", x, masses) / masses.sum()
    still = x - com[:, None, :]  # centre of mass at rest
    drift = np.arange(80)[:, None, None] * np.array([0.7, -0.2, 0.4])  # uniform flow of the whole system
    np.testing.assert_allclose(msd(still + drift, masses=masses), msd(still, remove_com=False), rtol=1e-9, atol=1e-12)
    assert msd(still + drift, remove_com=False)[-1] > 10 * msd(still, remove_com=False)[-1]


def test_random_walk_gives_its_diffusion_coefficient():
    rng = np.random.default_rng(9)
    t, n, d_true, dt = 2000, 100, 0.5, 0.01  # Å²/ps, ps
    x = np.cumsum(rng.normal(0, np.sqrt(2 * d_true * dt), (t, n, 3)), axis=0)  # ⟨Δx²⟩ = 2 D dt per component
    times = np.arange(t) * dt
    m = msd(x, remove_com=False)
    res = diffusion_coefficient(times, m, positions=x, remove_com=False, n_blocks=10)
    assert 0 < res.D_err_A2_per_ps < 0.05 * d_true
    # (D − D_true)/error follows Student's t with n_blocks − 1 = 9 dof: |t| > 4 has p ≈ 0.3 %
    assert abs(res.D_A2_per_ps - d_true) < 4 * res.D_err_A2_per_ps
    assert res.D_cm2_per_s == pytest.approx(res.D_A2_per_ps * 1e-4)
    assert res.D_err_cm2_per_s == pytest.approx(res.D_err_A2_per_ps * 1e-4)
    assert res.D_blocks_A2_per_ps.shape == (10,)
    assert res.D_A2_per_ps == pytest.approx(res.D_blocks_A2_per_ps.mean())
    assert res.slope_A2_per_ps / 6 == pytest.approx(res.D_A2_per_ps, abs=2 * res.D_err_A2_per_ps)  # whole trajectory, same window
    assert res.D_err_A2_per_ps == pytest.approx(np.std(res.D_blocks_A2_per_ps) / 3.0)
    block_lag = times[t // 10 - 1]  # the fit window is the fraction (0.1, 0.5) of a block's lags
    assert (res.fit_start_ps, res.fit_end_ps) == pytest.approx((0.1 * block_lag, 0.5 * block_lag), abs=dt)
    whole = diffusion_coefficient(times, m)  # no blocks: fraction of the whole lag range, no error bar
    assert (whole.fit_start_ps, whole.fit_end_ps) == pytest.approx((0.1 * times[-1], 0.5 * times[-1]), abs=dt)
    assert whole.D_A2_per_ps == whole.slope_A2_per_ps / 6 and np.isnan(whole.D_err_A2_per_ps)
    assert whole.D_A2_per_ps == pytest.approx(d_true, rel=0.15)
    # 2-D analysis of the same walk: D = slope / 4 of the x–y MSD
    xy = x.copy()
    xy[..., 2] = 0.0
    res2 = diffusion_coefficient(times, msd(xy, remove_com=False), dim=2)
    assert res2.D_A2_per_ps == pytest.approx(d_true, rel=0.15)
    assert np.isnan(res2.D_err_A2_per_ps)  # no positions: no blocks, no error bar


def test_diffusion_fit_needs_enough_lags():
    times = np.arange(5) * 0.1
    with pytest.raises(ValueError, match="fit range"):
        diffusion_coefficient(times, times * 6.0, fit_range=(0.1, 0.2))
    with pytest.raises(ValueError, match="fewer blocks"):
        x = np.zeros((20, 2, 3))
        diffusion_coefficient(np.arange(20) * 0.1, np.arange(20) * 0.6, positions=x, n_blocks=10)


# ============================================================================= VACF
def test_vacf_matches_naive_loop():
    rng = np.random.default_rng(10)
    v = rng.normal(0, 1, (40, 5, 3))
    masses = rng.uniform(1, 50, 5)
    ref = np.array([np.mean([np.sum(masses[:, None] * v[t0] * v[t0 + m]) / 5 for t0 in range(40 - m)]) for m in range(40)])
    np.testing.assert_allclose(vacf(v, normalize=False, masses=masses), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(vacf(v, masses=masses, max_lag=9), ref[:10] / ref[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("nu_thz", [3.0, 7.5])
def test_spectrum_of_harmonic_oscillators_peaks_at_their_frequency(nu_thz):
    rng = np.random.default_rng(11)
    t, n, dt_fs = 2000, 64, 2.0
    time_ps = np.arange(t) * dt_fs * 1e-3
    omega = 2 * np.pi * nu_thz  # rad/ps
    amp = rng.uniform(0.05, 0.2, (n, 3))  # Å
    phase = rng.uniform(0, 2 * np.pi, (n, 3))
    v = -amp * omega * np.sin(omega * time_ps[:, None, None] + phase)  # [T, N, 3] Å/ps, independent 3-D oscillators
    c = vacf(v, max_lag=1000)
    spec = vibrational_spectrum(c, dt_fs)
    bin_thz = spec.frequency_THz[1] - spec.frequency_THz[0]
    assert bin_thz < 0.1
    assert abs(spectrum_peak(spec) - nu_thz) <= bin_thz
    i = int(np.argmax(spec.intensity))
    assert spec.wavenumber_cm1[i] == pytest.approx(spec.frequency_THz[i] * 33.35641, rel=1e-6)
    assert spec.frequency_THz[-1] == pytest.approx(1 / (2 * dt_fs * 1e-3))  # Nyquist


def test_green_kubo_agrees_with_msd_slope_on_langevin_trajectory():
    # Ornstein–Uhlenbeck velocities (Langevin dynamics of free particles): C(t) = 3σ² e^{−t/τ}
    rng = np.random.default_rng(12)
    t, n, dt, tau, sigma = 4000, 200, 0.01, 0.1, 1.0  # ps, ps, Å/ps
    a = np.exp(-dt / tau)
    v = np.empty((t, n, 3))
    v[0] = rng.normal(0, sigma, (n, 3))
    kicks = rng.normal(0, sigma * np.sqrt(1 - a * a), (t, n, 3))
    for s in range(1, t):
        v[s] = a * v[s - 1] + kicks[s]
    x = np.concatenate([np.zeros((1, n, 3)), np.cumsum(v[:-1] * dt, axis=0)])
    d_exact = sigma**2 * dt * (1 + a) / (2 * (1 - a))  # discrete-time D (→ σ²τ as dt → 0)
    d_gk = green_kubo_diffusion(vacf(v, max_lag=200, normalize=False), dt)
    times = np.arange(t) * dt
    einstein = diffusion_coefficient(times, msd(x, remove_com=False), positions=x, remove_com=False, fit_range=(0.05, 0.5))
    assert d_gk == pytest.approx(d_exact, rel=0.05)
    assert einstein.D_A2_per_ps == pytest.approx(d_exact, abs=4 * einstein.D_err_A2_per_ps)
    assert d_gk == pytest.approx(einstein.D_A2_per_ps, rel=0.08)
    # the windowless spectrum at ν = 0 is the cosine sum at ν = 0: 2·dim·D
    c = vacf(v, max_lag=200, normalize=False)
    spec = vibrational_spectrum(c, dt * 1e3, window=None)
    assert spec.intensity[0] == pytest.approx(dt * (c[0] + 2 * c[1:].sum()), rel=1e-9)
    assert spec.intensity[0] / 6 == pytest.approx(d_gk, rel=1e-3)


# ============================================================================== CLI
def _write_tiny_md(path, *, periodic=True, n_frames=24):
    """A short Cu/Ni 'trajectory' with time_ps and velocities, written as extxyz."""
    from ase.io import write

    rng = np.random.default_rng(13)
    base = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    base.numbers[::4] = 28
    frames = []
    x = base.positions.copy()
    for k in range(n_frames):
        v = rng.normal(0, 5.0, x.shape)  # Å/ps
        x = x + v * 0.005 + rng.normal(0, 0.02, x.shape)
        a = base.copy()
        a.positions = x
        a.set_velocities(v / (1e3 * __import__("ase").units.fs))  # Å/ps → ASE units
        if periodic:
            a.wrap()
        else:
            a.pbc = False
            a.cell = np.zeros((3, 3))
        a.info["time_ps"] = 0.005 * k
        frames.append(a)
    write(path, frames, format="extxyz")
    return frames


def test_cli_analyze_writes_json_and_plots(tmp_path, capsys):
    from mlpjax.cli import main

    traj = tmp_path / "md.extxyz"
    _write_tiny_md(traj)
    out = tmp_path / "ana"
    assert main(["analyze", str(traj), "--rdf", "--msd", "--vacf", "--r-max", "5.0", "--output", str(out)]) == 0
    nums = json.loads((out / "analysis.json").read_text())
    assert {"rdf", "msd", "vacf", "n_frames", "n_atoms", "species"} <= nums.keys()
    assert nums["n_frames"] == 24 and nums["species"] == ["Ni", "Cu"]
    g = nums["rdf"]
    for key in ("first_peak_A", "first_minimum_A", "coordination_number", "cutoff_first_minimum_A", "cutoff_third_peak_A"):
        assert key in g
    assert 2.3 < g["first_peak_A"] < 2.8 and 2.6 < g["cutoff_first_minimum_A"] < 3.5
    assert set(g["partial"]) == {"Ni-Ni", "Ni-Cu", "Cu-Cu"}
    m = nums["msd"]
    for key in ("D_A2_per_ps", "D_err_A2_per_ps", "D_cm2_per_s", "D_err_cm2_per_s", "dt_ps"):
        assert key in m
    assert m["dt_ps"] == pytest.approx(0.005) and m["D_A2_per_ps"] > 0 and set(m["per_species"]) == {"Ni", "Cu"}
    assert {"spectrum_peak_THz", "spectrum_peak_cm1", "D_green_kubo_A2_per_ps"} <= nums["vacf"].keys()
    for name in ("rdf.png", "msd.png", "vacf.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    curves = np.load(out / "analysis.npz")
    assert curves["msd_A2"].shape == (24,) and curves["rdf_g"].shape == (120,)
    assert "D =" in capsys.readouterr().out


def test_cli_analyze_timestep_flag_and_python_api_agree(tmp_path):
    from ase.io import read

    from mlpjax.cli import main

    traj = tmp_path / "md.extxyz"
    frames = _write_tiny_md(traj)
    for f in frames:
        del f.info["time_ps"]
    api = analyze_trajectory(read(traj, ":"), what=("msd",), dt_ps=0.005)["numbers"]["msd"]
    assert main(["analyze", str(traj), "--msd", "--timestep-fs", "5", "--output", str(tmp_path / "a")]) == 0
    cli = json.loads((tmp_path / "a" / "analysis.json").read_text())["msd"]
    assert cli["D_A2_per_ps"] == pytest.approx(api["D_A2_per_ps"], rel=1e-12)
    assert not (tmp_path / "a" / "rdf.png").exists()


def test_cli_analyze_clear_errors(tmp_path, capsys):
    from mlpjax.cli import main

    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    assert main(["analyze", str(empty), "--output", str(tmp_path / "x")]) == 2
    assert "empty.xyz" in capsys.readouterr().err

    cluster = tmp_path / "cluster.extxyz"
    _write_tiny_md(cluster, periodic=False, n_frames=6)
    assert main(["analyze", str(cluster), "--rdf", "--output", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "cluster.extxyz" in err and "periodic" in err
    # free-boundary frames still give an MSD (no unwrapping needed)
    assert main(["analyze", str(cluster), "--msd", "--output", str(tmp_path / "z")]) == 0


def test_cli_analyze_order_tells_crystal_from_melt(hot_cu_frames, tmp_path, capsys):
    """--order: the three rattled fcc frames are solid, a fourth frame of random positions in the
    same cell is not; the cutoff comes from g(r)'s first minimum; a cluster is refused."""
    import ase.io

    from mlpjax.cli import main

    gas = hot_cu_frames[0].copy()
    gas.positions = np.random.default_rng(5).uniform(0.0, 1.0, gas.positions.shape) @ gas.cell.array
    traj = tmp_path / "melt.extxyz"
    ase.io.write(traj, list(hot_cu_frames) + [gas])
    out = tmp_path / "ana"
    assert main(["analyze", str(traj), "--order", "--output", str(out)]) == 0
    o = json.loads((out / "analysis.json").read_text())["order"]
    assert o["cutoff_source"] == "first minimum of g(r)" and 2.9 < o["cutoff_A"] < 3.4
    assert o["solid_fraction_first"] == 1.0 and o["solid_fraction_last"] < 0.05 and o["solid_fraction_max"] == 1.0
    assert 0.4 < o["q6_mean"] < 0.6
    assert np.load(out / "analysis.npz")["solid_fraction"].shape == (4,)
    assert (out / "order.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "solid-like atoms 100 % in the first frame" in capsys.readouterr().out
    given = analyze_trajectory(list(hot_cu_frames), what=("order",), order_cutoff=3.1)["numbers"]["order"]
    assert given["cutoff_A"] == 3.1 and given["cutoff_source"] == "given" and given["mean_neighbours"] == pytest.approx(12.0, abs=0.1)
    cluster = tmp_path / "cluster.extxyz"
    _write_tiny_md(cluster, periodic=False, n_frames=6)
    assert main(["analyze", str(cluster), "--order", "--output", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "cluster.extxyz" in err and "--order needs periodic frames" in err


def test_cli_analyze_help(capsys):
    from mlpjax.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["analyze", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: mlpjax analyze" in out and "--timestep-fs" in out
