"""Ensembles: the spread of several models is the uncertainty.

* :mod:`~mlpjax.ensemble.definition` — :class:`EnsembleDef`: M members of one architecture as
  parameters with a member axis (full or shallow/last-layer), whose energy is the member mean;
* :mod:`~mlpjax.ensemble.potential` — :class:`Ensemble`, the Potential with per-member values
  (:meth:`Ensemble.predict_uncertain`), its model file, :func:`from_potential` and
  :func:`stack_potentials`.

Training (``TrainConfig.ensemble_size`` / ``ensemble_kind`` / ``bootstrap``, ``mlpjax train
--ensemble M``) is :func:`mlpjax.training.train`: full ensembles vmap the single-model step over the
member axis (one compiled step, own initialisation and data order per member); shallow ensembles
train one network with M heads on a Gaussian negative log-likelihood.
"""

from mlpjax.ensemble.definition import KINDS, EnsembleDef, head_paths, parameter_paths
from mlpjax.ensemble.potential import Ensemble, from_potential, is_ensemble, stack_potentials, uncertain_prediction

__all__ = ["KINDS", "EnsembleDef", "Ensemble", "head_paths", "parameter_paths", "from_potential", "stack_potentials",
           "is_ensemble", "uncertain_prediction"]
