"""Data-parallel training with ``jax.sharding``: one batch split over the devices of a 1-D mesh.

Chosen by ``TrainConfig.devices`` (YAML ``devices: 2``; ``0`` = all local devices; the default
``1`` leaves training exactly as it was: :func:`mlpjax.training.steps.compiled_steps`, unchanged).

Layout. A training step takes the same ``batch_size`` structures as on one device (the same
shuffled order, the same groups: :func:`mlpjax.graph.batches` fills each batch with the next
``batch_size`` structures, since the budget fits any ``batch_size`` of them). The group is split
into D contiguous chunks of at most ``ceil(batch_size / D)`` structures (``np.array_split``), each
chunk packed into its own padded :class:`~mlpjax.graph.GraphBatch` with one *local* budget
(:func:`mlpjax.graph.make_budget` for ``ceil(batch_size / D)`` structures over train + valid, so
one compile), and the D sub-batches are stacked on a new leading axis: every leaf is ``[D, ...]``.
A chunk with fewer structures — the last batch of an epoch, or ``batch_size`` not a multiple of
D — is padded with empty, fully masked structures like any padding; a chunk can be entirely
empty. Each sub-batch is self-contained (its own node/edge/graph indices), so the leading axis
is sharded over the mesh axis ``"data"`` (``NamedSharding(mesh, P("data"))``) and every device
holds exactly its own structures.

Step. ``jax.jit`` (SPMD, GSPMD/Shardy partitions it): the model and :func:`error_sums` are
``jax.vmap``-ed over the leading axis, the error sums and counts are *added* over it and the loss is
built from the totals (:func:`loss_from_sums`): masked means over all real structures and atoms of
the batch, the same formula as on one device (not a mean of per-device means). Parameters,
optimiser state and EMA are replicated (``NamedSharding(mesh, P())``); XLA reduces the gradient
(an all-reduce of the summed-over-devices gradient), and the optimiser update runs replicated.
Results equal single-device training up to the order of floating-point additions
(``tests/test_sharding.py``: loss histories and parameters of 1 vs 2 CPU devices).

Several hosts: see :mod:`mlpjax.training.distributed` (each process packs its shard of the data
into its devices' sub-batches; the mesh spans every process's devices).

Ensembles: a full ensemble (``ensemble_size > 1``, ``ensemble_kind: full``) shards its *members*
over the devices instead (``devices`` must divide ``ensemble_size``; each device trains its members
on their own batches; ``mlpjax.training.loop._member_sharding``, ``tests/test_ensemble_devices.py``).
Not supported (a one-line ConfigError): a shallow ensemble on several devices, an ensemble over
several processes.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from mlpjax.cache import compiled
from mlpjax.config import ConfigError, TrainConfig
from mlpjax.graph import AtomGraph, Budget, GraphBatch, make_budget, pack
from mlpjax.potential import Potential, PotentialDef, PotentialParams
from mlpjax.training.distributed import process_shard
from mlpjax.training.loss import error_sums, loss_from_sums
from mlpjax.training.steps import StepFns, StepSettings, TrainState, apply_gradients

AXIS = "data"  # the mesh axis the batch is sharded over


def resolve_devices(config: TrainConfig) -> int:
    """Local devices to shard each batch over: ``config.devices``, or all local devices for 0.

    ConfigError when more are asked for than this process has (with what to do on CPU), or when
    ``batch_size`` is smaller than the devices of the mesh (some would never get a structure)."""
    local = jax.local_device_count()
    n = local if int(config.devices) == 0 else int(config.devices)
    if n > local:
        kind = jax.local_devices()[0].platform
        hint = (" (on CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N before jax starts)"
                if kind == "cpu" else "")
        raise ConfigError(f"devices {n} but this process has {local} {kind} device(s): set devices <= {local} "
                          f"or 0 for all{hint}", option="devices")
    total = n * jax.process_count()
    if int(config.batch_size) < total:
        raise ConfigError(f"batch_size {config.batch_size} is smaller than the {total} devices it is sharded over: "
                          f"raise batch_size to >= {total} (a multiple keeps every device busy) or lower devices",
                          option="batch_size")
    return n


def data_mesh(n_devices: int) -> jax.sharding.Mesh:
    """A 1-D mesh ``("data",)`` over ``n_devices`` local devices of every process (process-major,
    so process p's sub-batches sit at mesh positions ``p·n … (p+1)·n − 1``). Auto axis: XLA
    propagates the shardings (JAX 0.10's ``make_mesh`` default is Explicit)."""
    devices = [d for p in range(jax.process_count())
               for d in sorted((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id)[:n_devices]]
    return jax.make_mesh((len(devices),), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def chunk_sizes(n_structures: int, n_devices: int) -> list[int]:
    """How many of a group's ``n_structures`` each of ``n_devices`` sub-batches takes (contiguous,
    ``np.array_split``: the first ``n mod D`` take one more; some may be 0)."""
    return [len(c) for c in np.array_split(np.arange(n_structures), n_devices)]


def local_budget(graphs: Sequence[AtomGraph], batch_size: int, n_devices: int) -> Budget:
    """The budget of one device's sub-batch: any ``ceil(batch_size / n_devices)`` of ``graphs`` fit."""
    return make_budget(graphs, _ceil_div(batch_size, n_devices))


def stacked_batches(graphs: Sequence[AtomGraph], budget: Budget, *, batch_size: int, n_devices: int, n_steps: int,
                    shuffle: bool = False, seed: int = 0, dtype=np.float64, rng_key=None) -> Iterator[GraphBatch]:
    """Host batches with leaves ``[n_devices, ...]``: ``n_steps`` groups of ``batch_size`` consecutive
    structures of ``graphs`` (shuffled with ``default_rng(seed)``, as :func:`mlpjax.graph.batches`),
    each split into ``n_devices`` sub-batches of ``budget``; steps past the end of ``graphs`` are
    all padding. ``rng_key`` replaces ``seed`` as the generator's seed (the per-process shards)."""
    order = np.arange(len(graphs))
    if shuffle:
        order = np.random.default_rng(seed if rng_key is None else rng_key).permutation(len(graphs))
    for k in range(n_steps):
        group = [graphs[i] for i in order[k * batch_size:(k + 1) * batch_size]]
        subs, start = [], 0
        for size in chunk_sizes(len(group), n_devices):
            subs.append(pack(group[start:start + size], budget, dtype))
            start += size
        yield jax.tree_util.tree_map(lambda *xs: np.stack(xs), *subs)


class DataParallel(NamedTuple):
    """Everything :func:`mlpjax.training.train` needs to run its steps over a mesh.

    ``fns``: :class:`StepFns` with the normalisation bound (``train_step(state, batch)``,
    ``eval_step(params, batch)``; state/params replicated, batch from :meth:`batches`);
    ``batches(graphs, *, shuffle, seed, dtype)``: device batches ``[D, ...]`` sharded over
    ``"data"`` (this process's shard of ``graphs``); ``steps(n)``: steps per epoch over ``n``
    structures (the same on every process); ``replicate(tree)``: put a pytree on every device."""

    fns: StepFns
    mesh: jax.sharding.Mesh
    n_devices: int  # devices in the mesh (all processes)
    local_devices: int  # of them on this process
    budget: Budget  # one sub-batch's budget
    batch_size: int  # structures per step on this process
    steps_per_epoch: int  # optimiser steps per epoch (every process)
    batches: Callable[..., Iterator[GraphBatch]]
    steps: Callable[[int], int]
    replicate: Callable

    def describe(self) -> str:
        """One line for the log: the mesh and how a step's structures are split."""
        platform = self.mesh.devices.flat[0].platform
        per_device = _ceil_div(self.batch_size, self.local_devices)
        where = "" if jax.process_count() == 1 else f" ({self.local_devices} on each of {jax.process_count()} processes)"
        return (f"data parallel over {self.n_devices} {platform} devices{where}: each step's {self.batch_size} "
                f"structures{' per process' if where else ''} split into {self.local_devices} sub-batches of "
                f"<= {per_device}")

    @property
    def batch_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec(AXIS))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())


def make_data_parallel(potential: Potential, config: TrainConfig, *, n_devices: int,
                       train_graphs: Sequence[AtomGraph], valid_graphs: Sequence[AtomGraph] = (),
                       compute_stress: bool) -> DataParallel:
    """The sharded steps and batching for ``n_devices`` local devices per process.

    ``train_graphs`` / ``valid_graphs``: all of them (every process: the sub-batch budget is fitted
    over train + valid and must be the same everywhere). ``steps_per_epoch`` of the result is
    ``ceil(len(train_graphs) / batch_size)`` on one process, as on one device (the learning-rate
    schedule's length)."""
    if getattr(potential.definition, "kind", None) is not None or int(config.ensemble_size) > 1:
        raise ConfigError("devices > 1 shards one model's batch; ensembles train on one device: set devices: 1",
                          option="devices")
    processes, rank = jax.process_count(), jax.process_index()
    if int(config.batch_size) < n_devices * processes:
        resolve_devices(config.replace(devices=n_devices))  # the one-line ConfigError
    mesh = data_mesh(n_devices)
    per_process = _ceil_div(config.batch_size, processes)  # structures per step on each process
    budget = local_budget(list(train_graphs) + list(valid_graphs), per_process, n_devices)

    def steps(n: int) -> int:
        return _ceil_div(_ceil_div(n, processes), per_process)  # the largest shard's batches

    steps_per_epoch = steps(len(train_graphs))
    settings = dataclasses.replace(StepSettings.from_config(config, steps_per_epoch),
                                   loss_sigma=potential.energy_scale_mean)
    fns = compiled_sharded_steps(potential.definition, settings, bool(compute_stress),
                                 bool(jax.config.jax_enable_x64), mesh)
    replicated = NamedSharding(mesh, PartitionSpec())
    sharded = NamedSharding(mesh, PartitionSpec(AXIS))
    norm = jax.device_put(potential.variables_with(None), replicated)

    def put(batch: GraphBatch) -> GraphBatch:
        if processes == 1:
            return jax.device_put(batch, sharded)
        return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharded, x), batch)

    def batches(graphs_: Sequence[AtomGraph], *, shuffle: bool = False, seed: int = 0, dtype=np.float64):
        mine = process_shard(graphs_, index=rank, count=processes) if processes > 1 else graphs_
        key = None if processes == 1 else [int(seed), rank]
        host = stacked_batches(mine, budget, batch_size=per_process, n_devices=n_devices, n_steps=steps(len(graphs_)),
                               shuffle=shuffle, seed=seed, dtype=dtype, rng_key=key)
        for b in host:
            yield put(b)

    train_step, eval_step = fns.train_step, fns.eval_step
    bound = fns._replace(train_step=lambda state, batch: train_step(state, batch, norm),
                         eval_step=lambda params, batch: eval_step(params, batch, norm))
    return DataParallel(fns=bound, mesh=mesh, n_devices=n_devices * processes, local_devices=n_devices, budget=budget,
                        batch_size=per_process, steps_per_epoch=steps_per_epoch, batches=batches, steps=steps,
                        replicate=lambda tree: jax.device_put(tree, replicated))


@compiled(maxsize=8)
def compiled_sharded_steps(definition: PotentialDef, settings: StepSettings, compute_stress: bool, x64: bool,
                           mesh: jax.sharding.Mesh) -> StepFns:
    """:func:`mlpjax.training.steps.compiled_steps` over a mesh: ``train_step(state, batch, norm)``
    and ``eval_step(params, batch, norm)`` with ``batch`` leaves ``[D, ...]`` sharded over
    ``"data"``, everything else replicated; the error sums are added over the D sub-batches before
    the loss is formed, so the loss is the single-device loss of the whole batch."""
    del x64  # a key only
    weights = settings.weights
    sigma = float(settings.loss_sigma)
    optimizer = settings.make_optimizer()
    schedule = settings.lr_shape()
    ema_decay = float(settings.ema_decay)
    replicated = NamedSharding(mesh, PartitionSpec())
    sharded = NamedSharding(mesh, PartitionSpec(AXIS))

    def batch_sums(params, batch: GraphBatch, norm: PotentialParams) -> dict:
        variables = norm._replace(params=params)

        def one(b):  # one device's sub-batch
            return error_sums(definition.predict(variables, b, compute_stress=compute_stress), b, compute_stress)

        return {k: jnp.sum(v, axis=0) for k, v in jax.vmap(one)(batch).items()}  # totals over the whole batch

    def loss_fn(params, batch: GraphBatch, norm: PotentialParams):
        sums = batch_sums(params, batch, norm)
        return loss_from_sums(sums, sigma, weights), sums

    def train_step(state: TrainState, batch: GraphBatch, norm: PotentialParams):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, norm)
        new_state = apply_gradients(state, grads, optimizer, ema_decay)
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    return StepFns(
        jax.jit(train_step, in_shardings=(replicated, sharded, replicated), out_shardings=(replicated, replicated)),
        jax.jit(batch_sums, in_shardings=(replicated, sharded, replicated), out_shardings=replicated),
        optimizer, schedule)


def _ceil_div(a: int, b: int) -> int:
    return -(-int(a) // int(b))
