"""Transfer learning (issue 15): fine-tune a bulk Cu model on 20 surface configurations vs training the
same architecture from scratch on the same 20; test error on other surface configurations.

1. **Source model**: the quickstart's SchNet (``experiments/configs/quickstart_cu.yaml``: 32 features,
   2 interactions, 4.5 Å) trained on the quickstart's EMT bulk Cu set (``mlpjax.data.emt.emt_cu(seed=0)``:
   crystal MD 300–700 K, rattled and strained cells, liquid; 32 and 108 atoms, no surface), or the
   file ``--source`` names (e.g. ``quickstart_out/schnet/model.mlpjax``). Without ``--source`` the
   benchmark trains it itself with the quickstart config (``--source-epochs`` shortens it; the
   default 80 is the quickstart's own run, so the model is the quickstart model).
2. **Surface data** (EMT, ``EMT_CU_LATTICE``): (111) and (100) slabs of 3×3×4 = 36 atoms, 7 Å of
   vacuum, periodic in-plane. Train: 20 = per facet Langevin MD frames at 300/500/700 K (3 each,
   100 fs apart) + 1 slab rattled by 0.1 Å. Test: 50 = per facet frames of other MD runs (other
   seeds) at 300/500/700 K and 900 K (unseen), 5 each + 5 rattled slabs.
3. **Runs**, same architecture, epochs, schedule (warmup-cosine, 5 warm-up epochs), batch 4, EMA
   0.99 and validation split (4 of the 20 pick the best epoch): from scratch at the quickstart's
   learning rate 3e-3 and at 1e-3; fine-tuned (``init_from``, E0 re-fitted) at 1e-4, 3e-4, 1e-3
   and 3e-3; fine-tuned with the source's E0 kept (``--keep-reference-energies``) at 3e-4 and
   1e-3; fine-tuned at 1e-3 with everything but the readout frozen (``--freeze
   'params/[!r]*'``); the source as it is (zero-shot) and with only its E0 re-fitted on the 20.
   Every run is evaluated on the surface test set and, for forgetting, on the source's bulk
   test split.

Prints a table, writes ``benchmarks/results/transfer.json`` and appends to RESULTS.md.
Usage: ``python benchmarks/transfer.py [--source MODEL] [--epochs 150] [--source-epochs 80]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from _common import append_results, environment, markdown_table, write_json

HERE = os.path.dirname(os.path.abspath(__file__))
QUICKSTART_CONFIG = os.path.join(HERE, "..", "experiments", "configs", "quickstart_cu.yaml")


def _slab(facet: str):
    from ase.build import fcc100, fcc111

    from mlpjax.data.emt import EMT_CU_LATTICE

    build = {"111": fcc111, "100": fcc100}[facet]
    return build("Cu", size=(3, 3, 4), a=EMT_CU_LATTICE, vacuum=7.0, periodic=False)


def _label(atoms, tag: str, frame: int):
    from ase.calculators.emt import EMT

    from mlpjax import data

    atoms = atoms.copy()
    atoms.pbc = (True, True, False)
    atoms.calc = EMT()
    c = data.Configuration.from_atoms(atoms, source=tag, frame=frame)
    c.energy = float(atoms.get_potential_energy())
    c.forces = np.asarray(atoms.get_forces())
    c.stress = np.asarray(atoms.get_stress(voigt=False))
    return c


def surface_frames(facet: str, temperature_K: float, n: int, seed: int, *, every: int = 50, equilibrate: int = 300) -> list:
    """``n`` Langevin-MD frames (2 fs steps, ``every`` steps apart after ``equilibrate``) of a Cu slab."""
    from ase import units
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import thermalize_momenta

    atoms = _slab(facet)
    atoms.pbc = (True, True, False)
    atoms.calc = EMT()
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
    dyn = Langevin(atoms, 2 * units.fs, temperature_K=temperature_K, friction=0.02, rng=rng, fixcm=False)
    dyn.run(equilibrate)
    out = []
    for k in range(n):
        dyn.run(every)
        out.append(_label(atoms, f"cu{facet}-md{temperature_K:.0f}K-s{seed}", k))
    return out


def rattled(facet: str, n: int, seed: int, amplitude: float = 0.1) -> list:
    out = []
    for k in range(n):
        atoms = _slab(facet)
        atoms.rattle(amplitude, seed=seed * 1000 + k)
        out.append(_label(atoms, f"cu{facet}-rattled-s{seed}", k))
    return out


def surface_sets() -> tuple[list, list]:
    train, test = [], []
    for facet in ("111", "100"):
        for T in (300.0, 500.0, 700.0):
            train += surface_frames(facet, T, 3, seed=1)
        train += rattled(facet, 1, seed=1)
        for T in (300.0, 500.0, 700.0, 900.0):
            test += surface_frames(facet, T, 5, seed=2)
        test += rattled(facet, 5, seed=2)
    return train, test


def _source(args, workdir: str):
    """(source model path, bulk test configurations, seconds spent training it or None)."""
    from mlpjax import load
    from mlpjax.config import load_config, override
    from mlpjax.data.emt import emt_cu
    from mlpjax.training import train

    bulk = emt_cu(seed=0)
    if args.source:
        pot = load(args.source)
        test_idx = (pot.metadata.get("split") or {}).get("test") or []
        return args.source, [bulk[i] for i in test_idx], None
    cfg = override(load_config(QUICKSTART_CONFIG), epochs=args.source_epochs)
    t0 = time.perf_counter()
    result = train(cfg, bulk, output_dir=os.path.join(workdir, "source"), progress=False)
    test_idx = result.potential.metadata["split"]["test"]
    return result.paths["model"], [bulk[i] for i in test_idx], time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", help="bulk model to fine-tune (default: train the quickstart model here)")
    p.add_argument("--source-epochs", type=int, default=80, help="epochs of the source model (quickstart: 80)")
    p.add_argument("--epochs", type=int, default=150, help="epochs of every run on the 20 surface configurations")
    p.add_argument("--workdir", default=None, help="where the runs write (default: a temporary directory)")
    p.add_argument("--no-record", action="store_true", help="print only: no JSON, no RESULTS.md section (trial runs)")
    args = p.parse_args(argv)

    from mlpjax import load
    from mlpjax.config import TrainConfig, load_config
    from mlpjax.training import refit_reference_energies, train
    from mlpjax.validate import metrics

    workdir = args.workdir or tempfile.mkdtemp(prefix="mlpjax_transfer_")
    t_start = time.perf_counter()
    t0 = time.perf_counter()
    train_set, test_set = surface_sets()
    t_data = time.perf_counter() - t0
    print(f"surface data: {len(train_set)} train, {len(test_set)} test configurations ({t_data:.0f} s)", flush=True)
    source_path, bulk_test, t_source = _source(args, workdir)
    source = load(source_path)
    print(f"source model {source_path}" + (f" (trained here in {t_source:.0f} s)" if t_source else ""), flush=True)

    quick = load_config(QUICKSTART_CONFIG)
    common = dict(batch_size=4, epochs=args.epochs, schedule="warmup_cosine", warmup_epochs=5.0, ema_decay=0.99,
                  valid_fraction=0.2, test_fraction=0.0, patience=None, seed=0, split_seed=0,
                  stress_weight=quick.stress_weight)
    scratch = dict(model=quick.model, model_config=dict(quick.model_config), cutoff=quick.cutoff)
    runs = [  # (name, kind, learning rate, extra TrainConfig fields)
        ("from scratch", "scratch", 3e-3, scratch),
        ("from scratch", "scratch", 1e-3, scratch),
        ("fine-tuned", "fine-tune", 1e-4, {}),
        ("fine-tuned", "fine-tune", 3e-4, {}),
        ("fine-tuned", "fine-tune", 1e-3, {}),
        ("fine-tuned", "fine-tune", 3e-3, {}),
        ("fine-tuned, E0 kept", "fine-tune", 3e-4, {"refit_reference_energies": False}),
        ("fine-tuned, E0 kept", "fine-tune", 1e-3, {"refit_reference_energies": False}),
        ("fine-tuned, readout only", "fine-tune", 1e-3, {"freeze": ("params/[!r]*",)}),
    ]

    def evaluate(pot) -> dict:
        surf = metrics(pot, test_set)
        out = {"surface_E_meV_per_atom": surf["energy_mae_meV_per_atom"], "surface_F_meV_per_A": surf["force_mae_meV_per_A"]}
        if bulk_test:
            b = metrics(pot, bulk_test)
            out.update(bulk_E_meV_per_atom=b["energy_mae_meV_per_atom"], bulk_F_meV_per_A=b["force_mae_meV_per_A"])
        return out

    rows = [{"run": "source as it is (bulk only)", "lr": None, "train_s": 0.0, **evaluate(source)},
            {"run": "source, E0 re-fitted on the 20", "lr": None, "train_s": 0.0,
             **evaluate(refit_reference_energies(source, train_set))}]
    for i, (name, kind, lr, extra) in enumerate(runs):
        fields = {**common, **extra, "learning_rate": lr}
        if kind == "fine-tune":
            fields["init_from"] = source_path
        cfg = TrainConfig(**fields)
        t0 = time.perf_counter()
        result = train(cfg, train_set, output_dir=os.path.join(workdir, f"run{i}"), progress=False)
        dt = time.perf_counter() - t0
        row = {"run": name, "lr": lr, "train_s": dt, "best_epoch": result.best_epoch, **evaluate(result.potential)}
        rows.append(row)
        print(f"{name:28s} lr {lr:g}: surface E {row['surface_E_meV_per_atom']:.2f} meV/atom, "
              f"F {row['surface_F_meV_per_A']:.1f} meV/Å; bulk F {row.get('bulk_F_meV_per_A', float('nan')):.1f} meV/Å "
              f"({dt:.0f} s)", flush=True)

    headers = ["run", "lr", "surface E MAE (meV/atom)", "surface F MAE (meV/Å)", "bulk E MAE (meV/atom)",
               "bulk F MAE (meV/Å)", "train s"]
    table = markdown_table(headers, [[r["run"], "—" if r["lr"] is None else f"{r['lr']:g}",
                                      round(r["surface_E_meV_per_atom"], 2), round(r["surface_F_meV_per_A"], 1),
                                      round(r.get("bulk_E_meV_per_atom", float("nan")), 2),
                                      round(r.get("bulk_F_meV_per_A", float("nan")), 1), round(r["train_s"], 1)]
                                     for r in rows])
    print(table)
    total = time.perf_counter() - t_start
    print(f"total {total / 60:.1f} min")
    if args.no_record:
        return 0
    env = environment()
    write_json("transfer.json", {"environment": env, "source": source_path, "source_train_s": t_source,
                                 "n_train": len(train_set), "n_test": len(test_set), "n_bulk_test": len(bulk_test),
                                 "epochs": args.epochs, "rows": rows, "total_s": total})
    src = "the quickstart model, trained here with its config" if not args.source else f"`{args.source}`"
    body = (
        f"`benchmarks/transfer.py --epochs {args.epochs}`"
        + (f" --source-epochs {args.source_epochs}" if not args.source and args.source_epochs != 80 else "")
        + f". Source: {src} (SchNet 32×2, 4.5 Å, EMT bulk Cu: crystal 300–700 K, rattled, strained, liquid; "
        f"no surface{f'; {t_source:.0f} s' if t_source else ''}). New data: {len(train_set)} EMT Cu (111)/(100) slab "
        f"configurations (36 atoms; MD at 300/500/700 K + rattled); test: {len(test_set)} other slab configurations "
        f"(other MD runs, 300–900 K, rattled); bulk = the source's {len(bulk_test)}-structure bulk test split "
        f"(forgetting). Every run: {args.epochs} epochs, warmup-cosine, batch 4, EMA 0.99, best of 4 validation "
        f"structures; fine-tuned runs re-fit E0 on the 20 (`init_from`). Whole benchmark {total / 60:.1f} min on "
        f"{os.cpu_count()} CPU cores (float32).\n\n{table}\n"
    )
    append_results("Transfer learning: bulk Cu model fine-tuned on 20 surfaces", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
