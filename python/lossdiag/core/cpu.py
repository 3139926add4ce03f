"""CPU backend: NumPy arrays in, compiled kernels (lossdiag._core) run with the GIL released.

CPU torch tensors are read as zero-copy NumPy views (V.as_cpu_array -> _interop), and array
results for torch logits come back as torch tensors over the same memory (interop.like_input).
bfloat16 logits and float targets arrive under interop.BF16 (or ml_dtypes' bfloat16) and are
handed to the kernels as dtype code 3; they are computed in float32, like float16.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .. import _core
from . import interop
from . import validate as V
from .results import BatchStats


def _logits_code(x: np.ndarray) -> int:
    """The kernels' dtype code of the logits (bfloat16 included); a TypeError for other dtypes."""
    return interop.BF16_CODE if interop.is_bf16(x.dtype) else V.check_dtype_logits(x)


def _check_target(t: np.ndarray, lay: V.Layout) -> tuple[bool, int]:
    if interop.is_bf16(t.dtype):  # bfloat16 class probabilities (a uint16 view: not labels)
        if tuple(t.shape) != lay.shape:
            raise ValueError(
                f"target: float (class-probability) targets must have the shape of logits "
                f"{lay.shape}, got {tuple(t.shape)}; integer class labels must have shape "
                f"{lay.target_shape}")
        return True, interop.BF16_CODE
    return V.check_target(t, lay)


class _CE(NamedTuple):
    """Checked multi-class arguments, as the kernel takes them."""

    x: np.ndarray
    xcode: int
    t: np.ndarray
    tcode: int
    soft: bool
    lay: V.Layout
    w: np.ndarray | None
    ign: int
    eps: float


def _prep_ce(logits, target, axis, weight, ignore_index, label_smoothing, reduction) -> _CE:
    x = V.as_cpu_array(logits, "logits")
    xcode = _logits_code(x)
    t = V.as_cpu_array(target, "target")
    lay = V.resolve_layout(x.shape, axis)
    soft, tcode = _check_target(t, lay)
    w = V.check_weight(weight, lay.C)
    ign, eps = V.check_options(ignore_index, label_smoothing, reduction)
    return _CE(V.contiguous(x), xcode, V.contiguous(t), tcode, soft, lay, w, ign, eps)


def _grad_out(out, x, **inputs):
    """The gradient's array: a new one, or ``out`` once checked (shape, dtype, no overlap with an
    input other than the logits themselves)."""
    if out is None:
        return np.empty_like(x)
    return V.check_out(interop.out_array(out), x,
                       inputs={k: v for k, v in inputs.items() if v is not None})


_NO_STATS = (None,) * len(BatchStats.STAT_ARRAYS)
_NO_SAMPLES = (None,) * len(BatchStats.SAMPLE_ARRAYS)
_NO_CLASSES = (None,) * len(BatchStats.CLASS_ARRAYS)


def _call_ce(p: _CE, *, probs=False, loss=True, grad=False, stats=False, topk=False,
             gscale=1.0, g=None, loss_out=None, ks=(), bins=0, arrays=_NO_STATS,
             per_sample=False, sample_arrays=_NO_SAMPLES, class_arrays=_NO_CLASSES) -> dict:
    """One pass of the multi-class kernel; ``arrays``, ``sample_arrays`` and ``class_arrays``
    are the result arrays in the order of `BatchStats.STAT_ARRAYS`, `SAMPLE_ARRAYS` and
    `CLASS_ARRAYS`."""
    lay = p.lay
    r = _core.ce(p.x, p.xcode, p.t, p.tcode, p.soft, lay.N, lay.C, lay.inner, lay.E, lay.S,
                 lay.rows, p.w, p.ign, p.eps, probs, loss, grad, stats, topk, gscale, g, loss_out,
                 ks, bins, *arrays, per_sample, *sample_arrays, *class_arrays)
    if r["bad"]:
        raise V.bad_label_error(r["bad_value"], r["bad_index"], lay.C, p.ign, dtype=p.t.dtype)
    return r


def _grad_scale(p: _CE, reduction) -> float:
    """The gradient's normaliser; for hard labels one read of the labels (also validates them
    before anything is written to `out`)."""
    lay = p.lay
    if p.soft:
        return 1.0 / lay.E if reduction == "mean" and lay.E else 1.0
    r = _core.labels(p.t, p.tcode, lay.E, lay.C, p.ign, p.w)
    if r["bad"]:
        raise V.bad_label_error(r["bad_value"], r["bad_index"], lay.C, p.ign, dtype=p.t.dtype)
    if reduction != "mean":
        return 1.0
    # Zero weight over counted elements: 0/0, NaN on the counted rows as in PyTorch.
    return 1.0 / r["wsum"] if r["wsum"] != 0 else (math.nan if r["count"] else 0.0)


def _reduce(r, p: _CE, reduction, loss_out):
    if reduction == "none":
        return loss_out
    if p.soft:
        if reduction == "sum":
            return r["nll_sum"]
        return r["nll_sum"] / p.lay.E if p.lay.E else math.nan
    if reduction == "sum":
        return V.sum_loss(p.eps, p.lay.C, r["nll_sum"], r["smooth_sum"])
    return V.mean_loss(p.eps, p.lay.C, r["nll_sum"], r["smooth_sum"], r["wsum"])


def _loss_out(x, lay, reduction):
    if reduction != "none":
        return None
    return np.empty(lay.target_shape, np.float64 if x.dtype == np.float64 else np.float32)


# The public functions (lossdiag.core.api) have checked the flags (from_logits, grad, ...).
def cross_entropy(logits, target, *, axis=1, weight=None, ignore_index=-100, label_smoothing=0.0,
                  reduction="mean", from_logits=True):
    p = _prep_ce(logits, target, axis, weight, ignore_index, label_smoothing, reduction)
    lo = _loss_out(p.x, p.lay, reduction)
    r = _call_ce(p, probs=not from_logits, loss_out=lo)
    return interop.like_input(logits, _reduce(r, p, reduction, lo))


def cross_entropy_grad(logits, target, *, axis=1, weight=None, ignore_index=-100,
                       label_smoothing=0.0, reduction="mean", from_logits=True, out=None):
    p = _prep_ce(logits, target, axis, weight, ignore_index, label_smoothing, reduction)
    g = _grad_out(out, p.x, target=target, weight=weight)
    gs = _grad_scale(p, reduction)
    lo = _loss_out(p.x, p.lay, reduction)
    r = _call_ce(p, probs=not from_logits, grad=True, gscale=gs, g=g, loss_out=lo)
    return (interop.like_input(logits, _reduce(r, p, reduction, lo)),
            interop.like_input(logits, g, out))


def accuracy(logits, target, *, axis=1, top_k=1, ignore_index=-100):
    p = _prep_ce(logits, target, axis, None, ignore_index, 0.0, "mean")
    if isinstance(top_k, (list, tuple)):
        raise TypeError(f"top_k: expected an int, got {top_k!r}")
    ks = V.check_top_k(top_k, p.lay.C)
    r = _call_ce(p, loss=False, topk=True, ks=ks)
    return r["correct"][0] / r["count"] if r["count"] else math.nan


# ------------------------------------------------------------------------------------------------
class _BCE(NamedTuple):
    """Checked binary arguments, as the kernel takes them."""

    x: np.ndarray
    xcode: int
    t: np.ndarray
    tcode: int
    tfloat: bool


def _prep_bce(logits, target, reduction, name_t="target") -> _BCE:
    x = V.as_cpu_array(logits, "logits")
    xcode = _logits_code(x)
    t = V.as_cpu_array(target, name_t)
    V.check_reduction(reduction)
    if t.shape != x.shape:
        raise ValueError(f"{name_t}: shape {t.shape} does not match logits {x.shape}")
    tfloat, tcode = V.known_code(t.dtype) or _bce_target_code(t.dtype, name_t)
    return _BCE(V.contiguous(x), xcode, V.contiguous(t), tcode, tfloat)


def _bce_target_code(dtype, name_t) -> tuple[bool, int]:
    """(is float, kernel code) of a binary target's dtype other than NumPy's own objects."""
    dt = np.dtype(dtype)
    if interop.is_bf16(dt):
        return True, interop.BF16_CODE
    if dt.kind == "f":
        if dt not in (np.float16, np.float32, np.float64):
            raise TypeError(f"{name_t}: dtype {dt.name} is not supported")
        return True, V.logit_code(dt)
    if dt.kind in "iub":
        return False, V.label_code(dt)
    raise TypeError(f"{name_t}: dtype {dt.name} is not supported")


_NO_BINARY_STATS = (None,) * (len(BatchStats.STAT_ARRAYS) + 1)  # + prob_hist


def _call_bce(p: _BCE, pw, pw_inner, *, probs=False, grad=False, stats=False, threshold=0.0,
              gscale=1.0, g=None, loss_out=None, bins=0, arrays=_NO_BINARY_STATS):
    """One pass of the binary kernel; ``arrays``: the result arrays of
    ``BatchStats.new_arrays(2, bins, binary=True)``, in that order."""
    r = _core.bce(p.x, p.xcode, p.t, p.tcode, p.tfloat, p.x.size, pw, pw_inner, probs, True,
                  grad, stats, threshold, gscale, g, loss_out, bins, *arrays)
    if r["bad"]:
        raise ValueError(f"target: value {r['bad_value']!r} at flat index {r['bad_index']} is "
                         "outside [0, 1]")
    return r


def _bce_reduce(r, n, reduction, lo):
    if reduction == "none":
        return lo
    if reduction == "sum":
        return r["loss_sum"]
    return r["loss_sum"] / n if n else math.nan


def _bce_loss_out(x, reduction):
    if reduction != "none":
        return None
    return np.empty(x.shape, np.float64 if x.dtype == np.float64 else np.float32)


def binary_cross_entropy(logits, target, *, pos_weight=None, reduction="mean", from_logits=True):
    p = _prep_bce(logits, target, reduction)
    pw, pwi = V.pos_weight_pattern(pos_weight, p.x.shape)
    lo = _bce_loss_out(p.x, reduction)
    r = _call_bce(p, pw, pwi, probs=not from_logits, loss_out=lo)
    return interop.like_input(logits, _bce_reduce(r, p.x.size, reduction, lo))


def binary_cross_entropy_grad(logits, target, *, pos_weight=None, reduction="mean",
                              from_logits=True, out=None):
    p = _prep_bce(logits, target, reduction)
    pw, pwi = V.pos_weight_pattern(pos_weight, p.x.shape)
    g = _grad_out(out, p.x, target=target, pos_weight=pos_weight)
    lo = _bce_loss_out(p.x, reduction)
    n = p.x.size
    gs = 1.0 / n if reduction == "mean" and n else 1.0
    r = _call_bce(p, pw, pwi, probs=not from_logits, grad=True, gscale=gs, g=g, loss_out=lo)
    return (interop.like_input(logits, _bce_reduce(r, n, reduction, lo)),
            interop.like_input(logits, g, out))


def binary_accuracy(logits, target, *, threshold=0.0):
    p = _prep_bce(logits, target, "mean")
    r = _call_bce(p, None, 1, threshold=threshold)
    return r["correct"] / r["count"] if r["count"] else math.nan


# ------------------------------------------------------------------------------------------------
def _new_arrays(what: str, new, *args) -> dict[str, np.ndarray]:
    """Allocate result arrays; a MemoryError names the argument that made them large (``what``
    is formatted with ``args`` only then)."""
    try:
        return new(*args)
    except MemoryError:
        raise MemoryError(f"{what.format(*args)}: not enough memory for the result arrays") \
            from None


def evaluate(logits, target, *, axis=1, weight=None, ignore_index=-100, label_smoothing=0.0,
             top_k=(1,), bins=20, per_sample=False, grad=False, out=None,
             confusion=None) -> BatchStats:
    p = _prep_ce(logits, target, axis, weight, ignore_index, label_smoothing, "mean")
    lay = p.lay
    ks = V.check_top_k(top_k, lay.C)
    bins = V.check_bins(bins)
    want_cm = V.check_confusion(confusion, lay.C)
    if not grad and out is not None:
        raise ValueError("out: only used with grad=True")
    arrays = _new_arrays("logits: C={0} classes (a ({0}, {0}) confusion matrix)",
                         lambda C, b: BatchStats.new_arrays(C, b, confusion=want_cm), lay.C, bins)
    classes = BatchStats.new_class_arrays(lay.C)
    sample = None
    if per_sample:
        sample = _new_arrays("per_sample: ({0}, {1}) per-sample arrays",
                             BatchStats.new_sample_arrays, lay.N, lay.C)
    g = None
    gs = 1.0
    if grad:
        g = _grad_out(out, p.x, target=target, weight=weight)
        gs = _grad_scale(p, "mean")
    r = _call_ce(p, grad=grad, stats=True, topk=True, gscale=gs, g=g, ks=ks, bins=bins,
                 arrays=arrays.values(), per_sample=per_sample,
                 sample_arrays=_NO_SAMPLES if sample is None else sample.values(),
                 class_arrays=classes.values())
    return BatchStats.from_kernel(r, arrays, sample, C=lay.C, bins=bins, ks=ks, eps=p.eps,
                                  soft=p.soft, E=lay.E,
                                  grad=interop.like_input(logits, g, out), binary=False,
                                  class_arrays=classes)


def evaluate_binary(logits, target, *, pos_weight=None, threshold=0.0, bins=20, grad=False,
                    out=None) -> BatchStats:
    p = _prep_bce(logits, target, "mean")
    bins = V.check_bins(bins)
    pw, pwi = V.pos_weight_pattern(pos_weight, p.x.shape)
    if not grad and out is not None:
        raise ValueError("out: only used with grad=True")
    arrays = BatchStats.new_arrays(2, bins, binary=True)
    g = None
    if grad:
        g = _grad_out(out, p.x, target=target, pos_weight=pos_weight)
    n = p.x.size
    gs = 1.0 / n if n else 1.0
    r = _call_bce(p, pw, pwi, grad=grad, stats=True, threshold=threshold, gscale=gs, g=g,
                  bins=bins, arrays=arrays.values())
    return BatchStats.from_binary_kernel(r, arrays, bins=bins, E=n,
                                         grad=interop.like_input(logits, g, out))


def mem_read(a: Any) -> float:
    return _core.mem_read(np.ascontiguousarray(a))


def mem_copy(dst: np.ndarray, src: np.ndarray) -> None:
    _core.mem_copy(dst, src)
