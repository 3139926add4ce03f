"""TensorBoard event files (needs the optional ``tensorboard`` package)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._io import HistoryFormatError
from ._names import split_metric_key
from ._table import _Table
from .core import History


def _from_tensorboard(path: Path, *, num_classes: int | None) -> History:
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError:
        raise ImportError(
            f"{path}: reading TensorBoard event files needs the optional 'tensorboard' package "
            "(pip install 'lossdiag[tensorboard]')") from None
    files = [path] if path.is_file() else sorted(path.glob("**/*tfevents*"))
    if not files:
        raise HistoryFormatError(path, "no TensorBoard event files", "events.out.tfevents.*")
    per_key: dict[str, dict[float, float]] = {}
    steps_seen: set[float] = set()
    for f in files:
        acc = event_accumulator.EventAccumulator(
            str(f), size_guidance={event_accumulator.SCALARS: 0,
                                   event_accumulator.TENSORS: 0})
        try:
            acc.Reload()
        except Exception as exc:  # corrupt record, wrong file
            raise HistoryFormatError(f, f"cannot read events ({exc})",
                                     "a TensorBoard event file") from None
        run = f.parent.name.lower()
        default_split = "val" if run in ("validation", "val", "valid", "eval") else "train"
        tags = acc.Tags()
        for tag in tags.get("scalars", []):
            for ev in acc.Scalars(tag):
                _tb_put(per_key, tag, default_split, ev.step, ev.value)
        for tag in tags.get("tensors", []):
            for ev in acc.Tensors(tag):
                try:
                    from tensorboard.util import tensor_util
                    val = float(np.asarray(tensor_util.make_ndarray(ev.tensor_proto)).reshape(()))
                except Exception:
                    continue
                _tb_put(per_key, tag, default_split, ev.step, val)
    if not per_key:
        raise HistoryFormatError(path, "no scalar summaries", "scalar metrics logged to TB")
    for d in per_key.values():
        steps_seen.update(d)
    xs = np.array(sorted(steps_seen), dtype=np.float64)
    index = {x: i for i, x in enumerate(xs.tolist())}
    cols = {}
    for key, d in per_key.items():
        v = np.full(len(xs), np.nan)
        p = np.zeros(len(xs), bool)
        for s, val in d.items():
            v[index[s]] = val
            p[index[s]] = True
        cols[key] = (v, p)
    h = History(num_classes=num_classes, source=str(path), meta={"format": "tensorboard"})
    epoch_like = all(k.split("/", 1)[-1].startswith("epoch") for k in per_key if k != "lr")
    if epoch_like or len(xs) <= 1000:
        h._epochs = _Table.from_arrays("epoch", xs, cols)
    else:
        h._steps = _Table.from_arrays("step", xs, cols)
        h._step_epoch = [None] * len(xs)
    return h


def _tb_put(per_key: dict[str, dict[float, float]], tag: str, default_split: str,
            step: float, value: float) -> None:
    t = tag
    if t.startswith("epoch_"):
        t = t[len("epoch_"):]
    split, metric = split_metric_key(t, default_split=default_split)
    if split == "other":
        return
    key = "lr" if split == "lr" else f"{split}/{metric}"
    per_key.setdefault(key, {})[float(step)] = float(value)
