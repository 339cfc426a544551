"""One uncertainty contract: what every uncertainty-aware predictor returns for one structure.

Full and shallow ensembles (:mod:`mlpjax.ensemble`) and GAP's predictive variance
(:func:`mlpjax.models.gap.predict_with_std`) all produce :class:`UncertainPrediction` records,
so calibration (:mod:`mlpjax.validate.uncertainty`), the uncertainty check inside MD and the
selection of active learning (:mod:`mlpjax.active`) never special-case a method.

Conventions (eV, Å):

* ``energy`` / ``energy_std``: mean and standard deviation of the total energy [eV];
* ``forces`` [n_atoms, 3] eV/Å, the mean; ``forces_std`` [n_atoms] eV/Å, the per-atom *model
  deviation* sqrt(Σ_c var_c(F_ic)) (DP-GEN's ε_F,i: the RMS length of the members' deviation from
  the mean force on atom i). Per component, an isotropic Gaussian has σ_ic = forces_std_i / √3;
* ``stress`` / ``stress_std`` [3, 3] eV/Å³ (None for a non-periodic structure or a method
  without stress);
* ``members``: the members' own values (``"energy"`` [M] eV, ``"forces"`` [M, n_atoms, 3] eV/Å,
  ``"stress"`` [M, 3, 3] eV/Å³), or None for a method without members (GAP).

Standard deviations are those of the ensemble (population, ``ddof=0``) times the calibration
factor the predictor carries (1 until :func:`mlpjax.validate.uncertainty.fit_calibration` sets one).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class UncertainPrediction(NamedTuple):
    energy: float  # eV, mean over members
    energy_std: float  # eV
    forces: np.ndarray  # [n_atoms, 3] eV/Å, mean
    forces_std: np.ndarray  # [n_atoms] eV/Å, sqrt(sum_c var_c F_ic) (model deviation)
    stress: np.ndarray | None = None  # [3, 3] eV/Å^3, mean (None: not periodic / not predicted)
    stress_std: np.ndarray | None = None  # [3, 3] eV/Å^3
    members: dict | None = None  # "energy" [M], "forces" [M, n, 3], "stress" [M, 3, 3] (None: no members)

    @property
    def max_force_std(self) -> float:
        """eV/Å, the largest per-atom model deviation (DP-GEN's selection criterion)."""
        return float(np.max(self.forces_std)) if len(self.forces_std) else 0.0


def force_model_deviation(member_forces) -> np.ndarray:
    """[..., M, n_atoms, 3] member forces -> [..., n_atoms] sqrt(Σ_c var_c) over the member axis (eV/Å)."""
    f = np.asarray(member_forces)
    return np.sqrt(np.sum(np.var(f, axis=-3), axis=-1))
