"""GAP-style potential: SOAP + sparse Gaussian process regression (Bartók et al., PRL 104,
136403 (2010); Deringer et al., Chem. Rev. 121, 10073 (2021)), fitted by linear algebra.

Model (per atom i of element Z_i, SOAP vector p_i normalised to unit length)::

    ε_i = Σ_m α_{Z_i m} k(p_i, x_{Z_i m}),   k(p, x) = (p · x)^ζ

with M sparse ("representative") environments x_{Zm} per element, selected from the
training atoms by CUR leverage scores or farthest-point sampling. In the energy contract
ε_i is the dimensionless model output that :class:`mlpjax.potential.Potential` turns into
eV (E0 + shift + scale·(ε_i − ε_isolated)), so energies and forces are LINEAR in α and the
fit is a regularised least-squares problem (projected process / subset of regressors)::

    α = (Φᵀ W Φ + K_MM / δ²)⁻¹ Φᵀ W (y − y₀),   Σ_α = (Φᵀ W Φ + K_MM / δ²)⁻¹

Φ: derivatives of every training energy and force component with respect to α, taken
through :meth:`mlpjax.potential.Potential.predict` itself (``jax.jacrev``: forces come from
the same single ``jax.grad`` as in MD); W: 1/σ² per observation (σ_E √N per structure
energy, σ_F per force component); K_MM: the sparse points' kernel (block-diagonal over
elements), δ: prior standard deviation of ε (in units of the potential's energy scale).

Predictive variance of a structure energy (:func:`mlpjax.models.gap.predict_with_std`)::

    var(E) = φᵀ Σ_α φ + δ² s² (k** − k*ᵀ K_MM⁻¹ k*)

φ = ∂E/∂α; the second (DTC) term grows when the structure's environments are poorly
represented by the sparse set, i.e. outside the training distribution.

The fitting lives in :mod:`mlpjax.models.gap.fitting` (called by :func:`mlpjax.training.train`
for ``model: gap``); this module holds the configuration and the Flax module, whose parameters
are {"params": {"alpha": [S, M]}, "gap": {"sparse": [S, M, F], "sparse_mask": [S, M]}}.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlpjax.models import descriptors
from mlpjax.models.common import EdgeModel


@dataclasses.dataclass(frozen=True)
class GAPConfig:
    """GAP hyperparameters (the YAML ``model_config:`` block maps 1:1 onto these).

    QUIP/GAP has no defaults for what sizes a GAP: in ``gap_fit`` the SOAP ``cutoff``, ``n_max``,
    ``l_max`` and ``atom_sigma``, the kernel's ``covariance_type``, ``delta`` and the noise levels
    ``default_sigma`` are mandatory (``PARAM_MANDATORY`` in GAP's ``descriptors.F90`` /
    ``gap_fit_module.F90``), and ``n_sparse`` must be given. These defaults are the usual published
    GAP choices: ``atom_sigma`` 0.5 Å and a ``dot_product`` kernel with ``zeta`` 4 on normalised SOAP
    (``normalise`` T, QUIP's default) as in the annotated example of the gap_fit documentation,
    ``cur_points`` selection, n_max 8 / l_max 4 (that example, a phosphorus GAP, uses 12 / 6 and
    8,000 sparse points: hours of fitting on a CPU). QUIP's ``central_weight`` 1 is fixed here;
    its cosine transition over the last ``cutoff_transition_width`` (0.5 Å default) is replaced by
    ``envelope`` over the whole cutoff. ``fit_*`` are this implementation's memory knobs. The
    setting measured on rMD17 ethanol (σ_atom 0.3 Å, 2,000 sparse points per element) is the
    ``small`` preset (:mod:`mlpjax.presets`, ``experiments/configs/gap_rmd17cpu.yaml``).
    """

    # SOAP (cutoff = the training config's cutoff)
    n_max: int = 8
    l_max: int = 4
    sigma: float = 0.5  # Å, atomic Gaussian width
    envelope: str = "cosine"  # neighbour weight: "cosine" (smooth at the cutoff) | "none" (dscribe; not smooth)
    # (c, r0 Å, m): neighbour weight × c / (c + (r/r0)^m), see descriptors.SOAPParams; null = none
    radial_scaling: tuple[float, float, float] | None = None
    # kernel and sparsification
    zeta: int = 4  # k = (p · x)^ζ on unit-normalised SOAP vectors
    n_sparse: int = 500  # sparse environments per element
    selection: str = "cur"  # "cur" (leverage scores) | "fps" (farthest-point sampling)
    # regression (noise levels of the data; prior)
    energy_sigma: float = 0.001  # eV/atom: σ_E of a structure energy is this × √N
    force_sigma: float = 0.02  # eV/Å per component
    stress_sigma: float = 0.0  # eV/Å³; 0 = do not fit stresses
    delta: float = 1.0  # prior std of the per-atom output ε (in units of the energy scale)
    jitter: float = 1e-8  # added to K_MM's diagonal (relative to its mean diagonal)
    fit_batch_size: int = 4  # structures per block of the design matrix
    fit_chunk: int = 64  # position tangents per forward-mode pass (memory ∝ fit_chunk × one energy pass)

    def __post_init__(self):
        if self.radial_scaling is not None:
            object.__setattr__(self, "radial_scaling", tuple(float(v) for v in self.radial_scaling))
        if self.selection not in ("cur", "fps"):
            raise ValueError(f"GAP selection must be 'cur' or 'fps', got {self.selection!r}")
        if int(self.zeta) < 1 or self.n_sparse < 1:
            raise ValueError("GAP needs zeta ≥ 1 and n_sparse ≥ 1")

    def soap_params(self, cutoff: float, num_species: int) -> descriptors.SOAPParams:
        return descriptors.SOAPParams(r_cut=float(cutoff), n_max=int(self.n_max), l_max=int(self.l_max),
                                      sigma=float(self.sigma), num_species=num_species, normalize=True,
                                      envelope=str(self.envelope), radial_scaling=self.radial_scaling)


class GAP(EdgeModel):
    """Per-atom (unscaled) energies ε_i from edges. See :func:`mlpjax.models.build`."""

    config: GAPConfig

    def features(self, vectors, species, senders, receivers, edge_mask):
        """Unit-normalised SOAP [n_nodes, F]."""
        p = self.config.soap_params(self.cutoff, self.num_species)
        return descriptors.soap(p, vectors, species, senders, receivers, edge_mask)

    @nn.compact
    def __call__(self, vectors, species, senders, receivers, edge_mask, return_kernel: bool = False):
        """
        Args: vectors [n_edges, 3] Å; species [n_nodes] int; senders, receivers [n_edges] int;
          edge_mask [n_edges] bool; return_kernel: return the kernel rows instead (fitting).
        Returns: ε [n_nodes] (dimensionless), or with ``return_kernel`` k(p_i, x_{Z_i m}) [n_nodes, M].
        """
        x = self.features(vectors, species, senders, receivers, edge_mask)  # [N, F]
        f, m = x.shape[-1], int(self.config.n_sparse)
        sparse = self.variable("gap", "sparse", lambda: jnp.zeros((self.num_species, m, f), x.dtype)).value
        mask = self.variable("gap", "sparse_mask", lambda: jnp.zeros((self.num_species, m), x.dtype)).value
        sp = jax.lax.stop_gradient(sparse).astype(x.dtype)
        dots = jnp.einsum("nf,smf->nsm", x, sp)  # against every element's sparse set [N, S, M]
        dots = jnp.einsum("nsm,ns->nm", dots, jax.nn.one_hot(species, self.num_species, dtype=x.dtype))
        k = jax.lax.integer_pow(dots, int(self.config.zeta))  # [N, M], own element's sparse set
        k = k * jax.lax.stop_gradient(mask).astype(x.dtype)[species]
        alpha = self.param("alpha", nn.initializers.zeros, (self.num_species, m), x.dtype)
        if return_kernel:
            return k
        return jnp.sum(k * alpha.astype(x.dtype)[species], axis=-1)

