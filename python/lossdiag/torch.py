"""lossdiag.torch: fused cross-entropy losses for PyTorch, computed with lossdiag's kernels.

Drop-in replacements for ``torch.nn.functional.cross_entropy`` / ``nn.CrossEntropyLoss`` and
``binary_cross_entropy_with_logits`` / ``nn.BCEWithLogitsLoss``: same arguments, same values, same
gradients. The difference is how the work is done. The forward computes the loss **and** the
gradient with respect to the logits in one pass over memory (one read of the logits, one write
of the gradient) and keeps the gradient; the backward only scales it by the incoming gradient
(in place, and not at all when that gradient is exactly 1, the usual ``loss.backward()``).
torch's own loss reads and writes logits-sized tensors five or six times over the two passes.

* ``inplace_backward=True`` writes the gradient into the logits' own buffer: no logits-sized
  allocation at all. **The logits are destroyed**: after the loss call their memory holds the
  gradient. Use it when nothing reads the logits after the loss (metrics before it); autograd
  refuses the backward of any other operation that saved them (their version counter is bumped).
* On the CPU the gradient buffer is recycled from one call to the next once no tensor uses it
  any more (a fresh logits-sized buffer costs page faults on every step); at most two are kept,
  `empty_cache()` releases them.
* Tensors in, tensors out, on the logits' device: CPU tensors go to the compiled CPU kernels as
  zero-copy views, CUDA tensors to lossdiag's CUDA backend through DLPack (on torch's current
  stream; it needs CuPy). float16, bfloat16, float32, float64 logits; float16 and bfloat16 are
  computed in float32, losses are summed in float64.
* Layouts: ``(N, C)``, ``(N, C, d1, ..., dk)``, unbatched ``(C,)``, and ``torch.channels_last``
  tensors, which are read in their memory order (NHWC) without a copy. Other non-contiguous
  logits are copied once. An ``(N, H, W, C)`` tensor is used as ``x.permute(0, 3, 1, 2)``: a free
  view that is exactly a channels-last NCHW tensor.
* The operations are ``torch.library`` custom ops (``torch.ops.lossdiag.cross_entropy`` and
  ``torch.ops.lossdiag.binary_cross_entropy_with_logits``) with autograd and fake (meta)
  implementations, so ``torch.compile`` traces a model that uses them without a graph break.
  Under ``torch.compile`` ``inplace_backward`` is ignored (the compiler owns the buffers).

Not supported (each raises a clear error): gradients with respect to the target, ``weight`` or
``pos_weight``; double backward (``create_graph=True``); with ``inplace_backward``, logits that
are a leaf tensor requiring grad (or a view of one).

Example:
    >>> import torch, lossdiag.torch as ldt
    >>> x = torch.randn(4, 3, 8, 8, requires_grad=True)
    >>> y = torch.randint(0, 3, (4, 8, 8))
    >>> loss = ldt.cross_entropy(x, y, label_smoothing=0.1)
    >>> loss.backward()
    >>> ref = torch.nn.functional.cross_entropy(x, y, label_smoothing=0.1)
    >>> bool(torch.allclose(loss, ref)), tuple(x.grad.shape)
    (True, (4, 3, 8, 8))
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .core import api

if not hasattr(torch.library, "custom_op"):  # pragma: no cover - old torch
    raise ImportError(f"lossdiag.torch needs torch>=2.4 (torch.library.custom_op); this is torch "
                      f"{torch.__version__}")

__all__ = [
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "empty_cache",
]

_REDUCTIONS = ("none", "mean", "sum")
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def _reduction(reduction: Any, size_average: Any, reduce: Any) -> str:
    if size_average is not None or reduce is not None:  # deprecated torch arguments, as torch
        from torch.nn import _reduction as _R

        reduction = _R.legacy_get_string(size_average, reduce)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _check_logits(x: Any) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"input: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOATS:
        raise TypeError(f"input: dtype {x.dtype} is not supported; use float16, bfloat16, "
                        "float32 or float64 logits")


def _check_other(t: Any, name: str, x: Tensor) -> None:
    if t is None:
        return
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.device != x.device:
        raise ValueError(f"{name}: on {t.device} but input on {x.device}; move it to one device")
    if t.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            f"{name}: requires grad, but lossdiag.torch only differentiates with respect to the "
            f"input (logits); pass {name}.detach(), or use torch.nn.functional for gradients "
            f"with respect to the {name}")


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def _inplace_ok(x: Tensor, inplace: bool, needs_grad: bool) -> bool:
    """Whether the gradient may overwrite the logits (refusing what autograd would refuse)."""
    if not (inplace and needs_grad) or _compiling():
        return False
    base = x if x._base is None else x._base
    if base.is_leaf and base.requires_grad:
        raise RuntimeError(
            "inplace_backward=True would overwrite a leaf tensor that requires grad (or a view "
            "of one); it is meant for logits computed by a model. Use inplace_backward=False")
    return True


def _class_last(x: Tensor, *others: Tensor | None) -> tuple[Tensor, list, int]:
    """Read x in its memory order: (x, others, axis) with x contiguous and the class axis 1 or
    -1. Channels-last tensors (class axis innermost in memory) are permuted to (N, d.., C): a
    view, no copy. Tensors in ``others`` that have x's shape follow the same permutation (they
    are copied only if their memory order differs)."""
    if x.is_contiguous():
        return x, [None if o is None else o.contiguous() for o in others], 1
    if x.dim() > 2:
        perm = (0, *range(2, x.dim()), 1)
        xp = x.permute(perm)
        if xp.is_contiguous():
            out = []
            for o in others:
                if o is not None and o.dim() == x.dim():
                    o = o.permute(perm)
                out.append(None if o is None else o.contiguous())
            return xp, out, -1
    return x.contiguous(), [None if o is None else o.contiguous() for o in others], 1


def _loss_dtype(x: Tensor) -> torch.dtype:
    """The ops' loss dtype: the compute dtype (float32, float64 for float64 logits)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _as_loss(v: Any, like: Tensor) -> Tensor:
    """A kernel's loss (Python float, NumPy-backed tensor, 0-d CuPy array) as a tensor of the
    compute dtype on the logits' device."""
    dt = _loss_dtype(like)
    if isinstance(v, Tensor):
        return v.to(dt)
    if isinstance(v, float):
        return torch.tensor(v, dtype=dt, device=like.device)
    return torch.from_dlpack(v).to(dt)  # 0-d CuPy: still on the GPU, no synchronisation


def _user_dtype(loss: Tensor, x: Tensor) -> Tensor:
    """The loss in torch's dtype: the input's, or float32 for float16/bfloat16 input under
    autocast (where torch upcasts the logits to float32; lossdiag computes in float32 anyway)."""
    if x.dtype in (torch.float16, torch.bfloat16) and torch.is_autocast_enabled(x.device.type):
        return loss
    return loss.to(x.dtype)


@contextlib.contextmanager
def _device_context(x: Tensor):
    """CUDA: run lossdiag's CuPy-stream kernels on torch's current stream of x's device."""
    if x.device.type != "cuda":
        yield
        return
    try:
        import cupy
    except ImportError as exc:
        raise ImportError("lossdiag.torch: CUDA tensors need CuPy (pip install cupy-cuda12x or "
                          "cupy-cuda13x) for lossdiag's CUDA backend") from exc
    dev = x.device.index if x.device.index is not None else torch.cuda.current_device()
    stream = torch.cuda.current_stream(dev)
    with cupy.cuda.Device(dev), cupy.cuda.ExternalStream(stream.cuda_stream, dev):
        yield


def _target_shape(shape: tuple[int, ...], axis: int) -> list[int]:
    ax = axis % len(shape)
    return [s for i, s in enumerate(shape) if i != ax]


def _is_traced(*ts: Tensor) -> bool:
    """True while torch.compile / make_fx trace the backward (fake or functional tensors)."""
    if _compiling():
        return True
    return any(type(t) is not Tensor and not isinstance(t, nn.Parameter) for t in ts)


def _keep_graph() -> bool:
    """Whether this backward runs with retain_graph=True (assumed when torch cannot say)."""
    f = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return True if f is None else bool(f())


def _scale_grad(ctx: Any, grad_loss: Tensor | None, unsqueeze: int | None) -> Tensor | None:
    """The backward: the stored gradient times grad_loss, in place (the gradient belongs to this
    node; a new tensor only with retain_graph=True), skipped when grad_loss is exactly 1 (checked
    on the CPU only: on a GPU that would synchronise)."""
    if grad_loss is None or not ctx.needs_input_grad[0]:
        return None
    if torch.is_grad_enabled() and not _is_traced(grad_loss):
        raise RuntimeError("lossdiag.torch losses do not support double backward "
                           "(create_graph=True); use torch.nn.functional for higher derivatives")
    (g,) = ctx.saved_tensors
    gl = grad_loss
    if gl.dim() > 0 and gl.numel() > 0 and all(s == 0 for s in gl.stride()):
        gl = gl.as_strided((), (), gl.storage_offset())  # an expanded scalar (e.g. .sum())
    elif gl.dim() > 0 and unsqueeze is not None:
        gl = gl.unsqueeze(unsqueeze)
    if _is_traced(g, gl):
        return g * gl
    if gl.dim() == 0 and gl.device.type == "cpu" and gl.item() == 1.0:
        return g.detach()
    if _keep_graph():
        return g * gl  # retain_graph=True: the stored gradient must survive for the next backward
    return g.detach().mul_(gl)


class _GradBuffers:
    """CPU gradient buffers, recycled once nothing references them.

    A fresh logits-sized buffer costs page faults on every step (the allocator returns large
    blocks to the kernel when they are freed): (8, 21, 512, 512) float32 on 2 busy cores,
    cross_entropy_grad 129 ms into a new buffer, 104 ms into a reused one. Each buffer is a NumPy
    array that every tensor over it keeps alive (torch.from_numpy holds a reference), so its
    reference count says exactly when no tensor, view or autograd graph uses it any more. At
    most `max_entries` buffers are kept (least recently used dropped first); a busy one is never
    handed out twice, another is allocated instead (and not kept).
    """

    _NP = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64,
           torch.bfloat16: np.int16}

    def __init__(self, max_entries: int = 2, min_bytes: int = 1 << 20) -> None:
        self.max_entries, self.min_bytes = max_entries, min_bytes
        self._bufs: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def empty_like(self, x: Tensor) -> Tensor | None:
        """A contiguous CPU tensor shaped and typed like x, or None (small: let the backend
        allocate)."""
        if x.numel() * x.element_size() < self.min_bytes or x.dtype not in self._NP:
            return None
        key = (tuple(x.shape), x.dtype)
        with self._lock:
            buf = self._bufs.get(key)
            # free: referenced by the dict, `buf` and getrefcount's argument only
            if buf is not None and sys.getrefcount(buf) == 3:
                self._bufs.move_to_end(key)
            else:
                fresh = np.empty(key[0], self._NP[x.dtype])
                if buf is None:
                    self._bufs[key] = fresh
                    while len(self._bufs) > self.max_entries:
                        self._bufs.popitem(last=False)
                buf = fresh
        t = torch.from_numpy(buf)
        return t.view(torch.bfloat16) if x.dtype == torch.bfloat16 else t

    def clear(self) -> None:
        with self._lock:
            self._bufs.clear()


_grad_buffers = _GradBuffers()


def empty_cache() -> None:
    """Release the CPU gradient buffers that the losses keep for reuse between calls (at most
    two; a buffer in use is freed when its last tensor is)."""
    _grad_buffers.clear()


def _grad_out(x: Tensor, inplace: bool) -> Tensor | None:
    """Where the gradient goes: the logits (inplace), a recycled CPU buffer, or None (a new
    one from the backend)."""
    if inplace:
        return x
    return _grad_buffers.empty_like(x) if x.device.type == "cpu" else None


def _small(w: Tensor | None) -> Tensor | None:
    """A weight tensor as the backends read it (they take it as float64; bfloat16, which NumPy
    cannot view, goes through float32 first)."""
    if w is None:
        return None
    w = w.detach()
    return w.float() if w.dtype == torch.bfloat16 else w


# ------------------------------------------------------------------------------------------------
# custom ops
# ------------------------------------------------------------------------------------------------
@torch.library.custom_op(
    "lossdiag::cross_entropy", mutates_args=(),
    schema="(Tensor logits, Tensor target, Tensor? weight, int ignore_index, str reduction, "
           "float label_smoothing, int axis, bool grad, bool inplace) -> (Tensor, Tensor)")
def _ce_op(logits, target, weight, ignore_index, reduction, label_smoothing, axis, grad,
           inplace):
    """(loss, gradient) of contiguous logits with the class axis ``axis`` (1 or -1); the
    gradient is that of the reduced loss (of the sum for "none"). With ``inplace`` it is written
    into ``logits`` and an empty tensor is returned in its place; without ``grad`` only the loss
    is computed."""
    x, t = logits.detach(), target.detach()
    w = _small(weight)
    kw = dict(axis=axis, weight=w, ignore_index=ignore_index, label_smoothing=label_smoothing,
              reduction=reduction)
    with _device_context(x):
        if not grad:
            return _as_loss(api.cross_entropy(x, t, **kw), logits), logits.new_empty(0)
        loss, g = api.cross_entropy_grad(x, t, out=_grad_out(x, inplace), **kw)
    return _as_loss(loss, logits), (logits.new_empty(0) if inplace else g)


@_ce_op.register_fake
def _ce_fake(logits, target, weight, ignore_index, reduction, label_smoothing, axis, grad,
             inplace):
    shape = [] if reduction != "none" else _target_shape(tuple(logits.shape), axis)
    loss = logits.new_empty(shape, dtype=_loss_dtype(logits))
    g = torch.empty_like(logits) if grad and not inplace else logits.new_empty(0)
    return loss, g


def _ce_setup(ctx, inputs, output):
    logits, axis, inplace = inputs[0], inputs[6], inputs[8]
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(logits if inplace else output[1])
    ctx.reduction, ctx.axis = inputs[4], axis


def _ce_backward(ctx, grad_loss, _grad_of_grad):
    unsq = ctx.axis if ctx.reduction == "none" else None
    return (_scale_grad(ctx, grad_loss, unsq),) + (None,) * 8


_ce_op.register_autograd(_ce_backward, setup_context=_ce_setup)


@torch.library.custom_op(
    "lossdiag::binary_cross_entropy_with_logits", mutates_args=(),
    schema="(Tensor logits, Tensor target, Tensor? pos_weight, str reduction, bool grad, "
           "bool inplace) -> (Tensor, Tensor)")
def _bce_op(logits, target, pos_weight, reduction, grad, inplace):
    """(loss, gradient) of contiguous logits (elementwise); as `_ce_op`."""
    x, t = logits.detach(), target.detach()
    pw = _small(pos_weight)
    with _device_context(x):
        if not grad:
            loss = api.binary_cross_entropy(x, t, pos_weight=pw, reduction=reduction)
            return _as_loss(loss, logits), logits.new_empty(0)
        loss, g = api.binary_cross_entropy_grad(x, t, pos_weight=pw, reduction=reduction,
                                                 out=_grad_out(x, inplace))
    return _as_loss(loss, logits), (logits.new_empty(0) if inplace else g)


@_bce_op.register_fake
def _bce_fake(logits, target, pos_weight, reduction, grad, inplace):
    loss = logits.new_empty([] if reduction != "none" else list(logits.shape),
                            dtype=_loss_dtype(logits))
    g = torch.empty_like(logits) if grad and not inplace else logits.new_empty(0)
    return loss, g


def _bce_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(inputs[0] if inputs[5] else output[1])


def _bce_backward(ctx, grad_loss, _grad_of_grad):
    return (_scale_grad(ctx, grad_loss, None),) + (None,) * 5


_bce_op.register_autograd(_bce_backward, setup_context=_bce_setup)


# ------------------------------------------------------------------------------------------------
# functional API
# ------------------------------------------------------------------------------------------------
def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                  size_average: bool | None = None, ignore_index: int = -100,
                  reduce: bool | None = None, reduction: str = "mean",
                  label_smoothing: float = 0.0, *, inplace_backward: bool = False) -> Tensor:
    """``torch.nn.functional.cross_entropy``, fused: loss and gradient in one pass.

    Args:
        input: logits (N, C), (N, C, d1, ..., dk) or (C,); float16/bfloat16/float32/float64;
            contiguous or channels-last (read without a copy).
        target: class indices shaped like input without the class axis (any integer dtype), or
            class probabilities shaped like input (any float dtype).
        weight, ignore_index, reduction, label_smoothing: as torch (``size_average`` and
            ``reduce`` are torch's deprecated spellings of ``reduction``).
        inplace_backward: write the gradient into ``input``'s buffer (no logits-sized
            allocation). **Destroys the logits.** Ignored when no gradient is needed and under
            ``torch.compile``.

    Returns:
        A tensor of input's dtype (float32 for float16/bfloat16 input under autocast, as torch):
        0-d for "mean"/"sum", shaped like the target's class-index form for "none".

    Example:
        >>> import torch, lossdiag.torch as ldt
        >>> x = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], requires_grad=True)
        >>> loss = ldt.cross_entropy(x, torch.tensor([0, 2]))
        >>> loss.backward()
        >>> round(loss.item(), 6), x.grad.shape
        (0.175456, torch.Size([2, 3]))
    """
    reduction = _reduction(reduction, size_average, reduce)
    _check_logits(input)
    if input.dim() < 1:
        raise ValueError(f"input: expected (C,), (N, C) or (N, C, d1, ...), got shape "
                         f"{tuple(input.shape)}")
    _check_other(target, "target", input)
    _check_other(weight, "weight", input)
    if not isinstance(ignore_index, int) or isinstance(ignore_index, bool):
        raise TypeError(f"ignore_index: expected an int, got {ignore_index!r}")
    soft = target.is_floating_point()
    if input.dim() == 1:  # unbatched, as torch: (C,) with a () label or (C,) probabilities
        loss = cross_entropy(input.unsqueeze(0), target.unsqueeze(0), weight,
                             ignore_index=ignore_index, reduction=reduction,
                             label_smoothing=label_smoothing, inplace_backward=inplace_backward)
        return loss.squeeze(0) if reduction == "none" else loss
    needs_grad = torch.is_grad_enabled() and input.requires_grad
    inplace = _inplace_ok(input, inplace_backward, needs_grad)
    x, (t,), axis = _class_last(input, target if soft else None)
    if not soft:
        t = target.contiguous()
    loss, _ = torch.ops.lossdiag.cross_entropy(x, t, weight, ignore_index, reduction,
                                               float(label_smoothing), axis, needs_grad, inplace)
    return _user_dtype(loss, input)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor,
                                     weight: Tensor | None = None,
                                     size_average: bool | None = None,
                                     reduce: bool | None = None, reduction: str = "mean",
                                     pos_weight: Tensor | None = None, *,
                                     inplace_backward: bool = False) -> Tensor:
    """``torch.nn.functional.binary_cross_entropy_with_logits``, fused: loss and gradient in
    one pass.

    ``weight`` rescales each element's loss (it broadcasts against input, as in torch; it is
    applied outside the fused pass, at the cost of a per-element loss tensor); ``pos_weight``
    weighs the positive term and broadcasts against input (e.g. shape (C,) for (N, C) input).
    Targets: floats in [0, 1] (or integer/bool 0/1 labels) shaped like input. Channels-last
    input is read in memory order without a copy. ``inplace_backward``: as `cross_entropy`.

    Example:
        >>> import torch, lossdiag.torch as ldt
        >>> x = torch.tensor([0.0, 2.0], requires_grad=True)
        >>> loss = ldt.binary_cross_entropy_with_logits(x, torch.tensor([1.0, 0.0]))
        >>> loss.backward()
        >>> round(loss.item(), 6)
        1.410038
    """
    reduction = _reduction(reduction, size_average, reduce)
    _check_logits(input)
    _check_other(target, "target", input)
    _check_other(weight, "weight", input)
    _check_other(pos_weight, "pos_weight", input)
    if target.shape != input.shape:
        raise ValueError(f"target: size {tuple(target.shape)} must be the same as input size "
                         f"{tuple(input.shape)}")
    if weight is not None:  # per-element rescaling: fused "none", then weighted by torch
        loss = binary_cross_entropy_with_logits(input, target, reduction="none",
                                                pos_weight=pos_weight,
                                                inplace_backward=inplace_backward)
        loss = loss * weight
        return loss if reduction == "none" else (loss.mean() if reduction == "mean"
                                                 else loss.sum())
    needs_grad = torch.is_grad_enabled() and input.requires_grad
    inplace = _inplace_ok(input, inplace_backward, needs_grad)
    pw = pos_weight
    if pw is not None and pw.dim() > 0:  # broadcast in the logits' memory order
        if pw.dim() > input.dim():
            raise ValueError(f"pos_weight: shape {tuple(pw.shape)} cannot broadcast to input "
                             f"{tuple(input.shape)}")
        pw = pw.reshape((1,) * (input.dim() - pw.dim()) + tuple(pw.shape))
    x, (t, pw), _ = _class_last(input, target, pw)
    loss, _ = torch.ops.lossdiag.binary_cross_entropy_with_logits(x, t, pw, reduction,
                                                                  needs_grad, inplace)
    if reduction == "none" and x.shape != input.shape:  # back to the input's (logical) shape
        loss = loss.permute(0, x.dim() - 1, *range(1, x.dim() - 1))
    return _user_dtype(loss, input)


# ------------------------------------------------------------------------------------------------
# modules
# ------------------------------------------------------------------------------------------------
class CrossEntropyLoss(nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss`` computed by `lossdiag.torch.cross_entropy` (a subclass: same
    constructor, buffers and state dict, plus ``inplace_backward``).

    Example:
        >>> import torch, lossdiag.torch as ldt
        >>> crit = ldt.CrossEntropyLoss(ignore_index=255, label_smoothing=0.05)
        >>> x = torch.randn(2, 5, 4, 4, requires_grad=True)
        >>> crit(x, torch.randint(0, 5, (2, 4, 4))).backward()
    """

    def __init__(self, weight: Tensor | None = None, size_average: bool | None = None,
                 ignore_index: int = -100, reduce: bool | None = None, reduction: str = "mean",
                 label_smoothing: float = 0.0, *, inplace_backward: bool = False) -> None:
        super().__init__(weight, size_average, ignore_index, reduce, reduction, label_smoothing)
        self.inplace_backward = bool(inplace_backward)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                             reduction=self.reduction, label_smoothing=self.label_smoothing,
                             inplace_backward=self.inplace_backward)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, inplace_backward={self.inplace_backward}"


class BCEWithLogitsLoss(nn.BCEWithLogitsLoss):
    """``torch.nn.BCEWithLogitsLoss`` computed by
    `lossdiag.torch.binary_cross_entropy_with_logits` (a subclass, plus ``inplace_backward``).

    Example:
        >>> import torch, lossdiag.torch as ldt
        >>> crit = ldt.BCEWithLogitsLoss(pos_weight=torch.tensor([1.0, 3.0]))
        >>> x = torch.randn(8, 2, requires_grad=True)
        >>> crit(x, torch.rand(8, 2)).backward()
    """

    def __init__(self, weight: Tensor | None = None, size_average: bool | None = None,
                 reduce: bool | None = None, reduction: str = "mean",
                 pos_weight: Tensor | None = None, *, inplace_backward: bool = False) -> None:
        super().__init__(weight, size_average, reduce, reduction, pos_weight)
        self.inplace_backward = bool(inplace_backward)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy_with_logits(input, target, self.weight,
                                                pos_weight=self.pos_weight,
                                                reduction=self.reduction,
                                                inplace_backward=self.inplace_backward)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, inplace_backward={self.inplace_backward}"
