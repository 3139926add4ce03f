"""Framework tensors in the plain (NumPy-style) API: zero-copy views in, tensors back out.

The CPU backend works on NumPy arrays. A CPU torch tensor is read through ``Tensor.numpy()``
(a view of the same memory, whatever its strides; a tensor that requires grad is detached first,
which is also a view), and array results computed for torch inputs (gradients, per-element losses)
come back as torch tensors over the NumPy result (``torch.from_numpy``, no copy).

NumPy has no bfloat16, so bfloat16 data travels as its uint16 bits under the tagged dtype `BF16`
(a uint16 dtype carrying ``metadata={"lossdiag": "bfloat16"}``); the CPU backend recognises it,
and ml_dtypes' ``bfloat16`` NumPy dtype, and hands the kernels the bfloat16 code.

Nothing here imports a framework: a tensor can only reach lossdiag if its framework is already
imported, so ``sys.modules`` tells whether to look.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

BF16 = np.dtype(np.uint16, metadata={"lossdiag": "bfloat16"})
BF16_CODE = 3  # the kernels' dtype code (cpp/common.h DType::BF16, as the CUDA backend)


# NumPy's own objects for its builtin numeric dtypes (what arrays of those types carry) are never
# bfloat16: they are recognised by identity, without building a dtype and looking up its name.
_BUILTIN = tuple(np.dtype(c) for c in "?bBhHiIlLqQefdgFDG")
_BUILTIN_IDS = frozenset(id(d) for d in _BUILTIN)


def is_bf16(dtype: Any) -> bool:
    """True for the tagged uint16 dtype and for ml_dtypes' bfloat16."""
    if id(dtype) in _BUILTIN_IDS:
        return False
    dt = np.dtype(dtype)
    md = dt.metadata
    if md is not None and md.get("lossdiag") == "bfloat16":
        return True
    return dt.name == "bfloat16" and dt.itemsize == 2


def _torch_of(x: Any) -> Any:
    """The torch module if ``x`` is a torch.Tensor (torch already imported), else None."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(x, torch.Tensor):
        return None
    return torch


def is_tensor(x: Any) -> bool:
    return _torch_of(x) is not None


def to_numpy(x: Any, name: str) -> np.ndarray | None:
    """A NumPy view of a CPU torch tensor (None when ``x`` is not a tensor).

    The view has the tensor's shape and strides (no copy); a tensor that requires grad is read
    through ``detach()`` (metrics never need the graph); bfloat16 comes back under `BF16`.
    """
    torch = _torch_of(x)
    if torch is None:
        return None
    t = x.detach()
    if t.device.type != "cpu":
        raise TypeError(f"{name}: torch tensor on device {t.device} cannot be read by the CPU "
                        "kernels; pass CPU tensors, or CUDA tensors for every array argument")
    if t.layout != torch.strided:
        raise TypeError(f"{name}: {t.layout} torch tensors are not supported; pass a dense "
                        "tensor (.to_dense())")
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(BF16)
    try:
        return t.numpy()
    except (TypeError, RuntimeError) as exc:
        raise TypeError(f"{name}: torch dtype {t.dtype} is not supported") from exc


def refuse_graph(x: Any, func: str, alternative: str) -> None:
    """A loss function returns a plain number: refuse a tensor whose autograd graph it would
    silently drop, and say where the differentiable version is."""
    torch = _torch_of(x)
    if torch is None or not x.requires_grad or not torch.is_grad_enabled():
        return
    raise TypeError(
        f"logits: the tensor requires grad, but lossdiag.{func} returns a plain number and would "
        f"silently drop the autograd graph; use lossdiag.torch.{alternative}(...) for a "
        f"differentiable loss (same arguments as torch.nn.functional.{alternative}), or pass "
        "logits.detach() if you only want the value")


def out_array(out: Any, name: str = "out") -> Any:
    """``out=`` as a NumPy view when it is a torch tensor (written in place), else unchanged.

    Writing a gradient into a tensor that autograd knows about is an in-place change: its version
    counter is bumped, so a backward that saved it fails loudly instead of reading the gradient.
    """
    torch = _torch_of(out)
    if torch is None:
        return out
    a = to_numpy(out, name)
    torch.autograd.graph.increment_version(out)
    return a


def like_input(ref: Any, arr: Any, out: Any = None) -> Any:
    """An array result in the library of the logits ``ref``: a torch tensor over ``arr`` (no copy)
    for torch logits, ``arr`` itself otherwise. An ``out=`` array is returned as given."""
    if arr is None:
        return None
    if out is not None:
        return out
    torch = _torch_of(ref)
    if torch is None or not isinstance(arr, np.ndarray):
        return arr
    if is_bf16(arr.dtype):
        return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(arr)


_DLPACK_CUDA = (2, 3, 13)  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged


def on_gpu(x: Any) -> bool:
    """Whether ``x`` lives on a CUDA device (CuPy, ``__cuda_array_interface__``, CUDA DLPack)."""
    if x is None or type(x).__module__ == "numpy":
        return False
    if hasattr(x, "__cuda_array_interface__"):
        return True
    dev = getattr(x, "__dlpack_device__", None)
    if dev is not None:
        try:
            return int(dev()[0]) in _DLPACK_CUDA
        except Exception:
            return False
    return False
