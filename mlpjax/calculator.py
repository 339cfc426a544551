"""The potential as an ASE calculator (energy, free_energy, energies, forces, stress).

It builds the neighbour list on the host (vesin, every periodic image), packs the
structure into a padded :class:`~mlpjax.graph.GraphBatch` whose budget is rounded up
geometrically (so a relaxation or MD run recompiles only when the neighbour count
grows past a bucket) and calls the same jitted :meth:`Potential.predict` used in
training: the calculator, training and jax-md give the same numbers.
"""

from __future__ import annotations

import jax
import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from mlpjax.data import Configuration
from mlpjax.graph import Budget, budget_for_single, pack, to_graph


class MLPJaxCalculator(Calculator):
    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, potential, **kwargs):
        super().__init__(**kwargs)
        self.potential = potential
        self._budget: Budget | None = None
        self._predict = jax.jit(lambda params, batch: potential.predict(params, batch, compute_stress=True))

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        config = Configuration.from_atoms(self.atoms, source="<ase.Atoms>")
        graph = to_graph(config, self.potential.species, self.potential.cutoff)
        need = budget_for_single(graph)
        if self._budget is None or need.n_nodes > self._budget.n_nodes or need.n_edges > self._budget.n_edges:
            self._budget = need
        dtype = np.float64 if jax.config.jax_enable_x64 else np.float32
        batch = pack([graph], self._budget, dtype=dtype)
        out = self._predict(self.potential.params, batch)
        n = graph.n_atoms
        energy = float(out.energy[0])
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["energies"] = np.asarray(out.atomic_energies[:n], dtype=np.float64)
        self.results["forces"] = np.asarray(out.forces[:n], dtype=np.float64)
        if config.periodic and self.atoms.pbc.all():
            s = np.asarray(out.stress[0], dtype=np.float64)
            self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
