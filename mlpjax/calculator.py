"""The potential as an ASE calculator (energy, free_energy, energies, forces, stress).

It builds the neighbour list on the host (vesin, every periodic image), packs the
structure into a padded :class:`~mlpjax.graph.GraphBatch` whose budget is rounded up
geometrically (so a relaxation or MD run recompiles only when the neighbour count
grows past a bucket) and calls the same jitted :meth:`Potential.predict` used in
training: the calculator, training and jax-md give the same numbers.

With an :class:`mlpjax.ensemble.Ensemble` the standard results are the ensemble mean (as the jax-md
energy function's) and ``results`` also holds ``energy_std`` (eV), ``forces_std`` ([n_atoms] eV/Å,
the per-atom model deviation of :mod:`mlpjax.uncertainty`), ``stress_std`` (Voigt, eV/Å³; periodic
cells), ``member_energies`` ([M] eV) and ``member_forces`` ([M, n_atoms, 3] eV/Å), with the
ensemble's calibration factors applied to the standard deviations.
"""

from __future__ import annotations

import jax
import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from mlpjax.data import Configuration
from mlpjax.graph import Budget, budget_for_single, pack, to_graph


def _voigt(s):
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


class MLPJaxCalculator(Calculator):
    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "energy_std", "forces_std",
                              "stress_std"]

    def __init__(self, potential, **kwargs):
        super().__init__(**kwargs)
        self.potential = potential
        self._budget: Budget | None = None
        definition = potential.definition
        self._members = hasattr(definition, "member_predict")  # an ensemble: every member's values
        if self._members:
            self._predict = jax.jit(lambda variables, batch: definition.member_predict(variables, batch, compute_stress=True))
        else:
            self._predict = jax.jit(lambda variables, batch: definition.predict(variables, batch, compute_stress=True))

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        config = Configuration.from_atoms(self.atoms, source="<ase.Atoms>")
        graph = to_graph(config, self.potential.species, self.potential.cutoff)
        need = budget_for_single(graph)
        if self._budget is None or need.n_nodes > self._budget.n_nodes or need.n_edges > self._budget.n_edges:
            self._budget = need
        dtype = np.float64 if jax.config.jax_enable_x64 else np.float32
        batch = pack([graph], self._budget, dtype=dtype)
        out = self._predict(self.potential.variables, batch)
        n = graph.n_atoms
        periodic = config.periodic and self.atoms.pbc.all()
        if self._members:
            from mlpjax.ensemble import uncertain_prediction

            out = jax.device_get(out)
            up = uncertain_prediction(out.energy[:, 0], out.forces[:, :n], out.stress[:, 0] if periodic else None,
                                      self.potential.calibration)
            self.results["energy_std"] = up.energy_std
            self.results["forces_std"] = up.forces_std
            self.results["member_energies"] = up.members["energy"]
            self.results["member_forces"] = up.members["forces"]
            if periodic:
                self.results["stress_std"] = _voigt(up.stress_std)
            out = jax.tree_util.tree_map(lambda x: np.mean(x, axis=0), out)
        energy = float(out.energy[0])
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["energies"] = np.asarray(out.atomic_energies[:n], dtype=np.float64)
        self.results["forces"] = np.asarray(out.forces[:n], dtype=np.float64)
        if periodic:
            self.results["stress"] = _voigt(np.asarray(out.stress[0], dtype=np.float64))
