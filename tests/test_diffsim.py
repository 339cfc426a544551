"""Differentiable simulation (mlpjax.diffsim): gradients of trajectory observables equal finite
differences in float64; checkpointed and plain scans agree; neighbour-list rebuilds and overflow
inside a differentiated run neither break nor silently change the gradient; the reweighting
(DiffTRe) gradient agrees with backpropagation; the smooth RDF is a real RDF; a top-down fit
moves the parameters toward the target.

Systems: fcc Cu, 32 atoms (2×2×2 cubic), a Morse pair potential with a 3.2 Å cutoff (first
neighbour shell) — cheap to compile — and one tiny SchNet for the MLP path (second derivatives of
a network through the integrator).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk

from mlpjax import diffsim, models
from mlpjax.md import MDConfig
from mlpjax.models.pair import pair_potential
from mlpjax.potential import Potential

N = 32


def _cu(rattle=0.02, seed=1):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def morse():
    return pair_potential("morse", species=["Cu"], cutoff=3.2, switch_width_A=0.4)


def _epot(records):
    return diffsim.mean_potential_energy(records, N)


def _fd(f, x, h):
    return (f(x + h) - f(x - h)) / (2 * h)


def _with_D(pot_vars, D):
    p = pot_vars.params
    return pot_vars._replace(params={"params": {**p["params"], "D": jnp.full_like(p["params"]["D"], D)}})


@pytest.fixture(scope="module")
def nve_sim(morse):
    cfg = MDConfig(ensemble="nve", temperature_K=300, timestep_fs=2.0, dtype="float64", skin=0.3)
    return diffsim.trajectory(morse, _cu(), cfg, steps=60, record_every=5, chunk_steps=20, replicas=2)


def test_trajectory_gradient_equals_finite_differences(morse, nve_sim):
    """d⟨E_pot⟩/dθ through 60 NVE steps, for each Morse parameter and for one initial
    coordinate, equals central finite differences (float64)."""
    sim, v = nve_sim, morse.variables
    start = sim.start(v, seed=0)
    value, g = sim.value_and_grad(_epot, v, start)
    assert np.isfinite(float(value))
    for name, h in (("D", 1e-5), ("alpha", 1e-5), ("r0", 1e-5)):
        def f(x, name=name):
            p = v.params
            vv = v._replace(params={"params": {**p["params"], name: jnp.full_like(p["params"][name], x)}})
            return float(sim.value(_epot, vv, start))

        x0 = float(v.params["params"][name][0, 0])
        fd = _fd(f, x0, h)
        got = float(g.params["params"][name][0, 0])
        assert abs(got) > 1e-3, f"{name}: gradient vanishes ({got})"
        np.testing.assert_allclose(got, fd, rtol=2e-5, err_msg=name)
    # with respect to the initial state: one fractional coordinate of atom 3 in replica 0
    _, gs = sim.value_and_grad(_epot, v, start, wrt="state")

    def f_pos(x):
        st = start.state.set(position=start.state.position.at[0, 3, 0].set(x))
        return float(sim.value(_epot, v, diffsim.Start(st, start.nbrs)))

    fd = _fd(f_pos, float(start.state.position[0, 3, 0]), 1e-6)
    got = float(gs.position[0, 3, 0])  # per Å: jax-md's fractional space gives Cartesian gradients
    assert abs(got) > 1e-4
    np.testing.assert_allclose(got * 2 * 3.61, fd, rtol=1e-4)  # d/ds_x = L d/dx in the cubic cell


def test_start_takes_one_set_of_positions_and_momenta_for_every_replica(morse, nve_sim):
    """Regression: ``start(positions=[N, 3], momenta=[N, 3])`` (e.g. an equilibrated state to
    continue) broadcast both over the replicas; [N, 3] momenta used to reach the engine unbatched
    and fail inside the run's vmap."""
    sim, v = nve_sim, morse.variables
    rng = np.random.default_rng(0)
    pos = np.asarray(sim.system.positions)
    mom = rng.normal(size=pos.shape)
    one = sim.start(v, positions=pos, momenta=mom)
    both = sim.start(v, positions=np.stack([pos] * sim.replicas), momenta=np.stack([mom] * sim.replicas))
    assert one.state.momentum.shape == (sim.replicas,) + pos.shape
    np.testing.assert_array_equal(np.asarray(one.state.momentum), np.asarray(both.state.momentum))
    np.testing.assert_array_equal(np.asarray(one.state.position), np.asarray(both.state.position))


def test_checkpointed_and_plain_scans_give_the_same_gradient(morse, nve_sim):
    cfg = nve_sim.config
    plain = diffsim.trajectory(morse, _cu(), cfg, steps=60, record_every=5, chunk_steps=20, replicas=2, checkpoint=False)
    v = morse.variables
    s1, s2 = nve_sim.start(v, seed=0), plain.start(v, seed=0)
    v1, g1 = nve_sim.value_and_grad(_epot, v, s1)
    v2, g2 = plain.value_and_grad(_epot, v, s2)
    assert float(v1) == pytest.approx(float(v2), abs=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-14)
    # truncated backpropagation: windows of one chunk give another (finite, nonzero) gradient
    trunc = diffsim.trajectory(morse, _cu(), cfg, steps=60, record_every=5, chunk_steps=20, replicas=2,
                               truncate_every=1)
    v3, g3 = trunc.value_and_grad(_epot, v, trunc.start(v, seed=0))
    assert float(v3) == pytest.approx(float(v1), abs=1e-12)  # same forward run
    d1, d3 = float(g1.params["params"]["alpha"][0, 0]), float(g3.params["params"]["alpha"][0, 0])
    assert np.isfinite(d3) and abs(d3) > 1e-3 and abs(d3 - d1) > 1e-9


def test_neighbour_list_rebuilds_and_overflow_inside_the_differentiated_run(morse):
    """A tiny skin forces list rebuilds inside the run; a list allocated without head room
    overflows there: the host reallocates and recomputes, and the gradient equals finite
    differences and the gradient with a roomy list (never a truncated list)."""
    hot = MDConfig(ensemble="nvt", temperature_K=1500, timestep_fs=3.0, dtype="float64", skin=0.06,
                   capacity_multiplier=1.0, friction_per_ps=2.0)
    sim = diffsim.trajectory(morse, _cu(rattle=0.0), hot, steps=80, record_every=5, chunk_steps=20, replicas=1)
    v = morse.variables
    start = sim.start(v, seed=3)  # the perfect lattice: exactly 12 neighbours per atom within cutoff + skin
    records, end = sim.records(v, start)
    moved = np.asarray(end.nbrs.reference_position) != np.asarray(start.nbrs.reference_position)
    assert moved.any(), "the list was never rebuilt: the test would be vacuous"
    before = sim.stats["reallocations"]
    value, g = sim.value_and_grad(_epot, v, start)
    assert sim.stats["reallocations"] > before, "expected an overflow with a list allocated without head room"
    roomy = sim.start(v, seed=3, capacity=64)
    value2, g2 = sim.value_and_grad(_epot, v, roomy)
    assert float(value) == pytest.approx(float(value2), abs=1e-12)
    got = float(g.params["params"]["D"][0, 0])
    np.testing.assert_allclose(got, float(g2.params["params"]["D"][0, 0]), rtol=1e-10)
    fd = _fd(lambda x: float(sim.value(_epot, _with_D(v, x), roomy)), float(v.params["params"]["D"][0, 0]), 1e-6)
    assert abs(got) > 1e-2
    np.testing.assert_allclose(got, fd, rtol=1e-4)


def test_mlp_trajectory_gradient_equals_finite_differences():
    """A network potential (tiny SchNet): second derivatives of the model inside the integrator."""
    p = Potential("schnet", models.make_config("schnet", {"features": 8, "interactions": 1, "num_rbf": 6,
                                                          "filter_hidden": 8}),
                  cutoff=3.2, species=(29,), reference_energies=(0.0,), avg_num_neighbors=12.0, energy_scale=3.0)
    p = p.replace(params=p.init_params(jax.random.PRNGKey(0)))
    cfg = MDConfig(ensemble="nvt", temperature_K=500, timestep_fs=2.0, dtype="float64", skin=0.3)
    sim = diffsim.trajectory(p, _cu(), cfg, steps=30, record_every=5, chunk_steps=10)
    v = sim.engine.cast(p.variables)  # float64 leaves (init gives float32): the perturbation must be float64 too
    start = sim.start(v, seed=0)
    _, g = sim.value_and_grad(_epot, v, start)
    # a direction in parameter space: every network weight scaled by (1 + t)
    leaves, tree = jax.tree_util.tree_flatten(v.params)

    def f(t):
        return float(sim.value(_epot, v._replace(params=jax.tree_util.tree_unflatten(tree, [x * (1 + t) for x in leaves])),
                               start))

    directional = sum(float(jnp.sum(a * b)) for a, b in zip(jax.tree_util.tree_leaves(g.params), leaves))
    assert abs(directional) > 1e-4
    np.testing.assert_allclose(directional, _fd(f, 0.0, 1e-5), rtol=1e-5)
    np.testing.assert_allclose(float(g.energy_scale), _fd(
        lambda s: float(sim.value(_epot, v._replace(energy_scale=jnp.asarray(s)), start)), float(v.energy_scale), 1e-6),
        rtol=1e-5)


def test_reweighting_gradient_agrees_with_backpropagation(morse):
    """d⟨E_pot⟩/dD of a 600 K Langevin ensemble: DiffTRe's reweighting estimate (the fluctuation
    formula, from the stored frames) vs backpropagation through the same runs, within 3
    standard errors of the per-replica reweighting estimates."""
    cfg = MDConfig(ensemble="nvt", temperature_K=600, timestep_fs=4.0, dtype="float64", skin=0.3, friction_per_ps=10.0)
    R, discard = 4, 5
    sim = diffsim.trajectory(morse, _cu(), cfg, steps=300, record_every=5, chunk_steps=50, replicas=R)
    v = morse.variables
    start = sim.start(v, seed=11)

    def bp(records):
        return jnp.mean(records["epot"][discard:]) / N

    value_bp, g_bp = sim.value_and_grad(bp, v, start)
    ref, _ = diffsim.sample_reference(sim, v, start, discard=discard)
    assert ref.positions.shape[0] == R * (sim.n_records - discard)

    def per_frame(vv, R_, nb):
        return sim.system.energy(vv, R_, neighbor=nb) / N

    def avg(vv):
        return diffsim.reweighted_average(vv, ref, per_frame, with_params=True)

    (value_rw, n_eff), g_rw = jax.value_and_grad(avg, has_aux=True)(v)
    assert float(value_rw) == pytest.approx(float(value_bp), rel=1e-9)  # same frames, equal weights
    assert float(n_eff) == pytest.approx(ref.positions.shape[0], rel=1e-9)
    # standard error: the reweighting estimate replica by replica (frames are interleaved [T, R] -> T·R)
    T = sim.n_records - discard
    grad_of = jax.jit(jax.grad(lambda vv, ref_: diffsim.reweighted_average(vv, ref_, per_frame, with_params=True)[0]))
    est = []
    for k in range(R):
        sub = diffsim.Reference(positions=ref.positions.reshape(T, R, N, 3)[:, k], energies=ref.energies.reshape(T, R)[:, k],
                                kT=ref.kT, nbrs=ref.nbrs, system=ref.system)
        est.append(float(grad_of(v, sub).params["params"]["D"][0, 0]))
    se = np.std(est, ddof=1) / np.sqrt(R)
    a, b = float(g_bp.params["params"]["D"][0, 0]), float(g_rw.params["params"]["D"][0, 0])
    assert abs(a) > 0.5  # d<E>/dD ~ -<coordination>/2 ~ -6 eV/atom per eV
    assert abs(a - b) <= 3 * se + 1e-3 * abs(b), (a, b, se)
    # away from the reference parameters the weights spread and N_eff falls
    (_, n_eff_far) = avg(_with_D(v, 1.3 * float(v.params["params"]["D"][0, 0])))
    assert float(n_eff_far) < 0.9 * ref.positions.shape[0]


def test_reweighting_gradient_memory_does_not_grow_with_the_frames(morse):
    """Regression: the reweighted gradient rematerialises each frame's energy (and a per-frame
    observable with parameters), so XLA's temp memory of the compiled gradient is that of one
    frame, not F × the per-pair intermediates (it used to grow linearly: 0.33 → 4.3 MiB for
    10 → 160 frames of 32 atoms, float32). 10 and 80 frames of one run."""
    cfg = MDConfig(ensemble="nvt", temperature_K=600, timestep_fs=4.0, dtype="float64", skin=0.3)
    sim = diffsim.trajectory(morse, _cu(), cfg, steps=400, record_every=5, chunk_steps=50)
    v = morse.variables
    ref, _ = diffsim.sample_reference(sim, v, sim.start(v, seed=2))
    assert ref.positions.shape[0] == 80

    def per_frame(vv, R_, nb):
        return sim.system.energy(vv, R_, neighbor=nb) / N

    def temp_mib(ref_, with_params):
        def f(vv, r):
            fn = per_frame if with_params else (lambda R_: jnp.sum(R_ ** 2))
            return diffsim.reweighted_average(vv, r, fn, with_params=with_params)[0]

        m = jax.jit(jax.grad(f)).lower(v, ref_).compile().memory_analysis()
        if m is None:
            pytest.skip("no XLA memory analysis on this backend")
        return m.temp_size_in_bytes / 2**20

    few = diffsim.Reference(positions=ref.positions[:10], energies=ref.energies[:10], kT=ref.kT, nbrs=ref.nbrs,
                            system=ref.system)
    for with_params in (False, True):
        a, b = temp_mib(few, with_params), temp_mib(ref, with_params)
        assert b < 1.5 * a + 0.05, (with_params, a, b)


def test_smooth_rdf_is_a_radial_distribution_function(morse):
    """The perfect fcc lattice: the first peak at a/√2 and 12 neighbours in the first shell
    (∫ 4π r² ρ g(r) dr); an ideal-gas-like random configuration gives g ≈ 1 at large r."""
    from mlpjax.md import build_system

    cfg = MDConfig(dtype="float64")
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    system = build_system(pair_potential("morse", species=["Cu"], cutoff=5.0, switch_width_A=1.0), atoms, cfg)
    r_max, nb = 5.0, 200
    r, g = diffsim.rdf(system, system.positions[None], r_max=r_max, n_bins=nb, width=0.05)
    r, g = np.asarray(r), np.asarray(g)
    assert abs(r[np.argmax(g)] - 3.61 / np.sqrt(2)) < r_max / nb
    rho = (len(atoms) - 1) / atoms.get_volume()  # the normalisation of rdf: N − 1 other atoms (ideal gas: g = 1)
    first = r < 3.1
    n1 = np.sum(4 * np.pi * r[first] ** 2 * rho * g[first]) * (r_max / nb)
    assert n1 == pytest.approx(12.0, rel=1e-3)
    rng = np.random.default_rng(0)
    frames = jnp.asarray(rng.random((20, len(atoms), 3)))
    _, g_gas = diffsim.rdf(system, frames, r_max=r_max, n_bins=50)
    assert np.mean(np.asarray(g_gas)[25:]) == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="half the cell"):
        diffsim.rdf(system, system.positions[None], r_max=6.0)


def test_top_down_fit_recovers_a_well_depth_from_a_simulated_average(morse):
    """Fit D so that ⟨E_pot⟩/N of a 600 K Langevin run matches that of a deeper well (D × 1.2),
    starting from D₀: the loss falls, a fresh simulation at the fitted D reproduces the target,
    and D lands near 1.2 D₀ (⟨E_pot⟩/N ≈ D u_min + 3/2 kT: D is identifiable)."""
    cfg = MDConfig(ensemble="nvt", temperature_K=600, timestep_fs=4.0, dtype="float64", skin=0.3, friction_per_ps=10.0)
    discard = 20  # 400 fs = 4 / γ of equilibration
    sim = diffsim.trajectory(morse, _cu(), cfg, steps=200, record_every=5, chunk_steps=50, replicas=2)
    v0 = morse.variables
    D0 = float(v0.params["params"]["D"][0, 0])

    def mean_e(records):
        return jnp.mean(records["epot"][discard:]) / N

    target_v = _with_D(v0, 1.2 * D0)
    target = float(sim.value(mean_e, target_v, sim.start(target_v, seed=5)))

    def per_frame(vv, R_, nb):
        return sim.system.energy(vv, R_, neighbor=nb) / N

    from mlpjax.diffsim.fit import FitConfig, fit_observables

    res = fit_observables(sim, v0, per_frame=per_frame, loss=lambda e: (e - target) ** 2 * 1e2,
                          config=FitConfig(steps=15, learning_rate=5e-5, optimizer="sgd", n_eff_ratio=0.95,
                                           discard=discard, clip_norm=None, freeze=("params/alpha", "params/r0")),
                          start=sim.start(v0, seed=6), with_params=True)
    D = float(res.variables.params["params"]["D"][0, 0])
    assert res.history[-1]["top_down"] < 1e-2 * res.history[0]["top_down"]
    assert res.n_references >= 2 and any(h["new_reference"] for h in res.history)
    check = float(sim.value(mean_e, res.variables, sim.start(res.variables, seed=7)))
    assert abs(check - target) < 0.1 * abs(float(sim.value(mean_e, v0, sim.start(v0, seed=7))) - target)
    assert abs(D - 1.2 * D0) < 0.1 * D0, (D, D0)
    assert diffsim.effective_sample_size(jnp.ones(4) / 4) == pytest.approx(4.0)


def test_relative_steps_move_each_parameter_by_a_fraction(morse):
    """FitConfig(relative_steps=True): Adam on log θ, so its first step (±lr in φ = log θ) moves D by
    exactly a factor e^{±lr}, upward toward a deeper target well; frozen parameters stay put."""
    from mlpjax.diffsim.fit import FitConfig, fit_observables

    cfg = MDConfig(ensemble="nvt", temperature_K=600, timestep_fs=4.0, dtype="float64", skin=0.3, friction_per_ps=10.0)
    sim = diffsim.trajectory(morse, _cu(), cfg, steps=200, record_every=5, chunk_steps=50, replicas=2)
    v0 = morse.variables
    D0 = float(v0.params["params"]["D"][0, 0])
    target = -1.2 * D0 * 6  # eV/atom: deeper than the start's ⟨E⟩/N (the fcc Morse crystal: ≈ −6 D per atom)

    def per_frame(vv, R_, nb):
        return sim.system.energy(vv, R_, neighbor=nb) / N

    res = fit_observables(sim, v0, per_frame=per_frame, loss=lambda e: (e - target) ** 2,
                          config=FitConfig(steps=1, learning_rate=0.05, relative_steps=True, discard=20,
                                           freeze=("params/alpha", "params/r0")),
                          start=sim.start(v0, seed=6), with_params=True)
    q0, q1 = v0.params["params"], res.variables.params["params"]
    assert float(q1["D"][0, 0]) / D0 == pytest.approx(np.exp(0.05), rel=1e-6)
    assert float(q1["alpha"][0, 0]) == float(q0["alpha"][0, 0]) and float(q1["r0"][0, 0]) == float(q0["r0"][0, 0])
    # patterns: D takes a relative step (a factor e^{±lr}), α and r0 plain ones (±lr in Å⁻¹ and Å)
    res = fit_observables(sim, v0, per_frame=per_frame, loss=lambda e: (e - target) ** 2,
                          config=FitConfig(steps=1, learning_rate=0.05, relative_steps=("params/D",), discard=20),
                          start=sim.start(v0, seed=6), with_params=True)
    q1 = res.variables.params["params"]
    assert float(q1["D"][0, 0]) / D0 == pytest.approx(np.exp(0.05), rel=1e-6)
    for key in ("alpha", "r0"):
        assert abs(float(q1[key][0, 0]) - float(q0[key][0, 0])) == pytest.approx(0.05, rel=1e-6), key
    with pytest.raises(ValueError, match="matches no fitted parameter"):
        fit_observables(sim, v0, per_frame=per_frame, loss=lambda e: (e - target) ** 2,
                        config=FitConfig(steps=1, relative_steps=("params/epsilon",)), start=sim.start(v0, seed=6),
                        with_params=True)


def test_virial_pressure_is_ase_morse_stress():
    """−∂U/∂V of one frame equals −tr(σ)/3 of ASE's MorsePotential (the same function); a cell
    without periodicity is refused."""
    from ase.calculators.morse import MorsePotential

    from mlpjax import units

    cutoff, width = 4.5, 1.0
    pot = pair_potential("morse", species=["Cu"], cutoff=cutoff, switch_width_A=width)
    atoms = bulk("Cu", "fcc", a=3.5, cubic=True).repeat(3)  # compressed: positive pressure
    atoms.rattle(0.05, seed=3)
    cfg = MDConfig(ensemble="nvt", temperature_K=300, timestep_fs=2.0, dtype="float64", skin=0.3)
    sim = diffsim.trajectory(pot, atoms, cfg, steps=10, record_every=5, chunk_steps=5)
    R = sim.system.coordinates(atoms)
    nbrs = sim.system.allocate(R)
    p = float(diffsim.virial_pressure(sim.system, sim.engine.cast(pot.variables), R, nbrs))
    D, ALPHA, R0 = 0.3429, 1.3588, 2.866
    ref = atoms.copy()
    ref.calc = MorsePotential(epsilon=D, rho0=ALPHA * R0, r0=R0, rcut1=(cutoff - width) / R0, rcut2=cutoff / R0)
    p_ase = -np.trace(ref.get_stress(voigt=False)) / 3 / units.GPA_EV_PER_A3
    assert p > 1.0 and p == pytest.approx(p_ase, rel=1e-9)
    with pytest.raises(ValueError, match="periodic"):
        mol = atoms.copy()
        mol.pbc = False
        mol.cell = None
        diffsim.virial_pressure(diffsim.trajectory(pot, mol, cfg, steps=10, record_every=5, chunk_steps=5).system,
                                pot.variables, mol.positions, None)


def test_replicas_stuck_in_different_states_are_flagged():
    """Reweighting needs one canonical ensemble: replicas whose mean energies differ by ≫ the
    frame-to-frame spread (the jammed Morse liquid of experiments/fit_rdf.py: 160 eV apart, 80×
    the spread) warn; replicas that agree within their noise do not."""
    import warnings

    rng = np.random.default_rng(0)
    kT = 0.12
    same = rng.normal(-500.0, 2.0, size=(40, 2))  # [T, R] eV
    stuck = same + np.array([0.0, 160.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        diffsim.check_replicas_agree(same, kT)
        diffsim.check_replicas_agree(stuck[:, :1], kT)  # one replica: nothing to compare
    with pytest.warns(diffsim.NonErgodicReferenceWarning, match="differ by 160"):
        diffsim.check_replicas_agree(stuck, kT)
