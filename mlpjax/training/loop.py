"""The training loop: :func:`train` (epochs, EMA evaluation, early stopping, time limit,
checkpoints, logs) and :func:`finalize` (metrics, model file, parity plot).

Pipeline of :func:`train`:

1. Split (when no validation/test set is given) with :func:`mlpjax.training.split_data`
   (``valid_fraction``, ``test_fraction``, ``split_seed``); the indices go into the
   model file's metadata.
2. :func:`mlpjax.training.prepare_potential` (training data only): reference energies,
   ``energy_shift``, ``energy_scale``, ``avg_num_neighbors`` and initial parameters.
3. Neighbour lists on the host once (:func:`mlpjax.graph.to_graphs`); one padding
   budget over train+valid (:func:`mlpjax.graph.make_budget`), so the train step and
   the evaluation step each compile once.
4. ``train_step(state, batch) -> (state, aux)`` (:func:`mlpjax.training.make_step_fns`):
   a pure function; forces and stress come from the potential's single gradient. The
   exponential moving average (EMA) of the parameters is what is evaluated,
   checkpointed as "best" and saved.
5. Every ``eval_every`` epochs the EMA parameters are evaluated on the validation
   set; the best ones are kept; ``patience`` epochs without improvement stop the
   run; ``max_time_minutes`` stops it before the wall-clock limit (checked after
   every step).
6. ``output_dir``: ``checkpoint.ckpt`` (+ ``checkpoint.prev.ckpt``), ``log.csv``,
   ``log.json``, ``config.yaml``, and at the end ``model.mlpjax`` (best EMA
   parameters) and ``parity.png`` (test set, else validation set).

Data larger than memory: a packed training set (:class:`mlpjax.data.PackedDataset`, ``train_file:
data.h5`` from ``mlpjax data pack``) is streamed from disk instead (:mod:`mlpjax.training.streaming`):
graphs built on demand in a background thread, the same budget, batches and losses as in memory.

Resume (``resume=True``) restores parameters, EMA, optimiser and plateau state, epoch,
best loss, patience counter and history and continues with the next epoch (or inside
the epoch a time limit cut). Batch shuffling uses ``seed + epoch``, so a resumed run
follows the same trajectory as an uninterrupted one.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import os
import time
import warnings
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mlpjax import data as _data
from mlpjax import models as _models
from mlpjax.files import atomic_write_bytes
from mlpjax.config import ConfigError, TrainConfig, dump_config
from mlpjax.graph import AtomGraph, Budget, batches, make_budget, to_graphs
from mlpjax.ensemble import from_potential as ensemble_from_potential
from mlpjax.ensemble import is_ensemble
from mlpjax.potential import Potential
from mlpjax.training.checkpoints import (
    CHECKPOINT_NAME,
    check_resumable,
    json_record,
    load_checkpoint,
    previous_path,
    save_checkpoint,
)
from mlpjax.training.distributed import initialize as initialize_distributed
from mlpjax.training.distributed import is_main_process
from mlpjax.training.loss import summarize
from mlpjax.training.prepare import (
    cast_floats,
    check_data_units,
    data_sources,
    prepare_potential,
    resolve_dtype,
    split_data,
)
from mlpjax.training import streaming as _streaming
from mlpjax.training.sharding import make_data_parallel, resolve_devices
from mlpjax.training.steps import (TrainState, init_member_states, init_state, make_member_step, make_plateau,
                                   make_step_fns)

LOG_COLUMNS = (
    "epoch",
    "time_s",
    "epoch_time_s",
    "lr",
    "train_loss",
    "valid_loss",
    "valid_energy_mae_meV_per_atom",
    "valid_energy_rmse_meV_per_atom",
    "valid_force_mae_meV_per_A",
    "valid_force_rmse_meV_per_A",
    "valid_stress_mae_meV_per_A3",
    "best_valid_loss",
    "steps",  # optimiser steps taken by the end of the epoch (cumulative)
    "epoch_fraction",  # 1 for a whole epoch; < 1 for the epoch the time limit cut
)


@dataclasses.dataclass
class TrainResult:
    potential: Potential  # best EMA parameters, with metadata
    history: list  # one dict per epoch (LOG_COLUMNS)
    test_metrics: dict | None  # mlpjax.validate.metrics on the test set (None without one)
    valid_metrics: dict | None  # on the validation set with the best parameters
    paths: dict  # model, checkpoint, log_csv, log_json, config, parity (absent when not written)
    best_epoch: int
    epochs_completed: int
    stop_reason: str  # "epochs" | "early_stopping" | "max_time"
    start_epoch: int  # first epoch run in this call (1 for a fresh run)
    state: TrainState | None = None  # final training state
    steps: int = 0  # optimiser steps taken in total (all calls, when resumed)
    partial_epoch_fraction: float = 0.0  # > 0: the time limit stopped training this far into epoch epochs_completed + 1
    step_time_s: float | None = None  # s, median wall time per training step measured in this call (None: too few steps)


def _batch_groups(graphs: Sequence[AtomGraph], budget: Budget) -> int:
    """Number of batches :func:`mlpjax.graph.batches` yields for ``graphs`` in order."""
    count, nodes, edges, k = 0, 0, 0, 0
    for g in graphs:
        if k and (nodes + g.n_atoms + 1 > budget.n_nodes or edges + g.n_edges > budget.n_edges or k + 2 > budget.n_graphs):
            count += 1
            nodes = edges = k = 0
        nodes += g.n_atoms
        edges += g.n_edges
        k += 1
    return count + (1 if k else 0)


def _member_training_sets(config: TrainConfig, graphs: Sequence[AtomGraph]) -> list:
    """Each full-ensemble member's training graphs: all of them, or (``bootstrap``) n draws with
    replacement, member m from ``default_rng([seed, m])``."""
    members = int(config.ensemble_size)
    if not config.bootstrap:
        return [list(graphs)] * members
    n = len(graphs)
    return [[graphs[i] for i in np.random.default_rng([int(config.seed), m]).integers(0, n, n)] for m in range(members)]


def _member_sharding(members: int, n_devices: int) -> Callable:
    """``tree -> tree`` placing every leaf with a leading member axis ``[members, ...]`` sharded
    over ``n_devices`` local devices (mesh axis ``"member"``), other leaves replicated. The vmapped
    member step then runs each device's members there: members never exchange anything, so the
    results are those of one device (``tests/test_ensemble_devices.py``)."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    if jax.process_count() > 1:
        raise ConfigError("a full ensemble shards its members over the devices of one process; several processes "
                          "(jax.distributed) are not supported for ensembles", option="devices")
    if members % n_devices:
        raise ConfigError(f"devices {n_devices} must divide the {members} ensemble members", option="devices")
    mesh = Mesh(np.array(jax.local_devices()[:n_devices]), ("member",))
    split, same = NamedSharding(mesh, PartitionSpec("member")), NamedSharding(mesh, PartitionSpec())

    def place(tree):
        return jax.tree_util.tree_map(
            lambda x: jax.device_put(x, split if np.ndim(x) and np.shape(x)[0] == members else same), tree)

    return place


def _member_batches(member_graphs: list, budget: Budget, seed: int, epoch: int, dtype):
    """One epoch of a full ensemble: ``(batch [M, ...], active [M])`` per step, member m shuffled with
    its own seed. A member with fewer batches repeats its last one with ``active`` False (its state
    does not change), so the step keeps one shape."""
    per_member = [list(batches(g, budget, shuffle=True, seed=(seed * 100003 + epoch) * 7919 + m, dtype=dtype))
                  for m, g in enumerate(member_graphs)]
    n_steps = max(len(b) for b in per_member)
    for k in range(n_steps):
        chosen = [b[min(k, len(b) - 1)] for b in per_member]
        active = np.array([k < len(b) for b in per_member])
        yield jax.tree_util.tree_map(lambda *xs: np.stack(xs), *chosen), active


def _evaluate(eval_step, params, eval_batches, sigma: float, weights) -> dict:
    """Loss and MAE/RMSE of ``params`` over ``eval_batches`` (error sums added over the batches)."""
    totals = None
    for b in eval_batches:
        s = eval_step(params, b)
        totals = s if totals is None else jax.tree_util.tree_map(jnp.add, totals, s)
    return summarize(jax.device_get(totals), sigma, weights)


# --------------------------------------------------------------------- logs
def _write_logs(output_dir: str, history: list) -> None:
    if not is_main_process():  # several processes: process 0 writes the logs
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(LOG_COLUMNS), extrasaction="ignore")
    w.writeheader()
    for rec in history:
        w.writerow({k: ("" if rec.get(k) is None else rec.get(k)) for k in LOG_COLUMNS})
    atomic_write_bytes(os.path.join(output_dir, "log.csv"), buf.getvalue().encode())
    atomic_write_bytes(
        os.path.join(output_dir, "log.json"), json.dumps([json_record(r) for r in history], indent=1).encode()
    )


def finalize(config: TrainConfig, potential: Potential, *, output_dir: str, train_set, valid_set, test_set, all_input,
             valid_configs, test_configs, split_info: dict, extra_metadata: dict):
    """Metrics on the validation/test sets, metadata, the model file and the parity plot.

    Shared by gradient training (:func:`train`) and closed-form fits (:func:`mlpjax.models.gap.fit`).
    Returns (potential with metadata, valid_metrics, test_metrics, paths).
    """
    # imported here, not at the top: the package mlpjax.validate loads its physical checks too
    from mlpjax.validate.metrics import metrics, parity_plot

    def measured(configs):  # a packed set: streamed, the same numbers
        return _streaming.metrics(potential, configs) if _streaming.is_streamed(configs) else metrics(potential, configs)

    def sources(configs):
        return [configs.path] if _streaming.is_streamed(configs) else data_sources(configs)

    valid_metrics = measured(valid_set) if valid_set else None
    test_metrics = measured(test_set) if test_set else None
    metadata = {
        "units": config.units,  # units the training data files were written in (mlpjax.units.resolve_units name)
        "internal_units": {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom", "stress": "eV/Angstrom^3"},
        "species": [int(z) for z in potential.species],
        "split": split_info,
        "data_files": {
            "train": sources(all_input),
            "valid": sources(valid_configs) if valid_configs is not None else None,
            "test": sources(test_configs) if test_configs is not None else None,
        },
        "n_train": len(train_set),
        "n_valid": len(valid_set) if valid_set else 0,
        "n_test": len(test_set) if test_set else 0,
        "train_config": config.to_dict(),
        **({"init_from": potential.metadata["init_from"]} if "init_from" in potential.metadata else {}),  # fine-tuned
        **extra_metadata,
        "valid_metrics": json_record(valid_metrics) if valid_metrics else None,
        "test_metrics": json_record(test_metrics) if test_metrics else None,
    }
    final = potential.replace(metadata=metadata)
    if valid_set and hasattr(final, "with_calibration"):  # an ensemble: σ calibrated on the validation set
        from mlpjax.validate.uncertainty import fit_calibration

        c = fit_calibration(final.predict_uncertain(valid_set, calibrated=False), valid_set)
        final = final.with_calibration(c.energy, c.forces, c.stress)
        metadata["calibration"] = {"set": "valid", **c.as_dict()}
    model_path = os.path.join(output_dir, "model.mlpjax")
    writer = is_main_process()  # several processes (mlpjax.training.distributed): process 0 writes
    if writer:
        final.save(model_path)
    paths = {
        "model": model_path,
        "log_csv": os.path.join(output_dir, "log.csv"),
        "log_json": os.path.join(output_dir, "log.json"),
        "config": os.path.join(output_dir, "config.yaml"),
    }
    plot_set = test_set or valid_set
    if plot_set and writer:
        try:
            paths["parity"] = os.path.join(output_dir, "parity.png")
            title = f"{'test' if test_set else 'validation'} set"
            if _streaming.is_streamed(plot_set):  # a packed set: its first structures
                shown = _streaming.sample(plot_set, _streaming.PARITY_SAMPLE)
                title += f" (first {len(shown)} of {len(plot_set)} structures)" if len(shown) < len(plot_set) else ""
                plot_set = shown
            parity_plot(final, plot_set, paths["parity"], title=title)
        except Exception as err:  # a plotting problem must not lose a trained model
            warnings.warn(f"could not write the parity plot: {err}", stacklevel=2)
            paths.pop("parity", None)
    return final, valid_metrics, test_metrics, paths


# --------------------------------------------------------------------- wall clock
class _StepClock:
    """Wall-clock bookkeeping of the training loop: step times, the time budget, the epoch estimate.

    Times are host seconds (``time.monotonic``). Steps are dispatched asynchronously;
    the loop calls :meth:`tick` once the previous step's loss is ready, so successive
    ticks are one step apart (host batch packing included, which is what a step costs).
    The first tick of a call includes the compilation of the step.
    """

    _REPORT_AFTER = 5  # steady-state steps measured before the time per step is reported

    def __init__(self, t_start: float, max_time_s: float | None, steps_per_epoch: int, n_eval_batches: int):
        self.t_start = t_start
        self.deadline = None if max_time_s is None else t_start + max_time_s  # monotonic s
        self.steps_per_epoch = int(steps_per_epoch)
        self.n_eval_batches = int(n_eval_batches)
        self.first_step_s: float | None = None  # s, the first step of this call (compilation + one step)
        self.step_s: list[float] = []  # s, later steps
        self.eval_s: float | None = None  # s, the last validation pass
        self.reported = False
        self._last: float | None = None

    def mark(self, t: float) -> None:
        """Start timing from ``t`` (the start of an epoch: evaluation time is not step time)."""
        self._last = t

    def tick(self) -> float:
        now = time.monotonic()
        if self._last is not None:
            dt = now - self._last
            if self.first_step_s is None:
                self.first_step_s = dt
            else:
                self.step_s.append(dt)
        self._last = now
        return now

    def eval_done(self, seconds: float) -> None:
        self.eval_s = float(seconds)

    def step_time(self) -> float | None:
        """Median of the last 50 steady-state step times [s] (None before any)."""
        return float(np.median(self.step_s[-50:])) if self.step_s else None

    def eval_estimate(self) -> float:
        """Expected time of one validation pass [s]: measured, or (before the first) compilation
        plus one forward and force pass per batch, each taken as half a training step."""
        if self.eval_s is not None:
            return self.eval_s
        step = self.step_time() or 0.0
        return 0.5 * (self.first_step_s or 0.0) + 0.5 * step * self.n_eval_batches

    def epoch_estimate(self) -> float | None:
        """Expected wall time of one epoch with its validation pass [s]."""
        step = self.step_time()
        return None if step is None else step * self.steps_per_epoch + self.eval_estimate()

    _FINAL_S = 2.0  # s, writing the model and the parity plot after the last evaluation

    def over_budget(self) -> bool:
        """True when one more step and what follows a stop would pass the limit: the validation pass,
        the final metrics (one more pass, taken as long as the validation pass) and writing the files."""
        if self.deadline is None:
            return False
        reserve = 2.0 * self.eval_estimate() + self._FINAL_S
        return time.monotonic() + (self.step_time() or 0.0) + reserve > self.deadline

    def ready_to_report(self, end_of_epoch: bool = False) -> bool:
        return len(self.step_s) >= self._REPORT_AFTER or bool(end_of_epoch and self.step_s)


def _report_step_time(clock: _StepClock, config: TrainConfig, epoch: int, say: Callable[[str], None]) -> None:
    """After the first steps: the measured time per step, the expected epoch time, and a warning
    when one epoch will not fit the remaining time budget."""
    clock.reported = True
    step, per_epoch = clock.step_time(), clock.epoch_estimate()
    n_epochs = int(config.epochs) - epoch + 1
    say(f"time per step {_duration(step)} (first step with compilation {_duration(clock.first_step_s)}); "
        f"one epoch of {clock.steps_per_epoch} steps + validation ≈ {_duration(per_epoch)}, "
        f"{n_epochs} epoch(s) ≈ {_duration(per_epoch * n_epochs)}")
    if clock.deadline is not None:
        left = clock.deadline - time.monotonic()
        if per_epoch > left:
            warnings.warn(
                f"one epoch (≈ {_duration(per_epoch)}) will not fit the remaining time budget ({_duration(max(left, 0.0))} of "
                f"max_time_minutes={config.max_time_minutes:g}): training stops inside epoch {epoch} with the parameters "
                "reached by then; for a full run use a smaller model (e.g. --preset small), a larger max_time_minutes "
                "or fewer training structures", stacklevel=3)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 1.0:
        return f"{1e3 * seconds:.0f} ms"
    if seconds < 120.0:
        return f"{seconds:.1f} s"
    if seconds < 7200.0:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _show_step(bar, clock: _StepClock, schedule, host_step: int, lr_peak: float, losses: list, history: list,
               force: bool = False) -> None:
    """Progress bar: one tick per step; loss, last validation MAEs and the current learning rate
    (three significant digits in e-notation, so warm-up values such as 3.00e-06 are readable)."""
    if bar is None:
        return
    if not force:
        bar.update(1)
    now = time.monotonic()
    if not force and now - getattr(bar, "_mlpjax_postfix_t", 0.0) < 0.5:
        return
    bar._mlpjax_postfix_t = now
    last_eval = next((r for r in reversed(history) if math.isfinite(r.get("valid_loss", math.nan))), None)
    shown = {"loss": f"{float(np.mean(losses[-1])):.3g}" if losses else "n/a"}
    if last_eval is not None:  # validation MAEs once there has been a validation pass
        shown["E"] = f"{last_eval.get('valid_energy_mae_meV_per_atom', math.nan):.3g}meV/at"
        shown["F"] = f"{last_eval.get('valid_force_mae_meV_per_A', math.nan):.3g}meV/Å"
    shown["lr"] = f"{float(schedule(host_step)) * lr_peak:.2e}"
    bar.set_postfix(shown, refresh=False)


# --------------------------------------------------------------------- train
def train(
    config: TrainConfig,
    train_configs: Sequence[_data.Configuration] | None = None,
    valid_configs: Sequence[_data.Configuration] | None = None,
    *,
    output_dir,
    test_configs: Sequence[_data.Configuration] | None = None,
    resume: bool = False,
    progress: bool = True,
    callbacks: Sequence[Callable[[dict], None]] | None = None,
    strict: bool = False,
) -> TrainResult:
    """Train a potential; see the module docstring.

    Args:
      config: hyperparameters.
      train_configs: labelled training data (split into train/valid/test by
        ``valid_fraction``/``test_fraction``/``split_seed`` where ``valid_configs`` /
        ``test_configs`` are not given). None: ``config.train_file`` (and ``valid_file`` /
        ``test_file`` for sets not given), a packed ``.h5`` opened lazily, any other file read with
        ``config.units``. A :class:`mlpjax.data.PackedDataset` (given or opened) is streamed from
        disk (:mod:`mlpjax.training.streaming`); valid/test sets may be packed too.
      output_dir: where logs, checkpoints, the model and the parity plot go.
      resume: continue from ``output_dir/checkpoint.ckpt`` (falling back to the
        previous checkpoint if the latest is corrupt; starting fresh with a warning
        if there is none).
      progress: tqdm progress bar over epochs with live validation MAEs.
      callbacks: called as ``cb(info)`` with ``info = {"event": "resume", "epoch",
        "state"}`` once after restoring a checkpoint and ``{"event": "epoch", "epoch",
        "record", "state", "potential"}`` after every epoch (after its checkpoint);
        an exception from a callback aborts training (the checkpoint is kept).
      strict: the unit sanity check (:mod:`mlpjax.data.unit_check`: energy against force
        consistency, force magnitudes, per-atom energy spread) raises
        :class:`mlpjax.data.DataError` instead of warning.

    ``config.max_time_minutes`` is checked after every step: when one more step plus the
    validation pass would pass it, training stops inside the epoch, evaluates, writes a
    checkpoint (from which ``resume`` continues that epoch where it stopped) and the model.
    After the first steps the measured time per step and the expected epoch time are
    printed (``progress``), with a warning when one epoch will not fit the budget.
    """
    train_configs, valid_configs, test_configs = _streaming.open_data(config, train_configs, valid_configs, test_configs)
    streamed = _streaming.is_streamed(train_configs)  # a packed training set: streamed from disk
    if streamed:
        _streaming.check_supported(config)
    def unit_sample(configs):  # a packed set: the unit check looks at its first structures
        return _streaming.sample(configs, _streaming.UNIT_CHECK_SAMPLE) if _streaming.is_streamed(configs) else configs

    check_data_units(unit_sample(train_configs), config, strict=strict)
    if valid_configs:
        check_data_units(unit_sample(valid_configs), config, strict=strict)
    if _models.fit_fn(config.model) is not None:  # closed-form fit (GAP): no epochs, no optimiser
        return _models.fit_fn(config.model)(config, train_configs, valid_configs, output_dir=output_dir,
                                            test_configs=test_configs, progress=progress)
    initialize_distributed()  # a no-op unless MLPJAX_DISTRIBUTED / MLPJAX_COORDINATOR is set
    progress = progress and is_main_process()
    n_devices = 1 if int(config.devices) == 1 else resolve_devices(config)  # before any data work: errors first
    t_start = time.monotonic()
    callbacks = list(callbacks or [])
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    ckpt_path = os.path.join(output_dir, CHECKPOINT_NAME)
    dtype = resolve_dtype(config)
    all_input = train_configs if streamed else list(train_configs)
    if not all_input:
        raise ValueError("no training configurations")

    # ---- fine-tuning: the model file's architecture (and ensemble size) wins; resolved before a resume
    # compares this config with the checkpoint's
    source = None
    if config.init_from is not None:
        from mlpjax.training.prepare import load_init_model, resolve_init_from

        source = load_init_model(config.init_from)
        config = resolve_init_from(config, source=source)
        if is_ensemble(source):
            if int(config.ensemble_size) > 1 and int(config.ensemble_size) != source.n_members:
                raise ConfigError(f"ensemble_size {config.ensemble_size} differs from the {source.n_members} members of "
                                  f"{config.init_from}; leave ensemble_size out or set it to {source.n_members}",
                                  option="ensemble_size")
            config = config.replace(ensemble_size=source.n_members, ensemble_kind=source.kind)

    # ---- restore (before the split: the checkpoint's split wins)
    ck = None
    if resume:
        if os.path.exists(ckpt_path) or os.path.exists(previous_path(ckpt_path)):
            ck = load_checkpoint(ckpt_path)
            if ck["path"] != ckpt_path and os.path.exists(ckpt_path):
                os.replace(ckpt_path, os.path.join(output_dir, "checkpoint.corrupt.ckpt"))
            check_resumable(config, json.loads(ck["config"]), ck["path"])
        else:
            warnings.warn(f"resume=True but no checkpoint in {output_dir}; starting a fresh run", stacklevel=2)

    train_set, valid_set, test_set, split_info = split_data(config, all_input, valid_configs, test_configs)  # packed: views
    if ck is not None:
        saved_split = json.loads(ck["split"])
        if saved_split.get("n") != split_info["n"] or saved_split.get("train") != split_info["train"]:
            raise ValueError(
                f"the training data differ from those of the checkpoint {ck['path']} "
                f"({split_info['n']} vs {saved_split.get('n')} configurations or a different split); "
                "resume with the same data and split settings"
            )
    if valid_set is None:
        warnings.warn("no validation set (valid_fraction=0 and no valid_configs): monitoring the training set", stacklevel=2)

    # ---- potential and graphs
    if source is not None:  # fine-tuning: the model file's architecture and species table win
        from mlpjax.training.prepare import check_representable

        check_representable(source, config.init_from, train_set, valid_set, test_set)
        species = source.species  # the model's species indices, even where the new data have fewer elements
    elif streamed:  # one pass over the file: the species, E0, energy and force statistics, neighbour counts
        stats = train_set.statistics(cutoff=config.cutoff)
        species = stats.dataset.species
    else:
        species = _data.species_in(train_set)
    if streamed:  # graphs built when a batch needs them (in the prefetch thread)
        for name, other in (("validation", valid_set), ("test", test_set)):
            _streaming.check_species(other, species, what=name)
        train_graphs = _streaming.LazyGraphs(train_set, species, config.cutoff)
        valid_graphs = _streaming.graphs_of(valid_set, species, config.cutoff) if valid_set else []
    else:
        train_graphs = to_graphs(train_set, species, config.cutoff)
        valid_graphs = to_graphs(valid_set, species, config.cutoff) if valid_set else []
    if ck is not None:
        header = json.loads(ck["potential"])
        potential = Potential.from_header(header)
    elif streamed:
        potential = _streaming.prepare_potential(config, stats, train_graphs)
    else:
        potential = prepare_potential(config, train_set, graphs=train_graphs, species=species, source=source)
    members = int(config.ensemble_size)  # > 1: an ensemble (mlpjax.ensemble), trained in one vmapped step
    if is_ensemble(potential):  # resumed, or fine-tuned from an ensemble's file (active learning's warm start)
        members = potential.n_members
    if members > 1 and not is_ensemble(potential):
        potential = ensemble_from_potential(potential, members, kind=config.ensemble_kind, seed=int(config.seed),
                                            graphs=train_graphs)
    member_graphs = _member_training_sets(config, train_graphs) if members > 1 and config.ensemble_kind == "full" else None
    if streamed:  # the same budget and steps, from the structures' atom and edge counts
        budget = _streaming.budget_of([train_graphs, valid_graphs], config.batch_size)
        steps_per_epoch = _streaming.n_batches(train_graphs, budget)
        compute_stress = _streaming.compute_stress(config, train_set)
    else:
        budget = make_budget(train_graphs + valid_graphs, config.batch_size)
        steps_per_epoch = max(_batch_groups(g, budget) for g in (member_graphs or [train_graphs]))
        compute_stress = config.stress_weight > 0 and any(c.stress is not None and c.periodic for c in train_set)
    dp = None  # data parallel over a device mesh (mlpjax.training.sharding): devices != 1, or several processes
    member_sharding = None  # a full ensemble on several devices: its member axis sharded over them
    if member_graphs is not None and (n_devices > 1 or jax.process_count() > 1):
        member_sharding = _member_sharding(members, n_devices)
        fns = make_step_fns(potential, config, steps_per_epoch, compute_stress)
        say_devices = (f"ensemble members over {n_devices} {jax.local_devices()[0].platform} devices "
                       f"({members // n_devices} per device)")
    elif n_devices > 1 or jax.process_count() > 1:
        size = _streaming.sizes if streamed else (lambda g: g)  # streamed: the budget from the counts
        dp = make_data_parallel(potential, config, n_devices=n_devices, train_graphs=size(train_graphs),
                                valid_graphs=size(valid_graphs), compute_stress=compute_stress)
        steps_per_epoch, fns = dp.steps_per_epoch, dp.fns
        say_devices = dp.describe()
    else:
        fns = make_step_fns(potential, config, steps_per_epoch, compute_stress)
    member_step = None  # full ensembles: the single-model step vmapped over the members
    if member_graphs is not None:
        member_step = make_member_step(potential, config, steps_per_epoch, compute_stress)
        fns = fns._replace(optimizer=member_step.optimizer)
    plateau = make_plateau(config)
    sigma = potential.energy_scale_mean
    weights = (float(config.energy_weight), float(config.forces_weight), float(config.stress_weight))

    import flax.serialization

    def fresh_state(pot, learning_rate=1.0):
        if member_step is not None:  # leaves [M, ...]: one optimiser state per member
            return init_member_states(pot.params, fns.optimizer, plateau, learning_rate, members)
        return init_state(pot, fns.optimizer, plateau, learning_rate)

    if ck is None:
        state = fresh_state(potential, config.learning_rate)
        start_epoch, best_loss, best_epoch, bad_epochs, history = 1, math.inf, 0, 0, []
        best_params = state.ema_params
        stop_reason = ""
        skip_steps = 0
    else:
        template = fresh_state(potential.replace(params=cast_floats(potential.init_params(jax.random.PRNGKey(0)), dtype)))
        state = flax.serialization.from_state_dict(template, ck["state"])
        state = jax.tree_util.tree_map(jnp.asarray, state)
        # the configured learning rate applies on resume (× the restored plateau factor)
        state = state._replace(lr_scale=jnp.asarray(config.learning_rate * np.asarray(state.plateau_state.scale, np.float64), jnp.float32))
        best_params = jax.tree_util.tree_map(jnp.asarray, flax.serialization.from_state_dict(template.params, ck["best_params"]))
        start_epoch = int(ck["epoch"]) + 1
        best_loss, best_epoch, bad_epochs = float(ck["best_loss"]), int(ck["best_epoch"]), int(ck["bad_epochs"])
        history = [{k: (math.nan if v is None else v) for k, v in r.items()} for r in json.loads(ck["history"])]
        stop_reason = str(ck.get("stop_reason", ""))
        skip_steps = int(ck.get("epoch_step", 0))  # steps of epoch start_epoch already taken (a cut epoch)
        if history and history[-1].get("epoch_fraction", 1.0) < 1.0:
            history.pop()  # the cut epoch's record: replaced when the epoch completes
        if dp is not None:
            state, best_params = dp.replicate(state), dp.replicate(best_params)
        for cb in callbacks:
            cb({"event": "resume", "epoch": start_epoch - 1, "state": state})
    if dp is not None and ck is None:
        state = dp.replicate(state)  # parameters, EMA and optimiser state on every device of the mesh
        best_params = state.ema_params
    if member_sharding is not None:  # each device holds its members' parameters and optimiser state
        state, best_params = member_sharding(state), member_sharding(best_params)

    writer = is_main_process()  # several processes: only process 0 writes files
    if writer:
        dump_config(config, os.path.join(output_dir, "config.yaml"))
    eval_graphs = valid_graphs if valid_graphs else train_graphs
    if streamed:  # read again at every evaluation, in the background
        if dp is None:
            eval_batches = _streaming.Reiterable(
                lambda: _streaming.to_device(batches(eval_graphs, budget, shuffle=False, dtype=dtype)),
                _streaming.n_batches(eval_graphs, budget))
        else:
            eval_batches = _streaming.Reiterable(lambda: dp.batches(eval_graphs, shuffle=False, dtype=dtype),
                                                 dp.steps(len(eval_graphs)))
    elif dp is None:
        eval_batches = list(batches(eval_graphs, budget, shuffle=False, dtype=dtype))
    else:
        eval_batches = list(dp.batches(eval_graphs, shuffle=False, dtype=dtype))
    prev_time = history[-1]["time_s"] if history else 0.0

    def save(epoch, reason="", epoch_step=0):
        if not writer:
            return
        save_checkpoint(ckpt_path, state=state, best_params=best_params, epoch=epoch, best_loss=best_loss,
                        best_epoch=best_epoch, bad_epochs=bad_epochs, history=history, config=config,
                        potential=potential, split=split_info, stop_reason=reason, epoch_step=epoch_step)

    bar = None
    total_steps = int(config.epochs) * steps_per_epoch
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=min((start_epoch - 1) * steps_per_epoch + skip_steps, total_steps),
                   desc=f"epoch {start_epoch}/{int(config.epochs)}", unit="step", dynamic_ncols=True)
    say = (bar.write if bar is not None else print) if progress else (lambda _msg: None)
    if dp is not None or member_sharding is not None:
        say(say_devices)
    epoch = start_epoch - 1
    max_time = None if config.max_time_minutes is None else 60.0 * float(config.max_time_minutes)
    clock = _StepClock(t_start, max_time, steps_per_epoch, len(eval_batches))
    host_step = int(np.max(state.step))  # optimiser steps taken (host copy: no device sync per step)
    partial_fraction = 0.0  # fraction of an unfinished epoch done when the time limit stopped it
    try:
        if stop_reason == "early_stopping" or (config.patience is not None and bad_epochs >= config.patience):
            stop_reason = "early_stopping"
        else:
            stop_reason = "epochs"
            for epoch in range(start_epoch, int(config.epochs) + 1):
                if clock.over_budget():
                    stop_reason = "max_time"
                    epoch -= 1
                    break
                if bar is not None:
                    bar.set_description(f"epoch {epoch}/{int(config.epochs)}", refresh=False)
                t0 = time.monotonic()
                clock.mark(t0)
                plateau_factor = float(np.ravel(state.plateau_state.scale)[0]) if config.schedule == "plateau" else 1.0
                lr_peak = float(config.learning_rate) * plateau_factor
                lr = float(fns.schedule(host_step)) * lr_peak
                skip = skip_steps if epoch == start_epoch else 0
                if dp is not None:  # [D, ...] sub-batches sharded over the mesh
                    it = dp.batches(train_graphs, shuffle=True, seed=int(config.seed) * 100003 + epoch, dtype=dtype)
                elif member_step is None:
                    it = batches(train_graphs, budget, shuffle=True, seed=int(config.seed) * 100003 + epoch, dtype=dtype)
                else:  # (stacked batch, active): each member its own data order (and bootstrap sample)
                    it = _member_batches(member_graphs, budget, int(config.seed), epoch, dtype)
                    if member_sharding is not None:  # each device gets its members' batches
                        it = map(member_sharding, it)
                if streamed and dp is None:
                    it = _streaming.to_device(it)
                if skip:
                    it = itertools.islice(it, skip, None)
                if streamed:  # read, neighbour lists, packing and the device copy in a background thread
                    it = _streaming.prefetch(it)
                losses, pending, done, stopped = [], None, skip, False
                for batch in it:
                    if pending is not None:  # the previous step has finished: time it, check the budget
                        jax.block_until_ready(pending)
                        clock.tick()
                        _show_step(bar, clock, fns.schedule, host_step, lr_peak, losses, history)
                        if not clock.reported and clock.ready_to_report():
                            _report_step_time(clock, config, epoch, say)
                    if clock.over_budget():
                        stopped = True
                        break
                    state, aux = fns.train_step(state, batch) if member_step is None else member_step.train_step(state, *batch)
                    pending = aux["loss"]
                    losses.append(pending)
                    done += 1
                    host_step += 1
                if streamed:
                    it.close()  # stops the reading thread (a time-limit break leaves batches unread)
                if pending is not None and not stopped:
                    jax.block_until_ready(pending)
                    clock.tick()
                    _show_step(bar, clock, fns.schedule, host_step, lr_peak, losses, history)
                    if not clock.reported and clock.ready_to_report(end_of_epoch=True):
                        _report_step_time(clock, config, epoch, say)
                if stopped and not losses and not skip:  # the limit came before this epoch's first step
                    stop_reason = "max_time"
                    epoch -= 1
                    break
                train_loss = float(np.mean(jax.device_get(losses))) if losses else math.nan  # (members: their mean)
                if losses and not math.isfinite(train_loss):
                    save(epoch - 1)
                    raise FloatingPointError(
                        f"training loss became {train_loss} in epoch {epoch}; lower learning_rate or check the data "
                        f"(the last good checkpoint is {ckpt_path})"
                    )
                fraction = 1.0 if not stopped else min(done / max(steps_per_epoch, 1), 0.999)
                record = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "steps": host_step, "epoch_fraction": fraction}
                # an epoch cut by the time limit is still evaluated: its parameters are the ones written
                evaluated = stopped or epoch % int(config.eval_every) == 0 or epoch == int(config.epochs)
                if evaluated:
                    t_eval = time.monotonic()
                    ev = _evaluate(fns.eval_step, state.ema_params, eval_batches, sigma, weights)
                    clock.eval_done(time.monotonic() - t_eval)
                    record.update({"valid_loss": ev["loss"], **{f"valid_{k}": v for k, v in ev.items() if k != "loss"}})
                    if ev["loss"] < best_loss:
                        best_loss, best_epoch = ev["loss"], epoch
                        best_params = state.ema_params
                    bad_epochs = epoch - best_epoch  # epochs since the best validation loss
                    if config.schedule == "plateau" and not stopped:  # a cut epoch does not step the plateau
                        value = jnp.asarray(ev["loss"], jnp.float32)
                        update = lambda ps: plateau.update(jnp.zeros(()), ps, value=value)[1]  # noqa: E731
                        ps = jax.vmap(update)(state.plateau_state) if member_step is not None else update(state.plateau_state)
                        state = state._replace(plateau_state=ps, lr_scale=jnp.asarray(config.learning_rate * np.asarray(ps.scale, np.float64), jnp.float32))
                else:
                    record.update({k: math.nan for k in LOG_COLUMNS if k.startswith("valid_")})
                last_epoch_time = time.monotonic() - t0
                record["epoch_time_s"] = last_epoch_time
                record["time_s"] = prev_time + (time.monotonic() - t_start)
                record["best_valid_loss"] = best_loss
                history.append(record)
                if stopped:
                    stop_reason, partial_fraction = "max_time", fraction
                    save(epoch - 1, "max_time", epoch_step=done)  # resume continues inside this epoch
                    _write_logs(output_dir, history)
                    for cb in callbacks:
                        cb({"event": "partial_epoch", "epoch": epoch, "record": record, "state": state, "potential": potential})
                    break
                early = config.patience is not None and bad_epochs >= int(config.patience)
                last = epoch == int(config.epochs) or early
                if epoch % int(config.checkpoint_every) == 0 or last:
                    save(epoch, "early_stopping" if early else "")
                _write_logs(output_dir, history)
                if bar is not None:
                    _show_step(bar, clock, fns.schedule, host_step, lr_peak, losses, history, force=True)
                for cb in callbacks:
                    cb({"event": "epoch", "epoch": epoch, "record": record, "state": state, "potential": potential})
                if early:
                    stop_reason = "early_stopping"
                    break
            if stop_reason == "max_time" and partial_fraction == 0.0 and epoch >= start_epoch and epoch % int(config.checkpoint_every) != 0:
                save(epoch)
    finally:
        if bar is not None:
            bar.close()
    if stop_reason == "max_time":
        elapsed = time.monotonic() - t_start
        where = (f"{100 * partial_fraction:.0f} % into epoch {epoch}" if partial_fraction
                 else f"after epoch {epoch}")
        say(f"time limit of {config.max_time_minutes:g} min reached {where} ({host_step} steps, {elapsed / 60:.1f} min "
            f"so far); evaluated the last parameters, writing the best model (epoch {best_epoch if best_epoch else 'none'})")
    epochs_completed = max((int(r["epoch"]) for r in history if r.get("epoch_fraction", 1.0) >= 1.0), default=0)
    if epochs_completed == 0:
        best_params = state.ema_params
    if dp is not None:  # the model file and the final metrics: host copies, evaluated on one device
        best_params = jax.tree_util.tree_map(jnp.asarray, jax.device_get(best_params))
    if history:
        _write_logs(output_dir, history)

    # ---- final model, metrics, parity plot
    final, valid_metrics, test_metrics, paths = finalize(
        config, potential.replace(params=best_params), output_dir=output_dir, train_set=train_set, valid_set=valid_set,
        test_set=test_set, all_input=all_input, valid_configs=valid_configs, test_configs=test_configs,
        split_info=split_info, extra_metadata={
            "best_epoch": int(best_epoch), "epochs_completed": epochs_completed, "stop_reason": stop_reason,
            "loss": "w_E*mean(((E'-E)/N/s)^2) + w_F*mean(((F'-F)/s)^2) + w_S*mean(((S'-S)V/N/s)^2), s=energy_scale",
        })
    paths["checkpoint"] = ckpt_path
    return TrainResult(
        potential=final,
        history=history,
        test_metrics=test_metrics,
        valid_metrics=valid_metrics,
        paths=paths,
        best_epoch=int(best_epoch),
        epochs_completed=epochs_completed,
        stop_reason=stop_reason,
        start_epoch=start_epoch,
        state=state,
        steps=host_step,
        partial_epoch_fraction=partial_fraction,
        step_time_s=clock.step_time(),
    )
