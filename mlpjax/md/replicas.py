"""Many independent MD replicas of one system at once: R runs of the one driver.

    from mlpjax.replicas import simulate_replicas
    res = simulate_replicas(potential, atoms, MDConfig(ensemble="nvt", steps=10_000),
                            temperatures_K=[300, 600, 900], log_dir="logs")
    res.thermo[2]["T_K"]            # the 900 K replica's temperatures

Replica k is exactly the run ``mlpjax.md.simulate`` would make with ``seed = seeds[k]`` and
``temperature_K = temperatures_K[k]`` (a ramp is scaled by the same factor, T_final,k = T_k ·
T_final / T): its own RNG key, target kT at every step and neighbour list. Replicas share the
cell, composition, masses and every other setting. A single simulation is the R = 1 case of the
same driver and vmapped engine, so in float64 a replica equals its single run to rounding
(tests/test_replicas.py, 1e-10 Å for NVE, Langevin NVT and NPT through a reallocation), and
restart files hold all replicas. NPT replicas share the pressure target and each carries its own
box. The first replica to blow up stops the run with :class:`ReplicaInstabilityError` naming it,
its last good frame in ``last_good_frame_replica{k}.xyz``.

Outputs are per replica: ``thermo[k]`` (md's columns), ``positions``/``velocities``/``forces``
``[R, N, 3]`` (Å, Å/ASE-time, eV/Å; input orientation), ``final_state`` (leaves ``[R, ...]``).
One compilation serves all replicas; on one CPU core R replicas cost about R single runs per step
(``benchmarks/md_replicas.py``), on an accelerator the batch fills the device.
"""

from __future__ import annotations

import dataclasses
import os
import numpy as np

from mlpjax.md.config import MDConfig
from mlpjax.md.driver import ReplicaInstabilityError, ReplicaResult, Run, drive
from mlpjax.md.system import as_atoms

__all__ = ["ReplicaResult", "ReplicaInstabilityError", "simulate_replicas", "replica_paths"]


def replica_paths(path, n_replicas: int) -> list[str]:
    """``md.csv`` → ``md_replica0.csv``, ``md_replica1.csv``, … (the CLI's per-replica files)."""
    root, ext = os.path.splitext(os.fspath(path))
    return [f"{root}_replica{k}{ext}" for k in range(n_replicas)]


def _n_replicas(structures, temperatures_K, seeds, n_replicas) -> int:
    given = {name: n for name, n in (
        ("structures", len(structures) if isinstance(structures, (list, tuple)) else None),
        ("temperatures_K", None if temperatures_K is None else len(temperatures_K)),
        ("seeds", None if seeds is None else len(seeds)),
        ("n_replicas", n_replicas),
    ) if n is not None}
    if not given:
        raise ValueError("say how many replicas: n_replicas, temperatures_K, seeds or a list of structures")
    if len(set(given.values())) > 1:
        raise ValueError("inconsistent replica counts: " + ", ".join(f"{k} gives {v}" for k, v in given.items()))
    r = next(iter(given.values()))
    if r < 1:
        raise ValueError(f"need at least one replica, got {r}")
    return int(r)


def replica_configs(config: MDConfig, temperatures, seeds) -> list[MDConfig]:
    """One MDConfig per replica: its temperature (ramp scaled by T_k / T) and seed."""
    t0, t1 = config.temperature_K, config.temperature_final_K
    out = []
    for t, seed in zip(temperatures, seeds):
        if t1 is None or t == t0:
            final = t1
        elif t0 > 0:
            final = t * t1 / t0
        else:
            raise ValueError("a temperature ramp from 0 K cannot be scaled to other replica temperatures: "
                             "give config.temperature_K > 0")
        out.append(dataclasses.replace(config, temperature_K=float(t), temperature_final_K=final, seed=int(seed)))
    return out


def _check_same_system(first, atoms, k: int) -> None:
    what = None
    if len(atoms) != len(first) or not np.array_equal(atoms.numbers, first.numbers):
        what = "atoms (numbers)"
    elif not np.array_equal(np.asarray(atoms.pbc, bool), np.asarray(first.pbc, bool)):
        what = "pbc"
    elif np.any(first.pbc) and not np.allclose(atoms.cell.array, first.cell.array, atol=1e-8, rtol=0):
        what = "cell"
    if what is not None:
        raise ValueError(f"replica {k} has other {what} than replica 0: replicas share one system (cell, "
                         "composition); run different systems with separate md.simulate calls")


def _paths(paths, directory, r_count: int, ext: str, what: str) -> list:
    if paths is not None and directory is not None:
        raise ValueError(f"give {what} (one path per replica) or a directory, not both")
    if paths is not None:
        paths = [os.fspath(p) for p in paths]
        if len(paths) != r_count:
            raise ValueError(f"{what}: {len(paths)} paths for {r_count} replicas")
        return paths
    if directory is not None:
        os.makedirs(directory, exist_ok=True)
        return [os.path.join(os.fspath(directory), f"replica_{k}.{ext}") for k in range(r_count)]
    return [None] * r_count


def simulate_replicas(potential, structures, config: MDConfig | None = None, *, temperatures_K=None, seeds=None,
                      n_replicas: int | None = None, log_dir=None, trajectory_dir=None, logs=None, trajectories=None,
                      progress: bool = True, restart=None, restart_out=None, restart_every: int | None = None,
                      variables=None) -> ReplicaResult:
    """Run R independent replicas of one system in one vmapped, jitted simulation.

    Args:
      structures: one ase.Atoms (Configuration, path) for all replicas, or a list of R with the
        same numbers, cell and pbc (different positions/momenta).
      config: the shared settings (ensemble nve | nvt | nvt_nh | npt, pressure, timestep, steps, ...).
      temperatures_K: R starting/target temperatures (default: config.temperature_K for all);
        a config ramp is scaled per replica (T_final,k = T_k · temperature_final_K / temperature_K).
      seeds: R RNG seeds (default config.seed + k).
      n_replicas: R, when neither a list nor temperatures/seeds say it.
      log_dir / trajectory_dir: write ``replica_{k}.csv`` / ``replica_{k}.extxyz`` there; or
      logs / trajectories: R explicit paths (``*.traj`` = ASE trajectory, else extxyz). Files are
        as md.simulate's (step 0 included; frames every ``traj_every``), streamed per chunk.
      progress: a progress line on stderr about every 5 s.
      restart / restart_out / restart_every: as md.simulate, one file for all replicas (a restart
        must have the same number of replicas; logs and trajectories are appended).
      variables: :class:`~mlpjax.potential.PotentialParams` to simulate with; a leading replica
        axis on every leaf gives each replica its own parameters (an ensemble).
    Raises:
      ValueError: bad settings, replicas of different systems.
      ReplicaInstabilityError (an MDInstabilityError): a replica exploded.
    """
    config = config or MDConfig()
    r_count = _n_replicas(structures, temperatures_K, seeds, n_replicas)
    atoms_list = ([as_atoms(s) for s in structures] if isinstance(structures, (list, tuple))
                  else [as_atoms(structures)] * r_count)
    for k, atoms in enumerate(atoms_list[1:], start=1):
        _check_same_system(atoms_list[0], atoms, k)
    temperatures = [config.temperature_K] * r_count if temperatures_K is None else [float(t) for t in temperatures_K]
    if not all(t >= 0 for t in temperatures):
        raise ValueError(f"temperatures_K must be >= 0, got {temperatures}")
    seeds = [config.seed + k for k in range(r_count)] if seeds is None else [int(s) for s in seeds]
    configs = replica_configs(config, temperatures, seeds)
    log_paths = _paths(logs, log_dir, r_count, "csv", "logs")
    traj_paths = _paths(trajectories, trajectory_dir, r_count, "extxyz", "trajectories")
    runs = [Run(atoms=a, config=c, log=lp, trajectory=tp, frame_name=f"last_good_frame_replica{k}.xyz",
                label=f"replica {k} (T = {temperatures[k]:g} K, seed {seeds[k]})")
            for k, (a, c, lp, tp) in enumerate(zip(atoms_list, configs, log_paths, traj_paths))]
    return drive(potential, runs, config, variables=variables, progress=progress, restart=restart,
                 restart_out=restart_out, restart_every=restart_every)
