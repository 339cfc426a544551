"""Atom-centred descriptors as pure, differentiable JAX functions.

Every descriptor here is a function of the same edge arrays the models take
(:func:`mlpjax.models.build`)::

    f(params, vectors, species, senders, receivers, edge_mask, *, max_neighbors) -> [n_nodes, n_features]

with ``vectors`` [n_edges, 3] Å (R[sender] − R[receiver] + periodic shift), ``species``
[n_nodes] int species indices (position of Z in the sorted species tuple, as
:func:`mlpjax.graph.species_indices` gives), ``senders``/``receivers`` [n_edges] int and
``edge_mask`` [n_edges] bool (False for padding). They are jit- and vmap-able (all shapes
static) and differentiable, so forces come from ``jax.grad`` through them in
:func:`mlpjax.potential.compute_properties` like for every other model. Periodic cells
need nothing special: a periodic image is just another edge.

Three-body terms use, per centre atom, a static table of its incoming edges
(``max_neighbors`` slots, :func:`mlpjax.models.common.incoming_edge_table`) and visit the
unordered pairs of slots in a rematerialised ``lax.scan`` (memory O(n_atoms · K) per
feature, not O(n_atoms · K²)). An atom with more than ``max_neighbors`` neighbours inside
the (angular) cutoff makes every feature NaN: never a silent drop. Use
:func:`required_max_neighbors` on the data to size it.

Modules: :mod:`~mlpjax.models.descriptors.symmetry_functions` (ACSF),
:mod:`~mlpjax.models.descriptors.aev` (ANI), :mod:`~mlpjax.models.descriptors.smooth_overlap`
(SOAP) and :mod:`~mlpjax.models.descriptors.common` (pair sums, neighbour-pair sums,
:func:`for_structure`); everything public is re-exported here.

Descriptors
-----------
* :class:`ACSFParams` / :func:`acsf` — Behler–Parrinello atom-centred symmetry functions
  (J. Behler, J. Chem. Phys. 134, 074106 (2011)) with the cosine cutoff
  f_c(r) = ½(cos(π r / r_c) + 1), element-resolved exactly as dscribe lays them out::

      G1_i^a   = Σ_{j∈a} f_c(r_ij)
      G2_i^a   = Σ_{j∈a} exp(−η (r_ij − R_s)²) f_c(r_ij)
      G3_i^a   = Σ_{j∈a} cos(κ r_ij) f_c(r_ij)
      G4_i^ab  = 2^{1−ζ} Σ_{j<k, {Z_j,Z_k}={a,b}} (1 + λ cos θ_ijk)^ζ exp(−η (r_ij² + r_ik² + r_jk²))
                  f_c(r_ij) f_c(r_ik) f_c(r_jk)
      G5_i^ab  = 2^{1−ζ} Σ_{j<k, {Z_j,Z_k}={a,b}} (1 + λ cos θ_ijk)^ζ exp(−η (r_ij² + r_ik²)) f_c(r_ij) f_c(r_ik)

  Layout (dscribe ≥ 1.0, ``dscribe.descriptors.ACSF``): for each neighbour species a (in
  sorted Z order) the block [G1, G2(η, R_s)…, G3(κ)…]; then for each unordered species pair
  (a ≥ b, index a(a+1)/2 + b) the block [G4(η, ζ, λ)…, G5(η, ζ, λ)…]. Each unordered pair of
  neighbours counts once (the 2^{1−ζ} prefactor as written, no extra factor 2). η in Å⁻²,
  R_s in Å, κ in Å⁻¹. ``tests/test_descriptors.py`` checks the numbers against dscribe.
* :class:`AEVParams` / :func:`ani_aev` — the ANI-1 atomic environment vector (Smith, Isayev,
  Roitberg, Chem. Sci. 8, 3192 (2017)) with the modified angular terms (θ_s shifts and a
  radial shift R_s on the mean distance), defaults = ANI-1x (TorchANI ``ani1x``: radial cutoff
  5.2 Å, 16 shifts, η_R = 16 Å⁻²; angular cutoff 3.5 Å, 4 shifts × 8 sections, η_A = 8 Å⁻²,
  ζ = 32; 384 features for H, C, N, O)::

      G^R_i^a   = Σ_{j∈a} ¼ exp(−η_R (r_ij − R_s)²) f_c(r_ij; R_cr)
      G^A_i^ab  = Σ_{j<k} 2 ((1 + cos(θ'_ijk − θ_s)) / 2)^ζ exp(−η_A ((r_ij + r_ik)/2 − R_s)²) f_c(r_ij; R_ca) f_c(r_ik; R_ca)

  with θ' = arccos(0.95 cos θ) as in TorchANI (keeps the derivative finite at θ = 0, π).
  Layout as TorchANI: radial [species][η_R][R_s], then angular [species pair (upper triangle,
  row-major)][η_A][ζ][R_s][θ_s].
* :class:`SOAPParams` / :func:`soap` — the SOAP power spectrum with dscribe's GTO radial
  basis (see :class:`SOAPParams`).
"""

from mlpjax.models.descriptors.aev import AEVParams, ani_aev
from mlpjax.models.descriptors.common import for_structure, pair_index_dscribe, pair_index_upper, required_max_neighbors
from mlpjax.models.descriptors.smooth_overlap import SOAPParams, gto_basis, soap
from mlpjax.models.descriptors.symmetry_functions import ACSFParams, acsf, acsf_grid

__all__ = [
    "ACSFParams", "acsf", "acsf_grid",
    "AEVParams", "ani_aev",
    "SOAPParams", "gto_basis", "soap",
    "for_structure", "required_max_neighbors", "pair_index_dscribe", "pair_index_upper",
]
