"""Selection of the structures to label: the DP-GEN trust window, top-k and a diversity-aware batch.

Pure functions over arrays (no state, no I/O), used by :mod:`mlpjax.active.loop`:

* :func:`classify` — the trust window of DP-GEN (Zhang et al., Comput. Phys. Commun. 253,
  107206 (2020)) on σ = the largest per-atom force model deviation of a structure, eV/Å
  (:attr:`mlpjax.uncertainty.UncertainPrediction.max_force_std`, the ``max_force_std`` of an MD
  frame): ``σ ≤ sigma_lo`` → ``"accurate"`` (the ensemble agrees: nothing to learn),
  ``sigma_lo < σ ≤ sigma_hi`` → ``"candidate"``, ``σ > sigma_hi`` (or not finite) →
  ``"failed"`` (so far outside the training data that the frame is probably unphysical: an MD
  step of a model that has already gone wrong; labelling it would teach the model nonsense).
* :func:`first_failed` — each replica's first frame above the window (where its MD stopped):
  labelled ahead of the candidates with ``select.stop_frames`` (see
  :class:`mlpjax.active.SelectConfig` for when that is needed).
* :func:`top_k` — the k largest σ.
* :func:`farthest_point_sampling` — greedy farthest-point sampling in a feature space: each
  next pick is the point farthest (Euclidean) from everything picked so far, so a batch covers
  distinct regions instead of twenty near-copies of one event.
* :func:`structure_descriptor` / :func:`structure_descriptors` — the feature space used for that:
  per-atom radial symmetry functions (Behler's G2, element-resolved by neighbour, with the
  cosine cutoff) summarised per structure by their mean and standard deviation over the atoms.
  Cheap (numpy + ASE's neighbour list, no compilation), invariant to rotation, translation and
  permutation, and it tells bulk from surface from vacancy (the standard deviation over atoms
  sees the few under-coordinated atoms a mean would wash out) and a hot frame from a cold one.
* :func:`select_batch` — the batch of the loop: candidates only, the ``pool_size`` largest σ,
  then (``method="fps"``) farthest-point sampling on standardised descriptors starting from
  the largest σ; ``"top_k"`` and ``"random"`` are the baselines.
"""

from __future__ import annotations

import numpy as np

ACCURATE, CANDIDATE, FAILED = "accurate", "candidate", "failed"
METHODS = ("fps", "top_k", "random")


def classify(max_force_std, *, sigma_lo: float, sigma_hi: float) -> np.ndarray:
    """The trust-window class of each structure.

    Args:
      max_force_std: [n] eV/Å, each structure's largest per-atom force model deviation σ.
      sigma_lo, sigma_hi: eV/Å, the window (0 <= sigma_lo < sigma_hi).
    Returns [n] array of ``"accurate"`` (σ <= sigma_lo), ``"candidate"`` (sigma_lo < σ <= sigma_hi)
    or ``"failed"`` (σ > sigma_hi, NaN or inf).
    """
    if not (0 <= sigma_lo < sigma_hi):
        raise ValueError(f"the trust window needs 0 <= sigma_lo < sigma_hi (eV/Å), got {sigma_lo}, {sigma_hi}")
    s = np.asarray(max_force_std, np.float64).reshape(-1)
    out = np.full(s.shape, FAILED, dtype=object)
    finite = np.isfinite(s)
    out[finite & (s <= sigma_lo)] = ACCURATE
    out[finite & (s > sigma_lo) & (s <= sigma_hi)] = CANDIDATE
    return out.astype(str)


def window_counts(classes) -> dict:
    """{"accurate": n, "candidate": n, "failed": n} of a :func:`classify` result."""
    classes = np.asarray(classes)
    return {c: int(np.sum(classes == c)) for c in (ACCURATE, CANDIDATE, FAILED)}


def top_k(scores, k: int) -> np.ndarray:
    """Indices of the ``k`` largest ``scores`` [n], largest first (ties: lower index first)."""
    s = np.asarray(scores, np.float64).reshape(-1)
    k = max(0, min(int(k), s.size))
    order = np.lexsort((np.arange(s.size), -s))  # by -score, then by index
    return order[:k]


def farthest_point_sampling(features, k: int, *, first: int = 0) -> np.ndarray:
    """Greedy farthest-point sampling: ``k`` row indices of ``features`` [n, d].

    Starts from row ``first``; each next index is the row with the largest Euclidean distance to
    its nearest already-picked row (ties: lower index). Exact duplicates of a picked row have
    distance 0, so they come last: every distinct point is picked before any repeat. Returns at
    most n indices, in pick order. O(n · k · d).
    """
    x = np.asarray(features, np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be [n, d], got shape {x.shape}")
    n = x.shape[0]
    k = max(0, min(int(k), n))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if not 0 <= first < n:
        raise ValueError(f"first must be a row index in [0, {n}), got {first}")
    picked = [int(first)]
    nearest = np.linalg.norm(x - x[first], axis=1)  # [n] distance to the nearest picked row
    nearest[first] = -1.0
    for _ in range(k - 1):
        nxt = int(np.argmax(nearest))  # argmax: first index of the maximum
        picked.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(x - x[nxt], axis=1))
        nearest[picked] = -1.0
    return np.asarray(picked, dtype=np.int64)


def structure_descriptor(atoms, *, species, cutoff: float = 5.0, n_radial: int = 12, r_min: float = 1.5) -> np.ndarray:
    """A fixed-length, invariant descriptor of one structure.

    Per atom i and neighbour element a, radial G2 symmetry functions
    ``G_i,a,g = Σ_{j∈a, r_ij<cutoff} exp(−(r_ij − μ_g)² / (2 w²)) · ½(cos(π r_ij / cutoff) + 1)`` on
    ``n_radial`` centres μ_g evenly spaced in [r_min, cutoff] Å with width w = their spacing;
    the structure's vector is the mean over atoms followed by the standard deviation over atoms:
    shape [2 · len(species) · n_radial] (dimensionless, ~neighbour counts).

    Args:
      atoms: ase.Atoms (periodic images through ASE's neighbour list).
      species: atomic numbers of the descriptor's element channels (the same for every
        structure compared; elements not listed are ignored as neighbours).
      cutoff: Å.
    """
    from ase.neighborlist import neighbor_list

    species = [int(z) for z in species]
    mu = np.linspace(r_min, cutoff, n_radial)  # [g] Å
    w = (cutoff - r_min) / max(n_radial - 1, 1)
    n = len(atoms)
    g = np.zeros((n, len(species), n_radial))
    if n:
        i, j, d = neighbor_list("ijd", atoms, cutoff)
        fc = 0.5 * (np.cos(np.pi * d / cutoff) + 1.0)
        radial = np.exp(-((d[:, None] - mu[None, :]) ** 2) / (2 * w * w)) * fc[:, None]  # [pairs, g]
        z = np.asarray(atoms.numbers)[j]
        for a, za in enumerate(species):
            m = z == za
            np.add.at(g[:, a, :], i[m], radial[m])
    g = g.reshape(n, -1)
    if n == 0:
        return np.zeros(2 * g.shape[1])
    return np.concatenate([g.mean(axis=0), g.std(axis=0)])


def structure_descriptors(structures, *, cutoff: float = 5.0, n_radial: int = 12, species=None) -> np.ndarray:
    """[n, d] :func:`structure_descriptor` of every structure, on the element channels ``species``
    (default: every element present in ``structures``, sorted)."""
    structures = list(structures)
    if species is None:
        species = sorted({int(z) for a in structures for z in a.numbers})
    if not structures:
        return np.zeros((0, 2 * len(species) * n_radial))
    return np.stack([structure_descriptor(a, species=species, cutoff=cutoff, n_radial=n_radial) for a in structures])


def standardize(features) -> np.ndarray:
    """``features`` [n, d] with each column centred and divided by its standard deviation over the
    rows (columns that do not vary are only centred), so no channel dominates the distances."""
    x = np.asarray(features, np.float64)
    if x.shape[0] == 0:
        return x
    sd = x.std(axis=0)
    sd = np.where(sd > 1e-12 * max(1.0, float(np.abs(x).max(initial=0.0))), sd, 1.0)
    return (x - x.mean(axis=0)) / sd


def first_failed(classes, replicas) -> np.ndarray:
    """Index of each replica's first ``"failed"`` frame (where its uncertainty check stopped it).

    Args:
      classes: [n] trust-window classes (:func:`classify`) of the recorded frames, in time order
        within each replica.
      replicas: [n] the replica each frame belongs to.
    Returns the indices, in ascending order; replicas that never left the window have none.
    """
    classes, replicas = np.asarray(classes), np.asarray(replicas)
    if classes.shape != replicas.shape:
        raise ValueError(f"{classes.size} classes for {replicas.size} replica ids")
    out, seen = [], set()
    for i, (c, r) in enumerate(zip(classes, replicas)):
        if c == "failed" and r not in seen:
            seen.add(r)
            out.append(i)
    return np.asarray(out, dtype=np.int64)


def select_batch(max_force_std, n: int, *, features=None, method: str = "fps", pool_size: int | None = None,
                 seed: int = 0) -> np.ndarray:
    """Indices of the (at most) ``n`` structures to label among candidates.

    Args:
      max_force_std: [m] eV/Å, σ of each candidate (already inside the trust window).
      n: batch size.
      features: [m, d] descriptors (:func:`structure_descriptors`), needed for ``"fps"``;
        standardised here (:func:`standardize`) over the pool.
      method: ``"fps"`` (farthest-point sampling from the largest σ within the pool),
        ``"top_k"`` (the n largest σ) or ``"random"`` (uniform without replacement, ``seed``).
      pool_size: first keep the ``pool_size`` largest σ (None: all candidates).
    Returns [<= n] indices into the candidates, in pick order.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    s = np.asarray(max_force_std, np.float64).reshape(-1)
    pool = top_k(s, s.size if pool_size is None else pool_size)
    n = max(0, min(int(n), pool.size))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if method == "top_k":
        return pool[:n]
    if method == "random":
        return np.sort(np.random.default_rng(seed).choice(pool, size=n, replace=False))
    if features is None:
        raise ValueError("method 'fps' needs features (structure_descriptors of the candidates)")
    x = np.asarray(features, np.float64)
    if x.shape[0] != s.size:
        raise ValueError(f"{x.shape[0]} feature rows for {s.size} candidates")
    picked = farthest_point_sampling(standardize(x[pool]), n, first=0)  # pool[0] has the largest σ
    return pool[picked]
