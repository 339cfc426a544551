"""Active learning against random sampling (issue 15): same oracle, same test set, same model and
training budget at every point of both learning curves.

Setting (EMT Cu, the oracle of both arms; every cell 100-108 atoms, wide enough for the 4 Å cutoff
plus the skin without an image supercell):

* **conditions**: fcc bulk (3×3×3 cubic, 108 atoms), a (111) slab (5×5×4, 100 atoms) and a (100)
  slab (5×5×4, 100 atoms), both with 2 × 7.5 Å of vacuum, and a vacancy cell (107 atoms), at 300,
  600, 900 and 1,200 K;
* **initial data**: 40 frames of 300 K bulk only (EMT Langevin MD), shared by both arms;
* **validation / test sets**: EMT Langevin MD of every structure at every temperature, 4 resp. 6
  frames each (64 / 96 frames), from their own seeds; never trained on. The validation set picks
  the best epoch of every curve model; the test set gives the curves;
* **active learning**: ``mlpjax active`` (:func:`mlpjax.active.run_active`) with a 4-member full
  SchNet ensemble (32 features, 2 interactions, 4 Å), exploring every structure at every
  temperature with its own MD (Langevin, 2 fs, 600 steps, a frame every 10), trust window 0.08-0.6
  eV/Å on the max per-atom force deviation, 20 labels per round picked by farthest-point sampling
  in descriptor space, warm-started retraining; ``--iterations`` rounds. With ``--stop-frames 1``
  (the default) each replica's first frame above 0.6 eV/Å is labelled ahead of the window's
  candidates (``select.stop_frames``): without it, the model trained on bulk alone is above the
  window on the slabs from their first frame, so they never give a candidate (the first run of this
  benchmark, recorded in RESULTS.md, picked distorted hot bulk for three rounds);
* **random sampling**: the 40 initial frames + frames drawn uniformly (one fixed permutation, so
  the sets are nested) from a pool of EMT Langevin MD under the same conditions (16 frames per
  structure and temperature, 200 fs apart, 256 frames, another seed);
* **curves**: at each number of labelled configurations N (the active loop's N after every round;
  for random also beyond, to find where it reaches the target) ONE SchNet of the same architecture
  is trained FROM SCRATCH on the first N labels of each arm with the same budget (``--epochs``
  epochs, batch 8, lr 2e-3, warm-up + cosine, best epoch on the validation set) and its force MAE
  on the test set is the curve's point. The loop's own warm-started ensemble means are reported
  beside them (they are not the same budget, so they are not the comparison).
* **ratio**: labels each arm needs to reach ``--target`` meV/Å (30), by linear interpolation
  between the first point at or below the target and the one before it; "> N" when an arm never
  reaches it.

Everything is cached in ``--workdir`` (default ``runs/al_benchmark``): the data files, the active
run (resumable as ``mlpjax active`` is) and every curve point (``curves.json``), so a killed run
continues where it stopped. Prints a table, writes ``benchmarks/results/active_learning.json``
and ``learning_curves.png`` and appends to RESULTS.md.

Usage: ``python benchmarks/active_learning.py [--iterations 6] [--epochs 100] [--target 30]
[--random-max 240] [--workdir DIR] [--no-record]``; ``--quick`` is a smoke run (minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from _common import RESULTS_DIR, append_results, environment, markdown_table, write_json

LATTICE = 3.59  # Å, the EMT-Cu lattice constant mlpjax's Cu data use
TEMPERATURES = (300, 600, 900, 1200)  # K
STRUCTURES = {  # name -> recipe builder (mlpjax data generate)
    "bulk": {"bulk": {"name": "Cu", "crystalstructure": "fcc", "a": LATTICE, "cubic": True}, "repeat": 3},
    "slab111": {"fcc111": {"symbol": "Cu", "size": [5, 5, 4], "a": LATTICE, "vacuum": 7.5}},
    "slab100": {"fcc100": {"symbol": "Cu", "size": [5, 5, 4], "a": LATTICE, "vacuum": 7.5}},
    "vacancy": {"from": "bulk", "vacancy": 0},
}
MODEL = {"model": "schnet", "model_config": {"features": 32, "interactions": 2, "num_rbf": 16, "filter_hidden": 32},
         "cutoff": 4.0}


def _recipe(seed: int, frames: int, *, names=tuple(STRUCTURES), temperatures=TEMPERATURES, stride: int = 20,
            description: str = "") -> dict:
    structures = {n: STRUCTURES[n] for n in ("bulk", *names) if n in STRUCTURES}
    return {"description": description, "oracle": "emt", "driver": "emt", "seed": seed, "structures": structures,
            "sources": [{"md": {"structures": list(names), "temperatures_K": list(temperatures), "frames": frames,
                                "stride": stride, "equilibration_steps": 200}}]}


def _write_yaml(path: str, values: dict) -> str:
    import yaml

    with open(path, "w") as fh:
        yaml.safe_dump(values, fh, sort_keys=False)
    return path


def make_data(workdir: str, *, quick: bool) -> dict:
    """The labelled sets (cached): initial, valid, test, pool; and the exploration structure files."""
    from ase.build import bulk, fcc100, fcc111
    from ase.io import write

    from mlpjax.data import read
    from mlpjax.data.generate import generate, recipe_from_dict

    d = os.path.join(workdir, "data")
    os.makedirs(d, exist_ok=True)
    n = (2, 3, 2, 4) if quick else (4, 6, 16, 40)  # valid, test, pool frames per structure × temperature; initial
    specs = {
        "initial": _recipe(0, n[3], names=("bulk",), temperatures=(300,), stride=10,
                           description="fcc Cu bulk, EMT MD at 300 K (the initial data of both arms)"),
        "valid": _recipe(1, n[0], description="validation: every structure at 300-1,200 K"),
        "test": _recipe(2, n[1], description="test: every structure at 300-1,200 K"),
        "pool": _recipe(3, n[2], stride=100, description="random arm's pool: every structure at 300-1,200 K"),
    }
    out = {}
    for name, spec in specs.items():
        path = os.path.join(d, f"{name}.xyz")
        _write_yaml(os.path.join(d, f"{name}_recipe.yaml"), spec)
        if not os.path.exists(path + ".done"):
            t0 = time.perf_counter()
            generate(recipe_from_dict(spec), path, workers=2, overwrite=True, warn=False)
            open(path + ".done", "w").close()
            print(f"data {name}: {len(read(path))} frames ({time.perf_counter() - t0:.0f} s)", flush=True)
        out[name] = list(read(path, min_distance=0))
    files = []
    builders = {"bulk": lambda: bulk("Cu", "fcc", a=LATTICE, cubic=True).repeat(3),
                "slab111": lambda: fcc111("Cu", size=(5, 5, 4), a=LATTICE, vacuum=7.5),
                "slab100": lambda: fcc100("Cu", size=(5, 5, 4), a=LATTICE, vacuum=7.5)}
    for name in STRUCTURES:
        atoms = builders["bulk"]() if name == "vacancy" else builders[name]()
        if name == "vacancy":
            del atoms[0]
        atoms.info.clear()
        atoms.pbc = True  # slabs: periodic with 15 Å of vacuum between the images (> cutoff)
        path = os.path.join(d, f"{name}.xyz")
        write(path, atoms)
        files.append(path)
    out["structures"] = files
    return out


def active_config(workdir: str, data: dict, args):
    from mlpjax.active import config_from_dict

    d = os.path.join(workdir, "data")
    values = {
        "initial_data": os.path.join(d, "initial.xyz"),
        "validation_data": os.path.join(d, "valid.xyz"),
        "test_data": os.path.join(d, "test.xyz"),
        "oracle": "emt",
        "output": os.path.join(workdir, "active"),
        "seed": 0,
        "train": {**MODEL, "epochs": args.epochs, "batch_size": 8, "learning_rate": 0.002, "valid_fraction": 0.1,
                  "ensemble_size": args.members, "ensemble_kind": "full"},
        "retrain": {"epochs": args.retrain_epochs, "learning_rate": 0.001},
        "explore": {"structures": data["structures"], "temperatures_K": list(TEMPERATURES), "ensemble": "nvt",
                    "steps": args.explore_steps, "timestep_fs": 2.0, "sample_every": 10},
        "select": {"sigma_lo": 0.08, "sigma_hi": 0.6, "max_selected": args.per_round, "method": "fps",
                   "stop_frames": bool(args.stop_frames)},
        "label": {"workers": 2},
        "stop": {"max_iterations": args.iterations, "max_labels": None, "force_mae_meV_A": None},
    }
    _write_yaml(os.path.join(workdir, "active.yaml"), values)
    return config_from_dict(values)


def active_labels(run_dir: str, initial: list, n_iterations: int) -> list:
    """initial + every round's labels in the order the loop added them."""
    from mlpjax.data import read

    out = list(initial)
    for k in range(n_iterations):
        p = os.path.join(run_dir, f"iter_{k:03d}", "labels.xyz")
        if os.path.exists(p) and os.path.getsize(p):
            out.extend(read(p, min_distance=0))
    return out


def train_point(configs: list, valid: list, test: list, args, out_dir: str) -> dict:
    """One curve point: a SchNet from scratch on ``configs``; test MAEs."""
    from mlpjax.config import TrainConfig
    from mlpjax.training import train
    from mlpjax.validate import metrics

    cfg = TrainConfig(**MODEL, epochs=args.epochs, batch_size=8, learning_rate=0.002, schedule="warmup_cosine",
                      warmup_epochs=5.0, valid_fraction=0.0, test_fraction=0.0, patience=None, seed=0, split_seed=0)
    t0 = time.perf_counter()
    res = train(cfg, configs, valid, output_dir=out_dir, progress=False)
    m = metrics(res.potential, test)
    return {"n": len(configs), "test_F_meV_A": m["force_mae_meV_per_A"], "test_E_meV_atom": m["energy_mae_meV_per_atom"],
            "best_epoch": res.best_epoch, "train_s": time.perf_counter() - t0,
            "config_types": _composition(configs)}


def _composition(configs) -> dict:
    out: dict = {}
    for c in configs:
        info = c.info or {}
        key = str(info.get("structure") or info.get("al_structure") or "?")  # data recipes / the active loop's labels
        out[key] = out.get(key, 0) + 1
    return out


def labels_to_reach(points: list, target: float) -> float | None:
    """Interpolated N at which the curve (sorted by N) first reaches ``target``; None if never."""
    pts = sorted((p["n"], p["test_F_meV_A"]) for p in points)
    for i, (n, f) in enumerate(pts):
        if f <= target:
            if i == 0:
                return float(n)
            n0, f0 = pts[i - 1]
            return float(n0 + (n - n0) * (f0 - target) / (f0 - f))
    return None


def plot(curves: dict, loop_rows: list, target: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, style in (("active", "o-"), ("random", "s-")):
        pts = sorted((p["n"], p["test_F_meV_A"]) for p in curves[name])
        if pts:
            ax.plot(*zip(*pts), style, label=f"{name} (one SchNet from scratch per point)")
    if loop_rows:
        ax.plot([r["n_labels"] for r in loop_rows], [r["test_force_mae_meV_A"] for r in loop_rows], "^--", alpha=0.6,
                label="active loop's own ensemble (warm start)")
    ax.axhline(target, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("labelled configurations (EMT)")
    ax.set_ylabel("test force MAE (meV/Å)")
    ax.set_yscale("log")
    ax.set_title("Cu: active learning vs random sampling")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="runs/al_benchmark")
    p.add_argument("--iterations", type=int, default=6, help="active-learning rounds (20 labels each)")
    p.add_argument("--per-round", type=int, default=20)
    p.add_argument("--members", type=int, default=4, help="ensemble members of the active loop")
    p.add_argument("--epochs", type=int, default=100, help="epochs of every curve model (and of the loop's first model)")
    p.add_argument("--retrain-epochs", type=int, default=40, help="epochs of the loop's warm-started retraining")
    p.add_argument("--explore-steps", type=int, default=600, help="MD steps per condition and round (2 fs)")
    p.add_argument("--stop-frames", type=int, default=1, choices=(0, 1),
                   help="1: also label each stopped replica's first frame above sigma_hi (select.stop_frames)")
    p.add_argument("--target", type=float, default=30.0, help="meV/Å")
    p.add_argument("--random-max", type=int, default=240, help="largest random-arm training set")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny data, 2 rounds, 5 epochs")
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.iterations, args.per_round, args.members, args.epochs, args.retrain_epochs = 2, 4, 2, 5, 3
        args.explore_steps, args.random_max = 100, 16
        if args.workdir == "runs/al_benchmark":
            args.workdir = "runs/al_benchmark_quick"
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    t_start = time.perf_counter()

    data = make_data(workdir, quick=args.quick)
    initial, valid, test, pool = data["initial"], data["valid"], data["test"], data["pool"]

    from mlpjax.active import run_active

    t0 = time.perf_counter()
    result = run_active(active_config(workdir, data, args), progress=True)
    t_active = time.perf_counter() - t0
    loop_rows = result.rows
    print(f"active loop: {result.n_labels} labels, stop {result.stop_reason} ({t_active:.0f} s this call)", flush=True)

    al_set = active_labels(result.run_dir, initial, len(loop_rows) - 1)
    n_active = sorted({int(r["n_labels"]) for r in loop_rows})
    rng = np.random.default_rng(0)
    random_set = list(initial) + [pool[i] for i in rng.permutation(len(pool))]
    step = args.per_round
    n_random = sorted(set(n_active) | set(range(len(initial), min(args.random_max, len(random_set)) + 1, step)))

    cache_path = os.path.join(workdir, "curves.json")
    curves = json.load(open(cache_path)) if os.path.exists(cache_path) else {"active": [], "random": []}
    for arm, source, ns in (("active", al_set, n_active), ("random", random_set, n_random)):
        done = {pt["n"] for pt in curves[arm]}
        for n in ns:
            if n in done or n > len(source):
                continue
            if arm == "random" and n == len(initial) and any(pt["n"] == n for pt in curves["active"]):
                pt = dict(next(pt for pt in curves["active"] if pt["n"] == n))  # the same 40 frames: the same model
            else:
                pt = train_point(source[:n], valid, test, args, os.path.join(workdir, "curves", f"{arm}_{n:04d}"))
            curves[arm].append(pt)
            with open(cache_path + ".tmp", "w") as fh:
                json.dump(curves, fh, indent=1)
            os.replace(cache_path + ".tmp", cache_path)
            print(f"{arm:6s} N={n:4d}: test F {pt['test_F_meV_A']:.1f} meV/Å, E {pt['test_E_meV_atom']:.2f} meV/atom "
                  f"({pt['train_s']:.0f} s; {pt['config_types']})", flush=True)

    n_al = labels_to_reach(curves["active"], args.target)
    n_rand = labels_to_reach(curves["random"], args.target)
    max_rand = max(pt["n"] for pt in curves["random"])
    max_al = max(pt["n"] for pt in curves["active"])
    if n_al is not None and n_rand is not None:
        ratio, ratio_text = n_rand / n_al, f"{n_rand / n_al:.2f}×"
    elif n_al is not None:
        ratio, ratio_text = None, f"> {max_rand / n_al:.2f}× (random never reached it up to N = {max_rand})"
    else:
        ratio, ratio_text = None, "— (active learning did not reach it)"

    # the same comparison at the error active learning reaches with its largest set (whatever the target)
    best_al = min(pt["test_F_meV_A"] for pt in curves["active"] if pt["n"] == max_al)
    n_rand_match = labels_to_reach(curves["random"], best_al)
    match_text = (f"random sampling needs {n_rand_match:.0f} labels for the {best_al:.1f} meV/Å active learning reaches "
                  f"with {max_al} ({n_rand_match / max_al:.2f}×)" if n_rand_match is not None else
                  f"random sampling does not reach the {best_al:.1f} meV/Å active learning reaches with {max_al} "
                  f"(up to N = {max_rand}: > {max_rand / max_al:.2f}×)")

    by_n = {a: {pt["n"]: pt for pt in curves[a]} for a in curves}
    loop_by_n = {int(r["n_labels"]): r for r in loop_rows}
    rows = []
    for n in sorted(set(by_n["active"]) | set(by_n["random"])):
        a, r, lp = by_n["active"].get(n), by_n["random"].get(n), loop_by_n.get(n)
        rows.append([n, "—" if a is None else round(a["test_F_meV_A"], 1), "—" if r is None else round(r["test_F_meV_A"], 1),
                     "—" if a is None else round(a["test_E_meV_atom"], 2), "—" if r is None else round(r["test_E_meV_atom"], 2),
                     "—" if lp is None else round(float(lp["test_force_mae_meV_A"]), 1)])
    table = markdown_table(["labelled configurations", "active F (meV/Å)", "random F (meV/Å)", "active E (meV/atom)",
                            "random E (meV/atom)", "loop ensemble F (meV/Å)"], rows)
    summary = (f"labels to reach {args.target:g} meV/Å (test force MAE): active "
               f"{'%.0f' % n_al if n_al is not None else '> %d' % max_al}, random "
               f"{'%.0f' % n_rand if n_rand is not None else '> %d' % max_rand}; ratio random/active {ratio_text}; "
               + match_text)
    print(table)
    print(summary)
    curve_png = os.path.join(workdir, "learning_curves.png")
    plot(curves, loop_rows, args.target, curve_png)
    elapsed = time.perf_counter() - t_start
    loop_times = {k: sum(float(r.get(k) or 0) for r in loop_rows) for k in ("train_s", "explore_s", "select_s", "label_s")}
    out = {"environment": environment(), "args": vars(args), "curves": curves, "loop_rows": loop_rows,
           "labels_to_target": {"active": n_al, "random": n_rand}, "ratio": ratio, "summary": summary,
           "matched_error": {"active_best_F_meV_A": best_al, "active_n": max_al, "random_n": n_rand_match},
           "loop_time_s": loop_times, "wall_s_this_call": elapsed,
           "active_composition": _composition(al_set), "test_composition": _composition(test)}
    if args.quick or args.no_record:
        print(f"({'quick' if args.quick else 'no-record'} run: nothing recorded; {elapsed:.0f} s)")
        return 0
    write_json("active_learning.json", out)
    import shutil

    shutil.copyfile(curve_png, RESULTS_DIR / "active_learning_curves.png")
    cmd = "python benchmarks/active_learning.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in vars(args).items()
        if k in ("iterations", "epochs", "retrain_epochs", "explore_steps", "members", "stop_frames", "target",
                 "random_max", "workdir"))
    body = (f"`{cmd}` (EMT oracle; bulk, (111) and (100) slabs and a vacancy cell at 300-1,200 K; 40 initial "
            f"frames of 300 K bulk; test set {len(test)} frames of all conditions; curve models: one SchNet from "
            f"scratch per point, {args.epochs} epochs; the loop: {args.members}-member ensemble, 20 labels per round "
            f"by fps" + (", each stopped replica's first frame above sigma_hi labelled first (select.stop_frames)"
                         if args.stop_frames else "") + "). Loop phase times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in loop_times.items())
            + f". Plot: `benchmarks/results/active_learning_curves.png`.\n\n{table}\n\n**{summary}**\n")
    append_results("Active learning vs random sampling (Cu, EMT)", body)
    print(f"wrote benchmarks/results/active_learning.json and a RESULTS.md section ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
