"""Bad inputs raise ValueError/TypeError naming the argument; odd-but-valid layouts (views,
non-contiguous, negative strides) give correct results."""

from __future__ import annotations

import math

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


# ================================================================================================
# Reliability regressions (issue 25): one group per family.
# ================================================================================================
# -- crashes: scratch allocations are checked, absurd sizes refused -------------------------------
@pytest.fixture
def scratch_limit():
    """Make scratch allocations above `n` bytes fail (the kernels' failure path) for one test."""
    from lossdiag import _core

    yield _core._set_scratch_limit
    _core._set_scratch_limit(0)


def test_failed_scratch_allocation_is_a_memory_error(scratch_limit):
    from lossdiag import _core

    x = np.random.default_rng(0).normal(size=(4096, 10)).astype(np.float32)
    y = np.zeros(4096, np.int64)
    scratch_limit(1 << 20)
    with pytest.raises(MemoryError, match="bins"):  # statistics accumulators (before the threads)
        ld.evaluate(x, y, bins=60_000)
    with pytest.raises(MemoryError, match="bins"):
        ld.evaluate_binary(x[:, 0], np.zeros(4096), bins=60_000)
    wide0 = _core._wide_min_classes()
    try:  # per-thread lane buffers (inside the parallel region): C x 64 lanes x 3 buffers
        _core._set_wide_min_classes(10**6)
        xc = np.zeros((64, 5000), np.float32)
        with pytest.raises(MemoryError, match="logits"):
            ld.cross_entropy(xc, np.zeros(64, np.int64))
        g = np.full_like(xc, 7.0)
        with pytest.raises(MemoryError, match="logits"):
            ld.cross_entropy_grad(xc, np.zeros(64, np.int64), out=g)
        assert np.all(g == 7.0)  # nothing was written
    finally:
        _core._set_wide_min_classes(wide0)
    scratch_limit(0)
    assert ld.evaluate(x, y, bins=60_000).count == 4096  # and the kernels still work


def test_large_C_needs_no_class_sized_scratch(scratch_limit):
    """(N, C) with huge C: the wide-row path keeps nothing per thread that grows with C."""
    C = 5_000_000
    x = np.zeros((2, C), np.float32)
    x[1, 7] = 3.0
    scratch_limit(1 << 20)  # the lane path would need 3 x C x 64 x 4 bytes per thread
    got = ld.cross_entropy(x, np.array([0, 7]), reduction="none")
    want = [math.log(C), math.log(C - 1 + math.exp(3.0)) - 3.0]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    loss, g = ld.cross_entropy_grad(x, np.array([0, 7]), reduction="sum")
    assert g[0, 0] == pytest.approx(1.0 / C - 1.0) and g[0, 1] == pytest.approx(1.0 / C)
    assert ld.accuracy(x, np.array([0, 7])) == 1.0


@pytest.mark.parametrize("bins", [2**31, 2**40, 65_537, 10**8])
def test_absurd_bins_refused(bins):
    with raises("bins"):
        ld.evaluate(np.zeros((4, 3), np.float32), np.zeros(4, np.int64), bins=bins)
    with raises("bins"):
        ld.evaluate_binary(np.zeros(4, np.float32), np.zeros(4), bins=bins)
    with raises("bins"):
        ld.Metrics(3, bins=bins)


@pytest.mark.parametrize("n", [0, -1, 1025, 50_000, 100_000, 2**31, 2**64])
def test_absurd_thread_counts_refused(restore_threads, n):
    from lossdiag import _core

    with raises("n"):
        ld.set_num_threads(n)
    if n < 2**63:
        with pytest.raises(ValueError, match="n"):
            _core.set_num_threads(n)
    assert ld.cross_entropy(X, Y) == pytest.approx(R.ref_cross_entropy(X, Y)[0])


def test_max_threads_runs(restore_threads):
    ld.set_num_threads(1024)  # the bound: kernels run no more threads than work items (<= 64)
    x, y = make_case((3000, 5), 1, seed=2)
    assert ld.cross_entropy(x, y) == pytest.approx(R.ref_cross_entropy(x, y)[0], rel=1e-12)


# -- silent wrong answers ------------------------------------------------------------------------
def _soft_batch(seed, n=16, C=5):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, C)).astype(np.float32)
    t = r.dirichlet(np.ones(C), n).astype(np.float32)
    return x, t


def test_metrics_state_keeps_soft_targets():
    m = ld.Metrics(5, label_smoothing=0.2)
    batches = [_soft_batch(s) for s in range(3)]
    for x, t in batches:
        m.update(x, t)
    want = m.compute()["loss"]
    xs = np.concatenate([b[0] for b in batches])
    ts = np.concatenate([b[1] for b in batches])
    assert want == pytest.approx(ld.cross_entropy(xs, ts, label_smoothing=0.2), rel=1e-6)
    fresh = ld.Metrics(5, label_smoothing=0.2)
    fresh.load_state_dict(m.state_dict())
    assert fresh.compute()["loss"] == want
    merged = ld.Metrics(5, label_smoothing=0.2).merge(m)
    assert merged.compute()["loss"] == want
    # integer labels after soft targets: refused, not averaged with another denominator
    with raises("target"):
        m.update(xs, np.zeros(len(xs), np.int64))
    hard = ld.Metrics(5, label_smoothing=0.2)
    hard.update(xs, np.zeros(len(xs), np.int64))
    with raises("other"):
        hard.merge(m)
    st = m.state_dict()
    st["hard_batches"] = np.array(1)
    with raises("state"):
        fresh.load_state_dict(st)


def test_accuracy_is_top1_whatever_top_k():
    r = np.random.default_rng(4)
    x = r.normal(size=(400, 20)).astype(np.float32)
    y = r.integers(0, 20, 400)
    top1 = R.ref_accuracy(x.astype(np.float64), y)
    st = ld.evaluate(x, y, top_k=(5,))
    assert st.accuracy == top1 and st.correct[5] / 400 == R.ref_accuracy(x, y, top_k=5)
    assert st.accuracy != st.correct[5] / 400
    m = ld.Metrics(20, top_k=(5,))
    m.update(x, y)
    out = m.compute()
    assert out["accuracy"] == top1
    assert out["top_k_accuracy"][5] == R.ref_accuracy(x, y, top_k=5)
    with raises("top_k"):  # 8 values besides 1: no slot left for top-1
        ld.evaluate(x, y, top_k=tuple(range(2, 10)))


@pytest.mark.parametrize("fn", ["cross_entropy_grad", "evaluate"])
def test_out_aliasing_inputs_refused(fn):
    x = np.random.default_rng(5).normal(size=(6, 4))
    y = np.array([0, 1, 2, 3, 0, 1])
    kw = {"grad": True} if fn == "evaluate" else {}
    f = getattr(ld, fn)
    out = np.zeros_like(x)
    with raises("out.*weight"):
        f(x, y, weight=out[0], out=out, **kw)
    buf = np.zeros((6, 4))
    labels = buf.view(np.int64)[:, 0]  # labels stored inside out's buffer
    labels[:] = y
    with raises("out.*target"):
        f(x, labels, out=buf, **kw)
    assert np.array_equal(labels, y)
    soft = np.full((6, 4), 0.25)
    with raises("out.*target"):
        f(x, soft, out=soft, **kw)
    # in place on the logits stays allowed
    xc = x.copy()
    loss, g = ld.cross_entropy_grad(xc, y, out=xc)
    assert g is xc and loss == pytest.approx(R.ref_cross_entropy(x, y)[0])


def test_out_aliasing_binary_refused():
    x = np.random.default_rng(6).normal(size=(8,))
    t = np.zeros(8)
    with raises("out.*target"):
        ld.binary_cross_entropy_grad(x, t, out=t)
    out = np.zeros(8)
    with raises("out.*pos_weight"):
        ld.binary_cross_entropy_grad(x, t, pos_weight=out[:1], out=out)


def test_entropy_finite_for_rows_spanning_float32_range():
    x = np.array([[3e38, -1e38, 0.0]] * 5, np.float32)
    st = ld.evaluate(x, np.zeros(5, np.int64))
    assert st.nonfinite_rows == 0 and st.conf_hist.sum() == 5
    assert np.isfinite(st.entropy_sum) and st.entropy_sum == pytest.approx(0.0, abs=1e-30)
    m = ld.Metrics(3)
    m.update(x, np.zeros(5, np.int64))
    assert m.compute()["mean_entropy"] == pytest.approx(0.0, abs=1e-30)


def test_binary_accuracy_infinite_logits_follow_the_rule():
    assert ld.binary_accuracy(np.array([np.inf]), np.array([1.0])) == 1.0
    assert ld.binary_accuracy(np.array([-np.inf]), np.array([0.0])) == 1.0
    assert ld.binary_accuracy(np.array([np.inf, -np.inf]), np.array([0.0, 1.0])) == 0.0
    assert ld.binary_accuracy(np.array([np.nan]), np.array([0.0])) == 0.0  # NaN is wrong
    st = ld.evaluate_binary(np.array([np.inf, -np.inf, np.nan], np.float32), np.array([1, 0, 0]))
    assert st.correct[1] == 2 and st.nonfinite == 3


@pytest.mark.parametrize("kind", ["onehot", "uniform", "dirichlet"])
def test_soft_targets_large_C_accurate(kind):
    r = np.random.default_rng(7)
    C, n = 5000, 16
    x = r.normal(size=(n, C)).astype(np.float32)
    y = r.integers(0, C, n)
    t = {"onehot": np.eye(C, dtype=np.float32)[y], "uniform": np.full((n, C), 1 / C, np.float32),
         "dirichlet": r.dirichlet(np.ones(C), n).astype(np.float32)}[kind]
    want = R.ref_cross_entropy(x.astype(np.float64), t.astype(np.float64), label_smoothing=0.1,
                               reduction="none")[0]
    got = ld.cross_entropy(x, t, label_smoothing=0.1, reduction="none")
    assert np.max(np.abs(got / want - 1)) < 1e-6  # float32 sums: 4e-5 .. 1e-4; torch ~3e-7
    for p in ("1", "1000000"):  # the lane path and the wide-row path
        from lossdiag import _core

        w0 = _core._wide_min_classes()
        _core._set_wide_min_classes(int(p))
        try:
            g = ld.cross_entropy(x, t, label_smoothing=0.1, reduction="none")
        finally:
            _core._set_wide_min_classes(w0)
        assert np.max(np.abs(g / want - 1)) < 1e-6, p


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_binary_small_pos_weight_is_not_lost(dtype):
    x = np.array([0.0, -10.0], dtype)
    y = np.array([1.0, 0.0])
    want, wg = R.ref_binary_cross_entropy(x.astype(np.float64), y, pos_weight=1e-9)
    loss, g = ld.binary_cross_entropy_grad(x, y, pos_weight=np.array(1e-9))
    assert loss == pytest.approx(want, rel=1e-6)  # 1 + (1e-9 - 1) y gave 0 for the positive
    if dtype != np.float16:
        assert g[0] == pytest.approx(wg[0], rel=1e-6)


def test_logistic_surface_tiny_losses_do_not_cancel():
    from lossdiag.landscape import logistic_surface

    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([0.0, 1.0])
    land = logistic_surface(X, y, [-40.0], [40.0])  # z = -40 for y = 0, z = 40 for y = 1
    assert land.loss[0, 0] == pytest.approx(math.log1p(math.exp(-40.0)), rel=1e-12)
    land = logistic_surface(np.tile(X, (5, 1)), np.tile(y, 5), [-40.0], [40.0])  # vector loop
    assert land.loss[0, 0] == pytest.approx(math.log1p(math.exp(-40.0)), rel=1e-12)


def test_metrics_update_from_threads_loses_nothing():
    import sys
    import threading

    m = ld.Metrics(4, top_k=(1, 2))
    r = np.random.default_rng(8)
    x = r.normal(size=(64, 4)).astype(np.float32)
    y = r.integers(0, 4, 64)
    per, n_threads = 60, 6
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        ths = [threading.Thread(target=lambda: [m.update(x, y) for _ in range(per)])
               for _ in range(n_threads)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
    finally:
        sys.setswitchinterval(old)
    out = m.compute()
    assert out["count"] == 64 * per * n_threads
    assert int(out["confusion"].sum()) == 64 * per * n_threads
    assert m.state_dict()["hard_batches"] == per * n_threads
    import copy
    import pickle

    for c in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):  # the lock is not copied
        assert c.compute()["count"] == out["count"]
        c.update(x, y)


def test_left_out_rows_do_not_overflow_the_packed_counters():
    # (UBSan found a signed overflow here; the value must simply be right)
    x = np.zeros((64, 3), np.float32)
    x[:, 1] = np.inf
    st = ld.evaluate(x, np.zeros(64, np.int64))
    assert st.nonfinite_rows == 64 and st.conf_hist.sum() == 0 and st.conf_sum.sum() == 0
    assert st.count == 64 and st.correct[1] == 0


# -- unclear errors: every case names the argument and the value ---------------------------------
XF = np.zeros((4, 3), np.float32)
YI = np.zeros(4, np.int64)
XB = np.zeros(4, np.float32)


@pytest.mark.parametrize(("call", "arg"), [
    (lambda: ld.cross_entropy(XF, YI, ignore_index=2**63), "ignore_index"),
    (lambda: ld.cross_entropy(XF, YI, ignore_index=-(2**63) - 1), "ignore_index"),
    (lambda: ld.evaluate(XF, YI, ignore_index=2**80), "ignore_index"),
    (lambda: ld.evaluate(XF, YI, bins=2**31), "bins"),
    (lambda: ld.cross_entropy(XF, YI, weight="abc"), "weight"),
    (lambda: ld.cross_entropy(XF, YI, weight={"a": 1}), "weight"),
    (lambda: ld.cross_entropy(XF, YI, weight=np.ones(3, np.complex128)), "weight"),
    (lambda: ld.cross_entropy(XF, YI, weight=[True, False, True]), "weight"),
    (lambda: ld.binary_cross_entropy(XB, XB, pos_weight="abc"), "pos_weight"),
    (lambda: ld.binary_cross_entropy(XB, XB, pos_weight={"a": 1}), "pos_weight"),
    (lambda: ld.binary_cross_entropy(XB, XB, pos_weight=1j), "pos_weight"),
    (lambda: ld.binary_accuracy(XB, XB, threshold="0.5"), "threshold"),
    (lambda: ld.binary_accuracy(XB, XB, threshold=float("nan")), "threshold"),
    (lambda: ld.evaluate_binary(XB, XB, threshold="0.5"), "threshold"),
    (lambda: ld.cross_entropy(XF, YI, label_smoothing="0.1"), "label_smoothing"),
    (lambda: ld.cross_entropy(XF, YI, label_smoothing=0.1 + 0j), "label_smoothing"),
    (lambda: ld.cross_entropy(XF, YI, label_smoothing=True), "label_smoothing"),
    (lambda: ld.cross_entropy(XF, YI, from_logits="no"), "from_logits"),
    (lambda: ld.binary_cross_entropy(XB, XB, from_logits="no"), "from_logits"),
    (lambda: ld.cross_entropy(XF, YI, reduction=["mean"]), "reduction"),
    (lambda: ld.evaluate(XF, YI, per_sample="yes"), "per_sample"),
    (lambda: ld.evaluate(XF, YI, grad="no"), "grad"),
    (lambda: ld.Metrics(3).load_state_dict(None), "state"),
    (lambda: ld.Metrics(3).load_state_dict({**ld.Metrics(3).state_dict(),
                                            "count": np.array(np.nan)}), "count"),
    (lambda: ld.Metrics(3).load_state_dict({**ld.Metrics(3).state_dict(),
                                            "count": np.array(1.5)}), "count"),
    (lambda: ld.Metrics(3).load_state_dict({**ld.Metrics(3).state_dict(),
                                            "count": np.array(-1)}), "count"),
    (lambda: ld.Metrics(3).load_state_dict({**ld.Metrics(3).state_dict(),
                                            "confusion": "abc"}), "confusion"),
])
def test_unclear_errors_name_the_argument(call, arg):
    with pytest.raises((TypeError, ValueError), match=arg):
        call()
