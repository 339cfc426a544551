"""`mlpjax train` sizes: no config = the reference implementation's defaults; --preset; a time
limit shorter than one epoch of the default MACE."""

import os

import pytest

import mlpjax
import mlpjax.training as train_mod
from mlpjax import presets
from mlpjax.cli import main
from mlpjax.config import TrainConfig
from mlpjax.models.mace import MACEConfig

from conftest import emt_cu_frames


@pytest.fixture(scope="module")
def cu_file(tmp_path_factory):
    """Twelve 32-atom fcc Cu frames labelled by EMT (conftest.emt_cu_frames, about a second)."""
    from ase.io import write

    path = tmp_path_factory.mktemp("defaults") / "cu32.xyz"
    write(path, emt_cu_frames(12, 0))
    return path


@pytest.fixture
def captured(monkeypatch):
    """Replace the training run by a recorder of the config the CLI built (no compilation)."""
    seen = {}

    def record(config, *args, **kwargs):
        seen["config"] = config
        raise SystemExit(0)

    monkeypatch.setattr(train_mod, "train", record)
    return seen


def _run(argv):
    try:
        return main(argv)
    except SystemExit as e:  # the recorder's exit
        return e.code


@pytest.mark.parametrize("model", ["mace", "nequip", "schnet", "painn", "ani"])
def test_no_config_means_the_reference_defaults(model, cu_file, tmp_path, captured):
    assert _run(["train", "--model", model, "--train", str(cu_file), "--output", str(tmp_path), "--quiet"]) == 0
    cfg: TrainConfig = captured["config"]
    expected = TrainConfig(**presets.preset(model, "default"))
    assert cfg.model_config_obj() == expected.model_config_obj() == mlpjax.models.make_config(model, {})
    assert cfg.cutoff == expected.cutoff


def test_default_mace_is_mace_torch_cli_size(cu_file, tmp_path, captured):
    """mace-torch's `mace_run_train` defaults: hidden irreps 128x0e + 128x1o, two interactions, ν = 3."""
    _run(["train", "--model", "mace", "--train", str(cu_file), "--output", str(tmp_path), "--quiet"])
    mc = captured["config"].model_config_obj()
    assert mc == MACEConfig()
    assert (mc.features, mc.hidden_l_max, mc.interactions, mc.correlation) == (128, 1, 2, 3)


def test_preset_small_sets_the_measured_setting(cu_file, tmp_path, captured):
    _run(["train", "--model", "mace", "--preset", "small", "--train", str(cu_file), "--output", str(tmp_path), "--quiet",
          "--epochs", "7"])
    cfg = captured["config"]
    want = presets.preset("mace", "small")
    assert cfg.model_config_obj() == mlpjax.models.make_config("mace", want["model_config"])
    assert cfg.batch_size == want["batch_size"] and cfg.learning_rate == want["learning_rate"]
    assert cfg.epochs == 7  # flags override the preset


@pytest.mark.parametrize(
    "extra, named",
    [(["--model", "schnet", "--preset", "rmd17"], "--preset rmd17: schnet has the presets"),
     (["--preset", "small", "--config", "CONFIG"], "--preset and --config")],
)
def test_preset_errors_are_one_line(extra, named, cu_file, tmp_path, capsys):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("epochs: 1\n")
    extra = [str(cfg_file) if x == "CONFIG" else x for x in extra]
    rc = main(["train", "--train", str(cu_file), "--output", str(tmp_path / "o"), "--quiet", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and named in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_default_mace_stops_inside_its_first_epoch_at_the_time_limit(cu_file, tmp_path, capsys):
    """The real thing: the reference-size MACE (compilation alone ≫ 0.3 min on a CPU) with one
    structure per step; the run stops inside epoch 1 and writes a 128-channel model."""
    out = tmp_path / "mace"
    rc = main(["train", "--model", "mace", "--train", str(cu_file), "--output", str(out), "--batch-size", "1",
               "--max-time", "0.3", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0 and "stopped by the time limit" in text and "into epoch 1" in text
    pot = mlpjax.load(out / "model.mlpjax")
    assert pot.model_config == MACEConfig() and pot.metadata["stop_reason"] == "max_time"
    assert os.path.getsize(out / "checkpoint.ckpt") > 0
