"""``oscillating``: noise large relative to the trend (not a few noisy points).

The noise is measured robustly (median absolute deviation of second differences, so that
single spikes and learning-rate steps do not count) on the second half of the run and compared
with the level of the loss; the share of consecutive changes that reverse direction separates
noise from trend.  SGD's gradient noise scales with learning rate / batch size.

>>> import numpy as np
>>> from lossdiag.history import History
>>> from lossdiag.diagnosis import diagnose
>>> rng = np.random.default_rng(0)
>>> e = np.arange(40)
>>> h = History.from_arrays(e, train={"loss": 0.5 + 0.02 * rng.standard_normal(40)},
...                         val={"loss": 0.6 * np.exp(0.4 * rng.standard_normal(40))})
>>> diagnose(h).get("oscillating").evidence["series"]
'val/loss'
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._stats import RunView, Series, SkipCheck, fmt, noise_sigma, pct, zigzag
from .report import Finding, Recommendation

CODE = "oscillating"


def _nice_factor(f: float) -> float:
    for c in (2.0, 3.0, 5.0, 10.0):
        if f <= c * 1.2:
            return c
    return 10.0


def check(view: RunView) -> list[Finding]:
    th = view.th
    div = view.found.get("diverging")
    cands = [s for s in (view.val_loss, view.train_loss) if s is not None]
    if div is not None:
        # measure the noise only before the divergence started
        cands = [Series(s.key, s.x[s.x < div["start"]], s.y[s.x < div["start"]], s.raw_n)
                 for s in cands]
    if not cands:
        raise SkipCheck("no loss curve")
    need = max(th.min_points, 8)
    cands = [s for s in cands if len(s) >= need]
    if not cands:
        raise SkipCheck(f"fewer than {need} loss values"
                        + (" before the divergence" if div is not None else ""))
    u = view.unit
    measured: dict[str, dict[str, float]] = {}
    for s in cands:
        n = len(s)
        a = n // 2 if n >= 16 else 2
        yw = s.y[a:]
        level = float(np.median(yw))
        sig = noise_sigma(yw)
        if not (level > 0 and math.isfinite(sig)):
            continue
        measured[s.key] = {"rel_noise": sig / level, "sigma": sig, "level": level,
                           "zigzag": zigzag(yw), "from": float(s.x[a]), "to": float(s.x[-1]),
                           "spikes": int(np.sum(yw > level + 4 * sig))}
    hits = {k: m for k, m in measured.items()
            if m["rel_noise"] >= th.osc_min_rel_noise and m["zigzag"] >= th.osc_min_zigzag}
    if not hits:
        return []
    key = max(hits, key=lambda k: hits[k]["rel_noise"])
    m = hits[key]
    ev: dict[str, Any] = {"series": key, "rel_noise": m["rel_noise"], "sigma": m["sigma"],
                          "level": m["level"], "zigzag": m["zigzag"], "spikes": m["spikes"]}
    for k2, m2 in measured.items():
        if k2 != key:
            ev[f"rel_noise_{k2.split('/')[0]}"] = m2["rel_noise"]
    lr = view.lr_at(m["to"])
    bs = view.batch_size
    if lr is not None:
        ev["lr"] = lr
    if bs is not None:
        ev["batch_size"] = bs
    f = _nice_factor(m["rel_noise"] / th.osc_target_rel_noise)
    ev["suggested_factor"] = f
    cfg = []
    if lr is not None:
        cfg.append(f"lr={fmt(lr)}")
    if bs is not None:
        cfg.append(f"batch size {bs}")
    cfg_txt = f" ({', '.join(cfg)} here)" if cfg else ""
    expl = (f"From {u} {fmt(m['from'])} '{key}' jumps by about +/-{pct(m['rel_noise'])} of its "
            f"level ({fmt(m['level'])}) from one {u} to the next, and {pct(m['zigzag'])} of "
            "consecutive changes reverse direction: the curve is dominated by noise, not by its "
            "trend. The noise of stochastic gradient descent grows with learning rate / batch "
            f"size{cfg_txt}: each update is a large random step, so the weights at the end of "
            f"each {u} land at a different point of the valley and the measured loss jumps.")
    if m["spikes"]:
        expl += (f" {m['spikes']} point(s) spike above the level by more than 4 noise sigmas.")
    recs = [Recommendation("Lower the learning rate", f"~{fmt(f)}x"
                           + (f": from {fmt(lr)} to about {fmt(lr / f, 2)}" if lr is not None
                              else ""), f"aims at ~{pct(th.osc_target_rel_noise)} noise"),
            Recommendation("Or use larger batches at the same learning rate",
                           f"~{fmt(f)}x" + (f": batch {bs} -> {int(bs * f)}" if bs else ""),
                           "gradient noise falls with the batch size"),
            Recommendation("Decay the learning rate towards the end", "cosine or step decay",
                           "anneals the noise once the trend is done"),
            Recommendation("Evaluate an average of the weights", "EMA (decay 0.999) or SWA",
                           "averages the noise out of the final model")]
    if m["spikes"]:
        recs.append(Recommendation("Clip gradients", "max_norm=1.0", "tames the spikes"))
    view.found[CODE] = {"series": key}
    return [Finding(CODE, "warning", "the loss is dominated by noise", m["from"], m["to"], expl,
                    ev, recs, cause="lr-batch-noise", unit=u, series=[key])]
