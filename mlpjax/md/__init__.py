"""Molecular dynamics with a :class:`~mlpjax.potential.Potential` in jax-md.

    from mlpjax.md import MDConfig, simulate
    result = simulate(potential, atoms, MDConfig(ensemble="nvt", temperature_K=300, steps=10_000),
                      trajectory="md.extxyz", log="md.csv")

Data flow, one module each: ``config`` (MDConfig, per-run Targets) → ``system`` (build_system:
space, coordinates, neighbour lists, energy/forces as functions of the parameters) →
``integrators`` (NVE, Langevin, Nosé–Hoover NVT, MTK NPT) → ``engine`` (pure jitted
init/record/chunk over (parameters, state) for R ≥ 1 runs, compiled once) → ``driver`` (the one
host loop; ``simulate`` is R = 1) and ``replicas`` (R > 1) → ``output`` (thermo, frames, restarts).
Units: eV, Å, amu, ASE time (Å·sqrt(amu/eV) ≈ 10.18 fs) inside; constants from mlpjax.units.
"""

from mlpjax.md.config import ENSEMBLES, EV_PER_A3_IN_GPA, MDConfig, Targets, dynamics_settings
from mlpjax.md.driver import (ChunkedRun, MDInstabilityError, MDResult, NeighborListOverflowError,
                              ReplicaInstabilityError, Run, drive, record_problem, run_chunked, simulate)
from mlpjax.md.engine import Engine, compile_stats, engine
from mlpjax.md.output import THERMO_COLUMNS, frame_atoms
from mlpjax.md.replicas import ReplicaResult, replica_paths, simulate_replicas
from mlpjax.md.system import (MDSystem, build_system, check_cell, grow_neighbor_list, hashable_neighbor_list,
                              needs_reallocation, perpendicular_widths, stack_neighbor_lists, supercell, supercell_repeats)

__all__ = [
    "ENSEMBLES", "EV_PER_A3_IN_GPA", "MDConfig", "Targets", "dynamics_settings",
    "ChunkedRun", "MDInstabilityError", "MDResult", "NeighborListOverflowError", "ReplicaInstabilityError", "Run",
    "drive", "record_problem", "run_chunked", "simulate",
    "Engine", "compile_stats", "engine",
    "THERMO_COLUMNS", "frame_atoms",
    "ReplicaResult", "replica_paths", "simulate_replicas",
    "MDSystem", "build_system", "check_cell", "grow_neighbor_list", "hashable_neighbor_list", "needs_reallocation",
    "perpendicular_widths", "stack_neighbor_lists", "supercell", "supercell_repeats",
]
