"""The MD engine takes the parameters as an argument (mlpjax.md.engine): compiled once per
architecture, system and dynamics, reused by every parameter set; differentiable with respect
to the parameters through a trajectory; one driver for single runs and replicas (restarts
included); one set of physical constants across md, replicas and validate.

Tiny untrained SchNet potentials (smooth, not physical).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk

from mlpjax import cache, models, units
from mlpjax import md
from mlpjax.md import MDConfig, Targets, build_system, simulate, simulate_replicas
from mlpjax.md.system import stack_neighbor_lists
from mlpjax.potential import Potential, load

SMALL = {"features": 16, "interactions": 2, "num_rbf": 8, "filter_hidden": 16}


def _pot(cutoff=4.0, seed=0):
    p = Potential("schnet", models.make_config("schnet", SMALL), cutoff=cutoff, species=(29,),
                  reference_energies=(0.0,), avg_num_neighbors=40.0, energy_scale=10.0)
    return p.replace(params=p.init_params(jax.random.PRNGKey(seed)))


@pytest.fixture(scope="module")
def pot():
    return _pot()


def _cu(n=3, rattle=0.03, seed=1):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(n)
    atoms.rattle(rattle, seed=seed)
    return atoms


def _scaled(pot, factor):
    return pot.replace(params=jax.tree_util.tree_map(lambda x: x * factor, pot.params))


def test_engine_is_reused_for_the_same_architecture_and_dynamics(pot, tmp_path):
    """md.engine is one cached factory keyed by static settings: the same engine for other start
    positions, seeds, temperatures, run lengths, chunking, for ANOTHER parameter set of the same
    architecture and for the model loaded again from its file; another engine for another cell,
    record interval, timestep, ensemble, ramp length or architecture. (Nothing runs here.)"""
    a, b = _cu(seed=7), _cu(seed=8)  # same cell, other positions
    cfg = MDConfig(ensemble="nvt", steps=100, dtype="float32")
    sys_a = build_system(pot, a, cfg)
    e1 = md.engine(pot.definition, sys_a, cfg)
    same = [
        md.engine(pot.definition, build_system(pot, b, cfg), dataclasses.replace(cfg, seed=5, steps=300, chunk_steps=7,
                                                                                 temperature_K=900.0)),
        md.engine(_scaled(pot, 1.01).definition, build_system(_scaled(pot, 1.01), a, cfg), cfg),
    ]
    pot.save(tmp_path / "m.mlpjax")
    loaded = load(tmp_path / "m.mlpjax")
    same.append(md.engine(loaded, build_system(loaded, a, cfg), cfg))
    for other in same:
        assert other is e1 and other.chunk is e1.chunk
    strained = a.copy()
    strained.set_cell(a.cell * 1.01, scale_atoms=True)
    ramp = MDConfig(ensemble="nvt", steps=100, temperature_final_K=600.0, dtype="float32")
    wider = _pot(cutoff=4.2)
    others = [
        md.engine(pot, build_system(pot, strained, cfg), cfg),
        md.engine(pot, sys_a, cfg, record_every=20),
        md.engine(pot, build_system(pot, a, dataclasses.replace(cfg, timestep_fs=2.0)), dataclasses.replace(cfg, timestep_fs=2.0)),
        md.engine(pot, build_system(pot, a, dataclasses.replace(cfg, ensemble="nve")), dataclasses.replace(cfg, ensemble="nve")),
        md.engine(pot, sys_a, ramp),
        md.engine(wider, build_system(wider, a, cfg), cfg),
    ]
    for other in others:
        assert other.chunk is not e1.chunk
    assert md.engine(pot, sys_a, ramp).chunk is not md.engine(pot, sys_a, dataclasses.replace(ramp, steps=200)).chunk
    with pytest.raises(ValueError, match="architecture"):
        md.engine(wider.definition, sys_a, cfg)


def test_a_second_potential_compiles_nothing_and_follows_its_own_forces(pot):
    """MD with a second Potential of the same architecture but other parameters compiles nothing
    new (counted: XLA backend compilations) and gives that potential's trajectory: bit for bit the
    trajectory a fresh engine compiled for it gives, and not the first potential's."""
    cfg = MDConfig(ensemble="nve", temperature_K=600.0, timestep_fs=2.0, steps=40, chunk_steps=20, log_every=10,
                   dtype="float32", seed=1)
    atoms = _cu(n=2, seed=3)  # 32 atoms; cutoff 4 Å: the multi-image path
    first = simulate(pot, atoms, cfg, progress=False)
    assert first.timings["compilations"] > 0
    other = _scaled(pot, 1.05)
    n0, _ = md.compile_stats()
    reused = simulate(other, atoms, cfg, progress=False)
    assert md.compile_stats()[0] == n0 and reused.timings["compilations"] == 0
    assert np.abs(reused.positions - first.positions).max() > 1e-4  # its own forces, not the first potential's
    cache.clear()
    fresh = simulate(other, atoms, cfg, progress=False)
    assert fresh.timings["compilations"] > 0
    np.testing.assert_array_equal(reused.positions, fresh.positions)
    np.testing.assert_array_equal(reused.thermo["E_tot_eV"], fresh.thermo["E_tot_eV"])


def test_gradient_of_a_trajectory_observable_matches_finite_differences():
    """d<E_pot>/dθ over 20 NVE steps of 32 Cu atoms, through the engine (jax.grad of init + chunk),
    equals central finite differences along random directions of the network parameters, in
    float64; and d<E_pot>/d(energy_shift) = N exactly (a shift moves no atom)."""
    pot = _pot(cutoff=3.0)  # 3.0 + 0.3 Å skin fits half the 7.22 Å cell: the plain minimum image
    cfg = MDConfig(ensemble="nve", temperature_K=300.0, timestep_fs=2.0, steps=20, log_every=1, skin=0.3,
                   dtype="float64")
    with jax.enable_x64(True):
        system = build_system(pot, _cu(n=2, seed=5), cfg)
        assert system.n_atoms == 32 and system.repeats == (1, 1, 1)
        eng = md.engine(pot.definition, system, cfg, record_every=1)
        variables = eng.cast(pot.variables)
        nbrs = stack_neighbor_lists([system.allocate(system.positions)])
        keys = jax.random.PRNGKey(0)[None]
        R = system.positions[None]
        targets = Targets.of([cfg], system.dtype)

        def mean_epot(v):
            state = eng.init(v, keys, R, nbrs, targets)
            state, _, records, overflow = eng.chunk(v, state, nbrs, 0, n_steps=20, targets=targets)
            return jnp.mean(records["epot"]), overflow

        (value, overflow), grad = jax.value_and_grad(mean_epot, has_aux=True)(variables)
        assert not bool(overflow) and np.isfinite(float(value))
        assert float(grad.energy_shift) == pytest.approx(32.0, rel=1e-9)
        leaves, treedef = jax.tree_util.tree_flatten(variables.params)
        rng = np.random.default_rng(0)
        for trial in range(2):
            direction = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(rng.normal(size=np.shape(x))) for x in leaves])
            along = sum(float(jnp.vdot(g, d)) for g, d in zip(jax.tree_util.tree_leaves(grad.params),
                                                                jax.tree_util.tree_leaves(direction)))
            h = 1e-5

            def at(t):
                p = jax.tree_util.tree_map(lambda x, d: x + t * d, variables.params, direction)
                return float(mean_epot(variables._replace(params=p))[0])

            fd = (at(h) - at(-h)) / (2 * h)
            assert abs(along) > 1e-3
            assert along == pytest.approx(fd, rel=1e-6, abs=1e-9), trial


def test_replicas_restart_bit_for_bit(pot, tmp_path):
    """Replicas continue from a restart file exactly (all replicas' states, RNG keys and lists),
    appending to their logs; a restart of another replica count is refused."""
    kw = dict(ensemble="nvt", temperature_K=300.0, timestep_fs=2.0, chunk_steps=25, log_every=25, friction_per_ps=20.0,
              dtype="float64", seed=3)
    temps = [300.0, 700.0]
    with jax.enable_x64(True):
        full = simulate_replicas(pot, _cu(), MDConfig(steps=100, **kw), temperatures_K=temps, progress=False,
                                 logs=[tmp_path / "a0.csv", tmp_path / "a1.csv"])
        logs = [tmp_path / "b0.csv", tmp_path / "b1.csv"]
        simulate_replicas(pot, _cu(), MDConfig(steps=50, **kw), temperatures_K=temps, progress=False, logs=logs,
                          restart_out=tmp_path / "r.restart")
        cont = simulate_replicas(pot, _cu(), MDConfig(steps=100, **kw), temperatures_K=temps, progress=False, logs=logs,
                                 restart=tmp_path / "r.restart")
        np.testing.assert_array_equal(np.asarray(cont.final_state.position), np.asarray(full.final_state.position))
        np.testing.assert_array_equal(np.asarray(cont.final_state.momentum), np.asarray(full.final_state.momentum))
        for k in range(2):
            assert (tmp_path / f"a{k}.csv").read_text() == logs[k].read_text()
        with pytest.raises(ValueError, match="n_runs"):
            simulate_replicas(pot, _cu(), MDConfig(steps=100, **kw), temperatures_K=[300.0, 500.0, 700.0],
                              progress=False, restart=tmp_path / "r.restart")


def test_one_set_of_constants_across_md_replicas_and_validate(pot):
    """kT, the kinetic temperature and the pressure conversion come from mlpjax.units (CODATA
    2018) in md, replicas and validate alike."""
    from mlpjax.md.output import temperature_K
    from mlpjax.validate import crystal

    cfg = MDConfig(ensemble="nve", temperature_K=500.0, steps=10, log_every=10, dtype="float32")
    assert cfg.kT == pytest.approx(units.BOLTZMANN_EV_PER_K * 500.0, rel=1e-15)
    assert float(cfg.kT_at(0)) == pytest.approx(units.kT(500.0), rel=1e-6)
    assert cfg.dt == pytest.approx(units.FS, rel=1e-15)
    assert md.EV_PER_A3_IN_GPA == units.GPA_PER_EV_A3
    assert temperature_K(1.0, 3) == pytest.approx(2.0 / (3 * units.BOLTZMANN_EV_PER_K), rel=1e-15)
    atoms = _cu(n=2)
    single = simulate(pot, atoms, cfg, progress=False)
    many = simulate_replicas(pot, atoms, cfg, n_replicas=1, progress=False)
    dof = 3 * len(atoms) - 3
    for th in (single.thermo, many.thermo[0]):
        np.testing.assert_allclose(th["T_K"], 2 * th["E_kin_eV"] / (dof * units.BOLTZMANN_EV_PER_K), rtol=1e-12)
    np.testing.assert_array_equal(single.thermo["P_GPa"], many.thermo[0]["P_GPa"])
    # the static pressure of the cell at rest, from the potential's stress, in validate's conversion
    rest = simulate(pot, atoms, dataclasses.replace(cfg, temperature_K=0.0, steps=0), progress=False)
    atoms.calc = pot.calculator()
    p_stress = -np.trace(atoms.get_stress(voigt=False)) / 3.0 * units.GPA_PER_EV_A3
    assert rest.thermo["P_GPa"][0] == pytest.approx(p_stress, rel=1e-4, abs=1e-4)
    assert crystal.GPA_PER_EV_A3 == units.GPA_PER_EV_A3


def test_no_module_uses_ase_units():
    """The one set of constants: no mlpjax module reads ase.units, except the EMT data generator,
    which drives ASE's own Langevin integrator in ASE's convention (its frames, and the
    quickstart's published numbers, depend on that exact timestep)."""
    import pathlib
    import re

    root = pathlib.Path(md.__file__).resolve().parents[1]
    pattern = re.compile(r"from ase import units|import ase\.units|from ase\.units import|ase\.units\.\w")
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.name != "units.py" and p.relative_to(root).as_posix() != "data/emt.py"
                 and any(pattern.search(line) and not line.lstrip().startswith("#") for line in p.read_text().splitlines())]
    assert offenders == []
