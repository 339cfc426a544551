"""Training streamed from a packed HDF5 file against the in-memory path (issue 17, "Data larger than
memory"): throughput (structures per second of training) on the same data, and the peak memory of a
data set 5x larger than the one whose in-memory training sets the memory budget.

1. **Data**: ``--distinct`` EMT fcc Cu cells of 32 atoms from ``mlpjax.data.emt.emt_cu`` (rattled and
   strained, no MD: 10 ms per cell), repeated in order to the sizes below and written as extxyz (the
   file ``mlpjax train --train`` reads); packed like ``mlpjax data pack IN OUT.h5 --cutoff 4.5``
   (:func:`mlpjax.data.pack_dataset`, timed). Repetition keeps generation cheap; every frame is
   still read, checked, stored and trained on separately by both paths. Both paths check for
   overlapping atoms at ``MIN_DISTANCE`` = 0.5 Å instead of :func:`mlpjax.data.read`'s 0.1 Å: vesin's
   cell list for a 0.1 Å cutoff in a 7.2 Å cell costs 22 ms per frame (0.5 Å: 1 ms), which would
   make reading and packing, not training, the cost measured here.
2. **Model**: the quickstart SchNet (``experiments/configs/quickstart_cu.yaml``: 32 features, 2
   interactions, 4.5 Å, batch 4, float32), valid_fraction 0.05, no test set, validation only after
   the last epoch (``eval_every = epochs``). Every run is a fresh Python process.
3. **Throughput**: ``--structures`` structures, ``--epochs`` epochs, in memory (``data.read`` of the
   extxyz, then ``train``) and streamed (``train_file: OUT.h5``: graphs built in the prefetch
   thread, ``mlpjax.training.streaming``), alternated (``--repeats`` pairs). Structures/s = training
   structures / the median ``epoch_time_s`` of epochs 2 … E−1 (epoch 1 compiles, epoch E validates).
   Ratio = streamed / in memory.
4. **Memory**: runs cut by ``max_time_minutes`` inside their first epoch (the in-memory path holds its
   data from the start, the streamed path holds no more later), at M = ``--memory-structures`` in
   memory and streamed, at ``--factor`` × M streamed and (not ``--quick``) in memory. Two numbers per
   run: the peak RSS of the whole process (``ru_maxrss``; on this machine set by the final validation
   metrics and the parity plot, which compile predictions and draw a figure: about +150 MB) and the
   training peak (RSS sampled every 0.1 s up to the training loop's last epoch event). The data's
   share is read off differences of training peaks: in memory at M − streamed at M (Configuration
   objects, neighbour lists), streamed at 5M − streamed at M (what 4M more structures cost the
   streamed path). The memory budget is the in-memory peak at M; the 5M streamed run is under it
   or not.

Prints the tables, writes ``benchmarks/results/streaming.json`` and appends to RESULTS.md.
Usage: ``python benchmarks/streaming.py [--quick] [--structures 1500] [--memory-structures 5000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from _common import append_results, environment, markdown_table, write_json

HERE = os.path.dirname(os.path.abspath(__file__))
QUICKSTART_CONFIG = os.path.join(HERE, "..", "experiments", "configs", "quickstart_cu.yaml")
MIN_DISTANCE = 0.5  # Å, the overlap check of both paths (see the docstring)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# ------------------------------------------------------------------ one training run (child process)
def _child(spec: dict) -> dict:
    from mlpjax import data
    from mlpjax.config import load_config
    from mlpjax.training import train

    t0 = time.monotonic()
    import threading

    import jax

    jax.devices()
    baseline = _rss_mb()  # MB after imports and the backend start
    samples, done = [], threading.Event()

    def sample():  # RSS every 0.1 s
        while not done.is_set():
            samples.append(_rss_mb())
            done.wait(0.1)

    threading.Thread(target=sample, daemon=True).start()
    train_peak = [0.0]

    def at_epoch_end(info):  # the training loop's last event comes before the final metrics and the parity plot
        if info["event"] in ("epoch", "partial_epoch"):
            train_peak[0] = max(samples + [_rss_mb()])

    cfg = load_config(QUICKSTART_CONFIG).replace(epochs=spec["epochs"], eval_every=spec["epochs"], valid_fraction=0.05,
                                                 test_fraction=0.0, max_time_minutes=spec.get("max_time"),
                                                 patience=None)
    if spec["mode"] == "memory":
        configs = data.read(spec["xyz"], min_distance=MIN_DISTANCE)
        t_read = time.monotonic() - t0
        result = train(cfg, configs, output_dir=spec["out"], progress=False, callbacks=[at_epoch_end])
    else:
        t_read = 0.0
        result = train(cfg.replace(train_file=spec["h5"]), output_dir=spec["out"], progress=False,
                       callbacks=[at_epoch_end])
    done.set()
    hist = [h for h in result.history if h.get("epoch_fraction", 1.0) >= 1.0]
    steady = [h["epoch_time_s"] for h in hist[1:-1]]
    n_train = len(result.potential.metadata["split"]["train"])
    first = result.history[0] if result.history else None
    return {
        "mode": spec["mode"], "n_structures": result.potential.metadata["split"]["n"], "n_train": n_train,
        "epochs": len(hist), "epoch_times_s": [h["epoch_time_s"] for h in result.history], "read_s": t_read,
        "structures_per_s": n_train / statistics.median(steady) if steady else None, "steps": result.steps,
        "wall_s": time.monotonic() - t0, "stop_reason": result.stop_reason,
        # s before epoch 1 inside train(): graphs (in memory) or the statistics pass (streamed), init
        "setup_s": first["time_s"] - first["epoch_time_s"] if first else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "baseline_rss_mb": baseline,
        "train_peak_rss_mb": train_peak[0] or None,  # MB, sampled up to the end of the training loop (None: no step)
    }


def _run_child(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)], capture_output=True,
                          text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec['mode']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _num(x, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def _mb(x) -> str:
    return "n/a" if x is None else f"{x:.0f} MB"


def _s(x) -> str:
    return "n/a" if x is None else f"{x:.1f} s"


# ------------------------------------------------------------------ data
def _write_data(path: str, frames, n: int) -> None:
    """extxyz of ``n`` structures: ``frames`` repeated in order (written in blocks)."""
    import ase.io

    with open(path, "w") as f:
        for start in range(0, n, 1000):
            ase.io.write(f, [frames[i % len(frames)].to_atoms() for i in range(start, min(start + 1000, n))],
                         format="extxyz")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller: N 500, M 1,200, 1 repeat, no in-memory 5M (~3 min)")
    p.add_argument("--structures", type=int, help="N of the throughput runs (default 1,500; quick 500)")
    p.add_argument("--epochs", type=int, help="epochs of the throughput runs (default 4; quick 3)")
    p.add_argument("--memory-structures", type=int, help="M of the memory runs (default 5,000; quick 1,200)")
    p.add_argument("--factor", type=int, default=5, help="the large memory runs have factor × M structures (default 5)")
    p.add_argument("--distinct", type=int, help="distinct EMT frames (default 500; quick 200)")
    p.add_argument("--repeats", type=int, help="in-memory/streamed pairs of throughput runs (default 1)")
    p.add_argument("--workdir", help="keep the data files here (default: a temporary directory)")
    p.add_argument("--no-record", action="store_true", help="print only: no JSON, no RESULTS.md section")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return 0
    n = args.structures or (500 if args.quick else 1500)
    epochs = args.epochs or (3 if args.quick else 4)
    m = args.memory_structures or (1200 if args.quick else 5000)
    big = args.factor * m
    distinct = args.distinct or (200 if args.quick else 500)
    repeats = args.repeats or 1
    cut = 0.25 if args.quick else 0.75  # min, the memory runs' max_time_minutes
    t_start = time.monotonic()

    from mlpjax.data import emt_cu, pack_dataset
    from mlpjax.training.streaming import PREFETCH_BATCHES

    work = args.workdir or tempfile.mkdtemp(prefix="mlpjax_streaming_")
    os.makedirs(work, exist_ok=True)
    t0 = time.monotonic()
    frames = emt_cu(temperatures_K=(), repeats=(2,), md_frames_per_run=0, n_rattled=distinct - distinct // 2,
                    n_strained=distinct // 2, liquid_temperatures_K=(), liquid_frames_per_run=0, seed=0)
    t_gen = time.monotonic() - t0
    files = {}
    for size in sorted({n, m, big}):
        xyz, h5 = os.path.join(work, f"cu_{size}.xyz"), os.path.join(work, f"cu_{size}.h5")
        _write_data(xyz, frames, size)
        t0 = time.monotonic()
        pack_dataset(xyz, h5, cutoffs=[4.5], min_distance=MIN_DISTANCE)
        files[size] = {"xyz": xyz, "h5": h5, "pack_s": time.monotonic() - t0, "xyz_mb": os.path.getsize(xyz) / 1e6,
                       "h5_mb": os.path.getsize(h5) / 1e6}
        print(f"data: {size} structures, {files[size]['xyz_mb']:.0f} MB extxyz, packed in {files[size]['pack_s']:.0f} s "
              f"({files[size]['h5_mb']:.0f} MB)", flush=True)

    def run(mode, size, **kw):
        res = _run_child({"mode": mode, "xyz": files[size]["xyz"], "h5": files[size]["h5"],
                          "out": os.path.join(work, f"run_{mode}_{size}_{len(log)}"), **kw})
        log.append(res)
        sps = f"{res['structures_per_s']:.0f} structures/s, " if res["structures_per_s"] else ""
        print(f"  {mode:6s} {size:6d}: {sps}peak RSS {res['peak_rss_mb']:.0f} MB (training {_mb(res['train_peak_rss_mb'])}), "
              f"setup {_s(res['setup_s'])}, {res['steps']} steps, {res['wall_s']:.0f} s", flush=True)
        return res

    log: list = []
    runs = {"memory": [], "stream": []}
    for r in range(repeats):  # alternated, so the shared machine's load touches both alike
        for mode in ("memory", "stream") if r % 2 == 0 else ("stream", "memory"):
            runs[mode].append(run(mode, n, epochs=epochs))
    mem = {("memory", m): run("memory", m, epochs=1, max_time=cut), ("stream", m): run("stream", m, epochs=1, max_time=cut),
           ("stream", big): run("stream", big, epochs=1, max_time=cut)}
    if not args.quick:
        mem[("memory", big)] = run("memory", big, epochs=1, max_time=cut)

    mem_sps = statistics.median(r["structures_per_s"] for r in runs["memory"])
    str_sps = statistics.median(r["structures_per_s"] for r in runs["stream"])
    budget = mem[("memory", m)]["peak_rss_mb"]
    streamed_big = mem[("stream", big)]["peak_rss_mb"]
    tp = {k: r["train_peak_rss_mb"] for k, r in mem.items()}
    known = all(tp[k] is not None for k in (("memory", m), ("stream", m), ("stream", big)))  # None: stopped before a step
    data_kb = (tp[("memory", m)] - tp[("stream", m)]) * 1024.0 / m if known else None  # kB per structure in memory
    growth_mb = tp[("stream", big)] - tp[("stream", m)] if known else None  # MB for (factor - 1) M more, streamed
    t1 = markdown_table(
        ["path", "structures", "epochs", "training structures/s", "ratio", "setup in train() (s)"],
        [["in memory", n, epochs, f"{mem_sps:.0f}", "1.00", f"{statistics.median(r['setup_s'] for r in runs['memory']):.1f}"],
         ["streamed (.h5)", n, epochs, f"{str_sps:.0f}", f"{str_sps / mem_sps:.2f}",
          f"{statistics.median(r['setup_s'] for r in runs['stream']):.1f}"]])
    t2 = markdown_table(
        ["path", "structures", "peak RSS (MB)", "training peak RSS (MB)", "setup in train() (s)",
         "steps before the time limit"],
        [[("in memory" if mode == "memory" else "streamed (.h5)"), size, f"{res['peak_rss_mb']:.0f}",
          _num(res["train_peak_rss_mb"], ".0f"), _num(res["setup_s"], ".1f"), res["steps"]]
         for (mode, size), res in mem.items()])
    print(t1)
    print(t2)
    verdict = (f"the {big}-structure packed set ({args.factor}× M) trained at {streamed_big:.0f} MB peak RSS, "
               f"{'under' if streamed_big <= budget else 'OVER'} the {budget:.0f} MB the in-memory path needs for "
               f"M = {m}" + (f" (training peaks: {tp[('stream', big)]:.0f} vs {tp[('memory', m)]:.0f} MB); the data cost "
                             f"the in-memory path ≈ {data_kb:.0f} kB per 32-atom structure, {args.factor - 1}M more "
                             f"structures cost the streamed path {growth_mb:+.0f} MB of training peak" if known else
                             " (a run stopped before its first step: no training peak; raise max_time)"))
    print(verdict)
    if args.no_record:
        print(f"total {time.monotonic() - t_start:.0f} s; data in {work} (not recorded)")
        return 0
    write_json("streaming.json", {
        "environment": environment(), "structures": n, "epochs": epochs, "memory_structures": m, "big": big,
        "distinct_frames": distinct, "repeats": repeats, "max_time_minutes_memory_runs": cut, "files": files,
        "throughput_runs": runs, "memory_runs": {f"{mode}_{size}": res for (mode, size), res in mem.items()},
        "structures_per_s_memory": mem_sps, "structures_per_s_stream": str_sps, "ratio": str_sps / mem_sps,
        "budget_rss_mb": budget, "stream_big_rss_mb": streamed_big, "in_memory_kb_per_structure": data_kb,
        "stream_growth_mb": growth_mb, "wall_s": time.monotonic() - t_start})
    body = (
        f"`python benchmarks/streaming.py{' --quick' if args.quick else ''}` (method in its docstring): quickstart "
        f"SchNet (32 features, 2 interactions, 4.5 Å, batch 4, float32) on 32-atom EMT Cu cells ({distinct} distinct "
        f"frames repeated), fresh processes, the other core of the machine possibly busy.\n\n"
        f"Throughput ({repeats} alternated pair(s)):\n\n{t1}\n\n"
        f"Memory (runs cut by max_time {cut:g} min inside epoch 1):\n\n{t2}\n\n"
        f"Streamed / in-memory training throughput: **{str_sps / mem_sps:.2f}** ({str_sps:.0f} vs {mem_sps:.0f} "
        f"structures/s; on 2 CPU cores the prefetch thread's neighbour lists take CPU from the XLA step). Memory: "
        f"{verdict}. Packing ({big} structures): {files[big]['xyz_mb']:.0f} MB extxyz → {files[big]['h5_mb']:.0f} MB "
        f"HDF5 in {files[big]['pack_s']:.0f} s (float64, gzip, neighbour counts at 4.5 Å; overlap check at "
        f"{MIN_DISTANCE} Å in both paths, see the docstring); {PREFETCH_BATCHES} batches prefetched.\n"
    )
    append_results("Streaming from a packed HDF5 file vs in-memory training", body)
    print(f"total {time.monotonic() - t_start:.0f} s; data in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
