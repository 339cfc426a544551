"""From structures to model inputs, on the host.

- :mod:`mlpjax.graph.neighbors`: :func:`neighbor_list` (vesin, full list, every periodic
  image) giving :class:`HostEdges`, and the edge convention used everywhere in mlpjax.
- :mod:`mlpjax.graph.batch`: :class:`AtomGraph` (one structure with species indices and
  edges), :class:`Budget` and :class:`GraphBatch` (fixed-shape padded batches), and
  :func:`to_graph` / :func:`to_graphs`, :func:`make_budget`, :func:`budget_for_single`,
  :func:`pack`, :func:`batches`, :func:`species_indices`.
- :mod:`mlpjax.graph.cells`: periodic-cell geometry (perpendicular widths, the minimum-image
  check, supercell repeats).
"""

from mlpjax.graph.batch import (
    AtomGraph,
    Budget,
    GraphBatch,
    batches,
    budget_for_single,
    make_budget,
    pack,
    species_indices,
    to_graph,
    to_graphs,
)
from mlpjax.graph.cells import check_cell, perpendicular_widths, supercell, supercell_repeats
from mlpjax.graph.neighbors import HostEdges, neighbor_list

__all__ = [
    "AtomGraph",
    "Budget",
    "GraphBatch",
    "HostEdges",
    "batches",
    "budget_for_single",
    "check_cell",
    "perpendicular_widths",
    "supercell",
    "supercell_repeats",
    "make_budget",
    "neighbor_list",
    "pack",
    "species_indices",
    "to_graph",
    "to_graphs",
]
