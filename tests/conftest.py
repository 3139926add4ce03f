"""Shared fixtures and helpers for the lossdiag test suite.

* `backend` fixture: "cpu" (NumPy) and "gpu" (CuPy, skipped with a visible reason when CuPy or a
  CUDA device is missing).  Test bodies convert their NumPy inputs with `to_backend(a, backend)` and
  results back with `to_numpy(x)`, so the same body runs on both backends.
* Per-dtype tolerances live here (TOL) together with the comparison helpers.
* `@pytest.mark.slow` tests are skipped unless `-m slow` is given or LOSSDIAG_SLOW=1.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # `import reference` from any rootdir

# ------------------------------------------------------------------------------------------------
# backends
# ------------------------------------------------------------------------------------------------
BACKENDS = ["cpu", "gpu"]


def cupy_or_none():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        return cupy
    except Exception:  # ImportError, CUDARuntimeError, ...
        return None


HAVE_CUDA = cupy_or_none() is not None


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "gpu":
        if not HAVE_CUDA:
            pytest.skip("CuPy/CUDA device not available")
    return request.param


def to_backend(a, backend):
    """NumPy array (or None / scalar) -> array on the backend."""
    if a is None or backend == "cpu" or np.isscalar(a):
        return a
    cp = cupy_or_none()
    if cp is None:
        pytest.skip("CuPy/CUDA device not available")
    return cp.asarray(a)


def to_numpy(x):
    """Backend array / Python scalar -> NumPy array or Python scalar (scalars stay scalars: a 0-d
    GPU array, which is what the GPU returns for a reduction, becomes a Python float or int)."""
    if x is None:
        return None
    if isinstance(x, (float, int, np.floating, np.integer)):
        return x
    if hasattr(x, "get") and not isinstance(x, (np.ndarray, dict)):
        a = x.get()
    elif hasattr(x, "__cuda_array_interface__"):
        import cupy

        a = cupy.asnumpy(x)
    else:
        return np.asarray(x)
    return a.item() if isinstance(a, np.ndarray) and a.ndim == 0 else a


# ------------------------------------------------------------------------------------------------
# dtypes and tolerances
# ------------------------------------------------------------------------------------------------
FLOAT_DTYPES = [np.float16, np.float32, np.float64]
LABEL_DTYPES = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]

# reduced: relative tolerance on a "mean"/"sum" loss; elem_*: per-element ("none") loss;
# grad_*: gradient (atol is relative to max |reference gradient|).
# float16 logits are computed in float32 (loss returned in float32, grad returned in float16), so
# the reference is evaluated on the fp16-rounded values and the loss tolerances are float32 ones.
TOL = {
    np.dtype(np.float64): dict(reduced=1e-12, elem_rtol=1e-12, elem_atol=1e-13,
                               grad_rtol=1e-11, grad_atol=1e-13),
    np.dtype(np.float32): dict(reduced=1e-6, elem_rtol=1e-5, elem_atol=1e-6,
                               grad_rtol=1e-5, grad_atol=1e-6),
    np.dtype(np.float16): dict(reduced=1e-6, elem_rtol=1e-5, elem_atol=1e-6,
                               grad_rtol=2e-3, grad_atol=2e-3),
}


def tol(dtype):
    return TOL[np.dtype(dtype)]


def loss_dtype(logits_dtype):
    """Contract: reduction='none' returns float32 for f16/f32 logits, float64 for f64."""
    return np.dtype(np.float64) if np.dtype(logits_dtype) == np.float64 else np.dtype(np.float32)


def cast_logits(x64, dtype):
    """Cast float64 test data to `dtype`; return (input array, float64 copy of the ROUNDED values)
    so the reference sees exactly what the kernel sees."""
    x = np.asarray(x64).astype(dtype)
    return x, x.astype(np.float64)


def reduced_value(got):
    """The contract of a reduced result ("mean"/"sum" loss, accuracy): a Python float on the CPU,
    a 0-d float64 CuPy array on the GPU (no host synchronisation). Returns it as a Python float."""
    if hasattr(got, "__cuda_array_interface__"):
        assert got.ndim == 0 and got.dtype == np.float64, (
            f"a GPU reduction must be a 0-d float64 array, got shape {got.shape} {got.dtype}")
        return float(got.get())
    assert type(got) is float, f"reduced result must be a Python float, got {type(got)}"
    return got


def assert_reduced_close(got, ref, dtype, rtol=None, atol=0.0):
    """A "mean"/"sum" loss (see reduced_value), within the per-dtype relative tolerance (NaN ==
    NaN). `got` may also be an already converted Python float."""
    got = reduced_value(got) if hasattr(got, "__cuda_array_interface__") else to_numpy(got)
    assert isinstance(got, float), f"reduced loss must be a Python float, got {type(got)}"
    r = tol(dtype)["reduced"] if rtol is None else rtol
    if np.isnan(ref):
        assert np.isnan(got), f"expected NaN, got {got}"
        return
    if np.isinf(ref):
        assert got == ref, f"expected {ref}, got {got}"
        return
    assert abs(got - ref) <= r * abs(ref) + atol, (
        f"{got!r} vs reference {ref!r}: rel err {abs(got - ref) / max(abs(ref), 1e-300):.3g} "
        f"> {r:g} ({np.dtype(dtype).name})")


def assert_elem_close(got, ref, dtype, rtol=None, atol=None, check_dtype=True):
    """Per-element loss ("none"): array of loss_dtype(dtype) shaped like ref."""
    got = to_numpy(got)
    assert isinstance(got, np.ndarray), type(got)
    assert got.shape == np.shape(ref), (got.shape, np.shape(ref))
    if check_dtype:
        assert got.dtype == loss_dtype(dtype), (got.dtype, loss_dtype(dtype))
    t = tol(dtype)
    np.testing.assert_allclose(got.astype(np.float64), ref,
                               rtol=t["elem_rtol"] if rtol is None else rtol,
                               atol=t["elem_atol"] if atol is None else atol, equal_nan=True)


def assert_grad_close(got, ref, dtype, rtol=None, atol=None, unit=0.0):
    """Gradient: array of the logits dtype shaped like the logits.  The absolute tolerance is
    relative to max(max |reference gradient|, unit), unit = the natural gradient scale
    (reference.ce_scales): p_y - 1 of a saturated row is only accurate to ~ulp(1) * unit."""
    got = to_numpy(got)
    assert isinstance(got, np.ndarray), type(got)
    assert got.shape == np.shape(ref), (got.shape, np.shape(ref))
    assert got.dtype == np.dtype(dtype), (got.dtype, np.dtype(dtype))
    t = tol(dtype)
    finite = np.isfinite(ref)
    scale = float(np.max(np.abs(ref[finite]))) if finite.any() else 1.0
    scale = max(scale, float(unit))
    a = (t["grad_atol"] if atol is None else atol) * max(scale, 1e-30)
    if np.dtype(dtype) == np.float16:
        a += 1e-7  # fp16 subnormal spacing
    np.testing.assert_allclose(got.astype(np.float64), ref,
                               rtol=t["grad_rtol"] if rtol is None else rtol, atol=a,
                               equal_nan=True)


def assert_hist_close(got, values, bins, lo=0.0, hi=1.0, delta=0.0):
    """Histogram check tolerant to values within `delta` of a bin edge (kernel and reference
    compute probabilities with different roundings). Bin of v: min(floor((v-lo)/(hi-lo)*bins),
    bins-1). For every cut k, #kernel counts below edge k must lie between #{v+delta < edge}
    and #{v-delta < edge}; totals must match exactly."""
    got = np.asarray(to_numpy(got))
    assert got.shape == (bins,), (got.shape, bins)
    assert got.dtype == np.int64, got.dtype
    v = np.asarray(values, dtype=np.float64)
    assert int(got.sum()) == v.size, (int(got.sum()), v.size)
    cum = np.cumsum(got)
    for k in range(1, bins):
        edge = lo + (hi - lo) * k / bins
        lo_n = int(np.sum(v + delta < edge))
        hi_n = int(np.sum(v - delta < edge))
        assert lo_n <= cum[k - 1] <= hi_n, (
            f"histogram cut {k}/{bins}: kernel {cum[k - 1]} not in [{lo_n}, {hi_n}]; got {got}")


# ------------------------------------------------------------------------------------------------
# misc fixtures / markers
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def restore_threads():
    import lossdiag as ld

    n = ld.get_num_threads()
    yield n
    ld.set_num_threads(n)


def pytest_collection_modifyitems(config, items):
    markexpr = config.getoption("-m", default="") or ""
    if "slow" in markexpr or os.environ.get("LOSSDIAG_SLOW", "") not in ("", "0"):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow or LOSSDIAG_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# ------------------------------------------------------------------------------------------------
# data generation and kernel calls shared by the test files
# ------------------------------------------------------------------------------------------------
# (logits shape, class axis) covering C = 1, 2, 3, 21, 150, 1000, (N,C), (N,C,H,W), (N,C,D,H,W),
# channels-last, an empty batch and a single pixel.
SHAPES = [
    ((8, 1), 1), ((8, 2), 1), ((9, 3), 1), ((8, 21), 1), ((6, 150), 1), ((4, 1000), 1),
    ((2, 3, 4, 5), 1), ((2, 21, 3, 4), 1), ((2, 3, 2, 3, 4), 1),
    ((2, 4, 5, 3), -1), ((5, 21), -1), ((2, 2, 3, 4, 6), -1),
    ((0, 5), 1), ((0, 3, 4, 4), 1), ((0, 4, 4, 3), -1), ((1, 5, 1, 1), 1), ((1, 7), 1),
]


def shape_id(case):
    shape, axis = case
    return "x".join(map(str, shape)) + ("_last" if axis == -1 and len(shape) > 2 else "")


def target_shape(shape, axis):
    ax = axis % len(shape)
    return tuple(s for i, s in enumerate(shape) if i != ax)


def num_classes(shape, axis):
    return shape[axis % len(shape)]


def make_case(shape, axis=1, seed=0, scale=3.0, label_dtype=np.int64, ignore_index=-100,
              frac_ignored=0.15):
    """float64 logits and integer labels (some = ignore_index when representable)."""
    r = np.random.default_rng(seed)
    x = r.normal(size=shape) * scale
    C = num_classes(shape, axis)
    ts = target_shape(shape, axis)
    y = r.integers(0, C, size=ts).astype(label_dtype)
    info = np.iinfo(label_dtype)
    if frac_ignored and info.min <= ignore_index <= info.max:
        y = np.where(r.random(ts) < frac_ignored, label_dtype(ignore_index), y).astype(label_dtype)
    return x, y


def make_soft(shape, axis=1, seed=0, dtype=np.float64):
    """Random class-probability targets with exactly the logits shape."""
    import reference as R

    r = np.random.default_rng(seed + 1000)
    ax = axis % len(shape)
    z = r.normal(size=shape) * 2
    p = np.moveaxis(R.softmax(np.moveaxis(z, ax, -1)), -1, ax)
    return p.astype(dtype)


def kw_to_backend(kw, backend):
    kw = dict(kw)
    for k in ("weight", "pos_weight", "out"):
        if k in kw and isinstance(kw[k], np.ndarray):
            kw[k] = to_backend(kw[k], backend)
    return kw


def assert_binned_sum_close(got, values, weights, bins, lo=0.0, hi=1.0, delta=0.0, rtol=1e-12,
                            atol=1e-12):
    """Per-bin sums of non-negative `weights` (e.g. conf_sum), tolerant to values within `delta`
    of a bin edge: each cumulative sum must lie within the sums of the surely / possibly
    lower-binned weights (with rtol/atol slack), and the total must match."""
    got = np.asarray(to_numpy(got), dtype=np.float64)
    assert got.shape == (bins,), (got.shape, bins)
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    total = float(w.sum())
    assert abs(got.sum() - total) <= rtol * abs(total) + atol, (got.sum(), total)
    cum = np.cumsum(got)
    for k in range(1, bins):
        edge = lo + (hi - lo) * k / bins
        lo_s = float(w[v + delta < edge].sum())
        hi_s = float(w[v - delta < edge].sum())
        slack = rtol * max(abs(lo_s), abs(hi_s)) + atol
        assert lo_s - slack <= cum[k - 1] <= hi_s + slack, (k, cum[k - 1], lo_s, hi_s)


def assert_count_below(got, values, threshold, delta):
    """An integer count of values < threshold, tolerant to values within delta of it."""
    v = np.asarray(values, dtype=np.float64)
    lo_n, hi_n = int(np.sum(v + delta < threshold)), int(np.sum(v - delta < threshold))
    assert lo_n <= int(got) <= hi_n, (got, lo_n, hi_n)


# delta for bin-edge tolerant comparisons of probabilities computed by the kernel
HIST_DELTA = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5,
              np.dtype(np.float16): 1e-5}


def _close(got, ref, rtol, atol=0.0, what=""):
    got = float(got)
    ref = float(ref)
    if np.isnan(ref):
        assert np.isnan(got), f"{what}: expected NaN, got {got}"
    elif np.isinf(ref):
        assert got == ref, f"{what}: expected {ref}, got {got}"
    else:
        assert abs(got - ref) <= rtol * abs(ref) + atol, f"{what}: {got!r} vs reference {ref!r}"


def check_stats(st, ref, dtype, *, check_grad=True):
    """Compare a BatchStats (a GPU one is copied to the host first) with a
    reference.ref_evaluate / ref_evaluate_binary dict."""
    st = st.get()
    dtype = np.dtype(dtype)
    t = tol(dtype)
    d = HIST_DELTA[dtype]
    sums_rtol = 1e-12 if dtype == np.float64 else 1e-5
    # absolute slack of summed losses: a few ulps of 1 per counted element (times weights)
    abs_k = 1e-15 if dtype == np.float64 else 4e-7
    loss_atol = abs_k * ref.get("_abs_scale", 0.0)
    C, bins = ref["num_classes"], ref["bins"]
    assert st.num_classes == C and st.bins == bins
    for k in ("count", "ignored", "nonfinite", "nonfinite_rows"):
        assert int(getattr(st, k)) == ref[k], (k, getattr(st, k), ref[k])
    assert {int(k): int(v) for k, v in st.correct.items()} == ref["correct"]
    cm = np.asarray(ref["confusion"])
    want = {"class_count": ref["class_count"], "class_pred": cm.sum(axis=0),
            "class_tp": np.diagonal(cm)}
    if st.confusion is not None:  # evaluate(confusion=False) leaves it out
        want["confusion"] = cm
    for k, v in want.items():
        a = np.asarray(getattr(st, k))
        assert a.dtype == np.int64, (k, a.dtype)
        np.testing.assert_array_equal(a, v, err_msg=k)
    _close(st.loss_sum, ref["loss_sum"], t["reduced"], loss_atol, what="loss_sum")
    _close(st.weight_sum, ref["weight_sum"], 1e-12 if dtype == np.float64 else 1e-6,
           what="weight_sum")
    cls = np.asarray(st.class_loss_sum)
    assert cls.shape == (C,) and cls.dtype == np.float64
    np.testing.assert_allclose(cls, ref["class_loss_sum"], rtol=sums_rtol,
                               atol=loss_atol + 1e-300, err_msg="class_loss_sum")
    assert_hist_close(st.true_prob_hist, ref["_p_true"], bins, delta=d)
    assert_hist_close(st.conf_hist, ref["_conf"], bins, delta=d)
    assert_hist_close(st.conf_correct, ref["_conf"][ref["_top1"]], bins, delta=d)
    cs = np.asarray(st.conf_sum)
    assert cs.dtype == np.float64
    assert_binned_sum_close(cs, ref["_conf"], ref["_conf"], bins, delta=d, rtol=sums_rtol,
                            atol=1e-9 if dtype == np.float64 else 1e-4)
    assert_hist_close(st.margin_hist, ref["_margin"], bins, lo=-1.0, hi=1.0, delta=2 * d)
    _close(st.true_prob_sum, ref["true_prob_sum"], sums_rtol, 1e-12, "true_prob_sum")
    _close(st.entropy_sum, ref["entropy_sum"], sums_rtol, 1e-9 if dtype == np.float64 else 1e-4,
           "entropy_sum")
    assert_count_below(st.below_inv_e, ref["_p_true"], np.exp(-1.0), d)
    if "sample_count" in ref:
        np.testing.assert_allclose(np.asarray(st.sample_loss_sum, np.float64),
                                   ref["sample_loss_sum"], rtol=sums_rtol,
                                   atol=loss_atol + 1e-300, equal_nan=True)
        for k in ("sample_count", "sample_correct", "sample_intersection", "sample_true",
                  "sample_pred"):
            a = np.asarray(getattr(st, k))
            assert a.dtype == np.int64, (k, a.dtype)
            np.testing.assert_array_equal(a, ref[k], err_msg=k)
    if check_grad:
        if ref["grad"] is None:
            assert st.grad is None
        else:
            assert_grad_close(st.grad, ref["grad"], dtype, unit=ref.get("_grad_unit", 0.0))
