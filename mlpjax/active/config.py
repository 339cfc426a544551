"""The configuration of an active-learning run: frozen dataclasses that map 1:1 onto a YAML file.

Example (``experiments/active_cu.yaml``; every key is a field below, units in the names)::

    initial_data: active_cu/initial.xyz      # labelled extxyz/db/npz: the first training set
    validation_data: active_cu/test.xyz      # optional: force MAE target and report (never trained on)
    test_data: null                          # optional: reported only
    oracle: emt                              # or {name: pyscf, xc: pbe}, xtb, ase:MODULE:CLASS
    output: runs/active_cu                   # run directory (relative to the working directory)
    seed: 0
    train:                                   # mlpjax.config.TrainConfig (ensemble_size >= 2), or a YAML path
      model: schnet
      model_config: {features: 32, interactions: 2}
      cutoff: 4.0
      epochs: 60
      ensemble_size: 4
    retrain: {epochs: 30, learning_rate: 0.0005}   # overrides for iterations >= 1 (warm start)
    explore:
      structures: [active_cu/bulk.xyz, active_cu/slab111.xyz, active_cu/vacancy.xyz]
      temperatures_K: [300, 600, 900, 1200]
      ensemble: nvt                          # nvt | nvt_nh | npt (npt: × pressures_GPa)
      steps: 2000
      timestep_fs: 2.0
      sample_every: 20
    select: {sigma_lo: 0.05, sigma_hi: 0.5, max_selected: 20, method: fps}
    label: {workers: 2, timeout_s: 600}
    stop: {max_iterations: 6, max_labels: 300, force_mae_meV_A: 30}

Paths of input files are relative to the YAML file's directory; ``output`` (and ``mlpjax active
--output``) is relative to the working directory, like every other ``--output`` of mlpjax.

Errors: an unknown key, a bad value or a missing file is a one-line :class:`mlpjax.config.ConfigError`
``FILE line N: explore.steps must be an integer >= 1, got -5``, naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from mlpjax.active.oracle import OracleSpec, make_oracle
from mlpjax.config import ConfigError, TrainConfig, read_yaml, suggest

MD_ENSEMBLES = ("nvt", "nvt_nh", "npt")


@dataclasses.dataclass(frozen=True)
class ExploreConfig:
    """Exploration: MD with the current ensemble under every condition.

    One replica batch (:func:`mlpjax.md.simulate_replicas`) per structure × pressure, the
    temperatures (× ``replicas``, own seeds) as its replicas. Each replica runs ``steps`` of
    Langevin (``nvt``), Nosé–Hoover (``nvt_nh``) or MTK NPT (``npt``) MD, records a frame every
    ``sample_every`` steps with each atom's force model deviation, and stops at the first frame
    above ``select.sigma_hi`` (beyond it the trajectory is no longer trusted); frames between the
    window bounds are the candidates.
    """

    structures: tuple = ()  # structure files (any format ASE reads, the last frame; Å); periodic cells need pbc all True
    temperatures_K: tuple = (300.0,)  # K, a replica per temperature
    pressures_GPa: tuple = (0.0,)  # GPa, npt only: a replica batch per pressure
    ensemble: str = "nvt"  # nvt | nvt_nh | npt
    ramp_factor: float | None = None  # each replica's target ramps linearly from T to ramp_factor·T over the run
    replicas: int = 1  # independent runs (seeds) per structure × temperature × pressure
    steps: int = 1000  # MD steps per run
    timestep_fs: float = 2.0  # fs
    sample_every: int = 10  # steps between checked (and kept) frames
    chunk_steps: int = 100  # steps per compiled chunk (rounded to a multiple of sample_every)
    friction_per_ps: float = 5.0  # Langevin friction, 1/ps


@dataclasses.dataclass(frozen=True)
class SelectConfig:
    """Selection (:mod:`mlpjax.active.selection`): trust window, pool, diverse batch.

    ``stop_frames``: DP-GEN's trust window never labels a frame above ``sigma_hi`` (it may be
    unphysical). With a model trained on one kind of structure, though, a new kind (a surface for a
    bulk model) is above ``sigma_hi`` from its first checked frame, so its replicas stop at once and
    it never yields a candidate. With ``stop_frames: true`` the first frame above ``sigma_hi`` of
    every stopped replica (at most ``sample_every`` MD steps past the last trusted frame, the frame
    on-the-fly learning would label) is labelled too, ahead of the window's candidates (farthest-
    point sampled among themselves when there are more than ``max_selected``), unless it is not
    finite or has two atoms closer than ``stop_frame_min_distance`` Å (a blown-up run).
    """

    sigma_lo: float = 0.05  # eV/Å: max per-atom force deviation at or below = known ("accurate")
    sigma_hi: float = 0.5  # eV/Å: above = "failed" (unphysical; the MD run stops there)
    max_selected: int = 20  # structures labelled per iteration (at most)
    method: str = "fps"  # fps (farthest-point in descriptor space) | top_k | random
    pool_size: int | None = None  # fps/random among the pool_size largest σ (None: all candidates)
    descriptor_cutoff: float = 5.0  # Å, radial symmetry-function cutoff of the fps descriptor
    stop_frames: bool = False  # also label each stopped replica's first frame above sigma_hi (first in the batch)
    stop_frame_min_distance: float = 0.5  # Å: a stop frame with two atoms closer than this is skipped (blown up)


@dataclasses.dataclass(frozen=True)
class LabelConfig:
    """Labelling (:func:`mlpjax.active.label`)."""

    workers: int = 1  # oracle worker processes
    timeout_s: float | None = None  # s per structure; a hung oracle call is killed and recorded as failed


@dataclasses.dataclass(frozen=True)
class StopConfig:
    """When the loop ends (checked after each model is trained and evaluated)."""

    max_iterations: int = 5  # explore/select/label rounds (model 0 is trained on initial_data)
    max_labels: int | None = None  # labelled configurations in the training set (initial + loop); None: no budget
    force_mae_meV_A: float | None = None  # target force MAE on validation_data, meV/Å (None: no target)


@dataclasses.dataclass(frozen=True)
class ActiveConfig:
    """An active-learning run (YAML keys = field names; see the module docstring)."""

    initial_data: str  # labelled data file: the first training set
    train: TrainConfig  # training of every model (ensemble_size >= 2)
    explore: ExploreConfig
    retrain: dict = dataclasses.field(default_factory=dict)  # TrainConfig overrides for iterations >= 1
    validation_data: str | None = None  # labelled file: the force-MAE target and the report (never trained on)
    test_data: str | None = None  # labelled file: reported only
    oracle: OracleSpec = OracleSpec()  # YAML: anything mlpjax.active.make_oracle takes (emt, {name: pyscf, xc: pbe}, ...)
    select: SelectConfig = SelectConfig()
    label: LabelConfig = LabelConfig()
    stop: StopConfig = StopConfig()
    output: str | None = None  # run directory (None: the CLI's --output, else "<config stem>_run")
    seed: int = 0  # MD seeds and training seeds are derived from it and the iteration

    def train_config(self, iteration: int, init_from: str | None) -> TrainConfig:
        """The :class:`TrainConfig` of model ``iteration``: ``train`` (+ ``retrain`` from iteration 1),
        seed + iteration, and ``init_from`` (the previous model file: warm start)."""
        cfg = self.train if iteration == 0 else self.train.replace(**self.retrain)
        changes = {"seed": int(cfg.seed) + iteration}
        if init_from is not None:
            changes["init_from"] = init_from
        return cfg.replace(**changes)

    def to_dict(self) -> dict:
        """The YAML form (every field; ``train`` as a mapping)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["train"] = self.train.to_dict()
        d["train"]["freeze"] = list(self.train.freeze)
        for name in ("explore", "select", "label", "stop"):
            d[name] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(d[name]).items()}
        d["retrain"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.retrain.items()}
        d["oracle"] = self.oracle.to_dict()
        return d


_SECTIONS = {"explore": ExploreConfig, "select": SelectConfig, "label": LabelConfig, "stop": StopConfig}
_TOP = {f.name for f in dataclasses.fields(ActiveConfig)}
_FILES = ("initial_data", "validation_data", "test_data")


def _fmt(value) -> str:
    return format(value, "g") if isinstance(value, float) else repr(value)


def _number(key: str, value, *, integer: bool = False, nullable: bool = False):
    if value is None and nullable:
        return None
    if isinstance(value, str) and not integer:
        try:
            value = float(value)
        except ValueError:
            pass
    if integer:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{key} must be an integer{' or null' if nullable else ''}, got {_fmt(value)}", option=key)
        return int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ConfigError(f"{key} must be a number{' or null' if nullable else ''}, got {_fmt(value)}", option=key)
    return float(value)


def _numbers(key: str, value) -> tuple:
    value = [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{key} must be a non-empty list of numbers, got {_fmt(value)}", option=key)
    return tuple(_number(f"{key}", v) for v in value)


def _check(key: str, ok: bool, valid: str, value) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {valid}, got {_fmt(value)}", option=key)


def _section(name: str, cls, values, base_dir: str):
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{name} must be a mapping of {name} options, got {_fmt(values)}", option=name)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown {name} option {key!r}{suggest(key, known)}; known: {', '.join(known)}",
                              option=f"{name}.{key}")
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        dotted = f"{name}.{key}"
        default = defaults[key]
        if key == "structures":
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, (list, tuple)) or not value or not all(isinstance(p, str) for p in value):
                raise ConfigError(f"{dotted} must be a non-empty list of structure files, got {_fmt(value)}", option=dotted)
            out[key] = tuple(_existing(dotted, p, base_dir) for p in value)
        elif key in ("temperatures_K", "pressures_GPa"):
            out[key] = _numbers(dotted, value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{dotted} must be true or false, got {_fmt(value)}", option=dotted)
            out[key] = value
        elif key in ("ensemble", "method"):
            if not isinstance(value, str):
                raise ConfigError(f"{dotted} must be a string, got {_fmt(value)}", option=dotted)
            out[key] = value
        else:
            integer = isinstance(default, int) or key in ("pool_size", "max_labels")
            out[key] = _number(dotted, value, integer=integer, nullable=default is None)
    return cls(**out)


def _existing(key: str, path, base_dir: str) -> str:
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{key} must be a file path, got {_fmt(path)}", option=key)
    full = path if os.path.isabs(path) else os.path.join(base_dir, path)
    if not os.path.isfile(full):
        raise ConfigError(f"{key}: file {path!r} does not exist (looked for {os.path.abspath(full)})", option=key)
    return os.path.abspath(full)


def _validate(cfg: ActiveConfig) -> None:
    e, s, st, lb = cfg.explore, cfg.select, cfg.stop, cfg.label
    if not e.structures:
        raise ConfigError("explore.structures is required: the structure files MD explores from", option="explore.structures")
    _check("explore.ensemble", e.ensemble in MD_ENSEMBLES, f"one of {', '.join(MD_ENSEMBLES)}", e.ensemble)
    _check("explore.temperatures_K", all(t > 0 for t in e.temperatures_K), "temperatures > 0 K", list(e.temperatures_K))
    if e.ensemble != "npt" and e.pressures_GPa != (0.0,):
        raise ConfigError(f"explore.pressures_GPa needs explore.ensemble: npt (got {e.ensemble})",
                          option="explore.pressures_GPa")
    _check("explore.ramp_factor", e.ramp_factor is None or e.ramp_factor > 0, "> 0 or null", e.ramp_factor)
    for key in ("replicas", "steps", "sample_every", "chunk_steps"):
        _check(f"explore.{key}", getattr(e, key) >= 1, "an integer >= 1", getattr(e, key))
    _check("explore.steps", e.steps % e.sample_every == 0, f"a multiple of explore.sample_every ({e.sample_every})",
           e.steps)
    _check("explore.timestep_fs", e.timestep_fs > 0, "> 0 (fs)", e.timestep_fs)
    _check("explore.friction_per_ps", e.friction_per_ps > 0, "> 0 (1/ps)", e.friction_per_ps)
    _check("select.sigma_lo", s.sigma_lo >= 0, ">= 0 (eV/Å)", s.sigma_lo)
    _check("select.sigma_hi", s.sigma_hi > s.sigma_lo, f"> select.sigma_lo ({s.sigma_lo:g} eV/Å)", s.sigma_hi)
    _check("select.max_selected", s.max_selected >= 1, "an integer >= 1", s.max_selected)
    from mlpjax.active.selection import METHODS

    _check("select.method", s.method in METHODS, f"one of {', '.join(METHODS)}", s.method)
    _check("select.pool_size", s.pool_size is None or s.pool_size >= 1, "an integer >= 1 or null", s.pool_size)
    _check("select.descriptor_cutoff", s.descriptor_cutoff > 0, "> 0 (Å)", s.descriptor_cutoff)
    _check("select.stop_frame_min_distance", s.stop_frame_min_distance > 0, "> 0 (Å)", s.stop_frame_min_distance)
    _check("label.workers", lb.workers >= 1, "an integer >= 1", lb.workers)
    _check("label.timeout_s", lb.timeout_s is None or lb.timeout_s > 0, "> 0 (s) or null", lb.timeout_s)
    _check("stop.max_iterations", st.max_iterations >= 0, "an integer >= 0", st.max_iterations)
    _check("stop.max_labels", st.max_labels is None or st.max_labels >= 1, "an integer >= 1 or null", st.max_labels)
    _check("stop.force_mae_meV_A", st.force_mae_meV_A is None or st.force_mae_meV_A > 0, "> 0 (meV/Å) or null",
           st.force_mae_meV_A)
    if st.force_mae_meV_A is not None and cfg.validation_data is None:
        raise ConfigError("stop.force_mae_meV_A is measured on validation_data: give validation_data (a labelled file "
                          "never trained on)", option="stop.force_mae_meV_A")
    if cfg.train.ensemble_size < 2:
        raise ConfigError(f"active learning needs an ensemble (its spread is the uncertainty): set train.ensemble_size "
                          f">= 2 (got {cfg.train.ensemble_size})", option="train.ensemble_size")
    if "init_from" in cfg.retrain:
        raise ConfigError("retrain.init_from is set by the loop (the previous iteration's model); leave it out",
                          option="retrain.init_from")
    try:
        cfg.train.replace(**cfg.retrain)
    except ConfigError as err:
        raise ConfigError(f"retrain: {err}", option=f"retrain.{err.option}" if err.option else "retrain") from None
    except TypeError:
        bad = [k for k in cfg.retrain if k not in {f.name for f in dataclasses.fields(TrainConfig)}]
        raise ConfigError(f"unknown training option {bad[0]!r} in retrain{suggest(bad[0], TrainConfig.__dataclass_fields__)}",
                          option=f"retrain.{bad[0]}") from None


def _train_config(values, base_dir: str, lines: dict, source: str | None) -> TrainConfig:
    from mlpjax.config import config_from_dict, load_config

    if isinstance(values, str):
        return load_config(_existing("train", values, base_dir))  # its own file and line in errors
    if not isinstance(values, dict):
        raise ConfigError(f"train must be a mapping of training options (mlpjax.config.TrainConfig) or a YAML file, "
                          f"got {_fmt(values)}", option="train")
    values = dict(values)
    if isinstance(values.get("init_from"), str):
        values["init_from"] = _existing("train.init_from", values["init_from"], base_dir)
    try:
        return config_from_dict(values)
    except ConfigError as err:
        raise ConfigError(f"train: {err}", option=f"train.{err.option}" if err.option else "train") from None


def config_from_dict(values: dict | None, *, source: str | None = None, base_dir: str | None = None,
                     lines: dict | None = None) -> ActiveConfig:
    """An :class:`ActiveConfig` from a plain dict (parsed YAML). Relative input paths are taken from
    ``base_dir`` (default: the working directory). Errors are :class:`ConfigError` naming the
    dotted key (and ``source`` with the key's line from ``lines``)."""
    values = dict(values or {})
    base_dir = base_dir or os.getcwd()
    lines = lines or {}
    try:
        for key in values:
            if key not in _TOP:
                raise ConfigError(f"unknown active-learning option {key!r}{suggest(key, _TOP)}; known: "
                                  f"{', '.join(sorted(_TOP))}", option=str(key))
        for key in ("initial_data", "train", "explore"):
            if values.get(key) is None:
                raise ConfigError(f"{key} is required", option=key)
        kw: dict = {}
        for key in _FILES:
            if values.get(key) is not None:
                kw[key] = _existing(key, values[key], base_dir)
        kw["train"] = _train_config(values["train"], base_dir, lines, source)
        for name, cls in _SECTIONS.items():
            if name in values:
                kw[name] = _section(name, cls, values[name], base_dir)
        retrain = values.get("retrain") or {}
        if not isinstance(retrain, dict):
            raise ConfigError(f"retrain must be a mapping of training options, got {_fmt(retrain)}", option="retrain")
        kw["retrain"] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in retrain.items()}
        if values.get("oracle") is not None:
            try:
                kw["oracle"] = make_oracle(values["oracle"])
            except ConfigError as err:
                raise ConfigError(f"oracle: {err}", option="oracle") from None
        if values.get("output") is not None:
            if not isinstance(values["output"], str) or not values["output"]:
                raise ConfigError(f"output must be a directory path, got {_fmt(values['output'])}", option="output")
            kw["output"] = values["output"]
        if "seed" in values:
            kw["seed"] = _number("seed", values["seed"], integer=True)
            _check("seed", kw["seed"] >= 0, "an integer >= 0", kw["seed"])
        cfg = ActiveConfig(**kw)
        _validate(cfg)
        return cfg
    except ConfigError as err:
        if source is None:
            raise
        line = _line(lines, err.option)
        where = f"{source} line {line}" if line is not None else source
        raise ConfigError(f"{where}: {err}", option=err.option, source=source, line=line) from None


def _line(lines: dict, option: str | None) -> int | None:
    while option:
        if option in lines:
            return lines[option]
        option = option.rpartition(".")[0]
    return None


def load_active_config(path) -> ActiveConfig:
    """Read an active-learning YAML file (see the module docstring); one-line :class:`ConfigError`
    ``FILE line N: ...`` for invalid YAML, unknown keys, bad values and missing files."""
    path = os.fspath(path)
    values, lines = read_yaml(path)
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must contain a mapping of active-learning options (key: value lines)", source=path)
    return config_from_dict(values, source=path, base_dir=os.path.dirname(os.path.abspath(path)), lines=lines)
