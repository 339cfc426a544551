"""Structures for validation: cubic bulk cells from a short spec (``"fcc-Cu:3.6"``), the
default structure of a potential (its element's reference state, an ordered binary prototype,
or a training structure), MD supercells and strained or scaled copies. All ase.Atoms, Å.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["bulk_structure", "structure_for", "default_structure", "md_supercell", "strained"]


_CUBIC_LATTICES = ("fcc", "bcc", "sc", "diamond")


def bulk_structure(spec=None, *, element=None):
    """A cubic conventional cell (ase.Atoms) from ``"fcc-Cu"`` / ``"fcc-Cu:3.6"`` (lattice-Symbol[:a Å]),
    or, with ``spec=None``, from ``ase.data.reference_states`` of ``element`` (symbol or Z)."""
    from ase.build import bulk
    from ase.data import atomic_numbers, chemical_symbols, reference_states

    a = None
    if spec is None:
        if element is None:
            raise ValueError("give a structure spec such as 'fcc-Cu' or an element")
        z = atomic_numbers[element] if isinstance(element, str) else int(element)
        state = reference_states[z] or {}
        lattice = state.get("symmetry")
        if lattice not in _CUBIC_LATTICES:
            raise ValueError(
                f"the reference state of {chemical_symbols[z]} is {lattice!r}, not a cubic lattice "
                f"({', '.join(_CUBIC_LATTICES)}): pass a structure, e.g. --structure FILE"
            )
        symbol, a = chemical_symbols[z], state["a"]
    else:
        body, _, a_text = str(spec).partition(":")
        lattice, _, symbol = body.partition("-")
        if lattice not in _CUBIC_LATTICES or symbol not in atomic_numbers:
            raise ValueError(f"structure spec {spec!r}: expected LATTICE-Symbol[:a] with LATTICE in {_CUBIC_LATTICES}, e.g. 'fcc-Cu'")
        if a_text:
            a = float(a_text)
        else:
            state = reference_states[atomic_numbers[symbol]] or {}
            a = state.get("a")
            if state.get("symmetry") != lattice or a is None:
                raise ValueError(f"no reference lattice constant for {lattice} {symbol}: give it, e.g. '{lattice}-{symbol}:3.6'")
    return bulk(symbol, lattice, a=float(a), cubic=True)


def structure_for(potential, spec=None):
    """The validation structure: ``spec`` (``"fcc-Cu[:a]"``, a file path or ase.Atoms) or, with
    ``spec=None``, :func:`default_structure` (for one element its cubic reference state).

    A spec that is neither a file nor ``LATTICE-Symbol[:a]``, or a structure with elements the
    potential does not know, raises :class:`mlpjax.config.ConfigError` (a ValueError).
    """
    import ase
    from ase.data import chemical_symbols

    from mlpjax.config import ConfigError

    if spec is None:
        return default_structure(potential)[0]
    if isinstance(spec, ase.Atoms):
        atoms = spec.copy()
    elif os.path.exists(os.fspath(spec)):
        from mlpjax.data import read_structure

        atoms = read_structure(spec).to_atoms()
    else:
        try:
            atoms = bulk_structure(spec)
        except (ValueError, KeyError) as err:
            raise ConfigError(f"structure {spec!r} is not a file, and {err}", option="structure") from err
    unknown = sorted(set(atoms.numbers.tolist()) - set(int(z) for z in potential.species))
    if unknown:
        raise ConfigError(
            f"the structure {atoms.get_chemical_formula()} contains {', '.join(chemical_symbols[z] for z in unknown)}, "
            f"but the potential knows only {', '.join(chemical_symbols[z] for z in potential.species)}", option="structure")
    return atoms


_PROTOTYPE_TOLERANCE = 0.05  # |x_B − x_prototype| up to which the training composition matches a prototype


def _training_structures(potential) -> list:
    """The potential's training structures (Configurations, training split only) from the data files
    named in its metadata, or [] when they are not recorded or cannot be read (moved, deleted)."""
    from mlpjax.data import DataError, read_structure

    meta = potential.metadata or {}
    files = ((meta.get("data_files") or {}).get("train")) or []
    configs = []
    for path in files:
        try:
            configs += read_structure(path, index=":", units=meta.get("units", "eV"))
        except (DataError, OSError, ValueError):  # unreadable or gone: no training structures to go by
            return []
    split = meta.get("split") or {}
    if split.get("train") is not None and split.get("n") == len(configs):
        configs = [configs[i] for i in split["train"] if 0 <= i < len(configs)]
    return configs


def _volume_per_atom(symbol: str) -> float:
    """Å³/atom of the element's ASE reference crystal (KeyError/ValueError/RuntimeError when it has none)."""
    from ase.build import bulk

    atoms = bulk(symbol)
    return float(atoms.get_volume() / len(atoms))


def _prototype(a_sym: str, b_sym: str, x_b: float, volume_per_atom: float):
    """A cubic ordered cell of A(1−x)B(x) for x ≈ 1/4, 1/2, 3/4 (None otherwise) and its name.

    1/4, 3/4: L1₂ (Cu₃Au type; minority on the cube corners). 1/2: L1₀ (CuAu type, c/a = 1) when both
    elements are fcc in their reference states, else B2 (CsCl type). The cell is scaled to
    ``volume_per_atom``; the EOS rescales it to each calculator's equilibrium anyway.
    """
    import ase
    from ase.data import atomic_numbers, reference_states

    def fcc(sym):
        return (reference_states[atomic_numbers[sym]] or {}).get("symmetry") == "fcc"

    if abs(x_b - 0.5) <= _PROTOTYPE_TOLERANCE:
        if fcc(a_sym) and fcc(b_sym):
            name, symbols, frac = "L1₀", [a_sym, a_sym, b_sym, b_sym], [(0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)]
        else:
            name, symbols, frac = "B2", [a_sym, b_sym], [(0, 0, 0), (0.5, 0.5, 0.5)]
    elif abs(x_b - 0.25) <= _PROTOTYPE_TOLERANCE or abs(x_b - 0.75) <= _PROTOTYPE_TOLERANCE:
        major, minor = (a_sym, b_sym) if x_b < 0.5 else (b_sym, a_sym)
        name, symbols, frac = "L1₂", [minor, major, major, major], [(0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)]
    else:
        return None, None
    a = (volume_per_atom * len(symbols)) ** (1.0 / 3.0)
    atoms = ase.Atoms(symbols, scaled_positions=frac, cell=np.eye(3) * a, pbc=True)
    return atoms, f"{name} {atoms.get_chemical_formula()} (a = {a:.3f} Å)"


def default_structure(potential):
    """The structure :func:`validate_report` uses when none is given, and a one-line description.

    In order of preference:

    1. one element: its cubic reference state (``ase.data.reference_states``, as ``fcc-Cu``);
    2. two elements: an ordered prototype — L1₂ A₃B / AB₃, or L1₀ (both elements fcc) / B2 AB —
       matching the mean composition of the training structures that hold both elements, at their
       median volume per atom; with no readable training data, the equiatomic one at the mean of
       the elements' reference volumes (Vegard);
    3. the first periodic training structure (preferring one with every element of the potential),
       read from the data file recorded in ``potential.metadata["data_files"]["train"]``.

    Raises :class:`mlpjax.config.ConfigError` naming the elements when none of these works
    (e.g. the training files have moved): pass a structure then.
    """
    from ase.data import chemical_symbols

    from mlpjax.config import ConfigError

    species = [int(z) for z in potential.species]
    symbols = [chemical_symbols[z] for z in species]
    if len(species) == 1:
        try:
            atoms = bulk_structure(None, element=species[0])
            return atoms, f"the reference state of {symbols[0]} ({atoms.get_chemical_formula()}, " \
                          f"{len(atoms)} atoms, a = {atoms.cell.lengths()[0]:.3f} Å)"
        except (ValueError, KeyError):
            pass  # not a cubic reference state: fall through to the training data
    training = _training_structures(potential)
    periodic = [c for c in training if np.all(c.pbc) and abs(np.linalg.det(c.cell)) > 1e-6]
    if len(species) == 2:
        mixed = [c for c in periodic if set(species) <= set(np.asarray(c.numbers).tolist())]
        atoms = None
        if mixed:
            x_b = float(np.mean([np.mean(np.asarray(c.numbers) == species[1]) for c in mixed]))
            v = float(np.median([abs(np.linalg.det(c.cell)) / len(c.numbers) for c in mixed]))
            atoms, name = _prototype(symbols[0], symbols[1], x_b, v)
            why = f"the training structures' composition {symbols[0]}{1 - x_b:.2f}{symbols[1]}{x_b:.2f}"
        elif not training:
            try:
                v = 0.5 * (_volume_per_atom(symbols[0]) + _volume_per_atom(symbols[1]))
                atoms, name = _prototype(symbols[0], symbols[1], 0.5, v)
                why = "no readable training data, so the equiatomic prototype at the elements' mean reference volume"
            except (KeyError, ValueError, RuntimeError):
                atoms = None
        if atoms is not None:
            return atoms, f"{name}, from {why}"
    if periodic:
        full = [c for c in periodic if set(species) <= set(np.asarray(c.numbers).tolist())]
        conf = (full or periodic)[0]
        atoms = conf.to_atoms()
        where = f"{conf.source}, frame {conf.frame}" if getattr(conf, "source", None) else "the training data"
        return atoms, f"the first periodic training structure ({atoms.get_chemical_formula()}, {len(atoms)} atoms; {where})"
    raise ConfigError(
        f"no default structure for a potential of {', '.join(symbols)}: "
        + ("its training data are not readable" if not training else "its training structures are not periodic")
        + f"; pass one, e.g. --structure FILE or 'fcc-{symbols[0]}' (structure='fcc-{symbols[0]}' in Python)",
        option="structure")


def md_supercell(atoms, cutoff: float, *, skin: float = 0.5, min_atoms: int = 64):
    """``atoms`` repeated so that every perpendicular width is ≥ 2 × (cutoff + skin) and there are ≥ ``min_atoms``."""
    from mlpjax.graph.cells import perpendicular_widths, supercell_repeats

    reps = list(supercell_repeats(atoms.cell.array, cutoff + skin))
    widths = perpendicular_widths(atoms.cell.array)
    while len(atoms) * int(np.prod(reps)) < min_atoms:
        k = int(np.argmin(widths * np.asarray(reps)))
        reps[k] += 1
    return atoms.repeat(tuple(reps))


def _scaled(atoms, volume_scale: float):
    out = atoms.copy()
    out.set_cell(atoms.cell.array * float(volume_scale) ** (1.0 / 3.0), scale_atoms=True)
    return out


def _voigt_to_tensor(e):
    """Voigt strain (xx, yy, zz, yz, xz, xy; engineering shears) → symmetric 3×3 tensor."""
    e = np.asarray(e, np.float64)
    return np.array([[e[0], e[5] / 2, e[4] / 2], [e[5] / 2, e[1], e[3] / 2], [e[4] / 2, e[3] / 2, e[2]]])


def strained(atoms, strain_voigt):
    """A copy of ``atoms`` with cell and positions deformed by (I + ε), ε from a Voigt strain."""
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ (np.eye(3) + _voigt_to_tensor(strain_voigt)), scale_atoms=True)
    return out
