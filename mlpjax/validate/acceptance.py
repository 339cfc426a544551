"""Acceptance checks of a validation report: the potential's lattice constant, bulk modulus and
cubic elastic constants against the reference within relative tolerances, and NVE energy
drift at the reference timestep below the *good* level of :mod:`mlpjax.validate.dynamics`.
"""

from __future__ import annotations

import numpy as np

from mlpjax.validate.dynamics import DRIFT_GOOD_MEV_PER_ATOM_PS

__all__ = ["LATTICE_CONSTANT_REL_TOL", "BULK_MODULUS_REL_TOL", "ELASTIC_CONSTANT_REL_TOL", "acceptance_checks"]

LATTICE_CONSTANT_REL_TOL: float = 0.005
"""Acceptance level of the equilibrium lattice constant against the reference (relative, 0.5 %)."""

BULK_MODULUS_REL_TOL: float = 0.10
"""Acceptance level of the bulk modulus (E(V) fit) against the reference (relative, 10 %)."""

ELASTIC_CONSTANT_REL_TOL: float = 0.15
"""Acceptance level of C11, C12, C44 against the reference (relative, 15 %)."""


def _rel(model, ref):
    """(model − ref) / |ref|, NaN when either is missing or not finite or ref is 0."""
    if model is None or ref is None or not np.isfinite(ref) or ref == 0 or not np.isfinite(model):
        return float("nan")
    return float((model - ref) / abs(ref))


def acceptance_checks(sections: dict) -> list[dict]:
    """The acceptance checks of issue 5 that the computed sections allow: lattice constant
    (:data:`LATTICE_CONSTANT_REL_TOL`), bulk modulus (:data:`BULK_MODULUS_REL_TOL`), C11/C12/C44
    (:data:`ELASTIC_CONSTANT_REL_TOL`) against the reference, and the NVE drift at the reference
    timestep below :data:`DRIFT_GOOD_MEV_PER_ATOM_PS`."""
    checks = []

    def rel_check(name, unit, model, ref, tol):
        r = _rel(model, ref)
        checks.append({"name": name, "unit": unit, "model": model, "reference": ref, "rel_error": r, "tolerance": tol,
                       "passed": bool(np.isfinite(r) and abs(r) <= tol)})

    eos = sections.get("eos") or {}
    if eos.get("model") is not None and eos.get("reference") is not None:
        m, r = eos["model"], eos["reference"]
        rel_check("lattice constant a0", "Å", m.lattice_constant_A, r.lattice_constant_A, LATTICE_CONSTANT_REL_TOL)
        rel_check("bulk modulus B (E(V) fit)", "GPa", m.bulk_modulus_GPa, r.bulk_modulus_GPa, BULK_MODULUS_REL_TOL)
    el = sections.get("elastic") or {}
    if el.get("model") is not None and el.get("reference") is not None and el["reference"].cubic:
        for key in ("C11", "C12", "C44"):
            rel_check(key, "GPa", getattr(el["model"], f"{key}_GPa"), getattr(el["reference"], f"{key}_GPa"), ELASTIC_CONSTANT_REL_TOL)
    drift = sections.get("drift")
    if drift is not None and drift.reference is not None:
        r = drift.reference
        checks.append({"name": f"NVE drift at {r.timestep_fs:g} fs ({drift.dtype})", "unit": "meV/atom/ps",
                       "model": r.drift_meV_per_atom_per_ps, "reference": None, "rel_error": None,
                       "tolerance": DRIFT_GOOD_MEV_PER_ATOM_PS, "passed": r.status == "good"})
    return checks
