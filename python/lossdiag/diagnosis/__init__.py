"""Diagnosis of training histories: recognise what is wrong, explain it, recommend fixes.

>>> import numpy as np
>>> from lossdiag.history import History
>>> from lossdiag.diagnosis import diagnose
>>> e = np.arange(30)
>>> h = History.from_arrays(e, train={"loss": 2.3 * np.exp(-e / 5) + 0.1},
...                         val={"loss": 2.3 * np.exp(-e / 5) + 0.15})
>>> d = diagnose(h, num_classes=10)
>>> d.at_least("warning")
[]

Each check is one module (``nonfinite``, ``diverging``, ``stuck``, ``overfitting``,
``overconfident``, ``decoupling``, ``slow_tail``, ``oscillating``, ``imbalance``); all thresholds
live in :mod:`lossdiag.diagnosis.thresholds`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..history import History
from . import (
    decoupling,
    diverging,
    imbalance,
    nonfinite,
    oscillating,
    overconfident,
    overfitting,
    slow_tail,
    stuck,
)
from ._stats import RunView, SkipCheck, build_view
from .report import CODES, SEVERITIES, Diagnosis, Finding, Recommendation, Skipped
from .thresholds import DEFAULT, Thresholds

__all__ = ["CODES", "SEVERITIES", "Diagnosis", "Finding", "Recommendation", "Skipped",
           "Thresholds", "diagnose"]

# Order of evaluation: later checks read what earlier ones found (``view.found``), so that a
# diverging run is not also called stuck, a stuck one not decoupled, and so on.
_CHECKS: list[tuple[str, Callable[[RunView], list[Finding]]]] = [
    (diverging.CODE, diverging.check),
    (nonfinite.CODE, nonfinite.check),
    (stuck.CODE, stuck.check),
    (oscillating.CODE, oscillating.check),
    (overfitting.CODE, overfitting.check),
    (overconfident.CODE, overconfident.check),
    (decoupling.CODE, decoupling.check),
    (slow_tail.CODE, slow_tail.check),
    (imbalance.CODE, imbalance.check),
]


def _as_history(history: Any) -> History:
    if isinstance(history, History):
        return history
    if isinstance(history, (str, os.PathLike)):
        return History.from_path(history)
    if hasattr(history, "history") and isinstance(history.history, Mapping):
        return History.from_keras(history)
    if isinstance(history, Mapping):
        return History.from_keras(history)
    raise TypeError("history must be a lossdiag History, a path to a training log, or a Keras "
                    f"History / .history dict, got {type(history).__name__}")


def diagnose(history: History | Any, *, num_classes: int | None = None,
             thresholds: Thresholds | None = None) -> Diagnosis:
    """Diagnose a training history.

    Parameters
    ----------
    history:
        A :class:`~lossdiag.history.History` (or a path to any supported log, or a Keras
        ``History`` / ``.history`` dict).
    num_classes:
        Number of classes ``C``; enables the chance-level (``ln C``) comparisons.  Taken from
        the history or its statistics when not given.
    thresholds:
        A :class:`~lossdiag.diagnosis.thresholds.Thresholds` to override the defaults.

    Returns
    -------
    Diagnosis
        ``.findings`` (most severe first), ``.skipped`` (checks that could not run, with the
        reason), ``str()`` / ``.to_json()`` / ``.to_html(path)`` / ``.plot()``.
    """
    h = _as_history(history)
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int):
            try:
                import numpy as np

                ok = isinstance(num_classes, np.integer)
            except ImportError:  # pragma: no cover
                ok = False
            if not ok:
                raise TypeError(f"num_classes must be an int, got {num_classes!r}")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        num_classes = int(num_classes)
    th = DEFAULT if thresholds is None else thresholds
    if not isinstance(th, Thresholds):
        raise TypeError(f"thresholds must be a Thresholds instance, got {type(th).__name__}")
    t0 = time.perf_counter()
    view = build_view(h, num_classes, th)
    findings: list[Finding] = []
    skipped: list[Skipped] = []
    insufficient = _too_little(h, view)
    if view.main_loss() is None and not view.nonfinite:
        skipped.append(Skipped("all", "no loss-like curve in the history (names such as "
                               "loss, val_loss, nll, ...)"))
    for code, fn in _CHECKS:
        try:
            findings.extend(fn(view))
        except SkipCheck as exc:
            skipped.append(Skipped(code, str(exc)))
    sev_counts = {s: sum(f.severity == s for f in findings) for s in SEVERITIES}
    main = view.main_loss()
    summary = {
        "source": h.source, "unit": view.unit,
        "points": (main.raw_n if main is not None else len(h)),
        "loss": view.loss_name, "score": view.score_name,
        "num_classes": view.num_classes, "chance_level": view.chance,
        "prior_entropy": view.prior_entropy, "has_statistics": bool(view.stats),
        "has_validation": view.val_loss is not None, "counts": sev_counts,
        "seconds": round(time.perf_counter() - t0, 4),
        "insufficient": insufficient if not findings else None,
    }
    return Diagnosis(findings, skipped, view.notes, summary, view)


def _too_little(h: History, view: RunView) -> str | None:
    """Why nothing can be judged from this history (None when something can)."""
    if view.main_loss() is None and not view.nonfinite:
        names = sorted({k.split("/", 1)[-1] for lv in ("epoch", "step") for k in h.keys(lv)})
        if not names:
            return (f"nothing was read ({len(h)} epochs, no metric columns); expected a loss "
                    "curve such as loss / val_loss")
        return ("no loss curve among the columns read (" + ", ".join(names[:12]) + "); "
                "expected a loss column such as loss, val_loss, nll or cross_entropy, or a "
                "mapping (CLI: --map val/loss=COLUMN)")
    longest = max((len(s) for s in (view.train_loss, view.val_loss, view.train_steps)
                   if s is not None), default=0)
    if longest < 3 and not view.nonfinite:
        return (f"only {longest} finite loss value(s) per curve; every check needs at least "
                "3-4 points in one curve")
    return None
