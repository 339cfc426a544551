import numpy as np
import pytest
from ase.build import bulk
from ase.geometry.rdf import get_rdf

from mlpjax.analysis import coordination_number, first_minimum, rdf


@pytest.fixture(scope="module")
def hot_cu_frames():
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(3):
        a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((4, 4, 4))
        a.positions += rng.normal(0, 0.1, a.positions.shape)
        frames.append(a)
    return frames


def test_rdf_matches_ase(hot_cu_frames):
    r_max, n_bins = 6.0, 60
    ours = rdf(hot_cu_frames, r_max=r_max, n_bins=n_bins)
    ref = np.mean([get_rdf(a, r_max, n_bins)[0] for a in hot_cu_frames], axis=0)
    # ASE normalises with 4π r² dr at the bin centre; we use the exact shell volume.
    # They agree to O((dr/r)²) away from r → 0.
    sel = ours.r > 1.5
    np.testing.assert_allclose(ours.g[sel], ref[sel], rtol=2e-3, atol=1e-3)


def test_fcc_coordination_is_twelve(hot_cu_frames):
    result = rdf(hot_cu_frames, r_max=6.0, n_bins=120)
    r_min = first_minimum(result)
    assert 2.6 < r_min < 3.4  # between the 1st (2.55 Å) and 2nd (3.61 Å) shells
    assert coordination_number(result) == pytest.approx(12.0, abs=0.2)


def test_rdf_handles_small_cells():
    a = bulk("Cu", "fcc", a=3.61)  # 1-atom primitive cell, far smaller than r_max
    big = a.repeat((8, 8, 8))
    small = rdf([a], r_max=5.0, n_bins=50)
    large = rdf([big], r_max=5.0, n_bins=50)
    np.testing.assert_allclose(small.g, large.g, rtol=1e-10, atol=1e-10)


def test_rdf_rejects_clusters():
    from ase.build import molecule

    with pytest.raises(ValueError, match="periodic"):
        rdf([molecule("H2O")])
