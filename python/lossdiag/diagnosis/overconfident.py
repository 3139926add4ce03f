"""``overconfident``: validation loss rises while accuracy is flat and calibration error grows.

Needs the per-epoch validation statistics of ``lossdiag.Metrics`` (``ece``, ``reliability``).
Cross-entropy punishes a confident mistake without bound (``-ln 0.1 = 2.3`` against
``-ln 0.9 = 0.105`` for a correct answer at the same confidence, seed 003), so mistakes made more
confident raise the loss although the argmax, and so the accuracy, does not move.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._stats import RunView, SkipCheck, fmt, noise_sigma, pct, smooth
from .report import Finding, Recommendation

CODE = "overconfident"


def _confident_wrong(st: Mapping[str, Any], level: float = 0.9) -> float | None:
    rel = st.get("reliability")
    if not isinstance(rel, Mapping):
        return None
    try:
        edges = np.asarray(rel["bin_edges"], dtype=float)
        cnt = np.asarray(rel["count"], dtype=float)
        acc = np.nan_to_num(np.asarray(rel["accuracy"], dtype=float))
    except (KeyError, TypeError, ValueError):
        return None
    total = cnt.sum()
    if total <= 0 or len(edges) != len(cnt) + 1:
        return None
    sel = edges[:-1] >= level - 1e-9
    return float((cnt[sel] * (1 - acc[sel])).sum() / total)


def _mean_confidence(st: Mapping[str, Any]) -> float | None:
    rel = st.get("reliability")
    if not isinstance(rel, Mapping):
        return None
    try:
        c = np.nan_to_num(np.asarray(rel["confidence"], dtype=float))
        cnt = np.asarray(rel["count"], dtype=float)
    except (KeyError, TypeError, ValueError):
        return None
    return float((c * cnt).sum() / cnt.sum()) if cnt.sum() > 0 else None


def check(view: RunView) -> list[Finding]:
    th = view.th
    if not view.stats:
        raise SkipCheck("no validation statistics (log lossdiag.Metrics(...).compute())")
    ece = view.stat_curve("ece")
    if ece is None or len(ece[0]) < 3:
        raise SkipCheck("fewer than 3 epochs with a calibration error (ece) in the statistics")
    v, sc = view.val_loss, view.val_score
    if v is None or sc is None:
        raise SkipCheck("needs validation loss and validation accuracy")
    if len(v) < th.min_points:
        raise SkipCheck(f"only {len(v)} validation points (need {th.min_points})")
    if "diverging" in view.found or view.found.get("stuck"):
        raise SkipCheck("the run diverges or is stuck")
    u = view.unit
    n = len(v)
    w = th.smooth_window if n >= 3 * th.smooth_window else 3
    sm = smooth(v.y, w)
    b = int(np.argmin(sm))
    rise = float(sm[-1] / sm[b] - 1.0)
    sig = noise_sigma(v.y)
    if rise < th.overconf_min_rise or n - 1 - b < 2 or (
            math.isfinite(sig) and sm[-1] - sm[b] < th.noise_sigmas * sig):
        return []
    ssm = np.interp(v.x, sc.x, smooth(sc.y, 3))
    dscore = float(ssm[-1] - ssm[b])
    if dscore > th.overconf_max_score_change:
        return []  # accuracy still rising: see loss-accuracy-decoupling
    ex, ey = ece
    xb, xl = float(v.x[b]), float(v.x[-1])
    e_b = float(ey[int(np.argmin(np.abs(ex - xb)))])
    e_l = float(np.median(ey[-min(3, len(ey)):]))
    if not (e_l - e_b >= th.overconf_min_ece_rise and e_l >= th.overconf_ece_ratio * e_b):
        return []
    st_b, st_l = view.stats_at(xb) or {}, view.stats_at(xl) or {}
    ev: dict[str, Any] = {"best_epoch" if u == "epoch" else "best_step": xb,
                          "val_loss_best": float(sm[b]), "val_loss_last": float(sm[-1]),
                          "loss_rise": rise, "score_change": dscore, "ece_best": e_b,
                          "ece_last": e_l}
    cw_b, cw_l = _confident_wrong(st_b), _confident_wrong(st_l)
    if cw_b is not None and cw_l is not None:
        ev["confident_wrong_best"] = cw_b
        ev["confident_wrong_last"] = cw_l
    mc = _mean_confidence(st_l)
    acc_l = st_l.get("accuracy")
    if mc is not None and acc_l is not None:
        ev["mean_confidence_last"] = mc
        ev["accuracy_last"] = float(acc_l)
    if st_l.get("mean_true_class_prob") is not None:
        ev["mean_true_class_prob_last"] = float(st_l["mean_true_class_prob"])
    cw_txt = ""
    if "confident_wrong_last" in ev:
        cw_txt = (f" The share of predictions that are wrong with at least 90% confidence went "
                  f"from {pct(ev['confident_wrong_best'])} to {pct(ev['confident_wrong_last'])}.")
    mc_txt = ""
    if "mean_confidence_last" in ev:
        mc_txt = (f" At the end the model is on average {pct(ev['mean_confidence_last'])} "
                  f"confident but right {pct(ev['accuracy_last'])} of the time.")
    acc_txt = (f"the accuracy changed by only {fmt(dscore)}" if dscore > -0.03 else
               f"the accuracy did not improve ({fmt(dscore)})")
    ib = int(np.argmin(v.y[: max(b + 2, 1)]))
    raw_best, raw_last = float(v.y[ib]), float(v.y[-1])
    expl = (f"From {u} {fmt(float(v.x[ib]))} the validation loss rose from {fmt(raw_best)} to "
            f"{fmt(raw_last)} (+{pct(raw_last / raw_best - 1.0)}) while {acc_txt}, and the "
            "expected "
            f"calibration error grew from {fmt(e_b)} to {fmt(e_l)}: the model is making the same "
            "mistakes with more and more confidence." + cw_txt + mc_txt + " Cross-entropy "
            "punishes a confident mistake without bound (a wrong answer at 90% confidence costs "
            "-ln 0.1 = 2.3, a right one at 90% only 0.105), so a few mistakes made more "
            "confident raise the loss while the argmax, and the accuracy, stays put.")
    recs = [Recommendation("Calibrate with temperature scaling", "fit one temperature T > 1 "
                           "on the validation logits (minimise the NLL)",
                           f"should bring the ECE back towards {fmt(e_b)} without changing "
                           "accuracy"),
            Recommendation("Keep the checkpoint of the best validation loss",
                           f"{u} {fmt(xb)}", "it has the same accuracy and better probabilities"),
            Recommendation("Regularise the confidence", "label smoothing 0.1, weight decay "
                           "1e-4, mixup", "penalises extreme logits during training")]
    view.found[CODE] = {"best": xb}
    return [Finding(CODE, "warning", "mistakes are becoming confident", xb, xl, expl, ev, recs,
                    cause="confident-mistakes", unit=u, series=[v.key])]
