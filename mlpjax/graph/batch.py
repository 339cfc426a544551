"""Padded graph batches: many configurations of different sizes in fixed shapes.

A :class:`GraphBatch` holds ``n_graph`` structures in arrays of fixed *budgets*
(nodes, edges, graphs), so a whole epoch compiles once. Padding follows one rule:
the last node and the last graph of every batch are padding (a batch always has at
least one of each), padded edges connect the last node to itself with zero shift,
and every padded entry is masked (``node_mask``, ``edge_mask``, ``graph_mask``)
before norms, divisions and losses.

Budgets: :func:`make_budget` sizes the node/edge budgets for the *largest*
``batch_size`` structures of a data set, rounded up to a multiple of 64, so every
batch of ``batch_size`` structures fits and every batch has the same shapes.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from mlpjax.data import Configuration, DataError
from mlpjax.graph.neighbors import HostEdges, neighbor_list


class GraphBatch(NamedTuple):
    """A padded batch (NumPy on the host, jax.Array once passed to a jitted function)."""

    positions: np.ndarray  # [n_node_budget, 3] Å
    species: np.ndarray  # [n_node_budget] int32, index into Potential.species (0 for padding)
    node_graph: np.ndarray  # [n_node_budget] int32, structure each node belongs to
    node_mask: np.ndarray  # [n_node_budget] bool
    senders: np.ndarray  # [n_edge_budget] int32, neighbor j
    receivers: np.ndarray  # [n_edge_budget] int32, centre i
    shifts: np.ndarray  # [n_edge_budget, 3] integer cell shifts S (stored as float)
    edge_mask: np.ndarray  # [n_edge_budget] bool
    cell: np.ndarray  # [n_graph_budget, 3, 3] Å, rows are lattice vectors
    volume: np.ndarray  # [n_graph_budget] Å^3 (1.0 for molecules and padding, see `periodic`)
    periodic: np.ndarray  # [n_graph_budget] bool, stress is defined only where True
    graph_mask: np.ndarray  # [n_graph_budget] bool
    n_atoms: np.ndarray  # [n_graph_budget] int32 (0 for padding)
    energy: np.ndarray  # [n_graph_budget] eV (reference; 0 where absent)
    forces: np.ndarray  # [n_node_budget, 3] eV/Å (reference; 0 where absent)
    stress: np.ndarray  # [n_graph_budget, 3, 3] eV/Å^3 (reference; 0 where absent)
    has_energy: np.ndarray  # [n_graph_budget] bool
    has_forces: np.ndarray  # [n_graph_budget] bool
    has_stress: np.ndarray  # [n_graph_budget] bool

    @property
    def n_graph_budget(self) -> int:
        return int(self.graph_mask.shape[0])


@dataclasses.dataclass(frozen=True)
class Budget:
    n_nodes: int
    n_edges: int
    n_graphs: int


@dataclasses.dataclass
class AtomGraph:
    """One configuration with its species indices and neighbor list (host side)."""

    config: Configuration
    species: np.ndarray  # [n_atoms] int32 species index
    edges: HostEdges

    @property
    def n_atoms(self) -> int:
        return self.config.n_atoms

    @property
    def n_edges(self) -> int:
        return int(self.edges.senders.shape[0])


def species_indices(numbers: np.ndarray, species: Sequence[int], *, source: str = "", frame: int | None = None) -> np.ndarray:
    """Map atomic numbers to indices into ``species``; unknown elements are a DataError."""
    from ase.data import chemical_symbols

    table = np.full(max(max(species), int(np.max(numbers))) + 1, -1, dtype=np.int32)
    table[np.asarray(species)] = np.arange(len(species), dtype=np.int32)
    idx = table[np.asarray(numbers)]
    if np.any(idx < 0):
        bad = sorted({int(z) for z in np.asarray(numbers)[idx < 0]})
        names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in bad)
        known = ", ".join(chemical_symbols[z] for z in species)
        raise DataError(
            f"element(s) {names} unknown to this model, which knows {known}; retrain with data containing them",
            source=source or None,
            frame=frame,
            field="numbers",
        )
    return idx


def to_graph(config: Configuration, species: Sequence[int], cutoff: float) -> AtomGraph:
    idx = species_indices(config.numbers, species, source=config.source, frame=config.frame if config.frame >= 0 else None)
    edges = neighbor_list(config.positions, config.cell, config.pbc, cutoff)
    return AtomGraph(config=config, species=idx, edges=edges)


def to_graphs(configs: Sequence[Configuration], species: Sequence[int], cutoff: float) -> list[AtomGraph]:
    return [to_graph(c, species, cutoff) for c in configs]


def _round_up(x: int, multiple: int) -> int:
    return int(-(-x // multiple) * multiple)


def make_budget(graphs: Sequence[AtomGraph], batch_size: int, *, multiple: int = 64) -> Budget:
    """Budgets so that any ``batch_size`` structures of ``graphs`` fit in one batch."""
    if not graphs:
        raise ValueError("no structures to batch")
    k = min(batch_size, len(graphs))
    nodes = np.sort([g.n_atoms for g in graphs])[::-1][:k].sum()
    edges = np.sort([g.n_edges for g in graphs])[::-1][:k].sum()
    return Budget(n_nodes=_round_up(int(nodes) + 1, multiple), n_edges=_round_up(int(edges) + 1, multiple), n_graphs=k + 1)


def budget_for_single(graph: AtomGraph) -> Budget:
    """A budget for one structure, rounded up geometrically (×1.25 steps) so that a
    structure whose neighbour count drifts during MD or relaxation recompiles rarely."""

    def bucket(x: int) -> int:
        b = 64
        while b < x:
            b = _round_up(int(b * 1.25), 64)
        return b

    return Budget(n_nodes=bucket(graph.n_atoms + 1), n_edges=bucket(graph.n_edges + 1), n_graphs=2)


def pack(graphs: Sequence[AtomGraph], budget: Budget, dtype=np.float64) -> GraphBatch:
    """Pack structures into one padded :class:`GraphBatch` of the given budget."""
    n_nodes = sum(g.n_atoms for g in graphs)
    n_edges = sum(g.n_edges for g in graphs)
    if n_nodes + 1 > budget.n_nodes or n_edges > budget.n_edges or len(graphs) + 1 > budget.n_graphs:
        raise ValueError(
            f"batch of {len(graphs)} structures ({n_nodes} atoms, {n_edges} edges) exceeds the budget {budget}"
        )
    N, E, G = budget.n_nodes, budget.n_edges, budget.n_graphs
    positions = np.zeros((N, 3), dtype)
    species = np.zeros(N, np.int32)
    node_graph = np.full(N, G - 1, np.int32)
    node_mask = np.zeros(N, bool)
    senders = np.full(E, N - 1, np.int32)
    receivers = np.full(E, N - 1, np.int32)
    shifts = np.zeros((E, 3), dtype)
    edge_mask = np.zeros(E, bool)
    cell = np.zeros((G, 3, 3), dtype)
    volume = np.ones(G, dtype)
    periodic = np.zeros(G, bool)
    graph_mask = np.zeros(G, bool)
    n_atoms = np.zeros(G, np.int32)
    energy = np.zeros(G, dtype)
    forces = np.zeros((N, 3), dtype)
    stress = np.zeros((G, 3, 3), dtype)
    has_energy = np.zeros(G, bool)
    has_forces = np.zeros(G, bool)
    has_stress = np.zeros(G, bool)
    n0 = e0 = 0
    for gi, g in enumerate(graphs):
        c = g.config
        n, e = g.n_atoms, g.n_edges
        positions[n0 : n0 + n] = c.positions
        species[n0 : n0 + n] = g.species
        node_graph[n0 : n0 + n] = gi
        node_mask[n0 : n0 + n] = True
        senders[e0 : e0 + e] = g.edges.senders + n0
        receivers[e0 : e0 + e] = g.edges.receivers + n0
        shifts[e0 : e0 + e] = g.edges.shifts
        edge_mask[e0 : e0 + e] = True
        cell[gi] = c.cell
        if c.periodic:
            periodic[gi] = True
            volume[gi] = abs(np.linalg.det(c.cell))
        graph_mask[gi] = True
        n_atoms[gi] = n
        if c.energy is not None:
            energy[gi] = c.energy
            has_energy[gi] = True
        if c.forces is not None:
            forces[n0 : n0 + n] = c.forces
            has_forces[gi] = True
        if c.stress is not None:
            stress[gi] = c.stress
            has_stress[gi] = c.periodic
        n0 += n
        e0 += e
    return GraphBatch(
        positions, species, node_graph, node_mask, senders, receivers, shifts, edge_mask, cell, volume,
        periodic, graph_mask, n_atoms, energy, forces, stress, has_energy, has_forces, has_stress,
    )


def batches(
    graphs: Sequence[AtomGraph],
    budget: Budget,
    *,
    shuffle: bool = False,
    seed: int = 0,
    dtype=np.float64,
) -> Iterator[GraphBatch]:
    """Yield padded batches of at most ``budget.n_graphs - 1`` structures, greedily filled."""
    order = np.arange(len(graphs))
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(graphs))
    current: list[AtomGraph] = []
    nodes = edges = 0
    for i in order:
        g = graphs[i]
        if g.n_atoms + 1 > budget.n_nodes or g.n_edges > budget.n_edges:
            raise ValueError(f"structure {g.config.source}:{g.config.frame} ({g.n_atoms} atoms, {g.n_edges} edges) is larger than the batch budget {budget}")
        if current and (
            nodes + g.n_atoms + 1 > budget.n_nodes or edges + g.n_edges > budget.n_edges or len(current) + 2 > budget.n_graphs
        ):
            yield pack(current, budget, dtype)
            current, nodes, edges = [], 0, 0
        current.append(g)
        nodes += g.n_atoms
        edges += g.n_edges
    if current:
        yield pack(current, budget, dtype)
