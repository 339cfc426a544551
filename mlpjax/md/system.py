"""The simulated system: space, simulation coordinates, masses, neighbour lists, energy and forces.

**Space.** A non-periodic structure uses ``space.free()`` (all pairs are candidates: fine for
molecules). A periodic one uses ``space.periodic_general(box, fractional_coordinates=True)``:
positions are fractional, displacements Cartesian, and gradients with respect to fractional
positions are Cartesian forces (jax-md's custom JVP). jax-md's fractional cell list needs an
upper-triangular box, so the cell is rotated to ASE's standard form; energies are invariant and
every output is rotated back to the input orientation. A cell narrower than 2 (cutoff + skin)
uses the multi-image path (:func:`build_system`) or is an error; mixed periodicity is rejected.

**Parameters are data.** An :class:`MDSystem` holds the architecture
(:class:`~mlpjax.potential.PotentialDef`), never parameters: :meth:`MDSystem.energy` and
:meth:`MDSystem.force` take the :class:`~mlpjax.potential.PotentialParams` first. Two systems
are equal when compiled code cannot tell them apart (architecture, composition, masses, cell,
periodicity, precision, skin, head room, image supercell); the starting ``positions`` are state,
not identity. The engine cache keys on this equality.

**Neighbour lists** are jax-md Sparse lists. Under ``vmap`` (the engine maps over R ≥ 1 runs)
jax-md's "rebuild if an atom moved more than skin/2" ``cond`` would become a ``select`` that
rebuilds at every step; :meth:`MDSystem.update_neighbors` first asks whether any run needs it,
and each run still keeps its own list unless it moved, so each list is the one its run alone
would carry.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mlpjax.cache import compiled
from mlpjax.graph.cells import check_cell, perpendicular_widths, supercell, supercell_repeats  # noqa: F401 (re-exported)
from mlpjax.md.config import MDConfig
from mlpjax.potential import cast_floats

__all__ = [
    "MDSystem", "build_system", "as_atoms", "perpendicular_widths", "supercell_repeats", "supercell",
    "check_cell", "hashable_neighbor_list", "stack_neighbor_lists", "grow_neighbor_list", "needs_reallocation",
]


def as_atoms(structure):
    """ase.Atoms from an ase.Atoms, a :class:`mlpjax.data.Configuration` or a structure file path."""
    import ase

    from mlpjax.data import Configuration

    if isinstance(structure, ase.Atoms):
        return structure
    if isinstance(structure, Configuration):
        return structure.to_atoms()
    if isinstance(structure, (str, os.PathLike)):
        from mlpjax.data import read_structure

        return read_structure(structure).to_atoms()
    raise TypeError(f"expected ase.Atoms, mlpjax.data.Configuration or a path, got {type(structure).__name__}")


# ----------------------------------------------------------------------------- system
def _array_key(x) -> tuple:
    a = np.asarray(x)
    return (a.dtype.str, a.shape, a.tobytes())


@dataclasses.dataclass(frozen=True, eq=False)
class MDSystem:
    """Everything a simulation needs except parameters and state, in simulation coordinates
    (fractional when periodic). Built complete by :func:`build_system`; see the module docstring."""

    definition: Any  # mlpjax.potential.PotentialDef: the architecture
    numbers: np.ndarray  # [N] atomic numbers
    masses: jax.Array  # [N] amu
    positions: jax.Array  # [N, 3] starting simulation coordinates of the structure built from (not identity)
    periodic: bool
    cell: np.ndarray  # [3, 3] Å input cell (rows), zeros when not periodic
    pbc: np.ndarray  # [3] bool
    box: Any  # [3, 3] Å jax-md box (upper triangular, = standard-form cell transposed) or None
    rotation: np.ndarray  # [3, 3]: vectors x_input = x_sim @ rotation
    displacement_fn: Callable  # jax-md displacement of the cell's space
    shift_fn: Callable  # jax-md shift of the cell's space
    neighbor_fn: Any  # jax-md NeighborListFns (over the image supercell when repeats != (1, 1, 1))
    nbr_displacement_fn: Callable  # displacement of the neighbour-list space (the image supercell)
    dtype: Any  # jnp.float32 | jnp.float64
    skin: float  # Å, Verlet skin
    capacity_multiplier: float  # neighbour-list head room at allocation
    repeats: tuple = (1, 1, 1)  # multi-image: the neighbour list and energy run over this supercell of images
    image_shifts: Any = None  # [C, 3] integer image offsets (multi-image), else None
    # (cutoff / (cutoff + skin))³, or 1 (no compaction; see _pair_fraction): the model runs on
    # the in-cutoff pairs compacted to this fraction of the list's capacity
    # (see PotentialDef.jaxmd_properties); update_neighbors flags a list whose in-cutoff pairs
    # no longer fit as overflowed, so the engine reallocates (a bigger list, more slots)
    pair_fraction: float = 1.0

    # ---------------------------------------------------------------- identity
    @functools.cached_property
    def key(self) -> tuple:
        """What compiled code depends on (see the module docstring)."""
        return (self.definition, _array_key(self.numbers), _array_key(self.masses), _array_key(self.cell),
                _array_key(self.pbc), np.dtype(self.dtype).str, float(self.skin), float(self.capacity_multiplier),
                tuple(self.repeats), float(self.pair_fraction))

    def __eq__(self, other):
        return isinstance(other, MDSystem) and self.key == other.key

    def __hash__(self):
        return hash(self.key)

    # ---------------------------------------------------------------- sizes
    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def n_copies(self) -> int:
        return int(np.prod(self.repeats))

    @property
    def cutoff(self) -> float:
        return float(self.definition.cutoff)

    # ---------------------------------------------------------------- energy (parameters as data)
    def energy(self, variables, R, neighbor=None, **kwargs):
        """eV of the simulated cell at simulation coordinates R [N, 3] with ``variables``
        (:class:`~mlpjax.potential.PotentialParams`); kwargs (box, perturbation) go to jax-md's
        displacement. Multi-image: E_cell = E_supercell / C."""
        return self._energy_of(variables, self.expand(R), neighbor=neighbor, **self._super_kwargs(kwargs)) / self.n_copies

    def force(self, variables, R, neighbor=None, **kwargs):
        """eV/Å [N, 3], Cartesian (simulation frame); multi-image: the mean of the C copies' forces."""
        f = self._force_of(variables, self.expand(R), neighbor=neighbor, **self._super_kwargs(kwargs))
        return f.reshape(self.n_copies, R.shape[0], f.shape[-1]).mean(0) if self.image_shifts is not None else f

    def member_forces(self, variables, R, neighbor=None, **kwargs):
        """[M, N, 3] eV/Å, every ensemble member's forces (an :class:`mlpjax.ensemble.EnsembleDef` only);
        multi-image: the mean over the C copies, as :meth:`force`."""
        f = self._member_force_of(variables, self.expand(R), neighbor=neighbor, **self._super_kwargs(kwargs))
        if self.image_shifts is not None:
            f = f.reshape(f.shape[0], self.n_copies, R.shape[0], f.shape[-1]).mean(1)
        return f

    @property
    def has_members(self) -> bool:
        """The potential is an ensemble: records carry the members' force deviation."""
        return hasattr(self.definition, "member_force_fn_of_params")

    @functools.cached_property
    def _member_force_of(self):
        return self.definition.member_force_fn_of_params(self.nbr_displacement_fn, np.tile(self.numbers, self.n_copies),
                                         pair_fraction=self.pair_fraction)

    @functools.cached_property
    def _energy_of(self):
        return self.definition.energy_fn_of_params(self.nbr_displacement_fn, np.tile(self.numbers, self.n_copies),
                                         pair_fraction=self.pair_fraction)

    @functools.cached_property
    def _force_of(self):
        return self.definition.force_fn_of_params(self.nbr_displacement_fn, np.tile(self.numbers, self.n_copies),
                                         pair_fraction=self.pair_fraction)

    def _super_kwargs(self, kwargs):
        return {**kwargs, "box": self.super_box(kwargs["box"])} if kwargs.get("box") is not None else kwargs

    def energy_and_forces(self, variables, R=None):
        """Energy (eV) and forces (eV/Å, input orientation) at R (default: the starting
        coordinates) with a freshly allocated list (a check, not the MD path)."""
        R = self.positions if R is None else R
        nbrs = self.allocate(R)
        e, f = _energy_and_forces_jit(self)(cast_floats(variables, self.dtype), R, nbrs)
        return float(e), self.to_input_frame(f)

    # ---------------------------------------------------------------- coordinates
    def coordinates(self, atoms) -> jax.Array:
        """Simulation coordinates [N, 3] of ``atoms`` (same composition and cell): fractional in
        [0, 1) for periodic cells, Cartesian Å otherwise."""
        if not self.periodic:
            return jnp.asarray(np.asarray(atoms.positions, np.float64), self.dtype)
        frac = np.linalg.solve(self.cell.T, np.asarray(atoms.positions, np.float64).T).T % 1.0
        return jnp.asarray(np.where(frac >= 1.0, 0.0, frac), self.dtype)

    def expand(self, R):
        """Simulation coordinates of the cell → those of the image supercell (multi-image), else R.

        s_super = (s + n) / repeats for every image offset n. The derivative is defined as the
        tiling of the tangent (no 1/repeats): jax-md's periodic_general treats tangents of
        fractional coordinates as Cartesian, and a Cartesian displacement of an atom moves all
        its images by the same Cartesian amount."""
        if self.image_shifts is None:
            return R
        return _expand_images(R, jnp.asarray(self.image_shifts, R.dtype), jnp.asarray(self.repeats, R.dtype))

    def super_box(self, box):
        """The image supercell's box (jax-md convention: columns are lattice vectors)."""
        if self.image_shifts is None or box is None:
            return box
        return box * jnp.asarray(self.repeats, box.dtype)[None, :]

    def to_cartesian(self, R) -> np.ndarray:
        """Simulation coordinates → Cartesian positions in the input orientation (Å)."""
        R = np.asarray(R, np.float64)
        return R @ self.cell if self.periodic else R

    def to_input_frame(self, vectors) -> np.ndarray:
        return np.asarray(vectors, np.float64) @ self.rotation

    def from_input_frame(self, vectors) -> np.ndarray:
        return np.asarray(vectors, np.float64) @ self.rotation.T

    # ---------------------------------------------------------------- neighbour lists
    def allocate(self, R, extra_capacity: int = 0, box=None):
        """A new neighbour list at R [N, 3] (``extra_capacity`` more pairs per atom; ``box`` for NPT).
        With compaction (``pair_fraction`` < 1) the list is made big enough that its compacted
        slots hold ``capacity_multiplier`` × the pairs inside the cutoff at R."""
        kw = {} if box is None else {"box": self.super_box(box)}
        nbrs = hashable_neighbor_list(self.neighbor_fn.allocate(self.expand(R), extra_capacity=extra_capacity, **kw))
        if self.pair_fraction < 1.0:
            from mlpjax.potential import compact_capacity

            need = int(math.ceil(self.capacity_multiplier * self._pairs_inside(nbrs, R, box)))
            if compact_capacity(nbrs.max_occupancy, self.pair_fraction) < need:
                n = self.n_atoms * self.n_copies
                grow = int(math.ceil((need / self.pair_fraction + 1 - nbrs.max_occupancy) / n))
                nbrs = hashable_neighbor_list(self.neighbor_fn.allocate(
                    self.expand(R), extra_capacity=extra_capacity + grow, **kw))
        return nbrs

    def _pairs_inside(self, nbrs, R, box=None) -> int:
        """How many of ``nbrs``'s pairs are inside the cutoff at R (host int)."""
        from mlpjax.potential import in_cutoff_pairs

        kw = {} if box is None else {"box": self.super_box(box)}
        d = jax.vmap(functools.partial(self.nbr_displacement_fn, **kw))
        recv, send = nbrs.idx[0], nbrs.idx[1]
        keep = in_cutoff_pairs(d, self.expand(R), recv, send, self.cutoff, recv.shape[-1])[0] < self.n_atoms * self.n_copies
        return int(jnp.sum(keep))

    def update_neighbors(self, nbrs, R, box=None):
        """``nbrs.update`` at R (and, for NPT, the current box) in the neighbour-list space, with
        the batching rule of the module docstring. The list's pairs do not depend differentiably
        on R or the box (and custom_vmap has no derivative rule): their gradient is stopped here,
        which is exact."""
        R = jax.lax.stop_gradient(R)
        box = () if box is None else (jax.lax.stop_gradient(box),)
        nbrs = self._gated_update(nbrs, R, *box)
        return self._flag_pair_overflow(nbrs, R, *box) if self.pair_fraction < 1.0 else nbrs

    def _flag_pair_overflow(self, nbrs, R, *box):
        """``nbrs`` marked overflowed (jax-md's flag, so the engine reallocates) when more of its
        pairs are inside the cutoff at R than the model's compacted slots hold."""
        from jax_md.partition import PartitionErrorCode

        from mlpjax.potential import compact_capacity, in_cutoff_pairs

        kw = {"box": self.super_box(box[0])} if box else {}
        d = jax.vmap(functools.partial(self.nbr_displacement_fn, **kw))
        recv, send = nbrs.idx[0], nbrs.idx[1]
        _, _, over = in_cutoff_pairs(d, self.expand(R), recv, send, self.cutoff,
                                     compact_capacity(recv.shape[-1], self.pair_fraction))
        return nbrs.set(error=nbrs.error.update(PartitionErrorCode.NEIGHBOR_LIST_OVERFLOW, over))

    def _plain_update(self, nbrs, R, box=None):
        if box is None:
            return nbrs.update(self.expand(R))
        return nbrs.update(self.expand(R), box=self.super_box(box))

    @functools.cached_property
    def _gated_update(self):
        """The gated update ``(nbrs, R[, box])``; with a box (NPT) the displacement test is
        jax-md's, in the run's current (image-super) box."""
        single = self._plain_update
        skin = float(self.skin)
        gate_sq = (0.5 * skin) ** 2 * 0.99  # Å², a hair below jax-md's (skin/2)²: never "no" when jax-md says yes

        def moved(nbrs, R, *box):  # does this run need a rebuild (jax-md's test, slightly early)?
            kw = {"box": self.super_box(box[0])} if box else {}
            d = jax.vmap(functools.partial(self.nbr_displacement_fn, **kw))(self.expand(R), nbrs.reference_position)
            return jnp.any(jnp.sum(d**2, axis=-1) > gate_sq)

        @jax.custom_batching.custom_vmap
        def update(nbrs, R, *box):
            return single(nbrs, R, *box)

        @update.def_vmap
        def update_batched(axis_size, in_batched, nbrs, R, *box):
            def batch(tree, batched):
                return jax.tree_util.tree_map(
                    lambda x, b: x if b else jnp.broadcast_to(x, (axis_size,) + jnp.shape(x)), tree, batched)

            args = [batch(a, b) for a, b in zip((nbrs, R) + box, in_batched)]
            rebuild = jnp.any(jax.vmap(moved)(*args)) if skin > 0 else True  # skin 0: jax-md rebuilds every step
            new = jax.lax.cond(rebuild, lambda nb: jax.vmap(single)(nb, *args[1:]), lambda nb: nb, args[0])
            return new, jax.tree_util.tree_map(lambda _: True, new)

        return update


@compiled(maxsize=8)
def _energy_and_forces_jit(system: MDSystem):
    # a check utility (tests): keyed by the system's identity, like the engine
    return jax.jit(lambda v, R, nbrs: (system.energy(v, R, neighbor=nbrs), system.force(v, R, neighbor=nbrs)))


@jax.custom_jvp
def _expand_images(R, shifts, repeats):
    """[N, 3] fractional → [C·N, 3] fractional coordinates of the image supercell."""
    return ((R[None, :, :] + shifts[:, None, :]) / repeats).reshape(-1, R.shape[-1])


@_expand_images.defjvp
def _expand_images_jvp(primals, tangents):
    R, shifts, repeats = primals
    dR = tangents[0]
    out = _expand_images(R, shifts, repeats)
    return out, jnp.tile(dR, (shifts.shape[0], 1))


def hashable_neighbor_list(nbrs):
    """jax-md stores the fractional cell size as a (static) jax array; with jit caches
    comparing pytree metadata that raises, so make it a Python float."""
    cell_size = nbrs.cell_size
    if cell_size is not None and not isinstance(cell_size, float) and np.ndim(cell_size) == 0:
        nbrs = dataclasses.replace(nbrs, cell_size=float(cell_size))
    return nbrs


def build_system(potential, structure, config: MDConfig | None = None) -> MDSystem:
    """Space, coordinates, masses and neighbour functions of ``structure`` for ``potential``
    (a :class:`~mlpjax.potential.Potential` or its :class:`~mlpjax.potential.PotentialDef`).

    **Multi-image path.** A periodic cell narrower than 2 (cutoff + skin) (a 1–2-atom primitive
    cell, a small training cell, a cell compressed by NPT) cannot use the minimum-image
    convention. With ``config.multi_image`` the neighbour list and the energy run over the
    supercell of its periodic images (``supercell_repeats``; 10 % extra width for NPT): the
    state keeps the N atoms of the cell, each energy call tiles them into the C images
    (``MDSystem.expand``) and E_cell = E_supercell / C, F_cell = the mean of the C copies'
    forces (all equal for a periodic structure). That is the exact energy of the periodic
    cell with every image, not a bigger simulation: the images move in lockstep.
    """
    from jax_md import space

    config = config or MDConfig()
    definition = getattr(potential, "definition", potential)
    atoms = as_atoms(structure)
    dtype = config.resolved_dtype()
    numbers = np.asarray(atoms.numbers)
    definition.species_indices(numbers)  # raises for elements the potential does not know
    masses = np.asarray(atoms.get_masses(), np.float64)
    pbc = np.asarray(atoms.pbc, bool)
    if pbc.any() and not pbc.all():
        raise ValueError(f"mixed periodicity pbc={pbc.tolist()} is not supported: use pbc=True with vacuum padding")
    periodic = bool(pbc.all())
    if config.ensemble == "npt" and not periodic:
        raise ValueError("NPT needs a fully periodic structure")
    repeats, shifts = (1, 1, 1), None
    nl = {"skin": config.skin, "capacity_multiplier": config.capacity_multiplier}
    if periodic:
        cell = np.asarray(atoms.cell.array, np.float64)
        if abs(np.linalg.det(cell)) < 1e-9:
            raise ValueError("periodic structure with a degenerate cell")
        margin = 1.1 if config.ensemble == "npt" else 1.0
        try:
            check_cell(cell, margin * definition.cutoff, margin * config.skin)
        except ValueError:
            if not config.multi_image:
                raise
            repeats = supercell_repeats(cell, margin * (definition.cutoff + config.skin))
            shifts = np.array(list(np.ndindex(*repeats)), np.float64)  # [C, 3]
        std, _ = atoms.cell.standard_form()
        std = np.tril(np.asarray(std, np.float64))  # rows; lower triangular
        rotation = np.linalg.solve(std, cell)  # cell = std @ rotation
        box = jnp.asarray(std.T, dtype)  # jax-md: R_cart = box @ s (columns are lattice vectors)
        frac = np.linalg.solve(cell.T, np.asarray(atoms.positions, np.float64).T).T % 1.0
        positions = jnp.asarray(np.where(frac >= 1.0, 0.0, frac), dtype)
        displacement_fn, shift_fn = space.periodic_general(box, fractional_coordinates=True)
        nbr_box = box * jnp.asarray(repeats, dtype)[None, :]
        nbr_displacement, _ = space.periodic_general(nbr_box, fractional_coordinates=True)
        neighbor_fn = definition.neighbor_fn(nbr_displacement, nbr_box, fractional_coordinates=True, **nl)
    else:
        cell = np.zeros((3, 3))
        rotation = np.eye(3)
        box = None
        positions = jnp.asarray(atoms.positions, dtype)
        displacement_fn, shift_fn = space.free()
        nbr_displacement = displacement_fn
        neighbor_fn = definition.neighbor_fn(displacement_fn, 1.0, disable_cell_list=True, **nl)
    pair_fraction = _pair_fraction(len(atoms) * int(np.prod(repeats)), float(definition.cutoff), float(config.skin))
    system = MDSystem(
        definition=definition,
        numbers=numbers,
        masses=jnp.asarray(masses, dtype),
        positions=positions,
        periodic=periodic,
        cell=cell,
        pbc=pbc,
        box=box,
        rotation=rotation,
        displacement_fn=displacement_fn,
        shift_fn=shift_fn,
        neighbor_fn=neighbor_fn,
        nbr_displacement_fn=nbr_displacement,
        dtype=dtype,
        skin=float(config.skin),
        capacity_multiplier=float(config.capacity_multiplier),
        repeats=tuple(int(r) for r in repeats),
        image_shifts=shifts,
        pair_fraction=pair_fraction,
    )
    system._energy_of, system._force_of  # built here, outside any trace (they hold the static species)
    return system


MIN_COMPACTION_ATOMS = 128  # smaller systems keep the whole list (see _pair_fraction)


def _pair_fraction(n_list_atoms: int, cutoff: float, skin: float) -> float:
    """The static fraction of a Verlet list's slots the model gets: (cutoff / (cutoff + skin))³,
    the share of a uniform liquid's listed pairs that are inside the cutoff, rounded up to 1/64
    (5 Å and 0.5 Å: 0.75). A static number, not a count at the start, so that every start of a
    system shares one compiled engine; where the pairs inside need more slots (a crystal whose
    shells fall just inside the cutoff, a compressed cluster), ``MDSystem.allocate`` makes the
    list itself bigger. 1.0 (no compaction) without a skin, when it would save < 5 %, or for fewer
    than ``MIN_COMPACTION_ATOMS`` atoms in the list's space: there a list can reach every possible
    pair, where jax-md caps its size, and could not grow to make room."""
    if skin <= 0 or n_list_atoms < MIN_COMPACTION_ATOMS:
        return 1.0
    frac = math.ceil(64 * (cutoff / (cutoff + skin)) ** 3) / 64
    return 1.0 if frac > 0.95 else float(frac)


# ----------------------------------------------------------------------------- list bookkeeping (host)
def needs_reallocation(nbrs) -> bool:
    """Overflow of the neighbour or cell list, or (box changes, NPT) cells that became too small.
    ``np.any``: a batched list (one flag per run) needs reallocation if any run does."""
    return bool(np.any(nbrs.did_buffer_overflow)) or bool(np.any(nbrs.cell_size_too_small))


def grow_neighbor_list(system: MDSystem, start_R, end_R, old_nbrs, growth: float = 1.25, *, box=None, end_box=None):
    """Reallocate at ``start_R`` with capacity ≥ max(need at start/end × multiplier, growth × old).
    ``box``/``end_box``: the boxes at start and end (NPT), else None."""
    n = system.n_atoms * system.n_copies
    cand = system.allocate(start_R, box=box)
    target = max(cand.max_occupancy, int(math.ceil(growth * old_nbrs.max_occupancy)))
    end_R = np.asarray(end_R)
    if np.all(np.isfinite(end_R)) and (end_box is None or np.all(np.isfinite(np.asarray(end_box)))):
        target = max(target, system.allocate(jnp.asarray(end_R, start_R.dtype), box=end_box).max_occupancy)
    if cand.max_occupancy < target:
        extra = int(math.ceil((target - cand.max_occupancy) / n))
        cand = system.allocate(start_R, extra_capacity=extra, box=box)
    return cand


def stack_neighbor_lists(lists, capacity: int = 0):
    """One batched jax-md list [R, ...] from R lists: idx padded (with the "no pair" index) to a
    common capacity ≥ ``capacity`` and the static fields made equal, so the pytrees stack. Padding
    is what jax-md's allocation would give at that capacity; nothing is dropped."""
    cap = max([capacity] + [nb.max_occupancy for nb in lists])
    cell_caps = [nb.cell_list_capacity for nb in lists if nb.cell_list_capacity is not None]
    fixed = []
    for nb in lists:
        n = nb.reference_position.shape[0]  # atoms in the neighbour-list space: jax-md's padding index
        idx = jnp.pad(nb.idx, ((0, 0), (0, cap - nb.max_occupancy)), constant_values=n)
        fixed.append(dataclasses.replace(
            nb, idx=idx, max_occupancy=cap, cell_list_capacity=max(cell_caps) if cell_caps else None,
            cell_list_fn=lists[0].cell_list_fn))
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *fixed)
