"""Error metrics and parity plots of a potential on labelled configurations.

Predictions come only from :meth:`mlpjax.potential.PotentialDef.predict` on padded
batches (one jit per architecture, budget and dtype; parameters and the fitted E0/shift/scale
are arguments), so the numbers here are the numbers the ASE calculator and MD see. Reference
values come from the configurations' labels; a configuration without an energy label is an
error naming its file and frame.

This module is what training imports: it needs neither MD nor ASE dynamics nor the physical
checks of the rest of :mod:`mlpjax.validate`.

Metric keys (:func:`metrics`):

    energy_mae_meV_per_atom, energy_rmse_meV_per_atom   |Ê/N - E/N|
    force_mae_meV_per_A, force_rmse_meV_per_A           over all force components
    energy_r2                                           R² of per-atom energies
    force_r2                                            R² of force components
    stress_mae_meV_per_A3, stress_rmse_meV_per_A3       only when some structure has a stress label
    n_structures, n_atoms
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np

from mlpjax.cache import compiled
from mlpjax.data import Configuration, DataError
from mlpjax.graph import batches, make_budget, to_graphs

__all__ = ["predict_fn", "default_dtype", "predict_dataset", "reference_arrays", "metrics_from_predictions", "metrics", "parity_plot"]


@compiled(maxsize=32)
def predict_fn(definition, compute_stress: bool, x64: bool) -> Callable:
    """``jit(predict)``: ``(variables, batch) -> Predictions`` for one architecture
    (:class:`mlpjax.potential.PotentialDef`). Potentials that differ only in parameters, fitted
    E0/shift/scale or metadata share it: those are the traced ``variables``. ``x64`` (jax's
    float64 flag) is part of the key because the traced dtypes follow it."""
    del x64  # a key only
    return jax.jit(lambda variables, batch: definition.predict(variables, batch, compute_stress=compute_stress))


def default_dtype():
    """The float dtype of packed batches: float64 when jax runs with x64, else float32."""
    return np.float64 if jax.config.jax_enable_x64 else np.float32


def predict_dataset(potential, configs: Sequence[Configuration], *, batch_size: int = 16, dtype=None, params=None) -> dict:
    """Predictions for every configuration, in input order.

    Returns a dict of NumPy float64 arrays:
      ``energy`` [n_structures] eV, ``n_atoms`` [n_structures] int,
      ``forces`` [Σ n_atoms, 3] eV/Å (structures concatenated in order),
      ``stress`` [n_structures, 3, 3] eV/Å^3 (zeros for non-periodic structures),
      ``atomic_energies`` [Σ n_atoms] eV.
    """
    configs = list(configs)
    if not configs:
        raise ValueError("no configurations to predict")
    dtype = default_dtype() if dtype is None else np.dtype(dtype).type
    params = potential.params if params is None else params
    if params is None:
        raise ValueError("the potential has no parameters")
    graphs = to_graphs(configs, potential.species, potential.cutoff)
    budget = make_budget(graphs, batch_size)
    compute_stress = any(c.periodic for c in configs)
    fn = predict_fn(potential.definition, bool(compute_stress), bool(jax.config.jax_enable_x64))
    variables = potential.variables_with(params)
    energy, n_atoms, forces, stress, e_atoms = [], [], [], [], []
    for batch in batches(graphs, budget, shuffle=False, dtype=dtype):
        out = fn(variables, batch)
        n_g = int(np.sum(batch.graph_mask))
        n_nodes = int(np.sum(batch.node_mask))
        energy.append(np.asarray(out.energy[:n_g], np.float64))
        n_atoms.append(np.asarray(batch.n_atoms[:n_g]))
        forces.append(np.asarray(out.forces[:n_nodes], np.float64))
        e_atoms.append(np.asarray(out.atomic_energies[:n_nodes], np.float64))
        stress.append(np.asarray(out.stress[:n_g], np.float64))
    return {
        "energy": np.concatenate(energy),
        "n_atoms": np.concatenate(n_atoms).astype(np.int64),
        "forces": np.concatenate(forces),
        "stress": np.concatenate(stress),
        "atomic_energies": np.concatenate(e_atoms),
    }


def _where(c: Configuration, i: int):
    return dict(source=c.source or None, frame=c.frame if c.frame >= 0 else i)


def reference_arrays(configs: Sequence[Configuration]) -> dict:
    """Reference labels in the layout of :func:`predict_dataset` plus masks.

    Every configuration needs an energy (DataError naming the file/frame if not);
    forces/stress may be absent (``has_forces`` / ``has_stress`` say where present).
    """
    configs = list(configs)
    energy, n_atoms, forces, has_forces, stress, has_stress = [], [], [], [], [], []
    for i, c in enumerate(configs):
        if c.energy is None:
            raise DataError("has no reference energy to validate against; use labelled data", field="energy", **_where(c, i))
        energy.append(float(c.energy))
        n_atoms.append(c.n_atoms)
        if c.forces is not None:
            f = np.asarray(c.forces, np.float64)
            if f.shape != (c.n_atoms, 3):
                raise DataError(f"forces have shape {f.shape}, expected ({c.n_atoms}, 3)", field="forces", **_where(c, i))
            forces.append(f)
            has_forces.append(np.ones(c.n_atoms, bool))
        else:
            forces.append(np.zeros((c.n_atoms, 3)))
            has_forces.append(np.zeros(c.n_atoms, bool))
        if c.stress is not None and c.periodic:
            stress.append(np.asarray(c.stress, np.float64).reshape(3, 3))
            has_stress.append(True)
        else:
            stress.append(np.zeros((3, 3)))
            has_stress.append(False)
    return {
        "energy": np.asarray(energy),
        "n_atoms": np.asarray(n_atoms, np.int64),
        "forces": np.concatenate(forces) if forces else np.zeros((0, 3)),
        "has_forces": np.concatenate(has_forces) if has_forces else np.zeros(0, bool),
        "stress": np.asarray(stress).reshape(-1, 3, 3),
        "has_stress": np.asarray(has_stress, bool),
    }


def _r2(pred: np.ndarray, ref: np.ndarray) -> float:
    if ref.size == 0:
        return float("nan")
    ss_res = float(np.sum((pred - ref) ** 2))
    ss_tot = float(np.sum((ref - ref.mean()) ** 2))
    if ss_tot == 0.0:
        return float("nan")
    return 1.0 - ss_res / ss_tot


def metrics_from_predictions(predictions: dict, configs: Sequence[Configuration]) -> dict:
    """Error metrics of ``predictions`` (layout of :func:`predict_dataset`) against the labels of ``configs``."""
    ref = reference_arrays(configs)
    pred_e = np.asarray(predictions["energy"], np.float64)
    if pred_e.shape != ref["energy"].shape:
        raise ValueError(f"{pred_e.shape[0]} predicted energies for {ref['energy'].shape[0]} configurations")
    n = ref["n_atoms"].astype(np.float64)
    e_pa_pred, e_pa_ref = pred_e / n, ref["energy"] / n
    de = e_pa_pred - e_pa_ref
    out = {
        "energy_mae_meV_per_atom": 1e3 * float(np.mean(np.abs(de))),
        "energy_rmse_meV_per_atom": 1e3 * float(np.sqrt(np.mean(de**2))),
        "energy_r2": _r2(e_pa_pred, e_pa_ref),
    }
    pred_f = np.asarray(predictions["forces"], np.float64).reshape(-1, 3)
    if pred_f.shape != ref["forces"].shape:
        raise ValueError(f"predicted forces have shape {pred_f.shape}, the configurations have {ref['forces'].shape}")
    m = ref["has_forces"]
    if np.any(m):
        df = (pred_f[m] - ref["forces"][m]).ravel()
        out["force_mae_meV_per_A"] = 1e3 * float(np.mean(np.abs(df)))
        out["force_rmse_meV_per_A"] = 1e3 * float(np.sqrt(np.mean(df**2)))
        out["force_r2"] = _r2(pred_f[m].ravel(), ref["forces"][m].ravel())
    else:
        out["force_mae_meV_per_A"] = out["force_rmse_meV_per_A"] = out["force_r2"] = float("nan")
    s = ref["has_stress"]
    if np.any(s):
        pred_s = np.asarray(predictions["stress"], np.float64).reshape(-1, 3, 3)
        ds = (pred_s[s] - ref["stress"][s]).ravel()
        out["stress_mae_meV_per_A3"] = 1e3 * float(np.mean(np.abs(ds)))
        out["stress_rmse_meV_per_A3"] = 1e3 * float(np.sqrt(np.mean(ds**2)))
    out["n_structures"] = int(len(n))
    out["n_atoms"] = int(np.sum(ref["n_atoms"]))
    return out


def metrics(potential, configs: Sequence[Configuration], *, batch_size: int = 16, predictions: dict | None = None) -> dict:
    """Error metrics of ``potential`` on ``configs`` (keys in the module docstring)."""
    configs = list(configs)
    reference_arrays(configs)  # label errors before any compile
    if predictions is None:
        predictions = predict_dataset(potential, configs, batch_size=batch_size)
    return metrics_from_predictions(predictions, configs)


def parity_plot(potential_or_predictions, configs: Sequence[Configuration], path, *, title: str | None = None, batch_size: int = 16) -> dict:
    """Write a PNG with energy (meV/atom, relative to the mean) and force-component parity panels.

    ``potential_or_predictions`` is a :class:`~mlpjax.potential.Potential` or a dict
    from :func:`predict_dataset`. The MAE of each panel is in its title. Returns the metrics.
    """
    import io
    import os

    from matplotlib.figure import Figure  # no pyplot: no GUI backend, thread-safe, nothing global

    from mlpjax.files import atomic_write_bytes

    configs = list(configs)
    ref = reference_arrays(configs)
    if isinstance(potential_or_predictions, dict):
        pred = potential_or_predictions
    else:
        pred = predict_dataset(potential_or_predictions, configs, batch_size=batch_size)
    m = metrics_from_predictions(pred, configs)
    n = ref["n_atoms"].astype(np.float64)
    has_stress = bool(np.any(ref["has_stress"]))
    ncols = 3 if has_stress else 2
    fig = Figure(figsize=(4.6 * ncols, 4.4), layout="constrained")
    axes = fig.subplots(1, ncols)

    def panel(ax, x, y, label, unit, mae, mae_unit):
        ax.scatter(x, y, s=6, alpha=0.6, edgecolors="none")
        if x.size:
            lo = float(min(x.min(), y.min()))
            hi = float(max(x.max(), y.max()))
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel(f"reference {label} [{unit}]")
        ax.set_ylabel(f"predicted {label} [{unit}]")
        ax.set_title(f"{label}: MAE {mae:.3g} {mae_unit}")
        ax.set_aspect("equal", adjustable="box")

    e_ref = ref["energy"] / n * 1e3
    e_pred = np.asarray(pred["energy"], np.float64) / n * 1e3
    shift = float(np.mean(e_ref))  # plot relative to the mean so the axis labels stay readable
    panel(axes[0], e_ref - shift, e_pred - shift, "energy − mean", "meV/atom", m["energy_mae_meV_per_atom"], "meV/atom")
    fm = ref["has_forces"]
    f_ref = ref["forces"][fm].ravel()
    f_pred = np.asarray(pred["forces"], np.float64).reshape(-1, 3)[fm].ravel()
    panel(axes[1], f_ref, f_pred, "force component", "eV/Å", m["force_mae_meV_per_A"], "meV/Å")
    if has_stress:
        sm = ref["has_stress"]
        s_ref = ref["stress"][sm].ravel() * 1e3
        s_pred = np.asarray(pred["stress"], np.float64).reshape(-1, 3, 3)[sm].ravel() * 1e3
        panel(axes[2], s_ref, s_pred, "stress component", "meV/Å³", m["stress_mae_meV_per_A3"], "meV/Å³")
    fig.suptitle(title or f"{m['n_structures']} structures, {m['n_atoms']} atoms")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write_bytes(os.fspath(path), buf.getvalue())
    return m
