"""A full ensemble on two devices: its members sharded over them (``devices: 2``) train exactly as
on one device. Runs in a subprocess (``--xla_force_host_platform_device_count=2`` must be set before
JAX starts), like tests/test_sharding.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mlpjax.config import ConfigError, TrainConfig

_TESTS = os.path.dirname(os.path.abspath(__file__))
TINY = dict(features=8, interactions=1, num_rbf=8, filter_hidden=8)

_SCRIPT = r"""
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
sys.path.insert(0, TESTS)
from test_train import _cu_configs
from mlpjax.config import TrainConfig
from mlpjax.training import train

assert jax.device_count() == 2, jax.devices()
cu = _cu_configs(14)
base = dict(model_config=TINY, cutoff=4.0, batch_size=4, epochs=2, learning_rate=5e-3, ensemble_size=2,
            bootstrap=True, patience=None, test_fraction=0.0, dtype="float64")
runs = {d: train(TrainConfig(**base, devices=d), cu[:10], cu[10:], output_dir=f"{OUT}/dev{d}", progress=False)
        for d in (1, 2)}
leaves = lambda t: [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(t)]
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(leaves(runs[1].state.params), leaves(runs[2].state.params)))
scale = max(float(np.max(np.abs(a))) for a in leaves(runs[1].state.params))
p2 = jax.tree_util.tree_leaves(runs[2].state.params)[0]
print("RESULT " + json.dumps({
    "train_loss": [[r["train_loss"] for r in runs[d].history] for d in (1, 2)],
    "valid_loss": [[r["valid_loss"] for r in runs[d].history] for d in (1, 2)],
    "params_rel": diff / scale,
    "devices": len(p2.sharding.device_set),
    "shard_lead": sorted({int(s.data.shape[0]) for s in p2.addressable_shards}),
    "members": int(p2.shape[0]),
    "files": sorted(__import__("os").listdir(f"{OUT}/dev2")),
}))
"""


def test_full_ensemble_members_over_two_devices_train_as_on_one(tmp_path):
    script = tmp_path / "members.py"
    script.write_text(f"TESTS = {_TESTS!r}\nOUT = {str(tmp_path)!r}\nTINY = {TINY!r}\n" + textwrap.dedent(_SCRIPT))
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=2",
                                 "--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true"]).strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])
    for key in ("train_loss", "valid_loss"):
        one, two = np.array(r[key][0]), np.array(r[key][1])
        assert one.shape == two.shape == (2,) and np.all(np.isfinite(one))
        np.testing.assert_allclose(two, one, rtol=1e-10, atol=0)
    assert r["params_rel"] < 1e-10
    assert r["members"] == 2 and r["devices"] == 2 and r["shard_lead"] == [1]  # one member per device
    assert {"model.mlpjax", "checkpoint.ckpt"} <= set(r["files"])


def test_ensemble_devices_errors():
    with pytest.raises(ConfigError, match="must divide ensemble_size 3"):
        TrainConfig(devices=2, ensemble_size=3)
    with pytest.raises(ConfigError, match="shallow ensemble .* trains on one device"):
        TrainConfig(devices=2, ensemble_size=2, ensemble_kind="shallow")
    assert TrainConfig(devices=2, ensemble_size=4).devices == 2
