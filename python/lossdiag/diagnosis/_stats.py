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


_SCORE_PRIORITY = ("accuracy", "balanced_accuracy", "mean_iou", "iou", "mean_dice", "dice",
                   "f1", "auc", "auroc")
_NOT_PRIMARY_LOSS = ("ece", "mce", "entropy", "brier")


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
    lr: Series | None = None
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


def _pick(names: Sequence[str], direction: str) -> str | None:
    cands = [n for n in names if metric_direction(n) == direction]
    if not cands:
        return None
    if direction == "min":
        if "loss" in cands:
            return "loss"
        lossy = [n for n in cands if "loss" in n]
        if lossy:
            return lossy[0]
        cands = [n for n in cands if not any(w in n for w in _NOT_PRIMARY_LOSS)]
        return cands[0] if cands else None
    for p in _SCORE_PRIORITY:
        if p in cands:
            return p
    return cands[0]


def build_view(history: History, num_classes: int | None, th: Thresholds) -> RunView:
    """Choose the curves to analyse and gather levels, statistics and notes."""
    view = RunView(history=history, th=th)
    use_steps = False
    ep_keys = [k for k in history.keys("epoch") if k != "lr"]
    st_keys = [k for k in history.keys("step") if k != "lr"]

    def has_loss(keys: list[str], level: str) -> bool:
        for k in keys:
            if metric_direction(k.split("/", 1)[-1]) == "min":
                _, v, p = history.column(k, level)
                if np.count_nonzero(p) >= th.min_points:
                    return True
        return False

    if not has_loss(ep_keys, "epoch") and has_loss(st_keys, "step"):
        use_steps = True
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
            direction = metric_direction(name)
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
    loss = _pick(train_names, "min") or _pick(val_names, "min")
    if loss is not None and loss not in train_names and loss not in val_names:
        loss = None
    view.loss_name = loss
    usable_scores = [n for n in set(train_names) | set(val_names)
                     if _score_usable(history, level, n, train_names, val_names)]
    score = _pick(sorted(usable_scores, key=lambda n: (n not in val_names, n)), "max")
    view.score_name = score

    def series(split: str, name: str | None, *, is_score: bool = False) -> Series | None:
        if name is None:
            return None
        key = f"{split}/{name}"
        if key not in history.keys(level):
            return None
        x, v, p = history.column(key, level)
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
        return Series(key, xs, ys, raw_n, nf)

    view.train_loss = series("train", loss)
    view.val_loss = series("val", loss)
    view.train_score = series("train", score, is_score=True)
    view.val_score = series("val", score, is_score=True)
    if view.score_percent:
        view.notes.append(f"'{score}' looks like a percentage (max > 1): read as value/100")
    if level == "epoch" and len(history.keys("step")) and use_steps is False:
        view.notes.append("per-step records present: trends are read on the per-epoch "
                          "records, non-finite values on both")
    if use_steps and len(history.epochs) == 0:
        view.notes.append("per-step log without per-epoch records: curves are reduced to "
                          f"at most {th.max_points} bins (median per bin); spans are in steps")
    lr_key = "lr"
    if lr_key in history.keys(level):
        x, v, p = history.column(lr_key, level)
        ok = p & np.isfinite(v)
        if ok.any():
            view.lr = Series("lr", x[ok], v[ok], int(ok.sum()))

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


def _score_usable(history: History, level: str, name: str, train_names: list[str],
                  val_names: list[str]) -> bool:
    """A score curve with at least one finite value (an all-NaN metric is ignored)."""
    for split, names in (("train", train_names), ("val", val_names)):
        if name in names:
            _, v, p = history.column(f"{split}/{name}", level)
            if (p & np.isfinite(v)).any():
                return True
    return False
