"""Named training presets per model, so a user can choose a model size by budget.

Every model has

* ``default``: the reference implementation's defaults (mace-torch, nequip, schnetpack,
  TorchANI, the DimeNet++ reference code; each config dataclass's docstring names its source),
  i.e. an empty ``model_config``; the training config's cutoff unless the reference's differs
  (ANI-1x: 5.2 Å). For MACE and NequIP this is a GPU-class size.
* ``small``: the CPU-sized setting trained for ≤ 60 minutes on ONE core on rMD17 ethanol
  (``experiments/configs/<model>_rmd17cpu.yaml``), whose test accuracy is in README.md and
  benchmarks/RESULTS.md and whose time per epoch ``benchmarks/preset_cost.py`` measures.
  Sized for small molecules: the triplet/angular capacities (``max_neighbors``) of DimeNet++,
  BPNN and ANI hold 12 neighbours within the cutoff, so dense systems need a larger
  ``max_neighbors`` (an overflow makes the energy NaN and training stops, never a silent drop).
  The classical pair potentials (``morse``, ``lj``, ``morse_spline``: a few parameters per species pair, no size
  to choose) have only ``default``.

and MACE and NequIP also

* ``rmd17``: the published rMD17 setting (``experiments/configs/<model>_rmd17.yaml``; GPU).

A preset is a dict of :class:`mlpjax.config.TrainConfig` fields: ``model``, ``model_config``
and the optimisation/loss fields that define the measured setting (:data:`PRESET_FIELDS`). It
leaves out what belongs to the data and the budget (units, splits, seeds, ``epochs``,
``max_time_minutes``, ``patience``, ``stress_weight``), which the user's config or flags set::

    from mlpjax import presets
    from mlpjax.config import config_from_dict
    cfg = config_from_dict({**presets.preset("mace", "small"), "epochs": 200})

One source of truth: the dicts below. The YAML files named by :func:`source` repeat them for
``mlpjax train --config`` and ``benchmarks/accuracy.py``, and ``tests/test_presets.py`` checks
that every preset field, and the resolved model config, agrees with its file.
"""

from __future__ import annotations

import copy

from mlpjax import models

# TrainConfig fields a preset may set (the model and how it is optimised); the rest are data/budget.
PRESET_FIELDS = (
    "model", "model_config", "cutoff", "batch_size", "learning_rate", "optimizer", "schedule", "warmup_epochs",
    "final_lr_fraction", "plateau_factor", "plateau_patience", "clip_grad_norm", "ema_decay", "energy_weight",
    "forces_weight", "dtype",
)

# Shared optimiser settings of the rMD17 CPU runs (benchmarks/accuracy.py, issue 3).
_PLATEAU_CPU = dict(optimizer="adam", schedule="plateau", plateau_factor=0.7, plateau_patience=5, clip_grad_norm=10.0,
                    ema_decay=0.99, energy_weight=1.0, forces_weight=1.0, dtype="float32")
_COSINE_CPU = dict(optimizer="adam", schedule="warmup_cosine", warmup_epochs=10.0, final_lr_fraction=0.01,
                   clip_grad_norm=10.0, ema_decay=0.99, energy_weight=1.0, forces_weight=1.0, dtype="float32")

# model -> preset name -> (fields, source YAML relative to the repository or None, one-line summary)
_PRESETS: dict[str, dict[str, tuple[dict, str | None, str]]] = {
    "mace": {
        "small": (dict(model_config=dict(features=32, interactions=2, l_max=2, hidden_l_max=1, correlation=3, num_bessel=8,
                                         envelope_p=5, radial_hidden=[64, 64, 64], readout_hidden=16),
                       cutoff=5.0, batch_size=5, learning_rate=0.01, **_PLATEAU_CPU),
                  "experiments/configs/mace_rmd17cpu.yaml", "32x0e + 32x1o, l ≤ 2, ν = 3, 2 layers"),
        "rmd17": (dict(model_config=dict(features=256, interactions=2, l_max=3, hidden_l_max=2, correlation=3, num_bessel=8,
                                         envelope_p=5, radial_hidden=[64, 64, 64], readout_hidden=16),
                       cutoff=5.0, batch_size=5, learning_rate=0.01, optimizer="adam", schedule="plateau", plateau_factor=0.8,
                       plateau_patience=50, clip_grad_norm=10.0, ema_decay=0.99, energy_weight=1.0, forces_weight=1000.0,
                       dtype="float64"),
                  "experiments/configs/mace_rmd17.yaml", "published rMD17: 256x0e + 256x1o + 256x2e, l ≤ 3 (GPU)"),
    },
    "nequip": {
        "small": (dict(model_config=dict(features=32, l_max=2, num_layers=3, full_parity=False, num_bessel=8, envelope_p=6,
                                         radial_hidden=64, radial_layers=2),
                       cutoff=5.0, batch_size=5, learning_rate=0.01, **_PLATEAU_CPU),
                  "experiments/configs/nequip_rmd17cpu.yaml", "32 channels, l ≤ 2, natural parity, 3 layers"),
        "rmd17": (dict(model_config=dict(features=64, l_max=3, num_layers=5, full_parity=True, num_bessel=8, envelope_p=6,
                                         radial_hidden=64, radial_layers=2),
                       cutoff=5.0, batch_size=5, learning_rate=0.01, optimizer="adam", schedule="plateau", plateau_factor=0.8,
                       plateau_patience=50, clip_grad_norm=None, ema_decay=0.99, energy_weight=1.0, forces_weight=12.0,
                       dtype="float32"),
                  "experiments/configs/nequip_rmd17.yaml", "published rMD17: 64 channels, l ≤ 3, both parities, 5 layers (GPU)"),
    },
    "schnet": {
        "small": (dict(model_config=dict(features=128, interactions=4, num_rbf=50, filter_hidden=128, cutoff_fn="cosine"),
                       cutoff=5.0, batch_size=5, learning_rate=0.001, **_PLATEAU_CPU),
                  "experiments/configs/schnet_rmd17cpu.yaml", "128 features, 4 interactions, 50 Gaussians"),
    },
    "painn": {
        "small": (dict(model_config=dict(features=128, interactions=3, num_rbf=20, cutoff_fn="cosine", activation="silu"),
                       cutoff=5.0, batch_size=5, learning_rate=0.0005, **_PLATEAU_CPU),
                  "experiments/configs/painn_rmd17cpu.yaml", "128 features, 3 interactions (= the default size)"),
    },
    "dimenet": {
        "small": (dict(model_config=dict(hidden=64, out_emb=128, int_emb=32, basis_emb=8, num_blocks=4, num_spherical=7,
                                         num_radial=6, envelope_exponent=5, num_before_skip=1, num_after_skip=2,
                                         num_output_layers=3, max_neighbors=12),
                       cutoff=5.0, batch_size=5, learning_rate=0.001, **_PLATEAU_CPU),
                  "experiments/configs/dimenet_rmd17cpu.yaml", "half width (64 / 128 / 32 / 8), 4 blocks, 12 triplet slots"),
    },
    "bpnn": {
        "small": (dict(model_config=dict(hidden=[64, 64], activation="tanh", n_radial=16, radial_scheme="shifted", r_min=0.8,
                                         zetas=[1.0, 2.0, 4.0, 16.0], n_angular_eta=3, angular="g5", max_neighbors=12,
                                         feature_std_floor=1.0),
                       cutoff=5.0, batch_size=8, learning_rate=0.001, **_COSINE_CPU),
                  "experiments/configs/bpnn_rmd17cpu.yaml", "16 G2 + 24 G5 per element (pair), 64-64 tanh"),
    },
    "ani": {
        "small": (dict(model_config=dict(hidden=[96, 64, 32], activation="celu:1.0", angular_cutoff=5.2, n_angular_shifts=6,
                                         max_neighbors=12, feature_std_floor=1.0),
                       cutoff=5.2, batch_size=8, learning_rate=0.001, **_COSINE_CPU),
                  "experiments/configs/ani_rmd17cpu.yaml", "AEV to 5.2 Å (6 × 8 angular), 96-64-32 CELU(1)"),
    },
    "gap": {
        "small": (dict(model_config=dict(n_max=8, l_max=4, sigma=0.3, zeta=4, n_sparse=2000, selection="cur",
                                         energy_sigma=0.0005, force_sigma=0.01, delta=1.0),
                       cutoff=5.0, batch_size=8, dtype="float64"),
                  "experiments/configs/gap_rmd17cpu.yaml",
                  "SOAP 8/4, σ 0.3 Å, ζ 4, up to 2,000 sparse points per element (more than the default's 500)"),
    },
}

# The reference implementations' cutoffs where they differ from TrainConfig's default (5 Å).
_DEFAULT_CUTOFF = {"ani": 5.2}  # TorchANI ANI-1x radial cutoff R_cr
_DEFAULT_SUMMARY = {
    "mace": "mace-torch CLI defaults: 128x0e + 128x1o, l ≤ 3, ν = 3, 2 layers",
    "nequip": "nequip NequIPGNNModel defaults: 32 channels, l ≤ 1, both parities, 4 layers",
    "schnet": "schnetpack defaults: 128 features, 6 interactions, 20 Gaussians",
    "painn": "schnetpack defaults: 128 features, 3 interactions, 20 radial functions",
    "dimenet": "DimeNet++ reference (config_pp.yaml): 128 / 256 / 64 / 8, 4 blocks",
    "bpnn": "mlpjax's own (RuNNer/n2p2 have no defaults): ACSF grid, 64-64 tanh",
    "ani": "TorchANI ANI-1x: AEV 5.2 / 3.5 Å, 160-128-96 CELU(0.1)",
    "gap": "SOAP 8/4, σ 0.5 Å, ζ 4, 500 sparse points per element (QUIP has no defaults)",
    "morse": "Morse pair potential, Girifalco-Weizer Cu (D 0.3429 eV, α 1.3588 1/Å, r0 2.866 Å) for every pair",
    "lj": "Lennard-Jones pair potential, Halicioglu-Pound Cu (ε 0.4093 eV, σ 2.338 Å) for every pair",
    "morse_spline": "Girifalco-Weizer Cu Morse plus a 12-knot cubic B-spline correction (0 at the start) for every pair",
}


def _check_model(model: str) -> None:
    if model not in models.available():
        raise ValueError(f"unknown model {model!r}; available: {', '.join(models.available())}")


def names(model: str) -> tuple[str, ...]:
    """The preset names of ``model``: ``("default", "small")`` plus ``"rmd17"`` where a published-size one exists."""
    _check_model(model)
    return ("default",) + tuple(_PRESETS.get(model, {}))


def _entry(model: str, name: str) -> tuple[dict, str | None, str]:
    _check_model(model)
    if name == "default":
        fields = {"model_config": {}}
        if model in _DEFAULT_CUTOFF:
            fields["cutoff"] = _DEFAULT_CUTOFF[model]
        return fields, None, _DEFAULT_SUMMARY.get(model, "the config dataclass's defaults")
    try:
        return _PRESETS[model][name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r} for {model}; choose from {', '.join(names(model))}") from None


def preset(model: str, name: str) -> dict:
    """The preset as a dict of TrainConfig fields (a fresh copy; includes ``model``).

    Raises ValueError naming the choices for an unknown model or preset.
    """
    fields, _, _ = _entry(model, name)
    return {"model": model, **copy.deepcopy(fields)}


def source(model: str, name: str) -> str | None:
    """The YAML file (relative to the repository root) that repeats this preset, or None."""
    return _entry(model, name)[1]


def describe(model: str, name: str) -> str:
    """A one-line summary of the preset's model size."""
    return _entry(model, name)[2]
