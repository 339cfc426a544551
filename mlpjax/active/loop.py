"""The active-learning loop: train an ensemble → explore with MD → select → label → retrain.

    from mlpjax.active import load_active_config, run_active
    result = run_active(load_active_config("experiments/active_cu.yaml"))
    result.rows[-1]["valid_force_mae_meV_A"], result.model_path

Iteration k (k = 0, 1, ...) has five phases, run in this order:

1. ``train`` — an ensemble (``train.ensemble_size`` members) on ``initial_data`` plus every label
   of the earlier iterations; from iteration 1 on, warm-started from model k−1's file
   (``TrainConfig.init_from``: its members continue, E0 re-fitted) with the ``retrain``
   overrides. The held-out part (``train.valid_fraction``: early stopping, the best epoch) is drawn
   per block of data (:func:`held_out_split`), so no model is validated on frames an earlier model
   trained on. Output ``iter_KKK/train/`` (model.mlpjax, checkpoints, logs).
2. ``evaluate`` — energy and force MAE of model k on ``validation_data`` and ``test_data``. The
   loop stops here when the force MAE reaches ``stop.force_mae_meV_A``, when k =
   ``stop.max_iterations`` or when the training set holds ``stop.max_labels`` labels.
3. ``explore`` — MD with model k from every structure × pressure (one
   :func:`mlpjax.md.simulate_replicas` batch each; the temperatures × ``explore.replicas`` are
   its replicas, with their own seeds per iteration). Every ``sample_every`` steps the frame and
   each atom's force model deviation are recorded; a replica stops at its first frame above
   ``select.sigma_hi`` (the MD uncertainty check, ``uncertainty_action="stop"``), and one that
   blows up anyway keeps the frames before it. Output ``iter_KKK/explore/``: the trajectories,
   ``candidates.xyz`` (frames inside the window, per-atom ``forces_std`` eV/Å).
4. ``select`` — the trust window (:func:`mlpjax.active.selection.classify`) and a diverse batch of
   at most ``select.max_selected`` (fewer if the label budget says so):
   :func:`mlpjax.active.selection.select_batch`. Output ``iter_KKK/selected.xyz``.
5. ``label`` — the oracle on the selected frames (:func:`mlpjax.active.label`: worker processes,
   each label appended as it arrives, failures recorded in ``labels.xyz.failures.jsonl`` and
   skipped). Output ``iter_KKK/labels.xyz``.

Run directory: ``config.yaml`` (the resolved configuration), ``state.json`` (the phase reached and
every finished phase's numbers, rewritten atomically after each phase), ``report.csv`` /
``report.json`` (one row per iteration: :data:`REPORT_COLUMNS`), ``learning_curve.png``, the
``iter_KKK/`` folders and, when the loop ends, ``model.mlpjax`` (a copy of the last model).

Resuming. Run the same configuration on the same directory again (``mlpjax active CONFIG.yaml``
after a kill at any point): finished phases are skipped (their outputs and numbers are in
``state.json``); an interrupted training resumes from its checkpoint (``train(resume=True)``); an
interrupted exploration redoes only the MD batches that had not finished (each batch's frames are
written atomically when it ends; seeds are fixed, so the redone batch is the same run); selection
is a pure function of the candidates; an interrupted labelling continues through
:func:`~mlpjax.active.label`'s own resume (no label lost, none made twice). Changing anything but
``stop``, ``label`` and ``output`` on a resumed run is a :class:`~mlpjax.config.ConfigError`.
Only one process may work on a run directory at a time (a lock file).

Wall times per phase (``*_s`` columns) are those of the call that finished the phase (a phase
resumed after a kill counts only its last attempt).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import shutil
import sys
import time
import warnings

import numpy as np

from mlpjax.active.config import ActiveConfig
from mlpjax.config import ConfigError

PHASES = ("train", "evaluate", "explore", "select", "label")
STATE_NAME = "state.json"
STATE_VERSION = 1
# the report's columns: MAEs in meV/atom (energy) and meV/Å (forces); σ in eV/Å; times in s
REPORT_COLUMNS = (
    "iteration", "n_labels", "n_new_labels",
    "valid_energy_mae_meV_atom", "valid_force_mae_meV_A", "test_energy_mae_meV_atom", "test_force_mae_meV_A",
    "sigma_max_eV_A", "sigma_mean_eV_A", "n_frames", "n_accurate", "n_candidates", "n_failed_frames",
    "n_blowups", "n_selected", "n_oracle_failures",
    "train_s", "evaluate_s", "explore_s", "select_s", "label_s",
)
_MUTABLE = ("stop", "label", "output")  # may change between a run and its resumption


@dataclasses.dataclass(frozen=True)
class ActiveResult:
    """What :func:`run_active` did (everything also in the run directory)."""

    run_dir: str
    rows: list  # report rows (dicts with REPORT_COLUMNS), one per iteration
    stop_reason: str  # "target" | "max_iterations" | "label_budget" | "converged" | "no_candidates"
    model_path: str  # run_dir/model.mlpjax: the last model (an ensemble)
    n_labels: int  # labelled configurations of the last model's training set


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"[mlpjax active] {message}", file=sys.stderr, flush=True)


def _iter_dir(run_dir: str, k: int) -> str:
    return os.path.join(run_dir, f"iter_{k:03d}")


def _write_json(path: str, obj) -> None:
    from mlpjax.files import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(obj, indent=1, default=_json_default, allow_nan=True) + "\n").encode())


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _write_frames(path: str, frames) -> None:
    """Write ``frames`` (ase.Atoms) as extxyz atomically (readers see all or nothing)."""
    import ase.io

    from mlpjax.files import atomic_write_bytes

    buf = io.StringIO()
    if frames:
        ase.io.write(buf, list(frames), format="extxyz")
    atomic_write_bytes(path, buf.getvalue().encode())


def _read_frames(path: str) -> list:
    import ase.io

    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return []
    return list(ase.io.read(path, index=":", format="extxyz"))


# ----------------------------------------------------------------------------- state
class _State:
    """``state.json``: per iteration the finished phases' numbers, plus the phase now running."""

    def __init__(self, run_dir: str, config: ActiveConfig):
        self.path = os.path.join(run_dir, STATE_NAME)
        current = config.to_dict()
        if os.path.exists(self.path):
            try:
                with open(self.path) as f:
                    self.data = json.load(f)
            except (OSError, ValueError) as err:
                raise ConfigError(f"{self.path} cannot be read ({err}); it is written atomically, so something else "
                                  "changed it: restore it or start a new run directory") from None
            if self.data.get("version") != STATE_VERSION:
                raise ConfigError(f"{self.path} is of another version ({self.data.get('version')}); start a new run "
                                  "directory (--output)")
            _check_same_run(self.data.get("config", {}), current, self.path)
            self.data["config"] = current  # stop/label/output may have changed
        else:
            self.data = {"version": STATE_VERSION, "config": current, "iterations": [], "current": None,
                         "finished": False, "stop_reason": None}

    def save(self) -> None:
        _write_json(self.path, self.data)

    def iteration(self, k: int) -> dict:
        its = self.data["iterations"]
        while len(its) <= k:
            its.append({"iteration": len(its)})
        return its[k]

    def done(self, k: int, phase: str) -> dict | None:
        its = self.data["iterations"]
        return its[k].get(phase) if k < len(its) else None

    def start(self, k: int, phase: str) -> None:
        self.iteration(k)
        self.data["current"] = {"iteration": k, "phase": phase}
        self.save()

    def finish(self, k: int, phase: str, record: dict) -> None:
        self.iteration(k)[phase] = record
        self.save()


def _check_same_run(saved: dict, current: dict, path: str) -> None:
    for key in sorted(set(saved) | set(current)):
        if key in _MUTABLE:
            continue
        a, b = saved.get(key), current.get(key)
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            detail = key
            if isinstance(a, dict) and isinstance(b, dict):
                diff = sorted(k for k in set(a) | set(b) if json.dumps(a.get(k), default=str) != json.dumps(b.get(k), default=str))
                detail = f"{key}.{diff[0]}" if diff else key
            raise ConfigError(f"the run in {os.path.dirname(path)} was started with another {detail} "
                              f"({_short(a, detail)} there, {_short(b, detail)} now); only stop, label and output may "
                              "change when resuming: restore the setting or use a new --output", option=detail)


def _short(d, dotted: str) -> str:
    for part in dotted.split(".")[1:]:
        d = d.get(part) if isinstance(d, dict) else d
    text = json.dumps(d, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


class _Lock:
    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, ".lock")
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:
            pass
        except BlockingIOError:
            os.close(self.fd)
            raise ConfigError(f"{run_dir} is in use by another mlpjax active run; wait for it or use another --output",
                              option="output") from None

    def release(self) -> None:
        os.close(self.fd)


# ----------------------------------------------------------------------------- inputs
def _read_labelled(path: str, what: str) -> list:
    from mlpjax.data import read

    configs = read(path)
    if not configs:
        raise ConfigError(f"{what} {path} holds no configurations", option=what)
    return list(configs)


def _structures(config: ActiveConfig, species: set) -> list:
    """(name, ase.Atoms) of every exploration structure; ConfigError for one MD cannot run."""
    import ase

    from mlpjax.data import read_structure

    out = []
    for path in config.explore.structures:
        c = read_structure(path)
        atoms = ase.Atoms(numbers=c.numbers, positions=c.positions, cell=c.cell, pbc=c.pbc)
        pbc = np.asarray(atoms.pbc, bool)
        if pbc.any() and not pbc.all():
            raise ConfigError(f"explore.structures: {path} has pbc {pbc.tolist()}; MD needs pbc all True (a slab: "
                              "periodic with vacuum padding) or all False", option="explore.structures")
        unknown = sorted({int(z) for z in atoms.numbers} - species)
        if unknown:
            from ase.data import chemical_symbols

            raise ConfigError(f"explore.structures: {path} has elements {', '.join(chemical_symbols[z] for z in unknown)} "
                              "that initial_data does not have; the model cannot represent them", option="explore.structures")
        out.append((os.path.splitext(os.path.basename(path))[0], atoms))
    return out


def _labels_path(run_dir: str, k: int) -> str:
    return os.path.join(_iter_dir(run_dir, k), "labels.xyz")


def _training_data(config: ActiveConfig, run_dir: str, k: int, initial: list) -> list[list]:
    """The training data by block: [initial_data, labels of iteration 0, ..., labels of iteration k-1]."""
    from mlpjax.data import read

    blocks = [list(initial)]
    for j in range(k):
        path = _labels_path(run_dir, j)
        blocks.append(read(path) if os.path.exists(path) and os.path.getsize(path) > 0 else [])
    return blocks


def held_out_split(tcfg, blocks: list[list]) -> tuple[list, list | None, list | None]:
    """(train, valid, test) of model k's data ``blocks`` (:func:`_training_data`): each block split on
    its own (``valid_fraction`` / ``test_fraction``, :func:`mlpjax.data.split` seeded by
    ``split_seed`` and the block's index), so a configuration keeps its part as the data grow.

    One split of the whole, drawn again as it grows, would put frames that model k-1 trained on into
    model k's validation part: the warm-started model then looks best on it from the first epoch on,
    early stopping ends the retraining and the best-epoch choice keeps parameters that have hardly
    seen the new labels. Nested parts exclude that (every held-out frame of model k was held out of
    every earlier model too)."""
    from mlpjax.data import split

    fv, ft = float(tcfg.valid_fraction), float(tcfg.test_fraction)
    if fv <= 0 and ft <= 0:
        return [c for b in blocks for c in b], None, None
    parts: tuple[list, list, list] = ([], [], [])
    for j, block in enumerate(blocks):
        seed = int(np.random.SeedSequence([int(tcfg.split_seed), j]).generate_state(1)[0])
        for part, idx in zip(parts, split(len(block), (1.0 - fv - ft, fv, ft), seed=seed)):
            part.extend(block[i] for i in idx)
    train, valid, test = parts
    # an empty part stays a list ([]: no validation / test), not None (which would let train() split again)
    return train, valid if fv > 0 else None, test if ft > 0 else None


# ----------------------------------------------------------------------------- phases
def _train(config, run_dir, k, blocks, progress) -> dict:
    from mlpjax.training import CHECKPOINT_NAME, PREV_CHECKPOINT_NAME, train

    out = os.path.join(_iter_dir(run_dir, k), "train")
    init_from = os.path.join(_iter_dir(run_dir, k - 1), "train", "model.mlpjax") if k > 0 else config.train.init_from
    tcfg = config.train_config(k, init_from)
    resume = any(os.path.exists(os.path.join(out, n)) for n in (CHECKPOINT_NAME, PREV_CHECKPOINT_NAME))
    n = sum(len(b) for b in blocks)
    _say(progress, f"iteration {k}: training {tcfg.ensemble_size} members on {n} configurations"
         + (" (warm start from iteration %d)" % (k - 1) if k > 0 else "") + (" (resuming)" if resume else ""))
    t0 = time.monotonic()
    train_set, valid_set, test_set = held_out_split(tcfg, blocks)
    res = train(tcfg, train_set, valid_set, test_configs=test_set, output_dir=out, resume=resume, progress=False)
    vm = res.valid_metrics or {}
    return {"n_labels": n, "model": res.paths["model"], "epochs": res.epochs_completed,
            "stop_reason": res.stop_reason, "split_energy_mae_meV_atom": vm.get("energy_mae_meV_per_atom"),
            "split_force_mae_meV_A": vm.get("force_mae_meV_per_A"), "resumed": resume, "wall_s": time.monotonic() - t0}


def _evaluate(config, k, train_record, sets, progress) -> dict:
    """MAEs of model k on validation_data and test_data; without validation_data the "valid" MAEs
    are those of the training run's held-out split (valid_fraction of the labels, :func:`held_out_split`;
    it grows with the training set, so it is only a rough guide)."""
    import mlpjax
    from mlpjax.validate.metrics import metrics

    t0 = time.monotonic()
    pot = mlpjax.load(train_record["model"])
    rec = {}
    for name, configs in sets.items():
        if configs:
            m = metrics(pot, configs)
            rec[f"{name}_energy_mae_meV_atom"] = m["energy_mae_meV_per_atom"]
            rec[f"{name}_force_mae_meV_A"] = m["force_mae_meV_per_A"]
    if not sets.get("valid") and train_record.get("split_force_mae_meV_A") is not None:
        rec["valid_energy_mae_meV_atom"] = train_record.get("split_energy_mae_meV_atom")
        rec["valid_force_mae_meV_A"] = train_record["split_force_mae_meV_A"]
        rec["valid_is_training_split"] = True
    if rec:
        _say(progress, f"iteration {k}: " + ", ".join(f"{key} {v:.2f}" for key, v in rec.items()))
    rec["wall_s"] = time.monotonic() - t0
    return rec


def _stop_reason(config: ActiveConfig, k: int, n_labels: int, evaluation: dict) -> str | None:
    st = config.stop
    mae = evaluation.get("valid_force_mae_meV_A")
    if st.force_mae_meV_A is not None and mae is not None and math.isfinite(mae) and mae <= st.force_mae_meV_A:
        return "target"
    if st.max_labels is not None and n_labels >= st.max_labels:
        return "label_budget"
    if k >= st.max_iterations:
        return "max_iterations"
    return None


def _seeds(config: ActiveConfig, k: int, run: int, n: int) -> list[int]:
    base = int(np.random.SeedSequence([config.seed, k, run]).generate_state(1)[0]) % (2**31 - n)
    return [base + i for i in range(n)]


def md_config(config: ActiveConfig, pressure: float = 0.0, seed: int = 0):
    """The :class:`mlpjax.md.MDConfig` of one exploration batch at ``pressure`` [GPa] (npt): the
    first temperature as replica 0's (the others are :func:`mlpjax.md.simulate_replicas`'s
    ``temperatures_K``; a ramp to ``ramp_factor`` × T scales with each), a frame every
    ``sample_every`` steps, and the uncertainty stop at ``select.sigma_hi`` eV/Å."""
    from mlpjax.md import MDConfig

    e = config.explore
    t0 = float(e.temperatures_K[0])
    return MDConfig(ensemble=e.ensemble, temperature_K=t0,
                    temperature_final_K=None if e.ramp_factor is None else t0 * e.ramp_factor,
                    pressure_GPa=float(pressure), steps=int(e.steps), timestep_fs=float(e.timestep_fs),
                    log_every=int(e.sample_every), traj_every=int(e.sample_every), chunk_steps=int(e.chunk_steps),
                    friction_per_ps=float(e.friction_per_ps), seed=seed, max_force_std=float(config.select.sigma_hi),
                    uncertainty_action="stop")


def _explore_run(config, pot, k, run, name, atoms, pressure, run_dir) -> dict:
    """One replica batch: MD, then every recorded frame (step > 0) classified; candidates saved."""
    from mlpjax.active.selection import classify, window_counts
    from mlpjax.md import MDInstabilityError, simulate_replicas

    e = config.explore
    temps = [float(t) for t in e.temperatures_K for _ in range(e.replicas)]
    seeds = _seeds(config, k, run, len(temps))
    d = os.path.join(run_dir, f"run_{run:02d}")
    if os.path.isdir(d):
        shutil.rmtree(d)  # an interrupted earlier attempt: the same seeds redo the same run
    os.makedirs(d)
    blowups = []
    try:
        with warnings.catch_warnings():  # jax-md's neighbour list scatters int64 into int32 under x64 (its own, harmless)
            warnings.filterwarnings("ignore", message="scatter inputs have incompatible types", category=FutureWarning)
            simulate_replicas(pot, atoms, md_config(config, pressure, seeds[0]), temperatures_K=temps, seeds=seeds,
                              trajectory_dir=d, log_dir=d, progress=False)
    except MDInstabilityError as err:  # the frames before the blow-up are on disk
        blowups.append({"replica": getattr(err, "replica", None), "step": int(err.step), "reason": err.reason})
    frames, sigmas = [], []
    for r, (temp, seed) in enumerate(zip(temps, seeds)):
        for a in _read_frames(os.path.join(d, f"replica_{r}.extxyz")):
            if int(a.info.get("step", 0)) == 0 or "forces_std" not in a.arrays:
                continue  # the start structure itself (the same for every replica)
            std = np.asarray(a.arrays["forces_std"], np.float64)
            frames.append({"atoms": a, "replica": r, "temperature_K": temp, "seed": seed})
            sigmas.append(float(np.max(std)) if std.size else 0.0)
    classes = classify(sigmas, sigma_lo=config.select.sigma_lo, sigma_hi=config.select.sigma_hi)
    import ase

    stop_index = _stop_frames(frames, sigmas, classes, config.select) if config.select.stop_frames else set()
    candidates = []
    for i, (f, s, c) in enumerate(zip(frames, sigmas, classes)):
        if c != "candidate" and i not in stop_index:
            continue
        a = f["atoms"]
        b = ase.Atoms(numbers=a.numbers, positions=a.positions, cell=a.cell, pbc=a.pbc)
        b.arrays["forces_std"] = np.asarray(a.arrays["forces_std"], np.float64)  # [n] eV/Å
        b.info.update(al_iteration=k, al_structure=name, al_run=run, al_replica=f["replica"],
                      al_target_temperature_K=f["temperature_K"], al_pressure_GPa=float(pressure),
                      al_seed=f["seed"], al_step=int(a.info.get("step", 0)), max_force_std=float(s),
                      al_stop_frame=bool(i in stop_index))
        candidates.append(b)
    _write_frames(os.path.join(d, "candidates.xyz"), candidates)
    s = np.asarray(sigmas, np.float64)
    finite = s[np.isfinite(s)]
    rec = {"run": run, "structure": name, "pressure_GPa": float(pressure), "n_frames": len(frames),
           **{f"n_{c}": n for c, n in window_counts(classes).items()}, "n_stop_frames": len(stop_index),
           "blowups": blowups,
           "sigma_max_eV_A": float(finite.max()) if finite.size else None,
           "sigma_sum_eV_A": float(finite.sum()), "n_finite": int(finite.size)}
    _write_json(os.path.join(d, "summary.json"), rec)
    return rec


def _stop_frames(frames: list, sigmas: list, classes, select) -> set:
    """Indices of each replica's first frame above ``sigma_hi`` (:func:`first_failed`) that is
    finite and has no pair of atoms closer than ``select.stop_frame_min_distance`` Å."""
    from mlpjax.active.selection import first_failed
    from mlpjax.data import Configuration, closest_pair

    out = set()
    for i in first_failed(classes, [f["replica"] for f in frames]):
        a = frames[i]["atoms"]
        if not np.isfinite(sigmas[i]) or not np.all(np.isfinite(a.positions)):
            continue
        if closest_pair(Configuration.from_atoms(a), select.stop_frame_min_distance) is None:
            out.add(int(i))
    return out


def _explore(config, run_dir, k, model_path, structures, progress) -> dict:
    import mlpjax

    t0 = time.monotonic()
    pot = mlpjax.load(model_path)
    d = os.path.join(_iter_dir(run_dir, k), "explore")
    os.makedirs(d, exist_ok=True)
    runs, run = [], 0
    for name, atoms in structures:
        for pressure in config.explore.pressures_GPa:
            summary = os.path.join(d, f"run_{run:02d}", "summary.json")
            if os.path.exists(summary):  # finished before an interruption
                with open(summary) as f:
                    runs.append(json.load(f))
            else:
                _say(progress, f"iteration {k}: exploring {name}" + (f" at {pressure:g} GPa" if config.explore.ensemble == "npt" else "")
                     + f" ({len(config.explore.temperatures_K) * config.explore.replicas} replicas, "
                     f"{config.explore.steps} steps)")
                runs.append(_explore_run(config, pot, k, run, name, atoms, pressure, d))
            run += 1
    candidates = []
    for r in range(run):
        candidates.extend(_read_frames(os.path.join(d, f"run_{r:02d}", "candidates.xyz")))
    _write_frames(os.path.join(d, "candidates.xyz"), candidates)
    n_finite = sum(r["n_finite"] for r in runs)
    maxes = [r["sigma_max_eV_A"] for r in runs if r["sigma_max_eV_A"] is not None]
    rec = {"n_frames": sum(r["n_frames"] for r in runs), "n_accurate": sum(r["n_accurate"] for r in runs),
           "n_candidates": sum(r["n_candidate"] for r in runs), "n_failed_frames": sum(r["n_failed"] for r in runs),
           "n_stop_frames": sum(r.get("n_stop_frames", 0) for r in runs),
           "n_blowups": sum(len(r["blowups"]) for r in runs),
           "sigma_max_eV_A": max(maxes) if maxes else None,
           "sigma_mean_eV_A": sum(r["sigma_sum_eV_A"] for r in runs) / n_finite if n_finite else None,
           "runs": runs, "wall_s": time.monotonic() - t0}
    _say(progress, f"iteration {k}: {rec['n_frames']} frames: {rec['n_accurate']} accurate, {rec['n_candidates']} "
         f"candidates, {rec['n_failed_frames']} above sigma_hi"
         + (f" ({rec['n_stop_frames']} stop frames to label)" if config.select.stop_frames else "") + (f", {rec['n_blowups']} blow-ups" if rec["n_blowups"] else ""))
    return rec


def _select(config, run_dir, k, n_max, progress) -> dict:
    from mlpjax.active.selection import select_batch, structure_descriptors

    t0 = time.monotonic()
    s = config.select
    candidates = _read_frames(os.path.join(_iter_dir(run_dir, k), "explore", "candidates.xyz"))
    seed = int(np.random.SeedSequence([config.seed, k]).generate_state(1)[0])
    selected = []
    stop = [a for a in candidates if bool(a.info.get("al_stop_frame", False))]  # first (SelectConfig.stop_frames)
    window = [a for a in candidates if not bool(a.info.get("al_stop_frame", False))]
    for pool in (stop, window):
        n = n_max - len(selected)
        if n <= 0 or not pool:
            continue
        sig = np.array([float(a.info["max_force_std"]) for a in pool], np.float64)
        features = structure_descriptors(pool, cutoff=s.descriptor_cutoff) if s.method == "fps" else None
        idx = select_batch(sig, n, features=features, method=s.method, pool_size=s.pool_size, seed=seed)
        selected.extend(pool[i] for i in idx)
    _write_frames(os.path.join(_iter_dir(run_dir, k), "selected.xyz"), selected)
    by = {}
    for a in selected:
        by[a.info.get("al_structure", "?")] = by.get(a.info.get("al_structure", "?"), 0) + 1
    n_stop = sum(bool(a.info.get("al_stop_frame", False)) for a in selected)
    _say(progress, f"iteration {k}: selected {len(selected)} of {len(candidates)} candidates ({s.method}"
         + (": " + ", ".join(f"{n} {name}" for name, n in sorted(by.items())) if by else "")
         + (f"; {n_stop} stop frames above sigma_hi" if stop else "") + ")")
    return {"n_selected": len(selected), "n_stop_frames": n_stop, "by_structure": by, "wall_s": time.monotonic() - t0}


def _label(config, run_dir, k, progress) -> dict:
    from mlpjax.active.labelling import label

    t0 = time.monotonic()
    selected = _read_frames(os.path.join(_iter_dir(run_dir, k), "selected.xyz"))
    for a in selected:
        a.arrays.pop("forces_std", None)
    _say(progress, f"iteration {k}: labelling {len(selected)} structures with {config.oracle.describe()}")
    rep = label(selected, config.oracle, _labels_path(run_dir, k), workers=config.label.workers,
                timeout_s=config.label.timeout_s, progress=False)
    n_new = rep.n_structures - len(rep.failures)
    if rep.failures:
        _say(progress, f"iteration {k}: {len(rep.failures)} oracle failures recorded in {rep.failures_path} "
             f"(e.g. {rep.failures[0].reason}: {rep.failures[0].message[:120]})")
    return {"n_new_labels": n_new, "n_oracle_failures": len(rep.failures), "labelled_now": rep.n_labelled,
            "skipped": rep.n_skipped, "wall_s": time.monotonic() - t0}


# ----------------------------------------------------------------------------- report
def report_rows(state: dict) -> list[dict]:
    """The report (one dict per iteration, :data:`REPORT_COLUMNS`; None where a phase has not run)
    from a run's ``state.json`` contents."""
    rows = []
    for it in state.get("iterations", []):
        tr, ev, ex, se, lb = (it.get(p) or {} for p in PHASES)
        if not tr:
            continue
        row = {c: None for c in REPORT_COLUMNS}
        row.update(iteration=it["iteration"], n_labels=tr.get("n_labels"), n_new_labels=lb.get("n_new_labels"),
                   n_selected=se.get("n_selected"), n_oracle_failures=lb.get("n_oracle_failures"))
        for key in ("valid_energy_mae_meV_atom", "valid_force_mae_meV_A", "test_energy_mae_meV_atom", "test_force_mae_meV_A"):
            row[key] = ev.get(key)
        for key in ("sigma_max_eV_A", "sigma_mean_eV_A", "n_frames", "n_accurate", "n_failed_frames", "n_blowups"):
            row[key] = ex.get(key)
        row["n_candidates"] = ex.get("n_candidates")
        for phase, rec in zip(PHASES, (tr, ev, ex, se, lb)):
            row[f"{phase}_s"] = rec.get("wall_s")
        rows.append(row)
    return rows


def _write_report(run_dir: str, state: dict, *, plot: bool) -> list[dict]:
    from mlpjax.files import atomic_write_bytes

    rows = report_rows(state)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(REPORT_COLUMNS)
    for row in rows:
        w.writerow(["" if row[c] is None else (f"{row[c]:.6g}" if isinstance(row[c], float) else row[c])
                    for c in REPORT_COLUMNS])
    atomic_write_bytes(os.path.join(run_dir, "report.csv"), buf.getvalue().encode())
    _write_json(os.path.join(run_dir, "report.json"), {"columns": list(REPORT_COLUMNS), "rows": rows,
                                                       "finished": state.get("finished", False),
                                                       "stop_reason": state.get("stop_reason")})
    if plot:
        learning_curve_plot(rows, os.path.join(run_dir, "learning_curve.png"))
    return rows


def learning_curve_plot(rows: list[dict], path: str) -> None:
    """PNG: force MAE [meV/Å] (validation, test) against labelled configurations, and the
    exploration's max / mean σ [eV/Å] per iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 3.6))
    for key, label in (("valid_force_mae_meV_A", "validation"), ("test_force_mae_meV_A", "test")):
        pts = [(r["n_labels"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), "o-", label=label)
    ax.set_xlabel("labelled configurations")
    ax.set_ylabel("force MAE (meV/Å)")
    ax.set_title("learning curve")
    if ax.lines:
        ax.legend()
    for key, label in (("sigma_max_eV_A", "max σ"), ("sigma_mean_eV_A", "mean σ")):
        pts = [(r["iteration"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            bx.plot(*zip(*pts), "s-", label=label)
    bx.set_xlabel("iteration")
    bx.set_ylabel("max per-atom force σ (eV/Å)")
    bx.set_title("exploration")
    if bx.lines:
        bx.legend()
    fig.tight_layout()
    from mlpjax.files import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------- the loop
def default_output(config_path) -> str:
    """The run directory of a config file without ``output``: ``<stem>_run`` in the working directory."""
    return os.path.splitext(os.path.basename(os.fspath(config_path)))[0] + "_run"


def run_active(config: ActiveConfig, output_dir=None, *, progress: bool = True) -> ActiveResult:
    """Run (or resume) the loop of the module docstring in ``output_dir`` (default ``config.output``).

    Returns an :class:`ActiveResult`. Raises :class:`~mlpjax.config.ConfigError` for inputs the loop
    cannot use (missing run directory setting, structures MD cannot run, another config on a
    resumed directory, a directory in use), :class:`mlpjax.data.DataError` for bad data files.
    """
    run_dir = os.fspath(output_dir) if output_dir is not None else config.output
    if run_dir is None:
        raise ConfigError("say where the run goes: output in the config or output_dir= (mlpjax active --output DIR)",
                          option="output")
    run_dir = os.path.abspath(run_dir)
    initial = _read_labelled(config.initial_data, "initial_data")
    sets = {"valid": _read_labelled(config.validation_data, "validation_data") if config.validation_data else None,
            "test": _read_labelled(config.test_data, "test_data") if config.test_data else None}
    species = {int(z) for c in initial for z in c.numbers}
    structures = _structures(config, species)
    os.makedirs(run_dir, exist_ok=True)
    lock = _Lock(run_dir)
    try:
        state = _State(run_dir, config)
        import yaml

        from mlpjax.files import atomic_write_bytes

        atomic_write_bytes(os.path.join(run_dir, "config.yaml"),
                           yaml.safe_dump(config.to_dict(), sort_keys=False).encode())
        if state.data["finished"]:
            last = len(state.data["iterations"]) - 1
            n = (state.done(last, "train") or {}).get("n_labels", 0)
            again = _stop_reason(config, last, n, state.done(last, "evaluate") or {})
            if again is not None or state.data["stop_reason"] in ("converged", "no_candidates"):
                _say(progress, f"the run in {run_dir} has finished ({state.data['stop_reason']}); nothing to do")
                rows = _write_report(run_dir, state.data, plot=True)
                return ActiveResult(run_dir, rows, state.data["stop_reason"], os.path.join(run_dir, "model.mlpjax"), n)
            state.data.update(finished=False, stop_reason=None)  # a larger budget or more iterations: continue
        k = 0
        while True:
            data = None
            if state.done(k, "train") is None:
                data = _training_data(config, run_dir, k, initial)
                state.start(k, "train")
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="resume=True but no checkpoint")
                    state.finish(k, "train", _train(config, run_dir, k, data, progress))
                _write_report(run_dir, state.data, plot=False)
            tr = state.done(k, "train")
            if state.done(k, "evaluate") is None:
                state.start(k, "evaluate")
                state.finish(k, "evaluate", _evaluate(config, k, tr, sets, progress))
                _write_report(run_dir, state.data, plot=True)
            reason = _stop_reason(config, k, tr["n_labels"], state.done(k, "evaluate"))
            if reason is None and state.done(k, "explore") is None:
                state.start(k, "explore")
                state.finish(k, "explore", _explore(config, run_dir, k, tr["model"], structures, progress))
                _write_report(run_dir, state.data, plot=True)
            if reason is None:
                ex = state.done(k, "explore")
                if ex["n_candidates"] == 0 and not ex.get("n_stop_frames", 0):
                    reason = "converged" if ex["n_failed_frames"] == 0 else "no_candidates"
            if reason is not None:
                return _finish(config, run_dir, state, k, reason, progress)
            if state.done(k, "select") is None:
                n_max = config.select.max_selected
                if config.stop.max_labels is not None:
                    n_max = min(n_max, config.stop.max_labels - tr["n_labels"])
                state.start(k, "select")
                state.finish(k, "select", _select(config, run_dir, k, n_max, progress))
            if state.done(k, "label") is None:
                state.start(k, "label")
                state.finish(k, "label", _label(config, run_dir, k, progress))
                _write_report(run_dir, state.data, plot=False)
            k += 1
    finally:
        lock.release()


def _finish(config, run_dir, state, k, reason, progress) -> ActiveResult:
    tr = state.done(k, "train")
    model = os.path.join(run_dir, "model.mlpjax")
    tmp = model + ".tmp"
    shutil.copyfile(tr["model"], tmp)
    os.replace(tmp, model)
    state.data.update(finished=True, stop_reason=reason, current=None, model=model)
    state.save()
    rows = _write_report(run_dir, state.data, plot=True)
    why = {"target": f"force MAE target {config.stop.force_mae_meV_A:g} meV/Å reached" if config.stop.force_mae_meV_A else "",
           "max_iterations": f"{config.stop.max_iterations} iterations done",
           "label_budget": f"label budget {config.stop.max_labels} reached",
           "converged": f"every explored frame is within sigma_lo = {config.select.sigma_lo:g} eV/Å",
           "no_candidates": f"no frame between sigma_lo and sigma_hi (all uncertain frames are above sigma_hi = "
                            f"{config.select.sigma_hi:g} eV/Å): raise sigma_hi or train longer"}[reason]
    _say(progress, f"finished after iteration {k}: {why}; {tr['n_labels']} labelled configurations; model {model}")
    return ActiveResult(run_dir, rows, reason, model, int(tr["n_labels"]))
