"""Throughput of batched replicas (``mlpjax.replicas.simulate_replicas``, one vmapped chunk for
all replicas) against running ``mlpjax.md.simulate`` once per replica.

108-atom fcc Cu (3×3×3 cubic cells, rattled 0.03 Å), the tiny untrained SchNet of the tests
(features 16, 2 interactions, 8 Gaussians, cutoff 4 Å), float32, Langevin NVT at 300 K, dt 2 fs,
chunks of 50 steps with a thermo record every 10 steps (as a production run would log). For each
replica count R it reports

* replica-steps/s of the vmapped run: R × batch steps/s;
* replica-steps/s of the single run: simulate's steps/s, which is what R sequential runs give
  per replica-step (measured again right before each vmapped run, so the pair shares the
  machine's state);
* the speed-up of the former over the latter;
* wall time of the whole job including compilation: one ``simulate_replicas`` call against
  R × the wall time of one ``simulate`` call (each call compiles its own chunk; the single run
  is measured once per R and multiplied, its cost does not depend on the seed).

Steps/s come from the FASTEST chunk after the first (compilation) chunk: on a shared machine
other processes only ever slow a chunk down, and medians moved by ±40 % between repeats here.

Results: a table on stdout, ``benchmarks/results/md_replicas.json`` and a dated section
appended to ``benchmarks/RESULTS.md``.

    taskset -c 0 python benchmarks/md_replicas.py              # R = 1, 4, 16; ~6 min on one core
    taskset -c 0 python benchmarks/md_replicas.py --replicas 1,4 --chunks 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax
import numpy as np

from _common import append_results, environment, markdown_table, write_json

MODEL = {"features": 16, "interactions": 2, "num_rbf": 8, "filter_hidden": 16}
CUTOFF = 4.0  # Å
TIMESTEP_FS = 2.0
TEMPERATURE_K = 300.0
CHUNK_STEPS = 50
LOG_EVERY = 10


def make_potential():
    from mlpjax import models
    from mlpjax.potential import Potential

    pot = Potential("schnet", models.make_config("schnet", MODEL), cutoff=CUTOFF, species=(29,),
                    reference_energies=(0.0,), avg_num_neighbors=40.0, energy_scale=10.0)
    return pot.replace(params=pot.init_params(jax.random.PRNGKey(0)))


def cu108():
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.rattle(0.03, seed=1)
    return atoms


def config(n_chunks: int):  # n_chunks 0: no steps (warm-up)
    from mlpjax.md import MDConfig

    return MDConfig(ensemble="nvt", temperature_K=TEMPERATURE_K, timestep_fs=TIMESTEP_FS, steps=CHUNK_STEPS * n_chunks,
                    chunk_steps=CHUNK_STEPS, log_every=LOG_EVERY, friction_per_ps=5.0, dtype="float32", seed=0)


def steady_steps_per_s(chunk_s) -> float:
    """Steps/s of the fastest chunk after the first (which compiles)."""
    return 1.0 / float(np.min([t / CHUNK_STEPS for t in chunk_s[1:]]))


def bench_single(pot, atoms, n_chunks: int) -> dict:
    from mlpjax.md import simulate

    t0 = time.perf_counter()
    res = simulate(pot, atoms, config(n_chunks), progress=False)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "compile_s": res.timings["compile_s"], "steps_per_s": steady_steps_per_s(res.timings["chunk_s"])}


def bench_replicas(pot, atoms, n_replicas: int, n_chunks: int) -> dict:
    from mlpjax.replicas import simulate_replicas

    t0 = time.perf_counter()
    res = simulate_replicas(pot, atoms, config(n_chunks), n_replicas=n_replicas, progress=False)
    wall = time.perf_counter() - t0
    batch = steady_steps_per_s(res.timings["chunk_s"])
    return {"wall_s": wall, "compile_s": res.timings["compile_s"], "batch_steps_per_s": batch,
            "replica_steps_per_s": batch * n_replicas,
            "mean_T_K": [float(th["T_K"][len(th["T_K"]) // 2:].mean()) for th in res.thermo]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicas", default="1,4,16", help="comma-separated replica counts (default 1,4,16)")
    ap.add_argument("--chunks", type=int, default=6, help=f"chunks of {CHUNK_STEPS} steps per run; the first is warm-up")
    ap.add_argument("--no-record", action="store_true", help="do not write JSON / RESULTS.md")
    args = ap.parse_args(argv)
    counts = [int(r) for r in args.replicas.split(",")]
    if args.chunks < 2:
        raise SystemExit("--chunks must be >= 2 (the first chunk is warm-up)")

    env = environment()
    print(f"# replicas on {env['device']}, jax {env['jax']}, float32, 108-atom Cu, tiny SchNet {MODEL}, "
          f"NVT dt {TIMESTEP_FS} fs, {args.chunks} chunks x {CHUNK_STEPS} steps", flush=True)
    pot, atoms = make_potential(), cu108()
    from mlpjax.md import simulate

    simulate(pot, atoms, config(0), progress=False)  # warm-up: imports and one-time set-up out of the timings
    rows = []
    for r in counts:
        single = bench_single(pot, atoms, args.chunks)
        rep = bench_replicas(pot, atoms, r, args.chunks)
        row = {"replicas": r, "vmapped": rep, "single": single,
               "speedup": rep["replica_steps_per_s"] / single["steps_per_s"], "sequential_wall_s": r * single["wall_s"]}
        rows.append(row)
        print(f"R = {r}: {rep['replica_steps_per_s']:.1f} replica-steps/s vs {single['steps_per_s']:.1f} single "
              f"({row['speedup']:.2f}x), wall {rep['wall_s']:.1f} s vs {row['sequential_wall_s']:.1f} s for R single runs",
              flush=True)

    headers = ["R", "vmapped replica-steps/s", "single runs replica-steps/s", "speed-up", "vmapped wall s (compile s)",
               "R x simulate wall s"]
    table = markdown_table(headers, [
        [row["replicas"], row["vmapped"]["replica_steps_per_s"], row["single"]["steps_per_s"], row["speedup"],
         f"{row['vmapped']['wall_s']:.1f} ({row['vmapped']['compile_s']:.1f})", row["sequential_wall_s"]]
        for row in rows])
    print()
    print(table)

    if not args.no_record:
        data = {"environment": env, "model": MODEL, "cutoff_A": CUTOFF, "timestep_fs": TIMESTEP_FS, "dtype": "float32",
                "n_atoms": len(atoms), "ensemble": "nvt", "chunk_steps": CHUNK_STEPS, "chunks": args.chunks,
                "log_every": LOG_EVERY, "steps_per_s": "fastest chunk after the first", "results": rows}
        path = write_json("md_replicas.json", data)
        body = (
            "`benchmarks/md_replicas.py`: R Langevin NVT replicas of 108-atom Cu (tiny untrained SchNet, features 16, "
            f"2 interactions, cutoff {CUTOFF} Å), float32, dt {TIMESTEP_FS} fs, {args.chunks} chunks of {CHUNK_STEPS} "
            f"steps, a record every {LOG_EVERY} steps; CPU, 1 core (`taskset -c 0`). Vmapped = one "
            "`simulate_replicas` run; single runs = `simulate`, whose steps/s is what R sequential runs give per "
            "replica-step, measured again before each R; steps/s from the fastest chunk after the first (the machine "
            "is shared: medians moved by ±40 % between repeats); wall times include compilation "
            f"(R × simulate = R × one measured run).\n\n{table}\n"
        )
        append_results("MD replicas (vmap) vs single runs", body)
        print(f"\nwrote {path} and appended to benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
