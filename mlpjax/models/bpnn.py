"""Behler–Parrinello neural network (Behler & Parrinello, PRL 98, 146401 (2007); Behler,
J. Chem. Phys. 134, 074106 (2011)) in Flax linen.

E = Σ_i NN_{Z_i}(G̃_i): atom-centred symmetry functions G_i (:func:`mlpjax.models.descriptors.acsf`,
element-resolved radial G2 and angular G4/G5 with the cosine cutoff), standardised per
element on the training data (:func:`mlpjax.models.atomic_nets.fit_feature_scaling`), then one
feed-forward network per element. The symmetry functions default to a grid made from the
cutoff (:func:`mlpjax.models.descriptors.acsf_grid`); explicit ``g2``/``g4``/``g5`` lists replace it.
"""

from __future__ import annotations

import dataclasses


from mlpjax.models import descriptors
from mlpjax.models.atomic_nets import DescriptorNetwork, data_init  # noqa: F401 (data_init: registry hook)


@dataclasses.dataclass(frozen=True)
class BPNNConfig:
    """BPNN hyperparameters (the YAML ``model_config:`` block maps 1:1 onto these).

    No reference defaults exist to follow: the reference codes, RuNNer and n2p2, have no
    defaults for the network or the symmetry functions (``global_hidden_layers_short``,
    ``global_nodes_short``, ``global_activation_short`` and every ``symfunction_short`` are
    mandatory keywords of their ``input.nn``). These defaults are mlpjax's own: Behler's tanh
    networks and cosine cutoff (``cutoff_type 1``), two hidden layers (as n2p2's minimal
    example, wider here), and a symmetry-function grid built from the cutoff
    (:func:`mlpjax.models.descriptors.acsf_grid`). The setting measured on rMD17 ethanol on one CPU
    core is the ``small`` preset (:mod:`mlpjax.presets`, ``experiments/configs/bpnn_rmd17cpu.yaml``).
    """

    hidden: tuple[int, ...] = (64, 64)  # widths of each element's network
    activation: str = "tanh"  # "tanh" (Behler) | "silu" | "softplus" | "celu"
    # symmetry-function grid from the cutoff (descriptors.acsf_grid) ...
    n_radial: int = 12  # G2 per neighbour element
    radial_scheme: str = "shifted"  # "shifted" | "centered"
    r_min: float = 0.5  # Å, first radial grid point
    zetas: tuple[float, ...] = (1.0, 4.0, 16.0)  # angular ζ values (each with λ = ±1)
    n_angular_eta: int = 2  # angular widths
    angular: str = "g5"  # "g5" (no r_jk cutoff; cheaper, smoother) | "g4"
    # ... or explicit parameters (any non-empty list replaces the grid's)
    g2: tuple[tuple[float, float], ...] = ()  # (η Å⁻², R_s Å)
    g4: tuple[tuple[float, float, float], ...] = ()  # (η Å⁻², ζ, λ)
    g5: tuple[tuple[float, float, float], ...] = ()  # (η Å⁻², ζ, λ)
    # angular-term slots per atom: more neighbours within the cutoff → NaN (never a silent drop)
    max_neighbors: int = 96
    # standardisation: scale by max(std, feature_std_floor × RMS std of the element's features),
    # so nearly constant features (far Gaussian tails) are not blown up into memorisable noise
    feature_std_floor: float = 0.01

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "zetas", tuple(float(z) for z in self.zetas))
        for name in ("g2", "g4", "g5"):
            object.__setattr__(self, name, tuple(tuple(float(x) for x in p) for p in getattr(self, name)))

    def acsf_params(self, cutoff: float, num_species: int) -> descriptors.ACSFParams:
        grid = descriptors.acsf_grid(cutoff, num_species, n_radial=self.n_radial, scheme=self.radial_scheme,
                                     r_min=self.r_min, zetas=self.zetas, n_angular_eta=self.n_angular_eta,
                                     kind=self.angular)
        if self.g2 or self.g4 or self.g5:
            grid = descriptors.ACSFParams(cutoff=cutoff, num_species=num_species, g2=self.g2 or grid.g2,
                                          g4=self.g4, g5=self.g5 if (self.g4 or self.g5) else grid.g5)
        return grid


class BPNN(DescriptorNetwork):
    """Per-atom (unscaled) energies from edges. See :func:`mlpjax.models.build`."""

    config: BPNNConfig

    def features(self, vectors, species, senders, receivers, edge_mask):
        """Raw symmetry functions [n_nodes, F] (before the per-element standardisation)."""
        return descriptors.acsf(self.config.acsf_params(self.cutoff, self.num_species), vectors, species, senders,
                                receivers, edge_mask, max_neighbors=self.config.max_neighbors)
