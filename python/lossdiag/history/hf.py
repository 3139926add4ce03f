"""Hugging Face ``trainer_state.json`` (its ``log_history``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._io import HistoryFormatError, PathLike, _read_json
from ._table import _jfloat
from .core import History

_HF_SKIP = ("runtime", "per_second", "flos", "total_", "grad_norm", "epoch", "step")


def _from_hf(log: list[Any], source: str, *, num_classes: int | None) -> History:
    train_rows: list[dict[str, Any]] = []
    eval_rows: list[dict[str, Any]] = []
    for i, entry in enumerate(log):
        if not isinstance(entry, Mapping):
            raise HistoryFormatError(source, f"log_history[{i}] is not an object",
                                     "a list of {'step': ..., 'loss': ...} objects")
        if any(k.startswith("eval_") for k in entry):
            eval_rows.append(dict(entry))
        elif "loss" in entry or "learning_rate" in entry:
            train_rows.append(dict(entry))
        # the final summary row (train_runtime, train_loss, ...) is skipped
    if not train_rows and not eval_rows:
        raise HistoryFormatError(source, "log_history has no training or evaluation entries",
                                 "entries with 'loss' or 'eval_loss'")
    h = History(num_classes=num_classes, source=source, meta={"format": "hf-trainer-state"})
    for r in train_rows:
        step = r.get("step")
        if step is None:
            continue
        h.log_step(step, train={k: r[k] for k in r if _hf_metric(k)},
                   lr=r.get("learning_rate"), epoch=r.get("epoch"))
    if eval_rows:
        tr_ep = np.array([np.nan if r.get("epoch") is None else r["epoch"] for r in train_rows])
        tr_loss = np.array([np.nan if r.get("loss") is None else _jfloat(r["loss"])
                            for r in train_rows])
        tr_lr = np.array([np.nan if r.get("learning_rate") is None else r["learning_rate"]
                          for r in train_rows])
        prev = -np.inf
        for r in sorted(eval_rows, key=lambda r: (r.get("epoch") or 0, r.get("step") or 0)):
            ep = r.get("epoch")
            if ep is None:
                ep = r.get("step", 0)
            sel = (tr_ep > prev) & (tr_ep <= ep) if tr_ep.size else np.zeros(0, bool)
            train: dict[str, float] = {}
            lr = None
            if sel.any():
                vals = tr_loss[sel]
                if np.isfinite(vals).all():
                    train["loss"] = float(vals.mean())
                else:
                    train["loss"] = float(vals[~np.isfinite(vals)][0])
                lrs = tr_lr[sel]
                if np.isfinite(lrs).any():
                    lr = float(lrs[np.isfinite(lrs)][-1])
            val = {k[5:]: r[k] for k in r if k.startswith("eval_") and _hf_metric(k[5:])}
            if h._epochs.x and float(ep) <= h._epochs.x[-1]:
                continue  # duplicate evaluation at the same epoch (e.g. final eval)
            h.log(ep, train=train, val=val, lr=lr)
            prev = ep
    elif train_rows:
        # no evaluation: per-epoch means of the training loss
        eps = np.array([r.get("epoch", np.nan) for r in train_rows], dtype=float)
        if np.isfinite(eps).all():
            tr_loss = np.array([_jfloat(r.get("loss", math.nan)) for r in train_rows])
            for e in np.unique(np.ceil(eps)):
                sel = (eps > e - 1) & (eps <= e)
                if sel.any():
                    h.log(e, train={"loss": float(np.nanmean(tr_loss[sel]))})
    return h


def _hf_metric(k: str) -> bool:
    return not any(s in k for s in _HF_SKIP) and k != "learning_rate"




def read_trainer_state(path: PathLike, *, num_classes: int | None = None) -> History:
    """A Hugging Face ``trainer_state.json``."""
    data = _read_json(path)
    if not isinstance(data, Mapping) or not isinstance(data.get("log_history"), list):
        raise HistoryFormatError(path, "no 'log_history' list",
                                 "a Hugging Face trainer_state.json")
    return _from_hf(data["log_history"], str(path), num_classes=num_classes)
