"""Uncertainty quality (issue 15): a full ensemble (M = 5), a shallow ensemble (M = 8 heads) and GAP's
predictive variance, trained on 300–700 K bulk EMT Cu, judged on an in-distribution test set and on
out-of-distribution frames the models never saw.

1. **Training data** (``mlpjax.data.emt.emt_cu(seed=0)`` without liquid): Langevin MD of the fcc
   crystal at 300/500/700 K in 32-atom cells (2×2×2 cubic; 32-atom cells keep GAP's predictive
   variance, which costs seconds per 108-atom cell, inside the time budget), rattled cells (0.08 Å) and strained cells
   (symmetric strain up to ``TRAIN_MAX_STRAIN`` = 2 %, so ±5 % is outside). A fixed 10 % of it is
   the validation set of all three methods: the ensembles' stored calibration factors (fitted by
   ``train`` at its end, √⟨err²/σ²⟩) and GAP's (``fit_calibration`` on the same structures) come
   from it.
2. **Test (in distribution)**: the same recipe with another seed (``emt_cu(seed=1)``).
3. **Out of distribution** (EMT-labelled, Langevin 2 fs, friction 0.02, frames 40 fs apart after
   400 fs; the hot frames are ``emt_cu``'s MD): *hot*: 32-atom crystal MD at 1,200 and 1,500 K;
   *compressed* / *expanded*: 500 K MD of 32-atom cells at a·0.95 / a·1.05 (±5 % linear strain,
   −14 / +16 % volume); *surface*: 500 K MD of (111) and (100) slabs (3×3×4, 36 atoms, 7 Å vacuum);
   *vacancy*: 500 K MD of a 31-atom cell (one atom of 2×2×2 removed); *liquid*: 108 atoms at 13.2 Å³/atom melted at
   2,500 K, sampled at 1,750 K (``emt_cu``'s liquid).
4. **Models**: full ensemble of 5 quickstart SchNets (32×2, 4.5 Å; own seed and data order each),
   shallow ensemble of one quickstart SchNet with 8 readout heads (Gaussian NLL), both batch 4,
   warmup-cosine at 3e-3, EMA 0.99, float32, ``--epochs`` epochs, best validation epoch; GAP
   (``GAP_MODEL``: SOAP + sparse GP, energies and forces, float64; fitted last since GAP switches
   ``jax_enable_x64`` on for the process).
5. **Metrics** (``mlpjax.validate.uncertainty.uncertainty_metrics`` with the validation
   calibration): force MAE; Spearman ρ between the per-atom force model deviation σ_F,i and
   |ΔF_i| (per atom), and between the max / mean σ_F,i of a structure and its force RMSE (per
   structure); miscalibration area and Gaussian NLL of the force components (σ_ic = σ_F,i/√3),
   raw and calibrated; AUROC of a structure's max σ_F for telling OOD frames from test frames
   (0.5 = no better than chance; 1 = every OOD frame above every test frame).

Prints the tables, writes ``benchmarks/results/uncertainty.json`` and appends to RESULTS.md.
Usage: ``python benchmarks/uncertainty.py [--quick] [--epochs 40] [--frames 16]``.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import numpy as np

from _common import append_results, environment, markdown_table, write_json

HERE = os.path.dirname(os.path.abspath(__file__))
QUICKSTART_CONFIG = os.path.join(HERE, "..", "experiments", "configs", "quickstart_cu.yaml")

# GAP measured here (and timed by benchmarks/ensemble_cost.py): a CPU-sized SOAP + sparse GP on
# energies and forces (experiments/configs/gap_cu.yaml has n_max 8, 400 sparse points and stresses).
GAP_MODEL = {"n_max": 6, "l_max": 4, "sigma": 0.5, "zeta": 4, "n_sparse": 150, "selection": "cur",
             "energy_sigma": 0.0005, "force_sigma": 0.01, "stress_sigma": 0.0, "delta": 1.0}
GAP_CUTOFF = 4.5  # Å
TRAIN_MAX_STRAIN = 0.02
OOD_KINDS = ("hot", "compressed", "expanded", "surface", "vacancy", "liquid")


# ------------------------------------------------------------------------------------------ data
def _label(atoms, source: str, frame: int):
    """An EMT-labelled Configuration: energy eV, forces [n, 3] eV/Å, stress [3, 3] eV/Å³ (periodic only)."""
    from ase.calculators.emt import EMT

    from mlpjax import data

    atoms = atoms.copy()
    atoms.calc = EMT()
    c = data.Configuration.from_atoms(atoms, source=source, frame=frame)
    c.energy = float(atoms.get_potential_energy())
    c.forces = np.asarray(atoms.get_forces())
    if all(atoms.pbc):
        c.stress = np.asarray(atoms.get_stress(voigt=False))
    return c


def _md_frames(atoms, temperature_K: float, n: int, seed: int, source: str, *, every: int = 20,
               equilibrate: int = 200) -> list:
    """``n`` EMT Langevin frames (2 fs, ``every`` steps apart after ``equilibrate`` steps) of ``atoms``."""
    from ase import units
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import thermalize_momenta

    atoms = atoms.copy()
    atoms.calc = EMT()
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
    dyn = Langevin(atoms, 2 * units.fs, temperature_K=temperature_K, friction=0.02, fixcm=False, rng=rng)
    dyn.run(equilibrate)
    out = []
    for k in range(n):
        dyn.run(every)
        out.append(_label(atoms, source, k))
    return out


def in_distribution(frames: int, seed: int) -> list:
    from mlpjax.data.emt import emt_cu

    return emt_cu(repeats=(2,), md_frames_per_run=frames, n_rattled=frames, n_strained=frames,
                  max_strain=TRAIN_MAX_STRAIN, liquid_temperatures_K=(), seed=seed)


def out_of_distribution(n: int) -> dict[str, list]:
    """{kind: configurations}: 2n frames per kind (n for the liquid)."""
    from ase.build import bulk, fcc100, fcc111

    from mlpjax.data.emt import EMT_CU_LATTICE, emt_cu

    cube = bulk("Cu", "fcc", a=EMT_CU_LATTICE, cubic=True)
    out = {"hot": emt_cu(temperatures_K=(1200.0, 1500.0), repeats=(2,), md_frames_per_run=n, n_rattled=0, n_strained=0,
                         liquid_temperatures_K=(), seed=2)}
    for kind, scale, seed in (("compressed", 0.95, 3), ("expanded", 1.05, 4)):
        a = bulk("Cu", "fcc", a=EMT_CU_LATTICE * scale, cubic=True).repeat(2)
        out[kind] = _md_frames(a, 500.0, 2 * n, seed, f"{kind}:500K:32")
    slabs = []
    for facet, build, seed in (("111", fcc111, 5), ("100", fcc100, 6)):
        s = build("Cu", size=(3, 3, 4), a=EMT_CU_LATTICE, vacuum=7.0, periodic=False)
        s.pbc = (True, True, False)
        slabs += _md_frames(s, 500.0, n, seed, f"surface{facet}:500K:36")
    out["surface"] = slabs
    vac = cube.repeat(2)
    del vac[0]
    out["vacancy"] = _md_frames(vac, 500.0, 2 * n, 7, "vacancy:500K:31")
    out["liquid"] = emt_cu(temperatures_K=(), n_rattled=0, n_strained=0, liquid_temperatures_K=(1750.0,),
                           liquid_frames_per_run=n, seed=8)
    return out


# ------------------------------------------------------------------------------------------ metrics
def auroc(positive, negative) -> float:
    """P(a positive scores above a negative) (ties count ½): the Mann–Whitney AUROC."""
    from scipy import stats

    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    ranks = stats.rankdata(np.concatenate([pos, neg]))
    return float((ranks[:pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def set_metrics(preds, configs, calibration) -> dict:
    from mlpjax.validate.uncertainty import uncertainty_metrics

    m = uncertainty_metrics(preds, configs, calibration)
    df = np.concatenate([np.asarray(p.forces) - np.asarray(c.forces) for p, c in zip(preds, configs)])
    m["force_mae_meV_per_A"] = 1e3 * float(np.mean(np.abs(df)))
    m["max_force_std_median_meV_per_A"] = 1e3 * float(np.median([p.max_force_std for p in preds])) * calibration.forces
    return m


def evaluate(name: str, preds_by_set: dict, sets: dict, calibration) -> dict:
    """Metrics of one method on every set, on test+OOD and on all OOD; AUROCs of max σ_F vs test."""
    out = {"calibration": calibration.as_dict(), "sets": {}}
    ood = [k for k in sets if k != "test"]
    groups = {**{k: [k] for k in sets}, "OOD (all)": ood, "test + OOD": ["test"] + ood}
    test_max = [p.max_force_std for p in preds_by_set["test"]]
    for label, keys in groups.items():
        preds = [p for k in keys for p in preds_by_set[k]]
        confs = [c for k in keys for c in sets[k]]
        m = set_metrics(preds, confs, calibration)
        if label != "test" and label != "test + OOD":
            m["auroc_max_sigma_vs_test"] = auroc([p.max_force_std for p in preds], test_max)
        out["sets"][label] = m
    s = out["sets"]
    print(f"{name}: test F MAE {s['test']['force_mae_meV_per_A']:.1f} meV/Å, test+OOD ρ per structure "
          f"{s['test + OOD']['force_spearman_per_structure_max']:.2f} (max) / "
          f"{s['test + OOD']['force_spearman_per_structure_mean']:.2f} (mean), AUROC OOD "
          f"{s['OOD (all)']['auroc_max_sigma_vs_test']:.2f}", flush=True)
    return out


# ------------------------------------------------------------------------------------------ runs
def _train_ensemble(kind: str, members: int, epochs: int, train_set, valid_set, workdir: str):
    from mlpjax.config import load_config, override
    from mlpjax.training import train

    cfg = override(load_config(QUICKSTART_CONFIG), epochs=epochs, ensemble_size=members, ensemble_kind=kind,
                   valid_fraction=0.0, test_fraction=0.0, max_time_minutes=None, patience=None)
    t0 = time.perf_counter()
    res = train(cfg, train_set, valid_set, output_dir=os.path.join(workdir, f"{kind}{members}"), progress=False)
    return res.potential, time.perf_counter() - t0, res.best_epoch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small variant: 4 frames per source, 6 epochs, 3 OOD frames")
    p.add_argument("--epochs", type=int, default=None, help="epochs of both ensembles (default 40; quick 6)")
    p.add_argument("--frames", type=int, default=None,
                   help="emt_cu training frames per MD run and rattled/strained count (default 16; quick 4)")
    p.add_argument("--ood-frames", type=int, default=None, help="OOD frames per sub-kind (default 6; quick 3)")
    p.add_argument("--workdir", default=None)
    p.add_argument("--no-record", action="store_true", help="print only: no JSON, no RESULTS.md section")
    args = p.parse_args(argv)
    epochs = args.epochs or (6 if args.quick else 40)
    frames = args.frames or (4 if args.quick else 16)
    n_ood = args.ood_frames or (3 if args.quick else 6)

    import jax

    from mlpjax.config import TrainConfig
    from mlpjax.training import train
    from mlpjax.validate.uncertainty import Calibration, fit_calibration

    t_start = time.perf_counter()
    workdir = args.workdir or tempfile.mkdtemp(prefix="mlpjax_uncertainty_")
    pool = in_distribution(frames, seed=0)
    order = np.random.default_rng(0).permutation(len(pool))
    n_valid = max(4, len(pool) // 10)
    valid_set, train_set = [pool[i] for i in order[:n_valid]], [pool[i] for i in order[n_valid:]]
    sets = {"test": in_distribution(max(2, frames // 3), seed=1), **out_of_distribution(n_ood)}
    t_data = time.perf_counter() - t_start
    print(f"data: {len(train_set)} train, {len(valid_set)} valid, "
          + ", ".join(f"{k} {len(v)}" for k, v in sets.items()) + f" ({t_data:.0f} s)", flush=True)

    results, train_s, notes = {}, {}, {}
    for kind, members in (("full", 5), ("shallow", 8)):
        name = f"{kind} ensemble M={members}"
        ens, dt, best = _train_ensemble(kind, members, epochs, train_set, valid_set, workdir)
        train_s[name], notes[name] = dt, {"best_epoch": best}
        print(f"{name}: trained in {dt:.0f} s (best epoch {best}), calibration {ens.calibration}", flush=True)
        cal = Calibration(*ens.calibration)
        preds = {k: ens.predict_uncertain(v, calibrated=False) for k, v in sets.items()}
        results[name] = evaluate(name, preds, sets, cal)
    if jax.config.jax_enable_x64:
        raise RuntimeError("jax_enable_x64 was switched on before the ensembles' float32 evaluation")

    from mlpjax.models.gap import predict_uncertain as gap_predict_uncertain

    t0 = time.perf_counter()
    gap_cfg = TrainConfig(model="gap", model_config=dict(GAP_MODEL), cutoff=GAP_CUTOFF, valid_fraction=0.0,
                          test_fraction=0.0, dtype="float64", seed=0)
    gap = train(gap_cfg, train_set, valid_set, output_dir=os.path.join(workdir, "gap"), progress=False).potential
    name = f"GAP ({GAP_MODEL['n_sparse']} sparse)"
    train_s[name] = time.perf_counter() - t0
    print(f"{name}: fitted in {train_s[name]:.0f} s", flush=True)
    cal = fit_calibration(gap_predict_uncertain(gap, valid_set), valid_set)
    preds = {k: gap_predict_uncertain(gap, v) for k, v in sets.items()}
    results[name] = evaluate(name, preds, sets, cal)
    notes[name] = {}

    def r(x, nd=2):
        return "—" if x is None or not math.isfinite(x) else round(float(x), nd)

    headers = ["method", "train s", "F MAE test (meV/Å)", "F MAE OOD (meV/Å)",
               "ρ per structure, max σ (test+OOD)", "ρ per structure, mean σ (test+OOD)", "ρ per atom (test+OOD)",
               "ρ per structure, max σ (test)", "ρ per atom (test)", "calibration factor (valid)",
               "miscal. area test raw / cal.", "NLL test cal.", "miscal. area test+OOD cal.", "NLL test+OOD cal.",
               "AUROC OOD vs test (max σ)"]
    rows = []
    for name, res in results.items():
        s = res["sets"]
        t, a, o = s["test"], s["test + OOD"], s["OOD (all)"]
        rows.append([name, round(train_s[name]), r(t["force_mae_meV_per_A"], 1), r(o["force_mae_meV_per_A"], 1),
                     r(a["force_spearman_per_structure_max"]), r(a["force_spearman_per_structure_mean"]),
                     r(a["force_spearman_per_atom"]), r(t["force_spearman_per_structure_max"]),
                     r(t["force_spearman_per_atom"]), r(res["calibration"]["forces"], 3),
                     f"{r(t['force_miscalibration_area'], 3)} / {r(t['force_miscalibration_area_calibrated'], 3)}",
                     r(t["force_nll_calibrated"]), r(a["force_miscalibration_area_calibrated"], 3),
                     r(a["force_nll_calibrated"]), r(o["auroc_max_sigma_vs_test"])])
    summary = markdown_table(headers, rows)
    kind_headers = ["set", "n", *[f"{n}: F MAE / RMSE / RMS σ cal. (meV/Å), median max σ, ρ atom, AUROC"
                                  for n in results]]
    kind_rows = []
    for label in ["test", *[k for k in sets if k != "test"], "OOD (all)", "test + OOD"]:
        n = len(sets[label]) if label in sets else sum(len(sets[k]) for k in sets if label != "OOD (all)" or k != "test")
        cells = []
        for res in results.values():
            m = res["sets"][label]
            cells.append(f"{r(m['force_mae_meV_per_A'], 1)} / {r(m['force_rmse_meV_per_A'], 1)} / "
                         f"{r(m['force_rms_std_meV_per_A_calibrated'], 1)}, {r(m['max_force_std_median_meV_per_A'], 0)}, "
                         f"{r(m['force_spearman_per_atom'])}, {r(m.get('auroc_max_sigma_vs_test'))}")
        kind_rows.append([label, n, *cells])
    per_kind = markdown_table(kind_headers, kind_rows)
    print(summary)
    print(per_kind)
    total = time.perf_counter() - t_start
    print(f"total {total / 60:.1f} min")
    if args.no_record:
        return 0
    env = environment()
    write_json("uncertainty.json", {"environment": env, "epochs": epochs, "frames": frames, "ood_frames": n_ood,
                                    "n_train": len(train_set), "n_valid": len(valid_set),
                                    "sets": {k: len(v) for k, v in sets.items()}, "gap_model": GAP_MODEL,
                                    "train_s": train_s, "notes": notes, "results": results, "total_s": total})
    cmd = "benchmarks/uncertainty.py" + (" --quick" if args.quick else "") + \
        (f" --epochs {args.epochs}" if args.epochs else "") + (f" --frames {args.frames}" if args.frames else "") + \
        (f" --ood-frames {args.ood_frames}" if args.ood_frames else "")
    ood_desc = ", ".join(f"{k} {len(sets[k])}" for k in sets if k != "test")
    body = (
        f"`python {cmd}`. Trained on {len(train_set)} EMT Cu structures (crystal MD 300/500/700 K, rattled, strained ≤ "
        f"{100 * TRAIN_MAX_STRAIN:.0f} %; 32-atom cells; no liquid, no surface), {len(valid_set)} validation structures "
        f"(the ensembles' best epoch and the σ calibration of every method). Full ensemble: 5 quickstart SchNets (32×2, 4.5 Å); "
        f"shallow: one quickstart SchNet with 8 heads (NLL); both {epochs} epochs, float32. GAP: SOAP n_max "
        f"{GAP_MODEL['n_max']}, l_max {GAP_MODEL['l_max']}, {GAP_MODEL['n_sparse']} sparse points, energies + forces, "
        f"float64. Test (in distribution, other seed): {len(sets['test'])}; out of distribution: {ood_desc} "
        f"(hot = 1,200/1,500 K crystal MD; compressed/expanded = ±5 % linear strain, 500 K; surface = (111)/(100) "
        f"36-atom slabs, 500 K; vacancy = 31 atoms, 500 K; liquid = 108 atoms, 1,750 K). σ_F = the per-atom force "
        f"model deviation; ρ: "
        f"Spearman with |ΔF_i| (per atom) or with the structure's force RMSE (per structure); miscalibration area and "
        f"NLL of force components with the validation-fitted factor (\"cal.\"); AUROC: max σ_F of a structure, OOD "
        f"frames vs test frames. Whole benchmark {total / 60:.1f} min on {os.cpu_count()} CPU cores shared with other "
        f"jobs.\n\n{summary}\n\nPer set (F MAE / F RMSE / RMS calibrated σ per component, all meV/Å; median over "
        f"structures of the calibrated max σ_F, meV/Å; ρ per atom; AUROC against the test frames):\n\n{per_kind}\n"
    )
    append_results("Uncertainty quality: full vs shallow ensemble vs GAP, in and out of distribution", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
