"""Many independent MD replicas of one system at once, with ``jax.vmap``.

    from mlpjax.md import MDConfig
    from mlpjax.replicas import simulate_replicas
    res = simulate_replicas(potential, atoms, MDConfig(ensemble="nvt", steps=10_000),
                            temperatures_K=[300, 600, 900], log_dir="logs")
    res.thermo[2]["T_K"]            # the 900 K replica's temperatures

**What a replica is.** Replica k is exactly the run ``mlpjax.md.simulate`` would make with
``seed = seeds[k]`` and ``temperature_K = temperatures_K[k]`` (a ramp ``temperature_final_K``
is scaled by the same factor, T_final,k = T_k · T_final / T): its own RNG key (Maxwell–
Boltzmann momenta, Langevin noise), its own target kT at every step, its own neighbour list.
The replicas share the structure's cell, composition and masses (one ``ase.Atoms`` repeated,
or a list of them with the same numbers, cell and pbc) and every other setting (timestep,
friction, thermostat time scale, ...). In float64 a replica equals the single run to
rounding (tests/test_replicas.py: to 1e-10 Å for NVE, Langevin NVT and NPT, through a
neighbour-list reallocation; measured: bit for bit).

**Design.** The single-system pieces of :mod:`mlpjax.md` are reused as they are: the
integrator step and initialisation (``md._integrator``), the per-record observables
(``md._make_record_fn``) and the jitted chunk (``md._make_chunk_fn``: ``lax.scan`` over
records, ``fori_loop`` over the steps between them). The step and the record are
``jax.vmap``-ed over a leading replica axis, and the chunk's target ``kT_at(step)`` returns one
kT per replica, so ONE compilation runs all R replicas. The chunk loop is md's
``run_chunked``: after every chunk the host reduces the batched overflow flags with ``any``,
and on overflow all lists are reallocated (one capacity for all replicas, so they stack) from
the chunk's start state and the chunk is rerun; a chunk computed with an overflowed list is
never accepted. Under ``vmap`` jax-md's "rebuild if an atom moved more than skin/2" ``cond``
would become a ``select`` that computes the rebuild at every step; the neighbour update of the
replicas (:class:`_ReplicaSystem`) first asks whether any replica needs it, and each replica
still keeps its own list unless it moved, so the lists are exactly those of the single runs.

**Shapes and units** (eV, Å, amu, K; ASE time inside, as in mlpjax.md). State leaves carry a
leading replica axis: ``position [R, N, 3]`` (fractional for periodic cells, as in md),
``momentum [R, N, 3]`` amu·Å/ASE-time, ``force [R, N, 3]`` eV/Å, ``mass [R, N, 1]`` amu, the
Langevin key ``rng [R, 2]``, Nosé–Hoover chains ``[R, chain_length]``. The neighbour list's
``idx`` is ``[R, 2, capacity]`` and its error code ``[R]``. A chunk's records are
``[n_records, R, ...]`` (``epot``/``ekin`` ``[n_records, R]`` eV). Outputs are per replica:
``thermo[k]`` has md's columns (step, time_ps, E_pot_eV, E_kin_eV, E_tot_eV, T_K, P_GPa, V_A3,
E_cons_eV), ``positions``/``velocities``/``forces`` are ``[R, N, 3]`` in the input orientation.

**Blow-up.** Each record of each replica is checked like md.simulate checks its own (NaN/inf,
T above the replica's ``temperature_limit_K``, ``min_distance``): the first replica to fail
stops the run with :class:`ReplicaInstabilityError` (an ``MDInstabilityError`` naming the
replica and the step), its last good frame written to ``last_good_frame_replica{k}.xyz``
(next to its trajectory, else in the working directory) and every log flushed.

NPT replicas share the pressure target (and its ramp) and each carries its own box
(``final_state.box_position`` [R]; the final ``atoms``, the frames and the logs carry each
replica's cell and volume); the barostat mass follows the replica's kT as in its single run.
Not supported: restart files.

**Speed.** One compilation serves all replicas, and on an accelerator the batch fills the
device. On one CPU core the force evaluation is compute-bound, so R replicas cost about R single
runs per step (``benchmarks/md_replicas.py``); what they save there is R − 1 compilations.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
import os
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mlpjax.md import (
    _THERMO_COLUMNS,
    EV_PER_A3_IN_GPA,
    MDConfig,
    MDInstabilityError,
    MDSystem,
    _as_atoms,
    _CompileCache,
    _frame_atoms,
    _integrator,
    _make_chunk_fn,
    _make_record_fn,
    _TrajectoryWriter,
    _with_conserved_energy,
    build_system,
    cast_state,
    grow_neighbor_list,
    record_problem,
    run_guarded,
    run_timings,
)

__all__ = ["ReplicaResult", "ReplicaInstabilityError", "simulate_replicas", "replica_paths"]


class ReplicaInstabilityError(MDInstabilityError):
    """One replica exploded; ``replica`` is its index (None when it cannot be told, e.g. a NaN
    raised by ``jax_debug_nans`` inside the batched chunk)."""

    def __init__(self, message: str, *, replica: int | None, step: int, reason: str, frame_path: str | None):
        super().__init__(message, step=step, reason=reason, frame_path=frame_path)
        self.replica = replica


@dataclasses.dataclass
class ReplicaResult:
    atoms: list  # R final ase.Atoms (positions, velocities, cell, pbc; input orientation)
    positions: np.ndarray  # [R, N, 3] Å, final Cartesian positions
    velocities: np.ndarray  # [R, N, 3] Å/ASE-time
    forces: np.ndarray  # [R, N, 3] eV/Å at the final positions
    thermo: list  # R dicts: step, time_ps, E_pot_eV, E_kin_eV, E_tot_eV, T_K, P_GPa, V_A3, E_cons_eV (1-D arrays)
    temperatures_K: np.ndarray  # [R] K, each replica's (starting) target temperature
    seeds: list  # R ints
    n_neighbor_reallocations: int
    neighbor_capacity: int  # pairs per replica (one capacity for all)
    steps_done: int
    timings: dict  # compile_s, run_s, chunk_s, steps_per_s (of the batch), replica_steps_per_s, atom_steps_per_s
    final_state: Any = None  # the batched jax-md state (leaves [R, ...], simulation coordinates)
    log_paths: list | None = None
    trajectory_paths: list | None = None
    image_repeats: tuple = (1, 1, 1)

    @property
    def n_replicas(self) -> int:
        return len(self.thermo)


def replica_paths(path, n_replicas: int) -> list[str]:
    """``md.csv`` → ``md_replica0.csv``, ``md_replica1.csv``, … (the CLI's per-replica files)."""
    root, ext = os.path.splitext(os.fspath(path))
    return [f"{root}_replica{k}{ext}" for k in range(n_replicas)]


# ----------------------------------------------------------------------------- set-up
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


def _replica_configs(config: MDConfig, temperatures, seeds) -> list[MDConfig]:
    """One MDConfig per replica: its temperature (ramp scaled by T_k / T) and seed."""
    t0, t1 = config.temperature_K, config.temperature_final_K
    out = []
    for k, (t, seed) in enumerate(zip(temperatures, seeds)):
        if t1 is None or t == t0:
            final = t1
        elif t0 > 0:
            final = t * t1 / t0
        else:
            raise ValueError("a temperature ramp from 0 K cannot be scaled to other replica temperatures: "
                             "give config.temperature_K > 0")
        out.append(dataclasses.replace(config, temperature_K=float(t), temperature_final_K=final, seed=int(seed)))
    return out


def _simulation_positions(system, atoms) -> np.ndarray:
    """Simulation coordinates of ``atoms`` in ``system`` (fractional for periodic cells, as build_system)."""
    if not system.periodic:
        return np.asarray(atoms.positions, np.float64)
    frac = np.linalg.solve(system.cell.T, np.asarray(atoms.positions, np.float64).T).T % 1.0
    return np.where(frac >= 1.0, 0.0, frac)


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


def _stack_neighbor_lists(lists, capacity: int = 0):
    """One batched jax-md list from R lists: idx padded (with the "no pair" index) to a common
    capacity ≥ ``capacity`` and the static fields made equal, so the pytrees stack. Padding is
    what jax-md's allocation would give at that capacity; nothing is dropped."""
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


class _ReplicaSystem(MDSystem):
    """The MDSystem with a neighbour-list update that batches well.

    jax-md's update is ``cond(an atom moved > skin/2, rebuild, keep)``; under ``vmap`` a cond
    with a batched predicate becomes a ``select`` that computes the O(N²) or cell-list rebuild
    at EVERY step for every replica. Here the batched update (a ``custom_vmap`` rule) first asks
    whether any replica needs a rebuild (with a threshold a hair below skin/2, so it never says
    no when jax-md would say yes) and only then runs the vmapped jax-md update, whose own
    per-replica select keeps the lists of the replicas that did not move: each replica's list
    is exactly the one its single run would carry."""

    def update_neighbors(self, nbrs, R, box=None):
        # NPT differentiates its energy with respect to R and the box, list update included (the
        # list is refreshed where the energy is evaluated); the list's pairs do not depend
        # differentiably on either, and custom_vmap has no derivative rule: stop the gradient here
        R = jax.lax.stop_gradient(R)
        box = () if box is None else (jax.lax.stop_gradient(box),)  # NPT: each replica's own box
        return self._gated_update(nbrs, R, *box)

    @functools.cached_property
    def _gated_update(self):
        """The gated update ``(nbrs, R[, box])``; with a box (NPT) the displacement test is
        jax-md's, in the replica's current (image-super) box."""
        single = functools.partial(MDSystem.update_neighbors, self)
        skin = float(self.skin)
        gate_sq = (0.5 * skin) ** 2 * 0.99  # Å², a hair below jax-md's (skin/2)²

        def moved(nbrs, R, *box):  # does this replica need a rebuild (jax-md's test, slightly early)?
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

    @classmethod
    def of(cls, system: MDSystem, skin: float) -> "_ReplicaSystem":
        out = cls(**{f.name: getattr(system, f.name) for f in dataclasses.fields(system)})
        out.skin = skin
        return out


def _take(tree, k: int):
    return jax.tree_util.tree_map(lambda x: x[k], tree)


class _ReplicaTargets:
    """``kT_at``/``pressure_at`` for md._make_chunk_fn with one target per replica: kT [R] eV on
    each replica's linear ramp, computed in the same order as ``MDConfig.kT_at`` (so a replica
    reproduces the single run's kT to the last bit)."""

    def __init__(self, config: MDConfig, configs: Sequence[MDConfig], dtype):
        from ase import units

        t0 = np.array([c.temperature_K for c in configs], np.float64)
        t1 = np.array([c.temperature_K if c.temperature_final_K is None else c.temperature_final_K for c in configs])
        self.config, self.kB = config, units.kB
        self.t0 = jnp.asarray(t0, dtype)  # [R] K
        self.dt = jnp.asarray(t1 - t0, dtype)  # [R] K, ramp span (differences in float64, like Python floats)

    def kT_at(self, step):
        frac = step / max(self.config.steps, 1)
        return self.kB * (self.t0 + self.dt * frac)

    def pressure_at(self, step):
        return self.config.pressure_at(step)


# ----------------------------------------------------------------------------- run
def simulate_replicas(potential, structures, config: MDConfig | None = None, *, temperatures_K=None, seeds=None,
                      n_replicas: int | None = None, log_dir=None, trajectory_dir=None, logs=None, trajectories=None,
                      progress: bool = True) -> ReplicaResult:
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
    Raises:
      ValueError: bad settings, replicas of different systems.
      ReplicaInstabilityError (an MDInstabilityError): a replica exploded.
    """
    from ase import units

    config = config or MDConfig()
    r_count = _n_replicas(structures, temperatures_K, seeds, n_replicas)
    atoms_list = ([_as_atoms(s) for s in structures] if isinstance(structures, (list, tuple))
                  else [_as_atoms(structures)] * r_count)
    for k, atoms in enumerate(atoms_list[1:], start=1):
        _check_same_system(atoms_list[0], atoms, k)
    temperatures = [config.temperature_K] * r_count if temperatures_K is None else [float(t) for t in temperatures_K]
    if not all(t >= 0 for t in temperatures):
        raise ValueError(f"temperatures_K must be >= 0, got {temperatures}")
    seeds = [config.seed + k for k in range(r_count)] if seeds is None else [int(s) for s in seeds]
    configs = _replica_configs(config, temperatures, seeds)
    log_paths = _paths(logs, log_dir, r_count, "csv", "logs")
    traj_paths = _paths(trajectories, trajectory_dir, r_count, "extxyz", "trajectories")

    system = _ReplicaSystem.of(build_system(potential, atoms_list[0], config), config.skin)
    dtype = system.dtype
    record_every = math.gcd(config.log_every, config.traj_every) if traj_paths else config.log_every
    if config.steps % record_every:
        raise ValueError(f"steps ({config.steps}) must be a multiple of log_every"
                         + (f"/traj_every (their gcd, {record_every})" if traj_paths else f" ({record_every})"))
    chunk = max(1, math.ceil(config.chunk_steps / record_every)) * record_every
    dt_ps = config.timestep_fs / 1000.0
    t_limits = [c.temperature_limit_K for c in configs]

    init, step_one, dof, box_of = _integrator(system, config)
    record_one = _make_record_fn(system, config, box_of)
    targets = _ReplicaTargets(config, configs, dtype)

    def record_with_econs(state, nbrs, kT, pressure):
        return _with_conserved_energy(system, config, record_one(state, nbrs), state, nbrs, kT, pressure)

    def record_fn(state, nbrs, k):  # batched: records [R, ...]
        step = jnp.asarray(k).astype(state.position.dtype)
        return jax.vmap(record_with_econs, in_axes=(0, 0, 0, None))(state, nbrs, targets.kT_at(step),
                                                                     targets.pressure_at(step))

    step_fn = jax.vmap(step_one, in_axes=(0, 0, 0, None))
    chunk_fn = _CompileCache(_make_chunk_fn(step_fn, record_fn, record_every, targets))

    t_setup = time.perf_counter()
    positions = jnp.asarray(np.stack([np.asarray(system.positions, np.float64) if a is atoms_list[0]
                                      else _simulation_positions(system, a) for a in atoms_list]), dtype)  # [R, N, 3]
    allocated = {}  # one allocation per distinct structure (one Atoms repeated: one allocation)
    for k, a in enumerate(atoms_list):
        if id(a) not in allocated:
            allocated[id(a)] = system.allocate(positions[k], box=system.box if config.ensemble == "npt" else None)
    nbrs = _stack_neighbor_lists([allocated[id(a)] for a in atoms_list])
    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])  # [R, 2]
    kT0 = jnp.asarray([c.kT_at(0) for c in configs], dtype)  # [R] eV
    momenta = None
    if config.initial_velocities == "atoms":
        momenta = jnp.asarray(np.stack([system.from_input_frame(a.get_momenta()) for a in atoms_list]), dtype)

    @jax.jit
    def start(keys, R, nbrs, kT0, momenta):
        """The initial states and their step-0 record (one compilation for both)."""
        state = jax.vmap(init)(keys, R, nbrs, kT0)
        if momenta is not None:
            state = state.set(momentum=momenta)
        state = cast_state(state, dtype)
        return state, record_fn(state, nbrs, jnp.asarray(0, jnp.int32))

    state, rec0 = start(keys, positions, nbrs, kT0, momenta)
    rec0 = jax.device_get(rec0)
    setup_s = time.perf_counter() - t_setup
    lengths = [chunk] * (config.steps // chunk) + ([config.steps % chunk] if config.steps % chunk else [])

    thermo = [{c: [] for c in _THERMO_COLUMNS} for _ in range(r_count)]
    log_fhs = [open(p, "w", newline="") for p in log_paths] if log_paths else []
    writers = [csv.writer(fh) for fh in log_fhs]
    for w in writers:
        w.writerow(_THERMO_COLUMNS)
    trajs = [_TrajectoryWriter(p) for p in traj_paths] if traj_paths else []

    def temperature(ekin):
        return 2.0 * float(ekin) / (dof * units.kB)

    def frame(step, rec):
        return _frame_atoms(system, rec, step, step * dt_ps, temperature(rec["ekin"]), with_forces=config.traj_forces)

    def emit(k, step, rec):
        if step % config.log_every == 0:
            nan = float("nan")
            row = (step, step * dt_ps, float(rec["epot"]), float(rec["ekin"]), float(rec["epot"]) + float(rec["ekin"]),
                   temperature(rec["ekin"]),
                   float(rec["pressure"]) * EV_PER_A3_IN_GPA if "pressure" in rec else nan,
                   float(rec["volume"]) if "volume" in rec else nan,
                   float(rec["econs"]) if "econs" in rec else nan)
            for c, val in zip(_THERMO_COLUMNS, row):
                thermo[k][c].append(val)
            if writers:
                writers[k].writerow([row[0]] + [("" if np.isnan(v) else f"{v:.10g}") for v in row[1:]])
        if trajs and step % config.traj_every == 0:
            trajs[k].write(frame(step, rec))

    def problem(k, rec) -> str | None:
        return record_problem(system, config, rec, temperature(rec["ekin"]), t_limits[k])

    def flush():
        for fh in log_fhs:
            fh.flush()
        for t in trajs:
            t.flush()

    last_good = {"step": 0, "recs": [_take(rec0, k) for k in range(r_count)]}

    def explode(k, step, reason):
        import ase.io

        flush()
        path = None
        if k is not None:
            where = os.path.dirname(os.path.abspath(traj_paths[k])) if traj_paths else os.getcwd()
            path = os.path.join(where, f"last_good_frame_replica{k}.xyz")
            try:
                ase.io.write(path, frame(last_good["step"], last_good["recs"][k]), format="extxyz")
            except OSError:
                path = None
        who = (f"replica {k} (T = {temperatures[k]:g} K, seed {seeds[k]})" if k is not None
               else f"one of the {r_count} replicas")
        raise ReplicaInstabilityError(
            f"MD of {who} became unstable at step {step} (t = {step * dt_ps:.4f} ps): {reason}. "
            + (f"Its last good frame (step {last_good['step']}) was written to {path}. " if k is not None else "")
            + f"Try a smaller timestep (now {config.timestep_fs:g} fs), check the starting structure, or add "
            f"training data near these configurations (e.g. label frames from the trajectory before step {step} "
            "and retrain).",
            replica=k, step=step, reason=reason, frame_path=path,
        )

    for k in range(r_count):
        bad = problem(k, last_good["recs"][k])
        if bad is not None:
            explode(k, 0, bad)
    for k in range(r_count):
        emit(k, 0, last_good["recs"][k])

    clock = {"t": time.perf_counter(), "t0": time.perf_counter(), "chunks": 0}

    def on_chunk(index, first_step, start_state, state, nbrs, aux):
        clock["chunks"] += 1
        recs = jax.device_get(aux)  # [n_records, R, ...]
        n_rec = recs["epot"].shape[0]
        for j in range(n_rec):
            step = first_step + (j + 1) * record_every
            rec_j = [{name: v[j, k] for name, v in recs.items()} for k in range(r_count)]
            for k in range(r_count):  # check every replica before writing any: the run stops at this record
                reason = problem(k, rec_j[k])
                if reason is not None:
                    explode(k, step, reason)
            for k in range(r_count):
                emit(k, step, rec_j[k])
            last_good["step"], last_good["recs"] = step, rec_j
        flush()
        if progress:
            now = time.perf_counter()
            done = first_step + n_rec * record_every
            if now - clock["t"] > 5.0 or done == config.steps:
                clock["t"] = now
                rate = done / max(now - clock["t0"], 1e-9)
                temps = ", ".join(f"{th['T_K'][-1]:.0f}" for th in thermo)
                print(f"[mlpjax md] step {done}/{config.steps}  T = {temps} K  ({rate:.1f} steps/s × {r_count} replicas)",
                      file=sys.stderr, flush=True)

    realloc_for = {"start": None}
    realloc_messages = []

    def reallocate(start_state, end_state, old):
        # as md.simulate: a second overflow of the same chunk whose end state exploded stops the run
        if realloc_for["start"] is start_state:
            masses = np.asarray(system.masses, np.float64)[:, None]
            for k in range(r_count):
                end_k = _take(end_state, k)
                p, x = np.asarray(end_k.momentum, np.float64), np.asarray(end_k.position)
                ekin = float(0.5 * np.sum(p**2 / masses))
                if not (np.all(np.isfinite(x)) and np.all(np.isfinite(p)) and np.isfinite(ekin)) or temperature(ekin) > t_limits[k]:
                    explode(k, last_good["step"] + chunk, "the system exploded (the neighbour list overflowed even "
                            "after reallocation)")
        realloc_for["start"] = start_state
        lists = []
        for k in range(r_count):
            s_k, e_k = _take(start_state, k), _take(end_state, k)
            lists.append(grow_neighbor_list(system, s_k.position, e_k.position, old, box=box_of(s_k), end_box=box_of(e_k)))
        return _stack_neighbor_lists(lists)

    def log_realloc(msg):
        realloc_messages.append(msg)
        if progress:
            print(f"[mlpjax md] {msg} (all {r_count} replicas)", file=sys.stderr, flush=True)

    t_run = time.perf_counter()
    try:
        # (a NaN caught by jax_debug_nans in the batched chunk cannot say which replica: None)
        run = run_guarded(
            lambda s_, nb, n, first_step: chunk_fn(s_, nb, first_step, n // record_every),
            state, nbrs, reallocate, lengths, on_chunk=on_chunk, max_retries=config.max_reallocations_per_chunk,
            log_fn=log_realloc, on_failure=lambda msg: explode(None, last_good["step"] + record_every, msg),
        )
    finally:
        flush()
        for fh in log_fhs:
            fh.close()
        for t in trajs:
            t.close()
    run_s = time.perf_counter() - t_run

    final = run.state
    final_atoms = [frame(last_good["step"], last_good["recs"][k]) for k in range(r_count)]
    masses = np.asarray(system.masses, np.float64)[:, None]
    timings = run_timings(setup_s, chunk_fn.compile_s, run_s, run, lengths, chunk, realloc_messages)
    steps_per_s = timings["steps_per_s"]  # steps of the whole batch per second
    timings.update(replica_steps_per_s=steps_per_s * r_count, atom_steps_per_s=steps_per_s * r_count * system.n_atoms)
    return ReplicaResult(
        atoms=final_atoms,
        positions=np.stack([a.positions for a in final_atoms]),
        velocities=np.stack([system.to_input_frame(np.asarray(final.momentum[k], np.float64) / masses)
                             for k in range(r_count)]),
        forces=np.stack([system.to_input_frame(final.force[k]) for k in range(r_count)]),
        thermo=[{c: np.asarray(v) for c, v in th.items()} for th in thermo],
        temperatures_K=np.asarray(temperatures, np.float64),
        seeds=seeds,
        n_neighbor_reallocations=run.n_reallocations,
        neighbor_capacity=int(run.nbrs.max_occupancy),
        steps_done=config.steps,
        timings=timings,
        final_state=final,
        log_paths=log_paths or None,
        trajectory_paths=traj_paths or None,
        image_repeats=tuple(system.repeats),
    )


def _paths(paths, directory, r_count: int, ext: str, what: str) -> list[str]:
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
    return []
