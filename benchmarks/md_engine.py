"""What "parameters as data" buys: MD with a second parameter set of the same architecture, and a
gradient through a trajectory.

1. **Reuse.** ``simulate`` NVT (Langevin, 300 K, 2 fs, 200 steps in chunks of 100) of 108 Cu
   atoms with the quickstart-size SchNet (32 features, 2 interactions, 4.5 Å), float32: run A
   with parameters θ_A (compiles the engine), then run B with θ_B = another initialisation (a
   "retrained model"): compilations counted with jax.monitoring (mlpjax.md.compile_stats),
   wall time of each. Before mlpjax.md.engine took the parameters as an argument, run B compiled
   everything again (the old engine cache was keyed by a SHA-1 of the parameters).
2. **Gradient.** d⟨E_pot⟩/dθ over n NVE steps of 32 Cu atoms (float64) through the engine
   (``jax.grad`` of init + chunk; each step rematerialised by jax.checkpoint): wall time of value
   only vs value and gradient, and peak RSS of the process.

Prints a table, writes ``benchmarks/results/md_engine.json`` and appends to RESULTS.md.
Usage: ``python benchmarks/md_engine.py [--steps 20]``.
"""

from __future__ import annotations

import argparse
import resource
import time

import jax
import jax.numpy as jnp
from ase.build import bulk

from _common import append_results, environment, markdown_table, write_json
from mlpjax import md, models
from mlpjax.potential import Potential


def _pot(seed, cutoff=4.5):
    p = Potential("schnet", models.make_config("schnet", {"features": 32, "interactions": 2}), cutoff=cutoff,
                  species=(29,), reference_energies=(0.0,), avg_num_neighbors=40.0, energy_scale=0.1)
    return p.replace(params=p.init_params(jax.random.PRNGKey(seed)))


def reuse() -> list:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.rattle(0.03, seed=1)
    cfg = md.MDConfig(ensemble="nvt", temperature_K=300.0, timestep_fs=2.0, steps=200, chunk_steps=100, dtype="float32")
    rows = []
    for label, seed in (("A (first)", 0), ("B (other parameters)", 1)):
        t0 = time.perf_counter()
        res = md.simulate(_pot(seed), atoms, cfg, progress=False)
        rows.append({"run": label, "wall_s": time.perf_counter() - t0, "compilations": res.timings["compilations"],
                     "compile_s": res.timings["compile_s"], "steps_per_s": res.timings["steps_per_s"],
                     "final_T_K": float(res.thermo["T_K"][-1])})
    return rows


def gradient(steps: int) -> dict:
    jax.config.update("jax_enable_x64", True)
    pot = _pot(0, cutoff=3.0)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.03, seed=5)
    cfg = md.MDConfig(ensemble="nve", temperature_K=300.0, timestep_fs=2.0, steps=steps, log_every=1, skin=0.3,
                      dtype="float64")
    system = md.build_system(pot, atoms, cfg)
    eng = md.engine(pot.definition, system, cfg)
    v = eng.cast(pot.variables)
    nbrs = md.stack_neighbor_lists([system.allocate(system.positions)])
    keys, R, targets = jax.random.PRNGKey(0)[None], system.positions[None], md.Targets.of([cfg], system.dtype)

    def mean_epot(v):
        state = eng.init(v, keys, R, nbrs, targets)
        return jnp.mean(eng.chunk(v, state, nbrs, 0, n_steps=steps, targets=targets)[2]["epot"])

    value = jax.jit(mean_epot)
    grad = jax.jit(jax.value_and_grad(mean_epot))
    out = {"atoms": len(atoms), "steps": steps}
    for name, fn in (("value", value), ("value_and_grad", grad)):
        jax.block_until_ready(fn(v))  # compile
        t0 = time.perf_counter()
        for _ in range(3):
            jax.block_until_ready(fn(v))
        out[f"{name}_s"] = (time.perf_counter() - t0) / 3
    out["grad_over_value"] = out["value_and_grad_s"] / out["value_s"]
    out["peak_rss_GB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    env = environment()
    rows = reuse()
    g = gradient(args.steps)
    table = markdown_table(["run", "wall s", "XLA compilations", "compile s", "steps/s", "final T K"],
                           [[r["run"], r["wall_s"], r["compilations"], r["compile_s"], r["steps_per_s"], r["final_T_K"]]
                            for r in rows])
    gtable = markdown_table(["atoms", "steps", "value s", "value+grad s", "ratio", "peak RSS GB"],
                            [[g["atoms"], g["steps"], g["value_s"], g["value_and_grad_s"], g["grad_over_value"],
                             g["peak_rss_GB"]]])
    print(table, "\n", gtable, sep="")
    write_json("md_engine.json", {"environment": env, "reuse": rows, "gradient": g})
    append_results(
        "MD engine: parameters as data",
        "`benchmarks/md_engine.py`. 108 Cu atoms, quickstart-size SchNet, NVT 200 steps float32; run B uses "
        "another parameter set of the same architecture and compiles nothing:\n\n" + table
        + f"\n\nGradient of ⟨E_pot⟩ over {g['steps']} NVE steps of {g['atoms']} Cu atoms (float64, SchNet 32×2, "
        "3 Å), through the engine with one jax.checkpoint per step (peak RSS of the whole process):\n\n" + gtable + "\n")


if __name__ == "__main__":
    main()
