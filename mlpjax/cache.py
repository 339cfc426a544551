"""Compile caches: the one mechanism mlpjax uses to reuse compiled code.

Compiling a jitted step (a training step, an MD chunk, a batched prediction) costs seconds to
minutes; running it again costs milliseconds. mlpjax reuses compiled code in exactly one way:

    @compiled(maxsize=8)
    def make_step(definition: PotentialDef, settings: StepSettings, ...) -> jitted functions

A *factory* that builds jitted functions is decorated with :func:`compiled`, a
``functools.lru_cache`` keyed by its arguments. Its arguments are static, hashable settings
only: the architecture (:class:`mlpjax.potential.PotentialDef`, a frozen dataclass compared by
value), frozen config dataclasses, shapes, dtypes, booleans. Arrays and parameters are never
part of a key (they are unhashable, so lru_cache refuses them): they are traced *arguments* of the
returned jitted functions. A second potential with the same architecture but other parameters —
a retrained model, an ensemble member, a model loaded again from its file — therefore finds the
same factory result, and jax's own jit cache (keyed by argument shapes and dtypes) serves its
call without compiling.

Nothing hashes parameter bytes to find compiled code. :func:`clear` empties every cache made
here (tests that count compilations start from it).
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

__all__ = ["compiled", "clear", "cache_info"]

F = TypeVar("F", bound=Callable)
_CACHES: list = []


def compiled(maxsize: int = 8) -> Callable[[F], F]:
    """``functools.lru_cache(maxsize)`` for a factory of jitted functions, registered for :func:`clear`.

    ``maxsize`` bounds how many architectures/settings keep their compiled code alive (each
    entry holds the executables of its jitted functions)."""

    def decorate(factory: F) -> F:
        cached = functools.lru_cache(maxsize=maxsize)(factory)
        _CACHES.append(cached)
        return cached  # type: ignore[return-value]

    return decorate


def clear() -> None:
    """Empty every :func:`compiled` cache (the compiled executables are freed with them)."""
    for cached in _CACHES:
        cached.cache_clear()


def cache_info() -> dict:
    """``{factory qualname: functools._CacheInfo}`` of every registered cache."""
    return {f"{c.__module__}.{c.__qualname__}": c.cache_info() for c in _CACHES}
