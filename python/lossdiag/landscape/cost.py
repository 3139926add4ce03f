"""How long a landscape will take, estimated before it runs."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    pass

from ._common import (
    LossFn,
    Params,
    _check_callable,
    _check_count,
    _check_params,
)

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
    from .. import _core

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


