"""Data-parallel training (mlpjax.training.sharding) equals single-device training; the
multi-host helpers (mlpjax.training.distributed) shard the data and keep writing on process 0.

The two-device check runs in a subprocess: ``XLA_FLAGS=--xla_force_host_platform_device_count=2``
must be set before JAX starts, and this test process's JAX has already started with one CPU device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mlpjax.config import ConfigError, TrainConfig, load_config
from mlpjax.graph import batches, make_budget, to_graphs
from mlpjax.training.distributed import is_main_process, process_shard
from mlpjax.training.sharding import chunk_sizes, local_budget, resolve_devices, stacked_batches

TINY = dict(features=8, interactions=1, num_rbf=8, filter_hidden=8)
_TESTS = os.path.dirname(os.path.abspath(__file__))


def _cu(n, seed=0):
    sys.path.insert(0, _TESTS)
    from test_train import _cu_configs  # 8/16/32-atom rattled EMT Cu cells with stress

    return _cu_configs(n, seed)


# ------------------------------------------------------------------ host-side pieces
def test_process_shard_partitions_the_structures():
    items = list(range(11))
    shards = [process_shard(items, index=i, count=3) for i in range(3)]
    assert sum(shards, []) == items  # every structure on exactly one process, order kept
    assert sorted(len(s) for s in shards) == [3, 4, 4]
    assert process_shard(items, index=0, count=1) == items
    assert process_shard([], index=1, count=2) == []
    with pytest.raises(ValueError, match="need 0 <= index < count"):
        process_shard(items, index=3, count=3)
    assert process_shard(items) == items and is_main_process()  # one process here


def test_chunks_and_stacked_batches_keep_the_single_device_groups():
    assert chunk_sizes(5, 2) == [3, 2] and chunk_sizes(1, 2) == [1, 0] and chunk_sizes(4, 4) == [1, 1, 1, 1]
    cu = _cu(11)
    graphs = to_graphs(cu, [29], 4.0)
    budget = make_budget(graphs, 5)
    single = list(batches(graphs, budget, shuffle=True, seed=7))
    sub = local_budget(graphs, 5, 2)
    stacked = list(stacked_batches(graphs, sub, batch_size=5, n_devices=2, n_steps=len(single), shuffle=True, seed=7))
    assert len(stacked) == len(single) == 3  # 5 + 5 + 1 structures
    for s, b in zip(single, stacked):
        assert b.graph_mask.shape == (2, sub.n_graphs) and b.positions.shape == (2, sub.n_nodes, 3)
        real = b.graph_mask.reshape(-1)
        assert np.array_equal(b.energy.reshape(-1)[real], s.energy[s.graph_mask])  # same structures, same order
        assert np.array_equal(b.positions[b.node_mask], s.positions[s.node_mask])
    assert not stacked[-1].graph_mask[1].any()  # the last step's second device: an empty, fully masked sub-batch


# ------------------------------------------------------------------ the config field
def test_devices_field_and_its_errors(tmp_path):
    assert TrainConfig().devices == 1
    path = tmp_path / "train.yaml"
    path.write_text("model_config: {features: 8}\nbatch_size: 4\ndevices: 2\n")
    assert load_config(path).devices == 2  # the YAML key maps 1:1 onto the field
    path.write_text("batch_size: 4\ndevices: -1\n")
    with pytest.raises(ConfigError, match=r"train.yaml line 2: devices must be >= 0"):
        load_config(path)
    path.write_text("devices: all\n")
    with pytest.raises(ConfigError, match=r"line 1: devices must be an integer, got 'all'"):
        load_config(path)
    with pytest.raises(ConfigError, match="shallow ensemble .* trains on one device: set devices: 1"):
        TrainConfig(devices=2, ensemble_size=2, ensemble_kind="shallow")  # (full ensembles: tests/test_ensemble_devices.py)
    import jax

    n = jax.local_device_count()
    with pytest.raises(ConfigError, match=f"devices {n + 1} but this process has {n} cpu device.*xla_force_host"):
        resolve_devices(TrainConfig(devices=n + 1))
    assert resolve_devices(TrainConfig(devices=0)) == n  # 0: all local devices


def test_only_the_main_process_writes(tmp_path, monkeypatch):
    """Another process (index > 0) of a multi-host run trains but writes no file."""
    from mlpjax.training import loop, train

    monkeypatch.setattr(loop, "is_main_process", lambda: False)
    cfg = TrainConfig(model_config=TINY, cutoff=4.0, batch_size=4, epochs=1, schedule="constant", patience=None,
                      valid_fraction=0.25)
    result = train(cfg, _cu(8), output_dir=tmp_path / "rank1", progress=False)
    assert result.epochs_completed == 1 and np.isfinite(result.history[0]["train_loss"])
    assert os.listdir(tmp_path / "rank1") == []


# ------------------------------------------------------------------ 1 vs 2 devices
_TWO_DEVICES = r"""
import json, re, sys
import jax
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_debug_nans", True)  # the empty sub-batch must not make a NaN anywhere
import numpy as np
sys.path.insert(0, TESTS)
from test_train import _cu_configs
from mlpjax.config import TrainConfig
from mlpjax.graph import to_graphs
from mlpjax.training import init_state, make_plateau, prepare_potential, train
from mlpjax.training.sharding import make_data_parallel

assert jax.device_count() == 2, jax.devices()
cu = _cu_configs(21)
train_set, valid_set = cu[:16], cu[16:]  # batch_size 5: steps of 5, 5, 5, 1 (one device gets no structure)
base = dict(model_config=TINY, cutoff=4.0, batch_size=5, epochs=3, learning_rate=5e-3, schedule="warmup_cosine",
            warmup_epochs=1.0, ema_decay=0.9, patience=None, test_fraction=0.0, dtype="float64")
runs = {d: train(TrainConfig(**base, devices=d), train_set, valid_set, output_dir=f"{OUT}/dev{d}", progress=False)
        for d in (1, 2)}
one, two = runs[1], runs[2]

def leaves(tree):
    return [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(tree)]

def max_rel(a, b):  # max |difference| over all parameters / the largest |parameter|
    # (not per leaf: the last readout bias cancels in E - E_isolated, so its gradient is rounding noise
    # (1e-17) that Adam turns into ~1e-11 steps, different noise on 1 and 2 devices, irrelevant to the loss)
    diff = max(float(np.max(np.abs(x - y))) for x, y in zip(leaves(a), leaves(b)))
    return diff / max(float(np.max(np.abs(x))) for x in leaves(a))

out = {
    "steps": [one.steps, two.steps],
    "train_loss": [[r["train_loss"] for r in x.history] for x in (one, two)],
    "valid_loss": [[r["valid_loss"] for r in x.history] for x in (one, two)],
    "params_rel": max_rel(one.state.params, two.state.params),
    "ema_rel": max_rel(one.state.ema_params, two.state.ema_params),
    "model_rel": max_rel(one.potential.params, two.potential.params),
    "state_devices": len(jax.tree_util.tree_leaves(two.state.params)[0].sharding.device_set),
    "files": sorted(__import__("os").listdir(f"{OUT}/dev2")),
}
# what the loop sends to the devices: a [2, ...] batch, one sub-batch on each device
pot = prepare_potential(TrainConfig(**base, devices=2), train_set)
graphs = to_graphs(train_set, pot.species, 4.0)
cfg = TrainConfig(**base, devices=2)
dp = make_data_parallel(pot, cfg, n_devices=2, train_graphs=graphs, compute_stress=True)
batch = next(dp.batches(graphs, shuffle=True, seed=1))
out["batch_devices"] = len(batch.positions.sharding.device_set)
out["shard_shapes"] = sorted({tuple(s.data.shape) for s in batch.positions.addressable_shards})
out["batch_shape"] = list(batch.positions.shape)
state = dp.replicate(init_state(pot, dp.fns.optimizer, make_plateau(cfg), 1e-3))
from mlpjax.training.sharding import compiled_sharded_steps
from mlpjax.training.steps import StepSettings
import dataclasses
settings = dataclasses.replace(StepSettings.from_config(cfg, dp.steps_per_epoch), loss_sigma=pot.energy_scale_mean)
fns = compiled_sharded_steps(pot.definition, settings, True, True, dp.mesh)
hlo = fns.train_step.lower(state, batch, jax.device_put(pot.variables_with(None), dp.replicated)).compile().as_text()
out["all_reduce"] = len(re.findall(r" all-reduce(?:-start)?\(", hlo))
out["all_gather"] = len(re.findall(r" all-gather(?:-start)?\(", hlo))
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharding")
    script = out / "two_devices.py"
    script.write_text(f"TESTS = {_TESTS!r}\nOUT = {str(out)!r}\nTINY = {TINY!r}\n" + textwrap.dedent(_TWO_DEVICES))
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=2",
                                 "--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true"]).strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_two_devices_train_as_one(two_devices):
    r = two_devices
    print(f"1 vs 2 devices: max |loss difference| train {np.max(np.abs(np.diff(r['train_loss'], axis=0))):.2e} "
          f"valid {np.max(np.abs(np.diff(r['valid_loss'], axis=0))):.2e}; parameters {r['params_rel']:.2e} relative")
    assert r["steps"] == [12, 12]  # 3 epochs × (5 + 5 + 5 + 1 structures)
    for key in ("train_loss", "valid_loss"):
        one, two = np.array(r[key][0]), np.array(r[key][1])
        assert np.all(np.isfinite(one)) and one.shape == two.shape == (3,)
        np.testing.assert_allclose(two, one, rtol=1e-10, atol=0)
    assert r["params_rel"] < 1e-10 and r["ema_rel"] < 1e-10 and r["model_rel"] < 1e-10
    assert r["state_devices"] == 2  # parameters replicated over the mesh
    assert {"model.mlpjax", "checkpoint.ckpt", "log.csv", "config.yaml"} <= set(r["files"])


def test_two_devices_shard_the_batch(two_devices):
    r = two_devices
    assert r["batch_devices"] == 2 and r["batch_shape"][0] == 2
    assert r["shard_shapes"] == [[1] + r["batch_shape"][1:]]  # each device holds one sub-batch
    # data parallel, not a partitioned graph: the step only all-reduces (error sums, gradients), never gathers
    assert r["all_reduce"] > 0 and r["all_gather"] == 0


# ------------------------------------------------------------------ two processes (jax.distributed on one machine)
_TWO_PROCESSES = r"""
import json, os, sys
sys.path.insert(0, TESTS)
from mlpjax.training import train  # noqa: E402  (train() calls jax.distributed.initialize from MLPJAX_* env)
from mlpjax.config import TrainConfig
import jax
import numpy as np
from test_train import _cu_configs

cu = _cu_configs(14)
cfg = TrainConfig(model_config=TINY, cutoff=4.0, batch_size=4, epochs=2, learning_rate=5e-3, schedule="constant",
                  patience=None, valid_fraction=0.0, test_fraction=0.0)
rank = int(os.environ["MLPJAX_PROCESS_ID"])
out_dir = f"{OUT}/rank{rank}"
result = train(cfg, cu[:10], cu[10:], output_dir=out_dir, progress=False)
leaves = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(jax.device_get(result.potential.params))]
print("RESULT " + json.dumps({
    "rank": jax.process_index(), "processes": jax.process_count(), "devices": jax.device_count(),
    "steps": result.steps, "train_loss": [r["train_loss"] for r in result.history],
    "params": [float(np.sum(x)) for x in leaves], "files": sorted(os.listdir(out_dir)),
}))
"""


def test_two_processes_train_one_model(tmp_path):
    """Two processes on this machine joined by jax.distributed (gloo CPU collectives): each packs its
    shard of the data, the step reduces over both, both end with the same parameters, and only
    process 0 writes. (Not a multi-host test: one machine, loopback network.)"""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = tmp_path / "two_processes.py"
    script.write_text(f"TESTS = {_TESTS!r}\nOUT = {str(tmp_path)!r}\nTINY = {TINY!r}\n" + textwrap.dedent(_TWO_PROCESSES))
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
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-4000:]
        results.append(json.loads(next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))[7:]))
    r0, r1 = sorted(results, key=lambda r: r["rank"])
    assert (r0["rank"], r1["rank"], r0["processes"], r0["devices"]) == (0, 1, 2, 2)
    assert r0["steps"] == r1["steps"] == 2 * 3  # per process: 5 of the 10 structures, 2 per step → 3 steps
    assert np.all(np.isfinite(r0["train_loss"])) and r0["train_loss"] == r1["train_loss"]
    assert r0["params"] == r1["params"]  # one model, replicated on both processes
    assert {"model.mlpjax", "checkpoint.ckpt", "log.csv", "config.yaml"} <= set(r0["files"])
    assert r1["files"] == []  # process 1 writes nothing
