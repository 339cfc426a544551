"""Differentiable simulation: gradients of simulated observables with respect to the potential.

Because the potential, the integrators and the analysis are all JAX (and the MD engine takes the
parameters as a traced argument), an observable of a simulation — a radial distribution function,
a mean energy, a pressure, a mean squared displacement — is a differentiable function of the
potential's parameters. Two estimators of its gradient:

- :mod:`mlpjax.diffsim.trajectory` — backpropagation through the MD trajectory
  (:func:`trajectory`): exact for the simulated run, rematerialised per chunk for bounded memory,
  truncated windows for long horizons (where the exact gradient of a chaotic run explodes).
- :mod:`mlpjax.diffsim.reweight` — DiffTRe-style thermodynamic perturbation reweighting of a fixed
  reference trajectory (:func:`sample_reference`, :func:`reweighted_average`): for ensemble
  averages, at the cost of one energy evaluation per stored frame, with the effective sample size
  telling when a new reference run is needed.

:mod:`mlpjax.diffsim.observables` holds the differentiable observables (smooth-kernel RDF, mean
energy, pressure, MSD).
:mod:`mlpjax.diffsim.sensitivity` says which parameter groups one observable's gradient depends on
(:func:`sensitivity`, :func:`format_sensitivity`).
"""

from mlpjax.diffsim.observables import (frames_of, mean_potential_energy, mean_pressure, msd, rdf, rdf_bins,
                                        rdf_l2, virial_pressure)
from mlpjax.diffsim.reweight import (NonErgodicReferenceWarning, Reference, check_replicas_agree,
                                     effective_sample_size, frame_energies, reweighted_average, sample_reference, weights)
from mlpjax.diffsim.trajectory import DiffTrajectory, Start, gradient_norm_vs_horizon, trajectory
from mlpjax.diffsim.sensitivity import GroupSensitivity, format_sensitivity, sensitivity

__all__ = [
    "DiffTrajectory", "Start", "trajectory", "gradient_norm_vs_horizon",
    "Reference", "NonErgodicReferenceWarning", "check_replicas_agree", "sample_reference", "frame_energies", "reweighted_average", "weights", "effective_sample_size",
    "rdf", "rdf_bins", "rdf_l2", "mean_potential_energy", "mean_pressure", "virial_pressure", "msd", "frames_of",
]
__all__ += ["sensitivity", "format_sensitivity", "GroupSensitivity"]
