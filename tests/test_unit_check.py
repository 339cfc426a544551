"""Unit sanity: data in the wrong unit are caught, data in the right one pass silently."""

import dataclasses
import os
import warnings

import pytest
from ase.io import write as ase_write

from mlpjax import data, units
from mlpjax.cli import main
from mlpjax.config import TrainConfig
from mlpjax.training import check_data_units
from mlpjax.data.unit_check import check_units, energy_force_slope

from conftest import emt_cu_frames

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(scope="module")
def cu(tmp_path_factory):
    """EMT Cu (conftest.emt_cu_frames): a 32-atom trajectory, frames 10 fs apart, and rattled cells."""
    path = tmp_path_factory.mktemp("cu") / "cu_emt.xyz"
    ase_write(path, emt_cu_frames(30, 8))
    return data.read(path)


def _scaled(configs, energy=1.0, forces=1.0):
    return [dataclasses.replace(c, energy=c.energy * energy, forces=c.forces * forces) for c in configs]


@pytest.fixture(scope="module")
def files(cu, tmp_path_factory):
    d = tmp_path_factory.mktemp("units")
    good, bad = d / "good.xyz", d / "mev_as_ev.xyz"
    data.write_extxyz(good, cu)
    data.write_extxyz(bad, _scaled(cu, energy=1000.0))  # meV written as eV
    return good, bad


def test_correct_data_pass_silently(cu):
    fit = energy_force_slope(cu)
    assert fit.n_pairs >= 5 and fit.r2 > 0.99 and abs(fit.slope - 1.0) < 0.1  # trapezoid rule over ~0.17 Å steps
    assert check_units(cu) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        assert check_data_units(cu, TrainConfig()) == []


def test_mev_energies_warn_and_strict_fails(files):
    good, bad = files
    configs = data.read(bad)
    with pytest.warns(UserWarning, match="meV written as eV") as rec:
        problems = check_data_units(configs, TrainConfig())
    assert str(bad) in str(rec[0].message)
    assert {p.check for p in problems} >= {"energy_vs_force", "energy_spread"}
    slope = next(p for p in problems if p.check == "energy_vs_force").value
    assert slope == pytest.approx(1000.0, rel=0.1)
    with pytest.raises(data.DataError, match="unit check failed.*meV written as eV"):
        check_data_units(configs, TrainConfig(), strict=True)


@pytest.mark.parametrize(
    "energy, forces, check, named",
    [
        (1 / units.HARTREE_EV, units.BOHR_ANGSTROM / units.HARTREE_EV, "energy_vs_force", "Hartree and forces in Hartree/bohr"),
        (1.0, 1000.0, "energy_vs_force", "forces in meV/Å"),
        (1 / units.KCAL_PER_MOL_EV, 1.0, "energy_vs_force", "energies in kcal/mol"),
        (1000.0, 1000.0, "force_magnitude", "meV/Å"),
    ],
)
def test_common_mix_ups_are_named(cu, energy, forces, check, named):
    problems = check_units(_scaled(cu, energy, forces))
    assert any(p.check == check and named in p.message for p in problems), [p.message for p in problems]


def test_right_units_declared_pass(cu, tmp_path):
    """Hartree and Hartree/bohr data (positions in Å) are caught when read as eV; kcal/mol data read with
    units='kcal/mol' are converted and pass."""
    path = tmp_path / "hartree.xyz"
    data.write_extxyz(path, _scaled(cu, 1 / units.HARTREE_EV, units.BOHR_ANGSTROM / units.HARTREE_EV))
    assert [p.check for p in check_units(data.read(path, units="eV"))] == ["energy_vs_force"]
    path = tmp_path / "kcal.xyz"
    data.write_extxyz(path, _scaled(cu, 1 / units.KCAL_PER_MOL_EV, 1 / units.KCAL_PER_MOL_EV))
    assert check_units(data.read(path, units="eV")) != []
    assert check_units(data.read(path, units="kcal/mol")) == []


def test_cli_strict_exits_2_and_default_warns(files, tmp_path, capsys):
    good, bad = files
    args = ["train", "--train", str(bad), "--output", str(tmp_path / "run"), "--model", "schnet", "--epochs", "0", "--quiet"]
    rc = main(args + ["--strict"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "unit check failed" in err and "meV written as eV" in err and str(bad) in err
    assert not os.path.exists(tmp_path / "run" / "model.mlpjax")


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="../shared/data not present")
@pytest.mark.parametrize("name", ["rmd17-ethanol/train.xyz", "mlearn/Si_training.xyz", "mlearn/Mo_training.xyz"])
def test_real_dft_data_pass(name):
    configs = data.read(os.path.join(SHARED, name))
    assert check_units(configs) == []
    assert check_units(_scaled(configs, energy=1000.0)) != []


def test_cli_evaluate_warns_about_units(files, tmp_path, capsys):
    """evaluate of a file in the wrong unit prints a one-line warning (the metrics would be meaningless)."""
    good, bad = files
    out = tmp_path / "run"
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text("model: schnet\nmodel_config: {features: 8, interactions: 1, num_rbf: 8, filter_hidden: 8}\n"
                    "cutoff: 4.0\nepochs: 0\n")
    assert main(["train", "--train", str(good), "--output", str(out), "--config", str(tiny), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out / "model.mlpjax"), str(bad)]) == 0
    err = capsys.readouterr().err
    assert "mlpjax evaluate: warning:" in err and "meV written as eV" in err
    assert main(["evaluate", str(out / "model.mlpjax"), str(good)]) == 0
    assert "warning" not in capsys.readouterr().err
