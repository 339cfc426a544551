"""MACE's symmetric contraction on its own: O(3) equivariance of every output irrep
and the correlation order (polynomial degree in the atomic basis A).

The whole model is covered by the shared physics contract (tests/test_physics.py,
tests/test_potential.py) through its entry in ``TINY_CONFIGS``.
"""

from __future__ import annotations

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import random_orthogonal
from mlpjax.models.mace import SymmetricContraction

IRREPS_IN = "0e + 1o + 2e"  # per channel: d = 9
CHANNELS = 3
NUM_SPECIES = 2


def _contraction(irreps_out: str, correlation: int, seed: int = 0):
    module = SymmetricContraction(IRREPS_IN, irreps_out, correlation, NUM_SPECIES)
    rng = np.random.default_rng(seed)
    a = jnp.asarray(rng.normal(size=(5, CHANNELS, e3nn.Irreps(IRREPS_IN).dim)))  # float64
    species = jnp.asarray([0, 1, 1, 0, 1])
    params = jax.jit(module.init)(jax.random.PRNGKey(seed), a, species)
    fn = jax.jit(lambda x: module.apply(params, x, species))
    return fn, a


@pytest.mark.parametrize("correlation", [1, 2, 3])
@pytest.mark.parametrize("reflect", [False, True], ids=["SO3", "reflection"])
def test_symmetric_contraction_is_equivariant(correlation, reflect, rng):
    irreps_out = "0e + 1o + 2e"
    fn, a = _contraction(irreps_out, correlation)
    q = random_orthogonal(rng, reflect=reflect)
    d_in = np.asarray(e3nn.Irreps(IRREPS_IN).D_from_matrix(jnp.asarray(q)))
    d_out = np.asarray(e3nn.Irreps(irreps_out).D_from_matrix(jnp.asarray(q)))
    b = np.asarray(fn(a))
    b_rot = np.asarray(fn(a @ d_in.T))
    assert np.max(np.abs(b)) > 1e-2
    for name, sl in (("0e", slice(0, 1)), ("1o", slice(1, 4)), ("2e", slice(4, 9))):
        assert np.max(np.abs(b[..., sl])) > 1e-3, f"{name} output vanishes: test would be vacuous"
    np.testing.assert_allclose(b_rot, b @ d_out.T, atol=1e-10)


def test_pseudo_vector_output_appears_only_at_correlation_three():
    """From natural-parity A (0e + 1o + 2e) a 1e (pseudo-vector) output needs an
    antisymmetric pair at ν = 1, 2 (excluded: the contraction is symmetric), so it is
    exactly 0 there, and first appears at ν = 3 (e.g. 1o ⊗ 1o ⊗ 2e)."""
    for correlation in (1, 2):
        fn, a = _contraction("1e", correlation)
        assert np.max(np.abs(np.asarray(fn(a)))) == 0.0
    fn3, a = _contraction("1e", 3)
    assert np.max(np.abs(np.asarray(fn3(a)))) > 1e-3


def test_species_dependent_weights(rng):
    fn, a = _contraction("0e + 1o", 2)
    same = jnp.broadcast_to(a[0], a.shape)  # identical A on every node
    out = np.asarray(fn(same))
    # nodes 0 and 3 are species 0, nodes 1, 2, 4 species 1
    np.testing.assert_allclose(out[0], out[3], atol=1e-12)
    np.testing.assert_allclose(out[1], out[2], atol=1e-12)
    assert np.max(np.abs(out[0] - out[1])) > 1e-3


def test_correlation_one_is_linear():
    fn, a = _contraction("0e + 1o + 2e", 1)
    b = np.asarray(fn(a))
    for c in (-2.0, 0.3, 1.7):
        np.testing.assert_allclose(np.asarray(fn(c * a)), c * b, atol=1e-12)


@pytest.mark.parametrize("correlation", [2, 3])
def test_correlation_order_is_the_polynomial_degree(correlation):
    """B(cA) = Σ_{ν=1..N} c^ν b_ν exactly: a degree-5 fit in c has coefficients 0 beyond N,
    a non-zero c^N coefficient, and no constant term."""
    fn, a = _contraction("0e + 1o + 2e", correlation)
    cs = np.linspace(-1.5, 1.5, 9)
    vals = np.stack([np.asarray(fn(c * a)).ravel() for c in cs])  # [9, n*C*dim]
    vander = np.vander(cs, 6, increasing=True)  # 1, c, ..., c^5
    coef, *_ = np.linalg.lstsq(vander, vals, rcond=None)  # [6, n*C*dim]
    scale = np.max(np.abs(vals))
    assert np.max(np.abs(coef[0])) < 1e-10 * scale  # B(0) = 0
    assert np.max(np.abs(coef[correlation])) > 1e-2 * scale, f"no degree-{correlation} term"
    assert np.max(np.abs(coef[correlation + 1:])) < 1e-9 * scale, "terms beyond the correlation order"
    assert np.max(np.abs(coef[1])) > 1e-2 * scale  # the linear (ν = 1) term is present too
