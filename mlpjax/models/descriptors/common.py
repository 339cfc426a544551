"""What the descriptors share: species-pair layouts, pair sums over the edges into each atom,
sums over pairs of neighbours (the three-body terms, with a static neighbour table and an
overflow that poisons the features with NaN), safe powers and angles, and
:func:`for_structure` (a descriptor of one structure from a host neighbour list).
See :mod:`mlpjax.models.descriptors` for the common signature.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mlpjax.models.common import incoming_edge_table


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
# Pair sums and neighbour-pair (triplet) sums
# ---------------------------------------------------------------------------


def radial_sum(values: jax.Array, receivers, sender_species, num_nodes: int, num_species: int) -> jax.Array:
    """Σ over edges into each node, split by the sender's species.

    Args: values [n_edges, F] (already zero on inactive edges).
    Returns: [n_nodes, num_species, F].
    """
    seg = jnp.clip(receivers, 0, num_nodes - 1) * num_species + sender_species
    out = jax.ops.segment_sum(values, seg, num_segments=num_nodes * num_species)
    return out.reshape(num_nodes, num_species, values.shape[-1])


def overflow_poison(overflow: jax.Array, dtype) -> jax.Array:
    """1, or NaN when ``overflow`` (sqrt(−1), so that jax_debug_nans fires only on a real overflow)."""
    return 1.0 + jnp.sqrt(-overflow.astype(dtype))


def pair_sum(
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


def static_pow(x: jax.Array, exponents) -> jax.Array:
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


def pow_columns(base: jax.Array, exponents) -> jax.Array:
    """base [..., n] column c raised to the static exponents[c] (see :func:`static_pow`)."""
    return jnp.concatenate([static_pow(base[..., c:c + 1], [e]) for c, e in enumerate(np.asarray(exponents).ravel())],
                           axis=-1)


def cos_angle(v_a, r_a, v_b, r_b):
    """cos θ between v_a [N,3] and v_b [N,K,3] (lengths r_a [N], r_b [N,K], all > 0)."""
    return jnp.einsum("nd,nkd->nk", v_a, v_b) / (r_a[:, None] * r_b)


def distance_between(v_a, v_b, mask_safe: float = 1e-12):
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
# Descriptors of one structure (host neighbour list)
# ---------------------------------------------------------------------------


def for_structure(fn: Callable, params, structure, species: Sequence[int], *, cutoff: float | None = None,
                  max_neighbors: int | None = None, dtype=jnp.float64) -> jax.Array:
    """Evaluate a descriptor on one structure (ASE ``Atoms`` or :class:`mlpjax.data.Configuration`).

    Args:
      fn: :func:`~mlpjax.models.descriptors.acsf`, :func:`~mlpjax.models.descriptors.ani_aev`
        or :func:`~mlpjax.models.descriptors.soap`; params: its parameters.
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
