"""``overfitting``: training loss keeps falling while validation loss stops improving or rises.

The decision is relative to the run's own noise and length: the validation loss after its best
epoch is compared with that best level using the curve's robust point-to-point noise, so a
+17 % rise over three epochs of a quiet 7-epoch run counts, and the same rise on a curve that
jumps by 20 % from epoch to epoch does not.  A widening train/validation accuracy gap while the
validation score stalls is the same problem seen on the score.

Reports the best validation epoch, how much worse the end is, and where
``keras.callbacks.EarlyStopping(monitor="val_loss", patience=p, min_delta=d)`` with ``d``
relative to the best validation loss would have stopped.

>>> import numpy as np
>>> from lossdiag.history import History
>>> from lossdiag.diagnosis import diagnose
>>> e = np.arange(30)
>>> h = History.from_arrays(e, train={"loss": 1.5 * np.exp(-e / 6) + 0.02},
...                         val={"loss": 1.0 + 0.002 * (e - 8) ** 2})
>>> f = diagnose(h).get("overfitting")
>>> f.evidence["best_epoch"], f.evidence["early_stop_epoch"], f.evidence["restored_epoch"]
(8.0, 12.0, 7.0)
>>> h = History.from_arrays(range(7), train={"loss": [.63, .53, .45, .37, .29, .22, .16]},
...                         val={"loss": [.56, .52, .50, .457, .469, .498, .534]})
>>> diagnose(h).get("overfitting").cause
'val-loss-rising'
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
    keras_early_stopping,
    log_values,
    noise_sigma,
    pct,
    rel_noise,
    running_median,
    smooth,
    spearman,
)
from .report import Finding, Recommendation

CODE = "overfitting"


def _rise(x: np.ndarray, y: np.ndarray) -> dict[str, Any] | None:
    """Best validation level, the level at the end, and how sure the rise is."""
    n = len(y)
    if n < 4:
        return None
    ly = log_values(y)
    base = running_median(ly, 3) if n >= 7 else ly
    b = int(np.argmin(base[:-2]))  # at least two points after the best
    k = int(min(max(2, round(n / 5)), n - 1 - b))
    end = float(np.mean(ly[n - k:]))
    best = float(base[b])
    sig = rel_noise(y)
    if not math.isfinite(sig):
        sig = float(np.std(np.diff(ly))) / math.sqrt(2) if n >= 3 else 0.0
    sig = max(sig, 0.005)
    post = ly[b:]
    rho = spearman(x[b:], post) if len(post) >= 3 else 1.0
    above = float(np.mean(ly[b + 1:] > best + sig))
    z = (end - best) / (sig * math.sqrt(1.0 + 1.0 / k))
    # the same against the raw minimum, with a longer end window: a noisy curve that never
    # comes back within 5 % of one low point over many epochs
    rb = int(np.argmin(ly[:-2]))
    m = n - 1 - rb
    rk = max(2, min(m, n // 3))
    rend = float(np.mean(ly[n - rk:]))
    raw = {"b": rb, "m": m, "rise": math.exp(rend - ly[rb]) - 1.0,
           "z": (rend - ly[rb]) / sig, "above": float(np.mean(ly[rb + 1:] > ly[rb] + 0.05))}
    return {"b": b, "k": k, "best": math.exp(best), "end": math.exp(end),
            "rise": math.exp(end - best) - 1.0, "sigma": sig, "z": z, "rho": rho,
            "above": above, "raw": raw}


def _gap(view: RunView) -> dict[str, Any] | None:
    """Train score pulling away from a validation score that stalls."""
    tr, va = view.train_score, view.val_score
    if tr is None or va is None or len(va) < 6 or len(tr) < 6:
        return None
    x = va.x
    t = np.interp(x, tr.x, tr.y)
    gap = t - va.y
    n = len(x)
    h = n // 2
    g0, g1 = float(np.median(gap[:max(2, n // 4)])), float(np.median(gap[n - max(2, n // 4):]))
    v_gain = float(np.median(va.y[n - max(2, n // 4):]) - np.median(va.y[h - 1: h + 1]))
    t_gain = float(np.median(t[n - max(2, n // 4):]) - np.median(t[h - 1: h + 1]))
    lim = view.th.overfit_gap
    stalled = v_gain <= max(0.01, t_gain / 4)
    if g1 >= lim and t_gain > 0 and ((g1 - g0 >= lim and stalled) or g1 - g0 >= 2 * lim):
        return {"gap_first": g0, "gap_last": g1, "train_score_gain": t_gain,
                "val_score_gain": v_gain, "score": va.key, "from": float(x[h])}
    return None


def check(view: RunView) -> list[Finding]:
    th = view.th
    v, t = view.val_loss, view.train_loss
    if v is None:
        raise SkipCheck("no validation loss")
    if t is None:
        raise SkipCheck("no training loss to compare with")
    if len(v) < 4:
        raise SkipCheck(f"only {len(v)} validation points (need 4)")
    div = view.found.get("diverging")
    if div and not div.get("val_only"):
        # judge the part before the divergence: a run can overfit first and blow up later
        x0 = float(div["start"])
        v = Series(v.key, v.x[v.x < x0], v.y[v.x < x0], int(np.sum(v.x < x0)))
        t = Series(t.key, t.x[t.x < x0], t.y[t.x < x0], int(np.sum(t.x < x0)))
        if len(v) < 6 or len(t) < 3:
            raise SkipCheck("the loss diverges (see 'diverging')")
    st = view.found.get("stuck")
    if st and not st.get("val_only"):
        raise SkipCheck("the model is stuck (see 'stuck')")
    u = view.unit
    x, y = v.x, v.y
    n = len(y)
    r = _rise(x, y)
    if r is None:
        return []
    b = r["b"]
    tsm = np.interp(x, t.x, smooth(t.y, 3 if len(t) >= 5 else 1))
    t_best, t_end = float(tsm[b]), float(np.mean(tsm[n - r["k"]:]))
    train_drop = (t_best - t_end) / t_best if t_best > 0 else 0.0
    t_sig = rel_noise(t.y) if len(t) >= 4 else 0.0
    t_sig = t_sig if math.isfinite(t_sig) else 0.0
    need_drop = max(th.overfit_min_train_drop,
                    2 * t_sig / math.sqrt(max(1, len(t) // max(n, 1))))
    raw = r["raw"]
    # on a validation loss dominated by noise a low point or a drift means little, unless the
    # training loss went far below it (the memorising model's signature)
    t_last = float(np.mean(tsm[n - max(2, n // 5):]))
    gap_end = float(np.mean(y[n - max(2, n // 5):])) / t_last if t_last > 0 else math.inf
    noisy = view.found.get("oscillating", {}).get("series") == v.key and not (
        train_drop >= th.overfit_noisy_train_drop and gap_end >= th.overfit_noisy_gap)
    persistent = (not noisy and raw["rise"] >= th.overfit_persistent_rise
                  and raw["above"] >= th.overfit_persistent_share and raw["m"] >= 3
                  and raw["z"] >= th.overfit_persistent_z)
    clear = r["rise"] >= th.overfit_min_rise and r["z"] >= th.overfit_min_z
    if persistent and not clear:
        # judged against the raw minimum: report from there
        b = raw["b"]
        r = dict(r, b=b, rise=raw["rise"], z=raw["z"], k=max(2, min(raw["m"], n // 3)),
                 end=float(np.exp(np.mean(log_values(y)[n - max(2, min(raw["m"], n // 3)):]))))
        t_best, t_end = float(tsm[b]), float(np.mean(tsm[n - r["k"]:]))
        train_drop = (t_best - t_end) / t_best if t_best > 0 else 0.0
    rising = ((clear and r["rho"] >= 0.0 and r["above"] >= 0.6 and not noisy) or persistent) \
        and train_drop >= need_drop
    min_delta = float(f"{th.es_rel_min_delta * float(np.min(y)):.2g}")
    stop_i, restore_i = keras_early_stopping(y, th.es_patience, min_delta)
    best_raw = int(np.argmin(y[: max(b + 2, 1)]))
    score_gain = None
    sc = view.val_score
    if sc is not None and len(sc) >= 3:
        ssm = np.interp(x, sc.x, smooth(sc.y, 3))
        score_gain = float(ssm[-1] - ssm[b])
    plateau = False
    if not rising and stop_i is not None and b <= n - 1 - th.es_patience and \
            train_drop >= max(th.overfit_plateau_train_drop, need_drop):
        sig_s = noise_sigma(sc.y) if sc is not None and len(sc) >= 4 else 0.0
        sig_s = sig_s if math.isfinite(sig_s) else 0.0
        still_learning = score_gain is not None and score_gain >= max(0.01,
                                                                      th.noise_sigmas * sig_s)
        h2 = b + (n - b) // 2
        late_drop = (float(tsm[h2]) - t_end) / float(tsm[h2]) if tsm[h2] > 0 else 0.0
        plateau = (not still_learning and not noisy and r["rise"] >= 0.0
                   and late_drop >= need_drop)
    gap = None
    if not (rising or plateau):
        gap = _gap(view)
        if gap is None:
            return []
    ev: dict[str, Any] = {
        "best_epoch" if u == "epoch" else "best_step": float(x[best_raw]),
        "best_val_loss": float(y[best_raw]), "last_val_loss": float(y[-1]),
        "worse_by": float(y[-1] / y[best_raw] - 1.0),
        "end_vs_best": r["rise"], "noise": r["sigma"], "z": r["z"],
        "train_loss_at_best": t_best, "train_loss_last": t_end, "train_drop": train_drop,
        "gap_ratio": float(y[-1] / t_end) if t_end > 0 else float("inf"),
        "patience": th.es_patience, "min_delta": min_delta,
    }
    if gap is not None:
        ev.update(gap)
    if stop_i is not None:
        ev["early_stop_epoch" if u == "epoch" else "early_stop_step"] = float(x[stop_i])
        ev["restored_epoch" if u == "epoch" else "restored_step"] = float(x[restore_i])
        ev[f"{u}s_saved"] = float(x[-1] - x[stop_i])
    if score_gain is not None:
        ev["val_score_change_since_best"] = score_gain
    confidence = min(0.99, 0.5 + 0.5 * math.erf(max(r["z"], 0.0) / 3.0)) if rising else None
    if confidence is not None:
        ev["confidence"] = round(confidence, 2)
    xb = float(x[best_raw])
    n_train = view.history.meta.get("n_train")
    es_txt = (f"EarlyStopping(monitor='val_loss', patience={th.es_patience}, "
              f"min_delta={min_delta:g}, restore_best_weights=True)")
    if stop_i is not None:
        stop_txt = (f" {es_txt} would have stopped at {u} {fmt(float(x[stop_i]))} and restored "
                    f"{u} {fmt(float(x[restore_i]))}, saving {fmt(float(x[-1] - x[stop_i]))} "
                    f"{u}s.")
    else:
        stop_txt = f" {es_txt} would not have stopped this run."
    if rising:
        title = f"validation loss rises after {u} {fmt(xb)} while training loss falls"
        likely = "" if r["z"] >= 4 else " (likely: the rise is "\
            f"{fmt(r['z'], 2)} noise sigmas)"
        expl = (f"The training loss kept falling ({fmt(t_best)} -> {fmt(t_end)}, "
                f"-{pct(train_drop)}) while the validation loss reached its best {fmt(y[best_raw])}"
                f" at {u} {fmt(xb)} and then rose to {fmt(y[-1])} at {u} {fmt(float(x[-1]))} "
                f"(+{pct(ev['worse_by'])}; its last {r['k']} values average {fmt(r['end'])})"
                f"{likely}, on a curve whose {u}-to-{u} noise is about {pct(r['sigma'])}. "
                "The model is learning "
                "details of the training samples that do not carry over to new data; every "
                "further epoch trades generalisation for training fit." + stop_txt)
        if score_gain is not None and score_gain > 0.01:
            expl += (f" The validation score still gained {fmt(score_gain)} since {u} {fmt(xb)}:"
                     " the mistakes that remain are becoming more confident (see also "
                     "'overconfident'), so choose the checkpoint by the metric you care about.")
        sev = "warning"
    elif gap is not None:
        title = "the train/validation score gap widens while validation stalls"
        expl = (f"'{gap['score']}' on training data pulls away from validation: the gap grew "
                f"from {fmt(gap['gap_first'])} to {fmt(gap['gap_last'])} while the training "
                f"score gained {fmt(gap['train_score_gain'])} and the validation score only "
                f"{fmt(gap['val_score_gain'])} over the second half of the run. The model "
                "memorises the training samples; the losses may both still fall, but what is "
                "learned no longer carries over." + stop_txt)
        sev = "warning"
    else:
        title = f"validation loss stopped improving after {u} {fmt(xb)}"
        expl = (f"The validation loss has not improved since {u} {fmt(xb)} ({fmt(y[best_raw])})"
                f" while the training loss fell by another {pct(train_drop)} "
                f"({fmt(t_best)} -> {fmt(t_end)}): the extra {u}s only fit the training set."
                + stop_txt)
        sev = "info"
    recs = [Recommendation("Stop early and keep the best checkpoint", es_txt
                           + (f" -> stops at {u} {fmt(float(x[stop_i]))}, restores {u} "
                              f"{fmt(float(x[restore_i]))}" if stop_i is not None else ""),
                           "the best model of this run is the one at the best validation loss")]
    strong = ev["gap_ratio"] > 5
    recs.append(Recommendation("Regularise", ("weight decay 5e-4 (AdamW 0.05), dropout 0.3-0.5, "
                               "strong data augmentation") if strong else
                               "weight decay 1e-4 (AdamW 0.01), dropout 0.1-0.3, data "
                               "augmentation", f"validation loss is {fmt(ev['gap_ratio'])}x the "
                               "training loss at the end"))
    recs.append(Recommendation("More data or a smaller model", (f"{n_train} training samples: "
                               "more samples or fewer parameters") if n_train else
                               "more samples, or fewer parameters / a pretrained backbone",
                               "the model has capacity to memorise the training set"))
    if score_gain is not None and score_gain > 0.01:
        recs.append(Recommendation("Checkpoint on the validation score",
                                   "ModelCheckpoint(monitor='val_accuracy', mode='max')",
                                   "the score still improves while the loss does not"))
    cause = "val-loss-rising" if rising else ("accuracy-gap" if gap is not None
                                              else "val-loss-plateau")
    view.found[CODE] = {"cause": cause, "best": xb}
    start = float(gap["from"]) if gap is not None and not rising and not plateau else xb
    return [Finding(CODE, sev, title, start, float(x[-1]), expl, ev, recs, cause=cause,
                    unit=u, series=[v.key, t.key])]
