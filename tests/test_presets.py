"""Model defaults = the reference implementations' defaults; named presets build valid configs
and agree with the experiment YAML files that repeat them (mlpjax.presets is the source of truth)."""

from __future__ import annotations

import dataclasses
import os

import pytest

from mlpjax import models, presets
from mlpjax.config import TrainConfig, config_from_dict, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL = [(m, n) for m in models.available() for n in presets.names(m)]


def test_mace_default_is_mace_torch_cli_default():
    """mace-torch ``mace_run_train`` with no size flags: hidden irreps 128x0e + 128x1o (num_channels 128,
    max_L 1), max_ell 3, correlation 3, 2 interactions, 8 Bessel, 5 cutoff basis, radial MLP
    [64, 64, 64], MLP_irreps 16x0e, r_max 5 Å."""
    cfg = models.make_config("mace", {})
    assert (cfg.features, cfg.hidden_l_max) == (128, 1)
    assert (cfg.l_max, cfg.correlation, cfg.interactions) == (3, 3, 2)
    assert (cfg.num_bessel, cfg.envelope_p, cfg.radial_hidden, cfg.readout_hidden) == (8, 5, (64, 64, 64), 16)
    # what `mlpjax train --model mace` with no config builds
    train = TrainConfig(model="mace")
    assert train.model_config_obj() == cfg and train.cutoff == 5.0
    from mlpjax.models.mace import natural_irreps

    assert str(cfg.features * natural_irreps(cfg.hidden_l_max)) == "128x0e+128x1o"


def test_reference_defaults_of_the_other_models():
    nequip = models.make_config("nequip", {})  # nequip NequIPGNNModel
    assert (nequip.features, nequip.l_max, nequip.num_layers, nequip.full_parity) == (32, 1, 4, True)
    assert (nequip.num_bessel, nequip.envelope_p, nequip.radial_hidden, nequip.radial_layers) == (8, 6, 64, 2)
    assert str(nequip.hidden_irreps()) == "32x0e+32x0o+32x1e+32x1o"
    schnet = models.make_config("schnet", {})  # schnetpack representation/schnet.yaml
    assert (schnet.features, schnet.interactions, schnet.num_rbf, schnet.filter_hidden, schnet.cutoff_fn) == (
        128, 6, 20, 128, "cosine")
    painn = models.make_config("painn", {})  # schnetpack representation/painn.yaml
    assert (painn.features, painn.interactions, painn.num_rbf, painn.cutoff_fn, painn.activation) == (
        128, 3, 20, "cosine", "silu")
    dimenet = models.make_config("dimenet", {})  # gasteigerjo/dimenet config_pp.yaml
    assert (dimenet.hidden, dimenet.out_emb, dimenet.int_emb, dimenet.basis_emb, dimenet.num_blocks) == (128, 256, 64, 8, 4)
    assert (dimenet.num_spherical, dimenet.num_radial, dimenet.envelope_exponent) == (7, 6, 5)
    assert (dimenet.num_before_skip, dimenet.num_after_skip, dimenet.num_output_layers) == (1, 2, 3)
    ani = models.make_config("ani", {})  # TorchANI ANI-1x
    assert (ani.hidden, ani.activation, ani.angular_cutoff) == ((160, 128, 96), "celu", 3.5)
    assert (ani.radial_eta, ani.angular_eta, ani.angular_zeta) == (16.0, 8.0, 32.0)
    assert (ani.n_radial_shifts, ani.n_angular_shifts, ani.n_sections) == (16, 4, 8)
    assert presets.preset("ani", "default")["cutoff"] == 5.2  # ANI-1x R_cr


@pytest.mark.parametrize("model", models.available())
def test_every_model_has_default_and_small(model):
    from mlpjax.models.pair import PAIR_MODELS

    if model in PAIR_MODELS:  # a few parameters per species pair: no size to choose
        assert presets.names(model) == ("default",)
    else:
        assert presets.names(model)[:2] == ("default", "small")
    assert presets.preset(model, "default") == {"model": model, "model_config": {}, **(
        {"cutoff": 5.2} if model == "ani" else {})}


@pytest.mark.parametrize("model,name", ALL)
def test_presets_build_valid_configs(model, name):
    fields = presets.preset(model, name)
    assert set(fields) <= set(presets.PRESET_FIELDS)
    cfg = config_from_dict(fields)  # validates the model_config through make_config
    assert cfg.model == model
    assert isinstance(cfg.model_config_obj(), models.config_class(model))
    assert presets.describe(model, name)
    fields["model_config"]["x"] = 1  # a copy: changing it leaves the preset alone
    assert "x" not in presets.preset(model, name)["model_config"]


@pytest.mark.parametrize("model,name", [(m, n) for m, n in ALL if presets.source(m, n)])
def test_yaml_files_agree_with_presets(model, name):
    path = os.path.join(REPO, presets.source(model, name))
    from_yaml = load_config(path)
    from_preset = config_from_dict(presets.preset(model, name))
    # the file is fully explicit in the model options the preset names (so a default that
    # changes cannot change what the file means) and agrees on every preset field
    assert from_yaml.model_config == from_preset.model_config, path
    assert from_yaml.model_config_obj() == from_preset.model_config_obj(), path
    for field in presets.PRESET_FIELDS:
        assert getattr(from_yaml, field) == getattr(from_preset, field), (path, field)


def test_every_measured_yaml_is_a_preset():
    """Each experiments/configs/<model>_rmd17*.yaml is repeated by a preset (none drifts unchecked)."""
    configs = os.path.join(REPO, "experiments", "configs")
    sources = {presets.source(m, n) for m, n in ALL}
    for fname in sorted(os.listdir(configs)):
        if "_rmd17" in fname and fname.endswith(".yaml"):
            assert f"experiments/configs/{fname}" in sources, fname


def test_unknown_names_say_what_to_do():
    with pytest.raises(ValueError, match="default, small, rmd17"):
        presets.preset("mace", "huge")
    with pytest.raises(ValueError, match="available"):
        presets.names("nope")


def test_quickstart_schnet_is_unchanged():
    """The quickstart trains the same SchNet as before the defaults followed schnetpack."""
    cfg = load_config(os.path.join(REPO, "experiments", "configs", "quickstart_cu.yaml"))
    assert dataclasses.asdict(cfg.model_config_obj()) == {
        "features": 32, "interactions": 2, "num_rbf": 16, "filter_hidden": 32, "cutoff_fn": "cosine"}
    assert cfg.cutoff == 4.5
