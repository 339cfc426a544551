"""The benchmark runner's plumbing (``python -m benchmarks.run``): argument parsing, the suites'
cases, the FLOP-fraction helper, a missing peer, ``--gpu`` without a GPU and the RESULTS.md
section, on tiny inputs (no benchmark case is run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import run  # noqa: E402


def test_parse_args_and_suites():
    args = run.parse_args(["--suite", "speed", "--quick"])
    assert args.suite == "speed" and args.quick and not args.gpu and args.case_names is None
    assert [c.name for c in run.cases_for("speed")] == ["peers", "mace_backends", "precision", "md_peers", "md_vs_ase", "npt_vs_nvt", "flops"]
    assert [c.name for c in run.cases_for("scaling")] == ["md_scaling", "train_scaling"]
    everything = [c.name for c in run.cases_for("all")]
    assert sorted(everything) == sorted(run.CASES) and everything[0] == "peers" and everything[-1] == "accuracy"
    assert [c.name for c in run.cases_for("all", run.parse_args(["--cases", "accuracy,flops"]).case_names)] == ["flops", "accuracy"]
    with pytest.raises(ValueError, match="unknown case"):
        run.cases_for("all", ["nope"])
    with pytest.raises(SystemExit):
        run.parse_args(["--suite", "nope"])


def test_list_prints_every_suite(capsys):
    assert run.main(["--list"]) == 0
    out = capsys.readouterr().out
    for suite, items in run.listing().items():
        assert f"{suite}:" in out
        assert all(name in out for name, _ in items)


def test_flop_fraction_of_a_matmul():
    import jax.numpy as jnp

    n = 64
    a = jnp.ones((n, n), jnp.float32)
    r = run.flop_fraction(jnp.matmul, a, a, peak_flops_per_s=1e12, reps=2)
    assert r["flops"] == 2 * n**3  # XLA counts a multiply-add as 2 FLOPs
    assert r["time_s"] > 0 and r["fraction_of_peak"] == pytest.approx(r["flops_per_s"] / 1e12)
    peak = run.measured_peak_flops(n=128, reps=2)
    assert peak["xla_flops"] == 2 * 128**3
    assert peak["peak_flops_per_s"] >= peak["median_flops_per_s"] > 0


def test_missing_peer_is_one_line(tmp_path):
    out, why = run.run_peer_worker(run.Options(peers_dir=tmp_path), "mlip", "mlip_speed.py", {}, str(tmp_path))
    assert out is None and "not installed" in why and "setup.sh" in why and "\n" not in why


def test_gpu_flag_fails_clearly_without_a_gpu():
    import jax

    if jax.default_backend() == "gpu":
        pytest.skip("a GPU is visible")
    with pytest.raises(SystemExit, match="no GPU"):
        run.main(["--gpu", "--cases", "flops", "--no-record"])


def test_section_body_has_the_tables_and_the_shared_machine_note():
    machine = {"git": {"commit": "0123456789abcdef", "dirty_paths": []}, "device": "CPU (2 cores)", "cpu": "x", "memory_GB": 24,
               "versions": {"jax": "0.10.1", "mlpjax": "0.1.0"}, "cpu_count": 2}
    case = {"name": "flops", "suite": "speed", "title": "Physical limit", "wall_s": 1.0, "load_average_before": [1.0],
            "load_average_after": [2.0], "error": None, "headers": ["model", "fraction"], "rows": [["schnet", "14 %"]],
            "notes": ["a note"], "headline": ["schnet 14 %"]}
    failed = {**case, "name": "peers", "title": "Peers", "error": "RuntimeError: boom"}
    body = run.section_body({"argv": "--quick", "wall_s": 60.0, "machine": machine, "load_average_before": [1.0],
                             "load_average_after": [2.0], "json": "/x/run.json", "cases": [case, failed]})
    assert "| model | fraction |" in body and "| schnet | 14 % |" in body
    assert "shared with other jobs" in body and "Headline: schnet 14 %" in body
    assert "### Peers" in body and "**failed**: RuntimeError: boom" in body


def test_precision_case_is_gpu_only_and_says_so():
    """Without --gpu the precision table is one row that says why (XLA's CPU dots ignore the
    requested precision, so a CPU table would show three copies of one float32 measurement)."""
    result = run.case_precision(run.Options(quick=True))
    assert len(result.rows) == 1 and "GPU only" in result.rows[0][1]
