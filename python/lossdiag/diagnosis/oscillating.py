"""``oscillating``: the curves swing up and down by a large fraction of their level instead
of following a trend: sustained noise, or repeated spikes that come back down.

Judged on the validation curves (loss, and the error rate ``1 - accuracy`` of accuracy-like
metrics), over the whole run - early spikes count as much as late ones.  The training loss is
used only when there is no validation curve, and per-step minibatch losses only when they are
wild (minibatch noise is expected).  The noise is measured robustly (median absolute deviation of
second differences of ``log y``, so that trends and learning-rate steps do not count); a spike is
a point above the median of the points before it *and* of the points after it.  SGD's gradient
noise scales with learning rate / batch size.

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

from ._stats import (
    RunView,
    Series,
    SkipCheck,
    fmt,
    log_values,
    noise_sigma,
    pct,
    running_median,
    spikes,
    zigzag,
)
from .report import Finding, Recommendation

CODE = "oscillating"


def _nice_factor(f: float) -> float:
    for c in (2.0, 3.0, 5.0, 10.0):
        if f <= c * 1.2:
            return c
    return 10.0


def measure(s: Series, *, error_of_score: bool = False,
            spike: float = 0.3) -> dict[str, Any] | None:
    """Noise, zig-zag share and spikes of one curve (``None`` when it cannot be measured)."""
    y = s.y
    if error_of_score:
        if not (np.all(y >= 0) and np.all(y <= 1)):
            return None
        y = 1.0 - y
        if float(np.median(y)) < 0.02:
            return None  # an accuracy above 98 % jiggles by a handful of samples
    if len(y) < 4 or np.any(y < 0):
        return None
    ly = log_values(y)
    sig = noise_sigma(ly) if len(y) >= 5 else math.nan
    level = float(np.median(y))
    if not level > 0:
        return None
    sp = spikes(y, spike)
    # a spike must stand out of the curve's noise; a doubling on both sides always does
    floor = max(math.log1p(spike), min(4 * sig, math.log(2.0))) if math.isfinite(sig) \
        else math.log1p(spike)
    # swings that matter on the scale of the run: a jiggle of a converged 0.01 loss is 20 %
    # of its level but nothing next to the 0.1 it fell from
    span = float(np.max(y) - np.min(y))
    big = [(i, r) for i, r in sp if math.log(r) >= floor and
           y[i] * (1 - 1 / r) >= 0.15 * span]
    sm = np.exp(running_median(ly, 3)) if len(y) >= 5 else y
    trend_span = float(np.max(sm) - np.min(sm))
    scale_ok = math.isfinite(sig) and sig * level >= 0.05 * trend_span
    q = _quantum(y) if error_of_score else 0.0
    if q > 0:
        # an accuracy on a tiny validation set moves in steps of 1/n: swings of a step or two
        # are the set's size, not the model
        scale_ok = scale_ok and math.isfinite(sig) and sig * level >= 2 * q
        big = [(i, r) for i, r in big if y[i] * (1 - 1 / r) >= 2.5 * q]
    return {"series": s.key + (" (error = 1 - score)" if error_of_score else ""),
            "rel_noise": sig, "scale_ok": scale_ok, "zigzag": zigzag(ly), "level": level,
            "n": len(y),
            "spikes": big, "from": float(s.x[0]), "to": float(s.x[-1]),
            "spike_at": [float(s.x[i]) for i, _ in big]}


def _quantum(y: np.ndarray) -> float:
    """The step of a metric that only takes multiples of 1/m (a small validation set), or 0."""
    v = np.unique(np.round(y, 6))
    if len(v) < 2:
        return 0.0
    d = float(np.min(np.diff(v)))
    if d < 0.02:
        return 0.0
    k = (v - v[0]) / d
    return d if np.allclose(k, np.round(k), atol=0.05) else 0.0


def _hit(m: dict[str, Any], th: Any, *, wild: bool = False) -> str | None:
    noise_gate = th.osc_wild_noise if wild else th.osc_min_rel_noise
    if m["n"] >= 8 and math.isfinite(m["rel_noise"]) and m["rel_noise"] >= noise_gate and \
            m["zigzag"] >= th.osc_min_zigzag and m["scale_ok"]:
        return "noise"
    # a short curve that swings wildly: the second differences cannot separate noise from
    # spikes, but +/-30 % from point to point with reversals is oscillation either way
    if 5 <= m["n"] < 8 and math.isfinite(m["rel_noise"]) and \
            m["rel_noise"] >= max(th.osc_short_noise, noise_gate) \
            and m["zigzag"] >= 0.5 and m["scale_ok"]:
        return "noise"
    if wild or not m["spikes"]:
        return None
    # how much instability counts depends on the run's length: a couple of wild points in
    # 60 epochs are tolerated, the same in 10 epochs are not; a 10x jump always counts
    k = len(m["spikes"])
    top = max(r for _, r in m["spikes"])
    if k >= max(4, m["n"] / 30) or (k in (2, 3) and m["n"] <= 30) or (k >= 2 and top >= 5.0) \
            or (k == 1 and ((m["n"] <= 15 and top >= 1.6) or top >= 10.0)):
        return "spikes"
    return None


def check(view: RunView) -> list[Finding]:
    th = view.th
    div = view.found.get("diverging")
    if div is not None and div.get("cause") == "loss-above-chance":
        div = None  # the loss was high from the start: its swings still count

    def cut(s: Series | None) -> Series | None:
        if s is None or div is None:
            return s
        sel = s.x < div["start"]
        return Series(s.key, s.x[sel], s.y[sel], int(sel.sum()), per_step=s.per_step)

    val_curves: list[tuple[Series, bool]] = []
    if view.val_loss is not None:
        val_curves.append((cut(view.val_loss), False))
    if view.val_score is not None:  # the primary score only: per-class metrics are noisy
        val_curves.append((cut(view.val_score), True))
    train = cut(view.train_loss)
    need = 12 if div is not None else 4  # a pre-divergence ramp zig-zags on its way up
    cands: list[tuple[Series, bool, bool]] = [(s, e, False) for s, e in val_curves
                                             if s is not None and len(s) >= need]
    if not cands and train is not None and len(train) >= need:
        cands.append((train, False, train.per_step))
    if not cands:
        raise SkipCheck(f"fewer than {need} points in every curve"
                        + (" before the divergence" if div is not None else ""))
    u = view.unit
    measured: dict[str, dict[str, Any]] = {}
    hits: dict[str, dict[str, Any]] = {}
    for s, err, wild in cands:
        m = measure(s, error_of_score=err, spike=th.osc_spike)
        if m is None:
            continue
        measured[m["series"]] = m
        kind = _hit(m, th, wild=wild)
        if kind is not None:
            m["kind"] = kind
            hits[m["series"]] = m
    if not hits:
        return []
    key = max(hits, key=lambda k: (not k.endswith("score)"), len(hits[k]["spikes"]),
                                   hits[k]["rel_noise"]))
    m = hits[key]
    ev: dict[str, Any] = {"series": key, "rel_noise": m["rel_noise"], "level": m["level"],
                          "zigzag": m["zigzag"], "spikes": len(m["spikes"]),
                          "spike_at": m["spike_at"],
                          "spike_ratios": [round(r, 3) for _, r in m["spikes"]]}
    others = [k2 for k2 in hits if k2 != key]
    if others:
        ev["also"] = others
    lr = view.lr_at(m["to"])
    bs = view.batch_size
    if lr is not None:
        ev["lr"] = lr
    if bs is not None:
        ev["batch_size"] = bs
    rn = m["rel_noise"] if math.isfinite(m["rel_noise"]) else 0.0
    f = _nice_factor(max(rn, 0.1) / th.osc_target_rel_noise)
    ev["suggested_factor"] = f
    cfg = []
    if lr is not None:
        cfg.append(f"lr={fmt(lr)}")
    if bs is not None:
        cfg.append(f"batch size {bs}")
    cfg_txt = f" ({', '.join(cfg)} here)" if cfg else ""
    if m["kind"] == "noise":
        what = (f"'{key}' jumps by about +/-{pct(rn)} of its level ({fmt(m['level'])}) from one "
                f"{u} to the next, and {pct(m['zigzag'])} of consecutive changes reverse "
                "direction: the curve is dominated by noise, not by its trend.")
    else:
        sp_txt = ", ".join(f"{u} {fmt(xx)} ({fmt(r, 2)}x)" for xx, (_, r) in
                           zip(m["spike_at"], m["spikes"]))
        what = (f"'{key}' spikes above the level on both sides of it at {sp_txt} and comes "
                "back down: the optimiser is being thrown out of its valley and finding its "
                "way back.")
    expl = (f"From {u} {fmt(m['from'])} to {fmt(m['to'])}, " + what
            + " The noise of stochastic gradient descent grows with learning rate / batch "
            f"size{cfg_txt}: each update is a large random step, so the weights at the end of "
            f"each {u} land at a different point of the valley and the measured loss jumps.")
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
    view.found[CODE] = {"series": key.split(" ")[0], "kind": m["kind"]}
    title = ("the curve is dominated by noise" if m["kind"] == "noise" else
             f"{len(m['spikes'])} spike(s) that come back down")
    return [Finding(CODE, "warning", title, m["from"], m["to"], expl, ev, recs,
                    cause="lr-batch-noise", unit=u, series=[key.split(" ")[0]])]
