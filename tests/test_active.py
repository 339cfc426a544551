"""Active learning (issue 15): selection contracts, the config's one-line errors, and the loop run
through ``mlpjax active`` as a user would — killed with SIGKILL during labelling and during
training, restarted, finished — with an oracle that raises on some structures.

The loop scenario is one module fixture (three processes of one run, a tiny SchNet ensemble, EMT
labels); the tests below read what it left. Its subprocesses share a persistent JAX compilation
cache, so a restarted process does not compile again what the killed one compiled."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from ase.build import bulk, fcc111

from mlpjax.active import labelled_ids, read_failures, structure_id
from mlpjax.active.config import config_from_dict, load_active_config
from mlpjax.active.loop import REPORT_COLUMNS, held_out_split, run_active
from mlpjax.active.selection import (classify, farthest_point_sampling, select_batch, structure_descriptors,
                                     top_k, window_counts)
from mlpjax.cli import main
from mlpjax.config import ConfigError

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
A_CU = 3.59


# ----------------------------------------------------------------------------- selection
def test_trust_window_classes_and_bounds():
    s = [0.0, 0.05, 0.0500001, 0.2, 0.5, 0.5000001, 3.0, np.nan, np.inf]
    c = classify(s, sigma_lo=0.05, sigma_hi=0.5)
    assert c.tolist() == ["accurate", "accurate", "candidate", "candidate", "candidate", "failed", "failed", "failed",
                          "failed"]
    assert window_counts(c) == {"accurate": 2, "candidate": 3, "failed": 4}
    with pytest.raises(ValueError, match="sigma_lo < sigma_hi"):
        classify(s, sigma_lo=0.5, sigma_hi=0.5)


def test_first_failed_is_where_each_replica_stopped():
    from mlpjax.active import first_failed

    classes = ["candidate", "failed", "failed", "accurate", "candidate", "candidate", "failed"]
    replicas = [0, 0, 0, 1, 1, 2, 2]  # replica 1 never left the window
    assert first_failed(classes, replicas).tolist() == [1, 6]
    assert first_failed([], []).tolist() == []
    with pytest.raises(ValueError, match="replica ids"):
        first_failed(["failed"], [0, 1])


def test_closest_pair_sees_periodic_images_and_blown_up_frames():
    from ase.build import bulk

    from mlpjax.data import Configuration, closest_pair

    a = bulk("Cu", "fcc", a=A_CU, cubic=True)
    assert closest_pair(Configuration.from_atoms(a), 2.5) is None  # nearest neighbours at a/√2 = 2.54 Å
    d, i, j, _ = closest_pair(Configuration.from_atoms(a), 2.6)
    assert d == pytest.approx(A_CU / np.sqrt(2), rel=1e-9) and i != j
    a.positions[1] = a.positions[0] + [0.3, 0.0, 0.0]  # a collapsed pair, as in a blown-up MD frame
    assert closest_pair(Configuration.from_atoms(a), 0.5)[0] == pytest.approx(0.3, rel=1e-9)


def test_top_k_largest_first_ties_by_index():
    assert top_k([0.1, 0.3, 0.2, 0.3], 3).tolist() == [1, 3, 2]
    assert top_k([0.1], 5).tolist() == [0]
    assert top_k([], 2).tolist() == []


def test_farthest_point_sampling_takes_one_of_each_cluster_before_any_repeat():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0, 0, 0], [5, 0, 0, 0], [0, 5, 5, 0]], float)
    labels = np.repeat(np.arange(3), [12, 5, 3])  # a big cluster of near-copies, two smaller ones
    x = centres[labels] + 0.01 * rng.normal(size=(len(labels), 4))
    x[1] = x[0]  # exact duplicates too
    picked = farthest_point_sampling(x, 3, first=0)
    assert sorted(labels[picked].tolist()) == [0, 1, 2]
    order = farthest_point_sampling(x, len(x), first=0)
    assert sorted(order.tolist()) == list(range(len(x)))  # a permutation
    assert order.tolist().index(1) == len(x) - 1  # the exact duplicate of the first pick comes last


def _rattled(atoms, amplitude, seed):
    a = atoms.copy()
    a.positions += np.random.default_rng(seed).normal(scale=amplitude, size=a.positions.shape)
    return a


def test_diverse_batch_covers_bulk_surface_and_vacancy_where_top_k_takes_only_bulk():
    cell = bulk("Cu", "fcc", a=A_CU, cubic=True).repeat(2)
    slab = fcc111("Cu", size=(2, 2, 4), a=A_CU, vacuum=6.0)
    slab.pbc = True
    vac = cell.copy()
    del vac[5]
    structures = [_rattled(cell, 0.02, s) for s in range(8)] + [_rattled(slab, 0.02, 8), _rattled(vac, 0.02, 9)]
    sigma = np.array([0.30, 0.31, 0.29, 0.32, 0.33, 0.28, 0.34, 0.30, 0.12, 0.10])  # the bulk near-copies score highest
    x = structure_descriptors(structures, cutoff=5.0)
    assert x.shape == (10, 2 * 1 * 12)
    assert set(select_batch(sigma, 3, method="top_k").tolist()) <= set(range(8))
    fps = select_batch(sigma, 3, features=x, method="fps")
    assert fps[0] == 6  # the largest σ first
    assert {8, 9} <= set(fps.tolist())  # then the surface and the vacancy, not more bulk copies
    rnd = select_batch(sigma, 3, method="random", seed=1)
    assert len(set(rnd.tolist())) == 3 and rnd.tolist() == select_batch(sigma, 3, method="random", seed=1).tolist()
    assert select_batch(sigma, 2, method="top_k", pool_size=1).tolist() == [6]


def test_structure_descriptor_is_invariant_and_sees_temperature():
    cell = _rattled(bulk("Cu", "fcc", a=A_CU, cubic=True).repeat(2), 0.05, 0)
    x0 = structure_descriptors([cell])[0]
    moved = cell.copy()
    moved.rotate(37, "z", rotate_cell=True)
    moved.translate([0.3, -1.1, 2.0])
    perm = moved[np.random.default_rng(1).permutation(len(moved))]
    np.testing.assert_allclose(structure_descriptors([perm])[0], x0, atol=1e-10)
    hot = _rattled(cell, 0.15, 1)
    assert np.linalg.norm(structure_descriptors([hot])[0] - x0) > 10 * np.linalg.norm(
        structure_descriptors([_rattled(cell, 0.001, 2)])[0] - x0)


# ----------------------------------------------------------------------------- the loop's held-out split
def test_held_out_parts_are_nested_as_the_training_data_grow():
    """Regression: the loop split initial + labels as one list with one seed, so every iteration re-drew
    the validation part and filled it with frames the previous (warm-start) model had trained on; its
    retraining then stopped early at epoch ~1 and kept nearly the old parameters (seen on ethanol/xTB:
    2 of 6 retrains did not learn their labels). Each block is now split on its own."""
    from mlpjax.config import TrainConfig
    from mlpjax.data import split

    tcfg = TrainConfig(valid_fraction=0.2, test_fraction=0.1)
    initial = [("initial", i) for i in range(12)]
    labels = [[(f"iter{j}", i) for i in range(5)] for j in range(4)]
    parts = [held_out_split(tcfg, [initial] + labels[:k]) for k in range(5)]
    for k, (train, valid, test) in enumerate(parts):
        everything = initial + [c for b in labels[:k] for c in b]
        assert sorted(train + valid + test) == sorted(everything)  # a partition
        assert {c[0] for c in valid} == {"initial"} | {f"iter{j}" for j in range(k)}  # every block is validated
    for (train, valid, test), (train2, valid2, test2) in zip(parts, parts[1:]):
        assert set(train) <= set(train2) and set(valid) <= set(valid2) and set(test) <= set(test2)
        assert not set(train) & set(valid2 + test2)  # never validated on what the previous model trained on
    # what the one split of the whole did: the next validation part holds frames trained on before
    a, b = (split(n, (0.7, 0.2, 0.1), seed=0) for n in (17, 22))
    assert set(a[0].tolist()) & set(b[1].tolist())
    assert held_out_split(TrainConfig(valid_fraction=0.0), [initial, labels[0]]) == (initial + labels[0], None, None)
    assert held_out_split(tcfg, [initial[:1]]) == (initial[:1], [], [])  # too few to hold out: no validation


# ----------------------------------------------------------------------------- config
TINY_TRAIN = {"model": "schnet", "model_config": {"features": 8, "interactions": 2, "num_rbf": 6, "filter_hidden": 8},
              "cutoff": 3.0, "epochs": 3, "batch_size": 4, "ensemble_size": 2, "valid_fraction": 0.2,
              "warmup_epochs": 0, "learning_rate": 0.003}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """initial.xyz (12 EMT frames of 300 K bulk, 32 atoms), valid.xyz (6 frames at 700 K), bulk.xyz."""
    import ase.io

    from mlpjax.data import emt_cu, write_extxyz

    d = tmp_path_factory.mktemp("active_inputs")
    kw = dict(repeats=(2,), n_rattled=0, n_strained=0, liquid_temperatures_K=())
    write_extxyz(d / "initial.xyz", emt_cu(temperatures_K=(300.0,), md_frames_per_run=12, **kw))
    write_extxyz(d / "valid.xyz", emt_cu(temperatures_K=(700.0,), md_frames_per_run=6, seed=5, **kw))
    ase.io.write(d / "bulk.xyz", bulk("Cu", "fcc", a=A_CU, cubic=True).repeat(2))
    return d


def _values(**changes):
    v = {"initial_data": "initial.xyz", "validation_data": "valid.xyz", "train": dict(TINY_TRAIN),
         "explore": {"structures": ["bulk.xyz"], "temperatures_K": [300, 900], "steps": 60, "sample_every": 10,
                     "chunk_steps": 30},
         "select": {"sigma_lo": 0.001, "sigma_hi": 50.0, "max_selected": 5}, "stop": {"max_iterations": 1}}
    v.update(changes)
    return v


def test_config_maps_onto_dataclasses(inputs):
    cfg = config_from_dict(_values(retrain={"epochs": 7}, seed=3), base_dir=str(inputs))
    assert cfg.explore.temperatures_K == (300.0, 900.0) and cfg.explore.structures == (str(inputs / "bulk.xyz"),)
    assert cfg.train.ensemble_size == 2 and cfg.select.sigma_hi == 50.0 and cfg.stop.max_iterations == 1
    t0, t2 = cfg.train_config(0, None), cfg.train_config(2, "prev.mlpjax")
    assert (t0.epochs, t0.seed, t0.init_from) == (3, 0, None)
    assert (t2.epochs, t2.seed, t2.init_from) == (7, 2, "prev.mlpjax")
    assert config_from_dict(cfg.to_dict(), base_dir=str(inputs)) == cfg  # to_dict round-trips


def test_exploration_md_settings(inputs):
    from mlpjax.active.loop import md_config

    cfg = config_from_dict(_values(explore={"structures": ["bulk.xyz"], "temperatures_K": [400, 800], "ensemble": "npt",
                                            "pressures_GPa": [0, 2.5], "ramp_factor": 1.5, "steps": 100,
                                            "sample_every": 5}), base_dir=str(inputs))
    md = md_config(cfg, 2.5, seed=7)
    assert (md.ensemble, md.temperature_K, md.temperature_final_K, md.pressure_GPa) == ("npt", 400.0, 600.0, 2.5)
    assert (md.steps, md.log_every, md.traj_every, md.seed) == (100, 5, 5, 7)
    assert (md.max_force_std, md.uncertainty_action) == (50.0, "stop")  # the replica stops above sigma_hi
    with pytest.raises(ConfigError, match="pressures_GPa needs explore.ensemble: npt"):
        config_from_dict(_values(explore={"structures": ["bulk.xyz"], "pressures_GPa": [1.0]}), base_dir=str(inputs))


@pytest.mark.parametrize("edit, needles", [
    (lambda t: t.replace("steps: 60", "stepz: 60"), ["line 9", "unknown explore option 'stepz'", "did you mean 'steps'"]),
    (lambda t: t.replace("steps: 60", "steps: -5"), ["line 9", "explore.steps must be an integer >= 1, got -5"]),
    (lambda t: t.replace("sigma_hi: 50.0", "sigma_hi: 0.0001"), ["line 15", "select.sigma_hi must be > select.sigma_lo"]),
    (lambda t: t.replace("bulk.xyz", "nothere.xyz"), ["line 8", "explore.structures", "nothere.xyz' does not exist"]),
    (lambda t: t.replace("ensemble_size: 2", "ensemble_size: 1"), ["line 5", "needs an ensemble", "ensemble_size >= 2"]),
    (lambda t: t.replace("cutoff: 3.0", "cutoff: -1"), ["line 5", "train: cutoff must be > 0"]),
    (lambda t: "".join(line for line in t.replace("max_iterations: 1", "max_iterations: 1, force_mae_meV_A: 20")
                       .splitlines(keepends=True) if not line.startswith("validation_data")),
     ["stop.force_mae_meV_A is measured on validation_data"]),
    (lambda t: t.replace("oracle: emt", "oracle: emtt"), ["line 3", "unknown oracle 'emtt'"]),
    (lambda t: t + "explore: {}\n", ["'explore' is given twice"]),
])
def test_bad_config_is_one_line_exit_2(inputs, tmp_path, capsys, edit, needles):
    text = _yaml(inputs, oracle="emt")
    path = tmp_path / "bad.yaml"
    path.write_text(edit(text))
    code = main(["active", str(path), "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("mlpjax active: error: "), err
    for n in needles:
        assert n in err, (n, err)
    assert not (tmp_path / "run").exists()


def _yaml(inputs, *, oracle, output="run", max_selected=5, delay=0.0, max_iterations=1, retrain_epochs=None) -> str:
    """The scenario's YAML (line numbers matter to test_bad_config_is_one_line_exit_2)."""
    t = TINY_TRAIN
    mc = ", ".join(f"{k}: {v}" for k, v in t["model_config"].items())
    return (f"initial_data: {inputs / 'initial.xyz'}\n"
            f"validation_data: {inputs / 'valid.xyz'}\n"
            f"oracle: {oracle}\n"
            f"output: {output}\n"
            f"train: {{model: schnet, model_config: {{{mc}}}, cutoff: {t['cutoff']}, epochs: {t['epochs']}, "
            f"batch_size: {t['batch_size']}, ensemble_size: {t['ensemble_size']}, valid_fraction: {t['valid_fraction']}, "
            f"warmup_epochs: 0, learning_rate: {t['learning_rate']}}}\n"
            f"retrain: {{epochs: {retrain_epochs or t['epochs']}}}\n"
            "explore:\n"
            f"  structures: [{inputs / 'bulk.xyz'}]\n"
            "  steps: 60\n"
            "  temperatures_K: [300, 900]\n"
            "  sample_every: 10\n"
            "  chunk_steps: 30\n"
            "select:\n"
            "  sigma_lo: 0.001\n"
            "  sigma_hi: 50.0\n"
            f"  max_selected: {max_selected}\n"
            f"stop: {{max_iterations: {max_iterations}}}\n")


# ----------------------------------------------------------------------------- the loop, killed twice
FLAKY = "{name: 'ase:active_oracles:FlakyEMT', delay_s: 0.6, fail_every: 2}"  # sleeps, and refuses ~half


def _state(run):
    try:
        with open(run / "state.json") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def _start(cwd, config, log):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([TESTS, REPO, env.get("PYTHONPATH", "")])
    env.update(JAX_COMPILATION_CACHE_DIR=str(cwd / "jax_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", MLPJAX_TRACEBACK="1")
    return subprocess.Popen([sys.executable, "-m", "mlpjax", "active", str(config)], cwd=cwd, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_when(proc, predicate, log_path, timeout=240.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"mlpjax active exited ({proc.returncode}) before the kill point:\n{log_path.read_text()[-3000:]}")
        snapshot = predicate()
        if snapshot is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its labelling workers (they would also exit on their own)
            except ProcessLookupError:
                pass
            return snapshot
        time.sleep(0.03)
    proc.kill()
    pytest.fail(f"the kill point was not reached in {timeout:g} s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def killed_run(inputs, tmp_path_factory):
    """``mlpjax active`` with the flaky oracle: killed (SIGKILL) once labelling of iteration 0 has
    written a frame, restarted and killed again during iteration 1's training (after a checkpoint),
    restarted and run to the end. Returns what was seen at each kill."""
    d = tmp_path_factory.mktemp("active_kill")
    config = d / "active.yaml"
    config.write_text(_yaml(inputs, oracle=FLAKY, retrain_epochs=40, max_iterations=2))
    run = d / "run"
    labels0 = run / "iter_000" / "labels.xyz"
    seen = {"t0": time.monotonic()}

    def labelling_started():
        if labels0.exists() and labelled_ids(labels0):
            return {"labelled": labelled_ids(labels0), "failed": [f.id for f in read_failures(labels0)]}
        return None

    with open(d / "log_a.txt", "w") as log:
        seen["a"] = _kill_when(_start(d, config, log), labelling_started, d / "log_a.txt")
    seen["a"]["state"] = _state(run)

    ckpt = run / "iter_001" / "train" / "checkpoint.ckpt"

    def training_checkpointed():
        st = _state(run)
        if st and st.get("current") == {"iteration": 1, "phase": "train"} and ckpt.exists():
            return {"model_written": (run / "iter_001" / "train" / "model.mlpjax").exists()}
        return None

    with open(d / "log_b.txt", "w") as log:
        seen["b"] = _kill_when(_start(d, config, log), training_checkpointed, d / "log_b.txt")
    with open(d / "log_c.txt", "w") as log:
        proc = _start(d, config, log)
        proc.wait(timeout=300)
    seen["c_returncode"] = proc.returncode
    seen["c_log"] = (d / "log_c.txt").read_text()
    seen["wall_s"] = time.monotonic() - seen["t0"]
    seen.update(run=run, config=config, dir=d)
    return seen


def test_killed_during_labelling_loses_no_label_and_relabels_none(killed_run):
    assert killed_run["c_returncode"] == 0, killed_run["c_log"][-3000:]
    run = killed_run["run"]
    a = killed_run["a"]
    assert a["state"]["current"] == {"iteration": 0, "phase": "label"}
    selected = [structure_id(x) for x in _read(run / "iter_000" / "selected.xyz")]
    assert len(a["labelled"]) + len(a["failed"]) < len(selected), "the kill came after labelling had finished"
    labels = run / "iter_000" / "labels.xyz"
    ids = labelled_ids(labels)
    failed = [f.id for f in read_failures(labels)]
    assert set(a["labelled"]) <= set(ids)  # no label lost
    assert len(ids) == len(set(ids)) and len(failed) == len(set(failed))  # none made twice
    assert sorted(ids + failed) == sorted(selected) and not set(ids) & set(failed)
    label_record = _state(run)["iterations"][0]["label"]
    assert label_record["skipped"] >= len(a["labelled"])  # the restart skipped what was there
    assert label_record["labelled_now"] == len(selected) - len(failed) - len(a["labelled"])


def test_killed_during_training_resumes_from_its_checkpoint(killed_run):
    assert killed_run["c_returncode"] == 0, killed_run["c_log"][-3000:]
    assert killed_run["b"]["model_written"] is False
    st = _state(killed_run["run"])
    train1 = st["iterations"][1]["train"]
    assert train1["resumed"] is True and train1["epochs"] == 40
    assert st["iterations"][0]["train"]["resumed"] is False
    log = json.loads((killed_run["run"] / "iter_001" / "train" / "log.json").read_text())
    epochs = [r["epoch"] for r in (log if isinstance(log, list) else log["history"])]
    assert epochs == list(range(1, 41))  # every epoch once: continued, not restarted


def test_oracle_that_raises_leaves_recorded_failures_and_a_finished_loop(killed_run):
    assert killed_run["c_returncode"] == 0, killed_run["c_log"][-3000:]
    run = killed_run["run"]
    failures = read_failures(run / "iter_000" / "labels.xyz")
    assert failures and all(f.reason == "exception" and "refuses this structure" in f.message for f in failures)
    st = _state(run)
    assert st["finished"] is True and st["stop_reason"] == "max_iterations"
    assert st["iterations"][0]["label"]["n_oracle_failures"] == len(failures)
    assert st["iterations"][1]["label"]["n_oracle_failures"] == len(read_failures(run / "iter_001" / "labels.xyz"))
    assert (run / "model.mlpjax").exists()


def test_loop_adds_labels_and_writes_the_report(killed_run):
    assert killed_run["c_returncode"] == 0, killed_run["c_log"][-3000:]
    run = killed_run["run"]
    report = json.loads((run / "report.json").read_text())
    rows = report["rows"]
    assert report["finished"] and [r["iteration"] for r in rows] == [0, 1, 2]
    assert rows[0]["n_labels"] == 12
    for r, nxt in zip(rows[:2], rows[1:]):  # each round adds its labels to the next model's training set
        assert r["n_new_labels"] >= 1 and nxt["n_labels"] == r["n_labels"] + r["n_new_labels"]
        assert r["n_new_labels"] + r["n_oracle_failures"] == r["n_selected"] == 5
        assert r["n_candidates"] == r["n_frames"] == 12  # 2 replicas x 6 records, all inside the wide window
        assert r["sigma_max_eV_A"] >= r["sigma_mean_eV_A"] > 0 and r["explore_s"] > 0 and r["label_s"] > 0
    assert rows[2]["n_selected"] is None  # the last model is evaluated, not explored
    for r in rows:
        assert r["valid_force_mae_meV_A"] > 0 and r["valid_energy_mae_meV_atom"] >= 0 and r["train_s"] > 0
    header = (run / "report.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == REPORT_COLUMNS
    assert (run / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    labels = _read(run / "iter_000" / "labels.xyz")
    assert all(x.info["oracle"] == "ase:active_oracles:FlakyEMT" and x.info["al_iteration"] == 0 for x in labels)
    ids = labelled_ids(run / "iter_000" / "labels.xyz") + labelled_ids(run / "iter_001" / "labels.xyz")
    assert len(ids) == len(set(ids)) == rows[2]["n_labels"] - 12
    print(f"\nkill scenario wall time {killed_run['wall_s']:.1f} s")


def test_rerunning_a_finished_run_does_nothing_and_another_config_is_refused(killed_run, capsys):
    run, config = killed_run["run"], killed_run["config"]
    cfg = load_active_config(config)
    before = (run / "state.json").read_bytes()
    res = run_active(cfg, str(run), progress=True)
    assert "nothing to do" in capsys.readouterr().err
    assert res.stop_reason == "max_iterations" and len(res.rows) == 3
    assert json.loads((run / "state.json").read_bytes()) == json.loads(before)
    changed = config_from_dict({**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "epochs": 9}})
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        run_active(changed, str(run), progress=False)


def _read(path):
    import ase.io

    return list(ase.io.read(path, index=":"))
