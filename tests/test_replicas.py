"""Batched replicas (mlpjax.replicas): replica k of one vmapped run IS the single md.simulate run
with its seed and temperature (float64, NVE, Langevin NVT and NPT, through a neighbour-list
reallocation), several temperatures at once thermalise to their own targets, a replica that
explodes is named, and the CLI's ``--replicas`` writes one log per replica.

Tiny untrained SchNet (smooth, not physical), 108 Cu atoms, float64. Nearly all the time is
compilation (~8 s per jitted chunk on one CPU core), so each run is made once (module fixtures)
and checked by several tests.
"""

from __future__ import annotations

import dataclasses

import ase.io
import jax
import numpy as np
import pytest
from ase.build import bulk

from mlpjax import models
from mlpjax.md import MDConfig, MDInstabilityError, simulate
from mlpjax.potential import Potential
from mlpjax.replicas import ReplicaInstabilityError, replica_paths, simulate_replicas

SMALL = {"features": 16, "interactions": 2, "num_rbf": 8, "filter_hidden": 16}
SAME = 1e-10  # Å, Å/ASE-time: a replica against its single run in float64


@pytest.fixture(scope="module")
def pot():
    p = Potential("schnet", models.make_config("schnet", SMALL), cutoff=4.0, species=(29,),
                  reference_energies=(0.0,), avg_num_neighbors=40.0, energy_scale=10.0)
    return p.replace(params=p.init_params(jax.random.PRNGKey(0)))


def _cu(rattle=0.03, seed=1):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)  # 108 atoms, 10.83 Å box
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def nvt(pot, tmp_path_factory):
    """3 Langevin replicas at 200/500/900 K (seeds 7, 8, 9), and the single run of the 900 K one."""
    logs = tmp_path_factory.mktemp("nvt_logs")
    cfg = MDConfig(ensemble="nvt", temperature_K=300.0, timestep_fs=2.0, steps=200, chunk_steps=100, log_every=10,
                   friction_per_ps=20.0, dtype="float64", seed=7)
    with jax.enable_x64(True):
        res = simulate_replicas(pot, _cu(), cfg, temperatures_K=[200.0, 500.0, 900.0], log_dir=logs, progress=False)
        ref = simulate(pot, _cu(), dataclasses.replace(cfg, temperature_K=900.0, seed=9), progress=False)
    return res, ref, logs


@pytest.fixture(scope="module")
def nve_overflow(pot):
    """2 NVE replicas from two structures (a rattled cell at 300 K, the perfect lattice at 800 K) whose
    lists must grow: capacity_multiplier 1 on a lattice whose 3rd shell (4.42 Å) lies just outside
    cutoff + skin = 4.3 Å (thermal motion pulls it in); and the single run of replica 1 with room to
    spare (capacity_multiplier 2: it never reallocates)."""
    cfg = MDConfig(ensemble="nve", temperature_K=800.0, timestep_fs=2.0, steps=40, chunk_steps=20, log_every=10,
                   skin=0.3, capacity_multiplier=1.0, dtype="float64", seed=2)
    atoms = _cu(rattle=0.0)
    with jax.enable_x64(True):
        res = simulate_replicas(pot, [_cu(), atoms], cfg, temperatures_K=[300.0, 800.0], progress=False)
        ref = simulate(pot, atoms, dataclasses.replace(cfg, seed=3, capacity_multiplier=2.0), progress=False)
    return res, ref


@pytest.fixture(scope="module")
def npt(pot):
    """2 NPT replicas at 300 and 900 K (seeds 4, 5), and the single run of the 900 K one. The target
    is the static pressure of the start (so the untrained "material" stays near its volume). The
    barostat mass W = 3 (N + 1) kT τ_b² differs by 3× between them."""
    from ase.units import GPa

    with jax.enable_x64(True):
        atoms = _cu()
        atoms.calc = pot.calculator()
        p0 = float(-np.trace(atoms.get_stress(voigt=False)) / 3.0 / GPa)
        cfg = MDConfig(ensemble="npt", temperature_K=300.0, pressure_GPa=p0, timestep_fs=2.0, steps=100, chunk_steps=50,
                       log_every=10, thermostat_tau_fs=50.0, barostat_tau_fs=200.0, dtype="float64", seed=4)
        res = simulate_replicas(pot, _cu(), cfg, temperatures_K=[300.0, 900.0], progress=False)
        ref = simulate(pot, _cu(), dataclasses.replace(cfg, temperature_K=900.0, seed=5), progress=False)
    return res, ref


def _assert_same_run(res, k, ref):
    np.testing.assert_allclose(res.positions[k], ref.positions, rtol=0, atol=SAME)
    np.testing.assert_allclose(res.velocities[k], ref.velocities, rtol=0, atol=SAME)
    np.testing.assert_allclose(res.forces[k], ref.forces, rtol=0, atol=1e-9)
    for col in ("E_pot_eV", "E_kin_eV", "T_K", "P_GPa"):
        np.testing.assert_allclose(res.thermo[k][col], ref.thermo[col], rtol=1e-10, atol=1e-10, err_msg=col)


def test_langevin_replica_equals_its_single_run(nvt):
    """Own key (PRNGKey(seed), split as md.simulate), own kT: the 900 K replica after 200 steps."""
    res, ref, _ = nvt
    _assert_same_run(res, 2, ref)
    assert not np.allclose(res.positions[1], res.positions[2], atol=1e-3)  # replicas really differ


def test_several_temperatures_at_once(nvt):
    """1/γ = 50 fs: the second 200 fs are thermalised; each replica sits near its own target."""
    res, _, logs = nvt
    means = [th["T_K"][len(th["T_K"]) // 2:].mean() for th in res.thermo]
    assert means[0] < means[1] < means[2], means
    for mean, target in zip(means, (200.0, 500.0, 900.0)):
        assert abs(mean - target) < 0.2 * target, (means, target)
    assert res.thermo[0]["T_K"].shape == (21,) and res.positions.shape == (3, 108, 3)
    assert res.timings["replica_steps_per_s"] == pytest.approx(3 * res.timings["steps_per_s"])
    for k in range(3):
        rows = (logs / f"replica_{k}.csv").read_text().strip().splitlines()
        assert len(rows) == 22 and rows[0].startswith("step,time_ps,E_pot_eV")
        assert float(rows[-1].split(",")[5]) == pytest.approx(res.thermo[k]["T_K"][-1], rel=1e-8)


def test_nve_replica_equals_its_single_run_through_reallocation(nve_overflow):
    """The batched lists overflow, are regrown (one capacity for both replicas) and the chunk is rerun:
    replica 1 still equals the single run that never overflowed, and both replicas conserve energy."""
    res, ref = nve_overflow
    assert res.n_neighbor_reallocations > 0 and ref.n_neighbor_reallocations == 0
    assert res.neighbor_capacity > 108 * 18  # grew beyond the perfect lattice's 18 neighbours per atom
    _assert_same_run(res, 1, ref)
    for th in res.thermo:
        assert np.abs(th["E_tot_eV"] - th["E_tot_eV"][0]).max() / 108 < 1e-4


def test_npt_replica_equals_its_single_run(npt):
    """Own kT (and barostat mass), own box: the 900 K replica's positions, volumes, pressures and
    conserved energy are its single run's; the two replicas' cells differ."""
    res, ref = npt
    _assert_same_run(res, 1, ref)
    for col in ("V_A3", "E_cons_eV"):
        np.testing.assert_allclose(res.thermo[1][col], ref.thermo[col], rtol=1e-10, atol=1e-10, err_msg=col)
    np.testing.assert_allclose(res.atoms[1].cell.array, ref.atoms.cell.array, rtol=0, atol=SAME)
    assert abs(res.thermo[0]["V_A3"][-1] - res.thermo[1]["V_A3"][-1]) > 1e-3  # each replica has its own box
    assert res.atoms[0].cell.array[0, 0] != pytest.approx(res.atoms[1].cell.array[0, 0], abs=1e-6)
    box_mass = np.asarray(res.final_state.box_mass)
    assert box_mass[1] / box_mass[0] == pytest.approx(3.0, rel=1e-12)
    assert np.isfinite(res.thermo[1]["E_cons_eV"]).all()


def test_exploding_replica_is_named(pot, tmp_path):
    """Replica 2 is hot (3000 K, soft untrained potential): its atoms close in below min_distance,
    the cold ones do not. The error names replica 2 and a step > 0; its last good frame and every
    log up to that step are on disk."""
    cfg = MDConfig(ensemble="nve", temperature_K=10.0, timestep_fs=4.0, steps=200, chunk_steps=100, log_every=10,
                   traj_every=50, min_distance=2.1, dtype="float64", seed=0)
    with jax.enable_x64(True), pytest.raises(MDInstabilityError) as info:
        simulate_replicas(pot, _cu(), cfg, temperatures_K=[10.0, 10.0, 3000.0], log_dir=tmp_path,
                          trajectory_dir=tmp_path, progress=False)
    err = info.value
    assert isinstance(err, ReplicaInstabilityError) and err.replica == 2 and err.step > 0
    assert "replica 2" in str(err) and "min_distance" in str(err)
    assert err.frame_path == str(tmp_path / "last_good_frame_replica2.xyz")
    frame = ase.io.read(err.frame_path)
    assert len(frame) == 108 and frame.info["step"] < err.step
    for k in range(3):
        rows = (tmp_path / f"replica_{k}.csv").read_text().strip().splitlines()
        assert int(rows[-1].split(",")[0]) == frame.info["step"]


def test_replica_arguments_are_checked(pot):
    cfg = MDConfig(ensemble="nvt", steps=10)
    with pytest.raises(ValueError, match="inconsistent replica counts"):
        simulate_replicas(pot, _cu(), cfg, temperatures_K=[300.0, 400.0], seeds=[1, 2, 3])
    other = _cu()
    other.set_cell(other.cell * 1.01, scale_atoms=True)
    with pytest.raises(ValueError, match="replica 1 has other cell"):
        simulate_replicas(pot, [_cu(), other], cfg)
    assert replica_paths("out/md.csv", 2) == ["out/md_replica0.csv", "out/md_replica1.csv"]


def test_cli_replicas_write_one_log_each(pot, tmp_path, capsys):
    """`mlpjax md --replicas 2 --replica-temperatures 300,600` (Nosé–Hoover: its extended energy is
    logged and conserved per replica) writes t_replica0.csv and t_replica1.csv."""
    from mlpjax.cli import main

    pot.save(tmp_path / "m.mlpjax")
    ase.io.write(tmp_path / "cu.xyz", _cu())
    rc = main(["md", str(tmp_path / "m.mlpjax"), str(tmp_path / "cu.xyz"), "--ensemble", "nvt_nh", "--replicas", "2",
               "--replica-temperatures", "300,600", "--steps", "40", "--log-every", "10", "--quiet", "--float64",
               "--log", str(tmp_path / "t.csv")])
    assert rc == 0
    for k in range(2):
        rows = [r.split(",") for r in (tmp_path / f"t_replica{k}.csv").read_text().strip().splitlines()]
        assert [int(r[0]) for r in rows[1:]] == [0, 10, 20, 30, 40]
        econs = np.array([float(r[8]) for r in rows[1:]])
        assert np.abs(econs - econs[0]).max() / 108 < 1e-6
    out = capsys.readouterr().out
    assert "replica 0: target 300 K" in out and "replica 1: target 600 K" in out and "replica-steps/s" in out
