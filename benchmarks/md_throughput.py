"""MD throughput of a small SchNet in jax-md, with jax-md's own Lennard-Jones as a
same-machine peer reference.

For fcc Cu supercells (256, 2,048 and 16,384 atoms by default) it runs NVE chunks
through :func:`mlpjax.md.simulate` (the production path: jitted chunks, neighbour-list
updates every step, overflow checks, thermo every chunk) and reports

* compile time of the chunk (AOT, separate from running) and setup time (neighbour
  list allocation, initial forces);
* MD steps/s and atom-steps/s: median over chunks after the first (warm-up);
* the neighbour-list capacity (pairs, cutoff + skin);
* atom-steps/s relative to the smallest size (≈ 1 means cost grows linearly with N);
* the same for jax-md's ``energy.lennard_jones_neighbor_list`` (Cu-like σ = 2.338 Å,
  ε = 0.409 eV, same 5 Å cutoff, 0.5 Å skin, jax-md's default OrderedSparse list and
  its standard ``apply``/``update`` loop) and the SchNet/LJ throughput ratio.

The SchNet (features 32, 2 interactions, 20 Gaussians, filter width 32, cutoff 5 Å)
has untrained (randomly initialised) parameters: throughput does not depend on the
parameter values. Results: a table on stdout, ``benchmarks/results/md_throughput.json``
and a dated section appended to ``benchmarks/RESULTS.md``.

    python benchmarks/md_throughput.py            # ~5 min on 2 CPU cores
    python benchmarks/md_throughput.py --quick    # ~1 min
    python benchmarks/md_throughput.py --sizes 256,2048 --steps 200
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax
import jax.numpy as jnp
import numpy as np

from _common import append_results, environment, markdown_table, write_json

MODEL = {"features": 32, "interactions": 2, "num_rbf": 20, "filter_hidden": 32}
CUTOFF = 5.0  # Å
SKIN = 0.5  # Å
A_CU = 3.61  # Å
TIMESTEP_FS = 2.0
TEMPERATURE_K = 300.0

# (chunk_steps, chunks) per size: first chunk is warm-up; the rest give the median.
# Every size uses the SAME chunk length (and so the same thermo-logging interval, which
# costs one extra energy pass per record): otherwise the per-step overhead differs
# between sizes and the "linear in N" comparison is biased.
DEFAULT_PLAN = {256: (10, 8), 2048: (10, 4), 16384: (10, 3)}
QUICK_PLAN = {256: (10, 3), 2048: (10, 2), 16384: (10, 2)}


def cu_supercell(n_atoms: int):
    from ase.build import bulk

    k = round((n_atoms / 4) ** (1 / 3))
    if 4 * k**3 != n_atoms:
        raise SystemExit(f"--sizes: {n_atoms} is not 4 k^3 (fcc conventional cells); use e.g. 256, 2048, 16384")
    atoms = bulk("Cu", "fcc", a=A_CU, cubic=True).repeat(k)
    atoms.rattle(0.02, seed=0)
    return atoms


def make_potential():
    from mlpjax import models
    from mlpjax.potential import Potential

    pot = Potential(
        "schnet", models.make_config("schnet", MODEL), cutoff=CUTOFF, species=(29,), reference_energies=(0.0,),
        avg_num_neighbors=54.0,  # neighbours within 5 Å in fcc Cu
    )
    return pot.replace(params=pot.init_params(jax.random.PRNGKey(0)))


def bench_schnet(pot, atoms, chunk_steps, n_chunks):
    from mlpjax.md import MDConfig, simulate

    cfg = MDConfig(
        ensemble="nve", temperature_K=TEMPERATURE_K, timestep_fs=TIMESTEP_FS, steps=chunk_steps * n_chunks,
        chunk_steps=chunk_steps, log_every=chunk_steps, traj_every=chunk_steps, skin=SKIN, seed=0,
    )
    t0 = time.perf_counter()
    res = simulate(pot, atoms, cfg, progress=False)
    total = time.perf_counter() - t0
    per_step = [t / chunk_steps for t in res.timings["chunk_s"][1:]]
    steps_per_s = 1.0 / float(np.median(per_step))
    return {
        "compile_s": res.timings["compile_s"],
        "setup_s": res.timings["setup_s"],
        "total_s": total,
        "steps_per_s": steps_per_s,
        "atom_steps_per_s": steps_per_s * len(atoms),
        "neighbor_capacity": res.neighbor_capacity,
        "pairs_per_atom": res.neighbor_capacity / len(atoms),
        "reallocations": res.n_neighbor_reallocations,
        "T_final_K": float(res.thermo["T_K"][-1]),
    }


def bench_lj(atoms, chunk_steps, n_chunks):
    """jax-md's Lennard-Jones with its standard neighbour-list MD loop (peer reference)."""
    from ase import units
    from jax_md import energy, simulate, space

    from mlpjax.md import hashable_neighbor_list

    std, _ = atoms.cell.standard_form()
    box = jnp.asarray(np.tril(np.asarray(std)).T, jnp.float32)
    frac = jnp.asarray(atoms.get_scaled_positions(wrap=True) % 1.0, jnp.float32)
    displacement, shift = space.periodic_general(box, fractional_coordinates=True)
    sigma = 2.338
    neighbor_fn, energy_fn = energy.lennard_jones_neighbor_list(
        displacement, box, sigma=sigma, epsilon=0.409, r_onset=0.8 * CUTOFF / sigma, r_cutoff=CUTOFF / sigma,
        dr_threshold=SKIN, fractional_coordinates=True,
    )
    init_fn, apply_fn = simulate.nve(energy_fn, shift, TIMESTEP_FS * units.fs)
    mass = jnp.asarray(atoms.get_masses(), jnp.float32)

    t0 = time.perf_counter()
    nbrs = hashable_neighbor_list(neighbor_fn.allocate(frac))
    state = init_fn(jax.random.PRNGKey(0), frac, units.kB * TEMPERATURE_K, mass=mass, neighbor=nbrs)
    jax.block_until_ready(state)
    setup_s = time.perf_counter() - t0

    def chunk(state, nbrs):
        def body(_, carry):
            st, nb = carry
            st = apply_fn(st, neighbor=nb)
            return st, nb.update(st.position)

        state, nbrs = jax.lax.fori_loop(0, chunk_steps, body, (state, nbrs))
        return state, nbrs, energy_fn(state.position, neighbor=nbrs)

    t0 = time.perf_counter()
    compiled = jax.jit(chunk).lower(state, nbrs).compile()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(n_chunks):
        for _attempt in range(5):
            t0 = time.perf_counter()
            new_state, new_nbrs, e = compiled(state, nbrs)
            overflow = bool(new_nbrs.did_buffer_overflow)
            dt = time.perf_counter() - t0
            if not overflow:
                break
            nbrs = hashable_neighbor_list(neighbor_fn.allocate(state.position, extra_capacity=4))
            compiled = jax.jit(chunk).lower(state, nbrs).compile()
        state, nbrs = new_state, new_nbrs
        times.append(dt)
    steps_per_s = 1.0 / float(np.median([t / chunk_steps for t in times[1:]]))
    return {
        "compile_s": compile_s,
        "setup_s": setup_s,
        "steps_per_s": steps_per_s,
        "atom_steps_per_s": steps_per_s * len(atoms),
        "neighbor_capacity": int(nbrs.max_occupancy),
        "energy_finite": bool(np.isfinite(float(e))),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=None, help="comma-separated atom counts (4 k^3), default 256,2048,16384")
    ap.add_argument("--steps", type=int, default=None, help="MD steps per size (overrides the per-size plan)")
    ap.add_argument("--quick", action="store_true", help="fewer steps, sizes 256 and 2048 unless --sizes")
    ap.add_argument("--no-lj", action="store_true", help="skip the jax-md Lennard-Jones reference")
    ap.add_argument("--no-record", action="store_true", help="do not write JSON / RESULTS.md")
    args = ap.parse_args(argv)

    plan = QUICK_PLAN if args.quick else DEFAULT_PLAN
    default_sizes = "256,2048" if args.quick else "256,2048,16384"
    sizes = [int(s) for s in (args.sizes or default_sizes).split(",")]
    env = environment()
    print(f"# MD throughput on {env['device']}, jax {env['jax']}, dtype float32, dt = {TIMESTEP_FS} fs, "
          f"SchNet {MODEL} cutoff {CUTOFF} Å skin {SKIN} Å (untrained params)", flush=True)

    pot = make_potential()
    rows = []
    for n in sizes:
        atoms = cu_supercell(n)
        chunk_steps, n_chunks = plan.get(n, (max(1, 20_000 // n), 4))
        if args.steps is not None:
            n_chunks = max(2, math.ceil(args.steps / chunk_steps))
        print(f"N = {n}: {n_chunks} chunks x {chunk_steps} steps ...", flush=True)
        row = {"n_atoms": n, "chunk_steps": chunk_steps, "chunks": n_chunks, "schnet": bench_schnet(pot, atoms, chunk_steps, n_chunks)}
        if not args.no_lj:
            lj_chunk = max(chunk_steps, 10)
            row["lj"] = bench_lj(atoms, lj_chunk, max(n_chunks, 3))
            row["schnet_over_lj"] = row["schnet"]["atom_steps_per_s"] / row["lj"]["atom_steps_per_s"]
        rows.append(row)
        print(f"  SchNet {row['schnet']['steps_per_s']:.3g} steps/s, {row['schnet']['atom_steps_per_s']:.3g} atom-steps/s, "
              f"compile {row['schnet']['compile_s']:.1f} s" + (f"; LJ {row['lj']['atom_steps_per_s']:.3g} atom-steps/s" if "lj" in row else ""),
              flush=True)

    base = rows[0]["schnet"]["atom_steps_per_s"]
    for row in rows:
        row["atom_steps_rel_smallest"] = row["schnet"]["atom_steps_per_s"] / base

    headers = ["N atoms", "compile s", "setup s", "steps/s", "atom-steps/s", "rel. to smallest", "nbr capacity (pairs/atom)"]
    if not args.no_lj:
        headers += ["LJ atom-steps/s", "SchNet/LJ"]
    table_rows = []
    for row in rows:
        s = row["schnet"]
        r = [row["n_atoms"], s["compile_s"], s["setup_s"], s["steps_per_s"], s["atom_steps_per_s"], row["atom_steps_rel_smallest"],
             f"{s['neighbor_capacity']} ({s['pairs_per_atom']:.1f})"]
        if not args.no_lj:
            r += [row["lj"]["atom_steps_per_s"], row["schnet_over_lj"]]
        table_rows.append(r)
    table = markdown_table(headers, table_rows)
    print()
    print(table)
    print("\nrel. to smallest: atom-steps/s divided by that of the smallest system; ~1 = cost linear in N.")

    if not args.no_record:
        data = {"environment": env, "model": MODEL, "cutoff_A": CUTOFF, "skin_A": SKIN, "timestep_fs": TIMESTEP_FS,
                "dtype": "float32", "quick": args.quick, "params": "untrained (random init)", "results": rows}
        path = write_json("md_throughput.json", data)
        body = (
            f"`benchmarks/md_throughput.py{' --quick' if args.quick else ''}`: NVE MD of fcc Cu with a SchNet "
            f"(features 32, 2 interactions, cutoff {CUTOFF} Å, untrained params), float32, dt {TIMESTEP_FS} fs, "
            f"skin {SKIN} Å, through `mlpjax.md.simulate`; steps/s = median over chunks after the first. "
            f"LJ = jax-md `lennard_jones_neighbor_list` (same cutoff/skin) on the same machine.\n\n{table}\n"
        )
        append_results("MD throughput (SchNet in jax-md)", body)
        print(f"\nwrote {path} and appended to benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
