"""One structure: :class:`Configuration` (positions, numbers, cell, pbc and reference labels in
mlpjax's internal units, eV and Å), :class:`DataError` (bad input naming file, frame and field),
and the checks that one structure is usable (atomic numbers, finite values, cell, no
overlapping atoms; labels present, finite and of the right shape).

Readers (:mod:`mlpjax.data.readers`) convert to internal units at the input boundary through
:mod:`mlpjax.units` and run these checks on every frame.
"""

from __future__ import annotations

import dataclasses

import numpy as np


class DataError(ValueError):
    """Bad input data. The message names the file, the frame and the field."""

    def __init__(self, message: str, *, source: str | None = None, frame: int | None = None, field: str | None = None):
        where = []
        if source is not None:
            where.append(f"file {source}")
        if frame is not None:
            where.append(f"frame {frame}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)
        self.source, self.frame, self.field = source, frame, field


@dataclasses.dataclass
class Configuration:
    """One atomic structure with its reference labels (host-side NumPy, internal units)."""

    positions: np.ndarray  # [n_atoms, 3] Å
    numbers: np.ndarray  # [n_atoms] int, atomic numbers Z
    cell: np.ndarray  # [3, 3] Å, rows are lattice vectors (zeros for a molecule)
    pbc: np.ndarray  # [3] bool
    energy: float | None = None  # eV, total energy
    forces: np.ndarray | None = None  # [n_atoms, 3] eV/Å
    stress: np.ndarray | None = None  # [3, 3] eV/Å^3, ASE sign convention (σ = (1/V) ∂E/∂ε)
    source: str = ""  # file the configuration came from
    frame: int = -1  # index of the frame in that file
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    @property
    def periodic(self) -> bool:
        return bool(np.any(self.pbc))

    def to_atoms(self):
        """The configuration as an :class:`ase.Atoms` with a SinglePointCalculator holding its labels."""
        import ase
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = ase.Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        results = {}
        if self.energy is not None:
            results["energy"] = self.energy
        if self.forces is not None:
            results["forces"] = self.forces
        if self.stress is not None:
            s = self.stress
            results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms

    @classmethod
    def from_atoms(cls, atoms, *, source: str = "", frame: int = -1) -> "Configuration":
        """Structure only (no labels) from an :class:`ase.Atoms`; positions taken as Å."""
        return cls(
            positions=np.asarray(atoms.positions, dtype=np.float64),
            numbers=np.asarray(atoms.numbers, dtype=np.int64),
            cell=np.asarray(atoms.cell.array, dtype=np.float64),
            pbc=np.asarray(atoms.pbc, dtype=bool),
            source=source,
            frame=frame,
        )


# ---------------------------------------------------------------------------
# Checks of one structure
# ---------------------------------------------------------------------------

_MAX_Z = 118


def _next_step_hint(field: str) -> str:
    return {
        "energy": "check energy_key= (the name of the energy in the file's info/calculator results) or drop this frame",
        "forces": "check forces_key= (the per-atom array holding forces), pass require_forces=False for energy-only data, or drop this frame",
    }.get(field, "fix or drop this frame")


def _check_finite(value, *, source, frame, field):
    if value is None:
        return
    a = np.asarray(value, dtype=np.float64)
    bad = ~np.isfinite(a)
    if np.any(bad):
        where = np.argwhere(bad)[0] if a.ndim else ()
        kind = "NaN" if np.any(np.isnan(a)) else "inf"
        raise DataError(
            f"contains {kind} (first non-finite entry at index {tuple(int(i) for i in where)}); fix or drop this frame",
            source=source,
            frame=frame,
            field=field,
        )


def _padded_box(conf: Configuration) -> np.ndarray:
    """A box vesin accepts: zero rows along non-periodic directions are replaced by a long orthogonal vector."""
    cell = np.array(conf.cell, dtype=np.float64)
    pbc = np.asarray(conf.pbc, dtype=bool)
    if not pbc.any():
        return np.zeros((3, 3))
    extent = float(np.ptp(conf.positions, axis=0).max()) if conf.n_atoms else 0.0
    big = 2.0 * extent + 10.0 * float(np.abs(cell).max()) + 10.0
    zero_rows = [i for i in range(3) if not np.any(cell[i])]
    if not zero_rows:
        return cell
    good = [cell[i] for i in range(3) if i not in zero_rows]
    if len(zero_rows) == 2:
        a = good[0] / np.linalg.norm(good[0])
        trial = np.eye(3)[int(np.argmin(np.abs(a)))]
        b = trial - a * (a @ trial)
        b /= np.linalg.norm(b)
        c = np.cross(a, b)
        fill = [b, c]
    elif len(zero_rows) == 1:
        n = np.cross(good[0], good[1])
        fill = [n / np.linalg.norm(n)] if np.linalg.norm(n) > 0 else [np.zeros(3)]
    else:
        fill = [np.eye(3)[i] for i in range(3)]
    for i, v in zip(zero_rows, fill):
        cell[i] = big * v
    return cell


def closest_pair(conf: Configuration, within: float) -> tuple[float, int, int, tuple[int, int, int]] | None:
    """The closest pair of atoms (periodic images included) nearer than ``within`` Å, or None.

    Returns ``(distance Å, i, j, image shift)``; ``i == j`` is an atom and its own image."""
    import vesin

    pbc = np.asarray(conf.pbc, dtype=bool)
    # vesin's cell list has cells of the cutoff's size: at the default 0.1 Å that is ~10^3 cells per Å³
    # (22 ms for a 32-atom Cu cell, 1 ms at 1 Å), so search at ≥ 1 Å and keep the pairs nearer than ``within``
    nl = vesin.NeighborList(cutoff=max(float(within), 1.0), full_list=False)
    i, j, S, d = nl.compute(conf.positions, _padded_box(conf), pbc if pbc.any() else False, "ijSd")
    near = d < within
    i, j, S, d = i[near], j[near], S[near], d[near]
    if not len(d):
        return None
    k = int(np.argmin(d))
    return float(d[k]), int(i[k]), int(j[k]), tuple(int(s) for s in S[k])


def _check_structure(conf: Configuration, *, min_distance: float):
    """Atomic numbers, finite geometry, usable cell, and no two atoms closer than ``min_distance`` Å."""
    src, fr = conf.source, conf.frame
    if conf.n_atoms == 0:
        raise DataError("has no atoms; drop this frame", source=src, frame=fr, field="numbers")
    z = np.asarray(conf.numbers)
    bad = (z < 1) | (z > _MAX_Z)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise DataError(
            f"atom {i} has atomic number {int(z[i])}, outside 1..{_MAX_Z}; fix the species in the file",
            source=src,
            frame=fr,
            field="numbers",
        )
    if conf.positions.shape != (conf.n_atoms, 3):
        raise DataError(f"positions have shape {conf.positions.shape}, expected ({conf.n_atoms}, 3)", source=src, frame=fr, field="positions")
    _check_finite(conf.positions, source=src, frame=fr, field="positions")
    _check_finite(conf.cell, source=src, frame=fr, field="cell")
    pbc = np.asarray(conf.pbc, dtype=bool)
    for i in range(3):
        if pbc[i] and not np.any(conf.cell[i]):
            raise DataError(
                f"periodic along lattice vector {i} but that vector is zero; give the cell or set pbc=False there",
                source=src,
                frame=fr,
                field="cell",
            )
    box = _padded_box(conf)
    if pbc.any() and abs(np.linalg.det(box)) < 1e-12:
        raise DataError("periodic cell has (near) zero volume; fix the cell", source=src, frame=fr, field="cell")
    if min_distance and min_distance > 0 and conf.n_atoms > 0:
        close = closest_pair(conf, min_distance)
        if close is not None:
            dk, ii, jj, shift = close
            img = "" if not any(shift) else f" (periodic image shift {shift})"
            what = f"atom {ii} and its own periodic image" if ii == jj else f"atoms {ii} and {jj}"
            raise DataError(
                f"{what} are {dk:.4g} Å apart{img}, closer than min_distance={min_distance} Å; "
                "check the length units (units=), the cell, or remove the duplicate atom",
                source=src,
                frame=fr,
                field="positions",
            )


def _check_labels(conf: Configuration, *, require_forces: bool):
    src, fr = conf.source, conf.frame
    if conf.energy is None:
        raise DataError("missing energy; " + _next_step_hint("energy"), source=src, frame=fr, field="energy")
    _check_finite(conf.energy, source=src, frame=fr, field="energy")
    if conf.forces is None:
        if require_forces:
            raise DataError("missing forces; " + _next_step_hint("forces"), source=src, frame=fr, field="forces")
    else:
        if conf.forces.shape != (conf.n_atoms, 3):
            raise DataError(
                f"forces have shape {conf.forces.shape}, expected ({conf.n_atoms}, 3); check forces_key= or fix the file",
                source=src,
                frame=fr,
                field="forces",
            )
        _check_finite(conf.forces, source=src, frame=fr, field="forces")
    if conf.stress is not None:
        _check_finite(conf.stress, source=src, frame=fr, field="stress")
