"""``class-imbalance``: label frequencies (from the statistics) far from uniform.

A warning when the minority classes are also recalled poorly (accuracy well above balanced
accuracy), otherwise information.  Class weights are computed like scikit-learn's
``class_weight="balanced"``: ``1 / (C * f_c)``.

>>> import numpy as np
>>> from lossdiag.history import History
>>> from lossdiag.diagnosis import diagnose
>>> st = {"label_freq": np.array([0.9, 0.05, 0.05]), "accuracy": 0.9,
...       "balanced_accuracy": 0.34, "recall": np.array([1.0, 0.02, 0.0])}
>>> h = History.from_arrays(np.arange(3), val={"loss": [0.5, 0.4, 0.4]}, stats=[st] * 3)
>>> f = diagnose(h).get("class-imbalance")
>>> f.severity, f.evidence["class_weights"].round(2).tolist()
('warning', [0.37, 6.67, 6.67])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._stats import RunView, SkipCheck, class_weights_balanced, fmt, pct
from .report import Finding, Recommendation

CODE = "class-imbalance"


def check(view: RunView) -> list[Finding]:
    th = view.th
    f = view.label_freq
    if f is None:
        raise SkipCheck("no label frequencies (log lossdiag.Metrics statistics)")
    present = f > 0
    if present.sum() < 2:
        raise SkipCheck("fewer than two classes present in the labels")
    ratio = float(f[present].max() / f[present].min())
    if ratio < th.imbalance_ratio:
        return []
    maj = int(np.argmax(f))
    minor = [int(i) for i in np.flatnonzero(present) if f[i] < 1.0 / present.sum()]
    w = class_weights_balanced(f)
    st = view.stats[-1][1] if view.stats else {}
    x_last = view.stats[-1][0] if view.stats else 0.0
    ev: dict[str, Any] = {"label_freq": f, "ratio": ratio, "majority_class": maj,
                          "minority_classes": minor, "class_weights": w}
    absent = [int(i) for i in np.flatnonzero(~present)]
    if absent:
        ev["absent_classes"] = absent
    gap = None
    if st.get("accuracy") is not None and st.get("balanced_accuracy") is not None:
        acc, bal = float(st["accuracy"]), float(st["balanced_accuracy"])
        if np.isfinite(acc) and np.isfinite(bal):
            gap = acc - bal
            ev["accuracy"] = acc
            ev["balanced_accuracy"] = bal
    if st.get("recall") is not None:
        ev["recall"] = np.asarray(st["recall"], dtype=float)
    sev = "warning" if gap is not None and gap >= th.imbalance_recall_gap else "info"
    minor_txt = ", ".join(f"{i} ({pct(float(f[i]))})" for i in minor[:6])
    expl = (f"Class {maj} makes up {pct(float(f[maj]))} of the labels and the rarest class "
            f"{ratio:.3g}x less (minority: {minor_txt}). The cross-entropy is an average over "
            "samples, so the frequent classes dominate the gradient and the rare ones are "
            "learned late or not at all.")
    if gap is not None:
        expl += (f" Accuracy {fmt(ev['accuracy'])} against balanced accuracy "
                 f"{fmt(ev['balanced_accuracy'])}"
                 + (": the rare classes are poorly recalled." if sev == "warning" else
                    ": the rare classes are handled reasonably well."))
    wt = "{" + ", ".join(f"{i}: {w[i]:.3g}" for i in range(len(w))) + "}"
    recs = [Recommendation("Weight the loss by class", f"balanced weights {wt}",
                           "CrossEntropyLoss(weight=torch.tensor([...])) / Keras class_weight / "
                           "lossdiag weight="),
            Recommendation("Report balanced metrics", "balanced accuracy, macro-F1, mIoU",
                           "plain accuracy hides the rare classes"),
            Recommendation("Resample or use focal loss", "WeightedRandomSampler(1/f_c) or "
                           "focal loss gamma=2", "alternatives to loss weights")]
    unit = view.unit
    x0 = float(view.stats[0][0]) if view.stats else 0.0
    return [Finding(CODE, sev, f"labels are imbalanced ({ratio:.3g}:1)", x0, x_last, expl, ev,
                    recs, cause="imbalanced-labels", unit=unit, series=[])]
