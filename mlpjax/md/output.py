"""What an MD run writes: thermo rows, trajectory frames, restart files.

**Thermo** (one row per ``log_every`` steps, step 0 included): step, time_ps, E_pot_eV,
E_kin_eV, E_tot_eV, T_K (T = 2 E_kin / (n_dof k_B)), P_GPa, V_A3 (periodic cells; else empty)
and E_cons_eV (the conserved extended-system energy of Nosé–Hoover runs; else empty).

**Frames** are ``ase.Atoms`` in the input orientation (the current box under NPT) with energy,
forces, velocities (Å/ASE-time, what ``ase.Atoms.get_velocities`` uses, so frames restart cleanly
in ASE) and step/time/temperature/pressure in ``info``; streamed to extxyz or ASE ``.traj``.

**Restart files** hold everything needed to continue bit-for-bit: the integrator states of all
runs (positions, momenta, forces, thermostat/barostat chains, RNG keys) and their neighbour lists
(indices AND reference positions, so the continued run sums pairs in the same order), written
atomically with a checksum (mlpjax.files) and a fingerprint of the dynamics they continue.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from mlpjax import units as _units
from mlpjax.config import ConfigError
from mlpjax.md.config import EV_PER_A3_IN_GPA, MDConfig
from mlpjax.md.system import MDSystem, hashable_neighbor_list

__all__ = ["THERMO_COLUMNS", "temperature_K", "thermo_row", "format_row", "frame_atoms", "TrajectoryWriter",
           "write_restart", "load_restart", "read_restart"]

THERMO_COLUMNS = ("step", "time_ps", "E_pot_eV", "E_kin_eV", "E_tot_eV", "T_K", "P_GPa", "V_A3", "E_cons_eV")
RESTART_MAGIC = b"MLPJAX-MD-RESTART-2\n"


def temperature_K(ekin_eV, dof: int) -> float:
    """Kinetic temperature T = 2 E_kin / (n_dof k_B) in K."""
    return 2.0 * float(ekin_eV) / (dof * _units.BOLTZMANN_EV_PER_K)


def thermo_row(step: int, rec: dict, dt_ps: float, dof: int) -> tuple:
    """The :data:`THERMO_COLUMNS` of one record (host arrays); NaN where a column does not apply."""
    nan = float("nan")
    epot, ekin = float(rec["epot"]), float(rec["ekin"])
    return (step, step * dt_ps, epot, ekin, epot + ekin, temperature_K(ekin, dof),
            float(rec["pressure"]) * EV_PER_A3_IN_GPA if "pressure" in rec else nan,
            float(rec["volume"]) if "volume" in rec else nan,
            float(rec["econs"]) if "econs" in rec else nan)


def format_row(row: tuple) -> list:
    """A thermo row as CSV cells (empty where NaN)."""
    return [row[0]] + [("" if np.isnan(v) else f"{v:.10g}") for v in row[1:]]


def frame_atoms(system: MDSystem, rec: dict, step: int, time_ps: float, temperature: float, with_forces: bool = True):
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


class TrajectoryWriter:
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


# ----------------------------------------------------------------------------- restart files
def _fingerprint(system: MDSystem, config: MDConfig, n_runs: int) -> dict:
    """What a restart file must match (the dynamics it continues)."""
    return {
        "ensemble": config.ensemble, "timestep_fs": float(config.timestep_fs), "n_atoms": system.n_atoms,
        "numbers": [int(z) for z in system.numbers], "dtype": str(np.dtype(system.dtype)),
        "repeats": list(system.repeats), "steps": int(config.steps), "n_runs": int(n_runs),
    }


def write_restart(path, system: MDSystem, config: MDConfig, state, nbrs, step: int) -> None:
    """Write the batched ``state``/``nbrs`` of all runs at ``step`` (see the module docstring)."""
    from mlpjax import files

    payload = {
        "fingerprint": json.dumps(_fingerprint(system, config, int(np.shape(state.position)[0]))),
        "step": int(step),
        "state": [np.asarray(x) for x in jax.tree_util.tree_leaves(state)],
        "nbrs": [np.asarray(x) for x in jax.tree_util.tree_leaves(nbrs)],
        "max_occupancy": int(nbrs.max_occupancy),
    }
    files.write_checked(path, RESTART_MAGIC, payload)


def load_restart(path, system: MDSystem, config: MDConfig, n_runs: int) -> dict:
    """The checked payload of a restart file: a clear error if the file is damaged
    (mlpjax.files.CorruptFileError) or belongs to another system/ensemble/timestep/number of runs
    (mlpjax.config.ConfigError, a ValueError). Cheap: called before anything is compiled."""
    from mlpjax import files

    payload = files.read_checked(path, RESTART_MAGIC, "MD restart")
    want = _fingerprint(system, config, n_runs)
    have = json.loads(payload["fingerprint"])
    diff = {k: (have.get(k), v) for k, v in want.items() if k != "steps" and have.get(k) != v}
    if diff:
        raise ConfigError(f"{path}: restart file does not match this run: " + ", ".join(
            f"{k} is {a!r} in the file but {b!r} here" for k, (a, b) in diff.items()), option="restart", source=str(path))
    if int(payload["step"]) > config.steps:
        raise ConfigError(f"{path}: the restart is at step {payload['step']}, beyond steps = {config.steps}",
                          option="restart", source=str(path))
    return payload


def read_restart(path, payload: dict, state_template, nbrs_template):
    """(state, nbrs, step) from a checked ``payload`` (:func:`load_restart`), into the pytree
    structure of freshly initialised templates (the saved list capacity replaces the template's)."""

    def fill(template, leaves, what):
        t_leaves, treedef = jax.tree_util.tree_flatten(template)
        if len(t_leaves) != len(leaves) or (what == "integrator state" and any(
                np.shape(v) != np.shape(t) for v, t in zip(leaves, t_leaves))):
            raise ValueError(f"{path}: the {what} in the restart file does not fit this run's "
                             f"({len(leaves)} arrays, expected {len(t_leaves)} of the same shapes)")
        return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(np.asarray(v), jnp.asarray(t).dtype)
                                                      for v, t in zip(leaves, t_leaves)])

    nbrs_template = dataclasses.replace(nbrs_template, max_occupancy=int(payload["max_occupancy"]))
    state = fill(state_template, payload["state"], "integrator state")
    return state, hashable_neighbor_list(fill(nbrs_template, payload["nbrs"], "neighbour list")), int(payload["step"])
