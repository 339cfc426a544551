"""Accuracy of every model under the same budget: same training data, same wall-clock limit.

    python benchmarks/accuracy.py                                   # EMT Cu (made here), all models, 3 min each
    python benchmarks/accuracy.py --dataset rmd17-ethanol \\
        --train ../shared/data/rmd17-ethanol/train.xyz --test ../shared/data/rmd17-ethanol/test_MD.xyz \\
        --models schnet,painn,nequip,mace --minutes 60 --config-tag rmd17

Each model trains with ``mlpjax.train.train`` on the same training structures (a fixed 5 %
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
    "nequip": {"features": 16, "l_max": 2, "num_layers": 3},
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
    ap.add_argument("--output", default=os.path.join(REPO, "benchmarks", "results", "accuracy_runs"))
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)

    import numpy as np

    from mlpjax import data, models
    from mlpjax.config import TrainConfig, load_config
    from mlpjax.train import train

    if args.train:
        train_set = data.read(args.train)
        test_set = data.read(args.test) if args.test else None
        if test_set is None:
            raise SystemExit("--train needs --test")
    else:
        from mlpjax.datasets import emt_cu

        allc = emt_cu(seed=0)
        idx_train, idx_test = data.split(len(allc), (0.8, 0.2), seed=0)
        train_set, test_set = [allc[i] for i in idx_train], [allc[i] for i in idx_test]
    if args.n_train:
        train_set = train_set[: args.n_train]
    names = args.models.split(",") if args.models else list(models.available())
    results = []
    for name in names:
        cfg_path = os.path.join(REPO, "experiments", "configs", f"{name}_{args.config_tag}.yaml") if args.config_tag else None
        if cfg_path and os.path.exists(cfg_path):
            cfg = load_config(cfg_path)
            source = os.path.relpath(cfg_path, REPO)
        else:
            # plateau schedule: a cosine over an epoch cap would barely decay within a time budget
            cfg = TrainConfig(model=name, model_config=DEFAULT_CONFIGS.get(name, {}), batch_size=4, learning_rate=3e-3,
                              schedule="plateau", plateau_patience=5, plateau_factor=0.5)
            source = "DEFAULT_CONFIGS"
        cfg = cfg.replace(model=name, max_time_minutes=args.minutes, epochs=args.epochs, valid_fraction=0.05,
                          test_fraction=0.0, split_seed=0, patience=None)
        if args.cutoff:
            cfg = cfg.replace(cutoff=args.cutoff)
        print(f"\n=== {name} ({source}), {len(train_set)} training structures, {args.minutes:g} min", flush=True)
        t0 = time.perf_counter()
        res = train(cfg, train_set, output_dir=os.path.join(args.output, args.dataset, name), test_configs=test_set, progress=False)
        wall = time.perf_counter() - t0
        m = res.test_metrics
        n_atoms = np.mean([c.n_atoms for c in test_set])
        row = {
            "model": name, "config_source": source, "model_config": cfg.model_config, "cutoff": cfg.cutoff,
            "n_train": len(train_set), "n_test": len(test_set), "epochs": res.epochs_completed, "wall_s": wall,
            "energy_mae_meV_per_atom": m["energy_mae_meV_per_atom"],
            "energy_mae_meV_per_structure": m["energy_mae_meV_per_atom"] * n_atoms if _same_size(test_set) else float("nan"),
            "force_mae_meV_per_A": m["force_mae_meV_per_A"], "energy_r2": m["energy_r2"],
        }
        results.append(row)
        print(f"{name}: {res.epochs_completed} epochs, E MAE {row['energy_mae_meV_per_atom']:.3f} meV/atom, "
              f"F MAE {row['force_mae_meV_per_A']:.2f} meV/Å", flush=True)

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
    print("\n" + table + "\n\n" + SEED_TARGET)
    if not args.no_record:
        write_json(f"accuracy_{args.dataset}.json", {"environment": environment(), "dataset": args.dataset, "minutes": args.minutes, "results": results})
        append_results(f"Accuracy, {args.dataset}, {args.minutes:g} min per model",
                       f"`benchmarks/accuracy.py {' '.join(argv or sys.argv[1:])}`: same training structures and wall-clock "
                       f"budget per model, test set unseen, float32.\n\n{table}\n\n{SEED_TARGET}")
    return 0


def _same_size(configs) -> bool:
    return len({c.n_atoms for c in configs}) == 1


if __name__ == "__main__":
    sys.exit(main())
