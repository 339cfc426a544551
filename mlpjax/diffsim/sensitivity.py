"""Sensitivity analysis: which parameter groups of a potential a simulated observable depends on.

    value, grads = sim.value_and_grad(observable, variables, start)      # backprop (one scalar O)
    # or: grads = jax.grad(lambda v: peak(diffsim.reweighted_average(v, ref, g_of)[0]))(variables)
    rows = diffsim.sensitivity(grads, variables)                         # groups: params/embedding, ...
    print(diffsim.format_sensitivity(rows, unit="Å²"))

**What is computed.** The input is the gradient g = ∂O/∂θ of ONE scalar observable O (an RDF
peak height, an MSD, a mean energy) — from either estimator of :mod:`mlpjax.diffsim` — as a
:class:`~mlpjax.potential.PotentialParams` or a network-parameter dict. The leaves are split into
groups and, for each group G (θ_G its parameters, n_G scalars):

* ``grad_norm`` = ‖∂O/∂θ_G‖₂, in O's unit per parameter unit. Not comparable between groups whose
  parameters have different units or scales (a kernel vs a bias, eV vs Å).
* ``relative`` = ‖θ_G ⊙ ∂O/∂θ_G‖₂ = ‖∂O/∂ log|θ_G|‖₂, in O's unit: the gradient with respect to
  *relative* changes θ_i → θ_i (1 + δ_i), i.e. the largest first-order change of O for relative
  changes of L2 norm 1 (one parameter changed by 100 %, or each of n by 100 %/√n). Unit-free in
  θ, so groups compare; the groups partition the leaves, so the squares add up to the whole
  model's ‖θ ⊙ ∂O/∂θ‖² (the ``share`` column of :func:`format_sensitivity`). For a group of one
  scalar (a Morse D, α or r0) it is |∂O/∂ log θ|: O's first-order change for a 100 % change.
* ``scaling`` = Σ θ_G · ∂O/∂θ_G = dO/dt for θ_G → (1 + t) θ_G, in O's unit, signed: the
  first-order change when the whole group is scaled by 1 + t (what a finite difference of O with
  the group scaled by 1 ± h measures; the tests check it). |scaling| ≤ √n_G · relative, and for a
  network block it can be far smaller than ``relative`` (its weights' effects cancel), so the two
  answer different questions: "how much can O move per relative change of this block" vs "what
  does scaling this block do".

Both need ``variables`` (θ at which g was taken); without them only ``grad_norm`` is given.
Parameters equal to zero (``energy_shift`` 0 of a pair potential) have no relative sensitivity by
construction: read their ``grad_norm``.

**Groups.** By default a leaf's group is the first ``depth`` components of its path — the paths of
:func:`mlpjax.potential.parameter_paths` on the network parameters (``params/embedding/embedding``
→ ``params/embedding`` at depth 2), and ``reference_energies``, ``energy_shift``, ``energy_scale``
for the other fields of a :class:`PotentialParams` — in tree order (a group appears where its first
leaf does). ``groups`` names them instead: ``{"interaction 0": ("params/filter_0_*",
"params/in2f_0", ...), ...}`` or a list of patterns (each its own group); a pattern is an
``fnmatch`` pattern as ``mlpjax train --freeze`` takes (``*`` crosses ``/``) that also matches the
subtree under it (``params/in2f_0`` matches ``params/in2f_0/kernel``). Every leaf belongs to
exactly one group: leaves no pattern matches form the group ``(other)``; a leaf two groups match,
and a pattern that matches no leaf, are errors (with the paths that exist).

**How far to trust the numbers.** They are exactly those of the gradient given. A backpropagated
gradient of a long chaotic run is dominated by its exploding tangent (``gradient_norm_vs_horizon``:
keep horizons ≲ 1 ps or truncate); a reweighted one is a statistical estimate (per replica spread:
run the analysis on each replica's frames), and valid only while N_eff is large. One
observable's sensitivity is local (first order, at θ), not a global importance measure.

A host-side summary in float64 (numpy), run once per gradient: nothing to jit.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Mapping, Sequence

import jax
import numpy as np

from mlpjax.potential import PotentialParams, parameter_paths

__all__ = ["GroupSensitivity", "sensitivity", "format_sensitivity"]

OTHER = "(other)"  # the group of leaves no pattern of ``groups`` matches


@dataclasses.dataclass(frozen=True)
class GroupSensitivity:
    """One parameter group's sensitivity (see the module docstring; units are O's)."""

    group: str  # the group's name: a path prefix (default), a key of ``groups``, or "(other)"
    paths: tuple  # the parameter paths of its leaves, in tree order
    n_params: int  # scalars in the group
    grad_norm: float  # ‖∂O/∂θ_G‖₂, [O] per parameter unit
    relative: float | None = None  # ‖θ_G ⊙ ∂O/∂θ_G‖₂ [O]; None without variables
    scaling: float | None = None  # Σ θ_G ∂O/∂θ_G = dO/dt for θ_G → (1 + t) θ_G [O], signed; None without variables

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"paths": list(self.paths)}


def _named_leaves(tree) -> list[tuple[str, np.ndarray]]:
    """(path, float64 array) of every leaf: network paths as :func:`parameter_paths`, the other
    fields of a PotentialParams by their names."""
    if isinstance(tree, PotentialParams):
        out = list(zip(parameter_paths(tree.params), jax.tree_util.tree_leaves(tree.params)))
        out += [(f, getattr(tree, f)) for f in PotentialParams._fields[1:]]
    else:
        out = list(zip(parameter_paths(tree), jax.tree_util.tree_leaves(tree)))
    return [(p, np.asarray(x, np.float64)) for p, x in out]


def _matches(path: str, pattern: str) -> bool:
    pattern = pattern.rstrip("/")
    return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern + "/*")


def _assign(paths: list[str], groups, depth: int) -> list[str]:
    """The group name of every path (see the module docstring)."""
    if groups is None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        return ["/".join(p.split("/")[:depth]) for p in paths]
    if isinstance(groups, str):
        raise TypeError("groups must be a mapping {name: pattern(s)} or a list of patterns, not one string: "
                        f"use groups=[{groups!r}]")
    if not isinstance(groups, Mapping):
        groups = {g: g for g in groups}
    if OTHER in groups:
        raise ValueError(f"{OTHER!r} is the name of the unmatched leaves' group: name the group otherwise")
    patterns = {name: (pats,) if isinstance(pats, str) else tuple(pats) for name, pats in groups.items()}
    for name, pats in patterns.items():
        for pat in pats:
            if not any(_matches(p, pat) for p in paths):
                examples = ", ".join(paths[:: max(len(paths) // 6, 1)][:6])
                raise ValueError(f"group {name!r}: pattern {pat!r} matches no parameter; the {len(paths)} paths "
                                 f"include {examples} (fnmatch patterns, a prefix matches its subtree)")
    out = []
    for p in paths:
        hit = [name for name, pats in patterns.items() if any(_matches(p, pat) for pat in pats)]
        if len(hit) > 1:
            raise ValueError(f"parameter {p!r} is in groups {', '.join(map(repr, hit))}: every parameter must be in "
                             "at most one group; make the patterns narrower")
        out.append(hit[0] if hit else OTHER)
    return out


def sensitivity(grads, variables=None, *, groups: Mapping[str, str | Sequence[str]] | Sequence[str] | None = None,
                depth: int = 2, sort_by: str | None = None) -> list[GroupSensitivity]:
    """Per parameter group: size, ‖∂O/∂θ‖, and with ``variables`` ‖θ ⊙ ∂O/∂θ‖ and Σ θ ∂O/∂θ.

    Args:
      grads: the gradient of one scalar observable O: a :class:`PotentialParams` (as
        ``DiffTrajectory.value_and_grad`` or ``jax.grad`` of a reweighted average give) or a
        network-parameter pytree (its ``.params``).
      variables: the parameters θ the gradient was taken at, of the same structure (a
        PotentialParams with dict ``grads`` is reduced to its ``.params``). None: only norms.
      groups: ``{name: pattern or patterns}`` or a list of patterns (module docstring); None:
        groups by the first ``depth`` path components.
      sort_by: None (tree order, or the order of ``groups`` then "(other)"), ``"relative"`` or
        ``"grad_norm"`` (largest first).
    Returns: a list of :class:`GroupSensitivity`, one per non-empty group.
    """
    g_leaves = _named_leaves(grads)
    paths = [p for p, _ in g_leaves]
    if variables is not None:
        if isinstance(variables, PotentialParams) and not isinstance(grads, PotentialParams):
            variables = variables.params
        v_leaves = _named_leaves(variables)
        if [p for p, _ in v_leaves] != paths:
            raise ValueError("variables and grads have different parameter trees: pass the parameters the gradient "
                             "was taken at (the same PotentialParams, or both network-parameter dicts)")
        for (p, g), (_, v) in zip(g_leaves, v_leaves):
            if g.shape != v.shape:
                raise ValueError(f"parameter {p!r}: gradient shape {g.shape} but value shape {v.shape}")
    if sort_by not in (None, "relative", "grad_norm"):
        raise ValueError(f"sort_by must be None, 'relative' or 'grad_norm', got {sort_by!r}")
    if sort_by == "relative" and variables is None:
        raise ValueError("sort_by='relative' needs the variables (θ) the gradient was taken at")
    names = _assign(paths, groups, depth)
    order = list(dict.fromkeys(list(groups) if isinstance(groups, Mapping) else []))
    order = [n for n in order if n in names] + [n for n in dict.fromkeys(names) if n not in order]
    if OTHER in order:  # the unmatched leaves last
        order = [n for n in order if n != OTHER] + [OTHER]
    rows = []
    for name in order:
        idx = [k for k, n in enumerate(names) if n == name]
        g = np.concatenate([g_leaves[k][1].ravel() for k in idx])  # [n_G] O per parameter unit
        row = {"group": name, "paths": tuple(paths[k] for k in idx), "n_params": int(g.size),
               "grad_norm": float(np.linalg.norm(g))}
        if variables is not None:
            theta = np.concatenate([v_leaves[k][1].ravel() for k in idx])  # [n_G] parameter units
            row["relative"] = float(np.linalg.norm(theta * g))
            row["scaling"] = float(np.dot(theta, g))
        rows.append(GroupSensitivity(**row))
    if sort_by is not None:
        rows.sort(key=lambda r: -np.nan_to_num(getattr(r, sort_by), nan=-np.inf))
    return rows


def format_sensitivity(rows: Sequence[GroupSensitivity], *, unit: str = "", title: str | None = None) -> str:
    """A Markdown table of :func:`sensitivity`'s rows plus a total row; ``share`` is each
    group's fraction of the whole model's ‖θ ⊙ ∂O/∂θ‖² (they add up to 1), ``unit`` O's unit."""
    u = f" [{unit}]" if unit else ""
    have_rel = bool(rows) and rows[0].relative is not None
    head = ["group", "parameters", "‖∂O/∂θ‖"]
    if have_rel:
        head += [f"‖θ⊙∂O/∂θ‖{u}", "share", f"dO/d ln(scale){u}"]
    total_rel2 = sum(r.relative**2 for r in rows) if have_rel else 0.0

    def num(x):
        return "nan" if not np.isfinite(x) else f"{x:.3g}"

    body = []
    for r in rows:
        line = [r.group, str(r.n_params), num(r.grad_norm)]
        if have_rel:
            share = r.relative**2 / total_rel2 if total_rel2 > 0 else float("nan")
            line += [num(r.relative), f"{share:.1%}" if np.isfinite(share) else "nan", f"{r.scaling:+.3g}"]
        body.append(line)
    total = ["total", str(sum(r.n_params for r in rows)), num(float(np.sqrt(sum(r.grad_norm**2 for r in rows))))]
    if have_rel:
        total += [num(float(np.sqrt(total_rel2))), "100%", f"{sum(r.scaling for r in rows):+.3g}"]
    lines = ([f"**{title}**", ""] if title else []) + ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(line) + " |" for line in body + [total]]
    return "\n".join(lines)
