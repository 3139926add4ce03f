"""``slow-tail``: the late loss decreases nearly linearly or ever more slowly.

After the fast early phase, in which the model learns the dominant features, the gradients
get shallow and each epoch buys less (seed 000: diminishing returns, not a bug).  The tail is
fitted with a straight line, an exponential approach to an asymptote and a power law; the best
fit projects the gain of continuing for K more epochs.

>>> import numpy as np
>>> from lossdiag.history import History
>>> from lossdiag.diagnosis import diagnose
>>> e = np.arange(50)
>>> h = History.from_arrays(e, train={"loss": 1.2 / np.sqrt(1 + e)})
>>> f = diagnose(h).get("slow-tail")
>>> f.evidence["best_fit"]
'power-law'
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._stats import (
    RunView,
    SkipCheck,
    fit_tail,
    fmt,
    linfit,
    mad_sigma,
    pct,
    rel_noise,
    running_median,
    smooth,
    spearman,
    theil_sen,
)
from .report import Finding, Recommendation

CODE = "slow-tail"


def _cut_after_steps(view: RunView, x: np.ndarray, y: np.ndarray, start: int) -> int:
    """Move the tail start after the last LR change / step-like drop inside it."""
    th = view.th
    if view.lr is not None and len(view.lr) >= 2:
        lx, ly = view.lr.x, view.lr.y
        changes = lx[1:][np.abs(np.diff(ly)) > 1e-3 * np.abs(ly[:-1]) + 1e-300]
        big = changes[(changes > x[start])]
        # smooth schedules (cosine, warm-up) change every epoch: only cut at rare steps
        if 0 < big.size <= 3:
            start = max(start, int(np.searchsorted(x, big[-1])))
    # step-like jumps (an unlogged LR step): a change far out of line with its neighbours
    d = np.diff(y)
    if len(d) >= 5:
        r = d - running_median(d, 5)
        s = mad_sigma(r)
        jumps = np.flatnonzero(np.abs(r) > np.maximum(8 * s, 0.02 * np.abs(y[1:]))) + 1
        jumps = jumps[jumps > start]
        if jumps.size:
            start = max(start, int(jumps[-1]))
    return min(start, len(x) - th.min_points) if len(x) - start < th.min_points else start


def check(view: RunView) -> list[Finding]:
    th = view.th
    # the validation loss is what continuing training is for; the training loss otherwise
    s = view.val_loss if view.val_loss is not None and len(view.val_loss) >= 4 \
        else view.main_loss()
    if s is None:
        raise SkipCheck("no loss curve")
    n = len(s)
    if n < 4:
        raise SkipCheck(f"only {n} loss values (need 4)")
    if "diverging" in view.found or view.found.get("stuck"):
        raise SkipCheck("the run diverges or is stuck")
    if view.nonfinite:
        raise SkipCheck("a loss became NaN/inf (see 'non-finite')")
    of = view.found.get("overfitting")
    if of and of.get("cause") == "val-loss-rising":
        raise SkipCheck("validation loss already rises: continuing is not worth it "
                        "(see 'overfitting')")
    if np.any(s.y <= 0):
        raise SkipCheck("loss values are not positive")
    if view.lr_finished(th.tail_lr_done):
        raise SkipCheck("the learning-rate schedule ran down to <= 5 % of its peak: the run "
                        "ended by design")
    u = view.unit
    x, y = s.x, s.y
    sm = smooth(y, th.smooth_window if n >= 3 * th.smooth_window else 3)
    sig = rel_noise(y)
    sig = sig if math.isfinite(sig) else 0.0
    # a straight line from start to end: no fast phase at all, and still going down
    whole_slope, _, whole_r2 = linfit(x, y)
    whole_rho = spearman(x, y)
    drop_all = (float(y[0]) - float(y[-1])) / float(y[0])
    # ... slowly: a few percent per point, not a fast healthy descent that happens to be straight
    per_point = drop_all / max(n - 1, 1)
    linear_run = (n <= 30 and whole_r2 >= th.tail_linear_r2 and whole_rho <= -0.8
                  and whole_slope < 0 and per_point <= 0.05
                  and drop_all >= max(0.03, 3 * sig))
    if n < 2 * th.min_points and not linear_run:
        return []
    k = max(th.min_points if n >= 2 * th.min_points else 4, int(math.ceil(th.tail_fraction * n)))
    start = _cut_after_steps(view, x, y, n - k) if not linear_run else 0
    if n - start < 4:
        return []
    tx, ty = x[start:], y[start:]
    t_level0, t_level1 = float(sm[start]), float(sm[-1])
    drop = (t_level0 - t_level1) / t_level0
    tail_rho = spearman(tx, ty)
    if drop < th.tail_min_drop and not linear_run:
        return []
    if (t_level0 - t_level1) / t_level0 < 3 * sig * math.sqrt(2.0 / max(1, n - start)) \
            or tail_rho > -th.tail_min_consistency:
        return []
    slope, _ = theil_sen(tx, ty)
    level = float(np.median(ty))
    tail_rate = -slope / level
    h_end = max(2, n // 10)  # the steepest, early phase
    head_rate = (float(y[0]) - float(sm[h_end])) / float(y[0]) / max(float(x[h_end] - x[0]), 1e-9)
    ratio = tail_rate / head_rate if head_rate > 0 else math.inf
    _, _, r2 = linfit(tx, ty)
    diminishing = n >= th.tail_min_points and ratio <= th.tail_rate_ratio
    # or a long tail that is itself a straight line (the loss creeps down at a constant rate)
    linear_tail = n >= th.tail_min_points and len(tx) >= 8 and r2 >= th.tail_linear_r2
    if not (diminishing or linear_run or linear_tail) or tail_rate <= 0:
        return []
    # fit in time since the start of training (1-based) so that the power law is defined
    t_all = x - x[0] + 1.0
    fits = fit_tail(t_all[start:], ty)
    if linear_run:
        fits = [f for f in fits if f.kind == "linear"] or fits
    span_run = float(x[-1] - x[0])
    horizon = max(5.0, round(th.tail_horizon * span_run))
    t_end = float(t_all[-1])

    def projected_gain(f: Any) -> float:
        c = float(f.predict(t_end))
        return c - max(float(f.predict(t_end + horizon)), 0.0)

    # models the data cannot tell apart (AIC within 2): take the most conservative projection
    close = [f for f in fits if f.aic <= fits[0].aic + 2.0]
    best = min(close, key=projected_gain)
    cur = float(best.predict(t_end))
    fut = max(float(best.predict(t_end + horizon)), 0.0)
    gain = max(cur - fut, 0.0)
    rel_gain = gain / cur if cur > 0 else 0.0
    val_trend = None  # trend of the validation loss when the tail is read on training loss
    if view.val_loss is not None and len(view.val_loss) >= th.min_points and \
            view.val_loss is not s:
        vx, vy = view.val_loss.x, view.val_loss.y
        sel = vx >= tx[0]
        if sel.sum() >= 3:
            vs, _ = theil_sen(vx[sel], vy[sel])
            val_trend = vs / float(np.median(vy[sel]))
    sc = view.val_score if view.val_score is not None else view.train_score
    perfect = sc is not None and len(sc) > 0 and float(np.min(sc.y[sc.x >= tx[0] - 1e-9]
                                                         if np.any(sc.x >= tx[0] - 1e-9)
                                                         else sc.y[-1:])) >= 0.999
    worth = rel_gain >= th.tail_worth and (val_trend is None or val_trend < 0) and not perfect
    if not (linear_run or linear_tail or perfect) and rel_gain < th.tail_worth:
        return []  # an ever slower tail with little left to gain has converged
    ev: dict[str, Any] = {"series": s.key, "tail_start": float(tx[0]),
                          f"tail_rate_per_{u}": tail_rate, f"early_rate_per_{u}": head_rate,
                          "rate_ratio": ratio, "tail_linear_r2": r2, "best_fit": best.kind,
                          "fit_params": {k2: float(v) for k2, v in best.params.items()},
                          "horizon": horizon, "projected_loss": fut,
                          "projected_gain": rel_gain, "worth_continuing": worth}
    if val_trend is not None:
        ev[f"val_trend_per_{u}"] = val_trend
    shape = {"linear": "nearly straight line", "exponential":
             "exponential approach to an asymptote", "power-law": "power law (ever slower)"}
    expl = (f"Over the last {fmt(float(tx[-1] - tx[0]))} {u}s '{s.key}' still falls, from "
            f"{fmt(t_level0)} to {fmt(t_level1)}, but only {pct(tail_rate, 2)} per {u}, against "
            f"{pct(head_rate, 2)} per {u} early in training "
            f"({fmt(ratio, 2)}x the early rate). The tail is best described by a "
            f"{shape[best.kind]}"
            + (f" (asymptote {fmt(best.params['c'])})" if best.kind == "exponential" else "")
            + ". After the fast early phase, in which the model learns the dominant patterns, "
            "the gradient gets shallow and each epoch buys less: diminishing returns, not a "
            "malfunction. "
            f"Projected over the next {fmt(horizon)} {u}s: {fmt(cur)} -> {fmt(fut)} "
            f"(-{pct(rel_gain)}).")
    if perfect:
        assert sc is not None
        expl += (f" '{sc.key}' is already {float(sc.y[-1]):.3f}: every sample is classified "
                 "correctly, so the falling loss only measures growing confidence (on separable "
                 "data gradient descent keeps scaling the weights up, and the loss creeps "
                 "towards 0 without end). More epochs will not change a single prediction.")
        ev["score_already_perfect"] = True
    if val_trend is not None and val_trend >= 0:
        expl += " The validation loss is no longer improving, so the training gain would not "\
                "carry over."
    recs: list[Recommendation] = []
    if worth:
        recs.append(Recommendation("Keep training", f"~{fmt(horizon)} more {u}s -> about "
                                   f"{fmt(fut)} (-{pct(rel_gain)})",
                                   "the projected gain is still worth the time"))
    recs.append(Recommendation("Decay the learning rate", "cosine schedule to ~0, or x0.1 when "
                               "the loss plateaus (ReduceLROnPlateau(factor=0.1, patience=3))",
                               "a decay usually turns a slow tail into a quick drop"))
    if perfect:
        recs = [Recommendation("Stop here", "the score is already perfect",
                               "further epochs only sharpen the probabilities"),
                Recommendation("If calibrated probabilities matter, regularise",
                               "weight decay 1e-4 or label smoothing 0.1",
                               "keeps the weights (and the confidence) from growing without "
                               "end")]
    elif not worth:
        recs.append(Recommendation("Stop when the gain is too small", "EarlyStopping(monitor="
                                   f"'val_loss', min_delta={fmt(0.002 * level, 2)}, patience=5)",
                                   f"only -{pct(rel_gain)} expected over {fmt(horizon)} more "
                                   f"{u}s"))
    if best.kind == "power-law" and not perfect:
        recs.append(Recommendation("Use an adaptive optimizer or a larger LR",
                                   "Adam(lr=1e-3) / 3x larger LR",
                                   "a power-law tail is typical of plain gradient descent on "
                                   "(nearly) separable data"))
    view.found[CODE] = {"worth": worth}
    return [Finding(CODE, "info", "diminishing returns in the late loss", float(tx[0]),
                    float(tx[-1]), expl, ev, recs, cause=best.kind, unit=u, series=[s.key])]
