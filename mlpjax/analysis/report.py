"""The analysis of a whole trajectory: :func:`analyze_trajectory` gathers g(r), MSD and
diffusion, VACF and spectrum, and bond order into JSON-ready numbers and NumPy curves, and
:func:`write_analysis` writes them (``analysis.json``, ``analysis.npz``, PNG plots)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mlpjax.analysis.dynamics import diffusion_coefficient, green_kubo_diffusion, msd, unwrap, vacf
from mlpjax.analysis.order import _bond_order_of_pairs, _bond_vectors
from mlpjax.analysis.spectrum import THZ_TO_CM1, spectrum_peak, vibrational_spectrum
from mlpjax.analysis.structure import _rdf_pairs, coordination_number, cutoff_from_rdf, rdf, rdf_peaks
from mlpjax.analysis.trajectory import _frame_interval_ps, _trajectory_arrays

__all__ = ["analyze_trajectory", "write_analysis"]


def _nan_to_none(x):
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def analyze_trajectory(
    frames: Sequence,
    *,
    what: Sequence[str] = ("rdf", "msd"),
    species: Sequence[str] | None = None,
    r_max: float = 6.0,
    n_bins: int = 120,
    dt_ps: float | None = None,
    fit_range: tuple[float, float] = (0.1, 0.5),
    n_blocks: int = 5,
    order_cutoff: float | None = None,
) -> dict:
    """Numbers and curves of a trajectory: what ⊆ {"rdf", "msd", "vacf", "order"}.

    frames: ASE Atoms (or mlpjax Configurations; those carry no velocities), evenly spaced
        in time for MSD/VACF, the same atoms in every frame.
    species: chemical symbols for partial g(r) of every pair of them and a per-species
        MSD (default: every species present, when there is more than one).
    r_max: Å; dt_ps: time between frames, ps (default: from the frames' info['time_ps']).
    fit_range, n_blocks: as in :func:`diffusion_coefficient` (fewer blocks are used when
        the trajectory is too short for 5 blocks of ≥ 8 frames; none below 16 frames).
    order_cutoff: Å, neighbour cutoff of the bond order ("order": Steinhardt q4/q6 and ten
        Wolde's solid-like atoms per frame, :func:`bond_order`); default: the first minimum of
        the total g(r) of the frames.

    Returns {"numbers": a JSON-ready dict (NaN → None; a cutoff rule that does not apply
    is None with the reason under "notes"), "curves": {name: NumPy array}}.
    """
    from ase.data import atomic_masses, chemical_symbols

    frames = list(frames)
    what = tuple(what)
    unknown = set(what) - {"rdf", "msd", "vacf", "order"}
    if unknown:
        raise ValueError(f"unknown analyses {sorted(unknown)}: choose from rdf, msd, vacf, order")
    if not frames:
        raise ValueError("the trajectory has no frames")
    numbers0 = np.asarray(frames[0].numbers)
    present = [chemical_symbols[z] for z in sorted(set(numbers0.tolist()))]
    if species is None:
        species = present if len(present) > 1 else []
    for s in species:
        if s not in present:
            raise ValueError(f"species {s!r} is not in the trajectory (it holds {', '.join(present)})")
    out: dict = {"n_frames": len(frames), "n_atoms": int(len(numbers0)), "species": present}
    curves: dict = {}

    if "rdf" in what:
        pairs = [(None, None)] + [(a, b) for i, a in enumerate(species) for b in species[i:]]
        results = _rdf_pairs(frames, pairs, r_max=r_max, n_bins=n_bins)
        summary: dict = {"r_max_A": float(r_max), "n_bins": int(n_bins), "notes": [], "partial": {}}
        for (a, b), res in zip(pairs, results):
            entry: dict = {}
            pk = rdf_peaks(res)
            entry["first_peak_A"] = float(pk.r_peaks[0]) if len(pk.r_peaks) else None
            for rule in ("first_minimum", "third_peak"):
                try:
                    entry[f"cutoff_{rule}_A"] = cutoff_from_rdf(res, rule)
                except ValueError as err:
                    entry[f"cutoff_{rule}_A"] = None
                    summary["notes"].append(f"{'total' if a is None else f'{a}-{b}'}: {err}")
            entry["first_minimum_A"] = entry["cutoff_first_minimum_A"]
            r_cut = entry["first_minimum_A"]
            entry["coordination_number"] = coordination_number(res, r_cut) if r_cut is not None else None
            entry["density_per_A3"] = res.density
            if a is None:
                summary.update(entry)
                curves["rdf_r_A"], curves["rdf_g"] = res.r, res.g
            else:
                summary["partial"][f"{a}-{b}"] = entry
                curves[f"rdf_g_{a}-{b}"] = res.g
        out["rdf"] = summary

    if "msd" in what or "vacf" in what:
        traj = _trajectory_arrays(frames)
        if dt_ps is None:
            dt_ps = _frame_interval_ps(frames)
        if dt_ps is None:
            raise ValueError("MSD/VACF need the time between frames: the frames carry no info['time_ps']; give dt_ps (CLI: --timestep-fs)")
        t = traj["positions"].shape[0]
        if t < 4:
            raise ValueError(f"MSD/VACF need at least 4 frames, the trajectory has {t}")
        masses = atomic_masses[traj["numbers"]]

    if "msd" in what:
        x = unwrap(traj["positions"], traj["cells"], pbc=traj["pbc"])
        blocks = min(n_blocks, t // 8)
        lag_t = np.arange(t) * dt_ps
        summary = {"dt_ps": dt_ps, "max_lag_ps": float(lag_t[-1]), "n_blocks": int(blocks) if blocks >= 2 else 0, "per_species": {}}
        selections = [(None, None)] + [(s, traj["numbers"] == chemical_symbols.index(s)) for s in species]
        for name, sel in selections:
            m = msd(x, select=sel, masses=masses)
            dif = diffusion_coefficient(lag_t, m, fit_range=fit_range, n_blocks=blocks, positions=x if blocks >= 2 else None, select=sel, masses=masses)
            entry = {k: getattr(dif, k) for k in ("D_A2_per_ps", "D_err_A2_per_ps", "D_cm2_per_s", "D_err_cm2_per_s", "fit_start_ps", "fit_end_ps", "slope_A2_per_ps", "intercept_A2")}
            if name is None:
                summary.update(entry)
                curves["msd_t_ps"], curves["msd_A2"] = lag_t, m
            else:
                summary["per_species"][name] = entry
                curves[f"msd_A2_{name}"] = m
        out["msd"] = summary

    if "vacf" in what:
        if traj["velocities"] is None:
            raise ValueError("VACF needs velocities: the frames carry no momenta")
        v = traj["velocities"]
        max_lag = max(1, t // 2)
        c_raw = vacf(v, max_lag=max_lag, normalize=False)
        c_mass = vacf(v, max_lag=max_lag, normalize=True, masses=masses)
        spec = vibrational_spectrum(c_mass, dt_ps * 1e3)
        peak = spectrum_peak(spec)
        out["vacf"] = {
            "dt_ps": dt_ps,
            "max_lag_ps": float(max_lag * dt_ps),
            "D_green_kubo_A2_per_ps": green_kubo_diffusion(c_raw, dt_ps),
            "spectrum_peak_THz": peak,
            "spectrum_peak_cm1": None if peak is None else peak * THZ_TO_CM1,
        }
        curves["vacf_t_ps"], curves["vacf_mass_weighted_normalised"] = np.arange(max_lag + 1) * dt_ps, c_mass
        curves["spectrum_THz"], curves["spectrum_intensity_ps"] = spec.frequency_THz, spec.intensity

    if "order" in what:
        source = "given"
        if order_cutoff is None:
            order_cutoff = out["rdf"]["first_minimum_A"] if "rdf" in out else cutoff_from_rdf(rdf(frames, r_max=r_max, n_bins=n_bins))
            source = "first minimum of g(r)"
            if order_cutoff is None:
                raise ValueError("bond order: g(r) has no first minimum within r_max; give order_cutoff")
        pairs = [_bond_vectors(f, order_cutoff) for f in frames]  # one neighbour list per frame for q6 and q4
        q6 = [_bond_order_of_pairs(p, 6) for p in pairs]
        q4 = [_bond_order_of_pairs(p, 4).q for p in pairs]
        solid = np.array([b.solid.mean() for b in q6])  # [n_frames]
        out["order"] = {
            "cutoff_A": float(order_cutoff), "cutoff_source": source,
            "q4_mean": float(np.mean([q.mean() for q in q4])), "q6_mean": float(np.mean([b.q.mean() for b in q6])),
            "mean_neighbours": float(np.mean([b.n_neighbours.mean() for b in q6])),
            "solid_fraction_mean": float(solid.mean()), "solid_fraction_first": float(solid[0]),
            "solid_fraction_last": float(solid[-1]), "solid_fraction_max": float(solid.max()),
        }
        curves["order_frame"] = np.arange(len(frames))
        curves["solid_fraction"], curves["q6_mean_per_frame"] = solid, np.array([b.q.mean() for b in q6])
    return {"numbers": _nan_to_none(out), "curves": curves}


def write_analysis(result: dict, output_dir) -> dict:
    """Write ``analysis.json`` (the numbers), ``analysis.npz`` (the curves) and PNG plots
    (``rdf.png``, ``msd.png``, ``vacf.png``, ``order.png``, those that apply) of :func:`analyze_trajectory`'s
    result into output_dir. Returns {name: path}."""
    import io
    import json
    import os

    from matplotlib.figure import Figure  # no pyplot: Agg canvas, no GUI backend, nothing global

    from mlpjax.files import atomic_write_bytes

    os.makedirs(output_dir, exist_ok=True)
    nums, curves = result["numbers"], result["curves"]
    paths = {}

    def save(fig, name):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120)
        paths[name] = os.path.join(output_dir, f"{name}.png")
        atomic_write_bytes(paths[name], buf.getvalue())

    if "rdf" in nums:
        fig = Figure(figsize=(5.5, 3.8), layout="constrained")
        ax = fig.subplots()
        ax.plot(curves["rdf_r_A"], curves["rdf_g"], "k-", lw=1.5, label="total")
        for pair in nums["rdf"]["partial"]:
            ax.plot(curves["rdf_r_A"], curves[f"rdf_g_{pair}"], lw=1, label=pair)
        for key, style in (("cutoff_first_minimum_A", "--"), ("cutoff_third_peak_A", ":")):
            if nums["rdf"].get(key) is not None:
                ax.axvline(nums["rdf"][key], color="grey", ls=style, lw=1, label=f"{key[7:-2].replace('_', ' ')} {nums['rdf'][key]:.2f} Å")
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.set_xlabel("r [Å]")
        ax.set_ylabel("g(r)")
        ax.legend(fontsize=8)
        save(fig, "rdf")
    if "msd" in nums:
        m = nums["msd"]
        fig = Figure(figsize=(5.5, 3.8), layout="constrained")
        ax = fig.subplots()
        t = curves["msd_t_ps"]
        ax.plot(t, curves["msd_A2"], "k-", lw=1.5, label="all atoms")
        for s in m["per_species"]:
            ax.plot(t, curves[f"msd_A2_{s}"], lw=1, label=s)
        fit_t = np.array([m["fit_start_ps"], m["fit_end_ps"]])
        err = "" if m["D_err_A2_per_ps"] is None else f" ± {m['D_err_A2_per_ps']:.3g}"
        ax.plot(fit_t, m["slope_A2_per_ps"] * fit_t + m["intercept_A2"], "r--", lw=1.2, label="linear fit (all atoms)")
        ax.set_title(f"D = {m['D_A2_per_ps']:.3g}{err} Å²/ps", fontsize=10)
        ax.set_xlabel("lag time [ps]")
        ax.set_ylabel("MSD [Å²]")
        ax.legend(fontsize=8)
        save(fig, "msd")
    if "vacf" in nums:
        fig = Figure(figsize=(9, 3.6), layout="constrained")
        a1, a2 = fig.subplots(1, 2)
        a1.plot(curves["vacf_t_ps"], curves["vacf_mass_weighted_normalised"], "k-", lw=1)
        a1.axhline(0.0, color="grey", lw=0.5)
        a1.set_xlabel("lag time [ps]")
        a1.set_ylabel("VACF (mass-weighted, C(t)/C(0))")
        a2.plot(curves["spectrum_THz"], curves["spectrum_intensity_ps"], "k-", lw=1)
        f, inten = curves["spectrum_THz"], curves["spectrum_intensity_ps"]
        visible = f[np.abs(inten) > 0.01 * np.abs(inten).max()]  # frequencies that carry intensity
        a2.set_xlim(0, min(float(f[-1]), 1.5 * float(visible.max()) if visible.size else float(f[-1])))
        if nums["vacf"]["spectrum_peak_THz"] is not None:
            a2.axvline(nums["vacf"]["spectrum_peak_THz"], color="r", ls="--", lw=0.8, label=f"peak {nums['vacf']['spectrum_peak_THz']:.2f} THz")
            a2.legend(fontsize=8)
        a2.set_xlabel("frequency [THz]")
        a2.set_ylabel("intensity [ps]")
        save(fig, "vacf")
    if "order" in nums:
        fig = Figure(figsize=(5.5, 3.8), layout="constrained")
        ax = fig.subplots()
        ax.plot(curves["order_frame"], curves["solid_fraction"], "k-", lw=1.2, label="solid-like atoms (fraction)")
        ax.plot(curves["order_frame"], curves["q6_mean_per_frame"], "b-", lw=1, label="⟨q6⟩")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("frame")
        ax.set_title(f"bond order, cutoff {nums['order']['cutoff_A']:.2f} Å", fontsize=10)
        ax.legend(fontsize=8)
        save(fig, "order")
    paths["json"] = os.path.join(output_dir, "analysis.json")
    atomic_write_bytes(paths["json"], (json.dumps(nums, indent=2) + "\n").encode())
    buf = io.BytesIO()
    np.savez(buf, **curves)
    paths["npz"] = os.path.join(output_dir, "analysis.npz")
    atomic_write_bytes(paths["npz"], buf.getvalue())
    return paths
