"""Molecular dynamics with a :class:`~mlpjax.potential.Potential` in jax-md.

    from mlpjax.md import MDConfig, simulate
    result = simulate(potential, atoms, MDConfig(ensemble="nvt", temperature_K=300, steps=10_000),
                      trajectory="md.extxyz", log="md.csv")

Units: eV, Å, amu; time in ASE units internally (Å·sqrt(amu/eV) ≈ 10.18 fs; the
config takes femtoseconds and converts with ``ase.units.fs``); kT = ``ase.units.kB``·T.
Momenta are amu·Å/ASE-time, velocities Å/ASE-time (what ``ase.Atoms.get_velocities``
uses), so frames written here restart cleanly in ASE.

**Space.** A non-periodic structure uses ``space.free()`` (neighbour candidates are all
pairs: fine for molecules, O(N²) for large clusters). A fully periodic structure uses
``space.periodic_general(box, fractional_coordinates=True)``: positions are stored as
fractional coordinates, jax-md's displacement returns Cartesian vectors and, through
its custom JVP, gradients with respect to fractional positions are Cartesian forces.
jax-md's fractional cell list needs an upper-triangular box, so the cell is rotated to
ASE's standard (lower-triangular) form for the simulation; energies are invariant, and
every output (trajectory, final state, last good frame) is rotated back to the input
orientation. Fractional wrapping equals the minimum image only for pairs shorter than
half the smallest perpendicular cell width, so ``cutoff + skin`` larger than that is
an error (use a supercell). Mixed periodicity is rejected.

**Chunks.** Steps run in fully jitted chunks (``lax.scan`` over records, ``fori_loop``
over the steps between records). The neighbour list is allocated once and updated
every step inside the chunk; after each chunk the host checks
``nbrs.did_buffer_overflow`` and, if set, reallocates from the chunk's START state and
reruns the chunk (:func:`run_chunked`): a chunk computed with an overflowed list is
never accepted. Inside a step the list is updated at the new positions before the
force there is evaluated (see :func:`_integrator`), so no pair inside the cutoff is
ever missed between rebuilds.

**Thermo.** Every ``log_every`` steps: potential energy (one extra energy-only pass),
kinetic energy Σ p²/2m, total energy and the temperature T = 2 E_kin / (n_dof k_B)
with n_dof = 3N − 3 for NVE (the initial centre-of-mass momentum is removed and is
conserved) and 3N for Langevin NVT (the thermostat acts on the centre of mass too).

**Blow-up.** After each chunk, a record with a non-finite energy/position/momentum/
force, a temperature above ``max(max_temperature_factor · T, max_temperature_floor_K)``
or (optionally) two atoms closer than ``min_distance`` stops the run: the last good
frame is written to ``last_good_frame.xyz`` (next to the trajectory, else in the
working directory), logs are flushed and :class:`MDInstabilityError` is raised.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import functools
import json
import math
import os
import sys
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "MDConfig",
    "MDResult",
    "MDInstabilityError",
    "NeighborListOverflowError",
    "MDSystem",
    "ChunkedRun",
    "build_system",
    "simulate",
    "run_chunked",
    "supercell",
    "supercell_repeats",
    "perpendicular_widths",
    "check_cell",
]


class MDInstabilityError(RuntimeError):
    """The simulation exploded. ``step``, ``reason`` and ``frame_path`` say when, what and
    where the last good frame was written."""

    def __init__(self, message: str, *, step: int, reason: str, frame_path: str | None):
        super().__init__(message)
        self.step, self.reason, self.frame_path = step, reason, frame_path


class NeighborListOverflowError(RuntimeError):
    """The neighbour list kept overflowing after repeated reallocation."""


# ----------------------------------------------------------------------------- config
ENSEMBLES = ("nve", "nvt", "nvt_nh", "npt")
def _gpa_per_ev_a3() -> float:
    from ase import units

    return 1.0 / units.GPa  # 160.2176… GPa per eV/Å³


EV_PER_A3_IN_GPA = _gpa_per_ev_a3()


@dataclasses.dataclass(frozen=True)
class MDConfig:
    """Settings of one MD run (units in the field names)."""

    # "nve" (velocity Verlet) | "nvt" (BAOAB Langevin, jax_md.simulate.nvt_langevin) |
    # "nvt_nh" (Nosé–Hoover chain, jax_md.simulate.nvt_nose_hoover) |
    # "npt" (isotropic MTK Nosé–Hoover barostat + thermostat chains: jax-md's npt_nose_hoover state and
    #  chains, with the fractional-coordinate position update of md._npt_mtk_apply)
    ensemble: str = "nve"
    temperature_K: float = 300.0  # initial Maxwell–Boltzmann temperature; NVT/NPT target (start of a ramp)
    temperature_final_K: float | None = None  # NVT/NPT: target ramps linearly to this over the run
    pressure_GPa: float = 0.0  # NPT target pressure (start of a ramp)
    pressure_final_GPa: float | None = None  # NPT: target ramps linearly to this over the run
    thermostat_tau_fs: float | None = None  # Nosé–Hoover thermostat time scale (None: 100 timesteps, jax-md's default)
    barostat_tau_fs: float | None = None  # Nosé–Hoover barostat time scale (None: 1000 timesteps, jax-md's default)
    chain_length: int = 5  # Nosé–Hoover chain length
    # periodic cells narrower than 2 (cutoff + skin): simulate them exactly through an internal
    # supercell of their periodic images (see build_system); False = raise instead
    multi_image: bool = True
    timestep_fs: float = 1.0
    steps: int = 1000
    chunk_steps: int = 100  # steps per jitted chunk (rounded up to a multiple of the record interval)
    log_every: int = 10  # thermo row every this many steps
    traj_every: int = 100  # trajectory frame every this many steps (when a trajectory path is given)
    skin: float = 0.5  # Å, Verlet skin: pairs within cutoff + skin are listed
    capacity_multiplier: float = 1.25  # neighbour-list head room at allocation
    friction_per_ps: float = 5.0  # Langevin friction γ in 1/ps
    seed: int = 0
    max_temperature_factor: float = 10.0  # blow-up if T > max(factor · temperature_K, floor)
    max_temperature_floor_K: float = 1000.0
    min_distance: float | None = None  # Å; blow-up if two atoms get closer (None: no check)
    dtype: str | None = None  # "float32" | "float64"; None: float64 iff jax_enable_x64
    traj_forces: bool = True  # store forces in trajectory frames
    initial_velocities: str = "maxwell-boltzmann"  # | "atoms" (use the input's momenta)
    max_reallocations_per_chunk: int = 5

    def __post_init__(self):
        if self.ensemble not in ENSEMBLES:
            raise ValueError(f"ensemble must be one of {', '.join(ENSEMBLES)}, got {self.ensemble!r}")
        if self.temperature_final_K is not None and not self.temperature_final_K >= 0:
            raise ValueError(f"temperature_final_K must be >= 0, got {self.temperature_final_K}")
        for name in ("thermostat_tau_fs", "barostat_tau_fs"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be positive, got {v}")
        if self.chain_length < 1:
            raise ValueError(f"chain_length must be >= 1, got {self.chain_length}")
        for name in ("steps", "chunk_steps", "log_every", "traj_every"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < (0 if name == "steps" else 1):
                raise ValueError(f"{name} must be a {'non-negative' if name == 'steps' else 'positive'} integer, got {v!r}")
        if not self.timestep_fs > 0:
            raise ValueError(f"timestep_fs must be positive, got {self.timestep_fs}")
        if not self.temperature_K >= 0:
            raise ValueError(f"temperature_K must be >= 0, got {self.temperature_K}")
        if self.ensemble == "nvt" and not self.friction_per_ps > 0:
            raise ValueError(f"friction_per_ps must be positive for NVT, got {self.friction_per_ps}")
        if not self.skin >= 0:
            raise ValueError(f"skin must be >= 0 Å, got {self.skin}")
        if not self.capacity_multiplier >= 1.0:
            raise ValueError(f"capacity_multiplier must be >= 1, got {self.capacity_multiplier}")
        if self.dtype not in (None, "float32", "float64"):
            raise ValueError(f"dtype must be 'float32', 'float64' or None, got {self.dtype!r}")
        if self.initial_velocities not in ("maxwell-boltzmann", "atoms"):
            raise ValueError(f"initial_velocities must be 'maxwell-boltzmann' or 'atoms', got {self.initial_velocities!r}")

    @property
    def dt(self) -> float:
        """Timestep in ASE time units."""
        from ase import units

        return self.timestep_fs * units.fs

    @property
    def kT(self) -> float:
        from ase import units

        return units.kB * self.temperature_K

    @property
    def gamma(self) -> float:
        """Langevin friction in 1/(ASE time)."""
        from ase import units

        return self.friction_per_ps / (1000.0 * units.fs)

    @property
    def temperature_limit_K(self) -> float:
        t_max = max(self.temperature_K, self.temperature_final_K or 0.0)
        return max(self.max_temperature_factor * t_max, self.max_temperature_floor_K)

    def kT_at(self, step):
        """Target kT (eV) at ``step`` (linear ramp from temperature_K to temperature_final_K over ``steps``)."""
        from ase import units

        t1 = self.temperature_K if self.temperature_final_K is None else self.temperature_final_K
        frac = step / max(self.steps, 1)
        return units.kB * (self.temperature_K + (t1 - self.temperature_K) * frac)

    def pressure_at(self, step):
        """Target pressure (eV/Å³) at ``step`` (linear ramp, like :meth:`kT_at`)."""
        p1 = self.pressure_GPa if self.pressure_final_GPa is None else self.pressure_final_GPa
        frac = step / max(self.steps, 1)
        return (self.pressure_GPa + (p1 - self.pressure_GPa) * frac) / EV_PER_A3_IN_GPA

    def resolved_dtype(self):
        x64 = bool(jax.config.jax_enable_x64)
        if self.dtype is None:
            return jnp.float64 if x64 else jnp.float32
        if self.dtype == "float64" and not x64:
            raise ValueError(
                "dtype='float64' needs 64-bit JAX: set JAX_ENABLE_X64=1 or call "
                "jax.config.update('jax_enable_x64', True) before creating arrays"
            )
        return jnp.dtype(self.dtype).type


@dataclasses.dataclass
class MDResult:
    atoms: Any  # final ase.Atoms (positions, velocities, cell, pbc; input orientation)
    positions: np.ndarray  # [N, 3] Å, final Cartesian positions
    velocities: np.ndarray  # [N, 3] Å/ASE-time
    forces: np.ndarray  # [N, 3] eV/Å at the final positions
    thermo: dict  # step, time_ps, E_pot_eV, E_kin_eV, E_tot_eV, T_K: 1-D numpy arrays
    n_neighbor_reallocations: int
    neighbor_capacity: int  # final neighbour-list capacity (pairs)
    last_good_frame: Any  # ase.Atoms: the last checked frame (the final one for a finished run)
    steps_done: int
    timings: dict  # compile_s, run_s, chunk_s (list), steps_per_s (median over chunks after the first)
    final_state: Any = None  # the jax-md integrator state at the end (simulation coordinates)
    image_repeats: tuple = (1, 1, 1)  # multi-image path: the image supercell used for a narrow cell


# ----------------------------------------------------------------------------- cells
def perpendicular_widths(cell) -> np.ndarray:
    """Distances between opposite faces of the cell (rows = lattice vectors), Å."""
    cell = np.asarray(cell, float)
    volume = abs(np.linalg.det(cell))
    return np.array([volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)])


def supercell_repeats(cell, interaction_range: float) -> tuple[int, int, int]:
    """Smallest repeats such that every perpendicular width is ≥ 2 × interaction_range."""
    w = perpendicular_widths(cell)
    return tuple(int(max(1, math.ceil(2.0 * interaction_range / wi - 1e-9))) for wi in w)


def supercell(atoms, repeats):
    """``atoms.repeat(repeats)`` (int or 3 ints) for periodic structures; used by the CLI's ``--supercell``."""
    if isinstance(repeats, (int, np.integer)):
        repeats = (int(repeats),) * 3
    repeats = tuple(int(r) for r in repeats)
    if len(repeats) != 3 or min(repeats) < 1:
        raise ValueError(f"supercell repeats must be positive integers, got {repeats}")
    if not np.all(atoms.pbc) and repeats != (1, 1, 1):
        raise ValueError("a supercell needs a fully periodic structure")
    return atoms.repeat(repeats)


def check_cell(cell, cutoff: float, skin: float) -> None:
    """Raise a clear ValueError if cutoff + skin exceeds half the smallest perpendicular width."""
    w = perpendicular_widths(cell)
    rc = cutoff + skin
    if rc > 0.5 * w.min() + 1e-9:
        reps = supercell_repeats(cell, rc)
        raise ValueError(
            f"cutoff + skin = {cutoff:g} + {skin:g} = {rc:g} Å exceeds half the smallest perpendicular "
            f"cell width ({0.5 * w.min():.3f} Å; widths {np.array2string(w, precision=3)} Å): the "
            f"minimum-image convention would silently drop pairs. Use a supercell, e.g. "
            f"--supercell {'x'.join(map(str, reps))} (mlpjax.md.supercell(atoms, {reps}))."
        )


# ----------------------------------------------------------------------------- system
@dataclasses.dataclass
class MDSystem:
    """Everything a simulation needs, in simulation coordinates (fractional when periodic)."""

    potential: Any  # with params cast to dtype
    numbers: np.ndarray
    masses: jax.Array  # [N] amu
    positions: jax.Array  # [N, 3] simulation coordinates
    periodic: bool
    cell: np.ndarray  # input cell (rows), zeros when not periodic
    pbc: np.ndarray
    box: Any  # jax-md box (upper triangular, = standard-form cell transposed) or None
    rotation: np.ndarray  # vectors: x_input = x_sim @ rotation
    displacement_fn: Callable
    shift_fn: Callable
    energy_fn: Callable | None  # (R, neighbor, box=None, perturbation=None) -> eV (per simulated cell)
    force_fn: Callable | None  # (R, neighbor, box=None) -> eV/Å (Cartesian, simulation frame)
    neighbor_fn: Any  # jax-md NeighborListFns (over the image supercell when repeats != (1, 1, 1))
    dtype: Any
    repeats: tuple = (1, 1, 1)  # multi-image: the neighbour list and energy run over this supercell of images
    image_shifts: Any = None  # [C, 3] integer image offsets (multi-image), else None
    nbr_displacement_fn: Callable | None = None  # displacement of the neighbour-list space (supercell)

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def n_copies(self) -> int:
        return int(np.prod(self.repeats))

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

    def update_neighbors(self, nbrs, R, box=None):
        """``nbrs.update`` at R (and, for NPT, the current box) in the neighbour-list space."""
        if box is None:
            return nbrs.update(self.expand(R))
        return nbrs.update(self.expand(R), box=self.super_box(box))

    def to_cartesian(self, R) -> np.ndarray:
        """Simulation coordinates → Cartesian positions in the input orientation (Å)."""
        R = np.asarray(R, np.float64)
        return R @ self.cell if self.periodic else R

    def to_input_frame(self, vectors) -> np.ndarray:
        return np.asarray(vectors, np.float64) @ self.rotation

    def from_input_frame(self, vectors) -> np.ndarray:
        return np.asarray(vectors, np.float64) @ self.rotation.T

    def allocate(self, R, extra_capacity: int = 0, box=None):
        """A new neighbour list at R (``extra_capacity`` more pairs per atom; ``box`` for NPT)."""
        kw = {} if box is None else {"box": self.super_box(box)}
        return hashable_neighbor_list(self.neighbor_fn.allocate(self.expand(R), extra_capacity=extra_capacity, **kw))

    def energy_and_forces(self, R=None):
        """Energy (eV) and forces (eV/Å, input orientation) with a freshly allocated list."""
        R = self.positions if R is None else R
        nbrs = self.allocate(R)
        e, f = self._energy_and_forces_jit(R, nbrs)
        return float(e), self.to_input_frame(f)

    @functools.cached_property
    def _energy_and_forces_jit(self):
        return jax.jit(lambda R, nbrs: (self.energy_fn(R, neighbor=nbrs), self.force_fn(R, neighbor=nbrs)))


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


def _as_atoms(structure):
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


def _cast_params(params, dtype):
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x, params
    )


def build_system(potential, structure, config: MDConfig | None = None) -> MDSystem:
    """Space, coordinates, masses and jax-md energy/force/neighbour functions for ``structure``.

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
    atoms = _as_atoms(structure)
    if potential.params is None:
        raise ValueError("the potential has no parameters (train it, load a model file or call init_params)")
    dtype = config.resolved_dtype()
    pot = potential.replace(params=_cast_params(potential.params, dtype))
    numbers = np.asarray(atoms.numbers)
    pot.species_indices(numbers)  # raises for elements the potential does not know
    masses = np.asarray(atoms.get_masses(), np.float64)
    pbc = np.asarray(atoms.pbc, bool)
    if pbc.any() and not pbc.all():
        raise ValueError(f"mixed periodicity pbc={pbc.tolist()} is not supported: use pbc=True with vacuum padding")
    periodic = bool(pbc.all())
    if config.ensemble == "npt" and not periodic:
        raise ValueError("NPT needs a fully periodic structure")
    repeats, shifts = (1, 1, 1), None
    if periodic:
        cell = np.asarray(atoms.cell.array, np.float64)
        if abs(np.linalg.det(cell)) < 1e-9:
            raise ValueError("periodic structure with a degenerate cell")
        margin = 1.1 if config.ensemble == "npt" else 1.0
        try:
            check_cell(cell, margin * pot.cutoff, margin * config.skin)
        except ValueError:
            if not config.multi_image:
                raise
            repeats = supercell_repeats(cell, margin * (pot.cutoff + config.skin))
            shifts = np.array(list(np.ndindex(*repeats)), np.float64)  # [C, 3]
        std, _ = atoms.cell.standard_form()
        std = np.tril(np.asarray(std, np.float64))  # rows; lower triangular
        rotation = np.linalg.solve(std, cell)  # cell = std @ rotation
        box = jnp.asarray(std.T, dtype)  # jax-md: R_cart = box @ s (columns are lattice vectors)
        frac = np.linalg.solve(cell.T, np.asarray(atoms.positions, np.float64).T).T % 1.0
        frac = np.where(frac >= 1.0, 0.0, frac)
        positions = jnp.asarray(frac, dtype)
        displacement_fn, shift_fn = space.periodic_general(box, fractional_coordinates=True)
        nbr_box = box * jnp.asarray(repeats, dtype)[None, :]
        nbr_displacement, _ = space.periodic_general(nbr_box, fractional_coordinates=True)
        neighbor_fn = pot.neighbor_fn(
            nbr_displacement, nbr_box, skin=config.skin, capacity_multiplier=config.capacity_multiplier,
            fractional_coordinates=True,
        )
    else:
        cell = np.zeros((3, 3))
        rotation = np.eye(3)
        box = None
        positions = jnp.asarray(atoms.positions, dtype)
        displacement_fn, shift_fn = space.free()
        nbr_displacement = displacement_fn
        neighbor_fn = pot.neighbor_fn(
            displacement_fn, 1.0, skin=config.skin, capacity_multiplier=config.capacity_multiplier, disable_cell_list=True
        )
    n_copies = int(np.prod(repeats))
    nbr_numbers = np.tile(numbers, n_copies)
    base_energy = pot.energy_fn(nbr_displacement, nbr_numbers)
    base_force = pot.force_fn(nbr_displacement, nbr_numbers)
    system = MDSystem(
        potential=pot,
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
        energy_fn=None,
        force_fn=None,
        neighbor_fn=neighbor_fn,
        dtype=dtype,
        repeats=tuple(int(r) for r in repeats),
        image_shifts=shifts,
        nbr_displacement_fn=nbr_displacement,
    )

    def _super_kwargs(kwargs):
        return {**kwargs, "box": system.super_box(kwargs["box"])} if kwargs.get("box") is not None else kwargs

    def energy_fn(R, neighbor=None, **kwargs):
        """eV of the simulated cell; kwargs (box, perturbation, species) go to jax-md's displacement."""
        return base_energy(system.expand(R), neighbor=neighbor, **_super_kwargs(kwargs)) / n_copies

    def force_fn(R, neighbor=None, **kwargs):
        """eV/Å [N, 3], Cartesian (simulation frame)."""
        f = base_force(system.expand(R), neighbor=neighbor, **_super_kwargs(kwargs))
        return f.reshape(n_copies, R.shape[0], f.shape[-1]).mean(0) if shifts is not None else f

    system.energy_fn, system.force_fn = energy_fn, force_fn
    return system


# ----------------------------------------------------------------------------- chunks
class ChunkedRun(NamedTuple):
    state: Any
    nbrs: Any
    n_reallocations: int
    chunk_times: list  # wall seconds of each accepted chunk (after synchronisation)


def needs_reallocation(nbrs) -> bool:
    """Overflow of the neighbour or cell list, or (box changes, NPT) cells that became too small."""
    # np.any: a batched list (mlpjax.replicas: one flag per replica) needs reallocation if any replica does
    return bool(np.any(nbrs.did_buffer_overflow)) or bool(np.any(nbrs.cell_size_too_small))


def run_chunked(
    step_chunk_fn: Callable,
    state,
    nbrs,
    reallocate_fn: Callable,
    chunk_lengths: Sequence[int],
    *,
    on_chunk: Callable | None = None,
    max_retries: int = 5,
    log_fn: Callable[[str], None] | None = None,
    pass_step: bool = False,
) -> ChunkedRun:
    """Run chunks of steps, never accepting a chunk computed with an overflowed neighbour list.

    Args:
      step_chunk_fn: ``(state, nbrs, n_steps) -> (state, nbrs, aux)``, the jitted chunk.
      state, nbrs: start state and neighbour list.
      reallocate_fn: ``(start_state, end_state, old_nbrs) -> nbrs``, a new list valid at
        ``start_state`` with more capacity than ``old_nbrs`` (``end_state`` is the
        overflowed chunk's end, a hint for how much more).
      chunk_lengths: steps of each chunk.
      on_chunk: ``(index, first_step, start_state, state, nbrs, aux)`` after a chunk is
        accepted; may raise to stop the run.
      max_retries: reallocations allowed per chunk before :class:`NeighborListOverflowError`.
      pass_step: call ``step_chunk_fn(state, nbrs, n_steps, first_step)`` (steps done before
        the chunk), for step-dependent dynamics (ramps).
    Returns: :class:`ChunkedRun`.
    """
    n_realloc = 0
    times = []
    step = 0
    for index, n_steps in enumerate(chunk_lengths):
        start = state
        for attempt in range(max_retries + 1):
            t0 = time.perf_counter()
            args = (start, nbrs, n_steps, step) if pass_step else (start, nbrs, n_steps)
            new_state, new_nbrs, aux = step_chunk_fn(*args)
            overflow = needs_reallocation(new_nbrs)  # synchronises
            elapsed = time.perf_counter() - t0
            if not overflow:
                break
            if attempt == max_retries:
                raise NeighborListOverflowError(
                    f"neighbour list still overflowing after {max_retries} reallocations in the chunk "
                    f"starting at step {step} (capacity {getattr(nbrs, 'max_occupancy', '?')}): the system is "
                    f"probably collapsing; try a smaller timestep or a larger capacity_multiplier"
                )
            old = nbrs
            nbrs = reallocate_fn(start, new_state, old)
            n_realloc += 1
            if log_fn is not None:
                log_fn(
                    f"neighbour list overflowed in the chunk starting at step {step}: reallocated "
                    f"(capacity {getattr(old, 'max_occupancy', '?')} -> {getattr(nbrs, 'max_occupancy', '?')}) "
                    f"and rerunning the chunk"
                )
        state, nbrs = new_state, new_nbrs
        times.append(elapsed)
        if on_chunk is not None:
            on_chunk(index, step, start, state, nbrs, aux)
        step += n_steps
    return ChunkedRun(state, nbrs, n_realloc, times)


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


def _integrator(system: MDSystem, config: MDConfig):
    """``init(key, R, nbrs) -> state``, ``step(state, nbrs, kT, P) -> (state, nbrs)``, the number
    of degrees of freedom and ``box_of(state)`` (the current box, None when it is fixed). ``init``
    takes ``kT=`` (eV) to start at another temperature than the config's (mlpjax.replicas: one
    per replica).

    The states and initialisation are jax-md's (Maxwell–Boltzmann momenta at kT with the
    total momentum removed). NVE and Langevin NVT are assembled from jax-md's own primitives
    in exactly jax-md's order (velocity Verlet; BAOAB) with one change: the neighbour list is
    updated at the new positions *before* the force there is evaluated, and carried out of the
    step. Nosé–Hoover NVT uses jax-md's ``apply_fn`` unchanged and NPT jax-md's splitting with
    a corrected position update (``_npt_mtk_apply``), each with a force/energy
    function that updates the neighbour list at the positions (and box) it is evaluated at;
    the carried list is then updated at the step's end point (the same positions, so the
    same list). Either way forces never use a list referenced more than skin/2 away. (jax-md's
    usual ``apply_fn(state, neighbor=nbrs)`` followed by ``nbrs.update`` uses a list that is
    one step stale.) kT (eV) and P (eV/Å³) are per-step arguments (ramps).
    """
    from jax_md import simulate as jsim

    force_fn, shift_fn = system.force_fn, system.shift_fn
    dt, gamma = config.dt, config.gamma
    kT0 = config.kT_at(0)
    box_of = lambda state: None  # noqa: E731
    if config.ensemble in ("nve", "nvt"):
        if config.ensemble == "nve":
            init_fn, _ = jsim.nve(force_fn, shift_fn, dt)

            def init(key, R, nbrs, kT=kT0):
                return init_fn(key, R, kT, mass=system.masses, neighbor=nbrs)

            def drift(state, kT):  # half kick + drift, as jax_md.simulate.velocity_verlet
                state = jsim.momentum_step(state, 0.5 * dt)
                return jsim.position_step(state, shift_fn, dt)

            dof = 3 * system.n_atoms - 3
        else:
            init_fn, _ = jsim.nvt_langevin(force_fn, shift_fn, dt, kT0, gamma=gamma)

            def init(key, R, nbrs, kT=kT0):
                return init_fn(key, R, mass=system.masses, neighbor=nbrs, kT=kT)

            def drift(state, kT):  # B A O A of BAOAB, as jax_md.simulate.nvt_langevin
                state = jsim.momentum_step(state, 0.5 * dt)
                state = jsim.position_step(state, shift_fn, 0.5 * dt)
                state = jsim.stochastic_step(state, dt, kT, gamma)
                return jsim.position_step(state, shift_fn, 0.5 * dt)

            dof = 3 * system.n_atoms

        def step(state, nbrs, kT, pressure):
            state = drift(state, kT)
            nbrs = system.update_neighbors(nbrs, state.position)
            state = state.set(force=force_fn(state.position, neighbor=nbrs))
            return jsim.momentum_step(state, 0.5 * dt), nbrs

        return init, step, max(dof, 1), box_of

    tau_t = (config.thermostat_tau_fs * config.dt / config.timestep_fs) if config.thermostat_tau_fs else 100 * dt
    tau_b = (config.barostat_tau_fs * config.dt / config.timestep_fs) if config.barostat_tau_fs else 1000 * dt
    chain = {"chain_length": int(config.chain_length)}
    if config.ensemble == "nvt_nh":
        def fresh_force(R, neighbor=None, **kwargs):
            return force_fn(R, neighbor=system.update_neighbors(neighbor, R), **kwargs)

        init_fn, apply_fn = jsim.nvt_nose_hoover(fresh_force, shift_fn, dt, kT0, tau=tau_t, **chain)

        def init(key, R, nbrs, kT=kT0):
            return init_fn(key, R, mass=system.masses, neighbor=nbrs, kT=kT)

        def step(state, nbrs, kT, pressure):
            state = apply_fn(state, neighbor=nbrs, kT=kT)
            return state, system.update_neighbors(nbrs, state.position)

        # jax-md's NHC counts 3N degrees of freedom (quantity.count_dof) and leaves the centre of mass free
        return init, step, 3 * system.n_atoms, box_of

    # NPT
    energy_fn = system.energy_fn

    def fresh_energy(R, neighbor=None, **kwargs):
        return energy_fn(R, neighbor=system.update_neighbors(neighbor, R, kwargs.get("box")), **kwargs)

    nhc = {"barostat_kwargs": {"tau": tau_b, **chain}, "thermostat_kwargs": {"tau": tau_t, **chain}}
    init_fn, _ = jsim.npt_nose_hoover(fresh_energy, shift_fn, dt, config.pressure_at(0), kT0, **nhc)
    apply_fn = _npt_mtk_apply(fresh_energy, shift_fn, dt, **nhc)

    def init(key, R, nbrs, kT=kT0):
        state = init_fn(key, R, system.box, mass=system.masses, neighbor=nbrs, kT=kT)
        # jax-md's init sizes the barostat mass W = d (N + 1) kT τ_b² with the closure's kT (its
        # apply_fn resets W from the step's kT before every step): size it with this start's kT,
        # in apply_fn's expression, so a replica's W equals its own single run's at every record
        return _with_box_mass(state, kT)

    def step(state, nbrs, kT, pressure):
        state = apply_fn(state, neighbor=nbrs, kT=kT, pressure=pressure)
        return state, system.update_neighbors(nbrs, state.position, jsim.npt_box(state))

    return init, step, 3 * system.n_atoms, jsim.npt_box


def _with_box_mass(state, kT):
    """The NPT state with the barostat mass W = d (N + 1) kT τ_b² (eV·ASE-time²) of target kT (eV)."""
    n, dim = state.position.shape
    return state.set(box_mass=jnp.array(dim * (n + 1) * kT * state.barostat.tau**2, state.position.dtype))


def _npt_mtk_apply(energy_fn, shift_fn, dt: float, barostat_kwargs: dict, thermostat_kwargs: dict):
    """One isotropic MTK Nosé–Hoover NPT step, ``apply(state, kT=, pressure=, **kwargs)``, on
    jax-md's ``NPTNoseHooverState`` and Nosé–Hoover chains, for FRACTIONAL coordinates.

    The splitting is jax-md's ``npt_nose_hoover`` (Tuckerman et al., J. Phys. A 39, 5629
    (2006)): chain half steps, then a velocity-Verlet-like inner step in which the log-volume
    ε moves by x = v_ε dt. One term differs. In Cartesian coordinates MTK moves the atoms by
    r' = r e^x + dt v e^{x/2} sinh(x/2)/(x/2) while the box grows by e^x; in fractional
    coordinates s = r/L the e^x cancels against the box: s' = s + L'⁻¹ dt v e^{x/2} sinhc. jax-md
    passes the Cartesian form ``R (e^x − 1) + dt v …`` to the fractional shift, which treats the
    fractional R as a Cartesian displacement and so moves atoms by s (e^x − 1)/L per step: an
    error that follows the volume change, not dt (measured, 108 Cu atoms expanding by 3 % in
    50 fs: the extended energy drifted 1.1 meV/atom at dt = 1 fs and at 0.5 fs alike;
    benchmarks/npt_conservation.py). Here the position update is the fractional one, and the
    extended energy error falls as dt².
    """
    from jax_md import quantity, util
    from jax_md import simulate as jsim

    barostat = jsim.nose_hoover_chain(dt, **jsim.default_nhc_kwargs(1000 * dt, barostat_kwargs))
    thermostat = jsim.nose_hoover_chain(dt, **jsim.default_nhc_kwargs(100 * dt, thermostat_kwargs))
    dt_2 = 0.5 * dt

    def sinhc(y):  # sinh(y)/y, its Taylor series (y = v_ε dt/2 is tiny)
        return 1 + y**2 / 6 + y**4 / 120 + y**6 / 5040 + y**8 / 362_880

    def energy_and_grads(R, box, **kwargs):  # E (eV), F (eV/Å), dE/dε at ε = 0 (eV)
        def u(R, eps):
            return energy_fn(R, box=box, perturbation=1 + eps, **kwargs)

        e, (g_r, g_eps) = jax.value_and_grad(u, argnums=(0, 1))(R, jnp.zeros((), R.dtype))
        return e, -g_r, g_eps

    def box_force(vol, dudeps, P, M, pressure, alpha):  # G_ε (eV)
        return alpha * util.high_precision_sum(P**2 / M) - dudeps - pressure * vol * P.shape[-1]

    def box_of(state):  # (volume Å³, box) of the state's log-volume, jax-md's own helper
        box = jsim.npt_box(state)
        return quantity.volume(state.position.shape[1], box), box

    def kick(P, F, v_eps, alpha):  # exp(iL2 dt/2): momenta under the force and the box friction
        y = alpha * v_eps * dt_2
        return P * jnp.exp(-y) + dt_2 * F * sinhc(y / 2) * jnp.exp(-y / 2)

    def inner(state, pressure, **kwargs):
        R, P, M, F = state.position, state.momentum, state.mass, state.force  # F: at this R and box already
        alpha = 1 + 1 / R.shape[0]
        vol, box = box_of(state)
        dudeps = jax.grad(lambda eps: energy_fn(R, box=box, perturbation=1 + eps, **kwargs))(jnp.zeros((), R.dtype))
        P_b = state.box_momentum + dt_2 * box_force(vol, dudeps, P, M, pressure, alpha)
        P = kick(P, F, P_b / state.box_mass, alpha)
        state = state.set(box_position=state.box_position + P_b / state.box_mass * dt)
        vol, box = box_of(state)
        x = P_b / state.box_mass * dt
        R = shift_fn(R, dt * (P / M) * jnp.exp(x / 2) * sinhc(x / 2), box=box)  # fractional: no R (e^x − 1) term
        _, F, dudeps = energy_and_grads(R, box, **kwargs)
        P = kick(P, F, P_b / state.box_mass, alpha)
        P_b = P_b + dt_2 * box_force(vol, dudeps, P, M, pressure, alpha)
        return state.set(position=R, momentum=P, force=F, box_momentum=P_b)

    def apply(state, *, kT, pressure, **kwargs):
        bc = barostat.update_mass(state.barostat, kT)
        tc = thermostat.update_mass(state.thermostat, kT)
        state = _with_box_mass(state, kT)
        P_b, bc = barostat.half_step(state.box_momentum, bc, kT)
        P, tc = thermostat.half_step(state.momentum, tc, kT)
        state = inner(state.set(momentum=P, box_momentum=P_b), pressure, **kwargs)
        tc = tc.set(kinetic_energy=quantity.kinetic_energy(momentum=state.momentum, mass=state.mass))
        bc = bc.set(kinetic_energy=quantity.kinetic_energy(momentum=state.box_momentum, mass=state.box_mass))
        P, tc = thermostat.half_step(state.momentum, tc, kT)
        P_b, bc = barostat.half_step(state.box_momentum, bc, kT)
        return state.set(thermostat=tc, barostat=bc, momentum=P, box_momentum=P_b)

    return apply


def _make_record_fn(system: MDSystem, config: MDConfig, box_of):
    """Per-record observables: E_pot (eV), E_kin (eV), positions/momenta/forces, and for periodic
    cells the volume (Å³) and the pressure (eV/Å³: virial from the potential's box derivative,
    jax_md.quantity.pressure, plus the kinetic term)."""
    from jax_md import quantity

    n = system.n_atoms

    def record(state, nbrs):
        m = system.masses[:, None]
        box = box_of(state)
        kw = {} if box is None else {"box": box}
        ekin = 0.5 * jnp.sum(state.momentum**2 / m)
        out = {
            "epot": system.energy_fn(state.position, neighbor=nbrs, **kw),
            "ekin": ekin,
            "position": state.position,
            "momentum": state.momentum,
            "force": state.force,
        }
        if system.periodic:
            b = system.box if box is None else box
            out["volume"] = jnp.abs(jnp.linalg.det(b))
            out["pressure"] = quantity.pressure(system.energy_fn, state.position, b, ekin, neighbor=nbrs)
            out["box"] = b
        if config.min_distance is not None:
            recv, send = nbrs.idx[0], nbrs.idx[1]
            mask = recv < n * system.n_copies
            pos = system.expand(state.position)
            dkw = {} if box is None else {"box": system.super_box(box)}
            vec = jax.vmap(functools.partial(system.nbr_displacement_fn, **dkw))(
                pos[jnp.where(mask, send, 0)], pos[jnp.where(mask, recv, 0)])
            r = jnp.sqrt(jnp.sum(vec**2, axis=-1) + jnp.where(mask, 0.0, 1.0))
            out["min_dist"] = jnp.min(jnp.where(mask, r, jnp.inf))
        return out

    return record


def _make_chunk_fn(step_fn, record_fn, record_every: int, config: MDConfig):
    """jit: (state, nbrs, first_step, n_records) -> (state, nbrs, records); the targets kT and P
    of each step follow the config's ramps from the global step index."""

    def chunk(state, nbrs, first_step, n_records):
        def step(i, carry):
            state, nbrs, k = carry
            k = k + 1
            kf = k.astype(state.position.dtype)  # ramps in the simulation's precision
            state, nbrs = step_fn(state, nbrs, config.kT_at(kf), config.pressure_at(kf))
            return state, nbrs, k

        def between_records(carry, _):
            carry = jax.lax.fori_loop(0, record_every, step, carry)
            return carry, record_fn(*carry)

        (state, nbrs, _), records = jax.lax.scan(between_records, (state, nbrs, first_step), None, length=n_records)
        return state, nbrs, records

    return jax.jit(chunk, static_argnums=3)


class _CompileCache:
    """AOT-compiles the chunk per (length, pytree structure, shapes) and times compilation."""

    def __init__(self, jitted):
        self.jitted, self.cache, self.compile_s = jitted, {}, 0.0

    def __call__(self, state, nbrs, first_step, n_records):
        leaves, treedef = jax.tree_util.tree_flatten((state, nbrs))
        key = (n_records, treedef, tuple((np.shape(x), jnp.asarray(x).dtype) for x in leaves))
        fn = self.cache.get(key)
        first_step = jnp.asarray(first_step, jnp.int32)
        if fn is None:
            t0 = time.perf_counter()
            fn = self.jitted.lower(state, nbrs, first_step, n_records).compile()
            self.compile_s += time.perf_counter() - t0
            self.cache[key] = fn
        return fn(state, nbrs, first_step)


# ----------------------------------------------------------------------------- output
def _frame_atoms(system: MDSystem, rec, step, time_ps, temperature, with_forces=True):
    """ase.Atoms of one record in the input orientation (the current box under NPT)."""
    import ase
    from ase.calculators.singlepoint import SinglePointCalculator

    if system.periodic:
        box = np.asarray(rec["box"], np.float64) if "box" in rec else np.asarray(system.box, np.float64)
        cell = box.T @ system.rotation  # rows = lattice vectors, input orientation
        positions = np.asarray(rec["position"], np.float64) @ cell
    else:
        cell, positions = system.cell, np.asarray(rec["position"], np.float64)
    atoms = ase.Atoms(numbers=system.numbers, positions=positions, cell=cell, pbc=system.pbc)
    masses = np.asarray(system.masses, np.float64)[:, None]
    atoms.set_velocities(system.to_input_frame(np.asarray(rec["momentum"], np.float64) / masses))
    results = {"energy": float(rec["epot"])}
    if with_forces:
        results["forces"] = system.to_input_frame(rec["force"])
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info.update(step=int(step), time_ps=float(time_ps), temperature_K=float(temperature))
    if "pressure" in rec:
        atoms.info["pressure_GPa"] = float(rec["pressure"]) * EV_PER_A3_IN_GPA
    return atoms


class _TrajectoryWriter:
    """Streams frames to extxyz (default) or an ASE ``.traj`` file, flushed per chunk, so memory
    does not grow with the run. ``append`` continues an existing file (restarts)."""

    def __init__(self, path, append: bool = False):
        self.path = os.fspath(path)
        self.kind = "traj" if self.path.endswith(".traj") else "extxyz"
        if self.kind == "traj":
            from ase.io.trajectory import Trajectory

            self.fh = Trajectory(self.path, "a" if append else "w")
        else:
            self.fh = open(self.path, "a" if append else "w")

    def write(self, atoms):
        if self.kind == "traj":
            self.fh.write(atoms)
        else:
            import ase.io

            ase.io.write(self.fh, atoms, format="extxyz")

    def flush(self):
        if self.kind != "traj":
            self.fh.flush()

    def close(self):
        self.fh.close()


_THERMO_COLUMNS = ("step", "time_ps", "E_pot_eV", "E_kin_eV", "E_tot_eV", "T_K", "P_GPa", "V_A3", "E_cons_eV")
_RESTART_MAGIC = b"MLPJAX-MD-RESTART-1\n"


def _restart_fingerprint(system: MDSystem, config: MDConfig) -> dict:
    """What a restart file must match (the dynamics it continues)."""
    return {
        "ensemble": config.ensemble, "timestep_fs": float(config.timestep_fs), "n_atoms": system.n_atoms,
        "numbers": [int(z) for z in system.numbers], "dtype": str(np.dtype(system.dtype)),
        "repeats": list(system.repeats), "steps": int(config.steps),
    }


def write_restart(path, system: MDSystem, config: MDConfig, state, nbrs, step: int) -> None:
    """Everything needed to continue bit-for-bit: the integrator state (positions, momenta,
    forces, thermostat/barostat chains, RNG key) and the neighbour list (indices AND its
    reference positions, so the continued run sums pairs in the same order), written atomically
    with a checksum (mlpjax._io)."""
    from mlpjax import _io

    payload = {
        "fingerprint": json.dumps(_restart_fingerprint(system, config)),
        "step": int(step),
        "state": [np.asarray(x) for x in jax.tree_util.tree_leaves(state)],
        "nbrs": [np.asarray(x) for x in jax.tree_util.tree_leaves(nbrs)],
        "max_occupancy": int(nbrs.max_occupancy),
    }
    _io.write_checked(path, _RESTART_MAGIC, payload)


def load_restart(path, system: MDSystem, config: MDConfig) -> dict:
    """The checked payload of a restart file (:func:`write_restart`): a clear error if the file
    is damaged or belongs to another system/ensemble/timestep. Cheap: called before anything is
    compiled."""
    from mlpjax import _io

    payload = _io.read_checked(path, _RESTART_MAGIC, "MD restart file")
    want = _restart_fingerprint(system, config)
    have = json.loads(payload["fingerprint"])
    diff = {k: (have.get(k), v) for k, v in want.items() if k != "steps" and have.get(k) != v}
    if diff:
        raise ValueError(f"{path}: restart file does not match this run: " + ", ".join(
            f"{k} is {a!r} in the file but {b!r} here" for k, (a, b) in diff.items()))
    if int(payload["step"]) > config.steps:
        raise ValueError(f"{path}: the restart is at step {payload['step']}, beyond steps = {config.steps}")
    return payload


def read_restart(path, system: MDSystem, config: MDConfig, state_template, nbrs_template, payload=None):
    """(state, nbrs, step) from :func:`write_restart` (``payload``: from :func:`load_restart`,
    else the file is read and checked here)."""
    if payload is None:
        payload = load_restart(path, system, config)

    def fill(template, leaves, what):
        t_leaves, treedef = jax.tree_util.tree_flatten(template)
        if len(t_leaves) != len(leaves):
            raise ValueError(f"{path}: the {what} in the restart file has {len(leaves)} arrays, expected {len(t_leaves)}")
        return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(np.asarray(v), jnp.asarray(t).dtype)
                                                      for v, t in zip(leaves, t_leaves)])

    state = fill(state_template, payload["state"], "integrator state")
    occ = int(payload["max_occupancy"])
    if occ != nbrs_template.max_occupancy:
        extra = -(-(occ - nbrs_template.max_occupancy) // max(system.n_atoms * system.n_copies, 1))
        nbrs_template = system.allocate(system.positions, extra_capacity=max(extra, 0), box=system.box)
        if nbrs_template.max_occupancy != occ:
            nbrs_template = dataclasses.replace(nbrs_template, max_occupancy=occ)
    nbrs = fill(nbrs_template, payload["nbrs"], "neighbour list")
    return state, hashable_neighbor_list(nbrs), int(payload["step"])


def cast_state(state, dtype):
    """Every floating leaf of an integrator state in ``dtype`` (jax-md builds some Nosé–Hoover
    chain variables in float32 whatever the positions' precision)."""
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(x).astype(dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x, state)


def record_problem(system: MDSystem, config: MDConfig, rec: dict, temperature_K: float, t_limit_K: float) -> str | None:
    """Why the record ``rec`` (host arrays) ends the run, or None: NaN/inf energy, positions,
    momenta or forces; T above ``t_limit_K``; two atoms closer than ``config.min_distance``;
    an NPT cell too narrow for cutoff + skin (images included). md.simulate and the replicas
    check every record with this."""
    if not (np.isfinite(rec["epot"]) and np.isfinite(rec["ekin"])):
        return "the energy became NaN/inf"
    for name in ("position", "momentum", "force"):
        if not np.all(np.isfinite(rec[name])):
            return f"the {name}s became NaN/inf"
    if temperature_K > t_limit_K:
        return f"the temperature reached {temperature_K:.0f} K (limit {t_limit_K:.0f} K)"
    if "min_dist" in rec and rec["min_dist"] < config.min_distance:
        return f"two atoms came within {float(rec['min_dist']):.3f} Å (min_distance {config.min_distance} Å)"
    if "box" in rec and system.periodic and config.ensemble == "npt":
        cutoff_skin = float(system.potential.cutoff + config.skin)
        widths = perpendicular_widths(np.asarray(rec["box"], np.float64).T * np.asarray(system.repeats)[:, None])
        if cutoff_skin > 0.5 * widths.min() + 1e-9:
            return (f"the NPT cell shrank to perpendicular widths {np.array2string(widths, precision=3)} Å "
                    f"(images included): cutoff + skin = {cutoff_skin:g} Å no longer fits the minimum image")
    return None


def _with_conserved_energy(system: MDSystem, config: MDConfig, record: dict, state, nbrs, kT, pressure) -> dict:
    """``record`` plus ``econs`` (eV), the conserved extended-system energy of Nosé–Hoover runs
    (NVT chain, NPT) at the targets kT (eV) and pressure (eV/Å³); other ensembles: unchanged."""
    from jax_md import simulate as jsim

    if config.ensemble == "nvt_nh":
        record["econs"] = jsim.nvt_nose_hoover_invariant(system.energy_fn, state, kT, neighbor=nbrs)
    elif config.ensemble == "npt":
        record["econs"] = jsim.npt_nose_hoover_invariant(system.energy_fn, state, pressure, kT, neighbor=nbrs)
    return record


@dataclasses.dataclass
class _Engine:
    """The compiled parts of a run: the system's functions, the integrator and the jitted
    start/record/chunk functions (compiled on first use, then reused)."""

    potential: Any  # the Potential it was built for (the first of equal ones)
    system: MDSystem
    dof: int
    box_of: Callable
    chunk_fn: _CompileCache
    start: Callable
    record_at: Callable


_ENGINES: "collections.OrderedDict[tuple, _Engine]" = collections.OrderedDict()
_ENGINE_CACHE_SIZE = 4


def _potential_fingerprint(potential) -> tuple:
    """Content of a Potential that its energy function depends on (architecture, normalisation
    and a SHA-1 of every parameter array; not the metadata): equal for a model loaded twice."""
    import hashlib

    h = hashlib.sha1()
    for leaf in jax.tree_util.tree_leaves(potential.params):
        a = np.asarray(leaf)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return (potential.model, repr(potential.model_config), float(potential.cutoff), tuple(potential.species),
            tuple(float(e) for e in potential.reference_energies), float(potential.energy_shift),
            float(potential.energy_scale), float(potential.avg_num_neighbors),
            str(jax.tree_util.tree_structure(potential.params)), h.hexdigest())


def _engine_key(potential, atoms, config: MDConfig, record_every: int) -> tuple:
    """What the compiled functions depend on: the potential's content (architecture, settings,
    parameters), composition, masses, cell,
    periodicity, precision and the dynamics settings (not the seed, the starting positions or
    velocities, the chunking or the output settings; the run length only through ramps)."""
    ramp = config.temperature_final_K is not None or config.pressure_final_GPa is not None
    dynamics = dataclasses.replace(
        config, seed=0, initial_velocities="maxwell-boltzmann", chunk_steps=1, log_every=1, traj_every=1,
        traj_forces=True, max_temperature_factor=1.0, max_temperature_floor_K=0.0, max_reallocations_per_chunk=0,
        steps=config.steps if ramp else 0)
    arr = lambda x: (np.asarray(x).dtype.str, np.asarray(x).shape, np.asarray(x).tobytes())  # noqa: E731
    return (_potential_fingerprint(potential), arr(atoms.numbers), arr(atoms.get_masses()), arr(atoms.cell.array), arr(atoms.pbc),
            dynamics, int(record_every), bool(jax.config.jax_enable_x64))


def _engine(potential, atoms, config: MDConfig, record_every: int) -> _Engine:
    """The (cached) engine for this run; its ``system`` carries this run's starting positions.

    Compiling the chunk, start and record functions costs seconds to tens of seconds, far more
    than a short run; a second run of the same potential on the same cell with the same
    dynamics (another seed or start structure, a restart, an active-learning exploration)
    reuses them, also for the same model loaded again from its file (the CLI's restarts). The
    jitted functions close over the potential's parameters, so the key holds a fingerprint of
    the potential's content, parameters included (:func:`_potential_fingerprint`)."""
    system = build_system(potential, atoms, config)
    key = _engine_key(potential, atoms, config, record_every)
    hit = _ENGINES.get(key)
    if hit is not None:
        _ENGINES.move_to_end(key)
        return dataclasses.replace(hit, system=dataclasses.replace(hit.system, positions=system.positions))

    init, step_fn, dof, box_of = _integrator(system, config)
    base_record = _make_record_fn(system, config, box_of)

    def record_fn(state, nbrs, k):
        k = jnp.asarray(k).astype(state.position.dtype)
        return _with_conserved_energy(system, config, base_record(state, nbrs), state, nbrs, config.kT_at(k),
                                      config.pressure_at(k))

    @jax.jit
    def start(key, R, nbrs, momenta):
        state = init(key, R, nbrs)
        if momenta is not None:
            state = state.set(momentum=momenta)
        return cast_state(state, system.dtype)

    engine = _Engine(potential=potential, system=system, dof=dof, box_of=box_of,
                     chunk_fn=_CompileCache(_make_chunk_fn(step_fn, record_fn, record_every, config)),
                     start=start, record_at=jax.jit(record_fn))
    _ENGINES[key] = engine
    while len(_ENGINES) > _ENGINE_CACHE_SIZE:
        _ENGINES.popitem(last=False)
    return engine


def run_guarded(chunk_fn, state, nbrs, reallocate, lengths, *, on_chunk, max_retries, log_fn, on_failure) -> ChunkedRun:
    """:func:`run_chunked` over ``lengths`` (nothing to run: the start state) for ``simulate`` and
    ``replicas.simulate_replicas``: a neighbour list that keeps overflowing and a NaN caught by
    ``jax_debug_nans`` become ``on_failure(message)``, which raises (MDInstabilityError)."""
    if not lengths:
        return ChunkedRun(state, nbrs, 0, [])
    try:
        return run_chunked(chunk_fn, state, nbrs, reallocate, lengths, on_chunk=on_chunk, max_retries=max_retries,
                           log_fn=log_fn, pass_step=True)
    except NeighborListOverflowError as err:
        on_failure(f"neighbour list overflow ({err})")
    except FloatingPointError as err:  # jax_debug_nans turns a NaN into this exception
        on_failure(f"a NaN appeared (jax_debug_nans: {str(err)[:200]})")
    raise AssertionError("on_failure must raise")  # pragma: no cover


def run_timings(setup_s: float, compile_s: float, run_s: float, run: ChunkedRun, lengths, chunk: int,
                reallocation_log: list) -> dict:
    """The ``timings`` of an MD result; steps_per_s is the median over full chunks after the first
    (which may include compilation), or over all chunks when there is no such chunk."""
    chunk_s = list(run.chunk_times)
    steady = [t / k for t, k in zip(chunk_s[1:], lengths[1:]) if k == chunk] or [t / k for t, k in zip(chunk_s, lengths)]
    return {
        "setup_s": setup_s,
        "compile_s": compile_s,
        "run_s": run_s,
        "chunk_s": chunk_s,
        "chunk_steps": chunk,
        "steps_per_s": (1.0 / float(np.median(steady))) if steady else float("nan"),
        "reallocation_log": reallocation_log,
    }


def simulate(potential, atoms_or_configuration, config: MDConfig | None = None, *, trajectory=None, log=None,
             progress: bool = True, restart=None, restart_out=None, restart_every: int | None = None) -> MDResult:
    """Run MD with ``potential`` from ``atoms_or_configuration`` (ase.Atoms, Configuration or path).

    Args:
      trajectory: path; ``*.traj`` = ASE trajectory, anything else extxyz. Frames (positions,
        cell, pbc, energy, forces, velocities, step/time/temperature/pressure in ``info``) every
        ``config.traj_every`` steps, step 0 included, streamed and flushed per chunk.
      log: CSV path; one row per ``config.log_every`` steps (step 0 included):
        step, time_ps, E_pot_eV, E_kin_eV, E_tot_eV, T_K, P_GPa, V_A3 (periodic cells; else
        empty) and E_cons_eV (the conserved extended-system energy of Nosé–Hoover runs).
      progress: print a progress line to stderr about every 5 s.
      restart: a restart file to continue from (see ``restart_out``): the run continues at the
        saved step up to ``config.steps`` (the total), appending to ``trajectory`` and ``log``.
        In float64 the continued run is bit-for-bit the uninterrupted one.
      restart_out: write a restart file here at the end and every ``restart_every`` steps
        (rounded up to whole chunks; default: only at the end).
    Raises:
      ValueError: bad settings, a cell too small with ``multi_image=False``, unknown elements,
        a restart file of another run; mlpjax._io.CorruptFileError for a damaged restart file.
      MDInstabilityError: the run exploded (last good frame written, logs flushed).
    """
    config = config or MDConfig()
    input_atoms = _as_atoms(atoms_or_configuration)
    record_every = math.gcd(config.log_every, config.traj_every) if trajectory is not None else config.log_every
    if config.steps % record_every:
        raise ValueError(
            f"steps ({config.steps}) must be a multiple of log_every"
            + (f"/traj_every (their gcd, {record_every})" if trajectory is not None else f" ({record_every})")
        )
    chunk = max(1, math.ceil(config.chunk_steps / record_every)) * record_every
    dt_ps = config.timestep_fs / 1000.0
    t_limit = config.temperature_limit_K
    from ase import units

    engine = _engine(potential, input_atoms, config, record_every)
    system, dof, box_of, chunk_fn, start, record_at = (engine.system, engine.dof, engine.box_of, engine.chunk_fn,
                                                       engine.start, engine.record_at)

    t_setup = time.perf_counter()
    compile_s0 = chunk_fn.compile_s
    nbrs = system.allocate(system.positions, box=system.box if config.ensemble == "npt" else None)
    key = jax.random.PRNGKey(config.seed)
    momenta = None
    if config.initial_velocities == "atoms":
        momenta = jnp.asarray(system.from_input_frame(input_atoms.get_momenta()), system.dtype)

    payload = load_restart(restart, system, config) if restart is not None else None  # fail before compiling
    state = start(key, system.positions, nbrs, momenta)
    first = 0
    if restart is not None:
        state, nbrs, first = read_restart(restart, system, config, state, nbrs, payload=payload)
    rec0 = jax.device_get(record_at(state, nbrs, jnp.asarray(first, jnp.int32)))
    setup_s = time.perf_counter() - t_setup
    remaining = config.steps - first
    if remaining % record_every:
        raise ValueError(f"the restart step {first} is not on the record grid ({record_every} steps)")
    lengths = [chunk] * (remaining // chunk) + ([remaining % chunk] if remaining % chunk else [])

    thermo = {k: [] for k in _THERMO_COLUMNS}
    appending = restart is not None
    log_fh = open(log, "a" if appending else "w", newline="") if log is not None else None
    log_writer = csv.writer(log_fh) if log_fh is not None else None
    if log_writer is not None and not appending:
        log_writer.writerow(_THERMO_COLUMNS)
    traj = _TrajectoryWriter(trajectory, append=appending) if trajectory is not None else None
    frame_dir = os.path.dirname(os.path.abspath(trajectory)) if trajectory is not None else os.getcwd()

    def temperature(ekin):
        return 2.0 * float(ekin) / (dof * units.kB)

    def emit(step, rec, first_record=False):
        """Write the thermo row / trajectory frame for one checked record (a restart does not
        repeat the row and frame of its starting step)."""
        if first_record and appending:
            return
        T = temperature(rec["ekin"])
        if step % config.log_every == 0:
            p = float(rec["pressure"]) * EV_PER_A3_IN_GPA if "pressure" in rec else float("nan")
            v = float(rec["volume"]) if "volume" in rec else float("nan")
            ec = float(rec["econs"]) if "econs" in rec else float("nan")
            row = (step, step * dt_ps, float(rec["epot"]), float(rec["ekin"]), float(rec["epot"]) + float(rec["ekin"]),
                   T, p, v, ec)
            for k, val in zip(_THERMO_COLUMNS, row):
                thermo[k].append(val)
            if log_writer is not None:
                log_writer.writerow([row[0]] + [("" if np.isnan(val) else f"{val:.10g}") for val in row[1:]])
        if traj is not None and step % config.traj_every == 0:
            traj.write(frame(step, rec))

    def frame(step, rec):
        return _frame_atoms(system, rec, step, step * dt_ps, temperature(rec["ekin"]), with_forces=config.traj_forces)

    def problem(rec) -> str | None:
        return record_problem(system, config, rec, temperature(rec["ekin"]), t_limit)

    def flush():
        if log_fh is not None:
            log_fh.flush()
        if traj is not None:
            traj.flush()

    last_good = {"step": first, "rec": rec0}
    realloc_messages = []
    progress_clock = {"t": time.perf_counter(), "t0": time.perf_counter()}

    def explode(step, reason):
        import ase.io

        flush()
        path = os.path.join(frame_dir, "last_good_frame.xyz")
        try:
            ase.io.write(path, frame(last_good["step"], last_good["rec"]), format="extxyz")
        except OSError:
            path = None
        raise MDInstabilityError(
            f"MD became unstable at step {step} (t = {step * dt_ps:.4f} ps): {reason}. The last good frame "
            f"(step {last_good['step']}) was written to {path}. Try a smaller timestep (now "
            f"{config.timestep_fs:g} fs), check the starting structure, or add training data near these "
            f"configurations (e.g. label frames from the trajectory before step {step} and retrain).",
            step=step, reason=reason, frame_path=path,
        )

    bad = problem(rec0)
    if bad is not None:
        explode(first, bad)
    emit(first, rec0, first_record=True)

    chunk_s_seen = []
    every = None if restart_every is None else max(1, math.ceil(restart_every / chunk))

    def on_chunk(index, first_step, start, state, nbrs, aux):
        chunk_s_seen.append(index)
        recs = jax.device_get(aux)
        n_rec = recs["epot"].shape[0]
        for j in range(n_rec):
            rec = {k: v[j] for k, v in recs.items()}
            step = first + first_step + (j + 1) * record_every
            reason = problem(rec)
            if reason is not None:
                explode(step, reason)
            emit(step, rec)
            last_good["step"], last_good["rec"] = step, rec
        flush()
        if restart_out is not None and every is not None and (index + 1) % every == 0:
            write_restart(restart_out, system, config, state, nbrs, first + first_step + n_rec * record_every)
        if progress:
            now = time.perf_counter()
            done = first + first_step + n_rec * record_every
            if now - progress_clock["t"] > 5.0 or done == config.steps:
                progress_clock["t"] = now
                rate = (done - first) / max(now - progress_clock["t0"], 1e-9)
                extra = f"  P = {thermo['P_GPa'][-1]:.3f} GPa  V = {thermo['V_A3'][-1]:.1f} Å³" if config.ensemble == "npt" and thermo["P_GPa"] else ""
                print(
                    f"[mlpjax md] step {done}/{config.steps}  T = {thermo['T_K'][-1]:.1f} K  "
                    f"E_tot = {thermo['E_tot_eV'][-1]:.6f} eV{extra}  ({rate:.1f} steps/s)",
                    file=sys.stderr,
                    flush=True,
                )

    realloc_for = {"start": None}

    def reallocate(start, end, old):
        # A list that overflowed can itself cause a blow-up, so the chunk is rerun once
        # with a bigger list; if it overflows again while its end state has exploded,
        # stop instead of growing the list without bound.
        if realloc_for["start"] is start:
            ekin = float(0.5 * jnp.sum(end.momentum**2 / system.masses[:, None]))
            finite = bool(jnp.all(jnp.isfinite(end.position)) & jnp.all(jnp.isfinite(end.momentum)))
            if not finite or not np.isfinite(ekin) or temperature(ekin) > t_limit:
                explode(
                    last_good["step"] + lengths[min(len(chunk_s_seen), len(lengths) - 1)],
                    "the system exploded (the neighbour list overflowed even after reallocation)",
                )
        realloc_for["start"] = start
        return grow_neighbor_list(system, start.position, end.position, old, box=box_of(start), end_box=box_of(end))

    def log_realloc(msg):
        realloc_messages.append(msg)
        if progress:
            print(f"[mlpjax md] {msg}", file=sys.stderr, flush=True)

    t_run = time.perf_counter()
    try:
        run = run_guarded(
            lambda s_, nb, k, first_step: chunk_fn(s_, nb, first + first_step, k // record_every),
            state, nbrs, reallocate, lengths, on_chunk=on_chunk, max_retries=config.max_reallocations_per_chunk,
            log_fn=log_realloc, on_failure=lambda msg: explode(last_good["step"] + record_every, msg),
        )
        if restart_out is not None:
            write_restart(restart_out, system, config, run.state, run.nbrs, config.steps)
    finally:
        flush()
        if log_fh is not None:
            log_fh.close()
        if traj is not None:
            traj.close()
    run_s = time.perf_counter() - t_run

    final = run.state
    final_atoms = frame(last_good["step"], last_good["rec"])
    # compile_s is 0 when an earlier run compiled the engine (see _engine)
    timings = run_timings(setup_s, chunk_fn.compile_s - compile_s0, run_s, run, lengths, chunk, realloc_messages)
    return MDResult(
        atoms=final_atoms,
        positions=np.asarray(final_atoms.positions),
        velocities=system.to_input_frame(np.asarray(final.momentum, np.float64) / np.asarray(system.masses, np.float64)[:, None]),
        forces=system.to_input_frame(final.force),
        thermo={k: np.asarray(v) for k, v in thermo.items()},
        n_neighbor_reallocations=run.n_reallocations,
        neighbor_capacity=int(run.nbrs.max_occupancy),
        last_good_frame=final_atoms,
        steps_done=config.steps,
        timings=timings,
        final_state=final,
        image_repeats=tuple(system.repeats),
    )
