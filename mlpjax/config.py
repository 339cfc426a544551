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

Loss (see :mod:`mlpjax.training.loss`): all terms are dimensionless, normalised by one
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
import numbers
import os
from typing import Any

_OPTIMIZERS = ("adam", "adamw")
_SCHEDULES = ("warmup_cosine", "plateau", "constant")
_ENSEMBLE_KINDS = ("full", "shallow")
_DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of a training run (YAML keys = field names)."""

    # --- model
    model: str = "schnet"  # registry name (mlpjax.models.available())
    model_config: dict = dataclasses.field(default_factory=dict)  # the model's options, e.g. {features: 64}
    cutoff: float = 5.0  # Å, neighbour cutoff of the model
    # --- data
    # data files (extxyz, ASE db/traj, MD17 npz: read into memory; a packed .h5 from `mlpjax data pack`: streamed
    # from disk, mlpjax.training.streaming). None: the data are passed to mlpjax.training.train (train_file then
    # records where they came from: `mlpjax train --train` sets it)
    train_file: str | None = None  # training data (split by valid_fraction/test_fraction where no valid/test set)
    valid_file: str | None = None  # validation data
    test_file: str | None = None  # test data (metrics and parity plot at the end)
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
    # --- devices (mlpjax.training.sharding: data parallel over a 1-D "data" mesh, results as on one device)
    devices: int = 1  # local devices each batch (a full ensemble: its members) is sharded over (1: one device; 0: all local ones)
    # --- ensembles (mlpjax.ensemble; the spread of the members is the uncertainty)
    ensemble_size: int = 1  # M members trained together in one vmapped step (1: a single model)
    ensemble_kind: str = "full"  # "full": M independent networks | "shallow": one network with M last-layer heads (Gaussian NLL)
    bootstrap: bool = False  # full ensembles: each member trains on its own bootstrap resample of the training set
    # --- transfer learning (start from a trained model)
    init_from: str | None = None  # model file (*.mlpjax): its architecture and parameters are the starting point
    freeze: tuple = ()  # parameter-path patterns (fnmatch on "params/layer/kernel") kept fixed during training
    refit_reference_energies: bool = True  # init_from: re-fit the per-element E0 on the new data

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


class ConfigError(ValueError):
    """A bad configuration value or command-line option.

    Raised for invalid :class:`TrainConfig` fields, YAML training configs (the message then
    starts with ``FILE line N:``), unknown units (:func:`mlpjax.units.resolve_units`) and the
    option checks of :mod:`mlpjax.cli`, which prints it as one line ``mlpjax CMD: error: ...``
    with exit status 2. The message names the option and lists the valid choices where there
    are some. A ValueError, so ``except ValueError`` callers keep working.

    Attributes: ``option`` (the field, YAML key or flag at fault; dotted for nested YAML keys,
    e.g. ``model_config.features``), ``source`` and ``line`` (the file and 1-based line it was
    read from; None when it was not read from a file).
    """

    def __init__(self, message: str, *, option: str | None = None, source: str | None = None, line: int | None = None):
        super().__init__(message)
        self.option, self.source, self.line = option, source, line


def _where(source: str | None, line: int | None) -> str:
    return "" if source is None else f"{source} line {line}" if line is not None else f"{source}"


def _fmt(value) -> str:
    return format(value, "g") if isinstance(value, float) else repr(value)


def suggest(name: str, known) -> str:
    """`` (did you mean …?)`` for the closest of ``known`` to ``name``, else ``""`` (error messages)."""
    import difflib

    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _validate(cfg: TrainConfig) -> None:
    from mlpjax import models
    from mlpjax.units import resolve_units

    if cfg.model not in models.available():
        raise ConfigError(f"unknown model {cfg.model!r}{suggest(cfg.model, models.available())}; "
                          f"choose from {', '.join(models.available())}", option="model")
    if not isinstance(cfg.model_config, dict):
        raise ConfigError(f"model_config must be a mapping of {cfg.model} options, got {type(cfg.model_config).__name__}",
                          option="model_config")
    known = [f.name for f in dataclasses.fields(models.config_class(cfg.model))]
    for key in cfg.model_config:
        if key not in known:
            raise ConfigError(f"unknown {cfg.model} option {key!r} in model_config{suggest(key, known)}; "
                              f"known: {', '.join(sorted(known))}", option=f"model_config.{key}")
    try:
        models.make_config(cfg.model, cfg.model_config)  # the model's own value checks
    except (ValueError, TypeError) as err:  # a bad value of a known option (the config dataclass's check)
        raise ConfigError(f"model_config: {err}", option="model_config") from err
    for name, choices in (("optimizer", _OPTIMIZERS), ("schedule", _SCHEDULES), ("dtype", _DTYPES),
                          ("ensemble_kind", _ENSEMBLE_KINDS)):
        value = getattr(cfg, name)
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}", option=name)
    resolve_units(cfg.units)  # ConfigError listing the known units
    for name, field in _FIELDS.items():  # numbers must be numbers before they are compared
        value = getattr(cfg, name)
        if value is None and name in _NULLABLE:
            continue
        if isinstance(field.default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be true or false, got {_fmt(value)}", option=name)
            continue
        if isinstance(field.default, (int, float)) and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            kind = "an integer" if isinstance(field.default, int) and name not in _FLOAT_FIELDS else "a number"
            raise ConfigError(f"{name} must be {kind}{' or null' if name in _NULLABLE else ''}, got {_fmt(value)}",
                              option=name)
    checks = [  # (field, valid?, what a valid value is)
        ("cutoff", cfg.cutoff > 0, "> 0 (Å)"),
        ("batch_size", cfg.batch_size >= 1, ">= 1"),
        ("epochs", cfg.epochs >= 0, ">= 0"),
        ("learning_rate", cfg.learning_rate > 0, "> 0"),
        ("weight_decay", cfg.weight_decay >= 0, ">= 0"),
        ("warmup_epochs", cfg.warmup_epochs >= 0, ">= 0"),
        ("final_lr_fraction", 0 <= cfg.final_lr_fraction <= 1, "in [0, 1]"),
        ("plateau_factor", 0 < cfg.plateau_factor <= 1, "in (0, 1]"),
        ("plateau_patience", cfg.plateau_patience >= 0, ">= 0"),
        ("ema_decay", 0 <= cfg.ema_decay < 1, "in [0, 1)"),
        ("energy_weight", cfg.energy_weight >= 0, ">= 0"),
        ("forces_weight", cfg.forces_weight >= 0, ">= 0"),
        ("stress_weight", cfg.stress_weight >= 0, ">= 0"),
        ("eval_every", cfg.eval_every >= 1, ">= 1"),
        ("checkpoint_every", cfg.checkpoint_every >= 1, ">= 1"),
        ("valid_fraction", 0 <= cfg.valid_fraction < 1, "in [0, 1)"),
        ("test_fraction", 0 <= cfg.test_fraction < 1, "in [0, 1)"),
        ("max_time_minutes", cfg.max_time_minutes is None or cfg.max_time_minutes > 0, "> 0 or null"),
        ("clip_grad_norm", cfg.clip_grad_norm is None or cfg.clip_grad_norm > 0, "> 0 or null"),
        ("patience", cfg.patience is None or cfg.patience >= 1, ">= 1 or null"),
        ("ensemble_size", cfg.ensemble_size >= 1, ">= 1"),
        ("devices", cfg.devices >= 0, ">= 0 (the number of local devices to shard each batch over; 0: all of them)"),
    ]
    for name, ok, valid in checks:
        if not ok:  # NaN fails every comparison, so it lands here too
            raise ConfigError(f"{name} must be {valid}, got {_fmt(getattr(cfg, name))}", option=name)
    if not cfg.valid_fraction + cfg.test_fraction < 1:
        raise ConfigError(f"valid_fraction + test_fraction must be < 1, got {_fmt(cfg.valid_fraction)} + "
                          f"{_fmt(cfg.test_fraction)}", option="valid_fraction")
    for name in ("train_file", "valid_file", "test_file"):
        value = getattr(cfg, name)
        if value is not None and not (isinstance(value, (str, os.PathLike)) and os.fspath(value)):
            raise ConfigError(f"{name} must be a data file path or null, got {_fmt(value)}", option=name)
    check_streaming(cfg)
    if cfg.init_from is not None and not isinstance(cfg.init_from, (str, os.PathLike)):
        raise ConfigError(f"init_from must be a model file path or null, got {_fmt(cfg.init_from)}", option="init_from")
    if not isinstance(cfg.freeze, tuple) or not all(isinstance(p, str) and p for p in cfg.freeze):
        raise ConfigError(f"freeze must be a list of parameter-path patterns (strings), got {_fmt(cfg.freeze)}",
                          option="freeze")
    if cfg.bootstrap and cfg.ensemble_size < 2:
        raise ConfigError("bootstrap resamples the training set per ensemble member: set ensemble_size >= 2",
                          option="bootstrap")
    if cfg.devices != 1 and cfg.ensemble_size > 1 and cfg.ensemble_kind != "full":
        raise ConfigError(f"devices {cfg.devices}: a shallow ensemble (one network, {cfg.ensemble_size} heads) "
                          "trains on one device: set devices: 1 (a full ensemble shards its members over devices)",
                          option="devices")
    if cfg.devices > 1 and cfg.ensemble_size > 1 and cfg.ensemble_size % cfg.devices:
        raise ConfigError(f"devices {cfg.devices} must divide ensemble_size {cfg.ensemble_size}: a full ensemble "
                          "shards its members over the devices, the same number on each", option="devices")
    if cfg.energy_weight == 0 and cfg.forces_weight == 0 and cfg.stress_weight == 0:
        raise ConfigError("all loss weights are zero; set energy_weight, forces_weight or stress_weight > 0", option="energy_weight")


def is_packed(path) -> bool:
    """True when ``path`` names a packed data set (a .h5/.hdf5 file: streamed from disk when trained on)."""
    from mlpjax.data.packed import is_packed_path  # here, not at the top: mlpjax.data imports this module

    return is_packed_path(path)


def check_streaming(cfg: TrainConfig, *, train_is_packed: bool | None = None) -> None:
    """ConfigError for what training from a packed (streamed) training set does not do: ensembles,
    fine-tuning (``init_from``) and closed-form fits (GAP). ``train_is_packed`` (default: whether
    ``train_file`` names a packed file) is True when a :class:`mlpjax.data.PackedDataset` is passed in."""
    from mlpjax import models

    packed = is_packed(cfg.train_file) if train_is_packed is None else train_is_packed
    if not packed:
        return
    what = f"train_file {os.fspath(cfg.train_file)}" if is_packed(cfg.train_file) else "a packed training set"
    hint = "; use the data in memory (an extxyz/db train_file) for it"
    if cfg.ensemble_size > 1:
        raise ConfigError(f"{what} is streamed from disk, which trains one model: ensembles (ensemble_size "
                          f"{cfg.ensemble_size}) need the training set in memory{hint}", option="ensemble_size")
    if cfg.init_from is not None:
        raise ConfigError(f"{what} is streamed from disk; fine-tuning (init_from) re-fits E0 on data in memory{hint}",
                          option="init_from")
    if models.fit_fn(cfg.model) is not None:
        raise ConfigError(f"{what} is streamed from disk; {cfg.model} is fitted in closed form on data in memory"
                          f"{hint}", option="train_file")


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_NULLABLE = ("max_time_minutes", "clip_grad_norm", "patience", "init_from", "train_file", "valid_file",
             "test_file")  # None switches the feature off
_FLOAT_FIELDS = ("max_time_minutes", "clip_grad_norm")  # float fields whose default is None or an int


def _coerce(name: str, value: Any) -> Any:
    """YAML scalars to the field's type (ints written for floats, '1e-3' strings PyYAML leaves as str)."""
    if value is None:
        if name in _NULLABLE or name in ("model", "model_config"):  # model/model_config: None = the default
            return None
        raise ConfigError(f"{name} cannot be null; leave the key out for the default ({_fmt(_FIELDS[name].default)})",
                          option=name)
    if name == "freeze":  # a YAML list (or one pattern) -> tuple of strings
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
            raise ConfigError(f"freeze must be a list of parameter-path patterns, got {_fmt(value)}", option=name)
        return tuple(value)
    if name == "init_from":
        if not isinstance(value, str):
            raise ConfigError(f"init_from must be a model file path, got {_fmt(value)}", option=name)
        return value
    if name in ("train_file", "valid_file", "test_file"):
        if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
            raise ConfigError(f"{name} must be a data file path, got {_fmt(value)}", option=name)
        return os.fspath(value)
    if name == "model_config":
        if not isinstance(value, dict):
            raise ConfigError(f"model_config must be a mapping of model options, got {_fmt(value)}", option=name)
        return dict(value)
    default = _FIELDS[name].default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {_fmt(value)}", option=name)
        return value
    if isinstance(default, float) or name in _FLOAT_FIELDS:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{name} must be a number, got {value!r}", option=name) from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{name} must be a number, got {value!r}", option=name)
    if isinstance(default, int) or name == "patience":
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be an integer, got {value!r}", option=name)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {_fmt(value)}", option=name)
    return value


def _from_dict(values: dict, *, source: str | None, lines: dict) -> TrainConfig:
    """:func:`config_from_dict` with the YAML line of each key (``lines``, dotted for nested keys)."""
    for key in values:
        if key not in _FIELDS:
            where = f" in {_where(source, lines.get(key))}" if source else ""
            raise ConfigError(f"unknown training option {key!r}{where}{suggest(key, _FIELDS)}; "
                              f"known options: {', '.join(sorted(_FIELDS))}", option=str(key), source=source, line=lines.get(key))
    try:
        kwargs = {k: _coerce(k, v) for k, v in values.items()}
        for k in ("model", "model_config"):
            if k in kwargs and kwargs[k] is None:
                del kwargs[k]
        return TrainConfig(**kwargs)
    except ConfigError as err:
        if not source:
            raise
        line = lines.get(err.option)
        if line is None and err.option and "." in err.option:
            line = lines.get(err.option.split(".")[0])
        raise ConfigError(f"{_where(source, line)}: {err}", option=err.option, source=source, line=line) from err


def config_from_dict(values: dict | None, *, source: str | None = None) -> TrainConfig:
    """A :class:`TrainConfig` from a plain dict (e.g. parsed YAML); unknown keys or bad values raise
    :class:`ConfigError` naming the key (and ``source``)."""
    return _from_dict(dict(values or {}), source=source, lines={})


def yaml_key_lines(node, prefix: str = "", out: dict | None = None, source: str = "") -> dict:
    """1-based line of every mapping key and sequence item of a composed YAML node (dotted paths, list
    items by index: ``sources.2.md.count``); a key given twice is a ConfigError (PyYAML would
    silently keep the last)."""
    import yaml

    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = prefix + key_node.value
            line = key_node.start_mark.line + 1
            if key in out:
                raise ConfigError(f"{source} line {line}: {key!r} is given twice (first on line {out[key]})",
                                  option=key, source=source, line=line)
            out[key] = line
            yaml_key_lines(value_node, key + ".", out, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[f"{prefix}{i}"] = item.start_mark.line + 1
            yaml_key_lines(item, f"{prefix}{i}.", out, source)
    return out


def read_yaml(path: str | os.PathLike) -> tuple:
    """``(values, lines)`` of a YAML file: the parsed document (None when empty) and
    :func:`yaml_key_lines` of it. Invalid YAML is a one-line :class:`ConfigError`
    ``FILE line L column C: not valid YAML: ...``. Shared by every YAML reader of mlpjax
    (training configs, data recipes, active-learning configs)."""
    import yaml

    path = os.fspath(path)
    with open(path) as f:
        text = f.read()
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        values = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path} line {mark.line + 1} column {mark.column + 1}" if mark is not None else path
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{where}: not valid YAML: {' '.join(str(problem).split())}", source=path,
                          line=mark.line + 1 if mark is not None else None) from err
    finally:
        loader.dispose()
    return values, (yaml_key_lines(node, source=path) if node is not None else {})


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read a YAML training config.

    Unknown keys, duplicate keys and bad values raise :class:`ConfigError` naming the key,
    the file and the key's line, e.g. ``train.yaml line 3: cutoff must be > 0 (Å), got -2``.
    """
    path = os.fspath(path)
    values, lines = read_yaml(path)
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must contain a mapping of training options (key: value lines), got {type(values).__name__}",
                          source=path)
    return _from_dict(values, source=path, lines=lines)


def dump_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML (every field, so the file documents the run completely)."""
    import yaml

    from mlpjax.files import atomic_write_bytes

    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)
    atomic_write_bytes(path, text.encode())


def override(cfg: TrainConfig, **flags) -> TrainConfig:
    """``cfg`` with command-line flags applied; a flag whose value is None was not given.

    Bad values raise :class:`ConfigError` with ``option`` the field at fault.

    ``model_config`` given as a dict is merged into the existing one (so
    ``--features 128`` style overrides need not repeat the other options).
    """
    changes = {k: v for k, v in flags.items() if v is not None}
    for key in changes:
        if key not in _FIELDS:
            raise ConfigError(f"unknown training option {key!r}{suggest(key, _FIELDS)}; known options: "
                              f"{', '.join(sorted(_FIELDS))}", option=key)
    changes = {k: _coerce(k, v) for k, v in changes.items()}
    if "model_config" in changes and "model" not in changes:
        changes["model_config"] = {**cfg.model_config, **changes["model_config"]}
    return dataclasses.replace(cfg, **changes)
