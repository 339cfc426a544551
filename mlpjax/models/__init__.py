"""Model registry: name → (config dataclass, pure ``init``/``apply`` pair).

Every model obeys one contract, so training, MD, the ASE calculator and active
learning never special-case a model:

    apply(params, vectors, species, senders, receivers, edge_mask) -> [n_nodes]

with ``vectors`` [n_edges, 3] Å (R[sender] - R[receiver] + shift), ``species``
[n_nodes] int species indices, and the output a per-atom quantity that
:class:`mlpjax.potential.Potential` turns into eV (scale, shift, E0). Forces and
stress are never computed by a model: they come from the single ``jax.grad`` in
:func:`mlpjax.potential.compute_properties`.

The classical pair potentials "morse", "lj" and "morse_spline" (:mod:`mlpjax.models.pair`) obey the same
contract with outputs in eV and physically named per-species-pair parameters;
:func:`mlpjax.models.pair.pair_potential` builds one as a physical potential (energy scale 1,
shift 0, reference energies 0), whose energy is the pair sum.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, NamedTuple

import jax


class ModelFns(NamedTuple):
    init: Callable[..., Any]  # (key, vectors, species, senders, receivers, edge_mask) -> params pytree
    apply: Callable[..., jax.Array]  # (params, vectors, species, senders, receivers, edge_mask) -> [n_nodes]


# name -> (module path, Flax module class, config dataclass). Imported lazily so that a
# model's dependencies (e3nn-jax for nequip/mace) load only when it is used.
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "schnet": ("mlpjax.models.schnet", "SchNet", "SchNetConfig"),
    "mace": ("mlpjax.models.mace", "MACE", "MACEConfig"),
    "dimenet": ("mlpjax.models.dimenet", "DimeNet", "DimeNetConfig"),
    "nequip": ("mlpjax.models.nequip", "NequIP", "NequIPConfig"),
    "painn": ("mlpjax.models.painn", "PaiNN", "PaiNNConfig"),
    "bpnn": ("mlpjax.models.bpnn", "BPNN", "BPNNConfig"),
    "ani": ("mlpjax.models.ani", "ANI", "ANIConfig"),
    "gap": ("mlpjax.models.gap", "GAP", "GAPConfig"),
    "morse": ("mlpjax.models.pair", "Morse", "MorseConfig"),
    "lj": ("mlpjax.models.pair", "LennardJones", "LJConfig"),
    "morse_spline": ("mlpjax.models.pair", "MorseSpline", "MorseSplineConfig"),
}


def _entry(name: str):
    try:
        module_path, module_cls, config_cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available())}") from None
    mod = importlib.import_module(module_path)
    return getattr(mod, module_cls), getattr(mod, config_cls)


def available() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def config_class(name: str) -> type:
    return _entry(name)[1]


def make_config(name: str, values: dict | None = None, *, from_file: bool = False):
    """Build the model's frozen config dataclass from a dict, rejecting unknown keys.

    ``from_file``: the dict comes from a saved model file; fields it lacks take the values in
    the config class's ``FILE_DEFAULTS`` (a field added later whose default changed the
    architecture: an old file keeps the architecture it was trained with), and the class's
    ``file_values_here(values)``, where it has one, adapts choices that do not change the model
    but may not exist on this machine (MACE's kernel backend)."""
    cls = config_class(name)
    values = dict(values or {})
    if from_file:
        values = {**getattr(cls, "FILE_DEFAULTS", {}), **values}
        portable = getattr(cls, "file_values_here", None)  # run-time choices the writing machine made
        if portable is not None:
            values = portable(values)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {name} option(s) {sorted(unknown)}; known: {sorted(known)}")
    return cls(**values)


def build_module(name: str, config, *, num_species: int, cutoff: float, avg_num_neighbors: float = 1.0):
    """The model's Flax module (for methods beyond the energy contract, e.g. ``features``)."""
    return _entry(name)[0](config=config, num_species=num_species, cutoff=cutoff, avg_num_neighbors=avg_num_neighbors)


def data_init(name: str):
    """The model's data-dependent initialisation hook ``(potential, params, graphs) -> params``
    (e.g. descriptor standardisation for BPNN/ANI), or None when it has none."""
    module_path = _REGISTRY[name][0] if name in _REGISTRY else None
    if module_path is None:
        _entry(name)  # raises the unknown-model error
    return getattr(importlib.import_module(module_path), "data_init", None)


def fit_fn(name: str):
    """The model's closed-form fitting function (``fit(config, train, valid, *, output_dir,
    test_configs, progress) -> TrainResult``, e.g. GAP's linear solve) or None for models
    trained by gradient descent."""
    if name not in _REGISTRY:
        _entry(name)
    return getattr(importlib.import_module(_REGISTRY[name][0]), "fit", None)


def build(name: str, config, *, num_species: int, cutoff: float, avg_num_neighbors: float = 1.0) -> ModelFns:
    """The model's pure ``init``/``apply`` pair; hyperparameters live in the closure."""
    module = build_module(name, config, num_species=num_species, cutoff=cutoff, avg_num_neighbors=avg_num_neighbors)

    def init(key, vectors, species, senders, receivers, edge_mask):
        return module.init(key, vectors, species, senders, receivers, edge_mask)

    def apply(params, vectors, species, senders, receivers, edge_mask):
        return module.apply(params, vectors, species, senders, receivers, edge_mask)

    return ModelFns(init=init, apply=apply)
