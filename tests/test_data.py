"""Tests for mlpjax.data: readers, unit conversion, sanity checks, split, reference energies, statistics."""

from __future__ import annotations

import numpy as np
import pytest

import ase
import ase.db
import ase.io
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols

from mlpjax import units as U
from mlpjax.data import (
    Configuration,
    DataError,
    DatasetStatistics,
    fit_reference_energies,
    read,
    read_structure,
    species_in,
    split,
    statistics,
    write_extxyz,
)

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _voigt(s):
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


def _from_voigt(v):
    xx, yy, zz, yz, xz, xy = v
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


@pytest.fixture(scope="module")
def cu_frames():
    """5 rattled Cu fcc 2x2x2 cubic supercells (32 atoms) with EMT energy [eV], forces [eV/Å], stress 3x3 [eV/Å^3]."""
    frames = []
    for k in range(5):
        a = bulk("Cu", cubic=True) * (2, 2, 2)
        a.rattle(0.05, seed=k)
        a.set_cell(a.cell * (1.0 + 0.01 * k), scale_atoms=True)
        a.calc = EMT()
        frames.append(
            dict(
                numbers=a.numbers.copy(),
                positions=a.positions.copy(),
                cell=a.cell.array.copy(),
                pbc=np.array([True] * 3),
                energy=float(a.get_potential_energy()),
                forces=a.get_forces().copy(),
                stress=_from_voigt(a.get_stress()),
            )
        )
    return frames


def _fmt(x):
    return repr(float(x))


def _write_xyz(path, frames, *, e_scale=1.0, l_scale=1.0, energy_key="energy", forces_key="forces", stress_key="stress", extra=None):
    """Full-precision extxyz writer: lengths divided by l_scale, energies by e_scale (so the file is in those units)."""
    lines = []
    for i, fr in enumerate(frames):
        n = len(fr["numbers"])
        f_scale = e_scale / l_scale
        s_scale = e_scale / l_scale**3
        props = "species:S:1:pos:R:3"
        has_f = fr.get("forces") is not None
        if has_f:
            props += f":{forces_key}:R:3"
        head = []
        if fr.get("cell") is not None and np.any(fr["cell"]):
            head.append('Lattice="' + " ".join(_fmt(v / l_scale) for v in np.asarray(fr["cell"]).ravel()) + '"')
        head.append(f"Properties={props}")
        if fr.get("energy") is not None:
            head.append(f"{energy_key}={_fmt(fr['energy'] / e_scale)}")
        if fr.get("stress") is not None:
            head.append(f'{stress_key}="' + " ".join(_fmt(v / s_scale) for v in np.asarray(fr["stress"]).ravel()) + '"')
        if extra is not None and i in extra:
            head.append(extra[i])
        pbc = fr.get("pbc", np.zeros(3, bool))
        head.append('pbc="' + " ".join("T" if p else "F" for p in pbc) + '"')
        lines.append(str(n))
        lines.append(" ".join(head))
        for j in range(n):
            row = [chemical_symbols[int(fr["numbers"][j])]] + [_fmt(v / l_scale) for v in fr["positions"][j]]
            if has_f:
                row += [_fmt(v / f_scale) for v in fr["forces"][j]]
            lines.append(" ".join(row))
    path.write_text("\n".join(lines) + "\n")
    return path


def _assert_frames_equal(configs, frames, *, tol=1e-10, stress=True):
    assert len(configs) == len(frames)
    for c, fr in zip(configs, frames):
        np.testing.assert_array_equal(c.numbers, fr["numbers"])
        np.testing.assert_allclose(c.positions, fr["positions"], rtol=0, atol=tol)
        np.testing.assert_allclose(c.cell, fr["cell"], rtol=0, atol=tol)
        assert abs(c.energy - fr["energy"]) <= tol * max(1.0, abs(fr["energy"]))
        np.testing.assert_allclose(c.forces, fr["forces"], rtol=0, atol=tol)
        if stress:
            assert c.stress.shape == (3, 3)
            np.testing.assert_allclose(c.stress, fr["stress"], rtol=0, atol=tol)


def _mol_frames(n=4, name="H2O", seed=0):
    rng = np.random.default_rng(seed)
    out = []
    base = molecule(name)
    for k in range(n):
        a = base.copy()
        a.positions += rng.normal(scale=0.02, size=a.positions.shape)
        a.calc = EMT()
        out.append(
            dict(
                numbers=a.numbers.copy(),
                positions=a.positions.copy(),
                cell=np.zeros((3, 3)),
                pbc=np.zeros(3, bool),
                energy=float(a.get_potential_energy()),
                forces=a.get_forces().copy(),
            )
        )
    return out


# ---------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------


def test_extxyz_round_trip(tmp_path, cu_frames):
    src = _write_xyz(tmp_path / "cu.xyz", cu_frames)
    configs = read(src)
    _assert_frames_equal(configs, cu_frames)
    assert [c.frame for c in configs] == list(range(5))
    assert all(c.source == str(src) for c in configs)
    assert all(c.pbc.all() for c in configs)
    # write back with write_extxyz (ASE's 8-decimal text format) and read again
    out = tmp_path / "cu_out.extxyz"
    write_extxyz(out, configs)
    again = read(out)
    _assert_frames_equal(again, cu_frames, tol=1e-7)


def test_extxyz_written_by_ase_calc_results(tmp_path, cu_frames):
    """Energies/forces/stress in the calculator (ASE's own extxyz writer) are found."""
    images = []
    for fr in cu_frames:
        a = ase.Atoms(numbers=fr["numbers"], positions=fr["positions"], cell=fr["cell"], pbc=True)
        a.calc = SinglePointCalculator(a, energy=fr["energy"], forces=fr["forces"], stress=_voigt(fr["stress"]))
        images.append(a)
    p = tmp_path / "ase.xyz"
    ase.io.write(p, images, format="extxyz")
    _assert_frames_equal(read(p), cu_frames, tol=1e-7)


def test_extxyz_custom_keys_and_index(tmp_path, cu_frames):
    p = _write_xyz(tmp_path / "ref.xyz", cu_frames, energy_key="REF_energy", forces_key="REF_forces", stress_key="REF_stress")
    configs = read(p, energy_key="REF_energy", forces_key="REF_forces", stress_key="REF_stress", index="1:4:2")
    assert [c.frame for c in configs] == [1, 3]
    _assert_frames_equal(configs, [cu_frames[1], cu_frames[3]])
    last = read(p, energy_key="REF_energy", forces_key="REF_forces", stress_key="REF_stress", index=-1)
    assert len(last) == 1 and last[0].frame == 4
    # the default key does not silently pick up other labels
    with pytest.raises(DataError, match="missing energy"):
        read(p)


def test_voigt_stress_and_virial(tmp_path, cu_frames):
    frames = [dict(fr, stress=None) for fr in cu_frames[:2]]
    extra = {}
    for i, fr in enumerate(cu_frames[:2]):
        vol = abs(np.linalg.det(fr["cell"]))
        virial = -fr["stress"] * vol  # W = -V σ
        extra[i] = 'virial="' + " ".join(_fmt(v) for v in virial.ravel()) + '" ' + 'vstress="' + " ".join(_fmt(v) for v in _voigt(fr["stress"])) + '"'
    p = _write_xyz(tmp_path / "vir.xyz", frames, extra=extra)
    via_virial = read(p, virial_key="virial")
    _assert_frames_equal(via_virial, cu_frames[:2])
    via_voigt = read(p, stress_key="vstress")
    _assert_frames_equal(via_voigt, cu_frames[:2])
    assert read(p)[0].stress is None  # no stress under the default key


@pytest.mark.parametrize(
    "units,e_scale,l_scale",
    [
        ("Hartree", U.HARTREE_EV, U.BOHR_ANGSTROM),
        ("kcal/mol", U.KCAL_PER_MOL_EV, 1.0),
        ("kJ/mol", U.KJ_PER_MOL_EV, 1.0),
        ("Hartree/Angstrom", U.HARTREE_EV, 1.0),
    ],
)
def test_unit_conversion(tmp_path, cu_frames, units, e_scale, l_scale):
    ev = read(_write_xyz(tmp_path / "ev.xyz", cu_frames))
    other = read(_write_xyz(tmp_path / "other.xyz", cu_frames, e_scale=e_scale, l_scale=l_scale), units=units)
    for a, b in zip(ev, other):
        np.testing.assert_allclose(b.positions, a.positions, rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(b.cell, a.cell, rtol=1e-12, atol=1e-10)
        assert abs(b.energy - a.energy) <= 1e-10 * max(1.0, abs(a.energy))
        np.testing.assert_allclose(b.forces, a.forces, rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(b.stress, a.stress, rtol=1e-12, atol=1e-10)


def test_unit_conversion_units_object(tmp_path, cu_frames):
    other = read(
        _write_xyz(tmp_path / "o.xyz", cu_frames[:1], e_scale=1e-3, l_scale=10.0),
        units=U.Units(energy="meV", length="nm"),
    )
    _assert_frames_equal(other, cu_frames[:1])


@pytest.mark.parametrize("keyset", ["md17", "rmd17"])
def test_npz_md17(tmp_path, keyset):
    frames = _mol_frames(6)
    R = np.stack([f["positions"] for f in frames])
    z = frames[0]["numbers"]
    E = np.array([f["energy"] for f in frames])
    F = np.stack([f["forces"] for f in frames])
    k = U.KCAL_PER_MOL_EV
    p = tmp_path / f"{keyset}.npz"
    if keyset == "md17":
        np.savez(p, R=R, z=z, E=(E / k)[:, None], F=F / k)
    else:
        np.savez(p, coords=R, nuclear_charges=z, energies=E / k, forces=F / k, old_energies=E)
    configs = read(p, units="kcal/mol")
    assert len(configs) == 6
    for c, fr in zip(configs, frames):
        np.testing.assert_array_equal(c.numbers, z)
        np.testing.assert_allclose(c.positions, fr["positions"], atol=1e-12)
        assert not c.pbc.any() and not c.cell.any()
        assert c.energy == pytest.approx(fr["energy"], abs=1e-10)
        np.testing.assert_allclose(c.forces, fr["forces"], atol=1e-10)
        assert c.stress is None
    assert [c.frame for c in read(p, units="kcal/mol", index="::3")] == [0, 3]
    s = read_structure(p)
    assert isinstance(s, Configuration) and s.frame == 5 and s.energy is None


def test_ase_db(tmp_path, cu_frames):
    p = tmp_path / "data.db"
    with ase.db.connect(p) as db:
        for fr in cu_frames:
            a = ase.Atoms(numbers=fr["numbers"], positions=fr["positions"], cell=fr["cell"], pbc=True)
            a.calc = SinglePointCalculator(a, energy=fr["energy"], forces=fr["forces"], stress=_voigt(fr["stress"]))
            db.write(a)
    _assert_frames_equal(read(p), cu_frames)
    # labels under custom keys: energy in key_value_pairs, forces in data
    p2 = tmp_path / "custom.db"
    with ase.db.connect(p2) as db:
        for fr in cu_frames[:2]:
            a = ase.Atoms(numbers=fr["numbers"], positions=fr["positions"], cell=fr["cell"], pbc=True)
            db.write(a, dft_energy=fr["energy"], data={"dft_forces": fr["forces"]})
    got = read(p2, energy_key="dft_energy", forces_key="dft_forces")
    _assert_frames_equal(got, cu_frames[:2], stress=False)


def test_ase_traj(tmp_path, cu_frames):
    p = tmp_path / "data.traj"
    images = []
    for fr in cu_frames:
        a = ase.Atoms(numbers=fr["numbers"], positions=fr["positions"], cell=fr["cell"], pbc=True)
        a.calc = SinglePointCalculator(a, energy=fr["energy"], forces=fr["forces"], stress=_voigt(fr["stress"]))
        images.append(a)
    ase.io.write(p, images)
    _assert_frames_equal(read(p), cu_frames)
    s = read_structure(p, index=2)
    assert isinstance(s, Configuration) and s.frame == 2 and s.energy is None
    np.testing.assert_allclose(s.positions, cu_frames[2]["positions"])
    assert len(read_structure(p, index=":")) == 5


def test_read_structure_length_units(tmp_path, cu_frames):
    p = _write_xyz(tmp_path / "bohr.xyz", cu_frames[:1], e_scale=U.HARTREE_EV, l_scale=U.BOHR_ANGSTROM)
    s = read_structure(p, units="Hartree")
    np.testing.assert_allclose(s.positions, cu_frames[0]["positions"], atol=1e-10)
    np.testing.assert_allclose(s.cell, cu_frames[0]["cell"], atol=1e-10)


def test_energy_only_data(tmp_path):
    frames = [dict(f, forces=None) for f in _mol_frames(3)]
    p = _write_xyz(tmp_path / "eonly.xyz", frames)
    configs = read(p, require_forces=False)
    assert all(c.forces is None for c in configs)


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------


def _expect(path, frame, *match, **kw):
    with pytest.raises(DataError) as ei:
        read(path, **kw)
    msg = str(ei.value)
    assert str(path) in msg
    if frame is not None:
        assert f"frame {frame}" in msg
        assert ei.value.frame == frame
    for m in match:
        assert m in msg, msg
    return ei.value


def test_missing_forces(tmp_path):
    frames = _mol_frames(4)
    frames[2] = dict(frames[2], forces=None)
    p = _write_xyz(tmp_path / "nof.xyz", frames)
    err = _expect(p, 2, "missing forces", "require_forces=False")
    assert err.field == "forces"


def test_missing_energy(tmp_path):
    frames = _mol_frames(3)
    frames[1] = dict(frames[1], energy=None)
    _expect(_write_xyz(tmp_path / "noe.xyz", frames), 1, "missing energy", "energy_key")


def test_nan_energy(tmp_path):
    frames = _mol_frames(3)
    frames[1] = dict(frames[1], energy=float("nan"))
    err = _expect(_write_xyz(tmp_path / "nan.xyz", frames), 1, "NaN")
    assert err.field == "energy"


def test_inf_force(tmp_path):
    frames = _mol_frames(4)
    f = frames[3]["forces"].copy()
    f[1, 2] = np.inf
    frames[3] = dict(frames[3], forces=f)
    err = _expect(_write_xyz(tmp_path / "inf.xyz", frames), 3, "inf", "(1, 2)")
    assert err.field == "forces"


def test_nan_in_npz_positions(tmp_path):
    frames = _mol_frames(3)
    R = np.stack([f["positions"] for f in frames])
    R[2, 0, 0] = np.nan
    p = tmp_path / "nanpos.npz"
    np.savez(p, R=R, z=frames[0]["numbers"], E=np.zeros(3), F=np.zeros_like(R))
    assert _expect(p, 2, "NaN").field == "positions"


def test_empty_file(tmp_path):
    p = tmp_path / "empty.xyz"
    p.write_text("")
    _expect(p, None, "no frames")


def test_missing_file(tmp_path):
    _expect(tmp_path / "nope.xyz", None, "not found")


def test_unparseable_file(tmp_path):
    p = tmp_path / "garbage.xyz"
    p.write_text("this is\nnot an xyz file\n at all {{{\n")
    _expect(p, None, "could not parse")
    q = tmp_path / "garbage.npz"
    q.write_bytes(b"\x00\x01 not a zip")
    _expect(q, None, "could not open")
    r = tmp_path / "garbage.traj"
    r.write_bytes(b"definitely not a trajectory" * 10)
    _expect(r, None, "could not parse")


def test_atoms_too_close_molecule(tmp_path):
    frames = _mol_frames(3)
    pos = frames[1]["positions"].copy()
    pos[2] = pos[0] + np.array([0.0, 0.0, 0.05])
    frames[1] = dict(frames[1], positions=pos)
    _expect(_write_xyz(tmp_path / "close.xyz", frames), 1, "atoms 0 and 2", "0.05")


def test_atoms_too_close_across_periodic_boundary(tmp_path):
    cell = np.eye(3) * 5.0
    numbers = np.array([29, 29, 29])
    pos = np.array([[0.02, 2.0, 2.0], [4.96, 2.0, 2.0], [2.5, 4.0, 0.5]])  # 0 and 1 are 0.06 Å apart through x
    good = dict(numbers=numbers, positions=pos.copy(), cell=cell, pbc=np.array([True] * 3), energy=1.0, forces=np.zeros((3, 3)))
    good["positions"][1, 0] = 2.5
    bad = dict(good, positions=pos)
    p = _write_xyz(tmp_path / "pbc.xyz", [good, bad])
    _expect(p, 1, "atoms 0 and 1", "0.06", "periodic image")
    # the same geometry without periodicity along x is fine
    nonper = dict(bad, pbc=np.array([False, True, True]))
    assert len(read(_write_xyz(tmp_path / "nonper.xyz", [nonper]))) == 1
    # minimum distance can be switched off
    assert len(read(p, min_distance=0.0)) == 2


def test_self_image_in_tiny_cell(tmp_path):
    fr = dict(numbers=np.array([1]), positions=np.zeros((1, 3)), cell=np.eye(3) * 0.05, pbc=np.array([True] * 3), energy=0.0, forces=np.zeros((1, 3)))
    _expect(_write_xyz(tmp_path / "tiny.xyz", [fr]), 0, "own periodic image")


def test_invalid_atomic_number_and_forces_shape(tmp_path):
    frames = _mol_frames(2)
    R = np.stack([f["positions"] for f in frames])
    z = frames[0]["numbers"].copy()
    F = np.stack([f["forces"] for f in frames])
    p = tmp_path / "badz.npz"
    np.savez(p, R=R, z=np.where(np.arange(len(z)) == 1, 0, z), E=np.zeros(2), F=F)
    assert _expect(p, 0, "atomic number 0").field == "numbers"
    q = tmp_path / "badf.npz"
    np.savez(q, R=R, z=z, E=np.zeros(2), F=F[:, :2])
    with pytest.raises(DataError, match="forces") as ei:
        read(q)
    assert str(q) in str(ei.value)


def test_bad_forces_shape_in_info(tmp_path, cu_frames):
    p = tmp_path / "bf.db"
    with ase.db.connect(p) as db:
        fr = cu_frames[0]
        a = ase.Atoms(numbers=fr["numbers"], positions=fr["positions"], cell=fr["cell"], pbc=True)
        db.write(a, e=1.0, data={"f": np.zeros((5, 3))})
    _expect(p, 0, "shape", energy_key="e", forces_key="f")


# ---------------------------------------------------------------------------
# split
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 3, 10, 101])
def test_split_partition(n):
    parts = split(n, (0.8, 0.1, 0.1), seed=3)
    assert len(parts) == 3
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(n))
    for p in parts:
        assert np.all(np.diff(p) > 0)
    if n >= 3:
        assert all(len(p) >= 1 for p in parts)
    again = split(n, (0.8, 0.1, 0.1), seed=3)
    for a, b in zip(parts, again):
        np.testing.assert_array_equal(a, b)


def test_split_sizes_and_seed():
    tr, va, te = split(100, seed=0)
    assert (len(tr), len(va), len(te)) == (80, 10, 10)
    other = split(100, seed=1)
    assert not np.array_equal(tr, other[0])
    a, b = split(7, (0.5, 0.5))
    assert len(a) + len(b) == 7 and abs(len(a) - len(b)) == 1
    x, y, z = split(10, (1.0, 0.0, 0.0))
    assert len(x) == 10 and len(y) == 0 and len(z) == 0


@pytest.mark.parametrize("bad", [(0.5, 0.4), (0.8, 0.3, -0.1), ()])
def test_split_validates(bad):
    with pytest.raises(ValueError):
        split(10, bad)


# ---------------------------------------------------------------------------
# reference energies and statistics
# ---------------------------------------------------------------------------


def _synthetic(e0, n_conf=30, seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    configs = []
    zs = sorted(e0)
    for k in range(n_conf):
        counts = rng.integers(1, 6, size=len(zs))
        numbers = np.repeat(zs, counts)
        n = len(numbers)
        energy = float(sum(e0[int(z)] for z in numbers) + noise * rng.normal() * n)
        configs.append(
            Configuration(
                positions=rng.normal(size=(n, 3)),
                numbers=numbers,
                cell=np.zeros((3, 3)),
                pbc=np.zeros(3, bool),
                energy=energy,
                forces=rng.normal(size=(n, 3)),
                frame=k,
            )
        )
    return configs


def test_fit_reference_energies_two_elements():
    e0 = {1: -13.6, 8: -432.1}
    configs = _synthetic(e0)
    got = fit_reference_energies(configs)
    assert set(got) == {1, 8}
    for z in e0:
        assert got[z] == pytest.approx(e0[z], abs=1e-6)
    got0 = fit_reference_energies(configs, ridge=0.0)
    for z in e0:
        assert got0[z] == pytest.approx(e0[z], abs=1e-9)
    # an extra species absent from the data gets 0
    got2 = fit_reference_energies(configs, species=(1, 6, 8))
    assert got2[6] == pytest.approx(0.0, abs=1e-9)
    assert got2[8] == pytest.approx(e0[8], abs=1e-6)
    assert species_in(configs) == (1, 8)


def test_fit_reference_energies_rank_deficient():
    # single element, varying size: E0 = total energy / total atoms ~ mean per-atom energy
    rng = np.random.default_rng(1)
    configs = []
    for k in range(5):
        n = 8
        configs.append(
            Configuration(
                positions=np.zeros((n, 3)), numbers=np.full(n, 29), cell=np.eye(3), pbc=np.ones(3, bool), energy=float(-3.5 * n + rng.normal())
            )
        )
    got = fit_reference_energies(configs)
    assert got[29] == pytest.approx(np.mean([c.energy / c.n_atoms for c in configs]), abs=1e-6)
    # fixed composition of two elements: the mean energy is absorbed
    mol = [
        Configuration(positions=np.zeros((3, 3)), numbers=np.array([8, 1, 1]), cell=np.zeros((3, 3)), pbc=np.zeros(3, bool), energy=e)
        for e in (-14.0, -14.2, -13.9)
    ]
    got = fit_reference_energies(mol)
    assert got[8] + 2 * got[1] == pytest.approx(np.mean([-14.0, -14.2, -13.9]), abs=1e-6)
    assert np.isfinite(got[1]) and np.isfinite(got[8])


def test_statistics_against_numpy():
    e0 = {1: -1.0, 8: -5.0}
    configs = _synthetic(e0, n_conf=12, seed=4, noise=0.1)
    ref = {1: -1.1, 8: -4.9}
    st = statistics(configs, ref)
    assert isinstance(st, DatasetStatistics)
    epa = np.array([(c.energy - sum(ref[int(z)] for z in c.numbers)) / len(c.numbers) for c in configs])
    f = np.concatenate([c.forces.ravel() for c in configs])
    assert st.energy_per_atom_mean == pytest.approx(epa.mean(), abs=1e-12)
    assert st.energy_per_atom_std == pytest.approx(epa.std(), abs=1e-12)
    assert st.force_rms == pytest.approx(np.sqrt(np.mean(f**2)), abs=1e-12)
    assert st.n_configurations == 12
    assert st.n_atoms_total == sum(len(c.numbers) for c in configs)
    assert st.species == (1, 8)
    with pytest.raises(DataError, match="Z=8"):
        statistics(configs, {1: 0.0})
    with pytest.raises(Exception):
        st.force_rms = 0.0  # frozen


def test_emt_cu_liquid_samples_are_disordered():
    """The liquid part of the EMT Cu set (melt, then Langevin at each temperature) is a liquid:
    its energy per atom lies far above the crystal's at the same temperature (by about the latent
    heat), at the fixed liquid volume. Small settings: 32 atoms, short melt."""
    from mlpjax.data.emt import EMT_CU_LIQUID_VOLUME, emt_cu

    configs = emt_cu(temperatures_K=(1000.0,), repeats=(2,), md_frames_per_run=2, md_stride=5, n_rattled=0,
                     n_strained=0, liquid_temperatures_K=(1000.0,), liquid_repeat=2, liquid_frames_per_run=2,
                     melt_steps=300, liquid_equilibration_steps=100, seed=3)
    solid = [c for c in configs if c.source.startswith("emt:md:")]
    liquid = [c for c in configs if c.source.startswith("emt:liquid:1000K")]
    assert len(solid) == 2 and len(liquid) == 2
    for c in liquid:
        assert abs(np.linalg.det(c.cell)) / len(c.numbers) == pytest.approx(EMT_CU_LIQUID_VOLUME, rel=1e-9)
        assert c.forces.shape == (32, 3) and c.stress.shape == (3, 3)
    e_solid = np.mean([c.energy / 32 for c in solid])
    e_liquid = np.mean([c.energy / 32 for c in liquid])
    assert e_liquid > e_solid + 0.05  # eV/atom: the latent heat of EMT Cu is ~0.1 eV/atom
