"""CPU benchmark of lossdiag's fused kernels (``lossdiag bench``).

One run times, on float32 logits,

* ``nchw``: a Pascal-VOC-like segmentation batch (N, 21, H, W) with ``axis=1``, uint8 labels and
  ~5 % of the pixels set to ``ignore_index=255``;
* ``nhwc``: the same data with the class axis last (N, H, W, 21), ``axis=-1``;
* ``cls``:  a (65536, 1000) classification batch with int64 labels,

and for each case ``cross_entropy``, ``accuracy``, ``cross_entropy_grad`` (allocating, and in place
with ``out=`` a copy of the logits) and ``evaluate`` against

* an idiomatic, numerically stable NumPy implementation (the work a user would write by hand),
* PyTorch CPU (``F.cross_entropy``, autograd forward+backward, argmax, ``bincount``, ``histc``,
  ``histogram``)
  when torch is installed, with ``torch.set_num_threads`` equal to lossdiag's thread count,
* the memory limit measured in the same run: a multi-threaded read of a buffer the size of the
  logits (for loss / accuracy / evaluate) and a read+write copy (for the gradient).

Every lossdiag (and torch) result is checked against the NumPy result; a mismatch aborts the run
with exit status 2, so a fast but wrong kernel cannot produce a benchmark table.

``lossdiag bench`` (``main()``) ends with a summary for users: what was measured, the speed-ups
against NumPy and torch, the machine. The developer benchmark (bench/bench_core.py,
``main(developer=True)``) prints every timing and the performance targets (PASS/MISS) instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = ["main", "BenchmarkMismatch"]

# Shapes and repeat counts of the three presets.  "tiny" exists for the smoke test only.
# Every timed block first warms up for at least ``warmup`` calls *and* ``min_warmup_s`` seconds,
# then times at least ``repeats`` calls *and* ``min_time_s`` seconds of calls (at most
# MAX_CALLS_PER_REPEAT * repeats): on a 2-vCPU VM a multi-threaded call made right after a
# single-threaded stretch (the NumPy baseline) or an idle one can run ~15 % slower for ~0.2 s
# while the idle vCPU comes back (bench/README.md), which a fixed count of fast calls does not
# cover, and the median of a few fast calls samples only ~0.1 s of a machine whose speed drifts.
PRESETS: dict[str, dict[str, Any]] = {
    "full": {"seg": (8, 21, 512, 512), "cls": (65536, 1000), "repeats": 7, "warmup": 1,
             "min_warmup_s": 0.5, "min_time_s": 1.0},
    "quick": {"seg": (4, 21, 256, 256), "cls": (16384, 1000), "repeats": 3, "warmup": 1,
              "min_warmup_s": 0.2, "min_time_s": 0.3},
    "tiny": {"seg": (2, 5, 16, 24), "cls": (96, 10), "repeats": 2, "warmup": 1,
             "min_warmup_s": 0.0, "min_time_s": 0.0},
}
MAX_CALLS_PER_REPEAT = 25
CASES = ("nchw", "nhwc", "cls")
BINS = 20
SEG_IGNORE = 255
CLS_IGNORE = -100

# Tolerances of the correctness checks (lossdiag/torch vs NumPy).
LOSS_RTOL = 1e-4
GRAD_RTOL = 1e-4  # of max |grad|
COUNT_RTOL = 1e-5  # argmax ties / float rounding may flip a handful of elements
HIST_RTOL = 1e-4  # elements sitting on a bin edge may land in the neighbouring bin

FUNCTIONS = ("read limit", "copy limit", "cross_entropy", "accuracy", "cross_entropy_grad",
             "evaluate")


class BenchmarkMismatch(AssertionError):
    """A benchmarked implementation disagrees with the NumPy reference."""


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One benchmark input: logits, labels and how to interpret them."""

    name: str
    logits: np.ndarray
    target: np.ndarray
    axis: int
    ignore_index: int

    @property
    def num_classes(self) -> int:
        """Size of the class axis."""
        return int(self.logits.shape[self.axis])

    @property
    def title(self) -> str:
        """Human readable description of the case."""
        return (f"{self.name} {tuple(self.logits.shape)} {self.logits.dtype} axis={self.axis}, "
                f"labels {self.target.dtype}, ignore_index={self.ignore_index}")


def make_segmentation(rng: np.random.Generator, shape: tuple[int, ...],
                      ignore_frac: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """VOC-like NCHW float32 logits and uint8 labels (70 % background, ``ignore_frac`` = 255).

    The true class gets a +4 boost on 75 % of the pixels so accuracy and the histograms look like a
    half-trained model rather than noise.
    """
    n, c, h, w = shape
    probs = np.full(c, 0.3 / (c - 1))
    probs[0] = 0.7
    labels = rng.choice(c, size=(n, h, w), p=probs).astype(np.uint8)
    logits = rng.standard_normal((n, c, h, w), dtype=np.float32)
    logits *= 2.0
    idx = labels[:, None].astype(np.intp)
    boost = (rng.random((n, 1, h, w), dtype=np.float32) < 0.75).astype(np.float32) * 4.0
    np.put_along_axis(logits, idx, np.take_along_axis(logits, idx, 1) + boost, 1)
    labels[rng.random((n, h, w)) < ignore_frac] = SEG_IGNORE
    return logits, labels


def make_classification(rng: np.random.Generator,
                        shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) float32 logits and int64 labels; the true class is boosted on 60 % of the rows."""
    n, c = shape
    labels = rng.integers(0, c, size=n, dtype=np.int64)
    logits = rng.standard_normal((n, c), dtype=np.float32)
    logits *= 2.0
    rows = np.arange(n)
    logits[rows, labels] += (rng.random(n, dtype=np.float32) < 0.6) * np.float32(5.0)
    return logits, labels


# --------------------------------------------------------------------------------------------
# NumPy reference (idiomatic and numerically stable; its temporaries are the point)
# --------------------------------------------------------------------------------------------


def _np_prepare(x: np.ndarray, t: np.ndarray, axis: int,
                ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    valid = t != ignore_index
    idx = np.expand_dims(np.where(valid, t, 0).astype(np.intp), axis)
    return valid, idx


def np_cross_entropy(x: np.ndarray, t: np.ndarray, axis: int, ignore_index: int) -> float:
    """Mean cross-entropy via max-shifted log-sum-exp and ``take_along_axis``."""
    valid, idx = _np_prepare(x, t, axis, ignore_index)
    m = x.max(axis=axis, keepdims=True)
    lse = np.log(np.exp(x - m).sum(axis=axis, keepdims=True)) + m
    loss = (lse - np.take_along_axis(x, idx, axis)).squeeze(axis)
    return float(loss[valid].mean(dtype=np.float64))


def np_accuracy(x: np.ndarray, t: np.ndarray, axis: int, ignore_index: int) -> float:
    """Top-1 accuracy over the non-ignored elements."""
    valid = t != ignore_index
    pred = x.argmax(axis=axis)
    return np.count_nonzero((pred == t) & valid) / np.count_nonzero(valid)


def np_cross_entropy_grad(x: np.ndarray, t: np.ndarray, axis: int,
                          ignore_index: int) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and its gradient (softmax - one_hot) / count, 0 on ignored elements."""
    valid, idx = _np_prepare(x, t, axis, ignore_index)
    m = x.max(axis=axis, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=axis, keepdims=True)
    lse = np.log(s) + m
    loss = (lse - np.take_along_axis(x, idx, axis)).squeeze(axis)
    n = np.count_nonzero(valid)
    mean = float(loss[valid].mean(dtype=np.float64))
    e /= s  # softmax, in place
    np.put_along_axis(e, idx, np.take_along_axis(e, idx, axis) - 1.0, axis)
    e *= np.expand_dims(valid, axis).astype(e.dtype) / np.float32(n)
    return mean, e


@dataclass
class EvalResult:
    """The subset of ``BatchStats`` every implementation computes (and is compared on)."""

    loss: float
    count: int
    correct: int
    confusion: np.ndarray
    conf_hist: np.ndarray
    conf_correct: np.ndarray  # per confidence bin: correct predictions
    conf_sum: np.ndarray  # per confidence bin: sum of the confidences
    true_prob_hist: np.ndarray
    margin_hist: np.ndarray


def np_evaluate(x: np.ndarray, t: np.ndarray, axis: int, ignore_index: int,
                bins: int = BINS) -> EvalResult:
    """The NumPy chain: stable CE + argmax + bincount confusion + 5 ``np.histogram`` calls.

    The histograms are those ``evaluate`` returns: confidence (with its per-bin correct counts and
    confidence sums, the reliability diagram), true-class probability and margin.
    """
    c = x.shape[axis]
    valid, idx = _np_prepare(x, t, axis, ignore_index)
    m = x.max(axis=axis, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=axis, keepdims=True)
    lse = np.log(s) + m
    loss = (lse - np.take_along_axis(x, idx, axis)).squeeze(axis)[valid].mean(dtype=np.float64)
    pred = x.argmax(axis=axis)
    p = e
    p /= s
    pmax = p.max(axis=axis)
    ptrue = np.take_along_axis(p, idx, axis)
    np.put_along_axis(p, idx, -1.0, axis)
    margin = ptrue.squeeze(axis) - p.max(axis=axis)
    ptrue = ptrue.squeeze(axis)
    tv = t[valid].astype(np.intp)
    pv = pred[valid]
    confusion = np.bincount(tv * c + pv, minlength=c * c).reshape(c, c)
    right = tv == pv
    conf = pmax[valid]
    return EvalResult(
        loss=float(loss), count=int(tv.size), correct=int(np.count_nonzero(right)),
        confusion=confusion,
        conf_hist=np.histogram(conf, bins=bins, range=(0.0, 1.0))[0],
        conf_correct=np.histogram(conf[right], bins=bins, range=(0.0, 1.0))[0],
        conf_sum=np.histogram(conf, bins=bins, range=(0.0, 1.0), weights=conf)[0],
        true_prob_hist=np.histogram(ptrue[valid], bins=bins, range=(0.0, 1.0))[0],
        margin_hist=np.histogram(margin[valid], bins=bins, range=(-1.0, 1.0))[0],
    )


# --------------------------------------------------------------------------------------------
# torch baseline
# --------------------------------------------------------------------------------------------


class TorchImpl:
    """PyTorch CPU versions of the four benchmarked functions for one case.

    Labels are converted to int64 once, outside the timings (torch needs int64 class indices; a
    torch data loader would deliver them that way).  For class-last data the logits are viewed as
    (-1, C), the fastest layout for torch.
    """

    def __init__(self, torch: Any, case: Case) -> None:
        import torch.nn.functional as F  # noqa: N812

        self.torch = torch
        self.F = F
        self.case = case
        self.c = case.num_classes
        self.ii = case.ignore_index
        self.x = torch.from_numpy(case.logits)
        self.t = torch.from_numpy(case.target.astype(np.int64))
        self.xg = torch.from_numpy(case.logits).requires_grad_(True)

    def _view(self, x: Any) -> tuple[Any, Any]:
        if self.case.axis == 1:
            return x, self.t
        return x.reshape(-1, self.c), self.t.reshape(-1)

    def cross_entropy(self) -> float:
        """``F.cross_entropy`` (mean, ignore_index)."""
        x, t = self._view(self.x)
        with self.torch.no_grad():
            return float(self.F.cross_entropy(x, t, ignore_index=self.ii))

    def accuracy(self) -> float:
        """argmax over the class axis, mean over the non-ignored elements."""
        x, t = self._view(self.x)
        with self.torch.no_grad():
            valid = t != self.ii
            return float(((x.argmax(1) == t) & valid).sum() / valid.sum())

    def cross_entropy_grad(self) -> tuple[float, Any]:
        """Forward + backward through autograd."""
        self.xg.grad = None
        x, t = self._view(self.xg)
        loss = self.F.cross_entropy(x, t, ignore_index=self.ii)
        loss.backward()
        return float(loss.detach()), self.xg.grad

    def evaluate(self, bins: int = BINS) -> EvalResult:
        """F.cross_entropy + softmax/argmax + bincount confusion + 4 ``torch.histc`` and a weighted
        ``torch.histogram`` (the confidence sums)."""
        torch = self.torch
        x, t = self._view(self.x)
        c = self.c
        with torch.no_grad():
            loss = self.F.cross_entropy(x, t, ignore_index=self.ii)
            p = torch.softmax(x, 1)
            pmax, pred = p.max(1)
            valid = t != self.ii
            idx = torch.where(valid, t, 0).unsqueeze(1)
            ptrue = p.gather(1, idx).squeeze(1)
            p.scatter_(1, idx, -1.0)
            margin = ptrue - p.amax(1)
            tv = t[valid]
            pv = pred[valid]
            confusion = torch.bincount(tv * c + pv, minlength=c * c).reshape(c, c)
            right = tv == pv
            conf = pmax[valid]
            return EvalResult(
                loss=float(loss), count=int(tv.numel()), correct=int(right.sum()),
                confusion=confusion.numpy(),
                conf_hist=torch.histc(conf, bins, 0.0, 1.0).long().numpy(),
                conf_correct=torch.histc(conf[right], bins, 0.0, 1.0).long().numpy(),
                conf_sum=torch.histogram(conf, bins, range=(0.0, 1.0), weight=conf).hist.numpy(),
                true_prob_hist=torch.histc(ptrue[valid], bins, 0.0, 1.0).long().numpy(),
                margin_hist=torch.histc(margin[valid], bins, -1.0, 1.0).long().numpy(),
            )


# --------------------------------------------------------------------------------------------
# memory limit
# --------------------------------------------------------------------------------------------


class MemoryLimit:
    """Read and copy kernels that approximate the machine's memory bandwidth limit.

    Uses ``lossdiag._core.mem_read`` / ``mem_copy`` when the core provides them, plus a NumPy
    version (``sum`` / ``copyto`` on one chunk per thread; both release the GIL).  Every available
    variant is timed and the fastest is taken as the limit.
    """

    def __init__(self, core: Any, threads: int) -> None:
        self.threads = max(1, threads)
        self.pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self.core = core

    def read_variants(self) -> list[tuple[str, Callable[[np.ndarray], Any]]]:
        """(label, function) pairs that read a whole array."""
        out: list[tuple[str, Callable[[np.ndarray], Any]]] = []
        if self.core is not None and hasattr(self.core, "mem_read"):
            out.append(("_core.mem_read", self.core.mem_read))
        out.append((f"numpy sum x{self.threads}thr", self._np_read))
        return out

    def copy_variants(self) -> list[tuple[str, Callable[[np.ndarray, np.ndarray], Any]]]:
        """(label, function(src, dst)) pairs that copy a whole array."""
        out: list[tuple[str, Callable[[np.ndarray, np.ndarray], Any]]] = []
        core_copy = self._core_copy()
        if core_copy is not None:
            out.append(("_core.mem_copy", core_copy))
        out.append((f"numpy copyto x{self.threads}thr", self._np_copy))
        return out

    def _core_copy(self) -> Callable[[np.ndarray, np.ndarray], Any] | None:
        """``_core.mem_copy`` as f(src, dst), whichever argument order the core uses (probed)."""
        fn = getattr(self.core, "mem_copy", None) if self.core is not None else None
        if fn is None:
            return None
        a = np.arange(1, 1025, dtype=np.float32)
        b = np.zeros_like(a)
        fn(b, a)
        if np.array_equal(b, a):  # mem_copy(dst, src)
            return lambda src, dst: fn(dst, src)
        if not a.any():  # mem_copy(src, dst)
            return fn
        return None

    def _np_read(self, a: np.ndarray) -> float:
        chunks = np.array_split(a.reshape(-1), self.threads)
        if self.pool is None:
            return float(chunks[0].sum())
        return float(sum(self.pool.map(np.sum, chunks)))

    def _np_copy(self, src: np.ndarray, dst: np.ndarray) -> None:
        s = np.array_split(src.reshape(-1), self.threads)
        d = np.array_split(dst.reshape(-1), self.threads)
        if self.pool is None:
            np.copyto(d[0], s[0])
        else:
            list(self.pool.map(np.copyto, d, s))

    def close(self) -> None:
        """Stop the worker threads."""
        if self.pool is not None:
            self.pool.shutdown()


# --------------------------------------------------------------------------------------------
# timing, checks, results
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One timed (case, function, implementation)."""

    case: str
    function: str
    impl: str
    times_ms: list[float]
    nbytes: int
    median_ms: float = 0.0
    min_ms: float = 0.0
    gbps: float = 0.0
    vs_numpy: float | None = None
    vs_torch: float | None = None
    frac_limit: float | None = None
    note: str = ""

    def __post_init__(self) -> None:
        self.median_ms = float(np.median(self.times_ms))
        self.min_ms = float(np.min(self.times_ms))
        self.gbps = self.nbytes / (self.median_ms * 1e-3) / 1e9


@dataclass
class Target:
    """A performance goal and whether this run met it."""

    case: str
    text: str
    value: float | None
    op: str
    threshold: float
    official: bool
    passed: bool | None = field(default=None)

    def __post_init__(self) -> None:
        if self.value is not None and np.isfinite(self.value):
            self.passed = (self.value >= self.threshold if self.op == ">="
                           else self.value <= self.threshold)

    @property
    def status(self) -> str:
        """PASS, MISS or n/a."""
        return "n/a" if self.passed is None else ("PASS" if self.passed else "MISS")


def measure(fn: Callable[[], Any], repeats: int, warmup: int,
            setup: Callable[[], Any] | None = None, *, min_warmup_s: float = 0.0,
            min_time_s: float = 0.0) -> tuple[list[float], Any]:
    """Time ``fn``; return the timed durations (ms) and the result of the first call.

    Untimed warm-up calls run until there have been ``warmup`` of them and they took
    ``min_warmup_s`` seconds; timed calls then run until there are ``repeats`` of them and they
    add up to ``min_time_s`` seconds (at most ``MAX_CALLS_PER_REPEAT * repeats`` calls).
    ``setup`` (untimed) runs before every call, e.g. to restore an in-place buffer.

    >>> times, first = measure(lambda: 42, repeats=3, warmup=1)
    >>> len(times), first
    (3, 42)
    """
    first: Any = None
    times: list[float] = []
    cap = MAX_CALLS_PER_REPEAT * repeats
    warm = timed = 0.0
    i = 0
    while True:
        warming = i < warmup or warm < min_warmup_s
        if not warming and len(times) >= repeats and (timed >= min_time_s
                                                      or len(times) >= cap):
            break
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        r = fn()
        dt = time.perf_counter() - t0
        if i == 0:
            first = r
        del r
        if warming:
            warm += dt
        else:
            times.append(dt * 1e3)
            timed += dt
        i += 1
    return times, first


def measure_paired(fns: dict[str, Callable[[], Any]], rounds: int, warmup: int, *,
                   min_warmup_s: float = 0.0) -> dict[str, list[float]]:
    """Time several functions in alternation: one call of each per round (ms per call).

    The order is reversed every other round, so no function always runs right after another.
    On a shared machine the speed drifts over seconds; a ratio between two functions measured
    in separate blocks mixes that drift in, one taken round by round does not. Warm-up rounds
    run until there have been ``warmup`` of them and they took ``min_warmup_s`` seconds.

    >>> t = measure_paired({"a": lambda: 1, "b": lambda: 2}, rounds=4, warmup=1)
    >>> sorted(t), [len(v) for v in t.values()]
    (['a', 'b'], [4, 4])
    """
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    warm = 0.0
    i = n_warm = 0
    while i < rounds:
        warming = n_warm < warmup or warm < min_warmup_s
        for n in (names if (n_warm + i) % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            r = fns[n]()
            dt = time.perf_counter() - t0
            del r
            if warming:
                warm += dt
            else:
                times[n].append(dt * 1e3)
        if warming:
            n_warm += 1
        else:
            i += 1
    return times


def paired_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of ``times[num][i] / times[den][i]``."""
    return float(np.median(np.asarray(times[num]) / np.asarray(times[den])))


def _fail(case: str, function: str, impl: str, what: str) -> None:
    raise BenchmarkMismatch(f"[{case}] {function} / {impl}: {what}")


def check_scalar(where: tuple[str, str, str], what: str, got: float, want: float,
                 rtol: float, atol: float = 0.0) -> None:
    """Raise BenchmarkMismatch unless |got - want| <= atol + rtol |want| (NaN fails)."""
    got = float(got)
    if not abs(got - want) <= atol + rtol * abs(want):
        _fail(*where, f"{what} = {got!r}, NumPy reference {want!r} (rtol {rtol:g})")


def check_grad(where: tuple[str, str, str], got: Any, want: np.ndarray) -> None:
    """Raise BenchmarkMismatch unless max |got - want| <= GRAD_RTOL * max |want|."""
    got = np.asarray(got)
    if got.shape != want.shape or got.dtype != want.dtype:
        _fail(*where, f"grad {got.shape} {got.dtype}, expected {want.shape} {want.dtype}")
    scale = float(np.abs(want).max()) or 1.0
    err = float(np.abs(got - want).max())
    if not err <= GRAD_RTOL * scale:
        _fail(*where, f"max |grad - ref| = {err:.3g} > {GRAD_RTOL:g} * max|ref| ({scale:.3g})")


def check_eval(where: tuple[str, str, str], got: EvalResult, want: EvalResult) -> None:
    """Compare loss, count, top-1 correct, confusion, the histograms and the confidence sums."""
    check_scalar(where, "loss", got.loss, want.loss, LOSS_RTOL, 1e-7)
    if got.count != want.count:
        _fail(*where, f"count {got.count} != {want.count}")
    slack = max(2, int(COUNT_RTOL * want.count))
    if abs(got.correct - want.correct) > slack:
        _fail(*where, f"top-1 correct {got.correct} != {want.correct}")
    conf = np.asarray(got.confusion)
    if conf.shape != want.confusion.shape or np.abs(conf - want.confusion).sum() > 2 * slack:
        _fail(*where, "confusion matrix differs from the NumPy bincount")
    hslack = max(2, int(HIST_RTOL * want.count))
    for name in ("conf_hist", "conf_correct", "true_prob_hist", "margin_hist"):
        h = np.asarray(getattr(got, name))
        ref = getattr(want, name)
        if h.shape != ref.shape or np.abs(h - ref).sum() > 2 * hslack:
            _fail(*where, f"{name} {h.tolist()} != NumPy {ref.tolist()}")
    # an element that changes bins moves its confidence (<= 1) with it
    s = np.asarray(got.conf_sum, dtype=np.float64)
    ref_s = np.asarray(want.conf_sum, dtype=np.float64)
    if s.shape != ref_s.shape or not np.abs(s - ref_s).sum() <= 2 * hslack + 1e-5 * ref_s.sum():
        _fail(*where, f"conf_sum {s.tolist()} != NumPy {ref_s.tolist()}")


def stats_to_eval(stats: Any) -> EvalResult:
    """Extract the compared fields from a lossdiag ``BatchStats``."""
    return EvalResult(
        loss=float(stats.loss), count=int(stats.count), correct=int(stats.correct[1]),
        confusion=np.asarray(stats.confusion), conf_hist=np.asarray(stats.conf_hist),
        conf_correct=np.asarray(stats.conf_correct), conf_sum=np.asarray(stats.conf_sum),
        true_prob_hist=np.asarray(stats.true_prob_hist), margin_hist=np.asarray(stats.margin_hist),
    )


# --------------------------------------------------------------------------------------------
# the benchmark of one case
# --------------------------------------------------------------------------------------------


class Runner:
    """Times every (function, implementation) of a case and checks it against NumPy."""

    def __init__(self, ld: Any, torch: Any, mem: MemoryLimit, repeats: int, warmup: int,
                 log: Callable[[str], None], min_warmup_s: float = 0.0,
                 min_time_s: float = 0.0, log_rows: bool = True,
                 paired: bool = True) -> None:
        self.ld = ld
        self.measure_pairs = paired  # the alternating timings behind two developer targets
        self.log_rows = log_rows  # one progress line per timing (else one per case)
        self.torch = torch
        self.mem = mem
        self.repeats = repeats
        self.warmup = warmup
        self.min_warmup_s = min_warmup_s
        self.min_time_s = min_time_s
        self.log = log
        self.rows: list[Row] = []
        self.other_load: dict[str, float | None] = {}
        # case -> {"read limit" | "cross_entropy" | "evaluate": times}, timed in alternation
        self.paired: dict[str, dict[str, list[float]]] = {}

    def _add(self, case: Case, function: str, impl: str, times: list[float], nbytes: int,
             note: str = "") -> Row:
        row = Row(case.name, function, impl, times, nbytes, note=note)
        self.rows.append(row)
        if self.log_rows:
            self.log(f"  [{case.name}] {function:<19} {impl:<24} {row.median_ms:10.2f} ms "
                     f"{row.gbps:7.2f} GB/s")
        return row

    def measure(self, fn: Callable[[], Any],
                setup: Callable[[], Any] | None = None) -> tuple[list[float], Any]:
        """``measure`` with this run's repeats, warm-up and minimum times."""
        return measure(fn, self.repeats, self.warmup, setup, min_warmup_s=self.min_warmup_s,
                       min_time_s=self.min_time_s)

    def run(self, case: Case) -> None:
        """All measurements of one case (the logits are never copied more than once)."""
        ld, x, t, ax, ii = self.ld, case.logits, case.target, case.axis, case.ignore_index
        rep, wu, measure = self.repeats, self.warmup, self.measure
        nb = x.nbytes
        kw = {"axis": ax, "ignore_index": ii}
        self.log(f"case {case.title}" if self.log_rows else
                 f"timing {CASE_NAMES.get(case.name, case.name)}: "
                 f"{case.title.split(' ', 1)[-1]} ...")
        monitor = OtherLoad()

        buf = np.empty_like(x)
        np.copyto(buf, x)  # fault the pages in

        def restore() -> None:
            np.copyto(buf, x)

        # (c) memory limit
        reads = [(self._add(case, "read limit", label,
                            measure(lambda r=read: r(x))[0], nb), read)
                 for label, read in self.mem.read_variants()]
        for label, copy in self.mem.copy_variants():
            times = measure(lambda c=copy: c(x, buf))[0]
            if not np.array_equal(buf, x):
                _fail(case.name, "copy limit", label, "the copy differs from its source")
            self._add(case, "copy limit", label, times, 2 * nb)

        # cross_entropy
        f = "cross_entropy"
        times, ref = measure(lambda: np_cross_entropy(x, t, ax, ii))
        self._add(case, f, "numpy", times, nb)
        times, got = measure(lambda: ld.cross_entropy(x, t, **kw))
        check_scalar((case.name, f, "lossdiag"), "loss", got, ref, LOSS_RTOL, 1e-7)
        self._add(case, f, "lossdiag", times, nb)
        tim = TorchImpl(self.torch, case) if self.torch is not None else None
        if tim is not None:
            times, got = measure(tim.cross_entropy)
            check_scalar((case.name, f, "torch"), "loss", got, ref, LOSS_RTOL, 1e-7)
            self._add(case, f, "torch", times, nb)

        # accuracy
        f = "accuracy"
        times, ref = measure(lambda: np_accuracy(x, t, ax, ii))
        self._add(case, f, "numpy", times, nb)
        n_valid = int(np.count_nonzero(t != ii))
        atol = max(2, COUNT_RTOL * n_valid) / n_valid
        times, got = measure(lambda: ld.accuracy(x, t, **kw))
        check_scalar((case.name, f, "lossdiag"), "accuracy", got, ref, 0.0, atol)
        self._add(case, f, "lossdiag", times, nb)
        if tim is not None:
            times, got = measure(tim.accuracy)
            check_scalar((case.name, f, "torch"), "accuracy", got, ref, 0.0, atol)
            self._add(case, f, "torch", times, nb)

        # cross_entropy_grad
        f = "cross_entropy_grad"
        times, (ref_loss, ref_grad) = measure(lambda: np_cross_entropy_grad(x, t, ax, ii))
        self._add(case, f, "numpy", times, 2 * nb)
        times, (loss, grad) = measure(lambda: ld.cross_entropy_grad(x, t, **kw))
        check_scalar((case.name, f, "lossdiag"), "loss", loss, ref_loss, LOSS_RTOL, 1e-7)
        check_grad((case.name, f, "lossdiag"), grad, ref_grad)
        del grad
        self._add(case, f, "lossdiag", times, 2 * nb)
        times, (loss, grad) = measure(lambda: ld.cross_entropy_grad(buf, t, out=buf, **kw),
                                      setup=restore)
        check_scalar((case.name, f, "lossdiag out=logits"), "loss", loss, ref_loss, LOSS_RTOL,
                     1e-7)
        check_grad((case.name, f, "lossdiag out=logits"), buf, ref_grad)
        del grad
        self._add(case, f, "lossdiag out=logits", times, 2 * nb, note="in place")
        if tim is not None:
            times, (loss, grad) = measure(tim.cross_entropy_grad)
            check_scalar((case.name, f, "torch fwd+bwd"), "loss", loss, ref_loss, LOSS_RTOL, 1e-7)
            check_grad((case.name, f, "torch fwd+bwd"), grad.numpy(), ref_grad)
            del grad
            tim.xg.grad = None
            self._add(case, f, "torch fwd+bwd", times, 2 * nb)
        del ref_grad

        # evaluate
        f = "evaluate"
        times, ref_ev = measure(lambda: np_evaluate(x, t, ax, ii, BINS))
        self._add(case, f, "numpy", times, nb)
        times, stats = measure(lambda: ld.evaluate(x, t, bins=BINS, **kw))
        check_eval((case.name, f, "lossdiag"), stats_to_eval(stats), ref_ev)
        self._add(case, f, "lossdiag", times, nb)
        if tim is not None:
            times, got_ev = measure(tim.evaluate)
            check_eval((case.name, f, "torch"), got_ev, ref_ev)
            self._add(case, f, "torch", times, nb)

        # The targets that compare lossdiag with itself or with the read limit are judged on
        # calls made in alternation (see measure_paired), with the fastest read variant.
        read_row, read_fn = min(reads, key=lambda rr: rr[0].median_ms)
        if not self.measure_pairs:
            self._end_case(case, monitor)
            return
        self.paired[case.name] = measure_paired(
            {"read limit": lambda: read_fn(x),
             "cross_entropy": lambda: ld.cross_entropy(x, t, **kw),
             "evaluate": lambda: ld.evaluate(x, t, bins=BINS, **kw)},
            max(15, 3 * rep), wu, min_warmup_s=self.min_warmup_s)
        if self.log_rows:
            self.log(f"  paired, read = {read_row.impl}: "
                     + format_paired({case.name: self.paired[case.name]}, False))
        self._end_case(case, monitor)

    def _end_case(self, case: Case, monitor: OtherLoad) -> None:
        other = monitor.value()
        self.other_load[case.name] = other
        if other is not None and other > DISTURBED and self.log_rows:
            self.log(f"WARNING [{case.name}]: other processes used ~{other:.2f} CPUs meanwhile")


def fill_ratios(rows: list[Row]) -> None:
    """Speed-up vs NumPy / torch (their time / this time) and fraction of the memory limit."""
    by: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        by.setdefault((r.case, r.function), []).append(r)

    def best(case: str, function: str) -> float | None:
        lim = by.get((case, function), [])
        return min(r.median_ms for r in lim) if lim else None

    for (case, function), group in by.items():
        npy = [r for r in group if r.impl == "numpy"]
        tch = [r for r in group if r.impl.startswith("torch")]
        limit = best(case, "copy limit" if function == "cross_entropy_grad" else "read limit")
        for r in group:
            if function.endswith("limit"):
                continue
            r.vs_numpy = npy[0].median_ms / r.median_ms if npy else None
            r.vs_torch = tch[0].median_ms / r.median_ms if tch else None
            r.frac_limit = limit / r.median_ms if limit else None


def evaluate_targets(rows: list[Row], cases: Sequence[str],
                     paired: dict[str, dict[str, list[float]]] | None = None) -> list[Target]:
    """The performance goals; the NCHW ones are official, the others informational.

    Where ``paired`` has a case's alternating timings (Runner.run), the two targets that compare
    lossdiag's cross_entropy with the read limit and evaluate with cross_entropy use their
    round-by-round ratios; otherwise the separately measured medians.
    """

    def med(case: str, function: str, impl: str) -> float | None:
        for r in rows:
            if r.case == case and r.function == function and r.impl == impl:
                return r.median_ms
        return None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b is not None else None

    out: list[Target] = []
    for case in cases:
        off = case == "nchw"
        ce = med(case, "cross_entropy", "lossdiag")
        limits = [r.median_ms for r in rows if r.case == case and r.function == "read limit"]
        ev = med(case, "evaluate", "lossdiag")
        pt = (paired or {}).get(case)
        if pt:
            ce_read = paired_ratio(pt, "cross_entropy", "read limit")
            ev_ce = paired_ratio(pt, "evaluate", "cross_entropy")
            how = ", paired"
        else:
            ce_read = ratio(ce, min(limits) if limits else None)
            ev_ce = ratio(ev, ce)
            how = ""
        out += [
            Target(case, "cross_entropy >= 15x faster than NumPy",
                   ratio(med(case, "cross_entropy", "numpy"), ce), ">=", 15, off),
            Target(case, "cross_entropy >= 8x faster than torch F.cross_entropy",
                   ratio(med(case, "cross_entropy", "torch"), ce), ">=", 8, off),
            Target(case, f"cross_entropy time within 2x of the read limit{how}",
                   ce_read, "<=", 2, off),
            Target(case, "cross_entropy_grad >= 10x faster than torch fwd+bwd",
                   ratio(med(case, "cross_entropy_grad", "torch fwd+bwd"),
                         med(case, "cross_entropy_grad", "lossdiag")), ">=", 10, off),
            Target(case, f"evaluate <= 1.5x the time of cross_entropy{how}",
                   ev_ce, "<=", 1.5, off),
            Target(case, "evaluate >= 40x faster than the NumPy chain",
                   ratio(med(case, "evaluate", "numpy"), ev), ">=", 40, off),
        ]
    return out


# --------------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------------


def machine_info(ld: Any, torch: Any, threads: int) -> dict[str, Any]:
    """CPU model, caches, library versions and lossdiag.info()."""
    model = platform.processor() or "unknown"
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and model in ("unknown", "x86_64", ""):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_fp16", "amx_tile")
            if f in flags]
    caches: dict[str, str] = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for d in sorted(os.listdir(base)):
            if not d.startswith("index"):
                continue
            with open(f"{base}/{d}/level") as fh:
                level = fh.read().strip()
            with open(f"{base}/{d}/type") as fh:
                kind = fh.read().strip()
            with open(f"{base}/{d}/size") as fh:
                size = fh.read().strip()
            if kind != "Instruction":
                caches[f"L{level}"] = size
    except OSError:
        pass
    try:
        info = dict(ld.info())
    except Exception as exc:  # pragma: no cover - reported, not fatal
        info = {"error": repr(exc)}
    try:
        load = float(os.getloadavg()[0])
    except OSError:
        load = None
    return {
        "load_avg_1min_at_end": load,
        "cpu": model, "logical_cpus": os.cpu_count(), "cpu_simd_flags": simd, "caches": caches,
        "python": platform.python_version(), "numpy": np.__version__,
        "torch": getattr(torch, "__version__", None), "threads": threads, "lossdiag": info,
    }


def _fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


COLUMNS = ("case", "function", "impl", "median ms", "GB/s", "vs NumPy", "vs torch",
           "of mem limit")


def table_cells(rows: list[Row]) -> list[list[str]]:
    """The results table as strings."""
    return [[r.case, r.function, r.impl, f"{r.median_ms:.2f}", f"{r.gbps:.1f}",
             _fmt(r.vs_numpy, ".1f", "x"), _fmt(r.vs_torch, ".1f", "x"),
             _fmt(r.frac_limit, ".2f")] for r in rows]


def format_plain(rows: list[Row]) -> str:
    """Aligned plain-text table."""
    cells = [list(COLUMNS)] + table_cells(rows)
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = []
    for k, c in enumerate(cells):
        lines.append("  ".join(s.ljust(w) if i < 3 else s.rjust(w)
                               for i, (s, w) in enumerate(zip(c, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(rows: list[Row]) -> str:
    """GitHub markdown table (for the README)."""
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * (len(COLUMNS) - 3)) + "|"]
    lines += ["| " + " | ".join(c) + " |" for c in table_cells(rows)]
    return "\n".join(lines)


def format_header(info: dict[str, Any], titles: list[str], preset: str, repeats: int,
                  warmup: int, markdown: bool, min_time: float = 0.0,
                  min_warmup: float = 0.0) -> str:
    """Machine and configuration description."""
    ldi = info["lossdiag"]
    items = [
        f"CPU: {info['cpu']} ({info['logical_cpus']} logical CPUs; "
        f"{', '.join(info['cpu_simd_flags']) or 'no AVX flags'}; caches "
        f"{', '.join(f'{k} {v}' for k, v in info['caches'].items()) or 'unknown'})",
        f"lossdiag.info(): {ldi}",
        f"threads: {info['threads']} (lossdiag and torch); Python {info['python']}, "
        f"NumPy {info['numpy']}, torch {info['torch'] or 'not installed'}",
        f"preset {preset}: median of >= {repeats} timed calls and >= {min_time:g} s of them, "
        f"after >= {warmup} warm-up calls and >= {min_warmup:g} s of them",
    ] + [f"case {s}" for s in titles]
    busy = info.get("busy_cpus_before_run")
    if busy is not None and busy > 0.3:
        items.append(f"WARNING: ~{busy:.1f} CPUs were busy with other work; timings unreliable")
    during = {k: v for k, v in info.get("other_cpus_during_case", {}).items() if v is not None}
    if during:
        items.append("CPUs used by other processes during each case (0 = quiet machine): "
                     + ", ".join(f"{k} {v:.2f}" for k, v in during.items())
                     + ("  WARNING: timings disturbed" if max(during.values()) > DISTURBED else ""))
    prefix = "- " if markdown else ""
    return "\n".join(prefix + s for s in items)


def format_paired(paired: dict[str, dict[str, list[float]]], markdown: bool) -> str:
    """One line per case: medians of the alternating timings and the round-by-round ratios."""
    lines = []
    for case, pt in paired.items():
        if not pt:
            continue
        meds = ", ".join(f"{n} {np.median(v):.2f} ms" for n, v in pt.items())
        r_read = paired_ratio(pt, "cross_entropy", "read limit")
        r_ev = paired_ratio(pt, "evaluate", "cross_entropy")
        s = (f"[{case}] {meds}; cross_entropy / read {r_read:.2f}, "
             f"evaluate / cross_entropy {r_ev:.2f} ({len(pt['evaluate'])} rounds)")
        lines.append(("- " if markdown else "") + s)
    return "\n".join(lines)


def format_targets(targets: list[Target], markdown: bool) -> str:
    """PASS/MISS lines."""
    lines = []
    for tg in targets:
        val = "n/a" if tg.value is None else f"{tg.value:.2f}"
        tag = "" if tg.official else " (info)"
        s = f"{tg.status:4}  [{tg.case}] {tg.text}: {val} (need {tg.op} {tg.threshold:g}){tag}"
        lines.append(("- " if markdown else "") + s)
    return "\n".join(lines)


CASE_NAMES = {"nchw": "segmentation, channels first", "nhwc": "segmentation, channels last",
              "cls": "classification"}
SUMMARY_FUNCTIONS = (("cross_entropy", "torch", "mean loss"),
                     ("accuracy", "torch", "top-1 accuracy"),
                     ("cross_entropy_grad", "torch fwd+bwd", "loss and gradient"),
                     ("evaluate", "torch", "loss, accuracy, confusion matrix, 4 histograms"))


def _ms(v: float | None) -> str:
    """Milliseconds with 3 significant digits (toy shapes take microseconds)."""
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def _speedup(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}x" if x >= 10 else (f"{x:.1f}x" if x >= 1 else f"{x:.2g}x")


def format_summary(rows: list[Row], info: dict[str, Any], cases: Sequence[str], preset: str,
                   elapsed: float, markdown: bool = False,
                   case_titles: Sequence[str] = ()) -> str:
    """The end of ``lossdiag bench``: what was measured, speed-ups, and on which machine."""

    def med(case: str, function: str, impl: str) -> float | None:
        for r in rows:
            if r.case == case and r.function == function and r.impl == impl:
                return r.median_ms
        return None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    have_torch = any(r.impl.startswith("torch") for r in rows)
    head = ["function", "computes", "lossdiag ms", "NumPy ms", "vs NumPy"]
    if have_torch:
        head += ["torch ms", "vs torch"]
    vs_np: list[float] = []
    vs_t: list[float] = []
    lines: list[str] = []
    titles = {t.split(" ", 1)[0]: t.split(" ", 1)[1] for t in case_titles if " " in t}
    for case in cases:
        table = [head]
        for function, torch_impl, what in SUMMARY_FUNCTIONS:
            ld_ms = med(case, function, "lossdiag")
            if ld_ms is None:
                continue
            np_ms, t_ms = med(case, function, "numpy"), med(case, function, torch_impl)
            a, b = ratio(np_ms, ld_ms), ratio(t_ms, ld_ms)
            vs_np += [a] if a is not None else []
            vs_t += [b] if b is not None else []
            row = [function, what, _ms(ld_ms), _ms(np_ms), _speedup(a)]
            if have_torch:
                row += [_ms(t_ms), _speedup(b)]
            table.append(row)
        title = f"{CASE_NAMES.get(case, case)}: {titles.get(case, '')}".rstrip(": ")
        if markdown:
            lines += [f"**{title}**", "", "| " + " | ".join(head) + " |",
                      "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
            lines += ["| " + " | ".join(r) + " |" for r in table[1:]]
        else:
            widths = [max(len(r[i]) for r in table) for i in range(len(head))]
            lines.append(title)
            lines += ["  " + "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                                       for i, (c, w) in enumerate(zip(r, widths)))
                      for r in table]
        lines.append("")

    def span(v: list[float], other: str) -> str:
        return (f"{_speedup(float(np.median(v)))} over {other} (range {_speedup(min(v))} to "
                f"{_speedup(max(v))})")

    ldi = info.get("lossdiag", {})
    verdict = []
    if vs_np:
        verdict.append(span(vs_np, "NumPy"))
    if vs_t:
        verdict.append(span(vs_t, "PyTorch on the CPU"))
    simd = ldi.get("simd", "?") if isinstance(ldi, dict) else "?"
    out = lines + [
        ("Summary: median speed-up " + " and ".join(verdict) if verdict
         else "Summary: lossdiag timed alone")
        + " ('vs' = their median time / lossdiag's; above 1x lossdiag is faster).",
        f"Machine: {info['cpu']}, {info['logical_cpus']} logical CPUs, {info['threads']} "
        f"threads, lossdiag {ldi.get('version', '?') if isinstance(ldi, dict) else '?'} using "
        f"{simd}; Python {info['python']}, NumPy {info['numpy']}, "
        f"torch {info['torch'] or 'not installed (pip install torch to compare)'}.",
        f"Every lossdiag{' and torch' if have_torch else ''} result was checked against NumPy; "
        f"{preset} preset, {elapsed:.0f} s.",
    ]
    busy = [v for v in [info.get("busy_cpus_before_run"),
                        *info.get("other_cpus_during_case", {}).values()] if v is not None]
    if busy and max(busy) > DISTURBED:
        out.append(f"Note: other programs kept up to ~{max(busy):.1f} CPUs busy during the run, "
                   "so these timings are noisy; rerun on a quiet machine for stable numbers.")
    hints = []
    if preset == "tiny":
        hints.append("toy shapes: the timings mean nothing")
    elif preset != "full":
        hints.append("run without --quick for full-size batches")
    hints.append("--details prints every timing, --json FILE saves them")
    out.append("(" + "; ".join(hints) + ")")
    if markdown:
        out = [f"- {x}" if i >= len(lines) else x for i, x in enumerate(out)]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def _parse(argv: Sequence[str] | None, developer: bool = False) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="lossdiag bench",
        description=(
            "Time lossdiag's CPU kernels (cross_entropy, accuracy, cross_entropy_grad, evaluate) "
            "on this machine, side by side with NumPy and PyTorch (when installed), on a "
            "segmentation batch (channels first and last) and a 1000-class classification "
            "batch. Every result is checked against NumPy. Ends with a summary of the "
            "speed-ups; the full run takes 1-3 minutes, --quick about 20 s."))
    p.add_argument("--quick", action="store_true",
                   help="smaller shapes and fewer repeats (about 20 s)")
    p.add_argument("--tiny", action="store_true",
                   help="toy shapes (smoke test of the harness; timings are meaningless)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for lossdiag and torch (default: lossdiag's current setting)")
    p.add_argument("--repeats", type=int, default=None,
                   help="minimum number of timed calls per measurement")
    p.add_argument("--min-time", type=float, default=None, metavar="SECONDS",
                   help="time each measurement for at least SECONDS in all (full preset: 1.0)")
    p.add_argument("--min-warmup", type=float, default=None, metavar="SECONDS",
                   help="warm up each measurement for at least SECONDS (full preset: 0.5)")
    p.add_argument("--cases", default=",".join(CASES),
                   help=f"comma separated subset of {','.join(CASES)}")
    p.add_argument("--no-torch", action="store_true", help="skip the torch baseline")
    p.add_argument("--json", metavar="FILE", default=None, help="write results as JSON")
    p.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    p.add_argument("--details", action="store_true",
                   help="also print every timing (each implementation, memory limits)")
    if developer:
        p.add_argument("--strict", action="store_true",
                       help="exit with status 1 if an official (NCHW) target is missed")
    p.add_argument("--seed", type=int, default=0, help="random seed of the data")
    p.add_argument("--retries", type=int, default=0,
                   help="re-run a case up to N times when other processes disturbed it "
                        "(keeps the least disturbed attempt)")
    p.add_argument("--quiet-wait", type=float, default=0.0, metavar="SECONDS",
                   help="before each case, wait up to SECONDS for the machine to go quiet")
    args = p.parse_args(argv)
    args.strict = bool(getattr(args, "strict", False))
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in CASES]
    if bad or not cases:
        p.error(f"--cases: unknown {bad}; choose from {','.join(CASES)}")
    args.cases = [c for c in CASES if c in cases]
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.retries < 0 or args.quiet_wait < 0:
        p.error("--retries and --quiet-wait must be >= 0")
    if (args.min_time is not None and args.min_time < 0) or (
            args.min_warmup is not None and args.min_warmup < 0):
        p.error("--min-time and --min-warmup must be >= 0")
    return args


def _iter_cases(preset: dict[str, Any], names: list[str], seed: int):  # noqa: ANN202
    """Yield the requested cases one at a time (NHWC is built from NCHW, which is then freed)."""
    rng = np.random.default_rng(seed)
    if "nchw" in names or "nhwc" in names:
        logits, labels = make_segmentation(rng, preset["seg"])
        if "nchw" in names:
            yield Case("nchw", logits, labels, 1, SEG_IGNORE)
        if "nhwc" in names:
            nhwc = np.ascontiguousarray(logits.transpose(0, 2, 3, 1))
            del logits
            yield Case("nhwc", nhwc, labels, -1, SEG_IGNORE)
            del nhwc
        else:
            del logits
    if "cls" in names:
        logits, labels = make_classification(rng, preset["cls"])
        yield Case("cls", logits, labels, 1, CLS_IGNORE)


class OtherLoad:
    """Average number of CPUs used by *other* processes between construction and ``value()``.

    System-wide busy time from /proc/stat minus this process's own CPU time (all threads).
    None where /proc/stat is unavailable.
    """

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.sys0 = self._system_busy()
        self.self0 = self._self_cpu()

    @staticmethod
    def _system_busy() -> float | None:
        try:
            with open("/proc/stat") as fh:
                v = [int(a) for a in fh.readline().split()[1:]]
            hz = os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError):
            return None
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return (sum(v[:8]) - idle) / hz

    @staticmethod
    def _self_cpu() -> float:
        t = os.times()
        return t.user + t.system

    def value(self) -> float | None:
        """Other processes' average CPU count since construction (>= 0)."""
        sys1 = self._system_busy()
        wall = time.perf_counter() - self.t0
        if self.sys0 is None or sys1 is None or wall <= 0:
            return None
        return max(0.0, (sys1 - self.sys0 - (self._self_cpu() - self.self0)) / wall)


def _busy_cpus(interval: float = 0.25) -> float | None:
    """CPUs kept busy by other processes over a short window, or None."""
    mon = OtherLoad()
    time.sleep(interval)
    return mon.value()


DISTURBED = 0.2  # CPUs used by other processes above which a case's timings are flagged


def wait_quiet(max_wait: float, log: Callable[[str], None]) -> None:
    """Wait (up to ``max_wait`` s) until other processes leave the CPUs alone for ~2 s."""
    t_end = time.perf_counter() + max_wait
    busy = _busy_cpus(1.0)
    while busy is not None and busy > DISTURBED / 2 and time.perf_counter() < t_end:
        log(f"  waiting for a quiet machine (other processes use ~{busy:.1f} CPUs)")
        time.sleep(5.0)
        busy = _busy_cpus(2.0)


def run_case_retrying(runner: Runner, case: Case, retries: int, quiet_wait: float,
                      log: Callable[[str], None]) -> None:
    """Run one case; re-run it (up to ``retries`` times) while other processes disturb it."""
    best: tuple[float, list[Row], dict[str, list[float]]] | None = None
    for attempt in range(retries + 1):
        if quiet_wait > 0:
            wait_quiet(quiet_wait, log)
        start = len(runner.rows)
        runner.run(case)
        other = runner.other_load.get(case.name)
        rows = runner.rows[start:]
        del runner.rows[start:]
        score = other if other is not None else 0.0
        if best is None or score < best[0]:
            best = (score, rows, runner.paired.get(case.name, {}))
        if score <= DISTURBED:
            break
        if attempt < retries:
            log(f"  [{case.name}] disturbed (~{score:.2f} CPUs used by others): retrying")
    assert best is not None
    runner.other_load[case.name] = best[0]
    runner.rows.extend(best[1])
    runner.paired[case.name] = best[2]


def main(argv: Sequence[str] | None = None, *, developer: bool = False) -> int:
    """Run the benchmark; return 0, 1 (``--strict`` and a target missed) or 2 (wrong result).

    ``developer=True`` (bench/bench_core.py) prints every timing and the performance targets;
    otherwise the run ends with a summary for users (``--details`` adds the full table).
    """
    args = _parse(argv, developer)
    import lossdiag as ld

    torch: Any = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None

    preset_name = "tiny" if args.tiny else ("quick" if args.quick else "full")
    preset = PRESETS[preset_name]
    repeats = args.repeats or preset["repeats"]
    warmup = preset["warmup"]
    min_time = preset["min_time_s"] if args.min_time is None else args.min_time
    min_warmup = preset["min_warmup_s"] if args.min_warmup is None else args.min_warmup

    old_ld_threads = ld.get_num_threads()
    old_torch_threads = torch.get_num_threads() if torch is not None else None
    if args.threads is not None:
        ld.set_num_threads(args.threads)
    threads = int(ld.get_num_threads())
    if torch is not None:
        torch.set_num_threads(threads)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    load0 = _busy_cpus()
    if load0 is not None and load0 > 0.3:
        log(f"WARNING: other processes keep ~{load0:.1f} CPUs busy; timings will be unreliable "
            f"(OpenMP threads suffer most when a core is taken)")

    mem = MemoryLimit(getattr(ld, "_core", None), threads)
    runner = Runner(ld, torch, mem, repeats, warmup, log, min_warmup_s=min_warmup,
                    min_time_s=min_time, log_rows=developer or args.details, paired=developer)
    titles: list[str] = []
    t_start = time.perf_counter()
    try:
        for case in _iter_cases(preset, args.cases, args.seed):
            titles.append(case.title)
            run_case_retrying(runner, case, args.retries, args.quiet_wait, log)
            del case
    except BenchmarkMismatch as exc:
        print(f"lossdiag bench: WRONG RESULT: {exc}", file=sys.stderr)
        return 2
    finally:
        mem.close()
        ld.set_num_threads(old_ld_threads)
        if torch is not None:
            torch.set_num_threads(old_torch_threads)
    elapsed = time.perf_counter() - t_start

    rows = runner.rows
    fill_ratios(rows)
    targets = evaluate_targets(rows, args.cases, runner.paired)
    info = machine_info(ld, torch, threads)
    info["busy_cpus_before_run"] = load0
    info["other_cpus_during_case"] = runner.other_load
    md = args.markdown
    official = [tg for tg in targets if tg.official]
    if developer or args.details:
        print(format_header(info, titles, preset_name, repeats, warmup, md, min_time, min_warmup))
        print()
        print(format_markdown(rows) if md else format_plain(rows))
        print()
        if any(runner.paired.values()):
            print(("**Paired**" if md else "Paired") + " (read limit, cross_entropy and evaluate "
                  "timed in alternation, medians of per-round ratios)")
            print(format_paired(runner.paired, md))
            print()
    if developer:
        print(("**Targets**" if md else "Targets") + (" (indicative only: not the full-size "
                                                     "shapes)" if preset_name != "full" else ""))
        print(format_targets(targets, md))
        n_pass = sum(tg.passed is True for tg in official)
        print(f"\nofficial (nchw) targets: {n_pass}/{len(official)} PASS; "
              f"all results checked against NumPy; total {elapsed:.1f} s")
    else:
        print(format_summary(rows, info, [c for c in CASES if c in args.cases], preset_name,
                             elapsed, md, case_titles=titles))

    if args.json:
        payload = {
            "machine": info, "preset": preset_name, "repeats": repeats, "warmup": warmup,
            "min_time_s": min_time, "min_warmup_s": min_warmup,
            "cases": titles, "elapsed_s": elapsed,
            "results": [asdict(r) for r in rows],
            "paired": runner.paired,
            "targets": [dict(asdict(tg), status=tg.status) for tg in targets],
        }
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=1, default=str)
    if args.strict and any(tg.passed is False for tg in official):
        return 1
    return 0
