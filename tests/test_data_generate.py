"""mlpjax.data.generate and ``mlpjax data``: recipes → sampled, labelled, tagged frames + composition report.

The EMT labels of every frame are checked against ASE's EMT directly; ``mlpjax data emt-cu`` is
checked frame for frame against mlpjax.data.emt.emt_cu (the quickstart's published numbers depend
on those frames); bad recipes are one-line errors naming file, line and key, exit status 2.
"""

import json
import shutil
import textwrap

import numpy as np
import pytest
from ase.calculators.emt import EMT

from mlpjax import data
from mlpjax.cli import main
from mlpjax.data.generate import (MAX_NEAR_EQUILIBRIUM_SHARE, composition, composition_path,
                                  generate, load_recipe, recipe_path, recipes, sample)

SMALL = """\
seed: 1
structures:
  cell: {bulk: {name: Cu, crystalstructure: fcc, a: 3.6, cubic: true}}
  big: {from: cell, repeat: 2}
  slab: {fcc100: {symbol: Cu, size: [2, 2, 3], a: 3.6, vacuum: 5.0}}
  vac_a: {from: big, vacancy: 0, relax: true}
  vac_b: {from: big, vacancy: 0, hop: 1, relax: true}
sources:
  - displacements: {structures: cell, count: 2}
  - md: {structures: [cell, slab], temperatures_K: [300, 900], frames: 2, stride: 3, equilibration_steps: 5}
  - rattle: {structures: cell, count: 2}
  - strain: {structures: cell, count: 2}
  - vacancies: {structures: big, count: 1}
  - surface: {structures: cell, miller: [1, 1, 1], layers: 3, count: 1, vacuum_A: 5.0}
  - neb: {initial: vac_a, final: vac_b, images: 1, steps: 50}
"""
SMALL_TYPES = {"displacement": 2, "md_300K": 4, "md_900K": 4, "rattle": 2, "strain": 2, "vacancy": 1, "surface_111": 1,
               "neb": 3}


def _emt(atoms):
    a = atoms.copy()
    a.calc = EMT()
    return a.get_potential_energy(), a.get_forces()


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The SMALL recipe generated once: (recipe path, output path, GenerateResult, the sampled structures)."""
    d = tmp_path_factory.mktemp("gen")
    recipe = _write(d, "small.yaml", SMALL)
    result = generate(recipe, d / "small.xyz")
    structures = sample(load_recipe(recipe))
    return recipe, d / "small.xyz", result, structures


def test_every_source_kind_gives_tagged_frames_labelled_by_the_oracle(small):
    _, out, result, structures = small
    frames = data.read(out)
    types = [c.info["config_type"] for c in frames]
    assert {t: types.count(t) for t in set(types)} == SMALL_TYPES
    assert types == sorted(types, key=list(SMALL_TYPES).index)  # recipe order
    assert len(structures) == len(frames)
    for c, a in zip(frames, structures):
        e, f = _emt(a)
        assert c.energy == e and c.info == {**a.info, "label_id": c.info["label_id"], "oracle": "emt"}  # exactly
        np.testing.assert_allclose(c.forces, f, atol=1e-7)
        assert (c.stress is not None) == bool(np.all(c.pbc))  # stress for 3D-periodic cells only
    by_type = {t: [c for c in frames if c.info["config_type"] == t] for t in SMALL_TYPES}
    assert {c.info["temperature_K"] for c in by_type["md_900K"]} == {900.0}
    assert {c.info["structure"] for c in by_type["md_300K"]} == {"cell", "slab"}
    assert [c.n_atoms for c in by_type["vacancy"]] == [31] and [c.n_atoms for c in by_type["neb"]] == [31] * 3
    assert by_type["surface_111"][0].pbc.tolist() == [True, True, False]
    # the NEB images run from the relaxed vacancy to the hopped one: atom 0 (parent atom 1) moves by a bond length
    neb = [c.positions[0] for c in by_type["neb"]]
    assert 2.3 < np.linalg.norm(neb[-1] - neb[0]) < 2.8 and 1.0 < np.linalg.norm(neb[1] - neb[0]) < 1.6
    # composition report: printed form and JSON next to the output
    comp = result.composition
    assert comp.n_frames == 19 and comp.warnings == ()
    assert comp.kinds["md"] == pytest.approx(8 / 19) and comp.kinds["reaction_path"] == pytest.approx(3 / 19)
    assert comp.temperatures_K == ((300.0, 4), (900.0, 4))
    saved = json.loads(open(composition_path(out)).read())
    assert saved["n_frames"] == 19 and saved["oracle"] == "emt"
    assert sum(t["share"] for t in saved["types"]) == pytest.approx(1.0)
    md = next(t for t in saved["types"] if t["config_type"] == "md_900K")
    e900 = [c.energy / c.n_atoms for c in by_type["md_900K"]]
    assert md["energy_per_atom_eV"] == [min(e900), max(e900)] and md["kind"] == "md"


def test_a_recipe_is_deterministic_and_a_second_run_relabels_nothing(small, tmp_path):
    """A run killed in the middle of a frame resumes to the same file, bit for bit: the recipe samples the
    same structures again (the same ids), the finished frames are kept and only the rest is labelled."""
    recipe_file, out, _, _ = small
    recipe = load_recipe(recipe_file)
    copy = tmp_path / "copy.xyz"
    full = out.read_bytes()
    k = full.index(b"\n", full.index(b"config_type=strain"))  # cut inside a frame, as a kill would
    copy.write_bytes(full[:k])
    with pytest.warns(UserWarning, match="half-written last frame"):
        result = generate(recipe, copy)
    assert result.labelling.n_labelled == 19 - result.labelling.n_skipped and result.labelling.n_skipped >= 10
    assert copy.read_bytes() == full  # resumed to the same file, bit for bit


def test_an_output_of_another_recipe_is_refused_unless_overwritten(small, tmp_path, capsys):
    _, out, _, _ = small
    other = _write(tmp_path, "other.yaml", _BASE)
    copy = tmp_path / "o.xyz"
    shutil.copy(out, copy)
    argv = ["data", "generate", str(other), "--output", str(copy), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "19 labelled frames that this recipe does not make" in err and "--overwrite" in err
    assert main(argv + ["--overwrite"]) == 0
    assert [c.info["config_type"] for c in data.read(copy)] == ["rattle", "rattle"]


def test_composition_warns_about_near_equilibrium_data_and_a_narrow_temperature_range(tmp_path, capsys):
    recipe = _write(tmp_path, "narrow.yaml", """\
        structures:
          cell: {bulk: {name: Cu, crystalstructure: fcc, a: 3.6, cubic: true}}
        sources:
          - displacements: {structures: cell, count: 3}
          - md: {structures: cell, temperatures_K: [300], frames: 1, stride: 2, equilibration_steps: 2}
        """)
    out = tmp_path / "narrow.xyz"
    assert main(["data", "generate", str(recipe), "--output", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    warns = captured.err.strip().splitlines()
    assert len(warns) == 2 and all(w.startswith("mlpjax data: warning: ") for w in warns)
    assert "75% of the frames are near-equilibrium" in warns[0] and "only 300 K" in warns[1]
    assert "displacement" in captured.out and "MD temperatures: 300 K" in captured.out
    saved = json.loads(open(composition_path(out)).read())
    assert len(saved["warnings"]) == 2 and saved["kinds"]["near_equilibrium"] == 0.75


def _conf(config_type, energy_per_atom, T=None):
    c = data.Configuration(positions=np.zeros((2, 3)) + [[0, 0, 0], [0, 0, 2.5]], numbers=np.array([29, 29]),
                           cell=np.zeros((3, 3)), pbc=np.zeros(3, bool), energy=2 * energy_per_atom,
                           forces=np.array([[0.0, 0.0, 0.3], [0.0, 0.0, -0.3]]))
    c.info["config_type"] = config_type
    if T is not None:
        c.info["temperature_K"] = T
    return c


def test_composition_thresholds():
    ok = [_conf("md_300K", 0.0, 300)] * 3 + [_conf("md_700K", 0.1, 700)] * 3 + [_conf("displacement", -0.01)] * 4
    comp = composition(ok)
    assert comp.kinds["near_equilibrium"] == pytest.approx(0.4) and comp.warnings == ()  # 40 % is the limit
    assert comp.types[0].config_type == "displacement" and comp.types[0].max_force_eV_A == pytest.approx(0.3)
    comp = composition(ok + [_conf("equilibrium", -0.01)])
    assert comp.kinds["near_equilibrium"] > MAX_NEAR_EQUILIBRIUM_SHARE and len(comp.warnings) == 1
    comp = composition([_conf("md_500K", 0.0, 500), _conf("md_700K", 0.0, 700), _conf("neb", 0.1)])
    assert len(comp.warnings) == 1 and "500-700 K" in comp.warnings[0]
    comp = composition([_conf("rattle", 0.0)], kinds={"rattle": "near_equilibrium"})  # a recipe's own kinds win
    assert comp.kinds["near_equilibrium"] == 1.0 and "no MD frames" in comp.warnings[1]


# ------------------------------------------------------------------------------ emt-cu
def _run_recording_emt_cu(monkeypatch, argv):
    """``main(argv)`` with mlpjax.data.emt.emt_cu wrapped: (exit status, [(kwargs, the frames it returned)])."""
    import mlpjax.data.emt as emt

    calls, real = [], emt.emt_cu

    def recording(**kwargs):
        calls.append((kwargs, real(**kwargs)))
        return calls[-1][1]

    monkeypatch.setattr(emt, "emt_cu", recording)
    return main(argv), calls


def _same_frames(out, ref):
    """The file ``out`` holds the frames ``ref`` (emt_cu's Configurations): energies bit for bit, the atom
    lines (positions, forces) byte for byte as write_extxyz writes them, stress and cell exactly."""
    got = data.read(out)
    assert len(got) == len(ref)
    assert [c.energy for c in got] == [c.energy for c in ref]
    ref_file = out.parent / "ref.xyz"
    data.write_extxyz(ref_file, ref)
    body = lambda p: [ln for ln in p.read_text().splitlines() if not ln.startswith(("Lattice", "Properties"))]  # noqa: E731
    assert body(out) == body(ref_file)
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g.stress, r.stress)
        np.testing.assert_array_equal(g.cell, r.cell)
    return got


def test_emt_cu_recipe_gives_the_frames_of_emt_cu(tmp_path, monkeypatch, capsys):
    """The flags reach emt_cu as before (seed, counts, no liquid when --liquid-frames 0), and the file holds
    exactly the frames it returns, relabelled by the oracle (EMT in a worker) to the same bits."""
    out = tmp_path / "cu.xyz"
    code, calls = _run_recording_emt_cu(monkeypatch, [
        "data", "emt-cu", "--output", str(out), "--md-frames", "1", "--rattled", "2", "--strained", "2",
        "--liquid-frames", "0", "--seed", "3", "--quiet"])
    assert code == 0 and "wrote 10 labelled frames (emt)" in capsys.readouterr().out
    (kwargs, ref), = calls
    assert kwargs == dict(seed=3, md_frames_per_run=1, n_rattled=2, n_strained=2, liquid_frames_per_run=0,
                          liquid_temperatures_K=())
    got = _same_frames(out, ref)
    assert [c.info["config_type"] for c in got] == (["md_300K"] * 2 + ["md_500K"] * 2 + ["md_700K"] * 2
                                                    + ["rattle"] * 2 + ["strain"] * 2)
    assert [c.info["temperature_K"] for c in got[:6]] == [300.0] * 2 + [500.0] * 2 + [700.0] * 2


@pytest.mark.slow
def test_emt_cu_recipe_gives_the_frames_of_emt_cu_with_the_liquid(tmp_path):
    """An independent emt_cu call with the liquid (about a minute)."""
    from mlpjax.data.emt import emt_cu

    out = tmp_path / "cu.xyz"
    assert main(["data", "emt-cu", "--output", str(out), "--md-frames", "2", "--rattled", "3", "--strained", "3",
                 "--liquid-frames", "2", "--quiet", "--workers", "2"]) == 0
    got = _same_frames(out, emt_cu(seed=0, md_frames_per_run=2, n_rattled=3, n_strained=3, liquid_frames_per_run=2))
    assert [c.info["config_type"] for c in got[-4:]] == ["liquid_1750K"] * 2 + ["liquid_1000K"] * 2


def test_shipped_recipes_load():
    assert {"emt-cu", "cu-mixed"} <= set(recipes())
    r = load_recipe(recipe_path("cu-mixed"))
    assert {type(s).__name__ for s in r.sources} == {"Displacements", "MD", "Rattle", "Strain", "Vacancies", "NEB"}
    assert load_recipe(recipe_path("emt-cu")).sources[0].md_frames == 30  # emt_cu's default


# ------------------------------------------------------------------------------ bad recipes
_BASE = """\
structures:
  bulk: {bulk: {name: Cu, crystalstructure: fcc, a: 3.6, cubic: true}}
sources:
  - rattle: {structures: bulk, count: 2}
"""


@pytest.mark.parametrize("text, needles", [
    (_BASE + "bogus: 1\n", ["line 5", "unknown recipe key 'bogus'", "known: structures"]),
    (_BASE.replace("count: 2", "count: 2, amplitude: 0.1"), ["line 4", "sources[0] (rattle)", "unknown rattle option "
                                                              "'amplitude' (did you mean 'amplitude_A'?)"]),
    (_BASE + "  - md: {structures: bulk, temperatures_K: [300], frames: 2, stride: 0}\n",
     ["line 5", "sources[1] (md): stride must be >= 1, got 0"]),
    (_BASE + "  - md: {structures: bulk, temperatures_K: [300, -5], frames: 2}\n", ["line 5", "temperatures > 0 K"]),
    (_BASE + "  - md: {structures: bulk, frames: 2}\n", ["line 5", "sources[1] (md): missing temperatures_K"]),
    (_BASE.replace("name: Cu", "name: Xx"), ["line 2", "structures.bulk", "unknown element 'Xx'"]),
    (_BASE.replace("crystalstructure", "crystal"), ["line 2", "ase.build.bulk has no argument 'crystal' (did you mean "
                                                   "'crystalstructure'?)"]),
    (_BASE + "  - neb: {initial: ini, final: bulk}\n", ["line 5", "sources[1] (neb): unknown structure 'ini'"]),
    (_BASE.replace("sources:", "  ini: {file: no_such_endpoint.xyz}\nsources:") + "  - neb: {initial: ini, final: bulk}\n",
     ["line 3", "structures.ini", "file 'no_such_endpoint.xyz' does not exist"]),
    (_BASE.replace("sources:", "  vac: {from: bulk, vacancy: 0}\nsources:") + "  - neb: {initial: vac, final: bulk}\n",
     ["line 6", "NEB end points 'vac' (Cu3, 3 atoms) and 'bulk' (Cu4, 4 atoms) must have the same atoms"]),
    (_BASE.replace("count: 2}", "count: 2}\n  - magic: {count: 1}"), ["line 5", "unknown source 'magic'"]),
    (_BASE + "oracle: {name: pyscf, bassis: sto-3g}\n", ["line 5", "oracle: unknown pyscf oracle option 'bassis'"]),
    (_BASE + "seed: -1\n", ["line 5", "seed must be >= 0, got -1"]),
    (_BASE.replace("count: 2", "count: 2.5"), ["line 4", "count must be an integer, got 2.5"]),
    (_BASE + "structures: {}\n", ["line 5", "'structures' is given twice (first on line 1)"]),
    (_BASE.replace("count: 2", "count: 0"), ["every count is 0, nothing to generate"]),
])
def test_bad_recipes_are_one_line_errors_naming_file_line_and_key(text, needles, tmp_path, capsys):
    if "pyscf" in text:
        pytest.importorskip("pyscf")  # without PySCF the error names the missing extra instead
    recipe = _write(tmp_path, "bad.yaml", text)
    code = main(["data", "generate", str(recipe), "--output", str(tmp_path / "o.xyz"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlpjax data: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    if "nothing to generate" not in needles[0]:
        assert f"{recipe} line" in lines[0]


@pytest.mark.parametrize("argv, needle", [
    (["data", "generate", "--output", "{dir}/o.xyz"], "needs a recipe"),
    (["data", "emt-cu", "{recipe}", "--output", "{dir}/o.xyz"], "takes no recipe file"),
    (["data", "generate", "{recipe}", "--output", "{dir}/o.xyz", "--md-frames", "3"], "--md-frames set the emt_cu source"),
    (["data", "emt-cu", "--output", "{dir}/o.xyz", "--oracle", "dft"], "--oracle dft: unknown oracle 'dft'"),
    (["data", "emt-cu", "--output", "{dir}/o.xyz", "--oracle", "{{name: [x"], "is not a name or a"),
])
def test_bad_data_command_lines_are_one_line_errors(argv, needle, tmp_path, capsys):
    recipe = _write(tmp_path, "ok.yaml", _BASE)
    code = main([a.format(dir=tmp_path, recipe=recipe) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("mlpjax data: error: ") and needle in err, err
