"""Pieces shared by the descriptor-based models (BPNN, ANI): per-element networks and
per-element feature standardisation fitted on the training data.

A descriptor model computes fixed features x_i [n_nodes, F] of each atom's neighbourhood
(:mod:`mlpjax.models.descriptors`), standardises them per element, x̃ = (x − μ_Z) / s_Z, and feeds
x̃ to the network of atom i's element, whose output is the atomic energy (dimensionless;
:class:`mlpjax.potential.Potential` scales it to eV). μ_Z and s_Z live in the Flax variable
collection ``"scaling"`` (not ``"params"``): they get no gradient (``stop_gradient``), no
weight decay, and are set once before training by :func:`fit_feature_scaling`, which
:func:`mlpjax.training.prepare_potential` calls through the model module's ``data_init`` hook.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mlpjax.models.common import EdgeModel

_ACTIVATIONS = {
    "tanh": jnp.tanh,
    "silu": jax.nn.silu,
    "softplus": jax.nn.softplus,
    "celu": lambda x: jax.nn.celu(x, alpha=0.1),  # ANI's CELU, α = 0.1
}


def activation(name: str):
    """An activation by name; ``"celu:ALPHA"`` is CELU with that α (``"celu"`` = ANI's α = 0.1:
    nearly ReLU, its derivative — what forces see — changes over a 0.1-wide input range)."""
    if name.startswith("celu:"):
        try:
            alpha = float(name.split(":", 1)[1])
        except ValueError:
            alpha = float("nan")
        if not alpha > 0:
            raise ValueError(f"activation {name!r}: the CELU α after 'celu:' must be a positive number")
        return lambda x: jax.nn.celu(x, alpha=alpha)
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(_ACTIVATIONS)} or 'celu:ALPHA'") from None


class ElementMLP(nn.Module):
    """One MLP per element, ``hidden`` widths then a scalar output.

    All elements' networks are evaluated as one batched einsum over a stacked weight
    tensor [S, in, out] and each atom keeps its own element's row, so the cost is S ×
    one network (S is small for these models) with static shapes.
    """

    num_species: int
    hidden: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x: jax.Array, species: jax.Array) -> jax.Array:
        """x: [n_nodes, F]; species: [n_nodes] int. Returns [n_nodes]."""
        act = activation(self.activation)
        onehot = jax.nn.one_hot(species, self.num_species, dtype=x.dtype)  # [N, S]
        h = x
        widths = list(self.hidden) + [1]
        for layer, width in enumerate(widths):
            fan_in = h.shape[-1]
            w = self.param(f"w_{layer}", nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=-2, out_axis=-1),
                           (self.num_species, fan_in, width), x.dtype)
            b = self.param(f"b_{layer}", nn.initializers.zeros, (self.num_species, width), x.dtype)
            z = jnp.einsum("nso,ns->no", jnp.einsum("nf,sfo->nso", h, w), onehot)
            h = z + b[species]
            if layer < len(widths) - 1:
                h = act(h)
        return h[:, 0]


class FeatureScaling(nn.Module):
    """x̃ = (x − μ[species]) · inv_std[species] with μ, inv_std in the ``"scaling"`` collection."""

    num_species: int

    @nn.compact
    def __call__(self, x: jax.Array, species: jax.Array) -> jax.Array:
        f = x.shape[-1]
        mean = self.variable("scaling", "mean", lambda: jnp.zeros((self.num_species, f), x.dtype))
        inv_std = self.variable("scaling", "inv_std", lambda: jnp.ones((self.num_species, f), x.dtype))
        m = jax.lax.stop_gradient(mean.value).astype(x.dtype)
        s = jax.lax.stop_gradient(inv_std.value).astype(x.dtype)
        return (x - m[species]) * s[species]


def fit_feature_scaling(pot, params, graphs, *, batch_size: int = 32, min_std: float = 1e-6,
                        rel_std_floor: float | None = None):
    """Per-element mean and 1/std of the descriptor over all training atoms.

    Args:
      pot: the :class:`mlpjax.potential.Potential` (architecture); params: its initial
        parameters ({"params": …, "scaling": …}); graphs: training :class:`AtomGraph` s.
      min_std: features whose standard deviation is below this (e.g. a species pair that
        never occurs) get inv_std = 1 instead of a huge factor.
      rel_std_floor: the std used for scaling is at least this fraction of the element's RMS
        feature std (default: the model config's ``feature_std_floor``). Without it a feature
        that is almost constant on the training data (the far tail of a radial Gaussian, std
        1e-6) is multiplied by 1e6: its round-off-sized
        variations become inputs of size one, which the network memorises (rMD17 ethanol,
        ANI: training loss 100× below the validation loss, validation stuck at 36 meV/Å).
    Returns: ``params`` with the ``"scaling"`` collection replaced (float64 statistics cast
    to the parameters' dtype).
    """
    from mlpjax import models
    from mlpjax.graph import batches, make_budget

    module = models.build_module(pot.model, pot.model_config, num_species=len(pot.species), cutoff=pot.cutoff,
                                 avg_num_neighbors=pot.avg_num_neighbors)
    if rel_std_floor is None:
        rel_std_floor = float(module.config.feature_std_floor)

    @jax.jit
    def features(params, vectors, species, senders, receivers, edge_mask):
        return module.apply(params, vectors, species, senders, receivers, edge_mask, method="features")

    s = len(pot.species)
    f = None
    n = np.zeros(s)
    sums = sq = None
    budget = make_budget(graphs, batch_size)
    for batch in batches(graphs, budget):
        edge_graph = batch.node_graph[batch.receivers]
        vec = batch.positions[batch.senders] - batch.positions[batch.receivers] + np.einsum(
            "ei,eij->ej", batch.shifts, batch.cell[edge_graph])
        dt = jax.tree_util.tree_leaves(params)[0].dtype
        x = np.asarray(features(params, jnp.asarray(vec, dt), batch.species, batch.senders, batch.receivers, batch.edge_mask),
                       np.float64)
        if not np.all(np.isfinite(x[batch.node_mask])):
            raise ValueError("descriptor is not finite on the training data (too many neighbours for max_neighbors?)")
        if f is None:
            f = x.shape[1]
            sums, sq = np.zeros((s, f)), np.zeros((s, f))
        for k in range(s):
            sel = batch.node_mask & (batch.species == k)
            n[k] += sel.sum()
            sums[k] += x[sel].sum(0)
            sq[k] += (x[sel] ** 2).sum(0)
    cnt = np.maximum(n, 1)[:, None]
    mean = sums / cnt
    std = np.sqrt(np.maximum(sq / cnt - mean**2, 0.0))
    floor = np.maximum(rel_std_floor * np.sqrt(np.mean(std**2, axis=1, keepdims=True)), min_std)  # [S, 1]
    inv = np.where(std > min_std, 1.0 / np.maximum(std, floor), 1.0)
    scaling = dict(params["scaling"])
    key = next(iter(scaling))
    scaling[key] = {"mean": jnp.asarray(mean, scaling[key]["mean"].dtype), "inv_std": jnp.asarray(inv, scaling[key]["inv_std"].dtype)}
    out = dict(params)
    out["scaling"] = scaling
    return out


class DescriptorNetwork(EdgeModel):
    """Base of the descriptor models: ε_i = NN_{Z_i}((x_i − μ_Z) / s_Z) with x = ``features``.

    Subclasses define :meth:`features` (raw descriptor [n_nodes, F]); the config must have
    ``hidden`` and ``activation``. Parameter tree: {"params": {"networks": …}, "scaling": {"scaling": …}}.
    """

    # fields: EdgeModel's (avg_num_neighbors unused: descriptors are plain sums)

    def setup(self):
        self.scaling = FeatureScaling(self.num_species)
        self.networks = ElementMLP(self.num_species, self.config.hidden, self.config.activation)

    def features(self, vectors, species, senders, receivers, edge_mask):
        """Raw descriptor [n_nodes, F]; abstract: BPNN (ACSF) and ANI (AEV) implement it."""
        raise NotImplementedError(f"{type(self).__name__} must define features()")

    def __call__(self, vectors, species, senders, receivers, edge_mask):
        """
        Args:
          vectors: [n_edges, 3] Å; species: [n_nodes] int; senders, receivers: [n_edges] int;
          edge_mask: [n_edges] bool.
        Returns: [n_nodes] per-atom outputs (dimensionless).
        """
        x = self.features(vectors, species, senders, receivers, edge_mask)
        return self.networks(self.scaling(x, species), species)


def data_init(pot, params, graphs):
    """Fit the descriptor standardisation on the training graphs (called by prepare_potential)."""
    return fit_feature_scaling(pot, params, graphs)
