"""Packed data sets (mlpjax.data.packed) and training streamed from them (mlpjax.training.streaming):
the pack round-trip is exact, a bad frame is a one-line error that leaves no file, the one-pass
statistics equal the in-memory ones, streamed training gives the in-memory losses, and a damaged
file is a clear error."""

from __future__ import annotations

import hashlib
import os
import sys

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from mlpjax import data  # noqa: E402
from mlpjax.cli import main  # noqa: E402
from mlpjax.config import ConfigError, TrainConfig, load_config  # noqa: E402
from mlpjax.data import DataError, PackedDataset, pack_dataset  # noqa: E402
from mlpjax.graph import batches, make_budget, to_graphs  # noqa: E402
from mlpjax.training import prepare_potential, streaming, train  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_train import TINY, _cu_configs  # noqa: E402  8/16/32-atom rattled EMT Cu cells with stress

CUTOFF = 4.0


def _cuau_configs(n=16, seed=1):
    """EMT Cu–Au cells of 8 and 16 atoms with 1 … n-1 Au atoms (compositions vary: E0 is well posed)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1 + k % 2, 1))
        for i in rng.choice(len(atoms), int(rng.integers(1, len(atoms) - 1)), replace=False):
            atoms.symbols[i] = "Au"
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        c = data.Configuration.from_atoms(atoms, frame=k)
        c.energy, c.forces = float(atoms.get_potential_energy()), np.array(atoms.get_forces())
        c.stress = np.array(atoms.get_stress(voigt=False))
        c.info = {"config_type": "alloy", "step": k}
        out.append(c)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("packed")
    cu = _cu_configs(24)
    for i, c in enumerate(cu):
        c.info = {"config_type": "rattled" if i % 2 else "strained", "temperature_K": 300.0 + i}
    data.write_extxyz(d / "cu.xyz", cu)
    data.write_extxyz(d / "cuau.xyz", _cuau_configs())
    pack_dataset(d / "cu.xyz", d / "cu.h5", cutoffs=[CUTOFF])
    pack_dataset(d / "cuau.xyz", d / "cuau.h5")  # no stored neighbour counts: computed in one pass
    return d


# ------------------------------------------------------------------ packing
def _assert_same(a: data.Configuration, b: data.Configuration):
    for field in ("positions", "numbers", "cell", "pbc", "forces", "stress"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None) == (y is None), field
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), field  # bit for bit
    assert a.energy == b.energy and a.frame == b.frame and a.info == b.info


def test_pack_round_trip_equals_the_source_frames(files):
    src = data.read(files / "cu.xyz")
    ds = PackedDataset(files / "cu.h5")
    assert len(ds) == len(src) == 24
    for a, b in zip(src, ds):  # iteration reads blocks
        _assert_same(a, b)
        assert b.source == str(files / "cu.h5")
    _assert_same(src[-1], ds[-1])  # random access
    view = ds[3:9].subset([5, 0, 2])  # views of views: file frames 8, 3, 5
    assert [c.frame for c in view] == [8, 3, 5] and list(view.n_atoms) == [src[i].n_atoms for i in (8, 3, 5)]
    _assert_same(src[8], view[0])
    a = ds.attrs
    assert a["source_sha256"] == hashlib.sha256((files / "cu.xyz").read_bytes()).hexdigest()
    assert a["reader"]["units"] == "eV" and a["units"]["length"] == "Angstrom" and a["species"] == [29]
    assert a["n_atoms_total"] == sum(c.n_atoms for c in src) and a["complete"] and a["edge_count_cutoffs"] == [CUTOFF]
    assert np.array_equal(ds.edge_counts(CUTOFF), [g.n_edges for g in to_graphs(src, [29], CUTOFF)])


def test_pack_converts_units_like_read_and_reads_ase_databases(files, tmp_path):
    import ase.db

    pack_dataset(files / "cuau.xyz", tmp_path / "ha.h5", units="Hartree")
    for a, b in zip(data.read(files / "cuau.xyz", units="Hartree"), PackedDataset(tmp_path / "ha.h5")):
        _assert_same(a, b)
    with ase.db.connect(tmp_path / "cu.db") as db:
        for c in data.read(files / "cu.xyz")[:5]:
            db.write(c.to_atoms())
    pack_dataset(tmp_path / "cu.db", tmp_path / "db.h5")
    for a, b in zip(data.read(tmp_path / "cu.db"), PackedDataset(tmp_path / "db.h5")):
        _assert_same(a, b)


def _bad(kind: str, c: data.Configuration) -> str:
    """Spoil one configuration; the field the error must name."""
    if kind == "nan_force":
        c.forces[2, 1] = np.nan
        return "forces"
    if kind == "missing_forces":
        c.forces = None
        return "forces"
    if kind == "overlap":
        c.positions[1] = c.positions[0] + 0.01
        return "positions"
    c.numbers[0] = 0  # written as the symbol X: no element
    return "numbers"


@pytest.mark.parametrize("kind", ["nan_force", "missing_forces", "overlap", "unknown_element"])
def test_a_bad_frame_is_a_one_line_error_and_leaves_no_file(kind, files, tmp_path, capsys):
    cu = _cu_configs(6)
    field = _bad(kind, cu[3])
    bad = tmp_path / "bad.xyz"
    data.write_extxyz(bad, cu)
    with pytest.raises(DataError) as err:
        pack_dataset(bad, tmp_path / "api.h5")
    assert err.value.frame == 3 and err.value.field == field and str(bad) in str(err.value)
    out = tmp_path / "out.h5"
    assert main(["data", "pack", str(bad), str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlpjax data: error: "), lines
    assert f"file {bad}" in lines[0] and "frame 3" in lines[0] and f"field '{field}'" in lines[0]
    assert sorted(os.listdir(tmp_path)) == ["bad.xyz"]  # no OUT, no half-written temporary
    good = tmp_path / "good.h5"  # an existing OUT survives a failed --overwrite
    pack_dataset(files / "cu.xyz", good)
    before = good.read_bytes()
    assert main(["data", "pack", str(bad), str(good), "--overwrite"]) == 2
    assert good.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["bad.xyz", "good.h5"]


# ------------------------------------------------------------------ statistics
@pytest.mark.parametrize("name", ["cu", "cuau"])
def test_streaming_statistics_equal_the_in_memory_ones(name, files):
    src = data.read(files / f"{name}.xyz")
    ds = PackedDataset(files / f"{name}.h5")
    for view, configs in ((ds, src), (ds.subset(np.arange(1, len(ds), 3)), src[1::3])):
        st = view.statistics(cutoff=CUTOFF)
        refs = data.fit_reference_energies(configs)
        mem = data.statistics(configs, refs)
        assert set(st.reference_energies) == set(refs)
        for z in refs:
            assert st.reference_energies[z] == pytest.approx(refs[z], rel=1e-10, abs=1e-12)
        got = st.dataset
        assert got.energy_per_atom_mean == pytest.approx(mem.energy_per_atom_mean, abs=1e-10 * mem.energy_per_atom_std)
        assert got.energy_per_atom_std == pytest.approx(mem.energy_per_atom_std, rel=1e-10)
        assert got.force_rms == pytest.approx(mem.force_rms, rel=1e-12)
        assert (got.n_configurations, got.n_atoms_total, got.species) == (mem.n_configurations, mem.n_atoms_total,
                                                                          mem.species)
        graphs = to_graphs(configs, mem.species, CUTOFF)
        assert st.avg_num_neighbors == sum(g.n_edges for g in graphs) / sum(g.n_atoms for g in graphs)
    # a species listed but absent gets E0 = 0, as in the in-memory fit
    st = ds.statistics(species=(13, 29, 79))
    refs = data.fit_reference_energies(src, species=(13, 29, 79))
    assert st.reference_energies[13] == 0.0 == refs[13]
    assert all(st.reference_energies[z] == pytest.approx(refs[z], rel=1e-10, abs=1e-12) for z in refs)


def test_streamed_normalisation_and_budget_equal_prepare_potential(files):
    import jax

    src = data.read(files / "cuau.xyz")
    ds = PackedDataset(files / "cuau.h5")
    cfg = TrainConfig(model_config=TINY, cutoff=CUTOFF, dtype="float64")
    mem = prepare_potential(cfg, src)
    lazy = streaming.LazyGraphs(ds, (29, 79), CUTOFF)
    got = streaming.prepare_potential(cfg, ds.statistics(cutoff=CUTOFF), lazy)
    assert got.species == mem.species and got.avg_num_neighbors == mem.avg_num_neighbors
    np.testing.assert_allclose(got.reference_energies, mem.reference_energies, rtol=1e-10)
    assert got.energy_scale == pytest.approx(mem.energy_scale, rel=1e-12)
    assert got.energy_shift == pytest.approx(mem.energy_shift, abs=1e-10 * mem.energy_scale)
    for a, b in zip(jax.tree_util.tree_leaves(got.params), jax.tree_util.tree_leaves(mem.params)):
        assert np.array_equal(a, b)  # the same seed: the same initial parameters
    graphs = to_graphs(src, (29, 79), CUTOFF)
    for bs in (1, 3, 5, 100):
        assert streaming.budget_of([lazy], bs) == make_budget(graphs, bs)
        assert streaming.budget_of([streaming.LazyGraphs(ds.subset(range(5)), (29, 79), CUTOFF), lazy], bs) == \
            make_budget(graphs[:5] + graphs, bs)
    budget = make_budget(graphs, 5)
    for seed in (0, 1):  # the epoch order: the in-memory batches, batch for batch
        mine, ref = list(batches(lazy, budget, shuffle=True, seed=seed)), list(batches(graphs, budget, shuffle=True, seed=seed))
        assert len(mine) == len(ref) == streaming.n_batches(lazy, budget)
        for a, b in zip(mine, ref):
            assert all(np.array_equal(x, y) for x, y in zip(a, b))


# ------------------------------------------------------------------ training
def _config(**kw):
    base = dict(model_config=TINY, cutoff=CUTOFF, batch_size=4, epochs=3, learning_rate=5e-3, schedule="warmup_cosine",
                warmup_epochs=1.0, ema_decay=0.5, valid_fraction=0.15, test_fraction=0.1, patience=None,
                dtype="float64")
    base.update(kw)
    return TrainConfig(**base)


def test_training_from_the_packed_file_gives_the_in_memory_losses(files, tmp_path):
    import jax

    src = data.read(files / "cu.xyz")
    mem = train(_config(), src, output_dir=tmp_path / "mem", progress=False)
    streamed = train(_config(train_file=str(files / "cu.h5")), output_dir=tmp_path / "h5", progress=False)
    assert [h["epoch"] for h in streamed.history] == [1, 2, 3]
    for a, b in zip(mem.history, streamed.history):
        for key in ("train_loss", "valid_loss", "valid_force_mae_meV_per_A", "valid_stress_mae_meV_per_A3"):
            assert b[key] == pytest.approx(a[key], rel=1e-10), key
    for metrics in ("valid_metrics", "test_metrics"):  # streamed final metrics = mlpjax.validate.metrics
        a, b = getattr(mem, metrics), getattr(streamed, metrics)
        assert set(a) == set(b)
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-9), (metrics, key)
    # the parameters too (E0 differs from the in-memory fit in its last bits; through Adam that moves
    # parameters that are ~0 by ~1e-11)
    for a, b in zip(jax.tree_util.tree_leaves(mem.potential.params), jax.tree_util.tree_leaves(streamed.potential.params)):
        np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-9)
    md = streamed.potential.metadata
    assert md["data_files"]["train"] == [str(files / "cu.h5")] and md["split"] == mem.potential.metadata["split"]
    assert (tmp_path / "h5" / "parity.png").stat().st_size > 0
    # a packed validation set given apart (valid_file): streamed at every evaluation and for the final metrics
    again = train(_config(train_file=str(files / "cu.h5"), valid_file=str(files / "cu.h5"), epochs=1, test_fraction=0.0),
                  output_dir=tmp_path / "h5v", progress=False)
    assert again.valid_metrics["n_structures"] == 24 and np.isfinite(again.history[0]["valid_loss"])


def test_unsupported_combinations_are_config_errors(files, tmp_path):
    ds = PackedDataset(files / "cu.h5")
    for kw, needle in ((dict(ensemble_size=2), "ensembles"), (dict(model="gap", model_config={}), "closed form")):
        with pytest.raises(ConfigError, match=needle):
            train(_config(**kw), ds, output_dir=tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="train_file .*cu.h5 is streamed from disk.*ensembles"):
        _config(train_file=str(files / "cu.h5"), ensemble_size=3)
    path = tmp_path / "t.yaml"
    path.write_text(f"train_file: {files / 'cu.h5'}\nvalid_file: v.xyz\nepochs: 2\n")
    cfg = load_config(path)  # the YAML keys map 1:1 onto the fields
    assert (cfg.train_file, cfg.valid_file, cfg.test_file) == (str(files / "cu.h5"), "v.xyz", None)
    path.write_text("train_file: 3\n")
    with pytest.raises(ConfigError, match="t.yaml line 1: train_file must be a data file path"):
        load_config(path)
    with pytest.raises(ConfigError, match="packed from data in eV .* units is 'Hartree'"):
        train(_config(units="Hartree", train_file=str(files / "cu.h5")), output_dir=tmp_path / "u", progress=False)


# ------------------------------------------------------------------ damaged files
def _cli_error(argv, capsys) -> str:
    assert main([str(a) for a in argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def test_a_truncated_interrupted_or_damaged_file_is_a_clear_error(files, tmp_path, capsys):
    raw = (files / "cu.h5").read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"file .*cut.h5: cannot be opened as HDF5 .* truncated or corrupt"):
        PackedDataset(cut)
    line = _cli_error(["train", "--train", cut, "--output", tmp_path / "o", "--quiet"], capsys)
    assert line.startswith("mlpjax train: error: file ") and "cut.h5" in line and "pack the source again" in line
    (tmp_path / "text.h5").write_text("not hdf5\n")
    with pytest.raises(DataError, match="cannot be opened as HDF5"):
        PackedDataset(tmp_path / "text.h5")
    partial = tmp_path / "partial.h5"  # what an interrupted pack writes before it marks the file complete
    partial.write_bytes(raw)
    with h5py.File(partial, "r+") as f:
        f.attrs["complete"] = False
    with pytest.raises(DataError, match="incomplete packed data set .*interrupted"):
        PackedDataset(partial)
    damaged = tmp_path / "damaged.h5"  # one flipped byte in the first chunk of the positions
    with h5py.File(files / "cu.h5", "r") as f:
        offset = f["positions"].id.get_chunk_info(0).byte_offset
    buf = bytearray(raw)
    buf[offset + 100] ^= 0xFF
    damaged.write_bytes(bytes(buf))
    ds = PackedDataset(damaged)  # the index is intact ...
    with pytest.raises(DataError) as err:  # ... the checksum of the chunk is not
        ds[0]
    assert err.value.frame == 0 and err.value.field == "positions" and "corrupt" in str(err.value)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DataError, match="not an mlpjax packed data set"):
        PackedDataset(other)


def test_prefetch_hands_errors_over_and_stops_when_closed():
    import threading

    def items():
        yield 1
        yield 2
        raise DataError("bad frame", source="x.h5", frame=7, field="forces")

    it = streaming.prefetch(items(), depth=1)
    assert [next(it), next(it)] == [1, 2]
    with pytest.raises(DataError, match="file x.h5, frame 7, field 'forces': bad frame"):
        next(it)
    endless = streaming.prefetch(iter(range(10**9)), depth=2)
    assert next(endless) == 0
    endless.close()  # what a break out of the epoch (time limit) does
    assert not any(t.name == "mlpjax-prefetch" and t.is_alive() for t in threading.enumerate())


_TWO_DEVICES = r"""
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, TESTS)
from test_train import TINY, _cu_configs
from mlpjax import data
from mlpjax.config import TrainConfig
from mlpjax.training import train

assert jax.device_count() == 2, jax.devices()
data.write_extxyz(f"{OUT}/cu.xyz", _cu_configs(21))
data.pack_dataset(f"{OUT}/cu.xyz", f"{OUT}/cu.h5")
base = dict(model_config=TINY, cutoff=4.0, batch_size=5, epochs=3, learning_rate=5e-3, warmup_epochs=1.0, ema_decay=0.9,
            patience=None, dtype="float64", valid_fraction=0.2)
runs = {"mem2": train(TrainConfig(**base, devices=2), data.read(f"{OUT}/cu.xyz"), output_dir=f"{OUT}/m2", progress=False),
        "h5_2": train(TrainConfig(**base, devices=2, train_file=f"{OUT}/cu.h5"), output_dir=f"{OUT}/h2", progress=False),
        "h5_1": train(TrainConfig(**base, devices=1, train_file=f"{OUT}/cu.h5"), output_dir=f"{OUT}/h1", progress=False)}
print(json.dumps({k: [[h["train_loss"], h["valid_loss"]] for h in r.history] for k, r in runs.items()}))
"""


@pytest.mark.slow
def test_two_devices_stream_the_same_batches(tmp_path):
    """devices: 2 on a packed file (sub-batch budget from the stored counts) = devices: 2 in memory = one device."""
    import json
    import subprocess

    code = f"TESTS = {os.path.dirname(os.path.abspath(__file__))!r}\nOUT = {str(tmp_path)!r}\n" + _TWO_DEVICES
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("h5_2", "h5_1"):
        np.testing.assert_allclose(losses[key], losses["mem2"], rtol=1e-10)
