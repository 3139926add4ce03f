"""lossdiag.evaluate / evaluate_binary (one pass BatchStats) against the float64 reference and
scikit-learn."""

from __future__ import annotations

import dataclasses
import math

import lossdiag as ld
import numpy as np
import pytest
import reference as R
from conftest import (
    FLOAT_DTYPES,
    assert_grad_close,
    cast_logits,
    check_stats,
    make_case,
    make_soft,
    num_classes,
    shape_id,
    target_shape,
    to_backend,
    to_numpy,
)

skm = pytest.importorskip("sklearn.metrics")

CASES = [((64, 5), 1), ((3, 7, 8, 9), 1), ((2, 4, 5, 6, 3), -1), ((2, 21, 4, 5), 1),
         ((5, 150), 1), ((3, 1000), 1), ((6, 2), 1), ((1, 3, 1, 1), 1),
         # rows layouts with many classes: full blocks go through the tiled transposition
         # (a partial last tile of classes, then a tail block that does not)
         ((130, 300), 1), ((2, 9, 8, 260), -1)]


def ev(backend, x, y, **kw):
    kw = dict(kw)
    if isinstance(kw.get("weight"), np.ndarray):
        kw["weight"] = to_backend(kw["weight"], backend)
    return ld.evaluate(to_backend(x, backend), to_backend(y, backend), **kw).get()


def bits_equal(a, b):
    """Same float bit for bit (any NaN equals any NaN: the sign/payload of a NaN carries no
    meaning and differs between 0/0 and float('nan'))."""
    if math.isnan(a) and math.isnan(b):
        return True
    return np.float64(a).tobytes() == np.float64(b).tobytes()


@pytest.mark.parametrize("case", CASES, ids=shape_id)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("confusion", [None, False], ids=["cm", "no_cm"])
def test_evaluate_vs_reference(backend, case, dtype, confusion):
    shape, axis = case
    C = num_classes(shape, axis)
    x64, y = make_case(shape, axis, seed=C + 100, scale=2.5)
    x, xr = cast_logits(x64, dtype)
    top_k = tuple(k for k in (1, 2, 5) if k <= C)
    kw = dict(axis=axis, top_k=top_k, bins=16, per_sample=True, grad=True)
    st = ev(backend, x, y, confusion=confusion, **kw)
    assert (st.confusion is None) == (confusion is False)
    ref = R.ref_evaluate(xr, y, **kw)
    check_stats(st, ref, dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("opts", ["weight", "smooth", "w+s+i0", "uint8_255"])
def test_evaluate_options(backend, dtype, opts):
    shape = (4, 6, 7, 5)
    ii = 0 if opts == "w+s+i0" else (255 if opts == "uint8_255" else -100)
    x64, y = make_case(shape, 1, seed=101, ignore_index=ii, frac_ignored=0.2,
                       label_dtype=np.uint8 if opts == "uint8_255" else np.int64)
    x, xr = cast_logits(x64, dtype)
    kw = dict(ignore_index=ii, bins=10, top_k=(1, 3), per_sample=True, grad=True)
    if "w" in opts:
        kw["weight"] = np.linspace(0.2, 2.5, 6)
    if "s" in opts:
        kw["label_smoothing"] = 0.2
    check_stats(ev(backend, x, y, **kw), R.ref_evaluate(xr, y, **kw), dtype)


@pytest.mark.parametrize("bins", [1, 2, 3, 7, 20, 100])
def test_evaluate_bins(backend, bins):
    x, y = make_case((400, 4), 1, seed=102, scale=2.0)
    check_stats(ev(backend, x, y, bins=bins), R.ref_evaluate(x, y, bins=bins), np.float64)


def test_evaluate_soft_targets(backend):
    x, _ = make_case((30, 5), 1, seed=103)
    t = make_soft((30, 5), 1, seed=103)
    st = ev(backend, x, t, label_smoothing=0.1)
    ref = R.ref_evaluate(x, t, label_smoothing=0.1)
    # loss: soft semantics (mean over all elements); true class = argmax of the target
    check_stats(st, ref, np.float64)


def test_evaluate_vs_sklearn(backend):
    r = np.random.default_rng(104)
    C = 7
    x = r.normal(size=(5, C, 20, 20)) * 2
    x[:, 6] -= 50  # class 6 never predicted
    y = r.integers(0, 5, size=(5, 20, 20))  # classes 5, 6 absent from the target
    y[0, 0, :3] = 6
    y[r.random(y.shape) < 0.1] = -100
    st = ev(backend, x, y, top_k=(1, 3))
    valid = y != -100
    yt = y[valid]
    pred = np.argmax(x, axis=1)[valid]
    np.testing.assert_array_equal(to_numpy(st.confusion),
                                  skm.confusion_matrix(yt, pred, labels=np.arange(C)))
    assert st.correct[1] == int(np.sum(yt == pred))
    assert st.accuracy == pytest.approx(skm.accuracy_score(yt, pred), rel=1e-15)
    sc = np.moveaxis(x, 1, -1)[valid]
    assert st.correct[3] == round(skm.top_k_accuracy_score(yt, sc, k=3, labels=np.arange(C))
                                  * yt.size)
    np.testing.assert_array_equal(to_numpy(st.class_count), np.bincount(yt, minlength=C))
    assert st.count == valid.sum() and st.ignored == (~valid).sum()


# ------------------------------------------------------------------------------------------------
# .loss / .grad agree bit for bit with cross_entropy / cross_entropy_grad
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", [((64, 5), 1), ((3, 7, 8, 9), 1), ((2, 4, 5, 6), -1),
                                  ((7, 1000), 1), ((0, 4), 1)], ids=shape_id)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("opts", ["plain", "w+s+i", "soft"])
def test_loss_and_grad_bitwise_equal_cross_entropy(backend, case, dtype, opts):
    shape, axis = case
    C = num_classes(shape, axis)
    x64, y = make_case(shape, axis, seed=105, ignore_index=1)
    x, xr = cast_logits(x64, dtype)
    kw = dict(axis=axis)
    if opts == "w+s+i":
        kw.update(weight=np.linspace(0.5, 1.5, C), label_smoothing=0.1, ignore_index=1)
    if opts == "soft":
        y = make_soft(shape, axis, seed=105, dtype=dtype)
    st = ev(backend, x, y, grad=True, **kw)
    xb, yb = to_backend(x, backend), to_backend(y, backend)
    kwb = dict(kw)
    if "weight" in kwb:
        kwb["weight"] = to_backend(kwb["weight"], backend)
    loss = ld.cross_entropy(xb, yb, **kwb)
    loss2, g = ld.cross_entropy_grad(xb, yb, **kwb)
    assert bits_equal(st.loss, loss), (st.loss, loss)
    assert bits_equal(st.loss, loss2), (st.loss, loss2)
    g, sg = to_numpy(g), to_numpy(st.grad)
    assert sg.dtype == g.dtype and sg.shape == g.shape
    assert g.tobytes() == sg.tobytes(), "evaluate(grad=True).grad != cross_entropy_grad()[1]"
    # and both are right
    ref_loss, ref_grad = R.ref_cross_entropy(xr, y if opts != "soft" else y.astype(float), **kw)
    if math.isnan(ref_loss):
        assert math.isnan(st.loss)
    else:
        assert st.loss == pytest.approx(ref_loss, rel=1e-6 if dtype != np.float64 else 1e-12)
    assert_grad_close(sg, ref_grad, dtype)


def test_accuracy_property_matches_accuracy(backend):
    x, y = make_case((5, 6, 9, 9), 1, seed=106, ignore_index=3)
    st = ev(backend, x, y, ignore_index=3)
    assert st.accuracy == pytest.approx(R.ref_accuracy(x, y, ignore_index=3), rel=1e-15)
    assert st.accuracy == pytest.approx(to_numpy(
        ld.accuracy(to_backend(x, backend), to_backend(y, backend), ignore_index=3)), rel=1e-15)


def test_grad_out_and_default_none(backend):
    x, y = make_case((4, 5, 6), 1, seed=107)
    assert ev(backend, x, y).grad is None
    out = to_backend(np.zeros_like(x), backend)
    st = ld.evaluate(to_backend(x, backend), to_backend(y, backend), grad=True, out=out)
    assert_grad_close(to_numpy(out), R.ref_cross_entropy(x, y)[1], np.float64)
    if backend == "cpu":
        assert np.shares_memory(st.grad, out)


def test_get_gives_host_statistics(backend):
    """BatchStats.get(): a GPU BatchStats (CuPy fields, 0-d scalars) becomes a host one with the
    same numbers, Python ints and floats and NumPy arrays; a CPU BatchStats is returned as is."""
    x, y = make_case((3, 6, 5, 7), 1, seed=119, ignore_index=2)
    st = ld.evaluate(to_backend(x, backend), to_backend(y, backend), ignore_index=2,
                     top_k=(1, 3), per_sample=True, grad=True)
    h = st.get()
    if backend == "cpu":
        assert h is st
    assert type(h) is ld.BatchStats
    for f in dataclasses.fields(h):
        v, dv = getattr(h, f.name), getattr(st, f.name)
        if f.name == "grad":
            assert v is dv  # stays where it was computed
        elif f.name == "correct":
            assert v == {k: int(to_numpy(c)) for k, c in dv.items()}
            assert all(type(c) is int for c in v.values())
        elif f.name in ("count", "ignored", "nonfinite", "nonfinite_rows", "below_inv_e",
                        "elements", "num_classes", "bins"):
            assert type(v) is int and v == to_numpy(dv), f.name
        elif f.name in ("loss_sum", "weight_sum", "nll_sum", "smooth_sum", "true_prob_sum",
                        "entropy_sum", "label_smoothing"):
            assert type(v) is float and bits_equal(v, to_numpy(dv)), f.name
        elif isinstance(v, np.ndarray):
            np.testing.assert_array_equal(v, to_numpy(dv), err_msg=f.name)
    assert bits_equal(h.loss, to_numpy(st.loss)) and bits_equal(h.accuracy, to_numpy(st.accuracy))
    ref = R.ref_evaluate(x, y, ignore_index=2, top_k=(1, 3), per_sample=True)
    check_stats(h, ref, np.float64, check_grad=False)


def test_batchstats_is_dataclass_with_numpy_arrays(backend):
    x, y = make_case((4, 5, 6), 1, seed=108)
    st = ev(backend, x, y, per_sample=True, grad=True)
    assert dataclasses.is_dataclass(st)
    names = {f.name for f in dataclasses.fields(st)}
    required = {"num_classes", "bins", "loss_sum", "weight_sum", "count", "ignored", "nonfinite",
                "nonfinite_rows", "correct", "confusion", "class_loss_sum", "class_count",
                "true_prob_hist", "conf_hist", "conf_correct", "conf_sum", "margin_hist",
                "true_prob_sum", "below_inv_e", "entropy_sum", "sample_loss_sum", "sample_count",
                "sample_correct", "sample_intersection", "sample_true", "sample_pred", "grad"}
    assert required <= names, required - names
    for k in ("confusion", "class_loss_sum", "true_prob_hist", "sample_intersection"):
        assert isinstance(getattr(st, k), np.ndarray), k
    # the gradient is an array of the logits' library (get() leaves a GPU gradient on the GPU)
    assert type(st.grad) is type(to_backend(x, backend)), type(st.grad)
    assert st.sample_intersection.shape == (4, 5)


# ------------------------------------------------------------------------------------------------
# non-finite rows, ignored, adversarial
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_evaluate_nonfinite_rows(backend, dtype):
    """NaN / +inf rows: loss NaN, counted, correct by the top-k rule unless they hold a NaN,
    left out of confusion, histograms, per-class stats and entropy; nonfinite counts VALUES."""
    x64, y = make_case((40, 5), 1, seed=109, frac_ignored=0)
    x64[3, 1] = np.nan
    x64[7, [0, 2]] = np.inf  # two non-finite values in one row
    x64[11, :] = np.nan  # five
    x64[12, y[12]] = np.inf  # +inf at the target: still a non-finite row
    x, xr = cast_logits(x64, dtype)
    st = ev(backend, x, y, per_sample=True, top_k=(1, 2))
    ref = R.ref_evaluate(xr, y, per_sample=True, top_k=(1, 2))
    assert ref["nonfinite"] == 9 and ref["nonfinite_rows"] == 4
    check_stats(st, ref, dtype)
    assert math.isnan(st.loss)
    assert st.count == 40 and st.confusion.sum() == 36
    assert st.accuracy == pytest.approx(ref["correct"][1] / 40, rel=1e-15)
    # same rule as accuracy(): the +inf-at-target row 12 is correct, the NaN rows are not
    assert st.accuracy == pytest.approx(R.ref_accuracy(xr, y), rel=1e-15)
    assert st.correct[2] == round(R.ref_accuracy(xr, y, top_k=2) * 40)
    # per-sample sums are the per-sample split of the totals
    assert st.sample_count.sum() == st.count
    assert st.sample_correct.sum() == st.correct[1], (st.sample_correct, st.correct)


def test_evaluate_neg_inf_mask_loss_matches_cross_entropy(backend):
    """-inf at a non-target class is a mask for the loss (contract); evaluate().loss must still
    equal cross_entropy() bit for bit."""
    x, y = make_case((20, 4), 1, seed=110, frac_ignored=0)
    x[np.arange(20), (y + 1) % 4] = -np.inf
    st = ev(backend, x, y)
    loss = to_numpy(ld.cross_entropy(to_backend(x, backend), to_backend(y, backend)))
    assert math.isfinite(loss)
    assert loss == pytest.approx(R.ref_cross_entropy(x, y)[0], rel=1e-12)
    assert bits_equal(st.loss, loss)
    # masked rows are counted and judged by the top-k rule, like accuracy()
    assert st.count == 20
    assert st.accuracy == pytest.approx(R.ref_accuracy(x, y), rel=1e-15)
    check_stats(st, R.ref_evaluate(x, y), np.float64)


def test_evaluate_all_ignored_and_empty(backend):
    x, _ = make_case((6, 3, 4), 1, seed=111)
    y = np.full((6, 4), -100)
    for xx, yy in ((x, y), (np.zeros((0, 3, 4)), np.zeros((0, 4), np.int64))):
        st = ev(backend, xx, yy, per_sample=True, grad=True)
        ref = R.ref_evaluate(xx, yy, per_sample=True, grad=True)
        check_stats(st, ref, np.float64)
        assert math.isnan(st.loss) and math.isnan(st.accuracy)
        assert st.count == 0 and st.confusion.sum() == 0
        assert np.all(to_numpy(st.grad) == 0)


def test_evaluate_one_class_and_single_pixel(backend):
    x, _ = make_case((10, 1), 1, seed=112)
    y = np.zeros(10, np.int64)
    check_stats(ev(backend, x, y, bins=5), R.ref_evaluate(x, y, bins=5), np.float64,
                check_grad=False)
    x2, y2 = make_case((1, 4, 1, 1), 1, seed=113, frac_ignored=0)
    check_stats(ev(backend, x2, y2, per_sample=True),
                R.ref_evaluate(x2, y2, per_sample=True), np.float64)


def test_evaluate_extreme_logits(backend):
    r = np.random.default_rng(114)
    y = r.integers(0, 5, 50)
    for x in (r.normal(size=(50, 5)) * 1e4, 1e4 + r.normal(size=(50, 5)), np.zeros((50, 5))):
        for dtype in (np.float32, np.float64):
            xi, xr = cast_logits(x, dtype)
            check_stats(ev(backend, xi, y), R.ref_evaluate(xr, y), dtype)


def test_evaluate_large_float32(backend):
    x, y = make_case((8, 21, 64, 64), 1, seed=115, label_dtype=np.uint8, ignore_index=255)
    x32 = x.astype(np.float32)
    kw = dict(ignore_index=255, top_k=(1, 5), per_sample=True)
    check_stats(ev(backend, x32, y, **kw), R.ref_evaluate(x32.astype(np.float64), y, **kw),
                np.float32)


# ------------------------------------------------------------------------------------------------
# evaluate_binary
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(200,), (4, 1, 16, 16), (6, 7)], ids=str)
def test_evaluate_binary(backend, dtype, shape):
    r = np.random.default_rng(116)
    x, xr = cast_logits(r.normal(size=shape) * 3, dtype)
    for y in ((r.random(shape) < 0.3).astype(np.float32), r.random(shape)):
        yr = y.astype(np.float64)
        st = ld.evaluate_binary(to_backend(x, backend), to_backend(y, backend), bins=10,
                                grad=True).get()
        ref = R.ref_evaluate_binary(xr, yr, bins=10, grad=True)
        check_stats(st, ref, dtype)
        assert st.loss == pytest.approx(ref["loss"], rel=1e-6 if dtype != np.float64 else 1e-12)
        assert st.accuracy == pytest.approx(R.ref_binary_accuracy(xr, yr), rel=1e-15)
        lt = (yr >= 0.5).astype(int).ravel()
        np.testing.assert_array_equal(to_numpy(st.confusion), skm.confusion_matrix(
            lt, (xr > 0).astype(int).ravel(), labels=[0, 1]))


def test_evaluate_binary_pos_weight_threshold(backend):
    r = np.random.default_rng(117)
    x = r.normal(size=(3, 4, 5)) * 2
    y = (r.random((3, 4, 5)) < 0.5).astype(np.float64)
    pw = np.array([0.5, 1.0, 2.0, 4.0, 8.0])
    for thr in (0.0, 0.7, -1.3):
        st = ld.evaluate_binary(to_backend(x, backend), to_backend(y, backend),
                                pos_weight=to_backend(pw, backend), threshold=thr,
                                grad=True).get()
        ref_loss, ref_grad = R.ref_binary_cross_entropy(x, y, pos_weight=pw)
        assert st.loss == pytest.approx(ref_loss, rel=1e-12)
        assert_grad_close(st.grad, ref_grad, np.float64)
        assert st.accuracy == pytest.approx(R.ref_binary_accuracy(x, y, threshold=thr), rel=1e-15)
        np.testing.assert_array_equal(to_numpy(st.confusion), skm.confusion_matrix(
            y.ravel().astype(int), (x > thr).ravel().astype(int), labels=[0, 1]))
        assert bits_equal(st.loss, ld.binary_cross_entropy(x, y, pos_weight=pw))


def test_evaluate_binary_nonfinite(backend):
    x = np.array([0.5, np.nan, -2.0, np.inf, 1.0])
    y = np.array([1.0, 1.0, 0.0, 0.0, 0.0])
    st = ld.evaluate_binary(to_backend(x, backend), to_backend(y, backend)).get()
    assert st.nonfinite == 2 and st.count == 5
    assert math.isnan(st.loss)
    assert st.confusion.sum() == 3
    np.testing.assert_array_equal(st.confusion, [[1, 1], [0, 1]])


def test_target_shape_for_evaluate_per_sample_uses_first_axis(backend):
    shape = (3, 4, 5, 2)  # channels-last: N=3, C=2
    x, y = make_case(shape, -1, seed=118)
    st = ev(backend, x, y, axis=-1, per_sample=True)
    ref = R.ref_evaluate(x, y, axis=-1, per_sample=True)
    assert st.sample_count.shape == (3,) and st.sample_true.shape == (3, 2)
    check_stats(st, ref, np.float64)
    assert y.shape == target_shape(shape, -1)


@pytest.mark.parametrize("bins", [20, 23])  # joint true x margin histogram (<= 22 bins) or not
def test_evaluate_many_classes_shared_confusion(bins):
    """C = 2100 with 2 threads: the confusion no longer fits per-thread copies, so the kernel
    counts into one shared matrix (integer atomics) and class counts separately."""
    x, y = make_case((300, 2100), 1, seed=107, scale=3.0)
    old = ld.get_num_threads()
    ld.set_num_threads(2)
    try:
        st = ld.evaluate(x, y, bins=bins, per_sample=False)
    finally:
        ld.set_num_threads(old)
    check_stats(st, R.ref_evaluate(x, y, bins=bins), np.float64)


LONG_CASES = [((2, 5, 96, 96), 1), ((3, 48, 48, 7), -1), ((30000, 3), 1)]


@pytest.mark.parametrize("case", LONG_CASES, ids=shape_id)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("bins", [20, 30])  # joint true x margin histogram, or not
@pytest.mark.parametrize("per_sample", [False, True])
def test_evaluate_long_runs(backend, case, dtype, bins, per_sample):
    """Segments of thousands of elements, a third of them confident (runs of equal bins): the
    CPU kernel applies its pending statistics in several runs per segment and, for float
    logits, splits the packed confidence counters after each run; per_sample=True takes the
    direct path instead. Both must give the reference's statistics."""
    shape, axis = case
    x64, y = make_case(shape, axis, seed=108, scale=3.0, ignore_index=255, frac_ignored=0.1,
                       label_dtype=np.uint8)
    ax = axis % x64.ndim
    C = shape[ax]
    xm = np.moveaxis(x64, ax, -1)  # a view: edits land in x64
    conf = np.random.default_rng(109).random(y.shape) < 0.35
    yc = np.where(y == 255, 0, y).astype(np.int64)
    boost = np.where(conf, 25.0, 0.0)[..., None]
    np.put_along_axis(xm, yc[..., None], np.take_along_axis(xm, yc[..., None], -1) + boost, -1)
    x, xr = cast_logits(x64, dtype)
    kw = dict(axis=axis, ignore_index=255, bins=bins, top_k=(1, 2), per_sample=per_sample)
    st = ev(backend, x, y, **kw)
    check_stats(st, R.ref_evaluate(xr, y, **kw), dtype)
    assert st.num_classes == C


@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=lambda d: np.dtype(d).name)
def test_evaluate_conf_sum_exact_cpu(dtype):
    """All logits equal: every confidence is the float32 value 0.2f (half and single precision
    logits are computed in float32), so the confidence sum is exactly count * 0.2f: the CPU
    kernel sums confidences in fixed point (exact), in counters split after each run of
    elements. (The GPU sums float32 partials: close, not exact; the reference tests cover it.)"""
    x = np.zeros((1, 5, 128, 130), dtype=dtype)
    y = np.zeros((1, 128, 130), dtype=np.uint8)
    st = ld.evaluate(x, y, bins=20)
    n = y.size
    b = int(0.2 * 20)  # 0.2 lands in bin 4 of 20
    one = float(np.float32(1) / np.float32(5))
    assert int(to_numpy(st.conf_hist)[b]) == n and int(to_numpy(st.conf_hist).sum()) == n
    assert int(to_numpy(st.conf_correct)[b]) == n  # ties: the first maximum (class 0) wins
    assert float(to_numpy(st.conf_sum)[b]) == n * one
    assert float(to_numpy(st.conf_sum).sum()) == n * one


# -- the confusion matrix is opt-in above 1024 classes -------------------------------------------
@pytest.mark.parametrize("C, cm", [(1024, True), (1025, False)])
def test_confusion_default_by_class_count(C, cm):
    x, y = make_case((40, C), 1, seed=300, scale=3.0)
    st = ld.evaluate(x.astype(np.float32), y)
    assert (st.confusion is not None) == cm
    assert st.class_pred.shape == st.class_tp.shape == (C,)


@pytest.mark.parametrize("shape, axis", [((300, 3000), 1), ((2, 2500, 3, 4), 1),
                                         ((37, 5000), 1), ((3, 5, 6, 7), 1)])
@pytest.mark.parametrize("confusion", [True, False])
def test_confusion_forced_and_per_class_counts(shape, axis, confusion):
    # C > 2048 takes the wide-row path; with the confusion the large-C atomic path, without it
    # the per-class counts only; small C without it: the counts path instead of per-thread copies
    x64, y = make_case(shape, axis, seed=301, scale=3.0, ignore_index=-100, frac_ignored=0.1)
    x64.reshape(-1)[::97] = np.nan  # rows left out of the statistics
    x = x64.astype(np.float32)
    st = ld.evaluate(x, y, axis=axis, confusion=confusion, bins=8)
    ref = R.ref_evaluate(x.astype(np.float64), y, axis=axis, bins=8)
    check_stats(st, ref, np.float32, check_grad=False)
    assert (st.confusion is not None) == confusion


def test_confusion_bad_value():
    x, y = make_case((4, 3), 1, seed=302)
    for bad in ("yes", 1, np.array([True])):
        with pytest.raises(TypeError, match="confusion"):
            ld.evaluate(x, y, confusion=bad)
    with pytest.raises(TypeError, match="confusion"):
        ld.Metrics(3, confusion="no")


@pytest.mark.parametrize("imagewise", [False, True])
def test_metrics_without_confusion_agree(imagewise):
    kw = dict(ignore_index=255, bins=10, imagewise=imagewise)
    a, b = ld.Metrics(6, confusion=True, **kw), ld.Metrics(6, confusion=False, **kw)
    for seed in range(3):
        x, y = make_case((2, 6, 9, 11), 1, seed=310 + seed, ignore_index=255, frac_ignored=0.1)
        a.update(x.astype(np.float32), y)
        b.update(x.astype(np.float32), y)
    ra, rb = a.compute(), b.compute()
    assert rb["confusion"] is None and ra["confusion"].sum() == ra["count"]
    assert "confusion" not in b.state_dict()
    for k, v in ra.items():
        if k in ("confusion", "reliability", "top_k_accuracy"):
            continue
        np.testing.assert_array_equal(np.asarray(rb[k]), np.asarray(v), err_msg=k)
    with pytest.raises(ValueError, match="configuration"):
        a.merge(b)


def test_metrics_large_vocabulary_state_is_linear():
    m = ld.Metrics(32000)
    st = m.state_dict()
    assert "confusion" not in st
    assert sum(v.nbytes for v in st.values()) < 2_000_000  # O(C + bins), not 8 GB
    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, 32000)).astype(np.float32)
    y = rng.integers(0, 32000, 64)
    m.update(x, y)
    r = m.compute()
    p = x.argmax(axis=1)
    assert r["accuracy"] == np.mean(p == y)
    np.testing.assert_array_equal(r["pred_freq"] * 64, np.bincount(p, minlength=32000))


def test_metrics_loads_a_state_saved_with_only_the_confusion():
    m = ld.Metrics(4)
    x, y = make_case((50, 4), 1, seed=320)
    m.update(x, y)
    old = {k: v for k, v in m.state_dict().items() if k not in ("class_pred", "class_tp")}
    m2 = ld.Metrics(4)
    m2.load_state_dict(old)
    np.testing.assert_array_equal(m2.compute()["iou"], m.compute()["iou"])
