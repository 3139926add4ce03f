"""Shared robust statistics for the findings, and the run view they all read.

Everything here works on short curves (at most ``Thresholds.max_points`` points): per-step logs
are reduced to bins first, so each check costs microseconds.

>>> import numpy as np
>>> y = np.array([5.0, 4.0, 3.2, 2.5, 40.0, 1.6, 1.3, 1.1])   # one wild point
>>> running_median(y, 3)[3:6].round(2).tolist()
[3.2, 2.5, 1.6]
>>> round(theil_sen(np.arange(8.0), np.arange(8.0) * 2 + 1)[0], 6)
2.0
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..history import History, metric_direction
from .thresholds import Thresholds

__all__ = [
    "RunView",
    "Series",
    "SkipCheck",
    "binned",
    "class_weights_balanced",
    "entropy",
    "fit_tail",
    "keras_early_stopping",
    "linfit",
    "noise_sigma",
    "running_median",
    "spearman",
    "theil_sen",
    "zigzag",
]


class SkipCheck(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a check that cannot run; the message is the reason shown to the user."""


# --------------------------------------------------------------------------------------------
# robust statistics
# --------------------------------------------------------------------------------------------


def running_median(y: np.ndarray, window: int) -> np.ndarray:
    """Centred running median; the window shrinks at the ends (same length as ``y``)."""
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    w = max(1, int(window)) | 1
    if n == 0 or w == 1:
        return y.copy()
    h = w // 2
    if n > w:
        pad = np.concatenate([np.full(h, np.nan), y, np.full(h, np.nan)])
        win = np.lib.stride_tricks.sliding_window_view(pad, w)
        out = np.nanmedian(win, axis=1) if h else win[:, 0]
        return out
    return np.array([np.median(y[max(0, i - h): i + h + 1]) for i in range(n)])


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Running median followed by a 3-point mean: robust to single wild points."""
    m = running_median(y, window)
    if len(m) < 3:
        return m
    out = m.copy()
    out[1:-1] = (m[:-2] + m[1:-1] + m[2:]) / 3.0
    return out


def mad_sigma(v: np.ndarray) -> float:
    """Robust standard deviation: 1.4826 x median absolute deviation."""
    v = np.asarray(v, dtype=np.float64)
    if v.size == 0:
        return math.nan
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def noise_sigma(y: np.ndarray) -> float:
    """Noise sigma of a curve from its second differences (robust to trends and to a few
    wild points or single steps): ``1.4826 * MAD(diff(y, 2)) / sqrt(6)``.

    >>> rng = np.random.default_rng(0)
    >>> y = np.linspace(2, 1, 400) + 0.1 * rng.standard_normal(400)
    >>> 0.08 < noise_sigma(y) < 0.12
    True
    """
    y = np.asarray(y, dtype=np.float64)
    if len(y) < 4:
        return math.nan
    d2 = np.diff(y, 2)
    return float(1.4826 * np.median(np.abs(d2 - np.median(d2))) / math.sqrt(6.0))


def zigzag(y: np.ndarray) -> float:
    """Share of consecutive changes that reverse direction (random noise ~ 2/3, trend ~ 0)."""
    d = np.diff(np.asarray(y, dtype=np.float64))
    d = d[d != 0]
    if len(d) < 2:
        return 0.0
    return float(np.mean(np.sign(d[1:]) != np.sign(d[:-1])))


def theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Robust line fit: median of pairwise slopes, and the median intercept."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < 2:
        return math.nan, float(y[0]) if n else math.nan
    i, j = np.triu_indices(n, 1)
    dx = x[j] - x[i]
    ok = dx != 0
    if not ok.any():
        return 0.0, float(np.median(y))
    slope = float(np.median((y[j] - y[i])[ok] / dx[ok]))
    return slope, float(np.median(y - slope * x))


def linfit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares line: ``(slope, intercept, r2)``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0:
        return math.nan, math.nan, math.nan
    slope, icpt = np.polyfit(x, y, 1)
    res = y - (slope * x + icpt)
    ss = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(res**2)) / ss if ss > 0 else 1.0
    return float(slope), float(icpt), r2


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks are not needed: x is increasing time)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 3:
        return math.nan
    rx = np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(float)
    ry = np.argsort(np.argsort(y, kind="stable"), kind="stable").astype(float)
    rx -= rx.mean()
    ry -= ry.mean()
    den = math.sqrt(float(np.sum(rx * rx) * np.sum(ry * ry)))
    return float(np.sum(rx * ry) / den) if den > 0 else 0.0


def binned(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Reduce a long curve to at most ``max_points`` bins of consecutive points (median y,
    mean x).  Short curves are returned unchanged."""
    n = len(x)
    if n <= max_points:
        return x, y
    k = int(math.ceil(n / max_points))
    m = n // k
    xb = x[: m * k].reshape(m, k).mean(axis=1)
    yb = np.median(y[: m * k].reshape(m, k), axis=1)
    if m * k < n:
        xb = np.append(xb, x[m * k:].mean())
        yb = np.append(yb, np.median(y[m * k:]))
    return xb, yb


def entropy(p: np.ndarray) -> float:
    """Shannon entropy in nats of a frequency vector (zeros ignored)."""
    p = np.asarray(p, dtype=np.float64)
    p = p[p > 0]
    p = p / p.sum()
    return float(-(p * np.log(p)).sum())


def class_weights_balanced(freq: np.ndarray) -> np.ndarray:
    """scikit-learn's ``class_weight="balanced"`` from class frequencies:
    ``n_samples / (n_classes * count_c)`` = ``1 / (C * f_c)`` (absent classes get 0).

    >>> class_weights_balanced(np.array([0.9, 0.05, 0.05])).round(3).tolist()
    [0.37, 6.667, 6.667]
    """
    f = np.asarray(freq, dtype=np.float64)
    f = f / f.sum()
    present = f > 0
    c = int(present.sum())
    out = np.zeros_like(f)
    out[present] = 1.0 / (c * f[present])
    return out


def keras_early_stopping(values: np.ndarray, patience: int,
                         min_delta: float) -> tuple[int | None, int]:
    """Simulate ``keras.callbacks.EarlyStopping(monitor=..., mode="min", patience, min_delta)``.

    Returns ``(index of the epoch after which training stops or None, index of the best
    epoch that restore_best_weights would restore)``.

    >>> keras_early_stopping(np.array([3, 2, 1.5, 1.6, 1.7, 1.55, 1.8]), 3, 0.0)
    (5, 2)
    """
    best = math.inf
    best_i = 0
    wait = 0
    d = abs(float(min_delta))
    for i, v in enumerate(np.asarray(values, dtype=np.float64).tolist()):
        wait += 1
        if v - (-d) < best:  # Keras: monitor_op(current - min_delta, best), min_delta < 0
            best, best_i, wait = v, i, 0
            continue
        if wait >= patience and i > 0:
            return i, best_i
    return None, best_i


@dataclass
class TailFit:
    """A model fitted to the tail of a loss curve."""

    kind: str  # "linear" | "exponential" | "power-law"
    params: dict[str, float]
    sse: float
    aic: float

    def predict(self, t: np.ndarray | float) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        p = self.params
        if self.kind == "linear":
            return p["a"] + p["b"] * t
        if self.kind == "exponential":
            return p["c"] + p["a"] * np.exp(-p["k"] * (t - p["t0"]))
        return p["a"] * np.power(np.maximum(t, 1e-9), -p["p"])


def fit_tail(t: np.ndarray, y: np.ndarray) -> list[TailFit]:
    """Fit linear, exponential-to-an-asymptote and power-law models; best (lowest AIC) first.

    ``t`` is 1-based time (epoch index + 1) so that the power law ``a t^-p`` is defined.
    """
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(t)
    fits: list[TailFit] = []

    def aic(sse: float, k: int) -> float:
        return n * math.log(max(sse, 1e-300) / n) + 2 * k

    b, a, _ = linfit(t, y)
    sse = float(np.sum((y - (a + b * t)) ** 2))
    fits.append(TailFit("linear", {"a": a, "b": b}, sse, aic(sse, 2)))

    span = max(float(t[-1] - t[0]), 1e-9)
    t0 = float(t[0])
    best = None
    for k in np.geomspace(0.05 / span, 20.0 / span, 60):
        e = np.exp(-k * (t - t0))
        A = np.stack([np.ones(n), e], axis=1)
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        if coef[1] <= 0 or coef[0] < -1e-12:
            continue
        s = float(np.sum((y - A @ coef) ** 2))
        if best is None or s < best[0]:
            best = (s, float(coef[0]), float(coef[1]), float(k))
    if best is not None:
        s, c, a_, k = best
        fits.append(TailFit("exponential", {"c": c, "a": a_, "k": k, "t0": t0}, s, aic(s, 3)))

    if np.all(y > 0) and np.all(t > 0):
        slope, icpt, _ = linfit(np.log(t), np.log(y))
        if math.isfinite(slope) and slope < 0:
            pred = math.exp(icpt) * np.power(t, slope)
            s = float(np.sum((y - pred) ** 2))
            fits.append(TailFit("power-law", {"a": math.exp(icpt), "p": -slope}, s, aic(s, 2)))
    fits.sort(key=lambda f: f.aic)
    return fits


def fmt(v: float, digits: int = 3) -> str:
    """Short human number: 3 significant digits, scientific for very large/small."""
    if v is None or not isinstance(v, (int, float, np.floating, np.integer)):
        return str(v)
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.{max(digits - 1, 0)}e}"
    return f"{v:.{digits}g}"


def pct(v: float, digits: int = 3) -> str:
    """A fraction as a percentage string."""
    return f"{fmt(100.0 * v, digits)}%"

# --------------------------------------------------------------------------------------------
# statistics relative to a curve's own scale and noise
# --------------------------------------------------------------------------------------------


def log_floor(y: np.ndarray) -> float:
    """A floor under which loss values count as ~0 (for log-scale statistics): 1e-3 of the
    curve's typical early level, so that a loss that converged to 0.0001 or exactly 0 reads as
    flat, not as a 10x swing of rounding noise."""
    y = np.asarray(y, dtype=np.float64)
    pos = y[np.isfinite(y) & (y > 0)]
    if pos.size == 0:
        return 1e-12
    head = pos[: max(3, pos.size // 5)]
    return max(1e-3 * float(np.median(head)), 1e-12)


def log_values(y: np.ndarray, floor: float | None = None) -> np.ndarray:
    """``log(max(y, floor))``: losses on the scale where changes are relative."""
    y = np.asarray(y, dtype=np.float64)
    f = log_floor(y) if floor is None else floor
    return np.log(np.maximum(y, f))


def rel_noise(y: np.ndarray) -> float:
    """Relative noise of a positive curve: the robust noise sigma of ``log y`` (trend-free,
    from second differences; ~0.05 means the curve jumps by about 5 % from point to point).

    >>> rng = np.random.default_rng(1)
    >>> y = np.exp(-np.arange(60) / 20) * np.exp(0.05 * rng.standard_normal(60))
    >>> 0.03 < rel_noise(y) < 0.07
    True
    """
    y = np.asarray(y, dtype=np.float64)
    if len(y) < 4:
        return math.nan
    return noise_sigma(log_values(y))


def spikes(y: np.ndarray, min_rise: float, *, width: int = 3) -> list[tuple[int, float]]:
    """Points that stand above the curve on *both* sides: ``y[i]`` at least ``1 + min_rise``
    times the median of the ``width`` points before it and of the ``width`` points after it.

    Unlike a deviation from a running median this does not fire on a falling trend (an early
    point is above what follows but not above what precedes it).  Returns ``(index, ratio)``.

    >>> [(i, round(r, 2)) for i, r in spikes(np.array([1.0, 0.9, 0.8, 2.0, 0.7, 0.65, 0.6]), 0.5)]
    [(3, 2.22)]
    """
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    if n < 3:
        return []
    w = int(width)
    pad = np.concatenate([np.full(w, np.nan), y, np.full(w, np.nan)])
    win = np.lib.stride_tricks.sliding_window_view(pad, w)
    idx = np.arange(1, n - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        left = np.nanmedian(win[idx], axis=1)  # y[i-w:i]
        right = np.nanmedian(win[idx + w + 1], axis=1)  # y[i+1:i+1+w]
    base = np.maximum(left, right)
    hit = (base > 0) & (y[idx] >= (1.0 + min_rise) * base)
    return [(int(i), float(y[i] / b)) for i, b in zip(idx[hit], base[hit])]


def trend(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(Theil-Sen slope, Spearman correlation with time)`` of a segment."""
    if len(x) < 2:
        return math.nan, math.nan
    return theil_sen(x, y)[0], spearman(x, y)


def robust_end(y: np.ndarray, k: int) -> float:
    """Level at the end of a curve: the median of its last ``k`` points."""
    y = np.asarray(y, dtype=np.float64)
    return float(np.median(y[-max(1, min(k, len(y))):]))


def pinned(y: np.ndarray, tol: float) -> bool:
    """All values within ``tol`` of each other (a metric stuck at one value)."""
    y = np.asarray(y, dtype=np.float64)
    return len(y) >= 2 and float(np.ptp(y)) <= tol


# --------------------------------------------------------------------------------------------
# the run view
# --------------------------------------------------------------------------------------------


@dataclass
class Series:
    """A finite curve ready for analysis (x in epochs or steps)."""

    key: str  # "train/loss"
    x: np.ndarray
    y: np.ndarray
    raw_n: int  # points before binning
    nonfinite_at: float | None = None  # x of the first logged non-finite value, if any
    per_step: bool = False  # minibatch-level values (noisy by nature), not per-epoch means

    def __len__(self) -> int:
        return len(self.x)

    @property
    def name(self) -> str:
        return self.key.split("/", 1)[-1]

    @property
    def split(self) -> str:
        return self.key.split("/", 1)[0]

    def smoothed(self, window: int) -> np.ndarray:
        return smooth(self.y, window)

    def since(self, x0: float) -> Series:
        """The part of the curve at or after ``x0``."""
        sel = self.x >= x0
        return Series(self.key, self.x[sel], self.y[sel], int(sel.sum()), self.nonfinite_at,
                      self.per_step)


# Accuracy-like metrics in order of preference for "the score" of a run.
_SCORE_PRIORITY = ("accuracy", "balanced_accuracy", "mean_iou", "iou", "mean_dice", "dice",
                   "f1", "f1_macro", "macro_f1", "auc", "auroc", "matthews_correlation", "mcc")
# Scores that trade off against each other: never "the score" alone.
_PARTIAL_SCORES = ("precision", "recall", "sensitivity", "specificity")
_NOT_PRIMARY_LOSS = ("ece", "mce", "mean_entropy", "brier")


@dataclass
class RunView:
    """What the checks read: the chosen curves, levels and statistics of one history."""

    history: History
    th: Thresholds
    unit: str = "epoch"
    train_loss: Series | None = None
    val_loss: Series | None = None
    train_score: Series | None = None
    val_score: Series | None = None
    val_scores: dict[str, Series] = field(default_factory=dict)
    lr: Series | None = None
    grad_norm: Series | None = None
    train_steps: Series | None = None  # per-step training loss (x in the view's unit)
    score_name: str | None = None
    loss_name: str | None = None
    score_percent: bool = False
    num_classes: int | None = None
    label_freq: np.ndarray | None = None
    stats: list[tuple[float, Mapping[str, Any]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    nonfinite: list[tuple[str, str, float, float]] = field(default_factory=list)
    found: dict[str, Any] = field(default_factory=dict)

    # --------------------------------------------------------------- derived levels
    @property
    def chance(self) -> float | None:
        """``ln C``: the loss of uniform predictions."""
        return math.log(self.num_classes) if self.num_classes else None

    @property
    def prior_entropy(self) -> float | None:
        """Entropy of the label frequencies: the loss of predicting the class prior."""
        return entropy(self.label_freq) if self.label_freq is not None else None

    @property
    def majority_rate(self) -> float | None:
        return float(np.max(self.label_freq)) if self.label_freq is not None else None

    @property
    def batch_size(self) -> int | None:
        b = self.history.meta.get("batch_size")
        return int(b) if isinstance(b, (int, float)) and b > 0 else None

    def main_loss(self) -> Series | None:
        return self.train_loss if self.train_loss is not None else self.val_loss

    def lr_at(self, x: float) -> float | None:
        """Learning rate at (or just before) ``x``, when logged."""
        if self.lr is None or len(self.lr) == 0:
            return None
        i = int(np.searchsorted(self.lr.x, x, side="right")) - 1
        return float(self.lr.y[max(i, 0)])

    def lr_finished(self, share: float = 0.05) -> bool:
        """The learning-rate schedule has run down (last LR <= ``share`` of its peak)."""
        if self.lr is None or len(self.lr) < 3:
            return False
        peak = float(np.max(self.lr.y))
        return peak > 0 and float(self.lr.y[-1]) <= share * peak

    def stats_at(self, x: float) -> Mapping[str, Any] | None:
        """Statistics of the epoch nearest to ``x`` (None when there are none)."""
        if not self.stats:
            return None
        xs = np.array([s[0] for s in self.stats])
        return self.stats[int(np.argmin(np.abs(xs - x)))][1]

    def stat_curve(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-epoch curve of a scalar statistic (``"ece"`` ...)."""
        xs, ys = [], []
        for x, s in self.stats:
            v = s.get(key)
            if isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(float(v)):
                xs.append(x)
                ys.append(float(v))
        if not xs:
            return None
        return np.array(xs), np.array(ys)


def _base_name(name: str) -> str:
    """``f1_1`` -> ``f1``; ``iou_class3`` -> ``iou``: per-class variants of one metric."""
    m = re.match(r"^(.*?)[_\-/]?(?:class_?)?\d+$", name)
    return m.group(1) if m and m.group(1) else name


def _partial(name: str) -> bool:
    """Precision, recall, sensitivity, specificity (of a class or overall) trade off against
    each other: never 'the score' and never judged alone."""
    base = _base_name(name)
    return any(base == w or base.endswith("_" + w) or base.startswith(w + "_")
               for w in _PARTIAL_SCORES)


def _pick_loss(names: Sequence[str]) -> str | None:
    cands = [n for n in names if metric_direction(n) == "min"]
    if not cands:
        return None
    if "loss" in cands:
        return "loss"
    cands = [n for n in cands if not any(n == w or n.endswith("_" + w) or n.startswith(w + "_")
                                         for w in _NOT_PRIMARY_LOSS)] or []
    lossy = [n for n in cands if "loss" in n]
    if lossy:
        return min(lossy, key=len)
    for w in ("cross_entropy", "crossentropy", "nll", "xent", "ce", "bce"):
        if w in cands:
            return w
    return cands[0] if cands else None


def _score_rank(name: str) -> tuple[int, int]:
    base = _base_name(name)
    for i, p in enumerate(_SCORE_PRIORITY):
        if name == p:
            return (i, 0)
        if base == p:
            return (i, 1)
    return (len(_SCORE_PRIORITY), 0)


def build_view(history: History, num_classes: int | None, th: Thresholds) -> RunView:
    """Choose the curves to analyse and gather levels, statistics and notes."""
    view = RunView(history=history, th=th)
    view.notes.extend(str(n) for n in history.meta.get("notes", []) or [])
    ep_keys = [k for k in history.keys("epoch") if k not in ("lr", "grad_norm")]
    st_keys = [k for k in history.keys("step") if k not in ("lr", "grad_norm")]

    def n_loss(keys: list[str], level: str, split: str | None = None) -> int:
        best = 0
        for k in keys:
            if split is not None and not k.startswith(split + "/"):
                continue
            if metric_direction(k.split("/", 1)[-1]) == "min":
                _, v, p = history.column(k, level)
                best = max(best, int(np.count_nonzero(p)))
        return best

    # which level the trends are read on: per-epoch records when there are enough of them,
    # per-step records otherwise (converted to epochs where each step's epoch is known)
    ep_n, st_n = n_loss(ep_keys, "epoch"), n_loss(st_keys, "step")
    step_epochs = history.step_epochs if history.has_steps else np.zeros(0)
    steps_in_epochs = bool(step_epochs.size) and bool(np.isfinite(step_epochs).all())
    use_steps = ep_n < 3 and st_n >= 3 and not (steps_in_epochs and ep_n >= 1
                                                 and n_loss(ep_keys, "epoch", "val") >= 3)
    if use_steps and steps_in_epochs and n_loss(ep_keys, "epoch", "val") >= 1:
        use_steps = False  # keep the validation records; training loss comes from the steps
    level = "step" if use_steps else "epoch"
    view.unit = level
    keys = st_keys if use_steps else ep_keys

    # non-finite values in loss-like columns, at both levels (first occurrence)
    for lv in ("epoch", "step"):
        for k in history.keys(lv):
            if k == "lr":
                continue
            name = k.split("/", 1)[-1]
            x, v, p = history.column(k, lv)
            bad = p & ~np.isfinite(v)
            if not bad.any():
                continue
            direction = "min" if k == "grad_norm" else metric_direction(name)
            if direction == "min":
                i = int(np.argmax(bad))
                view.nonfinite.append((k, lv, float(x[i]), float(v[i])))
            elif not (p & np.isfinite(v)).any():
                view.notes.append(f"'{k}' is non-finite in every {lv}: ignored (the losses "
                                  "are what matters)")
            else:
                view.notes.append(f"'{k}' has {int(bad.sum())} non-finite value(s) although "
                                  "it is finite elsewhere: those points are ignored")

    train_names = [k.split("/", 1)[1] for k in keys if k.startswith("train/")]
    val_names = [k.split("/", 1)[1] for k in keys if k.startswith("val/")]
    loss = _pick_loss(train_names) or _pick_loss(val_names)
    val_alias: str | None = None
    if loss is not None and loss not in val_names and loss in train_names:
        # a validation loss logged under a name without "loss" (validation_epoch_average ...)
        val_alias = _unnamed_val_loss(history, level, loss, val_names, view)
    view.loss_name = loss

    def series(split: str, name: str | None, *, is_score: bool = False,
               lv: str | None = None) -> Series | None:
        if name is None:
            return None
        lv = lv or level
        key = f"{split}/{name}"
        if key not in history.keys(lv):
            return None
        x, v, p = history.column(key, lv)
        good = p & np.isfinite(v)
        bad = p & ~np.isfinite(v)
        nf = float(x[int(np.argmax(bad))]) if bad.any() else None
        if nf is not None and not is_score:
            good &= x < nf  # the run is dead after its loss became NaN/inf
        xs, ys = x[good], v[good]
        if len(xs) == 0:
            return None
        raw_n = len(xs)
        if is_score:
            ymax = float(np.max(ys))
            if 1.0 + 1e-9 < ymax <= 100.0 and ymax > th.percent_score_max:
                ys = ys / 100.0
                view.score_percent = True
        xs, ys = binned(xs, ys, th.max_points)
        return Series(key, xs, ys, raw_n, nf, per_step=(lv == "step"))

    view.train_loss = series("train", loss)
    view.val_loss = series("val", val_alias or loss)
    # per-step training loss, in the view's unit (epochs when each step's epoch is known)
    if history.has_steps and loss is not None:
        s = series("train", loss, lv="step")
        if s is not None and level == "epoch":
            if steps_in_epochs:
                sx = _steps_to_epochs(history)
                xs_all, v_all, p_all = history.column(f"train/{loss}", "step")
                good = p_all & np.isfinite(v_all)
                if s.nonfinite_at is not None:
                    good &= xs_all < s.nonfinite_at
                xe, ye = binned(sx[good], v_all[good], th.max_points)
                s = Series(s.key, xe, ye, int(good.sum()), s.nonfinite_at, per_step=True)
            else:
                s = None
        view.train_steps = s
        t = view.train_loss
        if (level == "epoch" and s is not None and len(s) >= 3
                and (t is None or (len(t) < 8 and len(s) >= 2 * len(t)))):
            view.train_loss = s
            view.notes.append(f"the training loss is read on its {s.raw_n} per-step records "
                              f"(only {0 if t is None else len(t)} per-epoch values)")
    # the score: prefer accuracy-like metrics; skip constant (broken) metrics when a varying
    # one exists; among per-class variants (f1_0, f1_1) take the hardest class
    cands: dict[str, Series] = {}
    for nm in sorted(set(val_names)):
        if metric_direction(nm) != "max" or _partial(nm):
            continue
        s = series("val", nm, is_score=True)
        if s is not None and len(s) >= 2:
            cands[nm] = s
    varying = {k: s for k, s in cands.items() if float(np.ptp(s.y)) > 1e-9}
    if varying and len(varying) < len(cands):
        for k in sorted(set(cands) - set(varying)):
            if len(cands[k]) >= 3:
                view.notes.append(f"'val/{k}' has the same value ({fmt(cands[k].y[0], 4)}) "
                                  f"in every {level}: a broken metric? Read "
                                  f"'{sorted(varying, key=_score_rank)[0]}' instead")
        cands = varying
    view.val_scores = cands
    score = None
    if cands:
        groups: dict[tuple[int, int], list[str]] = {}
        for k in cands:
            groups.setdefault(_score_rank(k), []).append(k)
        best_group = groups[min(groups)]
        score = min(best_group, key=lambda k: (float(np.median(cands[k].y)), k))
    else:
        tr = [nm for nm in train_names if metric_direction(nm) == "max" and not _partial(nm)]
        if tr:
            score = min(tr, key=_score_rank)
    view.score_name = score
    view.val_score = cands.get(score) if score is not None else None
    view.train_score = series("train", score, is_score=True)
    if view.score_percent:
        view.notes.append(f"'{score}' looks like a percentage (max > 1): read as value/100")
    if level == "epoch" and history.has_steps and view.train_loss is not view.train_steps:
        view.notes.append("per-step records present: trends are read on the per-epoch "
                          "records, non-finite values on both")
    if use_steps and len(history.epochs) == 0:
        view.notes.append("per-step log without per-epoch records: curves are reduced to "
                          f"at most {th.max_points} bins (median per bin); spans are in steps")
    for key, attr in (("lr", "lr"), ("grad_norm", "grad_norm")):
        src_level = level
        if key not in history.keys(level) and level == "epoch" and history.has_steps and \
                key in history.keys("step") and steps_in_epochs:
            src_level = "step"
        if key in history.keys(src_level):
            x, v, p = history.column(key, src_level)
            if src_level == "step" and level == "epoch":
                x = _steps_to_epochs(history)
            ok = p & np.isfinite(v)
            if ok.any():
                setattr(view, attr, Series(key, x[ok], v[ok], int(ok.sum()),
                                           per_step=src_level == "step"))

    # classes, statistics, label frequencies
    stats = history.stats
    ex = history.epochs
    view.stats = [(float(ex[i]), s) for i, s in enumerate(stats) if s]
    nc = num_classes if num_classes is not None else history.num_classes
    if nc is None:
        for _, s in reversed(view.stats):
            v = s.get("num_classes")
            if isinstance(v, (int, np.integer)) and v >= 2:
                nc = int(v)
                break
    if nc is not None and int(nc) == 1:
        nc = 2  # binary problems logged with a single logit
    view.num_classes = int(nc) if nc is not None else None
    for _, s in reversed(view.stats):
        lf = s.get("label_freq")
        if lf is not None:
            arr = np.asarray(lf, dtype=np.float64)
            if arr.ndim == 1 and arr.size >= 2 and np.isfinite(arr).all() and arr.sum() > 0:
                view.label_freq = arr / arr.sum()
                break
    if view.label_freq is None and "label_freq" in history.meta:
        arr = np.asarray(history.meta["label_freq"], dtype=np.float64)
        if arr.ndim == 1 and arr.size >= 2 and arr.sum() > 0:
            view.label_freq = arr / arr.sum()
    if view.num_classes is None and view.label_freq is not None:
        view.num_classes = int(view.label_freq.size)
    return view


def _steps_to_epochs(history: History) -> np.ndarray:
    """Per-step records placed on the epoch axis.

    Fractional epochs (Hugging Face: progress, 0.5 = half way through the first epoch) are used
    as they are; integer epochs (Lightning: the epoch a step belongs to) are spread over that
    epoch, step i of k at ``e + i/k``, so a step of epoch 4 reads as epoch 4.x.
    """
    ep = history.step_epochs.astype(np.float64)
    if ep.size == 0 or not np.all(ep == np.round(ep)):
        return ep
    out = ep.copy()
    for e in np.unique(ep):
        idx = np.flatnonzero(ep == e)
        out[idx] = e + np.arange(idx.size) / idx.size
    return out


def _unnamed_val_loss(history: History, level: str, loss: str, val_names: Sequence[str],
                      view: RunView) -> str | None:
    """A validation column whose name says nothing (``validation_epoch_average``) but that
    behaves like the training loss: positive, within 10x of it, and falling with it."""
    _, tv, tp = history.column(f"train/{loss}", level)
    t = tv[tp & np.isfinite(tv)]
    if t.size < 3 or not (t > 0).all():
        return None
    cands = []
    for nm in val_names:
        if metric_direction(nm) is not None:
            continue
        x, v, p = history.column(f"val/{nm}", level)
        ok = p & np.isfinite(v)
        y = v[ok]
        if y.size < 3 or not (y > 0).all():
            continue
        ratio = float(np.median(y) / np.median(t))
        if not 0.1 <= ratio <= 10:
            continue
        xs = x[ok]
        if spearman(xs, y) > -0.3 and y[0] <= 1.2 * float(np.min(y)):
            continue  # not falling at all: probably not a loss
        cands.append((abs(math.log(ratio)), nm))
    if len(cands) != 1:
        return None
    nm = cands[0][1]
    view.notes.append(f"'val/{nm}' is read as the validation loss: its name does not say what "
                      f"it is, but it has the scale of '{loss}' and falls with it")
    return nm
