"""Shared pieces of the landscape modules: types, argument checks, .npz files, progress."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

if TYPE_CHECKING:
    pass

Params = Sequence[np.ndarray]
LossFn = Callable[[list[np.ndarray]], float]
PathLike = Union[str, "os.PathLike[str]"]

NORMALIZATIONS = ("filter", "layer", "none")
BIAS_POLICIES = ("zero", "include")
PLOT_KINDS = ("contourf", "contour", "surface", "line")

#: progress bar and cost line are shown automatically above this estimated run time (seconds)
AUTO_PROGRESS_SECONDS = 2.0
#: checkpoints of a resumable grid are written at most this often (seconds)
CHECKPOINT_EVERY = 5.0
_FORMAT = "lossdiag.landscape/1"




def _check_callable(fn: Any, name: str) -> None:
    if not callable(fn):
        raise TypeError(f"{name}: expected a callable taking a list of NumPy arrays and "
                        f"returning a float, got {type(fn).__name__}")


def _check_count(v: Any, name: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {v!r}")
    if int(v) < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {v}")
    return int(v)


def _check_float(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {v!r}")
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"{name}: must be finite, got {v!r}")
    return f


def _check_choice(v: Any, name: str, choices: Sequence[str]) -> str:
    if not isinstance(v, str) or v not in choices:
        raise ValueError(f"{name}: must be one of {', '.join(map(repr, choices))}, got {v!r}")
    return v


def _check_params(params: Any, name: str) -> list[np.ndarray]:
    if isinstance(params, np.ndarray) or not isinstance(params, (list, tuple)):
        raise TypeError(f"{name}: expected a list of NumPy arrays (one per parameter tensor), "
                        f"got {type(params).__name__}")
    if not params:
        raise ValueError(f"{name}: the list of parameters is empty")
    out = []
    for i, p in enumerate(params):
        a = np.asarray(p)
        if a.dtype.kind not in "fiu" or a.dtype.kind == "b":
            raise TypeError(f"{name}[{i}]: expected a real numeric array, got dtype {a.dtype}")
        if a.dtype.kind != "f":
            a = a.astype(np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}[{i}]: contains NaN or inf")
        out.append(a)
    return out


def _check_vector(v: Any, name: str) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a 1-D array of numbers, got {type(v).__name__}") \
            from None
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or inf")
    return np.ascontiguousarray(a)


def _check_steps(steps: Any, name: str, ndim: int) -> tuple[int, ...]:
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool):
        steps = (steps,) * ndim
    if not isinstance(steps, (tuple, list)) or len(steps) != ndim:
        raise TypeError(f"{name}: expected an int or a sequence of {ndim} ints, got {steps!r}")
    return tuple(_check_count(s, name, 2) for s in steps)


def _check_span(span: Any, name: str, ndim: int) -> tuple[tuple[float, float], ...]:
    """span: a number s (-> [-s, s]), or per axis a number or a (lo, hi) pair."""
    def one(v: Any) -> tuple[float, float]:
        if isinstance(v, (tuple, list)):
            if len(v) != 2:
                raise ValueError(f"{name}: a range must be (lo, hi), got {v!r}")
            lo, hi = _check_float(v[0], name), _check_float(v[1], name)
        else:
            s = _check_float(v, name)
            lo, hi = -s, s
        if not hi > lo:
            raise ValueError(f"{name}: the range must have hi > lo, got {v!r}")
        return lo, hi

    if ndim == 2 and isinstance(span, (tuple, list)) and len(span) == 2 and all(
            isinstance(s, (tuple, list)) for s in span):
        return (one(span[0]), one(span[1]))
    return (one(span),) * ndim


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            a = np.ascontiguousarray(p)
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes())
        elif isinstance(p, (list, tuple)):
            h.update(b"[")
            for q in p:
                h.update(_digest(q).encode())
            h.update(b"]")
        else:
            h.update(repr(p).encode())
        h.update(b"|")
    return h.hexdigest()



def _save_npz(path: PathLike, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = dict(arrays)
    arrays["__meta__"] = np.array(json.dumps(meta))
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load_npz(path: PathLike, what: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(Path(path), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if "__meta__" not in arrays:
        raise ValueError(f"path: {path} is not a lossdiag landscape file")
    meta = json.loads(str(arrays.pop("__meta__")))
    if meta.get("format") != _FORMAT or meta.get("what") != what:
        raise ValueError(f"path: {path} holds {meta.get('what')!r} "
                         f"({meta.get('format')}), expected {what!r} ({_FORMAT})")
    return arrays, meta


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _want_progress(progress: bool | None, cost: Any) -> bool:
    if progress is None:
        return bool(cost is not None and cost.seconds is not None
                    and cost.seconds > AUTO_PROGRESS_SECONDS)
    if not isinstance(progress, bool):
        raise TypeError(f"progress: expected True, False or None, got {progress!r}")
    return progress


