"""mlpjax: machine-learning interatomic potentials in JAX.

    import mlpjax
    pot = mlpjax.load("run/model.mlpjax")
    atoms.calc = pot.calculator()          # ASE
    energy_fn = pot.energy_fn(displacement_fn, numbers)   # jax-md
"""

from mlpjax.potential import Potential, Predictions, compute_properties, load

__version__ = "0.1.0"
__all__ = ["Potential", "Predictions", "compute_properties", "load", "__version__"]
