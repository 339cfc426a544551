"""``mlpjax train --devices N`` maps onto TrainConfig.devices like the other flags (the flag wins over the
YAML), and --train/--valid/--test onto train_file/valid_file/test_file (a config's train_file needs no --train)."""

from __future__ import annotations

import numpy as np
import pytest

from mlpjax import data
from mlpjax.cli import main

TINY = """\
model: schnet
model_config: {features: 8, interactions: 1, num_rbf: 8, filter_hidden: 8}
cutoff: 4.0
batch_size: 4
epochs: 1
devices: 2
"""


@pytest.fixture()
def run(tmp_path, monkeypatch):
    """(data file, YAML, captured train() calls) with mlpjax.training.train replaced by a recorder."""
    import sys

    import mlpjax.training

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from test_train import _cu_configs

    xyz = tmp_path / "cu.xyz"
    data.write_extxyz(xyz, _cu_configs(6))
    yaml = tmp_path / "tiny.yaml"
    yaml.write_text(TINY)
    calls = []

    def fake_train(cfg, train_set, valid_set=None, **kw):
        calls.append((cfg, train_set, valid_set))
        raise SystemExit(0)  # stop after the configuration is built: nothing is trained here

    monkeypatch.setattr(mlpjax.training, "train", fake_train)
    return xyz, yaml, calls


def test_devices_flag_maps_onto_the_config_field(run):
    xyz, yaml, calls = run
    for flag, expected in ((["--devices", "1"], 1), ([], 2), (["--devices", "0"], 0)):
        with pytest.raises(SystemExit):
            main(["train", "--train", str(xyz), "--output", str(xyz.parent / "o"), "--config", str(yaml), "--quiet", *flag])
        cfg, train_set, _ = calls[-1]
        assert cfg.devices == expected  # the flag overrides the YAML's devices: 2
        assert cfg.train_file == str(xyz) and len(train_set) == 6 and np.isfinite(train_set[0].energy)


def test_train_file_from_the_config_needs_no_train_flag(run):
    xyz, yaml, calls = run
    yaml.write_text(TINY + f"train_file: {xyz}\nvalid_file: {xyz}\n")
    with pytest.raises(SystemExit):
        main(["train", "--output", str(xyz.parent / "o"), "--config", str(yaml), "--quiet"])
    cfg, train_set, valid_set = calls[-1]
    assert cfg.train_file == cfg.valid_file == str(xyz) and len(train_set) == len(valid_set) == 6


def test_devices_errors_are_one_line(tmp_path, capsys):
    import jax

    import sys

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from test_train import _cu_configs

    xyz = tmp_path / "cu.xyz"
    data.write_extxyz(xyz, _cu_configs(4))
    assert main(["train", "--train", str(xyz), "--output", str(tmp_path / "o"), "--devices", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mlpjax train: error: argument --devices: must be an integer >= 0, got '-1' (see mlpjax train --help)"]
    (tmp_path / "t.yaml").write_text(TINY.replace("devices: 2\n", ""))
    n = jax.local_device_count()
    assert main(["train", "--train", str(xyz), "--output", str(tmp_path / "o"), "--config", str(tmp_path / "t.yaml"),
                 "--quiet", "--devices", str(n + 1)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mlpjax train: error: devices {n + 1} but this process has {n} ")
