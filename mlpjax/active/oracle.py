"""Oracles: the reference method that labels structures (energy, forces, stress).

An oracle is any ASE calculator, named by a small picklable :class:`OracleSpec` so that labelling
can build it inside worker processes (:mod:`mlpjax.active.labelling`). :func:`make_oracle` turns a
name, a YAML mapping or keyword options into a checked spec::

    make_oracle("emt")                                   # ASE's EMT (default; runs everywhere)
    make_oracle("pyscf", xc="pbe", basis="def2-svp")     # PySCF DFT, molecules only
    make_oracle({"name": "xtb", "charge": 0})            # tblite GFN2-xTB (as in YAML: oracle: {name: xtb})
    make_oracle("ase:ase.calculators.lj:LennardJones", sigma=2.3, epsilon=0.4)  # any ASE calculator

========  =====================================================  ==========================================
name      calculator                                             options (default)
========  =====================================================  ==========================================
emt       ``ase.calculators.emt.EMT``                            —
pyscf     :class:`PySCFCalculator` (``pip install "mlpjax[pyscf]"``)  xc (pbe; "hf" = Hartree–Fock), basis
                                                                 (def2-svp), charge (0), spin (0 = 2S,
                                                                 unpaired electrons), max_cycle (100),
                                                                 conv_tol (1e-9 Hartree), density_fit
                                                                 (false), threads (null = PySCF's default)
xtb       :class:`TBLiteCalculator` (``pip install "mlpjax[xtb]"``)  method (GFN2-xTB), charge (0), spin (0),
                                                                 accuracy (1.0), max_iterations (250),
                                                                 electronic_temperature_K (300)
ase:M:C   class ``C`` of module ``M``, called with the options   any keyword arguments of ``C``
========  =====================================================  ==========================================

Units. What an oracle returns is in mlpjax's units: energy [eV], forces [n_atoms, 3] eV/Å, stress
[3, 3] eV/Å^3 (ASE sign, σ = (1/V) ∂E/∂ε; only for fully periodic cells). PySCF and tblite work in
atomic units; their wrappers here pass positions in Bohr and convert energies (Hartree → eV) and
gradients (Hartree/Bohr → eV/Å) with the constants of :mod:`mlpjax.units` — the one set of
constants mlpjax uses. (tblite's own ``tblite.ase.TBLite`` and PySCF's ``unit="Angstrom"`` would
convert with ``ase.units`` / ``pyscf.data.nist``, other CODATA editions, so forces would not be
exactly −dE/dR in mlpjax's units; hence the small wrappers.)

Failures. :func:`evaluate` raises :class:`OracleError` with a ``reason`` — ``"not_converged"``
(SCF), ``"unsupported"`` (e.g. a periodic cell given to PySCF), ``"nan"`` (a non-finite result) —
which labelling records and skips; any other exception is recorded as ``"exception"``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import numbers
from typing import Any

import numpy as np

from mlpjax.config import ConfigError, suggest

ORACLES = ("emt", "pyscf", "xtb", "ase:MODULE:CLASS")
REASONS = ("exception", "not_converged", "unsupported", "nan", "timeout", "crashed")  # labelling's failure reasons

# name -> {option: default}; the defaults are what an unset option means (written into the spec's description)
_OPTIONS: dict[str, dict[str, Any]] = {
    "emt": {},
    "pyscf": {"xc": "pbe", "basis": "def2-svp", "charge": 0, "spin": 0, "max_cycle": 100, "conv_tol": 1e-9,
              "density_fit": False, "threads": None},
    "xtb": {"method": "GFN2-xTB", "charge": 0, "spin": 0, "accuracy": 1.0, "max_iterations": 250,
            "electronic_temperature_K": 300.0},
}
_EXTRAS = {"pyscf": ("pyscf", 'pip install "mlpjax[pyscf]"'), "xtb": ("tblite", 'pip install "mlpjax[xtb]"')}
_XTB_METHODS = ("GFN2-xTB", "GFN1-xTB", "IPEA1-xTB")


class OracleError(RuntimeError):
    """The oracle could not label one structure; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, message: str, *, reason: str = "exception"):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class OracleResult:
    """The labels of one structure, in mlpjax's units."""

    energy: float  # eV, total energy
    forces: np.ndarray  # [n_atoms, 3] eV/Å
    stress: np.ndarray | None  # [3, 3] eV/Å^3, ASE sign convention; None unless the cell is periodic in 3D


@dataclasses.dataclass(frozen=True)
class OracleSpec:
    """A picklable description of an oracle; :meth:`calculator` builds it (in any process).

    ``name``: ``"emt"``, ``"pyscf"``, ``"xtb"`` or ``"ase:MODULE:CLASS"``; ``options``: the checked
    options as sorted ``(key, value)`` pairs (for pyscf/xtb every option, defaults filled in).
    Build it with :func:`make_oracle`.
    """

    name: str = "emt"
    options: tuple = ()

    @property
    def kwargs(self) -> dict:
        return dict(self.options)

    def describe(self) -> str:
        """A short label, written into every labelled frame's ``info["oracle"]``: ``emt``,
        ``pyscf:pbe/def2-svp``, ``xtb:GFN2-xTB``, ``ase:ase.calculators.lj:LennardJones``."""
        kw = self.kwargs
        if self.name == "pyscf":
            extra = "".join(f",{k}={kw[k]}" for k in ("charge", "spin") if kw[k])
            return f"pyscf:{kw['xc']}/{kw['basis']}{extra}"
        if self.name == "xtb":
            extra = "".join(f",{k}={kw[k]}" for k in ("charge", "spin") if kw[k])
            return f"xtb:{kw['method']}{extra}"
        return self.name

    def to_dict(self) -> dict:
        """The YAML/JSON form (``{name: ..., option: value, ...}``); :func:`make_oracle` reads it back."""
        return {"name": self.name, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in self.options}}

    def calculator(self):
        """A fresh ASE calculator for this oracle."""
        kw = self.kwargs
        if self.name == "emt":
            from ase.calculators.emt import EMT

            return EMT()
        if self.name == "pyscf":
            return PySCFCalculator(**kw)
        if self.name == "xtb":
            return TBLiteCalculator(**kw)
        return _import_class(self.name)(**kw)


def _import_class(name: str):
    """The class named by ``ase:package.module:ClassName``."""
    _, module, cls = name.split(":")
    return getattr(importlib.import_module(module), cls)


def _fmt(value) -> str:
    return format(value, "g") if isinstance(value, float) else repr(value)


def _check_value(oracle: str, key: str, value):
    """The option value, checked (and ints given for floats turned into floats)."""
    default = _OPTIONS[oracle][key]
    where = f"{oracle} option {key}"
    if key in ("charge",):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{where} must be an integer (elementary charges), got {_fmt(value)}", option=key)
        return int(value)
    if key == "spin":
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ConfigError(f"{where} must be an integer >= 0 (2S, the number of unpaired electrons), got "
                              f"{_fmt(value)}", option=key)
        return int(value)
    if key in ("max_cycle", "max_iterations", "threads"):
        if value is None and key == "threads":
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ConfigError(f"{where} must be an integer >= 1, got {_fmt(value)}", option=key)
        return int(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {_fmt(value)}", option=key)
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or not value > 0:
            raise ConfigError(f"{where} must be a number > 0, got {_fmt(value)}", option=key)
        return float(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string, got {_fmt(value)}", option=key)
    if key == "method" and value not in _XTB_METHODS:
        raise ConfigError(f"xtb option method must be one of {', '.join(_XTB_METHODS)}, got {value!r}", option=key)
    return value


def _check_pyscf_names(xc: str, basis: str) -> None:
    """Unknown functionals / basis sets are a ConfigError now, not an exception per structure later."""
    from pyscf import gto
    from pyscf.dft import libxc

    if xc.lower() not in ("hf", "rhf", "uhf"):
        try:
            libxc.parse_xc(xc)
        except Exception:  # KeyError / ValueError, depending on the PySCF version
            raise ConfigError(f"pyscf option xc: unknown functional {xc!r} (a libxc name such as pbe, b3lyp, "
                              "pbe0, or hf)", option="xc") from None
    try:
        gto.basis.load(basis, "H")
    except Exception:
        raise ConfigError(f"pyscf option basis: unknown basis set {basis!r} (a PySCF name such as def2-svp, "
                          "6-31g*, cc-pvdz)", option="basis") from None


def make_oracle(spec: "str | dict | OracleSpec | None" = "emt", **options) -> OracleSpec:
    """A checked :class:`OracleSpec` from a name (``"emt"``, ``"pyscf"``, ``"xtb"``,
    ``"ase:MODULE:CLASS"``), a mapping ``{name: ..., **options}`` (the YAML form) or a spec, plus
    keyword ``options``. Raises :class:`mlpjax.config.ConfigError` (one line) for an unknown oracle
    or option, a bad option value, or a missing optional package (naming the pip extra)."""
    if isinstance(spec, OracleSpec):
        if not options:
            return spec
        spec = spec.to_dict()
    if spec is None:
        spec = "emt"
    if isinstance(spec, dict):
        spec = dict(spec)
        if "name" not in spec:
            raise ConfigError(f"an oracle mapping needs a name (one of {', '.join(ORACLES)}), got keys "
                              f"{', '.join(map(str, spec)) or 'none'}", option="name")
        name = spec.pop("name")
        options = {**spec, **options}
    else:
        name = spec
    if not isinstance(name, str) or not name:
        raise ConfigError(f"oracle must be one of {', '.join(ORACLES)}, got {_fmt(name)}", option="name")
    if name.startswith("ase:"):
        parts = name.split(":")
        if len(parts) != 3 or not all(parts[1:]):
            raise ConfigError(f"oracle {name!r}: write an ASE calculator as ase:package.module:ClassName", option="name")
        try:
            cls = _import_class(name)
        except ImportError as err:
            raise ConfigError(f"oracle {name!r}: cannot import module {parts[1]!r} ({err})", option="name") from None
        except AttributeError:
            raise ConfigError(f"oracle {name!r}: module {parts[1]!r} has no {parts[2]!r}", option="name") from None
        if not callable(cls):
            raise ConfigError(f"oracle {name!r}: {parts[2]!r} is not a class", option="name")
        for k, v in options.items():
            if not isinstance(k, str):
                raise ConfigError(f"oracle {name!r}: option names must be strings, got {k!r}", option="name")
        options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in options.items()}
        return OracleSpec(name, tuple(sorted(options.items())))
    if name not in _OPTIONS:
        raise ConfigError(f"unknown oracle {name!r}{suggest(name, _OPTIONS)}; choose from {', '.join(ORACLES)}",
                          option="name")
    known = _OPTIONS[name]
    for key in options:
        if key not in known:
            what = f"known: {', '.join(known)}" if known else "it takes no options"
            raise ConfigError(f"unknown {name} oracle option {key!r}{suggest(key, known)}; {what}", option=str(key))
    if name in _EXTRAS:
        module, pip = _EXTRAS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"the {name} oracle needs {module}, which is not installed: {pip}", option="name")
    values = {k: _check_value(name, k, options[k]) if k in options else d for k, d in known.items()}
    if name == "pyscf":
        _check_pyscf_names(values["xc"], values["basis"])
    return OracleSpec(name, tuple(sorted(values.items())))


def evaluate(spec: OracleSpec, atoms) -> OracleResult:
    """Label one structure (an ``ase.Atoms``, not modified) with ``spec``'s oracle.

    Stress is computed when the cell is periodic along all three directions and the calculator
    implements it. Raises :class:`OracleError` (reason ``"nan"``) for a non-finite result and
    (reason ``"not_converged"``) for ASE's ``SCFError``; other exceptions pass through.
    """
    from ase.calculators.calculator import SCFError

    atoms = atoms.copy()
    atoms.calc = calc = spec.calculator()
    try:
        energy = float(atoms.get_potential_energy())
        forces = np.array(atoms.get_forces(), dtype=np.float64)
        stress = None
        if bool(np.all(atoms.pbc)) and "stress" in getattr(calc, "implemented_properties", ()):
            stress = np.array(atoms.get_stress(voigt=False), dtype=np.float64)
    except SCFError as err:
        raise OracleError(f"SCF did not converge: {err}", reason="not_converged") from err
    if forces.shape != (len(atoms), 3):
        raise OracleError(f"forces have shape {forces.shape}, expected ({len(atoms)}, 3)")
    for what, value in (("energy", energy), ("forces", forces), ("stress", stress)):
        if value is not None and not np.all(np.isfinite(value)):
            raise OracleError(f"the oracle returned a non-finite {what}", reason="nan")
    return OracleResult(energy=energy, forces=forces, stress=stress)


# --------------------------------------------------------------------------- calculators
def _base_calculator():
    from ase.calculators.calculator import Calculator

    return Calculator


class PySCFCalculator(_base_calculator()):
    """PySCF Kohn–Sham DFT (or Hartree–Fock, ``xc="hf"``) for a molecule (no periodic cell).

    Restricted for ``spin == 0``, unrestricted otherwise. Positions go to PySCF in Bohr
    (``positions / mlpjax.units.BOHR_ANGSTROM``); the energy [Hartree] and the nuclear gradient
    [Hartree/Bohr] come back converted to eV and eV/Å with :mod:`mlpjax.units`. An SCF that does
    not converge in ``max_cycle`` iterations raises :class:`OracleError` (``"not_converged"``).
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, *, xc="pbe", basis="def2-svp", charge=0, spin=0, max_cycle=100, conv_tol=1e-9,
                 density_fit=False, threads=None):
        super().__init__()
        self.settings = dict(xc=xc, basis=basis, charge=charge, spin=spin, max_cycle=max_cycle, conv_tol=conv_tol,
                             density_fit=density_fit, threads=threads)

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        from ase.calculators.calculator import all_changes
        from pyscf import dft, gto, lib, scf

        from mlpjax.units import BOHR_ANGSTROM, HARTREE_EV

        super().calculate(atoms, properties, system_changes or all_changes)
        s = self.settings
        if np.any(self.atoms.pbc):
            raise OracleError("the pyscf oracle labels molecules only (pbc must be False); use a periodic code "
                              "through ase:MODULE:CLASS for crystals and slabs", reason="unsupported")
        if s["threads"]:
            lib.num_threads(s["threads"])
        pos_bohr = self.atoms.positions / BOHR_ANGSTROM  # [n, 3] Bohr
        try:
            mol = gto.M(atom=[(int(z), tuple(p)) for z, p in zip(self.atoms.numbers, pos_bohr)], unit="Bohr",
                        basis=s["basis"], charge=s["charge"], spin=s["spin"], verbose=0)
        except RuntimeError as err:  # e.g. charge/spin inconsistent with the electron count
            raise OracleError(f"pyscf could not build the molecule: {err}", reason="unsupported") from err
        xc = s["xc"].lower()
        if xc in ("hf", "rhf", "uhf"):
            mf = scf.RHF(mol) if s["spin"] == 0 else scf.UHF(mol)
        else:
            mf = dft.RKS(mol) if s["spin"] == 0 else dft.UKS(mol)
            mf.xc = s["xc"]
        if s["density_fit"]:
            mf = mf.density_fit()
        mf.max_cycle, mf.conv_tol = s["max_cycle"], s["conv_tol"]
        e_hartree = mf.kernel()
        if not mf.converged:
            raise OracleError(f"pyscf SCF ({s['xc']}/{s['basis']}) did not converge in {s['max_cycle']} cycles "
                              f"(conv_tol {s['conv_tol']:g} Hartree)", reason="not_converged")
        grad = mf.nuc_grad_method().kernel()  # [n, 3] Hartree/Bohr
        self.results["energy"] = float(e_hartree) * HARTREE_EV
        self.results["free_energy"] = self.results["energy"]
        self.results["forces"] = -np.asarray(grad) * (HARTREE_EV / BOHR_ANGSTROM)


class TBLiteCalculator(_base_calculator()):
    """tblite's extended tight binding (GFN2-xTB by default) through its library interface.

    Positions and the cell go to tblite in Bohr; energy [Hartree], gradient [Hartree/Bohr] and
    virial [Hartree] come back converted with :mod:`mlpjax.units` (stress = virial / V, as in
    ``tblite.ase``, for cells periodic in 3D). An SCC that does not converge raises
    :class:`OracleError` (``"not_converged"``).
    """

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, *, method="GFN2-xTB", charge=0, spin=0, accuracy=1.0, max_iterations=250,
                 electronic_temperature_K=300.0):
        super().__init__()
        self.settings = dict(method=method, charge=charge, spin=spin, accuracy=accuracy, max_iterations=max_iterations,
                             electronic_temperature_K=electronic_temperature_K)

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        from ase.calculators.calculator import all_changes
        from tblite.interface import Calculator

        from mlpjax.units import BOHR_ANGSTROM, HARTREE_EV, kT

        super().calculate(atoms, properties, system_changes or all_changes)
        s = self.settings
        pbc = np.asarray(self.atoms.pbc, dtype=bool)
        try:
            calc = Calculator(s["method"], self.atoms.numbers, self.atoms.positions / BOHR_ANGSTROM,
                              charge=float(s["charge"]), uhf=int(s["spin"]),
                              lattice=self.atoms.cell.array / BOHR_ANGSTROM if pbc.any() else None,
                              periodic=pbc if pbc.any() else None)
            calc.set("verbosity", 0)
            calc.set("accuracy", s["accuracy"])
            calc.set("max-iter", s["max_iterations"])
            calc.set("temperature", kT(s["electronic_temperature_K"]) / HARTREE_EV)  # Hartree
            res = calc.singlepoint()
        except RuntimeError as err:
            reason = "not_converged" if "converge" in str(err).lower() else "exception"
            raise OracleError(f"tblite {s['method']}: {err}", reason=reason) from err
        self.results["energy"] = float(res.get("energy")) * HARTREE_EV
        self.results["free_energy"] = self.results["energy"]
        self.results["forces"] = -np.asarray(res.get("gradient")) * (HARTREE_EV / BOHR_ANGSTROM)
        if pbc.all():
            virial = np.asarray(res.get("virial")) * HARTREE_EV  # [3, 3] eV
            self.results["stress"] = (virial / self.atoms.get_volume()).flat[[0, 4, 8, 5, 2, 1]]
