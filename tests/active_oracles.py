"""Test oracles for tests/test_active.py, importable as ``ase:active_oracles:CLASS`` (tests/ is on
sys.path under pytest; the CLI tests put it on PYTHONPATH)."""

import hashlib
import time

import numpy as np
from ase.calculators.emt import EMT


class FlakyEMT(EMT):
    """ASE's EMT that sleeps ``delay_s`` per structure and raises for every structure whose position
    hash is divisible by ``fail_every`` (deterministic: the same structures fail every time)."""

    def __init__(self, delay_s: float = 0.0, fail_every: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.delay_s, self.fail_every = float(delay_s), int(fail_every)

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_every and atoms is not None:
            h = int(hashlib.sha256(np.ascontiguousarray(atoms.positions, dtype=np.float64).tobytes()).hexdigest(), 16)
            if h % self.fail_every == 0:
                raise RuntimeError("flaky test oracle: refuses this structure")
        super().calculate(atoms, properties, system_changes)
