"""DimeNet++ (Klicpera, Giri, Margraf, Günnemann, "Fast and uncertainty-aware
directional message passing for non-equilibrium molecules", NeurIPS-W 2020,
arXiv:2011.14115) in Flax linen, built on DimeNet (Klicpera, Groß, Günnemann,
ICLR 2020, arXiv:2003.03123).

Directional message passing: messages m_ji live on directed edges j → i and are
updated from the messages m_kj of the edges k → j arriving at j, weighted by a
2-D spherical Fourier–Bessel basis of (d_kj, α) with α the angle between the
edges. DimeNet++ does the triplet contraction in a small ``int_emb`` space
(down/up projections around it), a ``basis_emb`` bottleneck on the bases, and
output blocks with an ``out_emb`` up-projection; per-atom outputs are the sum of
``num_blocks + 1`` output blocks.

**Triplets on device, static shapes.** In jax-md the neighbour list is produced on
the device, so triplets cannot come from the host. Inside the model:

1. an edge is *active* if ``edge_mask`` and r < cutoff (jax-md's Sparse list also
   holds skin pairs in [r_c, r_c + skin) and padding whose receiver is n_nodes);
2. a per-node table of incoming active edges ``[n_nodes, max_neighbors]`` from a
   stable argsort of the receivers (inactive edges sorted last) and the rank of
   each edge within its receiver group;
3. triplets ``[n_edges, max_neighbors]``: for edge e1 = (j → i) the slots are the
   incoming edges e2 = (k → j) of node j, excluding the reverse edge by geometry,
   |v1 + v2| > 1e-2 Å (not by index), so periodic images of i do form triplets.

The triplet sum of each edge is then a sum over the ``max_neighbors`` axis, done
``triplet_chunk`` slots at a time in a rematerialised (``jax.checkpoint``) scan, so
memory is O(n_edges · triplet_chunk) per feature, not O(n_edges · max_neighbors):
a 16,384-atom Cu cell has ~4·10⁷ triplet slots per interaction.
**Overflow is loud, never silent:** if any node has more than ``max_neighbors``
active incoming edges, triplets would be dropped, so the per-atom outputs are
multiplied by NaN, which makes energies, forces and stress NaN (training and MD
stop). Raise ``max_neighbors`` in the ``model_config`` (YAML ``model_config:
{max_neighbors: ...}``); :func:`required_max_neighbors` gives the value a data set
needs (the maximum number of neighbours within the cutoff; add a margin for MD,
where atoms pack more densely at high temperature or pressure). Memory and time
grow linearly with ``max_neighbors``.

**Bases.** Radial: u(x) sin(nπx)/x with x = r/r_c, n = 1..num_radial, and u the
polynomial envelope of DimeNet with ``envelope_exponent`` p (DimeNet's p = 5 is
:func:`mlpjax.models.common.polynomial_cutoff` with its p = envelope_exponent + 1 = 6,
i.e. 1 − 28x⁶ + 48x⁷ − 21x⁸, smooth to second order at the cutoff). Angular:
sqrt(2)/|j_{l+1}(z_ln)| j_l(z_ln x) u(x)/x · Y_l0(α) with z_ln the n-th root of the
spherical Bessel function j_l (DimeNet's normalisation; l < num_spherical,
n ≤ num_radial). The roots are found with SciPy at construction (host, static);
j_l(z_ln x) on x ∈ [0, 1] is evaluated through a Chebyshev expansion fitted on the
host (error < 1e-13), which is stable for small arguments in float32, unlike the
closed forms/upward recurrence (catastrophic cancellation for x < l); its
derivative is the differentiated Chebyshev series (custom JVP, no stored
intermediates).

**Angles.** Y_l0(α) ∝ P_l(cos α) needs only cos α = v1·v2 / (|v1||v2|) (with v1 =
R_j − R_i and v2 = R_k − R_j the edge vectors, the convention of the reference
implementations' atan2(|v1×v2|, v1·v2)). cos α is computed directly — no arccos
(infinite derivative at ±1) and no atan2 of |v1×v2| (whose norm has an infinite
derivative for collinear triplets, which are common in crystals); cos α is smooth
in the positions wherever the edge lengths are non-zero.

Deviations from the paper: (a) edge sums in the output blocks and triplet sums in
the interaction blocks are divided by ``avg_num_neighbors`` (as in NequIP/MACE and
mlpjax's SchNet) so that dense metals do not blow up activations
(``avg_num_neighbors = 1`` recovers the paper); (b) Flax default (LeCun normal)
initialisation instead of Glorot-orthogonal, and the final output layer is not
zero-initialised (an untrained model then already depends on geometry); (c) the
per-atom output is dimensionless, scaled and shifted by
:class:`mlpjax.potential.Potential`; (d) the reverse-edge exclusion is geometric
(see above). Forces and stress come from the potential's single ``jax.grad``.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mlpjax.models.common import EdgeModel, incoming_edge_table, polynomial_cutoff, safe_norm  # noqa: F401 (re-exported)

REVERSE_EDGE_TOL = 1e-2  # Å: e2 is the reverse of e1 when |v1 + v2| is below this


@dataclasses.dataclass(frozen=True)
class DimeNetConfig:
    """DimeNet++ hyperparameters (the YAML ``model_config:`` block maps 1:1 onto these).

    Defaults = the reference implementation's DimeNet++ configuration (gasteigerjo/dimenet
    ``config_pp.yaml``, the paper's QM9/MD17 setting; PyTorch Geometric's ``DimeNetPlusPlus``
    has the same defaults for the options it defaults): ``emb_size`` 128 (here ``hidden``),
    ``out_emb_size`` 256, ``int_emb_size`` 64, ``basis_emb_size`` 8, ``num_blocks`` 4,
    ``num_spherical`` 7, ``num_radial`` 6, ``envelope_exponent`` 5, ``num_before_skip`` 1,
    ``num_after_skip`` 2, ``num_dense_output`` 3 (here ``num_output_layers``); its ``cutoff`` 5 Å
    is the training config's default. ``max_neighbors`` and ``triplet_chunk`` are this
    implementation's (static triplet capacity, see the module docstring); the reference's
    ``output_init`` and Glorot-orthogonal initialisation are not options (deviation (b) above).
    A CPU-sized setting is the ``small`` preset (:mod:`mlpjax.presets`,
    ``experiments/configs/dimenet_rmd17cpu.yaml``).
    """

    hidden: int = 128  # edge message width
    out_emb: int = 256  # output-block width after the up-projection
    int_emb: int = 64  # triplet interaction width (down-projection of messages)
    basis_emb: int = 8  # bottleneck width of the radial and spherical bases
    num_blocks: int = 4  # interaction blocks
    num_spherical: int = 7  # angular degrees l = 0..num_spherical-1
    num_radial: int = 6  # radial Bessel functions
    envelope_exponent: int = 5  # DimeNet's p (polynomial_cutoff with p + 1)
    num_before_skip: int = 1  # residual layers before the skip connection
    num_after_skip: int = 2  # residual layers after the skip connection
    num_output_layers: int = 3  # dense layers in each output block
    # Static triplet capacity: max incoming edges within the cutoff per atom. A node
    # with more makes the energy NaN (never a silent drop); see required_max_neighbors.
    max_neighbors: int = 64
    # Triplet slots processed per step of a rematerialised scan: memory ~ n_edges ·
    # triplet_chunk instead of n_edges · max_neighbors (larger is faster on GPUs).
    triplet_chunk: int = 8


# ---------------------------------------------------------------------------
# Host-side helpers
# ---------------------------------------------------------------------------


def required_max_neighbors(graphs_or_counts, cutoff: float | None = None) -> int:
    """The smallest ``max_neighbors`` that holds every atom's incoming edges.

    Args:
      graphs_or_counts: an :class:`mlpjax.graph.AtomGraph`, a sequence of them, a
        :class:`mlpjax.graph.GraphBatch`, or an array of per-atom neighbour counts.
      cutoff: Å; if given, only edges shorter than this count (the model ignores
        longer ones, e.g. the skin of a jax-md neighbour list). Graphs built with the
        potential's cutoff need none.
    Returns: the maximum number of incoming edges of any atom (0 for no edges). Use
      a margin above it for MD (denser packing at high temperature/pressure).
    """
    from mlpjax.graph import AtomGraph

    items = graphs_or_counts
    if isinstance(items, AtomGraph) or hasattr(items, "edge_mask"):
        items = [items]
    if isinstance(items, (list, tuple)) and items and (isinstance(items[0], AtomGraph) or hasattr(items[0], "edge_mask")):
        best = 0
        for g in items:
            if isinstance(g, AtomGraph):
                recv, keep = np.asarray(g.edges.receivers), np.ones(len(g.edges.receivers), bool)
                vec = _host_edge_vectors(g) if cutoff is not None else None
            else:  # GraphBatch
                recv, keep = np.asarray(g.receivers), np.asarray(g.edge_mask, bool)
                vec = None
                if cutoff is not None:
                    edge_graph = np.asarray(g.node_graph)[recv]
                    pos = np.asarray(g.positions, np.float64)
                    vec = pos[np.asarray(g.senders)] - pos[recv] + np.einsum(
                        "ei,eij->ej", np.asarray(g.shifts, np.float64), np.asarray(g.cell, np.float64)[edge_graph]
                    )
            if vec is not None:
                keep = keep & (np.linalg.norm(vec, axis=-1) < cutoff)
            if np.any(keep):
                best = max(best, int(np.bincount(recv[keep]).max()))
        return best
    counts = np.asarray(items)
    return int(counts.max()) if counts.size else 0


def _host_edge_vectors(g) -> np.ndarray:
    c = g.config
    shifts = np.asarray(g.edges.shifts, np.float64)
    cell = np.asarray(c.cell, np.float64).reshape(3, 3)
    pos = np.asarray(c.positions, np.float64)
    return pos[g.edges.senders] - pos[g.edges.receivers] + shifts @ cell


@functools.lru_cache(maxsize=None)
def spherical_bessel_roots(num_spherical: int, num_radial: int) -> np.ndarray:
    """z_ln, the first ``num_radial`` positive roots of j_l, l < num_spherical: [L, N].

    Roots of j_l interlace those of j_{l-1}, so each is bracketed (as in DimeNet).
    """
    from scipy.optimize import brentq
    from scipy.special import spherical_jn

    L, N = num_spherical, num_radial
    roots = np.zeros((L, N))
    points = np.arange(1, N + L + 1) * np.pi  # roots of j_0
    roots[0] = points[:N]
    for l in range(1, L):
        points = np.array(
            [brentq(lambda x: spherical_jn(l, x), points[i], points[i + 1], xtol=1e-15) for i in range(len(points) - 1)]
        )
        roots[l] = points[:N]
    return roots


@functools.lru_cache(maxsize=None)
def _sbf_chebyshev(num_spherical: int, num_radial: int) -> np.ndarray:
    """Chebyshev coefficients [deg + 1, L*N] on x ∈ [0, 1] of the normalised
    sqrt(2)/|j_{l+1}(z_ln)| · j_l(z_ln x) (index l*N + n), fitted to < 1e-13."""
    from numpy.polynomial import chebyshev
    from scipy.special import spherical_jn

    z = spherical_bessel_roots(num_spherical, num_radial)
    norm = np.sqrt(2.0) / np.abs(spherical_jn(np.arange(1, num_spherical + 1)[:, None], z))
    fns = [(l, n) for l in range(num_spherical) for n in range(num_radial)]
    grid = np.linspace(0.0, 1.0, 4001)
    exact = np.stack([norm[l, n] * spherical_jn(l, z[l, n] * grid) for l, n in fns], axis=1)
    for deg in range(8, 200, 4):
        coeffs = np.stack(
            [chebyshev.chebinterpolate(lambda t, l=l, n=n: norm[l, n] * spherical_jn(l, z[l, n] * (t + 1) / 2), deg) for l, n in fns],
            axis=1,
        )
        if np.max(np.abs(chebyshev.chebval(2 * grid - 1, coeffs).T - exact)) < 1e-13 * max(1.0, np.max(np.abs(exact))):
            return coeffs
    raise RuntimeError("spherical Bessel Chebyshev fit did not converge")  # pragma: no cover


def _clenshaw(x: jax.Array, coeffs: np.ndarray) -> jax.Array:
    """Σ_k c_k T_k(2x - 1): x [...] → [..., n_fns] (coeffs [deg + 1, n_fns], static)."""
    c = jnp.asarray(coeffs, x.dtype)
    t = (2.0 * x - 1.0)[..., None]
    b1 = jnp.zeros(x.shape + (c.shape[1],), x.dtype)
    b2 = b1
    for k in range(c.shape[0] - 1, 0, -1):
        b1, b2 = c[k] + 2.0 * t * b1 - b2, b1
    return c[0] + t * b1 - b2


def _chebyshev_fn(coeffs: np.ndarray):
    """x ↦ Σ_k c_k T_k(2x − 1) with a custom JVP: the derivative is the differentiated
    series (evaluated the same way), so no per-step intermediates are stored."""
    from numpy.polynomial import chebyshev

    @jax.custom_jvp
    def f(x):
        return _clenshaw(x, coeffs)

    @f.defjvp
    def _jvp(primals, tangents):
        (x,), (dx,) = primals, tangents
        deriv = 2.0 * chebyshev.chebder(coeffs) if coeffs.shape[0] > 1 else np.zeros_like(coeffs)
        return f(x), _chebyshev_fn(deriv)(x) * dx[..., None]

    return f


def legendre(x: jax.Array, num: int) -> jax.Array:
    """Y_l0 = sqrt((2l+1)/4π) P_l(x) for l < num: x [...] → [..., num]."""
    p = [jnp.ones_like(x), x][:num]
    for l in range(1, num - 1):
        p.append(((2 * l + 1) * x * p[l] - l * p[l - 1]) / (l + 1))
    norms = np.sqrt((2 * np.arange(num) + 1) / (4 * np.pi))
    return jnp.stack(p, axis=-1) * jnp.asarray(norms, x.dtype)


# ---------------------------------------------------------------------------
# Device-side triplets
# ---------------------------------------------------------------------------


def triplet_slots(senders, receivers, active, n_nodes: int, max_neighbors: int):
    """Candidate triplets (k → j → i) as slots of each edge e1 = (j → i), before the
    reverse-edge exclusion (:func:`not_reverse`).

    Args:
      senders, receivers: [n_edges] int (clamped or padded ≥ n_nodes). active: [n_edges] bool.
    Returns:
      e2: [n_edges, max_neighbors] int, the incoming edge k → j of each slot (0 where empty);
      slot_mask: [n_edges, max_neighbors] bool, e1 active and the slot filled;
      overflow: scalar bool, some node has more than max_neighbors active incoming edges.
    """
    n_edges = receivers.shape[0]
    table, counts = incoming_edge_table(receivers, active, n_nodes, max_neighbors)
    e2 = table[jnp.clip(senders, 0, n_nodes - 1)]  # [n_edges, K]
    slot_mask = (e2 < n_edges) & active[:, None]
    return jnp.where(slot_mask, e2, 0), slot_mask, jnp.any(counts > max_neighbors)


def not_reverse(vectors, e2):
    """[n_edges, k] bool: e2 is not the reverse of e1, i.e. |v1 + v2| = |R_k − R_i| > 1e-2 Å
    (geometric, so periodic images of i are kept); no gradient flows through it."""
    v = jax.lax.stop_gradient(vectors)
    w = v[:, None, :] + v[e2]
    return jnp.sum(w * w, axis=-1) > REVERSE_EDGE_TOL**2


def build_triplets(vectors, senders, receivers, active, n_nodes: int, max_neighbors: int):
    """All triplets at once (for tests and inspection; the model applies :func:`not_reverse`
    chunk by chunk). Returns (e2 [n_edges, K], mask [n_edges, K] bool, overflow)."""
    e2, slot_mask, overflow = triplet_slots(senders, receivers, active, n_nodes, max_neighbors)
    mask = slot_mask & not_reverse(vectors, e2)
    return jnp.where(mask, e2, 0), mask, overflow


def triplet_sum(x_kj, rad, w_sbf, unit, vectors, e2, slot_mask, num_spherical: int, chunk: int):
    """agg[e1] = Σ_{triplets (e1, e2)} x_kj[e2] ⊙ ((Σ_l Y_l0(α) rad[e2, l]) W_sbf).

    The slots are processed ``chunk`` at a time in a rematerialised ``lax.scan``, so that
    memory is O(n_edges · chunk) rather than O(n_edges · max_neighbors) per feature.

    Args:
      x_kj: [n_edges, int_emb]; rad: [n_edges, L, basis_emb]; w_sbf: [basis_emb, int_emb];
      unit: [n_edges, 3] unit edge vectors; vectors: [n_edges, 3] Å;
      e2, slot_mask: [n_edges, K] from :func:`triplet_slots`.
    Returns: [n_edges, int_emb].
    """
    n_edges, k = e2.shape
    n_chunks = -(-k // chunk)
    pad = n_chunks * chunk - k
    e2 = jnp.pad(e2, ((0, 0), (0, pad))).reshape(n_edges, n_chunks, chunk).transpose(1, 0, 2)
    slot_mask = jnp.pad(slot_mask, ((0, 0), (0, pad))).reshape(n_edges, n_chunks, chunk).transpose(1, 0, 2)

    @jax.checkpoint
    def step(acc, xs):
        e2c, mc = xs  # [n_edges, chunk]
        mc = mc & not_reverse(vectors, e2c)
        cos = jnp.einsum("ed,ekd->ek", unit, unit[e2c])  # cos α (no clip: P_l is smooth beyond ±1)
        ang = legendre(cos, num_spherical) * mc[..., None]  # [n_edges, chunk, L]
        sb = jnp.einsum("ekl,eklb->ekb", ang, rad[e2c])  # [n_edges, chunk, basis_emb]
        t = x_kj[e2c] * (sb @ w_sbf)  # [n_edges, chunk, int_emb] (zero where masked)
        return acc + jnp.sum(t, axis=1), None

    acc, _ = jax.lax.scan(step, jnp.zeros_like(x_kj), (e2, slot_mask))
    return acc


# ---------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------


class ResidualLayer(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
        h = nn.silu(nn.Dense(self.width, name="dense_0")(x))
        return x + nn.silu(nn.Dense(self.width, name="dense_1")(h))


class OutputPPBlock(nn.Module):
    """Edge messages → per-atom outputs: Σ_j (W rbf_ji) ⊙ m_ji, up-projection, MLP."""

    config: DimeNetConfig
    avg_num_neighbors: float

    @nn.compact
    def __call__(self, m, rbf, receivers, n_nodes):
        cfg = self.config
        x = nn.Dense(cfg.hidden, use_bias=False, name="rbf")(rbf) * m  # [n_edges, hidden]
        x = jax.ops.segment_sum(x, receivers, num_segments=n_nodes) / self.avg_num_neighbors  # [n_nodes, hidden]
        x = nn.Dense(cfg.out_emb, use_bias=False, name="up")(x)
        for k in range(cfg.num_output_layers):
            x = nn.silu(nn.Dense(cfg.out_emb, name=f"dense_{k}")(x))
        return nn.Dense(1, use_bias=False, name="out")(x)[:, 0]  # [n_nodes]


class InteractionPPBlock(nn.Module):
    """DimeNet++ interaction: triplet messages in the int_emb space."""

    config: DimeNetConfig
    avg_num_neighbors: float

    @nn.compact
    def __call__(self, m, rbf, sbf_rad, unit, vectors, e2, slot_mask):
        """
        m: [n_edges, hidden]; rbf: [n_edges, N]; sbf_rad: [n_edges, L, N] radial part of
        the spherical basis of each edge (as e2 = k → j); unit: [n_edges, 3] unit edge
        vectors; vectors: [n_edges, 3] Å; e2, slot_mask: [n_edges, K] from triplet_slots.
        """
        cfg = self.config
        L, N = cfg.num_spherical, cfg.num_radial
        x_ji = nn.silu(nn.Dense(cfg.hidden, name="ji")(m))
        x_kj = nn.silu(nn.Dense(cfg.hidden, name="kj")(m))
        r = nn.Dense(cfg.basis_emb, use_bias=False, name="rbf_0")(rbf)
        r = nn.Dense(cfg.hidden, use_bias=False, name="rbf_1")(r)
        x_kj = nn.silu(nn.Dense(cfg.int_emb, use_bias=False, name="down")(x_kj * r))  # [n_edges, int_emb]
        # sbf → basis_emb → int_emb (both linear, no bias), factorised per edge:
        # Σ_{l,n} Y_l(α) rad_ln(d_kj) W0[ln, b] = Σ_l Y_l(α) R_kj[l, b]
        w0 = self.param("sbf_0", nn.initializers.lecun_normal(), (L * N, cfg.basis_emb), jnp.float32)
        w1 = self.param("sbf_1", nn.initializers.lecun_normal(), (cfg.basis_emb, cfg.int_emb), jnp.float32)
        rad = jnp.einsum("eln,lnb->elb", sbf_rad, w0.reshape(L, N, cfg.basis_emb).astype(m.dtype))  # [n_edges, L, b]
        agg = triplet_sum(x_kj, rad, w1.astype(m.dtype), unit, vectors, e2, slot_mask, L, cfg.triplet_chunk)
        agg = agg / self.avg_num_neighbors  # [n_edges, int_emb]
        x_kj = nn.silu(nn.Dense(cfg.hidden, use_bias=False, name="up")(agg))
        h = x_ji + x_kj
        for k in range(cfg.num_before_skip):
            h = ResidualLayer(cfg.hidden, name=f"before_{k}")(h)
        h = nn.silu(nn.Dense(cfg.hidden, name="skip")(h)) + m
        for k in range(cfg.num_after_skip):
            h = ResidualLayer(cfg.hidden, name=f"after_{k}")(h)
        return h


class DimeNet(EdgeModel):
    """DimeNet++ per-atom (unscaled) outputs from edges. See :func:`mlpjax.models.build`."""

    config: DimeNetConfig

    @nn.compact
    def __call__(self, vectors, species, senders, receivers, edge_mask):
        """The EdgeModel interface (see :class:`mlpjax.models.common.EdgeModel`); the outputs are
        all NaN if a node has more than ``config.max_neighbors`` incoming edges within the cutoff."""
        cfg = self.config
        n_nodes = species.shape[0]
        dtype = vectors.dtype
        L, N, K = cfg.num_spherical, cfg.num_radial, cfg.max_neighbors

        r = safe_norm(vectors, edge_mask, self.cutoff)  # [n_edges] Å, cutoff on padding
        active = edge_mask & (r < self.cutoff)
        recv = jnp.clip(receivers, 0, n_nodes - 1)
        send = jnp.clip(senders, 0, n_nodes - 1)
        e2, slot_mask, overflow = triplet_slots(send, receivers, active, n_nodes, K)

        # bases (x = r / r_c in (0, 1]; inactive edges have envelope 0)
        x = jnp.clip(r / self.cutoff, 0.0, 1.0)
        env = polynomial_cutoff(x, 1.0, cfg.envelope_exponent + 1) / x * active  # [n_edges], u(x)/x
        n = jnp.arange(1, N + 1, dtype=dtype)
        rbf = env[:, None] * jnp.sin(n * jnp.pi * x[:, None])  # [n_edges, N]
        jl = _chebyshev_fn(_sbf_chebyshev(L, N))(x)  # [n_edges, L*N]
        sbf_rad = (env[:, None] * jl).reshape(-1, L, N)  # [n_edges, L, N]
        unit = vectors / r[:, None]  # [n_edges, 3] (r > 0 everywhere thanks to safe_norm)

        # embedding: m_ji = σ(W [h_i, h_j, σ(W rbf_ji)])
        emb = nn.Embed(self.num_species, cfg.hidden, name="embedding")
        h = emb(species).astype(dtype)  # [n_nodes, hidden]
        rb = nn.silu(nn.Dense(cfg.hidden, name="emb_rbf")(rbf))
        m = nn.silu(nn.Dense(cfg.hidden, name="emb_msg")(jnp.concatenate([h[recv], h[send], rb], axis=-1)))
        m = m * active[:, None]  # [n_edges, hidden]

        recv_out = jnp.where(active, recv, n_nodes)  # dropped by segment_sum
        out = OutputPPBlock(cfg, self.avg_num_neighbors, name="output_0")(m, rbf, recv_out, n_nodes)
        for b in range(cfg.num_blocks):
            m = InteractionPPBlock(cfg, self.avg_num_neighbors, name=f"interaction_{b}")(m, rbf, sbf_rad, unit, vectors, e2, slot_mask)
            m = m * active[:, None]
            out = out + OutputPPBlock(cfg, self.avg_num_neighbors, name=f"output_{b + 1}")(m, rbf, recv_out, n_nodes)
        # NaN (not a silent drop) on triplet-table overflow; sqrt(-1) avoids a NaN literal
        # so that jax_debug_nans only fires when the overflow really happens.
        poison = 1.0 + jnp.sqrt(-overflow.astype(dtype))
        return out * poison
