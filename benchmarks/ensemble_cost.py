"""What an ensemble costs (issue 15, "Ensemble cost"): training time per epoch and XLA compilations
of M = 5 members trained together against 5 × one member trained alone, the shallow ensemble
against one model, and the cost of one prediction (energy + forces of a 108-atom cell) of each,
GAP included, relative to one model.

1. **Data**: EMT fcc Cu from ``mlpjax.data.emt.emt_cu`` without liquid (crystal MD at
   300/500/700 K, rattled and strained cells; half 32-atom, half 108-atom cells); a fixed 10 % of
   it is the validation set of every run (passed explicitly, so every run sees the same data).
2. **Model**: the quickstart SchNet (``experiments/configs/quickstart_cu.yaml``: 32 features, 2
   interactions, 4.5 Å, batch 4, float32), ``--epochs`` epochs, validation only after the last
   epoch (``eval_every = epochs``), so the epochs 2 … E−1 are training steps only: their median
   ``epoch_time_s`` is "time per epoch" (epoch 1 compiles, epoch E validates).
3. **Training runs** in this process, interleaved (seeds 0, 1, full, seeds 2, 3, shallow, seed 4)
   so that the shared machine's changing load touches all alike: one model alone with seeds 0 … 4
   (the "5 × one member" baseline: the sum of their epoch times), the full ensemble M = 5 (one
   vmapped step, own initialisation and data order per member), the shallow ensemble M = 5 heads.
   Compilations: :func:`mlpjax.md.engine.compile_stats` (every XLA backend compilation of the
   process) before ``train``, after epoch 1 (a training callback) and after ``train`` returned
   (which adds the validation pass, the test pass, the ensemble's calibration and the parity
   plot's predictions). Counted twice: for each kind of run (one model, full, shallow) in a fresh
   Python process of its own (this script re-run as a child, 2 epochs: what one ``mlpjax train``
   compiles; 5 separate members = 5 × that), and in this process, where seeds 1 … 4 reuse the
   cached compiled step of seed 0 (same architecture and shapes) and the ensembles reuse the
   architecture-independent pieces.
4. **Prediction** of one 108-atom cell (3×3×3 cubic, rattled 0.05 Å), energy + forces, no stress:
   the jitted device functions on a prepared batch (median of ``--repeats`` calls after a warm-up,
   all functions of one precision called round-robin;
   the ensembles' ``member_predict`` gives every member's forces, what σ needs; "mean only" is the
   ensemble as a Potential, what MD uses), and the public calls end to end (graph building
   included: ``predict_dataset`` for one model, ``Ensemble.predict_uncertain``,
   ``mlpjax.models.gap.predict_uncertain``). GAP (SOAP + sparse GP, the ``GAP_MODEL`` of
   ``benchmarks/uncertainty.py``, fitted here on 24 of the structures) runs in float64 (GAP switches
   ``jax_enable_x64`` on for the whole process), so it is timed last and compared with the single
   SchNet re-timed in float64 as well.

Prints the tables, writes ``benchmarks/results/ensemble_cost.json`` and appends to RESULTS.md.
Usage: ``python benchmarks/ensemble_cost.py [--quick] [--epochs 5] [--frames 10]``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from _common import append_results, environment, markdown_table, write_json

HERE = os.path.dirname(os.path.abspath(__file__))
QUICKSTART_CONFIG = os.path.join(HERE, "..", "experiments", "configs", "quickstart_cu.yaml")
MEMBERS = 5


def _data(frames: int, seed: int = 0):
    from mlpjax.data.emt import emt_cu

    configs = emt_cu(md_frames_per_run=frames, n_rattled=frames, n_strained=frames, liquid_temperatures_K=(), seed=seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(configs))
    n_valid = max(2, len(configs) // 10)
    return [configs[i] for i in order[n_valid:]], [configs[i] for i in order[:n_valid]]


def _train_run(cfg, train_set, valid_set, workdir: str, name: str) -> dict:
    from mlpjax.md.engine import compile_stats
    from mlpjax.training import train

    marks = {}

    def after_epoch(info):
        if info.get("event") == "epoch" and info["epoch"] == 1:
            marks["epoch1"] = compile_stats()

    c0 = compile_stats()
    t0 = time.perf_counter()
    result = train(cfg, train_set, valid_set, output_dir=os.path.join(workdir, name), progress=False,
                   callbacks=[after_epoch])
    wall = time.perf_counter() - t0
    c1 = compile_stats()
    times = [r["epoch_time_s"] for r in result.history]
    steady = times[1:-1] if len(times) > 2 else times[-1:]
    return {"run": name, "wall_s": wall, "epochs": len(times), "epoch_times_s": times,
            "epoch_s": statistics.median(steady), "first_epoch_s": times[0],
            "compilations_to_epoch1": marks.get("epoch1", c1)[0] - c0[0],
            "compile_s_to_epoch1": marks.get("epoch1", c1)[1] - c0[1],
            "compilations": c1[0] - c0[0], "compile_s": c1[1] - c0[1],
            "compilations_after_epoch1": c1[0] - marks.get("epoch1", c1)[0],
            "model_path": result.paths["model"], "potential": result.potential}


def _compiles_in_own_process(cfg, train_set, valid_set, workdir: str, name: str) -> dict:
    """Compilation counts of one ``train`` run in a fresh Python process (what one ``mlpjax train`` costs)."""
    spec = os.path.join(workdir, f"{name.replace(' ', '_')}.pkl")
    with open(spec, "wb") as fh:
        pickle.dump((cfg, train_set, valid_set, os.path.join(workdir, name.replace(" ", "_") + "_own")), fh)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--count-compiles", spec], capture_output=True,
                         text=True, cwd=HERE, check=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("COUNTS ")][-1]
    return json.loads(line[len("COUNTS "):])


def _count_child(spec: str) -> int:
    with open(spec, "rb") as fh:
        cfg, train_set, valid_set, out_dir = pickle.load(fh)
    r = _train_run(cfg, train_set, valid_set, out_dir, "run")
    print("COUNTS " + json.dumps({k: r[k] for k in ("compilations_to_epoch1", "compile_s_to_epoch1", "compilations",
                                                     "compile_s")}), flush=True)
    return 0


def _cell108():
    from ase.build import bulk

    from mlpjax import data
    from mlpjax.data.emt import EMT_CU_LATTICE

    atoms = bulk("Cu", "fcc", a=EMT_CU_LATTICE, cubic=True).repeat(3)
    atoms.rattle(0.05, seed=3)
    return data.Configuration.from_atoms(atoms, source="cu108", frame=0)


def _median_times(fns: dict, repeats: int) -> dict:
    """{name: median seconds of one call}: every function warmed up (compiled) once, then called
    round-robin ``repeats`` times, so that a change in the load of the shared machine hits all alike."""
    for fn in fns.values():
        fn()
    out = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in out.items()}


def _batch(pot, config):
    import jax

    from mlpjax.graph import batches, make_budget, to_graphs

    graphs = to_graphs([config], pot.species, pot.cutoff)
    dtype = np.float64 if jax.config.jax_enable_x64 else np.float32
    return next(iter(batches(graphs, make_budget(graphs, 1), shuffle=False, dtype=dtype)))


def _device_fn(pot, members: bool):
    """jit (variables, batch) -> energy + forces (members' [M, ...] when ``members``)."""
    import jax

    definition = pot.definition
    if members:
        return jax.jit(lambda v, b: definition.member_predict(v, b, compute_stress=False)[:2])
    return jax.jit(lambda v, b: definition.predict(v, b, compute_stress=False)[:2])


def _device_call(pot, config, members: bool):
    """A no-argument call of the jitted device function on a prepared one-structure batch."""
    import jax

    from mlpjax.potential import cast_floats

    dtype = np.float64 if jax.config.jax_enable_x64 else np.float32
    fn, batch, v = _device_fn(pot, members), _batch(pot, config), cast_floats(pot.variables, dtype)
    return lambda: jax.block_until_ready(fn(v, batch))


def predict_costs(single, full, shallow, fit_gap, config, repeats: int) -> list[dict]:
    """Rows of the prediction table; ``fit_gap()`` is called after the float32 rows (it turns x64 on)."""
    import jax

    from mlpjax.models.gap import predict_uncertain as gap_predict_uncertain
    from mlpjax.models.gap import predict_with_std as gap_predict_with_std
    from mlpjax.validate.metrics import predict_dataset

    assert not jax.config.jax_enable_x64, "float32 part first (GAP switches x64 on)"
    nan = float("nan")
    ensembles = ((f"full ensemble M={full.n_members}", full), (f"shallow ensemble M={shallow.n_members}", shallow))
    fns = {("one SchNet", "E + F", "device"): _device_call(single, config, False),
           ("one SchNet", "E + F", "api"): lambda: predict_dataset(single, [config])}
    for name, ens in ensembles:
        fns[(name, "E + F of every member (σ)", "device")] = _device_call(ens, config, True)
        fns[(name, "E + F of every member (σ)", "api")] = lambda ens=ens: ens.predict_uncertain([config])
        fns[(name, "mean only (MD)", "device")] = _device_call(ens, config, False)
        fns[(name, "mean only (MD)", "api")] = lambda ens=ens: predict_dataset(ens, [config])
    t32 = _median_times(fns, repeats)
    # float64: GAP (its fit turns x64 on for the process) against the same SchNet in float64
    gap_pot = fit_gap()
    jax.config.update("jax_enable_x64", True)
    fns = {("one SchNet", "E + F", "device"): _device_call(single, config, False),
           ("one SchNet", "E + F", "api"): lambda: predict_dataset(single, [config]),
           ("GAP", "mean E + F", "device"): _device_call(gap_pot, config, False),
           ("GAP", "mean E + F", "api"): lambda: predict_dataset(gap_pot, [config])}
    t64 = _median_times(fns, repeats)
    slow = _median_times({"with_std": lambda: gap_predict_with_std(gap_pot, [config]),
                          "uncertain": lambda: gap_predict_uncertain(gap_pot, [config])}, max(3, repeats // 6))
    t64[("GAP", "E + F, σ of E only (`predict_with_std` + `predict_dataset`)", "api")] = (
        slow["with_std"] + t64[("GAP", "mean E + F", "api")])
    t64[("GAP", "E + F with σ of E, F, stress (`predict_uncertain`)", "api")] = slow["uncertain"]
    rows = []
    for dtype, t in (("float32", t32), ("float64", t64)):
        base_d, base_a = t[("one SchNet", "E + F", "device")], t[("one SchNet", "E + F", "api")]
        keys = list(dict.fromkeys((m, w) for m, w, _ in t))
        for method, what in keys:
            d, a = t.get((method, what, "device"), nan), t[(method, what, "api")]
            rows.append({"method": method, "what": what, "dtype": dtype, "device_ms": 1e3 * d, "device_ratio": d / base_d,
                         "api_ms": 1e3 * a, "api_ratio": a / base_a})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small variant: 4 frames per source, 4 epochs, 10 repeats")
    p.add_argument("--epochs", type=int, default=None, help="epochs per training run (default 5; quick 4)")
    p.add_argument("--frames", type=int, default=None,
                   help="emt_cu frames per MD run and rattled/strained count (default 10 → 80 structures; quick 4)")
    p.add_argument("--repeats", type=int, default=None, help="timed prediction calls (default 30; quick 10)")
    p.add_argument("--workdir", default=None)
    p.add_argument("--no-record", action="store_true", help="print only: no JSON, no RESULTS.md section")
    p.add_argument("--count-compiles", metavar="SPEC", help=argparse.SUPPRESS)  # child process of this script
    args = p.parse_args(argv)
    if args.count_compiles:
        return _count_child(args.count_compiles)
    epochs = args.epochs or (4 if args.quick else 5)
    frames = args.frames or (4 if args.quick else 10)
    repeats = args.repeats or (10 if args.quick else 30)

    from mlpjax.config import TrainConfig, load_config, override
    from uncertainty import GAP_CUTOFF, GAP_MODEL

    t_start = time.perf_counter()
    workdir = args.workdir or tempfile.mkdtemp(prefix="mlpjax_ensemble_cost_")
    train_set, valid_set = _data(frames)
    n_atoms = sum(c.n_atoms for c in train_set)
    print(f"data: {len(train_set)} train ({n_atoms} atoms), {len(valid_set)} valid ({time.perf_counter() - t_start:.0f} s)",
          flush=True)
    base = override(load_config(QUICKSTART_CONFIG), epochs=epochs, eval_every=epochs, patience=None,
                    max_time_minutes=None, valid_fraction=0.0, test_fraction=0.0, warmup_epochs=1)

    # training runs interleaved (s0, s1, full, s2, s3, shallow, s4): a change of the shared machine's load
    # during the benchmark then touches the single runs and the ensembles alike
    def run_single(seed):
        r = _train_run(base.replace(seed=seed), train_set, valid_set, workdir, f"single seed {seed}")
        print(f"{r['run']}: {r['epoch_s']:.2f} s/epoch, {r['compilations']} compilations", flush=True)
        return r

    def run_ensemble(kind):
        r = _train_run(base.replace(ensemble_size=MEMBERS, ensemble_kind=kind), train_set, valid_set, workdir,
                       f"{kind} ensemble M={MEMBERS}")
        print(f"{r['run']}: {r['epoch_s']:.2f} s/epoch, {r['compilations']} compilations", flush=True)
        return r

    runs = [run_single(0), run_single(1)]
    full = run_ensemble("full")
    runs += [run_single(2), run_single(3)]
    shallow = run_ensemble("shallow")
    runs.append(run_single(4))
    singles = runs
    one = singles[0]
    five_s = sum(r["epoch_s"] for r in singles)
    one_s = five_s / MEMBERS  # one model: the mean of the 5 single runs
    own = {}  # compilation counts of each kind of run in its own fresh process (2 epochs)
    for key, cfg in (("single", base), ("full", base.replace(ensemble_size=MEMBERS, ensemble_kind="full")),
                     ("shallow", base.replace(ensemble_size=MEMBERS, ensemble_kind="shallow"))):
        own[key] = _compiles_in_own_process(cfg.replace(epochs=2, eval_every=2), train_set, valid_set, workdir, key)
        print(f"{key} in its own process: {own[key]}", flush=True)
    o1 = own["single"]
    train_rows = [
        ["one model (mean of the 5 single runs)", round(one_s, 3), 1.0, "—",
         f"{o1['compilations_to_epoch1']} / {o1['compilations']}", round(o1["compile_s"], 1)],
        [f"{MEMBERS} × one model (seeds 0–{MEMBERS - 1}, one after the other)", round(five_s, 3), float(MEMBERS), 1.0,
         f"{MEMBERS * o1['compilations_to_epoch1']} / {MEMBERS * o1['compilations']} ({MEMBERS} processes)",
         round(MEMBERS * o1["compile_s"], 1)],
    ]
    for r, key, what in ((full, "full", " (one vmapped step)"), (shallow, "shallow", f" (one network, {MEMBERS} heads)")):
        o = own[key]
        train_rows.append([r["run"] + what, round(r["epoch_s"], 3), round(r["epoch_s"] / one_s, 2),
                           round(r["epoch_s"] / five_s, 2), f"{o['compilations_to_epoch1']} / {o['compilations']}",
                           round(o["compile_s"], 1)])
    train_headers = ["training run", "s / epoch", "× one model", f"× {MEMBERS} × one model",
                     "compilations, own process: to end of epoch 1 / whole train()", "compile s, own process"]
    train_table = markdown_table(train_headers, train_rows)
    print(train_table, flush=True)

    # ---- prediction cost (float32 first; GAP last: fitting it turns x64 on for the process)
    from mlpjax import load
    from mlpjax.training import train

    t0 = time.perf_counter()
    gap_cfg = TrainConfig(model="gap", model_config=dict(GAP_MODEL), cutoff=GAP_CUTOFF, valid_fraction=0.0,
                          test_fraction=0.0, dtype="float64")

    def fit_gap():
        return train(gap_cfg, train_set[:24], output_dir=os.path.join(workdir, "gap"), progress=False).potential

    single_pot, full_pot, shallow_pot = (load(r["model_path"]) for r in (one, full, shallow))
    rows = predict_costs(single_pot, full_pot, shallow_pot, fit_gap, _cell108(), repeats)
    t_predict = time.perf_counter() - t0
    pred_headers = ["method", "computes", "dtype", "device ms", "× one model", "API ms (graphs incl.)", "× one model (API)"]
    pred_table = markdown_table(pred_headers, [
        [r["method"], r["what"], r["dtype"], "—" if not np.isfinite(r["device_ms"]) else round(r["device_ms"], 3),
         "—" if not np.isfinite(r["device_ratio"]) else round(r["device_ratio"], 2),
         round(r["api_ms"], 2), round(r["api_ratio"], 2)] for r in rows])
    print(pred_table)
    total = time.perf_counter() - t_start
    print(f"total {total / 60:.1f} min")
    if args.no_record:
        return 0
    env = environment()
    strip = lambda r: {k: v for k, v in r.items() if k not in ("potential",)}  # noqa: E731
    write_json("ensemble_cost.json", {"environment": env, "epochs": epochs, "frames": frames, "n_train": len(train_set),
                                      "n_train_atoms": n_atoms, "n_valid": len(valid_set), "members": MEMBERS,
                                      "training": [strip(r) for r in singles + [full, shallow]],
                                      "compilations_own_process": own,
                                      "prediction": rows, "prediction_s": t_predict, "gap_model": GAP_MODEL,
                                      "total_s": total})
    cmd = "benchmarks/ensemble_cost.py" + (" --quick" if args.quick else "") + \
        (f" --epochs {args.epochs}" if args.epochs else "") + (f" --frames {args.frames}" if args.frames else "")
    body = (
        f"`python {cmd}`. Quickstart SchNet (32×2, 4.5 Å, batch 4, float32) on {len(train_set)} EMT Cu structures "
        f"({n_atoms} atoms: crystal MD 300–700 K, rattled, strained; 32- and 108-atom cells), {len(valid_set)} "
        f"validation structures, {epochs} epochs per run; s / epoch = median `epoch_time_s` of epochs 2…{epochs - 1} "
        f"(training steps only: epoch 1 compiles, validation runs after epoch {epochs}). Compilations: "
        f"`mlpjax.md.engine.compile_stats()` around each `train()` (the whole call: validation, test, calibration and "
        f"parity predictions included), counted for each kind of run in a fresh process of its own (2 epochs; what one "
        f"`mlpjax train` compiles; in one process seeds 1–4 reuse seed 0's compiled step and compile nothing). "
        f"Single runs of seeds 0–4: {min(r['epoch_s'] for r in singles):.2f}–{max(r['epoch_s'] for r in singles):.2f} "
        f"s/epoch. Runs interleaved (seeds 0, 1, full, seeds 2, 3, shallow, seed 4) on {os.cpu_count()} CPU cores "
        f"shared with other jobs.\n\n{train_table}\n\n"
        f"Prediction of one 108-atom cell (energy + forces, no stress), median of {repeats} round-robin calls: device = the jitted "
        f"function on a prepared batch; API = `predict_dataset` / `Ensemble.predict_uncertain` / "
        f"`mlpjax.models.gap.predict_uncertain` (graph building included). GAP (fitted on 24 of the training "
        f"structures): SOAP n_max {GAP_MODEL['n_max']}, "
        f"l_max {GAP_MODEL['l_max']}, {GAP_MODEL['n_sparse']} sparse points, float64, compared with the SchNet in "
        f"float64.\n\n{pred_table}\n\nWhole benchmark {total / 60:.1f} min.\n"
    )
    append_results("Ensemble cost: M = 5 trained together vs 5 × one, shallow heads, prediction", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
