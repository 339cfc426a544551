"""Sensitivity analysis of a trained SchNet (issue 16): which parameter groups the first RDF peak
height and the mean squared displacement of 1,400 K liquid Cu depend on.

1. **Model.** SchNet (``experiments/configs/quickstart_cu.yaml``: 32 features, 2 interactions,
   4.5 Å) trained on the quickstart's 300 EMT Cu configurations (``mlpjax.data.emt.emt_cu``:
   crystal MD, rattled and strained cells, 108-atom liquid at 1,750 and 1,000 K), for a few
   epochs only (``--epochs``, default 20, capped at ``--train-minutes``): the analysis needs a
   potential that holds a liquid, not the README's accuracy. Data and model are cached under
   ``--output`` (default ``runs/sensitivity``); ``--retrain`` trains again.
2. **Liquid.** 108 atoms (3³ cubic cells at 13.2 Å³/atom, the data's liquid density), started from
   the data's first liquid frame (1,750 K), Langevin NVT at 1,400 K (2 fs, γ = 5/ps), ``--replicas``
   independent runs: ``--equilibrate-steps`` of equilibration, then a reference run of
   ``--reference-steps`` recorded every 40 fs.
3. **First RDF peak height** O₁ = max ⟨g(r)⟩ over 2–3.2 Å (smooth-kernel RDF on 0–5.5 Å, 0.05 Å
   bins and kernel; a run with pairs closer than 1.8 Å stops the script: a collapsed liquid), its gradient by DiffTRe reweighting of the reference frames
   (:func:`mlpjax.diffsim.reweighted_average`; at the reference parameters: the fluctuation formula).
4. **MSD** O₂ = mean squared displacement after ``--msd-steps`` (default 250: 0.5 ps) of NVE (2 fs)
   from 2R liquid states (each replica's state after the equilibration and after the reference
   run), its gradient by backpropagation through each run (``DiffTrajectory.value_and_grad``:
   exact for that run); O₂ and its gradient are the means over the runs. A short-time MSD (cage
   and onset of diffusion), not a diffusion coefficient: the exact gradient of one run grows with
   the horizon (``benchmarks/diffsim_cost.py``), and at 1 ps with 4 runs its run-to-run spread
   was larger than the mean for every group (measured; ``--msd-steps 500``).
5. **Sensitivities** (:func:`mlpjax.diffsim.sensitivity`) per group — embedding, each interaction
   block (filter network, in2f, f2out, update), readout, the energy scale, E0 + shift — with the
   statistical error from the replicas: the noise column is ‖θ ⊙ SE(∂O/∂θ)‖ (SE the standard
   error over replicas of every gradient component): a relative sensitivity well above it is a
   measurement, one near it is noise. ± is the SE of dO/d ln(scale) over replicas.

Prints the tables, writes ``result.json``; ``--record`` appends them to benchmarks/RESULTS.md.

Usage: ``python experiments/sensitivity.py [--record]`` (``--quick``: a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
R_MAX, N_BINS, WIDTH = 5.5, 110, 0.05  # Å, bins, Å (kernel σ): below half the 11.3 Å box
PEAK_RANGE = (2.0, 3.2)  # Å, where the first peak is looked for (liquid Cu: ~2.5 Å; first minimum ~3.4 Å)


def get_data(path: str):
    """The quickstart's 300 EMT Cu configurations (cached as extxyz at ``path``)."""
    from mlpjax import data
    from mlpjax.data.emt import emt_cu

    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        data.write_extxyz(path, emt_cu(seed=0))
    return data.read(path)


def get_model(out_dir: str, configs, args):
    """SchNet trained for args.epochs (cached: ``out_dir/schnet/model.mlpjax``)."""
    from mlpjax import potential as _potential
    from mlpjax.config import load_config, override
    from mlpjax.training import train

    path = os.path.join(out_dir, "schnet", "model.mlpjax")
    if os.path.exists(path) and not args.retrain:
        return _potential.load(path), None
    cfg = override(load_config(os.path.join(HERE, "configs", "quickstart_cu.yaml")), epochs=args.epochs,
                   max_time_minutes=args.train_minutes)
    t0 = time.perf_counter()
    result = train(cfg, configs, output_dir=os.path.join(out_dir, "schnet"), progress=False)
    info = {"epochs_completed": result.epochs_completed, "stop_reason": result.stop_reason,
            "seconds": time.perf_counter() - t0, "test_metrics": result.test_metrics}
    with open(os.path.join(out_dir, "schnet", "training.json"), "w") as fh:
        json.dump(info, fh, indent=1, default=float)
    return result.potential, info


def block_groups(pot) -> dict:
    """Parameter groups of a SchNet: embedding, each interaction block, readout, normalisation."""
    n = pot.model_config.interactions
    groups = {"embedding": "params/embedding"}
    for i in range(n):
        groups[f"interaction {i}"] = (f"params/filter_{i}_*", f"params/in2f_{i}", f"params/f2out_{i}",
                                      f"params/update_{i}")
    groups["readout"] = "params/readout_*"
    groups["energy scale"] = "energy_scale"
    groups["E0 + shift"] = ("reference_energies", "energy_shift")
    return groups


def analyse(grads_all, grads_each, variables, groups):
    """Rows of one observable: sensitivity of the gradient from all frames/replicas, with the
    noise ‖θ ⊙ SE(∂O/∂θ)‖ and the SE of the scaling sensitivity over replicas."""
    import jax

    from mlpjax import diffsim

    rows = diffsim.sensitivity(grads_all, variables, groups=groups)
    k = len(grads_each)
    se_tree = jax.tree_util.tree_map(lambda *g: np.std(np.stack([np.asarray(x, np.float64) for x in g]), axis=0, ddof=1)
                                     / np.sqrt(k), *grads_each)
    noise = {r.group: r.relative for r in diffsim.sensitivity(se_tree, variables, groups=groups)}
    each = [{r.group: r.scaling for r in diffsim.sensitivity(g, variables, groups=groups)} for g in grads_each]
    out = []
    total2 = sum(r.relative**2 for r in rows)
    for r in rows:
        s = np.array([e[r.group] for e in each])
        out.append(r.as_dict() | {"noise": noise[r.group], "share": r.relative**2 / total2 if total2 > 0 else float("nan"),
                                  "scaling_se": float(np.std(s, ddof=1) / np.sqrt(k)),
                                  "scaling_each": s.tolist()})
    return out


def table(rows, unit: str) -> tuple[list, list]:
    head = ["group", "parameters", f"‖θ⊙∂O/∂θ‖ ({unit})", f"noise ‖θ⊙SE‖ ({unit})", "share",
            f"dO/d ln(scale) ({unit})"]
    body = [[r["group"], r["n_params"], f"{r['relative']:.3g}", f"{r['noise']:.2g}", f"{r['share']:.1%}",
             f"{r['scaling']:+.3g} ± {r['scaling_se']:.2g}"] for r in rows]
    return head, body


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="runs/sensitivity")
    p.add_argument("--data", default="runs/sensitivity/cu_emt.xyz", help="the EMT data (made there if absent)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--train-minutes", type=float, default=3.0)
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--temperature", type=float, default=1400.0, help="K")
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--equilibrate-steps", type=int, default=1000, help="2 fs steps before the reference run")
    p.add_argument("--reference-steps", type=int, default=2000, help="2 fs steps of the reference run")
    p.add_argument("--msd-steps", type=int, default=250, help="2 fs NVE steps of each backpropagated run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 epochs, short runs")
    p.add_argument("--record", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.equilibrate_steps, args.reference_steps, args.msd_steps, args.replicas = 2, 200, 400, 100, 2
        if args.output == "runs/sensitivity":
            args.output = "runs/sensitivity_quick"
    os.makedirs(args.output, exist_ok=True)
    t_start = time.perf_counter()

    import jax
    import jax.numpy as jnp

    from mlpjax import diffsim
    from mlpjax.md import MDConfig

    def say(msg):
        print(f"[{time.perf_counter() - t_start:5.0f} s] {msg}", flush=True)

    configs = get_data(args.data)
    say(f"data: {len(configs)} EMT configurations")
    pot, train_info = get_model(args.output, configs, args)
    meta = pot.metadata.get("test_metrics") or {}
    say(f"model: {pot.model} {pot.model_config.features} features, {pot.model_config.interactions} interactions, "
        f"{pot.metadata.get('epochs_completed')} epochs; test E MAE {meta.get('energy_mae_meV_per_atom', float('nan')):.2f} "
        f"meV/atom, F MAE {meta.get('force_mae_meV_per_A', float('nan')):.1f} meV/Å"
        + ("" if train_info is None else f" (trained in {train_info['seconds']:.0f} s)"))
    from mlpjax.data.emt import EMT_CU_LIQUID_VOLUME

    # the data's liquid frames (108 atoms at 13.2 Å³/atom; extxyz keeps no source): the first is from the 1,750 K run
    liquid = [c for c in configs if c.n_atoms == 108 and c.periodic
              and abs(abs(np.linalg.det(c.cell)) / c.n_atoms - EMT_CU_LIQUID_VOLUME) < 0.01][0].to_atoms()
    groups = block_groups(pot)
    R = args.replicas
    record_every = 20
    md = MDConfig(ensemble="nvt", temperature_K=args.temperature, timestep_fs=2.0, friction_per_ps=5.0, skin=0.5,
                  capacity_multiplier=1.5)

    # ---- equilibration and the reference run (NVT)
    t0 = time.perf_counter()
    eq = diffsim.trajectory(pot, liquid, md, steps=args.equilibrate_steps, record_every=record_every,
                            chunk_steps=record_every * 5, replicas=R)
    v = eq.engine.cast(pot.variables)
    _, eq_end = eq.records(v, eq.start(v, seed=args.seed))
    sim = diffsim.trajectory(pot, liquid, md, steps=args.reference_steps, record_every=record_every,
                             chunk_steps=record_every * 5, replicas=R)
    start = sim.start(v, positions=eq_end.state.position, momenta=eq_end.state.momentum)
    ref, ref_end = diffsim.sample_reference(sim, v, start)
    system = sim.system
    n = system.n_atoms
    F = int(ref.positions.shape[0])
    T = F // R
    e_pot = float(jnp.mean(ref.energies)) / n
    md_seconds = time.perf_counter() - t0
    say(f"reference: {R} × {T} frames of {n} atoms at {args.temperature:g} K, ⟨E_pot⟩ {e_pot:.4f} eV/atom "
        f"({md_seconds:.0f} s incl. {args.equilibrate_steps} equilibration steps)")

    # ---- first RDF peak height by reweighting
    def g_of(Rf):
        return diffsim.rdf(system, Rf[None], r_max=R_MAX, n_bins=N_BINS, width=WIDTH)[1]

    r_bins = diffsim.rdf_bins(R_MAX, N_BINS)  # [B] Å
    shell = jnp.asarray((r_bins > PEAK_RANGE[0]) & (r_bins < PEAK_RANGE[1]))  # [B] the first shell's bins

    def peak(vv, ref_):
        g, n_eff = diffsim.reweighted_average(vv, ref_, g_of)
        g_shell = jnp.where(shell, g, -jnp.inf)
        return jnp.max(g_shell), (jnp.argmax(g_shell), n_eff, g)

    t0 = time.perf_counter()
    vg = jax.jit(jax.value_and_grad(peak, has_aux=True))
    (peak_value, (peak_bin, n_eff, g_avg)), g_peak = vg(v, ref)
    r_peak = float(r_bins[int(peak_bin)])
    overlap = float(jnp.max(jnp.where(jnp.asarray(r_bins) < 1.8, g_avg, 0.0)))
    if overlap > 0.02:
        raise SystemExit(f"the reference run has pairs closer than 1.8 Å (g up to {overlap:.2g} there): the potential "
                         "lets atoms overlap in the 1,400 K liquid; train it longer (--epochs, --train-minutes, --retrain)")
    per = []
    for k in range(R):  # frames are [T, R] interleaved -> T·R
        sub = diffsim.Reference(positions=ref.positions.reshape(T, R, n, 3)[:, k], energies=ref.energies.reshape(T, R)[:, k],
                                kT=ref.kT, nbrs=ref.nbrs, system=ref.system)
        (pk, _), gk = vg(v, sub)
        per.append((float(pk), gk))
    rdf_rows = analyse(g_peak, [g for _, g in per], v, groups)
    rdf_seconds = time.perf_counter() - t0
    peak_se = float(np.std([x for x, _ in per], ddof=1) / np.sqrt(R))
    say(f"first RDF peak: g = {float(peak_value):.3f} ± {peak_se:.3f} at {r_peak:.3f} Å, N_eff {float(n_eff):.0f}/{F} "
        f"({rdf_seconds:.0f} s)")

    # ---- MSD by backpropagation through short NVE runs (one per replica)
    t0 = time.perf_counter()
    nve = MDConfig(ensemble="nve", timestep_fs=2.0, skin=0.5, capacity_multiplier=1.5, temperature_K=args.temperature)
    msd_every = 10
    chunk = max([c for c in range(msd_every, args.msd_steps + 1, msd_every)
                 if args.msd_steps % c == 0 and c <= max(2 * np.sqrt(args.msd_steps), msd_every)])  # ≈ √steps
    run = diffsim.trajectory(pot, liquid, nve, steps=args.msd_steps, record_every=msd_every, chunk_steps=chunk)

    def final_msd(records):
        return diffsim.msd(system, records["position"])[-1]

    starts = [(ref_end.state, k) for k in range(R)] + [(eq_end.state, k) for k in range(R)]  # 2R liquid states
    msds, g_msd_each = [], []
    for k, (state, j) in enumerate(starts):
        st = run.start(v, positions=state.position[j], momenta=state.momentum[j])
        value, g = run.value_and_grad(final_msd, v, st)
        msds.append(float(value))
        g_msd_each.append(g)
        say(f"  MSD run {k}: {float(value):.3f} Å² after {args.msd_steps * 2e-3:g} ps")
    g_msd = jax.tree_util.tree_map(lambda *g: sum(g) / len(g), *g_msd_each)
    msd_rows = analyse(g_msd, g_msd_each, v, groups)
    msd_value, msd_se = float(np.mean(msds)), float(np.std(msds, ddof=1) / np.sqrt(len(msds)))
    t_ps = args.msd_steps * 2e-3
    msd_seconds = time.perf_counter() - t0
    say(f"MSD after {t_ps:g} ps: {msd_value:.3f} ± {msd_se:.3f} Å² (MSD/6t {msd_value / (6 * t_ps):.3f} Å²/ps; "
        f"{msd_seconds:.0f} s)")

    # ---- report
    sys.path.insert(0, os.path.join(HERE, "..", "benchmarks"))
    from _common import append_results, environment, markdown_table

    tables = {}
    for name, rows, unit in (("first RDF peak height (reweighting)", rdf_rows, "g"),
                             (f"MSD after {t_ps:g} ps (backprop)", msd_rows, "Å²")):
        head, body = table(rows, unit)
        tables[name] = markdown_table(head, body)
        print(f"\n{name}\n{tables[name]}")

    def dominant(rows):
        top = max((r for r in rows if r["group"] not in ("energy scale", "E0 + shift")), key=lambda r: r["relative"])
        above = [r["group"] for r in rows if r["relative"] > 2 * r["noise"]]
        return (f"most sensitive network group {top['group']} ({top['share']:.0%} of ‖θ⊙∂O/∂θ‖²); above twice "
                f"their noise: {', '.join(above) if above else 'no group'}")

    elapsed = time.perf_counter() - t_start
    summary = (f"first RDF peak g = {float(peak_value):.3f} ± {peak_se:.3f} at {r_peak:.2f} Å (N_eff {float(n_eff):.0f}/{F}): "
               f"{dominant(rdf_rows)}. MSD {msd_value:.2f} ± {msd_se:.2f} Å² after {t_ps:g} ps ({len(msds)} runs): "
               f"{dominant(msd_rows)}. Total {elapsed:.0f} s")
    print("\n" + summary)
    out = {"environment": environment(), "args": vars(args), "training": train_info,
           "model": {"path": os.path.join(args.output, "schnet", "model.mlpjax"), "test_metrics": meta,
                     "epochs_completed": pot.metadata.get("epochs_completed")},
           "reference": {"frames": F, "replicas": R, "epot_eV_per_atom": e_pot, "seconds": md_seconds},
           "rdf_peak": {"value": float(peak_value), "se": peak_se, "r_A": r_peak, "n_eff": float(n_eff),
                        "per_replica": [x for x, _ in per], "groups": rdf_rows, "seconds": rdf_seconds},
           "msd": {"value_A2": msd_value, "se_A2": msd_se, "t_ps": t_ps, "per_replica": msds, "groups": msd_rows,
                   "seconds": msd_seconds},
           "summary": summary, "seconds": elapsed}
    with open(os.path.join(args.output, "result.json"), "w") as fh:
        json.dump(out, fh, indent=1, default=float)
    if args.record and not args.quick:
        cmd = "python experiments/sensitivity.py" + "".join(
            f" --{k.replace('_', '-')} {v_}" for k, v_ in vars(args).items()
            if k in ("epochs", "replicas", "equilibrate_steps", "reference_steps", "msd_steps"))
        body = (f"`{cmd}` — SchNet (32 features, 2 interactions, 4.5 Å, {pot.metadata.get('epochs_completed')} epochs on "
                f"{len(configs)} EMT Cu configurations: test E MAE {meta.get('energy_mae_meV_per_atom', float('nan')):.2f} "
                f"meV/atom, F MAE {meta.get('force_mae_meV_per_A', float('nan')):.1f} meV/Å); {n} atoms of liquid Cu at "
                f"{args.temperature:g} K (13.2 Å³/atom), {R} replicas. Sensitivities of one observable O per parameter "
                "group (`mlpjax.diffsim.sensitivity`): ‖θ⊙∂O/∂θ‖ (O's change per relative change of L2 norm 1), its "
                "noise ‖θ⊙SE‖ from the spread over replicas, its share of the model's ‖θ⊙∂O/∂θ‖², and dO/d ln(scale) "
                "(the group scaled by 1 + t) ± SE over replicas.\n\n"
                + "\n\n".join(f"{name}:\n\n{t}" for name, t in tables.items()) + f"\n\n**{summary}**\n")
        append_results("Sensitivity of liquid-Cu observables to a SchNet's parameter groups (diffsim)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
