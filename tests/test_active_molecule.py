"""experiments/active_molecule.py: the active-learning loop on ethanol with tblite GFN2-xTB as the oracle.

The end-to-end test needs the xtb extra (``pip install "mlpjax[xtb]"``) and skips without it; the
missing-extra path is tested everywhere.
"""

import importlib
import json
import math
import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
EXPERIMENTS = os.path.join(HERE, "..", "experiments")


def _script():
    if EXPERIMENTS not in sys.path:
        sys.path.insert(0, EXPERIMENTS)
    return importlib.import_module("active_molecule")


@pytest.mark.parametrize("oracle,pip", [("xtb", 'pip install "mlpjax[xtb]"'), ("pyscf", 'pip install "mlpjax[pyscf]"')])
def test_missing_extra_exits_2_with_the_install_hint(oracle, pip, monkeypatch, capsys, tmp_path):
    mod = _script()
    monkeypatch.setattr(mod, "_has_module", lambda name: False)
    rc = mod.main(["--quick", "--oracle", oracle, "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and pip in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "run").exists()  # nothing started


def test_quick_run_end_to_end(tmp_path, capsys):
    pytest.importorskip("tblite")
    mod = _script()
    out = tmp_path / "out"
    # smaller still than --quick: one temperature pair, 6 + 4 + 6 oracle frames, a 2 x 8-feature ensemble
    rc = mod.main(["--quick", "--output", str(out), "--epochs", "3", "--retrain-epochs", "2", "--max-selected", "3",
                   "--explore-steps", "40", "--quiet"])
    stdout = capsys.readouterr().out
    assert rc == 0
    result = json.loads((out / "result.json").read_text())
    for key in ("labels", "final", "oracle", "wall_s", "rows", "n_test", "stop_reason", "test_baselines"):
        assert key in result
    assert result["oracle"] == "xtb:GFN2-xTB"
    rows = result["rows"]
    assert len(rows) == 2  # model 0 and model 1 (one loop iteration)
    assert [r["iteration"] for r in rows] == [0, 1]
    assert rows[1]["n_labels"] > rows[0]["n_labels"]
    lab = result["labels"]
    assert lab["loop"] == rows[0]["n_new_labels"] > 0 and lab["total"] == lab["initial"] + lab["loop"]
    for key in ("test_energy_mae_meV_atom", "test_force_mae_meV_A", "valid_force_mae_meV_A"):
        assert math.isfinite(result["final"][key]) and result["final"][key] > 0
    assert "labels used:" in stdout and "final test error" in stdout and "xtb:GFN2-xTB" in stdout
    # the test set: MD frames labelled by the oracle (xTB total energies of ethanol are about -310 eV)
    import ase.io

    test = ase.io.read(result["data"]["test"], index=":")
    assert len(test) == result["n_test"] > 0
    for a in test:
        assert a.info["oracle"] == "xtb:GFN2-xTB" and not a.pbc.any()
        assert a.get_potential_energy() < -100.0
        f = a.get_forces()
        assert f.shape == (9, 3) and np.all(np.isfinite(f)) and np.abs(f).max() > 0
    # a rerun reuses the data and the finished loop
    rc = mod.main(["--quick", "--output", str(out), "--epochs", "3", "--retrain-epochs", "2", "--max-selected", "3",
                   "--explore-steps", "40", "--quiet"])
    again = json.loads((out / "result.json").read_text())
    assert rc == 0 and again["data_cached"] and again["rows"] == rows
