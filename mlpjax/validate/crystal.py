"""Crystal properties by finite differences through any ASE calculator: the equation of
state, elastic constants and Γ-point phonons.

Every quantity is computed the same way for the potential (through its ASE calculator) and for
the reference calculator, so differences are the potential's:

* :func:`equation_of_state` — E(V) on a uniformly scaled cell, Birch–Murnaghan fit
  (``ase.eos.EquationOfState``): V0, E0, B, a0.
* :func:`elastic_constants` — the 6×6 Voigt matrix from stress–strain central
  differences, and C11, C12, C44 for cubic crystals.
* :func:`gamma_phonons` — finite-difference Γ-point frequencies of a supercell.

Units: eV, Å, amu; bulk moduli and elastic constants in GPa, frequencies in THz (constants
from :mod:`mlpjax.units`).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from mlpjax.units import FS, GPA_PER_EV_A3
from mlpjax.validate.structures import _scaled, strained

__all__ = [
    "EOSConfig", "ElasticConfig", "PhononConfig", "EOSResult", "equation_of_state", "ElasticResult",
    "elastic_constants", "GammaPhonons", "gamma_phonons",
]


@dataclasses.dataclass(frozen=True)
class EOSConfig:
    """E(V) scan: volumes V_in·(1 + x) for ``n_points`` x evenly in ±``volume_range``."""

    volume_range: float = 0.06  # ± fractional volume change (±6 % in V = ±2 % in a)
    n_points: int = 11
    eos: str = "birchmurnaghan"  # any ase.eos.EquationOfState name
    max_recentre: int = 3  # rescans centred on the last fit when V0 is outside the inner 80 % of the scan


@dataclasses.dataclass(frozen=True)
class ElasticConfig:
    """Stress–strain central differences at the calculator's own equilibrium volume."""

    strain: float = 0.005  # ± Voigt strain component (engineering shear for 4–6)
    relax_threshold: float = 1e-3  # eV/Å: relax atomic positions when a strained cell has a larger force
    relax_fmax: float = 1e-5  # eV/Å, BFGS convergence of the internal relaxation
    relax_steps: int = 200


@dataclasses.dataclass(frozen=True)
class PhononConfig:
    """Γ-point frequencies of ``structure × supercell`` by central finite differences of the forces."""

    supercell: tuple[int, int, int] = (2, 2, 2)
    displacement_A: float = 0.01


# ------------------------------------------------------------------------- EOS
class EOSResult(NamedTuple):
    volumes: np.ndarray  # [n_points] Å^3/atom
    energies: np.ndarray  # [n_points] eV/atom
    v0: float  # Å^3/atom
    e0: float  # eV/atom
    bulk_modulus_GPa: float
    bulk_modulus_derivative: float  # B' (dimensionless; nan for EOS forms without it)
    lattice_constant_A: float  # first cell length of the input scaled to V0 (the lattice constant of a cubic cell)
    volume_scale: float  # V0 / V_input
    eos: str
    fit_volumes: np.ndarray  # [100] Å^3/atom, the fitted curve
    fit_energies: np.ndarray  # [100] eV/atom


def equation_of_state(calculator, atoms, config: EOSConfig = EOSConfig()) -> EOSResult:
    """E(V) of ``atoms`` under uniform scaling, fitted with ``ase.eos.EquationOfState``.

    The scan covers V_in·(1 ± ``volume_range``); when the fitted V0 falls outside its
    inner 80 % (or the fit fails) it is re-centred up to ``max_recentre`` times, then a
    ValueError says the potential has no minimum there. Atoms are not relaxed (a
    uniform scaling keeps every atom of a Bravais lattice at a centre of symmetry).
    """
    import warnings

    from ase.eos import EquationOfState

    n = len(atoms)
    v_in = atoms.get_volume()
    centre = 1.0
    last = None
    for _ in range(config.max_recentre + 1):
        scales = centre * (1.0 + np.linspace(-config.volume_range, config.volume_range, config.n_points))
        vols, ens = [], []
        for s in scales:
            b = _scaled(atoms, s)
            b.calc = calculator
            ens.append(b.get_potential_energy() / n)
            vols.append(b.get_volume() / n)
        vols, ens = np.asarray(vols), np.asarray(ens)
        eos = EquationOfState(vols, ens, eos=config.eos)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                v0, e0, B = eos.fit(warn=False)
            ok = np.isfinite(v0) and np.isfinite(B) and B > 0
        except Exception:  # scipy curve_fit failures (no minimum, singular fit)
            v0, e0, B, ok = np.nan, np.nan, np.nan, False
        lo, hi = vols.min(), vols.max()
        inner = (lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo))
        last = (vols, ens, v0)
        if ok and inner[0] <= v0 <= inner[1]:
            name, _, _, _, x, y, _, _ = eos.getplotdata()
            params = getattr(eos, "eos_parameters", None)
            bp = float(params[2]) if params is not None and config.eos not in ("p3", "taylor") and len(params) == 4 else float("nan")
            scale = v0 * n / v_in
            return EOSResult(
                volumes=vols, energies=ens, v0=float(v0), e0=float(e0), bulk_modulus_GPa=float(B * GPA_PER_EV_A3),
                bulk_modulus_derivative=bp, lattice_constant_A=float(atoms.cell.lengths()[0] * scale ** (1.0 / 3.0)),
                volume_scale=float(scale), eos=name, fit_volumes=np.asarray(x), fit_energies=np.asarray(y),
            )
        # move towards the lowest energy seen (or the fitted V0 when it is finite and not far)
        v_best = vols[int(np.argmin(ens))]
        target = v0 if ok and 0.5 * lo < v0 < 2.0 * hi else v_best
        centre = float(target * n / v_in)
    vols, ens, v0 = last
    raise ValueError(
        f"E(V) has no minimum within the scanned volumes ({vols.min():.3f}–{vols.max():.3f} Å^3/atom; lowest energy at "
        f"{vols[int(np.argmin(ens))]:.3f}): the potential does not bind this structure near the input volume. Check the "
        "structure's lattice constant, or the training data around equilibrium."
    )


# ------------------------------------------------------------------------- elastic constants
class ElasticResult(NamedTuple):
    C_GPa: np.ndarray  # [6, 6] GPa, Voigt order xx, yy, zz, yz, xz, xy, symmetrised
    C11_GPa: float  # cubic averages (nan unless ``cubic``)
    C12_GPa: float
    C44_GPa: float
    bulk_modulus_GPa: float  # Voigt average (C11+C22+C33 + 2(C12+C13+C23)) / 9
    cubic: bool  # C has cubic symmetry in the cell's axes (max deviation ≤ 2 % of C11)
    cubic_deviation: float  # max |C − C_cubic| / C11
    asymmetry: float  # max |C − Cᵀ| / max |C| before symmetrising (finite-difference quality)
    residual_stress_GPa: np.ndarray  # [6] GPa, stress of the unstrained cell
    volume_per_atom: float  # Å^3/atom at which C was evaluated
    strain: float
    relaxed_internal: bool  # some strained cell needed an internal (atomic-position) relaxation


def _relax_if_needed(atoms, config: ElasticConfig) -> bool:
    f = atoms.get_forces()
    if np.abs(f).max() <= config.relax_threshold:
        return False
    from ase.optimize import BFGS

    BFGS(atoms, logfile=None).run(fmax=config.relax_fmax, steps=config.relax_steps)
    return True


def elastic_constants(calculator, atoms, config: ElasticConfig = ElasticConfig()) -> ElasticResult:
    """Elastic constants from stress–strain central differences (ASE stress convention).

    For each Voigt strain component j the cell and positions are deformed by (I + ε)
    with ε_j = ±``strain`` (engineering shear for j = 4–6) and C_ij = (σ_i(+) − σ_i(−)) /
    (2·strain), σ = ASE's stress (positive tensile), which is exact to O(strain²) and
    needs no energy zero. ``atoms`` should be at the calculator's equilibrium volume
    (:func:`validate_report` rescales it by the EOS fit): at finite pressure the
    stress–strain coefficients differ from the elastic constants by pressure terms.

    Internal relaxation: when a strained cell has a force above ``relax_threshold`` the
    atoms are relaxed (BFGS, fixed cell) before the stress is read — the relaxed-ion
    constants (needed e.g. for C44 of diamond). Every atom of a Bravais lattice (fcc
    with one atom per primitive cell, also in its 4-atom cubic cell) is a centre of
    inversion, so its forces vanish under any homogeneous strain and no relaxation
    happens (``relaxed_internal`` False).
    """
    ref = atoms.copy()
    ref.calc = calculator
    relaxed = _relax_if_needed(ref, config)
    s0 = ref.get_stress(voigt=True)
    C = np.zeros((6, 6))
    for j in range(6):
        sig = []
        for sign in (1.0, -1.0):
            e = np.zeros(6)
            e[j] = sign * config.strain
            b = strained(ref, e)
            b.calc = calculator
            relaxed |= _relax_if_needed(b, config)
            sig.append(np.asarray(b.get_stress(voigt=True), np.float64))
        C[:, j] = (sig[0] - sig[1]) / (2.0 * config.strain)
    C = C * GPA_PER_EV_A3  # eV/Å^3 → GPa
    asym = float(np.abs(C - C.T).max() / max(np.abs(C).max(), 1e-30))
    C = 0.5 * (C + C.T)
    c11 = float(np.mean(np.diag(C)[:3]))
    c12 = float(np.mean([C[0, 1], C[0, 2], C[1, 2]]))
    c44 = float(np.mean(np.diag(C)[3:]))
    ideal = np.zeros((6, 6))
    ideal[:3, :3] = c12
    ideal[np.arange(3), np.arange(3)] = c11
    ideal[np.arange(3, 6), np.arange(3, 6)] = c44
    dev = float(np.abs(C - ideal).max() / max(abs(c11), 1e-30))
    cubic = dev <= 0.02
    nan = float("nan")
    b_voigt = float((C[0, 0] + C[1, 1] + C[2, 2] + 2.0 * (C[0, 1] + C[0, 2] + C[1, 2])) / 9.0)
    return ElasticResult(
        C_GPa=C, C11_GPa=c11 if cubic else nan, C12_GPa=c12 if cubic else nan, C44_GPa=c44 if cubic else nan,
        bulk_modulus_GPa=b_voigt, cubic=bool(cubic), cubic_deviation=dev, asymmetry=asym,
        residual_stress_GPa=np.asarray(s0, np.float64) * GPA_PER_EV_A3, volume_per_atom=float(ref.get_volume() / len(ref)),
        strain=float(config.strain), relaxed_internal=bool(relaxed),
    )


# ------------------------------------------------------------------------- phonons
class GammaPhonons(NamedTuple):
    frequencies_THz: np.ndarray  # [3N] ascending; imaginary modes as negative numbers
    supercell: tuple
    n_atoms: int
    n_imaginary: int  # modes below −0.05 THz (dynamical instability or an unrelaxed structure)


def gamma_phonons(calculator, atoms, config: PhononConfig = PhononConfig()) -> GammaPhonons:
    """Γ-point frequencies of ``atoms × supercell`` (= the bulk phonons at the q-points
    commensurate with the supercell) from central differences of the forces:
    Φ_{iα,jβ} = −(F_jβ(u_iα = +h) − F_jβ(u_iα = −h)) / 2h, symmetrised, with the
    acoustic sum rule imposed on the diagonal blocks; D = Φ / √(m_i m_j); ν = √λ / 2π.
    6N force calls: cheap for the small cells this is meant for."""
    sc = atoms.repeat(tuple(config.supercell))
    sc.calc = calculator
    n = len(sc)
    h = config.displacement_A
    phi = np.zeros((3 * n, 3 * n))
    pos0 = sc.positions.copy()
    for i in range(n):
        for a in range(3):
            f = []
            for sign in (1.0, -1.0):
                p = pos0.copy()
                p[i, a] += sign * h
                sc.positions = p
                f.append(np.asarray(sc.get_forces(), np.float64).reshape(-1))
            phi[3 * i + a] = -(f[0] - f[1]) / (2.0 * h)
    sc.positions = pos0
    phi = 0.5 * (phi + phi.T)
    blocks = phi.reshape(n, 3, n, 3)
    for i in range(n):  # acoustic sum rule: Σ_j Φ_ij = 0
        blocks[i, :, i, :] -= blocks[i].sum(axis=1)
    phi = blocks.reshape(3 * n, 3 * n)
    m = np.repeat(sc.get_masses(), 3)
    lam = np.linalg.eigvalsh(phi / np.sqrt(np.outer(m, m)))  # eV/(Å² amu) = (1/ASE-time)²
    omega_per_fs = np.sign(lam) * np.sqrt(np.abs(lam)) * FS  # rad/fs (FS: ASE time units per fs)
    nu = omega_per_fs * 1e3 / (2.0 * np.pi)  # THz
    return GammaPhonons(frequencies_THz=np.sort(nu), supercell=tuple(config.supercell), n_atoms=n,
                        n_imaginary=int(np.sum(nu < -0.05)))
