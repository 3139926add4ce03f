"""``loss-accuracy-decoupling``: validation loss flat or rising while accuracy still rises
(or, more rarely, the reverse).

Cross-entropy only looks at the probability of the true class; accuracy only at the argmax.
With a loss above 1 the typical true-class probability ``exp(-loss)`` is below ``1/e``: the
predictions are spread over several classes with close values, and small shifts flip argmaxes
without moving the loss (seed 002).  Past its best epoch, the validation loss of an overfitting
model rises because its remaining mistakes become confident, while more samples still cross to
the right side of the decision boundary: the loss and the accuracy then disagree about which
checkpoint is best.

The check compares every accuracy-like validation metric after the best validation-loss epoch
with its level there, relative to the metric's own noise.

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

from ._stats import (
    RunView,
    Series,
    SkipCheck,
    fmt,
    log_values,
    noise_sigma,
    pct,
    rel_noise,
    running_median,
    smooth,
    spearman,
)
from .report import Finding, Recommendation

CODE = "loss-accuracy-decoupling"


def _window_gain(sc: Series, x0: float, x1: float, *, k0: int = 3) -> dict[str, Any] | None:
    """Gain of a score over ``[x0, x1]``: the mean of its last third
    against its first (up to) three points, relative to the score's noise."""
    sel = (sc.x >= x0 - 1e-9) & (sc.x <= x1 + 1e-9)
    sx, sy = sc.x[sel], sc.y[sel]
    m = len(sy)
    if m < 3:
        return None
    sig = noise_sigma(sc.y) if len(sc.y) >= 4 else math.nan
    if not math.isfinite(sig):
        sig = float(np.std(np.diff(sc.y))) / math.sqrt(2) if len(sc.y) >= 3 else 0.0
    sig = max(sig, 1e-4)
    k = max(1, m // 3)
    k0 = min(k0, max(1, m // 4))
    end = float(np.mean(sy[-k:]))
    if k0 == 1:
        # one epoch's value: the median with its neighbours, so a dip does not pass for a rise
        i = int(np.flatnonzero(sel)[0])
        first = float(np.median(sc.y[max(0, i - 1): i + 2]))
    else:
        first = float(np.mean(sy[:k0]))
    z = (end - first) / (sig * math.sqrt(1.0 / k0 + 1.0 / k))
    gain = end - first
    rho = spearman(sx, sy) if m >= 3 else 1.0
    err = max(1.0 - first, 1e-9) if first <= 1.0 else None
    return {"score": sc.key, "at_best": first, "end": end, "gain": gain, "z": z,
            "sigma": sig, "rho": rho, "error_cut": (gain / err) if err else None, "k": k}


def _loss_change(x: np.ndarray, ly: np.ndarray, x0: float) -> float:
    """Relative change of the validation loss over ``[x0, end]`` (last third vs first third)."""
    sel = x >= x0 - 1e-9
    w = ly[sel]
    m = len(w)
    k = max(1, m // 3)
    return math.exp(float(np.mean(w[-k:])) - float(np.mean(w[:k]))) - 1.0


def _loss_above_chance_accuracy_high(view: RunView) -> Finding | None:
    """The validation loss is twice ln C or more (far worse than a uniform guess) while the
    validation accuracy is far above chance: the two metrics contradict each other."""
    v, sc = view.val_loss, view.val_score
    c = view.num_classes
    if v is None or sc is None or not c or len(v) < 3 or \
            not sc.name.startswith(("accuracy", "balanced_accuracy")):
        return None
    osc = view.found.get("oscillating", {})
    if osc.get("series") == v.key and osc.get("kind") == "noise":
        return None  # a validation loss dominated by noise says little about its level
    chance = math.log(c)
    k = max(2, len(v) // 3)
    x0 = float(v.x[len(v) - k])
    loss_late = float(np.median(v.y[-k:]))
    acc_late = float(np.median(sc.y[sc.x >= x0 - 1e-9])) if np.any(sc.x >= x0 - 1e-9) \
        else float(sc.y[-1])
    high = 1.0 / c + view.th.stuck_learned_accuracy * (1.0 - 1.0 / c)
    if not (loss_late >= 2.0 * chance and acc_late >= high):
        return None
    u = view.unit
    # a mean of -log p over samples: with a share e of errors at the end, each error costs on
    # average about (loss - (1 - e) * small) / e nats, i.e. its true class got exp(-that)
    err = max(1.0 - acc_late, 1e-6)
    per_error = loss_late / err
    ev = {"val_loss_late": loss_late, "chance_level": chance, "val_accuracy_late": acc_late,
          "error_rate": err, "nats_per_error": per_error, "from": x0, "score": sc.key}
    expl = (f"Over its last {k} {u}s the validation loss is {fmt(loss_late)}, "
            f"{fmt(loss_late / chance, 2)}x ln C = {fmt(chance)} (the loss of a uniform guess "
            f"over {c} classes), while "
            f"'{sc.key}' is {fmt(acc_late)}. Both cannot describe the same typical prediction: "
            "cross-entropy is a mean of -log p(true class) and one confident mistake can cost "
            f"more than thousands of right answers. With {pct(err)} errors each error must "
            f"average about {fmt(per_error)} nats, i.e. the true class gets a probability near "
            f"exp(-{fmt(per_error)}): a few predictions are wildly overconfident, or the loss "
            "itself blows up on some samples (a log of 0 in a hand-written loss, logits in "
            "float16 that overflow, an ignore-label counted as a class, a mismatched label "
            "encoding in the validation set).")
    recs = [Recommendation("Find the samples that carry the loss",
                           "sort validation samples by their loss; inspect the top 1%",
                           "a handful of huge losses explains the mean"),
            Recommendation("Compute the loss from logits, in float32",
                           "CrossEntropyLoss on logits / from_logits=True; no log(softmax) by "
                           "hand", "removes log(0) and overflow"),
            Recommendation("Check validation labels and ignore_index",
                           "labels in [0, C); ignored pixels excluded",
                           "a wrong label costs -log of a tiny probability"),
            Recommendation("Select checkpoints by accuracy, calibrate if you use probabilities",
                           "temperature scaling", "the loss is not a faithful summary here")]
    view.found[CODE] = {"cause": "loss-above-chance-accuracy-high"}
    return Finding(CODE, "warning", "validation loss above chance level while accuracy is high",
                   x0, float(v.x[-1]), expl, ev, recs, cause="loss-above-chance-accuracy-high",
                   unit=u, series=[v.key, sc.key])


def check(view: RunView) -> list[Finding]:
    th = view.th
    v = view.val_loss
    if v is None:
        raise SkipCheck("no validation loss")
    if not view.val_scores:
        raise SkipCheck("no validation accuracy-like metric")
    if len(v) < 4:
        raise SkipCheck(f"only {len(v)} validation points (need 4)")
    st = view.found.get("stuck")
    if "diverging" in view.found or (st and not st.get("val_only")):
        raise SkipCheck("the run diverges or is stuck")
    contradiction = _loss_above_chance_accuracy_high(view)
    if contradiction is not None:
        return [contradiction]
    u = view.unit
    x, y = v.x, v.y
    n = len(x)
    ly = log_values(y)
    base = running_median(ly, 3) if n >= 7 else ly
    b = int(np.argmin(base[:-2]))
    lo = max(0, b - 1)
    b = lo + int(np.argmin(ly[lo: min(n - 2, b + 2)]))  # the raw best next to the smoothed one
    x_best = float(x[b])
    sig_l = rel_noise(y)
    sig_l = sig_l if math.isfinite(sig_l) else 0.0
    k = int(min(max(2, round(n / 5)), n - 1 - b))
    loss_change = math.exp(float(np.mean(ly[n - k:])) - float(base[b])) - 1.0
    train_fall = None
    if view.train_loss is not None and len(view.train_loss) >= 3:
        t = view.train_loss
        tsm = smooth(t.y, 3)
        train_fall = float((tsm[0] - tsm[-1]) / tsm[0]) if tsm[0] > 0 else 0.0
    learning = train_fall is None or train_fall >= th.decouple_train_fall
    # windows in which the validation loss made little progress next to the score's: from
    # its best epoch, from the earliest epoch whose level it is back at by the end, and the
    # whole run
    end_level = float(np.mean(ly[n - max(1, min(3, n // 4)):]))
    no_net = np.flatnonzero(base <= end_level + 1e-12)
    a0 = int(no_net[0]) if no_net.size else b
    hits = []
    for a in sorted({0, a0, b}):
        m = n - a
        if m < 4:
            continue
        # from the best epoch, that epoch's own value; from earlier starts, a short average
        k0 = 1 if a == b else min(3, max(1, m // 4))
        w = ly[a:]
        first = float(np.mean(w[:k0]))
        last = float(np.mean(w[-max(1, m // 3):]))
        dl = math.exp(last - first) - 1.0
        dip = 0.0 if a == b else math.exp(first - float(np.min(base[a:]))) - 1.0
        for sc in view.val_scores.values():
            g = _window_gain(sc, float(x[a]), float(x[-1]), k0=k0)
            if g is None:
                continue
            rel = g["error_cut"] if g["error_cut"] is not None else 0.0
            rel = min(1.0, max(rel, g["gain"] / abs(g["at_best"]) if g["at_best"] else 0.0))
            practical = g["gain"] >= th.decouple_min_score_gain and (
                g["error_cut"] is None or g["error_cut"] >= th.decouple_min_error_cut
                or g["gain"] >= th.decouple_min_rel_gain * abs(g["at_best"]))
            allowed = max(th.decouple_flat, sig_l, th.decouple_loss_per_score * rel)
            # the loss must not have fallen much, overall or in a dip inside the window (a
            # dip is a healthy learning phase that the score rise belongs to)
            if dl < -allowed or dip > max(th.decouple_flat, sig_l) + 0.5 * allowed:
                continue
            if practical and g["z"] >= th.decouple_min_z and g["rho"] >= 0.3 and learning:
                hits.append(dict(g, window_start=float(x[a]), loss_change=dl))
    cause = None
    ev: dict[str, Any] = {"val_loss_best_at": x_best, "val_loss_best": float(math.exp(base[b])),
                          "val_loss_end_vs_best": loss_change, "val_loss_noise": sig_l}
    if train_fall is not None:
        ev["train_loss_fall"] = train_fall
    if hits:
        pri = view.score_name
        g = next((h for h in hits if h["score"] == f"val/{pri}"), None) or \
            max(hits, key=lambda h: h["z"])
        sc = view.val_scores[g["score"].split("/", 1)[1]]
        cause = ("loss-rising-accuracy-rising" if loss_change >= 0.05 and loss_change >=
                 2 * sig_l else "loss-flat-accuracy-rising")
        if cause == "loss-rising-accuracy-rising" and not view.found.get("overfitting"):
            cause = "loss-flat-accuracy-rising"
        x_best = g["window_start"]
        loss_change = g["loss_change"]
        ev.update({"from": x_best, "val_loss_change": loss_change,
                   "score": g["score"], "score_at_best_loss": g["at_best"],
                   "score_last": g["end"], "score_gain": g["gain"], "score_noise": g["sigma"],
                   "z": g["z"]})
        s0, s1 = g["at_best"], g["end"]
        lsm = np.exp(base)
        level = float(np.median(y[b:]))
    else:
        # reverse case, strict: a long run whose loss keeps falling a lot while its score does
        # not move at all (well short of a perfect score)
        sc = view.val_score
        if sc is None or n < 10 or len(sc) < 10:
            return []
        a = 0
        fall = float((math.exp(base[a]) - math.exp(base[-1])) / math.exp(base[a]))
        ssm = np.interp(x, sc.x, smooth(sc.y, 3))
        drift = float(ssm[-1] - ssm[a])
        sig_s = noise_sigma(sc.y)
        sig_s = sig_s if math.isfinite(sig_s) else 0.0
        flat_score = (abs(drift) <= max(0.005, 2 * sig_s)
                      and float(np.ptp(sc.y)) <= max(0.01, 2 * sig_s))
        if not (fall >= th.decouple_min_loss_fall and flat_score and float(ssm[-1]) < 0.9
                and fall >= 3 * sig_l and learning):
            return []
        cause = "loss-falling-accuracy-flat"
        ev.update({"val_loss_fall": fall, "from": float(x[a]), "score": sc.key,
                   "score_drift": drift})
        s0, s1 = float(ssm[a]), float(ssm[-1])
        lsm = np.exp(base)
        level = float(np.median(y))
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
    best_loss_x = x_best
    best_score_x = float(sc.x[int(np.argmax(smooth(sc.y, 3)))])
    if cause in ("loss-flat-accuracy-rising", "loss-rising-accuracy-rising"):
        rising = cause == "loss-rising-accuracy-rising"
        title = ("validation accuracy rises while validation loss rises" if rising else
                 "validation accuracy rises while validation loss stays flat")
        lv_txt = (f"rises {pct(loss_change)} above its best ({fmt(ev['val_loss_best'])} at {u} "
                  f"{fmt(x_best)})" if rising else
                  f"stays around {fmt(level)} after its best at {u} {fmt(x_best)}")
        expl = (f"The validation loss {lv_txt} while "
                f"'{sc.key}' rises from {fmt(s0)} to {fmt(s1)}"
                + (f" and the training loss falls by {pct(train_fall)}" if train_fall else "")
                + ". Cross-entropy only looks at the probability given to the true class, "
                "accuracy only at which class has the largest probability, so the two can "
                "disagree. ")
        if rising:
            expl += ("Here more validation samples still cross to the right side of the "
                     "decision boundary (the score rises) while the mistakes that remain become "
                     "confident ones, which cross-entropy punishes without bound (-ln 0.05 = 3.0 "
                     "against -ln 0.9 = 0.1): the model is overfitting in its probabilities "
                     "before it overfits in its answers." + stats_txt)
        else:
            expl += (f"A loss of {fmt(level)} means the typical true-class probability is "
                     f"exp(-{fmt(level)}) = {fmt(geo)}"
                     + (", below 1/e = 0.368: the predictions are spread over several classes "
                        "with close values, so small shifts move the argmax onto the right class "
                        "(accuracy up) while other samples become a bit more confidently wrong, "
                        "and the average -log p_true hardly moves." if level > 1 else
                        ": most samples are already right, so new correct answers add little to "
                        "the average while a few confident mistakes hold it up.")
                     + stats_txt)
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
                f"{pct(ev['val_loss_fall'])} ({fmt(lsm[n // 3])} -> {fmt(lsm[-1])}) while "
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
    return [Finding(CODE, "info", title, float(ev.get("from", x_best)), float(x[-1]), expl, ev,
                    recs,
                    cause=cause, unit=u, series=[v.key, sc.key])]
