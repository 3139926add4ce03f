"""``diverging``: the loss grows, explodes in a spike it does not come back from, or is far
above chance level from its first record.

Three signatures, all judged on the training loss (a validation loss that rises while the
training loss falls is overfitting):

* growth - the smoothed loss rises from its lowest level, consistently (rank correlation with
  time) and by more than its own noise can explain; a slow steady rise of 1.3x over many epochs
  counts as much as an exponential blow-up;
* explosion - a jump to 10x or more of the level before it that does not come back down;
* above chance from the start - with ``num_classes`` known, a loss far above ``ln C`` (the loss
  of a uniform guess) at the first records: the run exploded before it was first logged.

Reports the epoch the growth started, the growth rate (a straight-line fit of log-loss), whether
the loss rose above chance level ``ln C``, and a learning-rate cut computed from the growth
(seed 004: a learning rate too high makes the updates overshoot and amplify).

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
from typing import Any

import numpy as np

from ._stats import (
    RunView,
    Series,
    SkipCheck,
    fmt,
    linfit,
    log_values,
    rel_noise,
    running_median,
    spearman,
)
from .report import Finding, Recommendation

CODE = "diverging"


def _window(n: int, w: int) -> int:
    if n >= 3 * w:
        return w
    return 3 if n >= 5 else 1


def _growth(s: Series, view: RunView, *, val_only: bool) -> dict[str, Any] | None:
    """A sustained rise from the lowest level, or an explosion that does not recover."""
    th = view.th
    y, x = s.y, s.x
    n = len(y)
    if n < 3 or np.any(y <= 0):
        return None
    ly = log_values(y)
    w = _window(n, th.smooth_window)
    if s.per_step:
        # minibatch losses: judge the trend on a window of about a tenth of the run, so that
        # the noise of single batches cannot pass for growth
        w = max(w, (n // 10) | 1)
    sm = running_median(ly, w) if w > 1 else ly.copy()
    sig = rel_noise(y)
    sig = sig if math.isfinite(sig) else 0.0
    # explosion: a point far above the level before it, with no return
    for j in range(1, n):
        before = float(np.median(ly[max(0, j - 5): j]))
        if ly[j] - before >= math.log(th.diverge_spike_rise) and \
                ly[j] - before >= 6 * max(sig, 0.02):
            after = ly[j:]
            if float(np.median(after)) - before >= math.log(th.diverge_spike_keep) and \
                    _matters(y, 0, float(np.exp(np.median(after)))):
                i0 = int(np.argmin(ly[max(0, j - 5): j])) + max(0, j - 5)
                return _fit(x, y, i0, n - 1, "explosion", sustained=True,
                            end_rise=math.exp(float(np.median(after)) - before))
    # sustained growth of the smoothed loss from its minimum (the raw minimum near it)
    i0 = int(np.argmin(sm))
    lo, hi = max(0, i0 - 2), min(n - 1, i0 + 2)
    i0 = lo + int(np.argmin(ly[lo: hi + 1]))
    if n - i0 < (4 if n >= 6 else 3):
        return None
    end = float(np.median(ly[n - max(2, min(5, (n - i0) // 2)):]))
    rise = math.exp(end - sm[i0])
    rho = spearman(x[i0:], y[i0:])
    need = th.diverge_val_only_rise if val_only else max(th.diverge_growth_rise,
                                                         math.exp(th.diverge_noise_sigmas * sig))
    end_level = float(np.exp(end))
    if not _matters(y, i0, end_level):
        return None
    if rise >= need and rho >= th.diverge_min_consistency and (n - i0) >= max(3, n // 4):
        return _fit(x, y, i0, n - 1, "growth", sustained=True, end_rise=rise)
    # a slow rise that never reverses: 5+ points, rank correlation >= 0.9, far out of the noise
    sig_up = rel_noise(y[i0:]) if n - i0 >= 5 else sig
    sig_up = sig_up if math.isfinite(sig_up) else sig
    late = math.exp(float(np.mean(ly[-2:])) - sm[i0])
    if not val_only and late >= th.diverge_steady_rise and \
            rho >= th.diverge_steady_consistency and \
            (n - i0) >= max(th.diverge_steady_points, n // 4) and \
            math.log(late) >= th.diverge_steady_sigmas * max(sig_up, 0.005):
        return _fit(x, y, i0, n - 1, "growth", sustained=True, end_rise=late)
    # a jump to a level it never comes back from: the whole second half stays >= 2x the
    # lowest point of the first third (a healthy training loss never does that)
    if not val_only and n >= 6:
        third = max(2, n // 3)
        j0 = int(np.argmin(ly[:third]))
        level2 = float(np.median(ly[n // 2:]))
        if level2 - ly[j0] >= math.log(2.0) and \
                float(np.min(ly[n // 2:])) - ly[j0] >= math.log(1.5):
            return _fit(x, y, j0, n - 1, "growth", sustained=True,
                        end_rise=math.exp(level2 - ly[j0]))
    return None


def _matters(y: np.ndarray, i0: int, level: float) -> bool:
    """A rise matters only on the run's own scale: the level it reaches must be at least 1 % of
    the loss the run started from (a converged 1e-6 loss that jiggles to 1e-4 is rounding)."""
    ref = float(np.max(y[: min(3, len(y))]))
    return level >= 0.01 * ref or level >= 10 * float(y[i0]) and level >= 1e-3 * ref


def _fit(x: np.ndarray, y: np.ndarray, i0: int, stop: int, kind: str, *, sustained: bool,
         end_rise: float) -> dict[str, Any]:
    gx, gy = x[i0: stop + 1], y[i0: stop + 1]
    slope, _, r2_log = linfit(gx, np.log(gy))
    lslope, _, r2_lin = linfit(gx, gy)
    growth = math.exp(slope) if math.isfinite(slope) else math.nan
    model = "exponential" if (r2_log >= r2_lin and (math.isnan(growth) or growth > 1.15)) \
        else "steady"
    return {"i0": i0, "kind": kind, "growth": growth, "model": model, "sustained": sustained,
            "end_rise": end_rise, "consistency": spearman(gx, gy) if len(gx) >= 3 else 1.0}


def _above_chance(s: Series | None, chance: float | None, th: Any) -> dict[str, Any] | None:
    """The loss already far above ln C at its first records and not coming down there."""
    if s is None or chance is None or len(s) < th.diverge_chance_points:
        return None
    y = s.y
    hi = y >= th.diverge_chance_ratio * chance
    if not hi[0]:
        return None
    k = int(np.argmin(hi)) if not hi.all() else len(y)
    if k < th.diverge_chance_points:
        return None
    seg = y[:k]
    if float(np.ptp(seg)) <= 1e-3 * float(np.median(seg)):
        return None  # a loss frozen at one value: see 'stuck'
    if float(seg[-1]) < 0.7 * float(seg[0]):
        return None  # falling fast from a bad start: not divergence
    if k >= 4 and spearman(s.x[:k], seg) <= -0.5:
        return None  # a bad start that the loss is steadily leaving: see 'stuck'
    if k >= 5 and rel_noise(seg) > th.stuck_steady_noise and \
            float(np.median(seg)) < 10 * chance:
        return None  # bouncing around not far above chance: see 'oscillating'

    return {"k": k, "level": float(np.median(seg)), "ratio": float(np.median(seg)) / chance}


def check(view: RunView) -> list[Finding]:
    th = view.th
    cands = [(s, False) for s in (view.train_loss,) if s is not None]
    if view.train_steps is not None and view.train_steps is not view.train_loss and \
            len(view.train_steps) > (len(view.train_loss) if view.train_loss else 0):
        cands.append((view.train_steps, False))
    if view.val_loss is not None:
        cands.append((view.val_loss, view.train_loss is not None))
    if not cands:
        raise SkipCheck("no loss curve")
    if all(len(s) < 3 for s, _ in cands):
        raise SkipCheck(f"only {max(len(s) for s, _ in cands)} finite loss value(s)")
    res = None
    s = cands[0][0]
    for s, val_only in cands:
        res = _growth(s, view, val_only=val_only)
        if res is not None and val_only and view.train_loss is not None:
            # validation loss rising while the training loss only falls is overfitting
            t = view.train_loss
            sel = t.x >= s.x[res["i0"]]
            ty = t.y[sel]
            t_rise = float(np.max(ty / np.minimum.accumulate(ty))) if ty.size else 1.0
            if sel.sum() >= 3 and spearman(t.x[sel], ty) < 0.5 and t_rise < th.diverge_min_rise:
                res = None
        if res is not None:
            break
    if res is None:
        main = view.train_loss if view.train_loss is not None else view.val_loss
        hi = _above_chance(main, view.chance, th)
        if hi is not None:
            return [_above_chance_finding(view, main, hi)]
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
        acc = view.val_score if view.val_score is not None else view.train_score
        acc_at = None
        if acc is not None and acc.name.startswith("accuracy") and len(acc):
            acc_at = float(np.median(acc.y[acc.x >= crossed])) if np.any(acc.x >= crossed) \
                else float(acc.y[-1])
        if acc_at is not None and view.num_classes and \
                acc_at >= 1.0 / view.num_classes + 0.25 * (1 - 1.0 / view.num_classes):
            parts.append(f"From {u} {fmt(crossed)} it is above the chance level ln C = "
                         f"{fmt(chance)} although '{acc.key}' is still about {fmt(acc_at)}: "
                         "the logits have grown so large that the samples the model gets wrong "
                         "are wrong with near-certainty, and their losses outweigh all the "
                         "right answers.")
        else:
            parts.append(f"From {u} {fmt(crossed)} it is above the chance level ln C = "
                         f"{fmt(chance)}: worse than predicting every class with equal "
                         "probability, so the model is confidently wrong.")
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
    if view.grad_norm is not None and len(view.grad_norm) >= 3:
        g = view.grad_norm
        before = g.y[g.x <= x0]
        after = g.y[g.x > x0]
        if before.size and after.size:
            ev["grad_norm_before"] = float(np.median(before))
            ev["grad_norm_max_after"] = float(np.max(after))
    view.found[CODE] = {"start": x0, "lr": lr0, "cause": "lr-too-high",
                        "val_only": s.split == "val"}
    return [Finding(CODE, sev, title, x0, end_x, expl, ev, recs, cause="lr-too-high",
                    unit=u, series=[s.key])]


def _above_chance_finding(view: RunView, s: Series, hi: dict[str, Any]) -> Finding:
    chance = view.chance
    assert chance is not None
    u = view.unit
    x, y = s.x, s.y
    k = hi["k"]
    x0, x1 = float(x[0]), float(x[k - 1])
    lr0 = view.lr_at(x0)
    ev: dict[str, Any] = {"series": s.key, "level": hi["level"], "chance_level": chance,
                          "times_chance": hi["ratio"], f"{u}s_above": k}
    if lr0 is not None:
        ev["lr"] = lr0
    recovered = k < len(y)
    if recovered:
        ev["came_down_at"] = float(x[k])
        lr1 = view.lr_at(float(x[k]))
        if lr1 is not None and lr0 is not None and lr1 < lr0:
            ev["lr_when_it_came_down"] = lr1
    expl = (f"'{s.key}' is {fmt(hi['level'])} from its first record on, {fmt(hi['ratio'], 2)}x "
            f"ln C = {fmt(chance)} - the loss of predicting all {view.num_classes} classes "
            "with equal probability. An untrained network starts near ln C; a loss this far "
            "above it means the run had already diverged before it was first logged: the "
            "updates overshot, the logits grew large and confidently wrong, and the loss "
            "stays there.")
    if recovered:
        expl += (f" It came down at {u} {fmt(float(x[k]))}"
                 + (f", when the learning rate was cut from {fmt(lr0)} to "
                    f"{fmt(ev['lr_when_it_came_down'])}" if "lr_when_it_came_down" in ev else "")
                 + ": the first epochs were wasted.")
    recs = [Recommendation("Lower the learning rate", "~10x smaller" + (
                f": from {fmt(lr0)} to about {fmt(lr0 / 10, 2)}" if lr0 else ""),
                "the loss is above chance from the start"),
            Recommendation("Clip gradients", "clip_grad_norm_(params, max_norm=0.25-1.0) / "
                           "Keras clipnorm=1.0", "recurrent nets and high LRs need it most"),
            Recommendation("Warm the learning rate up", "linear warm-up over the first ~5% of "
                           "steps", "the first updates are the most likely to overshoot")]
    view.found[CODE] = {"start": x0, "lr": lr0, "cause": "loss-above-chance",
                        "val_only": False}
    return Finding(CODE, "error" if not recovered else "warning",
                   f"the loss is {fmt(hi['ratio'], 2)}x chance level from the first {u}",
                   x0, x1, expl, ev, recs, cause="lr-too-high", unit=u, series=[s.key])
