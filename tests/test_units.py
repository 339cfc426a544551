"""Units: CODATA 2018 constants, named unit systems, conversion factors."""

from __future__ import annotations

import ase.units
import pytest

from mlpjax import units as U

CODATA2018 = ase.units.create_units("2018")


def test_codata_2018_exact_and_recommended_values():
    # Values as published in CODATA 2018 (exact SI-defining constants and recommended values).
    assert U.HARTREE_EV == 27.211386245988
    assert U.BOHR_ANGSTROM == 0.529177210903
    assert U.AVOGADRO == 6.02214076e23
    assert U.ELEMENTARY_CHARGE == 1.602176634e-19
    assert U.BOLTZMANN_EV_PER_K == 8.617333262e-5


def test_derived_constants_match_ase_codata_2018():
    # ASE derives Hartree and Bohr from other constants: agreement to ~1e-11 relative.
    assert U.HARTREE_EV == pytest.approx(CODATA2018["Hartree"], rel=1e-10)
    assert U.BOHR_ANGSTROM == pytest.approx(CODATA2018["Bohr"], rel=1e-10)
    assert U.KJ_PER_MOL_EV == pytest.approx(CODATA2018["kJ"] / CODATA2018["mol"], rel=1e-13)
    assert U.KCAL_PER_MOL_EV == pytest.approx(CODATA2018["kcal"] / CODATA2018["mol"], rel=1e-13)
    assert U.GPA_EV_PER_A3 == pytest.approx(CODATA2018["GPa"], rel=1e-13)
    assert U.KBAR_EV_PER_A3 == pytest.approx(CODATA2018["GPa"] / 10.0, rel=1e-13)
    assert U.BOLTZMANN_EV_PER_K == pytest.approx(CODATA2018["kB"], rel=1e-9)


def test_derived_constant_values():
    assert U.KJ_PER_MOL_EV == pytest.approx(0.010364269656262174, rel=1e-14)
    assert U.KCAL_PER_MOL_EV == pytest.approx(0.043364104241800934, rel=1e-14)
    assert U.KCAL_PER_MOL_EV == pytest.approx(4.184 * U.KJ_PER_MOL_EV, rel=1e-15)  # thermochemical calorie
    assert U.GPA_EV_PER_A3 == pytest.approx(1 / 160.2176634, rel=1e-12)  # 1 eV/Å^3 = 160.2176634 GPa (exact e)
    assert U.KBAR_EV_PER_A3 == pytest.approx(U.GPA_EV_PER_A3 / 10, rel=1e-15)


@pytest.mark.parametrize(
    "name, energy, length",
    [
        ("eV", "eV", "Angstrom"),
        ("eV/Angstrom", "eV", "Angstrom"),
        ("eV/A", "eV", "Angstrom"),
        ("eV/Å", "eV", "Angstrom"),
        ("Hartree", "Hartree", "Bohr"),
        ("Hartree/Bohr", "Hartree", "Bohr"),
        ("atomic", "Hartree", "Bohr"),
        ("Hartree/Angstrom", "Hartree", "Angstrom"),
        ("Hartree/A", "Hartree", "Angstrom"),
        ("kcal/mol", "kcal/mol", "Angstrom"),
        ("kcal/mol/Angstrom", "kcal/mol", "Angstrom"),
        ("kcal/mol/A", "kcal/mol", "Angstrom"),
        ("kcal/mol/Å", "kcal/mol", "Angstrom"),
        ("kJ/mol", "kJ/mol", "Angstrom"),
        ("kJ/mol/Angstrom", "kJ/mol", "Angstrom"),
        ("kJ/mol/A", "kJ/mol", "Angstrom"),
        ("kJ/mol/Å", "kJ/mol", "Angstrom"),
    ],
)
def test_resolve_units_names(name, energy, length):
    u = U.resolve_units(name)
    assert u == U.Units(energy, length)
    assert str(u) == f"{energy}/{length}"


def test_resolve_units_passthrough_and_errors():
    u = U.Units("meV", "nm")
    assert U.resolve_units(u) is u
    with pytest.raises(ValueError, match="unknown units 'Rydberg'"):
        U.resolve_units("Rydberg")
    with pytest.raises(ValueError, match="unknown energy unit 'Ry'"):
        U.Units("Ry", "Angstrom")
    with pytest.raises(ValueError, match="unknown length unit 'pm'"):
        U.Units("eV", "pm")


def test_units_conversions():
    hb = U.resolve_units("Hartree")
    assert hb.energy_to_ev == U.HARTREE_EV
    assert hb.length_to_angstrom == U.BOHR_ANGSTROM
    assert hb.force_to_ev_per_angstrom == pytest.approx(51.422067476325886, rel=1e-12)  # Hartree/Bohr in eV/Å
    assert hb.stress_to_ev_per_angstrom3 == pytest.approx(U.HARTREE_EV / U.BOHR_ANGSTROM**3, rel=1e-15)
    assert hb.stress_to_ev_per_angstrom3 == pytest.approx(183.63153645, rel=1e-9)  # Hartree/Bohr^3 in eV/Å^3

    kcal = U.resolve_units("kcal/mol")
    assert kcal.energy_to_ev == U.KCAL_PER_MOL_EV
    assert kcal.force_to_ev_per_angstrom == U.KCAL_PER_MOL_EV
    assert kcal.stress_to_ev_per_angstrom3 == U.KCAL_PER_MOL_EV

    ev = U.resolve_units("eV")
    assert (ev.energy_to_ev, ev.length_to_angstrom, ev.force_to_ev_per_angstrom, ev.stress_to_ev_per_angstrom3) == (1, 1, 1, 1)

    mev_nm = U.Units("meV", "nm")
    assert mev_nm.force_to_ev_per_angstrom == pytest.approx(1e-4, rel=1e-15)
    assert mev_nm.stress_to_ev_per_angstrom3 == pytest.approx(1e-6, rel=1e-15)
    assert U.Units("kJ/mol", "Angstrom").energy_to_ev == U.KJ_PER_MOL_EV
