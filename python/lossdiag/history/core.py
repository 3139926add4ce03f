"""The History container."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ._io import HistoryFormatError, PathLike, _read_json
from ._names import normalize_metric_name
from ._table import (
    _jfloat,
    _jnum,
    _jsonable,
    _Table,
    _table_from,
    _table_from_json,
    _to_float,
    _unjson_stats,
)

FORMAT_NAME = "lossdiag.history"
FORMAT_VERSION = 1


@contextmanager
def _reading(path: Any, expected: str) -> Iterator[None]:
    """Turn any error raised while parsing ``path`` into a HistoryFormatError that names the
    file and what was expected (a reader bug or an odd file must never surface as a bare
    traceback or as a message without the file)."""
    try:
        yield
    except (HistoryFormatError, FileNotFoundError, ImportError, MemoryError, KeyboardInterrupt):
        raise
    except IsADirectoryError:
        raise HistoryFormatError(path, "is a directory", expected) from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
            RecursionError, UnicodeError, OSError) as exc:
        raise HistoryFormatError(path, f"cannot be read ({type(exc).__name__}: {exc})",
                                 expected) from None


class History:
    """Per-epoch (and optionally per-step) records of a training run.

    Parameters
    ----------
    num_classes:
        Number of classes when known (enables the chance-level checks of ``diagnose``).
    source:
        Where the history came from (a path or a description), shown in reports.
    meta:
        Free-form JSON-serialisable information (batch size, optimizer, scenario, ...).

    Metrics are stored under keys ``"train/<name>"`` and ``"val/<name>"``; ``train`` / ``val``
    give ``{name: per-epoch array}`` with NaN where a value is missing.

    >>> h = History()
    >>> h.log(0, train={"loss": 1.0, "acc": 0.5}, val={"loss": 1.1})
    >>> h.log(1, train={"loss": 0.8, "acc": 0.6})      # no validation this epoch
    >>> h.train["accuracy"].tolist(), h.val["loss"].tolist()
    ([0.5, 0.6], [1.1, nan])
    """

    def __init__(self, *, num_classes: int | None = None, source: str | None = None,
                 meta: Mapping[str, Any] | None = None) -> None:
        if num_classes is not None:
            if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool):
                raise TypeError(f"num_classes must be an int, got {num_classes!r}")
            if num_classes < 2:
                raise ValueError(f"num_classes must be >= 2, got {num_classes}")
            num_classes = int(num_classes)
        self.num_classes: int | None = num_classes
        self.source: str | None = None if source is None else str(source)
        self.meta: dict[str, Any] = dict(meta or {})
        self._epochs = _Table("epoch")
        self._steps = _Table("step")
        self._stats: dict[int, dict[str, Any]] = {}
        self._step_epoch: list[float | None] = []

    # ---------------------------------------------------------------- logging
    def log(self, epoch: float, *, train: Mapping[str, Any] | None = None,
            val: Mapping[str, Any] | None = None, lr: float | None = None,
            stats: Mapping[str, Any] | None = None) -> None:
        """Record one epoch.

        ``train`` / ``val`` map metric names to numbers (``"acc"`` is stored as ``"accuracy"``);
        ``stats`` is the dict of ``lossdiag.Metrics(...).compute()`` on the validation data.
        Logging the same epoch twice in a row merges the two records.
        """
        e = _to_float(epoch, "epoch")
        if e is None or not math.isfinite(e):
            raise ValueError(f"epoch must be a finite number, got {epoch!r}")
        if self._epochs.x and e < self._epochs.x[-1]:
            raise ValueError(
                f"epoch must not decrease: got {epoch!r} after {self._epochs.x[-1]!r}")
        row = self._row(train, val, lr)
        i = self._epochs.add_row(e, row, merge=True)
        if stats is not None:
            if not isinstance(stats, Mapping):
                raise TypeError(f"stats must be the dict of Metrics.compute(), got {type(stats)}")
            self._stats[i] = dict(stats)

    def log_step(self, step: float, *, train: Mapping[str, Any] | None = None,
                 val: Mapping[str, Any] | None = None, lr: float | None = None,
                 epoch: float | None = None) -> None:
        """Record one optimisation step (per-step logs; the epoch is optional)."""
        s = _to_float(step, "step")
        if s is None or not math.isfinite(s):
            raise ValueError(f"step must be a finite number, got {step!r}")
        if self._steps.x and s < self._steps.x[-1]:
            raise ValueError(f"step must not decrease: got {step!r} after {self._steps.x[-1]!r}")
        row = self._row(train, val, lr)
        before = len(self._steps)
        self._steps.add_row(s, row, merge=True)
        if len(self._steps) > before:
            self._step_epoch.append(_to_float(epoch, "epoch"))
        elif epoch is not None:
            self._step_epoch[-1] = _to_float(epoch, "epoch")

    @staticmethod
    def _row(train: Mapping[str, Any] | None, val: Mapping[str, Any] | None,
             lr: Any) -> dict[str, float | None]:
        row: dict[str, float | None] = {}
        for split, d in (("train", train), ("val", val)):
            if d is None:
                continue
            if not isinstance(d, Mapping):
                raise TypeError(f"{split} must be a dict of metric values, got {type(d).__name__}")
            for k, v in d.items():
                if not isinstance(k, str) or not k:
                    raise TypeError(f"{split} metric names must be non-empty strings, got {k!r}")
                row[f"{split}/{normalize_metric_name(k)}"] = _to_float(v, f"{split}[{k!r}]")
        if lr is not None:
            row["lr"] = _to_float(lr, "lr")
        return row

    # ---------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self._epochs)

    def __repr__(self) -> str:
        names = ", ".join(self.keys()) or "no metrics"
        steps = f", {len(self._steps)} steps" if len(self._steps) else ""
        return f"<History {len(self)} epochs{steps}: {names}>"

    @property
    def epochs(self) -> np.ndarray:
        """Epoch numbers as logged (float64)."""
        return self._epochs.xs()

    def keys(self, level: str = "epoch") -> list[str]:
        """Stored column keys (``'train/loss'``, ``'val/accuracy'``, ``'lr'``...)."""
        return list(self._table(level).cols)

    def _table(self, level: str) -> _Table:
        if level == "epoch":
            return self._epochs
        if level == "step":
            return self._steps
        raise ValueError(f"level must be 'epoch' or 'step', got {level!r}")

    def _split(self, split: str, level: str = "epoch") -> dict[str, np.ndarray]:
        pre = split + "/"
        return {k[len(pre):]: v for k, (v, _) in self._table(level).arrays().items()
                if k.startswith(pre)}

    @property
    def train(self) -> dict[str, np.ndarray]:
        """``{metric: per-epoch values}`` of the training split (NaN where missing)."""
        return self._split("train")

    @property
    def val(self) -> dict[str, np.ndarray]:
        """``{metric: per-epoch values}`` of the validation split (NaN where missing)."""
        return self._split("val")

    @property
    def lr(self) -> np.ndarray | None:
        """Per-epoch learning rate, or None when it was never logged."""
        a = self._epochs.arrays().get("lr")
        return None if a is None else a[0]

    @property
    def stats(self) -> list[dict[str, Any] | None]:
        """Per-epoch validation statistics (``Metrics.compute()`` dicts), None where absent."""
        return [self._stats.get(i) for i in range(len(self._epochs))]

    @property
    def has_steps(self) -> bool:
        return len(self._steps) > 0

    @property
    def steps(self) -> np.ndarray:
        """Step numbers of the per-step records (empty when none)."""
        return self._steps.xs()

    @property
    def step_epochs(self) -> np.ndarray:
        """Epoch of each per-step record (NaN where unknown)."""
        return np.array(self._step_epoch, dtype=np.float64)

    @property
    def step_train(self) -> dict[str, np.ndarray]:
        return self._split("train", "step")

    @property
    def step_val(self) -> dict[str, np.ndarray]:
        return self._split("val", "step")

    @property
    def step_lr(self) -> np.ndarray | None:
        a = self._steps.arrays().get("lr")
        return None if a is None else a[0]

    def column(self, key: str, level: str = "epoch") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x, values, present)`` of one stored column (``'val/loss'``, ``'lr'``...)."""
        t = self._table(level)
        arrs = t.arrays()
        if key not in arrs:
            raise KeyError(f"{key!r} not in history (has {', '.join(t.cols) or 'nothing'})")
        v, p = arrs[key]
        return t.xs(), v, p

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_arrays(cls, epochs: Sequence[float] | np.ndarray | None = None, *,
                    train: Mapping[str, Any] | None = None,
                    val: Mapping[str, Any] | None = None, lr: Any = None,
                    stats: Sequence[Mapping[str, Any] | None] | None = None,
                    steps: Sequence[float] | np.ndarray | None = None,
                    step_train: Mapping[str, Any] | None = None,
                    step_val: Mapping[str, Any] | None = None, step_lr: Any = None,
                    num_classes: int | None = None, source: str | None = None,
                    meta: Mapping[str, Any] | None = None) -> History:
        """Build a history from arrays (NaN values are kept as logged NaN, not as missing).

        >>> import numpy as np
        >>> h = History.from_arrays(np.arange(3), train={"loss": [3.0, 2.0, 1.5]})
        >>> h.train["loss"].tolist()
        [3.0, 2.0, 1.5]
        """
        h = cls(num_classes=num_classes, source=source, meta=meta)
        if epochs is not None or train or val:
            if epochs is None:
                n = len(next(iter((train or val).values())))
                epochs = np.arange(n)
            h._epochs = _table_from(("epoch", epochs), train, val, lr)
        if steps is not None or step_train or step_val:
            if steps is None:
                n = len(next(iter((step_train or step_val).values())))
                steps = np.arange(n)
            h._steps = _table_from(("step", steps), step_train, step_val, step_lr)
            h._step_epoch = [None] * len(h._steps)
        if stats is not None:
            if len(stats) != len(h._epochs):
                raise ValueError(f"stats has {len(stats)} entries for {len(h._epochs)} epochs")
            h._stats = {i: dict(s) for i, s in enumerate(stats) if s is not None}
        return h

    # ---------------------------------------------------------------- serialisation
    def to_dict(self, *, stats_keys: Iterable[str] | None = None,
                digits: int | None = None) -> dict[str, Any]:
        """JSON-ready dict in lossdiag's own format (missing -> null, NaN/inf -> strings).

        ``stats_keys`` keeps only those keys of the statistics; ``digits`` rounds floats to
        that many significant digits (to keep fixtures small).
        """
        keep = None if stats_keys is None else set(stats_keys)

        def table(t: _Table) -> dict[str, Any]:
            return {"x": [_jnum(v, digits) for v in t.x],
                    "columns": {k: [_jnum(v, digits) for v in col] for k, col in t.cols.items()}}

        out: dict[str, Any] = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
                               "num_classes": self.num_classes, "source": self.source,
                               "meta": _jsonable(self.meta, digits),
                               "epochs": table(self._epochs)}
        if len(self._steps):
            st = table(self._steps)
            st["epoch"] = [_jnum(v, digits) for v in self._step_epoch]
            out["steps"] = st
        if self._stats:
            out["stats"] = {
                str(i): _jsonable({k: v for k, v in s.items() if keep is None or k in keep},
                                  digits)
                for i, s in sorted(self._stats.items())}
        return out

    def to_json(self, path: PathLike | None = None, **kwargs: Any) -> str:
        """Serialise to JSON text (and write it to ``path`` when given); see :meth:`to_dict`."""
        text = json.dumps(self.to_dict(**kwargs), separators=(",", ":"), allow_nan=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    save = to_json

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str | None = None) -> History:
        """Inverse of :meth:`to_dict`."""
        src = source or "<dict>"
        if not isinstance(d, Mapping) or d.get("format") != FORMAT_NAME:
            raise HistoryFormatError(src, "not a lossdiag history",
                                     f'a JSON object with "format": "{FORMAT_NAME}"')
        try:
            h = cls(num_classes=d.get("num_classes"), source=d.get("source") or source,
                    meta=d.get("meta") or {})
            h._epochs = _table_from_json(d["epochs"], "epoch")
            if "steps" in d:
                h._steps = _table_from_json(d["steps"], "step")
                ep = d["steps"].get("epoch") or [None] * len(h._steps)
                h._step_epoch = [None if v is None else _jfloat(v) for v in ep]
            stats = d.get("stats") or {}
            if not isinstance(stats, Mapping):
                raise TypeError(f'"stats" must be an object of epoch index -> statistics, got '
                                f"{type(stats).__name__}")
            for k, s in stats.items():
                i = int(k)
                if not 0 <= i < len(h._epochs) or not isinstance(s, Mapping):
                    raise ValueError(f"stats entry {k!r} is not an epoch index with a dict")
                h._stats[i] = _unjson_stats(s)
            from ._columns import _ordered_rows

            _ordered_rows(src, h._epochs.xs(), "epoch")
            _ordered_rows(src, h._steps.xs(), "step")
        except HistoryFormatError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise HistoryFormatError(src, f"malformed lossdiag history ({exc})",
                                     "the layout written by History.to_json") from None
        return h

    @classmethod
    def load(cls, path: PathLike) -> History:
        """Read a history written by :meth:`to_json`."""
        with _reading(path, "a lossdiag history JSON"):
            data = _read_json(path)
            return cls.from_dict(data, source=str(path))

    # ---------------------------------------------------------------- readers
    @classmethod
    def from_keras(cls, history: Any, *, num_classes: int | None = None) -> History:
        """From a Keras ``History`` object (``model.fit(...)``'s return) or its ``.history`` dict.

        >>> h = History.from_keras({"loss": [1.0, 0.5], "val_acc": [0.5, 0.7]})
        >>> h.val["accuracy"].tolist()
        [0.5, 0.7]
        """
        from .keras import read_keras_history

        return read_keras_history(history, num_classes=num_classes)

    @classmethod
    def from_keras_csv(cls, path: PathLike, *, num_classes: int | None = None) -> History:
        """From a Keras ``CSVLogger`` file (``epoch,accuracy,loss,val_accuracy,val_loss``)."""
        from .keras import read_keras_csv

        with _reading(path, "a Keras CSVLogger file"):
            return read_keras_csv(path, num_classes=num_classes)

    @classmethod
    def from_lightning_csv(cls, path: PathLike, *, num_classes: int | None = None) -> History:
        """From a PyTorch Lightning ``CSVLogger`` ``metrics.csv`` (interleaved rows, gaps).

        Columns logged once per epoch (``val_loss``, ``train_loss_epoch``) become per-epoch
        metrics; columns logged several times per epoch (``train_loss_step``) become per-step
        metrics and their per-epoch mean fills the epoch record when no ``_epoch`` column exists.
        """
        from .lightning import read_lightning_csv

        with _reading(path, "a Lightning metrics.csv"):
            return read_lightning_csv(path, num_classes=num_classes)

    @classmethod
    def from_hf_trainer_state(cls, path: PathLike, *,
                              num_classes: int | None = None) -> History:
        """From a Hugging Face ``trainer_state.json`` (its ``log_history``)."""
        from .hf import read_trainer_state

        with _reading(path, "a Hugging Face trainer_state.json"):
            return read_trainer_state(path, num_classes=num_classes)

    @classmethod
    def from_csv(cls, path: PathLike, mapping: Mapping[str, str] | None = None, *,
                 num_classes: int | None = None) -> History:
        """From a plain CSV file (comma, semicolon or tab separated) with a header row.

        The x column is ``epoch`` (or ``step``/``iteration``/``iter``; else the row number).
        ``mapping`` maps canonical keys to column names, e.g.
        ``{"epoch": "ep", "train/loss": "trn", "val/loss": "vl", "val/accuracy": "va",
        "lr": "LR"}``; unmapped columns are recognised by their names (``val_`` prefix ...).
        Columns holding text (timestamps, names) are ignored with a note.
        """
        from .plain import read_csv

        with _reading(path, "a CSV training log with a header row"):
            return read_csv(path, mapping, num_classes=num_classes)

    @classmethod
    def from_json(cls, path: PathLike, mapping: Mapping[str, str] | None = None, *,
                  num_classes: int | None = None) -> History:
        """From a JSON file: lossdiag's format, a HF trainer state, a dict of lists (Keras
        ``history.history`` dumped with ``json.dump``) or a list of row objects."""
        from .plain import read_json

        with _reading(path, "a JSON training log"):
            return read_json(path, mapping, num_classes=num_classes)

    @classmethod
    def from_tensorboard(cls, path: PathLike, *, num_classes: int | None = None) -> History:
        """From TensorBoard event files (a file or a log directory, scanned recursively).

        Needs the optional ``tensorboard`` package (``pip install lossdiag[tensorboard]``).
        Scalars are keyed by tag; ``epoch``-named tags or a run directory named ``validation``
        / ``train`` (the Keras TensorBoard callback layout) give the split.
        """
        from .tensorboard import _from_tensorboard

        with _reading(path, "TensorBoard event files"):
            return _from_tensorboard(Path(path), num_classes=num_classes)

    @classmethod
    def from_path(cls, path: PathLike, *, num_classes: int | None = None,
                  mapping: Mapping[str, str] | None = None) -> History:
        """Read any supported log, detecting its format from the name and content.

        A directory is searched for ``metrics.csv`` (Lightning), ``trainer_state.json``
        (Hugging Face; the newest ``checkpoint-*`` one), TensorBoard event files, or a single
        ``*.csv`` / ``*.json`` log.
        """
        from .detect import read_path

        with _reading(path, "a supported training log"):
            return read_path(path, num_classes=num_classes, mapping=mapping)
