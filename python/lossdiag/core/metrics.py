"""The streaming accumulator (`Metrics`) and the metrics derived from its sums (`derive`).

Every derived number is computed from plain sums (integer counts and float64 sums), so states
from several batches, processes or machines can be added together. `Metrics.update` calls
`lossdiag.core.api.evaluate`; the backends never call back into this module.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import api, interop
from . import validate as V
from .results import BatchStats

_SUM_KEYS = (  # the confusion matrix is added separately: a state may leave it out
    "class_pred", "class_tp", "class_loss_sum", "class_count", "true_prob_hist", "conf_hist",
    "conf_correct", "conf_sum", "margin_hist",
)
_SCALAR_KEYS = (
    "nll_sum", "smooth_sum", "weight_sum", "count", "ignored", "nonfinite", "nonfinite_rows",
    "true_prob_sum", "below_inv_e", "entropy_sum", "elements", "soft_batches", "hard_batches",
)
_BATCH_SCALARS = ("nll_sum", "smooth_sum", "weight_sum", "count", "ignored", "nonfinite",
                  "nonfinite_rows", "true_prob_sum", "below_inv_e", "entropy_sum", "elements")
_INT_SCALARS = ("count", "ignored", "nonfinite", "nonfinite_rows", "below_inv_e", "elements",
                "soft_batches", "hard_batches")
_ABSENT = ("nan", "zero", "one")


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    out = np.full(np.broadcast(a, b).shape, np.nan)
    np.divide(a, b, out=out, where=b != 0)
    return out


def _absent_fill(values: np.ndarray, undefined: np.ndarray, absent: str) -> np.ndarray:
    v = values.copy()
    v[undefined] = {"nan": np.nan, "zero": 0.0, "one": 1.0}[absent]
    return v


class Metrics:
    """Streaming accumulator of one-pass statistics; memory O(C + bins) (plus the C x C confusion
    matrix when kept), not O(pixels).

    `update` runs `lossdiag.evaluate` (same options) and adds its sums into the state;
    `compute` derives every metric; states add (`merge`, `state_dict`) across batches,
    processes or machines. One object may be updated from several threads at once: the
    evaluation runs in parallel, the additions into the state under a lock. Top-1 accuracy is
    always accumulated (``top_k`` gains a leading 1 when it lacks one). Integer labels and float
    (soft) targets cannot be mixed in one accumulator: their mean losses have different
    denominators.

    Args:
        num_classes: C (2 for ``binary=True``).
        binary: single-logit outputs (`evaluate_binary`): BCE, threshold accuracy, 2x2 confusion.
        imagewise: also accumulate per-image IoU / Dice (segmentation_models.pytorch
            "macro-imagewise": per image the mean over classes, then the mean over images).
        confusion: keep the (C, C) confusion matrix (``compute()["confusion"]``); ``None``
            (default) keeps it up to 1024 classes. Per-class metrics (recall, precision, IoU,
            F1, kappa) never need it: they come from O(C) counts.
        other arguments: as `lossdiag.evaluate`.

    Example:
        >>> import numpy as np, lossdiag
        >>> m = lossdiag.Metrics(3)
        >>> rng = np.random.default_rng(0)
        >>> for _ in range(4):
        ...     _ = m.update(rng.normal(size=(8, 3, 4, 4)).astype(np.float32),
        ...                  rng.integers(0, 3, size=(8, 4, 4)))
        >>> r = m.compute()
        >>> r["count"], int(r["confusion"].sum())
        (512, 512)
        >>> 0.0 <= r["mean_iou"] <= 1.0
        True
    """

    def __init__(self, num_classes: int, *, axis: int = 1, weight: Any = None,
                 ignore_index: int = -100, label_smoothing: float = 0.0,
                 top_k: Any = (1,), bins: int = 20, binary: bool = False,
                 imagewise: bool = False, pos_weight: Any = None,
                 threshold: float = 0.0, confusion: bool | None = None) -> None:
        if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool):
            raise TypeError(f"num_classes: expected an int, got {num_classes!r}")
        if binary and num_classes != 2:
            raise ValueError(f"num_classes: binary metrics have 2 classes, got {num_classes}")
        if num_classes < 1:
            raise ValueError(f"num_classes: must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.bins = V.check_bins(bins)
        self.top_k = (V.check_top_k(V.top_k_with_1(top_k), self.num_classes) if not binary
                      else [1])
        self.binary = bool(binary)
        self.confusion = True if binary else V.check_confusion(confusion, self.num_classes)
        self.imagewise = bool(imagewise)
        self.options = dict(axis=axis, weight=weight, ignore_index=ignore_index,
                            label_smoothing=label_smoothing)
        self.binary_options = dict(pos_weight=pos_weight, threshold=threshold)
        V.check_weight(weight, self.num_classes)
        V.check_options(ignore_index, label_smoothing, "mean")
        if binary:
            V.real_scalar(threshold, "threshold")
        self._lock = threading.RLock()
        self.reset()

    # A lock cannot be pickled or copied: a copy gets a new one.
    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            d = self.__dict__.copy()
            d["_state"] = {k: np.array(v, copy=True) for k, v in self._state.items()}
        d.pop("_lock", None)
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        self._lock = threading.RLock()

    # -- state ---------------------------------------------------------------------------------
    def reset(self) -> None:
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        C, b = self.num_classes, self.bins
        self._dev: Any = None  # sums of GPU batches not yet brought to the host (see _pull)
        arrays = BatchStats.new_arrays(C, b, binary=self.binary, confusion=self.confusion)
        self._state: dict[str, np.ndarray] = {k: v for k, v in arrays.items() if v is not None}
        self._state.update(BatchStats.new_class_arrays(C))
        for k in _SCALAR_KEYS:
            self._state[k] = np.zeros((), np.int64 if k in _INT_SCALARS else np.float64)
        self._state["correct"] = np.zeros(len(self.top_k), np.int64)
        if self.imagewise:
            self._state["images"] = np.zeros((), np.int64)
            # per policy (nan, zero, one): sum over images of the per-image class-mean, and the
            # number of images where it is defined; for IoU and Dice.
            self._state["img_iou_sum"] = np.zeros(3, np.float64)
            self._state["img_dice_sum"] = np.zeros(3, np.float64)
            self._state["img_defined"] = np.zeros(3, np.int64)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Plain NumPy arrays, all of them sums: add them to combine states. ``soft_batches`` /
        ``hard_batches`` count the batches with float (soft) targets and with integer labels:
        the loss is derived for the kind the state holds."""
        with self._lock:
            self._pull()
            return {k: np.array(v, copy=True) for k, v in self._state.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the state by ``state`` (from `state_dict`, or a sum of several). Every key must
        be there with its shape; counts must be finite non-negative integers."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state: expected a dict from state_dict(), got {state!r:.80}")
        if "confusion" in state and "class_pred" not in state and "class_tp" not in state:
            # a state saved before the per-class counts existed: they are in its confusion
            cm = np.asarray(state["confusion"])
            state = {**state, "class_pred": cm.sum(axis=0), "class_tp": np.diagonal(cm).copy()}
        missing = set(self._state) - set(state)
        if missing:
            raise ValueError(f"state: missing keys {sorted(missing)}")
        new = {}
        for k, v in self._state.items():
            try:
                arr = np.asarray(state[k])
            except Exception as exc:
                raise TypeError(f"state: {k} cannot be read as an array") from exc
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"state: {k} has dtype {arr.dtype}, expected numbers")
            if arr.shape != v.shape:
                raise ValueError(f"state: {k} has shape {arr.shape}, expected {v.shape}")
            if v.dtype.kind == "i" and arr.dtype.kind == "f":
                bad = ~np.isfinite(arr) | (arr != np.round(arr)) | (np.abs(arr) >= 2.0**63)
                if np.any(bad):
                    raise ValueError(f"state: {k} must hold integer counts, got "
                                     f"{arr[bad].ravel()[0]!r}")
            if v.dtype.kind == "i" and arr.dtype.kind == "u" and np.any(arr > 2**63 - 1):
                raise ValueError(f"state: {k} overflows int64")
            if v.dtype.kind == "i" and np.any(arr < 0):
                raise ValueError(f"state: {k} must hold counts >= 0, got {arr.min()!r}")
            new[k] = arr.astype(v.dtype, copy=True)
        _check_kinds(new, "state")
        with self._lock:
            self._state = new
            self._dev = None

    def merge(self, other: Metrics) -> Metrics:
        """Add another accumulator's state (same configuration) into this one."""
        if not isinstance(other, Metrics):
            raise TypeError(f"other: expected Metrics, got {type(other).__name__}")
        if (other.num_classes, other.bins, other.top_k, other.binary, other.imagewise,
                other.confusion) != (self.num_classes, self.bins, self.top_k, self.binary,
                                     self.imagewise, self.confusion):
            raise ValueError("other: Metrics with a different configuration cannot be merged")
        first, second = sorted((self, other), key=id)
        with first._lock, second._lock:
            self._pull()
            other._pull()
            merged = {k: self._state[k] + other._state[k] for k in self._state}
            _check_kinds(merged, "other")
            self._state = merged
        return self

    def sync(self, group: Any = None) -> Metrics:
        """Replace the local state by that of all ranks of a torch.distributed ``group``
        (default: the world), bitwise the same on every rank and equal to merging the ranks'
        states in rank order. A collective: every rank must call it. See
        `lossdiag.distributed.sync`."""
        from .. import distributed

        return distributed.sync(self, group)

    # -- update --------------------------------------------------------------------------------
    def update(self, logits: Any, target: Any) -> BatchStats | Metrics:
        """Evaluate one batch (one pass over the logits) and add it to the state.

        Safe to call from several threads on one object: the pass runs without the lock (and
        without the GIL), the additions into the state under it.  Dask arrays are evaluated one
        task per chunk (`lossdiag.dask.update`); the chunks' sums are added in chunk order, and
        the statistics of the whole array come back as a `Metrics`."""
        if _is_dask(logits) or _is_dask(target):
            from .. import dask as _dask

            return _dask.update(self, logits, target)
        opts, bopts = self.options, self.binary_options
        if interop.on_gpu(logits):  # host weight / pos_weight: a device copy, uploaded once
            from . import cuda

            opts, bopts = cuda.metrics_options(self, logits)
        if self.binary:
            s = api.evaluate_binary(logits, target, bins=self.bins, **bopts)
        else:
            s = api.evaluate(logits, target, top_k=self.top_k, bins=self.bins,
                             per_sample=self.imagewise, confusion=self.confusion, **opts)
            if s.num_classes != self.num_classes:
                raise ValueError(f"logits: {s.num_classes} classes, but Metrics was created with "
                                 f"num_classes={self.num_classes}")
        with self._lock:
            kind = "soft_batches" if s.soft else "hard_batches"
            other = "hard_batches" if s.soft else "soft_batches"
            if int(self._state[other]):
                raise ValueError(
                    f"target: {'float (soft) targets' if s.soft else 'integer labels'} after "
                    f"{int(self._state[other])} batches of "
                    f"{'integer labels' if s.soft else 'float (soft) targets'} in one Metrics; "
                    "their mean losses differ, use one Metrics per kind")
            self._state[kind] = self._state[kind] + 1
            self._add(s)
        return s

    def _add(self, s: BatchStats) -> None:
        """Add one batch's sums into the state (under the lock)."""
        if getattr(s, "_device", None) is not None:
            # GPU batch: its sums are added on the device, without synchronising.
            from . import cuda

            cuda.metrics_update(self, s)
            return
        # In place: the state's arrays are this object's own (state_dict, merge and compute hand
        # out copies or new arrays), and a new (C, C) array per batch would cost more than the
        # evaluation for large C.
        st = self._state
        for k in _SUM_KEYS:
            st[k] += _host(getattr(s, k))
        if "confusion" in st:
            st["confusion"] += _host(s.confusion)
        if self.binary:
            st["prob_hist"] += _host(s.prob_hist)
        for k in _BATCH_SCALARS:  # NumPy scalars: a new one is cheaper than an in-place add
            st[k] = st[k] + getattr(s, k)
        st["correct"] += [s.correct[k] for k in self.top_k]
        if self.imagewise:
            self._update_imagewise(s)

    def _update_imagewise(self, s: BatchStats) -> None:
        inter = _host(s.sample_intersection).astype(np.float64)
        tru = _host(s.sample_true).astype(np.float64)
        pred = _host(s.sample_pred).astype(np.float64)
        union = tru + pred - inter
        denom = tru + pred
        undefined = union == 0
        iou = _div(inter, union)
        dice = _div(2 * inter, denom)
        st = self._state
        st["images"] = st["images"] + inter.shape[0]
        for i, pol in enumerate(_ABSENT):
            io = np.nanmean(_absent_fill(iou, undefined, pol), axis=1) if iou.size else iou
            di = np.nanmean(_absent_fill(dice, undefined, pol), axis=1) if dice.size else dice
            ok = ~np.isnan(io)
            st["img_iou_sum"][i] += io[ok].sum()
            st["img_dice_sum"][i] += di[ok].sum()
            st["img_defined"][i] += int(ok.sum())

    def _pull(self) -> None:
        """Bring the sums of GPU batches into the host state: a synchronisation point, where
        deferred GPU errors (e.g. a label outside [0, C)) are raised."""
        if getattr(self, "_dev", None) is not None:
            from . import cuda

            cuda.metrics_pull(self)

    # -- compute -------------------------------------------------------------------------------
    def compute(self, *, absent: str = "nan") -> dict[str, Any]:
        """Derive every metric from the accumulated sums.

        Args:
            absent: a class absent from both target and prediction has an undefined IoU/Dice;
                "nan" excludes it from the means (default, like mmsegmentation), "zero" counts
                it as 0, "one" as 1 (segmentation_models.pytorch's zero_division=1).
        """
        if not isinstance(absent, str) or absent not in _ABSENT:
            raise ValueError(f"absent: must be one of {_ABSENT}, got {absent!r}")
        with self._lock:
            self._pull()
            st = self._state
            return derive(st, num_classes=self.num_classes, bins=self.bins, top_k=self.top_k,
                          label_smoothing=float(self.options["label_smoothing"]),
                          soft=int(st["soft_batches"]) > 0, binary=self.binary, absent=absent)


def _check_kinds(state: dict[str, Any], name: str) -> None:
    """A state holds batches of one target kind (integer labels or float targets)."""
    if int(state["soft_batches"]) and int(state["hard_batches"]):
        raise ValueError(f"{name}: the state mixes {int(state['soft_batches'])} batches of float "
                         f"(soft) targets with {int(state['hard_batches'])} of integer labels; "
                         "their mean losses differ")


def _is_dask(x: Any) -> bool:
    return type(x).__module__.startswith("dask.")  # without importing dask


def _host(x: Any) -> np.ndarray:
    if type(x) is np.ndarray:
        return x
    return x.get() if hasattr(x, "get") and not isinstance(x, np.ndarray) else np.asarray(x)


def derive(st: dict[str, Any], *, num_classes: int, bins: int, top_k: list[int],
           label_smoothing: float = 0.0, soft: bool = False, binary: bool = False,
           absent: str = "nan") -> dict[str, Any]:
    """Derived metrics from a state of sums (see `Metrics.compute`)."""
    C = num_classes
    # np.array copies: arrays returned as they are must not be the state's (updated in place)
    if "confusion" in st:
        cm = np.array(st["confusion"], np.int64)
        tp = np.diag(cm).astype(np.float64)
        true_n = cm.sum(axis=1).astype(np.float64)
        pred_n = cm.sum(axis=0).astype(np.float64)
    else:  # the same numbers from the O(C) counts (class_count: the confusion's row sums)
        cm = None
        tp = np.asarray(st["class_tp"], np.float64)
        true_n = np.asarray(st["class_count"], np.float64)
        pred_n = np.asarray(st["class_pred"], np.float64)
    total = float(true_n.sum())
    count = int(st["count"])
    union = true_n + pred_n - tp
    undefined = union == 0
    iou = _absent_fill(_div(tp, union), undefined, absent)
    dice = _absent_fill(_div(2 * tp, true_n + pred_n), undefined, absent)
    precision = _div(tp, pred_n)
    recall = _div(tp, true_n)
    f1 = _div(2 * tp, true_n + pred_n)
    f1[undefined] = np.nan
    with np.errstate(invalid="ignore"):
        mean_iou = float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else math.nan
        mean_dice = float(np.nanmean(dice)) if np.any(~np.isnan(dice)) else math.nan
        rec_def = recall[true_n > 0]
        balanced = float(rec_def.mean()) if rec_def.size else math.nan
    if total > 0:
        po = tp.sum() / total
        pe = float((true_n * pred_n).sum()) / (total * total)
        kappa = (po - pe) / (1 - pe) if pe != 1 else math.nan
    else:
        kappa = math.nan

    conf_hist = np.array(st["conf_hist"], np.int64)
    conf_correct = np.asarray(st["conf_correct"], np.int64)
    conf_sum = np.asarray(st["conf_sum"], np.float64)
    n_hist = conf_hist.sum()
    bin_acc = _div(conf_correct, conf_hist)
    bin_conf = _div(conf_sum, conf_hist)
    gaps = np.abs(bin_acc - bin_conf)
    nz = conf_hist > 0
    ece = float((conf_hist[nz] / n_hist * gaps[nz]).sum()) if n_hist else math.nan
    mce = float(gaps[nz].max()) if n_hist else math.nan

    margin_hist = np.array(st["margin_hist"], np.int64)
    half = bins // 2
    nonneg = margin_hist[half:].sum() if not binary else margin_hist[half:].sum()
    small = margin_hist[half] if bins >= 2 else 0
    nll, smooth, wsum = float(st["nll_sum"]), float(st["smooth_sum"]), float(st["weight_sum"])
    if soft or binary:
        elements = int(st["elements"])
        loss = nll / elements if elements else math.nan
    else:
        loss = V.mean_loss(label_smoothing, C, nll, smooth, wsum)
    correct = np.asarray(st["correct"], np.int64)
    acc = {k: (int(c) / count if count else math.nan) for k, c in zip(top_k, correct)}
    n_stat = float(true_n.sum())
    edges = np.linspace(0.0, 1.0, bins + 1)
    out: dict[str, Any] = {
        "loss": loss,
        "accuracy": acc.get(1, math.nan),
        "top_k_accuracy": acc,
        "balanced_accuracy": balanced,
        "precision": precision, "recall": recall, "iou": iou, "dice": dice, "f1": f1,
        "mean_iou": mean_iou, "mean_dice": mean_dice,
        "kappa": kappa, "ece": ece, "mce": mce,
        "mean_true_class_prob": float(st["true_prob_sum"]) / n_stat if n_stat else math.nan,
        "frac_true_prob_below_inv_e": int(st["below_inv_e"]) / n_stat if n_stat else math.nan,
        "mean_entropy": float(st["entropy_sum"]) / n_stat if n_stat else math.nan,
        "small_margin_correct_frac": float(small) / float(nonneg) if nonneg else math.nan,
        "reliability": {"bin_edges": edges, "confidence": bin_conf, "accuracy": bin_acc,
                        "count": conf_hist},
        "true_prob_hist": np.array(st["true_prob_hist"], np.int64),
        "conf_hist": conf_hist, "margin_hist": margin_hist,
        "bin_edges": edges, "margin_bin_edges": np.linspace(-1.0, 1.0, bins + 1),
        "label_freq": true_n / total if total else np.full(C, np.nan),
        "pred_freq": pred_n / total if total else np.full(C, np.nan),
        "per_class_loss": _div(st["class_loss_sum"], st["class_count"]),
        "confusion": cm, "count": count, "ignored": int(st["ignored"]),
        "nonfinite": int(st["nonfinite"]), "num_classes": C,
    }
    if binary and "prob_hist" in st:
        out["prob_hist"] = np.array(st["prob_hist"], np.int64)
    if "img_defined" in st:
        i = _ABSENT.index(absent)
        d = int(st["img_defined"][i])
        out["mean_iou_imagewise"] = float(st["img_iou_sum"][i]) / d if d else math.nan
        out["mean_dice_imagewise"] = float(st["img_dice_sum"][i]) / d if d else math.nan
    return out


__all__ = ["BatchStats", "Metrics", "derive"]
