"""Loss landscapes: exact two-weight logistic surfaces, random planes and lines, linear
interpolation, and training trajectories projected on their top-2 PCA directions.

* :func:`logistic_surface` is the picture of the "loss landscape" lesson: the exact binary
  cross-entropy (and accuracy) of a two-weight logistic regression over a grid of weights,
  every grid point evaluated by the compiled core in one batched, multi-threaded call.
* :func:`random_plane` / :func:`random_line` look at any model given as a function of its
  parameters (a list of NumPy arrays) along Gaussian directions, filter-normalised as in
  Li et al., "Visualizing the Loss Landscape of Neural Nets" (NeurIPS 2018).  The directions,
  their seed and normalisation come back in :class:`Directions`, which can be saved and
  reloaded so a plot can be redrawn bit for bit.
* :func:`interpolate` evaluates the loss on the straight line between two parameter sets;
  :func:`trajectory` projects a training path onto its top-2 PCA directions and evaluates the
  loss on that plane.
* Long grids print a cost estimate, show a tqdm progress bar, and can be interrupted and
  resumed (``checkpoint=``).  :meth:`Landscape.plot` draws a filled contour, a contour with the
  trajectory, a 3-D surface or a 1-D curve with matplotlib; :meth:`Landscape.savefig` writes it
  as PNG.

>>> import numpy as np
>>> from lossdiag.landscape import logistic_surface
>>> rng = np.random.default_rng(0)
>>> X = rng.standard_normal((500, 2))
>>> y = (X @ [2.0, -1.0] > 0).astype(float)
>>> w = np.linspace(-4, 4, 41)
>>> land = logistic_surface(X, y, w, w)
>>> land.loss.shape, land.accuracy.shape
((41, 41), (41, 41))
>>> w1, w2, lmin = land.minimum()
>>> bool(w1 > 0 > w2)
True
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "Cost",
    "Directions",
    "Landscape",
    "estimate_cost",
    "estimate_logistic_cost",
    "filter_normalize",
    "interpolate",
    "logistic_surface",
    "pca_directions",
    "random_directions",
    "random_line",
    "random_plane",
    "trajectory",
]

Params = Sequence[np.ndarray]
LossFn = Callable[[list[np.ndarray]], float]
PathLike = Union[str, "os.PathLike[str]"]

NORMALIZATIONS = ("filter", "layer", "none")
BIAS_POLICIES = ("zero", "include")
PLOT_KINDS = ("contourf", "contour", "surface", "line")

#: progress bar and cost line are shown automatically above this estimated run time (seconds)
AUTO_PROGRESS_SECONDS = 2.0
#: checkpoints of a resumable grid are written at most this often (seconds)
CHECKPOINT_EVERY = 5.0
_FORMAT = "lossdiag.landscape/1"


# --------------------------------------------------------------------------------------------
# cost estimate
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cost:
    """What a grid will cost: ``points`` grid points x ``samples`` samples, and a time estimate.

    >>> str(Cost(points=2601, samples=100_000, seconds=0.8))
    '2601 grid points x 100000 samples = 2.6e+08 sample evaluations, about 0.8 s'
    """

    points: int
    samples: int | None = None
    seconds: float | None = None

    @property
    def evaluations(self) -> int | None:
        """Grid points x samples (None when the number of samples is unknown)."""
        return None if self.samples is None else self.points * self.samples

    def __str__(self) -> str:
        s = f"{self.points} grid points"
        if self.samples is not None:
            s += f" x {self.samples} samples = {self.points * self.samples:.2g} sample evaluations"
        if self.seconds is not None:
            s += f", about {_fmt_seconds(self.seconds)}"
        return s


def _fmt_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.2g} s" if s < 10 else f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


_THROUGHPUT: dict[int, float] = {}


def _logistic_throughput() -> float:
    """Sample evaluations per second of the compiled surface kernel (measured once)."""
    from . import _core

    nth = int(_core.get_num_threads())
    if nth not in _THROUGHPUT:
        rng = np.random.default_rng(0)
        n = 4096
        X = np.ascontiguousarray(rng.standard_normal((n, 2)))
        y = (rng.random(n) < 0.5).astype(np.float64)
        w = np.linspace(-2.0, 2.0, 8)
        out = np.empty((8, 8))
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            _core.surface(X, y, n, w, 8, w, 8, 0.0, out, None)
            best = min(best, time.perf_counter() - t0)
        _THROUGHPUT[nth] = 64 * n / max(best, 1e-9)
    return _THROUGHPUT[nth]


def estimate_logistic_cost(X: Any, w1: Any, w2: Any) -> Cost:
    """Cost of :func:`logistic_surface` on these inputs (measures the kernel once, ~ms).

    >>> import numpy as np
    >>> c = estimate_logistic_cost(np.zeros((1000, 2)), np.zeros(51), np.zeros(51))
    >>> c.points, c.samples, c.evaluations
    (2601, 1000, 2601000)
    """
    n = int(np.shape(X)[0]) if np.ndim(X) >= 1 else 0
    pts = int(np.size(w1)) * int(np.size(w2))
    return Cost(pts, n, pts * n / _logistic_throughput())


def estimate_cost(loss_fn: LossFn, params: Params, points: int, *,
                  samples: int | None = None, repeats: int = 1) -> Cost:
    """Cost of ``points`` evaluations of ``loss_fn``: times ``repeats`` calls at ``params``.

    ``samples`` (how many samples one evaluation reads) only adds to the report.

    >>> import numpy as np
    >>> c = estimate_cost(lambda p: float(np.sum(p[0] ** 2)), [np.ones(3)], 2601, samples=10)
    >>> c.points, c.evaluations
    (2601, 26010)
    """
    ps = _check_params(params, "params")
    _check_callable(loss_fn, "loss_fn")
    points = _check_count(points, "points")
    repeats = _check_count(repeats, "repeats")
    t0 = time.perf_counter()
    for _ in range(repeats):
        loss_fn([p.copy() for p in ps])
    per = (time.perf_counter() - t0) / repeats
    if samples is not None:
        samples = _check_count(samples, "samples")
    return Cost(points, samples, per * points)


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _check_callable(fn: Any, name: str) -> None:
    if not callable(fn):
        raise TypeError(f"{name}: expected a callable taking a list of NumPy arrays and "
                        f"returning a float, got {type(fn).__name__}")


def _check_count(v: Any, name: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {v!r}")
    if int(v) < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {v}")
    return int(v)


def _check_float(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {v!r}")
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"{name}: must be finite, got {v!r}")
    return f


def _check_choice(v: Any, name: str, choices: Sequence[str]) -> str:
    if not isinstance(v, str) or v not in choices:
        raise ValueError(f"{name}: must be one of {', '.join(map(repr, choices))}, got {v!r}")
    return v


def _check_params(params: Any, name: str) -> list[np.ndarray]:
    if isinstance(params, np.ndarray) or not isinstance(params, (list, tuple)):
        raise TypeError(f"{name}: expected a list of NumPy arrays (one per parameter tensor), "
                        f"got {type(params).__name__}")
    if not params:
        raise ValueError(f"{name}: the list of parameters is empty")
    out = []
    for i, p in enumerate(params):
        a = np.asarray(p)
        if a.dtype.kind not in "fiu" or a.dtype.kind == "b":
            raise TypeError(f"{name}[{i}]: expected a real numeric array, got dtype {a.dtype}")
        if a.dtype.kind != "f":
            a = a.astype(np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}[{i}]: contains NaN or inf")
        out.append(a)
    return out


def _check_vector(v: Any, name: str) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a 1-D array of numbers, got {type(v).__name__}") \
            from None
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or inf")
    return np.ascontiguousarray(a)


def _check_steps(steps: Any, name: str, ndim: int) -> tuple[int, ...]:
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool):
        steps = (steps,) * ndim
    if not isinstance(steps, (tuple, list)) or len(steps) != ndim:
        raise TypeError(f"{name}: expected an int or a sequence of {ndim} ints, got {steps!r}")
    return tuple(_check_count(s, name, 2) for s in steps)


def _check_span(span: Any, name: str, ndim: int) -> tuple[tuple[float, float], ...]:
    """span: a number s (-> [-s, s]), or per axis a number or a (lo, hi) pair."""
    def one(v: Any) -> tuple[float, float]:
        if isinstance(v, (tuple, list)):
            if len(v) != 2:
                raise ValueError(f"{name}: a range must be (lo, hi), got {v!r}")
            lo, hi = _check_float(v[0], name), _check_float(v[1], name)
        else:
            s = _check_float(v, name)
            lo, hi = -s, s
        if not hi > lo:
            raise ValueError(f"{name}: the range must have hi > lo, got {v!r}")
        return lo, hi

    if ndim == 2 and isinstance(span, (tuple, list)) and len(span) == 2 and all(
            isinstance(s, (tuple, list)) for s in span):
        return (one(span[0]), one(span[1]))
    return (one(span),) * ndim


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            a = np.ascontiguousarray(p)
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes())
        elif isinstance(p, (list, tuple)):
            h.update(b"[")
            for q in p:
                h.update(_digest(q).encode())
            h.update(b"]")
        else:
            h.update(repr(p).encode())
        h.update(b"|")
    return h.hexdigest()


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


def _save_npz(path: PathLike, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = dict(arrays)
    arrays["__meta__"] = np.array(json.dumps(meta))
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load_npz(path: PathLike, what: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(Path(path), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if "__meta__" not in arrays:
        raise ValueError(f"path: {path} is not a lossdiag landscape file")
    meta = json.loads(str(arrays.pop("__meta__")))
    if meta.get("format") != _FORMAT or meta.get("what") != what:
        raise ValueError(f"path: {path} holds {meta.get('what')!r} "
                         f"({meta.get('format')}), expected {what!r} ({_FORMAT})")
    return arrays, meta


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


# --------------------------------------------------------------------------------------------
# the landscape object and its plots
# --------------------------------------------------------------------------------------------


@dataclass
class Landscape:
    """A loss landscape on a 2-D grid (``loss[j, i]`` at ``(x[i], y[j])``) or a 1-D line.

    kind:
        ``"logistic"`` (x, y are the two weights), ``"plane"`` (coefficients along two random
        directions), ``"trajectory"`` (coordinates along the top-2 PCA directions),
        ``"line"`` (one random direction) or ``"interpolation"`` (alpha from A to B).
    path, path_loss:
        Optional training path in the plane's coordinates ``(T, 2)`` (or ``(T,)`` on a line)
        and the loss at each checkpoint.
    cost, seconds:
        The estimate made before the run and the time it took.
    """

    kind: str
    x: np.ndarray
    loss: np.ndarray
    y: np.ndarray | None = None
    accuracy: np.ndarray | None = None
    directions: Directions | None = None
    path: np.ndarray | None = None
    path_loss: np.ndarray | None = None
    explained_variance: np.ndarray | None = None
    labels: tuple[str, str] = ("x", "y")
    cost: Cost | None = None
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2

    def minimum(self) -> tuple[float, ...]:
        """Lowest finite grid point: ``(x, y, loss)`` (2-D) or ``(x, loss)`` (1-D)."""
        finite = np.where(np.isfinite(self.loss), self.loss, np.inf)
        k = int(np.argmin(finite))
        if self.y is None:
            return float(self.x[k]), float(self.loss[k])
        j, i = np.unravel_index(k, self.loss.shape)
        return float(self.x[i]), float(self.y[j]), float(self.loss[j, i])

    def with_path(self, path: Any, path_loss: Any = None) -> Landscape:
        """A copy with a training path (coordinates in this landscape's axes) attached."""
        p = np.asarray(path, dtype=np.float64)
        want = (p.ndim == 2 and p.shape[1] == 2) if self.y is not None else p.ndim == 1
        if not want or len(p) == 0:
            raise ValueError(f"path: expected shape {'(T, 2)' if self.y is not None else '(T,)'}"
                             f", got {p.shape}")
        pl = None if path_loss is None else np.asarray(path_loss, dtype=np.float64)
        if pl is not None and pl.shape != (len(p),):
            raise ValueError(f"path_loss: expected shape ({len(p)},), got {pl.shape}")
        return replace(self, path=p, path_loss=pl)

    def loss_at(self, x: Any, y: Any = None) -> np.ndarray:
        """Loss interpolated (bilinear / linear) from the grid at the given coordinates."""
        xs = np.atleast_1d(np.asarray(x, dtype=np.float64))
        if self.y is None:
            return np.interp(xs, self.x, self.loss)
        ys = np.atleast_1d(np.asarray(y, dtype=np.float64))
        fi = np.interp(xs, self.x, np.arange(len(self.x)))
        fj = np.interp(ys, self.y, np.arange(len(self.y)))
        i0 = np.clip(np.floor(fi).astype(int), 0, len(self.x) - 2)
        j0 = np.clip(np.floor(fj).astype(int), 0, len(self.y) - 2)
        ti, tj = fi - i0, fj - j0
        L = self.loss
        return ((1 - ti) * (1 - tj) * L[j0, i0] + ti * (1 - tj) * L[j0, i0 + 1]
                + (1 - ti) * tj * L[j0 + 1, i0] + ti * tj * L[j0 + 1, i0 + 1])

    # ------------------------------------------------------------------ plots
    def plot(self, kind: str | None = None, *, ax: Axes | None = None, path: Any = None,
             levels: int = 30, log: bool | None = None, title: str | None = None,
             figsize: tuple[float, float] | None = None) -> Figure:
        """Draw the landscape; returns the matplotlib Figure.

        kind:
            ``"contourf"`` (filled contour, the default for 2-D), ``"contour"`` (contour lines
            with the trajectory drawn over them), ``"surface"`` (3-D surface) or ``"line"``
            (the default and only choice for 1-D landscapes).
        path:
            A training path to draw (defaults to the attached ``self.path``).
        log:
            Log-spaced contour levels / log y-axis; default: when the loss spans more than
            a factor 20 (contours) or 100 (curves).
        """
        from matplotlib.figure import Figure

        kind = kind or ("line" if self.y is None else "contourf")
        _check_choice(kind, "kind", PLOT_KINDS)
        if (kind == "line") != (self.y is None):
            raise ValueError(f"kind: {kind!r} does not fit a {self.ndim}-D landscape")
        p = self.path if path is None else np.asarray(path, dtype=np.float64)
        fin = self.loss[np.isfinite(self.loss)]
        lo = float(fin.min()) if fin.size else 0.0
        hi = float(fin.max()) if fin.size else 1.0
        if log is None:  # contours resolve valleys better on log levels; curves rarely need it
            log = lo > 0 and hi / lo > (100 if kind == "line" else 20)
        if ax is None:
            fig = Figure(figsize=figsize or ((7.0, 4.2) if kind == "line" else (6.4, 5.2)),
                         layout="constrained")
            if kind == "surface":
                # computed_zorder=False: the trajectory is drawn over the surface, not hidden
                ax = fig.add_subplot(projection="3d", computed_zorder=False)
            else:
                ax = fig.add_subplot()
        else:
            fig = ax.figure  # type: ignore[assignment]
        xl, yl = self.labels
        if kind == "line":
            ax.plot(self.x, self.loss, lw=1.6, label="loss")
            if log:
                ax.set_yscale("log")
            if p is not None:
                ax.plot(p, self.loss_at(p), "o", ms=4, color="C3", label="path")
            if self.kind == "interpolation":
                for a, lab in ((0.0, "A"), (1.0, "B")):
                    if self.x[0] <= a <= self.x[-1]:
                        ax.axvline(a, color="gray", lw=0.8, ls=":")
                        ax.text(a, 1.0, f" {lab}", transform=ax.get_xaxis_transform(),
                                va="top", color="gray")
            if self.accuracy is not None:
                ax2 = ax.twinx()
                ax2.plot(self.x, self.accuracy, color="C2", lw=1.0, ls="--", label="accuracy")
                ax2.set_ylabel("accuracy")
                ax2.set_ylim(0, 1.02)
            ax.set_xlabel(xl)
            ax.set_ylabel("loss")
        else:
            assert self.y is not None
            X, Y = np.meshgrid(self.x, self.y)
            Z = np.where(np.isfinite(self.loss), self.loss, np.nan)
            lv = (np.geomspace(lo, hi, levels) if log else np.linspace(lo, hi, levels)) \
                if hi > lo else levels
            if kind == "surface":
                Zs = np.log10(Z) if log else Z
                ax.plot_surface(X, Y, Zs, cmap="viridis", linewidth=0,  # type: ignore[union-attr]
                                antialiased=True, rcount=min(80, len(self.y)),
                                ccount=min(80, len(self.x)), alpha=0.9, zorder=1)
                if p is not None:
                    zp = self.loss_at(p[:, 0], p[:, 1])
                    zp = np.log10(zp) if log else zp
                    ax.plot(p[:, 0], p[:, 1], zp, color="#d62728", lw=2.2, zorder=5)
                    ax.scatter([p[0, 0]], [p[0, 1]], [zp[0]], s=40, c="white",  # type: ignore[arg-type]
                               edgecolors="#d62728", zorder=6, depthshade=False)
                    ax.scatter([p[-1, 0]], [p[-1, 1]], [zp[-1]], s=120, c="#d62728",  # type: ignore[arg-type]
                               marker="*", edgecolors="k", zorder=6, depthshade=False)
                ax.set_zlabel("log10 loss" if log else "loss")  # type: ignore[union-attr]
                ax.view_init(elev=35, azim=-60)  # type: ignore[union-attr]
            elif kind == "contourf":
                from matplotlib import colors

                norm = colors.LogNorm(lo, hi) if log and hi > lo else None
                cs = ax.contourf(X, Y, Z, levels=lv, cmap="viridis", norm=norm,
                                 extend="neither")
                ax.contour(X, Y, Z, levels=lv, colors="k", linewidths=0.3, alpha=0.4)
                cb = fig.colorbar(cs, ax=ax, shrink=0.9)
                cb.set_label("loss")
                if log:
                    _log_colorbar_ticks(cb, lo, hi)
            else:
                cs = ax.contour(X, Y, Z, levels=lv, cmap="viridis", linewidths=0.9)
                ax.clabel(cs, cs.levels[::4], inline=True, fontsize=7, fmt="%.3g")
            if kind != "surface":
                xm, ym, lm = self.minimum()
                ax.plot([xm], [ym], marker="X", color="white", mec="k", ms=10, mew=1.2,
                        ls="none", label=f"grid minimum ({lm:.3g})")
                if self.kind == "plane" and self.x[0] <= 0 <= self.x[-1] and \
                        self.y[0] <= 0 <= self.y[-1]:
                    ax.plot([0.0], [0.0], marker="P", color="#ff7f0e", mec="k", ms=10,
                            ls="none", label="the model (origin)")
                if p is not None:
                    ax.plot(p[:, 0], p[:, 1], "-", color="#d62728", lw=1.8, label="trajectory")
                    ax.plot(p[:, 0], p[:, 1], "o", color="#d62728", ms=2.5)
                    ax.plot(p[0, 0], p[0, 1], "o", color="#d62728", ms=8, mfc="white",
                            label="start")
                    ax.plot(p[-1, 0], p[-1, 1], "*", color="#d62728", ms=14, mec="k",
                            label="end")
                ax.legend(loc="upper right", fontsize=8, framealpha=0.85)
                ax.set_xlim(self.x[0], self.x[-1])
                ax.set_ylim(self.y[0], self.y[-1])
            ax.set_xlabel(xl)
            ax.set_ylabel(yl)
        ax.set_title(title if title is not None else self._title(), fontsize=10)
        return fig

    def _title(self) -> str:
        names = {"logistic": "logistic-regression loss (BCE)", "plane": "loss on a random plane",
                 "trajectory": "loss on the PCA plane of the trajectory",
                 "line": "loss along a random direction",
                 "interpolation": "loss on the line from A to B"}
        t = names.get(self.kind, "loss landscape")
        if self.directions is not None and self.directions.seed is not None:
            t += f" (seed {self.directions.seed}, {self.directions.normalization} norm.)"
        return t

    def savefig(self, path: PathLike, kind: str | None = None, *, dpi: int = 110,
                **kwargs: Any) -> Path:
        """Draw with :meth:`plot` and save as PNG; returns the path."""
        fig = self.plot(kind, **kwargs)
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi, format="png")
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: PathLike) -> None:
        """Write the grid, path and directions to ``path`` (``.npz``)."""
        arrays: dict[str, np.ndarray] = {"x": self.x, "loss": self.loss}
        for name in ("y", "accuracy", "path", "path_loss", "explained_variance"):
            v = getattr(self, name)
            if v is not None:
                arrays[name] = np.asarray(v)
        d = self.directions
        if d is not None:
            arrays.update({f"d{k}_p{i}": np.asarray(v) for k, vec in enumerate(d.vectors)
                           for i, v in enumerate(vec)})
        meta = {"format": _FORMAT, "what": "landscape", "kind": self.kind,
                "labels": list(self.labels), "seconds": self.seconds, "meta": self.meta,
                "directions": None if d is None else {
                    "n": len(d), "params": len(d.vectors[0]), "seed": d.seed,
                    "normalization": d.normalization, "bias": d.bias,
                    "filter_axis": d.filter_axis, "params_digest": d.params_digest,
                    "info": d.info}}
        _save_npz(path, arrays, meta)

    @classmethod
    def load(cls, path: PathLike) -> Landscape:
        """Read a landscape written by :meth:`save`."""
        arrays, meta = _load_npz(path, "landscape")
        dm = meta.get("directions")
        dirs = None
        if dm:
            vecs = tuple(tuple(arrays.pop(f"d{k}_p{i}") for i in range(int(dm["params"])))
                         for k in range(int(dm["n"])))
            dirs = Directions(vecs, dm.get("seed"), dm["normalization"], dm["bias"],
                              int(dm["filter_axis"]), dm.get("params_digest"),
                              dict(dm.get("info") or {}))
        return cls(meta["kind"], arrays["x"], arrays["loss"], arrays.get("y"),
                   arrays.get("accuracy"), dirs, arrays.get("path"), arrays.get("path_loss"),
                   arrays.get("explained_variance"), tuple(meta.get("labels", ("x", "y"))),
                   None, float(meta.get("seconds", 0.0)), dict(meta.get("meta") or {}))


def _log_colorbar_ticks(cb: Any, lo: float, hi: float) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter

    ticks = np.geomspace(lo, hi, 6)
    cb.ax.yaxis.set_major_locator(FixedLocator(ticks))
    cb.ax.yaxis.set_minor_locator(FixedLocator([]))
    cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))


# --------------------------------------------------------------------------------------------
# the resumable grid engine
# --------------------------------------------------------------------------------------------


class _Grid:
    """Evaluates blocks of flat grid indices, with progress, checkpoints and resume."""

    def __init__(self, shape: tuple[int, ...], *, key: str, checkpoint: PathLike | None,
                 with_accuracy: bool, progress: bool, desc: str, cost: Cost | None) -> None:
        self.shape = shape
        self.size = int(np.prod(shape))
        self.key = key
        self.path = None if checkpoint is None else Path(checkpoint)
        self.loss = np.full(self.size, np.nan)
        self.acc = np.full(self.size, np.nan) if with_accuracy else None
        self.done = np.zeros(self.size, dtype=bool)
        self.progress = progress
        self.desc = desc
        self.cost = cost
        if self.path is not None and self.path.exists():
            self._resume()

    def _resume(self) -> None:
        assert self.path is not None
        try:
            arrays, meta = _load_npz(self.path, "grid-checkpoint")
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"checkpoint: cannot read {self.path}: {exc}") from None
        if meta.get("key") != self.key or arrays["loss"].shape != (self.size,):
            raise ValueError(f"checkpoint: {self.path} belongs to a different grid (other "
                             "data, directions, coordinates or settings); delete it or pass "
                             "another path")
        self.loss[:] = arrays["loss"]
        self.done[:] = arrays["done"]
        if self.acc is not None and "acc" in arrays:
            self.acc[:] = arrays["acc"]

    def save(self) -> None:
        if self.path is None:
            return
        arrays = {"loss": self.loss, "done": self.done}
        if self.acc is not None:
            arrays["acc"] = self.acc
        _save_npz(self.path, arrays, {"format": _FORMAT, "what": "grid-checkpoint",
                                      "key": self.key, "shape": list(self.shape)})

    def run(self, blocks: Iterable[np.ndarray],
            fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]) -> None:
        todo = [b for b in blocks if not self.done[b].all()]
        remaining = self.size - int(self.done.sum())
        bar = None
        if self.progress and remaining:
            if self.cost is not None:
                _say(f"lossdiag.landscape: {self.desc}: {self.cost}")
            from tqdm.auto import tqdm

            bar = tqdm(total=self.size, initial=self.size - remaining, desc=self.desc,
                       unit="pt", leave=False, file=sys.stderr)
        last = time.perf_counter()
        try:
            for b in todo:
                lv, av = fn(b)
                self.loss[b] = lv
                if self.acc is not None and av is not None:
                    self.acc[b] = av
                self.done[b] = True
                if bar is not None:
                    bar.update(len(b))
                if self.path is not None and time.perf_counter() - last > CHECKPOINT_EVERY:
                    self.save()
                    last = time.perf_counter()
        except KeyboardInterrupt:
            self.save()
            n = int(self.done.sum())
            where = f"; saved to {self.path}, run the same call again to resume" \
                if self.path is not None else " (pass checkpoint=PATH to make it resumable)"
            _say(f"lossdiag.landscape: interrupted after {n}/{self.size} grid points{where}")
            raise
        finally:
            if bar is not None:
                bar.close()
        self.save()


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _want_progress(progress: bool | None, cost: Cost | None) -> bool:
    if progress is None:
        return bool(cost is not None and cost.seconds is not None
                    and cost.seconds > AUTO_PROGRESS_SECONDS)
    if not isinstance(progress, bool):
        raise TypeError(f"progress: expected True, False or None, got {progress!r}")
    return progress


# --------------------------------------------------------------------------------------------
# the exact logistic surface
# --------------------------------------------------------------------------------------------


def logistic_surface(X: Any, y: Any, w1: Any, w2: Any, *, bias: float = 0.0,
                     accuracy: bool = True, progress: bool | None = None,
                     checkpoint: PathLike | None = None) -> Landscape:
    """Exact binary cross-entropy (and accuracy) of ``sigmoid(w1*x0 + w2*x1 + bias)`` on a grid.

    ``loss[j, i]`` is the mean BCE-with-logits over all samples at weights ``(w1[i], w2[j])``,
    ``accuracy[j, i]`` the share of samples with ``(z > 0) == (y >= 0.5)``.  The compiled core
    evaluates every grid point over every sample in one batched, multi-threaded float64 call
    (the GIL is released).  When a progress bar or a checkpoint is wanted the grid is split
    into blocks of rows, each still one batched call; the values are identical either way.

    Parameters
    ----------
    X : array (n, 2) of features; y : array (n,) of targets in [0, 1] (0/1 labels or soft).
    w1, w2 : 1-D arrays of the weight values on each axis (e.g. ``np.linspace(-5, 5, 51)``).
    bias : the fixed intercept.
    progress : tqdm bar and cost line; default (None) when the estimate exceeds 2 s.
    checkpoint : ``.npz`` path: finished rows are saved there and a rerun resumes from it.

    >>> import numpy as np
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0]]); y = np.array([1.0, 0.0])
    >>> land = logistic_surface(X, y, [0.0, 2.0], [0.0])
    >>> land.loss.round(4).tolist()                  # ln 2 at w = 0
    [[0.6931, 0.41]]
    """
    from . import _core

    try:
        Xa = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"X: expected a numeric array of shape (n, 2), got {type(X).__name__}") \
            from None
    if Xa.ndim != 2 or Xa.shape[1] != 2 or Xa.shape[0] < 1:
        raise ValueError(f"X: expected shape (n, 2) with n >= 1, got {Xa.shape}")
    if not np.all(np.isfinite(Xa)):
        raise ValueError("X: contains NaN or inf")
    try:
        ya = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"y: expected a numeric array of shape (n,), got {type(y).__name__}") \
            from None
    if ya.shape != (Xa.shape[0],):
        raise ValueError(f"y: expected shape ({Xa.shape[0]},) to match X, got {ya.shape}")
    if not np.all(np.isfinite(ya)) or ya.min() < 0 or ya.max() > 1:
        raise ValueError("y: targets must be finite and in [0, 1]")
    a1 = _check_vector(w1, "w1")
    a2 = _check_vector(w2, "w2")
    b = _check_float(bias, "bias")
    if not isinstance(accuracy, bool):
        raise TypeError(f"accuracy: expected a bool, got {accuracy!r}")
    Xa = np.ascontiguousarray(Xa)
    ya = np.ascontiguousarray(ya)
    n, n1, n2 = Xa.shape[0], a1.size, a2.size
    cost = estimate_logistic_cost(Xa, a1, a2)
    show = _want_progress(progress, cost)
    loss = np.empty((n2, n1))
    acc = np.empty((n2, n1)) if accuracy else None
    t0 = time.perf_counter()
    if not show and checkpoint is None:
        _core.surface(Xa, ya, n, a1, n1, a2, n2, b, loss, acc)  # the whole grid, one call
    else:
        # row blocks of ~0.25 s each so the bar moves and Ctrl-C is answered promptly
        per_row = n1 * n / _logistic_throughput()
        rows = int(max(1, min(n2, 0.25 / max(per_row, 1e-12))))
        key = _digest("logistic", Xa, ya, a1, a2, b, accuracy)
        grid = _Grid((n2, n1), key=key, checkpoint=checkpoint, with_accuracy=accuracy,
                     progress=show, desc="logistic surface", cost=cost)

        def block(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            j0, j1 = int(idx[0]) // n1, int(idx[-1]) // n1 + 1
            lo = np.empty((j1 - j0, n1))
            ao = np.empty((j1 - j0, n1)) if accuracy else None
            _core.surface(Xa, ya, n, a1, n1, np.ascontiguousarray(a2[j0:j1]), j1 - j0, b,
                          lo, ao)
            return lo.ravel(), None if ao is None else ao.ravel()

        blocks = [np.arange(j * n1, min(n2, j + rows) * n1) for j in range(0, n2, rows)]
        grid.run(blocks, block)
        loss = grid.loss.reshape(n2, n1)
        acc = None if grid.acc is None else grid.acc.reshape(n2, n1)
    return Landscape("logistic", a1, loss, a2, acc, labels=("w1", "w2"), cost=cost,
                     seconds=time.perf_counter() - t0,
                     meta={"bias": b, "samples": n})


# --------------------------------------------------------------------------------------------
# landscapes of any model: random planes / lines, interpolation, trajectories
# --------------------------------------------------------------------------------------------


def _point(base: list[np.ndarray], dtypes: list[np.dtype], dirs: Sequence[Sequence[np.ndarray]],
           coeffs: Sequence[float]) -> list[np.ndarray]:
    """theta + sum_k c_k d_k, computed in float64 and cast to each parameter's dtype."""
    out = []
    for i, (p, dt) in enumerate(zip(base, dtypes)):
        v = p.copy()
        for c, d in zip(coeffs, dirs):
            if c != 0.0:
                v += c * d[i]
        out.append(v.astype(dt, copy=False))
    return out


def _call(loss_fn: LossFn, point: list[np.ndarray]) -> float:
    v = loss_fn(point)
    try:
        return float(v)
    except (TypeError, ValueError):
        raise TypeError(f"loss_fn: must return a float, returned {type(v).__name__}") from None


def _grid_eval(loss_fn: LossFn, base: list[np.ndarray], dtypes: list[np.dtype],
               dirs: Sequence[Sequence[np.ndarray]], axes: list[np.ndarray], *,
               key: str, progress: bool | None, checkpoint: PathLike | None, desc: str,
               samples: int | None) -> tuple[np.ndarray, Cost, float]:
    shape = tuple(len(a) for a in reversed(axes))   # (ny, nx) or (nx,)
    size = int(np.prod(shape))
    # time one evaluation at the centre for the cost estimate (it also checks loss_fn works)
    t0 = time.perf_counter()
    _call(loss_fn, [p.astype(dt, copy=False) for p, dt in zip(base, dtypes)])
    cost = Cost(size, samples, (time.perf_counter() - t0) * size)
    show = _want_progress(progress, cost)
    grid = _Grid(shape, key=key, checkpoint=checkpoint, with_accuracy=False, progress=show,
                 desc=desc, cost=cost)

    def block(idx: np.ndarray) -> tuple[np.ndarray, None]:
        out = np.empty(len(idx))
        for k, flat in enumerate(idx):
            pos = np.unravel_index(int(flat), shape)[::-1]   # (i, j): x index first
            coeffs = [float(a[q]) for a, q in zip(axes, pos)]
            out[k] = _call(loss_fn, _point(base, dtypes, dirs, coeffs))
        return out, None

    t1 = time.perf_counter()
    grid.run([np.array([k]) for k in range(size)], block)
    return grid.loss.reshape(shape), cost, time.perf_counter() - t1


def _base(params: Params, name: str) -> tuple[list[np.ndarray], list[np.dtype]]:
    ps = _check_params(params, name)
    return [p.astype(np.float64) for p in ps], [p.dtype for p in ps]


def random_plane(loss_fn: LossFn, params: Params, *, steps: int | tuple[int, int] = (51, 51),
                 span: Any = 1.0, normalization: str = "filter", seed: int = 0,
                 bias: str = "zero", filter_axis: int = 0,
                 directions: Directions | None = None, samples: int | None = None,
                 progress: bool | None = None, checkpoint: PathLike | None = None
                 ) -> Landscape:
    """Loss on the plane ``params + a*d1 + b*d2`` through the parameters (Li et al. 2018).

    ``loss_fn(list_of_arrays) -> float`` evaluates the model with the given parameters (same
    shapes and dtypes as ``params``).  ``d1, d2`` are Gaussian directions drawn with ``seed``
    and normalised (see :func:`random_directions` for ``normalization``, ``bias`` and
    ``filter_axis``), or the ``directions`` you pass (e.g. :meth:`Directions.load`).  ``a`` and
    ``b`` run over ``steps`` values in ``[-span, span]`` (``span`` may also be ``(lo, hi)`` or a
    pair of ranges).  The result's ``loss[j, i]`` is at ``(a[i], b[j])`` and its
    ``directions`` hold everything needed to redraw the plot.  ``samples`` (optional) is shown
    in the cost estimate; ``checkpoint`` makes the grid resumable.

    >>> import numpy as np
    >>> w = [np.array([[1.0, -2.0], [0.5, 0.3]]), np.array([0.1, 0.0])]
    >>> f = lambda p: float(np.sum(p[0] ** 2) + np.sum(p[1] ** 2))
    >>> land = random_plane(f, w, steps=(5, 5), span=1.0, seed=3)
    >>> land.loss.shape, land.directions.seed, land.directions.normalization
    ((5, 5), 3, 'filter')
    >>> bool(np.isclose(land.loss[2, 2], f(w)))            # the centre is the model itself
    True
    """
    _check_callable(loss_fn, "loss_fn")
    base, dtypes = _base(params, "params")
    nsteps = _check_steps(steps, "steps", 2)
    (ax0, ax1) = _check_span(span, "span", 2)
    if directions is None:
        directions = random_directions(params, n=2, normalization=normalization, bias=bias,
                                       filter_axis=filter_axis, seed=seed)
    elif not isinstance(directions, Directions):
        raise TypeError(f"directions: expected a Directions, got {type(directions).__name__}")
    if len(directions) != 2:
        raise ValueError(f"directions: a plane needs 2 directions, got {len(directions)}")
    directions.check_params(base)
    xs = np.linspace(ax0[0], ax0[1], nsteps[0])
    ys = np.linspace(ax1[0], ax1[1], nsteps[1])
    key = _digest("plane", base, directions.digest, xs, ys)
    loss, cost, secs = _grid_eval(loss_fn, base, dtypes, directions.vectors, [xs, ys], key=key,
                                  progress=progress, checkpoint=checkpoint,
                                  desc="random plane", samples=samples)
    return Landscape("plane", xs, loss, ys, directions=directions,
                     labels=("alpha (direction 1)", "beta (direction 2)"), cost=cost,
                     seconds=secs)


def random_line(loss_fn: LossFn, params: Params, *, steps: int = 51, span: Any = 1.0,
                normalization: str = "filter", seed: int = 0, bias: str = "zero",
                filter_axis: int = 0, directions: Directions | None = None,
                samples: int | None = None, progress: bool | None = None,
                checkpoint: PathLike | None = None) -> Landscape:
    """Loss along ``params + a*d`` for one normalised Gaussian direction ``d`` (1-D).

    Same arguments as :func:`random_plane` with one direction.

    >>> import numpy as np
    >>> f = lambda p: float(np.sum(p[0] ** 2))
    >>> land = random_line(f, [np.ones((2, 3))], steps=11, span=2.0, seed=0)
    >>> land.loss.shape, float(land.x[5])
    ((11,), 0.0)
    """
    _check_callable(loss_fn, "loss_fn")
    base, dtypes = _base(params, "params")
    (n,) = _check_steps(steps, "steps", 1)
    (ax0,) = _check_span(span, "span", 1)
    if directions is None:
        directions = random_directions(params, n=1, normalization=normalization, bias=bias,
                                       filter_axis=filter_axis, seed=seed)
    elif not isinstance(directions, Directions):
        raise TypeError(f"directions: expected a Directions, got {type(directions).__name__}")
    if len(directions) != 1:
        raise ValueError(f"directions: a line needs 1 direction, got {len(directions)}")
    directions.check_params(base)
    xs = np.linspace(ax0[0], ax0[1], n)
    key = _digest("line", base, directions.digest, xs)
    loss, cost, secs = _grid_eval(loss_fn, base, dtypes, directions.vectors, [xs], key=key,
                                  progress=progress, checkpoint=checkpoint,
                                  desc="random line", samples=samples)
    return Landscape("line", xs, loss, directions=directions,
                     labels=("alpha (direction 1)", "loss"), cost=cost, seconds=secs)


def interpolate(params_a: Params, params_b: Params, loss_fn: LossFn, steps: int = 51, *,
                alpha_range: tuple[float, float] = (0.0, 1.0), samples: int | None = None,
                progress: bool | None = None, checkpoint: PathLike | None = None
                ) -> Landscape:
    """Loss on the straight line ``(1 - alpha) * A + alpha * B`` (Goodfellow et al. 2015).

    ``alpha`` runs over ``steps`` values in ``alpha_range`` (e.g. ``(-0.5, 1.5)`` to look past
    both ends).  Typical use: A = initialisation, B = trained weights; or two minima.

    >>> import numpy as np
    >>> f = lambda p: float(np.sum((p[0] - 1.0) ** 2))
    >>> land = interpolate([np.zeros(3)], [np.full(3, 2.0)], f, steps=5)
    >>> land.x.tolist(), land.loss.tolist()
    ([0.0, 0.25, 0.5, 0.75, 1.0], [3.0, 0.75, 0.0, 0.75, 3.0])
    """
    _check_callable(loss_fn, "loss_fn")
    a, dtypes = _base(params_a, "params_a")
    b, _ = _base(params_b, "params_b")
    if [p.shape for p in a] != [p.shape for p in b]:
        raise ValueError(f"params_b: shapes {[p.shape for p in b]} differ from params_a "
                         f"{[p.shape for p in a]}")
    (n,) = _check_steps(steps, "steps", 1)
    if not isinstance(alpha_range, (tuple, list)) or len(alpha_range) != 2:
        raise TypeError(f"alpha_range: expected (lo, hi), got {alpha_range!r}")
    ((lo, hi),) = _check_span(tuple(alpha_range), "alpha_range", 1)
    xs = np.linspace(lo, hi, n)
    diff = tuple(q - p for p, q in zip(a, b))
    dirs = Directions((diff,), None, "none", "include", 0, _digest(a),
                      {"what": "B - A"})
    key = _digest("interpolation", a, b, xs)
    loss, cost, secs = _grid_eval(loss_fn, a, dtypes, dirs.vectors, [xs], key=key,
                                  progress=progress, checkpoint=checkpoint,
                                  desc="interpolation", samples=samples)
    return Landscape("interpolation", xs, loss, directions=dirs, labels=("alpha", "loss"),
                     cost=cost, seconds=secs)


def trajectory(checkpoints: Sequence[Params], loss_fn: LossFn, *,
               steps: int | tuple[int, int] = (41, 41), margin: float = 0.25,
               samples: int | None = None, progress: bool | None = None,
               checkpoint: PathLike | None = None) -> Landscape:
    """Project a training path on its top-2 PCA directions and evaluate the loss on that plane.

    ``checkpoints`` is the list of parameter lists saved during training (oldest first).  The
    plane goes through the last checkpoint, spanned by the two principal directions of
    ``theta_i - theta_last`` (see :func:`pca_directions`); the grid covers the projected path
    with ``margin`` (a fraction of its largest extent) on every side.  The result holds the
    projected ``path`` (T, 2), the true loss at each checkpoint in ``path_loss``, and the
    ``explained_variance`` ratios of the two directions: when they sum far below 1 the path
    does not lie in the plane and the picture shows only part of it.

    >>> import numpy as np
    >>> f = lambda p: float(np.sum(p[0] ** 2 * [1.0, 10.0, 0.1]))
    >>> w, path = np.array([2.0, 1.0, 1.0]), []
    >>> for _ in range(15):
    ...     path.append([w.copy()]); w = w - 0.05 * 2 * w * [1.0, 10.0, 0.1]
    >>> land = trajectory(path, f, steps=(9, 9))
    >>> land.loss.shape, land.path.shape, bool(land.explained_variance.sum() > 0.9)
    ((9, 9), (15, 2), True)
    """
    _check_callable(loss_fn, "loss_fn")
    dirs, coords, evr = pca_directions(checkpoints)
    nsteps = _check_steps(steps, "steps", 2)
    m = _check_float(margin, "margin")
    if m < 0:
        raise ValueError(f"margin: must be >= 0, got {margin}")
    base, dtypes = _base(checkpoints[-1], "checkpoints[-1]")
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    ext = float(max(hi - lo))
    pad = m * ext if ext > 0 else 1.0
    xs = np.linspace(lo[0] - pad, hi[0] + pad, nsteps[0])
    ys = np.linspace(lo[1] - pad, hi[1] + pad, nsteps[1])
    key = _digest("trajectory", base, dirs.digest, xs, ys)
    loss, cost, secs = _grid_eval(loss_fn, base, dtypes, dirs.vectors, [xs, ys], key=key,
                                  progress=progress, checkpoint=checkpoint,
                                  desc="trajectory plane", samples=samples)
    path_loss = np.array([_call(loss_fn, [np.asarray(p) for p in c]) for c in checkpoints])
    pct = evr * 100
    return Landscape("trajectory", xs, loss, ys, directions=dirs, path=coords,
                     path_loss=path_loss, explained_variance=evr,
                     labels=(f"PC1 ({pct[0]:.1f}% of variance)",
                             f"PC2 ({pct[1]:.1f}% of variance)"),
                     cost=cost, seconds=secs)
