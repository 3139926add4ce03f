"""Plain float64 NumPy reference implementations of the lossdiag API contract.

Written from docs/API_CONTRACT.md and PyTorch semantics, independently of the kernels: this module
never imports lossdiag.  Everything is evaluated in float64, with loops/vectorised NumPy that favour
obviousness over speed.  `tests/test_reference.py` proves these references against torch and
scikit-learn, so the kernel tests can trust them.

PyTorch label smoothing (verified empirically against torch 2.13.0+cpu, see test_reference.py):
for class-index targets, with w_c = weight[c] (1 without weight), eps = label_smoothing, C classes,
and log p = log_softmax(logits):

    l_i = (1 - eps) * w_{y_i} * (-log p_{y_i})  +  (eps / C) * sum_c w_c * (-log p_c)
    l_i = 0 for ignored elements (target == ignore_index)

i.e. -sum_c w_c t_c log p_c with the smoothed one-hot t = (1-eps)*onehot + eps/C.
  * "sum"  = sum_i l_i
  * "mean" = sum_i l_i / D with D = sum over NON-IGNORED elements of w_{y_i}: BOTH the nll term and
    the smoothing term are divided by the same D.  Without weight D is the number of non-ignored
    elements (NOT the total N: torch 2.13 divides the smoothing term by the non-ignored count; the
    old bug of dividing by N, i.e. smooth_loss.mean(), is gone).  D == 0 -> NaN (0/0).
  * eps == 0 takes the plain nll path: a -inf logit at a non-target class is a mask (finite loss).
    eps > 0 with a -inf logit anywhere in the row gives +inf (the smoothing term sees -log 0).
For probability (soft) targets: t' = t*(1-eps) + eps/C, l_i = -sum_c w_c t'_c log p_c,
"mean" divides by the number of elements (N*d1*..*dk) even with weight; ignore_index is not applied.
"""

from __future__ import annotations

import math

import numpy as np

CLIP_EPS = 1e-7


def clip_bounds(dtype=np.float64):
    """[1e-7, 1-1e-7] as the working precision represents them.  A float32 kernel (float16 and
    float32 inputs) cannot represent 1-1e-7: its upper bound is float32(1)-float32(1e-7) =
    1-2**-23 = 0.99999988, so a clipped p=1 gives -log(1.19e-7) = 15.94 instead of 16.12."""
    dt = np.float64 if np.dtype(dtype) == np.float64 else np.float32
    lo = dt(CLIP_EPS)
    return float(lo), float(dt(1) - lo)
INV_E = math.exp(-1.0)

_LABEL_KINDS = "iu"


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _move_class_last(x, axis):
    """Return a float64 copy of x with the class axis last, shape (..., C)."""
    x = np.asarray(x)
    if axis not in (1, -1):
        raise ValueError("axis must be 1 or -1")
    if axis == 1 and x.ndim > 1:
        x = np.moveaxis(x, 1, -1)
    return np.array(x, dtype=np.float64)


def _restore_class_axis(g, axis, ndim):
    if axis == 1 and ndim > 1:
        g = np.moveaxis(g, -1, 1)
    return np.ascontiguousarray(g)


def is_hard_target(target):
    return np.asarray(target).dtype.kind in _LABEL_KINDS


def labels_and_mask(target, C, ignore_index):
    """Integer labels -> (int64 labels with ignored replaced by 0, valid mask).

    Labels are read "as is" in their own dtype: ignore_index=-100 never matches a uint8 label.
    Raises ValueError for a non-ignored label outside [0, C).
    """
    t = np.asarray(target)
    assert t.dtype.kind in _LABEL_KINDS
    info = np.iinfo(t.dtype)
    if info.min <= ignore_index <= info.max:
        ignored = t == t.dtype.type(ignore_index)
    else:
        ignored = np.zeros(t.shape, dtype=bool)
    valid = ~ignored
    if t.dtype.kind == "u":
        if C <= info.max and (valid & (t >= t.dtype.type(C))).any():
            raise ValueError("target label out of range")
        lab = t.astype(np.int64)
    else:
        lab = t.astype(np.int64)
        if (valid & ((lab < 0) | (lab >= C))).any():
            raise ValueError("target label out of range")
    lab = np.where(valid, lab, 0)
    return lab, valid


def log_softmax(x):
    """Row-wise log_softmax along the last axis in float64, PyTorch style for non-finite values."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = np.max(x, axis=-1, keepdims=True) if x.shape[-1] > 0 else np.zeros(x.shape[:-1] + (1,))
        # all -inf row: max is -inf, x - max is NaN -> NaN row (as torch)
        z = x - m
        # log(sum exp z) = log1p(sum of exp z over all entries but one maximum): accurate when
        # the row is saturated (e.g. log(1 + 6e-18) must not round to 0)
        e = np.exp(z)
        if x.shape[-1] > 0:
            np.put_along_axis(e, np.argmax(np.where(np.isnan(z), -np.inf, z), axis=-1)[..., None],
                              0.0, axis=-1)
        lse = np.log1p(np.sum(e, axis=-1, keepdims=True))
        # any NaN in z (NaN logit, +inf logit, all -inf row) makes the whole row NaN, as in torch
        rownan = np.any(np.isnan(z), axis=-1, keepdims=True)
        return np.where(rownan, np.nan, z - lse)


def softmax(x):
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        return np.exp(log_softmax(x))


def _reduce(per, denom, reduction):
    if reduction == "none":
        return per
    s = float(np.sum(per, dtype=np.float64))
    if reduction == "sum":
        return s
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            return float(np.float64(s) / np.float64(denom))
    raise ValueError("reduction")


# ----------------------------------------------------------------------------------------------
# cross entropy
# ----------------------------------------------------------------------------------------------
def ref_cross_entropy(logits, target, *, axis=1, weight=None, ignore_index=-100,
                      label_smoothing=0.0, reduction="mean", from_logits=True,
                      clip_dtype=np.float64):
    """Return (loss, grad) in float64.

    loss: float for "mean"/"sum", float64 array shaped like target (hard) / logits without the
    class axis (soft) for "none".  grad: d loss / d logits, same layout as logits (for "none": the
    gradient of the sum of the per-element losses).
    """
    logits = np.asarray(logits)
    ndim = logits.ndim
    X = _move_class_last(logits, axis)
    C = X.shape[-1]
    eps = float(label_smoothing)
    w = np.ones(C) if weight is None else np.asarray(weight, dtype=np.float64)
    hard = is_hard_target(target)
    if hard:
        lab, valid = labels_and_mask(target, C, ignore_index)
        assert lab.shape == X.shape[:-1], (lab.shape, X.shape)
        onehot = np.zeros(X.shape)
        if C > 0:
            np.put_along_axis(onehot, lab[..., None], 1.0, axis=-1)
        wy = w[lab]
        denom = float(np.sum(np.where(valid, wy, 0.0)))
    else:
        T = _move_class_last(target, axis)
        assert T.shape == X.shape
        valid = np.ones(X.shape[:-1], dtype=bool)
        denom = float(np.prod(X.shape[:-1]))

    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if from_logits:
            lp = log_softmax(X)
            p = np.exp(lp)
            if hard:
                nll = -np.take_along_axis(lp, lab[..., None], axis=-1)[..., 0]
                per = wy * nll
                dper = wy[..., None] * (p - onehot)  # d(per)/dx
                if eps > 0:
                    smooth = -np.sum(lp * w, axis=-1)
                    per = (1 - eps) * per + (eps / C) * smooth
                    dper = (1 - eps) * dper + (eps / C) * (np.sum(w) * p - w)
            else:
                Ts = T * (1 - eps) + eps / C if eps > 0 else T
                wt = w * Ts
                per = -np.sum(wt * lp, axis=-1)
                dper = p * np.sum(wt, axis=-1, keepdims=True) - wt
        else:
            # Keras categorical_crossentropy on probabilities.
            if hard:
                Ts = onehot * (1 - eps) + eps / C if eps > 0 else onehot
            else:
                Ts = T * (1 - eps) + eps / C if eps > 0 else T
            lo, hi = clip_bounds(clip_dtype)
            S = np.sum(X, axis=-1, keepdims=True)
            qt = X / S
            inside = (qt >= lo) & (qt <= hi)
            q = np.clip(qt, lo, hi)
            wt = w * Ts
            per = -np.sum(wt * np.log(q), axis=-1)
            # d per / d q_c = -wt_c / q_c  (0 where clipped); d qt_c / d x_j = (delta_cj - qt_c)/S
            a = np.where(inside, -wt / q, 0.0)
            dper = (a - np.sum(a * qt, axis=-1, keepdims=True)) / S
        per = np.where(valid, per, 0.0)
        dper = np.where(valid[..., None], dper, 0.0)
        loss = _reduce(per, denom, reduction)
        grad = dper
        if reduction == "mean":
            if denom != 0:
                grad = dper / denom
            elif valid.any():
                # torch: counted elements but sum(w[target]) == 0 -> NaN loss (its nll term is
                # 0/0, even if the smoothing term alone would be x/0 = inf) and NaN gradient
                loss = float("nan")
                grad = np.where(valid[..., None], np.nan, np.zeros_like(dper))
            else:
                # torch: nothing counted -> NaN loss but a zero gradient
                grad = np.zeros_like(dper)
    return loss, _restore_class_axis(grad, axis, ndim)


def ce_scales(logits, target, *, axis=1, weight=None, ignore_index=-100, label_smoothing=0.0,
              reduction="mean", **_):
    """(abs_scale, grad_unit) for tolerances of float32 kernels.

    abs_scale = sum over counted elements of (w_y + eps/C * sum_c w_c): the absolute error of a
    summed loss is a few float ulps times this (saturated rows: log(1 + tiny) has an absolute,
    not a relative, error).  grad_unit = max weight (divided by the "mean" denominator): the
    natural unit of the gradient entries (p_y - 1 for a saturated row has an absolute error of
    ~ulp(1) * unit).  Both are divided by the denominator for reduction="mean"."""
    X = _move_class_last(logits, axis)
    C = X.shape[-1]
    w = np.ones(C) if weight is None else np.asarray(weight, dtype=np.float64)
    eps = float(label_smoothing)
    wmax = float(w.max(initial=0.0))
    if is_hard_target(target):
        lab, valid = labels_and_mask(target, C, ignore_index)
        abs_scale = float(np.sum((w[lab] + eps / max(C, 1) * w.sum())[valid]))
        denom = float(np.sum(w[lab][valid]))
    else:
        n = X.size // max(C, 1)
        abs_scale = n * wmax * 2.0
        denom = float(n)
    if reduction == "mean":
        return (abs_scale / denom, wmax / denom) if denom > 0 else (0.0, 0.0)
    return abs_scale, wmax


def ref_cross_entropy_none(logits, target, **kw):
    kw = dict(kw, reduction="none")
    return ref_cross_entropy(logits, target, **kw)[0]


# ----------------------------------------------------------------------------------------------
# binary cross entropy
# ----------------------------------------------------------------------------------------------
def _softplus(z):
    # log(1 + exp(z)), stable
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def _sigmoid(x):
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def ref_binary_cross_entropy(logits, target, *, pos_weight=None, reduction="mean",
                             from_logits=True, clip_dtype=np.float64):
    """PyTorch binary_cross_entropy_with_logits (from_logits=True) or the clipped-probability
    Keras form (from_logits=False). Returns (loss, grad) in float64."""
    x = np.array(logits, dtype=np.float64)
    y = np.array(target, dtype=np.float64)
    assert x.shape == y.shape
    pw = np.ones(()) if pos_weight is None else np.asarray(pos_weight, dtype=np.float64)
    pw = np.broadcast_to(pw, np.broadcast_shapes(pw.shape, x.shape))
    assert pw.shape == x.shape, "pos_weight must broadcast to logits"
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if from_logits:
            # torch's (1-y)x + lw*softplus(-x), lw = 1+(pw-1)y, rewritten without cancellation
            # (for x < 0 the two terms nearly cancel: -40 + 40.000...0004 is 0 even in float64):
            #   x >= 0: (1-y)x + lw*log1p(exp(-x));  x < 0: -pw*y*x + lw*log1p(exp(x))
            # and the gradient (1-y) - lw*sigmoid(-x) = (1-y)*sigmoid(x) - pw*y*sigmoid(-x).
            lw = 1.0 + (pw - 1.0) * y
            l1p = np.log1p(np.exp(-np.abs(x)))
            per = np.where(x >= 0, (1.0 - y) * x + lw * l1p, -pw * y * x + lw * l1p)
            per = np.where(np.isnan(x), np.nan, per)
            # torch gives +inf for x=+inf, y=0 (and NaN for other infinite cases); keep that one
            per = np.where((x == np.inf) & (y == 0), np.inf, per)
            dper = (1.0 - y) * _sigmoid(x) - pw * y * _sigmoid(-x)
            dper = np.where(np.isnan(x), np.nan, dper)
        else:
            lo, hi = clip_bounds(clip_dtype)
            inside = (x >= lo) & (x <= hi)
            p = np.clip(x, lo, hi)
            per = -(pw * y * np.log(p) + (1.0 - y) * np.log1p(-p))
            dper = np.where(inside, -(pw * y / p - (1.0 - y) / (1.0 - p)), 0.0)
        n = float(x.size)
        loss = _reduce(per, n, reduction)
        grad = dper / n if reduction == "mean" else dper
    return loss, grad


# ----------------------------------------------------------------------------------------------
# accuracy
# ----------------------------------------------------------------------------------------------
def _true_class(target, C, axis, ignore_index):
    if is_hard_target(target):
        return labels_and_mask(target, C, ignore_index)
    T = _move_class_last(target, axis)
    return np.argmax(T, axis=-1), np.ones(T.shape[:-1], dtype=bool)


def topk_correct(X, lab, k):
    """X (..., C) float64, lab (...) int64: correct iff
    #{c: x_c > x_y} + #{c < y: x_c == x_y} < k; a row with a NaN is wrong."""
    C = X.shape[-1]
    xy = np.take_along_axis(X, lab[..., None], axis=-1)
    idx = np.arange(C)
    rank = np.sum(X > xy, axis=-1) + np.sum((X == xy) & (idx < lab[..., None]), axis=-1)
    nan_row = np.any(np.isnan(X), axis=-1)
    return (rank < k) & ~nan_row


def ref_accuracy(logits, target, *, axis=1, top_k=1, ignore_index=-100):
    X = _move_class_last(logits, axis)
    C = X.shape[-1]
    lab, valid = _true_class(target, C, axis, ignore_index)
    ok = topk_correct(X, lab, top_k) & valid
    n = int(valid.sum())
    return float(ok.sum()) / n if n else float("nan")


def ref_binary_accuracy(logits, target, *, threshold=0.0):
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if x.size == 0:
        return float("nan")
    # +-inf follow the rule; a NaN logit is wrong (as in ref_accuracy and ref_evaluate_binary)
    return float(np.mean(((x > threshold) == (y >= 0.5)) & ~np.isnan(x)))


# ----------------------------------------------------------------------------------------------
# one pass statistics
# ----------------------------------------------------------------------------------------------
def bin_index(v, bins):
    """Bin of v in [0,1]: min(floor(v*bins), bins-1)."""
    return np.minimum(np.floor(np.asarray(v, dtype=np.float64) * bins), bins - 1).astype(np.int64)


def margin_bin_index(m, bins):
    return np.minimum(np.floor((np.asarray(m, dtype=np.float64) + 1.0) / 2.0 * bins),
                      bins - 1).astype(np.int64)


def _hist(idx, bins):
    return np.bincount(np.asarray(idx, dtype=np.int64).ravel(), minlength=bins).astype(np.int64)


def ref_evaluate(logits, target, *, axis=1, weight=None, ignore_index=-100, label_smoothing=0.0,
                 top_k=(1,), bins=20, per_sample=False, grad=False):
    """Every BatchStats field of the contract as a dict (float64 / int64 NumPy values).

    Extra keys (not BatchStats fields) start with '_': the raw per-element values
    (_p_true, _conf, _margin, _valid_finite) so tests can check histograms tolerantly.
    """
    logits = np.asarray(logits)
    X = _move_class_last(logits, axis)
    C = X.shape[-1]
    if isinstance(top_k, int):
        top_k = (top_k,)
    lab, valid = _true_class(target, C, axis, ignore_index)
    kw = dict(axis=axis, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing)
    per, _ = ref_cross_entropy(logits, target, reduction="none", **kw)
    loss_sum, _ = ref_cross_entropy(logits, target, reduction="sum", **kw)
    _, g = ref_cross_entropy(logits, target, reduction="mean", **kw)  # grad of .loss
    if is_hard_target(target):
        w = np.ones(C) if weight is None else np.asarray(weight, dtype=np.float64)
        weight_sum = float(np.sum(np.where(valid, w[lab], 0.0)))
    else:
        weight_sum = float(valid.size)
    finite_row = np.all(np.isfinite(X), axis=-1)
    vf = valid & finite_row  # rows entering confusion / histograms / per-class stats / entropy
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        P = softmax(X)
        pred = np.argmax(X, axis=-1) if C > 0 else np.zeros(X.shape[:-1], np.int64)
        p_true = np.take_along_axis(P, lab[..., None], axis=-1)[..., 0]
        conf = np.max(P, axis=-1) if C > 0 else np.zeros(X.shape[:-1])
        Pother = P.copy()
        np.put_along_axis(Pother, lab[..., None], -np.inf, axis=-1)
        p_other = np.max(Pother, axis=-1) if C > 1 else np.zeros(X.shape[:-1])
        margin = p_true - p_other
        ent = -np.sum(np.where(P > 0, P * np.log(np.where(P > 0, P, 1.0)), 0.0), axis=-1)
    top1 = (pred == lab) & vf
    r = {}
    r["num_classes"] = C
    r["bins"] = bins
    r["loss_sum"] = loss_sum
    r["weight_sum"] = weight_sum
    r["count"] = int(valid.sum())
    r["ignored"] = int((~valid).sum())
    r["nonfinite"] = int((~np.isfinite(X)).sum())
    r["nonfinite_rows"] = int((~finite_row).sum())
    # contract: rows with a non-finite logit are counted, and correct by the top-k rule unless
    # they hold a NaN (as accuracy()); they stay out of confusion / histograms / per-class stats
    r["correct"] = {int(k): int((topk_correct(X, lab, k) & valid).sum()) for k in top_k}
    conf_mat = np.zeros((C, C), dtype=np.int64)
    np.add.at(conf_mat, (lab[vf], pred[vf]), 1)
    r["confusion"] = conf_mat
    r["class_loss_sum"] = np.bincount(lab[vf], weights=per[vf], minlength=C).astype(np.float64)
    r["class_count"] = np.bincount(lab[vf], minlength=C).astype(np.int64)
    r["true_prob_hist"] = _hist(bin_index(p_true[vf], bins), bins)
    cb = bin_index(conf[vf], bins)
    r["conf_hist"] = _hist(cb, bins)
    r["conf_correct"] = np.bincount(cb, weights=top1[vf].astype(np.float64),
                                    minlength=bins).astype(np.int64)
    r["conf_sum"] = np.bincount(cb, weights=conf[vf], minlength=bins).astype(np.float64)
    r["margin_hist"] = _hist(margin_bin_index(margin[vf], bins), bins)
    r["true_prob_sum"] = float(np.sum(p_true[vf]))
    r["below_inv_e"] = int(np.sum(p_true[vf] < INV_E))
    r["entropy_sum"] = float(np.sum(ent[vf]))
    if per_sample:
        N = X.shape[0]
        S = int(np.prod(X.shape[1:-1]))  # elements per sample (1 for (N, C))
        lab2, valid2, vf2 = lab.reshape(N, S), valid.reshape(N, S), vf.reshape(N, S)
        pred2, per2 = pred.reshape(N, S), per.reshape(N, S)
        r["sample_loss_sum"] = np.sum(np.where(valid2, per2, 0.0), axis=1)
        r["sample_count"] = valid2.sum(axis=1).astype(np.int64)
        ok1 = (topk_correct(X, lab, 1) & valid).reshape(N, S)
        r["sample_correct"] = ok1.sum(axis=1).astype(np.int64)
        inter = np.zeros((N, C), np.int64)
        st = np.zeros((N, C), np.int64)
        sp = np.zeros((N, C), np.int64)
        for i in range(N):
            m = vf2[i]
            st[i] = np.bincount(lab2[i][m], minlength=C)
            sp[i] = np.bincount(pred2[i][m], minlength=C)
            inter[i] = np.bincount(lab2[i][m & (pred2[i] == lab2[i])], minlength=C)
        r["sample_intersection"], r["sample_true"], r["sample_pred"] = inter, st, sp
    r["grad"] = g if grad else None
    r["loss"] = loss_sum / weight_sum if weight_sum != 0 else float("nan")
    r["accuracy"] = r["correct"][1] / r["count"] if 1 in r["correct"] and r["count"] else (
        float("nan") if r["count"] == 0 else None)
    r["_p_true"] = p_true[vf]
    r["_conf"] = conf[vf]
    r["_margin"] = margin[vf]
    r["_per"] = per
    r["_abs_scale"], _ = ce_scales(logits, target, reduction="sum", **kw)
    r["_grad_unit"] = ce_scales(logits, target, reduction="mean", **kw)[1]
    r["_lab"] = lab[vf]
    r["_pred"] = pred[vf]
    r["_top1"] = top1[vf]
    return r


def ref_evaluate_binary(logits, target, *, pos_weight=None, threshold=0.0, bins=20, grad=False):
    """Binary BatchStats as a dict: 2 classes, true = target >= 0.5, pred = logit > threshold,
    p = sigmoid(logit); p_true = p for true class 1 else 1-p; conf = max(p, 1-p);
    margin = p_true - p_other = 2 p_true - 1; entropy = binary entropy."""
    x = np.array(logits, dtype=np.float64)
    y = np.array(target, dtype=np.float64)
    per, _ = ref_binary_cross_entropy(x, y, pos_weight=pos_weight, reduction="none")
    loss_sum, _ = ref_binary_cross_entropy(x, y, pos_weight=pos_weight, reduction="sum")
    _, g = ref_binary_cross_entropy(x, y, pos_weight=pos_weight, reduction="mean")
    finite = np.isfinite(x)
    lab = (y >= 0.5).astype(np.int64)
    pred = (x > threshold).astype(np.int64)
    p1 = _sigmoid(x)
    P = np.stack([1 - p1, p1], axis=-1)
    p_true = np.where(lab == 1, p1, 1 - p1)
    conf = np.maximum(p1, 1 - p1)
    margin = 2 * p_true - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.sum(np.where(P > 0, P * np.log(np.where(P > 0, P, 1.0)), 0.0), axis=-1)
    vf = finite
    top1 = (pred == lab) & vf
    r = {"num_classes": 2, "bins": bins, "loss_sum": loss_sum, "weight_sum": float(x.size),
         "count": int(x.size), "ignored": 0, "nonfinite": int((~finite).sum()),
         "nonfinite_rows": int((~finite).sum()),
         "correct": {1: int(((pred == lab) & ~np.isnan(x)).sum())}}  # NaN: wrong, inf: rule
    cm = np.zeros((2, 2), np.int64)
    np.add.at(cm, (lab[vf], pred[vf]), 1)
    r["confusion"] = cm
    r["class_loss_sum"] = np.bincount(lab[vf], weights=per[vf], minlength=2).astype(np.float64)
    r["class_count"] = np.bincount(lab[vf], minlength=2).astype(np.int64)
    r["true_prob_hist"] = _hist(bin_index(p_true[vf], bins), bins)
    cb = bin_index(conf[vf], bins)
    r["conf_hist"] = _hist(cb, bins)
    r["conf_correct"] = np.bincount(cb, weights=top1[vf].astype(float),
                                    minlength=bins).astype(np.int64)
    r["conf_sum"] = np.bincount(cb, weights=conf[vf], minlength=bins)
    r["margin_hist"] = _hist(margin_bin_index(margin[vf], bins), bins)
    r["true_prob_sum"] = float(p_true[vf].sum())
    r["below_inv_e"] = int((p_true[vf] < INV_E).sum())
    r["entropy_sum"] = float(ent[vf].sum())
    r["grad"] = g if grad else None
    r["loss"] = loss_sum / x.size if x.size else float("nan")
    r["accuracy"] = r["correct"][1] / x.size if x.size else float("nan")
    r["_p_true"], r["_conf"], r["_margin"] = p_true[vf], conf[vf], margin[vf]
    r["_lab"], r["_pred"], r["_top1"], r["_per"] = lab[vf], pred[vf], top1[vf], per
    pwb = np.broadcast_to(np.ones(()) if pos_weight is None else np.asarray(pos_weight, float),
                          x.shape)
    r["_abs_scale"] = float(np.sum(1.0 + pwb))
    r["_grad_unit"] = float(np.max(1.0 + pwb, initial=1.0)) / max(x.size, 1)
    return r


# ----------------------------------------------------------------------------------------------
# derived metrics (what sklearn does not cover)
# ----------------------------------------------------------------------------------------------
def ref_calibration(conf, correct, bins):
    """ECE / MCE / reliability diagram from per-element confidence and correctness (float64)."""
    conf = np.asarray(conf, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    b = bin_index(conf, bins)
    n = np.bincount(b, minlength=bins).astype(np.float64)
    s_conf = np.bincount(b, weights=conf, minlength=bins)
    s_acc = np.bincount(b, weights=correct, minlength=bins)
    N = n.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        c_mean = s_conf / n
        a_mean = s_acc / n
        gap = np.abs(a_mean - c_mean)
    nz = n > 0
    ece = float(np.sum(n[nz] * gap[nz]) / N) if N else float("nan")
    mce = float(np.max(gap[nz])) if nz.any() else float("nan")
    return {"ece": ece, "mce": mce, "bin_edges": np.linspace(0.0, 1.0, bins + 1),
            "confidence": c_mean, "accuracy": a_mean, "count": n.astype(np.int64)}


def _absent_fill(num, den, absent):
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = num / den
    fill = {"nan": np.nan, "zero": 0.0, "one": 1.0}[absent]
    return np.where(den == 0, fill, v)


def ref_class_metrics(confusion, absent="nan"):
    """precision / recall / iou / dice / f1 per class from a (C,C) confusion (rows=true).

    lossdiag convention (Metrics.compute docstring): `absent` (nan/zero/one) is the IoU/Dice of a
    class absent from both target and prediction (union 0; mmsegmentation / smp zero_division);
    precision, recall and F1 are NaN wherever their denominator is 0 (sklearn zero_division=nan),
    whatever `absent` says."""
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(cm)
    t = cm.sum(axis=1)
    p = cm.sum(axis=0)
    prec = _absent_fill(tp, p, "nan")
    rec = _absent_fill(tp, t, "nan")
    f1 = _absent_fill(2 * tp, t + p, "nan")
    iou = _absent_fill(tp, t + p - tp, absent)
    dice = _absent_fill(2 * tp, t + p, absent)
    return {"precision": prec, "recall": rec, "iou": iou, "dice": dice, "f1": f1}


def _mean_absent(v):
    v = np.asarray(v, dtype=np.float64)
    return float(np.nanmean(v)) if np.any(~np.isnan(v)) else float("nan")


def ref_imagewise(inter, st, sp, absent="nan"):
    """Imagewise mIoU / mDice: per image, per class IoU (absent convention where the union is 0),
    averaged over classes within each image, then over images (NaN images skipped)."""
    inter = np.asarray(inter, np.float64)
    union = np.asarray(st, np.float64) + np.asarray(sp, np.float64) - inter
    iou = _absent_fill(inter, union, absent)
    dice = _absent_fill(2 * inter, union + inter, absent)
    per_img_iou = np.array([_mean_absent(r) for r in iou])
    per_img_dice = np.array([_mean_absent(r) for r in dice])
    return _mean_absent(per_img_iou), _mean_absent(per_img_dice)


def ref_metrics_compute(stats, absent="nan"):
    """Derived metrics of Metrics.compute() from accumulated reference stats (a ref_evaluate dict
    whose arrays/ints are sums over the batches).  Keys as in the contract."""
    C = stats["num_classes"]
    bins = stats["bins"]
    cm = np.asarray(stats["confusion"], np.float64)
    out = ref_class_metrics(cm, absent)
    n_hist = float(np.sum(stats["conf_hist"]))
    out["loss"] = stats["loss_sum"] / stats["weight_sum"] if stats["weight_sum"] else float("nan")
    out["accuracy"] = stats["correct"][1] / stats["count"] if stats["count"] else float("nan")
    out["top_k_accuracy"] = {k: (v / stats["count"] if stats["count"] else float("nan"))
                             for k, v in stats["correct"].items()}
    out["mean_iou"] = _mean_absent(out["iou"])
    out["mean_dice"] = _mean_absent(out["dice"])
    conf_hist = np.asarray(stats["conf_hist"], np.float64)
    conf_correct = np.asarray(stats["conf_correct"], np.float64)
    conf_sum = np.asarray(stats["conf_sum"], np.float64)
    nz = conf_hist > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.abs(conf_correct - conf_sum) / conf_hist
        out["reliability"] = {"bin_edges": np.linspace(0, 1, bins + 1),
                              "confidence": conf_sum / conf_hist,
                              "accuracy": conf_correct / conf_hist,
                              "count": conf_hist.astype(np.int64)}
    out["ece"] = float(np.sum(np.abs(conf_correct - conf_sum)) / n_hist) if n_hist else float("nan")
    out["mce"] = float(np.max(gap[nz])) if nz.any() else float("nan")
    out["mean_true_class_prob"] = stats["true_prob_sum"] / n_hist if n_hist else float("nan")
    out["frac_true_prob_below_inv_e"] = stats["below_inv_e"] / n_hist if n_hist else float("nan")
    out["mean_entropy"] = stats["entropy_sum"] / n_hist if n_hist else float("nan")
    mh = np.asarray(stats["margin_hist"], np.float64)
    if bins % 2 == 0:
        above = mh[bins // 2:].sum()
        out["small_margin_correct_frac"] = mh[bins // 2] / above if above else float("nan")
    tot = cm.sum()
    out["label_freq"] = cm.sum(axis=1) / tot if tot else np.full(C, np.nan)
    out["pred_freq"] = cm.sum(axis=0) / tot if tot else np.full(C, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["per_class_loss"] = (np.asarray(stats["class_loss_sum"])
                                 / np.asarray(stats["class_count"]))
    out["confusion"] = np.asarray(stats["confusion"], np.int64)
    out["count"] = stats["count"]
    out["ignored"] = stats["ignored"]
    out["nonfinite"] = stats["nonfinite"]
    out["num_classes"] = C
    # balanced accuracy (sklearn: mean recall over classes present in y_true) and Cohen's kappa
    t = cm.sum(axis=1)
    present = t > 0
    out["balanced_accuracy"] = float(np.mean(np.diag(cm)[present] / t[present])) if present.any() \
        else float("nan")
    if tot:
        po = np.trace(cm) / tot
        pe = float(np.sum(cm.sum(axis=1) * cm.sum(axis=0))) / tot**2
        out["kappa"] = (po - pe) / (1 - pe) if pe != 1 else float("nan")
    else:
        out["kappa"] = float("nan")
    return out


def ref_accumulate(dicts):
    """Sum a list of ref_evaluate dicts (the stats a streaming Metrics holds)."""
    out = {}
    keys_sum = ["loss_sum", "weight_sum", "count", "ignored", "nonfinite", "nonfinite_rows",
                "confusion", "class_loss_sum", "class_count", "true_prob_hist", "conf_hist",
                "conf_correct", "conf_sum", "margin_hist", "true_prob_sum", "below_inv_e",
                "entropy_sum"]
    for k in keys_sum:
        out[k] = sum(d[k] for d in dicts)
    out["correct"] = {k: sum(d["correct"][k] for d in dicts) for k in dicts[0]["correct"]}
    out["num_classes"] = dicts[0]["num_classes"]
    out["bins"] = dicts[0]["bins"]
    return out
