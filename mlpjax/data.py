"""Reference data: configurations with energies, forces and (optionally) stress.

Everything in a :class:`Configuration` is in mlpjax's internal units (eV, Å);
readers convert at the boundary through :mod:`mlpjax.units`.
"""

from __future__ import annotations

import dataclasses

import numpy as np


class DataError(ValueError):
    """Bad input data. The message names the file, the frame and the field."""

    def __init__(self, message: str, *, source: str | None = None, frame: int | None = None, field: str | None = None):
        where = []
        if source is not None:
            where.append(f"file {source}")
        if frame is not None:
            where.append(f"frame {frame}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)
        self.source, self.frame, self.field = source, frame, field


@dataclasses.dataclass
class Configuration:
    """One atomic structure with its reference labels (host-side NumPy, internal units)."""

    positions: np.ndarray  # [n_atoms, 3] Å
    numbers: np.ndarray  # [n_atoms] int, atomic numbers Z
    cell: np.ndarray  # [3, 3] Å, rows are lattice vectors (zeros for a molecule)
    pbc: np.ndarray  # [3] bool
    energy: float | None = None  # eV, total energy
    forces: np.ndarray | None = None  # [n_atoms, 3] eV/Å
    stress: np.ndarray | None = None  # [3, 3] eV/Å^3, ASE sign convention (σ = (1/V) ∂E/∂ε)
    source: str = ""  # file the configuration came from
    frame: int = -1  # index of the frame in that file
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    @property
    def periodic(self) -> bool:
        return bool(np.any(self.pbc))

    def to_atoms(self):
        """The configuration as an :class:`ase.Atoms` with a SinglePointCalculator holding its labels."""
        import ase
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = ase.Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        results = {}
        if self.energy is not None:
            results["energy"] = self.energy
        if self.forces is not None:
            results["forces"] = self.forces
        if self.stress is not None:
            s = self.stress
            results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms

    @classmethod
    def from_atoms(cls, atoms, *, source: str = "", frame: int = -1) -> "Configuration":
        """Structure only (no labels) from an :class:`ase.Atoms`; positions taken as Å."""
        return cls(
            positions=np.asarray(atoms.positions, dtype=np.float64),
            numbers=np.asarray(atoms.numbers, dtype=np.int64),
            cell=np.asarray(atoms.cell.array, dtype=np.float64),
            pbc=np.asarray(atoms.pbc, dtype=bool),
            source=source,
            frame=frame,
        )


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------

_MAX_Z = 118
_EXTXYZ_EXTS = (".xyz", ".extxyz")
# MD17 (sGDML) and revised-MD17 key sets for .npz files: (positions, numbers, energies, forces).
_NPZ_KEYSETS = (("R", "z", "E", "F"), ("coords", "nuclear_charges", "energies", "forces"))


def _next_step_hint(field: str) -> str:
    return {
        "energy": "check energy_key= (the name of the energy in the file's info/calculator results) or drop this frame",
        "forces": "check forces_key= (the per-atom array holding forces), pass require_forces=False for energy-only data, or drop this frame",
    }.get(field, "fix or drop this frame")


def _select_frames(n: int, index) -> list[int]:
    """File-order frame indices picked by ``index`` (int, slice, or ASE-style string like ``":"``, ``"-1"``, ``"0:10:2"``)."""
    if isinstance(index, str):
        from ase.io.formats import string2index

        index = string2index(index)
    frames = list(range(n))
    if isinstance(index, (int, np.integer)):
        try:
            return [frames[int(index)]]
        except IndexError:
            raise IndexError(f"frame index {index} out of range for {n} frames") from None
    if isinstance(index, slice):
        return frames[index]
    return [frames[int(i)] for i in index]


def _as_stress_matrix(value, *, source, frame, field) -> np.ndarray:
    """3x3 matrix from a Voigt 6-vector (ASE order xx yy zz yz xz xy), a 9-vector or a 3x3 array."""
    a = np.asarray(value, dtype=np.float64)
    if a.shape == (6,):
        xx, yy, zz, yz, xz, xy = a
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    if a.shape in ((9,), (3, 3)):
        return a.reshape(3, 3).copy()
    raise DataError(
        f"expected a Voigt 6-vector (xx yy zz yz xz xy), 9 values or a 3x3 matrix, got shape {a.shape}; fix the file or pass a different key",
        source=source,
        frame=frame,
        field=field,
    )


def _lookup(atoms, key: str, *, per_atom: bool):
    """A label stored under ``key`` in atoms.arrays (per-atom) / atoms.info (per-config), else in the calculator's results."""
    if key is None:
        return None
    store = atoms.arrays if per_atom else atoms.info
    if key in store:
        return store[key]
    calc = getattr(atoms, "calc", None)
    results = getattr(calc, "results", None) or {}
    if key in results:
        return results[key]
    return None


def _float_or_error(value, *, source, frame, field) -> float:
    a = np.asarray(value, dtype=np.float64)
    if a.size != 1:
        raise DataError(f"expected a single number, got shape {a.shape}; check {field}_key=", source=source, frame=frame, field=field)
    return float(a.reshape(()))


def _config_from_atoms(atoms, *, u, source, frame, energy_key, forces_key, stress_key, virial_key) -> Configuration:
    """Labelled Configuration (internal units) from an ase.Atoms written in units ``u``."""
    conf = Configuration.from_atoms(atoms, source=source, frame=frame)
    L = u.length_to_angstrom
    conf.positions = conf.positions * L
    conf.cell = conf.cell * L

    try:
        e = _lookup(atoms, energy_key, per_atom=False)
        if e is not None:
            conf.energy = _float_or_error(e, source=source, frame=frame, field="energy") * u.energy_to_ev
        f = _lookup(atoms, forces_key, per_atom=True)
        if f is not None:
            conf.forces = np.array(f, dtype=np.float64) * u.force_to_ev_per_angstrom
        if virial_key is not None and _lookup(atoms, virial_key, per_atom=False) is not None:
            w = _as_stress_matrix(_lookup(atoms, virial_key, per_atom=False), source=source, frame=frame, field="virial")
            w = w * u.energy_to_ev
            volume = abs(float(np.linalg.det(conf.cell)))
            if not volume > 0.0:
                raise DataError("a virial needs a cell with non-zero volume; give the cell or drop the virial", source=source, frame=frame, field="virial")
            conf.stress = -w / volume
        else:
            s = _lookup(atoms, stress_key, per_atom=False)
            if s is not None:
                conf.stress = _as_stress_matrix(s, source=source, frame=frame, field="stress") * u.stress_to_ev_per_angstrom3
    except (TypeError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"could not read labels ({err}); fix the file", source=source, frame=frame) from err

    consumed = {energy_key, stress_key, virial_key}
    conf.info = {k: v for k, v in atoms.info.items() if k not in consumed}
    return conf


def _check_finite(value, *, source, frame, field):
    if value is None:
        return
    a = np.asarray(value, dtype=np.float64)
    bad = ~np.isfinite(a)
    if np.any(bad):
        where = np.argwhere(bad)[0] if a.ndim else ()
        kind = "NaN" if np.any(np.isnan(a)) else "inf"
        raise DataError(
            f"contains {kind} (first non-finite entry at index {tuple(int(i) for i in where)}); fix or drop this frame",
            source=source,
            frame=frame,
            field=field,
        )


def _padded_box(conf: Configuration) -> np.ndarray:
    """A box vesin accepts: zero rows along non-periodic directions are replaced by a long orthogonal vector."""
    cell = np.array(conf.cell, dtype=np.float64)
    pbc = np.asarray(conf.pbc, dtype=bool)
    if not pbc.any():
        return np.zeros((3, 3))
    extent = float(np.ptp(conf.positions, axis=0).max()) if conf.n_atoms else 0.0
    big = 2.0 * extent + 10.0 * float(np.abs(cell).max()) + 10.0
    zero_rows = [i for i in range(3) if not np.any(cell[i])]
    if not zero_rows:
        return cell
    good = [cell[i] for i in range(3) if i not in zero_rows]
    if len(zero_rows) == 2:
        a = good[0] / np.linalg.norm(good[0])
        trial = np.eye(3)[int(np.argmin(np.abs(a)))]
        b = trial - a * (a @ trial)
        b /= np.linalg.norm(b)
        c = np.cross(a, b)
        fill = [b, c]
    elif len(zero_rows) == 1:
        n = np.cross(good[0], good[1])
        fill = [n / np.linalg.norm(n)] if np.linalg.norm(n) > 0 else [np.zeros(3)]
    else:
        fill = [np.eye(3)[i] for i in range(3)]
    for i, v in zip(zero_rows, fill):
        cell[i] = big * v
    return cell


def _check_structure(conf: Configuration, *, min_distance: float):
    """Atomic numbers, finite geometry, usable cell, and no two atoms closer than ``min_distance`` Å."""
    src, fr = conf.source, conf.frame
    if conf.n_atoms == 0:
        raise DataError("has no atoms; drop this frame", source=src, frame=fr, field="numbers")
    z = np.asarray(conf.numbers)
    bad = (z < 1) | (z > _MAX_Z)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise DataError(
            f"atom {i} has atomic number {int(z[i])}, outside 1..{_MAX_Z}; fix the species in the file",
            source=src,
            frame=fr,
            field="numbers",
        )
    if conf.positions.shape != (conf.n_atoms, 3):
        raise DataError(f"positions have shape {conf.positions.shape}, expected ({conf.n_atoms}, 3)", source=src, frame=fr, field="positions")
    _check_finite(conf.positions, source=src, frame=fr, field="positions")
    _check_finite(conf.cell, source=src, frame=fr, field="cell")
    pbc = np.asarray(conf.pbc, dtype=bool)
    for i in range(3):
        if pbc[i] and not np.any(conf.cell[i]):
            raise DataError(
                f"periodic along lattice vector {i} but that vector is zero; give the cell or set pbc=False there",
                source=src,
                frame=fr,
                field="cell",
            )
    box = _padded_box(conf)
    if pbc.any() and abs(np.linalg.det(box)) < 1e-12:
        raise DataError("periodic cell has (near) zero volume; fix the cell", source=src, frame=fr, field="cell")
    if min_distance and min_distance > 0 and conf.n_atoms > 0:
        import vesin

        nl = vesin.NeighborList(cutoff=float(min_distance), full_list=False)
        i, j, S, d = nl.compute(conf.positions, box, pbc if pbc.any() else False, "ijSd")
        if len(d):
            k = int(np.argmin(d))
            ii, jj, shift = int(i[k]), int(j[k]), tuple(int(s) for s in S[k])
            img = "" if not any(shift) else f" (periodic image shift {shift})"
            what = f"atom {ii} and its own periodic image" if ii == jj else f"atoms {ii} and {jj}"
            raise DataError(
                f"{what} are {float(d[k]):.4g} Å apart{img}, closer than min_distance={min_distance} Å; "
                "check the length units (units=), the cell, or remove the duplicate atom",
                source=src,
                frame=fr,
                field="positions",
            )


def _check_labels(conf: Configuration, *, require_forces: bool):
    src, fr = conf.source, conf.frame
    if conf.energy is None:
        raise DataError("missing energy; " + _next_step_hint("energy"), source=src, frame=fr, field="energy")
    _check_finite(conf.energy, source=src, frame=fr, field="energy")
    if conf.forces is None:
        if require_forces:
            raise DataError("missing forces; " + _next_step_hint("forces"), source=src, frame=fr, field="forces")
    else:
        if conf.forces.shape != (conf.n_atoms, 3):
            raise DataError(
                f"forces have shape {conf.forces.shape}, expected ({conf.n_atoms}, 3); check forces_key= or fix the file",
                source=src,
                frame=fr,
                field="forces",
            )
        _check_finite(conf.forces, source=src, frame=fr, field="forces")
    if conf.stress is not None:
        _check_finite(conf.stress, source=src, frame=fr, field="stress")


def _read_ase_frames(path: str, fmt: str | None) -> list:
    """All frames of a file ASE reads (list of ase.Atoms), unparseable files turned into DataError."""
    import ase.io

    try:
        frames = ase.io.read(path, index=":", format=fmt)
    except DataError:
        raise
    except Exception as err:  # ASE raises many exception types for corrupt files
        raise DataError(
            f"could not parse the file as {fmt or 'any ASE format'} ({type(err).__name__}: {err}); check the format/extension or repair the file",
            source=path,
        ) from err
    if not isinstance(frames, list):
        frames = [frames]
    return frames


def _read_db_frames(path: str) -> list:
    """All rows of an ASE database as ase.Atoms; key_value_pairs go to info, per-atom data to arrays."""
    import ase.db

    try:
        frames = []
        with ase.db.connect(path, type="db") as db:
            for row in db.select():
                atoms = row.toatoms()
                atoms.info.update(row.get("key_value_pairs", {}))
                for k, v in (row.get("data") or {}).items():
                    v_arr = np.asarray(v) if not isinstance(v, (str, dict)) else None
                    if v_arr is not None and v_arr.ndim >= 1 and v_arr.shape[0] == len(atoms) and k not in ("energy",):
                        atoms.arrays[k] = v_arr
                    else:
                        atoms.info[k] = v
                frames.append(atoms)
    except Exception as err:
        raise DataError(f"could not read the ASE database ({type(err).__name__}: {err}); check the file", source=path) from err
    return frames


def _load_npz(path: str):
    """positions [F, N, 3], numbers [N] or [F, N], energies [F], forces [F, N, 3] (file units) from an MD17-style .npz."""
    try:
        data = np.load(path, allow_pickle=False)
        keys = set(data.files)
    except Exception as err:
        raise DataError(f"could not open the .npz file ({type(err).__name__}: {err}); check the file", source=path) from err
    for kr, kz, ke, kf in _NPZ_KEYSETS:
        if kr in keys and kz in keys:
            R = np.asarray(data[kr], dtype=np.float64)
            z = np.asarray(data[kz])
            E = np.asarray(data[ke], dtype=np.float64) if ke in keys else None
            F = np.asarray(data[kf], dtype=np.float64) if kf in keys else None
            return R, z, E, F, (kr, kz, ke, kf)
    raise DataError(
        f"no MD17 keys found (have {sorted(keys)}); expected R/z/E/F (MD17) or coords/nuclear_charges/energies/forces (revised MD17)",
        source=path,
    )


def _npz_configs(path: str, frames: list[int], u, *, labels: bool) -> list[Configuration]:
    R, z, E, F, names = _load_npz(path)
    if R.ndim == 2:
        R = R[None]
    if R.ndim != 3 or R.shape[-1] != 3:
        raise DataError(f"positions {names[0]!r} have shape {R.shape}, expected [n_frames, n_atoms, 3]", source=path, field=names[0])
    n_frames, n_atoms = R.shape[:2]
    if z.ndim == 1 and z.shape != (n_atoms,) or z.ndim == 2 and z.shape != (n_frames, n_atoms) or z.ndim not in (1, 2):
        raise DataError(f"atomic numbers {names[1]!r} have shape {z.shape}, expected [{n_atoms}]", source=path, field=names[1])
    if E is not None:
        if E.ndim == 2 and E.shape[1] == 1:
            E = E[:, 0]
        if E.shape != (n_frames,):
            raise DataError(f"energies {names[2]!r} have shape {E.shape}, expected [{n_frames}] or [{n_frames}, 1]", source=path, field=names[2])
    if F is not None and F.shape != R.shape:
        raise DataError(f"forces {names[3]!r} have shape {F.shape}, expected {R.shape} like the positions", source=path, field=names[3])
    out = []
    for fr in frames:
        numbers = np.asarray(z if z.ndim == 1 else z[fr])
        if not np.all(np.isfinite(numbers)) or np.any(numbers != np.round(numbers)):
            raise DataError("atomic numbers must be integers", source=path, frame=fr, field="numbers")
        conf = Configuration(
            positions=R[fr] * u.length_to_angstrom,
            numbers=numbers.astype(np.int64),
            cell=np.zeros((3, 3)),
            pbc=np.zeros(3, dtype=bool),
            source=path,
            frame=fr,
        )
        if labels:
            if E is not None:
                conf.energy = float(E[fr]) * u.energy_to_ev
            if F is not None:
                conf.forces = F[fr] * u.force_to_ev_per_angstrom
        out.append(conf)
    return out


def _npz_n_frames(path: str) -> int:
    R = _load_npz(path)[0]
    return 1 if R.ndim == 2 else int(R.shape[0])


def _frames_for(path: str):
    """(kind, list of ase.Atoms or None) for a path, dispatched on its extension."""
    import os

    if not os.path.exists(path):
        raise DataError("file not found; check the path", source=path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        return "npz", None
    if os.path.getsize(path) == 0:
        raise DataError("no frames (the file is empty); point to a file with data", source=path)
    if ext in _EXTXYZ_EXTS:
        return "ase", _read_ase_frames(path, "extxyz")
    if ext == ".db":
        return "ase", _read_db_frames(path)
    if ext == ".traj":
        return "ase", _read_ase_frames(path, "traj")
    return "ase", _read_ase_frames(path, None)


def read(
    path,
    *,
    units="eV",
    index=":",
    energy_key: str = "energy",
    forces_key: str = "forces",
    stress_key: str = "stress",
    virial_key: str | None = None,
    require_forces: bool = True,
    min_distance: float = 0.1,
) -> list[Configuration]:
    """Read labelled configurations from a file, convert them to eV/Å and check them.

    Formats, chosen by extension: ``.xyz``/``.extxyz`` (extended XYZ), ``.db`` (ASE
    database), ``.traj`` (ASE trajectory), ``.npz`` (MD17: keys ``R`` [F, N, 3],
    ``z`` [N], ``E`` [F] or [F, 1], ``F`` [F, N, 3]; or revised MD17: ``coords``,
    ``nuclear_charges``, ``energies``, ``forces``; no cell, pbc False); any other
    extension is handed to ``ase.io.read`` with format auto-detection.

    Labels are looked up by key: the energy (and stress / virial) in ``atoms.info``,
    the forces in ``atoms.arrays``, and, failing that, in the calculator results
    (ASE moves ``energy``/``forces``/``stress`` there when reading extxyz).

    Units: ``units`` (a name for :func:`mlpjax.units.resolve_units` or a
    :class:`~mlpjax.units.Units`) says what the FILE is written in. Positions and
    cell are multiplied by ``length_to_angstrom``, energy by ``energy_to_ev``,
    forces by ``force_to_ev_per_angstrom``, stress by ``stress_to_ev_per_angstrom3``.

    Stress sign convention (ASE): ``stress = (1/V) ∂E/∂ε``, positive under tension
    (the negative of the pressure for a hydrostatic state, ``P = -tr(σ)/3``). Stress
    may be a Voigt 6-vector in ASE order (xx yy zz yz xz xy), 9 values or 3x3; it is
    stored 3x3 [eV/Å^3]. A virial ``W`` (energy units, 3x3, 9 or Voigt 6) read from
    ``info[virial_key]`` uses the convention ``W = -∂E/∂ε`` (as in GAP/MACE extxyz
    files) and is converted to ``stress = -W / V`` with ``V`` the cell volume in Å^3;
    when ``virial_key`` is given and present in a frame it takes precedence over the
    stress.

    Args:
      path: file to read.
      units: units the file is written in (default eV and Å).
      index: which frames, ASE style: ``":"`` (all), an int, ``"-1"``, ``"0:100:2"``
        or a slice. ``Configuration.frame`` is the frame's index in the file.
      energy_key, forces_key, stress_key: names of the labels in the file.
      virial_key: optional info key of a virial to turn into stress.
      require_forces: raise if a frame has no forces (False allows energy-only data).
      min_distance: [Å] raise if two atoms (periodic images included) are closer.

    Returns:
      list of :class:`Configuration` in eV / Å / eV/Å / eV/Å^3.

    Raises:
      DataError: naming the file, frame and field, for a missing/empty/unparseable
        file, missing energy, missing forces (when required), NaN/inf anywhere,
        wrong forces shape, invalid atomic numbers, or atoms closer than
        ``min_distance``.
    """
    from .units import resolve_units

    u = resolve_units(units)
    source = str(path)
    kind, atoms_list = _frames_for(source)
    if kind == "npz":
        n = _npz_n_frames(source)
    else:
        n = len(atoms_list)
    if n == 0:
        raise DataError("no frames; point to a file with data", source=source)
    try:
        frames = _select_frames(n, index)
    except (IndexError, ValueError) as err:
        raise DataError(f"bad index={index!r} ({err})", source=source) from err
    if not frames:
        raise DataError(f"no frames selected by index={index!r} out of {n}; choose another index", source=source)

    if kind == "npz":
        configs = _npz_configs(source, frames, u, labels=True)
    else:
        configs = [
            _config_from_atoms(
                atoms_list[fr],
                u=u,
                source=source,
                frame=fr,
                energy_key=energy_key,
                forces_key=forces_key,
                stress_key=stress_key,
                virial_key=virial_key,
            )
            for fr in frames
        ]
    for conf in configs:
        _check_structure(conf, min_distance=min_distance)
        _check_labels(conf, require_forces=require_forces)
    return configs


def read_structure(path, index=-1, *, units="eV", min_distance: float = 0.1):
    """Unlabelled structure(s) (e.g. an MD start structure) from any file :func:`read` accepts.

    Positions/cell are converted to Å with ``units`` (only the length unit matters).
    Returns one :class:`Configuration` when ``index`` is an int (or an int-like
    string such as ``"-1"``), else a list. Geometry is checked like in :func:`read`
    (atomic numbers, finiteness, atoms closer than ``min_distance`` Å); labels
    (energy, forces, stress) are not read.
    """
    from .units import resolve_units

    u = resolve_units(units)
    source = str(path)
    kind, atoms_list = _frames_for(source)
    n = _npz_n_frames(source) if kind == "npz" else len(atoms_list)
    if n == 0:
        raise DataError("no frames; point to a file with a structure", source=source)
    single = isinstance(index, (int, np.integer)) or (isinstance(index, str) and ":" not in index)
    try:
        frames = _select_frames(n, index)
    except (IndexError, ValueError) as err:
        raise DataError(f"bad index={index!r} ({err})", source=source) from err
    if kind == "npz":
        configs = _npz_configs(source, frames, u, labels=False)
    else:
        configs = []
        for fr in frames:
            conf = Configuration.from_atoms(atoms_list[fr], source=source, frame=fr)
            conf.positions = conf.positions * u.length_to_angstrom
            conf.cell = conf.cell * u.length_to_angstrom
            configs.append(conf)
    for conf in configs:
        _check_structure(conf, min_distance=min_distance)
    return configs[0] if single else configs


def write_extxyz(path, configs) -> None:
    """Write configuration(s) with their labels (eV, Å, eV/Å, eV/Å^3) to an extended-XYZ file.

    Energy, forces and stress are written under the standard keys ``energy``,
    ``forces`` and ``stress``, so :func:`read` with default keys and ``units="eV"``
    reads them back. Scalar/str entries of ``Configuration.info`` are written too.
    """
    import ase.io

    if isinstance(configs, Configuration):
        configs = [configs]
    images = []
    for conf in configs:
        atoms = conf.to_atoms()
        for k, v in conf.info.items():
            if isinstance(v, (str, bool, int, float, np.integer, np.floating)) and k not in ("energy", "forces", "stress", "virial"):
                atoms.info[k] = v
        images.append(atoms)
    ase.io.write(str(path), images, format="extxyz")


# ---------------------------------------------------------------------------
# Dataset utilities
# ---------------------------------------------------------------------------


def species_in(configs) -> tuple[int, ...]:
    """Sorted unique atomic numbers Z present in ``configs``."""
    zs = set()
    for c in configs:
        zs.update(int(z) for z in np.unique(c.numbers))
    return tuple(sorted(zs))


def split(n: int, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> tuple[np.ndarray, ...]:
    """Reproducible random split of ``range(n)`` into ``len(fractions)`` parts.

    A permutation from ``np.random.default_rng(seed)`` is cut into consecutive
    pieces of sizes ``round(n * fraction)`` (largest-remainder rounding, so the
    sizes sum to ``n``). Every index lands in exactly one part. Each part with a
    non-zero fraction gets at least one index when ``n`` is at least the number of
    such parts (taken from the largest part). Returns sorted int64 index arrays.

    Raises:
      ValueError: negative fractions, or fractions not summing to 1 (within 1e-6).
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or fr.size == 0:
        raise ValueError(f"fractions must be a non-empty sequence, got {fractions!r}")
    if np.any(fr < 0) or not np.all(np.isfinite(fr)):
        raise ValueError(f"fractions must be finite and non-negative, got {fractions!r}")
    if abs(fr.sum() - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions!r} (sum {fr.sum():.6g})")
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    exact = fr * n
    sizes = np.floor(exact).astype(np.int64)
    rest = n - int(sizes.sum())
    if rest > 0:
        order = np.argsort(-(exact - sizes), kind="stable")
        sizes[order[:rest]] += 1
    nonzero = np.flatnonzero(fr > 0)
    if n >= len(nonzero):
        for k in nonzero:
            if sizes[k] == 0:
                donor = int(np.argmax(sizes))
                sizes[donor] -= 1
                sizes[k] += 1
    perm = np.random.default_rng(seed).permutation(n)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return tuple(np.sort(perm[bounds[i] : bounds[i + 1]]).astype(np.int64) for i in range(len(fr)))


def fit_reference_energies(configs, species=None, *, ridge: float = 1e-8) -> dict[int, float]:
    """Per-species reference energies E0_Z [eV] from a least-squares fit E ≈ Σ_Z n_Z · E0_Z.

    Solves ``min ||A x - E||² + λ ||x||²`` with ``A[c, s]`` the number of atoms of
    species ``species[s]`` in configuration ``c``, ``E`` the total energies [eV],
    and ``λ = ridge`` [atoms²], by ``lstsq`` on the augmented system ``[A; √λ I]``.
    The default λ is far below the squared atom counts, so a well-posed fit is
    unbiased to ~1e-8 relative; for ridge=0 ``lstsq`` returns the minimum-norm solution.

    Rank deficiency: when all configurations share one composition (a single-element
    crystal, a single molecule's MD trajectory) the E0_Z are not separately
    determined. The (ridge / minimum-norm) solution then spreads the mean energy over
    the species in proportion to their counts, so Σ_Z n_Z E0_Z equals the mean
    energy; for one element E0 = mean energy per atom. A species listed in
    ``species`` but absent from the data gets 0.

    Args:
      configs: configurations with energies.
      species: atomic numbers to fit (default: sorted unique Z in ``configs``).
      ridge: Tikhonov strength λ [atoms²] (>= 0).

    Returns:
      ``{Z: E0_Z}`` in eV.
    """
    configs = list(configs)
    if not configs:
        raise DataError("no configurations to fit reference energies to")
    species = tuple(int(z) for z in (species_in(configs) if species is None else species))
    col = {z: k for k, z in enumerate(species)}
    A = np.zeros((len(configs), len(species)))
    y = np.zeros(len(configs))
    for c_i, c in enumerate(configs):
        if c.energy is None:
            raise DataError("missing energy, needed to fit reference energies", source=c.source or None, frame=c.frame, field="energy")
        zs, counts = np.unique(c.numbers, return_counts=True)
        for z, cnt in zip(zs, counts):
            if int(z) not in col:
                raise DataError(
                    f"species Z={int(z)} is not in species={species}; add it to species",
                    source=c.source or None,
                    frame=c.frame,
                    field="numbers",
                )
            A[c_i, col[int(z)]] = cnt
        y[c_i] = c.energy
    if not ridge >= 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    lam = float(ridge)
    if lam > 0:
        A_aug = np.vstack([A, np.sqrt(lam) * np.eye(len(species))])
        y_aug = np.concatenate([y, np.zeros(len(species))])
    else:
        A_aug, y_aug = A, y
    x = np.linalg.lstsq(A_aug, y_aug, rcond=None)[0]
    return {z: float(x[k]) for z, k in col.items()}


@dataclasses.dataclass(frozen=True)
class DatasetStatistics:
    """Summary of a dataset, used to scale and shift a model's outputs."""

    energy_per_atom_mean: float  # eV/atom, mean over configurations of (E - Σ_Z n_Z E0_Z) / n_atoms
    energy_per_atom_std: float  # eV/atom, population std (ddof=0) of the same quantity
    force_rms: float  # eV/Å, sqrt(mean of squared force components over all atoms with forces); nan if no forces
    n_configurations: int
    n_atoms_total: int
    species: tuple[int, ...]  # sorted unique Z in the data


def statistics(configs, reference_energies: dict[int, float]) -> DatasetStatistics:
    """Dataset statistics with the reference energies ``{Z: E0_Z}`` [eV] subtracted.

    ``energy_per_atom_*`` come from configurations with an energy; ``force_rms``
    from those with forces (nan when none has forces).
    """
    configs = list(configs)
    if not configs:
        raise DataError("no configurations to compute statistics of")
    e_pa = []
    f_sq_sum, f_count = 0.0, 0
    for c in configs:
        if c.energy is not None:
            e0 = 0.0
            for z in c.numbers:
                try:
                    e0 += reference_energies[int(z)]
                except KeyError:
                    raise DataError(
                        f"no reference energy for Z={int(z)}; refit reference energies including it",
                        source=c.source or None,
                        frame=c.frame,
                        field="numbers",
                    ) from None
            e_pa.append((c.energy - e0) / c.n_atoms)
        if c.forces is not None:
            f = np.asarray(c.forces, dtype=np.float64)
            f_sq_sum += float(np.sum(f * f))
            f_count += f.size
    e_pa = np.asarray(e_pa)
    return DatasetStatistics(
        energy_per_atom_mean=float(e_pa.mean()) if e_pa.size else float("nan"),
        energy_per_atom_std=float(e_pa.std()) if e_pa.size else float("nan"),
        force_rms=float(np.sqrt(f_sq_sum / f_count)) if f_count else float("nan"),
        n_configurations=len(configs),
        n_atoms_total=int(sum(c.n_atoms for c in configs)),
        species=species_in(configs),
    )
