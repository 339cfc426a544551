"""Classical pair potentials, Morse and Lennard-Jones, as registered models ("morse", "lj"), and
Morse with a cubic B-spline correction ("morse_spline", :class:`MorseSpline`).

A handful of physically meaningful parameters per species pair, for fitting a simulation to an
observable (e.g. a radial distribution function) by differentiable simulation, or as a cheap
reference model:

    Morse:          φ(r) = D [e^{−2α(r−r0)} − 2 e^{−α(r−r0)}]       (minimum −D at r0)
    Lennard-Jones:  φ(r) = 4ε [(σ/r)^12 − (σ/r)^6]                   (minimum −ε at 2^{1/6} σ)

    E = Σ_{pairs i<j} φ_{s_i s_j}(r_ij) S(r_ij),   per atom: e_i = ½ Σ_{edges j→i} φ S

The switch S (:func:`switch`) is the quintic "smoothstep" s³(10 − 15s + 6s²) with
s = (r_c − r) / w clipped to [0, 1]: exactly 1 below r_c − w (the potential there is the
textbook one), exactly 0 from the cutoff r_c on, and its first and second derivatives vanish at
both ends, so energy, forces and force derivatives are continuous as atoms cross the cutoff.
It is ASE's ``ase.calculators.morse.fcut`` (JuLIP's cutoff): ASE's ``MorsePotential(epsilon=D,
rho0=α r0, r0=r0, rcut1=(r_c − w)/r0, rcut2=r_c/r0)`` is this Morse model exactly. No envelope
of :mod:`mlpjax.models.common` fits: they act on all of [0, r_c] (cosine, polynomial) and the
cosine's second derivative does not vanish. There is no energy-shift option (ASE
``LennardJones(smooth=False)`` subtracts φ(r_c) from every pair): with the switch the energy is
already continuous to second order, and a shift would only make the energy of every pair depend
on the cutoff.

**Parameters** live in the params pytree under physical names, one [S, S] array per quantity
(S = number of species, index = species index of the potential's species table):
``params/D`` (eV), ``params/alpha`` (1/Å), ``params/r0`` (Å) for Morse; ``params/epsilon`` (eV),
``params/sigma`` (Å) for LJ. They are initialised to the config's values for every pair and
used as (P + Pᵀ)/2, so pairs (a, b) and (b, a) share one value. The gradients with respect to
P_ab and P_ba are equal, so an elementwise optimiser (SGD, Adam, ...) started from a symmetric
array keeps it symmetric and the printed values stay the ones used. They are stored raw (no
log/softplus reparameterisation), so the pytree reads in eV and Å and a freeze pattern such as
``params/r0`` means what it says; nothing stops a fit from making D, α or ε negative or σ change
sign (σ enters only as σ^6), so a fitter that needs positivity should project or reparameterise
outside the model. Inside ``apply`` the parameters are cast to the edge vectors' dtype.

**A physical potential.** A :class:`mlpjax.Potential` turns the model's per-atom output o_i into
eV as E0[s_i] + shift + scale · o_i; with ``energy_scale`` 1, ``energy_shift`` 0 and reference
energies 0 its energy is the pair sum above, in eV. :func:`pair_potential` builds exactly that::

    from mlpjax.models.pair import pair_potential
    pot = pair_potential("morse", species=["Cu"], cutoff=6.0)              # Girifalco-Weizer Cu
    pot = pair_potential("lj", species=[18], cutoff=8.5, epsilon_eV=0.0104, sigma_A=3.40)  # Ar
    atoms.calc = pot.calculator()                     # or mlpjax.md.simulate(pot, atoms, cfg)
    pot.params["params"]["D"]                         # [S, S] eV

**Training.** ``mlpjax train --model morse`` (or ``lj``) works like any model, but the trainer
normalises every model on the data (there is no per-model hook to skip it): E0 by least squares,
``energy_shift`` = mean residual energy per atom, ``energy_scale`` = force RMS, all three fixed
while the parameters train. The trained potential is then E0 + shift + scale · Σ ½ φ S: a pair
potential whose well depths are scale · D (scale · ε) plus a constant per atom, so the parameters
in its pytree are no longer in eV. :func:`to_physical` folds the normalisation into the parameters
(D, ε multiplied by the scale; E0 + shift as reference energies), giving the same energies and
forces with scale 1 and shift 0. A neural network's output starts near zero, but the pair sum
has a mean of its own (the cohesive energy: −2 to −3 eV/atom for the Cu defaults at 4.5-6 Å
cutoffs) that the fitted E0
already absorbed; the energy loss then fights the force loss, and the energy error stays of that
size. Fit pair potentials on forces (``energy_weight: 0``) or by differentiable simulation. Measured
on 26 EMT Cu cells (32 and 108 atoms; validation on 5 more), from the Cu defaults: forces only,
learning rate 0.01, 150 epochs, force MAE 107 → 44 meV/Å; energies and forces with the default
settings, 30 epochs, force MAE 107 → 141 meV/Å and energy MAE 1.8 → 1.4 eV/atom.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mlpjax.models.common import EdgeModel, safe_norm


def switch(r: jax.Array, cutoff: float, width: float) -> jax.Array:
    """The quintic smoothstep switch S(r): 1 for r ≤ cutoff − width, 0 for r ≥ cutoff, C² (first
    and second derivatives vanish at both ends); ASE's ``ase.calculators.morse.fcut``.

    Args:
      r: [n_edges] Å.
      cutoff, width: Å, 0 < width ≤ cutoff.
    Returns: [n_edges], dimensionless.
    """
    s = jnp.clip((cutoff - r) / width, 0.0, 1.0)  # 1 at cutoff − width and inside, 0 at the cutoff and beyond
    return s**3 * (10.0 - 15.0 * s + 6.0 * s**2)  # exactly 1 at s = 1 and exactly 0 at s = 0


def _check_switch_width(width: float, cutoff: float, model: str) -> None:
    if not width > 0:
        raise ValueError(f"{model} switch_width_A must be positive (a hard cutoff makes forces jump), got {width}")
    if width > cutoff:
        raise ValueError(f"{model} switch_width_A {width} Å exceeds the cutoff {cutoff} Å: use a width ≤ the cutoff "
                         f"(the pair energy is switched off between cutoff − width and the cutoff)")


def _check_positive(config, names: Sequence[str]) -> None:
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise ValueError(f"{type(config).__name__}.{name} must be positive, got {value}")


@dataclasses.dataclass(frozen=True)
class MorseConfig:
    """Morse pair potential (the YAML ``model_config:`` block maps 1:1 onto these): the initial
    value of every species pair's parameters, and the switch.

    Defaults: Cu of Girifalco & Weizer, Phys. Rev. 114, 687 (1959): D = 0.3429 eV,
    α = 1.3588 1/Å, r0 = 2.866 Å.
    """

    D_eV: float = 0.3429  # well depth D
    alpha_per_A: float = 1.3588  # inverse width α
    r0_A: float = 2.866  # position of the minimum r0
    switch_width_A: float = 1.0  # the switch takes the energy from 1× at cutoff − width to 0 at the cutoff

    def __post_init__(self):
        _check_positive(self, ("D_eV", "alpha_per_A", "r0_A", "switch_width_A"))


@dataclasses.dataclass(frozen=True)
class LJConfig:
    """Lennard-Jones pair potential (the YAML ``model_config:`` block maps 1:1 onto these): the
    initial value of every species pair's parameters, and the switch.

    Defaults: Cu of Halicioglu & Pound, phys. stat. sol. (a) 30, 619 (1975): ε = 0.4093 eV,
    σ = 2.338 Å.
    """

    epsilon_eV: float = 0.4093  # well depth ε
    sigma_A: float = 2.338  # zero crossing σ (minimum at 2^{1/6} σ)
    switch_width_A: float = 1.0  # the switch takes the energy from 1× at cutoff − width to 0 at the cutoff

    def __post_init__(self):
        _check_positive(self, ("epsilon_eV", "sigma_A", "switch_width_A"))


@dataclasses.dataclass(frozen=True)
class MorseSplineConfig:
    """Morse plus a cubic B-spline correction (the YAML ``model_config:`` block maps 1:1 onto
    these): the Morse part's initial values (Girifalco-Weizer Cu, as :class:`MorseConfig`), the
    switch, and the correction's knots. The correction starts at 0 (the potential starts as the
    Morse one).

    ``knots`` basis functions B((r − r_k)/h) centred at r_k = ``knot_min_A`` + k h, k = 0 … K−1,
    h = (``knot_max_A`` − ``knot_min_A``)/(K − 1); ``knot_max_A`` ``None`` is cutoff − switch
    width. Each B has support |r − r_k| < 2h, so the correction vanishes below knot_min − 2h
    (the core stays Morse) and the switch takes it to 0 at the cutoff.
    """

    D_eV: float = 0.3429
    alpha_per_A: float = 1.3588
    r0_A: float = 2.866
    switch_width_A: float = 1.0
    knots: int = 12  # K, number of B-spline coefficients per species pair
    knot_min_A: float = 2.0  # first knot centre r_0 (Å); the correction is 0 below r_0 − 2h
    knot_max_A: float | None = None  # last knot centre (Å); None: cutoff − switch_width_A

    def __post_init__(self):
        _check_positive(self, ("D_eV", "alpha_per_A", "r0_A", "switch_width_A", "knot_min_A"))
        if self.knots < 2:
            raise ValueError(f"MorseSplineConfig.knots must be >= 2, got {self.knots}")
        if self.knot_max_A is not None and not self.knot_max_A > self.knot_min_A:
            raise ValueError(f"MorseSplineConfig.knot_max_A ({self.knot_max_A} Å) must exceed knot_min_A "
                             f"({self.knot_min_A} Å)")


def cubic_bspline(x: jax.Array) -> jax.Array:
    """The uniform cubic B-spline B(x) (support |x| < 2, B(0) = 2/3, Σ_k B(x − k) = 1, C²)."""
    a = jnp.abs(x)
    inner = 2.0 / 3.0 - a**2 + 0.5 * a**3  # |x| < 1
    outer = (2.0 - jnp.minimum(a, 2.0)) ** 3 / 6.0  # 1 ≤ |x| < 2; 0 beyond
    return jnp.where(a < 1.0, inner, outer)


class _PairModel(EdgeModel):
    """Per-atom energies ½ Σ_{edges j→i} φ(r) S(r) from per-species-pair parameters."""

    # parameter name -> config field of its initial value; subclasses set it
    _PARAMETERS: ClassVar[tuple[tuple[str, str], ...]] = ()

    def _phi(self, r, p):
        """φ(r) [n_edges] eV from edge lengths r [n_edges] Å and per-edge parameters p[name] [n_edges]."""
        raise NotImplementedError

    def _tables(self, s, dtype, pair_s, pair_r) -> dict:
        """Per-edge parameters beyond the [S, S] scalars of ``_PARAMETERS`` (none here)."""
        return {}

    @nn.compact
    def __call__(self, vectors, species, senders, receivers, edge_mask):
        """The EdgeModel interface (see :class:`mlpjax.models.common.EdgeModel`); output in eV."""
        cfg = self.config
        _check_switch_width(cfg.switch_width_A, self.cutoff, type(self).__name__)
        n_nodes = species.shape[0]
        s = self.num_species
        r = safe_norm(vectors, edge_mask, self.cutoff)  # [n_edges] Å; masked edges: r_c, where S = 0
        species = jnp.asarray(species)  # numpy when the MD engine's species are static
        pair_s, pair_r = species[senders], species[receivers]  # padding indices are clamped, then masked
        p = {}
        for name, field in self._PARAMETERS:
            table = self.param(name, nn.initializers.constant(getattr(cfg, field)), (s, s))  # [S, S]
            table = table.astype(r.dtype)
            p[name] = (0.5 * (table + table.T))[pair_s, pair_r]  # [n_edges]
        p.update(self._tables(s, r.dtype, pair_s, pair_r))
        pair_energy = self._phi(r, p) * switch(r, self.cutoff, cfg.switch_width_A)  # [n_edges] eV
        pair_energy = jnp.where(edge_mask, pair_energy, 0.0)
        return 0.5 * jax.ops.segment_sum(pair_energy, receivers, num_segments=n_nodes)  # [n_nodes] eV


class Morse(_PairModel):
    """φ(r) = D [e^{−2α(r−r0)} − 2 e^{−α(r−r0)}] per species pair. See the module docstring."""

    config: MorseConfig
    _PARAMETERS = (("D", "D_eV"), ("alpha", "alpha_per_A"), ("r0", "r0_A"))

    def _phi(self, r, p):
        e = jnp.exp(-p["alpha"] * (r - p["r0"]))
        return p["D"] * e * (e - 2.0)


class LennardJones(_PairModel):
    """φ(r) = 4ε [(σ/r)^12 − (σ/r)^6] per species pair. See the module docstring."""

    config: LJConfig
    _PARAMETERS = (("epsilon", "epsilon_eV"), ("sigma", "sigma_A"))

    def _phi(self, r, p):
        x6 = (p["sigma"] / r) ** 6  # r > 0: masked edges have r = r_c
        return 4.0 * p["epsilon"] * x6 * (x6 - 1.0)


class MorseSpline(Morse):
    """φ(r) = D [e^{−2α(r−r0)} − 2 e^{−α(r−r0)}] + Σ_k c_k B((r − r_k)/h) per species pair: the
    Morse form plus a cubic B-spline correction with coefficients ``params/spline`` [S, S, K] eV
    (symmetrised like the scalars; initialised to 0). A Morse potential has three parameters and
    cannot reproduce every radial distribution function (by Henderson's theorem one pair potential
    does, at a given density and temperature); the correction gives the fit the freedom of a
    tabulated potential (DiffTRe's own pair potentials are splines) while the Morse part keeps the
    core repulsive and the start physical. See :class:`MorseSplineConfig` for the knots."""

    config: MorseSplineConfig

    def _centres(self):
        cfg = self.config
        hi = cfg.knot_max_A if cfg.knot_max_A is not None else self.cutoff - cfg.switch_width_A
        if not hi > cfg.knot_min_A:
            raise ValueError(f"MorseSpline: the last knot ({hi} Å = cutoff − switch width) must exceed knot_min_A "
                             f"({cfg.knot_min_A} Å): lower knot_min_A or set knot_max_A")
        return np.linspace(cfg.knot_min_A, hi, cfg.knots), (hi - cfg.knot_min_A) / (cfg.knots - 1)  # Å, Å

    def _tables(self, s, dtype, pair_s, pair_r):
        table = self.param("spline", nn.initializers.zeros, (s, s, self.config.knots)).astype(dtype)  # [S, S, K] eV
        return {"spline": (0.5 * (table + jnp.swapaxes(table, 0, 1)))[pair_s, pair_r]}  # [n_edges, K]

    def _phi(self, r, p):
        centres, h = self._centres()
        basis = cubic_bspline((r[:, None] - jnp.asarray(centres, r.dtype)) / h)  # [n_edges, K]
        return super()._phi(r, p) + jnp.sum(p["spline"] * basis, axis=-1)


PAIR_MODELS = ("morse", "lj", "morse_spline")
# the parameters that multiply φ (scaled by to_physical)
_ENERGY_PARAMETERS = {"morse": ("D",), "lj": ("epsilon",), "morse_spline": ("D", "spline")}


def pair_potential(name: str, species: Sequence[int | str], cutoff: float, **config):
    """A physical pair potential: :class:`mlpjax.Potential` whose energy is the pair sum in eV.

    Args:
      name: "morse", "lj" or "morse_spline".
      species: atomic numbers or chemical symbols, e.g. ``["Cu"]`` or ``(29, 8)``; position =
        species index (the rows and columns of the parameter arrays).
      cutoff: Å.
      **config: options of :class:`MorseConfig` / :class:`LJConfig` / :class:`MorseSplineConfig`
        (e.g. ``D_eV=0.5``).
    Returns: the potential with ``energy_scale`` 1, ``energy_shift`` 0, reference energies 0 and
      every species pair's parameters set to the config's values.
    """
    from mlpjax import models
    from mlpjax.potential import Potential

    if name not in PAIR_MODELS:
        raise ValueError(f"{name!r} is not a pair potential: use one of {', '.join(PAIR_MODELS)}")
    numbers = tuple(_atomic_number(z) for z in species)
    if not numbers or len(set(numbers)) != len(numbers):
        raise ValueError(f"species must be a non-empty list of distinct elements, got {list(species)}")
    model_config = models.make_config(name, config)
    _check_switch_width(model_config.switch_width_A, float(cutoff), name)
    pot = Potential(
        model=name,
        model_config=model_config,
        cutoff=float(cutoff),
        species=numbers,
        reference_energies=(0.0,) * len(numbers),
        energy_shift=0.0,
        energy_scale=1.0,
        metadata={"units": "eV/Angstrom", "note": f"classical {name} pair potential"},
    )
    return pot.replace(params=pot.init_params(jax.random.PRNGKey(0)))  # constant initialisers: the key is unused


def to_physical(potential):
    """The same pair potential with ``energy_scale`` 1 and ``energy_shift`` 0, so that its
    parameters are in eV again (after ``mlpjax train``, which sets both from the data).

    D (Morse; D and the spline coefficients for Morse + spline) or ε (LJ) is multiplied by the energy scale, and E0 + shift become the reference
    energies; energies, per-atom energies, forces and stress are unchanged (up to rounding).
    """
    if potential.model not in PAIR_MODELS:
        raise ValueError(f"to_physical needs a pair potential ({', '.join(PAIR_MODELS)}), got {potential.model!r}")
    if potential.params is None:
        raise ValueError("the potential has no parameters")
    if np.ndim(potential.energy_scale) or np.ndim(potential.energy_shift):
        raise ValueError("to_physical takes one potential, not an ensemble (convert each member)")
    scale, shift = float(potential.energy_scale), float(potential.energy_shift)
    inner = dict(potential.params["params"])
    for key in _ENERGY_PARAMETERS[potential.model]:
        inner[key] = inner[key] * jnp.asarray(scale, inner[key].dtype)
    return potential.replace(
        params={**potential.params, "params": inner},
        energy_scale=1.0,
        energy_shift=0.0,
        reference_energies=tuple(float(e) + shift for e in potential.reference_energies),
    )


def _atomic_number(z: int | str) -> int:
    if isinstance(z, str):
        from ase.data import atomic_numbers

        if z not in atomic_numbers:
            raise ValueError(f"unknown chemical symbol {z!r}")
        return int(atomic_numbers[z])
    return int(z)
