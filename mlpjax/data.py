"""Reference data: configurations with energies, forces and (optionally) stress.

Everything in a :class:`Configuration` is in mlpjax's internal units (eV, Å);
readers convert at the boundary through :mod:`mlpjax.units`.
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
