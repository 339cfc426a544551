"""Training checkpoints: checksummed, written atomically (:mod:`mlpjax.files`), the previous one
kept as ``*.prev.ckpt`` and used when the latest is missing or damaged.

A checkpoint holds the :class:`mlpjax.training.steps.TrainState` (parameters, EMA, optimiser and
plateau state), the best EMA parameters so far, the epoch counters, the history, the config,
the potential's header (architecture and normalisation) and the data split, so that
:func:`mlpjax.training.train` with ``resume=True`` continues the run bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from mlpjax.files import CorruptFileError, read_checked, write_checked
from mlpjax.config import TrainConfig
from mlpjax.potential import Potential
from mlpjax.training.steps import TrainState

CHECKPOINT_MAGIC = b"MLPJAX-CHECKPOINT-1\n"
CHECKPOINT_NAME = "checkpoint.ckpt"
PREV_CHECKPOINT_NAME = "checkpoint.prev.ckpt"

# options that define a run: a checkpoint resumes only with the same values
_RESUME_FIXED = ("model", "model_config", "cutoff", "dtype", "seed", "batch_size", "valid_fraction", "test_fraction", "split_seed")


def json_record(rec: dict) -> dict:
    """A log record with plain floats, non-finite values as None (JSON has no NaN)."""
    return {k: (_jsonable(float(v)) if isinstance(v, (float, np.floating)) else v) for k, v in rec.items()}


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def save_checkpoint(path, *, state: TrainState, best_params, epoch: int, best_loss: float, best_epoch: int, bad_epochs: int,
                    history: list, config: TrainConfig, potential: Potential, split: dict, stop_reason: str = "",
                    epoch_step: int = 0) -> None:
    """Atomically write a checkpoint (the previous one is kept as ``*.prev.ckpt``).

    ``epoch`` is the last completed epoch; ``epoch_step`` > 0 says that many steps of
    epoch ``epoch + 1`` were also taken (a run cut by its time limit), so a resumed
    run skips them and continues that epoch where it stopped.
    """
    import flax.serialization

    path = os.fspath(path)
    header = potential.header()
    header.pop("metadata", None)
    payload = {
        "state": flax.serialization.to_state_dict(state),
        "best_params": best_params,
        "epoch": int(epoch),
        "best_loss": float(best_loss),
        "best_epoch": int(best_epoch),
        "bad_epochs": int(bad_epochs),
        "seed": int(config.seed),
        "stop_reason": stop_reason,
        "epoch_step": int(epoch_step),
        "history": json.dumps([json_record(r) for r in history]),
        "config": json.dumps(config.to_dict()),
        "potential": json.dumps(header),
        "split": json.dumps(split),
    }
    prev = previous_path(path)
    if os.path.exists(path):
        os.replace(path, prev)
    write_checked(path, CHECKPOINT_MAGIC, payload)


def previous_path(path: str) -> str:
    """Where the checkpoint before ``path`` is kept (``checkpoint.ckpt`` → ``checkpoint.prev.ckpt``)."""
    root, ext = os.path.splitext(path)
    return root + ".prev" + (ext or ".ckpt")


def load_checkpoint(path, *, fallback: bool = True) -> dict:
    """Read a checkpoint; a missing or corrupt file falls back to ``*.prev.ckpt`` with a warning.

    Returns the raw payload plus ``"path"`` (the file actually read). Raises
    :class:`CorruptFileError` when neither file is usable, FileNotFoundError when none exists.
    """
    path = os.fspath(path)
    prev = previous_path(path)
    try:
        payload = read_checked(path, CHECKPOINT_MAGIC, "checkpoint")
        payload["path"] = path
        return payload
    except (CorruptFileError, FileNotFoundError) as err:
        if not fallback or not os.path.exists(prev):
            if isinstance(err, CorruptFileError) and fallback:
                raise CorruptFileError(f"{err}; no previous checkpoint {prev} to fall back to") from err
            raise
        first = err
    warnings.warn(f"{first}; falling back to the previous checkpoint {prev}", stacklevel=2)
    try:
        payload = read_checked(prev, CHECKPOINT_MAGIC, "checkpoint")
    except CorruptFileError as err:
        raise CorruptFileError(f"both checkpoints are unusable: {first}; {err}") from err
    payload["path"] = prev
    return payload


def potential_from_checkpoint(path, *, best: bool = True) -> Potential:
    """The potential stored in a checkpoint (best EMA parameters, or the latest EMA ones)."""
    ck = load_checkpoint(path)
    header = json.loads(ck["potential"])
    params = ck["best_params"] if best else ck["state"]["ema_params"]
    return Potential.from_header(header, jax.tree_util.tree_map(jnp.asarray, params))


def check_resumable(config: TrainConfig, saved: dict, path: str) -> None:
    """Options that define the run must match the checkpoint's (epochs, max_time etc. may change)."""
    now = config.to_dict()
    diff = [k for k in _RESUME_FIXED if k in saved and now.get(k) != saved[k]]
    if diff:
        details = ", ".join(f"{k}: checkpoint {saved[k]!r} vs now {now[k]!r}" for k in diff)
        raise ValueError(f"cannot resume from {path}: the config changed ({details}); use the original settings or a new output_dir")
