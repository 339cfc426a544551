"""Descriptor speed: mlpjax (jitted JAX) against dscribe on the same machine, same run.

For periodic fcc Cu (64, 512 and 4,096 atoms, rattled) and a set of ethanol molecules it
times, per structure,

* ACSF (element-resolved G2 + G4, dscribe's layout; 8 G2, 8 G4 terms) and SOAP (GTO basis,
  n_max 6, l_max 6, σ 0.5 Å, cutoff 5 Å, dscribe's convention ``envelope="none"`` so both
  compute the same numbers — checked here, max relative difference printed);
* value and value + gradient. mlpjax's gradient is the reverse-mode product wᵀ ∂G/∂R for
  one weight vector per atom (exactly what forces of a descriptor-based potential need:
  one backward pass, O(N)); dscribe's is its analytic derivative tensor ∂G_i/∂R_j
  ([N, N, 3, F], ``derivatives(method="auto")``: analytical where dscribe implements it), the only gradient it offers. Where
  that tensor does not fit in memory (4,096 atoms) the dscribe column says so;
* mlpjax compile time (first call, value and gradient separately) — reported apart from
  the steady-state times, which are medians of ``--repeat`` calls after compilation.

The neighbour list (vesin, host) is built once per structure for mlpjax and is not in the
timings; dscribe builds its own inside every call (its cell list is part of its cost).

    python benchmarks/descriptors.py            # ~5-10 min on 2 CPU cores
    python benchmarks/descriptors.py --quick    # 64 and 512 atoms only
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from _common import append_results, environment, markdown_table, write_json  # noqa: E402

RC = 5.0  # Å
G2 = [(1.0 / (2 * 0.6**2), float(rs)) for rs in np.linspace(0.8, RC, 8)]
G4 = [(eta, zeta, lam) for eta in (0.005, 0.05) for zeta in (1.0, 4.0) for lam in (1.0, -1.0)]
SOAP_KW = dict(r_cut=RC, n_max=6, l_max=6, sigma=0.5)
DSCRIBE_DERIV_LIMIT_GB = 6.0


def cu_cell(n_atoms: int, seed: int = 0):
    from ase.build import bulk

    reps = {64: (2, 2, 4), 512: (4, 4, 8), 4096: (8, 8, 16)}[n_atoms]
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(reps)
    atoms.rattle(0.05, seed=seed)
    return atoms


def ethanol_set(n: int = 16):
    from ase.build import molecule

    out = []
    for k in range(n):
        a = molecule("CH3CH2OH")
        a.rattle(0.05, seed=k)
        out.append(a)
    return out


def _median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def mlpjax_fns(kind, atoms, species):
    """(value_fn, grad_fn, n_features, value_for_check) on fixed neighbour arrays."""
    from mlpjax.models import descriptors as D
    from mlpjax.graph import species_indices
    from mlpjax.graph.neighbors import neighbor_list

    if kind == "acsf":
        p = D.ACSFParams(cutoff=RC, num_species=len(species), g2=G2, g4=G4)
        fn, cut = D.acsf, RC
    else:
        p = D.SOAPParams(num_species=len(species), envelope="none", **SOAP_KW)
        fn, cut = D.soap, p.neighbor_cutoff
    pos = np.asarray(atoms.get_positions())
    cell = np.asarray(atoms.cell[:])
    e = neighbor_list(pos, cell, np.asarray(atoms.pbc), cut)
    shifts = jnp.asarray(np.asarray(e.shifts, np.float64) @ cell)
    snd, rcv = jnp.asarray(e.senders), jnp.asarray(e.receivers)
    spec = jnp.asarray(species_indices(atoms.numbers, species))
    mask = jnp.ones(len(e.senders), bool)
    k = int(np.bincount(np.asarray(e.receivers)).max()) + 1

    # the neighbour arrays and the cotangent weights are jit ARGUMENTS: closed over, they become
    # constants that XLA constant-folds through the index scatters (tens of s of compile at 4,096 atoms)
    w = jax.random.normal(jax.random.PRNGKey(0), (len(atoms), p.num_features), jnp.float64)
    graph = (snd, rcv, shifts, spec, mask)

    def desc(x, snd, rcv, shifts, spec, mask):
        return fn(p, x[snd] - x[rcv] + shifts, spec, snd, rcv, mask, max_neighbors=k)

    value_j = jax.jit(desc)
    grad_j = jax.jit(jax.value_and_grad(lambda x, w, *g: jnp.sum(w * desc(x, *g))))
    return (lambda x: value_j(x, *graph)), (lambda x: grad_j(x, w, *graph)), jnp.asarray(pos), p.num_features


def dscribe_obj(kind, species, periodic):
    from dscribe.descriptors import ACSF, SOAP

    if kind == "acsf":
        return ACSF(species=species, r_cut=RC, g2_params=G2, g4_params=G4, periodic=periodic)
    return SOAP(species=species, periodic=periodic, **SOAP_KW)


def bench_case(label, structures, kind, repeat, with_dscribe_grad=True):
    species = sorted({int(z) for a in structures for z in a.numbers})
    n_atoms = len(structures[0])
    periodic = bool(structures[0].pbc.any())
    # mlpjax: compile on the first structure, time all (same shapes for the molecule set)
    value, grad, x0, n_feat = mlpjax_fns(kind, structures[0], species)
    t0 = time.perf_counter()
    jax.block_until_ready(value(x0))
    compile_value = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(grad(x0))
    compile_grad = time.perf_counter() - t0
    t_val = _median_time(lambda: value(x0), repeat)
    t_grad = _median_time(lambda: grad(x0), repeat)
    ours = np.asarray(value(x0))
    # dscribe
    d = dscribe_obj(kind, species, periodic)
    ref = d.create(structures[0])
    rel = float(np.abs(ours - ref).max() / np.abs(ref).max())
    d_val = _median_time(lambda: d.create(structures[0]), max(1, repeat // 2))
    deriv_gb = n_atoms * n_atoms * 3 * n_feat * 8 / 1e9
    if with_dscribe_grad and deriv_gb < DSCRIBE_DERIV_LIMIT_GB:
        # dscribe: ACSF derivatives need attach=True; "auto" picks analytical where dscribe has it
        kw = {"attach": True} if kind == "acsf" else {}
        d_grad = _median_time(lambda: d.derivatives(structures[0], method="auto", **kw), max(1, repeat // 3))
        d_grad_note = ""
    else:
        d_grad = float("nan")
        d_grad_note = f"not run: ∂G/∂R tensor {deriv_gb:.0f} GB"
    return {
        "case": label, "descriptor": kind, "n_atoms": n_atoms, "n_features": n_feat, "max_rel_diff_vs_dscribe": rel,
        "mlpjax_compile_value_s": compile_value, "mlpjax_compile_grad_s": compile_grad,
        "mlpjax_value_ms": 1e3 * t_val, "mlpjax_value_grad_ms": 1e3 * t_grad,
        "dscribe_value_ms": 1e3 * d_val, "dscribe_value_grad_ms": 1e3 * d_grad, "dscribe_grad_note": d_grad_note,
        "speedup_value": d_val / t_val, "speedup_grad": d_grad / t_grad if np.isfinite(d_grad) else float("nan"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64 and 512 atoms only")
    ap.add_argument("--sizes", default=None, help="comma-separated Cu sizes from 64,512,4096")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([64, 512] if args.quick else [64, 512, 4096])
    rows = []
    for kind in ("acsf", "soap"):
        rows.append(bench_case("ethanol (molecule)", ethanol_set(1), kind, args.repeat))
        print(rows[-1], flush=True)
        for n in sizes:
            rows.append(bench_case("Cu fcc periodic", [cu_cell(n)], kind, args.repeat if n < 4096 else 3))
            print(rows[-1], flush=True)
    headers = ["descriptor", "system", "atoms", "features", "mlpjax value ms", "dscribe value ms", "speed-up",
               "mlpjax value+grad ms", "dscribe value+grad ms", "speed-up", "mlpjax compile value / grad s", "max rel diff"]
    table_rows = [[r["descriptor"], r["case"], r["n_atoms"], r["n_features"], r["mlpjax_value_ms"], r["dscribe_value_ms"],
                   r["speedup_value"], r["mlpjax_value_grad_ms"],
                   r["dscribe_value_grad_ms"] if not r["dscribe_grad_note"] else r["dscribe_grad_note"], r["speedup_grad"],
                   f"{r['mlpjax_compile_value_s']:.1f} / {r['mlpjax_compile_grad_s']:.1f}", r["max_rel_diff_vs_dscribe"]]
                  for r in rows]
    table = markdown_table(headers, table_rows)
    print("\n" + table)
    if not args.no_record:
        import dscribe  # noqa: F401
        from importlib.metadata import version

        env = environment() | {"dscribe": version("dscribe")}
        write_json("descriptors.json", {"environment": env, "results": rows})
        append_results("Descriptor speed: mlpjax vs dscribe",
                       f"`benchmarks/descriptors.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
                       f"(float64; dscribe {env['dscribe']}; per structure; medians after compilation; mlpjax "
                       "gradient = one reverse-mode pass wᵀ∂G/∂R, dscribe gradient = its full ∂G_i/∂R_j tensor, method=\"auto\").\n\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
