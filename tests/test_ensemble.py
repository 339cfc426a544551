"""Ensembles (mlpjax.ensemble): the member axis, mean/std, the file, the calculator, training in one
vmapped step, shallow heads, and the MD uncertainty stop."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlpjax import models
from mlpjax.data.emt import emt_cu
from mlpjax.ensemble import Ensemble, from_potential, head_paths, parameter_paths
from mlpjax.potential import Potential, load
from mlpjax.validate.metrics import predict_dataset

TINY = {"features": 8, "interactions": 2, "num_rbf": 6}


@pytest.fixture(scope="module")
def configs():
    return emt_cu(temperatures_K=(300.0,), repeats=(2,), md_frames_per_run=4, n_rattled=4, n_strained=2,
                  liquid_temperatures_K=(), seed=5)


@pytest.fixture(scope="module")
def single():
    pot = Potential("schnet", models.make_config("schnet", TINY), 3.5, (29,), (-0.2,), 0.01, 0.4, 10.0)
    return pot.replace(params=pot.init_params(jax.random.PRNGKey(0)))


@pytest.mark.parametrize("kind", ["full", "shallow"])
def test_mean_std_and_members(single, configs, kind):
    ens = from_potential(single, 3, kind=kind, seed=1)
    up = ens.predict_uncertain(configs[:3])
    for c, u in zip(configs[:3], up):
        members = [predict_dataset(ens.member(m), [c]) for m in range(3)]
        e = np.array([p["energy"][0] for p in members])
        f = np.stack([p["forces"] for p in members])
        np.testing.assert_allclose(u.members["energy"], e, rtol=1e-5)
        np.testing.assert_allclose(u.energy, e.mean(), rtol=1e-5)
        np.testing.assert_allclose(u.energy_std, e.std(), rtol=1e-3, atol=1e-6)
        np.testing.assert_allclose(u.forces, f.mean(0), atol=1e-5)
        np.testing.assert_allclose(u.forces_std, np.sqrt(np.var(f, 0).sum(-1)), rtol=1e-3, atol=1e-6)
        assert u.stress is not None and u.stress_std.shape == (3, 3)
        # the ensemble as a Potential is the mean model: its forces are the gradient of the mean energy
        mean = predict_dataset(ens, [c])
        np.testing.assert_allclose(mean["energy"][0], e.mean(), rtol=1e-5)
        np.testing.assert_allclose(mean["forces"], f.mean(0), atol=1e-5)
    assert all(u.energy_std > 0 and u.max_force_std > 0 for u in up)


def test_shallow_shares_all_but_the_heads(single, configs):
    heads = head_paths(single.params)
    assert heads == ("params/readout_1/bias", "params/readout_1/kernel")
    ens = from_potential(single, 4, kind="shallow", seed=2)
    paths = parameter_paths(single.params)
    for path, leaf in zip(paths, jax.tree_util.tree_leaves(ens.params)):
        assert leaf.ndim == (jax.tree_util.tree_leaves(single.params)[paths.index(path)].ndim + (path in heads))
    # heads start centred on the single model's head: the mean model IS the single model at start
    np.testing.assert_allclose(predict_dataset(ens, configs[:2])["energy"], predict_dataset(single, configs[:2])["energy"],
                               rtol=1e-5)
    assert ens.predict_uncertain(configs[:1])[0].energy_std > 0


def test_file_calculator_and_jaxmd_mean(single, configs, tmp_path):
    from jax_md import space

    ens = from_potential(single, 3, kind="full", seed=3).with_calibration(2.0, 3.0, 1.0)
    path = tmp_path / "ens.mlpjax"
    ens.save(path)
    back = load(path)
    assert isinstance(back, Ensemble) and back.members == 3 and back.calibration == (2.0, 3.0, 1.0)
    u0, u1 = ens.predict_uncertain(configs[:1])[0], back.predict_uncertain(configs[:1])[0]
    np.testing.assert_allclose(u1.energy, u0.energy, rtol=1e-6)
    raw = back.predict_uncertain(configs[:1], calibrated=False)[0]
    np.testing.assert_allclose(u1.forces_std, 3.0 * raw.forces_std, rtol=1e-6)
    atoms = configs[0].to_atoms()
    atoms.calc = back.calculator()
    e = atoms.get_potential_energy()
    r = atoms.calc.results
    np.testing.assert_allclose(e, u1.energy, rtol=1e-5)
    np.testing.assert_allclose(r["energy_std"], u1.energy_std, rtol=1e-4)
    np.testing.assert_allclose(r["forces_std"], u1.forces_std, rtol=1e-4, atol=1e-7)
    assert r["member_forces"].shape == (3, len(atoms), 3) and r["stress_std"].shape == (6,)
    # the jax-md energy function of the ensemble is the member mean
    disp, _ = space.free()
    R = jnp.asarray(np.array([[0.0, 0, 0], [2.5, 0, 0], [0, 2.4, 0.3]]))
    nbr = back.neighbor_fn(disp, 10.0, disable_cell_list=True).allocate(R)
    e_mean = jax.jit(back.energy_fn(disp))(R, neighbor=nbr)
    member_energy = jax.jit(back.definition.member.energy_fn_of_params(disp))  # one compilation for all members
    e_members = [member_energy(back.definition.unstack(back.variables, m), R, neighbor=nbr) for m in range(3)]
    np.testing.assert_allclose(e_mean, np.mean(e_members), rtol=1e-5)


def test_member_step_is_the_single_step_per_member(single, configs):
    """One vmapped step on stacked states and batches = each member's own single-model step; an inactive
    member's state is unchanged bit for bit."""
    from mlpjax.config import TrainConfig
    from mlpjax.graph import batches, make_budget, to_graphs
    from mlpjax.training.steps import init_member_states, init_state, make_member_step, make_plateau, make_step_fns

    cfg = TrainConfig(model="schnet", model_config=TINY, cutoff=3.5, ensemble_size=2, batch_size=2)
    ens = from_potential(single, 2, kind="full", seed=4)
    graphs = to_graphs(configs, single.species, single.cutoff)
    budget = make_budget(graphs, 2)
    b = list(batches(graphs, budget, dtype=np.float32))[:2]
    stacked = jax.tree_util.tree_map(lambda *x: np.stack(x), *b)
    step = make_member_step(ens, cfg, 4, compute_stress=True)
    plateau = make_plateau(cfg)
    state = init_member_states(ens.params, step.optimizer, plateau, 1e-3, 2)
    new, _ = step.train_step(state, stacked, np.array([True, False]))
    m0 = ens.member(0)
    own = make_step_fns(m0, cfg, 4, compute_stress=True)
    s0, _ = own.train_step(init_state(m0, own.optimizer, plateau, 1e-3), b[0])
    for a, c in zip(jax.tree_util.tree_leaves(new.params), jax.tree_util.tree_leaves(s0.params)):
        np.testing.assert_allclose(np.asarray(a)[0], np.asarray(c), rtol=1e-5, atol=1e-7)
    for a, c in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(state)):
        np.testing.assert_array_equal(np.asarray(a)[1], np.asarray(c)[1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-member full ensemble trained on 300-700 K solid fcc Cu (32-atom cells, first-shell cutoff)."""
    from mlpjax.config import TrainConfig
    from mlpjax.training import train

    data = emt_cu(temperatures_K=(300.0, 500.0, 700.0), repeats=(2,), md_frames_per_run=8, n_rattled=6, n_strained=4,
                  liquid_temperatures_K=(), seed=7)
    cfg = TrainConfig(model="schnet", model_config={"features": 16, "interactions": 2, "num_rbf": 8}, cutoff=3.0,
                      epochs=14, batch_size=4, learning_rate=5e-3, ensemble_size=3, bootstrap=True)
    out = tmp_path_factory.mktemp("ens")
    return train(cfg, data, output_dir=out, progress=False), data


def test_trained_ensemble(trained):
    res, data = trained
    ens = load(res.paths["model"])
    assert isinstance(ens, Ensemble) and ens.kind == "full"
    assert ens.calibration[1] > 0 and "calibration" in ens.metadata
    first, last = res.history[0]["valid_loss"], res.history[-1]["valid_loss"]
    assert last < 0.5 * first
    kernels = np.asarray(ens.params["params"]["readout_1"]["kernel"])
    assert not np.allclose(kernels[0], kernels[1])  # own initialisation per member


def test_md_uncertainty_stop_on_a_heating_ramp(trained, tmp_path):
    """Heating 300 -> 3,000 K a model trained on 300-700 K solid: the run stops at the first frame whose
    force deviation passes the threshold, writes it, and does so above the training temperatures."""
    from ase.build import bulk

    from mlpjax.md import MDConfig, simulate

    res, data = trained
    ens = load(res.paths["model"])
    in_dist = max(u.max_force_std for u in ens.predict_uncertain(data))  # calibrated, on the training data
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)  # 7.22 Å: cutoff + skin = 3.5 Å fits, no image supercell
    cfg = MDConfig(ensemble="nvt", temperature_K=300.0, temperature_final_K=3000.0, steps=1000, timestep_fs=2.0,
                   log_every=20, traj_every=100, friction_per_ps=20.0, max_force_std=2.0 * in_dist)
    out = simulate(ens, atoms, cfg, trajectory=tmp_path / "ramp.xyz", progress=False)
    u = out.uncertainty
    assert u["stopped_step"] is not None and u["stopped_step"] < cfg.steps
    assert os.path.exists(u["frame_path"])
    import ase.io

    frame = ase.io.read(u["frame_path"])
    assert frame.info["max_force_std"] > cfg.max_force_std and frame.arrays["forces_std"].shape == (len(atoms),)
    assert frame.info["temperature_K"] > 700.0  # it left the training range before it was stopped
    assert np.all(np.isfinite(frame.positions))
