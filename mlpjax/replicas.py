"""``mlpjax.replicas`` is :mod:`mlpjax.md.replicas` (kept as a short import path)."""

from mlpjax.md.replicas import ReplicaInstabilityError, ReplicaResult, replica_paths, simulate_replicas

__all__ = ["ReplicaResult", "ReplicaInstabilityError", "simulate_replicas", "replica_paths"]
