"""Active learning: the reference method (oracles) and resumable labelling.

- :mod:`mlpjax.active.oracle`: :func:`make_oracle` / :class:`OracleSpec` (EMT, PySCF DFT, tblite
  GFN2-xTB or any ASE calculator, as a picklable spec), :func:`evaluate` (label one structure),
  :class:`OracleError`.
- :mod:`mlpjax.active.labelling`: :func:`label` (parallel worker processes, each result appended to
  an extxyz file as it arrives, resumable after a kill, failures recorded and skipped),
  :func:`structure_id` / :func:`structure_ids`, :func:`labelled_ids`, :func:`read_failures`,
  :class:`LabelReport`.
"""

from mlpjax.active.labelling import (ID_KEY, ORACLE_KEY, Failure, LabelReport, failures_path, label, labelled_ids,
                                     read_failures, structure_id, structure_ids)
from mlpjax.active.oracle import ORACLES, OracleError, OracleResult, OracleSpec, evaluate, make_oracle

__all__ = [
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
