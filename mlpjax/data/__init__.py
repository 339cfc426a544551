"""Reference data, in the order it flows: one structure, reading it, a whole data set.

- :mod:`mlpjax.data.configuration`: :class:`Configuration` (one structure with its labels),
  :class:`DataError`, and the checks of one structure.
- :mod:`mlpjax.data.readers`: :func:`read`, :func:`read_structure`, :func:`write_extxyz`
  (extxyz, ASE db/traj, MD17 ``.npz``); units are converted here, at the input boundary.
- :mod:`mlpjax.data.dataset`: :func:`species_in`, :func:`split`,
  :func:`fit_reference_energies`, :func:`statistics` / :class:`DatasetStatistics`.
- :mod:`mlpjax.data.unit_check`: :func:`check_units`, do the labels look like eV and eV/Å?
- :mod:`mlpjax.data.emt`: data sets mlpjax makes itself (:func:`emt_cu`, fcc Cu labelled by EMT).
- :mod:`mlpjax.data.packed`: a data set larger than memory in one chunked HDF5 file:
  :func:`pack_dataset` (``mlpjax data pack``), :class:`PackedDataset` (lazy, random access,
  one-pass :meth:`~PackedDataset.statistics`), :func:`iter_read` (:func:`read`, one frame at a time).
  Needs the optional h5py (``pip install "mlpjax[stream]"``), imported only when used.

Everything in a :class:`Configuration` is in mlpjax's internal units (eV, Å);
readers convert at the boundary through :mod:`mlpjax.units`.
"""

from mlpjax.data.configuration import Configuration, DataError, closest_pair
from mlpjax.data.dataset import DatasetStatistics, fit_reference_energies, species_in, split, statistics
from mlpjax.data.emt import EMT_CU_LATTICE, EMT_CU_LIQUID_TEMPERATURES, EMT_CU_LIQUID_VOLUME, emt_cu
from mlpjax.data.packed import PackedDataset, PackedStatistics, PackSummary, is_packed_path, iter_read, pack_dataset
from mlpjax.data.readers import read, read_structure, write_extxyz
from mlpjax.data.unit_check import UnitProblem, check_units

__all__ = [
    "Configuration",
    "DataError",
    "DatasetStatistics",
    "EMT_CU_LATTICE",
    "EMT_CU_LIQUID_TEMPERATURES",
    "EMT_CU_LIQUID_VOLUME",
    "PackSummary",
    "PackedDataset",
    "PackedStatistics",
    "UnitProblem",
    "check_units",
    "closest_pair",
    "emt_cu",
    "fit_reference_energies",
    "is_packed_path",
    "iter_read",
    "pack_dataset",
    "read",
    "read_structure",
    "species_in",
    "split",
    "statistics",
    "write_extxyz",
]
