"""The potential: one energy contract shared by training, MD, the ASE calculator and
active learning.

``Potential`` = model architecture (name + frozen config) + parameters (any pytree)
+ cutoff + species table + per-element reference energies + energy scale/shift +
metadata (units, data split, training config). It is a pure function of
(parameters, positions, species, cell, neighbour list) with no host callbacks.

**Physics from autodiff in exactly one place.** :func:`compute_properties` takes
one ``jax.grad`` of the summed energy with respect to positions R and a per-structure
strain ε, applied to every edge vector as r → r (I + ε_sym) with ε_sym = (ε + εᵀ)/2
(a homogeneous deformation of positions *and* cell, since edge vectors are linear in
both). Then

    forces  F = -∂E/∂R                       [n_nodes, 3] eV/Å
    stress  σ = (1/V) ∂E/∂ε |_{ε=0}          [n_graphs, 3, 3] eV/Å^3

which is ASE's sign convention (positive = tensile, the cell wants to shrink;
pressure P = -tr σ / 3). Stress is zero for non-periodic structures. Structures in
a batch are independent (each has its own strain and energy), and the gradient of
a sum of independent terms gives each structure its own forces: no leakage.

Model file ``*.mlpjax``: a checksummed msgpack container (see :mod:`mlpjax.files`)
holding a JSON header (architecture, cutoff, species, reference energies, units,
split, ...) and the parameter pytree.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any, Callable, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mlpjax import models as _models
from mlpjax.files import read_checked, write_checked
from mlpjax.cache import compiled

MODEL_MAGIC = b"MLPJAX-POTENTIAL-1\n"


class Predictions(NamedTuple):
    energy: jax.Array  # [n_graphs] eV
    forces: jax.Array  # [n_nodes, 3] eV/Å
    stress: jax.Array  # [n_graphs, 3, 3] eV/Å^3 (zeros where not periodic)
    atomic_energies: jax.Array  # [n_nodes] eV (zeros on padding)


def compute_properties(
    atomic_energy_fn: Callable[[jax.Array], jax.Array],
    edge_vectors_fn: Callable[[jax.Array], jax.Array],
    positions: jax.Array,
    *,
    node_graph: jax.Array,
    node_mask: jax.Array,
    edge_graph: jax.Array,
    volume: jax.Array,
    periodic: jax.Array,
    n_graphs: int,
    compute_stress: bool = True,
) -> Predictions:
    """Energies, forces and stress from a per-atom energy function — the one ``jax.grad``.

    Args:
      atomic_energy_fn: edge vectors [n_edges, 3] Å → per-atom energies [n_nodes] eV.
      edge_vectors_fn: positions [n_nodes, 3] Å → edge vectors [n_edges, 3] Å.
      positions: [n_nodes, 3] Å.
      node_graph: [n_nodes] int, structure index of each node.
      node_mask: [n_nodes] bool.
      edge_graph: [n_edges] int, structure index of each edge.
      volume: [n_graphs] Å^3 (any positive number where not periodic).
      periodic: [n_graphs] bool.
      n_graphs: static number of structures.
    """
    dtype = positions.dtype
    strain = jnp.zeros((n_graphs, 3, 3), dtype)

    def total_energy(pos, eps):
        eps_sym = 0.5 * (eps + jnp.swapaxes(eps, 1, 2))
        vectors = edge_vectors_fn(pos)
        vectors = vectors + jnp.einsum("ei,eij->ej", vectors, eps_sym[edge_graph])
        e_atom = jnp.where(node_mask, atomic_energy_fn(vectors), 0.0)
        e_graph = jax.ops.segment_sum(e_atom, node_graph, num_segments=n_graphs)
        return jnp.sum(e_graph), (e_graph, e_atom)

    if compute_stress:
        (_, (energy, e_atom)), (d_pos, d_eps) = jax.value_and_grad(total_energy, argnums=(0, 1), has_aux=True)(
            positions, strain
        )
        safe_volume = jnp.where(periodic, volume, 1.0)
        stress = jnp.where(periodic[:, None, None], d_eps / safe_volume[:, None, None], 0.0)
    else:
        (_, (energy, e_atom)), d_pos = jax.value_and_grad(total_energy, argnums=0, has_aux=True)(positions, strain)
        stress = jnp.zeros((n_graphs, 3, 3), dtype)
    forces = jnp.where(node_mask[:, None], -d_pos, 0.0)
    return Predictions(energy=energy, forces=forces, stress=stress, atomic_energies=e_atom)


class PotentialParams(NamedTuple):
    """Everything numeric a potential's energy depends on: the traced argument of compiled code.

    The network parameters and the per-element/normalisation constants fitted from the training
    data travel together, so a retrained model, an ensemble member (a leading member axis on
    every leaf) or a gradient with respect to any of them reuses the same compiled function."""

    params: Any  # network parameter pytree (whatever the model's init returns)
    reference_energies: jax.Array  # [n_species] eV per atom (E0)
    energy_shift: jax.Array  # [] eV/atom, added to every atom after scaling
    energy_scale: jax.Array  # [] eV, multiplies the network's per-atom output


@dataclasses.dataclass(frozen=True)
class PotentialDef:
    """The architecture of a potential: everything compiled code depends on statically.

    Hashable and compared by value, so compile caches (:mod:`mlpjax.cache`) key on it: two
    potentials with the same architecture share compiled code whatever their parameters. The
    numbers fitted from data are not here but in :class:`PotentialParams`."""

    model: str  # registry name, e.g. "schnet"
    model_config: Any  # the model's frozen config dataclass
    cutoff: float  # Å
    species: tuple[int, ...]  # atomic numbers; position = species index
    avg_num_neighbors: float = 1.0  # message normalisation, fixed at training time (static in the model)

    # dimensions of ``PotentialParams.reference_energies`` for one potential ([S]; an ensemble's are [M, S]):
    # one more means a leading run axis (one parameter set per MD run)
    reference_energies_ndim: ClassVar[int] = 1

    @functools.cached_property
    def model_fns(self) -> _models.ModelFns:
        return _models.build(
            self.model,
            self.model_config,
            num_species=len(self.species),
            cutoff=self.cutoff,
            avg_num_neighbors=self.avg_num_neighbors,
        )

    def init_params(self, key: jax.Array) -> Any:
        """Fresh network parameters (jitted once per architecture: eager init of big models is slow)."""
        return _init_fn(self)(key)

    def atomic_energies(self, variables: PotentialParams, vectors, species, senders, receivers, edge_mask) -> jax.Array:
        """Per-atom energies [n_nodes] eV = E0[species] + shift + scale · (model output
        − the model's output for an isolated atom of that species).

        Subtracting the isolated-atom output (one masked edge, no neighbours) makes an
        isolated atom's energy exactly E0 + shift for every architecture, so separated
        fragments dissociate to the reference energies whatever the network's biases.
        """
        params = variables.params
        out = self.model_fns.apply(params, vectors, species, senders, receivers, edge_mask)
        n_species = len(self.species)
        zero = jnp.zeros(1, jnp.int32)
        isolated = self.model_fns.apply(
            params, jnp.zeros((1, 3), vectors.dtype), jnp.arange(n_species, dtype=jnp.int32), zero, zero, jnp.zeros(1, bool)
        )
        out = out - isolated.astype(out.dtype)[species]
        e0 = jnp.asarray(variables.reference_energies).astype(out.dtype)[species]
        shift = jnp.asarray(variables.energy_shift).astype(out.dtype)
        scale = jnp.asarray(variables.energy_scale).astype(out.dtype)
        return e0 + shift + scale * out

    def predict(self, variables: PotentialParams, batch, *, compute_stress: bool = True) -> Predictions:
        """Pure, jit-able prediction for a padded :class:`mlpjax.graph.GraphBatch`."""
        n_graphs = batch.graph_mask.shape[0]
        edge_graph = batch.node_graph[batch.receivers]

        def edge_vectors(pos):
            shift_vectors = jnp.einsum("ei,eij->ej", batch.shifts.astype(pos.dtype), batch.cell.astype(pos.dtype)[edge_graph])
            return pos[batch.senders] - pos[batch.receivers] + shift_vectors

        def atomic_energy(vectors):
            return self.atomic_energies(variables, vectors, batch.species, batch.senders, batch.receivers, batch.edge_mask)

        return compute_properties(
            atomic_energy,
            edge_vectors,
            batch.positions,
            node_graph=batch.node_graph,
            node_mask=batch.node_mask,
            edge_graph=edge_graph,
            volume=batch.volume,
            periodic=batch.periodic,
            n_graphs=n_graphs,
            compute_stress=compute_stress,
        )

    # ---------------------------------------------------------------- jax-md
    def species_indices(self, numbers) -> np.ndarray:
        from mlpjax.graph import species_indices

        return species_indices(np.asarray(numbers), self.species)

    def jaxmd_properties(self, variables: PotentialParams, displacement_fn, species, R, neighbor, *,
                         pair_fraction: float = 1.0, **kwargs) -> Predictions:
        """Energy and forces of one system from a jax-md Sparse neighbour list (no stress).

        ``pair_fraction`` < 1: the model runs on the listed pairs inside the cutoff only, compacted
        to a static ``compact_capacity(list capacity, pair_fraction)`` (a Verlet list holds pairs
        out to cutoff + skin: 1.33× those inside at a 0.5 Å skin and 5 Å cutoff, all of which the
        model would otherwise evaluate for nothing). As with jax-md's own capacity, pairs that do
        not fit are dropped and the caller must check: ``MDSystem.update_neighbors`` counts them
        at every step and marks the list overflowed (jax-md's flag), so the engine discards the
        chunk and reallocates; ``MDSystem.allocate`` makes room at the positions it is given.
        Only lists maintained that way may be used with ``pair_fraction`` < 1."""
        n = R.shape[0]
        receivers, senders = neighbor.idx[0], neighbor.idx[1]
        d = jax.vmap(functools.partial(displacement_fn, **kwargs))
        if pair_fraction < 1.0:
            receivers, senders, _ = in_cutoff_pairs(
                d, R, receivers, senders, self.cutoff, compact_capacity(receivers.shape[0], pair_fraction))
        edge_mask = receivers < n

        def edge_vectors(pos):
            return d(pos[senders], pos[receivers])

        def atomic_energy(vectors):
            return self.atomic_energies(variables, vectors, species, senders, receivers, edge_mask)

        return compute_properties(
            atomic_energy,
            edge_vectors,
            R,
            node_graph=jnp.zeros(n, jnp.int32),
            node_mask=jnp.ones(n, bool),
            edge_graph=jnp.zeros(receivers.shape[0], jnp.int32),
            volume=jnp.ones(1, R.dtype),
            periodic=jnp.zeros(1, bool),
            n_graphs=1,
            compute_stress=False,
        )

    @staticmethod
    def _check_neighbor(neighbor):
        from jax_md import partition

        if neighbor is None:
            raise ValueError("the mlpjax energy function needs a jax-md neighbor list: energy_fn(R, neighbor=nbrs)")
        if not partition.is_sparse(neighbor.format) or neighbor.format == partition.OrderedSparse:
            raise ValueError("use a Sparse jax-md neighbor list (Potential.neighbor_fn builds one)")

    def _static_species(self, numbers):
        """Species indices [n_atoms] for ``numbers``; None means "every atom is the only species"."""
        if numbers is not None:  # numpy, not jax: safe to build inside a trace and keep
            return np.asarray(self.species_indices(numbers), np.int32)
        if len(self.species) != 1:
            from ase.data import chemical_symbols

            names = ", ".join(chemical_symbols[z] for z in self.species)
            raise ValueError(
                f"this potential knows several elements ({names}): pass the system's atomic numbers, "
                "energy_fn(displacement_fn, numbers), or species indices at call time, energy_fn(R, neighbor, species=...)"
            )
        return None

    @staticmethod
    def _call_species(static, R, kwargs):
        species = kwargs.pop("species", None)  # [n_atoms] int species indices (jax-md convention)
        if species is not None:
            return jnp.asarray(species, jnp.int32)
        if static is not None:
            return static
        return jnp.zeros(R.shape[0], jnp.int32)

    def energy_fn_of_params(self, displacement_fn, numbers=None, *, pair_fraction: float = 1.0) -> Callable:
        """``f(variables, R, neighbor, **kwargs) -> E`` (eV): differentiable w.r.t. the
        :class:`PotentialParams` too (ensembles, differentiable simulation). ``pair_fraction``:
        see :meth:`jaxmd_properties` (the MD engine's; a plain jax-md list needs the default 1)."""
        static = self._static_species(numbers)

        def energy(variables, R, neighbor=None, **kwargs):
            self._check_neighbor(neighbor)
            species = self._call_species(static, R, kwargs)
            return self.jaxmd_properties(variables, displacement_fn, species, R, neighbor, pair_fraction=pair_fraction,
                                         **kwargs).energy[0]

        return energy

    def force_fn_of_params(self, displacement_fn, numbers=None, *, pair_fraction: float = 1.0) -> Callable:
        """``f(variables, R, neighbor, **kwargs) -> F`` [n_atoms, 3] eV/Å, the same single
        gradient as :meth:`predict`."""
        static = self._static_species(numbers)

        def force(variables, R, neighbor=None, **kwargs):
            self._check_neighbor(neighbor)
            species = self._call_species(static, R, kwargs)
            return self.jaxmd_properties(variables, displacement_fn, species, R, neighbor, pair_fraction=pair_fraction,
                                         **kwargs).forces

        return force

    def neighbor_fn(self, displacement_fn, box, *, skin: float = 0.5, capacity_multiplier: float = 1.25, fractional_coordinates: bool = False, disable_cell_list: bool = False):
        """A jax-md Sparse neighbor list with this potential's cutoff and a Verlet skin (Å).

        jax-md includes pairs within ``cutoff + skin`` and rebuilds when an atom moved
        more than ``skin / 2``; the model masks pairs beyond the cutoff through its
        envelope, so the skin changes nothing physical.
        """
        from jax_md import partition

        return partition.neighbor_list(
            displacement_fn,
            box,
            self.cutoff,
            dr_threshold=skin,
            capacity_multiplier=capacity_multiplier,
            format=partition.Sparse,
            fractional_coordinates=fractional_coordinates,
            disable_cell_list=disable_cell_list,
        )


def compact_capacity(capacity: int, pair_fraction: float) -> int:
    """The static number of slots for the in-cutoff pairs of a jax-md list of ``capacity`` pairs."""
    return max(1, min(int(capacity), int(math.ceil(capacity * pair_fraction))))


def in_cutoff_pairs(displacement, R, receivers, senders, cutoff: float, capacity: int):
    """The listed pairs closer than ``cutoff``, in list order, padded to ``capacity`` with
    R.shape[0] (jax-md's "no pair"): ``(receivers [capacity], senders [capacity], overflow)``,
    overflow a bool scalar, True when more pairs are inside than fit (the extra ones dropped).

    ``displacement``: the vmapped displacement (senders, receivers positions -> vectors). The
    selection is integer bookkeeping: no derivative flows through it (positions stop-gradient)."""
    n = R.shape[0]
    R0 = jax.lax.stop_gradient(R)
    vec = displacement(R0[jnp.minimum(senders, n - 1)], R0[jnp.minimum(receivers, n - 1)])
    keep = (receivers < n) & (jnp.sum(vec * vec, axis=-1) < cutoff * cutoff)
    (slots,) = jnp.nonzero(keep, size=capacity, fill_value=receivers.shape[0])
    pad = jnp.full((1,), n, receivers.dtype)
    return (jnp.concatenate([receivers, pad])[slots], jnp.concatenate([senders, pad])[slots],
            jnp.sum(keep) > capacity)


@compiled(maxsize=32)
def _init_fn(definition: PotentialDef) -> Callable:
    """``jit(init)`` on a dummy two-atom graph: ``key -> params``, compiled once per architecture."""
    vectors = jnp.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    species = jnp.zeros(2, jnp.int32)
    senders = jnp.array([1, 0], jnp.int32)
    receivers = jnp.array([0, 1], jnp.int32)
    mask = jnp.ones(2, bool)
    init = definition.model_fns.init
    return jax.jit(lambda key: init(key, vectors, species, senders, receivers, mask))


@dataclasses.dataclass(frozen=True, eq=False)
class Potential:
    """A trained (or freshly initialised) interatomic potential. See the module docstring.

    = :attr:`definition` (the architecture, hashable: what compiled code depends on) +
    :attr:`variables` (network parameters and the fitted E0/shift/scale: what compiled code
    takes as an argument) + metadata."""

    model: str  # registry name, e.g. "schnet"
    model_config: Any  # the model's frozen config dataclass
    cutoff: float  # Å
    species: tuple[int, ...]  # atomic numbers; position = species index
    reference_energies: tuple[float, ...]  # eV per atom of each species (E0)
    energy_shift: float = 0.0  # eV/atom added to every atom after scaling
    energy_scale: float = 1.0  # eV, multiplies the network's per-atom output
    avg_num_neighbors: float = 1.0  # message normalisation, fixed at training time
    params: Any = None  # parameter pytree (any structure the model's init returns)
    metadata: dict = dataclasses.field(default_factory=dict)  # units, split, training config, ...

    # ---------------------------------------------------------------- definition and variables
    @functools.cached_property
    def definition(self) -> PotentialDef:
        return PotentialDef(
            model=self.model,
            model_config=self.model_config,
            cutoff=float(self.cutoff),
            species=tuple(int(z) for z in self.species),
            avg_num_neighbors=float(self.avg_num_neighbors),
        )

    def variables_with(self, params) -> PotentialParams:
        """:class:`PotentialParams` of this potential's normalisation around ``params``."""
        return PotentialParams(
            params=params,
            reference_energies=jnp.asarray(self.reference_energies, dtype=_float_dtype()),
            energy_shift=jnp.asarray(self.energy_shift, dtype=_float_dtype()),
            energy_scale=jnp.asarray(self.energy_scale, dtype=_float_dtype()),
        )

    @property
    def variables(self) -> PotentialParams:
        """The traced argument of compiled code (MD engine, ensembles): params + E0/shift/scale."""
        if self.params is None:
            raise ValueError("the potential has no parameters (train it, load a model file or call init_params)")
        return self.variables_with(self.params)

    @property
    def model_fns(self) -> _models.ModelFns:
        return self.definition.model_fns

    @property
    def energy_scale_mean(self) -> float:
        """eV, the energy scale as one number (an ensemble's members' mean): the loss's σ."""
        return float(np.mean(self.energy_scale))

    def replace(self, **changes) -> "Potential":
        return dataclasses.replace(self, **changes)

    def init_params(self, key: jax.Array) -> Any:
        """Fresh parameters for this architecture (jitted once per architecture)."""
        return self.definition.init_params(key)

    def atomic_energies(self, params, vectors, species, senders, receivers, edge_mask) -> jax.Array:
        """Per-atom energies [n_nodes] eV with this potential's normalisation (see
        :meth:`PotentialDef.atomic_energies`)."""
        return self.definition.atomic_energies(self.variables_with(params), vectors, species, senders, receivers, edge_mask)

    # ---------------------------------------------------------------- batches
    def predict(self, params, batch, *, compute_stress: bool = True) -> Predictions:
        """Pure, jit-able prediction for a padded :class:`mlpjax.graph.GraphBatch`."""
        return self.definition.predict(self.variables_with(params), batch, compute_stress=compute_stress)

    # ---------------------------------------------------------------- jax-md
    def species_indices(self, numbers) -> np.ndarray:
        return self.definition.species_indices(numbers)

    def energy_fn(self, displacement_fn, numbers=None, *, params=None) -> Callable:
        """A jax-md energy function ``energy_fn(R, neighbor, **kwargs) -> E`` (eV).

        Args:
          displacement_fn: a jax-md displacement from ``space.free()`` / ``space.periodic(...)``
            / ``space.periodic_general(...)``; extra ``kwargs`` (e.g. ``box``) are passed to it.
          numbers: [n_atoms] atomic numbers of the simulated system (static for the run).
            May be omitted for a single-element potential, or replaced by a call-time
            ``species=`` array of species indices (``Potential.species_indices(numbers)``).
          params: network parameters to use; default ``self.params``. For ensembles or
            differentiable simulation use :meth:`energy_fn_of_params`, which takes them
            (as :class:`PotentialParams`) as an argument.
        """
        base = self.energy_fn_of_params(displacement_fn, numbers)
        v = self.variables_with(self.params if params is None else params)
        return lambda R, neighbor=None, **kwargs: base(v, R, neighbor=neighbor, **kwargs)

    def energy_fn_of_params(self, displacement_fn, numbers=None) -> Callable:
        """``f(variables, R, neighbor, **kwargs) -> E``, ``variables`` = :attr:`variables`
        (or any :class:`PotentialParams` of this architecture): differentiable w.r.t. them."""
        return self.definition.energy_fn_of_params(displacement_fn, numbers)

    def force_fn(self, displacement_fn, numbers=None, *, params=None) -> Callable:
        """jax-md force function ``force_fn(R, neighbor, **kwargs) -> F`` [n_atoms, 3] eV/Å
        from the same single gradient as :meth:`predict` (jax-md's integrators accept it)."""
        base = self.definition.force_fn_of_params(displacement_fn, numbers)
        v = self.variables_with(self.params if params is None else params)
        return lambda R, neighbor=None, **kwargs: base(v, R, neighbor=neighbor, **kwargs)

    def neighbor_fn(self, displacement_fn, box, **kwargs):
        """See :meth:`PotentialDef.neighbor_fn`."""
        return self.definition.neighbor_fn(displacement_fn, box, **kwargs)

    # ---------------------------------------------------------------- ASE
    def calculator(self, **kwargs):
        """An ASE calculator (energy, free_energy, forces, stress) for this potential."""
        from mlpjax.calculator import MLPJaxCalculator

        return MLPJaxCalculator(self, **kwargs)

    # ---------------------------------------------------------------- file
    def header(self) -> dict:
        return {
            "model": self.model,
            "model_config": dataclasses.asdict(self.model_config),
            "cutoff": float(self.cutoff),
            "species": [int(z) for z in self.species],
            "reference_energies": [float(e) for e in self.reference_energies],
            "energy_shift": float(self.energy_shift),
            "energy_scale": float(self.energy_scale),
            "avg_num_neighbors": float(self.avg_num_neighbors),
            "metadata": self.metadata,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the model file atomically (temporary file + rename), with a checksum."""
        if self.params is None:
            raise ValueError("this potential has no parameters to save")
        write_checked(path, MODEL_MAGIC, {"header": json.dumps(self.header(), default=_json_default), "params": self.params})

    @classmethod
    def from_header(cls, header: dict, params: Any = None) -> "Potential":
        if "ensemble" in header and cls is Potential:  # an ensemble's file (mlpjax.ensemble.Ensemble)
            from mlpjax.ensemble import Ensemble

            return Ensemble.from_header(header, params)
        model = header["model"]
        return cls(
            model=model,
            model_config=_models.make_config(model, header["model_config"], from_file=True),
            cutoff=float(header["cutoff"]),
            species=tuple(int(z) for z in header["species"]),
            reference_energies=tuple(float(e) for e in header["reference_energies"]),
            energy_shift=float(header["energy_shift"]),
            energy_scale=float(header["energy_scale"]),
            avg_num_neighbors=float(header["avg_num_neighbors"]),
            params=params,
            metadata=dict(header.get("metadata", {})),
        )


def parameter_paths(params) -> list[str]:
    """The "/"-joined path of every leaf of a parameter pytree, in tree order, e.g.
    ``params/embedding/embedding``, ``params/readout_0/kernel`` (what ``freeze`` patterns match;
    ``mlpjax train --init-from MODEL --list-params`` prints them with their shapes; shallow-ensemble heads
    are named by them)."""
    return [_path_str(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def _path_str(path) -> str:
    names = []
    for k in path:  # DictKey .key, GetAttrKey .name, SequenceKey .idx, FlattenedIndexKey .key
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                names.append(str(getattr(k, attr)))
                break
        else:
            names.append(str(k))
    return "/".join(names)


def cast_floats(tree, dtype):
    """``tree`` with every floating-point leaf as a ``dtype`` array, integer leaves untouched
    (parameters or PotentialParams to a training/MD precision; jax-md states, whose Nosé–Hoover
    chains jax-md builds in float32 whatever the positions' precision)."""
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x, tree)


def _float_dtype():
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def _json_default(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if dataclasses.is_dataclass(x):
        return dataclasses.asdict(x)
    raise TypeError(f"cannot store {type(x).__name__} in the model header")


def load(path: str | os.PathLike) -> Potential:
    """Load a ``*.mlpjax`` model file (raises :class:`mlpjax.files.CorruptFileError` if damaged); an
    ensemble's file gives an :class:`mlpjax.ensemble.Ensemble` (a Potential whose energy is the mean)."""
    payload = read_checked(path, MODEL_MAGIC, "model")
    header = json.loads(payload["header"])
    params = jax.tree_util.tree_map(jnp.asarray, payload["params"])
    return Potential.from_header(header, params)
