"""Operations on a whole data set (internal units): the species present, the reproducible
train/valid/test split, per-species reference energies E0_Z fitted by least squares, and the
statistics (per-atom energy mean/std after E0, force RMS) that scale and shift a model.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mlpjax.data.configuration import DataError

def species_in(configs) -> tuple[int, ...]:
    """Sorted unique atomic numbers Z present in ``configs``."""
    zs = set()
    for c in configs:
        zs.update(int(z) for z in np.unique(c.numbers))
    return tuple(sorted(zs))


def split(n: int, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> tuple[np.ndarray, ...]:
    """Reproducible random split of ``range(n)`` into ``len(fractions)`` parts.

    A permutation from ``np.random.default_rng(seed)`` is cut into consecutive
    pieces of sizes ``round(n * fraction)`` (largest-remainder rounding, so the
    sizes sum to ``n``). Every index lands in exactly one part. Each part with a
    non-zero fraction gets at least one index when ``n`` is at least the number of
    such parts (taken from the largest part). Returns sorted int64 index arrays.

    Raises:
      ValueError: negative fractions, or fractions not summing to 1 (within 1e-6).
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or fr.size == 0:
        raise ValueError(f"fractions must be a non-empty sequence, got {fractions!r}")
    if np.any(fr < 0) or not np.all(np.isfinite(fr)):
        raise ValueError(f"fractions must be finite and non-negative, got {fractions!r}")
    if abs(fr.sum() - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions!r} (sum {fr.sum():.6g})")
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    exact = fr * n
    sizes = np.floor(exact).astype(np.int64)
    rest = n - int(sizes.sum())
    if rest > 0:
        order = np.argsort(-(exact - sizes), kind="stable")
        sizes[order[:rest]] += 1
    nonzero = np.flatnonzero(fr > 0)
    if n >= len(nonzero):
        for k in nonzero:
            if sizes[k] == 0:
                donor = int(np.argmax(sizes))
                sizes[donor] -= 1
                sizes[k] += 1
    perm = np.random.default_rng(seed).permutation(n)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return tuple(np.sort(perm[bounds[i] : bounds[i + 1]]).astype(np.int64) for i in range(len(fr)))


def fit_reference_energies(configs, species=None, *, ridge: float = 1e-8) -> dict[int, float]:
    """Per-species reference energies E0_Z [eV] from a least-squares fit E ≈ Σ_Z n_Z · E0_Z.

    Solves ``min ||A x - E||² + λ ||x||²`` with ``A[c, s]`` the number of atoms of
    species ``species[s]`` in configuration ``c``, ``E`` the total energies [eV],
    and ``λ = ridge`` [atoms²], by ``lstsq`` on the augmented system ``[A; √λ I]``.
    The default λ is far below the squared atom counts, so a well-posed fit is
    unbiased to ~1e-8 relative; for ridge=0 ``lstsq`` returns the minimum-norm solution.

    Rank deficiency: when all configurations share one composition (a single-element
    crystal, a single molecule's MD trajectory) the E0_Z are not separately
    determined. The (ridge / minimum-norm) solution then spreads the mean energy over
    the species in proportion to their counts, so Σ_Z n_Z E0_Z equals the mean
    energy; for one element E0 = mean energy per atom. A species listed in
    ``species`` but absent from the data gets 0.

    Args:
      configs: configurations with energies.
      species: atomic numbers to fit (default: sorted unique Z in ``configs``).
      ridge: Tikhonov strength λ [atoms²] (>= 0).

    Returns:
      ``{Z: E0_Z}`` in eV.
    """
    configs = list(configs)
    if not configs:
        raise DataError("no configurations to fit reference energies to")
    species = tuple(int(z) for z in (species_in(configs) if species is None else species))
    col = {z: k for k, z in enumerate(species)}
    A = np.zeros((len(configs), len(species)))
    y = np.zeros(len(configs))
    for c_i, c in enumerate(configs):
        if c.energy is None:
            raise DataError("missing energy, needed to fit reference energies", source=c.source or None, frame=c.frame, field="energy")
        zs, counts = np.unique(c.numbers, return_counts=True)
        for z, cnt in zip(zs, counts):
            if int(z) not in col:
                raise DataError(
                    f"species Z={int(z)} is not in species={species}; add it to species",
                    source=c.source or None,
                    frame=c.frame,
                    field="numbers",
                )
            A[c_i, col[int(z)]] = cnt
        y[c_i] = c.energy
    if not ridge >= 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    lam = float(ridge)
    if lam > 0:
        A_aug = np.vstack([A, np.sqrt(lam) * np.eye(len(species))])
        y_aug = np.concatenate([y, np.zeros(len(species))])
    else:
        A_aug, y_aug = A, y
    x = np.linalg.lstsq(A_aug, y_aug, rcond=None)[0]
    return {z: float(x[k]) for z, k in col.items()}


@dataclasses.dataclass(frozen=True)
class DatasetStatistics:
    """Summary of a dataset, used to scale and shift a model's outputs."""

    energy_per_atom_mean: float  # eV/atom, mean over configurations of (E - Σ_Z n_Z E0_Z) / n_atoms
    energy_per_atom_std: float  # eV/atom, population std (ddof=0) of the same quantity
    force_rms: float  # eV/Å, sqrt(mean of squared force components over all atoms with forces); nan if no forces
    n_configurations: int
    n_atoms_total: int
    species: tuple[int, ...]  # sorted unique Z in the data


def statistics(configs, reference_energies: dict[int, float]) -> DatasetStatistics:
    """Dataset statistics with the reference energies ``{Z: E0_Z}`` [eV] subtracted.

    ``energy_per_atom_*`` come from configurations with an energy; ``force_rms``
    from those with forces (nan when none has forces).
    """
    configs = list(configs)
    if not configs:
        raise DataError("no configurations to compute statistics of")
    e_pa = []
    f_sq_sum, f_count = 0.0, 0
    for c in configs:
        if c.energy is not None:
            e0 = 0.0
            for z in c.numbers:
                try:
                    e0 += reference_energies[int(z)]
                except KeyError:
                    raise DataError(
                        f"no reference energy for Z={int(z)}; refit reference energies including it",
                        source=c.source or None,
                        frame=c.frame,
                        field="numbers",
                    ) from None
            e_pa.append((c.energy - e0) / c.n_atoms)
        if c.forces is not None:
            f = np.asarray(c.forces, dtype=np.float64)
            f_sq_sum += float(np.sum(f * f))
            f_count += f.size
    e_pa = np.asarray(e_pa)
    return DatasetStatistics(
        energy_per_atom_mean=float(e_pa.mean()) if e_pa.size else float("nan"),
        energy_per_atom_std=float(e_pa.std()) if e_pa.size else float("nan"),
        force_rms=float(np.sqrt(f_sq_sum / f_count)) if f_count else float("nan"),
        n_configurations=len(configs),
        n_atoms_total=int(sum(c.n_atoms for c in configs)),
        species=species_in(configs),
    )
