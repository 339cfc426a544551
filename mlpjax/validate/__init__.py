"""Validation of a potential: error metrics and parity plots on a data set, and physical
validation (energy conservation, extrapolation, equation of state, elastic constants,
vibrations) against a reference calculator, gathered by :func:`validate_report`.

One idea per module:

* :mod:`~mlpjax.validate.metrics` — :func:`predict_dataset`, :func:`metrics`,
  :func:`parity_plot` (what training imports; no MD, no ASE dynamics);
* :mod:`~mlpjax.validate.structures` — bulk cells, the default structure of a potential,
  MD supercells, strained cells;
* :mod:`~mlpjax.validate.crystal` — equation of state, elastic constants, Γ phonons;
* :mod:`~mlpjax.validate.dynamics` — thermalisation, NVE energy drift, VDOS
  (:func:`mlpjax.md.simulate`, imported only when they run);
* :mod:`~mlpjax.validate.extrapolation` — errors along temperature, strain and energy;
* :mod:`~mlpjax.validate.uncertainty` — quality and calibration of predicted uncertainties
  (:class:`mlpjax.uncertainty.UncertainPrediction` of ensembles and GAP): calibration factor,
  Spearman ρ, miscalibration area, NLL, calibration plot, ``uncertainty.json``;
* :mod:`~mlpjax.validate.acceptance`, :mod:`~mlpjax.validate.report`,
  :mod:`~mlpjax.validate.markdown`, :mod:`~mlpjax.validate.plots` — the report.

Every quantity is computed the same way for the potential (through its ASE calculator or
jax-md) and for the reference calculator, so differences are the potential's. Units: eV, Å,
amu, fs/ps as named; moduli in GPa and frequencies in THz, with the constants of
:mod:`mlpjax.units`.
"""

from mlpjax.validate.acceptance import (
    BULK_MODULUS_REL_TOL,
    ELASTIC_CONSTANT_REL_TOL,
    LATTICE_CONSTANT_REL_TOL,
    acceptance_checks,
)
from mlpjax.validate.crystal import (
    ElasticConfig,
    ElasticResult,
    EOSConfig,
    EOSResult,
    GammaPhonons,
    PhononConfig,
    elastic_constants,
    equation_of_state,
    gamma_phonons,
)
from mlpjax.validate.dynamics import (
    DRIFT_FAIL_MEV_PER_ATOM_PS,
    DRIFT_GOOD_MEV_PER_ATOM_PS,
    VDOS,
    DriftConfig,
    DriftReport,
    DriftRun,
    VDOSConfig,
    classify_drift,
    drift_statistics,
    energy_drift,
    reference_vibrational_dos,
    thermalise,
    vdos_from_velocities,
    vdos_overlap,
    vibrational_dos,
)
from mlpjax.validate.extrapolation import (
    ExtrapolationConfig,
    errors_by_energy,
    extrapolation_test,
    reference_samples,
    training_ranges,
)
from mlpjax.validate.markdown import report_markdown
from mlpjax.validate.metrics import metrics, metrics_from_predictions, parity_plot, predict_dataset, reference_arrays
from mlpjax.validate.report import SECTIONS, ReportConfig, reference_calculator, to_jsonable, validate_report
from mlpjax.validate.structures import bulk_structure, default_structure, md_supercell, strained, structure_for
from mlpjax.validate.uncertainty import (
    Calibration,
    apply_calibration,
    calibration_curve,
    calibration_factor,
    calibration_plot,
    fit_calibration,
    gaussian_nll,
    miscalibration_area,
    spearman,
    uncertainty_metrics,
    write_uncertainty_report,
)

__all__ = [
    # metrics
    "predict_dataset", "reference_arrays", "metrics_from_predictions", "metrics", "parity_plot",
    # structures
    "bulk_structure", "structure_for", "default_structure", "md_supercell", "strained",
    # crystal
    "EOSConfig", "ElasticConfig", "PhononConfig", "EOSResult", "equation_of_state", "ElasticResult",
    "elastic_constants", "GammaPhonons", "gamma_phonons",
    # dynamics
    "DRIFT_GOOD_MEV_PER_ATOM_PS", "DRIFT_FAIL_MEV_PER_ATOM_PS", "classify_drift", "DriftConfig", "VDOSConfig",
    "thermalise", "DriftRun", "DriftReport", "drift_statistics", "energy_drift", "VDOS", "vdos_from_velocities",
    "vdos_overlap", "vibrational_dos", "reference_vibrational_dos",
    # extrapolation
    "ExtrapolationConfig", "reference_samples", "errors_by_energy", "training_ranges", "extrapolation_test",
    # report
    "LATTICE_CONSTANT_REL_TOL", "BULK_MODULUS_REL_TOL", "ELASTIC_CONSTANT_REL_TOL", "acceptance_checks",
    "SECTIONS", "ReportConfig", "reference_calculator", "to_jsonable", "validate_report", "report_markdown",
    # uncertainty
    "Calibration", "calibration_factor", "gaussian_nll", "miscalibration_area", "calibration_curve", "spearman",
    "fit_calibration", "apply_calibration", "uncertainty_metrics", "calibration_plot", "write_uncertainty_report",
]
