"""Packed data sets: a whole data set in one chunked, compressed HDF5 file, read lazily (h5py).

:func:`pack_dataset` (``mlpjax data pack IN OUT.h5``) streams the frames of any file
:func:`mlpjax.data.read` accepts through the same conversion and checks (units → eV/Å, NaN/inf,
missing labels, overlapping atoms, atomic numbers; a bad frame is a one-line
:class:`~mlpjax.data.DataError` naming the file, frame and field) into the file below, never
holding more than one block of frames, and renames it into place only when it is complete.
:class:`PackedDataset` opens it lazily: ``len``, random access to
:class:`~mlpjax.data.Configuration` objects, views over index subsets, and a one-pass
:meth:`PackedDataset.statistics` (reference energies, energy shift/spread, force RMS, average
neighbour count) equal to what the in-memory path computes.

Layout (``format = "mlpjax-packed"``, ``format_version = 1``; internal units only)::

    per atom, structures concatenated (structure i owns rows offsets[i]:offsets[i+1]):
      positions   [n_atoms_total, 3] float64  Å
      numbers     [n_atoms_total]    uint8    Z
      forces      [n_atoms_total, 3] float64  eV/Å (0 where has_forces is False)
    per structure:
      offsets     [n + 1]     int64    first atom row of each structure (offsets[n] = n_atoms_total)
      n_atoms     [n]         int32
      energy      [n]         float64  eV (every frame has one: the checks require it)
      cell        [n, 3, 3]   float64  Å, rows are lattice vectors
      pbc         [n, 3]      bool
      has_forces  [n]         bool
      stress      [n, 3, 3]   float64  eV/Å³, ASE sign (σ = (1/V) ∂E/∂ε; a virial W was read as -W/V);
                                       0 where has_stress is False
      has_stress  [n]         bool
      info        [n]         UTF-8 JSON of the frame's scalar info entries (str, int, float, bool;
                                       variable-length strings: no compression, no checksum)
      edge_counts/<cutoff>  [n] int64  full-neighbour-list edges within that cutoff (Å), for each
                                       ``mlpjax data pack --cutoff`` (the training budget needs them)
    attributes: format, format_version, complete (set last), n_structures, n_atoms_total,
      species (JSON list of Z), units (JSON: the internal units), source, source_sha256,
      source_bytes, mlpjax_version, reader (JSON: units the source was read in, label keys,
      require_forces, min_distance), compression, created

Frame i of the packed file is frame i of the source file (every frame is packed, in order);
a :class:`~mlpjax.data.Configuration` read back has ``source`` = the packed file and ``frame`` = i.
Every numeric dataset carries HDF5's Fletcher-32 checksum, so a damaged chunk is an error naming the
frame and field, never silently wrong numbers.

Memory: the per-structure arrays (about 190 bytes per structure) are held in memory once the
file is opened; the per-atom arrays are read on demand, a structure or a block at a time.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import tempfile
from typing import Iterator, Sequence

import numpy as np

from mlpjax.data.configuration import Configuration, DataError, _check_labels, _check_structure
from mlpjax.data.dataset import DatasetStatistics
from mlpjax.files import file_sha256

FORMAT = "mlpjax-packed"
FORMAT_VERSION = 1
PACKED_SUFFIXES = (".h5", ".hdf5")  # a data file with one of these suffixes is a packed data set
INTERNAL_UNITS = {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom", "stress": "eV/Angstrom^3"}
_COMPRESSIONS = ("gzip", "lzf", "none")
# rows per HDF5 chunk of the per-atom arrays (6 KiB of positions): a random read decompresses whole chunks
# (25,000 32-atom cells, gzip: 0.19 ms per structure at 256 rows, 0.26 ms at 1,024; lzf 0.11 ms, none 0.06 ms)
_ATOM_CHUNK = 256
_STRUCTURE_CHUNK = 1024  # rows per chunk of the per-structure arrays
_WRITE_BLOCK = 512  # frames buffered between writes while packing
_READ_BLOCK = 1024  # structures per block of the streaming statistics pass
_PER_STRUCTURE = ("offsets", "n_atoms", "energy", "cell", "pbc", "has_forces", "stress", "has_stress")
_PER_ATOM = ("positions", "numbers", "forces")


def is_packed_path(path) -> bool:
    """True when ``path`` names a packed data set (by its suffix, :data:`PACKED_SUFFIXES`)."""
    return isinstance(path, (str, os.PathLike)) and os.fspath(path).lower().endswith(PACKED_SUFFIXES)


def _h5py():
    try:
        import h5py
    except ImportError:  # an optional extra
        raise DataError('packed data sets need h5py: pip install "mlpjax[stream]" (or pip install h5py)') from None
    return h5py


def _cutoff_key(cutoff: float) -> str:
    return format(float(cutoff), ".6g")


# --------------------------------------------------------------------------- reading the source
def _db_row_atoms(row):
    """One ASE database row as ase.Atoms: key_value_pairs to info, per-atom data to arrays (as
    :func:`mlpjax.data.readers._read_db_frames` does for a whole database)."""
    atoms = row.toatoms()
    atoms.info.update(row.get("key_value_pairs", {}))
    for k, v in (row.get("data") or {}).items():
        v_arr = np.asarray(v) if not isinstance(v, (str, dict)) else None
        if v_arr is not None and v_arr.ndim >= 1 and v_arr.shape[0] == len(atoms) and k != "energy":
            atoms.arrays[k] = v_arr
        else:
            atoms.info[k] = v
    return atoms


def _source_atoms(path: str) -> Iterator:
    """ase.Atoms of every frame of ``path``, one at a time (ase.io.iread; ASE databases row by row);
    a frame ASE cannot parse is a DataError naming the frame."""
    from mlpjax.data.readers import _EXTXYZ_EXTS

    ext = os.path.splitext(path)[1].lower()
    if ext == ".db":
        import ase.db

        try:
            with ase.db.connect(path, type="db") as db:
                for row in db.select():
                    yield _db_row_atoms(row)
        except DataError:
            raise
        except Exception as err:
            raise DataError(f"could not read the ASE database ({type(err).__name__}: {err}); check the file", source=path) from err
        return
    import ase.io

    fmt = "extxyz" if ext in _EXTXYZ_EXTS else "traj" if ext == ".traj" else None
    frames = ase.io.iread(path, index=":", format=fmt)
    frame = 0
    while True:
        try:
            atoms = next(frames)
        except StopIteration:
            return
        except DataError:
            raise
        except Exception as err:  # ASE raises many exception types for corrupt files
            raise DataError(f"could not parse the frame as {fmt or 'any ASE format'} ({type(err).__name__}: {err}); "
                            "check the format/extension or repair the file", source=path, frame=frame) from err
        yield atoms
        frame += 1


def iter_read(path, *, units="eV", energy_key: str = "energy", forces_key: str = "forces", stress_key: str = "stress",
              virial_key: str | None = None, require_forces: bool = True,
              min_distance: float = 0.1) -> Iterator[Configuration]:
    """The configurations :func:`mlpjax.data.read` returns for ``path`` (all frames), one at a time:
    the same unit conversion and the same checks of every frame, without holding the file's frames.

    ``.npz`` (MD17) files are the exception: numpy loads their arrays whole, so they are read with
    :func:`mlpjax.data.read` and yielded from that list.
    """
    from mlpjax.data.readers import _config_from_atoms, read
    from mlpjax.units import resolve_units

    source = str(path)
    if not os.path.exists(source):
        raise DataError("file not found; check the path", source=source)
    if source.lower().endswith(".npz"):
        yield from read(source, units=units, energy_key=energy_key, forces_key=forces_key, stress_key=stress_key,
                        virial_key=virial_key, require_forces=require_forces, min_distance=min_distance)
        return
    if os.path.getsize(source) == 0:
        raise DataError("no frames (the file is empty); point to a file with data", source=source)
    u = resolve_units(units)
    n = 0
    for frame, atoms in enumerate(_source_atoms(source)):
        conf = _config_from_atoms(atoms, u=u, source=source, frame=frame, energy_key=energy_key, forces_key=forces_key,
                                  stress_key=stress_key, virial_key=virial_key)
        _check_structure(conf, min_distance=min_distance)
        _check_labels(conf, require_forces=require_forces)
        n += 1
        yield conf
    if n == 0:
        raise DataError("no frames; point to a file with data", source=source)


# --------------------------------------------------------------------------- writing
@dataclasses.dataclass(frozen=True)
class PackSummary:
    """What :func:`pack_dataset` wrote."""

    path: str
    n_structures: int
    n_atoms: int
    species: tuple[int, ...]
    bytes: int  # size of the packed file
    source_bytes: int
    seconds: float
    edge_cutoffs: tuple[float, ...]  # Å, cutoffs whose neighbour counts are stored


def _scalar_info(info: dict) -> str:
    """JSON of the scalar entries of a frame's info (numpy scalars as Python numbers)."""
    out = {}
    for k, v in info.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, (str, bool, int, float)) and not (isinstance(v, float) and not math.isfinite(v)):
            out[str(k)] = v
    return json.dumps(out, separators=(",", ":"))


class _Writer:
    """Appends blocks of configurations to resizable, chunked datasets of an open h5py.File."""

    def __init__(self, f, *, compression: str, cutoffs: Sequence[float]):
        h5py = _h5py()
        opts = {"compression": None if compression == "none" else compression, "fletcher32": True}
        if compression == "gzip":
            opts.update(compression_opts=4, shuffle=True)
        elif compression == "lzf":
            opts.update(shuffle=True)
        self.f, self.cutoffs = f, tuple(float(c) for c in cutoffs)

        def make(name, shape, dtype, chunk, filters=True):
            return f.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                                    chunks=(chunk, *shape), **(opts if filters else {}))

        self.atom = {"positions": make("positions", (3,), np.float64, _ATOM_CHUNK),
                     "numbers": make("numbers", (), np.uint8, _ATOM_CHUNK),
                     "forces": make("forces", (3,), np.float64, _ATOM_CHUNK)}
        self.structure = {"n_atoms": make("n_atoms", (), np.int32, _STRUCTURE_CHUNK),
                          "energy": make("energy", (), np.float64, _STRUCTURE_CHUNK),
                          "cell": make("cell", (3, 3), np.float64, _STRUCTURE_CHUNK),
                          "pbc": make("pbc", (3,), bool, _STRUCTURE_CHUNK),
                          "has_forces": make("has_forces", (), bool, _STRUCTURE_CHUNK),
                          "stress": make("stress", (3, 3), np.float64, _STRUCTURE_CHUNK),
                          "has_stress": make("has_stress", (), bool, _STRUCTURE_CHUNK),
                          "info": make("info", (), h5py.string_dtype("utf-8"), _STRUCTURE_CHUNK,
                                       filters=False)}  # HDF5 filters cannot act on variable-length strings
        self.edges = {c: make(f"edge_counts/{_cutoff_key(c)}", (), np.int64, _STRUCTURE_CHUNK) for c in self.cutoffs}
        self.offsets = make("offsets", (), np.int64, _STRUCTURE_CHUNK)
        self.offsets.resize((1,))
        self.offsets[0] = 0
        self.n_structures = self.n_atoms = 0
        self.species: set[int] = set()

    @staticmethod
    def _append(ds, values):
        values = np.asarray(values, dtype=object if ds.dtype.kind == "O" else ds.dtype)
        n = ds.shape[0]
        ds.resize((n + len(values), *ds.shape[1:]))
        ds[n:] = values

    def write(self, block: list[Configuration]) -> None:
        from mlpjax.graph.neighbors import neighbor_list

        if not block:
            return
        counts = np.array([c.n_atoms for c in block], np.int64)
        self._append(self.atom["positions"], np.concatenate([c.positions for c in block]))
        self._append(self.atom["numbers"], np.concatenate([c.numbers for c in block]))
        self._append(self.atom["forces"], np.concatenate([c.forces if c.forces is not None else np.zeros((c.n_atoms, 3))
                                                          for c in block]))
        s = self.structure
        self._append(s["n_atoms"], counts)
        self._append(s["energy"], [c.energy for c in block])
        self._append(s["cell"], [c.cell for c in block])
        self._append(s["pbc"], [c.pbc for c in block])
        self._append(s["has_forces"], [c.forces is not None for c in block])
        self._append(s["stress"], [c.stress if c.stress is not None else np.zeros((3, 3)) for c in block])
        self._append(s["has_stress"], [c.stress is not None for c in block])
        self._append(s["info"], [_scalar_info(c.info) for c in block])
        for cutoff, ds in self.edges.items():
            self._append(ds, [neighbor_list(c.positions, c.cell, c.pbc, cutoff).senders.shape[0] for c in block])
        self._append(self.offsets, self.n_atoms + np.cumsum(counts))
        self.n_structures += len(block)
        self.n_atoms += int(counts.sum())
        for c in block:
            self.species.update(int(z) for z in np.unique(c.numbers))


def pack_dataset(source, out, *, units="eV", energy_key: str = "energy", forces_key: str = "forces",
                 stress_key: str = "stress", virial_key: str | None = None, require_forces: bool = True,
                 min_distance: float = 0.1, cutoffs: Sequence[float] = (), compression: str = "gzip",
                 progress=None) -> PackSummary:
    """Pack every frame of ``source`` (any file :func:`mlpjax.data.read` accepts, read with these
    options) into the packed HDF5 file ``out`` (layout in the module docstring).

    Streams: frames are read one at a time (:func:`iter_read`), checked, and written in blocks of
    512. The file is written as a hidden temporary next to ``out`` and renamed over it only when
    complete, so an interrupted or failed pack (a bad frame is a DataError naming the file, frame
    and field) leaves no ``out`` (and an existing ``out`` untouched).

    Args:
      cutoffs: Å; for each, the number of full-neighbour-list edges of every structure is stored
        (``edge_counts/<cutoff>``), which spares training at that cutoff one pass over the data.
      compression: "gzip" (level 4 with byte shuffle; any HDF5 reader has it), "lzf" (faster,
        h5py only) or "none".
      progress: optional callable ``progress(n_structures_written)`` after every block.
    """
    import time

    from mlpjax import __version__
    from mlpjax.units import resolve_units

    h5py = _h5py()
    if compression not in _COMPRESSIONS:
        raise ValueError(f"compression must be one of {', '.join(_COMPRESSIONS)}, got {compression!r}")
    cutoffs = tuple(sorted({float(c) for c in cutoffs}))
    if any(not (math.isfinite(c) and c > 0) for c in cutoffs):
        raise ValueError(f"cutoffs must be > 0 Å, got {cutoffs}")
    t0 = time.monotonic()
    source, out = os.fspath(source), os.fspath(out)
    u = resolve_units(units)
    unit_name = units if isinstance(units, str) else f"{u.energy}/{u.length}"
    reader = {"units": unit_name, "energy_key": energy_key, "forces_key": forces_key, "stress_key": stress_key,
              "virial_key": virial_key, "require_forces": bool(require_forces), "min_distance": float(min_distance)}
    directory = os.path.dirname(os.path.abspath(out))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(out)}.", suffix=".partial", dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 → the permissions of any new file
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["complete"] = False
            w = _Writer(f, compression=compression, cutoffs=cutoffs)
            block: list[Configuration] = []
            for conf in iter_read(source, units=u, energy_key=energy_key, forces_key=forces_key, stress_key=stress_key,
                                  virial_key=virial_key, require_forces=require_forces, min_distance=min_distance):
                block.append(conf)
                if len(block) >= _WRITE_BLOCK:
                    w.write(block)
                    block = []
                    if progress is not None:
                        progress(w.n_structures)
            w.write(block)
            if progress is not None:
                progress(w.n_structures)
            f.attrs.update({
                "n_structures": w.n_structures, "n_atoms_total": w.n_atoms,
                "species": json.dumps(sorted(w.species)), "units": json.dumps(INTERNAL_UNITS),
                "source": source, "source_sha256": file_sha256(source), "source_bytes": os.path.getsize(source),
                "mlpjax_version": __version__, "reader": json.dumps(reader), "compression": compression,
                "edge_count_cutoffs": json.dumps(list(cutoffs)),
                "created": datetime.datetime.now().isoformat(timespec="seconds"),
            })
            f.attrs["complete"] = True  # last: a file without it was cut short
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return PackSummary(path=out, n_structures=w.n_structures, n_atoms=w.n_atoms, species=tuple(sorted(w.species)),
                       bytes=os.path.getsize(out), source_bytes=os.path.getsize(source),
                       seconds=time.monotonic() - t0, edge_cutoffs=cutoffs)


# --------------------------------------------------------------------------- reading
@dataclasses.dataclass(frozen=True)
class PackedStatistics:
    """What :meth:`PackedDataset.statistics` computes in one pass (internal units)."""

    reference_energies: dict  # {Z: E0_Z} eV, = mlpjax.data.fit_reference_energies on the same structures
    dataset: DatasetStatistics  # = mlpjax.data.statistics(configs, reference_energies)
    avg_num_neighbors: float | None  # edges per atom within ``cutoff`` (as mlpjax.training.prepare_potential); None without
    cutoff: float | None  # Å


class _File:
    """The open h5py file and the per-structure arrays, shared by a data set and its views."""

    def __init__(self, path: str):
        h5py = _h5py()
        self.path = path
        if not os.path.exists(path):
            raise DataError("file not found; check the path", source=path)
        self.datasets: dict = {}
        try:  # a 1 MiB chunk cache per dataset: random access rarely hits it, a block read needs none
            self.h5 = h5py.File(path, "r", rdcc_nbytes=1 << 20)
        except OSError as err:
            raise DataError(f"cannot be opened as HDF5 ({_one_line(err)}): the file is truncated or corrupt; "
                            "pack the source again (mlpjax data pack IN OUT.h5)", source=path) from None
        try:
            self._check()
            self.meta = {name: self._read(name, slice(None)) for name in _PER_STRUCTURE}
        except BaseException:
            self.h5.close()
            raise
        offsets, n_atoms = self.meta["offsets"], self.meta["n_atoms"]
        if offsets[0] != 0 or offsets[-1] != self.n_atoms_total or np.any(np.diff(offsets) != n_atoms):
            self.h5.close()
            raise DataError("offsets do not match n_atoms: the file is corrupt; pack the source again", source=path,
                            field="offsets")
        self.edge_cache: dict[str, np.ndarray] = {}  # stored counts, by cutoff key
        self.edge_computed: dict[str, np.ndarray] = {}  # counts computed here ([n], -1 where not yet)

    def _check(self) -> None:
        a, path = self.h5.attrs, self.path
        if a.get("format") != FORMAT:
            raise DataError(f"is an HDF5 file but not an mlpjax packed data set (no format = {FORMAT!r} attribute); "
                            "make one with mlpjax data pack IN OUT.h5", source=path)
        if int(a.get("format_version", -1)) > FORMAT_VERSION:
            raise DataError(f"packed format version {int(a['format_version'])} is newer than this mlpjax reads "
                            f"({FORMAT_VERSION}); update mlpjax", source=path)
        if not bool(a.get("complete", False)):
            raise DataError("is an incomplete packed data set (packing was interrupted before it finished); "
                            "pack the source again", source=path)
        self.n = int(a["n_structures"])
        self.n_atoms_total = int(a["n_atoms_total"])
        for name in _PER_STRUCTURE + _PER_ATOM + ("info",):
            if name not in self.h5:
                raise DataError(f"has no {name!r} dataset: the file is corrupt; pack the source again", source=path,
                                field=name)
            want = self.n + 1 if name == "offsets" else self.n_atoms_total if name in _PER_ATOM else self.n
            if self.h5[name].shape[0] != want:
                raise DataError(f"{name!r} has {self.h5[name].shape[0]} rows, expected {want}: the file is corrupt; "
                                "pack the source again", source=path, field=name)

    def _read(self, name: str, rows, *, frame: int | None = None):
        try:
            ds = self.datasets.get(name)
            if ds is None:  # h5py's lookup by name costs ~0.1 ms: each dataset is looked up once
                ds = self.datasets[name] = self.h5[name]
            return ds[rows]
        except (OSError, ValueError, KeyError) as err:
            raise DataError(f"cannot be read ({_one_line(err)}): the file is corrupt; pack the source again",
                            source=self.path, frame=frame, field=name) from None

    def edge_counts(self, cutoff: float, index: np.ndarray) -> np.ndarray | None:
        key = _cutoff_key(cutoff)
        if key not in self.edge_cache and "edge_counts" in self.h5 and key in self.h5["edge_counts"]:
            counts = self._read(f"edge_counts/{key}", slice(None))
            if counts.shape != (self.n,):
                raise DataError(f"edge_counts/{key} has shape {counts.shape}, expected ({self.n},): the file is corrupt",
                                source=self.path, field=f"edge_counts/{key}")
            self.edge_cache[key] = counts.astype(np.int64)
        return self.edge_cache[key][index] if key in self.edge_cache else None


def _one_line(err) -> str:
    return " ".join(str(err).split())


class PackedDataset(Sequence[Configuration]):
    """A packed data set (:func:`pack_dataset`), or a view of some of its structures.

    ``len(ds)``; ``ds[i]`` a :class:`Configuration` (read from the file on each access);
    ``ds[a:b]`` / :meth:`subset` a view over other indices (no data read); iteration reads blocks
    of consecutive structures. The per-structure arrays below are NumPy arrays for the view.
    Opening checks the file (format, completeness, dataset lengths, offsets): a truncated,
    interrupted or corrupt file is a one-line DataError naming it.
    """

    def __init__(self, path, *, _file: _File | None = None, _index: np.ndarray | None = None):
        self._f = _File(os.fspath(path)) if _file is None else _file
        self._index = np.arange(self._f.n, dtype=np.int64) if _index is None else np.asarray(_index, np.int64)

    # -- provenance
    @property
    def path(self) -> str:
        return self._f.path

    @property
    def attrs(self) -> dict:
        """The file's attributes (JSON-valued ones decoded): source, source_sha256, reader, ..."""
        out = {}
        for k, v in self._f.h5.attrs.items():
            v = v.item() if isinstance(v, np.generic) else v
            if k in ("species", "units", "reader", "edge_count_cutoffs") and isinstance(v, str):
                v = json.loads(v)
            out[k] = v
        return out

    @property
    def reader_units(self) -> str:
        """The units the source file was read in (converted to eV/Å when packing)."""
        return str(json.loads(self._f.h5.attrs["reader"])["units"])

    @property
    def file_species(self) -> tuple[int, ...]:
        return tuple(int(z) for z in json.loads(self._f.h5.attrs["species"]))

    # -- per-structure arrays of this view
    @property
    def index(self) -> np.ndarray:
        """[n] int64, the structures' indices in the file (= their frames in the source file)."""
        return self._index

    def _meta(self, name):
        return self._f.meta[name][self._index]

    @property
    def n_atoms(self) -> np.ndarray:  # [n] int64
        return self._f.meta["n_atoms"][self._index].astype(np.int64)

    @property
    def energy(self) -> np.ndarray:  # [n] eV
        return self._meta("energy")

    @property
    def pbc(self) -> np.ndarray:  # [n, 3] bool
        return self._meta("pbc")

    @property
    def has_forces(self) -> np.ndarray:  # [n] bool
        return self._meta("has_forces")

    @property
    def has_stress(self) -> np.ndarray:  # [n] bool
        return self._meta("has_stress")

    # -- Sequence
    def __len__(self) -> int:
        return int(self._index.shape[0])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.subset(self._index[i], _file_indices=True)
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"structure {i} out of range for {len(self)} structures")
        return self._config(int(self._index[i]))

    def subset(self, indices, *, _file_indices: bool = False) -> "PackedDataset":
        """A view over ``indices`` (positions in this view, in the given order; no data read)."""
        indices = np.asarray(indices, np.int64)
        return PackedDataset(self.path, _file=self._f, _index=indices if _file_indices else self._index[indices])

    def __iter__(self) -> Iterator[Configuration]:
        for start in range(0, len(self), _READ_BLOCK):
            yield from self.read_block(range(start, min(start + _READ_BLOCK, len(self))))

    def head(self, k: int) -> list[Configuration]:
        """The first ``k`` structures of the view (all when ``k`` >= len)."""
        return self.read_block(range(min(int(k), len(self))))

    def get(self, i: int, *, info: bool = True) -> Configuration:
        """Structure ``i`` of the view; ``info=False`` skips decoding its info (training does not use it)."""
        return self._config(int(self._index[int(i)]), info=info)

    def _config(self, k: int, *, info: bool = True, atoms: dict | None = None) -> Configuration:
        m = self._f.meta
        lo, hi = int(m["offsets"][k]), int(m["offsets"][k + 1])
        if atoms is None:
            atoms = {name: self._f._read(name, slice(lo, hi), frame=k) for name in _PER_ATOM
                     if name != "forces" or m["has_forces"][k]}
        conf = Configuration(
            positions=np.asarray(atoms["positions"], np.float64),
            numbers=np.asarray(atoms["numbers"], np.int64),
            cell=np.array(m["cell"][k], np.float64),
            pbc=np.array(m["pbc"][k], bool),
            energy=float(m["energy"][k]),
            forces=np.asarray(atoms["forces"], np.float64) if m["has_forces"][k] else None,
            stress=np.array(m["stress"][k], np.float64) if m["has_stress"][k] else None,
            source=self.path,
            frame=k,
        )
        if info:
            raw = self._f._read("info", k, frame=k)
            conf.info = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        return conf

    def _atom_rows(self, file_ids: np.ndarray, fields: Sequence[str]):
        """Per-atom arrays of the structures ``file_ids`` (ascending file indices), concatenated in that
        order, read as one slice of the file; and their local offsets [len + 1]."""
        m = self._f.meta
        starts, counts = m["offsets"][file_ids], m["n_atoms"][file_ids].astype(np.int64)
        lo, hi = int(starts[0]), int(starts[-1] + counts[-1])
        local = np.concatenate([[0], np.cumsum(counts)])
        contiguous = local[-1] == hi - lo
        rows = None if contiguous else np.repeat(starts - lo - local[:-1], counts) + np.arange(local[-1])
        out = {}
        for name in fields:
            block = self._f._read(name, slice(lo, hi), frame=int(file_ids[0]))
            out[name] = block if contiguous else block[rows]
        return out, local

    def read_block(self, positions) -> list[Configuration]:
        """Structures at these view positions, read with one slice per per-atom array (in the given order)."""
        ids = self._index[np.asarray(list(positions), np.int64)]
        if ids.size == 0:
            return []
        order = np.argsort(ids, kind="stable")
        atoms, local = self._atom_rows(ids[order], _PER_ATOM)
        confs = [None] * len(ids)
        for j, o in enumerate(order):
            part = {k: v[local[j]:local[j + 1]] for k, v in atoms.items()}
            confs[o] = self._config(int(ids[o]), atoms=part)
        return confs

    # -- neighbour counts and statistics
    def edge_counts(self, cutoff: float) -> np.ndarray:
        """[n] int64: edges of every structure's full neighbour list within ``cutoff`` Å (what
        :func:`mlpjax.graph.to_graph` gives): stored at pack time for that cutoff, or computed now
        in one streaming pass (neighbour lists built and dropped one structure at a time)."""
        stored = self._f.edge_counts(cutoff, self._index)
        if stored is not None:
            return stored
        from mlpjax.graph.neighbors import neighbor_list

        known = self._f.edge_computed.setdefault(_cutoff_key(cutoff), np.full(self._f.n, -1, np.int64))
        missing = np.unique(self._index[known[self._index] < 0])  # ascending file indices
        m = self._f.meta
        for start in range(0, len(missing), _READ_BLOCK):
            ids = missing[start:start + _READ_BLOCK]
            atoms, local = self._atom_rows(ids, ("positions",))
            for j, k in enumerate(ids):
                known[k] = neighbor_list(atoms["positions"][local[j]:local[j + 1]], m["cell"][k], m["pbc"][k],
                                         cutoff).senders.shape[0]
        return known[self._index].copy()

    def species_present(self) -> dict[int, int]:
        """``{Z: file index of the first structure of the view containing Z}`` for every element of the
        view, from one pass over ``numbers`` (1 byte per atom)."""
        first: dict[int, int] = {}
        ids_all = np.sort(self._index)
        for start in range(0, len(ids_all), _READ_BLOCK):
            ids = ids_all[start:start + _READ_BLOCK]
            atoms, local = self._atom_rows(ids, ("numbers",))
            z_new = [int(z) for z in np.unique(atoms["numbers"]) if int(z) not in first]
            for z in z_new:
                row = int(np.argmax(atoms["numbers"] == z))
                first[z] = int(ids[int(np.searchsorted(local, row, side="right") - 1)])
        return dict(sorted(first.items()))

    def statistics(self, *, cutoff: float | None = None, species: Sequence[int] | None = None,
                   ridge: float = 1e-8) -> PackedStatistics:
        """Reference energies, energy and force statistics and the average neighbour count of the view,
        in one pass over blocks of ``numbers`` and ``forces`` (and ``positions`` when the neighbour counts
        at ``cutoff`` are not stored); memory does not grow with the number of structures.

        Equal to the in-memory computation on the same structures (``tests/test_packed.py``, float64):

        * E0: :func:`mlpjax.data.fit_reference_energies` (``ridge`` the same λ) solves
          ``lstsq([A; √λ I], [E; 0])`` with A the composition matrix. The rows of ``[A | E]`` are folded
          into a triangular factor block by block (R of a QR factorisation, updated as ``qr([R; block])``),
          and ``lstsq([R_A; √λ I], [r_E; 0])`` is the same least-squares problem. Not the normal
          equations AᵀA x = AᵀE: they square the condition number, and for data of a single composition
          with several elements (one molecule's MD) AᵀA is singular, with the ridge below its rounding.
        * energy per atom after E0 (mean, population std), :func:`mlpjax.data.statistics`: e_c =
          E_c/N_c − f_c·E0 is linear in the composition fractions f_c = n_c/N_c, so the mean and the
          co-moment matrix of (E_c/N_c, f_c) (merged block by block, Chan et al.) give its mean and
          variance once E0 is known.
        * force RMS over the structures with forces; ``avg_num_neighbors`` = Σ edges / Σ atoms
          (:func:`mlpjax.training.prepare_potential`).

        ``species``: the columns of the fit (default: the elements present); an element of the data
        outside ``species`` is a DataError naming its frame, one in ``species`` but absent gets E0 = 0.
        """
        if len(self) == 0:
            raise DataError("no configurations to compute statistics of", source=self.path)
        if not ridge >= 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}")
        cols = tuple(sorted(int(z) for z in (self.file_species if species is None else species)))
        table = np.full(256, -1, np.int64)
        table[np.asarray(cols, np.int64)] = np.arange(len(cols))
        s = len(cols)
        m = self._f.meta
        R = np.zeros((0, s + 1))  # triangular factor of [A | E]
        present = np.zeros(s, bool)
        mom_n, mom_mean, mom_M = 0, np.zeros(s + 1), np.zeros((s + 1, s + 1))  # moments of (E/N, n/N)
        f_sq, f_count = 0.0, 0
        ids_all = np.sort(self._index)
        for start in range(0, len(ids_all), _READ_BLOCK):
            ids = ids_all[start:start + _READ_BLOCK]
            has_f = m["has_forces"][ids]
            atoms, local = self._atom_rows(ids, ("numbers", "forces") if has_f.any() else ("numbers",))
            cidx = table[atoms["numbers"].astype(np.int64)]
            if np.any(cidx < 0):
                j = int(np.searchsorted(local, int(np.argmax(cidx < 0)), side="right") - 1)
                z = int(atoms["numbers"][int(np.argmax(cidx < 0))])
                raise DataError(f"species Z={z} is not in species={cols}; add it to species", source=self.path,
                                frame=int(ids[j]), field="numbers")
            b = len(ids)
            struct = np.repeat(np.arange(b), np.diff(local))
            A = np.bincount(struct * s + cidx, minlength=b * s).reshape(b, s).astype(np.float64)  # [b, S] atoms
            E = m["energy"][ids]  # [b] eV
            present |= A.any(axis=0)
            R = np.linalg.qr(np.vstack([R, np.column_stack([A, E])]), mode="r")
            N = np.diff(local).astype(np.float64)
            W = np.column_stack([E / N, A / N[:, None]])  # [b, S + 1]
            w_mean = W.mean(axis=0)
            w_M = (W - w_mean).T @ (W - w_mean)
            delta, total = w_mean - mom_mean, mom_n + b
            mom_mean = mom_mean + delta * (b / total)
            mom_M = mom_M + w_M + np.outer(delta, delta) * (mom_n * b / total)
            mom_n = total
            if has_f.any():
                f = atoms["forces"][np.repeat(has_f, np.diff(local))]
                f_sq += float(np.sum(f * f))
                f_count += int(f.size)
        keep = present if species is None else np.ones(s, bool)
        fit_cols = np.flatnonzero(keep)
        R_A, r_E = R[:, :s][:, fit_cols], R[:, s]
        k = len(fit_cols)
        lam = float(ridge)
        if lam > 0:
            x = np.linalg.lstsq(np.vstack([R_A, math.sqrt(lam) * np.eye(k)]), np.concatenate([r_E, np.zeros(k)]),
                                rcond=None)[0]
        else:
            x = np.linalg.lstsq(R_A, r_E, rcond=None)[0]
        refs = {cols[c]: float(x[j]) for j, c in enumerate(fit_cols)}
        e0 = np.array([refs.get(z, 0.0) for z in cols])
        w = np.concatenate([[1.0], -e0])
        mean = float(mom_mean @ w)
        var = float(w @ mom_M @ w) / mom_n
        stats = DatasetStatistics(
            energy_per_atom_mean=mean,
            energy_per_atom_std=math.sqrt(max(var, 0.0)),
            force_rms=math.sqrt(f_sq / f_count) if f_count else float("nan"),
            n_configurations=len(self),
            n_atoms_total=int(self.n_atoms.sum()),
            species=tuple(cols[c] for c in np.flatnonzero(present)),
        )
        avg_nn = None
        if cutoff is not None:
            n_edges, n_atoms = int(self.edge_counts(cutoff).sum()), int(self.n_atoms.sum())
            avg_nn = n_edges / n_atoms if n_atoms and n_edges else 1.0
        return PackedStatistics(reference_energies=refs, dataset=stats, avg_num_neighbors=avg_nn,
                                cutoff=None if cutoff is None else float(cutoff))

    # -- resources
    def close(self) -> None:
        """Close the file (every view of it)."""
        self._f.h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"PackedDataset({self.path!r}, {len(self)} of {self._f.n} structures)"
