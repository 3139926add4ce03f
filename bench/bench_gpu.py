#!/usr/bin/env python
"""GPU benchmark of lossdiag's CUDA kernels against torch and a CuPy composition.

Cases: float32 and bfloat16 logits, (16, 21, 1024, 1024) NCHW, the same channels-last (NHWC),
and (262144, 1000) rows; for each, `cross_entropy`, `evaluate` and `cross_entropy_grad`:

* lossdiag (this package, CUDA kernels)
* torch: F.cross_entropy; for evaluate + argmax accuracy + bincount confusion matrix; for the
  gradient forward + backward (torch.autograd.grad)
* CuPy composed: max / exp / sum / log / take_along_axis (+ argmax, bincount; softmax - one-hot)
  (float32 only: CuPy has no bfloat16)
* the device's measured read bandwidth (lossdiag's read kernel) and copy bandwidth
  (cudaMemcpyAsync device to device), in the same run.

Timing: CUDA events on the current stream, warm-ups, median of --repeats runs. Targets on an
H200: evaluate >= 85% of the measured read bandwidth and >= 5x faster than the torch chain;
cross_entropy_grad >= 80% of the measured read+write (copy) bandwidth.

    python bench/bench_gpu.py [--quick] [--repeats 20] [--cases nchw,nhwc,rows]
                              [--dtypes float32,bfloat16]

Without a GPU (or without CuPy) it prints why and exits with status 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys


def _gpu_or_none():
    try:
        import cupy as cp

        if cp.cuda.runtime.getDeviceCount() < 1:
            return None, "no CUDA device"
        cp.cuda.Device(0).compute_capability  # noqa: B018 - touches the driver
        return cp, None
    except ImportError:
        return None, "CuPy is not installed"
    except Exception as exc:  # no driver, no device
        return None, f"no usable CUDA device ({type(exc).__name__}: {exc})"


INNER = 4  # calls per timed sample: back to back, so host launch overhead overlaps GPU work


def timed(cp, fn, warmup: int, repeats: int) -> float:
    """Median milliseconds per fn() call, between CUDA events on the current stream (torch and
    CuPy both use the legacy default stream here); each sample times INNER calls in a row."""
    for _ in range(warmup):
        fn()
    cp.cuda.get_current_stream().synchronize()
    times = []
    for _ in range(repeats):
        a, b = cp.cuda.Event(), cp.cuda.Event()
        a.record()
        for _ in range(INNER):
            fn()
        b.record()
        b.synchronize()
        times.append(cp.cuda.get_elapsed_time(a, b) / INNER)
    return statistics.median(times)


def bandwidth(cp, nbytes: int, warmup: int, repeats: int) -> tuple[float, float]:
    """(read GB/s, copy GB/s counting read + write) measured on buffers of nbytes."""
    from lossdiag.core import cuda as _gpu

    src = cp.empty(nbytes // 16 * 16, cp.uint8)
    src.fill(1)
    dst = cp.empty_like(src)
    t_read = timed(cp, lambda: _gpu.mem_read(src), warmup, repeats)
    t_copy = timed(cp, lambda: _gpu.mem_copy(dst, src), warmup, repeats)
    return src.nbytes / t_read / 1e6, 2 * src.nbytes / t_copy / 1e6


def make_case(cp, torch, kind: str, dtype: str, quick: bool, seed: int = 0):
    """(logits, labels, axis, C, note): torch tensors when torch has CUDA, else CuPy arrays."""
    if kind == "rows":
        shape, axis = ((16384, 1000) if quick else (262144, 1000)), 1
    elif kind == "nchw":
        shape, axis = ((4, 21, 256, 256) if quick else (16, 21, 1024, 1024)), 1
    else:
        shape, axis = ((4, 256, 256, 21) if quick else (16, 1024, 1024, 21)), -1
    C = shape[axis]
    lab_shape = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    if torch is not None:
        g = torch.Generator(device="cuda").manual_seed(seed)
        x = (torch.randn(shape, device="cuda", generator=g) * 3).to(getattr(torch, dtype))
        y = torch.randint(0, C, lab_shape, device="cuda", generator=g)
        return x, y, axis, C
    if dtype == "bfloat16":
        return None
    rs = cp.random.RandomState(seed)
    x = (rs.standard_normal(shape, dtype=cp.float32) * 3).astype(cp.float32)
    y = rs.randint(0, C, lab_shape).astype(cp.int64)
    return x, y, axis, C


def torch_fns(torch, x, y, axis, C):
    import torch.nn.functional as F

    xt = x.movedim(axis % x.ndim, 1) if axis != 1 else x  # class axis 1 (a view for NHWC)

    def ce():
        return F.cross_entropy(xt, y)

    def ev():
        loss = F.cross_entropy(xt, y)
        pred = xt.argmax(1)
        acc = (pred == y).float().mean()
        cm = torch.bincount((y * C + pred).flatten(), minlength=C * C).reshape(C, C)
        return loss, acc, cm

    xg = xt.detach().requires_grad_(True)

    def grad():
        loss = F.cross_entropy(xg, y)
        return torch.autograd.grad(loss, xg)[0]

    return ce, ev, grad


def cupy_fns(cp, x, y, axis, C):
    ax = axis % x.ndim
    shape_c = [1] * x.ndim
    shape_c[ax] = C
    cls = cp.arange(C).reshape(shape_c)
    ye = cp.expand_dims(y, ax)
    n = y.size

    def lse():
        m = x.max(axis=ax, keepdims=True)
        return cp.log(cp.exp(x - m).sum(axis=ax, keepdims=True)) + m

    def ce():
        return (lse() - cp.take_along_axis(x, ye, axis=ax)).mean()

    def ev():
        loss = ce()
        pred = x.argmax(axis=ax)
        acc = (pred == y).mean()
        cm = cp.bincount((y * C + pred).ravel(), minlength=C * C).reshape(C, C)
        return loss, acc, cm

    def grad():
        p = cp.exp(x - lse())
        return cp.where(cls == ye, p - 1, p) / n

    return ce, ev, grad


def bench_case(cp, torch, ld, kind: str, dtype: str, args) -> bool:
    """Time one (layout, dtype) case and print its table; True when its targets are met."""
    W, R = args.warmup, args.repeats
    case = make_case(cp, torch, kind, dtype, args.quick)
    if case is None:
        print(f"\n{kind} {dtype}: skipped (bfloat16 needs torch with CUDA)")
        return True
    x, y, axis, C = case
    xb = x.numel() * x.element_size() if torch is not None else x.nbytes
    yb = y.numel() * y.element_size() if torch is not None else y.nbytes
    rd_bw, cp_bw = bandwidth(cp, xb + yb, W, R)
    print(f"\n== {kind} {tuple(x.shape)} {dtype}, labels int64: logits {xb / 1e9:.2f} GB; "
          f"measured read {rd_bw:.0f} GB/s, copy (read+write) {cp_bw:.0f} GB/s")
    rows = []

    def run(name, fn, nbytes, ref_bw):
        t = timed(cp, fn, W, R)
        bw = nbytes / t / 1e6
        rows.append((name, t, bw, 100 * bw / ref_bw))
        return t

    t_ce = run("lossdiag cross_entropy", lambda: ld.cross_entropy(x, y, axis=axis), xb + yb, rd_bw)
    t_ev = run("lossdiag evaluate", lambda: ld.evaluate(x, y, axis=axis), xb + yb, rd_bw)
    t_gr = run("lossdiag cross_entropy_grad", lambda: ld.cross_entropy_grad(x, y, axis=axis),
               2 * xb + yb, cp_bw)
    t_tev = None
    if torch is not None:
        ce, ev, gr = torch_fns(torch, x, y, axis, C)
        run("torch F.cross_entropy", ce, xb + yb, rd_bw)
        t_tev = run("torch CE+argmax+bincount", ev, xb + yb, rd_bw)
        run("torch forward+backward", gr, 2 * xb + yb, cp_bw)
        l_ld = float(ld.cross_entropy(x, y, axis=axis))  # correctness: vs torch's float32 loss
        l_t = float(ce().float())
        print(f"   loss lossdiag {l_ld:.7f}  torch {l_t:.7f}  rel diff "
              f"{abs(l_ld - l_t) / abs(l_t):.1e}")
    if dtype == "float32":
        xc = cp.asarray(x) if torch is None else cp.from_dlpack(x.detach())
        yc = cp.asarray(y) if torch is None else cp.from_dlpack(y)
        ce, ev, gr = cupy_fns(cp, xc, yc, axis, C)
        run("cupy composed CE", ce, xb + yb, rd_bw)
        run("cupy composed evaluate", ev, xb + yb, rd_bw)
        run("cupy composed grad", gr, 2 * xb + yb, cp_bw)
    print(f"   {'':32s} {'ms':>9s} {'GB/s':>8s} {'% of ref BW':>12s}")
    for name, t, bw, pct in rows:
        print(f"   {name:32s} {t:9.3f} {bw:8.0f} {pct:11.0f}%")
    ev_pct = 100 * (xb + yb) / t_ev / 1e6 / rd_bw
    gr_pct = 100 * (2 * xb + yb) / t_gr / 1e6 / cp_bw
    checks = [(f"evaluate >= 85% of read bandwidth ({ev_pct:.0f}%)", ev_pct >= 85),
              (f"cross_entropy_grad >= 80% of copy bandwidth ({gr_pct:.0f}%)", gr_pct >= 80)]
    if t_tev is not None:
        checks.append((f"evaluate >= 5x faster than torch chain ({t_tev / t_ev:.1f}x)",
                       t_tev / t_ev >= 5))
    for text, ok in checks:
        print(f"   [{'PASS' if ok else 'MISS'}] {text}")
    print(f"   (cross_entropy {t_ce:.3f} ms)")
    return all(ok for _, ok in checks)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes (smoke test)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--cases", default="nchw,nhwc,rows")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    args = ap.parse_args(argv)

    cp, why = _gpu_or_none()
    if cp is None:
        print(f"bench_gpu: skipped: {why}. The GPU benchmark needs CuPy and a CUDA device.")
        return 0
    import lossdiag as ld

    info = ld.info()
    if not info["cuda_built"]:
        print("bench_gpu: skipped: lossdiag was built without its CUDA backend "
              "(reinstall with nvcc available, LOSSDIAG_CUDA=ON).")
        return 0
    try:
        import torch

        if not torch.cuda.is_available():
            torch = None
    except ImportError:
        torch = None
    dev = info["cuda_device"]
    print(f"device: {dev}")
    print(f"torch: {'yes ' + torch.__version__ if torch else 'no (torch rows skipped)'}; "
          f"cupy {cp.__version__}; repeats {args.repeats} (median), warm-up {args.warmup}")

    ok_all = True
    for kind in args.cases.split(","):
        for dtype in args.dtypes.split(","):
            ok_all &= bench_case(cp, torch, ld, kind, dtype, args)
            cp.get_default_memory_pool().free_all_blocks()
            if torch is not None:
                torch.cuda.empty_cache()
    print("\nall targets met" if ok_all else "\nsome targets missed (see MISS lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
