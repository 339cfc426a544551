"""Unit systems and THE physical constants of mlpjax (CODATA 2018).

mlpjax uses ONE unit system internally: energy eV, length Å, mass amu, time
Å·sqrt(amu/eV) (ASE's time unit, ~10.18 fs), temperature K. Everything read from
a file is converted at the input boundary by :func:`resolve_units`; nothing
inside the package converts units again.

**One set of constants.** Every constant mlpjax uses — unit conversion of data files, kT
and the kinetic temperature in MD, the timestep in ASE time, pressure and moduli in GPa —
comes from this module, in the CODATA 2018 edition. They are written out (not imported
from ASE, whose ``ase.units`` default is still CODATA 2014) so that results do not depend
on the installed ASE version's choice; they equal ``ase.units.create_units("2018")``
(tests/test_units.py). The two editions differ by < 4e-7 relatively (k_B), far below any
figure mlpjax reports.
"""

from __future__ import annotations

import dataclasses

from mlpjax.config import ConfigError

# CODATA 2018 recommended values.
HARTREE_EV: float = 27.211386245988  # eV per Hartree
BOHR_ANGSTROM: float = 0.529177210903  # Å per Bohr
AVOGADRO: float = 6.02214076e23  # 1/mol (exact)
ELEMENTARY_CHARGE: float = 1.602176634e-19  # C (exact), i.e. J per eV
KJ_PER_MOL_EV: float = 1.0e3 / (AVOGADRO * ELEMENTARY_CHARGE)  # eV per (kJ/mol) = 0.0103642696...
KCAL_PER_MOL_EV: float = 4.184 * KJ_PER_MOL_EV  # eV per (kcal/mol), thermochemical calorie
KBAR_EV_PER_A3: float = 1.0e8 / (ELEMENTARY_CHARGE * 1.0e30)  # eV/Å^3 per kbar = 6.2415e-4
GPA_EV_PER_A3: float = 1.0e9 / (ELEMENTARY_CHARGE * 1.0e30)  # eV/Å^3 per GPa
BOLTZMANN_EV_PER_K: float = 8.617333262e-5  # eV/K
AMU_KG: float = 1.66053906660e-27  # kg per atomic mass unit
SECOND: float = 1.0e10 * (ELEMENTARY_CHARGE / AMU_KG) ** 0.5  # ASE time units (Å·sqrt(amu/eV)) per second
FS: float = 1.0e-15 * SECOND  # ASE time units per femtosecond (0.0982269...)
PS: float = 1.0e-12 * SECOND  # ASE time units per picosecond
GPA_PER_EV_A3: float = 1.0 / GPA_EV_PER_A3  # GPa per eV/Å^3 (160.2176634)


def kT(temperature_K):
    """k_B T in eV."""
    return BOLTZMANN_EV_PER_K * temperature_K

ENERGY_UNITS: dict[str, float] = {
    "eV": 1.0,
    "meV": 1.0e-3,
    "Hartree": HARTREE_EV,
    "kcal/mol": KCAL_PER_MOL_EV,
    "kJ/mol": KJ_PER_MOL_EV,
}
LENGTH_UNITS: dict[str, float] = {"Angstrom": 1.0, "Bohr": BOHR_ANGSTROM, "nm": 10.0}


@dataclasses.dataclass(frozen=True)
class Units:
    """The units a data file is written in.

    Forces are read in ``energy/length`` and stress in ``energy/length**3``;
    positions and cells in ``length``.
    """

    energy: str = "eV"
    length: str = "Angstrom"

    def __post_init__(self):
        if self.energy not in ENERGY_UNITS:
            raise ConfigError(f"unknown energy unit {self.energy!r}; known: {', '.join(ENERGY_UNITS)}", option="units")
        if self.length not in LENGTH_UNITS:
            raise ConfigError(f"unknown length unit {self.length!r}; known: {', '.join(LENGTH_UNITS)}", option="units")

    @property
    def energy_to_ev(self) -> float:
        return ENERGY_UNITS[self.energy]

    @property
    def length_to_angstrom(self) -> float:
        return LENGTH_UNITS[self.length]

    @property
    def force_to_ev_per_angstrom(self) -> float:
        return self.energy_to_ev / self.length_to_angstrom

    @property
    def stress_to_ev_per_angstrom3(self) -> float:
        return self.energy_to_ev / self.length_to_angstrom**3

    def __str__(self) -> str:  # e.g. "kcal/mol/Angstrom"
        return f"{self.energy}/{self.length}"


# Named unit systems accepted by ``units=`` everywhere.
_NAMED: dict[str, Units] = {
    "eV": Units("eV", "Angstrom"),
    "eV/Angstrom": Units("eV", "Angstrom"),
    "eV/A": Units("eV", "Angstrom"),
    "eV/Å": Units("eV", "Angstrom"),
    "Hartree": Units("Hartree", "Bohr"),
    "Hartree/Bohr": Units("Hartree", "Bohr"),
    "atomic": Units("Hartree", "Bohr"),
    "Hartree/Angstrom": Units("Hartree", "Angstrom"),
    "Hartree/A": Units("Hartree", "Angstrom"),
    "kcal/mol": Units("kcal/mol", "Angstrom"),
    "kcal/mol/Angstrom": Units("kcal/mol", "Angstrom"),
    "kcal/mol/A": Units("kcal/mol", "Angstrom"),
    "kcal/mol/Å": Units("kcal/mol", "Angstrom"),
    "kJ/mol": Units("kJ/mol", "Angstrom"),
    "kJ/mol/Angstrom": Units("kJ/mol", "Angstrom"),
    "kJ/mol/A": Units("kJ/mol", "Angstrom"),
    "kJ/mol/Å": Units("kJ/mol", "Angstrom"),
}


def resolve_units(units: "str | Units") -> Units:
    """Turn a name such as ``"Hartree"`` or ``"kcal/mol/Angstrom"`` into :class:`Units`.

    ``"Hartree"`` means Hartree energies with Bohr positions (forces Hartree/Bohr);
    use ``"Hartree/Angstrom"`` for Hartree energies with Ångström positions. An unknown name
    raises :class:`mlpjax.config.ConfigError` (a ValueError) listing the known names.
    """
    if isinstance(units, Units):
        return units
    try:
        return _NAMED[units]
    except (KeyError, TypeError):  # TypeError: an unhashable value
        from mlpjax.config import suggest

        raise ConfigError(f"unknown units {units!r}{suggest(units, _NAMED)}; use one of {', '.join(_NAMED)} "
                          "(or mlpjax.units.Units(energy=..., length=...) in Python)", option="units") from None
