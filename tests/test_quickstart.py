"""The README's main command, end to end (slow: ~6-8 minutes on 2 cores; run with -m slow)."""

import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
def test_quickstart_reaches_its_targets(tmp_path):
    sys.path.insert(0, os.path.join(HERE, "..", "experiments"))
    import quickstart

    rc = quickstart.main(["--output", str(tmp_path), "--nvt-ps", "2", "--nve-ps", "0.5", "--quiet"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert rc == 0 and summary["targets_met"]
    assert summary["test_metrics"]["energy_mae_meV_per_atom"] <= 2.0
    assert summary["test_metrics"]["force_mae_meV_per_A"] <= 50.0
    assert abs(summary["md"]["nvt_mean_T_K"] - 300.0) < 30.0
    assert abs(summary["md"]["nve_drift_meV_per_atom_per_ps"]) < 1.0
    assert abs(summary["analysis"]["coordination_number"] - 12.0) < 0.3
