"""``non-finite``: a loss became NaN or infinite; where it happened first, and why.

>>> from lossdiag.history import History
>>> from lossdiag.diagnosis import diagnose
>>> h = History.from_arrays(range(6), train={"loss": [2.3, 1.9, 1.7, 1.6, float("nan"), 1.5]})
>>> f = diagnose(h).get("non-finite")
>>> f.severity, f.start, f.cause
('error', 4.0, 'sudden')
"""

from __future__ import annotations

import math

import numpy as np

from ._stats import RunView, fmt
from .report import Finding, Recommendation

CODE = "non-finite"


def check(view: RunView) -> list[Finding]:
    if not view.nonfinite:
        return []
    # the earliest occurrence at the analysed level decides the span; other levels add detail
    same = [e for e in view.nonfinite if e[1] == view.unit] or view.nonfinite
    key, level, x0, value = min(same, key=lambda e: (e[2], e[0]))
    kind = "NaN" if math.isnan(value) else ("+inf" if value > 0 else "-inf")
    where = {f"{k} ({lv})": x for k, lv, x, _ in view.nonfinite}
    step_first = min((e for e in view.nonfinite if e[1] == "step"), key=lambda e: e[2],
                     default=None)
    # what happened before: growth (overflow after divergence) or a sudden break
    s = view.train_loss if key.startswith("train/") else view.val_loss
    if s is None or s.key != key.split(" ")[0]:
        s = view.main_loss()
    ev: dict[str, object] = {"first_at": x0, "column": key, "value": kind}
    if step_first is not None and level != "step":
        ev["first_step"] = step_first[2]
    if len(where) > 1:
        ev["all_columns"] = where
    growth = None
    if s is not None and len(s) >= 2:
        before = s.y[s.x < x0]
        if before.size >= 2:
            growth = float(before[-1] / max(np.min(before), 1e-300))
            ev["last_finite"] = float(before[-1])
            ev["min_before"] = float(np.min(before))
            ev["rise_before"] = growth
    exploded = growth is not None and growth >= view.th.diverge_min_rise
    if "diverging" in view.found:
        exploded = True
    cause = "overflow-after-divergence" if exploded else "sudden"
    unit = view.unit if level == view.unit else level
    last_x = float(view.history.epochs[-1]) if unit == "epoch" and len(view.history) else x0
    if unit == "step" and view.history.has_steps:
        last_x = float(view.history.steps[-1])
    lr = view.lr_at(x0)
    step_txt = f" (first at step {fmt(step_first[2])})" if "first_step" in ev else ""
    if exploded:
        expl = (f"'{key}' became {kind} at {unit} {fmt(x0)}{step_txt}. Before that it had grown "
                f"from {fmt(ev.get('min_before', float('nan')))} to "
                f"{fmt(ev.get('last_finite', float('nan')))} ({fmt(growth or 0)}x): the weights "
                "ran away until the logits overflowed. Every later value is meaningless; the run "
                "must be restarted with the causes of the divergence fixed.")
        recs = [
            Recommendation("Lower the learning rate", _lr_mag(lr, 10),
                           "the loss was growing before it overflowed"),
            Recommendation("Clip gradients", "clip_grad_norm_(params, max_norm=1.0) / Keras "
                           "clipnorm=1.0", "bounds each update when the gradient spikes"),
            Recommendation("Stop runs at the first NaN", "keras.callbacks.TerminateOnNaN() / "
                           "Lightning detect_anomaly", "saves the compute wasted after this "
                           "point"),
        ]
    else:
        prev = f" (it was {fmt(ev['last_finite'])} just before)" if "last_finite" in ev else ""
        expl = (f"'{key}' became {kind} at {unit} {fmt(x0)}{step_txt}{prev} without growing "
                "first. A sudden NaN/inf usually comes from the numbers, not the optimisation: "
                "log(0) in a hand-written loss (log of a softmax that underflowed), a division "
                "by zero, a NaN or inf in an input batch or label, or float16 overflow without "
                "loss scaling.")
        recs = [
            Recommendation("Compute the loss from logits", "CrossEntropyLoss / "
                           "from_logits=True / lossdiag.cross_entropy on logits",
                           "a fused log-softmax never takes log(0)"),
            Recommendation("Check the inputs and labels of the failing batch",
                           "assert np.isfinite(x).all(); labels in [0, C)",
                           "one bad sample is enough to poison the weights"),
            Recommendation("Use loss scaling or bfloat16 under mixed precision",
                           "torch.cuda.amp.GradScaler()", "float16 overflows above 65504"),
            Recommendation("Clip gradients and lower the LR a little",
                           "max_norm=1.0; " + _lr_mag(lr, 3), "limits the damage of a spike"),
        ]
    return [Finding(CODE, "error", f"loss became {kind}", x0, max(last_x, x0), expl, ev, recs,
                    cause=cause, unit=unit, series=[key])]


def _lr_mag(lr: float | None, factor: float) -> str:
    if lr is None:
        return f"~{fmt(factor)}x smaller"
    return f"~{fmt(factor)}x smaller: from {fmt(lr)} to about {fmt(lr / factor, 2)}"
