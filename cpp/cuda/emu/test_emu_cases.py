"""GPU code path (lossdiag.core.cuda + the real kernel source, host-emulated) against the CPU
backend.

Run through cpp/cuda/emu/run_emu_tests.py (which installs the emulated lossdiag._cuda and the
NumPy stand-in for CuPy); tests/test_gpu.py does that in every test run. Covers every kernel
variant (NCHW with the logits in registers / re-read, rows staged through shared memory, a warp per
row), float32 and float64 (float16 and bfloat16 share the float32 kernels), the options, the
statistics, determinism, the deferred errors and Metrics on the device.
"""

from __future__ import annotations

import math

import cupy as cp
import lossdiag as ld
import numpy as np
import pytest
from lossdiag.core import cuda as _gpu

assert getattr(cp, "__file__", "").endswith("fakecupy/cupy/__init__.py"), "run via run_emu_tests"

# (shape, axis): NCHW C<=32 (registers), rows C<=32 (staged), rows C>32 (warp per row),
# NCHW C>32 (re-read), several tiles for (N, C) rows
CASES = [((3, 5, 7, 9), 1), ((2, 6, 5, 21), -1), ((300, 7), 1), ((9, 40), 1), ((2, 37, 5, 4), 1),
         ((3, 4, 1), 1), ((2100, 3), 1)]


def data(shape, axis, seed, frac_ignored=0.1, scale=3.0):
    r = np.random.default_rng(seed)
    x = r.normal(size=shape) * scale
    C = shape[axis]
    ts = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    y = r.integers(0, C, size=ts)
    y = np.where(r.random(ts) < frac_ignored, -100, y)
    return x, y


def close(a, b, dtype, what=""):
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    a, b = float(a), float(b)
    if math.isnan(b):
        assert math.isnan(a), what
    else:
        assert abs(a - b) <= rtol * max(abs(b), 1e-30) + 1e-300, (what, a, b)


def arr_close(a, b, dtype, what=""):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    rtol = 1e-11 if dtype == np.float64 else 2e-5
    scale = float(np.nanmax(np.abs(b))) if b.size and np.isfinite(b).any() else 1.0
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale + 1e-12, equal_nan=True,
                               err_msg=what)


def stats_equal(g, c, dtype):
    for k in ("count", "ignored", "nonfinite", "nonfinite_rows", "below_inv_e"):
        assert int(getattr(g, k)) == int(getattr(c, k)), k
    assert {k: int(v) for k, v in g.correct.items()} == c.correct
    for k in ("confusion", "class_count"):
        np.testing.assert_array_equal(np.asarray(getattr(g, k)), getattr(c, k), err_msg=k)
    for k in ("true_prob_hist", "conf_hist", "conf_correct", "margin_hist"):
        gv, cv = np.asarray(getattr(g, k)), getattr(c, k)
        assert gv.sum() == cv.sum(), k
        assert np.abs(np.cumsum(gv) - np.cumsum(cv)).max() <= 1, (k, gv, cv)  # edge rounding
    for k in ("loss_sum", "weight_sum", "true_prob_sum", "entropy_sum"):
        close(getattr(g, k), getattr(c, k), dtype, k)
    arr_close(g.class_loss_sum, c.class_loss_sum, dtype, "class_loss_sum")
    close(np.asarray(g.conf_sum).sum(), c.conf_sum.sum(), dtype, "conf_sum")
    close(g.loss, c.loss, dtype, "loss")
    if c.sample_count is not None:
        for k in ("sample_count", "sample_correct", "sample_intersection", "sample_true",
                  "sample_pred"):
            np.testing.assert_array_equal(np.asarray(getattr(g, k)), getattr(c, k), err_msg=k)
        arr_close(g.sample_loss_sum, c.sample_loss_sum, dtype, "sample_loss_sum")


@pytest.mark.parametrize("case,dtype", [(c, np.float32) for c in CASES] +
                         [(c, np.float64) for c in CASES[:3]], ids=str)
def test_functions_match_cpu(case, dtype):
    shape, axis = case
    x64, y = data(shape, axis, seed=sum(shape))
    x = x64.astype(dtype)
    C = shape[axis]
    X, Y = cp.asarray(x), cp.asarray(y)
    w = np.linspace(0.5, 2.0, C)
    for kw in (dict(), dict(weight=w, label_smoothing=0.1), dict(reduction="sum"),
               dict(reduction="none", label_smoothing=0.2), dict(from_logits=False)):
        xin, Xin = (x, X)
        if not kw.get("from_logits", True):
            p = np.abs(x) + 0.01
            xin, Xin = p, cp.asarray(p)
        gkw = dict(kw)
        if "weight" in kw:
            gkw["weight"] = cp.asarray(kw["weight"])
        lc, gc = ld.cross_entropy_grad(xin, y, axis=axis, **kw)
        lg, gg = ld.cross_entropy_grad(Xin, Y, axis=axis, **gkw)
        if kw.get("reduction") == "none":
            arr_close(lg, lc, dtype, f"none loss {kw}")
        else:
            close(lg, lc, dtype, f"loss {kw}")
            close(ld.cross_entropy(Xin, Y, axis=axis, **gkw), lc, dtype, f"ce {kw}")
        arr_close(gg, gc, dtype, f"grad {kw}")
    for k in sorted({1, 2, min(5, C)}):
        assert float(ld.accuracy(X, Y, axis=axis, top_k=k)) == ld.accuracy(x, y, axis=axis,
                                                                          top_k=k)
    ks = tuple(sorted({1, min(3, C)}))
    sc = ld.evaluate(x, y, axis=axis, top_k=ks, bins=7, per_sample=True, grad=True)
    sg = ld.evaluate(X, Y, axis=axis, top_k=ks, bins=7, per_sample=True, grad=True)
    stats_equal(sg, sc, dtype)
    arr_close(sg.grad, sc.grad, dtype, "evaluate grad")


@pytest.mark.parametrize("case", CASES[:4], ids=str)
def test_soft_targets_and_nonfinite(case):
    shape, axis = case
    x, _ = data(shape, axis, seed=7)
    r = np.random.default_rng(8)
    t = r.random(shape)
    t /= t.sum(axis=axis, keepdims=True)
    for kw in (dict(), dict(label_smoothing=0.3)):
        lc, gc = ld.cross_entropy_grad(x, t, axis=axis, **kw)
        lg, gg = ld.cross_entropy_grad(cp.asarray(x), cp.asarray(t), axis=axis, **kw)
        close(lg, lc, np.float64)
        arr_close(gg, gc, np.float64)
    xf = np.moveaxis(x.copy(), axis, -1).reshape(-1, shape[axis])
    xf[0, 0] = np.nan
    xf[1, -1] = np.inf
    xf[2, 0] = -np.inf
    xn = np.moveaxis(xf.reshape(np.moveaxis(x, axis, -1).shape), -1, axis).copy()
    _, y = data(shape, axis, seed=9, frac_ignored=0)
    sc = ld.evaluate(xn, y, axis=axis, top_k=(1, 2), per_sample=True)
    sg = ld.evaluate(cp.asarray(xn), cp.asarray(y), axis=axis, top_k=(1, 2), per_sample=True)
    stats_equal(sg, sc, np.float64)


def test_binary_match_cpu():
    r = np.random.default_rng(3)
    x = r.normal(size=(3, 4, 500)) * 4
    y = (r.random(x.shape) < 0.4).astype(np.float32)
    pw = r.random((4, 1)) + 0.5
    for kw in (dict(), dict(pos_weight=pw), dict(reduction="none"), dict(reduction="sum")):
        gkw = dict(kw)
        if "pos_weight" in kw:
            gkw["pos_weight"] = cp.asarray(pw)
        lc, gc = ld.binary_cross_entropy_grad(x, y, **kw)
        lg, gg = ld.binary_cross_entropy_grad(cp.asarray(x), cp.asarray(y), **gkw)
        if kw.get("reduction") == "none":
            arr_close(lg, lc, np.float64)
        else:
            close(lg, lc, np.float64)
        arr_close(gg, gc, np.float64)
    p = 1 / (1 + np.exp(-x))
    close(ld.binary_cross_entropy(cp.asarray(p), cp.asarray(y), from_logits=False),
          ld.binary_cross_entropy(p, y, from_logits=False), np.float64)
    assert float(ld.binary_accuracy(cp.asarray(x), cp.asarray(y), threshold=0.3)) == \
        ld.binary_accuracy(x, y, threshold=0.3)
    sc = ld.evaluate_binary(x, y, bins=9, pos_weight=pw)
    sg = ld.evaluate_binary(cp.asarray(x), cp.asarray(y), bins=9, pos_weight=cp.asarray(pw))
    stats_equal(sg, sc, np.float64)
    np.testing.assert_array_equal(np.asarray(sg.prob_hist).sum(), sc.prob_hist.sum())


def test_determinism_and_evaluate_loss_bits():
    for shape, axis in CASES[:5]:
        x, y = data(shape, axis, seed=11)
        X, Y = cp.asarray(x.astype(np.float32)), cp.asarray(y)
        a = [ld.evaluate(X, Y, axis=axis, top_k=(1, 2), per_sample=True, grad=True)
             for _ in range(2)]
        ce = ld.cross_entropy(X, Y, axis=axis)
        assert np.float64(a[0].loss).tobytes() == np.float64(ce).tobytes()
        for k in ("class_loss_sum", "conf_sum", "grad", "sample_loss_sum"):
            assert np.asarray(getattr(a[0], k)).tobytes() == np.asarray(getattr(a[1], k)).tobytes()


def test_deferred_errors():
    x, y = data((6, 5), 1, seed=1, frac_ignored=0)
    y[3] = 7
    loss = ld.cross_entropy(cp.asarray(x), cp.asarray(y))
    assert math.isnan(float(loss))
    with pytest.raises(ValueError, match=r"label 7 at flat index 3 is outside \[0, 5\)"):
        _gpu.synchronize()
    _gpu.synchronize()  # raised once
    ld.cross_entropy(cp.asarray(x), cp.asarray(y))
    with pytest.raises(ValueError, match="label 7"):  # finished on the "GPU": next call raises
        ld.accuracy(cp.asarray(x), cp.asarray(np.zeros(6, np.int64)))
    ld.cross_entropy(cp.asarray(x), cp.asarray(np.zeros(6, np.int64)),
                     weight=cp.asarray(np.array([1.0, -1.0, 1.0, 1.0, 1.0])))
    with pytest.raises(ValueError, match="weight: must be non-negative"):
        _gpu.synchronize()
    yb = np.full((2, 3), 0.5)
    yb[1, 2] = 1.5
    ld.binary_cross_entropy(cp.asarray(np.zeros((2, 3))), cp.asarray(yb))
    with pytest.raises(ValueError, match=r"target: value 1.5 at flat index 5"):
        _gpu.synchronize()
    m = ld.Metrics(5)
    m.update(cp.asarray(x), cp.asarray(y))
    with pytest.raises(ValueError, match="label 7"):
        m.compute()


def test_metrics_on_device_match_cpu():
    for kw in (dict(), dict(imagewise=True, top_k=(1, 2)), dict(weight=np.linspace(1, 2, 4))):
        mc, mg = ld.Metrics(4, **kw), ld.Metrics(4, **{k: (cp.asarray(v) if k == "weight" else v)
                                                     for k, v in kw.items()})
        for s in range(3):
            x, y = data((2, 4, 6, 5), 1, seed=s)
            mc.update(x, y)
            mg.update(cp.asarray(x), cp.asarray(y))
            assert mg._dev is not None  # sums stay on the device until compute()
        rc, rg = mc.compute(), mg.compute()
        for k in ("loss", "accuracy", "mean_iou", "ece", "mean_entropy", "kappa"):
            close(rg[k], rc[k], np.float64, k)
        np.testing.assert_array_equal(rg["confusion"], rc["confusion"])
        if kw.get("imagewise"):
            close(rg["mean_iou_imagewise"], rc["mean_iou_imagewise"], np.float64)
    mb_c, mb_g = ld.Metrics(2, binary=True), ld.Metrics(2, binary=True)
    r = np.random.default_rng(0)
    x, y = r.normal(size=(4, 50)), (r.random((4, 50)) < 0.5).astype(np.float64)
    mb_c.update(x, y)
    mb_g.update(cp.asarray(x), cp.asarray(y))
    rc, rg = mb_c.compute(), mb_g.compute()
    close(rg["loss"], rc["loss"], np.float64)
    np.testing.assert_array_equal(rg["prob_hist"], rc["prob_hist"])
