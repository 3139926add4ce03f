"""``loss-accuracy-decoupling``: validation loss roughly flat while accuracy rises (or the
reverse).

Cross-entropy only looks at the probability of the true class; accuracy only at the argmax.
With a loss above 1 the typical true-class probability ``exp(-loss)`` is below ``1/e``: the
predictions are spread over several classes with close values, and small shifts flip argmaxes
without moving the loss (seed 002).

>>> import numpy as np
>>> from lossdiag.history import History
>>> from lossdiag.diagnosis import diagnose
>>> e = np.arange(20)
>>> h = History.from_arrays(e, train={"loss": 2.0 - 0.05 * e},
...     val={"loss": 3.4 + 0.02 * np.sin(e), "accuracy": 0.12 + 0.006 * e})
>>> diagnose(h).get("loss-accuracy-decoupling").cause
'loss-flat-accuracy-rising'
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._stats import RunView, SkipCheck, fmt, noise_sigma, pct, smooth
from .report import Finding, Recommendation

CODE = "loss-accuracy-decoupling"


def check(view: RunView) -> list[Finding]:
    th = view.th
    v, sc = view.val_loss, view.val_score
    if v is None:
        raise SkipCheck("no validation loss")
    if sc is None:
        raise SkipCheck("no validation accuracy-like metric")
    if len(v) < th.min_points or len(sc) < th.min_points:
        raise SkipCheck(f"fewer than {th.min_points} validation points")
    if "diverging" in view.found or view.found.get("stuck"):
        raise SkipCheck("the run diverges or is stuck")
    u = view.unit
    x = v.x
    n = len(x)
    w = th.smooth_window if n >= 3 * th.smooth_window else 3
    lsm = smooth(v.y, w)
    ssm = np.interp(x, sc.x, smooth(sc.y, w if len(sc) >= 3 * w else 3))
    level = float(np.median(lsm))
    lrange = float((lsm.max() - lsm.min()) / level) if level > 0 else math.inf
    net = float((lsm[-1] - lsm[0]) / lsm[0]) if lsm[0] > 0 else math.inf
    s0, s1 = float(ssm[0]), float(ssm[-1])
    sig_s = noise_sigma(sc.y)
    sig_s = sig_s if math.isfinite(sig_s) else 0.0
    sig_l = noise_sigma(v.y)
    sig_l = sig_l if math.isfinite(sig_l) else 0.0
    rise = s1 - s0
    train_fall = None
    if view.train_loss is not None and len(view.train_loss) >= 3:
        t = view.train_loss
        tsm = smooth(t.y, 3)
        train_fall = float((tsm[0] - tsm[-1]) / tsm[0]) if tsm[0] > 0 else 0.0
    ev: dict[str, Any] = {"val_loss_first": float(lsm[0]), "val_loss_last": float(lsm[-1]),
                          "val_loss_range": lrange, "score_first": s0, "score_last": s1,
                          "score": sc.key}
    if train_fall is not None:
        ev["train_loss_fall"] = train_fall
    learning = train_fall is None or train_fall >= th.decouple_train_fall
    best_loss_x = float(x[int(np.argmin(lsm))])
    best_score_x = float(sc.x[int(np.argmax(smooth(sc.y, 3)))])
    cause = None
    # "flat" is relative to what the accuracy did: a loss that falls by a small fraction of the
    # relative accuracy gain has not followed it
    allowed_fall = max(th.decouple_flat, th.decouple_loss_per_score * rise / max(s0, 1e-9))
    if -allowed_fall <= net <= th.decouple_max_rise and lrange <= th.decouple_max_range \
            and \
            rise >= th.decouple_min_score_rise and \
            rise >= 0.1 * max(s0, 1e-9) and rise >= th.noise_sigmas * sig_s and learning:
        cause = "loss-flat-accuracy-rising"
    else:
        # reverse case, read after the initial transient (the first fifth of the run), where
        # a falling loss with a flat accuracy is expected of any healthy run
        a = n // 5
        fall = float((lsm[a] - lsm[-1]) / lsm[a]) if lsm[a] > 0 else 0.0
        drift = float(ssm[-1] - ssm[a])
        if fall >= th.decouple_min_loss_fall and abs(drift) <= max(th.decouple_flat_score,
                                                                     2 * sig_s) \
                and lsm[a] - lsm[-1] >= th.noise_sigmas * sig_l \
                and max(s0, s1) < 0.98 and learning:
            cause = "loss-falling-accuracy-flat"
            ev["val_loss_fall"] = fall
            ev["from"] = float(x[a])
    if cause is None:
        return []
    st0 = view.stats_at(float(x[0])) if view.stats else None
    st1 = view.stats_at(float(x[-1])) if view.stats else None
    stats_txt = ""
    if st1 is not None:
        for k in ("mean_true_class_prob", "frac_true_prob_below_inv_e",
                  "small_margin_correct_frac"):
            if st1.get(k) is not None and st0 is not None and st0.get(k) is not None:
                ev[k + "_first"] = float(st0[k])
                ev[k + "_last"] = float(st1[k])
        if "mean_true_class_prob_last" in ev:
            stats_txt += (" The statistics show it directly: the true-class probability "
                          f"averages {fmt(ev['mean_true_class_prob_last'])}")
            if "frac_true_prob_below_inv_e_last" in ev:
                stats_txt += (f", {pct(ev['frac_true_prob_below_inv_e_last'])} of the true-class"
                              " probabilities are below 1/e")
            if "small_margin_correct_frac_last" in ev:
                stats_txt += (f", and {pct(ev['small_margin_correct_frac_last'])} of the correct"
                              " predictions win by a margin under 0.1 (they would flip with a "
                              "small shift)")
            stats_txt += "."
    geo = math.exp(-level)
    if cause == "loss-flat-accuracy-rising":
        title = "validation accuracy rises while validation loss stays flat"
        expl = (f"The validation loss stays around {fmt(level)} ({fmt(lsm[0])} -> {fmt(lsm[-1])})"
                " while "
                f"'{sc.key}' rises from {fmt(s0)} to {fmt(s1)}"
                + (f" and the training loss falls by {pct(train_fall)}" if train_fall else "")
                + ". This is legitimate: cross-entropy only looks at the probability given to "
                "the true class, accuracy only at which class has the largest probability. "
                f"A loss of {fmt(level)} means the typical true-class probability is "
                f"exp(-{fmt(level)}) = {fmt(geo)}"
                + (", below 1/e = 0.368" if level > 1 else "")
                + ": the predictions are spread over several classes with close values, so "
                "small shifts move the argmax onto the right class (accuracy up) while other "
                "samples become a bit more confidently wrong, and the average -log p_true "
                "hardly moves." + stats_txt)
        recs = [Recommendation("Select checkpoints by the metric you care about",
                               f"ModelCheckpoint(monitor='val_{sc.name}', mode='max'): best "
                               f"{sc.name} at {u} {fmt(best_score_x)}, best loss at {u} "
                               f"{fmt(best_loss_x)}", "the two criteria disagree here"),
                Recommendation("Look at label quality and ambiguity",
                               "inspect the most confidently wrong validation samples",
                               "noisy or ambiguous labels keep the loss high"),
                Recommendation("Calibrate if you use the probabilities",
                               "temperature scaling on the validation set",
                               "accuracy improves but probabilities are not trustworthy"),
                Recommendation("Mild regularisation", "weight decay ~1e-5-1e-4 or label "
                               "smoothing 0.1", "curbs confident outliers; heavy values hurt "
                               "both metrics")]
    else:
        title = "validation loss falls while accuracy stays flat"
        expl = (f"From {u} {fmt(ev['from'])} the validation loss fell by "
                f"{pct(ev['val_loss_fall'])} ({fmt(lsm[n // 5])} -> {fmt(lsm[-1])}) while "
                f"'{sc.key}' stayed at about {fmt(s1)}: the model is "
                "becoming more confident on samples it already classifies correctly (and less "
                "confident on its mistakes) without changing any argmax, so the loss improves "
                "and the accuracy does not." + stats_txt)
        recs = [Recommendation("Judge progress by the metric you care about",
                               f"track '{sc.key}' for model selection",
                               "loss gains here are calibration, not more correct answers"),
                Recommendation("If accuracy must improve, change capacity or data",
                               "larger model, more data, better features",
                               "the current model has stopped finding new correct answers")]
    view.found[CODE] = {"cause": cause}
    return [Finding(CODE, "info", title, float(ev.get("from", x[0])), float(x[-1]), expl, ev, recs,
                    cause=cause, unit=u, series=[v.key, sc.key])]
