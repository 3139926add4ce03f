"""Proofs of the float64 references in tests/reference.py (no lossdiag needed).

torch is the arbiter of loss/gradient semantics, scikit-learn of the classification metrics, and
central finite differences of every gradient formula.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference as R

torch = None
try:  # the torch-based proofs are skipped without torch, the rest always runs
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    pass

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")


def rng(seed=0):
    return np.random.default_rng(seed)


def t64(a):
    return torch.tensor(np.ascontiguousarray(a), dtype=torch.float64)


def torch_ce(x, y, axis=1, weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    """torch loss and autograd grad (of the sum for 'none') in float64, class axis moved to 1."""
    X = t64(x)
    if axis == -1 and X.ndim > 1:
        X = X.movedim(-1, 1).contiguous()
    X.requires_grad_(True)
    if np.asarray(y).dtype.kind == "f":
        Y = t64(y)
        if axis == -1 and Y.ndim > 1:
            Y = Y.movedim(-1, 1).contiguous()
    else:
        Y = torch.tensor(np.asarray(y, dtype=np.int64))
    W = None if weight is None else t64(weight)
    out = F.cross_entropy(X, Y, weight=W, ignore_index=ignore_index,
                          label_smoothing=label_smoothing, reduction=reduction)
    out.sum().backward()
    g = X.grad
    if axis == -1 and X.ndim > 1:
        g = g.movedim(1, -1)
    return out.detach().numpy(), g.numpy()


def assert_eq(a, b, rtol=1e-12, atol=1e-14):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64),
                               rtol=rtol, atol=atol, equal_nan=True)


def fd_grad(f, x, h=1e-6):
    """Central finite differences of a scalar function f(x) over every entry of x."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (f(xp) - f(xm)) / (2 * h)
    return g


def make_labels(r, shape, C, ignore_index=-100, frac_ignored=0.2):
    y = r.integers(0, C, size=shape)
    if ignore_index is not None and frac_ignored:
        y = np.where(r.random(shape) < frac_ignored, ignore_index, y)
    return y


# ------------------------------------------------------------------------------------------------
# cross entropy vs torch
# ------------------------------------------------------------------------------------------------
CASES = [
    # (shape, axis)
    ((7, 5), 1),
    ((1, 1), 1),
    ((6, 2), 1),
    ((3, 4, 5, 6), 1),
    ((2, 3, 2, 3, 4), 1),
    ((3, 5, 4, 6), -1),
    ((4, 21), -1),
]


@needs_torch
@pytest.mark.parametrize("shape,axis", CASES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore_index", [-100, 0, 2])
@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ref_ce_hard_vs_torch(shape, axis, weighted, ignore_index, eps, reduction):
    r = rng(hash((shape, axis)) % 1000)
    x = r.normal(size=shape) * 3
    C = shape[axis]
    tshape = tuple(s for i, s in enumerate(shape) if i != (axis % len(shape)))
    y = make_labels(r, tshape, C, ignore_index)
    w = r.random(C) + 0.25 if weighted else None
    kw = dict(axis=axis, weight=w, ignore_index=ignore_index, label_smoothing=eps,
              reduction=reduction)
    tl, tg = torch_ce(x, y, **kw)
    rl, rg = R.ref_cross_entropy(x, y, **kw)
    assert_eq(rl, tl)
    assert_eq(rg, tg)


@needs_torch
@pytest.mark.parametrize("shape,axis", CASES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ref_ce_soft_vs_torch(shape, axis, weighted, eps, reduction):
    r = rng(1)
    x = r.normal(size=shape) * 2
    C = shape[axis]
    t = R.softmax(R._move_class_last(r.normal(size=shape) * 2, axis))
    if axis == 1:
        t = np.moveaxis(t, -1, 1)
    w = r.random(C) + 0.5 if weighted else None
    kw = dict(axis=axis, weight=w, label_smoothing=eps, reduction=reduction)
    tl, tg = torch_ce(x, t, **kw)
    rl, rg = R.ref_cross_entropy(x, t, **kw)
    assert_eq(rl, tl)
    assert_eq(rg, tg)


@needs_torch
def test_torch_label_smoothing_formula_documented():
    """What torch 2.13 does with label_smoothing + weight + ignore_index, spelled out explicitly
    (independently of reference.py), so the comment at the top of reference.py is checked."""
    r = rng(5)
    N, C, eps = 9, 4, 0.3
    x = r.normal(size=(N, C))
    y = np.array([0, 1, 2, 3, -100, 1, -100, 0, 2])
    w = np.array([0.5, 2.0, 1.0, 3.0])
    lp = x - np.log(np.exp(x).sum(1, keepdims=True))
    valid = y != -100
    ys = np.where(valid, y, 0)
    for weight in (None, w):
        ww = np.ones(C) if weight is None else weight
        per = ((1 - eps) * ww[ys] * -lp[np.arange(N), ys] + eps / C * -(lp * ww).sum(1)) * valid
        tl, _ = torch_ce(x, y, weight=weight, label_smoothing=eps, reduction="mean")
        # "mean": everything divided by sum of w[target] over the non-ignored elements ...
        assert abs(tl - per.sum() / (ww[ys] * valid).sum()) < 1e-12
        # ... and NOT by N (the old torch behaviour for the smoothing term)
        smooth = (eps / C * -(lp * ww).sum(1) * valid).sum()
        old = (per.sum() - smooth) / (ww[ys] * valid).sum() + smooth / N
        assert abs(tl - old) > 1e-3


@needs_torch
def test_ref_ce_all_ignored_and_empty_vs_torch():
    x = rng(2).normal(size=(4, 3))
    y = np.full(4, -100)
    for eps in (0.0, 0.1):
        for w in (None, np.array([1.0, 2.0, 3.0])):
            tl, tg = torch_ce(x, y, weight=w, label_smoothing=eps)
            rl, rg = R.ref_cross_entropy(x, y, weight=w, label_smoothing=eps)
            assert math.isnan(rl) and np.isnan(tl)
            assert_eq(R.ref_cross_entropy(x, y, weight=w, reduction="sum")[0], 0.0)
    e = np.zeros((0, 3))
    ey = np.zeros(0, np.int64)
    assert math.isnan(R.ref_cross_entropy(e, ey)[0])
    assert R.ref_cross_entropy(e, ey, reduction="sum")[0] == 0.0
    assert R.ref_cross_entropy(e, ey, reduction="none")[0].shape == (0,)
    assert R.ref_cross_entropy(e, ey)[1].shape == (0, 3)
    assert math.isnan(float(torch_ce(e, ey)[0]))


@needs_torch
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_ref_ce_zero_weight_sum_vs_torch(eps):
    # counted elements whose target weights are all 0: torch gives NaN loss and NaN gradient
    x = rng(21).normal(size=(3, 4))
    y = np.array([0, 0, -100])
    w = np.array([0.0, 1.0, 2.0, 1.0])
    for red in ("mean", "sum", "none"):
        tl, tg = torch_ce(x, y, weight=w, label_smoothing=eps, reduction=red)
        rl, rg = R.ref_cross_entropy(x, y, weight=w, label_smoothing=eps, reduction=red)
        assert_eq(rl, tl)
        assert_eq(rg, tg)
    assert math.isnan(R.ref_cross_entropy(x, y, weight=w, label_smoothing=eps)[0])


@needs_torch
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_ref_ce_nonfinite_vs_torch(eps):
    x = rng(3).normal(size=(6, 4))
    y = np.array([0, 1, 2, 3, 0, 1])
    x[0, 3] = -np.inf  # mask at a non-target class
    x[1, 0] = np.nan
    x[2, 1] = np.inf
    x[3, 3] = -np.inf  # -inf at the target class -> inf
    x[4, :] = -np.inf  # all -inf -> NaN
    for red in ("none", "sum", "mean"):
        tl, tg = torch_ce(x, y, label_smoothing=eps, reduction=red)
        rl, rg = R.ref_cross_entropy(x, y, label_smoothing=eps, reduction=red)
        assert_eq(rl, tl)
        assert_eq(rg, tg)
    rl = R.ref_cross_entropy(x, y, label_smoothing=eps, reduction="none")[0]
    if eps == 0:
        assert np.isfinite(rl[0]) and np.isfinite(rl[5])
    else:
        assert rl[0] == np.inf
    assert np.isnan(rl[1]) and np.isnan(rl[2]) and rl[3] == np.inf and np.isnan(rl[4])


def test_ref_ce_grad_finite_differences():
    r = rng(4)
    for shape, axis in [((3, 4), 1), ((2, 3, 2, 2), 1), ((2, 2, 3), -1)]:
        C = shape[axis]
        x = r.normal(size=shape)
        tshape = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
        y = make_labels(r, tshape, C, -100, 0.3)
        soft = np.moveaxis(R.softmax(r.normal(size=tshape + (C,))), -1, axis % len(shape)) \
            if axis == 1 else R.softmax(r.normal(size=tshape + (C,)))
        w = r.random(C) + 0.5
        for tgt in (y, soft):
            for red in ("mean", "sum", "none"):
                kw = dict(axis=axis, weight=w, label_smoothing=0.15, reduction=red)

                def f(z, tgt=tgt, kw=kw):
                    return float(np.sum(R.ref_cross_entropy(z, tgt, **kw)[0]))

                assert_eq(R.ref_cross_entropy(x, tgt, **kw)[1], fd_grad(f, x), rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------------------------
# from_logits=False (Keras categorical_crossentropy)
# ------------------------------------------------------------------------------------------------
def keras_cce_torch(p, t_onehot, w, eps, axis):
    P = t64(p)
    P.requires_grad_(True)
    T = t64(t_onehot)
    if eps:
        T = T * (1 - eps) + eps / p.shape[axis]
    shp = [1] * P.ndim
    shp[axis] = -1
    W = t64(w).reshape(shp)
    q = P / P.sum(dim=axis, keepdim=True)
    q = q.clamp(1e-7, 1 - 1e-7)
    per = -(W * T * torch.log(q)).sum(dim=axis)
    per.sum().backward()
    return per.detach().numpy(), P.grad.numpy()


@needs_torch
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_ref_probabilities_vs_torch_autograd(axis, eps):
    r = rng(6)
    shape = (5, 4, 3)
    C = shape[axis]
    p = r.random(shape) + 0.05
    p[0, 0, 0] = 1e-12  # clipped from below after normalisation
    tshape = tuple(s for i, s in enumerate(shape) if i != axis % 3)
    y = r.integers(0, C, size=tshape)
    onehot = np.moveaxis(np.eye(C)[y], -1, axis % 3)
    w = r.random(C) + 0.5
    tl, tg = keras_cce_torch(p, onehot, w, eps, axis % 3)
    for tgt in (y, onehot):
        rl, rg = R.ref_cross_entropy(p, tgt, axis=axis, weight=w, label_smoothing=eps,
                                     reduction="none", from_logits=False)
        assert_eq(rl, tl)
        assert_eq(rg, tg)
    # a row that is one-hot itself: q clipped at 1-1e-7 and 1e-7 -> loss -log(1e-7) when wrong
    p1 = np.array([[0.0, 1.0, 0.0]])
    l1 = R.ref_cross_entropy(p1, np.array([0]), reduction="none", from_logits=False)[0]
    assert_eq(l1, [-math.log(1e-7)])
    l2 = R.ref_cross_entropy(p1, np.array([1]), reduction="none", from_logits=False)[0]
    assert_eq(l2, [-math.log(1 - 1e-7)])
    # float32 working precision: upper clip bound 1 - 2**-23
    l3 = R.ref_binary_cross_entropy(np.array([1.0]), np.array([0.0]), reduction="none",
                                    from_logits=False, clip_dtype=np.float32)[0]
    assert_eq(l3, [-math.log(2.0**-23)])


def test_ref_probabilities_grad_fd():
    r = rng(7)
    p = r.random((4, 3)) + 0.1
    y = np.array([0, 2, -100, 1])
    for red in ("mean", "sum"):
        kw = dict(weight=np.array([1.0, 2.0, 0.5]), label_smoothing=0.1, reduction=red,
                  from_logits=False)
        f = lambda z, kw=kw: R.ref_cross_entropy(z, y, **kw)[0]  # noqa: E731
        assert_eq(R.ref_cross_entropy(p, y, **kw)[1], fd_grad(f, p), rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------------------------
# binary cross entropy
# ------------------------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("shape,pw_shape", [((7,), None), ((7,), ()), ((5, 3), (3,)),
                                             ((2, 3, 4, 5), (3, 1, 1)), ((4, 6), (1, 6)),
                                             ((2, 3, 4), (2, 3, 4))])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ref_bce_vs_torch(shape, pw_shape, reduction):
    r = rng(8)
    x = r.normal(size=shape) * 4
    x.ravel()[0] = 40.0
    x.ravel()[-1] = -40.0
    y = r.random(shape)
    y.ravel()[:2] = [0.0, 1.0]
    pw = None if pw_shape is None else r.random(pw_shape) * 3 + 0.1
    X = t64(x).requires_grad_(True)
    out = F.binary_cross_entropy_with_logits(X, t64(y), pos_weight=None if pw is None else t64(pw),
                                             reduction=reduction)
    out.sum().backward()
    rl, rg = R.ref_binary_cross_entropy(x, y, pos_weight=pw, reduction=reduction)
    assert_eq(rl, out.detach().numpy())
    assert_eq(rg, X.grad.numpy())


@needs_torch
def test_ref_bce_probabilities_vs_torch_autograd():
    r = rng(9)
    p = r.random((6, 5))
    p[0, 0], p[0, 1], p[1, 0] = 0.0, 1.0, 1e-9
    y = r.random((6, 5))
    pw = r.random(5) + 0.5
    P = t64(p).requires_grad_(True)
    q = P.clamp(1e-7, 1 - 1e-7)
    per = -(t64(pw) * t64(y) * torch.log(q) + (1 - t64(y)) * torch.log(1 - q))
    per.sum().backward()
    rl, rg = R.ref_binary_cross_entropy(p, y, pos_weight=pw, reduction="none", from_logits=False)
    assert_eq(rl, per.detach().numpy())
    assert_eq(rg, P.grad.numpy(), rtol=1e-10)


def test_ref_bce_no_cancellation():
    # log1p(exp(-40)) = 4.248e-18: the torch formula -40 + 40.0..04 gives 0 even in float64
    x = np.array([-40.0, -23.0, 40.0, 23.0])
    y = np.array([0.0, 0.0, 1.0, 1.0])
    loss, g = R.ref_binary_cross_entropy(x, y, reduction="none")
    exact = np.log1p(np.exp(-np.array([40.0, 23.0, 40.0, 23.0])))
    assert_eq(loss, exact, rtol=1e-15, atol=0)
    sig = 1 / (1 + np.exp(np.array([40.0, 23.0, 40.0, 23.0])))
    assert_eq(g, sig * np.array([1, 1, -1, -1]), rtol=1e-15, atol=0)


def test_ref_bce_grad_fd():
    r = rng(10)
    x = r.normal(size=(3, 4))
    y = r.random((3, 4))
    pw = r.random(4) + 0.5
    for fl in (True, False):
        xx = x if fl else 1 / (1 + np.exp(-x))
        kw = dict(pos_weight=pw, reduction="mean", from_logits=fl)
        f = lambda z, kw=kw: R.ref_binary_cross_entropy(z, y, **kw)[0]  # noqa: E731
        assert_eq(R.ref_binary_cross_entropy(xx, y, **kw)[1], fd_grad(f, xx), rtol=1e-6, atol=1e-8)


@needs_torch
def test_ref_bce_nan_and_inf_vs_torch():
    x = np.array([np.nan, np.inf, -np.inf, 0.5])
    y = np.array([1.0, 0.0, 0.0, 1.0])
    t = F.binary_cross_entropy_with_logits(t64(x), t64(y), reduction="none").numpy()
    rl = R.ref_binary_cross_entropy(x, y, reduction="none")[0]
    assert np.isnan(rl[0]) and np.isnan(t[0])
    assert rl[1] == np.inf and t[1] == np.inf
    assert_eq(rl[3], t[3])


# ------------------------------------------------------------------------------------------------
# accuracy: against an independent stable-argsort implementation
# ------------------------------------------------------------------------------------------------
def _acc_argsort(x, y, k, ignore_index=-100):
    x = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])
    y = y.ravel()
    ok = n = 0
    for row, lab in zip(x, y):
        if lab == ignore_index:
            continue
        n += 1
        if np.isnan(row).any():
            continue
        order = np.argsort(-row, kind="stable")  # ties: lower index first
        ok += lab in order[:k]
    return ok / n if n else float("nan")


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_ref_accuracy_vs_argsort(k):
    r = rng(11)
    x = np.round(r.normal(size=(40, 5, 3)), 0)  # many ties
    x[0, 2, 0] = np.nan
    y = make_labels(r, (40, 3), 5, -100, 0.1)
    assert R.ref_accuracy(x, y, top_k=k) == pytest.approx(_acc_argsort(x, y, k), abs=0)
    assert R.ref_accuracy(np.moveaxis(x, 1, -1), y, axis=-1, top_k=k) == \
        pytest.approx(_acc_argsort(x, y, k), abs=0)


def test_ref_accuracy_top1_is_numpy_argmax_and_soft():
    r = rng(12)
    x = np.round(r.normal(size=(200, 4)), 0)
    y = r.integers(0, 4, 200)
    assert R.ref_accuracy(x, y) == np.mean(np.argmax(x, 1) == y)
    t = np.eye(4)[y] * 0.7 + 0.075
    assert R.ref_accuracy(x, t) == np.mean(np.argmax(x, 1) == y)
    assert math.isnan(R.ref_accuracy(x[:0], y[:0]))
    assert R.ref_binary_accuracy(np.array([0.5, -1, 2]), np.array([1.0, 0.4, 0.2])) == \
        pytest.approx(2 / 3)


def test_ref_labels_read_as_is():
    # uint8 label 156 == (uint8)(-100) is a real class, not ignore_index=-100
    lab, valid = R.labels_and_mask(np.array([156, 3], np.uint8), 200, -100)
    assert valid.all() and list(lab) == [156, 3]
    lab, valid = R.labels_and_mask(np.array([-100, 3], np.int8), 5, -100)
    assert list(valid) == [False, True]
    lab, valid = R.labels_and_mask(np.array([255, 1], np.uint8), 5, 255)
    assert list(valid) == [False, True]
    with pytest.raises(ValueError):
        R.labels_and_mask(np.array([2**64 - 100], np.uint64), 5, -100)
    with pytest.raises(ValueError):
        R.labels_and_mask(np.array([5], np.int32), 5, -100)


# ------------------------------------------------------------------------------------------------
# evaluate / metrics vs scikit-learn
# ------------------------------------------------------------------------------------------------


def _sk():
    return pytest.importorskip("sklearn.metrics")


def sk_jaccard(y, pred, labels, absent):
    """sklearn jaccard_score with the absent convention (sklearn refuses zero_division=nan)."""
    skm = _sk()
    zd = 1.0 if absent == "one" else 0.0
    iou = skm.jaccard_score(y, pred, labels=labels, average=None, zero_division=zd)
    if absent == "nan":
        none = np.array([not (np.any(y == c) or np.any(pred == c)) for c in labels])
        iou = np.where(none, np.nan, iou)
    return iou


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("absent", ["nan", "zero", "one"])
def test_ref_class_metrics_vs_sklearn(absent):
    skm = _sk()
    r = rng(13)
    C = 6
    x = r.normal(size=(300, C))
    x[:, 5] -= 100  # class 5 never predicted
    y = r.integers(0, 4, 300)  # classes 4, 5 absent from target
    y[:3] = 5
    st = R.ref_evaluate(x, y, bins=10)
    pred = np.argmax(x, 1)
    labels = np.arange(C)
    np.testing.assert_array_equal(st["confusion"], skm.confusion_matrix(y, pred, labels=labels))
    # precision/recall/F1: NaN on 0/0 whatever `absent`; IoU: `absent` where the union is 0
    p, rc, f1, _ = skm.precision_recall_fscore_support(y, pred, labels=labels, average=None,
                                                       zero_division=np.nan)
    iou = sk_jaccard(y, pred, labels, absent)
    m = R.ref_metrics_compute(st, absent=absent)
    assert_eq(m["precision"], p)
    assert_eq(m["recall"], rc)
    assert_eq(m["f1"], f1)
    assert_eq(m["iou"], iou)
    assert_eq(m["balanced_accuracy"], skm.balanced_accuracy_score(y, pred))
    assert_eq(m["kappa"], skm.cohen_kappa_score(y, pred, labels=labels))
    assert_eq(m["accuracy"], skm.accuracy_score(y, pred))


def test_ref_evaluate_stats_by_loops():
    r = rng(14)
    N, C, H, bins = 4, 3, 5, 8
    x = r.normal(size=(N, C, H)) * 2
    y = make_labels(r, (N, H), C, -100, 0.2)
    x[1, 0, 2] = np.nan
    y[1, 2] = 0
    st = R.ref_evaluate(x, y, bins=bins, top_k=(1, 2), per_sample=True)
    cnt = ign = nf = 0
    conf_hist = np.zeros(bins, int)
    margin_hist = np.zeros(bins, int)
    ent = tps = 0.0
    for n in range(N):
        for h in range(H):
            row, lab = x[n, :, h], y[n, h]
            if lab == -100:
                ign += 1
                continue
            cnt += 1
            if not np.isfinite(row).all():
                nf += 1
                continue
            p = np.exp(row - row.max())
            p /= p.sum()
            conf_hist[min(int(p.max() * bins), bins - 1)] += 1
            other = max(p[c] for c in range(C) if c != lab)
            margin_hist[min(int((p[lab] - other + 1) / 2 * bins), bins - 1)] += 1
            ent += -sum(pc * math.log(pc) for pc in p)
            tps += p[lab]
    assert (st["count"], st["ignored"], st["nonfinite_rows"], st["nonfinite"]) == (cnt, ign, nf, 1)
    np.testing.assert_array_equal(st["conf_hist"], conf_hist)
    np.testing.assert_array_equal(st["margin_hist"], margin_hist)
    assert_eq(st["entropy_sum"], ent)
    assert_eq(st["true_prob_sum"], tps)
    assert math.isnan(st["loss_sum"])
    assert st["sample_count"].sum() == cnt
    union = st["sample_true"] + st["sample_pred"] - st["sample_intersection"]
    assert (union >= st["sample_intersection"]).all()
    np.testing.assert_array_equal(st["sample_true"].sum(0), st["confusion"].sum(1))
    np.testing.assert_array_equal(st["sample_intersection"].sum(0), np.diag(st["confusion"]))


def test_ref_calibration_by_loops():
    r = rng(15)
    conf = r.random(500) * 0.7 + 0.3
    correct = r.random(500) < conf
    bins = 10
    c = R.ref_calibration(conf, correct, bins)
    ece, mce = 0.0, 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        m = (conf >= lo) & ((conf < hi) if b < bins - 1 else (conf <= hi))
        if m.any():
            gap = abs(correct[m].mean() - conf[m].mean())
            ece += m.mean() * gap
            mce = max(mce, gap)
    assert_eq(c["ece"], ece)
    assert_eq(c["mce"], mce)
    # the compute() formula from histogram sums agrees with the element-wise one
    st = {"num_classes": 2, "bins": bins, "confusion": np.eye(2, dtype=int),
          "conf_hist": c["count"], "conf_correct": np.bincount(R.bin_index(conf, bins),
                                                               weights=correct, minlength=bins),
          "conf_sum": np.bincount(R.bin_index(conf, bins), weights=conf, minlength=bins),
          "loss_sum": 0.0, "weight_sum": 1.0, "correct": {1: 1}, "count": 2,
          "margin_hist": np.zeros(bins), "true_prob_sum": 0.0, "below_inv_e": 0,
          "entropy_sum": 0.0, "class_loss_sum": np.zeros(2), "class_count": np.ones(2),
          "ignored": 0, "nonfinite": 0}
    m = R.ref_metrics_compute(st)
    assert_eq(m["ece"], ece)
    assert_eq(m["mce"], mce)


def test_ref_imagewise_by_loops():
    inter = np.array([[2, 0, 0], [1, 1, 0]])
    st = np.array([[3, 0, 1], [1, 2, 0]])
    sp = np.array([[2, 0, 2], [2, 1, 0]])
    # image 0: iou = [2/3, absent, 0/3]; image 1: [1/2, 1/2, absent]
    miou, _ = R.ref_imagewise(inter, st, sp, "nan")
    assert_eq(miou, ((2 / 3 + 0) / 2 + (0.5 + 0.5) / 2) / 2)
    miou, _ = R.ref_imagewise(inter, st, sp, "zero")
    assert_eq(miou, ((2 / 3 + 0 + 0) / 3 + (0.5 + 0.5 + 0) / 3) / 2)
    miou, _ = R.ref_imagewise(inter, st, sp, "one")
    assert_eq(miou, ((2 / 3 + 1 + 0) / 3 + (0.5 + 0.5 + 1) / 3) / 2)


@needs_torch
def test_ref_evaluate_binary_vs_torch():
    r = rng(16)
    x = r.normal(size=(50,)) * 3
    y = (r.random(50) < 0.5).astype(np.float64)
    st = R.ref_evaluate_binary(x, y, bins=10)
    t = F.binary_cross_entropy_with_logits(t64(x), t64(y), reduction="sum").item()
    assert_eq(st["loss_sum"], t)
    p = 1 / (1 + np.exp(-x))
    assert_eq(st["true_prob_sum"], np.sum(np.where(y == 1, p, 1 - p)))
    skm = _sk()
    np.testing.assert_array_equal(st["confusion"], skm.confusion_matrix(y, x > 0, labels=[0, 1]))
