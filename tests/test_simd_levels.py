"""Every instruction-set build of the CPU kernels against the float64 reference.

The dispatcher runs the widest build this CPU supports, so without this file the narrower builds
(base, AVX2) would never run on a machine with AVX-512. Each test switches the process to one
level (``_core.set_simd``) and back; levels this CPU cannot run are skipped."""

from __future__ import annotations

import lossdiag as ld
import numpy as np
import pytest
import reference as R
from conftest import FLOAT_DTYPES, cast_logits, check_stats, make_case, make_soft, shape_id
from lossdiag import _core

LEVELS = ["base", "avx2", "avx512"]
CASES = [((2, 21, 40, 40), 1), ((2, 30, 30, 21), -1), ((3000, 7), 1), ((70, 300), 1),
         ((1, 5, 3, 3), 1)]


@pytest.fixture(params=LEVELS)
def simd(request):
    before = _core.simd()
    if not _core.set_simd(request.param):
        pytest.skip(f"this CPU cannot run the {request.param} build")
    assert _core.simd() == request.param
    yield request.param
    assert _core.set_simd(before)


@pytest.mark.parametrize("case", CASES, ids=shape_id)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("per_sample", [False, True])
def test_evaluate_at_level(simd, case, dtype, per_sample):
    shape, axis = case
    x64, y = make_case(shape, axis, seed=110, scale=3.0, ignore_index=255, frac_ignored=0.1,
                       label_dtype=np.uint8)
    x, xr = cast_logits(x64, dtype)
    kw = dict(axis=axis, ignore_index=255, bins=20, top_k=(1, 3), per_sample=per_sample,
              grad=True)
    st = ld.evaluate(x, y, **kw)
    check_stats(st, R.ref_evaluate(xr, y, **kw), dtype)
    ce = ld.cross_entropy(x, y, axis=axis, ignore_index=255)
    assert np.float64(st.loss).tobytes() == np.float64(ce).tobytes()
    g = ld.cross_entropy_grad(x, y, axis=axis, ignore_index=255)[1]
    np.testing.assert_array_equal(np.asarray(st.grad), np.asarray(g))
    acc = ld.accuracy(x, y, axis=axis, ignore_index=255)
    assert acc == pytest.approx(st.correct[1] / st.count, rel=1e-15)


@pytest.mark.parametrize("shape", [(200,), (4, 1, 16, 16), (3, 7, 5)], ids=str)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_binary_at_level(simd, shape, dtype):
    """binary_cross_entropy(_grad), binary_accuracy and evaluate_binary at this level."""
    r = np.random.default_rng(111)
    x, xr = cast_logits(r.normal(size=shape) * 4.0, dtype)
    pw = np.linspace(0.5, 3.0, shape[-1])
    for y in ((r.random(shape) < 0.4).astype(np.float32), r.random(shape)):
        yr = y.astype(np.float64)
        st = ld.evaluate_binary(x, y, pos_weight=pw, threshold=0.3, bins=10, grad=True)
        ref = R.ref_evaluate_binary(xr, yr, pos_weight=pw, threshold=0.3, bins=10, grad=True)
        check_stats(st, ref, dtype)
        loss, g = ld.binary_cross_entropy_grad(x, y, pos_weight=pw)
        assert np.float64(st.loss).tobytes() == np.float64(loss).tobytes()
        np.testing.assert_array_equal(np.asarray(st.grad), np.asarray(g))
        none = ld.binary_cross_entropy(x, y, pos_weight=pw, reduction="none")
        ref_none = R.ref_binary_cross_entropy(xr, yr, pos_weight=pw, reduction="none")[0]
        tol = {np.float64: 1e-12, np.float32: 2e-6}.get(dtype, 2e-2)
        np.testing.assert_allclose(np.asarray(none, np.float64), ref_none, rtol=tol,
                                   atol=tol)
        acc = ld.binary_accuracy(x, y, threshold=0.3)
        assert acc == pytest.approx(R.ref_binary_accuracy(xr, yr, threshold=0.3), rel=1e-15)


@pytest.mark.parametrize("case", CASES, ids=shape_id)
def test_bfloat16_at_level(simd, case):
    """bfloat16 logits and soft targets (torch CPU tensors: NumPy has no bfloat16) at this level.

    They are loaded into float32 and computed there, as float16: every statistic equals the
    float32 kernel's on the same values (and the float64 reference), the gradient is the float32
    gradient rounded to nearest even, bit for bit."""
    torch = pytest.importorskip("torch")
    shape, axis = case
    x64, y = make_case(shape, axis, seed=114, scale=3.0, ignore_index=255, frac_ignored=0.1,
                       label_dtype=np.uint8)
    xb = torch.from_numpy(x64).to(torch.bfloat16)
    xf = xb.float().numpy()  # exactly the bfloat16 values
    kw = dict(axis=axis, ignore_index=255, bins=20, top_k=(1, 3), grad=True)
    sb, sf = ld.evaluate(xb, y, **kw), ld.evaluate(xf, y, **kw)
    check_stats(sb, R.ref_evaluate(xf.astype(np.float64), y, **kw), np.float32,
                check_grad=False)
    assert np.float64(sb.loss).tobytes() == np.float64(sf.loss).tobytes()
    np.testing.assert_array_equal(sb.confusion, sf.confusion)
    assert sb.grad.dtype == torch.bfloat16
    assert torch.equal(sb.grad, torch.from_numpy(sf.grad).to(torch.bfloat16))
    ls = dict(axis=axis, label_smoothing=0.1, reduction="none")
    p = torch.from_numpy(make_soft(shape, axis, seed=114)).to(torch.bfloat16)
    lb, gb = ld.cross_entropy_grad(xb, p, **ls)
    lf, gf = ld.cross_entropy_grad(xf, p.float().numpy(), **ls)
    np.testing.assert_array_equal(lb.numpy(), lf)
    assert torch.equal(gb, torch.from_numpy(gf).to(torch.bfloat16))
    ref = R.ref_cross_entropy(xf.astype(np.float64), p.double().numpy(), **ls)[0]
    np.testing.assert_allclose(lb.numpy(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(200,), (4, 1, 16, 16), (3, 7, 5)], ids=str)
def test_binary_bfloat16_at_level(simd, shape):
    """bfloat16 binary logits and targets: the float32 results on the same values, the gradient
    rounded to nearest even."""
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(115)
    xb = torch.from_numpy(r.normal(size=shape) * 4.0).to(torch.bfloat16)
    tb = torch.from_numpy(r.random(shape)).to(torch.bfloat16)
    xf, tf = xb.float().numpy(), tb.float().numpy()
    pw = np.linspace(0.5, 3.0, shape[-1])
    lb, gb = ld.binary_cross_entropy_grad(xb, tb, pos_weight=pw)
    lf, gf = ld.binary_cross_entropy_grad(xf, tf, pos_weight=pw)
    assert np.float64(lb).tobytes() == np.float64(lf).tobytes()
    assert torch.equal(gb, torch.from_numpy(gf).to(torch.bfloat16))
    ref = R.ref_binary_cross_entropy(xf.astype(np.float64), tf.astype(np.float64),
                                     pos_weight=pw)[0]
    assert lb == pytest.approx(ref, rel=1e-6)
    sb, sf = ld.evaluate_binary(xb, tb, bins=10), ld.evaluate_binary(xf, tf, bins=10)
    np.testing.assert_array_equal(sb.confusion, sf.confusion)
    np.testing.assert_array_equal(sb.prob_hist, sf.prob_hist)


def test_landscape_at_level(simd):
    """The compiled logistic loss surface at this level equals a float64 brute force."""
    from lossdiag.landscape import logistic_surface

    r = np.random.default_rng(112)
    X = r.standard_normal((300, 2)) * [1.0, 2.0]
    y = (X @ [1.2, -0.5] + 0.5 * r.standard_normal(300) > 0).astype(np.float64)
    w1, w2 = np.linspace(-5.0, 4.0, 13), np.linspace(-3.0, 3.0, 11)
    land = logistic_surface(X, y, w1, w2, bias=0.25, progress=False)
    z = (w1[None, :, None] * X[:, 0] + w2[:, None, None] * X[:, 1] + 0.25)
    np.testing.assert_allclose(land.loss, np.mean(np.logaddexp(0.0, z) - y * z, axis=-1),
                               rtol=1e-12, atol=0)
    np.testing.assert_array_equal(land.accuracy, np.mean((z > 0) == (y >= 0.5), axis=-1))


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 4 * 2.0**-23), (np.float64, 8 * 2.0**-52)],
                         ids=["float32", "float64"])
@pytest.mark.parametrize("layout", ["rows", "nchw"])
def test_softmax_relative_accuracy_at_level(simd, dtype, rtol, layout):
    """Every probability, down to the smallest normal, to a few ulps (AVX-512 has its own exp).

    Two classes, logits (0, d) with d swept over the whole range where exp(d) is a normal number
    of ``dtype``, label 0: the gradient of the summed loss at class 1 is the softmax probability
    exp(d) / (1 + exp(d)) itself, so an exp that is off by a few ulps anywhere shows here."""
    lo = -87.0 if dtype == np.float32 else -700.0
    r = np.random.default_rng(113)
    d = np.concatenate([np.linspace(lo, 0.0, 40001), r.uniform(lo, 0.0, 20000),
                        -r.exponential(1.0, 5000)]).astype(dtype)
    x = np.stack([np.zeros_like(d), d], axis=1)
    if layout == "nchw":
        x = np.ascontiguousarray(x.T.reshape(1, 2, 1, -1))
        t = np.zeros((1, 1, d.size), np.int64)
    else:
        t = np.zeros(d.size, np.int64)
    _, g = ld.cross_entropy_grad(x, t, reduction="sum")
    p = np.asarray(g).reshape(-1, d.size)[1] if layout == "nchw" else np.asarray(g)[:, 1]
    d64 = d.astype(np.float64)
    want = np.exp(d64) / (1.0 + np.exp(d64))
    tiny = np.finfo(dtype).tiny
    np.testing.assert_allclose(p[want > tiny], want[want > tiny], rtol=rtol, atol=0)


@pytest.mark.parametrize("C", [1, 2, 3, 5, 15, 16, 17, 21, 33, 100, 257])
def test_rows_tiles_at_level(simd, C):
    """Rows layouts go through register-tile transposes (masked for the last, partial tile)
    in every block of B rows, and the gradient goes back the same way: 2 * 64 + 5 rows give
    full blocks at every level and a tail block. float32 / float64 against the float64
    reference; float16 and bfloat16 equal to the float32 kernel on the same values, the
    gradient rounded to nearest even; in place equal to a new array."""
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(116 + C)
    E = 2 * 64 + 5
    x64 = r.normal(size=(E, C)) * 3.0
    y = r.integers(0, C, E).astype(np.int64)
    kw = dict(axis=-1, bins=20, top_k=(1,), grad=True)
    for dtype in (np.float32, np.float64):
        x = x64.astype(dtype)
        st = ld.evaluate(x, y, **kw)
        check_stats(st, R.ref_evaluate(x.astype(np.float64), y, **kw), dtype)
        loss, g = ld.cross_entropy_grad(x, y, axis=-1)
        xi = x.copy()
        loss_i, gi = ld.cross_entropy_grad(xi, y, axis=-1, out=xi)
        assert loss_i == loss
        np.testing.assert_array_equal(gi, g)
    xf16 = x64.astype(np.float16)
    xf = xf16.astype(np.float32)
    _, g16 = ld.cross_entropy_grad(xf16, y, axis=-1)
    _, gf = ld.cross_entropy_grad(xf, y, axis=-1)
    np.testing.assert_array_equal(np.asarray(g16), gf.astype(np.float16))
    assert ld.cross_entropy(xf16, y, axis=-1) == ld.cross_entropy(xf, y, axis=-1)
    xb = torch.from_numpy(x64).to(torch.bfloat16)
    xbf = xb.float().numpy()
    _, gb = ld.cross_entropy_grad(xb, y, axis=-1)
    _, gbf = ld.cross_entropy_grad(xbf, y, axis=-1)
    assert torch.equal(gb, torch.from_numpy(gbf).to(torch.bfloat16))
    gbi = xb.clone()
    ld.cross_entropy_grad(gbi, y, axis=-1, out=gbi)
    assert torch.equal(gbi, gb)
