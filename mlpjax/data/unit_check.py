"""Unit sanity of labelled data: do the energies and forces look like eV and eV/Å?

A file whose energies are in meV but declared eV trains without complaint and gives a
potential 1,000× too stiff in energy (or, weighted by forces, one whose energies are
noise). Three checks catch the common mix-ups (the unit checklist of the workflow):

1. **Energy against force** (the decisive one, dimension-free): for two frames a and b
   of the same atoms a small step apart, the energy change equals the work of the
   forces along the step, to second order (trapezoidal rule)::

       E_b - E_a ≈ W_ab = -½ Σ_i (F_a,i + F_b,i) · (R_b,i - R_a,i)

   The slope k of ΔE against W over the closest pairs is 1 when energies and forces
   share units; k ≈ 1000 means energies in meV written as eV, k ≈ 1.89 (= Å/bohr)
   Hartree and Hartree/bohr written as eV and eV/Å, k ≈ 23 / 27 / 96 energies in
   kcal/mol / Hartree / kJ/mol with forces in eV/Å, and so on.
2. **Force magnitudes**: the RMS force component of DFT data is 0.05–5 eV/Å; above
   ``FORCE_RMS_MAX`` the forces are in meV/Å or kcal/mol/Å, or the structures overlap.
3. **Per-atom energies after the reference-energy fit** (E - Σ_Z n_Z E0_Z) / N: their
   spread is meV–eV per atom in eV data (``ENERGY_SPREAD_MAX``); the fitted E0_Z
   themselves are at most ~10⁶ eV even all-electron (uranium: -7.6·10⁵ eV).

Everything is in internal units (eV, Å), i.e. after the declared ``units`` were
applied, so a file read with the right ``units=`` passes. :func:`check_units` returns
the problems found; :mod:`mlpjax.training` warns with them, or raises with ``strict``.

Limits: a mix-up that scales energies and forces by the same factor (k = 1: kcal/mol
and kcal/mol/Å, or everything in atomic units with positions in bohr) is caught only
by the magnitudes, i.e. when the factor pushes them out of range: kcal/mol forces of a
molecule at 500 K (RMS ≈ 1.2 eV/Å → 27) are flagged, those of a crystal near
equilibrium (RMS 0.5 → 11) may not be. A data set without frames a small step apart
(< ``MAX_PAIR_RMS_STEP``) has no energy-against-force verdict.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from mlpjax import units as _units
from mlpjax.data.dataset import fit_reference_energies, statistics

FORCE_RMS_MAX = 10.0  # eV/Å: RMS force component above which forces are implausible for eV/Å
ENERGY_SPREAD_MAX = 5.0  # eV/atom: std of the per-atom residual energy above which energies are implausible
E0_MAX = 1.0e6  # eV/atom: |E0_Z| above any all-electron atomic energy
K_TOLERANCE = 1.3  # k within [1/1.3, 1.3] counts as consistent (trapezoid error on close pairs is a few %)
MAX_PAIR_RMS_STEP = 0.25  # Å: RMS per-atom displacement of a pair used in the energy-force test
MIN_PAIRS = 5
MIN_R2 = 0.9  # correlation² of ΔE with W required before a slope is believed
MAX_FRAMES_PER_GROUP = 400  # frames per composition group searched for close pairs (O(n²) pairs): the first ones,
# kept contiguous because successive frames of a trajectory are the close pairs (a stride would skip them)


def _named_factors() -> list[tuple[float, str]]:
    """(k, likely mix-up) for the slope k of ΔE against W (check 1).

    Data written with energies in u_E [eV] and forces in u_F [eV/Å] but read as eV and
    eV/Å give E_file = E/u_E and F_file = F/u_F, so k = u_F / u_E.
    """
    ha, bohr = _units.HARTREE_EV, _units.BOHR_ANGSTROM
    kcal, kj, mev = _units.KCAL_PER_MOL_EV, _units.KJ_PER_MOL_EV, _units.ENERGY_UNITS["meV"]
    return [
        (1.0 / mev, "energies in meV written as eV (forces in eV/Å)"),
        (mev, "forces in meV/Å written as eV/Å (energies in eV)"),
        (1.0 / bohr, "energies in Hartree and forces in Hartree/bohr (positions in Å) written as eV and eV/Å"),
        (1.0 / kcal, "energies in kcal/mol with forces in eV/Å"),
        (kcal, "forces in kcal/mol/Å with energies in eV"),
        (1.0 / ha, "energies in Hartree with forces in eV/Å"),
        (ha, "forces in Hartree/Å with energies in eV"),
        (ha / bohr, "forces in Hartree/bohr with energies in eV"),
        (1.0 / kj, "energies in kJ/mol with forces in eV/Å"),
        (kj, "forces in kJ/mol/Å with energies in eV"),
        (bohr, "forces per bohr written as per Å (e.g. eV/bohr as eV/Å)"),
    ]


def _scale_names(ratio: float, suffix: str = "") -> str:
    """The units whose factor (within 30×) could make a value ``ratio`` times too large: "meV, ... or ..."."""
    options = [(1.0 / _units.ENERGY_UNITS["meV"], "meV"), (1.0 / _units.KCAL_PER_MOL_EV, "kcal/mol"),
               (1.0 / _units.KJ_PER_MOL_EV, "kJ/mol")]
    names = [name + suffix for f, name in options if f / 30 <= ratio <= f * 30]
    if not names:
        return "a unit other than eV" + suffix
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


@dataclasses.dataclass(frozen=True)
class UnitProblem:
    """One suspicious range in a data set."""

    check: str  # "energy_vs_force" | "force_magnitude" | "energy_spread" | "reference_energy"
    message: str  # one sentence naming the likely mix-up
    value: float  # the measured quantity (k, eV/Å, eV/atom or eV)


@dataclasses.dataclass(frozen=True)
class EnergyForceSlope:
    """Result of the energy-against-force test (check 1 of the module docstring)."""

    slope: float  # k of ΔE = k·W (1 for consistent units); nan when not determined
    r2: float  # squared correlation of ΔE and W over the pairs used
    n_pairs: int  # pairs of frames used
    rms_step_A: float  # Å, median RMS per-atom displacement of the pairs used


def energy_force_slope(configs: Sequence, *, max_pairs: int = 64) -> EnergyForceSlope:
    """Slope of the energy change against the work of the forces over the closest frame pairs.

    Frames are grouped by atom count, species order and cell (periodic frames: same
    cell to 1e-6 Å, displacements by the minimum image); in each group the closest
    pairs (RMS per-atom displacement below ``MAX_PAIR_RMS_STEP``) are used.
    """
    groups: dict = {}
    for c in configs:
        if c.energy is None or c.forces is None or not np.all(np.isfinite(c.forces)):
            continue
        key = (c.numbers.tobytes(), bool(np.any(c.pbc)), np.round(c.cell, 6).tobytes() if np.any(c.pbc) else b"")
        groups.setdefault(key, []).append(c)
    candidates = []  # (rms step, ΔE, W)
    for frames in groups.values():
        if len(frames) < 2:
            continue
        frames = frames[:MAX_FRAMES_PER_GROUP]
        R = np.stack([np.asarray(f.positions, np.float64) for f in frames])  # [n, atoms, 3] Å
        F = np.stack([np.asarray(f.forces, np.float64) for f in frames])  # [n, atoms, 3] eV/Å
        E = np.array([float(f.energy) for f in frames])  # [n] eV
        periodic = bool(np.any(frames[0].pbc))
        cell = np.asarray(frames[0].cell, np.float64)
        inv = np.linalg.inv(cell) if periodic and abs(np.linalg.det(cell)) > 1e-9 else None
        for a in range(len(frames) - 1):
            d = R[a + 1 :] - R[a]  # [n-a-1, atoms, 3]
            if inv is not None:
                s = d @ inv
                s -= np.round(s) * np.asarray(frames[0].pbc, np.float64)
                d = s @ cell
            rms = np.sqrt(np.mean(np.sum(d * d, axis=-1), axis=-1))
            close = np.nonzero(rms < MAX_PAIR_RMS_STEP)[0]
            for j in close:
                b = a + 1 + j
                w = -0.5 * float(np.sum((F[a] + F[b]) * d[j]))
                candidates.append((float(rms[j]), E[b] - E[a], w))
    if len(candidates) < MIN_PAIRS:
        return EnergyForceSlope(math.nan, math.nan, len(candidates), math.nan)
    candidates.sort(key=lambda t: t[0])
    use = np.asarray(candidates[:max_pairs])
    dE, W = use[:, 1], use[:, 2]
    if not np.any(W != 0):
        return EnergyForceSlope(math.nan, math.nan, len(use), float(np.median(use[:, 0])))
    slope = float(np.dot(dE, W) / np.dot(W, W))  # least squares through the origin
    denom = float(np.dot(dE, dE)) * float(np.dot(W, W))
    r2 = float(np.dot(dE, W) ** 2 / denom) if denom > 0 else math.nan
    return EnergyForceSlope(slope, r2, len(use), float(np.median(use[:, 0])))


def check_units(configs: Sequence, reference_energies: dict[int, float] | None = None) -> list[UnitProblem]:
    """The unit problems of ``configs`` (internal units); an empty list when the ranges look like eV, Å.

    ``reference_energies`` ``{Z: E0_Z}`` [eV] (fitted by least squares when not given).
    """
    configs = list(configs)
    problems: list[UnitProblem] = []
    with_energy = [c for c in configs if c.energy is not None]
    forces = [np.asarray(c.forces, np.float64) for c in configs if c.forces is not None]
    # 1. energy against force
    fit = energy_force_slope(configs)
    if math.isfinite(fit.slope) and fit.r2 >= MIN_R2 and not (1.0 / K_TOLERANCE <= fit.slope <= K_TOLERANCE):
        name = min(_named_factors(), key=lambda t: abs(math.log(abs(fit.slope)) - math.log(t[0])) if fit.slope > 0 else math.inf)
        likely = name[1] if fit.slope > 0 and abs(math.log(fit.slope / name[0])) < math.log(K_TOLERANCE) else None
        problems.append(UnitProblem(
            "energy_vs_force",
            f"energy differences between nearby frames are {fit.slope:.4g}× the work of the forces over the same steps "
            f"(1 when energies and forces share units; {fit.n_pairs} frame pairs, median step {fit.rms_step_A:.3f} Å): "
            + (f"likely {likely}" if likely else "the energy and force units do not match"),
            fit.slope))
    # 2. force magnitudes
    if forces:
        rms = float(np.sqrt(np.mean(np.concatenate([f.ravel() for f in forces]) ** 2)))
        if math.isfinite(rms) and rms > FORCE_RMS_MAX:
            problems.append(UnitProblem(
                "force_magnitude",
                f"the RMS force component is {rms:.4g} eV/Å (DFT data: 0.05-5 eV/Å): forces are likely in "
                f"{_scale_names(rms / 1.0, '/Å')} written as eV/Å",
                rms))
    # 3. per-atom energies after the reference-energy fit
    if len(with_energy) >= 2:
        refs = reference_energies if reference_energies is not None else fit_reference_energies(with_energy)
        stats = statistics(with_energy, refs)
        if math.isfinite(stats.energy_per_atom_std) and stats.energy_per_atom_std > ENERGY_SPREAD_MAX:
            problems.append(UnitProblem(
                "energy_spread",
                f"per-atom energies after the reference-energy fit spread by {stats.energy_per_atom_std:.4g} eV/atom "
                f"(std; eV data: meV to ~1 eV per atom): energies are likely in {_scale_names(stats.energy_per_atom_std / 0.1)} "
                "written as eV",
                stats.energy_per_atom_std))
        worst = max(refs.items(), key=lambda kv: abs(kv[1]))
        if abs(worst[1]) > E0_MAX:
            problems.append(UnitProblem(
                "reference_energy",
                f"the fitted reference energy of Z={worst[0]} is {worst[1]:.4g} eV per atom, beyond any all-electron atomic "
                f"energy (|E| < {E0_MAX:.0e} eV): energies are likely in {_scale_names(abs(worst[1]) / 1e4)} written as eV",
                worst[1]))
    return problems
