"""One benchmark runner: accuracy, speed beside the peer implementations, scaling and the
fraction of the machine's peak, as suites of the existing benchmark code.

    python -m benchmarks.run --suite all --quick     # every case, reduced sizes: <= 20 min on 2 CPU cores
    python -m benchmarks.run --suite speed           # full sizes (64 / 512 / 4,096 atoms)
    python -m benchmarks.run --suite scaling --gpu   # on a GPU (stops at once when JAX sees none)
    python -m benchmarks.run --list                  # the cases of each suite
    python -m benchmarks.run --cases flops,npt_vs_nvt --quick --no-record

Each case calls the code of the benchmark script it names (``model_speed``, ``md_throughput``,
``accuracy``; imported, not copied) and returns one table. The run prints each table as it
finishes, writes ``benchmarks/results/run_<suite>[_quick]_<date-time>.json`` (machine, load
average, versions, git commit, every number) and its plot (``benchmarks/plot.py``), and appends
one dated section with all tables to ``benchmarks/RESULTS.md``. A case that fails is recorded
as one line (which case, the error) and the others go on. Ratios are always "mlpjax time / other
time" from the same run on the same machine (< 1: mlpjax is faster).

Cases (suite: name — what, how)
* speed: ``peers`` — energy + forces per call of MACE (64x0e + 64x1o, l_max 3, ν = 3, 2 layers,
  8 Bessel, radial MLP 64x3, readout 16) and NequIP (32 channels, l_max 2, 4 layers, 0e+1o+2e) on
  fcc Cu of 64, 512 and 4,096 atoms (quick: 64, 512), cutoff 5 Å, float32, untrained parameters
  (``model_speed.BENCH_CONFIGS``, ``model_speed.structure_batch``): mlpjax in this process
  (``jax.jit`` of ``Potential.predict`` without stress, AOT-compiled, median after the first call);
  InstaDeep's mlip (JAX, same MACE and NequIP hyperparameters; ``peers/mlip_speed.py``) and
  mace-torch (MACE only; ``peers/mace_torch_speed.py``) each in its own venv made by
  ``peers/setup.sh`` under ``$MLPJAX_PEERS`` (default ``~/.cache/mlpjax-peers``), never in
  mlpjax's environment. First-call time (compilation included), XLA's temporary buffer size of
  the compiled call (JAX codes) and the peer process's peak RSS. A peer that is not installed or
  does not import is one line in the table and the run goes on.
* speed: ``md_peers`` — NVE MD steps/s of the MACE above on 512 Cu atoms (quick: 256) in jax-md: mlpjax's
  ``mlpjax.md.simulate`` against mlip's ``JaxMDSimulationEngine`` (2 fs, 300 K start, median chunk
  after the first; each code with its own neighbour-list settings: mlpjax 0.5 Å skin, mlip no
  skin, rebuilt every step without a cell list).
* speed: ``md_vs_ase`` — one potential (``md_throughput``'s SchNet 32 features × 2, 5 Å) in
  mlpjax's jax-md loop (``md_throughput.bench_schnet``) against ASE's ``VelocityVerlet`` driving
  ``mlpjax.calculator.MLPJaxCalculator``, 500 and 4,000 Cu atoms (quick: 500).
* speed: ``npt_vs_nvt`` — per-step cost of NVE, Langevin NVT, Nosé–Hoover NVT and MTK NPT for the
  same SchNet on 864 Cu atoms (21.7 Å box: no image supercell, checked), ratio to NVT.
* speed: ``flops`` — the physical limit: FLOPs of one energy + forces call from XLA's cost analysis
  (``jax.jit(f).lower(...).compile().cost_analysis()``) per atom, achieved FLOP/s at the measured
  time, over the measured peak of this machine (best of repeated large float32 matmuls).
* scaling: ``md_scaling`` — MD atom-steps/s of the SchNet against N (quick: 256 … 4,000 atoms;
  full: 256 … 32,000), ``md_throughput.bench_schnet``.
* scaling: ``train_scaling`` — training structures/s against batch size (SchNet of
  ``model_speed``, 32-atom Cu cells, ``mlpjax.training.make_step_fns`` as in ``model_speed``).
* accuracy: ``accuracy`` — ``accuracy._load`` / ``accuracy._run_one`` on the EMT Cu set, the same
  wall-clock budget per model (quick: Morse and SchNet, 1 min each; full: every registered model,
  3 min each).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PEERS_DIR_DEFAULT = Path(os.environ.get("MLPJAX_PEERS", Path.home() / ".cache" / "mlpjax-peers"))
SUITES = ("speed", "scaling", "accuracy")  # the order "all" runs them in
if str(BENCH_DIR) not in sys.path:  # the scripts import each other as top-level modules (`from _common import ...`)
    sys.path.insert(0, str(BENCH_DIR))

from _common import append_results, device_description, markdown_table, write_json  # noqa: E402


# ----------------------------------------------------------------------------- options and cases
@dataclasses.dataclass(frozen=True)
class Options:
    quick: bool = False
    gpu: bool = False
    peers_dir: Path = PEERS_DIR_DEFAULT
    peer_timeout_s: float = 1800.0


@dataclasses.dataclass
class CaseResult:
    """One table: ``headers``/``rows`` for RESULTS.md, ``notes`` printed under it, ``headline``
    the one-line ratios for the run's summary, ``data`` everything measured (JSON)."""

    headers: list
    rows: list
    notes: list = dataclasses.field(default_factory=list)
    headline: list = dataclasses.field(default_factory=list)
    data: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    suite: str
    title: str
    fn: Callable[[Options], CaseResult]


CASES: dict[str, Case] = {}


def _case(name: str, suite: str, title: str):
    def register(fn):
        CASES[name] = Case(name, suite, title, fn)
        return fn

    return register


def cases_for(suite: str, names: list[str] | None = None) -> list[Case]:
    """The cases of ``suite`` ("all" or one of SUITES) in run order, optionally only ``names``."""
    if suite != "all" and suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}: use all, {', '.join(SUITES)}")
    chosen = [c for s in (SUITES if suite == "all" else (suite,)) for c in CASES.values() if c.suite == s]
    if names:
        unknown = sorted(set(names) - set(CASES))
        if unknown:
            raise ValueError(f"unknown case(s) {', '.join(unknown)}: known {', '.join(CASES)}")
        chosen = [CASES[n] for n in CASES if n in names]
    return chosen


# ----------------------------------------------------------------------------- timing helpers
def _block(x):
    import jax

    return jax.block_until_ready(x)


def median_time(fn, reps: int) -> float:
    """Median wall time (s) of ``fn()`` over ``reps`` calls, each waited for."""
    import numpy as np

    times = []
    for _ in range(max(1, reps)):
        t = time.perf_counter()
        _block(fn())
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def xla_flops(compiled) -> float:
    """FLOPs of one call of an AOT-compiled function from XLA's cost analysis (nan if absent)."""
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):  # older jax: one dict per computation
        ca = ca[0] if ca else {}
    return float((ca or {}).get("flops", float("nan")))


def xla_temp_mb(compiled) -> float:
    try:
        return compiled.memory_analysis().temp_size_in_bytes / 2**20
    except Exception:  # not every backend reports it
        return float("nan")


def flop_fraction(fn, *args, peak_flops_per_s: float, reps: int = 3) -> dict:
    """Compile ``fn(*args)``, read its FLOPs from XLA's cost analysis, time it (median of
    ``reps`` after one call) and return the FLOP rate reached and its fraction of the peak."""
    import jax

    t = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    _block(compiled(*args))
    compile_s = time.perf_counter() - t
    flops = xla_flops(compiled)
    dt = median_time(lambda: compiled(*args), reps)
    rate = flops / dt
    return {"flops": flops, "time_s": dt, "compile_s": compile_s, "flops_per_s": rate,
            "peak_flops_per_s": peak_flops_per_s, "fraction_of_peak": rate / peak_flops_per_s}


def measured_peak_flops(n: int = 2048, reps: int = 5) -> dict:
    """This machine's float32 matmul rate: 2 n³ / (fastest of ``reps`` n × n @ n × n products)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    compiled = jax.jit(jnp.matmul).lower(a, b).compile()
    _block(compiled(a, b))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        _block(compiled(a, b))
        times.append(time.perf_counter() - t)
    flops = 2.0 * n**3
    return {"n": n, "flops": flops, "best_s": min(times), "median_s": float(np.median(times)),
            "peak_flops_per_s": flops / min(times), "median_flops_per_s": flops / float(np.median(times)),
            "xla_flops": xla_flops(compiled)}


# ----------------------------------------------------------------------------- machine, versions, git
def _load_average() -> list:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return float("nan")


def _git() -> dict:
    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD"), "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty_paths": [ln[3:] for ln in git("status", "--porcelain", "--", "mlpjax", "benchmarks").splitlines()]}


def machine_and_versions() -> dict:
    import importlib.metadata as md

    import jax

    def version(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    devices = jax.devices()
    return {
        "device": device_description(),
        "platform": devices[0].platform,
        "device_kinds": sorted({d.device_kind for d in devices}),
        "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_GB": _memory_gb(), "hostname": platform.node(), "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: version(p) for p in ("mlpjax", "jax", "jaxlib", "jax-md", "flax", "optax", "e3nn-jax", "numpy", "ase", "vesin")},
        "git": _git(),
    }


# ----------------------------------------------------------------------------- peers
def peer_python(opts: Options, peer: str) -> Path:
    return Path(opts.peers_dir) / peer / "bin" / "python"


def run_peer_worker(opts: Options, peer: str, script: str, spec: dict, workdir: str) -> tuple[dict | None, str | None]:
    """Run ``benchmarks/peers/<script>`` with ``peer``'s venv python on ``spec``: (its JSON, None)
    or (None, one line saying why not)."""
    py = peer_python(opts, peer)
    if not py.exists():
        return None, f"not installed: {py} is missing (run `bash benchmarks/peers/setup.sh {peer}`)"
    spec_path = os.path.join(workdir, f"{peer}_{script.split('.')[0]}_spec.json")
    with open(spec_path, "w") as fh:
        json.dump(spec, fh)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    print(f"  [{peer}] {py} benchmarks/peers/{script} ...", flush=True)
    try:
        proc = subprocess.run([str(py), str(BENCH_DIR / "peers" / script), spec_path], capture_output=True, text=True,
                              timeout=opts.peer_timeout_s, env=env, cwd=workdir)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {opts.peer_timeout_s:.0f} s"
    for line in proc.stderr.splitlines():
        if line.startswith(f"  {peer}"):  # the worker's own progress lines (not warnings' source lines)
            print(f"  [{peer}]{line}", flush=True)
    if proc.returncode != 0:
        tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return None, f"worker failed (exit {proc.returncode}): {tail[-1][:200] if tail else 'no output'}"
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1]), None
    except (IndexError, json.JSONDecodeError):
        return None, f"worker printed no JSON (stdout: {proc.stdout[-200:]!r})"


def _peer_device_ok(opts: Options, device: str | None) -> bool:
    """Under --gpu a peer that ran on the CPU is not comparable."""
    return not opts.gpu or (device is not None and "cpu" not in str(device).lower())


# ----------------------------------------------------------------------------- mlpjax's side
_POTENTIALS: dict = {}
_INFERENCE: dict = {}


def _model_speed():
    import model_speed

    return model_speed


def speed_reps(n: int, quick: bool) -> int:
    """Timed calls per size, the same for mlpjax and every peer: model_speed's, at most 4 when quick."""
    reps = _model_speed()._reps(n, quick)
    return min(reps, 4) if quick else reps


def mlpjax_potential(model: str):
    if model not in _POTENTIALS:
        _POTENTIALS[model] = _model_speed().make_potential(model)
    return _POTENTIALS[model]


def ef_call(pot, n: int, quick: bool, dtype=None) -> dict:
    """Compiled energy + forces of ``pot`` on ``model_speed``'s ``n``-atom cell: first call s,
    median call s, the outputs (float64 numpy) for accuracy comparisons, and the compiled call,
    graph and batch (for XLA's cost analysis)."""
    import jax
    import numpy as np

    _atoms, graph, batch = _model_speed().structure_batch(pot, n, dtype)
    fn = jax.jit(lambda p, b: pot.predict(p, b, compute_stress=False))
    t = time.perf_counter()
    compiled = fn.lower(pot.params, batch).compile()
    out = _block(compiled(pot.params, batch))
    first = time.perf_counter() - t
    return {"compile_s": first, "inference_s": median_time(lambda: compiled(pot.params, batch), speed_reps(n, quick)),
            "energy": float(np.asarray(out.energy, np.float64)[0]),
            "forces": np.asarray(out.forces, np.float64)[np.asarray(batch.node_mask)],
            "compiled": compiled, "graph": graph, "batch": batch}


def mlpjax_inference(model: str, n: int, quick: bool) -> dict:
    """Energy + forces (no stress) of ``model_speed``'s ``model`` on its ``n``-atom cell: first
    call (compilation included), median call, XLA's FLOPs and temporary buffer size. Cached per
    run (the ``flops`` case reuses the ``peers`` case's measurement)."""
    import jax
    import numpy as np

    key = (model, n, quick)
    if key in _INFERENCE:
        return _INFERENCE[key]
    pot, cfg = mlpjax_potential(model)
    r = ef_call(pot, n, quick)
    compiled, graph, batch = r["compiled"], r["graph"], r["batch"]
    row = {"n_atoms": n, "n_edges": int(graph.n_edges), "padded_edges": int(batch.senders.shape[0]),
           "compile_s": r["compile_s"], "inference_s": r["inference_s"],
           "flops": xla_flops(compiled), "xla_temp_MB": xla_temp_mb(compiled),
           "n_params": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(pot.params)))}
    print(f"  [mlpjax] {model} N={n}: {row['inference_s'] * 1e3:.1f} ms (first call {row['compile_s']:.1f} s)", flush=True)
    _INFERENCE[key] = row
    return row


def _config_dict(cfg) -> dict:
    return {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}


def _fmt_ms(s) -> str:
    return "—" if s is None else f"{s * 1e3:.4g}"


def _ratio(a, b):
    return None if a is None or b is None or not b else a / b


def _fmt_ratio(r) -> str:
    return "—" if r is None else f"{r:.3g}"


# ----------------------------------------------------------------------------- speed suite
PEER_MODELS = ("mace", "nequip")


def _speed_sizes(opts: Options) -> list[int]:
    return [64, 512] if opts.quick else [64, 512, 4096]


@_case("peers", "speed", "Energy + forces per call: mlpjax vs mlip (JAX) vs mace-torch")
def case_peers(opts: Options) -> CaseResult:
    ms = _model_speed()
    sizes = _speed_sizes(opts)
    reps = [speed_reps(n, opts.quick) for n in sizes]
    ours = {}
    for model in PEER_MODELS:
        ours[model] = {}
        for n in sizes:
            try:
                ours[model][n] = mlpjax_inference(model, n, opts.quick)
            except Exception as err:  # e.g. out of memory at 4,096 atoms
                ours[model][n] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"}
    configs = {m: _config_dict(mlpjax_potential(m)[1]) for m in PEER_MODELS}
    with tempfile.TemporaryDirectory(prefix="mlpjax_peers_") as tmp:
        paths = ms.write_structures(tmp, sizes)
        mlip, mlip_why = run_peer_worker(opts, "mlip", "mlip_speed.py", {
            "models": configs, "cutoff": ms.CUTOFF, "structures": paths, "reps": reps, "avg_num_neighbors": 54.0}, tmp)
        torch_out, torch_why = run_peer_worker(opts, "mace-torch", "mace_torch_speed.py", {
            "config": configs["mace"], "cutoff": ms.CUTOFF, "structures": paths, "reps": reps, "avg_num_neighbors": 54.0,
            "device": "cuda" if opts.gpu else "cpu"}, tmp)
    notes, headline = [], []
    if mlip is not None and not _peer_device_ok(opts, mlip.get("device")):
        mlip_why, mlip = f"ran on {mlip.get('device')} while mlpjax ran on the GPU: not comparable", None
    if torch_out is not None and not _peer_device_ok(opts, torch_out.get("device")):
        torch_why, torch_out = f"ran on {torch_out.get('device')} while mlpjax ran on the GPU: not comparable", None
    rows = []
    for model in PEER_MODELS:
        mm = (mlip or {}).get("models", {}).get(model, {})
        mlip_sizes = {s["n_atoms"]: s for s in mm.get("sizes", [])}
        torch_sizes = {s["n_atoms"]: s for s in (torch_out or {}).get("sizes", [])} if model == "mace" else {}
        for n in sizes:
            mine = ours[model][n]
            if "error" in mine:
                rows.append([model, n, "—", mine["error"][:60], "", "", "", "", "", "", ""])
                continue
            p, q = mlip_sizes.get(n), torch_sizes.get(n)
            if p and "error" in p:  # the peer failed at this size only (e.g. out of memory)
                notes.append(f"mlip {model} {n} atoms: {p['error']}")
                p = None
            if q and "error" in q:
                notes.append(f"mace-torch {n} atoms: {q['error']}")
                q = None
            r_mlip = _ratio(mine["inference_s"], p["inference_s"] if p else None)
            r_torch = _ratio(mine["inference_s"], q["inference_s"] if q else None)
            rows.append([model, n, mine["n_edges"], _fmt_ms(mine["inference_s"]), _fmt_ms(p["inference_s"] if p else None),
                         _fmt_ratio(r_mlip), _fmt_ms(q["inference_s"] if q else None) if model == "mace" else "n/a",
                         _fmt_ratio(r_torch) if model == "mace" else "n/a",
                         f"{mine['compile_s']:.3g} / {p['compile_s']:.3g}" if p else f"{mine['compile_s']:.3g} / —",
                         f"{q['compile_s']:.3g}" if q else ("—" if model == "mace" else "n/a"),
                         f"{mine['xla_temp_MB']:.4g} / {p['xla_temp_MB']:.4g}" if p else f"{mine['xla_temp_MB']:.4g} / —"])
            if r_mlip is not None:
                headline.append(f"{model} {n} atoms: mlpjax/mlip {r_mlip:.2f}")
            if r_torch is not None:
                headline.append(f"{model} {n} atoms: mlpjax/mace-torch {r_torch:.2f}")
        if mm.get("error"):
            notes.append(f"mlip {model}: failed: {mm['error']}")
    for peer, why in (("mlip", mlip_why), ("mace-torch", torch_why)):
        if why:  # the table itself says which peer is missing and why, in one row
            rows.append([f"({peer})", "—", "—", "—", f"not measured: {why}" if peer == "mlip" else "—", "—",
                         f"not measured: {why}" if peer == "mace-torch" else "—", "—", "—", "—", "—"])
    if mlip_why:
        notes.append(f"**mlip: not measured — {mlip_why}**")
    else:
        notes.append(f"mlip {mlip['version']} (jax {mlip['jax']}, {mlip['device']}), params MACE "
                     f"{mlip['models'].get('mace', {}).get('n_params', '?')} / NequIP {mlip['models'].get('nequip', {}).get('n_params', '?')}"
                     f", peak RSS of its process {mlip['peak_rss_MB']:.0f} MB")
    if torch_why:
        notes.append(f"**mace-torch: not measured — {torch_why}**")
    else:
        notes.append(f"mace-torch {torch_out['version']} (torch {torch_out['torch']}, {torch_out['threads']} threads, "
                     f"{torch_out.get('device', 'cpu')}), params {torch_out.get('n_params', '?')}, hidden {torch_out['hidden_irreps']}, "
                     f"peak RSS of its process {torch_out.get('peak_rss_MB', float('nan')):.0f} MB")
    notes.append("mlpjax params: " + ", ".join(f"{m} {ours[m][sizes[0]].get('n_params', '?')}" for m in PEER_MODELS)
                 + f"; configs {configs}")
    return CaseResult(
        headers=["model", "N atoms", "edges", "mlpjax ms", "mlip ms", "mlpjax/mlip", "mace-torch ms", "mlpjax/mace-torch",
                 "first call s mlpjax / mlip", "first call s mace-torch", "XLA temp MB mlpjax / mlip"],
        rows=rows, notes=notes, headline=headline,
        data={"sizes": sizes, "reps": reps, "configs": configs, "mlpjax": {m: {str(n): v for n, v in d.items()} for m, d in ours.items()},
              "mlip": mlip, "mlip_missing": mlip_why, "mace_torch": torch_out, "mace_torch_missing": torch_why})


@_case("mace_backends", "speed", "MACE kernels: e3nn-jax vs cuequivariance (same parameters)")
def case_mace_backends(opts: Options) -> CaseResult:
    import dataclasses as dc

    import numpy as np

    from mlpjax.models import cue

    if not cue.available():
        why = "cuequivariance-jax is not installed (pip install -e '.[cuequivariance]')"
        return CaseResult(headers=["N atoms", "note"], rows=[["—", f"not measured: {why}"]], notes=[why])
    method = cue.method()
    # the pure-JAX method is the equality check, not a speed path: on CPU one small size
    sizes = _speed_sizes(opts) if method != "naive" else [64]
    pot, _cfg = mlpjax_potential("mace")
    rows, data, headline = [], [], []
    for n in sizes:
        r = {}
        for backend in ("e3nn", "cuequivariance"):
            p = pot.replace(model_config=dc.replace(pot.model_config, backend=backend))
            try:
                r[backend] = ef_call(p, n, opts.quick)
            except Exception as err:  # e.g. out of memory
                r[backend] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"}
        a, b = r["e3nn"], r["cuequivariance"]
        if "error" in a or "error" in b:
            rows.append([n, a.get("error", _fmt_ms(a.get("inference_s"))), b.get("error", _fmt_ms(b.get("inference_s"))),
                         "—", "—", "—", method])
            data.append({"n_atoms": n, "error": [a.get("error"), b.get("error")]})
            continue
        d_e = abs(a["energy"] - b["energy"]) / n
        d_f = float(np.max(np.abs(a["forces"] - b["forces"])))
        ratio = b["inference_s"] / a["inference_s"]
        rows.append([n, _fmt_ms(a["inference_s"]), _fmt_ms(b["inference_s"]), _fmt_ratio(ratio),
                     f"{a['compile_s']:.3g} / {b['compile_s']:.3g}", f"{d_e:.2g} / {d_f:.2g}", method])
        data.append({"n_atoms": n, "e3nn_s": a["inference_s"], "cue_s": b["inference_s"], "cue_over_e3nn": ratio,
                     "compile_s": [a["compile_s"], b["compile_s"]], "max_dE_eV_per_atom": d_e, "max_dF_eV_per_A": d_f})
        headline.append(f"MACE {n} atoms: cuequivariance ({method}) / e3nn {ratio:.2f}")
    return CaseResult(
        headers=["N atoms", "e3nn ms", "cuequivariance ms", "cue/e3nn", "first call s e3nn / cue",
                 "max |ΔE| eV/atom / max |ΔF| eV/Å", "cue method"],
        rows=rows, headline=headline, data={"method": method, "results": data, "config": _config_dict(pot.model_config)},
        notes=["Same model and parameters (`MACEConfig.backend` only picks the kernels: mlpjax.models.cue builds "
               "cuequivariance's segmented polynomials from mlpjax's own bases). `naive` is cuequivariance's pure-JAX "
               "method (no GPU or no cuequivariance-ops-jax): it checks the numbers, its time is not the kernels'; "
               "`uniform_1d` is the CUDA kernel."])


PRECISIONS = ("highest", "tensorfloat32", "bfloat16")  # jax.default_matmul_precision values, float32 data
PRECISION_ATOMS = 512


@_case("precision", "speed", "float32 matmul precision on the GPU: full float32 vs TF32 vs bf16 (accuracy cost)")
def case_precision(opts: Options) -> CaseResult:
    """Energy + forces with float32 parameters and data under each matmul precision, against the
    same call in float64 (the accuracy cost), MACE and SchNet. GPU only: XLA's CPU backend
    computes float32 dots in float32 whatever the precision asks."""
    import jax
    import numpy as np

    if not opts.gpu:
        why = "GPU only (run with --gpu): on CPU every precision runs the same float32 dots"
        return CaseResult(headers=["model", "note"], rows=[["—", why]], notes=[why])
    n = PRECISION_ATOMS
    rows, data, headline = [], {}, []
    for model in ("mace", "schnet"):
        pot, _cfg = mlpjax_potential(model)
        with jax.enable_x64(True):
            f64 = pot.replace(params=jax.tree_util.tree_map(lambda x: jax.numpy.asarray(x, np.float64), pot.params))
            ref = ef_call(f64, n, True, np.float64)
        data[model] = {"float64_s": ref["inference_s"]}
        base_s = None
        for prec in PRECISIONS:
            with jax.default_matmul_precision(prec):
                r = ef_call(pot, n, opts.quick)
            base_s = base_s or r["inference_s"]
            d_e = abs(r["energy"] - ref["energy"]) / n * 1e3
            d_f = float(np.sqrt(np.mean((r["forces"] - ref["forces"]) ** 2))) * 1e3
            f_rms = float(np.sqrt(np.mean(ref["forces"] ** 2))) * 1e3
            data[model][prec] = {"inference_s": r["inference_s"], "dE_meV_per_atom": d_e, "dF_rms_meV_per_A": d_f,
                                 "F_rms_meV_per_A": f_rms}
            rows.append([model, prec, _fmt_ms(r["inference_s"]), _fmt_ratio(r["inference_s"] / base_s),
                         f"{d_e:.3g}", f"{d_f:.3g}", f"{f_rms:.3g}", f"{d_f / f_rms:.2g}"])
            if prec != "highest":
                headline.append(f"{model} {n} atoms {prec}: {r['inference_s'] / base_s:.2f}x the float32 time, "
                                f"|dF| rms {d_f:.2g} meV/Å")
    return CaseResult(headers=["model", "matmul precision", "E+F ms", "time / full float32", "|ΔE| meV/atom vs float64",
                               "ΔF rms meV/Å vs float64", "F rms meV/Å", "ΔF / F (rms)"],
                      rows=rows, headline=headline, data={"n_atoms": n, "models": data},
                      notes=[f"Untrained potentials at the speed suite's sizes (model_speed.BENCH_CONFIGS), {n} Cu atoms: the "
                             "error columns show the arithmetic's cost; a trained model's force error (tens of meV/Å) is "
                             "the scale to hold them against."])


@_case("md_peers", "speed", "MD steps/s in jax-md: mlpjax vs mlip (MACE, NVE)")
def case_md_peers(opts: Options) -> CaseResult:
    import md_throughput as mt
    from ase.io import write

    from mlpjax.md import MDConfig, simulate

    ms = _model_speed()
    model, n = "mace", (256 if opts.quick else 512)
    chunk, chunks = (3, 3) if opts.quick else (10, 3)
    pot, cfg = mlpjax_potential(model)
    atoms = mt.cu_supercell(n) if n == 256 else ms._structure(n)  # 4x4x4 cubic cells: 14.4 Å, the smallest both codes take
    t = time.perf_counter()
    res = simulate(pot, atoms, MDConfig(ensemble="nve", temperature_K=300.0, timestep_fs=2.0, steps=chunk * chunks,
                                        chunk_steps=chunk, log_every=chunk, traj_every=chunk, skin=0.5, seed=0), progress=False)
    ours = {"n_atoms": n, "steps": chunk * chunks, "chunk_steps": chunk, "wall_s": time.perf_counter() - t,
            "setup_s": res.timings["setup_s"], "compile_s": res.timings["compile_s"], "steps_per_s": res.timings["steps_per_s"],
            "neighbor_capacity": res.neighbor_capacity, "T_final_K": float(res.thermo["T_K"][-1])}
    print(f"  [mlpjax] {model} MD N={n}: {ours['steps_per_s']:.3g} steps/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="mlpjax_mdpeers_") as tmp:
        path = os.path.join(tmp, f"cu{n}_md.xyz")
        write(path, atoms)
        mlip, why = run_peer_worker(opts, "mlip", "mlip_speed.py", {
            "models": {model: _config_dict(cfg)}, "cutoff": ms.CUTOFF, "structures": [], "reps": [],
            "avg_num_neighbors": 54.0, "md": {"models": [model], "structure": path, "chunk_steps": chunk, "chunks": chunks,
                                              "timestep_fs": 2.0, "temperature_K": 300.0}}, tmp)
    if mlip is not None and not _peer_device_ok(opts, mlip.get("device")):
        why, mlip = f"ran on {mlip.get('device')} while mlpjax ran on the GPU: not comparable", None
    theirs = (mlip or {}).get("models", {}).get(model, {}).get("md")
    if mlip is not None and theirs is None:
        why = f"MD failed: {(mlip or {}).get('models', {}).get(model, {}).get('error', 'no MD result')}"
    rows = [["mlpjax (mlpjax.md.simulate)", n, f"{ours['steps_per_s']:.3g}", f"{ours['setup_s']:.3g}", f"{ours['compile_s']:.3g}", "1"]]
    headline, notes = [], []
    if theirs:
        ratio = theirs["steps_per_s"] / ours["steps_per_s"]  # time per step mlpjax / mlip
        compile_est = theirs["first_chunk_s"] - chunk / theirs["steps_per_s"]
        rows.append([f"mlip {mlip['version']} (JaxMDSimulationEngine)", n, f"{theirs['steps_per_s']:.3g}", f"{theirs['setup_s']:.3g}",
                     f"{compile_est:.3g}", ""])
        rows[0][-1] = f"{ratio:.3g}"
        headline.append(f"MACE MD {n} atoms: mlpjax/mlip time per step {ratio:.2f}")
        notes.append("last column: time per step mlpjax / mlip. mlip's compile s = its first chunk minus one steady chunk.")
    else:
        rows.append(["mlip", n, "—", "—", "—", "—"])
        notes.append(f"**mlip: not measured — {why}**")
    notes.append(f"mlpjax lists {ours['neighbor_capacity'] / n:.1f} pairs/atom (cutoff + 0.5 Å skin, × capacity head room) and "
                 "every record (one per chunk) evaluates E_pot and the virial pressure (a box gradient) besides the step's "
                 "forces; mlip rebuilds its list every step without skin (jax-md Sparse, no cell list, × 1.25 head room).")
    notes.append(f"{chunks} chunks of {chunk} steps each (the first, with compilation, left out of steps/s), 2 fs, 300 K start.")
    return CaseResult(headers=["code", "N atoms", "steps/s", "setup s", "compile s", "mlpjax/mlip per step"],
                      rows=rows, notes=notes, headline=headline, data={"mlpjax": ours, "mlip": theirs, "mlip_missing": why})


def ase_md(pot, atoms, steps: int, warmup: int = 2, timestep_fs: float = 2.0) -> dict:
    """ASE's VelocityVerlet with mlpjax's ASE calculator: steps/s after ``warmup`` steps (which
    compile the calculator's jitted call)."""
    import numpy as np
    from ase import units
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    from mlpjax.calculator import MLPJaxCalculator

    a = atoms.copy()
    a.calc = MLPJaxCalculator(pot)
    thermalize_momenta(a, temperature_K=300.0, rng=np.random.default_rng(0))  # Maxwell–Boltzmann
    dyn = VelocityVerlet(a, timestep=timestep_fs * units.fs)
    t = time.perf_counter()
    dyn.run(warmup)
    warm_s = time.perf_counter() - t
    t = time.perf_counter()
    dyn.run(steps)
    dt = time.perf_counter() - t
    return {"n_atoms": len(a), "steps": steps, "warmup_s": warm_s, "run_s": dt, "steps_per_s": steps / dt,
            "T_final_K": float(a.get_temperature())}


@_case("md_vs_ase", "speed", "MD: mlpjax's jax-md loop vs ASE VelocityVerlet with the mlpjax calculator (SchNet)")
def case_md_vs_ase(opts: Options) -> CaseResult:
    import md_throughput as mt

    pot = mt.make_potential()
    sizes = [500] if opts.quick else [500, 4000]
    rows, data, headline = [], [], []
    for n in sizes:
        atoms = mt.cu_supercell(n)
        ours = mt.bench_schnet(pot, atoms, 10, 3 if opts.quick else 5)
        theirs = ase_md(pot, atoms, steps=10 if opts.quick else 20)
        ratio = theirs["steps_per_s"] / ours["steps_per_s"]  # time per step mlpjax / ASE
        print(f"  N={n}: jax-md {ours['steps_per_s']:.3g} steps/s, ASE {theirs['steps_per_s']:.3g} steps/s", flush=True)
        rows.append([n, f"{ours['steps_per_s']:.4g}", f"{theirs['steps_per_s']:.4g}", f"{ratio:.3g}", f"{ours['compile_s']:.3g}",
                     f"{theirs['warmup_s']:.3g}"])
        data.append({"n_atoms": n, "mlpjax": ours, "ase": theirs, "time_ratio_mlpjax_over_ase": ratio})
        headline.append(f"SchNet MD {n} atoms: mlpjax.md / ASE time per step {ratio:.2f}")
    return CaseResult(
        headers=["N atoms", "mlpjax.md steps/s", "ASE VelocityVerlet steps/s", "mlpjax/ASE per step", "mlpjax compile s",
                 "ASE first 2 steps s"],
        rows=rows, headline=headline, data={"model": mt.MODEL, "cutoff_A": mt.CUTOFF, "results": data},
        notes=[f"SchNet {mt.MODEL}, cutoff {mt.CUTOFF} Å, float32, NVE 2 fs. mlpjax: chunks of 10 steps, neighbour list "
               f"with {mt.SKIN} Å skin on the device; ASE: host neighbour list (vesin) and one jitted call per step."])


@_case("npt_vs_nvt", "speed", "Per-step cost of the ensembles (SchNet, 864 Cu atoms, no image supercell)")
def case_npt_vs_nvt(opts: Options) -> CaseResult:
    import md_throughput as mt

    from mlpjax.md import MDConfig, simulate

    pot = mt.make_potential()
    atoms = mt.cu_supercell(864)
    chunk, chunks = 10, (6 if opts.quick else 10)  # 5+ measured chunks each: on a shared machine 2 were too few
    out = {}
    for ens in ("nve", "nvt", "nvt_nh", "npt"):
        res = simulate(pot, atoms, MDConfig(ensemble=ens, temperature_K=300.0, timestep_fs=2.0, steps=chunk * chunks,
                                            chunk_steps=chunk, log_every=chunk, traj_every=chunk, skin=mt.SKIN, seed=0),
                       progress=False)
        out[ens] = {"steps_per_s": res.timings["steps_per_s"], "compile_s": res.timings["compile_s"],
                    "image_repeats": list(res.image_repeats), "neighbor_capacity": res.neighbor_capacity,
                    "reallocations": res.n_neighbor_reallocations}
        print(f"  {ens}: {out[ens]['steps_per_s']:.3g} steps/s, image repeats {res.image_repeats}", flush=True)
    base = 1.0 / out["nvt"]["steps_per_s"]
    rows = [[ens, f"{v['steps_per_s']:.4g}", f"{1e3 / v['steps_per_s']:.4g}", f"{(1.0 / v['steps_per_s']) / base:.3g}",
             "×".join(map(str, v["image_repeats"])), v["neighbor_capacity"], f"{v['compile_s']:.3g}"] for ens, v in out.items()]
    ratio = (1.0 / out["npt"]["steps_per_s"]) / base
    return CaseResult(headers=["ensemble", "steps/s", "ms/step", "time per step / NVT (Langevin)", "image supercell",
                               "nbr capacity", "compile s"],
                      rows=rows, headline=[f"NPT/NVT time per step (864 atoms) {ratio:.2f}"],
                      data={"n_atoms": 864, "chunk_steps": chunk, "chunks": chunks, "results": out, "npt_over_nvt": ratio},
                      notes=[f"{chunks} chunks of {chunk} steps, median after the first; 2 fs, 300 K; box 21.7 Å ≥ 1.1 × 2 × "
                             f"(cutoff + skin), so NPT needs no image supercell (column 'image supercell' checks it)."])


@_case("flops", "speed", "Physical limit: model FLOPs from XLA's cost analysis over the machine's measured peak")
def case_flops(opts: Options) -> CaseResult:
    peak = measured_peak_flops(2048 if opts.quick else 4096, 5 if opts.quick else 10)
    print(f"  float32 matmul {peak['n']}²: {peak['peak_flops_per_s'] / 1e9:.1f} GFLOP/s (best), "
          f"{peak['median_flops_per_s'] / 1e9:.1f} (median)", flush=True)
    n = 512
    rows, data, headline = [], {}, []
    for model in ("schnet",) + PEER_MODELS:
        try:
            r = mlpjax_inference(model, n, opts.quick)
        except Exception as err:
            rows.append([model, n, f"failed: {type(err).__name__}", "", "", "", ""])
            continue
        rate = r["flops"] / r["inference_s"]
        frac = rate / peak["peak_flops_per_s"]
        data[model] = {**r, "flops_per_atom": r["flops"] / n, "flops_per_s": rate, "fraction_of_peak": frac}
        rows.append([model, n, f"{r['flops'] / n / 1e6:.4g}", _fmt_ms(r["inference_s"]), f"{rate / 1e9:.3g}",
                     f"{peak['peak_flops_per_s'] / 1e9:.3g}", f"{100 * frac:.2g} %"])
        headline.append(f"{model} E+F at {n} atoms: {100 * frac:.2g} % of the measured float32 peak")
    return CaseResult(headers=["model", "N atoms", "MFLOP/atom (XLA)", "E+F ms", "GFLOP/s reached", "peak GFLOP/s (matmul)",
                               "fraction of peak"],
                      rows=rows, headline=headline, data={"peak": peak, "models": data},
                      notes=["FLOPs as XLA counts them for the whole compiled energy + forces call (dots, elementwise; "
                             "gathers/scatters move bytes and count ~0). Peak = fastest of repeated "
                             f"{peak['n']}×{peak['n']} float32 matmuls through XLA on this machine (not a datasheet figure)."])


# ----------------------------------------------------------------------------- scaling suite
@_case("md_scaling", "scaling", "MD throughput against N (SchNet in mlpjax.md, NVE)")
def case_md_scaling(opts: Options) -> CaseResult:
    import md_throughput as mt

    pot = mt.make_potential()
    sizes = [256, 864, 2048, 4000] if opts.quick else [256, 2048, 4000, 16384, 32000]
    rows, data = [], []
    for n in sizes:
        chunks = 3 if (opts.quick or n >= 16384) else 4
        r = mt.bench_schnet(pot, mt.cu_supercell(n), 10, chunks)
        data.append({"n_atoms": n, **r})
        print(f"  N={n}: {r['atom_steps_per_s']:.3g} atom-steps/s", flush=True)
    base = data[0]["atom_steps_per_s"]
    for d in data:
        d["rel_to_smallest"] = d["atom_steps_per_s"] / base
        rows.append([d["n_atoms"], f"{d['steps_per_s']:.4g}", f"{d['atom_steps_per_s']:.4g}", f"{d['rel_to_smallest']:.3g}",
                     f"{d['compile_s']:.3g}", f"{d['setup_s']:.3g}", f"{d['pairs_per_atom']:.1f}"])
    return CaseResult(headers=["N atoms", "steps/s", "atom-steps/s", "rel. to smallest", "compile s", "setup s", "pairs/atom (capacity)"],
                      rows=rows, data={"model": mt.MODEL, "results": data},
                      headline=[f"MD atom-steps/s at {data[-1]['n_atoms']} atoms / at {data[0]['n_atoms']}: {data[-1]['rel_to_smallest']:.2f}"],
                      notes=[f"`md_throughput.bench_schnet`: SchNet {mt.MODEL}, cutoff {mt.CUTOFF} Å, skin {mt.SKIN} Å, float32, "
                             "chunks of 10 steps, median after the first. rel. ≈ 1: cost linear in N. compile s is 0 where an "
                             "earlier case of the same run already compiled this engine (same potential and cell shape)."])


def train_throughput(batch_size: int, reps: int) -> dict:
    """Training steps of ``model_speed``'s SchNet on ``batch_size`` rattled 32-atom Cu cells."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from ase.build import bulk

    from mlpjax.config import TrainConfig
    from mlpjax.data import Configuration
    from mlpjax.graph import make_budget, pack, to_graph
    from mlpjax.training import init_state, make_plateau, make_step_fns

    ms = _model_speed()
    pot, _ = mlpjax_potential("schnet")
    graphs = []
    for i in range(batch_size):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
        atoms.positions += np.random.default_rng(i).normal(0.0, 0.05, atoms.positions.shape)
        conf = Configuration.from_atoms(atoms)
        conf.energy, conf.forces, conf.stress = 0.0, np.zeros((len(atoms), 3)), np.zeros((3, 3))
        graphs.append(to_graph(conf, pot.species, pot.cutoff))
    batch = jax.tree_util.tree_map(jnp.asarray, pack(graphs, make_budget(graphs, batch_size), dtype=np.float32))
    tcfg = TrainConfig(model="schnet", model_config=ms.BENCH_CONFIGS["schnet"], cutoff=ms.CUTOFF, batch_size=batch_size,
                       epochs=10, schedule="constant")
    fns = make_step_fns(pot, tcfg, steps_per_epoch=1, compute_stress=True)
    state = init_state(pot, fns.optimizer, make_plateau(tcfg), learning_rate=1e-3)
    t = time.perf_counter()
    _block(fns.train_step(state, batch))
    compile_s = time.perf_counter() - t
    step_s = median_time(lambda: fns.train_step(state, batch)[1]["loss"], reps)
    n_atoms = graphs[0].n_atoms
    return {"batch_size": batch_size, "atoms_per_structure": n_atoms, "first_step_s": compile_s, "step_s": step_s,
            "structures_per_s": batch_size / step_s, "atoms_per_s": batch_size * n_atoms / step_s}


@_case("train_scaling", "scaling", "Training throughput against batch size (SchNet, 32-atom Cu cells)")
def case_train_scaling(opts: Options) -> CaseResult:
    ms = _model_speed()
    sizes = [1, 4, 16] if opts.quick else [1, 2, 4, 8, 16, 32, 64]
    data = []
    for b in sizes:
        r = train_throughput(b, 7 if opts.quick else 15)
        data.append(r)
        print(f"  batch {b}: {r['structures_per_s']:.3g} structures/s", flush=True)
    base = data[0]["structures_per_s"]
    rows = [[d["batch_size"], _fmt_ms(d["step_s"]), f"{d['structures_per_s']:.4g}", f"{d['structures_per_s'] / base:.3g}",
             f"{d['first_step_s']:.3g}"] for d in data]
    return CaseResult(headers=["batch size", "step ms", "structures/s", "rel. to batch 1", "first step s (compile)"],
                      rows=rows, data={"model": ms.BENCH_CONFIGS["schnet"], "results": data},
                      headline=[f"training structures/s batch {data[-1]['batch_size']} / batch 1: "
                                f"{data[-1]['structures_per_s'] / base:.2f}"],
                      notes=[f"SchNet {ms.BENCH_CONFIGS['schnet']}, cutoff {ms.CUTOFF} Å, float32; loss on energy, forces "
                             "and stress, Adam + EMA (`make_step_fns`), median step after the first."])


# ----------------------------------------------------------------------------- accuracy suite
@_case("accuracy", "accuracy", "Accuracy under the same wall-clock budget (EMT Cu)")
def case_accuracy(opts: Options) -> CaseResult:
    import accuracy

    from mlpjax import models

    # quick: a pair-potential baseline and SchNet (MACE and PaiNN at accuracy.DEFAULT_CONFIGS size did
    # not finish one epoch of the 240 structures in 1-1.25 min on 2 shared cores)
    names = ["morse", "schnet"] if opts.quick else list(models.available())
    minutes = 1.0 if opts.quick else 3.0
    with tempfile.TemporaryDirectory(prefix="mlpjax_accuracy_") as tmp:
        ns = argparse.Namespace(dataset="emt-cu", train=None, test=None, n_train=None, minutes=minutes, epochs=10_000,
                                cutoff=None, config_tag=None, output=tmp)
        train_set, test_set = accuracy._load(ns)
        results = []
        for name in names:
            try:
                results.append(accuracy._run_one(name, ns, train_set, test_set))
            except Exception as err:
                results.append({"model": name, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"})
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["model"], "—", "—", "—", "—", r["error"][:80], ""])
            continue
        rows.append([r["model"], r["n_params"], r["n_train"], r["epochs"], f"{r['energy_mae_meV_per_atom']:.3g}",
                     f"{r['force_mae_meV_per_A']:.3g}", r["stop_reason"]])
    return CaseResult(headers=["model", "params", "n_train", "epochs", "E MAE meV/atom", "F MAE meV/Å", "stopped by"],
                      rows=rows, data={"minutes": minutes, "n_test": len(test_set), "results": results},
                      headline=[f"{r['model']}: F MAE {r['force_mae_meV_per_A']:.3g} meV/Å in {minutes:g} min" for r in results if "error" not in r],
                      notes=[f"`accuracy._load` / `accuracy._run_one`: EMT Cu (mlpjax.data.emt.emt_cu, 80/20 split), "
                             f"{minutes:g} min of training per model, test set unseen ({len(test_set)} structures)."])


# ----------------------------------------------------------------------------- the run
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="all", choices=("all",) + SUITES)
    ap.add_argument("--quick", action="store_true", help="reduced sizes and repeats (all suites: <= 20 min on 2 CPU cores)")
    ap.add_argument("--gpu", action="store_true", help="require a GPU visible to JAX (stop with a message when none)")
    ap.add_argument("--cases", default=None, help="comma-separated subset of the suite's cases (see --list)")
    ap.add_argument("--list", action="store_true", help="print the suites and their cases, run nothing")
    ap.add_argument("--peers-dir", default=str(PEERS_DIR_DEFAULT),
                    help="where benchmarks/peers/setup.sh made the peers' venvs (default $MLPJAX_PEERS or ~/.cache/mlpjax-peers)")
    ap.add_argument("--peer-timeout", type=float, default=1800.0, help="seconds per peer worker before it counts as failed")
    ap.add_argument("--no-record", action="store_true", help="print only: no JSON, plot or RESULTS.md section")
    ap.add_argument("--output", default=None, help="JSON path (default benchmarks/results/run_<suite>[_quick]_<time>.json)")
    args = ap.parse_args(argv)
    args.case_names = [c for c in args.cases.split(",") if c] if args.cases else None
    return args


def listing() -> dict:
    """{suite: [(case, title), ...]} of every registered case."""
    return {s: [(c.name, c.title) for c in CASES.values() if c.suite == s] for s in SUITES}


def require_gpu() -> None:
    import jax

    backend = jax.default_backend()
    if backend != "gpu":
        raise SystemExit(f"--gpu: JAX sees no GPU (default backend {backend!r}, devices {jax.devices()}). Run on a machine "
                         "with a GPU and a CUDA jaxlib (pip install 'jax[cuda12]'), or drop --gpu for the CPU tables.")


def run_cases(cases: list[Case], opts: Options) -> list[dict]:
    out = []
    for c in cases:
        print(f"\n=== [{c.suite}] {c.name}: {c.title}", flush=True)
        load0, t0 = _load_average(), time.perf_counter()
        try:
            res, error = c.fn(opts), None
        except Exception as err:  # one broken case does not stop the run
            res, error = None, f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
            traceback.print_exc()
        entry = {"name": c.name, "suite": c.suite, "title": c.title, "wall_s": time.perf_counter() - t0,
                 "load_average_before": load0, "load_average_after": _load_average(), "error": error}
        if res is not None:
            entry.update(headers=res.headers, rows=res.rows, notes=res.notes, headline=res.headline, data=res.data)
            print("\n" + markdown_table(res.headers, res.rows))
            for line in res.notes:
                print(line)
        else:
            print(f"{c.name} FAILED: {error}")
        print(f"({c.name}: {entry['wall_s']:.0f} s)", flush=True)
        out.append(entry)
    return out


def section_body(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"`python -m benchmarks.run {report['argv']}` — {report['wall_s'] / 60:.1f} min, git {m['git']['commit'][:10]}"
        + (f" (uncommitted changes in {', '.join(m['git']['dirty_paths'][:6])})" if m["git"]["dirty_paths"] else "")
        + f"; {m['device']}, {m['cpu']}, {m['memory_GB']} GB; jax {m['versions']['jax']}, mlpjax {m['versions']['mlpjax']}.",
        f"**The machine was shared with other jobs** (load average {report['load_average_before']} at the start, "
        f"{report['load_average_after']} at the end, on {m['cpu_count']} cores): absolute times are noisy; the ratios "
        "(same run, same machine, one after another) are what to read. Ratio = mlpjax time / other time (< 1: mlpjax faster). "
        f"JSON: `benchmarks/results/{Path(report['json']).name}`" + (f", plot: `benchmarks/results/{Path(report['plot']).name}`"
                                                                    if report.get("plot") else "") + ".",
    ]
    heads = [h for c in report["cases"] for h in c.get("headline", [])]
    if heads:
        lines += ["", "Headline: " + "; ".join(heads) + "."]
    for c in report["cases"]:
        lines += ["", f"### {c['title']} (`{c['name']}`, {c['wall_s']:.0f} s, load {c['load_average_before'][:1]} → "
                      f"{c['load_average_after'][:1]})", ""]
        if c["error"]:
            lines.append(f"**failed**: {c['error']}")
            continue
        lines.append(markdown_table(c["headers"], c["rows"]))
        if c.get("notes"):
            lines += [""] + [f"{n}  " if i < len(c["notes"]) - 1 else n for i, n in enumerate(c["notes"])]
    return "\n".join(lines)


def main(argv=None) -> int:
    import warnings

    # float64 requests in 32-bit mode are truncated on purpose (as in the test suite's filterwarnings)
    warnings.filterwarnings("ignore", message="Explicitly requested dtype float64")
    args = parse_args(argv)
    if args.list:
        for suite, items in listing().items():
            print(f"{suite}:")
            for name, title in items:
                print(f"  {name:14s} {title}")
        return 0
    if args.gpu:
        require_gpu()
    cases = cases_for(args.suite, args.case_names)
    opts = Options(quick=args.quick, gpu=args.gpu, peers_dir=Path(args.peers_dir), peer_timeout_s=args.peer_timeout)
    argv_text = " ".join(argv if argv is not None else sys.argv[1:])
    machine = machine_and_versions()
    print(f"# mlpjax benchmark run: suite {args.suite}{' (quick)' if args.quick else ''}, {len(cases)} cases on {machine['device']}; "
          f"load average {_load_average()}", flush=True)
    t0, load0 = time.perf_counter(), _load_average()
    results = run_cases(cases, opts)
    report = {"argv": argv_text, "suite": args.suite, "quick": args.quick, "gpu": args.gpu, "machine": machine,
              "date": datetime.datetime.now().isoformat(timespec="seconds"), "wall_s": time.perf_counter() - t0,
              "load_average_before": load0, "load_average_after": _load_average(), "peers_dir": str(opts.peers_dir),
              "cases": results}
    heads = [h for c in results for h in c.get("headline", [])]
    print("\n# headline: " + ("; ".join(heads) if heads else "none"))
    print(f"# total {report['wall_s'] / 60:.1f} min")
    if args.no_record:
        return 0 if all(c["error"] is None for c in results) else 1
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"run_{args.suite}{'_quick' if args.quick else ''}_{stamp}"
    json_path = Path(args.output) if args.output else BENCH_DIR / "results" / f"{name}.json"
    report["json"] = str(json_path)
    try:
        import plot

        report["plot"] = str(plot.plot_report(report, json_path.with_suffix(".png")))
    except Exception as err:  # the numbers matter more than the figure
        print(f"plot failed: {type(err).__name__}: {err}", file=sys.stderr)
    write_json(json_path, report)
    title = f"Benchmark runner: suite {args.suite}{' (quick)' if args.quick else ''}"
    append_results(title, section_body(report))
    print(f"wrote {json_path}" + (f", {report['plot']}" if report.get("plot") else "") + " and appended to benchmarks/RESULTS.md")
    return 0 if all(c["error"] is None for c in results) else 1


if __name__ == "__main__":
    sys.exit(main())
