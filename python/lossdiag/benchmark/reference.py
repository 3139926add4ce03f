"""The baselines lossdiag is timed against and checked with: NumPy (idiomatic and numerically
stable; its temporaries are the point) and PyTorch CPU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.validate import CONFUSION_AUTO_MAX
from .cases import Case

BINS = 20  # histogram bins of every evaluate (lossdiag, NumPy, torch)


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
    confusion: np.ndarray | None  # computed, as by evaluate, up to CONFUSION_AUTO_MAX classes
    class_count: np.ndarray  # per class: labels, predictions, both (the confusion's row sums,
    class_pred: np.ndarray  # column sums and diagonal)
    class_tp: np.ndarray
    conf_hist: np.ndarray
    conf_correct: np.ndarray  # per confidence bin: correct predictions
    conf_sum: np.ndarray  # per confidence bin: sum of the confidences
    true_prob_hist: np.ndarray
    margin_hist: np.ndarray


def np_evaluate(x: np.ndarray, t: np.ndarray, axis: int, ignore_index: int,
                bins: int = BINS) -> EvalResult:
    """The NumPy chain: stable CE + argmax + bincount per-class counts (and confusion, as
    ``evaluate``, up to 1024 classes) + 5 ``np.histogram`` calls.

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
    confusion = (np.bincount(tv * c + pv, minlength=c * c).reshape(c, c)
                 if c <= CONFUSION_AUTO_MAX else None)
    right = tv == pv
    conf = pmax[valid]
    return EvalResult(
        loss=float(loss), count=int(tv.size), correct=int(np.count_nonzero(right)),
        confusion=confusion, class_count=np.bincount(tv, minlength=c),
        class_pred=np.bincount(pv, minlength=c), class_tp=np.bincount(tv[right], minlength=c),
        conf_hist=np.histogram(conf, bins=bins, range=(0.0, 1.0))[0],
        conf_correct=np.histogram(conf[right], bins=bins, range=(0.0, 1.0))[0],
        conf_sum=np.histogram(conf, bins=bins, range=(0.0, 1.0), weights=conf)[0],
        true_prob_hist=np.histogram(ptrue[valid], bins=bins, range=(0.0, 1.0))[0],
        margin_hist=np.histogram(margin[valid], bins=bins, range=(-1.0, 1.0))[0],
    )


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
        """F.cross_entropy + softmax/argmax + bincount per-class counts (and confusion up to 1024
        classes) + 4 ``torch.histc`` and a weighted ``torch.histogram`` (the confidence sums)."""
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
            confusion = (torch.bincount(tv * c + pv, minlength=c * c).reshape(c, c).numpy()
                         if c <= CONFUSION_AUTO_MAX else None)
            right = tv == pv
            conf = pmax[valid]
            return EvalResult(
                loss=float(loss), count=int(tv.numel()), correct=int(right.sum()),
                confusion=confusion, class_count=torch.bincount(tv, minlength=c).numpy(),
                class_pred=torch.bincount(pv, minlength=c).numpy(),
                class_tp=torch.bincount(tv[right], minlength=c).numpy(),
                conf_hist=torch.histc(conf, bins, 0.0, 1.0).long().numpy(),
                conf_correct=torch.histc(conf[right], bins, 0.0, 1.0).long().numpy(),
                conf_sum=torch.histogram(conf, bins, range=(0.0, 1.0), weight=conf).hist.numpy(),
                true_prob_hist=torch.histc(ptrue[valid], bins, 0.0, 1.0).long().numpy(),
                margin_hist=torch.histc(margin[valid], bins, -1.0, 1.0).long().numpy(),
            )
