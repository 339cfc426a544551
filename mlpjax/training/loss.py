"""The training loss: error sums over the real entries of a padded batch, and the
dimensionless loss built from them (formula in the :mod:`mlpjax.config` docstring).

Both work on device arrays inside the jitted steps and on host floats (the validation
pass adds the sums of its batches, then builds the loss and the MAE/RMSE from them), so
one definition serves training, evaluation and the logs.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mlpjax.graph import GraphBatch


def error_sums(pred, batch: GraphBatch, compute_stress: bool) -> dict:
    """Sums of squared/absolute errors (eV units) and counts over the real entries of a batch.

    Keys: ``e_sq``, ``e_abs`` [eV²/atom², eV/atom], ``e_n`` (structures with an energy);
    ``f_sq``, ``f_abs`` [eV²/Å², eV/Å], ``f_n`` (force components); with ``compute_stress``
    ``s_sq``, ``s_abs`` [eV²/Å⁶, eV/Å³], ``s_vsq`` (virial per atom σ·V/N, eV²) and ``s_n``.
    """
    dtype = pred.energy.dtype
    n = jnp.maximum(batch.n_atoms, 1).astype(dtype)
    e_mask = (batch.graph_mask & batch.has_energy).astype(dtype)
    de = (pred.energy - batch.energy.astype(dtype)) / n * e_mask  # eV/atom
    f_mask = (batch.node_mask & batch.has_forces[batch.node_graph]).astype(dtype)
    df = (pred.forces - batch.forces.astype(dtype)) * f_mask[:, None]  # eV/Å
    out = {
        "e_sq": jnp.sum(de**2),
        "e_abs": jnp.sum(jnp.abs(de)),
        "e_n": jnp.sum(e_mask),
        "f_sq": jnp.sum(df**2),
        "f_abs": jnp.sum(jnp.abs(df)),
        "f_n": 3.0 * jnp.sum(f_mask),
    }
    if compute_stress:
        s_mask = (batch.graph_mask & batch.has_stress).astype(dtype)
        ds = (pred.stress - batch.stress.astype(dtype)) * s_mask[:, None, None]  # eV/Å^3
        vpa = (batch.volume.astype(dtype) / n)[:, None, None]  # Å^3/atom: σ·V/N is a virial per atom [eV]
        out.update(
            s_sq=jnp.sum(ds**2),
            s_abs=jnp.sum(jnp.abs(ds)),
            s_vsq=jnp.sum((ds * vpa) ** 2),
            s_n=9.0 * jnp.sum(s_mask),
        )
    return out


def loss_from_sums(sums: dict, sigma, weights: tuple[float, float, float]):
    """Dimensionless loss from :func:`error_sums` (arrays or floats); ``sigma`` [eV] is the
    potential's energy scale (a static float: StepSettings.loss_sigma) and
    ``weights`` = (w_E, w_F, w_S)."""
    w_e, w_f, w_s = weights
    mx = jnp.maximum if isinstance(sums["e_n"], jax.Array) else max
    loss = w_e * sums["e_sq"] / mx(sums["e_n"], 1.0) / sigma**2
    loss = loss + w_f * sums["f_sq"] / mx(sums["f_n"], 1.0) / sigma**2
    if "s_vsq" in sums:
        loss = loss + w_s * sums["s_vsq"] / mx(sums["s_n"], 1.0) / sigma**2
    return loss


def summarize(sums: dict, sigma: float, weights: tuple[float, float, float]) -> dict:
    """Host floats of accumulated :func:`error_sums` (σ = ``sigma`` eV): the loss and the MAE/RMSE
    in meV (NaN without data)."""
    sums = {k: float(v) for k, v in sums.items()}
    nan = float("nan")
    return {
        "loss": float(loss_from_sums(sums, float(sigma), weights)),
        "energy_mae_meV_per_atom": 1e3 * sums["e_abs"] / sums["e_n"] if sums["e_n"] else nan,
        "energy_rmse_meV_per_atom": 1e3 * math.sqrt(sums["e_sq"] / sums["e_n"]) if sums["e_n"] else nan,
        "force_mae_meV_per_A": 1e3 * sums["f_abs"] / sums["f_n"] if sums["f_n"] else nan,
        "force_rmse_meV_per_A": 1e3 * math.sqrt(sums["f_sq"] / sums["f_n"]) if sums["f_n"] else nan,
        "stress_mae_meV_per_A3": 1e3 * sums["s_abs"] / sums["s_n"] if sums.get("s_n") else nan,
    }


_VAR_FLOOR = 1e-8  # dimensionless variance floor of the NLL (s >= 1e-4 σ)


def nll_loss(members, batch: GraphBatch, sigma, weights: tuple[float, float, float]):
    """β-weighted Gaussian negative log-likelihood of a shallow ensemble, dimensionless.

    ``members``: :class:`mlpjax.potential.Predictions` with a leading member axis ``[M, ...]``. Per
    structure the predicted per-atom energy is N(μ, s²) with μ, s² the members' mean and variance of
    E/N; per atom the force is isotropic N(μ_F, s_F² I) with s_F² the members' force variance averaged
    over the three components (one variance per atom, as the model deviation of :mod:`mlpjax.uncertainty`;
    the members' forces differ through their heads' force Jacobians, Kellner & Ceriotti 2024). Errors
    and variances are in units of ``sigma`` (the loss's energy scale). Each term is weighted by
    stop_gradient(s²) (β-NLL with β = 1, Seitzer et al., ICLR 2022)::

        L = w_E · mean_structures[sg(s_E²) · ½((μ_E − E)²/s_E² + log s_E²)] + w_F · mean_atoms[...]

    so the mean gets exactly the squared-error gradient while s² is pulled towards the squared error
    (∂L/∂s² ∝ 1 − err²/s²). The plain NLL was tried and rejected: on 44 EMT Cu cells (SchNet F=16,
    4 heads, 12 epochs) the mean's validation loss stalled at 1.21 once the NLL started (full ensemble
    0.17): its mean gradient (μ − E)/s² vanishes wherever s² has grown. The absolute scale of s² is
    fixed afterwards on validation data (:func:`mlpjax.validate.uncertainty.fit_calibration`)."""
    w_e, w_f, _ = weights
    dtype = members.energy.dtype
    n = jnp.maximum(batch.n_atoms, 1).astype(dtype)
    e_mask = (batch.graph_mask & batch.has_energy).astype(dtype)
    e = members.energy / n / sigma  # [M, G]
    mu, var = jnp.mean(e, 0), jnp.var(e, 0) + _VAR_FLOOR
    target = batch.energy.astype(dtype) / n / sigma
    nll_e = jax.lax.stop_gradient(var) * 0.5 * ((mu - target) ** 2 / var + jnp.log(var))
    nll_e = jnp.sum(nll_e * e_mask) / jnp.maximum(jnp.sum(e_mask), 1.0)
    f_mask = (batch.node_mask & batch.has_forces[batch.node_graph]).astype(dtype)
    f = members.forces / sigma  # [M, N, 3]
    mu_f = jnp.mean(f, 0)
    var_f = jnp.mean(jnp.var(f, 0), axis=-1) + _VAR_FLOOR  # [N]: isotropic per atom
    t_f = batch.forces.astype(dtype) / sigma
    nll_f = jax.lax.stop_gradient(var_f) * 0.5 * (jnp.sum((mu_f - t_f) ** 2, -1) / var_f + 3.0 * jnp.log(var_f))
    nll_f = jnp.sum(nll_f * f_mask) / jnp.maximum(3.0 * jnp.sum(f_mask), 1.0)
    return w_e * nll_e + w_f * nll_f
