"""lossdiag vs torch.nn.functional directly (torch is the arbiter of the loss semantics).

torch runs in float64 on exactly the values the kernel sees (fp16/fp32-rounded); the kernel output
is compared with the per-dtype tolerances."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import lossdiag as ld  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from conftest import (  # noqa: E402
    assert_elem_close,
    assert_grad_close,
    assert_reduced_close,
    cast_logits,
    make_case,
    make_soft,
    num_classes,
    shape_id,
)

REDUCTIONS = ["mean", "sum", "none"]
DTYPES = [np.float16, np.float32, np.float64]


def t64(a):
    return torch.tensor(np.ascontiguousarray(a), dtype=torch.float64)


def torch_ce(x, y, axis=1, weight=None, reduction="mean", **kw):
    X = t64(x)
    if axis == -1 and X.ndim > 2:
        X = X.movedim(-1, 1)
    X = X.detach().requires_grad_(True)
    if np.asarray(y).dtype.kind == "f":
        Y = t64(y)
        if axis == -1 and Y.ndim > 2:
            Y = Y.movedim(-1, 1)
    else:
        Y = torch.tensor(np.asarray(y).astype(np.int64))
    out = F.cross_entropy(X, Y, weight=None if weight is None else t64(weight),
                          reduction=reduction, **kw)
    out.sum().backward()
    g = X.grad
    if axis == -1 and g.ndim > 2:
        g = g.movedim(1, -1)
    o = out.detach().numpy()
    return (float(o) if reduction != "none" else o), g.numpy()


def compare(loss, grad, tl, tg, dtype, reduction):
    if reduction == "none":
        assert_elem_close(loss, tl, dtype)
    else:
        assert_reduced_close(loss, tl, dtype)
    if grad is not None:
        assert_grad_close(grad, tg, dtype)


CASES = [((32, 10), 1), ((4, 21, 6, 7), 1), ((2, 3, 3, 4, 5), 1), ((3, 5, 6, 150), -1),
         ((8, 1000), 1), ((5, 2), 1), ((3, 1), 1)]


COMBOS = {  # name: (ignore_index, weighted, label_smoothing, fraction of ignored labels)
    "plain": (-100, False, 0.0, 0.0),
    "weight": (-100, True, 0.0, 0.0),
    "ignore": (-100, False, 0.0, 0.2),
    "smooth": (-100, False, 0.15, 0.0),
    "w+i": (-100, True, 0.0, 0.2),
    "w+i+s": (-100, True, 0.15, 0.2),
    "i0+s": (0, False, 0.15, 0.2),
    "w+ilast+s": ("last", True, 0.3, 0.2),
}


@pytest.mark.parametrize("case", CASES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("combo", list(COMBOS))
def test_cross_entropy_vs_torch(case, dtype, combo):
    shape, axis = case
    C = num_classes(shape, axis)
    ii, weighted, eps, frac = COMBOS[combo]
    ii = C - 1 if ii == "last" else ii
    x64, y = make_case(shape, axis, seed=C, ignore_index=ii, frac_ignored=frac)
    x, xr = cast_logits(x64, dtype)
    kw = dict(ignore_index=ii, label_smoothing=eps)
    if weighted:
        kw["weight"] = np.random.default_rng(1).random(C) * 2 + 0.05
    for red in REDUCTIONS:
        tl, tg = torch_ce(xr, y, axis=axis, reduction=red, **kw)
        compare(ld.cross_entropy(x, y, axis=axis, reduction=red, **kw), None, tl, tg, dtype, red)
        loss, g = ld.cross_entropy_grad(x, y, axis=axis, reduction=red, **kw)
        compare(loss, g, tl, tg, dtype, red)


@pytest.mark.parametrize("case", [((16, 7), 1), ((2, 5, 4, 3), 1), ((2, 4, 3, 6), -1)],
                         ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_soft_targets_vs_torch(case, dtype, weighted, eps):
    shape, axis = case
    C = num_classes(shape, axis)
    x64, _ = make_case(shape, axis, seed=2)
    x, xr = cast_logits(x64, dtype)
    t = make_soft(shape, axis, seed=3, dtype=dtype)
    kw = dict(label_smoothing=eps)
    if weighted:
        kw["weight"] = np.linspace(0.1, 3.0, C)
    for red in REDUCTIONS:
        tl, tg = torch_ce(xr, t.astype(np.float64), axis=axis, reduction=red, **kw)
        loss, g = ld.cross_entropy_grad(x, t, axis=axis, reduction=red, **kw)
        compare(loss, g, tl, tg, dtype, red)


def test_nonfinite_vs_torch():
    x, _ = make_case((6, 4), 1, seed=4, frac_ignored=0)
    y = np.array([0, 1, 2, 3, 0, 1])
    x[0, 3] = -np.inf
    x[1, 2] = np.nan
    x[2, 0] = np.inf
    x[3, :] = -np.inf
    for eps in (0.0, 0.1):
        tl, tg = torch_ce(x, y, reduction="none", label_smoothing=eps)
        loss, g = ld.cross_entropy_grad(x, y, reduction="none", label_smoothing=eps)
        compare(loss, g, tl, tg, np.float64, "none")


BCE_CASES = [((17,), None), ((17,), ()), ((6, 5), (5,)), ((6, 5), (1, 5)),
             ((2, 3, 4, 5), (3, 1, 1)), ((2, 3, 4, 5), (5,)), ((2, 3, 4, 5), (2, 3, 4, 5)),
             ((3, 1, 8, 8), (1,))]


@pytest.mark.parametrize("shape,pw_shape", BCE_CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_bce_vs_torch(shape, pw_shape, dtype, hard):
    r = np.random.default_rng(5)
    x, xr = cast_logits(r.normal(size=shape) * 5, dtype)
    y64 = (r.random(shape) < 0.4).astype(np.float64) if hard else r.random(shape)
    y, yr = cast_logits(y64, dtype)
    pw = None if pw_shape is None else r.random(pw_shape) * 4 + 0.1
    for red in REDUCTIONS:
        X = t64(xr).requires_grad_(True)
        out = F.binary_cross_entropy_with_logits(
            X, t64(yr), pos_weight=None if pw is None else t64(pw), reduction=red)
        out.sum().backward()
        tl = out.detach().numpy()
        tl = float(tl) if red != "none" else tl
        compare(ld.binary_cross_entropy(x, y, pos_weight=pw, reduction=red), None, tl, None,
                dtype, red)
        loss, g = ld.binary_cross_entropy_grad(x, y, pos_weight=pw, reduction=red)
        compare(loss, g, tl, X.grad.numpy(), dtype, red)


def test_accuracy_vs_torch_topk_without_ties():
    r = np.random.default_rng(6)
    x = r.normal(size=(300, 12))  # continuous: no ties, torch.topk order unambiguous
    y = r.integers(0, 12, 300)
    for k in (1, 3, 12):
        top = torch.topk(t64(x), k, dim=1).indices.numpy()
        ref = np.mean([y[i] in top[i] for i in range(300)])
        assert ld.accuracy(x, y, top_k=k) == pytest.approx(ref, rel=1e-15)
