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
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mlpjax.models.common import cosine_cutoff, incoming_edge_table, safe_norm


# ---------------------------------------------------------------------------
# Species-pair layouts
# ---------------------------------------------------------------------------


def pair_index_dscribe(num_species: int) -> np.ndarray:
    """[S, S] int: unordered pair (a, b) → max(a,b)(max(a,b)+1)/2 + min(a,b) (dscribe's layout)."""
    a, b = np.meshgrid(np.arange(num_species), np.arange(num_species), indexing="ij")
    hi, lo = np.maximum(a, b), np.minimum(a, b)
    return hi * (hi + 1) // 2 + lo


def pair_index_upper(num_species: int) -> np.ndarray:
    """[S, S] int: unordered pair (a ≤ b) → row-major index in the upper triangle (TorchANI's layout)."""
    a, b = np.meshgrid(np.arange(num_species), np.arange(num_species), indexing="ij")
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return lo * num_species - lo * (lo - 1) // 2 + (hi - lo)


# ---------------------------------------------------------------------------
# Shared machinery: pair sums and neighbour-pair (triplet) sums
# ---------------------------------------------------------------------------


def _radial_sum(values: jax.Array, receivers, sender_species, num_nodes: int, num_species: int) -> jax.Array:
    """Σ over edges into each node, split by the sender's species.

    Args: values [n_edges, F] (already zero on inactive edges).
    Returns: [n_nodes, num_species, F].
    """
    seg = jnp.clip(receivers, 0, num_nodes - 1) * num_species + sender_species
    out = jax.ops.segment_sum(values, seg, num_segments=num_nodes * num_species)
    return out.reshape(num_nodes, num_species, values.shape[-1])


def _poison(overflow: jax.Array, dtype) -> jax.Array:
    """1, or NaN when ``overflow`` (sqrt(−1), so that jax_debug_nans fires only on a real overflow)."""
    return 1.0 + jnp.sqrt(-overflow.astype(dtype))


def _pair_sum(
    term_fn: Callable,
    vectors: jax.Array,
    r: jax.Array,
    active: jax.Array,
    sender_species: jax.Array,
    receivers: jax.Array,
    num_nodes: int,
    max_neighbors: int,
    pair_table: np.ndarray,
) -> tuple[jax.Array, jax.Array]:
    """Σ over unordered pairs {j, k} of distinct active edges into each centre i of
    ``term_fn``, split by the species pair of (j, k).

    Args:
      term_fn: (v_j [N,3], r_j [N], v_k [N,K,3], r_k [N,K]) -> [N, K, F] terms of the pair
        (slot a, every slot b); called with a padded slot only where its mask is False.
      vectors: [n_edges, 3] Å; r: [n_edges] Å (finite everywhere); active: [n_edges] bool.
      pair_table: [S, S] int species pair → index in [0, P).
    Returns: ([n_nodes, P, F] sums, overflow scalar bool).
    """
    n_edges = vectors.shape[0]
    num_pairs = int(pair_table.max()) + 1
    table, counts = incoming_edge_table(receivers, active, num_nodes, max_neighbors)  # [N, K]
    filled = table < n_edges
    safe_table = jnp.where(filled, table, 0)
    # empty slots hold a finite placeholder 1000 Å away: every cutoff function is 0 there and
    # no norm or angle divides by zero (the pair mask removes them anyway)
    fill = jnp.asarray([1.0, 0.0, 0.0], vectors.dtype) * 1e3
    v_tab = jnp.where(filled[..., None], vectors[safe_table], fill)  # [N, K, 3]
    r_tab = jnp.where(filled, r[safe_table], 1e3)  # [N, K]
    s_tab = jnp.where(filled, sender_species[safe_table], 0)  # [N, K]
    pairs = jnp.asarray(pair_table)
    slots = jnp.arange(max_neighbors)

    @jax.checkpoint
    def step(acc, a):
        v_a = v_tab[:, a]  # [N, 3]
        r_a = r_tab[:, a]
        terms = term_fn(v_a, r_a, v_tab, r_tab)  # [N, K, F]
        mask = filled[:, a][:, None] & filled & (slots[None, :] > a)  # [N, K]: unordered pairs once
        terms = jnp.where(mask[..., None], terms, 0.0)
        onehot = jax.nn.one_hot(pairs[s_tab[:, a][:, None], s_tab], num_pairs, dtype=terms.dtype)  # [N, K, P]
        return acc + jnp.einsum("nkp,nkf->npf", onehot, terms), None

    f = jax.eval_shape(lambda: term_fn(v_tab[:, 0], r_tab[:, 0], v_tab, r_tab)).shape[-1]
    acc0 = jnp.zeros((num_nodes, num_pairs, f), vectors.dtype)
    acc, _ = jax.lax.scan(step, acc0, slots)
    return acc, jnp.any(counts > max_neighbors)


def _static_pow(x: jax.Array, exponents) -> jax.Array:
    """x^ζ for x ≥ 0 [..., 1] and static exponents ζ [n] → [..., n].

    Integer ζ use repeated multiplication (``lax.integer_pow``): XLA's generic pow has a
    NaN derivative at x = 0 for ζ = 1 (0⁰ through exp(0·log 0)), which a masked branch
    would still turn into a NaN gradient. Non-integer ζ are made safe at x = 0 explicitly.
    """
    cols = []
    for e in np.asarray(exponents, np.float64).ravel():
        if float(e).is_integer():
            cols.append(jax.lax.integer_pow(x, int(e)))
        else:
            pos = x > 0
            cols.append(jnp.where(pos, jnp.where(pos, x, 1.0) ** e, 0.0))
    return jnp.concatenate(cols, axis=-1)


def _pow_columns(base: jax.Array, exponents) -> jax.Array:
    """base [..., n] column c raised to the static exponents[c] (see :func:`_static_pow`)."""
    return jnp.concatenate([_static_pow(base[..., c:c + 1], [e]) for c, e in enumerate(np.asarray(exponents).ravel())],
                           axis=-1)


def _cos_angle(v_a, r_a, v_b, r_b):
    """cos θ between v_a [N,3] and v_b [N,K,3] (lengths r_a [N], r_b [N,K], all > 0)."""
    return jnp.einsum("nd,nkd->nk", v_a, v_b) / (r_a[:, None] * r_b)


def _distance_between(v_a, v_b, mask_safe: float = 1e-12):
    """|v_b − v_a| [N, K] with a finite gradient even where the two coincide (padding)."""
    d2 = jnp.sum((v_b - v_a[:, None, :]) ** 2, axis=-1)
    small = d2 < mask_safe
    return jnp.where(small, 0.0, jnp.sqrt(jnp.where(small, 1.0, d2)))


def required_max_neighbors(graphs, cutoff: float) -> int:
    """The smallest ``max_neighbors`` holding every atom's neighbours within ``cutoff`` Å
    (for :class:`mlpjax.graph.AtomGraph` s or a :class:`mlpjax.graph.GraphBatch`). Add a
    margin for MD (denser packing at high temperature or pressure)."""
    from mlpjax.models.dimenet import required_max_neighbors as _req

    return _req(graphs, cutoff)


# ---------------------------------------------------------------------------
# Behler–Parrinello atom-centred symmetry functions
# ---------------------------------------------------------------------------


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
    radial = _radial_sum(jnp.concatenate(cols, axis=1), receivers, s_j, n_nodes, params.num_species)
    out = [radial.reshape(n_nodes, -1)]
    if params.num_angular:
        g4 = np.asarray(params.g4, np.float64).reshape(-1, 3)
        g5 = np.asarray(params.g5, np.float64).reshape(-1, 3)

        def term(v_a, r_a, v_b, r_b):
            cos = _cos_angle(v_a, r_a, v_b, r_b)[..., None]  # [N, K, 1]
            fc_a = cosine_cutoff(r_a, rc)[:, None, None]
            fc_b = cosine_cutoff(r_b, rc)[..., None]
            ra2, rb2 = (r_a**2)[:, None, None], (r_b**2)[..., None]
            parts = []
            if len(g4):
                r_jk = _distance_between(v_a, v_b)[..., None]
                eta, lam = jnp.asarray(g4[:, 0], dtype), jnp.asarray(g4[:, 2], dtype)
                ang = 2.0 * _pow_columns(jnp.clip(0.5 * (1.0 + lam * cos), 0.0, None), g4[:, 1])
                parts.append(ang * jnp.exp(-eta * (ra2 + rb2 + r_jk**2)) * fc_a * fc_b * cosine_cutoff(r_jk, rc))
            if len(g5):
                eta, lam = jnp.asarray(g5[:, 0], dtype), jnp.asarray(g5[:, 2], dtype)
                ang = 2.0 * _pow_columns(jnp.clip(0.5 * (1.0 + lam * cos), 0.0, None), g5[:, 1])
                parts.append(ang * jnp.exp(-eta * (ra2 + rb2)) * fc_a * fc_b)
            return jnp.concatenate(parts, axis=-1)

        r_fill = jnp.where(active, r, 2 * rc)  # only active edges enter the table anyway
        angular, overflow = _pair_sum(term, vectors, r_fill, active, s_j, receivers, n_nodes, max_neighbors,
                                      pair_index_dscribe(params.num_species))
        out.append(angular.reshape(n_nodes, -1) * _poison(overflow, dtype))
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


# ---------------------------------------------------------------------------
# ANI atomic environment vectors
# ---------------------------------------------------------------------------

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
    radial = _radial_sum(rad, receivers, s_j, n_nodes, params.num_species).reshape(n_nodes, -1)

    active_a = edge_mask & (r < rca)
    # [η_A, ζ, R_s, θ_s] broadcast shapes, flattened in that order (TorchANI)
    eta_a = jnp.asarray(params.angular_eta, dtype)[:, None, None, None]
    shf_a = jnp.asarray(params.angular_shifts, dtype)[None, None, :, None]
    cos_z = jnp.cos(jnp.asarray(params.angle_sections, dtype))[None, None, None, :]
    sin_z = jnp.sin(jnp.asarray(params.angle_sections, dtype))[None, None, None, :]

    def term(v_a, r_a, v_b, r_b):
        c = 0.95 * _cos_angle(v_a, r_a, v_b, r_b)  # cos θ' with θ' = arccos(0.95 cos θ)
        s = jnp.sqrt(1.0 - c * c)  # ≥ √(1 − 0.95²) > 0: smooth
        c, s = c[..., None, None, None, None], s[..., None, None, None, None]
        base = (0.5 * (1.0 + c * cos_z + s * sin_z))[..., 0, 0, 0, :]  # (1 + cos(θ' − θ_s))/2 > 0, [N, K, n_θ]
        f1 = jnp.stack([_static_pow(base[..., None], [z])[..., 0] for z in params.angular_zeta], axis=-2)
        f1 = f1[:, :, None, :, None, :]  # ((1 + cos(θ' − θ_s))/2)^ζ as [N, K, 1, n_ζ, 1, n_θ]
        mean_r = 0.5 * (r_a[:, None] + r_b)[..., None, None, None, None]
        f2 = jnp.exp(-eta_a * (mean_r - shf_a) ** 2)
        fcs = (cosine_cutoff(r_a, rca)[:, None] * cosine_cutoff(r_b, rca))[..., None, None, None, None]
        t = 2.0 * f1 * f2 * fcs  # [N, K, η, ζ, R_s, θ_s]
        return t.reshape(t.shape[0], t.shape[1], -1)

    r_fill = jnp.where(active_a, r, 2 * rca)
    angular, overflow = _pair_sum(term, vectors, r_fill, active_a, s_j, receivers, n_nodes, max_neighbors,
                                  pair_index_upper(params.num_species))
    return jnp.concatenate([radial, angular.reshape(n_nodes, -1) * _poison(overflow, dtype)], axis=1)


# ---------------------------------------------------------------------------
# SOAP power spectrum
# ---------------------------------------------------------------------------


def gto_basis(r_cut: float, n_max: int, l_max: int) -> tuple[np.ndarray, np.ndarray]:
    """dscribe's orthonormal GTO radial basis g_nl(r) = Σ_k β_lnk r^l exp(−α_lk r²).

    α_lk: the k-th primitive decays to 10⁻³ at a_k (a_k evenly spaced on [1 Å, r_cut]),
    α_lk = −ln(10⁻³ / a_k^l) / a_k². β_l = S_l^{−1/2} (Löwdin orthonormalisation, S_l the
    overlap of the primitives on [0, ∞) with weight r²).
    Returns: alphas [l_max + 1, n_max] Å⁻², betas [l_max + 1, n_max, n_max] (Å^{−l−3/2}).
    """
    from math import gamma

    if r_cut <= 1.0:
        raise ValueError("the GTO basis needs r_cut > 1 Å (its primitives are spread from 1 Å to r_cut)")
    a = np.linspace(1.0, r_cut, n_max)
    alphas = np.zeros((l_max + 1, n_max))
    betas = np.zeros((l_max + 1, n_max, n_max))
    for l in range(l_max + 1):
        al = -np.log(1e-3 / a**l) / a**2
        m = al[:, None] + al[None, :]
        overlap = 0.5 * gamma(l + 1.5) * m ** (-l - 1.5)
        w, v = np.linalg.eigh(overlap)
        if np.any(w <= 0):
            raise ValueError("GTO overlap matrix is not positive definite: lower n_max or raise r_cut")
        alphas[l] = al
        betas[l] = (v * w**-0.5) @ v.T  # S^{-1/2}
    return alphas, betas


@dataclasses.dataclass(frozen=True)
class SOAPParams:
    """Smooth overlap of atomic positions, power spectrum (Bartók, Kondor & Csányi, PRB 87,
    184115 (2013)) with dscribe's GTO radial basis.

    Neighbour density of species Z around atom i: ρ_i^Z(x) = Σ_{j∈Z} w(r_ij) exp(−|x − r_ij|²/(2σ²))
    (the centre atom included, at r = 0); expanded as c^Z_nlm = ∫ g_nl(|x|) Y_lm(x̂) ρ_i^Z(x) d³x
    analytically (the integral runs over all space; with real, orthonormal Y_lm); power spectrum
    p^{Z1 Z2}_{n n' l} = π √(8 / (2l + 1)) Σ_m c^{Z1}_nlm c^{Z2}_n'lm (dscribe's prefactor).

    ``envelope``: the neighbour weight w(r). ``"cosine"`` (default) multiplies each neighbour's
    Gaussian by f_c(r; r_cut), so the descriptor — and a potential built on it — is smooth as
    atoms cross the cutoff. ``"none"`` is dscribe's convention: w = 1 for neighbours within
    r_cut + σ √(−2 ln 10⁻³) (``dscribe_cutoff``) and 0 beyond (a small step at that radius);
    with it, the numbers equal ``dscribe.descriptors.SOAP(rbf="gto", compression off)``
    (tests/test_descriptors.py). Layout (dscribe's): for species pairs Z1 ≤ Z2 (sorted Z), the
    block of (l, n, n') with n' fastest, n ≤ n' when Z1 = Z2.

    ``radial_scaling = (c, r0, m)`` multiplies each neighbour's weight by
    u(r) = c / (c + (r / r0)^m) (Willatt, Musil & Ceriotti, PCCP 20, 29661 (2018); librascal /
    featomic's "Willatt2018" scaling); the centre atom keeps weight 1. It down-weights the many
    distant neighbours, which otherwise dominate the power spectrum of dense materials. ``None``
    (default) = no scaling (dscribe's descriptor). (On rMD17 ethanol, a molecule that fits inside
    one cutoff, (1, 2 Å, 7) and (1, 3 Å, 6) made a GAP worse: 64 → 76 meV/Å on 300 structures.)
    """

    r_cut: float  # Å
    n_max: int
    l_max: int
    sigma: float  # Å, width of the atomic Gaussians
    num_species: int
    envelope: str = "cosine"  # "cosine" | "none" (dscribe)
    normalize: bool = False  # divide each atom's vector by its Euclidean norm
    radial_scaling: tuple[float, float, float] | None = None  # (c, r0 [Å], m): u(r) = c / (c + (r/r0)^m)

    def __post_init__(self):
        if self.radial_scaling is not None:
            rs = tuple(float(v) for v in self.radial_scaling)
            if len(rs) != 3 or rs[0] <= 0 or rs[1] <= 0 or rs[2] < 0:
                raise ValueError(f"SOAP radial_scaling must be (c > 0, r0 > 0, m ≥ 0), got {self.radial_scaling!r}")
            object.__setattr__(self, "radial_scaling", rs)
        if self.envelope not in ("cosine", "none"):
            raise ValueError(f"SOAP envelope must be 'cosine' or 'none', got {self.envelope!r}")
        if self.n_max < 1 or self.l_max < 0 or self.sigma <= 0:
            raise ValueError("SOAP needs n_max ≥ 1, l_max ≥ 0, sigma > 0")

    @property
    def dscribe_cutoff(self) -> float:
        """Å, where dscribe stops adding neighbours (r_cut + σ √(−2 ln 10⁻³))."""
        return float(self.r_cut + self.sigma * math.sqrt(-2.0 * math.log(1e-3)))

    @property
    def neighbor_cutoff(self) -> float:
        """Å, the neighbour-list cutoff this descriptor needs."""
        return float(self.r_cut) if self.envelope == "cosine" else self.dscribe_cutoff

    @property
    def num_features(self) -> int:
        sn = self.num_species * self.n_max
        return sn * (sn + 1) // 2 * (self.l_max + 1)


def _soap_radial_table(p: SOAPParams):
    """Host constants of the analytic radial integral.

    c_nlm(j) = 4π Y_lm(r̂) Σ_k β_lnk √π (2η r)^l exp(−α_lk η r² / (α_lk + η)) / (2^{l+2} (α_lk + η)^{l+3/2}),
    η = 1/(2σ²). Returns (coef [L+1, n, k] = 4π √π β_lnk (2η)^l / (2^{l+2} (α_lk + η)^{l+3/2}),
    decay [L+1, k] = α_lk η / (α_lk + η)), so that c_nlm = Σ_k coef_lnk exp(−decay_lk r²) · r^l Y_lm(r̂).
    """
    alphas, betas = gto_basis(p.r_cut, p.n_max, p.l_max)
    eta = 1.0 / (2.0 * p.sigma**2)
    ls = np.arange(p.l_max + 1)[:, None]
    a = alphas + eta  # [L+1, k]
    pref = 4.0 * np.pi * np.sqrt(np.pi) * (2.0 * eta) ** ls / (2.0 ** (ls + 2) * a ** (ls + 1.5))  # [L+1, k]
    coef = betas * pref[:, None, :]  # [L+1, n, k]
    decay = alphas * eta / a
    return coef, decay


def _soap_pair_layout(num_species: int, n_max: int, l_max: int) -> tuple[np.ndarray, ...]:
    """Index arrays (z1, n1, z2, n2, l) of every output feature in dscribe's order."""
    rows = []
    for z1 in range(num_species):
        for z2 in range(z1, num_species):
            for l in range(l_max + 1):
                for n1 in range(n_max):
                    for n2 in range(n1 if z1 == z2 else 0, n_max):
                        rows.append((z1, n1, z2, n2, l))
    return tuple(np.asarray(c) for c in zip(*rows))


def soap(
    params: SOAPParams,
    vectors: jax.Array,
    species: jax.Array,
    senders: jax.Array,
    receivers: jax.Array,
    edge_mask: jax.Array,
    *,
    max_neighbors: int | None = None,
) -> jax.Array:
    """SOAP power spectrum [n_nodes, params.num_features] (see :class:`SOAPParams`).

    Only pair sums are needed (the expansion coefficients), so there is no neighbour
    capacity: ``max_neighbors`` is accepted for a uniform signature and ignored.
    """
    import e3nn_jax as e3nn

    del max_neighbors
    n_nodes = species.shape[0]
    dtype = vectors.dtype
    L, nmax, S = params.l_max, params.n_max, params.num_species
    rcut_nb = params.neighbor_cutoff
    r = safe_norm(vectors, edge_mask, rcut_nb)
    active = edge_mask & (r < rcut_nb)
    if params.envelope == "cosine":
        weight = cosine_cutoff(r, params.r_cut) * active
    else:
        weight = active.astype(dtype)
    if params.radial_scaling is not None:
        c_rs, r0_rs, m_rs = params.radial_scaling
        weight = weight * (c_rs / (c_rs + (r / r0_rs) ** m_rs))
    coef_np, decay_np = _soap_radial_table(params)
    coef, decay = jnp.asarray(coef_np, dtype), jnp.asarray(decay_np, dtype)
    radial = jnp.einsum("lnk,elk->eln", coef, jnp.exp(-decay[None] * (r**2)[:, None, None]))  # [E, L+1, n]
    # solid harmonics r^l Y_lm(r̂) (real, orthonormal on the sphere): polynomials, smooth at r = 0
    safe_vec = jnp.where(edge_mask[:, None], vectors, 0.0)
    sh = e3nn.spherical_harmonics(e3nn.Irreps.spherical_harmonics(L, p=1), safe_vec, normalize=False,
                                  normalization="integral").array  # [E, (L+1)²]
    l_of = np.concatenate([[l] * (2 * l + 1) for l in range(L + 1)])
    per_edge = radial[:, l_of, :] * sh[:, :, None] * weight[:, None, None]  # [E, (L+1)², n]
    s_j = jnp.asarray(species)[jnp.clip(senders, 0, n_nodes - 1)]
    c = _radial_sum(per_edge.reshape(per_edge.shape[0], (L + 1) ** 2 * nmax), receivers, s_j, n_nodes, S)
    c = c.reshape(n_nodes, S, (L + 1) ** 2, nmax)
    # the centre atom's own Gaussian (r = 0: only l = 0, Y_00 = 1/√(4π))
    self_c0 = jnp.asarray(coef_np[0].sum(-1) / math.sqrt(4.0 * math.pi), dtype)  # [n]
    own = jax.nn.one_hot(species, S, dtype=dtype)  # [N, S]
    c = c.at[:, :, 0, :].add(own[:, :, None] * self_c0[None, None, :])
    # power spectrum per l: Σ_m c^{Z1}_{n l m} c^{Z2}_{n' l m}
    blocks = []
    for l in range(L + 1):
        cl = c[:, :, l * l:(l + 1) ** 2, :]  # [N, S, 2l+1, n]
        blocks.append(jnp.einsum("iamx,ibmy->iaxby", cl, cl) * (math.pi * math.sqrt(8.0 / (2 * l + 1))))
    full = jnp.stack(blocks, axis=-1)  # [N, S, n, S, n, L+1]
    z1, n1, z2, n2, l = _soap_pair_layout(S, nmax, L)
    out = full[:, z1, n1, z2, n2, l]
    if params.normalize:
        norm2 = jnp.sum(out * out, axis=-1, keepdims=True)
        out = out / jnp.sqrt(jnp.where(norm2 > 0, norm2, 1.0))
    return out


# ---------------------------------------------------------------------------
# Convenience: descriptors of one structure (host neighbour list)
# ---------------------------------------------------------------------------


def for_structure(fn: Callable, params, structure, species: Sequence[int], *, cutoff: float | None = None,
                  max_neighbors: int | None = None, dtype=jnp.float64) -> jax.Array:
    """Evaluate a descriptor on one structure (ASE ``Atoms`` or :class:`mlpjax.data.Configuration`).

    Args:
      fn: :func:`acsf` or :func:`ani_aev`; params: its parameters.
      species: sorted atomic numbers defining the element resolution (e.g. ``(1, 6, 8)``).
      cutoff: Å for the neighbour list (default: the descriptor's largest cutoff).
      max_neighbors: default = exactly what this structure needs (+1).
    Returns: [n_atoms, n_features].
    """
    from mlpjax.data import Configuration
    from mlpjax.graph import species_indices
    from mlpjax.graph.neighbors import neighbor_list

    if not isinstance(structure, Configuration):
        structure = Configuration(positions=np.asarray(structure.get_positions()), numbers=np.asarray(structure.numbers),
                                  cell=np.asarray(structure.cell[:]), pbc=np.asarray(structure.pbc))
    rc = cutoff or float(getattr(params, "neighbor_cutoff", None) or getattr(params, "cutoff", None) or params.radial_cutoff)
    edges = neighbor_list(structure.positions, structure.cell, structure.pbc, rc)
    pos = np.asarray(structure.positions, np.float64)
    vec = pos[edges.senders] - pos[edges.receivers] + np.asarray(edges.shifts, np.float64) @ np.asarray(structure.cell, np.float64).reshape(3, 3)
    idx = species_indices(structure.numbers, species)
    if max_neighbors is None:
        ang_rc = getattr(params, "angular_cutoff", rc)
        close = np.linalg.norm(vec, axis=-1) < ang_rc
        max_neighbors = int(np.bincount(edges.receivers[close], minlength=1).max()) + 1 if close.any() else 1
    # one masked padding edge, so that a structure without neighbours has valid (non-empty) edge arrays
    vec = np.concatenate([vec, np.zeros((1, 3))])
    snd = np.concatenate([np.asarray(edges.senders), [0]])
    rcv = np.concatenate([np.asarray(edges.receivers), [0]])
    mask = np.arange(len(snd)) < len(snd) - 1
    return fn(params, jnp.asarray(vec, dtype), jnp.asarray(idx), jnp.asarray(snd), jnp.asarray(rcv), jnp.asarray(mask),
              max_neighbors=max_neighbors)
