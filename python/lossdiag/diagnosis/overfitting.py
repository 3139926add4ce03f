"""``overfitting``: training loss keeps falling while validation loss stops improving or rises.

Reports the best validation epoch, how much worse the last one is, and where
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
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._stats import RunView, SkipCheck, fmt, keras_early_stopping, noise_sigma, pct, smooth
from .report import Finding, Recommendation

CODE = "overfitting"


def check(view: RunView) -> list[Finding]:
    th = view.th
    v, t = view.val_loss, view.train_loss
    if v is None:
        raise SkipCheck("no validation loss")
    if t is None:
        raise SkipCheck("no training loss to compare with")
    if len(v) < th.min_points:
        raise SkipCheck(f"only {len(v)} validation points (need {th.min_points})")
    if "diverging" in view.found:
        raise SkipCheck("the loss diverges (see 'diverging')")
    if view.found.get("stuck"):
        raise SkipCheck("the model is stuck (see 'stuck')")
    u = view.unit
    x, y = v.x, v.y
    n = len(y)
    w = th.smooth_window if n >= 3 * th.smooth_window else 3
    sm = smooth(y, w)
    b = int(np.argmin(sm))
    end = float(sm[-1])
    rise = end / sm[b] - 1.0
    sig = noise_sigma(y)
    sig = sig if np.isfinite(sig) else 0.0
    tsm = np.interp(x, t.x, smooth(t.y, w if len(t) >= 3 * w else 3))
    t_best, t_end = float(tsm[b]), float(tsm[-1])
    train_drop = (t_best - t_end) / t_best if t_best > 0 else 0.0
    min_delta = float(f"{th.es_rel_min_delta * float(np.min(y)):.2g}")
    stop_i, restore_i = keras_early_stopping(y, th.es_patience, min_delta)
    best_raw = int(np.argmin(y))
    t_sig = noise_sigma(t.y)
    t_rel_noise = t_sig / float(np.median(t.y)) if np.isfinite(t_sig) and np.median(t.y) > 0 \
        else 0.0
    need_drop = max(th.overfit_min_train_drop, th.noise_sigmas * t_rel_noise)
    rising = (rise >= th.overfit_min_rise and end - sm[b] >= th.noise_sigmas * sig
              and train_drop >= need_drop and n - 1 - b >= 2)
    score_gain = None
    sc = view.val_score
    if sc is not None and len(sc) >= 3:
        ssm = np.interp(x, sc.x, smooth(sc.y, 3))
        score_gain = float(ssm[-1] - ssm[b])
    plateau = False
    if not rising and stop_i is not None and train_drop >= max(th.overfit_plateau_train_drop,
                                                               need_drop) \
            and b <= n - 1 - th.es_patience:
        still_learning = score_gain is not None and score_gain >= max(
            0.01, th.noise_sigmas * (noise_sigma(sc.y) if sc is not None else 0.0))
        # "no new best" means little when the validation loss is dominated by noise
        noisy = view.found.get("oscillating", {}).get("series") == v.key
        plateau = not still_learning and not noisy
    if not (rising or plateau):
        return []
    ev: dict[str, Any] = {
        "best_epoch" if u == "epoch" else "best_step": float(x[best_raw]),
        "best_val_loss": float(y[best_raw]), "last_val_loss": float(y[-1]),
        "worse_by": float(y[-1] / y[best_raw] - 1.0),
        "train_loss_at_best": t_best, "train_loss_last": t_end, "train_drop": train_drop,
        "gap_ratio": float(y[-1] / t_end) if t_end > 0 else float("inf"),
        "patience": th.es_patience, "min_delta": min_delta,
    }
    if stop_i is not None:
        ev["early_stop_epoch" if u == "epoch" else "early_stop_step"] = float(x[stop_i])
        ev["restored_epoch" if u == "epoch" else "restored_step"] = float(x[restore_i])
        ev[f"{u}s_saved"] = float(x[-1] - x[stop_i])
    if score_gain is not None:
        ev["val_score_change_since_best"] = score_gain
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
        expl = (f"The training loss kept falling ({fmt(t_best)} -> {fmt(t_end)}, "
                f"-{pct(train_drop)}) while the validation loss reached its best {fmt(y[best_raw])}"
                f" at {u} {fmt(xb)} and then rose to {fmt(y[-1])} at {u} {fmt(float(x[-1]))} "
                f"(+{pct(ev['worse_by'])}). The model is learning details of the training "
                "samples that do not carry over to new data; every further epoch trades "
                "generalisation for training fit." + stop_txt)
        if score_gain is not None and score_gain > 0.01:
            expl += (f" The validation score still gained {fmt(score_gain)} since {u} {fmt(xb)}:"
                     " the mistakes that remain are becoming more confident (see also "
                     "'overconfident'), so choose the checkpoint by the metric you care about.")
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
    view.found[CODE] = {"cause": "val-loss-rising" if rising else "val-loss-plateau",
                        "best": xb}
    return [Finding(CODE, sev, title, xb, float(x[-1]), expl, ev, recs,
                    cause="val-loss-rising" if rising else "val-loss-plateau", unit=u,
                    series=[v.key, t.key])]
