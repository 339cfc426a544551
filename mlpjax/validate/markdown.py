"""The Markdown text of a validation report (``report.md``): tables of every section that ran,
the acceptance checks and links to the plots."""

from __future__ import annotations

import numpy as np

from mlpjax.validate.acceptance import _rel
from mlpjax.validate.dynamics import DRIFT_FAIL_MEV_PER_ATOM_PS, DRIFT_GOOD_MEV_PER_ATOM_PS

__all__ = ["report_markdown"]


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
