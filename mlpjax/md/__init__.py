"""Molecular dynamics with a :class:`~mlpjax.potential.Potential` in jax-md.

    from mlpjax.md import MDConfig, simulate
    result = simulate(potential, atoms, MDConfig(ensemble="nvt", temperature_K=300, steps=10_000),
                      trajectory="md.extxyz", log="md.csv")

The data flow, one module each:

* :mod:`~mlpjax.md.config` — :class:`MDConfig` (units in field names) and the per-run
  thermostat :class:`Targets`;
* :mod:`~mlpjax.md.system` — :func:`build_system`: space, simulation coordinates, masses,
  neighbour lists and the energy/forces of a structure as functions of the parameters
  (:class:`MDSystem`, frozen; the multi-image path for narrow cells);
* :mod:`~mlpjax.md.integrators` — NVE, Langevin NVT, Nosé–Hoover NVT and MTK NPT steps;
* :mod:`~mlpjax.md.engine` — :func:`engine`: pure jitted ``init``/``record``/``chunk`` over
  (parameters, state) for R ≥ 1 runs, compiled once per architecture, system and dynamics;
* :mod:`~mlpjax.md.output` — thermo rows, trajectory frames, restart files;
* :mod:`~mlpjax.md.driver` — the one host driver (chunk loop, overflow → reallocate → rerun,
  blow-up handling, writers) and :func:`simulate`, its R = 1 case;
* :mod:`~mlpjax.md.replicas` — :func:`simulate_replicas`, its R > 1 case.

Units: eV, Å, amu; time in ASE units internally (Å·sqrt(amu/eV) ≈ 10.18 fs); constants from
:mod:`mlpjax.units` (CODATA 2018). Momenta are amu·Å/ASE-time, velocities Å/ASE-time (what
``ase.Atoms.get_velocities`` uses), so frames written here restart cleanly in ASE.
"""

from mlpjax.md.config import ENSEMBLES, EV_PER_A3_IN_GPA, MDConfig, Targets, dynamics_settings
from mlpjax.md.driver import (ChunkedRun, MDInstabilityError, MDResult, NeighborListOverflowError,
                              ReplicaInstabilityError, Run, drive, record_problem, run_chunked, simulate)
from mlpjax.md.engine import Engine, compile_stats, engine
from mlpjax.md.output import THERMO_COLUMNS, frame_atoms
from mlpjax.md.replicas import ReplicaResult, replica_paths, simulate_replicas
from mlpjax.md.system import (MDSystem, build_system, check_cell, grow_neighbor_list, hashable_neighbor_list,
                              needs_reallocation, perpendicular_widths, supercell, supercell_repeats)

__all__ = [
    "ENSEMBLES", "EV_PER_A3_IN_GPA", "MDConfig", "Targets", "dynamics_settings",
    "ChunkedRun", "MDInstabilityError", "MDResult", "NeighborListOverflowError", "ReplicaInstabilityError", "Run",
    "drive", "record_problem", "run_chunked", "simulate",
    "Engine", "compile_stats", "engine",
    "THERMO_COLUMNS", "frame_atoms",
    "ReplicaResult", "replica_paths", "simulate_replicas",
    "MDSystem", "build_system", "check_cell", "grow_neighbor_list", "hashable_neighbor_list", "needs_reallocation",
    "perpendicular_widths", "supercell", "supercell_repeats",
]
