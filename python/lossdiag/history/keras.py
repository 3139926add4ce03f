"""Keras: a ``History`` object or its ``.history`` dict, and ``CSVLogger`` files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._columns import _from_columns
from ._io import HistoryFormatError, PathLike, _csv_columns, _read_csv
from ._names import metric_direction, split_metric_key
from .core import History

__all__ = ["read_keras_csv", "read_keras_history"]


def read_keras_history(history: Any, *, num_classes: int | None = None) -> History:
    """A Keras ``History`` (``model.fit(...)``'s return) or its ``.history`` dict."""
    d = getattr(history, "history", history)
    if not isinstance(d, Mapping):
        raise TypeError(
            f"history must be a keras History or its .history dict, got {type(history)}")
    epochs = getattr(history, "epoch", None)
    return _from_columns(d, "<keras history>", epochs=epochs, num_classes=num_classes,
                         fmt="keras")


def read_keras_csv(path: PathLike, *, num_classes: int | None = None) -> History:
    """A Keras ``CSVLogger`` file (``epoch,accuracy,loss,val_accuracy,val_loss``)."""
    header, rows = _read_csv(path)
    if not header or header[0].strip().lower() != "epoch":
        raise HistoryFormatError(path, f"first column is {header[0]!r}" if header else
                                 "no header", "a Keras CSVLogger file starting with 'epoch'")
    cols, notes = _csv_columns(path, header, rows)
    if header[0] not in cols:
        raise HistoryFormatError(path, "the epoch column holds text", "epoch numbers")
    ep = cols.pop(header[0])
    h = _from_columns(cols, str(path), epochs=ep, num_classes=num_classes, fmt="keras-csv")
    h.meta.setdefault("notes", []).extend(notes)
    return h


def _looks_keras(names: Sequence[str]) -> bool:
    known = 0
    for nm in names:
        split, m = split_metric_key(nm)
        if split == "other":
            return False
        if split_metric_key(nm, default_split="none")[0] == "train":
            return False  # Keras never prefixes training metrics
        known += metric_direction(m) is not None or split == "lr"
    return known > 0
