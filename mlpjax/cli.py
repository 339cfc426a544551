"""Command-line interface: ``mlpjax train | evaluate | validate | md | analyze | data | active | serve-ipi``.

Every sub-command is a thin layer over the Python API (mlpjax.training.train,
mlpjax.validate.metrics, mlpjax.validate.validate_report, mlpjax.md.simulate,
mlpjax.replicas.simulate_replicas,
mlpjax.analysis, mlpjax.data.emt, mlpjax.ipi.serve), so
scripts and the CLI do the same thing. ``mlpjax SUBCOMMAND --help`` documents each.

Errors. Every option that takes a value has a checked ``type=`` (:class:`_Number` ranges,
input files that must exist, output paths that must be writable, names such as units or
report sections), so a bad option fails at parse time, before anything is loaded or compiled,
with one line ``mlpjax CMD: error: argument --steps: must be an integer >= 1, got '-5' (see
mlpjax CMD --help)`` and exit status 2. Checks that involve several options or the model run at
the start of each command and raise :class:`mlpjax.config.ConfigError`; :func:`main` prints those,
and data / model-file / file-system errors, as one line too (see :func:`main` for the list).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings


def _enable_x64_if(flag: bool) -> None:
    if flag:
        import jax

        jax.config.update("jax_enable_x64", True)


def _one_line(text) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


# ------------------------------------------------------------------ checked option types
# argparse calls these on the option's text; ArgumentTypeError becomes "argument --opt: MESSAGE".
class _Number:
    """An int or finite float, optionally bounded: ``_Number(int, lo=1)`` = an integer >= 1;
    ``lo_open``/``hi_open`` make a bound strict (``_Number(float, lo=0, lo_open=True)`` = a number > 0)."""

    def __init__(self, kind=float, *, lo=None, hi=None, lo_open=False, hi_open=False):
        self.kind, self.lo, self.hi, self.lo_open, self.hi_open = kind, lo, hi, lo_open, hi_open
        self.__name__ = "integer" if kind is int else "number"

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        if self.lo is not None and self.hi is not None:
            return f"{what} in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{what} {'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{what} {'<' if self.hi_open else '<='} {self.hi:g}"
        return what

    def __call__(self, text: str):
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}") from None
        bad = (not math.isfinite(value)
               or (self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo))
               or (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)))
        if bad:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}")
        return value


_POS_INT, _NONNEG_INT, _INT = _Number(int, lo=1), _Number(int, lo=0), _Number(int)
_POS_FLOAT, _NONNEG_FLOAT, _FLOAT = _Number(float, lo=0, lo_open=True), _Number(float, lo=0), _Number(float)
_HOLDOUT = _Number(float, lo=0, hi=1, hi_open=True)  # a fraction of the data held out


class _NumberList:
    """Comma-separated numbers, each checked by ``item`` (a :class:`_Number`)."""

    __name__ = "list"

    def __init__(self, item: _Number):
        self.item = item

    def __call__(self, text: str) -> list:
        parts = [p.strip() for p in text.split(",")]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 300,600,900, got {text!r}")
        try:
            return [self.item(p) for p in parts]
        except argparse.ArgumentTypeError as err:
            raise argparse.ArgumentTypeError(f"every value {str(err)[len('must be '):]} (in {text!r})") from None


class _Text:
    """A non-empty string (a key name)."""

    __name__ = "text"

    def __call__(self, text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError("must not be empty")
        return text


class _InputFile:
    """An existing, readable file."""

    __name__ = "file"

    def __call__(self, text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError("must be a file name, got ''")
        if not os.path.exists(text):
            raise argparse.ArgumentTypeError(f"no such file: {text!r}")
        if os.path.isdir(text):
            raise argparse.ArgumentTypeError(f"{text!r} is a directory, expected a file")
        if not os.access(text, os.R_OK):
            raise argparse.ArgumentTypeError(f"cannot read {text!r} (permission denied)")
        return text


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


class _OutputFile:
    """A file that can be written: not a directory, in an existing writable directory (it is not created)."""

    __name__ = "file"

    def __call__(self, text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError("must be a file name, got ''")
        if os.path.isdir(text):
            raise argparse.ArgumentTypeError(f"{text!r} is a directory; give a file name")
        if os.path.exists(text):
            if not os.access(text, os.W_OK):
                raise argparse.ArgumentTypeError(f"cannot write {text!r} (permission denied)")
            return text
        parent = os.path.dirname(os.path.abspath(text))
        if not os.path.isdir(parent):
            above = _nearest_existing(parent)
            if not os.path.isdir(above):
                raise argparse.ArgumentTypeError(f"cannot write {text!r}: {above!r} is a file, not a directory")
            raise argparse.ArgumentTypeError(f"cannot write {text!r}: directory {parent!r} does not exist (create it first)")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"cannot write in {parent!r} (permission denied)")
        return text


class _OutputDir:
    """A directory that exists and is writable or can be created (missing parents are created too)."""

    __name__ = "directory"

    def __call__(self, text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError("must be a directory name, got ''")
        above = _nearest_existing(text)
        if not os.path.isdir(above):
            what = "it" if os.path.abspath(text) == above else repr(above)
            raise argparse.ArgumentTypeError(f"cannot use {text!r} as the output directory: {what} is a file")
        if not os.access(above, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"cannot write in {above!r} (permission denied)")
        return text


class _Units:
    """A unit-system name of :func:`mlpjax.units.resolve_units` (the error lists them)."""

    __name__ = "units"

    def __call__(self, text: str) -> str:
        from mlpjax.units import resolve_units

        try:
            resolve_units(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return text


class _Sections:
    """A comma-separated subset of :data:`mlpjax.validate.SECTIONS`."""

    __name__ = "sections"

    def __call__(self, text: str) -> set:
        from mlpjax.validate import SECTIONS

        skip = {p.strip() for p in text.split(",") if p.strip()}
        unknown = sorted(skip - set(SECTIONS))
        if unknown or not skip:
            raise argparse.ArgumentTypeError(f"unknown section(s) {', '.join(unknown) or repr(text)}; sections are {', '.join(SECTIONS)}")
        return skip


class _Reference:
    """``emt`` (ASE's EMT) or an existing labelled data file."""

    __name__ = "reference"

    def __call__(self, text: str) -> str:
        if text.lower() == "emt":
            return "emt"
        if os.path.isfile(text):
            return text
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'emt' (ASE's EMT calculator) nor an existing data file")


class _Structure:
    """A structure file or ``LATTICE-Symbol[:a]`` (:func:`mlpjax.validate.bulk_structure`)."""

    __name__ = "structure"

    def __call__(self, text: str) -> str:
        if os.path.isfile(text):
            return text
        from mlpjax.validate import bulk_structure

        try:
            bulk_structure(text)
        except (ValueError, KeyError) as err:
            raise argparse.ArgumentTypeError(f"{text!r} is not a file, and {err}") from None
        return text


class _Element:
    """A chemical symbol such as Cu."""

    __name__ = "element"

    def __call__(self, text: str) -> str:
        from ase.data import atomic_numbers

        if text not in atomic_numbers or text == "X":
            raise argparse.ArgumentTypeError(f"{text!r} is not a chemical symbol (e.g. Cu, Au, O)")
        return text


class _IPIAddress(_Text):
    """``HOST:PORT`` of an i-PI server (:func:`mlpjax.ipi.parse_address`); a _Text, so never empty."""

    __name__ = "address"

    def __call__(self, text: str):
        from mlpjax.ipi import parse_address

        super().__call__(text)
        try:
            return parse_address(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None


class _IPISocketName(_Text):
    """The NAME of a Unix socket /tmp/ipi_NAME (a full /tmp/ipi_NAME path is accepted too)."""

    __name__ = "name"

    def __call__(self, text: str) -> str:
        super().__call__(text)
        name = text[len("/tmp/ipi_"):] if text.startswith("/tmp/ipi_") else text
        if not name or "/" in name:
            raise argparse.ArgumentTypeError(f"expected a socket NAME such as mlpjax (the file is /tmp/ipi_NAME, as "
                                             f"i-PI and LAMMPS name it), got {text!r}")
        return name


class _UsageError(SystemExit):
    """argparse's exit on a bad option (a SystemExit, code 2); :func:`main` returns the code instead."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``mlpjax md: error: argument --steps: ... (see mlpjax md --help)``,
    exit status 2 (argparse's default prints the usage block first). Unrecognised arguments are
    reported by the sub-command they were given to, with the closest option as a hint."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")
        raise _UsageError(2)

    def parse_args(self, args=None, namespace=None):
        import difflib

        args, extras = self.parse_known_args(args, namespace)
        if extras:
            sub = getattr(self, "commands", {}).get(getattr(args, "command", None), self)
            options = [o for a in sub._actions for o in a.option_strings]
            hints = [f"{x} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(x.split("=")[0], options, n=1)) else x
                     for x in extras]
            sub.error(f"unrecognized arguments: {' '.join(hints)}")
        return args


def _config_error(message: str, option: str | None = None):
    from mlpjax.config import ConfigError

    return ConfigError(message, option=option)


# ----------------------------------------------------------------------------- train
_TRAIN_FLAGS = {  # TrainConfig field → the train flag that sets it
    "model": "--model", "epochs": "--epochs", "max_time_minutes": "--max-time", "seed": "--seed",
    "valid_fraction": "--valid-fraction", "test_fraction": "--test-fraction", "cutoff": "--cutoff",
    "batch_size": "--batch-size", "learning_rate": "--lr", "units": "--units", "dtype": "--dtype",
    "init_from": "--init-from", "freeze": "--freeze", "refit_reference_energies": "--keep-reference-energies",
    "ensemble_size": "--ensemble", "ensemble_kind": "--ensemble-kind", "bootstrap": "--bootstrap",
    "train_file": "--train", "valid_file": "--valid", "test_file": "--test", "devices": "--devices",
}
_ARCHITECTURE = ("model", "model_config", "cutoff")  # what --init-from takes from the model file


def _list_params(args) -> int:
    """``mlpjax train --init-from MODEL --list-params``: every parameter path (what --freeze matches)."""
    import jax

    from mlpjax.training import load_init_model, parameter_paths

    if not args.init_from:
        raise _config_error("--list-params needs --init-from MODEL (the model whose parameter paths to list)",
                            "--list-params")
    params = load_init_model(args.init_from).params
    leaves = jax.tree_util.tree_leaves(params)
    width = max(len(p) for p in parameter_paths(params))
    for path, leaf in zip(parameter_paths(params), leaves):
        print(f"{path:<{width}}  {tuple(leaf.shape)}  {leaf.dtype}")
    print(f"{len(leaves)} arrays, {sum(int(leaf.size) for leaf in leaves):,} parameters; keep some fixed with "
          "--freeze PATTERN (fnmatch on these paths, e.g. --freeze 'params/embedding/*'; repeatable)")
    return 0


def _cmd_train(args) -> int:
    from mlpjax import data
    from mlpjax.config import ConfigError, TrainConfig, load_config, override
    from mlpjax.training import check_representable, load_init_model, resolve_init_from, train

    if args.list_params:
        return _list_params(args)
    if not args.output:
        raise ConfigError("the following arguments are required: --output" + ("" if args.train else " and --train")
                          + " (see mlpjax train --help)", option="--output")
    source = load_init_model(args.init_from) if args.init_from else None  # its architecture wins
    given = {}  # architecture fields the user set → who set them (for the --init-from conflict message)
    if args.preset and args.config:
        raise ConfigError("--preset and --config both set the model and its training settings: use one (the preset's "
                          "YAML twin is named by mlpjax.presets.source, e.g. experiments/configs/mace_rmd17cpu.yaml)",
                          option="--preset")
    if args.preset:
        from mlpjax import presets

        model = args.model or (source.model if source else TrainConfig().model)
        if args.preset not in presets.names(model):
            raise ConfigError(f"--preset {args.preset}: {model} has the presets {', '.join(presets.names(model))}",
                              option="--preset")
        cfg = TrainConfig(**presets.preset(model, args.preset))
        given.update({k: f"--preset {args.preset}" for k in ("model_config", "cutoff") if k in presets.preset(model, args.preset)})
        print(f"mlpjax train: preset {args.preset} of {model}: {presets.describe(model, args.preset)}", flush=True)
    elif args.config:
        import yaml

        cfg = load_config(args.config)
        with open(args.config) as f:
            given.update({k: args.config for k in _ARCHITECTURE if k in (yaml.safe_load(f) or {})})
    elif source is not None:  # fine-tuning: TrainConfig's training settings, the architecture of the file
        cfg = TrainConfig(model=args.model or source.model)
    else:  # the model's reference defaults, cutoff included (mlpjax.presets "default")
        from mlpjax import presets

        model = args.model or TrainConfig().model
        cfg = TrainConfig(**presets.preset(model, "default"))
        print(f"mlpjax train: {model} at its reference defaults ({presets.describe(model, 'default')})"
              + ("; --preset small is CPU-sized" if "small" in presets.names(model) else ""), flush=True)
    flags = {field: getattr(args, flag[2:].replace("-", "_")) for field, flag in _TRAIN_FLAGS.items()}
    try:
        cfg = override(cfg, **flags)
    except ConfigError as err:  # a combination: --valid-fraction + --test-fraction, --model with the YAML's model_config
        given = [_TRAIN_FLAGS[k] for k, v in flags.items() if v is not None]
        source = ", ".join(given) + (f" with {args.config}" if args.config else "")
        raise ConfigError(f"{source}: {err}", option=_TRAIN_FLAGS.get(err.option, err.option)) from err
    if cfg.init_from is not None:  # --init-from or the YAML's init_from
        source = source if args.init_from else load_init_model(cfg.init_from)
        given.update({k: _TRAIN_FLAGS[k] for k in ("model", "cutoff") if flags[k] is not None})
        cfg = resolve_init_from(cfg, source=source, given=given)
        if cfg.freeze:  # a pattern that matches nothing: the error before any data is read
            from mlpjax.training import frozen_labels

            frozen_labels(source.params, cfg.freeze)
        print(f"mlpjax train: fine-tuning the {cfg.model} model {cfg.init_from} (its architecture, cutoff "
              f"{cfg.cutoff:g} Å and elements {', '.join(_symbols(source.species))}) at learning rate "
              f"{cfg.learning_rate:g}; reference energies "
              + ("re-fitted on the new data" if cfg.refit_reference_energies else "kept")
              + (f"; frozen: {', '.join(cfg.freeze)}" if cfg.freeze else ""), flush=True)
    if cfg.train_file is None:
        raise ConfigError("the following arguments are required: --train (or train_file in --config; see mlpjax train "
                          "--help)", option="--train")
    _enable_x64_if(cfg.dtype == "float64")
    from mlpjax.config import is_packed

    keys = {"--energy-key": (args.energy_key, "energy"), "--forces-key": (args.forces_key, "forces"),
            "--stress-key": (args.stress_key, "stress")}

    def read(path, what):  # a packed .h5: opened lazily and streamed (read with its own keys when it was packed)
        if not is_packed(path):
            return data.read(path, units=cfg.units, energy_key=args.energy_key, forces_key=args.forces_key,
                             stress_key=args.stress_key)
        changed = [flag for flag, (value, default) in keys.items() if value != default]
        if changed:
            raise ConfigError(f"{changed[0]} applies to data read here; {what} {path} is packed (its labels were read "
                              f"when it was packed: mlpjax data pack {changed[0]} ...)", option=changed[0])
        from mlpjax.training.streaming import open_packed

        return open_packed(path, cfg, what=what)

    train_set = read(cfg.train_file, "--train")
    valid_set = read(cfg.valid_file, "--valid") if cfg.valid_file else None
    test_set = read(cfg.test_file, "--test") if cfg.test_file else None
    if cfg.init_from is not None:  # before any compilation: new elements are a one-line error
        check_representable(source, cfg.init_from, train_set, valid_set, test_set)
    print(
        f"mlpjax train: {cfg.model}, {len(train_set)} training structures from {cfg.train_file}"
        + (" (packed: streamed from disk)" if is_packed(cfg.train_file) else "")
        + (f", {len(valid_set)} validation from {cfg.valid_file}" if valid_set else f", validation fraction {cfg.valid_fraction}")
        + (f", {len(test_set)} test from {cfg.test_file}" if test_set else ""),
        flush=True,
    )
    os.makedirs(args.output, exist_ok=True)
    result = train(cfg, train_set, valid_set, output_dir=args.output, test_configs=test_set, resume=args.resume,
                   progress=not args.quiet, strict=args.strict)  # strict: unit-sanity warnings → DataError
    if result.stop_reason == "max_time":
        where = (f"{100 * result.partial_epoch_fraction:.0f} % into epoch {result.epochs_completed + 1}"
                 if result.partial_epoch_fraction else f"after epoch {result.epochs_completed}")
        print(f"stopped by the time limit (--max-time {cfg.max_time_minutes:g} min) {where}, {result.steps} steps"
              + (f" of {_seconds(result.step_time_s)} each" if result.step_time_s else "")
              + f"; the model holds the best parameters evaluated (epoch {result.best_epoch}); "
              f"--resume continues from the checkpoint")
    else:
        print(f"stopped after epoch {result.epochs_completed} ({result.stop_reason}); best epoch {result.best_epoch}")
    for name, m in (("validation", result.valid_metrics), ("test", result.test_metrics)):
        if m:
            print(
                f"{name}: energy MAE {m['energy_mae_meV_per_atom']:.3f} meV/atom, "
                f"force MAE {m['force_mae_meV_per_A']:.2f} meV/Å, energy R² {m['energy_r2']:.5f} ({m['n_structures']} structures)"
            )
    for k, v in sorted(result.paths.items()):
        print(f"  {k}: {v}")
    return 0


def _symbols(numbers) -> list:
    from ase.data import chemical_symbols

    return [chemical_symbols[int(z)] for z in numbers]


def _seconds(s: float) -> str:
    return f"{1e3 * s:.0f} ms" if s < 1 else f"{s:.2f} s"


# -------------------------------------------------------------------------- evaluate
def _cmd_evaluate(args) -> int:
    from mlpjax import data, load
    from mlpjax.validate import metrics, parity_plot, predict_dataset

    _enable_x64_if(args.float64)
    pot = load(args.model)
    units = args.units or pot.metadata.get("units", "eV")
    configs = data.read(args.data, units=units, energy_key=args.energy_key, forces_key=args.forces_key, stress_key=args.stress_key)
    from mlpjax.data.unit_check import check_units

    for problem in check_units(configs):  # metrics of data in the wrong unit would be meaningless
        warnings.warn(f"file {args.data}: {problem.message} (read with units={units!r}; --units sets them)")
    preds = predict_dataset(pot, configs, batch_size=args.batch_size)
    m = metrics(pot, configs, predictions=preds)
    m = {"model": os.path.abspath(args.model), "data": os.path.abspath(args.data), **m}
    width = max(len(k) for k in m)
    for k, v in m.items():
        print(f"{k:<{width}}  {v:.6g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(m, f, indent=2)
        print(f"wrote {args.json}")
    if args.parity:
        parity_plot(preds, configs, args.parity)
        print(f"wrote {args.parity}")
    if args.uncertainty:
        _evaluate_uncertainty(args, pot, configs, units)
    return 0


def _uncertain_predictions(pot, configs, batch_size: int):
    """Uncalibrated UncertainPrediction per structure from an ensemble or a GAP (else ConfigError)."""
    from mlpjax.ensemble import is_ensemble

    if is_ensemble(pot):
        return pot.predict_uncertain(configs, batch_size=batch_size, calibrated=False)
    if pot.model == "gap":
        from mlpjax.models.gap import predict_uncertain

        return predict_uncertain(pot, configs)
    raise _config_error(f"--uncertainty needs an ensemble (mlpjax train --ensemble M) or a GAP model; {pot.model} "
                        "model files have no uncertainty", "--uncertainty")


def _evaluate_uncertainty(args, pot, configs, units) -> None:
    """``evaluate --uncertainty DIR``: σ quality (Spearman, miscalibration area, NLL) and calibration.png.
    Calibration: fitted on --calibrate DATA if given, else the model's stored factors (an ensemble's,
    fitted on its validation set at training time), else fitted on DATA itself (flagged optimistic)."""
    from mlpjax import data
    from mlpjax.validate.uncertainty import Calibration, fit_calibration, write_uncertainty_report

    preds = _uncertain_predictions(pot, configs, args.batch_size)
    calibration, where = None, "fitted on the evaluated data itself (optimistic)"
    if args.calibrate:
        valid = data.read(args.calibrate, units=units, energy_key=args.energy_key, forces_key=args.forces_key,
                          stress_key=args.stress_key)
        calibration = fit_calibration(_uncertain_predictions(pot, valid, args.batch_size), valid)
        where = f"fitted on {args.calibrate}"
    elif tuple(getattr(pot, "calibration", (1.0, 1.0, 1.0))) != (1.0, 1.0, 1.0):
        calibration = Calibration(*pot.calibration)
        where = "stored in the model (fitted on its validation set)"
    paths = write_uncertainty_report(preds, configs, args.uncertainty, calibration)
    with open(paths["uncertainty_json"]) as f:
        m = json.load(f)["metrics"]
    keys = [k for k in m if "spearman" in k or "miscalibration" in k or "nll" in k or "factor" in k]
    print(f"uncertainty ({len(configs)} structures; calibration {where}):")
    width = max((len(k) for k in keys), default=0)
    for k in keys:
        v = m[k]
        print(f"  {k:<{width}}  {v:.4g}" if isinstance(v, (int, float)) and v is not None else f"  {k:<{width}}  {v}")
    for p in paths.values():
        print(f"wrote {p}")


# -------------------------------------------------------------------------- validate
def _cmd_validate(args) -> int:
    import dataclasses

    from mlpjax import data, load
    from mlpjax.validate import ReportConfig, default_structure, structure_for, validate_report

    _enable_x64_if(not args.float32)
    pot = load(args.model)
    cfg = ReportConfig.quick() if args.quick else ReportConfig()
    if args.skip:
        cfg = dataclasses.replace(cfg, sections=tuple(s for s in cfg.sections if s not in args.skip))
    cfg = dataclasses.replace(cfg, drift=dataclasses.replace(cfg.drift, dtype="float32" if args.float32 else "float64", seed=args.seed))
    reference = args.reference
    if args.structure is None:
        structure, why = default_structure(pot)  # ConfigError naming the elements when there is none
        print(f"mlpjax validate: no --structure given; using {why}", flush=True)
    else:
        structure = structure_for(pot, args.structure)  # ConfigError for elements the model does not know
    training = None
    if args.train:
        training = data.read(args.train, units=args.units or pot.metadata.get("units", "eV"))
    print(f"mlpjax validate: {args.model} against {reference} ({'quick' if args.quick else 'full'}; sections {', '.join(cfg.sections)})", flush=True)
    report = validate_report(pot, reference, args.output, structure=structure, config=cfg, training_configs=training,
                             model_name=os.path.abspath(args.model), units=args.units, progress=not args.quiet)
    for c in report["checks"]:
        if c["rel_error"] is None:
            detail = f"{c['model']:+.4g} {c['unit']} (< {c['tolerance']:g})"
        else:
            detail = f"{c['model']:.5g} vs {c['reference']:.5g} {c['unit']} ({100 * c['rel_error']:+.2f} %, tolerance {100 * c['tolerance']:g} %)"
        print(f"  [{'PASS' if c['passed'] else 'MISS'}] {c['name']}: {detail}")
    drift = report["sections"].get("drift")
    if drift is not None:
        for r in drift.runs:
            print(f"  NVE dt {r.timestep_fs:g} fs: drift {r.drift_meV_per_atom_per_ps:+.4f} meV/atom/ps, "
                  f"fluctuation {r.fluctuation_meV_per_atom:.4g} meV/atom [{r.status}]")
    for k, v in report["errors"].items():
        print(f"  section {k} failed: {v}", file=sys.stderr)
    print(f"wrote {os.path.join(args.output, 'report.md')}, report.json and {len(report['files']) - 2} plots")
    if args.strict and (report["errors"] or not all(c["passed"] for c in report["checks"])):
        return 1
    return 0


# -------------------------------------------------------------------------------- md
def _density_g_cm3(atoms, volume_A3: float) -> float:
    from mlpjax.units import AVOGADRO

    return float(atoms.get_masses().sum() / AVOGADRO / (volume_A3 * 1e-24))  # amu / N_A = g; 1 Å³ = 1e-24 cm³


def _cmd_md(args) -> int:
    from mlpjax import load
    from mlpjax.data import read_structure
    from mlpjax.md import MDConfig, simulate, supercell

    _check_md_options(args)
    _enable_x64_if(args.float64)
    pot = load(args.model)
    structure = read_structure(args.structure, index=args.index).to_atoms()
    unknown = sorted(set(structure.numbers.tolist()) - {int(z) for z in pot.species})
    if unknown:
        from ase.data import chemical_symbols

        raise _config_error(f"structure {args.structure} contains {', '.join(chemical_symbols[z] for z in unknown)}, but "
                            f"the model knows only {', '.join(chemical_symbols[z] for z in pot.species)}", "structure")
    if args.supercell:
        structure = supercell(structure, tuple(args.supercell))
    cfg = MDConfig(
        ensemble=args.ensemble,
        temperature_K=args.temperature if args.temperature is not None else 300.0,
        temperature_final_K=args.temperature_final,
        pressure_GPa=args.pressure,
        pressure_final_GPa=args.pressure_final,
        thermostat_tau_fs=args.thermostat_tau,
        barostat_tau_fs=args.barostat_tau,
        timestep_fs=args.timestep,
        steps=args.steps,
        log_every=args.log_every,
        traj_every=args.traj_every,
        friction_per_ps=args.friction,
        seed=args.seed,
        dtype="float64" if args.float64 else None,
        max_force_std=args.max_force_std,
        uncertainty_action="mark" if args.mark_uncertain else "stop",
    )
    from mlpjax.ensemble import is_ensemble

    if args.max_force_std is not None and not is_ensemble(pot):
        raise _config_error(f"--max-force-std needs an ensemble model (mlpjax train --ensemble M); {args.model} is a "
                            f"single {pot.model} model", "--max-force-std")
    if args.mark_uncertain and args.max_force_std is None:
        raise _config_error("--mark-uncertain marks frames above --max-force-std: give --max-force-std EV_PER_A",
                            "--mark-uncertain")
    if args.replicas is not None or args.replica_temperatures is not None:
        return _md_replicas(args, pot, structure, cfg)
    print(
        f"mlpjax md: {len(structure)} atoms, {cfg.ensemble.upper()} at {cfg.temperature_K:g} K, "
        f"{cfg.steps} steps of {cfg.timestep_fs:g} fs ({cfg.steps * cfg.timestep_fs / 1000:g} ps)",
        flush=True,
    )
    t0 = time.perf_counter()
    result = simulate(pot, structure, cfg, trajectory=args.output, log=args.log, progress=not args.quiet,
                      restart=args.restart, restart_out=args.restart_out, restart_every=args.restart_every)
    wall = time.perf_counter() - t0
    th = result.thermo
    n = len(structure)
    _report_uncertainty([result.uncertainty] if result.uncertainty else None, cfg)
    if tuple(result.image_repeats) != (1, 1, 1):
        print("periodic images: the cell is narrower than 2 × (cutoff + skin); it was simulated exactly through a "
              f"{'×'.join(map(str, result.image_repeats))} supercell of its images (mlpjax.md.build_system)")
    half = len(th["T_K"]) // 2
    print(
        f"done: {result.steps_done} steps, {th['time_ps'][-1]:g} ps; final E_pot {th['E_pot_eV'][-1]:.4f} eV "
        f"({th['E_pot_eV'][-1] / n:.5f} eV/atom), T {th['T_K'][-1]:.1f} K, <T> (second half) {th['T_K'][half:].mean():.1f} K"
    )
    if cfg.ensemble == "npt":
        print(f"<P> (second half) {th['P_GPa'][half:].mean():.3f} GPa, <V> {th['V_A3'][half:].mean():.2f} Å³ "
              f"({th['V_A3'][half:].mean() / n:.4f} Å³/atom, density {_density_g_cm3(structure, th['V_A3'][half:].mean()):.4f} g/cm³)")
    if cfg.ensemble == "nve" and len(th["time_ps"]) > 1:
        import numpy as np

        drift = np.polyfit(th["time_ps"], th["E_tot_eV"], 1)[0] / n * 1e3
        print(f"NVE total-energy drift {drift:+.4f} meV/atom/ps")
    t = result.timings
    print(
        f"{t['steps_per_s']:.2f} steps/s ({t['steps_per_s'] * n:.3g} atom-steps/s) after {t['compile_s']:.1f} s compilation; "
        f"neighbour list {result.neighbor_capacity} pairs, {result.n_neighbor_reallocations} reallocation(s); wall {wall:.1f} s"
    )
    for label, path in (("trajectory", args.output), ("thermo log", args.log), ("restart", args.restart_out)):
        if path:
            print(f"  {label}: {path}")
    return 0


def _check_md_options(args) -> None:
    """The md checks that involve several options (each option's own range is checked by its type)."""
    if args.ensemble != "nve" and args.temperature is None and args.replica_temperatures is None:
        raise _config_error(f"--ensemble {args.ensemble} needs --temperature K", "--temperature")
    if args.ensemble != "npt":
        for flag, value in (("--pressure-final", args.pressure_final), ("--barostat-tau", args.barostat_tau)):
            if value is not None:
                raise _config_error(f"{flag} applies to --ensemble npt only (got --ensemble {args.ensemble})", flag)
    if args.restart_every is not None and not args.restart_out:
        raise _config_error("--restart-every needs --restart-out FILE", "--restart-every")
    if args.replicas is None and args.replica_temperatures is None:
        return
    temps = args.replica_temperatures
    n = args.replicas if args.replicas is not None else len(temps)
    if temps is not None and len(temps) != n:
        raise _config_error(f"--replica-temperatures gives {len(temps)} temperatures for --replicas {n}", "--replica-temperatures")
    if temps is not None and args.temperature_final is not None and args.temperature is None:
        raise _config_error("--temperature-final with --replica-temperatures needs --temperature "
                            "(each replica's ramp is scaled by its temperature / --temperature)", "--temperature")


def _report_uncertainty(per_run, cfg) -> None:
    """One line per run about the ensemble's force deviation (and the stop or marks of --max-force-std)."""
    if not per_run:
        return
    for k, u in enumerate(per_run):
        who = f"replica {k}: " if len(per_run) > 1 else ""
        line = f"{who}largest per-atom force std {u['max_force_std']:.4f} eV/Å"
        if u["stopped_step"] is not None:
            line += (f"; stopped at step {u['stopped_step']} (above --max-force-std {cfg.max_force_std:g} eV/Å), "
                     f"frame written to {u['frame_path']}")
        elif u["flagged_steps"]:
            line += f"; {len(u['flagged_steps'])} frame(s) above --max-force-std {cfg.max_force_std:g} eV/Å marked"
        print(line)


def _md_replicas(args, pot, structure, cfg) -> int:
    """``mlpjax md --replicas N``: N independent replicas in one vmapped run (mlpjax.replicas)."""
    import numpy as np

    from mlpjax.replicas import replica_paths, simulate_replicas

    temps = args.replica_temperatures  # a list of K (_NumberList), checked against --replicas by _check_md_options
    n = args.replicas if args.replicas is not None else len(temps)
    temps = temps or [cfg.temperature_K] * n
    seeds = [cfg.seed + k for k in range(n)]
    logs = replica_paths(args.log, n) if args.log else None
    trajs = replica_paths(args.output, n) if args.output else None
    print(
        f"mlpjax md: {n} replicas of {len(structure)} atoms, {cfg.ensemble.upper()} at {', '.join(f'{t:g}' for t in temps)} K "
        f"(seeds {seeds[0]}..{seeds[-1]}), {cfg.steps} steps of {cfg.timestep_fs:g} fs ({cfg.steps * cfg.timestep_fs / 1000:g} ps)",
        flush=True,
    )
    t0 = time.perf_counter()
    result = simulate_replicas(pot, structure, cfg, temperatures_K=temps, seeds=seeds, logs=logs, trajectories=trajs,
                               progress=not args.quiet, restart=args.restart, restart_out=args.restart_out,
                               restart_every=args.restart_every)
    wall = time.perf_counter() - t0
    n_atoms = len(structure)
    _report_uncertainty(result.uncertainty, cfg)
    for k, th in enumerate(result.thermo):
        half = len(th["T_K"]) // 2
        line = (f"replica {k}: target {temps[k]:g} K, seed {seeds[k]}: <T> (second half) {th['T_K'][half:].mean():.1f} K, "
                f"final E_pot {th['E_pot_eV'][-1] / n_atoms:.5f} eV/atom")
        if cfg.ensemble == "nve" and len(th["time_ps"]) > 1:
            drift = np.polyfit(th["time_ps"], th["E_tot_eV"], 1)[0] / n_atoms * 1e3
            line += f", E_tot drift {drift:+.4f} meV/atom/ps"
        if cfg.ensemble == "npt":
            v = th["V_A3"][half:].mean()
            line += (f", <P> {th['P_GPa'][half:].mean():.3f} GPa, <V> {v / n_atoms:.4f} Å³/atom "
                     f"(density {_density_g_cm3(structure, v):.4f} g/cm³)")
        print(line)
    t = result.timings
    print(
        f"{t['replica_steps_per_s']:.2f} replica-steps/s ({t['steps_per_s']:.2f} steps/s × {n}; {t['atom_steps_per_s']:.3g} "
        f"atom-steps/s) after {t['compile_s']:.1f} s compilation; neighbour list {result.neighbor_capacity} pairs per "
        f"replica, {result.n_neighbor_reallocations} reallocation(s); wall {wall:.1f} s"
    )
    for label, paths in (("trajectories", trajs), ("thermo logs", logs),
                         ("restart (all replicas)", [args.restart_out] if args.restart_out else None)):
        if paths:
            print(f"  {label}: {', '.join(paths)}")
    return 0


# --------------------------------------------------------------------------- analyze
def _cmd_analyze(args) -> int:
    import ase.io
    import numpy as np

    from mlpjax.analysis import analyze_trajectory, write_analysis
    from mlpjax.data import DataError

    if not args.fit_range[0] < args.fit_range[1]:
        raise _config_error(f"--fit-range START END needs START < END, got {args.fit_range[0]:g} {args.fit_range[1]:g}", "--fit-range")
    if args.order_cutoff is not None and not args.order:
        raise _config_error("--order-cutoff applies to --order only; add --order", "--order-cutoff")
    path = args.trajectory
    try:
        frames = ase.io.read(path, index=":")
    except FileNotFoundError:
        raise
    except Exception as err:  # ASE raises a different type per format
        raise DataError(f"cannot read the trajectory ({type(err).__name__}: {err})", source=path) from err
    frames = frames[args.skip :]
    if not frames:
        raise DataError(f"no frames to analyse ({args.skip} skipped)", source=path)
    what = [w for w in ("rdf", "msd", "vacf", "order") if getattr(args, w)]
    if not what:  # nothing asked: everything the trajectory allows
        what = ["rdf"] if all(np.all(a.pbc) for a in frames) else []
        if len(frames) >= 4:
            what.append("msd")
            if all(a.has("momenta") for a in frames):
                what.append("vacf")
        if not what:
            raise DataError("nothing to analyse: the frames are not periodic (no g(r)) and fewer than 4 (no MSD)", source=path)
    for flag in ("rdf", "order"):
        bad = next((k for k, a in enumerate(frames) if not np.all(a.pbc)), None) if flag in what else None
        if bad is not None:
            raise DataError(
                f"--{flag} needs periodic frames, but pbc = {frames[bad].pbc.tolist()}: "
                + ("g(r) of a finite cluster has no density to normalise by" if flag == "rdf" else
                   "the bond order counts neighbours through periodic images")
                + f"; drop --{flag} or give a periodic trajectory",
                source=path,
                frame=bad + args.skip,
            )
    dt_ps = args.timestep_fs * 1e-3 if args.timestep_fs is not None else None
    print(f"mlpjax analyze: {len(frames)} frames of {len(frames[0])} atoms from {path}; {', '.join(what)}", flush=True)
    try:
        result = analyze_trajectory(
            frames, what=what, species=args.species, r_max=args.r_max, n_bins=args.n_bins, dt_ps=dt_ps, fit_range=tuple(args.fit_range), n_blocks=args.n_blocks,
            order_cutoff=args.order_cutoff,
        )
    except ValueError as err:
        if isinstance(err, DataError):
            raise
        raise DataError(str(err), source=path) from err
    nums = result["numbers"]
    fmt = lambda x, spec=".3f": "n/a" if x is None else format(x, spec)  # noqa: E731
    if "rdf" in nums:
        g = nums["rdf"]
        print(
            f"g(r): first peak {fmt(g['first_peak_A'])} Å, first minimum {fmt(g['first_minimum_A'])} Å, "
            f"coordination {fmt(g['coordination_number'], '.2f')}; cutoff estimates: first minimum "
            f"{fmt(g['cutoff_first_minimum_A'], '.2f')} Å, third peak {fmt(g['cutoff_third_peak_A'], '.2f')} Å"
        )
        for note in g["notes"]:
            print(f"  note: {note}")
    if "msd" in nums:
        m = nums["msd"]
        err = "" if m["D_err_A2_per_ps"] is None else f" ± {m['D_err_A2_per_ps']:.3g}"
        print(
            f"MSD: D = {m['D_A2_per_ps']:.4g}{err} Å²/ps ({m['D_cm2_per_s']:.3g} cm²/s), "
            f"fit over {m['fit_start_ps']:g}–{m['fit_end_ps']:g} ps, {m['n_blocks']} blocks"
        )
    if "vacf" in nums:
        v = nums["vacf"]
        print(
            f"VACF: spectrum peak {fmt(v['spectrum_peak_THz'], '.2f')} THz ({fmt(v['spectrum_peak_cm1'], '.0f')} cm⁻¹); "
            f"Green–Kubo D = {v['D_green_kubo_A2_per_ps']:.4g} Å²/ps"
        )
    if "order" in nums:
        o = nums["order"]
        print(
            f"bond order (cutoff {o['cutoff_A']:.2f} Å, {o['cutoff_source']}): <q4> {o['q4_mean']:.3f}, <q6> {o['q6_mean']:.3f}, "
            f"{o['mean_neighbours']:.1f} neighbours; solid-like atoms {100 * o['solid_fraction_first']:.0f} % in the first frame, "
            f"{100 * o['solid_fraction_last']:.0f} % in the last, {100 * o['solid_fraction_max']:.0f} % at most"
        )
    for k, p in sorted(write_analysis(result, args.output).items()):
        print(f"  {k}: {p}")
    return 0


# ------------------------------------------------------------------------------ data
def _cmd_data(args) -> int:
    import dataclasses

    import yaml

    from mlpjax.config import ConfigError
    from mlpjax.data.generate import EmtCu, composition_path, generate, load_recipe, recipe_path

    emt_flags = {"--md-frames": ("md_frames", args.md_frames), "--rattled": ("rattled", args.rattled),
                 "--strained": ("strained", args.strained), "--liquid-frames": ("liquid_frames", args.liquid_frames)}
    given = {flag: fv for flag, fv in emt_flags.items() if fv[1] is not None}
    generate_only = {**{flag: fv[1] for flag, fv in emt_flags.items()}, "--seed": args.seed, "--workers": args.workers,
                     "--timeout": args.timeout, "--oracle": args.oracle}
    pack_only = {"--units": args.units, "--cutoff": args.cutoff, "--compression": args.compression,
                 **{flag: value for flag, value, default in (("--energy-key", args.energy_key, "energy"),
                                                             ("--forces-key", args.forces_key, "forces"),
                                                             ("--stress-key", args.stress_key, "stress"))
                    if value != default}}
    if args.kind == "pack":
        bad = [flag for flag, value in generate_only.items() if value is not None]
        if bad:
            raise ConfigError(f"{', '.join(bad)}: only for generate and the recipes (pack converts an existing file)",
                              option=bad[0])
        return _data_pack(args)
    bad = [flag for flag, value in pack_only.items() if value is not None]
    if bad:
        raise ConfigError(f"{', '.join(bad)}: only for mlpjax data pack IN OUT.h5", option=bad[0])
    if args.packed is not None:
        raise ConfigError(f"{args.kind} writes --output, it takes no second file {args.packed!r}", option="OUT")
    if args.output is None:
        raise ConfigError(f"mlpjax data {args.kind} needs --output OUT.xyz (see mlpjax data --help)", option="--output")
    if args.kind == "generate":
        if args.recipe is None:
            raise ConfigError("mlpjax data generate needs a recipe: mlpjax data generate RECIPE.yaml --output OUT.xyz "
                              "(the shipped recipes in mlpjax/data/recipes/ are examples)", option="recipe")
        path = args.recipe
    else:
        if args.recipe is not None:
            raise ConfigError(f"{args.kind} is a shipped recipe and takes no recipe file; for your own recipe run "
                              f"mlpjax data generate {args.recipe} --output ...", option="recipe")
        path = recipe_path(args.kind)
    recipe = load_recipe(path)
    if given:  # the emt-cu flags set the recipe's emt_cu source
        where = [i for i, s in enumerate(recipe.sources) if isinstance(s, EmtCu)]
        if not where:
            raise ConfigError(f"{', '.join(given)} set the emt_cu source of the emt-cu recipe; {path} has none",
                              option=next(iter(given)))
        sources = list(recipe.sources)
        for i in where:
            sources[i] = dataclasses.replace(sources[i], **dict(given.values()))
        recipe = recipe.replace(sources=tuple(sources))
        if all(s.md_frames + s.rattled + s.strained + s.liquid_frames == 0 for s in (sources[i] for i in where)) \
                and len(where) == len(sources):
            raise ConfigError("--md-frames, --rattled, --strained and --liquid-frames are all 0: nothing to write",
                              option="--md-frames")
    if args.seed is not None:
        recipe = recipe.replace(seed=args.seed)
    if args.oracle is not None:
        try:
            oracle = yaml.safe_load(args.oracle) if args.oracle.lstrip().startswith("{") else args.oracle
        except yaml.YAMLError as err:
            raise ConfigError(f"--oracle {args.oracle!r} is not a name or a {{name: ..., option: value}} mapping "
                              f"({' '.join(str(err).split())})", option="--oracle") from None
        from mlpjax.active import make_oracle

        try:
            recipe = recipe.replace(oracle=make_oracle(oracle))
        except ConfigError as err:
            raise ConfigError(f"--oracle {args.oracle}: {err}", option="--oracle") from None
    print(f"mlpjax data: {args.kind if args.kind != 'generate' else path}: {recipe.description or path}", flush=True)
    result = generate(recipe, args.output, workers=args.workers, timeout_s=args.timeout, overwrite=args.overwrite,
                      progress=not args.quiet, warn=False)
    rep, comp = result.labelling, result.composition
    print(f"wrote {comp.n_frames} labelled frames ({recipe.oracle.describe()}) to {args.output}: {rep.n_labelled} "
          f"labelled now, {rep.n_skipped} already there" + (f", {len(rep.failures)} failed (see {rep.failures_path})"
                                                           if rep.failures else ""))
    print(f"composition ({composition_path(args.output)}):\n{comp.format()}")
    for w in comp.warnings:
        warnings.warn(w)
    return 0


def _data_pack(args) -> int:
    """``mlpjax data pack IN OUT.h5``: :func:`mlpjax.data.pack_dataset` with the train command's reading options."""
    from mlpjax.config import ConfigError
    from mlpjax.data import pack_dataset
    from mlpjax.data.packed import PACKED_SUFFIXES, is_packed_path

    if args.packed is not None and args.output is not None and os.path.abspath(args.packed) != os.path.abspath(args.output):
        raise ConfigError(f"OUT {args.packed} and --output {args.output} both name the packed file: give one",
                          option="--output")
    source, out = args.recipe, args.packed or args.output
    if source is None or out is None:
        raise ConfigError("mlpjax data pack needs IN and OUT: mlpjax data pack IN.xyz OUT.h5 (see mlpjax data --help)",
                          option="recipe" if source is None else "OUT")
    if not is_packed_path(out):
        raise ConfigError(f"OUT {out} must end in {' or '.join(PACKED_SUFFIXES)} (mlpjax train streams a packed file "
                          "by its suffix)", option="OUT")
    if is_packed_path(source):
        raise ConfigError(f"IN {source} is packed already; pack the data file it came from", option="recipe")
    if os.path.exists(out) and not args.overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it (it is replaced only once the new file is "
                          "complete)", option="OUT")
    t0, last = time.monotonic(), [time.monotonic()]

    def progress(n: int) -> None:
        if not args.quiet and time.monotonic() - last[0] > 10.0:
            last[0] = time.monotonic()
            print(f"mlpjax data pack: {n:,} frames checked and written ({time.monotonic() - t0:.0f} s)", flush=True)

    summary = pack_dataset(source, out, units=args.units or "eV", energy_key=args.energy_key,
                           forces_key=args.forces_key, stress_key=args.stress_key, cutoffs=args.cutoff or (),
                           compression=args.compression or "gzip", progress=progress)
    from ase.data import chemical_symbols

    mb = lambda b: f"{b / 1e6:.1f} MB"  # noqa: E731
    print(f"packed {summary.n_structures:,} frames ({summary.n_atoms:,} atoms; "
          f"{', '.join(chemical_symbols[z] for z in summary.species)}) from {source} ({mb(summary.source_bytes)}) into "
          f"{out} ({mb(summary.bytes)}, eV/Å) in {summary.seconds:.1f} s"
          + (f"; neighbour counts stored for {', '.join(f'{c:g}' for c in summary.edge_cutoffs)} Å"
             if summary.edge_cutoffs else "")
          + f"; train on it with mlpjax train --train {out}")
    return 0


# ------------------------------------------------------------------------------ active
def _cmd_active(args) -> int:
    from mlpjax.active.config import load_active_config
    from mlpjax.active.loop import default_output, run_active

    cfg = load_active_config(args.config)
    output = args.output or cfg.output or default_output(args.config)
    print(f"mlpjax active: {args.config} -> {output} (resumes if the directory holds a run of this config)", flush=True)
    res = run_active(cfg, output, progress=not args.quiet)
    last = res.rows[-1] if res.rows else {}
    mae = last.get("valid_force_mae_meV_A")
    print(f"{res.stop_reason}: {len(res.rows)} models, {res.n_labels} labelled configurations"
          + (f", validation force MAE {mae:.1f} meV/Å" if mae is not None else "")
          + f"; model {res.model_path}; report {os.path.join(res.run_dir, 'report.csv')}")
    return 0


# ------------------------------------------------------------------------- serve-ipi
def _cmd_serve_ipi(args) -> int:
    from ase.data import chemical_symbols

    from mlpjax import load
    from mlpjax.data import read_structure
    from mlpjax.ipi import DriverError, describe_server, is_periodic, serve

    _enable_x64_if(args.float64)
    pot = load(args.model)
    template = read_structure(args.structure, index=args.index).to_atoms()
    unknown = sorted(set(template.numbers.tolist()) - {int(z) for z in pot.species})
    if unknown:
        raise _config_error(f"structure {args.structure} contains {', '.join(chemical_symbols[z] for z in unknown)}, but "
                            f"the model knows only {', '.join(chemical_symbols[z] for z in pot.species)}", "--structure")
    periodic = {"auto": None, "yes": True, "no": False}[args.periodic]
    if periodic is None and not template.cell.any():
        kind = "periodic in the server's box (the structure file has no cell; --periodic no for a molecule)"
    else:
        kind = "periodic (virial sent)" if is_periodic(template, periodic) else "not periodic (virial 0)"
    server = describe_server(args.address, args.unix)
    print(f"mlpjax serve-ipi: {pot.model} model, {len(template)} atoms ({template.get_chemical_formula()}), {kind}; "
          f"connecting to {server}", flush=True)
    try:
        result = serve(pot, template, address=args.address, unix=args.unix, periodic=periodic,
                       max_steps=args.max_steps, wait_s=args.wait, log=args.log)
    except DriverError as err:
        option = {"address": "--unix" if args.unix else "--address"}.get(err.option, f"--{err.option}")
        raise _config_error(f"{err} ({option})", option) from None
    timing = ""
    if result.steps:
        timing = f" (the first, compilation included, after {result.first_call_seconds:.2f} s"
        if result.steps > 1:
            timing += f"; then {1000 * (result.seconds - result.first_call_seconds) / (result.steps - 1):.1f} ms wall per call"
        timing += ")"
    why = "--max-steps reached" if result.reason == "max_steps" else "the server closed the connection"
    print(f"mlpjax serve-ipi: answered {result.steps} force call{'' if result.steps == 1 else 's'} in {result.seconds:.1f} s{timing}; {why}"
          + (f"; log {args.log}" if args.log else ""))
    return 0


# ------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    """The ``mlpjax`` parser. Every option that takes a value has a checked ``type=`` or ``choices=``
    (tests/test_cli_errors.py sweeps them all with bad values), so option errors stop at parse time."""
    from mlpjax import __version__

    p = _Parser(prog="mlpjax", description="Machine-learning interatomic potentials in JAX.")
    p.add_argument("--version", action="version", version=f"mlpjax {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="train | evaluate | validate | md | analyze | data | active | serve-ipi (mlpjax COMMAND --help)")
    infile, outfile, outdir, key = _InputFile(), _OutputFile(), _OutputDir(), _Text()

    def label_keys(sp):
        sp.add_argument("--energy-key", type=key, default="energy", help="info key of the energy (default: energy)")
        sp.add_argument("--forces-key", type=key, default="forces", help="per-atom array key of the forces (default: forces)")
        sp.add_argument("--stress-key", type=key, default="stress", help="info key of the stress (default: stress)")

    t = sub.add_parser("train", help="train a potential", description="Train a potential and write DIR/model.mlpjax, DIR/log.csv, DIR/parity.png.")
    from mlpjax import models

    t.add_argument("--model", default=None, choices=models.available(), help="architecture (default from --config, else schnet)")
    t.add_argument("--train", type=infile, help="training data (extxyz, ASE db/traj, MD17 npz: read into memory; a packed .h5 "
                   "from mlpjax data pack: streamed from disk); required unless --config sets train_file")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--valid", type=infile, help="validation data file")
    g.add_argument("--valid-fraction", type=_HOLDOUT, default=None, help="hold out this fraction of --train for validation, in [0, 1)")
    t.add_argument("--test", type=infile, help="test data file (metrics and parity plot at the end)")
    t.add_argument("--test-fraction", type=_HOLDOUT, default=None, help="hold out this fraction of --train as a test set, in [0, 1)")
    t.add_argument("--output", type=outdir, help="output directory (created if missing); required")
    t.add_argument("--config", type=infile, help="YAML file mapping 1:1 onto mlpjax.config.TrainConfig; flags override it")
    t.add_argument("--preset", choices=["default", "small", "rmd17"],
                   help="named model size and training settings of --model (mlpjax.presets): default = the reference "
                   "implementation's defaults (used when neither --preset nor --config is given), small = CPU-sized "
                   "(measured cost and rMD17 accuracy in the README), rmd17 = the published rMD17 setting (MACE, NequIP; GPU)")
    t.add_argument("--epochs", type=_NONNEG_INT, help="maximum number of epochs (>= 0)")
    t.add_argument("--max-time", type=_POS_FLOAT, help="wall-clock limit in minutes (> 0)")
    t.add_argument("--seed", type=_NONNEG_INT)
    t.add_argument("--cutoff", type=_POS_FLOAT, help="Å (> 0)")
    t.add_argument("--batch-size", type=_POS_INT, help="structures per batch (>= 1)")
    t.add_argument("--lr", type=_POS_FLOAT, help="peak learning rate (> 0)")
    t.add_argument("--units", type=_Units(), help="units of the data files: eV, Hartree (Hartree/Bohr), kcal/mol, kJ/mol, ...")
    t.add_argument("--dtype", choices=["float32", "float64"])
    t.add_argument("--devices", type=_NONNEG_INT, metavar="N",
                   help="shard each batch over N local devices (TrainConfig.devices, data parallel; 0: all; default 1)")
    t.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.ckpt")
    t.add_argument("--strict", action="store_true", help="treat unit-sanity warnings (energies/forces whose ranges look "
                   "like meV, Hartree or kcal/mol written as eV) as errors")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    tl = t.add_argument_group("transfer learning (fine-tune a trained model on new data)")
    tl.add_argument("--init-from", type=infile, metavar="MODEL",
                    help="start from this model file's parameters; its architecture, cutoff and elements are used "
                    "(a --model/--cutoff/config that sets other values is an error); a lower --lr than for "
                    "training from scratch is usually best (README: Transfer learning)")
    tl.add_argument("--freeze", type=key, action="append", metavar="PATTERN",
                    help="keep the parameters whose path matches this fnmatch pattern fixed, e.g. 'params/embedding/*' "
                    "(repeatable; --list-params shows the paths)")
    tl.add_argument("--keep-reference-energies", action="store_const", const=False, default=None,
                    help="keep the model's per-element reference energies E0 (default: re-fit them on the new data)")
    tl.add_argument("--list-params", action="store_true",
                    help="print the parameter paths and shapes of --init-from MODEL and exit")
    en = t.add_argument_group("ensembles")
    en.add_argument("--ensemble", type=_POS_INT, metavar="N",
                    help="train N members together (ensemble_size; the spread is the uncertainty)")
    en.add_argument("--ensemble-kind", choices=["full", "shallow"],
                    help="full: N independent networks; shallow: one network with N last-layer heads")
    en.add_argument("--bootstrap", action="store_true", default=None,
                    help="full ensembles: each member trains on its own bootstrap resample of the training set")
    label_keys(t)
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", help="error metrics of a model on a data set", description="Energy/force MAE, RMSE and R² of MODEL on DATA.")
    e.add_argument("model", type=infile, help="model file (model.mlpjax)")
    e.add_argument("data", type=infile, help="labelled data file")
    e.add_argument("--json", type=outfile, help="write the metrics to this JSON file")
    e.add_argument("--parity", type=outfile, help="write a parity plot PNG")
    e.add_argument("--units", type=_Units(), help="units of DATA (default: those the model was trained with)")
    e.add_argument("--batch-size", type=_POS_INT, default=16, help="structures per batch (default 16)")
    e.add_argument("--float64", action="store_true")
    e.add_argument("--uncertainty", type=outdir, metavar="DIR",
                   help="ensembles and GAP: write DIR/uncertainty.json (Spearman ρ of σ vs |error| per structure and per "
                        "atom, miscalibration area, NLL, calibration factors) and DIR/calibration.png")
    e.add_argument("--calibrate", type=infile, metavar="DATA",
                   help="with --uncertainty: fit the σ calibration on this labelled (validation) file")
    label_keys(e)
    e.set_defaults(func=_cmd_evaluate)

    v = sub.add_parser(
        "validate",
        help="physical validation report (drift, EOS, elastic constants, VDOS, extrapolation)",
        description="Validate MODEL and write DIR/report.md, DIR/report.json and PNG plots. With --reference emt every "
        "quantity is compared against ASE's EMT (lattice constant, bulk modulus, C11/C12/C44, Γ phonons, VDOS, errors "
        "vs temperature / volume strain / energy); with a labelled data file: parity and errors on it, plus the "
        "model's own EOS, elastic constants, phonons, NVE drift and VDOS.",
    )
    v.add_argument("model", type=infile, help="model file (model.mlpjax)")
    v.add_argument("--reference", type=_Reference(), required=True, help="'emt' (ASE's EMT) or a labelled data file (extxyz, ASE db/traj, npz)")
    v.add_argument("--structure", type=_Structure(), help="'fcc-Cu' (LATTICE-Symbol[:a], cubic cell) or a structure file; default: "
                   "one element: its reference state; two: an L1₂/L1₀/B2 prototype matching the training composition; "
                   "else the first training structure (mlpjax.validate.default_structure)")
    v.add_argument("--output", type=outdir, default="validation", help="output directory (default: validation)")
    v.add_argument("--quick", action="store_true", help="short MD runs and few samples (about a minute)")
    v.add_argument("--train", type=infile, help="training data: marks the training range on the extrapolation plots")
    v.add_argument("--skip", type=_Sections(), help="comma-separated sections to leave out: parity,eos,elastic,phonons,drift,vdos,extrapolation")
    v.add_argument("--float32", action="store_true", help="run in float32 (default float64, which the drift levels assume)")
    v.add_argument("--units", type=_Units(), help="units of the data files (default: those the model was trained with)")
    v.add_argument("--seed", type=_NONNEG_INT, default=0)
    v.add_argument("--strict", action="store_true", help="exit with status 1 if a check misses or a section fails")
    v.add_argument("--quiet", action="store_true")
    v.set_defaults(func=_cmd_validate)

    m = sub.add_parser("md", help="molecular dynamics with jax-md",
                       description="NVE, NVT (Langevin or Nosé–Hoover chain) or NPT (Nosé–Hoover, isotropic) MD of "
                       "STRUCTURE with MODEL in jax-md. Periodic cells narrower than 2 (cutoff + skin) run exactly "
                       "through their periodic images. --replicas N runs N independent replicas (seeds, temperatures) in one vmapped "
                       "simulation.")
    m.add_argument("model", type=infile, help="model file (model.mlpjax)")
    m.add_argument("structure", type=infile, help="any file ASE reads (the last frame is used unless --index)")
    m.add_argument("--index", type=_INT, default=-1, help="frame of STRUCTURE (default -1, the last)")
    m.add_argument("--ensemble", choices=["nve", "nvt", "nvt_nh", "npt"], default="nve",
                   help="nvt = Langevin (BAOAB), nvt_nh = Nosé–Hoover chain, npt = Nosé–Hoover thermostat + barostat")
    m.add_argument("--temperature", type=_NONNEG_FLOAT, help="K (initial velocities; NVT/NPT target)")
    m.add_argument("--temperature-final", type=_NONNEG_FLOAT, help="K: ramp the target linearly to this over the run")
    m.add_argument("--pressure", type=_FLOAT, default=0.0, help="GPa, NPT target")
    m.add_argument("--pressure-final", type=_FLOAT, help="GPa: ramp the NPT target linearly to this over the run")
    m.add_argument("--thermostat-tau", type=_POS_FLOAT, help="fs, Nosé–Hoover thermostat time scale (default 100 steps)")
    m.add_argument("--barostat-tau", type=_POS_FLOAT, help="fs, Nosé–Hoover barostat time scale (default 1000 steps)")
    m.add_argument("--restart", type=infile, help="continue from this restart file (--steps is the total; appends to --output/--log)")
    m.add_argument("--restart-out", type=outfile, help="write a restart file here at the end (and every --restart-every steps)")
    m.add_argument("--restart-every", type=_POS_INT, help="steps between restart files")
    m.add_argument("--timestep", type=_POS_FLOAT, default=1.0, help="fs (> 0)")
    m.add_argument("--steps", type=_POS_INT, required=True, help="number of steps (>= 1)")
    m.add_argument("--supercell", type=_POS_INT, nargs=3, metavar=("NA", "NB", "NC"))
    m.add_argument("--output", type=outfile, help="trajectory: *.traj = ASE trajectory, otherwise extxyz")
    m.add_argument("--log", type=outfile, help="thermo CSV")
    m.add_argument("--traj-every", type=_POS_INT, default=100)
    m.add_argument("--log-every", type=_POS_INT, default=10)
    m.add_argument("--friction", type=_POS_FLOAT, default=5.0, help="Langevin friction, 1/ps (> 0)")
    m.add_argument("--seed", type=_NONNEG_INT, default=0)
    m.add_argument("--replicas", type=_POS_INT, metavar="N",
                   help="run N independent replicas at once (jax.vmap; seeds SEED+k); --log/--output get _replica{k} "
                   "before the suffix (nve, nvt, nvt_nh)")
    m.add_argument("--replica-temperatures", type=_NumberList(_NONNEG_FLOAT), metavar="T1,T2,...",
                   help="K, one per replica (comma list, as many as --replicas): several temperatures in one run")
    m.add_argument("--max-force-std", type=_POS_FLOAT, metavar="EV_PER_A",
                   help="ensembles: stop at the first record whose largest per-atom force std exceeds this (eV/Å), "
                        "writing that frame (uncertain_frame.xyz); the std is logged every --log-every steps")
    m.add_argument("--mark-uncertain", action="store_true",
                   help="with --max-force-std: do not stop, mark frames above it (info uncertain=True)")
    m.add_argument("--float64", action="store_true")
    m.add_argument("--quiet", action="store_true")
    m.set_defaults(func=_cmd_md)

    a = sub.add_parser(
        "analyze",
        help="g(r), MSD/diffusion and VACF/spectrum of a trajectory",
        description="Structure and dynamics of TRAJ: writes DIR/analysis.json (numbers), DIR/analysis.npz (curves) "
        "and DIR/{rdf,msd,vacf,order}.png. Without --rdf/--msd/--vacf/--order, g(r), MSD and VACF as far as the trajectory allows.",
    )
    a.add_argument("trajectory", type=infile, help="any file ASE reads (all frames; extxyz from `mlpjax md` carries time_ps and velocities)")
    a.add_argument("--rdf", action="store_true", help="g(r), partial g(r), coordination number and cutoff estimates (periodic frames)")
    a.add_argument("--msd", action="store_true", help="MSD of the unwrapped trajectory and the diffusion coefficient with block errors")
    a.add_argument("--vacf", action="store_true", help="velocity autocorrelation, its spectrum and the Green–Kubo D (frames with velocities)")
    a.add_argument("--order", action="store_true", help="Steinhardt q4/q6 and the fraction of solid-like atoms per frame "
                   "(ten Wolde; tells a crystal, a liquid and a liquid that nucleates apart; periodic frames)")
    a.add_argument("--order-cutoff", type=_POS_FLOAT, help="neighbour cutoff of --order, Å (default: the first minimum of g(r))")
    a.add_argument("--species", type=_Element(), nargs="+", metavar="SYMBOL", help="partial g(r) for every pair of these and per-species MSD (default: all, if several)")
    a.add_argument("--r-max", type=_POS_FLOAT, default=6.0, help="g(r) range, Å (default 6)")
    a.add_argument("--n-bins", type=_POS_INT, default=120, help="g(r) bins (default 120)")
    a.add_argument("--timestep-fs", type=_POS_FLOAT, help="time between successive frames, fs (default: from the frames' info['time_ps'])")
    a.add_argument("--skip", type=_NONNEG_INT, default=0, help="drop this many leading frames (equilibration)")
    a.add_argument("--fit-range", type=_Number(float, lo=0, hi=1), nargs=2, default=(0.1, 0.5), metavar=("START", "END"),
                   help="MSD fit window as fractions of the longest lag, 0 <= START < END <= 1 (default 0.1 0.5)")
    a.add_argument("--n-blocks", type=_POS_INT, default=5, help="blocks for the error of D (default 5; 1: no error bar)")
    a.add_argument("--output", type=outdir, default="analysis", help="output directory (default ./analysis)")
    a.set_defaults(func=_cmd_analyze)

    from mlpjax.data.generate import recipes

    d = sub.add_parser("data", help="make a reference data set (a recipe: structures, sampling, labelling), or pack one "
                       "into HDF5 (mlpjax data pack IN OUT.h5)",
                       description="Make a labelled data set from a recipe (mlpjax.data.generate): structures built with "
                       "ase.build or read from files, sampled by displacements, MD on a temperature ladder, NEB, rattles, "
                       "strains, vacancies and surfaces, labelled by an oracle (emt, pyscf, xtb, any ASE calculator) in "
                       "worker processes, appended to OUT as they come (a killed run resumes: run the same command again), "
                       "every frame tagged with config_type; prints and writes OUT.composition.json. "
                       f"KIND: generate RECIPE.yaml, or a shipped recipe: {', '.join(recipes())} "
                       "(emt-cu: the quickstart's fcc Cu with EMT, frames of mlpjax.data.emt.emt_cu). "
                       "KIND pack: mlpjax data pack IN OUT.h5 converts a data file (anything mlpjax train reads, with "
                       "its --units and label keys) into a chunked, compressed HDF5 file in eV/Å that mlpjax train "
                       "--train OUT.h5 streams from disk (mlpjax.data.packed); every frame is checked as it is read, "
                       "and OUT appears only when complete.")
    d.add_argument("kind", choices=["generate", "pack"] + recipes(),
                   help="generate (with RECIPE), pack (IN OUT.h5) or a shipped recipe")
    d.add_argument("recipe", nargs="?", type=infile, metavar="RECIPE|IN", help="the YAML recipe of generate; pack: IN, the data file to pack")
    d.add_argument("packed", nargs="?", type=outfile, metavar="OUT", help="pack: the .h5 file to write")
    d.add_argument("--output", type=outfile, help="extxyz file (appended to; resumed when it exists); required "
                   "except for pack (where it can stand for OUT)")
    d.add_argument("--seed", type=_NONNEG_INT, help="random seed (default: the recipe's, 0 in the shipped ones)")
    d.add_argument("--workers", type=_POS_INT, help="labelling worker processes (default: the recipe's, 1)")
    d.add_argument("--timeout", type=_POS_FLOAT, help="seconds one structure may take to label; a hung one is killed and "
                   "recorded as failed (default: the recipe's, none)")
    d.add_argument("--oracle", type=key, help="label with this oracle instead of the recipe's: emt, xtb, pyscf, "
                   "ase:MODULE:CLASS or a mapping such as '{name: pyscf, xc: pbe, basis: def2-svp}'")
    d.add_argument("--overwrite", action="store_true", help="delete OUT (and its failures file) first instead of resuming; "
                   "pack: replace an existing OUT")
    d.add_argument("--quiet", action="store_true", help="no progress output")
    d.add_argument("--md-frames", type=_NONNEG_INT, help="emt-cu: frames per (temperature, cell size) MD run (default 30)")
    d.add_argument("--rattled", type=_NONNEG_INT, help="emt-cu: rattled cells (default 40)")
    d.add_argument("--strained", type=_NONNEG_INT, help="emt-cu: strained cells (default 40)")
    d.add_argument("--liquid-frames", type=_NONNEG_INT,
                   help="emt-cu: frames per liquid temperature (108-atom melt at 1,750 and 1,000 K; default 20); 0: no liquid")
    dp = d.add_argument_group("pack (mlpjax data pack IN OUT.h5)")
    dp.add_argument("--units", type=_Units(), help="units IN is written in (as for mlpjax train; default eV); OUT is "
                    "in eV/Å")
    label_keys(dp)
    dp.add_argument("--cutoff", type=_POS_FLOAT, action="append", metavar="ANGSTROM",
                    help="store every structure's neighbour count within this cutoff (repeatable): training at that "
                    "cutoff then needs no counting pass over the file")
    dp.add_argument("--compression", choices=["gzip", "lzf", "none"],
                    help="gzip (default: level 4 with shuffle, read by any HDF5 tool), lzf (faster, h5py only) or none")
    d.set_defaults(func=_cmd_data)

    al = sub.add_parser("active", help="active learning: train an ensemble, explore with MD, label the uncertain, retrain",
                        description="The active-learning loop of CONFIG (mlpjax.active.config: initial data, oracle, "
                        "training, exploration conditions, trust window, stop criteria): train an ensemble, run MD under "
                        "the conditions with the uncertainty check, select a diverse batch of uncertain frames, label it "
                        "with the oracle, retrain warm-started, until the validation target or the label budget. Writes "
                        "DIR/report.csv, report.json, learning_curve.png and model.mlpjax. Killed at any point, the same "
                        "command continues where it stopped.")
    al.add_argument("config", type=infile, help="YAML file mapping 1:1 onto mlpjax.active.ActiveConfig")
    al.add_argument("--output", type=outdir, help="run directory (default: the config's output, else CONFIG-STEM_run)")
    al.add_argument("--quiet", action="store_true", help="no progress lines")
    al.set_defaults(func=_cmd_active)

    ip = sub.add_parser("serve-ipi", help="serve MODEL's energy/forces/virial to i-PI over a socket (i-PI protocol)",
                        description="Connect to an i-PI server (i-PI's <ffsocket>, or ASE's SocketIOCalculator) as a "
                        "force driver: every step the server sends the cell and positions, MODEL answers with the "
                        "energy, forces and virial (mlpjax.ipi.serve, through ASE's SocketClient and the mlpjax ASE "
                        "calculator; atomic units on the wire). STRUCTURE gives the species in the server's atom order "
                        "and whether the system is periodic. Runs until the server sends EXIT or --max-steps.")
    ip.add_argument("model", type=infile, help="model file (model.mlpjax)")
    conn = ip.add_mutually_exclusive_group(required=True)
    conn.add_argument("--address", type=_IPIAddress(), metavar="HOST:PORT",
                      help="INET server, e.g. localhost:31415 (i-PI <ffsocket mode='inet'>)")
    conn.add_argument("--unix", type=_IPISocketName(), metavar="NAME",
                      help="Unix socket /tmp/ipi_NAME (i-PI <ffsocket mode='unix'><address>NAME</address>)")
    ip.add_argument("--structure", type=infile, required=True, metavar="FILE",
                    help="template structure (any file ASE reads, e.g. i-PI's init.xyz): the species, in the server's "
                    "atom order; its positions are not used")
    ip.add_argument("--index", type=_INT, default=0, help="frame of --structure (default 0, the first)")
    ip.add_argument("--periodic", choices=["auto", "yes", "no"], default="auto",
                    help="auto (default): the structure's pbc, or periodic in the server's box when the file has no "
                    "cell (a plain xyz, i-PI's init.xyz); yes; no: a molecule (no periodic images, virial 0)")
    ip.add_argument("--max-steps", type=_POS_INT, metavar="N", help="disconnect after answering this many force calls (default: "
                    "serve until the server sends EXIT)")
    ip.add_argument("--wait", type=_POS_FLOAT, default=60.0, metavar="SECONDS",
                    help="seconds to keep retrying while the server is not listening yet (default 60)")
    ip.add_argument("--log", type=outfile, metavar="FILE", help="CSV of every answered call: step, seconds, energy_eV, "
                    "max_force_eV_per_A, volume_A3, pressure_GPa")
    ip.add_argument("--float64", action="store_true", help="evaluate the model in float64 (default float32)")
    ip.set_defaults(func=_cmd_serve_ipi)
    p.commands = dict(sub.choices)  # name → sub-parser (_Parser.parse_args reports unrecognised arguments there)
    return p


def _warning_line(command: str):
    """A ``warnings.showwarning`` that prints ``mlpjax CMD: warning: MESSAGE`` on one line."""

    def show(message, category, filename, lineno, file=None, line=None):
        from tqdm import tqdm

        # tqdm.write clears an active progress bar first and redraws it below, so the warning gets its own line
        tqdm.write(f"{command}: warning: {_one_line(message)}", file=file or sys.stderr)

    return show


def main(argv=None) -> int:
    """Run ``mlpjax ARGV`` and return the exit status.

    Exit status 0: done; 1: ``validate --strict`` found a miss; 2: a bad option, configuration,
    input file or output path; 3: the MD run blew up; 130: interrupted (Ctrl-C).

    Errors are one line ``mlpjax CMD: error: MESSAGE`` on stderr, never a traceback, for:
    argparse errors (each option's type checks its value), :class:`mlpjax.config.ConfigError`
    (configuration and option checks; a ValueError), :class:`mlpjax.data.DataError` (bad data),
    :class:`mlpjax.files.CorruptFileError` (bad model / checkpoint / restart file),
    FileNotFoundError, and any other OSError that names a file (permission denied, disk full,
    a path under a regular file: the environment, not a bug, so the path is what the user needs).
    Every other exception is a bug and keeps its traceback; so does any of the above with the
    environment variable MLPJAX_TRACEBACK=1. Python warnings print as one line
    ``mlpjax CMD: warning: MESSAGE``.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as err:  # the one-line message is already on stderr
        return err.code
    from mlpjax.files import CorruptFileError
    from mlpjax.config import ConfigError
    from mlpjax.data import DataError

    command = f"mlpjax {args.command}"
    debug = os.environ.get("MLPJAX_TRACEBACK", "") not in ("", "0")
    with warnings.catch_warnings():  # restores warnings.showwarning on the way out
        warnings.showwarning = _warning_line(command)
        try:
            return int(args.func(args) or 0)
        except (ConfigError, DataError, CorruptFileError, OSError) as err:
            if debug or (isinstance(err, OSError) and not isinstance(err, (CorruptFileError, FileNotFoundError))
                         and err.filename is None):
                raise  # an OSError that names no file is not about the user's paths
            if isinstance(err, OSError) and err.filename is not None and err.strerror:
                message = f"{err.strerror}: {err.filename}" + (f" -> {err.filename2}" if err.filename2 else "")
            else:
                message = str(err)
            print(f"{command}: error: {_one_line(message)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            if debug:
                raise
            print(f"{command}: interrupted", file=sys.stderr)
            return 130
        except Exception as err:
            from mlpjax.md import MDInstabilityError

            if isinstance(err, MDInstabilityError) and not debug:
                print(f"{command}: MD stopped: {_one_line(err)}", file=sys.stderr)
                return 3
            raise


if __name__ == "__main__":
    sys.exit(main())
