"""Reading log files: text, JSON and CSV, with errors that name the file."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]


class HistoryFormatError(ValueError):
    """A training log could not be read: the message names the file and what was expected."""

    def __init__(self, path: Any, problem: str, expected: str | None = None) -> None:
        msg = f"{path}: {problem}"
        if expected:
            msg += f" (expected {expected})"
        super().__init__(msg)
        self.path = path
        self.problem = problem
        self.expected = expected



def _read_text(path: PathLike) -> str:
    p = Path(path)
    try:
        data = p.read_bytes()
    except IsADirectoryError:
        raise HistoryFormatError(p, "is a directory", "a log file") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HistoryFormatError(p, "is not UTF-8 text (binary file?)",
                                 "a CSV or JSON training log") from None


def _read_json(path: PathLike) -> Any:
    text = _read_text(path)
    if not text.strip():
        raise HistoryFormatError(path, "file is empty", "JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HistoryFormatError(path, f"invalid JSON at line {exc.lineno} column {exc.colno}: "
                                 f"{exc.msg}", "a JSON training log") from None
    except RecursionError:
        raise HistoryFormatError(path, "JSON nested too deeply", "a JSON training log") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise HistoryFormatError(path, f"invalid JSON ({exc})", "a JSON training log") from None


def _read_csv(path: PathLike) -> tuple[list[str], list[list[str]]]:
    text = _read_text(path)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise HistoryFormatError(path, "file is empty", "a CSV header row and data rows")
    first = lines[0]
    delim = max((",", ";", "\t"), key=first.count)
    if first.count(delim) == 0:
        raise HistoryFormatError(path, f"header {first[:80]!r} has no column separator",
                                 "comma, semicolon or tab separated columns")
    reader = csv.reader(io.StringIO("\n".join(lines)), delimiter=delim)
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, len(text) + 1))  # a long cell is not a reason to fail
    try:
        header = [h.strip() for h in next(reader)]
        rows = list(reader)
    except csv.Error as exc:
        raise HistoryFormatError(path, f"cannot parse CSV ({exc})",
                                 "comma, semicolon or tab separated values") from None
    finally:
        csv.field_size_limit(old)
    if any(h == "" for h in header):
        raise HistoryFormatError(path, f"empty column name in header {header}",
                                 "a named column for every field")
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise HistoryFormatError(path, f"duplicate column names {dup}", "unique column names")
    return header, rows


_NUM_WORDS = {"nan": math.nan, "-nan": math.nan, "inf": math.inf, "+inf": math.inf,
              "-inf": -math.inf, "infinity": math.inf, "-infinity": -math.inf,
              "+infinity": math.inf}


def _parse_number(c: str) -> float | None:
    """A CSV cell as a float (``nan``/``inf`` words included), or None when it is text."""
    try:
        v = float(c)
    except ValueError:
        return _NUM_WORDS.get(c.lower())
    except OverflowError:  # pragma: no cover - float() of a str saturates to inf instead
        return math.inf
    return v


def _csv_columns(path: PathLike, header: list[str], rows: list[list[str]]
                 ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Numeric columns as ``{name: (values, present)}`` and notes on what was left out.

    A column whose cells are mostly text (a timestamp, a file name) is left out with a note;
    in a numeric column a stray text cell counts as missing, also with a note.
    """
    if not rows:
        raise HistoryFormatError(path, "header but no data rows", "at least one row of values")
    n = len(header)
    vals = np.full((len(rows), n), np.nan)
    present = np.zeros((len(rows), n), dtype=bool)
    text = np.zeros((len(rows), n), dtype=bool)
    example: dict[int, str] = {}
    for i, row in enumerate(rows):
        if len(row) != n:
            if len(row) > n and not any(c.strip() for c in row[n:]):
                row = row[:n]  # trailing separators
            else:
                raise HistoryFormatError(path, f"line {i + 2} has {len(row)} fields, header "
                                         f"has {n}", "the same number of fields on every line")
        for j, cell in enumerate(row):
            c = cell.strip()
            if c == "":
                continue
            v = _parse_number(c)
            if v is None:
                text[i, j] = True
                example.setdefault(j, c)
                continue
            vals[i, j] = v
            present[i, j] = True
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    notes: list[str] = []
    for j, h in enumerate(header):
        nt, nv = int(text[:, j].sum()), int(present[:, j].sum())
        if nt and (nv == 0 or nt > 2 * nv):
            notes.append(f"column {h!r} holds text (e.g. {example[j][:40]!r}): ignored")
            continue
        if nt:
            notes.append(f"column {h!r}: {nt} non-numeric cell(s) (e.g. {example[j][:40]!r}) "
                         "read as missing")
        out[h] = (vals[:, j], present[:, j])
    return out, notes


def _ffill(vals: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Fill missing (not present) values with the previous present one; leading missing values
    take the first present one.  Logged values, NaN included, are kept as they are."""
    out = vals.copy()
    present = np.asarray(present, dtype=bool)
    if not present.any():
        out[:] = 0.0
        return out
    idx = np.where(present, np.arange(len(out)), -1)
    np.maximum.accumulate(idx, out=idx)
    first = int(np.argmax(present))
    idx[idx < 0] = first
    return out[idx]
