"""Correctness checks: every lossdiag (and torch) result against the NumPy reference.

A mismatch raises ``BenchmarkMismatch``, so a fast but wrong kernel cannot produce a table.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .reference import EvalResult

# Tolerances of the correctness checks (lossdiag/torch vs NumPy).
LOSS_RTOL = 1e-4
GRAD_RTOL = 1e-4  # of max |grad|
COUNT_RTOL = 1e-5  # argmax ties / float rounding may flip a handful of elements
HIST_RTOL = 1e-4  # elements sitting on a bin edge may land in the neighbouring bin


class BenchmarkMismatch(AssertionError):
    """A benchmarked implementation disagrees with the NumPy reference."""


def fail(case: str, function: str, impl: str, what: str) -> None:
    """Raise BenchmarkMismatch naming the case, function and implementation."""
    raise BenchmarkMismatch(f"[{case}] {function} / {impl}: {what}")


def check_scalar(where: tuple[str, str, str], what: str, got: float, want: float,
                 rtol: float, atol: float = 0.0) -> None:
    """Raise BenchmarkMismatch unless |got - want| <= atol + rtol |want| (NaN fails)."""
    got = float(got)
    if not abs(got - want) <= atol + rtol * abs(want):
        fail(*where, f"{what} = {got!r}, NumPy reference {want!r} (rtol {rtol:g})")


def check_grad(where: tuple[str, str, str], got: Any, want: np.ndarray) -> None:
    """Raise BenchmarkMismatch unless max |got - want| <= GRAD_RTOL * max |want|."""
    got = np.asarray(got)
    if got.shape != want.shape or got.dtype != want.dtype:
        fail(*where, f"grad {got.shape} {got.dtype}, expected {want.shape} {want.dtype}")
    scale = float(np.abs(want).max()) or 1.0
    err = float(np.abs(got - want).max())
    if not err <= GRAD_RTOL * scale:
        fail(*where, f"max |grad - ref| = {err:.3g} > {GRAD_RTOL:g} * max|ref| ({scale:.3g})")


def check_eval(where: tuple[str, str, str], got: EvalResult, want: EvalResult) -> None:
    """Compare loss, count, top-1 correct, confusion, the histograms and the confidence sums."""
    check_scalar(where, "loss", got.loss, want.loss, LOSS_RTOL, 1e-7)
    if got.count != want.count:
        fail(*where, f"count {got.count} != {want.count}")
    slack = max(2, int(COUNT_RTOL * want.count))
    if abs(got.correct - want.correct) > slack:
        fail(*where, f"top-1 correct {got.correct} != {want.correct}")
    if (got.confusion is None) != (want.confusion is None):
        fail(*where, "confusion matrix computed by one implementation only")
    if want.confusion is not None:
        conf = np.asarray(got.confusion)
        if conf.shape != want.confusion.shape or np.abs(conf - want.confusion).sum() > 2 * slack:
            fail(*where, "confusion matrix differs from the NumPy bincount")
    for name in ("class_count", "class_pred", "class_tp"):
        v, ref_v = np.asarray(getattr(got, name)), getattr(want, name)
        if v.shape != ref_v.shape or np.abs(v - ref_v).sum() > 2 * slack:
            fail(*where, f"{name} differs from the NumPy bincount")
    hslack = max(2, int(HIST_RTOL * want.count))
    for name in ("conf_hist", "conf_correct", "true_prob_hist", "margin_hist"):
        h = np.asarray(getattr(got, name))
        ref = getattr(want, name)
        if h.shape != ref.shape or np.abs(h - ref).sum() > 2 * hslack:
            fail(*where, f"{name} {h.tolist()} != NumPy {ref.tolist()}")
    # an element that changes bins moves its confidence (<= 1) with it
    s = np.asarray(got.conf_sum, dtype=np.float64)
    ref_s = np.asarray(want.conf_sum, dtype=np.float64)
    if s.shape != ref_s.shape or not np.abs(s - ref_s).sum() <= 2 * hslack + 1e-5 * ref_s.sum():
        fail(*where, f"conf_sum {s.tolist()} != NumPy {ref_s.tolist()}")


def stats_to_eval(stats: Any) -> EvalResult:
    """Extract the compared fields from a lossdiag ``BatchStats``."""
    return EvalResult(
        loss=float(stats.loss), count=int(stats.count), correct=int(stats.correct[1]),
        confusion=None if stats.confusion is None else np.asarray(stats.confusion),
        class_count=np.asarray(stats.class_count), class_pred=np.asarray(stats.class_pred),
        class_tp=np.asarray(stats.class_tp), conf_hist=np.asarray(stats.conf_hist),
        conf_correct=np.asarray(stats.conf_correct), conf_sum=np.asarray(stats.conf_sum),
        true_prob_hist=np.asarray(stats.true_prob_hist), margin_hist=np.asarray(stats.margin_hist),
    )
