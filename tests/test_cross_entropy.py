"""lossdiag.cross_entropy (loss values) against the float64 reference."""

from __future__ import annotations

import math

import lossdiag as ld
import numpy as np
import pytest
import reference as R
from conftest import (
    FLOAT_DTYPES,
    LABEL_DTYPES,
    SHAPES,
    assert_elem_close,
    assert_reduced_close,
    cast_logits,
    kw_to_backend,
    loss_dtype,
    make_case,
    make_soft,
    num_classes,
    reduced_value,
    shape_id,
    target_shape,
    to_backend,
    to_numpy,
)

REDUCTIONS = ["mean", "sum", "none"]


def ce(backend, x, y, **kw):
    return to_numpy(ld.cross_entropy(to_backend(x, backend), to_backend(y, backend),
                                     **kw_to_backend(kw, backend)))


def check_loss(got, ref, dtype, reduction, **tol):
    if reduction == "none":
        assert_elem_close(got, ref, dtype, **tol)
    else:
        assert_reduced_close(got, ref, dtype, **{k: v for k, v in tol.items() if k != "rtol"},
                             rtol=tol.get("rtol"))


# ------------------------------------------------------------------------------------------------
# shapes x dtypes x reductions
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_shapes_dtypes_reductions(backend, case, dtype, reduction):
    shape, axis = case
    x64, y = make_case(shape, axis, seed=len(shape) * 7 + shape[axis])
    x, xr = cast_logits(x64, dtype)
    got = ce(backend, x, y, axis=axis, reduction=reduction)
    ref, _ = R.ref_cross_entropy(xr, y, axis=axis, reduction=reduction)
    check_loss(got, ref, dtype, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_return_types(backend, reduction):
    x, y = make_case((5, 4, 3), 1, seed=1)
    for dtype in FLOAT_DTYPES:
        got = ld.cross_entropy(to_backend(x.astype(dtype), backend), to_backend(y, backend),
                               reduction=reduction)
        if reduction == "none":
            got = to_numpy(got)
            assert got.dtype == loss_dtype(dtype) and got.shape == (5, 3)
        else:
            reduced_value(got)  # Python float on the CPU, 0-d float64 on the GPU


@pytest.mark.parametrize("axis", [1, -1])
def test_axis_minus1_equals_moved_axis1(backend, axis):
    # the same data laid out channels-first and channels-last gives the reference loss both ways
    x, y = make_case((2, 5, 3, 4), 1, seed=3)
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    data = x if axis == 1 else xl
    for red in REDUCTIONS:
        got = ce(backend, data, y, axis=axis, reduction=red)
        ref, _ = R.ref_cross_entropy(x, y, axis=1, reduction=red)
        check_loss(got, ref, np.float64, red)


# ------------------------------------------------------------------------------------------------
# labels: dtypes, ignore_index read "as is"
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("label_dtype", LABEL_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("ignore_index", [-100, 0, 5, 255])
def test_label_dtypes_and_ignore_index(backend, label_dtype, ignore_index):
    info = np.iinfo(label_dtype)
    x, _ = make_case((4, 21, 3, 5), 1, seed=4)
    r = np.random.default_rng(5)
    y = r.integers(0, 21, size=(4, 3, 5))
    if info.min <= ignore_index <= info.max:
        y = np.where(r.random(y.shape) < 0.3, ignore_index, y)
    y = y.astype(label_dtype)
    for red in REDUCTIONS:
        got = ce(backend, x, y, ignore_index=ignore_index, reduction=red)
        ref, _ = R.ref_cross_entropy(x, y, ignore_index=ignore_index, reduction=red)
        check_loss(got, ref, np.float64, red)


@pytest.mark.parametrize("label_dtype", LABEL_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("ignore_index", [-(2**40), -(2**31) - 1, 2**31, 2**40])
def test_ignore_index_beyond_int32(backend, label_dtype, ignore_index):
    """The CPU kernel compares 8/16-bit and int32 labels in int32: an ignore_index outside the
    int32 range must still ignore exactly the labels equal to it (none, unless the label dtype
    can hold it), in the loss and in evaluate's counts."""
    info = np.iinfo(label_dtype)
    x, _ = make_case((4, 21, 3, 5), 1, seed=41)
    r = np.random.default_rng(42)
    y = r.integers(0, 21, size=(4, 3, 5))
    n_ign = 0
    if info.min <= ignore_index <= info.max:
        ign = r.random(y.shape) < 0.3
        y = np.where(ign, ignore_index, y)
        n_ign = int(ign.sum())
    y = y.astype(label_dtype)
    for red in ("mean", "sum"):
        got = ce(backend, x, y, ignore_index=ignore_index, reduction=red)
        ref, _ = R.ref_cross_entropy(x, y, ignore_index=ignore_index, reduction=red)
        check_loss(got, ref, np.float64, red)
    if backend == "cpu":
        st = ld.evaluate(x, y, ignore_index=ignore_index)
        assert st.ignored == n_ign and st.count == y.size - n_ign


def test_uint8_mask_255_ignored_with_150_classes(backend):
    x, _ = make_case((2, 150, 6, 7), 1, seed=6)
    r = np.random.default_rng(7)
    y = r.integers(0, 150, size=(2, 6, 7)).astype(np.uint8)
    y[r.random(y.shape) < 0.25] = 255
    for dtype in (np.float32, np.float64):
        xi, xr = cast_logits(x, dtype)
        for red in REDUCTIONS:
            got = ce(backend, xi, y, ignore_index=255, reduction=red)
            ref, _ = R.ref_cross_entropy(xr, y, ignore_index=255, reduction=red)
            check_loss(got, ref, dtype, red)


def test_labels_read_as_is_uint8_156_is_a_class(backend):
    # (uint8)(-100) == 156: with ignore_index=-100 the uint8 label 156 is class 156, not ignored
    x, _ = make_case((6, 200), 1, seed=8)
    y = np.array([156, 3, 156, 199, 0, 156], np.uint8)
    got = ce(backend, x, y, reduction="none")
    ref = R.ref_cross_entropy(x, y, reduction="none")[0]
    assert np.all(ref > 0)
    assert_elem_close(got, ref, np.float64)
    # and int8 -100 is ignored
    y8 = np.array([-100, 3, 1, -100, 0, 2], np.int8)
    got = ce(backend, x, y8, reduction="none")
    assert_elem_close(got, R.ref_cross_entropy(x, y8, reduction="none")[0], np.float64)
    assert got[0] == 0 and got[3] == 0
    assert_reduced_close(ce(backend, x, y8), R.ref_cross_entropy(x, y8)[0], np.float64)


def test_ignore_index_zero_ignores_class_zero(backend):
    x, _ = make_case((30, 4), 1, seed=9)
    y = np.random.default_rng(9).integers(0, 4, 30)
    got = ce(backend, x, y, ignore_index=0, reduction="none")
    assert np.all(got[y == 0] == 0) and np.all(got[y != 0] > 0)
    assert_reduced_close(ce(backend, x, y, ignore_index=0),
                         R.ref_cross_entropy(x, y, ignore_index=0)[0], np.float64)


def test_all_ignored_and_empty(backend):
    x, _ = make_case((5, 3), 1, seed=10)
    y = np.full(5, -100)
    for w in (None, np.array([1.0, 2.0, 3.0])):
        for eps in (0.0, 0.2):
            assert math.isnan(ce(backend, x, y, weight=w, label_smoothing=eps))
            assert ce(backend, x, y, weight=w, label_smoothing=eps, reduction="sum") == 0.0
            got = ce(backend, x, y, weight=w, label_smoothing=eps, reduction="none")
            assert np.array_equal(got, np.zeros(5))
    for shape, axis in [((0, 3), 1), ((0, 3, 2, 2), 1), ((2, 3, 0, 4), 1), ((0, 2, 2, 3), -1)]:
        xe = np.zeros(shape, np.float32)
        ye = np.zeros(target_shape(shape, axis), np.int64)
        assert math.isnan(ce(backend, xe, ye, axis=axis))
        assert ce(backend, xe, ye, axis=axis, reduction="sum") == 0.0
        got = ce(backend, xe, ye, axis=axis, reduction="none")
        assert got.shape == ye.shape and got.dtype == np.float32


# ------------------------------------------------------------------------------------------------
# weight, label smoothing, combinations
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", [((16, 5), 1), ((3, 7, 4, 5), 1), ((2, 4, 3, 6), -1),
                                  ((2, 3, 2, 3, 4), 1)], ids=shape_id)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("ignore_index", [-100, 1])
def test_weight_smoothing_ignore(backend, case, dtype, weighted, eps, ignore_index):
    shape, axis = case
    C = num_classes(shape, axis)
    x64, y = make_case(shape, axis, seed=C + len(shape), ignore_index=ignore_index)
    x, xr = cast_logits(x64, dtype)
    w = np.random.default_rng(11).random(C) * 2 + 0.1 if weighted else None
    for red in REDUCTIONS:
        kw = dict(axis=axis, weight=w, ignore_index=ignore_index, label_smoothing=eps,
                  reduction=red)
        check_loss(ce(backend, x, y, **kw), R.ref_cross_entropy(xr, y, **kw)[0], dtype, red)


def test_weight_with_zeros_and_float32_weight(backend):
    x, y = make_case((40, 6), 1, seed=12, frac_ignored=0)
    w = np.array([0.0, 1.0, 2.0, 0.0, 0.5, 3.0])
    for wt in (w, w.astype(np.float32)):
        for red in REDUCTIONS:
            for eps in (0.0, 0.3):
                kw = dict(weight=wt, label_smoothing=eps, reduction=red)
                ref = R.ref_cross_entropy(x, y, **dict(kw, weight=w))[0]
                check_loss(ce(backend, x, y, **kw), ref, np.float64, red, rtol=1e-7)


@pytest.mark.parametrize("case", [((12, 5), 1), ((2, 4, 3, 5), 1), ((2, 3, 4, 6), -1),
                                  ((3, 1000), 1), ((2, 1), 1)], ids=shape_id)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("eps", [0.0, 0.25])
def test_soft_targets(backend, case, dtype, weighted, eps):
    shape, axis = case
    C = num_classes(shape, axis)
    x64, _ = make_case(shape, axis, seed=13)
    x, xr = cast_logits(x64, dtype)
    t = make_soft(shape, axis, seed=13, dtype=dtype)
    tr = t.astype(np.float64)
    w = np.random.default_rng(14).random(C) + 0.5 if weighted else None
    for red in REDUCTIONS:
        kw = dict(axis=axis, weight=w, label_smoothing=eps, reduction=red)
        check_loss(ce(backend, x, t, **kw), R.ref_cross_entropy(xr, tr, **kw)[0], dtype, red)


def test_soft_one_hot_equals_hard(backend):
    x, y = make_case((10, 6, 3), 1, seed=15, frac_ignored=0)
    onehot = np.moveaxis(np.eye(6)[y], -1, 1)
    w = np.linspace(0.5, 2.0, 6)
    for red in REDUCTIONS:
        got = ce(backend, x, onehot, reduction=red, label_smoothing=0.1)
        ref = R.ref_cross_entropy(x, y, reduction=red, label_smoothing=0.1)[0]
        check_loss(got, ref, np.float64, red)
    # with weight, soft "mean" divides by the element count, hard "mean" by sum(w[y])
    got = ce(backend, x, onehot, weight=w)
    ref_soft = R.ref_cross_entropy(x, onehot, weight=w)[0]
    ref_hard = R.ref_cross_entropy(x, y, weight=w)[0]
    assert_reduced_close(got, ref_soft, np.float64)
    assert abs(ref_soft - ref_hard) > 1e-3


def test_soft_targets_ignore_index_not_applied(backend):
    x, _ = make_case((6, 4), 1, seed=16)
    t = make_soft((6, 4), 1, seed=16)
    for ii in (-100, 0, 2):
        assert_reduced_close(ce(backend, x, t, ignore_index=ii), R.ref_cross_entropy(x, t)[0],
                             np.float64)


# ------------------------------------------------------------------------------------------------
# from_logits=False (probabilities, Keras categorical_crossentropy)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", [((10, 4), 1), ((2, 5, 3, 3), 1), ((2, 3, 3, 5), -1)],
                         ids=shape_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_from_probabilities(backend, case, dtype, soft):
    shape, axis = case
    C = num_classes(shape, axis)
    r = np.random.default_rng(17)
    p64 = r.random(shape) + 0.02
    flat = p64.reshape(-1)
    flat[:3] = [1e-12, 0.0, 5.0]  # clipped below / exact zero / dominant
    p, pr = cast_logits(p64, dtype)
    _, y = make_case(shape, axis, seed=17)
    t = make_soft(shape, axis, seed=17, dtype=dtype) if soft else y
    w = r.random(C) + 0.5
    for red in REDUCTIONS:
        for eps in (0.0, 0.1):
            kw = dict(axis=axis, weight=w, label_smoothing=eps, reduction=red, from_logits=False)
            ref = R.ref_cross_entropy(pr, t if not soft else t.astype(np.float64),
                                      clip_dtype=dtype, **kw)[0]
            check_loss(ce(backend, p, t, **kw), ref, dtype, red)


def test_from_probabilities_clip_value(backend):
    p = np.array([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    y = np.array([0, 2])
    got = ce(backend, p, y, reduction="none", from_logits=False)
    assert_elem_close(got, [-math.log(1e-7), -math.log(0.5)], np.float64)


# ------------------------------------------------------------------------------------------------
# extreme and non-finite logits
# ------------------------------------------------------------------------------------------------
def extreme_cases():
    r = np.random.default_rng(18)
    C = 7
    y = r.integers(0, C, 12)
    cases = {
        "pm1e4": np.where(r.random((12, C)) < 0.5, -1e4, 1e4),
        "scale1e4": r.normal(size=(12, C)) * 1e4,
        "offset1e4": 1e4 + r.normal(size=(12, C)),
        "offset-1e4": -1e4 + r.normal(size=(12, C)),
        "all_equal": np.full((12, C), 3.25),
        "all_zero": np.zeros((12, C)),
        "one_huge": np.where(np.arange(C) == 2, 1e4, r.normal(size=(12, C))),
        "one_huge_1e30": np.where(np.arange(C) == 5, 1e30, r.normal(size=(12, C))),
        "tiny_diff": 1.0 + r.normal(size=(12, C)) * 1e-6,
    }
    return cases, y


@pytest.mark.parametrize("name", list(extreme_cases()[0]))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_extreme_logits(backend, name, dtype):
    cases, y = extreme_cases()
    x64 = cases[name]
    if dtype == np.float16 and np.abs(x64).max() > 6e4:
        pytest.skip("not representable in float16")
    x, xr = cast_logits(x64, dtype)
    for eps in (0.0, 0.1):
        for red in REDUCTIONS:
            kw = dict(label_smoothing=eps, reduction=red)
            ref = R.ref_cross_entropy(xr, y, **kw)[0]
            assert np.all(np.isfinite(ref))
            # per-element absolute floor: losses may be exactly 0 for saturated rows
            got = ce(backend, x, y, **kw)
            if red == "none":
                assert_elem_close(got, ref, dtype)
            else:
                assert_reduced_close(got, ref, dtype, atol=1e-6 if dtype != np.float64 else 1e-13)


def test_all_equal_logits_is_log_c(backend):
    for C in (1, 2, 3, 21, 150, 1000):
        x = np.full((3, C), -7.5, np.float32)
        y = np.arange(3) % C
        assert_reduced_close(ce(backend, x, y), math.log(C), np.float32, atol=1e-7)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_nonfinite_logits(backend, dtype, eps):
    """Documented: NaN or +inf in a row -> NaN loss for that row; -inf at a non-target class is a
    mask (eps=0; with eps>0 torch gives +inf, the smoothing term sees log 0); -inf at the target
    -> +inf (torch); all -inf -> NaN; other rows unaffected; "mean" NaN if any row NaN."""
    x64, _ = make_case((8, 5), 1, seed=19, frac_ignored=0)
    y = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    x64[0, 3] = -np.inf
    x64[1, 0] = np.nan
    x64[2, 1] = np.inf
    x64[3, 3] = -np.inf
    x64[4, :] = -np.inf
    x64[5, [1, 2, 3, 4]] = -np.inf  # only the target left: loss exactly 0 without smoothing
    x, xr = cast_logits(x64, dtype)
    got = ce(backend, x, y, reduction="none", label_smoothing=eps)
    ref = R.ref_cross_entropy(xr, y, reduction="none", label_smoothing=eps)[0]
    assert_elem_close(got, ref, dtype)
    if eps == 0:
        assert np.isfinite(got[0]) and got[5] == 0
    assert np.isnan(got[1]) and np.isnan(got[2]) and np.isnan(got[4])
    assert math.isnan(ce(backend, x, y, label_smoothing=eps))
    assert math.isnan(ce(backend, x, y, label_smoothing=eps, reduction="sum"))
    # NaN rows that are ignored do not poison the mean
    y2 = y.copy()
    y2[[1, 2, 3, 4]] = -100
    ref2 = R.ref_cross_entropy(xr, y2, label_smoothing=eps)[0]
    assert_reduced_close(ce(backend, x, y2, label_smoothing=eps), ref2, dtype)


def test_neg_inf_mask_channels_last(backend):
    x64, y = make_case((2, 3, 4, 6), -1, seed=20, frac_ignored=0)
    mask = np.random.default_rng(20).random(x64.shape) < 0.3
    onehot = np.eye(6, dtype=bool)[y]
    x64[mask & ~onehot] = -np.inf
    for red in REDUCTIONS:
        got = ce(backend, x64.astype(np.float32), y, axis=-1, reduction=red)
        ref = R.ref_cross_entropy(x64.astype(np.float32), y, axis=-1, reduction=red)[0]
        check_loss(got, ref, np.float32, red)
        assert np.all(np.isfinite(got))


# ------------------------------------------------------------------------------------------------
# precision
# ------------------------------------------------------------------------------------------------
PREC_CASES = {
    "normal": lambda r, s: r.normal(size=s) * 3,
    "scale1e4": lambda r, s: r.normal(size=s) * 1e4,
    "offset1e4": lambda r, s: 1e4 + r.normal(size=s) * 2,
    "offset-1e4": lambda r, s: -1e4 + r.normal(size=s) * 2,
}


@pytest.mark.parametrize("name", list(PREC_CASES))
@pytest.mark.parametrize("case", [((20000, 10), 1), ((4, 21, 64, 64), 1), ((4, 32, 32, 21), -1)],
                         ids=shape_id)
def test_float32_mean_precision(backend, name, case):
    shape, axis = case
    r = np.random.default_rng(21)
    x = PREC_CASES[name](r, shape).astype(np.float32)
    y = r.integers(0, shape[axis], size=target_shape(shape, axis))
    for kw in (dict(), dict(label_smoothing=0.1), dict(weight=np.linspace(0.5, 2, shape[axis]))):
        ref = R.ref_cross_entropy(x.astype(np.float64), y, axis=axis, **kw)[0]
        got = ce(backend, x, y, axis=axis, **kw)
        assert_reduced_close(got, ref, np.float32, rtol=1e-6)
        refs = R.ref_cross_entropy(x.astype(np.float64), y, axis=axis, reduction="sum", **kw)[0]
        assert_reduced_close(ce(backend, x, y, axis=axis, reduction="sum", **kw), refs,
                             np.float32, rtol=1e-6)


def _chunked_ref_mean(x, y, axis, chunk):
    """float64 reference mean over a huge array, chunked along the batch axis (no weights)."""
    tot = 0.0
    for i in range(0, x.shape[0], chunk):
        tot += R.ref_cross_entropy(x[i:i + chunk].astype(np.float64), y[i:i + chunk], axis=axis,
                                   reduction="sum")[0]
    return tot / y.size


def test_float32_mean_precision_1e7(backend):
    """~10^7 float32 logits (10^6 loss elements) in the normal suite: mean within 1e-6 rel."""
    r = np.random.default_rng(22)
    shape = (4, 10, 500, 500)
    x = (1e4 + r.normal(size=shape) * 3).astype(np.float32)
    y = r.integers(0, 10, size=(4, 500, 500)).astype(np.uint8)
    ref = _chunked_ref_mean(x, y, 1, 1)
    assert_reduced_close(ce(backend, x, y), ref, np.float32, rtol=1e-6)


@pytest.mark.slow
def test_float32_mean_precision_1e8(backend):
    """10^8 float32 logits (10^7 rows x 10 classes, channels-last and (N,C)): mean within 1e-6."""
    r = np.random.default_rng(23)
    n = 10**7
    x = np.empty((n, 10), np.float32)
    for i in range(0, n, 10**6):
        x[i:i + 10**6] = r.normal(size=(10**6, 10)) * 4 + 1e3
    y = r.integers(0, 10, size=n).astype(np.int32)
    ref = _chunked_ref_mean(x, y, 1, 10**6)
    assert_reduced_close(ce(backend, x, y), ref, np.float32, rtol=1e-6)
    x4 = x.reshape(10, 1000, 1000, 10)
    assert_reduced_close(ce(backend, x4, y.reshape(10, 1000, 1000), axis=-1), ref, np.float32,
                         rtol=1e-6)


def test_float16_large_values(backend):
    # fp16 near its max and with large differences: computed in float32, no overflow
    x = np.array([[6.0e4, -6.0e4, 0.0], [-6.0e4, 6.0e4, 6.0e4], [1.0, 2.0, 3.0]], np.float16)
    y = np.array([1, 2, 0])
    ref = R.ref_cross_entropy(x.astype(np.float64), y, reduction="none")[0]
    assert np.all(np.isfinite(ref))
    assert_elem_close(ce(backend, x, y, reduction="none"), ref, np.float16)
