"""Issue 13: every bad option of every sub-command is one line ``mlpjax CMD: error: ...`` on stderr
with exit status 2, naming the option (or the file and line) and the valid choices — never a
traceback. The sweep at the end walks build_parser(), so a new sub-command or option is covered
(or fails here until its type is checked)."""

import argparse
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write as ase_write

from mlpjax import cli
from mlpjax.cli import build_parser, main
from mlpjax.config import ConfigError

TINY = """\
model: schnet
model_config: {features: 8, interactions: 1, num_rbf: 8, filter_hidden: 8}
cutoff: 4.0
batch_size: 4
epochs: 1
learning_rate: 0.003
warmup_epochs: 0
valid_fraction: 0.25
"""


def _run(argv, capsys):
    """main(argv) → (exit status, stderr); stdout is dropped."""
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _assert_one_line_error(code, err, command, *needles):
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"mlpjax {command}: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A regular file, a missing path and a directory, for the path options."""
    d = tmp_path_factory.mktemp("clierr")
    f = d / "a_file.txt"
    f.write_text("not data\n")
    (d / "tiny.yaml").write_text(TINY)
    return types.SimpleNamespace(dir=d, file=f, missing=d / "missing.xyz", yaml=d / "tiny.yaml")


# ----------------------------------------------------------------- the five cases
def test_unknown_yaml_key_names_key_file_and_line(files, capsys):
    cfg = files.dir / "bogus.yaml"
    cfg.write_text("model: schnet\ncutoff: 4.0\nbogus_key: 3\n")
    code, err = _run(["train", "--train", files.file, "--output", files.dir / "o1", "--config", cfg], capsys)
    _assert_one_line_error(code, err, "train", "'bogus_key'", "bogus.yaml line 3", "known options:", "cutoff")


def test_negative_cutoff_in_yaml_names_file_and_line(files, capsys):
    cfg = files.dir / "neg.yaml"
    cfg.write_text("model: schnet\nepochs: 3\ncutoff: -2\n")
    code, err = _run(["train", "--train", files.file, "--output", files.dir / "o2", "--config", cfg], capsys)
    _assert_one_line_error(code, err, "train", "neg.yaml line 3: cutoff must be > 0", "got -2")


@pytest.mark.parametrize("command", ["train", "evaluate", "validate"])
def test_unknown_units_lists_the_known_units(command, files, capsys):
    argv = {"train": ["train", "--train", files.file, "--output", files.dir / "o3"],
            "evaluate": ["evaluate", files.file, files.file],
            "validate": ["validate", files.file, "--reference", "emt"]}[command]
    code, err = _run(argv + ["--units", "furlongs"], capsys)
    _assert_one_line_error(code, err, command, "argument --units", "'furlongs'", "eV", "Hartree", "kcal/mol")


def test_units_in_yaml_are_checked_with_their_line(files, capsys):
    cfg = files.dir / "units.yaml"
    cfg.write_text("epochs: 3\nunits: furlongs\n")
    code, err = _run(["train", "--train", files.file, "--output", files.dir / "o4", "--config", cfg], capsys)
    _assert_one_line_error(code, err, "train", "units.yaml line 2", "'furlongs'", "kcal/mol")


def test_md_negative_steps(files, capsys):
    code, err = _run(["md", files.file, files.file, "--steps", "-5"], capsys)
    _assert_one_line_error(code, err, "md", "argument --steps", ">= 1", "'-5'", "mlpjax md --help")


@pytest.mark.parametrize("argv, needle", [
    (["md", "{file}", "{file}", "--steps", "-5"], "argument --steps"),
    (["train", "--train", "{file}", "--output", "{dir}/o5", "--config", "{dir}/bogus.yaml"], "bogus_key"),
])
def test_no_traceback_from_the_real_command_line(argv, needle, files):
    """The same through ``python -m mlpjax`` in a fresh process: stderr holds no traceback."""
    (files.dir / "bogus.yaml").write_text("model: schnet\ncutoff: 4.0\nbogus_key: 3\n")
    argv = [a.format(file=files.file, dir=files.dir) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "mlpjax", *argv], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# ------------------------------------------------------------ a two-element (Cu–Au) model
def _emt_cuau(path, n=8, seed=0):
    """Rattled 32-atom L1₂ Cu₃Au cells labelled by ASE's EMT."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.75, cubic=True)
        atoms.symbols[0] = "Au"
        atoms = atoms.repeat((2, 2, 2))
        atoms.set_cell(atoms.cell.array * (1 + 0.01 * (k % 3 - 1)), scale_atoms=True)
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        atoms.calc = EMT()
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
        frames.append(atoms)
    ase_write(path, frames, format="extxyz")
    return frames


@pytest.fixture(scope="module")
def cuau_model(files):
    data = files.dir / "cuau.xyz"
    _emt_cuau(data)
    out = files.dir / "cuau_run"
    assert main(["train", "--train", str(data), "--output", str(out), "--config", str(files.yaml), "--quiet"]) == 0
    return out / "model.mlpjax"


_ONLY_EOS = "parity,elastic,phonons,drift,vdos,extrapolation"


def test_validate_two_element_model_picks_a_prototype(cuau_model, files, capsys):
    """The issue's fifth case: no --structure for a Cu–Au model is not a ValueError traceback; the
    Cu₃Au training composition gives the L1₂ prototype, and the CLI says so."""
    out = files.dir / "val"
    code = main(["validate", str(cuau_model), "--reference", "emt", "--quick", "--skip", _ONLY_EOS,
                 "--output", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err
    assert "no --structure given; using L1₂ AuCu3" in captured.out
    import json

    rep = json.loads((out / "report.json").read_text())
    assert rep["structure"]["formula"] == "AuCu3" and rep["structure"]["n_atoms"] == 4
    assert rep["sections"]["eos"]["reference"]["lattice_constant_A"] == pytest.approx(3.75, abs=0.1)


def test_validate_structure_with_an_unknown_element(cuau_model, capsys):
    code, err = _run(["validate", cuau_model, "--reference", "emt", "--structure", "fcc-Ag", "--quiet"], capsys)
    _assert_one_line_error(code, err, "validate", "Ag", "knows only Cu, Au")


def test_md_structure_with_an_unknown_element(cuau_model, files, capsys):
    start = files.dir / "ag.xyz"
    ase_write(start, bulk("Ag", "fcc", a=4.09, cubic=True))
    code, err = _run(["md", cuau_model, start, "--steps", "2", "--quiet"], capsys)
    _assert_one_line_error(code, err, "md", "ag.xyz", "contains Ag", "knows only Cu, Au")


# ------------------------------------------------ default_structure heuristics (no model needed)
def _fake_potential(symbols, data_file=None, units="eV"):
    from ase.data import atomic_numbers

    meta = {"units": units}
    if data_file is not None:
        meta["data_files"] = {"train": [str(data_file)]}
    return types.SimpleNamespace(species=tuple(sorted(atomic_numbers[s] for s in symbols)), metadata=meta)


def _alloy_file(path, symbols_per_frame, a=3.8):
    frames = []
    for symbols in symbols_per_frame:
        atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 1, 1))
        atoms.symbols = symbols
        frames.append(atoms)
    ase_write(path, frames, format="extxyz")


def test_default_structure_single_element_is_the_reference_state():
    from mlpjax.validate import default_structure

    atoms, why = default_structure(_fake_potential(["Cu"]))
    assert atoms.get_chemical_formula() == "Cu4" and "reference state of Cu" in why


@pytest.mark.parametrize("symbols, name, formula", [
    ("Cu6Au2", "L1₂", "AuCu3"),  # x_Au = 1/4
    ("Cu2Au6", "L1₂", "Au3Cu"),  # x_Au = 3/4
    ("Cu4Au4", "L1₀", "Au2Cu2"),  # both fcc → L1₀
])
def test_default_structure_two_elements_prototype_from_training_composition(tmp_path, symbols, name, formula):
    from mlpjax.validate import default_structure

    _alloy_file(tmp_path / "t.xyz", [symbols] * 3, a=3.8)
    atoms, why = default_structure(_fake_potential(["Cu", "Au"], tmp_path / "t.xyz"))
    assert why.startswith(name) and atoms.get_chemical_formula() == formula
    assert atoms.get_volume() / len(atoms) == pytest.approx(3.8**3 / 4, rel=1e-6)  # the training volume per atom


def test_default_structure_b2_when_not_both_fcc(tmp_path):
    from mlpjax.validate import default_structure

    _alloy_file(tmp_path / "t.xyz", ["Fe4Al4"], a=2.9 * 2 ** (1 / 3))
    atoms, why = default_structure(_fake_potential(["Fe", "Al"], tmp_path / "t.xyz"))
    assert why.startswith("B2") and atoms.get_chemical_formula() == "AlFe" and len(atoms) == 2


def test_default_structure_falls_back_to_the_first_training_structure(tmp_path):
    from mlpjax.validate import default_structure

    _alloy_file(tmp_path / "t.xyz", ["Cu7Au", "Cu7Au"])  # x = 1/8: no prototype
    atoms, why = default_structure(_fake_potential(["Cu", "Au"], tmp_path / "t.xyz"))
    assert atoms.get_chemical_formula() == "AuCu7" and "first periodic training structure" in why


def test_default_structure_without_training_data(tmp_path):
    from mlpjax.validate import default_structure

    atoms, why = default_structure(_fake_potential(["Cu", "Au"], tmp_path / "moved.xyz"))
    assert why.startswith("L1₀") and "no readable training data" in why
    with pytest.raises(ConfigError, match=r"Cu, Zn, Au.*--structure FILE or 'fcc-Cu'"):
        default_structure(_fake_potential(["Cu", "Au", "Zn"], tmp_path / "moved.xyz"))


def test_structure_for_rejects_unknown_elements_and_specs():
    from mlpjax.validate import structure_for

    pot = _fake_potential(["Cu", "Au"])
    with pytest.raises(ConfigError, match="knows only Cu, Au"):
        structure_for(pot, "fcc-Ag")
    with pytest.raises(ConfigError, match="LATTICE-Symbol"):
        structure_for(pot, "hcp-Cu")
    assert structure_for(pot, "fcc-Cu").get_chemical_formula() == "Cu4"


# ------------------------------------------------------------- checks across several options
@pytest.mark.parametrize("argv, needles", [
    (["md", "{file}", "{file}", "--steps", "5", "--ensemble", "nvt"], ["--ensemble nvt needs --temperature"]),
    (["md", "{file}", "{file}", "--steps", "5", "--replicas", "3", "--replica-temperatures", "300,600"],
     ["--replica-temperatures gives 2 temperatures for --replicas 3"]),
    (["md", "{file}", "{file}", "--steps", "5", "--pressure-final", "2"], ["--pressure-final", "npt"]),
    (["md", "{file}", "{file}", "--steps", "5", "--restart-every", "2"], ["--restart-every needs --restart-out"]),
    (["analyze", "{file}", "--fit-range", "0.5", "0.1"], ["--fit-range", "START < END"]),
    (["analyze", "{file}", "--order-cutoff", "3"], ["--order-cutoff", "--order"]),
    (["train", "--train", "{file}", "--output", "{dir}/o6", "--valid-fraction", "0.6", "--test-fraction", "0.5"],
     ["--valid-fraction", "--test-fraction", "must be < 1"]),
    (["data", "emt-cu", "--output", "{dir}/d.xyz", "--md-frames", "0", "--rattled", "0", "--strained", "0", "--liquid-frames", "0"],
     ["nothing to write"]),
])
def test_checks_across_options_are_one_line_errors(argv, needles, files, capsys):
    code, err = _run([a.format(file=files.file, dir=files.dir) for a in argv], capsys)
    _assert_one_line_error(code, err, argv[0], *needles)


def test_unrecognised_argument_is_reported_by_its_sub_command(files, capsys):
    code, err = _run(["md", files.file, files.file, "--steps", "5", "--temprature", "300"], capsys)
    _assert_one_line_error(code, err, "md", "unrecognized arguments", "did you mean --temperature?")


# --------------------------------------------------------------- main's error handling
def test_filesystem_errors_naming_a_file_are_one_line(monkeypatch, files, capsys):
    def fail(args):
        raise PermissionError(13, "Permission denied", "/root/out.xyz")

    monkeypatch.setattr(cli, "_cmd_data", fail)
    code, err = _run(["data", "emt-cu", "--output", files.dir / "x.xyz"], capsys)
    _assert_one_line_error(code, err, "data", "Permission denied: /root/out.xyz")


@pytest.mark.parametrize("error", [RuntimeError("a bug"), OSError("no file named"), ValueError("a bug")])
def test_bugs_keep_their_traceback(monkeypatch, files, error):
    """Only the documented error types become one-line errors; a bare ValueError is a bug."""
    def fail(args):
        raise error

    monkeypatch.setattr(cli, "_cmd_data", fail)
    with pytest.raises(type(error)):
        main(["data", "emt-cu", "--output", str(files.dir / "x.xyz")])


def test_mlpjax_traceback_env_shows_the_traceback(monkeypatch, files):
    def fail(args):
        raise ConfigError("bad option", option="--x")

    monkeypatch.setattr(cli, "_cmd_data", fail)
    monkeypatch.setenv("MLPJAX_TRACEBACK", "1")
    with pytest.raises(ConfigError):
        main(["data", "emt-cu", "--output", str(files.dir / "x.xyz")])


def test_warnings_print_as_one_line_and_the_hook_is_restored(monkeypatch, files, capsys):
    def warn(args):
        warnings.warn("energies look like meV\nwritten as eV", UserWarning)
        return 0

    before = warnings.showwarning
    monkeypatch.setattr(cli, "_cmd_data", warn)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code, err = _run(["data", "emt-cu", "--output", files.dir / "x.xyz"], capsys)
    assert code == 0
    assert err == "mlpjax data: warning: energies look like meV written as eV\n"
    assert warnings.showwarning is before


def test_train_strict_reaches_the_python_api(monkeypatch, files, capsys):
    """--strict is passed to mlpjax.training.train; a unit-sanity DataError from it is a one-line error."""
    import mlpjax.training
    from mlpjax.data import DataError

    data = files.dir / "cuau_small.xyz"
    _emt_cuau(data, n=2)
    seen = []

    def fake_train(*args, **kwargs):
        seen.append(kwargs["strict"])
        raise DataError("energies span 1e4 eV/atom: meV written as eV? pass --units meV", source=str(data))

    monkeypatch.setattr(mlpjax.training, "train", fake_train)
    for flags, strict in (([], False), (["--strict"], True)):
        code, err = _run(["train", "--train", data, "--output", files.dir / "o7", "--config", files.yaml, "--quiet", *flags], capsys)
        _assert_one_line_error(code, err, "train", "cuau_small.xyz", "--units meV")
        assert seen[-1] is strict


# ------------------------------------------------------------------ every option, every command
def _bad_values(action, files):
    """(bad argument strings, substrings the error must contain) for one argparse action."""
    t = action.type
    if action.choices is not None and t is None:
        return [["no-such-choice"]], [repr(c) for c in action.choices]
    if isinstance(t, cli._Number):
        bad = [["x"]]
        if t.kind is float:
            bad.append(["nan"])
        if t.lo is not None:
            bad.append([repr(t.lo if t.lo_open else t.lo - 1)])
        if t.hi is not None:
            bad.append([repr(t.hi if t.hi_open else t.hi + 1)])
        return bad, [t.describe()]
    if isinstance(t, cli._NumberList):
        return [["300,x"], ["300,,600"]] + ([["300,-1"]] if t.item.lo is not None else []), []
    if isinstance(t, cli._InputFile):
        return [[str(files.missing)], [str(files.dir)]], []
    if isinstance(t, cli._OutputFile):
        return [[str(files.file / "out")], [str(files.dir)], [str(files.dir / "no" / "dir" / "out")]], []
    if isinstance(t, cli._OutputDir):
        return [[str(files.file)], [str(files.file / "sub")]], []
    if isinstance(t, cli._Units):
        return [["furlongs"]], ["eV", "kcal/mol"]
    if isinstance(t, cli._Sections):
        return [["eos,nosuchsection"]], ["eos", "drift"]
    if isinstance(t, cli._Reference):
        return [["nosuchref"]], ["emt"]
    if isinstance(t, cli._Structure):
        return [["nosuch"], ["fcc-Xx"]], ["fcc"]
    if isinstance(t, cli._Element):
        return [["Qq"]], []
    if isinstance(t, cli._Text):
        return [[""]], []
    pytest.fail(f"option {action.option_strings or action.dest} has type {t!r} without a check: give it a checked "
                "type from mlpjax.cli (or choices=) and add its bad values to tests/test_cli_errors.py")


def _good_value(action, files):
    if isinstance(action.type, cli._InputFile):
        return str(files.file)
    if action.choices is not None:
        return next(iter(action.choices))
    pytest.fail(f"positional {action.dest}: no good example value for type {action.type!r}")


def _commands():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_option_of_every_command_rejects_bad_values_in_one_line(command, files, capsys):
    parser = _commands()[command]
    actions = [a for a in parser._actions if a.nargs != 0 and not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]
    assert actions
    positionals = [a for a in actions if not a.option_strings]
    for action in actions:
        n = action.nargs if isinstance(action.nargs, int) else 1
        name = action.option_strings[0] if action.option_strings else (action.metavar or action.dest)
        if action.option_strings:
            prefix = [command, action.option_strings[0]]
        else:
            prefix = [command] + [_good_value(p, files) for p in positionals[: positionals.index(action)]]
        bad_values, needles = _bad_values(action, files)
        for bad in bad_values:
            code, err = _run(prefix + bad * n, capsys)
            _assert_one_line_error(code, err, command, f"argument {name}", *needles)
