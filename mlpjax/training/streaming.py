"""Training from a packed data set (:mod:`mlpjax.data.packed`) without holding it in memory.

:func:`mlpjax.training.train` takes this path when its training set is a
:class:`~mlpjax.data.PackedDataset` (``TrainConfig.train_file`` naming a ``.h5`` file, or the
object passed in); the in-memory path is unchanged and stays the default. What differs:

* **Graphs on demand.** :class:`LazyGraphs` is a ``Sequence[AtomGraph]`` over the data set: item
  ``i`` reads structure ``i`` from the file and builds its neighbour list then, so
  :func:`mlpjax.graph.batches` and the data-parallel :meth:`DataParallel.batches` run on it as
  on a list. Only the per-structure atom and edge counts are held (from the file, or from one
  streaming pass: :meth:`PackedDataset.edge_counts`).
* **The same batches.** The padding budget (:func:`budget_of`, = :func:`mlpjax.graph.make_budget`
  over train + valid) and the number of steps (:func:`n_batches`) come from those counts, and the
  epoch order is the in-memory one (``default_rng(seed · 100003 + epoch).permutation``), so the
  step compiles once and every batch equals the in-memory path's: the same seed gives the same
  losses (``tests/test_packed.py``).
* **Background reading.** :func:`prefetch` runs the batch generator (file reads, neighbour lists,
  packing, the host → device copy) in a thread, :data:`PREFETCH_BATCHES` batches ahead of the step.
  Validation batches are streamed the same way at every evaluation (:class:`Reiterable`).
* **Statistics in one pass.** :func:`prepare_potential` takes E0, the energy shift, the scale and
  the average neighbour count from :meth:`PackedDataset.statistics` (equal to the in-memory
  :func:`mlpjax.training.prepare_potential`); the unit sanity check runs on the first
  :data:`UNIT_CHECK_SAMPLE` structures.
* **Final metrics streamed** (:func:`metrics`, = :func:`mlpjax.validate.metrics`); the parity plot
  shows the first :data:`PARITY_SAMPLE` structures.

Not supported with a packed training set (one-line ConfigErrors, :func:`mlpjax.config.check_streaming`):
ensembles, fine-tuning (``init_from``) and closed-form fits (GAP). Several processes
(``jax.distributed``) each stream only their contiguous shard of the training and validation
structures (``process_shard`` of a :class:`LazyGraphs` is a lazy view); the one statistics pass
(E0, scale, average neighbours) reads the whole file on every process, so all fit the same. ``devices`` > 1 on one process
works (the sub-batch budget from the same counts). A resumed run inside a cut epoch reads (and
drops) the batches already taken. Validation and test sets may be packed or in memory.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import jax
import numpy as np

from mlpjax import data as _data
from mlpjax import models as _models
from mlpjax.config import ConfigError, TrainConfig, check_streaming, is_packed
from mlpjax.data import PackedDataset
from mlpjax.graph import AtomGraph, Budget, pack, to_graph, to_graphs
from mlpjax.potential import Potential, cast_floats

PREFETCH_BATCHES = 4  # batches the reading thread may be ahead of the training step
# the first structures of a packed set held in memory at once (their Configurations, and graphs for the
# parity plot's predictions): bounded, so the run's memory does not grow with the validation set
UNIT_CHECK_SAMPLE = 500  # structures the unit sanity check looks at
PARITY_SAMPLE = 500  # structures shown in the parity plot


def is_streamed(configs) -> bool:
    """True for a packed data set (streamed from disk), False for configurations in memory."""
    return isinstance(configs, PackedDataset)


# ------------------------------------------------------------------ opening the data
def open_packed(path, config: TrainConfig, *, what: str) -> PackedDataset:
    """A packed data set for training with ``config``: its source must have been read in ``config.units``
    (what the model records as the units of its data files), else a ConfigError."""
    ds = PackedDataset(path)
    units = ds.reader_units
    if units != config.units:
        ds.close()
        raise ConfigError(f"{what} {os.fspath(path)} was packed from data in {units} (converted to eV/Å) but "
                          f"units is {config.units!r}: set units: {units} (the units of the source files, "
                          "which the model records) or pack the source with --units "
                          f"{config.units}", option="units")
    return ds


def open_data(config: TrainConfig, train_configs, valid_configs, test_configs):
    """(train, valid, test): the sets given, else those of ``config.train_file`` / ``valid_file`` /
    ``test_file`` (a packed file opened lazily, any other read into memory with ``config.units``)."""
    out = []
    for given, name in ((train_configs, "train_file"), (valid_configs, "valid_file"), (test_configs, "test_file")):
        path = getattr(config, name)
        if given is not None or path is None:
            out.append(given)
        elif is_packed(path):
            out.append(open_packed(path, config, what=name))
        else:
            out.append(_data.read(path, units=config.units))
    if out[0] is None:
        raise ValueError("no training data: pass train_configs or set train_file")
    return tuple(out)


def check_supported(config: TrainConfig) -> None:
    """ConfigError for what a packed training set does not train (see the module docstring)."""
    check_streaming(config, train_is_packed=True)


def sample(configs, k: int) -> list:
    """The first ``k`` configurations, in memory (a list is returned as it is)."""
    return configs.head(k) if is_streamed(configs) else list(configs)


def check_species(configs, species: Sequence[int], *, what: str) -> None:
    """DataError when a (packed) set has an element outside ``species`` (the training set's), naming a
    frame with it: found before training, as the in-memory path finds it building its graphs."""
    if not is_streamed(configs):
        return
    from ase.data import chemical_symbols

    extra = {z: k for z, k in configs.species_present().items() if z not in set(species)}
    if extra:
        names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in extra)
        raise _data.DataError(f"the {what} set has element(s) {names} that the training set does not have "
                              f"({', '.join(chemical_symbols[z] for z in species)}); the model cannot represent "
                              "them: add such structures to the training set", source=configs.path,
                              frame=min(extra.values()), field="numbers")


def compute_stress(config: TrainConfig, configs) -> bool:
    """Whether the loss has a stress term: ``stress_weight`` > 0 and a periodic structure with a stress
    label in the training set (as the in-memory path decides it)."""
    if not config.stress_weight > 0:
        return False
    if is_streamed(configs):
        return bool(np.any(configs.has_stress & configs.pbc.any(axis=1)))
    return any(c.stress is not None and c.periodic for c in configs)


# ------------------------------------------------------------------ graphs on demand and budgets
class Sizes(NamedTuple):
    """The size of one structure's graph (what budgets need)."""

    n_atoms: int
    n_edges: int


class _SizeView(Sequence[Sizes]):
    def __init__(self, n_atoms: np.ndarray, n_edges: np.ndarray):
        self._a, self._e = n_atoms, n_edges

    def __len__(self) -> int:
        return int(self._a.shape[0])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return _SizeView(self._a[i], self._e[i])
        return Sizes(int(self._a[i]), int(self._e[i]))


class LazyGraphs(Sequence[AtomGraph]):
    """The :class:`AtomGraph` of every structure of a packed data set (view), built when accessed.

    ``n_atoms`` / ``n_edges`` ([n] int64) are known without building any graph; a graph whose
    edge count differs from the stored one is a DataError (the budget relies on them)."""

    def __init__(self, configs: PackedDataset, species: Sequence[int], cutoff: float):
        self.configs, self.species, self.cutoff = configs, tuple(int(z) for z in species), float(cutoff)
        self.n_atoms = configs.n_atoms  # [n]
        self.n_edges = configs.edge_counts(self.cutoff)  # [n] at this cutoff

    def __len__(self) -> int:
        return len(self.configs)

    lazy = True  # mlpjax.training.distributed.process_shard keeps a slice of it lazy

    def __getitem__(self, i) -> AtomGraph:
        if isinstance(i, slice):  # a lazy view (a process's shard): no graph built, no data read
            view = LazyGraphs.__new__(LazyGraphs)
            view.configs, view.species, view.cutoff = self.configs[i], self.species, self.cutoff
            view.n_atoms, view.n_edges = self.n_atoms[i], self.n_edges[i]
            return view
        g = to_graph(self.configs.get(int(i), info=False), self.species, self.cutoff)
        if g.n_edges != int(self.n_edges[int(i)]):
            raise _data.DataError(f"structure has {g.n_edges} edges within {self.cutoff:g} Å but the file's neighbour "
                                  f"count says {int(self.n_edges[int(i)])}; pack the source again (another vesin "
                                  "version?)", source=self.configs.path, frame=g.config.frame, field="edge_counts")
        return g

    def __iter__(self) -> Iterator[AtomGraph]:
        for i in range(len(self)):
            yield self[i]

    def sizes(self) -> Sequence[Sizes]:
        """Every structure's :class:`Sizes` (what :func:`mlpjax.graph.make_budget` reads), no graph built."""
        return _SizeView(self.n_atoms, self.n_edges)


def graphs_of(configs, species: Sequence[int], cutoff: float):
    """:class:`LazyGraphs` of a packed set, :func:`mlpjax.graph.to_graphs` of configurations in memory."""
    if is_streamed(configs):
        return LazyGraphs(configs, species, cutoff)
    return to_graphs(configs, species, cutoff)


def counts(graphs) -> tuple[np.ndarray, np.ndarray]:
    """(n_atoms [n], n_edges [n]) of :class:`LazyGraphs` or a list of :class:`AtomGraph`."""
    if isinstance(graphs, LazyGraphs):
        return graphs.n_atoms, graphs.n_edges
    return (np.array([g.n_atoms for g in graphs], np.int64).reshape(-1),
            np.array([g.n_edges for g in graphs], np.int64).reshape(-1))


def sizes(graphs) -> Sequence:
    """What :func:`mlpjax.training.make_data_parallel` reads of the graphs (their sizes and number)."""
    return graphs.sizes() if isinstance(graphs, LazyGraphs) else graphs


def budget_of(graph_sets: Sequence, batch_size: int, *, multiple: int = 64) -> Budget:
    """:func:`mlpjax.graph.make_budget` over the concatenation of ``graph_sets`` from their counts (no
    graph built): the node/edge budgets of the ``batch_size`` largest structures, rounded up."""
    a = np.concatenate([counts(g)[0] for g in graph_sets])
    e = np.concatenate([counts(g)[1] for g in graph_sets])
    if not a.size:
        raise ValueError("no structures to batch")
    k = min(int(batch_size), int(a.size))

    def round_up(x: int) -> int:
        return int(-(-x // multiple) * multiple)

    nodes = int(np.sort(a)[::-1][:k].sum())
    edges = int(np.sort(e)[::-1][:k].sum())
    return Budget(n_nodes=round_up(nodes + 1), n_edges=round_up(edges + 1), n_graphs=k + 1)


def groups(graphs, budget: Budget, order: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Indices of the structures of each batch :func:`mlpjax.graph.batches` packs from ``graphs`` in
    ``order`` (default: as they are): the same greedy filling, from the counts."""
    n_atoms, n_edges = counts(graphs)
    order = np.arange(len(n_atoms)) if order is None else order
    current: list[int] = []
    nodes = edges = 0
    for i in order:
        a, e = int(n_atoms[i]), int(n_edges[i])
        if current and (nodes + a + 1 > budget.n_nodes or edges + e > budget.n_edges or len(current) + 2 > budget.n_graphs):
            yield np.asarray(current, np.int64)
            current, nodes, edges = [], 0, 0
        current.append(int(i))
        nodes += a
        edges += e
    if current:
        yield np.asarray(current, np.int64)


def n_batches(graphs, budget: Budget) -> int:
    """Batches of one epoch over ``graphs`` (the in-memory loop's ``_batch_groups``)."""
    return sum(1 for _ in groups(graphs, budget))


# ------------------------------------------------------------------ background reading
def prefetch(items: Iterable, depth: int = PREFETCH_BATCHES) -> Iterator:
    """The items of ``items``, produced by a background thread at most ``depth`` ahead of the consumer.

    An exception in the thread is raised in the consumer (the DataError of a bad frame keeps its
    one-line message). Closing the generator (or dropping it: a ``break`` out of the loop) stops the
    thread at its next item."""
    q: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((True, end))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            put((False, err))

    thread = threading.Thread(target=work, name="mlpjax-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is end:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=10.0)


class Reiterable:
    """``for batch in it`` starts a fresh :func:`prefetch` of ``make()`` each time (the validation set,
    streamed at every evaluation); ``len`` is the number of batches."""

    def __init__(self, make: Callable[[], Iterable], length: int):
        self._make, self._length = make, int(length)

    def __iter__(self) -> Iterator:
        return prefetch(self._make())

    def __len__(self) -> int:
        return self._length


def to_device(batches: Iterable) -> Iterator:
    """Each batch copied to the default device (in the prefetch thread, ahead of its step)."""
    for b in batches:
        yield jax.device_put(b)


# ------------------------------------------------------------------ normalisation
def prepare_potential(config: TrainConfig, stats, graphs: LazyGraphs, *, init: bool = True) -> Potential:
    """:func:`mlpjax.training.prepare_potential` (a fresh potential) from the one-pass statistics
    ``stats`` (:meth:`PackedDataset.statistics` of the training set at ``config.cutoff``): the same
    E0, energy shift, energy scale (force RMS, else the per-atom energy std, else 1), average neighbour
    count and initial parameters; a model's data-dependent initialisation reads ``graphs`` (built on
    demand)."""
    from mlpjax.training.prepare import resolve_dtype

    species = tuple(int(z) for z in stats.dataset.species)
    refs, ds = stats.reference_energies, stats.dataset
    scale = ds.force_rms
    if not (math.isfinite(scale) and scale > 0):
        scale = ds.energy_per_atom_std
    if not (math.isfinite(scale) and scale > 0):
        scale = 1.0
    shift = ds.energy_per_atom_mean if math.isfinite(ds.energy_per_atom_mean) else 0.0
    pot = Potential(
        model=config.model,
        model_config=_models.make_config(config.model, config.model_config),
        cutoff=float(config.cutoff),
        species=species,
        reference_energies=tuple(float(refs[z]) for z in species),
        energy_shift=float(shift),
        energy_scale=float(scale),
        avg_num_neighbors=float(stats.avg_num_neighbors),
        metadata={},
    )
    if init:
        dtype = resolve_dtype(config)
        params = cast_floats(pot.init_params(jax.random.PRNGKey(int(config.seed))), dtype)
        hook = _models.data_init(config.model)
        if hook is not None:  # data-dependent initialisation, e.g. descriptor standardisation
            params = hook(pot.replace(params=params), params, graphs)
        pot = pot.replace(params=params)
    return pot


# ------------------------------------------------------------------ final metrics
class _Moments:
    """Count, mean and sum of squared deviations of a stream of values (merged block by block)."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).ravel()
        if not x.size:
            return
        mb = float(x.mean())
        m2b = float(np.sum((x - mb) ** 2))
        total = self.n + x.size
        delta = mb - self.mean
        self.mean += delta * x.size / total
        self.m2 += m2b + delta * delta * self.n * x.size / total
        self.n = total


def metrics(potential: Potential, configs, *, batch_size: int = 16) -> dict:
    """:func:`mlpjax.validate.metrics` of ``potential`` on a packed set, streamed: the same batches and
    predictions (one budget for ``batch_size`` structures, input order), the error sums accumulated
    batch by batch against the float64 labels, so the keys and values are those of the in-memory
    function (to the order of floating-point additions)."""
    from mlpjax.validate.metrics import default_dtype, predict_fn

    graphs = graphs_of(configs, potential.species, potential.cutoff)
    budget = budget_of([graphs], batch_size)
    periodic = configs.pbc.any(axis=1).any() if is_streamed(configs) else any(c.periodic for c in configs)
    fn = predict_fn(potential.definition, bool(periodic), bool(jax.config.jax_enable_x64))
    variables = potential.variables_with(potential.params)
    dtype = default_dtype()

    def host_batches():
        for idx in groups(graphs, budget):
            gs = [graphs[int(i)] for i in idx]
            yield pack(gs, budget, dtype), [g.config for g in gs]

    e_abs = e_sq = 0.0
    f_abs = f_sq = 0.0
    s_abs = s_sq = 0.0
    n_s = n_atoms = 0
    e_ref_m, f_ref_m = _Moments(), _Moments()
    n_structures = 0
    for batch, confs in prefetch(host_batches()):
        out = fn(variables, batch)
        n_g = len(confs)
        n = np.array([c.n_atoms for c in confs], np.float64)
        de = np.asarray(out.energy[:n_g], np.float64) / n - np.array([c.energy for c in confs], np.float64) / n
        e_abs += float(np.sum(np.abs(de)))
        e_sq += float(np.sum(de ** 2))
        e_ref_m.add(np.array([c.energy for c in confs], np.float64) / n)
        forces = np.asarray(out.forces[: int(n.sum())], np.float64)
        start = 0
        for c in confs:
            if c.forces is not None:
                df = (forces[start:start + c.n_atoms] - c.forces).ravel()
                f_abs += float(np.sum(np.abs(df)))
                f_sq += float(np.sum(df ** 2))
                f_ref_m.add(c.forces)
            start += c.n_atoms
        stress = np.asarray(out.stress[:n_g], np.float64)
        for j, c in enumerate(confs):
            if c.stress is not None and c.periodic:
                ds = (stress[j] - c.stress).ravel()
                s_abs += float(np.sum(np.abs(ds)))
                s_sq += float(np.sum(ds ** 2))
                n_s += ds.size
        n_structures += n_g
        n_atoms += int(n.sum())

    def r2(ss_res: float, m: _Moments) -> float:
        return float("nan") if m.n == 0 or m.m2 == 0.0 else 1.0 - ss_res / m.m2

    out = {
        "energy_mae_meV_per_atom": 1e3 * e_abs / n_structures,
        "energy_rmse_meV_per_atom": 1e3 * math.sqrt(e_sq / n_structures),
        "energy_r2": r2(e_sq, e_ref_m),
    }
    if f_ref_m.n:
        out["force_mae_meV_per_A"] = 1e3 * f_abs / f_ref_m.n
        out["force_rmse_meV_per_A"] = 1e3 * math.sqrt(f_sq / f_ref_m.n)
        out["force_r2"] = r2(f_sq, f_ref_m)
    else:
        out["force_mae_meV_per_A"] = out["force_rmse_meV_per_A"] = out["force_r2"] = float("nan")
    if n_s:
        out["stress_mae_meV_per_A3"] = 1e3 * s_abs / n_s
        out["stress_rmse_meV_per_A3"] = 1e3 * math.sqrt(s_sq / n_s)
    out["n_structures"] = int(n_structures)
    out["n_atoms"] = int(n_atoms)
    return out
