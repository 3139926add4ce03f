"""CPU backend: NumPy arrays in, compiled kernels (lossdiag._core) run with the GIL released.

CPU torch tensors are read as zero-copy NumPy views (V.as_cpu_array -> _interop), and array
results for torch logits come back as torch tensors over the same memory (interop.like_input).
bfloat16 logits and float targets arrive under interop.BF16 (or ml_dtypes' bfloat16) and are
handed to the kernels as dtype code 3; they are computed in float32, like float16.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _core
from . import interop
from . import validate as V
from .results import BatchStats


def _check_logits(x: np.ndarray) -> None:
    if not interop.is_bf16(x.dtype):
        V.check_dtype_logits(x)


def _xcode(dtype) -> int:
    """The kernels' dtype code of float logits or float targets (bfloat16 included)."""
    return interop.BF16_CODE if interop.is_bf16(dtype) else V.logit_code(dtype)


def _check_target(t: np.ndarray, lay: V.Layout) -> tuple[bool, int]:
    if interop.is_bf16(t.dtype):  # bfloat16 class probabilities (a uint16 view: not labels)
        if tuple(t.shape) != lay.shape:
            raise ValueError(
                f"target: float (class-probability) targets must have the shape of logits "
                f"{lay.shape}, got {tuple(t.shape)}; integer class labels must have shape "
                f"{lay.target_shape}")
        return True, interop.BF16_CODE
    return V.check_target(t, lay)


def _prep_ce(logits, target, axis, weight, ignore_index, label_smoothing, reduction):
    x = V.as_cpu_array(logits, "logits")
    _check_logits(x)
    t = V.as_cpu_array(target, "target")
    lay = V.resolve_layout(x.shape, axis)
    soft, tcode = _check_target(t, lay)
    w = V.check_weight(weight, lay.C)
    ign, eps = V.check_options(ignore_index, label_smoothing, reduction)
    return V.contiguous(x), V.contiguous(t), lay, soft, tcode, w, ign, eps


def _grad_out(out, x, **inputs):
    """The gradient's array: a new one, or ``out`` once checked (shape, dtype, no overlap with an
    input other than the logits themselves)."""
    if out is None:
        return np.empty_like(x)
    return V.check_out(interop.out_array(out), x,
                       inputs={k: v for k, v in inputs.items() if v is not None})


def _alloc(what: str, fn, *args):
    """Allocate result arrays; a MemoryError names the argument that made them large."""
    try:
        return fn(*args)
    except MemoryError:
        raise MemoryError(f"{what}: not enough memory for the result arrays") from None


def _call_ce(x, t, lay, soft, tcode, w, ign, eps, *, probs=False, loss=True, grad=False,
             stats=False, topk=False, gscale=1.0, g=None, loss_out=None, ks=(), bins=0,
             arrays=None, per_sample=False, sample_arrays=None) -> dict:
    arrays = arrays or {}
    sa = sample_arrays or {}
    r = _core.ce(
        x, _xcode(x.dtype), t, tcode, soft, lay.N, lay.C, lay.inner, lay.E, lay.S, lay.rows,
        w, ign, eps, probs, loss, grad, stats, topk, gscale, g, loss_out, list(ks), bins,
        arrays.get("confusion"), arrays.get("class_loss_sum"), arrays.get("class_count"),
        arrays.get("true_prob_hist"), arrays.get("conf_hist"), arrays.get("conf_correct"),
        arrays.get("conf_sum"), arrays.get("margin_hist"), per_sample, sa.get("sample_loss_sum"),
        sa.get("sample_count"), sa.get("sample_correct"), sa.get("sample_intersection"),
        sa.get("sample_true"), sa.get("sample_pred"),
    )
    if r["bad"]:
        raise V.bad_label_error(r["bad_value"], r["bad_index"], lay.C, ign, dtype=t.dtype)
    return r


def _grad_scale(t, lay, soft, tcode, w, ign, reduction) -> float:
    """The gradient's normaliser; for hard labels one read of the labels (also validates them
    before anything is written to `out`)."""
    if soft:
        return 1.0 / lay.E if reduction == "mean" and lay.E else 1.0
    r = _core.labels(t, tcode, lay.E, lay.C, ign, w)
    if r["bad"]:
        raise V.bad_label_error(r["bad_value"], r["bad_index"], lay.C, ign, dtype=t.dtype)
    if reduction != "mean":
        return 1.0
    # Zero weight over counted elements: 0/0, NaN on the counted rows as in PyTorch.
    return 1.0 / r["wsum"] if r["wsum"] != 0 else (math.nan if r["count"] else 0.0)


def _reduce(r, lay, soft, eps, reduction, loss_out):
    if reduction == "none":
        return loss_out
    if soft:
        if reduction == "sum":
            return r["nll_sum"]
        return r["nll_sum"] / lay.E if lay.E else math.nan
    if reduction == "sum":
        return V.sum_loss(eps, lay.C, r["nll_sum"], r["smooth_sum"])
    return V.mean_loss(eps, lay.C, r["nll_sum"], r["smooth_sum"], r["wsum"])


def _loss_out(x, lay, reduction):
    if reduction != "none":
        return None
    return np.empty(lay.target_shape, np.float64 if x.dtype == np.float64 else np.float32)


def cross_entropy(logits, target, *, axis=1, weight=None, ignore_index=-100, label_smoothing=0.0,
                  reduction="mean", from_logits=True):
    x, t, lay, soft, tcode, w, ign, eps = _prep_ce(
        logits, target, axis, weight, ignore_index, label_smoothing, reduction)
    from_logits = V.check_flag(from_logits, "from_logits")
    lo = _loss_out(x, lay, reduction)
    r = _call_ce(x, t, lay, soft, tcode, w, ign, eps, probs=not from_logits, loss_out=lo)
    return interop.like_input(logits, _reduce(r, lay, soft, eps, reduction, lo))


def cross_entropy_grad(logits, target, *, axis=1, weight=None, ignore_index=-100,
                       label_smoothing=0.0, reduction="mean", from_logits=True, out=None):
    x, t, lay, soft, tcode, w, ign, eps = _prep_ce(
        logits, target, axis, weight, ignore_index, label_smoothing, reduction)
    from_logits = V.check_flag(from_logits, "from_logits")
    g = _grad_out(out, x, target=target, weight=weight)
    gs = _grad_scale(t, lay, soft, tcode, w, ign, reduction)
    lo = _loss_out(x, lay, reduction)
    r = _call_ce(x, t, lay, soft, tcode, w, ign, eps, probs=not from_logits, grad=True,
                 gscale=gs, g=g, loss_out=lo)
    return (interop.like_input(logits, _reduce(r, lay, soft, eps, reduction, lo)),
            interop.like_input(logits, g, out))


def accuracy(logits, target, *, axis=1, top_k=1, ignore_index=-100):
    x, t, lay, soft, tcode, _, ign, _ = _prep_ce(logits, target, axis, None, ignore_index, 0.0,
                                                 "mean")
    if isinstance(top_k, (list, tuple)):
        raise TypeError(f"top_k: expected an int, got {top_k!r}")
    ks = V.check_top_k(top_k, lay.C)
    r = _call_ce(x, t, lay, soft, tcode, None, ign, 0.0, loss=False, topk=True, ks=ks)
    return r["correct"][0] / r["count"] if r["count"] else math.nan


# ------------------------------------------------------------------------------------------------
def _prep_bce(logits, target, reduction, name_t="target"):
    x = V.as_cpu_array(logits, "logits")
    _check_logits(x)
    t = V.as_cpu_array(target, name_t)
    V.check_reduction(reduction)
    if t.shape != x.shape:
        raise ValueError(f"{name_t}: shape {t.shape} does not match logits {x.shape}")
    dt = np.dtype(t.dtype)
    if interop.is_bf16(dt):
        tfloat, tcode = True, interop.BF16_CODE
    elif dt.kind == "f":
        if dt not in (np.float16, np.float32, np.float64):
            raise TypeError(f"{name_t}: dtype {dt.name} is not supported")
        tfloat, tcode = True, V.logit_code(dt)
    elif dt.kind in "iub":
        tfloat, tcode = False, V.label_code(dt)
    else:
        raise TypeError(f"{name_t}: dtype {dt.name} is not supported")
    return V.contiguous(x), V.contiguous(t), tfloat, tcode


def _call_bce(x, t, tfloat, tcode, pw, pw_inner, *, probs=False, grad=False, stats=False,
              threshold=0.0, gscale=1.0, g=None, loss_out=None, bins=0, arrays=None):
    a = arrays or {}
    r = _core.bce(x, _xcode(x.dtype), t, tcode, tfloat, x.size, pw, pw_inner, probs, True,
                  grad, stats, float(threshold), gscale, g, loss_out, bins, a.get("confusion"),
                  a.get("class_loss_sum"), a.get("class_count"), a.get("true_prob_hist"),
                  a.get("conf_hist"), a.get("conf_correct"), a.get("conf_sum"),
                  a.get("margin_hist"), a.get("prob_hist"))
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


def binary_cross_entropy(logits, target, *, pos_weight=None, reduction="mean", from_logits=True):
    x, t, tfloat, tcode = _prep_bce(logits, target, reduction)
    from_logits = V.check_flag(from_logits, "from_logits")
    pw, pwi = V.pos_weight_pattern(pos_weight, x.shape)
    lo = None
    if reduction == "none":
        lo = np.empty(x.shape, np.float64 if x.dtype == np.float64 else np.float32)
    r = _call_bce(x, t, tfloat, tcode, pw, pwi, probs=not from_logits, loss_out=lo)
    return interop.like_input(logits, _bce_reduce(r, x.size, reduction, lo))


def binary_cross_entropy_grad(logits, target, *, pos_weight=None, reduction="mean",
                              from_logits=True, out=None):
    x, t, tfloat, tcode = _prep_bce(logits, target, reduction)
    from_logits = V.check_flag(from_logits, "from_logits")
    pw, pwi = V.pos_weight_pattern(pos_weight, x.shape)
    g = _grad_out(out, x, target=target, pos_weight=pos_weight)
    lo = None
    if reduction == "none":
        lo = np.empty(x.shape, np.float64 if x.dtype == np.float64 else np.float32)
    gs = 1.0 / x.size if reduction == "mean" and x.size else 1.0
    r = _call_bce(x, t, tfloat, tcode, pw, pwi, probs=not from_logits, grad=True, gscale=gs, g=g,
                  loss_out=lo)
    return (interop.like_input(logits, _bce_reduce(r, x.size, reduction, lo)),
            interop.like_input(logits, g, out))


def binary_accuracy(logits, target, *, threshold=0.0):
    x, t, tfloat, tcode = _prep_bce(logits, target, "mean")
    threshold = V.real_scalar(threshold, "threshold")
    r = _call_bce(x, t, tfloat, tcode, None, 1, threshold=threshold)
    return r["correct"] / r["count"] if r["count"] else math.nan


# ------------------------------------------------------------------------------------------------
def evaluate(logits, target, *, axis=1, weight=None, ignore_index=-100, label_smoothing=0.0,
             top_k=(1,), bins=20, per_sample=False, grad=False, out=None) -> BatchStats:
    x, t, lay, soft, tcode, w, ign, eps = _prep_ce(
        logits, target, axis, weight, ignore_index, label_smoothing, "mean")
    ks = V.check_top_k(top_k, lay.C)
    bins = V.check_bins(bins)
    per_sample = V.check_flag(per_sample, "per_sample")
    grad = V.check_flag(grad, "grad")
    if not grad and out is not None:
        raise ValueError("out: only used with grad=True")
    C = lay.C
    arrays = _alloc(f"logits: C={C} classes (a ({C}, {C}) confusion matrix)",
                    BatchStats.new_arrays, C, bins)
    sample = None
    if per_sample:
        sample = _alloc(f"per_sample: ({lay.N}, {C}) per-sample arrays",
                        BatchStats.new_sample_arrays, lay.N, C)
    g = None
    gs = 1.0
    if grad:
        g = _grad_out(out, x, target=target, weight=weight)
        gs = _grad_scale(t, lay, soft, tcode, w, ign, "mean")
    r = _call_ce(x, t, lay, soft, tcode, w, ign, eps, grad=grad, stats=True, topk=True,
                 gscale=gs, g=g, ks=ks, bins=bins, arrays=arrays, per_sample=bool(per_sample),
                 sample_arrays=sample)
    return BatchStats.from_kernel(r, arrays, sample, C=C, bins=bins, ks=ks, eps=eps, soft=soft,
                                  E=lay.E, grad=interop.like_input(logits, g, out),
                                  binary=False)


def evaluate_binary(logits, target, *, pos_weight=None, threshold=0.0, bins=20, grad=False,
                    out=None) -> BatchStats:
    x, t, tfloat, tcode = _prep_bce(logits, target, "mean")
    bins = V.check_bins(bins)
    threshold = V.real_scalar(threshold, "threshold")
    grad = V.check_flag(grad, "grad")
    pw, pwi = V.pos_weight_pattern(pos_weight, x.shape)
    if not grad and out is not None:
        raise ValueError("out: only used with grad=True")
    arrays = BatchStats.new_arrays(2, bins, binary=True)
    g = None
    if grad:
        g = _grad_out(out, x, target=target, pos_weight=pos_weight)
    gs = 1.0 / x.size if x.size else 1.0
    r = _call_bce(x, t, tfloat, tcode, pw, pwi, grad=grad, stats=True, threshold=threshold,
                  gscale=gs, g=g, bins=bins, arrays=arrays)
    return BatchStats.from_binary_kernel(r, arrays, bins=bins, E=x.size,
                                         grad=interop.like_input(logits, g, out))


def mem_read(a: Any) -> float:
    return _core.mem_read(np.ascontiguousarray(a))


def mem_copy(dst: np.ndarray, src: np.ndarray) -> None:
    _core.mem_copy(dst, src)
