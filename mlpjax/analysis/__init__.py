"""Trajectory analysis: structure (g(r), coordination, cutoff estimates, bond-orientational
order and solid-like atoms) and dynamics (unwrapping, MSD and diffusion, VACF and
vibrational spectrum).

* :mod:`~mlpjax.analysis.structure` — g(r), partial g_ab(r), peaks, coordination, cutoffs;
* :mod:`~mlpjax.analysis.order` — Steinhardt q_l and ten Wolde's solid-like atoms;
* :mod:`~mlpjax.analysis.dynamics` — unwrap, MSD, diffusion coefficients, VACF, Green–Kubo;
* :mod:`~mlpjax.analysis.spectrum` — vibrational spectrum from a VACF;
* :mod:`~mlpjax.analysis.trajectory` — frames to arrays (positions, cells, velocities in Å/ps);
* :mod:`~mlpjax.analysis.report` — :func:`analyze_trajectory` and :func:`write_analysis`.

Every function is a pure function of host-side NumPy arrays (or of a sequence of frames,
ASE ``Atoms`` or mlpjax ``Configuration``) and returns NumPy arrays or small NamedTuples.
Nothing here is jitted: the work is histogramming and FFTs over whole trajectories, which
NumPy does at memory bandwidth, while a jitted version would recompile for every new
trajectory length and copy the trajectory to the device and back.

Units: Å, ps, amu (velocities in Å/ps unless stated); diffusion coefficients are
returned in Å²/ps and cm²/s (1 Å²/ps = 10⁻⁴ cm²/s).
"""

from mlpjax.analysis.dynamics import (
    A2_PER_PS_TO_CM2_PER_S,
    Diffusion,
    diffusion_coefficient,
    green_kubo_diffusion,
    msd,
    remove_com_drift,
    unwrap,
    vacf,
)
from mlpjax.analysis.order import BondOrder, bond_order, solid_fraction
from mlpjax.analysis.report import analyze_trajectory, write_analysis
from mlpjax.analysis.spectrum import THZ_TO_CM1, Spectrum, spectrum_peak, vibrational_spectrum
from mlpjax.analysis.structure import (
    RDF,
    RDFPeaks,
    coordination_number,
    cutoff_from_rdf,
    first_minimum,
    partial_rdf,
    rdf,
    rdf_peaks,
)

__all__ = [
    "A2_PER_PS_TO_CM2_PER_S", "THZ_TO_CM1",
    # structure
    "RDF", "rdf", "partial_rdf", "first_minimum", "coordination_number", "RDFPeaks", "rdf_peaks", "cutoff_from_rdf",
    # order
    "BondOrder", "bond_order", "solid_fraction",
    # dynamics
    "unwrap", "remove_com_drift", "msd", "Diffusion", "diffusion_coefficient", "vacf", "green_kubo_diffusion",
    # spectrum
    "Spectrum", "vibrational_spectrum", "spectrum_peak",
    # report
    "analyze_trajectory", "write_analysis",
]
