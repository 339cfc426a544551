"""Accuracy of every model under the same budget: same training data, same wall-clock limit.

    python benchmarks/accuracy.py                                   # EMT Cu (made here), all models, 3 min each
    python benchmarks/accuracy.py --dataset rmd17-ethanol \\
        --train ../shared/data/rmd17-ethanol/train.xyz --test ../shared/data/rmd17-ethanol/test_MD.xyz \\
        --models schnet,painn,nequip,mace --minutes 60 --config-tag rmd17

Each model trains with ``mlpjax.training.train`` on the same training structures (a fixed 5 %
of them held out for validation/early stopping, same split seed), with the same
``max_time_minutes``; model hyperparameters come from ``experiments/configs/<model>_<tag>.yaml``
when ``--config-tag`` names one that exists (its own time/epoch limits are overridden by the
benchmark's), otherwise from ``DEFAULT_CONFIGS`` below. The test set is never seen in training.
The table prints energy MAE per atom and per structure, force MAE, and — for the data sets
in ``PUBLISHED`` — the figures the original papers report on the same data (their budgets are
days on a GPU; ours is stated in the table).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Published test-set figures on the same data (../shared/README.md).
# rMD17 ethanol, 1000 training configurations, energy meV per molecule / force meV/Å
# (MACE paper, Batatia et al. NeurIPS 2022, Table 1).
PUBLISHED = {
    "rmd17-ethanol": {
        "unit": "meV/molecule",
        "mace": (0.4, 2.1), "nequip": (0.4, 2.8), "allegro": (0.4, 2.1), "botnet": (0.4, 3.2),
        "ace": (1.2, 7.3), "gap": (3.5, 18.1), "ani": (2.5, 13.4), "fchl": (0.9, 6.2),
    },
    # mlearn (Zuo et al. 2020): energy meV/atom / force eV/Å → meV/Å
    "mlearn-si": {"unit": "meV/atom", "gap": (2.91, 70.0), "mtp": (2.21, 60.0)},
    "mlearn-mo": {"unit": "meV/atom", "gap": (2.24, 90.0), "mtp": (2.83, 90.0)},
}
SEED_TARGET = "seed target for ~100-atom systems: E < 1–5 meV/atom, F < 50–150 meV/Å; MACE 0.3–0.8 meV/atom, 20–40 meV/Å"

DEFAULT_CONFIGS = {
    "schnet": {"features": 64, "interactions": 3, "num_rbf": 32, "filter_hidden": 64},
    "painn": {"features": 64, "interactions": 3},
    "dimenet": {},
    "nequip": {"features": 16, "l_max": 2, "num_layers": 3, "full_parity": False},
    "mace": {"features": 32, "hidden_l_max": 1, "l_max": 2, "correlation": 3, "interactions": 2},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="emt-cu", help="label; rmd17-ethanol / mlearn-si / mlearn-mo add published rows")
    ap.add_argument("--train", default=None, help="training file (default: make the EMT Cu set)")
    ap.add_argument("--test", default=None, help="test file (default: 20 %% of the EMT Cu set)")
    ap.add_argument("--n-train", type=int, default=None, help="use the first N training structures")
    ap.add_argument("--models", default=None, help="comma-separated (default: every registered model)")
    ap.add_argument("--minutes", type=float, default=3.0, help="wall-clock training budget per model")
    ap.add_argument("--epochs", type=int, default=10_000, help="epoch cap (the time budget normally binds)")
    ap.add_argument("--cutoff", type=float, default=None, help="Å (default: the config's, else 5.0)")
    ap.add_argument("--config-tag", default=None, help="use experiments/configs/<model>_<tag>.yaml where it exists")
    ap.add_argument("--jobs", type=int, default=1,
                    help="train this many models at once, each in its own process pinned to its own share of "
                         "the CPU cores (Linux); every model gets the same share, so budgets stay equal")
    ap.add_argument("--output", default=os.path.join(REPO, "benchmarks", "results", "accuracy_runs"))
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--row-json", default=None, help=argparse.SUPPRESS)  # worker mode (used by --jobs)
    args = ap.parse_args(argv)
    argv_text = " ".join(argv if argv is not None else sys.argv[1:])

    from mlpjax import models

    names = args.models.split(",") if args.models else list(models.available())
    if args.jobs > 1 and len(names) > 1:
        results, cores = _run_parallel(names, args, argv if argv is not None else sys.argv[1:])
        setting = f"{args.jobs} models at a time, each pinned to {cores} of the {os.cpu_count()} cores"
    else:
        train_set, test_set = _load(args)
        results = [_run_one(name, args, train_set, test_set) for name in names]
        setting = "one model at a time, all cores"
    if args.row_json:
        from _common import write_json

        write_json(os.path.abspath(args.row_json), results)
        return 0
    _report(results, args, argv_text, setting)
    return 0


def _load(args):
    from mlpjax import data

    if args.train:
        if not args.test:
            raise SystemExit("--train needs --test")
        train_set, test_set = data.read(args.train), data.read(args.test)
    else:
        from mlpjax.data.emt import emt_cu

        allc = emt_cu(seed=0)
        idx_train, idx_test = data.split(len(allc), (0.8, 0.2), seed=0)
        train_set, test_set = [allc[i] for i in idx_train], [allc[i] for i in idx_test]
    if args.n_train:
        train_set = train_set[: args.n_train]
    return train_set, test_set


def _config_for(name, args):
    from mlpjax.config import TrainConfig, load_config

    cfg_path = os.path.join(REPO, "experiments", "configs", f"{name}_{args.config_tag}.yaml") if args.config_tag else None
    if cfg_path and os.path.exists(cfg_path):
        cfg, source = load_config(cfg_path), os.path.relpath(cfg_path, REPO)
    else:
        # plateau schedule: a cosine over an epoch cap would barely decay within a time budget
        cfg = TrainConfig(model=name, model_config=DEFAULT_CONFIGS.get(name, {}), batch_size=4, learning_rate=3e-3,
                          schedule="plateau", plateau_patience=5, plateau_factor=0.5)
        source = "DEFAULT_CONFIGS"
    cfg = cfg.replace(model=name, max_time_minutes=args.minutes, epochs=args.epochs, valid_fraction=0.05,
                      test_fraction=0.0, split_seed=0, patience=None)
    if args.cutoff:
        cfg = cfg.replace(cutoff=args.cutoff)
    return cfg, source


def _run_one(name, args, train_set, test_set) -> dict:
    import jax
    import numpy as np

    from mlpjax.training import train

    cfg, source = _config_for(name, args)
    print(f"\n=== {name} ({source}), {len(train_set)} training structures, {args.minutes:g} min", flush=True)
    t0 = time.perf_counter()
    res = train(cfg, train_set, output_dir=os.path.join(args.output, args.dataset, name), test_configs=test_set, progress=False)
    wall = time.perf_counter() - t0
    m = res.test_metrics
    n_atoms = float(np.mean([c.n_atoms for c in test_set]))
    row = {
        "model": name, "config_source": source, "model_config": dict(cfg.model_config), "cutoff": cfg.cutoff,
        "dtype": cfg.dtype, "batch_size": cfg.batch_size, "n_params": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(res.potential.params))),
        "n_train": len(train_set), "n_test": len(test_set), "epochs": res.epochs_completed, "wall_s": wall,
        "stop_reason": res.stop_reason,
        "energy_mae_meV_per_atom": m["energy_mae_meV_per_atom"],
        "energy_mae_meV_per_structure": m["energy_mae_meV_per_atom"] * n_atoms if _same_size(test_set) else float("nan"),
        "force_mae_meV_per_A": m["force_mae_meV_per_A"], "force_rmse_meV_per_A": m.get("force_rmse_meV_per_A"),
        "energy_r2": m["energy_r2"],
    }
    print(f"{name}: {res.epochs_completed} epochs, E MAE {row['energy_mae_meV_per_atom']:.3f} meV/atom, "
          f"F MAE {row['force_mae_meV_per_A']:.2f} meV/Å", flush=True)
    return row


def _run_parallel(names, args, argv):
    """One subprocess per model, ``args.jobs`` at a time, each pinned (sched_setaffinity) to
    its own equal slice of the cores, so concurrent models do not share a core."""
    import subprocess
    import tempfile

    all_cores = sorted(os.sched_getaffinity(0))
    per = max(1, len(all_cores) // args.jobs)
    slots = [all_cores[i * per:(i + 1) * per] for i in range(min(args.jobs, len(all_cores) // per))]
    base = [a for a in argv]
    # drop --models / --jobs from the child's arguments
    child_args, skip = [], False
    for a in base:
        if skip:
            skip = False
            continue
        if a in ("--models", "--jobs"):
            skip = True
            continue
        if a.startswith("--models=") or a.startswith("--jobs="):
            continue
        child_args.append(a)
    tmp = tempfile.mkdtemp(prefix="mlpjax_accuracy_")
    pending, running, done = list(names), {}, {}
    free = list(range(len(slots)))
    while pending or running:
        while pending and free:
            name, slot = pending.pop(0), free.pop(0)
            out = os.path.join(tmp, f"{name}.json")
            cmd = [sys.executable, os.path.abspath(__file__), *child_args, "--models", name, "--no-record", "--row-json", out]
            cores = set(slots[slot])
            log = open(os.path.join(tmp, f"{name}.log"), "w")
            print(f"[accuracy] {name} on cores {sorted(cores)} (log {log.name})", flush=True)
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    preexec_fn=lambda c=cores: os.sched_setaffinity(0, c))
            running[name] = (proc, slot, out, log)
        time.sleep(2.0)
        for name, (proc, slot, out, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[name]
            free.append(slot)
            if proc.returncode == 0 and os.path.exists(out):
                import json

                with open(out) as fh:
                    done[name] = json.load(fh)[0]
                print(f"[accuracy] {name}: F MAE {done[name]['force_mae_meV_per_A']:.2f} meV/Å", flush=True)
            else:
                print(f"[accuracy] {name} FAILED (exit {proc.returncode}); see {log.name}", flush=True)
    return [done[n] for n in names if n in done], per


def _report(results, args, argv_text, setting):
    from _common import append_results, environment, markdown_table, write_json

    pub = PUBLISHED.get(args.dataset, {})
    unit = pub.get("unit", "meV/atom")
    headers = ["model", "n_train", "budget", "epochs", "E MAE meV/atom", "E MAE meV/structure", "F MAE meV/Å", "energy R²",
               f"published E ({unit})", "published F (meV/Å)"]
    rows = []
    for r in results:
        p = pub.get(r["model"], ("—", "—"))
        rows.append([r["model"], r["n_train"], f"{args.minutes:g} min", r["epochs"], r["energy_mae_meV_per_atom"],
                     r["energy_mae_meV_per_structure"], r["force_mae_meV_per_A"], r["energy_r2"], p[0], p[1]])
    for other, p in pub.items():
        if other != "unit" and other not in {r["model"] for r in results}:
            rows.append([f"{other} (published)", "", "", "", "", "", "", "", p[0], p[1]])
    table = markdown_table(headers, rows)
    configs = "\n".join(f"- {r['model']}: `{r['config_source']}` {r['model_config']}, {r.get('dtype', '')}, "
                        f"batch {r.get('batch_size', '')}, stopped by {r.get('stop_reason', '?')}" for r in results)
    print("\n" + table + "\n\n" + SEED_TARGET)
    if not args.no_record:
        write_json(f"accuracy_{args.dataset}.json", {"environment": environment(), "dataset": args.dataset,
                                                     "minutes": args.minutes, "setting": setting, "results": results})
        append_results(f"Accuracy, {args.dataset}, {args.minutes:g} min per model",
                       f"`benchmarks/accuracy.py {argv_text}`: same training structures and wall-clock "
                       f"budget per model ({setting}), test set unseen.\n\n{table}\n\n{configs}\n\n{SEED_TARGET}")


def _same_size(configs) -> bool:
    return len({c.n_atoms for c in configs}) == 1


if __name__ == "__main__":
    sys.exit(main())
