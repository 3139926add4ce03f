"""Argument checking and layout resolution shared by the CPU and GPU backends.

Everything a kernel needs is decided here, once, with a clear error naming the argument:
dtypes, the class axis, the (N, C, inner) or rows layout, label kind, weights, reductions.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import interop

REDUCTIONS = ("mean", "sum", "none")
PROB_EPS = 1e-7  # clip for from_logits=False, as Keras
# Limits (docs/reliability.md): past them a request is refused with a ValueError before anything
# is allocated. The compiled core checks the same bounds again.
MAX_BINS = 1 << 16          # histogram bins
MAX_CLASSES = 2**31 - 1     # classes (C): class indices are int32 inside the kernels
_INT64 = (-(2**63), 2**63 - 1)
_TOO_HARD = getattr(getattr(np, "exceptions", np), "TooHardError", Exception)

_LOGIT_CODES = {np.dtype(np.float16): 0, np.dtype(np.float32): 1, np.dtype(np.float64): 2}
_LABEL_CODES = {
    np.dtype(np.uint8): 0, np.dtype(np.int8): 1, np.dtype(np.uint16): 2, np.dtype(np.int16): 3,
    np.dtype(np.uint32): 4, np.dtype(np.int32): 5, np.dtype(np.uint64): 6, np.dtype(np.int64): 7,
    np.dtype(np.bool_): 8,
}
# The same codes keyed by the identity of NumPy's own dtype objects, which arrays of these types
# carry (np.longlong's object is not np.int64's, though the two compare equal): the common case
# costs one dict lookup. Any other dtype object takes the full checks: byte-swapped ones, and the
# uint16 tagged as bfloat16 (interop.BF16), which compares equal to uint16.
_BUILTIN_DTYPES = tuple(np.dtype(c) for c in "?bBhHiIlLqQefd")
_KNOWN = {id(d): ((True, _LOGIT_CODES[d]) if d in _LOGIT_CODES else (False, _LABEL_CODES[d]))
          for d in _BUILTIN_DTYPES}


def known_code(dtype: Any) -> tuple[bool, int] | None:
    """(is float, kernel code) when ``dtype`` is NumPy's own object for a supported float or
    integer dtype, else None (the caller then runs its full checks).

    >>> known_code(np.zeros(2, np.float32).dtype), known_code(np.dtype(">f4"))
    ((True, 1), None)
    """
    return _KNOWN.get(id(dtype))


def logit_code(dtype: np.dtype) -> int:
    return _LOGIT_CODES[np.dtype(dtype)]


def label_code(dtype: np.dtype) -> int:
    return _LABEL_CODES[np.dtype(dtype)]


@dataclass(frozen=True)
class Layout:
    """How the kernels see the logits: rows (class axis contiguous) or (N, C, inner)."""

    shape: tuple[int, ...]
    axis: int          # normalised class axis (1 or ndim-1)
    C: int
    N: int
    E: int             # elements = pixels or rows
    S: int             # elements per sample
    inner: int
    rows: bool
    target_shape: tuple[int, ...]


def check_dtype_logits(x: Any, name: str = "logits") -> int:
    """The kernels' code of a float16/32/64 ``x``; a TypeError naming ``name`` for other dtypes."""
    known = _KNOWN.get(id(x.dtype))
    if known is not None and known[0]:
        return known[1]
    dt = np.dtype(x.dtype)
    if dt.kind == "f" and not dt.isnative:
        raise TypeError(f"{name}: non-native byte order ({dt.str}) is not supported; "
                        "convert with .astype(dt.newbyteorder('='))")
    if dt not in _LOGIT_CODES:
        kind = "integer" if dt.kind in "iub" else dt.name
        raise TypeError(
            f"{name}: dtype {dt.name} is not supported ({kind}); use float16, float32 or float64"
        )
    return _LOGIT_CODES[dt]


def as_cpu_array(x: Any, name: str) -> np.ndarray:
    """Zero-copy view of a CPU array (NumPy, or anything with __array__ such as a CPU tensor)."""
    if isinstance(x, np.ndarray):
        return x
    if x is None:
        raise TypeError(f"{name}: expected an array, got None")
    arr = interop.to_numpy(x, name)  # framework tensors: zero-copy view (see _interop)
    if arr is not None:
        return arr
    try:
        arr = np.asarray(x)
    except Exception as exc:  # pragma: no cover - defensive
        raise TypeError(f"{name}: cannot be read as an array ({type(x).__name__})") from exc
    if arr.dtype == object:
        raise TypeError(f"{name}: dtype object is not supported (got {type(x).__name__})")
    return arr


def contiguous(x: np.ndarray) -> np.ndarray:
    """C-contiguous array; non-contiguous inputs are copied once (documented cost)."""
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def resolve_layout(shape: tuple[int, ...], axis: Any) -> Layout:
    """The kernels' view of logits of ``shape`` with the class axis ``axis``; a ValueError or
    TypeError naming the argument when there is none. Layouts are shared (immutable), and cached
    for a plain int ``axis``: a training loop sees the same few shapes over and over."""
    if type(axis) is int:
        return _cached_layout(tuple(shape), axis)
    return _layout(shape, axis)


@functools.lru_cache(maxsize=256)
def _cached_layout(shape: tuple[int, ...], axis: int) -> Layout:
    return _layout(shape, axis)


def _layout(shape: tuple[int, ...], axis: Any) -> Layout:
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    if ndim < 2:
        raise ValueError(
            f"logits: expected at least 2 dimensions (N, C, ...), got shape {tuple(shape)}"
        )
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"axis: expected an int, got {axis!r}")
    ax = int(axis)
    if not -ndim <= ax < ndim:
        raise ValueError(f"axis: {axis} is out of range for logits with {ndim} dimensions")
    ax %= ndim
    if ax not in (1, ndim - 1):
        raise ValueError(
            f"axis: the class axis must be 1 (N, C, ...) or -1 (N, ..., C); got {axis} "
            f"for logits of shape {tuple(shape)}"
        )
    C = int(shape[ax])
    if C < 1:
        raise ValueError(f"logits: the class axis has length 0 (shape {tuple(shape)})")
    if C > MAX_CLASSES:
        raise ValueError(f"logits: {C} classes exceed the supported maximum {MAX_CLASSES} "
                         f"(shape {tuple(shape)})")
    N = int(shape[0])
    target_shape = tuple(s for i, s in enumerate(shape) if i != ax)
    E = int(math.prod(target_shape))
    S = E // N if N else 1
    if ax == ndim - 1:
        return Layout(shape, ax, C, N, E, S, 1, True, target_shape)
    inner = int(math.prod(shape[2:]))
    return Layout(shape, ax, C, N, E, S, inner, inner == 1, target_shape)


def check_target(target: Any, lay: Layout, name: str = "target") -> tuple[bool, int]:
    """Return (soft, dtype code) for the target, raising for wrong shapes and dtypes."""
    known = _KNOWN.get(id(target.dtype))
    if known is not None and not known[0] and tuple(target.shape) == lay.target_shape:
        return False, known[1]  # integer labels of the right shape
    dt = np.dtype(target.dtype)
    if not dt.isnative:
        raise TypeError(f"{name}: non-native byte order ({dt.str}) is not supported")
    if dt.kind == "f":
        if dt not in _LOGIT_CODES:
            raise TypeError(f"{name}: float dtype {dt.name} is not supported")
        if tuple(target.shape) != lay.shape:
            raise ValueError(
                f"{name}: float (class-probability) targets must have the shape of logits "
                f"{lay.shape}, got {tuple(target.shape)}; integer class labels must have shape "
                f"{lay.target_shape}"
            )
        return True, _LOGIT_CODES[dt]
    if dt not in _LABEL_CODES:
        raise TypeError(
            f"{name}: dtype {dt.name} is not supported; use integer class labels or float "
            "class probabilities"
        )
    if tuple(target.shape) != lay.target_shape:
        raise ValueError(
            f"{name}: shape {tuple(target.shape)} does not match logits {lay.shape} without the "
            f"class axis (expected {lay.target_shape})"
        )
    return False, _LABEL_CODES[dt]


def _on_device(x: Any) -> bool:
    return hasattr(x, "__cuda_array_interface__") and hasattr(x, "get")


def real_array(x: Any, name: str) -> np.ndarray:
    """A float64 copy of a host array-like of real numbers (a device array is copied to the host);
    a TypeError naming ``name`` for strings, dicts, complex, bool or object values."""
    if isinstance(x, (str, bytes, dict)) or x is None:
        raise TypeError(f"{name}: expected an array of real numbers, got {x!r:.80}")
    if _on_device(x):
        x = x.get()
    try:
        arr = np.asarray(x)
    except Exception as exc:
        raise TypeError(f"{name}: cannot be read as an array ({type(x).__name__})") from exc
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name}: expected real numbers, got dtype {arr.dtype.name} "
                        f"({np.array2string(arr.ravel()[:4], threshold=4)[:80]})")
    return np.array(arr, dtype=np.float64, copy=True)


def real_scalar(x: Any, name: str, *, allow_inf: bool = True) -> float:
    """A real number (Python or NumPy int/float, or a 0-d array of one) as a float; a TypeError
    naming ``name`` for anything else (strings, bools, complex), a ValueError for NaN."""
    if isinstance(x, np.ndarray) and x.ndim == 0:
        x = x[()]
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer,
                                                             np.floating)):
        raise TypeError(f"{name}: expected a real number, got {x!r:.80}")
    v = float(x)
    if math.isnan(v) or (not allow_inf and math.isinf(v)):
        raise ValueError(f"{name}: must be a finite number, got {x!r}")
    return v


def check_flag(x: Any, name: str) -> bool:
    """A bool (Python or NumPy); "no", 0 or None are refused, not read as truth values."""
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {x!r:.80}")
    return bool(x)


def check_weight(weight: Any, C: int) -> np.ndarray | None:
    if weight is None:
        return None
    w = real_array(weight, "weight")
    if w.ndim != 1 or w.shape[0] != C:
        raise ValueError(f"weight: expected shape ({C},) for {C} classes, got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("weight: contains NaN or inf")
    if np.any(w < 0):
        raise ValueError(f"weight: must be non-negative, got min {w.min()!r}")
    return np.ascontiguousarray(w)


def check_reduction(reduction: Any) -> str:
    if not isinstance(reduction, str):
        raise TypeError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r:.80}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def check_options(ignore_index: Any, label_smoothing: Any, reduction: Any) -> tuple[int, float]:
    # Each check starts with the common case (a plain int, a plain float, a known string), which
    # needs no conversion; anything else goes through the full checks.
    if type(ignore_index) is not int or not _INT64[0] <= ignore_index <= _INT64[1]:
        if not isinstance(ignore_index, (int, np.integer)) or isinstance(ignore_index, bool):
            raise TypeError(f"ignore_index: expected an int, got {ignore_index!r:.80}")
        if not _INT64[0] <= int(ignore_index) <= _INT64[1]:
            raise ValueError(f"ignore_index: {ignore_index} is outside the int64 range")
    eps = label_smoothing
    if type(eps) is not float or not 0.0 <= eps <= 1.0:
        eps = _check_label_smoothing(label_smoothing)
    if type(reduction) is not str or reduction not in REDUCTIONS:
        check_reduction(reduction)
    return int(ignore_index), eps


def _check_label_smoothing(label_smoothing: Any) -> float:
    if isinstance(label_smoothing, (str, bytes)):
        raise TypeError(f"label_smoothing: expected a float, got {label_smoothing!r:.80}")
    try:
        eps = real_scalar(label_smoothing, "label_smoothing")
    except TypeError:
        raise TypeError(f"label_smoothing: expected a float, got {label_smoothing!r:.80}") \
            from None
    except ValueError:
        raise ValueError(f"label_smoothing: must be in [0, 1], got {label_smoothing!r}") from None
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing: must be in [0, 1], got {label_smoothing!r}")
    return eps


def check_top_k(top_k: Any, C: int) -> list[int]:
    if type(top_k) is list and len(top_k) == 1 and type(top_k[0]) is int and 1 <= top_k[0] <= C:
        return [top_k[0]]  # one plain int in range, e.g. [1]: what evaluate passes by default
    if isinstance(top_k, (int, np.integer)) and not isinstance(top_k, bool):
        ks = [top_k]
    elif isinstance(top_k, (list, tuple)):
        ks = list(top_k)
    else:
        raise TypeError(f"top_k: expected an int or a tuple of ints, got {top_k!r}")
    if not ks:
        raise ValueError("top_k: must not be empty")
    if len(ks) > 8:
        raise ValueError(f"top_k: at most 8 values, got {len(ks)}")
    out = []
    for k in ks:
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
            raise TypeError(f"top_k: expected ints, got {k!r}")
        if not 1 <= int(k) <= C:
            raise ValueError(f"top_k: {k} is outside [1, C={C}]")
        out.append(int(k))
    return out


def top_k_with_1(top_k: Any) -> Any:
    """``top_k`` as a list with 1 in front when it is missing: top-1 accuracy (what
    `BatchStats.accuracy` reports) is always computed. Values that `check_top_k` refuses are
    passed through unchanged, for it to raise.

    >>> top_k_with_1((5,)), top_k_with_1(3), top_k_with_1([1, 5])
    ([1, 5], [1, 3], [1, 5])
    """
    if isinstance(top_k, (list, tuple)):
        ks = list(top_k)
    elif isinstance(top_k, (int, np.integer)) and not isinstance(top_k, bool):
        ks = [top_k]
    else:
        return top_k
    if not ks:
        return top_k
    for k in ks:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
            return top_k
    if 1 in ks:
        return ks
    if len(ks) >= 8:
        raise ValueError(f"top_k: at most 7 values besides 1 (top-1 accuracy is always "
                         f"computed), got {top_k!r}")
    return [1, *ks]


# `confusion=None` keeps the (C, C) matrix up to this many classes (8 MB of int64): above it the
# matrix costs more than the pass over the logits (allocation, page zeroing, Metrics state) and
# per-class metrics come from O(C) counts instead.
CONFUSION_AUTO_MAX = 1024


def check_confusion(confusion: Any, C: int) -> bool:
    """Whether to compute the (C, C) confusion matrix: ``None`` means up to `CONFUSION_AUTO_MAX`
    classes."""
    if confusion is None:
        return C <= CONFUSION_AUTO_MAX
    if not isinstance(confusion, (bool, np.bool_)):
        raise TypeError(f"confusion: expected True, False or None, got {confusion!r:.80}")
    return bool(confusion)


def check_bins(bins: Any) -> int:
    if not isinstance(bins, (int, np.integer)) or isinstance(bins, bool):
        raise TypeError(f"bins: expected an int, got {bins!r:.80}")
    if not 1 <= bins <= MAX_BINS:
        raise ValueError(f"bins: must be in [1, {MAX_BINS}], got {bins}")
    return int(bins)


def check_out(out: Any, x: np.ndarray, name: str = "out",
              inputs: dict[str, Any] | None = None) -> np.ndarray:
    """``out`` for a gradient of logits ``x``: same shape and dtype, C-contiguous, writeable; it
    may be ``x`` itself but must not share memory with any other input (``inputs``: name ->
    array), which the kernel reads while it writes ``out``."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array, got {type(out).__name__}")
    if out.shape != x.shape:
        raise ValueError(f"{name}: shape {out.shape} does not match logits {x.shape}")
    if out.dtype != x.dtype:
        raise ValueError(f"{name}: dtype {out.dtype} does not match logits dtype {x.dtype}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name}: must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"{name}: is read-only")
    if out is not x and np.shares_memory(out, x) and out.ctypes.data != x.ctypes.data:
        raise ValueError(f"{name}: partially overlaps logits; pass logits itself for in place")
    for what, arr in (inputs or {}).items():
        if not (isinstance(arr, np.ndarray) and np.may_share_memory(out, arr)):
            continue
        try:
            shared = np.shares_memory(out, arr, max_work=10**6)
        except _TOO_HARD:  # pragma: no cover - exotic strides
            shared = True
        if shared:
            raise ValueError(f"{name}: shares memory with {what}, which is read while the "
                             f"gradient is written; pass a separate array")
    return out


def bad_label_error(value: int, index: int, C: int, ignore_index: int, name: str = "target",
                    dtype: Any = None):
    if dtype is not None and np.dtype(dtype) == np.uint64 and value < 0:
        value += 2**64  # the kernel reports labels as int64
    return ValueError(
        f"{name}: label {value} at flat index {index} is outside [0, {C}) and is not "
        f"ignore_index={ignore_index}"
    )


def mean_loss(eps: float, C: int, nll: float, smooth: float, wsum: float) -> float:
    """PyTorch's "mean": ((1-eps) * sum w_y nll + eps/C * sum smooth) / sum w_y."""
    num = nll if eps == 0.0 else (1.0 - eps) * nll + (eps / C) * smooth
    return num / wsum if wsum != 0 else math.nan


def sum_loss(eps: float, C: int, nll: float, smooth: float) -> float:
    return nll if eps == 0.0 else (1.0 - eps) * nll + (eps / C) * smooth


def pos_weight_layout(pw_shape: tuple[int, ...],
                      shape: tuple[int, ...]) -> tuple[tuple[int, ...], int | None]:
    """How a pos_weight of ``pw_shape`` broadcasts over logits of ``shape`` (both backends).

    Returns ``(full, inner)``: ``full`` is ``pw_shape`` padded with leading ones; ``inner`` is the
    flat stride of its one non-unit axis (pos_weight[(e // inner) % len] for flat index e), 1 when
    it has none, and None when it has several (the weights must then be materialised at the size
    of the logits).

    >>> pos_weight_layout((3, 1, 1), (2, 3, 4, 5))
    ((1, 3, 1, 1), 20)
    """
    pw_shape = tuple(int(p) for p in pw_shape)
    if len(pw_shape) > len(shape):
        raise ValueError(f"pos_weight: shape {pw_shape} cannot broadcast to logits {shape}")
    full = (1,) * (len(shape) - len(pw_shape)) + pw_shape
    for p, s in zip(full, shape):
        if p not in (1, s):
            raise ValueError(f"pos_weight: shape {pw_shape} cannot broadcast to logits {shape}")
    big = [i for i, p in enumerate(full) if p != 1]
    if len(big) > 1:
        return full, None
    return full, (int(math.prod(shape[big[0] + 1:])) if big else 1)


def pos_weight_pattern(pos_weight: Any, shape: tuple[int, ...]) -> tuple[np.ndarray | None, int]:
    """Reduce a broadcastable pos_weight to pw[(e // inner) % len] over the flattened logits."""
    if pos_weight is None:
        return None, 1
    pw = real_array(pos_weight, "pos_weight")
    if not np.all(np.isfinite(pw)):
        raise ValueError("pos_weight: contains NaN or inf")
    full, inner = pos_weight_layout(pw.shape, shape)
    if inner is None:  # several broadcast axes: materialised once (the size of the logits; rare)
        return np.ascontiguousarray(np.broadcast_to(pw.reshape(full), shape).reshape(-1)), 1
    return np.ascontiguousarray(pw.reshape(-1)), inner
