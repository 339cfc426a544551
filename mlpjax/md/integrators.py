"""Integrators: jax-md's states and steps, with the neighbour list refreshed where forces are taken.

:func:`integrator` builds ``init(key, R, nbrs, kT)`` and ``step(state, nbrs, kT, pressure)`` for
ONE run from energy/force functions that carry the parameters (bound by the engine while tracing,
so parameters stay traced arguments); kT (eV) and pressure (eV/Å³) are per-step arguments (ramps).
States and initialisation are jax-md's (Maxwell–Boltzmann momenta, total momentum removed). NVE
and Langevin NVT are jax-md's primitives in jax-md's order (velocity Verlet; BAOAB) with the list
updated at the new positions *before* the force there is taken; Nosé–Hoover NVT is jax-md's
``apply_fn`` and NPT jax-md's splitting with a corrected position update (:func:`npt_mtk_apply`),
each with a force/energy function that refreshes the list where it is evaluated. Forces never use
a list referenced more than skin/2 away (jax-md's usual ``apply_fn`` then ``nbrs.update`` is one
step stale). Degrees of freedom for T = 2 E_kin / (n_dof k_B): 3N − 3 for NVE (the centre-of-mass
momentum is removed and conserved), 3N for Langevin (it thermostats the centre of mass) and for
the Nosé–Hoover chains (jax-md's NHC counts 3N).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax_md import dataclasses as jdc
from jax_md.simulate import NPTNoseHooverState as _NPTNoseHooverState

from mlpjax.md.config import MDConfig

__all__ = ["Integrator", "integrator", "box_of", "degrees_of_freedom", "npt_mtk_apply", "with_box_mass", "conserved_energy",
           "NPTState", "strain_derivative"]


class Integrator(NamedTuple):
    init: Callable  # (key, R, nbrs, kT) -> state
    step: Callable  # (state, nbrs, kT, pressure) -> (state, nbrs)
    box_of: Callable  # state -> current box (NPT) or None (fixed box)


def degrees_of_freedom(system, config: MDConfig) -> int:
    return max(3 * system.n_atoms - 3, 1) if config.ensemble == "nve" else 3 * system.n_atoms


def _fixed_box(state):
    return None


def box_of(config: MDConfig) -> Callable:
    """state -> the current box of an NPT run (jax-md's npt_box), None for a fixed box."""
    if config.ensemble == "npt":
        from jax_md import simulate as jsim

        return jsim.npt_box
    return _fixed_box


def _time_scales(config: MDConfig):
    dt = config.dt
    tau_t = (config.thermostat_tau_fs * dt / config.timestep_fs) if config.thermostat_tau_fs else 100 * dt
    tau_b = (config.barostat_tau_fs * dt / config.timestep_fs) if config.barostat_tau_fs else 1000 * dt
    return tau_t, tau_b


def integrator(system, config: MDConfig, energy_fn: Callable, force_fn: Callable) -> Integrator:
    """The integrator of ``config.ensemble`` for one run of ``system``.

    Args:
      energy_fn: ``(R, neighbor, **kwargs) -> eV`` of the cell (parameters bound).
      force_fn: ``(R, neighbor, **kwargs) -> [N, 3] eV/Å`` (parameters bound).
    """
    from jax_md import simulate as jsim

    shift_fn = system.shift_fn
    dt, gamma = config.dt, config.gamma
    # jax-md's factories take a default kT (eV) for their closures; every init and step here passes its
    # own (traced, per run), and NPT's box mass sized with it is reset by with_box_mass: a placeholder
    kT0 = 1.0
    if config.ensemble in ("nve", "nvt"):
        if config.ensemble == "nve":
            init_fn, _ = jsim.nve(force_fn, shift_fn, dt)

            def init(key, R, nbrs, kT):
                return init_fn(key, R, kT, mass=system.masses, neighbor=nbrs)

            def drift(state, kT):  # half kick + drift, as jax_md.simulate.velocity_verlet
                state = jsim.momentum_step(state, 0.5 * dt)
                return jsim.position_step(state, shift_fn, dt)
        else:
            init_fn, _ = jsim.nvt_langevin(force_fn, shift_fn, dt, kT0, gamma=gamma)

            def init(key, R, nbrs, kT):
                return init_fn(key, R, mass=system.masses, neighbor=nbrs, kT=kT)

            def drift(state, kT):  # B A O A of BAOAB, as jax_md.simulate.nvt_langevin
                state = jsim.momentum_step(state, 0.5 * dt)
                state = jsim.position_step(state, shift_fn, 0.5 * dt)
                state = jsim.stochastic_step(state, dt, kT, gamma)
                return jsim.position_step(state, shift_fn, 0.5 * dt)

        def step(state, nbrs, kT, pressure):
            state = drift(state, kT)
            nbrs = system.update_neighbors(nbrs, state.position)
            state = state.set(force=force_fn(state.position, neighbor=nbrs))
            return jsim.momentum_step(state, 0.5 * dt), nbrs

        return Integrator(init, step, _fixed_box)

    tau_t, tau_b = _time_scales(config)
    chain = {"chain_length": int(config.chain_length)}
    if config.ensemble == "nvt_nh":
        def fresh_force(R, neighbor=None, **kwargs):
            return force_fn(R, neighbor=system.update_neighbors(neighbor, R), **kwargs)

        init_fn, apply_fn = jsim.nvt_nose_hoover(fresh_force, shift_fn, dt, kT0, tau=tau_t, **chain)

        def init(key, R, nbrs, kT):
            return init_fn(key, R, mass=system.masses, neighbor=nbrs, kT=kT)

        def step(state, nbrs, kT, pressure):
            state = apply_fn(state, neighbor=nbrs, kT=kT)
            return state, system.update_neighbors(nbrs, state.position)

        return Integrator(init, step, _fixed_box)

    # NPT
    def fresh_energy(R, neighbor=None, **kwargs):  # the invariant and jax-md's init: refresh the list here
        return energy_fn(R, neighbor=system.update_neighbors(neighbor, R, kwargs.get("box")), **kwargs)

    nhc = {"barostat_kwargs": {"tau": tau_b, **chain}, "thermostat_kwargs": {"tau": tau_t, **chain}}
    init_fn, _ = jsim.npt_nose_hoover(fresh_energy, shift_fn, dt, config.pressure_at(0), kT0, **nhc)
    apply_fn = npt_mtk_apply(energy_fn, shift_fn, dt, update_neighbors=system.update_neighbors, **nhc)

    def init(key, R, nbrs, kT):
        state = init_fn(key, R, system.box, mass=system.masses, neighbor=nbrs, kT=kT)
        # jax-md's init sizes the barostat mass W = d (N + 1) kT τ_b² with the closure's kT (its
        # apply_fn resets W from the step's kT before every step): size it with this start's kT,
        # in apply_fn's expression, so W follows each run's own target from the first record
        state = with_box_mass(state, kT)
        return NPTState.carrying(state, strain_derivative(energy_fn, state, system.update_neighbors(nbrs, R, system.box)))

    def step(state, nbrs, kT, pressure):
        return apply_fn(state, nbrs, kT=kT, pressure=pressure)

    return Integrator(init, step, jsim.npt_box)


def conserved_energy(config: MDConfig, energy_fn: Callable, state, nbrs, kT, pressure):
    """The conserved extended-system energy (eV) of Nosé–Hoover runs (NVT chain, NPT) at the
    targets kT (eV) and pressure (eV/Å³); None for other ensembles."""
    from jax_md import simulate as jsim

    if config.ensemble == "nvt_nh":
        return jsim.nvt_nose_hoover_invariant(energy_fn, state, kT, neighbor=nbrs)
    if config.ensemble == "npt":
        return jsim.npt_nose_hoover_invariant(energy_fn, state, pressure, kT, neighbor=nbrs)
    return None


def with_box_mass(state, kT):
    """The NPT state with the barostat mass W = d (N + 1) kT τ_b² (eV·ASE-time²) of target kT (eV)."""
    n, dim = state.position.shape
    return state.set(box_mass=jnp.array(dim * (n + 1) * kT * state.barostat.tau**2, state.position.dtype))


@jdc.dataclass
class NPTState(_NPTNoseHooverState):
    """jax-md's ``NPTNoseHooverState`` plus the strain derivative of the energy at its positions
    and box, so that a step starts from the previous step's last evaluation instead of taking it
    again (one energy and gradient per NPT step, as NVT has one force).

    Attributes (beyond jax-md's):
      strain_derivative: [] eV, dE/dε at ε = 0 of the isotropic strain (1 + ε) of the box, at
        ``position`` and ``npt_box(state)``; −dE/dε / (d V) is the potential (virial) pressure.
    """

    strain_derivative: jax.Array

    @classmethod
    def carrying(cls, state, strain_derivative) -> "NPTState":
        fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(_NPTNoseHooverState)}
        return cls(**fields, strain_derivative=jnp.asarray(strain_derivative, state.position.dtype))


def strain_derivative(energy_fn, state, nbrs, **kwargs):
    """dE/dε at ε = 0 (eV) of the state's positions in its current box (``nbrs`` already at them)."""
    from jax_md import simulate as jsim

    box = jsim.npt_box(state)
    return jax.grad(lambda eps: energy_fn(state.position, neighbor=nbrs, box=box, perturbation=1 + eps, **kwargs))(
        jnp.zeros((), state.position.dtype))


def npt_mtk_apply(energy_fn, shift_fn, dt: float, barostat_kwargs: dict, thermostat_kwargs: dict, *,
                  update_neighbors: Callable):
    """One isotropic MTK Nosé–Hoover NPT step, ``apply(state, nbrs, kT=, pressure=) -> (state,
    nbrs)``, on :class:`NPTState` (jax-md's ``NPTNoseHooverState`` and Nosé–Hoover chains, plus
    the carried strain derivative) for FRACTIONAL coordinates.

    ``energy_fn(R, neighbor=, box=, perturbation=)`` (eV) is evaluated once per step, with its
    gradients in R and in the strain ε (one ``value_and_grad``), on the list that
    ``update_neighbors(nbrs, R, box)`` refreshed at the new positions and box; that list is the
    step's output (one list update per step, as NVT). The force and dE/dε at the step's start
    are the previous step's (``state.force``, ``state.strain_derivative``): the same positions
    and box, so taking them again changed nothing but the cost (measured, tiny SchNet, float32, 2 CPU
    cores: NPT was 4.2× NVT's time per step on 108 Cu atoms and 2.5× on 864, with the start's
    dE/dε taken again and three list updates per step; 1.03× and 1.05× carrying them).

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

    def energy_and_grads(R, box, nbrs):  # E (eV), F (eV/Å), dE/dε at ε = 0 (eV)
        def u(R, eps):
            return energy_fn(R, neighbor=nbrs, box=box, perturbation=1 + eps)

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

    def inner(state, nbrs, pressure):
        R, P, M, F = state.position, state.momentum, state.mass, state.force  # F, dE/dε: at this R and box already
        alpha = 1 + 1 / R.shape[0]
        vol, box = box_of(state)
        P_b = state.box_momentum + dt_2 * box_force(vol, state.strain_derivative, P, M, pressure, alpha)
        P = kick(P, F, P_b / state.box_mass, alpha)
        state = state.set(box_position=state.box_position + P_b / state.box_mass * dt)
        vol, box = box_of(state)
        x = P_b / state.box_mass * dt
        R = shift_fn(R, dt * (P / M) * jnp.exp(x / 2) * sinhc(x / 2), box=box)  # fractional: no R (e^x − 1) term
        nbrs = update_neighbors(nbrs, R, box)
        _, F, dudeps = energy_and_grads(R, box, nbrs)
        P = kick(P, F, P_b / state.box_mass, alpha)
        P_b = P_b + dt_2 * box_force(vol, dudeps, P, M, pressure, alpha)
        return state.set(position=R, momentum=P, force=F, box_momentum=P_b, strain_derivative=dudeps), nbrs

    def apply(state, nbrs, *, kT, pressure):
        bc = barostat.update_mass(state.barostat, kT)
        tc = thermostat.update_mass(state.thermostat, kT)
        state = with_box_mass(state, kT)
        P_b, bc = barostat.half_step(state.box_momentum, bc, kT)
        P, tc = thermostat.half_step(state.momentum, tc, kT)
        state, nbrs = inner(state.set(momentum=P, box_momentum=P_b), nbrs, pressure)
        tc = tc.set(kinetic_energy=quantity.kinetic_energy(momentum=state.momentum, mass=state.mass))
        bc = bc.set(kinetic_energy=quantity.kinetic_energy(momentum=state.box_momentum, mass=state.box_mass))
        P, tc = thermostat.half_step(state.momentum, tc, kT)
        P_b, bc = barostat.half_step(state.box_momentum, bc, kT)
        return state.set(thermostat=tc, barostat=bc, momentum=P, box_momentum=P_b), nbrs

    return apply
