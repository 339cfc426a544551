"""Combined top-down + bottom-up fine-tuning: a trained SchNet refined on the RDF of EMT liquid
Cu at 1,400 K by DiffTRe reweighting while it keeps its force data (issue 16, ``fit_rdf --mlp``).

1. **The trained model.** A small SchNet (16 features, 2 interactions, 16 radial functions,
   cosine cutoff 4.5 Å; 80 epochs, batch 4, Adam 3e-3 warm-up cosine, EMA 0.99, loss
   E + F + virial) trained on EMT Cu (:func:`mlpjax.data.emt.emt_cu`): crystal Langevin MD at
   300/500/700 K (32 and 108 atoms), rattled and strained cells — **no liquid frames**
   (``--liquid-train-frames 0``): a model made for the solid, deliberately imperfect in the
   liquid. It is good on its own (crystal) test split, but its 1,400 K liquid is
   over-structured (first RDF peak too high, diffusion too slow) and its liquid forces are
   poor. (With 6 liquid frames at 1,750 K in its data the same SchNet's RDF is already at the
   target's noise level, leaving nothing to fit.) Split 80/10/10 by seed.
2. **Target.** ASE Langevin MD with EMT of 108 atoms (3×3×3 cubic fcc cells at 1.04 × 3.59 Å,
   13.0 Å³/atom), melted at 3,000 K, then 1,400 K; 150 frames every 40 fs (with their EMT
   forces: the held-out liquid test set). The smooth-kernel RDF (:func:`mlpjax.diffsim.rdf`,
   0–5.5 Å, 0.05 Å bins and kernel; the cell's half-width is 5.6 Å) of the frames is the target.
3. **Fine-tuning** (:func:`mlpjax.diffsim.fit.fit_observables`): reference runs of the SchNet
   itself (mlpjax's jax-md Langevin NVT, 1,400 K, 2 fs, γ = 5/ps, float32, 2 replicas started
   from an EMT liquid frame), reweighted; a new reference whenever N_eff / F < 0.6. Loss

       L(θ) = L_RDF(θ) / L_RDF(θ₀) + w · L_data(θ) / L_data(θ₀)

   with L_RDF the mean squared difference of the reweighted RDF to the target and L_data the
   model's own training loss (per-atom energy, force and virial terms over its energy scale,
   :func:`mlpjax.training.loss.error_sums` / ``loss_from_sums`` of ``PotentialDef.predict``: the
   forces and stress of the one autodiff contract) on a fixed batch of its training
   structures; both terms are 1 at the start. Every network parameter is trained (Adam,
   cosine decay to 10 %, global-norm clip 1; ~1 s a step here, so nothing is frozen by
   default); ``--freeze`` patterns keep some fixed (``'params/embedding/*' 'params/filter_0_*'
   'params/in2f_0/*' 'params/f2out_0/*' 'params/update_0/*'`` trains only the last interaction
   and the readout; ``mlpjax.potential.parameter_paths`` lists the names).
4. **Check.** Each model (start and every w) is simulated again from scratch (another EMT
   liquid frame, other seeds, twice a reference run's length) and its RDF compared with the
   target: the L2 error ( mean over bins of (g − g_target)² )^½ of a fresh run, not the
   reweighted estimate the fit optimised; the target's own noise (its two halves) is printed.
   Force (and energy) MAE on the EMT test split (never trained on) and on the EMT liquid frames.

Everything is cached under ``--output`` (default ``runs/fit_rdf_mlp``): the EMT data set, the
trained SchNet and the EMT target frames. Prints a table, writes ``result.json``; ``--record``
appends to benchmarks/RESULTS.md.

Usage: ``python experiments/fit_rdf_mlp.py [--weights 0 0.01 0.1 1] [--record]`` (``--quick``: a smoke
run, < 3 min); ``experiments/fit_rdf.py --mlp ...`` passes its arguments to :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fit_rdf import cell, emt_target  # noqa: E402  (one EMT target recipe for both scripts)

R_MAX, N_BINS, WIDTH = 5.5, 110, 0.05  # Å, bins, Å (kernel σ); R_MAX < half the 108-atom cell (5.6 Å)
SCHNET = {"features": 16, "interactions": 2, "num_rbf": 16, "filter_hidden": 16, "cutoff_fn": "cosine"}
CUTOFF = 4.5  # Å: between the 3rd (4.40 Å) and 4th (5.08 Å) fcc neighbour shells
LIQUID_TRAIN_FRAMES = 0  # liquid frames (1,750 K) in the SchNet's training data: none by default (docstring)


def _data_kwargs(quick: bool, liquid_frames: int) -> dict:
    """emt_cu settings of the SchNet's training data (few or no liquid frames: see the docstring)."""
    liquid = {"liquid_temperatures_K": (1750.0,) if liquid_frames else (), "liquid_frames_per_run": liquid_frames}
    if quick:
        return {"temperatures_K": (300.0,), "repeats": (2,), "md_frames_per_run": 10, "n_rattled": 6, "n_strained": 6,
                "melt_steps": 100, "liquid_equilibration_steps": 50, **liquid}
    return {"md_frames_per_run": 20, "n_rattled": 30, "n_strained": 30, **liquid}


def training_data(out_dir: str, args):
    """The SchNet's EMT data (cached as extxyz), split 80/10/10: (train, valid, test) lists."""
    from mlpjax import data
    from mlpjax.data.emt import emt_cu

    path = os.path.join(out_dir, f"cu_emt_liquid{args.liquid_train_frames}.xyz")
    if not os.path.exists(path):
        t0 = time.perf_counter()
        configs = emt_cu(seed=args.seed, **_data_kwargs(args.quick, args.liquid_train_frames))
        for c in configs:
            c.info["sample"] = c.source  # "emt:liquid:1750K:108", ...: the file's own name replaces source on reading
        data.write_extxyz(path, configs)
        print(f"EMT training data: {time.perf_counter() - t0:.0f} s", flush=True)
    configs = data.read(path)
    order = np.random.default_rng(args.seed).permutation(len(configs))
    n_test = n_valid = max(2, len(configs) // 10)
    test = [configs[i] for i in order[:n_test]]
    valid = [configs[i] for i in order[n_test:n_test + n_valid]]
    train = [configs[i] for i in order[n_test + n_valid:]]
    return train, valid, test


def train_config(args):
    from mlpjax.config import TrainConfig

    return TrainConfig(model="schnet", model_config=dict(SCHNET), cutoff=CUTOFF, batch_size=4,
                       epochs=args.train_epochs, learning_rate=3e-3, warmup_epochs=2, ema_decay=0.99, patience=None,
                       seed=args.seed, max_time_minutes=args.max_train_minutes, test_fraction=0.0)


def trained_schnet(out_dir: str, train, valid, test, args):
    """(the trained SchNet, training seconds or None when cached): OUTPUT/schnet_liquidN/model.mlpjax,
    retrained when its settings change."""
    from mlpjax.potential import load
    from mlpjax.training import train as fit

    cfg = train_config(args)
    run_dir = os.path.join(out_dir, f"schnet_liquid{args.liquid_train_frames}")
    model, stamp = os.path.join(run_dir, "model.mlpjax"), os.path.join(run_dir, "settings.json")
    settings = json.loads(json.dumps({"config": cfg.to_dict(), "n_train": len(train), "data": _data_kwargs(args.quick,
                                     args.liquid_train_frames)}, default=str))
    if os.path.exists(model) and os.path.exists(stamp):
        with open(stamp) as fh:
            if json.load(fh) == settings:
                return load(model), None
    t0 = time.perf_counter()
    result = fit(cfg, train, valid, test_configs=test, output_dir=run_dir, progress=False)
    with open(stamp, "w") as fh:
        json.dump(settings, fh)
    print(f"trained SchNet: {result.epochs_completed} epochs ({result.stop_reason}), {time.perf_counter() - t0:.0f} s",
          flush=True)
    return result.potential, time.perf_counter() - t0


def one_batch(pot, configs, dtype):
    """All of ``configs`` as one padded GraphBatch (device arrays) in the potential's species table."""
    import jax

    from mlpjax.graph import batches, make_budget, to_graphs

    graphs = to_graphs(configs, pot.species, pot.cutoff)
    (batch,) = list(batches(graphs, make_budget(graphs, len(graphs)), shuffle=False, dtype=dtype))
    return jax.tree_util.tree_map(jax.numpy.asarray, batch)


def data_loss_fn(pot, configs, weights, dtype):
    """``variables -> scalar``: the training loss (mlpjax.training.loss; forces and stress from
    PotentialDef.predict's single gradient) of the model on ``configs`` (one fixed batch)."""
    from mlpjax.training.loss import error_sums, loss_from_sums

    batch = one_batch(pot, configs, dtype)
    sigma, definition = pot.energy_scale_mean, pot.definition
    compute_stress = weights[2] > 0

    def loss(variables):
        pred = definition.predict(variables, batch, compute_stress=compute_stress)
        return loss_from_sums(error_sums(pred, batch, compute_stress), sigma, weights)

    return loss


def errors_fn(pot, configs, dtype, *, batch_size: int = 16):
    """``variables -> dict``: energy/force MAE (meV) of the model on ``configs`` (summed over batches)."""
    import jax

    from mlpjax.graph import batches, make_budget, to_graphs
    from mlpjax.training.loss import error_sums, summarize

    graphs = to_graphs(configs, pot.species, pot.cutoff)
    all_batches = list(batches(graphs, make_budget(graphs, batch_size), shuffle=False, dtype=dtype))
    definition = pot.definition
    sums = jax.jit(lambda v, b: error_sums(definition.predict(v, b, compute_stress=False), b, False))

    def errors(variables):
        total = None
        for b in all_batches:
            s = jax.device_get(sums(variables, b))
            total = s if total is None else {k: total[k] + s[k] for k in total}
        m = summarize(total, pot.energy_scale_mean, (1.0, 1.0, 0.0))
        return {"force_mae_meV_per_A": m["force_mae_meV_per_A"], "energy_mae_meV_per_atom": m["energy_mae_meV_per_atom"]}

    return errors


def liquid_configs(target, atoms, every: int):
    """Every ``every``-th EMT target frame as a labelled Configuration (the held-out liquid set)."""
    from mlpjax.data import Configuration

    out = []
    for k in range(0, len(target["positions"]), every):
        a = atoms.copy()
        a.set_cell(target["cell"])
        a.positions = target["positions"][k]
        a.wrap()
        c = Configuration.from_atoms(a, source=f"emt:liquid-target:{len(a)}", frame=k)
        c.energy, c.forces = float(target["energies"][k]), np.asarray(target["forces"][k])
        out.append(c)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mlp", action="store_true", help="accepted (and ignored) so that fit_rdf.py --mlp can pass its argv")
    p.add_argument("--output", default="runs/fit_rdf_mlp")
    p.add_argument("--temperature", type=float, default=1400.0, help="K")
    p.add_argument("--expand", type=float, default=1.04, help="lattice constant factor over EMT's crystal (density)")
    p.add_argument("--weights", type=float, nargs="+", default=(0.0, 0.01, 0.1, 1.0),
                   help="balance weights w of the (normalised) data loss; one fit each")
    p.add_argument("--steps", type=int, default=30, help="optimiser steps per fit")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam step size on the network parameters")
    p.add_argument("--md-steps", type=int, default=1000, help="steps of each reference trajectory (2 fs)")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--freeze", nargs="*", default=(), help="parameter-path patterns kept fixed (mlpjax train --freeze)")
    p.add_argument("--data-structures", type=int, default=32, help="training structures in the data-loss batch")
    p.add_argument("--liquid-train-frames", type=int, default=LIQUID_TRAIN_FRAMES,
                   help="liquid frames (1,750 K) in the SchNet's training data (0: crystal only)")
    p.add_argument("--train-epochs", type=int, default=80)
    p.add_argument("--max-train-minutes", type=float, default=4.0)
    p.add_argument("--melt-steps", type=int, default=1000)
    p.add_argument("--equilibrate-steps", type=int, default=1000)
    p.add_argument("--target-frames", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: tiny data and training, short runs, 2 steps")
    p.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.md_steps, args.melt_steps, args.equilibrate_steps, args.target_frames = 2, 200, 200, 100, 20
        args.train_epochs, args.data_structures, args.weights = 2, 8, tuple(args.weights[:2])
        if args.output == "runs/fit_rdf_mlp":
            args.output = "runs/fit_rdf_mlp_quick"
    os.makedirs(args.output, exist_ok=True)
    t_start = time.perf_counter()

    import jax
    import jax.numpy as jnp

    from mlpjax import diffsim
    from mlpjax.diffsim.fit import FitConfig, fit_observables
    from mlpjax.md import MDConfig

    dtype = np.float32
    target = emt_target(args.output, args, repeat=3)  # the 108-atom cell
    atoms = cell(args.expand, repeat=3)
    print(f"EMT target: {len(target['positions'])} frames of {len(atoms)} atoms at {args.temperature:g} K", flush=True)
    train, valid, test = training_data(args.output, args)
    pot, train_s = trained_schnet(args.output, train, valid, test, args)
    liquid = liquid_configs(target, atoms, every=5 if len(target["positions"]) >= 50 else 1)
    n_liquid_train = sum(":liquid:" in str(c.info.get("sample", "")) for c in train)
    print(f"SchNet: {len(train)} training structures ({n_liquid_train} liquid), {len(test)} test, "
          f"{len(liquid)} EMT liquid frames at {args.temperature:g} K for the liquid force error", flush=True)

    md = MDConfig(ensemble="nvt", temperature_K=args.temperature, timestep_fs=2.0, dtype="float32", skin=0.5,
                  friction_per_ps=5.0, capacity_multiplier=1.5)
    record_every = 20
    chunk = 200 if args.md_steps % 200 == 0 else record_every
    discard = max(1, (args.md_steps // record_every) // 5)  # the first 20 % of every reference run
    sim = diffsim.trajectory(pot, atoms, md, steps=args.md_steps, record_every=record_every, chunk_steps=chunk,
                             replicas=args.replicas)
    system = sim.system
    frac = np.stack([system.coordinates(atoms.__class__(atoms.numbers, positions=pos, cell=target["cell"], pbc=True))
                     for pos in target["positions"]])
    r, g_target = diffsim.rdf(system, jnp.asarray(frac), r_max=R_MAX, n_bins=N_BINS, width=WIDTH)
    half = len(frac) // 2
    noise = float(diffsim.rdf_l2(diffsim.rdf(system, jnp.asarray(frac[:half]), r_max=R_MAX, n_bins=N_BINS, width=WIDTH)[1],
                                 diffsim.rdf(system, jnp.asarray(frac[half:]), r_max=R_MAX, n_bins=N_BINS, width=WIDTH)[1],
                                 R_MAX))
    msd_target = float(diffsim.msd(system, jnp.asarray(frac))[-1])
    print(f"target: first peak g = {float(jnp.max(g_target)):.2f} at {float(r[jnp.argmax(g_target)]):.2f} Å; MSD "
          f"{msd_target:.1f} Å² over {0.04 * (len(frac) - 1):.1f} ps; L2 between its two halves {noise:.3f}", flush=True)

    def g_of_frame(R):
        return diffsim.rdf(system, R[None], r_max=R_MAX, n_bins=N_BINS, width=WIDTH)[1]

    liquid_start = jnp.asarray(frac[0], system.dtype)  # reference runs start from an EMT liquid frame
    liquid_check = jnp.asarray(frac[-1], system.dtype)  # fresh checks from another one
    check_sim = diffsim.trajectory(pot, atoms, md, steps=2 * args.md_steps, record_every=record_every, chunk_steps=chunk,
                                   replicas=args.replicas)

    def check(variables, seed):
        """(RDF L2 error, g, MSD Å²) of a fresh simulation (twice a reference run, other frame and seeds)."""
        records, _ = check_sim.records(variables, check_sim.start(variables, seed=seed, positions=liquid_check))
        pos = records["position"][2 * discard:]
        g = diffsim.rdf(system, pos, r_max=R_MAX, n_bins=N_BINS, width=WIDTH)[1]
        return float(diffsim.rdf_l2(g, g_target, R_MAX)), np.asarray(g), float(jnp.mean(diffsim.msd(system, pos)[-1]))

    tcfg = train_config(args)
    weights = (float(tcfg.energy_weight), float(tcfg.forces_weight), float(tcfg.stress_weight))
    pick = np.random.default_rng(args.seed + 1).permutation(len(train))[:args.data_structures]
    data_loss = jax.jit(data_loss_fn(pot, [train[i] for i in pick], weights, dtype))
    test_errors, liquid_errors = errors_fn(pot, test, dtype), errors_fn(pot, liquid, dtype)
    v0 = sim.engine.cast(pot.variables)

    t0 = time.perf_counter()
    l2_0, g0, msd0 = check(v0, seed=100)
    ref0, _ = diffsim.sample_reference(sim, v0, sim.start(v0, seed=1, positions=liquid_start), discard=discard)
    g_ref0, _ = diffsim.reweighted_average(v0, ref0, g_of_frame)
    td0 = float(jnp.mean((g_ref0 - g_target) ** 2))  # the normalisation of the top-down term
    bu0 = float(data_loss(v0))
    before = {"rdf_l2": l2_0, "msd_A2": msd0, "test": test_errors(v0), "liquid": liquid_errors(v0), "data_loss": bu0}
    print(f"start: RDF L2 {l2_0:.3f} (fresh run; peak {g0.max():.2f}), MSD {msd0:.1f} Å²; test F MAE "
          f"{before['test']['force_mae_meV_per_A']:.1f} meV/Å, liquid F MAE {before['liquid']['force_mae_meV_per_A']:.1f} "
          f"meV/Å; data loss {bu0:.4g}; reweighted RDF MSE {td0:.4g} ({time.perf_counter() - t0:.0f} s)", flush=True)

    def top_down(g):
        return jnp.mean((g - g_target) ** 2) / td0

    def extra(variables):
        return data_loss(variables) / bu0

    results, curves = [], {"target": np.asarray(g_target), "start": g0}
    for k, w in enumerate(args.weights):
        t0 = time.perf_counter()
        cfg = FitConfig(steps=args.steps, learning_rate=args.lr, final_lr_fraction=0.1, clip_norm=1.0, n_eff_ratio=0.6,
                        discard=discard, freeze=tuple(args.freeze), extra_weight=float(w))

        def say(row, w=w):
            if row["step"] % 5 == 0 or row["step"] == args.steps - 1:
                print(f"  w = {w:g}: step {row['step']:3d} RDF term {row['top_down']:.3f} data term {row['extra']:.3f}  "
                      f"N_eff/F {row['n_eff_ratio']:.2f}{'  (new reference)' if row['new_reference'] else ''}", flush=True)

        res = fit_observables(sim, v0, per_frame=g_of_frame, loss=top_down, extra_loss=extra, config=cfg,
                              start=sim.start(v0, seed=10 * (k + 1), positions=liquid_start), callback=say)
        fit_s = time.perf_counter() - t0
        v = res.variables
        l2, g, msd = check(v, seed=200 + k)
        row = {"weight": float(w), "rdf_l2": l2, "msd_A2": msd, "test": test_errors(v), "liquid": liquid_errors(v),
               "data_loss": float(data_loss(v)), "n_references": res.n_references, "fit_seconds": fit_s,
               "seconds": time.perf_counter() - t0, "history": res.history}
        results.append(row)
        curves[f"w = {w:g}"] = g
        print(f"  -> w = {w:g}: RDF L2 {l2_0:.3f} -> {l2:.3f} (fresh run), test F MAE "
              f"{before['test']['force_mae_meV_per_A']:.1f} -> {row['test']['force_mae_meV_per_A']:.1f} meV/Å, liquid F MAE "
              f"{before['liquid']['force_mae_meV_per_A']:.1f} -> {row['liquid']['force_mae_meV_per_A']:.1f} meV/Å; "
              f"{res.n_references} reference runs; {row['seconds']:.0f} s", flush=True)

    elapsed = time.perf_counter() - t_start
    sys.path.insert(0, os.path.join(HERE, "..", "benchmarks"))
    from _common import append_results, environment, markdown_table

    bt, bl = before["test"], before["liquid"]
    rows = [[f"{x['weight']:g}", f"{l2_0:.3f} → {x['rdf_l2']:.3f}", f"{msd0:.1f} → {x['msd_A2']:.1f}",
             f"{bt['force_mae_meV_per_A']:.1f} → {x['test']['force_mae_meV_per_A']:.1f}",
             f"{bt['energy_mae_meV_per_atom']:.2f} → {x['test']['energy_mae_meV_per_atom']:.2f}",
             f"{bl['force_mae_meV_per_A']:.1f} → {x['liquid']['force_mae_meV_per_A']:.1f}",
             f"{x['data_loss'] / bu0:.2f}", x["n_references"], round(x["seconds"])] for x in results]
    table = markdown_table(["w (data term)", "RDF L2 (fresh run)", "MSD Å²", "test F MAE meV/Å", "test E MAE meV/atom",
                            "liquid F MAE meV/Å", "data loss / start", "reference runs", "s"], rows)
    best = min(results, key=lambda x: x["rdf_l2"])
    summary = (f"target noise (L2 of its two halves) {noise:.3f}; best RDF L2 {best['rdf_l2']:.3f} at w = {best['weight']:g} "
               f"(start {l2_0:.3f}) with test F MAE {bt['force_mae_meV_per_A']:.1f} → "
               f"{best['test']['force_mae_meV_per_A']:.1f} meV/Å; total {elapsed:.0f} s"
               + (f" (SchNet training {train_s:.0f} s)" if train_s else " (SchNet from the cache)"))
    print(table)
    print(summary)
    out = {"environment": environment(), "args": vars(args), "schnet": {"model_config": SCHNET, "cutoff_A": CUTOFF,
           "n_train": len(train), "n_liquid_train": n_liquid_train, "n_test": len(test), "train_seconds": train_s},
           "target": {"frames": len(frac), "n_atoms": len(atoms), "msd_A2": msd_target, "half_split_l2": noise},
           "before": before, "fits": results, "summary": summary, "seconds": elapsed, "r_A": np.asarray(r).tolist(),
           "curves": {k: np.asarray(v).tolist() for k, v in curves.items()}}
    with open(os.path.join(args.output, "result.json"), "w") as fh:
        json.dump(out, fh, indent=1, default=float)
    if args.record and not args.quick:
        cmd = "python experiments/fit_rdf_mlp.py" + " ".join(
            f" --{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k in ("steps", "lr", "md_steps", "replicas"))
        cmd += " --weights " + " ".join(f"{w:g}" for w in args.weights) + (" --freeze " + " ".join(args.freeze) if args.freeze else "")
        append_results("SchNet fine-tuned on the RDF of EMT liquid Cu plus its own force data (DiffTRe, combined loss)",
                       f"`{cmd}` — SchNet {SCHNET['features']} features × {SCHNET['interactions']} interactions, "
                       f"{CUTOFF} Å, trained on {len(train)} EMT structures of which {n_liquid_train} liquid; target "
                       f"{len(frac)} EMT frames, {len(atoms)} atoms, {args.temperature:g} K, MSD {msd_target:.1f} Å²; "
                       f"loss = RDF MSE / start + w · training loss ({args.data_structures} structures) / start; "
                       f"{args.steps} Adam steps (lr {args.lr:g}); RDF L2 and MSD of fresh {2 * args.md_steps}-step runs "
                       f"× {args.replicas} replicas; test = the SchNet's held-out split, liquid = {len(liquid)} EMT target "
                       f"frames.\n\n{table}\n\n**{summary}**\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
