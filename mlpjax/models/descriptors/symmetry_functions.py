"""Behler–Parrinello atom-centred symmetry functions (ACSF) in dscribe's layout, and a standard
grid of them from a cutoff. Formulas and layout: :mod:`mlpjax.models.descriptors`."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mlpjax.models.common import cosine_cutoff, safe_norm
from mlpjax.models.descriptors.common import (
    cos_angle,
    distance_between,
    overflow_poison,
    pair_index_dscribe,
    pair_sum,
    pow_columns,
    radial_sum,
)


@dataclasses.dataclass(frozen=True)
class ACSFParams:
    """Symmetry-function set (see the module docstring for the formulas and layout)."""

    cutoff: float  # Å, r_c of f_c (every term)
    num_species: int  # S, element resolution (species index = position in sorted Z)
    g2: tuple[tuple[float, float], ...] = ()  # (η [Å⁻²], R_s [Å]) per G2
    g3: tuple[float, ...] = ()  # κ [Å⁻¹] per G3
    g4: tuple[tuple[float, float, float], ...] = ()  # (η [Å⁻²], ζ, λ = ±1) per G4
    g5: tuple[tuple[float, float, float], ...] = ()  # (η [Å⁻²], ζ, λ = ±1) per G5

    def __post_init__(self):
        object.__setattr__(self, "g2", tuple(tuple(float(x) for x in p) for p in self.g2))
        object.__setattr__(self, "g3", tuple(float(x) for x in self.g3))
        object.__setattr__(self, "g4", tuple(tuple(float(x) for x in p) for p in self.g4))
        object.__setattr__(self, "g5", tuple(tuple(float(x) for x in p) for p in self.g5))
        for name, n in (("g2", 2), ("g4", 3), ("g5", 3)):
            for p in getattr(self, name):
                if len(p) != n:
                    raise ValueError(f"ACSF {name} parameters need {n} numbers each, got {p}")
        for name in ("g4", "g5"):
            for eta, zeta, lam in getattr(self, name):
                if lam not in (-1.0, 1.0) or zeta < 1 or eta < 0:
                    raise ValueError(f"ACSF {name} needs η ≥ 0, ζ ≥ 1, λ = ±1; got {(eta, zeta, lam)}")
        if self.cutoff <= 0 or self.num_species < 1:
            raise ValueError("ACSF needs cutoff > 0 and num_species ≥ 1")

    @property
    def num_radial(self) -> int:
        return 1 + len(self.g2) + len(self.g3)

    @property
    def num_angular(self) -> int:
        return len(self.g4) + len(self.g5)

    @property
    def num_features(self) -> int:
        s = self.num_species
        return self.num_radial * s + self.num_angular * s * (s + 1) // 2


def acsf(
    params: ACSFParams,
    vectors: jax.Array,
    species: jax.Array,
    senders: jax.Array,
    receivers: jax.Array,
    edge_mask: jax.Array,
    *,
    max_neighbors: int = 64,
) -> jax.Array:
    """Atom-centred symmetry functions [n_nodes, params.num_features] (dimensionless).

    Args:
      vectors: [n_edges, 3] Å; species: [n_nodes] int species index; senders, receivers:
        [n_edges] int; edge_mask: [n_edges] bool.
      max_neighbors: slots per atom for the angular terms (only used when G4/G5 are
        requested); more neighbours within the cutoff → NaN features.
    """
    rc = float(params.cutoff)
    n_nodes = species.shape[0]
    dtype = vectors.dtype
    r = safe_norm(vectors, edge_mask, rc)  # [n_edges] Å
    active = edge_mask & (r < rc)
    fc = cosine_cutoff(r, rc) * active  # [n_edges]
    s_j = jnp.asarray(species)[jnp.clip(senders, 0, n_nodes - 1)]
    cols = [fc[:, None]]
    if params.g2:
        eta, rs = (jnp.asarray(x, dtype) for x in zip(*params.g2))
        cols.append(jnp.exp(-eta * (r[:, None] - rs) ** 2) * fc[:, None])
    if params.g3:
        kappa = jnp.asarray(params.g3, dtype)
        cols.append(jnp.cos(kappa * r[:, None]) * fc[:, None])
    radial = radial_sum(jnp.concatenate(cols, axis=1), receivers, s_j, n_nodes, params.num_species)
    out = [radial.reshape(n_nodes, -1)]
    if params.num_angular:
        g4 = np.asarray(params.g4, np.float64).reshape(-1, 3)
        g5 = np.asarray(params.g5, np.float64).reshape(-1, 3)

        def term(v_a, r_a, v_b, r_b):
            cos = cos_angle(v_a, r_a, v_b, r_b)[..., None]  # [N, K, 1]
            fc_a = cosine_cutoff(r_a, rc)[:, None, None]
            fc_b = cosine_cutoff(r_b, rc)[..., None]
            ra2, rb2 = (r_a**2)[:, None, None], (r_b**2)[..., None]
            parts = []
            if len(g4):
                r_jk = distance_between(v_a, v_b)[..., None]
                eta, lam = jnp.asarray(g4[:, 0], dtype), jnp.asarray(g4[:, 2], dtype)
                ang = 2.0 * pow_columns(jnp.clip(0.5 * (1.0 + lam * cos), 0.0, None), g4[:, 1])
                parts.append(ang * jnp.exp(-eta * (ra2 + rb2 + r_jk**2)) * fc_a * fc_b * cosine_cutoff(r_jk, rc))
            if len(g5):
                eta, lam = jnp.asarray(g5[:, 0], dtype), jnp.asarray(g5[:, 2], dtype)
                ang = 2.0 * pow_columns(jnp.clip(0.5 * (1.0 + lam * cos), 0.0, None), g5[:, 1])
                parts.append(ang * jnp.exp(-eta * (ra2 + rb2)) * fc_a * fc_b)
            return jnp.concatenate(parts, axis=-1)

        r_fill = jnp.where(active, r, 2 * rc)  # only active edges enter the table anyway
        angular, overflow = pair_sum(term, vectors, r_fill, active, s_j, receivers, n_nodes, max_neighbors,
                                      pair_index_dscribe(params.num_species))
        out.append(angular.reshape(n_nodes, -1) * overflow_poison(overflow, dtype))
    return jnp.concatenate(out, axis=1)


def acsf_grid(
    cutoff: float,
    num_species: int,
    *,
    n_radial: int = 8,
    scheme: str = "shifted",
    r_min: float = 0.5,
    zetas: Sequence[float] = (1.0, 4.0, 16.0),
    n_angular_eta: int = 2,
    kind: str = "g5",
) -> ACSFParams:
    """A standard symmetry-function set from a cutoff (Imbalzano et al., J. Chem. Phys.
    148, 241730 (2018), "shifted" and "centred" radial schemes).

    Radial grid r_m = r_min + m (r_c − r_min)/(n_radial − 1), m = 0…n−1, spacing Δ:

    * ``"shifted"``: G2 centred at R_s = r_m with width η = 1/(2Δ²) — even coverage of
      [r_min, r_c];
    * ``"centered"``: R_s = 0 and η_m = 1/(2 r_m²) — Gaussians of growing width at the
      centre atom (no shift), the original Behler choice.

    Angular terms (``kind`` "g4" or "g5"): for each ζ in ``zetas`` and λ = ±1, the
    ``n_angular_eta`` centred widths η = 1/(2 r²) with r spread over [r_c/3, r_c].
    """
    if n_radial < 2:
        raise ValueError("n_radial must be ≥ 2")
    grid = np.linspace(r_min, cutoff, n_radial)
    delta = grid[1] - grid[0]
    if scheme == "shifted":
        g2 = tuple((1.0 / (2.0 * delta**2), float(rs)) for rs in grid)
    elif scheme in ("centered", "centred"):
        g2 = tuple((1.0 / (2.0 * float(rm) ** 2), 0.0) for rm in grid)
    else:
        raise ValueError(f"unknown ACSF radial scheme {scheme!r}: 'shifted' or 'centered'")
    ang_r = np.linspace(cutoff / 3.0, cutoff, max(n_angular_eta, 1))
    ang = tuple((1.0 / (2.0 * float(rm) ** 2), float(z), lam) for rm in ang_r for z in zetas for lam in (1.0, -1.0))
    if kind not in ("g4", "g5"):
        raise ValueError(f"kind must be 'g4' or 'g5', got {kind!r}")
    return ACSFParams(cutoff=float(cutoff), num_species=int(num_species), g2=g2,
                      g4=ang if kind == "g4" else (), g5=ang if kind == "g5" else ())
