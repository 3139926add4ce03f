"""The array API and its backends: what `import lossdiag` re-exports.

Dependencies point one way, from top to bottom; nothing calls back up:

* `metrics`  -- `Metrics`, the streaming accumulator (calls `api.evaluate`) and `derive`
* `api`      -- the public functions: validate, pick the backend from the array type, call it
* `cpu`      -- NumPy arrays -> the compiled kernels (`lossdiag._core`), GIL released
* `cuda`     -- CUDA arrays -> `lossdiag._cuda` on CuPy's stream (imported on first use)
* `results`  -- `BatchStats`, what both backends return
* `validate` -- argument checks and the options both backends share
* `interop`  -- torch tensors, bfloat16 and device detection without importing a framework

Example:
    >>> import numpy as np
    >>> from lossdiag.core import cross_entropy
    >>> round(cross_entropy(np.zeros((2, 4), np.float32), np.array([0, 3])), 4)  # ln 4
    1.3863
"""

from __future__ import annotations

from .api import (
    accuracy,
    binary_accuracy,
    binary_cross_entropy,
    binary_cross_entropy_grad,
    cross_entropy,
    cross_entropy_grad,
    evaluate,
    evaluate_binary,
)
from .metrics import Metrics, derive
from .results import BatchStats

__all__ = [
    "BatchStats", "Metrics", "accuracy", "binary_accuracy", "binary_cross_entropy",
    "binary_cross_entropy_grad", "cross_entropy", "cross_entropy_grad", "derive", "evaluate",
    "evaluate_binary",
]
