"""GPU-specific tests (the shared test bodies run on both backends through conftest's `backend`
fixture; these cover what only the GPU has): bitwise determinism over repeated runs, float16 with
10^8 pixels, bfloat16 through torch DLPack, no host synchronisation in Metrics.update and the
reductions, mixed devices, deferred bad-label errors, in place gradients, more than 2^31 elements,
CuPy streams.

They skip with a visible reason without CuPy or a CUDA device. Two tests always run: the CUDA
module imports and reports cleanly without a device, and the real kernel source passes its
cross-checks against the CPU backend under the host emulator (cpp/cuda/emu), so the kernels'
logic is exercised on machines without a GPU too.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time

import lossdiag as ld
import numpy as np
import pytest
import reference as R
from conftest import HAVE_CUDA, cupy_or_none, tol
from lossdiag.core import cuda as _gpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
gpu = pytest.mark.skipif(not HAVE_CUDA, reason="CuPy/CUDA device not available")
# under cpp/cuda/emu/run_emu_tests.py CuPy is a NumPy stand-in without streams, RawKernel, etc.
real_cupy = pytest.mark.skipif(bool(os.environ.get("LOSSDIAG_EMU")),
                               reason="needs real CuPy (host emulator run)")


def _torch_cuda():
    try:
        import torch

        return torch if torch.cuda.is_available() else None
    except ImportError:
        return None


needs_torch = pytest.mark.skipif(not HAVE_CUDA or _torch_cuda() is None,
                                 reason="torch with CUDA not available")


def _free_gib() -> float:
    cp = cupy_or_none()
    return cp.cuda.runtime.memGetInfo()[0] / 2**30 if cp is not None else 0.0


def bits(a) -> bytes:
    cp = cupy_or_none()
    if cp is not None and isinstance(a, cp.ndarray):
        a = a.get()
    if hasattr(a, "detach"):
        a = a.detach().cpu().view(dtype=__import__("torch").uint8).numpy()
    return np.ascontiguousarray(np.asarray(a)).tobytes()


# ------------------------------------------------------------------------------------------------
# always run
# ------------------------------------------------------------------------------------------------
def test_cuda_module_imports_and_reports_without_crashing():
    info = ld.info()
    if not info["cuda_built"]:
        pytest.skip("lossdiag was built without the CUDA backend (no nvcc at build time)")
    from lossdiag import _cuda

    assert isinstance(_cuda.built_architectures, str)
    lay = _cuda.layout(21, 20)
    assert lay["i_size"] == 18 + 21 * 21 + 21 + 8 * 20 and lay["f_size"] == 16 + 21 + 20
    if HAVE_CUDA:
        assert isinstance(info["cuda_device"], dict), info["cuda_device"]
    else:
        assert isinstance(info["cuda_device"], str) and info["cuda_device"].startswith("unusable")
        with pytest.raises(RuntimeError):
            _cuda.device_info()


def test_gpu_module_imports_without_cupy():
    code = ("import sys; sys.modules['cupy'] = None\n"
            "import lossdiag, lossdiag.core.cuda as g\n"
            "g.synchronize()\n"
            "try:\n    g._modules()\nexcept ImportError as e:\n    assert 'CuPy' in str(e), e\n"
            "else:\n    raise SystemExit('no ImportError')\n"
            "import numpy as np\n"
            "assert lossdiag.cross_entropy(np.zeros((2, 3)), np.array([0, 1])) > 0\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="no g++")
def test_emulated_kernels_match_cpu():
    """The real kernels.cu, compiled for the host emulator, against the CPU backend."""
    pytest.importorskip("pybind11")
    emu = os.path.join(ROOT, "cpp", "cuda", "emu")
    r = subprocess.run([sys.executable, os.path.join(emu, "run_emu_tests.py"),
                        os.path.join(emu, "test_emu_cases.py"), "-q", "-x",
                        "-p", "no:cacheprovider"],
                       capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0 and "error:" in r.stderr and "barrier" in r.stderr:
        pytest.skip("host compiler without C++20 <barrier>")
    assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-4000:])


# ------------------------------------------------------------------------------------------------
# GPU only
# ------------------------------------------------------------------------------------------------
LAYOUTS = [((8, 21, 48, 40), 1), ((8, 48, 40, 21), -1), ((2048, 1000), 1), ((4, 150, 16, 12), 1),
           ((3000, 7), 1)]


def _case(shape, axis, dtype, seed=0):
    r = np.random.default_rng(seed)
    x = (r.normal(size=shape) * 3).astype(dtype)
    C = shape[axis]
    ts = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    y = r.integers(0, C, size=ts)
    y = np.where(r.random(ts) < 0.1, -100, y)
    return x, y


@gpu
@pytest.mark.parametrize("case", LAYOUTS, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64], ids=lambda d: d.__name__)
def test_bitwise_deterministic(case, dtype):
    cp = cupy_or_none()
    shape, axis = case
    x, y = _case(shape, axis, dtype)
    X, Y = cp.asarray(x), cp.asarray(y)
    runs = []
    for _ in range(3):
        loss = ld.cross_entropy(X, Y, axis=axis)
        gl, g = ld.cross_entropy_grad(X, Y, axis=axis, label_smoothing=0.1)
        st = ld.evaluate(X, Y, axis=axis, top_k=(1, 5), per_sample=True, grad=True)
        runs.append([bits(loss), bits(gl), bits(g), bits(st.loss)] +
                    [bits(getattr(st, k)) for k in (
                        "class_loss_sum", "conf_sum", "confusion", "true_prob_hist", "margin_hist",
                        "true_prob_sum", "entropy_sum", "sample_loss_sum", "sample_intersection",
                        "grad")])
    assert runs[0] == runs[1] == runs[2]
    assert runs[0][0] == runs[0][3], "evaluate().loss must equal cross_entropy bit for bit"
    # and agrees with the float64 reference
    ref = R.ref_cross_entropy(x.astype(np.float64), y, axis=axis)[0]
    assert float(loss) == pytest.approx(ref, rel=max(tol(dtype)["reduced"], 1e-12))


@gpu
@real_cupy
def test_float16_1e8_pixels_finite_and_accurate():
    if _free_gib() < 4:
        pytest.skip("needs 4 GiB of free GPU memory")
    cp = cupy_or_none()
    shape = (1, 3, 10_000, 10_000)  # 10^8 pixels, far beyond float16's 65,504
    rs = cp.random.RandomState(1)
    x = (rs.standard_normal(shape, dtype=cp.float32) * 2).astype(cp.float16)
    y = rs.randint(0, 3, (1, 10_000, 10_000)).astype(cp.uint8)
    loss = float(ld.cross_entropy(x, y))
    assert math.isfinite(loss)
    # float64 reference of the same float16 values, chunked on the device
    total = 0.0
    for r0 in range(0, 10_000, 1000):
        xs = x[0, :, r0:r0 + 1000].astype(cp.float64)
        m = xs.max(axis=0)
        lse = cp.log(cp.exp(xs - m).sum(axis=0)) + m
        xy = cp.take_along_axis(xs, y[:, r0:r0 + 1000].astype(cp.int64), axis=0)[0]
        total += float((lse - xy).sum())
    ref = total / 1e8
    err = abs(loss - ref) / ref
    assert err <= tol(np.float16)["reduced"], (loss, ref, err)
    torch = _torch_cuda()
    if torch is not None:  # same-dtype baseline: lossdiag at most 2x torch's float16 error
        import torch.nn.functional as F

        lt = float(F.cross_entropy(torch.from_dlpack(x), torch.from_dlpack(y).long()))
        # (torch 2.11 on an H200 returned NaN for this case: then there is no baseline to meet)
        if math.isfinite(lt):
            assert err <= max(2 * abs(lt - ref) / ref, tol(np.float16)["reduced"])


@needs_torch
@pytest.mark.parametrize("case", [((4, 21, 16, 12), 1), ((4, 16, 12, 21), -1), ((64, 1000), 1)],
                         ids=str)
def test_bfloat16_from_torch(case):
    torch = _torch_cuda()
    import torch.nn.functional as F

    shape, axis = case
    g = torch.Generator(device="cuda").manual_seed(0)
    x = (torch.randn(shape, device="cuda", generator=g) * 3).to(torch.bfloat16)
    C = shape[axis]
    ts = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    y = torch.randint(0, C, ts, device="cuda", generator=g)
    xr = x.float().cpu().numpy().astype(np.float64)  # exactly the bfloat16 values
    yn = y.cpu().numpy()
    ref_loss, ref_grad = R.ref_cross_entropy(xr, yn, axis=axis)
    loss, grad = ld.cross_entropy_grad(x, y, axis=axis)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-6)  # computed in float32
    assert isinstance(grad, torch.Tensor) and grad.dtype == torch.bfloat16
    err = np.abs(grad.float().cpu().numpy() - ref_grad).max()
    xt = x.movedim(axis % x.ndim, 1).detach().requires_grad_(True)
    (gt,) = torch.autograd.grad(F.cross_entropy(xt, y), xt)
    err_t = np.abs(gt.movedim(1, axis % x.ndim).float().cpu().numpy() - ref_grad).max()
    assert err <= 2 * err_t + 1e-7, (err, err_t)  # at most 2x a same-dtype baseline
    st = ld.evaluate(x, y, axis=axis, top_k=(1, 5))
    sc = ld.evaluate(xr.astype(np.float32), yn, axis=axis, top_k=(1, 5))
    np.testing.assert_array_equal(st.confusion.get(), sc.confusion)
    assert int(st.correct[5]) == sc.correct[5]
    # a bfloat16 soft target and the per-element loss as a torch tensor
    t = torch.softmax(torch.randn(shape, device="cuda", generator=g), dim=axis).to(torch.bfloat16)
    lo = ld.cross_entropy(x, t, axis=axis, reduction="none")
    assert isinstance(lo, torch.Tensor) and lo.dtype == torch.float32
    ref_soft = R.ref_cross_entropy(xr, t.float().cpu().numpy().astype(np.float64), axis=axis,
                                   reduction="none")[0]
    np.testing.assert_allclose(lo.cpu().numpy(), ref_soft, rtol=1e-5, atol=1e-6)


@needs_torch
def test_torch_float32_matches_cupy_bitwise():
    torch = _torch_cuda()
    cp = cupy_or_none()
    x, y = _case((4, 21, 16, 12), 1, np.float32)
    xt, yt = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
    l1, g1 = ld.cross_entropy_grad(xt, yt)
    l2, g2 = ld.cross_entropy_grad(cp.asarray(x), cp.asarray(y))
    assert isinstance(g1, torch.Tensor) and isinstance(g2, cp.ndarray)
    assert bits(l1) == bits(l2) and bits(g1) == bits(g2)


def _spin(cp, seconds: float = 1.0):
    """Keep the current stream busy for about `seconds` (a one-thread clock64 spin)."""
    k = cp.RawKernel(r'''extern "C" __global__ void spin(long long cycles) {
        long long t0 = clock64(); while (clock64() - t0 < cycles) {} }''', "spin")
    k((1,), (1,), (np.int64(int(seconds * 2e9)),))


@gpu
@real_cupy
def test_no_host_sync_in_metrics_update_and_reductions():
    cp = cupy_or_none()
    x, y = _case((4, 21, 32, 32), 1, np.float32)
    X, Y = cp.asarray(x), cp.asarray(y)
    m = ld.Metrics(21, imagewise=True, top_k=(1, 5))
    # warm-up: module loading, memory pool, and CuPy's run-time compiled kernels that the
    # imagewise update uses (compiled on first use, ~2 s on a fresh machine)
    ld.Metrics(21, imagewise=True, top_k=(1, 5)).update(X, Y)
    ld.cross_entropy(X, Y)
    cp.cuda.get_current_stream().synchronize()
    _spin(cp, 1.0)
    t0 = time.perf_counter()
    for _ in range(3):
        m.update(X, Y)
    loss = ld.cross_entropy(X, Y)
    st = ld.evaluate(X, Y)
    elapsed = time.perf_counter() - t0
    ev = cp.cuda.Event()
    ev.record()
    assert not ev.done, "the GPU finished the spin: something waited for it"
    assert elapsed < 0.5, elapsed
    assert isinstance(loss, cp.ndarray) and loss.shape == ()
    assert isinstance(st.confusion, cp.ndarray) and isinstance(st.count, cp.ndarray)
    r = m.compute()  # the synchronisation point
    mc = ld.Metrics(21, imagewise=True, top_k=(1, 5))
    for _ in range(3):
        mc.update(x, y)
    rc = mc.compute()
    np.testing.assert_array_equal(r["confusion"], rc["confusion"])
    for k in ("loss", "accuracy", "mean_iou", "mean_iou_imagewise", "ece"):
        assert r[k] == pytest.approx(rc[k], rel=1e-6), k


@gpu
def test_mixed_devices_refused():
    cp = cupy_or_none()
    x, y = _case((6, 5), 1, np.float32)
    with pytest.raises(ValueError, match="mixed devices"):
        ld.cross_entropy(x, cp.asarray(y))
    with pytest.raises(ValueError, match="mixed devices"):
        ld.evaluate(cp.asarray(x), cp.asarray(y), weight=np.ones(5))


@gpu
def test_deferred_bad_label_error():
    cp = cupy_or_none()
    _gpu.synchronize()
    x, y = _case((10, 5), 1, np.float32)
    y[4] = 9
    loss = ld.cross_entropy(cp.asarray(x), cp.asarray(y))  # returns: the check is on the GPU
    assert math.isnan(float(loss))
    with pytest.raises(ValueError, match=r"label 9 at flat index 4 is outside \[0, 5\)"):
        _gpu.synchronize()
    _gpu.synchronize()  # reported once
    # raised by the next lossdiag call once the faulty one has finished
    ld.cross_entropy(cp.asarray(x), cp.asarray(y))
    cp.cuda.get_current_stream().synchronize()
    with pytest.raises(ValueError, match="label 9"):
        ld.accuracy(cp.asarray(x), cp.asarray(np.zeros(10, np.int64)))
    m = ld.Metrics(5)
    m.update(cp.asarray(x), cp.asarray(y))
    with pytest.raises(ValueError, match="label 9"):
        m.compute()


@gpu
@pytest.mark.parametrize("case", LAYOUTS, ids=str)
def test_inplace_gradient(case):
    cp = cupy_or_none()
    shape, axis = case
    x, y = _case(shape, axis, np.float32)
    X, Y = cp.asarray(x), cp.asarray(y)
    l1, g1 = ld.cross_entropy_grad(X, Y, axis=axis)
    X2 = X.copy()
    l2, g2 = ld.cross_entropy_grad(X2, Y, axis=axis, out=X2)
    assert g2 is X2
    assert bits(l1) == bits(l2) and bits(g1) == bits(g2)


@gpu
@real_cupy
def test_more_than_2_31_elements():
    if _free_gib() < 12:
        pytest.skip("needs 12 GiB of free GPU memory")
    cp = cupy_or_none()
    n = 2**30 + 3  # pixels; 2 classes: 2^31 + 6 logits
    rs = cp.random.RandomState(2)
    x = rs.standard_normal((1, 2, n), dtype=cp.float32).astype(cp.float16)
    y = (rs.random_sample((1, n)) < 0.5).astype(cp.uint8)
    y[0, -1] = 1
    x[0, 1, -1] = 30.0  # the very last pixel: confident and right
    loss = float(ld.cross_entropy(x, y))
    d = (x[0, 1] - x[0, 0]).astype(cp.float64)  # 2 classes: loss = softplus(+-d)
    s = cp.where(y[0] == 1, -d, d)
    ref = float((cp.maximum(s, 0) + cp.log1p(cp.exp(-cp.abs(s)))).mean())
    assert loss == pytest.approx(ref, rel=1e-6)
    st = ld.evaluate(x, y)
    assert int(st.count) == n and int(st.confusion.sum()) == n
    g = ld.cross_entropy_grad(x, y)[1]
    assert float(g[0, 1, -1]) == pytest.approx(0.0, abs=1e-8) and bool(cp.isfinite(g).all())


@gpu
@real_cupy
def test_runs_on_the_current_cupy_stream():
    cp = cupy_or_none()
    x, y = _case((4, 21, 16, 12), 1, np.float32)
    X, Y = cp.asarray(x), cp.asarray(y)
    ref = ld.evaluate(X, Y, grad=True)
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        st = ld.evaluate(X, Y, grad=True)
        s.synchronize()
    assert bits(st.loss) == bits(ref.loss) and bits(st.grad) == bits(ref.grad)
    np.testing.assert_array_equal(st.confusion.get(), ref.confusion.get())
