"""Shared test configuration: float64 enabled, NaN debugging, tolerances, tiny
potentials for every registered model, and shared structures.

The physics contract is a parameterised suite over (model × dtype): the ``model``
fixture yields a :class:`TinyModel` for every name in ``mlpjax.models.available()``
and both float32 and float64. A newly registered model only needs an entry in
:data:`TINY_CONFIGS` to get the whole contract (rotation/translation/permutation,
finite differences, stress, batching, cutoff smoothness, jax-md / ASE agreement).

float32 variants run with x64 *enabled*: inputs are packed as float32
(``pack(..., dtype=np.float32)``) and the parameters are cast to float32, so the
whole forward and backward pass runs in single precision.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings

# The suite is compile-bound (hundreds of small jitted programs, each run a few times). XLA's
# CPU backend at optimisation level 0 without the expensive LLVM passes compiles ~35 % faster
# (measured: the MACE float32 physics contract 92 → 60 s, training + MD tests 88 → 73 s on one
# core) and computes the same IEEE operations (no fast-math either way), so every tolerance and
# bit-for-bit check is unchanged. Set MLPJAX_TEST_XLA_OPTIMIZE=1 to test with the default
# (optimised) compiler instead. XLA reads XLA_FLAGS when the backend starts, after this import.
if os.environ.get("MLPJAX_TEST_XLA_OPTIMIZE", "0") != "1":
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true"]
    ).strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_debug_nans", True)

import ase  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mlpjax import models  # noqa: E402
from mlpjax.data import Configuration  # noqa: E402
from mlpjax.graph import Budget, make_budget, pack, to_graphs  # noqa: E402
from mlpjax.potential import Potential  # noqa: E402

warnings.filterwarnings("ignore", message="Explicitly requested dtype float64")

# ---------------------------------------------------------------------------
# Tolerances (defined once). Energies are compared per atom.
# ---------------------------------------------------------------------------

TOL = {
    "float32": {"energy": 2e-5, "forces": 2e-4, "stress": 2e-5, "rtol": 2e-5},  # eV/atom, eV/Å, eV/Å^3
    "float64": {"energy": 1e-11, "forces": 1e-10, "stress": 1e-11, "rtol": 1e-10},
}
DTYPES = ("float32", "float64")

# ---------------------------------------------------------------------------
# Tiny model configurations: one entry per registered model.
# ---------------------------------------------------------------------------

TINY_CONFIGS: dict[str, dict] = {
    "schnet": {"features": 16, "interactions": 2, "num_rbf": 8, "filter_hidden": 16},
    # correlation 2 keeps compile time down; ν = 3 is covered by tests/test_mace.py
    "mace": {"features": 4, "interactions": 2, "l_max": 2, "hidden_l_max": 1, "correlation": 2, "num_bessel": 8,
             "radial_hidden": [8], "readout_hidden": 8},
    "dimenet": {"hidden": 8, "out_emb": 8, "int_emb": 4, "basis_emb": 4, "num_blocks": 1, "num_spherical": 3,
                "num_radial": 4, "num_after_skip": 1, "num_output_layers": 1, "max_neighbors": 44},
    "nequip": {"features": 8, "l_max": 1, "num_layers": 2, "full_parity": False, "num_bessel": 8, "radial_hidden": 16},
    "painn": {"features": 16, "interactions": 2, "num_rbf": 8},
    "bpnn": {"hidden": [8], "n_radial": 4, "zetas": [1.0, 4.0], "n_angular_eta": 1, "max_neighbors": 48},
    "ani": {"hidden": [8], "n_radial_shifts": 4, "n_angular_shifts": 2, "n_sections": 2,
            "angular_zeta": 8.0, "radial_eta": 4.0, "max_neighbors": 24},
    "gap": {"n_max": 2, "l_max": 2, "sigma": 0.5, "n_sparse": 6, "zeta": 2},
    # pair potentials: one value for every species pair, so minima (r0, 2^(1/6) σ) between ethanol's
    # bonds (1-1.5 Å) and Cu's first shell (2.55 Å) keep both structures' forces O(0.1-10) eV/Å (the
    # Cu defaults would give ~1e2 eV/Å (Morse) and ~1e6 eV/Å (LJ) in ethanol); both reach the cutoff
    "morse": {"D_eV": 0.5, "alpha_per_A": 1.2, "r0_A": 1.8, "switch_width_A": 1.0},
    "lj": {"epsilon_eV": 2.0, "sigma_A": 0.9, "switch_width_A": 0.75},
    # knots 1-3.5 Å (h 0.5 Å): the correction acts on ethanol's bonds and Cu's first two shells
    "morse_spline": {"D_eV": 0.5, "alpha_per_A": 1.2, "r0_A": 1.8, "switch_width_A": 1.0, "knots": 6,
                     "knot_min_A": 1.0},
}
# Freshly initialised networks are nearly geometry-independent (forces ~1e-3 eV/Å),
# which would make symmetry tests weak; their parameters are multiplied by this
# factor so that forces are O(1) eV/Å (checked by the tests themselves).
PARAM_SCALE: dict[str, float] = {"schnet": 2.0, "mace": 1.3, "painn": 1.5, "nequip": 1.75, "gap": 20.0}

CUTOFF = 4.5  # Å
SPECIES = (1, 6, 8, 29)  # H, C, O (ethanol) and Cu
REFERENCE_ENERGIES = (-0.51, -1.37, -2.04, -3.72)  # eV
ENERGY_SHIFT = 0.13  # eV/atom
ENERGY_SCALE = 0.7  # eV
AVG_NUM_NEIGHBORS = 12.0


def tiny_config(name: str) -> dict:
    if name not in TINY_CONFIGS:
        pytest.fail(f"model {name!r} is registered but has no tiny config: add it to TINY_CONFIGS in tests/conftest.py")
    return TINY_CONFIGS[name]


def cast_params(params, dtype):
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x, params
    )


@functools.lru_cache(maxsize=None)
def _base_potential(name: str, species: tuple = SPECIES, seed: int = 0) -> Potential:
    pot = Potential(
        name,
        models.make_config(name, tiny_config(name)),
        cutoff=CUTOFF,
        species=species,
        reference_energies=tuple(REFERENCE_ENERGIES[SPECIES.index(z)] for z in species),
        energy_shift=ENERGY_SHIFT,
        energy_scale=ENERGY_SCALE,
        avg_num_neighbors=AVG_NUM_NEIGHBORS,
        metadata={"units": "eV/Angstrom", "note": "tiny test model"},
    )
    params = pot.init_params(jax.random.PRNGKey(seed))
    hook = models.data_init(name)
    if hook is not None:  # data-dependent init (descriptor standardisation) on the test structures
        # bulk, molecule and sparse clusters, so that the standardised features of the
        # cutoff-crossing dimers/trimers of test_physics stay O(1) (no saturated network)
        fit = [cu_atoms(), ethanol_atoms()] + [ase.Atoms("Cu2", positions=[[0, 0, 0], [r, 0, 0]]) for r in (2.2, 3.2, 4.2)]
        fit.append(ase.Atoms("HOC", positions=[[-0.7, 0, 0], [0.7, 0, 0], [0, 2.5, 0]]))
        structures = [config(a) for a in fit if set(a.numbers) <= set(species)]
        if structures:
            params = hook(pot.replace(params=params), params, to_graphs(structures, species, CUTOFF))
    if name == "morse_spline":  # the correction starts at 0: random coefficients (±0.1 eV) exercise it
        spline = params["params"]["spline"]
        params = {**params, "params": {**params["params"], "spline": 0.1 * jax.random.normal(jax.random.PRNGKey(seed + 1), spline.shape)}}
    if name == "gap":  # fitted weights are data-dependent; random ones exercise the same functional form
        alpha = params["params"]["alpha"]
        params = {**params, "params": {**params["params"], "alpha": jax.random.normal(jax.random.PRNGKey(seed + 1), alpha.shape)}}
    scale = PARAM_SCALE.get(name, 1.0)
    trainable = {"params": params["params"]} if isinstance(params, dict) and "params" in params else params
    trainable = jax.tree_util.tree_map(lambda x: x * scale if jnp.issubdtype(x.dtype, jnp.floating) else x, trainable)
    params = {**params, **trainable} if trainable is not params else trainable
    return pot.replace(params=params)


@dataclasses.dataclass(eq=False)
class TinyModel:
    """A tiny potential of one model in one dtype, with jitted prediction helpers."""

    name: str
    dtype_name: str
    pot: Potential

    @property
    def dtype(self):
        return np.dtype(self.dtype_name)

    @property
    def tol(self) -> dict:
        return TOL[self.dtype_name]

    @functools.cached_property
    def predict(self):
        """jitted (batch) -> Predictions with this model's params."""
        pot = self.pot
        return jax.jit(lambda params, batch: pot.predict(params, batch))

    @functools.cached_property
    def calculator(self):
        """One shared ASE calculator (its jitted predict compiles once per budget bucket)."""
        return self.pot.calculator()

    def pack(self, configs, budget: Budget | None = None, *, batch_size: int | None = None):
        graphs = to_graphs(configs, self.pot.species, self.pot.cutoff)
        if budget is None:
            budget = make_budget(graphs, batch_size or len(graphs))
        return pack(graphs, budget, dtype=self.dtype)

    def run(self, configs, budget: Budget | None = None) -> list[dict]:
        """Per-structure numpy results (float64 copies) of one padded batch."""
        batch = self.pack(configs, budget)
        out = self.predict(self.pot.params, batch)
        return split_predictions(batch, out)

    @functools.cached_property
    def energies_of_positions(self):
        """jitted (batch, positions[k, n, 3]) -> energies [k, n_graphs] (vmapped, no stress)."""
        pot = self.pot

        def f(params, batch, positions):
            return jax.vmap(lambda pos: pot.predict(params, batch._replace(positions=pos), compute_stress=False).energy)(positions)

        return jax.jit(f)

    @functools.cached_property
    def energies_of_strain(self):
        """jitted (batch, deformations[k, 3, 3]) -> energies [k, n_graphs] of graph 0 deformed
        homogeneously (positions and cell, row vectors: r -> r F)."""
        pot = self.pot

        def f(params, batch, defs):
            def one(F):
                pos = batch.positions @ F
                cell = batch.cell @ F
                return pot.predict(params, batch._replace(positions=pos, cell=cell), compute_stress=False).energy

            return jax.vmap(one)(defs)

        return jax.jit(f)


def split_predictions(batch, out) -> list[dict]:
    res = []
    node_graph = np.asarray(batch.node_graph)
    for g in range(int(np.sum(batch.graph_mask))):
        sel = node_graph == g
        res.append(
            {
                "energy": float(out.energy[g]),
                "forces": np.asarray(out.forces, np.float64)[sel],
                "stress": np.asarray(out.stress[g], np.float64),
                "atomic_energies": np.asarray(out.atomic_energies, np.float64)[sel],
                "n_atoms": int(sel.sum()),
            }
        )
    return res


@functools.lru_cache(maxsize=None)
def get_model(name: str, dtype_name: str) -> TinyModel:
    base = _base_potential(name)
    pot = base.replace(params=cast_params(base.params, np.dtype(dtype_name)))
    return TinyModel(name, dtype_name, pot)


MODEL_PARAMS = [pytest.param((n, d), id=f"{n}-{d}") for n in models.available() for d in DTYPES]
MODEL64_PARAMS = [pytest.param((n, "float64"), id=f"{n}-float64") for n in models.available()]


@pytest.fixture(scope="session", params=MODEL_PARAMS)
def model(request) -> TinyModel:
    """Every registered model × {float32, float64}."""
    return get_model(*request.param)


@pytest.fixture(scope="session", params=MODEL64_PARAMS)
def model64(request) -> TinyModel:
    """Every registered model in float64 (finite-difference tests)."""
    return get_model(*request.param)


# Infrastructure tests (model file, padding, calculator plumbing) need every model's
# parameter pytree and masking once, not the full dtype grid: every model in float32
# plus SchNet in float64. The physics contract (test_physics.py) keeps the full grid.
MODEL_ONCE_PARAMS = [pytest.param((n, "float32"), id=f"{n}-float32") for n in models.available()] + [
    pytest.param(("schnet", "float64"), id="schnet-float64")
]
SCHNET_PARAMS = [pytest.param(("schnet", d), id=f"schnet-{d}") for d in DTYPES]


@pytest.fixture(scope="session", params=MODEL_ONCE_PARAMS)
def model_once(request) -> TinyModel:
    """Every registered model in float32, and SchNet in float64."""
    return get_model(*request.param)


@pytest.fixture(scope="session", params=SCHNET_PARAMS)
def schnet_model(request) -> TinyModel:
    """SchNet in both dtypes, for model-independent plumbing (calculator, neighbour-list checks)."""
    return get_model(*request.param)


# ---------------------------------------------------------------------------
# Randomness
# ---------------------------------------------------------------------------


class KeySeq:
    """``next(keys)`` gives a fresh jax PRNG key; deterministic per test."""

    def __init__(self, seed: int):
        self._key = jax.random.PRNGKey(seed)

    def __next__(self):
        self._key, sub = jax.random.split(self._key)
        return sub

    def __iter__(self):
        return self


@pytest.fixture
def keys() -> KeySeq:
    return KeySeq(1234)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def random_orthogonal(rng: np.random.Generator, reflect: bool = True) -> np.ndarray:
    """A random O(3) matrix; with ``reflect`` it has determinant -1."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    if reflect:
        q = -q
    return q


# ---------------------------------------------------------------------------
# Shared structures (fresh copies on every call; cheap)
# ---------------------------------------------------------------------------

CU_A = 3.61  # Å


def cu_atoms(repeat: int = 2, rattle: float = 0.05, seed: int = 1):
    """Rattled fcc Cu, ``repeat``^3 cubic cells (repeat=2: 32 atoms, side 7.22 Å < 2 r_c)."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=CU_A, cubic=True).repeat(repeat)
    atoms.rattle(rattle, seed=seed)
    return atoms


def cu_triclinic_atoms(repeat: int = 2, seed: int = 2):
    """Rattled sheared fcc Cu (triclinic cell, same atoms in scaled coordinates)."""
    atoms = cu_atoms(repeat, rattle=0.0)
    shear = np.array([[1.0, 0.0, 0.0], [0.12, 1.0, 0.0], [-0.07, 0.09, 1.03]])
    atoms.set_cell(atoms.cell.array @ shear, scale_atoms=True)
    atoms.rattle(0.05, seed=seed)
    return atoms


def cu108_triclinic_rotated(seed: int = 3):
    """108 Cu atoms in a sheared cell, rigidly rotated so the cell is far from ASE's standard
    (lower-triangular) form: the MD tests' hardest periodic cell."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    shear = np.array([[1.0, 0.0, 0.0], [0.08, 1.0, 0.0], [0.05, -0.06, 1.0]])
    atoms.set_cell(atoms.cell.array @ shear, scale_atoms=True)
    atoms.rattle(0.05, seed=seed)
    rot = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))[0]
    if np.linalg.det(rot) < 0:
        rot[:, 0] *= -1
    atoms.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    atoms.positions = atoms.positions @ rot.T
    return atoms


def ethanol_atoms(rattle: float = 0.02, seed: int = 3):
    from ase.build import molecule

    atoms = molecule("CH3CH2OH")
    atoms.rattle(rattle, seed=seed)
    return atoms


def emt_cu_frames(n_md: int = 30, n_rattled: int = 8, *, md_stride: int = 5, seed: int = 0) -> list:
    """EMT-labelled fcc Cu as ase.Atoms, made in about a second (mlpjax.data.emt.emt_cu takes ~15 s):
    ``n_md`` frames of a 32-atom NVE run started from 1,200 K velocities, ``md_stride`` steps of 2 fs
    apart (successive frames are close pairs, as in a real trajectory), then ``n_rattled`` 108-atom
    cells rattled by 0.08 Å."""
    from ase import units as ase_units
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    frames = []
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.calc = EMT()
    thermalize_momenta(atoms, temperature_K=1200, rng=np.random.default_rng(seed))
    dyn = VelocityVerlet(atoms, 2 * ase_units.fs)
    for _ in range(n_md):
        dyn.run(md_stride)
        frames.append(atoms.copy())
    for k in range(n_rattled):
        cell = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
        cell.rattle(0.08, seed=seed * 1000 + k)
        frames.append(cell)
    for f in frames:
        f.calc = EMT()
        f.get_forces()
    return frames


def config(atoms) -> Configuration:
    return Configuration.from_atoms(atoms, source="<test>")


@pytest.fixture
def cu():
    return cu_atoms()


@pytest.fixture
def cu_tri():
    return cu_triclinic_atoms()


@pytest.fixture
def ethanol():
    return ethanol_atoms()


STRUCTURES = {"cu": cu_atoms, "cu_triclinic": cu_triclinic_atoms, "ethanol": ethanol_atoms}


@pytest.fixture(params=sorted(STRUCTURES))
def structure(request):
    """Each shared structure: (name, ase.Atoms)."""
    return request.param, STRUCTURES[request.param]()


def assert_close(actual, desired, tol: float, rtol: float = 0.0, what: str = ""):
    actual = np.asarray(actual, np.float64)
    desired = np.asarray(desired, np.float64)
    np.testing.assert_allclose(actual, desired, atol=tol, rtol=rtol, err_msg=what)
