"""lossdiag.binary_cross_entropy / binary_cross_entropy_grad / binary_accuracy vs the reference."""

from __future__ import annotations

import math

import lossdiag as ld
import numpy as np
import pytest
import reference as R
from conftest import (
    FLOAT_DTYPES,
    assert_elem_close,
    assert_grad_close,
    assert_reduced_close,
    cast_logits,
    kw_to_backend,
    reduced_value,
    to_backend,
    to_numpy,
)

REDUCTIONS = ["mean", "sum", "none"]
SHAPES = [(0,), (1,), (17,), (8, 3), (2, 3, 4, 5), (0, 3), (1, 1, 1, 1)]


def bce(backend, x, y, **kw):
    return to_numpy(ld.binary_cross_entropy(to_backend(x, backend), to_backend(y, backend),
                                            **kw_to_backend(kw, backend)))


def bce_grad(backend, x, y, **kw):
    loss, g = ld.binary_cross_entropy_grad(to_backend(x, backend), to_backend(y, backend),
                                           **kw_to_backend(kw, backend))
    return to_numpy(loss), to_numpy(g)


def data(shape, seed=0, scale=4.0):
    r = np.random.default_rng(seed)
    x = r.normal(size=shape) * scale
    y = r.random(shape)
    return x, y


def check(loss, grad, xr, yr, dtype, **kw):
    if not kw.get("from_logits", True):
        kw["clip_dtype"] = dtype  # clip bounds as the working precision represents them
    ref_loss, ref_grad = R.ref_binary_cross_entropy(xr, yr, **kw)
    if kw.get("reduction", "mean") == "none":
        assert_elem_close(loss, ref_loss, dtype)
    else:
        assert_reduced_close(loss, ref_loss, dtype)
    if grad is not None:
        assert_grad_close(grad, ref_grad, dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_shapes_dtypes(backend, shape, dtype, reduction):
    x64, y64 = data(shape, seed=len(shape))
    x, xr = cast_logits(x64, dtype)
    y, yr = cast_logits(y64, dtype)
    got = bce(backend, x, y, reduction=reduction)
    check(got, None, xr, yr, dtype, reduction=reduction)
    loss, g = bce_grad(backend, x, y, reduction=reduction)
    check(loss, g, xr, yr, dtype, reduction=reduction)


@pytest.mark.parametrize("tdtype", [np.uint8, np.int64, np.int32, np.bool_, np.float32],
                         ids=lambda d: np.dtype(d).name)
def test_bce_target_dtypes(backend, tdtype):
    x, _ = data((6, 5), seed=2)
    y = (np.random.default_rng(3).random((6, 5)) < 0.4).astype(tdtype)
    for red in REDUCTIONS:
        loss, g = bce_grad(backend, x, y, reduction=red)
        check(loss, g, x, y.astype(np.float64), np.float64, reduction=red)


@pytest.mark.parametrize("shape,pw_shape", [((7,), ()), ((7,), (1,)), ((5, 3), (3,)),
                                             ((4, 6), (1, 6)), ((2, 3, 4, 5), (3, 1, 1)),
                                             ((2, 3, 4, 5), (5,)), ((2, 3, 4), (2, 3, 4)),
                                             ((2, 3, 4, 5), (1, 3, 1, 1))], ids=str)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_bce_pos_weight_broadcasting(backend, shape, pw_shape, dtype):
    x64, y64 = data(shape, seed=4)
    x, xr = cast_logits(x64, dtype)
    y, yr = cast_logits(y64, dtype)
    pw = np.random.default_rng(5).random(pw_shape) * 3 + 0.1
    for red in REDUCTIONS:
        kw = dict(pos_weight=pw, reduction=red)
        check(bce(backend, x, y, **kw), None, xr, yr, dtype, **kw)
        loss, g = bce_grad(backend, x, y, **kw)
        check(loss, g, xr, yr, dtype, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_bce_from_probabilities(backend, dtype):
    r = np.random.default_rng(6)
    p64 = r.random((9, 4))
    p64[0, :3] = [0.0, 1.0, 1e-9]  # clipped to [1e-7, 1-1e-7]: gradient 0 there
    p, pr = cast_logits(p64, dtype)
    y64 = r.random((9, 4))
    y, yr = cast_logits(y64, dtype)
    pw = r.random(4) + 0.5
    for red in REDUCTIONS:
        kw = dict(pos_weight=pw, reduction=red, from_logits=False)
        check(bce(backend, p, y, **kw), None, pr, yr, dtype, **kw)
        loss, g = bce_grad(backend, p, y, **kw)
        check(loss, g, pr, yr, dtype, **kw)
    loss = bce(backend, np.array([0.0, 1.0]), np.array([1.0, 0.0]), reduction="none",
               from_logits=False)
    np.testing.assert_allclose(loss, [-math.log(1e-7), -math.log(1e-7)], rtol=1e-6)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_bce_extreme(backend, dtype):
    x64 = np.array([1e4, -1e4, 1e4, -1e4, 60.0, -60.0, 0.0, 20.0, -20.0, 1e-8])
    y64 = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.5, 1.0, 0.0, 0.3])
    x, xr = cast_logits(x64, dtype)
    for red in REDUCTIONS:
        for pw in (None, np.array(3.0)):
            y, yr = cast_logits(y64, dtype)  # the reference sees the rounded targets too
            loss, g = bce_grad(backend, x, y, reduction=red, pos_weight=pw)
            ref_loss, ref_grad = R.ref_binary_cross_entropy(xr, yr, reduction=red, pos_weight=pw)
            assert np.all(np.isfinite(ref_loss))
            if red == "none":
                assert_elem_close(loss, ref_loss, dtype)
            else:
                assert_reduced_close(loss, ref_loss, dtype)
            assert_grad_close(g, ref_grad, dtype)


def test_bce_float32_precision_large(backend):
    r = np.random.default_rng(7)
    x = (r.normal(size=(4, 1, 512, 512)) * 5).astype(np.float32)
    y = (r.random(x.shape) < 0.3).astype(np.float32)
    ref = R.ref_binary_cross_entropy(x.astype(np.float64), y, pos_weight=np.array(2.5))[0]
    assert_reduced_close(bce(backend, x, y, pos_weight=np.array(2.5)), ref, np.float32, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("pw", [None, 3.0])
def test_bce_float32_precision_confident(backend, dtype, pw):
    """Confident, correct predictions (late training): tiny losses must keep their relative
    precision.  Written (1-y)x + softplus(-x), y=0 and x=-16 cancels to 0 in float32 (the float64
    value is 1.1e-7); the stable form max(x,0) - x*y + log1p(exp(-|x|)) does not cancel."""
    r = np.random.default_rng(11)
    n = 4096
    x64 = np.concatenate([-r.uniform(4, 16, n), r.uniform(4, 16, n)])
    y64 = np.concatenate([np.zeros(n), np.ones(n)])
    x, xr = cast_logits(x64, dtype)
    pwa = None if pw is None else np.array(pw)
    for sl in (slice(0, n), slice(n, 2 * n), slice(0, 2 * n)):
        for red in ("mean", "sum"):
            ref = R.ref_binary_cross_entropy(xr[sl], y64[sl], pos_weight=pwa, reduction=red)[0]
            got = bce(backend, x[sl], y64[sl].astype(dtype), pos_weight=pwa, reduction=red)
            assert_reduced_close(got, ref, dtype, rtol=1e-6)
        ref = R.ref_binary_cross_entropy(xr[sl], y64[sl], pos_weight=pwa, reduction="none")[0]
        got = bce(backend, x[sl], y64[sl].astype(dtype), pos_weight=pwa, reduction="none")
        assert_elem_close(got, ref, dtype, atol=0)


def test_bce_nonfinite(backend):
    """NaN logits give NaN. +inf logit with target 0 gives +inf (torch and the math agree).
    (torch's formula gives NaN for +inf/target 1 and -inf/target 0 where the limit is 0; that
    part is not pinned down here.)"""
    x = np.array([np.nan, np.inf, 0.5, -0.25])
    y = np.array([1.0, 0.0, 1.0, 0.0])
    got = bce(backend, x, y, reduction="none")
    assert np.isnan(got[0]) and got[1] == np.inf
    assert_elem_close(got[2:], R.ref_binary_cross_entropy(x[2:], y[2:], reduction="none")[0],
                      np.float64)
    assert math.isnan(bce(backend, x, y))
    _, g = bce_grad(backend, x, y, reduction="none")
    assert np.isnan(g[0])
    assert_grad_close(g[2:], R.ref_binary_cross_entropy(x[2:], y[2:], reduction="none")[1],
                      np.float64)


def test_bce_empty(backend):
    assert math.isnan(bce(backend, np.zeros(0, np.float32), np.zeros(0, np.float32)))
    assert bce(backend, np.zeros(0, np.float32), np.zeros(0, np.float32), reduction="sum") == 0
    got = bce(backend, np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32),
              reduction="none")
    assert got.shape == (0, 3) and got.dtype == np.float32


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_out(backend, dtype, reduction):
    x64, y64 = data((3, 4, 5), seed=8)
    x, xr = cast_logits(x64, dtype)
    y, yr = cast_logits(y64, dtype)
    pw = np.array([0.5, 1.0, 2.0, 4.0, 8.0])
    out = to_backend(np.full(x.shape, 7.0, dtype), backend)
    xb = to_backend(x, backend)
    loss, g = ld.binary_cross_entropy_grad(xb, to_backend(y, backend), reduction=reduction,
                                           pos_weight=to_backend(pw, backend), out=out)
    check(to_numpy(loss), to_numpy(out), xr, yr, dtype, reduction=reduction, pos_weight=pw)
    assert np.array_equal(to_numpy(xb), x)
    if backend == "cpu":
        assert np.shares_memory(g, out)
    # in place
    xb = to_backend(x.copy(), backend)
    loss, g = ld.binary_cross_entropy_grad(xb, to_backend(y, backend), reduction=reduction,
                                           pos_weight=to_backend(pw, backend), out=xb)
    check(to_numpy(loss), to_numpy(xb), xr, yr, dtype, reduction=reduction, pos_weight=pw)


def test_bce_grad_finite_differences():
    r = np.random.default_rng(9)
    x = r.normal(size=(3, 4))
    y = r.random((3, 4))
    pw = r.random(4) + 0.5
    for fl in (True, False):
        xx = x if fl else 1 / (1 + np.exp(-x))
        for red in REDUCTIONS:
            kw = dict(pos_weight=pw, reduction=red, from_logits=fl)
            _, g = ld.binary_cross_entropy_grad(xx, y, **kw)
            fdg = np.zeros_like(xx)
            for i in np.ndindex(xx.shape):
                xp, xm = xx.copy(), xx.copy()
                xp[i] += 1e-6
                xm[i] -= 1e-6
                fdg[i] = (np.sum(ld.binary_cross_entropy(xp, y, **kw))
                          - np.sum(ld.binary_cross_entropy(xm, y, **kw))) / 2e-6
            np.testing.assert_allclose(g, fdg, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------------------------
# binary_accuracy
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("threshold", [0.0, 0.5, -1.25])
@pytest.mark.parametrize("shape", [(1,), (50,), (4, 3, 7), (2, 1, 16, 16)], ids=str)
def test_binary_accuracy(backend, dtype, threshold, shape):
    r = np.random.default_rng(10)
    x64 = np.round(r.normal(size=shape) * 2, 1)  # exact ties with the thresholds occur
    x, xr = cast_logits(x64, dtype)
    for y in (r.random(shape), (r.random(shape) < 0.5).astype(np.uint8),
              (r.random(shape) < 0.5), np.full(shape, 0.5)):
        got = reduced_value(ld.binary_accuracy(to_backend(x, backend), to_backend(y, backend),
                                               threshold=threshold))
        ref = R.ref_binary_accuracy(xr, y, threshold=threshold)
        assert got == pytest.approx(ref, abs=1e-12)


def test_binary_accuracy_exact_threshold_and_empty(backend):
    x = np.array([0.0, 0.0, 1e-30, -1e-30], np.float32)
    y = np.array([0.0, 1.0, 1.0, 0.0], np.float32)
    # logits > 0 strictly: 0.0 predicts 0
    assert ld.binary_accuracy(to_backend(x, backend), to_backend(y, backend)) == 0.75
    assert math.isnan(ld.binary_accuracy(to_backend(np.zeros(0), backend),
                                         to_backend(np.zeros(0), backend)))
