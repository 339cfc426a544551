"""Active learning: oracles, resumable labelling, selection and the loop (``mlpjax active CONFIG.yaml``).

- :mod:`mlpjax.active.oracle`: :func:`make_oracle` / :class:`OracleSpec` (EMT, PySCF DFT, tblite
  GFN2-xTB or any ASE calculator, as a picklable spec), :func:`evaluate` (label one structure),
  :class:`OracleError`.
- :mod:`mlpjax.active.labelling`: :func:`label` (parallel worker processes, each result appended to
  an extxyz file as it arrives, resumable after a kill, failures recorded and skipped),
  :func:`structure_id` / :func:`structure_ids`, :func:`labelled_ids`, :func:`read_failures`,
  :class:`LabelReport`.
- :mod:`mlpjax.active.selection`: the DP-GEN trust window (:func:`classify`), :func:`top_k`,
  :func:`farthest_point_sampling` on :func:`structure_descriptors`, :func:`select_batch`.
- :mod:`mlpjax.active.config`: :class:`ActiveConfig` (YAML 1:1, :func:`load_active_config`).
- :mod:`mlpjax.active.loop`: :func:`run_active` (train → explore → select → label → retrain,
  resumable after a kill at any point; report.csv/json, learning_curve.png), :class:`ActiveResult`.
"""

from mlpjax.active.labelling import (ID_KEY, ORACLE_KEY, Failure, LabelReport, failures_path, label, labelled_ids,
                                     read_failures, structure_id, structure_ids)
from mlpjax.active.oracle import ORACLES, OracleError, OracleResult, OracleSpec, evaluate, make_oracle
from mlpjax.active.config import (ActiveConfig, ExploreConfig, LabelConfig, SelectConfig, StopConfig, config_from_dict,
                                  load_active_config)
from mlpjax.active.loop import REPORT_COLUMNS, ActiveResult, report_rows, run_active
from mlpjax.active.selection import (classify, farthest_point_sampling, first_failed, select_batch, structure_descriptor,
                                     structure_descriptors, top_k)

__all__ = [
    "ActiveConfig",
    "ActiveResult",
    "ExploreConfig",
    "LabelConfig",
    "REPORT_COLUMNS",
    "SelectConfig",
    "StopConfig",
    "classify",
    "config_from_dict",
    "farthest_point_sampling",
    "load_active_config",
    "report_rows",
    "run_active",
    "first_failed",
    "select_batch",
    "structure_descriptor",
    "structure_descriptors",
    "top_k",
    "ID_KEY",
    "ORACLES",
    "ORACLE_KEY",
    "Failure",
    "LabelReport",
    "OracleError",
    "OracleResult",
    "OracleSpec",
    "evaluate",
    "failures_path",
    "label",
    "labelled_ids",
    "make_oracle",
    "read_failures",
    "structure_id",
    "structure_ids",
]
