"""How the NPT (and NVT Nosé–Hoover) extended energy error scales with the timestep (issue 5).

jax-md's ``npt_nose_hoover`` (Martyna–Tuckerman–Tobias–Klein, MTK) and ``nvt_nose_hoover``
are time-reversible splittings whose conserved extended energy
E_cons = E_pot + E_kin + thermostat/barostat terms + P·V fluctuates by O(dt²) and, for a
consistent force/pressure pair, does not drift. A pressure that is not the box derivative of
the same energy, or a barostat mass that jumps, shows up as an error that does not fall by 4×
when dt halves. This runs the same start (fcc Cu, 108 atoms, float64, Maxwell–Boltzmann at
2 T, target T and 0 GPa) for the same simulated time at several timesteps and reports, per dt,
the RMS and largest deviation of E_cons from its start and its linear drift (meV/atom/ps),
with the ratios between successive timesteps (dt² scaling: 4.0).

    taskset -c 1 python benchmarks/npt_conservation.py --model M.mlpjax      # ~5 min on one core
    python benchmarks/npt_conservation.py --model M.mlpjax --ps 0.1 --no-record  # smoke run

Writes ``benchmarks/results/npt_conservation.json`` and appends a section to RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from _common import append_results, environment, markdown_table, write_json  # noqa: E402


def run(pot, ensemble: str, dt_fs: float, args) -> dict:
    from ase.build import bulk
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    from mlpjax.data.emt import EMT_CU_LATTICE
    from mlpjax.md import MDConfig, simulate

    atoms = bulk("Cu", "fcc", a=EMT_CU_LATTICE, cubic=True).repeat(args.repeat)
    MaxwellBoltzmannDistribution(atoms, temperature_K=2 * args.temperature, rng=np.random.default_rng(0))
    Stationary(atoms)
    steps = int(round(args.ps * 1000 / dt_fs))
    log_every = max(1, int(round(args.log_fs / dt_fs)))
    steps -= steps % log_every
    cfg = MDConfig(ensemble=ensemble, temperature_K=args.temperature, pressure_GPa=0.0, timestep_fs=dt_fs, steps=steps,
                   chunk_steps=max(log_every, 200), log_every=log_every, thermostat_tau_fs=args.thermostat_tau,
                   barostat_tau_fs=args.barostat_tau, dtype="float64", initial_velocities="atoms", seed=0)
    t0 = time.perf_counter()
    res = simulate(pot, atoms, cfg, progress=False)
    th = res.thermo
    n = len(atoms)
    dev = (th["E_cons_eV"] - th["E_cons_eV"][0]) / n * 1e3  # meV/atom
    drift = float(np.polyfit(th["time_ps"], dev, 1)[0])
    return {"ensemble": ensemble, "dt_fs": dt_fs, "steps": steps, "n_atoms": n, "rms_meV_per_atom": float(np.sqrt(np.mean(dev**2))),
            "max_meV_per_atom": float(np.abs(dev).max()), "drift_meV_per_atom_per_ps": drift,
            "T_mean_K": float(np.mean(th["T_K"][len(dev) // 2:])), "V_range_A3_per_atom": float(np.ptp(th["V_A3"]) / n),
            "wall_s": time.perf_counter() - t0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a potential file (e.g. the quickstart Cu model)")
    p.add_argument("--ensembles", default="npt,nvt_nh")
    p.add_argument("--timesteps", default="4,2,1,0.5", help="fs, comma list (largest first)")
    p.add_argument("--ps", type=float, default=0.4, help="simulated time per run")
    p.add_argument("--log-fs", type=float, default=4.0, help="fs between E_cons samples")
    p.add_argument("--repeat", type=int, default=3, help="cubic repeats (3: 108 atoms)")
    p.add_argument("--temperature", type=float, default=300.0)
    p.add_argument("--thermostat-tau", type=float, default=100.0, help="fs")
    p.add_argument("--barostat-tau", type=float, default=500.0, help="fs")
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    import mlpjax

    pot = mlpjax.load(args.model)
    rows, results = [], []
    for ensemble in args.ensembles.split(","):
        prev = None
        for dt in (float(x) for x in args.timesteps.split(",")):
            r = run(pot, ensemble, dt, args)
            results.append(r)
            ratio = "—" if prev is None else f"{prev['rms_meV_per_atom'] / r['rms_meV_per_atom']:.2f}"
            rows.append([ensemble, f"{dt:g}", r["steps"], f"{r['rms_meV_per_atom']:.2e}", f"{r['max_meV_per_atom']:.2e}",
                         ratio, f"{r['drift_meV_per_atom_per_ps']:+.2e}", f"{r['T_mean_K']:.0f}", f"{r['wall_s']:.0f}"])
            print(" | ".join(str(c) for c in rows[-1]), flush=True)
            prev = r
    table = markdown_table(["ensemble", "dt fs", "steps", "RMS ΔE_cons meV/atom", "max |ΔE_cons| meV/atom",
                            "RMS ratio to the dt above (dt²: 4)", "drift meV/atom/ps", "⟨T⟩ K (2nd half)", "wall s"], rows)
    print("\n" + table)
    if not args.no_record:
        write_json("npt_conservation.json", {"environment": environment(), "potential": os.path.abspath(args.model),
                                             "args": vars(args), "results": results})
        body = (f"`taskset -c 1 python benchmarks/npt_conservation.py --model {args.model}`: fcc Cu, "
                f"{results[0]['n_atoms']} atoms, float64, {args.ps:g} ps per run from the same start (velocities at "
                f"{2 * args.temperature:g} K), target {args.temperature:g} K and 0 GPa, τ_T {args.thermostat_tau:g} fs, "
                f"τ_P {args.barostat_tau:g} fs; E_cons = jax-md's extended-system invariant, sampled every "
                f"{args.log_fs:g} fs.\n\n{table}")
        append_results("Extended-energy error of Nosé–Hoover NPT/NVT against the timestep", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
