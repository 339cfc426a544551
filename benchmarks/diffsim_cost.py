"""The cost of a gradient (issue 16): backpropagation through MD against DiffTRe reweighting for
the same ensemble average, and the growth of the exact gradient with the horizon.

1. **System**: 256 Cu atoms (fcc 4×4×4 cubic, a = 3.78 Å: ρ = 0.0740 Å⁻³, the density of liquid
   Cu near its melting point), melted at 3,500 K (2 ps) and cooled to 1,400 K (6 ps; Langevin,
   γ = 10/ps) in a preparation run; that end state (positions and momenta) starts every run
   below. Started from fcc at 1,400 K this Morse stays crystalline at this density, but the melt
   cooled to 1,400 K is a supercooled liquid over these times (no split second RDF peak,
   diffusing slowly). Dynamics of the measured runs:
   Langevin NVT at 1,400 K, γ = 2/ps, 2 fs timestep, skin 0.5 Å, records every 10 steps.
   Potentials: Morse (Girifalco–Weizer Cu, 5 Å cutoff, 1 Å switch) and, if not ``--no-schnet``,
   an untrained SchNet (16 features, 2 interactions, 4 Å cutoff; random weights: its dynamics are
   not physical, only its cost is of interest: second derivatives of a network per step).
2. **Observable**: the smooth RDF (``diffsim.rdf``: 0–6 Å, 60 bins, σ = 0.1 Å) averaged over
   every record of the run; loss = its L2 distance (``diffsim.rdf_l2``) to a fixed target (the
   RDF of a 2 ps run with r0 + 0.05 Å). Gradient with respect to the potential's parameters.
3. **Backpropagation** (``DiffTrajectory.value_and_grad``): S = 1,000 and 10,000 steps with
   chunk checkpointing (chunk_steps ≈ √S: 40 and 100), and without (``checkpoint=False``; the
   10,000-step run only where its projected XLA temp, 10 × that of 1,000 steps, is below half
   the free memory). **Reweighting** (``diffsim.sample_reference`` +
   ``diffsim.reweighted_average``) of the same ensemble average: one forward reference run of
   the same S steps (plus the frames' energies under the reference parameters) and the
   reweighted gradient over its S/10 frames; a fit that reuses the reference (DiffTRe across
   several updates, until N_eff falls) pays the gradient alone.
   Each configuration runs in a **fresh subprocess** (this script with ``--child``), so the peaks
   do not mix: peak RSS = ``getrusage(RUSAGE_SELF).ru_maxrss`` of the child (MiB; "before" = after
   imports, system and start state, before the first measured call), and XLA's
   ``compiled.memory_analysis().temp_size_in_bytes`` of each compiled program (MiB; on CPU the
   scan's stored residuals are temp buffers). Times: compile = XLA backend compilation seconds of
   the first call (``mlpjax.md.engine.compile_stats``), first call = trace + compile + run, run =
   median of the later calls (after compilation). float32 (the MD default without x64).
4. **Gradient norm vs horizon** (``diffsim.gradient_norm_vs_horizon``, float64, its own child):
   the global norm of d loss / d (D, α, r0) for horizons 50 … 2,000 steps from the same start
   (the prepared positions, Maxwell–Boltzmann momenta of seed 0), exact and truncated
   (``truncate_every`` = 2 chunks of 50 steps: 100-step windows); the exponential growth rate λ
   (1/ps) is the least-squares slope of ln |grad| against t for the exact horizons ≥ 100 steps.

Prints the tables, writes ``benchmarks/results/diffsim_cost.json`` and appends to RESULTS.md.
Usage: ``python benchmarks/diffsim_cost.py [--quick] [--no-schnet] [--no-record]``
(``--quick``: 108 atoms, 100/400 steps, horizons 100/200, no SchNet, one timed call, every
measurement in this process (``--in-process``: the peak RSS then mixes and is not reported): a
smoke run).

Measured (2026-12-02, CPU, 2 cores shared with another benchmark): see the RESULTS.md section of
that date — filled in below after the full run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from _common import append_results, environment, markdown_table, write_json

HERE = os.path.dirname(os.path.abspath(__file__))

LATTICE_A = 3.78  # Å: ρ = 4 / a³ = 0.0740 Å⁻³
TEMPERATURE_K = 1400.0
MELT_K = 3500.0
TIMESTEP_FS = 2.0
FRICTION_PER_PS = 2.0
PREPARE_FRICTION_PER_PS = 10.0  # the melt and cooling runs (fast equilibration of T)
RECORD_EVERY = 10  # steps between records (the RDF's frames)
R_MAX_A, N_BINS, WIDTH_A = 6.0, 60, 0.1  # smooth RDF
TARGET_DR0_A = 0.05  # the target RDF: Morse with r0 + this
MORSE = {"cutoff": 5.0, "switch_width_A": 1.0}
SCHNET = {"features": 16, "interactions": 2, "num_rbf": 8, "filter_hidden": 16}
SCHNET_CUTOFF_A = 4.0
HORIZON_CHUNK = 50  # steps per chunk in the horizon scan; truncation window = 2 chunks
HORIZON_WINDOW_CHUNKS = 2


def _mib(nbytes) -> float:
    return float(nbytes) / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# ------------------------------------------------------------------------------------------ child side
def _setup(spec: dict):
    """(potential, atoms, MDConfig, prepared dict) of a child (the imports happen here)."""
    import jax

    if spec.get("x64"):
        jax.config.update("jax_enable_x64", True)
    from ase.build import bulk

    from mlpjax import models
    from mlpjax.md import MDConfig
    from mlpjax.models.pair import pair_potential
    from mlpjax.potential import Potential

    if spec["model"] == "morse":
        pot = pair_potential("morse", species=["Cu"], **MORSE)
    else:
        pot = Potential("schnet", models.make_config("schnet", SCHNET), cutoff=SCHNET_CUTOFF_A, species=(29,),
                        reference_energies=(0.0,), avg_num_neighbors=20.0, energy_scale=1.0)
        pot = pot.replace(params=pot.init_params(jax.random.PRNGKey(0)))
    atoms = bulk("Cu", "fcc", a=LATTICE_A, cubic=True).repeat(spec["repeat"])
    prepared = dict(np.load(spec["prepared"])) if spec.get("prepared") else None
    if prepared is not None:
        atoms.positions = prepared["cartesian"]
    cfg = MDConfig(ensemble="nvt", temperature_K=spec.get("temperature_K", TEMPERATURE_K), timestep_fs=TIMESTEP_FS,
                   friction_per_ps=FRICTION_PER_PS, skin=0.5, dtype="float64" if spec.get("x64") else "float32")
    return pot, atoms, cfg, prepared


def _rdf_loss(system, g_target, r_max: float):
    """loss(positions [T, R, N, 3]) = L2 distance of the run's smooth RDF to the target, and the per-frame RDF."""
    import jax.numpy as jnp

    from mlpjax import diffsim

    g_target = jnp.asarray(g_target)

    def g_of(positions):
        return diffsim.rdf(system, positions, r_max=r_max, n_bins=N_BINS, width=WIDTH_A)[1]

    def loss_of_g(g):
        return diffsim.rdf_l2(g, g_target.astype(g.dtype), r_max)

    return g_of, loss_of_g


def _norm(grads) -> float:
    import jax

    return float(math.sqrt(sum(float(np.sum(np.asarray(g, np.float64) ** 2)) for g in jax.tree_util.tree_leaves(grads.params))))


def _timed(fn, repeats: int):
    """(first-call s, XLA compilations and compile s of the first call, median s of ``repeats`` later calls, last output)."""
    import jax

    from mlpjax.md.engine import compile_stats

    c0 = compile_stats()
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    c1 = compile_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, c1[0] - c0[0], c1[1] - c0[1], (statistics.median(times) if times else float("nan")), out


def _temp_mib(jitted, *args) -> float:
    """XLA temp buffer size (MiB) of ``jitted`` compiled for ``args`` (the compilation cache answers)."""
    m = jitted.lower(*args).compile().memory_analysis()
    return _mib(m.temp_size_in_bytes) if m is not None else float("nan")


def _child_prepare(spec: dict) -> dict:
    """Melt, cool, and the target RDF: the start of every measured run."""
    import jax.numpy as jnp
    from ase import units as ase_units

    from mlpjax import diffsim

    pot, atoms, cfg, _ = _setup(spec)
    v = pot.variables
    out = {}

    def run(T, steps, start=None, variables=v, seed=0):
        sim = diffsim.trajectory(pot, atoms, cfg.replace(temperature_K=T, friction_per_ps=PREPARE_FRICTION_PER_PS),
                                 steps=steps, record_every=RECORD_EVERY, chunk_steps=100)
        vv = sim.engine.cast(variables)
        st = sim.start(vv, seed=seed) if start is None else sim.start(vv, positions=start.state.position[0],
                                                                        momenta=start.state.momentum[0])
        rec, end = sim.records(vv, st)
        return sim, rec, end

    _, _, melt = run(MELT_K, spec["melt_steps"])
    sim, rec, end = run(TEMPERATURE_K, spec["cool_steps"], melt)
    n = sim.system.n_atoms
    last = rec["position"][-(len(rec["position"]) // 2):]
    out["T_K"] = float(np.mean(np.asarray(rec["ekin"][-(len(rec["ekin"]) // 2):])) * 2 / (3 * n) / ase_units.kB)
    out["epot_eV_per_atom"] = float(jnp.mean(rec["epot"][-(len(rec["epot"]) // 2):]) / n)
    out["pressure_GPa"] = float(diffsim.mean_pressure({"pressure": rec["pressure"][-(len(rec["epot"]) // 2):]}))
    out["msd_A2_last_half"] = float(diffsim.msd(sim.system, last)[-1])
    out["msd_ps"] = (len(last) - 1) * RECORD_EVERY * TIMESTEP_FS / 1000
    # the target: r0 + TARGET_DR0_A, from the prepared state
    p = v.params["params"]
    target_v = v._replace(params={"params": {**p, "r0": p["r0"] + TARGET_DR0_A}})
    tsim, trec, _ = run(TEMPERATURE_K, spec["target_steps"], end, variables=target_v)
    g_of, _ = _rdf_loss(tsim.system, np.zeros(N_BINS), spec["r_max"])
    g_target = np.asarray(g_of(trec["position"]), np.float64)
    g_start = np.asarray(g_of(last), np.float64)
    peak = int(np.argmax(g_start))
    out["rdf_first_peak_A"] = float((peak + 0.5) * spec["r_max"] / N_BINS)
    out["rdf_first_peak_g"] = float(g_start[peak])
    out["rdf_first_min_g"] = float(np.min(g_start[peak:peak + int(1.5 / (spec["r_max"] / N_BINS))]))  # within 1.5 Å
    np.savez(spec["prepared_out"], position=np.asarray(end.state.position[0], np.float64),
             momentum=np.asarray(end.state.momentum[0], np.float64),
             cartesian=np.asarray(sim.system.to_cartesian(end.state.position[0]), np.float64), g_target=g_target)
    return out


def _child_backprop(spec: dict) -> dict:
    import jax.numpy as jnp

    from mlpjax import diffsim

    pot, atoms, cfg, prep = _setup(spec)
    sim = diffsim.trajectory(pot, atoms, cfg, steps=spec["steps"], record_every=RECORD_EVERY,
                             chunk_steps=spec["chunk_steps"], checkpoint=spec["checkpoint"])
    v = sim.engine.cast(pot.variables)
    start = sim.start(v, positions=prep["position"], momenta=prep["momentum"])
    g_of, loss_of_g = _rdf_loss(sim.system, prep["g_target"], spec["r_max"])

    def loss(records):
        return loss_of_g(g_of(records["position"]))

    rss0 = _peak_rss_mib()
    first, n_comp, comp_s, run_s, (value, grads) = _timed(lambda: sim.value_and_grad(loss, v, start), spec["repeats"])
    key = next(k for k in sim._compiled if k[0] == "vg")  # the jitted value-and-grad value_and_grad built
    temp = _temp_mib(sim._compiled[key], v, start.state, start.nbrs, sim._targets())
    out = {"value": float(value), "grad_norm": _norm(grads), "first_call_s": first, "compilations": n_comp,
           "compile_s": comp_s, "run_s": run_s, "rss_before_mib": rss0, "peak_rss_mib": _peak_rss_mib(),
           "xla_temp_mib": temp, "reallocations": sim.stats["reallocations"], "n_records": sim.n_records,
           "neighbor_capacity": int(start.nbrs.idx.shape[-1])}
    if spec["model"] == "morse":
        out["grad"] = {k: float(jnp.ravel(x)[0]) for k, x in grads.params["params"].items()}
    return out


def _child_reweight(spec: dict) -> dict:
    import jax
    import jax.numpy as jnp

    from mlpjax import diffsim
    from mlpjax.diffsim import reweight
    from mlpjax.diffsim.trajectory import _run_fn

    pot, atoms, cfg, prep = _setup(spec)
    sim = diffsim.trajectory(pot, atoms, cfg, steps=spec["steps"], record_every=RECORD_EVERY,
                             chunk_steps=spec["chunk_steps"])
    v = sim.engine.cast(pot.variables)
    start = sim.start(v, positions=prep["position"], momenta=prep["momentum"])
    g_of, loss_of_g = _rdf_loss(sim.system, prep["g_target"], spec["r_max"])

    def per_frame(R):  # one frame's RDF [B]: independent of the parameters
        return g_of(R[None])

    def loss(vv, ref):
        avg, n_eff = diffsim.reweighted_average(vv, ref, per_frame)
        return loss_of_g(avg), n_eff

    rss0 = _peak_rss_mib()
    r_first, r_comp, r_comp_s, r_run, (ref, _) = _timed(lambda: diffsim.sample_reference(sim, v, start), spec["repeats"])
    rss_ref = _peak_rss_mib()
    vg = jax.jit(jax.value_and_grad(loss, has_aux=True))
    g_first, g_comp, g_comp_s, g_run, ((value, n_eff), grads) = _timed(lambda: vg(v, ref), spec["repeats"])
    temp_run = _temp_mib(_run_fn(sim), v, start, sim._targets())
    temp_energies = _temp_mib(reweight._energies_jit(sim.system), v, ref.positions, ref.nbrs)
    temp_grad = _temp_mib(vg, v, ref)
    out = {"value": float(value), "n_eff": float(n_eff), "n_frames": int(ref.positions.shape[0]),
           "grad_norm": _norm(grads),
           "reference": {"first_call_s": r_first, "compilations": r_comp, "compile_s": r_comp_s, "run_s": r_run,
                         "xla_temp_mib": max(temp_run, temp_energies), "xla_temp_run_mib": temp_run,
                         "xla_temp_energies_mib": temp_energies},
           "gradient": {"first_call_s": g_first, "compilations": g_comp, "compile_s": g_comp_s, "run_s": g_run,
                        "xla_temp_mib": temp_grad},
           "rss_before_mib": rss0, "peak_rss_after_reference_mib": rss_ref, "peak_rss_mib": _peak_rss_mib(),
           "reallocations": sim.stats["reallocations"]}
    if spec["model"] == "morse":
        out["grad"] = {k: float(jnp.ravel(x)[0]) for k, x in grads.params["params"].items()}
    return out


def _child_horizon(spec: dict) -> dict:
    from mlpjax import diffsim

    spec = {**spec, "x64": True}
    pot, atoms, cfg, prep = _setup(spec)
    system = diffsim.trajectory(pot, atoms, cfg, steps=HORIZON_CHUNK, record_every=RECORD_EVERY,
                                chunk_steps=HORIZON_CHUNK).system
    g_of, loss_of_g = _rdf_loss(system, prep["g_target"], spec["r_max"])

    def loss(records):
        return loss_of_g(g_of(records["position"]))

    kw = dict(record_every=RECORD_EVERY, chunk_steps=HORIZON_CHUNK, seed=0)
    exact = diffsim.gradient_norm_vs_horizon(pot, atoms, cfg, loss, spec["horizons"], **kw)
    window = HORIZON_CHUNK * HORIZON_WINDOW_CHUNKS
    longer = [h for h in spec["horizons"] if h > window]  # shorter horizons: one window = the exact gradient
    trunc = diffsim.gradient_norm_vs_horizon(pot, atoms, cfg, loss, longer, truncate_every=HORIZON_WINDOW_CHUNKS, **kw)
    return {"exact": exact, "truncated": trunc, "window_steps": window}


_CHILDREN = {"prepare": _child_prepare, "backprop": _child_backprop, "reweight": _child_reweight,
             "horizon": _child_horizon}


def _child(spec_path: str) -> int:
    with open(spec_path) as fh:
        spec = json.load(fh)
    out = _CHILDREN[spec["kind"]](spec)
    print("RESULT " + json.dumps(out), flush=True)
    return 0


# ------------------------------------------------------------------------------------------ parent side
def _in_child(spec: dict, workdir: str, in_process: bool = False) -> dict:
    """The measurement ``spec`` in a fresh Python process (or, ``in_process``, here: peaks then mix)."""
    if in_process:
        t0 = time.perf_counter()
        out = _CHILDREN[spec["kind"]](spec)
        out["child_wall_s"] = time.perf_counter() - t0
        out["in_process"] = True
        return out
    path = os.path.join(workdir, f"spec_{time.monotonic_ns()}.json")
    with open(path, "w") as fh:
        json.dump(spec, fh)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", path], capture_output=True, text=True,
                          cwd=HERE)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {spec['kind']} {spec.get('model')} {spec.get('steps')} failed "
                           f"(rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    out["child_wall_s"] = time.perf_counter() - t0
    return out


def _mem_available_mib() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _chunk_for(steps: int) -> int:
    """The multiple of RECORD_EVERY dividing ``steps`` nearest √steps."""
    cands = [c for c in range(RECORD_EVERY, steps + 1, RECORD_EVERY) if steps % c == 0]
    return min(cands, key=lambda c: (abs(c - math.sqrt(steps)), c))


def _growth_rate(rows, min_steps: int):
    """(λ 1/ps, intercept) of ln |grad| = a + λ t over the rows with steps ≥ min_steps."""
    pts = [(r["steps"] * TIMESTEP_FS / 1000, math.log(r["grad_norm"])) for r in rows
           if r["steps"] >= min_steps and r["grad_norm"] > 0 and math.isfinite(r["grad_norm"])]
    if len(pts) < 2:
        return float("nan"), float("nan")
    t, y = np.array(pts).T
    lam, a = np.polyfit(t, y, 1)
    return float(lam), float(a)


def _fmt(x, digits=3):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return float(f"{x:.{digits}g}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 108 atoms, 100/400 steps, horizons 100/200, no SchNet, in-process")
    p.add_argument("--no-schnet", action="store_true", help="Morse only")
    p.add_argument("--in-process", action="store_true",
                   help="every measurement in this process (no fresh subprocesses: peak RSS then mixes; --quick does this)")
    p.add_argument("--workdir", default=None)
    p.add_argument("--no-record", action="store_true", help="print only: no JSON, no RESULTS.md section")
    p.add_argument("--child", metavar="SPEC", help=argparse.SUPPRESS)  # a measurement in a fresh process
    args = p.parse_args(argv)
    if args.child:
        return _child(args.child)

    quick = args.quick
    repeat = 3 if quick else 4
    lengths = (100, 400) if quick else (1000, 10000)
    horizons = (100, 200) if quick else (50, 100, 200, 500, 1000, 2000)
    in_process = quick or args.in_process
    schnet = not (quick or args.no_schnet)
    t_start = time.perf_counter()
    workdir = args.workdir or tempfile.mkdtemp(prefix="mlpjax_diffsim_cost_")
    prepared = os.path.join(workdir, "prepared.npz")
    r_max = 5.5 if quick else R_MAX_A  # below half the cell width (15.1 Å; quick: 11.3 Å)
    base = {"repeat": repeat, "prepared": prepared, "r_max": r_max}

    shared = os.environ.get("DIFFSIM_COST_SHARED")  # a note on other load (set by whoever runs it)
    prep = _in_child({**base, "kind": "prepare", "model": "morse", "prepared": None, "prepared_out": prepared,
                      "melt_steps": 300 if quick else 1000, "cool_steps": 500 if quick else 3000,
                      "target_steps": 300 if quick else 1000}, workdir, in_process)
    print(f"prepared ({prep['child_wall_s']:.0f} s): T {prep['T_K']:.0f} K, E_pot {prep['epot_eV_per_atom']:.3f} eV/atom, "
          f"P {prep['pressure_GPa']:.2f} GPa, MSD {prep['msd_A2_last_half']:.2f} Å² over {prep['msd_ps']:.1f} ps, "
          f"RDF first peak g = {prep['rdf_first_peak_g']:.2f} at {prep['rdf_first_peak_A']:.2f} Å, "
          f"first minimum g = {prep['rdf_first_min_g']:.2f}", flush=True)

    runs = []  # one dict per measured configuration

    def measure(kind, model, steps, checkpoint=True, repeats=None):
        spec = {**base, "kind": kind, "model": model, "steps": steps, "chunk_steps": _chunk_for(steps),
                "checkpoint": checkpoint, "repeats": repeats or (1 if quick or steps >= 10000 or model == "schnet" else 2)}
        r = _in_child(spec, workdir, in_process)
        r.update({"kind": kind, "model": model, "steps": steps, "chunk_steps": spec["chunk_steps"],
                  "checkpoint": checkpoint, "repeats": spec["repeats"]})
        runs.append(r)
        if kind == "backprop":
            print(f"{model} backprop {steps} steps ({'chunk ' + str(spec['chunk_steps']) if checkpoint else 'no checkpoint'}): "
                  f"compile {r['compile_s']:.1f} s, run {r['run_s']:.2f} s, peak RSS {r['peak_rss_mib']:.0f} MiB, "
                  f"XLA temp {r['xla_temp_mib']:.1f} MiB, |grad| {r['grad_norm']:.3g} ({r['child_wall_s']:.0f} s)",
                  flush=True)
        else:
            print(f"{model} reweighting {steps} steps: reference {r['reference']['run_s']:.2f} s, gradient "
                  f"{r['gradient']['run_s']:.3f} s over {r['n_frames']} frames, peak RSS {r['peak_rss_mib']:.0f} MiB, "
                  f"|grad| {r['grad_norm']:.3g} ({r['child_wall_s']:.0f} s)", flush=True)
        return r

    short, long_ = lengths
    measure("backprop", "morse", short)
    measure("reweight", "morse", short)
    plain_short = measure("backprop", "morse", short, checkpoint=False)
    measure("backprop", "morse", long_)
    measure("reweight", "morse", long_)
    projected = plain_short["xla_temp_mib"] * long_ / short
    free = _mem_available_mib()
    plain_long_note = None
    if projected < 0.5 * free:
        measure("backprop", "morse", long_, checkpoint=False)
    else:
        plain_long_note = (f"backprop without chunk checkpointing through {long_} steps not run: projected XLA temp "
                           f"{projected:.0f} MiB > half the available {free:.0f} MiB")
        print(plain_long_note, flush=True)
    if schnet:
        measure("backprop", "schnet", short)
        measure("reweight", "schnet", short)

    hz = _in_child({**base, "kind": "horizon", "model": "morse", "horizons": list(horizons)}, workdir, in_process)
    window = hz["window_steps"]
    lam, _ = _growth_rate(hz["exact"], window)
    lam_t, _ = _growth_rate(hz["truncated"], window)
    print(f"horizon scan ({hz['child_wall_s']:.0f} s): λ = {lam:.3g} /ps exact, {lam_t:.3g} /ps truncated", flush=True)
    total = time.perf_counter() - t_start

    # ---------------------------------------------------------------- tables
    n_atoms = 4 * repeat**3
    rows = []

    def rss(r, before, after):
        if r.get("in_process"):
            return "n/a (one process)"
        return f"{r[before]:.0f} → {r[after]:.0f}" if before else f"→ {r[after]:.0f}"

    for r in runs:
        label = {"morse": "Morse", "schnet": "SchNet (untrained)"}[r["model"]]
        if r["kind"] == "backprop":
            how = f"backprop, chunk checkpoint ({r['chunk_steps']} steps)" if r["checkpoint"] else "backprop, no chunk checkpoint"
            rows.append([label, how, r["steps"], _fmt(r["compile_s"]), _fmt(r["first_call_s"]), _fmt(r["run_s"]),
                         rss(r, "rss_before_mib", "peak_rss_mib"), _fmt(r["xla_temp_mib"]),
                         _fmt(r["value"], 4), _fmt(r["grad_norm"])])
        else:
            ref, g = r["reference"], r["gradient"]
            rows.append([label, f"reweighting: reference run (+ {r['n_frames']} frame energies)", r["steps"],
                         _fmt(ref["compile_s"]), _fmt(ref["first_call_s"]), _fmt(ref["run_s"]),
                         rss(r, "rss_before_mib", "peak_rss_after_reference_mib"), _fmt(ref["xla_temp_mib"]),
                         "", ""])
            rows.append([label, f"reweighting: gradient over {r['n_frames']} frames (reused reference)", r["steps"],
                         _fmt(g["compile_s"]), _fmt(g["first_call_s"]), _fmt(g["run_s"]),
                         rss(r, None, "peak_rss_mib"), _fmt(g["xla_temp_mib"]), _fmt(r["value"], 4), _fmt(r["grad_norm"])])
            rows.append([label, "reweighting: total (fresh reference)", r["steps"],
                         _fmt(ref["compile_s"] + g["compile_s"]), _fmt(ref["first_call_s"] + g["first_call_s"]),
                         _fmt(ref["run_s"] + g["run_s"]), rss(r, "rss_before_mib", "peak_rss_mib"),
                         _fmt(max(ref["xla_temp_mib"], g["xla_temp_mib"])), "", ""])
    cost_headers = ["potential", "method", "MD steps", "compile s", "first call s", "run s (compiled)",
                    "RSS MiB before → peak", "XLA temp MiB", "loss", "|grad|"]
    cost_table = markdown_table(cost_headers, rows)

    def find(kind, model, steps, checkpoint=True):
        for r in runs:
            if (r["kind"], r["model"], r["steps"]) == (kind, model, steps) and (kind != "backprop" or r["checkpoint"] == checkpoint):
                return r
        return None

    ratio_rows, ratios = [], []
    for model in ("morse", "schnet"):
        for steps in lengths:
            rw = find("reweight", model, steps)
            if rw is None:
                continue
            rw_total = rw["reference"]["run_s"] + rw["gradient"]["run_s"]
            rw_temp = max(rw["reference"]["xla_temp_mib"], rw["gradient"]["xla_temp_mib"])
            for ckpt in (True, False):
                bp = find("backprop", model, steps, ckpt)
                if bp is None:
                    continue
                d = {"model": model, "steps": steps, "checkpoint": ckpt,
                     "time_vs_fresh_reference": bp["run_s"] / rw_total,
                     "time_vs_reused_reference": bp["run_s"] / rw["gradient"]["run_s"],
                     "compile_vs_reweighting": bp["compile_s"] / (rw["reference"]["compile_s"] + rw["gradient"]["compile_s"]),
                     "peak_rss": float("nan") if in_process else bp["peak_rss_mib"] / rw["peak_rss_mib"],
                     "xla_temp": bp["xla_temp_mib"] / rw_temp}
                ratios.append(d)
                ratio_rows.append([{"morse": "Morse", "schnet": "SchNet"}[model], steps,
                                   "chunk checkpoint" if ckpt else "no checkpoint",
                                   _fmt(d["time_vs_fresh_reference"]), _fmt(d["time_vs_reused_reference"]),
                                   _fmt(d["compile_vs_reweighting"]), _fmt(d["peak_rss"]), _fmt(d["xla_temp"])])
    ratio_headers = ["potential", "MD steps", "backprop", "time ÷ reweighting (fresh reference)",
                     "time ÷ reweighting gradient (reused reference)", "compile ÷ reweighting compile",
                     "peak RSS ÷ reweighting", "XLA temp ÷ reweighting"]
    ratio_table = markdown_table(ratio_headers, ratio_rows)

    trunc_of = {r["steps"]: r for r in hz["truncated"]}
    hz_rows = []
    for r in hz["exact"]:
        t = trunc_of.get(r["steps"])
        hz_rows.append([r["steps"], r["steps"] * TIMESTEP_FS / 1000, _fmt(r["value"], 4), _fmt(r["grad_norm"]),
                        _fmt(t["grad_norm"]) if t else f"= exact (≤ {window} steps)", _fmt(r["seconds"]),
                        _fmt(t["seconds"]) if t else ""])
    hz_headers = ["horizon (steps)", "t (ps)", "loss", "|grad| exact", f"|grad| truncated ({window}-step windows)",
                  "s exact (incl. compile)", "s truncated"]
    hz_table = markdown_table(hz_headers, hz_rows)

    t_long = long_ * TIMESTEP_FS / 1000  # ps
    if math.isfinite(lam) and lam > 0:
        meaning = (
            f"The exact gradient's norm grows as e^(λt), λ = {lam:.3g} /ps (least squares over the exact horizons ≥ "
            f"{window} steps; doubling every {math.log(2) / lam:.3g} ps): over a {long_}-step ({t_long:g} ps) horizon "
            f"that is a factor e^(λ·{t_long:g} ps) ≈ {math.exp(lam * t_long):.3g}. "
            + (f"With {window}-step windows the truncated gradient's norm grows at {lam_t:.3g} /ps (each window's "
               "contribution is bounded; more windows only add up). " if math.isfinite(lam_t) else "")
            + "So the exact backpropagated gradient of a long run is dominated by the chaotic growth of the tangent "
            "(and is the gradient of this one noise realisation, not of the ensemble average): for long horizons use "
            "truncated BPTT (windows ≲ 1/λ, gradient clipping) for dynamical observables, and reweighting (DiffTRe) for "
            "ensemble averages such as the RDF, whose gradient stays bounded and costs one forward run.")
    else:
        meaning = f"The exact gradient's norm shows no exponential growth over these horizons (λ = {lam:.3g} /ps)."
    print(cost_table)
    print(ratio_table)
    print(hz_table)
    print(meaning)
    if plain_long_note:
        print(plain_long_note)
    print(f"total {total / 60:.1f} min")
    if args.no_record:
        return 0
    env = environment()
    if shared:
        env["note"] = shared
    write_json("diffsim_cost.json", {
        "environment": env, "quick": quick, "n_atoms": n_atoms, "lattice_A": LATTICE_A, "temperature_K": TEMPERATURE_K,
        "timestep_fs": TIMESTEP_FS, "friction_per_ps": FRICTION_PER_PS, "record_every": RECORD_EVERY,
        "rdf": {"r_max_A": r_max, "n_bins": N_BINS, "width_A": WIDTH_A, "target_dr0_A": TARGET_DR0_A},
        "morse": MORSE, "schnet": {**SCHNET, "cutoff_A": SCHNET_CUTOFF_A} if schnet else None, "prepared": prep,
        "runs": runs, "ratios": ratios, "horizon": hz, "growth_rate_per_ps": lam, "growth_rate_truncated_per_ps": lam_t,
        "plain_long_note": plain_long_note, "total_s": total})
    cmd = "benchmarks/diffsim_cost.py" + (" --quick" if quick else "") + (" --no-schnet" if args.no_schnet else "")
    body = (
        f"`python {cmd}`. {n_atoms} Cu atoms (fcc {repeat}³ cubic at a = {LATTICE_A} Å, melted at {MELT_K:.0f} K, cooled "
        f"to {TEMPERATURE_K:.0f} K: T {prep['T_K']:.0f} K, E_pot {prep['epot_eV_per_atom']:.3f} eV/atom, P "
        f"{prep['pressure_GPa']:.1f} GPa, MSD {prep['msd_A2_last_half']:.2f} Å² over {prep['msd_ps']:.1f} ps, RDF first "
        f"peak {prep['rdf_first_peak_g']:.2f} at {prep['rdf_first_peak_A']:.2f} Å), Langevin NVT {TEMPERATURE_K:.0f} K, "
        f"γ = {FRICTION_PER_PS:g}/ps, {TIMESTEP_FS:g} fs, float32; Morse (Girifalco–Weizer, {MORSE['cutoff']:g} Å)"
        + (f" and an untrained SchNet ({SCHNET['features']} features, {SCHNET['interactions']} interactions, "
           f"{SCHNET_CUTOFF_A:g} Å)" if schnet else "") +
        f". Loss: L2 distance of the run's smooth RDF (0–{r_max:g} Å, {N_BINS} bins, σ {WIDTH_A:g} Å, every "
        f"{RECORD_EVERY} steps) to a target (r0 + {TARGET_DR0_A:g} Å). Gradient with respect to the potential's "
        "parameters by backpropagation through the run (`DiffTrajectory.value_and_grad`) or by DiffTRe reweighting of a "
        "reference run of the same length (`sample_reference` + `reweighted_average`). Each row's process is fresh: "
        "RSS = `ru_maxrss` (MiB, before the first measured call → peak), XLA temp = "
        "`memory_analysis().temp_size_in_bytes` (MiB) of the compiled program; compile = XLA compile seconds of the "
        "first call; run = median of the later calls. "
        + (f"Machine: {shared}. " if shared else "") + f"\n\n{cost_table}\n\n{ratio_table}\n\n"
        + (f"{plain_long_note}.\n\n" if plain_long_note else "")
        + f"Gradient norm vs horizon (float64, Morse, `gradient_norm_vs_horizon`, chunks of {HORIZON_CHUNK} steps, "
        f"same start):\n\n{hz_table}\n\n{meaning}\n\nWhole benchmark {total / 60:.1f} min.\n")
    append_results("Differentiable simulation: cost of a gradient, backpropagation vs reweighting", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
