"""What a fit needs before its first step: the data split, a unit sanity check, the float
dtype, and a potential normalised on the training data (shared by gradient training and
closed-form fits such as GAP's, :mod:`mlpjax.models.gap`).

Normalisation (:func:`prepare_potential`, training data only): species present, reference
energies E0_Z by least squares (:func:`mlpjax.data.fit_reference_energies`),
``energy_shift`` = mean per-atom residual energy, ``energy_scale`` = RMS of the force
components (as MACE/NequIP), ``avg_num_neighbors`` = edges per atom.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import jax
import numpy as np

from mlpjax import data as _data
from mlpjax import models as _models
from mlpjax.config import TrainConfig
from mlpjax.graph import AtomGraph, to_graphs
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
) -> Potential:
    """A fresh :class:`Potential` normalised on ``train_configs`` (with initial parameters).

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


def split_data(config: TrainConfig, train_configs, valid_configs, test_configs):
    """(train, valid, test, split info): validation/test sets carved out of ``train_configs``
    by ``valid_fraction``/``test_fraction``/``split_seed`` (:func:`mlpjax.data.split`) where
    they are not given. The info (indices into ``train_configs``) goes into the model file."""
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
    new_train = [train_configs[i] for i in idx_train]
    if want_valid:
        valid_configs = [train_configs[i] for i in idx_valid]
        info["valid"] = [int(i) for i in idx_valid]
    if want_test:
        test_configs = [train_configs[i] for i in idx_test]
        info["test"] = [int(i) for i in idx_test]
    return new_train, valid_configs or None, test_configs or None, info


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
