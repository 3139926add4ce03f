"""lossdiag: fused, memory-speed cross-entropy metrics, and a diagnosis of strange loss curves.

The compiled core computes cross-entropy, accuracy, the gradient, confusion matrices and
confidence statistics for (N, C), (N, C, H, W) and channels-last logits in one pass over memory;
the diagnosis layer reads training histories and says what is going on, with the numbers.
"""

from __future__ import annotations

import os
from typing import Any

from . import _core
from ._version import __version__
from .core import (
    BatchStats,
    Metrics,
    accuracy,
    binary_accuracy,
    binary_cross_entropy,
    binary_cross_entropy_grad,
    cross_entropy,
    cross_entropy_grad,
    evaluate,
    evaluate_binary,
)


def set_num_threads(n: int) -> None:
    """Number of OpenMP threads the CPU kernels use (default: OMP_NUM_THREADS or all cores).

    Results are bitwise identical for any thread count. At most 1024 (a kernel never runs more
    threads than it has work items, at most 64).
    """
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"n: expected an int, got {n!r}")
    top = getattr(_core, "max_threads", 1024)
    if not 1 <= n <= top:
        raise ValueError(f"n: must be in [1, {top}], got {n}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """Number of threads the CPU kernels use."""
    return int(_core.get_num_threads())


def info() -> dict[str, Any]:
    """Version, SIMD level in use, thread count and the backends that can be used.

    ``backends`` lists "cuda" only when the CUDA backend was built, a CUDA device answers and
    CuPy is installed; otherwise ``cuda_unusable_reason`` says which of these is missing.

    Example:
        >>> import lossdiag
        >>> sorted(lossdiag.info())[:3]
        ['backends', 'best_simd', 'cuda_built']
        >>> "cpu" in lossdiag.info()["backends"]
        True
    """
    from .core.cuda import cuda_availability

    cuda_built, cuda_device, cuda_reason = cuda_availability()
    return {
        "version": __version__,
        "simd": _core.simd(),
        "best_simd": _core.best_simd(),
        "threads": get_num_threads(),
        "openmp": bool(_core.openmp),
        "backends": ["cpu"] + (["cuda"] if cuda_reason is None else []),
        "cuda_built": cuda_built,
        "cuda_device": cuda_device,
        "cuda_unusable_reason": cuda_reason,
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
    }


def __getattr__(name: str) -> Any:
    # The diagnosis layer and landscapes import matplotlib lazily: keep `import lossdiag` fast.
    if name in ("History", "HistoryFormatError"):
        from . import history

        return getattr(history, name)
    if name in ("Monitor", "AlarmThresholds"):  # live diagnosis (lossdiag.monitor)
        from . import monitor

        return getattr(monitor, name)
    if name in ("diagnose", "Diagnosis", "Finding"):
        from . import diagnosis

        return getattr(diagnosis, name)
    if name in ("dask", "distributed"):  # integrations: dask / torch imported on first use
        import importlib

        return importlib.import_module(f".{name}", __name__)
    if name == "landscape":
        import importlib

        return importlib.import_module(".landscape", __name__)
    raise AttributeError(f"module 'lossdiag' has no attribute {name!r}")


__all__ = [
    "AlarmThresholds", "BatchStats", "Diagnosis", "Finding", "History", "HistoryFormatError",
    "Metrics", "Monitor", "accuracy",
    "binary_accuracy",
    "binary_cross_entropy", "binary_cross_entropy_grad", "cross_entropy", "cross_entropy_grad",
    "diagnose", "evaluate", "evaluate_binary", "get_num_threads", "info", "landscape",
    "set_num_threads",
]
