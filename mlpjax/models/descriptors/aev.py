"""The ANI atomic environment vector (AEV) with ANI-1x's parameters by default, in TorchANI's
layout. Formulas and layout: :mod:`mlpjax.models.descriptors`."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from mlpjax.models.common import cosine_cutoff, safe_norm
from mlpjax.models.descriptors.common import cos_angle, overflow_poison, pair_index_upper, pair_sum, radial_sum, static_pow

_ANI1X_RADIAL_SHIFTS = tuple(0.9 + 0.26875 * k for k in range(16))  # Å, linspace(0.9, 5.2, 17)[:-1]
_ANI1X_ANGULAR_SHIFTS = (0.9, 1.55, 2.2, 2.85)  # Å
_ANI1X_SECTIONS = tuple((2 * k + 1) * math.pi / 16 for k in range(8))  # rad


@dataclasses.dataclass(frozen=True)
class AEVParams:
    """ANI atomic environment vector parameters; defaults are ANI-1x's (module docstring)."""

    num_species: int  # S (ANI-1x: 4, H C N O)
    radial_cutoff: float = 5.2  # Å, R_cr
    angular_cutoff: float = 3.5  # Å, R_ca
    radial_eta: tuple[float, ...] = (16.0,)  # Å⁻²
    radial_shifts: tuple[float, ...] = _ANI1X_RADIAL_SHIFTS  # Å
    angular_eta: tuple[float, ...] = (8.0,)  # Å⁻²
    angular_zeta: tuple[float, ...] = (32.0,)
    angular_shifts: tuple[float, ...] = _ANI1X_ANGULAR_SHIFTS  # Å
    angle_sections: tuple[float, ...] = _ANI1X_SECTIONS  # θ_s, rad

    def __post_init__(self):
        for name in ("radial_eta", "radial_shifts", "angular_eta", "angular_zeta", "angular_shifts", "angle_sections"):
            object.__setattr__(self, name, tuple(float(x) for x in getattr(self, name)))
        if not 0 < self.angular_cutoff <= self.radial_cutoff:
            raise ValueError("AEV needs 0 < angular_cutoff ≤ radial_cutoff")

    @property
    def radial_length(self) -> int:
        return len(self.radial_eta) * len(self.radial_shifts)

    @property
    def angular_length(self) -> int:
        return len(self.angular_eta) * len(self.angular_zeta) * len(self.angular_shifts) * len(self.angle_sections)

    @property
    def num_features(self) -> int:
        s = self.num_species
        return self.radial_length * s + self.angular_length * s * (s + 1) // 2

    @classmethod
    def scaled(cls, num_species: int, radial_cutoff: float, angular_cutoff: float, **kw) -> "AEVParams":
        """ANI-1x's parameter pattern stretched to other cutoffs: the same numbers of
        shifts, evenly spaced from 0.9 Å to each cutoff as in ANI-1x."""
        nr, na = 16, 4
        rs = tuple(0.9 + (radial_cutoff - 0.9) * k / nr for k in range(nr))
        sa = tuple(0.9 + (angular_cutoff - 0.9) * k / na for k in range(na))
        return cls(num_species=num_species, radial_cutoff=radial_cutoff, angular_cutoff=angular_cutoff,
                   radial_shifts=rs, angular_shifts=sa, **kw)


def ani_aev(
    params: AEVParams,
    vectors: jax.Array,
    species: jax.Array,
    senders: jax.Array,
    receivers: jax.Array,
    edge_mask: jax.Array,
    *,
    max_neighbors: int = 32,
) -> jax.Array:
    """ANI atomic environment vectors [n_nodes, params.num_features] (dimensionless).

    ``max_neighbors`` bounds the neighbours within the ANGULAR cutoff only (ANI's 3.5 Å
    holds far fewer atoms than its 5.2 Å radial sphere); more → NaN features.
    """
    rcr, rca = float(params.radial_cutoff), float(params.angular_cutoff)
    n_nodes = species.shape[0]
    dtype = vectors.dtype
    r = safe_norm(vectors, edge_mask, rcr)
    active_r = edge_mask & (r < rcr)
    s_j = jnp.asarray(species)[jnp.clip(senders, 0, n_nodes - 1)]
    eta = jnp.asarray(params.radial_eta, dtype)[:, None]
    shifts = jnp.asarray(params.radial_shifts, dtype)[None, :]
    rad = 0.25 * jnp.exp(-eta * (r[:, None, None] - shifts) ** 2)  # [E, n_eta, n_shift]
    rad = rad.reshape(r.shape[0], -1) * (cosine_cutoff(r, rcr) * active_r)[:, None]
    radial = radial_sum(rad, receivers, s_j, n_nodes, params.num_species).reshape(n_nodes, -1)

    active_a = edge_mask & (r < rca)
    # [η_A, ζ, R_s, θ_s] broadcast shapes, flattened in that order (TorchANI)
    eta_a = jnp.asarray(params.angular_eta, dtype)[:, None, None, None]
    shf_a = jnp.asarray(params.angular_shifts, dtype)[None, None, :, None]
    cos_z = jnp.cos(jnp.asarray(params.angle_sections, dtype))[None, None, None, :]
    sin_z = jnp.sin(jnp.asarray(params.angle_sections, dtype))[None, None, None, :]

    def term(v_a, r_a, v_b, r_b):
        c = 0.95 * cos_angle(v_a, r_a, v_b, r_b)  # cos θ' with θ' = arccos(0.95 cos θ)
        s = jnp.sqrt(1.0 - c * c)  # ≥ √(1 − 0.95²) > 0: smooth
        c, s = c[..., None, None, None, None], s[..., None, None, None, None]
        base = (0.5 * (1.0 + c * cos_z + s * sin_z))[..., 0, 0, 0, :]  # (1 + cos(θ' − θ_s))/2 > 0, [N, K, n_θ]
        f1 = jnp.stack([static_pow(base[..., None], [z])[..., 0] for z in params.angular_zeta], axis=-2)
        f1 = f1[:, :, None, :, None, :]  # ((1 + cos(θ' − θ_s))/2)^ζ as [N, K, 1, n_ζ, 1, n_θ]
        mean_r = 0.5 * (r_a[:, None] + r_b)[..., None, None, None, None]
        f2 = jnp.exp(-eta_a * (mean_r - shf_a) ** 2)
        fcs = (cosine_cutoff(r_a, rca)[:, None] * cosine_cutoff(r_b, rca))[..., None, None, None, None]
        t = 2.0 * f1 * f2 * fcs  # [N, K, η, ζ, R_s, θ_s]
        return t.reshape(t.shape[0], t.shape[1], -1)

    r_fill = jnp.where(active_a, r, 2 * rca)
    angular, overflow = pair_sum(term, vectors, r_fill, active_a, s_j, receivers, n_nodes, max_neighbors,
                                  pair_index_upper(params.num_species))
    return jnp.concatenate([radial, angular.reshape(n_nodes, -1) * overflow_poison(overflow, dtype)], axis=1)
