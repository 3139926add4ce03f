"""lossdiag.info() lists the "cuda" backend only where it can be used, and says why not."""

from __future__ import annotations

import sys
import types
from typing import Any

import lossdiag
import pytest


def _fake_cuda(monkeypatch: pytest.MonkeyPatch, device_info: Any) -> None:
    mod = types.ModuleType("lossdiag._cuda")
    mod.device_info = device_info  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lossdiag._cuda", mod)
    monkeypatch.setattr(lossdiag, "_cuda", mod, raising=False)


def _no_device() -> dict:
    raise RuntimeError("no usable CUDA device: cudaErrorNoDevice (no CUDA-capable device)")


def _device() -> dict:
    return {"name": "Fake GPU", "device": 0, "compute_capability": "9.0"}


def test_info_here_is_consistent() -> None:
    info = lossdiag.info()
    assert info["backends"][0] == "cpu"
    assert ("cuda" in info["backends"]) == (info["cuda_unusable_reason"] is None)
    if not info["cuda_built"]:
        assert "cuda" not in info["backends"]
        assert "without its CUDA backend" in info["cuda_unusable_reason"]


def test_built_without_a_device_is_not_a_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cuda(monkeypatch, _no_device)
    info = lossdiag.info()
    assert info["backends"] == ["cpu"]
    assert info["cuda_built"] is True
    assert info["cuda_unusable_reason"].startswith("no usable CUDA device")
    assert info["cuda_device"].startswith("unusable")


def test_device_without_cupy_is_not_a_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cuda(monkeypatch, _device)
    monkeypatch.setattr("lossdiag.core.cuda._cp", None)
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    info = lossdiag.info()
    assert info["backends"] == ["cpu"]
    assert "CuPy" in info["cuda_unusable_reason"]
    assert info["cuda_device"]["name"] == "Fake GPU"


def test_device_and_cupy_make_cuda_a_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cuda(monkeypatch, _device)
    monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))
    info = lossdiag.info()
    assert info["backends"] == ["cpu", "cuda"]
    assert info["cuda_unusable_reason"] is None
