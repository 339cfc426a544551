"""Speed of every mlpjax model: inference (energy + forces), one training step, MD steps/s,
peak memory; with the PyTorch reference implementation timed beside it where it installs.

    python benchmarks/model_speed.py                       # all registered models, 64/512/4096 atoms
    python benchmarks/model_speed.py --models schnet,mace --sizes 64,512 --quick
    python benchmarks/model_speed.py --peer-python /path/to/venv-with-mace-torch/bin/python
    python benchmarks/model_speed.py --gpu                  # same table on a GPU (fails if none)

Method
* Structures: fcc Cu (a = 3.61 Å) cells of 64 (4×2×2), 512 (4×4×8) and 4,096 (8×8×16 cubic
  cells) atoms, slightly rattled; cutoff 5 Å for every model.
* Inference: ``jax.jit(potential.predict)`` on one padded graph (energy, forces, stress from the
  single shared gradient), median wall time over repeats after one compile call.
* Training step: ``mlpjax.training.make_step_fns`` (loss on energy/forces/stress, Adam, EMA) on a
  batch of that one structure, median over repeats.
* MD: ``mlpjax.md.simulate`` NVE, 2 fs, chunks of 10 steps, median chunk; only where the cell is
  at least twice cutoff + skin wide (jax-md's minimum image).
* Peak memory: on CPU the peak resident set size of a fresh process per model (each model runs in
  its own subprocess); on GPU ``memory_stats()['peak_bytes_in_use']``.
* Each model uses the size in ``BENCH_CONFIGS`` below (published-like widths reduced where a
  2-core CPU would take minutes per call; the table prints what was run). Parameters are
  untrained: timing does not depend on their values.
* Peer: with ``--peer-python``, ``benchmarks/peers/mace_torch_speed.py`` runs in that
  interpreter (a separate environment with torch and mace-torch, kept out of mlpjax's
  dependencies) and times a mace-torch MACE of the same hyperparameters on the same structures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CUTOFF = 5.0  # Å
SIZES = {64: (4, 2, 2), 512: (4, 4, 8), 4096: (8, 8, 16)}
BENCH_CONFIGS: dict[str, dict] = {
    "schnet": {"features": 64, "interactions": 3, "num_rbf": 32, "filter_hidden": 64},
    "painn": {"features": 128, "interactions": 3, "num_rbf": 20},  # the paper's (= schnetpack's defaults)
    "dimenet": {"hidden": 64, "out_emb": 128, "int_emb": 32, "num_blocks": 4},  # half-width DimeNet++ (triplets dominate)
    "nequip": {"features": 32, "l_max": 2, "num_layers": 4, "full_parity": False},  # 32 channels, l_max 2, 4 layers, natural parity
    "mace": {"features": 64, "hidden_l_max": 1},  # 64x0e + 64x1o, l_max 3, ν = 3, 2 layers
}


def _structure(n: int, seed: int = 0):
    import numpy as np
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(SIZES[n])
    atoms.positions += np.random.default_rng(seed).normal(0.0, 0.03, atoms.positions.shape)
    return atoms


def _median_time(fn, reps: int) -> float:
    import jax
    import numpy as np

    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _reps(n: int, quick: bool) -> int:
    base = {64: 20, 512: 8, 4096: 3}.get(n, 3)
    return max(2, base // 3) if quick else base


def structure_batch(pot, n: int, dtype=None):
    """The rattled fcc Cu cell of ``n`` atoms (zero labels) as ``(atoms, graph, batch)``: one padded
    graph batch on the device, float32 (as every row of this benchmark times it) unless ``dtype``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mlpjax.data import Configuration
    from mlpjax.graph import budget_for_single, pack, to_graph

    atoms = _structure(n)
    conf = Configuration.from_atoms(atoms)
    conf.energy, conf.forces, conf.stress = 0.0, np.zeros((n, 3)), np.zeros((3, 3))
    graph = to_graph(conf, pot.species, pot.cutoff)
    batch = jax.tree_util.tree_map(jnp.asarray, pack([graph], budget_for_single(graph), dtype=dtype or np.float32))
    return atoms, graph, batch


def make_potential(model: str):
    """The untrained potential of ``model`` at its ``BENCH_CONFIGS`` size: ``(potential, config)``."""
    import jax

    from mlpjax import models
    from mlpjax.potential import Potential

    cfg = models.make_config(model, BENCH_CONFIGS.get(model, {}))
    pot = Potential(model, cfg, cutoff=CUTOFF, species=(29,), reference_energies=(0.0,), energy_scale=0.5, avg_num_neighbors=54.0)
    return pot.replace(params=pot.init_params(jax.random.PRNGKey(0))), cfg


def _bench_size(pot, tcfg, predict, n, quick, md):
    import jax

    from mlpjax.training import init_state, make_plateau, make_step_fns

    model = pot.model
    atoms, graph, batch = structure_batch(pot, n)
    row = {"n_atoms": n, "n_edges": graph.n_edges}
    t = time.perf_counter()
    jax.block_until_ready(predict(pot.params, batch))
    row["inference_compile_s"] = time.perf_counter() - t
    row["inference_s"] = _median_time(lambda: predict(pot.params, batch), _reps(n, quick))
    fns = make_step_fns(pot, tcfg, steps_per_epoch=1, compute_stress=True)
    state = init_state(pot, fns.optimizer, make_plateau(tcfg), learning_rate=1e-3)
    t = time.perf_counter()
    jax.block_until_ready(fns.train_step(state, batch))
    row["train_compile_s"] = time.perf_counter() - t
    row["train_step_s"] = _median_time(lambda: fns.train_step(state, batch)[1]["loss"], _reps(n, quick))
    if md:
        from mlpjax.md import MDConfig, check_cell, simulate

        try:
            check_cell(atoms.cell.array, pot.cutoff, 0.5)
            ok = True
        except ValueError:
            ok = False
        if ok:
            chunks = 2 if quick else 3
            res = simulate(pot, atoms, MDConfig(ensemble="nve", temperature_K=300.0, timestep_fs=2.0, steps=10 * chunks,
                                                chunk_steps=10, log_every=10, traj_every=10), progress=False)
            row["md_steps_per_s"] = float(res.timings["steps_per_s"])
    print(f"  {model} N={n}: inference {row['inference_s'] * 1e3:.1f} ms, train step {row['train_step_s'] * 1e3:.1f} ms"
          + (f", MD {row['md_steps_per_s']:.2f} steps/s" if "md_steps_per_s" in row else ""), file=sys.stderr, flush=True)
    return row


def bench_one(model: str, sizes: list[int], quick: bool, md: bool) -> dict:
    """Runs in a fresh process: all measurements for one model."""
    import jax
    import numpy as np

    from mlpjax.config import TrainConfig

    overrides = BENCH_CONFIGS.get(model, {})
    pot, cfg = make_potential(model)
    n_params = int(sum(np.size(x) for x in jax.tree_util.tree_leaves(pot.params)))
    out = {"model": model, "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, "n_params": n_params, "sizes": {}}
    predict = jax.jit(lambda p, b: pot.predict(p, b))
    tcfg = TrainConfig(model=model, model_config=overrides, cutoff=CUTOFF, batch_size=1, epochs=10, schedule="constant")
    for n in sizes:
        try:
            row = _bench_size(pot, tcfg, predict, n, quick, md)
        except Exception as err:  # e.g. out of memory at 4,096 atoms: record it, keep the other sizes
            row = {"n_atoms": n, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"}
            print(f"  {model} N={n}: failed: {row['error']}", file=sys.stderr, flush=True)
        out["sizes"][str(n)] = row
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        stats = dev.memory_stats() or {}
        out["peak_memory_MB"] = stats.get("peak_bytes_in_use", float("nan")) / 2**20
        out["memory_kind"] = "device peak bytes in use"
    else:
        out["peak_memory_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        out["memory_kind"] = "process peak RSS"
    return out


def write_structures(folder: str, sizes: list[int]) -> list[str]:
    """The benchmark's structures as extxyz files for a peer's interpreter: one path per size."""
    from ase.io import write

    paths = []
    for n in sizes:
        p = os.path.join(folder, f"cu{n}.xyz")
        write(p, _structure(n))
        paths.append(p)
    return paths


def run_peer(peer_python: str, sizes: list[int], quick: bool) -> dict | None:
    """mace-torch on the same structures with the same hyperparameters, in its own interpreter."""
    from mlpjax import models

    if "mace" not in models.available():
        return None
    cfg = models.make_config("mace", BENCH_CONFIGS.get("mace", {}))
    with tempfile.TemporaryDirectory() as tmp:
        spec = {"config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, "cutoff": CUTOFF,
                "structures": write_structures(tmp, sizes), "reps": [_reps(n, quick) for n in sizes], "avg_num_neighbors": 54.0}
        spec_path = os.path.join(tmp, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers", "mace_torch_speed.py")
        proc = subprocess.run([peer_python, script, spec_path], capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"peer failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            return None
        return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=None, help="comma-separated (default: every registered model)")
    ap.add_argument("--sizes", default="64,512,4096")
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--no-md", action="store_true")
    ap.add_argument("--gpu", action="store_true", help="require a GPU (JAX's default backend) and label the table with it")
    ap.add_argument("--peer-python", default=None, help="python of an environment with torch + mace-torch")
    ap.add_argument("--no-record", action="store_true", help="do not write JSON / RESULTS.md")
    ap.add_argument("--_one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    for n in sizes:
        if n not in SIZES:
            raise SystemExit(f"--sizes: {n} not in {sorted(SIZES)}")
    if args._one:
        print(json.dumps(bench_one(args._one, sizes, args.quick, not args.no_md)))
        return 0

    import jax

    from mlpjax import models

    if args.gpu and jax.devices()[0].platform != "gpu":
        raise SystemExit("--gpu: no GPU visible to JAX")
    names = args.models.split(",") if args.models else list(models.available())
    results = []
    for name in names:
        print(f"{name} ...", flush=True)
        cmd = [sys.executable, os.path.abspath(__file__), "--_one", name, "--sizes", args.sizes] + (["--quick"] if args.quick else []) + (["--no-md"] if args.no_md else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        sys.stderr.write("\n".join(line for line in proc.stderr.splitlines() if line.startswith("  ")) + "\n")
        if proc.returncode != 0:
            print(f"{name} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    peer = run_peer(args.peer_python, sizes, args.quick) if args.peer_python else None

    from _common import append_results, environment, markdown_table, write_json

    headers = ["model", "params", "N atoms", "edges", "E+F+σ ms", "µs/atom", "train step ms", "MD steps/s", "compile s", "peak MB"]
    rows = []
    for r in results:
        for key, s in r["sizes"].items():
            if "error" in s:
                rows.append([r["model"], r["n_params"], s["n_atoms"], "—", s["error"][:60], "—", "—", "—", "—", r["peak_memory_MB"]])
                continue
            rows.append([r["model"], r["n_params"], s["n_atoms"], s["n_edges"], s["inference_s"] * 1e3, s["inference_s"] / s["n_atoms"] * 1e6,
                         s["train_step_s"] * 1e3, s.get("md_steps_per_s", "—"), s["inference_compile_s"] + s["train_compile_s"], r["peak_memory_MB"]])
    table = markdown_table(headers, rows)
    print("\n" + table)
    peer_table = ""
    if peer is not None:
        ours = next((r for r in results if r["model"] == "mace"), None)
        prow = []
        for s in peer["sizes"]:
            n = s["n_atoms"]
            mine = ours["sizes"].get(str(n)) if ours else None
            mine = mine if mine and "error" not in mine else None
            ratio = (s["inference_s"] / mine["inference_s"]) if mine else float("nan")
            prow.append([n, s["inference_s"] * 1e3, mine["inference_s"] * 1e3 if mine else "—", ratio])
        peer_table = markdown_table(["N atoms", f"mace-torch {peer['version']} E+F ms", "mlpjax MACE E+F+σ ms", "speed-up (torch/mlpjax)"], prow)
        print("\nPeer (same hyperparameters, same structures, same machine):\n" + peer_table)
    if not args.no_record:
        env = environment()
        write_json("model_speed.json", {"environment": env, "results": results, "peer": peer, "configs": BENCH_CONFIGS})
        body = (f"`benchmarks/model_speed.py {' '.join(argv or sys.argv[1:])}`: fcc Cu, cutoff {CUTOFF} Å, float32, untrained "
                "parameters; inference = energy+forces+stress from one jitted call; train step = loss+grad+Adam+EMA on one "
                "structure; median times after compilation; peak memory per model process.\n\n" + table)
        if peer_table:
            body += "\n\nmace-torch peer, same MACE hyperparameters:\n\n" + peer_table
        append_results("Model speed", body)
        print("wrote benchmarks/results/model_speed.json and appended to benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
