"""Training: normalisation from the data, jitted steps, EMA, early stopping, checkpoints.

One idea per module:

* :mod:`~mlpjax.training.prepare` — the data split, the unit sanity check, the float dtype
  and :func:`prepare_potential` (E0, energy shift and scale, initial parameters; or, for
  fine-tuning with ``init_from``, a trained model's parameters with re-fitted E0);
* :mod:`~mlpjax.training.loss` — error sums over a padded batch and the dimensionless loss
  (formula in :mod:`mlpjax.config`);
* :mod:`~mlpjax.training.steps` — optimiser, schedule, plateau controller and the jitted
  ``train_step`` / ``eval_step``, compiled once per architecture and step settings
  (:func:`compiled_steps`, a :func:`mlpjax.cache.compiled` factory; the fitted
  normalisation is a traced argument);
* :mod:`~mlpjax.training.sharding` — data-parallel steps over a 1-D ``"data"`` device mesh
  (``TrainConfig.devices``; the batch split into per-device sub-batches, results as on one device);
* :mod:`~mlpjax.training.distributed` — several hosts: ``jax.distributed`` (SLURM launch), each
  process's shard of the data, only process 0 writes;
* :mod:`~mlpjax.training.streaming` — training from a packed HDF5 file
  (:class:`mlpjax.data.PackedDataset`): budget and epoch order from per-structure counts, graphs
  built in a background thread ahead of the step, one-pass normalisation, streamed metrics;
* :mod:`~mlpjax.training.checkpoints` — checksummed, atomic checkpoints with a fallback;
* :mod:`~mlpjax.training.loop` — :func:`train` and :func:`finalize` (metrics, model file,
  parity plot), shared with closed-form fits (GAP).

Training imports neither MD nor the physical checks of :mod:`mlpjax.validate` (only its
metrics and parity plot, when a run finishes).
"""

from mlpjax.training.checkpoints import (
    CHECKPOINT_MAGIC,
    CHECKPOINT_NAME,
    PREV_CHECKPOINT_NAME,
    check_resumable,
    load_checkpoint,
    potential_from_checkpoint,
    save_checkpoint,
)
from mlpjax.training.distributed import is_main_process, process_shard
from mlpjax.training.loop import LOG_COLUMNS, TrainResult, finalize, train
from mlpjax.training.loss import error_sums, loss_from_sums
from mlpjax.training.prepare import (
    cast_floats,
    check_data_units,
    check_representable,
    data_sources,
    file_sha256,
    load_init_model,
    prepare_potential,
    refit_reference_energies,
    resolve_dtype,
    resolve_init_from,
    split_data,
)
from mlpjax.training.sharding import DataParallel, make_data_parallel, resolve_devices
from mlpjax.training.steps import (
    StepFns,
    StepSettings,
    TrainState,
    compiled_steps,
    frozen_labels,
    init_state,
    make_optimizer,
    make_plateau,
    make_schedule,
    make_step_fns,
    parameter_paths,
)

__all__ = [
    # loop
    "train", "TrainResult", "finalize", "LOG_COLUMNS",
    # prepare
    "prepare_potential", "split_data", "check_data_units", "resolve_dtype", "cast_floats", "data_sources",
    # prepare: transfer learning (init_from)
    "load_init_model", "resolve_init_from", "check_representable", "refit_reference_energies",
    "file_sha256",
    # steps
    "TrainState", "StepFns", "StepSettings", "compiled_steps", "make_step_fns", "init_state",
    "make_optimizer", "make_schedule", "make_plateau", "parameter_paths", "frozen_labels",
    # loss
    "error_sums", "loss_from_sums",
    # sharding / distributed
    "DataParallel", "make_data_parallel", "resolve_devices", "process_shard", "is_main_process",
    # checkpoints
    "save_checkpoint", "load_checkpoint", "potential_from_checkpoint", "check_resumable",
    "CHECKPOINT_NAME", "PREV_CHECKPOINT_NAME", "CHECKPOINT_MAGIC",
]
