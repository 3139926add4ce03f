"""Live diagnosis: a framework-agnostic monitor that raises alarms while a run goes wrong.

Feed a :class:`Monitor` what the training loop already has, per optimisation step (loss,
learning rate, gradient norm) and per epoch (train / validation metrics and, optionally, the
``lossdiag.Metrics(...).compute()`` statistics of the validation data). It keeps the
:class:`~lossdiag.history.History` of the run and raises an alarm (a
:class:`~lossdiag.diagnosis.Finding`, the same object ``lossdiag.diagnose`` returns) as soon as
the evidence is there:

* ``non-finite`` (error): a loss became NaN or infinite - at once, with the step; also a
  non-finite gradient norm (with ``loss_scaling=True`` only after 20 in a row: a loss scaler
  skips overflowing steps and lowers its scale);
* ``diverging`` / ``loss-spike`` (warning): one loss value many robust noise sigmas and several
  times above its running level, *and* back above where the run started: one update undid the
  progress of the run (a converged model's single-batch outliers stay below that);
* ``diverging`` / ``lr-too-high`` (error): growth that has become divergence - the smoothed
  loss risen well above its running minimum, consistently and out of its own noise; or an
  explosion (several values in a row an order of magnitude above the minimum);
* ``diverging`` / ``gradient-explosion`` (warning): every one of the last few gradient norms
  an order of magnitude (and many of their own noise sigmas) above their typical level;
* ``stuck`` / ``majority-collapse`` (warning): the validation statistics show the model
  calling nearly all samples of the other classes one class, evaluations in a row.

Every test is relative to the run's own numbers (its noise, its running minimum, its starting
level), never an absolute gate on the loss; the defaults raise no alarm on the healthy runs of
lossdiag's collection of real training logs (tests/test_monitor.py replays all 40). Each alarm
fires once per episode: it re-arms only after the curve has recovered for ``rearm_points``
updates. At the end, :meth:`Monitor.diagnose` runs the full :func:`lossdiag.diagnose` on the
history and adds the alarms it does not report itself; :meth:`Monitor.write_report` writes
``report.html``, ``report.json`` and ``history.json``.

Example (a plain training loop; any framework)::

    >>> import math
    >>> import lossdiag
    >>> mon = lossdiag.Monitor(num_classes=10, stop_on=("non-finite", "diverging"))
    >>> losses = [2.3, 2.0, 1.8, 1.7, 1.6, 1.55, float("nan")]
    >>> for step, loss in enumerate(losses):
    ...     for alarm in mon.step(step, loss=loss, lr=0.1):
    ...         print(alarm.code, alarm.start)
    ...     if mon.should_stop:
    ...         break
    non-finite 6.0
    >>> mon.stop_reason.title
    'loss became NaN'

The thresholds live in :class:`AlarmThresholds`; pass a modified copy as ``thresholds=``.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .history import History, normalize_metric_name

if TYPE_CHECKING:
    from .diagnosis.report import Diagnosis, Finding

__all__ = ["AlarmThresholds", "Monitor", "is_loss_name", "scalars"]

# Codes a user may name in ``stop_on`` (kept in step with lossdiag.diagnosis.report.CODES, which
# is not imported here so that building a Monitor does not import matplotlib).
_CODES = ("non-finite", "diverging", "stuck", "overfitting", "overconfident",
          "loss-accuracy-decoupling", "slow-tail", "oscillating", "class-imbalance")
_LOSS_WORDS = ("nll", "ce", "cross_entropy", "crossentropy", "bce", "perplexity", "ppl")


def _t(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class AlarmThresholds:
    """Thresholds of the live alarms; every one is relative to the run's own numbers.

    Losses are compared in log space after adding a floor of ``floor_frac`` x the loss's starting
    level, so a loss that moves from 0.001 to 0.01 after starting at 2.3 (a converged model's
    batch noise) is not read as a 10x rise.

    >>> from dataclasses import replace
    >>> strict = replace(AlarmThresholds(), spike_sigmas=4.0)
    >>> strict.spike_sigmas
    4.0
    """

    window: int = _t(50, "points of recent history used for running level and noise")
    warmup: int = _t(5, "finite points a curve needs before spikes and trends are judged; "
                        "their median is the run's starting level")
    floor_frac: float = _t(0.05, "floor added to losses before taking logs, as a fraction of "
                                 "the starting level (changes far below it are ignored)")
    noise_floor: float = _t(0.02, "smallest noise sigma assumed for a log-loss curve (a "
                                  "perfectly flat curve would otherwise make any blip "
                                  "infinitely significant)")
    spike_sigmas: float = _t(6.0, "spike: log-loss this many robust noise sigmas above its "
                                  "level (median of the last smooth / smooth_steps values) ...")
    spike_min_ratio: float = _t(5.0, "... and at least this x that level ...")
    spike_vs_start: float = _t(1.0, "... and at least this x the starting level: one update "
                                    "undid all the progress of the run (single-batch outliers "
                                    "of a converged model stay below it)")
    smooth: int = _t(3, "running-median window (epochs) of the level that divergence compares")
    smooth_steps: int = _t(9, "the same for per-step losses (one batch each: noisier)")
    diverge_rise: float = _t(2.0, "divergence: smoothed loss this x above its running minimum "
                                  "...")
    diverge_points: int = _t(3, "... rising for at least this many points after the minimum "
                                "...")
    diverge_consistency: float = _t(0.6, "... consistently (Spearman correlation with time >= "
                                         "this) ...")
    diverge_sigmas: float = _t(4.0, "... and the rise (in log) this many noise sigmas of the "
                                    "curve before its minimum")
    explode_ratio: float = _t(10.0, "explosion: the last diverge_points values all this x "
                                    "above the running minimum: divergence at once")
    val_only_rise: float = _t(3.0, "a validation loss is judged for divergence only when no "
                                   "training loss is fed, with this rise (smaller rises are "
                                   "overfitting)")
    grad_points: int = _t(5, "gradient norm: each of the last this many norms ...")
    grad_ratio: float = _t(10.0, "... at least this x the typical level (median of the older "
                                 "half of the last 2 x window norms) ...")
    grad_sigmas: float = _t(4.0, "... and this many robust sigmas of log grad-norm above it")
    grad_nonfinite_steps: int = _t(1, "non-finite gradient norms in a row that raise "
                                      "non-finite (Monitor(loss_scaling=True) uses 20: a loss "
                                      "scaler skips overflowing steps and lowers its scale)")
    collapse_share: float = _t(0.9, "collapse: at least this share of the samples of all "
                                    "other classes is predicted as one class ...")
    collapse_epochs: int = _t(2, "... in this many evaluations in a row")
    rearm_points: int = _t(3, "an alarm fires again only after its condition was false for "
                              "this many updates (one alarm per episode)")

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TypeError(f"{f.name}: expected a finite number, got {v!r}")
            if f.type in ("int", int):
                if int(v) != v or v < 1:
                    raise ValueError(f"{f.name}: expected an integer >= 1, got {v!r}")
            elif v <= 0:
                raise ValueError(f"{f.name}: must be > 0, got {v!r}")


DEFAULT_THRESHOLDS = AlarmThresholds()


# ------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------


def _scalar(value: Any, name: str) -> float | None:
    """A Python float from a number, a NumPy scalar or a one-element tensor (torch, CuPy, JAX).

    ``None`` stays ``None``. A tensor is read with ``.item()`` (a device synchronisation on a GPU).
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if hasattr(value, "detach"):  # torch: no autograd history, no copy
        value = value.detach()
    size = getattr(value, "size", None)
    n = size() if callable(size) else size
    if hasattr(value, "numel"):
        n = value.numel()
    if n is not None and n != 1:
        shape = tuple(getattr(value, "shape", ()))
        raise TypeError(f"{name}: expected a scalar, got an array of shape {shape}")
    if hasattr(value, "item"):
        try:
            return float(value.item())
        except (TypeError, ValueError):
            pass
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}") from None


def _host_array(x: Any) -> Any:
    """What lossdiag's array functions read, from a framework tensor.

    torch CPU tensors become a NumPy view (no copy; detached, so tensors that require grad are
    fine), except bfloat16, which NumPy lacks: it is upcast to float32 (one copy). CUDA tensors
    are passed through, detached: lossdiag's GPU backend reads them in place through DLPack.
    Anything else (NumPy, CuPy, lists) is returned unchanged.
    """
    if type(x).__module__.split(".")[0] != "torch":
        return x
    x = x.detach()
    if x.device.type != "cpu":
        return x
    if str(x.dtype) == "torch.bfloat16":
        x = x.float()
    return x.resolve_conj().resolve_neg().numpy()


def _fmt(v: float, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    return f"{v:.{digits}g}"


def _pct(v: float) -> str:
    return f"{100 * v:.3g}%"


def _xtxt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.3g}"


def _robust_sigma(v: np.ndarray) -> float:
    """1.4826 x median absolute deviation (NaN for an empty array)."""
    if v.size == 0:
        return math.nan
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def _diff_sigma(v: np.ndarray) -> float:
    """Noise sigma of a curve from its second differences: ``1.4826 MAD(diff(v, 2)) / sqrt(6)``.

    Robust to a trend and to its curvature (a loss that falls, then turns and grows) and to a
    few wild points; for white noise it estimates the noise's standard deviation.
    """
    if v.size < 4:
        return math.nan
    return _robust_sigma(np.diff(v, 2)) / math.sqrt(6.0)


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v), dtype=np.float64)
    r[order] = np.arange(len(v), dtype=np.float64)
    # average ties
    sv = v[order]
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and sv[j + 1] == sv[i]:
            j += 1
        if j > i:
            r[order[i: j + 1]] = (i + j) / 2.0
        i = j + 1
    return r


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2:
        return math.nan
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    sx, sy = rx.std(), ry.std()
    if sx == 0 or sy == 0:
        return 0.0
    return float(np.mean((rx - rx.mean()) * (ry - ry.mean())) / (sx * sy))


def is_loss_name(name: str) -> bool:
    """Whether a metric name is a loss (NaN in it means the run broke): ``loss``,
    ``val_loss``, ``dice_loss``, ``nll``, ``perplexity`` ...

    >>> is_loss_name("train_loss_epoch"), is_loss_name("nll"), is_loss_name("ece")
    (True, True, False)
    """
    n = normalize_metric_name(name)
    return "loss" in n or n in _LOSS_WORDS


# ------------------------------------------------------------------------------------------------
# running statistics of one curve
# ------------------------------------------------------------------------------------------------


class _Track:
    """Running robust statistics of one loss curve (train or validation, per step or epoch)."""

    def __init__(self, key: str, unit: str, th: AlarmThresholds, *,
                 floor_frac: float | None = None) -> None:
        self.key, self.unit, self.th = key, unit, th
        self.floor_frac = th.floor_frac if floor_frac is None else floor_frac
        self.smooth = th.smooth_steps if unit == "step" else th.smooth
        # points after the minimum a rise needs: more than half the smoothing window
        self.min_after = max(th.diverge_points, self.smooth // 2 + 1)
        self.x: deque[float] = deque(maxlen=th.window)
        self.y: deque[float] = deque(maxlen=th.window)
        self.first: list[float] = []
        self.first_x: float | None = None
        self._start: float | None = None
        self.signed = False  # a negative value was seen: ratio tests do not apply
        self.last_finite: float | None = None
        self.last_finite_x: float | None = None
        self.min_finite: float | None = None
        # divergence state: smoothed level and its running minimum
        self.level = math.nan
        self.level_min: float | None = None
        self.min_x: float | None = None
        self.min_raw: float | None = None
        self.since_min_x: deque[float] = deque(maxlen=4 * th.window)
        self.since_min_y: deque[float] = deque(maxlen=4 * th.window)

    @property
    def start(self) -> float | None:
        """The starting level: median of the first ``warmup`` values (None before)."""
        if self._start is None and len(self.first) >= self.th.warmup:
            self._start = float(np.median(self.first))
        return self._start

    def floor(self) -> float:
        s = self.start
        if s is None:  # before the warm-up, the first value is where the run started
            s = self.first[0] if self.first else 0.0
        return self.floor_frac * max(s, 0.0)

    def logs(self, y: Iterable[float]) -> np.ndarray:
        return np.log(np.asarray(list(y), dtype=np.float64) + self.floor())

    def ready(self) -> bool:
        st = self.start
        return (not self.signed and st is not None and st > 0
                and len(self.y) >= self.th.warmup)

    # -- spike ------------------------------------------------------------------------------
    def spike(self, y: float) -> dict[str, Any] | None:
        th = self.th
        st = self.start
        # cheap test first: most points are below the starting level
        if st is None or y < th.spike_vs_start * st or not self.ready():
            return None
        lg = self.logs(self.y)
        # the level just before (a trend moves it: a steady growth is not a spike), the noise
        # over the whole window
        level = float(np.median(lg[-self.smooth:]))
        sigma = _diff_sigma(lg)
        sig = max(sigma if math.isfinite(sigma) else 0.0, th.noise_floor)
        fl = self.floor()
        z = (math.log(y + fl) - level) / sig
        run_level = math.exp(level) - fl
        ratio = (y + fl) / (run_level + fl)
        if z >= th.spike_sigmas and ratio >= th.spike_min_ratio:
            return {"value": y, "running_level": run_level, "ratio": ratio,
                    "noise_sigma_log": sigma, "sigmas": z, "start_level": st}
        return None

    # -- add a point and judge divergence ---------------------------------------------------------
    def add(self, x: float, y: float) -> None:
        if y < 0:
            self.signed = True
        if not self.first:
            self.first_x = x
        if len(self.first) < self.th.warmup:
            self.first.append(y)
        self.x.append(x)
        self.y.append(y)
        self.last_finite, self.last_finite_x = y, x
        self.min_finite = y if self.min_finite is None else min(self.min_finite, y)
        if self.signed:
            return
        m = self.smooth
        recent = list(self.y)[-m:] if len(self.y) > m else list(self.y)
        srt = sorted(recent)
        h = len(srt) // 2
        level = srt[h] if len(srt) % 2 else 0.5 * (srt[h - 1] + srt[h])
        self.level = level
        if self.level_min is None or level < self.level_min:
            self.level_min = level
            # the raw minimum inside the smoothing window starts the "since the minimum" run
            k = len(recent) - 1 - recent.index(min(recent))
            self.min_raw = recent[-1 - k]
            xs = list(self.x)[-1 - k:]
            self.min_x = xs[0]
            self.since_min_x.clear()
            self.since_min_y.clear()
            self.since_min_x.extend(xs)
            self.since_min_y.extend(recent[len(recent) - 1 - k:])
        else:
            self.since_min_x.append(x)
            self.since_min_y.append(y)

    def recovered(self, min_rise: float) -> bool:
        """The smoothed level is back within sqrt(min_rise) of its minimum (re-arms the
        divergence alarm)."""
        if self.level_min is None or not math.isfinite(self.level):
            return True
        fl = self.floor()
        return (self.level + fl) <= math.sqrt(min_rise) * (self.level_min + fl)

    def divergence(self, min_rise: float, *, explode: bool = True) -> dict[str, Any] | None:
        th = self.th
        if self.signed or self.level_min is None:
            return None
        n_after = len(self.since_min_y) - 1
        fl = self.floor()
        lo = self.level_min + fl
        if lo <= 0:
            return None
        rise = (self.level + fl) / lo
        # an explosion needs no noise estimate and no starting level: diverge_points values in
        # a row an order of magnitude above the minimum (from the very first steps on)
        if explode:
            last = list(self.since_min_y)[-th.diverge_points:]
            explode = n_after >= th.diverge_points and all(
                (v + fl) >= th.explode_ratio * lo for v in last)
        st = self.start
        sustained_ok = st is not None and st > 0 and n_after >= self.min_after
        if not explode and (not sustained_ok or rise < min_rise):
            return None
        xs = np.asarray(self.since_min_x, dtype=np.float64)
        ys = np.asarray(self.since_min_y, dtype=np.float64)
        cons = _spearman(xs, ys)
        # the curve's own noise: first differences over the recent window (robust to the
        # trend of a real divergence, large for a noisy per-batch loss)
        sigma = _diff_sigma(self.logs(self.y))
        noise_ok = math.isfinite(sigma) and math.log(rise) >= th.diverge_sigmas * max(
            sigma, th.noise_floor)
        sustained = sustained_ok and rise >= min_rise and cons >= th.diverge_consistency and \
            noise_ok
        if not (explode or sustained):
            return None
        lg = np.log(ys + fl)
        slope = float(np.polyfit(xs - xs[0], lg, 1)[0]) if len(xs) >= 2 and xs[-1] > xs[0] \
            else math.nan
        return {"start": float(self.min_x if self.min_x is not None else xs[0]),
                "loss_at_start": float(self.min_raw if self.min_raw is not None else ys[0]),
                "last": float(ys[-1]), "peak": float(ys.max()), "rise": rise,
                "consistency": cons, "noise_sigma_log": sigma,
                "growth": math.exp(slope) if math.isfinite(slope) else math.nan,
                "model": "explosion" if explode else "sustained"}


class _GradTrack:
    """Running statistics of the gradient norm (log space).

    Per-batch gradient norms are heavy-tailed and often bimodal (a batch holding a
    misclassified sample can be 1000x the typical one), so an explosion is called only when
    *every one* of the last ``grad_points`` norms is ``grad_ratio`` x the typical level, and that
    many robust sigmas above it. The typical level is the median of the older half of the last
    ``2 * window`` norms, so that a fast growth over tens of steps is measured against where it
    started, not against its own recent past.
    """

    def __init__(self, th: AlarmThresholds) -> None:
        self.th = th
        n = 2 * th.window + th.grad_points
        self.x: deque[float] = deque(maxlen=n)
        self.g: deque[float] = deque(maxlen=n)
        self.nonfinite_run = 0
        self.first_nonfinite: float | None = None

    def add(self, x: float, g: float) -> None:
        self.x.append(x)
        self.g.append(g)

    def baseline(self) -> float | None:
        """Median of the older half of the norms before the last ``grad_points``."""
        k = self.th.grad_points
        gl = list(self.g)[:-k]
        old = [v for v in gl[: max(len(gl) // 2, self.th.warmup)] if v > 0]
        if len(old) < self.th.warmup:
            return None
        return float(np.median(old))

    def explosion(self) -> dict[str, Any] | None:
        th = self.th
        k = th.grad_points
        if len(self.g) < k + 2 * th.warmup:
            return None
        gl = list(self.g)
        low = min(gl[-k:])
        if low <= 0 or low < th.grad_ratio * min(gl[:-k]):  # cheap: a median is >= the min
            return None
        n_old = max((len(gl) - k) // 2, th.warmup)
        base = np.asarray([v for v in gl[:n_old] if v > 0], dtype=np.float64)
        if base.size < th.warmup:
            return None
        lb = np.log(base)
        med_b = float(np.median(lb))
        sigma = _robust_sigma(lb)
        sig = max(sigma if math.isfinite(sigma) else 0.0, th.noise_floor)
        ratio = low / math.exp(med_b)
        z = (math.log(low) - med_b) / sig
        if ratio >= th.grad_ratio and z >= th.grad_sigmas:
            recent = np.asarray(gl[-k:], dtype=np.float64)
            return {"grad_norm": float(np.median(recent)), "lowest_recent": low,
                    "baseline": float(np.exp(med_b)), "ratio": ratio, "sigmas": z,
                    "noise_sigma_log": sigma, "since": float(list(self.x)[-k])}
        return None


# ------------------------------------------------------------------------------------------------
# the monitor
# ------------------------------------------------------------------------------------------------


class Monitor:
    """Framework-agnostic live diagnosis of a training run.

    Args:
        num_classes: C, when known (used by the end-of-run diagnosis: chance level ln C).
        stop_on: finding codes after which :attr:`should_stop` becomes True, e.g.
            ``("non-finite", "diverging")``. Off (empty) by default: alarms are reported, the run
            goes on.
        thresholds: an :class:`AlarmThresholds` to override the defaults.
        loss_scaling: the run uses a float16 loss scaler (``torch.amp.GradScaler``): a
            non-finite gradient norm then only skips a step, and raises ``non-finite`` only after
            20 in a row (``AlarmThresholds.grad_nonfinite_steps`` otherwise).
        on_alarm: callables called with each new alarm (a ``Finding``) as it fires.
        history: an existing :class:`~lossdiag.history.History` to append to.
        source: a name for the run, shown in the report.
        step_every: keep every n-th step record in the history (alarms see every step; steps
            with an alarm or a non-finite value are always kept). Use it for long runs.

    Attributes:
        history: the run so far (a :class:`~lossdiag.history.History`).
        alarms: every alarm raised, in order.

    Example:
        >>> import lossdiag
        >>> mon = lossdiag.Monitor()
        >>> for epoch, (tl, vl) in enumerate([(2.0, 2.1), (1.5, 1.7), (1.2, 1.5)]):
        ...     _ = mon.epoch(epoch, train={"loss": tl}, val={"loss": vl})
        >>> mon.alarms, len(mon.history)
        ([], 3)
    """

    def __init__(self, *, num_classes: int | None = None, stop_on: Iterable[str] | str = (),
                 thresholds: AlarmThresholds | None = None, loss_scaling: bool = False,
                 on_alarm: Callable[[Finding], Any] | Iterable[Callable[[Finding], Any]] | None
                 = None, history: History | None = None, source: str | None = None,
                 step_every: int = 1) -> None:
        th = DEFAULT_THRESHOLDS if thresholds is None else thresholds
        if not isinstance(th, AlarmThresholds):
            raise TypeError(f"thresholds: expected AlarmThresholds, got {type(th).__name__}")
        self.thresholds = th
        self.stop_on = _check_codes(stop_on)
        if history is None:
            history = History(num_classes=num_classes, source=source)
        elif not isinstance(history, History):
            raise TypeError(f"history: expected a lossdiag History, got {type(history).__name__}")
        elif num_classes is not None:
            History(num_classes=num_classes)  # the same checks as a new history's
        self.history = history
        self.num_classes = num_classes if num_classes is not None else history.num_classes
        if callable(on_alarm):
            on_alarm = [on_alarm]
        self._on_alarm = list(on_alarm or [])
        for cb in self._on_alarm:
            if not callable(cb):
                raise TypeError(f"on_alarm: expected callables, got {cb!r}")
        if isinstance(step_every, bool) or not isinstance(step_every, (int, np.integer)) \
                or step_every < 1:
            raise ValueError(f"step_every: expected an integer >= 1, got {step_every!r}")
        self.step_every = int(step_every)
        self.loss_scaling = loss_scaling
        self.alarms: list[Finding] = []
        self.stop_reason: Finding | None = None
        self._tracks: dict[tuple[str, str], _Track] = {}
        self._grad = _GradTrack(th)
        self._active: dict[tuple[str, str], dict[str, Any]] = {}
        self._lr: tuple[float, float] | None = None  # (x, lr) last known
        self._lr_unit = "step"
        self._grad_last: float | None = None
        self._collapse_run = 0
        self._collapse_first: float | None = None
        self._steps_seen = 0
        self._epoch_of_step: float | None = None
        self._step_sum, self._step_n = 0.0, 0  # step losses since the last epoch record

    @classmethod
    def for_callback(cls, monitor: Monitor | None, *, num_classes: int | None,
                     stop_on: Iterable[str] | str, thresholds: AlarmThresholds | None) -> Monitor:
        """The Monitor a framework callback uses: ``monitor`` itself (its ``stop_on`` replaced
        when one is given) or a new one from the callback's arguments."""
        if monitor is None:
            return cls(num_classes=num_classes, stop_on=stop_on, thresholds=thresholds)
        if not isinstance(monitor, Monitor):
            raise TypeError(f"monitor: expected a lossdiag Monitor, got {type(monitor).__name__}")
        if stop_on:
            monitor.stop_on = cls(stop_on=stop_on).stop_on
        return monitor

    # -- properties ---------------------------------------------------------------------------
    @property
    def loss_scaling(self) -> bool:
        """Whether the run uses a float16 loss scaler (see the class docstring)."""
        return self._loss_scaling

    @loss_scaling.setter
    def loss_scaling(self, value: bool) -> None:
        self._loss_scaling = bool(value)
        self._grad_nf_steps = 20 if value else self.thresholds.grad_nonfinite_steps

    def add_alarm_callback(self, fn: Callable[[Finding], Any]) -> None:
        """Call ``fn(finding)`` for every new alarm (adapters log through it)."""
        if not callable(fn):
            raise TypeError(f"fn: expected a callable, got {fn!r}")
        self._on_alarm.append(fn)

    @property
    def should_stop(self) -> bool:
        """True once an alarm with a code in ``stop_on`` has fired."""
        return self.stop_reason is not None

    def __repr__(self) -> str:
        codes = ", ".join(f"{a.code}@{a.unit} {_xtxt(a.start)}" for a in self.alarms) or "none"
        return f"<Monitor {len(self.history)} epochs, {len(self.history.steps)} steps; " \
               f"alarms: {codes}>"

    # -- feeding --------------------------------------------------------------------------------
    def step(self, step: float, *, loss: Any = None, lr: Any = None, grad_norm: Any = None,
             epoch: Any = None, **metrics: Any) -> list[Finding]:
        """Record one optimisation step and return the alarms it raised (usually none).

        Args:
            step: the global step (non-decreasing; a repeated step merges into the last record).
            loss: the training loss of this step (a number or a one-element tensor).
            lr: the learning rate used in this step.
            grad_norm: the total gradient norm before clipping.
            epoch: the (fractional) epoch, when known.
            metrics: other training metrics of the step, stored in the history.
        """
        s = _scalar(step, "step")
        if s is None or not math.isfinite(s):
            raise ValueError(f"step: must be a finite number, got {step!r}")
        lo = _scalar(loss, "loss")
        lrv = _scalar(lr, "lr")
        g = _scalar(grad_norm, "grad_norm")
        ep = _scalar(epoch, "epoch")
        extra = {k: _scalar(v, k) for k, v in metrics.items()}
        new: list[Finding] = []
        if lrv is not None:
            self._lr, self._lr_unit = (s, lrv), "step"
        if ep is not None:
            self._epoch_of_step = ep
        if lo is not None:
            new += self._loss_point("step", "train/loss", s, lo)
            self._step_sum += lo
            self._step_n += 1
        if g is not None:
            new += self._grad_point(s, g)
        for k, v in extra.items():
            if v is not None and not math.isfinite(v) and is_loss_name(k):
                new += self._nonfinite("step", f"train/{normalize_metric_name(k)}", s, v)
        keep = (self._steps_seen % self.step_every == 0 or new
                or any(v is not None and not math.isfinite(v) for v in (lo, g)))
        self._steps_seen += 1
        if keep:
            train: dict[str, Any] = {}
            if lo is not None:
                train["loss"] = lo
            if g is not None:
                train["grad_norm"] = g
            train.update({k: v for k, v in extra.items() if v is not None})
            self.history.log_step(s, train=train or None, lr=lrv, epoch=ep)
        return self._emit(new)

    def epoch(self, epoch: float, *, train: Mapping[str, Any] | None = None,
              val: Mapping[str, Any] | None = None, lr: Any = None,
              stats: Mapping[str, Any] | None = None) -> list[Finding]:
        """Record one epoch (or one evaluation) and return the alarms it raised.

        Args:
            epoch: the epoch (non-decreasing; a repeated epoch merges into the last record).
            train: training metrics of the epoch, e.g. ``{"loss": 0.41, "accuracy": 0.87}``.
                Without a training loss, the mean of the step losses fed since the last epoch
                record is used (so the end-of-run diagnosis can compare train and validation).
            val: validation metrics.
            lr: the learning rate of the epoch.
            stats: ``lossdiag.Metrics(...).compute()`` of the validation data (enables the
                collapse alarm and the statistics-based findings of the final diagnosis).
        """
        e = _scalar(epoch, "epoch")
        if e is None or not math.isfinite(e):
            raise ValueError(f"epoch: must be a finite number, got {epoch!r}")
        tr = _numbers(train, "train")
        va = _numbers(val, "val")
        lrv = _scalar(lr, "lr")
        if stats is not None and not isinstance(stats, Mapping):
            raise TypeError("stats: expected the dict of lossdiag.Metrics(...).compute(), got "
                            f"{type(stats).__name__}")
        if self._step_n and _main_loss_name(tr) is None:
            # no training loss given: the mean of the step losses since the last epoch record
            tr["loss"] = self._step_sum / self._step_n
        self._step_sum, self._step_n = 0.0, 0
        # the history validates and stores first: a bad record raises before any alarm
        self.history.log(e, train=tr or None, val=va or None, lr=lrv, stats=stats)
        if lrv is not None and (self._lr is None or self._lr_unit == "epoch"):
            self._lr, self._lr_unit = (e, lrv), "epoch"
        new: list[Finding] = []
        for split, d in (("train", tr), ("val", va)):
            main = _main_loss_name(d)
            for k, v in d.items():
                if v is None or not is_loss_name(k):
                    continue
                key = f"{split}/{normalize_metric_name(k)}"
                if not math.isfinite(v):
                    new += self._nonfinite("epoch", key, e, v)
                elif k == main:
                    new += self._loss_point("epoch", key, e, v)
        if stats is not None:
            new += self._collapse(e, stats)
        return self._emit(new)

    @classmethod
    def replay(cls, history: History, **kwargs: Any) -> Monitor:
        """Feed a finished run's records through a new Monitor, in the order they were logged.

        Step records of an epoch come before that epoch's record (Lightning and Hugging Face log
        in that order); without epoch numbers on the steps, all steps come first. Returns the
        Monitor; its ``alarms`` are what it would have raised live.

        >>> from lossdiag.history import History
        >>> h = History.from_arrays(range(8), train={"loss": [2.0, 1.5, 1.2, 1.0, 0.9, 0.85,
        ...                                                   float("nan"), float("nan")]})
        >>> [(a.code, a.start) for a in Monitor.replay(h).alarms]
        [('non-finite', 6.0)]
        """
        if not isinstance(history, History):
            raise TypeError(f"history: expected a lossdiag History, got {type(history).__name__}")
        kwargs.setdefault("num_classes", history.num_classes)
        kwargs.setdefault("source", history.source)
        mon = cls(**kwargs)
        for kind, x, payload in _records(history):
            if kind == "step":
                mon.step(x, **payload)
            else:
                mon.epoch(x, **payload)
        return mon

    # -- detectors ------------------------------------------------------------------------------
    def _track(self, unit: str, key: str) -> _Track:
        t = self._tracks.get((unit, key))
        if t is None:
            t = self._tracks[(unit, key)] = _Track(key, unit, self.thresholds)
        return t

    def _loss_point(self, unit: str, key: str, x: float, y: float) -> list[Finding]:
        if not math.isfinite(y):
            return self._nonfinite(unit, key, x, y)
        out: list[Finding] = []
        th = self.thresholds
        self._calm("non-finite", "any", key)
        t = self._track(unit, key)
        # a validation loss is judged for spikes and divergence only without a training loss:
        # its rise while the training loss falls is overfitting, and a single bad evaluation
        # (BatchNorm statistics, a sharp minimum) is not the optimisation breaking
        judge = not key.startswith("val/") or not any(
            k[1].startswith("train/") for k in self._tracks)
        # a spike during a divergence (on any curve) is part of it
        sp = None if not judge or ("diverging", "lr-too-high") in self._active else t.spike(y)
        t.add(x, y)
        rise = th.diverge_rise if not key.startswith("val/") else th.val_only_rise
        dv = t.divergence(rise) if judge else None
        if dv is not None:
            out += self._fire("diverging", "lr-too-high", key, lambda: self._diverge_finding(
                unit, key, x, dv))
        elif t.recovered(rise):
            self._calm("diverging", "lr-too-high", key)
        if sp is not None and not out:  # the divergence, when both fire, says more
            out += self._fire("diverging", "loss-spike", key, lambda: self._spike_finding(
                unit, key, x, sp))
        elif sp is None:
            self._calm("diverging", "loss-spike", key)
        return out

    def _nonfinite(self, unit: str, key: str, x: float, y: float) -> list[Finding]:
        return self._fire("non-finite", "any", key,
                          lambda: self._nonfinite_finding(unit, key, x, y))

    def _grad_point(self, x: float, g: float) -> list[Finding]:
        gt = self._grad
        out: list[Finding] = []
        if not math.isfinite(g):
            if gt.nonfinite_run == 0:
                gt.first_nonfinite = x
            gt.nonfinite_run += 1
            if gt.nonfinite_run >= self._grad_nf_steps:
                out += self._fire("non-finite", "any", "grad_norm", lambda: (
                    self._grad_nonfinite_finding(x, g)))
            return out
        gt.nonfinite_run = 0
        self._calm("non-finite", "any", "grad_norm")
        gt.add(x, g)
        self._grad_last = g
        ex = gt.explosion()
        if ex is not None:
            out += self._fire("diverging", "gradient-explosion", "grad_norm",
                              lambda: self._grad_finding(x, ex))
        elif ("diverging", "gradient-explosion") in self._active:
            base = gt.baseline()
            if base is None or g < math.sqrt(self.thresholds.grad_ratio) * base:
                self._calm("diverging", "gradient-explosion", "grad_norm")
        return out

    def _collapse(self, x: float, stats: Mapping[str, Any]) -> list[Finding]:
        counts = _class_counts(stats)
        if counts is None:
            return []
        true_n, pred_n, tp = counts
        c = int(np.argmax(pred_n))
        others = [i for i in range(len(true_n)) if i != c and true_n[i] > 0]
        if not others:
            return []
        n_other = float(true_n[others].sum())
        # samples of the other classes predicted as c: all predictions of c but its own
        swallowed = float(pred_n[c] - tp[c]) / n_other
        if swallowed >= self.thresholds.collapse_share:
            if self._collapse_run == 0:
                self._collapse_first = x
            self._collapse_run += 1
        else:
            self._collapse_run = 0
            self._calm("stuck", "majority-collapse", "stats")
            return []
        if self._collapse_run < self.thresholds.collapse_epochs:
            return []
        total = float(true_n.sum())
        recall = np.divide(tp, true_n, out=np.full(len(true_n), np.nan), where=true_n > 0)
        ev = {"predicted_class": c, "pred_share": float(pred_n[c] / total),
              "label_share": float(true_n[c] / total), "swallowed": swallowed,
              "minority_recall": float(np.nanmean(recall[others])),
              "since": float(self._collapse_first if self._collapse_first is not None else x),
              "evaluations": self._collapse_run, "label_freq": true_n / total}
        if "balanced_accuracy" in stats:
            ev["balanced_accuracy"] = float(stats["balanced_accuracy"])
        return self._fire("stuck", "majority-collapse", "stats",
                          lambda: self._collapse_finding(x, ev))

    # -- episodes -------------------------------------------------------------------------------
    def _fire(self, code: str, cause: str, key: str,
              make: Callable[[], Finding]) -> list[Finding]:
        ep = self._active.get((code, cause))
        if ep is not None:
            ep["calm"] = 0 if ep["key"] == key else ep["calm"]
            return []
        f = make()
        self._active[(code, cause)] = {"key": key, "calm": 0}
        return [f]

    def _calm(self, code: str, cause: str, key: str) -> None:
        ep = self._active.get((code, cause))
        if ep is None or ep["key"] != key:
            return
        ep["calm"] += 1
        if ep["calm"] >= self.thresholds.rearm_points:
            del self._active[(code, cause)]

    def _emit(self, new: list[Finding]) -> list[Finding]:
        for f in new:
            self.alarms.append(f)
            if self.stop_reason is None and f.code in self.stop_on:
                self.stop_reason = f
            for cb in self._on_alarm:
                cb(f)
        return new

    # -- findings ----------------------------------------------------------------------------
    def _lr_at(self) -> float | None:
        return None if self._lr is None else self._lr[1]

    def _lr_rec(self, factor: float, why: str) -> Any:
        from .diagnosis.report import Recommendation

        lr = self._lr_at()
        mag = f"~{_fmt(factor)}x smaller" + (
            f": from {_fmt(lr)} to about {_fmt(lr / factor, 2)}" if lr is not None else "")
        return Recommendation("Lower the learning rate", mag, why)

    def _clip_rec(self, why: str, before: float | None = None) -> Any:
        from .diagnosis.report import Recommendation

        base = self._grad_baseline(before)
        if base is not None:
            mag = (f"max_norm about {_fmt(2 * base, 2)} (2x this run's median gradient norm "
                   f"{_fmt(base)}): clip_grad_norm_ / Lightning gradient_clip_val / HF "
                   "max_grad_norm / Keras clipnorm")
        else:
            mag = ("clip_grad_norm_(params, max_norm=1.0) / Lightning gradient_clip_val=1.0 / "
                   "HF max_grad_norm=1.0 / Keras clipnorm=1.0")
        return Recommendation("Clip gradients", mag, why)

    def _grad_baseline(self, before: float | None = None) -> float | None:
        """Median gradient norm of the steps before ``before`` (None with too few)."""
        x = np.asarray(self._grad.x, dtype=np.float64)
        g = np.asarray(self._grad.g, dtype=np.float64)
        ok = np.isfinite(g) & (g > 0)
        if before is not None:
            ok &= x < before
        if ok.sum() < self.thresholds.warmup:
            return None
        return float(np.median(g[ok]))

    def _nonfinite_finding(self, unit: str, key: str, x: float, y: float) -> Finding:
        from .diagnosis.report import Finding, Recommendation

        kind = "NaN" if math.isnan(y) else ("+inf" if y > 0 else "-inf")
        t = self._tracks.get((unit, key))
        ev: dict[str, Any] = {"first_at": x, "column": key, "value": kind}
        if self._epoch_of_step is not None and unit == "step":
            ev["epoch"] = self._epoch_of_step
        rise = None
        if t is not None and t.last_finite is not None:
            ev["last_finite"] = t.last_finite
            ev["last_finite_at"] = t.last_finite_x
            if t.min_finite is not None and t.min_finite > 0:
                rise = t.last_finite / t.min_finite
                ev["min_before"] = t.min_finite
                ev["rise_before"] = rise
        lr = self._lr_at()
        if lr is not None:
            ev["lr"] = lr
        if self._grad_last is not None:
            ev["last_grad_norm"] = self._grad_last
        grew = rise is not None and rise >= self.thresholds.diverge_rise
        div = self._active.get(("diverging", "lr-too-high")) is not None
        exploded = grew or div
        where = f"{unit} {_xtxt(x)}" + (
            f" (epoch {_xtxt(ev['epoch'])})" if "epoch" in ev else "")
        if exploded:
            expl = (f"'{key}' became {kind} at {where}. Before that it had grown from "
                    f"{_fmt(ev.get('min_before'))} to {_fmt(ev.get('last_finite'))}"
                    + (f" ({_fmt(rise)}x)" if rise is not None else "")
                    + ": the weights ran away until the numbers overflowed. Every later value "
                    "is meaningless; restart from a checkpoint before the growth with the "
                    "learning rate lowered.")
            before = t.min_x if t is not None and unit == "step" else None
            recs = [self._lr_rec(10, "the loss was growing before it overflowed"),
                    self._clip_rec("bounds each update when the gradient spikes", before),
                    Recommendation("Restart from the last checkpoint before the growth",
                                   f"before {unit} {_xtxt(t.min_x if t and t.min_x else x)}",
                                   "the weights after the overflow are NaN")]
            cause = "overflow-after-divergence"
        else:
            prev = (f" (it was {_fmt(ev['last_finite'])} at {unit} "
                    f"{_xtxt(ev['last_finite_at'])})" if "last_finite" in ev else "")
            expl = (f"'{key}' became {kind} at {where}{prev} without growing first. A sudden "
                    "NaN/inf usually comes from the numbers, not the optimisation: log(0) in a "
                    "hand-written loss, a division by zero, a NaN or inf in an input batch or "
                    "label, or float16 overflow without loss scaling.")
            recs = [Recommendation("Compute the loss from logits", "CrossEntropyLoss / "
                                   "from_logits=True / lossdiag.cross_entropy on logits",
                                   "a fused log-softmax never takes log(0)"),
                    Recommendation("Check the inputs and labels of the failing batch",
                                   f"the batch of {unit} {_xtxt(x)}: assert "
                                   "torch.isfinite(x).all(); labels in [0, C)",
                                   "one bad sample is enough to poison the weights"),
                    Recommendation("Use loss scaling or bfloat16 under mixed precision",
                                   "torch.amp.GradScaler()", "float16 overflows above 65504"),
                    self._lr_rec(3, "limits the damage of a spike")]
            cause = "sudden"
        return Finding("non-finite", "error", f"loss became {kind}", x, x, expl, ev, recs,
                       cause=cause, unit=unit, series=[key])

    def _grad_nonfinite_finding(self, x: float, g: float) -> Finding:
        from .diagnosis.report import Finding, Recommendation

        kind = "NaN" if math.isnan(g) else "inf"
        gt = self._grad
        x0 = gt.first_nonfinite if gt.first_nonfinite is not None else x
        ev: dict[str, Any] = {"first_at": x0, "column": "grad_norm", "value": kind,
                              "steps_in_a_row": gt.nonfinite_run}
        if self._grad_last is not None:
            ev["last_finite_grad_norm"] = self._grad_last
        lr = self._lr_at()
        if lr is not None:
            ev["lr"] = lr
        scaled = (" Under loss scaling a few overflowing steps are normal (the scaler skips "
                  f"them); {gt.nonfinite_run} in a row are not." if self.loss_scaling else "")
        expl = (f"The gradient norm became {kind} at step {_xtxt(x0)}"
                + (f" (it was {_fmt(self._grad_last)} before)" if self._grad_last else "")
                + ": the backward pass produced NaN/inf, so the next optimizer step writes "
                "NaN into the weights (a NaN total norm also turns clipped gradients into NaN)."
                + scaled)
        recs = [Recommendation("Find the operation that overflows",
                               "torch.autograd.set_detect_anomaly(True) for a few steps",
                               "names the first backward op that returns NaN"),
                self._clip_rec("clipping with a finite norm bounds the update", x0),
                Recommendation("Use bfloat16 or loss scaling under mixed precision",
                               "torch.amp.GradScaler()", "float16 gradients overflow above "
                               "65504"),
                self._lr_rec(3, "large updates make overflowing activations likely")]
        return Finding("non-finite", "error", f"gradient norm became {kind}", x0, x, expl, ev,
                       recs, cause="sudden", unit="step", series=["train/grad_norm"])

    def _spike_finding(self, unit: str, key: str, x: float, sp: dict[str, Any]) -> Finding:
        from .diagnosis.report import Finding, Recommendation

        ev = dict(sp)
        lr = self._lr_at()
        if lr is not None:
            ev["lr"] = lr
        if self._grad_last is not None:
            ev["grad_norm"] = self._grad_last
        noise = sp["noise_sigma_log"] if math.isfinite(sp["noise_sigma_log"]) else 0.0
        expl = (f"'{key}' jumped to {_fmt(sp['value'])} at {unit} {_xtxt(x)}: "
                f"{_fmt(sp['ratio'])}x its running level {_fmt(sp['running_level'])}, "
                f"{_fmt(sp['sigmas'])} noise sigmas out (the curve's own noise is about "
                f"{_pct(noise)} per {unit}), and above where the run started "
                f"({_fmt(sp['start_level'])}): one update undid the progress of the run. Single "
                "steps this large come from an update that overshoots (learning rate too high "
                "for the curvature met here, often after a warm-up ends) or from a bad batch.")
        recs = [self._clip_rec("a spike is one oversized update; clipping bounds it",
                               x if unit == "step" else None),
                self._lr_rec(3, "if spikes repeat, the learning rate is at the edge of "
                                "stability"),
                Recommendation("Check the batch of this step", f"{unit} {_xtxt(x)}: labels, "
                               "NaN/inf or extreme inputs", "a corrupted batch gives one huge "
                               "loss")]
        return Finding("diverging", "warning",
                       f"loss spiked to {_fmt(sp['value'])} ({_fmt(sp['ratio'])}x its level)",
                       x, x, expl, ev, recs, cause="loss-spike", unit=unit, series=[key])

    def _diverge_finding(self, unit: str, key: str, x: float, dv: dict[str, Any]) -> Finding:
        from .diagnosis.report import Finding, Recommendation

        ev: dict[str, Any] = {"series": key, **dv}
        ev[f"growth_per_{unit}"] = ev.pop("growth")
        lr = self._lr_at()
        if lr is not None:
            ev["lr"] = lr
        g = ev[f"growth_per_{unit}"]
        rate = f", x{_fmt(g)} per {unit} on a fit of log-loss" if math.isfinite(g) and g > 1 \
            else ""
        explosion = dv["model"] == "explosion"
        what = "exploded" if explosion else "grew"
        peak_rise = dv["peak"] / dv["loss_at_start"] if dv["loss_at_start"] > 0 else math.inf
        ev["peak_rise"] = peak_rise
        shown = peak_rise if explosion else dv["rise"]
        # violent growth (doubling per step, 100x per epoch, 1000x overall) needs a 100x cut
        big = peak_rise >= 1000 or (math.isfinite(g) and g >= (2.0 if unit == "step" else 100.0))
        t = self._tracks.get((unit, key))
        at_start = t is not None and dv["start"] == t.first_x
        expl = (f"'{key}' reached {_fmt(dv['loss_at_start'])} at {unit} {_xtxt(dv['start'])} "
                f"and then {what} to {_fmt(dv['last'])} at {unit} {_xtxt(x)} "
                f"({_fmt(peak_rise)}x at its peak; smoothed level {_fmt(dv['rise'])}x its "
                f"minimum{rate}"
                + (f"; rank correlation with time {_fmt(dv['consistency'], 2)}"
                   if math.isfinite(dv["consistency"]) else "") + "). "
                + ("The loss never went down: the very first updates overshoot. "
                   if at_start else "")
                + "A steadily amplifying loss is the signature of updates that overshoot: with "
                "a learning rate too large for the curvature of the loss, each step lands "
                "further up the opposite wall of the valley, the gradients grow, and the next "
                "step overshoots more. It will not recover on its own.")
        before = dv["start"] if unit == "step" else None
        recs = [self._lr_rec(100 if big else 10, f"the loss grew {_fmt(shown)}x"
                             + (f" ({rate[2:]})" if rate else "")
                             + ("; growth this fast needs 100x" if big else "")),
                self._clip_rec("bounds the size of each update", before),
                Recommendation("Warm the learning rate up", "linear warm-up over the first ~5% "
                               "of steps", "early large gradients are the most likely to "
                               "overshoot")]
        if at_start:
            recs.append(Recommendation("Restart the run", "from the initial weights, with the "
                                       "lower learning rate", "no checkpoint of this run is "
                                       "better than its start"))
        else:
            recs.append(Recommendation("Restart from a checkpoint before the growth",
                                       f"before {unit} {_xtxt(dv['start'])}",
                                       "the weights have been thrown far from the valley"))
        return Finding("diverging", "error",
                       f"loss {what} {_fmt(shown)}x from {unit} {_xtxt(dv['start'])}",
                       dv["start"], x, expl, ev, recs, cause="lr-too-high", unit=unit,
                       series=[key])

    def _grad_finding(self, x: float, ex: dict[str, Any]) -> Finding:
        from .diagnosis.report import Finding, Recommendation

        ev = dict(ex)
        lr = self._lr_at()
        if lr is not None:
            ev["lr"] = lr
        k = self.thresholds.grad_points
        what = (f"The last {k} gradient norms are all at least {_fmt(ex['lowest_recent'])} "
                f"(median {_fmt(ex['grad_norm'])}), {_fmt(ex['ratio'])}x the typical level "
                f"{_fmt(ex['baseline'])} of the steps before and {_fmt(ex['sigmas'])} sigmas "
                "of its own step-to-step spread.")
        expl = (what + " Gradients that stay an order of magnitude larger mean the weights "
                "entered a steep region (exploding activations, a learning rate too high for "
                "this depth); the loss usually follows within a few steps.")
        recs = [Recommendation("Clip gradients", f"max_norm about {_fmt(2 * ex['baseline'], 2)} "
                               "(2x the earlier median gradient norm)",
                               "keeps updates at the size that was working"),
                self._lr_rec(10, "a sustained rise of the gradient norm is an LR too high for "
                                 "the curvature reached"),
                Recommendation("Check normalisation and initialisation", "LayerNorm/BatchNorm "
                               "in deep stacks; residual branches scaled down at init",
                               "unnormalised deep networks amplify gradients")]
        return Finding("diverging", "warning",
                       f"gradient norm exploded ({_fmt(ex['ratio'])}x its level)", ex["since"],
                       x, expl, ev, recs, cause="gradient-explosion", unit="step",
                       series=["train/grad_norm"])

    def _collapse_finding(self, x: float, ev: dict[str, Any]) -> Finding:
        from .diagnosis.report import Finding, Recommendation

        c = ev["predicted_class"]
        freq = np.asarray(ev["label_freq"], dtype=np.float64)
        present = freq > 0
        w = np.zeros_like(freq)
        w[present] = 1.0 / (present.sum() * freq[present])
        ev["class_weights"] = w
        wt = "{" + ", ".join(f"{i}: {w[i]:.3g}" for i in range(len(w))) + "}"
        expl = (f"At epoch {_xtxt(x)} the model predicts class {c} for {_pct(ev['pred_share'])} "
                f"of the validation samples although it is {_pct(ev['label_share'])} of the "
                f"labels: {_pct(ev['swallowed'])} of the samples of all other classes are "
                f"called {c} (their mean recall is {_pct(ev['minority_recall'])}), for "
                f"{ev['evaluations']} evaluations in a row since epoch {_xtxt(ev['since'])}. "
                "The network has collapsed to a constant answer: the cheapest way down an "
                "imbalanced cross-entropy, or the aftermath of an update that killed the "
                "features (dead ReLUs after a learning rate too high).")
        recs = [Recommendation("Weight the loss by class", f"balanced weights 1/(C*f_c): {wt}",
                               "each class then contributes equally to the gradient; "
                               "CrossEntropyLoss(weight=...) / Keras class_weight"),
                self._lr_rec(10, "if the collapse followed a spike or a divergence"),
                Recommendation("Resample the training set", "WeightedRandomSampler with weight "
                               "1/f_c per sample", "balanced batches"),
                Recommendation("Track balanced accuracy / macro-F1 / mIoU", "not plain accuracy",
                               "plain accuracy rewards the collapse")]
        return Finding("stuck", "warning",
                       f"the model predicts class {c} for {_pct(ev['pred_share'])} of samples",
                       ev["since"], x, expl, ev, recs, cause="majority-collapse", unit="epoch",
                       series=[])

    # -- end of run -----------------------------------------------------------------------------
    def diagnose(self, **kwargs: Any) -> Diagnosis:
        """Full :func:`lossdiag.diagnose` of the history, plus the alarms it does not report.

        An alarm whose code the diagnosis also found is left to the diagnosis (it read the whole
        curve); the others (a collapse seen in the statistics, a gradient-norm explosion, a
        spike the run recovered from) are added, and a note lists every live alarm.
        """
        from .diagnosis import diagnose
        from .diagnosis.report import SEVERITIES, Diagnosis

        kwargs.setdefault("num_classes", self.num_classes)
        d = diagnose(self.history, **kwargs)
        found = {f.code for f in d.findings}
        extra = [a for a in self.alarms if a.code not in found]
        seen: set[tuple[str, str | None]] = set()
        uniq = []
        for a in extra:  # one per (code, cause): the first episode carries the evidence
            if (a.code, a.cause) not in seen:
                seen.add((a.code, a.cause))
                uniq.append(self._in_unit(a, d.summary.get("unit", "epoch")))
        notes = list(d.notes)
        if self.alarms:
            notes.append("lossdiag.Monitor raised during training: " + "; ".join(
                f"{a.code} ({a.cause}) at {a.unit} {_xtxt(a.end)}" for a in self.alarms))
        if not uniq and len(notes) == len(d.notes):
            return d
        findings = list(d.findings) + uniq
        summary = dict(d.summary)
        summary["counts"] = {s: sum(f.severity == s for f in findings) for s in SEVERITIES}
        summary["live_alarms"] = len(self.alarms)
        return Diagnosis(findings, d.skipped, notes, summary, getattr(d, "_view", None))

    def _in_unit(self, f: Finding, unit: str) -> Finding:
        """The alarm with its span in the diagnosis' unit (epochs <-> steps through the epoch of
        each step record), so that the report shades it where it happened."""
        from dataclasses import replace as _replace

        if f.unit == unit or not self.history.has_steps:
            return f
        steps = self.history.steps
        eps = self.history.step_epochs
        ok = np.isfinite(eps)
        if not ok.any():
            return f
        steps, eps = steps[ok], eps[ok]
        if f.unit == "step" and unit == "epoch":
            def conv(v: float) -> float:
                i = int(np.searchsorted(steps, v, side="right")) - 1
                return float(eps[max(i, 0)])
        elif f.unit == "epoch" and unit == "step":
            def conv(v: float) -> float:
                i = int(np.searchsorted(eps, v, side="right")) - 1
                return float(steps[max(i, 0)])
        else:
            return f
        ev = dict(f.evidence)
        ev[f"{f.unit}s"] = [f.start, f.end]
        return _replace(f, start=conv(f.start), end=conv(f.end), unit=unit, evidence=ev)

    def write_report(self, log_dir: str | os.PathLike[str], *,
                     diagnosis: Diagnosis | None = None) -> dict[str, Path]:
        """Write ``report.html``, ``report.json`` and ``history.json`` into ``log_dir``.

        Returns ``{"html": path, "json": path, "history": path}``. The history file is lossdiag's
        own format: ``lossdiag diagnose history.json`` re-reads it.
        """
        d = self.diagnose() if diagnosis is None else diagnosis
        out = Path(log_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"html": out / "report.html", "json": out / "report.json",
                 "history": out / "history.json"}
        d.to_html(paths["html"])
        d.to_json(paths["json"])
        self.history.to_json(paths["history"], stats_keys=_JSON_STATS_KEYS)
        return paths


_SCALAR_STATS = ("loss", "accuracy", "balanced_accuracy", "mean_iou", "mean_dice", "kappa",
                 "ece", "mce", "mean_true_class_prob", "frac_true_prob_below_inv_e",
                 "mean_entropy", "small_margin_correct_frac", "mean_iou_imagewise",
                 "mean_dice_imagewise", "nonfinite")
_PER_CLASS = ("iou", "dice", "precision", "recall", "pred_freq")


def scalars(stats: Mapping[str, Any], *, prefix: str = "", per_class: bool = False,
            loss_key: str = "loss") -> dict[str, float]:
    """The scalar metrics of a ``lossdiag.Metrics(...).compute()`` dict, as plain floats.

    What loggers take (``LightningModule.log_dict``, a Hugging Face ``compute_metrics``,
    TensorBoard): loss, accuracy, ``top{k}_accuracy`` for each extra k, balanced accuracy, mIoU,
    mDice, kappa, ECE, MCE, mean true-class probability, share of true-class probabilities below
    1/e, mean entropy, small-margin share, the image-wise means when accumulated, and the number
    of non-finite logits rows. ``per_class=True`` adds ``iou_{c}``, ``dice_{c}``,
    ``precision_{c}``, ``recall_{c}`` and ``pred_freq_{c}``. ``loss_key`` renames the loss (the
    Hugging Face adapter uses ``"cross_entropy"`` so that the Trainer's own ``eval_loss`` is
    kept).

    >>> import numpy as np, lossdiag
    >>> m = lossdiag.Metrics(2)
    >>> _ = m.update(np.array([[2.0, 0.0], [0.0, 1.0]], np.float32), np.array([0, 0]))
    >>> s = scalars(m.compute(), prefix="val_")
    >>> s["val_accuracy"], s["val_balanced_accuracy"]
    (0.5, 0.5)
    """
    if not isinstance(stats, Mapping):
        raise TypeError(f"stats: expected the dict of Metrics.compute(), got {type(stats)}")
    if not isinstance(prefix, str) or not isinstance(loss_key, str) or not loss_key:
        raise TypeError("prefix and loss_key must be strings (loss_key non-empty)")
    out: dict[str, float] = {}
    for k in _SCALAR_STATS:
        if k in stats and stats[k] is not None:
            out[prefix + (loss_key if k == "loss" else k)] = float(stats[k])
    for k, v in (stats.get("top_k_accuracy") or {}).items():
        if int(k) != 1:
            out[f"{prefix}top{int(k)}_accuracy"] = float(v)
    if per_class:
        for k in _PER_CLASS:
            if stats.get(k) is not None:
                for c, v in enumerate(np.asarray(stats[k], dtype=np.float64).tolist()):
                    out[f"{prefix}{k}_{c}"] = float(v)
    return out


# statistics kept in history.json: the per-class vectors and scalars, not the histograms
_JSON_STATS_KEYS = ("loss", "accuracy", "balanced_accuracy", "mean_iou", "mean_dice", "kappa",
                    "ece", "mce", "mean_true_class_prob", "frac_true_prob_below_inv_e",
                    "mean_entropy", "label_freq", "pred_freq", "recall", "precision", "iou",
                    "confusion", "count", "num_classes", "reliability", "conf_hist",
                    "true_prob_hist", "bin_edges")


def _class_counts(stats: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per class: labels, predictions, true positives (counts, or shares of one total) from a
    ``Metrics.compute()`` dict: its confusion matrix, or (above 1024 classes, where it is not
    kept) its label and prediction frequencies and recalls."""
    cm = stats.get("confusion")
    if cm is not None:
        cm = np.asarray(cm, dtype=np.float64)
        if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] < 2 or cm.sum() <= 0:
            return None
        return cm.sum(axis=1), cm.sum(axis=0), np.diag(cm).copy()
    try:
        lf = np.asarray(stats["label_freq"], np.float64)
        pf = np.asarray(stats["pred_freq"], np.float64)
        rec = np.asarray(stats["recall"], np.float64)
    except (KeyError, TypeError, ValueError):
        return None
    if lf.ndim != 1 or lf.shape != pf.shape or lf.shape != rec.shape or lf.size < 2 \
            or not np.all(np.isfinite(lf)) or not np.all(np.isfinite(pf)):
        return None
    return lf, pf, np.where(lf > 0, np.nan_to_num(rec) * lf, 0.0)


def _check_codes(stop_on: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(stop_on, str):
        stop_on = (stop_on,)
    try:
        codes = tuple(stop_on)
    except TypeError:
        raise TypeError(f"stop_on: expected finding codes, got {stop_on!r}") from None
    for c in codes:
        if c not in _CODES:
            raise ValueError(f"stop_on: unknown finding code {c!r} (one of {', '.join(_CODES)})")
    return codes


def _numbers(d: Mapping[str, Any] | None, name: str) -> dict[str, float | None]:
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise TypeError(f"{name}: expected a dict of metric values, got {type(d).__name__}")
    out = {}
    for k, v in d.items():
        if not isinstance(k, str) or not k:
            raise TypeError(f"{name}: metric names must be non-empty strings, got {k!r}")
        out[k] = _scalar(v, f"{name}[{k!r}]")
    return out


def _main_loss_name(d: Mapping[str, Any]) -> str | None:
    """The split's loss whose curve is judged: the one named 'loss', else the first loss-like
    name (``nll``, ``dice_loss``...)."""
    names = [k for k in d if is_loss_name(k)]
    for k in names:
        if normalize_metric_name(k) == "loss":
            return k
    return names[0] if names else None


def _records(h: History) -> list[tuple[str, float, dict[str, Any]]]:
    """A history's step and epoch records in logging order (see Monitor.replay)."""
    recs: list[tuple[tuple[float, int, float], str, float, dict[str, Any]]] = []
    if h.has_steps:
        xs = h.steps
        eps = h.step_epochs
        cols = {k: h.column(k, "step") for k in h.keys("step")}
        no_epochs = bool(np.isnan(eps).all())
        for i, x in enumerate(xs.tolist()):
            p: dict[str, Any] = {}
            for k, (_, v, pr) in cols.items():
                if not pr[i]:
                    continue
                if k == "lr":
                    p["lr"] = float(v[i])
                elif k == "train/loss":
                    p["loss"] = float(v[i])
                elif k == "train/grad_norm":
                    p["grad_norm"] = float(v[i])
                elif k.startswith("train/"):
                    p[k[len("train/"):]] = float(v[i])
            if not p:
                continue
            e = float(eps[i]) if not math.isnan(eps[i]) else None
            if e is not None:
                p["epoch"] = e
            order = (-math.inf if no_epochs else (e if e is not None else -math.inf), 0, x)
            recs.append((order, "step", x, p))
    if len(h):
        xe = h.epochs
        cols = {k: h.column(k, "epoch") for k in h.keys("epoch")}
        stats = h.stats
        for i, x in enumerate(xe.tolist()):
            p = {"train": {}, "val": {}}
            for k, (_, v, pr) in cols.items():
                if not pr[i]:
                    continue
                if k == "lr":
                    p["lr"] = float(v[i])
                else:
                    split, _, name = k.partition("/")
                    if split in ("train", "val"):
                        p[split][name] = float(v[i])
            if stats[i] is not None:
                p["stats"] = stats[i]
            recs.append(((x, 1, float(i)), "epoch", x, p))
    recs.sort(key=lambda r: r[0])
    return [(kind, x, p) for _, kind, x, p in recs]

