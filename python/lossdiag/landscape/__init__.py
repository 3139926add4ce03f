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

from ._common import (  # noqa: F401 - module constants, part of the public surface
    AUTO_PROGRESS_SECONDS,
    BIAS_POLICIES,
    CHECKPOINT_EVERY,
    NORMALIZATIONS,
    PLOT_KINDS,
)
from .cost import Cost, estimate_cost, estimate_logistic_cost
from .directions import Directions, filter_normalize, pca_directions, random_directions
from .surfaces import Landscape, logistic_surface, random_line, random_plane
from .trajectories import interpolate, trajectory

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
