"""Differentiable observables of simulated frames: pure JAX functions of positions (and, for
energies and pressures, of the engine's records).

Every function takes frames in the **simulation coordinates** of an :class:`mlpjax.md.MDSystem`
(fractional for periodic cells, Cartesian Å otherwise), as the MD engine records them:
``positions`` ``[T, N, 3]`` (T frames) or ``[T, R, N, 3]`` (R replicas; averaged over both).
Frames from elsewhere (an ASE trajectory of the same cell) convert with ``system.coordinates(atoms)``.

* :func:`rdf` — radial distribution function g(r) [B] on bin centres r [B] Å with a Gaussian
  kernel of width ``width`` Å instead of hard bins, so g is a smooth (differentiable) function of
  the positions: g(r) = V / (N (N − 1)) · Σ_{i≠j} K_σ(r − r_ij) / (4π r²), K_σ a normalised
  Gaussian (normalised with the N − 1 other atoms, so an ideal gas has g = 1 and the coordination
  number is ∫ 4π r² (N − 1)/V g dr). Minimum-image distances (r_max must be below half the cell's shortest perpendicular
  width; checked). All pairs per frame (O(N²), fine for the few hundred atoms diffsim runs) and
  one frame at a time (``lax.map`` + ``jax.checkpoint``), so memory is O(N² · B) not O(T · N² · B).
* :func:`mean_potential_energy` — ⟨E_pot⟩ / N [eV/atom] from records.
* :func:`mean_pressure` — ⟨P⟩ [GPa] from records (virial + kinetic; periodic cells only).
* :func:`virial_pressure` — one frame's configurational pressure −∂U/∂V [GPa] under given
  parameters (the per-frame observable for reweighting a pressure: in NVT the kinetic part
  N kT / V is a constant and needs no reweighting).
* :func:`msd` — mean squared displacement [T] Å² from the first frame, with unwrapped motion
  (frame-to-frame minimum-image displacements summed; frames must be recorded often enough that
  no atom moves half a cell between two).
* :func:`rdf_l2` — the L2 distance ( ∫ (g − g_ref)² dr / r_max )^½ between two RDFs on one grid
  (dimensionless; the issue's "L2 error of the RDF").
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mlpjax import units as _units

__all__ = ["rdf", "rdf_bins", "rdf_l2", "mean_potential_energy", "mean_pressure", "virial_pressure", "msd",
           "frames_of"]


def frames_of(positions) -> jax.Array:
    """``[T, N, 3]`` or ``[T, R, N, 3]`` → ``[T·R, N, 3]`` (replicas are more frames)."""
    positions = jnp.asarray(positions)
    if positions.ndim == 4:
        return positions.reshape((-1,) + positions.shape[2:])
    if positions.ndim != 3:
        raise ValueError(f"positions must be [T, N, 3] or [T, R, N, 3], got shape {positions.shape}")
    return positions


def rdf_bins(r_max: float, n_bins: int) -> np.ndarray:
    """Bin centres [n_bins] Å of :func:`rdf` on (0, r_max]."""
    dr = r_max / n_bins
    return (np.arange(n_bins) + 0.5) * dr


def _check_range(system, r_max: float) -> None:
    if system.periodic:
        from mlpjax.graph.cells import perpendicular_widths

        half = 0.5 * float(np.min(perpendicular_widths(system.cell)))
        if r_max > half + 1e-9:
            raise ValueError(f"rdf r_max {r_max:g} Å exceeds half the cell's shortest perpendicular width ({half:.3g} Å): "
                             "minimum-image distances beyond it are wrong; use a bigger cell or a smaller r_max")


def rdf(system, positions, *, r_max: float, n_bins: int = 100, width: float | None = None, box=None):
    """(r [n_bins] Å, g(r) [n_bins]) of the frames ``positions`` (see the module docstring).

    Args:
      system: the :class:`mlpjax.md.MDSystem` the frames belong to (space, cell, atom count).
      positions: ``[T, N, 3]`` or ``[T, R, N, 3]`` simulation coordinates.
      r_max: Å, the largest distance (≤ half the shortest cell width for periodic cells).
      n_bins: bins on (0, r_max].
      width: Å, the Gaussian kernel's σ (default: one bin width).
      box: a fixed box other than the system's (NPT frames are not supported here).
    """
    _check_range(system, r_max)
    frames = frames_of(positions)
    n = frames.shape[1]
    dtype = frames.dtype
    r = jnp.asarray(rdf_bins(r_max, n_bins), dtype)
    sigma = float(width if width is not None else r_max / n_bins)
    if system.periodic:
        volume = float(abs(np.linalg.det(system.cell)))
    else:
        raise ValueError("rdf needs a periodic cell (a density); for clusters compare pair-distance histograms instead")
    kw = {} if box is None else {"box": box}
    disp = functools.partial(system.displacement_fn, **kw)
    iu, ju = np.triu_indices(n, k=1)
    iu, ju = jnp.asarray(iu), jnp.asarray(ju)
    norm = 1.0 / (np.sqrt(2 * np.pi) * sigma)

    @jax.checkpoint
    def one(R):
        d = jax.vmap(disp)(R[iu], R[ju])  # [P, 3] Å
        rij = jnp.sqrt(jnp.sum(d * d, axis=-1))  # [P] Å (distinct atoms never coincide)
        k = norm * jnp.exp(-0.5 * ((r[None, :] - rij[:, None]) / sigma) ** 2)  # [P, B] 1/Å
        return 2.0 * jnp.sum(k, axis=0)  # both orders i≠j

    density = jnp.mean(jax.lax.map(one, frames), axis=0)  # [B] pairs per Å
    g = density * volume / (n * (n - 1) * 4.0 * jnp.pi * r**2)
    return r, g


def rdf_l2(g, g_ref, r_max: float):
    """( ∫_0^{r_max} (g − g_ref)² dr / r_max )^½ on a uniform grid (dimensionless)."""
    g, g_ref = jnp.asarray(g), jnp.asarray(g_ref)
    return jnp.sqrt(jnp.mean((g - g_ref) ** 2))


def mean_potential_energy(records, n_atoms: int):
    """⟨E_pot⟩ / N [eV/atom] over every record (and replica)."""
    return jnp.mean(records["epot"]) / n_atoms


def mean_pressure(records):
    """⟨P⟩ [GPa] over every record (and replica); periodic cells (records carry ``pressure``)."""
    if "pressure" not in records:
        raise ValueError("the records carry no pressure: pressure needs a periodic cell")
    return jnp.mean(records["pressure"]) / _units.GPA_EV_PER_A3


def virial_pressure(system, variables, R, neighbor):
    """[] GPa, −∂U/∂V of one frame ``R`` [N, 3] (simulation coordinates) with ``variables``: the
    pressure without its kinetic term, from the energy's derivative with respect to a uniform
    strain of the cell (jax_md.quantity.pressure with zero kinetic energy, as the MD engine's
    records compute the full pressure). Differentiable in ``variables``; periodic cells only.
    Use it as ``per_frame`` of :func:`mlpjax.diffsim.reweighted_average` with ``with_params=True``."""
    from jax_md import quantity

    if not system.periodic:
        raise ValueError("a pressure needs a periodic cell")
    energy = functools.partial(system.energy, variables)
    return quantity.pressure(energy, R, system.box, 0.0, neighbor=neighbor) / _units.GPA_EV_PER_A3


def msd(system, positions):
    """[T] Å², the mean squared displacement of frame t from frame 0 (unwrapped; replicas averaged).

    ``positions`` ``[T, N, 3]`` or ``[T, R, N, 3]`` consecutive frames of one run each."""
    p = jnp.asarray(positions)
    if p.ndim == 3:
        p = p[:, None]
    disp = jax.vmap(jax.vmap(jax.vmap(system.displacement_fn)))  # [T-1, R, N] of (a, b) -> a − b
    steps = disp(p[1:], p[:-1])  # [T-1, R, N, 3] Å
    unwrapped = jnp.concatenate([jnp.zeros_like(steps[:1]), jnp.cumsum(steps, axis=0)], axis=0)
    return jnp.mean(jnp.sum(unwrapped**2, axis=-1), axis=(1, 2))
