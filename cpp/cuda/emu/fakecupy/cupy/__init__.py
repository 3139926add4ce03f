"""A NumPy stand-in for the parts of CuPy that lossdiag.core.cuda and the tests use, so the GPU
code path (lossdiag.core.cuda + the kernel source run by the host emulator) can be exercised
without a GPU.
Test tool only (cpp/cuda/emu/run_emu_tests.py); arrays live in host memory."""

import numpy as _np

from . import cuda  # noqa: F401

float16, float32, float64 = _np.float16, _np.float32, _np.float64
int8, int16, int32, int64 = _np.int8, _np.int16, _np.int32, _np.int64
uint8, uint16, uint32, uint64 = _np.uint8, _np.uint16, _np.uint32, _np.uint64
bool_ = _np.bool_
nan = _np.nan


class _Data:
    __slots__ = ("ptr",)

    def __init__(self, a):
        self.ptr = a.__array_interface__["data"][0]


class _Device:
    id = 0


class ndarray(_np.ndarray):
    def __getitem__(self, key):
        # CuPy gives a 0-d array, never a NumPy scalar, for a single element (as the GPU path's
        # reductions return them)
        r = super().__getitem__(key)
        return r if isinstance(r, ndarray) else _np.asarray(r).view(ndarray)

    @property
    def data(self):
        return _Data(self)

    @property
    def device(self):
        return _Device()

    def get(self, stream=None, order="C", out=None, blocking=True):
        a = _np.array(self, copy=True, subok=False)
        if out is not None:
            out[...] = a
            return out
        return a

    def set(self, arr, stream=None):
        self[...] = arr

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "version": 3,
                "data": (self.data.ptr, False),
                "strides": None if self.flags.c_contiguous else self.strides}


def _w(a):
    return _np.asarray(a).view(ndarray)


def asarray(a, dtype=None):
    if isinstance(a, ndarray):
        return a if dtype is None else a.astype(dtype)
    return _w(_np.array(a, dtype=dtype, copy=True))


def asnumpy(a):
    return _np.array(a, copy=True, subok=False)


def zeros(*a, **k): return _w(_np.zeros(*a, **k))
def full(*a, **k): return _w(_np.full(*a, **k))
def empty(*a, **k): return _w(_np.empty(*a, **k))
def zeros_like(*a, **k): return _w(_np.zeros_like(*a, **k))
def ascontiguousarray(a, dtype=None): return _w(_np.ascontiguousarray(a, dtype=dtype))
def where(*a): return _w(_np.where(*a))
def isnan(a): return _w(_np.isnan(a))
def maximum(a, b): return _w(_np.maximum(a, b))
def broadcast_to(a, s): return _w(_np.broadcast_to(a, s))
