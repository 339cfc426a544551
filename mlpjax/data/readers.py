"""Reading and writing labelled structures: extended XYZ, ASE databases and trajectories,
MD17-style ``.npz`` and anything else ``ase.io`` reads; :func:`read` (labelled data),
:func:`read_structure` (an unlabelled start structure), :func:`write_extxyz`.

Units are applied here, at the input boundary: a file is read in the units it declares
(:func:`mlpjax.units.resolve_units`) and every :class:`~mlpjax.data.configuration.Configuration`
leaves in internal units (eV, Å, eV/Å, eV/Å^3), checked frame by frame.
"""

from __future__ import annotations

import numpy as np

from mlpjax.data.configuration import Configuration, DataError, _check_labels, _check_structure

_EXTXYZ_EXTS = (".xyz", ".extxyz")
# MD17 (sGDML) and revised-MD17 key sets for .npz files: (positions, numbers, energies, forces).
_NPZ_KEYSETS = (("R", "z", "E", "F"), ("coords", "nuclear_charges", "energies", "forces"))


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
    from mlpjax.units import resolve_units

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
    from mlpjax.units import resolve_units

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
