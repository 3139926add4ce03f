"""Fake cupy.cuda.runtime (see the package docstring)."""

import ctypes

memcpyDeviceToDevice = 3


def getDeviceCount():
    return 1


def memcpyAsync(dst, src, size, kind, stream):
    ctypes.memmove(dst, src, size)
