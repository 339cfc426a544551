"""mlpjax.ipi and ``mlpjax serve-ipi``: the i-PI socket driver.

ASE's SocketIOCalculator is the i-PI server (it speaks the protocol in atomic units, as i-PI
does); the driver answers on a Unix socket, in a thread (the library) or a subprocess (the CLI).
Energy, forces and stress that went through the socket equal the direct calculator's in float64
(a triclinic periodic cell, strained and with atoms outside it, so the cell transposition and the
virial ↔ stress conversion are checked, and a molecule); the driver stops after max_steps and
refuses a server with another atom count or a zero-volume periodic cell; every CLI error is one
line with exit status 2.
"""

from __future__ import annotations

import csv
import itertools
import os
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.socketio import SocketIOCalculator
from ase.io import write
from ase.units import GPa

from mlpjax import models
from mlpjax.cli import main
from mlpjax.ipi import DriverError, parse_address, serve
from mlpjax.potential import Potential

TOL = {"energy": 1e-9, "forces": 1e-10, "stress": 1e-11}  # eV, eV/Å, eV/Å³ (float64; a.u. round trip ~1e-15 rel.)
_names = itertools.count()


def _socket_name() -> str:
    return f"mlpjax_test_{os.getpid()}_{next(_names)}"


@pytest.fixture(scope="module")
def pot():
    """A tiny two-element SchNet (Cu, Au), parameters ×2 so forces are O(1) eV/Å."""
    p = Potential("schnet", models.make_config("schnet", {"features": 8, "interactions": 1, "num_rbf": 8,
                                                          "filter_hidden": 8}),
                  cutoff=4.0, species=(29, 79), reference_energies=(-3.7, -3.2), energy_shift=0.1, energy_scale=0.7,
                  avg_num_neighbors=12.0)
    params = jax.tree_util.tree_map(lambda x: 2.0 * x, p.init_params(jax.random.PRNGKey(0)))
    return p.replace(params=params)


@pytest.fixture(scope="module")
def direct(pot):
    return pot.calculator()


def _cuau() -> Atoms:
    """16 atoms of fcc Cu with three Au, in a sheared (triclinic) cell narrower than 2 r_c, rattled."""
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 2, 1))
    atoms.numbers[[1, 6, 11]] = 79
    atoms.set_cell(atoms.cell.array + [[0, 0, 0], [0.4, 0, 0], [0.3, -0.2, 0]], scale_atoms=True)
    atoms.rattle(0.1, seed=1)
    return atoms


def _geometries(atoms: Atoms, n: int):
    """n geometries the server sends: rattled, the cell strained, one atom 1.3 cells outside the box."""
    out = []
    for k in range(n):
        a = atoms.copy()
        a.rattle(0.05, seed=10 + k)
        if atoms.pbc.all() and k % 2:
            a.set_cell(a.cell.array @ (np.eye(3) + 0.01 * k * np.array([[1, 0.2, 0], [0.2, -0.5, 0.1], [0, 0.1, 0.3]])),
                       scale_atoms=True)
        if atoms.pbc.all() and k == n - 1:
            a.positions[0] += 1.3 * a.cell[0]
        out.append(a)
    return out


def _start_driver(pot, template, name, **kwargs):
    box = {}

    def target():
        try:
            box["result"] = serve(pot, template, unix=name, wait_s=30.0, **kwargs)
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def _through_socket(pot, template, geometries, **kwargs):
    """Serve ``template`` from a thread; the server evaluates ``geometries``. → (results, ServeResult)."""
    name = _socket_name()
    results = []
    with SocketIOCalculator(unixsocket=name, timeout=60.0) as calc:
        thread, box = _start_driver(pot, template, name, max_steps=len(geometries), **kwargs)
        for a in geometries:
            a = a.copy()
            a.calc = calc
            results.append({"energy": a.get_potential_energy(), "forces": a.get_forces().copy(),
                            "stress": a.get_stress().copy() if a.pbc.all() else None})
        thread.join(30)
    assert not thread.is_alive(), "the driver did not stop after max_steps"
    assert "error" not in box, box.get("error")
    return results, box["result"]


def _deviations(results, geometries, direct):
    dev = {"energy": 0.0, "forces": 0.0, "stress": 0.0}
    for got, a in zip(results, geometries):
        a = a.copy()
        a.calc = direct
        dev["energy"] = max(dev["energy"], abs(got["energy"] - a.get_potential_energy()))
        dev["forces"] = max(dev["forces"], float(np.abs(got["forces"] - a.get_forces()).max()))
        if got["stress"] is not None:
            dev["stress"] = max(dev["stress"], float(np.abs(got["stress"] - a.get_stress()).max()))
    return dev


def test_periodic_cell_matches_the_direct_calculator(pot, direct):
    template = _cuau()
    geometries = _geometries(template, 4)
    results, served = _through_socket(pot, template, geometries)
    assert served.steps == 4 and served.reason == "max_steps"
    dev = _deviations(results, geometries, direct)
    print(f"periodic: max |ΔE| {dev['energy']:.1e} eV, |ΔF| {dev['forces']:.1e} eV/Å, |Δσ| {dev['stress']:.1e} eV/Å³")
    for key, tol in TOL.items():
        assert dev[key] <= tol, (key, dev)
    # the comparison is not between zeros: forces O(1) eV/Å, stress O(1e-2) eV/Å³, energies that differ
    assert min(np.abs(r["forces"]).max() for r in results) > 0.5
    assert min(np.abs(r["stress"]).max() for r in results) > 1e-3
    assert np.ptp([r["energy"] for r in results]) > 0.1


def test_molecule_matches_the_direct_calculator(pot, direct):
    template = Atoms("Cu3Au2", positions=[[0, 0, 0], [2.4, 0, 0], [1.2, 2.1, 0], [1.2, 0.7, 2.0], [3.5, 2.0, 1.0]])
    geometries = _geometries(template, 2)
    results, served = _through_socket(pot, template, geometries, periodic=False)
    assert served.steps == 2
    dev = _deviations(results, geometries, direct)
    print(f"molecule: max |ΔE| {dev['energy']:.1e} eV, |ΔF| {dev['forces']:.1e} eV/Å")
    assert dev["energy"] <= TOL["energy"] and dev["forces"] <= TOL["forces"], dev
    assert all(r["stress"] is None for r in results)


@pytest.mark.parametrize("case", ["atom_count", "zero_cell"])
def test_driver_refuses_a_server_system_that_does_not_fit(pot, case):
    if case == "atom_count":  # the server has 16 atoms, the template 15
        template, sent, option = _cuau()[:-1], _cuau(), "structure"
    else:  # a cell-less template is periodic in the server's box, but the server sends no box
        sent = Atoms("Cu2Au", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0]])
        template, option = sent.copy(), "periodic"
    name = _socket_name()
    with SocketIOCalculator(unixsocket=name, timeout=30.0) as calc:
        thread, box = _start_driver(pot, template, name)
        sent.calc = calc
        with pytest.raises(OSError):  # the driver hangs up instead of answering
            sent.get_potential_energy()
        thread.join(30)
    assert not thread.is_alive()
    err = box.get("error")
    assert isinstance(err, DriverError) and err.option == option, err
    assert ("sent 16 atoms but the template has 15" if case == "atom_count" else "zero volume") in str(err)


def test_parse_address():
    assert parse_address("localhost:31415") == ("localhost", 31415)
    assert parse_address("10.0.0.2:1") == ("10.0.0.2", 1)
    for bad in ("localhost", "localhost:", ":31415", "host:0", "host:65536", "host:x"):
        with pytest.raises(ValueError):
            parse_address(bad)


# ------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def files(pot, tmp_path_factory):
    d = tmp_path_factory.mktemp("ipi")
    model = d / "cuau.mlpjax"
    pot.save(model)
    write(d / "cuau.extxyz", _cuau())
    write(d / "water.xyz", Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]))
    return d


def test_cli_serves_an_md_server_and_writes_its_log(files, pot, direct):
    """``mlpjax serve-ipi`` as a user runs it: a subprocess answering the server's force calls."""
    template = _cuau()
    geometries = _geometries(template, 2)
    name = _socket_name()
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "mlpjax", "serve-ipi", str(files / "cuau.mlpjax"), "--unix", name,
           "--structure", str(files / "cuau.extxyz"), "--float64", "--max-steps", "2", "--log", str(files / "drv.csv")]
    results = []
    with SocketIOCalculator(unixsocket=name, timeout=120.0) as calc:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            for a in geometries:
                a = a.copy()
                a.calc = calc
                results.append({"energy": a.get_potential_energy(), "forces": a.get_forces().copy(),
                                "stress": a.get_stress().copy()})
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert "answered 2 force calls" in out and "--max-steps reached" in out, out
    dev = _deviations(results, geometries, direct)
    print(f"CLI: max |ΔE| {dev['energy']:.1e} eV, |ΔF| {dev['forces']:.1e} eV/Å, |Δσ| {dev['stress']:.1e} eV/Å³")
    for key, tol in TOL.items():  # another process, default XLA flags: still float64 round-off only
        assert dev[key] <= 100 * tol, (key, dev)
    rows = list(csv.DictReader(open(files / "drv.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2]
    np.testing.assert_allclose([float(r["energy_eV"]) for r in rows], [r["energy"] for r in results], atol=1e-8)
    pressure = [-r["stress"][:3].sum() / 3 / GPa for r in results]  # the potential part, -tr σ / 3
    np.testing.assert_allclose([float(r["pressure_GPa"]) for r in rows], pressure, atol=1e-5)


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing_model", "no_port", "bad_port", "port_range", "unix_path", "no_socket",
                                  "unknown_element", "no_server"])
def test_cli_errors_are_one_line_with_status_2(case, files, capsys):
    model, structure = files / "cuau.mlpjax", files / "cuau.extxyz"
    argv, needles = {
        "missing_model": ([files / "nosuch.mlpjax", "--unix", "x", "--structure", structure], ["argument model", "nosuch.mlpjax"]),
        "no_port": ([model, "--address", "localhost", "--structure", structure], ["argument --address", "HOST:PORT"]),
        "bad_port": ([model, "--address", "localhost:abc", "--structure", structure], ["argument --address", "'abc'"]),
        "port_range": ([model, "--address", "localhost:70000", "--structure", structure], ["argument --address", "65535"]),
        "unix_path": ([model, "--unix", "some/dir", "--structure", structure], ["argument --unix", "/tmp/ipi_NAME"]),
        "no_socket": ([model, "--structure", structure], ["--address", "--unix", "required"]),
        "unknown_element": ([model, "--unix", "x", "--structure", files / "water.xyz"],
                            ["water.xyz", "H, O", "knows only Cu, Au"]),
        "no_server": ([model, "--unix", _socket_name(), "--structure", structure, "--wait", "0.3"],
                      ["no i-PI server at unix socket /tmp/ipi_mlpjax_test_", "--unix"]),
    }[case]
    code, err = _run(["serve-ipi"] + argv, capsys)
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlpjax serve-ipi: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)
