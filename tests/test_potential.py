"""Model file, ASE calculator, graph batching and neighbour lists."""

from __future__ import annotations

import ase
import ase.io
import jax
import numpy as np
import pytest
from ase.build import bulk, fcc111
from ase.calculators.calculator import PropertyNotImplementedError
from ase.neighborlist import neighbor_list as ase_neighbor_list
from jax_md import partition, space

import mlpjax
from conftest import CUTOFF, TINY_CONFIGS, _base_potential, config, cu_atoms, cu_triclinic_atoms, ethanol_atoms
from mlpjax import models
from mlpjax.files import CorruptFileError
from mlpjax.data import DataError, read
from mlpjax.graph import Budget, batches, make_budget, pack, to_graph, to_graphs
from mlpjax.graph.neighbors import neighbor_list

# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------


def test_every_registered_model_has_a_tiny_test_config():
    missing = set(models.available()) - set(TINY_CONFIGS)
    assert not missing, f"add tiny configs for {sorted(missing)} to tests/conftest.py"


def test_make_config_rejects_unknown_options():
    with pytest.raises(ValueError, match="unknown schnet option"):
        models.make_config("schnet", {"featurez": 3})
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        models.make_config("nope")


# ---------------------------------------------------------------------------
# Model file
# ---------------------------------------------------------------------------


def _structures():
    return [config(cu_atoms()), config(ethanol_atoms()), config(cu_triclinic_atoms())]


def test_save_load_round_trip_gives_identical_predictions(model_once, tmp_path):
    model = model_once
    path = tmp_path / "model.mlpjax"
    model.pot.save(path)
    loaded = mlpjax.load(path)
    assert loaded.header() == model.pot.header()
    assert loaded.model_config == model.pot.model_config
    leaves_a, tree_a = jax.tree_util.tree_flatten(model.pot.params)
    leaves_b, tree_b = jax.tree_util.tree_flatten(loaded.params)
    assert tree_a == tree_b
    for a, b in zip(leaves_a, leaves_b):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    batch = model.pack(_structures())
    out_a = model.predict(model.pot.params, batch)
    out_b = jax.jit(lambda p, b: loaded.predict(p, b))(loaded.params, batch)
    for name in ("energy", "forces", "stress", "atomic_energies"):
        np.testing.assert_array_equal(np.asarray(getattr(out_a, name)), np.asarray(getattr(out_b, name)), err_msg=name)


def test_save_without_params_raises(tmp_path):
    pot = _base_potential("schnet").replace(params=None)
    with pytest.raises(ValueError, match="no parameters"):
        pot.save(tmp_path / "m.mlpjax")


@pytest.fixture(scope="module")
def saved_model_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "good.mlpjax"
    _base_potential("schnet").save(path)
    return path.read_bytes()


@pytest.mark.parametrize(
    "damage, message",
    [
        ("empty", "is empty"),
        ("truncated", "truncated or corrupted"),
        ("flipped", "truncated or corrupted"),
        ("not_mlpjax", "is not an mlpjax model file"),
    ],
)
def test_damaged_model_file_raises_corrupt_file_error_naming_the_file(saved_model_bytes, tmp_path, damage, message):
    data = saved_model_bytes
    if damage == "empty":
        data = b""
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped":
        data = bytearray(data)
        data[-100] ^= 0xFF
        data = bytes(data)
    else:
        data = b"PK\x03\x04 a zip file, not a model" + data[40:]
    path = tmp_path / f"{damage}.mlpjax"
    path.write_bytes(data)
    with pytest.raises(CorruptFileError, match=message) as info:
        mlpjax.load(path)
    assert str(path) in str(info.value)


def test_missing_model_file_names_the_file(tmp_path):
    path = tmp_path / "absent.mlpjax"
    with pytest.raises(FileNotFoundError, match="absent.mlpjax"):
        mlpjax.load(path)


def test_intact_model_file_loads(saved_model_bytes, tmp_path):
    path = tmp_path / "copy.mlpjax"
    path.write_bytes(saved_model_bytes)
    assert mlpjax.load(path).species == _base_potential("schnet").species


# ---------------------------------------------------------------------------
# Unknown elements
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chon_potential():
    """A potential trained (initialised) for H, C, O only."""
    return _base_potential("schnet", species=(1, 6, 8))


def test_unknown_element_raises_data_error_naming_the_element(chon_potential):
    atoms = ethanol_atoms()
    atoms.numbers[3] = 29  # Cu
    with pytest.raises(DataError, match=r"Cu \(Z=29\)") as info:
        to_graph(config(atoms), chon_potential.species, chon_potential.cutoff)
    assert "H, C, O" in str(info.value)
    atoms.calc = chon_potential.calculator()
    with pytest.raises(DataError, match=r"Cu \(Z=29\)"):
        atoms.get_potential_energy()
    disp, _ = space.free()
    with pytest.raises(DataError, match=r"Cu \(Z=29\)"):
        chon_potential.energy_fn(disp, atoms.numbers)


def test_unknown_element_from_a_file_names_file_and_frame(chon_potential, tmp_path):
    frames = []
    for k in range(3):
        atoms = ethanol_atoms(seed=k)
        if k == 2:
            atoms.numbers[0] = 26  # Fe
        atoms.info["energy"] = -1.0
        atoms.arrays["forces"] = np.zeros((len(atoms), 3))
        frames.append(atoms)
    path = tmp_path / "frames.xyz"
    ase.io.write(path, frames, format="extxyz")
    configs = read(path)
    with pytest.raises(DataError, match=r"Fe \(Z=26\)") as info:
        to_graphs(configs, chon_potential.species, chon_potential.cutoff)
    msg = str(info.value)
    assert "frames.xyz" in msg and "frame 2" in msg, msg


# ---------------------------------------------------------------------------
# Padded batching
# ---------------------------------------------------------------------------


def test_padded_batches_are_budget_and_order_invariant(model_once):
    model = model_once
    configs = _structures() + [config(ethanol_atoms(seed=9))]
    graphs = to_graphs(configs, model.pot.species, model.pot.cutoff)
    tight = make_budget(graphs, len(graphs))
    roomy = Budget(tight.n_nodes + 128, tight.n_edges + 640, tight.n_graphs + 3)
    ref = model.run(configs, tight)
    other = model.run(configs, roomy)
    rev = model.run(configs[::-1], roomy)[::-1]
    tol = model.tol
    for k in range(len(configs)):
        for res in (other[k], rev[k]):
            n = ref[k]["n_atoms"]
            assert abs(res["energy"] - ref[k]["energy"]) / n <= tol["energy"] + tol["rtol"] * abs(ref[k]["energy"]) / n
            np.testing.assert_allclose(res["forces"], ref[k]["forces"], atol=tol["forces"], rtol=tol["rtol"])
            np.testing.assert_allclose(res["stress"], ref[k]["stress"], atol=tol["stress"], rtol=tol["rtol"])


def test_padding_is_inert(model_once):
    model = model_once
    configs = _structures()
    batch = model.pack(configs, Budget(n_nodes=192, n_edges=4096, n_graphs=6))
    out = model.predict(model.pot.params, batch)
    node_mask, graph_mask = np.asarray(batch.node_mask), np.asarray(batch.graph_mask)
    assert node_mask.sum() == sum(c.n_atoms for c in configs) and graph_mask.sum() == len(configs)
    assert not node_mask[-1] and not graph_mask[-1]  # the last node and graph are always padding
    assert np.all(np.asarray(out.forces)[~node_mask] == 0)
    assert np.all(np.asarray(out.atomic_energies)[~node_mask] == 0)
    assert np.all(np.asarray(out.energy)[~graph_mask] == 0)
    assert np.all(np.asarray(out.stress)[~graph_mask] == 0)
    assert np.all(np.isfinite(np.asarray(out.forces)))
    # energies are sums of atomic energies
    e_sum = np.bincount(np.asarray(batch.node_graph), weights=np.asarray(out.atomic_energies, np.float64), minlength=6)
    np.testing.assert_allclose(np.asarray(out.energy, np.float64), e_sum, rtol=model.tol["rtol"], atol=1e-4)


def test_batches_cover_every_structure_once_and_fit_the_budget():
    species, cutoff = (1, 6, 8, 29), CUTOFF
    configs = [config(ethanol_atoms(seed=k)) for k in range(5)] + [config(cu_atoms(seed=k)) for k in range(3)]
    graphs = to_graphs(configs, species, cutoff)
    budget = make_budget(graphs, 3)
    assert budget.n_nodes % 64 == 0 and budget.n_edges % 64 == 0 and budget.n_graphs == 4
    seen = []
    for b in batches(graphs, budget, shuffle=True, seed=3):
        assert b.positions.shape == (budget.n_nodes, 3) and b.senders.shape == (budget.n_edges,)
        assert b.graph_mask.shape == (budget.n_graphs,) and not b.graph_mask[-1]
        for g in range(int(b.graph_mask.sum())):
            seen.append(tuple(np.round(b.positions[b.node_graph == g][0], 8)))
    expected = sorted(tuple(np.round(c.positions[0], 8)) for c in configs)
    assert sorted(seen) == expected
    with pytest.raises(ValueError, match="exceeds the budget"):
        pack(graphs[5:8], Budget(64, 64, 4))


# ---------------------------------------------------------------------------
# Neighbour lists vs ASE
# ---------------------------------------------------------------------------


def _pairs(i, j, S):
    return sorted(zip(np.asarray(i).tolist(), np.asarray(j).tolist(), [tuple(int(round(x)) for x in s) for s in S]))


def _neighbor_cases():
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=5.0)  # pbc along x, y only
    slab.rattle(0.03, seed=4)
    return {
        "cu_cell": cu_atoms(),  # 32 atoms, side < 2 r_c: several images of the same pair
        "cu_triclinic": cu_triclinic_atoms(),
        "cu_primitive": bulk("Cu", "fcc", a=3.61),  # 1 atom: every neighbour is an image
        "ethanol": ethanol_atoms(),
        "slab": slab,
    }


@pytest.mark.parametrize("case", sorted(_neighbor_cases()))
def test_neighbor_list_matches_ase(case):
    atoms = _neighbor_cases()[case]
    cutoff = 5.0
    edges = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    i, j, S = ase_neighbor_list("ijS", atoms, cutoff)
    ours = _pairs(edges.receivers, edges.senders, edges.shifts)
    assert len(ours) == len(i) > 0
    assert ours == _pairs(i, j, S)
    vectors = atoms.positions[edges.senders] - atoms.positions[edges.receivers] + edges.shifts @ atoms.cell.array
    d = np.linalg.norm(vectors, axis=1)
    assert np.all(d < cutoff) and np.all(d > 0.5)
    if case == "cu_primitive":
        assert len(ours) == 42  # 12 + 6 + 24 neighbours within 5 Å in fcc Cu
    if not atoms.pbc.any():
        assert np.all(edges.shifts == 0)


def test_neighbor_list_rejects_singular_periodic_cell():
    with pytest.raises(ValueError, match="singular cell"):
        neighbor_list(np.zeros((2, 3)) + [[0, 0, 0], [1, 0, 0]], np.zeros((3, 3)), np.array([True] * 3), 3.0)


# ---------------------------------------------------------------------------
# ASE calculator and jax-md entry points
# ---------------------------------------------------------------------------


def test_calculator_results_and_budget_growth(schnet_model):
    model = schnet_model
    calc = model.pot.calculator()
    mol = ethanol_atoms()
    mol.calc = calc
    e_mol = mol.get_potential_energy()
    assert mol.get_potential_energy(force_consistent=True) == e_mol  # free_energy
    np.testing.assert_allclose(mol.get_potential_energies().sum(), e_mol, rtol=1e-9, atol=1e-6)
    with pytest.raises(PropertyNotImplementedError):
        mol.get_stress()
    small_budget = calc._budget
    crystal = cu_atoms()  # needs a bigger budget: the calculator must grow it
    crystal.calc = calc
    e_cu, f_cu, s_cu = crystal.get_potential_energy(), crystal.get_forces(), crystal.get_stress(voigt=False)
    assert calc._budget.n_edges > small_budget.n_edges
    (ref,) = model.run([config(crystal)])
    tol = model.tol
    assert abs(e_cu - ref["energy"]) / len(crystal) <= tol["energy"] + tol["rtol"] * abs(ref["energy"])
    np.testing.assert_allclose(f_cu, ref["forces"], atol=tol["forces"], rtol=tol["rtol"])
    np.testing.assert_allclose(s_cu, ref["stress"], atol=tol["stress"], rtol=tol["rtol"])
    # back to the molecule with the grown budget: same numbers
    mol2 = ethanol_atoms()
    mol2.calc = calc
    assert abs(mol2.get_potential_energy() - e_mol) <= 9 * tol["energy"] + tol["rtol"] * abs(e_mol)


def test_jaxmd_energy_fn_requires_a_sparse_neighbor_list(schnet_model):
    model = schnet_model
    atoms = cu_atoms(repeat=3)
    atoms.wrap()
    side = atoms.cell.array[0, 0]
    disp, _ = space.periodic(side)
    energy_fn = model.pot.energy_fn(disp, atoms.numbers)
    R = np.asarray(atoms.positions, model.dtype)
    with pytest.raises(ValueError, match="needs a jax-md neighbor list"):
        energy_fn(R)
    dense = partition.neighbor_list(disp, side, CUTOFF, format=partition.Dense, disable_cell_list=True).allocate(R)
    with pytest.raises(ValueError, match="Sparse"):
        energy_fn(R, neighbor=dense)


def test_potential_is_a_pure_function_of_params(model_once):
    model = model_once
    """predict is differentiable w.r.t. parameters (training) and changing them changes E."""
    batch = model.pack([config(ethanol_atoms())])

    def loss(p):
        return model.pot.predict(p, batch, compute_stress=False).energy[0]

    grads = jax.jit(jax.grad(loss))(model.pot.params)
    norms = [float(np.abs(np.asarray(g)).max()) for g in jax.tree_util.tree_leaves(grads)]
    assert max(norms) > 0 and all(np.isfinite(norms))


def test_jaxmd_energy_fn_species_handling():
    """numbers may be omitted for one element, given at call time as species indices, and
    must be given for several elements (clear error)."""
    atoms = cu_atoms(repeat=3)
    box = np.asarray(atoms.cell.array).T
    disp, _ = space.periodic_general(box, fractional_coordinates=False)
    R = np.asarray(atoms.positions)
    cu_only = _base_potential("schnet", species=(29,))
    nbrs = cu_only.neighbor_fn(disp, box).allocate(R)
    e_numbers = cu_only.energy_fn(disp, atoms.numbers)(R, neighbor=nbrs)
    e_default = cu_only.energy_fn(disp)(R, neighbor=nbrs)
    assert float(e_default) == pytest.approx(float(e_numbers), rel=1e-12)
    multi = _base_potential("schnet")
    with pytest.raises(ValueError, match="atomic numbers"):
        multi.energy_fn(disp)
    e_static = multi.energy_fn(disp, atoms.numbers)(R, neighbor=nbrs)
    e_call = multi.energy_fn(disp, np.full(len(atoms), 1))(R, neighbor=nbrs, species=multi.species_indices(atoms.numbers))
    assert float(e_call) == pytest.approx(float(e_static), rel=1e-12)
    assert abs(float(e_static) - float(multi.energy_fn(disp, np.full(len(atoms), 1))(R, neighbor=nbrs))) > 1e-3
