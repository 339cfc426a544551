"""The command line, end to end on a tiny EMT Cu set (in-process, so compiled code is shared)."""

import csv
import json

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read as ase_read
from ase.io import write as ase_write

from mlpjax.cli import main

TINY = """\
model: schnet
model_config: {features: 8, interactions: 1, num_rbf: 8, filter_hidden: 8}
cutoff: 4.0
batch_size: 4
epochs: 2
learning_rate: 0.003
warmup_epochs: 1
valid_fraction: 0.2
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    data = d / "cu.xyz"
    rc = main(["data", "emt-cu", "--output", str(data), "--md-frames", "2", "--rattled", "4", "--strained", "4", "--liquid-frames", "0"])
    assert rc == 0
    (d / "tiny.yaml").write_text(TINY)
    return d


@pytest.fixture(scope="module")
def trained(workdir):
    out = workdir / "run"
    rc = main(["train", "--train", str(workdir / "cu.xyz"), "--output", str(out), "--config", str(workdir / "tiny.yaml"), "--quiet", "--seed", "1"])
    assert rc == 0
    return out


def test_data_command_writes_labelled_frames(workdir):
    frames = ase_read(workdir / "cu.xyz", ":")
    assert len(frames) == 3 * 2 * 2 + 4 + 4  # (T × cell size × frames) + rattled + strained
    assert {len(a) for a in frames} == {32, 108}
    assert all(np.isfinite(a.get_forces()).all() for a in frames)


def test_train_writes_model_log_and_parity(trained):
    for name in ("model.mlpjax", "log.csv", "parity.png", "checkpoint.ckpt", "config.yaml"):
        assert (trained / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(trained / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    import mlpjax

    pot = mlpjax.load(trained / "model.mlpjax")
    assert pot.metadata["train_config"]["seed"] == 1  # the flag overrode the YAML default
    assert pot.cutoff == 4.0 and pot.species == (29,)


def test_evaluate_json_matches_python_api(trained, workdir, capsys):
    out_json = workdir / "metrics.json"
    rc = main(["evaluate", str(trained / "model.mlpjax"), str(workdir / "cu.xyz"), "--json", str(out_json)])
    assert rc == 0
    got = json.loads(out_json.read_text())
    for key in ("energy_mae_meV_per_atom", "energy_rmse_meV_per_atom", "force_mae_meV_per_A", "force_rmse_meV_per_A", "energy_r2", "n_structures"):
        assert key in got, key
    assert got["n_structures"] == 20
    import mlpjax
    from mlpjax import data
    from mlpjax.validate import metrics

    ref = metrics(mlpjax.load(trained / "model.mlpjax"), data.read(workdir / "cu.xyz"))
    assert got["force_mae_meV_per_A"] == pytest.approx(ref["force_mae_meV_per_A"], rel=1e-6)
    assert "force_mae_meV_per_A" in capsys.readouterr().out


def test_md_nvt_with_supercell(trained, workdir):
    start = workdir / "cu_cubic.xyz"
    ase_write(start, bulk("Cu", "fcc", a=3.59, cubic=True))
    traj, log = workdir / "md.extxyz", workdir / "thermo.csv"
    rc = main([
        "md", str(trained / "model.mlpjax"), str(start), "--ensemble", "nvt", "--temperature", "300",
        "--timestep", "2", "--steps", "40", "--supercell", "3", "3", "3",
        "--output", str(traj), "--log", str(log), "--traj-every", "20", "--log-every", "10", "--quiet",
    ])
    assert rc == 0
    frames = ase_read(traj, ":")
    assert len(frames) >= 2 and all(len(a) == 108 for a in frames)
    rows = list(csv.DictReader(open(log)))
    assert len(rows) >= 4 and all(np.isfinite(float(r["T_K"])) for r in rows)


def test_md_small_cell_runs_through_its_periodic_images(trained, workdir, capsys):
    """A 4-atom cell narrower than 2 × (cutoff + skin) is simulated exactly via the multi-image
    path (no silent minimum-image error); its energy per atom equals the 3×3×3 supercell's."""
    start = workdir / "cu_small.xyz"
    ase_write(start, bulk("Cu", "fcc", a=3.59, cubic=True))  # 3.59 Å box < 2 × (cutoff + skin)
    assert main(["md", str(trained / "model.mlpjax"), str(start), "--steps", "10", "--quiet",
                 "--log", str(workdir / "small.csv")]) == 0
    assert "supercell of its images" in capsys.readouterr().out
    big = workdir / "cu_big.xyz"
    ase_write(big, bulk("Cu", "fcc", a=3.59, cubic=True).repeat(3))
    assert main(["md", str(trained / "model.mlpjax"), str(big), "--steps", "10", "--quiet",
                 "--temperature", "0", "--log", str(workdir / "big.csv")]) == 0
    e_small = float((workdir / "small.csv").read_text().splitlines()[1].split(",")[2]) / 4
    e_big = float((workdir / "big.csv").read_text().splitlines()[1].split(",")[2]) / 108
    assert abs(e_small - e_big) < 1e-5


def test_bad_training_file_names_file_and_frame(workdir, capsys):
    frames = ase_read(workdir / "cu.xyz", ":4")
    frames[2].calc.results["energy"] = float("nan")
    bad = workdir / "bad.xyz"
    ase_write(bad, frames)
    rc = main(["train", "--train", str(bad), "--output", str(workdir / "badrun"), "--config", str(workdir / "tiny.yaml"), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "bad.xyz" in err and "frame 2" in err


def test_evaluate_corrupt_model_is_a_clear_error(trained, workdir, capsys):
    broken = workdir / "broken.mlpjax"
    data = (trained / "model.mlpjax").read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    assert main(["evaluate", str(broken), str(workdir / "cu.xyz")]) == 2
    assert "broken.mlpjax" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", ["train", "evaluate", "md", "data"])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    assert "usage: mlpjax " + cmd in capsys.readouterr().out
