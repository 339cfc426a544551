"""Reference data sets that mlpjax makes itself (no download): fcc Cu labelled by
ASE's EMT calculator.

EMT (effective medium theory; Jacobsen, Stoltze & Nørskov 1996) is a cheap,
smooth many-body potential for fcc metals. Its Cu is a realistic stand-in for DFT
labels in the quickstart, the tests and the benchmarks: the same workflow
(sample → label → fit → validate → MD) with a reference that costs milliseconds.
"""

from __future__ import annotations

import numpy as np

from mlpjax.data.configuration import Configuration

EMT_CU_LATTICE = 3.59  # Å, close to EMT's own fcc Cu equilibrium (3.590 Å)
# Liquid samples of emt_cu (and the liquid-diffusion benchmark, benchmarks/md_cu.py diffusion):
# a fixed volume per atom and the temperatures sampled after melting at 2,500 K.
# 13.2 Å³/atom is liquid Cu's measured density at its melting point (8.0 g/cm³). EMT's liquid
# there (108 atoms, measured): 1,750 K is a stable liquid (+3.4 GPa, T steady in NVE, D ≈ 0.4
# Å²/ps); at 1,000–1,500 K it is supercooled and still relaxing after 4 ps (T drifts by up to
# 200 K in NVE; D at 1,000 K 0.07–0.12 Å²/ps between melts; −1.7 GPa at 1,000 K). At 12.8
# Å³/atom (about EMT's zero-pressure density) the 1,000 K liquid recrystallises within a few ps.
EMT_CU_LIQUID_VOLUME = 13.2  # Å³/atom (11.57 in the crystal at 0 K)
EMT_CU_LIQUID_TEMPERATURES = (1750.0, 1000.0)  # K, sampled in this order after the melt


def _label(atoms, *, source: str, frame: int) -> Configuration:
    from ase.calculators.emt import EMT

    atoms = atoms.copy()
    atoms.calc = EMT()
    c = Configuration.from_atoms(atoms, source=source, frame=frame)
    c.energy = float(atoms.get_potential_energy())  # eV
    c.forces = np.asarray(atoms.get_forces())  # [n, 3] eV/Å
    s = atoms.get_stress(voigt=False)  # [3, 3] eV/Å^3, ASE convention
    c.stress = np.asarray(s)
    return c


def emt_cu(
    *,
    temperatures_K: tuple[float, ...] = (300.0, 500.0, 700.0),
    repeats: tuple[int, ...] = (2, 3),
    md_frames_per_run: int = 30,
    md_stride: int = 10,
    n_rattled: int = 40,
    n_strained: int = 40,
    rattle_A: float = 0.08,
    max_strain: float = 0.04,
    timestep_fs: float = 2.0,
    liquid_temperatures_K: tuple[float, ...] = EMT_CU_LIQUID_TEMPERATURES,
    liquid_volume_per_atom_A3: float = EMT_CU_LIQUID_VOLUME,
    liquid_frames_per_run: int = 20,
    liquid_repeat: int = 3,
    melt_temperature_K: float = 2500.0,
    melt_steps: int = 750,
    liquid_equilibration_steps: int = 300,
    seed: int = 0,
    progress: bool = False,
) -> list[Configuration]:
    """fcc Cu configurations of 32 (2×2×2) and 108 (3×3×3 cubic cells) atoms labelled by EMT.

    The set mixes four kinds of sample, as a DFT data set for a metal would:
      * Langevin MD of the crystal at each temperature and cell size (``md_frames_per_run``
        frames every ``md_stride`` steps after a short equilibration);
      * rattled perfect cells (Gaussian displacements of ``rattle_A`` Å);
      * randomly strained cells (symmetric strain with components up to
        ``max_strain``), lightly rattled, which teach the stress;
      * liquid: ``liquid_repeat``³ cubic cells at ``liquid_volume_per_atom_A3`` melted by
        Langevin MD at ``melt_temperature_K`` (``melt_steps``), then Langevin MD at each of
        ``liquid_temperatures_K`` (``liquid_frames_per_run`` frames every ``md_stride``
        steps after ``liquid_equilibration_steps``), so that liquid MD (diffusion) stays inside the training
        distribution. ``liquid_temperatures_K=()`` leaves the liquid out.

    Returns a list of labelled :class:`Configuration` with ``source`` naming the
    kind of sample (``"emt:md:500K:108"``, ...). Deterministic for a given seed.
    """
    from ase import units
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import thermalize_momenta

    rng = np.random.default_rng(seed)
    out: list[Configuration] = []
    prim = bulk("Cu", "fcc", a=EMT_CU_LATTICE, cubic=True)
    iterator = [(T, r) for T in temperatures_K for r in repeats]
    for T, r in iterator:
        atoms = prim.repeat((r, r, r))
        atoms.calc = EMT()
        thermalize_momenta(atoms, T, rng=rng)
        dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=T, friction=0.02, fixcm=False, rng=rng)
        dyn.run(100)  # equilibrate
        for k in range(md_frames_per_run):
            dyn.run(md_stride)
            out.append(_label(atoms, source=f"emt:md:{T:g}K:{len(atoms)}", frame=k))
    for k in range(n_rattled):
        r = repeats[k % len(repeats)]
        atoms = prim.repeat((r, r, r))
        atoms.positions += rng.normal(0.0, rattle_A, atoms.positions.shape)
        out.append(_label(atoms, source=f"emt:rattled:{len(atoms)}", frame=k))
    for k in range(n_strained):
        r = repeats[k % len(repeats)]
        atoms = prim.repeat((r, r, r))
        e = rng.uniform(-max_strain, max_strain, (3, 3))
        e = 0.5 * (e + e.T)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + e), scale_atoms=True)
        atoms.positions += rng.normal(0.0, 0.5 * rattle_A, atoms.positions.shape)
        out.append(_label(atoms, source=f"emt:strained:{len(atoms)}", frame=k))
    if liquid_temperatures_K:
        a = (4.0 * liquid_volume_per_atom_A3) ** (1.0 / 3.0)
        atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat((liquid_repeat,) * 3)
        atoms.calc = EMT()
        thermalize_momenta(atoms, melt_temperature_K, rng=rng)
        dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=melt_temperature_K, friction=0.02, fixcm=False, rng=rng)
        dyn.run(melt_steps)
        for T in liquid_temperatures_K:
            dyn.set_temperature(temperature_K=T)
            dyn.run(liquid_equilibration_steps)
            for k in range(liquid_frames_per_run):
                dyn.run(md_stride)
                out.append(_label(atoms, source=f"emt:liquid:{T:g}K:{len(atoms)}", frame=k))
    return out
