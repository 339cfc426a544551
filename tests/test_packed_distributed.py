"""Several processes (jax.distributed) on a packed training file: each streams only its shard, and
the run equals the same two-process run with the data in memory. Two processes on this machine
(loopback, gloo CPU collectives), as tests/test_sharding.py::test_two_processes_train_one_model."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

_TESTS = os.path.dirname(os.path.abspath(__file__))
TINY = dict(features=8, interactions=1, num_rbf=8, filter_hidden=8)

_SCRIPT = r"""
import json, os, sys
sys.path.insert(0, TESTS)
from mlpjax.training import train  # train() calls jax.distributed.initialize from the MLPJAX_* environment
from mlpjax import data
from mlpjax.config import TrainConfig
import mlpjax.training.streaming as streaming
import jax
import numpy as np
from test_train import _cu_configs

rank = int(os.environ["MLPJAX_PROCESS_ID"])
cu = _cu_configs(14)
if rank == 0:
    data.write_extxyz(f"{OUT}/train.xyz", cu[:10])
    data.write_extxyz(f"{OUT}/valid.xyz", cu[10:])
    data.pack_dataset(f"{OUT}/train.xyz", f"{OUT}/train.h5")
    data.pack_dataset(f"{OUT}/valid.xyz", f"{OUT}/valid.h5")
    open(f"{OUT}/packed.done", "w").close()
else:
    import time
    while not os.path.exists(f"{OUT}/packed.done"):
        time.sleep(0.1)
base = dict(model_config=TINY, cutoff=4.0, batch_size=4, epochs=2, learning_rate=5e-3, schedule="constant",
            patience=None, valid_fraction=0.0, test_fraction=0.0, dtype="float64")
mem = train(TrainConfig(**base), data.read(f"{OUT}/train.xyz"), data.read(f"{OUT}/valid.xyz"),
            output_dir=f"{OUT}/mem{rank}", progress=False)
# count the structures this process turns into graphs while training on the packed file
built = []
orig = streaming.LazyGraphs.__getitem__
def counting(self, i):
    if not isinstance(i, slice):
        built.append((len(self.configs), int(i)))
    return orig(self, i)
streaming.LazyGraphs.__getitem__ = counting
h5 = train(TrainConfig(**base, train_file=f"{OUT}/train.h5", valid_file=f"{OUT}/valid.h5"), output_dir=f"{OUT}/h5{rank}",
           progress=False)
leaves = lambda p: [float(np.sum(np.asarray(x, np.float64))) for x in jax.tree_util.tree_leaves(jax.device_get(p))]
print("RESULT " + json.dumps({
    "rank": jax.process_index(), "processes": jax.process_count(),
    "mem": [[r["train_loss"], r["valid_loss"]] for r in mem.history], "h5": [[r["train_loss"], r["valid_loss"]] for r in h5.history],
    "mem_params": leaves(mem.potential.params), "h5_params": leaves(h5.potential.params),
    "views": sorted({n for n, _ in built}), "steps": [mem.steps, h5.steps],
}))
"""


def test_two_processes_stream_their_shards_of_a_packed_file(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = tmp_path / "packed_two_processes.py"
    script.write_text(f"TESTS = {_TESTS!r}\nOUT = {str(tmp_path)!r}\nTINY = {TINY!r}\n" + textwrap.dedent(_SCRIPT))
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, JAX_PLATFORMS="cpu", MLPJAX_COORDINATOR=f"127.0.0.1:{port}", MLPJAX_NUM_PROCESSES="2",
                   MLPJAX_PROCESS_ID=str(rank))
        env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0",
                                     "--xla_llvm_disable_expensive_passes=true"]).strip()
        procs.append(subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr[-4000:]
        results.append(json.loads(next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))[7:]))
    for r in results:
        assert r["processes"] == 2
        assert r["steps"][0] == r["steps"][1] == 2 * 3  # 5 of the 10 structures per process, 2 per step: 3 per epoch
        mem, h5 = np.array(r["mem"]), np.array(r["h5"])
        assert np.all(np.isfinite(mem)) and mem.shape == h5.shape == (2, 2)
        np.testing.assert_allclose(h5, mem, rtol=1e-9)  # packed = in memory, two processes each
        np.testing.assert_allclose(r["h5_params"], r["mem_params"], rtol=1e-7, atol=1e-9)
        # the training epochs built graphs only from this process's views: its 5 training and 2 validation
        # structures; the final metrics (every process) read the whole validation file (4)
        assert r["views"] == [2, 4, 5], r["views"]
    assert results[0]["h5"] == results[1]["h5"]  # one model, the same on both processes
