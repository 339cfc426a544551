"""The host driver: one chunk loop for R ≥ 1 runs (a single simulation is R = 1).

    from mlpjax.md import MDConfig, simulate
    result = simulate(potential, atoms, MDConfig(ensemble="nvt", temperature_K=300, steps=10_000),
                      trajectory="md.extxyz", log="md.csv")

:func:`drive` runs the compiled :mod:`~mlpjax.md.engine` chunk after chunk and owns everything
that happens on the host, once for all runs: the overflow → reallocate → rerun path
(:func:`run_chunked`), the blow-up checks and the last good frame, the thermo/trajectory writers,
restart files, progress lines and timings. :func:`simulate` (here) and
:func:`mlpjax.md.replicas.simulate_replicas` only say what the runs are.

**Blow-up.** After each chunk, a record with a non-finite energy/position/momentum/force, a
temperature above ``max(max_temperature_factor · T, max_temperature_floor_K)`` or (optionally)
two atoms closer than ``min_distance`` stops the run: the last good frame is written to
``last_good_frame.xyz`` (``last_good_frame_replica{k}.xyz`` for replica k; next to the
trajectory, else in the working directory), logs are flushed and :class:`MDInstabilityError`
(:class:`ReplicaInstabilityError` naming the replica) is raised. Every run of a record is checked
before any is written: the run stops at that record.

**Chunks and neighbour lists.** The lists are allocated once and updated every step inside the
chunk; after each chunk the host checks the overflow flag and, if set, reallocates every run's
list from the chunk's START state (one capacity for all runs, so they stack) and reruns the
chunk; a chunk computed with an overflowed list is never accepted.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import sys
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mlpjax.md.config import MDConfig, Targets
from mlpjax.md.engine import compile_stats, engine
from mlpjax.md.output import (THERMO_COLUMNS, TrajectoryWriter, format_row, frame_atoms, load_restart, read_restart,
                              temperature_K, thermo_row, write_restart)
from mlpjax.md.system import (MDSystem, as_atoms, build_system, grow_neighbor_list, needs_reallocation,
                              perpendicular_widths, stack_neighbor_lists)

__all__ = ["MDResult", "MDInstabilityError", "ReplicaInstabilityError", "NeighborListOverflowError", "ChunkedRun",
           "Run", "ReplicaResult", "run_chunked", "record_problem", "drive", "simulate"]


class MDInstabilityError(RuntimeError):
    """The simulation exploded. ``step``, ``reason`` and ``frame_path`` say when, what and
    where the last good frame was written."""

    def __init__(self, message: str, *, step: int, reason: str, frame_path: str | None):
        super().__init__(message)
        self.step, self.reason, self.frame_path = step, reason, frame_path


class ReplicaInstabilityError(MDInstabilityError):
    """One replica exploded; ``replica`` is its index (None when it cannot be told, e.g. a NaN
    raised by ``jax_debug_nans`` inside the batched chunk)."""

    def __init__(self, message: str, *, replica: int | None, step: int, reason: str, frame_path: str | None):
        super().__init__(message, step=step, reason=reason, frame_path=frame_path)
        self.replica = replica


class NeighborListOverflowError(RuntimeError):
    """The neighbour list kept overflowing after repeated reallocation."""


@dataclasses.dataclass
class MDResult:
    atoms: Any  # final ase.Atoms (positions, velocities, cell, pbc; input orientation)
    positions: np.ndarray  # [N, 3] Å, final Cartesian positions
    velocities: np.ndarray  # [N, 3] Å/ASE-time
    forces: np.ndarray  # [N, 3] eV/Å at the final positions
    thermo: dict  # step, time_ps, E_pot_eV, E_kin_eV, E_tot_eV, T_K, P_GPa, V_A3, E_cons_eV: 1-D numpy arrays
    n_neighbor_reallocations: int
    neighbor_capacity: int  # final neighbour-list capacity (pairs)
    last_good_frame: Any  # ase.Atoms: the last checked frame (the final one for a finished run)
    steps_done: int
    timings: dict  # setup_s, compile_s, run_s, chunk_s (list), steps_per_s (median over chunks after the first)
    final_state: Any = None  # the jax-md integrator state at the end (simulation coordinates)
    image_repeats: tuple = (1, 1, 1)  # multi-image path: the image supercell used for a narrow cell
    uncertainty: dict | None = None  # ensembles: see ReplicaResult.uncertainty


# ----------------------------------------------------------------------------- chunk loop
class ChunkedRun(NamedTuple):
    state: Any
    nbrs: Any
    n_reallocations: int
    chunk_times: list  # wall seconds of each accepted chunk (after synchronisation)


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
    stop: Callable[[], bool] | None = None,
) -> ChunkedRun:
    """Run chunks of ``chunk_lengths`` steps, never accepting a chunk computed with an overflowed list.

    ``step_chunk_fn(state, nbrs, n_steps[, first_step if pass_step]) -> (state, nbrs, aux)`` runs a
    chunk; on overflow ``reallocate_fn(start_state, end_state, old_nbrs)`` gives a bigger list valid
    at the chunk's start (the end state hints how much bigger) and the chunk is rerun, at most
    ``max_retries`` times (then :class:`NeighborListOverflowError`). ``on_chunk(index, first_step,
    start_state, state, nbrs, aux)`` sees each accepted chunk and may raise to stop the run;
    ``stop()`` True after a chunk ends the run there (every run has met its uncertainty stop).
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
        if stop is not None and stop():
            break
    return ChunkedRun(state, nbrs, n_realloc, times)


def record_problem(system: MDSystem, config: MDConfig, rec: dict, temperature: float, t_limit_K: float) -> str | None:
    """Why the record ``rec`` (host arrays of one run) ends the run, or None: NaN/inf energy,
    positions, momenta or forces; T above ``t_limit_K``; two atoms closer than
    ``config.min_distance``; an NPT cell too narrow for cutoff + skin (images included)."""
    if not (np.isfinite(rec["epot"]) and np.isfinite(rec["ekin"])):
        return "the energy became NaN/inf"
    for name in ("position", "momentum", "force"):
        if not np.all(np.isfinite(rec[name])):
            return f"the {name}s became NaN/inf"
    if temperature > t_limit_K:
        return f"the temperature reached {temperature:.0f} K (limit {t_limit_K:.0f} K)"
    if "min_dist" in rec and rec["min_dist"] < config.min_distance:
        return f"two atoms came within {float(rec['min_dist']):.3f} Å (min_distance {config.min_distance} Å)"
    if "box" in rec and system.periodic and config.ensemble == "npt":
        cutoff_skin = float(system.cutoff + config.skin)
        widths = perpendicular_widths(np.asarray(rec["box"], np.float64).T * np.asarray(system.repeats)[:, None])
        if cutoff_skin > 0.5 * widths.min() + 1e-9:
            return (f"the NPT cell shrank to perpendicular widths {np.array2string(widths, precision=3)} Å "
                    f"(images included): cutoff + skin = {cutoff_skin:g} Å no longer fits the minimum image")
    return None


def _steps_per_s(chunk_s: list, lengths: list, chunk: int) -> float:
    """Median over full chunks after the first (which may include compilation), else over all."""
    steady = [t / k for t, k in zip(chunk_s[1:], lengths[1:]) if k == chunk] or [t / k for t, k in zip(chunk_s, lengths)]
    return (1.0 / float(np.median(steady))) if steady else float("nan")


def _take(tree, k: int):
    return jax.tree_util.tree_map(lambda x: x[k], tree)


# ----------------------------------------------------------------------------- the driver
@dataclasses.dataclass(frozen=True)
class Run:
    """One run of :func:`drive`: its own start structure, seed, temperatures and files."""

    atoms: Any  # ase.Atoms: start positions (and momenta with initial_velocities="atoms"); same system for all runs
    config: MDConfig  # the shared settings with this run's seed, temperature_K and temperature_final_K
    log: str | None = None  # CSV thermo log path
    trajectory: str | None = None  # extxyz / .traj path
    frame_name: str = "last_good_frame.xyz"  # file name of its last good frame on a blow-up
    label: str | None = None  # "replica k (T = … K, seed s)"; None for a single simulation


@dataclasses.dataclass
class ReplicaResult:
    """The result of :func:`drive`: R runs (replicas) of one system."""

    atoms: list  # R final ase.Atoms (positions, velocities, cell, pbc; input orientation): the last checked frames
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
    # ensembles: per run {"stopped_step": step of the uncertainty stop or None, "flagged_steps": records
    # above MDConfig.max_force_std, "frames": those frames (ase.Atoms, per-atom "forces_std" array),
    # "frame_path": where the stop frame was written, "max_force_std": the largest seen (eV/Å, calibrated)}
    uncertainty: list | None = None

    @property
    def n_replicas(self) -> int:
        return len(self.thermo)


def drive(potential, runs: Sequence[Run], config: MDConfig, *, variables=None, progress: bool = True, restart=None,
          restart_out=None, restart_every: int | None = None) -> ReplicaResult:
    """Run ``runs`` (R ≥ 1 runs of one system) in one compiled engine; see the module docstring.

    Args:
      potential: a :class:`~mlpjax.potential.Potential` (its definition and variables are used).
      variables: the :class:`~mlpjax.potential.PotentialParams` to simulate with (default
        ``potential.variables``); with a leading run axis on every leaf, one parameter set per run.
      restart / restart_out / restart_every: as :func:`simulate` (all runs in one file).
    """
    r_count = len(runs)
    if variables is None:
        variables = potential.variables
    # one more axis than the architecture's own ([S], an ensemble's [M, S]): one parameter set per run
    params_batched = np.ndim(variables.reference_energies) == potential.definition.reference_energies_ndim + 1
    has_traj = any(r.trajectory is not None for r in runs)
    record_every = math.gcd(config.log_every, config.traj_every) if has_traj else config.log_every
    if config.steps % record_every:
        raise ValueError(
            f"steps ({config.steps}) must be a multiple of log_every"
            + (f"/traj_every (their gcd, {record_every})" if has_traj else f" ({record_every})"))
    chunk = max(1, math.ceil(config.chunk_steps / record_every)) * record_every
    dt_ps = config.timestep_fs / 1000.0

    # the engine of an equal system (same architecture, composition, cell, dynamics) is reused, and so is
    # that system object: its jax-md neighbour functions are static metadata of every list it allocates
    eng = engine(potential, build_system(potential, runs[0].atoms, config), config, record_every=record_every,
                 params_batched=params_batched)
    system = eng.system
    variables = eng.cast(variables)
    dof, box_of = eng.dof, eng.box_of
    t_limits = [r.config.temperature_limit_K for r in runs]
    members = system.has_members  # an ensemble: records carry the members' force deviation
    c_force = float(getattr(potential, "calibration", (1.0, 1.0, 1.0))[1]) if members else 1.0
    columns = THERMO_COLUMNS + (("F_std_max_eV_A",) if members else ())
    uncertain = [{"stopped_step": None, "flagged_steps": [], "frames": [], "frame_path": None, "max_force_std": 0.0}
                 for _ in runs] if members else None
    targets = Targets.of([r.config for r in runs], system.dtype)

    t_setup = time.perf_counter()
    n_compiles0, compile_s0 = compile_stats()
    positions = jnp.stack([system.coordinates(r.atoms) for r in runs])  # [R, N, 3] simulation coordinates
    npt_box = system.box if config.ensemble == "npt" else None
    allocated = {}  # one allocation per distinct start structure (one Atoms repeated: one allocation)
    for k, r in enumerate(runs):
        if id(r.atoms) not in allocated:
            allocated[id(r.atoms)] = system.allocate(positions[k], box=npt_box)
    nbrs = stack_neighbor_lists([allocated[id(r.atoms)] for r in runs])
    payload = load_restart(restart, system, config, r_count) if restart is not None else None  # fail before compiling
    keys = jnp.stack([jax.random.PRNGKey(r.config.seed) for r in runs])  # [R, 2]
    momenta = None
    if config.initial_velocities == "atoms":
        momenta = jnp.asarray(np.stack([system.from_input_frame(r.atoms.get_momenta()) for r in runs]), system.dtype)
    state = eng.init(variables, keys, positions, nbrs, targets, momenta)
    first = 0
    if restart is not None:
        state, nbrs, first = read_restart(restart, payload, state, nbrs)
    rec0 = jax.device_get(eng.record(variables, state, nbrs, jnp.asarray(first, jnp.int32), targets))
    setup_s = time.perf_counter() - t_setup
    remaining = config.steps - first
    if remaining % record_every:
        raise ValueError(f"the restart step {first} is not on the record grid ({record_every} steps)")
    lengths = [chunk] * (remaining // chunk) + ([remaining % chunk] if remaining % chunk else [])

    appending = restart is not None
    thermo = [{c: [] for c in columns} for _ in runs]
    log_fhs = [open(r.log, "a" if appending else "w", newline="") if r.log is not None else None for r in runs]
    writers = [csv.writer(fh) if fh is not None else None for fh in log_fhs]
    if not appending:
        for w in filter(None, writers):
            w.writerow(columns)
    trajs = [TrajectoryWriter(r.trajectory, append=appending) if r.trajectory is not None else None for r in runs]

    def frame(k, step, rec):
        atoms = frame_atoms(system, rec, step, step * dt_ps, temperature_K(rec["ekin"], dof), with_forces=config.traj_forces)
        if "force_std" in rec:
            std = c_force * np.asarray(rec["force_std"], np.float64)
            atoms.arrays["forces_std"] = std
            atoms.info["max_force_std"] = float(std.max())
        return atoms

    def emit(k, step, rec, force_frame=False):
        if uncertain is not None and uncertain[k]["stopped_step"] is not None:
            return  # the run stopped at its uncertainty threshold (it keeps stepping in the batch, unseen)
        if step % config.log_every == 0:
            row = thermo_row(step, rec, dt_ps, dof)
            if members:
                row = row + (c_force * float(np.max(rec["force_std"])),)
            for c, val in zip(columns, row):
                thermo[k][c].append(val)
            if writers[k] is not None:
                writers[k].writerow(format_row(row))
        if trajs[k] is not None and (step % config.traj_every == 0 or force_frame):
            trajs[k].write(frame(k, step, rec))

    def flush():
        for f in log_fhs + trajs:
            if f is not None:
                f.flush()

    last = {"step": first, "recs": [_take(rec0, k) for k in range(r_count)]}

    def explode(k, step, reason):
        """Flush, write run k's last good frame, raise (k None: the run cannot be told)."""
        import ase.io

        flush()
        path = None
        if k is not None:
            r = runs[k]
            where = os.path.dirname(os.path.abspath(r.trajectory)) if r.trajectory is not None else os.getcwd()
            path = os.path.join(where, r.frame_name)
            try:
                ase.io.write(path, frame(k, last["step"], last["recs"][k]), format="extxyz")
            except OSError:
                path = None
        single = r_count == 1 and runs[0].label is None
        who = "" if single else " of " + (runs[k].label if k is not None else f"one of the {r_count} replicas")
        saved = f" The last good frame (step {last['step']}) was written to {path}." if k is not None else ""
        message = (f"MD{who} became unstable at step {step} (t = {step * dt_ps:.4f} ps): {reason}.{saved} Try a "
                   f"smaller timestep (now {config.timestep_fs:g} fs), check the starting structure, or add training "
                   f"data near these configurations (e.g. label frames from the trajectory before step {step} and "
                   "retrain).")
        if single:
            raise MDInstabilityError(message, step=step, reason=reason, frame_path=path)
        raise ReplicaInstabilityError(message, replica=k, step=step, reason=reason, frame_path=path)

    def check(step, recs):
        for k in range(r_count):  # every run before any is written: the run stops at this record
            if uncertain is not None and uncertain[k]["stopped_step"] is not None:
                continue
            reason = record_problem(system, config, recs[k], temperature_K(recs[k]["ekin"], dof), t_limits[k])
            if reason is not None:
                explode(k, step, reason)

    def check_uncertainty(step, recs):
        """The MD uncertainty check: a record above max_force_std stops its run (writing the frame) or is marked."""
        if uncertain is None:
            return
        for k in range(r_count):
            u = uncertain[k]
            if u["stopped_step"] is not None:
                continue
            s = c_force * float(np.max(recs[k]["force_std"]))
            u["max_force_std"] = max(u["max_force_std"], s)
            if config.max_force_std is None or s <= config.max_force_std:
                continue
            atoms = frame(k, step, recs[k])
            atoms.info["uncertain"] = True
            u["flagged_steps"].append(int(step))
            u["frames"].append(atoms)
            if config.uncertainty_action == "stop":
                emit(k, step, recs[k], force_frame=True)  # its thermo row and trajectory frame, then silence
                u["stopped_step"] = int(step)
                r = runs[k]
                where = os.path.dirname(os.path.abspath(r.trajectory)) if r.trajectory is not None else os.getcwd()
                path = os.path.join(where, r.frame_name.replace("last_good_frame", "uncertain_frame"))
                try:
                    import ase.io

                    ase.io.write(path, atoms, format="extxyz")
                    u["frame_path"] = path
                except OSError:
                    pass
                if progress:
                    who = f" {r.label}" if r.label else ""
                    print(f"[mlpjax md]{who} stopped at step {step}: max per-atom force std {s:.3f} eV/Å > "
                          f"max_force_std {config.max_force_std:g} eV/Å (frame written to {u['frame_path']})",
                          file=sys.stderr, flush=True)

    def all_stopped():
        return uncertain is not None and all(u["stopped_step"] is not None for u in uncertain)

    check(first, last["recs"])
    check_uncertainty(first, last["recs"])
    if not appending:  # a restart does not repeat the row and frame of its starting step
        for k in range(r_count):
            emit(k, first, last["recs"][k])

    every = None if restart_every is None else max(1, math.ceil(restart_every / chunk))
    clock = {"t": time.perf_counter(), "t0": time.perf_counter(), "chunks": 0}

    def on_chunk(index, first_step, start, state, nbrs, aux):
        clock["chunks"] += 1
        recs = jax.device_get(aux)  # [n_records, R, ...]
        n_rec = recs["epot"].shape[0]
        for j in range(n_rec):
            step = first + first_step + (j + 1) * record_every
            rec_j = [{name: v[j, k] for name, v in recs.items()} for k in range(r_count)]
            check(step, rec_j)
            check_uncertainty(step, rec_j)
            for k in range(r_count):
                emit(k, step, rec_j[k])
            if uncertain is not None:  # a stopped run keeps the record it stopped at
                rec_j = [last["recs"][k] if uncertain[k]["stopped_step"] is not None and uncertain[k]["stopped_step"] < step
                         else rec_j[k] for k in range(r_count)]
            last["step"], last["recs"] = step, rec_j
        flush()
        done = first + first_step + n_rec * record_every
        if restart_out is not None and every is not None and (index + 1) % every == 0:
            write_restart(restart_out, system, config, state, nbrs, done)
        if progress:
            now = time.perf_counter()
            if now - clock["t"] > 5.0 or done == config.steps:
                clock["t"] = now
                rate = (done - first) / max(now - clock["t0"], 1e-9)
                if r_count == 1:
                    th = thermo[0]
                    extra = (f"  P = {th['P_GPa'][-1]:.3f} GPa  V = {th['V_A3'][-1]:.1f} Å³"
                             if config.ensemble == "npt" and th["P_GPa"] else "")
                    line = f"T = {th['T_K'][-1]:.1f} K  E_tot = {th['E_tot_eV'][-1]:.6f} eV{extra}  ({rate:.1f} steps/s)"
                else:
                    temps = ", ".join(f"{th['T_K'][-1]:.0f}" for th in thermo)
                    line = f"T = {temps} K  ({rate:.1f} steps/s × {r_count} replicas)"
                print(f"[mlpjax md] step {done}/{config.steps}  {line}", file=sys.stderr, flush=True)

    realloc_for = {"start": None}
    realloc_messages = []

    def reallocate(start, end, old):
        # A list that overflowed can itself cause a blow-up, so the chunk is rerun once with a
        # bigger list; if it overflows again while a run's end state has exploded, stop instead of
        # growing the list without bound.
        if realloc_for["start"] is start:
            masses = np.asarray(system.masses, np.float64)[None, :, None]
            ekin = 0.5 * np.sum(np.asarray(end.momentum, np.float64) ** 2 / masses, axis=(1, 2))  # [R] eV
            for k in range(r_count):
                if uncertain is not None and uncertain[k]["stopped_step"] is not None:
                    continue
                rec = {"epot": 0.0, "ekin": ekin[k], "position": end.position[k], "momentum": end.momentum[k],
                       "force": end.force[k]}
                if record_problem(system, config, rec, temperature_K(ekin[k], dof), t_limits[k]) is not None:
                    explode(k, last["step"] + lengths[min(clock["chunks"], len(lengths) - 1)],
                            "the system exploded (the neighbour list overflowed even after reallocation)")
        realloc_for["start"] = start
        lists = []
        for k in range(r_count):
            s_k, e_k = _take(start, k), _take(end, k)
            lists.append(grow_neighbor_list(system, s_k.position, e_k.position, old,
                                            box=box_of(s_k), end_box=box_of(e_k)))
        return stack_neighbor_lists(lists)

    def log_realloc(msg):
        realloc_messages.append(msg)
        if progress:
            tail = f" (all {r_count} replicas)" if r_count > 1 else ""
            print(f"[mlpjax md] {msg}{tail}", file=sys.stderr, flush=True)

    def chunk_fn(s, nb, n, first_step):
        s, nb, recs, _ = eng.chunk(variables, s, nb, first + first_step, n_steps=n, targets=targets)
        return s, nb, recs

    t_run = time.perf_counter()
    try:
        if lengths:
            try:
                run = run_chunked(chunk_fn, state, nbrs, reallocate, lengths, on_chunk=on_chunk,
                                  max_retries=config.max_reallocations_per_chunk, log_fn=log_realloc, pass_step=True,
                                  stop=all_stopped)
            except NeighborListOverflowError as err:
                explode(0 if r_count == 1 else None, last["step"] + record_every, f"neighbour list overflow ({err})")
            except FloatingPointError as err:  # jax_debug_nans turns a NaN into this exception
                explode(0 if r_count == 1 else None, last["step"] + record_every,
                        f"a NaN appeared (jax_debug_nans: {str(err)[:200]})")
        else:
            run = ChunkedRun(state, nbrs, 0, [])
        if restart_out is not None:
            write_restart(restart_out, system, config, run.state, run.nbrs, config.steps)
    finally:
        flush()
        for f in log_fhs + trajs:
            if f is not None:
                f.close()
    run_s = time.perf_counter() - t_run
    n_compiles, compile_s = compile_stats()
    timings = {"setup_s": setup_s, "compile_s": compile_s - compile_s0, "run_s": run_s, "chunk_s": list(run.chunk_times),
               "chunk_steps": chunk, "steps_per_s": _steps_per_s(list(run.chunk_times), lengths, chunk),
               "reallocation_log": realloc_messages,
               "compilations": n_compiles - n_compiles0}  # 0 when an earlier run of this architecture compiled the engine
    def end_step(k):
        stopped = uncertain[k]["stopped_step"] if uncertain is not None else None
        return last["step"] if stopped is None else stopped

    last_good = [frame(k, end_step(k), last["recs"][k]) for k in range(r_count)]
    timings.update(replica_steps_per_s=timings["steps_per_s"] * r_count,
                   atom_steps_per_s=timings["steps_per_s"] * r_count * system.n_atoms)
    masses = np.asarray(system.masses, np.float64)[None, :, None]
    return ReplicaResult(
        atoms=last_good, positions=np.stack([a.positions for a in last_good]),
        velocities=system.to_input_frame(np.asarray(run.state.momentum, np.float64) / masses),
        forces=system.to_input_frame(run.state.force), thermo=[{c: np.asarray(v) for c, v in th.items()} for th in thermo],
        temperatures_K=np.array([r.config.temperature_K for r in runs], np.float64), seeds=[r.config.seed for r in runs],
        n_neighbor_reallocations=run.n_reallocations, neighbor_capacity=int(run.nbrs.max_occupancy),
        steps_done=config.steps, timings=timings, final_state=run.state,
        log_paths=[r.log for r in runs if r.log is not None] or None,
        trajectory_paths=[r.trajectory for r in runs if r.trajectory is not None] or None,
        image_repeats=tuple(system.repeats), uncertainty=uncertain)


def simulate(potential, atoms_or_configuration, config: MDConfig | None = None, *, trajectory=None, log=None,
             progress: bool = True, restart=None, restart_out=None, restart_every: int | None = None,
             variables=None) -> MDResult:
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
      variables: simulate with these :class:`~mlpjax.potential.PotentialParams` instead of
        ``potential.variables`` (same architecture; nothing is recompiled).
    Raises:
      ValueError: bad settings, a cell too small with ``multi_image=False``, unknown elements,
        a restart file of another run; mlpjax.files.CorruptFileError for a damaged restart file.
      MDInstabilityError: the run exploded (last good frame written, logs flushed).
    """
    config = config or MDConfig()
    atoms = as_atoms(atoms_or_configuration)
    run = Run(atoms=atoms, config=config, log=None if log is None else os.fspath(log),
              trajectory=None if trajectory is None else os.fspath(trajectory))
    out = drive(potential, [run], config, variables=variables, progress=progress, restart=restart,
                restart_out=restart_out, restart_every=restart_every)
    return MDResult(atoms=out.atoms[0], positions=out.positions[0], velocities=out.velocities[0], forces=out.forces[0],
                    thermo=out.thermo[0], n_neighbor_reallocations=out.n_neighbor_reallocations,
                    neighbor_capacity=out.neighbor_capacity, last_good_frame=out.atoms[0],
                    steps_done=out.steps_done if not (out.uncertainty and out.uncertainty[0]["stopped_step"] is not None)
                    else out.uncertainty[0]["stopped_step"],
                    timings=out.timings, final_state=_take(out.final_state, 0), image_repeats=out.image_repeats,
                    uncertainty=out.uncertainty[0] if out.uncertainty else None)
