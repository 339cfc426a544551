"""Top-down (and combined) training: fit a potential's parameters so that simulated ensemble
averages match targets, by DiffTRe reweighting (:mod:`mlpjax.diffsim.reweight`).

    cfg = FitConfig(steps=60, learning_rate=0.02)
    result = fit_observables(sim, pot.variables, per_frame=g_of_frame,
                             loss=lambda g: jnp.mean((g - g_target) ** 2), config=cfg, start=sim.start(pot.variables))
    result.variables, result.history[-1]

Each optimiser step: the reweighted average ⟨O⟩_θ of ``per_frame`` over the current reference
trajectory, the loss of it, and its gradient (plus, for **combined** training, ``extra_loss(θ)``
— e.g. the energy/force loss of the original training data, the bottom-up term — weighted by
``config.extra_weight``); the update is optax Adam (or plain gradient descent) with global-norm clipping on the fields of
:class:`~mlpjax.potential.PotentialParams` named in ``config.trainable``. With
``config.relative_steps`` the optimiser works on φ = log|θ| (gradient θ ⊙ ∂L/∂θ, update
θ ← θ · exp(Δφ)): every step is a fraction of each parameter, so parameters in different units (a
well depth of 0.3 eV, an equilibrium distance of 3 Å) move at the same relative rate and none
changes sign — what a few-parameter physical potential needs; a parameter that is exactly 0 stays 0,
so ``relative_steps`` may instead name parameter paths (``freeze``-style patterns): those take
relative steps, every other fitted leaf plain ones (Morse + spline: relative D, α, r0, absolute
spline coefficients that start at 0). A new reference
trajectory (continuing the last one's end state, its first ``config.discard`` records dropped)
is run with the current parameters whenever N_eff / F < ``config.n_eff_ratio`` — the DiffTRe
recipe, which keeps the estimator's variance bounded without a trajectory per step.

The history (one dict per step: loss, top-down and extra terms, N_eff, whether a reference was
run, gradient norm) says how the two terms traded off.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mlpjax.diffsim.reweight import reweighted_average, sample_reference

__all__ = ["FitConfig", "FitResult", "fit_observables"]

_FIELDS = ("params", "reference_energies", "energy_shift", "energy_scale")


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Settings of :func:`fit_observables` (units in the names)."""

    steps: int = 50  # optimiser steps
    learning_rate: float = 0.01  # step size (in the parameters' own units)
    optimizer: str = "adam"  # "adam" | "sgd" (plain gradient descent)
    final_lr_fraction: float = 1.0  # cosine decay of the step size to this fraction over ``steps`` (1: constant)
    clip_norm: float | None = 1.0  # global gradient-norm clip (None: none)
    n_eff_ratio: float = 0.6  # run a new reference trajectory when N_eff / F falls below this
    discard: int = 5  # records dropped at the start of every reference run (equilibration)
    trainable: tuple = ("params",)  # PotentialParams fields that are fitted
    freeze: tuple = ()  # parameter-path patterns (as mlpjax train --freeze, e.g. "params/alpha") kept fixed
    extra_weight: float = 1.0  # weight of extra_loss (combined bottom-up + top-down training)
    # optimise log|θ| (steps are fractions of each parameter; signs kept): True for every fitted
    # leaf, or parameter-path patterns (as ``freeze``, e.g. ("params/D", "params/alpha", "params/r0"))
    # for those leaves only, the others taking plain steps (e.g. spline coefficients that start at 0)
    relative_steps: bool | tuple = False

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if not 0 < self.final_lr_fraction <= 1:
            raise ValueError(f"final_lr_fraction must be in (0, 1], got {self.final_lr_fraction}")
        if not 0 < self.n_eff_ratio <= 1:
            raise ValueError(f"n_eff_ratio must be in (0, 1], got {self.n_eff_ratio}")
        if not isinstance(self.relative_steps, (bool, tuple)):
            raise ValueError(f"relative_steps must be true, false or a tuple of parameter-path patterns, "
                             f"got {self.relative_steps!r}")
        bad = [f for f in self.trainable if f not in _FIELDS]
        if bad or not self.trainable:
            raise ValueError(f"trainable must name fields of PotentialParams ({', '.join(_FIELDS)}), got {self.trainable}")


def _relative_mask(part: dict, relative_steps) -> dict:
    """{field: pytree of bool}: which fitted leaves take relative steps (see FitConfig). Leaf paths:
    :func:`~mlpjax.potential.parameter_paths` for ``params`` (``params/D``), the field's name
    (``energy_scale``) or ``field/i`` for the others."""
    if isinstance(relative_steps, bool):
        return jax.tree_util.tree_map(lambda _: relative_steps, part)
    import fnmatch

    from mlpjax.potential import parameter_paths

    paths = {}
    for field, tree in part.items():
        n = len(jax.tree_util.tree_leaves(tree))
        paths[field] = parameter_paths(tree) if field == "params" else ([field] if n == 1 else [f"{field}/{i}" for i in range(n)])
    every = [p for ps in paths.values() for p in ps]
    for pat in relative_steps:
        if not any(fnmatch.fnmatchcase(p, pat) for p in every):
            raise ValueError(f"relative_steps pattern {pat!r} matches no fitted parameter (paths: {', '.join(every)})")
    return {field: jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree),
                                                [any(fnmatch.fnmatchcase(p, pat) for pat in relative_steps) for p in paths[field]])
            for field, tree in part.items()}


@dataclasses.dataclass
class FitResult:
    variables: Any  # the fitted PotentialParams (after the last step)
    best_variables: Any  # the parameters of the step with the lowest loss (estimated by reweighting)
    history: list  # one dict per step (see the module docstring)
    n_references: int  # reference trajectories run
    reference: Any  # the last Reference
    start: Any  # the last reference run's end (continue from here)
    seconds: float


def fit_observables(sim, variables, *, per_frame: Callable, loss: Callable, config: FitConfig = FitConfig(), start=None,
                    extra_loss: Callable | None = None, callback: Callable | None = None, seed: int = 0,
                    with_params: bool = False) -> FitResult:
    """Fit ``variables`` so that ``loss(⟨per_frame⟩)`` falls (see the module docstring).

    Args:
      sim: a :class:`~mlpjax.diffsim.DiffTrajectory` (NVT) that samples the reference runs.
      per_frame: ``R [N, 3] -> array``, the observable of one frame (e.g. its RDF); with
        ``with_params=True`` ``per_frame(variables, R, nbrs)`` (observables that depend on the
        parameters, e.g. an energy).
      loss: ``average -> scalar``, the top-down loss of the reweighted average.
      extra_loss: ``variables -> scalar``, an optional bottom-up term (combined training).
      callback: called with each step's history dict.
    """
    import optax

    t0 = time.perf_counter()
    variables = sim.engine.cast(variables)
    if start is None:
        start = sim.start(variables, seed=seed)
    lr = config.learning_rate
    if config.final_lr_fraction != 1.0:
        lr = optax.cosine_decay_schedule(config.learning_rate, max(config.steps, 1), alpha=config.final_lr_fraction)
    opt = optax.adam(lr) if config.optimizer == "adam" else optax.sgd(lr)
    if config.clip_norm is not None:
        opt = optax.chain(optax.clip_by_global_norm(config.clip_norm), opt)
    if config.freeze:
        if "params" not in config.trainable:
            raise ValueError("freeze patterns select network parameters: trainable must include 'params'")
        from mlpjax.training.steps import frozen_labels

        labels = {f: (frozen_labels(variables.params, tuple(config.freeze)) if f == "params"
                      else jax.tree_util.tree_map(lambda _: "train", getattr(variables, f))) for f in config.trainable}
        opt = optax.multi_transform({"train": opt, "frozen": optax.set_to_zero()}, labels)

    def split(v):
        return {f: getattr(v, f) for f in config.trainable}

    relative = _relative_mask(split(variables), config.relative_steps)  # {field: pytree of bool}

    def merge(v, part):
        return v._replace(**part)

    def objective(part, fixed, ref):
        v = merge(fixed, part)
        avg, n_eff = reweighted_average(v, ref, per_frame, with_params=with_params)
        top = loss(avg)
        extra = extra_loss(v) if extra_loss is not None else jnp.zeros((), top.dtype)
        return top + config.extra_weight * extra, (top, extra, n_eff)

    value_and_grad = jax.jit(jax.value_and_grad(objective, has_aux=True))
    ref, start = sample_reference(sim, variables, start, discard=config.discard)
    n_refs, n_frames = 1, int(ref.positions.shape[0])
    opt_state = opt.init(split(variables))
    history = []
    best = (np.inf, variables)
    for step in range(config.steps):
        part = split(variables)
        (total, (top, extra, n_eff)), grads = value_and_grad(part, variables, ref)
        resampled = False
        if float(n_eff) / n_frames < config.n_eff_ratio:
            ref, start = sample_reference(sim, variables, start, discard=config.discard)
            n_refs += 1
            resampled = True
            (total, (top, extra, n_eff)), grads = value_and_grad(part, variables, ref)
        gnorm = float(optax.tree.norm(grads))
        if not np.isfinite(float(total)) or not np.isfinite(gnorm):
            raise FloatingPointError(f"fit step {step}: non-finite loss ({float(total)}) or gradient norm ({gnorm}); "
                                     "lower the learning rate or check that the simulation is stable")
        if float(total) < best[0]:
            best = (float(total), variables)
        if config.relative_steps:  # Adam on φ = log|θ|: ∂L/∂φ = θ ∂L/∂θ, θ ← θ exp(Δφ) (on the selected leaves)
            grads = jax.tree_util.tree_map(lambda g, t, rel: g * t if rel else g, grads, part, relative)
            updates, opt_state = opt.update(grads, opt_state, part)
            variables = merge(variables, jax.tree_util.tree_map(lambda t, u, rel: t * jnp.exp(u) if rel else t + u,
                                                                part, updates, relative))
        else:
            updates, opt_state = opt.update(grads, opt_state, part)
            variables = merge(variables, optax.apply_updates(part, updates))
        row = {"step": step, "loss": float(total), "top_down": float(top), "extra": float(extra),
               "n_eff": float(n_eff), "n_eff_ratio": float(n_eff) / n_frames, "new_reference": resampled,
               "grad_norm": gnorm, "seconds": time.perf_counter() - t0}
        history.append(row)
        if callback is not None:
            callback(row)
    return FitResult(variables=variables, best_variables=best[1], history=history, n_references=n_refs, reference=ref, start=start,
                     seconds=time.perf_counter() - t0)
