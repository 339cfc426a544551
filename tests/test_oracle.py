"""mlpjax.active: oracle specs (EMT, PySCF, tblite, any ASE calculator) and resumable parallel labelling.

The workers import :class:`ScriptedEMT` below through the ``ase:test_oracle:ScriptedEMT`` spec (they
get the parent's sys.path, which holds tests/), so an oracle that raises, returns NaN or hangs on
chosen structures is an ordinary ASE calculator.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.emt import EMT

from mlpjax import data
from mlpjax.active import (ID_KEY, OracleError, evaluate, failures_path, label, make_oracle, read_failures,
                           structure_id)
from mlpjax.config import ConfigError

TESTS = os.path.dirname(os.path.abspath(__file__))


class ScriptedEMT(EMT):
    """EMT that misbehaves on structures with a chosen number of atoms: raises (``raise_n``), returns a
    NaN energy (``nan_n``) or hangs (``hang_n``); ``delay_s`` slows every structure down, ``log`` gets
    one line (the structure id) per structure labelled."""

    def __init__(self, raise_n=None, nan_n=None, hang_n=None, delay_s=0.0, log=None):
        super().__init__()
        self.raise_n, self.nan_n, self.hang_n, self.delay_s, self.log = raise_n, nan_n, hang_n, delay_s, log

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        from ase.calculators.calculator import all_changes

        n = len(atoms)
        if self.log:
            with open(self.log, "a") as f:
                f.write(structure_id(atoms) + "\n")
        if n == self.raise_n:
            raise RuntimeError(f"scripted failure for {n} atoms")
        if n == self.hang_n:
            time.sleep(600)
        time.sleep(self.delay_s)
        super().calculate(atoms, properties, system_changes or all_changes)
        if n == self.nan_n:
            self.results["energy"] = float("nan")


def _cells(sizes=(1, 2, 1, 2, 1, 2), vacancy_every=0):
    """Rattled cubic fcc Cu cells (4 atoms per repeat³), tagged with config_type; every
    ``vacancy_every``-th one loses an atom (so it has 4 r³ - 1 atoms)."""
    out = []
    for k, r in enumerate(sizes):
        a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(r)
        if vacancy_every and k % vacancy_every == vacancy_every - 1:
            del a[0]
        a.rattle(0.05, seed=k)
        a.info["config_type"] = "vacancy" if len(a) % 4 else "rattle"
        out.append(a)
    return out


def _direct_emt(atoms):
    a = atoms.copy()
    a.calc = EMT()
    return a.get_potential_energy(), a.get_forces(), a.get_stress(voigt=False)


def _frames(path):
    return data.read(path)


# ------------------------------------------------------------------------------ oracle specs
def test_make_oracle_forms_and_errors():
    assert make_oracle().name == "emt" and make_oracle(None).describe() == "emt"
    lj = make_oracle({"name": "ase:ase.calculators.lj:LennardJones", "sigma": 2.3, "epsilon": 0.4})
    assert lj.kwargs == {"sigma": 2.3, "epsilon": 0.4} and make_oracle(lj) is lj
    calc = lj.calculator()
    assert type(calc).__name__ == "LennardJones" and calc.parameters["sigma"] == 2.3
    for bad, needle in [("dft", "unknown oracle 'dft'"), ({"xc": "pbe"}, "needs a name"),
                        ("ase:ase.calculators.lj", "ase:package.module:ClassName"),
                        ("ase:no.such.module:X", "cannot import module"),
                        ("ase:ase.calculators.lj:Nope", "has no 'Nope'")]:
        with pytest.raises(ConfigError, match=needle):
            make_oracle(bad)
    with pytest.raises(ConfigError, match="unknown emt oracle option 'xc'; it takes no options"):
        make_oracle("emt", xc="pbe")


def test_evaluate_emt_equals_ase_and_stress_only_for_3d_periodic_cells():
    a = _cells()[1]
    r = evaluate(make_oracle("emt"), a)
    e, f, s = _direct_emt(a)
    assert r.energy == e and np.array_equal(r.forces, f) and np.array_equal(r.stress, s)
    slab = a.copy()
    slab.pbc = (True, True, False)
    assert evaluate(make_oracle("emt"), slab).stress is None


def test_non_finite_result_is_an_oracle_error():
    with pytest.raises(OracleError, match="non-finite energy") as err:
        evaluate(make_oracle("ase:test_oracle:ScriptedEMT", nan_n=4), _cells()[0])
    assert err.value.reason == "nan"


# ------------------------------------------------------------------------------ labelling
def test_labels_equal_direct_emt_in_input_order_and_a_rerun_relabels_nothing(tmp_path):
    cells = _cells()
    out = tmp_path / "l.xyz"
    log = tmp_path / "calls.log"
    oracle = {"name": "ase:test_oracle:ScriptedEMT", "log": str(log)}
    rep = label(cells, oracle, out, workers=2)
    assert (rep.n_labelled, rep.n_failed, rep.n_skipped) == (6, 0, 0)
    frames = _frames(out)
    assert [c.info[ID_KEY] for c in frames] == [structure_id(a) for a in cells]  # input order, whatever the workers did
    for c, a in zip(frames, cells):
        e, f, s = _direct_emt(a)
        assert c.energy == e  # the energy is written exactly (repr); forces to the file's 8 decimals
        np.testing.assert_allclose(c.forces, f, atol=1e-7)
        np.testing.assert_allclose(c.stress, s, atol=1e-12)
        assert c.info["config_type"] == "rattle" and c.info["oracle"] == "ase:test_oracle:ScriptedEMT"
    before = out.read_bytes()
    rep = label(cells, oracle, out, workers=2)
    assert (rep.n_labelled, rep.n_skipped) == (0, 6) and out.read_bytes() == before
    assert len(log.read_text().split()) == 6  # every structure labelled once in both calls

    # a kill in the middle of writing the last frame: it is cut off with a warning and labelled again
    text = out.read_bytes()
    last = text.rindex(b"\n32\n") + 1
    out.write_bytes(text[: last + (len(text) - last) // 2])
    with pytest.warns(UserWarning, match="discarded a half-written last frame"):
        rep = label(cells, oracle, out)
    assert rep.discarded_partial_frame and rep.n_labelled == 1 and rep.n_skipped == 5
    assert out.read_bytes() == before


def test_oracle_failures_are_recorded_skipped_and_not_retried(tmp_path):
    cells = _cells(sizes=(1, 2, 1, 2, 2, 1), vacancy_every=3)  # 4, 32, 3 (vacancy), 32, 32, 3 atoms
    out = tmp_path / "f.xyz"
    oracle = make_oracle("ase:test_oracle:ScriptedEMT", raise_n=3, nan_n=4)
    rep = label(cells, oracle, out)
    assert (rep.n_labelled, rep.n_failed) == (3, 3)
    assert sorted(f.reason for f in rep.failures) == ["exception", "exception", "nan"]
    assert any("scripted failure for 3 atoms" in f.message for f in rep.failures)
    recorded = [json.loads(line) for line in open(failures_path(out))]
    assert {r["id"] for r in recorded} == {structure_id(a) for a in cells if len(a) in (3, 4)}
    assert [len(a) for a in cells if structure_id(a) in {c.info[ID_KEY] for c in _frames(out)}] == [32, 32, 32]
    rep = label(cells, oracle, out)  # the failures are not retried ...
    assert (rep.n_labelled, rep.n_failed, rep.n_skipped, len(rep.failures)) == (0, 0, 6, 3)
    rep = label(cells, "emt", out, retry_failures=True)  # ... unless asked, e.g. with a working oracle
    assert (rep.n_labelled, rep.failures) == (3, ())
    assert len(_frames(out)) == 6 and len(read_failures(out)) == 3  # the history stays in the failures file


def test_a_hung_worker_is_killed_at_the_timeout(tmp_path):
    cells = _cells(sizes=(1, 1, 2))  # the hang last: no replacement worker is needed after it
    out = tmp_path / "t.xyz"
    t0 = time.monotonic()
    rep = label(cells, make_oracle("ase:test_oracle:ScriptedEMT", hang_n=32), out, timeout_s=1.5)
    assert time.monotonic() - t0 < 30
    assert rep.n_labelled == 2 and [f.reason for f in rep.failures] == ["timeout"]
    assert rep.failures[0].id == structure_id(cells[2]) and "killed" in rep.failures[0].message


_KILLED_RUN = """
import sys
sys.path.insert(0, {tests!r})
from test_oracle import _cells
from mlpjax.active import label
label(_cells(sizes=(1, 2) * 5), {{"name": "ase:test_oracle:ScriptedEMT", "delay_s": 0.25, "log": {log!r}}}, {out!r})
"""


def test_killing_a_labelling_run_and_restarting_loses_nothing_and_relabels_nothing(tmp_path):
    cells = _cells(sizes=(1, 2) * 5)
    out, log = tmp_path / "k.xyz", tmp_path / "calls.log"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN.format(tests=TESTS, log=str(log), out=str(out))],
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"label_id=") < 3):
            assert proc.poll() is None, "the labelling run ended before it was killed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker, at once
        proc.wait()
    ids_at_kill = [m.decode() for m in re.findall(rb"label_id=(\S+)", out.read_bytes())]
    rep = label(cells, {"name": "ase:test_oracle:ScriptedEMT", "log": str(log)}, out)
    if rep.discarded_partial_frame:  # killed in the middle of a write (rare): that frame was not finished
        ids_at_kill = ids_at_kill[:-1]
    frames = _frames(out)
    assert [c.info[ID_KEY] for c in frames] == [structure_id(a) for a in cells]  # nothing lost, each once, in order
    for c, a in zip(frames, cells):
        assert c.energy == _direct_emt(a)[0]
    calls = log.read_text().split()
    assert len(ids_at_kill) >= 3 and rep.n_skipped >= len(ids_at_kill)
    assert all(calls.count(sid) == 1 for sid in ids_at_kill)  # a finished label is never computed again
    assert len(calls) <= len(cells) + 1  # at most the structure in flight at the kill is computed twice


def test_a_file_not_written_by_labelling_is_refused(tmp_path):
    out = tmp_path / "other.xyz"
    data.write_extxyz(out, data.Configuration.from_atoms(_cells()[0]))
    with pytest.raises(data.DataError, match="no label_id"):
        label(_cells()[:1], "emt", out)


# ------------------------------------------------------------------------------ quantum chemistry
def _fd_forces(spec, atoms, components, h=1e-3):
    """−dE/dR by central differences of the oracle's energy [eV/Å] for (atom, axis) components."""
    out = []
    for i, k in components:
        p, m = atoms.copy(), atoms.copy()
        p.positions[i, k] += h
        m.positions[i, k] -= h
        out.append(-(evaluate(spec, p).energy - evaluate(spec, m).energy) / (2 * h))
    return np.array(out)


def _water():
    w = molecule("H2O")
    w.rattle(0.05, seed=0)
    return w


def test_pyscf_water_forces_are_minus_the_energy_gradient():
    """Hartree–Fock/STO-3G (seconds); the DFT path is the slow test below."""
    pytest.importorskip("pyscf")
    spec = make_oracle("pyscf", xc="hf", basis="sto-3g", conv_tol=1e-11)
    assert spec.describe() == "pyscf:hf/sto-3g"
    w = _water()
    r = evaluate(spec, w)
    assert -2050 < r.energy < -2020 and r.stress is None  # eV: HF/STO-3G water is −74.96 Hartree
    comps = [(0, 2), (1, 1), (2, 0)]
    np.testing.assert_allclose([r.forces[i, k] for i, k in comps], _fd_forces(spec, w, comps), atol=1e-4)


@pytest.mark.slow
def test_pyscf_pbe_def2svp_water_through_a_labelling_worker(tmp_path):
    pytest.importorskip("pyscf")
    spec = make_oracle({"name": "pyscf", "xc": "pbe", "basis": "def2-svp"})
    w = _water()
    rep = label([w], spec, tmp_path / "p.xyz")
    assert rep.n_labelled == 1
    (c,) = _frames(tmp_path / "p.xyz")
    r = evaluate(spec, w)
    assert c.info["oracle"] == "pyscf:pbe/def2-svp" and c.energy == pytest.approx(r.energy, abs=1e-6)  # threaded sums
    assert -2080 < r.energy < -2070  # eV: PBE/def2-SVP water, −76.3 Hartree
    comps = [(0, 2), (1, 1)]
    np.testing.assert_allclose([r.forces[i, k] for i, k in comps], _fd_forces(spec, w, comps), atol=2e-3)


def test_pyscf_unconverged_scf_and_periodic_cells_are_oracle_errors():
    pytest.importorskip("pyscf")
    with pytest.raises(OracleError, match="did not converge in 1 cycles") as err:
        evaluate(make_oracle("pyscf", basis="sto-3g", max_cycle=1), _water())
    assert err.value.reason == "not_converged"
    with pytest.raises(OracleError, match="molecules only") as err:
        evaluate(make_oracle("pyscf", basis="sto-3g"), _cells()[0])
    assert err.value.reason == "unsupported"
    with pytest.raises(ConfigError, match="unknown basis set 'def2-nope'"):
        make_oracle({"name": "pyscf", "basis": "def2-nope"})
    with pytest.raises(ConfigError, match="did you mean 'basis'"):
        make_oracle("pyscf", bassis="sto-3g")


def test_xtb_water_through_a_labelling_worker(tmp_path):
    pytest.importorskip("tblite")
    spec = make_oracle({"name": "xtb"})
    w = _water()
    w.info["config_type"] = "molecule"
    rep = label([w], spec, tmp_path / "x.xyz")
    assert rep.n_labelled == 1
    (c,) = _frames(tmp_path / "x.xyz")
    assert c.info["oracle"] == "xtb:GFN2-xTB" and c.stress is None
    r = evaluate(spec, w)
    assert c.energy == pytest.approx(r.energy, abs=1e-7) and -150 < r.energy < -125  # eV: GFN2-xTB water, −5.07 Hartree
    comps = [(0, 2), (1, 1), (2, 0)]
    np.testing.assert_allclose([r.forces[i, k] for i, k in comps], _fd_forces(spec, w, comps), atol=1e-3)


def test_missing_extras_name_the_pip_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("pyscf", "tblite") else real(name, *a))
    with pytest.raises(ConfigError, match=r'pip install "mlpjax\[pyscf\]"'):
        make_oracle("pyscf")
    with pytest.raises(ConfigError, match=r'pip install "mlpjax\[xtb\]"'):
        make_oracle("xtb")
