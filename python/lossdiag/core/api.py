"""Public functions: pick the backend from the array type, then call it.

NumPy (and other CPU arrays) -> compiled CPU kernels. CuPy arrays, objects exposing
``__cuda_array_interface__`` or a CUDA DLPack capsule (e.g. torch CUDA tensors) -> CUDA kernels.
Mixing the two in one call is refused: a silent device copy would hide a real cost.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import cpu, interop
from . import validate as V
from .results import BatchStats


def _host_scalar(x: Any) -> bool:
    """A Python or NumPy scalar (or 0-d NumPy array): it has no device, so it goes with either."""
    return isinstance(x, (int, float, np.generic)) or (isinstance(x, np.ndarray) and x.ndim == 0)


_HOST_TYPES = (np.ndarray, type(None))


def _backend(**arrays: Any):
    """Return the backend module for these arrays; refuse mixed devices (a host scalar pos_weight
    goes with either)."""
    for a in arrays.values():
        if type(a) not in _HOST_TYPES:
            break
    else:  # NumPy arrays and absent options only: the CPU, with nothing to ask
        return cpu
    on = {name: interop.on_gpu(a) for name, a in arrays.items()
          if a is not None and not (name == "pos_weight" and _host_scalar(a))}
    if not any(on.values()):
        return cpu
    if not all(on.values()):
        gpu = sorted(k for k, v in on.items() if v)
        host = sorted(k for k, v in on.items() if not v)
        raise ValueError(
            f"mixed devices: {', '.join(gpu)} on the GPU but {', '.join(host)} on the CPU; "
            "move them to one device first"
        )
    from . import cuda  # noqa: PLC0415 - imported only when a GPU array is seen

    return cuda


def cross_entropy(logits: Any, target: Any, *, axis: int = 1, weight: Any = None,
                  ignore_index: int = -100, label_smoothing: float = 0.0,
                  reduction: str = "mean", from_logits: bool = True) -> Any:
    """Cross-entropy between logits and class labels or class probabilities.

    Exactly ``torch.nn.functional.cross_entropy`` (weight, ignore_index, label_smoothing,
    reduction), for (N, C), (N, C, d1, ..., dk) with ``axis=1`` or channels-last with
    ``axis=-1``, computed in one pass over the logits with a max-shifted log-sum-exp and
    float64 accumulation.

    Args:
        logits: float16/float32/float64 array. float16 is computed in float32.
        target: integer labels shaped like logits without the class axis (any integer dtype,
            read as is), or float class probabilities shaped like logits.
        axis: the class axis, 1 or -1.
        weight: per-class weights, shape (C,).
        ignore_index: label value that is skipped (integer targets only).
        label_smoothing: in [0, 1].
        reduction: "mean" and "sum" return a Python float (a 0-d float64 CuPy array for GPU
            inputs: no host synchronisation); "none" an array shaped like the target (float32,
            or float64 for float64 logits).
        from_logits: False if the inputs are probabilities: they are divided by their sum
            over the class axis and clipped to [1e-7, 1 - 1e-7] as Keras does.

    Non-finite logits: NaN or +inf in an element's logits make its loss NaN; -inf at a
    non-target class acts as a mask (probability 0), as in PyTorch.

    Example:
        >>> import numpy as np, lossdiag
        >>> x = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], np.float32)
        >>> round(lossdiag.cross_entropy(x, np.array([0, 2])), 6)
        0.175456
    """
    interop.refuse_graph(logits, "cross_entropy", "cross_entropy")
    from_logits = V.check_flag(from_logits, "from_logits")
    return _backend(logits=logits, target=target, weight=weight).cross_entropy(
        logits, target, axis=axis, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, reduction=reduction, from_logits=from_logits)


def cross_entropy_grad(logits: Any, target: Any, *, axis: int = 1, weight: Any = None,
                       ignore_index: int = -100, label_smoothing: float = 0.0,
                       reduction: str = "mean", from_logits: bool = True,
                       out: Any = None) -> tuple[Any, Any]:
    """Loss and d(loss)/d(logits) in the same pass (one read of the logits, one write).

    Same options as `cross_entropy`. For ``reduction="none"`` the gradient is that of the sum
    of the per-element losses. ``out`` may be a preallocated array of the logits' shape and
    dtype, or ``logits`` itself (the gradient overwrites the logits, no extra memory). With
    integer labels the labels are read once before the pass (they are validated before anything
    is written, and "mean" needs the weight sum as the normaliser).

    Example:
        >>> import numpy as np, lossdiag
        >>> x = np.zeros((2, 2), np.float64)
        >>> loss, g = lossdiag.cross_entropy_grad(x, np.array([0, 1]))
        >>> g.tolist()
        [[-0.25, 0.25], [0.25, -0.25]]
    """
    from_logits = V.check_flag(from_logits, "from_logits")
    return _backend(logits=logits, target=target, weight=weight, out=out).cross_entropy_grad(
        logits, target, axis=axis, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, reduction=reduction, from_logits=from_logits, out=out)


def binary_cross_entropy(logits: Any, target: Any, *, pos_weight: Any = None,
                         reduction: str = "mean", from_logits: bool = True) -> Any:
    """Binary cross-entropy, exactly ``torch.nn.functional.binary_cross_entropy_with_logits``.

    loss = max(x, 0) - x*y + log1p(exp(-|x|)) (with ``pos_weight`` as PyTorch: it broadcasts
    against the logits with NumPy rules). ``from_logits=False``: inputs are probabilities,
    clipped to [1e-7, 1 - 1e-7]. Targets must lie in [0, 1].

    Example:
        >>> import numpy as np, lossdiag
        >>> round(lossdiag.binary_cross_entropy(np.array([0.0, 2.0]), np.array([1.0, 0.0])), 6)
        1.410038
    """
    interop.refuse_graph(logits, "binary_cross_entropy", "binary_cross_entropy_with_logits")
    from_logits = V.check_flag(from_logits, "from_logits")
    return _backend(logits=logits, target=target, pos_weight=pos_weight).binary_cross_entropy(
        logits, target, pos_weight=pos_weight, reduction=reduction, from_logits=from_logits)


def binary_cross_entropy_grad(logits: Any, target: Any, *, pos_weight: Any = None,
                              reduction: str = "mean", from_logits: bool = True,
                              out: Any = None) -> tuple[Any, Any]:
    """Binary cross-entropy and its gradient with respect to the logits, in one pass."""
    from_logits = V.check_flag(from_logits, "from_logits")
    return _backend(logits=logits, target=target, pos_weight=pos_weight,
                    out=out).binary_cross_entropy_grad(
        logits, target, pos_weight=pos_weight, reduction=reduction, from_logits=from_logits,
        out=out)


def accuracy(logits: Any, target: Any, *, axis: int = 1, top_k: int = 1,
             ignore_index: int = -100) -> float:
    """Top-k accuracy over non-ignored elements.

    The prediction is the first index of the maximum (as ``numpy.argmax``); top-k ranks ties
    by the lower class index. A NaN logit makes its element wrong. Float targets: the true
    class is their argmax.

    Example:
        >>> import numpy as np, lossdiag
        >>> lossdiag.accuracy(np.array([[1.0, 2.0], [3.0, 0.0]]), np.array([1, 1]))
        0.5
    """
    return _backend(logits=logits, target=target).accuracy(
        logits, target, axis=axis, top_k=top_k, ignore_index=ignore_index)


def binary_accuracy(logits: Any, target: Any, *, threshold: float = 0.0) -> float:
    """mean((logits > threshold) == (target >= 0.5)); the threshold is on the logits.

    +-inf logits follow the rule; a NaN logit counts as wrong (as in `accuracy`).

    Example:
        >>> import numpy as np, lossdiag
        >>> lossdiag.binary_accuracy(np.array([2.0, -1.0, np.inf]), np.array([1, 1, 1]))
        0.6666666666666666
    """
    threshold = V.real_scalar(threshold, "threshold")
    return _backend(logits=logits, target=target).binary_accuracy(
        logits, target, threshold=threshold)


def evaluate(logits: Any, target: Any, *, axis: int = 1, weight: Any = None,
             ignore_index: int = -100, label_smoothing: float = 0.0, top_k: Any = (1,),
             bins: int = 20, per_sample: bool = False, grad: bool = False,
             out: Any = None, confusion: bool | None = None) -> BatchStats:
    """Loss, top-k accuracy, confusion matrix, per-class and calibration statistics in ONE pass.

    Returns a `BatchStats` whose ``.loss`` equals ``cross_entropy(..., reduction="mean")`` bit
    for bit. With ``grad=True`` it also writes the gradient exactly as `cross_entropy_grad`.
    ``per_sample=True`` adds per-image loss, counts and per-class intersection/union counts.
    Top-1 is always computed: ``correct`` holds k = 1 besides the ``top_k`` asked for, and
    ``accuracy`` is top-1 (``top_k`` may therefore hold at most 7 values other than 1).

    Per-class counts always come back (``class_count``: labels, ``class_pred``: predictions,
    ``class_tp``: both), which is all per-class recall, precision, IoU and F1 need. The (C, C)
    ``confusion`` matrix is computed when ``confusion=True``, skipped (``None``) when False;
    the default ``None`` computes it up to 1024 classes: for a language-model vocabulary the
    matrix (8 GB at C = 32000) would cost far more than the pass over the logits.

    Example:
        >>> import numpy as np, lossdiag
        >>> s = lossdiag.evaluate(np.array([[3.0, 0.0], [0.0, 1.0]]), np.array([0, 0]))
        >>> s.confusion.tolist(), s.accuracy
        ([[1, 1], [0, 0]], 0.5)
        >>> s.class_count.tolist(), s.class_pred.tolist(), s.class_tp.tolist()
        ([2, 0], [1, 1], [1, 0])
        >>> lossdiag.evaluate(np.zeros((2, 3)), np.array([0, 1]), confusion=False).confusion is None
        True
    """
    per_sample = V.check_flag(per_sample, "per_sample")
    grad = V.check_flag(grad, "grad")
    return _backend(logits=logits, target=target, weight=weight, out=out).evaluate(
        logits, target, axis=axis, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, top_k=V.top_k_with_1(top_k), bins=bins,
        per_sample=per_sample, grad=grad, out=out, confusion=confusion)


def evaluate_binary(logits: Any, target: Any, *, pos_weight: Any = None, threshold: float = 0.0,
                    bins: int = 20, grad: bool = False, out: Any = None) -> BatchStats:
    """`evaluate` for single-logit outputs: BCE, threshold accuracy, 2x2 confusion, histograms
    of the positive-class probability, the true-class probability and the confidence."""
    threshold = V.real_scalar(threshold, "threshold")
    grad = V.check_flag(grad, "grad")
    return _backend(logits=logits, target=target, pos_weight=pos_weight,
                    out=out).evaluate_binary(
        logits, target, pos_weight=pos_weight, threshold=threshold, bins=bins, grad=grad,
        out=out)
