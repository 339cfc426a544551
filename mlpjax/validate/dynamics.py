"""MD-based checks of a potential: thermalisation, NVE energy conservation and the
vibrational density of states.

* :func:`energy_drift` — NVE from a thermalised start at several timesteps; drift =
  slope of a linear fit of E_tot(t)/N, classified by :func:`classify_drift` against
  :data:`DRIFT_GOOD_MEV_PER_ATOM_PS` / :data:`DRIFT_FAIL_MEV_PER_ATOM_PS`.
* :func:`vibrational_dos` / :func:`reference_vibrational_dos` — VDOS from the
  mass-weighted velocity autocorrelation of an NVE run (jax-md for the potential,
  ASE MD for the reference).

The potential's MD runs through :func:`mlpjax.md.simulate`, imported inside the functions that
use it, so importing :mod:`mlpjax.validate` does not import the MD engine. Units: eV, Å, amu,
fs/ps as named, frequencies in THz; constants from :mod:`mlpjax.units`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple

import numpy as np

from mlpjax.units import FS, PS

__all__ = [
    "DRIFT_GOOD_MEV_PER_ATOM_PS", "DRIFT_FAIL_MEV_PER_ATOM_PS", "classify_drift", "DriftConfig", "VDOSConfig",
    "thermalise", "DriftRun", "DriftReport", "drift_statistics", "energy_drift", "VDOS", "vdos_from_velocities",
    "vdos_overlap", "vibrational_dos", "reference_vibrational_dos",
]


DRIFT_GOOD_MEV_PER_ATOM_PS: float = 1.0
"""NVE total-energy drift (|slope of E_tot/N|, meV/atom/ps) below which energy conservation
is *good*. One of the project's two warning levels for MD energy drift (issue 5):
|drift| < 1 meV/atom/ps good; 1–10 warn (reduce the timestep, check that the energy is
smooth at the cutoff, use float64); > 10 fail."""

DRIFT_FAIL_MEV_PER_ATOM_PS: float = 10.0
"""NVE total-energy drift (meV/atom/ps) above which energy conservation *fails*: the
project's upper warning level (see :data:`DRIFT_GOOD_MEV_PER_ATOM_PS`)."""


_DRIFT_ADVICE = {
    "good": "energy is conserved: the drift is below {good:g} meV/atom/ps at this timestep.",
    "warn": (
        "drift between {good:g} and {fail:g} meV/atom/ps: reduce the timestep, check that the energy is smooth "
        "as atoms cross the cutoff (envelope / cutoff function), and run in float64 (--float64, MDConfig(dtype='float64'))."
    ),
    "fail": (
        "drift above {fail:g} meV/atom/ps: the dynamics does not conserve energy. The timestep is too long for this "
        "potential, or the forces are not the gradient of a smooth energy (cutoff discontinuity, float32 round-off, "
        "a model that is rough outside its training data): do not use this setting for production MD."
    ),
}


def classify_drift(drift_meV_per_atom_per_ps: float) -> tuple[str, str]:
    """("good" | "warn" | "fail", advice) for an NVE drift (sign ignored; NaN fails).

    |drift| < :data:`DRIFT_GOOD_MEV_PER_ATOM_PS` good; up to and including
    :data:`DRIFT_FAIL_MEV_PER_ATOM_PS` warn; above it (or not finite) fail.
    """
    d = abs(float(drift_meV_per_atom_per_ps))
    if not np.isfinite(d) or d > DRIFT_FAIL_MEV_PER_ATOM_PS:
        status = "fail"
    elif d < DRIFT_GOOD_MEV_PER_ATOM_PS:
        status = "good"
    else:
        status = "warn"
    return status, _DRIFT_ADVICE[status].format(good=DRIFT_GOOD_MEV_PER_ATOM_PS, fail=DRIFT_FAIL_MEV_PER_ATOM_PS)


@dataclasses.dataclass(frozen=True)
class DriftConfig:
    """NVE energy-conservation runs (one per timestep) from one thermalised start."""

    timesteps_fs: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    duration_ps: float = 1.0  # simulated time of every NVE run
    temperature_K: float = 300.0
    thermalise_ps: float = 0.5  # Langevin NVT before the NVE runs (0: the input's momenta, else Maxwell–Boltzmann at 2·T)
    thermalise_timestep_fs: float = 2.0
    friction_per_ps: float = 5.0
    log_interval_fs: float = 5.0  # E_tot recorded about this often
    reference_timestep_fs: float = 1.0  # the headline drift (and the acceptance check) uses this timestep
    dtype: str | None = "float64"  # MDConfig.dtype; None: float64 iff jax_enable_x64
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class VDOSConfig:
    """Vibrational density of states from the mass-weighted VACF of an NVE run."""

    temperature_K: float = 300.0
    thermalise_ps: float = 0.5  # as DriftConfig.thermalise_ps
    timestep_fs: float = 2.0
    duration_ps: float = 4.0
    sample_every_fs: float = 4.0  # velocities stored this often (Nyquist 1/(2·dt) = 125 THz at 4 fs)
    max_lag_ps: float = 1.0  # VACF length; frequency resolution ≈ 1/max_lag (Hann window)
    friction_per_ps: float = 5.0  # thermalisation
    dtype: str | None = None
    seed: int = 1


def _remove_com_momentum(atoms):
    p = atoms.get_momenta()
    m = atoms.get_masses()
    atoms.set_momenta(p - m[:, None] * (p.sum(axis=0) / m.sum()))
    return atoms


def _initial_velocities(atoms, temperature_K: float, seed: int):
    """``atoms`` with its momenta, or (none set) Maxwell–Boltzmann momenta at 2·T: a crystal at its
    energy minimum shares kinetic energy equally with potential energy, so it settles near T
    within a vibrational period instead of at T/2 (Langevin then corrects the rest)."""
    start = atoms.copy()
    if not np.any(start.get_momenta()):
        from ase.md.velocitydistribution import thermalize_momenta

        thermalize_momenta(start, 2.0 * temperature_K, rng=np.random.default_rng(seed))
    return _remove_com_momentum(start)


def thermalise(potential, atoms, *, temperature_K: float, duration_ps: float, timestep_fs: float = 2.0,
               friction_per_ps: float = 5.0, seed: int = 0, dtype=None, progress: bool = False):
    """Langevin NVT with ``potential`` (jax-md) for ``duration_ps``, from the input's momenta or
    (none set) Maxwell–Boltzmann momenta at 2·T (:func:`_initial_velocities`); returns the final
    ase.Atoms with velocities (centre-of-mass momentum removed), ready for ``initial_velocities='atoms'``."""
    from mlpjax.md import MDConfig, simulate

    steps = max(1, int(round(duration_ps * 1000.0 / timestep_fs)))
    log_every = max(1, min(steps, 50))
    steps = int(np.ceil(steps / log_every) * log_every)
    cfg = MDConfig(ensemble="nvt", temperature_K=temperature_K, timestep_fs=timestep_fs, steps=steps, log_every=log_every,
                   chunk_steps=max(log_every, min(steps, 500)), friction_per_ps=friction_per_ps, seed=seed, dtype=dtype,
                   initial_velocities="atoms")
    result = simulate(potential, _initial_velocities(atoms, temperature_K, seed), cfg, progress=progress)
    return _remove_com_momentum(result.atoms.copy())


def _start(potential, atoms, *, temperature_K, thermalise_ps, timestep_fs, friction_per_ps, seed, dtype, progress):
    if thermalise_ps > 0:
        return thermalise(potential, atoms, temperature_K=temperature_K, duration_ps=thermalise_ps, timestep_fs=timestep_fs,
                          friction_per_ps=friction_per_ps, seed=seed, dtype=dtype, progress=progress)
    return _initial_velocities(atoms, temperature_K, seed)


# ------------------------------------------------------------------------- energy drift
class DriftRun(NamedTuple):
    timestep_fs: float
    steps: int
    time_ps: np.ndarray  # [n_records] ps
    e_tot_eV_per_atom: np.ndarray  # [n_records] eV/atom
    drift_eV_per_atom_per_ps: float  # slope of the linear fit of E_tot(t)/N
    drift_meV_per_atom_per_ps: float
    fluctuation_meV_per_atom: float  # standard deviation of E_tot/N about the linear fit
    max_deviation_meV_per_atom: float  # max |E_tot(t) − E_tot(0)| / N
    mean_temperature_K: float
    status: str  # classify_drift
    advice: str
    steps_per_s: float


class DriftReport(NamedTuple):
    runs: tuple  # DriftRun per timestep, in the config's order
    n_atoms: int
    temperature_K: float
    dtype: str
    fluctuation_exponent: float  # d log(fluctuation) / d log(dt); ≈ 2 for velocity Verlet on a smooth energy
    reference_timestep_fs: float

    @property
    def reference(self) -> "DriftRun | None":
        """The run at ``reference_timestep_fs`` (None if it was not run)."""
        for r in self.runs:
            if abs(r.timestep_fs - self.reference_timestep_fs) < 1e-9:
                return r
        return None


def drift_statistics(time_ps, e_tot_eV, n_atoms: int) -> dict:
    """Drift (linear-fit slope of E_tot/N, eV and meV/atom/ps), fluctuation about the fit and
    max |E_tot − E_tot(0)|/N (meV/atom) of a total-energy series, with its classification.

    time_ps: [n] ps; e_tot_eV: [n] eV (whole system).
    """
    t = np.asarray(time_ps, np.float64)
    e = np.asarray(e_tot_eV, np.float64) / float(n_atoms)
    if t.size < 2:
        raise ValueError("need at least two E_tot records to fit a drift")
    slope, intercept = np.polyfit(t - t[0], e - e[0], 1)
    resid = (e - e[0]) - (slope * (t - t[0]) + intercept)
    status, advice = classify_drift(1e3 * slope)
    return {
        "drift_eV_per_atom_per_ps": float(slope),
        "drift_meV_per_atom_per_ps": float(1e3 * slope),
        "fluctuation_meV_per_atom": float(1e3 * np.std(resid)),
        "max_deviation_meV_per_atom": float(1e3 * np.max(np.abs(e - e[0]))),
        "status": status,
        "advice": advice,
    }


def energy_drift(potential, atoms, config: DriftConfig = DriftConfig(), *, progress: bool = False) -> DriftReport:
    """NVE energy conservation of ``potential`` (jax-md velocity Verlet) at each of ``config.timesteps_fs``.

    ``atoms`` is the MD cell (see :func:`md_supercell`). It is thermalised once by Langevin
    NVT (``thermalise_ps``; 0: the input's momenta, else Maxwell–Boltzmann at
    ``temperature_K``); every NVE run starts from that same state and lasts
    ``duration_ps``. Each run's drift is the slope of a linear fit of E_tot(t)/N,
    classified by :func:`classify_drift`.
    """
    from mlpjax.md import MDConfig, simulate

    n = len(atoms)
    start = _start(potential, atoms, temperature_K=config.temperature_K, thermalise_ps=config.thermalise_ps,
                   timestep_fs=config.thermalise_timestep_fs, friction_per_ps=config.friction_per_ps, seed=config.seed,
                   dtype=config.dtype, progress=progress)
    runs = []
    dtype_name = None
    for dt in config.timesteps_fs:
        log_every = max(1, int(round(config.log_interval_fs / dt)))
        steps = int(np.ceil(max(1, round(config.duration_ps * 1000.0 / dt)) / log_every) * log_every)
        cfg = MDConfig(ensemble="nve", temperature_K=config.temperature_K, timestep_fs=float(dt), steps=steps, log_every=log_every,
                       chunk_steps=max(log_every, min(steps, 1000)), initial_velocities="atoms", dtype=config.dtype, seed=config.seed)
        dtype_name = np.dtype(cfg.resolved_dtype()).name
        res = simulate(potential, start, cfg, progress=progress)
        th = res.thermo
        stats = drift_statistics(th["time_ps"], th["E_tot_eV"], n)
        runs.append(DriftRun(
            timestep_fs=float(dt), steps=steps, time_ps=np.asarray(th["time_ps"], np.float64),
            e_tot_eV_per_atom=np.asarray(th["E_tot_eV"], np.float64) / n, mean_temperature_K=float(np.mean(th["T_K"])),
            steps_per_s=float(res.timings["steps_per_s"]), **stats,
        ))
    dts = np.array([r.timestep_fs for r in runs])
    fl = np.array([r.fluctuation_meV_per_atom for r in runs])
    ok = fl > 0
    exponent = float(np.polyfit(np.log(dts[ok]), np.log(fl[ok]), 1)[0]) if ok.sum() >= 2 else float("nan")
    return DriftReport(runs=tuple(runs), n_atoms=n, temperature_K=float(config.temperature_K), dtype=str(dtype_name),
                       fluctuation_exponent=exponent, reference_timestep_fs=float(config.reference_timestep_fs))


# ------------------------------------------------------------------------- VDOS
class VDOS(NamedTuple):
    frequency_THz: np.ndarray  # [n_freq] THz, ν ≥ 0
    dos: np.ndarray  # [n_freq] 1/THz, normalised so that ∫ dos dν = 1
    peak_THz: float  # highest maximum at ν > 0 (nan if none)
    mean_frequency_THz: float  # ∫ ν dos dν
    temperature_K: float  # mean kinetic temperature of the run
    n_frames: int


def vdos_from_velocities(velocities, masses, sample_dt_fs: float, *, max_lag_ps: float | None = None, temperature_K: float = float("nan")) -> VDOS:
    """VDOS from velocities [T, N, 3] sampled every ``sample_dt_fs``: the mass-weighted, normalised
    VACF (:func:`mlpjax.analysis.vacf`, every frame an origin) Hann-windowed and cosine-transformed
    (:func:`mlpjax.analysis.vibrational_spectrum`), clipped at 0 and normalised to unit area."""
    from mlpjax.analysis import spectrum_peak, vacf, vibrational_spectrum

    v = np.asarray(velocities, np.float64)
    max_lag = None if max_lag_ps is None else min(v.shape[0] - 1, int(round(max_lag_ps * 1000.0 / sample_dt_fs)))
    c = vacf(v, masses=np.asarray(masses, np.float64), normalize=True, max_lag=max_lag)
    spec = vibrational_spectrum(c, sample_dt_fs)
    nu = spec.frequency_THz
    g = np.clip(spec.intensity, 0.0, None)
    area = float(np.trapezoid(g, nu))
    g = g / area if area > 0 else g
    peak = spectrum_peak(spec)
    return VDOS(frequency_THz=nu, dos=g, peak_THz=float("nan") if peak is None else float(peak),
                mean_frequency_THz=float(np.trapezoid(nu * g, nu)), temperature_K=float(temperature_K), n_frames=int(v.shape[0]))


def vdos_overlap(a: VDOS, b: VDOS) -> float:
    """∫ min(g_a, g_b) dν on a common grid: 1 for identical spectra, 0 for disjoint ones."""
    nu_max = min(a.frequency_THz[-1], b.frequency_THz[-1])
    nu = np.linspace(0.0, nu_max, 4000)
    ga = np.interp(nu, a.frequency_THz, a.dos)
    gb = np.interp(nu, b.frequency_THz, b.dos)
    return float(np.trapezoid(np.minimum(ga, gb), nu))


def vibrational_dos(potential, atoms, config: VDOSConfig = VDOSConfig(), *, progress: bool = False) -> VDOS:
    """VDOS of ``potential`` from an NVE run in jax-md (after Langevin thermalisation)."""
    import tempfile

    import ase.io

    from mlpjax.md import MDConfig, simulate

    start = _start(potential, atoms, temperature_K=config.temperature_K, thermalise_ps=config.thermalise_ps,
                   timestep_fs=config.timestep_fs, friction_per_ps=config.friction_per_ps, seed=config.seed,
                   dtype=config.dtype, progress=progress)
    every = max(1, int(round(config.sample_every_fs / config.timestep_fs)))
    steps = int(np.ceil(max(1, round(config.duration_ps * 1000.0 / config.timestep_fs)) / every) * every)
    cfg = MDConfig(ensemble="nve", temperature_K=config.temperature_K, timestep_fs=config.timestep_fs, steps=steps,
                   log_every=every, traj_every=every, chunk_steps=max(every, min(steps, 1000)), initial_velocities="atoms",
                   dtype=config.dtype, traj_forces=False, seed=config.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "nve.extxyz")
        res = simulate(potential, start, cfg, trajectory=path, progress=progress)
        frames = ase.io.read(path, ":")
    v = np.stack([f.get_velocities() for f in frames])
    return vdos_from_velocities(v, start.get_masses(), every * config.timestep_fs, max_lag_ps=config.max_lag_ps,
                                temperature_K=float(np.mean(res.thermo["T_K"])))


def reference_vibrational_dos(calculator, atoms, config: VDOSConfig = VDOSConfig()) -> VDOS:
    """VDOS of a reference ASE calculator, the same protocol as :func:`vibrational_dos` in ASE MD
    (Langevin thermalisation, then velocity Verlet). Costs ~(thermalise + duration)/timestep force calls."""
    from ase.md.langevin import Langevin
    from ase.md.verlet import VelocityVerlet

    a = _initial_velocities(atoms, config.temperature_K, config.seed)
    a.calc = calculator
    # ASE's integrators take time in ASE units; converted with mlpjax's CODATA-2018 FS/PS, which
    # differ from ase.units (CODATA 2014) by < 1e-7 relatively: far below anything reported here.
    dt = config.timestep_fs * FS
    rng = np.random.default_rng(config.seed)
    n_therm = int(round(config.thermalise_ps * 1000.0 / config.timestep_fs))
    if n_therm:
        Langevin(a, dt, temperature_K=config.temperature_K, friction=config.friction_per_ps / PS,
                 fixcm=False, rng=rng).run(n_therm)
        _remove_com_momentum(a)
    every = max(1, int(round(config.sample_every_fs / config.timestep_fs)))
    steps = int(np.ceil(max(1, round(config.duration_ps * 1000.0 / config.timestep_fs)) / every) * every)
    vel, temps = [a.get_velocities().copy()], [a.get_temperature()]
    dyn = VelocityVerlet(a, dt)

    def grab():
        vel.append(a.get_velocities().copy())
        temps.append(a.get_temperature())

    dyn.attach(grab, interval=every)
    dyn.run(steps)
    return vdos_from_velocities(np.stack(vel[: steps // every + 1]), a.get_masses(), every * config.timestep_fs,
                                max_lag_ps=config.max_lag_ps, temperature_K=float(np.mean(temps)))
