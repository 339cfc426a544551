"""experiments/fit_rdf_mlp.py: a trained SchNet fine-tuned on an RDF plus its own force data.

The bottom-up term of the combined fit must be the training loss itself (same predictions,
same error sums, same normalisation), and the reported errors the validation metrics; the
end-to-end smoke run (``--quick``, ~2 min) is marked slow.
"""

import importlib
import json
import math
import os
import sys

import numpy as np
import pytest

from conftest import emt_cu_frames

HERE = os.path.dirname(os.path.abspath(__file__))
EXPERIMENTS = os.path.join(HERE, "..", "experiments")
TINY = {"features": 8, "interactions": 1, "num_rbf": 8, "filter_hidden": 8}


def _script():
    if EXPERIMENTS not in sys.path:
        sys.path.insert(0, EXPERIMENTS)
    return importlib.import_module("fit_rdf_mlp")


@pytest.fixture(scope="module")
def cu(tmp_path_factory):
    from ase.io import write

    from mlpjax import data

    path = tmp_path_factory.mktemp("cu") / "cu.xyz"
    write(path, emt_cu_frames(6, 0))
    return data.read(path)


@pytest.fixture(scope="module")
def tiny(cu):
    from mlpjax.config import TrainConfig
    from mlpjax.training import prepare_potential

    cfg = TrainConfig(model="schnet", model_config=TINY, cutoff=4.0, batch_size=len(cu), epochs=1, seed=3, ema_decay=0.0)
    return cfg, prepare_potential(cfg, cu)


def test_data_loss_is_the_training_loss(cu, tiny):
    import jax

    from mlpjax.graph import batches, make_budget, to_graphs
    from mlpjax.training import init_state, make_plateau, make_step_fns

    cfg, pot = tiny
    weights = (float(cfg.energy_weight), float(cfg.forces_weight), float(cfg.stress_weight))
    loss = _script().data_loss_fn(pot, cu, weights, np.float64)
    graphs = to_graphs(cu, pot.species, cfg.cutoff)
    fns = make_step_fns(pot, cfg, 1, True)
    state = init_state(pot, fns.optimizer, make_plateau(cfg), cfg.learning_rate)
    _, aux = fns.train_step(state, next(batches(graphs, make_budget(graphs, len(cu)))))
    # jitted, as the script uses it (run op by op with NaN checking, the loss and its gradient took ~30 s)
    assert float(jax.jit(loss)(pot.variables)) == pytest.approx(float(aux["loss"]), rel=1e-10)
    grads = jax.jit(jax.grad(loss))(pot.variables)  # what the combined fit differentiates: finite, not zero
    norms = [float(np.linalg.norm(g)) for g in jax.tree_util.tree_leaves(grads.params)]
    assert all(map(math.isfinite, norms)) and max(norms) > 0


def test_errors_are_the_validation_metrics(cu, tiny):
    from mlpjax.validate.metrics import metrics

    _, pot = tiny
    got = _script().errors_fn(pot, cu, np.float64, batch_size=4)(pot.variables)
    want = metrics(pot, cu)
    assert got["force_mae_meV_per_A"] == pytest.approx(want["force_mae_meV_per_A"], rel=1e-8)
    assert got["energy_mae_meV_per_atom"] == pytest.approx(want["energy_mae_meV_per_atom"], rel=1e-8)


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path):
    out = tmp_path / "out"
    assert _script().main(["--mlp", "--quick", "--output", str(out)]) == 0  # --mlp: fit_rdf.py passes its argv on
    result = json.loads((out / "result.json").read_text())
    assert [f["weight"] for f in result["fits"]] == [0.0, 0.01]  # --quick: the first two weights
    for fit in result["fits"]:
        assert math.isfinite(fit["rdf_l2"]) and math.isfinite(fit["test"]["force_mae_meV_per_A"])
        assert len(fit["history"]) == 2 and fit["n_references"] >= 1
    assert math.isfinite(result["before"]["rdf_l2"]) and result["target"]["n_atoms"] == 108
