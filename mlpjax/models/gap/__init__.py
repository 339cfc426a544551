"""GAP: SOAP + sparse Gaussian process regression, fitted in closed form.

* :mod:`~mlpjax.models.gap.model` — :class:`GAPConfig` and the Flax module :class:`GAP`
  (the equations);
* :mod:`~mlpjax.models.gap.fitting` — :func:`fit` (the linear solve that replaces gradient
  training, called by :func:`mlpjax.training.train` for ``model: gap``), the sparse-point
  selection, :func:`predict_with_std` (predictive standard deviation of energies) and
  :func:`predict_uncertain` (energies, forces and stress with their standard deviations as
  :class:`mlpjax.uncertainty.UncertainPrediction` records).

The registry (:mod:`mlpjax.models`) finds the module, the config, the closed-form ``fit``
and the data-dependent initialisation ``data_init`` here.
"""

from mlpjax.models.gap.fitting import atom_features, fit, init_sparse, predict_uncertain, predict_with_std, select_sparse
from mlpjax.models.gap.model import GAP, GAPConfig


def data_init(pot, params, graphs):
    """Registry hook: sparse-point selection on the given structures (:func:`init_sparse`)."""
    return init_sparse(pot, params, graphs)


__all__ = ["GAP", "GAPConfig", "fit", "data_init", "init_sparse", "select_sparse", "atom_features", "predict_with_std",
           "predict_uncertain"]
