"""PaiNN (Schütt, Unke, Gastegger, "Equivariant message passing for the prediction of
tensorial properties and molecular spectra", ICML 2021, arXiv:2102.03150) in Flax linen.

Every atom carries scalar features s [n, F] (invariant) and vector features
v [n, 3, F] (equivariant under O(3); v = 0 at the start). Each of the T interaction
layers is a message block followed by an update block (paper Fig. 2):

  message (for receiver i, neighbours j, r_ij = vectors = R_j - R_i, r̂_ij = r_ij / r_ij):
      φ(s_j) = Dense_3F(silu(Dense_F(s_j))),  W(r_ij) = Dense_3F(rbf(r_ij)) · f_cut(r_ij)
      (φ_s, φ_vv, φ_vs) = split(φ(s_j) ⊙ W(r_ij))
      Δs_i = Σ_j φ_s,   Δv_i = Σ_j (v_j ⊙ φ_vv + φ_vs ⊙ r̂_ij)
  update:
      U v, V v: linear maps over the feature axis (no bias, so they commute with rotations)
      (a_vv, a_sv, a_ss) = split(Dense_3F(silu(Dense_F([s, ||V v||]))))
      Δv = a_vv ⊙ U v,   Δs = a_ss + a_sv ⊙ <U v, V v>
  readout: Dense_{F/2} → silu → Dense_1 on the final scalars (one number per atom).

Design choices and deviations from the paper:

* Edge direction: the mlpjax contract gives ``vectors = R[sender] - R[receiver]``
  and messages are summed at the receiver i, so r̂_ij points from the receiving atom
  i to its neighbour j — the same convention as the reference implementation
  (schnetpack, ``r_ij = R[idx_j] - R[idx_i]``). The energy is invariant either way;
  with this choice the vector features have the reference's sign.
* Radial basis: sqrt(2/r_c) sin(nπ r/r_c)/r (``common.bessel_basis``; the paper uses
  sin(nπ r/r_c)/r, the constant prefactor is absorbed by the following Dense), times a
  cosine cutoff (paper) or DimeNet's polynomial envelope (``cutoff_fn``).
* Filters: one Dense(rbf → 3F) per interaction layer, not shared between layers
  (schnetpack's default, ``shared_filters=False``).
* Messages are summed and divided by the data set's average number of neighbours (as
  in SchNet here, NequIP and MACE); the paper uses a plain sum. This keeps activations
  O(1) in dense metals and is absorbed by the weights otherwise.
* ||V v|| uses sqrt(Σ_xyz (V v)² + ε) with ε = 1e-8 (features are dimensionless):
  the plain norm has an infinite/NaN gradient at v = 0, which is
  exactly the state of every atom in layer 1 (v initialised to zero) and of isolated
  atoms. The ε-shift is smooth, rotation invariant and changes the value by at most
  sqrt(ε) = 1e-4 (schnetpack uses the same trick with ε = 1e-8).
* Masked (padded) edges: the length is ``safe_norm`` (= r_c, so the envelope and hence
  every message is exactly zero), and the unit direction is computed from the masked
  vector (zero for padding), so no NaN or spurious gradient reaches padded entries.
* No per-layer normalisation, no dipole/polarisability heads: only the scalar energy
  readout is needed here (forces and stress come from ``jax.grad`` in
  :mod:`mlpjax.potential`).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlpjax.models.common import EdgeModel, bessel_basis, cutoff_envelope, safe_norm, shifted_softplus

# Added to Σ_xyz (V v)^2 before the square root: differentiable at v = 0 (see docstring).
_VECTOR_NORM_EPS = 1e-8


def _activation(name: str):
    if name == "silu":
        return jax.nn.silu
    if name == "shifted_softplus":
        return shifted_softplus
    raise ValueError(f"unknown activation {name!r}: use 'silu' (paper) or 'shifted_softplus'")


@dataclasses.dataclass(frozen=True)
class PaiNNConfig:
    """PaiNN hyperparameters (the YAML ``model_config:`` block maps 1:1 onto these).

    Defaults = the reference implementation's, schnetpack 2.x
    (``configs/model/representation/painn.yaml``, ``radial_basis/gaussian.yaml``, and
    ``schnetpack.representation.PaiNN``'s SiLU): ``n_atom_basis`` 128, ``n_interactions`` 3,
    ``n_rbf`` 20, ``CosineCutoff``, unshared interactions and filters; also the paper's QM9/MD17
    setup. schnetpack's config uses Gaussian radial functions, the paper (and this
    implementation, which has no Gaussian option) sin(nπr/r_c)/r. schnetpack's
    ``globals.cutoff`` 5 Å is the training config's default ``cutoff``. This size is also the
    ``small`` preset: it was measured on rMD17 ethanol on one CPU core
    (``experiments/configs/painn_rmd17cpu.yaml``).
    """

    features: int = 128  # feature width F of the scalar and of each vector component
    interactions: int = 3  # number of message + update blocks T
    num_rbf: int = 20  # sin(nπr/r_c)/r radial functions, n = 1..num_rbf
    cutoff_fn: str = "cosine"  # "cosine" (paper) or "polynomial"
    activation: str = "silu"  # "silu" (paper) or "shifted_softplus"

    def __post_init__(self):
        cutoff_envelope(self.cutoff_fn)  # raise early on a bad name
        _activation(self.activation)
        if self.features < 2 or self.interactions < 1 or self.num_rbf < 1:
            raise ValueError(f"PaiNN needs features >= 2, interactions >= 1, num_rbf >= 1, got {self}")


class PaiNN(EdgeModel):
    """Per-atom (unscaled) energies from edges. See :func:`mlpjax.models.build`."""

    config: PaiNNConfig

    @nn.compact
    def __call__(self, vectors, species, senders, receivers, edge_mask):
        """The EdgeModel interface (see :class:`mlpjax.models.common.EdgeModel`)."""
        cfg = self.config
        F = cfg.features
        act = _activation(cfg.activation)
        n_nodes = species.shape[0]

        r = safe_norm(vectors, edge_mask, self.cutoff)  # [n_edges] Å (r_c on padded edges)
        masked_vectors = jnp.where(edge_mask[:, None], vectors, 0.0)  # [n_edges, 3] Å
        unit = masked_vectors / r[:, None]  # [n_edges, 3] r̂_ij, receiver → sender; 0 on padding
        envelope = cutoff_envelope(cfg.cutoff_fn)(r, self.cutoff) * edge_mask  # [n_edges]
        rbf = bessel_basis(r, self.cutoff, cfg.num_rbf)  # [n_edges, num_rbf] 1/Å^(3/2)

        s = nn.Embed(self.num_species, F, name="embedding")(species)  # [n_nodes, F]
        v = jnp.zeros((n_nodes, 3, F), s.dtype)  # [n_nodes, 3, F]

        def aggregate(x):  # edges → receivers, normalised sum
            return jax.ops.segment_sum(x, receivers, num_segments=n_nodes) / self.avg_num_neighbors

        for t in range(cfg.interactions):
            # ---- message block
            phi = nn.Dense(F, name=f"message_{t}_phi_0")(s)
            phi = nn.Dense(3 * F, name=f"message_{t}_phi_1")(act(phi))  # [n_nodes, 3F]
            w = nn.Dense(3 * F, name=f"message_{t}_filter")(rbf) * envelope[:, None]  # [n_edges, 3F]
            x = phi[senders] * w  # [n_edges, 3F]
            x_s, x_vv, x_vs = jnp.split(x, 3, axis=-1)  # each [n_edges, F]
            dv = v[senders] * x_vv[:, None, :] + x_vs[:, None, :] * unit[:, :, None]  # [n_edges, 3, F]
            s = s + aggregate(x_s)
            v = v + aggregate(dv)

            # ---- update block
            uv = nn.Dense(F, use_bias=False, name=f"update_{t}_U")(v)  # [n_nodes, 3, F]
            vv = nn.Dense(F, use_bias=False, name=f"update_{t}_V")(v)  # [n_nodes, 3, F]
            vv_norm = jnp.sqrt(jnp.sum(vv * vv, axis=1) + _VECTOR_NORM_EPS)  # [n_nodes, F], safe at v = 0
            a = nn.Dense(F, name=f"update_{t}_a_0")(jnp.concatenate([s, vv_norm], axis=-1))
            a = nn.Dense(3 * F, name=f"update_{t}_a_1")(act(a))  # [n_nodes, 3F]
            a_vv, a_sv, a_ss = jnp.split(a, 3, axis=-1)  # each [n_nodes, F]
            v = v + a_vv[:, None, :] * uv
            s = s + a_ss + a_sv * jnp.sum(uv * vv, axis=1)

        out = nn.Dense(max(F // 2, 1), name="readout_0")(s)
        out = nn.Dense(1, name="readout_1")(act(out))
        return out[:, 0]
