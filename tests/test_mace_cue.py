"""MACE's cuequivariance-jax backend (mlpjax.models.cue) computes the same function as its
e3nn-jax backend with the same parameters: the symmetric contraction on its own, and the whole
model's energies, forces, stress and parameter gradients, on a periodic Cu cell and a molecule,
in float64 and float32.

On CPU cuequivariance runs its pure-JAX ``naive`` method, which evaluates the very segmented
polynomials (paths, coefficients, gathers and scatters) that its CUDA kernels execute, so these
tests check the descriptors mlpjax builds; the last test runs the CUDA kernels themselves and
needs a GPU with cuequivariance-ops-jax.
"""

from __future__ import annotations

import dataclasses

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import CUTOFF, SPECIES, cast_params, cu_atoms, ethanol_atoms, get_model, split_predictions
from mlpjax import models
from mlpjax.data import Configuration
from mlpjax.graph import make_budget, pack, to_graphs
from mlpjax.models import cue
from mlpjax.models.mace import SymmetricContraction
from mlpjax.potential import Potential

pytest.importorskip("cuequivariance_jax")

TOL = {"float64": dict(rtol=1e-10, atol=1e-11), "float32": dict(rtol=2e-5, atol=2e-5)}


@pytest.mark.parametrize("irreps_out,correlation", [("0e + 1o + 2e", 3), ("1e", 3), ("0e", 2), ("0e + 1o", 1)])
def test_symmetric_contraction_equals_e3nn_backend(irreps_out, correlation):
    """Same parameters (same names, shapes and init values), same outputs; "1e" has an empty
    basis at ν = 1, 2 (an output segment with no path)."""
    irreps_in = "0e + 1o + 2e"
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.normal(size=(6, 3, e3nn.Irreps(irreps_in).dim)))
    species = jnp.asarray([0, 1, 1, 0, 1, 0])
    ref = SymmetricContraction(irreps_in, irreps_out, correlation, 2)
    fast = SymmetricContraction(irreps_in, irreps_out, correlation, 2, "cuequivariance")
    params = ref.init(jax.random.PRNGKey(0), a, species)
    same = fast.init(jax.random.PRNGKey(0), a, species)
    assert jax.tree.structure(params) == jax.tree.structure(same)
    assert all(bool(jnp.all(x == y)) for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(same)))
    b_ref, b = ref.apply(params, a, species), fast.apply(params, a, species)
    assert float(jnp.max(jnp.abs(b_ref))) > 1e-2
    np.testing.assert_allclose(np.asarray(b), np.asarray(b_ref), rtol=1e-12, atol=1e-12)


def _backends(pot: Potential):
    """(e3nn, cuequivariance) copies of one potential: same parameters, different kernels."""
    return (pot.replace(model_config=dataclasses.replace(pot.model_config, backend="e3nn")),
            pot.replace(model_config=dataclasses.replace(pot.model_config, backend="cuequivariance")))


def _structures():
    return [Configuration.from_atoms(cu_atoms()), Configuration.from_atoms(ethanol_atoms())]


def _assert_backends_agree(pot: Potential, dtype: str, *, grad: bool = True):
    """Asserts (assert_allclose) that both backends give the same energies, forces, stress, atomic
    energies and, with ``grad``, parameter gradients; and that the forces are not vacuously small."""
    ref, fast = _backends(pot)
    graphs = to_graphs(_structures(), pot.species, pot.cutoff)
    batch = pack(graphs, make_budget(graphs, len(graphs)), dtype=np.dtype(dtype))
    out_ref = split_predictions(batch, jax.jit(ref.predict)(ref.params, batch))
    out = split_predictions(batch, jax.jit(fast.predict)(fast.params, batch))
    for r, o in zip(out_ref, out):
        assert np.max(np.abs(r["forces"])) > 1e-2  # not a vacuous comparison
        for key in ("energy", "forces", "stress", "atomic_energies"):
            np.testing.assert_allclose(o[key], r[key], **TOL[dtype], err_msg=key)
    if not grad:
        return

    def loss(p, model):  # what training differentiates: energy and forces of the batch
        pred = model.predict(p, batch, compute_stress=False)
        return jnp.sum(pred.energy ** 2) + jnp.sum(pred.forces ** 2)

    g_ref = jax.jit(jax.grad(loss), static_argnums=1)(ref.params, ref)
    g = jax.jit(jax.grad(loss), static_argnums=1)(fast.params, fast)
    scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(g_ref))
    for x, y in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=TOL[dtype]["rtol"] * 10,
                                   atol=TOL[dtype]["atol"] * 10 * scale)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_tiny_mace_equals_e3nn_backend(dtype):
    """The physics-contract MACE (tests/conftest.py TINY_CONFIGS, correlation 2); the parameter
    gradient (what training uses) in float64."""
    _assert_backends_agree(get_model("mace", dtype).pot, dtype, grad=dtype == "float64")


def test_default_shaped_mace_equals_e3nn_backend():
    """The reference defaults' irreps (l ≤ 3, hidden 0e + 1o, correlation 3) at 4 channels."""
    cfg = models.make_config("mace", {"features": 4, "l_max": 3, "hidden_l_max": 1, "correlation": 3,
                                      "radial_hidden": [8], "readout_hidden": 4})
    pot = Potential("mace", cfg, cutoff=CUTOFF, species=SPECIES, reference_energies=(0.0,) * len(SPECIES),
                    avg_num_neighbors=12.0)
    params = pot.init_params(jax.random.PRNGKey(1))
    pot = pot.replace(params=jax.tree.map(lambda x: 1.3 * x, params))
    _assert_backends_agree(pot, "float64", grad=False)


def test_backend_resolution():
    assert cue.resolve("e3nn") == "e3nn"
    assert cue.resolve("cuequivariance") == "cuequivariance"
    assert cue.resolve("auto") == ("cuequivariance" if cue.cuda_kernels_available() else "e3nn")
    with pytest.raises(ValueError, match="unknown equivariant backend"):
        cue.resolve("cuda")
    with pytest.raises(ValueError, match="backend must be"):
        models.make_config("mace", {"backend": "torch"})


def test_model_file_written_with_cuequivariance_loads_where_it_is_missing(monkeypatch):
    """An explicit backend where the package is missing is a config error; a model file that
    recorded the writing machine's cuequivariance backend loads as ``auto`` instead."""
    monkeypatch.setattr(cue, "available", lambda: False)
    with pytest.raises(ValueError, match="needs cuequivariance-jax"):
        models.make_config("mace", {"backend": "cuequivariance"})
    cfg = models.make_config("mace", {"backend": "cuequivariance"}, from_file=True)
    assert cfg.backend == "auto"


@pytest.mark.parametrize("which", ["message", "contraction", "contraction-empty-paths"])
def test_polynomials_meet_the_cuda_kernel_requirements(which):
    """What cuequivariance's ``uniform_1d`` kernel checks before it runs (on CPU it falls back to
    the naive method without checking): after flattening the coefficient modes every operation
    has the one mode u, every operand's segments one shape, and u one extent (the channels)."""
    channels = 8
    poly = {"message": lambda: cue.message_polynomial("0e + 1o", "0e + 1o + 2e + 3o", "0e + 1o + 2e + 3o", channels)[0],
            "contraction": lambda: cue.contraction_polynomial("0e + 1o + 2e + 3o", "0e + 1o", 3, channels)[0],
            "contraction-empty-paths": lambda: cue.contraction_polynomial("0e + 1o + 2e", "1e", 3, channels)[0]}[which]()
    flat = poly.flatten_coefficient_modes().squeeze_modes().canonicalize_subscripts()
    extents = set()
    assert flat.operations
    for _, stp in flat.operations:
        assert stp.subscripts.modes() == ["u"], stp.subscripts
        assert stp.all_same_segment_shape(), stp
        extents |= {op.segment_shape[0] for op in stp.operands if op.ndim == 1}
    assert extents == {channels}


@pytest.mark.skipif(not cue.cuda_kernels_available(), reason="needs a CUDA GPU and cuequivariance-ops-jax-cu12")
def test_cuda_kernels_equal_e3nn_backend():
    """The uniform_1d CUDA kernels on the GPU (float32), against the e3nn backend on the same GPU."""
    assert cue.method() == "uniform_1d"
    base = get_model("mace", "float64").pot
    _assert_backends_agree(base.replace(params=cast_params(base.params, np.float32)), "float32")
