"""``stuck``: the loss does not decrease meaningfully; which of the usual causes it is.

Causes, separated by evidence (seed 001):

* ``lr-too-low`` - the loss barely moves but moves consistently downhill;
* ``uniform-predictions`` - the loss sits at chance level ``ln C`` (the network outputs equal
  probabilities: dead network, frozen weights, broken input, or a learning rate far too low);
* ``prior-predictions`` - the loss sits at the entropy of the class prior (the model outputs
  the class frequencies and ignores its input);
* ``majority-collapse`` - accuracy equals the majority-class rate and the other classes are
  barely recalled (imbalance); class weights are computed like scikit-learn's "balanced";
* ``plateau`` - flat at a level none of the above explains.

>>> import numpy as np
>>> from lossdiag.history import History
>>> from lossdiag.diagnosis import diagnose
>>> loss = 2.3026 - 0.0004 * np.arange(20)                 # ln 10, creeping down
>>> f = diagnose(History.from_arrays(np.arange(20), train={"loss": loss}), num_classes=10
...              ).get("stuck")
>>> f.cause
'lr-too-low'
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._stats import (
    RunView,
    Series,
    SkipCheck,
    class_weights_balanced,
    fmt,
    noise_sigma,
    pct,
    smooth,
    spearman,
)
from .report import Finding, Recommendation

CODE = "stuck"


def _weights_text(w: np.ndarray) -> str:
    return "{" + ", ".join(f"{i}: {w[i]:.3g}" for i in range(len(w))) + "}"


def _majority_collapse(view: RunView) -> dict[str, Any] | None:
    """Accuracy at the majority-class rate with the other classes barely recalled."""
    th = view.th
    sc = view.val_score if view.val_score is not None else view.train_score
    if sc is None or len(sc) < th.min_points or view.score_name not in (
            "accuracy", "binary_accuracy"):
        return None
    n = len(sc)
    late = sc.y[n - max(th.min_points, n // 3):]
    acc_late = float(np.median(late))
    if view.label_freq is not None:
        freq = view.label_freq
        maj = int(np.argmax(freq))
        rate = float(freq[maj])
        present = freq[freq > 0]
        if present.size < 2 or present.max() / present.min() < th.imbalance_ratio:
            return None  # balanced labels: a one-class output is not a majority collapse
        sig = noise_sigma(sc.y)
        tol = max(th.stuck_majority_tol, 2 * sig if math.isfinite(sig) else 0.0)
        if abs(acc_late - rate) > tol:
            return None
        st = view.stats[-1][1] if view.stats else {}
        recall = st.get("recall")
        out: dict[str, Any] = {"majority_class": maj, "majority_rate": rate,
                               "accuracy": acc_late, "label_freq": freq}
        if recall is not None:
            r = np.asarray(recall, dtype=float)
            others = [i for i in range(len(r)) if i != maj and freq[i] > 0 and math.isfinite(r[i])]
            mr = float(np.mean(r[others])) if others else math.nan
            if not (mr < th.stuck_minority_recall):
                return None
            out["minority_recall"] = mr
            out["recall"] = r
        else:
            pf = st.get("pred_freq")
            if pf is None or float(np.asarray(pf)[maj]) < 1 - th.stuck_minority_recall * (1 - rate):
                return None
            out["pred_share_majority"] = float(np.asarray(pf)[maj])
        if st.get("balanced_accuracy") is not None:
            out["balanced_accuracy"] = float(st["balanced_accuracy"])
        return out
    # no label frequencies: a constant accuracy means constant predictions ...
    mode = float(np.median(sc.y))
    same = np.abs(sc.y - mode) < 1e-4
    if same.mean() < th.stuck_constant_score_frac or not 0.5 < mode < 1:
        return None  # a constant prediction scores > 50% only if one class dominates
    # ... but only if the loss is compatible with them: predicting one class for everything,
    # right a fraction a of the time, costs at least the binary entropy h(a) per sample
    loss = view.val_loss if sc.split == "val" else view.train_loss
    h_a = -(mode * math.log(mode) + (1 - mode) * math.log(1 - mode))
    if loss is not None and float(np.median(loss.y)) < 0.9 * h_a:
        return None
    return {"accuracy": mode, "constant_share": float(same.mean())}


def _lr_factor(rate: float, target: float) -> float:
    if not (rate > 0):
        return 100.0
    f = target / rate
    return float(min(1000.0, max(10.0, 10 ** round(math.log10(f)))))


def check(view: RunView) -> list[Finding]:
    th = view.th
    if "diverging" in view.found:
        raise SkipCheck("the loss diverges (see 'diverging')")
    s: Series | None = view.main_loss()
    if s is None:
        raise SkipCheck("no loss curve")
    if len(s) < th.min_points:
        raise SkipCheck(f"only {len(s)} loss values (need {th.min_points})")
    x, y = s.x, s.y
    n = len(y)
    u = view.unit
    sm = smooth(y, th.smooth_window if n >= 3 * th.smooth_window else 3)
    first = float(y[0])
    best = float(np.min(sm))
    improvement = (first - best) / abs(first) if first != 0 else 0.0
    late = float(np.median(y[n - max(3, n // 3):]))
    mid = float(sm[n // 2])
    late_improvement = (mid - best) / abs(mid) if mid != 0 else 0.0
    late_flat = late_improvement < th.stuck_max_improvement
    flat = improvement < th.stuck_max_improvement
    rho = spearman(x, y)
    chance = view.chance
    prior = view.prior_entropy
    near = th.stuck_near_level
    at_chance = chance is not None and abs(late - chance) <= near * chance
    prior_distinct = prior is not None and chance is not None and \
        prior < th.stuck_prior_distinct * chance
    at_prior = prior_distinct and abs(late - prior) <= max(near, 0.1) * prior
    collapse = _majority_collapse(view)

    ev: dict[str, Any] = {"series": s.key, "first": first, "best": best, "last": float(y[-1]),
                          "improvement": improvement}
    if chance is not None:
        ev["chance_level"] = chance
    if prior is not None:
        ev["prior_entropy"] = prior
    lr = view.lr_at(float(x[-1]))
    if lr is not None:
        ev["lr"] = lr

    cause = None
    if collapse is not None:
        cause = "majority-collapse"
    elif flat and rho <= -th.stuck_lr_low_consistency:
        cause = "lr-too-low"
    elif flat and at_chance:
        cause = "uniform-predictions"
    elif (flat or late_flat) and at_prior:
        cause = "prior-predictions"
    elif late_flat and at_chance and first > chance:
        cause = "uniform-predictions"
    elif flat:
        score = view.val_score or view.train_score
        if score is not None and len(score) >= th.min_points:
            ssm = smooth(score.y, 3)
            if ssm[-1] - ssm[0] >= th.decouple_min_score_rise:
                return []  # the model is learning: loss/accuracy decoupling, not stuck
        ref = prior if prior_distinct else chance
        if ref is not None and late < 0.5 * ref:
            view.notes.append(f"the loss is flat from the start but low ({fmt(late)} vs "
                              f"{fmt(ref)}): read as early convergence, not as stuck")
            return []
        if ref is None and score is not None and float(np.median(score.y)) >= th.stuck_high_score:
            view.notes.append("the loss is flat from the start but the accuracy is high: read as "
                              "early convergence (give --num-classes to check against ln C)")
            return []
        cause = "plateau"
    if cause is None:
        return []

    per_epoch = improvement / max(float(x[-1] - x[0]), 1.0)
    ev["improvement_per_" + u] = per_epoch
    recs: list[Recommendation] = []
    span = (float(x[0]), float(x[-1]))
    if cause == "majority-collapse":
        assert collapse is not None
        ev.update({k: v for k, v in collapse.items()})
        title = "the model predicts the majority class"
        if "majority_rate" in collapse:
            freq = collapse["label_freq"]
            w = class_weights_balanced(freq)
            ev["class_weights"] = w
            maj, rate = collapse["majority_class"], collapse["majority_rate"]
            rec_txt = ""
            if "minority_recall" in collapse:
                mr = pct(collapse["minority_recall"])
                rec_txt = f" and the other classes are recalled only {mr} of the time on average"
            expl = (f"The accuracy stays at {fmt(collapse['accuracy'])}, which is the share of "
                    f"class {maj} in the labels ({pct(rate)}){rec_txt}: predicting class {maj} "
                    "for everything already scores that. The cross-entropy is an average over "
                    "samples, so with this imbalance the majority class dominates the gradient "
                    "and the cheapest way down is to learn the class frequencies"
                    + (f" (the loss {fmt(late)} is close to the entropy of the label frequencies,"
                       f" {fmt(prior)})" if at_prior and prior is not None else "")
                    + "; the minority classes are left behind.")
            recs.append(Recommendation("Weight the loss by class", "class weights (sklearn "
                                       f"'balanced' = 1/(C*f_c)): {_weights_text(w)}",
                                       "each class then contributes equally to the gradient; "
                                       "CrossEntropyLoss(weight=...) / Keras class_weight"))
            recs.append(Recommendation("Resample the training set", "oversample minority "
                                       "classes (WeightedRandomSampler with weight 1/f_c per "
                                       "sample) or undersample the majority",
                                       "balanced batches"))
        else:
            expl = (f"The accuracy is {fmt(collapse['accuracy'])} in "
                    f"{pct(collapse['constant_share'])} of the {u}s while the loss changes: "
                    "the model gives the same answer for every sample, typically the most "
                    "frequent class of an imbalanced data set. Log lossdiag.Metrics statistics "
                    "(label frequencies, per-class recall) to confirm.")
            recs.append(Recommendation("Weight the loss by class", "class weights 1/(C*f_c) "
                                       "from your label frequencies (sklearn 'balanced')",
                                       "so minority classes count as much as the majority"))
        recs.append(Recommendation("Measure what matters", "balanced accuracy / macro-F1 / "
                                   "mIoU instead of accuracy",
                                   "plain accuracy rewards the collapse"))
        recs.append(Recommendation("Try focal loss or logit adjustment", "gamma=2; or add "
                                   "log(prior) to the logits during training",
                                   "shifts attention to the rare classes"))
    elif cause == "lr-too-low":
        factor = _lr_factor(per_epoch, th.stuck_target_rate)
        title = "the loss creeps down far too slowly"
        expl = (f"'{s.key}' went from {fmt(first)} to {fmt(float(y[-1]))} in "
                f"{fmt(float(x[-1] - x[0]))} {u}s ({pct(improvement)} in total, about "
                f"{pct(per_epoch, 2)} per {u}) and it decreases consistently (rank correlation "
                f"with time {fmt(rho)}): the optimiser is moving in the right direction with "
                "steps that are far too small."
                + (f" The loss is still at chance level ln C = {fmt(chance)}, where an untrained "
                   "network starts." if at_chance and chance is not None else ""))
        mag = f"~{fmt(factor)}x" + (f": from {fmt(lr)} to about {fmt(lr * factor, 2)}"
                                   if lr is not None else "")
        recs.append(Recommendation("Raise the learning rate", mag,
                                   "a healthy early phase lowers the loss "
                                   f"~{pct(th.stuck_target_rate)} per {u}; this run manages "
                                   f"{pct(per_epoch, 2)}"))
        recs.append(Recommendation("Run a learning-rate range test", "raise the LR "
                                   "exponentially over ~100 steps; use ~1/10 of the LR at the "
                                   "loss minimum", "finds the usable range in minutes"))
        recs.append(Recommendation("Check the schedule really applies the LR you set",
                                   "print optimizer.param_groups[0]['lr'] each epoch",
                                   "a scheduler starting at 0 or a wrong unit looks the same"))
    elif cause == "uniform-predictions":
        title = "the loss sits at chance level ln C"
        expl = (f"'{s.key}' stays at {fmt(late)}, within {pct(near)} of ln C = {fmt(chance)}: "
                f"the loss of predicting all {view.num_classes} classes with equal probability. "
                "The output does not depend on the input: the network is dead (no gradient "
                "reaches the weights: frozen layers, optimizer.step() missing, dead ReLUs), the "
                "input is broken (all zeros, constant, not normalised, labels shuffled "
                "independently of the inputs), or the learning rate is far too low.")
        recs.append(Recommendation("Overfit a single batch", "~100 steps on 1 batch must drive "
                                   "the loss towards 0", "proves gradients flow end to end"))
        recs.append(Recommendation("Check gradients and inputs", "per-layer gradient norms > 0; "
                                   "inputs mean~0 std~1 and varying; labels aligned with inputs",
                                   "the usual culprits of a constant output"))
        recs.append(Recommendation("Raise the learning rate", "~10x" + (
            f": from {fmt(lr)} to about {fmt(lr * 10, 2)}" if lr is not None else ""),
            "if the two checks pass"))
    elif cause == "prior-predictions":
        title = "the model predicts the class frequencies"
        expl = (f"'{s.key}' stays at {fmt(late)}, the entropy of the label frequencies "
                f"({fmt(prior)}), below chance level ln C = {fmt(chance)}: the model learned "
                "how often each class occurs (the output bias) and nothing from the input. "
                "The features carry no usable signal for it yet: check the input pipeline, the "
                "capacity and the learning rate; with imbalanced labels, weight the classes.")
        recs.append(Recommendation("Check that the inputs reach the model", "visualise a batch; "
                                   "compare loss with inputs zeroed", "identical losses mean the "
                                   "input is ignored"))
        if view.label_freq is not None:
            w = class_weights_balanced(view.label_freq)
            ev["class_weights"] = w
            recs.append(Recommendation("Weight the loss by class", f"{_weights_text(w)}",
                                       "stops the prior from being the easy optimum"))
        recs.append(Recommendation("Raise the learning rate or the capacity", "LR ~10x or a "
                                   "larger model", "if the input is fine"))
    else:
        title = "the loss does not decrease"
        expl = (f"'{s.key}' went from {fmt(first)} to {fmt(float(y[-1]))} (best {fmt(best)}, "
                f"{pct(improvement)} better than the start) over {n} {u}s without a consistent "
                "trend. Without the number of classes or label frequencies the level cannot be "
                "compared with chance; pass num_classes / log Metrics statistics for a sharper "
                "diagnosis.")
        recs.append(Recommendation("Overfit a single batch", "~100 steps on 1 batch",
                                   "separates a bug from an optimisation problem"))
        recs.append(Recommendation("Try a 10x larger and a 10x smaller learning rate",
                                   "short runs of a few epochs", "locates the usable range"))
    view.found[CODE] = {"cause": cause}
    return [Finding(CODE, "warning", title, span[0], span[1], expl, ev, recs, cause=cause,
                    unit=u, series=[s.key])]
