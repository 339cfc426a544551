"""The PNG plots of a validation report (matplotlib's object API, no pyplot: no GUI backend,
nothing global). The parity plot is :func:`mlpjax.validate.metrics.parity_plot`."""

from __future__ import annotations

import os

import numpy as np

from mlpjax.validate.dynamics import DRIFT_FAIL_MEV_PER_ATOM_PS, DRIFT_GOOD_MEV_PER_ATOM_PS
from mlpjax.validate.metrics import reference_arrays

__all__: list[str] = []


def _save(fig, path) -> None:
    import io

    from mlpjax.files import atomic_write_bytes

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
