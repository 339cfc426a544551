"""Sensitivity analysis of simulated observables (mlpjax.diffsim.sensitivity) and the gradient's
growth with the horizon (mlpjax.diffsim.gradient_norm_vs_horizon), float64.

* Bookkeeping (tiny SchNet): the groups partition the leaves, every group's numbers are those of
  its leaves, the scaling sensitivity is the derivative of the energy with a block scaled by 1 + t,
  and bad groupings fail loudly.
* Physics (Morse, 32-atom fcc Cu at 600 K): the reweighted first-RDF-peak height's sensitivities
  equal finite differences of the reweighted estimate with one parameter scaled by 1 ± h, a
  constant energy shift has none, the energy scale has exactly D's, and their ratios are those
  of harmonic lattice dynamics of the same crystal (the peak narrows as the NN-distance variance
  σ² = kT bᵀ H⁺ b falls; d ln σ²/d ln D = −1, so α/D and r0/D are −d ln σ²/d ln α, −d ln σ²/d ln r0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk

from mlpjax import diffsim, models
from mlpjax.md import MDConfig, build_system
from mlpjax.models.pair import pair_potential
from mlpjax.potential import Potential, parameter_paths
from mlpjax.units import BOLTZMANN_EV_PER_K

A = 3.61  # Å, fcc lattice constant of the test cells (2×2×2 cubic: 32 atoms, 7.22 Å box)


def _cu(rattle=0.0, seed=1):
    atoms = bulk("Cu", "fcc", a=A, cubic=True).repeat(2)
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def morse():
    return pair_potential("morse", species=["Cu"], cutoff=3.2, switch_width_A=0.4)


# ---------------------------------------------------------------------------------------- bookkeeping
@pytest.fixture(scope="module")
def schnet_grad():
    """(variables, d E/d variables) of a tiny 2-interaction SchNet on a rattled 32-atom cell, and E(v)."""
    p = Potential("schnet", models.make_config("schnet", {"features": 8, "interactions": 2, "num_rbf": 6,
                                                          "filter_hidden": 8}),
                  cutoff=3.2, species=(29,), reference_energies=(-3.5,), energy_shift=0.1, avg_num_neighbors=12.0,
                  energy_scale=3.0)
    p = p.replace(params=p.init_params(jax.random.PRNGKey(0)))
    system = build_system(p, _cu(rattle=0.05), MDConfig(dtype="float64", skin=0.3))
    v = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), p.variables)
    nbrs = system.allocate(system.positions)
    energy = jax.jit(lambda vv: system.energy(vv, system.positions, neighbor=nbrs))
    return v, jax.grad(energy)(v), energy


def _leaves(tree):
    """{path: float64 array} with PotentialParams fields by name (the paths sensitivity uses)."""
    out = dict(zip(parameter_paths(tree.params), map(np.asarray, jax.tree_util.tree_leaves(tree.params))))
    return out | {f: np.asarray(getattr(tree, f)) for f in ("reference_energies", "energy_shift", "energy_scale")}


def test_groups_partition_the_leaves_and_carry_their_norms(schnet_grad):
    v, g, _ = schnet_grad
    rows = diffsim.sensitivity(g, v)
    gl, vl = _leaves(g), _leaves(v)
    assert [r.group for r in rows][:2] == ["params/embedding", "params/f2out_0"]  # tree order, depth 2
    assert [r.group for r in rows][-3:] == ["reference_energies", "energy_shift", "energy_scale"]
    covered = [p for r in rows for p in r.paths]
    assert sorted(covered) == sorted(gl) and len(covered) == len(set(covered))  # every leaf exactly once
    assert sum(r.n_params for r in rows) == sum(x.size for x in gl.values())
    for r in rows:
        gg = np.concatenate([gl[p].ravel() for p in r.paths])
        th = np.concatenate([vl[p].ravel() for p in r.paths])
        assert all(p == r.group or p.startswith(r.group + "/") for p in r.paths)
        assert r.n_params == gg.size
        assert r.grad_norm == pytest.approx(np.sqrt(np.sum(gg**2)), rel=1e-12)
        assert r.relative == pytest.approx(np.sqrt(np.sum((th * gg) ** 2)), rel=1e-12)
        assert r.scaling == pytest.approx(np.sum(th * gg), rel=1e-12, abs=1e-15)
    everything = np.concatenate([x.ravel() for x in gl.values()])
    assert np.sqrt(sum(r.grad_norm**2 for r in rows)) == pytest.approx(np.linalg.norm(everything), rel=1e-12)
    assert next(r for r in rows if r.group == "reference_energies").scaling == pytest.approx(-3.5 * 32, rel=1e-12)
    assert next(r for r in rows if r.group == "energy_shift").grad_norm == pytest.approx(32.0, rel=1e-12)
    # a network-parameter dict with the PotentialParams it came from: the same network rows
    net = diffsim.sensitivity(g.params, v)
    assert [(r.group, r.grad_norm, r.relative) for r in net] == [(r.group, r.grad_norm, r.relative) for r in rows[:-3]]
    assert diffsim.sensitivity(g)[0].relative is None  # without θ only norms
    ranked = diffsim.sensitivity(g, v, sort_by="relative")
    assert [r.relative for r in ranked] == sorted((r.relative for r in rows), reverse=True)
    table = diffsim.format_sensitivity(rows, unit="eV")
    assert "| total |" in table and "params/update_1" in table and "[eV]" in table


def test_named_blocks_scaling_is_the_derivative_of_scaling_the_block(schnet_grad):
    """Interaction blocks named by patterns: the unmatched leaves form "(other)", and Σθ·∂E/∂θ of
    a block equals the central difference of E with that block scaled by (1 ± h)."""
    v, g, energy = schnet_grad
    blocks = {f"interaction {i}": (f"params/filter_{i}_*", f"params/in2f_{i}", f"params/f2out_{i}", f"params/update_{i}")
              for i in range(2)}
    groups = {"embedding": "params/embedding", **blocks, "readout": "params/readout_*"}
    rows = diffsim.sensitivity(g, v, groups=groups)
    assert [r.group for r in rows] == ["embedding", "interaction 0", "interaction 1", "readout", "(other)"]
    assert rows[-1].paths == ("reference_energies", "energy_shift", "energy_scale")
    assert len(rows[1].paths) == 2 * 2 + 1 + 2 + 2  # filter_0_0/1 (kernel, bias), in2f_0 kernel, f2out_0, update_0
    leaves, tree = jax.tree_util.tree_flatten(v.params)
    paths = parameter_paths(v.params)
    h = 1e-5
    for r in rows[:4]:
        def e_of(t, r=r):
            scaled = [x * (1 + t) if p in r.paths else x for p, x in zip(paths, leaves)]
            return float(energy(v._replace(params=jax.tree_util.tree_unflatten(tree, scaled))))

        fd = (e_of(h) - e_of(-h)) / (2 * h)
        assert abs(r.scaling) > 1e-3, r
        np.testing.assert_allclose(r.scaling, fd, rtol=1e-6, err_msg=r.group)
        assert abs(r.scaling) <= np.sqrt(r.n_params) * r.relative * (1 + 1e-12)  # Cauchy-Schwarz
    with pytest.raises(ValueError, match="at most one group"):
        diffsim.sensitivity(g, v, groups={"a": "params/readout_0", "b": "params/readout_*"})
    with pytest.raises(ValueError, match="matches no parameter"):
        diffsim.sensitivity(g, v, groups=["params/interaction_0"])
    with pytest.raises(ValueError, match="different parameter trees"):
        diffsim.sensitivity(g, v._replace(params={"params": {}}))
    with pytest.raises(TypeError, match="mapping"):
        diffsim.sensitivity(g, v, groups="params/embedding")


# ---------------------------------------------------------------------------------------- physics
R_MAX, N_BINS, WIDTH = 3.4, 34, 0.05  # Å: RDF to below the second shell (3.61 Å), 0.1 Å bins, σ 0.05 Å


@pytest.fixture(scope="module")
def peak_sensitivity(morse):
    """A 600 K Langevin reference run of the Morse crystal (2 replicas × 30 frames) and the
    reweighted first-peak height max_b ⟨g_b⟩ with its gradient."""
    cfg = MDConfig(ensemble="nvt", temperature_K=600, timestep_fs=4.0, dtype="float64", skin=0.3, friction_per_ps=10.0)
    sim = diffsim.trajectory(morse, _cu(), cfg, steps=200, record_every=5, chunk_steps=50, replicas=2)
    v = sim.engine.cast(morse.variables)
    ref, _ = diffsim.sample_reference(sim, v, sim.start(v, seed=1), discard=10)

    def g_of(R):
        return diffsim.rdf(sim.system, R[None], r_max=R_MAX, n_bins=N_BINS, width=WIDTH)[1]

    peak = jax.jit(lambda vv: jnp.max(diffsim.reweighted_average(vv, ref, g_of)[0]))
    value, grads = jax.value_and_grad(peak)(v)
    return sim, v, peak, float(value), grads


def test_reweighted_rdf_peak_sensitivity_equals_finite_differences(peak_sensitivity):
    sim, v, peak, value, grads = peak_sensitivity
    rows = {r.group: r for r in diffsim.sensitivity(grads, v)}
    assert list(rows) == ["params/D", "params/alpha", "params/r0", "reference_energies", "energy_shift", "energy_scale"]
    assert 4.0 < value < 12.0  # a 600 K crystal's first peak
    h = 1e-5
    for group in ("params/D", "params/alpha", "params/r0", "energy_scale"):
        def scaled(t, group=group):
            if group == "energy_scale":
                return v._replace(energy_scale=v.energy_scale * (1 + t))
            name = group.split("/")[1]
            p = v.params["params"]
            return v._replace(params={"params": {**p, name: p[name] * (1 + t)}})

        fd = (float(peak(scaled(h))) - float(peak(scaled(-h)))) / (2 * h)
        np.testing.assert_allclose(rows[group].scaling, fd, rtol=1e-6, err_msg=group)
        assert rows[group].relative == pytest.approx(abs(rows[group].scaling), rel=1e-12)  # one scalar per group
    # a constant energy (E0, shift) cancels in the normalised weights; scale multiplies D's energy exactly
    for group in ("reference_energies", "energy_shift"):
        assert rows[group].grad_norm < 1e-10 * rows["params/D"].grad_norm, group
    assert rows["energy_scale"].scaling == pytest.approx(rows["params/D"].scaling, rel=1e-9)


def test_rdf_peak_sensitivities_follow_harmonic_lattice_dynamics(peak_sensitivity):
    """Deepening, stiffening or compressing the bond sharpens the peak: every scaling sensitivity
    is positive, r0 ≫ α > D, and the ratios α/D, r0/D agree with the harmonic crystal's
    −d ln σ²/d ln θ (σ² = kT bᵀ H⁺ b the NN-distance variance, H the 96×96 Hessian of the perfect
    lattice, finite differences in α and r0) to 10 % (measured, 3 seeds and run lengths: within
    0.2-2.5 %); D/peak is ½ σ²/(σ² + w²) for a Gaussian peak of width σ seen through the kernel w
    (0.38; measured 0.30-0.49), within a factor 2."""
    sim, v, _, value, grads = peak_sensitivity
    s = {r.group: r.scaling for r in diffsim.sensitivity(grads, v)}
    assert s["params/r0"] > 2 * s["params/alpha"] > 2 * s["params/D"] > 0
    system = sim.system
    R0 = system.positions  # [N, 3] the perfect lattice (fractional; jax-md's space gives Cartesian derivatives)
    nbrs = system.allocate(R0)
    hessian = jax.jit(lambda vv: jax.hessian(lambda R: system.energy(vv, R, neighbor=nbrs))(R0).reshape(96, 96))  # eV/Å²
    pos = np.asarray(_cu().positions)
    d = pos - pos[0]
    d -= 2 * A * np.round(d / (2 * A))
    r = np.linalg.norm(d, axis=1)
    nn = np.flatnonzero(np.abs(r - A / np.sqrt(2)) < 1e-6)
    assert len(nn) == 12
    b = np.zeros((len(nn), 32, 3))  # [12, N, 3] unit stretch of each first-shell bond of atom 0
    for k, j in enumerate(nn):
        b[k, j], b[k, 0] = d[j] / r[j], -d[j] / r[j]
    b = b.reshape(len(nn), -1)

    def sigma2(vv):  # Å², mean over the 12 bonds of kT bᵀ H⁺ b (H⁺: the pseudo-inverse, without the 3 translations)
        h_inv = np.linalg.pinv(np.asarray(hessian(vv)), hermitian=True, rcond=1e-8)  # [96, 96] Å²/eV
        return float(np.mean(np.einsum("ki,ij,kj->k", b, h_inv, b))) * BOLTZMANN_EV_PER_K * 600

    def with_(name, f):
        p = v.params["params"]
        return v._replace(params={"params": {**p, name: p[name] * f}})

    s2 = sigma2(v)
    assert 0.05 < np.sqrt(s2) < 0.15  # Å, NN-distance spread of a 600 K crystal
    h = 1e-4
    for name in ("alpha", "r0"):
        dlog = (np.log(sigma2(with_(name, 1 + h))) - np.log(sigma2(with_(name, 1 - h)))) / (2 * h)
        np.testing.assert_allclose(s[f"params/{name}"] / s["params/D"], -dlog, rtol=0.1, err_msg=name)
    expected = 0.5 * s2 / (s2 + WIDTH**2)
    assert expected / 2 < s["params/D"] / value < 2 * expected, (s["params/D"] / value, expected)


# ---------------------------------------------------------------------------------------- horizon
def test_gradient_norm_vs_horizon(morse):
    """One dict per horizon with finite norms; a horizon that is not a multiple of record_every
    raises; the shortest horizon's norm is that of sim.value_and_grad's network gradient (NVE:
    the cheapest program to compile, three times)."""
    cfg = MDConfig(ensemble="nve", temperature_K=600, timestep_fs=4.0, dtype="float64", skin=0.3)
    n = 32

    def epot(records):
        return diffsim.mean_potential_energy(records, n)

    out = diffsim.gradient_norm_vs_horizon(morse, _cu(0.02), cfg, epot, (10, 20), record_every=5, seed=3)
    assert [o["steps"] for o in out] == [10, 20]
    for o in out:
        assert set(o) == {"steps", "value", "grad_norm", "seconds"}
        assert np.isfinite(o["value"]) and np.isfinite(o["grad_norm"]) and o["grad_norm"] > 1e-3
    sim = diffsim.trajectory(morse, _cu(0.02), cfg, steps=10, record_every=5, chunk_steps=5)
    v = morse.variables
    value, g = sim.value_and_grad(epot, v, sim.start(v, seed=3))
    direct = np.sqrt(sum(np.sum(np.asarray(x) ** 2) for x in jax.tree_util.tree_leaves(g.params)))
    assert out[0]["value"] == pytest.approx(float(value), rel=1e-12)
    assert out[0]["grad_norm"] == pytest.approx(direct, rel=1e-10)
    assert out[1]["value"] != pytest.approx(out[0]["value"], rel=1e-9)  # another run length, another average
    with pytest.raises(ValueError, match="not a multiple of record_every"):
        diffsim.gradient_norm_vs_horizon(morse, _cu(0.02), cfg, epot, (12,), record_every=5)
