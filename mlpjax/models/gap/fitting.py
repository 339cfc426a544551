"""Fitting and predictive variance of the GAP-style SOAP + sparse GP potential.

See :mod:`mlpjax.models.gap.model` for the model and the equations. ``mlpjax train --model gap``
(and :func:`mlpjax.training.train` with ``model: gap``) ends up in :func:`fit`: no epochs and
no optimiser, one pass over the training data to build the normal equations, a Cholesky
solve, then the same validation/test metrics, model file and parity plot as every model
(:func:`mlpjax.training.finalize`). The linear algebra runs in float64 whatever ``dtype`` says.

Uncertainty: :func:`predict_with_std` (energies) and :func:`predict_uncertain` (energies, forces
and stress with their predictive standard deviations, as the
:class:`mlpjax.uncertainty.UncertainPrediction` records that ensembles also return).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mlpjax import data as _data
from mlpjax import models as _models
from mlpjax.cache import compiled
from mlpjax.config import dump_config
from mlpjax.graph import batches, make_budget, to_graphs
from mlpjax.potential import cast_floats
from mlpjax.training import TrainResult, finalize, prepare_potential, split_data


def _module(pot):
    return _models.build_module(pot.model, pot.model_config, num_species=len(pot.species), cutoff=pot.cutoff,
                               avg_num_neighbors=pot.avg_num_neighbors)


def _edge_vectors(batch):
    edge_graph = batch.node_graph[batch.receivers]
    return batch.positions[batch.senders] - batch.positions[batch.receivers] + np.einsum(
        "ei,eij->ej", batch.shifts, batch.cell[edge_graph])


@compiled(maxsize=8)
def _features_fn(definition):
    """jit: (params, vectors, species, senders, receivers, edge_mask) -> unit SOAP [n_nodes, F]."""
    module = _models.build_module(definition.model, definition.model_config, num_species=len(definition.species),
                                  cutoff=definition.cutoff, avg_num_neighbors=definition.avg_num_neighbors)
    return jax.jit(lambda p, *a: module.apply(p, *a, method="features"))


def atom_features(pot, graphs, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit SOAP vectors of every atom of ``graphs``.

    Returns: (features [n_atoms, F] float64, species index [n_atoms], structure index [n_atoms]).
    """
    feats = _features_fn(pot.definition)
    budget = make_budget(graphs, batch_size)
    xs, ss, gs = [], [], []
    offset = 0
    for batch in batches(graphs, budget):
        x = np.asarray(feats(pot.params, jnp.asarray(_edge_vectors(batch)), batch.species, batch.senders,
                             batch.receivers, batch.edge_mask), np.float64)
        m = batch.node_mask
        xs.append(x[m])
        ss.append(batch.species[m])
        gs.append(batch.node_graph[m] + offset)
        offset += int(batch.graph_mask.sum())
    return np.concatenate(xs), np.concatenate(ss), np.concatenate(gs)


def select_sparse(x: np.ndarray, n: int, method: str, seed: int) -> np.ndarray:
    """Indices of ``n`` representative rows of ``x`` [n_rows, F].

    ``"cur"``: sampled without replacement with probability ∝ statistical leverage on the
    top-k right singular vectors (k = n, capped by the rank), as GAP's CUR selection;
    ``"fps"``: greedy farthest-point sampling in Euclidean distance, from a random start.
    """
    rows = x.shape[0]
    if rows <= n:
        return np.arange(rows)
    rng = np.random.default_rng(seed)
    if method == "fps":
        chosen = [int(rng.integers(rows))]
        d2 = np.sum((x - x[chosen[0]]) ** 2, axis=1)
        for _ in range(n - 1):
            nxt = int(np.argmax(d2))
            chosen.append(nxt)
            d2 = np.minimum(d2, np.sum((x - x[nxt]) ** 2, axis=1))
        return np.sort(np.asarray(chosen))
    u, sv, _ = np.linalg.svd(x, full_matrices=False)
    k = min(n, int(np.sum(sv > sv[0] * 1e-10)))
    lev = np.sum(u[:, :k] ** 2, axis=1)
    p = lev / lev.sum()
    return np.sort(rng.choice(rows, size=n, replace=False, p=p))


def init_sparse(pot, params, graphs, *, seed: int = 0):
    """Choose the sparse environments (per element, ``n_sparse`` by the configured
    selection) from the atoms of ``graphs``; returns ``params`` with the ``"gap"`` collection
    set (α untouched). The data-dependent initialisation of a GAP model."""
    cfg = pot.model_config
    x, sp, _ = atom_features(pot.replace(params=params), graphs)
    s_count, m = len(pot.species), int(cfg.n_sparse)
    sparse = np.zeros((s_count, m, x.shape[1]))
    mask = np.zeros((s_count, m))
    for z in range(s_count):
        rows = np.flatnonzero(sp == z)
        if len(rows) == 0:
            continue
        idx = select_sparse(x[rows], m, cfg.selection, int(seed) + z)
        sparse[z, :len(idx)] = x[rows[idx]]
        mask[z, :len(idx)] = 1.0
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    return {**params, "gap": {**params.get("gap", {}), "sparse": jnp.asarray(sparse, dtype), "sparse_mask": jnp.asarray(mask, dtype)}}


def _kmm(sparse: np.ndarray, mask: np.ndarray, zeta: int) -> np.ndarray:
    """Block-diagonal K_MM [S·M, S·M] (masked slots: identity, their α stays 0)."""
    s, m, _ = sparse.shape
    k = np.zeros((s * m, s * m))
    for z in range(s):
        block = (sparse[z] @ sparse[z].T) ** zeta * np.outer(mask[z], mask[z])
        block[np.diag_indices(m)] = np.where(mask[z] > 0, np.diag(block), 1.0)
        k[z * m:(z + 1) * m, z * m:(z + 1) * m] = block
    return k


def _design_fn(pot, compute_stress: bool, chunk: int = 64):
    """jit: (params, batch) -> (Φ [rows, S·M], y₀ [rows]) for rows = [energies (G), forces (3N),
    stresses (9G) if ``compute_stress``].

    Energies and forces are linear in α. With g_G(R) = Σ_{i∈G} k_i(R) ∈ R^{S·M} (atom i's
    kernel row placed in its element's block), the potential's energy is
    E_G = Σ_i (E0 + shift) + s α·(g_G − Σ_i g_iso(Z_i)) (:meth:`mlpjax.potential.PotentialDef.atomic_energies`), so
    Φ_E = s (g_G − Σ_i g_iso), Φ_F = −s ∂g/∂R (forward mode, 3N tangents, ``chunk`` at a time)
    and Φ_σ = (s / V) ∂g/∂ε with the same symmetric strain as
    :func:`mlpjax.potential.compute_properties`. y₀ = the potential's prediction at α = 0.
    ``tests/test_gap.py`` checks y₀ + Φ α against :meth:`Potential.predict` at the fitted α.
    """
    module = _module(pot)
    s_count = len(pot.species)
    scale = float(pot.energy_scale)

    def kernel_rows(params, vectors, species, senders, receivers, edge_mask):
        return module.apply(params, vectors, species, senders, receivers, edge_mask, True)

    def g_fn(params, batch, pos, strain):
        n_graphs = batch.graph_mask.shape[0]
        edge_graph = batch.node_graph[batch.receivers]
        vec = pos[batch.senders] - pos[batch.receivers] + jnp.einsum("ei,eij->ej", batch.shifts, batch.cell[edge_graph])
        eps = 0.5 * (strain + jnp.swapaxes(strain, 1, 2))
        vec = vec + jnp.einsum("ei,eij->ej", vec, eps[edge_graph])
        k = kernel_rows(params, vec, batch.species, batch.senders, batch.receivers, batch.edge_mask)  # [N, M]
        onehot = jax.nn.one_hot(batch.species, s_count, dtype=k.dtype) * batch.node_mask[:, None]
        rows = (onehot[:, :, None] * k[:, None, :]).reshape(k.shape[0], -1)  # [N, S·M]
        return jax.ops.segment_sum(rows, batch.node_graph, num_segments=n_graphs)  # [G, S·M]

    def colored_jacobian(f, x, local, n_local):
        """∂f/∂x for f: [N, 3] → [G, K] where each output row G depends only on its own
        graph's nodes. Structures in a batch are independent, so one tangent moves the
        a-th atom of EVERY structure at once ("graph colouring"): 3 · n_local forward passes
        (n_local = atoms of the largest structure) instead of 3 · N, ``chunk`` at a time.
        Returns [n_local, 3, G, K]: entry (a, c, G) = ∂f_G/∂x[node a of G, c]."""
        n_t = 3 * n_local
        n_chunks = -(-n_t // chunk)
        t_idx = jnp.arange(n_chunks * chunk).reshape(n_chunks, chunk)

        def tangent(t):
            a, c = t // 3, t % 3
            return ((local == a)[:, None] & (jnp.arange(3) == c)[None, :]).astype(x.dtype)

        cols = jax.lax.map(jax.vmap(lambda t: jax.jvp(f, (x,), (tangent(t),))[1]), t_idx)  # [n_chunks, chunk, G, K]
        cols = cols.reshape(n_chunks * chunk, *cols.shape[2:])[:n_t]
        return cols.reshape(n_local, 3, *cols.shape[1:])

    @functools.partial(jax.jit, static_argnums=3)
    def _fn(params, batch, local, n_local):
        dtype = batch.positions.dtype
        n_graphs, n_nodes = batch.graph_mask.shape[0], batch.positions.shape[0]
        strain = jnp.zeros((n_graphs, 3, 3), dtype)
        pos = batch.positions
        g = g_fn(params, batch, pos, strain)  # [G, S·M]
        zero = jnp.zeros(1, jnp.int32)
        k_iso = kernel_rows(params, jnp.zeros((1, 3), dtype), jnp.arange(s_count, dtype=jnp.int32), zero, zero,
                            jnp.zeros(1, bool))  # [S, M]
        g_iso = (jnp.eye(s_count, dtype=dtype)[:, :, None] * k_iso[:, None, :]).reshape(s_count, -1)  # [S, S·M]
        counts = jax.ops.segment_sum(jax.nn.one_hot(batch.species, s_count, dtype=dtype) * batch.node_mask[:, None],
                                     batch.node_graph, num_segments=n_graphs)  # [G, S]
        phi_e = scale * (g - counts @ g_iso)
        jac = colored_jacobian(lambda p: g_fn(params, batch, p, strain), pos, local, n_local)  # [A, 3, G, S·M]
        phi_f = -scale * jac[jnp.clip(local, 0, n_local - 1), :, batch.node_graph]  # [N, 3, S·M]
        phi_f = phi_f * (local < n_local)[:, None, None]
        parts = [phi_e, phi_f.reshape(n_nodes * 3, -1)]
        if compute_stress:  # one strain tangent per component for all structures at once (independent)
            def strain_tangent(k):
                return jnp.zeros((n_graphs, 9), dtype).at[:, k].set(1.0).reshape(n_graphs, 3, 3)

            js = jax.vmap(lambda k: jax.jvp(lambda e: g_fn(params, batch, pos, e), (strain,), (strain_tangent(k),))[1])(
                jnp.arange(9))  # [9, G, S·M]
            js = jnp.moveaxis(js, 0, 1).reshape(n_graphs, 3, 3, -1)  # [G, 3, 3, S·M]
            vol = jnp.where(batch.periodic, batch.volume, 1.0).astype(dtype)
            parts.append((scale * js / vol[:, None, None, None]).reshape(n_graphs * 9, -1))
        phi = jnp.concatenate(parts, axis=0)
        p0 = {**params, "params": {**params["params"], "alpha": jnp.zeros_like(params["params"]["alpha"])}}
        out = pot.predict(p0, batch, compute_stress=compute_stress)
        y0 = [out.energy, out.forces.reshape(-1)] + ([out.stress.reshape(-1)] if compute_stress else [])
        return phi, jnp.concatenate(y0)

    def fn(params, batch):
        local, n_local = _local_index(batch)
        return _fn(params, batch, jnp.asarray(local), n_local)

    return fn


@compiled(maxsize=8)
def _cached_design_fn(model, model_config, cutoff, species, reference_energies, energy_shift, energy_scale,
                      avg_num_neighbors, compute_stress, chunk):
    """:func:`_design_fn` for every potential with these constants (they are baked into it:
    y₀ uses E0/shift/scale), so repeated predictions reuse its compiled code."""
    from mlpjax.potential import Potential

    shell = Potential(model=model, model_config=model_config, cutoff=cutoff, species=species,
                      reference_energies=reference_energies, energy_shift=energy_shift, energy_scale=energy_scale,
                      avg_num_neighbors=avg_num_neighbors)
    return _design_fn(shell, compute_stress, chunk)


def _local_index(batch) -> tuple[np.ndarray, int]:
    """(local [n_nodes] int, n_local): each real node's index inside its own structure (padding:
    2³⁰), and the largest structure's atom count rounded up to a power of two (so batches of
    similar size share one compilation). The colouring of :func:`_design_fn`'s Jacobians."""
    node_graph = np.asarray(batch.node_graph)
    first = np.full(batch.graph_mask.shape[0], 0)
    for g in range(len(first)):
        idx = np.flatnonzero(node_graph == g)
        first[g] = idx[0] if len(idx) else 0
    local = np.where(np.asarray(batch.node_mask), np.arange(len(node_graph)) - first[node_graph], 1 << 30)
    n_local = int(np.max(np.asarray(batch.n_atoms)))
    return local, 1 << max(0, (n_local - 1).bit_length())


def _targets(batch, cfg, compute_stress: bool):
    """(y [rows], weight 1/σ² [rows]) for the design rows of one batch (0 weight where unlabelled)."""
    g = batch.graph_mask.shape[0]
    n_atoms = np.maximum(batch.n_atoms, 1).astype(np.float64)
    w_e = np.where(batch.graph_mask & batch.has_energy, 1.0 / (cfg.energy_sigma**2 * n_atoms), 0.0)
    has_f = batch.node_mask & batch.has_forces[batch.node_graph]
    w_f = np.repeat(np.where(has_f, 1.0 / cfg.force_sigma**2, 0.0), 3)
    ys, ws = [batch.energy.astype(np.float64), batch.forces.reshape(-1).astype(np.float64)], [w_e, w_f]
    if compute_stress:
        has_s = batch.graph_mask & batch.has_stress & batch.periodic
        ws.append(np.repeat(np.where(has_s, 1.0 / cfg.stress_sigma**2, 0.0), 9))
        ys.append(batch.stress.reshape(-1).astype(np.float64))
    del g
    return np.concatenate(ys), np.concatenate(ws)


def fit(config, train_configs, valid_configs=None, *, output_dir, test_configs=None, progress: bool = True):
    """Fit a GAP potential (see the module docstring); returns a :class:`mlpjax.training.TrainResult`."""
    jax.config.update("jax_enable_x64", True)
    t0 = time.monotonic()
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    all_input = list(train_configs)
    if not all_input:
        raise ValueError("no training configurations")
    train_set, valid_set, test_set, split_info = split_data(config, all_input, valid_configs, test_configs)
    dump_config(config, os.path.join(output_dir, "config.yaml"))
    cfg = config.model_config_obj()
    species = _data.species_in(all_input)
    graphs = to_graphs(train_set, species, config.cutoff)
    pot = prepare_potential(config, train_set, graphs=graphs, species=species, init=False)
    pot = pot.replace(params=cast_floats(pot.init_params(jax.random.PRNGKey(int(config.seed))), jnp.float64))
    log = {"n_train": len(train_set)}

    # 1. descriptors and sparse points
    params = init_sparse(pot, pot.params, graphs, seed=int(config.seed))
    sparse, mask = np.asarray(params["gap"]["sparse"]), np.asarray(params["gap"]["sparse_mask"])
    s_count, m = sparse.shape[:2]
    log["n_sparse"] = {int(species[z]): int(mask[z].sum()) for z in range(s_count)}
    log["t_descriptors_s"] = time.monotonic() - t0

    # 2. normal equations over the training data
    compute_stress = float(cfg.stress_sigma) > 0 and any(c.stress is not None for c in train_set)
    design = _design_fn(pot, compute_stress, int(cfg.fit_chunk))
    budget = make_budget(graphs, int(cfg.fit_batch_size))
    nsm = s_count * m
    a_mat, b_vec = np.zeros((nsm, nsm)), np.zeros(nsm)
    it = batches(graphs, budget)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=math.ceil(len(graphs) / max(1, budget.n_graphs - 1)), desc="GAP design matrix", unit="batch")
    for batch in it:
        _t = time.monotonic()
        phi, y0 = design(params, batch)
        phi, y0 = np.asarray(phi, np.float64), np.asarray(y0, np.float64)
        if os.environ.get("MLPJAX_GAP_DEBUG"):
            print("design", time.monotonic() - _t, phi.shape, flush=True)
        y, w = _targets(batch, cfg, compute_stress)
        keep = w > 0
        phi_w = phi[keep] * w[keep, None]
        a_mat += phi[keep].T @ phi_w
        b_vec += phi_w.T @ (y[keep] - y0[keep])
    log["t_design_s"] = time.monotonic() - t0

    # 3. solve (K_MM / δ² + Φᵀ W Φ) α = Φᵀ W (y − y₀)
    kmm = _kmm(sparse, mask, int(cfg.zeta))
    kmm_chol, jit_k = _robust_cholesky(kmm, float(cfg.jitter))
    kmm_j = kmm + jit_k * np.eye(nsm)
    prec = a_mat + kmm_j / float(cfg.delta) ** 2
    # no regularising jitter on the posterior precision: the prior K_MM / δ² is the regulariser
    # (a relative 1e-8 jitter here acted as a ridge 1e4× stronger than the prior and cost a
    # factor ~2 in force error on rMD17 ethanol); escalate from round-off level only on failure
    chol, jit_p = _robust_cholesky(prec, 1e-14)
    log["jitter"] = {"kmm": jit_k, "posterior": jit_p}
    alpha = _cho_solve(chol, b_vec)
    alpha = alpha * mask.reshape(-1)
    params = {**params, "params": {**params["params"], "alpha": jnp.asarray(alpha.reshape(s_count, m))},
              "gap": {**params["gap"], "posterior_chol": jnp.asarray(chol), "kmm_chol": jnp.asarray(kmm_chol)}}
    log["t_solve_s"] = time.monotonic() - t0
    pot = pot.replace(params=params)

    final, valid_metrics, test_metrics, paths = finalize(
        config, pot, output_dir=output_dir, train_set=train_set, valid_set=valid_set, test_set=test_set,
        all_input=all_input, valid_configs=valid_configs, test_configs=test_configs, split_info=split_info,
        extra_metadata={"fit": "GAP sparse GP (projected process), closed form", "gap_fit": log,
                        "epochs_completed": 1, "best_epoch": 1, "stop_reason": "fit"})
    log["t_total_s"] = time.monotonic() - t0
    record = {"epoch": 1, "time_s": log["t_total_s"], **{f"valid_{k}": v for k, v in (valid_metrics or {}).items()
                                                         if isinstance(v, (int, float))}}
    with open(paths["log_json"], "w") as fh:
        json.dump({"fit": log, "valid": valid_metrics, "test": test_metrics}, fh, indent=2, default=float)
    paths.pop("log_csv", None)
    return TrainResult(potential=final, history=[record], test_metrics=test_metrics, valid_metrics=valid_metrics,
                       paths=paths, best_epoch=1, epochs_completed=1, stop_reason="fit", start_epoch=1, state=None)


def _robust_cholesky(a: np.ndarray, rel_jitter: float, tries: int = 10):
    """Cholesky factor of a + ε I with the smallest ε = rel_jitter · mean(diag a) · 10^k
    (k = 0, 1, …) that works: near-duplicate sparse points make K_MM and the normal
    equations numerically semi-definite. Returns (L, ε)."""
    scale = float(np.mean(np.diag(a)))
    eps = rel_jitter * scale
    for _ in range(tries):
        try:
            return np.linalg.cholesky(a + eps * np.eye(a.shape[0])), eps
        except np.linalg.LinAlgError:
            eps *= 10.0
    raise np.linalg.LinAlgError(f"matrix not positive definite even with jitter {eps:.3g} (mean diagonal {scale:.3g})")


def _cho_solve(chol: np.ndarray, b: np.ndarray) -> np.ndarray:
    import scipy.linalg

    return scipy.linalg.cho_solve((chol, True), b)


def _energy_novelty(pot, graphs, batch_size: int) -> np.ndarray:
    """DTC variance δ² s² (k** − k*ᵀ K_MM⁻¹ k*) [n_structures] eV² of the structure energies:
    the part of the prior the sparse set does not span (grows for unfamiliar environments)."""
    import scipy.linalg

    cfg = pot.model_config
    params = pot.params
    kmm_chol = np.asarray(params["gap"]["kmm_chol"])
    sparse = np.asarray(params["gap"]["sparse"])
    mask = np.asarray(params["gap"]["sparse_mask"])
    s_count, m, _ = sparse.shape
    x, sp, gi = atom_features(pot, graphs, batch_size)
    zeta = int(cfg.zeta)
    scale2 = float(pot.energy_scale) ** 2 * float(cfg.delta) ** 2
    var_n = np.zeros(len(graphs))
    for s in range(len(graphs)):
        rows = gi == s
        xs, ss = x[rows], sp[rows]
        same = ss[:, None] == ss[None, :]
        kss = np.sum(((xs @ xs.T) ** zeta) * same)
        kstar = np.zeros(s_count * m)
        for z in range(s_count):
            sel = ss == z
            if sel.any():
                kstar[z * m:(z + 1) * m] = np.sum((xs[sel] @ sparse[z].T) ** zeta, axis=0) * mask[z]
        u = scipy.linalg.solve_triangular(kmm_chol, kstar, lower=True)
        var_n[s] = max(kss - float(u @ u), 0.0) * scale2
    return var_n


@compiled(maxsize=4)
def _energy_and_alpha_jacobian_fn(definition, alpha_shape: tuple):
    """``jit((variables, alpha_flat, batch) -> (E [G] eV, ∂E/∂α [G, S·M]))``, compiled once per GAP
    architecture (the parameters are an argument: a new call compiles nothing)."""
    def energies(variables, alpha_flat, batch):
        params = variables.params
        p = {**params, "params": {**params["params"], "alpha": alpha_flat.reshape(alpha_shape)}}
        return definition.predict(variables._replace(params=p), batch, compute_stress=False).energy

    return jax.jit(lambda v, a, b: (energies(v, a, b), jax.jacrev(energies, argnums=1)(v, a, b)))


def predict_with_std(pot, configs: Sequence[_data.Configuration], *, batch_size: int = 8) -> dict:
    """Energies and their predictive standard deviation for a fitted GAP potential.

    var(E) = φᵀ Σ_α φ (uncertainty of the weights, φ = ∂E/∂α) + δ² s² (k** − k*ᵀ K_MM⁻¹ k*)
    (environments the sparse set does not span), with s the potential's energy scale.
    Returns {"energy": [n] eV, "energy_std": [n] eV, "energy_std_per_atom": [n] eV/atom,
    "std_weights": [n], "std_novelty": [n]}. :func:`predict_uncertain` adds forces and stress.
    """
    import scipy.linalg

    if pot.model != "gap":
        raise ValueError(f"predictive variance needs a GAP potential, got {pot.model!r}")
    jax.config.update("jax_enable_x64", True)
    params = pot.params
    chol = np.asarray(params["gap"]["posterior_chol"])
    s_count, m = np.asarray(params["gap"]["sparse_mask"]).shape
    graphs = to_graphs(list(configs), pot.species, pot.cutoff)

    grad_e = _energy_and_alpha_jacobian_fn(pot.definition, (s_count, m))
    variables = pot.variables
    out_e, var_w = [], []
    budget = make_budget(graphs, batch_size)
    for batch in batches(graphs, budget):
        e, phi = grad_e(variables, jnp.asarray(params["params"]["alpha"]).reshape(-1), batch)
        g = batch.graph_mask
        phi = np.asarray(phi)[g]
        v = scipy.linalg.solve_triangular(chol, phi.T, lower=True)  # L⁻¹ φ
        out_e.append(np.asarray(e)[g])
        var_w.append(np.sum(v * v, axis=0))
    energy, var_w = np.concatenate(out_e), np.concatenate(var_w)
    var_n = _energy_novelty(pot, graphs, batch_size)
    n_atoms = np.array([g.n_atoms for g in graphs], np.float64)
    std = np.sqrt(var_w + var_n)
    return {"energy": energy, "energy_std": std, "energy_std_per_atom": std / n_atoms,
            "std_weights": np.sqrt(var_w), "std_novelty": np.sqrt(var_n)}


@compiled(maxsize=8)
def _uncertain_fns(definition, compute_stress: bool, chunk: int):
    """(predict, curvature), jitted, for one GAP architecture (float64: :func:`predict_uncertain` sets x64).

    ``predict(variables, batch)``: :meth:`mlpjax.potential.PotentialDef.predict`.
    ``curvature(params, batch, local, n_local) -> (c_F [n_nodes, 3], c_σ [n_graphs, 9])``: the
    prior's curvature ∂²K(R, R')/∂x∂x' at R' = R, dimensionless per Å² (positions x = r_ic) and
    per unit strain² (x = ε_kl, the symmetric strain of :func:`mlpjax.potential.compute_properties`
    as in :func:`_design_fn`), where K(R, R') = Σ_{i∈R, j∈R', Z_i=Z_j} (p_i·p'_j)^ζ is the kernel
    whose δ² s² multiple is the prior covariance of two structures' energies. With A = ṗ pᵀ,
    B = ṗ ṗᵀ (ṗ the features' tangent along x) and X = p pᵀ:
    ∂²K = Σ_ij f''(X_ij) A_ij A_ji + f'(X_ij) B_ij, f(x) = x^ζ. Positions use the colouring
    of :func:`_design_fn` (one tangent moves atom a of every structure); memory
    ∝ ``chunk`` × n_nodes² per pass.
    """
    module = _models.build_module(definition.model, definition.model_config, num_species=len(definition.species),
                                  cutoff=definition.cutoff, avg_num_neighbors=definition.avg_num_neighbors)
    zeta = int(definition.model_config.zeta)
    predict = jax.jit(lambda variables, batch: definition.predict(variables, batch, compute_stress=compute_stress))

    def features(params, batch, pos, strain):
        edge_graph = batch.node_graph[batch.receivers]
        vec = pos[batch.senders] - pos[batch.receivers] + jnp.einsum("ei,eij->ej", batch.shifts, batch.cell[edge_graph])
        eps = 0.5 * (strain + jnp.swapaxes(strain, 1, 2))
        vec = vec + jnp.einsum("ei,eij->ej", vec, eps[edge_graph])
        p = module.apply(params, vec, batch.species, batch.senders, batch.receivers, batch.edge_mask, method="features")
        return jnp.where(batch.node_mask[:, None], p, 0.0)  # [N, F]

    @functools.partial(jax.jit, static_argnums=3)
    def curvature(params, batch, local, n_local):
        dtype = batch.positions.dtype
        n_graphs = batch.graph_mask.shape[0]
        pos = batch.positions
        strain = jnp.zeros((n_graphs, 3, 3), dtype)
        p = features(params, batch, pos, strain)
        same = ((batch.node_graph[:, None] == batch.node_graph[None, :])
                & (batch.species[:, None] == batch.species[None, :])
                & batch.node_mask[:, None] & batch.node_mask[None, :])
        x = jnp.where(same, p @ p.T, 0.0)
        d1 = jnp.where(same, zeta * jax.lax.integer_pow(x, zeta - 1), 0.0)  # f'(X)
        d2 = jnp.where(same, zeta * (zeta - 1) * jax.lax.integer_pow(x, max(zeta - 2, 0)), 0.0)  # f''(X)

        def second_derivative(pdot):  # [N, F] -> [G]
            a = pdot @ p.T
            val = jnp.sum(d2 * a * a.T + d1 * (pdot @ pdot.T), axis=1)
            return jax.ops.segment_sum(val, batch.node_graph, num_segments=n_graphs)

        def position_column(t):
            a, c = t // 3, t % 3
            tangent = ((local == a)[:, None] & (jnp.arange(3) == c)[None, :]).astype(dtype)
            return second_derivative(jax.jvp(lambda q: features(params, batch, q, strain), (pos,), (tangent,))[1])

        n_t = 3 * n_local
        n_chunks = -(-n_t // chunk)
        cols = jax.lax.map(jax.vmap(position_column), jnp.arange(n_chunks * chunk).reshape(n_chunks, chunk))
        cols = cols.reshape(n_chunks * chunk, n_graphs)[:n_t].reshape(n_local, 3, n_graphs)
        c_f = cols[jnp.clip(local, 0, n_local - 1), :, batch.node_graph] * (local < n_local)[:, None]  # [N, 3]
        if not compute_stress:
            return c_f, jnp.zeros((n_graphs, 9), dtype)

        def strain_column(k):
            tangent = jnp.zeros((n_graphs, 9), dtype).at[:, k].set(1.0).reshape(n_graphs, 3, 3)
            return second_derivative(jax.jvp(lambda e: features(params, batch, pos, e), (strain,), (tangent,))[1])

        return c_f, jax.vmap(strain_column)(jnp.arange(9)).T  # [G, 9]

    return predict, curvature


def predict_uncertain(pot, configs: Sequence[_data.Configuration], *, batch_size: int = 8,
                      novelty: bool = True) -> list:
    """GAP's predictions with their predictive standard deviations, one
    :class:`mlpjax.uncertainty.UncertainPrediction` per configuration (``members`` None).

    Every prediction y (a structure energy, a force component F_ic, a stress component) is
    linear in α, y = y₀ + φ_yᵀ α, so its predictive variance in the projected-process
    (DTC) posterior is

        var(y) = φ_yᵀ Σ_α φ_y  +  δ² (s² ∂²K_y − φ_yᵀ K_MM⁻¹ φ_y)
                 (weights)         (novelty: the prior the sparse set does not span)

    with Σ_α = (Φᵀ W Φ + K_MM/δ²)⁻¹ the fit's posterior covariance (its Cholesky factor is in
    the model), φ_y = ∂y/∂α the rows of :func:`_design_fn` (checked against
    :meth:`Potential.predict`: ``tests/test_gap.py``; the test of this function checks
    φ_F against ``jax.jacfwd`` of the potential's forces), s the energy scale and ∂²K_y the
    prior's curvature (:func:`_uncertain_fns`; for the energy k** − k*ᵀK_MM⁻¹k* exactly as
    :func:`predict_with_std`, whose ``energy_std`` this reproduces; forces and stress carry
    the same derivative on both arguments of K, s/V for stress). ``novelty=False`` keeps only
    the weights term. Means are :meth:`Potential.predict`'s.

    Returns per configuration: ``energy`` eV, ``energy_std`` eV, ``forces`` [n_atoms, 3] eV/Å,
    ``forces_std`` [n_atoms] eV/Å = sqrt(Σ_c var(F_ic)), ``stress`` / ``stress_std`` [3, 3]
    eV/Å³ (None for a non-periodic structure). Float64 throughout.
    """
    import scipy.linalg

    from mlpjax.uncertainty import UncertainPrediction

    if pot.model != "gap":
        raise ValueError(f"predict_uncertain needs a GAP potential, got {pot.model!r}; use mlpjax.ensemble for others")
    configs = list(configs)
    if not configs:
        raise ValueError("no configurations to predict")
    jax.config.update("jax_enable_x64", True)
    cfg = pot.model_config
    params = pot.params
    chol = np.asarray(params["gap"]["posterior_chol"])
    kmm_chol = np.asarray(params["gap"]["kmm_chol"])
    scale, delta2 = float(pot.energy_scale), float(cfg.delta) ** 2
    graphs = to_graphs(configs, pot.species, pot.cutoff)
    compute_stress = any(c.periodic for c in configs)
    design = _cached_design_fn(pot.model, pot.model_config, float(pot.cutoff), tuple(pot.species),
                               tuple(float(e) for e in pot.reference_energies), float(pot.energy_shift),
                               float(pot.energy_scale), float(pot.avg_num_neighbors), compute_stress,
                               int(cfg.fit_chunk))
    predict, curvature = _uncertain_fns(pot.definition, compute_stress, 16)
    variables = pot.variables_with(params)

    def quad(chol_factor, rows):  # diag(rows L⁻ᵀ L⁻¹ rowsᵀ) [n_rows]
        v = scipy.linalg.solve_triangular(chol_factor, rows.T, lower=True)
        return np.sum(v * v, axis=0)

    rows = []  # (energy eV, var(E) eV², forces [n, 3], forces_std [n], stress, stress_std) per structure
    for batch in batches(graphs, make_budget(graphs, batch_size)):
        out = predict(variables, batch)
        phi, _ = design(params, batch)
        phi = np.asarray(phi, np.float64)
        n_g, n_nodes = batch.graph_mask.shape[0], batch.positions.shape[0]
        phi_e, phi_f = phi[:n_g], phi[n_g:n_g + 3 * n_nodes]
        var_e = quad(chol, phi_e)  # [G] eV²
        var_f = quad(chol, phi_f).reshape(n_nodes, 3)  # [N, 3] (eV/Å)²
        var_s = quad(chol, phi[n_g + 3 * n_nodes:]).reshape(n_g, 9) if compute_stress else np.zeros((n_g, 9))
        if novelty:
            local, n_local = _local_index(batch)
            c_f, c_s = (np.asarray(c, np.float64) for c in curvature(params, batch, jnp.asarray(local), n_local))
            var_f = var_f + np.maximum(delta2 * (scale**2 * c_f - quad(kmm_chol, phi_f).reshape(n_nodes, 3)), 0.0)
            if compute_stress:
                vol = np.where(np.asarray(batch.periodic), np.asarray(batch.volume, np.float64), 1.0)
                k_s = (scale / vol[:, None]) ** 2 * c_s
                var_s = var_s + np.maximum(delta2 * (k_s - quad(kmm_chol, phi[n_g + 3 * n_nodes:]).reshape(n_g, 9)), 0.0)
        energy, forces, stress = (np.asarray(a, np.float64) for a in (out.energy, out.forces, out.stress))
        start = 0
        for g in range(int(np.sum(batch.graph_mask))):
            n = int(batch.n_atoms[g])
            sl = slice(start, start + n)
            start += n
            periodic = bool(np.asarray(batch.periodic)[g])
            rows.append((float(energy[g]), float(var_e[g]), forces[sl], np.sqrt(np.sum(var_f[sl], axis=1)),
                         stress[g] if periodic else None, np.sqrt(var_s[g]).reshape(3, 3) if periodic else None))
    var_n = _energy_novelty(pot, graphs, batch_size) if novelty else np.zeros(len(graphs))
    return [UncertainPrediction(energy=e, energy_std=float(np.sqrt(v + vn)), forces=f, forces_std=fs, stress=st,
                                stress_std=sst) for (e, v, f, fs, st, sst), vn in zip(rows, var_n)]
