"""Extrapolation: errors of a potential against a reference calculator as the structures move
away from the training distribution — along temperature, volume strain and per-atom energy.

:func:`reference_samples` labels structures with the reference (ASE Langevin MD at each
temperature, rattled cells at each volume strain); :func:`extrapolation_test` predicts them and
tabulates the errors per axis; :func:`errors_by_energy` bins any labelled set by its reference
energy per atom. Units: eV, Å, fs; pressures in GPa (constants from :mod:`mlpjax.units`).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from mlpjax.data import Configuration
from mlpjax.units import FS, GPA_PER_EV_A3, PS
from mlpjax.validate.dynamics import _remove_com_momentum
from mlpjax.validate.metrics import metrics_from_predictions, predict_dataset, reference_arrays
from mlpjax.validate.structures import _scaled

__all__ = ["ExtrapolationConfig", "reference_samples", "errors_by_energy", "training_ranges", "extrapolation_test"]


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
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import thermalize_momenta

    rng = np.random.default_rng(config.seed)
    configs, axes = [], []
    for T in config.temperatures_K:
        a = atoms.copy()
        a.calc = calculator
        thermalize_momenta(a, 2.0 * T, rng=rng)  # 2·T: equipartition from the lattice sites
        _remove_com_momentum(a)
        # ASE time units from mlpjax's CODATA-2018 FS/PS: they differ from ase.units (CODATA 2014) by < 1e-7
        dyn = Langevin(a, config.md_timestep_fs * FS, temperature_K=T, friction=config.friction_per_ps / PS,
                       fixcm=False, rng=rng)
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
        p_pred = -np.trace(np.asarray(pred["stress"])[s], axis1=1, axis2=2) / 3.0
        p_ref = -np.trace(ref["stress"][s], axis1=1, axis2=2) / 3.0
        out["pressure_mae_GPa"] = float(np.mean(np.abs(p_pred - p_ref)) * GPA_PER_EV_A3)
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
