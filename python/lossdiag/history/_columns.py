"""Building a History from named columns: one row per epoch, per step, or interleaved."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._io import HistoryFormatError, _ffill
from ._names import metric_direction, normalize_metric_name, split_metric_key
from ._table import _jfloat, _Table
from .core import History


def _group_columns(cols: Mapping[str, tuple[np.ndarray, np.ndarray]],
                   path: str) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """Map raw column names to canonical keys; drop bookkeeping columns."""
    out: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
    for raw, (v, p) in cols.items():
        split, metric = split_metric_key(raw)
        if split == "other":
            continue
        key = "lr" if split == "lr" else f"{split}/{metric}"
        if key in out:
            # two columns map to one key (e.g. "lr" and "learning_rate"): keep the fuller one
            if out[key][2].sum() >= p.sum():
                continue
        out[key] = (raw, v, p)
    return out


def _ordered_rows(source: str, x: np.ndarray, xname: str, *,
                  allow_repeats: bool = False) -> tuple[int, str | None]:
    """Check that ``x`` (epochs or steps) only grows; returns ``(first row to keep, note)``.

    A log that restarts from a lower value after a run of increasing rows holds several runs
    (a CSVLogger appending to an old file): the last run is kept, with a note.  Rows out of
    order, repeated epochs or non-finite values are an error naming the file and the row.
    """
    if len(x) == 0:
        return 0, None
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise HistoryFormatError(source, f"{xname} {float(x[bad[0]])!r} at row {int(bad[0]) + 1}",
                                 f"finite {xname} numbers")
    d = np.diff(x)
    if not allow_repeats:
        rep = np.flatnonzero(d == 0)
        if rep.size:
            i = int(rep[0])
            raise HistoryFormatError(source, f"{xname} {x[i]:g} appears twice (rows {i + 1} and "
                                     f"{i + 2})", f"one row per {xname}")
    down = np.flatnonzero(d < 0)
    if down.size == 0:
        return 0, None
    starts = np.concatenate([[0], down + 1])
    lengths = np.diff(np.concatenate([starts, [len(x)]]))
    if lengths.min() < 2 or down.size > max(2, len(x) // 4):
        i = int(down[0])
        raise HistoryFormatError(source, f"{xname} decreases from {x[i]:g} to {x[i + 1]:g} at "
                                 f"row {i + 2}", f"rows in increasing {xname} order")
    first = int(starts[-1])
    return first, (f"the {xname} restarts from {x[first]:g} at row {first + 1} after "
                   f"{x[first - 1]:g}: the file holds {down.size + 1} runs; the last one "
                   f"({len(x) - first} rows) is read")


def _from_columns(d: Mapping[str, Any], source: str, *, epochs: Any = None,
                  num_classes: int | None = None, fmt: str) -> History:
    cols: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    n = None
    for k, v in d.items():
        if isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], np.ndarray):
            arr, pres = v
        else:
            try:
                arr = np.array([math.nan if x is None else _jfloat(x) for x in v], np.float64)
            except (TypeError, ValueError):
                raise HistoryFormatError(source, f"column {k!r} is not a list of numbers",
                                         "metric name -> list of per-epoch numbers") from None
            pres = np.array([x is not None for x in v], dtype=bool)
        if n is None:
            n = len(arr)
        elif len(arr) != n:
            raise HistoryFormatError(source, f"column {k!r} has {len(arr)} values, others {n}",
                                     "one value per epoch in every column")
        cols[str(k)] = (arr, pres)
    if not cols or not n:
        raise HistoryFormatError(source, "no metric values", "at least one metric column")
    if epochs is None:
        ep = np.arange(n, dtype=np.float64)
    elif isinstance(epochs, tuple):
        ep = _ffill(*epochs)
    else:
        ep = np.asarray(epochs, dtype=np.float64)
        if ep.shape != (n,):
            raise HistoryFormatError(source, f"{len(ep)} epochs for {n} values",
                                     "one epoch number per row")
    const_note = None
    if n >= 3 and np.all(ep == ep[0]):
        # CSVLogger(append=True) around fit(epochs=1) calls writes epoch 0 on every row
        const_note = (f"the epoch column is {ep[0]:g} on every row: each row is read as one "
                      f"epoch (0-{n - 1})")
        ep = np.arange(n, dtype=np.float64)
    keep, note = _ordered_rows(source, ep, "epoch")
    if keep:
        ep = ep[keep:]
        cols = {k: (v[keep:], p[keep:]) for k, (v, p) in cols.items()}
    note = "; ".join(t for t in (const_note, note) if t) or None
    grouped = _group_columns(cols, source)
    if not any(k != "lr" and metric_direction(k.split("/", 1)[1]) for k in grouped):
        raise HistoryFormatError(source, f"no recognisable metric among columns {list(d)}",
                                 "columns such as loss, accuracy, val_loss, val_accuracy")
    table = _Table.from_arrays("epoch", ep, {k: (v, p) for k, (_, v, p) in grouped.items()})
    h = History(num_classes=num_classes, source=source, meta={"format": fmt})
    if note:
        h.meta["notes"] = [note]
    h._epochs = table
    return h


def _unprefixed_scores_are_validation(
        grouped: dict[str, tuple[str, np.ndarray, np.ndarray]]) -> list[str]:
    """In a log that prefixes its training loss (``train_loss``/``trainLoss``, not Keras style)
    and has validation columns, an unprefixed score such as ``acc`` or ``dice`` with no
    ``val_`` twin was measured on validation data: people compute metrics when they evaluate."""
    raws = {k: raw for k, (raw, _, _) in grouped.items()}
    explicit_train = any(k.startswith("train/") and split_metric_key(raw)[0] == "train" and
                         split_metric_key(raw, default_split="none")[0] == "train"
                         for k, raw in raws.items())
    has_val = any(k.startswith("val/") for k in raws)
    if not (explicit_train and has_val):
        return []
    notes = []
    for k in list(grouped):
        if not k.startswith("train/"):
            continue
        raw = grouped[k][0]
        metric = k.split("/", 1)[1]
        if split_metric_key(raw, default_split="none")[0] != "none":
            continue  # explicitly prefixed
        if metric_direction(metric) != "max" or f"val/{metric}" in grouped:
            continue
        grouped[f"val/{metric}"] = grouped.pop(k)
        notes.append(f"column {raw!r} has no split prefix in a log that prefixes its training "
                     f"loss: read as a validation metric")
    return notes


def _from_plain(cols: dict[str, tuple[np.ndarray, np.ndarray]], source: str,
                mapping: Mapping[str, str] | None, *, num_classes: int | None,
                fmt: str) -> History:
    cols = dict(cols)
    renamed: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    xkey = None
    xvals = None
    if mapping:
        if not isinstance(mapping, Mapping):
            raise TypeError(f"mapping must be a dict of canonical key -> column, got {mapping!r}")
        for canon, colname in mapping.items():
            if colname not in cols:
                raise HistoryFormatError(source, f"mapped column {colname!r} (for {canon!r}) "
                                         f"not found", f"one of {sorted(cols)}")
            v = cols.pop(colname)
            if canon in ("epoch", "step"):
                xkey, xvals = canon, v
            elif canon == "lr" or canon.startswith(("train/", "val/")):
                renamed[canon if canon == "lr" else
                        canon.split("/", 1)[0] + "/" + normalize_metric_name(canon.split("/")[1])
                        ] = v
            else:
                raise ValueError(f"mapping key {canon!r} must be 'epoch', 'step', 'lr', "
                                 f"'train/<metric>' or 'val/<metric>'")
    if xkey is None:
        for cand in ("epoch", "epochs", "step", "steps", "global_step", "iteration", "iter"):
            hit = next((c for c in cols if c.strip().lower() == cand), None)
            if hit is not None:
                xkey = "step" if cand not in ("epoch", "epochs") else "epoch"
                xvals = cols.pop(hit)
                break
    grouped = _group_columns(cols, source)
    notes = _unprefixed_scores_are_validation(grouped)
    for k, (_, v, p) in grouped.items():
        renamed.setdefault(k, (v, p))
    if not any(k != "lr" and metric_direction(k.split("/", 1)[1]) for k in renamed):
        raise HistoryFormatError(source, f"no recognisable metric among columns "
                                 f"{list(cols) or 'none'}",
                                 "columns named like loss, val_loss, accuracy, val_iou, or a "
                                 "mapping such as {'val/loss': 'vl'} (CLI: --map val/loss=vl)")
    n = len(next(iter(renamed.values()))[0])
    if xvals is None:
        x = np.arange(n, dtype=np.float64)
        xkey = "epoch"
    else:
        x = _ffill(*xvals) if not xvals[1].all() else xvals[0]
    keep, note = _ordered_rows(source, x, xkey, allow_repeats=True)
    if keep:
        x = x[keep:]
        renamed = {k: (v[keep:], p[keep:]) for k, (v, p) in renamed.items()}
        notes.append(note)
    h = History(num_classes=num_classes, source=source, meta={"format": fmt})
    if notes:
        h.meta["notes"] = notes
    if xkey == "step":
        h._steps = _Table.from_arrays("step", x, renamed)
        h._step_epoch = [None] * len(x)
    elif len(np.unique(x)) < len(x):
        # several rows per epoch: interleaved log -> treat like Lightning
        hi = _from_interleaved(
            {k: v for k, v in renamed.items()}, x, np.arange(len(x), dtype=np.float64),
            np.ones(len(x), bool), source, num_classes=num_classes, fmt=fmt, canonical=True)
        if notes:
            hi.meta["notes"] = notes
        return hi
    else:
        h._epochs = _Table.from_arrays("epoch", x, renamed)
    return h


def _from_interleaved(cols: Mapping[str, tuple[np.ndarray, np.ndarray]], epoch: np.ndarray,
                      step: np.ndarray, step_present: np.ndarray, source: str, *,
                      num_classes: int | None, fmt: str, canonical: bool = False) -> History:
    """Rows of several kinds interleaved (Lightning): split per-step and per-epoch columns."""
    if canonical:
        grouped = {k: (k, v, p) for k, (v, p) in cols.items()}
    else:
        grouped = _group_columns(cols, source)
    if not any(k != "lr" for k in grouped):
        raise HistoryFormatError(source, f"no recognisable metric among columns {list(cols)}",
                                 "columns such as train_loss, val_loss, val_acc")
    uniq_epochs, inv = np.unique(epoch, return_inverse=True)
    ne = len(uniq_epochs)
    epoch_cols: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    step_cols: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key, (raw, v, p) in grouped.items():
        per_epoch = np.bincount(inv[p], minlength=ne)
        rawl = raw.lower()
        is_step = rawl.endswith(("_step", "_batch")) or (per_epoch.max(initial=0) > 1
                                             and not rawl.endswith("_epoch"))
        base = key
        if base.endswith(("_epoch", "_step", "_batch")):
            base = base.rsplit("_", 1)[0]
        if is_step:
            step_cols[base] = (v, p)
        else:
            ev = np.full(ne, np.nan)
            ep_ = np.zeros(ne, bool)
            idx = np.flatnonzero(p)
            ev[inv[idx]] = v[idx]  # last value of the epoch wins
            ep_[inv[idx]] = True
            if base in epoch_cols and epoch_cols[base][1].sum() >= ep_.sum():
                continue
            epoch_cols[base] = (ev, ep_)
    # per-step metrics without an epoch-level counterpart: per-epoch mean of the steps
    for base, (v, p) in step_cols.items():
        if base in epoch_cols:
            continue
        sums = np.bincount(inv[p], weights=v[p], minlength=ne)
        cnt = np.bincount(inv[p], minlength=ne)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums / cnt
        epoch_cols[base] = (mean, cnt > 0)
    h = History(num_classes=num_classes, source=source, meta={"format": fmt})
    keep = np.zeros(ne, bool)
    for _, p in epoch_cols.values():
        keep |= p
    h._epochs = _Table.from_arrays(
        "epoch", uniq_epochs[keep], {k: (v[keep], p[keep]) for k, (v, p) in epoch_cols.items()})
    if step_cols:
        any_step = np.zeros(len(step), bool)
        for _, p in step_cols.values():
            any_step |= p
        rows = np.flatnonzero(any_step & step_present)
        if rows.size:
            sx = step[rows]
            order = np.argsort(sx, kind="stable")
            rows = rows[order]
            h._steps = _Table.from_arrays(
                "step", step[rows], {k: (v[rows], p[rows]) for k, (v, p) in step_cols.items()})
            h._step_epoch = epoch[rows].tolist()
    return h


