"""Training on several hosts: ``jax.distributed``, each process's shard of the data, one writer.

mlpjax trains data parallel over a 1-D ``"data"`` mesh (:mod:`mlpjax.training.sharding`). On one
host that mesh holds ``devices`` local devices. On several hosts every process runs the same
``mlpjax train`` command; :func:`initialize` connects them (``jax.distributed.initialize``), the
mesh then spans ``devices`` local devices of *every* process, and each optimiser step reduces the
gradients of all of them (XLA's all-reduce, across hosts).

What each process does differently from a one-host run:

* it packs only its shard of the training (and validation) structures,
  :func:`process_shard` ``(graphs, index=jax.process_index(), count=jax.process_count())`` — a
  contiguous slice, sizes differing by at most one — into its devices' sub-batches; every step
  has the same number of batches on every process (a process whose shard ran out sends empty,
  fully masked sub-batches, which add nothing to the loss);
* only process 0 writes files (checkpoints, ``log.csv``/``log.json``, ``config.yaml``, the model
  and the parity plot): :func:`is_main_process`.

Every process still reads the data files and fits the normalisation (E0 least squares, energy
scale, average number of neighbours) on the *whole* training set: that is deterministic, so the
parameters every process starts from (and the architecture) are identical, and it costs one pass
over the data next to hours of training.

Checkpoints: process 0 writes mlpjax's own checksummed, atomically renamed format, and that is
enough, so orbax-checkpoint is not used. Data parallelism replicates the parameters, EMA and
optimiser state on every device, so process 0 holds the whole state; a resumed run has every
process read the same file. Orbax earns its place when the state itself is sharded over hosts,
each host writing its shards. mlpjax has no such state today: a full ensemble's members are
sharded over the devices of *one* process. Orbax would replace nothing written by hand here, and
it does not give the SHA-256 check per file that a resume relies on to fall back from a
half-written checkpoint.

A packed training file (:mod:`mlpjax.training.streaming`) is streamed the same way: each process
reads only the structures of its shard while training (``process_shard`` of the lazy graph
sequence is a lazy view), after the one statistics pass over the whole file
(``tests/test_packed_distributed.py``).

SLURM launch (one process per host; ``jax.distributed.initialize()`` reads the coordinator
address, the number of processes and this process's index from SLURM's environment —
``SLURM_JOB_NODELIST``, ``SLURM_NTASKS``, ``SLURM_PROCID`` — when it runs under ``srun``)::

    #!/bin/bash
    #SBATCH --nodes=4
    #SBATCH --ntasks-per-node=1        # one process per host; it drives all the host's GPUs
    #SBATCH --gpus-per-node=4
    export MLPJAX_DISTRIBUTED=1        # mlpjax train calls jax.distributed.initialize()
    srun mlpjax train --config train.yaml data.xyz --output-dir run/   # train.yaml: devices: 0

With ``devices: 0`` each process shards over all its GPUs, so the mesh has 16 devices and each
step sees ``batch_size`` structures spread over them. Outside SLURM set the coordinator
explicitly: ``MLPJAX_COORDINATOR=host0:1234 MLPJAX_NUM_PROCESSES=4 MLPJAX_PROCESS_ID=<i>``.

What is tested (on one machine, ``tests/test_sharding.py``): :func:`process_shard`, the
process-0-only writing guard, the data-parallel step on two devices of one process (equal to one
device), and two processes on one machine joined by ``jax.distributed`` over loopback (gloo CPU
collectives; ``MLPJAX_COORDINATOR``): each packs its shard, both end with the same parameters, only
process 0 writes. What is *not* tested: a real multi-host run (no cluster was available): SLURM's
auto-detection, GPUs, and the cross-host network.
"""

from __future__ import annotations

import os
from typing import Sequence, TypeVar

import jax

T = TypeVar("T")

_ENV_FLAG = "MLPJAX_DISTRIBUTED"


def initialize() -> bool:
    """Connect the processes of a multi-host run (``jax.distributed.initialize``), once.

    Does nothing (returns False) unless ``MLPJAX_DISTRIBUTED=1`` or ``MLPJAX_COORDINATOR`` is set,
    so one-host runs never wait for a coordinator. Under SLURM the coordinator address, the number
    of processes and the process index are auto-detected; otherwise they come from
    ``MLPJAX_COORDINATOR`` (``host:port``), ``MLPJAX_NUM_PROCESSES`` and ``MLPJAX_PROCESS_ID``.
    Must run before anything touches a JAX device. Returns True when it connected."""
    coordinator = os.environ.get("MLPJAX_COORDINATOR")
    if os.environ.get(_ENV_FLAG, "0") != "1" and not coordinator:
        return False
    if jax.distributed.is_initialized():
        return True
    if coordinator:
        jax.distributed.initialize(coordinator_address=coordinator,
                                   num_processes=int(os.environ["MLPJAX_NUM_PROCESSES"]),
                                   process_id=int(os.environ["MLPJAX_PROCESS_ID"]))
    else:
        jax.distributed.initialize()  # SLURM (or another cluster JAX detects)
    return True


def process_shard(items: Sequence[T], *, index: int | None = None, count: int | None = None) -> list[T]:
    """This process's contiguous share of ``items``: of ``n`` items process ``index`` of ``count``
    gets ``items[n·index // count : n·(index+1) // count]`` (sizes differ by at most one; every item
    belongs to exactly one process; order kept), as a list, or as the slice itself for a lazy
    sequence (``lazy = True``: the graphs of a packed file, built only when this process reads them). ``index``/``count`` default to
    ``jax.process_index()`` / ``jax.process_count()``."""
    index = jax.process_index() if index is None else int(index)
    count = jax.process_count() if count is None else int(count)
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"process index {index} of {count} processes: need 0 <= index < count")
    n = len(items)
    part = items[n * index // count: n * (index + 1) // count]
    return part if getattr(part, "lazy", False) else list(part)  # a lazy sequence (packed data) stays lazy


def is_main_process() -> bool:
    """True on the process that writes files (process 0; always True on one host)."""
    return jax.process_index() == 0
