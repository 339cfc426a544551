"""The mlpjax quickstart: make data → train SchNet → validate → MD → analysis.

    python experiments/quickstart.py [--output quickstart_out]

1. Data: 300 Cu configurations (32 and 108 atoms) labelled by ASE's EMT: crystal
   Langevin MD at 300/500/700 K, rattled and strained cells, and a melted 108-atom cell at
   1,750 and 1,000 K (mlpjax.data.emt.emt_cu). The liquid frames are what make the fit's
   volume response right (bulk modulus and C12; see benchmarks/RESULTS.md).
2. Train SchNet (experiments/configs/quickstart_cu.yaml) on an 80/10/10 split.
3. Validate: test-set energy and force MAE against the targets
   (≤ 2 meV/atom, ≤ 50 meV/Å) and a parity plot.
4. MD in jax-md with the trained potential: 10 ps NVT (Langevin, 300 K, 2 fs) of a
   500-atom cell, then 1 ps NVE (1 fs) from its last state, reporting the drift of the
   total energy in meV/atom/ps.
5. Analysis: g(r) and the first-shell coordination number of the NVT trajectory,
   and the same for EMT's own MD in ASE (a short run) as a reference.
Runs in under ~10 minutes on 2 CPU cores. Writes OUTPUT/summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET_E_MAE = 2.0  # meV/atom
TARGET_F_MAE = 50.0  # meV/Å


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="quickstart_out")
    p.add_argument("--config", default=os.path.join(HERE, "configs", "quickstart_cu.yaml"))
    p.add_argument("--nvt-ps", type=float, default=10.0, help="length of the NVT run (ps)")
    p.add_argument("--nve-ps", type=float, default=1.0, help="length of the NVE drift check (ps)")
    p.add_argument("--repeat", type=int, default=5, help="MD cell = repeat³ cubic fcc cells (4·repeat³ atoms)")
    p.add_argument("--max-train-minutes", type=float, default=None, help="override the config's training time limit")
    p.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    from ase.build import bulk

    from mlpjax import data
    from mlpjax.analysis import coordination_number, first_minimum, rdf
    from mlpjax.config import load_config, override
    from mlpjax.data.emt import EMT_CU_LATTICE, emt_cu
    from mlpjax.md import MDConfig, simulate
    from mlpjax.training import train

    out = args.output
    os.makedirs(out, exist_ok=True)
    summary: dict = {}
    t_start = time.perf_counter()

    def stage(name):
        print(f"\n=== {name}  (t = {time.perf_counter() - t_start:.0f} s)", flush=True)

    # 1. data ------------------------------------------------------------------
    stage("1/5 data: EMT fcc Cu")
    data_path = os.path.join(out, "cu_emt.xyz")
    configs = emt_cu(seed=0)
    data.write_extxyz(data_path, configs)
    configs = data.read(data_path)  # round trip through the file, with the sanity checks
    print(f"{len(configs)} configurations ({sorted({c.n_atoms for c in configs})} atoms) -> {data_path}")
    summary["n_configurations"] = len(configs)

    # 2. train -----------------------------------------------------------------
    stage("2/5 train SchNet")
    cfg = override(load_config(args.config), max_time_minutes=args.max_train_minutes, epochs=args.epochs)
    run_dir = os.path.join(out, "schnet")
    result = train(cfg, configs, output_dir=run_dir, progress=not args.quiet)
    pot = result.potential
    print(f"stopped after epoch {result.epochs_completed} ({result.stop_reason}), best epoch {result.best_epoch}")
    summary["training"] = {"epochs_completed": result.epochs_completed, "epochs": int(cfg.epochs), "stop_reason": result.stop_reason,
                           "best_epoch": result.best_epoch, "seed": int(cfg.seed), "train_s": result.history[-1]["time_s"] if result.history else 0.0}
    if result.stop_reason == "max_time":
        print(f"note: the time limit ({cfg.max_time_minutes:g} min) cut training at epoch {result.epochs_completed} of "
              f"{cfg.epochs}: the errors below are those of a shorter run and not comparable with the README's")

    # 3. validate --------------------------------------------------------------
    stage("3/5 validate on the held-out test set")
    m = result.test_metrics
    e_mae, f_mae = m["energy_mae_meV_per_atom"], m["force_mae_meV_per_A"]
    ok = e_mae <= TARGET_E_MAE and f_mae <= TARGET_F_MAE
    print(
        f"test ({m['n_structures']} structures): energy MAE {e_mae:.3f} meV/atom (target ≤ {TARGET_E_MAE}), "
        f"force MAE {f_mae:.2f} meV/Å (target ≤ {TARGET_F_MAE}), energy R² {m['energy_r2']:.5f}  "
        + ("[PASS]" if ok else "[MISSED]")
    )
    summary["test_metrics"] = m
    summary["targets_met"] = bool(ok)
    summary["parity_plot"] = result.paths.get("parity")

    # 4. MD --------------------------------------------------------------------
    stage(f"4/5 MD: {args.nvt_ps:g} ps NVT at 300 K, then {args.nve_ps:g} ps NVE")
    atoms = bulk("Cu", "fcc", a=EMT_CU_LATTICE, cubic=True).repeat((args.repeat,) * 3)
    n = len(atoms)
    nvt_steps = int(round(args.nvt_ps * 1000 / 2.0))
    nvt = simulate(
        pot,
        atoms,
        MDConfig(ensemble="nvt", temperature_K=300.0, timestep_fs=2.0, steps=nvt_steps, log_every=50, traj_every=250, friction_per_ps=2.0),
        trajectory=os.path.join(out, "nvt.extxyz"),
        log=os.path.join(out, "nvt.csv"),
        progress=not args.quiet,
    )
    T = nvt.thermo["T_K"]
    t_mean = float(np.mean(T[len(T) // 2 :]))
    print(f"NVT: {n} atoms, {nvt_steps} steps, ⟨T⟩ (second half) = {t_mean:.1f} K, {nvt.timings['steps_per_s']:.1f} steps/s")
    nve_steps = int(round(args.nve_ps * 1000 / 1.0))
    nve = simulate(
        pot,
        nvt.atoms,
        MDConfig(ensemble="nve", timestep_fs=1.0, steps=nve_steps, log_every=10, traj_every=nve_steps, initial_velocities="atoms"),
        log=os.path.join(out, "nve.csv"),
        progress=not args.quiet,
    )
    e_tot = nve.thermo["E_tot_eV"]
    t_ps = nve.thermo["time_ps"]
    slope = float(np.polyfit(t_ps, e_tot, 1)[0]) / n * 1000.0  # meV/atom/ps
    fluct = float(np.std(e_tot) / n * 1000.0)
    print(f"NVE: drift {slope:+.4f} meV/atom/ps, fluctuation {fluct:.4f} meV/atom (float32)")
    summary["md"] = {
        "n_atoms": n,
        "nvt_ps": args.nvt_ps,
        "nvt_mean_T_K": t_mean,
        "nvt_steps_per_s": nvt.timings["steps_per_s"],
        "nve_ps": args.nve_ps,
        "nve_drift_meV_per_atom_per_ps": slope,
        "nve_fluctuation_meV_per_atom": fluct,
    }

    # 5. analysis --------------------------------------------------------------
    stage("5/5 analysis: g(r) and coordination, against EMT's own MD")
    from ase.io import read as ase_read

    frames = ase_read(os.path.join(out, "nvt.extxyz"), ":")
    frames = frames[len(frames) // 2 :]
    g_mlp = rdf(frames, r_max=6.0, n_bins=120)
    ref_frames = _emt_reference_md(atoms, n_frames=len(frames))
    g_emt = rdf(ref_frames, r_max=6.0, n_bins=120)
    peak_mlp, peak_emt = float(g_mlp.r[np.argmax(g_mlp.g)]), float(g_emt.r[np.argmax(g_emt.g)])
    cn_mlp, cn_emt = coordination_number(g_mlp), coordination_number(g_emt)
    diff = float(np.sqrt(np.mean((g_mlp.g - g_emt.g) ** 2)))
    print(f"first peak {peak_mlp:.3f} Å (EMT {peak_emt:.3f} Å); first minimum {first_minimum(g_mlp):.2f} Å; "
          f"coordination {cn_mlp:.2f} (EMT {cn_emt:.2f}); RMS g(r) difference {diff:.3f}")
    _plot_rdf(g_mlp, g_emt, os.path.join(out, "rdf.png"))
    summary["analysis"] = {
        "rdf_first_peak_A": peak_mlp,
        "rdf_first_peak_emt_A": peak_emt,
        "coordination_number": cn_mlp,
        "coordination_number_emt": cn_emt,
        "rdf_rms_difference_vs_emt": diff,
        "rdf_plot": os.path.join(out, "rdf.png"),
    }
    summary["wall_time_s"] = time.perf_counter() - t_start
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"\ndone in {summary['wall_time_s']:.0f} s; summary in {os.path.join(out, 'summary.json')}")
    return 0 if ok else 1


def _emt_reference_md(atoms, *, n_frames: int):
    """EMT's own Langevin MD at 300 K (ASE), same cell, same friction: reference g(r)."""
    from ase import units
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import thermalize_momenta

    a = atoms.copy()
    a.calc = EMT()
    rng = np.random.default_rng(1)
    thermalize_momenta(a, 300.0, rng=rng)
    dyn = Langevin(a, 2.0 * units.fs, temperature_K=300.0, friction=2.0 / (1000 * units.fs), fixcm=False, rng=rng)
    dyn.run(500)
    frames = []
    for _ in range(n_frames):
        dyn.run(50)
        frames.append(a.copy())
    return frames


def _plot_rdf(g_mlp, g_emt, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(g_emt.r, g_emt.g, "k-", lw=2, label="EMT (ASE MD)")
    ax.plot(g_mlp.r, g_mlp.g, "C1--", lw=1.5, label="SchNet (jax-md)")
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("g(r)")
    ax.set_title("fcc Cu, 300 K")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
