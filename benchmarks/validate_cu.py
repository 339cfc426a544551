"""Physical validation of the quickstart SchNet Cu potential against ASE's EMT (issue 5).

Trains the quickstart potential (``experiments/configs/quickstart_cu.yaml`` on
``mlpjax.data.emt.emt_cu(seed=0)``: the same data, config and training budget as
``experiments/quickstart.py``), or loads one with ``--model``, and runs
:func:`mlpjax.validate.validate_report` against EMT in float64:

* equilibrium lattice constant a0 and bulk modulus B from a Birch–Murnaghan E(V) fit
  (targets: a0 within 0.5 %, B within 10 % of EMT's);
* C11, C12, C44 from stress–strain central differences at each calculator's own
  equilibrium (target: within 15 %);
* NVE drift of a 108-atom cell thermalised at 300 K, at 0.25/0.5/1/2 fs (target at 1 fs in
  float64: below 1 meV/atom/ps); the 1 fs run is repeated in float32 for comparison;
* Γ phonons (2×2×2 cubic cells), VDOS from the VACF of a 4 ps NVE run (ASE MD for EMT),
  errors vs temperature (EMT MD at 300–1500 K), volume strain (±8 %) and energy per atom.

Output: a table on stdout, the report (report.md, report.json, PNGs) and the trained
model in ``benchmarks/results/validate_cu/``, ``benchmarks/results/validate_cu.json`` and a
dated section appended to ``benchmarks/RESULTS.md``.

    taskset -c 1 python benchmarks/validate_cu.py            # ~12 min on one CPU core
    python benchmarks/validate_cu.py --model run/model.mlpjax  # skip training
    python benchmarks/validate_cu.py --quick --no-record       # ~2 min smoke run
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from _common import RESULTS_DIR, append_results, environment, markdown_table, write_json  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "experiments", "configs", "quickstart_cu.yaml")


def _train(args, configs):
    from mlpjax.config import load_config, override
    from mlpjax.training import train

    cfg = override(load_config(CONFIG), max_time_minutes=args.train_minutes)
    tmp = tempfile.mkdtemp(prefix="mlpjax_validate_cu_")
    t0 = time.perf_counter()
    res = train(cfg, configs, output_dir=tmp, progress=False)
    info = {"train_wall_s": time.perf_counter() - t0, "epochs": res.epochs_completed, "stop_reason": res.stop_reason,
            "test_metrics": res.test_metrics, "config": os.path.relpath(CONFIG, REPO), "max_time_minutes": cfg.max_time_minutes}
    keep = os.path.join(args.output, "train")
    os.makedirs(keep, exist_ok=True)
    for name in ("model.mlpjax", "log.csv", "config.yaml", "parity.png"):
        if os.path.exists(os.path.join(tmp, name)):
            shutil.copy(os.path.join(tmp, name), os.path.join(keep, name))
    shutil.rmtree(tmp, ignore_errors=True)
    return res.potential, info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="validate this model file instead of training the quickstart potential")
    p.add_argument("--output", default=str(RESULTS_DIR / "validate_cu"), help="report directory")
    p.add_argument("--train-minutes", type=float, default=None, help="override the quickstart config's training-time limit")
    p.add_argument("--quick", action="store_true", help="ReportConfig.quick(): short runs (numbers not comparable)")
    p.add_argument("--no-record", action="store_true", help="do not write results JSON / RESULTS.md")
    args = p.parse_args(argv)

    import dataclasses

    from ase.calculators.emt import EMT

    import mlpjax
    from mlpjax.data.emt import emt_cu
    from mlpjax.validate import ReportConfig, energy_drift, md_supercell, validate_report

    t_start = time.perf_counter()
    os.makedirs(args.output, exist_ok=True)
    print("data: mlpjax.data.emt.emt_cu(seed=0)", flush=True)
    configs = emt_cu(seed=0)
    if args.model:
        pot, train_info = mlpjax.load(args.model), {"model_file": os.path.abspath(args.model)}
    else:
        print(f"training the quickstart SchNet ({os.path.relpath(CONFIG, REPO)}) on {len(configs)} EMT structures", flush=True)
        pot, train_info = _train(args, configs)
        m = train_info["test_metrics"] or {}
        print(f"trained {train_info['epochs']} epochs in {train_info['train_wall_s']:.0f} s ({train_info['stop_reason']}); "
              f"test E MAE {m.get('energy_mae_meV_per_atom', float('nan')):.3f} meV/atom, F MAE {m.get('force_mae_meV_per_A', float('nan')):.1f} meV/Å",
              flush=True)

    cfg = ReportConfig.quick() if args.quick else ReportConfig()
    report = validate_report(pot, EMT(), args.output, structure="fcc-Cu", config=cfg, training_configs=configs,
                             model_name=args.model or "quickstart SchNet (trained by benchmarks/validate_cu.py)")
    sec = report["sections"]

    # the 1 fs drift once more in float32, for comparison with the float64 check
    f32 = None
    if sec.get("eos", {}).get("model") is not None:
        eq = sec["eos"]["model"]
        from mlpjax.validate import bulk_structure

        cell = bulk_structure("fcc-Cu")
        cell.set_cell(cell.cell.array * eq.volume_scale ** (1 / 3), scale_atoms=True)
        md_cell = md_supercell(cell, pot.cutoff, min_atoms=cfg.md_min_atoms)
        dcfg = dataclasses.replace(cfg.drift, timesteps_fs=(cfg.drift.reference_timestep_fs,), dtype="float32")
        t0 = time.perf_counter()
        f32 = energy_drift(pot, md_cell, dcfg).runs[0]
        print(f"float32 drift at {f32.timestep_fs:g} fs: {f32.drift_meV_per_atom_per_ps:+.4f} meV/atom/ps "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)

    rows = []
    for c in report["checks"]:
        if c["rel_error"] is None:
            rows.append([c["name"], c["model"], "—", "—", f"< {c['tolerance']:g} {c['unit']}", "PASS" if c["passed"] else "MISS"])
        else:
            rows.append([f"{c['name']} ({c['unit']})", c["model"], c["reference"], f"{100 * c['rel_error']:+.2f} %",
                         f"±{100 * c['tolerance']:g} %", "PASS" if c["passed"] else "MISS"])
    table = markdown_table(["quantity", "SchNet", "EMT", "error", "target", ""], rows)
    drift = sec.get("drift")
    drift_rows = []
    if drift is not None:
        drift_rows = [[f"{r.timestep_fs:g}", drift.dtype, r.steps, r.drift_meV_per_atom_per_ps, r.fluctuation_meV_per_atom,
                       r.mean_temperature_K, r.status] for r in drift.runs]
    if f32 is not None:
        drift_rows.append([f"{f32.timestep_fs:g}", "float32", f32.steps, f32.drift_meV_per_atom_per_ps, f32.fluctuation_meV_per_atom,
                           f32.mean_temperature_K, f32.status])
    drift_table = markdown_table(["dt fs", "dtype", "steps", "drift meV/atom/ps", "fluct. meV/atom", "⟨T⟩ K", "status"], drift_rows)
    print("\n" + table + "\n\n" + drift_table, flush=True)

    extra = []
    ph = sec.get("phonons") or {}
    if ph.get("model") is not None and ph.get("reference") is not None:
        d = ph["model"].frequencies_THz - ph["reference"].frequencies_THz
        extra.append(f"Γ phonons of the {'×'.join(map(str, cfg.phonons.supercell))} cubic supercell: RMS Δν {np.sqrt(np.mean(d**2)):.3f} THz, max ν "
                     f"{ph['model'].frequencies_THz.max():.2f} vs {ph['reference'].frequencies_THz.max():.2f} THz (EMT).")
    vd = sec.get("vdos") or {}
    if vd.get("overlap") is not None:
        extra.append(f"VDOS ({cfg.vdos.duration_ps:g} ps NVE, {cfg.vdos.temperature_K:g} K): peak {vd['model'].peak_THz:.2f} vs {vd['reference'].peak_THz:.2f} THz, mean "
                     f"{vd['model'].mean_frequency_THz:.2f} vs {vd['reference'].mean_frequency_THz:.2f} THz, overlap {vd['overlap']:.3f}.")
    ex = sec.get("extrapolation")
    if ex is not None and ex.get("temperature"):
        t_txt = ", ".join(f"{r['temperature_K']:.0f} K {r['energy_mae_meV_per_atom']:.2f}/{r['force_rmse_meV_per_A']:.0f}" for r in ex["temperature"])
        s_txt = ", ".join(f"{100 * r['volume_strain']:+.0f} % {r['energy_mae_meV_per_atom']:.2f}/{r.get('pressure_mae_GPa', float('nan')):.2f} GPa"
                          for r in ex["strain"])
        extra.append(f"Extrapolation, E MAE meV/atom / F RMSE meV/Å vs temperature (EMT MD, fixed volume): {t_txt}.")
        extra.append(f"E MAE meV/atom / pressure MAE vs volume strain: {s_txt}.")
    el = sec.get("elastic") or {}
    if el.get("model") is not None and el.get("reference") is not None:
        extra.append(f"Cauchy pressure C12 − C44: {el['model'].C12_GPa - el['model'].C44_GPa:.1f} GPa (SchNet) vs "
                     f"{el['reference'].C12_GPa - el['reference'].C44_GPa:.1f} GPa (EMT); B from (C11 + 2 C12)/3: "
                     f"{el['model'].bulk_modulus_GPa:.1f} vs {el['reference'].bulk_modulus_GPa:.1f} GPa.")
    for k, v in report["errors"].items():
        extra.append(f"section `{k}` failed: {v}")
    total = time.perf_counter() - t_start
    extra.append(f"Wall time {total:.0f} s (training {train_info.get('train_wall_s', 0):.0f} s); report: "
                 f"`{os.path.relpath(args.output, REPO)}/report.md`.")
    print("\n".join(extra))

    if not args.no_record:
        payload = {
            "environment": environment(), "train": train_info, "quick": bool(args.quick),
            "checks": report["checks"], "drift_float32": f32._asdict() if f32 is not None else None,
            "report": os.path.relpath(os.path.join(args.output, "report.json"), REPO), "wall_s": total,
        }
        from mlpjax.validate import to_jsonable

        write_json("validate_cu.json", to_jsonable(payload))
        how = "`taskset -c 1 python benchmarks/validate_cu.py" + (f" --model {args.model}" if args.model else "") + (" --quick" if args.quick else "") + "`"
        trained = "" if args.model else (
            f" Potential trained here: quickstart config, {train_info['epochs']} epochs in {train_info['train_wall_s']:.0f} s "
            f"({train_info['stop_reason']}), test E MAE {train_info['test_metrics']['energy_mae_meV_per_atom']:.2f} meV/atom, "
            f"F MAE {train_info['test_metrics']['force_mae_meV_per_A']:.1f} meV/Å.")
        body = f"{how}: quickstart SchNet Cu vs ASE's EMT, float64.{trained}\n\n{table}\n\n{drift_table}\n\n" + "\n".join(f"- {e}" for e in extra)
        append_results("Physical validation, quickstart SchNet Cu vs EMT", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
