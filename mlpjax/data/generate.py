"""Reference data by design: a YAML recipe of structures and sampling sources → labelled extxyz
plus a composition report (``mlpjax data generate RECIPE.yaml --output OUT.xyz``).

A recipe maps 1:1 onto :class:`Recipe`; ``structures`` are built with ``ase.build`` (or read from a
file), ``sources`` sample configurations from them, and everything is labelled through the oracle
interface and the resumable writer of :mod:`mlpjax.active` (a killed run continues where it
stopped; nothing is labelled twice)::

    seed: 0
    oracle: emt                      # or {name: pyscf, xc: pbe, basis: def2-svp}, xtb, ase:MODULE:CLASS
    driver: emt                      # the cheap calculator that runs MD, NEB and relaxations
    structures:
      bulk: {bulk: {name: Cu, crystalstructure: fcc, a: 3.59, cubic: true}, repeat: [2, 2, 2]}
      slab: {fcc111: {symbol: Cu, size: [3, 3, 4], a: 3.59, vacuum: 8.0}}
      vac_a: {from: bulk, vacancy: 0, relax: true}
      vac_b: {from: bulk, vacancy: 0, hop: 1, relax: true}   # atom 1 moved into the vacancy at site 0
      mol: {file: water.xyz}                                 # relative to the recipe; {path: ..., index: 0}
    sources:
      - displacements: {structures: bulk, count: 10, amplitude_A: 0.01}
      - md: {structures: [bulk, slab], temperatures_K: [300, 600, 900, 1200], frames: 10}
      - rattle: {structures: bulk, count: 20, amplitude_A: 0.1}
      - strain: {structures: bulk, count: 20, max_strain: 0.04}
      - vacancies: {structures: bulk, count: 10}
      - surface: {structures: bulk, miller: [1, 0, 0], layers: 4, count: 10}
      - neb: {initial: vac_a, final: vac_b, images: 5}

Structures. One builder key per structure: an ``ase.build`` function (``bulk``, ``fcc111``,
``fcc100``, ``fcc110``, ``fcc211``, ``bcc100``, ``bcc110``, ``bcc111``, ``hcp0001``, ``hcp10m10``,
``diamond100``, ``diamond111``, ``molecule``) with its keyword arguments, ``file`` (any file ASE
reads, Å), or ``from`` (another structure). Modifiers: ``repeat`` (supercell, an integer or three),
``vacancy`` (delete this atom), ``hop`` (move this atom onto the vacancy's site: an NEB end point
whose atoms are in the same order as the plain vacancy), ``relax`` (relax the positions with the
driver to 0.01 eV/Å before sampling).

Sources and their ``config_type`` tags (``info["config_type"]`` of every frame; ``config_type:``
renames them) — the textbook's five kinds of training data:

==============  =====================================================  ===================  ================
source          samples                                                config_type          kind
==============  =====================================================  ===================  ================
displacements   Gaussian displacements of ``amplitude_A`` [Å] (0.01)    displacement         near-equilibrium
md              Langevin MD by the driver at each of ``temperatures_K``  md_300K, md_600K …   MD
                (``frames`` every ``stride`` steps after
                ``equilibration_steps``; ``timestep_fs``, ``friction_per_ps``)
neb             ASE NEB between ``initial`` and ``final`` (``images``,   neb                  reaction path
                ``climb``, relaxed with the driver to ``fmax`` eV/Å)
rattle          Gaussian displacements of ``amplitude_A`` [Å] (0.1)     rattle               random
strain          symmetric strain up to ``max_strain`` + a rattle        strain               random
vacancies       ``vacancies`` random atoms removed + a rattle           vacancy              defect
surface         ``ase.build.surface(miller, layers, vacuum_A)`` + rattle  surface_111 …       defect
emt_cu          exactly :func:`mlpjax.data.emt.emt_cu` (the ``emt-cu``   md_300K, rattle,     MD / random
                recipe; see :class:`EmtCu`)                              strain, liquid_1750K
==============  =====================================================  ===================  ================

Frames also carry ``info["structure"]`` (the structure's name) and, from MD, ``info["temperature_K"]``.
Every source draws from its own random stream (``numpy.random.default_rng([seed, index])``), so a
recipe gives the same frames every time (what makes a killed run resumable) — on the same machine
and library versions. MD and NEB run in this process with the driver; only labelling uses workers.

Units: positions and cells Å, energies eV, forces eV/Å, stress eV/Å^3, temperatures K, timestep
fs, friction 1/ps (converted to ASE's time unit with :mod:`mlpjax.units`; ASE's Langevin turns K
into eV with its own k_B, 4e-7 relative from mlpjax's).

The composition report (:func:`composition`, printed by the CLI and written next to the output as
``OUT.composition.json``) gives the share of each config_type and kind, energy-per-atom [eV/atom]
and force [eV/Å] ranges, the MD temperatures, and warns about the two classic failures of a
training set: too much near-equilibrium data (a near-equilibrium share above
:data:`MAX_NEAR_EQUILIBRIUM_SHARE`; the balanced sets of the literature keep equilibrium data at
about 40 % or less next to MD and reaction paths) and too narrow a temperature range (MD spanning
less than :data:`MIN_TEMPERATURE_SPAN_K`, or no MD at all: a potential used at temperatures it
was not trained at extrapolates).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import numbers
import os
import warnings
from typing import Any

import numpy as np

from mlpjax.config import ConfigError, read_yaml, suggest

RECIPES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recipes")
MAX_NEAR_EQUILIBRIUM_SHARE = 0.4  # warn above this share of near-equilibrium frames
MIN_TEMPERATURE_SPAN_K = 300.0  # warn when the MD temperatures span less (K)
KINDS = ("near_equilibrium", "md", "reaction_path", "random", "defect", "other")

_BUILDERS = ("bulk", "fcc100", "fcc110", "fcc111", "fcc211", "bcc100", "bcc110", "bcc111", "hcp0001", "hcp10m10",
             "diamond100", "diamond111", "molecule", "file", "from")
_SYMBOL_ARGS = {"bulk": "name"}  # the argument of each builder that names the element(s); default "symbol"
_MODIFIERS = ("repeat", "vacancy", "hop", "relax")


class CompositionWarning(UserWarning):
    """A data set shows one of the classic composition failures."""


# ------------------------------------------------------------------------------ fields
def _f(kind: str, default=dataclasses.MISSING, *, ok=None, valid: str = ""):
    """A dataclass field with its YAML kind and value check (``ok(value)``; ``valid`` says what is valid)."""
    return dataclasses.field(default=default, metadata={"kind": kind, "ok": ok, "valid": valid})


def _fmt(value) -> str:
    return format(value, "g") if isinstance(value, float) else repr(value)


def _coerce(name: str, kind: str, value):
    """A YAML value as the field's kind, or ConfigError naming the field."""
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{name} must be an integer, got {_fmt(value)}", option=name)
        return int(value)
    if kind in ("float", "float?"):
        if value is None and kind == "float?":
            return None
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ConfigError(f"{name} must be a number{' or null' if kind == 'float?' else ''}, got {_fmt(value)}",
                              option=name)
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {_fmt(value)}", option=name)
        return value
    if kind in ("str", "str?"):
        if value is None and kind == "str?":
            return None
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{name} must be a non-empty string, got {_fmt(value)}", option=name)
        return value
    if kind == "names":  # one structure name or a list of them
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{name} must be a structure name or a list of them, got {_fmt(value)}", option=name)
        return tuple(value)
    if kind == "numbers":
        value = [value] if isinstance(value, numbers.Real) and not isinstance(value, bool) else value
        if (not isinstance(value, (list, tuple)) or not value
                or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
            raise ConfigError(f"{name} must be a list of numbers such as [300, 600, 900], got {_fmt(value)}", option=name)
        return tuple(float(v) for v in value)
    if kind in ("int3", "repeat"):
        if kind == "repeat" and isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = [value] * 3
        if (not isinstance(value, (list, tuple)) or len(value) != 3
                or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)):
            what = "an integer or three integers such as [2, 2, 1]" if kind == "repeat" else "three integers such as [1, 1, 1]"
            raise ConfigError(f"{name} must be {what}, got {_fmt(value)}", option=name)
        return tuple(int(v) for v in value)
    raise AssertionError(kind)


def _validate_fields(obj) -> None:
    for f in dataclasses.fields(obj):
        meta = f.metadata
        if "kind" not in meta:
            continue
        value = getattr(obj, f.name)
        if value is None and meta["kind"].endswith("?"):
            continue
        coerced = _coerce(f.name, meta["kind"], value)
        if coerced is not value:
            object.__setattr__(obj, f.name, coerced)
        if meta["ok"] is not None and not meta["ok"](coerced):
            raise ConfigError(f"{f.name} must be {meta['valid']}, got {_fmt(coerced)}", option=f.name)


def _positive(v) -> bool:
    return v > 0


def _nonneg(v) -> bool:
    return v >= 0


# ------------------------------------------------------------------------------ sources
@dataclasses.dataclass(frozen=True)
class Displacements:
    """Small Gaussian displacements around each structure (near-equilibrium data)."""

    structures: tuple = _f("names")
    count: int = _f("int", ok=_nonneg, valid=">= 0")  # frames per structure
    amplitude_A: float = _f("float", 0.01, ok=_positive, valid="> 0 (Å)")  # Å, standard deviation per component
    config_type: str = _f("str", "displacement")

    def __post_init__(self):
        _validate_fields(self)


@dataclasses.dataclass(frozen=True)
class MD:
    """Langevin MD with the driver at each temperature (frames tagged ``{config_type}_{T}K``)."""

    structures: tuple = _f("names")
    temperatures_K: tuple = _f("numbers", ok=lambda v: all(t > 0 for t in v), valid="temperatures > 0 K")
    frames: int = _f("int", ok=_nonneg, valid=">= 0")  # per (structure, temperature)
    stride: int = _f("int", 10, ok=_positive, valid=">= 1")  # MD steps between frames
    equilibration_steps: int = _f("int", 100, ok=_nonneg, valid=">= 0")
    timestep_fs: float = _f("float", 2.0, ok=_positive, valid="> 0 (fs)")
    friction_per_ps: float = _f("float", 2.0, ok=_positive, valid="> 0 (1/ps)")
    config_type: str = _f("str", "md")

    def __post_init__(self):
        _validate_fields(self)


@dataclasses.dataclass(frozen=True)
class Rattle:
    """Large Gaussian displacements (random sampling: higher energies)."""

    structures: tuple = _f("names")
    count: int = _f("int", ok=_nonneg, valid=">= 0")
    amplitude_A: float = _f("float", 0.1, ok=_positive, valid="> 0 (Å)")
    config_type: str = _f("str", "rattle")

    def __post_init__(self):
        _validate_fields(self)


@dataclasses.dataclass(frozen=True)
class Strain:
    """Random symmetric strains (components uniform in ±``max_strain``) plus a small rattle; teach the stress."""

    structures: tuple = _f("names")
    count: int = _f("int", ok=_nonneg, valid=">= 0")
    max_strain: float = _f("float", 0.04, ok=lambda v: 0 < v < 0.5, valid="in (0, 0.5)")
    rattle_A: float = _f("float", 0.02, ok=_nonneg, valid=">= 0 (Å)")
    config_type: str = _f("str", "strain")

    def __post_init__(self):
        _validate_fields(self)


@dataclasses.dataclass(frozen=True)
class Vacancies:
    """``vacancies`` random atoms removed per frame, then a rattle."""

    structures: tuple = _f("names")
    count: int = _f("int", ok=_nonneg, valid=">= 0")
    vacancies: int = _f("int", 1, ok=_positive, valid=">= 1")
    rattle_A: float = _f("float", 0.05, ok=_nonneg, valid=">= 0 (Å)")
    config_type: str = _f("str", "vacancy")

    def __post_init__(self):
        _validate_fields(self)


@dataclasses.dataclass(frozen=True)
class Surface:
    """Slabs cut from a bulk structure (``ase.build.surface``), repeated in-plane, rattled."""

    structures: tuple = _f("names")
    miller: tuple = _f("int3", ok=lambda v: any(v), valid="not all zero")
    count: int = _f("int", ok=_nonneg, valid=">= 0")
    layers: int = _f("int", 4, ok=_positive, valid=">= 1")
    vacuum_A: float = _f("float", 10.0, ok=_positive, valid="> 0 (Å, on each side)")
    repeat: tuple = _f("repeat", (1, 1, 1), ok=lambda v: min(v) >= 1, valid="integers >= 1")
    rattle_A: float = _f("float", 0.05, ok=_nonneg, valid=">= 0 (Å)")
    config_type: str | None = _f("str?", None)  # default surface_<hkl>

    def __post_init__(self):
        _validate_fields(self)

    @property
    def tag(self) -> str:
        return self.config_type or "surface_" + "".join(str(i) for i in self.miller)


@dataclasses.dataclass(frozen=True)
class NEB:
    """ASE NEB between two structures with the same atoms (all images, end points included, are frames)."""

    initial: str = _f("str")
    final: str = _f("str")
    images: int = _f("int", 5, ok=_positive, valid=">= 1 (images between the end points)")
    climb: bool = _f("bool", False)
    fmax: float = _f("float", 0.1, ok=_positive, valid="> 0 (eV/Å)")
    steps: int = _f("int", 200, ok=_nonneg, valid=">= 0")
    interpolation: str = _f("str", "idpp", ok=lambda v: v in ("idpp", "linear"), valid="idpp or linear")
    config_type: str = _f("str", "neb")

    def __post_init__(self):
        _validate_fields(self)

    @property
    def structures(self) -> tuple:
        return (self.initial, self.final)


@dataclasses.dataclass(frozen=True)
class EmtCu:
    """The frames of :func:`mlpjax.data.emt.emt_cu` — crystal MD at 300/500/700 K in 32- and 108-atom
    cells, rattled and strained cells, and a melted 108-atom liquid at 1,750 and 1,000 K — with the
    recipe's ``seed`` as emt_cu's seed, so ``mlpjax data emt-cu`` gives bit for bit the frames the
    quickstart's published numbers were measured on.

    Why not the generic sources: emt_cu draws every source from ONE random stream, converts its
    2 fs timestep with ASE's own femtosecond (its units module, CODATA 2014) and gives its Langevin friction (0.02) in
    ASE's inverse time unit. The generic ``md`` source converts fs and 1/ps with
    :mod:`mlpjax.units` (CODATA 2018, the one set of constants), which changes the timestep by
    ~4e-9 relative — enough for chaotic MD to give other frames after a few hundred steps. So this
    source keeps emt_cu's own sampling, and everything after it (tags, labelling through the
    oracle and the resumable writer, the composition report) is the generic path.
    """

    md_frames: int = _f("int", 30, ok=_nonneg, valid=">= 0")  # per (temperature, cell size) MD run
    rattled: int = _f("int", 40, ok=_nonneg, valid=">= 0")
    strained: int = _f("int", 40, ok=_nonneg, valid=">= 0")
    liquid_frames: int = _f("int", 20, ok=_nonneg, valid=">= 0")  # per liquid temperature; 0: no liquid

    def __post_init__(self):
        _validate_fields(self)

    @property
    def structures(self) -> tuple:
        return ()


SOURCES = {"displacements": Displacements, "md": MD, "rattle": Rattle, "strain": Strain, "vacancies": Vacancies,
           "surface": Surface, "neb": NEB, "emt_cu": EmtCu}
_KIND_OF = {Displacements: "near_equilibrium", MD: "md", NEB: "reaction_path", Rattle: "random", Strain: "random",
            Vacancies: "defect", Surface: "defect"}


# ------------------------------------------------------------------------------ structures
@dataclasses.dataclass(frozen=True)
class StructureSpec:
    """One named structure: ``builder`` (an ase.build function, ``file`` or ``from``) with ``args``."""

    name: str
    builder: str
    args: dict  # keyword arguments of the ase.build function; file: {path, index}; from: {name}
    repeat: tuple = _f("repeat", (1, 1, 1), ok=lambda v: min(v) >= 1, valid="integers >= 1")
    vacancy: int | None = None  # atom deleted (after repeat)
    hop: int | None = None  # atom moved onto the vacancy's site (before the deletion)
    relax: bool = _f("bool", False)

    def __post_init__(self):
        _validate_fields(self)
        for key in ("vacancy", "hop"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0):
                raise ConfigError(f"{key} must be an atom index >= 0, got {_fmt(v)}", option=key)
        if self.hop is not None and self.vacancy is None:
            raise ConfigError("hop moves an atom onto a vacancy's site: give vacancy too", option="hop")
        if self.hop is not None and self.hop == self.vacancy:
            raise ConfigError(f"hop must be another atom than the vacancy ({self.vacancy})", option="hop")


def _ase_builder(name: str):
    import ase.build

    return getattr(ase.build, name)


def _check_elements(spec: StructureSpec) -> None:
    from ase.data import atomic_numbers
    from ase.symbols import string2symbols

    key = _SYMBOL_ARGS.get(spec.builder, "symbol")
    if spec.builder in ("file", "from", "molecule") or key not in spec.args:
        return
    text = spec.args[key]
    try:
        symbols = string2symbols(text) if isinstance(text, str) else None
    except ValueError:
        symbols = None
    bad = None if symbols else text
    for s in symbols or ():
        if s not in atomic_numbers or s == "X":
            bad = s
            break
    if bad is not None:
        raise ConfigError(f"unknown element {bad!r} in {spec.builder} {key} {text!r} (a chemical symbol or formula "
                          "such as Cu, Pt, NaCl)", option=key)


def _build_one(spec: StructureSpec, built: dict, base_dir: str):
    """The ase.Atoms of ``spec`` (unrelaxed), ``built`` holding the structures defined above it."""
    if spec.builder == "from":
        atoms = built[spec.args["name"]].copy()
    elif spec.builder == "file":
        from mlpjax.data import read_structure

        c = read_structure(spec.args["path"], index=spec.args.get("index", -1))
        import ase

        atoms = ase.Atoms(numbers=c.numbers, positions=c.positions, cell=c.cell, pbc=c.pbc)
    else:
        _check_elements(spec)
        fn = _ase_builder(spec.builder)
        args = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.args.items()}
        try:
            atoms = fn(**args)
        except (KeyError, ValueError, TypeError, AssertionError, RuntimeError, NotImplementedError) as err:
            msg = str(err) or type(err).__name__
            if spec.builder == "molecule" and isinstance(err, KeyError):
                msg = f"unknown molecule {args.get('name')!r} (ase.build.molecule names such as H2O, CH4, C2H5OH)"
            raise ConfigError(f"{spec.builder}({', '.join(f'{k}={v!r}' for k, v in args.items())}) failed: "
                              f"{' '.join(msg.split())}", option=spec.builder) from None
    if spec.repeat != (1, 1, 1):
        atoms = atoms.repeat(spec.repeat)
    if spec.vacancy is not None:
        n = len(atoms)
        for key in ("vacancy", "hop"):
            v = getattr(spec, key)
            if v is not None and v >= n:
                raise ConfigError(f"{key} {v} is not an atom of this structure ({n} atoms: 0..{n - 1})", option=key)
        if spec.hop is not None:
            atoms.positions[spec.hop] = atoms.positions[spec.vacancy]
        del atoms[spec.vacancy]
    atoms.info.clear()
    return atoms


def _structure_from_dict(name: str, values, *, base_dir: str) -> StructureSpec:
    if not isinstance(values, dict):
        raise ConfigError(f"must be a mapping with one builder key ({', '.join(_BUILDERS)}), got {_fmt(values)}",
                          option="")
    builders = [k for k in values if k in _BUILDERS]
    for key in values:
        if key not in _BUILDERS and key not in _MODIFIERS:
            raise ConfigError(f"unknown key {key!r}{suggest(key, _BUILDERS + _MODIFIERS)}; a structure has one builder "
                              f"({', '.join(_BUILDERS)}) and optionally {', '.join(_MODIFIERS)}", option=str(key))
    if len(builders) != 1:
        raise ConfigError(f"needs exactly one builder key ({', '.join(_BUILDERS)}), got "
                          f"{', '.join(builders) or 'none'}", option="")
    builder = builders[0]
    raw = values[builder]
    if builder == "from":
        if not isinstance(raw, str):
            raise ConfigError(f"from must name a structure defined above, got {_fmt(raw)}", option="from")
        args = {"name": raw}
    elif builder == "file":
        raw = {"path": raw} if isinstance(raw, str) else raw
        if not isinstance(raw, dict) or "path" not in raw or not isinstance(raw["path"], str):
            raise ConfigError(f"file must be a path or {{path: ..., index: N}}, got {_fmt(raw)}", option="file")
        for k in raw:
            if k not in ("path", "index"):
                raise ConfigError(f"unknown file option {k!r}; known: path, index", option=f"file.{k}")
        path = raw["path"] if os.path.isabs(raw["path"]) else os.path.join(base_dir, raw["path"])
        if not os.path.isfile(path):
            raise ConfigError(f"file {raw['path']!r} does not exist (looked for {os.path.abspath(path)})", option="file")
        index = raw.get("index", -1)
        if isinstance(index, bool) or not isinstance(index, int):
            raise ConfigError(f"file index must be an integer (a frame of the file), got {_fmt(index)}", option="file.index")
        args = {"path": path, "index": index}
    else:
        if builder == "molecule" and isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict):
            raise ConfigError(f"{builder} must be a mapping of ase.build.{builder} arguments, got {_fmt(raw)}",
                              option=builder)
        params = inspect.signature(_ase_builder(builder)).parameters
        for k in raw:
            if k not in params:
                raise ConfigError(f"ase.build.{builder} has no argument {k!r}{suggest(k, params)}; its arguments: "
                                  f"{', '.join(params)}", option=f"{builder}.{k}")
        args = dict(raw)
    kwargs = {k: values[k] for k in _MODIFIERS if k in values}
    return StructureSpec(name=name, builder=builder, args=args, **kwargs)


# ------------------------------------------------------------------------------ recipe
@dataclasses.dataclass(frozen=True)
class Recipe:
    """A data-set recipe (YAML keys = field names; ``structures`` and ``sources`` as in the module docstring)."""

    structures: dict = dataclasses.field(default_factory=dict)  # name -> StructureSpec
    sources: tuple = ()  # Displacements | MD | Rattle | Strain | Vacancies | Surface | NEB | EmtCu
    oracle: Any = "emt"  # labels the frames: anything mlpjax.active.make_oracle takes (an OracleSpec after checking)
    driver: Any = "emt"  # runs MD / NEB / relaxations (cheap; same forms as oracle)
    seed: int = _f("int", 0, ok=_nonneg, valid=">= 0")
    workers: int = _f("int", 1, ok=_positive, valid=">= 1")  # labelling worker processes
    timeout_s: float | None = _f("float?", None, ok=_positive, valid="> 0 (s) or null")  # per structure
    description: str = ""
    source: str | None = None  # the YAML file it was read from

    def __post_init__(self):
        from mlpjax.active.oracle import make_oracle

        _validate_fields(self)
        for key in ("oracle", "driver"):
            try:
                object.__setattr__(self, key, make_oracle(getattr(self, key)))
            except ConfigError as err:
                raise ConfigError(f"{key}: {err}", option=key) from None
        if not isinstance(self.description, str):
            raise ConfigError(f"description must be text, got {_fmt(self.description)}", option="description")
        names = set(self.structures)
        for i, src in enumerate(self.sources):
            kind = _kind_name(src)
            for n in src.structures:
                if n not in names:
                    known = f"defined: {', '.join(sorted(names))}" if names else "no structures are defined"
                    raise ConfigError(f"sources[{i}] ({kind}): unknown structure {n!r}{suggest(n, names)}; {known}",
                                      option=f"sources.{i}.{kind}")
        if not self.sources:
            raise ConfigError("a recipe needs sources (a list such as - md: {structures: bulk, temperatures_K: [300, 600], "
                              "frames: 10})", option="sources")

    def replace(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **changes)


def _kind_name(src) -> str:
    return next(k for k, cls in SOURCES.items() if isinstance(src, cls))


def _line_of(lines: dict, path: str) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path.rpartition(".")[0]
    return None


def _located(err: ConfigError, *, path: str, label: str, source: str | None, lines: dict) -> ConfigError:
    """``err`` with ``FILE line N: label: `` in front (the line of the key at fault, else of its block)."""
    option = f"{path}.{err.option}" if err.option else path
    line = _line_of(lines, option)
    where = f"{source} line {line}: " if source and line else f"{source}: " if source else ""
    return ConfigError(f"{where}{label}{': ' if label else ''}{err}", option=option, source=source, line=line)


_TOP = ("structures", "sources", "oracle", "driver", "seed", "workers", "timeout_s", "description")


def recipe_from_dict(values: dict | None, *, source: str | None = None, lines: dict | None = None) -> Recipe:
    """A checked :class:`Recipe` from parsed YAML; errors are one-line ConfigErrors naming the file
    (``source``), the line and the key."""
    lines = lines or {}
    values = dict(values or {})
    base_dir = os.path.dirname(os.path.abspath(source)) if source else os.getcwd()

    def fail(err, path, label=""):
        return _located(err, path=path, label=label, source=source, lines=lines)

    for key in values:
        if key not in _TOP:
            raise fail(ConfigError(f"unknown recipe key {key!r}{suggest(key, _TOP)}; known: {', '.join(_TOP)}"), str(key))
    raw_structures = values.get("structures") or {}
    if not isinstance(raw_structures, dict):
        raise fail(ConfigError(f"structures must be a mapping of name: structure, got {_fmt(raw_structures)}"), "structures")
    structures, built = {}, {}
    for name, spec in raw_structures.items():
        path = f"structures.{name}"
        try:
            s = _structure_from_dict(str(name), spec, base_dir=base_dir)
            if s.builder == "from" and s.args["name"] not in built:
                raise ConfigError(f"from: {s.args['name']!r} is not a structure defined above{suggest(s.args['name'], built)}",
                                  option="from")
            built[s.name] = _build_one(s, built, base_dir)
        except ConfigError as err:
            raise fail(err, path, path) from None
        except Exception as err:  # a file ASE cannot read, ...
            from mlpjax.data import DataError

            if not isinstance(err, DataError):
                raise
            raise fail(ConfigError(str(err), option="file"), path, path) from None
        structures[s.name] = s
    raw_sources = values.get("sources")
    if raw_sources is None:
        raw_sources = []
    if not isinstance(raw_sources, list):
        raise fail(ConfigError(f"sources must be a list of - KIND: {{...}} entries, got {_fmt(raw_sources)}"), "sources")
    sources = []
    for i, entry in enumerate(raw_sources):
        path = f"sources.{i}"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise fail(ConfigError(f"each source is one KIND: {{options}} entry (KIND one of {', '.join(SOURCES)}), got "
                                   f"{_fmt(entry)}"), path, f"sources[{i}]")
        (kind, options), = entry.items()
        if kind not in SOURCES:
            raise fail(ConfigError(f"unknown source {kind!r}{suggest(kind, SOURCES)}; known: {', '.join(SOURCES)}",
                                   option=str(kind)), path, f"sources[{i}]")
        cls = SOURCES[kind]
        label = f"sources[{i}] ({kind})"
        path = f"sources.{i}.{kind}"
        options = {} if options is None else options
        if not isinstance(options, dict):
            raise fail(ConfigError(f"options must be a mapping, got {_fmt(options)}"), path, label)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in options:
            if key not in fields:
                raise fail(ConfigError(f"unknown {kind} option {key!r}{suggest(key, fields)}; known: {', '.join(fields)}",
                                       option=str(key)), path, label)
        missing = [n for n, f in fields.items() if f.default is dataclasses.MISSING and n not in options]
        if missing:
            raise fail(ConfigError(f"missing {', '.join(missing)}"), path, label)
        try:
            src = cls(**options)
        except ConfigError as err:
            raise fail(err, path, label) from None
        for n in src.structures:
            if n not in built:
                known = f"defined: {', '.join(built)}" if built else "no structures are defined"
                key = "structures" if "structures" in fields else "initial" if n == src.structures[0] else "final"
                raise fail(ConfigError(f"unknown structure {n!r}{suggest(n, built)}; {known}", option=key), path, label)
        try:
            _check_source(src, built)
        except ConfigError as err:
            raise fail(err, path, label) from None
        sources.append(src)
    top = {k: values[k] for k in ("oracle", "driver", "seed", "workers", "timeout_s", "description") if k in values}
    try:
        return Recipe(structures=structures, sources=tuple(sources), source=source, **top)
    except ConfigError as err:
        opt = err.option if err.option in _TOP or (err.option or "").startswith("sources") else None
        raise fail(ConfigError(str(err), option=None), opt or "", "") from None


def _check_source(src, built: dict) -> None:
    """Checks that need the built structures."""
    if isinstance(src, Strain):
        for n in src.structures:
            if not all(built[n].pbc):
                raise ConfigError(f"strain needs cells periodic in 3D; {n!r} is not", option="structures")
    if isinstance(src, Surface):
        for n in src.structures:
            if not all(built[n].pbc):
                raise ConfigError(f"surface cuts slabs from a bulk (3D-periodic) structure; {n!r} is not",
                                  option="structures")
    if isinstance(src, Vacancies):
        for n in src.structures:
            if src.vacancies >= len(built[n]):
                raise ConfigError(f"vacancies {src.vacancies} leaves no atom of {n!r} ({len(built[n])} atoms)",
                                  option="vacancies")
    if isinstance(src, NEB):
        a, b = built[src.initial], built[src.final]
        if len(a) != len(b) or list(a.numbers) != list(b.numbers):
            raise ConfigError(f"the NEB end points {src.initial!r} ({a.get_chemical_formula()}, {len(a)} atoms) and "
                              f"{src.final!r} ({b.get_chemical_formula()}, {len(b)} atoms) must have the same atoms in "
                              "the same order", option="final")
        if not np.allclose(a.cell.array, b.cell.array) or list(a.pbc) != list(b.pbc):
            raise ConfigError(f"the NEB end points {src.initial!r} and {src.final!r} must have the same cell",
                              option="final")


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read a YAML recipe. Unknown keys, duplicate keys, bad values, unknown elements and missing files
    raise :class:`mlpjax.config.ConfigError` naming the file, line and key, e.g.
    ``cu.yaml line 9: sources[1] (md): stride must be >= 1, got 0``."""
    path = os.fspath(path)
    values, lines = read_yaml(path)
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"{path} must contain a recipe mapping (structures:, sources:, ...), got {type(values).__name__}",
                          source=path)
    return recipe_from_dict(values, source=path, lines=lines)


def recipes() -> list[str]:
    """Names of the recipes shipped with mlpjax (``mlpjax/data/recipes/NAME.yaml``)."""
    return sorted(f[:-5] for f in os.listdir(RECIPES_DIR) if f.endswith(".yaml"))


def recipe_path(name: str) -> str:
    """The file of a shipped recipe (:func:`recipes`)."""
    if name not in recipes():
        raise ConfigError(f"unknown recipe {name!r}{suggest(name, recipes())}; shipped: {', '.join(recipes())}",
                          option="recipe")
    return os.path.join(RECIPES_DIR, name + ".yaml")


# ------------------------------------------------------------------------------ sampling
def _snapshot(atoms, **info):
    import ase

    a = ase.Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    a.info.update({k: v for k, v in info.items() if v is not None})
    return a


def _relax(atoms, driver, name: str, *, fmax: float = 0.01, steps: int = 500):
    from ase.optimize import BFGS

    atoms = atoms.copy()
    atoms.calc = driver.calculator()
    if not BFGS(atoms, logfile=None).run(fmax=fmax, steps=steps):
        warnings.warn(f"structure {name!r} did not relax to {fmax} eV/Å in {steps} steps; it is used as it is",
                      stacklevel=3)
    return _snapshot(atoms)


def _built_structures(recipe: Recipe) -> dict:
    built = {}
    base = os.path.dirname(os.path.abspath(recipe.source)) if recipe.source else os.getcwd()
    for name, spec in recipe.structures.items():
        atoms = _build_one(spec, built, base)
        if spec.relax:
            atoms = _relax(atoms, recipe.driver, name)
        built[name] = atoms
    return built


def _rattled(atoms, rng, amplitude):
    a = atoms.copy()
    if amplitude > 0:
        a.positions = a.positions + rng.normal(0.0, amplitude, a.positions.shape)
    return a


def _sample_md(src: MD, built, driver, rng, say):
    from ase.md.langevin import Langevin

    from mlpjax.units import FS, PS, kT

    out = []
    for T in src.temperatures_K:
        for name in src.structures:
            atoms = built[name].copy()
            atoms.calc = driver.calculator()
            masses = atoms.get_masses()  # amu
            atoms.set_momenta(rng.standard_normal((len(atoms), 3)) * np.sqrt(masses * kT(T))[:, None])  # Maxwell–Boltzmann
            dyn = Langevin(atoms, src.timestep_fs * FS, temperature_K=T, friction=src.friction_per_ps / PS, fixcm=False,
                           rng=rng)
            dyn.run(src.equilibration_steps)
            for _ in range(src.frames):
                dyn.run(src.stride)
                out.append(_snapshot(atoms, config_type=f"{src.config_type}_{T:g}K", structure=name, temperature_K=T))
            say(f"md {name} {T:g} K: {src.frames} frames")
    return out


def _sample_neb(src: NEB, built, driver, say):
    from ase.mep import NEB as AseNEB
    from ase.optimize import FIRE

    images = [built[src.initial].copy() for _ in range(src.images + 1)] + [built[src.final].copy()]
    for im in images:
        im.calc = driver.calculator()
    neb = AseNEB(images, climb=src.climb, method="improvedtangent")
    neb.interpolate(method=src.interpolation, mic=True)
    converged = FIRE(neb, logfile=None).run(fmax=src.fmax, steps=src.steps) if src.steps else False
    if src.steps and not converged:
        warnings.warn(f"NEB {src.initial} -> {src.final} did not converge to {src.fmax} eV/Å in {src.steps} steps; its "
                      "images are used as they are", stacklevel=3)
    energies = [im.get_potential_energy() for im in images]
    say(f"neb {src.initial} -> {src.final}: {len(images)} images, driver barrier {max(energies) - energies[0]:.3f} eV")
    return [_snapshot(im, config_type=src.config_type, structure=f"{src.initial}->{src.final}") for im in images]


def _sample_emt_cu(src: EmtCu, seed: int):
    from mlpjax.data.emt import EMT_CU_LIQUID_TEMPERATURES, emt_cu

    configs = emt_cu(seed=seed, md_frames_per_run=src.md_frames, n_rattled=src.rattled, n_strained=src.strained,
                     liquid_frames_per_run=src.liquid_frames,
                     liquid_temperatures_K=EMT_CU_LIQUID_TEMPERATURES if src.liquid_frames else ())
    out = []
    for c in configs:  # source "emt:md:300K:32", "emt:rattled:108", "emt:strained:32", "emt:liquid:1750K:108"
        _, kind, *rest = c.source.split(":")
        n = rest[-1]
        import ase

        a = ase.Atoms(numbers=c.numbers, positions=c.positions, cell=c.cell, pbc=c.pbc)
        if kind in ("md", "liquid"):
            T = float(rest[0][:-1])
            a.info.update(config_type=f"{kind}_{T:g}K", structure=f"{'fcc' if kind == 'md' else 'liquid'}_Cu_{n}",
                          temperature_K=T)
        else:
            a.info.update(config_type={"rattled": "rattle", "strained": "strain"}[kind], structure=f"fcc_Cu_{n}")
        out.append(a)
    return out


def kinds_of(recipe: Recipe) -> dict:
    """config_type -> kind (near_equilibrium, md, reaction_path, random, defect) of the frames a recipe makes."""
    out = {}
    for src in recipe.sources:
        if isinstance(src, EmtCu):
            continue  # its tags are recognised by name (md_*, liquid_*, rattle, strain)
        if isinstance(src, MD):
            out.update({f"{src.config_type}_{T:g}K": "md" for T in src.temperatures_K})
        else:
            out[src.tag if isinstance(src, Surface) else src.config_type] = _KIND_OF[type(src)]
    return out


def sample(recipe: Recipe, *, progress: bool = False) -> list:
    """The recipe's unlabelled structures (``ase.Atoms`` with ``info`` config_type, structure and, from
    MD, temperature_K), in recipe order. Deterministic for a recipe."""
    say = (lambda msg: print(f"  {msg}", flush=True)) if progress else (lambda msg: None)
    built = _built_structures(recipe)
    frames = []
    for i, src in enumerate(recipe.sources):
        rng = np.random.default_rng([recipe.seed, i])
        if isinstance(src, EmtCu):
            got = _sample_emt_cu(src, recipe.seed)
            say(f"emt_cu: {len(got)} frames")
        elif isinstance(src, MD):
            got = _sample_md(src, built, recipe.driver, rng, say)
        elif isinstance(src, NEB):
            got = _sample_neb(src, built, recipe.driver, say)
        else:
            got = []
            for name in src.structures:
                base = built[name]
                for _ in range(src.count):
                    if isinstance(src, (Displacements, Rattle)):
                        a = _rattled(base, rng, src.amplitude_A)
                    elif isinstance(src, Strain):
                        e = rng.uniform(-src.max_strain, src.max_strain, (3, 3))
                        a = base.copy()
                        a.set_cell(a.cell.array @ (np.eye(3) + 0.5 * (e + e.T)), scale_atoms=True)
                        a = _rattled(a, rng, src.rattle_A)
                    elif isinstance(src, Vacancies):
                        a = base.copy()
                        del a[sorted(rng.choice(len(a), src.vacancies, replace=False).tolist())]
                        a = _rattled(a, rng, src.rattle_A)
                    else:  # Surface
                        from ase.build import surface

                        slab = surface(base, src.miller, src.layers, vacuum=src.vacuum_A).repeat(src.repeat)
                        a = _rattled(slab, rng, src.rattle_A)
                    tag = src.tag if isinstance(src, Surface) else src.config_type
                    got.append(_snapshot(a, config_type=tag, structure=name))
                say(f"{_kind_name(src)} {name}: {src.count} frames")
        frames.extend(got)
    if not frames:
        raise ConfigError(f"{recipe.source or 'the recipe'}: every count is 0, nothing to generate", option="sources")
    return frames


# ------------------------------------------------------------------------------ composition
def _kind_by_name(config_type: str) -> str:
    t = config_type.lower()
    if t.startswith(("displacement", "equilibrium")):
        return "near_equilibrium"
    if t.startswith(("md_", "liquid_", "aimd")):
        return "md"
    if t.startswith(("neb", "reaction")):
        return "reaction_path"
    if t.startswith(("rattle", "strain", "random")):
        return "random"
    if t.startswith(("vacancy", "surface", "defect")):
        return "defect"
    return "other"


@dataclasses.dataclass(frozen=True)
class TypeStats:
    """Frames of one config_type."""

    config_type: str
    kind: str  # one of KINDS
    n: int
    share: float  # of all frames
    energy_per_atom_eV: tuple  # (min, max) eV/atom
    max_force_eV_A: float  # largest |F| of an atom, eV/Å
    rms_force_eV_A: float  # RMS force component, eV/Å


@dataclasses.dataclass(frozen=True)
class Composition:
    """What a data set is made of (:func:`composition`)."""

    n_frames: int
    n_failed: int  # structures the oracle could not label
    types: tuple  # TypeStats, largest first
    kinds: dict  # kind -> share of the frames
    energy_per_atom_eV: tuple  # (min, max) eV/atom over all frames
    max_force_eV_A: float
    temperatures_K: tuple  # ((T, frames), ...) of the frames that carry info["temperature_K"]
    warnings: tuple  # the classic failures found (text)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["types"] = [dataclasses.asdict(t) for t in self.types]
        d["temperatures_K"] = [{"T_K": t, "frames": n} for t, n in self.temperatures_K]
        return d

    def format(self) -> str:
        lines = [f"{self.n_frames} frames" + (f" ({self.n_failed} structures failed to label)" if self.n_failed else ""),
                 f"  {'config_type':<18} {'kind':<17} {'frames':>6} {'share':>6}  {'E/atom [eV]':>21}  "
                 f"{'max|F| [eV/Å]':>13}"]
        for t in self.types:
            lines.append(f"  {t.config_type:<18} {t.kind:<17} {t.n:>6} {100 * t.share:>5.1f}%  "
                         f"{t.energy_per_atom_eV[0]:>9.4f} .. {t.energy_per_atom_eV[1]:<9.4f}  {t.max_force_eV_A:>13.3f}")
        lines.append("  kinds: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in self.kinds.items() if v))
        if self.temperatures_K:
            ts = [t for t, _ in self.temperatures_K]
            lines.append(f"  MD temperatures: {', '.join(f'{t:g}' for t in ts)} K (span {max(ts) - min(ts):g} K)")
        else:
            lines.append("  MD temperatures: none")
        return "\n".join(lines)


def composition(configs, *, n_failed: int = 0, kinds: dict | None = None) -> Composition:
    """The composition report of labelled :class:`mlpjax.data.Configuration` frames (e.g. read back
    from a generated file): per ``info["config_type"]`` share, energy-per-atom and force ranges; the
    kinds (``kinds`` maps config_type -> kind; names not in it are recognised by prefix); the MD
    temperatures (``info["temperature_K"]``); and the warnings of the module docstring."""
    kinds = dict(kinds or {})
    n = len(configs)
    groups: dict[str, list] = {}
    for c in configs:
        groups.setdefault(str(c.info.get("config_type", "untagged")), []).append(c)
    types = []
    for t, cs in groups.items():
        e = np.array([c.energy / c.n_atoms for c in cs])  # eV/atom
        f = np.concatenate([np.asarray(c.forces).reshape(-1, 3) for c in cs])  # [sum n_atoms, 3] eV/Å
        types.append(TypeStats(config_type=t, kind=kinds.get(t, _kind_by_name(t)), n=len(cs), share=len(cs) / n,
                               energy_per_atom_eV=(float(e.min()), float(e.max())),
                               max_force_eV_A=float(np.linalg.norm(f, axis=1).max()),
                               rms_force_eV_A=float(np.sqrt(np.mean(f**2)))))
    types.sort(key=lambda t: (-t.n, t.config_type))
    share = {k: sum(t.share for t in types if t.kind == k) for k in KINDS}
    temps: dict[float, int] = {}
    for c in configs:
        if "temperature_K" in c.info:
            T = float(c.info["temperature_K"])
            temps[T] = temps.get(T, 0) + 1
    warn = []
    if share["near_equilibrium"] > MAX_NEAR_EQUILIBRIUM_SHARE:
        warn.append(f"{100 * share['near_equilibrium']:.0f}% of the frames are near-equilibrium (more than "
                    f"{100 * MAX_NEAR_EQUILIBRIUM_SHARE:.0f}%): a potential trained on mostly low-energy data fails at "
                    "transition states and high temperature; add MD at higher temperatures, rattles, NEB paths or defects")
    if not temps:
        warn.append("no MD frames (no info temperature_K): the data has no thermal sampling; add an md source with a "
                    "temperature ladder around and above the temperature the potential will be used at")
    elif max(temps) - min(temps) < MIN_TEMPERATURE_SPAN_K:
        lo, hi = min(temps), max(temps)
        what = f"only {lo:g} K" if lo == hi else f"only {lo:g}-{hi:g} K"
        warn.append(f"the MD frames cover {what} (a span under {MIN_TEMPERATURE_SPAN_K:g} K): MD at other temperatures "
                    "extrapolates; sample a ladder from below to well above the use temperature")
    all_e = [c.energy / c.n_atoms for c in configs]
    return Composition(n_frames=n, n_failed=n_failed, types=tuple(types), kinds=share,
                       energy_per_atom_eV=(float(min(all_e)), float(max(all_e))) if all_e else (math.nan, math.nan),
                       max_force_eV_A=max((t.max_force_eV_A for t in types), default=math.nan),
                       temperatures_K=tuple(sorted(temps.items())), warnings=tuple(warn))


def composition_path(out_path) -> str:
    """Where :func:`generate` writes the composition report: ``OUT.composition.json``."""
    return os.fspath(out_path) + ".composition.json"


# ------------------------------------------------------------------------------ generate
@dataclasses.dataclass(frozen=True)
class GenerateResult:
    """What :func:`generate` made."""

    out_path: str
    labelling: Any  # mlpjax.active.LabelReport
    composition: Composition
    composition_path: str


def generate(recipe: "Recipe | str | os.PathLike", out_path, *, workers: int | None = None,
             timeout_s: float | None = None, overwrite: bool = False, progress: bool = False,
             warn: bool = True) -> GenerateResult:
    """Sample the recipe's structures, label them with its oracle into ``out_path`` (resuming a killed
    run: :func:`mlpjax.active.label`), and write the composition report ``OUT.composition.json``.
    The warnings of the report are also issued as :class:`CompositionWarning` (unless ``warn=False``).

    ``recipe`` is a :class:`Recipe` or a YAML file. ``workers`` / ``timeout_s`` override the recipe's.
    An existing output that holds frames this recipe does not make (another recipe, seed or counts)
    is a ConfigError unless ``overwrite`` (which deletes it and its failures file first).
    """
    from mlpjax.active.labelling import failures_path, label, labelled_ids, structure_ids
    from mlpjax.data import read
    from mlpjax.files import atomic_write_bytes

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    out_path = os.fspath(out_path)
    if progress:
        print(f"sampling {len(recipe.sources)} source{'s' * (len(recipe.sources) > 1)} (driver {recipe.driver.describe()})",
              flush=True)
    frames = sample(recipe, progress=progress)
    if overwrite:
        for p in (out_path, failures_path(out_path)):
            if os.path.exists(p):
                os.remove(p)
    elif os.path.exists(out_path):
        mine = set(structure_ids(frames))
        extra = [i for i in labelled_ids(out_path) if i not in mine]
        if extra:
            raise ConfigError(f"{out_path} already holds {len(extra)} labelled frames that this recipe does not make "
                              "(another recipe, seed or counts?): choose another output, or overwrite it "
                              "(--overwrite)", option="--output")
    report = label(frames, recipe.oracle, out_path, workers=workers or recipe.workers,
                   timeout_s=timeout_s if timeout_s is not None else recipe.timeout_s, progress=progress)
    # min_distance=0: these frames were just sampled here; the overlap check (vesin) costs ~45 ms per slab frame
    configs = read(out_path, min_distance=0) if os.path.getsize(out_path) else []
    comp = composition(configs, n_failed=len(report.failures), kinds=kinds_of(recipe))
    path = composition_path(out_path)
    payload = {"output": out_path, "recipe": recipe.source, "oracle": recipe.oracle.describe(),
               "failures": [dataclasses.asdict(f) for f in report.failures], **comp.to_dict()}
    atomic_write_bytes(path, (json.dumps(payload, indent=1) + "\n").encode())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # the atomic write's temporary file is created 0600
    for w in comp.warnings if warn else ():
        warnings.warn(w, CompositionWarning, stacklevel=2)
    return GenerateResult(out_path=out_path, labelling=report, composition=comp, composition_path=path)
