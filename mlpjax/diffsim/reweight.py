"""Gradients of ensemble averages by reweighting a fixed reference trajectory (DiffTRe:
Thaler & Zavadlav, Nat. Commun. 12, 6884 (2021)).

For a canonical ensemble at kT, an average under parameters θ can be estimated from frames
x_1..x_F sampled with θ₀ (thermodynamic perturbation):

    ⟨O⟩_θ ≈ Σ_i w_i O_θ(x_i),   w_i = exp(−(U_θ(x_i) − U_θ₀(x_i)) / kT) / Σ_j (same)

Its derivative needs no backpropagation through the dynamics — only through F energy
evaluations — and is what ``jax.grad`` of :func:`reweighted_average` gives. At θ = θ₀ it is the
fluctuation formula d⟨O⟩/dθ = ⟨∂O/∂θ⟩ − (⟨O ∂U/∂θ⟩ − ⟨O⟩⟨∂U/∂θ⟩)/kT. The estimate is good while
the weights are even: the effective sample size N_eff = exp(−Σ w log w) (F for equal weights, 1
when one frame dominates) is returned with the average, and a fit runs a new reference trajectory
when N_eff / F falls below a ratio (:func:`mlpjax.diffsim.fit.fit_observables`).

    sim = diffsim.trajectory(pot, atoms, MDConfig(ensemble="nvt", temperature_K=1400, timestep_fs=2),
                             steps=2000, record_every=20, replicas=4)
    ref, start = diffsim.sample_reference(sim, pot.variables, sim.start(pot.variables), discard=10)
    def g_of(R):                                     # per-frame observable, [B]
        return diffsim.rdf(sim.system, R[None], r_max=5.0)[1]
    (avg, n_eff), grad = jax.value_and_grad(diffsim.reweighted_average, has_aux=True)(variables, ref, g_of)...

Frames must be canonical samples at the reference's kT: NVT (Langevin, Nosé–Hoover) runs, after
equilibration (``discard``). Neighbour lists: one list with room for every frame (checked: an
overflowing frame raises, it is never evaluated with a truncated list).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mlpjax.cache import compiled
from mlpjax.diffsim.observables import frames_of

__all__ = ["Reference", "NonErgodicReferenceWarning", "check_replicas_agree", "sample_reference", "frame_energies", "reweighted_average", "weights", "effective_sample_size"]


@functools.partial(jax.tree_util.register_dataclass, data_fields=["positions", "energies", "kT", "nbrs"],
                   meta_fields=["system"])
@dataclasses.dataclass(frozen=True)
class Reference:
    """A reference trajectory for reweighting (a pytree: jit-able as an argument; the system is static)."""

    positions: jax.Array  # [F, N, 3] simulation coordinates of the stored frames
    energies: jax.Array  # [F] eV, each frame's potential energy under the reference parameters
    kT: jax.Array  # [] eV, the ensemble's temperature
    nbrs: Any  # one jax-md neighbour list with room for every frame (updated per frame)
    system: Any = None  # the MDSystem the frames belong to (static metadata of the pytree)


def _energies(system, variables, positions, nbrs):
    """([F] eV, overflow) of every frame, one frame at a time; rematerialised per frame
    (``jax.checkpoint``), so the reweighted gradient stores no per-pair intermediates of the F
    frames: its memory is that of one frame, not F × (pairs × activations)."""

    @jax.checkpoint
    def one(R):
        nb = system.update_neighbors(nbrs, R)
        return system.energy(variables, R, neighbor=nb), nb.did_buffer_overflow | nb.cell_size_too_small

    e, ovf = jax.lax.map(one, positions)
    return e, jnp.any(ovf)


@compiled(maxsize=8)
def _energies_jit(system):
    """jit of :func:`_energies` for ``system`` (keyed by the system's identity, as the MD engine)."""
    return jax.jit(lambda v, R, nb: _energies(system, v, R, nb))


def _list_for_frames(system, variables, positions, *, max_tries: int = 5):
    """A neighbour list with room for every frame (allocated at the densest need)."""
    from mlpjax.md.system import grow_neighbor_list

    nbrs = system.allocate(positions[0])
    for _ in range(max_tries + 1):
        e, overflow = _energies_jit(system)(variables, positions, nbrs)
        if not bool(overflow):
            return nbrs, e
        # the frame with the most pairs sets the capacity (checked again on the next pass)
        counts = [system.allocate(p).max_occupancy for p in positions[:: max(1, len(positions) // 16)]]
        big = positions[:: max(1, len(positions) // 16)][int(np.argmax(counts))]
        nbrs = grow_neighbor_list(system, positions[0], np.asarray(big), nbrs, growth=1.5)
    from mlpjax.md.driver import NeighborListOverflowError

    raise NeighborListOverflowError("no neighbour list capacity holds every reference frame")


def sample_reference(sim, variables, start, *, discard: int = 0):
    """Run ``sim`` (a :class:`~mlpjax.diffsim.DiffTrajectory`, NVT) forward with ``variables``
    from ``start``; keep its records after the first ``discard`` (equilibration) as a
    :class:`Reference` (every replica's frames). Returns (reference, the run's end Start: the
    next reference run continues from there)."""
    if sim.config.ensemble not in ("nvt", "nvt_nh"):
        raise ValueError(f"reweighting needs canonical (NVT) samples; the run's ensemble is {sim.config.ensemble!r}")
    variables = sim.engine.cast(variables)
    records, end = sim.records(variables, start)
    if discard >= sim.n_records:
        raise ValueError(f"discard ({discard}) leaves no frame of the {sim.n_records} records")
    check_replicas_agree(np.asarray(records["epot"][discard:]), float(sim.config.kT))
    positions = frames_of(records["position"][discard:])
    nbrs, energies = _list_for_frames(sim.system, variables, positions)
    ref = Reference(positions=positions, energies=energies, kT=jnp.asarray(sim.config.kT, positions.dtype), nbrs=nbrs,
                    system=sim.system)
    return ref, end


class NonErgodicReferenceWarning(RuntimeWarning):
    """The replicas of a reference run sample different states (see :func:`sample_reference`)."""


def check_replicas_agree(epot, kT: float, *, ratio: float = 5.0) -> None:
    """Warn when the replicas' mean energies differ by more than ``ratio`` × the frame-to-frame
    spread: the frames are then not samples of one canonical ensemble (each replica is stuck in its
    own state: a glass, a jammed or a phase-separated cell), the reweighting covariances are
    dominated by the gap between replicas, and the gradient can point the wrong way (measured in
    experiments/fit_rdf.py: a Morse potential that jams liquid Cu at 630 GPa gave dP/dD of the
    wrong sign). ``epot`` [T, R] eV."""
    if epot.ndim != 2 or epot.shape[1] < 2 or epot.shape[0] < 2:
        return
    means, spread = epot.mean(axis=0), float(np.sqrt(np.mean(epot.var(axis=0))))
    gap = float(means.max() - means.min())
    if spread > 0 and gap > ratio * spread:
        import warnings

        warnings.warn(f"the reference run's replicas sample different states: their mean energies differ by "
                      f"{gap:.4g} eV ({gap / kT:.3g} kT, {gap / spread:.3g}x the frame-to-frame spread); reweighted "
                      "averages and gradients over these frames are dominated by that gap (equilibrate longer, "
                      "check the potential, or use one replica)", NonErgodicReferenceWarning, stacklevel=3)


def frame_energies(variables, ref: Reference):
    """[F] eV, every reference frame's energy under ``variables`` (differentiable)."""
    e, _ = _energies(ref.system, variables, ref.positions, ref.nbrs)
    return e


def weights(variables, ref: Reference):
    """[F] the normalised reweighting weights of the frames under ``variables``."""
    du = frame_energies(variables, ref) - ref.energies
    return jax.nn.softmax(-du / ref.kT)


def effective_sample_size(w):
    """N_eff = exp(−Σ w log w) of normalised weights ``w`` [F] (F for equal weights)."""
    w = jnp.asarray(w)
    return jnp.exp(-jnp.sum(jnp.where(w > 0, w * jnp.log(jnp.where(w > 0, w, 1.0)), 0.0)))


def reweighted_average(variables, ref: Reference, per_frame: Callable, *, with_params: bool = False):
    """(⟨O⟩_θ, N_eff): the reweighted average of ``per_frame`` over the reference frames.

    ``per_frame(R [N, 3]) -> array`` (e.g. one frame's RDF [B]); with ``with_params=True``
    ``per_frame(variables, R, nbrs)`` for observables that depend on the parameters too (an
    energy, a virial). Differentiate with ``jax.grad(..., has_aux=True)`` of a scalar function of
    the average (N_eff rides along as aux: ``lambda v: (loss(reweighted_average(v, ...)[0]), ...)``).
    """
    w = weights(variables, ref)
    if with_params:
        @jax.checkpoint  # per frame, as in _energies: the gradient's memory does not grow with F
        def one(R):
            return per_frame(variables, R, ref.system.update_neighbors(ref.nbrs, R))
    else:
        one = per_frame
    values = jax.lax.map(one, ref.positions)  # [F, ...]
    avg = jnp.tensordot(w, values, axes=(0, 0))
    return avg, jax.lax.stop_gradient(effective_sample_size(w))
