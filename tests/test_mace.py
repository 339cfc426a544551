"""MACE's symmetric contraction on its own: O(3) equivariance of every output irrep
and the correlation order (polynomial degree in the atomic basis A); the first layer's
species-wise linear map and model files written before it.

The whole model is covered by the shared physics contract (tests/test_physics.py,
tests/test_potential.py) through its entry in ``TINY_CONFIGS``.
"""

from __future__ import annotations

import json

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import AVG_NUM_NEIGHBORS, CUTOFF, SPECIES, random_orthogonal, tiny_config
from mlpjax import models
from mlpjax.files import read_checked, write_checked
from mlpjax.models.mace import SymmetricContraction
from mlpjax.potential import MODEL_MAGIC, Potential, load

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


def test_first_layer_species_linear_and_old_model_files(tmp_path, ethanol):
    """The first layer's species-wise linear map of A (mace-torch's ``skip_tp``) is on by default
    and makes the energy depend on it; a model file written before the field existed (its header
    lacks the key, its parameters lack the map) loads with it off and predicts what it predicted."""
    def potential(**extra):
        cfg = models.make_config("mace", {**tiny_config("mace"), **extra})
        pot = Potential("mace", cfg, cutoff=CUTOFF, species=SPECIES, reference_energies=(0.0,) * len(SPECIES),
                        avg_num_neighbors=AVG_NUM_NEIGHBORS)
        return pot.replace(params=pot.init_params(jax.random.PRNGKey(0)))

    new, old = potential(), potential(first_layer_species_linear=False)
    assert new.model_config.first_layer_species_linear
    assert "species_a_0" in new.params["params"] and "species_a_0" not in old.params["params"]
    w = new.params["params"]["species_a_0"]
    assert all(x.shape[0] == len(SPECIES) for x in jax.tree_util.tree_leaves(w))  # one matrix per element

    # an old file: the header without the new key
    path = tmp_path / "old.mlpjax"
    old.save(path)
    payload = read_checked(path, MODEL_MAGIC, "model")
    header = json.loads(payload["header"])
    del header["model_config"]["first_layer_species_linear"]
    write_checked(path, MODEL_MAGIC, {"header": json.dumps(header), "params": payload["params"]})
    back = load(path)
    assert back.model_config.first_layer_species_linear is False
    e_old = old.calculator().get_potential_energy(ethanol.copy())
    a = ethanol.copy()
    a.calc = back.calculator()
    np.testing.assert_allclose(a.get_potential_energy(), e_old, rtol=1e-6)
    # the species map acts: scaling one element's matrices changes the energy
    scaled = jax.tree_util.tree_map(lambda x: x.at[SPECIES.index(6)].multiply(2.0), w)
    params2 = {"params": {**new.params["params"], "species_a_0": scaled}}
    b = ethanol.copy()
    b.calc = new.replace(params=params2).calculator()
    c = ethanol.copy()
    c.calc = new.calculator()
    assert abs(b.get_potential_energy() - c.get_potential_energy()) > 1e-6


@pytest.mark.parametrize("irreps_x", ["0e", "0e + 1o", "0e + 1o + 2e"])
def test_channelwise_tensor_product_equals_e3nn(irreps_x, rng):
    """The blocked dense form of the edge tensor product gives e3nn.tensor_product's numbers
    and irreps (output order included) to float64 rounding."""
    from mlpjax.models.common import channelwise_tensor_product
    from mlpjax.models.mace import natural_irreps

    sh = natural_irreps(3)
    x = e3nn.IrrepsArray(irreps_x, jnp.asarray(rng.normal(size=(7, 5, e3nn.Irreps(irreps_x).dim))))
    y = e3nn.spherical_harmonics(sh, jnp.asarray(rng.normal(size=(7, 3))), normalize=True, normalization="component")
    ref = e3nn.tensor_product(x, y[:, None, :], filter_ir_out=sh)
    irreps, blocks = channelwise_tensor_product(x, y, sh)
    assert irreps == ref.irreps
    ours = jnp.concatenate([b.reshape(b.shape[:2] + (-1,)) for b in blocks], axis=-1)
    assert ours.dtype == jnp.float64
    assert float(jnp.max(jnp.abs(ref.array))) > 0.1
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref.array), atol=1e-12)
