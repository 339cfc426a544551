"""The optional cuequivariance-jax backend of MACE's two equivariant kernels.

NVIDIA's cuequivariance (``pip install cuequivariance-jax``; the CUDA kernels come with
``cuequivariance-ops-jax-cu12``) executes *segmented polynomials*: sums of paths, each a
coefficient tensor contracting segments of its operands, with gathers and scatters fused into
the kernel. MACE spends its time in two of them:

* the **edge message** — the channel-wise ("uvu") tensor product of the sender's features with
  the edge's spherical harmonics, weighted per path and channel by the radial MLP and summed
  over each receiver's edges (gather by senders, scatter by receivers: one fused kernel, no
  [E, C, ·] intermediate in memory);
* the **symmetric contraction** B = Σ_ν w_z^{(ν)} U^{(ν)} A^{⊗ν}, weights indexed by the
  species of the central atom.

The polynomials here are built from mlpjax's *own* bases — the Clebsch-Gordan paths of
:func:`mlpjax.models.common.channelwise_tp_paths` and the symmetric bases U^{(ν)} of
:func:`mlpjax.models.mace.symmetric_basis` — not from cuequivariance's descriptors, whose bases
and path normalisation differ from e3nn-jax's by linear maps. So a backend is a choice of
*kernel*, not of model: the same parameters (the same model file) give the same energies and
forces under either backend, to float tolerance (tests/test_mace_cue.py, on CPU with the
pure-JAX ``naive`` method). Segments are flattened to one channel vector each (every operand's
segments have one shape), the form cuequivariance's ``uniform_1d`` CUDA kernel requires.

Which method runs is decided at trace time (:func:`method`): ``uniform_1d`` (CUDA kernels) when
the default JAX device is a GPU and the kernel package imports, else ``naive`` (plain JAX
einsums, any platform: the equality check, not a speed path). MACE picks this backend through
``MACEConfig.backend`` (``auto`` = cuequivariance when the CUDA kernels are present, e3nn-jax
otherwise), chosen at run time, never stored in the parameters.
"""

from __future__ import annotations

import functools
import importlib.util

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

from mlpjax.models.common import channelwise_tp_paths

BACKENDS = ("auto", "e3nn", "cuequivariance")


def available() -> bool:
    """Whether cuequivariance and cuequivariance-jax import (the ``naive`` method needs no more)."""
    return all(importlib.util.find_spec(m) is not None for m in ("cuequivariance", "cuequivariance_jax"))


def cuda_kernels_available() -> bool:
    """Whether cuequivariance's CUDA kernels can run: the default JAX backend is a GPU and the
    kernel package (``cuequivariance_ops_jax``) is installed."""
    return (available() and jax.default_backend() == "gpu"
            and importlib.util.find_spec("cuequivariance_ops_jax") is not None)


def resolve(backend: str) -> str:
    """``auto`` → ``cuequivariance`` when its CUDA kernels can run, else ``e3nn``; ``e3nn`` stays;
    ``cuequivariance`` needs the package (the ``naive`` method when there is no GPU)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown equivariant backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "cuequivariance" if cuda_kernels_available() else "e3nn"
    if backend == "cuequivariance" and not available():
        raise ValueError("backend 'cuequivariance' needs cuequivariance-jax (pip install cuequivariance-jax; "
                         "on a CUDA machine also cuequivariance-ops-jax-cu12)")
    return backend


def method() -> str:
    """``uniform_1d`` (CUDA kernels) when they can run, else ``naive`` (pure JAX)."""
    return "uniform_1d" if cuda_kernels_available() else "naive"


# ---------------------------------------------------------------- the edge message
@functools.lru_cache(maxsize=None)
def message_polynomial(irreps_x: str, irreps_y: str, irreps_filter: str, channels: int):
    """The segmented polynomial of the weighted channel-wise tensor product.

    Operands (flattened ir_mul layouts): weights [P·C] (path-major), x [x.dim·C], y [y.dim],
    output [out.dim·C], with P paths in e3nn's output order. Returns ``(polynomial, irreps_out)``,
    irreps_out per channel as in :func:`mlpjax.models.common.channelwise_tp_paths`."""
    import cuequivariance as cue

    irreps_out, paths = channelwise_tp_paths(irreps_x, irreps_y, irreps_filter)
    ix, iy = e3nn.Irreps(irreps_x), e3nn.Irreps(irreps_y)
    d = cue.SegmentedTensorProduct.from_subscripts("u,iu,j,ku+ijk")
    for _, ir in ix:
        d.add_segment(1, (ir.dim, channels))
    for _, ir in iy:
        d.add_segment(2, (ir.dim,))
    for i1, i2, _, cg in paths:  # one weight segment and one output segment per path, in output order
        d.add_path(None, i1, i2, None, c=cg, dims={"u": channels})
    d = d.flatten_coefficient_modes()
    return cue.SegmentedPolynomial.eval_last_operand(d), e3nn.Irreps(irreps_out)


def channelwise_message(x: e3nn.IrrepsArray, y: e3nn.IrrepsArray, weights: jax.Array, senders: jax.Array,
                        receivers: jax.Array, n_nodes: int, irreps_filter) -> tuple[e3nn.Irreps, jax.Array]:
    """Σ_{e: receiver(e) = i} Σ_p w_{e,c,p} · (x_{sender(e), c} ⊗ y_e)_p, for every node i and channel c.

    Args:
      x: node features [N, C, irreps_x] (one copy of each irrep per channel).
      y: edge attributes [E, irreps_y] (the spherical harmonics).
      weights: [E, C, P] per-edge, per-channel path weights (zero on padded edges).
      senders, receivers: [E] int node indices.
    Returns: (irreps_out per channel, aggregate [N, C, irreps_out.dim]) — the same numbers as
    weighting :func:`mlpjax.models.common.channelwise_tensor_product`'s blocks and summing them
    over edges.
    """
    import cuequivariance_jax as cuex

    n_edges, channels = weights.shape[:2]
    poly, irreps_out = message_polynomial(str(x.irreps), str(y.irreps), str(e3nn.Irreps(irreps_filter)), channels)
    w = jnp.swapaxes(weights, 1, 2).reshape(n_edges, -1)  # [E, P·C] path-major
    xf = jnp.swapaxes(x.array, 1, 2).reshape(x.shape[0], -1)  # [N, x.dim·C] ir_mul
    [out] = cuex.segmented_polynomial(
        poly, [w, xf, y.array],
        [jax.ShapeDtypeStruct((n_nodes, irreps_out.dim * channels), x.dtype)],
        indices=[None, senders, None, receivers], method=method(), name="mlpjax_mace_message")
    # [N, (path, m, c)] -> [N, C, out.dim]: path p's ir_out.dim components, then the channel
    out = out.reshape(n_nodes, irreps_out.dim, channels)
    return irreps_out, jnp.swapaxes(out, 1, 2)


# ---------------------------------------------------------------- the symmetric contraction
@functools.lru_cache(maxsize=None)
def contraction_polynomial(irreps_in: str, irreps_out: str, correlation: int, channels: int):
    """The segmented polynomial of the species-weighted symmetric contraction over mlpjax's bases.

    Operands: weights [W·C] (for ν = 1..N, for each output irrep with a non-empty basis,
    its K_ν basis weights × C channels), A [in.dim·C] (ir_mul), output [out.dim·C] (ir_mul).
    Returns ``(polynomial, layout)`` with layout the (irrep, ν, K) of the weight blocks, in order."""
    import cuequivariance as cue
    from mlpjax.models.mace import symmetric_basis

    irreps_in_ = e3nn.Irreps(irreps_in)
    polys, layout = [], []
    for nu in range(1, correlation + 1):
        abc = "abcdefgh"[:nu]
        d = cue.SegmentedTensorProduct.from_subscripts(f"w_{'_'.join(abc)}_i+{abc}iw")
        for op in range(1, nu + 1):
            d.add_segment(op, (irreps_in_.dim,))
        for mul, ir in e3nn.Irreps(irreps_out):
            assert mul == 1, irreps_out
            u = symmetric_basis(irreps_in, str(ir), nu)  # [d]*ν + [K, ir.dim]
            if u.shape[-2] == 0:
                d.add_segment(nu + 1, (ir.dim,))
                continue
            d.add_path(None, *(0,) * nu, None, c=np.moveaxis(u, -1, -2))  # (a, b, .., i, w)
            layout.append((str(ir), nu, u.shape[-2]))
        d = d.flatten_coefficient_modes()
        d = d.append_modes_to_all_operands("u", {"u": channels})
        polys.append(cue.SegmentedPolynomial(
            [d.operands[0], d.operands[1]], [d.operands[-1]], [(cue.Operation([0] + [1] * nu + [2]), d)]))
    return cue.SegmentedPolynomial.stack(polys, [True, False, False]), tuple(layout)


def symmetric_contraction(a: jax.Array, weights: dict, species: jax.Array, irreps_in: str, irreps_out: str,
                          correlation: int) -> jax.Array:
    """B = Σ_ν w_{z}^{(ν)} U^{(ν)} A^{⊗ν} (see :class:`mlpjax.models.mace.SymmetricContraction`).

    Args:
      a: [n, C, irreps_in.dim]; species: [n] int.
      weights: {(irrep, ν): [S, K, C]} the contraction's parameters.
    Returns: [n, C, irreps_out.dim].
    """
    import cuequivariance_jax as cuex

    n, channels, _ = a.shape
    poly, layout = contraction_polynomial(irreps_in, irreps_out, correlation, channels)
    w = jnp.concatenate([weights[(ir, nu)].reshape(weights[(ir, nu)].shape[0], -1) for ir, nu, _ in layout],
                        axis=-1)  # [S, W·C]
    af = jnp.swapaxes(a, 1, 2).reshape(n, -1)  # [n, in.dim·C]
    d_out = e3nn.Irreps(irreps_out).dim
    [out] = cuex.segmented_polynomial(
        poly, [w, af], [jax.ShapeDtypeStruct((n, d_out * channels), a.dtype)],
        indices=[species, None, None], method=method(), name="mlpjax_mace_contraction")
    return jnp.swapaxes(out.reshape(n, d_out, channels), 1, 2)
