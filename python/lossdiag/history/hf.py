"""Hugging Face ``trainer_state.json`` (its ``log_history``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._io import HistoryFormatError, PathLike, _read_json
from .core import History

_HF_SKIP = ("runtime", "per_second", "flos", "total_", "grad_norm", "epoch", "step")


def _num(v: Any) -> float | None:
    """A log value as a float (None when absent or not a number; 'NaN' strings are NaN)."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        try:
            return float(v)
        except OverflowError:
            return math.inf if v > 0 else -math.inf
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _from_hf(log: list[Any], source: str, *, num_classes: int | None,
             state: Mapping[str, Any] | None = None) -> History:
    """Training rows become per-step records (loss, learning rate, grad_norm); every
    evaluation becomes a per-epoch record at its own (fractional) epoch, with the mean training
    loss of the steps since the previous evaluation.  Evaluations are never dropped for not
    lining up with training rows; repeated evaluations at the same step keep the first."""
    train_rows: list[dict[str, Any]] = []
    eval_rows: list[dict[str, Any]] = []
    skipped = 0
    for entry in log:
        if not isinstance(entry, Mapping):
            skipped += 1
            continue
        if any(isinstance(k, str) and k.startswith("eval_") for k in entry):
            eval_rows.append(dict(entry))
        elif "loss" in entry or "learning_rate" in entry or "grad_norm" in entry:
            train_rows.append(dict(entry))
        # the final summary row (train_runtime, train_loss, ...) is skipped
    if not train_rows and not eval_rows:
        raise HistoryFormatError(source, "log_history has no training or evaluation entries",
                                 "entries with 'loss' or 'eval_loss'")
    meta: dict[str, Any] = {"format": "hf-trainer-state"}
    for k in ("global_step", "max_steps", "num_train_epochs"):
        v = _num((state or {}).get(k))
        if v is not None and math.isfinite(v):
            meta[k] = v
    h = History(num_classes=num_classes, source=source, meta=meta)
    if skipped:
        h.meta["notes"] = [f"{skipped} log_history entr"
                           f"{'y is not an object' if skipped == 1 else 'ies are not objects'}: "
                           "skipped"]

    # steps -> epochs: HF writes both on every row; where the epoch is missing use the ratio
    pairs = [(_num(r.get("step")), _num(r.get("epoch"))) for r in train_rows + eval_rows]
    ratios = [e / s for s, e in pairs if s and e and s > 0 and math.isfinite(e / s)]
    per_step = float(np.median(ratios)) if ratios else None

    def epoch_of(r: Mapping[str, Any]) -> float | None:
        e = _num(r.get("epoch"))
        if e is not None and math.isfinite(e):
            return e
        s = _num(r.get("step"))
        return s * per_step if s is not None and per_step else None

    def finite_step(r: Mapping[str, Any]) -> bool:
        v = _num(r.get("step"))
        return v is not None and math.isfinite(v)

    dropped = sum(not finite_step(r) for r in train_rows + eval_rows)
    if dropped:
        h.meta.setdefault("notes", []).append(f"{dropped} log_history entr"
                                            f"{'y has' if dropped == 1 else 'ies have'} no "
                                            "finite 'step': skipped")
    train_rows = [r for r in train_rows if finite_step(r)]
    eval_rows = [r for r in eval_rows if finite_step(r) or (_num(r.get("epoch")) is not None
                                                            and math.isfinite(_num(r["epoch"])))]
    train_rows.sort(key=lambda r: _num(r["step"]))  # type: ignore[arg-type,return-value]
    for r in train_rows:
        vals = {k: r[k] for k in r if isinstance(k, str) and _hf_metric(k)}
        train = {k: v for k, v in ((k, _num(v)) for k, v in vals.items()) if v is not None}
        gn = _num(r.get("grad_norm"))
        row_epoch = epoch_of(r)
        h.log_step(_num(r["step"]), train=train or None, lr=_num(r.get("learning_rate")),
                   epoch=row_epoch)
        if gn is not None:
            h._steps.add_row(h._steps.x[-1], {"grad_norm": gn}, merge=True)

    if eval_rows:
        tr_step = np.array([_num(r["step"]) for r in train_rows], dtype=float)
        tr_loss = np.array([np.nan if _num(r.get("loss")) is None else _num(r.get("loss"))
                            for r in train_rows], dtype=float)
        tr_has = np.array([_num(r.get("loss")) is not None for r in train_rows], dtype=bool)
        tr_lr = np.array([np.nan if _num(r.get("learning_rate")) is None
                          else _num(r.get("learning_rate")) for r in train_rows], dtype=float)
        tr_gn = np.array([np.nan if _num(r.get("grad_norm")) is None else _num(r.get("grad_norm"))
                          for r in train_rows], dtype=float)
        keyed = []
        seen_steps: set[float] = set()
        for r in eval_rows:
            s = _num(r.get("step"))
            e = epoch_of(r)
            if e is None and s is None:
                continue
            if s is not None and s in seen_steps:
                continue  # a repeated evaluation at the same step (e.g. the final one)
            if s is not None:
                seen_steps.add(s)
            keyed.append((s if s is not None else math.inf, e if e is not None else s, r))
        keyed.sort(key=lambda t: (t[0], t[1]))
        prev_step = -math.inf
        last_x = -math.inf
        for s, e, r in keyed:
            x = float(e)
            if x <= last_x:  # epochs rounded to 2 decimals can repeat: keep them apart
                x = math.nextafter(last_x, math.inf) if per_step is None else \
                    max(last_x + 1e-6, float(s) * per_step if math.isfinite(s) else last_x + 1e-6)
            sel = (tr_step > prev_step) & (tr_step <= s) if tr_step.size else np.zeros(0, bool)
            train: dict[str, float] = {}
            lr = None
            if sel.any():
                vals = tr_loss[sel & tr_has]
                fin = vals[np.isfinite(vals)]
                if vals.size and fin.size == vals.size:
                    train["loss"] = float(fin.mean())
                elif vals.size:
                    train["loss"] = float(vals[~np.isfinite(vals)][0])
                gns = tr_gn[sel]
                if (~np.isnan(gns)).any():
                    g = gns[~np.isnan(gns)]
                    train_gn = float(g.max()) if np.isfinite(g).all() else \
                        float(g[~np.isfinite(g)][0])
                    train["grad_norm"] = train_gn
                lrs = tr_lr[sel]
                if np.isfinite(lrs).any():
                    lr = float(lrs[np.isfinite(lrs)][-1])
            val = {}
            for k in r:
                if isinstance(k, str) and k.startswith("eval_") and _hf_metric(k[5:]):
                    v = _num(r[k])
                    if v is not None:
                        val[k[5:]] = v
            h.log(x, train=train or None, val=val or None, lr=lr)
            prev_step = s
            last_x = x
        if "train/grad_norm" in h._epochs.cols:
            # grad_norm is bookkeeping for the checks, not a training metric
            h._epochs.cols["grad_norm"] = h._epochs.cols.pop("train/grad_norm")
            h._epochs._cache = None
    elif train_rows:
        # no evaluation: per-epoch means of the training loss
        eps = np.array([np.nan if epoch_of(r) is None else epoch_of(r) for r in train_rows],
                       dtype=float)
        if np.isfinite(eps).all():
            tr_loss = np.array([np.nan if _num(r.get("loss")) is None else _num(r.get("loss"))
                                for r in train_rows], dtype=float)
            tr_has = np.array([_num(r.get("loss")) is not None for r in train_rows], dtype=bool)
            for e in np.unique(np.ceil(eps)):
                sel = (eps > e - 1) & (eps <= e) & tr_has
                if sel.any():
                    v = tr_loss[sel]
                    h.log(e, train={"loss": float(v.mean()) if np.isfinite(v).all()
                                    else float(v[~np.isfinite(v)][0])})
    return h


def _hf_metric(k: str) -> bool:
    return not any(s in k for s in _HF_SKIP) and k != "learning_rate"


def read_trainer_state(path: PathLike, *, num_classes: int | None = None) -> History:
    """A Hugging Face ``trainer_state.json``."""
    data = _read_json(path)
    if not isinstance(data, Mapping) or not isinstance(data.get("log_history"), list):
        raise HistoryFormatError(path, "no 'log_history' list",
                                 "a Hugging Face trainer_state.json")
    return _from_hf(data["log_history"], str(path), num_classes=num_classes, state=data)
