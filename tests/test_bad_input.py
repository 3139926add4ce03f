"""Bad inputs raise ValueError/TypeError naming the argument; odd-but-valid layouts (views,
non-contiguous, negative strides) give correct results."""

from __future__ import annotations

import lossdiag as ld
import numpy as np
import pytest
import reference as R
from conftest import (
    HAVE_CUDA,
    assert_elem_close,
    assert_grad_close,
    assert_reduced_close,
    make_case,
)

ERR = (ValueError, TypeError)

X, Y = make_case((4, 3), 1, seed=0, frac_ignored=0)
X4, Y4 = make_case((2, 3, 4, 5), 1, seed=1, frac_ignored=0)

CE_FUNCS = {
    "cross_entropy": lambda x, y, **kw: ld.cross_entropy(x, y, **kw),
    "cross_entropy_grad": lambda x, y, **kw: ld.cross_entropy_grad(x, y, **kw),
    "accuracy": lambda x, y, **kw: ld.accuracy(x, y, **kw),
    "evaluate": lambda x, y, **kw: ld.evaluate(x, y, **kw),
}
# functions taking the loss options (weight, label_smoothing, ...)
LOSS_FUNCS = {k: v for k, v in CE_FUNCS.items() if k != "accuracy"}


def raises(arg):
    return pytest.raises(ERR, match=arg)


# ------------------------------------------------------------------------------------------------
# target
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", list(CE_FUNCS), ids=str)
def test_target_shape_mismatch(fn):
    f = CE_FUNCS[fn]
    with raises("target"):
        f(X, np.zeros(5, np.int64))
    with raises("target"):
        f(X4, np.zeros((2, 4, 6), np.int64))
    with raises("target"):
        f(X4, np.zeros((2, 4, 5, 1), np.int64))
    with raises("target"):
        f(X4, np.zeros((2, 5, 4), np.int64), axis=1)
    with raises("target"):  # soft target must have exactly the logits shape
        f(X, np.full((4, 4), 0.25))


@pytest.mark.parametrize("fn", list(CE_FUNCS), ids=str)
@pytest.mark.parametrize("bad", [3, 4, 255, -1, -99, -101])
def test_label_out_of_range(fn, bad):
    y = np.array([0, 1, bad, 2])
    with raises("target"):
        CE_FUNCS[fn](X, y)


@pytest.mark.parametrize("fn", list(CE_FUNCS), ids=str)
@pytest.mark.parametrize("label_dtype", [np.uint8, np.int32, np.int64, np.uint64])
def test_label_out_of_range_deep_inside_large_array(fn, label_dtype):
    x = np.zeros((4, 5, 300, 300), np.float32)
    y = np.random.default_rng(2).integers(0, 5, size=(4, 300, 300)).astype(label_dtype)
    y[3, 271, 123] = 5
    with raises("target"):
        CE_FUNCS[fn](x, y)
    y[3, 271, 123] = 4
    y.reshape(-1)[-1] = 200
    with raises("target"):
        CE_FUNCS[fn](x, y)


def test_uint_labels_never_match_negative_ignore_index():
    # read as is: uint8 156 / uint64 2**64-100 are NOT ignore_index=-100, so out of range for C=3
    with raises("target"):
        ld.cross_entropy(X, np.array([0, 1, 156, 2], np.uint8))
    with raises("target"):
        ld.cross_entropy(X, np.array([0, 1, 2**64 - 100, 2], np.uint64))
    # an ignore_index beyond int32 never turns an out-of-range int32 label into an ignored one
    with raises("target"):
        ld.cross_entropy(X, np.array([0, 1, -(2**31), 2], np.int32), ignore_index=-(2**40))
    with raises("target"):
        ld.cross_entropy(X, np.array([0, 1, -100, 2], np.int8), ignore_index=-(2**40))
    # but a real ignore_index is fine: 255 in a uint8 mask
    y = np.array([0, 255, 2, 1], np.uint8)
    assert_reduced_close(ld.cross_entropy(X, y, ignore_index=255),
                         R.ref_cross_entropy(X, y, ignore_index=255)[0], np.float64)


@pytest.mark.parametrize("tgt", [np.array([0, 1, 2, 0], dtype=np.complex128),
                                 np.array(["a", "b", "c", "d"]),
                                 np.array([0, 1, 2, 0], dtype=object)],
                         ids=["complex", "str", "object"])
def test_target_bad_dtype(tgt):
    with raises("target"):
        ld.cross_entropy(X, tgt)


# ------------------------------------------------------------------------------------------------
# weight, label_smoothing, reduction
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", list(LOSS_FUNCS), ids=str)
@pytest.mark.parametrize("w", [np.ones(2), np.ones(4), np.array([1.0, -0.5, 1.0]), np.ones((3, 1)),
                               np.ones((1, 3)), np.array(1.0)],
                         ids=["short", "long", "negative", "col", "row", "scalar"])
def test_bad_weight(fn, w):
    with raises("weight"):
        LOSS_FUNCS[fn](X, Y, weight=w)


@pytest.mark.parametrize("fn", list(LOSS_FUNCS), ids=str)
@pytest.mark.parametrize("eps", [-0.1, 1.0001, 2.0, float("nan")])
def test_bad_label_smoothing(fn, eps):
    with raises("label_smoothing"):
        LOSS_FUNCS[fn](X, Y, label_smoothing=eps)


@pytest.mark.parametrize("red", ["avg", "MEAN", "", "elementwise_mean", None])
def test_bad_reduction(red):
    with raises("reduction"):
        ld.cross_entropy(X, Y, reduction=red)
    with raises("reduction"):
        ld.cross_entropy_grad(X, Y, reduction=red)
    with raises("reduction"):
        ld.binary_cross_entropy(X, np.zeros_like(X), reduction=red)


# ------------------------------------------------------------------------------------------------
# logits dtype / shape, axis
# ------------------------------------------------------------------------------------------------
BAD_LOGITS = {
    "object": X.astype(object),
    "str": X.astype(str),
    "bool": X > 0,
    "complex": X.astype(np.complex128),
    "int64": (X * 10).astype(np.int64),
    "int32": (X * 10).astype(np.int32),
    "uint8": np.abs(X * 10).astype(np.uint8),
}


@pytest.mark.parametrize("fn", list(CE_FUNCS), ids=str)
@pytest.mark.parametrize("kind", list(BAD_LOGITS))
def test_bad_logits_dtype(fn, kind):
    with raises("logits"):
        CE_FUNCS[fn](BAD_LOGITS[kind], Y)


@pytest.mark.parametrize("kind", list(BAD_LOGITS))
def test_bad_logits_dtype_binary(kind):
    x = BAD_LOGITS[kind]
    y = np.zeros(x.shape)
    with raises("logits"):
        ld.binary_cross_entropy(x, y)
    with raises("logits"):
        ld.binary_cross_entropy_grad(x, y)
    with raises("logits"):
        ld.binary_accuracy(x, y)


@pytest.mark.parametrize("fn", list(CE_FUNCS), ids=str)
def test_scalar_logits(fn):
    with raises("logits"):
        CE_FUNCS[fn](np.array(1.0), np.array(0))


@pytest.mark.parametrize("fn", list(CE_FUNCS), ids=str)
@pytest.mark.parametrize("axis", [0, 2, 3, -2, 4, -5])
def test_bad_axis(fn, axis):
    with raises("axis"):
        CE_FUNCS[fn](X4, Y4, axis=axis)


# ------------------------------------------------------------------------------------------------
# out=
# ------------------------------------------------------------------------------------------------
def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


BAD_OUT = {
    "shape": lambda x: np.zeros(x.shape[:-1] + (x.shape[-1] + 1,), x.dtype),
    "transposed_shape": lambda x: np.zeros(x.shape[::-1], x.dtype),
    "dtype": lambda x: np.zeros(x.shape, np.float64 if x.dtype == np.float32 else np.float32),
    "int_dtype": lambda x: np.zeros(x.shape, np.int32),
    "readonly": _readonly,
    "noncontiguous": lambda x: np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)[..., ::2],
    "list": lambda x: x.tolist(),
}


@pytest.mark.parametrize("kind", list(BAD_OUT))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bad_out(kind, dtype):
    x = X4.astype(dtype)
    out = BAD_OUT[kind](x)
    if kind == "noncontiguous":
        # a non-contiguous out may be supported; if it is, it must be filled correctly
        try:
            ld.cross_entropy_grad(x, Y4, out=out)
        except ERR as e:
            assert "out" in str(e)
        else:
            assert_grad_close(out, R.ref_cross_entropy(x.astype(np.float64), Y4)[1], dtype)
        return
    with raises("out"):
        ld.cross_entropy_grad(x, Y4, out=out)
    with raises("out"):
        ld.binary_cross_entropy_grad(x, np.zeros_like(x), out=out)
    with raises("out"):
        ld.evaluate(x, Y4, grad=True, out=out)


@pytest.mark.parametrize("which", ["logits", "target"])
def test_non_native_byte_order(which):
    """Big-endian arrays: either computed correctly or refused naming the argument."""
    x, y = X4, Y4
    if which == "logits":
        x = X4.astype(">f8")
    else:
        y = Y4.astype(">i4")
    try:
        got = ld.cross_entropy(x, y)
    except ERR as e:
        assert which in str(e), str(e)
    else:
        assert_reduced_close(got, R.ref_cross_entropy(X4, Y4)[0], np.float64)


def test_readonly_logits_as_out():
    x = _readonly(X4)
    with raises("out"):
        ld.cross_entropy_grad(x, Y4, out=x)


# ------------------------------------------------------------------------------------------------
# top_k, bins, pos_weight, binary target
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [0, -1, 4, 100, 1.5, "2", None])
def test_bad_top_k(k):
    with raises("top_k"):
        ld.accuracy(X, Y, top_k=k)
    with raises("top_k"):
        ld.evaluate(X, Y, top_k=(1, k))


@pytest.mark.parametrize("bins", [0, -3])
def test_bad_bins(bins):
    with raises("bins"):
        ld.evaluate(X, Y, bins=bins)
    with raises("bins"):
        ld.evaluate_binary(X[:, 0], np.zeros(4), bins=bins)


@pytest.mark.parametrize("pw_shape", [(4,), (2, 3), (5, 1, 1), (1, 1, 1, 1, 5)])
def test_bad_pos_weight(pw_shape):
    x = np.zeros((2, 3, 4, 5))
    with raises("pos_weight"):
        ld.binary_cross_entropy(x, np.zeros_like(x), pos_weight=np.ones(pw_shape))
    with raises("pos_weight"):
        ld.binary_cross_entropy_grad(x, np.zeros_like(x), pos_weight=np.ones(pw_shape))


def test_binary_target_shape_mismatch():
    with raises("target"):
        ld.binary_cross_entropy(np.zeros((4, 3)), np.zeros((4,)))
    with raises("target"):
        ld.binary_cross_entropy(np.zeros((4, 3)), np.zeros((3, 4)))
    with raises("target"):
        ld.binary_accuracy(np.zeros((4, 3)), np.zeros((4, 2)))


# ------------------------------------------------------------------------------------------------
# mixed devices
# ------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAVE_CUDA, reason="CuPy/CUDA device not available")
def test_mixed_devices():
    import cupy as cp

    with raises("target"):
        ld.cross_entropy(cp.asarray(X), Y)
    with raises("logits|target"):
        ld.cross_entropy(X, cp.asarray(Y))
    with raises("weight"):
        ld.cross_entropy(cp.asarray(X), cp.asarray(Y), weight=np.ones(3))


# ------------------------------------------------------------------------------------------------
# non-contiguous / odd layouts are accepted and correct
# ------------------------------------------------------------------------------------------------
def _views(dtype=np.float64):
    """(name, logits view, target view, axis); the logits are views of a `dtype` buffer."""
    r = np.random.default_rng(3)
    base = (r.normal(size=(3, 6, 8, 5)) * 2).astype(dtype)  # C = 6 on axis 1
    yb = r.integers(0, 6, size=(3, 8, 10))
    yield "strided_H", base[:, :, ::2, :], yb[:, ::2, :5], 1
    yield "strided_W", base[..., ::2], yb[:, :, ::3][:, :, :3], 1
    yield "neg_stride", base[:, ::-1, :, ::-1], yb[:, :, 4::-1], 1
    yield "fortran", np.asfortranarray(base), np.asfortranarray(yb[:, :, :5]), 1
    t = np.transpose((r.normal(size=(5, 8, 6, 3))).astype(dtype), (3, 2, 1, 0))  # (3, 6, 8, 5)
    yield "transposed", t, yb[:, :, :5], 1
    yield "moveaxis_last", np.moveaxis(base, 1, -1), yb[:, :, 5:], -1
    x2 = r.normal(size=(10, 7)).astype(dtype)
    yield "2d_fortran_rows", np.asfortranarray(x2)[::2], r.integers(0, 7, 5), 1
    yield "2d_colslice", r.normal(size=(9, 14)).astype(dtype)[:, ::2], \
        r.integers(0, 7, 18)[::2], 1


VIEW_IDS = [v[0] for v in _views()]


@pytest.mark.parametrize("idx", range(len(VIEW_IDS)), ids=VIEW_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_noncontiguous_inputs(idx, dtype):
    name, x, y, axis = list(_views(dtype))[idx]
    assert x.dtype == dtype
    if name not in ("fortran",) and x.ndim > 2:
        assert not x.flags.c_contiguous
    xr = np.array(x, dtype=np.float64)
    w = np.linspace(0.5, 2.0, x.shape[axis])[::-1]  # a negative-stride weight view too
    for red in ("mean", "sum", "none"):
        kw = dict(axis=axis, weight=w, label_smoothing=0.1, reduction=red)
        ref_loss, ref_grad = R.ref_cross_entropy(xr, y, **kw)
        got = ld.cross_entropy(x, y, **kw)
        loss, g = ld.cross_entropy_grad(x, y, **kw)
        if red == "none":
            assert_elem_close(got, ref_loss, dtype)
            assert_elem_close(loss, ref_loss, dtype)
        else:
            assert_reduced_close(got, ref_loss, dtype)
            assert_reduced_close(loss, ref_loss, dtype)
        assert_grad_close(g, ref_grad, dtype)
    assert ld.accuracy(x, y, axis=axis, top_k=2) == pytest.approx(
        R.ref_accuracy(xr, y, axis=axis, top_k=2), rel=1e-15)


def test_noncontiguous_soft_target_and_binary():
    r = np.random.default_rng(4)
    x = r.normal(size=(6, 5, 4))[:, :, ::2]
    t = R.softmax(r.normal(size=(6, 4, 5)))
    t = np.moveaxis(t, -1, 1)[:, :, ::2]
    t = t / t.sum(axis=1, keepdims=True)
    assert_reduced_close(ld.cross_entropy(x, t), R.ref_cross_entropy(x, t)[0], np.float64)
    xb = r.normal(size=(8, 6))[::2, ::-1]
    yb = r.random((6, 8)).T[::2]
    pw = np.linspace(0.5, 2, 12)[::2]
    assert_reduced_close(ld.binary_cross_entropy(xb, yb, pos_weight=pw),
                         R.ref_binary_cross_entropy(xb, yb, pos_weight=pw)[0], np.float64)
    _, g = ld.binary_cross_entropy_grad(xb, yb, pos_weight=pw)
    assert_grad_close(g, R.ref_binary_cross_entropy(xb, yb, pos_weight=pw)[1], np.float64)
