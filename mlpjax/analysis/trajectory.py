"""Reading trajectories for analysis: per-frame arrays and the stacked [T, N, 3] arrays of a
trajectory (positions Å, cells Å, velocities Å/ps), and the time between frames (ps).

Frames are ASE ``Atoms`` or mlpjax ``Configuration`` (the latter carry no velocities).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mlpjax.units import PS

__all__: list[str] = []


def _frame_arrays(frame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(positions [N,3] Å, cell [3,3] Å (rows = lattice vectors), pbc [3] bool, numbers [N] int) of one frame."""
    pos = np.asarray(frame.positions, dtype=np.float64)
    cell = np.asarray(getattr(frame.cell, "array", frame.cell), dtype=np.float64)
    pbc = np.broadcast_to(np.asarray(frame.pbc, dtype=bool), (3,))
    numbers = np.asarray(frame.numbers, dtype=np.int64)
    return pos, cell, pbc, numbers


def _frame_interval_ps(frames: Sequence) -> float | None:
    """Time between successive frames (ps) from their ``info['time_ps']``, None if any frame lacks it.

    Raises ValueError if the frames are not evenly spaced in time (MSD/VACF need even spacing).
    """
    times = []
    for f in frames:
        info = getattr(f, "info", None) or {}
        if "time_ps" not in info:
            return None
        times.append(float(info["time_ps"]))
    if len(times) < 2:
        return None
    dt = np.diff(times)
    if dt[0] <= 0 or not np.allclose(dt, dt[0], rtol=1e-6, atol=1e-9):
        raise ValueError(
            f"the frames' info['time_ps'] are not evenly spaced (steps from {dt.min():g} to {dt.max():g} ps): "
            "MSD and VACF need a constant interval between frames"
        )
    return float(dt[0])


def _trajectory_arrays(frames: Sequence) -> dict:
    """positions [T,N,3] Å, cells [T,3,3] Å, pbc [3] bool, numbers [N] int, velocities [T,N,3] Å/ps or None.

    Needs the same atoms in the same order in every frame.
    """
    pos, cells, vel = [], [], []
    numbers0 = pbc0 = None
    for k, f in enumerate(frames):
        p, c, pbc, numbers = _frame_arrays(f)
        if numbers0 is None:
            numbers0, pbc0 = numbers, pbc
        elif not np.array_equal(numbers, numbers0) or not np.array_equal(pbc, pbc0):
            raise ValueError(f"MSD/VACF need the same atoms and boundary conditions in every frame; frame {k} differs from frame 0")
        pos.append(p)
        cells.append(c)
        has_v = hasattr(f, "has") and f.has("momenta")
        vel.append(np.asarray(f.get_velocities(), np.float64) * PS if has_v else None)
    velocities = None if any(v is None for v in vel) else np.stack(vel)  # Å/(ASE time) × PS (ASE time per ps) = Å/ps
    return {"positions": np.stack(pos), "cells": np.stack(cells), "pbc": pbc0, "numbers": numbers0, "velocities": velocities}
