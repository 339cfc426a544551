"""Cost of every model preset (mlpjax.presets) on rMD17 ethanol: compile time of the training
step, time per step and the projected time per epoch on this machine, beside the measured
rMD17 accuracy of the ``small`` presets, so a user can choose a size by budget.

    taskset -c 1 python benchmarks/preset_cost.py                 # every model × preset, one core
    taskset -c 1 python benchmarks/preset_cost.py --models mace,nequip --presets default,small
    python benchmarks/preset_cost.py --train path/to/train.xyz --no-record

Method
* Data: ``../shared/data/rmd17-ethanol/train.xyz`` (eV, Å; skipped with a message if absent), the
  split of the accuracy runs (valid_fraction 0.05, split_seed 0): 950 training structures of 9 atoms.
* Each (model, preset) runs in its own process (compiled code and float64 mode do not leak) with
  the preset's TrainConfig fields (batch size, dtype, optimiser, loss weights; TrainConfig's
  defaults where the preset has none) through the library's own training path:
  ``mlpjax.training.prepare_potential`` (normalisation, initial parameters, descriptor
  standardisation), ``make_budget``, ``make_step_fns`` (loss on energies and forces from the one
  ``jax.grad``, clipping, Adam, EMA), ``init_state`` and shuffled ``batches`` as in an epoch.
* compile s = wall time of the first training step − the median step; s/step = median over
  ``--steps`` later steps (fewer when they exceed ``--max-step-seconds`` in total, at least 3);
  projected s/epoch = steps per epoch × s/step (the validation pass, forward only on 50
  structures, and host-side batching are not included). Where the projection is below
  ``--full-epoch-seconds``, one whole epoch is also timed as ``mlpjax.training.train`` runs it
  (batches packed on the fly, losses fetched at the end) plus the validation pass: "measured
  s/epoch" (checkpoint writing excluded). init s = ``prepare_potential``.
* GAP has no steps: its closed-form fit (``mlpjax.training.train`` → ``mlpjax.models.gap.fit``: sparse
  points, design matrix, normal equations) is timed on ``--gap-structures`` training structures.
* Parameters = trainable leaves (the ``params`` collection; GAP: the weights α).
* Accuracy: the measured test MAEs of the ``small`` settings (1,000 unseen ``test_MD``
  structures) and the published figures for ``rmd17`` are quoted from benchmarks/RESULTS.md,
  not re-measured here.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TRAIN = os.path.join(REPO, "..", "shared", "data", "rmd17-ethanol", "train.xyz")

# Measured rMD17 ethanol test accuracy (energy meV/molecule, force meV/Å) of the small presets'
# configs, one CPU core each, and where it is recorded; published GPU figures for rmd17.
ACCURACY = {
    ("mace", "small"): ("1.83 / 9.50", "60 min (176 epochs)", "RESULTS.md 'Accuracy, rmd17-ethanol, 60 min per model' (2026-11-25)"),
    ("nequip", "small"): ("1.15 / 7.11", "60 min (509 epochs)", "RESULTS.md 'Accuracy, rmd17-ethanol, 60 min per model' (2026-11-25)"),
    ("painn", "small"): ("2.96 / 18.4", "60 min (876 epochs)", "RESULTS.md 'Accuracy, rmd17-ethanol, 60 min per model' (2026-11-25)"),
    ("schnet", "small"): ("4.64 / 22.8", "60 min (1,571 epochs)", "RESULTS.md 'Accuracy, rmd17-ethanol, 60 min per model' (2026-11-25)"),
    ("ani", "small"): ("2.57 / 17.43", "46 min (850 epochs)", "RESULTS.md 'Accuracy, rmd17-ethanol, 46 min per model' (2026-12-01)"),
    ("bpnn", "small"): ("3.39 / 18.05", "20 min (672 epochs)", "RESULTS.md 'Descriptor models (BPNN, ANI, GAP)' (2026-11-25)"),
    ("gap", "small"): ("3.70 / 18.6", "fit 13.4 min", "RESULTS.md 'Descriptor models (BPNN, ANI, GAP)' (2026-11-25)"),
    ("dimenet", "small"): ("not measured", "—", "—"),
    ("mace", "rmd17"): ("0.4 / 2.1 (published)", "GPU, days", "Batatia et al. 2022, Table 1"),
    ("nequip", "rmd17"): ("0.4 / 2.8 (published)", "GPU, days", "Batatia et al. 2022, Table 1 (NequIP row)"),
}


def _load(path: str):
    from mlpjax import data

    configs = data.read(path)
    idx_train, idx_valid, _ = data.split(len(configs), (0.95, 0.05, 0.0), seed=0)
    return [configs[i] for i in idx_train], [configs[i] for i in idx_valid]


def _n_trainable(params) -> int:
    import jax
    import numpy as np

    tree = params["params"] if isinstance(params, dict) and "params" in params else params
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))


def bench_one(model: str, name: str, train_path: str, steps: int, max_step_seconds: float, gap_structures: int,
              full_epoch_seconds: float) -> dict:
    """One (model, preset) in this process; returns a JSON-able row."""
    import jax
    import numpy as np

    from mlpjax import data, models, presets
    from mlpjax.config import config_from_dict
    from mlpjax.graph import batches, make_budget, to_graphs
    from mlpjax.training import init_state, make_plateau, make_step_fns, prepare_potential, resolve_dtype, train

    fields = presets.preset(model, name)
    cfg = config_from_dict({**fields, "valid_fraction": 0.05, "test_fraction": 0.0, "split_seed": 0})
    train_set, valid_set = _load(train_path)
    row = {"model": model, "preset": name, "summary": presets.describe(model, name), "source": presets.source(model, name),
           "batch_size": int(cfg.batch_size), "dtype": cfg.dtype, "cutoff": cfg.cutoff, "n_train": len(train_set),
           "model_config": dict(cfg.model_config)}

    if models.fit_fn(model) is not None:  # GAP: closed-form fit, no steps
        sub = train_set[:gap_structures]
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res = train(cfg, sub, valid_set, output_dir=tmp, progress=False)
            row["fit_s"] = time.perf_counter() - t0
        row["fit_structures"] = len(sub)
        row["n_params"] = _n_trainable(res.potential.params)
        mask = np.asarray(res.potential.params["gap"]["sparse_mask"])
        row["n_sparse_used"] = [int(v) for v in mask.sum(axis=1)]
        return row

    dtype = resolve_dtype(cfg)
    species = data.species_in(train_set)
    t0 = time.perf_counter()
    train_graphs = to_graphs(train_set, species, cfg.cutoff)
    valid_graphs = to_graphs(valid_set, species, cfg.cutoff)
    pot = prepare_potential(cfg, train_set, graphs=train_graphs, species=species)
    jax.block_until_ready(pot.params)
    row["init_s"] = time.perf_counter() - t0
    row["n_params"] = _n_trainable(pot.params)

    budget = make_budget(train_graphs + valid_graphs, cfg.batch_size)
    epoch = list(batches(train_graphs, budget, shuffle=True, seed=int(cfg.seed) * 100003 + 1, dtype=dtype))
    steps_per_epoch = len(epoch)
    fns = make_step_fns(pot, cfg, steps_per_epoch, compute_stress=False)
    state = init_state(pot, fns.optimizer, make_plateau(cfg), cfg.learning_rate)

    t0 = time.perf_counter()
    state, aux = fns.train_step(state, epoch[0])
    jax.block_until_ready((state, aux))
    first = time.perf_counter() - t0
    times = []
    spent = 0.0
    for batch in epoch[1 : steps + 1]:
        t0 = time.perf_counter()
        state, aux = fns.train_step(state, batch)
        jax.block_until_ready((state, aux))
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if len(times) >= 3 and spent > max_step_seconds:
            break
    loss = float(aux["loss"])
    if not math.isfinite(loss):
        raise FloatingPointError(f"{model}/{name}: training loss {loss} (max_neighbors overflow?)")
    step = statistics.median(times)
    row.update(steps_per_epoch=steps_per_epoch, steps_timed=len(times), compile_s=max(first - step, 0.0), step_s=step,
               epoch_s=steps_per_epoch * step, budget={"n_nodes": budget.n_nodes, "n_edges": budget.n_edges, "n_graphs": budget.n_graphs})
    if steps_per_epoch * step <= full_epoch_seconds:
        # one whole epoch as mlpjax.training.train runs it: batches packed on the fly, losses fetched at
        # the end, then the validation pass (its compilation done beforehand, as after epoch 1)
        valid_batches = list(batches(valid_graphs, budget, shuffle=False, dtype=dtype))
        jax.block_until_ready(fns.eval_step(state.ema_params, valid_batches[0]))
        t0 = time.perf_counter()
        losses = []
        for batch in batches(train_graphs, budget, shuffle=True, seed=int(cfg.seed) * 100003 + 2, dtype=dtype):
            state, aux = fns.train_step(state, batch)
            losses.append(aux["loss"])
        float(np.mean(jax.device_get(losses)))
        jax.device_get([fns.eval_step(state.ema_params, b) for b in valid_batches])
        row["epoch_measured_s"] = time.perf_counter() - t0
    return row


def _without_note(argv: list[str]) -> list[str]:
    """The command line without ``--note TEXT`` (the note is printed below the table)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--note":
            skip = True
        elif not a.startswith("--note="):
            out.append(a)
    return out


def _affinity() -> str:
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return f"all {os.cpu_count()} cores"
    if len(cores) == os.cpu_count():
        return f"all {len(cores)} cores"
    return f"pinned to core{'s' if len(cores) > 1 else ''} {','.join(map(str, cores))} of {os.cpu_count()}"


def _fmt_s(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def _table(rows: list[dict]) -> str:
    from _common import markdown_table

    headers = ["model", "preset", "size", "params", "batch", "dtype", "compile s", "ms/step", "steps/epoch",
               "projected s/epoch", "measured s/epoch", "rMD17 E / F (meV/mol, meV/Å)", "measured with"]
    out = []
    for r in rows:
        acc = ACCURACY.get((r["model"], r["preset"]), ("—", "—", "—"))
        if "error" in r:
            out.append([r["model"], r["preset"], r.get("summary", ""), "—", "—", "—", r["error"][:80], "—", "—", "—", "—", acc[0], acc[1]])
        elif "fit_s" in r:
            fit = f"fit {_fmt_s(r['fit_s'])} s on {r['fit_structures']} structures (sparse H/C/O {'/'.join(map(str, r['n_sparse_used']))})"
            out.append([r["model"], r["preset"], r["summary"], f"{r['n_params']:,}", "—", r["dtype"], "—", "—", "—", fit, "—", acc[0], acc[1]])
        else:
            out.append([r["model"], r["preset"], r["summary"], f"{r['n_params']:,}", r["batch_size"], r["dtype"],
                        _fmt_s(r["compile_s"]), _fmt_s(r["step_s"] * 1e3), r["steps_per_epoch"], _fmt_s(r["epoch_s"]),
                        _fmt_s(r.get("epoch_measured_s")), acc[0], acc[1]])
    return markdown_table(headers, out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default=DEFAULT_TRAIN, help="rMD17 ethanol train.xyz (eV, Å)")
    ap.add_argument("--models", default=None, help="comma-separated (default: every registered model)")
    ap.add_argument("--presets", default=None, help="comma-separated preset names (default: every preset of each model)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps after the first (compiling) one")
    ap.add_argument("--max-step-seconds", type=float, default=60.0, help="stop timing after this much step time (≥ 3 steps)")
    ap.add_argument("--gap-structures", type=int, default=950, help="training structures of the timed GAP fits")
    ap.add_argument("--full-epoch-seconds", type=float, default=120.0,
                    help="also time one whole epoch + validation pass where the projection is below this")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per (model, preset) process")
    ap.add_argument("--note", default="", help="text appended to the RESULTS.md section (e.g. what else ran on the machine)")
    ap.add_argument("--no-record", action="store_true", help="do not write JSON / RESULTS.md")
    ap.add_argument("--_one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if not os.path.exists(args.train):
        print(f"preset_cost: {args.train} not found: nothing to measure (fetch rMD17 ethanol into ../shared/data)")
        return 0
    if args._one:
        model, name = args._one.split(":")
        print(json.dumps(bench_one(model, name, args.train, args.steps, args.max_step_seconds, args.gap_structures,
                                   args.full_epoch_seconds)))
        return 0

    from mlpjax import models, presets

    names = args.models.split(",") if args.models else list(models.available())
    wanted = args.presets.split(",") if args.presets else None
    rows = []
    for model in names:
        for name in presets.names(model):
            if wanted is not None and name not in wanted:
                continue
            print(f"{model}/{name} ...", flush=True)
            cmd = [sys.executable, os.path.abspath(__file__), "--_one", f"{model}:{name}", "--train", args.train,
                   "--steps", str(args.steps), "--max-step-seconds", str(args.max_step_seconds),
                   "--gap-structures", str(args.gap_structures), "--full-epoch-seconds", str(args.full_epoch_seconds)]
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                ok = proc.returncode == 0
                err = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
            except subprocess.TimeoutExpired:
                ok, err = False, f"timed out after {args.timeout:.0f} s"
            if ok:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
            else:
                print(f"  failed: {err}", file=sys.stderr, flush=True)
                row = {"model": model, "preset": name, "summary": presets.describe(model, name), "error": err}
            row["wall_s"] = time.perf_counter() - t0
            rows.append(row)
            if "step_s" in row:
                print(f"  {row['n_params']:,} params, compile {row['compile_s']:.1f} s, {row['step_s'] * 1e3:.1f} ms/step, "
                      f"{row['epoch_s']:.1f} s/epoch ({row['steps_per_epoch']} steps)", flush=True)
            elif "fit_s" in row:
                print(f"  fit {row['fit_s']:.1f} s on {row['fit_structures']} structures", flush=True)

    table = _table(rows)
    print("\n" + table)
    if not args.no_record:
        from _common import append_results, environment, write_json

        env = environment()
        env["affinity"] = _affinity()
        write_json("preset_cost.json", {"environment": env, "argv": argv if argv is not None else sys.argv[1:], "rows": rows,
                                        "accuracy": {f"{m}/{n}": v for (m, n), v in ACCURACY.items()}})
        sources = sorted({ACCURACY[(r["model"], r["preset"])][2] for r in rows
                          if (r["model"], r["preset"]) in ACCURACY and ACCURACY[(r["model"], r["preset"])][2] != "—"})
        shown = _without_note(argv if argv is not None else sys.argv[1:])
        body = (f"`benchmarks/preset_cost.py {' '.join(shown)}`, {env['affinity']}: "
                f"rMD17 ethanol, {rows[0].get('n_train', 950) if rows else 950} training structures; each preset's own "
                "batch size and dtype; training step = `mlpjax.training.make_step_fns` (energies + forces, Adam, EMA); "
                "compile = first step − median step; ms/step = median of up to "
                f"{args.steps} steps after it; projected s/epoch = steps per epoch × time per step; measured s/epoch = one whole epoch as "
                "`mlpjax.training.train` runs it (batching on the fly) + the validation pass, where the projection is "
                f"below {args.full_epoch_seconds:g} s. "
                "GAP: the closed-form fit instead. Accuracy: test MAE on the 1,000 `test_MD` structures of the "
                "`small` settings' earlier runs on one core (not re-measured here), published GPU figures for "
                "`rmd17`.\n\n" + table + "\n\nAccuracy sources: " + "; ".join(sources) + ".")
        if args.note:
            body += "\n\n" + args.note
        append_results("Preset cost on rMD17 ethanol", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
