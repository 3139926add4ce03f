"""lossdiag.cross_entropy_grad: (loss, d loss / d logits) against the float64 reference and
against central finite differences."""

from __future__ import annotations

import math

import lossdiag as ld
import numpy as np
import pytest
import reference as R
from conftest import (
    FLOAT_DTYPES,
    SHAPES,
    assert_elem_close,
    assert_grad_close,
    assert_reduced_close,
    cast_logits,
    kw_to_backend,
    make_case,
    make_soft,
    num_classes,
    shape_id,
    target_shape,
    to_backend,
    to_numpy,
)

REDUCTIONS = ["mean", "sum", "none"]


def ce_grad(backend, x, y, **kw):
    loss, g = ld.cross_entropy_grad(to_backend(x, backend), to_backend(y, backend),
                                    **kw_to_backend(kw, backend))
    return to_numpy(loss), to_numpy(g)


def check(got_loss, got_grad, xr, y, dtype, **kw):
    if not kw.get("from_logits", True):
        kw["clip_dtype"] = dtype
    ref_loss, ref_grad = R.ref_cross_entropy(xr, y, **kw)
    if kw.get("reduction", "mean") == "none":
        assert_elem_close(got_loss, ref_loss, dtype)
    else:
        assert_reduced_close(got_loss, ref_loss, dtype)
    assert_grad_close(got_grad, ref_grad, dtype)


@pytest.mark.parametrize("case", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_grad_shapes_dtypes(backend, case, dtype, reduction):
    shape, axis = case
    x64, y = make_case(shape, axis, seed=len(shape) * 3 + shape[axis])
    x, xr = cast_logits(x64, dtype)
    loss, g = ce_grad(backend, x, y, axis=axis, reduction=reduction)
    check(loss, g, xr, y, dtype, axis=axis, reduction=reduction)


@pytest.mark.parametrize("case", [((200, 1000), 1), ((130, 300), 1), ((2, 9, 8, 260), -1),
                                  ((64, 256), 1)], ids=shape_id)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_grad_rows_many_classes(backend, case, dtype):
    """Rows layouts with C >= 256: full blocks are transposed in register tiles (whole tiles, a
    partial last tile of classes), tail blocks one value at a time; loss and gradient both."""
    shape, axis = case
    x64, y = make_case(shape, axis, seed=shape[axis] + 7)
    x, xr = cast_logits(x64, dtype)
    loss, g = ce_grad(backend, x, y, axis=axis, reduction="none")
    check(loss, g, xr, y, dtype, axis=axis, reduction="none")


@pytest.mark.parametrize("case", [((16, 5), 1), ((3, 7, 4, 5), 1), ((2, 4, 3, 6), -1),
                                  ((2, 3, 2, 3, 4), 1), ((4, 150), 1)], ids=shape_id)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("ignore_index", [-100, 0])
def test_grad_weight_smoothing_ignore(backend, case, dtype, weighted, eps, ignore_index):
    shape, axis = case
    C = num_classes(shape, axis)
    x64, y = make_case(shape, axis, seed=C, ignore_index=ignore_index, frac_ignored=0.2)
    x, xr = cast_logits(x64, dtype)
    w = np.random.default_rng(31).random(C) * 2 + 0.1 if weighted else None
    for red in REDUCTIONS:
        kw = dict(axis=axis, weight=w, ignore_index=ignore_index, label_smoothing=eps,
                  reduction=red)
        loss, g = ce_grad(backend, x, y, **kw)
        check(loss, g, xr, y, dtype, **kw)
        # ignored elements get exactly zero gradient
        ign = np.moveaxis(g, axis % g.ndim, -1)[y == ignore_index]
        assert np.all(ign == 0)


@pytest.mark.parametrize("label_dtype", [np.uint8, np.int8, np.uint16, np.int32, np.uint64])
def test_grad_label_dtypes(backend, label_dtype):
    x, y = make_case((3, 6, 4, 4), 1, seed=32, label_dtype=label_dtype, ignore_index=5)
    for red in REDUCTIONS:
        loss, g = ce_grad(backend, x, y, ignore_index=5, reduction=red)
        check(loss, g, x, y, np.float64, ignore_index=5, reduction=red)


@pytest.mark.parametrize("case", [((12, 5), 1), ((2, 4, 3, 5), 1), ((2, 3, 4, 6), -1)],
                         ids=shape_id)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_grad_soft_targets(backend, case, dtype, eps):
    shape, axis = case
    C = num_classes(shape, axis)
    x64, _ = make_case(shape, axis, seed=33)
    x, xr = cast_logits(x64, dtype)
    t = make_soft(shape, axis, seed=33, dtype=dtype)
    for w in (None, np.linspace(0.2, 3.0, C)):
        for red in REDUCTIONS:
            kw = dict(axis=axis, weight=w, label_smoothing=eps, reduction=red)
            loss, g = ce_grad(backend, x, t, **kw)
            check(loss, g, xr, t.astype(np.float64), dtype, **kw)


@pytest.mark.parametrize("case", [((10, 4), 1), ((2, 5, 3, 3), 1), ((2, 3, 3, 5), -1)],
                         ids=shape_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_grad_from_probabilities(backend, case, dtype, soft):
    shape, axis = case
    C = num_classes(shape, axis)
    r = np.random.default_rng(34)
    p64 = r.random(shape) + 0.05
    p64.reshape(-1)[0] = 1e-12  # clipped: gradient 0 through the clip for that class
    p, pr = cast_logits(p64, dtype)
    _, y = make_case(shape, axis, seed=34)
    t = make_soft(shape, axis, seed=34) if soft else y
    for red in REDUCTIONS:
        kw = dict(axis=axis, weight=r.random(C) + 0.5, label_smoothing=0.1, reduction=red,
                  from_logits=False)
        loss, g = ce_grad(backend, p, t.astype(dtype) if soft else t, **kw)
        check(loss, g, pr, t, dtype, **kw)


def test_none_grad_is_grad_of_sum(backend):
    x, y = make_case((4, 5, 3), 1, seed=35)
    _, g_none = ce_grad(backend, x, y, reduction="none", label_smoothing=0.2)
    _, ref_sum = R.ref_cross_entropy(x, y, reduction="sum", label_smoothing=0.2)
    assert_grad_close(g_none, ref_sum, np.float64)


def test_grad_all_ignored_and_empty(backend):
    x, _ = make_case((5, 3), 1, seed=36)
    y = np.full(5, -100)
    for eps in (0.0, 0.1):
        loss, g = ce_grad(backend, x, y, label_smoothing=eps)
        assert math.isnan(loss)
        assert np.array_equal(g, np.zeros_like(x))  # torch: zero gradient, not NaN
    for shape, axis in [((0, 4), 1), ((0, 4, 3, 3), 1), ((0, 3, 3, 4), -1)]:
        xe = np.zeros(shape, np.float32)
        loss, g = ce_grad(backend, xe, np.zeros(target_shape(shape, axis), np.int64), axis=axis)
        assert math.isnan(loss) and g.shape == shape and g.dtype == np.float32


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_grad_zero_weight_sum(backend, eps):
    """Counted elements whose target weights are all 0: "mean" is NaN (torch: 0/0 nll term) and
    torch's gradient is NaN on the counted rows, 0 on the ignored ones."""
    x, _ = make_case((3, 4), 1, seed=44)
    y = np.array([0, 0, -100])
    w = np.array([0.0, 1.0, 2.0, 1.0])
    loss, g = ce_grad(backend, x, y, weight=w, label_smoothing=eps)
    assert math.isnan(loss)
    ref_loss, ref_grad = R.ref_cross_entropy(x, y, weight=w, label_smoothing=eps)
    assert math.isnan(ref_loss)
    assert np.all(np.isnan(g[:2])) and np.all(g[2] == 0), g


# ------------------------------------------------------------------------------------------------
# finite differences (tiny float64 inputs)
# ------------------------------------------------------------------------------------------------
def fd(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (f(xp) - f(xm)) / (2 * h)
    return g


@pytest.mark.parametrize("case", [((3, 4), 1), ((2, 3, 2, 2), 1), ((2, 2, 2, 3), -1)],
                         ids=shape_id)
@pytest.mark.parametrize("target_kind", ["hard", "soft", "prob_hard"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_grad_finite_differences(case, target_kind, reduction):
    shape, axis = case
    C = num_classes(shape, axis)
    x, y = make_case(shape, axis, seed=37, scale=1.0, frac_ignored=0.25)
    kw = dict(axis=axis, weight=np.linspace(0.5, 1.5, C), label_smoothing=0.1,
              reduction=reduction)
    if target_kind == "soft":
        y = make_soft(shape, axis, seed=37)
    if target_kind == "prob_hard":
        x = np.random.default_rng(38).random(shape) + 0.2
        kw["from_logits"] = False

    def f(z):
        return float(np.sum(ld.cross_entropy(z, y, **kw)))

    _, g = ld.cross_entropy_grad(x, y, **kw)
    np.testing.assert_allclose(g, fd(f, x), rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------------------------
# out=
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_out_preallocated(backend, dtype, axis, reduction):
    shape = (3, 5, 4, 6) if axis == 1 else (3, 4, 6, 5)
    x64, y = make_case(shape, axis, seed=39)
    x, xr = cast_logits(x64, dtype)
    out = to_backend(np.full(shape, 123.0, dtype), backend)
    xb = to_backend(x, backend)
    loss, g = ld.cross_entropy_grad(xb, to_backend(y, backend), axis=axis, reduction=reduction,
                                    out=out)
    if backend == "cpu":
        assert np.shares_memory(g, out), "the returned gradient must be the out= buffer"
    check(to_numpy(loss), to_numpy(out), xr, y, dtype, axis=axis, reduction=reduction)
    assert np.array_equal(to_numpy(g), to_numpy(out))
    assert np.array_equal(to_numpy(xb), x)  # logits untouched


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_out_is_logits_in_place(backend, dtype, axis, reduction, soft):
    shape = (4, 7, 3, 5) if axis == 1 else (4, 3, 5, 7)
    x64, y = make_case(shape, axis, seed=40)
    if soft:
        y = make_soft(shape, axis, seed=40, dtype=dtype)
    x, xr = cast_logits(x64, dtype)
    kw = dict(axis=axis, reduction=reduction, label_smoothing=0.1,
              weight=np.linspace(0.5, 2, num_classes(shape, axis)))
    xb = to_backend(x.copy(), backend)
    loss, g = ld.cross_entropy_grad(xb, to_backend(y, backend), out=xb,
                                    **kw_to_backend(kw, backend))
    # the loss is that of the ORIGINAL logits, the logits buffer now holds the gradient
    check(to_numpy(loss), to_numpy(xb), xr, y.astype(np.float64) if soft else y, dtype, **kw)
    if backend == "cpu":
        assert np.shares_memory(g, xb), "the returned gradient must be the logits buffer"


def test_out_in_place_large_multithreaded(backend):
    # large enough to be split over threads; in-place must not read already overwritten logits
    x64, y = make_case((64, 21, 32, 32), 1, seed=41)
    x = x64.astype(np.float32)
    xb = to_backend(x.copy(), backend)
    loss, _ = ld.cross_entropy_grad(xb, to_backend(y, backend), out=xb)
    check(to_numpy(loss), to_numpy(xb), x.astype(np.float64), y, np.float32)


# ------------------------------------------------------------------------------------------------
# extreme / non-finite
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_grad_extreme(backend, dtype):
    r = np.random.default_rng(42)
    C = 6
    y = r.integers(0, C, 10)
    big = 1e4
    for x64 in (np.where(r.random((10, C)) < 0.5, -big, big), r.normal(size=(10, C)) * big,
                big + r.normal(size=(10, C)), np.full((10, C), 2.0),
                np.where(np.arange(C) == 1, big, r.normal(size=(10, C)))):
        x, xr = cast_logits(x64, dtype)
        for red in REDUCTIONS:
            loss, g = ce_grad(backend, x, y, reduction=red, label_smoothing=0.1)
            check(loss, g, xr, y, dtype, reduction=red, label_smoothing=0.1)
            assert np.all(np.isfinite(g))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_grad_nonfinite(backend, dtype):
    x64, _ = make_case((6, 5), 1, seed=43, frac_ignored=0)
    y = np.array([0, 1, 2, 3, 4, 0])
    x64[0, 3] = -np.inf  # mask: probability 0, gradient 0 at that class
    x64[1, 0] = np.nan
    x64[2, 1] = np.inf
    x, xr = cast_logits(x64, dtype)
    for red in REDUCTIONS:
        loss, g = ce_grad(backend, x, y, reduction=red)
        check(loss, g, xr, y, dtype, reduction=red)
        assert g[0, 3] == 0 and np.all(np.isfinite(g[0]))
        assert np.all(np.isnan(g[1])) and np.all(np.isnan(g[2]))
        assert np.all(np.isfinite(g[3:]))  # other rows unaffected, also for "mean"
