"""The Landscape container, checkpointed grid evaluation, and the surfaces: the exact
two-weight logistic surface and random planes and lines through any model."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

from ._common import (
    _FORMAT,
    CHECKPOINT_EVERY,
    LossFn,
    Params,
    PathLike,
    _check_callable,
    _check_float,
    _check_params,
    _check_span,
    _check_steps,
    _check_vector,
    _digest,
    _load_npz,
    _save_npz,
    _say,
    _want_progress,
)
from .cost import Cost, _logistic_throughput, estimate_logistic_cost
from .directions import Directions, random_directions

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
        """Draw the landscape; returns the matplotlib Figure (see :func:`.plots.plot`)."""
        from .plots import plot

        return plot(self, kind, ax=ax, path=path, levels=levels, log=log, title=title,
                    figsize=figsize)

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
    from .. import _core

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


def _directions(directions: Directions | None, params: Params, base: list[np.ndarray], n: int,
                need: str, **random_kw: Any) -> Directions:
    """The ``n`` directions of a random line or plane: the caller's (checked against ``base``)
    or new random ones."""
    if directions is None:
        directions = random_directions(params, n=n, **random_kw)
    elif not isinstance(directions, Directions):
        raise TypeError(f"directions: expected a Directions, got {type(directions).__name__}")
    if len(directions) != n:
        raise ValueError(f"directions: {need}, got {len(directions)}")
    directions.check_params(base)
    return directions


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
    directions = _directions(directions, params, base, 2, "a plane needs 2 directions",
                             normalization=normalization, bias=bias, filter_axis=filter_axis,
                             seed=seed)
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
    directions = _directions(directions, params, base, 1, "a line needs 1 direction",
                             normalization=normalization, bias=bias, filter_axis=filter_axis,
                             seed=seed)
    xs = np.linspace(ax0[0], ax0[1], n)
    key = _digest("line", base, directions.digest, xs)
    loss, cost, secs = _grid_eval(loss_fn, base, dtypes, directions.vectors, [xs], key=key,
                                  progress=progress, checkpoint=checkpoint,
                                  desc="random line", samples=samples)
    return Landscape("line", xs, loss, directions=directions,
                     labels=("alpha (direction 1)", "loss"), cost=cost, seconds=secs)


