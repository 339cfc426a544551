"""ANI-style potential (Smith, Isayev & Roitberg, Chem. Sci. 8, 3192 (2017); ANI-1x, J. Chem.
Phys. 148, 241733 (2018)) in Flax linen.

E = Σ_i NN_{Z_i}(AEV_i): the ANI atomic environment vector (:func:`mlpjax.models.descriptors.ani_aev`,
radial terms to the model cutoff, modified angular terms with θ_s sections to a shorter angular
cutoff), standardised per element on the training data, then one CELU (α = 0.1) network per
element. The defaults are ANI-1x's: radial cutoff 5.2 Å (set ``cutoff: 5.2`` in the training
config), angular cutoff 3.5 Å, 16 radial and 4 × 8 angular shifts, per-element networks
160-128-96. With another cutoff the same numbers of shifts are spread up to it
(:meth:`mlpjax.models.descriptors.AEVParams.scaled`).

Ensembles ("ensemble-ready"): the parameters are an ordinary pytree, so an ensemble is a
leading axis on them (``jax.vmap`` of ``init`` over keys, of ``apply`` over parameters); the
training config's ``seed`` selects a member.
"""

from __future__ import annotations

import dataclasses


from mlpjax.models import descriptors
from mlpjax.models.atomic_nets import DescriptorNetwork, data_init  # noqa: F401 (data_init: registry hook)


@dataclasses.dataclass(frozen=True)
class ANIConfig:
    """ANI hyperparameters (the YAML ``model_config:`` block maps 1:1 onto these).

    Defaults = TorchANI's ANI-1x model (``torchani.models.ANI1x``; Smith et al. 2018): AEV with
    angular cutoff R_ca 3.5 Å, radial η 16 Å⁻², 16 radial shifts from 0.9 Å, angular η 8 Å⁻²,
    ζ 32, 4 angular shifts from 0.9 Å and 8 angle sections; CELU (α = 0.1) networks. Its radial
    cutoff R_cr 5.2 Å is the training config's ``cutoff`` (set ``cutoff: 5.2``; the ``default``
    preset of :mod:`mlpjax.presets` does). Not representable: ANI-1x's per-element network
    widths (H 160-128-96, C 144-112-96, N and O 128-112-96): one ``hidden`` tuple serves every
    element, defaulting to the H network. ``max_neighbors`` and ``feature_std_floor`` are this
    implementation's (ANI-1x does not standardise the AEV). The setting measured on rMD17
    ethanol on one CPU core is the ``small`` preset (``experiments/configs/ani_rmd17cpu.yaml``).
    """

    hidden: tuple[int, ...] = (160, 128, 96)  # widths of each element's network (ANI-1x's H network)
    activation: str = "celu"  # CELU α = 0.1 as ANI
    angular_cutoff: float = 3.5  # Å, R_ca (the radial cutoff R_cr is the model cutoff)
    radial_eta: float = 16.0  # Å⁻²
    angular_eta: float = 8.0  # Å⁻²
    angular_zeta: float = 32.0
    n_radial_shifts: int = 16
    n_angular_shifts: int = 4
    n_sections: int = 8  # θ_s = (2k + 1) π / (2 n_sections)
    # slots per atom for neighbours within the angular cutoff; more → NaN, never a silent drop
    max_neighbors: int = 32
    # standardisation: scale by max(std, feature_std_floor × RMS std of the element's features),
    # so nearly constant features (far Gaussian tails) are not blown up into memorisable noise
    feature_std_floor: float = 0.01

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))

    def aev_params(self, cutoff: float, num_species: int) -> descriptors.AEVParams:
        rca = min(float(self.angular_cutoff), float(cutoff))
        nr, na, ns = int(self.n_radial_shifts), int(self.n_angular_shifts), int(self.n_sections)
        import math

        return descriptors.AEVParams(
            num_species=num_species, radial_cutoff=float(cutoff), angular_cutoff=rca,
            radial_eta=(self.radial_eta,), radial_shifts=tuple(0.9 + (cutoff - 0.9) * k / nr for k in range(nr)),
            angular_eta=(self.angular_eta,), angular_zeta=(self.angular_zeta,),
            angular_shifts=tuple(0.9 + (rca - 0.9) * k / na for k in range(na)),
            angle_sections=tuple((2 * k + 1) * math.pi / (2 * ns) for k in range(ns)),
        )


class ANI(DescriptorNetwork):
    """Per-atom (unscaled) energies from edges. See :func:`mlpjax.models.build`."""

    config: ANIConfig

    def features(self, vectors, species, senders, receivers, edge_mask):
        """Raw AEVs [n_nodes, F] (before the per-element standardisation)."""
        return descriptors.ani_aev(self.config.aev_params(self.cutoff, self.num_species), vectors, species, senders,
                                receivers, edge_mask, max_neighbors=self.config.max_neighbors)
