"""``stuck``: the model does not learn; which of the usual causes it is.

Causes, separated by evidence (seed 001):

* ``uniform-predictions`` - the loss stays at (or above) chance level ``ln C`` for the whole
  run, on validation or on training data: the output does not depend on the input (dead
  network, frozen weights, broken input, a learning rate far too low or far too high);
* ``constant-predictions`` - the validation score is pinned at one value (accuracy at one exact
  value, F1 or IoU at 0) while the loss does not improve: every sample gets the same answer;
* ``prior-predictions`` - the loss sits at the entropy of the class prior (the model outputs
  the class frequencies and ignores its input);
* ``majority-collapse`` - accuracy equals the majority-class rate and the other classes are
  barely recalled (imbalance); class weights are computed like scikit-learn's "balanced";
* ``lr-too-low`` - the loss barely moves but moves consistently downhill.

A loss that is flat because it has converged to a low value is not stuck, and a first-epoch
spike that the loss merely comes back down from does not count as learning.

>>> import numpy as np
>>> from lossdiag.history import History
>>> from lossdiag.diagnosis import diagnose
>>> loss = 2.3026 - 0.0004 * np.arange(20)                 # ln 10, creeping down
>>> f = diagnose(History.from_arrays(np.arange(20), train={"loss": loss}), num_classes=10
...              ).get("stuck")
>>> f.cause
'lr-too-low'
>>> h = History.from_arrays(np.arange(6), train={"loss": [0.9, 0.8, 0.75, 0.7, 0.66, 0.62]},
...                         val={"loss": [0.70, 0.697, 0.695, 0.696, 0.694, 0.695],
...                              "accuracy": [0.5, 0.52, 0.49, 0.51, 0.5, 0.5]})
>>> diagnose(h, num_classes=2).get("stuck").cause
'uniform-predictions'
"""

from __future__ import annotations

import math
from dataclasses import replace
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
    rel_noise,
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


def _at_chance(s: Series | None, chance: float | None, near: float,
               th: Any) -> dict[str, Any] | None:
    """The curve never gets meaningfully below ``ln C`` (its first point may be above)."""
    if s is None or chance is None or len(s) < 3:
        return None
    y = s.y
    if len(y) >= 5 and rel_noise(y) > th.stuck_steady_noise:
        return None  # a loss that bounces around is oscillating, not stuck
    low = float(np.min(y[1:])) if len(y) > 3 else float(np.min(y))
    if low < (1.0 - near) * chance:
        return None
    return {"series": s.key, "lowest": low, "last": float(y[-1])}


def _pinned_window(sc: Series) -> tuple[int, float, float, bool] | None:
    """Where a score sits at one value: ``(start index, value, spread, exact)``.

    Either all of the last half (the whole curve when short) within a small spread, or one
    exact value repeated in at least half of the records (a collapsed model hits the same
    accuracy whenever its single answer does not change)."""
    n = len(sc)
    if n < 4:
        return None
    k = n if n < 8 else max(4, n // 2)
    w = sc.y[n - k:]
    spread = float(np.ptp(w))
    value = float(np.median(w))
    exact = spread <= 1e-9 * max(1.0, abs(value))
    if exact:
        return n - k, value, spread, exact
    vals, counts = np.unique(np.round(sc.y, 9), return_counts=True)
    j = int(np.argmax(counts))
    if counts[j] >= max(5, n / 2):
        first = int(np.flatnonzero(np.round(sc.y, 9) == vals[j])[0])
        return first, float(vals[j]), 0.0, True
    if spread <= 0.01:
        return n - k, value, spread, exact
    return None


def _pinned_score(view: RunView) -> dict[str, Any] | None:
    """A score stuck at one value while the loss does not improve (validation score first,
    then the training one)."""
    th = view.th
    for sc in (view.val_score, view.train_score):
        if sc is None:
            continue
        res = _pinned_one(view, sc, th)
        if res is not None:
            return res
    return None


def _pinned_one(view: RunView, sc: Series, th: Any) -> dict[str, Any] | None:
    pw = _pinned_window(sc)
    if pw is None:
        return None
    i0, value, spread, exact = pw
    if value >= 0.999:
        return None  # a perfect score that cannot move is not a collapse
    base = sc.name.split("_")[0]
    bad_value = (base in ("f1", "iou", "dice", "mean", "jaccard", "mcc", "kappa")
                 and abs(value) <= 0.02)
    if view.num_classes:
        bad_value |= abs(value - 1.0 / view.num_classes) <= 0.01
    if not exact and not (spread <= th.stuck_pinned_spread and bad_value):
        return None
    # ... and the loss over the same epochs is not improving (a broken metric beside a
    # learning model is not a collapse)
    v = view.val_loss if view.val_loss is not None else view.train_loss
    if sc.split == "train" and view.train_loss is not None:
        v = view.train_loss
    if v is None:
        return None
    x0 = float(sc.x[i0])
    sel = v.x >= x0 - 1e-9
    lv = v.y[sel]
    if len(lv) == 0:
        lv = v.y[-max(1, len(sc) - i0):]
    if len(lv) >= 2:
        head = float(np.median(lv[: max(1, len(lv) // 3)]))
        tail = float(np.median(lv[-max(1, len(lv) // 3):]))
        if head > 0 and (head - tail) / head >= th.stuck_pinned_loss_fall:
            view.notes.append(f"'{sc.key}' stays at {fmt(value, 4)} while '{v.key}' falls "
                              f"{pct((head - tail) / head)}: read as a broken metric, not as a "
                              "collapse")
            return None
    # one answer for every sample, right a fraction a of the time, costs at least the binary
    # entropy h(a) per sample: a lower loss means the answers do depend on the input
    if base.startswith("accuracy") and 0.0 < value < 1.0 and len(lv):
        h_a = -(value * math.log(value) + (1 - value) * math.log(1 - value))
        if float(np.median(lv)) < 0.9 * h_a:
            return None
    return {"score": sc.key, "value": value, "spread": spread, "exact": exact,
            "from": x0, "epochs_pinned": int(np.sum(sc.x >= x0 - 1e-9))}


def _not_converged(view: RunView, level: float, chance: float | None) -> bool:
    """A flat loss is slow learning only where it is still high: near chance level, or (with no
    class count) with an accuracy that is not high.  A window cut from a converged run is
    flat too."""
    if chance is not None:
        return level >= view.th.stuck_converged_fraction * chance
    acc = view.val_score if view.val_score is not None else view.train_score
    return acc is None or float(np.median(acc.y)) < view.th.stuck_converged_score


def _frozen(s: Series | None, points: int) -> dict[str, Any] | None:
    """A loss constant to 1e-4 (relative) over its last ``points`` points, and not ~0."""
    if s is None or len(s) < points:
        return None
    y = s.y
    k = 1
    while k < len(y) and np.ptp(y[len(y) - k - 1:]) <= 1e-4 * abs(float(y[-1])):
        k += 1
    if k < points or k < len(y) // 2:
        return None
    v = float(y[-1])
    if abs(v) <= 1e-3 * max(float(np.max(np.abs(y))), 1e-12) or abs(v) < 1e-6:
        return None  # converged to (rounded) zero
    digits = len(f"{abs(v):.10g}".replace(".", "").strip("0"))
    if digits < 4:
        return None  # logged with too few digits to tell frozen from converged
    return {"series": s.key, "value": v, "points": k, "from": float(s.x[len(y) - k]),
            "spread": float(np.ptp(y[len(y) - k:]))}


def _ln_k(s: Series | None) -> int | None:
    """Without a class count: a loss flat at exactly ln k (k <= 20) is chance level."""
    if s is None or len(s) < 5:
        return None
    late = s.y[len(s) // 2:]
    med = float(np.median(late))
    if med <= 0 or float(np.ptp(late)) > 0.01 * med:
        return None
    for k in range(2, 21):
        if abs(med - math.log(k)) <= 0.003 * math.log(k):
            return k
    return None


def _cut(s: Series | None, x0: float) -> Series | None:
    return None if s is None else s.since(x0)


def check(view: RunView) -> list[Finding]:
    div = view.found.get("diverging")
    if div and div.get("cause") != "loss-above-chance":
        # after a divergence only one thing is worth saying: the run died into a constant state
        # (at chance level, a frozen loss, one answer for everything) and never came back
        s = view.main_loss()
        post = s.x[s.x >= float(div["start"])] if s is not None else np.zeros(0)
        if post.size < 10:
            raise SkipCheck("the loss diverges (see 'diverging')")
        x0 = float(np.median(post))
        tail = s.y[s.x >= x0]
        if tail.size < 5 or np.any(tail <= 0) or float(np.ptp(np.log(tail))) > math.log(1.2):
            raise SkipCheck("the loss diverges (see 'diverging')")  # still moving: no collapse
        sub = replace(view, train_loss=_cut(view.train_loss, x0),
                      val_loss=_cut(view.val_loss, x0), val_score=_cut(view.val_score, x0),
                      train_score=_cut(view.train_score, x0), stats=[])
        res = _check(sub, after_divergence=True)
        if not res:
            raise SkipCheck("the loss diverges (see 'diverging')")
        return res
    return _check(view)


def _check(view: RunView, *, after_divergence: bool = False) -> list[Finding]:
    th = view.th
    s: Series | None = view.main_loss()
    if s is None:
        raise SkipCheck("no loss curve")
    scores = [sc for sc in (view.val_score, view.train_score) if sc is not None]
    if len(s) < 4 and (view.val_loss is None or len(view.val_loss) < 4) and \
            not any(len(sc) >= 4 for sc in scores):
        raise SkipCheck(f"only {len(s)} loss values (need 4)")
    near = th.stuck_near_level
    chance = view.chance
    inferred = None
    if chance is None:
        k = _ln_k(view.val_loss) or _ln_k(view.train_loss)
        if k is not None:
            inferred = k
            chance = math.log(k)
            view.notes.append(f"the loss sits at ln {k} = {fmt(chance, 4)}: read as chance "
                              f"level for {k} classes (pass num_classes to confirm)")
    prior = view.prior_entropy
    collapse = _majority_collapse(view)
    chance_val = _at_chance(view.val_loss, chance, near, th)
    tr = view.train_loss
    chance_train = None
    if tr is not None and len(tr) >= 4 and chance is not None:
        late = tr if after_divergence else tr.since(float(tr.x[len(tr) // 2]))
        chance_train = _at_chance(late, chance, near, th)
    pinned = _pinned_score(view)
    # a loss at or above chance while the accuracy is far above chance is a few huge losses
    # (confident mistakes, numerical trouble), not a model that learned nothing
    acc = view.val_score if view.val_score is not None else view.train_score
    if (chance_val or chance_train) and acc is not None and view.num_classes and \
            acc.name.split("_")[0] in ("accuracy", "balanced") and len(acc) >= 2:
        c = view.num_classes
        if float(np.median(acc.y)) >= 1.0 / c + th.stuck_learned_accuracy * (1.0 - 1.0 / c):
            view.notes.append(f"the loss is at or above chance level while '{acc.key}' is "
                              f"{fmt(float(np.median(acc.y)))}: a few confident mistakes dominate "
                              "the loss, the model did learn")
            chance_val = chance_train = None
    frozen = _frozen(tr, th.stuck_frozen_points) or _frozen(view.val_loss,
                                                            th.stuck_frozen_points)

    x, y = s.x, s.y
    n = len(y)
    u = view.unit
    # a first-epoch spike that the loss merely comes back down from is not learning
    first = float(y[0])
    if n >= 5 and first > 1.2 * float(np.median(y[1:4])):
        first = float(np.median(y[1:4]))
    sm = smooth(y, th.smooth_window if n >= 3 * th.smooth_window else 3)
    best = float(np.min(sm))
    improvement = (first - best) / abs(first) if first != 0 else 0.0
    flat = improvement < th.stuck_max_improvement
    rho = spearman(x, y) if n >= 3 else math.nan
    late = float(np.median(y[n - max(3, n // 3):]))
    prior_distinct = prior is not None and chance is not None and \
        prior < th.stuck_prior_distinct * chance
    at_prior = prior_distinct and abs(late - prior) <= max(near, 0.1) * prior

    ev: dict[str, Any] = {"series": s.key, "first": float(y[0]), "best": best,
                          "last": float(y[-1]), "improvement": improvement}
    if chance is not None:
        ev["chance_level"] = chance
    if inferred is not None:
        ev["classes_inferred"] = inferred
    if prior is not None:
        ev["prior_entropy"] = prior
    lr = view.lr_at(float(x[-1]))
    if lr is not None:
        ev["lr"] = lr

    cause = None
    if after_divergence:
        collapse = None
        prior = None
    if collapse is not None:
        cause = "majority-collapse"
    elif flat and n >= th.min_points and rho <= -th.stuck_lr_low_consistency and \
            _not_converged(view, late, chance) and not after_divergence:
        cause = "lr-too-low"
    elif chance_val is not None or chance_train is not None:
        cause = "uniform-predictions"
    elif pinned is not None:
        cause = "constant-predictions"
    elif frozen is not None:
        cause = "frozen"
    elif (flat or improvement < 2 * th.stuck_max_improvement) and at_prior and n >= 3:
        cause = "prior-predictions"
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
        at_c = chance is not None and abs(late - chance) <= near * chance
        expl = (f"'{s.key}' went from {fmt(float(y[0]))} to {fmt(float(y[-1]))} in "
                f"{fmt(float(x[-1] - x[0]))} {u}s ({pct(improvement)} in total, about "
                f"{pct(per_epoch, 2)} per {u}) and it decreases consistently (rank correlation "
                f"with time {fmt(rho)}): the optimiser is moving in the right direction with "
                "steps that are far too small."
                + (f" The loss is still at chance level ln C = {fmt(chance)}, where an untrained "
                   "network starts." if at_c and chance is not None else ""))
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
        assert chance is not None
        hit = chance_val if chance_val is not None else chance_train
        assert hit is not None
        ev["at_chance_series"] = hit["series"]
        ev["lowest"] = hit["lowest"]
        span = (float(x[0]), float(x[-1]))
        above = hit["lowest"] > (1 + near) * chance
        cls_txt = (f"{view.num_classes} classes" if view.num_classes else
                   f"{inferred} classes (inferred from the level)")
        where = "validation" if hit["series"].startswith("val/") else "training"
        title = ("the loss never gets below chance level ln C" if not above else
                 "the loss stays above chance level ln C")
        expl = (f"'{hit['series']}' never goes below {fmt(hit['lowest'])}"
                + (f" (last {fmt(hit['last'])})" if hit["last"] != hit["lowest"] else "")
                + f", against ln C = {fmt(chance)}, the loss of predicting all {cls_txt} with "
                "equal probability"
                + (": the model is confidently wrong, worse than a uniform guess" if above
                   else "")
                + f". On {where} data the model has learned nothing that beats a guess")
        if where == "validation" and tr is not None and len(tr) >= 3:
            t0, t1 = float(tr.y[0]), float(tr.y[-1])
            expl += (f", although the training loss went {fmt(t0)} -> {fmt(t1)}"
                     + (": what it learns does not carry over" if t1 < (1 - near) * chance
                        else ""))
        if pinned is not None:
            expl += (f"; '{pinned['score']}' is pinned at {fmt(pinned['value'], 4)} (one answer "
                     "for every sample)")
            ev["pinned_score"] = pinned["value"]
        expl += (". Usual causes: the network is dead (no gradient reaches the weights: frozen "
                 "layers, optimizer.step() missing, dead ReLUs, saturated outputs), the input "
                 "is broken (all zeros, constant, not normalised, labels shuffled "
                 "independently of the inputs), or the learning rate is far too low - or so "
                 "high that the weights were thrown into a flat region.")
        recs.append(Recommendation("Overfit a single batch", "~100 steps on 1 batch must drive "
                                   "the loss towards 0", "proves gradients flow end to end"))
        recs.append(Recommendation("Check gradients and inputs", "per-layer gradient norms > 0; "
                                   "inputs mean~0 std~1 and varying; labels aligned with inputs",
                                   "the usual culprits of a constant output"))
        recs.append(Recommendation("Try a 10x smaller and a 10x larger learning rate", "short "
                                   "runs of 2-3 epochs" + (f" around lr={fmt(lr)}" if lr else ""),
                                   "if the two checks pass"))
    elif cause == "constant-predictions":
        assert pinned is not None
        ev.update({"pinned_score": pinned["score"], "pinned_value": pinned["value"],
                   "pinned_from": pinned["from"], "exact": pinned["exact"]})
        span = (pinned["from"], float(x[-1]))
        title = f"'{pinned['score']}' is pinned at one value: the model gives one answer"
        expl = (f"'{pinned['score']}' is {fmt(pinned['value'], 4)} at every {u} from "
                f"{u} {fmt(pinned['from'])}"
                + (" (exactly)" if pinned["exact"] else f" (spread {fmt(pinned['spread'])})")
                + " while the loss does not improve: the model gives the same answer (one "
                "class) for every validation sample, whatever the input. This is a collapse to "
                "one class, typically the majority class of an imbalanced set, or an output "
                "layer saturated so far that its gradient vanishes.")
        recs.append(Recommendation("Check the class balance and weight the loss",
                                   "class weights 1/(C*f_c) (sklearn 'balanced')",
                                   "a minority class that costs little is never predicted"))
        recs.append(Recommendation("Lower the learning rate", "~10x" + (
            f": from {fmt(lr)} to about {fmt(lr / 10, 2)}" if lr else ""),
            "a too-large step can saturate the output layer into a constant answer"))
        recs.append(Recommendation("Overfit a single batch", "~100 steps on 1 batch",
                                   "separates a bug (labels, input) from an optimisation "
                                   "problem"))
    elif cause == "frozen":
        assert frozen is not None
        ev.update(frozen)
        span = (frozen["from"], float(x[-1]))
        title = f"'{frozen['series']}' is frozen at one value"
        expl = (f"'{frozen['series']}' is {fmt(frozen['value'], 6)} at every one of the last "
                f"{frozen['points']} {u}s (spread {fmt(frozen['spread'])}): not a converged "
                "loss (that would still move in its last digits) but no update at all. Either "
                "the weights no longer change "
                "(a zero learning rate, gradients that are all zero or NaN and skipped, a "
                "frozen model) or the loss is clamped (a maximum, a log of a clipped "
                "probability) so its gradient is zero.")
        recs.append(Recommendation("Check that the weights change", "compare a parameter "
                                   "tensor before and after optimizer.step()",
                                   "separates a dead optimiser from a clamped loss"))
        recs.append(Recommendation("Check the gradients", "print per-layer gradient norms; "
                                   "look for NaN/inf", "NaN gradients are often skipped silently"))
        recs.append(Recommendation("Check the learning rate schedule", "print the LR each "
                                   f"{u}" + (f" (lr={fmt(lr)} here)" if lr is not None else ""),
                                   "a schedule that decayed to 0 freezes the run"))
    else:
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
    # seen on the validation side while the training loss keeps falling: the run is learning
    # something, so overfitting is still judged
    train_learning = tr is not None and len(tr) >= 3 and \
        float(np.median(tr.y[-max(1, len(tr) // 3):])) <= 0.8 * float(tr.y[0])
    if after_divergence:
        expl = ("After the divergence the run never recovered: " + expl[0].lower() + expl[1:])
        title = "after diverging, " + title
    view.found[CODE] = {"cause": cause, "val_only": after_divergence or (
        train_learning and chance_train is None)}
    return [Finding(CODE, "warning", title, span[0], span[1], expl, ev, recs, cause=cause,
                    unit=u, series=[s.key])]
