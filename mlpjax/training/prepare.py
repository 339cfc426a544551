"""What a fit needs before its first step: the data split, a unit sanity check, the float
dtype, and a potential normalised on the training data (shared by gradient training and
closed-form fits such as GAP's, :mod:`mlpjax.models.gap`).

Normalisation (:func:`prepare_potential`, training data only): species present, reference
energies E0_Z by least squares (:func:`mlpjax.data.fit_reference_energies`),
``energy_shift`` = mean per-atom residual energy, ``energy_scale`` = RMS of the force
components (as MACE/NequIP), ``avg_num_neighbors`` = edges per atom.

Transfer learning (``TrainConfig.init_from``, ``mlpjax train --init-from MODEL``): the model
file's architecture, cutoff, species table, ``avg_num_neighbors``, ``energy_scale`` and
``energy_shift`` are kept (the network was trained with them; :func:`resolve_init_from` makes a
config that sets other values an error), training starts from its parameters, and with
``refit_reference_energies`` the per-element E0 are re-fitted on the new data given the
pretrained network (:func:`refit_reference_energies`). Data with an element outside the model's
species table is a DataError naming the elements and the model file (:func:`check_representable`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from typing import Mapping, Sequence

import jax
import numpy as np

from mlpjax import data as _data
from mlpjax import models as _models
from mlpjax.config import ConfigError, TrainConfig
from mlpjax.graph import AtomGraph, to_graphs
from mlpjax.files import file_sha256  # noqa: F401 (re-exported by mlpjax.training)
from mlpjax.potential import Potential, cast_floats


def resolve_dtype(config: TrainConfig):
    """numpy float type of ``config.dtype``; float64 turns on ``jax_enable_x64`` (with a warning)."""
    if config.dtype == "float64":
        if not jax.config.jax_enable_x64:
            warnings.warn("dtype float64: enabling jax_enable_x64 for this process", stacklevel=3)
            jax.config.update("jax_enable_x64", True)
        return np.float64
    return np.float32


def prepare_potential(
    config: TrainConfig,
    train_configs: Sequence[_data.Configuration],
    *,
    graphs: Sequence[AtomGraph] | None = None,
    species: Sequence[int] | None = None,
    init: bool = True,
    source: Potential | None = None,
) -> Potential:
    """A fresh :class:`Potential` normalised on ``train_configs`` (with initial parameters).

    With ``config.init_from`` (fine-tuning): the model file's potential (``source`` if already
    loaded) with its parameters cast to ``config.dtype`` and, with
    ``config.refit_reference_energies``, E0 re-fitted on ``train_configs``; everything else below
    does not apply (see the module docstring). ``metadata["init_from"]`` records where it came from.

    species: sorted unique Z of the data (or ``species``); reference energies from a
    least-squares fit; ``energy_shift`` = mean per-atom residual (E - Σ n_Z E0_Z)/N;
    ``energy_scale`` = force RMS [eV/Å, used as eV] (per-atom residual std if the data
    has no forces, 1 if that is zero); ``avg_num_neighbors`` = edges per atom within
    the cutoff. ``graphs`` (from :func:`mlpjax.graph.to_graphs` with the same species
    and cutoff) saves recomputing neighbour lists. Parameters are initialised from
    ``config.seed`` when ``init`` (:meth:`PotentialDef.init_params`, compiled once per
    architecture), then the model's data-dependent initialisation runs, if it has one.
    """
    train_configs = list(train_configs)
    if not train_configs:
        raise ValueError("no training configurations")
    if config.init_from is not None:
        return _fine_tuning_start(config, train_configs, source)
    species = tuple(int(z) for z in (species if species is not None else _data.species_in(train_configs)))
    refs = _data.fit_reference_energies(train_configs, species)
    stats = _data.statistics(train_configs, refs)
    scale = stats.force_rms
    if not (math.isfinite(scale) and scale > 0):
        scale = stats.energy_per_atom_std
    if not (math.isfinite(scale) and scale > 0):
        scale = 1.0
    shift = stats.energy_per_atom_mean if math.isfinite(stats.energy_per_atom_mean) else 0.0
    if graphs is None:
        graphs = to_graphs(train_configs, species, config.cutoff)
    n_atoms = sum(g.n_atoms for g in graphs)
    n_edges = sum(g.n_edges for g in graphs)
    avg_nn = n_edges / n_atoms if n_atoms and n_edges else 1.0
    pot = Potential(
        model=config.model,
        model_config=_models.make_config(config.model, config.model_config),
        cutoff=float(config.cutoff),
        species=species,
        reference_energies=tuple(float(refs[z]) for z in species),
        energy_shift=float(shift),
        energy_scale=float(scale),
        avg_num_neighbors=float(avg_nn),
        metadata={},
    )
    if init:
        dtype = resolve_dtype(config)
        params = cast_floats(pot.init_params(jax.random.PRNGKey(int(config.seed))), dtype)
        hook = _models.data_init(config.model)
        if hook is not None:  # data-dependent initialisation, e.g. descriptor standardisation
            params = hook(pot.replace(params=params), params, graphs)
        pot = pot.replace(params=params)
    return pot


# --------------------------------------------------------------------- transfer learning
def load_init_model(path) -> Potential:
    """The model file ``init_from`` names (:func:`mlpjax.load`), checked to be fine-tunable: it has
    parameters and is not a closed-form fit (GAP), which has nothing to start gradient training from."""
    from mlpjax.potential import load

    source = load(path)
    if _models.fit_fn(source.model) is not None:
        raise ConfigError(f"init_from {os.fspath(path)} is a {source.model} model, fitted in closed form: there are "
                          f"no network parameters to fine-tune; fit a new {source.model} on the new data instead",
                          option="init_from")
    return source


def _plain(model_config) -> dict:
    """A model config dataclass as YAML/JSON-like values (lists, not tuples), as it is saved."""
    return json.loads(json.dumps(dataclasses.asdict(model_config)))


def resolve_init_from(config: TrainConfig, *, source: Potential | None = None,
                      given: Mapping[str, str] | None = None) -> TrainConfig:
    """``config`` with the architecture of its ``init_from`` model file: ``model``, ``model_config``
    (complete) and ``cutoff`` taken from the file (unchanged when ``init_from`` is None).

    A field that was set to a different value is a one-line ConfigError naming both values.
    ``given`` maps the fields the user set to who set them, for the message (``{"cutoff":
    "--cutoff"}``); None means every field that differs from TrainConfig's default (and a
    non-empty ``model_config``) was set, by "the config". Equal values are fine; only the
    ``model_config`` keys that were given are compared (after the model's own normalisation).
    """
    if config.init_from is None:
        return config
    path = os.fspath(config.init_from)
    source = load_init_model(path) if source is None else source
    if given is None:
        default = TrainConfig()
        given = {k: "the config" for k in ("model", "cutoff") if getattr(config, k) != getattr(default, k)}
        if config.model_config:
            given["model_config"] = "the config"
    keep = "fine-tuning keeps the model file's architecture"

    def fix(field: str, value) -> str:  # what to do instead
        if given[field].startswith("--preset"):  # a preset is an architecture: its training settings alone are flags
            return "set the training settings with --config or flags instead of --preset"
        return f"leave {field} out or set it to {value}"

    if "model" in given and config.model != source.model:
        raise ConfigError(f"{given['model']} sets model {config.model!r} but the init_from model {path} is a "
                          f"{source.model!r} model; {keep}: {fix('model', repr(source.model))}", option="model")
    if "cutoff" in given and float(config.cutoff) != float(source.cutoff):
        raise ConfigError(f"{given['cutoff']} sets cutoff {config.cutoff:g} Å but the init_from model {path} has "
                          f"cutoff {source.cutoff:g} Å; {keep}: {fix('cutoff', format(source.cutoff, 'g'))}",
                          option="cutoff")
    plain = _plain(source.model_config)
    if "model_config" in given and config.model_config:
        try:
            mine = _models.make_config(source.model, {**plain, **config.model_config})
        except (ValueError, TypeError) as err:
            raise ConfigError(f"{given['model_config']} sets model_config {config.model_config} that does not fit the "
                              f"{source.model} model of init_from {path}: {err}", option="model_config") from err
        for key in config.model_config:
            ours, theirs = getattr(mine, key), getattr(source.model_config, key)
            if ours != theirs:
                raise ConfigError(f"{given['model_config']} sets model_config.{key} = {config.model_config[key]!r} but "
                                  f"the init_from model {path} has {key} = {plain[key]!r}; {keep}: "
                                  f"{fix('model_config', 'the file')}",
                                  option=f"model_config.{key}")
    return config.replace(model=source.model, model_config=plain, cutoff=float(source.cutoff))


def check_representable(source: Potential, path, *config_sets) -> None:
    """DataError unless every element of the configuration sets is in ``source``'s species table
    (fine-tuning keeps the table: a new element has no embedding, no E0, no per-element network)."""
    from ase.data import chemical_symbols

    known = set(int(z) for z in source.species)
    bad_sets = [list(cs) for cs in config_sets if cs]
    missing = sorted({z for cs in bad_sets for z in _data.species_in(cs)} - known)
    if not missing:
        return
    files = sorted({c.source for cs in bad_sets for c in cs if c.source and set(np.unique(c.numbers)) - known})
    names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in missing)
    raise _data.DataError(
        f"the data contain {names}, which the init_from model {os.fspath(path)} cannot represent (its species are "
        f"{', '.join(chemical_symbols[z] for z in source.species)}); fine-tuning keeps the model's species table: "
        "train a new model (without init_from) for these elements", source=", ".join(files) or None)


def refit_reference_energies(potential: Potential, configs: Sequence[_data.Configuration]) -> Potential:
    """``potential`` with its per-element reference energies E0_Z re-fitted on ``configs``, its
    network, ``energy_scale`` and ``energy_shift`` unchanged (the network was trained with them).

    The residual r_c = E_c − Ê_c (reference minus the potential's energy) is fitted by least
    squares as Σ_Z n_cZ ΔE0_Z over the compositions n_cZ of the labelled configurations, and
    E0_Z + ΔE0_Z replaces E0_Z: that is the least-squares fit of E_c − (Ê_c − Σ_Z n_cZ E0_Z), the
    reference minus the model's energy without E0. Elements absent from ``configs`` keep their
    E0; when the compositions do not separate the elements (one fixed stoichiometry), ``lstsq``'s
    minimum-norm ΔE0 is the smallest change that fits. No energy labels: E0 unchanged (a warning).
    """
    from mlpjax.validate.metrics import predict_dataset

    labelled = [c for c in configs if c.energy is not None]
    if not labelled:
        warnings.warn("refit_reference_energies: no configuration has an energy label; E0 unchanged", stacklevel=2)
        return potential
    species = tuple(int(z) for z in potential.species)
    col = {z: k for k, z in enumerate(species)}
    counts = np.zeros((len(labelled), len(species)))  # [n_configs, n_species] atoms
    for i, c in enumerate(labelled):
        for z, n in zip(*np.unique(c.numbers, return_counts=True)):
            counts[i, col[int(z)]] = n
    predicted = predict_dataset(potential, labelled)["energy"]  # [n_configs] eV
    residual = np.array([c.energy for c in labelled], np.float64) - predicted  # [n_configs] eV
    present = counts.any(axis=0)
    delta = np.zeros(len(species))  # eV per atom
    delta[present] = np.linalg.lstsq(counts[:, present], residual, rcond=None)[0]
    refs = potential.reference_energies
    if refs and isinstance(refs[0], (tuple, list)):  # an ensemble ([M][S]): every member shifts, so the mean does
        return potential.replace(reference_energies=tuple(tuple(float(e + d) for e, d in zip(row, delta)) for row in refs))
    return potential.replace(reference_energies=tuple(float(e + d) for e, d in zip(refs, delta)))


def _provenance(config: TrainConfig, source: Potential, before, after) -> dict:
    """``metadata["init_from"]`` of a fine-tuned model: the source file (path, checksum), a summary
    of the source's own training, what was frozen and the reference energies before/after."""
    path = os.fspath(config.init_from)
    md = source.metadata or {}
    metrics = md.get("test_metrics") or md.get("valid_metrics") or {}
    return {
        "path": path,
        "abspath": os.path.abspath(path),
        "sha256": file_sha256(path),
        "source": {
            "model": source.model,
            "species": [int(z) for z in source.species],
            "n_train": md.get("n_train"),
            "data_files": (md.get("data_files") or {}).get("train"),
            "epochs_completed": md.get("epochs_completed"),
            "metrics": {k: metrics.get(k) for k in ("energy_mae_meV_per_atom", "force_mae_meV_per_A") if k in metrics},
            "metrics_set": "test" if md.get("test_metrics") else "valid" if md.get("valid_metrics") else None,
            "init_from": md.get("init_from"),  # a chain of fine-tunings stays traceable
        },
        "freeze": list(config.freeze),
        "refit_reference_energies": bool(config.refit_reference_energies),
        "reference_energies_before": np.asarray(before, np.float64).tolist(),  # [S] ([M, S] for an ensemble)
        "reference_energies_after": np.asarray(after, np.float64).tolist(),
    }


def _fine_tuning_start(config: TrainConfig, train_configs, source: Potential | None) -> Potential:
    """:func:`prepare_potential` for ``config.init_from``: the source potential, parameters cast to the
    run's dtype, E0 re-fitted on ``train_configs`` when ``config.refit_reference_energies``."""
    path = os.fspath(config.init_from)
    source = load_init_model(path) if source is None else source
    check_representable(source, path, train_configs)
    dtype = resolve_dtype(config)
    pot = source.replace(params=cast_floats(source.params, dtype), metadata={})
    if config.refit_reference_energies:
        pot = refit_reference_energies(pot, train_configs)
    return pot.replace(metadata={"init_from": _provenance(config, source, source.reference_energies, pot.reference_energies)})


def split_data(config: TrainConfig, train_configs, valid_configs, test_configs):
    """(train, valid, test, split info): validation/test sets carved out of ``train_configs``
    by ``valid_fraction``/``test_fraction``/``split_seed`` (:func:`mlpjax.data.split`) where
    they are not given. The info (indices into ``train_configs``) goes into the model file. A
    :class:`mlpjax.data.PackedDataset` is split into views of its file, by the same indices."""
    n = len(train_configs)
    info = {"seed": int(config.split_seed), "n": n, "train": list(range(n)), "valid": None, "test": None,
            "valid_fraction": None, "test_fraction": None}
    want_valid = valid_configs is None and config.valid_fraction > 0
    want_test = test_configs is None and config.test_fraction > 0
    if not (want_valid or want_test):
        return train_configs, valid_configs, test_configs, info
    fv = config.valid_fraction if want_valid else 0.0
    ft = config.test_fraction if want_test else 0.0
    idx_train, idx_valid, idx_test = _data.split(n, (1.0 - fv - ft, fv, ft), seed=config.split_seed)
    if len(idx_train) == 0:
        raise ValueError(f"{n} configurations leave none for training after the valid/test split; add data")
    info.update(train=[int(i) for i in idx_train], valid_fraction=fv, test_fraction=ft)
    def take(idx):  # a packed data set gives views of its file (no data read), a list a list
        if hasattr(train_configs, "subset"):
            return train_configs.subset(idx) if len(idx) else None
        return [train_configs[i] for i in idx] or None

    new_train = take(idx_train)
    if want_valid:
        valid_configs = take(idx_valid)
        info["valid"] = [int(i) for i in idx_valid]
    if want_test:
        test_configs = take(idx_test)
        info["test"] = [int(i) for i in idx_test]
    return new_train, valid_configs, test_configs, info


def data_sources(configs) -> list:
    """Sorted file names the configurations were read from."""
    return sorted({c.source for c in configs if c.source})


def check_data_units(configs: Sequence[_data.Configuration], config: TrainConfig, *, strict: bool = False) -> list:
    """Warn (or with ``strict`` raise :class:`mlpjax.data.DataError`) when the data's ranges do not look
    like eV and eV/Å after reading them with ``config.units`` (:func:`mlpjax.data.check_units`)."""
    configs = list(configs)
    problems = _data.check_units(configs) if configs else []
    if not problems:
        return problems
    sources = data_sources(configs)
    source = ", ".join(sources) if sources else None
    text = "; ".join(p.message for p in problems)
    hint = f"the data were read with units={config.units!r}; give the units the file is written in"
    if strict:
        raise _data.DataError(f"unit check failed: {text} ({hint})", source=source)
    warnings.warn(f"{'file ' + source + ': ' if source else ''}{text} ({hint}; strict=True / --strict makes this an error)",
                  stacklevel=3)
    return problems
