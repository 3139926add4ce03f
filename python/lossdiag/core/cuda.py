"""GPU backend: CUDA arrays in, lossdiag._cuda kernels on CuPy's current stream, results on the GPU.

Accepted inputs: CuPy arrays, objects exposing ``__cuda_array_interface__`` (Numba, ...) and
CUDA DLPack producers such as torch CUDA tensors (float16, bfloat16, float32, float64 logits; the
label dtypes of the CPU backend). The functions mirror lossdiag.core.cpu (same arguments, checks and
semantics); the differences are about *where the numbers live*:

* Nothing synchronises with the host. Reductions return 0-d CuPy arrays, `evaluate` returns a
  BatchStats whose fields are CuPy arrays (scalars 0-d), `Metrics.update` keeps its sums on the
  GPU. Convert with ``float(x)`` / ``x.get()`` when you want numbers.
* Arrays shaped like the input (the gradient, per-element losses) come back in the logits' array
  library: torch tensors for torch logits, CuPy arrays otherwise.
* Value errors that the CPU raises before computing (a label outside [0, C), a BCE target outside
  [0, 1], NaN/inf/negative weights) are detected on the GPU. The call returns normally with a NaN
  loss, and the ValueError is raised at the next synchronisation point: `synchronize()`,
  `Metrics.compute()` / `state_dict()` / `merge()`, or, as soon as the faulty call has finished
  on the GPU, at the start of the next lossdiag GPU call. Elements with a bad label are left out
  (like ignored ones) of everything the faulty call computed.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from . import interop
from . import validate as V
from .results import BatchStats

BF16 = "bfloat16"  # dtype marker for bfloat16 arrays (NumPy has no such dtype)

_X_CODES = {np.dtype(np.float16): 0, np.dtype(np.float32): 1, np.dtype(np.float64): 2, BF16: 3}
_RED = {"none": 0, "mean": 1, "sum": 2}
_DLPACK_CUDA = (2, 3, 13)  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged

# result-slab slots (see cpp/cuda/cuda_api.h)
F_LOSS, F_NLL, F_SMOOTH, F_WSUM, F_TPS, F_ENT, F_LOSS_SUM, F_MEAN, F_ACC = range(9)
I_COUNT, I_IGNORED, I_NONFINITE, I_NFROWS, I_BELOW, I_ELEMENTS, I_CORRECT = range(7)
I_ERR = I_CORRECT + 8  # ~index, value, ~weight index, weight value

_cp: Any = None
_cu: Any = None
_layouts: dict = {}


def _modules():
    """(cupy, lossdiag._cuda), imported on first use with a clear message when missing."""
    global _cp, _cu
    if _cu is None:
        try:
            import cupy
        except ImportError as exc:
            raise ImportError(
                "lossdiag: GPU arrays need CuPy (pip install cupy-cuda12x or cupy-cuda13x)"
            ) from exc
        try:
            from .. import _cuda
        except ImportError as exc:
            raise ImportError(
                "lossdiag was built without its CUDA backend (lossdiag._cuda): reinstall on a "
                "machine with the CUDA toolkit (nvcc), e.g. LOSSDIAG_CUDA=ON pip install ."
            ) from exc
        _cp, _cu = cupy, _cuda
    return _cp, _cu


def cuda_availability() -> tuple[bool, Any, str | None]:
    """Whether the CUDA backend can be used here, for `lossdiag.info()`.

    Returns ``(built, device, reason)``: ``built`` is whether lossdiag._cuda was compiled (only
    where the build machine had a GPU, or with LOSSDIAG_CUDA=ON); ``device`` is the current
    device's properties (a dict), ``"unusable: <error>"`` when the module is there but no device
    answers, or None; ``reason`` is None when GPU arrays can be used, else what is missing.
    Checked in this order: the module, a device (the driver), CuPy (every GPU call goes
    through CuPy's current stream, torch tensors included).
    """
    import importlib.util

    try:
        from .. import _cuda
    except ImportError as exc:
        if importlib.util.find_spec(f"{__package__}._cuda") is None:
            return False, None, (
                "lossdiag was built without its CUDA backend (the build machine had no GPU, or "
                "no nvcc); reinstall on a machine with an NVIDIA GPU and the CUDA toolkit, or "
                "force it with LOSSDIAG_CUDA=ON pip install .")
        return True, None, f"lossdiag._cuda is there but does not import: {exc}"
    try:
        device = _cuda.device_info()
    except Exception as exc:  # no driver, no device, driver older than the runtime
        return True, f"unusable: {exc}", f"no usable CUDA device: {exc}"
    if _cp is None:
        try:
            import cupy  # noqa: F401
        except Exception as exc:  # not installed, or installed for another CUDA
            return True, device, (f"CuPy does not import ({exc}): pip install cupy-cuda12x or "
                                  "cupy-cuda13x; GPU arrays, torch CUDA tensors included, need it")
    return True, device, None


def _layout(C: int, bins: int) -> dict:
    key = (C, bins)
    if key not in _layouts:
        _layouts[key] = _modules()[1].layout(C, bins)
    return _layouts[key]


# ------------------------------------------------------------------------------------------------
# deferred errors
# ------------------------------------------------------------------------------------------------
class _Pending:
    __slots__ = ("event", "host", "make")

    def __init__(self, event, host, make):
        self.event, self.host, self.make = event, host, make


_pending: list[_Pending] = []


def _track(i_slab, make) -> None:
    """Copy this call's error slots to pinned host memory after its kernels, without waiting."""
    cp = _cp
    import cupyx

    host = cupyx.empty_pinned((4,), np.int64)
    i_slab[I_ERR:I_ERR + 4].get(out=host, blocking=False)
    ev = cp.cuda.Event(block=False, disable_timing=True)
    ev.record()
    _pending.append(_Pending(ev, host, make))


def _check_pending(block: bool = False) -> None:
    """Raise the first deferred error of a finished call (of any earlier call when block)."""
    if not _pending:
        return
    keep, err = [], None
    for p in _pending:
        if err is None and (block or p.event.done):
            if block:
                p.event.synchronize()
            if p.host[0] != 0 or p.host[2] != 0:
                err = p.make(p.host)
            continue
        keep.append(p)
    _pending[:] = keep
    if err is not None:
        raise err


def synchronize() -> None:
    """Wait for every lossdiag GPU call issued so far and raise its deferred ValueError, if any
    (a bad label, BCE target or weight). Does nothing when no GPU call is pending."""
    _check_pending(block=True)


def _as_float(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<q", int(bits)))[0]


def _weight_error(host, name: str):
    if host[2] == 0:
        return None
    v = _as_float(host[3])
    if not math.isfinite(v):
        return ValueError(f"{name}: contains NaN or inf")
    return ValueError(f"{name}: must be non-negative, got {v!r} at index {~int(host[2])}")


def _ce_error_maker(C: int, ign: int, dtype):
    def make(host):
        if host[0] != 0:
            return V.bad_label_error(int(host[1]), ~int(host[0]), C, ign, dtype=dtype)
        return _weight_error(host, "weight")
    return make


def _bce_error(host):
    if host[0] != 0:
        return ValueError(f"target: value {_as_float(host[1])!r} at flat index {~int(host[0])} is "
                          "outside [0, 1]")
    return _weight_error(host, "pos_weight")


# ------------------------------------------------------------------------------------------------
# device arrays
# ------------------------------------------------------------------------------------------------
class _Dev:
    """A C-contiguous device array: pointer, shape, dtype (NumPy dtype or BF16), device, and the
    object(s) that keep its memory alive."""

    __slots__ = ("obj", "keep", "ptr", "shape", "dtype", "device", "lib")

    def __init__(self, obj, keep, ptr, shape, dtype, device, lib):
        self.obj, self.keep, self.ptr = obj, keep, int(ptr)
        self.shape, self.dtype, self.device, self.lib = tuple(int(s) for s in shape), dtype, \
            int(device), lib

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == BF16 else np.dtype(self.dtype).itemsize


def _np_or_bf16(dt) -> Any:
    name = getattr(dt, "name", str(dt))
    return BF16 if name == "bfloat16" else np.dtype(dt)


def _c_contiguous(shape, strides) -> bool:
    if strides is None or any(s == 0 for s in shape):
        return True
    expect = 1
    for n, s in zip(reversed(shape), reversed(strides)):
        if n != 1 and s != expect:
            return False
        expect *= n
    return True


def _dl_dtype(info: dict, name: str) -> Any:
    code, bits, lanes = info["code"], info["bits"], info["lanes"]
    if lanes == 1:
        if code == 4 and bits == 16:
            return BF16
        table = {2: "f", 0: "i", 1: "u"}
        if code in table and bits in (8, 16, 32, 64):
            try:
                return np.dtype(f"{table[code]}{bits // 8}")
            except TypeError:
                pass
        if code == 6 and bits == 8:
            return np.dtype(np.bool_)
    raise TypeError(f"{name}: DLPack dtype (code {code}, {bits} bits, {lanes} lanes) is not "
                    "supported")


def _stream_ptr() -> int:
    return int(_cp.cuda.get_current_stream().ptr)


def _from_dlpack(x, name: str, lib: str, copy_ok: bool) -> _Dev:
    cp, cu = _modules()
    s = _stream_ptr()
    try:  # the producer orders its pending work before our stream (1 = legacy default stream)
        cap = x.__dlpack__(stream=s if s != 0 else 1)
    except TypeError:
        cap = x.__dlpack__()
    info = cu.dlpack_info(cap)
    if info["device_type"] not in _DLPACK_CUDA:
        raise TypeError(f"{name}: the DLPack array is not on a CUDA device")
    dtype = _dl_dtype(info, name)
    if not _c_contiguous(info["shape"], info["strides"]):
        if not copy_ok:
            raise ValueError(f"{name}: must be C-contiguous")
        if dtype == BF16:
            raise ValueError(f"{name}: non-contiguous bfloat16 arrays are not supported; pass a "
                             "contiguous array")
        return _as_dev(cp.ascontiguousarray(cp.from_dlpack(x)), name)
    return _Dev(x, cap, info["ptr"], info["shape"], dtype, info["device_id"], lib)


def _as_dev(x: Any, name: str, copy_ok: bool = True) -> _Dev:
    """View any supported GPU array (copying only non-contiguous inputs, a documented cost)."""
    cp, _ = _modules()
    if x is None:
        raise TypeError(f"{name}: expected an array, got None")
    if isinstance(x, cp.ndarray):
        if not x.flags.c_contiguous:
            if not copy_ok:
                raise ValueError(f"{name}: must be C-contiguous")
            x = cp.ascontiguousarray(x)
        return _Dev(x, None, x.data.ptr, x.shape, _np_or_bf16(x.dtype), x.device.id, "cupy")
    if type(x).__module__.split(".")[0] == "torch":
        t = x.detach() if getattr(x, "requires_grad", False) else x
        if not t.is_cuda:
            raise TypeError(f"{name}: torch tensor is on {t.device}, not on a CUDA device")
        if not t.is_contiguous():
            if not copy_ok:
                raise ValueError(f"{name}: must be C-contiguous")
            t = t.contiguous()
        d = _from_dlpack(t, name, "torch", copy_ok)
        d.obj = x
        d.keep = (d.keep, t)
        return d
    try:
        cai = getattr(x, "__cuda_array_interface__", None)
    except Exception:
        cai = None
    if cai is not None:
        return _as_dev(cp.asarray(x), name, copy_ok)  # zero copy; honours the producer's stream
    if hasattr(x, "__dlpack__"):
        return _from_dlpack(x, name, "other", copy_ok)
    raise TypeError(f"{name}: expected a CUDA array (CuPy, __cuda_array_interface__ or DLPack), "
                    f"got {type(x).__name__}")


def _cupy_of(d: _Dev):
    """A CuPy array viewing d's memory (no copy)."""
    cp = _cp
    if d.lib == "cupy":
        return d.obj
    if d.dtype == BF16:
        raise TypeError("bfloat16 is only supported for logits and float targets")
    mem = cp.cuda.UnownedMemory(d.ptr, max(d.size * d.itemsize, 1), d.keep, d.device)
    return cp.ndarray(d.shape, dtype=d.dtype, memptr=cp.cuda.MemoryPointer(mem, 0))


def _one_device(*ds) -> int:
    ids = sorted({d.device for d in ds if d is not None})
    if len(ids) > 1:
        raise ValueError(f"arrays on different GPUs {ids}; move them to one device first")
    return ids[0]


def _torch_record(t) -> None:
    """Tell torch's caching allocator that our stream uses this tensor (different streams)."""
    try:
        import torch

        s = _stream_ptr()
        if torch.cuda.current_stream(t.device).cuda_stream != s:
            t.record_stream(torch.cuda.ExternalStream(s, device=t.device))
    except Exception:  # pragma: no cover - best effort
        pass


_TORCH_DTYPES = {np.dtype(np.float16): "float16", np.dtype(np.float32): "float32",
                 np.dtype(np.float64): "float64", BF16: "bfloat16"}


def _new_like(x: _Dev, shape, dtype):
    """Empty array in the logits' library (torch for torch logits, else CuPy): (array, ptr)."""
    if x.lib == "torch":
        import torch

        a = torch.empty(tuple(shape), dtype=getattr(torch, _TORCH_DTYPES[dtype]),
                        device=torch.device("cuda", x.device))
        _torch_record(a)
        return a, a.data_ptr()
    cp = _cp
    if dtype == BF16:
        if x.lib != "cupy":
            raise TypeError("a bfloat16 result needs torch or CuPy bfloat16 logits; pass out=")
        dtype = x.obj.dtype
    a = cp.empty(tuple(shape), dtype=dtype)
    return a, a.data.ptr


def _inputs_used(*ds) -> None:
    for d in ds:
        if d is not None and d.lib == "torch":
            _torch_record(d.obj)


class _Keep(list):
    """Workspace allocator for the launchers: CuPy memory kept alive until the call returns
    (CuPy's pool is stream-ordered, so later reuse waits for our kernels)."""

    def alloc(self, nbytes: int) -> int:
        a = _cp.empty(int(nbytes), dtype=_cp.uint8)
        self.append(a)
        return a.data.ptr


# ------------------------------------------------------------------------------------------------
# validation (shared rules from _validate; device values are checked on the device)
# ------------------------------------------------------------------------------------------------
def _check_logits(x: _Dev) -> None:
    if x.dtype != BF16:
        V.check_dtype_logits(x)


def _check_target(t: _Dev, lay: V.Layout) -> tuple[bool, int]:
    if t.dtype == BF16:
        if t.shape != lay.shape:
            raise ValueError(
                f"target: float (class-probability) targets must have the shape of logits "
                f"{lay.shape}, got {t.shape}")
        return True, _X_CODES[BF16]
    return V.check_target(t, lay)


def _dev_weight(weight: Any, C: int, name: str = "weight"):
    if weight is None:
        return None
    d = _as_dev(weight, name)
    if d.dtype == BF16 or np.dtype(d.dtype).kind not in "fiub":
        raise TypeError(f"{name}: dtype {d.dtype} is not supported")
    if len(d.shape) != 1 or d.shape[0] != C:
        raise ValueError(f"{name}: expected shape ({C},) for {C} classes, got {d.shape}")
    return _cp.ascontiguousarray(_cupy_of(d), dtype=_cp.float64)  # values checked on the device


def _dev_pos_weight(pos_weight: Any, shape: tuple):
    """pos_weight[(e // inner) % len] over the flattened logits (as V.pos_weight_pattern)."""
    if pos_weight is None:
        return None, 1
    cp = _cp
    if np.ndim(pos_weight) == 0 and not interop.on_gpu(pos_weight):
        # a host scalar: filled on the device (no transfer); its value is checked there
        pw = cp.full((1,), float(pos_weight), cp.float64)
    else:
        d = _as_dev(pos_weight, "pos_weight")
        if d.dtype == BF16 or np.dtype(d.dtype).kind not in "fiub":
            raise TypeError(f"pos_weight: dtype {d.dtype} is not supported")
        pw = _cupy_of(d).astype(cp.float64)
    full, inner = V.pos_weight_layout(tuple(pw.shape), shape)
    if inner is None:  # several broadcast axes: materialised once (the size of the logits; rare)
        return cp.ascontiguousarray(cp.broadcast_to(pw.reshape(full), shape)).reshape(-1), 1
    return cp.ascontiguousarray(pw.reshape(-1)), inner


def _check_out(out: Any, x: _Dev) -> _Dev:
    o = _as_dev(out, "out", copy_ok=False)
    if o.shape != x.shape:
        raise ValueError(f"out: shape {o.shape} does not match logits {x.shape}")
    if o.dtype != x.dtype:
        raise ValueError(f"out: dtype {o.dtype} does not match logits dtype {x.dtype}")
    if o.device != x.device:
        raise ValueError(f"out: on GPU {o.device}, logits on GPU {x.device}")
    n = x.size * x.itemsize
    if o.ptr != x.ptr and o.ptr < x.ptr + n and x.ptr < o.ptr + n:
        raise ValueError("out: partially overlaps logits; pass logits itself for in place")
    return o


# ------------------------------------------------------------------------------------------------
# multi-class
# ------------------------------------------------------------------------------------------------
def _prep_ce(logits, target, axis, weight, ignore_index, label_smoothing, reduction):
    _modules()
    _check_pending()
    x = _as_dev(logits, "logits")
    _check_logits(x)
    t = _as_dev(target, "target")
    lay = V.resolve_layout(x.shape, axis)
    soft, tcode = _check_target(t, lay)
    ign, eps = V.check_options(ignore_index, label_smoothing, reduction)
    wd = None if weight is None else _as_dev(weight, "weight")
    dev = _one_device(x, t, wd)
    with _cp.cuda.Device(dev):
        w = _dev_weight(weight, lay.C)
    return x, t, lay, soft, tcode, w, ign, eps, dev


def _launch_ce(x, t, lay, soft, tcode, w, ign, eps, dev, *, probs=False, loss=True, grad=False,
               stats=False, reduction="mean", g=None, loss_out=None, ks=(), bins=0,
               per_sample=False):
    cp, cu = _modules()
    C = lay.C
    L = _layout(C if stats else 0, bins if stats else 0)
    f = cp.zeros(L["f_size"], cp.float64)
    i = cp.zeros(L["i_size"], cp.int64)
    keep = _Keep()
    args = dict(device=dev, stream=_stream_ptr(), x=x.ptr, xdt=_X_CODES[x.dtype], t=t.ptr,
                tdt=tcode, soft=soft, N=lay.N, C=C, inner=lay.inner, E=lay.E, S=lay.S,
                rows=lay.rows, w=None if w is None else w.data.ptr, ignore=ign, eps=eps,
                probs=probs, loss=loss, grad=grad, stats=stats, reduction=_RED[reduction],
                ks=list(ks), g=g, loss_out=loss_out, bins=bins, f=f.data.ptr, i=i.data.ptr)
    sample = None
    if per_sample:
        sample = BatchStats.new_sample_arrays(lay.N, C, xp=cp)
        elem = cp.empty(lay.E, cp.float64) if lay.S > 1 else None
        keep.append(elem)
        args.update(per_sample=True, s_loss=sample["sample_loss_sum"].data.ptr,
                    s_count=sample["sample_count"].data.ptr,
                    s_correct=sample["sample_correct"].data.ptr,
                    s_inter=sample["sample_intersection"].data.ptr,
                    s_true=sample["sample_true"].data.ptr, s_pred=sample["sample_pred"].data.ptr,
                    elem_loss=None if elem is None else elem.data.ptr)
    cu.ce(args, keep.alloc)
    _inputs_used(x, t)
    _track(i, _ce_error_maker(C, ign, None if soft else t.dtype))
    return f, i, L, sample


def _loss_out(x: _Dev, lay, reduction):
    if reduction != "none":
        return None, None
    return _new_like(x, lay.target_shape,
                     np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32))


def _grad_out(x: _Dev, out):
    if out is None:
        return _new_like(x, x.shape, x.dtype)
    o = _check_out(out, x)
    return out, o.ptr


def cross_entropy(logits, target, *, axis=1, weight=None, ignore_index=-100, label_smoothing=0.0,
                  reduction="mean", from_logits=True):
    x, t, lay, soft, tcode, w, ign, eps, dev = _prep_ce(
        logits, target, axis, weight, ignore_index, label_smoothing, reduction)
    with _cp.cuda.Device(dev):
        lo, lo_ptr = _loss_out(x, lay, reduction)
        f, _, _, _ = _launch_ce(x, t, lay, soft, tcode, w, ign, eps, dev, probs=not from_logits,
                                reduction=reduction, loss_out=lo_ptr)
    return lo if reduction == "none" else f[F_LOSS]


def cross_entropy_grad(logits, target, *, axis=1, weight=None, ignore_index=-100,
                       label_smoothing=0.0, reduction="mean", from_logits=True, out=None):
    x, t, lay, soft, tcode, w, ign, eps, dev = _prep_ce(
        logits, target, axis, weight, ignore_index, label_smoothing, reduction)
    with _cp.cuda.Device(dev):
        g, g_ptr = _grad_out(x, out)
        lo, lo_ptr = _loss_out(x, lay, reduction)
        f, _, _, _ = _launch_ce(x, t, lay, soft, tcode, w, ign, eps, dev, probs=not from_logits,
                                grad=True, reduction=reduction, g=g_ptr, loss_out=lo_ptr)
    return (lo if reduction == "none" else f[F_LOSS]), g


def accuracy(logits, target, *, axis=1, top_k=1, ignore_index=-100):
    x, t, lay, soft, tcode, _, ign, _, dev = _prep_ce(logits, target, axis, None, ignore_index,
                                                      0.0, "mean")
    if isinstance(top_k, (list, tuple)):
        raise TypeError(f"top_k: expected an int, got {top_k!r}")
    ks = V.check_top_k(top_k, lay.C)
    with _cp.cuda.Device(dev):
        f, _, _, _ = _launch_ce(x, t, lay, soft, tcode, None, ign, 0.0, dev, loss=False, ks=ks)
    return f[F_ACC]


class DeviceBatchStats(BatchStats):
    """`BatchStats` of a GPU call: arrays are CuPy arrays and scalars 0-d CuPy arrays (views of two
    small device slabs), so nothing was copied to the host. ``float(s.loss)`` or
    ``s.confusion.get()`` fetch single numbers, `get()` everything at once; `Metrics.update` adds
    the slabs on the device."""

    @property
    def loss(self):
        """The "mean" loss (0-d CuPy), bit for bit the GPU `cross_entropy(..., "mean")`."""
        return self._device.f[F_MEAN]

    @property
    def accuracy(self):
        """Top-1 accuracy (0-d CuPy; NaN when nothing was counted)."""
        ks = self._device.ks
        k = 1 if 1 in ks else min(ks)
        return self._device.f[F_ACC + ks.index(k)]

    def get(self) -> BatchStats:
        """A host `BatchStats` with the same numbers: NumPy arrays, Python ints and floats (two
        small slab copies, plus the per-sample arrays if any). A synchronisation point: a
        deferred ValueError of an earlier call is raised here. ``grad`` stays on the GPU."""
        synchronize()
        d = self._device
        sample = None
        if self.sample_count is not None:
            sample = {k: getattr(self, k).get() for k in BatchStats.new_sample_arrays(0, 0)}
        return _batchstats(d.f.get(), d.i.get(), d.L, C=d.C, bins=d.bins, ks=d.ks,
                           eps=self.label_smoothing, soft=self.soft, E=self.elements,
                           grad=self.grad, sample=sample, binary=d.binary, host=True,
                           confusion=self.confusion is not None)


class _Slabs:
    """The device result slabs behind a DeviceBatchStats (what Metrics accumulates)."""

    __slots__ = ("f", "i", "L", "ks", "binary", "C", "bins")

    def __init__(self, f, i, L, ks, binary, C, bins):
        self.f, self.i, self.L, self.ks, self.binary, self.C, self.bins = f, i, L, list(ks), \
            binary, C, bins


def _batchstats(f, i, L, *, C, bins, ks, eps, soft, E, grad, sample, binary, host=False,
                confusion=True):
    """BatchStats over the result slabs: device slabs give a DeviceBatchStats of views, host
    slabs (host=True, from DeviceBatchStats.get) a plain BatchStats of Python scalars. The
    CUDA kernels always count the (C, C) confusion; the per-class predicted counts and true
    positives are its column sums and diagonal, and ``confusion=False`` only leaves it out of
    the result."""
    fs = (lambda k: float(f[k])) if host else (lambda k: f[k])
    is_ = (lambda k: int(i[k])) if host else (lambda k: i[k])

    def iv(name, n):
        o = L[name]
        return i[o:o + n]

    cm = iv("i_confusion", C * C).reshape(C, C)
    fields = dict(
        num_classes=C, bins=bins, loss_sum=fs(F_LOSS_SUM), weight_sum=fs(F_WSUM),
        nll_sum=fs(F_NLL), smooth_sum=fs(F_SMOOTH), label_smoothing=eps, soft=soft,
        count=is_(I_COUNT), ignored=is_(I_IGNORED), nonfinite=is_(I_NONFINITE),
        nonfinite_rows=is_(I_NFROWS),
        correct={k: is_(I_CORRECT + j) for j, k in enumerate(ks)},
        confusion=cm if confusion else None, class_pred=cm.sum(axis=0),
        class_tp=cm.diagonal().copy(), class_loss_sum=f[L["f_class_loss"]:L["f_class_loss"] + C],
        class_count=iv("i_class_count", C), true_prob_hist=iv("i_true_hist", bins),
        conf_hist=iv("i_conf_hist", bins), conf_correct=iv("i_conf_correct", bins),
        conf_sum=f[L["f_conf_sum"]:L["f_conf_sum"] + bins], margin_hist=iv("i_margin_hist", bins),
        true_prob_sum=fs(F_TPS), below_inv_e=is_(I_BELOW), entropy_sum=fs(F_ENT), elements=E,
        binary=binary, prob_hist=iv("i_prob_hist", bins) if binary else None, grad=grad,
        **(sample or {}))
    if host:
        return BatchStats(**fields)
    st = DeviceBatchStats(**fields)
    st._device = _Slabs(f, i, L, ks, binary, C, bins)
    return st


def evaluate(logits, target, *, axis=1, weight=None, ignore_index=-100, label_smoothing=0.0,
             top_k=(1,), bins=20, per_sample=False, grad=False, out=None,
             confusion=None) -> BatchStats:
    x, t, lay, soft, tcode, w, ign, eps, dev = _prep_ce(
        logits, target, axis, weight, ignore_index, label_smoothing, "mean")
    ks = V.check_top_k(top_k, lay.C)
    bins = V.check_bins(bins)
    want_cm = V.check_confusion(confusion, lay.C)
    if not grad and out is not None:
        raise ValueError("out: only used with grad=True")
    with _cp.cuda.Device(dev):
        g, g_ptr = _grad_out(x, out) if grad else (None, None)
        f, i, L, sample = _launch_ce(x, t, lay, soft, tcode, w, ign, eps, dev, grad=grad,
                                     stats=True, g=g_ptr, ks=ks, bins=bins,
                                     per_sample=bool(per_sample))
        return _batchstats(f, i, L, C=lay.C, bins=bins, ks=ks, eps=eps, soft=soft, E=lay.E,
                           grad=g, sample=sample, binary=False, confusion=want_cm)


# ------------------------------------------------------------------------------------------------
# binary
# ------------------------------------------------------------------------------------------------
def _prep_bce(logits, target, reduction, name_t="target"):
    _modules()
    _check_pending()
    x = _as_dev(logits, "logits")
    _check_logits(x)
    t = _as_dev(target, name_t)
    if t.shape != x.shape:
        raise ValueError(f"{name_t}: shape {t.shape} does not match logits {x.shape}")
    if t.dtype == BF16:
        tfloat, tcode = True, _X_CODES[BF16]
    else:
        dt = np.dtype(t.dtype)
        if dt.kind == "f":
            if dt not in _X_CODES:
                raise TypeError(f"{name_t}: dtype {dt.name} is not supported")
            tfloat, tcode = True, _X_CODES[dt]
        elif dt.kind in "iub":
            tfloat, tcode = False, V.label_code(dt)
        else:
            raise TypeError(f"{name_t}: dtype {dt.name} is not supported")
    if reduction not in V.REDUCTIONS:
        raise ValueError(f"reduction: must be one of {V.REDUCTIONS}, got {reduction!r}")
    return x, t, tfloat, tcode


def _launch_bce(x, t, tfloat, tcode, pos_weight, *, probs=False, grad=False, stats=False,
                threshold=0.0, reduction="mean", g=None, loss_out=None, bins=0):
    cp, cu = _modules()
    pwd = _as_dev(pos_weight, "pos_weight") if interop.on_gpu(pos_weight) else None
    dev = _one_device(x, t, pwd)
    with cp.cuda.Device(dev):
        pw, pwi = _dev_pos_weight(pos_weight, x.shape)
        L = _layout(2 if stats else 0, bins if stats else 0)
        f = cp.zeros(L["f_size"], cp.float64)
        i = cp.zeros(L["i_size"], cp.int64)
        keep = _Keep()
        args = dict(device=dev, stream=_stream_ptr(), x=x.ptr, xdt=_X_CODES[x.dtype], t=t.ptr,
                    tdt=tcode, tfloat=tfloat, E=x.size, pw=None if pw is None else pw.data.ptr,
                    pw_len=0 if pw is None else int(pw.size), pw_inner=pwi, probs=probs,
                    grad=grad, stats=stats, reduction=_RED[reduction],
                    threshold=float(threshold), g=g, loss_out=loss_out, bins=bins, f=f.data.ptr,
                    i=i.data.ptr)
        cu.bce(args, keep.alloc)
        _inputs_used(x, t)
        _track(i, _bce_error)
    return f, i, L, dev


def binary_cross_entropy(logits, target, *, pos_weight=None, reduction="mean", from_logits=True):
    x, t, tfloat, tcode = _prep_bce(logits, target, reduction)
    with _cp.cuda.Device(x.device):
        lo, lo_ptr = _loss_out(x, V.Layout(x.shape, 0, 1, 1, x.size, 1, 1, True, x.shape),
                               reduction)
        f, _, _, _ = _launch_bce(x, t, tfloat, tcode, pos_weight, probs=not from_logits,
                                 reduction=reduction, loss_out=lo_ptr)
    return lo if reduction == "none" else f[F_LOSS]


def binary_cross_entropy_grad(logits, target, *, pos_weight=None, reduction="mean",
                              from_logits=True, out=None):
    x, t, tfloat, tcode = _prep_bce(logits, target, reduction)
    with _cp.cuda.Device(x.device):
        g, g_ptr = _grad_out(x, out)
        lo, lo_ptr = _loss_out(x, V.Layout(x.shape, 0, 1, 1, x.size, 1, 1, True, x.shape),
                               reduction)
        f, _, _, _ = _launch_bce(x, t, tfloat, tcode, pos_weight, probs=not from_logits,
                                 grad=True, reduction=reduction, g=g_ptr, loss_out=lo_ptr)
    return (lo if reduction == "none" else f[F_LOSS]), g


def binary_accuracy(logits, target, *, threshold=0.0):
    x, t, tfloat, tcode = _prep_bce(logits, target, "mean")
    with _cp.cuda.Device(x.device):
        f, _, _, _ = _launch_bce(x, t, tfloat, tcode, None, threshold=float(threshold))
    return f[F_ACC]


def evaluate_binary(logits, target, *, pos_weight=None, threshold=0.0, bins=20, grad=False,
                    out=None) -> BatchStats:
    x, t, tfloat, tcode = _prep_bce(logits, target, "mean")
    bins = V.check_bins(bins)
    if not grad and out is not None:
        raise ValueError("out: only used with grad=True")
    with _cp.cuda.Device(x.device):
        g, g_ptr = _grad_out(x, out) if grad else (None, None)
        f, i, L, _ = _launch_bce(x, t, tfloat, tcode, pos_weight, grad=grad, stats=True,
                                 threshold=threshold, g=g_ptr, bins=bins)
        return _batchstats(f, i, L, C=2, bins=bins, ks=[1], eps=0.0, soft=False, E=x.size,
                           grad=g, sample=None, binary=True)


# ------------------------------------------------------------------------------------------------
# Metrics on the device (called from lossdiag.core.metrics.Metrics)
# ------------------------------------------------------------------------------------------------
class _MetricsDelta:
    """Sums of the GPU batches added since the last synchronisation (same slab layout)."""

    __slots__ = ("f", "i", "img", "imgi", "L", "device")

    def __init__(self, s: _Slabs, imagewise: bool):
        cp = _cp
        self.f = cp.zeros_like(s.f)
        self.i = cp.zeros_like(s.i)
        self.img = cp.zeros(6, cp.float64) if imagewise else None   # iou x3, dice x3
        self.imgi = cp.zeros(4, cp.int64) if imagewise else None    # defined x3, images
        self.L = s.L
        self.device = s.f.device.id


def metrics_options(m, logits) -> tuple[dict, dict]:
    """m.options / m.binary_options with host `weight` / `pos_weight` replaced by copies on the
    logits' GPU: uploaded once per device, asynchronously from pinned memory, and cached."""
    cp, _ = _modules()
    dev = _as_dev(logits, "logits").device
    cache = m.__dict__.setdefault("_device_options", {})
    if dev not in cache:
        import cupyx

        opts, bopts, keep = dict(m.options), dict(m.binary_options), []
        with cp.cuda.Device(dev):
            for d, k in ((opts, "weight"), (bopts, "pos_weight")):
                v = d.get(k)
                if v is not None and not interop.on_gpu(v):
                    a = np.asarray(v, dtype=np.float64)
                    pinned = cupyx.empty_pinned(a.shape, np.float64)
                    pinned[...] = a
                    d[k] = cp.empty(a.shape, cp.float64)
                    d[k].set(pinned, stream=cp.cuda.get_current_stream())
                    keep.append(pinned)
        cache[dev] = (opts, bopts, keep)
    return cache[dev][0], cache[dev][1]


def metrics_update(m, s) -> None:
    """Add a GPU BatchStats into Metrics `m` without synchronising."""
    cp, _ = _modules()
    d = s._device
    dl = getattr(m, "_dev", None)
    if dl is not None and (dl.device != d.f.device.id or dl.f.shape != d.f.shape):
        metrics_pull(m)
        dl = None
    with cp.cuda.Device(d.f.device.id):
        if dl is None:
            dl = _MetricsDelta(d, m.imagewise)
        dl.f += d.f
        dl.i += d.i
        if m.imagewise:
            _imagewise_add(dl, s)
    m._dev = dl


def _nanmean_rows(a):
    cp = _cp
    ok = ~cp.isnan(a)
    n = ok.sum(axis=1)
    s = cp.where(ok, a, 0.0).sum(axis=1)
    return cp.where(n > 0, s / cp.maximum(n, 1), cp.nan)


def _imagewise_add(dl: _MetricsDelta, s) -> None:
    cp = _cp
    inter = s.sample_intersection.astype(cp.float64)
    tru = s.sample_true.astype(cp.float64)
    pred = s.sample_pred.astype(cp.float64)
    union = tru + pred - inter
    denom = tru + pred
    undefined = union == 0
    iou = cp.where(undefined, cp.nan, inter / cp.where(undefined, 1.0, union))
    dice = cp.where(denom == 0, cp.nan, 2 * inter / cp.where(denom == 0, 1.0, denom))
    for k, fill in enumerate((math.nan, 0.0, 1.0)):
        io = _nanmean_rows(cp.where(undefined, fill, iou))
        di = _nanmean_rows(cp.where(undefined, fill, dice))
        ok = ~cp.isnan(io)
        dl.img[k] += cp.where(ok, io, 0.0).sum()
        dl.img[3 + k] += cp.where(ok, di, 0.0).sum()
        dl.imgi[k] += ok.sum()
    dl.imgi[3] += inter.shape[0]


def metrics_pull(m) -> None:
    """Add the device sums into m._state (a synchronisation point; deferred errors raise here,
    before anything is added, and the device sums are kept)."""
    dl = getattr(m, "_dev", None)
    if dl is None:
        return
    synchronize()
    fh, ih = dl.f.get(), dl.i.get()
    L, C, bins, st = dl.L, m.num_classes, m.bins, m._state
    if m.binary:
        C = 2

    def iv(name, n):
        return ih[L[name]:L[name] + n]

    cm = iv("i_confusion", C * C).reshape(C, C)
    if "confusion" in st:
        st["confusion"] = st["confusion"] + cm
    st["class_pred"] = st["class_pred"] + cm.sum(axis=0)
    st["class_tp"] = st["class_tp"] + cm.diagonal()
    st["class_loss_sum"] = st["class_loss_sum"] + fh[L["f_class_loss"]:L["f_class_loss"] + C]
    st["class_count"] = st["class_count"] + iv("i_class_count", C)
    st["true_prob_hist"] = st["true_prob_hist"] + iv("i_true_hist", bins)
    st["conf_hist"] = st["conf_hist"] + iv("i_conf_hist", bins)
    st["conf_correct"] = st["conf_correct"] + iv("i_conf_correct", bins)
    fix = iv("i_conf_fix", 3 * bins).astype(np.float64).reshape(3, bins)
    st["conf_sum"] = st["conf_sum"] + (fix[0] * 2.0 ** -21 + fix[1] * 2.0 ** -42
                                       + fix[2] * 2.0 ** -63)
    st["margin_hist"] = st["margin_hist"] + iv("i_margin_hist", bins)
    if m.binary:
        st["prob_hist"] = st["prob_hist"] + iv("i_prob_hist", bins)
    for k, slot in (("nll_sum", F_NLL), ("smooth_sum", F_SMOOTH), ("weight_sum", F_WSUM),
                    ("true_prob_sum", F_TPS), ("entropy_sum", F_ENT)):
        st[k] = st[k] + fh[slot]
    for k, slot in (("count", I_COUNT), ("ignored", I_IGNORED), ("nonfinite", I_NONFINITE),
                    ("nonfinite_rows", I_NFROWS), ("below_inv_e", I_BELOW),
                    ("elements", I_ELEMENTS)):
        st[k] = st[k] + ih[slot]
    nk = st["correct"].shape[0]
    st["correct"] = st["correct"] + ih[I_CORRECT:I_CORRECT + nk]
    if dl.img is not None and "img_defined" in st:
        img, imgi = dl.img.get(), dl.imgi.get()
        st["img_iou_sum"] = st["img_iou_sum"] + img[:3]
        st["img_dice_sum"] = st["img_dice_sum"] + img[3:]
        st["img_defined"] = st["img_defined"] + imgi[:3]
        st["images"] = st["images"] + imgi[3]
    m._dev = None


# ------------------------------------------------------------------------------------------------
# benchmark references
# ------------------------------------------------------------------------------------------------
def mem_read(a: Any) -> Any:
    """Read every byte of a device array once (read-bandwidth reference); returns a 0-d dummy."""
    cp, cu = _modules()
    d = _as_dev(a, "a")
    with cp.cuda.Device(d.device):
        out = cp.zeros((), cp.uint64)
        cu.mem_read(d.device, _stream_ptr(), d.ptr, d.size * d.itemsize, out.data.ptr)
    return out


def mem_copy(dst: Any, src: Any) -> None:
    """Device-to-device copy of src into dst (read + write bandwidth reference)."""
    cp, _ = _modules()
    s, t = _as_dev(src, "src"), _as_dev(dst, "dst", copy_ok=False)
    n = s.size * s.itemsize
    if t.size * t.itemsize != n:
        raise ValueError("mem_copy: sizes differ")
    with cp.cuda.Device(t.device):
        cp.cuda.runtime.memcpyAsync(t.ptr, s.ptr, n, cp.cuda.runtime.memcpyDeviceToDevice,
                                    _stream_ptr())
