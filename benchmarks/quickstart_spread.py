"""Run-to-run spread of the quickstart's test errors (issue 13, part 4).

    taskset -c 0 python benchmarks/quickstart_spread.py --seeds 0 1 2 --tag 1core
    python benchmarks/quickstart_spread.py --seeds 0 --tag 2core          # both cores

The quickstart's data (``mlpjax.data.emt.emt_cu(seed=0)``, written and read back as the
quickstart does) and its training config (``experiments/configs/quickstart_cu.yaml``)
are used unchanged; only the training seed (parameter initialisation and batch order)
changes. Each run reports the test-set energy and force MAE (the same 30 structures).

Why the numbers of one seed differ between machines: training on the CPU is bit-for-bit
reproducible for a given seed and number of usable cores (checked: two 1-core runs give
identical parameters), but XLA's CPU backend splits its work over its thread pool, whose
size is the number of cores the process may use, so 1-core and 2-core runs round
differently (parameters differ by ~2e-4 after 3 epochs) and training, being chaotic,
amplifies that into a different minimum. The spread over seeds measures that variation.
Prints a table, writes ``benchmarks/results/quickstart_spread_<tag>.json`` and appends a
section to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import append_results, environment, markdown_table, write_json  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, "..", "experiments", "configs", "quickstart_cu.yaml")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tag", default="run", help="label of this series (e.g. 1core, 2core) in the JSON name and table")
    p.add_argument("--workdir", default=None, help="where the runs go (default: a temporary directory)")
    p.add_argument("--no-results", action="store_true", help="do not append to RESULTS.md")
    args = p.parse_args(argv)

    from mlpjax import data
    from mlpjax.config import load_config, override
    from mlpjax.data.emt import emt_cu
    from mlpjax.training import train

    cores = len(os.sched_getaffinity(0))
    work = args.workdir or tempfile.mkdtemp(prefix="qs_spread_")
    path = os.path.join(work, "cu_emt.xyz")
    data.write_extxyz(path, emt_cu(seed=0))
    configs = data.read(path)
    rows, runs = [], []
    for seed in args.seeds:
        cfg = override(load_config(CONFIG), seed=seed)
        t0 = time.perf_counter()
        res = train(cfg, configs, output_dir=os.path.join(work, f"seed{seed}"), progress=False)
        wall = time.perf_counter() - t0
        m = res.test_metrics
        run = {"seed": seed, "cores": cores, "epochs": res.epochs_completed, "stop_reason": res.stop_reason,
               "energy_mae_meV_per_atom": m["energy_mae_meV_per_atom"], "force_mae_meV_per_A": m["force_mae_meV_per_A"],
               "energy_r2": m["energy_r2"], "train_s": wall}
        runs.append(run)
        rows.append([seed, cores, res.epochs_completed, f"{run['energy_mae_meV_per_atom']:.3f}",
                     f"{run['force_mae_meV_per_A']:.2f}", f"{wall:.0f}"])
        print(f"seed {seed}: test E MAE {run['energy_mae_meV_per_atom']:.3f} meV/atom, F MAE "
              f"{run['force_mae_meV_per_A']:.2f} meV/Å, {res.epochs_completed} epochs, {wall:.0f} s", flush=True)
    e = np.array([r["energy_mae_meV_per_atom"] for r in runs])
    f = np.array([r["force_mae_meV_per_A"] for r in runs])
    table = markdown_table(["seed", "cores", "epochs", "test E MAE meV/atom", "test F MAE meV/Å", "train s"], rows)
    spread = (f"mean ± std over {len(runs)} run(s): energy {e.mean():.3f} ± {e.std(ddof=1) if len(e) > 1 else 0:.3f} "
              f"meV/atom (range {e.min():.3f}–{e.max():.3f}), force {f.mean():.2f} ± {f.std(ddof=1) if len(f) > 1 else 0:.2f} "
              f"meV/Å (range {f.min():.2f}–{f.max():.2f})")
    print(table)
    print(spread)
    write_json(f"quickstart_spread_{args.tag}.json", {"environment": environment(), "tag": args.tag, "runs": runs})
    if not args.no_results:
        body = (f"`python benchmarks/quickstart_spread.py --seeds {' '.join(map(str, args.seeds))} --tag {args.tag}` "
                f"({cores} usable core(s)): the quickstart's data and config, training seed varied; test set of 30 "
                "structures, float32.\n\n" + table + "\n\n- " + spread + "\n")
        append_results(f"Quickstart run-to-run spread ({args.tag})", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
