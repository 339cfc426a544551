"""Settings of an MD run (:class:`MDConfig`) and the per-run thermostat targets (:class:`Targets`).

Units: eV, Å, amu; time in ASE units internally (Å·sqrt(amu/eV) ≈ 10.18 fs); the config takes
femtoseconds, picoseconds, kelvin and GPa and converts with mlpjax's one set of constants
(:mod:`mlpjax.units`, CODATA 2018): kT = k_B T, dt = timestep_fs · FS, 1 eV/Å³ = 160.2 GPa.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mlpjax import units as _units

__all__ = ["MDConfig", "ENSEMBLES", "EV_PER_A3_IN_GPA", "Targets", "dynamics_settings"]

ENSEMBLES = ("nve", "nvt", "nvt_nh", "npt")
EV_PER_A3_IN_GPA = _units.GPA_PER_EV_A3  # 160.2176… GPa per eV/Å³


@dataclasses.dataclass(frozen=True)
class MDConfig:
    """Settings of one MD run (units in the field names)."""

    # "nve" (velocity Verlet) | "nvt" (BAOAB Langevin, jax_md.simulate.nvt_langevin) |
    # "nvt_nh" (Nosé–Hoover chain, jax_md.simulate.nvt_nose_hoover) |
    # "npt" (isotropic MTK Nosé–Hoover barostat + thermostat chains: jax-md's npt_nose_hoover state and
    #  chains, with the fractional-coordinate position update of md.integrators.npt_mtk_apply)
    ensemble: str = "nve"
    temperature_K: float = 300.0  # initial Maxwell–Boltzmann temperature; NVT/NPT target (start of a ramp)
    temperature_final_K: float | None = None  # NVT/NPT: target ramps linearly to this over the run
    pressure_GPa: float = 0.0  # NPT target pressure (start of a ramp)
    pressure_final_GPa: float | None = None  # NPT: target ramps linearly to this over the run
    thermostat_tau_fs: float | None = None  # Nosé–Hoover thermostat time scale (None: 100 timesteps, jax-md's default)
    barostat_tau_fs: float | None = None  # Nosé–Hoover barostat time scale (None: 1000 timesteps, jax-md's default)
    chain_length: int = 5  # Nosé–Hoover chain length
    # periodic cells narrower than 2 (cutoff + skin): simulate them exactly through an internal
    # supercell of their periodic images (see md.system.build_system); False = raise instead
    multi_image: bool = True
    timestep_fs: float = 1.0
    steps: int = 1000
    chunk_steps: int = 100  # steps per jitted chunk (rounded up to a multiple of the record interval)
    log_every: int = 10  # thermo row every this many steps
    traj_every: int = 100  # trajectory frame every this many steps (when a trajectory path is given)
    skin: float = 0.5  # Å, Verlet skin: pairs within cutoff + skin are listed
    capacity_multiplier: float = 1.25  # neighbour-list head room at allocation
    friction_per_ps: float = 5.0  # Langevin friction γ in 1/ps
    seed: int = 0
    max_temperature_factor: float = 10.0  # blow-up if T > max(factor · temperature_K, floor)
    max_temperature_floor_K: float = 1000.0
    min_distance: float | None = None  # Å; blow-up if two atoms get closer (None: no check)
    dtype: str | None = None  # "float32" | "float64"; None: float64 iff jax_enable_x64
    traj_forces: bool = True  # store forces in trajectory frames
    initial_velocities: str = "maxwell-boltzmann"  # | "atoms" (use the input's momenta)
    max_reallocations_per_chunk: int = 5
    # ensembles (mlpjax.ensemble): the members' force deviation (eV/Å, per atom, x the ensemble's calibration)
    # is recorded with every record; above this the run stops (or, with uncertainty_action="mark", the
    # frame is marked) — the MD uncertainty check that also drives active learning (None: no check)
    max_force_std: float | None = None
    uncertainty_action: str = "stop"  # "stop" | "mark"

    def __post_init__(self):
        if self.ensemble not in ENSEMBLES:
            raise ValueError(f"ensemble must be one of {', '.join(ENSEMBLES)}, got {self.ensemble!r}")
        if self.temperature_final_K is not None and not self.temperature_final_K >= 0:
            raise ValueError(f"temperature_final_K must be >= 0, got {self.temperature_final_K}")
        for name in ("thermostat_tau_fs", "barostat_tau_fs"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be positive, got {v}")
        if self.chain_length < 1:
            raise ValueError(f"chain_length must be >= 1, got {self.chain_length}")
        for name in ("steps", "chunk_steps", "log_every", "traj_every"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < (0 if name == "steps" else 1):
                raise ValueError(f"{name} must be a {'non-negative' if name == 'steps' else 'positive'} integer, got {v!r}")
        if not self.timestep_fs > 0:
            raise ValueError(f"timestep_fs must be positive, got {self.timestep_fs}")
        if not self.temperature_K >= 0:
            raise ValueError(f"temperature_K must be >= 0, got {self.temperature_K}")
        if self.ensemble == "nvt" and not self.friction_per_ps > 0:
            raise ValueError(f"friction_per_ps must be positive for NVT, got {self.friction_per_ps}")
        if not self.skin >= 0:
            raise ValueError(f"skin must be >= 0 Å, got {self.skin}")
        if not self.capacity_multiplier >= 1.0:
            raise ValueError(f"capacity_multiplier must be >= 1, got {self.capacity_multiplier}")
        if self.dtype not in (None, "float32", "float64"):
            raise ValueError(f"dtype must be 'float32', 'float64' or None, got {self.dtype!r}")
        if self.max_force_std is not None and not self.max_force_std > 0:
            raise ValueError(f"max_force_std must be > 0 eV/Å, got {self.max_force_std}")
        if self.uncertainty_action not in ("stop", "mark"):
            raise ValueError(f"uncertainty_action must be 'stop' or 'mark', got {self.uncertainty_action!r}")
        if self.initial_velocities not in ("maxwell-boltzmann", "atoms"):
            raise ValueError(f"initial_velocities must be 'maxwell-boltzmann' or 'atoms', got {self.initial_velocities!r}")

    def replace(self, **changes) -> "MDConfig":
        return dataclasses.replace(self, **changes)

    @property
    def dt(self) -> float:
        """Timestep in ASE time units."""
        return self.timestep_fs * _units.FS

    @property
    def kT(self) -> float:
        """k_B · temperature_K in eV."""
        return _units.kT(self.temperature_K)

    @property
    def gamma(self) -> float:
        """Langevin friction in 1/(ASE time)."""
        return self.friction_per_ps / _units.PS

    @property
    def temperature_limit_K(self) -> float:
        t_max = max(self.temperature_K, self.temperature_final_K or 0.0)
        return max(self.max_temperature_factor * t_max, self.max_temperature_floor_K)

    @property
    def has_ramp(self) -> bool:
        return self.temperature_final_K is not None or self.pressure_final_GPa is not None

    def ramp_fraction(self, step):
        """How far ``step`` is along the run's ramps: step / steps (any array or number)."""
        return step / max(self.steps, 1)

    def kT_at(self, step):
        """Target kT (eV) at ``step`` (linear ramp from temperature_K to temperature_final_K over ``steps``)."""
        return Targets.of([self]).kT_at(self, step)[0]

    def pressure_at(self, step):
        """Target pressure (eV/Å³) at ``step`` (linear ramp, like :meth:`kT_at`)."""
        p1 = self.pressure_GPa if self.pressure_final_GPa is None else self.pressure_final_GPa
        return (self.pressure_GPa + (p1 - self.pressure_GPa) * self.ramp_fraction(step)) * _units.GPA_EV_PER_A3

    def resolved_dtype(self):
        x64 = bool(jax.config.jax_enable_x64)
        if self.dtype is None:
            return jnp.float64 if x64 else jnp.float32
        if self.dtype == "float64" and not x64:
            raise ValueError(
                "dtype='float64' needs 64-bit JAX: set JAX_ENABLE_X64=1 or call "
                "jax.config.update('jax_enable_x64', True) before creating arrays"
            )
        return jnp.dtype(self.dtype).type


class Targets(NamedTuple):
    """Thermostat targets of R runs, a traced argument of the compiled engine (so runs at other
    temperatures share one compilation).

    kT_k(step) = k_B (T0_k + ΔT_k · step / steps), a linear ramp per run."""

    temperature_K: jax.Array  # [R] K, target (and Maxwell–Boltzmann) temperature at step 0
    ramp_K: jax.Array  # [R] K, final − initial target temperature (0 without a ramp)

    @classmethod
    def of(cls, configs: Sequence[MDConfig], dtype=None) -> "Targets":
        """The targets of one config per run (differences taken in float64, then cast)."""
        t0 = np.array([c.temperature_K for c in configs], np.float64)
        t1 = np.array([c.temperature_K if c.temperature_final_K is None else c.temperature_final_K for c in configs],
                      np.float64)
        dtype = dtype or (jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
        return cls(jnp.asarray(t0, dtype), jnp.asarray(t1 - t0, dtype))

    def kT_at(self, config: MDConfig, step):
        """[R] eV at ``step`` (a scalar, traced or not)."""
        return _units.BOLTZMANN_EV_PER_K * (self.temperature_K + self.ramp_K * config.ramp_fraction(step))


def dynamics_settings(config: MDConfig) -> MDConfig:
    """The part of a config compiled code depends on (the key of the engine cache): everything
    but the seed, the starting temperature(s) (traced :class:`Targets`), the chunking, the
    output and blow-up settings; the run length only through ramps."""
    return dataclasses.replace(
        config, seed=0, initial_velocities="maxwell-boltzmann", chunk_steps=1, log_every=1, traj_every=1,
        traj_forces=True, max_force_std=None, uncertainty_action="stop", max_temperature_factor=1.0, max_temperature_floor_K=0.0, max_reallocations_per_chunk=0,
        temperature_K=0.0, temperature_final_K=None if config.temperature_final_K is None else 0.0,
        steps=config.steps if config.has_ramp else 0)
