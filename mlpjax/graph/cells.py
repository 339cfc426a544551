"""Periodic-cell geometry for neighbour searches: perpendicular widths, the minimum-image
condition (cutoff + skin ≤ half the smallest width) and the supercell repeats that satisfy it.
Used by MD (mlpjax.md.system, the multi-image path), validation (MD-sized supercells) and the CLI.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["perpendicular_widths", "supercell_repeats", "supercell", "check_cell"]


def perpendicular_widths(cell) -> np.ndarray:
    """Distances between opposite faces of the cell (rows = lattice vectors), Å."""
    cell = np.asarray(cell, float)
    volume = abs(np.linalg.det(cell))
    return np.array([volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)])


def supercell_repeats(cell, interaction_range: float) -> tuple[int, int, int]:
    """Smallest repeats such that every perpendicular width is ≥ 2 × interaction_range."""
    w = perpendicular_widths(cell)
    return tuple(int(max(1, math.ceil(2.0 * interaction_range / wi - 1e-9))) for wi in w)


def supercell(atoms, repeats):
    """``atoms.repeat(repeats)`` (int or 3 ints) for periodic structures; used by the CLI's ``--supercell``."""
    if isinstance(repeats, (int, np.integer)):
        repeats = (int(repeats),) * 3
    repeats = tuple(int(r) for r in repeats)
    if len(repeats) != 3 or min(repeats) < 1:
        raise ValueError(f"supercell repeats must be positive integers, got {repeats}")
    if not np.all(atoms.pbc) and repeats != (1, 1, 1):
        raise ValueError("a supercell needs a fully periodic structure")
    return atoms.repeat(repeats)


def check_cell(cell, cutoff: float, skin: float) -> None:
    """Raise a clear ValueError if cutoff + skin exceeds half the smallest perpendicular width."""
    w = perpendicular_widths(cell)
    rc = cutoff + skin
    if rc > 0.5 * w.min() + 1e-9:
        reps = supercell_repeats(cell, rc)
        raise ValueError(
            f"cutoff + skin = {cutoff:g} + {skin:g} = {rc:g} Å exceeds half the smallest perpendicular "
            f"cell width ({0.5 * w.min():.3f} Å; widths {np.array2string(w, precision=3)} Å): the "
            f"minimum-image convention would silently drop pairs. Use a supercell, e.g. "
            f"--supercell {'x'.join(map(str, reps))} (mlpjax.md.supercell(atoms, {reps}))."
        )
