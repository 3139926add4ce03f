"""Directions in parameter space: random (filter-normalised) and PCA of a trajectory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    pass

from ._common import (
    _FORMAT,
    BIAS_POLICIES,
    NORMALIZATIONS,
    Params,
    PathLike,
    _check_choice,
    _check_count,
    _check_params,
    _digest,
    _load_npz,
    _save_npz,
)

# --------------------------------------------------------------------------------------------
# directions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Directions:
    """A set of directions in parameter space, with how they were made.

    ``vectors[k][i]`` is direction ``k`` for parameter ``i`` (float64, shaped like the
    parameter).  ``seed``, ``normalization``, ``bias`` and ``filter_axis`` record how they were
    drawn (``seed`` is None for PCA directions).  :meth:`save` / :meth:`load` round-trip them
    exactly (``.npz``), so a grid computed from reloaded directions is the same bit for bit.

    >>> import numpy as np, tempfile, os
    >>> d = random_directions([np.ones((3, 2)), np.zeros(3)], seed=1)
    >>> path = os.path.join(tempfile.mkdtemp(), "dirs.npz")
    >>> d.save(path)
    >>> d2 = Directions.load(path)
    >>> d2.seed, d2.normalization, all(np.array_equal(a, b) for a, b in zip(d[0], d2[0]))
    (1, 'filter', True)
    """

    vectors: tuple[tuple[np.ndarray, ...], ...]
    seed: int | None = None
    normalization: str = "filter"
    bias: str = "zero"
    filter_axis: int = 0
    params_digest: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.vectors)

    def __getitem__(self, k: int) -> tuple[np.ndarray, ...]:
        return self.vectors[k]

    @property
    def digest(self) -> str:
        """SHA-256 of the direction values (identifies a direction set in checkpoints)."""
        return _digest([list(v) for v in self.vectors])

    def check_params(self, params: Sequence[np.ndarray], name: str = "params") -> None:
        """Raise ValueError if ``params`` do not have the shapes of the directions."""
        for k, vec in enumerate(self.vectors):
            if len(vec) != len(params):
                raise ValueError(f"{name}: {len(params)} parameter arrays, but the directions "
                                 f"have {len(vec)}")
            for i, (d, p) in enumerate(zip(vec, params)):
                if d.shape != np.shape(p):
                    raise ValueError(f"{name}[{i}]: shape {np.shape(p)} does not match "
                                     f"direction {k} shape {d.shape}")

    def save(self, path: PathLike) -> None:
        """Write the directions and how they were made to ``path`` (NumPy ``.npz``)."""
        arrays = {f"d{k}_p{i}": np.asarray(v)
                  for k, vec in enumerate(self.vectors) for i, v in enumerate(vec)}
        meta = {"format": _FORMAT, "what": "directions", "n": len(self.vectors),
                "params": len(self.vectors[0]) if self.vectors else 0, "seed": self.seed,
                "normalization": self.normalization, "bias": self.bias,
                "filter_axis": self.filter_axis, "params_digest": self.params_digest,
                "info": self.info}
        _save_npz(path, arrays, meta)

    @classmethod
    def load(cls, path: PathLike) -> Directions:
        """Read directions written by :meth:`save`."""
        arrays, meta = _load_npz(path, "directions")
        vecs = tuple(tuple(arrays[f"d{k}_p{i}"] for i in range(int(meta["params"])))
                     for k in range(int(meta["n"])))
        return cls(vecs, meta.get("seed"), meta.get("normalization", "filter"),
                   meta.get("bias", "zero"), int(meta.get("filter_axis", 0)),
                   meta.get("params_digest"), dict(meta.get("info") or {}))


def filter_normalize(direction: np.ndarray, param: np.ndarray, *, axis: int = 0
                     ) -> np.ndarray:
    """Scale each filter of ``direction`` to the norm of the matching filter of ``param``.

    A filter is one slice along ``axis``: an output channel of a conv kernel
    ``(out, in, kh, kw)`` or a row (neuron) of a PyTorch ``Linear`` weight ``(out, in)`` with
    ``axis=0``; use ``axis=-1`` for the NumPy/Keras layout ``(in, out)``.  Filters whose
    direction is all zero stay zero.  Returns a new float64 array.

    >>> import numpy as np
    >>> p = np.array([[3.0, 4.0], [0.0, 1.0]])
    >>> filter_normalize(np.ones((2, 2)), p).round(4).tolist()
    [[3.5355, 3.5355], [0.7071, 0.7071]]
    """
    d = np.asarray(direction, dtype=np.float64)
    p = np.asarray(param, dtype=np.float64)
    if d.shape != p.shape:
        raise ValueError(f"direction: shape {d.shape} does not match param shape {p.shape}")
    if d.ndim == 0:
        return d * (abs(float(p)) / abs(float(d)) if d != 0 else 0.0)
    if not -d.ndim <= axis < d.ndim:
        raise ValueError(f"axis: {axis} is out of range for a {d.ndim}-D parameter")
    ax = axis % d.ndim
    other = tuple(i for i in range(d.ndim) if i != ax)
    dn = np.sqrt(np.sum(d * d, axis=other, keepdims=True)) if other else np.abs(d)
    pn = np.sqrt(np.sum(p * p, axis=other, keepdims=True)) if other else np.abs(p)
    scale = np.divide(pn, dn, out=np.zeros_like(dn), where=dn > 0)
    return d * scale


def _normalize_one(d: np.ndarray, p: np.ndarray, normalization: str, bias: str,
                   filter_axis: int) -> np.ndarray:
    p64 = p.astype(np.float64)
    if p.ndim <= 1:
        # biases, BatchNorm scales and shifts: Li et al. zero them ("biasbn") by default
        if bias == "zero":
            return np.zeros_like(d)
        if normalization == "none":
            return d
        dn = float(np.linalg.norm(d))
        return d * (float(np.linalg.norm(p64)) / dn) if dn > 0 else d
    if normalization == "filter":
        return filter_normalize(d, p64, axis=filter_axis)
    if normalization == "layer":
        dn = float(np.linalg.norm(d))
        return d * (float(np.linalg.norm(p64)) / dn) if dn > 0 else d
    return d


def random_directions(params: Params, *, n: int = 2, normalization: str = "filter",
                      bias: str = "zero", filter_axis: int = 0, seed: int = 0) -> Directions:
    """``n`` Gaussian directions shaped like ``params``, normalised.

    normalization:
        ``"filter"`` (Li et al.): each filter (slice along ``filter_axis``) of the direction
        gets the norm of the matching filter of the parameters; ``"layer"``: each parameter
        array gets the norm of that array; ``"none"``: raw N(0, 1) draws.
    bias:
        What to do with 1-D (and scalar) parameters such as biases and BatchNorm weights:
        ``"zero"`` (Li et al.'s default: the landscape does not move them) or ``"include"``
        (a Gaussian direction scaled to the parameter's norm, unless ``normalization="none"``).
    seed:
        NumPy ``default_rng`` seed; the same seed and parameter shapes give the same directions.

    >>> import numpy as np
    >>> w = np.arange(12.0).reshape(3, 4)
    >>> d = random_directions([w, np.ones(3)], seed=0)
    >>> np.allclose(np.linalg.norm(d[0][0], axis=1), np.linalg.norm(w, axis=1))
    True
    >>> float(np.abs(d[1][1]).max())        # the bias direction is zero
    0.0
    """
    ps = _check_params(params, "params")
    n = _check_count(n, "n")
    _check_choice(normalization, "normalization", NORMALIZATIONS)
    _check_choice(bias, "bias", BIAS_POLICIES)
    if isinstance(filter_axis, bool) or not isinstance(filter_axis, (int, np.integer)):
        raise TypeError(f"filter_axis: expected an int, got {filter_axis!r}")
    for i, p in enumerate(ps):
        if p.ndim >= 2 and not -p.ndim <= filter_axis < p.ndim:
            raise ValueError(f"filter_axis: {filter_axis} is out of range for params[{i}] "
                             f"of shape {p.shape}")
    seed = _check_count(seed, "seed", 0)
    rng = np.random.default_rng(seed)
    vecs = []
    for _ in range(n):
        vec = []
        for p in ps:
            d = rng.standard_normal(p.shape)
            vec.append(_normalize_one(d, p, normalization, bias, int(filter_axis)))
        vecs.append(tuple(vec))
    return Directions(tuple(vecs), seed, normalization, bias, int(filter_axis),
                      _digest(ps))


def pca_directions(checkpoints: Sequence[Params]) -> tuple[Directions, np.ndarray, np.ndarray]:
    """Top-2 PCA directions of a training path (Li et al. section 7).

    The path is taken relative to its last checkpoint, ``theta_i - theta_last``; the
    directions are the first two principal components of these differences (unit vectors in
    the full parameter space), the coordinates are the projections of the differences, and
    the explained variance ratios are those of the two components.  Signs are chosen so the
    first checkpoint has non-positive coordinates (the path runs towards the origin).

    Returns ``(directions, coords (T, 2), explained_variance_ratio (2,))``.

    >>> import numpy as np
    >>> path = [[np.array([t, 0.1 * t ** 2, 0.0])] for t in np.linspace(-1, 0, 6)]
    >>> d, xy, evr = pca_directions(path)
    >>> xy.shape, bool(evr[0] > 0.9), np.allclose(xy[-1], 0)
    ((6, 2), True, True)
    """
    if not isinstance(checkpoints, (list, tuple)):
        raise TypeError("checkpoints: expected a list of parameter lists (a path), got "
                        f"{type(checkpoints).__name__}")
    if len(checkpoints) < 3:
        raise ValueError("checkpoints: need at least 3 checkpoints for a PCA plane, got "
                         f"{len(checkpoints)}")
    cks = [_check_params(c, f"checkpoints[{t}]") for t, c in enumerate(checkpoints)]
    shapes = [p.shape for p in cks[0]]
    for t, c in enumerate(cks):
        if [p.shape for p in c] != shapes:
            raise ValueError(f"checkpoints[{t}]: parameter shapes {[p.shape for p in c]} differ "
                             f"from checkpoints[0] {shapes}")
    flat = np.stack([np.concatenate([p.astype(np.float64).ravel() for p in c]) for c in cks])
    if flat.shape[1] < 2:
        raise ValueError("checkpoints: need at least 2 parameters in total for a plane")
    diff = flat - flat[-1]
    centred = diff - diff.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s ** 2
    total = float(var.sum())
    if total <= 0:
        raise ValueError("checkpoints: all checkpoints are identical; the path has no extent")
    comps = np.zeros((2, flat.shape[1]))
    k = min(2, vt.shape[0])
    comps[:k] = vt[:k]
    evr = np.zeros(2)
    evr[:k] = var[:k] / total
    coords = diff @ comps.T
    for j in range(2):
        if coords[0, j] > 0:
            comps[j] *= -1
            coords[:, j] *= -1
    vecs = []
    for j in range(2):
        parts, o = [], 0
        for shp in shapes:
            m = int(np.prod(shp))
            parts.append(comps[j, o:o + m].reshape(shp).copy())
            o += m
        vecs.append(tuple(parts))
    info = {"explained_variance_ratio": evr.tolist(), "checkpoints": len(cks)}
    return (Directions(tuple(vecs), None, "pca", "include", 0, _digest(cks[-1]), info),
            coords, evr)


