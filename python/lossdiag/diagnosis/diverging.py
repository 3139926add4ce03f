"""``diverging``: the loss grows (exponentially or steadily) after some point.

Reports the epoch the growth started, the growth rate per epoch (a straight-line fit of
log-loss), whether the loss rose above chance level ``ln C``, and a learning-rate cut computed
from the growth (seed 004: a learning rate too high makes the updates overshoot and amplify).

>>> import numpy as np
>>> from lossdiag.history import History
>>> from lossdiag.diagnosis import diagnose
>>> loss = [2.0, 1.2, 0.9, 0.8, 1.3, 2.9, 7.0, 16.0, 40.0, 95.0]
>>> f = diagnose(History.from_arrays(np.arange(10), train={"loss": loss}), num_classes=10).get(
...     "diverging")
>>> f.start, f.evidence["growth_model"], round(f.evidence["growth_per_epoch"], 1)
(3.0, 'exponential', 2.3)
"""

from __future__ import annotations

import math

import numpy as np

from ._stats import RunView, Series, SkipCheck, fmt, linfit, noise_sigma, smooth, spearman
from .report import Finding, Recommendation

CODE = "diverging"


def _window(n: int, w: int) -> int:
    if n >= 3 * w:
        return w
    return 3 if n >= 5 else 1


def _analyse(s: Series, view: RunView, *, val_only: bool) -> dict | None:
    th = view.th
    y = s.y
    x = s.x
    n = len(y)
    if n < 3 or np.any(y <= 0):
        return None
    sm = smooth(y, _window(n, th.smooth_window))
    # rise of the (persistent, smoothed) loss above the lowest value actually seen before it
    run_min = np.minimum(np.minimum.accumulate(sm), np.minimum.accumulate(y))
    ratio = sm / run_min
    j = int(np.argmax(ratio))
    i0 = int(np.argmin(sm[: j + 1]))
    lo, hi = max(0, i0 - 2), min(j, i0 + 2)
    i0 = lo + int(np.argmin(y[lo: hi + 1]))  # the raw minimum near the smoothed one
    peak_rise = float(ratio[j])
    end_rise = float(sm[-1] / sm[i0])
    seg = slice(i0, n)
    cons = spearman(x[seg], y[seg]) if n - i0 >= 3 else (1.0 if end_rise > 1 else 0.0)
    need = th.diverge_val_only_rise if val_only else th.diverge_min_rise
    # the rise must also stand out of the curve's own noise (measured on log-loss)
    sig_log = noise_sigma(np.log(y))
    noise_ok = not math.isfinite(sig_log) or math.log(end_rise) >= th.noise_sigmas * sig_log
    sustained = (end_rise >= need and cons >= th.diverge_min_consistency and noise_ok
                 and n - i0 >= min(th.min_points, n))
    spike = peak_rise >= max(th.diverge_spike_rise, need) and j - i0 >= 1
    if not (sustained or spike):
        return None
    # growth rate on the rising part (start .. peak, or .. end when still rising)
    stop = n - 1 if sustained else j
    gx, gy = x[i0: stop + 1], y[i0: stop + 1]
    slope, _, r2_log = linfit(gx, np.log(gy))
    lslope, _, r2_lin = linfit(gx, gy)
    growth = math.exp(slope) if math.isfinite(slope) else math.nan
    model = "exponential" if (r2_log >= r2_lin and (math.isnan(growth) or growth > 1.15)) \
        else "steady"
    return {"i0": i0, "j": j, "sm": sm, "peak_rise": peak_rise, "end_rise": end_rise,
            "consistency": cons, "growth": growth, "r2_log": r2_log, "r2_lin": r2_lin,
            "model": model, "slope_lin": lslope, "sustained": sustained}


def check(view: RunView) -> list[Finding]:
    th = view.th
    cands = [(s, False) for s in (view.train_loss,) if s is not None]
    if view.val_loss is not None:
        cands.append((view.val_loss, view.train_loss is not None))
    if not cands:
        raise SkipCheck("no loss curve")
    if all(len(s) < 3 for s, _ in cands):
        raise SkipCheck(f"only {max(len(s) for s, _ in cands)} finite loss value(s)")
    res = None
    for s, val_only in cands:
        res = _analyse(s, view, val_only=val_only)
        if res is not None and val_only and view.train_loss is not None:
            # validation loss rising while the training loss only falls is overfitting
            t = view.train_loss
            sel = t.x >= s.x[res["i0"]]
            ty = t.y[sel]
            t_rise = float(np.max(ty / np.minimum.accumulate(ty))) if ty.size else 1.0
            if sel.sum() >= 3 and spearman(t.x[sel], ty) < 0 and t_rise < th.diverge_min_rise:
                res = None
        if res is not None:
            break
    if res is None:
        return []
    x, y = s.x, s.y
    i0 = res["i0"]
    x0 = float(x[i0])
    peak_i = int(np.argmax(y[i0:])) + i0
    ev: dict[str, object] = {
        "series": s.key, "start": x0, "loss_at_start": float(y[i0]),
        "peak": float(y[peak_i]), "peak_at": float(x[peak_i]), "last": float(y[-1]),
        "rise": float(y[peak_i] / y[i0]),
        f"growth_per_{view.unit}": res["growth"],
        "growth_model": res["model"],
    }
    growth = res["growth"]
    chance = view.chance
    crossed = None
    if chance is not None:
        above = np.flatnonzero(y[i0:] > chance)
        ev["chance_level"] = chance
        if above.size:
            crossed = float(x[i0 + int(above[0])])
            ev["above_chance_from"] = crossed
    lr0 = view.lr_at(x0)
    warmup = False
    if lr0 is not None:
        ev["lr_at_start"] = lr0
        first_lr = float(view.lr.y[0]) if view.lr is not None else lr0
        warmup = first_lr < 0.7 * lr0
        if warmup:
            ev["lr_first"] = first_lr
    if view.nonfinite:
        ev["became_nonfinite_at"] = min(e[2] for e in view.nonfinite if e[1] == view.unit) \
            if any(e[1] == view.unit for e in view.nonfinite) else min(e[2] for e in view.nonfinite)
    big = math.isfinite(growth) and growth > th.diverge_big_growth
    factor = 100 if big else 10

    u = view.unit
    rate_txt = (f"x{fmt(growth)} per {u}" if math.isfinite(growth) else "")
    what = ("grew exponentially" if res["model"] == "exponential" else "grew steadily")
    parts = [f"'{s.key}' reached its lowest value {fmt(y[i0])} at {u} {fmt(x0)} and then {what}"
             f" to {fmt(y[peak_i])} at {u} {fmt(x[peak_i])} ({fmt(y[peak_i] / y[i0])}x"
             + (f", {rate_txt} on a straight-line fit of log-loss" if rate_txt else "") + ")."]
    if crossed is not None:
        parts.append(f"From {u} {fmt(crossed)} it is above the chance level ln C = "
                     f"{fmt(chance)}: worse than predicting every class with equal probability, "
                     "so the model is confidently wrong.")
    if not res["sustained"]:
        parts.append(f"It later came partly back down (last value {fmt(y[-1])}), but the "
                     "weights have been thrown far from where they were.")
    parts.append("A steadily amplifying loss is the signature of updates that overshoot: with a "
                 "learning rate too large for the curvature of the loss, each step lands "
                 "further up the opposite wall of the valley, the gradients grow, and the next "
                 "step overshoots more.")
    if warmup:
        parts.append(f"The learning rate was rising (from {fmt(ev['lr_first'])}) and the growth "
                     f"started when it reached {fmt(lr0)}: the run was stable below that value.")
    expl = " ".join(parts)
    recs = []
    if warmup and lr0 is not None:
        recs.append(Recommendation("Cap the peak learning rate below where the growth started",
                                   f"peak LR about {fmt(lr0 / 3, 2)} (the run diverged at "
                                   f"{fmt(lr0)})", "it was still stable at lower values"))
    mag = f"~{factor}x smaller" + (f": from {fmt(lr0)} to about {fmt(lr0 / factor, 2)}"
                                   if lr0 is not None else "")
    recs.append(Recommendation("Lower the learning rate", mag,
                               f"the loss grew {rate_txt or 'steadily'}"
                               + ("; growth this fast needs 100x" if big else "")))
    recs.append(Recommendation("Clip gradients", "clip_grad_norm_(params, max_norm=1.0) / Keras "
                               "clipnorm=1.0", "bounds the size of each update"))
    if not warmup:
        recs.append(Recommendation("Warm the learning rate up", "linear warm-up over the first "
                                   "~5% of steps (1-5 epochs)", "early large gradients are the "
                                   "most likely to overshoot"))
    recs.append(Recommendation("Prefer an adaptive optimizer or less momentum",
                               "Adam(lr=1e-3) or SGD momentum 0.9 -> 0.5",
                               "plain SGD with momentum is the most LR-sensitive"))
    ended_worse = y[-1] > y[0] or bool(view.nonfinite) or crossed is not None
    sev = "error" if ended_worse else "warning"
    end_x = float(x[-1]) if res["sustained"] else float(x[peak_i])
    if "became_nonfinite_at" in ev:
        end_x = max(end_x, float(ev["became_nonfinite_at"]))
    title = f"loss {what} from {u} {fmt(x0)}" + (f" ({rate_txt})" if rate_txt else "")
    view.found[CODE] = {"start": x0, "lr": lr0}
    return [Finding(CODE, sev, title, x0, end_x, expl, ev, recs, cause="lr-too-high",
                    unit=u, series=[s.key])]
