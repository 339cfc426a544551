"""The architecture of an ensemble: M members of one :class:`~mlpjax.potential.PotentialDef`.

An ensemble is **parameters with a member axis**, not a new model. Its variables are one
:class:`~mlpjax.potential.PotentialParams` whose leaves carry a leading member axis ``[M, ...]``:

* ``kind="full"``: every network parameter is ``[M, ...]`` (M independent networks; Lakshminarayanan
  et al. 2017);
* ``kind="shallow"``: only the *head* — the output layers, the parameters whose last dimension is 1
  in the ``"params"`` collection (every mlpjax model's per-atom readout: SchNet/PaiNN ``readout_1``,
  BPNN/ANI ``w_last``, MACE/NequIP scalar readouts, DimeNet++ ``output_k/out``) — is ``[M, ...]``;
  the rest is shared, so ``jax.vmap`` over the member axis computes the shared network once and the
  heads M times (Kellner & Ceriotti, Mach. Learn.: Sci. Technol. 5, 035006 (2024)).
* the fitted normalisation (E0 ``[M, S]``, shift ``[M]``, scale ``[M]``) is per member in both.

:class:`EnsembleDef` is a :class:`~mlpjax.potential.PotentialDef` (frozen, hashable, compared by
value: compile caches key on it) whose :meth:`atomic_energies` is the **member mean**, so
``predict``, the jax-md energy and force functions, the MD engine and the ASE calculator give the
ensemble mean with no special case: the mean force is the force of the mean energy (one
``jax.grad``). :meth:`member_predict` and :meth:`member_force_fn_of_params` give each member's
values (uncertainty, shallow-ensemble training, the MD uncertainty check).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp

from mlpjax.potential import PotentialDef, PotentialParams, parameter_paths

KINDS = ("full", "shallow")


def head_paths(params) -> tuple[str, ...]:
    """The parameter paths of a model's output layers: leaves of the ``"params"`` collection whose
    last dimension is 1 (kernel ``[k, 1]``, bias ``[1]``). See the module docstring."""
    paths = parameter_paths(params)
    leaves = jax.tree_util.tree_leaves(params)
    heads = tuple(p for p, x in zip(paths, leaves) if p.startswith("params/") and jnp.ndim(x) >= 1 and x.shape[-1] == 1)
    if not heads:
        raise ValueError("found no output layer (a parameter whose last dimension is 1) for a shallow ensemble")
    return heads


@dataclasses.dataclass(frozen=True)
class EnsembleDef(PotentialDef):
    """M members of one architecture (see the module docstring)."""

    members: int = 2  # M
    kind: str = "full"  # "full" | "shallow"
    heads: tuple[str, ...] = ()  # shallow: paths of the parameters that carry the member axis

    reference_energies_ndim: ClassVar[int] = 2  # E0 is [M, S]

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"ensemble kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if int(self.members) < 1:
            raise ValueError(f"an ensemble needs >= 1 member, got {self.members}")
        if self.kind == "shallow" and not self.heads:
            raise ValueError("a shallow ensemble needs its head parameter paths (mlpjax.ensemble.head_paths)")

    @functools.cached_property
    def member(self) -> PotentialDef:
        """One member's architecture (a plain PotentialDef)."""
        return PotentialDef(model=self.model, model_config=self.model_config, cutoff=self.cutoff,
                            species=self.species, avg_num_neighbors=self.avg_num_neighbors)

    # ---------------------------------------------------------------- the member axis
    def param_axes(self, params):
        """vmap ``in_axes`` of the network parameters: 0 on member-stacked leaves, None on shared ones."""
        if self.kind == "full":
            return jax.tree_util.tree_map(lambda _: 0, params)
        stacked = set(self.heads)
        paths = iter(parameter_paths(params))
        return jax.tree_util.tree_map(lambda _: 0 if next(paths) in stacked else None, params)

    def variable_axes(self, variables: PotentialParams) -> PotentialParams:
        return PotentialParams(params=self.param_axes(variables.params), reference_energies=0, energy_shift=0,
                               energy_scale=0)

    def stack(self, member_params: list):
        """Member-stacked parameters from M member parameter trees (shallow: shared leaves from member 0)."""
        if len(member_params) != int(self.members):
            raise ValueError(f"expected {self.members} member parameter sets, got {len(member_params)}")
        full = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *member_params)
        if self.kind == "full":
            return full
        axes = self.param_axes(member_params[0])
        return jax.tree_util.tree_map(lambda a, s, first: s if a == 0 else first, axes, full, member_params[0],
                                      is_leaf=lambda x: x is None)

    def unstack(self, variables: PotentialParams, m: int) -> PotentialParams:
        """Member ``m``'s variables (a plain PotentialParams of :attr:`member`)."""
        axes = self.variable_axes(variables)
        return jax.tree_util.tree_map(lambda a, x: x if a is None else x[m], axes, variables,
                                      is_leaf=lambda x: x is None)

    def init_params(self, key: jax.Array) -> Any:
        """Member-stacked fresh parameters: member m from ``fold_in(key, m)`` (member 0 from ``key``)."""
        keys = [key] + [jax.random.fold_in(key, m) for m in range(1, int(self.members))]
        return self.stack([self.member.init_params(k) for k in keys])

    # ---------------------------------------------------------------- energies
    def member_atomic_energies(self, variables: PotentialParams, vectors, species, senders, receivers,
                               edge_mask) -> jax.Array:
        """[M, n_nodes] eV: every member's per-atom energies."""
        def one(v):
            return self.member.atomic_energies(v, vectors, species, senders, receivers, edge_mask)

        return jax.vmap(one, in_axes=(self.variable_axes(variables),))(variables)

    def atomic_energies(self, variables: PotentialParams, vectors, species, senders, receivers, edge_mask) -> jax.Array:
        """[n_nodes] eV, the member mean (so every consumer of a PotentialDef sees the ensemble mean)."""
        return jnp.mean(self.member_atomic_energies(variables, vectors, species, senders, receivers, edge_mask), axis=0)

    def member_predict(self, variables: PotentialParams, batch, *, compute_stress: bool = True):
        """:class:`~mlpjax.potential.Predictions` of every member, leaves ``[M, ...]``."""
        def one(v):
            return self.member.predict(v, batch, compute_stress=compute_stress)

        return jax.vmap(one, in_axes=(self.variable_axes(variables),))(variables)

    def member_force_fn_of_params(self, displacement_fn, numbers=None, *, pair_fraction: float = 1.0) -> Callable:
        """``f(variables, R, neighbor, **kwargs) -> [M, n_atoms, 3]`` eV/Å: every member's forces
        from a jax-md neighbour list (the MD uncertainty check); ``pair_fraction`` as in
        :meth:`~mlpjax.potential.PotentialDef.jaxmd_properties`."""
        force = self.member.force_fn_of_params(displacement_fn, numbers, pair_fraction=pair_fraction)

        def forces(variables, R, neighbor=None, **kwargs):
            return jax.vmap(lambda v: force(v, R, neighbor=neighbor, **kwargs),
                            in_axes=(self.variable_axes(variables),))(variables)

        return forces
