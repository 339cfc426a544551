"""Quality and calibration of predicted uncertainties (any :class:`mlpjax.uncertainty.UncertainPrediction`).

Every method (full or shallow ensemble, GAP's predictive variance) is judged the same way
against labelled configurations. The model of the errors is the contract's: an independent
Gaussian per scalar, with

* energy: error ΔE = Ê − E [eV] of a structure, σ = ``energy_std`` [eV] (per atom: ΔE/N and
  σ/N [eV/atom]; ratios, hence calibration factor and miscalibration area, are the same);
* forces: error ΔF_ic [eV/Å] per component, σ_ic = ``forces_std_i`` / √3 (isotropic: the
  contract's ``forces_std`` is the RMS length sqrt(Σ_c var_c), so E|ΔF_i|² = forces_std_i²);
* stress: the 6 independent components (xx, yy, zz, yz, xz, xy) [eV/Å³] with their
  ``stress_std`` entries.

Functions over plain arrays (errors and sigmas broadcast to one shape, same unit; entries
with a non-finite error or σ, or σ ≤ 0, are left out — a σ of 0 with a non-zero error has an
infinite NLL at any scale — and :func:`uncertainty_metrics` counts them):

* :func:`calibration_factor` — the NLL-optimal scale s = sqrt(⟨Δ²/σ²⟩) (σ → s σ);
* :func:`gaussian_nll` — mean negative log-likelihood of the errors under N(0, (sσ)²);
* :func:`miscalibration_area` and :func:`calibration_curve` — observed vs expected fraction
  of errors inside the central Gaussian interval (Tran et al., Mach. Learn.: Sci. Technol. 1,
  025006 (2020); the uncertainty-toolbox definition);
* :func:`spearman` — rank correlation with average ranks for ties.

Over predictions and configurations: :func:`fit_calibration` → :class:`Calibration`,
:func:`apply_calibration`, :func:`uncertainty_metrics` (keys in its docstring),
:func:`calibration_plot` (PNG) and :func:`write_uncertainty_report` (``uncertainty.json`` and
``calibration.png``, what ``mlpjax evaluate --uncertainty DIR`` writes).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Sequence

import numpy as np
from scipy import special, stats

from mlpjax.data import Configuration
from mlpjax.uncertainty import UncertainPrediction

__all__ = [
    "Calibration", "calibration_factor", "gaussian_nll", "miscalibration_area", "calibration_curve", "spearman",
    "fit_calibration", "apply_calibration", "uncertainty_metrics", "calibration_plot", "write_uncertainty_report",
]

_VOIGT = (np.array([0, 1, 2, 1, 0, 0]), np.array([0, 1, 2, 2, 2, 1]))  # xx yy zz yz xz xy

UNITS = {
    "energy_nll": "mean Gaussian NLL of structure energies, errors in eV",
    "energy_per_atom_nll": "mean Gaussian NLL of energies per atom, errors in eV/atom",
    "force_nll": "mean Gaussian NLL per force component, errors in eV/Å, σ_ic = forces_std_i/√3",
    "stress_nll": "mean Gaussian NLL per independent stress component, errors in eV/Å³",
    "*_miscalibration_area": "dimensionless, 0 (calibrated) … 0.5",
    "*_spearman_*": "dimensionless rank correlation of predicted σ and |error|",
    "*_factor, calibration_*": "dimensionless scale s applied as σ → s σ",
    "*_meV_per_atom, *_meV_per_A, *_meV_per_A3": "as named",
}


# ------------------------------------------------------------------------------------------ arrays
def _pairs(errors, sigmas) -> tuple[np.ndarray, np.ndarray]:
    """Flat (errors, sigmas) float64 of the usable entries (finite error, finite σ > 0)."""
    e, s = np.broadcast_arrays(np.asarray(errors, np.float64), np.asarray(sigmas, np.float64))
    e, s = e.ravel(), s.ravel()
    keep = np.isfinite(e) & np.isfinite(s) & (s > 0)
    return e[keep], s[keep]


def _n_zero_sigma(errors, sigmas) -> int:
    e, s = np.broadcast_arrays(np.asarray(errors, np.float64), np.asarray(sigmas, np.float64))
    return int(np.sum(np.isfinite(e) & np.isfinite(s) & (s <= 0)))


def calibration_factor(errors, sigmas) -> float:
    """The NLL-optimal scale s = sqrt(⟨Δ²/σ²⟩) of predicted standard deviations.

    Minimising the mean Gaussian NLL ⟨log(sσ) + Δ²/(2 s² σ²)⟩ over s gives s² = ⟨Δ²/σ²⟩: s > 1
    means the σ were too small (over-confident). ``errors`` and ``sigmas`` broadcast to one
    shape, same unit (e.g. [n, 3] eV/Å force errors and [n, 1] eV/Å σ_ic = forces_std/√3).
    Unusable entries (module docstring) are left out; NaN when none is left.
    """
    e, s = _pairs(errors, sigmas)
    if e.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean((e / s) ** 2)))


def gaussian_nll(errors, sigmas, scale: float = 1.0) -> float:
    """Mean negative log-likelihood ⟨½ log(2π s²σ²) + Δ²/(2 s²σ²)⟩ of ``errors`` under N(0, (s σ)²).

    ``errors``, ``sigmas``: broadcastable arrays in one unit; the NLL is that of a density in
    1/unit, so it shifts by log(unit ratio) when the unit changes (eV vs meV: log 1000 ≈ 6.9).
    NaN when no entry is usable.
    """
    e, s = _pairs(errors, sigmas)
    if e.size == 0:
        return float("nan")
    s = s * float(scale)
    return float(np.mean(0.5 * np.log(2.0 * np.pi * s * s) + 0.5 * (e / s) ** 2))


def _coverage(errors, sigmas, scale: float) -> np.ndarray:
    """u_i = 2Φ(|Δ_i|/(sσ_i)) − 1 [n]: the smallest central-interval confidence level that
    contains error i. Uniform on (0, 1) when the errors are N(0, (sσ)²)."""
    e, s = _pairs(errors, sigmas)
    return special.erf(np.abs(e) / (float(scale) * s * math.sqrt(2.0)))


def calibration_curve(errors, sigmas, *, scale: float = 1.0, levels=None) -> tuple[np.ndarray, np.ndarray]:
    """(expected, observed) [L]: for each confidence level p (default 101 levels from 0 to 1),
    the fraction of errors inside the central interval ±Φ⁻¹((1+p)/2)·sσ. The diagonal is perfect
    calibration; below it = over-confident σ. Observed is NaN when no entry is usable."""
    p = np.linspace(0.0, 1.0, 101) if levels is None else np.asarray(levels, np.float64)
    u = np.sort(_coverage(errors, sigmas, scale))
    if u.size == 0:
        return p, np.full(p.shape, np.nan)
    return p, np.searchsorted(u, p, side="right") / u.size


def miscalibration_area(errors, sigmas, *, scale: float = 1.0) -> float:
    """Area between the observed and the expected fraction of errors inside the central
    Gaussian interval, ∫₀¹ |p_obs(p) − p| dp (Tran et al. 2020; uncertainty-toolbox), for
    σ → ``scale``·σ. 0 = calibrated; 0.5 = every error outside (or inside) every interval.

    Computed exactly: p_obs is the empirical CDF of u_i = 2Φ(|Δ_i|/σ_i) − 1, a step function,
    so the integral is a sum over the steps (uncertainty-toolbox samples 100 levels instead).
    For n calibrated errors its expected value is ≈ √(π/(32 n)) (≈ 0.003 for n = 10⁴).
    NaN when no entry is usable.
    """
    u = np.sort(_coverage(errors, sigmas, scale))
    n = u.size
    if n == 0:
        return float("nan")
    edges = np.concatenate([[0.0], u, [1.0]])
    a, b = edges[:-1], edges[1:]
    c = np.arange(n + 1) / n  # ECDF on [u_(k), u_(k+1))

    def antiderivative(x):  # ∫ |x − c| dx = ½ (x − c)|x − c|
        return 0.5 * (x - c) * np.abs(x - c)

    return float(np.sum(antiderivative(b) - antiderivative(a)))


def spearman(x, y) -> float:
    """Spearman rank correlation of ``x`` and ``y`` [n] (average ranks for ties), over the
    pairs where both are finite. NaN for fewer than 3 pairs or a constant input. Under
    independence its standard error is ≈ 1/√(n − 1)."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"spearman needs two arrays of one length, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3:
        return float("nan")
    rx, ry = stats.rankdata(x) - 0.5 * (x.size + 1), stats.rankdata(y) - 0.5 * (x.size + 1)
    den = math.sqrt(float(np.sum(rx * rx) * np.sum(ry * ry)))
    return float(np.sum(rx * ry) / den) if den > 0 else float("nan")


# ------------------------------------------------------------------------------ predictions
@dataclasses.dataclass(frozen=True)
class Calibration:
    """Scale factors of predicted standard deviations (σ → factor · σ), dimensionless; 1 = none."""

    energy: float = 1.0
    forces: float = 1.0
    stress: float = 1.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls(**{k: float(d[k]) for k in ("energy", "forces", "stress") if k in d})


def _collect(predictions: Sequence[UncertainPrediction], configs: Sequence[Configuration]) -> dict:
    """Errors and σ of every labelled quantity; NaN where a label (or a predicted stress) is missing.

    Returns ``n_atoms`` [G]; ``e_err``, ``e_std`` [G] eV; ``f_err`` [ΣN, 3] eV/Å; ``f_std`` [ΣN]
    eV/Å (per-atom model deviation); ``atom_graph`` [ΣN]; ``s_err``, ``s_std`` [G, 6] eV/Å³ (Voigt).
    """
    predictions, configs = list(predictions), list(configs)
    if len(predictions) != len(configs):
        raise ValueError(f"{len(predictions)} predictions for {len(configs)} configurations")
    if not configs:
        raise ValueError("no configurations to evaluate the uncertainty on")
    nan3 = np.full((3, 3), np.nan)
    n_atoms, e_err, e_std, f_err, f_std, graph, s_err, s_std = [], [], [], [], [], [], [], []
    for g, (p, c) in enumerate(zip(predictions, configs)):
        n = c.n_atoms
        forces = np.asarray(p.forces, np.float64)
        fs = np.asarray(p.forces_std, np.float64)
        if forces.shape != (n, 3) or fs.shape != (n,):
            where = f"{c.source or 'configuration'} frame {c.frame if c.frame >= 0 else g}"
            raise ValueError(f"{where}: prediction has forces {forces.shape} and forces_std {fs.shape} for {n} atoms; "
                             "predictions must be in the order of the configurations")
        n_atoms.append(n)
        e_err.append(float(p.energy) - c.energy if c.energy is not None else np.nan)
        e_std.append(float(p.energy_std))
        f_err.append(forces - np.asarray(c.forces, np.float64) if c.forces is not None else np.full((n, 3), np.nan))
        f_std.append(fs)
        graph.append(np.full(n, g))
        have_s = c.stress is not None and c.periodic and p.stress is not None and p.stress_std is not None
        ds = np.asarray(p.stress, np.float64) - np.asarray(c.stress, np.float64).reshape(3, 3) if have_s else nan3
        ss = np.asarray(p.stress_std, np.float64) if have_s else nan3
        s_err.append(ds[_VOIGT])
        s_std.append(ss[_VOIGT])
    return {"n_atoms": np.asarray(n_atoms, np.int64), "e_err": np.asarray(e_err), "e_std": np.asarray(e_std),
            "f_err": np.concatenate(f_err), "f_std": np.concatenate(f_std), "atom_graph": np.concatenate(graph),
            "s_err": np.asarray(s_err), "s_std": np.asarray(s_std)}


def _force_sigma(f_std) -> np.ndarray:
    """[ΣN] per-atom model deviation → [ΣN, 1] per-component σ_ic = forces_std_i / √3 (eV/Å)."""
    return np.asarray(f_std, np.float64)[:, None] / math.sqrt(3.0)


def _factor_or_one(errors, sigmas) -> float:
    s = calibration_factor(errors, sigmas)
    return s if np.isfinite(s) and s > 0 else 1.0


def fit_calibration(predictions: Sequence[UncertainPrediction], configs: Sequence[Configuration]) -> Calibration:
    """NLL-optimal factors (:func:`calibration_factor`) of energy, force and stress σ on
    validation data: ``predictions`` in the order of the labelled ``configs``. A quantity
    without labels (or without predicted σ) keeps the factor 1."""
    d = _collect(predictions, configs)
    return Calibration(energy=_factor_or_one(d["e_err"], d["e_std"]),
                       forces=_factor_or_one(d["f_err"], _force_sigma(d["f_std"])),
                       stress=_factor_or_one(d["s_err"], d["s_std"]))


def apply_calibration(predictions: Sequence[UncertainPrediction], calibration: Calibration) -> list[UncertainPrediction]:
    """The predictions with ``energy_std``, ``forces_std`` and ``stress_std`` multiplied by the
    calibration's factors; means and ``members`` (the members' own values) are unchanged."""
    out = []
    for p in predictions:
        out.append(p._replace(
            energy_std=float(p.energy_std) * calibration.energy,
            forces_std=np.asarray(p.forces_std, np.float64) * calibration.forces,
            stress_std=None if p.stress_std is None else np.asarray(p.stress_std, np.float64) * calibration.stress))
    return out


def _rms(x) -> float:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(np.sqrt(np.mean(x * x))) if x.size else float("nan")


def _block(prefix, err, sig, factor, n_zero_key, out):
    """Factor, miscalibration area and NLL of one quantity, raw and with ``factor``."""
    out[f"{prefix}_optimal_factor"] = calibration_factor(err, sig)
    out[f"{prefix}_miscalibration_area"] = miscalibration_area(err, sig)
    out[f"{prefix}_miscalibration_area_calibrated"] = miscalibration_area(err, sig, scale=factor)
    out[f"{prefix}_nll"] = gaussian_nll(err, sig)
    out[f"{prefix}_nll_calibrated"] = gaussian_nll(err, sig, factor)
    out[n_zero_key] = _n_zero_sigma(err, sig)


def uncertainty_metrics(predictions: Sequence[UncertainPrediction], configs: Sequence[Configuration],
                        calibration: Calibration | None = None) -> dict:
    """Uncertainty quality of ``predictions`` against the labels of ``configs`` (same order).

    ``calibration``: the factors fitted on *validation* data (:func:`fit_calibration`), applied
    to the ``*_calibrated`` values; None fits them on these data (in-sample: an optimistic
    ``*_calibrated``; ``calibration_source`` says which). NaN where a label is missing.

    Keys (σ: predicted standard deviation, Δ: prediction − label):

        n_structures, n_atoms, n_energy, n_force_atoms, n_stress     labelled counts
        calibration_energy/forces/stress, calibration_source          factors used
        energy_spearman_per_structure   ρ(σ_E, |ΔE|)
        energy_spearman_per_atom        ρ(σ_E/N, |ΔE|/N)
        energy_rmse_meV_per_atom, energy_rms_std_meV_per_atom(_calibrated)
        energy_optimal_factor, energy_miscalibration_area(_calibrated), energy_nll(_calibrated) [errors in eV]
        energy_per_atom_nll(_calibrated)                               [errors in eV/atom]
        force_spearman_per_atom         ρ(forces_std_i, |ΔF_i|), |ΔF_i| the error vector's length
        force_spearman_per_structure_max / _mean
                                        ρ(max_i / mean_i forces_std_i, force RMSE of the structure)
        force_rmse_meV_per_A, force_rms_std_meV_per_A(_calibrated)    per component (σ_ic = forces_std_i/√3)
        force_optimal_factor, force_miscalibration_area(_calibrated), force_nll(_calibrated) [eV/Å]
        stress_spearman_per_structure   ρ(RMS σ, RMS |Δ|) over the 6 components of a structure
        stress_rmse_meV_per_A3, stress_rms_std_meV_per_A3(_calibrated)
        stress_optimal_factor, stress_miscalibration_area(_calibrated), stress_nll(_calibrated) [eV/Å³]
        n_zero_sigma_energy/forces/stress   entries left out for σ = 0

    ``*_optimal_factor`` is the NLL-optimal factor on these data (with a validation-fitted
    ``calibration``, how far these data are from it).
    """
    d = _collect(predictions, configs)
    source = "given"
    if calibration is None:
        calibration, source = fit_calibration(predictions, configs), "fitted on these data (in-sample)"
    n = d["n_atoms"].astype(np.float64)
    fe, fs = d["f_err"], d["f_std"]
    has_f = np.all(np.isfinite(fe), axis=1)
    has_s = np.all(np.isfinite(d["s_err"]), axis=1)
    out: dict = {"n_structures": int(len(n)), "n_atoms": int(np.sum(d["n_atoms"])),
                 "n_energy": int(np.sum(np.isfinite(d["e_err"]))), "n_force_atoms": int(np.sum(has_f)),
                 "n_stress": int(np.sum(has_s)), "calibration_energy": calibration.energy,
                 "calibration_forces": calibration.forces, "calibration_stress": calibration.stress,
                 "calibration_source": source}
    # energy, per structure and per atom
    de, se = d["e_err"], d["e_std"]
    out["energy_spearman_per_structure"] = spearman(se, np.abs(de))
    out["energy_spearman_per_atom"] = spearman(se / n, np.abs(de) / n)
    out["energy_rmse_meV_per_atom"] = 1e3 * _rms(de / n)
    out["energy_rms_std_meV_per_atom"] = 1e3 * _rms(np.where(np.isfinite(de), se / n, np.nan))
    out["energy_rms_std_meV_per_atom_calibrated"] = calibration.energy * out["energy_rms_std_meV_per_atom"]
    _block("energy", de, se, calibration.energy, "n_zero_sigma_energy", out)
    out["energy_per_atom_nll"] = gaussian_nll(de / n, se / n)
    out["energy_per_atom_nll_calibrated"] = gaussian_nll(de / n, se / n, calibration.energy)
    # forces, per atom and per structure
    sig_f = _force_sigma(fs)
    out["force_spearman_per_atom"] = spearman(fs[has_f], np.linalg.norm(fe[has_f], axis=1))
    graphs = [np.flatnonzero((d["atom_graph"] == g) & has_f) for g in range(len(n))]
    labelled = [idx for idx in graphs if idx.size]
    rmse_g = np.array([_rms(fe[idx]) for idx in labelled])
    out["force_spearman_per_structure_max"] = spearman(np.array([fs[idx].max() for idx in labelled]), rmse_g)
    out["force_spearman_per_structure_mean"] = spearman(np.array([fs[idx].mean() for idx in labelled]), rmse_g)
    out["force_rmse_meV_per_A"] = 1e3 * _rms(fe[has_f])
    out["force_rms_std_meV_per_A"] = 1e3 * _rms(sig_f[has_f])
    out["force_rms_std_meV_per_A_calibrated"] = calibration.forces * out["force_rms_std_meV_per_A"]
    _block("force", fe, sig_f, calibration.forces, "n_zero_sigma_forces", out)
    # stress
    ds, ss = d["s_err"], d["s_std"]
    out["stress_spearman_per_structure"] = spearman(np.array([_rms(r) for r in ss[has_s]]),
                                                    np.array([_rms(r) for r in ds[has_s]]))
    out["stress_rmse_meV_per_A3"] = 1e3 * _rms(ds[has_s])
    out["stress_rms_std_meV_per_A3"] = 1e3 * _rms(ss[has_s])
    out["stress_rms_std_meV_per_A3_calibrated"] = calibration.stress * out["stress_rms_std_meV_per_A3"]
    _block("stress", ds, ss, calibration.stress, "n_zero_sigma_stress", out)
    return out


# ------------------------------------------------------------------------------------ outputs
def calibration_plot(predictions: Sequence[UncertainPrediction], configs: Sequence[Configuration], path,
                     calibration: Calibration | None = None) -> dict:
    """Write a PNG: (a) calibration curves (observed vs expected fraction of errors inside the
    central Gaussian interval) of energy, forces and stress where labelled, before (solid) and
    after (dashed) calibration, with the diagonal; (b) per atom |ΔF_i| vs forces_std_i [eV/Å]
    on log axes with y = x (calibrated in RMS) and y = s·x (the force factor); energies per
    structure instead when there are no force labels. ``calibration`` None: fitted on these
    data. Returns :func:`uncertainty_metrics`."""
    from mlpjax.validate.plots import _figure, _save

    d = _collect(predictions, configs)
    m = uncertainty_metrics(predictions, configs, calibration)
    cal = Calibration(m["calibration_energy"], m["calibration_forces"], m["calibration_stress"])
    fig, ax = _figure(2, width=4.8, height=4.2)
    a = ax[0, 0]
    a.plot([0, 1], [0, 1], "k:", lw=0.8, label="ideal")
    series = (("energy", d["e_err"], d["e_std"], cal.energy, "C0"),
              ("forces", d["f_err"], _force_sigma(d["f_std"]), cal.forces, "C1"),
              ("stress", d["s_err"], d["s_std"], cal.stress, "C2"))
    for label, err, sig, factor, color in series:
        if _pairs(err, sig)[0].size == 0:
            continue
        p, obs = calibration_curve(err, sig)
        a.plot(p, obs, "-", color=color, label=f"{label} (area {miscalibration_area(err, sig):.3f})")
        p, obs = calibration_curve(err, sig, scale=factor)
        a.plot(p, obs, "--", color=color,
               label=f"{label} × {factor:.3g} (area {miscalibration_area(err, sig, scale=factor):.3f})")
    a.set_xlim(0, 1)
    a.set_ylim(0, 1)
    a.set_aspect("equal", adjustable="box")
    a.set_xlabel("expected fraction inside the central interval")
    a.set_ylabel("observed fraction")
    a.set_title(f"calibration ({m['calibration_source']})", fontsize=9)
    a.legend(fontsize=7, loc="upper left")
    b = ax[0, 1]
    has_f = np.all(np.isfinite(d["f_err"]), axis=1)
    if np.any(has_f):
        x, y = d["f_std"][has_f], np.linalg.norm(d["f_err"][has_f], axis=1)
        factor, what, unit, rho = cal.forces, "per-atom force", "eV/Å", m["force_spearman_per_atom"]
        xlabel, ylabel = "predicted forces_std_i (eV/Å)", "|ΔF_i| (eV/Å)"
    else:
        keep = np.isfinite(d["e_err"])
        x, y = d["e_std"][keep], np.abs(d["e_err"][keep])
        factor, what, unit, rho = cal.energy, "structure energy", "eV", m["energy_spearman_per_structure"]
        xlabel, ylabel = "predicted σ_E (eV)", "|ΔE| (eV)"
    pos = (x > 0) & (y > 0)
    b.scatter(x[pos], y[pos], s=5, alpha=0.5, edgecolors="none", color="C1")
    if np.any(pos):
        lo = float(min(x[pos].min(), y[pos].min()))
        hi = float(max(x[pos].max(), y[pos].max()))
        line = np.array([lo / 2, hi * 2])
        b.plot(line, line, "k:", lw=0.8, label="|Δ| = σ")
        b.plot(line, factor * line, "k--", lw=0.8, label=f"|Δ| = {factor:.3g} σ (calibrated)")
        b.legend(fontsize=7)
    b.set_xscale("log")
    b.set_yscale("log")
    b.set_xlabel(xlabel)
    b.set_ylabel(ylabel)
    b.set_title(f"{what} error vs σ ({unit}); Spearman ρ = {rho:.2f}", fontsize=9)
    _save(fig, path)
    return m


def write_uncertainty_report(predictions: Sequence[UncertainPrediction], configs: Sequence[Configuration],
                             output_dir, calibration: Calibration | None = None) -> dict:
    """Write ``output_dir/uncertainty.json`` ({"metrics": :func:`uncertainty_metrics`,
    "calibration": factors, "units": …}; NaN as null) and ``output_dir/calibration.png``
    (:func:`calibration_plot`). Returns {"uncertainty_json": path, "calibration_png": path}."""
    from mlpjax.files import atomic_write_bytes
    from mlpjax.validate.report import to_jsonable

    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    paths = {"uncertainty_json": os.path.join(output_dir, "uncertainty.json"),
             "calibration_png": os.path.join(output_dir, "calibration.png")}
    m = calibration_plot(predictions, configs, paths["calibration_png"], calibration)
    cal = {"energy": m["calibration_energy"], "forces": m["calibration_forces"], "stress": m["calibration_stress"],
           "source": m["calibration_source"]}
    doc = {"metrics": m, "calibration": cal, "units": UNITS}
    atomic_write_bytes(paths["uncertainty_json"], json.dumps(to_jsonable(doc), indent=2).encode())
    return paths
