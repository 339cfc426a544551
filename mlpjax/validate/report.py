"""The validation report: :func:`validate_report` runs the sections of a :class:`ReportConfig`
(parity, EOS, elastic constants, phonons, NVE drift, VDOS, extrapolation) against a
reference calculator or labelled data, and writes ``report.md``, ``report.json`` and PNG plots.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Sequence

import numpy as np

from mlpjax.data import Configuration
from mlpjax.validate.acceptance import (
    BULK_MODULUS_REL_TOL,
    ELASTIC_CONSTANT_REL_TOL,
    LATTICE_CONSTANT_REL_TOL,
    acceptance_checks,
)
from mlpjax.validate.crystal import (
    ElasticConfig,
    EOSConfig,
    PhononConfig,
    elastic_constants,
    equation_of_state,
    gamma_phonons,
)
from mlpjax.validate.dynamics import (
    DRIFT_FAIL_MEV_PER_ATOM_PS,
    DRIFT_GOOD_MEV_PER_ATOM_PS,
    DriftConfig,
    VDOSConfig,
    _start,
    energy_drift,
    reference_vibrational_dos,
    vdos_overlap,
    vibrational_dos,
)
from mlpjax.validate.extrapolation import (
    ExtrapolationConfig,
    errors_by_energy,
    extrapolation_test,
    reference_samples,
    training_ranges,
)
from mlpjax.validate.markdown import report_markdown
from mlpjax.validate.metrics import metrics_from_predictions, parity_plot, predict_dataset
from mlpjax.validate.plots import (
    _plot_drift,
    _plot_elastic,
    _plot_eos,
    _plot_error_histograms,
    _plot_extrapolation,
    _plot_vibrations,
)
from mlpjax.validate.structures import _scaled, md_supercell, structure_for

__all__ = ["SECTIONS", "ReportConfig", "reference_calculator", "to_jsonable", "validate_report"]


SECTIONS = ("parity", "eos", "elastic", "phonons", "drift", "vdos", "extrapolation")


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """Everything :func:`validate_report` runs; :meth:`quick` is a minutes-sized variant."""

    sections: tuple[str, ...] = SECTIONS
    eos: EOSConfig = EOSConfig()
    elastic: ElasticConfig = ElasticConfig()
    phonons: PhononConfig = PhononConfig()
    drift: DriftConfig = DriftConfig()
    vdos: VDOSConfig = VDOSConfig()
    extrapolation: ExtrapolationConfig = ExtrapolationConfig()
    md_min_atoms: int = 64  # MD cells are repeated to at least this many atoms (and 2 × (cutoff + skin) wide)
    md_skin: float = 0.5  # Å, jax-md neighbour-list skin (MDConfig.skin)
    batch_size: int = 16

    def __post_init__(self):
        unknown = sorted(set(self.sections) - set(SECTIONS))
        if unknown:
            raise ValueError(f"unknown report sections {unknown}; choose from {', '.join(SECTIONS)}")

    @classmethod
    def quick(cls, **changes) -> "ReportConfig":
        """Short runs and few samples (about a minute for a small model on one CPU core)."""
        cfg = cls(
            phonons=PhononConfig(supercell=(1, 1, 1)),
            drift=DriftConfig(timesteps_fs=(1.0, 2.0), duration_ps=0.1, thermalise_ps=0.1, log_interval_fs=4.0),
            vdos=VDOSConfig(duration_ps=0.4, max_lag_ps=0.2, thermalise_ps=0.1),
            extrapolation=ExtrapolationConfig(
                temperatures_K=(300.0, 900.0, 1500.0), frames_per_temperature=1, equilibration_steps=40,
                frame_stride=10, volume_strains=(-0.08, 0.0, 0.08), frames_per_strain=1, n_energy_bins=3,
            ),
        )
        return dataclasses.replace(cfg, **changes)


def reference_calculator(name: str, symbols=()):
    """An ASE calculator by name (``"emt"``); checks that it knows ``symbols``."""
    if str(name).lower() != "emt":
        raise ValueError(f"unknown reference calculator {name!r}: use 'emt' or a labelled data file")
    from ase.calculators.emt import EMT, parameters

    missing = sorted(set(symbols) - set(parameters))
    if missing:
        raise ValueError(f"ASE's EMT has no parameters for {', '.join(missing)} (it knows {', '.join(parameters)}): "
                         "validate against a labelled data file instead (--reference DATA.xyz)")
    return EMT()


def to_jsonable(x):
    """``x`` (dicts, lists, NamedTuples, dataclasses, NumPy arrays and scalars) as plain JSON
    values: tuples become lists, arrays nested lists, NaN and ±inf None."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if hasattr(x, "_asdict"):
        return to_jsonable(x._asdict())
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return to_jsonable(dataclasses.asdict(x))
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer, int)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else None
    return x


def validate_report(potential, reference, output_dir, *, structure=None, config: ReportConfig | None = None,
                    training_configs: Sequence[Configuration] | None = None, model_name: str | None = None,
                    units: str | None = None, progress: bool = True, strict: bool = False) -> dict:
    """Validate ``potential`` and write ``output_dir/report.md``, ``report.json`` and PNG plots.

    Args:
      reference: an ASE calculator (e.g. ``EMT()``; every section runs, compared against it)
        or labelled data (a sequence of :class:`Configuration` or a file path): parity and
        errors on it, errors binned by per-atom energy, and the potential's own EOS, elastic
        constants, phonons, drift and VDOS (nothing needs a reference calculator there).
      structure: ``"fcc-Cu[:a]"``, a structure file or ase.Atoms; default: the element's cubic
        reference state (:func:`structure_for`). Elastic constants and the EOS use this cell
        (rescaled to each calculator's own equilibrium volume); MD and the extrapolation
        samples use it repeated by :func:`md_supercell`.
      training_configs: optional training data; marks the training range on the extrapolation axes.
      units: units of a reference data file (default: those the potential was trained with).
      strict: re-raise the first error instead of recording it in the report and going on.
    Returns the report dict (also ``report.json``, with NaN written as null), with
    ``"sections"`` holding the result objects, ``"checks"`` (:func:`acceptance_checks`),
    ``"errors"`` (section → message) and ``"files"``.
    """
    config = config or ReportConfig()
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    t_start = time.perf_counter()

    def say(msg):
        if progress:
            print(f"[mlpjax validate {time.perf_counter() - t_start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    from ase.data import chemical_symbols

    ref_calc, ref_configs, ref_desc = None, None, None
    if isinstance(reference, (str, os.PathLike)) and not os.path.exists(os.fspath(reference)):
        ref_calc = reference_calculator(reference, [chemical_symbols[z] for z in potential.species])
        ref_desc = {"kind": "calculator", "name": str(reference).lower()}
    elif isinstance(reference, (str, os.PathLike)):
        from mlpjax import data as _data

        ref_configs = _data.read(reference, units=units or potential.metadata.get("units", "eV"))
        ref_desc = {"kind": "data", "path": os.path.abspath(os.fspath(reference)), "n_structures": len(ref_configs)}
    elif isinstance(reference, (list, tuple)):
        ref_configs = list(reference)
        ref_desc = {"kind": "data", "path": None, "n_structures": len(ref_configs)}
    else:
        ref_calc = reference
        ref_desc = {"kind": "calculator", "name": type(reference).__name__}

    atoms = structure_for(potential, structure)
    sections: dict = {}
    errors: dict = {}
    timings: dict = {}
    want = set(config.sections)

    def run(key, fn):
        t0 = time.perf_counter()
        say(f"{key} ...")
        try:
            out = fn()
        except Exception as err:
            if strict:
                raise
            errors[key] = f"{type(err).__name__}: {err}"
            say(f"{key} failed: {errors[key]}")
            out = None
        timings[key] = time.perf_counter() - t0
        return out

    model_calc = potential.calculator()

    # equation of state → each calculator's own equilibrium cell
    if want & {"eos", "elastic", "phonons", "drift", "vdos", "extrapolation"}:
        eos = {"model": run("eos.model", lambda: equation_of_state(model_calc, atoms, config.eos))}
        eos["reference"] = run("eos.reference", lambda: equation_of_state(ref_calc, atoms, config.eos)) if ref_calc is not None else None
        sections["eos"] = eos
    eos = sections.get("eos", {})
    atoms_model = _scaled(atoms, eos["model"].volume_scale) if eos.get("model") is not None else atoms
    atoms_ref = _scaled(atoms, eos["reference"].volume_scale) if eos.get("reference") is not None else atoms_model
    if "eos" not in want:
        sections.pop("eos", None)

    if "elastic" in want:
        sections["elastic"] = {
            "model": run("elastic.model", lambda: elastic_constants(model_calc, atoms_model, config.elastic)),
            "reference": run("elastic.reference", lambda: elastic_constants(ref_calc, atoms_ref, config.elastic)) if ref_calc is not None else None,
        }
    if "phonons" in want:
        sections["phonons"] = {
            "model": run("phonons.model", lambda: gamma_phonons(model_calc, atoms_model, config.phonons)),
            "reference": run("phonons.reference", lambda: gamma_phonons(ref_calc, atoms_ref, config.phonons)) if ref_calc is not None else None,
        }

    md_model = md_supercell(atoms_model, potential.cutoff, skin=config.md_skin, min_atoms=config.md_min_atoms)
    md_ref = atoms_ref.repeat(tuple(int(round(x)) for x in md_model.cell.lengths() / atoms_model.cell.lengths()))
    dcfg = config.drift
    start = None
    if want & {"drift", "vdos"}:
        start = run("thermalise", lambda: _start(potential, md_model, temperature_K=dcfg.temperature_K, thermalise_ps=dcfg.thermalise_ps,
                                                  timestep_fs=dcfg.thermalise_timestep_fs, friction_per_ps=dcfg.friction_per_ps,
                                                  seed=dcfg.seed, dtype=dcfg.dtype, progress=False))
    if "drift" in want and start is not None:
        sections["drift"] = run("drift", lambda: energy_drift(potential, start, dataclasses.replace(dcfg, thermalise_ps=0.0)))
    if "vdos" in want:
        vcfg = config.vdos
        if start is not None and vcfg.temperature_K == dcfg.temperature_K:
            model_vdos = run("vdos.model", lambda: vibrational_dos(potential, start, dataclasses.replace(vcfg, thermalise_ps=0.0)))
        else:
            model_vdos = run("vdos.model", lambda: vibrational_dos(potential, md_model, vcfg))
        ref_vdos = run("vdos.reference", lambda: reference_vibrational_dos(ref_calc, md_ref, vcfg)) if ref_calc is not None else None
        sections["vdos"] = {"model": model_vdos, "reference": ref_vdos,
                            "overlap": vdos_overlap(model_vdos, ref_vdos) if model_vdos is not None and ref_vdos is not None else None}

    # errors on reference samples / data
    samples = None
    if ref_calc is not None and want & {"parity", "extrapolation"}:
        samples = run("extrapolation.samples", lambda: reference_samples(ref_calc, md_ref, config.extrapolation))
        if samples is not None:
            e_min = eos["reference"].e0 if eos.get("reference") is not None else None
            v0 = eos["reference"].v0 if eos.get("reference") is not None else None
            sections["extrapolation"] = run("extrapolation", lambda: extrapolation_test(
                potential, ref_calc, md_ref, config.extrapolation, e_min_per_atom=e_min, training_configs=training_configs,
                v0_per_atom=v0, batch_size=config.batch_size, samples=samples))
    parity_configs = parity_pred = None
    if ref_configs is not None:
        parity_configs = ref_configs
        parity_pred = run("parity", lambda: predict_dataset(potential, ref_configs, batch_size=config.batch_size))
        if parity_pred is not None:
            rows = run("extrapolation", lambda: errors_by_energy(parity_pred, ref_configs, n_bins=config.extrapolation.n_energy_bins))
            e_min = min(c.energy / c.n_atoms for c in ref_configs)
            sections["extrapolation"] = {
                "temperature": [], "strain": [], "energy": rows or [], "e_min_per_atom": e_min,
                "training": training_ranges(training_configs, e_min_per_atom=e_min) if training_configs else None,
            }
    elif sections.get("extrapolation") is not None:
        parity_configs, parity_pred = sections["extrapolation"]["samples"], sections["extrapolation"]["predictions"]
    if "parity" in want and parity_pred is not None:
        sections["parity"] = metrics_from_predictions(parity_pred, parity_configs)
    if "extrapolation" not in want:
        sections.pop("extrapolation", None)

    checks = acceptance_checks(sections)
    report = {
        "model": {"name": model_name, "architecture": potential.model, "cutoff_A": potential.cutoff,
                  "species": [chemical_symbols[z] for z in potential.species], "model_config": dataclasses.asdict(potential.model_config)},
        "reference": ref_desc,
        "structure": {"formula": atoms.get_chemical_formula(), "n_atoms": len(atoms), "cell_A": atoms.cell.array,
                      "spec": structure if isinstance(structure, str) else None, "md_n_atoms": len(md_model)},
        "config": config,
        "thresholds": {"drift_good_meV_per_atom_per_ps": DRIFT_GOOD_MEV_PER_ATOM_PS, "drift_fail_meV_per_atom_per_ps": DRIFT_FAIL_MEV_PER_ATOM_PS,
                       "lattice_constant_rel": LATTICE_CONSTANT_REL_TOL, "bulk_modulus_rel": BULK_MODULUS_REL_TOL,
                       "elastic_constant_rel": ELASTIC_CONSTANT_REL_TOL},
        "sections": sections,
        "checks": checks,
        "errors": errors,
        "timings_s": timings,
        "files": {},
    }
    say("plots ...")
    files = report["files"]
    plotters = [
        ("parity", "parity.png", lambda p: parity_plot(parity_pred, parity_configs, p, title="potential vs reference")),
        ("errors", "errors.png", lambda p: _plot_error_histograms(parity_pred, parity_configs, p)),
        ("eos", "eos.png", lambda p: _plot_eos(sections["eos"], p)),
        ("elastic", "elastic.png", lambda p: _plot_elastic(sections["elastic"], p)),
        ("drift", "drift.png", lambda p: _plot_drift(sections["drift"], p)),
        ("extrapolation", "extrapolation.png", lambda p: _plot_extrapolation(sections["extrapolation"], p)),
        ("vibrations", "vibrations.png", lambda p: _plot_vibrations(sections.get("vdos"), sections.get("phonons"), p)),
    ]
    available = {
        "parity": parity_pred is not None and "parity" in want, "errors": parity_pred is not None and "parity" in want,
        "eos": "eos" in sections and any(v is not None for v in sections["eos"].values()),
        "elastic": "elastic" in sections and any(v is not None for v in sections["elastic"].values()),
        "drift": sections.get("drift") is not None,
        "extrapolation": sections.get("extrapolation") is not None and bool(sections["extrapolation"].get("energy")),
        "vibrations": (sections.get("vdos") or {}).get("model") is not None or (sections.get("phonons") or {}).get("model") is not None,
    }
    for key, name, fn in plotters:
        if not available[key]:
            continue
        path = os.path.join(output_dir, name)
        try:
            fn(path)
            files[key] = name
        except Exception as err:
            if strict:
                raise
            errors[f"plot.{key}"] = f"{type(err).__name__}: {err}"
    timings["total"] = time.perf_counter() - t_start
    _write_report_files(report, output_dir)
    say(f"wrote {os.path.join(output_dir, 'report.md')} ({sum(c['passed'] for c in checks)}/{len(checks)} checks passed)")
    return report


def _json_report(report: dict) -> dict:
    out = dict(report)
    sec = dict(out["sections"])
    if sec.get("extrapolation") is not None:
        sec["extrapolation"] = {k: v for k, v in sec["extrapolation"].items() if k not in ("samples", "predictions", "axes")}
    if sec.get("vdos") is not None:  # curves: keep them, they are small (a few hundred points)
        pass
    out["sections"] = sec
    return to_jsonable(out)


def _write_report_files(report: dict, output_dir: str) -> None:
    from mlpjax.files import atomic_write_bytes

    report["files"]["json"] = "report.json"
    report["files"]["markdown"] = "report.md"
    atomic_write_bytes(os.path.join(output_dir, "report.json"), (json.dumps(_json_report(report), indent=2) + "\n").encode())
    atomic_write_bytes(os.path.join(output_dir, "report.md"), report_markdown(report).encode())
