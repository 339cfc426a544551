"""The compiled training steps depend on static settings only: a potential with the same
architecture but other fitted E0/shift reuses them without compiling again (the loss's energy
unit σ is a static loss setting, like the loss weights)."""

import jax
import numpy as np
import pytest

from mlpjax import cache
from mlpjax.config import TrainConfig
from mlpjax.graph import batches, make_budget, to_graphs
from mlpjax.training import StepSettings, compiled_steps, init_state, make_plateau, make_step_fns, prepare_potential

from conftest import emt_cu_frames

TINY = {"features": 8, "interactions": 1, "num_rbf": 8, "filter_hidden": 8}


@pytest.fixture(scope="module")
def cu(tmp_path_factory):
    from ase.io import write

    from mlpjax import data

    path = tmp_path_factory.mktemp("cu") / "cu.xyz"
    write(path, emt_cu_frames(6, 0))
    return data.read(path)


def test_other_normalisation_reuses_the_compiled_steps(cu):
    cache.clear()
    cfg = TrainConfig(model="schnet", model_config=TINY, cutoff=4.0, batch_size=2, epochs=2, seed=1)
    pot = prepare_potential(cfg, cu)
    other = pot.replace(reference_energies=tuple(e + 0.3 for e in pot.reference_energies), energy_shift=pot.energy_shift - 0.1)
    assert other.definition == pot.definition
    graphs = to_graphs(cu, pot.species, cfg.cutoff)
    batch = next(batches(graphs, make_budget(graphs, cfg.batch_size)))
    results = []
    for p in (pot, other):
        fns = make_step_fns(p, cfg, 3, True)
        state = init_state(p, fns.optimizer, make_plateau(cfg), cfg.learning_rate)
        _, aux = fns.train_step(state, batch)
        results.append(float(aux["loss"]))
    info = compiled_steps.cache_info()
    assert info.misses == 1 and info.hits == 1
    settings = StepSettings.from_config(cfg, 3)
    raw = compiled_steps(pot.definition, settings.__class__(**{**settings.__dict__, "loss_sigma": pot.energy_scale}),
                         True, bool(jax.config.jax_enable_x64))
    assert raw.train_step._cache_size() == 1  # one trace for both normalisations
    assert np.isfinite(results).all() and results[0] != results[1]  # the normalisation is used, not frozen in
    make_step_fns(pot.replace(energy_scale=2.0 * pot.energy_scale), cfg, 3, True)
    assert compiled_steps.cache_info().misses == 2  # another loss unit: its own steps
