"""The MD engine: pure, jitted ``init``/``record``/``chunk`` over (parameters, state), compiled once.

    eng = md.engine(potential.definition, system, config)
    state = eng.init(variables, keys, R, nbrs, targets)                 # leaves [R_runs, ...]
    state, nbrs, records, overflow = eng.chunk(variables, state, nbrs, first_step, n_steps, targets)

``variables`` (:class:`~mlpjax.potential.PotentialParams`: network parameters + fitted
E0/shift/scale) is a **traced argument**: another potential of the same architecture (retrained,
an ensemble member, loaded again) runs through the same executables, and ``jax.grad`` of a
function of the records differentiates through the trajectory. ``params_batched=True``: every
leaf carries a leading run axis (one parameter set per run, ensembles); else runs share one set.

The engine always maps (``jax.vmap``) over R ≥ 1 independent runs; a single simulation is R = 1.
State leaves are ``[R, ...]`` (positions ``[R, N, 3]`` simulation coordinates, momenta amu·Å/
ASE-time, forces eV/Å, Langevin keys ``[R, 2]``, chains ``[R, chain_length]``); list ``idx``
``[R, 2, capacity]``; ``targets`` (:class:`~mlpjax.md.config.Targets`) are per-run temperatures,
traced too. ``chunk`` runs ``n_steps`` (static, a multiple of ``record_every``): ``lax.scan``
over records, ``fori_loop`` between them. Records ``[n_records, R, ...]``: ``epot``, ``ekin``
(eV), ``position``, ``momentum``, ``force``; ensembles: ``force_std`` [R, N] eV/Å (the members'
per-atom force deviation, uncalibrated, computed inside the chunk at every record); periodic: ``volume`` (Å³), ``pressure`` (eV/Å³,
virial from the box derivative + kinetic term, jax_md.quantity.pressure), ``box``; ``econs`` (eV,
Nosé–Hoover extended energy); ``min_dist`` (Å, with ``config.min_distance``). ``overflow``: some
run's list overflowed; the host must reallocate from the chunk's START and rerun it
(mlpjax.md.driver.run_chunked).

:func:`engine` is a :func:`mlpjax.cache.compiled` factory keyed by static settings only: the
system's identity (architecture, composition, masses, cell, precision, skin; not positions), the
dynamics (:func:`~mlpjax.md.config.dynamics_settings`), ``record_every``, ``params_batched``. No
parameter is hashed. :func:`compile_stats` counts XLA compilations (timings; tests that check
nothing is recompiled).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from mlpjax.cache import compiled
from mlpjax.md.config import MDConfig, dynamics_settings
from mlpjax.md.integrators import box_of, conserved_energy, degrees_of_freedom, integrator
from mlpjax.md.system import MDSystem
from mlpjax.potential import cast_floats

__all__ = ["Engine", "engine", "compile_stats"]


class Engine(NamedTuple):
    """The compiled parts of a simulation (see the module docstring)."""

    system: MDSystem  # the system it was built for (its ``positions``: that structure's)
    config: MDConfig  # the dynamics settings it was built for (dynamics_settings(config))
    record_every: int  # steps between records
    dof: int  # degrees of freedom of one run, for T = 2 E_kin / (dof k_B)
    params_batched: bool  # variables carry a leading run axis
    init: Callable  # jit (variables, keys [R, 2], R [R, N, 3], nbrs, targets, momenta [R, N, 3] | None) -> state
    record: Callable  # jit (variables, state, nbrs, step, targets) -> records [R, ...]
    chunk: Callable  # jit (variables, state, nbrs, first_step, n_steps (static), targets) -> (state, nbrs, records, overflow)
    box_of: Callable  # one run's state -> its current box (NPT) or None

    def cast(self, variables):
        """``variables`` with every floating leaf in the simulation's precision."""
        return cast_floats(variables, self.system.dtype)


def engine(potential_def, system: MDSystem, config: MDConfig, *, record_every: int | None = None,
           params_batched: bool = False) -> Engine:
    """The (cached) engine of ``potential_def`` (a PotentialDef, or a Potential: its definition)
    on ``system`` with ``config``'s dynamics; ``record_every`` defaults to ``config.log_every``."""
    definition = getattr(potential_def, "definition", potential_def)
    if definition != system.definition:
        raise ValueError("the system was built for another potential architecture than the engine's")
    record_every = int(record_every or config.log_every)
    return _build(system, dynamics_settings(config), record_every, bool(params_batched),
                  bool(jax.config.jax_enable_x64))


@compiled(maxsize=8)
def _build(system: MDSystem, config: MDConfig, record_every: int, params_batched: bool, x64: bool) -> Engine:
    p_axis = 0 if params_batched else None

    def bound(variables):
        """The run's integrator and energy with ``variables`` bound (called while tracing)."""
        energy = functools.partial(system.energy, variables)
        force = functools.partial(system.force, variables)
        return integrator(system, config, energy, force), energy

    def record_one(variables, state, nbrs, kT, pressure):
        from jax_md import quantity

        integ, energy = bound(variables)
        box = integ.box_of(state)
        kw = {} if box is None else {"box": box}
        ekin = 0.5 * jnp.sum(state.momentum**2 / system.masses[:, None])
        out = {
            "epot": energy(state.position, neighbor=nbrs, **kw),
            "ekin": ekin,
            "position": state.position,
            "momentum": state.momentum,
            "force": state.force,
        }
        if system.periodic:
            b = system.box if box is None else box
            out["volume"] = jnp.abs(jnp.linalg.det(b))
            out["pressure"] = quantity.pressure(energy, state.position, b, ekin, neighbor=nbrs)
            out["box"] = b
        if config.min_distance is not None:
            out["min_dist"] = _min_distance(system, state.position, nbrs, box)
        if system.has_members:  # an ensemble: per-atom model deviation sqrt(sum_c var_m F_ic), eV/Å
            fm = system.member_forces(variables, state.position, neighbor=nbrs, **kw)
            out["force_std"] = jnp.sqrt(jnp.sum(jnp.var(fm, axis=0), axis=-1))
        econs = conserved_energy(config, energy, state, nbrs, kT, pressure)
        if econs is not None:
            out["econs"] = econs
        return out

    def record(variables, state, nbrs, step, targets):
        k = jnp.asarray(step).astype(state.position.dtype)  # ramps in the simulation's precision
        kT = targets.kT_at(config, k)
        return jax.vmap(jax.checkpoint(record_one, prevent_cse=False), in_axes=(p_axis, 0, 0, 0, None))(
            variables, state, nbrs, kT, config.pressure_at(k))

    def init(variables, keys, R, nbrs, targets, momenta=None):
        def one(v, key, r, nb, kT):
            return bound(v)[0].init(key, r, nb, kT)

        state = jax.vmap(one, in_axes=(p_axis, 0, 0, 0, 0))(variables, keys, R, nbrs, targets.kT_at(config, 0.0))
        if momenta is not None:
            state = state.set(momentum=momenta)
        return cast_floats(state, system.dtype)

    def step_one(variables, state, nbrs, kT, pressure):
        return bound(variables)[0].step(state, nbrs, kT, pressure)

    # jax.checkpoint: under reverse-mode AD (a gradient through the trajectory) a step's intermediates
    # are recomputed in the backward pass instead of stored, so memory grows with steps × state, not
    # steps × activations; plain runs are unaffected (prevent_cse=False: no barrier needed inside loops)
    step_all = jax.vmap(jax.checkpoint(step_one, prevent_cse=False), in_axes=(p_axis, 0, 0, 0, None))

    def chunk(variables, state, nbrs, first_step, n_steps, targets):
        if n_steps % record_every:
            raise ValueError(f"n_steps ({n_steps}) must be a multiple of record_every ({record_every})")

        def step(i, carry):
            state, nbrs, k = carry
            k = k + 1
            kf = k.astype(state.position.dtype)
            new, nbrs = step_all(variables, state, nbrs, targets.kT_at(config, kf), config.pressure_at(kf))
            # a run whose list overflowed (flags are sticky) keeps its last good state: the chunk is
            # rerun with a bigger list anyway, and the driver judges "exploded or not" by that state,
            # not by steps integrated with dropped pairs
            bad = nbrs.did_buffer_overflow | nbrs.cell_size_too_small  # [R]
            state = jax.tree_util.tree_map(
                lambda n, o: jnp.where(bad.reshape(bad.shape + (1,) * (jnp.ndim(n) - 1)), o, n), new, state)
            return state, nbrs, k

        def between_records(carry, _):
            carry = jax.lax.fori_loop(0, record_every, step, carry)
            state, nbrs, k = carry
            return carry, record(variables, state, nbrs, k, targets)

        first = jnp.asarray(first_step, jnp.int32)
        (state, nbrs, _), records = jax.lax.scan(between_records, (state, nbrs, first), None,
                                                 length=n_steps // record_every)
        overflow = jnp.any(nbrs.did_buffer_overflow) | jnp.any(nbrs.cell_size_too_small)
        return state, nbrs, records, overflow

    return Engine(system=system, config=config, record_every=record_every, dof=degrees_of_freedom(system, config),
                  params_batched=params_batched, init=jax.jit(init), record=jax.jit(record),
                  chunk=jax.jit(chunk, static_argnames="n_steps"), box_of=box_of(config))


def _min_distance(system: MDSystem, R, nbrs, box):
    """Å, the shortest listed pair distance (images included)."""
    n = system.n_atoms * system.n_copies
    recv, send = nbrs.idx[0], nbrs.idx[1]
    mask = recv < n
    pos = system.expand(R)
    dkw = {} if box is None else {"box": system.super_box(box)}
    vec = jax.vmap(functools.partial(system.nbr_displacement_fn, **dkw))(
        pos[jnp.where(mask, send, 0)], pos[jnp.where(mask, recv, 0)])
    r = jnp.sqrt(jnp.sum(vec**2, axis=-1) + jnp.where(mask, 0.0, 1.0))
    return jnp.min(jnp.where(mask, r, jnp.inf))


# ----------------------------------------------------------------------------- compile accounting
_COMPILES = {"count": 0, "seconds": 0.0}


def _on_duration(event: str, duration: float, **kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES["count"] += 1
        _COMPILES["seconds"] += float(duration)


jax.monitoring.register_event_duration_secs_listener(_on_duration)


def compile_stats() -> tuple[int, float]:
    """(number of XLA backend compilations, their total seconds) in this process so far."""
    return _COMPILES["count"], _COMPILES["seconds"]
