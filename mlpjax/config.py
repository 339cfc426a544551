"""Training configuration: one frozen dataclass that maps 1:1 onto a YAML file.

Every field of :class:`TrainConfig` is a top-level YAML key with the same name; the
``model_config:`` block holds the chosen model's options (for SchNet the fields of
:class:`mlpjax.models.schnet.SchNetConfig`) and is validated through
:func:`mlpjax.models.make_config`. Unknown keys are an error naming the key and the
file, so a typo never silently falls back to a default.

Example ``train.yaml``::

    model: schnet
    model_config: {features: 64, interactions: 3, num_rbf: 32}
    cutoff: 5.0
    batch_size: 8
    epochs: 200
    learning_rate: 0.001
    schedule: warmup_cosine
    forces_weight: 1.0

Loss (see :mod:`mlpjax.train`): all terms are dimensionless, normalised by one
energy scale σ [eV] = RMS of the training forces (×1 Å), the same number the
potential multiplies its network output by (as in MACE/NequIP)::

    loss = w_E · mean_structures[ ((Ê - E) / N / σ)² ]
         + w_F · mean_components[ ((F̂ - F) / σ)² ]
         + w_S · mean_components[ ((σ̂_ij - σ_ij) · V / N / σ)² ]   (periodic structures with stress)

so energy per atom, force components (per Å) and virial per atom are compared on
the same scale. Forces already dominate this loss without extra weight: each
structure contributes 3N force components, and per-atom energy errors of a good
model are ~10× smaller than its force errors, so the force term is ~100× the energy
term. Defaults are therefore w_E = w_F = w_S = 1 (NequIP/Allegro use equal weights
too). A 10:1 forces:energy weighting was tried and rejected: on 48 rattled EMT Cu
cells (SchNet F=16, T=2, 30 epochs) it left the per-atom energy drifting
(validation MAE 42 meV/atom vs 5 meV/atom at 1:1) for a force MAE only 10 % lower
(41 vs 46 meV/Å). Raise ``forces_weight`` for force-driven applications (MD) once
the energy has settled, or ``energy_weight`` when total energies matter most.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

_OPTIMIZERS = ("adam", "adamw")
_SCHEDULES = ("warmup_cosine", "plateau", "constant")
_DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of a training run (YAML keys = field names)."""

    # --- model
    model: str = "schnet"  # registry name (mlpjax.models.available())
    model_config: dict = dataclasses.field(default_factory=dict)  # the model's options, e.g. {features: 64}
    cutoff: float = 5.0  # Å, neighbour cutoff of the model
    # --- data
    units: str = "eV"  # units the data FILES are written in (mlpjax.units.resolve_units); internal units are eV/Å
    valid_fraction: float = 0.1  # fraction of the training data held out for validation (when no valid set is given)
    test_fraction: float = 0.0  # fraction held out for the final test (when no test set is given)
    split_seed: int = 0  # seed of the random train/valid/test split (mlpjax.data.split)
    # --- optimisation
    batch_size: int = 8  # structures per batch
    epochs: int = 100  # maximum number of epochs
    max_time_minutes: float | None = None  # wall-clock limit; training stops (with a checkpoint) before it
    learning_rate: float = 1e-3  # peak learning rate
    optimizer: str = "adam"  # "adam" | "adamw"
    weight_decay: float = 0.0  # decoupled weight decay (adamw only)
    schedule: str = "warmup_cosine"  # "warmup_cosine" | "plateau" | "constant"
    warmup_epochs: float = 5.0  # linear warm-up length (warmup_cosine), clipped to half the run
    final_lr_fraction: float = 0.01  # warmup_cosine: final learning rate / peak
    plateau_factor: float = 0.5  # plateau: multiply the learning rate by this ...
    plateau_patience: int = 10  # ... after this many evaluations without improvement of the validation loss
    clip_grad_norm: float | None = 10.0  # global gradient-norm clipping (None disables)
    ema_decay: float = 0.99  # exponential moving average of the parameters per step (0 disables)
    patience: int | None = 50  # early stopping: epochs without a better validation loss (None disables)
    # --- loss (dimensionless; see the module docstring)
    energy_weight: float = 1.0  # per-atom energy term
    forces_weight: float = 1.0  # force-component term
    stress_weight: float = 1.0  # virial-per-atom term; used only for periodic structures with a stress label
    # --- bookkeeping
    seed: int = 0  # parameter initialisation and batch shuffling
    eval_every: int = 1  # epochs between validation passes
    checkpoint_every: int = 1  # epochs between checkpoints (also written on the last epoch / early stop / time limit)
    dtype: str = "float32"  # "float32" | "float64" (float64 switches on jax_enable_x64)

    def __post_init__(self):
        _validate(self)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model_config"] = dict(self.model_config)
        return d

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def model_config_obj(self):
        """The model's frozen config dataclass (validated)."""
        from mlpjax import models

        return models.make_config(self.model, self.model_config)


def _validate(cfg: TrainConfig) -> None:
    from mlpjax import models

    if not isinstance(cfg.model_config, dict):
        raise ValueError(f"model_config must be a mapping of {cfg.model} options, got {type(cfg.model_config).__name__}")
    models.make_config(cfg.model, cfg.model_config)  # unknown model / option → ValueError naming it
    if cfg.optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {cfg.optimizer!r}")
    if cfg.schedule not in _SCHEDULES:
        raise ValueError(f"schedule must be one of {_SCHEDULES}, got {cfg.schedule!r}")
    if cfg.dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {cfg.dtype!r}")
    checks = [
        ("cutoff", cfg.cutoff > 0),
        ("batch_size", int(cfg.batch_size) >= 1),
        ("epochs", int(cfg.epochs) >= 0),
        ("learning_rate", cfg.learning_rate > 0),
        ("weight_decay", cfg.weight_decay >= 0),
        ("warmup_epochs", cfg.warmup_epochs >= 0),
        ("final_lr_fraction", 0 <= cfg.final_lr_fraction <= 1),
        ("plateau_factor", 0 < cfg.plateau_factor <= 1),
        ("plateau_patience", int(cfg.plateau_patience) >= 0),
        ("ema_decay", 0 <= cfg.ema_decay < 1),
        ("energy_weight", cfg.energy_weight >= 0),
        ("forces_weight", cfg.forces_weight >= 0),
        ("stress_weight", cfg.stress_weight >= 0),
        ("eval_every", int(cfg.eval_every) >= 1),
        ("checkpoint_every", int(cfg.checkpoint_every) >= 1),
        ("valid_fraction", 0 <= cfg.valid_fraction < 1),
        ("test_fraction", 0 <= cfg.test_fraction < 1),
        ("valid_fraction + test_fraction", cfg.valid_fraction + cfg.test_fraction < 1),
    ]
    for name, ok in checks:
        if not ok:
            raise ValueError(f"invalid {name} in the training config: {_describe(cfg, name)}")
    if cfg.max_time_minutes is not None and not cfg.max_time_minutes > 0:
        raise ValueError(f"max_time_minutes must be > 0 or null, got {cfg.max_time_minutes}")
    if cfg.clip_grad_norm is not None and not cfg.clip_grad_norm > 0:
        raise ValueError(f"clip_grad_norm must be > 0 or null, got {cfg.clip_grad_norm}")
    if cfg.patience is not None and not int(cfg.patience) >= 1:
        raise ValueError(f"patience must be >= 1 or null, got {cfg.patience}")
    if cfg.energy_weight == 0 and cfg.forces_weight == 0 and cfg.stress_weight == 0:
        raise ValueError("all loss weights are zero; set energy_weight/forces_weight/stress_weight")


def _describe(cfg, name):
    if "+" in name:
        return f"valid_fraction={cfg.valid_fraction} + test_fraction={cfg.test_fraction} must be < 1"
    return f"{name}={getattr(cfg, name)!r}"


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(name: str, value: Any) -> Any:
    """YAML scalars to the field's type (ints written for floats, '1e-3' strings PyYAML leaves as str)."""
    if value is None:
        return None
    if name == "model_config":
        return dict(value)
    default = _FIELDS[name].default
    if isinstance(default, bool):
        return bool(value)
    if isinstance(default, float) or name in ("max_time_minutes", "clip_grad_norm"):
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {value!r}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{name} must be a number, got {value!r}")
    if isinstance(default, int) or name == "patience":
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return value


def config_from_dict(values: dict | None, *, source: str | None = None) -> TrainConfig:
    """A :class:`TrainConfig` from a plain dict (e.g. parsed YAML); unknown keys raise ValueError."""
    values = dict(values or {})
    where = f" in {source}" if source else ""
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ValueError(
            f"unknown training option(s) {unknown}{where}; known options: {sorted(_FIELDS)}"
        )
    try:
        kwargs = {k: _coerce(k, v) for k, v in values.items()}
        for k in ("model", "model_config"):
            if k in kwargs and kwargs[k] is None:
                del kwargs[k]
        return TrainConfig(**kwargs)
    except ValueError as err:
        if source:
            raise ValueError(f"{source}: {err}") from err
        raise


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read a YAML training config; unknown keys → ValueError naming the key and the file."""
    import yaml

    path = os.fspath(path)
    with open(path) as f:
        try:
            values = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML: {err}") from err
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must contain a mapping of training options, got {type(values).__name__}")
    return config_from_dict(values, source=path)


def dump_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML (every field, so the file documents the run completely)."""
    import yaml

    from mlpjax._io import atomic_write_bytes

    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)
    atomic_write_bytes(path, text.encode())


def override(cfg: TrainConfig, **flags) -> TrainConfig:
    """``cfg`` with command-line flags applied; a flag whose value is None was not given.

    ``model_config`` given as a dict is merged into the existing one (so
    ``--features 128`` style overrides need not repeat the other options).
    """
    changes = {k: v for k, v in flags.items() if v is not None}
    unknown = sorted(set(changes) - set(_FIELDS))
    if unknown:
        raise ValueError(f"unknown training option(s) {unknown}; known options: {sorted(_FIELDS)}")
    changes = {k: _coerce(k, v) for k, v in changes.items()}
    if "model_config" in changes and "model" not in changes:
        changes["model_config"] = {**cfg.model_config, **changes["model_config"]}
    return dataclasses.replace(cfg, **changes)
