"""Paths through parameter space: linear interpolation between two models and training
trajectories on their top-2 PCA plane."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass

from ._common import (
    LossFn,
    Params,
    PathLike,
    _check_callable,
    _check_float,
    _check_span,
    _check_steps,
    _digest,
)
from .directions import Directions, pca_directions
from .surfaces import Landscape, _base, _call, _grid_eval


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
