"""Validation: error metrics and parity plots on a data set, and physical validation
(energy conservation, extrapolation, equation of state, elastic constants, vibrations)
against a reference calculator, gathered by :func:`validate_report`.

Predictions come only from :meth:`mlpjax.potential.Potential.predict` on padded
batches (one jit per potential and budget), so the numbers here are the numbers the
ASE calculator and MD see. Reference values come from the configurations' labels;
a configuration without an energy label is an error naming its file and frame.

Physical validation (second half of this module). Units: eV, Å, amu, fs/ps as named;
bulk moduli and elastic constants in GPa (``ase.units.GPa``); frequencies in THz.
Every quantity is computed the same way for the potential (through its ASE calculator
or jax-md) and for the reference calculator, so differences are the potential's:

* :func:`energy_drift` — NVE from a thermalised start at several timesteps; drift =
  slope of a linear fit of E_tot(t)/N, classified by :func:`classify_drift` against
  :data:`DRIFT_GOOD_MEV_PER_ATOM_PS` / :data:`DRIFT_FAIL_MEV_PER_ATOM_PS`.
* :func:`equation_of_state` — E(V) on a uniformly scaled cell, Birch–Murnaghan fit
  (``ase.eos.EquationOfState``): V0, E0, B, a0.
* :func:`elastic_constants` — the 6×6 Voigt matrix from stress–strain central
  differences, and C11, C12, C44 for cubic crystals.
* :func:`gamma_phonons` — finite-difference Γ-point frequencies of a supercell.
* :func:`vibrational_dos` / :func:`reference_vibrational_dos` — VDOS from the
  mass-weighted velocity autocorrelation of an NVE run (jax-md for the potential,
  ASE MD for the reference).
* :func:`extrapolation_test` — errors against the reference as the structures move away
  from the training distribution: temperature, volume strain, per-atom energy.

Metric keys (``metrics``):

    energy_mae_meV_per_atom, energy_rmse_meV_per_atom   |Ê/N - E/N|
    force_mae_meV_per_A, force_rmse_meV_per_A           over all force components
    energy_r2                                           R² of per-atom energies
    force_r2                                            R² of force components
    stress_mae_meV_per_A3, stress_rmse_meV_per_A3       only when some structure has a stress label
    n_structures, n_atoms
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import NamedTuple, Sequence

import jax
import numpy as np

from mlpjax.data import Configuration, DataError
from mlpjax.graph import batches, make_budget, to_graphs

_PREDICT_CACHE: dict = {}


def _predict_fn(potential, compute_stress: bool):
    """``jit(predict)`` shared by potentials that differ only in parameters/metadata (params are an argument)."""
    header = potential.header()
    header.pop("metadata", None)
    key = (json.dumps(header, sort_keys=True), bool(compute_stress), bool(jax.config.jax_enable_x64))
    fn = _PREDICT_CACHE.get(key)
    if fn is None:
        if len(_PREDICT_CACHE) > 32:
            _PREDICT_CACHE.clear()
        bare = potential.replace(params=None, metadata={})
        fn = jax.jit(lambda params, batch: bare.predict(params, batch, compute_stress=compute_stress))
        _PREDICT_CACHE[key] = fn
    return fn


def _default_dtype():
    return np.float64 if jax.config.jax_enable_x64 else np.float32


def predict_dataset(potential, configs: Sequence[Configuration], *, batch_size: int = 16, dtype=None, params=None) -> dict:
    """Predictions for every configuration, in input order.

    Returns a dict of NumPy float64 arrays:
      ``energy`` [n_structures] eV, ``n_atoms`` [n_structures] int,
      ``forces`` [Σ n_atoms, 3] eV/Å (structures concatenated in order),
      ``stress`` [n_structures, 3, 3] eV/Å^3 (zeros for non-periodic structures),
      ``atomic_energies`` [Σ n_atoms] eV.
    """
    configs = list(configs)
    if not configs:
        raise ValueError("no configurations to predict")
    dtype = _default_dtype() if dtype is None else np.dtype(dtype).type
    params = potential.params if params is None else params
    if params is None:
        raise ValueError("the potential has no parameters")
    graphs = to_graphs(configs, potential.species, potential.cutoff)
    budget = make_budget(graphs, batch_size)
    compute_stress = any(c.periodic for c in configs)
    fn = _predict_fn(potential, compute_stress)
    energy, n_atoms, forces, stress, e_atoms = [], [], [], [], []
    for batch in batches(graphs, budget, shuffle=False, dtype=dtype):
        out = fn(params, batch)
        n_g = int(np.sum(batch.graph_mask))
        n_nodes = int(np.sum(batch.node_mask))
        energy.append(np.asarray(out.energy[:n_g], np.float64))
        n_atoms.append(np.asarray(batch.n_atoms[:n_g]))
        forces.append(np.asarray(out.forces[:n_nodes], np.float64))
        e_atoms.append(np.asarray(out.atomic_energies[:n_nodes], np.float64))
        stress.append(np.asarray(out.stress[:n_g], np.float64))
    return {
        "energy": np.concatenate(energy),
        "n_atoms": np.concatenate(n_atoms).astype(np.int64),
        "forces": np.concatenate(forces),
        "stress": np.concatenate(stress),
        "atomic_energies": np.concatenate(e_atoms),
    }


def _where(c: Configuration, i: int):
    return dict(source=c.source or None, frame=c.frame if c.frame >= 0 else i)


def reference_arrays(configs: Sequence[Configuration]) -> dict:
    """Reference labels in the layout of :func:`predict_dataset` plus masks.

    Every configuration needs an energy (DataError naming the file/frame if not);
    forces/stress may be absent (``has_forces`` / ``has_stress`` say where present).
    """
    configs = list(configs)
    energy, n_atoms, forces, has_forces, stress, has_stress = [], [], [], [], [], []
    for i, c in enumerate(configs):
        if c.energy is None:
            raise DataError("has no reference energy to validate against; use labelled data", field="energy", **_where(c, i))
        energy.append(float(c.energy))
        n_atoms.append(c.n_atoms)
        if c.forces is not None:
            f = np.asarray(c.forces, np.float64)
            if f.shape != (c.n_atoms, 3):
                raise DataError(f"forces have shape {f.shape}, expected ({c.n_atoms}, 3)", field="forces", **_where(c, i))
            forces.append(f)
            has_forces.append(np.ones(c.n_atoms, bool))
        else:
            forces.append(np.zeros((c.n_atoms, 3)))
            has_forces.append(np.zeros(c.n_atoms, bool))
        if c.stress is not None and c.periodic:
            stress.append(np.asarray(c.stress, np.float64).reshape(3, 3))
            has_stress.append(True)
        else:
            stress.append(np.zeros((3, 3)))
            has_stress.append(False)
    return {
        "energy": np.asarray(energy),
        "n_atoms": np.asarray(n_atoms, np.int64),
        "forces": np.concatenate(forces) if forces else np.zeros((0, 3)),
        "has_forces": np.concatenate(has_forces) if has_forces else np.zeros(0, bool),
        "stress": np.asarray(stress).reshape(-1, 3, 3),
        "has_stress": np.asarray(has_stress, bool),
    }


def _r2(pred: np.ndarray, ref: np.ndarray) -> float:
    if ref.size == 0:
        return float("nan")
    ss_res = float(np.sum((pred - ref) ** 2))
    ss_tot = float(np.sum((ref - ref.mean()) ** 2))
    if ss_tot == 0.0:
        return float("nan")
    return 1.0 - ss_res / ss_tot


def metrics_from_predictions(predictions: dict, configs: Sequence[Configuration]) -> dict:
    """Error metrics of ``predictions`` (layout of :func:`predict_dataset`) against the labels of ``configs``."""
    ref = reference_arrays(configs)
    pred_e = np.asarray(predictions["energy"], np.float64)
    if pred_e.shape != ref["energy"].shape:
        raise ValueError(f"{pred_e.shape[0]} predicted energies for {ref['energy'].shape[0]} configurations")
    n = ref["n_atoms"].astype(np.float64)
    e_pa_pred, e_pa_ref = pred_e / n, ref["energy"] / n
    de = e_pa_pred - e_pa_ref
    out = {
        "energy_mae_meV_per_atom": 1e3 * float(np.mean(np.abs(de))),
        "energy_rmse_meV_per_atom": 1e3 * float(np.sqrt(np.mean(de**2))),
        "energy_r2": _r2(e_pa_pred, e_pa_ref),
    }
    pred_f = np.asarray(predictions["forces"], np.float64).reshape(-1, 3)
    if pred_f.shape != ref["forces"].shape:
        raise ValueError(f"predicted forces have shape {pred_f.shape}, the configurations have {ref['forces'].shape}")
    m = ref["has_forces"]
    if np.any(m):
        df = (pred_f[m] - ref["forces"][m]).ravel()
        out["force_mae_meV_per_A"] = 1e3 * float(np.mean(np.abs(df)))
        out["force_rmse_meV_per_A"] = 1e3 * float(np.sqrt(np.mean(df**2)))
        out["force_r2"] = _r2(pred_f[m].ravel(), ref["forces"][m].ravel())
    else:
        out["force_mae_meV_per_A"] = out["force_rmse_meV_per_A"] = out["force_r2"] = float("nan")
    s = ref["has_stress"]
    if np.any(s):
        pred_s = np.asarray(predictions["stress"], np.float64).reshape(-1, 3, 3)
        ds = (pred_s[s] - ref["stress"][s]).ravel()
        out["stress_mae_meV_per_A3"] = 1e3 * float(np.mean(np.abs(ds)))
        out["stress_rmse_meV_per_A3"] = 1e3 * float(np.sqrt(np.mean(ds**2)))
    out["n_structures"] = int(len(n))
    out["n_atoms"] = int(np.sum(ref["n_atoms"]))
    return out


def metrics(potential, configs: Sequence[Configuration], *, batch_size: int = 16, predictions: dict | None = None) -> dict:
    """Error metrics of ``potential`` on ``configs`` (keys in the module docstring)."""
    configs = list(configs)
    reference_arrays(configs)  # label errors before any compile
    if predictions is None:
        predictions = predict_dataset(potential, configs, batch_size=batch_size)
    return metrics_from_predictions(predictions, configs)


def parity_plot(potential_or_predictions, configs: Sequence[Configuration], path, *, title: str | None = None, batch_size: int = 16) -> dict:
    """Write a PNG with energy (meV/atom, relative to the mean) and force-component parity panels.

    ``potential_or_predictions`` is a :class:`~mlpjax.potential.Potential` or a dict
    from :func:`predict_dataset`. The MAE of each panel is in its title. Returns the metrics.
    """
    import io
    import os

    from matplotlib.figure import Figure  # no pyplot: no GUI backend, thread-safe, nothing global

    from mlpjax._io import atomic_write_bytes

    configs = list(configs)
    ref = reference_arrays(configs)
    if isinstance(potential_or_predictions, dict):
        pred = potential_or_predictions
    else:
        pred = predict_dataset(potential_or_predictions, configs, batch_size=batch_size)
    m = metrics_from_predictions(pred, configs)
    n = ref["n_atoms"].astype(np.float64)
    has_stress = bool(np.any(ref["has_stress"]))
    ncols = 3 if has_stress else 2
    fig = Figure(figsize=(4.6 * ncols, 4.4), layout="constrained")
    axes = fig.subplots(1, ncols)

    def panel(ax, x, y, label, unit, mae, mae_unit):
        ax.scatter(x, y, s=6, alpha=0.6, edgecolors="none")
        if x.size:
            lo = float(min(x.min(), y.min()))
            hi = float(max(x.max(), y.max()))
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel(f"reference {label} [{unit}]")
        ax.set_ylabel(f"predicted {label} [{unit}]")
        ax.set_title(f"{label}: MAE {mae:.3g} {mae_unit}")
        ax.set_aspect("equal", adjustable="box")

    e_ref = ref["energy"] / n * 1e3
    e_pred = np.asarray(pred["energy"], np.float64) / n * 1e3
    shift = float(np.mean(e_ref))  # plot relative to the mean so the axis labels stay readable
    panel(axes[0], e_ref - shift, e_pred - shift, "energy − mean", "meV/atom", m["energy_mae_meV_per_atom"], "meV/atom")
    fm = ref["has_forces"]
    f_ref = ref["forces"][fm].ravel()
    f_pred = np.asarray(pred["forces"], np.float64).reshape(-1, 3)[fm].ravel()
    panel(axes[1], f_ref, f_pred, "force component", "eV/Å", m["force_mae_meV_per_A"], "meV/Å")
    if has_stress:
        sm = ref["has_stress"]
        s_ref = ref["stress"][sm].ravel() * 1e3
        s_pred = np.asarray(pred["stress"], np.float64).reshape(-1, 3, 3)[sm].ravel() * 1e3
        panel(axes[2], s_ref, s_pred, "stress component", "meV/Å³", m["stress_mae_meV_per_A3"], "meV/Å³")
    fig.suptitle(title or f"{m['n_structures']} structures, {m['n_atoms']} atoms")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write_bytes(os.fspath(path), buf.getvalue())
    return m


# ===================================================================================
# Physical validation
# ===================================================================================

DRIFT_GOOD_MEV_PER_ATOM_PS: float = 1.0
"""NVE total-energy drift (|slope of E_tot/N|, meV/atom/ps) below which energy conservation
is *good*. One of the project's two warning levels for MD energy drift (issue 5):
|drift| < 1 meV/atom/ps good; 1–10 warn (reduce the timestep, check that the energy is
smooth at the cutoff, use float64); > 10 fail."""

DRIFT_FAIL_MEV_PER_ATOM_PS: float = 10.0
"""NVE total-energy drift (meV/atom/ps) above which energy conservation *fails*: the
project's upper warning level (see :data:`DRIFT_GOOD_MEV_PER_ATOM_PS`)."""

LATTICE_CONSTANT_REL_TOL: float = 0.005
"""Acceptance level of the equilibrium lattice constant against the reference (relative, 0.5 %)."""

BULK_MODULUS_REL_TOL: float = 0.10
"""Acceptance level of the bulk modulus (E(V) fit) against the reference (relative, 10 %)."""

ELASTIC_CONSTANT_REL_TOL: float = 0.15
"""Acceptance level of C11, C12, C44 against the reference (relative, 15 %)."""

_DRIFT_ADVICE = {
    "good": "energy is conserved: the drift is below {good:g} meV/atom/ps at this timestep.",
    "warn": (
        "drift between {good:g} and {fail:g} meV/atom/ps: reduce the timestep, check that the energy is smooth "
        "as atoms cross the cutoff (envelope / cutoff function), and run in float64 (--float64, MDConfig(dtype='float64'))."
    ),
    "fail": (
        "drift above {fail:g} meV/atom/ps: the dynamics does not conserve energy. The timestep is too long for this "
        "potential, or the forces are not the gradient of a smooth energy (cutoff discontinuity, float32 round-off, "
        "a model that is rough outside its training data): do not use this setting for production MD."
    ),
}


def classify_drift(drift_meV_per_atom_per_ps: float) -> tuple[str, str]:
    """("good" | "warn" | "fail", advice) for an NVE drift (sign ignored; NaN fails).

    |drift| < :data:`DRIFT_GOOD_MEV_PER_ATOM_PS` good; up to and including
    :data:`DRIFT_FAIL_MEV_PER_ATOM_PS` warn; above it (or not finite) fail.
    """
    d = abs(float(drift_meV_per_atom_per_ps))
    if not np.isfinite(d) or d > DRIFT_FAIL_MEV_PER_ATOM_PS:
        status = "fail"
    elif d < DRIFT_GOOD_MEV_PER_ATOM_PS:
        status = "good"
    else:
        status = "warn"
    return status, _DRIFT_ADVICE[status].format(good=DRIFT_GOOD_MEV_PER_ATOM_PS, fail=DRIFT_FAIL_MEV_PER_ATOM_PS)


# ------------------------------------------------------------------------- configs
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
class DriftConfig:
    """NVE energy-conservation runs (one per timestep) from one thermalised start."""

    timesteps_fs: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    duration_ps: float = 1.0  # simulated time of every NVE run
    temperature_K: float = 300.0
    thermalise_ps: float = 0.5  # Langevin NVT before the NVE runs (0: the input's momenta, else Maxwell–Boltzmann at 2·T)
    thermalise_timestep_fs: float = 2.0
    friction_per_ps: float = 5.0
    log_interval_fs: float = 5.0  # E_tot recorded about this often
    reference_timestep_fs: float = 1.0  # the headline drift (and the acceptance check) uses this timestep
    dtype: str | None = "float64"  # MDConfig.dtype; None: float64 iff jax_enable_x64
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class VDOSConfig:
    """Vibrational density of states from the mass-weighted VACF of an NVE run."""

    temperature_K: float = 300.0
    thermalise_ps: float = 0.5  # as DriftConfig.thermalise_ps
    timestep_fs: float = 2.0
    duration_ps: float = 4.0
    sample_every_fs: float = 4.0  # velocities stored this often (Nyquist 1/(2·dt) = 125 THz at 4 fs)
    max_lag_ps: float = 1.0  # VACF length; frequency resolution ≈ 1/max_lag (Hann window)
    friction_per_ps: float = 5.0  # thermalisation
    dtype: str | None = None
    seed: int = 1


@dataclasses.dataclass(frozen=True)
class PhononConfig:
    """Γ-point frequencies of ``structure × supercell`` by central finite differences of the forces."""

    supercell: tuple[int, int, int] = (2, 2, 2)
    displacement_A: float = 0.01


@dataclasses.dataclass(frozen=True)
class ExtrapolationConfig:
    """Samples labelled by the reference calculator at increasing distance from equilibrium.

    Temperature axis: Langevin MD *with the reference calculator* (ASE) at each
    temperature at fixed volume (no thermal expansion), frames every ``frame_stride``
    steps after ``equilibration_steps``. Strain axis: isotropic volume strains
    ΔV/V0, each cell rattled by ``strain_rattle_A`` (Gaussian, Å) so forces are not
    zero by symmetry. Energy axis: every sample binned by its reference per-atom energy
    above the reference crystal at equilibrium.
    """

    temperatures_K: tuple[float, ...] = (300.0, 600.0, 900.0, 1200.0, 1500.0)
    frames_per_temperature: int = 4
    equilibration_steps: int = 200
    frame_stride: int = 25
    md_timestep_fs: float = 2.0
    friction_per_ps: float = 5.0
    volume_strains: tuple[float, ...] = (-0.08, -0.06, -0.04, -0.02, 0.0, 0.02, 0.04, 0.06, 0.08)
    frames_per_strain: int = 2
    strain_rattle_A: float = 0.05
    n_energy_bins: int = 6
    seed: int = 0


SECTIONS = ("parity", "eos", "elastic", "phonons", "drift", "vdos", "extrapolation")


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """Everything :func:`validate_report` runs; :meth:`quick` is a minutes-sized variant."""

    sections: tuple[str, ...] = SECTIONS
    eos: EOSConfig = EOSConfig()
    elastic: ElasticConfig = ElasticConfig()
    phonons: PhononConfig = PhononConfig()
    drift: DriftConfig = DriftConfig()
    vdos: VDOSConfig = VDOSConfig()
    extrapolation: ExtrapolationConfig = ExtrapolationConfig()
    md_min_atoms: int = 64  # MD cells are repeated to at least this many atoms (and 2 × (cutoff + skin) wide)
    md_skin: float = 0.5  # Å, jax-md neighbour-list skin (MDConfig.skin)
    batch_size: int = 16

    def __post_init__(self):
        unknown = sorted(set(self.sections) - set(SECTIONS))
        if unknown:
            raise ValueError(f"unknown report sections {unknown}; choose from {', '.join(SECTIONS)}")

    @classmethod
    def quick(cls, **changes) -> "ReportConfig":
        """Short runs and few samples (about a minute for a small model on one CPU core)."""
        cfg = cls(
            phonons=PhononConfig(supercell=(1, 1, 1)),
            drift=DriftConfig(timesteps_fs=(1.0, 2.0), duration_ps=0.1, thermalise_ps=0.1, log_interval_fs=4.0),
            vdos=VDOSConfig(duration_ps=0.4, max_lag_ps=0.2, thermalise_ps=0.1),
            extrapolation=ExtrapolationConfig(
                temperatures_K=(300.0, 900.0, 1500.0), frames_per_temperature=1, equilibration_steps=40,
                frame_stride=10, volume_strains=(-0.08, 0.0, 0.08), frames_per_strain=1, n_energy_bins=3,
            ),
        )
        return dataclasses.replace(cfg, **changes)


# ------------------------------------------------------------------------- structures
_CUBIC_LATTICES = ("fcc", "bcc", "sc", "diamond")


def bulk_structure(spec=None, *, element=None):
    """A cubic conventional cell (ase.Atoms) from ``"fcc-Cu"`` / ``"fcc-Cu:3.6"`` (lattice-Symbol[:a Å]),
    or, with ``spec=None``, from ``ase.data.reference_states`` of ``element`` (symbol or Z)."""
    from ase.build import bulk
    from ase.data import atomic_numbers, chemical_symbols, reference_states

    a = None
    if spec is None:
        if element is None:
            raise ValueError("give a structure spec such as 'fcc-Cu' or an element")
        z = atomic_numbers[element] if isinstance(element, str) else int(element)
        state = reference_states[z] or {}
        lattice = state.get("symmetry")
        if lattice not in _CUBIC_LATTICES:
            raise ValueError(
                f"the reference state of {chemical_symbols[z]} is {lattice!r}, not a cubic lattice "
                f"({', '.join(_CUBIC_LATTICES)}): pass a structure, e.g. --structure FILE"
            )
        symbol, a = chemical_symbols[z], state["a"]
    else:
        body, _, a_text = str(spec).partition(":")
        lattice, _, symbol = body.partition("-")
        if lattice not in _CUBIC_LATTICES or symbol not in atomic_numbers:
            raise ValueError(f"structure spec {spec!r}: expected LATTICE-Symbol[:a] with LATTICE in {_CUBIC_LATTICES}, e.g. 'fcc-Cu'")
        if a_text:
            a = float(a_text)
        else:
            state = reference_states[atomic_numbers[symbol]] or {}
            a = state.get("a")
            if state.get("symmetry") != lattice or a is None:
                raise ValueError(f"no reference lattice constant for {lattice} {symbol}: give it, e.g. '{lattice}-{symbol}:3.6'")
    return bulk(symbol, lattice, a=float(a), cubic=True)


def structure_for(potential, spec=None):
    """The validation structure: ``spec`` (``"fcc-Cu[:a]"``, a file path or ase.Atoms) or, with
    ``spec=None``, :func:`default_structure` (for one element its cubic reference state).

    A spec that is neither a file nor ``LATTICE-Symbol[:a]``, or a structure with elements the
    potential does not know, raises :class:`mlpjax.config.ConfigError` (a ValueError).
    """
    import ase
    from ase.data import chemical_symbols

    from mlpjax.config import ConfigError

    if spec is None:
        return default_structure(potential)[0]
    if isinstance(spec, ase.Atoms):
        atoms = spec.copy()
    elif os.path.exists(os.fspath(spec)):
        from mlpjax.data import read_structure

        atoms = read_structure(spec).to_atoms()
    else:
        try:
            atoms = bulk_structure(spec)
        except (ValueError, KeyError) as err:
            raise ConfigError(f"structure {spec!r} is not a file, and {err}", option="structure") from err
    unknown = sorted(set(atoms.numbers.tolist()) - set(int(z) for z in potential.species))
    if unknown:
        raise ConfigError(
            f"the structure {atoms.get_chemical_formula()} contains {', '.join(chemical_symbols[z] for z in unknown)}, "
            f"but the potential knows only {', '.join(chemical_symbols[z] for z in potential.species)}", option="structure")
    return atoms


_PROTOTYPE_TOLERANCE = 0.05  # |x_B − x_prototype| up to which the training composition matches a prototype


def _training_structures(potential) -> list:
    """The potential's training structures (Configurations, training split only) from the data files
    named in its metadata, or [] when they are not recorded or cannot be read (moved, deleted)."""
    from mlpjax.data import DataError, read_structure

    meta = potential.metadata or {}
    files = ((meta.get("data_files") or {}).get("train")) or []
    configs = []
    for path in files:
        try:
            configs += read_structure(path, index=":", units=meta.get("units", "eV"))
        except (DataError, OSError, ValueError):  # unreadable or gone: no training structures to go by
            return []
    split = meta.get("split") or {}
    if split.get("train") is not None and split.get("n") == len(configs):
        configs = [configs[i] for i in split["train"] if 0 <= i < len(configs)]
    return configs


def _volume_per_atom(symbol: str) -> float:
    """Å³/atom of the element's ASE reference crystal (KeyError/ValueError/RuntimeError when it has none)."""
    from ase.build import bulk

    atoms = bulk(symbol)
    return float(atoms.get_volume() / len(atoms))


def _prototype(a_sym: str, b_sym: str, x_b: float, volume_per_atom: float):
    """A cubic ordered cell of A(1−x)B(x) for x ≈ 1/4, 1/2, 3/4 (None otherwise) and its name.

    1/4, 3/4: L1₂ (Cu₃Au type; minority on the cube corners). 1/2: L1₀ (CuAu type, c/a = 1) when both
    elements are fcc in their reference states, else B2 (CsCl type). The cell is scaled to
    ``volume_per_atom``; the EOS rescales it to each calculator's equilibrium anyway.
    """
    import ase
    from ase.data import atomic_numbers, reference_states

    def fcc(sym):
        return (reference_states[atomic_numbers[sym]] or {}).get("symmetry") == "fcc"

    if abs(x_b - 0.5) <= _PROTOTYPE_TOLERANCE:
        if fcc(a_sym) and fcc(b_sym):
            name, symbols, frac = "L1₀", [a_sym, a_sym, b_sym, b_sym], [(0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)]
        else:
            name, symbols, frac = "B2", [a_sym, b_sym], [(0, 0, 0), (0.5, 0.5, 0.5)]
    elif abs(x_b - 0.25) <= _PROTOTYPE_TOLERANCE or abs(x_b - 0.75) <= _PROTOTYPE_TOLERANCE:
        major, minor = (a_sym, b_sym) if x_b < 0.5 else (b_sym, a_sym)
        name, symbols, frac = "L1₂", [minor, major, major, major], [(0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)]
    else:
        return None, None
    a = (volume_per_atom * len(symbols)) ** (1.0 / 3.0)
    atoms = ase.Atoms(symbols, scaled_positions=frac, cell=np.eye(3) * a, pbc=True)
    return atoms, f"{name} {atoms.get_chemical_formula()} (a = {a:.3f} Å)"


def default_structure(potential):
    """The structure :func:`validate_report` uses when none is given, and a one-line description.

    In order of preference:

    1. one element: its cubic reference state (``ase.data.reference_states``, as ``fcc-Cu``);
    2. two elements: an ordered prototype — L1₂ A₃B / AB₃, or L1₀ (both elements fcc) / B2 AB —
       matching the mean composition of the training structures that hold both elements, at their
       median volume per atom; with no readable training data, the equiatomic one at the mean of
       the elements' reference volumes (Vegard);
    3. the first periodic training structure (preferring one with every element of the potential),
       read from the data file recorded in ``potential.metadata["data_files"]["train"]``.

    Raises :class:`mlpjax.config.ConfigError` naming the elements when none of these works
    (e.g. the training files have moved): pass a structure then.
    """
    from ase.data import chemical_symbols

    from mlpjax.config import ConfigError

    species = [int(z) for z in potential.species]
    symbols = [chemical_symbols[z] for z in species]
    if len(species) == 1:
        try:
            atoms = bulk_structure(None, element=species[0])
            return atoms, f"the reference state of {symbols[0]} ({atoms.get_chemical_formula()}, " \
                          f"{len(atoms)} atoms, a = {atoms.cell.lengths()[0]:.3f} Å)"
        except (ValueError, KeyError):
            pass  # not a cubic reference state: fall through to the training data
    training = _training_structures(potential)
    periodic = [c for c in training if np.all(c.pbc) and abs(np.linalg.det(c.cell)) > 1e-6]
    if len(species) == 2:
        mixed = [c for c in periodic if set(species) <= set(np.asarray(c.numbers).tolist())]
        atoms = None
        if mixed:
            x_b = float(np.mean([np.mean(np.asarray(c.numbers) == species[1]) for c in mixed]))
            v = float(np.median([abs(np.linalg.det(c.cell)) / len(c.numbers) for c in mixed]))
            atoms, name = _prototype(symbols[0], symbols[1], x_b, v)
            why = f"the training structures' composition {symbols[0]}{1 - x_b:.2f}{symbols[1]}{x_b:.2f}"
        elif not training:
            try:
                v = 0.5 * (_volume_per_atom(symbols[0]) + _volume_per_atom(symbols[1]))
                atoms, name = _prototype(symbols[0], symbols[1], 0.5, v)
                why = "no readable training data, so the equiatomic prototype at the elements' mean reference volume"
            except (KeyError, ValueError, RuntimeError):
                atoms = None
        if atoms is not None:
            return atoms, f"{name}, from {why}"
    if periodic:
        full = [c for c in periodic if set(species) <= set(np.asarray(c.numbers).tolist())]
        conf = (full or periodic)[0]
        atoms = conf.to_atoms()
        where = f"{conf.source}, frame {conf.frame}" if getattr(conf, "source", None) else "the training data"
        return atoms, f"the first periodic training structure ({atoms.get_chemical_formula()}, {len(atoms)} atoms; {where})"
    raise ConfigError(
        f"no default structure for a potential of {', '.join(symbols)}: "
        + ("its training data are not readable" if not training else "its training structures are not periodic")
        + f"; pass one, e.g. --structure FILE or 'fcc-{symbols[0]}' (structure='fcc-{symbols[0]}' in Python)",
        option="structure")


def md_supercell(atoms, cutoff: float, *, skin: float = 0.5, min_atoms: int = 64):
    """``atoms`` repeated so that every perpendicular width is ≥ 2 × (cutoff + skin) and there are ≥ ``min_atoms``."""
    from mlpjax.md import perpendicular_widths, supercell_repeats

    reps = list(supercell_repeats(atoms.cell.array, cutoff + skin))
    widths = perpendicular_widths(atoms.cell.array)
    while len(atoms) * int(np.prod(reps)) < min_atoms:
        k = int(np.argmin(widths * np.asarray(reps)))
        reps[k] += 1
    return atoms.repeat(tuple(reps))


def _scaled(atoms, volume_scale: float):
    out = atoms.copy()
    out.set_cell(atoms.cell.array * float(volume_scale) ** (1.0 / 3.0), scale_atoms=True)
    return out


def _voigt_to_tensor(e):
    """Voigt strain (xx, yy, zz, yz, xz, xy; engineering shears) → symmetric 3×3 tensor."""
    e = np.asarray(e, np.float64)
    return np.array([[e[0], e[5] / 2, e[4] / 2], [e[5] / 2, e[1], e[3] / 2], [e[4] / 2, e[3] / 2, e[2]]])


def strained(atoms, strain_voigt):
    """A copy of ``atoms`` with cell and positions deformed by (I + ε), ε from a Voigt strain."""
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ (np.eye(3) + _voigt_to_tensor(strain_voigt)), scale_atoms=True)
    return out


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
            from ase.units import GPa

            scale = v0 * n / v_in
            return EOSResult(
                volumes=vols, energies=ens, v0=float(v0), e0=float(e0), bulk_modulus_GPa=float(B / GPa),
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
    from ase.units import GPa

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
    C = C / GPa
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
        residual_stress_GPa=np.asarray(s0, np.float64) / GPa, volume_per_atom=float(ref.get_volume() / len(ref)),
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
    from ase import units

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
    omega_per_fs = np.sign(lam) * np.sqrt(np.abs(lam)) * units.fs  # rad/fs
    nu = omega_per_fs * 1e3 / (2.0 * np.pi)  # THz
    return GammaPhonons(frequencies_THz=np.sort(nu), supercell=tuple(config.supercell), n_atoms=n,
                        n_imaginary=int(np.sum(nu < -0.05)))


# ------------------------------------------------------------------------- MD helpers
def _remove_com_momentum(atoms):
    p = atoms.get_momenta()
    m = atoms.get_masses()
    atoms.set_momenta(p - m[:, None] * (p.sum(axis=0) / m.sum()))
    return atoms


def _initial_velocities(atoms, temperature_K: float, seed: int):
    """``atoms`` with its momenta, or (none set) Maxwell–Boltzmann momenta at 2·T: a crystal at its
    energy minimum shares kinetic energy equally with potential energy, so it settles near T
    within a vibrational period instead of at T/2 (Langevin then corrects the rest)."""
    start = atoms.copy()
    if not np.any(start.get_momenta()):
        from ase.md.velocitydistribution import thermalize_momenta

        thermalize_momenta(start, 2.0 * temperature_K, rng=np.random.default_rng(seed))
    return _remove_com_momentum(start)


def thermalise(potential, atoms, *, temperature_K: float, duration_ps: float, timestep_fs: float = 2.0,
               friction_per_ps: float = 5.0, seed: int = 0, dtype=None, progress: bool = False):
    """Langevin NVT with ``potential`` (jax-md) for ``duration_ps``, from the input's momenta or
    (none set) Maxwell–Boltzmann momenta at 2·T (:func:`_initial_velocities`); returns the final
    ase.Atoms with velocities (centre-of-mass momentum removed), ready for ``initial_velocities='atoms'``."""
    from mlpjax.md import MDConfig, simulate

    steps = max(1, int(round(duration_ps * 1000.0 / timestep_fs)))
    log_every = max(1, min(steps, 50))
    steps = int(np.ceil(steps / log_every) * log_every)
    cfg = MDConfig(ensemble="nvt", temperature_K=temperature_K, timestep_fs=timestep_fs, steps=steps, log_every=log_every,
                   chunk_steps=max(log_every, min(steps, 500)), friction_per_ps=friction_per_ps, seed=seed, dtype=dtype,
                   initial_velocities="atoms")
    result = simulate(potential, _initial_velocities(atoms, temperature_K, seed), cfg, progress=progress)
    return _remove_com_momentum(result.atoms.copy())


def _start(potential, atoms, *, temperature_K, thermalise_ps, timestep_fs, friction_per_ps, seed, dtype, progress):
    if thermalise_ps > 0:
        return thermalise(potential, atoms, temperature_K=temperature_K, duration_ps=thermalise_ps, timestep_fs=timestep_fs,
                          friction_per_ps=friction_per_ps, seed=seed, dtype=dtype, progress=progress)
    return _initial_velocities(atoms, temperature_K, seed)


# ------------------------------------------------------------------------- energy drift
class DriftRun(NamedTuple):
    timestep_fs: float
    steps: int
    time_ps: np.ndarray  # [n_records] ps
    e_tot_eV_per_atom: np.ndarray  # [n_records] eV/atom
    drift_eV_per_atom_per_ps: float  # slope of the linear fit of E_tot(t)/N
    drift_meV_per_atom_per_ps: float
    fluctuation_meV_per_atom: float  # standard deviation of E_tot/N about the linear fit
    max_deviation_meV_per_atom: float  # max |E_tot(t) − E_tot(0)| / N
    mean_temperature_K: float
    status: str  # classify_drift
    advice: str
    steps_per_s: float


class DriftReport(NamedTuple):
    runs: tuple  # DriftRun per timestep, in the config's order
    n_atoms: int
    temperature_K: float
    dtype: str
    fluctuation_exponent: float  # d log(fluctuation) / d log(dt); ≈ 2 for velocity Verlet on a smooth energy
    reference_timestep_fs: float

    @property
    def reference(self) -> "DriftRun | None":
        """The run at ``reference_timestep_fs`` (None if it was not run)."""
        for r in self.runs:
            if abs(r.timestep_fs - self.reference_timestep_fs) < 1e-9:
                return r
        return None


def drift_statistics(time_ps, e_tot_eV, n_atoms: int) -> dict:
    """Drift (linear-fit slope of E_tot/N, eV and meV/atom/ps), fluctuation about the fit and
    max |E_tot − E_tot(0)|/N (meV/atom) of a total-energy series, with its classification.

    time_ps: [n] ps; e_tot_eV: [n] eV (whole system).
    """
    t = np.asarray(time_ps, np.float64)
    e = np.asarray(e_tot_eV, np.float64) / float(n_atoms)
    if t.size < 2:
        raise ValueError("need at least two E_tot records to fit a drift")
    slope, intercept = np.polyfit(t - t[0], e - e[0], 1)
    resid = (e - e[0]) - (slope * (t - t[0]) + intercept)
    status, advice = classify_drift(1e3 * slope)
    return {
        "drift_eV_per_atom_per_ps": float(slope),
        "drift_meV_per_atom_per_ps": float(1e3 * slope),
        "fluctuation_meV_per_atom": float(1e3 * np.std(resid)),
        "max_deviation_meV_per_atom": float(1e3 * np.max(np.abs(e - e[0]))),
        "status": status,
        "advice": advice,
    }


def energy_drift(potential, atoms, config: DriftConfig = DriftConfig(), *, progress: bool = False) -> DriftReport:
    """NVE energy conservation of ``potential`` (jax-md velocity Verlet) at each of ``config.timesteps_fs``.

    ``atoms`` is the MD cell (see :func:`md_supercell`). It is thermalised once by Langevin
    NVT (``thermalise_ps``; 0: the input's momenta, else Maxwell–Boltzmann at
    ``temperature_K``); every NVE run starts from that same state and lasts
    ``duration_ps``. Each run's drift is the slope of a linear fit of E_tot(t)/N,
    classified by :func:`classify_drift`.
    """
    from mlpjax.md import MDConfig, simulate

    n = len(atoms)
    start = _start(potential, atoms, temperature_K=config.temperature_K, thermalise_ps=config.thermalise_ps,
                   timestep_fs=config.thermalise_timestep_fs, friction_per_ps=config.friction_per_ps, seed=config.seed,
                   dtype=config.dtype, progress=progress)
    runs = []
    dtype_name = None
    for dt in config.timesteps_fs:
        log_every = max(1, int(round(config.log_interval_fs / dt)))
        steps = int(np.ceil(max(1, round(config.duration_ps * 1000.0 / dt)) / log_every) * log_every)
        cfg = MDConfig(ensemble="nve", temperature_K=config.temperature_K, timestep_fs=float(dt), steps=steps, log_every=log_every,
                       chunk_steps=max(log_every, min(steps, 1000)), initial_velocities="atoms", dtype=config.dtype, seed=config.seed)
        dtype_name = np.dtype(cfg.resolved_dtype()).name
        res = simulate(potential, start, cfg, progress=progress)
        th = res.thermo
        stats = drift_statistics(th["time_ps"], th["E_tot_eV"], n)
        runs.append(DriftRun(
            timestep_fs=float(dt), steps=steps, time_ps=np.asarray(th["time_ps"], np.float64),
            e_tot_eV_per_atom=np.asarray(th["E_tot_eV"], np.float64) / n, mean_temperature_K=float(np.mean(th["T_K"])),
            steps_per_s=float(res.timings["steps_per_s"]), **stats,
        ))
    dts = np.array([r.timestep_fs for r in runs])
    fl = np.array([r.fluctuation_meV_per_atom for r in runs])
    ok = fl > 0
    exponent = float(np.polyfit(np.log(dts[ok]), np.log(fl[ok]), 1)[0]) if ok.sum() >= 2 else float("nan")
    return DriftReport(runs=tuple(runs), n_atoms=n, temperature_K=float(config.temperature_K), dtype=str(dtype_name),
                       fluctuation_exponent=exponent, reference_timestep_fs=float(config.reference_timestep_fs))


# ------------------------------------------------------------------------- VDOS
class VDOS(NamedTuple):
    frequency_THz: np.ndarray  # [n_freq] THz, ν ≥ 0
    dos: np.ndarray  # [n_freq] 1/THz, normalised so that ∫ dos dν = 1
    peak_THz: float  # highest maximum at ν > 0 (nan if none)
    mean_frequency_THz: float  # ∫ ν dos dν
    temperature_K: float  # mean kinetic temperature of the run
    n_frames: int


def vdos_from_velocities(velocities, masses, sample_dt_fs: float, *, max_lag_ps: float | None = None, temperature_K: float = float("nan")) -> VDOS:
    """VDOS from velocities [T, N, 3] sampled every ``sample_dt_fs``: the mass-weighted, normalised
    VACF (:func:`mlpjax.analysis.vacf`, every frame an origin) Hann-windowed and cosine-transformed
    (:func:`mlpjax.analysis.vibrational_spectrum`), clipped at 0 and normalised to unit area."""
    from mlpjax.analysis import spectrum_peak, vacf, vibrational_spectrum

    v = np.asarray(velocities, np.float64)
    max_lag = None if max_lag_ps is None else min(v.shape[0] - 1, int(round(max_lag_ps * 1000.0 / sample_dt_fs)))
    c = vacf(v, masses=np.asarray(masses, np.float64), normalize=True, max_lag=max_lag)
    spec = vibrational_spectrum(c, sample_dt_fs)
    nu = spec.frequency_THz
    g = np.clip(spec.intensity, 0.0, None)
    area = float(np.trapezoid(g, nu))
    g = g / area if area > 0 else g
    peak = spectrum_peak(spec)
    return VDOS(frequency_THz=nu, dos=g, peak_THz=float("nan") if peak is None else float(peak),
                mean_frequency_THz=float(np.trapezoid(nu * g, nu)), temperature_K=float(temperature_K), n_frames=int(v.shape[0]))


def vdos_overlap(a: VDOS, b: VDOS) -> float:
    """∫ min(g_a, g_b) dν on a common grid: 1 for identical spectra, 0 for disjoint ones."""
    nu_max = min(a.frequency_THz[-1], b.frequency_THz[-1])
    nu = np.linspace(0.0, nu_max, 4000)
    ga = np.interp(nu, a.frequency_THz, a.dos)
    gb = np.interp(nu, b.frequency_THz, b.dos)
    return float(np.trapezoid(np.minimum(ga, gb), nu))


def vibrational_dos(potential, atoms, config: VDOSConfig = VDOSConfig(), *, progress: bool = False) -> VDOS:
    """VDOS of ``potential`` from an NVE run in jax-md (after Langevin thermalisation)."""
    import tempfile

    import ase.io

    from mlpjax.md import MDConfig, simulate

    start = _start(potential, atoms, temperature_K=config.temperature_K, thermalise_ps=config.thermalise_ps,
                   timestep_fs=config.timestep_fs, friction_per_ps=config.friction_per_ps, seed=config.seed,
                   dtype=config.dtype, progress=progress)
    every = max(1, int(round(config.sample_every_fs / config.timestep_fs)))
    steps = int(np.ceil(max(1, round(config.duration_ps * 1000.0 / config.timestep_fs)) / every) * every)
    cfg = MDConfig(ensemble="nve", temperature_K=config.temperature_K, timestep_fs=config.timestep_fs, steps=steps,
                   log_every=every, traj_every=every, chunk_steps=max(every, min(steps, 1000)), initial_velocities="atoms",
                   dtype=config.dtype, traj_forces=False, seed=config.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "nve.extxyz")
        res = simulate(potential, start, cfg, trajectory=path, progress=progress)
        frames = ase.io.read(path, ":")
    v = np.stack([f.get_velocities() for f in frames])
    return vdos_from_velocities(v, start.get_masses(), every * config.timestep_fs, max_lag_ps=config.max_lag_ps,
                                temperature_K=float(np.mean(res.thermo["T_K"])))


def reference_vibrational_dos(calculator, atoms, config: VDOSConfig = VDOSConfig()) -> VDOS:
    """VDOS of a reference ASE calculator, the same protocol as :func:`vibrational_dos` in ASE MD
    (Langevin thermalisation, then velocity Verlet). Costs ~(thermalise + duration)/timestep force calls."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.verlet import VelocityVerlet

    a = _initial_velocities(atoms, config.temperature_K, config.seed)
    a.calc = calculator
    dt = config.timestep_fs * units.fs
    rng = np.random.default_rng(config.seed)
    n_therm = int(round(config.thermalise_ps * 1000.0 / config.timestep_fs))
    if n_therm:
        Langevin(a, dt, temperature_K=config.temperature_K, friction=config.friction_per_ps / (1000.0 * units.fs),
                 fixcm=False, rng=rng).run(n_therm)
        _remove_com_momentum(a)
    every = max(1, int(round(config.sample_every_fs / config.timestep_fs)))
    steps = int(np.ceil(max(1, round(config.duration_ps * 1000.0 / config.timestep_fs)) / every) * every)
    vel, temps = [a.get_velocities().copy()], [a.get_temperature()]
    dyn = VelocityVerlet(a, dt)

    def grab():
        vel.append(a.get_velocities().copy())
        temps.append(a.get_temperature())

    dyn.attach(grab, interval=every)
    dyn.run(steps)
    return vdos_from_velocities(np.stack(vel[: steps // every + 1]), a.get_masses(), every * config.timestep_fs,
                                max_lag_ps=config.max_lag_ps, temperature_K=float(np.mean(temps)))


# ------------------------------------------------------------------------- extrapolation
def _labelled(atoms, calculator, *, source: str, frame: int) -> Configuration:
    b = atoms.copy()
    b.calc = calculator
    c = Configuration.from_atoms(b, source=source, frame=frame)
    c.energy = float(b.get_potential_energy())  # eV
    c.forces = np.asarray(b.get_forces(), np.float64)  # [n, 3] eV/Å
    if np.all(b.pbc):
        c.stress = np.asarray(b.get_stress(voigt=False), np.float64)  # [3, 3] eV/Å^3
    return c


def reference_samples(calculator, atoms, config: ExtrapolationConfig = ExtrapolationConfig()) -> tuple[list, list]:
    """Samples labelled by ``calculator`` along the temperature and strain axes (see
    :class:`ExtrapolationConfig`). Returns (configurations, axis records) where each record is
    ``{"axis": "temperature", "temperature_K": T}`` or ``{"axis": "strain", "volume_strain": x}``."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import thermalize_momenta

    rng = np.random.default_rng(config.seed)
    configs, axes = [], []
    for T in config.temperatures_K:
        a = atoms.copy()
        a.calc = calculator
        thermalize_momenta(a, 2.0 * T, rng=rng)  # 2·T: equipartition from the lattice sites
        _remove_com_momentum(a)
        dyn = Langevin(a, config.md_timestep_fs * units.fs, temperature_K=T,
                       friction=config.friction_per_ps / (1000.0 * units.fs), fixcm=False, rng=rng)
        dyn.run(config.equilibration_steps)
        for k in range(config.frames_per_temperature):
            dyn.run(config.frame_stride)
            configs.append(_labelled(a, calculator, source=f"reference-md:{T:g}K", frame=k))
            axes.append({"axis": "temperature", "temperature_K": float(T)})
    for x in config.volume_strains:
        for k in range(config.frames_per_strain):
            a = _scaled(atoms, 1.0 + x)
            a.positions += rng.normal(0.0, config.strain_rattle_A, a.positions.shape)
            configs.append(_labelled(a, calculator, source=f"volume-strain:{x:+.3f}", frame=k))
            axes.append({"axis": "strain", "volume_strain": float(x)})
    return configs, axes


def _group_errors(pred: dict, ref: dict, sel: np.ndarray) -> dict:
    """Errors of the structures ``sel`` ([n_structures] bool) of predictions / reference arrays."""
    n = ref["n_atoms"].astype(np.float64)
    de = (pred["energy"] - ref["energy"]) / n
    atom_struct = np.repeat(np.arange(len(n)), ref["n_atoms"])
    fm = sel[atom_struct] & ref["has_forces"]
    df = (np.asarray(pred["forces"]).reshape(-1, 3)[fm] - ref["forces"][fm]).ravel()
    out = {
        "n_structures": int(sel.sum()),
        "energy_mae_meV_per_atom": 1e3 * float(np.mean(np.abs(de[sel]))) if sel.any() else float("nan"),
        "energy_mean_error_meV_per_atom": 1e3 * float(np.mean(de[sel])) if sel.any() else float("nan"),
        "force_mae_meV_per_A": 1e3 * float(np.mean(np.abs(df))) if df.size else float("nan"),
        "force_rmse_meV_per_A": 1e3 * float(np.sqrt(np.mean(df**2))) if df.size else float("nan"),
    }
    s = sel & ref["has_stress"]
    if s.any():
        from ase.units import GPa

        p_pred = -np.trace(np.asarray(pred["stress"])[s], axis1=1, axis2=2) / 3.0
        p_ref = -np.trace(ref["stress"][s], axis1=1, axis2=2) / 3.0
        out["pressure_mae_GPa"] = float(np.mean(np.abs(p_pred - p_ref)) / GPa)
    return out


def errors_by_energy(predictions: dict, configs: Sequence[Configuration], *, n_bins: int = 6, e_min_per_atom: float | None = None,
                     select=None) -> list[dict]:
    """Errors binned by the reference per-atom energy above ``e_min_per_atom`` (default: the lowest
    in ``configs``), eV/atom; equal-count bins. Each row: ``e_lo_eV_per_atom``, ``e_hi_eV_per_atom``,
    ``e_mid_eV_per_atom`` (median) and the keys of the group errors."""
    ref = reference_arrays(configs)
    n = ref["n_atoms"].astype(np.float64)
    e = ref["energy"] / n
    base = float(np.min(e)) if e_min_per_atom is None else float(e_min_per_atom)
    x = e - base
    sel_all = np.ones(len(x), bool) if select is None else np.asarray(select, bool)
    xs = np.sort(x[sel_all])
    n_bins = max(1, min(int(n_bins), xs.size))
    edges = np.quantile(xs, np.linspace(0.0, 1.0, n_bins + 1))
    rows = []
    for b in range(n_bins):
        lo, hi = edges[b], edges[b + 1]
        sel = sel_all & (x >= lo) & ((x <= hi) if b == n_bins - 1 else (x < hi))
        if not sel.any():
            continue
        rows.append({"e_lo_eV_per_atom": float(lo), "e_hi_eV_per_atom": float(hi), "e_mid_eV_per_atom": float(np.median(x[sel])),
                     **_group_errors(predictions, ref, sel)})
    return rows


def training_ranges(training_configs: Sequence[Configuration], *, e_min_per_atom: float | None = None, v0_per_atom: float | None = None) -> dict:
    """Where the training data lie on the extrapolation axes: per-atom energy above
    ``e_min_per_atom`` (eV/atom) and, for periodic structures, volume strain relative to
    ``v0_per_atom`` (Å^3/atom)."""
    energies = [c.energy / c.n_atoms for c in training_configs if c.energy is not None]
    out: dict = {"n_structures": len(list(training_configs))}
    if energies:
        base = min(energies) if e_min_per_atom is None else e_min_per_atom
        out["energy_above_min_eV_per_atom"] = [float(min(energies) - base), float(max(energies) - base)]
    vols = [abs(np.linalg.det(np.asarray(c.cell))) / c.n_atoms for c in training_configs if np.all(c.pbc)]
    if vols and v0_per_atom:
        out["volume_strain"] = [float(min(vols) / v0_per_atom - 1.0), float(max(vols) / v0_per_atom - 1.0)]
    return out


def extrapolation_test(potential, calculator, atoms, config: ExtrapolationConfig = ExtrapolationConfig(), *,
                       e_min_per_atom: float | None = None, training_configs: Sequence[Configuration] | None = None,
                       v0_per_atom: float | None = None, batch_size: int = 16, samples: tuple | None = None) -> dict:
    """Errors of ``potential`` against ``calculator`` along the temperature, volume-strain and
    per-atom-energy axes (:class:`ExtrapolationConfig`).

    ``atoms``: the cell to sample (at the reference's equilibrium volume). ``e_min_per_atom``:
    the reference crystal's energy at equilibrium (eV/atom; default the lowest sample).
    ``samples``: (configurations, axis records) from :func:`reference_samples`, to reuse.
    Returns ``{"temperature": rows, "strain": rows, "energy": rows, "overall": metrics,
    "training": ranges, "samples": configs, "axes": records, "predictions": arrays}``.
    """
    configs, axes = samples if samples is not None else reference_samples(calculator, atoms, config)
    pred = predict_dataset(potential, configs, batch_size=batch_size)
    ref = reference_arrays(configs)
    kind = np.array([a["axis"] for a in axes])
    temp_rows = []
    for T in config.temperatures_K:
        sel = np.array([a.get("temperature_K") == float(T) for a in axes]) & (kind == "temperature")
        temp_rows.append({"temperature_K": float(T), **_group_errors(pred, ref, sel)})
    strain_rows = []
    for x in config.volume_strains:
        sel = np.array([a.get("volume_strain") == float(x) for a in axes]) & (kind == "strain")
        strain_rows.append({"volume_strain": float(x), **_group_errors(pred, ref, sel)})
    energy_rows = errors_by_energy(pred, configs, n_bins=config.n_energy_bins, e_min_per_atom=e_min_per_atom)
    out = {
        "temperature": temp_rows,
        "strain": strain_rows,
        "energy": energy_rows,
        "overall": metrics_from_predictions(pred, configs),
        "e_min_per_atom": e_min_per_atom,
        "training": training_ranges(training_configs, e_min_per_atom=e_min_per_atom, v0_per_atom=v0_per_atom) if training_configs else None,
        "samples": configs,
        "axes": axes,
        "predictions": pred,
    }
    return out


# ------------------------------------------------------------------------- report
def reference_calculator(name: str, symbols=()):
    """An ASE calculator by name (``"emt"``); checks that it knows ``symbols``."""
    if str(name).lower() != "emt":
        raise ValueError(f"unknown reference calculator {name!r}: use 'emt' or a labelled data file")
    from ase.calculators.emt import EMT, parameters

    missing = sorted(set(symbols) - set(parameters))
    if missing:
        raise ValueError(f"ASE's EMT has no parameters for {', '.join(missing)} (it knows {', '.join(parameters)}): "
                         "validate against a labelled data file instead (--reference DATA.xyz)")
    return EMT()


def _rel(model, ref):
    if model is None or ref is None or not np.isfinite(ref) or ref == 0 or not np.isfinite(model):
        return float("nan")
    return float((model - ref) / abs(ref))


def acceptance_checks(sections: dict) -> list[dict]:
    """The acceptance checks of issue 5 that the computed sections allow: lattice constant
    (:data:`LATTICE_CONSTANT_REL_TOL`), bulk modulus (:data:`BULK_MODULUS_REL_TOL`), C11/C12/C44
    (:data:`ELASTIC_CONSTANT_REL_TOL`) against the reference, and the NVE drift at the reference
    timestep below :data:`DRIFT_GOOD_MEV_PER_ATOM_PS`."""
    checks = []

    def rel_check(name, unit, model, ref, tol):
        r = _rel(model, ref)
        checks.append({"name": name, "unit": unit, "model": model, "reference": ref, "rel_error": r, "tolerance": tol,
                       "passed": bool(np.isfinite(r) and abs(r) <= tol)})

    eos = sections.get("eos") or {}
    if eos.get("model") is not None and eos.get("reference") is not None:
        m, r = eos["model"], eos["reference"]
        rel_check("lattice constant a0", "Å", m.lattice_constant_A, r.lattice_constant_A, LATTICE_CONSTANT_REL_TOL)
        rel_check("bulk modulus B (E(V) fit)", "GPa", m.bulk_modulus_GPa, r.bulk_modulus_GPa, BULK_MODULUS_REL_TOL)
    el = sections.get("elastic") or {}
    if el.get("model") is not None and el.get("reference") is not None and el["reference"].cubic:
        for key in ("C11", "C12", "C44"):
            rel_check(key, "GPa", getattr(el["model"], f"{key}_GPa"), getattr(el["reference"], f"{key}_GPa"), ELASTIC_CONSTANT_REL_TOL)
    drift = sections.get("drift")
    if drift is not None and drift.reference is not None:
        r = drift.reference
        checks.append({"name": f"NVE drift at {r.timestep_fs:g} fs ({drift.dtype})", "unit": "meV/atom/ps",
                       "model": r.drift_meV_per_atom_per_ps, "reference": None, "rel_error": None,
                       "tolerance": DRIFT_GOOD_MEV_PER_ATOM_PS, "passed": r.status == "good"})
    return checks


def _to_jsonable(x):
    if isinstance(x, dict):
        return {str(k): _to_jsonable(v) for k, v in x.items()}
    if hasattr(x, "_asdict"):
        return _to_jsonable(x._asdict())
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _to_jsonable(dataclasses.asdict(x))
    if isinstance(x, (list, tuple)):
        return [_to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _to_jsonable(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer, int)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else None
    return x


def validate_report(potential, reference, output_dir, *, structure=None, config: ReportConfig | None = None,
                    training_configs: Sequence[Configuration] | None = None, model_name: str | None = None,
                    units: str | None = None, progress: bool = True, strict: bool = False) -> dict:
    """Validate ``potential`` and write ``output_dir/report.md``, ``report.json`` and PNG plots.

    Args:
      reference: an ASE calculator (e.g. ``EMT()``; every section runs, compared against it)
        or labelled data (a sequence of :class:`Configuration` or a file path): parity and
        errors on it, errors binned by per-atom energy, and the potential's own EOS, elastic
        constants, phonons, drift and VDOS (nothing needs a reference calculator there).
      structure: ``"fcc-Cu[:a]"``, a structure file or ase.Atoms; default: the element's cubic
        reference state (:func:`structure_for`). Elastic constants and the EOS use this cell
        (rescaled to each calculator's own equilibrium volume); MD and the extrapolation
        samples use it repeated by :func:`md_supercell`.
      training_configs: optional training data; marks the training range on the extrapolation axes.
      units: units of a reference data file (default: those the potential was trained with).
      strict: re-raise the first error instead of recording it in the report and going on.
    Returns the report dict (also ``report.json``, with NaN written as null), with
    ``"sections"`` holding the result objects, ``"checks"`` (:func:`acceptance_checks`),
    ``"errors"`` (section → message) and ``"files"``.
    """
    config = config or ReportConfig()
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    t_start = time.perf_counter()

    def say(msg):
        if progress:
            print(f"[mlpjax validate {time.perf_counter() - t_start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    from ase.data import chemical_symbols

    ref_calc, ref_configs, ref_desc = None, None, None
    if isinstance(reference, (str, os.PathLike)) and not os.path.exists(os.fspath(reference)):
        ref_calc = reference_calculator(reference, [chemical_symbols[z] for z in potential.species])
        ref_desc = {"kind": "calculator", "name": str(reference).lower()}
    elif isinstance(reference, (str, os.PathLike)):
        from mlpjax import data as _data

        ref_configs = _data.read(reference, units=units or potential.metadata.get("units", "eV"))
        ref_desc = {"kind": "data", "path": os.path.abspath(os.fspath(reference)), "n_structures": len(ref_configs)}
    elif isinstance(reference, (list, tuple)):
        ref_configs = list(reference)
        ref_desc = {"kind": "data", "path": None, "n_structures": len(ref_configs)}
    else:
        ref_calc = reference
        ref_desc = {"kind": "calculator", "name": type(reference).__name__}

    atoms = structure_for(potential, structure)
    sections: dict = {}
    errors: dict = {}
    timings: dict = {}
    want = set(config.sections)

    def run(key, fn):
        t0 = time.perf_counter()
        say(f"{key} ...")
        try:
            out = fn()
        except Exception as err:
            if strict:
                raise
            errors[key] = f"{type(err).__name__}: {err}"
            say(f"{key} failed: {errors[key]}")
            out = None
        timings[key] = time.perf_counter() - t0
        return out

    model_calc = potential.calculator()

    # equation of state → each calculator's own equilibrium cell
    if want & {"eos", "elastic", "phonons", "drift", "vdos", "extrapolation"}:
        eos = {"model": run("eos.model", lambda: equation_of_state(model_calc, atoms, config.eos))}
        eos["reference"] = run("eos.reference", lambda: equation_of_state(ref_calc, atoms, config.eos)) if ref_calc is not None else None
        sections["eos"] = eos
    eos = sections.get("eos", {})
    atoms_model = _scaled(atoms, eos["model"].volume_scale) if eos.get("model") is not None else atoms
    atoms_ref = _scaled(atoms, eos["reference"].volume_scale) if eos.get("reference") is not None else atoms_model
    if "eos" not in want:
        sections.pop("eos", None)

    if "elastic" in want:
        sections["elastic"] = {
            "model": run("elastic.model", lambda: elastic_constants(model_calc, atoms_model, config.elastic)),
            "reference": run("elastic.reference", lambda: elastic_constants(ref_calc, atoms_ref, config.elastic)) if ref_calc is not None else None,
        }
    if "phonons" in want:
        sections["phonons"] = {
            "model": run("phonons.model", lambda: gamma_phonons(model_calc, atoms_model, config.phonons)),
            "reference": run("phonons.reference", lambda: gamma_phonons(ref_calc, atoms_ref, config.phonons)) if ref_calc is not None else None,
        }

    md_model = md_supercell(atoms_model, potential.cutoff, skin=config.md_skin, min_atoms=config.md_min_atoms)
    md_ref = atoms_ref.repeat(tuple(int(round(x)) for x in md_model.cell.lengths() / atoms_model.cell.lengths()))
    dcfg = config.drift
    start = None
    if want & {"drift", "vdos"}:
        start = run("thermalise", lambda: _start(potential, md_model, temperature_K=dcfg.temperature_K, thermalise_ps=dcfg.thermalise_ps,
                                                  timestep_fs=dcfg.thermalise_timestep_fs, friction_per_ps=dcfg.friction_per_ps,
                                                  seed=dcfg.seed, dtype=dcfg.dtype, progress=False))
    if "drift" in want and start is not None:
        sections["drift"] = run("drift", lambda: energy_drift(potential, start, dataclasses.replace(dcfg, thermalise_ps=0.0)))
    if "vdos" in want:
        vcfg = config.vdos
        if start is not None and vcfg.temperature_K == dcfg.temperature_K:
            model_vdos = run("vdos.model", lambda: vibrational_dos(potential, start, dataclasses.replace(vcfg, thermalise_ps=0.0)))
        else:
            model_vdos = run("vdos.model", lambda: vibrational_dos(potential, md_model, vcfg))
        ref_vdos = run("vdos.reference", lambda: reference_vibrational_dos(ref_calc, md_ref, vcfg)) if ref_calc is not None else None
        sections["vdos"] = {"model": model_vdos, "reference": ref_vdos,
                            "overlap": vdos_overlap(model_vdos, ref_vdos) if model_vdos is not None and ref_vdos is not None else None}

    # errors on reference samples / data
    samples = None
    if ref_calc is not None and want & {"parity", "extrapolation"}:
        samples = run("extrapolation.samples", lambda: reference_samples(ref_calc, md_ref, config.extrapolation))
        if samples is not None:
            e_min = eos["reference"].e0 if eos.get("reference") is not None else None
            v0 = eos["reference"].v0 if eos.get("reference") is not None else None
            sections["extrapolation"] = run("extrapolation", lambda: extrapolation_test(
                potential, ref_calc, md_ref, config.extrapolation, e_min_per_atom=e_min, training_configs=training_configs,
                v0_per_atom=v0, batch_size=config.batch_size, samples=samples))
    parity_configs = parity_pred = None
    if ref_configs is not None:
        parity_configs = ref_configs
        parity_pred = run("parity", lambda: predict_dataset(potential, ref_configs, batch_size=config.batch_size))
        if parity_pred is not None:
            rows = run("extrapolation", lambda: errors_by_energy(parity_pred, ref_configs, n_bins=config.extrapolation.n_energy_bins))
            e_min = min(c.energy / c.n_atoms for c in ref_configs)
            sections["extrapolation"] = {
                "temperature": [], "strain": [], "energy": rows or [], "e_min_per_atom": e_min,
                "training": training_ranges(training_configs, e_min_per_atom=e_min) if training_configs else None,
            }
    elif sections.get("extrapolation") is not None:
        parity_configs, parity_pred = sections["extrapolation"]["samples"], sections["extrapolation"]["predictions"]
    if "parity" in want and parity_pred is not None:
        sections["parity"] = metrics_from_predictions(parity_pred, parity_configs)
    if "extrapolation" not in want:
        sections.pop("extrapolation", None)

    checks = acceptance_checks(sections)
    report = {
        "model": {"name": model_name, "architecture": potential.model, "cutoff_A": potential.cutoff,
                  "species": [chemical_symbols[z] for z in potential.species], "model_config": dataclasses.asdict(potential.model_config)},
        "reference": ref_desc,
        "structure": {"formula": atoms.get_chemical_formula(), "n_atoms": len(atoms), "cell_A": atoms.cell.array,
                      "spec": structure if isinstance(structure, str) else None, "md_n_atoms": len(md_model)},
        "config": config,
        "thresholds": {"drift_good_meV_per_atom_per_ps": DRIFT_GOOD_MEV_PER_ATOM_PS, "drift_fail_meV_per_atom_per_ps": DRIFT_FAIL_MEV_PER_ATOM_PS,
                       "lattice_constant_rel": LATTICE_CONSTANT_REL_TOL, "bulk_modulus_rel": BULK_MODULUS_REL_TOL,
                       "elastic_constant_rel": ELASTIC_CONSTANT_REL_TOL},
        "sections": sections,
        "checks": checks,
        "errors": errors,
        "timings_s": timings,
        "files": {},
    }
    say("plots ...")
    files = report["files"]
    plotters = [
        ("parity", "parity.png", lambda p: parity_plot(parity_pred, parity_configs, p, title="potential vs reference")),
        ("errors", "errors.png", lambda p: _plot_error_histograms(parity_pred, parity_configs, p)),
        ("eos", "eos.png", lambda p: _plot_eos(sections["eos"], p)),
        ("elastic", "elastic.png", lambda p: _plot_elastic(sections["elastic"], p)),
        ("drift", "drift.png", lambda p: _plot_drift(sections["drift"], p)),
        ("extrapolation", "extrapolation.png", lambda p: _plot_extrapolation(sections["extrapolation"], p)),
        ("vibrations", "vibrations.png", lambda p: _plot_vibrations(sections.get("vdos"), sections.get("phonons"), p)),
    ]
    available = {
        "parity": parity_pred is not None and "parity" in want, "errors": parity_pred is not None and "parity" in want,
        "eos": "eos" in sections and any(v is not None for v in sections["eos"].values()),
        "elastic": "elastic" in sections and any(v is not None for v in sections["elastic"].values()),
        "drift": sections.get("drift") is not None,
        "extrapolation": sections.get("extrapolation") is not None and bool(sections["extrapolation"].get("energy")),
        "vibrations": (sections.get("vdos") or {}).get("model") is not None or (sections.get("phonons") or {}).get("model") is not None,
    }
    for key, name, fn in plotters:
        if not available[key]:
            continue
        path = os.path.join(output_dir, name)
        try:
            fn(path)
            files[key] = name
        except Exception as err:
            if strict:
                raise
            errors[f"plot.{key}"] = f"{type(err).__name__}: {err}"
    timings["total"] = time.perf_counter() - t_start
    _write_report_files(report, output_dir)
    say(f"wrote {os.path.join(output_dir, 'report.md')} ({sum(c['passed'] for c in checks)}/{len(checks)} checks passed)")
    return report


def _json_report(report: dict) -> dict:
    out = dict(report)
    sec = dict(out["sections"])
    if sec.get("extrapolation") is not None:
        sec["extrapolation"] = {k: v for k, v in sec["extrapolation"].items() if k not in ("samples", "predictions", "axes")}
    if sec.get("vdos") is not None:  # curves: keep them, they are small (a few hundred points)
        pass
    out["sections"] = sec
    return _to_jsonable(out)


def _write_report_files(report: dict, output_dir: str) -> None:
    from mlpjax._io import atomic_write_bytes

    report["files"]["json"] = "report.json"
    report["files"]["markdown"] = "report.md"
    atomic_write_bytes(os.path.join(output_dir, "report.json"), (json.dumps(_json_report(report), indent=2) + "\n").encode())
    atomic_write_bytes(os.path.join(output_dir, "report.md"), report_markdown(report).encode())


def _f(x, spec=".4g"):
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    return format(x, spec) if isinstance(x, (int, float, np.floating, np.integer)) else str(x)


def _pct(x):
    return "—" if x is None or not np.isfinite(x) else f"{100 * x:+.2f} %"


def _table(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def report_markdown(report: dict) -> str:
    """The Markdown text of ``report.md`` for a :func:`validate_report` dict."""
    sec, files, errors = report["sections"], report["files"], report["errors"]
    ref = report["reference"]
    ref_name = ref.get("name") if ref["kind"] == "calculator" else (ref.get("path") or "labelled data")
    m = report["model"]
    out = [
        "# mlpjax validation report",
        "",
        f"- model: {m['name'] or '(in memory)'} — {m['architecture']}, cutoff {m['cutoff_A']:g} Å, species {', '.join(m['species'])}",
        f"- reference: {ref['kind']} `{ref_name}`" + (f" ({ref['n_structures']} structures)" if ref["kind"] == "data" else ""),
        f"- structure: {report['structure']['formula']} ({report['structure']['n_atoms']} atoms; MD cell {report['structure']['md_n_atoms']} atoms)",
        f"- wall time: {report['timings_s'].get('total', float('nan')):.0f} s",
        "",
    ]
    if report["checks"]:
        out += ["## Acceptance checks", ""]
        rows = []
        for c in report["checks"]:
            if c["rel_error"] is None:
                rows.append([c["name"], f"{_f(c['model'])} {c['unit']}", "—", f"|x| < {c['tolerance']:g} {c['unit']}", "PASS" if c["passed"] else "MISS"])
            else:
                rows.append([c["name"], f"{_f(c['model'])} {c['unit']}", f"{_f(c['reference'])} {c['unit']}",
                             f"{_pct(c['rel_error'])} (≤ {100 * c['tolerance']:g} %)", "PASS" if c["passed"] else "MISS"])
        out += [_table(["quantity", "potential", "reference", "error (tolerance)", ""], rows), ""]
    if errors:
        out += ["## Sections that failed", ""] + [f"- `{k}`: {v}" for k, v in errors.items()] + [""]
    if sec.get("parity") is not None:
        p = sec["parity"]
        what = "the reference samples (extrapolation set)" if ref["kind"] == "calculator" else "the reference data"
        out += [f"## Errors on {what}", "",
                _table(["structures", "atoms", "E MAE meV/atom", "E RMSE meV/atom", "F MAE meV/Å", "F RMSE meV/Å", "σ MAE meV/Å³"],
                       [[str(p["n_structures"]), str(p["n_atoms"]), _f(p["energy_mae_meV_per_atom"]), _f(p["energy_rmse_meV_per_atom"]),
                         _f(p["force_mae_meV_per_A"]), _f(p["force_rmse_meV_per_A"]), _f(p.get("stress_mae_meV_per_A3"))]]), ""]
        for key in ("parity", "errors"):
            if key in files:
                out += [f"![{key}]({files[key]})", ""]
    eos = sec.get("eos")
    if eos:
        fitted = eos.get("model") or eos.get("reference")
        out += ["## Equation of state", "", "E(V) under uniform scaling of the cell, fitted with ASE's `EquationOfState`"
                + (f" ({fitted.eos})." if fitted is not None else "."), ""]
        rows = []
        for label, key, unit in (("a0", "lattice_constant_A", "Å"), ("V0", "v0", "Å³/atom"), ("B", "bulk_modulus_GPa", "GPa"),
                                 ("B'", "bulk_modulus_derivative", ""), ("E0", "e0", "eV/atom")):
            mv = getattr(eos["model"], key) if eos.get("model") is not None else None
            rv = getattr(eos["reference"], key) if eos.get("reference") is not None else None
            rows.append([f"{label} ({unit})" if unit else label, _f(mv, ".5g"), _f(rv, ".5g"), _pct(_rel(mv, rv)) if key != "e0" else "—"])
        out += [_table(["", "potential", "reference", "rel. error"], rows), ""]
        if "eos" in files:
            out += [f"![EOS]({files['eos']})", ""]
    el = sec.get("elastic")
    if el:
        mo, re_ = el.get("model"), el.get("reference")
        relaxed = any(r is not None and r.relaxed_internal for r in (mo, re_))
        out += ["## Elastic constants", "",
                f"Stress–strain central differences (±{(mo or re_).strain:g} strain) at each calculator's own equilibrium volume; "
                + ("atomic positions were relaxed in strained cells (relaxed-ion constants)." if relaxed else
                   "no internal relaxation was needed (every atom is a centre of inversion, e.g. fcc)."), ""]
        rows = []
        for key in ("C11_GPa", "C12_GPa", "C44_GPa", "bulk_modulus_GPa"):
            mv = getattr(mo, key) if mo is not None else None
            rv = getattr(re_, key) if re_ is not None else None
            name = key.replace("_GPa", "").replace("bulk_modulus", "B = (C11+2C12)/3")
            rows.append([f"{name} (GPa)", _f(mv), _f(rv), _pct(_rel(mv, rv))])
        cauchy = [None if r is None else r.C12_GPa - r.C44_GPa for r in (mo, re_)]
        rows.append(["C12 − C44 (GPa, Cauchy pressure; 0 for pair potentials)", _f(cauchy[0]), _f(cauchy[1]), "—"])
        out += [_table(["", "potential", "reference", "rel. error"], rows), ""]
        for label, r in (("potential", mo), ("reference", re_)):
            if r is not None and not r.cubic:
                out += [f"{label}: C is not cubic (max deviation {100 * r.cubic_deviation:.1f} % of C11); full matrix in report.json.", ""]
        if "elastic" in files:
            out += [f"![elastic]({files['elastic']})", ""]
    ph = sec.get("phonons")
    if ph and (ph.get("model") is not None or ph.get("reference") is not None):
        mo, re_ = ph.get("model"), ph.get("reference")
        any_ = mo or re_
        out += ["## Γ-point phonons", "", f"Finite differences on the {'×'.join(map(str, any_.supercell))} supercell ({any_.n_atoms} atoms).", ""]
        rows = []
        if mo is not None:
            rows.append(["potential", _f(float(mo.frequencies_THz.max())), str(mo.n_imaginary), "—"])
        if re_ is not None:
            rmse = float(np.sqrt(np.mean((mo.frequencies_THz - re_.frequencies_THz) ** 2))) if mo is not None and len(mo.frequencies_THz) == len(re_.frequencies_THz) else None
            rows.append(["reference", _f(float(re_.frequencies_THz.max())), str(re_.n_imaginary), _f(rmse)])
        out += [_table(["", "max ν (THz)", "imaginary modes", "RMS Δν vs potential (THz)"], rows), ""]
    dr = sec.get("drift")
    if dr is not None:
        out += ["## Energy conservation (NVE)", "",
                f"{dr.n_atoms} atoms, thermalised at {dr.temperature_K:g} K (Langevin), then NVE (velocity Verlet, {dr.dtype}) "
                f"from the same state at each timestep. Drift = slope of a linear fit of E_tot(t)/N. Warning levels: "
                f"< {DRIFT_GOOD_MEV_PER_ATOM_PS:g} meV/atom/ps good, {DRIFT_GOOD_MEV_PER_ATOM_PS:g}–{DRIFT_FAIL_MEV_PER_ATOM_PS:g} warn, "
                f"> {DRIFT_FAIL_MEV_PER_ATOM_PS:g} fail.", ""]
        rows = [[_f(r.timestep_fs), str(r.steps), f"{r.drift_eV_per_atom_per_ps:+.3e}", f"{r.drift_meV_per_atom_per_ps:+.4f}",
                 _f(r.fluctuation_meV_per_atom), _f(r.max_deviation_meV_per_atom), _f(r.mean_temperature_K, ".0f"), r.status.upper()]
                for r in dr.runs]
        out += [_table(["dt (fs)", "steps", "drift eV/atom/ps", "drift meV/atom/ps", "fluct. meV/atom", "max |ΔE| meV/atom", "⟨T⟩ K", "status"], rows), ""]
        out += [f"Fluctuation ∝ dt^{dr.fluctuation_exponent:.2f} (velocity Verlet on a smooth energy: ≈ 2).", ""]
        seen = set()
        for r in dr.runs:
            if r.status not in seen:
                seen.add(r.status)
                out.append(f"- {r.status.upper()} (e.g. dt = {r.timestep_fs:g} fs): {r.advice}")
        out.append("")
        if "drift" in files:
            out += [f"![drift]({files['drift']})", ""]
    ex = sec.get("extrapolation")
    if ex is not None:
        out += ["## Extrapolation", "", "Errors against the reference away from equilibrium" +
                (" (reference-calculator MD at each temperature at fixed volume; rattled cells at each volume strain; all samples binned by "
                 "reference energy per atom above the reference crystal at equilibrium)." if ex.get("temperature") else
                 " (the data binned by reference energy per atom above its lowest).")]
        tr = ex.get("training")
        if tr:
            rng = tr.get("energy_above_min_eV_per_atom")
            vs = tr.get("volume_strain")
            out.append(f"Training data: {tr['n_structures']} structures" + (f", E − E_min in [{rng[0]:.3f}, {rng[1]:.3f}] eV/atom" if rng else "")
                       + (f", volume strain in [{100 * vs[0]:+.1f} %, {100 * vs[1]:+.1f} %]" if vs else "") + ".")
        out.append("")
        if ex.get("temperature"):
            out += [_table(["T (K)", "n", "E MAE meV/atom", "E mean err meV/atom", "F MAE meV/Å", "F RMSE meV/Å"],
                           [[_f(r["temperature_K"], ".0f"), str(r["n_structures"]), _f(r["energy_mae_meV_per_atom"]), _f(r["energy_mean_error_meV_per_atom"]),
                             _f(r["force_mae_meV_per_A"]), _f(r["force_rmse_meV_per_A"])] for r in ex["temperature"]]), ""]
        if ex.get("strain"):
            out += [_table(["ΔV/V0", "n", "E MAE meV/atom", "E mean err meV/atom", "F RMSE meV/Å", "P MAE GPa"],
                           [[f"{100 * r['volume_strain']:+.0f} %", str(r["n_structures"]), _f(r["energy_mae_meV_per_atom"]), _f(r["energy_mean_error_meV_per_atom"]),
                             _f(r["force_rmse_meV_per_A"]), _f(r.get("pressure_mae_GPa"))] for r in ex["strain"]]), ""]
        if ex.get("energy"):
            out += [_table(["E − E_min (eV/atom)", "n", "E MAE meV/atom", "F RMSE meV/Å"],
                           [[f"{r['e_lo_eV_per_atom']:.3f} – {r['e_hi_eV_per_atom']:.3f}", str(r["n_structures"]), _f(r["energy_mae_meV_per_atom"]),
                             _f(r["force_rmse_meV_per_A"])] for r in ex["energy"]]), ""]
        if "extrapolation" in files:
            out += [f"![extrapolation]({files['extrapolation']})", ""]
    vd = sec.get("vdos")
    if vd and (vd.get("model") is not None or vd.get("reference") is not None):
        out += ["## Vibrational density of states", "",
                "Mass-weighted velocity autocorrelation of an NVE run (Hann window, cosine transform), normalised to unit area.", ""]
        rows = []
        for label in ("model", "reference"):
            v = vd.get(label)
            if v is not None:
                rows.append(["potential" if label == "model" else "reference", _f(v.peak_THz), _f(v.mean_frequency_THz), _f(v.temperature_K, ".0f"), str(v.n_frames)])
        out += [_table(["", "peak ν (THz)", "mean ν (THz)", "⟨T⟩ K", "frames"], rows), ""]
        if vd.get("overlap") is not None:
            out += [f"Overlap ∫ min(g_potential, g_reference) dν = {vd['overlap']:.3f} (1 = identical).", ""]
    if "vibrations" in files:
        out += [f"![vibrations]({files['vibrations']})", ""]
    out += ["## Timings", "", _table(["step", "s"], [[k, f"{v:.1f}"] for k, v in report["timings_s"].items()]), ""]
    return "\n".join(out)


# ------------------------------------------------------------------------- plots
def _save(fig, path) -> None:
    import io

    from mlpjax._io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(os.fspath(path), buf.getvalue())


def _figure(ncols, nrows=1, width=4.4, height=3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _plot_error_histograms(pred, configs, path):
    ref = reference_arrays(configs)
    n = ref["n_atoms"].astype(np.float64)
    de = 1e3 * (np.asarray(pred["energy"]) - ref["energy"]) / n
    fm = ref["has_forces"]
    df = 1e3 * (np.asarray(pred["forces"]).reshape(-1, 3)[fm] - ref["forces"][fm]).ravel()
    fig, ax = _figure(2)
    ax[0, 0].hist(de, bins=30, color="C0")
    ax[0, 0].set_xlabel("energy error (meV/atom)")
    ax[0, 0].set_ylabel("structures")
    ax[0, 1].hist(df, bins=60, color="C1", log=True)
    ax[0, 1].set_xlabel("force-component error (meV/Å)")
    ax[0, 1].set_ylabel("components")
    for a in ax[0]:
        a.axvline(0.0, color="k", lw=0.6)
    _save(fig, path)


def _plot_eos(eos, path):
    fig, ax = _figure(1, width=5.2)
    a = ax[0, 0]
    for label, key, color in (("potential", "model", "C0"), ("reference", "reference", "k")):
        r = eos.get(key)
        if r is None:
            continue
        a.plot(r.volumes, 1e3 * (r.energies - r.e0), "o", color=color, ms=4)
        a.plot(r.fit_volumes, 1e3 * (r.fit_energies - r.e0), "-", color=color,
               label=f"{label}: a0 {r.lattice_constant_A:.4f} Å, B {r.bulk_modulus_GPa:.1f} GPa")
    a.set_xlabel("volume (Å³/atom)")
    a.set_ylabel("E − E0 (meV/atom)")
    a.set_title("equation of state (each relative to its own minimum)")
    a.legend(fontsize=8)
    _save(fig, path)


def _plot_elastic(el, path):
    keys = ["C11_GPa", "C12_GPa", "C44_GPa", "bulk_modulus_GPa"]
    labels = ["C11", "C12", "C44", "B"]
    fig, ax = _figure(1, width=5.2)
    a = ax[0, 0]
    x = np.arange(len(keys))
    for k, (label, key, color) in enumerate((("potential", "model", "C0"), ("reference", "reference", "0.3"))):
        r = el.get(key)
        if r is None:
            continue
        vals = [getattr(r, q) for q in keys]
        a.bar(x + (k - 0.5) * 0.38, vals, width=0.38, color=color, label=label)
    a.set_xticks(x, labels)
    a.set_ylabel("GPa")
    a.set_title("elastic constants")
    a.legend(fontsize=8)
    _save(fig, path)


def _plot_drift(dr, path):
    fig, ax = _figure(2)
    a = ax[0, 0]
    for k, r in enumerate(dr.runs):
        a.plot(r.time_ps, 1e3 * (r.e_tot_eV_per_atom - r.e_tot_eV_per_atom[0]), color=f"C{k}", lw=1, label=f"{r.timestep_fs:g} fs")
    a.set_xlabel("time (ps)")
    a.set_ylabel("E_tot(t) − E_tot(0) (meV/atom)")
    a.set_title(f"NVE, {dr.n_atoms} atoms, {dr.dtype}")
    a.legend(fontsize=8)
    b = ax[0, 1]
    dts = np.array([r.timestep_fs for r in dr.runs])
    drift = np.abs([r.drift_meV_per_atom_per_ps for r in dr.runs])
    fl = np.array([r.fluctuation_meV_per_atom for r in dr.runs])
    tiny = 1e-12
    b.loglog(dts, np.maximum(drift, tiny), "o-", label="|drift| (meV/atom/ps)")
    b.loglog(dts, np.maximum(fl, tiny), "s--", label="fluctuation (meV/atom)")
    b.axhline(DRIFT_GOOD_MEV_PER_ATOM_PS, color="g", lw=0.8, ls=":", label=f"good < {DRIFT_GOOD_MEV_PER_ATOM_PS:g}")
    b.axhline(DRIFT_FAIL_MEV_PER_ATOM_PS, color="r", lw=0.8, ls=":", label=f"fail > {DRIFT_FAIL_MEV_PER_ATOM_PS:g}")
    b.set_xlabel("timestep (fs)")
    b.set_xticks(dts, [f"{d:g}" for d in dts])
    b.minorticks_off()
    b.set_title("drift and fluctuation vs timestep")
    b.legend(fontsize=7)
    _save(fig, path)


def _plot_extrapolation(ex, path):
    axes_def = []
    if ex.get("temperature"):
        axes_def.append(("temperature", "temperature_K", "temperature (K)", 1.0, None))
    if ex.get("strain"):
        tr = (ex.get("training") or {}).get("volume_strain")
        axes_def.append(("strain", "volume_strain", "volume strain ΔV/V0 (%)", 100.0, None if tr is None else [100 * tr[0], 100 * tr[1]]))
    tr_e = (ex.get("training") or {}).get("energy_above_min_eV_per_atom")
    axes_def.append(("energy", "e_mid_eV_per_atom", "E_ref − E_min (meV/atom)", 1000.0, None if tr_e is None else [1e3 * tr_e[0], 1e3 * tr_e[1]]))
    fig, ax = _figure(len(axes_def), 2, width=4.0, height=3.0)
    for j, (key, xkey, xlabel, scale, band) in enumerate(axes_def):
        rows = [r for r in ex[key] if r["n_structures"] > 0]
        x = np.array([r[xkey] for r in rows]) * scale
        for i, (ykey, ylabel) in enumerate((("energy_mae_meV_per_atom", "energy MAE (meV/atom)"), ("force_rmse_meV_per_A", "force RMSE (meV/Å)"))):
            a = ax[i, j]
            a.plot(x, [r[ykey] for r in rows], "o-", color=f"C{i}")
            if band is not None:
                a.axvspan(band[0], band[1], color="0.85", zorder=0, label="training data")
                a.legend(fontsize=7)
            a.set_xlabel(xlabel)
            a.set_ylabel(ylabel)
            a.set_ylim(bottom=0)
    _save(fig, path)


def _plot_vibrations(vd, ph, path):
    panels = []
    if vd and (vd.get("model") is not None or vd.get("reference") is not None):
        panels.append("vdos")
    if ph and ph.get("model") is not None:
        panels.append("phonons")
    fig, ax = _figure(len(panels))
    for j, kind in enumerate(panels):
        a = ax[0, j]
        if kind == "vdos":
            top = 0.0
            for label, key, color in (("potential", "model", "C0"), ("reference", "reference", "k")):
                v = vd.get(key)
                if v is None:
                    continue
                a.plot(v.frequency_THz, v.dos, color=color, label=f"{label} ({v.temperature_K:.0f} K)")
                top = max(top, float(v.frequency_THz[np.searchsorted(np.cumsum(v.dos) / max(np.sum(v.dos), 1e-30), 0.995)]))
            a.set_xlim(0, 1.3 * top if top > 0 else None)
            a.set_xlabel("frequency (THz)")
            a.set_ylabel("VDOS (1/THz)")
            a.set_title("vibrational density of states (VACF)")
            a.legend(fontsize=8)
        else:
            mo, re_ = ph.get("model"), ph.get("reference")
            if re_ is not None and len(re_.frequencies_THz) == len(mo.frequencies_THz):
                a.plot(re_.frequencies_THz, mo.frequencies_THz, "o", ms=4)
                lo, hi = min(re_.frequencies_THz.min(), mo.frequencies_THz.min()), max(re_.frequencies_THz.max(), mo.frequencies_THz.max())
                a.plot([lo, hi], [lo, hi], "k--", lw=0.8)
                a.set_xlabel("reference ν (THz)")
                a.set_ylabel("potential ν (THz)")
            else:
                a.plot(mo.frequencies_THz, "o", ms=4)
                a.set_xlabel("mode")
                a.set_ylabel("ν (THz)")
            a.set_title(f"Γ phonons of the {'×'.join(map(str, mo.supercell))} supercell")
    _save(fig, path)
