"""Backpropagation through MD: observables of a simulated trajectory as differentiable functions
of the potential's parameters and of the initial state.

    sim = diffsim.trajectory(potential, atoms, MDConfig(ensemble="nvt", temperature_K=1400, timestep_fs=2),
                             steps=1000, record_every=10, chunk_steps=100, replicas=4)
    start = sim.start(potential.variables, seed=0)              # state + neighbour lists (host)
    def observable(records):                                    # records: [T, R, ...] (see mlpjax.md.engine)
        return diffsim.mean_potential_energy(records, sim.system.n_atoms)
    value, grads = sim.value_and_grad(observable, potential.variables, start)   # grads: PotentialParams

**What is differentiated.** The run is the MD engine's own compiled chunk
(:func:`mlpjax.md.engine`; the same integrators, thermostats and neighbour-list updates as
``mlpjax md``), scanned ``steps / chunk_steps`` times inside one ``jax.jit``; the observable is a
function of the records (every ``record_every`` steps: ``epot``, ``ekin``, ``position``,
``momentum``, ``force``, periodic ``pressure``/``volume``). ``jax.grad`` of it is exact
reverse-mode AD through every step: through the forces (hence second derivatives of the model),
the thermostat (Langevin noise is a fixed function of the seed, so the gradient is that of this
noise realisation), and the initial state (:meth:`DiffTrajectory.value_and_grad` with
``wrt="state"``; for periodic cells the positions are fractional, but, as everywhere in jax-md's
``periodic_general`` space, their gradient is the Cartesian one: d value / d r [per Å], in the
simulation frame — the derivative with respect to the fractional coordinate s is cell · that).

**Memory.** Each engine step is rematerialised (``jax.checkpoint`` in the engine), and with
``checkpoint=True`` (default) so is each chunk: the backward pass keeps the state at chunk
boundaries and recomputes one chunk at a time, so memory grows as
(steps / chunk_steps + chunk_steps) × state instead of steps × (state + activations); with
chunk_steps ≈ √steps a 10,000-step run of a few hundred atoms stores ~200 states.
``checkpoint=False`` stores every step's state (same gradient, more memory; the tests compare them).

**Long horizons.** The exact gradient of a chaotic trajectory grows exponentially with the
horizon (the Lyapunov instability of MD: nearby trajectories separate, and so do their tangents),
so for long runs it is dominated by a few exploding terms. ``truncate_every=K`` cuts the gradient
every K chunks (truncated backpropagation through time: the state entering each window of K chunks
is ``stop_gradient``-ed), which bounds the growth at the price of a bias; clip the gradient in the
optimiser (``optax.clip_by_global_norm``, as :mod:`mlpjax.diffsim.fit` does). The growth is
measured by :func:`gradient_norm_vs_horizon` (``benchmarks/diffsim_cost.py``). For time-independent
observables of an equilibrium ensemble, reweighting (:mod:`mlpjax.diffsim.reweight`) is the cheap,
bounded alternative.

**Neighbour lists.** The lists are jax-md lists updated inside every step (a rebuild when an atom
moved skin/2); their pair indices carry no gradient (exact: the energy is smooth at the cutoff), so
rebuilds inside the differentiated run neither break nor zero the gradient. The overflow flag of
the run is returned with the value; :meth:`DiffTrajectory.value_and_grad` reallocates a bigger
list from the start state and recomputes when it is set (at most ``max_reallocations`` times, then
:class:`mlpjax.md.NeighborListOverflowError`), so a value or gradient from a truncated list is
never returned.

Parameters are data: ``variables`` (:class:`~mlpjax.potential.PotentialParams`) is a traced
argument, so one compiled program serves every parameter set of the architecture (a fit's every
step; another trained model).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mlpjax.cache import compiled
from mlpjax.md.config import MDConfig, Targets
from mlpjax.md.engine import Engine, engine
from mlpjax.md.system import MDSystem, as_atoms, build_system, grow_neighbor_list, stack_neighbor_lists

__all__ = ["DiffTrajectory", "Start", "trajectory", "gradient_norm_vs_horizon"]


class Start(NamedTuple):
    """Where a differentiable run starts: the engine state and lists of its R replicas."""

    state: Any  # engine state, leaves [R, ...] (positions simulation coordinates, momenta amu·Å/ASE-time)
    nbrs: Any  # jax-md neighbour lists [R, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class DiffTrajectory:
    """A differentiable MD run of ``steps`` steps (see the module docstring). Build with :func:`trajectory`."""

    system: MDSystem
    engine: Engine
    config: MDConfig
    steps: int  # MD steps
    chunk_steps: int  # steps per (checkpointed) chunk; a multiple of record_every
    replicas: int  # R independent runs (own seeds), averaged by the observables
    checkpoint: bool
    truncate_every: int | None  # chunks per gradient window (None: the exact gradient)
    max_reallocations: int = 5
    _compiled: dict = dataclasses.field(default_factory=dict, repr=False)  # jitted value-and-grad per observable
    stats: dict = dataclasses.field(default_factory=lambda: {"runs": 0, "reallocations": 0}, repr=False)  # host counters

    @property
    def record_every(self) -> int:
        return self.engine.record_every

    @property
    def n_chunks(self) -> int:
        return self.steps // self.chunk_steps

    @property
    def n_records(self) -> int:
        return self.steps // self.record_every

    # ---------------------------------------------------------------- host side
    def start(self, variables, *, seed: int = 0, positions=None, momenta=None, capacity: int = 0) -> Start:
        """The start of the run: the system's positions (or ``positions`` [R, N, 3] / [N, 3]
        simulation coordinates), Maxwell–Boltzmann momenta at ``config.temperature_K`` from
        seeds ``seed, seed+1, ...`` (or ``momenta`` [R, N, 3] / [N, 3] amu·Å/ASE-time; [N, 3]
        arrays are shared by every replica), lists allocated with ``capacity`` extra pairs."""
        variables = self.engine.cast(variables)
        R = self.system.positions if positions is None else jnp.asarray(positions, self.system.dtype)
        if R.ndim == 2:
            R = jnp.broadcast_to(R, (self.replicas,) + R.shape)
        if momenta is not None:
            momenta = jnp.asarray(momenta, self.system.dtype)
            if momenta.ndim == 2:  # one set for every replica, as positions (the engine's init maps over [R, ...])
                momenta = jnp.broadcast_to(momenta, (self.replicas,) + momenta.shape)
        box = self.system.box if self.config.ensemble == "npt" else None
        nbrs = stack_neighbor_lists([self.system.allocate(r, box=box) for r in R], capacity=capacity)
        keys = jnp.stack([jax.random.PRNGKey(seed + k) for k in range(self.replicas)])
        targets = self._targets()
        state = self.engine.init(variables, keys, R, nbrs, targets, momenta)
        return Start(state, nbrs)

    def _targets(self) -> Targets:
        return Targets.of([self.config] * self.replicas, self.system.dtype)

    # ---------------------------------------------------------------- the pure run
    def run(self, variables, start: Start):
        """(records ``[n_records, R, ...]``, final Start, overflow flag) — pure and jit-able;
        differentiable with respect to ``variables`` and ``start.state``."""
        return _run_fn(self)(variables, start, self._targets())

    def observable(self, fn: Callable, variables, start: Start):
        """(fn(records), overflow): the pure function :meth:`value_and_grad` differentiates."""
        records, _, overflow = self.run(variables, start)
        return fn(records), overflow

    def _recompute_lists(self, start: Start, end_state, old_nbrs) -> Start:
        """A bigger list at the start positions, sized for the start and the end of the run."""
        box = self.system.box if self.config.ensemble == "npt" else None
        lists = []
        for k in range(self.replicas):
            one = jax.tree_util.tree_map(lambda x: x[k], old_nbrs)
            lists.append(grow_neighbor_list(self.system, start.state.position[k], np.asarray(end_state.position[k]), one,
                                            box=box))
        return Start(start.state, stack_neighbor_lists(lists))

    def value_and_grad(self, fn: Callable, variables, start: Start, *, wrt: str = "params", has_aux: bool = False):
        """(fn(records), its gradient) with respect to ``variables`` (``wrt="params"``, a
        :class:`PotentialParams` of gradients), the start state (``"state"``) or both (``"both"``:
        a pair). Recomputes with bigger lists after an overflow (module docstring).
        ``has_aux``: fn returns (scalar, aux); the value is then (scalar, aux)."""
        argnums = {"params": 0, "state": 1, "both": (0, 1)}[wrt]
        variables = self.engine.cast(variables)
        run, targets = _run_fn(self), self._targets()

        def f(v, state, nbrs, targets):
            records, end, overflow = run(v, Start(state, nbrs), targets)
            out = fn(records)
            value, aux = out if has_aux else (out, None)
            return value, (aux, overflow, end.state)

        key = ("vg", fn, argnums, has_aux)
        if key not in self._compiled:
            self._compiled[key] = jax.jit(jax.value_and_grad(f, argnums=argnums, has_aux=True))
        vg = self._compiled[key]

        def attempt(start):
            (value, (aux, overflow, end_state)), grads = vg(variables, start.state, start.nbrs, targets)
            return (((value, aux) if has_aux else value), grads), overflow, end_state

        return self._without_overflow(attempt, start)

    def records(self, variables, start: Start):
        """(records ``[n_records, R, ...]``, the end Start) of a forward run without a gradient;
        reallocates and reruns after an overflow as :meth:`value_and_grad`."""
        variables = self.engine.cast(variables)

        def attempt(start):
            records, end, overflow = self.run(variables, start)
            return (records, end), overflow, end.state

        return self._without_overflow(attempt, start)

    def _without_overflow(self, attempt: Callable, start: Start):
        """``attempt(start) -> (result, overflow, end_state)`` until no list overflowed: after an
        overflow the lists are reallocated from the start (sized for start and end) and the run
        recomputed, at most ``max_reallocations`` times (then NeighborListOverflowError)."""
        for k in range(self.max_reallocations + 1):
            result, overflow, end_state = attempt(start)
            self.stats["runs"] += 1
            if not bool(overflow):
                return result
            if k < self.max_reallocations:
                start = self._recompute_lists(start, end_state, start.nbrs)
                self.stats["reallocations"] += 1
        from mlpjax.md.driver import NeighborListOverflowError

        raise NeighborListOverflowError(
            f"neighbour list still overflowing after {self.max_reallocations} reallocations in a {self.steps}-step "
            "differentiable run: the system is probably collapsing; try a smaller timestep or a larger "
            "capacity_multiplier")

    def value(self, fn: Callable, variables, start: Start):
        """fn(records) without a gradient (overflow handled as in :meth:`value_and_grad`)."""
        return fn(self.records(variables, start)[0])


def _run_fn(sim: DiffTrajectory):
    """The jitted pure run of ``sim``: shared by every DiffTrajectory of the same engine, length,
    chunking, checkpointing and truncation (replica count and parameters are argument shapes/values)."""
    return _run_factory(sim.engine, sim.steps, sim.chunk_steps, sim.checkpoint, sim.truncate_every)


@compiled(maxsize=8)
def _run_factory(eng: Engine, steps: int, chunk_steps: int, checkpoint: bool, truncate_every: int | None):
    n_chunks = steps // chunk_steps
    window = truncate_every or n_chunks

    def one_chunk(variables, state, nbrs, first, targets):
        return eng.chunk(variables, state, nbrs, first, chunk_steps, targets)

    if checkpoint:
        one_chunk = jax.checkpoint(one_chunk, prevent_cse=False)

    def run(variables, start: Start, targets):
        def chunk_body(carry, i):
            state, nbrs, overflow = carry
            state, nbrs, records, ovf = one_chunk(variables, state, nbrs, i * chunk_steps, targets)
            return (state, nbrs, overflow | ovf), records

        def window_body(carry, w):
            state, nbrs, overflow = carry
            if truncate_every is not None:
                state = jax.lax.stop_gradient(state)
            idx = w * window + jnp.arange(window)
            return jax.lax.scan(chunk_body, (state, nbrs, overflow), idx)

        init = (start.state, start.nbrs, jnp.zeros((), bool))
        (state, nbrs, overflow), records = jax.lax.scan(window_body, init, jnp.arange(n_chunks // window))
        records = jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[3:]), records)  # [n_records, R, ...]
        return records, Start(state, nbrs), overflow

    return jax.jit(run)


def trajectory(potential, structure, config: MDConfig, *, steps: int | None = None, record_every: int = 10,
               chunk_steps: int = 100, replicas: int = 1, checkpoint: bool = True, truncate_every: int | None = None,
               max_reallocations: int = 5) -> DiffTrajectory:
    """A :class:`DiffTrajectory` of ``potential`` (a Potential or PotentialDef) from ``structure``
    (ase.Atoms, Configuration or file) with ``config``'s dynamics (any ensemble of ``mlpjax md``).

    ``steps`` (default ``config.steps``) must be a multiple of ``chunk_steps``, and ``chunk_steps``
    of ``record_every``; ``truncate_every`` (chunks per gradient window) must divide the number of
    chunks. Multi-image cells (narrower than twice cutoff + skin) are supported as in ``mlpjax md``.
    """
    steps = int(config.steps if steps is None else steps)
    if steps < 1 or chunk_steps < 1 or record_every < 1:
        raise ValueError(f"steps ({steps}), chunk_steps ({chunk_steps}) and record_every ({record_every}) must be >= 1")
    if chunk_steps % record_every:
        raise ValueError(f"chunk_steps ({chunk_steps}) must be a multiple of record_every ({record_every})")
    if steps % chunk_steps:
        raise ValueError(f"steps ({steps}) must be a multiple of chunk_steps ({chunk_steps})")
    n_chunks = steps // chunk_steps
    if truncate_every is not None and (truncate_every < 1 or n_chunks % truncate_every):
        raise ValueError(f"truncate_every ({truncate_every}) must divide the number of chunks ({n_chunks})")
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    config = config.replace(steps=steps)
    system = build_system(potential, as_atoms(structure), config)
    eng = engine(potential, system, config, record_every=record_every)
    return DiffTrajectory(system=eng.system, engine=eng, config=config, steps=steps, chunk_steps=int(chunk_steps),
                          replicas=int(replicas), checkpoint=bool(checkpoint), truncate_every=truncate_every,
                          max_reallocations=int(max_reallocations))


def gradient_norm_vs_horizon(potential, structure, config: MDConfig, fn_of_records: Callable, horizons, *,
                             record_every: int = 10, chunk_steps: int | None = None, seed: int = 0, variables=None,
                             truncate_every: int | None = None) -> list[dict]:
    """The global norm of d fn / d params for runs of each length in ``horizons`` (steps), from the
    same start: the measurement of the exact gradient's growth with the horizon. Returns one dict
    per horizon (steps, value, grad_norm, seconds)."""
    import time

    variables = potential.variables if variables is None else variables
    out = []
    for h in horizons:
        if h % record_every:
            raise ValueError(f"horizon {h} is not a multiple of record_every ({record_every})")
        cs = chunk_steps or _sqrt_chunk(int(h), record_every)
        sim = trajectory(potential, structure, config, steps=h, record_every=record_every, chunk_steps=cs,
                         truncate_every=truncate_every)  # a window that does not divide the run is an error
        start = sim.start(variables, seed=seed)
        t0 = time.perf_counter()
        value, grads = sim.value_and_grad(fn_of_records, variables, start)
        norm = float(jnp.sqrt(sum(jnp.sum(jnp.asarray(g, jnp.float64) ** 2) for g in jax.tree_util.tree_leaves(grads.params))))
        out.append({"steps": int(h), "value": float(value), "grad_norm": norm, "seconds": time.perf_counter() - t0})
    return out


def _sqrt_chunk(steps: int, record_every: int) -> int:
    """The largest multiple of ``record_every`` dividing ``steps`` and ≤ max(√steps, record_every):
    chunks of ≈ √steps balance the stored chunk boundaries against one chunk's steps."""
    best = record_every
    for c in range(record_every, steps + 1, record_every):
        if c > max(math.sqrt(steps), record_every):
            break
        if steps % c == 0:
            best = c
    return best
