"""Plain JSON logs: a dict of metric lists, a list of row objects, or lossdiag's format."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._columns import _from_columns, _from_plain
from ._io import HistoryFormatError, PathLike, _csv_columns, _read_csv, _read_json
from ._table import _jfloat
from .core import FORMAT_NAME, History
from .hf import _from_hf


def _from_json_data(data: Any, source: str, mapping: Mapping[str, str] | None, *,
                    num_classes: int | None) -> History:
    if isinstance(data, Mapping):
        if data.get("format") == FORMAT_NAME:
            h = History.from_dict(data, source=source)
            if num_classes is not None:
                h.num_classes = num_classes
            return h
        if isinstance(data.get("log_history"), list):
            return _from_hf(data["log_history"], source, num_classes=num_classes, state=data)
        if isinstance(data.get("history"), Mapping):
            data = data["history"]
        if data and all(isinstance(v, list) for v in data.values()):
            if mapping:
                cols = {str(k): _json_col(v, source, k) for k, v in data.items()}
                return _from_plain(cols, source, mapping, num_classes=num_classes, fmt="json")
            ep = None
            d = dict(data)
            for cand in ("epoch", "epochs"):
                if cand in d:
                    ep = np.asarray(d.pop(cand), dtype=float)
            return _from_columns(d, source, epochs=ep, num_classes=num_classes, fmt="json")
        raise HistoryFormatError(source, f"JSON object with keys {sorted(data)[:8]}",
                                 "a dict of metric lists, a list of rows, 'log_history' "
                                 "(Hugging Face) or a lossdiag history")
    if isinstance(data, list) and data and all(isinstance(r, Mapping) for r in data):
        keys: list[str] = []
        for r in data:
            for k in r:
                if k not in keys:
                    keys.append(k)
        cols = {}
        for k in keys:
            cols[str(k)] = _json_col([r.get(k) for r in data], source, k)
        return _from_plain(cols, source, mapping, num_classes=num_classes, fmt="json")
    raise HistoryFormatError(source, f"JSON {type(data).__name__} at the top level",
                             "an object of metric lists or a non-empty list of row objects")


def _json_col(v: list[Any], source: str, k: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        vals = np.array([math.nan if x is None else _jfloat(x) for x in v], dtype=np.float64)
    except (TypeError, ValueError):
        raise HistoryFormatError(source, f"field {k!r} holds non-numeric values",
                                 "numbers (or null) in every metric field") from None
    return vals, np.array([x is not None for x in v], dtype=bool)




def read_csv(path: PathLike, mapping: Mapping[str, str] | None = None, *,
             num_classes: int | None = None) -> History:
    """A plain CSV file (comma, semicolon or tab separated) with a header row."""
    header, rows = _read_csv(path)
    cols, notes = _csv_columns(path, header, rows)
    h = _from_plain(cols, str(path), mapping, num_classes=num_classes, fmt="csv")
    h.meta.setdefault("notes", []).extend(notes)
    return h


def read_json(path: PathLike, mapping: Mapping[str, str] | None = None, *,
              num_classes: int | None = None) -> History:
    """A JSON log: lossdiag's format, a HF trainer state, a dict of lists or a list of rows."""
    data = _read_json(path)
    return _from_json_data(data, str(path), mapping, num_classes=num_classes)
