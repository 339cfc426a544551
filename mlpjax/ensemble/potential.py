"""An ensemble potential: one model file, one :class:`~mlpjax.potential.Potential` interface.

:class:`Ensemble` is a :class:`~mlpjax.potential.Potential` whose :attr:`definition` is an
:class:`~mlpjax.ensemble.EnsembleDef` and whose parameters and fitted normalisation carry a
leading member axis (``reference_energies`` ``[M][S]``, ``energy_shift``/``energy_scale`` ``[M]``).
Everything that takes a Potential — training metrics, the jax-md energy function, the MD engine
and driver, validation — therefore sees the **ensemble mean** with no special case. The spread
comes from :meth:`Ensemble.predict_uncertain` (one :class:`~mlpjax.uncertainty.UncertainPrediction`
per structure), the ASE calculator (``energy_std``, ``forces_std``, ``stress_std``) and the MD
uncertainty check (:mod:`mlpjax.md`).

``calibration`` = (c_E, c_F, c_S): factors on the members' standard deviations (1 until
:func:`mlpjax.validate.uncertainty.fit_calibration` sets them on validation data), stored in the
model file.

File: the same checksummed container as a single model (``*.mlpjax``), header with
``"ensemble": {"members", "kind", "heads", "calibration"}``; :func:`mlpjax.load` returns an
Ensemble for it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import numpy as np

from mlpjax.cache import compiled
from mlpjax.ensemble.definition import EnsembleDef, head_paths
from mlpjax.potential import Potential
from mlpjax.uncertainty import UncertainPrediction


@dataclasses.dataclass(frozen=True, eq=False)
class Ensemble(Potential):
    """M members of one architecture (see the module docstring). ``reference_energies`` is
    ``[M][S]`` eV, ``energy_shift`` and ``energy_scale`` are ``[M]``; ``params`` member-stacked."""

    members: int = 2
    kind: str = "full"  # "full" | "shallow"
    heads: tuple = ()  # shallow: parameter paths that carry the member axis
    calibration: tuple = (1.0, 1.0, 1.0)  # factors on the std of energy, forces, stress

    @functools.cached_property
    def definition(self) -> EnsembleDef:
        return EnsembleDef(model=self.model, model_config=self.model_config, cutoff=float(self.cutoff),
                           species=tuple(int(z) for z in self.species), avg_num_neighbors=float(self.avg_num_neighbors),
                           members=int(self.members), kind=self.kind, heads=tuple(self.heads))

    @property
    def n_members(self) -> int:
        return int(self.members)

    def member(self, m: int) -> Potential:
        """Member ``m`` as a plain :class:`~mlpjax.potential.Potential` (shallow: the shared network with head m)."""
        v = self.definition.unstack(self.variables, m)
        return Potential(model=self.model, model_config=self.model_config, cutoff=self.cutoff, species=self.species,
                         reference_energies=tuple(float(e) for e in np.asarray(v.reference_energies)),
                         energy_shift=float(v.energy_shift), energy_scale=float(v.energy_scale),
                         avg_num_neighbors=self.avg_num_neighbors, params=v.params, metadata=dict(self.metadata))

    # ---------------------------------------------------------------- prediction with uncertainty
    def member_predictions(self, configs: Sequence, *, batch_size: int = 16, compute_stress: bool | None = None) -> list[dict]:
        """Every member's energy [M] eV, forces [M, n, 3] eV/Å and stress [M, 3, 3] eV/Å³ (None when
        not periodic) per structure, in input order."""
        from mlpjax.graph import batches, make_budget, to_graphs

        configs = list(configs)
        if not configs:
            return []
        graphs = to_graphs(configs, self.species, self.cutoff)
        if compute_stress is None:
            compute_stress = any(c.periodic for c in configs)
        fn = _member_predict_fn(self.definition, bool(compute_stress), bool(jax.config.jax_enable_x64))
        variables = self.variables
        dtype = np.float64 if jax.config.jax_enable_x64 else np.float32
        out = []
        for batch in batches(graphs, make_budget(graphs, batch_size), shuffle=False, dtype=dtype):
            pred = jax.device_get(fn(variables, batch))
            start = 0
            for g in range(int(np.sum(batch.graph_mask))):
                n = int(batch.n_atoms[g])
                c = configs[len(out)]
                out.append({
                    "energy": np.asarray(pred.energy[:, g], np.float64),
                    "forces": np.asarray(pred.forces[:, start:start + n], np.float64),
                    "stress": np.asarray(pred.stress[:, g], np.float64) if (compute_stress and c.periodic) else None,
                })
                start += n
        return out

    def predict_uncertain(self, configs: Sequence, *, batch_size: int = 16, calibrated: bool = True) -> list[UncertainPrediction]:
        """Mean and standard deviation (× :attr:`calibration` when ``calibrated``) of energy,
        forces and stress per structure, with the members' own values (:mod:`mlpjax.uncertainty`)."""
        c_e, c_f, c_s = self.calibration if calibrated else (1.0, 1.0, 1.0)
        return [uncertain_prediction(m["energy"], m["forces"], m["stress"], (c_e, c_f, c_s))
                for m in self.member_predictions(configs, batch_size=batch_size)]

    # ---------------------------------------------------------------- file
    def header(self) -> dict:
        base = Potential.header(dataclasses.replace(self, reference_energies=(), energy_shift=0.0, energy_scale=1.0))
        base.update(reference_energies=[[float(e) for e in row] for row in self.reference_energies],
                    energy_shift=[float(x) for x in self.energy_shift], energy_scale=[float(x) for x in self.energy_scale],
                    ensemble={"members": int(self.members), "kind": self.kind, "heads": list(self.heads),
                              "calibration": [float(x) for x in self.calibration]})
        return base

    @classmethod
    def from_header(cls, header: dict, params: Any = None) -> "Ensemble":
        from mlpjax import models

        ens = header["ensemble"]
        return cls(model=header["model"], model_config=models.make_config(header["model"], header["model_config"], from_file=True),
                   cutoff=float(header["cutoff"]), species=tuple(int(z) for z in header["species"]),
                   reference_energies=tuple(tuple(float(e) for e in row) for row in header["reference_energies"]),
                   energy_shift=tuple(float(x) for x in header["energy_shift"]),
                   energy_scale=tuple(float(x) for x in header["energy_scale"]),
                   avg_num_neighbors=float(header["avg_num_neighbors"]), params=params,
                   metadata=dict(header.get("metadata", {})), members=int(ens["members"]), kind=str(ens["kind"]),
                   heads=tuple(ens.get("heads", ())), calibration=tuple(float(x) for x in ens.get("calibration", (1, 1, 1))))

    def with_calibration(self, energy: float, forces: float, stress: float = 1.0) -> "Ensemble":
        return dataclasses.replace(self, calibration=(float(energy), float(forces), float(stress)))


def uncertain_prediction(energy, forces, stress=None, calibration=(1.0, 1.0, 1.0)) -> UncertainPrediction:
    """One structure's :class:`UncertainPrediction` from member values: ``energy`` [M] eV,
    ``forces`` [M, n, 3] eV/Å, ``stress`` [M, 3, 3] eV/Å³ or None (population std × calibration)."""
    c_e, c_f, c_s = calibration
    energy, forces = np.asarray(energy, np.float64), np.asarray(forces, np.float64)
    f_std = np.sqrt(np.sum(np.var(forces, axis=0), axis=-1)) if forces.size else np.zeros(forces.shape[1])
    members = {"energy": energy, "forces": forces}
    s_mean = s_std = None
    if stress is not None:
        stress = np.asarray(stress, np.float64)
        s_mean, s_std = stress.mean(0), c_s * stress.std(0)
        members["stress"] = stress
    return UncertainPrediction(energy=float(energy.mean()), energy_std=float(c_e * energy.std()),
                               forces=forces.mean(0), forces_std=c_f * f_std, stress=s_mean, stress_std=s_std,
                               members=members)


@compiled(maxsize=8)
def _member_predict_fn(definition: EnsembleDef, compute_stress: bool, x64: bool):
    """``jit(member_predict)``: ``(variables, batch) -> Predictions [M, ...]`` per architecture."""
    del x64  # a key only
    return jax.jit(lambda variables, batch: definition.member_predict(variables, batch, compute_stress=compute_stress))


def from_potential(potential: Potential, members: int, *, kind: str = "full", seed: int = 0, graphs=None,
                   member_params: Sequence | None = None) -> Ensemble:
    """An untrained M-member :class:`Ensemble` around a prepared (normalised, initialised) potential.

    Member 0 keeps ``potential.params``; member m ≥ 1 is initialised from ``fold_in(PRNGKey(seed), m)``
    (full: the whole network; shallow: only the heads, the rest is member 0's), then the model's
    data-dependent initialisation (e.g. BPNN's descriptor standardisation) runs on ``graphs``. Shallow
    heads start as member 0's head plus the deviations of M fresh heads from their mean, so the mean
    model starts as exactly the single model (a mean of M random heads would start 1/√M smaller: on 44
    EMT Cu cells its validation loss after 12 epochs was 0.69 against 0.25 for the single model).
    ``member_params``: give all M member parameter trees instead (warm starts). The normalisation
    (E0, shift, scale) is copied to every member."""
    from mlpjax import models
    from mlpjax.potential import cast_floats

    if potential.params is None:
        raise ValueError("the potential has no parameters to build an ensemble around")
    members = int(members)
    heads = head_paths(potential.params) if kind == "shallow" else ()
    if member_params is None:
        dtype = jax.tree_util.tree_leaves(potential.params)[0].dtype
        hook = models.data_init(potential.model)
        member_params = [potential.params]
        for m in range(1, members):
            p = cast_floats(potential.init_params(jax.random.fold_in(jax.random.PRNGKey(int(seed)), m)), dtype)
            if hook is not None and graphs is not None:
                p = hook(potential.replace(params=p), p, graphs)
            member_params.append(p)
        if kind == "shallow":
            member_params = _centred_heads(member_params, heads)
    ens = Ensemble(model=potential.model, model_config=potential.model_config, cutoff=potential.cutoff,
                   species=potential.species, reference_energies=(tuple(potential.reference_energies),) * members,
                   energy_shift=(float(potential.energy_shift),) * members,
                   energy_scale=(float(potential.energy_scale),) * members,
                   avg_num_neighbors=potential.avg_num_neighbors, metadata=dict(potential.metadata),
                   members=members, kind=kind, heads=heads)
    return dataclasses.replace(ens, params=ens.definition.stack(list(member_params)))


def _centred_heads(member_params: list, heads: tuple) -> list:
    """Member trees whose head leaves are head₀ + (headₘ − mean over m of headₘ)."""
    from mlpjax.potential import parameter_paths

    stacked = set(heads)
    paths = parameter_paths(member_params[0])
    flat = [jax.tree_util.tree_leaves(p) for p in member_params]
    treedef = jax.tree_util.tree_structure(member_params[0])
    out = []
    for m in range(len(member_params)):
        leaves = []
        for i, path in enumerate(paths):
            if path in stacked:
                mean = sum(np.asarray(f[i]) for f in flat) / len(flat)
                leaves.append((np.asarray(flat[0][i]) + np.asarray(flat[m][i]) - mean).astype(np.asarray(flat[0][i]).dtype))
            else:
                leaves.append(flat[m][i])
        out.append(jax.tree_util.tree_unflatten(treedef, leaves))
    return out


def stack_potentials(potentials: Sequence[Potential]) -> Ensemble:
    """A full ensemble of separately trained potentials of one architecture (same species table)."""
    potentials = list(potentials)
    first = potentials[0]
    for p in potentials[1:]:
        if p.definition != first.definition:
            raise ValueError("ensemble members must share one architecture (model, config, cutoff, species, "
                             "avg_num_neighbors)")
    ens = Ensemble(model=first.model, model_config=first.model_config, cutoff=first.cutoff, species=first.species,
                   reference_energies=tuple(tuple(p.reference_energies) for p in potentials),
                   energy_shift=tuple(float(p.energy_shift) for p in potentials),
                   energy_scale=tuple(float(p.energy_scale) for p in potentials),
                   avg_num_neighbors=first.avg_num_neighbors, metadata=dict(first.metadata), members=len(potentials))
    return dataclasses.replace(ens, params=ens.definition.stack([p.params for p in potentials]))


def is_ensemble(potential) -> bool:
    """True for an :class:`Ensemble` (or anything whose definition is an :class:`EnsembleDef`)."""
    return isinstance(getattr(potential, "definition", None), EnsembleDef)
