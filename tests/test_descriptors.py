"""Descriptors (mlpjax.models.descriptors): agreement with dscribe (ACSF) and with an independent
NumPy loop implementation (ANI AEV), differentiability, jit/vmap, and overflow handling."""

from __future__ import annotations

import itertools
import math

import ase
import ase.build
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlpjax.models import descriptors as D

RC = 5.0
G2 = [(0.5, 1.0), (2.0, 2.5), (0.1, 0.0)]
G3 = [1.0, 2.3]
G4 = [(0.01, 1.0, 1.0), (0.05, 4.0, -1.0), (0.02, 16.0, 1.0)]
G5 = [(0.02, 2.0, 1.0), (0.005, 1.0, -1.0)]


def _structures():
    eth = ase.build.molecule("CH3CH2OH")
    eth.rattle(0.05, seed=0)
    cu = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
    cu.rattle(0.05, seed=1)
    nacl = ase.build.bulk("NaCl", "rocksalt", a=5.64).repeat((2, 1, 1))
    nacl.rattle(0.1, seed=2)
    tri = ase.Atoms("CuAu", positions=[[0, 0, 0], [1.3, 1.1, 1.2]], cell=[[2.7, 0.1, 0.0], [0.3, 2.6, 0.2], [0.1, 0.4, 2.8]], pbc=True)
    return {"ethanol": eth, "Cu-fcc": cu, "NaCl-rattled": nacl, "CuAu-triclinic-small": tri}


STRUCTURES = _structures()


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_acsf_matches_dscribe(name):
    """Same numbers as dscribe's ACSF (G1-G5, element-resolved) to 1e-10 relative in float64,
    on a molecule and periodic crystals (incl. a triclinic cell smaller than the cutoff)."""
    dscribe = pytest.importorskip("dscribe.descriptors")
    atoms = STRUCTURES[name]
    z = sorted(set(atoms.numbers.tolist()))
    ref = dscribe.ACSF(species=z, r_cut=RC, g2_params=G2, g3_params=G3, g4_params=G4, g5_params=G5,
                       periodic=bool(atoms.pbc.any())).create(atoms)
    p = D.ACSFParams(cutoff=RC, num_species=len(z), g2=G2, g3=G3, g4=G4, g5=G5)
    ours = np.asarray(D.for_structure(D.acsf, p, atoms, z))
    assert ours.shape == ref.shape == (len(atoms), p.num_features)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())


@pytest.mark.parametrize("name", list(STRUCTURES))
@pytest.mark.parametrize("n_max,l_max", [(3, 2), (5, 6)])
def test_soap_matches_dscribe(name, n_max, l_max):
    """With dscribe's convention (``envelope="none"``: no smooth cutoff, neighbours within
    r_cut + 3.72 σ) the power spectrum equals dscribe's GTO SOAP to 1e-9 relative (dscribe
    uses π to 12 digits)."""
    dscribe = pytest.importorskip("dscribe.descriptors")
    atoms = STRUCTURES[name]
    z = sorted(set(atoms.numbers.tolist()))
    ref = dscribe.SOAP(species=z, r_cut=4.0, n_max=n_max, l_max=l_max, sigma=0.5, periodic=bool(atoms.pbc.any())).create(atoms)
    p = D.SOAPParams(r_cut=4.0, n_max=n_max, l_max=l_max, sigma=0.5, num_species=len(z), envelope="none")
    ours = np.asarray(D.for_structure(D.soap, p, atoms, z))
    assert ours.shape == ref.shape == (len(atoms), p.num_features)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())


def test_soap_cosine_envelope_is_smooth_at_the_cutoff():
    """With the default envelope a neighbour leaving the sphere changes the descriptor
    continuously (value and slope → 0 at r_cut); dscribe's convention has a step."""
    p = D.SOAPParams(r_cut=3.0, n_max=3, l_max=2, sigma=0.4, num_species=1)
    rs = np.array([2.98, 2.99, 2.999, 3.0, 3.01])
    vals = [np.asarray(D.for_structure(D.soap, p, ase.Atoms("Cu2", positions=[[0, 0, 0], [r, 0, 0]]), [29], cutoff=3.5))[0]
            for r in rs]
    alone = np.asarray(D.for_structure(D.soap, p, ase.Atoms("Cu"), [29]))[0]
    np.testing.assert_allclose(vals[3], alone, atol=1e-14)
    np.testing.assert_allclose(vals[4], alone, atol=1e-14)
    # f_c is quadratic near r_c: a 10x smaller distance to the cutoff gives a 100x smaller change
    d1, d2 = np.abs(vals[1] - alone).max(), np.abs(vals[2] - alone).max()
    assert 50 < d1 / d2 < 200


def _aev_reference(params: D.AEVParams, atoms, z):
    """Direct double loop over neighbours (TorchANI's formulas), periodic images by brute force."""
    pos = atoms.get_positions()
    cell = np.asarray(atoms.cell[:])
    reps = [range(-2, 3) if p else range(1) for p in atoms.pbc]
    images = [(pos[j] + np.array(s) @ cell, j) for s in itertools.product(*reps) for j in range(len(atoms))]
    s_idx = [z.index(n) for n in atoms.numbers]
    nsp = len(z)
    npairs = nsp * (nsp + 1) // 2
    pair = D.pair_index_upper(nsp)

    def fc(r, rc):
        return 0.5 * math.cos(math.pi * r / rc) + 0.5 if r < rc else 0.0

    out = np.zeros((len(atoms), params.num_features))
    for i in range(len(atoms)):
        neigh = [(p - pos[i], j) for p, j in images if 1e-8 < np.linalg.norm(p - pos[i]) < params.radial_cutoff]
        rad = np.zeros((nsp, len(params.radial_eta), len(params.radial_shifts)))
        for v, j in neigh:
            r = np.linalg.norm(v)
            for a, eta in enumerate(params.radial_eta):
                for b, rs in enumerate(params.radial_shifts):
                    rad[s_idx[j], a, b] += 0.25 * math.exp(-eta * (r - rs) ** 2) * fc(r, params.radial_cutoff)
        ang = np.zeros((npairs, len(params.angular_eta), len(params.angular_zeta), len(params.angular_shifts),
                        len(params.angle_sections)))
        close = [(v, j) for v, j in neigh if np.linalg.norm(v) < params.angular_cutoff]
        for (v1, j), (v2, k) in itertools.combinations(close, 2):
            r1, r2 = np.linalg.norm(v1), np.linalg.norm(v2)
            theta = math.acos(0.95 * np.dot(v1, v2) / (r1 * r2))
            for a, eta in enumerate(params.angular_eta):
                for b, zeta in enumerate(params.angular_zeta):
                    for c, rs in enumerate(params.angular_shifts):
                        for d, ts in enumerate(params.angle_sections):
                            ang[pair[s_idx[j], s_idx[k]], a, b, c, d] += (
                                2 * ((1 + math.cos(theta - ts)) / 2) ** zeta
                                * math.exp(-eta * ((r1 + r2) / 2 - rs) ** 2)
                                * fc(r1, params.angular_cutoff) * fc(r2, params.angular_cutoff))
        out[i] = np.concatenate([rad.ravel(), ang.ravel()])
    return out


@pytest.mark.parametrize("name", ["ethanol", "CuAu-triclinic-small"])
def test_ani_aev_matches_loop_reference(name):
    """The vectorised AEV equals a direct loop over neighbour pairs (TorchANI's formulas and
    layout) to 1e-10 relative."""
    atoms = STRUCTURES[name]
    z = sorted(set(atoms.numbers.tolist()))
    p = D.AEVParams(num_species=len(z), radial_shifts=(0.9, 1.8, 3.1), angular_shifts=(0.9, 2.0),
                    angle_sections=(0.3, 1.7, 2.9), angular_zeta=(4.0, 32.0), radial_eta=(16.0, 2.0))
    ours = np.asarray(D.for_structure(D.ani_aev, p, atoms, z))
    ref = _aev_reference(p, atoms, z)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())


def test_ani1x_defaults_have_384_features():
    p = D.AEVParams(num_species=4)
    assert p.num_features == 384  # 4 x 16 radial + 10 pairs x 32 angular (ANI-1x)
    np.testing.assert_allclose(p.radial_shifts[:2], [0.9, 1.16875])
    np.testing.assert_allclose(p.angle_sections[0], 0.19634954, rtol=1e-7)


@pytest.fixture(scope="module")
def ethanol_edges():
    from mlpjax.graph.neighbors import neighbor_list

    atoms = STRUCTURES["ethanol"]
    e = neighbor_list(atoms.get_positions(), np.zeros((3, 3)), np.zeros(3, bool), RC)
    species = jnp.asarray([sorted(set(atoms.numbers)).index(n) for n in atoms.numbers])
    return atoms.get_positions(), species, jnp.asarray(e.senders), jnp.asarray(e.receivers)


@pytest.mark.parametrize("fn", ["acsf", "ani_aev", "soap", "soap_scaled"])
def test_descriptor_gradient_matches_finite_differences(ethanol_edges, fn):
    pos, species, snd, rcv = ethanol_edges
    if fn == "acsf":
        p = D.ACSFParams(cutoff=RC, num_species=3, g2=G2, g4=G4[:1], g5=G5[:1])
        f = lambda v: D.acsf(p, v, species, snd, rcv, jnp.ones(len(snd), bool), max_neighbors=10)  # noqa: E731
    elif fn.startswith("soap"):
        p = D.SOAPParams(r_cut=RC, n_max=3, l_max=3, sigma=0.5, num_species=3, normalize=True,
                         radial_scaling=(1.0, 2.0, 7.0) if fn == "soap_scaled" else None)
        f = lambda v: D.soap(p, v, species, snd, rcv, jnp.ones(len(snd), bool))  # noqa: E731
    else:
        p = D.AEVParams(num_species=3, radial_cutoff=RC, radial_shifts=(0.9, 2.0), angular_shifts=(1.0, 2.0),
                        angle_sections=(0.5, 2.0), angular_zeta=(8.0,))
        f = lambda v: D.ani_aev(p, v, species, snd, rcv, jnp.ones(len(snd), bool), max_neighbors=10)  # noqa: E731
    w = jax.random.normal(jax.random.PRNGKey(0), (len(pos), p.num_features), jnp.float64)

    def scalar(x):
        return jnp.sum(w * f(x[snd] - x[rcv]))

    x = jnp.asarray(pos)
    g = jax.grad(scalar)(x)
    d = np.random.default_rng(0).normal(size=x.shape)
    h = 1e-5
    fd = (scalar(x + h * d) - scalar(x - h * d)) / (2 * h)
    np.testing.assert_allclose(np.sum(np.asarray(g) * d), float(fd), rtol=1e-7)


def test_descriptor_jit_and_vmap_over_frames(ethanol_edges):
    """A batch of frames through vmap (one compile) equals frame-by-frame evaluation."""
    pos, species, snd, rcv = ethanol_edges
    p = D.ACSFParams(cutoff=RC, num_species=3, g2=G2, g5=G5)
    mask = jnp.ones(len(snd), bool)

    @jax.jit
    def one(x):
        return D.acsf(p, x[snd] - x[rcv], species, snd, rcv, mask, max_neighbors=10)

    frames = jnp.asarray(pos)[None] + 0.02 * jax.random.normal(jax.random.PRNGKey(1), (4, *pos.shape), jnp.float64)
    batched = jax.jit(jax.vmap(one))(frames)
    for k in range(4):
        np.testing.assert_allclose(np.asarray(batched[k]), np.asarray(one(frames[k])), rtol=1e-12, atol=1e-12)


def test_too_many_neighbors_gives_nan_not_a_silent_drop(ethanol_edges):
    pos, species, snd, rcv = ethanol_edges
    p = D.ACSFParams(cutoff=RC, num_species=3, g2=G2, g5=G5)
    v = jnp.asarray(pos)[snd] - jnp.asarray(pos)[rcv]
    with jax.debug_nans(False):
        ok = D.acsf(p, v, species, snd, rcv, jnp.ones(len(snd), bool), max_neighbors=8)  # ethanol: 8 neighbours each
        bad = D.acsf(p, v, species, snd, rcv, jnp.ones(len(snd), bool), max_neighbors=7)
    assert np.all(np.isfinite(np.asarray(ok)))
    assert np.all(np.isnan(np.asarray(bad)[:, p.num_radial * 3:]))  # the angular block is poisoned


@pytest.mark.parametrize("scheme", ["shifted", "centered"])
def test_acsf_grid(scheme):
    p = D.acsf_grid(6.0, 2, n_radial=6, scheme=scheme, zetas=(1.0, 4.0), n_angular_eta=2)
    assert len(p.g2) == 6 and len(p.g5) == 2 * 2 * 2 and not p.g4
    eta = np.array([g[0] for g in p.g2])
    rs = np.array([g[1] for g in p.g2])
    if scheme == "shifted":
        np.testing.assert_allclose(rs, np.linspace(0.5, 6.0, 6))
        assert np.allclose(eta, eta[0])
    else:
        assert np.all(rs == 0) and np.all(np.diff(eta) < 0)  # widening Gaussians at the centre
    assert p.num_features == 2 * (1 + 6) + 3 * 8


def test_celu_alpha_activation_by_name():
    """``"celu:ALPHA"`` (the rMD17 ANI config uses α = 1) is CELU with that α; bad α is refused."""
    from mlpjax.models.atomic_nets import activation

    x = jnp.linspace(-3.0, 3.0, 13)
    np.testing.assert_allclose(activation("celu:1.0")(x), jax.nn.celu(x, alpha=1.0), rtol=1e-6)
    np.testing.assert_allclose(activation("celu")(x), jax.nn.celu(x, alpha=0.1), rtol=1e-6)
    for bad in ("celu:0", "celu:x", "relu"):
        with pytest.raises(ValueError, match="celu"):
            activation(bad)
