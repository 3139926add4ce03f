"""Randomised robustness test of every public array function (CPU backend).

Each seed makes one call: a random shape (0-size batches and C up to 5000 included), layout
(class axis 1 or last), logits dtype, label dtype or soft targets, memory layout (strided,
Fortran-ordered, read-only, memory-mapped), options, special values (NaN, +-inf, float32 values
near the overflow threshold), thread count, SIMD level and kernel path (lane or wide rows); about
one call in six gets one argument made invalid. A valid call must agree with the float64
reference (tests/reference.py) within float32/float64 tolerances scaled to the data; an invalid
one must raise a TypeError or ValueError whose message names the argument.

    outcome "ok"       as specified
            "wrong"    a result off the reference, an invalid argument accepted, or a valid call
                       refused
            "unclear"  an invalid argument refused with another exception type or a message that
                       does not name it

`scripts/fuzz.py` runs the same cases by the hundred thousand, in subprocess batches so that a
crash is counted too. Here a few thousand seeds run in one process (a crash fails the run).

Documented float32 behaviour that is not "wrong": float32 logits whose row spans more than the
float32 range (max - min > 3.4e38) overflow x - max to -inf as in PyTorch's float32 kernels, so
such a row's loss may be inf (or NaN) where the float64 reference is finite (docs/reliability.md).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference as R  # noqa: E402

FLT_MAX = float(np.finfo(np.float32).max)
LABEL_DTYPES = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
FLOAT_DTYPES = [np.float16, np.float32, np.float64]
FUNCS = ["cross_entropy", "cross_entropy_grad", "accuracy", "evaluate", "binary_cross_entropy",
         "binary_cross_entropy_grad", "binary_accuracy", "evaluate_binary"]
MAX_VALUES = 200_000  # logits values per call (keeps a case in the millisecond range)


class Wrong(AssertionError):
    """A result that disagrees with the reference."""


@dataclass
class Case:
    """One call: the function, its arguments, and (for an invalid call) the argument at fault."""

    seed: int
    func: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    bad: str | None = None           # name the error message must contain
    note: str = ""                   # what was made invalid / special (for reports)
    threads: int | None = None
    simd: str | None = None
    wide: int | None = None          # force the wide-row path above this many classes
    overflow_ok: bool = False        # float32 rows spanning > FLT_MAX (see module docstring)
    ref: Callable[[], Any] | None = None
    x64: Any = None                  # the logits as generated (out= may overwrite the input)

    def describe(self) -> str:
        def d(v: Any) -> str:
            if isinstance(v, np.ndarray):
                flags = "" if v.flags.c_contiguous else " strided"
                flags += "" if v.flags.writeable else " ro"
                flags += " mmap" if isinstance(v, np.memmap) or isinstance(v.base, np.memmap) \
                    else ""
                return f"array{v.shape}{v.dtype}{flags}"
            return repr(v)[:60]
        a = ", ".join(d(v) for v in self.args)
        k = ", ".join(f"{n}={d(v)}" for n, v in self.kwargs.items())
        extra = f" threads={self.threads}" if self.threads else ""
        extra += f" simd={self.simd}" if self.simd else ""
        extra += f" wide>{self.wide}" if self.wide else ""
        return f"seed {self.seed}: {self.func}({a}, {k}){extra} bad={self.bad} {self.note}"


# ------------------------------------------------------------------------------------------------
# case generation
# ------------------------------------------------------------------------------------------------
def _pick(rng: np.random.Generator, items: list, p: list[float] | None = None) -> Any:
    return items[int(rng.choice(len(items), p=p))]


def _num_classes(rng: np.random.Generator) -> int:
    r = rng.random()
    if r < 0.15:
        return int(rng.integers(1, 4))
    if r < 0.65:
        return int(rng.integers(4, 40))
    if r < 0.9:
        return int(rng.integers(40, 400))
    return int(rng.integers(400, 5001))


def _shape(rng: np.random.Generator, C: int) -> tuple[tuple[int, ...], int]:
    """(logits shape, class axis) with at most MAX_VALUES values; sometimes 0-size."""
    kind = _pick(rng, ["rows", "nchw", "last"], [0.5, 0.3, 0.2])
    budget = max(1, MAX_VALUES // C)
    if kind == "rows":
        N = int(rng.integers(0, min(budget, 300) + 1)) if rng.random() < 0.95 else 0
        return (N, C), 1
    nd = int(rng.integers(1, 4 if C <= 64 else 2))
    spatial = [int(rng.integers(0 if rng.random() < 0.05 else 1, 9)) for _ in range(nd)]
    N = int(rng.integers(0 if rng.random() < 0.05 else 1, 5))
    while N * math.prod(spatial) > budget and max(spatial) > 1:
        spatial[int(np.argmax(spatial))] //= 2
    while N * math.prod(spatial) > budget and N > 1:
        N //= 2
    if kind == "nchw":
        return (N, C, *spatial), 1
    return (N, *spatial, C), -1


def _logits(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any,
            probs: bool = False) -> tuple[np.ndarray, str]:
    note = ""
    if probs:
        x = rng.random(shape) + (0.0 if rng.random() < 0.2 else 1e-3)
        return x.astype(dtype), "probs"
    scale = _pick(rng, [0.01, 1.0, 3.0, 30.0, 1e3], [0.1, 0.3, 0.3, 0.2, 0.1])
    x = rng.normal(size=shape) * scale
    if x.size and rng.random() < 0.1:  # ties: quantised logits
        x = np.round(x)
        note += " ties"
    if x.size and rng.random() < 0.12:
        k = int(rng.integers(1, min(x.size, 8) + 1))
        idx = rng.integers(0, x.size, k)
        x.flat[idx] = rng.choice([np.inf, -np.inf, np.nan], k)
        note += " specials"
    if x.size and np.dtype(dtype) != np.float16 and rng.random() < 0.04:
        k = int(rng.integers(1, min(x.size, 4) + 1))
        x.flat[rng.integers(0, x.size, k)] = rng.choice([3e38, -3e38, 1e38, -2e38], k)
        note += " huge"
    with np.errstate(over="ignore"):
        return x.astype(dtype), note.strip()


def _layout(rng: np.random.Generator, a: np.ndarray, tmp: Path | None) -> np.ndarray:
    """The same values in another memory layout: strided, Fortran order, read-only, memmap."""
    r = rng.random()
    if r < 0.08 and a.ndim >= 1:
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        a = big[..., ::2]
    elif r < 0.14:
        a = np.asfortranarray(a)
    elif r < 0.18 and tmp is not None and a.size:
        fd, name = tempfile.mkstemp(dir=tmp, suffix=".dat")
        os.close(fd)
        m = np.memmap(name, dtype=a.dtype, mode="w+", shape=a.shape)
        m[...] = a
        m.flush()
        a = np.memmap(name, dtype=a.dtype, mode="r", shape=a.shape)
    if rng.random() < 0.1 and not isinstance(a, np.memmap):
        a = a.copy() if not a.flags.writeable else a
        a.setflags(write=False)
    return a


def _labels(rng: np.random.Generator, tshape: tuple[int, ...], C: int,
            ignore_index: int) -> np.ndarray:
    dt = np.dtype(_pick(rng, LABEL_DTYPES))
    hi = min(C, int(np.iinfo(dt).max) + 1)
    y = rng.integers(0, hi, size=tshape)
    info = np.iinfo(dt)
    if info.min <= ignore_index <= info.max and rng.random() < 0.5 and y.size:
        y = np.where(rng.random(tshape) < 0.2, ignore_index, y)
    return y.astype(dt)


def _soft(rng: np.random.Generator, shape: tuple[int, ...], axis: int) -> np.ndarray:
    dt = _pick(rng, FLOAT_DTYPES, [0.1, 0.5, 0.4])
    C = shape[axis]
    kind = _pick(rng, ["dirichlet", "onehot", "uniform", "smoothed"])
    ax = axis % len(shape)
    n = math.prod(shape) // C
    if kind == "dirichlet":
        p = rng.dirichlet(np.ones(C), size=n)
    elif kind == "onehot":
        p = np.eye(C)[rng.integers(0, C, n)]
    elif kind == "uniform":
        p = np.full((n, C), 1.0 / C)
    else:
        p = np.eye(C)[rng.integers(0, C, n)] * 0.9 + 0.1 / C
    moved = tuple(s for i, s in enumerate(shape) if i != ax) + (C,)
    return np.ascontiguousarray(np.moveaxis(p.reshape(moved), -1, ax)).astype(dt)


def _weight(rng: np.random.Generator, C: int) -> np.ndarray | None:
    if rng.random() < 0.6:
        return None
    w = rng.random(C) * 3
    if rng.random() < 0.3:
        w[rng.random(C) < 0.3] = 0.0
    return w.astype(_pick(rng, [np.float64, np.float32]))


def _multiclass(rng: np.random.Generator, case: Case, tmp: Path | None) -> None:
    func = case.func
    C = _num_classes(rng)
    shape, axis = _shape(rng, C)
    dtype = _pick(rng, FLOAT_DTYPES, [0.15, 0.6, 0.25])
    from_logits = not (func in ("cross_entropy", "cross_entropy_grad") and rng.random() < 0.12)
    x, note = _logits(rng, shape, dtype, probs=not from_logits)
    ax = axis % len(shape)
    tshape = tuple(s for i, s in enumerate(shape) if i != ax)
    soft = rng.random() < 0.2
    ignore_index = int(_pick(rng, [-100, 0, 255, int(rng.integers(-5, C + 5))]))
    t = _soft(rng, shape, axis) if soft else _labels(rng, tshape, C, ignore_index)
    kw: dict[str, Any] = {"axis": axis}
    if rng.random() < 0.3:  # the other spelling of the same axis
        kw["axis"] = ax if axis == -1 else (-1 if len(shape) == 2 else 1)
    w = _weight(rng, C)
    if w is not None:
        kw["weight"] = w
    if ignore_index != -100 or rng.random() < 0.3:
        kw["ignore_index"] = ignore_index
    if func != "accuracy" and rng.random() < 0.4:
        kw["label_smoothing"] = float(_pick(rng, [rng.random(), 0.1, 1.0, 0.0]))
    if func in ("cross_entropy", "cross_entropy_grad"):
        kw["reduction"] = _pick(rng, ["mean", "sum", "none"])
        if not from_logits:
            kw["from_logits"] = False
    if func == "accuracy":
        kw.pop("weight", None)
        kw["top_k"] = int(rng.integers(1, C + 1))
    if func == "evaluate":
        ks = sorted({int(k) for k in rng.integers(1, C + 1, int(rng.integers(1, 4)))})
        kw["top_k"] = tuple(ks) if rng.random() < 0.8 else ks[0]
        kw["bins"] = int(_pick(rng, [20, int(rng.integers(1, 50)), int(rng.integers(50, 2000))],
                               [0.5, 0.4, 0.1]))
        kw["per_sample"] = bool(rng.random() < 0.3)
        kw["grad"] = bool(rng.random() < 0.3)
        cm = _pick(rng, ["default", False, True], [0.6, 0.25, 0.15])
        if cm != "default" and (cm is False or C <= 2048):  # True: at most a 32 MB matrix
            kw["confusion"] = cm
    if dtype == np.float32 and x.size:
        # float32 rows whose x - max, or whose sum over the classes of (max - x) (label smoothing,
        # soft targets), leaves the float32 range: inf as in torch's float32 kernels.
        X = np.moveaxis(x.astype(np.float64), ax, -1)
        with np.errstate(all="ignore"):
            fin = np.where(np.isfinite(X), X, np.nan)
            m = np.nanmax(fin, axis=-1, keepdims=True, initial=-np.inf)
            d = np.where(np.isfinite(fin), m - fin, 0.0)
            wm = 1.0 if w is None else max(float(np.max(w)), 1.0)
        if np.any(d > FLT_MAX / 2) or np.any(np.sum(d, axis=-1) * wm > FLT_MAX / 4):
            case.overflow_ok = True
    grad_fn = func == "cross_entropy_grad" or (func == "evaluate" and kw.get("grad"))
    x_in = _layout(rng, x, tmp)
    t_in = _layout(rng, t, tmp)
    if grad_fn and rng.random() < 0.35:
        r = rng.random()
        if r < 0.4 and x_in.flags.c_contiguous and x_in.flags.writeable and \
                not isinstance(x_in, np.memmap):
            kw["out"] = x_in  # in place
        else:
            kw["out"] = np.full(shape, np.nan, dtype)
    case.args = (x_in, t_in)
    case.kwargs = kw
    case.note = note + (" soft" if soft else "")
    xr = x.astype(np.float64)
    case.x64 = xr
    # Soft targets as the kernel reads them: in its compute precision (float32 for float16 and
    # float32 logits), which decides the argmax of near-tied targets.
    tr = t.astype(np.float32 if dtype != np.float64 else np.float64) if soft else t.copy()

    def ref() -> Any:
        rk = {k: v for k, v in kw.items() if k not in ("out", "grad", "per_sample", "confusion")}
        rk["axis"] = -1 if len(shape) > 2 and kw["axis"] % len(shape) == len(shape) - 1 else 1
        if "weight" in rk:
            rk["weight"] = np.asarray(rk["weight"], np.float64)
        if func == "accuracy":
            return R.ref_accuracy(xr, tr, **rk)
        if func == "evaluate":
            rk["top_k"] = tuple(V_top_k_with_1(rk["top_k"]))
            return R.ref_evaluate(xr, tr, per_sample=kw["per_sample"], grad=kw["grad"], **rk)
        clip = np.float64 if dtype == np.float64 else np.float32
        return R.ref_cross_entropy(xr, tr, clip_dtype=clip, **rk)

    case.ref = ref


def _binary(rng: np.random.Generator, case: Case, tmp: Path | None) -> None:
    func = case.func
    nd = int(rng.integers(1, 4))
    shape = tuple(int(rng.integers(0 if rng.random() < 0.05 else 1, 12)) for _ in range(nd))
    dtype = _pick(rng, FLOAT_DTYPES, [0.15, 0.6, 0.25])
    from_logits = not (func in ("binary_cross_entropy", "binary_cross_entropy_grad")
                       and rng.random() < 0.12)
    x, note = _logits(rng, shape, dtype, probs=not from_logits)
    if rng.random() < 0.5:
        t = rng.random(shape).astype(_pick(rng, FLOAT_DTYPES))
        if rng.random() < 0.5:
            t = np.round(t).astype(t.dtype)
    else:
        t = rng.integers(0, 2, shape).astype(_pick(rng, [*LABEL_DTYPES, np.bool_]))
    kw: dict[str, Any] = {}
    if func != "binary_accuracy" and rng.random() < 0.3:
        r = rng.random()
        if r < 0.3:
            kw["pos_weight"] = float(rng.random() * 4)
        elif len(shape) and r < 0.8:
            kw["pos_weight"] = rng.random(shape[-1:]) * 4
        elif len(shape) >= 2:
            kw["pos_weight"] = (rng.random((shape[-2], 1)) * 4)
    if func in ("binary_cross_entropy", "binary_cross_entropy_grad"):
        kw["reduction"] = _pick(rng, ["mean", "sum", "none"])
        if not from_logits:
            kw["from_logits"] = False
    if func in ("binary_accuracy", "evaluate_binary") and rng.random() < 0.4:
        kw["threshold"] = float(_pick(rng, [rng.normal(), 0.5, np.inf, -np.inf]))
    if func == "evaluate_binary":
        kw["bins"] = int(_pick(rng, [20, int(rng.integers(1, 200))]))
        kw["grad"] = bool(rng.random() < 0.3)
    grad_fn = func == "binary_cross_entropy_grad" or (func == "evaluate_binary" and kw.get("grad"))
    x_in = _layout(rng, x, tmp)
    t_in = _layout(rng, t, tmp)
    if grad_fn and rng.random() < 0.35:
        if rng.random() < 0.4 and x_in.flags.c_contiguous and x_in.flags.writeable and \
                not isinstance(x_in, np.memmap):
            kw["out"] = x_in
        else:
            kw["out"] = np.full(shape, np.nan, dtype)
    case.args = (x_in, t_in)
    case.kwargs = kw
    case.note = note
    xr = x.astype(np.float64)
    case.x64 = xr
    tr = t.astype(np.float64)
    if dtype == np.float32 and x.size:  # |x| pos_weight beyond float32: inf, as torch
        pw = kw.get("pos_weight")
        pwm = max(float(np.max(np.asarray(pw if pw is not None else 1.0))), 1.0)
        with np.errstate(all="ignore"):
            case.overflow_ok = bool(np.any(np.abs(np.where(np.isfinite(xr), xr, 0)) * pwm
                                           > FLT_MAX / 2))

    def ref() -> Any:
        rk = {k: v for k, v in kw.items() if k not in ("out", "grad")}
        if func == "binary_accuracy":
            return R.ref_binary_accuracy(xr, tr, **rk)
        if func == "evaluate_binary":
            return R.ref_evaluate_binary(xr, tr, grad=kw["grad"], **rk)
        clip = np.float64 if dtype == np.float64 else np.float32
        return R.ref_binary_cross_entropy(xr, tr, clip_dtype=clip, **rk)

    case.ref = ref


# Invalid values, per argument: (value or a function of the case's arrays, argument named in the
# message). Functions that do not take the argument are skipped.
def _bad_values(case: Case, rng: np.random.Generator) -> list[tuple[str, Any, str]]:
    x, t = case.args
    kw = case.kwargs
    C = x.shape[kw.get("axis", 1)] if x.ndim >= 2 and case.func not in (
        "binary_cross_entropy", "binary_cross_entropy_grad", "binary_accuracy",
        "evaluate_binary") else 2
    multi = case.func in ("cross_entropy", "cross_entropy_grad", "accuracy", "evaluate")
    grad = case.func.endswith("_grad") or kw.get("grad", False)
    out = []
    # logits
    with np.errstate(invalid="ignore"):
        xi = x.astype(np.int32)
    out += [("logits", xi, "logits"), ("logits", x.astype(np.complex64), "logits"),
            ("logits", "abc", "logits"), ("logits", None, "logits"),
            ("logits", x.astype(x.dtype.newbyteorder(">")), "logits")]
    if multi:
        out += [("logits", np.zeros(3, np.float32), "logits"),
                ("logits", np.zeros((2, 0), np.float32), "logits")]
    # target
    out += [("target", None, "target"), ("target", np.zeros((7, 5, 3)), "target"),
            ("target", t.astype(np.complex64) if t.size else np.zeros(3, np.complex64), "target"),
            ("target", np.array(["a"] * max(t.size, 1)), "target")]
    if multi and t.dtype.kind in "iu" and t.size:
        bad_t = t.astype(np.int64)
        val = C + int(rng.integers(0, 5))
        bad_t.flat[int(rng.integers(0, t.size))] = val
        if kw.get("ignore_index", -100) != val:
            out.append(("target", bad_t, "target"))
    if not multi and t.size and t.dtype.kind == "f":
        bt = t.astype(np.float64)
        bt.flat[0] = _pick(rng, [1.5, -0.5, np.nan])
        out.append(("target", bt, "target"))
    if multi:
        out += [("axis", x.ndim, "axis"), ("axis", -x.ndim - 1, "axis"), ("axis", "1", "axis"),
                ("axis", 1.0, "axis"), ("axis", None, "axis")]
        if x.ndim > 3:
            out.append(("axis", 2, "axis"))
        if case.func != "accuracy":
            out += [("weight", np.ones(C + 1), "weight"), ("weight", -np.ones(C), "weight"),
                    ("weight", np.full(C, np.nan), "weight"), ("weight", "abc", "weight"),
                    ("weight", {"a": 1}, "weight"), ("weight", np.ones(C, np.complex128),
                                                     "weight"),
                    ("weight", [True] * C, "weight")]
            out += [("label_smoothing", "0.1", "label_smoothing"),
                    ("label_smoothing", -0.1, "label_smoothing"),
                    ("label_smoothing", 1.5, "label_smoothing"),
                    ("label_smoothing", float("nan"), "label_smoothing"),
                    ("label_smoothing", 0.1 + 0j, "label_smoothing"),
                    ("label_smoothing", True, "label_smoothing"),
                    ("label_smoothing", None, "label_smoothing")]
        out += [("ignore_index", 2**70, "ignore_index"), ("ignore_index", -(2**64), "ignore_index"),
                ("ignore_index", "x", "ignore_index"), ("ignore_index", 1.5, "ignore_index"),
                ("ignore_index", True, "ignore_index")]
    if case.func in ("cross_entropy", "cross_entropy_grad", "binary_cross_entropy",
                     "binary_cross_entropy_grad"):
        out += [("reduction", "avg", "reduction"), ("reduction", None, "reduction"),
                ("reduction", 1, "reduction"), ("reduction", ["mean"], "reduction"),
                ("from_logits", "no", "from_logits"), ("from_logits", None, "from_logits"),
                ("from_logits", 1, "from_logits")]
    if case.func == "accuracy":
        out += [("top_k", 0, "top_k"), ("top_k", C + 1, "top_k"), ("top_k", "1", "top_k"),
                ("top_k", 1.5, "top_k"), ("top_k", True, "top_k"), ("top_k", (1, 2), "top_k")]
    if case.func == "evaluate":
        out += [("top_k", 0, "top_k"), ("top_k", (C + 1,), "top_k"), ("top_k", (), "top_k"),
                ("top_k", tuple(range(2, 10)), "top_k"), ("top_k", "1", "top_k"),
                ("top_k", (True,), "top_k"), ("per_sample", "yes", "per_sample"),
                ("grad", "no", "grad"), ("confusion", "yes", "confusion"),
                ("confusion", 1, "confusion")]
    if case.func in ("evaluate", "evaluate_binary"):
        out += [("bins", 0, "bins"), ("bins", -3, "bins"), ("bins", 2**31, "bins"),
                ("bins", 70_000, "bins"), ("bins", 1.5, "bins"), ("bins", "20", "bins"),
                ("bins", True, "bins"), ("bins", None, "bins")]
    if case.func in ("binary_accuracy", "evaluate_binary"):
        out += [("threshold", "0.5", "threshold"), ("threshold", float("nan"), "threshold"),
                ("threshold", 1j, "threshold"), ("threshold", None, "threshold"),
                ("threshold", [0.5], "threshold")]
    if case.func in ("binary_cross_entropy", "binary_cross_entropy_grad", "evaluate_binary"):
        out += [("pos_weight", "abc", "pos_weight"), ("pos_weight", {"a": 1}, "pos_weight"),
                ("pos_weight", np.ones(x.shape[-1:] if x.ndim else (1,)) * np.nan, "pos_weight"),
                ("pos_weight", np.ones((x.shape[-1] + 2 if x.ndim else 2,)), "pos_weight"),
                ("pos_weight", 1j, "pos_weight")]
    if grad:
        out += [("out", np.zeros((1,) * x.ndim + (3,), x.dtype), "out"),
                ("out", np.zeros(x.shape, np.int32), "out"), ("out", [0.0], "out")]
        if x.size:
            ro = np.zeros(x.shape, x.dtype)
            ro.setflags(write=False)
            out.append(("out", ro, "out"))
            if x.shape[-1] > 1:  # (a one-element view counts as contiguous)
                out.append(("out", np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)[..., ::2],
                            "out"))
        if t.dtype == x.dtype and t.shape == x.shape and x.size:
            out.append(("out", "alias-target", "out"))
        if multi and x.size and x.dtype == np.float64 and "weight" in kw:
            out.append(("out", "alias-weight", "out"))
    out += [("threads", 0, "n"), ("threads", 100_000, "n"), ("threads", 2**31, "n"),
            ("threads", "4", "n")]
    return out


def V_top_k_with_1(top_k: Any) -> list[int]:  # noqa: N802 - mirrors lossdiag.core.validate
    ks = [top_k] if isinstance(top_k, int) else list(top_k)
    return ks if 1 in ks else [1, *ks]


def make_case(seed: int, tmp: Path | None = None) -> Case:
    """The call of one seed (the same on every machine)."""
    rng = np.random.default_rng([seed, 25])
    func = _pick(rng, FUNCS, [0.16, 0.14, 0.1, 0.2, 0.1, 0.1, 0.08, 0.12])
    case = Case(seed=seed, func=func)
    if func in ("cross_entropy", "cross_entropy_grad", "accuracy", "evaluate"):
        _multiclass(rng, case, tmp)
    else:
        _binary(rng, case, tmp)
    if rng.random() < 0.2:
        case.threads = int(rng.integers(1, 5))
    if rng.random() < 0.2:
        case.simd = _pick(rng, ["base", "avx2", "avx512"])
    if rng.random() < 0.25:
        case.wide = int(rng.integers(1, 64))
    if rng.random() < 0.17:
        bad = _bad_values(case, rng)
        arg, value, name = bad[int(rng.integers(0, len(bad)))]
        case.bad = name
        case.note = (case.note + f" bad {arg}").strip()
        x, t = case.args
        if arg == "logits":
            case.args = (value, t)
        elif arg == "target":
            case.args = (x, value)
        elif arg == "threads":
            case.threads = value
        elif isinstance(value, str) and value == "alias-target":
            case.args = (x, x.copy())
            case.kwargs["out"] = case.args[1]
        elif isinstance(value, str) and value == "alias-weight":
            o = np.zeros(x.shape, x.dtype)
            C = x.shape[case.kwargs.get("axis", 1)]
            case.kwargs["out"] = o
            case.kwargs["weight"] = o.reshape(-1)[:C] if o.size >= C else case.kwargs["weight"]
            if o.size < C:
                case.bad = None
        else:
            case.kwargs[arg] = value
    return case


# ------------------------------------------------------------------------------------------------
# checking
# ------------------------------------------------------------------------------------------------
def _ce_elem_tol(case: Case, dtype: np.dtype) -> np.ndarray:
    """Per-element absolute tolerance of a multi-class loss: a few units in the last place of
    the terms it is made of (|x_c - max|, log C) times the weights involved."""
    x = case.x64
    kw = case.kwargs
    axis = kw.get("axis", 1)
    X = np.moveaxis(x, axis % x.ndim, -1)
    C = X.shape[-1]
    w = np.ones(C) if kw.get("weight") is None else np.asarray(kw["weight"], np.float64)
    eps = float(kw.get("label_smoothing", 0.0))
    with np.errstate(all="ignore"):
        m = np.max(np.where(np.isnan(X), -np.inf, X), axis=-1, keepdims=True)
        D = np.where(np.isfinite(X), np.abs(X - m), 0.0)
        D = np.where(np.isfinite(D), D, 0.0)
        span = np.max(D, axis=-1, initial=0.0) + math.log(max(C, 1)) + 1.0
    if not kw.get("from_logits", True):
        span = np.full(X.shape[:-1], 20.0)  # |log q| <= -log(1e-7) ~ 16
    u = 1e-12 if dtype == np.float64 else 4e-6
    return u * span * (w.max(initial=1.0) * (1 + eps) + 1.0)


def _close(got: Any, want: Any, atol: Any, rtol: float, what: str, overflow_ok: bool = False,
           ) -> None:
    g = np.asarray(got, np.float64)
    r = np.asarray(want, np.float64)
    if g.shape != r.shape:
        raise Wrong(f"{what}: shape {g.shape} != reference {r.shape}")
    atol = np.broadcast_to(np.asarray(atol, np.float64), r.shape)
    with np.errstate(invalid="ignore"):
        ok = (g == r) | (np.isnan(g) & np.isnan(r)) | (np.abs(g - r) <= atol + rtol * np.abs(r))
    if overflow_ok:  # documented float32 overflow: inf or NaN where the reference is finite
        ok |= ~np.isfinite(g)
    if not np.all(ok):
        i = int(np.flatnonzero(~ok.ravel())[0])
        raise Wrong(f"{what}: {g.ravel()[i]!r} vs reference {r.ravel()[i]!r} (flat index {i}, "
                    f"atol {atol.ravel()[i]:.3g})")


def _loss_tol(case: Case, dtype: np.dtype, red: str) -> Any:
    et = _ce_elem_tol(case, dtype)
    if red == "none":
        return et
    x, t = case.x64, case.args[1]
    kw = case.kwargs
    axis = kw.get("axis", 1) % x.ndim
    total = float(np.sum(et))
    if red == "sum":
        return total
    if np.asarray(t).dtype.kind in "iub":
        C = x.shape[axis]
        w = np.ones(C) if kw.get("weight") is None else np.asarray(kw["weight"], np.float64)
        lab, valid = R.labels_and_mask(np.asarray(t), C, kw.get("ignore_index", -100))
        den = float(np.sum(np.where(valid, w[lab], 0.0)))
    else:
        den = float(et.size)
    return total / den if den > 0 else 0.0


def _grad_tol(ref_g: np.ndarray, dtype: np.dtype, unit: float) -> tuple[float, float]:
    fin = np.isfinite(ref_g)
    scale = max(float(np.max(np.abs(ref_g[fin]), initial=0.0)), unit)
    if dtype == np.float16:
        return 2e-3 * scale + 1e-7, 2e-3
    if dtype == np.float32:
        return 2e-5 * scale, 1e-4
    return 1e-10 * scale, 1e-9


def _nan_rows(case: Case, shape: tuple[int, ...]) -> np.ndarray:
    """True at every gradient entry of an element whose softmax is undefined: its logits hold
    NaN or +inf, or are all -inf."""
    x = case.x64
    if x.shape != shape:
        return np.zeros(shape, bool)
    bad = np.isnan(x) | (x == np.inf)
    if case.func.startswith("binary") or case.func == "evaluate_binary":
        return bad
    ax = case.kwargs.get("axis", 1) % x.ndim
    rows = np.any(bad, axis=ax, keepdims=True) | np.all(x == -np.inf, axis=ax, keepdims=True)
    return np.broadcast_to(rows, shape)


def _check_grad(g: Any, ref_g: np.ndarray, case: Case, dtype: np.dtype, unit: float) -> None:
    g = np.asarray(g)
    if g.dtype != dtype or g.shape != ref_g.shape:
        raise Wrong(f"grad: {g.dtype}{g.shape}, expected {dtype}{ref_g.shape}")
    atol, rtol = _grad_tol(ref_g, dtype, unit)
    # Rows holding a non-finite logit: only "not finite where the reference is not" is required;
    # a row with NaN or +inf has a NaN gradient even when ignored (0 * NaN), as in PyTorch.
    gg = np.asarray(g, np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(ref_g) & (np.abs(gg - ref_g) <= atol + rtol * np.abs(ref_g))
        ok |= ~np.isfinite(ref_g) & ~np.isfinite(gg)
        ok |= ~np.isfinite(ref_g) & case.overflow_ok
        ok |= _nan_rows(case, gg.shape) & np.isnan(gg)
    if case.overflow_ok:
        ok |= ~np.isfinite(gg)
    if not np.all(ok):
        i = int(np.flatnonzero(~ok.ravel())[0])
        raise Wrong(f"grad: {gg.ravel()[i]!r} vs reference {ref_g.ravel()[i]!r} at {i}")


def _bce_elem_tol(case: Case, dtype: np.dtype) -> np.ndarray:
    """Per-element absolute tolerance of a binary loss: ulps of (1 + pos_weight) (|x| + 2)."""
    xr = case.x64
    pw = case.kwargs.get("pos_weight")
    pwm = float(np.max(np.asarray(pw if pw is not None else 1.0, np.float64), initial=1.0))
    if not case.kwargs.get("from_logits", True):
        return np.full(xr.shape, 4e-6 * 20 * (1 + pwm))
    u = 1e-12 if dtype == np.float64 else 4e-7
    return u * (1.0 + pwm) * (np.where(np.isfinite(xr), np.abs(xr), 0.0) + 2.0)


def _unit(case: Case, ref_loss_mean: bool) -> float:
    x, t = case.x64, case.args[1]
    kw = case.kwargs
    if case.func.startswith("binary") or case.func == "evaluate_binary":
        pw = kw.get("pos_weight")
        u = 1.0 + float(np.max(np.asarray(pw if pw is not None else 1.0, np.float64),
                               initial=1.0))
        return u / max(x.size, 1) if ref_loss_mean else u
    rk = {k: v for k, v in kw.items() if k in ("weight", "ignore_index", "label_smoothing")}
    nd = x.ndim
    rk["axis"] = -1 if nd > 2 and kw.get("axis", 1) % nd == nd - 1 else 1
    if "weight" in rk:
        rk["weight"] = np.asarray(rk["weight"], np.float64)
    return R.ce_scales(x, np.asarray(t),
                       reduction="mean" if ref_loss_mean else "sum", **rk)[1]


def _check_result(case: Case, res: Any) -> None:
    """Raise Wrong when a valid call's result disagrees with the reference."""
    import conftest as CT  # the suite's tolerant histogram checks

    x = np.asarray(case.args[0])
    dtype = x.dtype
    kw = case.kwargs
    func = case.func
    want = case.ref()
    if func in ("accuracy", "binary_accuracy"):
        if not isinstance(res, float):
            raise Wrong(f"{func} returned {type(res).__name__}")
        _close(res, want, 0.0, 0.0, func)
        return
    if func in ("cross_entropy", "cross_entropy_grad", "binary_cross_entropy",
                "binary_cross_entropy_grad"):
        loss = res[0] if func.endswith("_grad") else res
        red = kw.get("reduction", "mean")
        if func.startswith("binary"):
            et = _bce_elem_tol(case, dtype)
            tol = et if red == "none" else (float(et.sum()) / (max(et.size, 1) if red == "mean"
                                                                else 1))
        else:
            tol = _loss_tol(case, dtype, red)
        if red == "none":
            ld = np.float64 if dtype == np.float64 else np.float32
            if not isinstance(loss, np.ndarray) or loss.dtype != ld:
                raise Wrong(f"loss: {type(loss).__name__} {getattr(loss, 'dtype', '')}, "
                            f"expected {np.dtype(ld)}")
        elif not isinstance(loss, float):
            raise Wrong(f"loss: {type(loss).__name__}, expected float")
        _close(loss, want[0], tol, 1e-5 if dtype != np.float64 else 1e-11, "loss",
               case.overflow_ok)
        if func.endswith("_grad"):
            _check_grad(res[1], want[1], case, dtype, _unit(case, red == "mean"))
            if "out" in kw and res[1] is not kw["out"]:
                raise Wrong("grad: out= was not used")
        return
    # evaluate / evaluate_binary
    st = res
    for k in ("count", "ignored", "nonfinite", "nonfinite_rows"):
        if int(getattr(st, k)) != want[k]:
            raise Wrong(f"{k}: {getattr(st, k)} vs reference {want[k]}")
    if {int(k): int(v) for k, v in st.correct.items()} != want["correct"]:
        raise Wrong(f"correct: {st.correct} vs reference {want['correct']}")
    cm = np.asarray(want["confusion"])
    exp = {"class_count": want["class_count"], "class_pred": cm.sum(axis=0),
           "class_tp": np.diagonal(cm)}
    keep = kw.get("confusion")
    if keep is None:
        keep = cm.shape[0] <= 1024  # kept by default up to 1024 classes
    if keep:
        exp["confusion"] = cm
    elif st.confusion is not None:
        raise Wrong("confusion: computed although not asked for")
    for k, v in exp.items():
        if not np.array_equal(np.asarray(getattr(st, k)), v):
            raise Wrong(f"{k} differs from the reference")
    if func == "evaluate":
        _close(st.loss, want["loss"], _loss_tol(case, dtype, "mean"),
               1e-5 if dtype != np.float64 else 1e-11, "loss", case.overflow_ok)
    else:
        _close(st.loss, want["loss"], float(np.mean(_bce_elem_tol(case, dtype))) if x.size
               else 0.0, 1e-5 if dtype != np.float64 else 1e-11, "loss", case.overflow_ok)
    top1 = want["correct"][1] / want["count"] if want["count"] else math.nan
    if not (st.accuracy == top1 or (math.isnan(st.accuracy) and math.isnan(top1))):
        raise Wrong(f"accuracy: {st.accuracy} is not the top-1 accuracy {top1}")
    d = CT.HIST_DELTA[np.dtype(dtype)]
    try:
        CT.assert_hist_close(st.true_prob_hist, want["_p_true"], want["bins"], delta=d)
        CT.assert_hist_close(st.conf_hist, want["_conf"], want["bins"], delta=d)
        CT.assert_hist_close(st.margin_hist, want["_margin"], want["bins"], -1.0, 1.0, 2 * d)
        n = len(want["_p_true"])
        tps = 1e-12 if dtype == np.float64 else 1e-5
        _close(st.true_prob_sum, want["true_prob_sum"], tps * n + 1e-12, tps, "true_prob_sum")
        _close(st.entropy_sum, want["entropy_sum"], tps * n * 10 + 1e-9, tps, "entropy_sum")
        CT.assert_count_below(st.below_inv_e, want["_p_true"], math.exp(-1.0), d)
        if np.any(~np.isfinite(np.asarray(st.class_loss_sum))) and not case.overflow_ok:
            raise Wrong("class_loss_sum is not finite for rows counted as finite")
    except AssertionError as exc:
        raise Wrong(f"statistics: {exc}") from None
    if func == "evaluate" and kw.get("per_sample"):
        for k in ("sample_count", "sample_correct", "sample_intersection", "sample_true",
                  "sample_pred"):
            if not np.array_equal(np.asarray(getattr(st, k)), want[k]):
                raise Wrong(f"{k} differs from the reference")
    if kw.get("grad"):
        _check_grad(st.grad, want["grad"], case, dtype, _unit(case, True))


def _call(case: Case) -> Any:
    import lossdiag as ld

    return getattr(ld, case.func)(*case.args, **case.kwargs)


def run_case(case: Case) -> tuple[str, str]:
    """("ok" | "wrong" | "unclear", detail) for one case (a crash ends the process)."""
    import lossdiag as ld
    from lossdiag import _core

    threads0, simd0, wide0 = ld.get_num_threads(), _core.simd(), _core._wide_min_classes()
    try:
        if case.threads is not None:
            try:
                ld.set_num_threads(case.threads)
            except (TypeError, ValueError) as exc:
                if case.bad != "n":
                    return "wrong", f"set_num_threads({case.threads!r}) refused: {exc}"
                return ("ok", "") if "n:" in str(exc) else ("unclear", f"{exc}")
            if case.bad == "n":
                return "wrong", f"set_num_threads({case.threads!r}) accepted"
        if case.simd is not None:
            _core.set_simd(case.simd)
        if case.wide is not None:
            _core._set_wide_min_classes(case.wide)
        try:
            res = _call(case)
        except (TypeError, ValueError) as exc:
            if case.bad is None:
                return "wrong", f"valid call refused: {type(exc).__name__}: {exc}"
            if f"{case.bad}" not in str(exc):
                return "unclear", f"{type(exc).__name__} without '{case.bad}': {exc}"
            return "ok", ""
        except Exception as exc:  # noqa: BLE001 - every other exception is a finding
            kind = "unclear" if case.bad is not None else "wrong"
            return kind, f"{type(exc).__name__}: {exc} " + traceback.format_exc(limit=-2)
        if case.bad is not None:
            return "wrong", "invalid argument accepted"
        try:
            _check_result(case, res)
        except Wrong as exc:
            return "wrong", str(exc)
        return "ok", ""
    finally:
        ld.set_num_threads(threads0)
        _core.set_simd(simd0)
        _core._set_wide_min_classes(wide0)


def run_seeds(seeds: Any, tmp: Path) -> dict[str, list[tuple[int, str]]]:
    """Run the cases of `seeds`; findings by outcome."""
    found: dict[str, list[tuple[int, str]]] = {"ok": [], "wrong": [], "unclear": []}
    for s in seeds:
        case = make_case(int(s), tmp)
        status, detail = run_case(case)
        found[status].append((int(s), detail if status == "ok" else
                              f"{detail}\n    {case.describe()}"))
        for f in tmp.iterdir():  # memory-mapped inputs of this case
            try:
                f.unlink()
            except OSError:  # pragma: no cover - still mapped on some platforms
                pass
    return found


# ------------------------------------------------------------------------------------------------
# the suite's slice
# ------------------------------------------------------------------------------------------------
N_CI = int(os.environ.get("LOSSDIAG_FUZZ_CASES", "2500"))


@pytest.mark.parametrize("block", range(5))
def test_fuzz(tmp_path: Path, block: int) -> None:
    """N_CI seeded random calls (5 blocks): 0 wrong, 0 unclear."""
    per = (N_CI + 4) // 5
    found = run_seeds(range(block * per, min(N_CI, (block + 1) * per)), tmp_path)
    bad = found["wrong"] + found["unclear"]
    assert not bad, "\n".join(f"{s}: {d}" for s, d in bad[:10]) + f"\n({len(bad)} findings)"


def test_fuzz_cases_are_deterministic() -> None:
    a, b = make_case(123), make_case(123)
    assert a.describe() == b.describe()
    for u, v in zip(a.args, b.args):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_fuzz_detects_a_wrong_kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The checker is not vacuous: a loss off by 0.1 % and a swallowed bad argument are found."""
    import lossdiag as ld

    real = ld.cross_entropy
    monkeypatch.setattr(ld, "cross_entropy", lambda *a, **k: (
        real(*a, **k) * 1.001 if k.get("reduction", "mean") != "none" else real(*a, **k) * 1.001))
    seeds = [s for s in range(400) if make_case(s).func == "cross_entropy"
             and make_case(s).bad is None][:30]
    found = run_seeds(seeds, tmp_path)
    assert len(found["wrong"]) >= len(seeds) // 2, found["wrong"][:3]
    monkeypatch.setattr(ld, "cross_entropy", lambda *a, **k: 0.0)
    seeds = [s for s in range(600) if make_case(s).func == "cross_entropy"
             and make_case(s).bad not in (None, "n")][:10]
    found = run_seeds(seeds, tmp_path)
    assert len(found["wrong"]) == len(seeds)
