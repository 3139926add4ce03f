"""The result of one pass over a batch: `BatchStats`, produced by the CPU and CUDA backends.

Integer counts and float64 sums, so that `lossdiag.core.metrics.Metrics` can add batches
together; the few derived numbers (mean loss, top-1 accuracy) are properties.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from . import validate as V


@dataclass
class BatchStats:
    """Everything `lossdiag.evaluate` computes in its single pass over the logits.

    Integer counts are int64; float sums float64. See docs/API_CONTRACT.md for each field.

    Example:
        >>> import numpy as np, lossdiag
        >>> x = np.array([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]], np.float32)
        >>> s = lossdiag.evaluate(x, np.array([0, 2]))
        >>> s.count, s.correct[1], s.confusion.tolist()
        (2, 1, [[1, 0, 0], [0, 0, 0], [0, 1, 0]])
        >>> round(s.loss, 4)
        1.6672
    """

    num_classes: int
    bins: int
    loss_sum: float
    weight_sum: float
    nll_sum: float
    smooth_sum: float
    label_smoothing: float
    soft: bool
    count: int
    ignored: int
    nonfinite: int
    nonfinite_rows: int
    correct: dict[int, int]
    confusion: np.ndarray
    class_loss_sum: np.ndarray
    class_count: np.ndarray
    true_prob_hist: np.ndarray
    conf_hist: np.ndarray
    conf_correct: np.ndarray
    conf_sum: np.ndarray
    margin_hist: np.ndarray
    true_prob_sum: float
    below_inv_e: int
    entropy_sum: float
    elements: int
    binary: bool = False
    prob_hist: np.ndarray | None = None
    sample_loss_sum: np.ndarray | None = None
    sample_count: np.ndarray | None = None
    sample_correct: np.ndarray | None = None
    sample_intersection: np.ndarray | None = None
    sample_true: np.ndarray | None = None
    sample_pred: np.ndarray | None = None
    grad: Any = None
    class_pred: np.ndarray | None = None
    class_tp: np.ndarray | None = None

    # The result arrays, in the order the kernels take them (cpp/bind_core.cpp): `new_arrays`
    # (then ``prob_hist`` for binary outputs) and `new_sample_arrays` return them in this order.
    STAT_ARRAYS: ClassVar[tuple[str, ...]] = (
        "confusion", "class_loss_sum", "class_count", "true_prob_hist", "conf_hist",
        "conf_correct", "conf_sum", "margin_hist")
    SAMPLE_ARRAYS: ClassVar[tuple[str, ...]] = (
        "sample_loss_sum", "sample_count", "sample_correct", "sample_intersection",
        "sample_true", "sample_pred")
    CLASS_ARRAYS: ClassVar[tuple[str, ...]] = ("class_pred", "class_tp")

    # -- construction -------------------------------------------------------------------------
    @staticmethod
    def new_arrays(C: int, bins: int, binary: bool = False, xp: Any = np,
                   confusion: bool = True) -> dict[str, Any]:
        """Zeroed result arrays, in the order of `STAT_ARRAYS` (+ ``prob_hist``); ``confusion``
        is None unless asked for.

        >>> tuple(BatchStats.new_arrays(3, 4)) == BatchStats.STAT_ARRAYS
        True
        """
        a = {
            "confusion": xp.zeros((C, C), xp.int64) if confusion else None,
            "class_loss_sum": xp.zeros(C, xp.float64),
            "class_count": xp.zeros(C, xp.int64),
            "true_prob_hist": xp.zeros(bins, xp.int64),
            "conf_hist": xp.zeros(bins, xp.int64),
            "conf_correct": xp.zeros(bins, xp.int64),
            "conf_sum": xp.zeros(bins, xp.float64),
            "margin_hist": xp.zeros(bins, xp.int64),
        }
        if binary:
            a["prob_hist"] = xp.zeros(bins, xp.int64)
        return a

    @staticmethod
    def new_class_arrays(C: int, xp: Any = np) -> dict[str, Any]:
        """Zeroed per-class predicted counts and true positives, in the order of
        `CLASS_ARRAYS`."""
        return {"class_pred": xp.zeros(C, xp.int64), "class_tp": xp.zeros(C, xp.int64)}

    @staticmethod
    def new_sample_arrays(N: int, C: int, xp: Any = np) -> dict[str, Any]:
        """Zeroed per-sample result arrays, in the order of `SAMPLE_ARRAYS`.

        >>> tuple(BatchStats.new_sample_arrays(2, 3)) == BatchStats.SAMPLE_ARRAYS
        True
        """
        return {
            "sample_loss_sum": xp.zeros(N, xp.float64),
            "sample_count": xp.zeros(N, xp.int64),
            "sample_correct": xp.zeros(N, xp.int64),
            "sample_intersection": xp.zeros((N, C), xp.int64),
            "sample_true": xp.zeros((N, C), xp.int64),
            "sample_pred": xp.zeros((N, C), xp.int64),
        }

    @classmethod
    def from_kernel(cls, r: dict, arrays: dict, sample: dict | None, *, C: int, bins: int,
                    ks: list[int], eps: float, soft: bool, E: int, grad: Any,
                    binary: bool, class_arrays: dict | None = None) -> BatchStats:
        if soft:
            loss_sum, wsum = r["nll_sum"], float(E)
        else:
            loss_sum, wsum = V.sum_loss(eps, C, r["nll_sum"], r["smooth_sum"]), r["wsum"]
        return cls(
            num_classes=C, bins=bins, loss_sum=loss_sum, weight_sum=wsum, nll_sum=r["nll_sum"],
            smooth_sum=r["smooth_sum"], label_smoothing=eps, soft=soft, count=int(r["count"]),
            ignored=int(r["ignored"]), nonfinite=int(r["nonfinite"]),
            nonfinite_rows=int(r["nonfinite_rows"]),
            correct={k: int(c) for k, c in zip(ks, r["correct"])},
            true_prob_sum=r["true_prob_sum"], below_inv_e=int(r["below_inv_e"]),
            entropy_sum=r["entropy_sum"], elements=E, grad=grad, binary=binary,
            **arrays, **(sample or {}), **(class_arrays or {}),
        )

    @classmethod
    def from_binary_kernel(cls, r: dict, arrays: dict, *, bins: int, E: int,
                           grad: Any) -> BatchStats:
        return cls(
            num_classes=2, bins=bins, loss_sum=r["loss_sum"], weight_sum=float(E),
            nll_sum=r["loss_sum"], smooth_sum=0.0, label_smoothing=0.0, soft=False,
            count=int(r["count"]), ignored=0, nonfinite=int(r["nonfinite"]),
            nonfinite_rows=int(r["nonfinite"]), correct={1: int(r["correct"])},
            true_prob_sum=r["true_prob_sum"], below_inv_e=int(r["below_inv_e"]),
            entropy_sum=r["entropy_sum"], elements=E, grad=grad, binary=True, **arrays,
            class_pred=arrays["confusion"].sum(axis=0),
            class_tp=arrays["confusion"].diagonal().copy(),
        )

    def get(self) -> BatchStats:
        """The statistics on the host: this object itself (a GPU call's `BatchStats` returns a
        host copy), so ``lossdiag.evaluate(...).get()`` works on either backend."""
        return self

    # -- derived --------------------------------------------------------------------------------
    @property
    def loss(self) -> float:
        """The "mean" loss, bit for bit what `cross_entropy(..., reduction="mean")` returns."""
        if self.soft or self.binary:
            return self.nll_sum / self.elements if self.elements else math.nan
        return V.mean_loss(self.label_smoothing, self.num_classes, self.nll_sum, self.smooth_sum,
                           self.weight_sum)

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy over counted elements (NaN when none). `evaluate` always counts top-1,
        whatever ``top_k`` holds."""
        if 1 not in self.correct:
            raise ValueError(f"accuracy: top-1 was not counted (correct holds k = "
                             f"{sorted(self.correct)})")
        return self.correct[1] / self.count if self.count else math.nan
