"""Column tables keyed by epoch or step, and the JSON conversions of lossdiag's own format."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._names import normalize_metric_name


class _Table:
    """Rows keyed by an x value (epoch or step); columns hold floats, ``None`` when missing."""

    __slots__ = ("xname", "x", "cols", "_cache", "_xs")

    def __init__(self, xname: str) -> None:
        self.xname = xname
        self.x: list[float] = []
        self.cols: dict[str, list[float | None]] = {}
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self._xs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.x)

    def add_row(self, x: float, values: Mapping[str, float | None], *, merge: bool) -> int:
        """Append a row (or merge into the last one when it has the same x and ``merge``)."""
        self._cache = None
        self._xs = None
        if merge and self.x and self.x[-1] == x:
            i = len(self.x) - 1
        else:
            self.x.append(x)
            for col in self.cols.values():
                col.append(None)
            i = len(self.x) - 1
        for k, v in values.items():
            col = self.cols.get(k)
            if col is None:
                col = self.cols[k] = [None] * len(self.x)
            if v is not None:
                col[i] = v
        return i

    def arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{key: (values float64 with NaN where missing, present bool mask)}`` (cached)."""
        if self._cache is None:
            out = {}
            for k, col in self.cols.items():
                present = np.fromiter((v is not None for v in col), dtype=bool, count=len(col))
                vals = np.array(col, dtype=np.float64)  # None -> nan
                out[k] = (vals, present)
            self._cache = out
        return self._cache

    def xs(self) -> np.ndarray:
        if self._xs is None or len(self._xs) != len(self.x):
            self._xs = np.asarray(self.x, dtype=np.float64)
            self._xs.flags.writeable = False
        return self._xs

    @classmethod
    def from_arrays(cls, xname: str, x: Sequence[float] | np.ndarray,
                    cols: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> _Table:
        t = cls(xname)
        xa = np.asarray(x, dtype=np.float64)
        t.x = xa.tolist()
        cache = {}
        for k, (vals, present) in cols.items():
            v = np.asarray(vals, dtype=np.float64)
            p = np.asarray(present, dtype=bool)
            if v.shape != xa.shape or p.shape != xa.shape:
                raise ValueError(f"column {k!r} has {v.shape[0]} values for {xa.shape[0]} rows")
            lst: list[float | None] = v.tolist()
            if not p.all():
                for i in np.flatnonzero(~p).tolist():
                    lst[i] = None
            t.cols[k] = lst
            cache[k] = (np.where(p, v, np.nan), p)
        t._cache = cache
        return t


def _to_float(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be a number, got {value!r}")
    if isinstance(value, str):
        s = value.strip()
        if s == "":
            return None
        try:
            return float(s)
        except ValueError:
            raise TypeError(f"{what} must be a number, got {value!r}") from None
    try:
        arr = np.asarray(value)
        if arr.size != 1:
            raise TypeError(f"{what} must be a scalar, got an array of shape {arr.shape}")
        return float(arr.reshape(()))
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a number, got {value!r}") from None



def _jnum(v: Any, digits: int | None) -> Any:
    if v is None:
        return None
    f = float(v)
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    if digits is not None and f != 0.0:
        f = float(f"{f:.{digits}g}")
    if f.is_integer() and abs(f) < 2**53:
        return int(f)
    return f


def _jfloat(v: Any) -> float:
    if isinstance(v, bool):
        raise TypeError(f"expected a number, got {v!r}")
    if isinstance(v, str):
        return float(v)  # "nan", "inf", "-inf"
    try:
        return float(v)
    except OverflowError:  # an integer beyond float range (10**400)
        return math.inf if v > 0 else -math.inf


def _jsonable(obj: Any, digits: int | None = None) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v, digits) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "iub":
            return obj.tolist()
        return [_jsonable(v, digits) for v in obj.tolist()]
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, digits) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _jnum(obj, digits)
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def _unjson_stats(s: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in s.items():
        if isinstance(v, Mapping):
            inner = _unjson_stats(v)
            if k == "top_k_accuracy":
                inner = {int(kk): vv for kk, vv in inner.items()}
            out[k] = inner
        elif isinstance(v, list):
            out[k] = _list_to_array(v)
        elif isinstance(v, str) and v in ("nan", "inf", "-inf"):
            out[k] = float(v)
        else:
            out[k] = v
    return out


def _list_to_array(v: list[Any]) -> np.ndarray:
    def conv(x: Any) -> Any:
        if isinstance(x, list):
            return [conv(y) for y in x]
        if x is None:
            return math.nan
        if isinstance(x, str):
            return float(x)
        return x

    arr = np.array(conv(v))
    if arr.dtype == object:
        return np.array(conv(v), dtype=np.float64)
    return arr


def _table_from(x: tuple[str, Any], train: Mapping[str, Any] | None,
                val: Mapping[str, Any] | None, lr: Any) -> _Table:
    xname, xv = x
    xa = np.asarray(xv, dtype=np.float64)
    if xa.ndim != 1:
        raise ValueError(f"{xname} must be 1-D, got shape {xa.shape}")
    cols: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, d in (("train", train), ("val", val)):
        for k, v in (d or {}).items():
            a = np.asarray(v, dtype=np.float64)
            if a.shape != xa.shape:
                raise ValueError(f"{split}[{k!r}] has shape {a.shape}, expected {xa.shape}")
            cols[f"{split}/{normalize_metric_name(k)}"] = (a, np.ones(a.shape, bool))
    if lr is not None:
        a = np.asarray(lr, dtype=np.float64)
        if a.shape != xa.shape:
            raise ValueError(f"lr has shape {a.shape}, expected {xa.shape}")
        cols["lr"] = (a, ~np.isnan(a))
    return _Table.from_arrays(xname, xa, cols)


def _table_from_json(d: Mapping[str, Any], xname: str) -> _Table:
    x = [_jfloat(v) for v in d["x"]]
    cols = {}
    for k, col in d["columns"].items():
        if len(col) != len(x):
            raise ValueError(f"column {k!r} has {len(col)} values for {len(x)} rows")
        present = np.array([v is not None for v in col], dtype=bool)
        vals = np.array([math.nan if v is None else _jfloat(v) for v in col], dtype=np.float64)
        cols[k] = (vals, present)
    return _Table.from_arrays(xname, x, cols)


